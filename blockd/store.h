/* SPDX-License-Identifier: MIT */
/*
 * store.h - the volumes of a data directory, as the event loops, the pool,
 * the control API and the signal thread share them.  Who may call what,
 * and which lock guards which field, is written down in CONCURRENCY.md.
 *
 * Every DIR/volumes/NAME.qcow2 with a valid NAME is a volume.  It is opened
 * at start or when it appears (repairing what its dirty bit says), read
 * for what the API shows, and closed again.  It is open (its file locked
 * against other processes) only while something uses it: a client, a
 * control call, a snapshot being read; the first lookup opens it on the
 * pool, and VOLUME_IDLE_CLOSE_SEC after the last user has gone it is
 * closed cleanly, so idle volumes hold no descriptor and no cache.  One
 * whose last open failed is listed with the reason; every lookup or
 * call that needs it tries again.  A volume is reached three ways: read-write, the live volume
 * read-only (claiming nothing), or one of its internal snapshots read-only,
 * through a view opened on first use.  A volume has at most one writing
 * holder at a time: attachments of the holder that writes it share it,
 * another holder is refused.
 *
 * Volumes are counted references: the registry holds one while a volume is
 * listed, every attachment and every caller of store_get() one more.  The
 * last one frees it on the pool (closing a file can take long).
 */
#ifndef BLOCKD_STORE_H
#define BLOCKD_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "exec.h"
#include "image.h"
#include "names.h"

#define STORE_NAME_MAX   BLOCKD_NAME_MAX
#define STORE_HOLDER_MAX 64 /* "local" or an IP address */

struct store;
struct volume;
struct attachment;

/* Latency buckets of the metrics, upper bounds in microseconds (the last is +Inf). */
#define STATS_BUCKETS 12
extern const unsigned stats_bucket_us[STATS_BUCKETS - 1];

enum stats_op { STATS_READ, STATS_WRITE, STATS_FLUSH, STATS_OTHER, STATS_OPS };

/* Per-volume counters for /metrics, updated by the event loops (atomics, no lock). */
struct volume_stats {
	atomic_ullong bytes[STATS_OPS];
	atomic_ullong ops[STATS_OPS];
	atomic_ullong errors[STATS_OPS];
	atomic_ullong latency_us_sum[STATS_OPS];
	atomic_ullong latency[STATS_OPS][STATS_BUCKETS];
	/* Error lines logged: the second they were last allowed, and how many were left out. */
	atomic_llong log_second;
	atomic_uint log_dropped;
};

struct store_config {
	const char *data_dir;
	uint64_t cache_bytes; /* L2 cache per image; 0: the library default */
	struct exec *exec;    /* the pool: view opening, freeing volumes */
};

/*
 * Creates DIR/volumes and DIR/bases if needed, removes what interrupted
 * calls left there and opens every volume found.  0 or -errno.
 */
int store_open(const struct store_config *cfg, struct store **out);

/* Closes every volume cleanly (flush, dirty bit cleared); 0 or the first error. */
int store_close(struct store *st);

/* Once a second, any thread: queues the close of volumes idle long enough. */
void store_tick(struct store *st);

/* ------------------------------------------------------------------------
 * The event loops: none of these waits for I/O or for a lock held across I/O.
 */

enum store_access {
	STORE_READ_WRITE, /* the volume, claimed for writing by the holder */
	STORE_READ_LIVE,  /* the volume read-only, claiming nothing */
	STORE_SNAPSHOT,   /* a snapshot's view, read-only */
};

/* What a client asks for; the strings need not be NUL-terminated. */
struct store_target {
	const char *volume;
	size_t volume_len;
	const char *snapshot; /* STORE_SNAPSHOT only */
	size_t snapshot_len;
	enum store_access access;
};

struct store_target_info {
	uint64_t size;
	bool read_only;
};

/*
 * A lookup that waits for a snapshot view to open.  The caller owns the
 * struct and keeps it until ready() was called; the other fields are the
 * store's.  ready() runs on a pool thread once the view is open or failed
 * to; then store_wait_end() says how it went.
 */
struct store_wait {
	void (*ready)(struct store_wait *w);
	struct exec_job job;
	struct volume *vol;
	char snapshot[STORE_NAME_MAX + 1];
	int rc;
};

/*
 * Looks TARGET up for HOLDER.  0 and *out; -ENOENT (no such volume or
 * snapshot, or an invalid name); -EPERM (another holder writes the volume);
 * -EIO (the volume cannot be opened); -EINPROGRESS when the snapshot's view
 * must be opened first: W's ready() is called when it is, then
 * store_wait_end() and the lookup again.
 */
int store_lookup(struct store *st, const struct store_target *target, const char *holder,
                 struct store_target_info *out, struct store_wait *w);

/* After ready(): 0 when the view opened (ask again), else why not.  Lets go of W. */
int store_wait_end(struct store_wait *w);

/*
 * Looks TARGET up and attaches to it in one step; a writable target claims
 * the volume for HOLDER.  Errors as store_lookup(), with -EINPROGRESS and
 * W when the volume was closed again meanwhile; but a snapshot view that
 * is not open is -ENOENT (it was just opened by the lookup; if it is gone,
 * so is the snapshot).  Every attach is paired with a detach; while
 * attached, the volume and the image stay.
 */
int store_attach(struct store *st, const struct store_target *target, const char *holder,
                 struct store_target_info *out, struct attachment **att, struct store_wait *w);
void store_detach(struct attachment *att);
struct image *attachment_image(const struct attachment *att);
struct volume_stats *attachment_stats(const struct attachment *att);
const char *attachment_volume_name(const struct attachment *att);
/*
 * NULL, or why the attachment's connections are to be cut: the volume was
 * dropped (its file removed), or it is being recovered (its image reopened,
 * so nothing its clients were told before may be confirmed by a flush).
 */
const char *attachment_cut(const struct attachment *att);

/*
 * Entry INDEX of the targets a client may attach (every served volume and
 * its snapshots): 1 with the volume's name in VOL and, for a snapshot, its
 * name in SNAP (else SNAP is ""); 0 past the end.
 */
int store_list_entry(struct store *st, size_t index, char vol[STORE_NAME_MAX + 1],
                     char snap[STORE_NAME_MAX + 1]);

/* ------------------------------------------------------------------------
 * The control API and the signal thread: these may block.  The calls that
 * change the registry (store_adopt, store_remove, store_restore_link,
 * store_rescan, store_snapshots_changed, store_release_view) are
 * serialised by the caller (manage.c's lock).
 */

/* Volume NAME (any state), with a reference; -ENOENT. */
int store_get(struct store *st, const char *name, struct volume **out);
/* Lets go of a reference; any thread. */
void store_put(struct volume *vol);
/* Every listed volume, each with a reference: put each, then free(*out).  -ENOMEM. */
int store_get_all(struct store *st, struct volume ***out, size_t *n);

const char *volume_name(const struct volume *vol);
/* "ok", "fenced" (a failed write-back: see store_recover()) or "error" (its open failed). */
const char *store_state(struct volume *vol);
struct volume_stats *volume_stats(struct volume *vol);
/*
 * The volume's image, opened if it is not (blocking: the disk, the image
 * lock), and kept open until store_unuse().  0, or -errno with ERR.
 */
int store_use(struct volume *vol, struct image **im, char *err, size_t errlen);
void store_unuse(struct volume *vol);
/* The real path of the volume's backing file when it is one of DIR/bases, else "". */
void volume_base(struct volume *vol, char *out, size_t len);

struct store_snapshot {
	char *name, *id;
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t disk_size;
	bool stored_known; /* stored: bytes it holds in the file (qcow_stored_bytes()) */
	uint64_t stored;
};

struct store_holder {
	char holder[STORE_HOLDER_MAX];
	char target[2 * STORE_NAME_MAX + 4]; /* NAME, NAME:ro or NAME@SNAP */
	bool read_only;
	unsigned connections;
	time_t since;
};

/* A copy of what the API shows of a volume; store_info_free() it. */
struct store_info {
	char name[STORE_NAME_MAX + 1];
	const char *error; /* NULL when served, else why not */
	uint64_t size;
	uint64_t allocated; /* bytes the file occupies */
	time_t modified;
	char backing[4096]; /* canonical path of the backing file, or "" */
	size_t n_snapshots;
	struct store_snapshot *snapshots; /* with_snapshots only */
	bool fenced;                      /* a failed write-back fenced it: error_text says which */
	size_t n_holders;
	struct store_holder *holders;
	char error_text[512];
};
int store_info(struct volume *vol, bool with_snapshots, struct store_info *out);
void store_info_free(struct store_info *info);

/*
 * Opens DIR/volumes/NAME.qcow2 and lists it.  0 when it is served; -errno
 * when it cannot be opened (ERR says why, and it is listed with that
 * reason); -EEXIST when NAME is listed already.
 */
int store_adopt(struct store *st, const char *name, char *err, size_t errlen);

/*
 * Takes VOL out of the registry so that nothing can reach it any more,
 * unless something uses it: -EBUSY with who in ERR.  Its connections (none
 * now) would be cut.  The caller then removes its file and calls
 * store_removed(), or puts it back with store_restore_link().
 */
int store_remove(struct store *st, struct volume *vol, char *err, size_t errlen);
void store_restore_link(struct store *st, struct volume *vol);
/* The file of a removed volume is gone: freeing it writes nothing. */
void store_removed(struct volume *vol);

/*
 * SIGHUP: drops volumes whose file was removed or replaced (their
 * connections are cut), retries those that failed to open, adopts new
 * files.  Never touches anything but NAME.qcow2 files.  Returns how many
 * volumes it added.
 */
int store_rescan(struct store *st);

/*
 * Reopens VOL (checked and repaired as at start) after a failed
 * write-back fenced it, or retries a volume whose open failed: its
 * connections are cut first (they reconnect to the reopened volume).
 * 0, or -errno with ERR.  Serialised by the caller (manage.c's lock).
 */
int store_recover(struct volume *vol, char *err, size_t errlen);

/* True when some holder has VOL attached read-write; WHO gets its name. */
bool store_has_writer(struct volume *vol, char *who, size_t wholen);
/* True when VOL is attached at all; WHO gets one holder's name. */
bool store_attached(struct volume *vol, char *who, size_t wholen);

/*
 * With VOL's image lock held, after a snapshot was made, deleted or the
 * image reverted: reads the snapshot list again for lookups and the API.
 */
void store_snapshots_changed(struct volume *vol);

/*
 * Before deleting snapshot SNAP of VOL: closes its view if nobody uses it;
 * -EBUSY (WHO says why) when a client has it attached or it is being
 * opened, copied or counted.
 */
int store_release_view(struct volume *vol, const char *snap, char *who, size_t wholen);

/*
 * Opens snapshot SNAP of VOL as a private read-only image (a small cache
 * of CACHE_BYTES), for work that reads a whole snapshot (a clone's copy,
 * counting its bytes) without holding up clients of the served view.  The
 * snapshot cannot be deleted until store_snapshot_close().  0, -ENOENT,
 * or -errno with ERR.
 */
int store_snapshot_open(struct volume *vol, const char *snap, uint64_t cache_bytes,
                        struct image *out, char *err, size_t errlen);
void store_snapshot_close(struct volume *vol, const char *snap, struct image *im);

/* Remembers the stored bytes of snapshot ID of VOL (a snapshot never changes). */
void store_snapshot_stored(struct volume *vol, const char *id, uint64_t stored);

/* True when a listed volume's backing file is BASE (a real path). */
bool store_base_used(struct store *st, const char *base);

/* Data directory folders. */
const char *store_volumes_dir(const struct store *st);
const char *store_bases_dir(const struct store *st);

/* fsync of a folder, so that a create, rename or unlink in it is durable. */
int sync_dir(const char *path);

#endif
