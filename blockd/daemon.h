/* SPDX-License-Identifier: MIT */
/*
 * daemon.h - what the worker loops share: the store, the blocking pool,
 * the clients table, the listening sockets, timeouts, daemon-wide
 * counters and the stop flag.
 */
#ifndef BLOCKD_DAEMON_H
#define BLOCKD_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Listening sockets: TCP (index 0) and the unix socket (1). */
#define DAEMON_LISTENERS 2

struct store;
struct exec;
struct worker;
struct clients;

struct daemon {
	struct store *store;
	struct exec *exec;
	struct clients *clients;
	/* From the options, constant while the loops run. */
	unsigned idle_timeout_sec; /* 0: none */
	unsigned payload_timeout_sec;
	int listen_fd[DAEMON_LISTENERS]; /* TCP and unix; -1 when absent */
	atomic_bool stopping;
	atomic_uint connections;
	atomic_uint inflight;
	atomic_ullong inflight_bytes;
	atomic_ullong next_conn_id;
};

/* Starts a worker thread with its own io_uring; 0 or -errno. */
int worker_start(struct daemon *d, unsigned id, struct worker **out);
/* Wakes a worker so that it notices d->stopping. */
void worker_wake(struct worker *w);
/* Waits for the worker to finish its connections and exit, then frees it. */
void worker_join(struct worker *w);

#endif
