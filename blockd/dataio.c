/* SPDX-License-Identifier: MIT */
/*
 * dataio.c - requests carried out on a volume's image; the only file of
 * the data path that calls the qcow library.
 *
 * READ and WRITE first try the fast path: under the image lock, taken
 * only if free, the request is mapped from cached metadata, counted in the
 * image's fast_inflight, and its host reads and writes go to the ring.  A
 * request the cache cannot map (an L2 table to load, a cluster to
 * allocate, a backing file to read), and FLUSH, TRIM, WRITE_ZEROES and
 * BLOCK_STATUS, become jobs on the image's pool queue; a job holds the
 * image lock for its whole call and, before anything that can free
 * clusters, waits for the image's ring I/O to drain (image_quiesce()), so
 * that no in-flight I/O lands on a cluster after it was given away.  A
 * job's end comes back to the request's loop through worker_handback().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "qcow.h"
#include "worker.h"

/* A run of zeros or unallocated space reads as a hole. */
static bool extent_is_hole(const struct qcow_extent *x)
{
	return (x->flags & QCOW_EXTENT_ZERO) || x->depth < 0;
}

/* ------------------------------------------------------------ pool jobs */

static int job_read(struct request *rq, struct image *im)
{
	uint64_t off = rq->r.offset;
	uint32_t pos = 0, len = rq->r.length;
	struct qcow_extent x;
	int rc;

	rq->n_pieces = 0;
	while (pos < len) {
		struct proto_read_piece *p = &rq->pieces[rq->n_pieces];
		bool last_slot = rq->n_pieces + 1 == REQUEST_MAX_SEGMENTS, hole;

		rc = qcow_block_status(im->img, off + pos, len - pos, &x);
		if (rc < 0)
			return rc;
		if (x.length > len - pos || last_slot)
			x.length = len - pos;
		hole = extent_is_hole(&x) && !last_slot;
		if (rq->n_pieces > 0 && rq->pieces[rq->n_pieces - 1].hole == hole) {
			rq->pieces[rq->n_pieces - 1].len += (uint32_t)x.length;
		} else {
			*p = (struct proto_read_piece){pos, (uint32_t)x.length, hole};
			rq->n_pieces++;
		}
		pos += (uint32_t)x.length;
	}
	for (unsigned i = 0; i < rq->n_pieces; i++) {
		const struct proto_read_piece *p = &rq->pieces[i];

		if (!p->hole) {
			rc = qcow_read(im->img, rq->buf + p->pos, off + p->pos, p->len);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int job_block_status(struct request *rq, struct image *im)
{
	struct proto_extent ext[BLOCK_STATUS_MAX_EXTENTS];
	uint64_t pos = rq->r.offset, end = rq->r.offset + rq->r.length;
	size_t n = 0, max = (rq->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : BLOCK_STATUS_MAX_EXTENTS;
	size_t cap;
	struct qcow_extent x;
	int rc;

	while (pos < end) {
		uint32_t flags;

		rc = qcow_block_status(im->img, pos, end - pos, &x);
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

static int job_request(struct request *rq, struct image *im)
{
	const struct proto_request *r = &rq->r;
	unsigned zflags;
	int rc;

	switch (r->type) {
	case NBD_CMD_READ:
		return job_read(rq, im);
	case NBD_CMD_WRITE:
		rc = qcow_write(im->img, rq->buf, r->offset, r->length);
		break;
	case NBD_CMD_FLUSH:
		return qcow_flush(im->img);
	case NBD_CMD_TRIM:
		image_quiesce(im);
		rc = qcow_discard(im->img, r->offset, r->length);
		break;
	case NBD_CMD_WRITE_ZEROES:
		image_quiesce(im);
		zflags = (r->flags & NBD_CMD_FLAG_NO_HOLE) ? 0 : QCOW_ZERO_MAY_UNMAP;
		if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
			zflags |= QCOW_ZERO_FAST;
		rc = qcow_write_zeroes(im->img, r->offset, r->length, zflags);
		break;
	case NBD_CMD_BLOCK_STATUS:
		return job_block_status(rq, im);
	default:
		return -EINVAL;
	}
	if (rc == 0 && (r->flags & NBD_CMD_FLAG_FUA))
		rc = qcow_flush(im->img);
	return rc;
}

static void job_run(struct exec_job *job)
{
	struct request *rq = container_of(job, struct request, job);
	struct image *im = rq->c->im;
	int rc;

	pthread_mutex_lock(&im->lock);
	rc = rq->stage == STAGE_FUA_FLUSH ? qcow_flush(im->img) : job_request(rq, im);
	/* A refused FAST_ZERO is an answer: nothing to explain. */
	if (rc < 0 && rc != -ENOTSUP) {
		snprintf(rq->errmsg, sizeof(rq->errmsg), "%s", qcow_last_error(im->img));
		image_note_failure(im, rq->c->export_name);
	}
	pthread_mutex_unlock(&im->lock);
	rq->err = rc;
}

/* On the pool thread: hand the request back to its loop. */
static void job_done(struct exec_job *job)
{
	struct request *rq = container_of(job, struct request, job);

	worker_handback(rq->c->w, &rq->hb);
}

static void job_back(struct handback *h)
{
	struct request *rq = container_of(h, struct request, hb);
	struct conn *c = rq->c;

	request_complete(rq);
	conn_maybe_finish(c);
}

static void submit_job(struct request *rq, enum stage stage)
{
	rq->stage = stage;
	rq->job = (struct exec_job){.run = job_run, .done = job_done};
	rq->hb.fn = job_back;
	exec_submit(rq->c->w->d->exec, &rq->c->im->queue, &rq->job);
}

/* ------------------------------------------------------------ fast path */

void data_prep_io(struct io_op *op)
{
	struct request *rq = op->rq;
	const struct image *im = rq->c->im;
	struct io_uring_sqe *sqe = ring_sqe(rq->c->w, &op->u);

	if (!sqe)
		return;
	if (op->write)
		io_uring_prep_write(
		    sqe,
		    im->dfd >= 0 && fileio_direct_ok(op->ptr, op->host, op->len) ? im->dfd : im->fd,
		    op->ptr, op->len, op->host);
	else
		io_uring_prep_read(sqe, im->fd, op->ptr, op->len, op->host);
}

/*
 * Maps the whole request from cached metadata, under a lock taken only if
 * free.  Reads may cross holes; writes must land on clusters they may
 * overwrite in place.  Returns false to leave the request to the pool.
 */
static bool try_fast(struct request *rq)
{
	struct image *im = rq->c->im;
	bool write = rq->r.type == NBD_CMD_WRITE;
	uint32_t pos = 0, len = rq->r.length;
	struct qcow_map m;
	uint64_t need;
	unsigned n = 0;

	if (pthread_mutex_trylock(&im->lock) != 0)
		return false;
	while (pos < len) {
		bool hole;

		if (qcow_map_cached(im->img, rq->r.offset + pos, len - pos, &m, &need) < 0)
			goto slow;
		if (m.kind == QCOW_MAP_DATA)
			hole = false;
		else if (!write && (m.kind == QCOW_MAP_ZERO ||
		                    (m.kind == QCOW_MAP_UNALLOCATED && !im->has_backing)))
			hole = true;
		else
			goto slow;
		if (write && m.need != QCOW_NEED_NOTHING)
			goto slow;
		if (m.length > len - pos)
			m.length = len - pos;
		if (n > 0 && rq->pieces[n - 1].hole == hole &&
		    (hole || rq->host[n - 1] + rq->pieces[n - 1].len == m.host_offset)) {
			rq->pieces[n - 1].len += (uint32_t)m.length;
		} else {
			if (n == REQUEST_MAX_SEGMENTS)
				goto slow;
			rq->pieces[n] = (struct proto_read_piece){pos, (uint32_t)m.length, hole};
			rq->host[n] = m.host_offset;
			n++;
		}
		pos += (uint32_t)m.length;
	}
	image_fast_begin(im);
	pthread_mutex_unlock(&im->lock);

	rq->fast = true;
	rq->n_pieces = n;
	rq->pending = 1; /* held until every op is prepared */
	for (unsigned i = 0; i < n; i++) {
		struct io_op *op = &rq->ops[i];

		if (rq->pieces[i].hole)
			continue;
		*op = (struct io_op){.u = {.kind = UOP_IO},
		                     .rq = rq,
		                     .host = rq->host[i],
		                     .ptr = rq->buf + rq->pieces[i].pos,
		                     .len = rq->pieces[i].len,
		                     .write = write};
		rq->pending++;
		data_prep_io(op);
	}
	rq->pending--;
	return true;

slow:
	pthread_mutex_unlock(&im->lock);
	return false;
}

static void fast_finished(struct request *rq)
{
	image_fast_end(rq->c->im);
	rq->fast = false;
	if (rq->err == 0 && rq->r.type == NBD_CMD_WRITE && (rq->r.flags & NBD_CMD_FLAG_FUA)) {
		submit_job(rq, STAGE_FUA_FLUSH);
		return;
	}
	request_complete(rq);
}

void data_on_io(struct io_op *op, int res)
{
	struct request *rq = op->rq;
	struct conn *c = rq->c;

	if (res > 0 && (uint32_t)res < op->len) {
		/* Short transfer: go on with the rest. */
		op->ptr += res;
		op->host += (uint64_t)res;
		op->len -= (uint32_t)res;
		data_prep_io(op);
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

void data_dispatch(struct request *rq)
{
	const char *cut = attachment_cut(rq->c->att);

	if (cut) {
		/* The volume's file was removed, or it is being recovered: nothing may reach it. */
		rq->err = -EIO;
		snprintf(rq->errmsg, sizeof(rq->errmsg), "%s", cut);
		request_complete(rq);
		return;
	}
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
