/* SPDX-License-Identifier: MIT */
/*
 * transmission.c - requests: parsing the 28-byte header, validating it in
 * exactly one place (validate_request), and skipping or passing on WRITE
 * payloads.
 *
 * Policy (NBD protocol, 'Request types', 'Command flags', 'Block size
 * constraints' and 'Error values'; where they leave a choice, as qemu-nbd
 * answers):
 * a bad magic (also the extended-header magic, never negotiated here) or a
 * WRITE payload over PROTO_MAX_PAYLOAD drops the connection; everything
 * else gets an error reply and the session goes on: unknown command or
 * flag, DF without structured replies, BLOCK_STATUS without a selected
 * context, beyond the end or misaligned -> EINVAL, except writes beyond
 * the end -> ENOSPC and writes to a read-only export -> EPERM.  FLUSH
 * ignores its offset and length.  Zero-length requests succeed without
 * reaching the caller (BLOCK_STATUS, which cannot describe nothing, gets
 * EINVAL).  The payload of a refused WRITE is consumed before its reply.
 */
#include "internal.h"

/* validate_request() result meaning "answer success, nothing to do". */
#define REQ_NOOP UINT32_MAX

static bool is_write(uint16_t type)
{
	return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
}

static uint16_t allowed_flags(const struct proto_server *s, uint16_t type)
{
	uint16_t ok = NBD_CMD_FLAG_FUA; /* advertised always; accepted on any command */

	switch (type) {
	case NBD_CMD_READ:
		if (s->structured)
			ok |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE_ZEROES:
		ok |= NBD_CMD_FLAG_NO_HOLE;
		if (proto_tflags(&s->export, s->structured) & NBD_TFLAG_SEND_FAST_ZERO)
			ok |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_BLOCK_STATUS:
		ok |= NBD_CMD_FLAG_REQ_ONE;
		break;
	default:
		break;
	}
	return ok;
}

/* Returns 0 (valid), REQ_NOOP, or an NBD error with *msg set. */
static uint32_t validate_request(const struct proto_server *s, const struct proto_request *r,
                                 const char **msg)
{
	const struct proto_export *e = &s->export;
	uint32_t min = s->block_sizes_sent ? e->min_block : 1;
	uint64_t end;

	switch (r->type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
	case NBD_CMD_CACHE:
	case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_BLOCK_STATUS:
		break;
	default:
		*msg = "unknown command";
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed_flags(s, r->type)) {
		*msg = (r->flags & NBD_CMD_FLAG_DF) && !s->structured
		           ? "DF flag needs structured replies"
		           : "unknown or inapplicable command flag";
		return NBD_EINVAL;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS && !s->block_status_ok) {
		*msg = "no metadata context selected for this export";
		return NBD_EINVAL;
	}
	if (is_write(r->type) && e->read_only) {
		*msg = "export is read-only";
		return NBD_EPERM;
	}
	if (r->type == NBD_CMD_FLUSH)
		return 0;
	if (__builtin_add_overflow(r->offset, (uint64_t)r->length, &end) || end > e->size_bytes) {
		*msg = "request beyond the end of the export";
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
		                                                                   : NBD_EINVAL;
	}
	if (r->length == 0) {
		if (r->type == NBD_CMD_BLOCK_STATUS) {
			*msg = "zero-length block status";
			return NBD_EINVAL;
		}
		return REQ_NOOP;
	}
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
	    (r->length > PROTO_MAX_PAYLOAD || (s->block_sizes_sent && r->length > e->max_block))) {
		*msg = "request larger than the maximum payload";
		return NBD_EINVAL;
	}
	if (min > 1 && (r->offset % min || r->length % min)) {
		*msg = "request not aligned to the minimum block size";
		return NBD_EINVAL;
	}
	return 0;
}

static void reply_error(struct proto_server *s, const struct proto_request *r, uint32_t err,
                        const char *msg)
{
	if (s->structured) {
		int n = proto_encode_error(s->out + s->out_len, sizeof(s->out) - s->out_len,
		                           r->cookie, true, err, msg);

		out_reserve(s, n > 0 ? (size_t)n : sizeof(s->out) + 1);
	} else {
		proto_encode_simple(out_reserve(s, NBD_SIMPLE_REPLY_BYTES), r->cookie, err);
	}
}

static void reply_noop(struct proto_server *s, const struct proto_request *r)
{
	/* After SR a READ must get a structured reply; others may be simple. */
	if (s->structured && r->type == NBD_CMD_READ)
		proto_encode_done(out_reserve(s, NBD_CHUNK_HEADER_BYTES), r->cookie);
	else
		proto_encode_simple(out_reserve(s, NBD_SIMPLE_REPLY_BYTES), r->cookie, 0);
}

void request_header(struct proto_server *s)
{
	struct proto_request *r = &s->req;
	struct proto_action act = {.type = PROTO_ACT_REQUEST};
	const char *msg = NULL;
	uint32_t err;

	if (get_be32(s->hdr) != NBD_REQUEST_MAGIC) {
		disconnect(s, PROTO_DISC_BAD_MAGIC);
		return;
	}
	r->flags = get_be16(s->hdr + 4);
	r->type = get_be16(s->hdr + 6);
	r->cookie = get_be64(s->hdr + 8);
	r->offset = get_be64(s->hdr + 16);
	r->length = get_be32(s->hdr + 24);

	if (r->type == NBD_CMD_DISC) {
		disconnect(s, PROTO_DISC_CLIENT);
		return;
	}
	/* Never size anything from an unchecked length: a huge payload ends the session. */
	if (r->type == NBD_CMD_WRITE && r->length > PROTO_MAX_PAYLOAD) {
		disconnect(s, PROTO_DISC_TOO_BIG);
		return;
	}

	err = validate_request(s, r, &msg);
	if (r->type == NBD_CMD_WRITE && r->length) {
		s->state = ST_REQ_DATA;
		s->data_left = r->length;
		s->data_done = 0;
		s->data_forward = err == 0;
		s->data_err = err == REQ_NOOP ? 0 : err;
		s->data_msg = msg;
	}
	if (err == 0) {
		act.request = *r;
		set_pending(s, &act);
	} else if (r->type == NBD_CMD_WRITE && r->length) {
		/* the reply waits until the payload has been skipped */
	} else if (err == REQ_NOOP) {
		reply_noop(s, r);
	} else {
		reply_error(s, r, err, msg);
	}
}

size_t request_data(struct proto_server *s, const uint8_t *in, size_t len, struct proto_action *act)
{
	size_t n = len < s->data_left ? len : s->data_left;

	if (s->data_forward) {
		act->type = PROTO_ACT_WRITE_DATA;
		act->write_data.data = in;
		act->write_data.len = n;
		act->write_data.offset = s->data_done;
		act->write_data.last = n == s->data_left;
	}
	s->data_left -= (uint32_t)n;
	s->data_done += (uint32_t)n;
	if (s->data_left == 0) {
		s->state = ST_REQ_HDR;
		if (!s->data_forward)
			reply_error(s, &s->req, s->data_err, s->data_msg);
	}
	return n;
}
