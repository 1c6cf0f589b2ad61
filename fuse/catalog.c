/* SPDX-License-Identifier: MIT */
/*
 * catalog.c - blockd's control API seen from blockfs (see catalog.h).
 * Each GET uses its own curl handle, so FUSE threads never share one; the
 * cache is a small array under one mutex and hands out deep copies, so no
 * JSON value is shared between threads.
 */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"

struct entry {
	char path[CATALOG_PATH_MAX];
	json_t *value; /* NULL for a cached 404 */
	int64_t at_ms; /* 0: empty slot */
};

static struct {
	char control_path[PATH_MAX];
	pthread_mutex_t lock;
	struct entry entries[CATALOG_ENTRIES];
} cat = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct body {
	char *data;
	size_t len;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct body *b = user;
	size_t n = size * nmemb;
	char *grown;

	if (n > CATALOG_MAX_REPLY - b->len)
		return 0; /* fails the transfer */
	grown = realloc(b->data, b->len + n);
	if (!grown)
		return 0;
	memcpy(grown + b->len, ptr, n);
	b->data = grown;
	b->len += n;
	return n;
}

/* One GET: 0 and *out, -ENOENT on 404, -EIO otherwise (reason in err when given). */
static int fetch(const char *path, json_t **out, char *err, size_t errlen)
{
	char url[CATALOG_PATH_MAX + 32], cerr[CURL_ERROR_SIZE] = "";
	struct body b = {0};
	CURL *curl = curl_easy_init();
	CURLcode rc = CURLE_OK;
	long status = 0, os_errno = 0;
	json_t *j = NULL;

	if (!curl)
		return -ENOMEM;
	snprintf(url, sizeof(url), "http://localhost%s", path);
	if (curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, cat.control_path) ||
	    curl_easy_setopt(curl, CURLOPT_URL, url) ||
	    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L) ||
	    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) ||
	    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*") ||
	    curl_easy_setopt(curl, CURLOPT_TIMEOUT, CATALOG_TIMEOUT_S) ||
	    curl_easy_setopt(curl, CURLOPT_USERAGENT, "blockfs") ||
	    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr) ||
	    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data) ||
	    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b))
		rc = CURLE_FAILED_INIT;
	if (rc == CURLE_OK)
		rc = curl_easy_perform(curl);
	if (rc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	else
		curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK) {
		/* In words about the socket: curl's own would speak of "localhost port 80". */
		if (err && rc == CURLE_COULDNT_CONNECT)
			snprintf(err, errlen, "cannot reach blockd at %s: %s", cat.control_path,
			         strerror(os_errno ? (int)os_errno : ECONNREFUSED));
		else if (err)
			snprintf(err, errlen, "talking to blockd at %s: %s", cat.control_path,
			         cerr[0] ? cerr : curl_easy_strerror(rc));
		free(b.data);
		return -EIO;
	}
	if (status == 200 && b.len > 0)
		j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, NULL);
	free(b.data);
	if (status == 404)
		return -ENOENT;
	if (!json_is_object(j)) {
		if (err)
			snprintf(err, errlen, "blockd at %s answered %s %ld", cat.control_path,
			         path, status);
		json_decref(j);
		return -EIO;
	}
	*out = j;
	return 0;
}

int catalog_open(const char *control_path, char *err, size_t errlen)
{
	json_t *j;
	int rc;

	if (strlen(control_path) >= sizeof(cat.control_path)) {
		snprintf(err, errlen, "%s: path too long", control_path);
		return -ENAMETOOLONG;
	}
	snprintf(cat.control_path, sizeof(cat.control_path), "%s", control_path);
	if (curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return -ENOMEM;
	}
	rc = fetch("/v1/volumes", &j, err, errlen);
	if (rc == 0)
		json_decref(j);
	else if (rc == -ENOENT)
		snprintf(err, errlen, "%s does not serve blockd's control API", control_path);
	if (rc < 0)
		curl_global_cleanup();
	return rc < 0 ? -EIO : 0;
}

void catalog_close(void)
{
	for (unsigned i = 0; i < CATALOG_ENTRIES; i++)
		json_decref(cat.entries[i].value);
	memset(cat.entries, 0, sizeof(cat.entries));
	curl_global_cleanup();
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
