/* SPDX-License-Identifier: MIT */
/*
 * nbdconn.c - blockfs's NBD connections (see nbdconn.h): blocking unix
 * sockets with send and receive timeouts, the handshake and the requests
 * encoded by proto/, one request in flight per connection.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbdconn.h"

/* Export names blockfs asks for: NAME@SNAP plus a suffix, far below the protocol's cap. */
#define NBDCONN_NAME_MAX 512
/* Largest request blockfs sends, whatever the server allows (FUSE sends at most 1 MiB). */
#define NBDCONN_MAX_REQUEST (32u << 20)
/* WRITE_ZEROES lengths are 32-bit: longer ranges go in pieces of this. */
#define NBDCONN_ZERO_STEP (1u << 30)

enum { SLOT_FREE = -1, SLOT_OPENING = -2 };

struct conn {
	int fd; /* or SLOT_FREE / SLOT_OPENING */
	bool busy;
	bool unflushed; /* writes were acknowledged here since its last FLUSH */
	uint64_t next_cookie;
};

struct nbd_export {
	char name[NBDCONN_NAME_MAX];
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct proto_client_export info;
	unsigned refs;     /* under registry_lock */
	unsigned pool_max; /* 1 unless the server says a flush covers every connection */
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct conn conns[NBDCONN_POOL_MAX];
	uint64_t err_seq; /* when writes were last lost (from err_counter), 0: never */
	struct nbd_export *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nbd_export *registry; /* newest first */
static uint64_t err_counter;        /* atomic: orders every loss of writes */

static int send_all(int fd, const struct iovec *iov_in, int n)
{
	struct iovec iov[2];
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};

	memcpy(iov, iov_in, (size_t)n * sizeof(*iov));
	while (m.msg_iovlen > 0) {
		ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -EIO;
		while (m.msg_iovlen > 0 && (size_t)k >= m.msg_iov->iov_len) {
			k -= (ssize_t)m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen > 0) {
			m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + k;
			m.msg_iov->iov_len -= (size_t)k;
		}
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t k = recv(fd, p, len, 0);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -EIO; /* closed, reset or timed out */
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

/* Connects and shakes hands; the new descriptor or -errno. */
static int conn_open(const struct nbd_export *x, struct proto_client_export *info)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = NBDCONN_TIMEOUT_S};
	struct proto_client *pc = NULL;
	struct proto_client_action act;
	uint8_t in[4096];
	size_t have = 0, pos = 0, used;
	int fd, rc = -EIO;

	memcpy(sa.sun_path, x->socket_path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	rc = proto_client_new(x->name, &pc);
	if (rc < 0)
		goto fail;
	for (;;) {
		switch (proto_client_step(pc, in + pos, have - pos, &used, &act)) {
		case PROTO_CLIENT_NEED_INPUT: {
			ssize_t k = recv(fd, in, sizeof(in), 0);

			if (k < 0 && errno == EINTR)
				k = 0;
			else if (k <= 0)
				goto broken;
			pos = 0;
			have = (size_t)k;
			continue;
		}
		case PROTO_CLIENT_SEND: {
			struct iovec iov = {(void *)act.send.data, act.send.len};

			pos += used;
			if (send_all(fd, &iov, 1) < 0)
				goto broken;
			continue;
		}
		case PROTO_CLIENT_READY:
			if (pos + used != have)
				goto broken; /* the server spoke before being asked */
			*info = act.ready;
			proto_client_free(pc);
			return fd;
		case PROTO_CLIENT_FAILED:
			rc = act.failed.err == -ENOENT || act.failed.err == -EPERM ? act.failed.err
			                                                           : -EIO;
			goto fail;
		}
	}
broken:
	rc = -EIO;
fail:
	proto_client_free(pc);
	close(fd);
	return rc == -ENOENT || rc == -EPERM || rc == -ENOMEM ? rc : -EIO;
}

/*
 * One request on c: 0, a positive errno from the server (the connection
 * stays good), or -EIO when the connection broke.
 */
static int conn_request(struct conn *c, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
                        const void *wbuf, void *rbuf)
{
	uint8_t hdr[NBD_REQUEST_BYTES], reply[NBD_SIMPLE_REPLY_BYTES];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)wbuf, len}};
	uint64_t cookie = ++c->next_cookie, got;
	uint32_t err;

	if (proto_client_encode_request(hdr, type, flags, cookie, off, len) < 0)
		return EINVAL;
	if (send_all(c->fd, iov, type == NBD_CMD_WRITE ? 2 : 1) < 0 ||
	    recv_all(c->fd, reply, sizeof(reply)) < 0 ||
	    proto_client_decode_simple(reply, &got, &err) < 0 || got != cookie)
		return -EIO;
	if (err)
		return proto_wire_to_errno(err);
	if (type == NBD_CMD_READ && recv_all(c->fd, rbuf, len) < 0)
		return -EIO;
	return 0;
}

/* An idle connection of x, opened if none is and the pool has room; NULL and *err if not. */
static struct conn *acquire(struct nbd_export *x, int *err)
{
	struct proto_client_export info;
	struct conn *c;

	pthread_mutex_lock(&x->lock);
	for (;;) {
		struct conn *free_slot = NULL;

		for (unsigned i = 0; i < x->pool_max; i++) {
			c = &x->conns[i];
			if (c->fd >= 0 && !c->busy) {
				c->busy = true;
				pthread_mutex_unlock(&x->lock);
				return c;
			}
			if (c->fd == SLOT_FREE && !free_slot)
				free_slot = c;
		}
		if (free_slot) {
			c = free_slot;
			break;
		}
		pthread_cond_wait(&x->idle, &x->lock);
	}
	c->fd = SLOT_OPENING;
	pthread_mutex_unlock(&x->lock);
	*err = conn_open(x, &info);
	pthread_mutex_lock(&x->lock);
	if (*err < 0) {
		c->fd = SLOT_FREE;
		pthread_cond_broadcast(&x->idle);
		c = NULL;
	} else {
		c->fd = *err;
		c->busy = true;
		c->unflushed = false;
	}
	pthread_mutex_unlock(&x->lock);
	return c;
}

static void release(struct nbd_export *x, struct conn *c, bool broken)
{
	pthread_mutex_lock(&x->lock);
	if (broken) {
		/* Acknowledged but not flushed: they may have gone with the server. */
		if (c->unflushed)
			x->err_seq = __atomic_add_fetch(&err_counter, 1, __ATOMIC_RELAXED);
		close(c->fd);
		c->fd = SLOT_FREE;
		c->unflushed = false;
	}
	c->busy = false;
	pthread_cond_broadcast(&x->idle);
	pthread_mutex_unlock(&x->lock);
}

/* One request, tried again on a new connection when its connection breaks. */
static int run(struct nbd_export *x, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
               const void *wbuf, void *rbuf)
{
	int rc = -EIO;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct conn *c = acquire(x, &rc);

		if (!c)
			return rc == -ENOMEM ? rc : -EIO;
		rc = conn_request(c, type, flags, off, len, wbuf, rbuf);
		if (rc == 0 && (type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES))
			c->unflushed = true; /* c is ours until release() */
		release(x, c, rc < 0);
		if (rc >= 0)
			return -rc;
	}
	return -EIO;
}

static uint32_t max_request(const struct nbd_export *x)
{
	uint32_t m = x->info.max_block;

	return m && m < NBDCONN_MAX_REQUEST ? m : NBDCONN_MAX_REQUEST;
}

int nbd_export_read(struct nbd_export *x, void *buf, size_t len, uint64_t off)
{
	uint32_t step = max_request(x);

	for (size_t done = 0; done < len;) {
		uint32_t n = len - done < step ? (uint32_t)(len - done) : step;
		int rc = run(x, NBD_CMD_READ, 0, off + done, n, NULL, (char *)buf + done);

		if (rc < 0)
			return rc;
		done += n;
	}
	return 0;
}

int nbd_export_write(struct nbd_export *x, const void *buf, size_t len, uint64_t off)
{
	uint32_t step = max_request(x);

	for (size_t done = 0; done < len;) {
		uint32_t n = len - done < step ? (uint32_t)(len - done) : step;
		int rc = run(x, NBD_CMD_WRITE, 0, off + done, n, (const char *)buf + done, NULL);

		if (rc < 0)
			return rc;
		done += n;
	}
	return 0;
}

int nbd_export_zero(struct nbd_export *x, uint64_t off, uint64_t len, bool may_unmap)
{
	uint16_t flags = may_unmap ? 0 : NBD_CMD_FLAG_NO_HOLE;

	if (!(x->info.tflags & NBD_TFLAG_SEND_WRITE_ZEROES))
		return -EOPNOTSUPP;
	for (uint64_t done = 0; done < len;) {
		uint32_t n =
		    len - done < NBDCONN_ZERO_STEP ? (uint32_t)(len - done) : NBDCONN_ZERO_STEP;
		int rc = run(x, NBD_CMD_WRITE_ZEROES, flags, off + done, n, NULL, NULL);

		if (rc < 0)
			return rc;
		done += n;
	}
	return 0;
}

int nbd_export_flush(struct nbd_export *x)
{
	unsigned flushed = 0;
	int rc = 0;

	/*
	 * A FLUSH on every connection that carries unflushed writes, not one
	 * for all (multi-conn): a connection to a blockd that died and came
	 * back cannot vouch for writes the old one acknowledged, while sending
	 * on each such connection finds it broken and counts its writes lost.
	 */
	for (unsigned i = 0; i < x->pool_max; i++) {
		struct conn *c = &x->conns[i];
		int r;

		pthread_mutex_lock(&x->lock);
		while (c->busy || c->fd == SLOT_OPENING)
			pthread_cond_wait(&x->idle, &x->lock);
		if (c->fd < 0 || !c->unflushed) {
			pthread_mutex_unlock(&x->lock);
			continue;
		}
		c->busy = true;
		pthread_mutex_unlock(&x->lock);
		r = conn_request(c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL);
		if (r == 0)
			c->unflushed = false;
		release(x, c, r < 0);
		flushed++;
		if (r != 0 && rc == 0)
			rc = r < 0 ? -EIO : -r;
	}
	return flushed ? rc : run(x, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL);
}

static struct nbd_export *find(const char *name)
{
	for (struct nbd_export *x = registry; x; x = x->next)
		if (strcmp(x->name, name) == 0)
			return x;
	return NULL;
}

bool nbd_export_held(const char *name)
{
	bool held;

	pthread_mutex_lock(&registry_lock);
	held = find(name) != NULL;
	pthread_mutex_unlock(&registry_lock);
	return held;
}

uint64_t nbd_export_errseq(const char *name)
{
	uint64_t seq = 0;

	pthread_mutex_lock(&registry_lock);
	for (struct nbd_export *x = registry; x; x = x->next) {
		if (strcmp(x->name, name) != 0)
			continue;
		pthread_mutex_lock(&x->lock);
		seq = x->err_seq > seq ? x->err_seq : seq;
		pthread_mutex_unlock(&x->lock);
	}
	pthread_mutex_unlock(&registry_lock);
	return seq;
}

struct nbd_export *nbd_export_find(const char *name)
{
	struct nbd_export *x;

	pthread_mutex_lock(&registry_lock);
	x = find(name);
	if (x)
		x->refs++;
	pthread_mutex_unlock(&registry_lock);
	return x;
}

/* Says goodbye on every connection of x and frees it; x is in no list. */
static void export_free(struct nbd_export *x)
{
	for (unsigned i = 0; i < NBDCONN_POOL_MAX; i++) {
		struct conn *c = &x->conns[i];
		uint8_t hdr[NBD_REQUEST_BYTES];
		struct iovec iov = {hdr, sizeof(hdr)};

		if (c->fd < 0)
			continue;
		if (proto_client_encode_request(hdr, NBD_CMD_DISC, 0, ++c->next_cookie, 0, 0) > 0)
			send_all(c->fd, &iov, 1); /* best effort: closing ends it anyway */
		close(c->fd);
	}
	pthread_cond_destroy(&x->idle);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

/* An export in the registry that a new open may share: NAME, of SIZE unless size is 0. */
static struct nbd_export *shareable(const char *name, uint64_t size)
{
	struct nbd_export *x = find(name);

	return x && (size == 0 || x->info.size_bytes == size) ? x : NULL;
}

int nbd_export_get(const char *socket_path, const char *name, uint64_t size,
                   struct nbd_export **out, struct proto_client_export *info)
{
	struct nbd_export *x, *other;
	int fd;

	if (strlen(name) >= NBDCONN_NAME_MAX || strlen(socket_path) >= sizeof(x->socket_path))
		return -ENAMETOOLONG;
	pthread_mutex_lock(&registry_lock);
	x = shareable(name, size);
	if (x)
		goto take;
	pthread_mutex_unlock(&registry_lock);
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	snprintf(x->name, sizeof(x->name), "%s", name);
	snprintf(x->socket_path, sizeof(x->socket_path), "%s", socket_path);
	/* Not under the registry lock: a slow blockd must not hold up every other open. */
	fd = conn_open(x, &x->info);
	if (fd < 0) {
		free(x);
		return fd;
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->idle, NULL);
	for (unsigned i = 0; i < NBDCONN_POOL_MAX; i++)
		x->conns[i].fd = SLOT_FREE;
	x->conns[0].fd = fd;
	x->pool_max = x->info.tflags & NBD_TFLAG_CAN_MULTI_CONN ? NBDCONN_POOL_MAX : 1;
	pthread_mutex_lock(&registry_lock);
	other = shareable(name, size ? size : x->info.size_bytes);
	if (other) { /* another open got there first */
		export_free(x);
		x = other;
		goto take;
	}
	/*
	 * Newest first: a volume resized since an older one was opened gets an
	 * export of its own, whose connections know the new size; files opened
	 * before keep the old one until they close.
	 */
	x->next = registry;
	registry = x;
take:
	x->refs++;
	*info = x->info;
	pthread_mutex_unlock(&registry_lock);
	*out = x;
	return 0;
}

void nbd_export_put(struct nbd_export *x)
{
	struct nbd_export **pp;

	pthread_mutex_lock(&registry_lock);
	if (--x->refs > 0) {
		pthread_mutex_unlock(&registry_lock);
		return;
	}
	for (pp = &registry; *pp != x; pp = &(*pp)->next)
		;
	*pp = x->next;
	pthread_mutex_unlock(&registry_lock);
	export_free(x);
}
