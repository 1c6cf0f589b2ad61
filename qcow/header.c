/* SPDX-License-Identifier: MIT */
/*
 * header.c - parsing and validating the qcow2 header and its extensions
 * (qcow2 spec, 'Header' with its feature bits and 'Additional fields',
 * 'Header padding', 'Header extensions' and 'Feature name table'; what
 * qemu-iotests 080 crafts is refused), and rewriting it in place.
 *
 * Every field is checked against qcow_limits.h before anything is sized from
 * it.  The header bytes are kept as read, so a rewrite changes only the
 * fields we own and preserves fields and extensions we do not know.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int refuse(char *err, size_t errlen, const char *path, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int refuse(char *err, size_t errlen, const char *path, int code, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	set_err(err, errlen, "%s: %s", path, msg);
	return code;
}

static const char *const incompat_names[] = {
    "dirty bit", "corrupt bit", "external data file", "compression type", "extended L2 entries",
};

int validate_features(struct qcow_image *img, bool rdwr, char *err, size_t errlen)
{
	uint64_t unknown = img->incompat & ~0x1full;
	const char *p = img->path;

	if (unknown)
		return refuse(err, errlen, p, -ENOTSUP,
		              "unsupported qcow2 feature: unknown incompatible feature bit %d",
		              __builtin_ctzll(unknown));
	if (img->incompat & INCOMPAT_DATA_FILE)
		return refuse(err, errlen, p, -ENOTSUP, "unsupported qcow2 feature: %s",
		              incompat_names[2]);
	if (img->incompat & INCOMPAT_EXTL2)
		return refuse(err, errlen, p, -ENOTSUP,
		              "unsupported qcow2 feature: %s (subclusters)", incompat_names[4]);
	if ((img->incompat & INCOMPAT_CORRUPT) && rdwr)
		return refuse(err, errlen, p, -EROFS,
		              "image is marked corrupt (corrupt bit set); it can only be opened "
		              "read-only or repaired");
	return 0;
}

static int parse_compression(struct qcow_image *img, const uint8_t *h, char *err, size_t errlen)
{
	unsigned type = img->header_length > HDR_COMPRESSION_TYPE ? h[HDR_COMPRESSION_TYPE] : 0;
	bool bit = img->incompat & INCOMPAT_COMPRESSION;

	if (type > 1)
		return refuse(err, errlen, img->path, -ENOTSUP, "unknown compression type %u",
		              type);
	if (bit != (type != 0))
		return refuse(err, errlen, img->path, -EINVAL,
		              "compression type %u does not match the compression type feature bit",
		              type);
	img->compression = type ? QCOW_COMPRESSION_ZSTD : QCOW_COMPRESSION_DEFLATE;
	return 0;
}

/* Walks the header extensions in cluster 0 between header_length and end. */
static int parse_extensions(struct qcow_image *img, const uint8_t *c0, uint64_t end, char *err,
                            size_t errlen)
{
	uint64_t off = img->header_length;

	while (off < end) {
		uint32_t type, len;

		if (off + 8 > end)
			return refuse(err, errlen, img->path, -EINVAL,
			              "header extension at %llu overruns cluster 0",
			              (unsigned long long)off);
		type = be32_at(c0 + off);
		len = be32_at(c0 + off + 4);
		if (type == EXT_END)
			return 0;
		if (len > end - off - 8)
			return refuse(err, errlen, img->path, -EINVAL,
			              "header extension 0x%08x (length %u) overruns cluster 0",
			              type, len);
		switch (type) {
		case EXT_BACKING_FORMAT:
			if (len >= sizeof(img->backing_format))
				return refuse(err, errlen, img->path, -EINVAL,
				              "backing format name too long (%u bytes)", len);
			memcpy(img->backing_format, c0 + off + 8, len);
			img->backing_format[len] = '\0';
			break;
		case EXT_CRYPTO:
			return refuse(err, errlen, img->path, -ENOTSUP,
			              "unsupported qcow2 feature: encryption (crypto header)");
		default:
			break; /* feature table, bitmaps, unknown: kept as they are */
		}
		off += 8 + (((uint64_t)len + 7) & ~7ull);
	}
	return 0;
}

static int parse_backing_name(struct qcow_image *img, const uint8_t *c0, char *err, size_t errlen)
{
	uint64_t off = be64_at(c0 + HDR_BACKING_OFFSET);
	uint32_t len = be32_at(c0 + HDR_BACKING_SIZE);

	if (!off)
		return 0;
	if (len == 0 || len > QCOW_MAX_BACKING_NAME)
		return refuse(err, errlen, img->path, -EINVAL,
		              "backing file name length %u is invalid", len);
	if (off < img->header_length || (uint64_t)len > img->cluster_size ||
	    off > (uint64_t)img->cluster_size - len)
		return refuse(err, errlen, img->path, -EINVAL,
		              "backing file name at offset %llu lies outside cluster 0",
		              (unsigned long long)off);
	memcpy(img->backing_name, c0 + off, len);
	img->backing_name[len] = '\0';
	if (strlen(img->backing_name) != len)
		return refuse(err, errlen, img->path, -EINVAL,
		              "backing file name contains a NUL byte");
	return 0;
}

/* Checks that [off, off + bytes) is a sane, aligned table location. */
static int check_table(struct qcow_image *img, uint64_t off, uint64_t bytes, const char *what,
                       char *err, size_t errlen)
{
	uint64_t end;

	if (off & (img->cluster_size - 1))
		return refuse(err, errlen, img->path, -EINVAL, "%s offset 0x%llx is not aligned",
		              what, (unsigned long long)off);
	if (__builtin_add_overflow(off, bytes, &end) || end > QCOW_MAX_HOST_OFFSET)
		return refuse(err, errlen, img->path, -EINVAL,
		              "%s at 0x%llx is beyond any valid offset", what,
		              (unsigned long long)off);
	if (bytes && off < img->cluster_size)
		return refuse(err, errlen, img->path, -EINVAL, "%s overlaps the header", what);
	if (bytes &&
	    end > ((img->file_size + img->cluster_size - 1) & ~(uint64_t)(img->cluster_size - 1)))
		return refuse(err, errlen, img->path, -EINVAL,
		              "%s lies beyond the end of the file (truncated image?)", what);
	return 0;
}

static int parse_tables(struct qcow_image *img, const uint8_t *h, char *err, size_t errlen)
{
	uint64_t span = (uint64_t)img->l2_entries << img->cluster_bits;
	uint64_t need = img->size / span + (img->size % span != 0);
	uint64_t rt_clusters = be32_at(h + HDR_REFTABLE_CLUSTERS);
	int e;

	img->l1_size = be32_at(h + HDR_L1_SIZE);
	img->l1_offset = be64_at(h + HDR_L1_OFFSET);
	if ((uint64_t)img->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return refuse(err, errlen, img->path, -EFBIG, "L1 table too large (%u entries)",
		              img->l1_size);
	if (img->l1_size < need)
		return refuse(err, errlen, img->path, -EINVAL,
		              "L1 table too small (%u entries) for the disk size", img->l1_size);
	e = check_table(img, img->l1_offset, 8 * (uint64_t)img->l1_size, "L1 table", err, errlen);
	if (e < 0)
		return e;
	img->reftable_offset = be64_at(h + HDR_REFTABLE_OFFSET);
	if (rt_clusters == 0 || rt_clusters * img->cluster_size > QCOW_MAX_REFTABLE_BYTES)
		return refuse(err, errlen, img->path, -EFBIG,
		              "refcount table size (%llu clusters) is invalid",
		              (unsigned long long)rt_clusters);
	img->reftable_clusters = (uint32_t)rt_clusters;
	e = check_table(img, img->reftable_offset, rt_clusters * img->cluster_size,
	                "refcount table", err, errlen);
	if (e < 0)
		return e;
	img->nb_snapshots = be32_at(h + HDR_NB_SNAPSHOTS);
	img->snapshots_offset = be64_at(h + HDR_SNAPSHOTS_OFFSET);
	if (img->nb_snapshots > QCOW_MAX_SNAPSHOTS)
		return refuse(err, errlen, img->path, -EFBIG, "too many snapshots (%u)",
		              img->nb_snapshots);
	if (img->nb_snapshots)
		return check_table(img, img->snapshots_offset, 1, "snapshot table", err, errlen);
	return 0;
}

int header_parse(struct qcow_image *img, char *err, size_t errlen)
{
	uint8_t h[HDR_V3_MIN_LENGTH];
	uint8_t *c0;
	uint64_t file_size, ext_end;
	int e;

	e = img->ops->get_size(img->ctx, &file_size);
	if (e < 0)
		return refuse(err, errlen, img->path, e, "cannot get size: %s", strerror(-e));
	img->file_size = file_size;
	e = img->ops->pread(img->ctx, h, sizeof(h), 0);
	if (e < 0)
		return refuse(err, errlen, img->path, e, "cannot read header: %s", strerror(-e));
	if (file_size < HDR_V2_LENGTH || be32_at(h + HDR_MAGIC) != QCOW_MAGIC)
		return refuse(err, errlen, img->path, -EINVAL,
		              "not a qcow2 image (bad magic or too short)");
	img->version = be32_at(h + HDR_VERSION);
	if (img->version != 2 && img->version != 3)
		return refuse(err, errlen, img->path, -ENOTSUP, "unsupported qcow2 version %u",
		              img->version);
	img->cluster_bits = be32_at(h + HDR_CLUSTER_BITS);
	if (img->cluster_bits < QCOW_MIN_CLUSTER_BITS || img->cluster_bits > QCOW_MAX_CLUSTER_BITS)
		return refuse(err, errlen, img->path, -EINVAL,
		              "cluster_bits %u outside the supported range %d..%d",
		              img->cluster_bits, QCOW_MIN_CLUSTER_BITS, QCOW_MAX_CLUSTER_BITS);
	img->cluster_size = 1u << img->cluster_bits;
	img->l2_bits = img->cluster_bits - 3;
	img->l2_entries = 1u << img->l2_bits;
	if (be32_at(h + HDR_CRYPT) != 0)
		return refuse(err, errlen, img->path, -ENOTSUP,
		              "unsupported qcow2 feature: encryption (%s)",
		              be32_at(h + HDR_CRYPT) == 1 ? "AES" : "LUKS or unknown method");
	img->size = be64_at(h + HDR_SIZE);
	if (img->size > QCOW_MAX_VIRTUAL_SIZE)
		return refuse(err, errlen, img->path, -EFBIG, "virtual size %llu is too large",
		              (unsigned long long)img->size);
	if (img->version == 2) {
		img->header_length = HDR_V2_LENGTH;
		img->refcount_order = 4;
	} else {
		img->header_length = be32_at(h + HDR_HEADER_LENGTH);
		img->incompat = be64_at(h + HDR_INCOMPAT);
		img->compat = be64_at(h + HDR_COMPAT);
		img->autoclear = be64_at(h + HDR_AUTOCLEAR);
		img->refcount_order = be32_at(h + HDR_REFCOUNT_ORDER);
		if (img->header_length < HDR_V3_MIN_LENGTH || img->header_length % 8 ||
		    img->header_length > img->cluster_size)
			return refuse(err, errlen, img->path, -EINVAL, "invalid header length %u",
			              img->header_length);
		if (img->refcount_order > 6)
			return refuse(err, errlen, img->path, -EINVAL,
			              "refcount order %u is invalid (maximum 6)",
			              img->refcount_order);
	}
	img->refcount_bits = 1u << img->refcount_order;
	img->refblock_entries =
	    (uint32_t)(((uint64_t)img->cluster_size * 8) >> img->refcount_order);

	c0 = malloc(img->cluster_size);
	if (!c0)
		return refuse(err, errlen, img->path, -ENOMEM, "no memory for the header");
	e = img->ops->pread(img->ctx, c0, img->cluster_size, 0);
	if (e < 0) {
		refuse(err, errlen, img->path, e, "cannot read header: %s", strerror(-e));
		goto out_free;
	}
	e = parse_compression(img, c0, err, errlen);
	if (e < 0)
		goto out_free;
	e = parse_backing_name(img, c0, err, errlen);
	if (e < 0)
		goto out_free;
	ext_end = be64_at(c0 + HDR_BACKING_OFFSET);
	if (!ext_end)
		ext_end = img->cluster_size;
	e = parse_extensions(img, c0, ext_end, err, errlen);
	if (e < 0)
		goto out_free;
	e = parse_tables(img, c0, err, errlen);
	if (e < 0)
		goto out_free;
	img->hdr_raw = malloc(img->header_length);
	if (!img->hdr_raw) {
		e = refuse(err, errlen, img->path, -ENOMEM, "no memory for the header");
		goto out_free;
	}
	memcpy(img->hdr_raw, c0, img->header_length);
	e = 0;
out_free:
	free(c0);
	return e;
}

int header_write(struct qcow_image *img)
{
	uint8_t *h = img->hdr_raw;
	int err;

	assert(img->version == 3);
	put_be64(h + HDR_SIZE, img->size);
	put_be32(h + HDR_L1_SIZE, img->l1_size);
	put_be64(h + HDR_L1_OFFSET, img->l1_offset);
	put_be64(h + HDR_REFTABLE_OFFSET, img->reftable_offset);
	put_be32(h + HDR_REFTABLE_CLUSTERS, img->reftable_clusters);
	put_be32(h + HDR_NB_SNAPSHOTS, img->nb_snapshots);
	put_be64(h + HDR_SNAPSHOTS_OFFSET, img->snapshots_offset);
	put_be64(h + HDR_INCOMPAT, img->incompat);
	put_be64(h + HDR_AUTOCLEAR, img->autoclear);
	err = img->ops->pwrite(img->ctx, h, img->header_length, 0);
	if (err < 0) {
		img->fenced = err;
		return qcow_fail(img, err, "writing the header failed: %s", strerror(-err));
	}
	return 0;
}

/* Writes the header and syncs: the single-write switch of every header change. */
int header_commit(struct qcow_image *img)
{
	int err = header_write(img);

	return err < 0 ? err : sync_or_fence(img);
}

int set_dirty_bit(struct qcow_image *img, bool on)
{
	int err;

	if (on)
		img->incompat |= INCOMPAT_DIRTY;
	else
		img->incompat &= ~(uint64_t)INCOMPAT_DIRTY;
	err = header_commit(img);
	if (err < 0)
		return err;
	img->dirty_bit_on_disk = on;
	return 0;
}
