/* SPDX-License-Identifier: MIT */
/*
 * cluster.c - guest to host translation through the L1 and L2 tables, and
 * the changes writes make to them (new L2 tables, copy-on-write of L2
 * tables shared with snapshots).  Every entry read from an image is
 * checked before use: reserved bits, alignment, offsets past the end.
 */
#include "internal.h"

static uint64_t l1_index(const struct qcow_image *img, uint64_t guest_off)
{
	return guest_off >> (img->cluster_bits + img->l2_bits);
}

static uint32_t l2_index(const struct qcow_image *img, uint64_t guest_off)
{
	return (uint32_t)((guest_off >> img->cluster_bits) & (img->l2_entries - 1));
}

void l1_set(struct qcow_image *img, uint64_t i, uint64_t entry)
{
	img->l1[i] = htobe64(entry);
	if (img->l1_dirty_lo > img->l1_dirty_hi) {
		img->l1_dirty_lo = img->l1_dirty_hi = (uint32_t)i;
	} else {
		if (i < img->l1_dirty_lo)
			img->l1_dirty_lo = (uint32_t)i;
		if (i > img->l1_dirty_hi)
			img->l1_dirty_hi = (uint32_t)i;
	}
	img->meta_dirty = true;
}

/* The L2 table offset of L1 entry i; 0 if none.  Checks the entry. */
static int l1_entry(struct qcow_image *img, uint64_t i, uint64_t *l2_off, bool *copied)
{
	uint64_t e;

	if (i >= img->l1_size)
		return qcow_fail(img, -EIO, "corrupt image: L1 table too small for offset");
	e = be64toh(img->l1[i]);
	if (e & L1E_RESERVED_MASK)
		return qcow_fail(img, -EIO, "corrupt image: L1 entry %llu has reserved bits set",
		                 (unsigned long long)i);
	*l2_off = e & L1E_OFFSET_MASK;
	*copied = e & QCOW_OFLAG_COPIED;
	if (*l2_off & (img->cluster_size - 1))
		return qcow_fail(img, -EIO, "corrupt image: L2 table offset 0x%llx is not aligned",
		                 (unsigned long long)*l2_off);
	return 0;
}

/* Gives L1 entry l1i a private L2 table: a new one, or a copy of a shared one. */
static int l2_make_private(struct qcow_image *img, uint64_t l1i, uint64_t old_off, int32_t *slot)
{
	uint64_t new_off;
	int32_t old_slot = -1;
	int err;

	if (old_off) {
		err = l2_get(img, old_off, false, &old_slot);
		if (err < 0)
			return err;
	}
	err = alloc_clusters(img, 1, &new_off);
	if (err < 0)
		goto out_put;
	err = meta_add(&img->meta, cluster_of(img, new_off), META_L2);
	if (err < 0)
		goto out_unalloc;
	err = l2_get(img, new_off, true, slot);
	if (err < 0) {
		meta_remove(&img->meta, cluster_of(img, new_off));
		goto out_unalloc;
	}
	if (old_off)
		memcpy(cache_table(&img->l2_cache, *slot), cache_table(&img->l2_cache, old_slot),
		       img->cluster_size);
	l1_set(img, l1i, new_off | QCOW_OFLAG_COPIED);
	if (old_off)
		err = free_later(img, cluster_of(img, old_off));
	goto out_put;
out_unalloc:
	unalloc_clusters(img, new_off, 1);
out_put:
	if (old_slot >= 0)
		table_put(&img->l2_cache, old_slot);
	return err;
}

int l2_lookup(struct qcow_image *img, uint64_t guest_off, bool for_write, bool *present,
              struct l2_ref *ref)
{
	uint64_t l1i = l1_index(img, guest_off), l2_off = 0;
	bool copied = false;
	int err = l1_entry(img, l1i, &l2_off, &copied);

	if (err < 0)
		return err;
	ref->index = l2_index(img, guest_off);
	if (for_write && (!l2_off || !copied)) {
		err = l2_make_private(img, l1i, l2_off, &ref->slot);
		if (err < 0)
			return err;
		*present = true;
		return 0;
	}
	if (!l2_off) {
		*present = false;
		return 0;
	}
	err = l2_get(img, l2_off, false, &ref->slot);
	if (err < 0)
		return err;
	*present = true;
	return 0;
}

void l2_release(struct qcow_image *img, struct l2_ref *ref)
{
	table_put(&img->l2_cache, ref->slot);
}

uint64_t l2_entry(struct qcow_image *img, const struct l2_ref *ref)
{
	return be64_at(cache_table(&img->l2_cache, ref->slot) + 8 * (size_t)ref->index);
}

void l2_set_entry(struct qcow_image *img, const struct l2_ref *ref, uint64_t entry)
{
	put_be64(cache_table(&img->l2_cache, ref->slot) + 8 * (size_t)ref->index, entry);
	table_dirty(img, &img->l2_cache, ref->slot);
}

int compressed_range(const struct qcow_image *img, uint64_t entry, uint64_t *host_off,
                     uint64_t *bytes)
{
	unsigned x = 62 - (img->cluster_bits - 8);
	uint64_t off = entry & ((1ull << x) - 1);
	uint64_t sectors = ((entry >> x) & ((1ull << (img->cluster_bits - 8)) - 1)) + 1;

	if (off >= QCOW_MAX_HOST_OFFSET || off < img->cluster_size)
		return -EIO;
	*host_off = off;
	*bytes = sectors * 512 - (off & 511);
	return 0;
}

int check_data_offset(struct qcow_image *img, uint64_t host_off)
{
	uint64_t limit = img->end_cluster << img->cluster_bits;

	if (limit < img->file_size)
		limit = img->file_size;
	if (host_off & (img->cluster_size - 1))
		return qcow_fail(img, -EIO,
		                 "corrupt image: data cluster offset 0x%llx is not aligned",
		                 (unsigned long long)host_off);
	if (host_off < img->cluster_size || host_off + img->cluster_size > limit ||
	    host_off >= QCOW_MAX_HOST_OFFSET)
		return qcow_fail(img, -EIO,
		                 "corrupt image: data cluster offset 0x%llx is outside the file",
		                 (unsigned long long)host_off);
	if (meta_kind(&img->meta, cluster_of(img, host_off)) != META_NONE)
		return qcow_fail(img, -EIO, "corrupt image: data cluster at 0x%llx is metadata",
		                 (unsigned long long)host_off);
	return 0;
}

/* A compressed cluster's bytes must lie past the header and clear of metadata. */
int check_compressed(struct qcow_image *img, uint64_t entry)
{
	uint64_t host, bytes;

	if (compressed_range(img, entry, &host, &bytes) < 0)
		return qcow_fail(img, -EIO,
		                 "corrupt image: bad compressed cluster descriptor 0x%llx",
		                 (unsigned long long)entry);
	if (overlaps_metadata(img, host, bytes))
		return qcow_fail(img, -EIO,
		                 "corrupt image: compressed data at 0x%llx overlaps metadata",
		                 (unsigned long long)host);
	return 0;
}
