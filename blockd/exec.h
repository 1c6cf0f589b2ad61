/* SPDX-License-Identifier: MIT */
/*
 * exec.h - a small pool of threads for the work that may block: calls into
 * the qcow library that read metadata, allocate clusters or sync.  The
 * event loops never wait for it; a job's done() callback hands the result
 * back to the loop that submitted it.
 */
#ifndef BLOCKD_EXEC_H
#define BLOCKD_EXEC_H

struct exec_job {
	void (*run)(struct exec_job *job);  /* on a pool thread */
	void (*done)(struct exec_job *job); /* on the same thread, right after run */
	struct exec_job *next;
};

struct exec;

int exec_new(unsigned threads, struct exec **out);
void exec_submit(struct exec *ex, struct exec_job *job);
/* Runs every queued job, then joins the threads and frees the pool. */
void exec_free(struct exec *ex);

#endif
