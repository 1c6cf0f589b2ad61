/* SPDX-License-Identifier: MIT */
/*
 * worker.h - the parts of one event loop, shared by loop.c (the ring,
 * accept, timers, work handed back by other threads), conn.c (connections:
 * the protocol machine, replies, backpressure, request slots) and dataio.c
 * (requests carried out on images: the only data-path caller of the qcow
 * library).  Everything here belongs to one loop thread, except what
 * worker_handback() says.
 */
#ifndef BLOCKD_WORKER_H
#define BLOCKD_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "clients.h"
#include "daemon.h"
#include "daemon_limits.h"
#include "exec.h"
#include "image.h"
#include "proto.h"
#include "store.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum uop_kind { UOP_ACCEPT, UOP_CANCEL, UOP_RECV, UOP_SEND, UOP_IO, UOP_EVENT, UOP_TIMER };

/*
 * What a ring operation belongs to: user_data points at one of these.  An
 * operation that found no room on the ring waits on the loop's deferred
 * list and is prepared again after the next completions; to its owner it
 * is in flight all the same.
 */
struct uop {
	enum uop_kind kind;
	bool deferred;
	struct uop *next_deferred;
};

/* Work another thread hands back to a loop: fn runs on the loop. */
struct handback {
	void (*fn)(struct handback *h);
	struct handback *next;
};

struct listener {
	struct uop u, cancel;
	int idx;
	bool armed;
};

struct worker;
struct conn;
struct request;

/* A reply on its way out: iovecs over bytes it owns, or a request's headers and data. */
struct tx {
	struct tx *next;
	struct request *rq; /* back to its connection's free slots once sent; NULL: owned bytes */
	size_t owned;       /* bytes counted in the connection's tx_bytes */
	int n_iov, cur;
	struct iovec *iov;
};

/* One ring read or write of a fast-path request. */
struct io_op {
	struct uop u;
	struct request *rq;
	uint64_t host;
	uint8_t *ptr;
	uint32_t len;
	bool write;
};

enum stage { STAGE_RUN, STAGE_FUA_FLUSH };

/* Bytes of reply headers a request slot holds: a split READ, or an ERROR chunk. */
#define SLOT_HDR_BYTES PROTO_READ_HDR_BYTES(REQUEST_MAX_SEGMENTS)
/* Longest error message a request keeps (the library's own words). */
#define SLOT_ERRMSG_BYTES 160

/*
 * A request slot.  Slots are made as a connection's queue depth grows and
 * kept on its free list, so a busy connection allocates nothing per
 * request (daemon_limits.h says which buffers stay with a slot).
 */
struct request {
	struct conn *c;
	struct proto_request r;
	uint8_t *buf; /* page-aligned, for READ and WRITE */
	uint32_t buf_cap;
	uint32_t bytes; /* counted against the in-flight byte limits */
	int err;
	char errmsg[SLOT_ERRMSG_BYTES]; /* the library's message, when it failed */
	enum stage stage;
	unsigned pending; /* ring operations outstanding */
	bool fast;        /* counted in the image's fast_inflight */
	int64_t started;  /* CLOCK_MONOTONIC microseconds, for the latency metrics */
	unsigned n_pieces;
	struct proto_read_piece pieces[REQUEST_MAX_SEGMENTS];
	uint64_t host[REQUEST_MAX_SEGMENTS]; /* data pieces on the fast path */
	struct io_op ops[REQUEST_MAX_SEGMENTS];
	uint8_t *bs; /* encoded BLOCK_STATUS chunk */
	int bs_len;
	struct exec_job job;
	struct handback hb;
	struct tx tx;
	struct iovec iov[PROTO_READ_IOVS(REQUEST_MAX_SEGMENTS)];
	uint8_t hdr[SLOT_HDR_BYTES];
	struct request *next_free;
};

struct conn {
	struct worker *w;
	uint64_t id;
	int fd;
	char peer[STORE_HOLDER_MAX]; /* the store's holder name: an IP address or "local" */
	struct client *client;       /* its identity's entry (clients.h), one reference */
	struct proto_server *ps;
	time_t active; /* bytes last came in or went out */
	uint8_t *rbuf;
	size_t rpos, rlen;
	struct uop recv_op, send_op;
	bool recv_armed, send_armed;
	struct msghdr msg;
	struct tx *tx_head, *tx_tail;
	size_t tx_bytes;      /* queued reply bytes not backed by a request */
	time_t send_progress; /* when the reply queue last moved */
	/* An export lookup waiting for a snapshot view to open. */
	struct store_wait wait;
	struct handback wait_hb;
	bool lookup_pending;
	char lookup_name[2 * STORE_NAME_MAX + 4];
	char description[STORE_NAME_MAX + 32]; /* of the export looked up last */
	/* The export, once transmission began. */
	struct attachment *att;
	struct image *im;
	struct volume_stats *stats;
	char export_name[2 * STORE_NAME_MAX + 4];
	bool structured;
	uint32_t context_id;
	struct request *cur_write; /* receiving its payload */
	time_t payload_progress;   /* when a byte of it last came */
	uint32_t payload_received;
	unsigned inflight;
	uint64_t inflight_bytes;
	struct request *free_slots;
	size_t kept_buffer_bytes; /* of the buffers free slots keep */
	bool paused;              /* input left unprocessed until requests complete */
	bool closing;             /* no more input; close once replies are out */
	bool broken;              /* the socket failed: drop replies */
	bool shutdown;            /* shutdown(2) done, waiting for the ring to let go */
	const char *close_reason;
	uint64_t requests;
	char list_name[2 * STORE_NAME_MAX + 4];
	struct conn *prev, *next;
};

struct worker {
	struct daemon *d;
	unsigned id;
	struct io_uring ring;
	pthread_t thread;
	struct listener listeners[DAEMON_LISTENERS];
	struct uop event_op, timer_op;
	int efd;
	uint64_t efd_buf;
	struct __kernel_timespec tick;
	unsigned ring_inflight; /* operations given to the ring whose completion is not seen yet */
	struct uop *deferred_head, *deferred_tail;
	pthread_mutex_t done_lock; /* guards done_head; held only to link */
	struct handback *done_head;
	struct conn *conns;
	unsigned n_conns;
	bool stopping;
	time_t stop_started;
};

/* loop.c */
int64_t now_usec(void);
time_t now_sec(void);
/*
 * A submission entry for operation U, counted as in flight; NULL when the
 * ring has no room: U is then deferred and its prepare function called
 * again later.
 */
struct io_uring_sqe *ring_sqe(struct worker *w, struct uop *u);
/* From any thread: H's fn runs on W's loop soon. */
void worker_handback(struct worker *w, struct handback *h);
/*
 * A warning about a refused connection; at most one line a second whatever
 * clients do, with a count of those left out.  Thread-safe.
 */
__attribute__((format(printf, 1, 2))) void log_refusal(const char *fmt, ...);

/* conn.c */
void conn_new(struct worker *w, int fd, int listener);
void conn_on_recv(struct conn *c, int res);
void conn_on_send(struct conn *c, int res);
void conn_prep_recv(struct conn *c);
void conn_prep_send(struct conn *c);
/* Once a second: timeouts, stalls, volumes gone, stop grace. */
void conn_tick(struct conn *c, time_t now);
void conn_begin_stop(struct conn *c);
/* A request is done (rq->err set): account, log, reply. */
void request_complete(struct request *rq);
void conn_maybe_finish(struct conn *c);

/* dataio.c */
void data_dispatch(struct request *rq);
void data_on_io(struct io_op *op, int res);
void data_prep_io(struct io_op *op);

#endif
