/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the qcow library's public API: creation options, guest
 * I/O semantics, block status, the non-blocking mapper, resize, the dirty
 * bit, small-cache write-back, and backing files confined to folders and
 * never probed.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow.h"

static char dir[PATH_MAX];
static char err[512];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/qcow-unit-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(qcow_api, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
	static char p[4][PATH_MAX + 64];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static void create(const char *name, uint64_t size, uint32_t cs, const char *backing)
{
	struct qcow_create_opts o = {
	    .path = path_of(name), .size_bytes = size, .cluster_size = cs, .backing_file = backing};

	cr_assert_eq(qcow_create(&o, err, sizeof(err)), 0, "%s", err);
}

static struct qcow_image *open_img(const char *name, unsigned flags)
{
	struct qcow_open_opts o = {.path = path_of(name), .flags = flags};
	struct qcow_image *img = NULL;

	cr_assert_eq(qcow_open(&o, &img, err, sizeof(err)), 0, "%s", err);
	return img;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

static bool all_zero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
}

Test(qcow_api, create_defaults)
{
	struct qcow_image *img;
	struct qcow_info info;

	create("a.qcow2", 1ull << 30, 0, NULL);
	img = open_img("a.qcow2", 0);
	qcow_get_info(img, &info);
	cr_assert_eq(info.version, 3);
	cr_assert_eq(info.cluster_size, 65536);
	cr_assert_eq(info.refcount_bits, 16);
	cr_assert_eq(info.size_bytes, 1ull << 30);
	cr_assert_eq(info.l1_size, 2);
	cr_assert(!info.lazy_refcounts && !info.dirty && info.read_only);
	cr_assert_eq(info.backing_file[0], '\0');
	cr_assert_eq(qcow_close(img), 0);
}

Test(qcow_api, create_refuses_bad_options)
{
	const uint32_t bad_cs[] = {256, 1000, 4u << 20, 3u << 16};
	struct qcow_create_opts o = {.path = path_of("b.qcow2"), .size_bytes = 1 << 20};

	for (size_t i = 0; i < sizeof(bad_cs) / sizeof(bad_cs[0]); i++) {
		o.cluster_size = bad_cs[i];
		err[0] = '\0';
		cr_assert_eq(qcow_create(&o, err, sizeof(err)), -EINVAL, "cluster %u", bad_cs[i]);
		cr_assert(strstr(err, "cluster size"), "%s", err);
		cr_assert_eq(access(o.path, F_OK), -1, "a refused create left a file");
	}
	o.cluster_size = 0;
	o.refcount_bits = 3;
	cr_assert_eq(qcow_create(&o, err, sizeof(err)), -EINVAL);
	o.refcount_bits = 128;
	cr_assert_eq(qcow_create(&o, err, sizeof(err)), -EINVAL);
	o.refcount_bits = 0;
	o.backing_file = "missing.qcow2";
	cr_assert_lt(qcow_create(&o, err, sizeof(err)), 0);
	cr_assert(strstr(err, "missing.qcow2"), "%s", err);
	o.backing_file = NULL;
	cr_assert_eq(qcow_create(&o, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(qcow_create(&o, err, sizeof(err)), -EEXIST, "overwrote an existing image");
}

Test(qcow_api, write_read_unaligned_across_clusters)
{
	static uint8_t w[200000], r[200000];
	struct qcow_image *img;

	create("c.qcow2", 8 << 20, 4096, NULL);
	img = open_img("c.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 1);
	cr_assert_eq(qcow_write(img, w, 4095, sizeof(w)), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_read(img, r, 4095, sizeof(r)), 0);
	cr_assert_eq(memcmp(w, r, sizeof(r)), 0);
	cr_assert_eq(qcow_read(img, r, 0, 4095), 0);
	cr_assert(all_zero(r, 4095));
	cr_assert_eq(qcow_close(img), 0);

	img = open_img("c.qcow2", 0);
	cr_assert_eq(qcow_read(img, r, 4095, sizeof(r)), 0);
	cr_assert_eq(memcmp(w, r, sizeof(r)), 0, "data lost across close and reopen");
	cr_assert_eq(qcow_close(img), 0);
}

Test(qcow_api, rejects_out_of_range_and_read_only_writes)
{
	uint8_t buf[512] = {0};
	struct qcow_image *img;

	create("d.qcow2", 1 << 20, 0, NULL);
	img = open_img("d.qcow2", 0);
	cr_assert_eq(qcow_read(img, buf, (1 << 20) - 256, 512), -EINVAL);
	cr_assert_eq(qcow_read(img, buf, UINT64_MAX - 10, 512), -EINVAL);
	cr_assert_eq(qcow_write(img, buf, 0, 512), -EROFS);
	cr_assert_eq(qcow_discard(img, 0, 512), -EROFS);
	cr_assert(strstr(qcow_last_error(img), "d.qcow2"));
	qcow_close(img);
	img = open_img("d.qcow2", QCOW_OPEN_RDWR);
	cr_assert_eq(qcow_write(img, buf, (1 << 20) - 1, 2), -EINVAL);
	cr_assert_eq(qcow_write_zeroes(img, 1 << 20, 1, 0), -EINVAL);
	qcow_close(img);
}

Test(qcow_api, discard_keeps_partial_clusters)
{
	static uint8_t w[3 * 65536], r[3 * 65536];
	struct qcow_image *img;

	create("e.qcow2", 1 << 20, 0, NULL);
	img = open_img("e.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 2);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	cr_assert_eq(qcow_discard(img, 100, 2 * 65536), 0);
	cr_assert_eq(qcow_read(img, r, 0, sizeof(r)), 0);
	cr_assert_eq(memcmp(r, w, 65536), 0, "partial head cluster was discarded");
	cr_assert(all_zero(r + 65536, 65536), "whole cluster not discarded");
	cr_assert_eq(memcmp(r + 131072, w + 131072, 65536), 0, "partial tail cluster discarded");
	qcow_close(img);
}

Test(qcow_api, fast_zero_refuses_data_writes)
{
	static uint8_t w[65536 * 2], r[65536 * 2];
	struct qcow_image *img;
	struct qcow_extent x;

	create("f.qcow2", 1 << 20, 0, NULL);
	img = open_img("f.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 3);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	cr_assert_eq(qcow_write_zeroes(img, 10, 65536, QCOW_ZERO_FAST), -ENOTSUP);
	cr_assert_eq(qcow_read(img, r, 0, sizeof(r)), 0);
	cr_assert_eq(memcmp(r, w, sizeof(r)), 0, "a refused fast zero changed data");
	cr_assert_eq(qcow_write_zeroes(img, 65536, 65536, QCOW_ZERO_FAST), 0);
	cr_assert_eq(qcow_block_status(img, 65536, 65536, &x), 0);
	cr_assert_eq(x.flags, QCOW_EXTENT_ZERO);
	cr_assert_eq(qcow_read(img, r, 65536, 65536), 0);
	cr_assert(all_zero(r, 65536));
	qcow_close(img);
}

Test(qcow_api, block_status_reports_chain_depth)
{
	static uint8_t w[65536];
	struct qcow_image *img;
	struct qcow_extent x;

	create("base.qcow2", 4 << 20, 0, NULL);
	img = open_img("base.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 4);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	qcow_close(img);
	create("mid.qcow2", 0, 0, "base.qcow2");
	create("top.qcow2", 8 << 20, 0, "mid.qcow2");
	img = open_img("top.qcow2", QCOW_OPEN_RDWR);
	cr_assert_eq(qcow_write(img, w, 2 * 65536, sizeof(w)), 0);
	cr_assert_eq(qcow_write_zeroes(img, 3 * 65536, 65536, QCOW_ZERO_MAY_UNMAP), 0);

	cr_assert_eq(qcow_block_status(img, 0, 8 << 20, &x), 0);
	cr_assert(x.offset == 0 && x.length == 65536 && x.flags == QCOW_EXTENT_DATA &&
	          x.depth == 2);
	cr_assert_eq(qcow_block_status(img, 65536, 65536, &x), 0);
	cr_assert(x.flags == QCOW_EXTENT_ZERO && x.depth == -1, "flags %u depth %d", x.flags,
	          x.depth);
	cr_assert_eq(qcow_block_status(img, 2 * 65536, 1 << 20, &x), 0);
	cr_assert(x.length == 65536 && x.flags == QCOW_EXTENT_DATA && x.depth == 0);
	cr_assert_eq(qcow_block_status(img, 3 * 65536, 65536, &x), 0);
	cr_assert(x.flags == QCOW_EXTENT_ZERO && x.depth == 0, "zero cluster over backing");
	/* Past the end of the 4 MiB backing chain everything reads as zeros. */
	cr_assert_eq(qcow_block_status(img, 4 << 20, 4 << 20, &x), 0);
	cr_assert(x.length == (4 << 20) && x.flags == QCOW_EXTENT_ZERO && x.depth == -1);
	cr_assert_eq(qcow_block_status(img, 0, 0, &x), -EINVAL);
	qcow_close(img);
}

Test(qcow_api, stored_bytes_counts_this_file_only)
{
	static uint8_t w[65536];
	struct qcow_image *img;
	uint64_t n = 1;

	create("base.qcow2", 4 << 20, 0, NULL);
	img = open_img("base.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 5);
	cr_assert_eq(qcow_stored_bytes(img, &n), 0);
	cr_assert_eq(n, 0, "a new image stores nothing");
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	cr_assert_eq(qcow_write(img, w, 65536, sizeof(w)), 0);
	qcow_close(img);
	create("top.qcow2", 8 << 20, 0, "base.qcow2");
	img = open_img("top.qcow2", QCOW_OPEN_RDWR);
	cr_assert_eq(qcow_write(img, w, 5 * 65536, 100), 0);
	cr_assert_eq(qcow_write(img, w, (8 << 20) - 65536, sizeof(w)), 0);
	cr_assert_eq(qcow_write_zeroes(img, 6 * 65536, 65536, 0), 0);
	cr_assert_eq(qcow_stored_bytes(img, &n), 0);
	/* Two data clusters here; the backing file's two and the zero cluster do not count. */
	cr_assert_eq(n, 2 * 65536, "stored %llu", (unsigned long long)n);
	cr_assert_eq(qcow_snapshot_create(img, "s"), 0);
	cr_assert_eq(qcow_write(img, w, 7 * 65536, sizeof(w)), 0);
	cr_assert_eq(qcow_stored_bytes(img, &n), 0);
	cr_assert_eq(n, 3 * 65536);
	qcow_close(img);
	{
		struct qcow_open_opts o = {.path = path_of("top.qcow2"), .snapshot = "s"};

		cr_assert_eq(qcow_open(&o, &img, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(qcow_stored_bytes(img, &n), 0);
		cr_assert_eq(n, 2 * 65536, "the snapshot holds what was there when it was taken");
		qcow_close(img);
	}
}

Test(qcow_api, map_cached_asks_for_tables)
{
	static uint8_t w[65536], table[65536];
	struct qcow_image *img;
	struct qcow_map m;
	uint64_t need = 0;
	int fd;

	create("g.qcow2", 1 << 30, 0, NULL);
	img = open_img("g.qcow2", QCOW_OPEN_RDWR);
	cr_assert_eq(qcow_map_cached(img, 0, 1 << 20, &m, &need), 0);
	cr_assert(m.kind == QCOW_MAP_UNALLOCATED && m.need == QCOW_NEED_ALLOCATE);
	fill(w, sizeof(w), 5);
	cr_assert_eq(qcow_write(img, w, 65536, sizeof(w)), 0);
	qcow_close(img);

	img = open_img("g.qcow2", 0);
	cr_assert_eq(qcow_map_cached(img, 65536, 65536, &m, &need), -EAGAIN);
	cr_assert_neq(need, 0);
	fd = open(path_of("g.qcow2"), O_RDONLY);
	cr_assert_eq(pread(fd, table, sizeof(table), (off_t)need), (ssize_t)sizeof(table));
	close(fd);
	cr_assert_eq(qcow_cache_insert_l2(img, need, table), 0);
	cr_assert_eq(qcow_map_cached(img, 65536, 3 * 65536, &m, &need), 0);
	cr_assert(m.kind == QCOW_MAP_DATA && m.length == 65536);
	cr_assert_eq(m.need, QCOW_NEED_NOTHING);
	fd = open(path_of("g.qcow2"), O_RDONLY);
	cr_assert_eq(pread(fd, table, sizeof(w), (off_t)m.host_offset), (ssize_t)sizeof(w));
	close(fd);
	cr_assert_eq(memcmp(table, w, sizeof(w)), 0, "host_offset does not hold the data");
	cr_assert_eq(qcow_cache_insert_l2(img, 12345, table), -EIO, "misaligned table accepted");
	qcow_close(img);
}

Test(qcow_api, resize_grows_l1_and_shrink_drops_data)
{
	static uint8_t w[4096], r[4096];
	struct qcow_image *img;
	struct qcow_info info;
	struct qcow_check_result res;

	create("h.qcow2", 1 << 20, 512, NULL); /* 512 B clusters: one L2 maps 32 KiB */
	img = open_img("h.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 6);
	cr_assert_eq(qcow_write(img, w, (1 << 20) - 4096, 4096), 0);
	cr_assert_eq(qcow_resize(img, 64 << 20), 0, "%s", qcow_last_error(img));
	qcow_get_info(img, &info);
	cr_assert_geq(info.l1_size, (64 << 20) / 32768);
	cr_assert_eq(qcow_write(img, w, (64 << 20) - 4096, 4096), 0);
	cr_assert_eq(qcow_read(img, r, (1 << 20) - 4096, 4096), 0);
	cr_assert_eq(memcmp(w, r, 4096), 0, "data lost when the L1 table moved");
	cr_assert_eq(qcow_resize(img, (1 << 20) - 1000), -EINVAL, "size not a multiple of 512");
	cr_assert_eq(qcow_resize(img, (1 << 20) - 1024), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_resize(img, 2 << 20), 0);
	cr_assert_eq(qcow_read(img, r, (1 << 20) - 1024, 1024), 0);
	cr_assert(all_zero(r, 1024), "bytes past a shrink came back after growing");
	cr_assert_eq(qcow_read(img, r, (1 << 20) - 4096, 3072), 0);
	cr_assert_eq(memcmp(w, r, 3072), 0);
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions == 0 && res.leaks == 0, "%llu corruptions, %llu leaks",
	          (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	qcow_close(img);
}

Test(qcow_api, shrink_into_a_cluster_then_grow_reads_zeros)
{
	static uint8_t w[65536], r[65536];
	struct qcow_image *img;

	create("k.qcow2", 1 << 20, 0, NULL);
	img = open_img("k.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 8);
	cr_assert_eq(qcow_write(img, w, (1 << 20) - 65536, 65536), 0);
	cr_assert_eq(qcow_resize(img, (1 << 20) - 4096), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_resize(img, 1 << 20), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_read(img, r, (1 << 20) - 65536, 65536), 0);
	cr_assert_eq(memcmp(r, w, 65536 - 4096), 0);
	cr_assert(all_zero(r + 65536 - 4096, 4096), "the cut tail of a cluster came back");
	qcow_close(img);
}

Test(qcow_api, create_rounds_size_up_to_512)
{
	struct qcow_image *img;
	struct qcow_info info;

	create("l.qcow2", 1000, 0, NULL);
	img = open_img("l.qcow2", 0);
	qcow_get_info(img, &info);
	cr_assert_eq(info.size_bytes, 1024);
	qcow_close(img);
}

/* Raises the refcount of NAME's cluster 0 (the header) to 2: one leak. */
static void leak_header_cluster(const char *name)
{
	uint64_t be, reftable, block;
	uint16_t two = htobe16(2);
	int fd = open(path_of(name), O_RDWR);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &be, 8, 48), 8);
	reftable = be64toh(be);
	cr_assert_eq(pread(fd, &be, 8, (off_t)reftable), 8);
	block = be64toh(be);
	cr_assert_eq(pwrite(fd, &two, 2, (off_t)block), 2);
	close(fd);
}

Test(qcow_api, dirty_image_is_repaired_on_open)
{
	static uint8_t w[65536 * 4];
	struct qcow_create_opts o = {
	    .path = path_of("i.qcow2"), .size_bytes = 16 << 20, .lazy_refcounts = true};
	struct qcow_check_result res, found, rep = {.rebuilt = 7};
	struct qcow_open_opts oo = {
	    .path = path_of("i.qcow2"), .flags = QCOW_OPEN_RDWR, .repaired = &rep};
	struct qcow_image *img;
	struct qcow_info info;

	cr_assert_eq(qcow_create(&o, err, sizeof(err)), 0);
	img = open_img("i.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 7);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	cr_assert_eq(qcow_flush(img), 0);
	qcow_abandon(img); /* a crash: the dirty bit stays set */
	leak_header_cluster("i.qcow2");

	img = open_img("i.qcow2", 0);
	qcow_get_info(img, &info);
	cr_assert(info.dirty, "lazy refcounts wrote metadata without the dirty bit");
	cr_assert_eq(qcow_check(img, 0, &found), 0);
	cr_assert_eq(found.leaks, 1, "the leak is not seen");
	qcow_close(img);

	/* The open says what it repaired: what a check found before. */
	cr_assert_eq(qcow_open(&oo, &img, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(rep.rebuilt, 1);
	cr_assert_eq(rep.corruptions, found.corruptions);
	cr_assert_eq(rep.leaks, found.leaks);
	qcow_get_info(img, &info);
	cr_assert(!info.dirty, "repair did not clear the dirty bit");
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert_eq(res.corruptions, 0);
	cr_assert_eq(res.leaks, 0);
	qcow_close(img);

	/* A clean image: nothing repaired. */
	cr_assert_eq(qcow_open(&oo, &img, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(rep.rebuilt, 0);
	cr_assert_eq(rep.corruptions + rep.leaks, 0);
	qcow_close(img);
}

Test(qcow_api, tiny_cache_writes_back_in_order)
{
	struct qcow_open_opts oo = {.path = path_of("j.qcow2"),
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = 1,
	                            .refcount_cache_bytes = 1};
	static uint8_t w[4096], r[4096];
	struct qcow_image *img;
	struct qcow_check_result res;

	create("j.qcow2", 1ull << 32, 4096, NULL);
	cr_assert_eq(qcow_open(&oo, &img, err, sizeof(err)), 0, "%s", err);
	for (unsigned i = 0; i < 400; i++) {
		fill(w, sizeof(w), i);
		/* Spread over many L2 tables (one maps 2 MiB here). */
		cr_assert_eq(
		    qcow_write(img, w, (uint64_t)i * 9999991 % ((1ull << 32) - 4096), 4096), 0,
		    "%s", qcow_last_error(img));
	}
	for (unsigned i = 0; i < 400; i++) {
		fill(w, sizeof(w), i);
		cr_assert_eq(qcow_read(img, r, (uint64_t)i * 9999991 % ((1ull << 32) - 4096), 4096),
		             0);
		/* Later writes may overlap earlier ones; check the last write of each slot. */
		bool later = false;
		for (unsigned j = i + 1; j < 400; j++) {
			uint64_t a = (uint64_t)i * 9999991 % ((1ull << 32) - 4096);
			uint64_t b = (uint64_t)j * 9999991 % ((1ull << 32) - 4096);
			if (a < b + 4096 && b < a + 4096)
				later = true;
		}
		if (!later)
			cr_assert_eq(memcmp(w, r, 4096), 0, "write %u lost", i);
	}
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions == 0 && res.leaks == 0);
	qcow_close(img);
}

static void compressed_overwrite(enum qcow_compression type)
{
	struct qcow_create_opts o = {
	    .path = path_of("z.qcow2"), .size_bytes = 1 << 20, .compression = type};
	static uint8_t w[65536], r[65536];
	struct qcow_check_result res;
	struct qcow_image *img;
	struct qcow_map m;
	uint64_t need;

	cr_assert_eq(qcow_create(&o, err, sizeof(err)), 0, "%s", err);
	img = open_img("z.qcow2", QCOW_OPEN_RDWR);
	for (size_t i = 0; i < sizeof(w); i++)
		w[i] = (uint8_t)("compressible"[i % 12]);
	cr_assert_eq(qcow_write_compressed(img, w, 65536, sizeof(w)), 0, "%s",
	             qcow_last_error(img));
	cr_assert_eq(qcow_write_compressed(img, w, 2 * 65536, sizeof(w)), 0);
	cr_assert_eq(qcow_map_cached(img, 65536, 65536, &m, &need), 0);
	cr_assert_eq(m.kind, QCOW_MAP_COMPRESSED, "a compressible cluster was stored plainly");
	cr_assert_eq(m.need, QCOW_NEED_ALLOCATE);
	cr_assert_eq(qcow_write_compressed(img, w, 100, sizeof(w)), -EINVAL, "unaligned accepted");
	qcow_close(img);

	img = open_img("z.qcow2", QCOW_OPEN_RDWR);
	cr_assert_eq(qcow_read(img, r, 65536, sizeof(r)), 0);
	cr_assert_eq(memcmp(r, w, sizeof(r)), 0, "compressed cluster reads back wrong");
	memset(w + 1000, 0xee, 300);
	cr_assert_eq(qcow_write(img, w + 1000, 65536 + 1000, 300), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_map_cached(img, 65536, 65536, &m, &need), 0);
	cr_assert_eq(m.kind, QCOW_MAP_DATA, "an overwritten compressed cluster stays compressed");
	cr_assert_eq(qcow_read(img, r, 65536, sizeof(r)), 0);
	cr_assert_eq(memcmp(r, w, sizeof(r)), 0, "overwrite of a compressed cluster lost data");
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions == 0 && res.leaks == 0, "%llu corruptions, %llu leaks",
	          (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	qcow_close(img);
}

Test(qcow_api, zstd_compressed_cluster_overwritten_becomes_plain)
{
	compressed_overwrite(QCOW_COMPRESSION_ZSTD);
}

Test(qcow_api, deflate_compressed_cluster_overwritten_becomes_plain)
{
	compressed_overwrite(QCOW_COMPRESSION_DEFLATE);
}

static uint64_t get_be64(int fd, uint64_t off)
{
	uint8_t b[8];
	uint64_t v = 0;

	cr_assert_eq(pread(fd, b, 8, (off_t)off), 8);
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static void put_be64_at(int fd, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
	cr_assert_eq(pwrite(fd, b, 8, (off_t)off), 8);
}

/* A repair must not free what an unreadable table holds (it would reuse a snapshot's clusters). */
Test(qcow_api, repair_refuses_when_a_table_is_unreadable)
{
	static uint8_t w[65536];
	struct qcow_open_opts oo = {.path = path_of("u.qcow2"),
	                            .flags = QCOW_OPEN_RDWR | QCOW_OPEN_REPAIR};
	struct qcow_check_result res;
	struct qcow_image *img;
	uint64_t snap_table, snap_l1;
	int fd;

	create("u.qcow2", 1 << 20, 0, NULL);
	img = open_img("u.qcow2", QCOW_OPEN_RDWR);
	fill(w, sizeof(w), 9);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0);
	cr_assert_eq(qcow_snapshot_create(img, "s"), 0, "%s", qcow_last_error(img));
	fill(w, sizeof(w), 10);
	cr_assert_eq(qcow_write(img, w, 0, sizeof(w)), 0); /* the snapshot keeps its own L2 */
	cr_assert_eq(qcow_close(img), 0);

	fd = open(path_of("u.qcow2"), O_RDWR);
	cr_assert_geq(fd, 0);
	snap_table = get_be64(fd, 64);
	snap_l1 = get_be64(fd, snap_table);
	put_be64_at(fd, snap_l1, 1ull << 40); /* snapshot L1 entry 0: an L2 table far past EOF */
	close(fd);

	cr_assert_eq(qcow_open(&oo, &img, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions > 0 && res.leaks > 0, "the damage is not seen");
	cr_assert_eq(qcow_check(img, QCOW_REPAIR_LEAKS, &res), -EIO,
	             "repaired from a partial walk");
	cr_assert_eq(qcow_check(img, QCOW_REPAIR_ALL, &res), -EIO, "rebuilt from a partial walk");
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert_gt(res.leaks, 0, "the unreadable table's clusters were freed");
	qcow_close(img);
}

/* The README promises a second writer gets "image is in use by another process". */
Test(qcow_api, second_writer_is_refused)
{
	struct qcow_open_opts o = {.path = path_of("lock.qcow2"), .flags = QCOW_OPEN_RDWR};
	struct qcow_image *img, *other = NULL;

	create("lock.qcow2", 1 << 20, 0, NULL);
	img = open_img("lock.qcow2", QCOW_OPEN_RDWR);
	err[0] = '\0';
	cr_assert_eq(qcow_open(&o, &other, err, sizeof(err)), -EAGAIN, "a second writer opened it");
	cr_assert(strstr(err, "in use by another process"), "%s", err);
	o.flags = 0;
	cr_assert_eq(qcow_open(&o, &other, err, sizeof(err)), -EAGAIN,
	             "a reader opened an image being written");
	cr_assert_eq(qcow_close(img), 0);
	cr_assert_eq(qcow_open(&o, &other, err, sizeof(err)), 0, "%s", err);
	qcow_close(other);
}

/* Makes NAME record no backing format: its header extension becomes the end marker. */
static void drop_backing_format(const char *name)
{
	static const uint8_t type[4] = {0xe2, 0x79, 0x2a, 0xca};
	uint8_t head[4096], *at;
	int fd = open(path_of(name), O_RDWR);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
	at = memmem(head + 104, sizeof(head) - 104, type, sizeof(type));
	cr_assert_not_null(at, "no backing format extension");
	memset(at, 0, 8);
	cr_assert_eq(pwrite(fd, at, 8, at - head), 8);
	close(fd);
}

/* qcow_open with backing_dirs = {DIR/in}: 0 or -errno, the message in err. */
static int open_confined(const char *name, unsigned flags)
{
	char in[PATH_MAX + 8];
	const char *dirs[] = {in, NULL};
	struct qcow_open_opts o = {.path = path_of(name), .flags = flags, .backing_dirs = dirs};
	struct qcow_image *img = NULL;
	int rc;

	snprintf(in, sizeof(in), "%s/in", dir);
	err[0] = '\0';
	rc = qcow_open(&o, &img, err, sizeof(err));
	if (rc == 0)
		qcow_close(img);
	return rc;
}

Test(qcow_api, backing_files_stay_inside_the_allowed_folders)
{
	cr_assert_eq(mkdir(path_of("in"), 0700), 0);
	cr_assert_eq(mkdir(path_of("out"), 0700), 0);
	create("out/secret.qcow2", 1 << 20, 0, NULL);
	create("in/base.qcow2", 1 << 20, 0, NULL);
	create("in/ok.qcow2", 0, 0, "base.qcow2");
	cr_assert_eq(open_confined("in/ok.qcow2", 0), 0, "%s", err);
	cr_assert_eq(open_confined("in/ok.qcow2", QCOW_OPEN_RDWR | QCOW_OPEN_NO_PROBE), 0, "%s",
	             err);

	create("in/abs.qcow2", 0, 0, path_of("out/secret.qcow2"));
	cr_assert_eq(open_confined("in/abs.qcow2", 0), -EPERM);
	cr_assert(strstr(err, "outside"), "%s", err);
	create("in/rel.qcow2", 0, 0, "../out/secret.qcow2");
	cr_assert_eq(open_confined("in/rel.qcow2", 0), -EPERM);
	cr_assert(strstr(err, "out/secret.qcow2, outside"), "%s", err);

	/* Symlinks are resolved first: out of the folder refused, within it fine. */
	cr_assert_eq(symlink("../out/secret.qcow2", path_of("in/link.qcow2")), 0);
	create("in/vialink.qcow2", 0, 0, "link.qcow2");
	cr_assert_eq(open_confined("in/vialink.qcow2", 0), -EPERM);
	cr_assert(strstr(err, "outside"), "%s", err);
	cr_assert_eq(symlink("base.qcow2", path_of("in/alias.qcow2")), 0);
	create("in/viaalias.qcow2", 0, 0, "alias.qcow2");
	cr_assert_eq(open_confined("in/viaalias.qcow2", 0), 0, "%s", err);

	/* Every file of the chain is checked. */
	create("in/mid.qcow2", 0, 0, "../out/secret.qcow2");
	create("in/deep.qcow2", 0, 0, "mid.qcow2");
	cr_assert_eq(open_confined("in/deep.qcow2", 0), -EPERM);
	cr_assert(strstr(err, "mid.qcow2: backing file ../out/secret.qcow2"), "%s", err);

	/* A FIFO inside is refused without blocking the open. */
	create("in/pipe.raw", 1 << 20, 0, NULL);
	create("in/overpipe.qcow2", 0, 0, "pipe.raw");
	cr_assert_eq(unlink(path_of("in/pipe.raw")), 0);
	cr_assert_eq(mkfifo(path_of("in/pipe.raw"), 0600), 0);
	cr_assert_eq(open_confined("in/overpipe.qcow2", 0), -EINVAL);
	cr_assert(strstr(err, "not a regular file"), "%s", err);

	/* Without backing_dirs, as the image tools open files, the chain is followed. */
	qcow_close(open_img("in/abs.qcow2", 0));
}

Test(qcow_api, unrecorded_backing_format_is_refused_not_probed)
{
	cr_assert_eq(mkdir(path_of("in"), 0700), 0);
	create("in/base.qcow2", 1 << 20, 0, NULL);
	create("in/top.qcow2", 0, 0, "base.qcow2");
	drop_backing_format("in/top.qcow2");
	cr_assert_eq(open_confined("in/top.qcow2", QCOW_OPEN_NO_PROBE), -EPERM);
	cr_assert(strstr(err, "format of backing file base.qcow2 is not recorded"), "%s", err);
	cr_assert(strstr(err, "qemu-img rebase -u -F"), "%s", err);
	/* Deeper in the chain too. */
	create("in/over.qcow2", 0, 0, "top.qcow2");
	cr_assert_eq(open_confined("in/over.qcow2", QCOW_OPEN_NO_PROBE), -EPERM);
	/* Probed when allowed. */
	cr_assert_eq(open_confined("in/top.qcow2", 0), 0, "%s", err);
}

/*
 * A file system that fills up, over the POSIX ops: while full is set,
 * reserving space and writing past what the file already holds fail with
 * -ENOSPC, as on a full disk; below that, writes land.  no_reserve_ops
 * lacks allocate, as for a file system that cannot reserve space.
 */
struct filling_disk {
	void *posix;
	bool full;
	uint64_t held; /* bytes from 0 the file has written or reserved */
};

static int fd_room(struct filling_disk *d, uint64_t off, uint64_t len)
{
	if (d->full && off + len > d->held)
		return -ENOSPC;
	if (off + len > d->held)
		d->held = off + len;
	return 0;
}

static int fd_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	return qcow_posix_ops.pread(((struct filling_disk *)ctx)->posix, buf, len, off);
}

static int fd_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct filling_disk *d = ctx;
	int rc = fd_room(d, off, len);

	return rc < 0 ? rc : qcow_posix_ops.pwrite(d->posix, buf, len, off);
}

static int fd_allocate(void *ctx, uint64_t off, uint64_t len)
{
	struct filling_disk *d = ctx;
	int rc = fd_room(d, off, len);

	return rc < 0 ? rc : qcow_posix_ops.allocate(d->posix, off, len);
}

static int fd_sync(void *ctx)
{
	return qcow_posix_ops.sync(((struct filling_disk *)ctx)->posix);
}

static int fd_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	return qcow_posix_ops.punch_hole(((struct filling_disk *)ctx)->posix, off, len);
}

static int fd_truncate(void *ctx, uint64_t size)
{
	return qcow_posix_ops.truncate(((struct filling_disk *)ctx)->posix, size);
}

static int fd_get_size(void *ctx, uint64_t *size)
{
	return qcow_posix_ops.get_size(((struct filling_disk *)ctx)->posix, size);
}

static void fd_close(void *ctx)
{
	qcow_posix_ops.close(((struct filling_disk *)ctx)->posix);
}

static const struct qcow_io_ops filling_ops = {
    .pread = fd_pread,
    .pwrite = fd_pwrite,
    .sync = fd_sync,
    .punch_hole = fd_punch_hole,
    .allocate = fd_allocate,
    .truncate = fd_truncate,
    .get_size = fd_get_size,
    .close = fd_close,
};

static const struct qcow_io_ops no_reserve_ops = {
    .pread = fd_pread,
    .pwrite = fd_pwrite,
    .sync = fd_sync,
    .punch_hole = fd_punch_hole,
    .truncate = fd_truncate,
    .get_size = fd_get_size,
    .close = fd_close,
};

/*
 * Flushed data, then a full disk: writes that need new clusters fail with
 * -ENOSPC (once what was reserved ahead is used up) and leak nothing,
 * overwrites in place still land, a flush still succeeds (nothing was
 * lost, so nothing is fenced), and once there is room again the same
 * handle writes where it failed.  Closed, the image checks clean.
 */
static void full_disk(const struct qcow_io_ops *ops, const char *name)
{
	static uint8_t a[1 << 20], big[8 << 20], b[65536], c[4096], r[1 << 20];
	struct filling_disk d = {0};
	struct qcow_open_opts oo = {
	    .path = path_of(name), .ops = ops, .ctx = &d, .flags = QCOW_OPEN_RDWR};
	struct qcow_check_result res;
	struct qcow_image *img;
	uint64_t failed_at = 0;
	int rc;

	create(name, 64 << 20, 0, NULL);
	cr_assert_eq(qcow_posix_open(path_of(name), O_RDWR, &d.posix), 0);
	cr_assert_eq(qcow_posix_ops.get_size(d.posix, &d.held), 0);
	cr_assert_eq(qcow_open(&oo, &img, err, sizeof(err)), 0, "%s", err);
	fill(a, sizeof(a), 1);
	cr_assert_eq(qcow_write(img, a, 0, sizeof(a)), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_flush(img), 0, "%s", qcow_last_error(img));

	d.full = true;
	rc = qcow_write(img, big, 16 << 20, sizeof(big));
	cr_assert_eq(rc, -ENOSPC, "8 MiB of new clusters on a full disk: %d", rc);
	/* Single clusters, each in a new place, until what was reserved ahead runs out. */
	for (unsigned i = 0; i < 64 && !failed_at; i++) {
		uint64_t off = (32ull << 20) + i * 65536ull + 100;

		rc = qcow_write(img, c, off, sizeof(c));
		cr_assert(rc == 0 || rc == -ENOSPC, "%s", qcow_last_error(img));
		if (rc)
			failed_at = off;
	}
	cr_assert(failed_at, "64 clusters allocated on a full disk");
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)("compressible"[i % 12]);
	rc = qcow_write_compressed(img, b, 48 << 20, sizeof(b));
	cr_assert_eq(rc, -ENOSPC, "a compressed cluster on a full disk: %d", rc);
	fill(b, sizeof(b), 2);
	cr_assert_eq(qcow_write(img, b, 0, sizeof(b)), 0, "an overwrite in place failed: %s",
	             qcow_last_error(img));
	cr_assert_eq(qcow_flush(img), 0, "a full disk fenced the image: %s", qcow_last_error(img));

	d.full = false;
	fill(c, sizeof(c), 3);
	cr_assert_eq(qcow_write(img, c, failed_at, sizeof(c)), 0, "%s", qcow_last_error(img));
	cr_assert_eq(qcow_close(img), 0);

	img = open_img(name, 0);
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions == 0 && res.leaks == 0, "%llu corruptions, %llu leaks",
	          (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	cr_assert_eq(qcow_read(img, r, 0, sizeof(r)), 0);
	cr_assert(!memcmp(r, b, sizeof(b)) &&
	              !memcmp(r + sizeof(b), a + sizeof(b), sizeof(a) - sizeof(b)),
	          "flushed data changed");
	cr_assert_eq(qcow_read(img, r, failed_at, sizeof(c)), 0);
	cr_assert_eq(memcmp(r, c, sizeof(c)), 0, "the write after space came back is lost");
	cr_assert_eq(qcow_read(img, r, 16 << 20, sizeof(r)), 0);
	cr_assert(all_zero(r, sizeof(r)), "a failed write shows");
	qcow_close(img);
}

Test(qcow_api, full_disk_fails_writes_cleanly)
{
	full_disk(&filling_ops, "full.qcow2");
}

Test(qcow_api, full_disk_without_reservations_fails_writes_cleanly)
{
	full_disk(&no_reserve_ops, "full-noreserve.qcow2");
}
