/* SPDX-License-Identifier: MIT */
/*
 * Transmission tests of the NBD protocol machine: every command and flag,
 * with and without structured replies, and the malformed requests a server
 * must survive: bad request magics (the extended-header one too), offsets
 * and lengths beyond the end, wrapping 2^64, of 0 and of 0xffffffff, WRITE
 * payloads of refused requests and over the cap, unknown commands, unknown
 * and inapplicable flags, BLOCK_STATUS without a context, with REQ_ONE near
 * the end and near 2^32 on a disk over 4 GiB.  Every stream is fed whole and
 * one byte at a time.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Session on EXPORT (after SR and SET_META_CONTEXT(base:allocation) when SR), then REQS. */
static void session(const char *export, bool sr, const struct buf *reqs, struct result *r,
                    struct buf *exp_handshake)
{
	static const char *const ba[] = {"base:allocation"};
	static const uint16_t want_bs[] = {NBD_INFO_BLOCK_SIZE};
	struct buf in = {0};

	c_flags(&in, 3);
	if (sr) {
		c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
		c_meta(&in, NBD_OPT_SET_META_CONTEXT, export, 1, ba);
	}
	c_info(&in, NBD_OPT_GO, export, 1, want_bs);
	if (exp_handshake) {
		struct result h;

		drive(in.p, in.len, 0, &h);
		putn(exp_handshake, h.out.p, h.out.len);
		result_free(&h);
	}
	putn(&in, reqs->p, reqs->len);
	run_both(&in, r);
	buf_free(&in);
}

struct req_case {
	const char *export;
	uint16_t flags, type;
	uint64_t offset;
	uint32_t length;
	uint32_t err; /* 0 = passed to the caller; UINT32_MAX = answered with success */
	const char *msg;
};

#define BEYOND "request beyond the end of the export"
#define NOOP   UINT32_MAX

static const struct req_case cases[] = {
    /* bounds on a 1 GiB export: past the end, wrapping 2^64, 0 and 0xffffffff long */
    {"disk", 0, NBD_CMD_READ, GIB, 1, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_READ, GIB - 512, 1024, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_READ, UINT64_MAX - 511, 1024, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_READ, 0, 0xffffffff, NBD_EINVAL, BEYOND},
    {"big", 0, NBD_CMD_READ, 0, 0xffffffff, NBD_EINVAL, "request larger than the maximum payload"},
    {"disk", 0, NBD_CMD_READ, 0, PROTO_MAX_PAYLOAD + 1, NBD_EINVAL,
     "request larger than the maximum payload"},
    {"disk", 0, NBD_CMD_READ, 0, PROTO_MAX_PAYLOAD, 0, NULL},
    {"disk", 0, NBD_CMD_READ, GIB - 512, 512, 0, NULL},
    {"disk", 0, NBD_CMD_READ, 5, 0, NOOP, NULL},
    {"disk", 0, NBD_CMD_READ, UINT64_MAX, 0, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_TRIM, GIB, 512, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_TRIM, UINT64_MAX - 511, 1024, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_TRIM, 0, 0xffffffff, NBD_EINVAL, BEYOND},
    {"big", 0, NBD_CMD_TRIM, 0, 0xffffffff, 0, NULL},
    {"disk", 0, NBD_CMD_TRIM, 0, 0, NOOP, NULL},
    {"disk", 0, NBD_CMD_WRITE_ZEROES, GIB, 512, NBD_ENOSPC, BEYOND},
    {"disk", 0, NBD_CMD_WRITE_ZEROES, UINT64_MAX - 511, 1024, NBD_ENOSPC, BEYOND},
    {"disk", 0, NBD_CMD_WRITE_ZEROES, 0, 0xffffffff, NBD_ENOSPC, BEYOND},
    {"disk", 0, NBD_CMD_WRITE_ZEROES, 0, 0, NOOP, NULL},
    {"big", NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 4 * GIB, 0xffffffff, 0,
     NULL},
    {"disk", 0, NBD_CMD_CACHE, GIB, 1, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_CACHE, UINT64_MAX, 2, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_CACHE, 0, 0xffffffff, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_CACHE, 0, 0, NOOP, NULL},
    {"ro", 0, NBD_CMD_CACHE, 0, 4096, 0, NULL},
    {"disk", 0, NBD_CMD_BLOCK_STATUS, GIB, 512, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_BLOCK_STATUS, UINT64_MAX - 511, 1024, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_BLOCK_STATUS, 0, 0xffffffff, NBD_EINVAL, BEYOND},
    {"disk", 0, NBD_CMD_BLOCK_STATUS, 0, 0, NBD_EINVAL, "zero-length block status"},
    /* near the end and near 2^32 on a disk > 4 GiB */
    {"disk", NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, GIB - 4096, 4096, 0, NULL},
    {"big", 0, NBD_CMD_BLOCK_STATUS, 4 * GIB, 0xffffffff, 0, NULL},
    {"big", 0, NBD_CMD_BLOCK_STATUS, 4 * GIB + 2, 0xffffffff, NBD_EINVAL, BEYOND},
    /* FLUSH ignores offset and length */
    {"disk", 0, NBD_CMD_FLUSH, 0, 0, 0, NULL},
    {"disk", NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, UINT64_MAX, 0xffffffff, 0, NULL},
    /* read-only */
    {"ro", 0, NBD_CMD_TRIM, 0, 512, NBD_EPERM, "export is read-only"},
    {"ro", 0, NBD_CMD_WRITE_ZEROES, 0, 512, NBD_EPERM, "export is read-only"},
    {"ro", 0, NBD_CMD_WRITE_ZEROES, 0, 0, NBD_EPERM, "export is read-only"},
    {"disk@snap", 0, NBD_CMD_TRIM, GIB * 4, 512, NBD_EPERM, "export is read-only"},
    {"ro", 0, NBD_CMD_READ, 0, 512, 0, NULL},
    {"ro", 0, NBD_CMD_FLUSH, 0, 0, 0, NULL},
    /* unknown commands */
    {"disk", 0, 8, 2 * GIB, 0, NBD_EINVAL, "unknown command"},
    {"disk", 0, 9, 0, 512, NBD_EINVAL, "unknown command"},
    {"disk", 0, 99, 0, 512, NBD_EINVAL, "unknown command"},
    {"disk", 0, 0xffff, 0, 512, NBD_EINVAL, "unknown command"},
    /* unknown and inapplicable flags */
    {"disk", 0x80, NBD_CMD_READ, 0, 512, NBD_EINVAL, "unknown or inapplicable command flag"},
    {"disk", 0x8000, NBD_CMD_READ, 0, 512, NBD_EINVAL, "unknown or inapplicable command flag"},
    {"disk", 1u << 5, NBD_CMD_WRITE_ZEROES, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_NO_HOLE, NBD_CMD_TRIM, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_DF, NBD_CMD_CACHE, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_TRIM, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 0, 512, 0, NULL},
    {"ro", NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0, 512, NBD_EINVAL,
     "unknown or inapplicable command flag"},
    {"disk", NBD_CMD_FLAG_FUA, NBD_CMD_READ, 0, 512, 0, NULL},
    {"disk", NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 512, 0, NULL},
    /* block sizes advertised (min 512, max 1 MiB) */
    {"bs", 0, NBD_CMD_READ, 1, 512, NBD_EINVAL, "request not aligned to the minimum block size"},
    {"bs", 0, NBD_CMD_TRIM, 0, 513, NBD_EINVAL, "request not aligned to the minimum block size"},
    {"bs", 0, NBD_CMD_READ, 0, (1 << 20) + 512, NBD_EINVAL,
     "request larger than the maximum payload"},
    {"bs", 0, NBD_CMD_READ, 512, 4096, 0, NULL},
};

static void check_case(const struct req_case *c, bool sr)
{
	struct buf reqs = {0}, exp = {0};
	struct result r;
	char ev[512];
	size_t hs;

	c_req(&reqs, c->flags, c->type, 0x1234, c->offset, c->length);
	session(c->export, sr, &reqs, &r, &exp);
	hs = exp.len;
	if (c->err == 0) {
		snprintf(ev, sizeof(ev), "REQ type=%u flags=%x cookie=1234 off=%llx len=%u\n",
		         c->type, c->flags, (unsigned long long)c->offset, c->length);
	} else {
		if (c->err == NOOP && sr && c->type == NBD_CMD_READ)
			s_done(&exp, 0x1234);
		else if (c->err == NOOP)
			s_simple(&exp, 0x1234, 0);
		else if (sr)
			s_err_chunk(&exp, 0x1234, c->err, c->msg);
		else
			s_simple(&exp, 0x1234, c->err);
		ev[0] = '\0';
	}
	cr_assert_not(r.disconnected);
	cr_assert_geq(r.out.len, hs);
	if (r.out.len != exp.len || memcmp(r.out.p, exp.p, exp.len))
		fprintf(stderr, "case %s flags=%x type=%u off=%llx len=%u sr=%d\n", c->export,
		        c->flags, c->type, (unsigned long long)c->offset, c->length, sr);
	expect_out(&r, &exp);
	/* events after the EXPORT line */
	{
		const char *nl = memchr(r.events.p, '\n', r.events.len);
		size_t rest;

		cr_assert_not_null(nl);
		rest = r.events.len - (size_t)(nl + 1 - (const char *)r.events.p);
		cr_assert(rest == strlen(ev) && !memcmp(nl + 1, ev, rest),
		          "case %s flags=%x type=%u off=%llx len=%u sr=%d: got %.*s", c->export,
		          c->flags, c->type, (unsigned long long)c->offset, c->length, sr,
		          (int)rest, nl + 1);
	}
	result_free(&r);
	buf_free(&reqs);
	buf_free(&exp);
}

Test(proto_transmission, request_table_structured)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i], true);
}

Test(proto_transmission, request_table_simple)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct req_case c = cases[i];

		/* without SR: no context, so BLOCK_STATUS is always refused */
		if (c.type == NBD_CMD_BLOCK_STATUS) {
			c.err = NBD_EINVAL;
			c.msg = "no metadata context selected for this export";
		}
		check_case(&c, false);
	}
}

/* DF needs structured replies. */
Test(proto_transmission, df_flag)
{
	struct req_case c = {"disk", NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512, 0, NULL};

	check_case(&c, true);
	c.err = NBD_EINVAL;
	check_case(&c, false);
}

/* Bad request magics (the extended-header one too) disconnect. */
Test(proto_transmission, bad_request_magic)
{
	static const uint32_t magics[] = {0x25609514, NBD_EXT_REQ_MAGIC, 0, NBD_SIMPLE_MAGIC};

	for (size_t i = 0; i < 4; i++) {
		struct buf reqs = {0}, exp = {0};
		struct result r;

		c_req(&reqs, 0, NBD_CMD_READ, 1, 0, 512);
		put32(&reqs, magics[i]);
		put16(&reqs, 0);
		put16(&reqs, NBD_CMD_READ);
		put64(&reqs, 2);
		put64(&reqs, 0);
		put64(&reqs, 512); /* extended layout: 32 bytes */
		c_req(&reqs, 0, NBD_CMD_READ, 3, 0, 512);
		session("disk", true, &reqs, &r, &exp);
		cr_assert(r.disconnected);
		cr_assert_eq(r.reason, PROTO_DISC_BAD_MAGIC);
		expect_out(&r, &exp);
		expect_events(&r, "EXPORT 'disk' size=1073741824 tflags=0ded sr=1 bs=1\n"
		                  "REQ type=0 flags=0 cookie=1 off=0 len=512\n"
		                  "DISCONNECT 2\n");
		result_free(&r);
		buf_free(&reqs);
		buf_free(&exp);
	}
}

/* WRITE: payload passed through, refused ones consumed, oversized ones disconnect. */
Test(proto_transmission, write_payloads)
{
	struct buf reqs = {0}, exp = {0};
	struct result r;
	uint8_t *big = calloc(1, 70000);

	for (size_t i = 0; i < 70000; i++)
		big[i] = (uint8_t)(i * 7);
	c_req(&reqs, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1, 4096, 70000);
	putn(&reqs, big, 70000);
	c_req(&reqs, 0, NBD_CMD_WRITE, 2, GIB - 2, 4); /* ENOSPC, payload skipped */
	putstr(&reqs, "zzzz");
	c_req(&reqs, 0x40, NBD_CMD_WRITE, 3, 0, 3); /* EINVAL, payload skipped */
	putstr(&reqs, "yyy");
	c_req(&reqs, 0, NBD_CMD_WRITE, 4, 0, 0); /* success, no payload */
	c_req(&reqs, 0, NBD_CMD_WRITE, 5, 0, 2);
	putstr(&reqs, "ok");
	c_req(&reqs, 0, NBD_CMD_WRITE, 6, 0, PROTO_MAX_PAYLOAD + 1);
	putstr(&reqs, "never read");
	session("disk", true, &reqs, &r, &exp);
	s_err_chunk(&exp, 2, NBD_ENOSPC, "request beyond the end of the export");
	s_err_chunk(&exp, 3, NBD_EINVAL, "unknown or inapplicable command flag");
	s_simple(&exp, 4, 0);
	expect_out(&r, &exp);
	expect_events(&r, "EXPORT 'disk' size=1073741824 tflags=0ded sr=1 bs=1\n"
	                  "REQ type=1 flags=1 cookie=1 off=1000 len=70000\n"
	                  "DATA done at 70000\n"
	                  "REQ type=1 flags=0 cookie=5 off=0 len=2\n"
	                  "DATA done at 2\n"
	                  "DISCONNECT 3\n");
	cr_assert_eq(r.data.len, 70002);
	cr_assert(!memcmp(r.data.p, big, 70000));
	cr_assert(!memcmp(r.data.p + 70000, "ok", 2));
	result_free(&r);

	/* read-only, without SR: EPERM as a simple reply after the payload */
	reqs.len = exp.len = 0;
	c_req(&reqs, 0, NBD_CMD_WRITE, 7, 0, 4);
	putstr(&reqs, "abcd");
	c_req(&reqs, 0, NBD_CMD_WRITE, 8, 0xffffffffffffff00ull, 0xffffffff);
	session("ro", false, &reqs, &r, &exp);
	s_simple(&exp, 7, NBD_EPERM);
	expect_out(&r, &exp);
	cr_assert(r.disconnected);
	cr_assert_eq(r.reason, PROTO_DISC_TOO_BIG);
	result_free(&r);
	free(big);
	buf_free(&reqs);
	buf_free(&exp);
}

/* DISC: no reply, nothing after it is read. */
Test(proto_transmission, disc)
{
	struct buf reqs = {0}, exp = {0};
	struct result r;

	c_req(&reqs, 0, NBD_CMD_DISC, 1, 0, 0);
	c_req(&reqs, 0, NBD_CMD_READ, 2, 0, 512);
	session("disk", false, &reqs, &r, &exp);
	expect_out(&r, &exp);
	cr_assert(r.disconnected);
	cr_assert_eq(r.reason, PROTO_DISC_CLIENT);
	result_free(&r);
	buf_free(&reqs);
	buf_free(&exp);
}
