/* SPDX-License-Identifier: MIT */
/*
 * image_file.h - one image file of either format, raw or qcow2, behind one
 * small interface, so that the image commands read, write and map both
 * the same way.  qcow2 goes through the qcow library (qcow.h); raw files
 * through plain POSIX calls.
 *
 * Every function that fails has already printed its one-line error (see
 * blockctl.h) and returns a negative errno; callers only pass it up.
 * Not thread-safe.
 */
#ifndef BLOCKD_TOOLS_IMAGE_FILE_H
#define BLOCKD_TOOLS_IMAGE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow.h"

enum image_format {
	IMAGE_FORMAT_AUTO, /* probe: qcow2 magic, else raw */
	IMAGE_FORMAT_RAW,
	IMAGE_FORMAT_QCOW2,
};

/* Parses "raw" or "qcow2". Returns 0 or -EINVAL. */
int image_format_parse(const char *name, enum image_format *format);
const char *image_format_name(enum image_format format);

struct image_file {
	const char *path;         /* not owned */
	enum image_format format; /* RAW or QCOW2 once open */
	struct qcow_image *qcow;  /* QCOW2 */
	int fd;                   /* RAW; -1 otherwise */
	bool writable;
	uint64_t size_bytes; /* virtual size */
};

enum {
	IMAGE_OPEN_WRITE = 1u << 0,
	IMAGE_OPEN_NO_BACKING = 1u << 1, /* qcow2: leave the backing chain closed */
	IMAGE_OPEN_REPAIR = 1u << 2,     /* qcow2, with WRITE: open despite the corrupt bit */
	IMAGE_OPEN_NO_PROBE = 1u << 3,   /* qcow2: refuse backing files of unrecorded format */
};

/*
 * Opens path as format (AUTO probes it).  Refuses anything but a regular
 * file or a block device, without blocking on a FIFO.
 */
int image_file_open(struct image_file *f, const char *path, enum image_format format,
                    unsigned flags);

/*
 * Opens a qcow2 image (format AUTO or QCOW2) read-only, with its backing
 * chain, showing the contents and size it had when snapshot (a name, or
 * failing that an id) was taken.  A raw file has no snapshots.
 */
int image_file_open_snapshot(struct image_file *f, const char *path, enum image_format format,
                             const char *snapshot);

/* Creates a sparse raw file of size_bytes; refuses an existing path. */
int image_file_create_raw(struct image_file *f, const char *path, uint64_t size_bytes);

/* Creates a qcow2 image (opts->path) and opens it writable without its backing chain. */
int image_file_create_qcow2(struct image_file *f, const struct qcow_create_opts *opts);

/* Reads or writes len bytes at off, which must lie within the virtual size. */
int image_file_read(struct image_file *f, void *buf, uint64_t off, size_t len);
int image_file_write(struct image_file *f, const void *buf, uint64_t off, size_t len);

/*
 * qcow2 only: writes one whole cluster at off (cluster-aligned) compressed,
 * as qcow_write_compressed() does; len is the cluster size, or what is
 * left of the disk for its last cluster.
 */
int image_file_write_compressed(struct image_file *f, const void *buf, uint64_t off, size_t len);

/*
 * Describes the run starting at off, at most len (> 0) bytes long, as
 * qcow_block_status() does.  A raw file reports holes (SEEK_HOLE) as
 * zero and everything else as data, at depth 0.  The extent returned
 * always starts at off and is 1..len bytes long.
 */
int image_file_status(struct image_file *f, uint64_t off, uint64_t len, struct qcow_extent *ext);

/* Flushes a writable image and closes it. */
int image_file_close(struct image_file *f);

/* Closes without flushing, on a failure path (the file is about to be removed). */
void image_file_abandon(struct image_file *f);

/* Bytes the file takes on its file system (st_blocks). */
int image_file_disk_usage(const char *path, uint64_t *bytes);

#endif
