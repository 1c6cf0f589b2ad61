/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the server side of the NBD protocol as a pure state machine.
 *
 * The caller owns the socket.  It hands received bytes to
 * proto_server_step(), which consumes some of them and returns at most one
 * action: bytes to send, the export the client chose, a validated request,
 * a piece of a WRITE payload, or a disconnect.  Input may be split anywhere
 * (one byte at a time gives the same actions and bytes); the machine never
 * blocks, never touches a socket, owns no thread and never allocates after
 * proto_server_new().  Option data it does not need is consumed without
 * being stored.
 *
 * Handshake: fixed newstyle with NO_ZEROES; EXPORT_NAME, ABORT, LIST, INFO,
 * GO (INFO_EXPORT, NAME, DESCRIPTION, BLOCK_SIZE), STRUCTURED_REPLY,
 * LIST/SET_META_CONTEXT (base:allocation); STARTTLS gets ERR_POLICY,
 * EXTENDED_HEADERS and unknown options ERR_UNSUP.  Transmission: compact
 * 28-byte requests, each validated in one place (transmission.c); invalid
 * ones are answered by the machine itself (an error reply in the SEND
 * action), zero-length ones are answered with success; the caller only
 * sees requests it must carry out, and encodes their replies with the
 * proto_encode_* functions.
 *
 * Conventions: functions return 0 or a negative errno and write their
 * out-parameters only on success.  A struct proto_server is not
 * thread-safe; the encoders are pure and thread-safe.
 */
#ifndef BLOCKD_PROTO_H
#define BLOCKD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd_wire.h"
#include "proto_limits.h"

struct proto_server;

/* What the lookup callback says about an export. */
struct proto_export {
	uint64_t size_bytes; /* must be <= INT64_MAX */
	bool read_only;
	bool multi_conn; /* advertise CAN_MULTI_CONN */
	/*
	 * Block sizes: all 0 = none advertised, no alignment enforced.  Else
	 * min a power of two in 1..65536, pref a power of two >= min, max a
	 * multiple of min >= pref (capped to PROTO_MAX_PAYLOAD when encoded).
	 */
	uint32_t min_block, pref_block, max_block;
	/* NUL-terminated, or NULL; owned by the callee, read before the callback's next call. */
	const char *description;
};

/*
 * Looks up export NAME (name_len bytes, NUL-terminated, no NUL inside; may
 * be "" for the default export; "vol@snap" forms are the callee's business).
 * Returns 0 and fills *out, -ENOENT (client gets ERR_UNKNOWN), -EPERM or
 * -EACCES (ERR_POLICY), -ESHUTDOWN (ERR_SHUTDOWN); any other error is
 * reported as ERR_UNKNOWN.  Must not block for long: called from step().
 */
typedef int (*proto_lookup_fn)(void *opaque, const char *name, size_t name_len,
                               struct proto_export *out);

/*
 * Lists export number INDEX (0, 1, ...) for NBD_OPT_LIST.  Returns 1 and
 * sets *name (NUL-terminated) and *description (or NULL), both owned by the
 * callee and read before its next call; 0 when there are no more; a
 * negative errno fails the LIST (-EPERM/-EACCES: ERR_POLICY, -ESHUTDOWN:
 * ERR_SHUTDOWN, others: ERR_PLATFORM).  Names over PROTO_MAX_STRING bytes
 * are skipped; at most PROTO_MAX_LIST_EXPORTS entries are asked for.
 */
typedef int (*proto_list_fn)(void *opaque, size_t index, const char **name,
                             const char **description);

struct proto_server_config {
	proto_lookup_fn lookup; /* required */
	proto_list_fn list;     /* NULL: LIST answers with no exports */
	void *opaque;           /* passed to both */
};

enum proto_action_type {
	PROTO_ACT_NEED_INPUT, /* all input consumed, nothing to do: feed more */
	PROTO_ACT_SEND,       /* send send.data[0..len) before anything else */
	PROTO_ACT_EXPORT,     /* transmission begins on this export */
	PROTO_ACT_REQUEST,    /* a valid request to carry out and answer */
	PROTO_ACT_WRITE_DATA, /* the next piece of the current WRITE payload */
	PROTO_ACT_DISCONNECT, /* close the connection (after sending earlier SENDs) */
};

enum proto_disconnect_reason {
	PROTO_DISC_CLIENT,      /* NBD_CMD_DISC, or NBD_OPT_ABORT after its ACK */
	PROTO_DISC_BAD_FLAGS,   /* unknown client flags */
	PROTO_DISC_BAD_MAGIC,   /* wrong IHAVEOPT or request magic */
	PROTO_DISC_TOO_BIG,     /* option or WRITE payload beyond its cap */
	PROTO_DISC_EXPORT_NAME, /* EXPORT_NAME that cannot be served */
	PROTO_DISC_NOT_FIXED,   /* option other than EXPORT_NAME without fixed newstyle */
};

struct proto_request {
	uint16_t type;  /* NBD_CMD_* */
	uint16_t flags; /* NBD_CMD_FLAG_*, all valid for this command and export */
	uint64_t cookie;
	uint64_t offset;
	uint32_t length; /* > 0, offset + length <= export size */
};

struct proto_action {
	enum proto_action_type type;
	union {
		struct {
			const uint8_t *data; /* owned by the machine, valid until the next step() */
			size_t len;
		} send;
		struct {
			const char
			    *name; /* owned by the machine, valid until proto_server_free() */
			size_t name_len;
			struct proto_export info; /* description is NULL here */
			uint16_t tflags;          /* transmission flags sent to the client */
			bool structured;          /* structured replies negotiated */
			bool block_status;        /* base:allocation selected for this export */
			uint32_t context_id;      /* its id, for proto_encode_block_status() */
		} export;
		struct proto_request request;
		struct {
			const uint8_t *data; /* points into the caller's input buffer */
			size_t len;
			uint32_t offset; /* of this piece within the payload */
			bool last;       /* the payload is complete after this piece */
		} write_data;
		struct {
			enum proto_disconnect_reason reason;
		} disconnect;
	};
};

/* Context id of base:allocation in META_CONTEXT replies and BLOCK_STATUS chunks. */
#define PROTO_CONTEXT_BASE_ALLOCATION 1u

/*
 * Creates a connection's machine; its first action is the greeting.
 * cfg is copied.  Returns 0 and *out (free with proto_server_free()),
 * -EINVAL without a lookup callback, -ENOMEM.
 */
int proto_server_new(const struct proto_server_config *cfg, struct proto_server **out);

/* Frees the machine (NULL is fine). */
void proto_server_free(struct proto_server *s);

/*
 * Consumes up to in_len bytes of IN and returns the next action (also
 * stored in *act); *consumed says how many bytes were used.  Call again
 * with the rest of the input after handling the action; NEED_INPUT means
 * all input was used.  After DISCONNECT every call returns DISCONNECT and
 * consumes nothing.  A WRITE request is followed by WRITE_DATA actions
 * until its payload is complete; they point into IN, no copy is made.
 * Never fails.
 */
enum proto_action_type proto_server_step(struct proto_server *s, const void *in, size_t in_len,
                                         size_t *consumed, struct proto_action *act);

/* True once the handshake is over and requests are being parsed. */
bool proto_server_in_transmission(const struct proto_server *s);

/*
 * Transmission flags for an export, computed only here: HAS_FLAGS,
 * READ_ONLY, SEND_FLUSH, SEND_FUA, SEND_CACHE always; SEND_TRIM,
 * SEND_WRITE_ZEROES and SEND_FAST_ZERO when writable; SEND_DF only with
 * structured replies; CAN_MULTI_CONN when the export says so.  Pure.
 */
uint16_t proto_tflags(const struct proto_export *e, bool structured);

/* NBD error value for an errno (either sign); 0 stays 0, unknown ones become NBD_EIO. */
uint32_t proto_errno_to_wire(int err);

/*
 * Reply encoders.  Pure, thread-safe; they write only into OUT and return
 * the number of bytes written, or a negative errno when the arguments would
 * make an invalid reply (-EINVAL) or OUT is too small (-ENOSPC).
 */

/* Simple reply (16 bytes); data of a successful READ follows separately. */
int proto_encode_simple(uint8_t out[NBD_SIMPLE_REPLY_BYTES], uint64_t cookie, uint32_t nbd_error);

/* NONE chunk with DONE (20 bytes): ends a structured reply. */
int proto_encode_done(uint8_t out[NBD_CHUNK_HEADER_BYTES], uint64_t cookie);

/*
 * OFFSET_DATA chunk header plus its offset (28 bytes); the caller sends
 * data_len bytes of data after it.  -EINVAL when data_len is 0 or the chunk
 * length would not fit in 32 bits.
 */
int proto_encode_offset_data(uint8_t out[28], uint64_t cookie, bool done, uint64_t offset,
                             uint32_t data_len);

/* OFFSET_HOLE chunk (32 bytes); -EINVAL when hole_len is 0. */
int proto_encode_offset_hole(uint8_t out[32], uint64_t cookie, bool done, uint64_t offset,
                             uint32_t hole_len);

/* One extent of a block status answer; length may exceed what was asked. */
struct proto_extent {
	uint64_t length;
	uint32_t flags; /* NBD_STATE_* */
};

/*
 * BLOCK_STATUS chunk for the request REQ (its length and REQ_ONE flag):
 * extents of length 0 are skipped, the one reaching the end of the request
 * is cut there and ends the list, REQ_ONE keeps only the first, and the
 * list stops when OUT is full.  Writes 20 + 4 + 8 * k bytes; -EINVAL when no
 * extent remains, -ENOSPC when OUT cannot hold one.  *covered (may be NULL)
 * gets the number of request bytes described.
 */
int proto_encode_block_status(uint8_t *out, size_t out_len, const struct proto_request *req,
                              bool done, uint32_t context_id, const struct proto_extent *ext,
                              size_t n_ext, uint64_t *covered);

/*
 * ERROR chunk with a message (may be NULL), truncated so that the chunk
 * stays within PROTO_MAX_ERROR_CHUNK bytes.  -EINVAL when nbd_error is 0.
 */
int proto_encode_error(uint8_t *out, size_t out_len, uint64_t cookie, bool done, uint32_t nbd_error,
                       const char *msg);

#endif
