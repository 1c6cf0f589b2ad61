/* SPDX-License-Identifier: MIT */
/*
 * server.c - the step loop of the NBD server machine.
 *
 * One call of proto_server_step() returns one action.  Output the machine
 * produces (greeting, option replies, error replies to invalid requests)
 * collects in s->out and is handed out whole as one SEND; an action that
 * must follow it (EXPORT after GO's ACK, REQUEST, DISCONNECT after ABORT's
 * ACK) waits in s->pending.  Input is only consumed when neither is
 * waiting, so the caller always sees replies in order.  Fixed-size headers
 * (client flags, option and request headers) are collected in s->hdr;
 * option data is parsed as it streams in (options.c) and WRITE payloads are
 * passed through without a copy (transmission.c), so the machine's memory
 * does not depend on what the client sends.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

uint8_t *out_reserve(struct proto_server *s, size_t len)
{
	/* Every producer fits in PROTO_OUT_BYTES by construction (proto_limits.h). */
	if (len > sizeof(s->out) - s->out_len) {
		fprintf(stderr, "proto: output buffer overrun (%zu + %zu)\n", s->out_len, len);
		abort();
	}
	s->out_len += len;
	return s->out + s->out_len - len;
}

void set_pending(struct proto_server *s, const struct proto_action *act)
{
	s->pending = *act;
	s->has_pending = true;
}

void disconnect(struct proto_server *s, enum proto_disconnect_reason why)
{
	struct proto_action act = {.type = PROTO_ACT_DISCONNECT};

	act.disconnect.reason = why;
	s->state = ST_DEAD;
	set_pending(s, &act);
}

int proto_server_new(const struct proto_server_config *cfg, struct proto_server **out)
{
	struct proto_server *s;
	uint8_t *p;

	if (!cfg || !cfg->lookup)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	s->state = ST_CFLAGS;
	p = out_reserve(s, NBD_GREETING_BYTES);
	put_be64(p, NBD_MAGIC);
	put_be64(p + 8, NBD_IHAVEOPT);
	put_be16(p + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	*out = s;
	return 0;
}

void proto_server_free(struct proto_server *s)
{
	free(s);
}

bool proto_server_lookup_starts_transmission(const struct proto_server *s)
{
	return s->opt == NBD_OPT_GO || s->opt == NBD_OPT_EXPORT_NAME;
}

bool proto_server_in_transmission(const struct proto_server *s)
{
	return s->state == ST_REQ_HDR || s->state == ST_REQ_DATA;
}

static void client_flags(struct proto_server *s)
{
	uint32_t flags = get_be32(s->hdr);

	if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		disconnect(s, PROTO_DISC_BAD_FLAGS);
		return;
	}
	s->fixed_newstyle = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
	s->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
	s->state = ST_OPT_HDR;
}

static void option_header(struct proto_server *s)
{
	uint32_t opt = get_be32(s->hdr + 8);
	uint32_t len = get_be32(s->hdr + 12);

	if (get_be64(s->hdr) != NBD_IHAVEOPT) {
		disconnect(s, PROTO_DISC_BAD_MAGIC);
		return;
	}
	/* Without fixed newstyle the client cannot parse option replies. */
	if (!s->fixed_newstyle && opt != NBD_OPT_EXPORT_NAME) {
		disconnect(s, PROTO_DISC_NOT_FIXED);
		return;
	}
	if (len > PROTO_MAX_OPTION_BYTES) {
		disconnect(s, PROTO_DISC_TOO_BIG);
		return;
	}
	option_start(s, opt, len);
}

static size_t header_size(enum proto_state st)
{
	switch (st) {
	case ST_CFLAGS:
		return 4;
	case ST_OPT_HDR:
		return NBD_OPT_HEADER_BYTES;
	default:
		return NBD_REQUEST_BYTES;
	}
}

/* Collects a fixed-size header; acts on it once complete. */
static size_t take_header(struct proto_server *s, const uint8_t *in, size_t len)
{
	size_t need = header_size(s->state) - s->hdr_len;
	size_t n = len < need ? len : need;

	memcpy(s->hdr + s->hdr_len, in, n);
	s->hdr_len += n;
	if (s->hdr_len < header_size(s->state))
		return n;
	s->hdr_len = 0;
	switch (s->state) {
	case ST_CFLAGS:
		client_flags(s);
		break;
	case ST_OPT_HDR:
		option_header(s);
		break;
	default:
		request_header(s);
		break;
	}
	return n;
}

enum proto_action_type proto_server_step(struct proto_server *s, const void *in_buf, size_t in_len,
                                         size_t *consumed, struct proto_action *act)
{
	const uint8_t *in = in_buf;
	size_t used = 0;

	memset(act, 0, sizeof(*act));
	if (s->out_given) {
		s->out_len = 0;
		s->out_given = false;
	}
	for (;;) {
		if (s->out_len) {
			act->type = PROTO_ACT_SEND;
			act->send.data = s->out;
			act->send.len = s->out_len;
			s->out_given = true;
			break;
		}
		if (s->has_pending) {
			*act = s->pending;
			/* A disconnect stays: every later call returns it again. */
			if (act->type != PROTO_ACT_DISCONNECT)
				s->has_pending = false;
			break;
		}
		if (s->state == ST_LISTING) {
			option_list_next(s);
			continue;
		}
		if (s->state == ST_LOOKUP) {
			act->type = PROTO_ACT_WAIT;
			break;
		}
		if (used == in_len) {
			act->type = PROTO_ACT_NEED_INPUT;
			break;
		}
		switch (s->state) {
		case ST_OPT_BODY:
			used += option_feed(s, in + used, in_len - used);
			break;
		case ST_REQ_DATA:
			used += request_data(s, in + used, in_len - used, act);
			break;
		default:
			used += take_header(s, in + used, in_len - used);
			break;
		}
		if (act->type != PROTO_ACT_NEED_INPUT)
			break;
	}
	*consumed = used;
	return act->type;
}
