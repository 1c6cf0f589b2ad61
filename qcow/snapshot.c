/* SPDX-License-Identifier: MIT */
/*
 * snapshot.c - internal snapshots (qcow2 spec, 'Snapshots'): the snapshot
 * table, and create, delete and revert.
 *
 * A snapshot is a saved copy of the L1 table.  Creating one adds one
 * reference to every L2 table and data cluster the active L1 reaches, so
 * later writes copy instead of overwriting; deleting one drops them again.
 * Each operation writes every new structure first, makes the refcount
 * increments durable, and then switches the header in one write; only
 * after that switch is on disk are references dropped.  A crash at any
 * point leaves the old state or the new one, plus at worst leaked clusters.
 *
 * Table entries are kept as read (unknown extra data survives rewrites).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

/* Entry layout (v3: extra data holds at least the two 64-bit sizes). */
enum {
	SN_L1_OFFSET = 0,
	SN_L1_SIZE = 8,
	SN_ID_LEN = 12,
	SN_NAME_LEN = 14,
	SN_DATE_SEC = 16,
	SN_DATE_NSEC = 20,
	SN_VM_CLOCK = 24,
	SN_VM_STATE_SIZE = 32,
	SN_EXTRA_SIZE = 36,
	SN_FIXED = 40,
	SN_EXTRA_VM_STATE = 0,
	SN_EXTRA_DISK_SIZE = 8,
	SN_EXTRA_ICOUNT = 16,
	SN_EXTRA_OURS = 24,
};

#define MAX_ID_LEN   127
#define MAX_NAME_LEN 1023

static void snapshot_release(struct snapshot *s)
{
	free(s->raw);
	free(s->id);
	free(s->name);
}

void snapshots_free(struct qcow_image *img)
{
	for (uint32_t i = 0; img->snapshots && i < img->nb_snapshots; i++)
		snapshot_release(&img->snapshots[i]);
	free(img->snapshots);
	img->snapshots = NULL;
}

static char *dup_string(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

/* Parses the entry at p (avail bytes); returns its unpadded length or -errno. */
static int64_t parse_entry(struct qcow_image *img, const uint8_t *p, uint64_t avail,
                           struct snapshot *s)
{
	uint64_t extra, len;
	uint16_t id_len, name_len;

	if (avail < SN_FIXED)
		return -EINVAL;
	extra = be32_at(p + SN_EXTRA_SIZE);
	id_len = be16_at(p + SN_ID_LEN);
	name_len = be16_at(p + SN_NAME_LEN);
	len = SN_FIXED + extra + id_len + name_len;
	if (len > avail || extra > QCOW_MAX_SNAPSHOT_TABLE_BYTES)
		return -EINVAL;
	s->l1_offset = be64_at(p + SN_L1_OFFSET);
	s->l1_size = be32_at(p + SN_L1_SIZE);
	s->disk_size = extra >= SN_EXTRA_DISK_SIZE + 8 ? be64_at(p + SN_FIXED + SN_EXTRA_DISK_SIZE)
	                                               : img->size;
	s->raw_len = (uint32_t)len;
	s->raw = malloc(len);
	s->id = dup_string(p + SN_FIXED + extra, id_len);
	s->name = dup_string(p + SN_FIXED + extra + id_len, name_len);
	if (!s->raw || !s->id || !s->name)
		return -ENOMEM;
	memcpy(s->raw, p, len);
	return (int64_t)len;
}

static int check_entry(struct qcow_image *img, const struct snapshot *s)
{
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits;

	if ((s->l1_offset & (img->cluster_size - 1)) ||
	    (uint64_t)s->l1_size * 8 > QCOW_MAX_L1_BYTES ||
	    s->l1_offset + 8 * (uint64_t)s->l1_size > QCOW_MAX_HOST_OFFSET ||
	    (s->l1_size && s->l1_offset < img->cluster_size))
		return -EINVAL;
	/* Inside the file, like the active L1 table (the metadata map records it). */
	if (s->l1_size &&
	    s->l1_offset + 8 * (uint64_t)s->l1_size >
	        ((img->file_size + img->cluster_size - 1) & ~(uint64_t)(img->cluster_size - 1)))
		return -EINVAL;
	if (s->disk_size > QCOW_MAX_VIRTUAL_SIZE ||
	    s->l1_size < s->disk_size / span + (s->disk_size % span != 0))
		return -EINVAL;
	return 0;
}

int snapshots_load(struct qcow_image *img, char *err, size_t errlen)
{
	uint64_t off = 0, max = QCOW_MAX_SNAPSHOT_TABLE_BYTES, l1_total = 0;
	uint8_t *buf;
	int e = 0;

	if (!img->nb_snapshots)
		return 0;
	/* Read what the table can be at most, bounded by the file's end. */
	if (img->snapshots_offset >= img->file_size) {
		set_err(err, errlen, "%s: snapshot table lies beyond the end of the file",
		        img->path);
		return -EINVAL;
	}
	if (max > img->file_size - img->snapshots_offset)
		max = img->file_size - img->snapshots_offset;
	buf = malloc(max);
	img->snapshots = calloc(img->nb_snapshots, sizeof(*img->snapshots));
	if (!buf || !img->snapshots) {
		free(buf);
		set_err(err, errlen, "%s: no memory for the snapshot table", img->path);
		return -ENOMEM;
	}
	e = img->ops->pread(img->ctx, buf, max, img->snapshots_offset);
	if (e < 0) {
		set_err(err, errlen, "%s: cannot read the snapshot table: %s", img->path,
		        strerror(-e));
		goto out_free;
	}
	for (uint32_t i = 0; i < img->nb_snapshots; i++) {
		struct snapshot *s = &img->snapshots[i];
		int64_t len = parse_entry(img, buf + off, max - off, s);

		if (len == -ENOMEM) {
			set_err(err, errlen, "%s: no memory for the snapshot table", img->path);
			e = -ENOMEM;
			goto out_free;
		}
		if (len < 0) {
			set_err(err, errlen, "%s: snapshot table is truncated", img->path);
			e = -EINVAL;
			goto out_free;
		}
		l1_total += 8 * (uint64_t)s->l1_size;
		if (l1_total > QCOW_MAX_SNAPSHOT_L1_BYTES) {
			set_err(err, errlen, "%s: snapshot L1 tables exceed %u MiB in all",
			        img->path, QCOW_MAX_SNAPSHOT_L1_BYTES >> 20);
			e = -EFBIG;
			goto out_free;
		}
		if (check_entry(img, s) < 0) {
			set_err(err, errlen, "%s: snapshot %u has an invalid L1 table", img->path,
			        i);
			e = -EINVAL;
			goto out_free;
		}
		/* Padding to 8 may end past the end of the file, as qemu writes it. */
		off += ((uint64_t)len + 7) & ~7ull;
		if (off > max && i + 1 < img->nb_snapshots) {
			set_err(err, errlen, "%s: snapshot table is truncated", img->path);
			e = -EINVAL;
			goto out_free;
		}
	}
	img->snapshots_bytes = off;
	free(buf);
	return 0;
out_free:
	free(buf);
	snapshots_free(img);
	return e;
}

static struct snapshot *find_snapshot(struct qcow_image *img, const char *name)
{
	for (uint32_t i = 0; i < img->nb_snapshots; i++)
		if (!strcmp(img->snapshots[i].name, name))
			return &img->snapshots[i];
	for (uint32_t i = 0; i < img->nb_snapshots; i++)
		if (!strcmp(img->snapshots[i].id, name))
			return &img->snapshots[i];
	return NULL;
}

uint32_t qcow_snapshot_count(const struct qcow_image *img)
{
	return img->nb_snapshots;
}

int qcow_snapshot_get(const struct qcow_image *img, uint32_t index, struct qcow_snapshot_info *info)
{
	const struct snapshot *s;
	const uint8_t *p;
	uint32_t extra;

	if (index >= img->nb_snapshots)
		return -ENOENT;
	s = &img->snapshots[index];
	p = s->raw;
	extra = be32_at(p + SN_EXTRA_SIZE);
	memset(info, 0, sizeof(*info));
	snprintf(info->id, sizeof(info->id), "%s", s->id);
	snprintf(info->name, sizeof(info->name), "%s", s->name);
	info->date_sec = be32_at(p + SN_DATE_SEC);
	info->date_nsec = be32_at(p + SN_DATE_NSEC);
	info->vm_clock_ns = be64_at(p + SN_VM_CLOCK);
	info->vm_state_bytes = extra >= SN_EXTRA_VM_STATE + 8
	                           ? be64_at(p + SN_FIXED + SN_EXTRA_VM_STATE)
	                           : be32_at(p + SN_VM_STATE_SIZE);
	info->disk_size_bytes = s->disk_size;
	return 0;
}

/* Adds addend (+1 or -1) to every L2 table and data cluster l1 reaches. */
static int l1_add_refs(struct qcow_image *img, const uint64_t *l1, uint32_t n, int addend)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2 = be64toh(l1[i]) & L1E_OFFSET_MASK;
		int32_t slot;
		int err;

		if (!l2)
			continue;
		err = l2_get(img, l2, false, &slot);
		if (err < 0)
			return err;
		for (uint32_t j = 0; j < img->l2_entries && err == 0; j++) {
			uint64_t e = be64_at(cache_table(&img->l2_cache, slot) + 8 * (size_t)j);
			uint64_t host = e & L2E_OFFSET_MASK, bytes;

			if (e & QCOW_OFLAG_COMPRESSED) {
				err = compressed_range(img, e, &host, &bytes);
				if (err < 0)
					err = qcow_fail(img, -EIO,
					                "corrupt image: bad compressed entry");
			} else {
				bytes = host ? img->cluster_size : 0;
			}
			for (uint64_t c = cluster_of(img, host);
			     err == 0 && bytes && c <= cluster_of(img, host + bytes - 1); c++)
				err = addend > 0 ? refcount_add(img, c) : free_later(img, c);
		}
		table_put(&img->l2_cache, slot);
		if (err == 0)
			err = addend > 0 ? refcount_add(img, cluster_of(img, l2))
			                 : free_later(img, cluster_of(img, l2));
		if (err < 0)
			return err;
	}
	return 0;
}

/* Writes a table of n entries to new clusters; *off is 0 for an empty table. */
static int write_table(struct qcow_image *img, const struct snapshot *list, uint32_t n,
                       uint64_t *off, uint64_t *bytes)
{
	uint64_t total = 0, cs = img->cluster_size, pos = 0;
	uint8_t *buf;
	int err;

	for (uint32_t i = 0; i < n; i++)
		total += ((uint64_t)list[i].raw_len + 7) & ~7ull;
	*off = 0;
	*bytes = total;
	if (!total)
		return 0;
	if (total > QCOW_MAX_SNAPSHOT_TABLE_BYTES)
		return qcow_fail(img, -EFBIG, "the snapshot table would exceed %u MiB",
		                 QCOW_MAX_SNAPSHOT_TABLE_BYTES >> 20);
	buf = calloc(1, total);
	if (!buf)
		return qcow_fail(img, -ENOMEM, "no memory for the snapshot table");
	for (uint32_t i = 0; i < n; i++) {
		memcpy(buf + pos, list[i].raw, list[i].raw_len);
		pos += ((uint64_t)list[i].raw_len + 7) & ~7ull;
	}
	err = alloc_clusters(img, (total + cs - 1) / cs, off);
	if (err == 0)
		err = meta_add_range(&img->meta, cluster_of(img, *off), (total + cs - 1) / cs,
		                     META_SNAPSHOTS);
	if (err == 0 && (err = img->ops->pwrite(img->ctx, buf, total, *off)) < 0)
		qcow_fail(img, err, "writing the snapshot table failed: %s", strerror(-err));
	free(buf);
	return err;
}

/* Frees the clusters of [off, off+bytes) once nothing on disk points there. */
static int free_bytes_later(struct qcow_image *img, uint64_t off, uint64_t bytes)
{
	return bytes ? free_range_later(img, off, bytes) : 0;
}

/*
 * Makes list (n entries) the snapshot table: writes it, makes every
 * refcount it depends on durable, switches the header, and queues the old
 * table's clusters for freeing.  On success img owns list.
 */
static int switch_table(struct qcow_image *img, struct snapshot *list, uint32_t n)
{
	uint64_t off, bytes, old_off = img->snapshots_offset, old_bytes = img->snapshots_bytes;
	int err;

	err = write_table(img, list, n, &off, &bytes);
	if (err == 0)
		err = write_back(img);
	if (err == 0)
		err = sync_or_fence(img);
	if (err < 0)
		return err;
	img->snapshots_offset = off;
	img->nb_snapshots = n;
	err = header_commit(img);
	if (err < 0)
		return err;
	img->snapshots = list;
	img->snapshots_bytes = bytes;
	return free_bytes_later(img, old_off, old_bytes);
}

static int check_name(struct qcow_image *img, const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > MAX_NAME_LEN)
		return qcow_fail(img, -EINVAL, "snapshot name must be 1 to %d bytes", MAX_NAME_LEN);
	if (find_snapshot(img, name))
		return qcow_fail(img, -EEXIST, "snapshot '%s' already exists", name);
	return 0;
}

static int new_entry(struct qcow_image *img, const char *name, uint64_t l1_off, struct snapshot *s)
{
	unsigned long max_id = 0;
	char id[32];
	struct timespec now;
	size_t id_len, name_len = strlen(name);
	uint8_t *p;

	for (uint32_t i = 0; i < img->nb_snapshots; i++) {
		unsigned long v = strtoul(img->snapshots[i].id, NULL, 10);

		if (v > max_id)
			max_id = v;
	}
	snprintf(id, sizeof(id), "%lu", max_id + 1);
	id_len = strlen(id);
	clock_gettime(CLOCK_REALTIME, &now);
	memset(s, 0, sizeof(*s));
	s->raw_len = (uint32_t)(SN_FIXED + SN_EXTRA_OURS + id_len + name_len);
	s->raw = p = calloc(1, s->raw_len);
	s->id = strdup(id);
	s->name = strdup(name);
	if (!s->raw || !s->id || !s->name) {
		snapshot_release(s);
		return qcow_fail(img, -ENOMEM, "no memory for a snapshot");
	}
	s->l1_offset = l1_off;
	s->l1_size = img->l1_size;
	s->disk_size = img->size;
	put_be64(p + SN_L1_OFFSET, l1_off);
	put_be32(p + SN_L1_SIZE, img->l1_size);
	put_be16(p + SN_ID_LEN, (uint16_t)id_len);
	put_be16(p + SN_NAME_LEN, (uint16_t)name_len);
	put_be32(p + SN_DATE_SEC, (uint32_t)now.tv_sec);
	put_be32(p + SN_DATE_NSEC, (uint32_t)now.tv_nsec);
	put_be32(p + SN_EXTRA_SIZE, SN_EXTRA_OURS);
	put_be64(p + SN_FIXED + SN_EXTRA_DISK_SIZE, img->size);
	put_be64(p + SN_FIXED + SN_EXTRA_ICOUNT, UINT64_MAX); /* -1: no icount */
	memcpy(p + SN_FIXED + SN_EXTRA_OURS, id, id_len);
	memcpy(p + SN_FIXED + SN_EXTRA_OURS + id_len, name, name_len);
	return 0;
}

/*
 * Writes a copy of the active L1 table (COPIED bits cleared) to new
 * clusters.  On failure they are given back: nothing has changed.
 */
static int copy_l1(struct qcow_image *img, uint64_t *off)
{
	uint64_t cs = img->cluster_size, bytes = 8 * (uint64_t)img->l1_size;
	uint64_t n = (bytes + cs - 1) / cs;
	uint64_t *copy;
	int err;

	*off = 0;
	if (!bytes)
		return 0;
	copy = malloc(bytes);
	if (!copy)
		return qcow_fail(img, -ENOMEM, "no memory for the L1 copy");
	for (uint32_t i = 0; i < img->l1_size; i++)
		copy[i] = img->l1[i] & htobe64(~QCOW_OFLAG_COPIED);
	err = alloc_clusters(img, n, off);
	if (err < 0)
		goto out_free;
	err = meta_add_range(&img->meta, cluster_of(img, *off), n, META_SNAPSHOTS);
	if (err == 0 && (err = img->ops->pwrite(img->ctx, copy, bytes, *off)) < 0)
		qcow_fail(img, err, "writing the snapshot's L1 table failed: %s", strerror(-err));
	if (err < 0) {
		for (uint64_t i = 0; i < n; i++)
			meta_remove(&img->meta, cluster_of(img, *off) + i);
		unalloc_clusters(img, *off, n);
	}
out_free:
	free(copy);
	return err;
}

static int writable_image(struct qcow_image *img)
{
	if (!img->writable)
		return qcow_fail(img, -EROFS, "image is open read-only");
	if (img->fenced)
		return qcow_fail(img, -EIO, "an earlier write-back failed; reopen the image");
	if (img->version < 3)
		return qcow_fail(img, -ENOTSUP, "snapshots need a version 3 image");
	return 0;
}

/*
 * A snapshot operation changes refcounts and COPIED flags in several
 * writes that no ordering makes consistent at every instant (a refcount of
 * 2 next to a COPIED flag, or 1 next to none).  So the image is marked
 * dirty for the length of the operation: a crash inside it leaves an image
 * whose next writable open rebuilds refcounts and COPIED flags.  The
 * header switch itself is still the single point where the snapshot list
 * changes.
 */
static int op_begin(struct qcow_image *img, bool *marked)
{
	int err = qcow_flush(img);

	*marked = false;
	if (err < 0 || img->dirty_bit_on_disk)
		return err;
	err = set_dirty_bit(img, true);
	*marked = err == 0;
	return err;
}

static int op_end(struct qcow_image *img, bool marked)
{
	int err = qcow_flush(img);

	if (err == 0 && marked)
		err = set_dirty_bit(img, false);
	return err;
}

int qcow_snapshot_create(struct qcow_image *img, const char *name)
{
	struct snapshot *list;
	uint64_t l1_off;
	uint32_t n;
	bool marked;
	int err;

	if ((err = writable_image(img)) < 0 || (err = check_name(img, name)) < 0)
		return err;
	if (img->nb_snapshots >= QCOW_MAX_SNAPSHOTS)
		return qcow_fail(img, -ENOSPC, "too many snapshots (%u)", img->nb_snapshots);
	if (img->refcount_bits < 2)
		return qcow_fail(img, -ENOTSUP,
		                 "1-bit refcounts cannot count a snapshot's references");
	err = op_begin(img, &marked);
	if (err < 0)
		return err;
	list = calloc(img->nb_snapshots + 1, sizeof(*list));
	if (!list)
		return qcow_fail(img, -ENOMEM, "no memory for the snapshot table");
	if (img->nb_snapshots)
		memcpy(list, img->snapshots, img->nb_snapshots * sizeof(*list));
	/* The new references first; the snapshot table names them only at the switch. */
	err = copy_l1(img, &l1_off);
	if (err < 0) {
		/* Nothing has changed (a full disk, say): the image stays writable. */
		free(list);
		op_end(img, marked);
		return err;
	}
	err = l1_add_refs(img, img->l1, img->l1_size, +1);
	if (err == 0)
		err = fix_copied(img);
	if (err == 0)
		err = new_entry(img, name, l1_off, &list[img->nb_snapshots]);
	if (err < 0) {
		free(list);
		img->fenced = err; /* in-memory refcounts no longer match the tables */
		return err;
	}
	free(img->snapshots);
	img->snapshots = NULL;
	n = img->nb_snapshots;
	err = switch_table(img, list, n + 1);
	if (err < 0) {
		if (img->nb_snapshots == n)
			snapshot_release(&list[n]); /* the switch never happened */
		img->snapshots = list;              /* for freeing; the image is fenced */
		img->fenced = err;
		return err;
	}
	return op_end(img, marked);
}

static int read_l1(struct qcow_image *img, const struct snapshot *s, uint64_t **l1)
{
	size_t bytes = 8 * (size_t)s->l1_size;
	int err;

	*l1 = calloc(bytes ? bytes / 8 : 1, 8);
	if (!*l1)
		return qcow_fail(img, -ENOMEM, "no memory for a snapshot L1 table");
	err = bytes ? img->ops->pread(img->ctx, *l1, bytes, s->l1_offset) : 0;
	if (err < 0) {
		free(*l1);
		return qcow_fail(img, err, "reading snapshot '%s' failed: %s", s->name,
		                 strerror(-err));
	}
	return 0;
}

/*
 * Once a header switch has made the L1 table at l1_off (n entries)
 * unreachable on disk: drops every reference it held, frees its clusters,
 * recomputes COPIED in the active tables and ends the operation.  An error
 * fences the image, whose counts then no longer match its tables.
 */
static int drop_l1(struct qcow_image *img, const uint64_t *l1, uint32_t n, uint64_t l1_off,
                   bool marked)
{
	int err = l1_add_refs(img, l1, n, -1);

	if (err == 0 && n)
		err = free_bytes_later(img, l1_off, 8 * (uint64_t)n);
	if (err == 0)
		err = write_back(img);
	if (err == 0)
		err = fix_copied(img);
	if (err < 0) {
		img->fenced = err;
		return err;
	}
	return op_end(img, marked);
}

int qcow_snapshot_delete(struct qcow_image *img, const char *name)
{
	struct snapshot *s, *list, gone;
	uint64_t *l1;
	uint32_t n = 0;
	bool marked;
	int err;

	if ((err = writable_image(img)) < 0)
		return err;
	s = find_snapshot(img, name);
	if (!s)
		return qcow_fail(img, -ENOENT, "no snapshot named '%s'", name);
	err = op_begin(img, &marked);
	if (err == 0)
		err = read_l1(img, s, &l1);
	if (err < 0)
		return err;
	list = calloc(img->nb_snapshots, sizeof(*list));
	if (!list) {
		free(l1);
		return qcow_fail(img, -ENOMEM, "no memory for the snapshot table");
	}
	for (uint32_t i = 0; i < img->nb_snapshots; i++)
		if (&img->snapshots[i] != s)
			list[n++] = img->snapshots[i];
	gone = *s;
	free(img->snapshots);
	img->snapshots = NULL;
	err = switch_table(img, list, n);
	if (err < 0) {
		list[n] = gone; /* kept so that close frees it; the image is fenced */
		img->snapshots = list;
		img->nb_snapshots = n + 1;
		free(l1);
		return err;
	}
	/* The snapshot is gone on disk: now drop what it referenced. */
	err = drop_l1(img, l1, gone.l1_size, gone.l1_offset, marked);
	free(l1);
	snapshot_release(&gone);
	return err;
}

int qcow_snapshot_revert(struct qcow_image *img, const char *name)
{
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits, cs = img->cluster_size;
	uint64_t *l1, *old = img->l1, old_off = img->l1_offset, off, bytes;
	uint32_t old_size = img->l1_size, entries;
	struct snapshot *s;
	bool marked;
	int err;

	if ((err = writable_image(img)) < 0)
		return err;
	s = find_snapshot(img, name);
	if (!s)
		return qcow_fail(img, -ENOENT, "no snapshot named '%s'", name);
	entries = s->l1_size;
	if (s->disk_size / span + (s->disk_size % span != 0) > entries)
		return qcow_fail(img, -EIO, "corrupt image: snapshot '%s' has a short L1 table",
		                 s->name);
	err = op_begin(img, &marked);
	if (err == 0)
		err = read_l1(img, s, &l1);
	if (err < 0)
		return err;
	bytes = 8 * (uint64_t)entries;
	/* Everything the snapshot reaches gains the active image's reference. */
	err = l1_add_refs(img, l1, entries, +1);
	if (err == 0 && bytes) {
		for (uint32_t i = 0; i < entries; i++)
			l1[i] &= htobe64(~QCOW_OFLAG_COPIED);
		err = alloc_clusters(img, (bytes + cs - 1) / cs, &off);
		if (err == 0 && (err = img->ops->pwrite(img->ctx, l1, bytes, off)) < 0)
			qcow_fail(img, err, "writing the L1 table failed: %s", strerror(-err));
	} else {
		off = 0;
	}
	if (err == 0)
		err = write_back(img);
	if (err == 0)
		err = sync_or_fence(img);
	if (err < 0) {
		free(l1);
		img->fenced = err;
		return err;
	}
	img->l1 = l1;
	img->l1_offset = off;
	img->l1_size = entries;
	img->size = s->disk_size;
	err = header_commit(img);
	if (err == 0)
		err = meta_build(img);
	/* The old active tables are unreferenced on disk now. */
	err = err < 0 ? err : drop_l1(img, old, old_size, old_off, marked);
	free(old);
	if (err < 0)
		img->fenced = err;
	return err;
}

int snapshot_select(struct qcow_image *img, const char *name, char *err, size_t errlen)
{
	struct snapshot *s = find_snapshot(img, name);
	uint64_t *l1;
	int e;

	if (!s) {
		set_err(err, errlen, "%s: no snapshot named '%s'", img->path, name);
		return -ENOENT;
	}
	e = read_l1(img, s, &l1);
	if (e < 0) {
		set_err(err, errlen, "%s", img->errmsg);
		return e;
	}
	free(img->l1);
	img->l1 = l1;
	img->l1_offset = s->l1_offset;
	img->l1_size = s->l1_size;
	img->size = s->disk_size;
	return 0;
}
