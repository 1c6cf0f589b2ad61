/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the qcow library's private types: on-disk layout constants,
 * the image, the table caches.  Only the qcow library sources include this.
 */
#ifndef BLOCKD_QCOW_INTERNAL_H
#define BLOCKD_QCOW_INTERNAL_H

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "qcow_limits.h"
#include "qcow.h"

#define QCOW_MAGIC 0x514649fbu

/* Header byte offsets (qcow2 spec, 'Header'). */
enum {
	HDR_MAGIC = 0,
	HDR_VERSION = 4,
	HDR_BACKING_OFFSET = 8,
	HDR_BACKING_SIZE = 16,
	HDR_CLUSTER_BITS = 20,
	HDR_SIZE = 24,
	HDR_CRYPT = 32,
	HDR_L1_SIZE = 36,
	HDR_L1_OFFSET = 40,
	HDR_REFTABLE_OFFSET = 48,
	HDR_REFTABLE_CLUSTERS = 56,
	HDR_NB_SNAPSHOTS = 60,
	HDR_SNAPSHOTS_OFFSET = 64,
	HDR_V2_LENGTH = 72,
	HDR_INCOMPAT = 72,
	HDR_COMPAT = 80,
	HDR_AUTOCLEAR = 88,
	HDR_REFCOUNT_ORDER = 96,
	HDR_HEADER_LENGTH = 100,
	HDR_V3_MIN_LENGTH = 104,
	HDR_COMPRESSION_TYPE = 104,
	HDR_V3_LENGTH = 112, /* what we write: with the compression type byte */
};

enum {
	INCOMPAT_DIRTY = 1ull << 0,
	INCOMPAT_CORRUPT = 1ull << 1,
	INCOMPAT_DATA_FILE = 1ull << 2,
	INCOMPAT_COMPRESSION = 1ull << 3,
	INCOMPAT_EXTL2 = 1ull << 4,
	COMPAT_LAZY_REFCOUNTS = 1ull << 0,
};

enum {
	EXT_END = 0x00000000u,
	EXT_BACKING_FORMAT = 0xe2792acau,
	EXT_FEATURE_TABLE = 0x6803f857u,
	EXT_BITMAPS = 0x23852875u,
	EXT_CRYPTO = 0x0537be77u,
	EXT_DATA_FILE = 0x44415441u,
};

#define L1E_OFFSET_MASK       0x00fffffffffffe00ull
#define L1E_RESERVED_MASK     0x7f000000000001ffull
#define L2E_OFFSET_MASK       0x00fffffffffffe00ull
#define L2E_RESERVED_MASK     0x3f000000000001feull
#define RTE_OFFSET_MASK       0xfffffffffffffe00ull
#define RTE_RESERVED_MASK     0x00000000000001ffull
#define QCOW_OFLAG_COPIED     (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO       1ull

/*
 * A cache of cluster-sized tables (L2 tables or refcount blocks), keyed by
 * host offset, with a chained hash and clock eviction.  Tables are kept exactly as on
 * disk (big-endian), so a write-back is one pwrite.  Pinned entries are
 * never evicted.
 */
struct table_cache {
	uint32_t table_bytes;
	uint32_t capacity;
	uint32_t nbuckets; /* power of two */
	uint8_t *mem;      /* capacity * table_bytes */
	uint32_t nvalid;
	uint32_t hand; /* clock hand for eviction */
	struct cached_table {
		uint64_t offset;
		int32_t next; /* hash chain, -1 ends it */
		uint16_t pinned;
		bool valid;
		bool dirty;
		bool referenced; /* used since the clock hand last passed */
	} * slots;
	int32_t *buckets;
};

enum image_kind { IMAGE_QCOW2, IMAGE_RAW };

enum meta_kind {
	META_NONE,
	META_HEADER,
	META_L1,
	META_REFTABLE,
	META_REFBLOCK,
	META_L2,
	META_SNAPSHOTS, /* snapshot table and snapshot L1 tables */
};

/* Host clusters that hold metadata (metamap.c). */
struct meta_map {
	uint64_t *keys; /* cluster index + 1; 0 is an empty slot */
	uint8_t *kinds;
	uint32_t cap, n;
};

struct qcow_image {
	enum image_kind kind;
	const struct qcow_io_ops *ops;
	void *ctx;
	char *path;
	bool writable;
	char errmsg[512];

	/* Header, as parsed; hdr_raw keeps the original bytes for rewriting. */
	uint32_t version;
	uint32_t cluster_bits;
	uint32_t cluster_size;
	uint64_t size;
	uint32_t header_length;
	uint8_t *hdr_raw; /* header_length bytes */
	uint64_t incompat, compat, autoclear;
	unsigned refcount_order;
	enum qcow_compression compression;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t snapshots_bytes; /* size of the snapshot table */
	struct snapshot {
		uint64_t l1_offset;
		uint32_t l1_size;
		uint64_t disk_size;
		uint8_t *raw; /* the entry as on disk, without padding */
		uint32_t raw_len;
		char *id, *name;
	} * snapshots;
	char backing_name[QCOW_MAX_BACKING_NAME + 1];
	char backing_format[32];
	char *backing_path;
	struct qcow_image *backing;
	int chain_depth;

	/* Derived. */
	uint32_t l2_entries;       /* entries per L2 table */
	uint32_t l2_bits;          /* log2(l2_entries) */
	uint32_t refblock_entries; /* refcounts per refblock */
	unsigned refcount_bits;

	/* Active L1 table, big-endian as on disk. */
	uint64_t *l1;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint32_t l1_dirty_lo, l1_dirty_hi; /* dirty entry range, lo > hi: clean */

	/* Refcount table, host-endian. */
	uint64_t *reftable;
	uint32_t reftable_entries;
	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	bool reftable_dirty;

	struct table_cache l2_cache;
	struct table_cache rb_cache;
	struct meta_map meta;

	/* Allocation. */
	uint64_t end_cluster; /* first cluster index past everything in use */
	uint64_t free_hint;   /* no free cluster below this index */
	/* Clusters [reserved_lo, reserved_hi) have host space reserved, none punched since. */
	uint64_t reserved_lo, reserved_hi;
	bool cannot_reserve;    /* ops->allocate said -EOPNOTSUPP: do not ask again */
	bool fixed_reserved;    /* reserve_fixed_tables() succeeded */
	uint64_t *pending_free; /* cluster indices to decrement at next flush */
	uint32_t npending, pending_cap;
	bool meta_dirty; /* something to write back on flush */
	bool unsynced;   /* written to since the last sync */
	bool dirty_bit_on_disk;
	bool lazy;          /* lazy refcounts: write-back skips barriers */
	uint64_t file_size; /* host file size at open */
	int fenced;         /* a failed sync fences the image: -EIO forever */

	uint64_t cpos; /* next free byte of the host cluster being packed, 0: none */

	/* Scratch clusters for copy-on-write and decompression. */
	uint8_t *scratch;
	uint8_t *cscratch; /* compressed input, 2 clusters */
};

/* errors.c */
int qcow_fail(struct qcow_image *img, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* cache.c */
int cache_init(struct table_cache *c, uint32_t table_bytes, uint64_t budget_bytes);
void cache_release(struct table_cache *c);
/* Returns the slot of offset if cached, else -1. */
int32_t cache_find(struct table_cache *c, uint64_t offset);
static inline uint8_t *cache_table(struct table_cache *c, int32_t slot)
{
	return c->mem + (size_t)slot * c->table_bytes;
}
/*
 * Picks a slot to reuse: an empty one, else an unpinned table not used
 * lately.  A dirty victim must be written back by the caller before
 * cache_drop().  Returns the slot or -ENOMEM if all are pinned.
 */
int32_t cache_victim(struct table_cache *c);
void cache_install(struct table_cache *c, int32_t slot, uint64_t offset);
void cache_drop(struct table_cache *c, int32_t slot);
void cache_touch(struct table_cache *c, int32_t slot);

/* tables.c: loading and writing back L2 tables and refblocks. */
int check_l2_offset(struct qcow_image *img, uint64_t l2_offset);
int l2_get(struct qcow_image *img, uint64_t l2_offset, bool fresh, int32_t *slot);
int rb_get(struct qcow_image *img, uint64_t rb_offset, bool fresh, int32_t *slot);
void table_put(struct table_cache *c, int32_t slot);
void table_dirty(struct qcow_image *img, struct table_cache *c, int32_t slot);
int write_back(struct qcow_image *img);
int sync_or_fence(struct qcow_image *img);
void forget_table(struct qcow_image *img, uint64_t off);

/* refcount.c */
int refcount_get(struct qcow_image *img, uint64_t cluster, uint64_t *rc);
int refcount_set(struct qcow_image *img, uint64_t cluster, uint64_t rc);
int refcount_add(struct qcow_image *img, uint64_t cluster);
int alloc_clusters(struct qcow_image *img, uint64_t n, uint64_t *offset);
void unalloc_clusters(struct qcow_image *img, uint64_t offset, uint64_t n);
/*
 * Reserves host space, once per open, for the tables rewritten in place
 * (header, refcount table, L1 table): creators leave them sparse (an L1
 * table of zeros is a hole), and their first write, at a flush, must not be
 * what finds the disk full.  Called before a change; 0 or -ENOSPC.
 */
int reserve_fixed_tables(struct qcow_image *img);
int free_later(struct qcow_image *img, uint64_t cluster);
int free_range_later(struct qcow_image *img, uint64_t host_off, uint64_t bytes);
int apply_pending_frees(struct qcow_image *img);
uint64_t rb_entry_get(const struct qcow_image *img, const uint8_t *rb, uint32_t i);
void rb_entry_set(const struct qcow_image *img, uint8_t *rb, uint32_t i, uint64_t v);

/* header.c */
int header_parse(struct qcow_image *img, char *err, size_t errlen);
int validate_features(struct qcow_image *img, bool rdwr, char *err, size_t errlen);
int header_write(struct qcow_image *img);
int header_commit(struct qcow_image *img);
int set_dirty_bit(struct qcow_image *img, bool on);

/* cluster.c: guest -> host mapping and L2 updates. */
struct l2_ref {
	int32_t slot;   /* pinned L2 table slot */
	uint32_t index; /* entry index in it */
};
int l2_lookup(struct qcow_image *img, uint64_t guest_off, bool for_write, bool *present,
              struct l2_ref *ref);
void l2_release(struct qcow_image *img, struct l2_ref *ref);
uint64_t l2_entry(struct qcow_image *img, const struct l2_ref *ref);
void l2_set_entry(struct qcow_image *img, const struct l2_ref *ref, uint64_t entry);
void l1_set(struct qcow_image *img, uint64_t i, uint64_t entry);
int compressed_range(const struct qcow_image *img, uint64_t entry, uint64_t *host_off,
                     uint64_t *bytes);
int read_compressed(struct qcow_image *img, uint64_t entry, uint8_t *out);
int check_data_offset(struct qcow_image *img, uint64_t host_off);
int check_compressed(struct qcow_image *img, uint64_t entry);

/* metamap.c */
int meta_add(struct meta_map *m, uint64_t cluster, enum meta_kind kind);
int meta_add_range(struct meta_map *m, uint64_t first, uint64_t n, enum meta_kind kind);
enum meta_kind meta_kind(const struct meta_map *m, uint64_t cluster);
void meta_remove(struct meta_map *m, uint64_t cluster);
void meta_release(struct meta_map *m);
int meta_build(struct qcow_image *img);
bool overlaps_metadata(struct qcow_image *img, uint64_t off, uint64_t len);

/* snapshot.c */
int snapshots_load(struct qcow_image *img, char *err, size_t errlen);
void snapshots_free(struct qcow_image *img);
int snapshot_select(struct qcow_image *img, const char *name, char *err, size_t errlen);

/* io.c */
int classify(struct qcow_image *img, uint64_t e, enum qcow_map_kind *kind, uint64_t *host);
int check_range(struct qcow_image *img, uint64_t off, uint64_t len);
int check_writable(struct qcow_image *img);
int host_write(struct qcow_image *img, const void *buf, size_t len, uint64_t off);
int release_entry(struct qcow_image *img, uint64_t e, enum qcow_map_kind kind, uint64_t host,
                  uint64_t keep);

/* check.c */
int rebuild_refcounts(struct qcow_image *img);
int fix_copied(struct qcow_image *img);
int repair_dirty(struct qcow_image *img, struct qcow_check_result *found);

static inline uint64_t be64_at(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}
static inline uint32_t be32_at(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}
static inline uint16_t be16_at(const void *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return be16toh(v);
}
static inline void put_be64(void *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}
static inline void put_be32(void *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}
static inline void put_be16(void *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
}

static inline uint64_t cluster_of(const struct qcow_image *img, uint64_t off)
{
	return off >> img->cluster_bits;
}
static inline uint64_t offset_in_cluster(const struct qcow_image *img, uint64_t off)
{
	return off & (img->cluster_size - 1);
}

#endif
