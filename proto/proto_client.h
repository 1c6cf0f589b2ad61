/* SPDX-License-Identifier: MIT */
/*
 * proto_client.h - the client side of the NBD protocol, pure like the
 * server side: a handshake machine (bytes in, bytes to send out) and the
 * encoding and decoding of transmission requests and simple replies.
 *
 * Handshake: fixed newstyle; the client sets FIXED_NEWSTYLE and, when the
 * server offers it, NO_ZEROES; it sends one NBD_OPT_GO for one export
 * asking for NBD_INFO_BLOCK_SIZE, reads the replies (INFO_EXPORT is
 * required before the ACK, BLOCK_SIZE is taken when valid, other INFO
 * types and NBD_REP_SERVER/META_CONTEXT replies are skipped) and is then
 * in transmission with simple replies only (no STRUCTURED_REPLY is asked
 * for, so every reply is a 16-byte simple reply, followed by the data of a
 * successful READ).
 *
 * Everything the server sends is hostile until checked: a wrong magic
 * (NBDMAGIC, IHAVEOPT, reply magic), a greeting without FIXED_NEWSTYLE, a
 * reply for another option, a reply longer than PROTO_MAX_OPTION_BYTES
 * (refused at its header, none of its data read), an unknown non-error
 * reply type, an ACK with data, an INFO without a type or whose length is
 * not the one its type has (INFO_EXPORT 12, INFO_BLOCK_SIZE 14), a size
 * over INT64_MAX or an ACK without INFO_EXPORT fails the handshake with
 * -EPROTO.  Handshake flags other than FIXED_NEWSTYLE and NO_ZEROES are
 * ignored.  A BLOCK_SIZE whose values break the spec's rules (min a power
 * of two in 1..64 KiB, pref a power of two >= min, max a multiple of min
 * >= pref) is ignored, not fatal.  Reply data we do not use is consumed
 * without being stored; the machine never allocates after
 * proto_client_new() and keeps at most PROTO_MAX_ECHO bytes of an error
 * message.  An NBD_REP_ERR_* reply ends the handshake (no fallback to
 * NBD_OPT_EXPORT_NAME).
 *
 * Conventions as in proto.h: 0 or a negative errno, out-parameters written
 * only on success; a struct proto_client is not thread-safe; the encoders
 * are pure and thread-safe.
 */
#ifndef BLOCKD_PROTO_CLIENT_H
#define BLOCKD_PROTO_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd_wire.h"
#include "proto_limits.h"

struct proto_client;

/* The export as the server described it at GO. */
struct proto_client_export {
	uint64_t size_bytes; /* <= INT64_MAX */
	uint16_t tflags;     /* NBD_TFLAG_* as sent */
	/* From NBD_INFO_BLOCK_SIZE when the server sent a valid one, else all 0. */
	uint32_t min_block, pref_block, max_block;
};

enum proto_client_action_type {
	PROTO_CLIENT_NEED_INPUT, /* all input consumed: receive more and step again */
	PROTO_CLIENT_SEND,       /* send send.data[0..len) before receiving more */
	PROTO_CLIENT_READY,      /* handshake done: transmission on ready */
	PROTO_CLIENT_FAILED,     /* handshake failed: close the connection */
};

struct proto_client_action {
	enum proto_client_action_type type;
	union {
		struct {
			const uint8_t *data; /* owned by the machine, valid until the next step() */
			size_t len;
		} send;
		struct proto_client_export ready;
		struct {
			/*
			 * -ENOENT (ERR_UNKNOWN), -EPERM (ERR_POLICY), -ESHUTDOWN
			 * (ERR_SHUTDOWN), -EOPNOTSUPP (ERR_UNSUP), -EACCES
			 * (ERR_TLS_REQD), -EINVAL (ERR_INVALID and other errors),
			 * -EPROTO (the server broke the protocol).
			 */
			int err;
			/*
			 * What went wrong in words: the server's own message when it
			 * sent one (printable ASCII only, other bytes as '?', at most
			 * PROTO_MAX_ECHO bytes), else a description.  NUL-terminated,
			 * owned by the machine, valid until proto_client_free().
			 */
			const char *message;
		} failed;
	};
};

/*
 * A machine for a connection that will ask for export NAME (NUL-terminated,
 * "" is the default export).  Its first action is NEED_INPUT (the server
 * speaks first).  Returns 0 and *out (free with proto_client_free()),
 * -EINVAL when name is NULL or longer than PROTO_MAX_STRING, -ENOMEM.
 */
int proto_client_new(const char *name, struct proto_client **out);

/* Frees the machine (NULL is fine). */
void proto_client_free(struct proto_client *c);

/*
 * Consumes up to in_len bytes of IN and returns the next action (also
 * stored in *act); *consumed says how many bytes were used.  Input may be
 * split anywhere.  After READY or FAILED every call returns the same action
 * again and consumes nothing; bytes the server sent after its final ACK
 * are not consumed (they belong to transmission).
 */
enum proto_client_action_type proto_client_step(struct proto_client *c, const void *in,
                                                size_t in_len, size_t *consumed,
                                                struct proto_client_action *act);

/*
 * A transmission request (28 bytes): the payload of a WRITE follows it
 * separately.  -EINVAL for a type above NBD_CMD_BLOCK_STATUS, flags outside
 * NBD_CMD_FLAG_*, offset + length past UINT64_MAX, or length 0 for
 * READ/WRITE/TRIM/WRITE_ZEROES; returns NBD_REQUEST_BYTES otherwise.
 */
int proto_client_encode_request(uint8_t out[NBD_REQUEST_BYTES], uint16_t type, uint16_t flags,
                                uint64_t cookie, uint64_t offset, uint32_t length);

/*
 * Decodes a 16-byte simple reply header.  Returns 0 with *cookie and
 * *nbd_error, or -EPROTO when the magic is not the simple reply's (a
 * structured chunk was never asked for).
 */
int proto_client_decode_simple(const uint8_t in[NBD_SIMPLE_REPLY_BYTES], uint64_t *cookie,
                               uint32_t *nbd_error);

/* Positive errno for an NBD error value; 0 stays 0, unknown values become EIO. */
int proto_wire_to_errno(uint32_t nbd_error);

#endif
