/* SPDX-License-Identifier: MIT */
/*
 * store_internal.h - the store's records, shared by store.c (registry,
 * exports, attachments) and manage.c (what the control API changes).
 *
 * Locking: st->lock guards the volume list, every volume's snapshot names,
 * views and attachments, and the busy counts.  An export_image's own lock
 * guards its qcow image.  Take st->lock first when both are needed.
 */
#ifndef BLOCKD_STORE_INTERNAL_H
#define BLOCKD_STORE_INTERNAL_H

#include <limits.h>
#include <time.h>

#include "store.h"

struct snap_view {
	char name[STORE_NAME_MAX + 1];
	struct export_image e;
	bool stored_known; /* stored: the snapshot's own bytes, counted once (it never changes) */
	uint64_t stored;
	struct snap_view *next;
};

/* Connections of one peer to one export. */
struct attachment {
	struct volume *vol;
	struct export_image *e;
	char export_name[2 * STORE_NAME_MAX + 2];
	char peer[STORE_PEER_MAX];
	bool read_only;
	unsigned connections;
	time_t since; /* wall clock, for the API */
	struct attachment *next;
};

struct volume {
	char name[STORE_NAME_MAX + 1];
	char description[STORE_NAME_MAX + 64];
	char path[PATH_MAX];
	struct export_image main;
	/* Names of the image's snapshots that are valid export names. */
	char (*snap_names)[STORE_NAME_MAX + 1];
	uint32_t n_snaps;
	struct snap_view *views;
	struct attachment *attachments;
	/* Lookups that dropped st->lock for a while: the volume must stay. */
	unsigned busy;
	struct volume_stats stats;
	struct volume *next;
};

struct store {
	pthread_mutex_t lock;
	char data_dir[PATH_MAX];
	char volumes_dir[PATH_MAX];
	char bases_dir[PATH_MAX];
	uint64_t cache_bytes;
	struct volume *volumes;
	size_t n_volumes;
};

int open_volume(const struct store *st, const char *name, struct volume **out);
void free_volume(struct volume *vol);
int load_snap_names(struct volume *vol);
struct volume *find_volume(struct store *st, const char *name, size_t len);
void link_volume(struct store *st, struct volume *vol);
bool volume_has_writer(const struct volume *vol);
/*
 * Bytes the snapshot SNAP of volume NAME occupies in its file (see
 * qcow_stored_bytes()); counted once while it is served, else each time.  -ENOENT when there is
 * no such snapshot, else 0 or -errno.  Only from the control thread, which
 * alone deletes snapshots and volumes.
 */
#define STORE_COUNT_CACHE_BYTES (256u << 10) /* L2 cache of an image opened just to count */
int store_snapshot_stored(struct store *st, const char *name, const char *snap, uint64_t *out);
int image_close(struct export_image *e, const char *what);
/* fsync of a folder, so that a create, rename or unlink in it is durable. */
int sync_dir(const char *path);

#endif
