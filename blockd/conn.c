/* SPDX-License-Identifier: MIT */
/*
 * conn.c - NBD connections on an event loop: the protocol machine fed from
 * the socket, export lookups, request slots, replies and backpressure.
 *
 * A connection stops reading its socket when it, its client (clients.h)
 * or the daemon holds too many requests or bytes (daemon_limits.h);
 * replies are queued and sent one message at a time.  A request counts as
 * in flight until its reply has left, so a client that does not read its
 * replies stops being read too.  A client over its share pauses only its
 * own connections.
 *
 * Timeouts, checked once a second (conn_tick()): a handshake that waits
 * for the client's next bytes too long, a WRITE payload that stops
 * arriving (--payload-timeout), replies the client stops reading, a
 * connection with nothing in flight that sends nothing (--idle-timeout).
 *
 * Export names: NAME is volume NAME read-write, NAME:ro the live volume
 * read-only, NAME@SNAP its snapshot SNAP read-only.  A lookup is answered
 * at once from the store's registry, except for a snapshot whose view is
 * not open yet: that is opened on the pool, the protocol machine waits
 * (PROTO_ACT_WAIT), and the answer comes back through the loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "worker.h"

static void conn_process_input(struct conn *c);
static void conn_break(struct conn *c, const char *reason);
static void conn_send(struct conn *c);

/* ------------------------------------------------------------ request slots */

static struct request *slot_get(struct conn *c, const struct proto_request *r)
{
	bool data = r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE;
	struct request *rq = c->free_slots;

	if (rq) {
		c->free_slots = rq->next_free;
		if (rq->buf)
			c->kept_buffer_bytes -= rq->buf_cap;
	} else {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return NULL;
	}
	if (data && rq->buf_cap < r->length) {
		/* Page-aligned, so that large writes can go to the O_DIRECT descriptor. */
		uint32_t cap = (r->length + FILEIO_DIRECT_ALIGN - 1) & ~(FILEIO_DIRECT_ALIGN - 1);

		free(rq->buf);
		rq->buf_cap = 0;
		rq->buf = aligned_alloc(FILEIO_DIRECT_ALIGN, cap);
		if (!rq->buf) {
			free(rq);
			return NULL;
		}
		rq->buf_cap = cap;
	}
	rq->c = c;
	rq->r = *r;
	rq->bytes = data ? r->length : 0;
	rq->err = 0;
	rq->errmsg[0] = '\0';
	rq->stage = STAGE_RUN;
	rq->pending = 0;
	rq->fast = false;
	rq->n_pieces = 0;
	rq->bs = NULL;
	rq->started = now_usec();
	return rq;
}

/* Back to the free list, keeping a small buffer while the connection keeps few. */
static void slot_put(struct conn *c, struct request *rq)
{
	free(rq->bs);
	rq->bs = NULL;
	if (rq->buf && (rq->buf_cap > SLOT_KEEP_BUFFER_BYTES ||
	                c->kept_buffer_bytes + rq->buf_cap > CONN_KEPT_BUFFER_BYTES)) {
		free(rq->buf);
		rq->buf = NULL;
		rq->buf_cap = 0;
	}
	if (rq->buf)
		c->kept_buffer_bytes += rq->buf_cap;
	rq->next_free = c->free_slots;
	c->free_slots = rq;
}

static void free_slots(struct conn *c)
{
	while (c->free_slots) {
		struct request *rq = c->free_slots;

		c->free_slots = rq->next_free;
		free(rq->buf);
		free(rq);
	}
}

static struct request *request_new(struct conn *c, const struct proto_request *r)
{
	struct daemon *d = c->w->d;
	struct request *rq = slot_get(c, r);

	if (!rq)
		return NULL;
	c->inflight++;
	c->inflight_bytes += rq->bytes;
	c->requests++;
	atomic_fetch_add(&c->client->inflight, 1);
	atomic_fetch_add(&c->client->inflight_bytes, rq->bytes);
	atomic_fetch_add(&d->inflight, 1);
	atomic_fetch_add(&d->inflight_bytes, rq->bytes);
	return rq;
}

/* Takes up input again after a pause, if whatever caused it has eased. */
static void conn_resume(struct conn *c)
{
	if (c->paused && !c->closing) {
		c->paused = false;
		c->active = now_sec(); /* the wait was ours, not the client's */
		conn_process_input(c);
	}
}

static void request_free(struct request *rq)
{
	struct conn *c = rq->c;
	struct daemon *d = c->w->d;

	c->inflight--;
	c->inflight_bytes -= rq->bytes;
	atomic_fetch_sub(&c->client->inflight, 1);
	atomic_fetch_sub(&c->client->inflight_bytes, rq->bytes);
	atomic_fetch_sub(&d->inflight, 1);
	atomic_fetch_sub(&d->inflight_bytes, rq->bytes);
	slot_put(c, rq);
	conn_resume(c);
}

/* The connection, its client or the daemon holds too much to take another request. */
static bool over_limits(const struct conn *c)
{
	const struct daemon *d = c->w->d;

	return c->inflight >= CONN_MAX_INFLIGHT || c->inflight_bytes >= CONN_MAX_INFLIGHT_BYTES ||
	       atomic_load(&c->client->inflight) >= CLIENT_MAX_INFLIGHT ||
	       atomic_load(&c->client->inflight_bytes) >= CLIENT_MAX_INFLIGHT_BYTES ||
	       atomic_load(&d->inflight) >= DAEMON_MAX_INFLIGHT ||
	       atomic_load(&d->inflight_bytes) >= DAEMON_MAX_INFLIGHT_BYTES;
}

/* ---------------------------------------------------------------- replies */

static void tx_queue(struct conn *c, struct tx *t)
{
	t->next = NULL;
	t->cur = 0;
	if (!c->tx_head)
		c->send_progress = now_sec();
	if (c->tx_tail)
		c->tx_tail->next = t;
	else
		c->tx_head = t;
	c->tx_tail = t;
	conn_send(c);
}

static void tx_free(struct conn *c, struct tx *t)
{
	c->tx_bytes -= t->owned;
	if (t->rq)
		request_free(t->rq);
	else
		free(t);
	conn_resume(c);
}

/* Bytes the protocol machine made (handshake, its own error replies), copied. */
static int queue_bytes(struct conn *c, const uint8_t *data, size_t len)
{
	struct tx *t = malloc(sizeof(*t) + sizeof(struct iovec) + len);

	if (!t)
		return -ENOMEM;
	*t = (struct tx){.owned = len, .n_iov = 1, .iov = (struct iovec *)(t + 1)};
	t->iov[0] = (struct iovec){(uint8_t *)(t->iov + 1), len};
	memcpy(t->iov[0].iov_base, data, len);
	c->tx_bytes += len;
	tx_queue(c, t);
	return 0;
}

static void reply_status(struct request *rq, int err)
{
	struct conn *c = rq->c;
	const char *msg = rq->errmsg[0] ? rq->errmsg : strerror(-err);
	int n = proto_encode_status(rq->hdr, sizeof(rq->hdr), rq->r.cookie, c->structured,
	                            proto_errno_to_wire(err), err ? msg : NULL);

	rq->iov[0] = (struct iovec){rq->hdr, (size_t)n};
	rq->tx = (struct tx){.rq = rq, .n_iov = 1, .iov = rq->iov};
	tx_queue(c, &rq->tx);
}

static void reply_block_status(struct request *rq)
{
	rq->iov[0] = (struct iovec){rq->bs, (size_t)rq->bs_len};
	rq->tx = (struct tx){.rq = rq, .n_iov = 1, .iov = rq->iov};
	tx_queue(rq->c, &rq->tx);
}

static void reply_read(struct request *rq)
{
	struct conn *c = rq->c;
	int n = proto_frame_read(&rq->r, c->structured, rq->pieces, rq->n_pieces, rq->buf, rq->hdr,
	                         sizeof(rq->hdr), rq->iov, PROTO_READ_IOVS(REQUEST_MAX_SEGMENTS));

	if (n < 0) { /* the pieces are ours: they always cover the request */
		log_error("volume %s: cannot frame a read reply: %s", c->export_name, strerror(-n));
		conn_break(c, "internal error");
		request_free(rq);
		return;
	}
	rq->tx = (struct tx){.rq = rq, .n_iov = n, .iov = rq->iov};
	tx_queue(c, &rq->tx);
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

/*
 * A failed request, in the log: the library's own message when it gave
 * one, at most one line a second per volume (a failing disk fails every
 * request), with a count of the lines left out.
 */
static void log_failure(struct request *rq)
{
	struct volume_stats *st = rq->c->stats;
	long long now = now_sec(), last = atomic_load(&st->log_second);
	char more[64] = "";
	unsigned dropped;

	if (now - last < ERROR_LOG_INTERVAL_SEC ||
	    !atomic_compare_exchange_strong(&st->log_second, &last, now)) {
		atomic_fetch_add(&st->log_dropped, 1);
		return;
	}
	dropped = atomic_exchange(&st->log_dropped, 0);
	if (dropped)
		snprintf(more, sizeof(more), " (and %u more failures not logged)", dropped);
	log_error("volume %s: %s at offset %llu length %u failed: %s%s", rq->c->export_name,
	          cmd_name(rq->r.type), (unsigned long long)rq->r.offset, rq->r.length,
	          rq->errmsg[0] ? rq->errmsg : strerror(-rq->err), more);
}

/* Every request ends here, on its connection's loop. */
void request_complete(struct request *rq)
{
	struct conn *c = rq->c;

	account(rq);
	/* A FAST_ZERO refusal is an answer, not a failure. */
	if (rq->err < 0 && !(rq->err == -ENOTSUP && rq->r.type == NBD_CMD_WRITE_ZEROES))
		log_failure(rq);
	if (c->broken)
		request_free(rq);
	else if (rq->err < 0)
		reply_status(rq, rq->err);
	else if (rq->r.type == NBD_CMD_READ)
		reply_read(rq);
	else if (rq->r.type == NBD_CMD_BLOCK_STATUS)
		reply_block_status(rq);
	else
		reply_status(rq, 0);
}

/* -------------------------------------------------------------- the socket */

void conn_prep_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(c->w, &c->recv_op);

	if (sqe)
		io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RECV_BUFFER_BYTES - c->rlen, 0);
}

static void conn_recv(struct conn *c)
{
	if (c->recv_armed || c->closing || c->paused || c->rlen == RECV_BUFFER_BYTES)
		return;
	c->recv_armed = true;
	conn_prep_recv(c);
}

void conn_prep_send(struct conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(c->w, &c->send_op);
	struct tx *t = c->tx_head;

	if (!sqe)
		return;
	c->msg =
	    (struct msghdr){.msg_iov = t->iov + t->cur, .msg_iovlen = (size_t)(t->n_iov - t->cur)};
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
}

static void conn_send(struct conn *c)
{
	if (c->send_armed || !c->tx_head || c->broken)
		return;
	c->send_armed = true;
	conn_prep_send(c);
}

void conn_on_send(struct conn *c, int res)
{
	struct tx *t = c->tx_head;
	size_t left = res > 0 ? (size_t)res : 0;

	c->send_armed = false;
	if (res <= 0) {
		conn_break(c, res == 0 ? "send returned nothing" : strerror(-res));
	} else {
		c->send_progress = c->active = now_sec();
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

/* ---------------------------------------------------------------- exports */

/* Takes an export name apart into X and the store target T pointing into it. */
static bool parse_target(const char *name, size_t len, struct blockd_export_name *x,
                         struct store_target *t)
{
	if (blockd_export_name_parse(name, len, x) < 0)
		return false;
	*t = (struct store_target){
	    .volume = x->volume,
	    .volume_len = strlen(x->volume),
	    .snapshot = x->snapshot,
	    .snapshot_len = strlen(x->snapshot),
	    .access = x->snapshot[0] ? STORE_SNAPSHOT
	              : x->ro_live   ? STORE_READ_LIVE
	                             : STORE_READ_WRITE,
	};
	return true;
}

static void fill_export(struct conn *c, const struct store_target *t,
                        const struct store_target_info *info, struct proto_export *out)
{
	snprintf(c->description, sizeof(c->description), "blockd volume %.*s", (int)t->volume_len,
	         t->volume);
	*out = (struct proto_export){
	    .size_bytes = info->size,
	    .read_only = info->read_only,
	    .multi_conn = true,
	    .min_block = 1,
	    .pref_block = EXPORT_PREFERRED_BLOCK,
	    .max_block = PROTO_MAX_PAYLOAD,
	    .description = t->access == STORE_SNAPSHOT ? NULL : c->description,
	};
}

/*
 * The lookup callback.  For GO and EXPORT_NAME it also attaches, in the
 * same step as the answer, so that no other host can take the volume
 * between the client hearing yes and its first request.
 */
static int conn_lookup(void *opaque, const char *name, size_t len, struct proto_export *out)
{
	struct conn *c = opaque;
	struct store *st = c->w->d->store;
	struct store_target_info info;
	struct blockd_export_name x;
	struct store_target t;
	int rc;

	if (c->att) { /* claimed by an earlier GO the machine then refused: not ours to keep */
		store_detach(c->att);
		c->att = NULL;
	}
	if (!parse_target(name, len, &x, &t))
		return -ENOENT;
	rc = store_lookup(st, &t, c->peer, &info, &c->wait);
	if (rc == 0 && proto_server_lookup_starts_transmission(c->ps))
		rc = store_attach(st, &t, c->peer, &info, &c->att, &c->wait);
	if (rc == -EINPROGRESS) {
		/* Valid names are short: it fits. */
		memcpy(c->lookup_name, name, len);
		c->lookup_name[len] = '\0';
		c->lookup_pending = true;
	} else if (rc == 0) {
		fill_export(c, &t, &info, out);
	}
	return rc;
}

/* On a pool thread: the snapshot view a lookup waited for is open (or failed). */
static void lookup_ready(struct store_wait *w)
{
	struct conn *c = container_of(w, struct conn, wait);

	worker_handback(c->w, &c->wait_hb);
}

/* Back on the loop: ask again, now answered at once, and let the machine go on. */
static void lookup_resume(struct handback *h)
{
	struct conn *c = container_of(h, struct conn, wait_hb);
	struct proto_action act;
	int rc = store_wait_end(&c->wait);

	c->lookup_pending = false;
	if (c->closing) {
		conn_maybe_finish(c);
		return;
	}
	if (rc == 0)
		rc = conn_lookup(c, c->lookup_name, strlen(c->lookup_name), &act.export.info);
	if (rc == -EINPROGRESS)
		return; /* the snapshot was made again meanwhile: wait once more */
	proto_server_lookup_done(c->ps, rc, &act.export.info);
	conn_process_input(c);
	conn_maybe_finish(c);
}

static int conn_list(void *opaque, size_t index, const char **name, const char **description)
{
	struct conn *c = opaque;
	char vol[STORE_NAME_MAX + 1], snap[STORE_NAME_MAX + 1];

	if (!store_list_entry(c->w->d->store, index, vol, snap))
		return 0;
	snprintf(c->list_name, sizeof(c->list_name), "%s%s%s", vol, snap[0] ? "@" : "", snap);
	*name = c->list_name;
	*description = NULL;
	return 1;
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

/* Transmission begins on the export the lookup attached to. */
static void conn_start_export(struct conn *c, const struct proto_action *act)
{
	c->im = attachment_image(c->att);
	c->stats = attachment_stats(c->att);
	c->structured = act->export.structured;
	c->context_id = act->export.context_id;
	snprintf(c->export_name, sizeof(c->export_name), "%s", act->export.name);
	log_info("connection %llu from %s: export %s (%s)", (unsigned long long)c->id, c->peer,
	         c->export_name, act->export.info.read_only ? "read-only" : "read-write");
}

/* ------------------------------------------------------------------ input */

static void conn_process_input(struct conn *c)
{
	struct proto_action act;
	size_t used;

	while (!c->closing) {
		if (!c->cur_write && (c->tx_bytes >= CONN_MAX_QUEUED_REPLY_BYTES ||
		                      (proto_server_in_transmission(c->ps) && over_limits(c)))) {
			c->paused = true;
			break;
		}
		proto_server_step(c->ps, c->rbuf + c->rpos, c->rlen - c->rpos, &used, &act);
		c->rpos += used;
		if (act.type == PROTO_ACT_NEED_INPUT || act.type == PROTO_ACT_WAIT)
			break;
		switch (act.type) {
		case PROTO_ACT_SEND:
			if (queue_bytes(c, act.send.data, act.send.len) < 0)
				conn_break(c, "out of memory");
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
			if (act.request.type == NBD_CMD_WRITE) {
				c->cur_write = rq;
				c->payload_progress = now_sec();
				c->payload_received = 0;
			} else {
				data_dispatch(rq);
			}
			break;
		}
		case PROTO_ACT_WRITE_DATA:
			memcpy(c->cur_write->buf + act.write_data.offset, act.write_data.data,
			       act.write_data.len);
			c->payload_progress = now_sec();
			c->payload_received += (uint32_t)act.write_data.len;
			if (act.write_data.last) {
				struct request *rq = c->cur_write;

				c->cur_write = NULL;
				data_dispatch(rq);
			}
			break;
		case PROTO_ACT_DISCONNECT:
			c->closing = true;
			if (!c->close_reason)
				c->close_reason = disc_reason(act.disconnect.reason);
			break;
		case PROTO_ACT_NEED_INPUT:
		case PROTO_ACT_WAIT:
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

void conn_on_recv(struct conn *c, int res)
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
	c->active = now_sec();
	if (!c->lookup_pending)
		conn_process_input(c);
	else
		conn_recv(c);
	conn_maybe_finish(c);
}

/* ------------------------------------------------------------- lifetime */

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	struct daemon *d = w->d;

	if (c->att)
		store_detach(c->att);
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
	clients_put(d->clients, c->client);
	free_slots(c);
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
 * Closing: once every request is answered (or dropped) and sent, and no
 * lookup is out on the pool, shut the socket down so that a pending recv
 * returns, then free when the ring holds nothing of the connection.
 */
void conn_maybe_finish(struct conn *c)
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
	if (c->inflight > 0 || c->tx_head || c->send_armed || c->lookup_pending)
		return;
	if (!c->shutdown) {
		shutdown(c->fd, SHUT_RDWR);
		c->shutdown = true;
	}
	if (!c->recv_armed)
		conn_free(c);
}

/* At least SEC seconds from SINCE to NOW, both read in whole seconds. */
static bool elapsed(time_t since, time_t now, unsigned sec)
{
	return now - since > (time_t)sec;
}

/* Nothing of ours is pending: the connection waits for its client's next bytes. */
static bool waiting_for_client(const struct conn *c)
{
	return !c->closing && !c->paused && !c->lookup_pending && c->inflight == 0 && !c->tx_head;
}

/* A handshake waits for its client HANDSHAKE_TIMEOUT_SEC, or --idle-timeout if shorter. */
static unsigned handshake_limit(const struct daemon *d)
{
	if (d->idle_timeout_sec && d->idle_timeout_sec < HANDSHAKE_TIMEOUT_SEC)
		return d->idle_timeout_sec;
	return HANDSHAKE_TIMEOUT_SEC;
}

/* A WRITE whose payload stopped coming holds its buffer: cut the connection off, and say so. */
static void payload_stalled(struct conn *c, time_t now)
{
	const struct request *rq = c->cur_write;

	log_warn("connection %llu from %s, export %s: write at offset %llu stalled: %u of %u "
	         "payload bytes arrived, none for %lld s; cutting the connection off",
	         (unsigned long long)c->id, c->client->key, c->export_name,
	         (unsigned long long)rq->r.offset, c->payload_received, rq->r.length,
	         (long long)(now - c->payload_progress));
	conn_break(c, "write payload stalled");
}

void conn_tick(struct conn *c, time_t now)
{
	struct worker *w = c->w;
	struct daemon *d = w->d;
	bool transmission = proto_server_in_transmission(c->ps);

	if (!transmission && waiting_for_client(c) && elapsed(c->active, now, handshake_limit(d)))
		conn_break(c, "handshake timed out");
	else if (c->cur_write && elapsed(c->payload_progress, now, d->payload_timeout_sec))
		payload_stalled(c, now);
	else if (c->tx_head && now - c->send_progress >= SEND_STALL_TIMEOUT_SEC)
		conn_break(c, "client stopped reading replies");
	else if (transmission && d->idle_timeout_sec && waiting_for_client(c) &&
	         elapsed(c->active, now, d->idle_timeout_sec))
		conn_break(c, "idle for longer than --idle-timeout");
	else if (c->att && attachment_cut(c->att))
		conn_break(c, attachment_cut(c->att));
	else if (w->stopping && now - w->stop_started >= STOP_GRACE_SEC)
		conn_break(c, "server stopping");
	else if (c->paused && !c->closing)
		conn_resume(c); /* a daemon-wide limit may have eased */
	conn_maybe_finish(c);
}

void conn_begin_stop(struct conn *c)
{
	c->closing = true;
	conn_maybe_finish(c);
}

/* TCP: no Nagle delay on replies, and keepalive, so that a host that died is noticed. */
static void tcp_options(int fd)
{
	int one = 1, idle = TCP_KEEPALIVE_IDLE_SEC, intvl = TCP_KEEPALIVE_INTERVAL_SEC,
	    cnt = TCP_KEEPALIVE_COUNT;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/*
 * Names the peer (the store's holder name) and its client identity
 * (clients.h): for TCP both are its IP address; for the unix socket the
 * peer is "local" and the identity "uid:N", N its uid.  -1 if the socket
 * tells neither.
 */
static int identify(int fd, int listener, char *peer, size_t peer_len, char *key, size_t key_len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	const void *addr;

	if (listener == 1) {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
			return -1;
		snprintf(peer, peer_len, "local");
		snprintf(key, key_len, "uid:%u", (unsigned)cred.uid);
		return 0;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		addr = &((struct sockaddr_in *)&ss)->sin_addr;
	else if (ss.ss_family == AF_INET6)
		addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	else
		return -1;
	if (!inet_ntop(ss.ss_family, addr, peer, (socklen_t)peer_len))
		return -1;
	snprintf(key, key_len, "%s", peer);
	tcp_options(fd);
	return 0;
}

/* A new connection on W, counted in d->connections already. */
void conn_new(struct worker *w, int fd, int listener)
{
	struct daemon *d = w->d;
	struct proto_server_config cfg = {.lookup = conn_lookup, .list = conn_list};
	char peer[STORE_HOLDER_MAX], key[CLIENT_KEY_MAX];
	struct client *client;
	struct conn *c;
	int rc;

	if (identify(fd, listener, peer, sizeof(peer), key, sizeof(key)) < 0) {
		/* A peer without an address cannot be told apart from others. */
		log_refusal("a peer without an address or credentials");
		goto out_close;
	}
	rc = clients_get(d->clients, key, &client);
	if (rc == -EUSERS) {
		log_refusal("client %s has as many connections as --max-client-connections allows",
		            key);
		goto out_close;
	} else if (rc < 0) {
		log_refusal("%s", strerror(-rc));
		goto out_close;
	}
	c = calloc(1, sizeof(*c));
	cfg.opaque = c;
	if (!c || !(c->rbuf = malloc(RECV_BUFFER_BYTES)) || proto_server_new(&cfg, &c->ps) < 0) {
		if (c)
			free(c->rbuf);
		free(c);
		clients_put(d->clients, client);
		log_refusal("out of memory");
		goto out_close;
	}
	c->w = w;
	c->fd = fd;
	c->client = client;
	c->id = atomic_fetch_add(&d->next_conn_id, 1) + 1;
	c->active = c->send_progress = now_sec();
	c->recv_op.kind = UOP_RECV;
	c->send_op.kind = UOP_SEND;
	c->wait.ready = lookup_ready;
	c->wait_hb.fn = lookup_resume;
	memcpy(c->peer, peer, sizeof(peer));
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	log_debug("connection %llu from %s opened", (unsigned long long)c->id, c->peer);
	conn_process_input(c);
	conn_maybe_finish(c);
	return;

out_close:
	atomic_fetch_sub(&d->connections, 1);
	close(fd);
}
