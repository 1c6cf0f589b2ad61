/* SPDX-License-Identifier: MIT */
/*
 * tables.c - loading L2 tables and refcount blocks into their caches, and
 * writing metadata back in the order that keeps an image consistent
 * across a crash: no cluster is referenced by an L2 entry on disk before
 * the refcount that owns it is (unless the image is marked dirty, see
 * below), and no metadata reaches the disk before the data it points at.
 * (Refcounts as the qcow2 spec's 'Host cluster management' keeps them,
 * mappings as its 'Cluster mapping'.)  The order:
 *
 *   1. sync guest data written so far;
 *   2. write refcount blocks (increments only), sync, then the refcount
 *      table if it gained entries, sync;
 *   3. write L2 tables, and sync if the L1 table names new ones;
 *   4. write the L1 table;
 *   5. sync, and only now drop the refcounts of clusters the new mappings
 *      released, write those refcount blocks, and punch the freed clusters.
 *
 * So an L2 entry never reaches the disk before the refcount that owns its
 * cluster, nor before the data it points at, and a freed cluster is never
 * reused while an on-disk mapping still points at it.  While the dirty bit
 * is set (lazy refcounts) the sync between refcount blocks and L2 tables is
 * skipped: an image opened with the dirty bit set gets its refcounts
 * rebuilt.
 */
#include <stdlib.h>

#include "internal.h"

static uint64_t host_limit(const struct qcow_image *img)
{
	uint64_t end = img->end_cluster << img->cluster_bits;

	return end > img->file_size ? end : img->file_size;
}

static int check_table_offset(struct qcow_image *img, uint64_t off, enum meta_kind kind,
                              const char *what)
{
	enum meta_kind found;

	if (off == 0 || (off & (img->cluster_size - 1)) || off >= QCOW_MAX_HOST_OFFSET)
		return qcow_fail(img, -EIO, "corrupt image: %s at invalid offset 0x%llx", what,
		                 (unsigned long long)off);
	if (off + img->cluster_size > host_limit(img))
		return qcow_fail(img, -EIO,
		                 "corrupt image: %s at 0x%llx lies beyond the end of the file",
		                 what, (unsigned long long)off);
	found = meta_kind(&img->meta, cluster_of(img, off));
	if (found != META_NONE && found != kind)
		return qcow_fail(img, -EIO, "corrupt image: %s at 0x%llx overlaps other metadata",
		                 what, (unsigned long long)off);
	return 0;
}

int sync_or_fence(struct qcow_image *img)
{
	int err = img->ops->sync(img->ctx);

	if (err < 0) {
		img->fenced = err;
		return qcow_fail(img, err, "sync failed: %s", strerror(-err));
	}
	img->unsynced = false;
	return 0;
}

/* A barrier between two write-back steps; lazy refcounts skip it. */
static int barrier(struct qcow_image *img)
{
	if (img->dirty_bit_on_disk)
		return 0;
	return sync_or_fence(img);
}

static int write_table(struct qcow_image *img, struct table_cache *c, int32_t slot)
{
	struct cached_table *t = &c->slots[slot];
	int err;

	err = img->ops->pwrite(img->ctx, cache_table(c, slot), c->table_bytes, t->offset);
	if (err < 0) {
		img->fenced = err;
		return qcow_fail(img, err, "writing metadata at 0x%llx failed: %s",
		                 (unsigned long long)t->offset, strerror(-err));
	}
	t->dirty = false;
	img->unsynced = true;
	return 0;
}

static int write_dirty(struct qcow_image *img, struct table_cache *c, bool *wrote)
{
	for (uint32_t i = 0; i < c->capacity; i++) {
		if (!c->slots[i].valid || !c->slots[i].dirty)
			continue;
		int err = write_table(img, c, (int32_t)i);

		if (err < 0)
			return err;
		*wrote = true;
	}
	return 0;
}

static int write_reftable(struct qcow_image *img)
{
	size_t bytes = (size_t)img->reftable_clusters << img->cluster_bits;
	uint8_t *buf = malloc(bytes);
	int err;

	if (!buf)
		return qcow_fail(img, -ENOMEM, "no memory for the refcount table");

	for (uint32_t i = 0; i < img->reftable_entries; i++)
		put_be64(buf + 8 * (size_t)i, img->reftable[i]);
	memset(buf + 8 * (size_t)img->reftable_entries, 0,
	       bytes - 8 * (size_t)img->reftable_entries);
	err = img->ops->pwrite(img->ctx, buf, bytes, img->reftable_offset);
	free(buf);
	if (err < 0) {
		img->fenced = err;
		return qcow_fail(img, err, "writing the refcount table failed: %s", strerror(-err));
	}
	img->reftable_dirty = false;
	img->unsynced = true;
	return 0;
}

static int write_l1(struct qcow_image *img)
{
	uint32_t lo = img->l1_dirty_lo, hi = img->l1_dirty_hi;
	int err;

	if (lo > hi)
		return 0;
	err = img->ops->pwrite(img->ctx, &img->l1[lo], 8 * (size_t)(hi - lo + 1),
	                       img->l1_offset + 8 * (uint64_t)lo);
	if (err < 0) {
		img->fenced = err;
		return qcow_fail(img, err, "writing the L1 table failed: %s", strerror(-err));
	}
	img->l1_dirty_lo = UINT32_MAX;
	img->l1_dirty_hi = 0;
	img->unsynced = true;
	return 0;
}

/* Syncs if anything was written since the last sync. */
static int settle(struct qcow_image *img)
{
	return img->unsynced ? sync_or_fence(img) : 0;
}

/* Step 2: refcount blocks, then the refcount table entries that point at new ones. */
static int write_back_refcounts(struct qcow_image *img)
{
	bool wrote = false;
	int err;

	err = write_dirty(img, &img->rb_cache, &wrote);
	if (err < 0)
		return err;
	if (img->reftable_dirty) {
		/*
		 * New blocks before the table entries naming them, even with
		 * lazy refcounts: a table pointing past the end of the file
		 * would make the image unreadable, not just its counts stale.
		 */
		if (wrote && (err = sync_or_fence(img)) < 0)
			return err;
		err = write_reftable(img);
		if (err < 0)
			return err;
		wrote = true;
	}
	if (wrote)
		return barrier(img);
	return 0;
}

int write_back(struct qcow_image *img)
{
	bool wrote_l2 = false;
	int err;

	if (img->fenced)
		return qcow_fail(img, -EIO, "an earlier write-back failed; reopen the image");
	/* Before writing anything: a full disk fails the write-back, not the image. */
	if ((err = reserve_fixed_tables(img)) < 0)
		return err;
	if (img->meta_dirty && img->lazy && !img->dirty_bit_on_disk) {
		err = set_dirty_bit(img, true);
		if (err < 0)
			return err;
	}
	/* 1: data before anything that points at it, lazy refcounts or not. */
	if ((err = settle(img)) < 0 || (err = write_back_refcounts(img)) < 0)
		return err;
	err = write_dirty(img, &img->l2_cache, &wrote_l2);
	if (err < 0)
		return err;
	if (img->l1_dirty_lo <= img->l1_dirty_hi) {
		/* New L2 tables must be on disk before the L1 entries naming them. */
		if (wrote_l2 && (err = sync_or_fence(img)) < 0)
			return err;
		err = write_l1(img);
		if (err < 0)
			return err;
	}
	img->meta_dirty = false;
	if (img->npending) {
		/*
		 * A freed cluster is not reused or punched while an on-disk
		 * table may still point at it, lazy refcounts or not.
		 */
		if ((err = settle(img)) < 0 || (err = apply_pending_frees(img)) < 0)
			return err;
		err = write_back_refcounts(img);
		if (err < 0)
			return err;
	}
	return 0;
}

/* Makes room in cache c; a dirty victim is written back first. */
static int32_t make_room(struct qcow_image *img, struct table_cache *c)
{
	int32_t slot = cache_victim(c);
	int err;

	if (slot < 0)
		return qcow_fail(img, -ENOMEM, "metadata cache exhausted (all tables in use)");
	if (c->slots[slot].valid && c->slots[slot].dirty) {
		/*
		 * A refcount block may go out at any time (it only ever holds
		 * increments outside step 5); an L2 table needs everything it
		 * depends on first, which is a whole ordered write-back.
		 */
		if (c == &img->rb_cache)
			err = write_table(img, c, slot);
		else
			err = write_back(img);
		if (err < 0)
			return err;
	}
	if (c->slots[slot].valid)
		cache_drop(c, slot);
	return slot;
}

static int table_get(struct qcow_image *img, struct table_cache *c, uint64_t off, bool fresh,
                     enum meta_kind kind, const char *what, int32_t *out)
{
	int32_t slot = cache_find(c, off);
	int err;

	if (slot >= 0) {
		cache_touch(c, slot);
		if (fresh) {
			/* A freed table's cluster, allocated again. */
			memset(cache_table(c, slot), 0, c->table_bytes);
			table_dirty(img, c, slot);
		}
		goto out_pin;
	}
	err = check_table_offset(img, off, kind, what);
	if (err < 0)
		return err;
	slot = make_room(img, c);
	if (slot < 0)
		return slot;
	if (fresh) {
		memset(cache_table(c, slot), 0, c->table_bytes);
	} else {
		err = img->ops->pread(img->ctx, cache_table(c, slot), c->table_bytes, off);
		if (err < 0)
			return qcow_fail(img, err, "reading %s at 0x%llx failed: %s", what,
			                 (unsigned long long)off, strerror(-err));
	}
	cache_install(c, slot, off);
	if (fresh) {
		c->slots[slot].dirty = true;
		img->meta_dirty = true;
	}
out_pin:
	c->slots[slot].pinned++;
	*out = slot;
	return 0;
}

int check_l2_offset(struct qcow_image *img, uint64_t l2_offset)
{
	return check_table_offset(img, l2_offset, META_L2, "L2 table");
}

int l2_get(struct qcow_image *img, uint64_t l2_offset, bool fresh, int32_t *slot)
{
	return table_get(img, &img->l2_cache, l2_offset, fresh, META_L2, "L2 table", slot);
}

int rb_get(struct qcow_image *img, uint64_t rb_offset, bool fresh, int32_t *slot)
{
	return table_get(img, &img->rb_cache, rb_offset, fresh, META_REFBLOCK, "refcount block",
	                 slot);
}

void table_put(struct table_cache *c, int32_t slot)
{
	assert(c->slots[slot].pinned > 0);
	c->slots[slot].pinned--;
}

void table_dirty(struct qcow_image *img, struct table_cache *c, int32_t slot)
{
	c->slots[slot].dirty = true;
	img->meta_dirty = true;
}

int qcow_cache_insert_l2(struct qcow_image *img, uint64_t table_offset, const void *table)
{
	int32_t slot;
	int err;

	if (img->kind == IMAGE_RAW)
		return qcow_fail(img, -EINVAL, "raw images have no L2 tables");
	if (cache_find(&img->l2_cache, table_offset) >= 0)
		return 0; /* ours may be newer than what the caller read */
	err = check_table_offset(img, table_offset, META_L2, "L2 table");
	if (err < 0)
		return err;
	slot = make_room(img, &img->l2_cache);
	if (slot < 0)
		return slot;
	memcpy(cache_table(&img->l2_cache, slot), table, img->l2_cache.table_bytes);
	cache_install(&img->l2_cache, slot, table_offset);
	return 0;
}

/* Drops a freed cluster from the table caches, so no stale copy is written back. */
void forget_table(struct qcow_image *img, uint64_t off)
{
	struct table_cache *caches[] = {&img->l2_cache, &img->rb_cache};

	for (size_t i = 0; i < 2; i++) {
		int32_t slot = cache_find(caches[i], off);

		if (slot >= 0 && !caches[i]->slots[slot].pinned)
			cache_drop(caches[i], slot);
	}
}
