/* SPDX-License-Identifier: MIT */
/*
 * qcow.h - qcow2 version 3 volume images: create, open, read, write, map.
 *
 * The library owns no threads and touches no socket: every byte of the host
 * file goes through a struct qcow_io_ops table supplied by the caller (or the
 * POSIX table below), so the daemon can drive it through io_uring and tests
 * can record writes or inject faults.
 *
 * Conventions: functions return 0 or a negative errno and write their
 * out-parameters only on success.  A struct qcow_image is not thread-safe;
 * the caller serialises calls on one image.  After a failed call,
 * qcow_last_error() says what went wrong in one line that names the file.
 *
 * Crash safety: metadata is cached and written back on
 * qcow_flush(), on cache pressure and on qcow_close(), always in the order
 * data -> refcount blocks -> L2 tables -> L1/header, with a sync between the
 * steps, so that a crash can leak clusters but never make an L2 entry point
 * at a cluster whose refcount is not on disk.  Freed clusters are only
 * reused after the mapping that dropped them is on disk.
 *
 * Full disks: host space for new clusters is reserved (qcow_io_ops.allocate)
 * before they are counted or written, so a write that needs space the file
 * system does not have fails at once with -ENOSPC, having allocated nothing,
 * and the image stays writable; nothing written back later needs new space.
 * Only a failed sync or metadata write fences an image (-EIO until it is
 * reopened), since what it covered may be lost.
 */
#ifndef BLOCKD_QCOW_H
#define BLOCKD_QCOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qcow_image;
struct qcow_check_result;

/* Default metadata cache sizes: 32 MiB of L2 tables maps 256 GiB at 64 KiB clusters. */
#define QCOW_DEFAULT_L2_CACHE_BYTES       (32ull << 20)
#define QCOW_DEFAULT_REFCOUNT_CACHE_BYTES (4ull << 20)

/*
 * Host file operations.  Each returns 0 or -errno.  pread must fill the
 * whole buffer; bytes past the end of the file read as zeros.  pwrite writes
 * the whole buffer (extending the file if needed).  punch_hole deallocates a
 * range that must then read as zeros; it may return -EOPNOTSUPP.  allocate
 * reserves disk space for a range, without changing the file's size or what
 * it reads, so that writing there later cannot fail for lack of space
 * (-ENOSPC or -EDQUOT when there is none); it may be NULL or return
 * -EOPNOTSUPP, and then a full disk shows only when a write fails.  close
 * releases ctx and may be NULL.
 */
struct qcow_io_ops {
	int (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
	int (*pwrite)(void *ctx, const void *buf, size_t len, uint64_t off);
	int (*sync)(void *ctx);
	int (*punch_hole)(void *ctx, uint64_t off, uint64_t len);
	int (*allocate)(void *ctx, uint64_t off, uint64_t len);
	int (*truncate)(void *ctx, uint64_t size);
	int (*get_size)(void *ctx, uint64_t *size);
	void (*close)(void *ctx);
};

/* POSIX implementation of qcow_io_ops; ctx comes from qcow_posix_open(). */
extern const struct qcow_io_ops qcow_posix_ops;

/*
 * Opens PATH for the POSIX ops.  O_CREAT in open_flags creates the file
 * (mode 0644), O_EXCL refuses an existing one.  Writable opens take an
 * exclusive advisory lock and read-only opens a shared one, so two writers
 * never open one image; a conflict returns -EAGAIN.
 */
int qcow_posix_open(const char *path, int open_flags, void **ctx);

/*
 * The locking qcow_posix_open() does, for a descriptor the caller opened:
 * a flock (exclusive when writable, else shared) and qemu's byte-range
 * locks, so an image qemu writes is refused and qemu refuses ours.
 * -EAGAIN when another process holds the image in a conflicting way.
 */
int qcow_posix_lock(int fd, bool writable);

/*
 * Wraps FD, which the caller opened (and locked, if it wants a lock), for
 * the POSIX ops; the context owns FD from then on.  Returns 0 or -ENOMEM
 * (FD is then left open).
 */
int qcow_posix_adopt(int fd, void **ctx);

enum {
	QCOW_OPEN_RDWR = 1u << 0,       /* writable; refused for v2 images */
	QCOW_OPEN_NO_BACKING = 1u << 1, /* do not open the backing chain */
	QCOW_OPEN_REPAIR = 1u << 2,     /* with RDWR: accept the corrupt bit, to repair */
	/*
	 * A backing file whose format the image does not record is refused,
	 * never probed: a raw disk its guest wrote a qcow2 header into would
	 * otherwise be read as qcow2 and name any file as its own backing file
	 * (qemu's CVE-2008-2004).  Applies to the whole chain.
	 */
	QCOW_OPEN_NO_PROBE = 1u << 3,
};

struct qcow_open_opts {
	const char *path;              /* for messages and relative backing names */
	const struct qcow_io_ops *ops; /* NULL: open path with qcow_posix_ops */
	void *ctx;                     /* ops context; owned by the image on success */
	unsigned flags;                /* QCOW_OPEN_* */
	uint64_t l2_cache_bytes;       /* 0: QCOW_DEFAULT_L2_CACHE_BYTES */
	uint64_t refcount_cache_bytes; /* 0: QCOW_DEFAULT_REFCOUNT_CACHE_BYTES */
	const char *snapshot;          /* non-NULL: show this snapshot (name or id), read-only */
	/*
	 * NULL, or a NULL-terminated list of folders: every file of the
	 * backing chain must resolve, symlinks followed, to a regular file
	 * inside one of them, or the open fails with -EPERM before that file
	 * is opened.  The resolved file is opened without following links.
	 */
	const char *const *backing_dirs;
	/*
	 * NULL, or where a successful writable open says what it repaired:
	 * if the dirty bit was set, what a check found before the refcounts
	 * were rebuilt (leaks freed, corruptions fixed) with rebuilt = 1;
	 * else all zeros.
	 */
	struct qcow_check_result *repaired;
};

/*
 * Opens an image and its backing chain.  Validates the header and the
 * tables it points at; refuses encryption, external data files, extended L2
 * entries, unknown incompatible features and the corrupt bit with a message
 * naming the feature.  A writable open of an image with the dirty bit set
 * checks it and rebuilds its refcounts first (opts->repaired says what it
 * found).  On failure a one-line message is written to err (if errlen > 0)
 * and, if opts->ctx was supplied, it is NOT closed.
 */
int qcow_open(const struct qcow_open_opts *opts, struct qcow_image **out, char *err, size_t errlen);

/*
 * Flushes, clears the dirty bit, closes the backing chain and frees img.
 * Returns the first error met; img is freed either way.
 */
int qcow_close(struct qcow_image *img);

/* Frees img without writing anything (what a crash would leave). */
void qcow_abandon(struct qcow_image *img);

enum qcow_compression {
	QCOW_COMPRESSION_DEFLATE = 0,
	QCOW_COMPRESSION_ZSTD = 1,
};

struct qcow_create_opts {
	const char *path;              /* the new image; also base for relative backing */
	const struct qcow_io_ops *ops; /* NULL: create path with qcow_posix_ops */
	void *ctx;                     /* ops context, an empty file; not closed */
	uint64_t size_bytes;           /* 0 with a backing file: the backing file's size */
	uint32_t cluster_size;         /* 0: 64 KiB; a power of two, 512 B .. 2 MiB */
	unsigned refcount_bits;        /* 0: 16; a power of two, 1 .. 64 */
	const char *backing_file;      /* NULL: none; stored as given */
	const char *backing_format;    /* "qcow2", "raw" or NULL (probe) */
	bool lazy_refcounts;
	enum qcow_compression compression;
};

/*
 * Creates a v3 image.  Refuses to overwrite an existing file.  The size is
 * rounded up to a multiple of 512 bytes, as qemu-img create does.
 */
int qcow_create(const struct qcow_create_opts *opts, char *err, size_t errlen);

/*
 * Guest I/O, synchronous.  Ranges must lie within the virtual size.  A
 * write that finds no room fails with -ENOSPC or -EDQUOT and gives back
 * whatever it had allocated; the range may then read partly old, partly
 * new, and the image takes writes again once there is space.
 */
int qcow_read(struct qcow_image *img, void *buf, uint64_t off, size_t len);
int qcow_write(struct qcow_image *img, const void *buf, uint64_t off, size_t len);

enum {
	/* The range may be deallocated if it still reads as zeros. */
	QCOW_ZERO_MAY_UNMAP = 1u << 0,
	/* Fail with -ENOTSUP unless it can be done in metadata alone. */
	QCOW_ZERO_FAST = 1u << 1,
};
int qcow_write_zeroes(struct qcow_image *img, uint64_t off, uint64_t len, unsigned flags);

/*
 * Discards whole clusters inside [off, off+len): they read as zeros
 * afterwards (a zero cluster hides the backing file) and their host space
 * is released.  Partial clusters at either end are left untouched.
 */
int qcow_discard(struct qcow_image *img, uint64_t off, uint64_t len);

/*
 * Writes one whole guest cluster compressed with the image's compression
 * type (zstd or deflate) when that makes it smaller, else as a normal
 * cluster.  off must be cluster-aligned and len the cluster size (or what
 * is left of the disk for its last cluster).  Meant for sequential
 * writers such as convert; compressed clusters are packed back to back.
 */
int qcow_write_compressed(struct qcow_image *img, const void *buf, uint64_t off, size_t len);

/* Makes every completed write and all metadata durable. */
int qcow_flush(struct qcow_image *img);

/*
 * Grows or shrinks the virtual size, a multiple of 512 bytes; shrinking
 * needs no snapshots.
 */
int qcow_resize(struct qcow_image *img, uint64_t new_size);

enum {
	QCOW_EXTENT_DATA = 1u << 0, /* data stored at depth (not a zero cluster) */
	QCOW_EXTENT_ZERO = 1u << 1, /* reads as zeros */
};

struct qcow_extent {
	uint64_t offset;
	uint64_t length;
	unsigned flags; /* QCOW_EXTENT_* */
	int depth;      /* 0: this image, n: n-th backing file, -1: nowhere */
};

/*
 * Describes the longest run starting at off (at most len bytes) whose
 * clusters share flags and depth.
 */
int qcow_block_status(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_extent *ext);

/*
 * Bytes of the image's view (the volume, or the snapshot it was opened on)
 * whose data is stored in this file rather than a backing file or as
 * zeros, cluster-granular: what the view really occupies.  0 or -errno.
 */
int qcow_stored_bytes(struct qcow_image *img, uint64_t *out);

/*
 * Non-blocking mapping for event-loop callers.  qcow_map_cached() describes
 * the run at off from cached metadata only.  It returns -EAGAIN with
 * *need_table set to the host offset of an L2 table that must be read first
 * (read cluster_size bytes there, then call qcow_cache_insert_l2()).
 */
enum qcow_map_kind {
	QCOW_MAP_DATA,        /* host_offset holds the bytes */
	QCOW_MAP_ZERO,        /* reads as zeros in this image */
	QCOW_MAP_UNALLOCATED, /* falls through to the backing file */
	QCOW_MAP_COMPRESSED,  /* one compressed cluster */
};

enum qcow_map_need {
	QCOW_NEED_NOTHING,  /* the request can go straight to host_offset */
	QCOW_NEED_ALLOCATE, /* a write needs allocation or copy-on-write first */
};

struct qcow_map {
	uint64_t guest_offset;
	uint64_t length;
	enum qcow_map_kind kind;
	uint64_t host_offset;    /* DATA: the host byte matching guest_offset */
	enum qcow_map_need need; /* for a write of this run */
};

int qcow_map_cached(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_map *map,
                    uint64_t *need_table);
int qcow_cache_insert_l2(struct qcow_image *img, uint64_t table_offset, const void *table);

/*
 * Internal snapshots.  Create, delete and revert need a writable v3 image
 * and are crash-safe: after a crash the image has the snapshot whole or
 * not at all (at worst with leaked clusters).  A snapshot is named by its
 * name or, failing that, its id.  Reading one without reverting: open the
 * image with qcow_open_opts.snapshot.
 */
struct qcow_snapshot_info {
	char id[128];
	char name[1024];
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_ns;
	uint64_t vm_state_bytes;
	uint64_t disk_size_bytes;
};

uint32_t qcow_snapshot_count(const struct qcow_image *img);
/* Describes snapshot number index (0 .. count-1); -ENOENT past the end. */
int qcow_snapshot_get(const struct qcow_image *img, uint32_t index,
                      struct qcow_snapshot_info *info);
/* -EEXIST if the name is taken; names are 1 to 1023 bytes. */
int qcow_snapshot_create(struct qcow_image *img, const char *name);
int qcow_snapshot_delete(struct qcow_image *img, const char *name);
/* The active image becomes the snapshot's contents and size; the snapshot stays. */
int qcow_snapshot_revert(struct qcow_image *img, const char *name);

struct qcow_info {
	uint32_t version;
	uint64_t size_bytes;
	uint32_t cluster_size;
	unsigned refcount_bits;
	uint32_t l1_size;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	bool lazy_refcounts;
	bool dirty;
	bool read_only;
	enum qcow_compression compression;
	uint32_t nb_snapshots;
	uint64_t file_size_bytes;
	char backing_file[1024]; /* as stored in the image; "" if none */
	char backing_format[32]; /* "" if not recorded */
	char backing_path[4096]; /* resolved path of the backing file; "" if none */
	int chain_depth;         /* number of backing files below this image */
};

void qcow_get_info(const struct qcow_image *img, struct qcow_info *info);

/* The backing image of img, or NULL.  Owned by img. */
struct qcow_image *qcow_backing(const struct qcow_image *img);

struct qcow_check_result {
	uint64_t corruptions;        /* refcount below references, bad entries, bad COPIED */
	uint64_t leaks;              /* clusters with a refcount but no reference */
	uint64_t check_errors;       /* I/O errors while checking */
	uint64_t allocated_clusters; /* of the active image, as qemu-img counts them */
	uint64_t image_end_offset;
	uint64_t rebuilt; /* 1 if repair rebuilt the refcount structure */
};

enum {
	QCOW_REPAIR_LEAKS = 1u << 0, /* drop refcounts nothing references */
	QCOW_REPAIR_ALL = 1u << 1,   /* also fix COPIED flags and rebuild refcounts */
};

/*
 * Walks every reachable structure, counts references per host cluster and
 * compares with the stored refcounts, like qemu-img check.  With repair
 * flags (writable images only) the problems are fixed (leaks in place,
 * anything else by rebuilding the refcount structure), the corrupt bit is
 * cleared if nothing is left, and res describes what remains afterwards.
 * Returns 0 when the check completed, whatever it found.
 */
int qcow_check(struct qcow_image *img, unsigned repair, struct qcow_check_result *res);

/* The message of the last failed call on img. */
const char *qcow_last_error(const struct qcow_image *img);

/*
 * 0, or the -errno of the failed write-back or sync that fenced the image:
 * what it did not save may be lost, so every later flush fails until the
 * image is closed and opened again (which repairs what the dirty bit says).
 */
int qcow_fenced(const struct qcow_image *img);

/* True if buf starts with the qcow2 magic (needs at least 4 bytes). */
bool qcow_probe(const void *buf, size_t len);

#endif
