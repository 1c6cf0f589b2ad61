/* SPDX-License-Identifier: MIT */
/*
 * client_peer.c - the proto client machine against a real NBD server.
 *
 *   proto_client_peer SOCKET EXPORT FILE [--write] [--expect=OUT]
 *
 * Connects to the unix socket SOCKET, shakes hands with proto_client for
 * EXPORT, checks that the export is as large as FILE and reads it whole in
 * READ requests of up to 1 MiB, MAX_IN_FLIGHT at a time, matched to their
 * replies by cookie (servers may answer out of order), comparing with FILE.
 *
 * With --write on a writable export: writes a seeded pattern to a few
 * ranges (one split over several pipelined requests, one across a 1 MiB
 * boundary, the end of the export; FUA on some when offered), FLUSH, TRIM a
 * range when offered and write it again (trimmed data is unspecified until
 * rewritten), then reads everything back and compares with what it expects;
 * --expect=OUT saves that expected image for the caller to compare with
 * the server's file.  On a read-only export --write sends one WRITE, which
 * must be refused (the errno is printed: the spec wants EPERM, qemu-nbd 7.2
 * answers EINVAL to every request it refuses) and nothing may change.
 * Ends with NBD_CMD_DISC and waits for the server to close.
 *
 * Prints one line: "ok: ..." and exits 0, or what failed and exits 1.
 * Plain POSIX sockets, blocking, with a timeout on every send and receive.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto_client.h"

#define IO_TIMEOUT_S   30
#define MAX_IN_FLIGHT  8
#define REQUEST_BYTES  (1u << 20)
#define MAX_FILE_BYTES (1ull << 30) /* both images are held in memory */

struct slot {
	bool busy;
	uint64_t cookie;
	uint16_t type;
	uint64_t offset;
	uint32_t length;
	uint8_t *dest;  /* READ: where the data goes */
	int expect_err; /* positive errno the server must answer with, 0, or ANY_ERROR */
	int *got_err;   /* where to store the answer, or NULL */
};

#define ANY_ERROR (-1)

struct conn {
	int fd;
	struct proto_client_export ex;
	uint64_t next_cookie;
	struct slot slots[MAX_IN_FLIGHT];
	unsigned in_flight;
	uint64_t reordered; /* replies that overtook an older request */
};

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...)
{
	va_list ap;

	fputs("proto_client_peer: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	exit(1);
}

static const char *errname(int e)
{
	switch (e) {
	case ENOENT:
		return "ENOENT";
	case EPERM:
		return "EPERM";
	case EACCES:
		return "EACCES";
	case EINVAL:
		return "EINVAL";
	case EIO:
		return "EIO";
	case ENOSPC:
		return "ENOSPC";
	case EPROTO:
		return "EPROTO";
	case EOPNOTSUPP:
		return "EOPNOTSUPP";
	case ESHUTDOWN:
		return "ESHUTDOWN";
	default:
		return "E?";
	}
}

static const char *cmd_name(uint16_t type)
{
	static const char *const names[] = {"READ", "WRITE", "DISC",        "FLUSH",
	                                    "TRIM", "CACHE", "WRITE_ZEROES"};

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

static void send_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("send: %s", strerror(errno));
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
}

static void recv_all(int fd, void *buf, size_t len, const char *what)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t k = recv(fd, p, len, 0);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("receiving %s: %s", what, strerror(errno));
		if (k == 0)
			die("server closed the connection while we waited for %s", what);
		p += k;
		len -= (size_t)k;
	}
}

static int connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		die("setsockopt: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect %s: %s", path, strerror(errno));
	return fd;
}

static void handshake(struct conn *c, const char *name)
{
	struct proto_client *pc;
	struct proto_client_action act;
	uint8_t in[65536];
	size_t have = 0, pos = 0, used;
	int r = proto_client_new(name, &pc);

	if (r < 0)
		die("proto_client_new: %s", strerror(-r));
	for (;;) {
		switch (proto_client_step(pc, in + pos, have - pos, &used, &act)) {
		case PROTO_CLIENT_NEED_INPUT: {
			ssize_t k = recv(c->fd, in, sizeof(in), 0);

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				die("handshake: receive: %s", strerror(errno));
			if (k == 0)
				die("handshake: server closed the connection");
			pos = 0;
			have = (size_t)k;
			continue;
		}
		case PROTO_CLIENT_SEND: {
			struct iovec iov = {(void *)act.send.data, act.send.len};

			pos += used;
			send_all(c->fd, &iov, 1);
			continue;
		}
		case PROTO_CLIENT_READY:
			if (pos + used != have)
				die("handshake: server sent %zu bytes after its ACK",
				    have - pos - used);
			c->ex = act.ready;
			proto_client_free(pc);
			return;
		case PROTO_CLIENT_FAILED:
			die("handshake failed: %s (%s): %s", errname(-act.failed.err),
			    strerror(-act.failed.err), act.failed.message);
		}
	}
}

/* Receives one reply and retires its request, whatever order the server answers in. */
static void reap_one(struct conn *c)
{
	uint8_t hdr[NBD_SIMPLE_REPLY_BYTES];
	uint64_t cookie;
	uint32_t wire;
	struct slot *s = NULL;
	int err;

	recv_all(c->fd, hdr, sizeof(hdr), "a reply");
	if (proto_client_decode_simple(hdr, &cookie, &wire) < 0)
		die("reply with a bad magic %02x%02x%02x%02x", hdr[0], hdr[1], hdr[2], hdr[3]);
	for (unsigned i = 0; i < MAX_IN_FLIGHT; i++)
		if (c->slots[i].busy && c->slots[i].cookie == cookie)
			s = &c->slots[i];
	if (!s)
		die("reply for unknown cookie %llu", (unsigned long long)cookie);
	for (unsigned i = 0; i < MAX_IN_FLIGHT; i++)
		if (c->slots[i].busy && c->slots[i].cookie < cookie) {
			c->reordered++;
			break;
		}
	err = proto_wire_to_errno(wire);
	if (s->got_err)
		*s->got_err = err;
	if (s->expect_err == ANY_ERROR ? !err : err != s->expect_err)
		die("%s %u bytes at %llu: server answered %s, expected %s", cmd_name(s->type),
		    s->length, (unsigned long long)s->offset, err ? errname(err) : "success",
		    s->expect_err == ANY_ERROR ? "an error"
		    : s->expect_err            ? errname(s->expect_err)
		                               : "success");
	if (s->type == NBD_CMD_READ && !err)
		recv_all(c->fd, s->dest, s->length, "READ data");
	s->busy = false;
	c->in_flight--;
}

static void drain(struct conn *c)
{
	while (c->in_flight)
		reap_one(c);
}

static void submit_checked(struct conn *c, uint16_t type, uint16_t flags, uint64_t offset,
                           uint32_t length, const void *wdata, void *rdest, int expect_err,
                           int *got_err)
{
	uint8_t hdr[NBD_REQUEST_BYTES];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)wdata, length}};
	struct slot *s = NULL;

	if (c->in_flight == MAX_IN_FLIGHT)
		reap_one(c);
	for (unsigned i = 0; i < MAX_IN_FLIGHT && !s; i++)
		if (!c->slots[i].busy)
			s = &c->slots[i];
	*s = (struct slot){.busy = true,
	                   .cookie = ++c->next_cookie,
	                   .type = type,
	                   .offset = offset,
	                   .length = length,
	                   .dest = rdest,
	                   .expect_err = expect_err,
	                   .got_err = got_err};
	if (proto_client_encode_request(hdr, type, flags, s->cookie, offset, length) < 0)
		die("cannot encode %s %u bytes at %llu", cmd_name(type), length,
		    (unsigned long long)offset);
	c->in_flight++;
	send_all(c->fd, iov, type == NBD_CMD_WRITE ? 2 : 1);
}

/* A request that must succeed. */
static void submit(struct conn *c, uint16_t type, uint16_t flags, uint64_t offset, uint32_t length,
                   const void *wdata, void *rdest)
{
	submit_checked(c, type, flags, offset, length, wdata, rdest, 0, NULL);
}

static uint32_t request_bytes(const struct conn *c)
{
	uint32_t n = REQUEST_BYTES;

	if (c->ex.max_block && c->ex.max_block < n)
		n = c->ex.max_block; /* a multiple of min_block */
	return n;
}

/* Reads [offset, offset + len) into dest, pipelined. */
static void read_range(struct conn *c, uint64_t offset, uint64_t len, uint8_t *dest)
{
	uint32_t step = request_bytes(c);

	for (uint64_t done = 0; done < len;) {
		uint32_t n = len - done < step ? (uint32_t)(len - done) : step;

		submit(c, NBD_CMD_READ, 0, offset + done, n, NULL, dest + done);
		done += n;
	}
	drain(c);
}

static void compare(const uint8_t *got, const uint8_t *want, uint64_t len, const char *what)
{
	for (uint64_t i = 0; i < len; i++)
		if (got[i] != want[i])
			die("%s: byte %llu is %02x, expected %02x", what, (unsigned long long)i,
			    got[i], want[i]);
}

static uint64_t rng_state = 0x5eed5eed5eed5eedull;

static void fill_pattern(uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++) {
		rng_state ^= rng_state << 13;
		rng_state ^= rng_state >> 7;
		rng_state ^= rng_state << 17;
		p[i] = (uint8_t)(rng_state >> 24);
	}
}

/*
 * Writes a fresh pattern to [offset, offset + len) of the export and of
 * EXPECT, in pipelined requests; the last one carries FLAGS_LAST.
 */
static uint64_t write_range(struct conn *c, uint8_t *expect, uint64_t offset, uint64_t len,
                            uint16_t flags_last)
{
	uint32_t step = request_bytes(c);
	uint32_t min = c->ex.min_block ? c->ex.min_block : 1;
	uint64_t end;

	/* Aligned to the minimum block size, clipped to the export. */
	offset -= offset % min;
	end = offset + len;
	end += (min - end % min) % min;
	if (end > c->ex.size_bytes)
		end = c->ex.size_bytes;
	if (offset >= end)
		return 0;
	fill_pattern(expect + offset, end - offset);
	for (uint64_t at = offset; at < end;) {
		uint32_t n = end - at < step ? (uint32_t)(end - at) : step;

		submit(c, NBD_CMD_WRITE, at + n == end ? flags_last : 0, at, n, expect + at, NULL);
		at += n;
	}
	return end - offset;
}

static uint8_t *load_file(const char *path, uint64_t *size)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	if ((uint64_t)st.st_size > MAX_FILE_BYTES)
		die("%s: larger than %llu bytes", path, MAX_FILE_BYTES);
	*size = (uint64_t)st.st_size;
	buf = malloc(*size ? *size : 1);
	if (!buf)
		die("out of memory");
	for (uint64_t done = 0; done < *size;) {
		ssize_t k = pread(fd, buf + done, *size - done, (off_t)done);

		if (k <= 0)
			die("%s: read: %s", path, k ? strerror(errno) : "short file");
		done += (uint64_t)k;
	}
	close(fd);
	return buf;
}

static void save_file(const char *path, const uint8_t *buf, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	for (uint64_t done = 0; done < size;) {
		ssize_t k = write(fd, buf + done, size - done);

		if (k <= 0)
			die("%s: write: %s", path, strerror(errno));
		done += (uint64_t)k;
	}
	if (close(fd) < 0)
		die("%s: close: %s", path, strerror(errno));
}

/* The write test on a writable export; returns the bytes written. */
static uint64_t write_test(struct conn *c, uint8_t *expect)
{
	const uint64_t mib = 1u << 20, size = c->ex.size_bytes;
	uint16_t fua = c->ex.tflags & NBD_TFLAG_SEND_FUA ? NBD_CMD_FLAG_FUA : 0;
	uint64_t written = 0;

	written += write_range(c, expect, 0, 4096, 0);
	written += write_range(c, expect, mib - 1536, 3072, fua);
	/* several requests in flight at once */
	written += write_range(c, expect, 5 * mib + 4096, 3 * mib + 12288, 0);
	written += write_range(c, expect, size > 8192 ? size - 8192 : 0, 8192, fua);
	drain(c);
	if (c->ex.tflags & NBD_TFLAG_SEND_FLUSH) {
		submit(c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL);
		drain(c);
	}
	if ((c->ex.tflags & NBD_TFLAG_SEND_TRIM) && size >= 3 * mib) {
		/* Trimmed bytes are unspecified until written again. */
		submit(c, NBD_CMD_TRIM, 0, 2 * mib, (uint32_t)(512 * 1024), NULL, NULL);
		drain(c);
		written += write_range(c, expect, 2 * mib, 512 * 1024, 0);
		drain(c);
	}
	if (c->ex.tflags & NBD_TFLAG_SEND_FLUSH) {
		submit(c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL);
		drain(c);
	}
	return written;
}

static void disconnect(struct conn *c)
{
	uint8_t hdr[NBD_REQUEST_BYTES], extra;
	struct iovec iov = {hdr, sizeof(hdr)};
	ssize_t k;

	if (proto_client_encode_request(hdr, NBD_CMD_DISC, 0, ++c->next_cookie, 0, 0) < 0)
		die("cannot encode DISC");
	send_all(c->fd, &iov, 1);
	shutdown(c->fd, SHUT_WR);
	/* The server has no reply to DISC: it closes. */
	do
		k = recv(c->fd, &extra, 1, 0);
	while (k < 0 && errno == EINTR);
	if (k > 0)
		die("server sent data after DISC");
	close(c->fd);
}

int main(int argc, char **argv)
{
	const char *expect_path = NULL;
	bool write = false;
	int refused = 0;
	struct conn c = {0};
	uint64_t size, written = 0;
	uint8_t *expect, *got;

	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--write"))
			write = true;
		else if (!strncmp(argv[i], "--expect=", 9))
			expect_path = argv[i] + 9;
		else
			argc = 0;
	}
	if (argc < 4)
		die("usage: proto_client_peer SOCKET EXPORT FILE [--write] [--expect=OUT]");

	expect = load_file(argv[3], &size);
	c.fd = connect_unix(argv[1]);
	handshake(&c, argv[2]);
	if (c.ex.size_bytes != size)
		die("export size %llu, but %s has %llu bytes", (unsigned long long)c.ex.size_bytes,
		    argv[3], (unsigned long long)size);
	got = malloc(size ? size : 1);
	if (!got)
		die("out of memory");

	read_range(&c, 0, size, got);
	compare(got, expect, size, "export differs from the file");

	if (write && (c.ex.tflags & NBD_TFLAG_READ_ONLY)) {
		uint8_t block[4096] = {0};

		if (size >= sizeof(block))
			submit_checked(&c, NBD_CMD_WRITE, 0, 0, sizeof(block), block, NULL,
			               ANY_ERROR, &refused);
		drain(&c);
		memset(got, 0, size);
		read_range(&c, 0, size, got);
		compare(got, expect, size, "read-only export changed by a refused write");
	} else if (write) {
		written = write_test(&c, expect);
		memset(got, 0, size);
		read_range(&c, 0, size, got);
		compare(got, expect, size, "read back differs from what was written");
	}
	if (expect_path)
		save_file(expect_path, expect, size);
	disconnect(&c);

	printf("ok: export '%s' size=%llu tflags=0x%04x%s block=%u/%u/%u read=%llu written=%llu "
	       "reordered=%llu%s%s\n",
	       argv[2], (unsigned long long)size, c.ex.tflags,
	       c.ex.tflags & NBD_TFLAG_READ_ONLY ? " read-only" : "", c.ex.min_block,
	       c.ex.pref_block, c.ex.max_block, (unsigned long long)(write ? 2 * size : size),
	       (unsigned long long)written, (unsigned long long)c.reordered,
	       refused ? " write-refused=" : "", refused ? errname(refused) : "");
	free(got);
	free(expect);
	return 0;
}
