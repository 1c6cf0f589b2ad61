/* SPDX-License-Identifier: MIT */
/*
 * cache.c - a fixed-size cache of cluster-sized tables keyed by host
 * offset.  All memory is allocated at open; lookups go through a chained
 * hash; eviction is the clock algorithm over unpinned slots.  Writing a
 * dirty victim back is the caller's job (tables.c), since the order of
 * write-backs is what keeps the image crash-consistent.
 */
#include <stdlib.h>

#include "internal.h"

static uint32_t hash_offset(const struct table_cache *c, uint64_t offset)
{
	uint64_t h = offset * 0x9e3779b97f4a7c15ull;

	return (uint32_t)(h >> 32) & (c->nbuckets - 1);
}

int cache_init(struct table_cache *c, uint32_t table_bytes, uint64_t budget_bytes)
{
	uint64_t n = budget_bytes / table_bytes;

	memset(c, 0, sizeof(*c));
	if (n < QCOW_MIN_CACHED_TABLES)
		n = QCOW_MIN_CACHED_TABLES;
	if (n > QCOW_MAX_CACHED_TABLES)
		n = QCOW_MAX_CACHED_TABLES;
	c->table_bytes = table_bytes;
	c->capacity = (uint32_t)n;
	c->nbuckets = 1;
	while (c->nbuckets < 2 * c->capacity)
		c->nbuckets <<= 1;
	c->mem = malloc((size_t)c->capacity * table_bytes);
	c->slots = calloc(c->capacity, sizeof(*c->slots));
	c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
	if (!c->mem || !c->slots || !c->buckets) {
		cache_release(c);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	return 0;
}

void cache_release(struct table_cache *c)
{
	free(c->mem);
	free(c->slots);
	free(c->buckets);
	memset(c, 0, sizeof(*c));
}

int32_t cache_find(struct table_cache *c, uint64_t offset)
{
	for (int32_t s = c->buckets[hash_offset(c, offset)]; s >= 0; s = c->slots[s].next)
		if (c->slots[s].offset == offset)
			return s;
	return -1;
}

void cache_touch(struct table_cache *c, int32_t slot)
{
	c->slots[slot].referenced = true;
}

/*
 * Clock replacement: empty slots first, then the hand sweeps, giving every
 * recently used table a second chance.  Two sweeps always find a victim
 * unless every slot is pinned.
 */
int32_t cache_victim(struct table_cache *c)
{
	if (c->nvalid < c->capacity) {
		for (uint32_t i = 0; i < c->capacity; i++)
			if (!c->slots[(c->hand + i) % c->capacity].valid)
				return (int32_t)((c->hand + i) % c->capacity);
	}
	for (uint32_t n = 0; n < 2 * c->capacity; n++) {
		struct cached_table *t = &c->slots[c->hand];
		int32_t slot = (int32_t)c->hand;

		c->hand = (c->hand + 1) % c->capacity;
		if (t->pinned)
			continue;
		if (t->referenced) {
			t->referenced = false;
			continue;
		}
		return slot;
	}
	return -ENOMEM;
}

static void unlink_slot(struct table_cache *c, int32_t slot)
{
	int32_t *p = &c->buckets[hash_offset(c, c->slots[slot].offset)];

	while (*p != slot) {
		assert(*p >= 0);
		p = &c->slots[*p].next;
	}
	*p = c->slots[slot].next;
}

void cache_drop(struct table_cache *c, int32_t slot)
{
	struct cached_table *t = &c->slots[slot];

	assert(!t->pinned);
	if (t->valid) {
		unlink_slot(c, slot);
		c->nvalid--;
	}
	t->valid = false;
	t->dirty = false;
}

void cache_install(struct table_cache *c, int32_t slot, uint64_t offset)
{
	struct cached_table *t = &c->slots[slot];
	uint32_t b = hash_offset(c, offset);

	assert(!t->valid && !t->pinned);
	t->offset = offset;
	t->valid = true;
	t->dirty = false;
	t->next = c->buckets[b];
	c->buckets[b] = slot;
	c->nvalid++;
	cache_touch(c, slot);
}
