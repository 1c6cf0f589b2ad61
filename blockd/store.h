/* SPDX-License-Identifier: MIT */
/*
 * store.h - the volumes of a data directory and their exports.
 *
 * Every DIR/volumes/NAME.qcow2 with a valid NAME is opened read-write at
 * start (repairing what its dirty bit says) and stays open, locked against
 * other processes, until shutdown.  Export NAME is the volume; NAME@SNAP
 * is a read-only view of one of its internal snapshots, opened on first
 * use.  A volume has at most one writing host at a time: connections from
 * the peer that holds it share it (multi-conn), another peer is refused.
 * NAME:ro is the volume read-only: it claims nothing, so any peer may read
 * a volume that another one writes (blockfs does).
 */
#ifndef BLOCKD_STORE_H
#define BLOCKD_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "proto.h"

#define STORE_NAME_MAX BLOCKD_NAME_MAX
#define STORE_PEER_MAX 64 /* "local" or an IP address */

/*
 * One open image behind an export.  lock serialises every call into the
 * qcow library on img.  The event loop maps requests with
 * pthread_mutex_trylock() and, on a hit, does the data I/O itself on fd
 * (counted in fast_inflight); anything else runs on an executor thread that
 * holds lock for the whole call and, before an operation that can free
 * clusters, waits until fast_inflight drops to zero, so that no in-flight
 * I/O can land on a cluster after it was given away.
 */
struct export_image {
	pthread_mutex_t lock;
	struct qcow_image *img;
	int fd;  /* buffered */
	int dfd; /* O_DIRECT for large aligned writes, or -1 (owned by img's io context) */
	bool read_only;
	bool has_backing;
	uint64_t size;
	atomic_uint fast_inflight;
};

/* Latency buckets of the metrics, upper bounds in microseconds (the last is +Inf). */
#define STATS_BUCKETS 12
extern const unsigned stats_bucket_us[STATS_BUCKETS - 1];

enum stats_op { STATS_READ, STATS_WRITE, STATS_FLUSH, STATS_OTHER, STATS_OPS };

/* Per-volume counters for /metrics, updated by the event loops. */
struct volume_stats {
	atomic_ullong bytes[STATS_OPS];
	atomic_ullong ops[STATS_OPS];
	atomic_ullong errors[STATS_OPS];
	atomic_ullong latency_us_sum[STATS_OPS];
	atomic_ullong latency[STATS_OPS][STATS_BUCKETS];
};

struct volume;
struct store;
struct attachment;

/*
 * Waits until no ring I/O mapped before is in flight on e; the caller holds
 * e->lock, so nothing new can be mapped.  Needed before anything that frees
 * clusters or makes them shared (discard, zeroing, snapshots).
 */
void export_quiesce(struct export_image *e);

struct store_config {
	const char *data_dir;
	uint64_t cache_bytes; /* L2 cache per image; 0: the library default */
};

/* True when NAME (len bytes) is a valid volume or snapshot name. */
bool store_valid_name(const char *name, size_t len);

/* Creates DIR/volumes and DIR/bases if needed and opens every volume found. */
int store_open(const struct store_config *cfg, struct store **out);

/* Opens volumes that appeared since the last scan; returns how many. */
int store_rescan(struct store *st);

/* Closes every image cleanly (flush, dirty bit cleared); 0 or the first error. */
int store_close(struct store *st);

/*
 * Export lookup for proto (OPT_INFO, OPT_GO): fills *out for NAME or
 * NAME@SNAP.  -ENOENT for unknown or invalid names, -EPERM when PEER may
 * not write it because another peer holds it.
 */
int store_lookup(struct store *st, const char *name, const char *peer, struct proto_export *out);

/*
 * Looks NAME up and attaches a connection from PEER to it, in one step: a
 * writable export claims the volume for PEER.  Same errors as
 * store_lookup().  Every successful attach is paired with a detach; while
 * attached the volume and export stay.
 */
int store_attach(struct store *st, const char *name, const char *peer, struct proto_export *out,
                 struct attachment **att);
void store_detach(struct store *st, struct attachment *att);
struct export_image *attachment_image(const struct attachment *att);
struct volume_stats *attachment_stats(struct attachment *att);

/* NBD_OPT_LIST entry INDEX: 1 and the name in buf, 0 past the end. */
int store_list(struct store *st, size_t index, char *buf, size_t buflen);

#endif
