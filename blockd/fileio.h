/* SPDX-License-Identifier: MIT */
/*
 * fileio.h - the qcow_io_ops blockd gives the library for a volume file.
 *
 * Two descriptors of one file: the served one (buffered, locked by the
 * store) and an O_DIRECT one.  Large page-aligned writes go around the page
 * cache, which on a busy host is the slower path for bulk data; everything
 * else (metadata, small writes, every read) goes through it.  Linux keeps
 * the two coherent: a direct write flushes and drops the cached pages of
 * its range.  fdatasync on the buffered descriptor covers both.
 */
#ifndef BLOCKD_FILEIO_H
#define BLOCKD_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow.h"

/* Alignment of buffer, offset and length for the O_DIRECT descriptor. */
#define FILEIO_DIRECT_ALIGN 4096u
/* Writes at least this large go direct when aligned. */
#define FILEIO_DIRECT_MIN (64u << 10)

extern const struct qcow_io_ops fileio_ops;

/*
 * A context for fileio_ops over the file open as FD (not taken: the
 * context dups it).  *direct_fd gets the O_DIRECT descriptor, or -1 when
 * the file system refuses O_DIRECT; it stays owned by the context.
 */
int fileio_open(int fd, void **ctx, int *direct_fd);

/* True when a write of len bytes from buf at off may use the direct descriptor. */
bool fileio_direct_ok(const void *buf, uint64_t off, size_t len);

#endif
