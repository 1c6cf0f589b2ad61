/* SPDX-License-Identifier: MIT */
/*
 * make_seeds.c - writes the fuzz seed corpus: small valid images made by
 * qcow_create in several variants (cluster sizes, refcount widths, a
 * backing name, lazy refcounts left dirty, zstd), each with some data,
 * zero and discarded clusters so that L2 tables and refcount blocks are
 * populated.
 *
 *   fuzz_make_seeds DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow.h"

struct variant {
	const char *name;
	uint64_t size;
	uint32_t cluster;
	unsigned refcount_bits;
	const char *backing;
	bool lazy;
	enum qcow_compression compression;
	bool abandon; /* leave it as a crash would: dirty bit set with lazy refcounts */
	bool write;
};

static const struct variant variants[] = {
    {"empty-64k.qcow2", 4u << 20, 65536, 0, NULL, false, QCOW_COMPRESSION_DEFLATE, false, false},
    {"data-64k.qcow2", 8u << 20, 65536, 0, NULL, false, QCOW_COMPRESSION_DEFLATE, false, true},
    {"data-512.qcow2", 1u << 20, 512, 0, NULL, false, QCOW_COMPRESSION_DEFLATE, false, true},
    {"data-4k-rc1.qcow2", 2u << 20, 4096, 1, NULL, false, QCOW_COMPRESSION_DEFLATE, false, true},
    {"data-4k-rc64.qcow2", 2u << 20, 4096, 64, NULL, false, QCOW_COMPRESSION_DEFLATE, false, true},
    {"backing-4k.qcow2", 2u << 20, 4096, 0, "data-4k-rc1.qcow2", false, QCOW_COMPRESSION_DEFLATE,
     false, true},
    {"lazy-dirty-4k.qcow2", 2u << 20, 4096, 0, NULL, true, QCOW_COMPRESSION_DEFLATE, true, true},
    {"zstd-4k.qcow2", 2u << 20, 4096, 0, NULL, false, QCOW_COMPRESSION_ZSTD, false, true},
    {"odd-size-1k.qcow2", 1000000, 1024, 8, NULL, false, QCOW_COMPRESSION_DEFLATE, false, true},
};

static int fill(struct qcow_image *img, uint64_t size)
{
	static uint8_t buf[65536];
	int rc;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	rc = qcow_write(img, buf, 0, 8192);
	if (rc == 0)
		rc = qcow_write(img, buf, size / 2 + 100, 3000);
	if (rc == 0)
		rc = qcow_write(img, buf, size - 4096, 4096);
	if (rc == 0)
		rc = qcow_write_zeroes(img, size / 4, 65536, 0);
	if (rc == 0)
		rc = qcow_write(img, buf, size / 8, 65536);
	if (rc == 0)
		rc = qcow_discard(img, size / 8, 65536);
	return rc;
}

static int make(const char *dir, const struct variant *v)
{
	char path[4096], err[512] = "";
	struct qcow_create_opts c = {
	    .path = path,
	    .size_bytes = v->size,
	    .cluster_size = v->cluster,
	    .refcount_bits = v->refcount_bits,
	    .backing_file = v->backing,
	    .backing_format = v->backing ? "qcow2" : NULL,
	    .lazy_refcounts = v->lazy,
	    .compression = v->compression,
	};
	struct qcow_open_opts o = {.path = path, .flags = QCOW_OPEN_RDWR | QCOW_OPEN_NO_BACKING};
	struct qcow_image *img;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, v->name);
	rc = qcow_create(&c, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "create %s: %s\n", path, err);
		return rc;
	}
	if (!v->write)
		return 0;
	rc = qcow_open(&o, &img, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "open %s: %s\n", path, err);
		return rc;
	}
	rc = fill(img, v->size);
	if (rc < 0) {
		fprintf(stderr, "write %s: %s\n", path, qcow_last_error(img));
		qcow_abandon(img);
		return rc;
	}
	if (v->abandon) {
		rc = qcow_flush(img);
		qcow_abandon(img);
		return rc;
	}
	return qcow_close(img);
}

int main(int argc, char **argv)
{
	int failed = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++)
		if (make(argv[1], &variants[i]) < 0)
			failed++;
	return failed ? 1 : 0;
}
