/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the protocol machine's private state, shared by server.c
 * (the step loop and the handshake start), options.c (option parsing and
 * replies), transmission.c (requests) and reply.c (encoders).
 */
#ifndef BLOCKD_PROTO_INTERNAL_H
#define BLOCKD_PROTO_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "proto.h"

enum proto_state {
	ST_CFLAGS,   /* waiting for the 4 client flag bytes */
	ST_OPT_HDR,  /* option header (16 bytes) */
	ST_OPT_BODY, /* option data, parsed as it streams in */
	ST_LISTING,  /* NBD_OPT_LIST: one REP_SERVER per step */
	ST_LOOKUP,   /* INFO/GO/EXPORT_NAME waiting for proto_server_lookup_done() */
	ST_REQ_HDR,  /* request header (28 bytes) */
	ST_REQ_DATA, /* WRITE payload, forwarded or skipped */
	ST_DEAD,     /* disconnected */
};

/* Where the option-data parser stands (options.c). */
enum opt_field {
	F_SKIP,       /* discard the rest; reply decided by opt_err */
	F_WHOLE_NAME, /* EXPORT_NAME: all data is the name */
	F_NAME_LEN,   /* u32 */
	F_NAME,
	F_NINFO,     /* u16 */
	F_INFO,      /* u16 each */
	F_NQUERIES,  /* u32 */
	F_QUERY_LEN, /* u32 */
	F_QUERY,
	F_END, /* parsed completely; more data is an error */
};

struct proto_server {
	struct proto_server_config cfg;
	enum proto_state state;

	/* fixed-size header being accumulated (flags, option, request) */
	uint8_t hdr[NBD_REQUEST_BYTES];
	size_t hdr_len;

	bool fixed_newstyle, no_zeroes, structured;

	/* the option being parsed */
	uint32_t opt, opt_left;
	enum opt_field field;
	uint8_t acc[4];
	size_t acc_len, acc_need;
	uint32_t str_need; /* bytes of the current string still to come */
	size_t str_len;    /* bytes of it stored (<= PROTO_MAX_STRING) */
	bool str_too_long;
	uint32_t count_left; /* info requests or queries still to come */
	uint32_t opt_err;    /* 0 or the NBD_REP_ERR_* decided so far */
	const char *opt_msg; /* message for opt_err */
	uint32_t info_mask;  /* bit per requested NBD_INFO_* (0..31) */
	bool ctx_match;      /* a query matched base:allocation */
	char name[PROTO_MAX_STRING + 1];
	size_t name_len;
	char query[PROTO_MAX_STRING];

	/* meta context selected by the last SET_META_CONTEXT */
	bool meta_selected;
	char meta_name[PROTO_MAX_STRING + 1];
	size_t meta_name_len;

	/* LIST in progress */
	size_t list_index;

	/* the export in transmission */
	char export_name[PROTO_MAX_STRING + 1];
	size_t export_name_len;
	struct proto_export export;
	bool block_sizes_sent, block_status_ok;

	/* request in progress */
	struct proto_request req;
	uint32_t data_left, data_done;
	bool data_forward; /* WRITE_DATA actions, else skip */
	uint32_t data_err; /* error reply after a skipped payload */
	const char *data_msg;

	/* output: handed out whole in one SEND */
	uint8_t out[PROTO_OUT_BYTES];
	size_t out_len;
	bool out_given;

	/* an action to return once the pending output has been handed out */
	bool has_pending;
	struct proto_action pending;
};

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)get_be16(p) << 16 | get_be16(p + 2);
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* server.c */
uint8_t *out_reserve(struct proto_server *s, size_t len);
void set_pending(struct proto_server *s, const struct proto_action *act);
void disconnect(struct proto_server *s, enum proto_disconnect_reason why);

/* options.c: start an option from its header, feed its data, LIST entries */
void option_start(struct proto_server *s, uint32_t opt, uint32_t len);
size_t option_feed(struct proto_server *s, const uint8_t *in, size_t len);
void option_list_next(struct proto_server *s);

/* transmission.c */
void request_header(struct proto_server *s);
size_t request_data(struct proto_server *s, const uint8_t *in, size_t len,
                    struct proto_action *act);

#endif
