/* SPDX-License-Identifier: MIT */
/*
 * clients.h - who is connected.  One entry per client identity, shared by
 * every event loop: it counts the client's connections (capped, so that one
 * client cannot take every connection slot) and what its requests hold (so
 * that a client over its share of the daemon's in-flight budget pauses its
 * own connections, not everyone's).
 *
 * An identity is a string: a TCP peer's IP address, "uid:N" for the unix
 * socket (the peer's uid from SO_PEERCRED); a TLS identity later.
 *
 * Locking (CONCURRENCY.md): the table's lock guards its buckets and every
 * entry's `connections`.  It is a leaf: held only to find, add or drop an
 * entry, with no I/O and no other lock inside.  An entry's in-flight
 * counters are atomics, changed by the loops of its connections without
 * the lock.  An entry lives while it has connections: each connection
 * holds one reference, from clients_get() to clients_put().
 */
#ifndef BLOCKD_CLIENTS_H
#define BLOCKD_CLIENTS_H

#include <stdatomic.h>

#include "daemon_limits.h"

struct client {
	char key[CLIENT_KEY_MAX];
	unsigned connections;         /* under the table lock */
	atomic_uint inflight;         /* requests of its connections, received and not answered */
	atomic_ullong inflight_bytes; /* their payload buffers */
	struct client *next;          /* in its bucket, under the table lock */
};

struct clients;

/*
 * A table that lets a client hold at most max_connections connections at
 * once (at least 1).  Returns 0 and *out (free with clients_free()),
 * -EINVAL or -ENOMEM.
 */
int clients_new(unsigned max_connections, struct clients **out);

/* Frees the table; every entry must have been put back.  NULL is fine. */
void clients_free(struct clients *t);

/*
 * One more connection of the client KEY (NUL-terminated, shorter than
 * CLIENT_KEY_MAX): returns 0 and *out, its entry (made if it is the
 * client's first); -EUSERS if the client holds max_connections already,
 * -ENAMETOOLONG, -ENOMEM.  Thread-safe.
 */
int clients_get(struct clients *t, const char *key, struct client **out);

/* The connection that got CL from clients_get() is gone.  Thread-safe. */
void clients_put(struct clients *t, struct client *cl);

#endif
