/* SPDX-License-Identifier: MIT */
/*
 * Tests of the NBD client machine (proto_client.h): wired to the real server
 * machine in memory, fed hand-built hostile server streams, the request and
 * reply encoders, and a deterministic mutation loop.  Every stream is fed
 * whole and one byte at a time, and both runs must agree.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto_client.h"

#define MIB (1u << 20)

/* What a client run ended with. */
struct cres {
	enum proto_client_action_type type;
	int err;
	char message[256];
	struct proto_client_export ready;
	struct buf sent; /* all SEND bytes */
	size_t consumed;
};

static void cres_free(struct cres *r)
{
	buf_free(&r->sent);
}

/* Input split: fixed pieces of CHUNK bytes (0 = all at once), or random ones when RNG != 0. */
struct split {
	size_t chunk;
	uint64_t rng;
};

static uint64_t next_rand(uint64_t *s)
{
	/* xorshift64*: deterministic, seeded by the test */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static size_t piece(struct split *sp, size_t left)
{
	size_t n = sp->chunk;

	if (sp->rng)
		n = 1 + next_rand(&sp->rng) % 97;
	return n && n < left ? n : left;
}

static const uint8_t *at(const uint8_t *p, size_t pos)
{
	static const uint8_t none[1];

	return p ? p + pos : none;
}

static void record_final(struct cres *r, const struct proto_client_action *act)
{
	r->type = act->type;
	if (act->type == PROTO_CLIENT_READY) {
		r->ready = act->ready;
	} else if (act->type == PROTO_CLIENT_FAILED) {
		cr_assert_not_null(act->failed.message);
		cr_assert_lt(strlen(act->failed.message), sizeof(r->message));
		r->err = act->failed.err;
		strcpy(r->message, act->failed.message);
	}
}

/* Feeds server bytes IN to a new client for export NAME until it is done or the input is used. */
static void feed(const char *name, const uint8_t *in, size_t len, struct split sp, struct cres *r)
{
	struct proto_client *c;
	struct proto_client_action act;
	size_t pos = 0, end, used;

	memset(r, 0, sizeof(*r));
	cr_assert_eq(proto_client_new(name, &c), 0);
	end = piece(&sp, len);
	for (size_t guard = 0;; guard++) {
		cr_assert_lt(guard, 4 * len + 100, "client machine does not finish");
		used = SIZE_MAX;
		proto_client_step(c, at(in, pos), end - pos, &used, &act);
		cr_assert_leq(used, end - pos);
		pos += used;
		if (act.type == PROTO_CLIENT_SEND) {
			cr_assert_gt(act.send.len, 0);
			putn(&r->sent, act.send.data, act.send.len);
			continue;
		}
		if (act.type == PROTO_CLIENT_NEED_INPUT) {
			cr_assert_eq(pos, end, "NEED_INPUT with input left");
			if (pos == len)
				break;
			end = pos + piece(&sp, len - pos);
			continue;
		}
		record_final(r, &act);
		/* Done: every later call gives the same and consumes nothing. */
		{
			struct proto_client_action again;

			cr_assert_eq(proto_client_step(c, at(in, pos), len - pos, &used, &again),
			             act.type);
			cr_assert_eq(used, 0);
			cr_assert_eq(again.type, act.type);
			if (act.type == PROTO_CLIENT_FAILED) {
				cr_assert_eq(again.failed.err, act.failed.err);
				cr_assert_str_eq(again.failed.message, act.failed.message);
			}
		}
		break;
	}
	r->consumed = pos;
	proto_client_free(c);
}

static bool same_export(const struct proto_client_export *a, const struct proto_client_export *b)
{
	return a->size_bytes == b->size_bytes && a->tflags == b->tflags &&
	       a->min_block == b->min_block && a->pref_block == b->pref_block &&
	       a->max_block == b->max_block;
}

static void same_cres(const struct cres *a, const struct cres *b)
{
	cr_assert_eq(a->type, b->type, "type %d vs %d", a->type, b->type);
	cr_assert_eq(a->err, b->err, "err %d vs %d", a->err, b->err);
	cr_assert_str_eq(a->message, b->message);
	cr_assert_eq(a->consumed, b->consumed, "consumed %zu vs %zu", a->consumed, b->consumed);
	cr_assert(same_export(&a->ready, &b->ready), "ready differs");
	cr_assert_eq(a->sent.len, b->sent.len);
	cr_assert(a->sent.len == 0 || !memcmp(a->sent.p, b->sent.p, a->sent.len), "sent differs");
}

/* feed() whole and one byte at a time, asserting identical results; returns the whole run. */
static void feed_both(const char *name, const struct buf *in, struct cres *r)
{
	struct cres one;

	feed(name, in->p, in->len, (struct split){0, 0}, r);
	feed(name, in->p, in->len, (struct split){1, 0}, &one);
	same_cres(r, &one);
	cres_free(&one);
}

/* The bytes the client must send for NAME after a greeting with handshake flags HFLAGS. */
static void expected_go(struct buf *b, const char *name, uint16_t hflags)
{
	static const uint16_t bs[] = {NBD_INFO_BLOCK_SIZE};

	c_flags(b, NBD_FLAG_C_FIXED_NEWSTYLE | (hflags & NBD_FLAG_NO_ZEROES));
	c_info(b, NBD_OPT_GO, name, 1, bs);
}

static void greeting(struct buf *b, uint16_t hflags)
{
	put64(b, NBD_MAGIC);
	put64(b, NBD_IHAVEOPT);
	put16(b, hflags);
}

static void info_block_size(struct buf *b, uint32_t min, uint32_t pref, uint32_t max)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, NBD_OPT_GO);
	put32(b, NBD_REP_INFO);
	put32(b, 14);
	put16(b, NBD_INFO_BLOCK_SIZE);
	put32(b, min);
	put32(b, pref);
	put32(b, max);
}

static void rep_hdr(struct buf *b, uint32_t opt, uint32_t type, uint32_t len)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, opt);
	put32(b, type);
	put32(b, len);
}

/* A GO reply whose data is a string literal (may hold NUL bytes). */
#define REP_LIT(b, type, lit) s_rep(b, NBD_OPT_GO, type, lit, sizeof(lit) - 1)

static void ack(struct buf *b)
{
	s_rep(b, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
}

static void expect_failed(const struct buf *in, int err, const char *msg, size_t consumed)
{
	struct cres r;

	feed_both("disk", in, &r);
	cr_assert_eq(r.type, PROTO_CLIENT_FAILED, "type %d", r.type);
	cr_assert_eq(r.err, err, "err %d, want %d (%s)", r.err, err, r.message);
	if (msg)
		cr_assert_str_eq(r.message, msg);
	cr_assert_gt(strlen(r.message), 0);
	cr_assert_eq(r.consumed, consumed, "consumed %zu, want %zu", r.consumed, consumed);
	cres_free(&r);
}

static void expect_ready(const struct buf *in, const struct proto_client_export *want,
                         size_t consumed)
{
	struct cres r;

	feed_both("disk", in, &r);
	cr_assert_eq(r.type, PROTO_CLIENT_READY, "type %d (%d %s)", r.type, r.err, r.message);
	cr_assert_eq(r.ready.size_bytes, want->size_bytes);
	cr_assert_eq(r.ready.tflags, want->tflags);
	cr_assert_eq(r.ready.min_block, want->min_block);
	cr_assert_eq(r.ready.pref_block, want->pref_block);
	cr_assert_eq(r.ready.max_block, want->max_block);
	cr_assert_eq(r.consumed, consumed, "consumed %zu, want %zu", r.consumed, consumed);
	cres_free(&r);
}

/* ---- (a) wired to the real server machine ---- */

/*
 * Exports of the server in these tests: "" 64 MiB writable multi-conn, no
 * block sizes; "rw" 1 GiB writable with 512/4096/1 MiB; "ro" 1 MiB read-only
 * with 4096/4096/64 MiB; "denied" -EPERM; "down" -ESHUTDOWN; others -ENOENT.
 */
static int client_lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out)
{
	(void)opaque;
	(void)name_len;
	memset(out, 0, sizeof(*out));
	if (!strcmp(name, "")) {
		out->size_bytes = 64 * MIB;
		out->multi_conn = true;
	} else if (!strcmp(name, "rw")) {
		out->size_bytes = GIB;
		out->min_block = 512;
		out->pref_block = 4096;
		out->max_block = MIB;
	} else if (!strcmp(name, "ro")) {
		out->size_bytes = MIB;
		out->read_only = true;
		out->min_block = 4096;
		out->pref_block = 4096;
		out->max_block = 64 * MIB;
	} else if (!strcmp(name, "denied")) {
		return -EPERM;
	} else if (!strcmp(name, "down")) {
		return -ESHUTDOWN;
	} else {
		return -ENOENT;
	}
	return 0;
}

struct pair {
	struct proto_server *s;
	struct cres r;
	struct buf c2s, s2c; /* everything each side sent */
	size_t c2s_pos, s2c_pos;
	bool exported, disconnected;
	uint16_t export_tflags;
	uint64_t export_size;
};

/*
 * Runs a client for NAME against a server machine, both fed CHUNK bytes at
 * a time, until the client is done and the server has nothing more to do.
 */
static void pair_run(const char *name, size_t chunk, struct pair *p)
{
	struct proto_server_config cfg = {.lookup = client_lookup};
	struct proto_client *c;
	bool done = false, server_idle = false;

	memset(p, 0, sizeof(*p));
	cr_assert_eq(proto_server_new(&cfg, &p->s), 0);
	cr_assert_eq(proto_client_new(name, &c), 0);
	for (unsigned guard = 0; !done || !server_idle; guard++) {
		struct proto_action sa;
		struct proto_client_action ca;
		size_t n, used = SIZE_MAX;
		bool progress = false;

		cr_assert_lt(guard, 1000000u, "client and server do not finish");
		n = p->c2s.len - p->c2s_pos;
		if (chunk && n > chunk)
			n = chunk;
		if (!p->disconnected) {
			proto_server_step(p->s, at(p->c2s.p, p->c2s_pos), n, &used, &sa);
			cr_assert_leq(used, n);
			p->c2s_pos += used;
			progress = used > 0;
			server_idle = false;
			switch (sa.type) {
			case PROTO_ACT_NEED_INPUT:
				server_idle = p->c2s_pos == p->c2s.len;
				break;
			case PROTO_ACT_SEND:
				putn(&p->s2c, sa.send.data, sa.send.len);
				progress = true;
				break;
			case PROTO_ACT_EXPORT:
				p->exported = true;
				p->export_tflags = sa.export.tflags;
				p->export_size = sa.export.info.size_bytes;
				progress = true;
				break;
			case PROTO_ACT_DISCONNECT:
				p->disconnected = true;
				server_idle = true;
				progress = true;
				break;
			default:
				cr_assert_fail("server action %d during the handshake", sa.type);
			}
		}

		if (done) {
			cr_assert(progress || server_idle, "the server is stuck");
			continue;
		}
		n = p->s2c.len - p->s2c_pos;
		if (chunk && n > chunk)
			n = chunk;
		used = SIZE_MAX;
		proto_client_step(c, at(p->s2c.p, p->s2c_pos), n, &used, &ca);
		cr_assert_leq(used, n);
		p->s2c_pos += used;
		progress = progress || used > 0;
		switch (ca.type) {
		case PROTO_CLIENT_NEED_INPUT:
			break;
		case PROTO_CLIENT_SEND:
			putn(&p->r.sent, ca.send.data, ca.send.len);
			putn(&p->c2s, ca.send.data, ca.send.len);
			progress = true;
			break;
		default:
			record_final(&p->r, &ca);
			done = true;
			break;
		}
		cr_assert(progress || done, "neither side can go on");
	}
	p->r.consumed = p->s2c_pos;
	proto_client_free(c);
}

static void pair_free(struct pair *p)
{
	proto_server_free(p->s);
	cres_free(&p->r);
	buf_free(&p->c2s);
	buf_free(&p->s2c);
}

/* pair_run() whole and one byte at a time; identical results and bytes; returns the whole run. */
static void pair_both(const char *name, struct pair *p)
{
	struct pair one;

	pair_run(name, 0, p);
	pair_run(name, 1, &one);
	same_cres(&p->r, &one.r);
	cr_assert_eq(p->c2s.len, one.c2s.len);
	cr_assert(!memcmp(p->c2s.p, one.c2s.p, p->c2s.len), "client bytes differ");
	cr_assert_eq(p->s2c.len, one.s2c.len);
	cr_assert(!memcmp(p->s2c.p, one.s2c.p, p->s2c.len), "server bytes differ");
	cr_assert_eq(p->exported, one.exported);
	pair_free(&one);
	/* The server said nothing after its ACK, and the client took everything up to it. */
	cr_assert_eq(p->s2c_pos, p->s2c.len);
}

static void expect_pair_ready(const char *name, uint64_t size, uint16_t tflags, uint32_t min,
                              uint32_t pref, uint32_t max, struct pair *p)
{
	struct buf go = {0};

	pair_both(name, p);
	cr_assert_eq(p->r.type, PROTO_CLIENT_READY, "%d %s", p->r.err, p->r.message);
	cr_assert(p->exported);
	cr_assert_eq(p->r.ready.size_bytes, size);
	cr_assert_eq(p->r.ready.tflags, tflags, "tflags %04x", p->r.ready.tflags);
	cr_assert_eq(p->export_tflags, tflags);
	cr_assert_eq(p->export_size, size);
	cr_assert_eq(p->r.ready.min_block, min);
	cr_assert_eq(p->r.ready.pref_block, pref);
	cr_assert_eq(p->r.ready.max_block, max);
	/* The server offers NO_ZEROES, so the client takes it. */
	expected_go(&go, name, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	cr_assert_eq(p->c2s.len, go.len);
	cr_assert(!memcmp(p->c2s.p, go.p, go.len), "client handshake bytes");
	cr_assert(proto_server_in_transmission(p->s));
	buf_free(&go);
}

Test(proto_client, ready_with_real_server)
{
	struct pair p;

	/* HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|CACHE|FAST_ZERO (+ MULTI_CONN) */
	expect_pair_ready("", 64 * MIB, 0x0d6d, 0, 0, 0, &p);
	pair_free(&p);
	expect_pair_ready("rw", GIB, 0x0c6d, 512, 4096, MIB, &p);
	pair_free(&p);
	/* HAS_FLAGS|READ_ONLY|FLUSH|FUA|CACHE; max capped by the server to 32 MiB */
	expect_pair_ready("ro", MIB, 0x040f, 4096, 4096, 32 * MIB, &p);
	pair_free(&p);
}

static void expect_pair_failed(const char *name, int err, const char *msg)
{
	struct pair p;

	pair_both(name, &p);
	cr_assert_eq(p.r.type, PROTO_CLIENT_FAILED);
	cr_assert_eq(p.r.err, err, "err %d (%s)", p.r.err, p.r.message);
	cr_assert_str_eq(p.r.message, msg);
	cr_assert_not(p.exported);
	pair_free(&p);
}

Test(proto_client, refused_by_real_server)
{
	char name[PROTO_MAX_STRING + 1], want[PROTO_MAX_ECHO + 1];

	expect_pair_failed("nope", -ENOENT, "export 'nope' not found");
	expect_pair_failed("denied", -EPERM, "export 'denied' not available");
	expect_pair_failed("down", -ESHUTDOWN, "export 'down' not available");

	/* The longest name: the server's message echoes it cut, the client cuts again. */
	memset(name, 'n', PROTO_MAX_STRING);
	name[PROTO_MAX_STRING] = '\0';
	snprintf(want, sizeof(want), "export '%.*s", (int)(PROTO_MAX_ECHO - 8), name);
	expect_pair_failed(name, -ENOENT, want);
	cr_assert_eq(strlen(want), PROTO_MAX_ECHO);
}

static void expect_request(struct proto_server *s, uint16_t type, uint16_t flags, uint64_t cookie,
                           uint64_t offset, uint32_t length)
{
	uint8_t hdr[NBD_REQUEST_BYTES];
	struct proto_action act;
	size_t used;

	cr_assert_eq(proto_client_encode_request(hdr, type, flags, cookie, offset, length),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(proto_server_step(s, hdr, sizeof(hdr), &used, &act), PROTO_ACT_REQUEST,
	             "type %d", act.type);
	cr_assert_eq(used, NBD_REQUEST_BYTES);
	cr_assert_eq(act.request.type, type);
	cr_assert_eq(act.request.flags, flags);
	cr_assert_eq(act.request.cookie, cookie);
	cr_assert_eq(act.request.offset, offset);
	cr_assert_eq(act.request.length, length);
}

Test(proto_client, requests_parsed_by_real_server)
{
	struct pair p;
	struct proto_action act;
	uint8_t payload[4096], reply[NBD_SIMPLE_REPLY_BYTES];
	uint64_t cookie;
	uint32_t err;
	size_t used;

	expect_pair_ready("rw", GIB, 0x0c6d, 512, 4096, MIB, &p);
	expect_request(p.s, NBD_CMD_READ, 0, 0x0102030405060708ull, GIB - 4096, 4096);
	expect_request(p.s, NBD_CMD_FLUSH, 0, 7, 0, 0);
	expect_request(p.s, NBD_CMD_TRIM, 0, 8, 512, 1024);

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 1);
	expect_request(p.s, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0xfeedfacecafebeefull, 8192,
	               sizeof(payload));
	cr_assert_eq(proto_server_step(p.s, payload, sizeof(payload), &used, &act),
	             PROTO_ACT_WRITE_DATA);
	cr_assert_eq(used, sizeof(payload));
	cr_assert(act.write_data.last);
	cr_assert_eq(act.write_data.len, sizeof(payload));
	cr_assert_arr_eq(act.write_data.data, payload, sizeof(payload));

	/* A READ the server refuses on its own (misaligned): a simple error reply. */
	{
		uint8_t hdr[NBD_REQUEST_BYTES];

		cr_assert_eq(proto_client_encode_request(hdr, NBD_CMD_READ, 0, 99, 1, 512),
		             NBD_REQUEST_BYTES);
		cr_assert_eq(proto_server_step(p.s, hdr, sizeof(hdr), &used, &act), PROTO_ACT_SEND);
		cr_assert_eq(act.send.len, NBD_SIMPLE_REPLY_BYTES);
		cr_assert_eq(proto_client_decode_simple(act.send.data, &cookie, &err), 0);
		cr_assert_eq(cookie, 99);
		cr_assert_eq(proto_wire_to_errno(err), EINVAL);
	}

	/* Replies the caller encodes decode to the same cookie and error. */
	cr_assert_eq(proto_encode_simple(reply, 0xfeedfacecafebeefull, 0), NBD_SIMPLE_REPLY_BYTES);
	cr_assert_eq(proto_client_decode_simple(reply, &cookie, &err), 0);
	cr_assert_eq(cookie, 0xfeedfacecafebeefull);
	cr_assert_eq(err, 0);
	cr_assert_eq(proto_encode_simple(reply, 42, proto_errno_to_wire(-ENOSPC)),
	             NBD_SIMPLE_REPLY_BYTES);
	cr_assert_eq(proto_client_decode_simple(reply, &cookie, &err), 0);
	cr_assert_eq(cookie, 42);
	cr_assert_eq(proto_wire_to_errno(err), ENOSPC);

	/* DISC ends the server's session. */
	{
		uint8_t hdr[NBD_REQUEST_BYTES];

		cr_assert_eq(proto_client_encode_request(hdr, NBD_CMD_DISC, 0, 100, 0, 0),
		             NBD_REQUEST_BYTES);
		cr_assert_eq(proto_server_step(p.s, hdr, sizeof(hdr), &used, &act),
		             PROTO_ACT_DISCONNECT);
		cr_assert_eq(act.disconnect.reason, PROTO_DISC_CLIENT);
	}
	pair_free(&p);
}

Test(proto_client, read_only_write_refused_by_real_server)
{
	struct pair p;
	struct proto_action act;
	uint8_t hdr[NBD_REQUEST_BYTES], payload[4096] = {0};
	uint64_t cookie;
	uint32_t err;
	size_t used;

	expect_pair_ready("ro", MIB, 0x040f, 4096, 4096, 32 * MIB, &p);
	expect_request(p.s, NBD_CMD_READ, 0, 1, 0, 4096);
	cr_assert_eq(proto_client_encode_request(hdr, NBD_CMD_WRITE, 0, 2, 0, sizeof(payload)),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(proto_server_step(p.s, hdr, sizeof(hdr), &used, &act), PROTO_ACT_NEED_INPUT);
	cr_assert_eq(proto_server_step(p.s, payload, sizeof(payload), &used, &act), PROTO_ACT_SEND);
	cr_assert_eq(proto_client_decode_simple(act.send.data, &cookie, &err), 0);
	cr_assert_eq(cookie, 2);
	cr_assert_eq(proto_wire_to_errno(err), EPERM);
	pair_free(&p);
}

/* ---- (b) hostile servers ---- */

Test(proto_client, golden_bytes_and_first_action)
{
	/* 00000003, IHAVEOPT, GO, len 12, name len 4, "disk", 1 request: BLOCK_SIZE */
	static const uint8_t golden[] = {
	    0x00, 0x00, 0x00, 0x03, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50,
	    0x54, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00,
	    0x00, 0x04, 'd',  'i',  's',  'k',  0x00, 0x01, 0x00, 0x03,
	};
	struct proto_client *c;
	struct proto_client_action act;
	struct buf in = {0}, go = {0};
	struct cres r;
	size_t used = SIZE_MAX;
	struct proto_client_export want = {.size_bytes = GIB, .tflags = 0x0d6d};

	cr_assert_eq(proto_client_new("disk", &c), 0);
	cr_assert_eq(proto_client_step(c, NULL, 0, &used, &act), PROTO_CLIENT_NEED_INPUT);
	cr_assert_eq(used, 0);
	proto_client_free(c);

	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, GIB, 0x0d6d);
	ack(&in);
	expect_ready(&in, &want, in.len);
	feed_both("disk", &in, &r);
	cr_assert_eq(r.sent.len, sizeof(golden));
	cr_assert_arr_eq(r.sent.p, golden, sizeof(golden));
	expected_go(&go, "disk", 3);
	cr_assert_arr_eq(r.sent.p, go.p, go.len);
	cres_free(&r);
	buf_free(&in);
	buf_free(&go);
}

Test(proto_client, every_prefix_needs_input)
{
	struct buf in = {0};

	greeting(&in, 3);
	REP_LIT(&in, NBD_REP_INFO,
	        "\x00\x01"
	        "name");
	info_block_size(&in, 512, 4096, MIB);
	s_info_export(&in, NBD_OPT_GO, GIB, 0x0d6d);
	ack(&in);
	for (size_t k = 0; k < in.len; k++) {
		struct cres r;

		feed("disk", in.p, k, (struct split){k % 5, 0}, &r);
		cr_assert_eq(r.type, PROTO_CLIENT_NEED_INPUT, "prefix %zu: %d", k, r.type);
		cr_assert_eq(r.consumed, k);
		cr_assert_eq(r.sent.len, k >= NBD_GREETING_BYTES ? 4 + 16 + 4 + 4 + 4 : 0);
		cres_free(&r);
	}
	buf_free(&in);
}

Test(proto_client, no_zeroes_only_when_offered)
{
	static const uint16_t hflags[] = {1, 3, 0x8001, 0xffff};

	for (size_t i = 0; i < 4; i++) {
		struct buf in = {0}, go = {0};
		struct cres r;

		greeting(&in, hflags[i]);
		feed_both("x", &in, &r);
		cr_assert_eq(r.type, PROTO_CLIENT_NEED_INPUT);
		expected_go(&go, "x", hflags[i]);
		cr_assert_eq(r.sent.len, go.len);
		cr_assert_arr_eq(r.sent.p, go.p, go.len);
		cr_assert_eq(r.sent.p[3], hflags[i] & 2 ? 3 : 1);
		cres_free(&r);
		buf_free(&in);
		buf_free(&go);
	}
}

Test(proto_client, bad_greeting)
{
	struct buf in = {0};
	struct cres r;

	put64(&in, NBD_MAGIC ^ 1);
	put64(&in, NBD_IHAVEOPT);
	put16(&in, 3);
	expect_failed(&in, -EPROTO, NULL, 18);

	/* oldstyle: cliserv_magic instead of IHAVEOPT */
	in.len = 0;
	put64(&in, NBD_MAGIC);
	put64(&in, 0x00420281861253ull);
	put64(&in, GIB);
	put32(&in, 0);
	expect_failed(&in, -EPROTO, NULL, 18);

	in.len = 0;
	greeting(&in, 0);
	expect_failed(&in, -EPROTO, "server does not speak fixed newstyle", 18);
	in.len = 0;
	greeting(&in, NBD_FLAG_NO_ZEROES);
	expect_failed(&in, -EPROTO, "server does not speak fixed newstyle", 18);

	/* nothing was sent to any of them */
	feed_both("disk", &in, &r);
	cr_assert_eq(r.sent.len, 0);
	cres_free(&r);
	buf_free(&in);
}

Test(proto_client, bad_reply_headers)
{
	struct buf in = {0};

	greeting(&in, 3);
	put64(&in, NBD_REP_MAGIC + 1);
	put32(&in, NBD_OPT_GO);
	put32(&in, NBD_REP_ACK);
	put32(&in, 0);
	expect_failed(&in, -EPROTO, "bad option reply magic", 38);

	in.len = 0;
	greeting(&in, 3);
	s_rep(&in, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	expect_failed(&in, -EPROTO, "reply to an option we did not send", 38);

	/* unknown non-error reply type */
	in.len = 0;
	greeting(&in, 3);
	s_rep(&in, NBD_OPT_GO, 5, "abc", 3);
	expect_failed(&in, -EPROTO, NULL, 38);

	/* ACK with data, ACK without INFO_EXPORT */
	in.len = 0;
	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, GIB, 1);
	s_rep(&in, NBD_OPT_GO, NBD_REP_ACK, "x", 1);
	expect_failed(&in, -EPROTO, "NBD_REP_ACK with data", in.len - 1);

	in.len = 0;
	greeting(&in, 3);
	info_block_size(&in, 512, 4096, MIB);
	ack(&in);
	expect_failed(&in, -EPROTO, "NBD_REP_ACK without NBD_INFO_EXPORT", 38 + 34);
	buf_free(&in);
}

/* Lengths over the cap are refused at the header: not one byte of the data is read. */
Test(proto_client, huge_reply_length_not_read)
{
	static const uint32_t lens[] = {0xffffffffu, 0x80000000u, PROTO_MAX_OPTION_BYTES + 1};
	static const uint32_t types[] = {NBD_REP_INFO, NBD_REP_SERVER, NBD_REP_ERR_UNKNOWN};

	for (size_t i = 0; i < 3; i++)
		for (size_t t = 0; t < 3; t++) {
			struct buf in = {0};

			greeting(&in, 3);
			rep_hdr(&in, NBD_OPT_GO, types[t], lens[i]);
			put16(&in, NBD_INFO_EXPORT);
			putstr(&in, "data that must not be read");
			expect_failed(&in, -EPROTO, "option reply too long", 38);
			buf_free(&in);
		}
}

Test(proto_client, bad_info_lengths)
{
	static const uint32_t bad_export[] = {0, 1, 2, 5, 11, 13, 100};
	struct buf in = {0};

	for (size_t i = 0; i < sizeof(bad_export) / sizeof(bad_export[0]); i++) {
		uint32_t len = bad_export[i];

		in.len = 0;
		greeting(&in, 3);
		rep_hdr(&in, NBD_OPT_GO, NBD_REP_INFO, len);
		if (len >= 2)
			put16(&in, NBD_INFO_EXPORT);
		for (uint32_t k = 2; k < len; k++)
			put8(&in, 0);
		s_info_export(&in, NBD_OPT_GO, GIB, 1);
		ack(&in);
		/* Refused as soon as the length is known to be wrong for the type. */
		expect_failed(&in, -EPROTO, NULL, 38 + (len < 2 ? 0 : 2));
	}

	/* INFO_BLOCK_SIZE of 13 and 15 bytes */
	for (uint32_t len = 13; len <= 15; len += 2) {
		in.len = 0;
		greeting(&in, 3);
		rep_hdr(&in, NBD_OPT_GO, NBD_REP_INFO, len);
		put16(&in, NBD_INFO_BLOCK_SIZE);
		for (uint32_t k = 2; k < len; k++)
			put8(&in, 0);
		expect_failed(&in, -EPROTO, "NBD_INFO_BLOCK_SIZE of the wrong length", 40);
	}
	buf_free(&in);
}

Test(proto_client, export_size_limit)
{
	struct buf in = {0};
	struct proto_client_export want = {.size_bytes = INT64_MAX, .tflags = 3};

	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, (uint64_t)INT64_MAX + 1, 3);
	ack(&in);
	expect_failed(&in, -EPROTO, "export size over INT64_MAX", 38 + 12);

	in.len = 0;
	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, UINT64_MAX, 3);
	ack(&in);
	expect_failed(&in, -EPROTO, "export size over INT64_MAX", 38 + 12);

	in.len = 0;
	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, INT64_MAX, 3);
	ack(&in);
	expect_ready(&in, &want, in.len);
	buf_free(&in);
}

/* A 1 MiB unknown INFO, and other replies we do not use, are skipped, not stored. */
Test(proto_client, unknown_replies_skipped)
{
	static const size_t chunks[] = {0, 1, 7, 4096, 65536};
	struct buf in = {0};
	struct proto_client_export want = {.size_bytes = 5 * GIB,
	                                   .tflags = 0x0d6d,
	                                   .min_block = 1,
	                                   .pref_block = 4096,
	                                   .max_block = 0xffffffffu};
	size_t total;

	greeting(&in, 3);
	rep_hdr(&in, NBD_OPT_GO, NBD_REP_INFO, MIB);
	put16(&in, 0x1234);
	for (size_t i = 2; i < MIB; i++)
		put8(&in, (uint8_t)(i * 31));
	REP_LIT(&in, NBD_REP_INFO,
	        "\x00\x01"
	        "some-name");
	REP_LIT(&in, NBD_REP_INFO,
	        "\x00\x02"
	        "a description");
	REP_LIT(&in, NBD_REP_INFO, "\x00\x01"); /* empty NAME */
	REP_LIT(&in, NBD_REP_SERVER,
	        "\x00\x00\x00\x01"
	        "x");
	REP_LIT(&in, NBD_REP_META_CONTEXT,
	        "\x00\x00\x00\x01"
	        "base:allocation");
	rep_hdr(&in, NBD_OPT_GO, NBD_REP_SERVER, 0);
	info_block_size(&in, 1, 4096, 0xffffffffu);
	/* a reply of exactly the cap is still read (and skipped) */
	rep_hdr(&in, NBD_OPT_GO, NBD_REP_INFO, PROTO_MAX_OPTION_BYTES);
	put16(&in, NBD_INFO_DESCRIPTION);
	for (size_t i = 2; i < PROTO_MAX_OPTION_BYTES; i++)
		put8(&in, 'd');
	s_info_export(&in, NBD_OPT_GO, 5 * GIB, 0x0d6d);
	ack(&in);
	total = in.len;
	putstr(&in, "transmission bytes");

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct cres r;

		feed("disk", in.p, in.len, (struct split){chunks[i], 0}, &r);
		cr_assert_eq(r.type, PROTO_CLIENT_READY, "chunk %zu: %d %s", chunks[i], r.type,
		             r.message);
		cr_assert_eq(r.consumed, total);
		cr_assert(same_export(&r.ready, &want));
		cres_free(&r);
	}
	buf_free(&in);
}

/* Bytes after the final ACK belong to transmission: not consumed. */
Test(proto_client, transmission_bytes_not_consumed)
{
	struct buf in = {0};
	struct proto_client_export want = {.size_bytes = 4096, .tflags = 1};
	size_t hs;

	greeting(&in, 3);
	s_info_export(&in, NBD_OPT_GO, 4096, 1);
	ack(&in);
	hs = in.len;
	s_simple(&in, 1, 0);
	s_rep(&in, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
	expect_ready(&in, &want, hs);
	buf_free(&in);
}

Test(proto_client, block_size_validity)
{
	static const struct {
		uint32_t min, pref, max;
		bool valid;
	} cases[] = {
	    {512, 4096, MIB, true},
	    {1, 1, 1, true},
	    {1, 4096, 0xffffffffu, true},
	    {65536, 65536, 65536, true},
	    {4096, 4096, 32 * MIB, true},
	    {0, 4096, MIB, false},
	    {0, 0, 0, false},
	    {3, 4, 8, false},
	    {131072, 131072, MIB, false},
	    {512, 256, MIB, false},
	    {512, 3000, MIB, false},
	    {512, 4096, 2048, false},
	    {512, 4096, 4097, false},
	    {4096, 4096, 0xffffffffu, false},
	    {0x80000000u, 0x80000000u, 0x80000000u, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf in = {0};
		struct proto_client_export want = {.size_bytes = GIB, .tflags = 1};

		if (cases[i].valid) {
			want.min_block = cases[i].min;
			want.pref_block = cases[i].pref;
			want.max_block = cases[i].max;
		}
		greeting(&in, 3);
		info_block_size(&in, cases[i].min, cases[i].pref, cases[i].max);
		s_info_export(&in, NBD_OPT_GO, GIB, 1);
		ack(&in);
		expect_ready(&in, &want, in.len);
		buf_free(&in);
	}
}

/* An invalid BLOCK_SIZE after a valid one is ignored: the valid one stays. */
Test(proto_client, invalid_block_size_ignored)
{
	struct buf in = {0};
	struct proto_client_export want = {
	    .size_bytes = GIB, .tflags = 1, .min_block = 512, .pref_block = 4096, .max_block = MIB};

	greeting(&in, 3);
	info_block_size(&in, 512, 4096, MIB);
	info_block_size(&in, 3, 4, 8);
	s_info_export(&in, NBD_OPT_GO, GIB, 1);
	info_block_size(&in, 0, 0, 0);
	ack(&in);
	expect_ready(&in, &want, in.len);
	buf_free(&in);
}

Test(proto_client, error_replies_mapped)
{
	static const struct {
		uint32_t type;
		int err;
	} cases[] = {
	    {NBD_REP_ERR_UNKNOWN, -ENOENT},
	    {NBD_REP_ERR_POLICY, -EPERM},
	    {NBD_REP_ERR_SHUTDOWN, -ESHUTDOWN},
	    {NBD_REP_ERR_UNSUP, -EOPNOTSUPP},
	    {NBD_REP_ERR_TLS_REQD, -EACCES},
	    {NBD_REP_ERR_INVALID, -EINVAL},
	    {NBD_REP_ERR_PLATFORM, -EINVAL},
	    {NBD_REP_ERR_TOO_BIG, -EINVAL},
	    {NBD_REP_ERR(8), -EINVAL},
	    {NBD_REP_ERR(12345), -EINVAL},
	    {0xffffffffu, -EINVAL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf in = {0};

		/* with a message: that message; without: a description */
		greeting(&in, 3);
		info_block_size(&in, 512, 4096, MIB);
		s_rep_msg(&in, NBD_OPT_GO, cases[i].type, "go away");
		putstr(&in, "after");
		expect_failed(&in, cases[i].err, "go away", in.len - 5);
		in.len = 0;
		greeting(&in, 3);
		s_rep(&in, NBD_OPT_GO, cases[i].type, NULL, 0);
		expect_failed(&in, cases[i].err, NULL, in.len);
		buf_free(&in);
	}
}

Test(proto_client, error_message_sanitised_and_cut)
{
	struct buf in = {0}, msg = {0};
	char want[PROTO_MAX_ECHO + 1];
	size_t n = 0;

	for (unsigned i = 0; i < 300; i++)
		put8(&msg, (uint8_t)(i * 37 + 5)); /* all byte values, printable or not */
	for (size_t i = 0; i < PROTO_MAX_ECHO; i++) {
		uint8_t b = msg.p[i];

		want[n++] = b >= ' ' && b <= '~' ? (char)b : '?';
	}
	want[n] = '\0';
	cr_assert(strchr(want, '?'), "the message has non-printable bytes");

	greeting(&in, 3);
	s_rep(&in, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, msg.p, (uint32_t)msg.len);
	expect_failed(&in, -ENOENT, want, in.len);

	/* A 1 MiB message is read to its end, only PROTO_MAX_ECHO bytes of it kept. */
	in.len = 0;
	greeting(&in, 3);
	rep_hdr(&in, NBD_OPT_GO, NBD_REP_ERR_POLICY, MIB);
	for (size_t i = 0; i < MIB; i++)
		put8(&in, i < PROTO_MAX_ECHO ? (uint8_t)msg.p[i] : '\n');
	expect_failed(&in, -EPERM, want, in.len);
	buf_free(&in);
	buf_free(&msg);
}

Test(proto_client, new_checks_name)
{
	struct proto_client *c = (struct proto_client *)&c;
	char name[PROTO_MAX_STRING + 2];

	cr_assert_eq(proto_client_new(NULL, &c), -EINVAL);
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	cr_assert_eq(proto_client_new(name, &c), -EINVAL);
	cr_assert_eq(c, (struct proto_client *)&c, "out written on failure");
	name[PROTO_MAX_STRING] = '\0';
	cr_assert_eq(proto_client_new(name, &c), 0);
	proto_client_free(c);
	cr_assert_eq(proto_client_new("", &c), 0);
	proto_client_free(c);
	proto_client_free(NULL);
}

/* ---- (c) encoders ---- */

Test(proto_client, encode_request)
{
	static const uint8_t golden[] = {
	    0x25, 0x60, 0x95, 0x13, 0x00, 0x01, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
	    0x07, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00,
	};
	uint8_t out[NBD_REQUEST_BYTES], untouched[NBD_REQUEST_BYTES];

	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA,
	                                         0x0102030405060708ull, 0x100000200ull, 65536),
	             NBD_REQUEST_BYTES);
	cr_assert_arr_eq(out, golden, sizeof(golden));

	memset(out, 0xaa, sizeof(out));
	memcpy(untouched, out, sizeof(out));
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_BLOCK_STATUS + 1, 0, 1, 0, 1),
	             -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_RESIZE, 0, 1, 0, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, 0xffff, 0, 1, 0, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_READ, 1u << 5, 1, 0, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_READ, 0x8000, 1, 0, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_READ, 0, 1, UINT64_MAX, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_WRITE, 0, 1, UINT64_MAX - 511, 1024),
	             -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_FLUSH, 0, 1, UINT64_MAX, 1), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_READ, 0, 1, 0, 0), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_WRITE, 0, 1, 0, 0), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_TRIM, 0, 1, 0, 0), -EINVAL);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_WRITE_ZEROES, 0, 1, 0, 0), -EINVAL);
	cr_assert_arr_eq(out, untouched, sizeof(out), "out written on failure");

	/* the edges that are fine */
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_READ, 0, 1, UINT64_MAX - 1, 1),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_FLUSH, 0, 1, 0, 0),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_DISC, 0, 1, 0, 0), NBD_REQUEST_BYTES);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_CACHE, 0, 1, 0, 0),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(
	    proto_client_encode_request(out, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 1, 0, 1),
	    NBD_REQUEST_BYTES);
	cr_assert_eq(proto_client_encode_request(out, NBD_CMD_WRITE_ZEROES, 0x1f, 1, 0, 1),
	             NBD_REQUEST_BYTES);
	cr_assert_eq(out[5], 0x1f);
	cr_assert_eq(out[7], NBD_CMD_WRITE_ZEROES);
}

Test(proto_client, decode_simple)
{
	uint8_t in[NBD_CHUNK_HEADER_BYTES] = {0x67, 0x44, 0x66, 0x98, 0, 0, 0, 28,
	                                      1,    2,    3,    4,    5, 6, 7, 8};
	uint64_t cookie = 77;
	uint32_t err = 77;

	cr_assert_eq(proto_client_decode_simple(in, &cookie, &err), 0);
	cr_assert_eq(cookie, 0x0102030405060708ull);
	cr_assert_eq(err, NBD_ENOSPC);

	cookie = 77;
	err = 77;
	in[3] = 0x99;
	cr_assert_eq(proto_client_decode_simple(in, &cookie, &err), -EPROTO);
	/* a structured chunk was never asked for */
	proto_encode_done(in, 5);
	cr_assert_eq(proto_client_decode_simple(in, &cookie, &err), -EPROTO);
	cr_assert_eq(cookie, 77);
	cr_assert_eq(err, 77);
}

Test(proto_client, wire_to_errno)
{
	static const struct {
		uint32_t wire;
		int err;
	} cases[] = {
	    {0, 0},       {1, EPERM},         {5, EIO},           {12, ENOMEM},     {22, EINVAL},
	    {28, ENOSPC}, {75, EOVERFLOW},    {95, ENOTSUP},      {108, ESHUTDOWN}, {2, EIO},
	    {13, EIO},    {0xffffffffu, EIO}, {0x80000016u, EIO},
	};
	static const int round_trip[] = {EPERM,  EIO,       ENOMEM,  EINVAL,
	                                 ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(proto_wire_to_errno(cases[i].wire), cases[i].err, "wire %u",
		             cases[i].wire);
	for (size_t i = 0; i < sizeof(round_trip) / sizeof(round_trip[0]); i++)
		cr_assert_eq(proto_wire_to_errno(proto_errno_to_wire(-round_trip[i])),
		             round_trip[i]);
}

/* ---- (d) deterministic mutations ---- */

static bool printable(const char *s)
{
	for (; *s; s++)
		if (*s < ' ' || *s > '~')
			return false;
	return true;
}

static void check_outcome(const struct cres *r, size_t len)
{
	const struct proto_client_export *e = &r->ready;

	cr_assert(r->type == PROTO_CLIENT_READY || r->type == PROTO_CLIENT_FAILED ||
	              r->type == PROTO_CLIENT_NEED_INPUT,
	          "type %d", r->type);
	cr_assert_leq(r->consumed, len);
	if (r->type == PROTO_CLIENT_NEED_INPUT)
		cr_assert_eq(r->consumed, len);
	if (r->type == PROTO_CLIENT_READY) {
		cr_assert_leq(e->size_bytes, (uint64_t)INT64_MAX);
		if (e->min_block || e->pref_block || e->max_block) {
			cr_assert(e->min_block && e->min_block <= 65536 &&
			          !(e->min_block & (e->min_block - 1)));
			cr_assert(e->pref_block >= e->min_block &&
			          !(e->pref_block & (e->pref_block - 1)));
			cr_assert(e->max_block >= e->pref_block &&
			          e->max_block % e->min_block == 0);
		}
	}
	if (r->type == PROTO_CLIENT_FAILED) {
		cr_assert_lt(r->err, 0);
		cr_assert_gt(strlen(r->message), 0);
		cr_assert(printable(r->message), "message '%s'", r->message);
	}
	/* Whatever happens, the client sends nothing but flags + GO, or nothing. */
	cr_assert(r->sent.len == 0 || r->sent.len == 4 + 16 + 4 + 4 + 4, "sent %zu", r->sent.len);
}

static void seed_stream(struct buf *b, unsigned which)
{
	b->len = 0;
	greeting(b, which & 1 ? 1 : 3);
	switch (which % 4) {
	case 0:
		REP_LIT(b, NBD_REP_INFO,
		        "\x00\x01"
		        "disk");
		info_block_size(b, 512, 4096, MIB);
		s_info_export(b, NBD_OPT_GO, GIB, 0x0d6d);
		ack(b);
		break;
	case 1:
		s_info_export(b, NBD_OPT_GO, 4096, 0x040f);
		REP_LIT(b, NBD_REP_META_CONTEXT,
		        "\x00\x00\x00\x01"
		        "x:y");
		info_block_size(b, 1, 1, 1);
		ack(b);
		break;
	case 2:
		REP_LIT(b, NBD_REP_INFO,
		        "\x00\x02"
		        "description\xff\x01");
		s_rep_msg(b, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "export 'disk' not found\n");
		break;
	default:
		REP_LIT(b, NBD_REP_SERVER,
		        "\x00\x00\x00\x04"
		        "disk");
		s_info_export(b, NBD_OPT_GO, (uint64_t)INT64_MAX, 0xffff);
		info_block_size(b, 65536, 65536, 65536);
		ack(b);
		break;
	}
	s_simple(b, 1, 0);
}

static void mutate(struct buf *b, uint64_t *rng)
{
	static const uint32_t edges[] = {0,
	                                 1,
	                                 2,
	                                 3,
	                                 12,
	                                 14,
	                                 20,
	                                 0xffff,
	                                 0x7fffffffu,
	                                 0x80000000u,
	                                 0xffffffffu,
	                                 PROTO_MAX_OPTION_BYTES,
	                                 PROTO_MAX_OPTION_BYTES + 1};
	unsigned n = 1 + next_rand(rng) % 4;

	for (unsigned k = 0; k < n && b->len; k++) {
		size_t pos = next_rand(rng) % b->len;

		switch (next_rand(rng) % 6) {
		case 0:
			b->p[pos] = (uint8_t)next_rand(rng);
			break;
		case 1:
			b->p[pos] ^= (uint8_t)(1u << next_rand(rng) % 8);
			break;
		case 2: {
			uint32_t v = edges[next_rand(rng) % (sizeof(edges) / sizeof(edges[0]))];

			for (size_t i = 0; i < 4 && pos + i < b->len; i++)
				b->p[pos + i] = (uint8_t)(v >> (24 - 8 * i));
			break;
		}
		case 3:
			b->len = pos; /* truncate */
			break;
		case 4: { /* delete a run */
			size_t del = 1 + next_rand(rng) % 24;

			if (del > b->len - pos)
				del = b->len - pos;
			memmove(b->p + pos, b->p + pos + del, b->len - pos - del);
			b->len -= del;
			break;
		}
		default: { /* duplicate a run, bounded */
			size_t dup = 1 + next_rand(rng) % 40;

			if (dup > b->len - pos)
				dup = b->len - pos;
			if (b->len + dup <= 1024) {
				uint8_t tmp[64];

				memcpy(tmp, b->p + pos, dup);
				putn(b, tmp, dup); /* grow, then shift the tail */
				memmove(b->p + pos + dup, b->p + pos, b->len - dup - pos);
				memcpy(b->p + pos, tmp, dup);
			}
			break;
		}
		}
	}
}

Test(proto_client, mutation_loop)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	struct buf b = {0};
	unsigned counts[4] = {0};

	for (unsigned iter = 0; iter < 20000; iter++) {
		struct cres whole, split;

		seed_stream(&b, iter);
		mutate(&b, &rng);
		feed("disk", b.p, b.len, (struct split){0, 0}, &whole);
		check_outcome(&whole, b.len);
		feed("disk", b.p, b.len, (struct split){0, next_rand(&rng) | 1}, &split);
		check_outcome(&split, b.len);
		same_cres(&whole, &split);
		counts[whole.type]++;
		cres_free(&whole);
		cres_free(&split);
	}
	/* The loop reaches every ending, so it tests something. */
	cr_assert_gt(counts[PROTO_CLIENT_READY], 100);
	cr_assert_gt(counts[PROTO_CLIENT_FAILED], 100);
	cr_assert_gt(counts[PROTO_CLIENT_NEED_INPUT], 100);
	buf_free(&b);
}
