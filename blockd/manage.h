/* SPDX-License-Identifier: MIT */
/*
 * manage.h - changes the control API makes to the store.  Called from the
 * control thread only (one call at a time); safe while the event loops
 * serve.  Each returns 0 or a negative errno with a one-line message in
 * err: -EINVAL bad input, -ENOENT missing, -EEXIST duplicate, -EBUSY in
 * use (attached), anything else a failure.
 */
#ifndef BLOCKD_MANAGE_H
#define BLOCKD_MANAGE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Largest volume: 1 PiB, far past any disk and inside the L1 table cap of 64 KiB clusters. */
#define MANAGE_MAX_VOLUME_BYTES (1ull << 50)

int manage_create(struct store *st, const char *name, uint64_t size, char *err, size_t errlen);
int manage_clone(struct store *st, const char *from, const char *name, char *err, size_t errlen);
int manage_delete(struct store *st, const char *name, char *err, size_t errlen);
int manage_resize(struct store *st, const char *name, uint64_t size, char *err, size_t errlen);
int manage_snapshot_create(struct store *st, const char *name, const char *snap, char *err,
                           size_t errlen);
int manage_snapshot_delete(struct store *st, const char *name, const char *snap, char *err,
                           size_t errlen);
int manage_snapshot_restore(struct store *st, const char *name, const char *snap, char *err,
                            size_t errlen);

#endif
