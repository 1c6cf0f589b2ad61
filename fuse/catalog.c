/* SPDX-License-Identifier: MIT */
/*
 * catalog.c - blockd's control API seen from blockfs (see catalog.h),
 * through common's control-API client, which FUSE threads may call at
 * once; the cache is a small array under one mutex and hands out deep
 * copies, so no JSON value is shared between threads.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "ctlclient.h"

struct entry {
	char path[CATALOG_PATH_MAX];
	json_t *value; /* NULL for a cached 404 */
	int64_t at_ms; /* 0: empty slot */
};

static struct {
	char control_path[PATH_MAX];
	struct ctlclient *client;
	pthread_mutex_t lock;
	struct entry entries[CATALOG_ENTRIES];
} cat = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One GET: 0 and *out, -ENOENT on 404, -ENOMEM, -EIO otherwise (reason in err when given). */
static int fetch(const char *path, json_t **out, char *err, size_t errlen)
{
	struct ctlclient_reply r;
	int rc;

	rc = ctlclient_request(cat.client, "GET", path, NULL, &r, err, errlen);
	if (rc < 0)
		return rc == -ENOMEM ? rc : -EIO;
	if (r.status == 404) {
		ctlclient_reply_release(&r);
		return -ENOENT;
	}
	if (r.status != 200 || !json_is_object(r.body)) {
		if (err)
			snprintf(err, errlen, "blockd at %s answered %s %ld", cat.control_path,
			         path, r.status);
		ctlclient_reply_release(&r);
		return -EIO;
	}
	*out = r.body;
	return 0;
}

int catalog_open(const char *control_path, char *err, size_t errlen)
{
	const struct ctlclient_opts opts = {
	    .socket_path = control_path,
	    .user_agent = "blockfs",
	    .timeout_s = CATALOG_TIMEOUT_S,
	    .max_reply_bytes = CATALOG_MAX_REPLY,
	};
	json_t *j;
	int rc;

	if (strlen(control_path) >= sizeof(cat.control_path)) {
		snprintf(err, errlen, "%s: path too long", control_path);
		return -ENAMETOOLONG;
	}
	snprintf(cat.control_path, sizeof(cat.control_path), "%s", control_path);
	rc = ctlclient_new(&opts, &cat.client);
	if (rc < 0) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return rc;
	}
	rc = fetch("/v1/volumes", &j, err, errlen);
	if (rc == 0)
		json_decref(j);
	else if (rc == -ENOENT)
		snprintf(err, errlen, "%s does not serve blockd's control API", control_path);
	if (rc < 0) {
		ctlclient_free(cat.client);
		cat.client = NULL;
	}
	return rc < 0 ? -EIO : 0;
}

void catalog_close(void)
{
	for (unsigned i = 0; i < CATALOG_ENTRIES; i++)
		json_decref(cat.entries[i].value);
	memset(cat.entries, 0, sizeof(cat.entries));
	ctlclient_free(cat.client);
	cat.client = NULL;
}

/*
 * What the caller wants of an answer: a copy of all of it, or of one
 * element of an array in it (so that a lookup in a long listing does not
 * copy the whole listing).  NULL when not there (or out of memory).
 */
struct pick {
	const char *key;  /* NULL: the whole answer */
	const char *name; /* the element of array key whose "name" this is */
};

static json_t *pick(const json_t *value, const struct pick *p)
{
	const json_t *e;
	size_t i;

	if (!p->key)
		return json_deep_copy(value);
	json_array_foreach(json_object_get(value, p->key), i, e)
	{
		const char *name = json_string_value(json_object_get(e, "name"));

		if (name && strcmp(name, p->name) == 0)
			return json_deep_copy(e);
	}
	return NULL;
}

/* The cached answer for PATH if young enough: 1 with *rc and *out, else 0.  Lock held. */
static int lookup(const char *path, int64_t now, const struct pick *p, int *rc, json_t **out)
{
	for (unsigned i = 0; i < CATALOG_ENTRIES; i++) {
		struct entry *e = &cat.entries[i];

		if (!e->at_ms || now - e->at_ms >= CATALOG_TTL_MS || strcmp(e->path, path) != 0)
			continue;
		*out = e->value ? pick(e->value, p) : NULL;
		*rc = *out ? 0 : !e->value || p->key ? -ENOENT : -ENOMEM;
		return 1;
	}
	return 0;
}

/* Keeps an answer (a copy of value, or a 404), replacing this path's or the oldest entry. */
static void store(const char *path, int64_t now, const json_t *value)
{
	struct entry *victim = &cat.entries[0];

	for (unsigned i = 0; i < CATALOG_ENTRIES; i++) {
		struct entry *e = &cat.entries[i];

		if (e->at_ms && strcmp(e->path, path) == 0) {
			victim = e;
			break;
		}
		if (e->at_ms < victim->at_ms)
			victim = e;
	}
	json_decref(victim->value);
	victim->value = value ? json_deep_copy(value) : NULL;
	if (value && !victim->value) {
		victim->at_ms = 0;
		return;
	}
	snprintf(victim->path, sizeof(victim->path), "%s", path);
	victim->at_ms = now;
}

static int get(const char *path, bool fresh, const struct pick *p, json_t **out)
{
	json_t *j = NULL;
	int rc;

	if (strlen(path) >= CATALOG_PATH_MAX)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&cat.lock);
	if (!fresh && lookup(path, now_ms(), p, &rc, out)) {
		pthread_mutex_unlock(&cat.lock);
		return rc;
	}
	pthread_mutex_unlock(&cat.lock);
	rc = fetch(path, &j, NULL, 0);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	pthread_mutex_lock(&cat.lock);
	store(path, now_ms(), j);
	pthread_mutex_unlock(&cat.lock);
	if (rc < 0)
		return rc;
	if (p->key) { /* only the element: the answer itself is not the caller's */
		*out = pick(j, p);
		json_decref(j);
		return *out ? 0 : -ENOENT;
	}
	*out = j;
	return 0;
}

int catalog_get(const char *path, bool fresh, json_t **out)
{
	const struct pick all = {NULL, NULL};

	return get(path, fresh, &all, out);
}

int catalog_find(const char *path, const char *key, const char *name, bool fresh, json_t **out)
{
	const struct pick one = {key, name};

	return get(path, fresh, &one, out);
}
