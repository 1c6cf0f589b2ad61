/* SPDX-License-Identifier: MIT */
/*
 * check.c - consistency check and refcount rebuild, modelled on what
 * `qemu-img check` verifies (qemu-img(1), 'check'): every refcount against
 * the references the qcow2 spec's 'Host cluster management' counts.
 *
 * The walk counts one reference per host cluster for everything reachable:
 * the header, the refcount table and blocks, the active L1 table and every
 * snapshot's, each L2 table once per L1 that points at it, and every data
 * or compressed cluster once per L2 entry.  Stored refcounts below that
 * are corruption; above it, leaks.  A rebuild writes a fresh refcount
 * table and blocks past the end of the file and switches the header to
 * them in one write, so a crash during it leaves the old structure.
 */
#include <stdlib.h>

#include "internal.h"

struct walk {
	uint32_t *refs;
	uint64_t nclusters;
	uint64_t budget; /* L2 entries still allowed to visit */
	bool incomplete; /* a table could not be read: references may be missing */
	struct qcow_check_result *res;
};

static void ref_range(struct qcow_image *img, struct walk *w, uint64_t off, uint64_t bytes)
{
	if (!bytes)
		return;
	for (uint64_t c = cluster_of(img, off); c <= cluster_of(img, off + bytes - 1); c++) {
		if (c >= w->nclusters) {
			w->res->corruptions++; /* reference beyond the end of the file */
			return;
		}
		if (w->refs[c] != UINT32_MAX)
			w->refs[c]++;
	}
}

static void walk_l2(struct qcow_image *img, struct walk *w, const uint8_t *table)
{
	for (uint32_t i = 0; i < img->l2_entries; i++) {
		uint64_t e = be64_at(table + 8 * (size_t)i), host, bytes;

		if (e & QCOW_OFLAG_COMPRESSED) {
			if ((e & QCOW_OFLAG_COPIED) ||
			    compressed_range(img, e, &host, &bytes) < 0) {
				w->res->corruptions++;
				continue;
			}
			ref_range(img, w, host, bytes);
			continue;
		}
		host = e & L2E_OFFSET_MASK;
		if ((e & L2E_RESERVED_MASK) || (host & (img->cluster_size - 1))) {
			w->res->corruptions++;
			continue;
		}
		if (host)
			ref_range(img, w, host, img->cluster_size);
	}
}

static int walk_l1(struct qcow_image *img, struct walk *w, const uint64_t *l1, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t e = be64toh(l1[i]), off = e & L1E_OFFSET_MASK;
		int32_t slot;

		if ((e & L1E_RESERVED_MASK) || (off & (img->cluster_size - 1))) {
			w->res->corruptions++;
			w->incomplete = true;
			continue;
		}
		if (!off)
			continue;
		if (w->budget < img->l2_entries)
			return qcow_fail(img, -EFBIG,
			                 "too many L2 tables to check (over %llu entries)",
			                 (unsigned long long)QCOW_MAX_CHECK_L2_ENTRIES);
		w->budget -= img->l2_entries;
		ref_range(img, w, off, img->cluster_size);
		if (l2_get(img, off, false, &slot) < 0) {
			w->res->corruptions++;
			w->incomplete = true;
			continue;
		}
		walk_l2(img, w, cache_table(&img->l2_cache, slot));
		table_put(&img->l2_cache, slot);
	}
	return 0;
}

static int walk_snapshots(struct qcow_image *img, struct walk *w)
{
	ref_range(img, w, img->snapshots_offset, img->snapshots_bytes);
	for (uint32_t i = 0; i < img->nb_snapshots; i++) {
		const struct snapshot *s = &img->snapshots[i];
		uint64_t *l1;
		int err;

		if (!s->l1_size)
			continue;
		ref_range(img, w, s->l1_offset, 8 * (uint64_t)s->l1_size);
		l1 = malloc(8 * (size_t)s->l1_size);
		if (!l1)
			return qcow_fail(img, -ENOMEM, "no memory for a snapshot L1 table");
		err = img->ops->pread(img->ctx, l1, 8 * (size_t)s->l1_size, s->l1_offset);
		if (err == 0)
			err = walk_l1(img, w, l1, s->l1_size);
		else
			w->res->check_errors++;
		if (err < 0)
			w->incomplete = true;
		free(l1);
		if (err == -EFBIG)
			return err;
	}
	return 0;
}

/* Counts references to every cluster; with_refcounts adds the refcount structure. */
static int walk_all(struct qcow_image *img, struct walk *w, bool with_refcounts)
{
	uint64_t n = img->end_cluster;
	int err;

	if (n > QCOW_MAX_CHECK_CLUSTERS)
		return qcow_fail(img, -EFBIG, "image too large to check (%llu clusters)",
		                 (unsigned long long)n);
	w->nclusters = n;
	w->refs = calloc(n ? n : 1, sizeof(*w->refs));
	if (!w->refs)
		return qcow_fail(img, -ENOMEM, "no memory to count %llu clusters",
		                 (unsigned long long)n);
	ref_range(img, w, 0, img->cluster_size);
	ref_range(img, w, img->l1_offset, 8 * (uint64_t)img->l1_size);
	if (with_refcounts) {
		ref_range(img, w, img->reftable_offset,
		          (uint64_t)img->reftable_clusters << img->cluster_bits);
		for (uint32_t i = 0; i < img->reftable_entries; i++) {
			uint64_t off = img->reftable[i] & RTE_OFFSET_MASK;

			if (img->reftable[i] & RTE_RESERVED_MASK) {
				w->res->corruptions++;
				continue;
			}
			if (off)
				ref_range(img, w, off, img->cluster_size);
		}
	}
	w->budget = QCOW_MAX_CHECK_L2_ENTRIES;
	err = walk_l1(img, w, img->l1, img->l1_size);
	if (err == 0)
		err = walk_snapshots(img, w);
	if (err < 0) {
		free(w->refs);
		return err;
	}
	return 0;
}

/*
 * Compares stored refcounts with the walk for every cluster of the file;
 * counts corruptions and leaks.  With fix_leaks, over-counts are lowered
 * in place.  A refcount block that cannot be loaded is one corruption.
 * Refcounts of clusters past the end of the file are ignored, as qemu-img
 * check does.
 */
static int compare(struct qcow_image *img, struct walk *w, bool fix_leaks)
{
	uint64_t E = img->refblock_entries;

	for (uint64_t c = 0; c < w->nclusters; c++) {
		uint64_t stored = 0, want = w->refs[c], rt = c / E;

		if (rt < img->reftable_entries && img->reftable[rt]) {
			if ((img->reftable[rt] & RTE_RESERVED_MASK) ||
			    refcount_get(img, c, &stored) < 0) {
				w->res->corruptions++;
				c = (rt + 1) * E - 1; /* skip the unusable block */
				continue;
			}
		}
		if (stored < want) {
			w->res->corruptions++;
		} else if (stored > want) {
			w->res->leaks++;
			if (fix_leaks && !w->incomplete) {
				int err = refcount_set(img, c, want);

				if (err < 0)
					return err;
				if (want == 0 && c < img->free_hint)
					img->free_hint = c;
			}
		}
		if (stored && c + 1 > w->res->image_end_offset >> img->cluster_bits)
			w->res->image_end_offset = (c + 1) << img->cluster_bits;
	}
	return 0;
}

/* COPIED must be set exactly where the stored refcount is 1 (active tables). */
static int check_copied(struct qcow_image *img, struct walk *w, bool fix)
{
	for (uint32_t i = 0; i < img->l1_size; i++) {
		uint64_t e = be64toh(img->l1[i]), off = e & L1E_OFFSET_MASK, rc;
		int32_t slot;

		if (!off || (e & L1E_RESERVED_MASK) || (off & (img->cluster_size - 1)))
			continue;
		if (refcount_get(img, cluster_of(img, off), &rc) < 0)
			continue;
		if ((bool)(e & QCOW_OFLAG_COPIED) != (rc == 1)) {
			w->res->corruptions++;
			if (fix)
				l1_set(img, i,
				       rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED);
		}
		if (l2_get(img, off, false, &slot) < 0)
			continue;
		for (uint32_t j = 0; j < img->l2_entries; j++) {
			uint8_t *p = cache_table(&img->l2_cache, slot) + 8 * (size_t)j;
			uint64_t le = be64_at(p), host = le & L2E_OFFSET_MASK;

			if ((le & QCOW_OFLAG_COMPRESSED) || (host && !(le & QCOW_OFLAG_ZERO)))
				w->res->allocated_clusters++;
			if ((le & QCOW_OFLAG_COMPRESSED) || !host || (le & L2E_RESERVED_MASK))
				continue;
			if (refcount_get(img, cluster_of(img, host), &rc) < 0)
				continue;
			if ((bool)(le & QCOW_OFLAG_COPIED) == (rc == 1))
				continue;
			w->res->corruptions++;
			if (fix) {
				put_be64(p, rc == 1 ? le | QCOW_OFLAG_COPIED
				                    : le & ~QCOW_OFLAG_COPIED);
				table_dirty(img, &img->l2_cache, slot);
			}
		}
		table_put(&img->l2_cache, slot);
	}
	return 0;
}

static int write_structure(struct qcow_image *img, const uint32_t *refs, uint64_t t, uint64_t nt,
                           uint64_t nb)
{
	uint64_t cs = img->cluster_size, E = img->refblock_entries;
	uint8_t *buf = calloc(1, cs);
	uint64_t *table = calloc(nt * cs / 8, sizeof(uint64_t));
	uint8_t *tbuf = calloc(nt, cs);
	int err = -ENOMEM;

	if (!buf || !table || !tbuf)
		goto out_free;
	for (uint64_t r = 0; r < nb; r++) {
		memset(buf, 0, cs);
		for (uint64_t i = 0; i < E; i++) {
			uint64_t c = r * E + i, v;

			if (c >= t)
				v = c < t + nt + nb ? 1 : 0;
			else
				v = refs[c];
			rb_entry_set(img, buf, (uint32_t)i, v);
		}
		table[r] = (t + nt + r) << img->cluster_bits;
		err = img->ops->pwrite(img->ctx, buf, cs, table[r]);
		if (err < 0)
			goto out_free;
	}
	for (uint64_t i = 0; i < nt * cs / 8; i++)
		put_be64(tbuf + 8 * i, table[i]);
	err = img->ops->pwrite(img->ctx, tbuf, nt * cs, t << img->cluster_bits);
	if (err == 0)
		err = img->ops->sync(img->ctx);
	if (err < 0)
		goto out_free;
	/* Switch: one header write.  The old structure is now unreferenced. */
	for (uint32_t i = 0; i < img->rb_cache.capacity; i++)
		if (img->rb_cache.slots[i].valid)
			cache_drop(&img->rb_cache, (int32_t)i);
	free(img->reftable);
	img->reftable = table;
	table = NULL;
	img->reftable_entries = (uint32_t)(nt * cs / 8);
	img->reftable_offset = t << img->cluster_bits;
	img->reftable_clusters = (uint32_t)nt;
	img->reftable_dirty = false;
	img->end_cluster = t + nt + nb;
	img->free_hint = 1;
	err = header_commit(img);
	if (err == 0)
		err = meta_build(img);
out_free:
	if (err < 0)
		img->fenced = err;
	free(buf);
	free(table);
	free(tbuf);
	return err < 0 ? qcow_fail(img, err, "rebuilding refcounts failed: %s", strerror(-err)) : 0;
}

int rebuild_refcounts(struct qcow_image *img)
{
	struct qcow_check_result res = {0};
	struct walk w = {.res = &res};
	uint64_t cs = img->cluster_size, E = img->refblock_entries, t, nb, nt;
	int err;

	err = write_back(img);
	if (err < 0)
		return err;
	err = walk_all(img, &w, false);
	if (err < 0)
		return err;
	if (w.incomplete) {
		free(w.refs);
		return qcow_fail(img, -EIO, "cannot rebuild refcounts: some tables are unreadable");
	}
	img->cpos = 0;
	t = w.nclusters;
	nb = (t + E - 1) / E + 1;
	nt = (nb * 8 + cs - 1) / cs;
	for (;;) {
		uint64_t nb2 = (t + nt + nb + E - 1) / E, nt2 = (nb2 * 8 + cs - 1) / cs;

		if (nb2 <= nb && nt2 <= nt)
			break;
		nb = nb2 > nb ? nb2 : nb;
		nt = nt2 > nt ? nt2 : nt;
	}
	if (nt * cs > QCOW_MAX_REFTABLE_BYTES) {
		free(w.refs);
		return qcow_fail(img, -EFBIG, "refcount table would exceed %u MiB",
		                 QCOW_MAX_REFTABLE_BYTES >> 20);
	}
	err = write_structure(img, w.refs, t, nt, nb);
	free(w.refs);
	return err;
}

/* Sets COPIED in the active tables exactly where the refcount is 1. */
int fix_copied(struct qcow_image *img)
{
	struct qcow_check_result scratch = {0};
	struct walk w = {.res = &scratch};

	return check_copied(img, &w, true);
}

/* One full check of img into res, changing nothing. */
static int check_once(struct qcow_image *img, struct qcow_check_result *res, bool fix_leaks,
                      bool *incomplete)
{
	struct walk w = {.res = res};
	int err;

	memset(res, 0, sizeof(*res));
	err = walk_all(img, &w, true);
	if (err < 0)
		return err;
	err = compare(img, &w, fix_leaks);
	if (err == 0)
		err = check_copied(img, &w, false);
	free(w.refs);
	*incomplete = w.incomplete;
	return err;
}

/*
 * The repair a writable open makes of an image whose dirty bit is set:
 * rebuilt refcounts and COPIED flags.  A check first, changing nothing,
 * says what the rebuild fixes (into found, for the caller's log): one more
 * walk of the metadata, paid only after a crash.
 */
int repair_dirty(struct qcow_image *img, struct qcow_check_result *found)
{
	bool incomplete;
	int err;

	err = check_once(img, found, false, &incomplete);
	if (err == 0)
		err = rebuild_refcounts(img);
	if (err == 0)
		err = fix_copied(img);
	found->rebuilt = 1;
	return err;
}

/* Fixes what check found: leaks in place, anything else by a rebuild. */
static int repair(struct qcow_image *img, unsigned how, const struct qcow_check_result *found,
                  bool *rebuilt)
{
	struct qcow_check_result scratch;
	struct walk w = {.res = &scratch};
	int err;

	if (found->corruptions && (how & QCOW_REPAIR_ALL)) {
		err = rebuild_refcounts(img);
		if (err == 0)
			err = walk_all(img, &w, true);
		if (err < 0)
			return err;
		err = check_copied(img, &w, true);
		free(w.refs);
		*rebuilt = true;
	} else if (found->leaks) {
		bool incomplete;

		err = check_once(img, &scratch, true, &incomplete);
	} else {
		return 0;
	}
	img->cpos = 0; /* the packing cluster's count may have changed */
	return err < 0 ? err : qcow_flush(img);
}

int qcow_check(struct qcow_image *img, unsigned how, struct qcow_check_result *out)
{
	struct qcow_check_result res;
	bool rebuilt = false, incomplete;
	int err;

	if (img->kind == IMAGE_RAW)
		return qcow_fail(img, -ENOTSUP, "raw images have nothing to check");
	if (how && !img->writable)
		return qcow_fail(img, -EROFS, "repair needs the image open read-write");
	if (img->writable) {
		err = qcow_flush(img);
		if (err < 0)
			return err;
	}
	err = check_once(img, &res, false, &incomplete);
	if (err == 0 && how && (res.corruptions || res.leaks)) {
		/* Counting from a partial walk would free what the unread tables hold. */
		if (incomplete)
			return qcow_fail(img, -EIO,
			                 "some tables could not be read; refusing to repair");
		err = repair(img, how, &res, &rebuilt);
		if (err == 0)
			err = check_once(img, &res, false, &incomplete);
	}
	if (err == 0 && how && !res.corruptions && (img->incompat & INCOMPAT_CORRUPT)) {
		img->incompat &= ~(uint64_t)INCOMPAT_CORRUPT; /* repaired */
		err = header_write(img);
		if (err == 0)
			err = qcow_flush(img);
	}
	if (err < 0)
		return err;
	res.rebuilt = rebuilt;
	*out = res;
	return 0;
}
