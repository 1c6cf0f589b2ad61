/* SPDX-License-Identifier: MIT */
/*
 * compress.c - compressed clusters (qcow2 spec, 'Compressed Clusters
 * Descriptor' under 'Cluster mapping', and the header's compression_type):
 * reading deflate (raw, no zlib header) and zstd clusters, and writing them.
 *
 * Written clusters are packed back to back into a host cluster that is
 * filled in order; each compressed cluster adds one reference to every
 * host cluster its bytes touch.  Deflate uses a 4 KiB window (-12), as
 * qemu does, because qemu inflates with that window.
 */
#include <zlib.h>
#include <zstd.h>

#include "internal.h"

static int inflate_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	z_stream zs = {.next_in = (Bytef *)in,
	               .avail_in = (uInt)in_len,
	               .next_out = out,
	               .avail_out = (uInt)out_len};
	int ret;

	if (inflateInit2(&zs, -15) != Z_OK)
		return -ENOMEM;
	ret = inflate(&zs, Z_FINISH);
	inflateEnd(&zs);
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && zs.avail_out == 0)
		return 0;
	return -EIO;
}

static int zstd_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ZSTD_inBuffer ib = {in, in_len, 0};
	ZSTD_outBuffer ob = {out, out_len, 0};
	int err = -EIO;

	if (!dctx)
		return -ENOMEM;
	while (ob.pos < ob.size) {
		size_t ret = ZSTD_decompressStream(dctx, &ob, &ib);

		if (ZSTD_isError(ret))
			goto out_free;
		if (ret == 0 || (ib.pos == ib.size && ob.pos < ob.size))
			break;
	}
	if (ob.pos == ob.size)
		err = 0;
out_free:
	ZSTD_freeDCtx(dctx);
	return err;
}

int read_compressed(struct qcow_image *img, uint64_t entry, uint8_t *out)
{
	uint64_t host, bytes;
	int err = compressed_range(img, entry, &host, &bytes);

	if (err < 0)
		return qcow_fail(img, -EIO,
		                 "corrupt image: bad compressed cluster descriptor 0x%llx",
		                 (unsigned long long)entry);
	err = img->ops->pread(img->ctx, img->cscratch, bytes, host);
	if (err < 0)
		return qcow_fail(img, err, "reading a compressed cluster at 0x%llx failed: %s",
		                 (unsigned long long)host, strerror(-err));
	if (img->compression == QCOW_COMPRESSION_ZSTD)
		err = zstd_cluster(img->cscratch, bytes, out, img->cluster_size);
	else
		err = inflate_cluster(img->cscratch, bytes, out, img->cluster_size);
	if (err < 0)
		return qcow_fail(img, err,
		                 "corrupt image: compressed cluster at 0x%llx does not decompress",
		                 (unsigned long long)host);
	return 0;
}

/* Compresses one cluster into out; returns the size, or 0 if it does not shrink. */
static size_t compress_cluster(struct qcow_image *img, const uint8_t *in, uint8_t *out)
{
	size_t cs = img->cluster_size;

	if (img->compression == QCOW_COMPRESSION_ZSTD) {
		size_t n = ZSTD_compress(out, cs - 1, in, cs, ZSTD_CLEVEL_DEFAULT);

		return ZSTD_isError(n) ? 0 : n;
	}
	z_stream zs = {.next_in = (Bytef *)in,
	               .avail_in = (uInt)cs,
	               .next_out = out,
	               .avail_out = (uInt)(cs - 1)};
	size_t n = 0;

	if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
		return 0;
	if (deflate(&zs, Z_FINISH) == Z_STREAM_END)
		n = cs - 1 - zs.avail_out;
	deflateEnd(&zs);
	return n;
}

/* Finds room for size compressed bytes; returns the host byte offset. */
static int place_compressed(struct qcow_image *img, size_t size, uint64_t *host)
{
	uint64_t cs = img->cluster_size;
	int err;

	if (img->cpos && (img->cpos & (cs - 1)) + size <= cs) {
		/* Another compressed cluster in the host cluster being filled. */
		err = refcount_add(img, cluster_of(img, img->cpos));
		if (err < 0)
			return err;
	} else {
		err = alloc_clusters(img, 1, &img->cpos);
		if (err < 0)
			return err;
	}
	*host = img->cpos;
	img->cpos += size;
	if (!(img->cpos & (cs - 1)))
		img->cpos = 0; /* full */
	return 0;
}

int qcow_write_compressed(struct qcow_image *img, const void *buf, uint64_t off, size_t len)
{
	uint64_t cs = img->cluster_size, host, e, old_host, x = 62 - (img->cluster_bits - 8);
	enum qcow_map_kind kind;
	struct l2_ref ref;
	bool present;
	size_t size;
	int err;

	if ((err = check_writable(img)) < 0 || (err = check_range(img, off, len)) < 0)
		return err;
	if ((off & (cs - 1)) || !len || len > cs || (len < cs && off + len != img->size))
		return qcow_fail(img, -EINVAL, "a compressed write covers exactly one cluster");
	memcpy(img->scratch, buf, len);
	memset(img->scratch + len, 0, cs - len);
	size = compress_cluster(img, img->scratch, img->cscratch);
	if (!size)
		return qcow_write(img, buf, off, len); /* incompressible */
	err = l2_lookup(img, off, true, &present, &ref);
	if (err < 0)
		return err;
	e = l2_entry(img, &ref);
	err = classify(img, e, &kind, &old_host);
	if (err == 0)
		err = place_compressed(img, size, &host);
	if (err == 0 && (err = host_write(img, img->cscratch, size, host)) < 0) {
		/* Not mapped: its count goes back, and packing starts afresh. */
		unalloc_clusters(img, host, 1);
		img->cpos = 0;
	} else if (err == 0) {
		uint64_t sectors = ((host + size - 1) >> 9) - (host >> 9);

		l2_set_entry(img, &ref, QCOW_OFLAG_COMPRESSED | (sectors << x) | host);
		err = release_entry(img, e, kind, old_host, 0);
	}
	l2_release(img, &ref);
	return err;
}
