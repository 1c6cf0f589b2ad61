/* SPDX-License-Identifier: MIT */
/*
 * nbdconn.h - blockfs's NBD connections to blockd, over its unix socket,
 * made and used through common's NBD client (nbdclient.h, libnbd).
 *
 * An nbd_export is one export (NAME, NAME:ro or NAME@SNAP) with a small
 * pool of connections that the open files of that export share: a request
 * takes an idle connection (or opens one, up to NBDCONN_POOL_MAX) and
 * carries one request at a time on it, so FUSE threads run in parallel
 * without a reconnect per read.  The last nbd_export_put() disconnects
 * them all, so that blockd's attachment ends with the last open file.
 *
 * A connection that breaks (blockd stopped or killed, a reply that breaks
 * the protocol, no answer within NBDCONN_TIMEOUT_S) is dropped and the
 * request tried once more on a new one; when that fails too the caller
 * gets -EIO.  If writes not yet covered by a FLUSH were on a dropped
 * connection, they may be lost: the export's error sequence
 * (nbd_export_errseq()) moves on, so that each open file can report it at
 * its next fsync, once, as Linux reports a failed write-back.
 *
 * Every function is thread-safe.
 */
#ifndef BLOCKD_FUSE_NBDCONN_H
#define BLOCKD_FUSE_NBDCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBDCONN_POOL_MAX  4  /* connections per export: the kernel sends a few reads at once */
#define NBDCONN_TIMEOUT_S 30 /* a request without an answer for this long breaks the connection */

struct nbd_export;

/*
 * The export NAME at the unix socket SOCKET_PATH, shared with the open
 * files that already have it if its size is SIZE (0: any size; a volume
 * grown since gets a new export).  A new one opens its first connection
 * here, so a refusal shows at open.  *size_bytes gets the size the server
 * said.  -ENOENT (no such export), -EPERM (refused: another host writes the
 * volume), -EIO (cannot reach blockd, no answer within NBDCONN_TIMEOUT_S,
 * or it broke the protocol), -ENAMETOOLONG, -ENOMEM.
 */
int nbd_export_get(const char *socket_path, const char *name, uint64_t size,
                   struct nbd_export **out, uint64_t *size_bytes);

/* The newest export NAME some open file holds, with a reference (nbd_export_put()), or NULL. */
struct nbd_export *nbd_export_find(const char *name);

/* Lets go of one reference; the last one disconnects. */
void nbd_export_put(struct nbd_export *x);

/* True while some open file holds export NAME. */
bool nbd_export_held(const char *name);

/*
 * When writes to export NAME were last lost (a connection broke before
 * they were flushed): 0 if never while some file held it.  Increases.
 */
uint64_t nbd_export_errseq(const char *name);

/* Requests; 0 or -errno (the server's error as an errno, or -EIO). */
int nbd_export_read(struct nbd_export *x, void *buf, size_t len, uint64_t off);
int nbd_export_write(struct nbd_export *x, const void *buf, size_t len, uint64_t off);
/* FLUSH: -EIO when a connection with unflushed writes turns out broken. */
int nbd_export_flush(struct nbd_export *x);
/* Reads as zeros afterwards; may_unmap lets whole clusters be given back. */
int nbd_export_zero(struct nbd_export *x, uint64_t off, uint64_t len, bool may_unmap);

#endif
