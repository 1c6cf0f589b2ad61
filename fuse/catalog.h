/* SPDX-License-Identifier: MIT */
/*
 * catalog.h - what blockd holds, as its control API tells it: GET requests
 * over the control socket (common's ctlclient.h), answers kept for
 * CATALOG_TTL_MS, so that a burst of lookups (ls -l) costs one
 * request per path and a new volume or snapshot shows up within that time.
 */
#ifndef BLOCKD_FUSE_CATALOG_H
#define BLOCKD_FUSE_CATALOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CATALOG_TTL_MS    1000 /* how stale a listing may be */
#define CATALOG_ENTRIES   64   /* paths kept; the oldest goes first */
#define CATALOG_TIMEOUT_S 30L  /* a whole request, connect included */
#define CATALOG_MAX_REPLY (4u << 20)
#define CATALOG_PATH_MAX  320

/*
 * Starts talking to the control socket at CONTROL_PATH and checks that
 * blockd answers there; 0, or -errno with the reason in ERR.
 */
int catalog_open(const char *control_path, char *err, size_t errlen);
void catalog_close(void);

/*
 * GET PATH ("/v1/volumes", "/v1/volumes/vm1", ...), at most CATALOG_TTL_MS
 * old unless FRESH.  0 and *out (the caller's own copy: json_decref() it),
 * -ENOENT when blockd answered 404, -EIO when it cannot be reached or its
 * answer is not a JSON object, -ENOMEM.
 */
int catalog_get(const char *path, bool fresh, json_t **out);

/*
 * Like catalog_get(), but only the element of the answer's array KEY whose
 * "name" is NAME (-ENOENT when there is none): a lookup in a long listing
 * copies one entry, not the listing.
 */
int catalog_find(const char *path, const char *key, const char *name, bool fresh, json_t **out);

#endif
