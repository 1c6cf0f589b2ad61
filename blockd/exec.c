/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "exec.h"

struct exec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct exec_queue *ready_head, *ready_tail; /* queues with a job to start */
	bool stopping;
	unsigned n_threads;
	pthread_t threads[];
};

static void ready_append(struct exec *ex, struct exec_queue *q)
{
	q->next_ready = NULL;
	if (ex->ready_tail)
		ex->ready_tail->next_ready = q;
	else
		ex->ready_head = q;
	ex->ready_tail = q;
}

static void *exec_thread(void *arg)
{
	struct exec *ex = arg;

	pthread_mutex_lock(&ex->lock);
	for (;;) {
		void (*done)(struct exec_job * job);
		struct exec_queue *q;
		struct exec_job *job;

		while (!ex->ready_head && !ex->stopping)
			pthread_cond_wait(&ex->cond, &ex->lock);
		q = ex->ready_head;
		if (!q)
			break;
		ex->ready_head = q->next_ready;
		if (!ex->ready_head)
			ex->ready_tail = NULL;
		job = q->head;
		q->head = job->next;
		if (!q->head)
			q->tail = NULL;
		pthread_mutex_unlock(&ex->lock);

		done = job->done; /* a job without done() may free itself in run() */
		job->run(job);

		/* The queue is done with before done(), which may end its owner. */
		pthread_mutex_lock(&ex->lock);
		if (q->head) {
			ready_append(ex, q);
			pthread_cond_signal(&ex->cond);
		} else {
			q->active = false;
		}
		pthread_mutex_unlock(&ex->lock);
		if (done)
			done(job);
		pthread_mutex_lock(&ex->lock);
	}
	pthread_mutex_unlock(&ex->lock);
	return NULL;
}

int exec_new(unsigned threads, struct exec **out)
{
	struct exec *ex = calloc(1, sizeof(*ex) + threads * sizeof(pthread_t));
	int rc;

	if (!ex)
		return -ENOMEM;
	pthread_mutex_init(&ex->lock, NULL);
	pthread_cond_init(&ex->cond, NULL);
	for (unsigned i = 0; i < threads; i++) {
		rc = pthread_create(&ex->threads[i], NULL, exec_thread, ex);
		if (rc != 0) {
			exec_free(ex);
			return -rc;
		}
		ex->n_threads++;
	}
	*out = ex;
	return 0;
}

void exec_queue_init(struct exec_queue *q)
{
	*q = (struct exec_queue){0};
}

void exec_submit(struct exec *ex, struct exec_queue *q, struct exec_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&ex->lock);
	if (q->tail)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
	if (!q->active) {
		q->active = true;
		ready_append(ex, q);
		pthread_cond_signal(&ex->cond);
	}
	pthread_mutex_unlock(&ex->lock);
}

void exec_free(struct exec *ex)
{
	pthread_mutex_lock(&ex->lock);
	ex->stopping = true;
	pthread_cond_broadcast(&ex->cond);
	pthread_mutex_unlock(&ex->lock);
	for (unsigned i = 0; i < ex->n_threads; i++)
		pthread_join(ex->threads[i], NULL);
	pthread_cond_destroy(&ex->cond);
	pthread_mutex_destroy(&ex->lock);
	free(ex);
}
