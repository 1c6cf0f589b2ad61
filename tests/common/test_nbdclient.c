/* SPDX-License-Identifier: MIT */
/*
 * test_nbdclient.c - the NBD client layer (common/nbdclient.c) against a
 * scripted server in this process, which can refuse an export the way a
 * server may, hang at any point or hang up: the errno each case gives,
 * that a timeout really bounds the wait, and that the server's errors
 * leave the connection usable; then against nbdkit (when installed), a
 * server we did not write, for real data.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nbd_wire.h"
#include "nbdclient.h"
#include "one_server.h"

#define EXPORT_BYTES (1u << 20)
#define FILL_BYTE    0x5a

/* What the scripted server does. */
enum script {
	HANG_AT_GREETING,  /* accepts and says nothing */
	GARBAGE_GREETING,  /* not NBD at all */
	REFUSE_GO,         /* answers NBD_OPT_GO with the error in refusal */
	SERVE,             /* a 1 MiB export; every request succeeds, reads read FILL_BYTE */
	FAIL_REQUESTS,     /* every request fails with ENOSPC */
	HANG_AT_REQUEST,   /* reads the first request and never answers */
	HANG_UP_AT_REQUEST /* reads the first request and closes */
};

/* The script of one scripted server. */
struct script_run {
	enum script script;
	uint32_t refusal; /* for REFUSE_GO */
};

static int option_reply(int fd, uint32_t option, uint32_t type, const void *data, uint32_t len)
{
	struct __attribute__((packed)) {
		uint64_t magic;
		uint32_t option, type, len;
	} h = {htobe64(NBD_REP_MAGIC), htobe32(option), htobe32(type), htobe32(len)};

	return one_server_put(fd, &h, sizeof(h)) < 0 || one_server_put(fd, data, len) < 0 ? -1 : 0;
}

/* The handshake up to GO's answer: 0 once in transmission, -1 otherwise. */
static int handshake(const struct script_run *s, int fd)
{
	struct __attribute__((packed)) {
		uint64_t magic, ihaveopt;
		uint16_t flags;
	} greeting = {htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
	              htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)};
	struct __attribute__((packed)) {
		uint16_t type;
		uint64_t size;
		uint16_t flags;
	} info = {htobe16(NBD_INFO_EXPORT), htobe64(EXPORT_BYTES),
	          htobe16(NBD_TFLAG_HAS_FLAGS | NBD_TFLAG_SEND_FLUSH | NBD_TFLAG_SEND_WRITE_ZEROES |
	                  NBD_TFLAG_CAN_MULTI_CONN)};
	static const char why[] = "not for you";
	uint32_t client_flags;
	char data[4096];

	if (one_server_put(fd, &greeting, sizeof(greeting)) < 0 ||
	    one_server_get(fd, &client_flags, 4) < 0)
		return -1;
	for (;;) {
		struct __attribute__((packed)) {
			uint64_t magic;
			uint32_t option, len;
		} opt;
		uint32_t option, len;

		if (one_server_get(fd, &opt, sizeof(opt)) < 0)
			return -1;
		option = be32toh(opt.option);
		len = be32toh(opt.len);
		if (len > sizeof(data) || one_server_get(fd, data, len) < 0)
			return -1;
		if (option != NBD_OPT_GO) {
			if (option_reply(fd, option, NBD_REP_ERR_UNSUP, NULL, 0) < 0)
				return -1;
			continue;
		}
		if (s->script == REFUSE_GO)
			return option_reply(fd, option, s->refusal, why, sizeof(why) - 1), -1;
		if (option_reply(fd, option, NBD_REP_INFO, &info, sizeof(info)) < 0 ||
		    option_reply(fd, option, NBD_REP_ACK, NULL, 0) < 0)
			return -1;
		return 0;
	}
}

/* Transmission with simple replies, as the script says. */
static void transmission(const struct script_run *s, int fd)
{
	static char payload[EXPORT_BYTES];

	for (;;) {
		struct __attribute__((packed)) {
			uint32_t magic;
			uint16_t flags, type;
			uint64_t cookie, offset;
			uint32_t len;
		} req;
		struct __attribute__((packed)) {
			uint32_t magic, error;
			uint64_t cookie;
		} reply;
		uint32_t len;
		uint16_t type;

		if (one_server_get(fd, &req, sizeof(req)) < 0)
			return;
		type = be16toh(req.type);
		len = be32toh(req.len);
		if (type == NBD_CMD_DISC || len > sizeof(payload) ||
		    (type == NBD_CMD_WRITE && one_server_get(fd, payload, len) < 0))
			return;
		if (s->script == HANG_AT_REQUEST)
			one_server_drain(fd);
		if (s->script == HANG_AT_REQUEST || s->script == HANG_UP_AT_REQUEST)
			return;
		reply.magic = htobe32(NBD_SIMPLE_MAGIC);
		reply.error = htobe32(s->script == FAIL_REQUESTS ? NBD_ENOSPC : 0);
		reply.cookie = req.cookie;
		if (one_server_put(fd, &reply, sizeof(reply)) < 0)
			return;
		if (type == NBD_CMD_READ && s->script == SERVE) {
			memset(payload, FILL_BYTE, len);
			if (one_server_put(fd, payload, len) < 0)
				return;
		}
	}
}

static void run_script(struct one_server *srv, int fd)
{
	const struct script_run *s = srv->data;

	if (s->script == HANG_AT_GREETING)
		one_server_drain(fd);
	else if (s->script == GARBAGE_GREETING)
		one_server_put(fd, "HTTP/1.1 400 No\r\n\r\n", 19);
	else if (handshake(s, fd) == 0)
		transmission(s, fd);
}

/* A scripted server s running run (which must outlive it). */
static void server_start(struct one_server *s, struct script_run *run)
{
	one_server_start(s, "nbd.sock", run_script, run);
}

static int connect_to(const char *path, const char *export, int timeout_ms, struct nbd_handle **h,
                      struct nbdclient_info *info, char *err, size_t errlen)
{
	const struct nbdclient_opts opts = {
	    .socket_path = path, .export_name = export, .timeout_ms = timeout_ms};

	return nbdclient_connect(&opts, h, info, err, errlen);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connection attempt that fails with want, in at most max_ms. */
static void expect_connect_fails(enum script script, uint32_t refusal, int timeout_ms, int want,
                                 int64_t max_ms, const char *words)
{
	struct nbd_handle *h = NULL;
	struct nbdclient_info info = {.size_bytes = 42};
	struct script_run run = {script, refusal};
	struct one_server s;
	char err[512] = "";
	int64_t t0 = now_ms();

	server_start(&s, &run);
	cr_expect_eq(connect_to(s.path, "vm1", timeout_ms, &h, &info, err, sizeof(err)), want, "%s",
	             err);
	cr_expect_leq(now_ms() - t0, max_ms, "took %lld ms", (long long)(now_ms() - t0));
	cr_expect_null(h);
	cr_expect_eq(info.size_bytes, 42, "info was written on failure");
	cr_expect_not_null(strstr(err, words), "\"%s\" does not say \"%s\"", err, words);
	one_server_stop(&s);
}

Test(nbdclient_connect, no_such_export)
{
	expect_connect_fails(REFUSE_GO, NBD_REP_ERR_UNKNOWN, 5000, -ENOENT, 4000, "vm1");
}

Test(nbdclient_connect, refused_by_policy)
{
	expect_connect_fails(REFUSE_GO, NBD_REP_ERR_POLICY, 5000, -EPERM, 4000, "policy");
}

Test(nbdclient_connect, other_refusals_are_eio)
{
	expect_connect_fails(REFUSE_GO, NBD_REP_ERR_INVALID, 5000, -EIO, 4000, "invalid");
	expect_connect_fails(REFUSE_GO, NBD_REP_ERR_SHUTDOWN, 5000, -EIO, 4000, "shutting down");
}

Test(nbdclient_connect, a_silent_server_times_out)
{
	expect_connect_fails(HANG_AT_GREETING, 0, 300, -ETIMEDOUT, 3000, "within 300 ms");
}

Test(nbdclient_connect, not_nbd)
{
	expect_connect_fails(GARBAGE_GREETING, 0, 5000, -EIO, 4000, "");
}

Test(nbdclient_connect, nobody_listening_is_not_enoent)
{
	struct nbd_handle *h = NULL;
	struct nbdclient_info info;
	char err[512] = "";

	cr_expect_eq(connect_to("/nonexistent/nbd.sock", "vm1", 1000, &h, &info, err, sizeof(err)),
	             -EIO);
	cr_expect_not_null(strstr(err, "No such file"), "%s", err);
	cr_expect_null(h);
}

Test(nbdclient_connect, bad_options_and_uris)
{
	static const char *const uris[] = {
	    "nbd+unix:///vm1?socket=/s&tls-psk-file=/etc/passwd", /* reads a local file */
	    "nbds+unix:///vm1?socket=/s",                         /* TLS */
	    "nbd+vsock:///vm1",                                   /* not a transport we use */
	    "http://localhost/vm1",
	};
	struct nbdclient_opts both = {.socket_path = "/s", .export_name = "", .uri = "nbd://x"};
	struct nbdclient_opts none = {.timeout_ms = -1};
	struct nbd_handle *h = NULL;
	struct nbdclient_info info;
	char err[512];

	cr_expect_eq(nbdclient_connect(&both, &h, &info, NULL, 0), -EINVAL);
	cr_expect_eq(nbdclient_connect(&none, &h, &info, NULL, 0), -EINVAL);
	for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		struct nbdclient_opts o = {.uri = uris[i], .timeout_ms = 1000};

		err[0] = '\0';
		cr_expect_eq(nbdclient_connect(&o, &h, &info, err, sizeof(err)), -EINVAL, "%s: %s",
		             uris[i], err);
	}
	cr_expect_null(h);
}

/* A connected handle to the scripted server s, running run. */
static struct nbd_handle *connected(struct one_server *s, struct script_run *run,
                                    struct nbdclient_info *info)
{
	struct nbd_handle *h = NULL;
	char err[512] = "";

	server_start(s, run);
	cr_assert_eq(connect_to(s->path, "vm1", 5000, &h, info, err, sizeof(err)), 0, "%s", err);
	return h;
}

Test(nbdclient_requests, succeed_with_what_the_server_says)
{
	static char buf[64 << 10], expect[64 << 10];
	struct nbdclient_info info;
	struct script_run run = {SERVE, 0};
	struct one_server s;
	struct nbd_handle *h = connected(&s, &run, &info);

	cr_expect_eq(info.size_bytes, EXPORT_BYTES);
	cr_expect(!info.read_only);
	cr_expect(info.can_flush);
	cr_expect(info.can_zero);
	cr_expect(info.can_multi_conn);
	cr_expect(!info.block_status);
	cr_expect_eq(info.max_request_bytes, 0);
	memset(expect, FILL_BYTE, sizeof(expect));
	cr_expect_eq(nbdclient_pread(h, buf, sizeof(buf), 4096, 1000), 0);
	cr_expect_eq(memcmp(buf, expect, sizeof(buf)), 0);
	cr_expect_eq(nbdclient_pwrite(h, buf, sizeof(buf), 0, 1000), 0);
	cr_expect_eq(nbdclient_zero(h, 65536, 0, LIBNBD_CMD_FLAG_NO_HOLE, 1000), 0);
	cr_expect_eq(nbdclient_flush(h, -1), 0);
	nbdclient_close(h);
	one_server_stop(&s);
}

Test(nbdclient_requests, server_errors_keep_the_connection)
{
	char buf[512];
	struct nbdclient_info info;
	struct script_run run = {FAIL_REQUESTS, 0};
	struct one_server s;
	struct nbd_handle *h = connected(&s, &run, &info);

	cr_expect_eq(nbdclient_pwrite(h, buf, sizeof(buf), 0, 1000), -ENOSPC);
	cr_expect_eq(nbdclient_pread(h, buf, sizeof(buf), 0, 1000), -ENOSPC);
	cr_expect_eq(nbdclient_flush(h, 1000), -ENOSPC);
	cr_expect_eq(nbd_aio_is_ready(h), 1);
	nbdclient_close(h);
	one_server_stop(&s);
}

Test(nbdclient_requests, refused_before_sending)
{
	char buf[512];
	struct nbdclient_info info;
	struct script_run run = {SERVE, 0};
	struct one_server s;
	struct nbd_handle *h = connected(&s, &run, &info);

	/* Past the end of the export: libnbd refuses it, the connection stays. */
	cr_expect_eq(nbdclient_pread(h, buf, sizeof(buf), EXPORT_BYTES, 1000), -EINVAL);
	cr_expect_eq(nbdclient_pread(h, buf, sizeof(buf), 0, 1000), 0);
	nbdclient_close(h);
	one_server_stop(&s);
}

Test(nbdclient_requests, a_silent_server_times_out)
{
	char buf[512];
	struct nbdclient_info info;
	struct script_run run = {HANG_AT_REQUEST, 0};
	struct one_server s;
	struct nbd_handle *h = connected(&s, &run, &info);
	int64_t t0 = now_ms();

	cr_expect_eq(nbdclient_pread(h, buf, sizeof(buf), 0, 300), -ETIMEDOUT);
	cr_expect_geq(now_ms() - t0, 300);
	cr_expect_leq(now_ms() - t0, 3000);
	nbdclient_close(h);
	one_server_stop(&s);
}

Test(nbdclient_requests, a_hang_up_is_enotconn)
{
	char buf[512] = "";
	struct nbdclient_info info;
	struct script_run run = {HANG_UP_AT_REQUEST, 0};
	struct one_server s;
	struct nbd_handle *h = connected(&s, &run, &info);

	cr_expect_eq(nbdclient_pwrite(h, buf, sizeof(buf), 0, 5000), -ENOTCONN);
	cr_expect_eq(nbdclient_flush(h, 5000), -ENOTCONN, "a dead handle stays dead");
	nbdclient_close(h);
	one_server_stop(&s);
}

/* nbdkit serving a 1 MiB RAM disk on path, or skips the test when it is not installed. */
static pid_t nbdkit_start(const char *path)
{
	char *argv[] = {"nbdkit", "--exit-with-parent", "-f", "-U", (char *)path, "memory", "1M",
	                NULL};
	struct stat st;
	pid_t pid;

	if (posix_spawnp(&pid, "nbdkit", NULL, NULL, argv, NULL) != 0)
		cr_skip_test("nbdkit is not installed");
	for (int i = 0; i < 500 && stat(path, &st) < 0; i++)
		usleep(10000);
	cr_assert_eq(stat(path, &st), 0, "nbdkit did not start");
	return pid;
}

Test(nbdclient_nbdkit, data_through_socket_and_uri)
{
	char dir[] = "/tmp/test_nbdclient.XXXXXX", path[96], uri[160];
	static char in[128 << 10], out[128 << 10];
	struct nbd_handle *h = NULL;
	struct nbdclient_info info;
	char err[512] = "";
	pid_t pid;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/nbd.sock", dir);
	pid = nbdkit_start(path);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i * 7 + 3);
	cr_assert_eq(connect_to(path, "", 5000, &h, &info, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(info.size_bytes, 1u << 20);
	cr_expect_eq(nbdclient_pwrite(h, in, sizeof(in), 65536, 5000), 0);
	cr_expect_eq(nbdclient_zero(h, 4096, 65536 + 8192, 0, 5000), 0);
	cr_expect_eq(nbdclient_flush(h, 5000), 0);
	nbdclient_close(h);
	memset(in + 8192, 0, 4096);

	/* Again through a URI, with block status. */
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", path);
	h = NULL;
	{
		const struct nbdclient_opts o = {
		    .uri = uri, .want_block_status = true, .timeout_ms = 5000};

		cr_assert_eq(nbdclient_connect(&o, &h, &info, err, sizeof(err)), 0, "%s", err);
	}
	cr_expect(info.block_status);
	cr_expect_eq(nbdclient_pread(h, out, sizeof(out), 65536, 5000), 0);
	cr_expect_eq(memcmp(in, out, sizeof(in)), 0, "nbdkit gave back other bytes");
	nbdclient_close(h);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(path);
	rmdir(dir);
}
