/* SPDX-License-Identifier: MIT */
/*
 * create.c - writing a new, empty version 3 image.
 *
 * Layout: the header (with extensions and the backing name) in cluster 0,
 * then the refcount table, the refcount blocks that count every cluster
 * of this layout, then the L1 table (left sparse: zeros).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static const struct {
	uint8_t kind, bit;
	const char *name;
} feature_names[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

static bool power_of_two(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int check_opts(const struct qcow_create_opts *o, uint32_t cs, unsigned rb, char *err,
                      size_t errlen)
{
	const char *p = o->path;

	if (!power_of_two(cs) || cs < (1u << QCOW_MIN_CLUSTER_BITS) ||
	    cs > (1u << QCOW_MAX_CLUSTER_BITS)) {
		set_err(err, errlen, "%s: cluster size %u must be a power of two from 512 to 2M", p,
		        cs);
		return -EINVAL;
	}
	if (!power_of_two(rb) || rb > 64) {
		set_err(err, errlen, "%s: refcount bits %u must be a power of two up to 64", p, rb);
		return -EINVAL;
	}
	if (o->backing_file &&
	    (!o->backing_file[0] || strlen(o->backing_file) > QCOW_MAX_BACKING_NAME)) {
		set_err(err, errlen, "%s: backing file name must be 1 to %u bytes", p,
		        QCOW_MAX_BACKING_NAME);
		return -EINVAL;
	}
	if (o->backing_format && strcmp(o->backing_format, "qcow2") &&
	    strcmp(o->backing_format, "raw")) {
		set_err(err, errlen, "%s: backing format must be qcow2 or raw, not '%s'", p,
		        o->backing_format);
		return -EINVAL;
	}
	if (o->compression != QCOW_COMPRESSION_DEFLATE && o->compression != QCOW_COMPRESSION_ZSTD) {
		set_err(err, errlen, "%s: unknown compression type", p);
		return -EINVAL;
	}
	return 0;
}

/* Opens the backing file to learn its size and format, as a check that it exists. */
static int probe_backing(const struct qcow_create_opts *o, uint64_t *size, char *fmt, size_t fmtlen,
                         char *err, size_t errlen)
{
	struct qcow_image *img = NULL;
	struct qcow_open_opts oo = {0};
	char *path = NULL;
	int e;

	/* Build a throwaway image name in the new image's folder. */
	if (o->backing_file[0] == '/')
		path = strdup(o->backing_file);
	else {
		char *slash = strrchr(o->path, '/');

		if (asprintf(&path, "%.*s%s", slash ? (int)(slash - o->path + 1) : 0, o->path,
		             o->backing_file) < 0)
			path = NULL;
	}
	if (!path) {
		set_err(err, errlen, "%s: no memory", o->path);
		return -ENOMEM;
	}
	oo.path = path;
	oo.l2_cache_bytes = 1;
	oo.refcount_cache_bytes = 1;
	if (o->backing_format && !strcmp(o->backing_format, "raw")) {
		void *ctx;

		e = qcow_posix_open(path, O_RDONLY, &ctx);
		if (e == 0) {
			e = qcow_posix_ops.get_size(ctx, size);
			qcow_posix_ops.close(ctx);
		}
		if (e < 0)
			set_err(err, errlen, "%s: cannot open backing file %s: %s", o->path, path,
			        strerror(-e));
		snprintf(fmt, fmtlen, "raw");
		free(path);
		return e;
	}
	e = qcow_open(&oo, &img, NULL, 0);
	if (e == 0) {
		*size = img->size;
		snprintf(fmt, fmtlen, "qcow2");
		qcow_close(img);
	} else if (!o->backing_format) {
		void *ctx;

		e = qcow_posix_open(path, O_RDONLY, &ctx);
		if (e == 0) {
			e = qcow_posix_ops.get_size(ctx, size);
			qcow_posix_ops.close(ctx);
			snprintf(fmt, fmtlen, "raw");
		}
	}
	if (e < 0)
		set_err(err, errlen, "%s: cannot open backing file %s: %s", o->path, path,
		        strerror(-e));
	free(path);
	return e;
}

static size_t put_ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
	put_be32(p, type);
	put_be32(p + 4, len);
	memcpy(p + 8, data, len);
	return 8 + ((len + 7) & ~7u);
}

/* Fills cluster 0; returns -ENOSPC if the backing name does not fit. */
static int build_header(uint8_t *c0, uint32_t cs, const struct qcow_create_opts *o, const char *fmt,
                        uint64_t size, unsigned rb_order)
{
	uint8_t table[sizeof(feature_names) / sizeof(feature_names[0])][48];
	size_t off = HDR_V3_LENGTH, name_len = o->backing_file ? strlen(o->backing_file) : 0;
	size_t fmt_len = fmt[0] ? strlen(fmt) : 0;
	size_t fixed = off + (fmt_len ? 8 + ((fmt_len + 7) & ~7u) : 0) + 8 + name_len;

	memset(c0, 0, cs);
	put_be32(c0 + HDR_MAGIC, QCOW_MAGIC);
	put_be32(c0 + HDR_VERSION, 3);
	put_be32(c0 + HDR_CLUSTER_BITS, (uint32_t)__builtin_ctz(cs));
	put_be64(c0 + HDR_SIZE, size);
	put_be64(c0 + HDR_INCOMPAT,
	         o->compression == QCOW_COMPRESSION_ZSTD ? INCOMPAT_COMPRESSION : 0);
	put_be64(c0 + HDR_COMPAT, o->lazy_refcounts ? COMPAT_LAZY_REFCOUNTS : 0);
	put_be32(c0 + HDR_REFCOUNT_ORDER, rb_order);
	put_be32(c0 + HDR_HEADER_LENGTH, HDR_V3_LENGTH);
	c0[HDR_COMPRESSION_TYPE] = o->compression == QCOW_COMPRESSION_ZSTD ? 1 : 0;
	if (fixed > cs)
		return -ENOSPC;
	if (fmt_len)
		off += put_ext(c0 + off, EXT_BACKING_FORMAT, fmt, (uint32_t)fmt_len);
	/* The feature name table helps qemu name bits; it goes only where it fits. */
	if (fixed + 8 + sizeof(table) <= cs) {
		memset(table, 0, sizeof(table));
		for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
			table[i][0] = feature_names[i].kind;
			table[i][1] = feature_names[i].bit;
			memcpy(table[i] + 2, feature_names[i].name, strlen(feature_names[i].name));
		}
		off += put_ext(c0 + off, EXT_FEATURE_TABLE, table, sizeof(table));
	}
	off += 8; /* end of extensions: type 0, length 0 */
	if (name_len) {
		put_be64(c0 + HDR_BACKING_OFFSET, off);
		put_be32(c0 + HDR_BACKING_SIZE, (uint32_t)name_len);
		memcpy(c0 + off, o->backing_file, name_len);
	}
	return 0;
}

static int write_layout(const struct qcow_io_ops *ops, void *ctx, uint8_t *c0, uint32_t cs,
                        unsigned rb_order, uint64_t size)
{
	uint64_t l2_span = (uint64_t)(cs / 8) * cs;
	uint64_t l1_entries = size / l2_span + (size % l2_span != 0);
	uint64_t l1_clusters = (l1_entries * 8 + cs - 1) / cs;
	uint64_t E = ((uint64_t)cs * 8) >> rb_order, R = 1, B = 1, total;
	uint8_t *buf;
	int e;

	if (l1_entries * 8 > QCOW_MAX_L1_BYTES)
		return -EFBIG;
	for (;;) {
		total = 1 + R + B + l1_clusters;
		uint64_t nb = (total + E - 1) / E, nr = (nb * 8 + cs - 1) / cs;

		if (nb == B && nr == R)
			break;
		B = nb;
		R = nr;
	}
	put_be32(c0 + HDR_L1_SIZE, (uint32_t)l1_entries);
	put_be64(c0 + HDR_L1_OFFSET, l1_clusters ? (1 + R + B) * cs : 0);
	put_be64(c0 + HDR_REFTABLE_OFFSET, (uint64_t)cs);
	put_be32(c0 + HDR_REFTABLE_CLUSTERS, (uint32_t)R);
	buf = calloc(R + B, cs);
	if (!buf)
		return -ENOMEM;
	for (uint64_t b = 0; b < B; b++)
		put_be64(buf + 8 * b, (1 + R + b) * cs);
	for (uint64_t c = 0; c < total; c++) {
		struct qcow_image fake = {.refcount_order = rb_order,
		                          .refcount_bits = 1u << rb_order};

		rb_entry_set(&fake, buf + (R + c / E) * cs, (uint32_t)(c % E), 1);
	}
	e = ops->truncate(ctx, total * cs);
	if (e == 0)
		e = ops->pwrite(ctx, buf, (R + B) * cs, cs);
	if (e == 0)
		e = ops->pwrite(ctx, c0, cs, 0);
	if (e == 0)
		e = ops->sync(ctx);
	free(buf);
	return e;
}

int qcow_create(const struct qcow_create_opts *o, char *err, size_t errlen)
{
	uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
	unsigned rb = o->refcount_bits ? o->refcount_bits : 16;
	const struct qcow_io_ops *ops = o->ops;
	uint64_t size = o->size_bytes;
	char fmt[32] = "";
	void *ctx = o->ctx;
	uint8_t *c0 = NULL;
	int e;

	if (!o->path) {
		set_err(err, errlen, "(image): no path given");
		return -EINVAL;
	}
	e = check_opts(o, cs, rb, err, errlen);
	if (e < 0)
		return e;
	if (o->backing_format)
		snprintf(fmt, sizeof(fmt), "%s", o->backing_format);
	if (o->backing_file) {
		uint64_t bsize = 0;

		e = probe_backing(o, &bsize, fmt, sizeof(fmt), err, errlen);
		if (e < 0)
			return e;
		if (!size)
			size = bsize;
	}
	size = (size + 511) & ~511ull;
	if (size > QCOW_MAX_VIRTUAL_SIZE || size < o->size_bytes) {
		set_err(err, errlen, "%s: size %llu is too large", o->path,
		        (unsigned long long)size);
		return -EFBIG;
	}
	if (!ops) {
		e = qcow_posix_open(o->path, O_RDWR | O_CREAT | O_EXCL, &ctx);
		if (e < 0) {
			set_err(err, errlen, "%s: %s", o->path, strerror(-e));
			return e;
		}
		ops = &qcow_posix_ops;
	}
	c0 = malloc(cs);
	if (!c0) {
		e = -ENOMEM;
		set_err(err, errlen, "%s: no memory", o->path);
		goto out_close;
	}
	e = build_header(c0, cs, o, fmt, size, (unsigned)__builtin_ctz(rb));
	if (e < 0) {
		set_err(err, errlen, "%s: backing file name does not fit in a %u-byte cluster",
		        o->path, cs);
		goto out_close;
	}
	e = write_layout(ops, ctx, c0, cs, (unsigned)__builtin_ctz(rb), size);
	if (e == -EFBIG)
		set_err(err, errlen,
		        "%s: size %llu needs an L1 table over %u MiB; use larger clusters", o->path,
		        (unsigned long long)size, QCOW_MAX_L1_BYTES >> 20);
	else if (e < 0)
		set_err(err, errlen, "%s: cannot write the image: %s", o->path, strerror(-e));
out_close:
	free(c0);
	if (!o->ops) {
		qcow_posix_ops.close(ctx);
		if (e < 0)
			unlink(o->path);
	}
	return e;
}
