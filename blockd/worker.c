/* SPDX-License-Identifier: MIT */
/*
 * worker.c - one event loop per thread on io_uring: accepts connections,
 * feeds the protocol machine, carries out requests and sends replies.
 *
 * Every socket operation and every data read or write that cached metadata
 * can map goes through the ring.  A request the cache cannot map (an L2
 * table to load, a cluster to allocate, a backing file to read), and FLUSH,
 * TRIM, WRITE_ZEROES and BLOCK_STATUS, become jobs on the blocking pool
 * (exec.h); their completion comes back through an eventfd read on the
 * ring.  The loop itself never waits for anything but its ring.
 *
 * A connection stops reading its socket when it holds too many requests
 * or bytes (daemon_limits.h); replies are queued and sent one message at a time.
 * A request counts as in flight until its reply has left, so a client that
 * does not read its replies stops being read too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "exec.h"
#include "fileio.h"
#include "daemon_limits.h"
#include "log.h"
#include "proto.h"
#include "qcow.h"
#include "store.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define RING_ENTRIES    1024u
#define RING_CQ_ENTRIES 16384u

enum uop_kind { UOP_ACCEPT, UOP_RECV, UOP_SEND, UOP_IO, UOP_EVENT, UOP_TIMER };

/* What a ring completion belongs to: user_data points at one of these. */
struct uop {
	enum uop_kind kind;
};

struct worker;
struct conn;

struct listener {
	struct uop u;
	int idx;
	bool armed;
};

/* A reply on its way out: iovecs over hdr (owned) and maybe a request's buffer. */
struct tx {
	struct tx *next;
	struct request *rq; /* freed once sent; NULL for handshake bytes */
	size_t owned;       /* bytes of hdr counted in the connection's tx_bytes */
	int n_iov, cur;
	struct iovec *iov;
	uint8_t *hdr;
};

struct seg {
	uint32_t pos; /* within the request */
	uint32_t len;
	bool hole;
	uint64_t host; /* data segments on the fast path */
};

struct io_op {
	struct uop u;
	struct request *rq;
	uint64_t host;
	uint8_t *ptr;
	uint32_t len;
	bool write;
};

enum stage { STAGE_RUN, STAGE_FUA_FLUSH };

struct request {
	struct exec_job job;
	struct conn *c;
	struct proto_request r;
	uint8_t *buf;
	uint32_t bytes; /* counted against the in-flight byte limits */
	int err;
	enum stage stage;
	unsigned pending; /* ring operations outstanding */
	bool fast;        /* counted in the image's fast_inflight */
	unsigned n_segs;
	struct seg segs[REQUEST_MAX_SEGMENTS];
	struct io_op ops[REQUEST_MAX_SEGMENTS];
	int64_t started; /* CLOCK_MONOTONIC microseconds, for the latency metrics */
	uint8_t *bs;     /* encoded BLOCK_STATUS chunk */
	int bs_len;
	struct request *done_next;
};

struct conn {
	struct worker *w;
	uint64_t id;
	int fd;
	char peer[STORE_PEER_MAX];
	struct proto_server *ps;
	time_t opened;
	uint8_t *rbuf;
	size_t rpos, rlen;
	struct uop recv_op, send_op;
	bool recv_armed, send_armed;
	struct msghdr msg;
	struct tx *tx_head, *tx_tail;
	size_t tx_bytes;      /* queued reply bytes not backed by a request */
	time_t send_progress; /* when the reply queue last moved */
	/* The export, once transmission began. */
	struct attachment *att;
	struct export_image *e;
	struct volume_stats *stats;
	char export_name[2 * STORE_NAME_MAX + 2];
	bool writable, structured;
	uint32_t context_id;
	struct request *cur_write; /* receiving its payload */
	unsigned inflight;
	uint64_t inflight_bytes;
	bool paused;   /* input left unprocessed until requests complete */
	bool closing;  /* no more input; close once replies are out */
	bool broken;   /* the socket failed: drop replies */
	bool shutdown; /* shutdown(2) done, waiting for the ring to let go */
	const char *close_reason;
	uint64_t requests;
	char list_name[2 * STORE_NAME_MAX + 2];
	struct conn *prev, *next;
};

struct worker {
	struct daemon *d;
	unsigned id;
	struct io_uring ring;
	pthread_t thread;
	struct listener listeners[2];
	struct uop event_op, timer_op;
	int efd;
	uint64_t efd_buf;
	bool event_armed;
	struct __kernel_timespec tick;
	pthread_mutex_t done_lock;
	struct request *done_head;
	struct conn *conns;
	unsigned n_conns;
	bool stopping;
	time_t stop_started;
};

static int64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static time_t now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void conn_process_input(struct conn *c);
static void conn_maybe_finish(struct conn *c);
static void conn_break(struct conn *c, const char *reason);
static void conn_send(struct conn *c);
static void request_dispatch(struct request *rq);

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&w->ring)) == NULL)
		io_uring_submit(&w->ring);
	return sqe;
}

/* ---------------------------------------------------------------- replies */

static struct tx *tx_new(size_t n_iov, size_t hdr_bytes)
{
	struct tx *t = calloc(1, sizeof(*t) + n_iov * sizeof(struct iovec) + hdr_bytes);

	if (!t)
		return NULL;
	t->iov = (struct iovec *)(t + 1);
	t->hdr = (uint8_t *)(t->iov + n_iov);
	return t;
}

static void tx_queue(struct conn *c, struct tx *t)
{
	if (!c->tx_head)
		c->send_progress = now_sec();
	if (c->tx_tail)
		c->tx_tail->next = t;
	else
		c->tx_head = t;
	c->tx_tail = t;
	conn_send(c);
}

/* Takes up input again after a pause, if whatever caused it has eased. */
static void conn_resume(struct conn *c)
{
	if (c->paused && !c->closing) {
		c->paused = false;
		conn_process_input(c);
	}
}

static void request_free(struct request *rq)
{
	struct conn *c = rq->c;
	struct daemon *d = c->w->d;

	c->inflight--;
	c->inflight_bytes -= rq->bytes;
	atomic_fetch_sub(&d->inflight, 1);
	atomic_fetch_sub(&d->inflight_bytes, rq->bytes);
	free(rq->buf);
	free(rq->bs);
	free(rq);
	conn_resume(c);
}

static void tx_free(struct conn *c, struct tx *t)
{
	c->tx_bytes -= t->owned;
	if (t->rq)
		request_free(t->rq);
	free(t);
	conn_resume(c);
}

static int wire_error(int err)
{
	return (int)proto_errno_to_wire(err);
}

/* An error reply: an ERROR chunk with structured replies, else a simple one. */
static void reply_error(struct request *rq, int err)
{
	struct conn *c = rq->c;
	struct tx *t = tx_new(1, PROTO_MAX_ERROR_CHUNK + 1);
	char msg[160];
	int n;

	if (!t) {
		conn_break(c, "out of memory");
		request_free(rq);
		return;
	}
	if (c->structured) {
		snprintf(msg, sizeof(msg), "%s", strerror(-err));
		n = proto_encode_error(t->hdr, PROTO_MAX_ERROR_CHUNK + 1, rq->r.cookie, true,
		                       (uint32_t)wire_error(err), msg);
	} else {
		n = proto_encode_simple(t->hdr, rq->r.cookie, (uint32_t)wire_error(err));
	}
	t->iov[0] = (struct iovec){t->hdr, (size_t)n};
	t->n_iov = 1;
	t->rq = rq;
	tx_queue(c, t);
}

static void reply_ok(struct request *rq)
{
	struct tx *t = tx_new(1, NBD_SIMPLE_REPLY_BYTES);

	if (!t) {
		conn_break(rq->c, "out of memory");
		request_free(rq);
		return;
	}
	t->iov[0] = (struct iovec){t->hdr, NBD_SIMPLE_REPLY_BYTES};
	t->n_iov = 1;
	proto_encode_simple(t->hdr, rq->r.cookie, 0);
	t->rq = rq;
	tx_queue(rq->c, t);
}

static void reply_block_status(struct request *rq)
{
	struct tx *t = tx_new(1, 0);

	if (!t) {
		conn_break(rq->c, "out of memory");
		request_free(rq);
		return;
	}
	t->iov[0] = (struct iovec){rq->bs, (size_t)rq->bs_len};
	t->n_iov = 1;
	t->rq = rq;
	tx_queue(rq->c, t);
}

/*
 * READ: a simple reply with the data, or one chunk per hole or data run
 * (a single OFFSET_DATA with DF).
 */
static void reply_read(struct request *rq)
{
	struct conn *c = rq->c;
	bool split = c->structured && !(rq->r.flags & NBD_CMD_FLAG_DF);
	unsigned n = split ? rq->n_segs : 1;
	struct tx *t = tx_new(2 * n, 32 * n);
	uint8_t *h;

	if (!t) {
		conn_break(c, "out of memory");
		request_free(rq);
		return;
	}
	if (!split)
		for (unsigned i = 0; i < rq->n_segs; i++)
			if (rq->segs[i].hole)
				memset(rq->buf + rq->segs[i].pos, 0, rq->segs[i].len);
	h = t->hdr;
	if (!c->structured) {
		proto_encode_simple(h, rq->r.cookie, 0);
		t->iov[t->n_iov++] = (struct iovec){h, NBD_SIMPLE_REPLY_BYTES};
		t->iov[t->n_iov++] = (struct iovec){rq->buf, rq->r.length};
	} else if (!split) {
		proto_encode_offset_data(h, rq->r.cookie, true, rq->r.offset, rq->r.length);
		t->iov[t->n_iov++] = (struct iovec){h, 28};
		t->iov[t->n_iov++] = (struct iovec){rq->buf, rq->r.length};
	} else {
		for (unsigned i = 0; i < rq->n_segs; i++) {
			const struct seg *s = &rq->segs[i];
			bool done = i + 1 == rq->n_segs;

			if (s->hole) {
				proto_encode_offset_hole(h, rq->r.cookie, done,
				                         rq->r.offset + s->pos, s->len);
				t->iov[t->n_iov++] = (struct iovec){h, 32};
			} else {
				proto_encode_offset_data(h, rq->r.cookie, done,
				                         rq->r.offset + s->pos, s->len);
				t->iov[t->n_iov++] = (struct iovec){h, 28};
				t->iov[t->n_iov++] = (struct iovec){rq->buf + s->pos, s->len};
			}
			h += 32;
		}
	}
	t->rq = rq;
	tx_queue(c, t);
}

static const char *cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return "read";
	case NBD_CMD_WRITE:
		return "write";
	case NBD_CMD_FLUSH:
		return "flush";
	case NBD_CMD_TRIM:
		return "trim";
	case NBD_CMD_WRITE_ZEROES:
		return "write-zeroes";
	case NBD_CMD_BLOCK_STATUS:
		return "block-status";
	default:
		return "request";
	}
}

static enum stats_op stats_op(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return STATS_READ;
	case NBD_CMD_WRITE:
		return STATS_WRITE;
	case NBD_CMD_FLUSH:
		return STATS_FLUSH;
	default:
		return STATS_OTHER;
	}
}

static void account(struct request *rq)
{
	struct volume_stats *st = rq->c->stats;
	enum stats_op op = stats_op(rq->r.type);
	uint64_t us = (uint64_t)(now_usec() - rq->started);
	unsigned b = 0;

	while (b < STATS_BUCKETS - 1 && us > stats_bucket_us[b])
		b++;
	atomic_fetch_add_explicit(&st->ops[op], 1, memory_order_relaxed);
	if (op == STATS_READ || op == STATS_WRITE)
		atomic_fetch_add_explicit(&st->bytes[op], rq->r.length, memory_order_relaxed);
	if (rq->err < 0)
		atomic_fetch_add_explicit(&st->errors[op], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->latency_us_sum[op], us, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->latency[op][b], 1, memory_order_relaxed);
}

/* Every request ends here, on its connection's loop. */
static void request_complete(struct request *rq)
{
	struct conn *c = rq->c;

	account(rq);
	if (rq->err < 0) {
		/* A FAST_ZERO refusal is an answer, not a failure. */
		if (!(rq->err == -ENOTSUP && rq->r.type == NBD_CMD_WRITE_ZEROES))
			log_error("volume %s: %s at offset %llu length %u failed: %s",
			          c->export_name, cmd_name(rq->r.type),
			          (unsigned long long)rq->r.offset, rq->r.length,
			          strerror(-rq->err));
	}
	if (c->broken) {
		request_free(rq);
		return;
	}
	if (rq->err < 0)
		reply_error(rq, rq->err);
	else if (rq->r.type == NBD_CMD_READ)
		reply_read(rq);
	else if (rq->r.type == NBD_CMD_BLOCK_STATUS)
		reply_block_status(rq);
	else
		reply_ok(rq);
}

/* ------------------------------------------------------- blocking jobs */

/* A run of zeros or unallocated space reads as a hole. */
static bool extent_is_hole(const struct qcow_extent *x)
{
	return (x->flags & QCOW_EXTENT_ZERO) || x->depth < 0;
}

static int job_read(struct request *rq, struct export_image *e)
{
	uint64_t off = rq->r.offset;
	uint32_t pos = 0, len = rq->r.length;
	struct qcow_extent x;
	int rc;

	rq->n_segs = 0;
	while (pos < len) {
		struct seg *s = &rq->segs[rq->n_segs];
		bool last_slot = rq->n_segs + 1 == REQUEST_MAX_SEGMENTS;

		rc = qcow_block_status(e->img, off + pos, len - pos, &x);
		if (rc < 0)
			return rc;
		if (x.length > len - pos || last_slot)
			x.length = len - pos;
		*s =
		    (struct seg){.pos = pos, .len = (uint32_t)x.length, .hole = extent_is_hole(&x)};
		if (last_slot)
			s->hole = false;
		if (rq->n_segs > 0 && rq->segs[rq->n_segs - 1].hole == s->hole)
			rq->segs[rq->n_segs - 1].len += s->len;
		else
			rq->n_segs++;
		pos += (uint32_t)x.length;
	}
	for (unsigned i = 0; i < rq->n_segs; i++) {
		struct seg *s = &rq->segs[i];

		if (!s->hole) {
			rc = qcow_read(e->img, rq->buf + s->pos, off + s->pos, s->len);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int job_block_status(struct request *rq, struct export_image *e)
{
	struct proto_extent ext[BLOCK_STATUS_MAX_EXTENTS];
	uint64_t pos = rq->r.offset, end = rq->r.offset + rq->r.length;
	size_t n = 0, max = (rq->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : BLOCK_STATUS_MAX_EXTENTS;
	size_t cap;
	struct qcow_extent x;
	int rc;

	while (pos < end) {
		uint32_t flags;

		rc = qcow_block_status(e->img, pos, end - pos, &x);
		if (rc < 0)
			return rc;
		flags = extent_is_hole(&x) ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
		if (n > 0 && ext[n - 1].flags == flags) {
			ext[n - 1].length += x.length;
		} else {
			if (n == max)
				break;
			ext[n++] = (struct proto_extent){x.length, flags};
		}
		pos += x.length;
	}
	cap = NBD_CHUNK_HEADER_BYTES + 4 + 8 * n;
	rq->bs = malloc(cap);
	if (!rq->bs)
		return -ENOMEM;
	rc = proto_encode_block_status(rq->bs, cap, &rq->r, true, rq->c->context_id, ext, n, NULL);
	if (rc < 0)
		return rc;
	rq->bs_len = rc;
	return 0;
}

static void job_run(struct exec_job *job)
{
	struct request *rq = container_of(job, struct request, job);
	struct export_image *e = rq->c->e;
	const struct proto_request *r = &rq->r;
	unsigned zflags;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (rq->stage == STAGE_FUA_FLUSH) {
		rc = qcow_flush(e->img);
		goto out;
	}
	switch (r->type) {
	case NBD_CMD_READ:
		rc = job_read(rq, e);
		break;
	case NBD_CMD_WRITE:
		rc = qcow_write(e->img, rq->buf, r->offset, r->length);
		if (rc == 0 && (r->flags & NBD_CMD_FLAG_FUA))
			rc = qcow_flush(e->img);
		break;
	case NBD_CMD_FLUSH:
		rc = qcow_flush(e->img);
		break;
	case NBD_CMD_TRIM:
		export_quiesce(e);
		rc = qcow_discard(e->img, r->offset, r->length);
		if (rc == 0 && (r->flags & NBD_CMD_FLAG_FUA))
			rc = qcow_flush(e->img);
		break;
	case NBD_CMD_WRITE_ZEROES:
		export_quiesce(e);
		zflags = (r->flags & NBD_CMD_FLAG_NO_HOLE) ? 0 : QCOW_ZERO_MAY_UNMAP;
		if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
			zflags |= QCOW_ZERO_FAST;
		rc = qcow_write_zeroes(e->img, r->offset, r->length, zflags);
		if (rc == 0 && (r->flags & NBD_CMD_FLAG_FUA))
			rc = qcow_flush(e->img);
		break;
	case NBD_CMD_BLOCK_STATUS:
		rc = job_block_status(rq, e);
		break;
	default:
		rc = -EINVAL;
		break;
	}
out:
	pthread_mutex_unlock(&e->lock);
	rq->err = rc;
}

/* On the pool thread: hand the request back to its loop. */
static void job_done(struct exec_job *job)
{
	struct request *rq = container_of(job, struct request, job);
	struct worker *w = rq->c->w;
	uint64_t one = 1;

	/*
	 * Under the lock: once rq is visible the worker may finish it and
	 * exit, and worker_join() takes the lock before freeing w.
	 */
	pthread_mutex_lock(&w->done_lock);
	rq->done_next = w->done_head;
	w->done_head = rq;
	if (write(w->efd, &one, sizeof(one)) < 0)
		log_error("worker %u: eventfd write failed: %s", w->id, strerror(errno));
	pthread_mutex_unlock(&w->done_lock);
}

static void submit_job(struct request *rq, enum stage stage)
{
	rq->stage = stage;
	rq->job.run = job_run;
	rq->job.done = job_done;
	exec_submit(rq->c->w->d->exec, &rq->job);
}

static void drain_done(struct worker *w)
{
	struct request *list, *rev = NULL;

	pthread_mutex_lock(&w->done_lock);
	list = w->done_head;
	w->done_head = NULL;
	pthread_mutex_unlock(&w->done_lock);
	while (list) { /* oldest first */
		struct request *next = list->done_next;

		list->done_next = rev;
		rev = list;
		list = next;
	}
	while (rev) {
		struct request *next = rev->done_next;
		struct conn *c = rev->c;

		request_complete(rev);
		conn_maybe_finish(c);
		rev = next;
	}
}

/* ------------------------------------------------------------ fast path */

static void io_submit_op(struct worker *w, struct io_op *op, const struct export_image *e)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	if (op->write)
		io_uring_prep_write(
		    sqe,
		    e->dfd >= 0 && fileio_direct_ok(op->ptr, op->host, op->len) ? e->dfd : e->fd,
		    op->ptr, op->len, op->host);
	else
		io_uring_prep_read(sqe, e->fd, op->ptr, op->len, op->host);
	io_uring_sqe_set_data(sqe, &op->u);
}

/*
 * Maps the whole request from cached metadata, under a lock taken only if
 * free.  Reads may cross holes; writes must land on clusters they may
 * overwrite in place.  Returns false to leave the request to the pool.
 */
static bool try_fast(struct request *rq)
{
	struct export_image *e = rq->c->e;
	bool write = rq->r.type == NBD_CMD_WRITE;
	uint32_t pos = 0, len = rq->r.length;
	struct qcow_map m;
	uint64_t need;
	unsigned n = 0;

	if (pthread_mutex_trylock(&e->lock) != 0)
		return false;
	while (pos < len) {
		bool hole;

		if (qcow_map_cached(e->img, rq->r.offset + pos, len - pos, &m, &need) < 0)
			goto slow;
		if (m.kind == QCOW_MAP_DATA)
			hole = false;
		else if (!write && (m.kind == QCOW_MAP_ZERO ||
		                    (m.kind == QCOW_MAP_UNALLOCATED && !e->has_backing)))
			hole = true;
		else
			goto slow;
		if (write && m.need != QCOW_NEED_NOTHING)
			goto slow;
		if (m.length > len - pos)
			m.length = len - pos;
		if (n > 0 && rq->segs[n - 1].hole == hole &&
		    (hole || rq->segs[n - 1].host + rq->segs[n - 1].len == m.host_offset)) {
			rq->segs[n - 1].len += (uint32_t)m.length;
		} else {
			if (n == REQUEST_MAX_SEGMENTS)
				goto slow;
			rq->segs[n++] = (struct seg){pos, (uint32_t)m.length, hole, m.host_offset};
		}
		pos += (uint32_t)m.length;
	}
	atomic_fetch_add(&e->fast_inflight, 1);
	pthread_mutex_unlock(&e->lock);

	rq->fast = true;
	rq->n_segs = n;
	rq->pending = 1; /* held until every op is submitted */
	for (unsigned i = 0; i < n; i++) {
		struct io_op *op = &rq->ops[i];

		if (rq->segs[i].hole)
			continue;
		*op = (struct io_op){.u = {UOP_IO},
		                     .rq = rq,
		                     .host = rq->segs[i].host,
		                     .ptr = rq->buf + rq->segs[i].pos,
		                     .len = rq->segs[i].len,
		                     .write = write};
		rq->pending++;
		io_submit_op(rq->c->w, op, e);
	}
	rq->pending--;
	return true;

slow:
	pthread_mutex_unlock(&e->lock);
	return false;
}

static void fast_finished(struct request *rq)
{
	atomic_fetch_sub(&rq->c->e->fast_inflight, 1);
	rq->fast = false;
	if (rq->err == 0 && rq->r.type == NBD_CMD_WRITE && (rq->r.flags & NBD_CMD_FLAG_FUA)) {
		submit_job(rq, STAGE_FUA_FLUSH);
		return;
	}
	request_complete(rq);
}

static void on_io(struct worker *w, struct io_op *op, int res)
{
	struct request *rq = op->rq;
	struct conn *c = rq->c;

	if (res > 0 && (uint32_t)res < op->len) {
		/* Short transfer: go on with the rest. */
		op->ptr += res;
		op->host += (uint64_t)res;
		op->len -= (uint32_t)res;
		io_submit_op(w, op, rq->c->e);
		return;
	}
	if (res == 0 && !op->write && op->len > 0)
		memset(op->ptr, 0, op->len); /* past the end of the file reads as zeros */
	else if (res < 0 && rq->err == 0)
		rq->err = res;
	else if (res == 0 && op->write && rq->err == 0)
		rq->err = -EIO;
	if (--rq->pending == 0) {
		fast_finished(rq);
		conn_maybe_finish(c);
	}
}

static void request_dispatch(struct request *rq)
{
	switch (rq->r.type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
		if (try_fast(rq)) {
			if (rq->pending == 0)
				fast_finished(rq);
			return;
		}
		submit_job(rq, STAGE_RUN);
		return;
	case NBD_CMD_CACHE:
		/* Data is read through the page cache anyway: nothing to prefetch here. */
		request_complete(rq);
		return;
	default:
		submit_job(rq, STAGE_RUN);
		return;
	}
}

/* ----------------------------------------------------------- connections */

static int conn_lookup(void *opaque, const char *name, size_t len, struct proto_export *out)
{
	struct conn *c = opaque;

	(void)len;
	return store_lookup(c->w->d->store, name, c->peer, out);
}

static int conn_list(void *opaque, size_t index, const char **name, const char **description)
{
	struct conn *c = opaque;

	if (!store_list(c->w->d->store, index, c->list_name, sizeof(c->list_name)))
		return 0;
	*name = c->list_name;
	*description = NULL;
	return 1;
}

static void conn_recv(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->closing || c->paused || c->rlen == RECV_BUFFER_BYTES)
		return;
	sqe = get_sqe(c->w);
	io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RECV_BUFFER_BYTES - c->rlen, 0);
	io_uring_sqe_set_data(sqe, &c->recv_op);
	c->recv_armed = true;
}

static void conn_send(struct conn *c)
{
	struct io_uring_sqe *sqe;
	struct tx *t = c->tx_head;

	if (c->send_armed || !t || c->broken)
		return;
	c->msg =
	    (struct msghdr){.msg_iov = t->iov + t->cur, .msg_iovlen = (size_t)(t->n_iov - t->cur)};
	sqe = get_sqe(c->w);
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &c->send_op);
	c->send_armed = true;
}

static void on_send(struct conn *c, int res)
{
	struct tx *t = c->tx_head;
	size_t left = res > 0 ? (size_t)res : 0;

	c->send_armed = false;
	if (res <= 0) {
		conn_break(c, res == 0 ? "send returned nothing" : strerror(-res));
	} else {
		c->send_progress = now_sec();
		while (t->cur < t->n_iov && left >= t->iov[t->cur].iov_len)
			left -= t->iov[t->cur++].iov_len;
		if (t->cur < t->n_iov) {
			t->iov[t->cur].iov_base = (uint8_t *)t->iov[t->cur].iov_base + left;
			t->iov[t->cur].iov_len -= left;
		} else {
			c->tx_head = t->next;
			if (!c->tx_head)
				c->tx_tail = NULL;
			tx_free(c, t);
		}
	}
	conn_send(c);
	conn_maybe_finish(c);
}

static struct request *request_new(struct conn *c, const struct proto_request *r)
{
	struct daemon *d = c->w->d;
	struct request *rq = calloc(1, sizeof(*rq));
	bool data = r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE;

	if (!rq)
		return NULL;
	rq->c = c;
	rq->r = *r;
	rq->started = now_usec();
	if (data) {
		/* Page-aligned, so that large writes can go to the O_DIRECT descriptor. */
		rq->buf = aligned_alloc(FILEIO_DIRECT_ALIGN, (r->length + FILEIO_DIRECT_ALIGN - 1) &
		                                                 ~(FILEIO_DIRECT_ALIGN - 1));
		if (!rq->buf) {
			free(rq);
			return NULL;
		}
		rq->bytes = r->length;
	}
	c->inflight++;
	c->inflight_bytes += rq->bytes;
	c->requests++;
	atomic_fetch_add(&d->inflight, 1);
	atomic_fetch_add(&d->inflight_bytes, rq->bytes);
	return rq;
}

static bool over_limits(const struct conn *c)
{
	const struct daemon *d = c->w->d;

	return c->inflight >= CONN_MAX_INFLIGHT || c->inflight_bytes >= CONN_MAX_INFLIGHT_BYTES ||
	       atomic_load(&d->inflight) >= DAEMON_MAX_INFLIGHT ||
	       atomic_load(&d->inflight_bytes) >= DAEMON_MAX_INFLIGHT_BYTES;
}

static const char *disc_reason(enum proto_disconnect_reason r)
{
	switch (r) {
	case PROTO_DISC_CLIENT:
		return "client disconnected";
	case PROTO_DISC_BAD_FLAGS:
		return "unknown client flags";
	case PROTO_DISC_BAD_MAGIC:
		return "bad magic";
	case PROTO_DISC_TOO_BIG:
		return "option or payload too large";
	case PROTO_DISC_EXPORT_NAME:
		return "export not available";
	case PROTO_DISC_NOT_FIXED:
		return "client does not speak fixed newstyle";
	}
	return "protocol error";
}

static void conn_start_export(struct conn *c, const struct proto_action *act)
{
	struct daemon *d = c->w->d;
	struct proto_export info;
	int rc;

	rc = store_attach(d->store, act->export.name, c->peer, &info, &c->att);
	if (rc < 0) {
		log_warn("connection %llu from %s: export %s went away or was taken during the "
		         "handshake",
		         (unsigned long long)c->id, c->peer, act->export.name);
		c->closing = true;
		c->close_reason = "export unavailable";
		return;
	}
	c->e = attachment_image(c->att);
	c->stats = attachment_stats(c->att);
	c->writable = !info.read_only;
	c->structured = act->export.structured;
	c->context_id = act->export.context_id;
	snprintf(c->export_name, sizeof(c->export_name), "%s", act->export.name);
	log_info("connection %llu from %s: export %s (%s)", (unsigned long long)c->id, c->peer,
	         c->export_name, c->writable ? "read-write" : "read-only");
}

static void conn_process_input(struct conn *c)
{
	struct proto_action act;
	size_t used;
	struct tx *t;

	while (!c->closing) {
		if (!c->cur_write && (c->tx_bytes >= CONN_MAX_QUEUED_REPLY_BYTES ||
		                      (proto_server_in_transmission(c->ps) && over_limits(c)))) {
			c->paused = true;
			break;
		}
		proto_server_step(c->ps, c->rbuf + c->rpos, c->rlen - c->rpos, &used, &act);
		c->rpos += used;
		if (act.type == PROTO_ACT_NEED_INPUT)
			break;
		switch (act.type) {
		case PROTO_ACT_SEND:
			t = tx_new(1, act.send.len);
			if (!t) {
				conn_break(c, "out of memory");
				break;
			}
			memcpy(t->hdr, act.send.data, act.send.len);
			c->tx_bytes += act.send.len;
			t->owned = act.send.len;
			t->iov[0] = (struct iovec){t->hdr, act.send.len};
			t->n_iov = 1;
			tx_queue(c, t);
			break;
		case PROTO_ACT_EXPORT:
			conn_start_export(c, &act);
			break;
		case PROTO_ACT_REQUEST: {
			struct request *rq = request_new(c, &act.request);

			if (!rq) {
				conn_break(c, "out of memory");
				break;
			}
			if (act.request.type == NBD_CMD_WRITE)
				c->cur_write = rq;
			else
				request_dispatch(rq);
			break;
		}
		case PROTO_ACT_WRITE_DATA:
			memcpy(c->cur_write->buf + act.write_data.offset, act.write_data.data,
			       act.write_data.len);
			if (act.write_data.last) {
				struct request *rq = c->cur_write;

				c->cur_write = NULL;
				request_dispatch(rq);
			}
			break;
		case PROTO_ACT_DISCONNECT:
			c->closing = true;
			if (!c->close_reason)
				c->close_reason = disc_reason(act.disconnect.reason);
			break;
		case PROTO_ACT_NEED_INPUT:
			break;
		}
	}
	if (c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	conn_recv(c);
}

static void on_recv(struct conn *c, int res)
{
	c->recv_armed = false;
	if (res <= 0) {
		if (res < 0) {
			conn_break(c, strerror(-res));
		} else {
			if (!c->closing && !c->close_reason)
				c->close_reason = "peer closed the connection";
			c->closing = true;
		}
		conn_maybe_finish(c);
		return;
	}
	c->rlen += (size_t)res;
	conn_process_input(c);
	conn_maybe_finish(c);
}

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	struct daemon *d = w->d;

	if (c->att)
		store_detach(d->store, c->att);
	log_info("connection %llu from %s closed (%s, %llu requests)", (unsigned long long)c->id,
	         c->peer, c->close_reason ? c->close_reason : "server stopping",
	         (unsigned long long)c->requests);
	close(c->fd);
	proto_server_free(c->ps);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	atomic_fetch_sub(&d->connections, 1);
	free(c->rbuf);
	free(c);
}

/*
 * The connection cannot go on: drop its replies and shut the socket down
 * at once, so that a send or recv the peer leaves hanging returns.
 */
static void conn_break(struct conn *c, const char *reason)
{
	if (!c->close_reason)
		c->close_reason = reason;
	c->broken = c->closing = true;
	if (!c->shutdown) {
		shutdown(c->fd, SHUT_RDWR);
		c->shutdown = true;
	}
}

/* Frees queued replies, except one the kernel is sending from. */
static void drop_unsent(struct conn *c)
{
	struct tx **pp = c->send_armed ? &c->tx_head->next : &c->tx_head;

	while (*pp) {
		struct tx *t = *pp;

		*pp = t->next;
		tx_free(c, t);
	}
	c->tx_tail = c->send_armed ? c->tx_head : NULL;
}

/*
 * Closing: once every request is answered (or dropped) and sent, shut the
 * socket down so that a pending recv returns, then free when the ring
 * holds nothing of the connection.
 */
static void conn_maybe_finish(struct conn *c)
{
	if (!c->closing)
		return;
	if (c->cur_write) {
		struct request *rq = c->cur_write;

		c->cur_write = NULL;
		request_free(rq);
	}
	if (c->broken)
		drop_unsent(c);
	if (c->inflight > 0 || c->tx_head || c->send_armed)
		return;
	if (!c->shutdown) {
		shutdown(c->fd, SHUT_RDWR);
		c->shutdown = true;
	}
	if (!c->recv_armed)
		conn_free(c);
}

/* Names the peer: its IP address, or "local" for the unix socket; -1 if TCP gives none. */
static int peer_name(int fd, int listener, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1;

	if (listener == 1) {
		snprintf(out, len, "local");
		return 0;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ss.ss_family == AF_INET)
		return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out,
		                 (socklen_t)len)
		           ? 0
		           : -1;
	if (ss.ss_family == AF_INET6)
		return inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out,
		                 (socklen_t)len)
		           ? 0
		           : -1;
	return -1;
}

/* At most one line a second about refused connections, whatever a client does. */
static void log_refusal(const char *why)
{
	static atomic_llong last;
	time_t now = now_sec();

	if (atomic_exchange(&last, now) != now)
		log_warn("refusing connections: %s", why);
}

static void conn_new(struct worker *w, int fd, int listener)
{
	struct daemon *d = w->d;
	struct proto_server_config cfg = {.lookup = conn_lookup, .list = conn_list};
	char peer[STORE_PEER_MAX];
	struct conn *c;

	if (peer_name(fd, listener, peer, sizeof(peer)) < 0) {
		/* A TCP peer without an address cannot be told apart from others. */
		log_refusal("a TCP peer without an address");
		close(fd);
		return;
	}
	if (atomic_fetch_add(&d->connections, 1) >= MAX_CONNECTIONS) {
		atomic_fetch_sub(&d->connections, 1);
		log_refusal("the connection limit is reached");
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	cfg.opaque = c;
	if (!c || !(c->rbuf = malloc(RECV_BUFFER_BYTES)) || proto_server_new(&cfg, &c->ps) < 0) {
		if (c)
			free(c->rbuf);
		free(c);
		atomic_fetch_sub(&d->connections, 1);
		log_refusal("out of memory");
		close(fd);
		return;
	}
	c->w = w;
	c->fd = fd;
	c->id = atomic_fetch_add(&d->next_conn_id, 1) + 1;
	c->opened = c->send_progress = now_sec();
	c->recv_op.kind = UOP_RECV;
	c->send_op.kind = UOP_SEND;
	memcpy(c->peer, peer, sizeof(peer));
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	log_debug("connection %llu from %s opened", (unsigned long long)c->id, c->peer);
	conn_process_input(c);
	conn_maybe_finish(c);
}

/* ---------------------------------------------------------------- loop */

static void arm_accept(struct worker *w, int idx)
{
	struct io_uring_sqe *sqe;

	if (w->stopping || w->d->listen_fd[idx] < 0 || w->listeners[idx].armed)
		return;
	sqe = get_sqe(w);
	io_uring_prep_accept(sqe, w->d->listen_fd[idx], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, &w->listeners[idx].u);
	w->listeners[idx].armed = true;
}

static void arm_event(struct worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof(w->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &w->event_op);
	w->event_armed = true;
}

static void arm_timer(struct worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	w->tick = (struct __kernel_timespec){.tv_sec = 1};
	io_uring_prep_timeout(sqe, &w->tick, 0, 0);
	io_uring_sqe_set_data(sqe, &w->timer_op);
}

static void begin_stop(struct worker *w)
{
	w->stopping = true;
	w->stop_started = now_sec();
	for (int i = 0; i < 2; i++) {
		if (w->listeners[i].armed) {
			struct io_uring_sqe *sqe = get_sqe(w);

			io_uring_prep_cancel(sqe, &w->listeners[i].u, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		c->closing = true;
		conn_maybe_finish(c);
	}
}

static void on_timer(struct worker *w)
{
	time_t now = now_sec();

	for (int i = 0; i < 2; i++)
		arm_accept(w, i); /* after an accept error, retried once a second */
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (!c->closing && !proto_server_in_transmission(c->ps) &&
		    now - c->opened >= HANDSHAKE_TIMEOUT_SEC)
			conn_break(c, "handshake timed out");
		else if (c->tx_head && now - c->send_progress >= SEND_STALL_TIMEOUT_SEC)
			conn_break(c, "client stopped reading replies");
		else if (w->stopping && now - w->stop_started >= STOP_GRACE_SEC)
			conn_break(c, "server stopping");
		else if (c->paused && !c->closing)
			conn_resume(c); /* a daemon-wide limit may have eased */
		conn_maybe_finish(c);
	}
	arm_timer(w);
}

static void handle_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
	struct uop *u = io_uring_cqe_get_data(cqe);
	struct listener *l;

	if (!u)
		return; /* a cancel request */
	switch (u->kind) {
	case UOP_ACCEPT:
		l = container_of(u, struct listener, u);
		l->armed = false;
		if (cqe->res >= 0) {
			if (w->stopping)
				close(cqe->res);
			else
				conn_new(w, cqe->res, l->idx);
			arm_accept(w, l->idx);
		} else if (cqe->res == -EINTR || cqe->res == -ECONNABORTED) {
			arm_accept(w, l->idx);
		} else if (cqe->res != -ECANCELED) {
			/* EMFILE and friends: the timer tries again in a second. */
			log_warn("accept failed: %s", strerror(-cqe->res));
		}
		break;
	case UOP_RECV:
		on_recv(container_of(u, struct conn, recv_op), cqe->res);
		break;
	case UOP_SEND:
		on_send(container_of(u, struct conn, send_op), cqe->res);
		break;
	case UOP_IO:
		on_io(w, container_of(u, struct io_op, u), cqe->res);
		break;
	case UOP_EVENT:
		w->event_armed = false;
		drain_done(w);
		if (atomic_load(&w->d->stopping) && !w->stopping)
			begin_stop(w);
		arm_event(w);
		break;
	case UOP_TIMER:
		on_timer(w);
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 2; i++) {
		w->listeners[i] = (struct listener){.u = {UOP_ACCEPT}, .idx = i};
		arm_accept(w, i);
	}
	w->event_op.kind = UOP_EVENT;
	w->timer_op.kind = UOP_TIMER;
	arm_event(w);
	arm_timer(w);
	while (
	    !(w->stopping && w->n_conns == 0 && !w->listeners[0].armed && !w->listeners[1].armed)) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int rc = io_uring_submit_and_wait(&w->ring, 1);

		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			/* Connections and jobs refer to this loop: stopping as a crash would is
			 * safe. */
			log_error("worker %u: io_uring_submit_and_wait: %s; aborting", w->id,
			          strerror(-rc));
			abort();
		}
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			handle_cqe(w, cqe);
			seen++;
		}
		io_uring_cq_advance(&w->ring, seen);
	}
	return NULL;
}

int worker_start(struct daemon *d, unsigned id, struct worker **out)
{
	struct io_uring_params params = {0};
	struct worker *w = calloc(1, sizeof(*w));
	int rc;

	if (!w)
		return -ENOMEM;
	w->d = d;
	w->id = id;
	pthread_mutex_init(&w->done_lock, NULL);
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		rc = -errno;
		goto out_free;
	}
	/* A roomy completion queue: requests in flight are bounded per connection, not per ring. */
	params.flags = IORING_SETUP_CQSIZE;
	params.cq_entries = RING_CQ_ENTRIES;
	rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
	if (rc < 0)
		goto out_efd;
	rc = -pthread_create(&w->thread, NULL, worker_main, w);
	if (rc < 0)
		goto out_ring;
	*out = w;
	return 0;

out_ring:
	io_uring_queue_exit(&w->ring);
out_efd:
	close(w->efd);
out_free:
	pthread_mutex_destroy(&w->done_lock);
	free(w);
	return rc;
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->efd, &one, sizeof(one)) < 0)
		log_error("worker %u: eventfd write failed: %s", w->id, strerror(errno));
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	pthread_mutex_lock(&w->done_lock); /* a pool thread may still be in job_done() */
	pthread_mutex_unlock(&w->done_lock);
	io_uring_queue_exit(&w->ring);
	close(w->efd);
	pthread_mutex_destroy(&w->done_lock);
	free(w);
}
