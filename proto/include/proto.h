/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the server side of the NBD protocol as a pure state machine.
 *
 * The caller owns the socket.  It hands received bytes to
 * proto_server_step(), which consumes some of them and returns at most one
 * action: bytes to send, the export the client chose, a validated request,
 * a piece of a WRITE payload, a disconnect, or a wait for an export lookup
 * the caller answers later.  Input may be split anywhere
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

#include <sys/uio.h>

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
 * reported as ERR_UNKNOWN.  Called from step(), so it must not block: an
 * answer that needs slow work returns -EINPROGRESS, step() then returns
 * PROTO_ACT_WAIT until the caller passes the answer to
 * proto_server_lookup_done().
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
	PROTO_ACT_WAIT, /* a lookup is in progress: nothing until proto_server_lookup_done() */
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
 * consumes nothing; while a lookup is waiting, every call returns WAIT and
 * consumes nothing.  A WRITE request is followed by WRITE_DATA actions
 * until its payload is complete; they point into IN, no copy is made.
 * Never fails.
 */
enum proto_action_type proto_server_step(struct proto_server *s, const void *in, size_t in_len,
                                         size_t *consumed, struct proto_action *act);

/*
 * The answer to a lookup the callback left in progress (-EINPROGRESS): rc
 * and *found as the callback would have returned them (found is read only
 * when rc is 0).  The option then completes as if the callback had
 * answered at once; step() goes on from there.  -EINVAL when no lookup is
 * waiting, rc is -EINPROGRESS, or rc is 0 without found.
 */
int proto_server_lookup_done(struct proto_server *s, int rc, const struct proto_export *found);

/*
 * Inside the lookup callback, or while its answer is awaited: true when a
 * successful answer starts transmission (GO, EXPORT_NAME), false when it
 * only informs (INFO).  Lets the callee claim the export in the same step
 * as it answers, so that nothing can take it between the two.
 */
bool proto_server_lookup_starts_transmission(const struct proto_server *s);

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

/*
 * Whole replies, framed for a vectored send: the headers go into the
 * caller's HDR buffer, the iovecs point at them and at the caller's data.
 * Pure and thread-safe, like the encoders.
 */

/*
 * The reply to a request that carries no data (everything but a successful
 * READ or BLOCK_STATUS): a simple reply when it succeeded (allowed with
 * structured replies too) or without structured replies; else an ERROR
 * chunk with MSG (may be NULL).  nbd_error is an NBD_E* value.  OUT holds
 * at least PROTO_MAX_ERROR_CHUNK + 1 bytes when structured and failing,
 * NBD_SIMPLE_REPLY_BYTES otherwise.  Returns the bytes written, or -ENOSPC.
 */
int proto_encode_status(uint8_t *out, size_t out_len, uint64_t cookie, bool structured,
                        uint32_t nbd_error, const char *msg);

/* One run of a READ's data: LEN bytes at POS within the request, data or a hole. */
struct proto_read_piece {
	uint32_t pos, len;
	bool hole;
};

/* Header bytes and iovecs proto_frame_read() needs at most for N pieces. */
#define PROTO_READ_HDR_BYTES(n) (32u * (n))
#define PROTO_READ_IOVS(n)      (2u * (n))

/*
 * Frames the successful reply to READ request REQ whose data is in DATA
 * (req->length bytes): without structured replies, the simple reply and
 * the data; with them and DF, one OFFSET_DATA chunk; else one chunk per
 * piece (OFFSET_HOLE for holes, OFFSET_DATA for data), the last one DONE.
 * PIECES must cover the request in order, without gaps or overlap, each
 * piece non-empty.  Holes sent as data are zero-filled in DATA first.
 * Returns the number of iovecs written to IOV (at most max_iov), or
 * -EINVAL for pieces that do not cover the request, -ENOSPC when HDR
 * (hdr_len bytes) or IOV is too small: PROTO_READ_HDR_BYTES(n_pieces) and
 * PROTO_READ_IOVS(n_pieces) are always enough.
 */
int proto_frame_read(const struct proto_request *req, bool structured,
                     const struct proto_read_piece *pieces, size_t n_pieces, uint8_t *data,
                     uint8_t *hdr, size_t hdr_len, struct iovec *iov, size_t max_iov);

#endif
