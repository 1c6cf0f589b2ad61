/* SPDX-License-Identifier: MIT */
/*
 * exec.h - a small pool of threads for the work that may block: calls into
 * the qcow library that read metadata, allocate clusters or sync, opening
 * snapshot views, freeing volumes.  The event loops never wait for it; a
 * job's done() callback hands the result back to whoever submitted it.
 *
 * Jobs go to a queue, one per owner (each open image has its own): the
 * pool runs at most one job of a queue at a time, in order, and takes
 * queues that have work round robin.  So one volume whose jobs are slow
 * (a flush on a busy disk, a job waiting for its image lock) holds one
 * pool thread at most, and every other volume keeps being served.  Jobs of
 * one image take its lock anyway, so running them one at a time costs no
 * parallelism.  Locking: ex->lock guards the ready list and every queue's
 * fields; it is held only to link and unlink (CONCURRENCY.md).
 */
#ifndef BLOCKD_EXEC_H
#define BLOCKD_EXEC_H

#include <stdbool.h>

struct exec_job {
	void (*run)(struct exec_job *job); /* on a pool thread */
	/*
	 * On the same thread right after run, once the pool no longer touches
	 * the job or its queue: it may hand the job to another thread, which
	 * may free the queue's owner.  May be NULL, and must be for a job that
	 * frees itself in run().
	 */
	void (*done)(struct exec_job *job);
	struct exec_job *next;
};

/* The jobs of one owner; embed one, exec_queue_init() it, keep it until no job is queued. */
struct exec_queue {
	struct exec_job *head, *tail;
	bool active; /* on the ready list, or one of its jobs running */
	struct exec_queue *next_ready;
};

struct exec;

/* Starts THREADS pool threads; 0 or -errno. */
int exec_new(unsigned threads, struct exec **out);
void exec_queue_init(struct exec_queue *q);
/* Queues JOB at the end of Q.  Thread-safe; never blocks for long. */
void exec_submit(struct exec *ex, struct exec_queue *q, struct exec_job *job);
/* Runs every queued job, then joins the threads and frees the pool. */
void exec_free(struct exec *ex);

#endif
