/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fileio.h"
#include "image.h"
#include "log.h"

int image_open(struct image *im, const char *path, int fd, const char *snapshot,
               uint64_t cache_bytes, const char *const *backing_dirs, char *err, size_t errlen)
{
	struct qcow_check_result repaired;
	struct qcow_open_opts opts = {
	    .path = path,
	    .ops = &fileio_ops,
	    .flags = (snapshot ? 0 : QCOW_OPEN_RDWR) | QCOW_OPEN_NO_PROBE,
	    .l2_cache_bytes = cache_bytes,
	    .snapshot = snapshot,
	    .backing_dirs = backing_dirs,
	    .repaired = &repaired,
	};
	struct qcow_info info;
	int rc;

	rc = fileio_open(fd, &opts.ctx, &im->dfd);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = qcow_open(&opts, &im->img, err, errlen);
	if (rc < 0) {
		fileio_ops.close(opts.ctx);
		return rc;
	}
	if (repaired.rebuilt)
		log_warn("%s: not closed cleanly (dirty bit set): repaired at open: %llu leaked "
		         "cluster(s) freed, %llu corruption(s) fixed, refcounts rebuilt",
		         path, (unsigned long long)repaired.leaks,
		         (unsigned long long)repaired.corruptions);
	qcow_get_info(im->img, &info);
	im->fd = fd;
	im->read_only = snapshot != NULL;
	atomic_store(&im->fenced, 0);
	im->has_backing = qcow_backing(im->img) != NULL;
	atomic_store(&im->size, info.size_bytes);
	return 0;
}

void image_init(struct image *im)
{
	memset(im, 0, sizeof(*im));
	pthread_mutex_init(&im->lock, NULL);
	pthread_mutex_init(&im->quiesce_lock, NULL);
	pthread_cond_init(&im->quiesced, NULL);
	im->fd = im->dfd = -1;
	atomic_init(&im->size, 0);
	atomic_init(&im->fast_inflight, 0);
	atomic_init(&im->quiesce_waiters, 0);
	atomic_init(&im->fenced, 0);
	exec_queue_init(&im->queue);
}

void image_fini(struct image *im)
{
	pthread_cond_destroy(&im->quiesced);
	pthread_mutex_destroy(&im->quiesce_lock);
	pthread_mutex_destroy(&im->lock);
}

int image_close(struct image *im, const char *what)
{
	int rc = qcow_close(im->img);

	if (rc < 0)
		log_error("%s: closing failed: %s", what, strerror(-rc));
	im->img = NULL;
	im->fd = im->dfd = -1;
	return rc;
}

void image_abandon(struct image *im)
{
	qcow_abandon(im->img);
	im->img = NULL;
	im->fd = im->dfd = -1;
}

void image_note_failure(struct image *im, const char *what)
{
	int fenced = qcow_fenced(im->img);

	if (!fenced || atomic_load(&im->fenced))
		return;
	snprintf(im->fence_reason, sizeof(im->fence_reason), "%s", qcow_last_error(im->img));
	atomic_store(&im->fenced, fenced);
	log_error(
	    "volume %s: fenced, every flush fails until it is reopened (once its clients have "
	    "disconnected, or POST .../recover): %s",
	    what, im->fence_reason);
}

void image_quiesce(struct image *im)
{
	if (atomic_load(&im->fast_inflight) == 0)
		return;
	pthread_mutex_lock(&im->quiesce_lock);
	atomic_fetch_add(&im->quiesce_waiters, 1);
	while (atomic_load(&im->fast_inflight) > 0)
		pthread_cond_wait(&im->quiesced, &im->quiesce_lock);
	atomic_fetch_sub(&im->quiesce_waiters, 1);
	pthread_mutex_unlock(&im->quiesce_lock);
}

void image_fast_begin(struct image *im)
{
	atomic_fetch_add(&im->fast_inflight, 1);
}

/*
 * A waiter counts itself before it looks at fast_inflight (both sequentially
 * consistent), so either it sees zero, or the loop that made it zero sees
 * the waiter and signals under quiesce_lock, which the waiter holds from
 * its check until it sleeps.
 */
void image_fast_end(struct image *im)
{
	if (atomic_fetch_sub(&im->fast_inflight, 1) == 1 && atomic_load(&im->quiesce_waiters) > 0) {
		pthread_mutex_lock(&im->quiesce_lock);
		pthread_cond_broadcast(&im->quiesced);
		pthread_mutex_unlock(&im->quiesce_lock);
	}
}
