/* SPDX-License-Identifier: MIT */
/*
 * refcount.c - reference counts and cluster allocation.
 *
 * Refcount blocks hold refcount_bits-wide big-endian entries (sub-byte
 * widths LSB-first within a byte).  A refcount block for a range of
 * clusters that has none yet is placed at the first cluster of that range,
 * so it describes itself and allocating it needs no further allocation.
 * Growing the refcount table writes a new, larger table (and any refcount
 * blocks it needs) past the end of everything in use, then switches the
 * header to it in one write.
 *
 * Decrements are never applied at once: free_later() queues them until the
 * mapping that dropped the cluster is on disk (tables.c, step 5).  The one
 * exception is unalloc_clusters(), for clusters no mapping ever named.
 *
 * Host space for clusters is reserved (reserve_space()) before they are
 * counted, so that ENOSPC shows while nothing has changed yet, and nothing
 * written to them later, data or tables written back at a flush, can fail
 * for lack of space.  An error found only when a sync writes dirty pages
 * back would have to fence the image: Linux may drop pages whose writeback
 * failed, and a later flush must not claim them.
 */
#include <stdlib.h>

#include "internal.h"

uint64_t rb_entry_get(const struct qcow_image *img, const uint8_t *rb, uint32_t i)
{
	switch (img->refcount_order) {
	case 0:
		return (rb[i / 8] >> (i % 8)) & 1;
	case 1:
		return (rb[i / 4] >> (2 * (i % 4))) & 3;
	case 2:
		return (rb[i / 2] >> (4 * (i % 2))) & 15;
	case 3:
		return rb[i];
	case 4:
		return be16_at(rb + 2 * (size_t)i);
	case 5:
		return be32_at(rb + 4 * (size_t)i);
	default:
		return be64_at(rb + 8 * (size_t)i);
	}
}

void rb_entry_set(const struct qcow_image *img, uint8_t *rb, uint32_t i, uint64_t v)
{
	unsigned shift;
	uint8_t mask;

	switch (img->refcount_order) {
	case 0:
	case 1:
	case 2:
		shift = (i % (8u >> img->refcount_order)) << img->refcount_order;
		mask = (uint8_t)(((1u << img->refcount_bits) - 1) << shift);
		rb[(i << img->refcount_order) / 8] =
		    (uint8_t)((rb[(i << img->refcount_order) / 8] & ~mask) | (v << shift));
		return;
	case 3:
		rb[i] = (uint8_t)v;
		return;
	case 4:
		put_be16(rb + 2 * (size_t)i, (uint16_t)v);
		return;
	case 5:
		put_be32(rb + 4 * (size_t)i, (uint32_t)v);
		return;
	default:
		put_be64(rb + 8 * (size_t)i, v);
	}
}

static uint64_t refcount_max(const struct qcow_image *img)
{
	return img->refcount_bits == 64 ? UINT64_MAX : (1ull << img->refcount_bits) - 1;
}

/* The refcount block entry of cluster, pinned; -ENOENT if it has none. */
static int rb_lookup(struct qcow_image *img, uint64_t cluster, int32_t *slot, uint32_t *index)
{
	uint64_t rt = cluster / img->refblock_entries;
	uint64_t off;
	int err;

	if (rt >= img->reftable_entries || !img->reftable[rt])
		return -ENOENT;
	off = img->reftable[rt] & RTE_OFFSET_MASK;
	if (img->reftable[rt] & RTE_RESERVED_MASK)
		return qcow_fail(img, -EIO,
		                 "corrupt image: refcount table entry %llu has reserved bits set",
		                 (unsigned long long)rt);
	err = rb_get(img, off, false, slot);
	if (err < 0)
		return err;
	*index = (uint32_t)(cluster % img->refblock_entries);
	return 0;
}

int refcount_get(struct qcow_image *img, uint64_t cluster, uint64_t *rc)
{
	int32_t slot;
	uint32_t i;
	int err = rb_lookup(img, cluster, &slot, &i);

	if (err == -ENOENT) {
		*rc = 0;
		return 0;
	}
	if (err < 0)
		return err;
	*rc = rb_entry_get(img, cache_table(&img->rb_cache, slot), i);
	table_put(&img->rb_cache, slot);
	return 0;
}

int refcount_set(struct qcow_image *img, uint64_t cluster, uint64_t rc)
{
	int32_t slot;
	uint32_t i;
	int err = rb_lookup(img, cluster, &slot, &i);

	if (err == -ENOENT)
		return qcow_fail(img, -EIO, "internal error: no refcount block for cluster %llu",
		                 (unsigned long long)cluster);
	if (err < 0)
		return err;
	if (rc > refcount_max(img)) {
		table_put(&img->rb_cache, slot);
		return qcow_fail(img, -ERANGE, "refcount of cluster %llu would overflow",
		                 (unsigned long long)cluster);
	}
	rb_entry_set(img, cache_table(&img->rb_cache, slot), i, rc);
	table_dirty(img, &img->rb_cache, slot);
	table_put(&img->rb_cache, slot);
	return 0;
}

int refcount_add(struct qcow_image *img, uint64_t cluster)
{
	uint64_t rc;
	int err = refcount_get(img, cluster, &rc);

	return err < 0 ? err : refcount_set(img, cluster, rc + 1);
}

static void note_in_use(struct qcow_image *img, uint64_t first, uint64_t n)
{
	if (first + n > img->end_cluster)
		img->end_cluster = first + n;
}

/* How far past the end of what is in use a reservation runs ahead, in clusters. */
static uint64_t reserve_ahead(const struct qcow_image *img)
{
	uint64_t bytes = (img->end_cluster << img->cluster_bits) / 16;

	if (bytes < QCOW_RESERVE_AHEAD_MIN_BYTES)
		bytes = QCOW_RESERVE_AHEAD_MIN_BYTES;
	if (bytes > QCOW_RESERVE_AHEAD_MAX_BYTES)
		bytes = QCOW_RESERVE_AHEAD_MAX_BYTES;
	return (bytes + img->cluster_size - 1) >> img->cluster_bits;
}

/*
 * Reserves host space for clusters [first, first + n), and *ahead more
 * after them if that fits (else sets *ahead to 0).  -ENOSPC or -EDQUOT
 * when even the n do not fit; a file system that cannot reserve is not
 * asked again.
 */
static int allocate_space(struct qcow_image *img, uint64_t first, uint64_t n, uint64_t *ahead)
{
	unsigned cb = img->cluster_bits;
	int err;

	if (!img->ops->allocate || img->cannot_reserve)
		return 0;
	err = img->ops->allocate(img->ctx, first << cb, (n + *ahead) << cb);
	if ((err == -ENOSPC || err == -EDQUOT) && *ahead) {
		*ahead = 0;
		err = img->ops->allocate(img->ctx, first << cb, n << cb);
	}
	if (err == -EOPNOTSUPP) {
		img->cannot_reserve = true;
		return 0;
	}
	if (err < 0)
		return qcow_fail(img, err, "no room for %llu clusters at 0x%llx: %s",
		                 (unsigned long long)n, (unsigned long long)(first << cb),
		                 strerror(-err));
	return 0;
}

/*
 * Reserves host space for clusters [first, first + n), to be called before
 * they are counted.  Past the end of what is in use the reservation runs
 * ahead, so that a growing image asks rarely.
 */
static int reserve_space(struct qcow_image *img, uint64_t first, uint64_t n)
{
	uint64_t end = first + n, ahead = 0;
	int err;

	if (first >= img->reserved_lo && end <= img->reserved_hi)
		return 0;
	if (end > img->end_cluster)
		ahead = reserve_ahead(img);
	err = allocate_space(img, first, n, &ahead);
	if (err < 0)
		return err;
	if (end > img->end_cluster) {
		img->reserved_lo = first;
		img->reserved_hi = end + ahead;
	}
	return 0;
}

int reserve_fixed_tables(struct qcow_image *img)
{
	uint64_t cs = img->cluster_size, none = 0;
	const struct {
		uint64_t off, bytes;
	} t[] = {
	    {0, cs},
	    {img->reftable_offset, (uint64_t)img->reftable_clusters * cs},
	    {img->l1_offset, 8 * (uint64_t)img->l1_size},
	};
	int err;

	if (img->fixed_reserved || !img->writable)
		return 0;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (!t[i].bytes)
			continue;
		err = allocate_space(img, cluster_of(img, t[i].off), (t[i].bytes + cs - 1) / cs,
		                     &none);
		if (err < 0)
			return err;
	}
	img->fixed_reserved = true;
	return 0;
}

/* A new refcount block at the first cluster of range rt, counting itself. */
static int new_refblock(struct qcow_image *img, uint64_t rt)
{
	uint64_t c0 = rt * img->refblock_entries;
	uint64_t off = c0 << img->cluster_bits;
	int32_t slot;
	int err;

	if (off >= QCOW_MAX_HOST_OFFSET)
		return qcow_fail(img, -EFBIG, "image file would exceed the qcow2 offset limit");
	if (overlaps_metadata(img, off, img->cluster_size))
		return qcow_fail(img, -EIO,
		                 "corrupt image: clusters in use at 0x%llx have no refcount block",
		                 (unsigned long long)off);
	err = reserve_space(img, c0, 1);
	if (err < 0)
		return err;
	note_in_use(img, c0, 1);
	err = meta_add(&img->meta, c0, META_REFBLOCK);
	if (err == 0)
		err = rb_get(img, off, true, &slot);
	if (err < 0)
		return err;
	rb_entry_set(img, cache_table(&img->rb_cache, slot), 0, 1);
	table_put(&img->rb_cache, slot);
	img->reftable[rt] = off;
	img->reftable_dirty = true;
	img->meta_dirty = true;
	return 0;
}

static bool has_refblock(uint64_t rt, const uint64_t *table, uint64_t entries)
{
	return rt < entries && table[rt];
}

/*
 * Ranges in clusters [t, t+len) that have no refcount block in table;
 * returns how many, writing at most max of them to out (NULL: count only).
 */
static uint64_t missing_blocks(const struct qcow_image *img, uint64_t t, uint64_t len,
                               const uint64_t *table, uint64_t entries, uint64_t *out, uint64_t max)
{
	uint64_t E = img->refblock_entries, k = 0;

	for (uint64_t r = t / E; r <= (t + len - 1) / E; r++) {
		if (has_refblock(r, table, entries))
			continue;
		if (out && k < max)
			out[k] = r;
		k++;
	}
	return k;
}

/*
 * Plans n clusters at t followed by the refcount blocks for every range
 * that stretch touches without one (the blocks count themselves too).
 * Returns the number of blocks k: the stretch is [t, t + n + k).
 */
static uint64_t plan_stretch(const struct qcow_image *img, uint64_t t, uint64_t n,
                             const uint64_t *table, uint64_t entries)
{
	uint64_t k = 0, next;

	while ((next = missing_blocks(img, t, n + k, table, entries, NULL, 0)) != k)
		k = next;
	return k;
}

/*
 * Gives the k ranges missing blocks in [t, t+len) the clusters right after
 * position at, in img->reftable (which must have room for them).
 */
static int install_blocks(struct qcow_image *img, uint64_t t, uint64_t len, uint64_t at)
{
	uint64_t k = missing_blocks(img, t, len, img->reftable, img->reftable_entries, NULL, 0);
	uint64_t *ranges = calloc(k ? k : 1, sizeof(*ranges));
	int err = 0;

	if (!ranges)
		return qcow_fail(img, -ENOMEM, "no memory for refcount blocks");
	missing_blocks(img, t, len, img->reftable, img->reftable_entries, ranges, k);
	for (uint64_t i = 0; i < k && err == 0; i++) {
		uint64_t off = (at + i) << img->cluster_bits;
		int32_t slot;

		err = meta_add(&img->meta, at + i, META_REFBLOCK);
		if (err == 0)
			err = rb_get(img, off, true, &slot);
		if (err == 0) {
			table_put(&img->rb_cache, slot);
			img->reftable[ranges[i]] = off;
			img->reftable_dirty = true;
		}
	}
	free(ranges);
	return err;
}

static int set_stretch(struct qcow_image *img, uint64_t t, uint64_t len)
{
	for (uint64_t c = t; c < t + len; c++) {
		int err = refcount_set(img, c, 1);

		if (err < 0)
			return err;
	}
	return 0;
}

/*
 * Replaces the refcount table with one of at least need entries, written
 * past the end of everything in use together with the refcount blocks its
 * own clusters need, then switches the header to it in one write.
 */
static int grow_reftable(struct qcow_image *img, uint64_t need)
{
	uint64_t E = img->refblock_entries, cs = img->cluster_size;
	uint64_t entries = need + need / 2 + 1, n = (entries * 8 + cs - 1) / cs;
	uint64_t t = img->end_cluster, k, *table, old_off = img->reftable_offset;
	uint64_t old_clusters = img->reftable_clusters;
	int err;

	for (;;) {
		k = plan_stretch(img, t, n, img->reftable, img->reftable_entries);
		if ((t + n + k - 1) / E < n * cs / 8)
			break;
		n = ((t + n + k - 1) / E + 1) * 8 / cs + 1;
	}
	if (n * cs > QCOW_MAX_REFTABLE_BYTES)
		return qcow_fail(img, -EFBIG, "refcount table would exceed %u MiB",
		                 QCOW_MAX_REFTABLE_BYTES >> 20);
	if ((t + n + k) << img->cluster_bits >= QCOW_MAX_HOST_OFFSET)
		return qcow_fail(img, -EFBIG, "image file would exceed the qcow2 offset limit");
	err = reserve_space(img, t, n + k);
	if (err < 0)
		return err;

	/* Everything the old refcounts hold must be on disk before the switch. */
	err = write_back(img);
	if (err < 0)
		return err;
	table = calloc(n * cs / 8, sizeof(*table));
	if (!table)
		return qcow_fail(img, -ENOMEM, "no memory for a %llu-cluster refcount table",
		                 (unsigned long long)n);
	memcpy(table, img->reftable, img->reftable_entries * sizeof(*table));
	free(img->reftable);
	img->reftable = table;
	img->reftable_entries = (uint32_t)(n * cs / 8);
	note_in_use(img, t, n + k);
	err = meta_add_range(&img->meta, t, n, META_REFTABLE);
	if (err == 0)
		err = install_blocks(img, t, n + k, t + n);
	if (err == 0)
		err = set_stretch(img, t, n + k);
	if (err < 0)
		goto out_fence;
	img->reftable_offset = t << img->cluster_bits;
	img->reftable_clusters = (uint32_t)n;
	img->reftable_dirty = true;
	/* Blocks, then the table; synced even with lazy refcounts: the header names it. */
	err = write_back(img);
	if (err == 0)
		err = sync_or_fence(img);
	if (err == 0)
		err = header_commit(img);
	if (err < 0)
		goto out_fence;
	/* Nothing points at the old table any more. */
	for (uint64_t i = 0; i < old_clusters; i++) {
		err = free_later(img, (old_off >> img->cluster_bits) + i);
		if (err < 0)
			goto out_fence;
	}
	return 0;
out_fence:
	/* The in-memory table no longer matches the file: nothing more may be written. */
	img->fenced = err;
	if (!img->errmsg[0])
		qcow_fail(img, err, "growing the refcount table failed: %s", strerror(-err));
	return err;
}

static int ensure_refblock(struct qcow_image *img, uint64_t rt)
{
	int err;

	if (rt >= img->reftable_entries) {
		err = grow_reftable(img, rt + 1);
		if (err < 0)
			return err;
	}
	if (img->reftable[rt])
		return 0;
	return new_refblock(img, rt);
}

/*
 * n contiguous clusters past everything in use.  Refcount blocks for the
 * ranges they fall in go right after them, since a block at the start of
 * its own range would split any run longer than a range.
 */
static int alloc_at_end(struct qcow_image *img, uint64_t n, uint64_t *first)
{
	uint64_t E = img->refblock_entries, t, k;
	int err;

	for (;;) {
		t = img->end_cluster;
		k = plan_stretch(img, t, n, img->reftable, img->reftable_entries);
		if ((t + n + k - 1) / E < img->reftable_entries)
			break;
		err = grow_reftable(img, (t + n + k - 1) / E + 1);
		if (err < 0)
			return err;
	}
	if ((t + n + k) << img->cluster_bits >= QCOW_MAX_HOST_OFFSET)
		return qcow_fail(img, -EFBIG, "image file would exceed the qcow2 offset limit");
	err = reserve_space(img, t, n + k);
	if (err < 0)
		return err;
	note_in_use(img, t, n + k);
	err = install_blocks(img, t, n + k, t + n);
	if (err == 0)
		err = set_stretch(img, t, n + k);
	if (err < 0) {
		img->fenced = err; /* blocks named in memory but not counted */
		return err;
	}
	*first = t;
	return 0;
}

/*
 * Finds n free clusters in a row: the first fit from free_hint among the
 * clusters in use so far, else past their end.
 */
int alloc_clusters(struct qcow_image *img, uint64_t n, uint64_t *offset)
{
	uint64_t c = img->free_hint, start = c, run = 0;
	int err;

	assert(n > 0);
	while (run < n && c < img->end_cluster) {
		uint64_t rt = c / img->refblock_entries, rc;

		if (!has_refblock(rt, img->reftable, img->reftable_entries)) {
			err = ensure_refblock(img, rt);
			if (err < 0)
				return err;
			continue; /* look at c again: the new block may sit there */
		}
		err = refcount_get(img, c, &rc);
		if (err < 0)
			return err;
		if (rc == 0) {
			if (run == 0)
				start = c;
			run++;
		} else {
			run = 0;
			if (c == img->free_hint)
				img->free_hint = c + 1;
		}
		c++;
	}
	if (run < n) {
		/* A run reaching the end continues there when its blocks exist. */
		if (run && plan_stretch(img, start, n, img->reftable, img->reftable_entries) == 0 &&
		    (start + n - 1) / img->refblock_entries < img->reftable_entries) {
			if ((err = reserve_space(img, start, n)) < 0)
				return err;
			note_in_use(img, start, n);
		} else if ((err = alloc_at_end(img, n, &start)) < 0) {
			return err;
		}
	} else if ((err = reserve_space(img, start, n)) < 0) {
		return err;
	}
	if (overlaps_metadata(img, start << img->cluster_bits, n << img->cluster_bits))
		return qcow_fail(
		    img, -EIO,
		    "corrupt image: metadata at 0x%llx has refcount 0; run check --repair",
		    (unsigned long long)(start << img->cluster_bits));
	err = set_stretch(img, start, n);
	if (err < 0)
		return err;
	if (start == img->free_hint)
		img->free_hint = start + n;
	note_in_use(img, start, n);
	*offset = start << img->cluster_bits;
	return 0;
}

/*
 * Takes back the counts alloc_clusters() gave clusters [offset, offset + n)
 * that nothing has mapped yet: their refcounts drop at once, as no table on
 * disk can name them.  end_cluster stays, so a cluster a failed write may
 * have scribbled on is never taken for one that reads as zeros.  A refcount
 * block that cannot be read leaves the rest counted: leaked, which costs
 * space only, so the caller's error and message are what is reported.
 */
void unalloc_clusters(struct qcow_image *img, uint64_t offset, uint64_t n)
{
	uint64_t first = cluster_of(img, offset), rc;
	char msg[sizeof(img->errmsg)];

	memcpy(msg, img->errmsg, sizeof(msg));
	for (uint64_t c = first; c < first + n; c++) {
		if (refcount_get(img, c, &rc) < 0 || rc == 0 || refcount_set(img, c, rc - 1) < 0)
			break;
		if (rc == 1 && c < img->free_hint)
			img->free_hint = c;
	}
	memcpy(img->errmsg, msg, sizeof(msg));
}

int free_later(struct qcow_image *img, uint64_t cluster)
{
	if (img->npending == img->pending_cap) {
		if (img->pending_cap == QCOW_MAX_PENDING_FREES) {
			int err = write_back(img);

			if (err < 0)
				return err;
		} else {
			uint32_t cap = img->pending_cap ? 2 * img->pending_cap : 64;
			uint64_t *p = realloc(img->pending_free, cap * sizeof(*p));

			if (!p)
				return qcow_fail(img, -ENOMEM, "no memory to queue freed clusters");
			img->pending_free = p;
			img->pending_cap = cap;
		}
	}
	img->pending_free[img->npending++] = cluster;
	img->meta_dirty = true;
	return 0;
}

int free_range_later(struct qcow_image *img, uint64_t host_off, uint64_t bytes)
{
	for (uint64_t c = cluster_of(img, host_off); c <= cluster_of(img, host_off + bytes - 1);
	     c++) {
		int err = free_later(img, c);

		if (err < 0)
			return err;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Gives the space of freed clusters back to the file system.  A punch that
 * fails (no hole punching here, or a disk too full to split an extent)
 * costs only that space: a cluster is written whole before it is read
 * again, so it is not an error.
 */
static void punch(struct qcow_image *img, uint64_t first, uint64_t n)
{
	if (n == 0)
		return;
	if (first < img->reserved_hi && first + n > img->reserved_lo)
		img->reserved_hi = first > img->reserved_lo ? first : img->reserved_lo;
	if (img->ops->punch_hole)
		img->ops->punch_hole(img->ctx, first << img->cluster_bits, n << img->cluster_bits);
}

int apply_pending_frees(struct qcow_image *img)
{
	uint64_t run_start = 0, run_len = 0;
	int err = 0;

	qsort(img->pending_free, img->npending, sizeof(uint64_t), cmp_u64);
	for (uint32_t i = 0; i < img->npending; i++) {
		uint64_t c = img->pending_free[i], rc;

		err = refcount_get(img, c, &rc);
		if (err < 0)
			break;
		if (rc == 0) {
			err = qcow_fail(img, -EIO, "corrupt image: freeing cluster %llu twice",
			                (unsigned long long)c);
			break;
		}
		err = refcount_set(img, c, rc - 1);
		if (err < 0)
			break;
		if (rc - 1 > 0)
			continue;
		meta_remove(&img->meta, c);
		forget_table(img, c << img->cluster_bits);
		if (img->cpos && cluster_of(img, img->cpos) == c)
			img->cpos = 0; /* the packing cluster is gone */
		if (c < img->free_hint)
			img->free_hint = c;
		if (run_len && run_start + run_len == c) {
			run_len++;
			continue;
		}
		punch(img, run_start, run_len);
		run_start = c;
		run_len = 1;
	}
	img->npending = 0;
	if (err < 0) {
		img->fenced = err;
		return err;
	}
	punch(img, run_start, run_len);
	return 0;
}
