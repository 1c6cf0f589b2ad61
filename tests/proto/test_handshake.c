/* SPDX-License-Identifier: MIT */
/*
 * Handshake tests of the NBD protocol machine: an exchange nbdkit was seen to
 * make, byte for byte, every option, and the malformed handshakes a server
 * must survive: a client that vanishes after any byte, unknown client flags
 * and a bad option magic, unknown options with data, huge option lengths,
 * export names of 0, 4096, 4097 and 0xffffffff bytes or longer than their
 * option, odd info request lists, data on options that take none,
 * meta-context queries before structured replies, past the option end, with
 * unknown namespaces, and options in odd orders and repeated.  Every stream
 * is fed whole and one byte at a time (run_both).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const uint16_t want_bs[] = {NBD_INFO_BLOCK_SIZE};

/*
 * The exchange of the NBD protocol's 'Fixed newstyle negotiation' as nbdkit
 * (memory plugin, 1 GiB) answers it: the client asks for structured replies
 * and GO, reads 16 bytes at 0 and disconnects.
 */
Test(proto_handshake, golden_nbdkit_trace)
{
	static const uint8_t client[] = {
	    0x00, 0x00, 0x00, 0x03, /* cflags */
	    0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0x00, 0x00, 0x00, 0x08,
	    0x00, 0x00, 0x00, 0x00, /* SR */
	    0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0x00, 0x00, 0x00, 0x07,
	    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, /* GO */
	    0x25, 0x60, 0x95, 0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	    0x00, 0xab, 0xcd, 0xef, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	    0x00, 0x00, 0x00, 0x10, /* READ */
	    0x25, 0x60, 0x95, 0x13, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
	    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	    0x00, 0x00, 0x00, 0x00, /* DISC */
	};
	static const uint8_t server[] = {
	    0x4e, 0x42, 0x44, 0x4d, 0x41, 0x47, 0x49, 0x43, 0x49, 0x48, 0x41,
	    0x56, 0x45, 0x4f, 0x50, 0x54, 0x00, 0x03, /* greeting */
	    0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0x00, 0x00, 0x00,
	    0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* SR ACK */
	    0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0x00, 0x00, 0x00,
	    0x07, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00,
	    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x0d, 0xed, /* INFO_EXPORT */
	    0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0x00, 0x00, 0x00,
	    0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* ACK */
	};
	static const uint8_t read_reply[] = {
	    0x66, 0x8e, 0x33, 0xef, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xab,
	    0xcd, 0xef, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	struct buf in = {0}, exp = {0};
	struct result r;
	uint8_t hdr[28];

	putn(&in, client, sizeof(client));
	putn(&exp, server, sizeof(server));
	run_both(&in, &r);
	expect_out(&r, &exp);
	expect_events(&r, "EXPORT '' size=1073741824 tflags=0ded sr=1 bs=0\n"
	                  "REQ type=0 flags=0 cookie=abcdef off=0 len=16\n"
	                  "DISCONNECT 0\n");
	cr_assert_eq(r.reason, PROTO_DISC_CLIENT);
	cr_assert_eq(proto_encode_offset_data(hdr, 0xabcdef, true, 0, 16), 28);
	cr_assert_arr_eq(hdr, read_reply, 28);
	result_free(&r);
	buf_free(&in);
	buf_free(&exp);
}

/* The client vanishes after any byte: nothing but prefixes of the good answer. */
Test(proto_handshake, disconnect_at_every_byte)
{
	struct buf in = {0}, exp = {0};
	struct result full;
	static const char *const q[] = {"base:allocation"};

	c_flags(&in, 3);
	c_opt(&in, 99, "abcd", 4);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_opt(&in, NBD_OPT_LIST, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, q);
	c_info(&in, NBD_OPT_INFO, "bs", 1, want_bs);
	c_info(&in, NBD_OPT_GO, "disk", 1, want_bs);
	c_req(&in, 0, NBD_CMD_WRITE, 1, 0, 4);
	putstr(&in, "data");
	drive(in.p, in.len, 0, &full);
	cr_assert_not(full.disconnected);
	for (size_t k = 0; k < in.len; k++) {
		struct result r;

		drive(in.p, k, k % 3 + 1, &r);
		cr_assert_not(r.disconnected, "prefix %zu", k);
		cr_assert_leq(r.out.len, full.out.len);
		cr_assert(!memcmp(r.out.p, full.out.p, r.out.len), "prefix %zu", k);
		result_free(&r);
	}
	result_free(&full);
	buf_free(&in);
	buf_free(&exp);
}

static void expect_disconnect(struct buf *in, enum proto_disconnect_reason why,
                              const struct buf *exp)
{
	struct result r;

	run_both(in, &r);
	cr_assert(r.disconnected);
	cr_assert_eq(r.reason, why);
	expect_out(&r, exp);
	result_free(&r);
}

/* Unknown client flags, and a bad IHAVEOPT magic, drop the connection. */
Test(proto_handshake, bad_client_flags_and_magic)
{
	struct buf in = {0}, exp = {0};

	s_greeting(&exp);
	c_flags(&in, 0x80 | 3);
	expect_disconnect(&in, PROTO_DISC_BAD_FLAGS, &exp);
	in.len = 0;
	c_flags(&in, 4);
	expect_disconnect(&in, PROTO_DISC_BAD_FLAGS, &exp);
	in.len = 0;
	c_flags(&in, 3);
	put64(&in, 0x49484156454f5055ull);
	put32(&in, NBD_OPT_GO);
	put32(&in, 0);
	expect_disconnect(&in, PROTO_DISC_BAD_MAGIC, &exp);
	buf_free(&in);
	buf_free(&exp);
}

/* An unknown option with data gets ERR_UNSUP and the session goes on. */
Test(proto_handshake, unknown_option_consumed)
{
	struct buf in = {0}, exp = {0};
	struct result r;

	c_flags(&in, 3);
	c_opt(&in, 99, "0123456789", 10);
	c_opt(&in, NBD_OPT_PEEK_EXPORT, NULL, 0);
	c_opt(&in, 0x7654321, "abcd", 4);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	s_greeting(&exp);
	s_rep_msg(&exp, 99, NBD_REP_ERR_UNSUP, "unknown option");
	s_rep_msg(&exp, NBD_OPT_PEEK_EXPORT, NBD_REP_ERR_UNSUP, "unknown option");
	s_rep_msg(&exp, 0x7654321, NBD_REP_ERR_UNSUP, "unknown option");
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	run_both(&in, &r);
	cr_assert_not(r.disconnected);
	expect_out(&r, &exp);
	result_free(&r);
	buf_free(&in);
	buf_free(&exp);
}

/* Huge option lengths disconnect at the header, without reading the data. */
Test(proto_handshake, huge_option_length)
{
	static const uint32_t lens[] = {0x7fffffff, 0xffffffff, PROTO_MAX_OPTION_BYTES + 1};
	static const uint32_t opts[] = {99, NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT, NBD_OPT_LIST};

	for (size_t o = 0; o < 4; o++)
		for (size_t i = 0; i < 3; i++) {
			struct buf in = {0}, exp = {0};
			struct result r;

			c_flags(&in, 3);
			put64(&in, NBD_IHAVEOPT);
			put32(&in, opts[o]);
			put32(&in, lens[i]);
			putstr(&in, "more bytes that must not be read");
			s_greeting(&exp);
			run_both(&in, &r);
			cr_assert(r.disconnected);
			cr_assert_eq(r.reason, PROTO_DISC_TOO_BIG);
			cr_assert_eq(r.consumed, 20);
			expect_out(&r, &exp);
			result_free(&r);
			buf_free(&in);
			buf_free(&exp);
		}
}

/* INFO/GO with a raw body; returns the reply bytes after the greeting. */
static void info_raw(uint32_t opt, const struct buf *body, struct result *r)
{
	struct buf in = {0};

	c_flags(&in, 3);
	c_opt(&in, opt, body->p, (uint32_t)body->len);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0); /* proves the session is in sync */
	run_both(&in, r);
	buf_free(&in);
}

static void expect_info_error(const struct buf *body, uint32_t err, const char *msg)
{
	for (uint32_t opt = NBD_OPT_INFO; opt <= NBD_OPT_GO; opt++) {
		struct buf exp = {0};
		struct result r;

		info_raw(opt, body, &r);
		s_greeting(&exp);
		s_rep_msg(&exp, opt, err, msg);
		s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
		cr_assert_not(r.disconnected);
		expect_out(&r, &exp);
		result_free(&r);
		buf_free(&exp);
	}
}

/*
 * INFO/GO name lengths: 0, 4096, 4097, 0xffffffff, past the option, options
 * too short; a NUL inside; unknown, forbidden and misconfigured exports.
 */
Test(proto_handshake, info_go_name_lengths)
{
	struct buf body = {0}, exp = {0};
	char *name = malloc(4098), msg[200];
	struct result r;

	memset(name, 'x', 4097);
	name[4097] = '\0';

	/* 0xffffffff and > option_len - 6 */
	put32(&body, 0xffffffff);
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_INVALID, "export name length runs past the option");
	body.len = 0;
	put32(&body, 3);
	putstr(&body, "abc"); /* no room for the u16 count */
	expect_info_error(&body, NBD_REP_ERR_INVALID, "export name length runs past the option");
	/* 4097 bytes, consistent lengths */
	body.len = 0;
	put32(&body, 4097);
	putstr(&body, name);
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_INVALID, "export name longer than 4096 bytes");
	/* 4096 bytes: looked up, not found, echoed at most 80 bytes */
	body.len = 0;
	put32(&body, 4096);
	putn(&body, name, 4096);
	put16(&body, 0);
	snprintf(msg, sizeof(msg), "export '%.80s...' not found", name);
	expect_info_error(&body, NBD_REP_ERR_UNKNOWN, msg);
	/* 2-byte option */
	body.len = 0;
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_INVALID, "option data ends early");
	/* empty option */
	body.len = 0;
	expect_info_error(&body, NBD_REP_ERR_INVALID, "option data ends early");
	/* NUL inside the name */
	body.len = 0;
	put32(&body, 3);
	putn(&body, "a\0b", 3);
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_INVALID, "export name contains a NUL byte");
	/* unknown, forbidden and misconfigured exports */
	body.len = 0;
	put32(&body, 4);
	putstr(&body, "nope");
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_UNKNOWN, "export 'nope' not found");
	body.len = 0;
	put32(&body, 7);
	putstr(&body, "private");
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_POLICY, "export 'private' not available");
	body.len = 0;
	put32(&body, 3);
	putstr(&body, "bad");
	put16(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_PLATFORM, "export 'bad' is misconfigured");

	/* name_len 0: the default export */
	body.len = 0;
	put32(&body, 0);
	put16(&body, 0);
	info_raw(NBD_OPT_INFO, &body, &r);
	s_greeting(&exp);
	s_info_export(&exp, NBD_OPT_INFO, GIB, TF_RW_MC);
	s_rep(&exp, NBD_OPT_INFO, NBD_REP_ACK, NULL, 0);
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	expect_out(&r, &exp);
	result_free(&r);
	free(name);
	buf_free(&body);
	buf_free(&exp);
}

/* The same name lengths for EXPORT_NAME: failures can only disconnect. */
Test(proto_handshake, export_name)
{
	struct buf in = {0}, exp = {0};
	char *name = malloc(4097);
	struct result r;

	memset(name, 'y', 4097);
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_EXPORT_NAME, name, 4097);
	s_greeting(&exp);
	expect_disconnect(&in, PROTO_DISC_EXPORT_NAME, &exp);
	in.len = 0;
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_EXPORT_NAME, name, 4096);
	expect_disconnect(&in, PROTO_DISC_EXPORT_NAME, &exp);
	in.len = 0;
	c_flags(&in, 3);
	put64(&in, NBD_IHAVEOPT);
	put32(&in, NBD_OPT_EXPORT_NAME);
	put32(&in, 0xffffffff); /* beyond the option cap: dropped at the header */
	expect_disconnect(&in, PROTO_DISC_TOO_BIG, &exp);

	/* with zeroes (cflags without NO_ZEROES, not even fixed newstyle) */
	in.len = 0;
	c_flags(&in, 0);
	c_opt(&in, NBD_OPT_EXPORT_NAME, "ro", 2);
	c_req(&in, 0, NBD_CMD_READ, 7, 0, 512);
	put64(&exp, 1 << 20);
	put16(&exp, 0x040f);
	for (int i = 0; i < 124; i++)
		put8(&exp, 0);
	run_both(&in, &r);
	expect_out(&r, &exp);
	expect_events(&r, "EXPORT 'ro' size=1048576 tflags=040f sr=0 bs=0\n"
	                  "REQ type=0 flags=0 cookie=7 off=0 len=512\n");
	result_free(&r);

	/* NO_ZEROES: just size and flags; the snapshot name is the callback's business */
	in.len = 0;
	exp.len = 0;
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_EXPORT_NAME, "disk@snap", 9);
	s_greeting(&exp);
	put64(&exp, 1 << 20);
	put16(&exp, 0x040f);
	run_both(&in, &r);
	expect_out(&r, &exp);
	result_free(&r);

	/* without fixed newstyle only EXPORT_NAME is legal */
	in.len = 0;
	exp.len = 0;
	c_flags(&in, 0);
	c_opt(&in, NBD_OPT_LIST, NULL, 0);
	s_greeting(&exp);
	expect_disconnect(&in, PROTO_DISC_NOT_FIXED, &exp);
	free(name);
	buf_free(&in);
	buf_free(&exp);
}

/* Info request lists: duplicates, unknown codes, an odd byte count, a count past the data. */
Test(proto_handshake, info_requests)
{
	struct buf in = {0}, exp = {0}, body = {0};
	static const uint16_t all[] = {
	    NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME,   77,    NBD_INFO_DESCRIPTION,
	    NBD_INFO_NAME,       NBD_INFO_EXPORT, 0xffff};
	struct result r;
	uint8_t bs[14] = {0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0x10, 0, 0};

	c_flags(&in, 3);
	c_info(&in, NBD_OPT_INFO, "bs", 7, all);
	s_greeting(&exp);
	s_info_export(&exp, NBD_OPT_INFO, 4 << 20, 0x0c6d);
	put64(&exp, NBD_REP_MAGIC);
	put32(&exp, NBD_OPT_INFO);
	put32(&exp, NBD_REP_INFO);
	put32(&exp, 4);
	put16(&exp, NBD_INFO_NAME);
	putstr(&exp, "bs");
	put64(&exp, NBD_REP_MAGIC);
	put32(&exp, NBD_OPT_INFO);
	put32(&exp, NBD_REP_INFO);
	put32(&exp, 14);
	put16(&exp, NBD_INFO_DESCRIPTION);
	putstr(&exp, "aligned disk");
	s_rep(&exp, NBD_OPT_INFO, NBD_REP_INFO, bs, 14);
	s_rep(&exp, NBD_OPT_INFO, NBD_REP_ACK, NULL, 0);
	run_both(&in, &r);
	expect_out(&r, &exp);
	result_free(&r);

	/* odd byte count of the request list */
	put32(&body, 2);
	putstr(&body, "bs");
	put16(&body, 1);
	put16(&body, NBD_INFO_NAME);
	put8(&body, 0);
	expect_info_error(&body, NBD_REP_ERR_INVALID,
	                  "information request count does not match the option length");
	/* count larger than the data */
	body.len = 0;
	put32(&body, 2);
	putstr(&body, "bs");
	put16(&body, 3);
	put16(&body, NBD_INFO_NAME);
	expect_info_error(&body, NBD_REP_ERR_INVALID,
	                  "information request count does not match the option length");
	buf_free(&in);
	buf_free(&exp);
	buf_free(&body);
}

/* Options that take no data, sent with data, and their normal answers. */
Test(proto_handshake, dataless_options)
{
	static const uint32_t opts[] = {NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
	                                NBD_OPT_EXTENDED_HEADERS};
	struct buf in = {0}, exp = {0}, srv = {0};
	struct result r;

	c_flags(&in, 3);
	s_greeting(&exp);
	for (size_t i = 0; i < 4; i++) {
		c_opt(&in, opts[i], "x", 1);
		s_rep_msg(&exp, opts[i], NBD_REP_ERR_INVALID, "option takes no data");
	}
	c_opt(&in, NBD_OPT_LIST, NULL, 0);
	put32(&srv, 4);
	putstr(&srv, "disk");
	putstr(&srv, "main disk");
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_SERVER, srv.p, (uint32_t)srv.len);
	srv.len = 0;
	put32(&srv, 2);
	putstr(&srv, "ro");
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_SERVER, srv.p, (uint32_t)srv.len);
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
	c_opt(&in, NBD_OPT_STARTTLS, NULL, 0);
	s_rep_msg(&exp, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
	          "TLS is not configured on this server");
	c_opt(&in, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	s_rep_msg(&exp, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_UNSUP,
	          "extended headers are not supported");
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0); /* repeated SR: harmless */
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	/* ABORT with data: ACK, then disconnect; later bytes are not read */
	c_opt(&in, NBD_OPT_ABORT, "zz", 2);
	s_rep(&exp, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
	size_t before = in.len;
	c_opt(&in, NBD_OPT_LIST, NULL, 0);
	run_both(&in, &r);
	expect_out(&r, &exp);
	cr_assert(r.disconnected);
	cr_assert_eq(r.reason, PROTO_DISC_CLIENT);
	cr_assert_eq(r.consumed, before);
	result_free(&r);
	buf_free(&in);
	buf_free(&exp);
	buf_free(&srv);
}

static void meta_reply(struct buf *exp, uint32_t opt, uint32_t id)
{
	struct buf d = {0};

	put32(&d, id);
	putstr(&d, "base:allocation");
	s_rep(exp, opt, NBD_REP_META_CONTEXT, d.p, (uint32_t)d.len);
	buf_free(&d);
}

/*
 * Meta-context queries: before structured replies, 0 queries, base: alone,
 * unknown namespaces, lengths and counts running past the option, trailing
 * data, a 4097-byte query, 1000 and 5000 queries.
 */
Test(proto_handshake, meta_context)
{
	static const char *const ba[] = {"base:allocation"};
	static const char *const base[] = {"base:"};
	static const char *const unknown[] = {"x-foo:bar", "qemu:dirty-bitmap:b"};
	struct buf in = {0}, exp = {0}, body = {0};
	struct result r;

	c_flags(&in, 3);
	s_greeting(&exp);
	/* before SR */
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, ba);
	s_rep_msg(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "structured replies not negotiated");
	c_meta(&in, NBD_OPT_LIST_META_CONTEXT, "disk", 0, NULL);
	s_rep_msg(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "structured replies not negotiated");
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	/* LIST with 0 queries, with base:, with unknown */
	c_meta(&in, NBD_OPT_LIST_META_CONTEXT, "disk", 0, NULL);
	meta_reply(&exp, NBD_OPT_LIST_META_CONTEXT, 0);
	s_rep(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	c_meta(&in, NBD_OPT_LIST_META_CONTEXT, "disk", 1, base);
	meta_reply(&exp, NBD_OPT_LIST_META_CONTEXT, 0);
	s_rep(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	c_meta(&in, NBD_OPT_LIST_META_CONTEXT, "disk", 2, unknown);
	s_rep(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	/* SET: base: alone and unknown namespaces select nothing; 0 queries too */
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, base);
	s_rep(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 2, unknown);
	s_rep(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 0, NULL);
	s_rep(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	/* query running past the option */
	put32(&body, 4);
	putstr(&body, "disk");
	put32(&body, 1);
	put32(&body, 100);
	putstr(&body, "base:allocation");
	c_opt(&in, NBD_OPT_SET_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "meta context query runs past the option");
	/* query count running past the option */
	body.len = 0;
	put32(&body, 4);
	putstr(&body, "disk");
	put32(&body, 10);
	put32(&body, 15);
	putstr(&body, "base:allocation");
	c_opt(&in, NBD_OPT_LIST_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "meta context queries run past the option");
	/* name running past */
	body.len = 0;
	put32(&body, 50);
	putstr(&body, "disk");
	c_opt(&in, NBD_OPT_LIST_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "export name length runs past the option");
	/* trailing data after the last query */
	body.len = 0;
	put32(&body, 0);
	put32(&body, 0);
	put8(&body, 1);
	c_opt(&in, NBD_OPT_LIST_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "trailing data after the option");
	/* a 4097-byte query */
	body.len = 0;
	put32(&body, 0);
	put32(&body, 1);
	put32(&body, 4097);
	for (int i = 0; i < 4097; i++)
		put8(&body, 'q');
	c_opt(&in, NBD_OPT_LIST_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID,
	          "meta context query longer than 4096 bytes");
	/* 1000 queries (all base:allocation): one context, once */
	body.len = 0;
	put32(&body, 4);
	putstr(&body, "disk");
	put32(&body, 1000);
	for (int i = 0; i < 1000; i++) {
		put32(&body, 15);
		putstr(&body, "base:allocation");
	}
	c_opt(&in, NBD_OPT_SET_META_CONTEXT, body.p, (uint32_t)body.len);
	meta_reply(&exp, NBD_OPT_SET_META_CONTEXT, PROTO_CONTEXT_BASE_ALLOCATION);
	s_rep(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	/* 5000 queries: too many, consumed */
	body.len = 0;
	put32(&body, 4);
	putstr(&body, "disk");
	put32(&body, 5000);
	for (int i = 0; i < 5000; i++) {
		put32(&body, 5);
		putstr(&body, "base:");
	}
	c_opt(&in, NBD_OPT_SET_META_CONTEXT, body.p, (uint32_t)body.len);
	s_rep_msg(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_TOO_BIG,
	          "too many meta context queries");
	/* the failed SET dropped the selection: BLOCK_STATUS is refused on disk */
	c_info(&in, NBD_OPT_GO, "disk", 0, NULL);
	s_info_export(&exp, NBD_OPT_GO, GIB, TF_RW_MC_SR);
	s_rep(&exp, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
	c_req(&in, 0, NBD_CMD_BLOCK_STATUS, 5, 0, 4096);
	s_err_chunk(&exp, 5, NBD_EINVAL, "no metadata context selected for this export");
	run_both(&in, &r);
	cr_assert_not(r.disconnected);
	expect_out(&r, &exp);
	result_free(&r);
	buf_free(&in);
	buf_free(&exp);
	buf_free(&body);
}

/*
 * Option orders: SET, INFO and a failing GO before GO on another export;
 * INFO on one export, then GO on another; SET twice.
 */
Test(proto_handshake, option_orders)
{
	static const char *const ba[] = {"base:allocation"};
	struct buf in = {0}, exp = {0};
	struct result r;

	/* SET(disk), INFO(ro), GO failing, GO(ro): BLOCK_STATUS refused on ro */
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, ba);
	c_info(&in, NBD_OPT_INFO, "ro", 0, NULL);
	c_info(&in, NBD_OPT_GO, "missing", 0, NULL);
	c_info(&in, NBD_OPT_GO, "ro", 0, NULL);
	c_req(&in, 0, NBD_CMD_BLOCK_STATUS, 1, 0, 512);
	s_greeting(&exp);
	s_rep(&exp, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	meta_reply(&exp, NBD_OPT_SET_META_CONTEXT, PROTO_CONTEXT_BASE_ALLOCATION);
	s_rep(&exp, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
	s_info_export(&exp, NBD_OPT_INFO, 1 << 20, 0x048f);
	s_rep(&exp, NBD_OPT_INFO, NBD_REP_ACK, NULL, 0);
	s_rep_msg(&exp, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "export 'missing' not found");
	s_info_export(&exp, NBD_OPT_GO, 1 << 20, 0x048f);
	s_rep(&exp, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
	s_err_chunk(&exp, 1, NBD_EINVAL, "no metadata context selected for this export");
	run_both(&in, &r);
	expect_out(&r, &exp);
	expect_events(&r, "EXPORT 'ro' size=1048576 tflags=048f sr=1 bs=0\n");
	result_free(&r);

	/* INFO(ro) then GO(disk) with SET(disk): BLOCK_STATUS allowed */
	in.len = exp.len = 0;
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, ba);
	c_info(&in, NBD_OPT_INFO, "ro", 0, NULL);
	c_info(&in, NBD_OPT_GO, "disk", 0, NULL);
	c_req(&in, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 2, GIB - 512, 512);
	run_both(&in, &r);
	expect_events(&r, "EXPORT 'disk' size=1073741824 tflags=0ded sr=1 bs=1\n"
	                  "REQ type=7 flags=8 cookie=2 off=3ffffe00 len=512\n");
	result_free(&r);

	/* SET(disk) then SET(ro): the second replaces the first */
	in.len = 0;
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, ba);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "ro", 1, ba);
	c_info(&in, NBD_OPT_GO, "disk", 0, NULL);
	run_both(&in, &r);
	expect_events(&r, "EXPORT 'disk' size=1073741824 tflags=0ded sr=1 bs=0\n");
	result_free(&r);
	buf_free(&in);
	buf_free(&exp);
}

/* LIST: callback failure, names too long for NBD, a callback that never ends. */
Test(proto_handshake, list_callback_limits)
{
	struct buf in = {0}, exp = {0}, srv = {0};
	struct result r;

	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_LIST, NULL, 0);

	test_list_mode = 1;
	s_greeting(&exp);
	put32(&srv, 4);
	putstr(&srv, "disk");
	putstr(&srv, "main disk");
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_SERVER, srv.p, (uint32_t)srv.len);
	s_rep_msg(&exp, NBD_OPT_LIST, NBD_REP_ERR_SHUTDOWN, "cannot list exports");
	run_both(&in, &r);
	expect_out(&r, &exp);
	result_free(&r);

	test_list_mode = 3; /* the 4097-byte name is left out, "ro" stays */
	exp.len = srv.len = 0;
	s_greeting(&exp);
	put32(&srv, 2);
	putstr(&srv, "ro");
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_SERVER, srv.p, (uint32_t)srv.len);
	s_rep(&exp, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
	run_both(&in, &r);
	expect_out(&r, &exp);
	result_free(&r);

	test_list_mode = 2;
	drive(in.p, in.len, 0, &r);
	cr_assert_eq(r.out.len, NBD_GREETING_BYTES + PROTO_MAX_LIST_EXPORTS * (20 + 4 + 1) + 20);
	cr_assert_not(r.disconnected);
	result_free(&r);
	test_list_mode = 0;
	buf_free(&in);
	buf_free(&exp);
	buf_free(&srv);
}

/* EXPORT_NAME honours the meta context selected for its name. */
Test(proto_handshake, export_name_with_meta_context)
{
	static const char *const ba[] = {"base:allocation"};
	struct buf in = {0};
	struct result r;

	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_meta(&in, NBD_OPT_SET_META_CONTEXT, "disk", 1, ba);
	c_opt(&in, NBD_OPT_EXPORT_NAME, "disk", 4);
	c_req(&in, 0, NBD_CMD_BLOCK_STATUS, 1, 0, 512);
	run_both(&in, &r);
	expect_events(&r, "EXPORT 'disk' size=1073741824 tflags=0ded sr=1 bs=1\n"
	                  "REQ type=7 flags=0 cookie=1 off=0 len=512\n");
	result_free(&r);
	buf_free(&in);
}

/* What proto_server_lookup_starts_transmission() said at each lookup, in order. */
static struct proto_server *probe_server;
static char probe_seen[8];
static size_t probe_n;

static int probe_lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out)
{
	(void)opaque;
	if (probe_n < sizeof(probe_seen))
		probe_seen[probe_n++] =
		    proto_server_lookup_starts_transmission(probe_server) ? 'T' : 'i';
	return test_lookup(NULL, name, name_len, out);
}

static void probe_session(const struct buf *in, const char *want)
{
	struct proto_server_config cfg = {.lookup = probe_lookup};
	struct proto_action act;
	size_t pos = 0, used;

	probe_n = 0;
	cr_assert_eq(proto_server_new(&cfg, &probe_server), 0);
	while (proto_server_step(probe_server, in->p + pos, in->len - pos, &used, &act) !=
	       PROTO_ACT_NEED_INPUT) {
		pos += used;
		if (act.type == PROTO_ACT_DISCONNECT)
			break;
	}
	cr_assert_eq(probe_n, strlen(want));
	cr_assert(!memcmp(probe_seen, want, probe_n), "lookups %.*s, want %s", (int)probe_n,
	          probe_seen, want);
	proto_server_free(probe_server);
}

/* The lookup knows whether transmission follows: INFO informs, GO and EXPORT_NAME start it. */
Test(proto_handshake, lookup_knows_whether_transmission_follows)
{
	struct buf in = {0};

	c_flags(&in, 3);
	c_info(&in, NBD_OPT_INFO, "disk", 0, NULL);
	c_info(&in, NBD_OPT_GO, "nope", 0, NULL);
	c_info(&in, NBD_OPT_INFO, "ro", 0, NULL);
	c_info(&in, NBD_OPT_GO, "disk", 0, NULL);
	probe_session(&in, "iTiT");
	buf_free(&in);
	c_flags(&in, 3);
	c_opt(&in, NBD_OPT_EXPORT_NAME, "disk", 4);
	probe_session(&in, "T");
	buf_free(&in);
}
