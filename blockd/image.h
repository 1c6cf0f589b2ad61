/* SPDX-License-Identifier: MIT */
/*
 * image.h - one open qcow2 image of the daemon (a volume, or a read-only
 * view of one of its snapshots) with what guards it.
 *
 * Locking (CONCURRENCY.md): im->lock serialises every call into the qcow
 * library on im->img; pool jobs and control threads hold it across I/O.
 * An event loop only ever tries it (pthread_mutex_trylock()): on success it
 * maps a request from cached metadata, counts the request in
 * fast_inflight, lets go of the lock and carries the I/O out on its ring.
 * Whoever holds the lock and is about to free clusters or make them
 * shared (discard, zeroing, snapshots, resize) first waits in
 * image_quiesce() until fast_inflight is zero: a counter and a condition,
 * woken by the loop that ends the last such request.  The loops never
 * wait for anything here.
 */
#ifndef BLOCKD_IMAGE_H
#define BLOCKD_IMAGE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec.h"
#include "qcow.h"

struct image {
	pthread_mutex_t lock;
	struct qcow_image *img; /* guarded by lock; NULL while closed */
	int fd;                 /* buffered descriptor of the file; owned by the volume */
	int dfd;                /* O_DIRECT descriptor, or -1; owned by img's io context */
	bool read_only;         /* set at open, constant while open */
	bool has_backing;       /* set at open, constant while open */
	atomic_ullong size;     /* virtual size: written under lock, read anywhere; kept at close */
	/* Ring I/O mapped under lock and not finished yet; see image_quiesce(). */
	atomic_uint fast_inflight;
	atomic_uint quiesce_waiters;
	pthread_mutex_t quiesce_lock; /* only to sleep on and signal quiesced */
	pthread_cond_t quiesced;
	/*
	 * Non-zero once a failed write-back fenced the open image (every later
	 * flush fails until it is reopened); fence_reason, written before it
	 * is set and by one thread only, says what failed.
	 */
	atomic_int fenced;
	char fence_reason[256];
	/* Pool jobs on this image, one at a time (exec.h). */
	struct exec_queue queue;
};

/*
 * Makes IM's locks and queue, with no image open; image_fini() undoes it.
 * An image is opened and closed any number of times in between.
 */
void image_init(struct image *im);
void image_fini(struct image *im);

/*
 * Opens the image of the file open as FD (PATH names it in messages and
 * resolves relative backing files), read-write, or read-only on SNAPSHOT.
 * Every backing file must record its format and resolve inside one of
 * BACKING_DIRS (NULL-terminated; qcow_open_opts.backing_dirs).  A repair
 * of a dirty image is logged with what it fixed.  FD stays the caller's.
 * 0, or -errno with a one-line reason in ERR.
 */
int image_open(struct image *im, const char *path, int fd, const char *snapshot,
               uint64_t cache_bytes, const char *const *backing_dirs, char *err, size_t errlen);

/*
 * Flushes, clears the dirty bit and closes the image (not the locks); 0 or
 * the first error (logged, naming WHAT).
 */
int image_close(struct image *im, const char *what);

/*
 * With im->lock held, after a call into the library on im->img failed:
 * notes (and logs, naming WHAT) when the failure fenced the image.
 */
void image_note_failure(struct image *im, const char *what);

/* Closes without writing anything: for an image whose file is gone. */
void image_abandon(struct image *im);

/*
 * With im->lock held: waits until no ring I/O mapped before is in flight.
 * Nothing new can be mapped meanwhile (the loops only trylock).
 */
void image_quiesce(struct image *im);

/* The loops' side: a request mapped under lock starts, and ends (never blocks). */
void image_fast_begin(struct image *im);
void image_fast_end(struct image *im);

#endif
