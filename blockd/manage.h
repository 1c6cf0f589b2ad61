/* SPDX-License-Identifier: MIT */
/*
 * manage.h - the changes the control API and SIGHUP make to the store.
 * Thread-safe: changes are serialised by the manager's lock, which only
 * control threads and the signal thread take (never an event loop or a
 * pool thread); reads of the store need none of this.  Each call returns 0
 * or a negative errno with a one-line message in err: -EINVAL bad input,
 * -ENOENT missing, -EEXIST duplicate, -EBUSY in use (attached), anything
 * else a failure.
 */
#ifndef BLOCKD_MANAGE_H
#define BLOCKD_MANAGE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct manager;

int manage_new(struct store *st, struct manager **out);
void manage_free(struct manager *m);

int manage_create(struct manager *m, const char *name, uint64_t size, char *err, size_t errlen);
int manage_clone(struct manager *m, const char *from, const char *name, char *err, size_t errlen);
int manage_delete(struct manager *m, const char *name, char *err, size_t errlen);
int manage_resize(struct manager *m, const char *name, uint64_t size, char *err, size_t errlen);
int manage_snapshot_create(struct manager *m, const char *name, const char *snap, char *err,
                           size_t errlen);
int manage_snapshot_delete(struct manager *m, const char *name, const char *snap, char *err,
                           size_t errlen);
int manage_snapshot_restore(struct manager *m, const char *name, const char *snap, char *err,
                            size_t errlen);
/*
 * The bytes snapshot SNAP of NAME holds in its file (qcow_stored_bytes()),
 * counted once through a private image and remembered.  Not serialised
 * with the changes: it only keeps the snapshot from being deleted meanwhile.
 */
int manage_snapshot_stored(struct manager *m, const char *name, const char *snap, uint64_t *out,
                           char *err, size_t errlen);
/* POST .../recover: see store_recover(); a failed open is -ENXIO. */
int manage_recover(struct manager *m, const char *name, char *err, size_t errlen);
/* SIGHUP: see store_rescan(); returns how many volumes were added. */
int manage_rescan(struct manager *m);

#endif
