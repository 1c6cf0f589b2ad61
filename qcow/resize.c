/* SPDX-License-Identifier: MIT */
/*
 * resize.c - growing and shrinking the virtual disk.
 *
 * Growing past what the L1 table maps writes a larger L1 table elsewhere
 * and switches the header to it in one write.  The new area reads as
 * zeros: a partial last cluster is zeroed and a backing file that is
 * longer than the old size is hidden behind zero clusters.  Shrinking
 * discards everything past the new end first; it is refused while
 * snapshots exist, since they may still map that area.
 */
#include <stdlib.h>

#include "internal.h"

static int grow_l1(struct qcow_image *img, uint64_t entries)
{
	uint64_t cs = img->cluster_size, bytes = entries * 8;
	uint64_t clusters = (bytes + cs - 1) / cs, off, old = img->l1_offset;
	uint64_t old_clusters = (8 * (uint64_t)img->l1_size + cs - 1) / cs;
	uint64_t *l1;
	int err;

	if (bytes > QCOW_MAX_L1_BYTES)
		return qcow_fail(img, -EFBIG,
		                 "the L1 table would exceed %u MiB; use larger clusters",
		                 QCOW_MAX_L1_BYTES >> 20);
	err = write_back(img);
	if (err < 0)
		return err;
	l1 = calloc(clusters * cs / 8, 8);
	if (!l1)
		return qcow_fail(img, -ENOMEM, "no memory for the L1 table");
	memcpy(l1, img->l1, 8 * (size_t)img->l1_size);
	err = alloc_clusters(img, clusters, &off);
	if (err < 0) {
		/* Nothing allocated (a full disk, say): the image stays as it was. */
		free(l1);
		return err;
	}
	err = meta_add_range(&img->meta, cluster_of(img, off), clusters, META_L1);
	if (err == 0)
		err = write_back(img); /* the new table's refcounts first */
	if (err == 0)
		err = img->ops->pwrite(img->ctx, l1, clusters * cs, off);
	if (err == 0)
		err = img->ops->sync(img->ctx);
	if (err < 0) {
		free(l1);
		img->fenced = err;
		return qcow_fail(img, err, "writing the new L1 table failed: %s", strerror(-err));
	}
	free(img->l1);
	img->l1 = l1;
	img->l1_offset = off;
	img->l1_size = (uint32_t)entries;
	err = header_commit(img);
	if (err < 0)
		return err;
	for (uint64_t i = 0; old && i < old_clusters; i++) {
		err = free_later(img, cluster_of(img, old) + i);
		if (err < 0)
			return err;
	}
	return 0;
}

static int set_size(struct qcow_image *img, uint64_t size)
{
	img->size = size;
	return header_commit(img);
}

static int grow(struct qcow_image *img, uint64_t new_size)
{
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits;
	uint64_t need = new_size / span + (new_size % span != 0), old = img->size;
	uint64_t cs = img->cluster_size;
	int err;

	if (need > img->l1_size && (err = grow_l1(img, need)) < 0)
		return err;
	/* The tail of a partial last cluster may hold bytes from before a shrink. */
	if (old % cs) {
		uint64_t tail = cs - old % cs;

		img->size = old + tail < new_size ? old + tail : new_size;
		err = qcow_write_zeroes(img, old, img->size - old, 0);
		img->size = old;
		if (err < 0)
			return err;
	}
	if (img->backing && img->backing->size > old) {
		uint64_t start = (old + cs - 1) & ~(cs - 1);
		uint64_t end = img->backing->size < new_size ? img->backing->size : new_size;

		img->size = new_size;
		err = start < end ? qcow_write_zeroes(img, start, end - start, 0) : 0;
		img->size = old;
		if (err < 0)
			return err;
	}
	err = qcow_flush(img);
	if (err < 0)
		return err;
	return set_size(img, new_size);
}

int qcow_resize(struct qcow_image *img, uint64_t new_size)
{
	uint64_t cs = img->cluster_size;
	int err;

	if (!img->writable)
		return qcow_fail(img, -EROFS, "image is open read-only");
	if (img->fenced)
		return qcow_fail(img, -EIO, "an earlier write-back failed; reopen the image");
	if (new_size % 512)
		return qcow_fail(img, -EINVAL, "size %llu is not a multiple of 512 bytes",
		                 (unsigned long long)new_size);
	if (new_size > QCOW_MAX_VIRTUAL_SIZE)
		return qcow_fail(img, -EFBIG, "size %llu is too large",
		                 (unsigned long long)new_size);
	if (new_size == img->size)
		return 0;
	if (new_size > img->size)
		return grow(img, new_size);
	if (img->nb_snapshots)
		return qcow_fail(img, -ENOTSUP, "cannot shrink an image that has snapshots");
	/* Drop every cluster that starts at or past the new end. */
	uint64_t first = (new_size + cs - 1) & ~(cs - 1);

	if (first < img->size) {
		uint64_t old = img->size;

		/* Past a backing file that is longer, unallocated is what we want. */
		struct qcow_image *b = img->backing;

		img->backing = NULL;
		err = qcow_discard(img, first, old - first);
		img->backing = b;
		if (err < 0)
			return err;
	}
	err = qcow_flush(img);
	if (err < 0)
		return err;
	return set_size(img, new_size);
}
