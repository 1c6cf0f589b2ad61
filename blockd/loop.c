/* SPDX-License-Identifier: MIT */
/*
 * loop.c - one event loop per thread on io_uring: accepts connections,
 * dispatches completions, runs a one-second tick and the work other
 * threads hand back (pool jobs that finished).
 *
 * The loop never waits for anything but its ring (CONCURRENCY.md): every
 * socket operation and every data read or write that cached metadata can
 * map goes through the ring; what may block is a pool job (exec.h) whose
 * end comes back through worker_handback() and an eventfd read on the
 * ring.  Operations in flight are capped at the completion queue's size,
 * so no completion is ever dropped; one that finds no room waits on the
 * deferred list and is prepared again after the next completions.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

int64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

time_t now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void defer(struct worker *w, struct uop *u)
{
	if (u->deferred)
		return;
	u->deferred = true;
	u->next_deferred = NULL;
	if (w->deferred_tail)
		w->deferred_tail->next_deferred = u;
	else
		w->deferred_head = u;
	w->deferred_tail = u;
}

struct io_uring_sqe *ring_sqe(struct worker *w, struct uop *u)
{
	struct io_uring_sqe *sqe = NULL;

	if (w->ring_inflight < RING_CQ_ENTRIES) {
		sqe = io_uring_get_sqe(&w->ring);
		if (!sqe && io_uring_submit(&w->ring) >= 0)
			sqe = io_uring_get_sqe(&w->ring);
	}
	if (!sqe) {
		defer(w, u);
		return NULL;
	}
	w->ring_inflight++;
	io_uring_sqe_set_data(sqe, u);
	return sqe;
}

static void prep_accept(struct worker *w, struct listener *l)
{
	struct io_uring_sqe *sqe;

	if (w->stopping) { /* deferred, and the stop came first: nothing to cancel */
		l->armed = false;
		return;
	}
	sqe = ring_sqe(w, &l->u);
	if (sqe)
		io_uring_prep_accept(sqe, w->d->listen_fd[l->idx], NULL, NULL, SOCK_CLOEXEC);
}

static void arm_accept(struct worker *w, int idx)
{
	struct listener *l = &w->listeners[idx];

	if (w->stopping || w->d->listen_fd[idx] < 0 || l->armed)
		return;
	l->armed = true;
	prep_accept(w, l);
}

static void prep_cancel(struct worker *w, struct listener *l)
{
	struct io_uring_sqe *sqe = ring_sqe(w, &l->cancel);

	if (sqe)
		io_uring_prep_cancel(sqe, &l->u, 0);
}

static void prep_event(struct worker *w)
{
	struct io_uring_sqe *sqe = ring_sqe(w, &w->event_op);

	if (sqe)
		io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof(w->efd_buf), 0);
}

static void prep_timer(struct worker *w)
{
	struct io_uring_sqe *sqe = ring_sqe(w, &w->timer_op);

	w->tick = (struct __kernel_timespec){.tv_sec = 1};
	if (sqe)
		io_uring_prep_timeout(sqe, &w->tick, 0, 0);
}

/* Prepares deferred operations again, in the order they waited. */
static void retry_deferred(struct worker *w)
{
	struct uop *list = w->deferred_head;

	w->deferred_head = w->deferred_tail = NULL;
	while (list) {
		struct uop *u = list;

		list = u->next_deferred;
		u->deferred = false;
		switch (u->kind) {
		case UOP_ACCEPT:
			prep_accept(w, container_of(u, struct listener, u));
			break;
		case UOP_CANCEL:
			prep_cancel(w, container_of(u, struct listener, cancel));
			break;
		case UOP_RECV:
			conn_prep_recv(container_of(u, struct conn, recv_op));
			break;
		case UOP_SEND:
			conn_prep_send(container_of(u, struct conn, send_op));
			break;
		case UOP_IO:
			data_prep_io(container_of(u, struct io_op, u));
			break;
		case UOP_EVENT:
			prep_event(w);
			break;
		case UOP_TIMER:
			prep_timer(w);
			break;
		}
	}
}

void worker_handback(struct worker *w, struct handback *h)
{
	uint64_t one = 1;

	/*
	 * Under the lock: once h is visible the worker may finish with it and
	 * exit, and worker_join() takes the lock before freeing w.
	 */
	pthread_mutex_lock(&w->done_lock);
	h->next = w->done_head;
	w->done_head = h;
	if (write(w->efd, &one, sizeof(one)) < 0)
		log_error("worker %u: eventfd write failed: %s", w->id, strerror(errno));
	pthread_mutex_unlock(&w->done_lock);
}

static void drain_handbacks(struct worker *w)
{
	struct handback *list, *rev = NULL;

	pthread_mutex_lock(&w->done_lock);
	list = w->done_head;
	w->done_head = NULL;
	pthread_mutex_unlock(&w->done_lock);
	while (list) { /* oldest first */
		struct handback *next = list->next;

		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev) {
		struct handback *next = rev->next;

		rev->fn(rev);
		rev = next;
	}
}

static void begin_stop(struct worker *w)
{
	w->stopping = true;
	w->stop_started = now_sec();
	for (int i = 0; i < DAEMON_LISTENERS; i++)
		if (w->listeners[i].armed)
			prep_cancel(w, &w->listeners[i]);
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		conn_begin_stop(c);
	}
}

static void on_timer(struct worker *w)
{
	time_t now = now_sec();

	for (int i = 0; i < DAEMON_LISTENERS; i++)
		arm_accept(w, i); /* after an accept error, retried once a second */
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		conn_tick(c, now);
	}
	prep_timer(w);
}

void log_refusal(const char *fmt, ...)
{
	static atomic_llong last;
	static atomic_uint dropped;
	time_t now = now_sec();
	char why[LOG_LINE_BYTES];
	unsigned more;
	va_list ap;

	if (atomic_exchange(&last, now) == now) {
		atomic_fetch_add(&dropped, 1);
		return;
	}
	more = atomic_exchange(&dropped, 0);
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (more)
		log_warn("refusing a connection: %s (and %u more refusals not logged)", why, more);
	else
		log_warn("refusing a connection: %s", why);
}

static void on_accept(struct worker *w, struct listener *l, int res)
{
	l->armed = false;
	if (res >= 0) {
		if (w->stopping) {
			close(res);
		} else if (atomic_fetch_add(&w->d->connections, 1) >= MAX_CONNECTIONS) {
			atomic_fetch_sub(&w->d->connections, 1);
			log_refusal("the connection limit is reached");
			close(res);
		} else {
			conn_new(w, res, l->idx);
		}
		arm_accept(w, l->idx);
	} else if (res == -EINTR || res == -ECONNABORTED) {
		arm_accept(w, l->idx);
	} else if (res != -ECANCELED) {
		/* EMFILE and friends: the timer tries again in a second. */
		log_warn("accept failed: %s", strerror(-res));
	}
}

static void handle_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
	struct uop *u = io_uring_cqe_get_data(cqe);

	w->ring_inflight--;
	switch (u->kind) {
	case UOP_ACCEPT:
		on_accept(w, container_of(u, struct listener, u), cqe->res);
		break;
	case UOP_CANCEL:
		break;
	case UOP_RECV:
		conn_on_recv(container_of(u, struct conn, recv_op), cqe->res);
		break;
	case UOP_SEND:
		conn_on_send(container_of(u, struct conn, send_op), cqe->res);
		break;
	case UOP_IO:
		data_on_io(container_of(u, struct io_op, u), cqe->res);
		break;
	case UOP_EVENT:
		drain_handbacks(w);
		if (atomic_load(&w->d->stopping) && !w->stopping)
			begin_stop(w);
		prep_event(w);
		break;
	case UOP_TIMER:
		on_timer(w);
		break;
	}
}

static bool listening(const struct worker *w)
{
	for (int i = 0; i < DAEMON_LISTENERS; i++)
		if (w->listeners[i].armed)
			return true;
	return false;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < DAEMON_LISTENERS; i++) {
		w->listeners[i] = (struct listener){
		    .u = {.kind = UOP_ACCEPT}, .cancel = {.kind = UOP_CANCEL}, .idx = i};
		arm_accept(w, i);
	}
	w->event_op.kind = UOP_EVENT;
	w->timer_op.kind = UOP_TIMER;
	prep_event(w);
	prep_timer(w);
	while (!(w->stopping && w->n_conns == 0 && !listening(w))) {
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
		retry_deferred(w);
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
	pthread_mutex_lock(&w->done_lock); /* a pool thread may still be in worker_handback() */
	pthread_mutex_unlock(&w->done_lock);
	io_uring_queue_exit(&w->ring);
	close(w->efd);
	pthread_mutex_destroy(&w->done_lock);
	free(w);
}
