/* SPDX-License-Identifier: MIT */
/*
 * client.c - the client side of NBD: the handshake machine and the
 * transmission encoders (proto_client.h).
 *
 * The handshake is short and fixed: the server's 18-byte greeting, then our
 * client flags and one NBD_OPT_GO sent as one SEND, then option replies
 * until the ACK or an error.  Like the server machine, fixed-size headers
 * collect in c->hdr and reply data is looked at as it streams in: the bytes
 * we keep (an INFO's type and the 12 bytes of EXPORT or BLOCK_SIZE, the
 * first PROTO_MAX_ECHO bytes of an error message) are copied, everything
 * else is counted and dropped.  So the machine's memory does not depend on
 * what the server sends, and a reply is refused on its header (wrong magic,
 * another option, a length over PROTO_MAX_OPTION_BYTES, an unknown reply
 * type) before any of its data is read.
 *
 * The machine stops consuming at the end of the final ACK: whatever follows
 * belongs to transmission, which is the caller's (simple replies decoded
 * with proto_client_decode_simple()).
 */
#include <stdlib.h>

#include "internal.h"
#include "proto_client.h"

enum client_state {
	CS_GREETING, /* NBDMAGIC, IHAVEOPT, handshake flags (18 bytes) */
	CS_REP_HDR,  /* option reply header (20 bytes) */
	CS_REP_DATA, /* its data: kept up to what we use, the rest dropped */
	CS_DONE,     /* READY or FAILED, in c->final */
};

/* Reply data we keep: an INFO's u16 type plus the largest payload we read (BLOCK_SIZE). */
#define KEEP_BYTES 14u

/* Client flags, option header, name length, name, info count, one info request. */
#define GO_BYTES (4u + NBD_OPT_HEADER_BYTES + 4u + PROTO_MAX_STRING + 2u + 2u)

struct proto_client {
	enum client_state state;

	char name[PROTO_MAX_STRING + 1];
	size_t name_len;

	uint8_t hdr[NBD_OPT_REPLY_BYTES];
	size_t hdr_len;

	/* the reply being read */
	uint32_t rep_type, rep_len, rep_done;
	uint8_t keep[KEEP_BYTES];
	size_t keep_len; /* bytes of the data to keep in keep[] (error: in msg) */

	bool have_export;
	struct proto_client_export export;

	/* the server's error message, sanitised */
	char msg[PROTO_MAX_ECHO + 1];
	size_t msg_len;

	/* output: the flags and the GO, handed out once */
	uint8_t out[GO_BYTES];
	size_t out_len;
	bool out_given;

	struct proto_client_action final;
};

int proto_client_new(const char *name, struct proto_client **out)
{
	struct proto_client *c;
	size_t len;

	if (!name)
		return -EINVAL;
	len = strnlen(name, PROTO_MAX_STRING + 1);
	if (len > PROTO_MAX_STRING)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	memcpy(c->name, name, len);
	c->name_len = len;
	c->state = CS_GREETING;
	*out = c;
	return 0;
}

void proto_client_free(struct proto_client *c)
{
	free(c);
}

static void fail(struct proto_client *c, int err, const char *message)
{
	c->state = CS_DONE;
	c->final.type = PROTO_CLIENT_FAILED;
	c->final.failed.err = err;
	c->final.failed.message = message;
}

static void fail_proto(struct proto_client *c, const char *message)
{
	fail(c, -EPROTO, message);
}

/* Flags and GO(name, [BLOCK_SIZE]) in one batch; the server does not answer the flags. */
static void send_go(struct proto_client *c, bool no_zeroes)
{
	uint8_t *p = c->out;
	uint32_t flags = NBD_FLAG_C_FIXED_NEWSTYLE | (no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0);

	put_be32(p, flags);
	put_be64(p + 4, NBD_IHAVEOPT);
	put_be32(p + 12, NBD_OPT_GO);
	put_be32(p + 16, (uint32_t)(4 + c->name_len + 2 + 2));
	put_be32(p + 20, (uint32_t)c->name_len);
	memcpy(p + 24, c->name, c->name_len);
	p += 24 + c->name_len;
	put_be16(p, 1);
	put_be16(p + 2, NBD_INFO_BLOCK_SIZE);
	c->out_len = 24 + c->name_len + 4;
	assert(c->out_len <= sizeof(c->out));
}

static void greeting(struct proto_client *c)
{
	uint16_t hflags = get_be16(c->hdr + 16);

	if (get_be64(c->hdr) != NBD_MAGIC) {
		fail_proto(c, "not an NBD server (bad NBDMAGIC)");
		return;
	}
	if (get_be64(c->hdr + 8) != NBD_IHAVEOPT) {
		fail_proto(c, "server does not speak newstyle (bad IHAVEOPT)");
		return;
	}
	/* Without it the server could not answer GO; we do not fall back to EXPORT_NAME. */
	if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE)) {
		fail_proto(c, "server does not speak fixed newstyle");
		return;
	}
	/* Other flag bits are the server's mistake; nothing we send depends on them. */
	send_go(c, hflags & NBD_FLAG_NO_ZEROES);
	c->state = CS_REP_HDR;
}

/* NBD_INFO_BLOCK_SIZE as proto.h describes a valid triple. */
static bool block_sizes_valid(uint32_t min, uint32_t pref, uint32_t max)
{
	if (!min || min > 65536 || (min & (min - 1)))
		return false;
	if (pref < min || (pref & (pref - 1)))
		return false;
	return max >= pref && max % min == 0;
}

/* Bit 31 of a reply type marks an error (NBD_REP_ERR_*). */
static bool is_rep_err(uint32_t type)
{
	return type & NBD_REP_ERR(0);
}

static int rep_err_to_errno(uint32_t type)
{
	switch (type) {
	case NBD_REP_ERR_UNKNOWN:
		return -ENOENT;
	case NBD_REP_ERR_POLICY:
		return -EPERM;
	case NBD_REP_ERR_SHUTDOWN:
		return -ESHUTDOWN;
	case NBD_REP_ERR_UNSUP:
		return -EOPNOTSUPP;
	case NBD_REP_ERR_TLS_REQD:
		return -EACCES;
	default:
		return -EINVAL;
	}
}

static const char *rep_err_text(uint32_t type)
{
	switch (type) {
	case NBD_REP_ERR_UNKNOWN:
		return "server does not know the export";
	case NBD_REP_ERR_POLICY:
		return "server refused the export by policy";
	case NBD_REP_ERR_SHUTDOWN:
		return "server is shutting down";
	case NBD_REP_ERR_UNSUP:
		return "server does not support NBD_OPT_GO";
	case NBD_REP_ERR_TLS_REQD:
		return "server requires TLS";
	default:
		return "server refused NBD_OPT_GO";
	}
}

/* The whole reply is in: act on it. */
static void reply_done(struct proto_client *c)
{
	uint32_t type = c->rep_type;

	c->state = CS_REP_HDR;
	if (is_rep_err(type)) {
		c->msg[c->msg_len] = '\0';
		fail(c, rep_err_to_errno(type), c->msg_len ? c->msg : rep_err_text(type));
		return;
	}
	if (type != NBD_REP_INFO)
		return; /* SERVER, META_CONTEXT: skipped */
	switch (get_be16(c->keep)) {
	case NBD_INFO_EXPORT: {
		uint64_t size = get_be64(c->keep + 2);

		if (size > INT64_MAX) {
			fail_proto(c, "export size over INT64_MAX");
			return;
		}
		c->export.size_bytes = size;
		c->export.tflags = get_be16(c->keep + 10);
		c->have_export = true;
		break;
	}
	case NBD_INFO_BLOCK_SIZE: {
		uint32_t min = get_be32(c->keep + 2), pref = get_be32(c->keep + 6);
		uint32_t max = get_be32(c->keep + 10);

		/* Values that break the rules are ignored, as if not sent. */
		if (block_sizes_valid(min, pref, max)) {
			c->export.min_block = min;
			c->export.pref_block = pref;
			c->export.max_block = max;
		}
		break;
	}
	default:
		break; /* NAME, DESCRIPTION, unknown: skipped */
	}
}

/* The INFO type is in keep[0..2): check the length against what the type needs. */
static void info_type(struct proto_client *c)
{
	switch (get_be16(c->keep)) {
	case NBD_INFO_EXPORT:
		if (c->rep_len != 2 + 10) {
			fail_proto(c, "NBD_INFO_EXPORT of the wrong length");
			return;
		}
		c->keep_len = c->rep_len;
		break;
	case NBD_INFO_BLOCK_SIZE:
		if (c->rep_len != 2 + 12) {
			fail_proto(c, "NBD_INFO_BLOCK_SIZE of the wrong length");
			return;
		}
		c->keep_len = c->rep_len;
		break;
	default:
		break; /* keep_len stays 2: the rest is dropped */
	}
}

static void reply_header(struct proto_client *c)
{
	uint32_t opt = get_be32(c->hdr + 8);
	uint32_t type = get_be32(c->hdr + 12);
	uint32_t len = get_be32(c->hdr + 16);

	if (get_be64(c->hdr) != NBD_REP_MAGIC) {
		fail_proto(c, "bad option reply magic");
		return;
	}
	if (opt != NBD_OPT_GO) {
		fail_proto(c, "reply to an option we did not send");
		return;
	}
	/* Refused before a byte of it is read (CVE-2017-15119 on the client side). */
	if (len > PROTO_MAX_OPTION_BYTES) {
		fail_proto(c, "option reply too long");
		return;
	}
	c->rep_type = type;
	c->rep_len = len;
	c->rep_done = 0;
	c->keep_len = 0;
	c->msg_len = 0;

	if (is_rep_err(type)) {
		c->state = CS_REP_DATA; /* the message: first PROTO_MAX_ECHO bytes kept */
	} else {
		switch (type) {
		case NBD_REP_ACK:
			if (len) {
				fail_proto(c, "NBD_REP_ACK with data");
				return;
			}
			if (!c->have_export) {
				fail_proto(c, "NBD_REP_ACK without NBD_INFO_EXPORT");
				return;
			}
			c->state = CS_DONE;
			c->final.type = PROTO_CLIENT_READY;
			c->final.ready = c->export;
			return;
		case NBD_REP_INFO:
			if (len < 2) {
				fail_proto(c, "NBD_REP_INFO without a type");
				return;
			}
			c->keep_len = 2;
			c->state = CS_REP_DATA;
			break;
		case NBD_REP_SERVER:
		case NBD_REP_META_CONTEXT:
			c->state = CS_REP_DATA;
			break;
		default:
			fail_proto(c, "unknown option reply type");
			return;
		}
	}
	if (len == 0)
		reply_done(c);
}

static size_t take_header(struct proto_client *c, const uint8_t *in, size_t len)
{
	size_t size = c->state == CS_GREETING ? NBD_GREETING_BYTES : NBD_OPT_REPLY_BYTES;
	size_t n = len < size - c->hdr_len ? len : size - c->hdr_len;

	memcpy(c->hdr + c->hdr_len, in, n);
	c->hdr_len += n;
	if (c->hdr_len < size)
		return n;
	c->hdr_len = 0;
	if (c->state == CS_GREETING)
		greeting(c);
	else
		reply_header(c);
	return n;
}

static void keep_message(struct proto_client *c, const uint8_t *in, size_t n)
{
	for (size_t i = 0; i < n && c->msg_len < PROTO_MAX_ECHO; i++)
		c->msg[c->msg_len++] = in[i] >= 0x20 && in[i] < 0x7f ? (char)in[i] : '?';
}

static size_t take_data(struct proto_client *c, const uint8_t *in, size_t len)
{
	size_t n = c->rep_len - c->rep_done;

	if (n > len)
		n = len;
	if (is_rep_err(c->rep_type)) {
		keep_message(c, in, n);
	} else if (c->rep_done < c->keep_len) {
		size_t k = c->keep_len - c->rep_done;

		/* Stop after the INFO type so that its length is checked first. */
		if (n > k)
			n = k;
		memcpy(c->keep + c->rep_done, in, n);
	}
	c->rep_done += (uint32_t)n;
	if (c->rep_type == NBD_REP_INFO && c->rep_done == 2 && c->keep_len == 2) {
		info_type(c);
		if (c->state == CS_DONE)
			return n;
	}
	if (c->rep_done == c->rep_len)
		reply_done(c);
	return n;
}

enum proto_client_action_type proto_client_step(struct proto_client *c, const void *in_buf,
                                                size_t in_len, size_t *consumed,
                                                struct proto_client_action *act)
{
	const uint8_t *in = in_buf;
	size_t used = 0;

	memset(act, 0, sizeof(*act));
	if (c->out_given) {
		c->out_len = 0;
		c->out_given = false;
	}
	for (;;) {
		if (c->out_len) {
			act->type = PROTO_CLIENT_SEND;
			act->send.data = c->out;
			act->send.len = c->out_len;
			c->out_given = true;
			break;
		}
		if (c->state == CS_DONE) {
			*act = c->final;
			break;
		}
		if (used == in_len) {
			act->type = PROTO_CLIENT_NEED_INPUT;
			break;
		}
		if (c->state == CS_REP_DATA)
			used += take_data(c, in + used, in_len - used);
		else
			used += take_header(c, in + used, in_len - used);
	}
	*consumed = used;
	return act->type;
}

int proto_client_encode_request(uint8_t out[NBD_REQUEST_BYTES], uint16_t type, uint16_t flags,
                                uint64_t cookie, uint64_t offset, uint32_t length)
{
	const uint16_t known = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF |
	                       NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO;
	uint64_t end;

	if (type > NBD_CMD_BLOCK_STATUS || (flags & ~known))
		return -EINVAL;
	if (__builtin_add_overflow(offset, (uint64_t)length, &end))
		return -EINVAL;
	if (length == 0 && (type == NBD_CMD_READ || type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
	                    type == NBD_CMD_WRITE_ZEROES))
		return -EINVAL;
	put_be32(out, NBD_REQUEST_MAGIC);
	put_be16(out + 4, flags);
	put_be16(out + 6, type);
	put_be64(out + 8, cookie);
	put_be64(out + 16, offset);
	put_be32(out + 24, length);
	return NBD_REQUEST_BYTES;
}

int proto_client_decode_simple(const uint8_t in[NBD_SIMPLE_REPLY_BYTES], uint64_t *cookie,
                               uint32_t *nbd_error)
{
	if (get_be32(in) != NBD_SIMPLE_MAGIC)
		return -EPROTO;
	*nbd_error = get_be32(in + 4);
	*cookie = get_be64(in + 8);
	return 0;
}

int proto_wire_to_errno(uint32_t nbd_error)
{
	switch (nbd_error) {
	case 0:
		return 0;
	case NBD_EPERM:
		return EPERM;
	case NBD_EIO:
		return EIO;
	case NBD_ENOMEM:
		return ENOMEM;
	case NBD_EINVAL:
		return EINVAL;
	case NBD_ENOSPC:
		return ENOSPC;
	case NBD_EOVERFLOW:
		return EOVERFLOW;
	case NBD_ENOTSUP:
		return ENOTSUP;
	case NBD_ESHUTDOWN:
		return ESHUTDOWN;
	default:
		return EIO;
	}
}
