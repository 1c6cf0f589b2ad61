/* SPDX-License-Identifier: MIT */
/*
 * io.c - guest reads, writes, write-zeroes, discard, block status and the
 * non-blocking mapper.  Everything walks the guest range in runs: a run is
 * a stretch of clusters of one L2 table (or of absent L2 tables) that map
 * the same way, so a long sequential request costs one host I/O per run.
 */
#include <stdlib.h>

#include "internal.h"

/* How a run of guest clusters maps; the internal form of struct qcow_map. */
struct run {
	uint64_t len;
	enum qcow_map_kind kind;
	uint64_t host;  /* DATA: host offset of the run's first byte */
	uint64_t entry; /* the first cluster's L2 entry */
	bool in_place;  /* DATA with COPIED: writable where it is */
};

int classify(struct qcow_image *img, uint64_t e, enum qcow_map_kind *kind, uint64_t *host)
{
	if (e & QCOW_OFLAG_COMPRESSED) {
		if (e & QCOW_OFLAG_COPIED)
			return qcow_fail(img, -EIO,
			                 "corrupt image: compressed cluster marked COPIED");
		*kind = QCOW_MAP_COMPRESSED;
		*host = 0;
		return check_compressed(img, e);
	}
	if (e & L2E_RESERVED_MASK)
		return qcow_fail(img, -EIO, "corrupt image: L2 entry 0x%llx has reserved bits set",
		                 (unsigned long long)e);
	*host = e & L2E_OFFSET_MASK;
	if (e & QCOW_OFLAG_ZERO) {
		*kind = QCOW_MAP_ZERO;
		return *host ? check_data_offset(img, *host) : 0;
	}
	if (!*host) {
		if (e & QCOW_OFLAG_COPIED)
			return qcow_fail(img, -EIO,
			                 "corrupt image: unallocated L2 entry marked COPIED");
		*kind = QCOW_MAP_UNALLOCATED;
		return 0;
	}
	*kind = QCOW_MAP_DATA;
	return check_data_offset(img, *host);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * Maps the run at off (at most len bytes).  With cached_only, an L2 table
 * that is not cached gives -EAGAIN and its offset in *need_table.
 */
static int map_run(struct qcow_image *img, uint64_t off, uint64_t len, bool cached_only,
                   struct run *r, uint64_t *need_table)
{
	uint64_t cs = img->cluster_size, in = offset_in_cluster(img, off);
	uint64_t l1i = off >> (img->cluster_bits + img->l2_bits);
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits;
	uint64_t l2_off, e, host;
	uint32_t i = (uint32_t)((off >> img->cluster_bits) & (img->l2_entries - 1));
	const uint8_t *table;
	enum qcow_map_kind kind;
	int32_t slot;
	int err;

	if (l1i >= img->l1_size)
		return qcow_fail(img, -EIO, "corrupt image: L1 table too small for offset");
	e = be64toh(img->l1[l1i]);
	if (e & L1E_RESERVED_MASK)
		return qcow_fail(img, -EIO, "corrupt image: L1 entry %llu has reserved bits set",
		                 (unsigned long long)l1i);
	l2_off = e & L1E_OFFSET_MASK;
	if (!l2_off) {
		uint64_t n = span - (off & (span - 1));

		while (n < len && l1i + 1 < img->l1_size &&
		       !(be64toh(img->l1[l1i + 1]) & L1E_OFFSET_MASK)) {
			l1i++;
			n += span;
		}
		*r = (struct run){.len = min_u64(n, len), .kind = QCOW_MAP_UNALLOCATED};
		return 0;
	}
	slot = cache_find(&img->l2_cache, l2_off);
	if (slot < 0) {
		if (cached_only) {
			err = check_l2_offset(img, l2_off);
			if (err < 0)
				return err;
			*need_table = l2_off;
			return -EAGAIN;
		}
		err = l2_get(img, l2_off, false, &slot);
		if (err < 0)
			return err;
		table_put(&img->l2_cache, slot);
	}
	table = cache_table(&img->l2_cache, slot);
	e = be64_at(table + 8 * (size_t)i);
	err = classify(img, e, &kind, &host);
	if (err < 0)
		return err;
	*r = (struct run){.len = cs - in,
	                  .kind = kind,
	                  .host = kind == QCOW_MAP_DATA ? host + in : 0,
	                  .entry = e,
	                  .in_place = kind == QCOW_MAP_DATA && (e & QCOW_OFLAG_COPIED)};
	if (kind == QCOW_MAP_COMPRESSED)
		goto out;
	for (uint32_t j = i + 1; j < img->l2_entries && r->len < len; j++) {
		uint64_t ej = be64_at(table + 8 * (size_t)j), hj;
		enum qcow_map_kind kj;

		if (classify(img, ej, &kj, &hj) < 0 || kj != kind)
			break;
		if (kind == QCOW_MAP_DATA && (hj != host + (uint64_t)(j - i) * cs ||
		                              (bool)(ej & QCOW_OFLAG_COPIED) != r->in_place))
			break;
		r->len += cs;
	}
out:
	r->len = min_u64(r->len, len);
	return 0;
}

int check_range(struct qcow_image *img, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (__builtin_add_overflow(off, len, &end) || end > img->size)
		return qcow_fail(img, -EINVAL, "range 0x%llx+0x%llx is beyond the end of the disk",
		                 (unsigned long long)off, (unsigned long long)len);
	return 0;
}

int check_writable(struct qcow_image *img)
{
	if (!img->writable)
		return qcow_fail(img, -EROFS, "image is open read-only");
	if (img->fenced)
		return qcow_fail(img, -EIO, "an earlier write-back failed; reopen the image");
	return reserve_fixed_tables(img);
}

static int host_read(struct qcow_image *img, void *buf, size_t len, uint64_t off)
{
	int err = img->ops->pread(img->ctx, buf, len, off);

	if (err < 0)
		return qcow_fail(img, err, "read at 0x%llx failed: %s", (unsigned long long)off,
		                 strerror(-err));
	return 0;
}

int host_write(struct qcow_image *img, const void *buf, size_t len, uint64_t off)
{
	int err;

	if (overlaps_metadata(img, off, len))
		return qcow_fail(img, -EIO,
		                 "corrupt image: refusing to write data over metadata at 0x%llx",
		                 (unsigned long long)off);
	err = img->ops->pwrite(img->ctx, buf, len, off);
	if (err < 0)
		return qcow_fail(img, err, "write at 0x%llx failed: %s", (unsigned long long)off,
		                 strerror(-err));
	img->unsynced = true;
	return 0;
}

static int image_read(struct qcow_image *img, uint8_t *buf, uint64_t off, uint64_t len);

/* Reads what the backing chain holds at [off, off+len); zeros past its end. */
static int read_backing(struct qcow_image *img, uint8_t *buf, uint64_t off, uint64_t len)
{
	struct qcow_image *b = img->backing;
	uint64_t n = 0;
	int err;

	if (b && off < b->size) {
		n = min_u64(len, b->size - off);
		err = image_read(b, buf, off, n);
		if (err < 0)
			return qcow_fail(img, err, "reading backing file: %s", b->errmsg);
	}
	memset(buf + n, 0, len - n);
	return 0;
}

static int image_read(struct qcow_image *img, uint8_t *buf, uint64_t off, uint64_t len)
{
	if (img->kind == IMAGE_RAW)
		return host_read(img, buf, len, off);
	while (len > 0) {
		struct run r;
		int err = map_run(img, off, len, false, &r, NULL);

		if (err < 0)
			return err;
		switch (r.kind) {
		case QCOW_MAP_DATA:
			err = host_read(img, buf, r.len, r.host);
			break;
		case QCOW_MAP_ZERO:
			memset(buf, 0, r.len);
			break;
		case QCOW_MAP_UNALLOCATED:
			err = read_backing(img, buf, off, r.len);
			break;
		case QCOW_MAP_COMPRESSED:
			err = read_compressed(img, r.entry, img->scratch);
			if (err == 0)
				memcpy(buf, img->scratch + offset_in_cluster(img, off), r.len);
			break;
		}
		if (err < 0)
			return err;
		buf += r.len;
		off += r.len;
		len -= r.len;
	}
	return 0;
}

int qcow_read(struct qcow_image *img, void *buf, uint64_t off, size_t len)
{
	int err = check_range(img, off, len);

	if (err < 0)
		return err;
	return image_read(img, buf, off, len);
}

/* True if the backing chain could show data at guest offset off. */
static bool backing_covers(const struct qcow_image *img, uint64_t off)
{
	return img->backing && off < img->backing->size;
}

/* What the guest cluster at cluster_off reads as now, into img->scratch. */
static int read_old_cluster(struct qcow_image *img, uint64_t e, enum qcow_map_kind kind,
                            uint64_t host, uint64_t cluster_off)
{
	switch (kind) {
	case QCOW_MAP_DATA:
		return host_read(img, img->scratch, img->cluster_size, host);
	case QCOW_MAP_ZERO:
		memset(img->scratch, 0, img->cluster_size);
		return 0;
	case QCOW_MAP_UNALLOCATED:
		return read_backing(img, img->scratch, cluster_off, img->cluster_size);
	case QCOW_MAP_COMPRESSED:
		return read_compressed(img, e, img->scratch);
	}
	return -EINVAL;
}

/* Releases the host storage an entry held, once its replacement is mapped. */
int release_entry(struct qcow_image *img, uint64_t e, enum qcow_map_kind kind, uint64_t host,
                  uint64_t keep)
{
	uint64_t off, bytes;

	if (kind == QCOW_MAP_COMPRESSED) {
		if (compressed_range(img, e, &off, &bytes) < 0)
			return qcow_fail(img, -EIO,
			                 "corrupt image: bad compressed cluster descriptor");
		return free_range_later(img, off, bytes);
	}
	if (host && host != keep)
		return free_later(img, cluster_of(img, host));
	return 0;
}

/*
 * Writes [off, off+n) inside one cluster that cannot be written in place:
 * a new cluster gets the old contents around the new bytes (copy-on-write
 * from a shared, compressed or backing cluster), then the L2 entry moves.
 * data NULL writes zeros.
 */
static int write_cluster(struct qcow_image *img, const uint8_t *data, uint64_t off, uint64_t n)
{
	uint64_t cs = img->cluster_size, in = offset_in_cluster(img, off);
	uint64_t cluster_off = off - in, e, host, target;
	enum qcow_map_kind kind;
	struct l2_ref ref;
	bool present, fresh = false;
	int err;

	err = l2_lookup(img, off, true, &present, &ref);
	if (err < 0)
		return err;
	e = l2_entry(img, &ref);
	err = classify(img, e, &kind, &host);
	if (err < 0)
		goto out_release;
	if (kind == QCOW_MAP_DATA && (e & QCOW_OFLAG_COPIED)) {
		if (data)
			err = host_write(img, data, n, host + in);
		else {
			memset(img->scratch, 0, n);
			err = host_write(img, img->scratch, n, host + in);
		}
		goto out_release;
	}
	if (kind == QCOW_MAP_ZERO && host && (e & QCOW_OFLAG_COPIED)) {
		target = host;
	} else {
		uint64_t never_used = img->end_cluster;

		if ((err = alloc_clusters(img, 1, &target)) < 0)
			goto out_release;
		fresh = true;
		/*
		 * A cluster past everything the file ever held reads as zeros
		 * already (a hole, or past the end of the file): when the old
		 * contents are zeros too, only the new bytes need writing.
		 */
		if (data && cluster_of(img, target) >= never_used &&
		    (kind == QCOW_MAP_ZERO ||
		     (kind == QCOW_MAP_UNALLOCATED && !backing_covers(img, cluster_off)))) {
			err = host_write(img, data, n, target + in);
			if (err < 0)
				goto out_unalloc;
			goto map;
		}
	}
	if (n < cs) {
		err = read_old_cluster(img, e, kind, host, cluster_off);
		if (err < 0)
			goto out_unalloc;
	}
	if (data && n == cs) {
		err = host_write(img, data, cs, target);
	} else {
		if (data)
			memcpy(img->scratch + in, data, n);
		else
			memset(img->scratch + in, 0, n);
		err = host_write(img, img->scratch, cs, target);
	}
	if (err < 0)
		goto out_unalloc;
map:
	l2_set_entry(img, &ref, target | QCOW_OFLAG_COPIED);
	err = release_entry(img, e, kind, host, target);
	goto out_release;
out_unalloc:
	/* Not mapped: the new cluster goes back (a full disk must not leak). */
	if (fresh)
		unalloc_clusters(img, target, 1);
out_release:
	l2_release(img, &ref);
	return err;
}

/* Caps a batch of whole-cluster allocations, and so the buffer it needs. */
#define MAX_BATCH_CLUSTERS 256u

/*
 * Writes whole clusters [off, off+len) that all need new clusters, as one
 * contiguous allocation and one host write when possible.  Returns the
 * number of bytes done (at least one cluster) or -errno.
 */
static int64_t write_fresh_clusters(struct qcow_image *img, const uint8_t *data, uint64_t off,
                                    uint64_t len)
{
	uint32_t first = (uint32_t)((off >> img->cluster_bits) & (img->l2_entries - 1));
	uint64_t n = len >> img->cluster_bits, target, k = 0;
	struct l2_ref ref;
	bool present;
	int err;

	if (n > img->l2_entries - first)
		n = img->l2_entries - first;
	if (n > MAX_BATCH_CLUSTERS)
		n = MAX_BATCH_CLUSTERS;
	err = l2_lookup(img, off, true, &present, &ref);
	if (err < 0)
		return err;
	err = alloc_clusters(img, n, &target);
	if (err < 0)
		goto out_release;
	err = host_write(img, data, n << img->cluster_bits, target);
	if (err < 0)
		goto out_unalloc;
	for (; k < n; k++) {
		uint64_t e, host;
		enum qcow_map_kind kind;

		ref.index = first + (uint32_t)k;
		e = l2_entry(img, &ref);
		err = classify(img, e, &kind, &host);
		if (err < 0)
			goto out_unalloc;
		l2_set_entry(img, &ref, (target + (k << img->cluster_bits)) | QCOW_OFLAG_COPIED);
		err = release_entry(img, e, kind, host, 0);
		if (err < 0) {
			k++;
			goto out_unalloc;
		}
	}
	l2_release(img, &ref);
	return (int64_t)(n << img->cluster_bits);
out_unalloc:
	/* The clusters not mapped yet go back (a full disk must not leak). */
	unalloc_clusters(img, target + (k << img->cluster_bits), n - k);
out_release:
	l2_release(img, &ref);
	return err;
}

int qcow_write(struct qcow_image *img, const void *buf, uint64_t off, size_t len)
{
	const uint8_t *p = buf;
	int err;

	if ((err = check_writable(img)) < 0 || (err = check_range(img, off, len)) < 0)
		return err;
	while (len > 0) {
		uint64_t in = offset_in_cluster(img, off), n;
		struct run r;
		int64_t done;

		err = map_run(img, off, len, false, &r, NULL);
		if (err < 0)
			return err;
		if (r.kind == QCOW_MAP_DATA && r.in_place) {
			err = host_write(img, p, r.len, r.host);
			n = r.len;
		} else if (in == 0 && len >= img->cluster_size) {
			/* r.len >= one cluster here: it starts on a boundary and len >= cs. */
			done = write_fresh_clusters(img, p, off,
			                            r.len & ~(uint64_t)(img->cluster_size - 1));
			err = done < 0 ? (int)done : 0;
			n = done < 0 ? 0 : (uint64_t)done;
		} else {
			n = min_u64(len, img->cluster_size - in);
			err = write_cluster(img, p, off, n);
		}
		if (err < 0)
			return err;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/*
 * Makes whole cluster at off read as zeros in metadata: unallocated where
 * that reads as zeros and unmapping is allowed, else a zero cluster (which
 * keeps its host cluster when unmapping is not allowed).
 */
static int zero_cluster(struct qcow_image *img, uint64_t off, bool may_unmap)
{
	bool covers = backing_covers(img, off), present;
	uint64_t e, host, next;
	enum qcow_map_kind kind;
	struct l2_ref ref;
	int err;

	err = l2_lookup(img, off, false, &present, &ref);
	if (err < 0)
		return err;
	if (!present) {
		if (!covers)
			return 0; /* unallocated, no backing: zeros already */
		e = 0;
	} else {
		e = l2_entry(img, &ref);
		l2_release(img, &ref);
	}
	err = classify(img, e, &kind, &host);
	if (err < 0)
		return err;
	if (may_unmap)
		next = covers ? QCOW_OFLAG_ZERO : 0;
	else if (host && (e & QCOW_OFLAG_COPIED))
		next = host | QCOW_OFLAG_ZERO | QCOW_OFLAG_COPIED;
	else if (kind == QCOW_MAP_UNALLOCATED && !covers)
		next = 0;
	else
		next = QCOW_OFLAG_ZERO;
	if (next == e)
		return 0;
	err = l2_lookup(img, off, true, &present, &ref);
	if (err < 0)
		return err;
	e = l2_entry(img, &ref); /* the same entry, in a private table now */
	l2_set_entry(img, &ref, next);
	err = release_entry(img, e, kind, host, next & L2E_OFFSET_MASK);
	l2_release(img, &ref);
	return err;
}

/* Zeroes or discards the whole clusters of [off, off+len) in metadata. */
static int zero_clusters(struct qcow_image *img, uint64_t off, uint64_t len, bool may_unmap)
{
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits;

	while (len > 0) {
		uint64_t l1i = off >> (img->cluster_bits + img->l2_bits), n = img->cluster_size;
		int err;

		/* Skip absent L2 tables over which nothing shows through. */
		if (!(be64toh(img->l1[l1i]) & L1E_OFFSET_MASK) && !backing_covers(img, off)) {
			n = min_u64(len, span - (off & (span - 1)));
		} else {
			err = zero_cluster(img, off, may_unmap);
			if (err < 0)
				return err;
		}
		if (n > len)
			n = len;
		off += n;
		len -= n;
	}
	return 0;
}

static bool reads_as_zero(struct qcow_image *img, uint64_t off, uint64_t len)
{
	while (len > 0) {
		struct qcow_extent ext;

		if (qcow_block_status(img, off, len, &ext) < 0 || !(ext.flags & QCOW_EXTENT_ZERO))
			return false;
		off += ext.length;
		len -= ext.length;
	}
	return true;
}

/*
 * Splits [off, off+len) into a partial head, whole clusters, and a partial
 * tail.  A last cluster cut short by the end of the disk counts as whole.
 */
static void split_clusters(const struct qcow_image *img, uint64_t off, uint64_t len, uint64_t *head,
                           uint64_t *body, uint64_t *tail)
{
	uint64_t cs = img->cluster_size, in = off & (cs - 1), end = off + len;

	*head = in ? min_u64(len, cs - in) : 0;
	if (*head == len) {
		*body = *tail = 0;
		return;
	}
	*tail = end == img->size ? 0 : (end & (cs - 1));
	*body = len - *head - *tail;
}

int qcow_write_zeroes(struct qcow_image *img, uint64_t off, uint64_t len, unsigned flags)
{
	uint64_t head, body, tail;
	bool need_head, need_tail;
	int err;

	if ((err = check_writable(img)) < 0 || (err = check_range(img, off, len)) < 0)
		return err;
	split_clusters(img, off, len, &head, &body, &tail);
	need_head = head && !reads_as_zero(img, off, head);
	need_tail = tail && !reads_as_zero(img, off + len - tail, tail);
	if ((flags & QCOW_ZERO_FAST) && (need_head || need_tail))
		return qcow_fail(img, -ENOTSUP, "zeroing a partial cluster needs a data write");
	if (need_head && (err = write_cluster(img, NULL, off, head)) < 0)
		return err;
	if (body && (err = zero_clusters(img, off + head, body, flags & QCOW_ZERO_MAY_UNMAP)) < 0)
		return err;
	if (need_tail && (err = write_cluster(img, NULL, off + len - tail, tail)) < 0)
		return err;
	return 0;
}

int qcow_discard(struct qcow_image *img, uint64_t off, uint64_t len)
{
	uint64_t head, body, tail;
	int err;

	if ((err = check_writable(img)) < 0 || (err = check_range(img, off, len)) < 0)
		return err;
	split_clusters(img, off, len, &head, &body, &tail);
	if (!body)
		return 0;
	return zero_clusters(img, off + head, body, true);
}

static int status_run(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_extent *x)
{
	struct run r;
	int err;

	if (img->kind == IMAGE_RAW) {
		*x = (struct qcow_extent){off, len, QCOW_EXTENT_DATA, 0};
		return 0;
	}
	err = map_run(img, off, len, false, &r, NULL);
	if (err < 0)
		return err;
	*x = (struct qcow_extent){off, r.len, 0, 0};
	switch (r.kind) {
	case QCOW_MAP_DATA:
	case QCOW_MAP_COMPRESSED:
		x->flags = QCOW_EXTENT_DATA;
		return 0;
	case QCOW_MAP_ZERO:
		x->flags = QCOW_EXTENT_ZERO;
		return 0;
	case QCOW_MAP_UNALLOCATED:
		break;
	}
	if (!backing_covers(img, off)) {
		x->flags = QCOW_EXTENT_ZERO;
		x->depth = -1;
		return 0;
	}
	err = status_run(img->backing, off, min_u64(r.len, img->backing->size - off), x);
	if (err < 0)
		return qcow_fail(img, err, "backing file: %s", img->backing->errmsg);
	if (x->depth >= 0)
		x->depth++;
	return 0;
}

/* Bounds the work of one block-status call on a fragmented image. */
#define MAX_STATUS_RUNS 4096

int qcow_block_status(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	struct qcow_extent x, next;
	int err = check_range(img, off, len);

	if (err < 0)
		return err;
	if (len == 0)
		return qcow_fail(img, -EINVAL, "block status of an empty range");
	err = status_run(img, off, len, &x);
	for (int i = 0; err == 0 && i < MAX_STATUS_RUNS && x.length < len; i++) {
		err = status_run(img, off + x.length, len - x.length, &next);
		if (err < 0 || next.flags != x.flags || next.depth != x.depth)
			break;
		x.length += next.length;
	}
	if (err < 0)
		return err;
	*ext = x;
	return 0;
}

int qcow_stored_bytes(struct qcow_image *img, uint64_t *out)
{
	uint64_t off = 0, total = 0;
	struct qcow_extent x;
	int err;

	while (off < img->size) {
		err = qcow_block_status(img, off, img->size - off, &x);
		if (err < 0)
			return err;
		if (x.length == 0) /* cannot happen: a run spans at least one cluster */
			return qcow_fail(img, -EIO, "block status made no progress");
		if ((x.flags & QCOW_EXTENT_DATA) && x.depth == 0)
			total += x.length;
		off += x.length;
	}
	*out = total;
	return 0;
}

int qcow_map_cached(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_map *map,
                    uint64_t *need_table)
{
	struct run r;
	int err = check_range(img, off, len);

	if (err < 0)
		return err;
	if (img->kind == IMAGE_RAW) {
		*map = (struct qcow_map){off, len, QCOW_MAP_DATA, off, QCOW_NEED_NOTHING};
		return 0;
	}
	err = map_run(img, off, len, true, &r, need_table);
	if (err < 0)
		return err;
	*map = (struct qcow_map){.guest_offset = off,
	                         .length = r.len,
	                         .kind = r.kind,
	                         .host_offset = r.host,
	                         .need = r.in_place ? QCOW_NEED_NOTHING : QCOW_NEED_ALLOCATE};
	return 0;
}

int qcow_flush(struct qcow_image *img)
{
	int err;

	if (!img->writable)
		return 0;
	if (img->fenced)
		return qcow_fail(img, -EIO, "an earlier write-back failed; reopen the image");
	err = write_back(img);
	return err < 0 ? err : sync_or_fence(img);
}
