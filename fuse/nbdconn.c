/* SPDX-License-Identifier: MIT */
/*
 * nbdconn.c - blockfs's NBD connections (see nbdconn.h): one libnbd handle
 * per connection, opened with common's nbdclient_connect() and carrying
 * one request at a time through its timed requests, so a blockd that hangs
 * costs NBDCONN_TIMEOUT_S and a broken connection is closed before the
 * request's buffer is used again.
 *
 * Locking: registry_lock guards the registry list and every export's
 * refs; an export's lock guards its conns[] (state, busy, unflushed) and
 * err_seq, and its idle condition signals a connection coming free.  The
 * order is registry_lock, then an export's lock.  A connection marked busy
 * (or opening) belongs to the thread that marked it, which uses its handle
 * without holding any lock: no lock is ever held across I/O.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "names.h"
#include "nbdclient.h"
#include "nbdconn.h"

/* Largest request blockfs sends, whatever the server allows (FUSE sends at most 1 MiB). */
#define NBDCONN_MAX_REQUEST (32u << 20)
/* WRITE_ZEROES lengths are 32-bit: longer ranges go in pieces of this. */
#define NBDCONN_ZERO_STEP (1u << 30)

#define NBDCONN_TIMEOUT_MS (NBDCONN_TIMEOUT_S * 1000)

enum slot { SLOT_FREE, SLOT_OPENING, SLOT_OPEN };

struct conn {
	enum slot state;
	struct nbd_handle *h; /* while SLOT_OPEN */
	bool busy;
	bool unflushed; /* writes were acknowledged here since its last FLUSH */
};

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_FLUSH };

struct nbd_export {
	char name[BLOCKD_EXPORT_NAME_MAX + 1];
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct nbdclient_info info;
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

/* Connects and shakes hands: 0 and *h, -ENOENT, -EPERM, -ENOMEM or -EIO. */
static int conn_open(const struct nbd_export *x, struct nbd_handle **h, struct nbdclient_info *info)
{
	const struct nbdclient_opts opts = {
	    .socket_path = x->socket_path,
	    .export_name = x->name,
	    .timeout_ms = NBDCONN_TIMEOUT_MS,
	};
	int rc = nbdclient_connect(&opts, h, info, NULL, 0);

	return rc == 0 || rc == -ENOENT || rc == -EPERM || rc == -ENOMEM ? rc : -EIO;
}

/*
 * One request on c: 0, a positive errno from the server (the connection
 * stays good), or -EIO when the connection broke or timed out.
 */
static int conn_request(struct conn *c, enum op op, uint32_t flags, uint64_t off, uint32_t len,
                        const void *wbuf, void *rbuf)
{
	int rc = -EINVAL;

	switch (op) {
	case OP_READ:
		rc = nbdclient_pread(c->h, rbuf, len, off, NBDCONN_TIMEOUT_MS);
		break;
	case OP_WRITE:
		rc = nbdclient_pwrite(c->h, wbuf, len, off, NBDCONN_TIMEOUT_MS);
		break;
	case OP_ZERO:
		rc = nbdclient_zero(c->h, len, off, flags, NBDCONN_TIMEOUT_MS);
		break;
	case OP_FLUSH:
		rc = nbdclient_flush(c->h, NBDCONN_TIMEOUT_MS);
		break;
	}
	return rc == -ETIMEDOUT || rc == -ENOTCONN ? -EIO : -rc;
}

/* An idle connection of x, opened if none is and the pool has room; NULL and *err if not. */
static struct conn *acquire(struct nbd_export *x, int *err)
{
	struct nbdclient_info info;
	struct nbd_handle *h = NULL;
	struct conn *c;

	pthread_mutex_lock(&x->lock);
	for (;;) {
		struct conn *free_slot = NULL;

		for (unsigned i = 0; i < x->pool_max; i++) {
			c = &x->conns[i];
			if (c->state == SLOT_OPEN && !c->busy) {
				c->busy = true;
				pthread_mutex_unlock(&x->lock);
				return c;
			}
			if (c->state == SLOT_FREE && !free_slot)
				free_slot = c;
		}
		if (free_slot) {
			c = free_slot;
			break;
		}
		pthread_cond_wait(&x->idle, &x->lock);
	}
	c->state = SLOT_OPENING;
	pthread_mutex_unlock(&x->lock);
	*err = conn_open(x, &h, &info);
	pthread_mutex_lock(&x->lock);
	if (*err < 0) {
		c->state = SLOT_FREE;
		pthread_cond_broadcast(&x->idle);
		c = NULL;
	} else {
		c->state = SLOT_OPEN;
		c->h = h;
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
		nbd_close(c->h); /* a timed-out command can no longer land in its buffer */
		c->h = NULL;
		c->state = SLOT_FREE;
		c->unflushed = false;
	}
	c->busy = false;
	pthread_cond_broadcast(&x->idle);
	pthread_mutex_unlock(&x->lock);
}

/* One request, tried again on a new connection when its connection breaks. */
static int run(struct nbd_export *x, enum op op, uint32_t flags, uint64_t off, uint32_t len,
               const void *wbuf, void *rbuf)
{
	int rc = -EIO;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct conn *c = acquire(x, &rc);

		if (!c)
			return rc == -ENOMEM ? rc : -EIO;
		rc = conn_request(c, op, flags, off, len, wbuf, rbuf);
		if (rc == 0 && (op == OP_WRITE || op == OP_ZERO))
			c->unflushed = true; /* c is ours until release() */
		release(x, c, rc < 0);
		if (rc >= 0)
			return -rc;
	}
	return -EIO;
}

static uint32_t max_request(const struct nbd_export *x)
{
	uint32_t m = x->info.max_request_bytes;

	return m && m < NBDCONN_MAX_REQUEST ? m : NBDCONN_MAX_REQUEST;
}

int nbd_export_read(struct nbd_export *x, void *buf, size_t len, uint64_t off)
{
	uint32_t step = max_request(x);

	for (size_t done = 0; done < len;) {
		uint32_t n = len - done < step ? (uint32_t)(len - done) : step;
		int rc = run(x, OP_READ, 0, off + done, n, NULL, (char *)buf + done);

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
		int rc = run(x, OP_WRITE, 0, off + done, n, (const char *)buf + done, NULL);

		if (rc < 0)
			return rc;
		done += n;
	}
	return 0;
}

int nbd_export_zero(struct nbd_export *x, uint64_t off, uint64_t len, bool may_unmap)
{
	uint32_t flags = may_unmap ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;

	if (!x->info.can_zero)
		return -EOPNOTSUPP;
	for (uint64_t done = 0; done < len;) {
		uint32_t n =
		    len - done < NBDCONN_ZERO_STEP ? (uint32_t)(len - done) : NBDCONN_ZERO_STEP;
		int rc = run(x, OP_ZERO, flags, off + done, n, NULL, NULL);

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
		while (c->busy || c->state == SLOT_OPENING)
			pthread_cond_wait(&x->idle, &x->lock);
		if (c->state != SLOT_OPEN || !c->unflushed) {
			pthread_mutex_unlock(&x->lock);
			continue;
		}
		c->busy = true;
		pthread_mutex_unlock(&x->lock);
		r = conn_request(c, OP_FLUSH, 0, 0, 0, NULL, NULL);
		if (r == 0)
			c->unflushed = false;
		release(x, c, r < 0);
		flushed++;
		if (r != 0 && rc == 0)
			rc = r < 0 ? -EIO : -r;
	}
	return flushed ? rc : run(x, OP_FLUSH, 0, 0, 0, NULL, NULL);
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
	for (unsigned i = 0; i < NBDCONN_POOL_MAX; i++)
		if (x->conns[i].state == SLOT_OPEN)
			nbdclient_close(x->conns[i].h);
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
                   struct nbd_export **out, uint64_t *size_bytes)
{
	struct nbd_export *x, *other;
	struct nbd_handle *h;
	int rc;

	if (strlen(name) >= sizeof(x->name) || strlen(socket_path) >= sizeof(x->socket_path))
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
	rc = conn_open(x, &h, &x->info);
	if (rc < 0) {
		free(x);
		return rc;
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->idle, NULL);
	x->conns[0] = (struct conn){.state = SLOT_OPEN, .h = h};
	x->pool_max = x->info.can_multi_conn ? NBDCONN_POOL_MAX : 1;
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
	*size_bytes = x->info.size_bytes;
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
