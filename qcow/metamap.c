/* SPDX-License-Identifier: MIT */
/*
 * metamap.c - which host clusters hold metadata, and of what kind.
 *
 * The header, the L1 and refcount tables, every refcount block, every
 * active L2 table and the snapshot tables are recorded here at open and
 * kept current as they move.  Writes of guest data and loads of tables
 * consult it, so that an image whose tables or refcounts lie (a COPIED
 * entry pointing at a refcount block, an L1 entry naming the refcount
 * table) is refused instead of written over, as qemu's overlap checks do.
 *
 * An open-addressing hash map from cluster index to kind with linear
 * probing and backward-shift deletion; keys are stored plus one so that
 * zero marks an empty slot.
 */
#include <stdlib.h>

#include "internal.h"

static uint32_t slot_of(const struct meta_map *m, uint64_t cluster)
{
	return (uint32_t)((cluster * 0x9e3779b97f4a7c15ull) >> 32) & (m->cap - 1);
}

void meta_release(struct meta_map *m)
{
	free(m->keys);
	free(m->kinds);
	memset(m, 0, sizeof(*m));
}

static int meta_grow(struct meta_map *m)
{
	struct meta_map bigger = {.cap = m->cap ? 2 * m->cap : 1024};

	if (m->cap >= (1u << 30))
		return -EFBIG; /* 2^29 metadata clusters: far past every cap on tables */

	bigger.keys = calloc(bigger.cap, sizeof(*bigger.keys));
	bigger.kinds = calloc(bigger.cap, sizeof(*bigger.kinds));
	if (!bigger.keys || !bigger.kinds) {
		meta_release(&bigger);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < m->cap; i++)
		if (m->keys[i])
			meta_add(&bigger, m->keys[i] - 1, m->kinds[i]);
	meta_release(m);
	*m = bigger;
	return 0;
}

int meta_add(struct meta_map *m, uint64_t cluster, enum meta_kind kind)
{
	uint32_t i;

	if (2 * (m->n + 1) > m->cap) {
		int err = meta_grow(m);

		if (err < 0)
			return err;
	}
	for (i = slot_of(m, cluster); m->keys[i]; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == cluster + 1)
			return 0; /* the first kind recorded stays */
	m->keys[i] = cluster + 1;
	m->kinds[i] = (uint8_t)kind;
	m->n++;
	return 0;
}

int meta_add_range(struct meta_map *m, uint64_t first, uint64_t n, enum meta_kind kind)
{
	for (uint64_t c = first; c < first + n; c++) {
		int err = meta_add(m, c, kind);

		if (err < 0)
			return err;
	}
	return 0;
}

enum meta_kind meta_kind(const struct meta_map *m, uint64_t cluster)
{
	if (!m->cap)
		return META_NONE;
	for (uint32_t i = slot_of(m, cluster); m->keys[i]; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == cluster + 1)
			return (enum meta_kind)m->kinds[i];
	return META_NONE;
}

void meta_remove(struct meta_map *m, uint64_t cluster)
{
	uint32_t i, j;

	if (!m->cap)
		return;
	for (i = slot_of(m, cluster); m->keys[i] != cluster + 1; i = (i + 1) & (m->cap - 1))
		if (!m->keys[i])
			return;
	/* Shift later members of the probe run back over the hole. */
	for (j = (i + 1) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1)) {
		uint32_t home = slot_of(m, m->keys[j] - 1);

		if (((j - home) & (m->cap - 1)) >= ((j - i) & (m->cap - 1))) {
			m->keys[i] = m->keys[j];
			m->kinds[i] = m->kinds[j];
			i = j;
		}
	}
	m->keys[i] = 0;
	m->n--;
}

/* Records every metadata cluster of img; the map is rebuilt from scratch. */
int meta_build(struct qcow_image *img)
{
	struct meta_map *m = &img->meta;
	uint64_t cs = img->cluster_size;
	int err;

	meta_release(m);
	err = meta_add(m, 0, META_HEADER);
	if (!err)
		err = meta_add_range(m, cluster_of(img, img->reftable_offset),
		                     img->reftable_clusters, META_REFTABLE);
	if (!err && img->l1_size)
		err = meta_add_range(m, cluster_of(img, img->l1_offset),
		                     (8 * (uint64_t)img->l1_size + cs - 1) / cs, META_L1);
	if (!err && img->snapshots_bytes)
		err = meta_add_range(m, cluster_of(img, img->snapshots_offset),
		                     (img->snapshots_bytes + cs - 1) / cs, META_SNAPSHOTS);
	for (uint32_t i = 0; !err && i < img->nb_snapshots && img->snapshots; i++)
		if (img->snapshots[i].l1_size)
			err =
			    meta_add_range(m, cluster_of(img, img->snapshots[i].l1_offset),
			                   (8 * (uint64_t)img->snapshots[i].l1_size + cs - 1) / cs,
			                   META_SNAPSHOTS);
	for (uint32_t i = 0; !err && i < img->reftable_entries; i++)
		if (img->reftable[i] & RTE_OFFSET_MASK)
			err = meta_add(m, cluster_of(img, img->reftable[i] & RTE_OFFSET_MASK),
			               META_REFBLOCK);
	for (uint32_t i = 0; !err && i < img->l1_size; i++) {
		uint64_t off = be64toh(img->l1[i]) & L1E_OFFSET_MASK;

		if (off)
			err = meta_add(m, cluster_of(img, off), META_L2);
	}
	return err;
}

bool overlaps_metadata(struct qcow_image *img, uint64_t off, uint64_t len)
{
	for (uint64_t c = cluster_of(img, off); c <= cluster_of(img, off + len - 1); c++)
		if (meta_kind(&img->meta, c) != META_NONE)
			return true;
	return false;
}
