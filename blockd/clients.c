/* SPDX-License-Identifier: MIT */
/*
 * clients.c - the table of client identities (clients.h): a fixed array of
 * buckets, each a list.  An entry exists only while it has connections, so
 * there are at most MAX_CONNECTIONS of them and the lists stay short.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"

/* Buckets of the table: a few entries each with every connection slot taken. */
#define CLIENT_BUCKETS 256u

struct clients {
	pthread_mutex_t lock;
	unsigned max_connections;
	struct client *buckets[CLIENT_BUCKETS];
};

/* FNV-1a: identities are short strings chosen by nobody in particular. */
static unsigned bucket_of(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key; key++)
		h = (h ^ (uint8_t)*key) * 16777619u;
	return h % CLIENT_BUCKETS;
}

int clients_new(unsigned max_connections, struct clients **out)
{
	struct clients *t;

	if (max_connections == 0)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	t->max_connections = max_connections;
	*out = t;
	return 0;
}

void clients_free(struct clients *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < CLIENT_BUCKETS; i++)
		if (t->buckets[i])
			abort(); /* a connection outlived the loops */
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int clients_get(struct clients *t, const char *key, struct client **out)
{
	unsigned b = bucket_of(key);
	struct client *cl;
	int rc = 0;

	if (strlen(key) >= CLIENT_KEY_MAX)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&t->lock);
	for (cl = t->buckets[b]; cl; cl = cl->next)
		if (strcmp(cl->key, key) == 0)
			break;
	if (!cl) {
		cl = calloc(1, sizeof(*cl));
		if (!cl) {
			rc = -ENOMEM;
			goto out_unlock;
		}
		strcpy(cl->key, key);
		cl->next = t->buckets[b];
		t->buckets[b] = cl;
	}
	if (cl->connections >= t->max_connections) {
		rc = -EUSERS;
		goto out_unlock;
	}
	cl->connections++;
	*out = cl;
out_unlock:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void clients_put(struct clients *t, struct client *cl)
{
	struct client **pp;

	pthread_mutex_lock(&t->lock);
	if (cl->connections == 0)
		abort(); /* put more often than got */
	if (--cl->connections == 0) {
		/* Its connections are gone, and with them its requests. */
		if (atomic_load(&cl->inflight) || atomic_load(&cl->inflight_bytes))
			abort();
		for (pp = &t->buckets[bucket_of(cl->key)]; *pp != cl; pp = &(*pp)->next)
			;
		*pp = cl->next;
		free(cl);
	}
	pthread_mutex_unlock(&t->lock);
}
