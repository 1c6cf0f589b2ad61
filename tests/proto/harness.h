/* SPDX-License-Identifier: MIT */
/*
 * harness.h - a scripted NBD client for the protocol machine: builds byte
 * streams, feeds them whole and one byte at a time, and records what the
 * machine did (bytes sent, events) so that both feeds can be compared and
 * checked against exact expected bytes.
 */
#ifndef BLOCKD_TESTS_PROTO_HARNESS_H
#define BLOCKD_TESTS_PROTO_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct buf {
	uint8_t *p;
	size_t len, cap;
};

void buf_free(struct buf *b);
void put8(struct buf *b, uint8_t v);
void put16(struct buf *b, uint16_t v);
void put32(struct buf *b, uint32_t v);
void put64(struct buf *b, uint64_t v);
void putn(struct buf *b, const void *data, size_t len);
void putstr(struct buf *b, const char *s);

/* Client side. */
void c_flags(struct buf *b, uint32_t flags);
void c_opt(struct buf *b, uint32_t opt, const void *data, uint32_t len);
void c_info(struct buf *b, uint32_t opt, const char *name, unsigned n_info, const uint16_t *info);
void c_meta(struct buf *b, uint32_t opt, const char *name, unsigned n_q, const char *const *q);
void c_req(struct buf *b, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
           uint32_t length);
/* greeting ack + SR (optional) + GO "" with no info requests */
void c_go_session(struct buf *b, bool sr, const char *name);

/* Expected server bytes. */
void s_greeting(struct buf *b);
void s_rep(struct buf *b, uint32_t opt, uint32_t type, const void *data, uint32_t len);
void s_rep_msg(struct buf *b, uint32_t opt, uint32_t type, const char *msg);
void s_info_export(struct buf *b, uint32_t opt, uint64_t size, uint16_t tflags);
void s_simple(struct buf *b, uint64_t cookie, uint32_t err);
void s_err_chunk(struct buf *b, uint64_t cookie, uint32_t err, const char *msg);
void s_done(struct buf *b, uint64_t cookie);
/* expected bytes of c_go_session's handshake */
void s_go_session(struct buf *b, bool sr, uint64_t size, uint16_t tflags);

struct result {
	struct buf out;    /* all SEND bytes */
	struct buf events; /* text, one line per non-SEND action */
	struct buf data;   /* WRITE payload bytes */
	size_t consumed;
	bool disconnected;
	enum proto_disconnect_reason reason;
};

void result_free(struct result *r);

/* Feeds IN in pieces of CHUNK bytes (0 = all at once) until it is used or the machine disconnects.
 */
void drive(const uint8_t *in, size_t len, size_t chunk, struct result *r);

/*
 * The same, with the lookup callback answering -EINPROGRESS when LATER:
 * the answer (from test_lookup) is handed over at the WAIT action.
 */
void drive_lookups(const uint8_t *in, size_t len, size_t chunk, bool later, struct result *r);

/*
 * drive() whole and byte by byte, with lookups answered at once and later,
 * asserting identical results; returns the whole run.
 */
void run_both(const struct buf *in, struct result *r);

/* Asserts r->out equals EXP, with a hex dump of the first difference. */
void expect_out(const struct result *r, const struct buf *exp);
void expect_events(const struct result *r, const char *exp);

/* The test exports (harness.c); test_list_mode: 0 normal, 1 fails, 2 endless, 3 long name. */
extern int test_list_mode;
int test_lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out);
int test_list(void *opaque, size_t index, const char **name, const char **description);

#define TF_RW_MC    0x0d6du /* writable + multi-conn, no SR */
#define TF_RW_MC_SR 0x0dedu
#define GIB         (1ull << 30)

#endif
