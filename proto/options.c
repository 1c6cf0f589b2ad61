/* SPDX-License-Identifier: MIT */
/*
 * options.c - handshake options: parsing their data and answering them.
 *
 * Option data is parsed as it arrives, field by field (enum opt_field),
 * never buffered whole: integers collect in s->acc, strings of up to
 * PROTO_MAX_STRING bytes in s->name / s->query, everything else is counted
 * and dropped.  Every inner length is checked against what is left of the
 * option before anything is read (NBD protocol, 'Option types': a name
 * length MUST be no larger than the option data length - 6, a query
 * running past the option is NBD_REP_ERR_INVALID; CVE-2022-26496), and a
 * bad option is consumed to its end before its error reply, so the session
 * stays in sync.  The reply is decided when the last byte is in.
 *
 * State carried between options: structured replies, and the meta context
 * selected by the last SET_META_CONTEXT with the export name it was for.
 * GO/EXPORT_NAME only grant BLOCK_STATUS when that name matches; a SET
 * clears the old selection first, even when it fails; INFO and a failing GO
 * change nothing (CVE-2019-14851: any option order must be safe).
 */
#include <stdio.h>

#include "internal.h"

static const char base_allocation[] = "base:allocation";

static void reply(struct proto_server *s, uint32_t type, const void *data, uint32_t len)
{
	uint8_t *p = out_reserve(s, NBD_OPT_REPLY_BYTES + len);

	put_be64(p, NBD_REP_MAGIC);
	put_be32(p + 8, s->opt);
	put_be32(p + 12, type);
	put_be32(p + 16, len);
	if (len)
		memcpy(p + NBD_OPT_REPLY_BYTES, data, len);
}

static void reply_err(struct proto_server *s, uint32_t type, const char *msg)
{
	size_t len = msg ? strnlen(msg, PROTO_MAX_ERROR_MSG) : 0;

	reply(s, type, msg, (uint32_t)len);
}

/* Ends the option being parsed with error TYPE; the rest of its data is skipped. */
static void fail(struct proto_server *s, uint32_t type, const char *msg)
{
	if (!s->opt_err) {
		s->opt_err = type;
		s->opt_msg = msg;
	}
	s->field = F_SKIP;
}

static void expect_int(struct proto_server *s, enum opt_field field, size_t bytes)
{
	s->field = field;
	s->acc_len = 0;
	s->acc_need = bytes;
}

static void field_done(struct proto_server *s);

static void expect_string(struct proto_server *s, enum opt_field field, uint32_t len)
{
	s->field = field;
	s->str_need = len;
	s->str_len = 0;
	s->str_too_long = false;
	if (len == 0)
		field_done(s);
}

static bool is_meta(const struct proto_server *s)
{
	return s->opt == NBD_OPT_LIST_META_CONTEXT || s->opt == NBD_OPT_SET_META_CONTEXT;
}

static void query_done(struct proto_server *s)
{
	size_t n = s->str_len;

	if (n == sizeof(base_allocation) - 1 && !memcmp(s->query, base_allocation, n))
		s->ctx_match = true;
	/* "base:" alone lists the whole namespace; SET ignores it. */
	if (s->opt == NBD_OPT_LIST_META_CONTEXT && n == 5 && !memcmp(s->query, "base:", 5))
		s->ctx_match = true;
	/* Anything else names a context we do not have: ignored, not an error. */
}

static void field_done(struct proto_server *s)
{
	uint32_t v = s->acc_need == 2 ? get_be16(s->acc) : get_be32(s->acc);

	switch (s->field) {
	case F_WHOLE_NAME:
		s->name_len = s->str_len;
		s->name[s->name_len] = '\0';
		if (memchr(s->name, '\0', s->name_len)) {
			fail(s, NBD_REP_ERR_INVALID, "export name contains a NUL byte");
			return;
		}
		s->field = F_END;
		break;
	case F_NAME_LEN:
		/* INFO/GO need 2 more bytes after the name, META 4. */
		if (v > s->opt_left || s->opt_left - v < (is_meta(s) ? 4u : 2u)) {
			fail(s, NBD_REP_ERR_INVALID, "export name length runs past the option");
			return;
		}
		if (v > PROTO_MAX_STRING) {
			fail(s, NBD_REP_ERR_INVALID, "export name longer than 4096 bytes");
			return;
		}
		expect_string(s, F_NAME, v);
		break;
	case F_NAME:
		s->name_len = s->str_len;
		s->name[s->name_len] = '\0';
		if (memchr(s->name, '\0', s->name_len)) {
			fail(s, NBD_REP_ERR_INVALID, "export name contains a NUL byte");
			return;
		}
		if (is_meta(s))
			expect_int(s, F_NQUERIES, 4);
		else
			expect_int(s, F_NINFO, 2);
		break;
	case F_NINFO:
		if ((uint64_t)v * 2 != s->opt_left) {
			fail(s, NBD_REP_ERR_INVALID,
			     "information request count does not match the option length");
			return;
		}
		s->count_left = v;
		if (v == 0)
			s->field = F_END;
		else
			expect_int(s, F_INFO, 2);
		break;
	case F_INFO:
		/* Duplicates are harmless, unknown codes are ignored. */
		if (v < 32)
			s->info_mask |= 1u << v;
		if (--s->count_left == 0)
			s->field = F_END;
		else
			expect_int(s, F_INFO, 2);
		break;
	case F_NQUERIES:
		if (v > PROTO_MAX_META_QUERIES) {
			fail(s, NBD_REP_ERR_TOO_BIG, "too many meta context queries");
			return;
		}
		if ((uint64_t)v * 4 > s->opt_left) {
			fail(s, NBD_REP_ERR_INVALID, "meta context queries run past the option");
			return;
		}
		s->count_left = v;
		if (v == 0) {
			/* LIST with no query lists everything; SET selects nothing. */
			if (s->opt == NBD_OPT_LIST_META_CONTEXT)
				s->ctx_match = true;
			s->field = F_END;
		} else {
			expect_int(s, F_QUERY_LEN, 4);
		}
		break;
	case F_QUERY_LEN:
		if (v > s->opt_left) {
			fail(s, NBD_REP_ERR_INVALID, "meta context query runs past the option");
			return;
		}
		if (v > PROTO_MAX_STRING) {
			fail(s, NBD_REP_ERR_INVALID, "meta context query longer than 4096 bytes");
			return;
		}
		expect_string(s, F_QUERY, v);
		break;
	case F_QUERY:
		query_done(s);
		if (--s->count_left == 0)
			s->field = F_END;
		else
			expect_int(s, F_QUERY_LEN, 4);
		break;
	default:
		break;
	}
}

/* Message naming a client string, cut to PROTO_MAX_ECHO bytes (CVE-2020-10761). */
static const char *echo_msg(char *buf, size_t size, const char *fmt_head, const char *name,
                            size_t len, const char *tail)
{
	int n = len > PROTO_MAX_ECHO ? (int)PROTO_MAX_ECHO : (int)len;

	snprintf(buf, size, "%s'%.*s%s'%s", fmt_head, n, name, len > PROTO_MAX_ECHO ? "..." : "",
	         tail);
	return buf;
}

static bool block_sizes_valid(const struct proto_export *e)
{
	uint32_t min = e->min_block, pref = e->pref_block, max = e->max_block;

	if (!min && !pref && !max)
		return true;
	if (!min || min > 65536 || (min & (min - 1)))
		return false;
	if (pref < min || (pref & (pref - 1)))
		return false;
	return max >= pref && max % min == 0;
}

static uint32_t lookup_error(int r, uint32_t other)
{
	if (r == -ENOENT)
		return NBD_REP_ERR_UNKNOWN;
	if (r == -EPERM || r == -EACCES)
		return NBD_REP_ERR_POLICY;
	if (r == -ESHUTDOWN)
		return NBD_REP_ERR_SHUTDOWN;
	return other;
}

/*
 * Judges what the lookup of s->name said: 0 with *e filled, or an
 * NBD_REP_ERR_* with its message in buf.
 */
static uint32_t judge_lookup(struct proto_server *s, int r, const struct proto_export *found,
                             struct proto_export *e, char *buf, size_t size)
{
	if (r < 0) {
		echo_msg(buf, size, "export ", s->name, s->name_len,
		         r == -ENOENT ? " not found" : " not available");
		return lookup_error(r, NBD_REP_ERR_UNKNOWN);
	}
	/* Never advertise a size above INT64_MAX (CVE-2023-5215). */
	if (found->size_bytes > INT64_MAX || !block_sizes_valid(found)) {
		echo_msg(buf, size, "export ", s->name, s->name_len, " is misconfigured");
		return NBD_REP_ERR_PLATFORM;
	}
	*e = *found;
	return 0;
}

static void enter_transmission(struct proto_server *s, const struct proto_export *e,
                               bool block_sizes_sent)
{
	struct proto_action act = {.type = PROTO_ACT_EXPORT};

	memcpy(s->export_name, s->name, s->name_len + 1);
	s->export_name_len = s->name_len;
	s->export = *e;
	s->export.description = NULL;
	s->block_sizes_sent = block_sizes_sent;
	s->block_status_ok = s->structured && s->meta_selected && s->meta_name_len == s->name_len &&
	                     !memcmp(s->meta_name, s->name, s->name_len);
	s->state = ST_REQ_HDR;

	act.export.name = s->export_name;
	act.export.name_len = s->export_name_len;
	act.export.info = s->export;
	act.export.tflags = proto_tflags(e, s->structured);
	act.export.structured = s->structured;
	act.export.block_status = s->block_status_ok;
	act.export.context_id = PROTO_CONTEXT_BASE_ALLOCATION;
	set_pending(s, &act);
}

static void info_item(struct proto_server *s, uint16_t type, const void *data, size_t len)
{
	uint8_t *p = out_reserve(s, NBD_OPT_REPLY_BYTES + 2 + len);

	put_be64(p, NBD_REP_MAGIC);
	put_be32(p + 8, s->opt);
	put_be32(p + 12, NBD_REP_INFO);
	put_be32(p + 16, (uint32_t)(2 + len));
	put_be16(p + 20, type);
	if (len)
		memcpy(p + 22, data, len);
}

/* INFO and GO, once the lookup has answered r (and *found when r is 0). */
static void answer_info(struct proto_server *s, int r, const struct proto_export *found)
{
	bool go = s->opt == NBD_OPT_GO;
	struct proto_export e;
	char msg[160];
	uint8_t buf[12];
	uint32_t err = judge_lookup(s, r, found, &e, msg, sizeof(msg));
	bool send_bs;

	if (err) {
		reply_err(s, err, msg);
		return;
	}
	put_be64(buf, e.size_bytes);
	put_be16(buf + 8, proto_tflags(&e, s->structured));
	info_item(s, NBD_INFO_EXPORT, buf, 10);
	if (s->info_mask & (1u << NBD_INFO_NAME))
		info_item(s, NBD_INFO_NAME, s->name, s->name_len);
	if ((s->info_mask & (1u << NBD_INFO_DESCRIPTION)) && e.description)
		info_item(s, NBD_INFO_DESCRIPTION, e.description,
		          strnlen(e.description, PROTO_MAX_STRING));
	send_bs = (s->info_mask & (1u << NBD_INFO_BLOCK_SIZE)) && e.min_block;
	if (send_bs) {
		put_be32(buf, e.min_block);
		put_be32(buf + 4, e.pref_block);
		put_be32(buf + 8,
		         e.max_block < PROTO_MAX_PAYLOAD ? e.max_block : PROTO_MAX_PAYLOAD);
		info_item(s, NBD_INFO_BLOCK_SIZE, buf, 12);
	}
	reply(s, NBD_REP_ACK, NULL, 0);
	if (go)
		enter_transmission(s, &e, send_bs);
}

/* EXPORT_NAME, once the lookup has answered. */
static void answer_export_name(struct proto_server *s, int r, const struct proto_export *found)
{
	struct proto_export e;
	char msg[160];
	uint8_t *p;

	/* EXPORT_NAME has no error reply: a failure can only disconnect. */
	if (judge_lookup(s, r, found, &e, msg, sizeof(msg))) {
		disconnect(s, PROTO_DISC_EXPORT_NAME);
		return;
	}
	p = out_reserve(s, s->no_zeroes ? 10 : 134);
	put_be64(p, e.size_bytes);
	put_be16(p + 8, proto_tflags(&e, s->structured));
	if (!s->no_zeroes)
		memset(p + 10, 0, 124);
	enter_transmission(s, &e, false);
}

static void answer_lookup(struct proto_server *s, int r, const struct proto_export *found)
{
	if (s->opt == NBD_OPT_EXPORT_NAME)
		answer_export_name(s, r, found);
	else
		answer_info(s, r, found);
}

/*
 * INFO, GO and EXPORT_NAME ask the lookup callback about s->name; one that
 * answers -EINPROGRESS is waited for (ST_LOOKUP) until the caller hands
 * the answer to proto_server_lookup_done().
 */
static void start_lookup(struct proto_server *s)
{
	struct proto_export found = {0};
	int r = s->cfg.lookup(s->cfg.opaque, s->name, s->name_len, &found);

	if (r == -EINPROGRESS) {
		s->state = ST_LOOKUP;
		return;
	}
	answer_lookup(s, r, &found);
}

int proto_server_lookup_done(struct proto_server *s, int rc, const struct proto_export *found)
{
	struct proto_export none = {0};

	if (s->state != ST_LOOKUP || rc == -EINPROGRESS || (rc == 0 && !found))
		return -EINVAL;
	s->state = ST_OPT_HDR;
	answer_lookup(s, rc, rc == 0 ? found : &none);
	return 0;
}

static void do_meta(struct proto_server *s)
{
	bool set = s->opt == NBD_OPT_SET_META_CONTEXT;
	uint8_t buf[4 + sizeof(base_allocation) - 1];

	if (set && s->ctx_match) {
		s->meta_selected = true;
		memcpy(s->meta_name, s->name, s->name_len + 1);
		s->meta_name_len = s->name_len;
	}
	if (s->ctx_match) {
		/* LIST answers carry id 0 (reserved); SET gives the real id. */
		put_be32(buf, set ? PROTO_CONTEXT_BASE_ALLOCATION : 0);
		memcpy(buf + 4, base_allocation, sizeof(base_allocation) - 1);
		reply(s, NBD_REP_META_CONTEXT, buf, sizeof(buf));
	}
	reply(s, NBD_REP_ACK, NULL, 0);
}

static void option_finish(struct proto_server *s)
{
	s->state = ST_OPT_HDR;
	if (!s->opt_err && s->field != F_END && s->field != F_SKIP)
		fail(s, NBD_REP_ERR_INVALID, "option data ends early");
	if (s->opt_err && s->opt == NBD_OPT_EXPORT_NAME) {
		disconnect(s, PROTO_DISC_EXPORT_NAME);
		return;
	}
	if (s->opt_err) {
		reply_err(s, s->opt_err, s->opt_msg);
		return;
	}
	switch (s->opt) {
	case NBD_OPT_EXPORT_NAME:
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		start_lookup(s);
		return;
	case NBD_OPT_ABORT:
		reply(s, NBD_REP_ACK, NULL, 0);
		disconnect(s, PROTO_DISC_CLIENT);
		return;
	case NBD_OPT_LIST:
		s->state = ST_LISTING;
		s->list_index = 0;
		return;
	case NBD_OPT_STARTTLS:
		reply_err(s, NBD_REP_ERR_POLICY, "TLS is not configured on this server");
		return;
	case NBD_OPT_STRUCTURED_REPLY:
		s->structured = true;
		reply(s, NBD_REP_ACK, NULL, 0);
		return;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		do_meta(s);
		return;
	case NBD_OPT_EXTENDED_HEADERS:
		reply_err(s, NBD_REP_ERR_UNSUP, "extended headers are not supported");
		return;
	default:
		reply_err(s, NBD_REP_ERR_UNSUP, "unknown option");
		return;
	}
}

void option_start(struct proto_server *s, uint32_t opt, uint32_t len)
{
	s->opt = opt;
	s->opt_left = len;
	s->opt_err = 0;
	s->opt_msg = NULL;
	s->info_mask = 0;
	s->ctx_match = false;
	s->name_len = 0;
	s->name[0] = '\0';
	s->state = ST_OPT_BODY;

	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		if (len > PROTO_MAX_STRING) {
			disconnect(s, PROTO_DISC_EXPORT_NAME);
			return;
		}
		expect_string(s, F_WHOLE_NAME, len);
		break;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		expect_int(s, F_NAME_LEN, 4);
		break;
	case NBD_OPT_SET_META_CONTEXT:
	case NBD_OPT_LIST_META_CONTEXT:
		/* A SET replaces the selection even when it fails. */
		if (opt == NBD_OPT_SET_META_CONTEXT)
			s->meta_selected = false;
		if (!s->structured)
			fail(s, NBD_REP_ERR_INVALID, "structured replies not negotiated");
		else
			expect_int(s, F_NAME_LEN, 4);
		break;
	case NBD_OPT_ABORT:
		s->field = F_SKIP; /* any data is ignored */
		break;
	case NBD_OPT_LIST:
	case NBD_OPT_STARTTLS:
	case NBD_OPT_STRUCTURED_REPLY:
	case NBD_OPT_EXTENDED_HEADERS:
		if (len)
			fail(s, NBD_REP_ERR_INVALID, "option takes no data");
		else
			s->field = F_END;
		break;
	default:
		fail(s, NBD_REP_ERR_UNSUP, "unknown option");
		break;
	}
	if (s->opt_left == 0)
		option_finish(s);
}

static bool is_string_field(enum opt_field f)
{
	return f == F_WHOLE_NAME || f == F_NAME || f == F_QUERY;
}

static bool is_int_field(enum opt_field f)
{
	return f == F_NAME_LEN || f == F_NINFO || f == F_INFO || f == F_NQUERIES ||
	       f == F_QUERY_LEN;
}

size_t option_feed(struct proto_server *s, const uint8_t *in, size_t len)
{
	size_t used = 0;

	while (used < len && s->opt_left) {
		size_t n = len - used;

		if (n > s->opt_left)
			n = s->opt_left;
		switch (s->field) {
		case F_SKIP:
			break;
		case F_END:
			fail(s, NBD_REP_ERR_INVALID, "trailing data after the option");
			continue;
		case F_WHOLE_NAME:
		case F_NAME:
		case F_QUERY: {
			char *dst = s->field == F_QUERY ? s->query : s->name;
			size_t room = PROTO_MAX_STRING - s->str_len;

			if (n > s->str_need)
				n = s->str_need;
			memcpy(dst + s->str_len, in + used, n < room ? n : room);
			s->str_len += n < room ? n : room;
			s->str_need -= (uint32_t)n;
			break;
		}
		default:
			if (n > s->acc_need - s->acc_len)
				n = s->acc_need - s->acc_len;
			memcpy(s->acc + s->acc_len, in + used, n);
			s->acc_len += n;
			break;
		}
		used += n;
		s->opt_left -= (uint32_t)n;
		if (is_string_field(s->field) ? s->str_need == 0
		                              : is_int_field(s->field) && s->acc_len == s->acc_need)
			field_done(s);
	}
	if (s->opt_left == 0)
		option_finish(s);
	return used;
}

void option_list_next(struct proto_server *s)
{
	const char *name = NULL, *desc = NULL;
	size_t nlen, dlen;
	uint8_t *p;
	int r = 0;

	if (s->cfg.list && s->list_index < PROTO_MAX_LIST_EXPORTS)
		r = s->cfg.list(s->cfg.opaque, s->list_index++, &name, &desc);
	if (r <= 0 || !name) {
		s->state = ST_OPT_HDR;
		if (r < 0) {
			reply_err(s, lookup_error(r, NBD_REP_ERR_PLATFORM), "cannot list exports");
			return;
		}
		reply(s, NBD_REP_ACK, NULL, 0);
		return;
	}
	nlen = strnlen(name, PROTO_MAX_STRING + 1);
	if (nlen > PROTO_MAX_STRING)
		return; /* not a valid NBD string: left out */
	dlen = desc ? strnlen(desc, PROTO_MAX_STRING) : 0;
	p = out_reserve(s, NBD_OPT_REPLY_BYTES + 4 + nlen + dlen);
	put_be64(p, NBD_REP_MAGIC);
	put_be32(p + 8, s->opt);
	put_be32(p + 12, NBD_REP_SERVER);
	put_be32(p + 16, (uint32_t)(4 + nlen + dlen));
	put_be32(p + 20, (uint32_t)nlen);
	memcpy(p + 24, name, nlen);
	if (dlen)
		memcpy(p + 24 + nlen, desc, dlen);
}
