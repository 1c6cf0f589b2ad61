/* SPDX-License-Identifier: MIT */
/*
 * fuzz_qcow_open.c - libFuzzer target: the input is the whole image file.
 *
 * The bytes are served by an in-memory struct qcow_io_ops: reads past the
 * end return zeros (as the ops contract says), writes go to a private copy
 * that may grow by at most FUZZ_GROWTH_BYTES, so a hostile image cannot
 * make the harness eat memory.  Each input is opened read-only and then
 * read-write, both with QCOW_OPEN_NO_BACKING (never a real file), and
 * driven through info, reads, block status, the non-blocking map path, a
 * few small writes, check (with repair when writable) and close; what a
 * writable session leaves behind is opened once more read-only.
 *
 * What counts as a finding, besides sanitizer reports: a failed open with
 * an empty or multi-line message or one that closed the caller's ctx; a
 * successful open that reports an impossible geometry; block status that
 * describes a run not starting at the asked offset or longer than asked;
 * a mapping of guest data onto the header cluster; a session that changed
 * the magic or version; an image whose ctx is not closed exactly once.
 *
 * The same function is linked into fuzz_qcow_open_replay (plain C, any
 * compiler), which runs it over a seed corpus and deterministic mutations.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow.h"

/* Inputs above this are ignored: the corpus images are far smaller. */
#define FUZZ_MAX_INPUT_BYTES (64u << 20)
/* How much the image file may grow through writes. */
#define FUZZ_GROWTH_BYTES (16u << 20)
/* Upper bound on block status iterations per image. */
#define FUZZ_MAX_EXTENTS 256
#define FUZZ_IO_BYTES    65536u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct memfile {
	uint8_t *buf;
	size_t size;  /* file size */
	size_t cap;   /* bytes allocated at buf */
	size_t limit; /* the file never grows past this */
	int closes;
};

static void finding(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_qcow_open: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

static int mem_reserve(struct memfile *m, size_t size)
{
	uint8_t *p;
	size_t cap;

	if (size > m->limit)
		return -EFBIG;
	if (size <= m->cap)
		return 0;
	cap = m->cap ? m->cap : 4096;
	while (cap < size)
		cap = cap > m->limit / 2 ? m->limit : cap * 2;
	p = realloc(m->buf, cap);
	if (!p)
		return -ENOMEM;
	memset(p + m->cap, 0, cap - m->cap);
	m->buf = p;
	m->cap = cap;
	return 0;
}

static int mem_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct memfile *m = ctx;
	size_t n = 0;

	if (off < m->size)
		n = m->size - off < len ? m->size - (size_t)off : len;
	if (n)
		memcpy(buf, m->buf + off, n);
	memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}

static int mem_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct memfile *m = ctx;
	int rc;

	if (off > m->limit || len > m->limit - off)
		return -EFBIG;
	rc = mem_reserve(m, (size_t)off + len);
	if (rc)
		return rc;
	memcpy(m->buf + off, buf, len);
	if (off + len > m->size)
		m->size = (size_t)off + len;
	return 0;
}

static int mem_sync(void *ctx)
{
	(void)ctx;
	return 0;
}

static int mem_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct memfile *m = ctx;

	if (off >= m->size)
		return 0;
	if (len > m->size - off)
		len = m->size - off;
	memset(m->buf + off, 0, (size_t)len);
	return 0;
}

static int mem_truncate(void *ctx, uint64_t size)
{
	struct memfile *m = ctx;
	int rc;

	if (size > m->limit)
		return -EFBIG;
	rc = mem_reserve(m, (size_t)size);
	if (rc)
		return rc;
	if (size < m->size)
		memset(m->buf + size, 0, m->size - (size_t)size);
	m->size = (size_t)size;
	return 0;
}

static int mem_get_size(void *ctx, uint64_t *size)
{
	struct memfile *m = ctx;

	*size = m->size;
	return 0;
}

static void mem_close(void *ctx)
{
	struct memfile *m = ctx;

	m->closes++;
}

static const struct qcow_io_ops mem_ops = {
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .sync = mem_sync,
    .punch_hole = mem_punch_hole,
    .truncate = mem_truncate,
    .get_size = mem_get_size,
    .close = mem_close,
};

static bool memfile_init(struct memfile *m, const uint8_t *data, size_t size)
{
	memset(m, 0, sizeof(*m));
	m->limit = size + FUZZ_GROWTH_BYTES;
	if (mem_reserve(m, size ? size : 1))
		return false;
	if (size)
		memcpy(m->buf, data, size);
	m->size = size;
	return true;
}

static void check_info(const struct qcow_info *info, unsigned flags)
{
	if (info->cluster_size < 512 || info->cluster_size > (2u << 20) ||
	    (info->cluster_size & (info->cluster_size - 1)))
		finding("open accepted an impossible cluster size", NULL);
	if (info->version != 2 && info->version != 3)
		finding("open accepted an impossible version", NULL);
	if (info->refcount_bits < 1 || info->refcount_bits > 64 ||
	    (info->refcount_bits & (info->refcount_bits - 1)))
		finding("open accepted impossible refcount bits", NULL);
	if ((flags & QCOW_OPEN_RDWR) && info->read_only)
		finding("read-write open reports read_only", NULL);
	if (!memchr(info->backing_file, 0, sizeof(info->backing_file)) ||
	    !memchr(info->backing_format, 0, sizeof(info->backing_format)) ||
	    !memchr(info->backing_path, 0, sizeof(info->backing_path)))
		finding("qcow_get_info string not terminated", NULL);
}

/* Offsets of the few I/O ranges tried: start, middle, end. */
static void io_ranges(uint64_t size, uint64_t off[3], size_t *len)
{
	*len = size < FUZZ_IO_BYTES ? (size_t)size : FUZZ_IO_BYTES;
	off[0] = 0;
	off[1] = (size / 2) & ~(uint64_t)511;
	if (off[1] > size - *len)
		off[1] = size - *len;
	off[2] = size - *len;
}

static void walk_block_status(struct qcow_image *img, uint64_t size)
{
	uint64_t off = 0;

	for (int i = 0; i < FUZZ_MAX_EXTENTS && off < size; i++) {
		struct qcow_extent ext;
		int rc = qcow_block_status(img, off, size - off, &ext);

		if (rc < 0)
			return;
		if (ext.offset != off)
			finding("block status run does not start at the asked offset", NULL);
		if (ext.length == 0 || ext.length > size - off)
			finding("block status run empty or longer than asked", NULL);
		off += ext.length;
	}
}

static void walk_map_cached(struct qcow_image *img, struct memfile *m, uint64_t size,
                            uint32_t cluster)
{
	uint64_t off = 0;
	uint8_t *table = NULL;

	for (int i = 0; i < 32 && off < size; i++) {
		struct qcow_map map;
		uint64_t need = 0;
		int rc = qcow_map_cached(img, off, size - off, &map, &need);

		if (rc == -EAGAIN) {
			if (!table)
				table = malloc(cluster);
			if (!table)
				break;
			mem_pread(m, table, cluster, need);
			if (qcow_cache_insert_l2(img, need, table) < 0)
				break;
			rc = qcow_map_cached(img, off, size - off, &map, &need);
		}
		if (rc < 0)
			break;
		if (map.guest_offset != off || map.length == 0 || map.length > size - off)
			finding("qcow_map_cached run does not match the request", NULL);
		/* Cluster 0 is always the header: no guest byte may map there. */
		if (map.kind == QCOW_MAP_DATA && map.host_offset < cluster)
			finding("qcow_map_cached maps guest data onto the header cluster", NULL);
		off += map.length;
	}
	free(table);
}

/*
 * check walks every cluster the refcount table covers, the slowest step:
 * one check per open (with repair when writable), none on the reopen.
 */
static void exercise(struct qcow_image *img, struct memfile *m, unsigned flags, bool check)
{
	static uint8_t buf[FUZZ_IO_BYTES];
	struct qcow_info *info = malloc(sizeof(*info));
	struct qcow_check_result res;
	uint64_t off[3];
	size_t len;

	if (!info)
		return;
	qcow_get_info(img, info);
	check_info(info, flags);
	io_ranges(info->size_bytes, off, &len);
	for (int i = 0; i < 3 && len; i++)
		qcow_read(img, buf, off[i], len);
	walk_block_status(img, info->size_bytes);
	walk_map_cached(img, m, info->size_bytes, info->cluster_size);

	if (flags & QCOW_OPEN_RDWR) {
		size_t wlen = len < 4096 ? len : 4096;

		memset(buf, 0x5a, wlen);
		for (int i = 0; i < 3 && wlen; i++)
			qcow_write(img, buf, off[i] + (len - wlen) / 2, wlen);
		if (len) {
			qcow_write_zeroes(img, off[1], len, QCOW_ZERO_MAY_UNMAP);
			qcow_discard(img, off[2], len);
		}
		qcow_flush(img);
		qcow_read(img, buf, off[0], len);
	}
	if (check)
		qcow_check(img, (flags & QCOW_OPEN_RDWR) ? QCOW_REPAIR_ALL : 0, &res);
	free(info);
}

static void run_one(const uint8_t *data, size_t size, unsigned flags)
{
	struct memfile m;
	struct qcow_open_opts opts = {
	    .path = "fuzz.qcow2",
	    .ops = &mem_ops,
	    .ctx = &m,
	    .flags = flags | QCOW_OPEN_NO_BACKING,
	    .l2_cache_bytes = 1u << 20,
	    .refcount_cache_bytes = 256u << 10,
	};
	struct qcow_image *img = NULL;
	char err[512];
	int rc;

	if (!memfile_init(&m, data, size))
		return;
	err[0] = '\0';
	rc = qcow_open(&opts, &img, err, sizeof(err));
	if (rc < 0) {
		if (img)
			finding("qcow_open wrote *out on failure", NULL);
		if (m.closes)
			finding("qcow_open closed the caller's ctx on failure", NULL);
		if (!err[0] || strchr(err, '\n'))
			finding("qcow_open failed without a one-line message", err);
		free(m.buf);
		return;
	}
	if (rc > 0 || !img)
		finding("qcow_open returned success without an image", NULL);
	exercise(img, &m, flags, true);
	qcow_close(img);
	if (m.closes != 1)
		finding("qcow_close did not close the ctx exactly once", NULL);
	/* Whatever the image said, the header's magic and version stay. */
	if (m.size < 8 || memcmp(m.buf, data, 8) != 0)
		finding("a session wrote over the magic or version", NULL);

	/* What a writable session left behind must at least be safe to open. */
	if (flags & QCOW_OPEN_RDWR) {
		struct memfile again;

		if (memfile_init(&again, m.buf, m.size)) {
			opts.ctx = &again;
			opts.flags = QCOW_OPEN_NO_BACKING;
			if (qcow_open(&opts, &img, err, sizeof(err)) == 0) {
				exercise(img, &again, 0, false);
				qcow_close(img);
			}
			free(again.buf);
		}
	}
	free(m.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_MAX_INPUT_BYTES)
		return 0;
	run_one(data, size, 0);
	run_one(data, size, QCOW_OPEN_RDWR);
	return 0;
}
