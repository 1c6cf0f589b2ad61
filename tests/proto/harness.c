/* SPDX-License-Identifier: MIT */
/* harness.c - see harness.h. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void putn(struct buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		cr_assert_not_null(b->p);
	}
	if (len)
		memcpy(b->p + b->len, data, len);
	b->len += len;
}

void put8(struct buf *b, uint8_t v)
{
	putn(b, &v, 1);
}

void put16(struct buf *b, uint16_t v)
{
	put8(b, (uint8_t)(v >> 8));
	put8(b, (uint8_t)v);
}

void put32(struct buf *b, uint32_t v)
{
	put16(b, (uint16_t)(v >> 16));
	put16(b, (uint16_t)v);
}

void put64(struct buf *b, uint64_t v)
{
	put32(b, (uint32_t)(v >> 32));
	put32(b, (uint32_t)v);
}

void putstr(struct buf *b, const char *s)
{
	putn(b, s, strlen(s));
}

void c_flags(struct buf *b, uint32_t flags)
{
	put32(b, flags);
}

void c_opt(struct buf *b, uint32_t opt, const void *data, uint32_t len)
{
	put64(b, NBD_IHAVEOPT);
	put32(b, opt);
	put32(b, len);
	putn(b, data, len);
}

void c_info(struct buf *b, uint32_t opt, const char *name, unsigned n_info, const uint16_t *info)
{
	uint32_t nlen = (uint32_t)strlen(name);

	put64(b, NBD_IHAVEOPT);
	put32(b, opt);
	put32(b, 4 + nlen + 2 + 2 * n_info);
	put32(b, nlen);
	putstr(b, name);
	put16(b, (uint16_t)n_info);
	for (unsigned i = 0; i < n_info; i++)
		put16(b, info[i]);
}

void c_meta(struct buf *b, uint32_t opt, const char *name, unsigned n_q, const char *const *q)
{
	uint32_t len = 4 + (uint32_t)strlen(name) + 4;

	for (unsigned i = 0; i < n_q; i++)
		len += 4 + (uint32_t)strlen(q[i]);
	put64(b, NBD_IHAVEOPT);
	put32(b, opt);
	put32(b, len);
	put32(b, (uint32_t)strlen(name));
	putstr(b, name);
	put32(b, n_q);
	for (unsigned i = 0; i < n_q; i++) {
		put32(b, (uint32_t)strlen(q[i]));
		putstr(b, q[i]);
	}
}

void c_req(struct buf *b, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
           uint32_t length)
{
	put32(b, NBD_REQUEST_MAGIC);
	put16(b, flags);
	put16(b, type);
	put64(b, cookie);
	put64(b, offset);
	put32(b, length);
}

void c_go_session(struct buf *b, bool sr, const char *name)
{
	c_flags(b, 3);
	if (sr)
		c_opt(b, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	c_info(b, NBD_OPT_GO, name, 0, NULL);
}

void s_greeting(struct buf *b)
{
	put64(b, NBD_MAGIC);
	put64(b, NBD_IHAVEOPT);
	put16(b, 3);
}

void s_rep(struct buf *b, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, opt);
	put32(b, type);
	put32(b, len);
	putn(b, data, len);
}

void s_rep_msg(struct buf *b, uint32_t opt, uint32_t type, const char *msg)
{
	s_rep(b, opt, type, msg, (uint32_t)strlen(msg));
}

void s_info_export(struct buf *b, uint32_t opt, uint64_t size, uint16_t tflags)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, opt);
	put32(b, NBD_REP_INFO);
	put32(b, 12);
	put16(b, NBD_INFO_EXPORT);
	put64(b, size);
	put16(b, tflags);
}

void s_simple(struct buf *b, uint64_t cookie, uint32_t err)
{
	put32(b, NBD_SIMPLE_MAGIC);
	put32(b, err);
	put64(b, cookie);
}

void s_err_chunk(struct buf *b, uint64_t cookie, uint32_t err, const char *msg)
{
	put32(b, NBD_CHUNK_MAGIC);
	put16(b, NBD_REPLY_FLAG_DONE);
	put16(b, NBD_REPLY_TYPE_ERROR);
	put64(b, cookie);
	put32(b, 6 + (uint32_t)strlen(msg));
	put32(b, err);
	put16(b, (uint16_t)strlen(msg));
	putstr(b, msg);
}

void s_done(struct buf *b, uint64_t cookie)
{
	put32(b, NBD_CHUNK_MAGIC);
	put16(b, NBD_REPLY_FLAG_DONE);
	put16(b, NBD_REPLY_TYPE_NONE);
	put64(b, cookie);
	put32(b, 0);
}

void s_go_session(struct buf *b, bool sr, uint64_t size, uint16_t tflags)
{
	s_greeting(b);
	if (sr)
		s_rep(b, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
	s_info_export(b, NBD_OPT_GO, size, tflags);
	s_rep(b, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
}

void result_free(struct result *r)
{
	buf_free(&r->out);
	buf_free(&r->events);
	buf_free(&r->data);
}

static void event(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void event(struct result *r, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	putstr(&r->events, line);
}

/* Lookups that answer later: the name asked for, answered at the WAIT action. */
static char waiting_name[PROTO_MAX_STRING + 1];
static bool waiting;

static int later_lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out)
{
	(void)opaque;
	(void)out;
	cr_assert(!waiting, "a second lookup while one waits");
	cr_assert_leq(name_len, PROTO_MAX_STRING);
	memcpy(waiting_name, name, name_len + 1);
	waiting = true;
	return -EINPROGRESS;
}

void drive(const uint8_t *in, size_t len, size_t chunk, struct result *r)
{
	drive_lookups(in, len, chunk, false, r);
}

void drive_lookups(const uint8_t *in, size_t len, size_t chunk, bool later, struct result *r)
{
	struct proto_server_config cfg = {.lookup = later ? later_lookup : test_lookup,
	                                  .list = test_list};
	struct proto_server *s;
	size_t pos = 0, end, payload_off = 0;

	memset(r, 0, sizeof(*r));
	waiting = false;
	cr_assert_eq(proto_server_new(&cfg, &s), 0);
	cr_assert_eq(proto_server_lookup_done(s, 0, &(struct proto_export){.size_bytes = 1}),
	             -EINVAL, "an answer nobody waits for is refused");
	end = chunk ? (chunk < len ? chunk : len) : len;
	for (unsigned guard = 0; guard < 100000000u; guard++) {
		struct proto_action act;
		size_t used = 0;

		proto_server_step(s, in + pos, end - pos, &used, &act);
		cr_assert_leq(used, end - pos);
		pos += used;
		switch (act.type) {
		case PROTO_ACT_NEED_INPUT:
			cr_assert_eq(pos, end);
			if (pos == len)
				goto out;
			end = chunk && len - pos > chunk ? pos + chunk : len;
			break;
		case PROTO_ACT_SEND:
			cr_assert_gt(act.send.len, 0);
			putn(&r->out, act.send.data, act.send.len);
			break;
		case PROTO_ACT_EXPORT:
			event(r, "EXPORT '%.*s' size=%llu tflags=%04x sr=%d bs=%d\n",
			      (int)(act.export.name_len > 20 ? 20 : act.export.name_len),
			      act.export.name, (unsigned long long)act.export.info.size_bytes,
			      act.export.tflags, act.export.structured, act.export.block_status);
			break;
		case PROTO_ACT_REQUEST:
			payload_off = 0;
			event(r, "REQ type=%u flags=%x cookie=%llx off=%llx len=%u\n",
			      act.request.type, act.request.flags,
			      (unsigned long long)act.request.cookie,
			      (unsigned long long)act.request.offset, act.request.length);
			break;
		case PROTO_ACT_WRITE_DATA:
			cr_assert_eq(act.write_data.offset, payload_off);
			payload_off += act.write_data.len;
			putn(&r->data, act.write_data.data, act.write_data.len);
			if (act.write_data.last)
				event(r, "DATA done at %u\n",
				      act.write_data.offset + (unsigned)act.write_data.len);
			break;
		case PROTO_ACT_WAIT: {
			struct proto_export e;
			int rc;

			cr_assert(waiting, "WAIT without a lookup in progress");
			/* It keeps waiting, consuming nothing, until the answer comes. */
			cr_assert_eq(proto_server_step(s, in + pos, end - pos, &used, &act),
			             PROTO_ACT_WAIT);
			cr_assert_eq(used, 0);
			waiting = false;
			rc = test_lookup(NULL, waiting_name, strlen(waiting_name), &e);
			cr_assert_eq(proto_server_lookup_done(s, -EINPROGRESS, &e), -EINVAL);
			cr_assert_eq(proto_server_lookup_done(s, rc, &e), 0);
			break;
		}
		case PROTO_ACT_DISCONNECT:
			r->disconnected = true;
			r->reason = act.disconnect.reason;
			event(r, "DISCONNECT %d\n", act.disconnect.reason);
			/* it stays disconnected */
			cr_assert_eq(proto_server_step(s, in + pos, len - pos, &used, &act),
			             PROTO_ACT_DISCONNECT);
			cr_assert_eq(used, 0);
			goto out;
		}
	}
	cr_assert_fail("machine did not finish");
out:
	r->consumed = pos;
	proto_server_free(s);
}

static void same(const struct buf *a, const struct buf *b, const char *what)
{
	cr_assert_eq(a->len, b->len, "%s: %zu vs %zu bytes", what, a->len, b->len);
	cr_assert(a->len == 0 || !memcmp(a->p, b->p, a->len), "%s differ", what);
}

void run_both(const struct buf *in, struct result *r)
{
	static const char *const ways[] = {"byte by byte", "whole, lookups answered later",
	                                   "byte by byte, lookups answered later"};
	char what[128];

	drive(in->p, in->len, 0, r);
	for (int i = 0; i < 3; i++) {
		struct result other;

		drive_lookups(in->p, in->len, i == 1 ? 0 : 1, i > 0, &other);
		snprintf(what, sizeof(what), "bytes sent (whole vs %s)", ways[i]);
		same(&r->out, &other.out, what);
		snprintf(what, sizeof(what), "events (whole vs %s)", ways[i]);
		same(&r->events, &other.events, what);
		snprintf(what, sizeof(what), "payload (whole vs %s)", ways[i]);
		same(&r->data, &other.data, what);
		cr_assert_eq(r->disconnected, other.disconnected, "%s", ways[i]);
		cr_assert_eq(r->consumed, other.consumed, "%s", ways[i]);
		result_free(&other);
	}
}

void expect_out(const struct result *r, const struct buf *exp)
{
	size_t n = r->out.len < exp->len ? r->out.len : exp->len, i = 0;

	while (i < n && r->out.p[i] == exp->p[i])
		i++;
	if (i == n && r->out.len == exp->len)
		return;
	fprintf(stderr, "output differs at byte %zu (got %zu bytes, want %zu)\n got:", i,
	        r->out.len, exp->len);
	for (size_t j = i; j < r->out.len && j < i + 32; j++)
		fprintf(stderr, " %02x", r->out.p[j]);
	fprintf(stderr, "\nwant:");
	for (size_t j = i; j < exp->len && j < i + 32; j++)
		fprintf(stderr, " %02x", exp->p[j]);
	fprintf(stderr, "\n");
	cr_assert_fail("output bytes differ at %zu", i);
}

void expect_events(const struct result *r, const char *exp)
{
	size_t n = strlen(exp);

	cr_assert(r->events.len == n && !memcmp(r->events.p, exp, n), "events:\n%.*s\nwant:\n%s",
	          (int)r->events.len, r->events.len ? (const char *)r->events.p : "", exp);
}

/*
 * Exports: "" and "disk" 1 GiB writable multi-conn (like nbdkit memory 1G);
 * "ro" and "disk@snap" 1 MiB read-only; "bs" 4 MiB with block sizes
 * 512/4096/1 MiB and a description; "big" 8 GiB writable; "bad" too large.
 */
int test_lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out)
{
	(void)opaque;
	cr_assert_eq(strlen(name), name_len);
	memset(out, 0, sizeof(*out));
	if (!strcmp(name, "") || !strcmp(name, "disk")) {
		out->size_bytes = GIB;
		out->multi_conn = true;
	} else if (!strcmp(name, "ro") || !strcmp(name, "disk@snap")) {
		out->size_bytes = 1 << 20;
		out->read_only = true;
	} else if (!strcmp(name, "bs")) {
		out->size_bytes = 4 << 20;
		out->min_block = 512;
		out->pref_block = 4096;
		out->max_block = 1 << 20;
		out->description = "aligned disk";
	} else if (!strcmp(name, "big")) {
		out->size_bytes = 8 * GIB;
	} else if (!strcmp(name, "bad")) {
		out->size_bytes = UINT64_MAX;
	} else if (!strcmp(name, "private")) {
		return -EACCES;
	} else {
		return -ENOENT;
	}
	return 0;
}

int test_list_mode;

int test_list(void *opaque, size_t index, const char **name, const char **description)
{
	static const char *const names[] = {"disk", "ro"};
	static const char *const descs[] = {"main disk", NULL};
	static char long_name[PROTO_MAX_STRING + 2];

	(void)opaque;
	if (test_list_mode == 1 && index == 1)
		return -ESHUTDOWN;
	if (test_list_mode == 2) {
		*name = "e";
		*description = NULL;
		return 1;
	}
	if (test_list_mode == 3 && index == 0) {
		memset(long_name, 'n', PROTO_MAX_STRING + 1);
		*name = long_name;
		*description = NULL;
		return 1;
	}
	if (index >= 2)
		return 0;
	*name = names[index];
	*description = descs[index];
	return 1;
}
