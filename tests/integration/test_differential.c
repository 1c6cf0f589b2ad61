/* SPDX-License-Identifier: MIT */
/*
 * test_differential.c - the qcow library against a flat reference.
 *
 * Thousands of seeded-random guest operations (writes, write-zeroes with and
 * without MAY_UNMAP, discards, reads, flushes, close+reopen) go both to a
 * qcow2 image through the library and to a sparse raw reference file that
 * models the guest disk exactly: a write copies bytes, write-zeroes zeroes
 * its range, a discard zeroes only the whole clusters inside its range.
 * Every read from the image is compared with the reference.
 *
 * Offsets are drawn from a few windows of the virtual disk: its start, both
 * sides of 4 GiB, both sides of an L1-entry boundary, and its last clusters
 * (multi-TiB images: L1 indexes and host offsets past 32 bits).  Lengths are
 * tiny and unaligned, sector aligned, cluster crossing, and whole clusters.
 *
 * Backing variants: the reference starts as the base content (a qcow2 or a
 * raw base, or raw <- qcow2 <- overlay), and the overlay is created with a
 * relative backing name.
 *
 * At the end the image is reopened: qcow_check finds no corruption and no
 * leak, every window reads as the reference, `qemu-img check` exits 0 and
 * `qemu-img compare IMAGE REFERENCE` finds them identical.
 *
 * Reproduce a failure with BLOCKD_TEST_SEED=<seed printed> (and
 * BLOCKD_TEST_SCALE for the same operation count).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

#define MAX_BUF     (8 * MiB)
#define MAX_WINDOWS 6
#define OPLOG_LEN   24

enum backing_kind {
	BK_NONE,
	BK_QCOW2, /* base.qcow2 written by the library */
	BK_RAW,   /* base.raw, shorter than the overlay, not cluster aligned */
	BK_CHAIN, /* base.raw <- mid.qcow2 <- image */
};

struct diff_cfg {
	uint32_t cluster_size;
	uint64_t size;
	unsigned nops;
	enum backing_kind backing;
	unsigned refcount_bits;
	bool lazy_refcounts;
	uint64_t cache_bytes; /* L2 and refcount caches; 0: the defaults */
	uint64_t seed;
};

enum op_kind { OP_WRITE, OP_READ, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD, OP_FLUSH, OP_REOPEN };

static const char *const op_names[] = {"write",   "read",  "write_zeroes", "write_zeroes(unmap)",
                                       "discard", "flush", "reopen"};

struct op_rec {
	unsigned index;
	enum op_kind kind;
	uint64_t off;
	uint64_t len;
};

struct window {
	uint64_t start;
	uint64_t len;
};

struct diff {
	const struct diff_cfg *cfg;
	uint64_t seed;
	struct tu_rng rng;
	char img_path[512];
	char ref_path[512];
	int ref_fd;
	struct qcow_image *img;
	struct window win[MAX_WINDOWS];
	int nwin;
	uint8_t *wbuf;
	uint8_t *rbuf;
	uint8_t *refbuf;
	struct op_rec log[OPLOG_LEN];
	unsigned nlog;
	unsigned op_index;
};

static char g_dir[256];

static void setup_dir(void)
{
	int rc = tu_mkdtemp(g_dir, sizeof(g_dir), "diff");
	cr_assert_eq(rc, 0, "mkdtemp: %s", strerror(-rc));
	tu_watch_dir = g_dir;
}

static void teardown_dir(void)
{
	tu_rmtree(g_dir);
}

static void log_op(struct diff *d, enum op_kind kind, uint64_t off, uint64_t len)
{
	struct op_rec *r = &d->log[d->nlog % OPLOG_LEN];
	r->index = d->op_index;
	r->kind = kind;
	r->off = off;
	r->len = len;
	d->nlog++;
	tu_watch("differential: seed=0x%" PRIx64 " op %u: %s off=%" PRIu64 " len=%" PRIu64, d->seed,
	         d->op_index, op_names[kind], off, len);
}

/* Prints the seed, the configuration and the last operations. */
static void dump_context(const struct diff *d)
{
	const struct diff_cfg *c = d->cfg;
	fprintf(
	    stderr,
	    "differential: seed=0x%" PRIx64 " cluster_size=%" PRIu32 " size=%" PRIu64
	    " backing=%d refcount_bits=%u lazy=%d ops=%u (reproduce: BLOCKD_TEST_SEED=0x%" PRIx64
	    ")\n",
	    d->seed, c->cluster_size, c->size, (int)c->backing, c->refcount_bits,
	    (int)c->lazy_refcounts, c->nops, d->seed);
	unsigned first = d->nlog > OPLOG_LEN ? d->nlog - OPLOG_LEN : 0;
	for (unsigned i = first; i < d->nlog; i++) {
		const struct op_rec *r = &d->log[i % OPLOG_LEN];
		fprintf(stderr, "  op %u: %s off=%" PRIu64 " (0x%" PRIx64 ") len=%" PRIu64 "\n",
		        r->index, op_names[r->kind], r->off, r->off, r->len);
	}
}

#define DIFF_ASSERT(d, cond, ...)                                                                  \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			dump_context(d);                                                           \
			cr_assert_fail(__VA_ARGS__);                                               \
		}                                                                                  \
	} while (0)

static const char *img_err(const struct diff *d)
{
	return d->img ? qcow_last_error(d->img) : "";
}

/* ---- the reference: a sparse raw file ---------------------------------- */

static void ref_write(struct diff *d, const void *buf, uint64_t off, size_t len)
{
	ssize_t n = pwrite(d->ref_fd, buf, len, (off_t)off);
	cr_assert_eq(n, (ssize_t)len, "reference pwrite: %s", strerror(errno));
}

static void ref_zero(struct diff *d, uint64_t off, uint64_t len)
{
	if (!len)
		return;
	int rc = fallocate(d->ref_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
	                   (off_t)len);
	cr_assert_eq(rc, 0, "reference punch hole: %s", strerror(errno));
}

static void ref_read(struct diff *d, void *buf, uint64_t off, size_t len)
{
	ssize_t n = pread(d->ref_fd, buf, len, (off_t)off);
	cr_assert_eq(n, (ssize_t)len, "reference pread: %s", strerror(errno));
}

/* The whole clusters inside [off, off+len), as the discard contract says. */
static void discard_span(uint32_t cs, uint64_t off, uint64_t len, uint64_t *s, uint64_t *e)
{
	uint64_t start = (off + cs - 1) / cs * cs;
	uint64_t end = (off + len) / cs * cs;
	*s = start;
	*e = end > start ? end : start;
}

/* ---- image handling ---------------------------------------------------- */

static void open_image(struct diff *d, unsigned flags)
{
	char err[512] = "";
	struct qcow_open_opts o = {.path = d->img_path,
	                           .flags = flags,
	                           .l2_cache_bytes = d->cfg->cache_bytes,
	                           .refcount_cache_bytes = d->cfg->cache_bytes};
	int rc = qcow_open(&o, &d->img, err, sizeof(err));
	DIFF_ASSERT(d, rc == 0, "qcow_open(%s): %s: %s", d->img_path, strerror(-rc), err);
}

static void close_image(struct diff *d)
{
	int rc = qcow_close(d->img);
	d->img = NULL;
	DIFF_ASSERT(d, rc == 0, "qcow_close: %s", strerror(-rc));
}

static void create_image(struct diff *d, const char *path, uint64_t size, uint32_t cs,
                         const char *backing, const char *backing_fmt)
{
	char err[512] = "";
	struct qcow_create_opts o = {
	    .path = path,
	    .size_bytes = size,
	    .cluster_size = cs,
	    .refcount_bits = d->cfg->refcount_bits,
	    .backing_file = backing,
	    .backing_format = backing_fmt,
	    .lazy_refcounts = d->cfg->lazy_refcounts,
	};
	int rc = qcow_create(&o, err, sizeof(err));
	DIFF_ASSERT(d, rc == 0, "qcow_create(%s): %s: %s", path, strerror(-rc), err);
}

/* Reads [off, off+len) from the image and the reference and compares. */
static void check_range(struct diff *d, uint64_t off, uint64_t len, const char *what)
{
	while (len) {
		size_t n = len > MAX_BUF ? MAX_BUF : (size_t)len;
		memset(d->rbuf, 0xa5, n);
		int rc = qcow_read(d->img, d->rbuf, off, n);
		DIFF_ASSERT(d, rc == 0, "%s: qcow_read(off=%" PRIu64 ", len=%zu): %s: %s", what,
		            off, n, strerror(-rc), img_err(d));
		ref_read(d, d->refbuf, off, n);
		if (memcmp(d->rbuf, d->refbuf, n)) {
			size_t i = 0;
			while (d->rbuf[i] == d->refbuf[i])
				i++;
			size_t j = i;
			while (j < n && d->rbuf[j] != d->refbuf[j])
				j++;
			DIFF_ASSERT(
			    d, false,
			    "%s: op %u: image differs from reference at guest offset %" PRIu64
			    " (0x%" PRIx64 "), cluster %" PRIu64 " +%" PRIu64
			    ": expected 0x%02x got 0x%02x (differing run of %zu bytes, "
			    "read off=%" PRIu64 " len=%zu, seed=0x%" PRIx64 ")",
			    what, d->op_index, off + i, off + i, (off + i) / d->cfg->cluster_size,
			    (off + i) % d->cfg->cluster_size, d->refbuf[i], d->rbuf[i], j - i, off,
			    n, d->seed);
		}
		off += n;
		len -= n;
	}
}

static void check_all_windows(struct diff *d, const char *what)
{
	for (int i = 0; i < d->nwin; i++)
		check_range(d, d->win[i].start, d->win[i].len, what);
}

/* ---- windows and random ranges ----------------------------------------- */

static void add_window(struct diff *d, uint64_t start, uint64_t len, uint64_t size)
{
	if (start >= size)
		return;
	if (len > size - start)
		len = size - start;
	/* Merge with an overlapping window so no byte is counted twice. */
	for (int i = 0; i < d->nwin; i++) {
		struct window *w = &d->win[i];
		if (start < w->start + w->len && w->start < start + len) {
			uint64_t s = start < w->start ? start : w->start;
			uint64_t e1 = w->start + w->len, e2 = start + len;
			w->start = s;
			w->len = (e1 > e2 ? e1 : e2) - s;
			return;
		}
	}
	cr_assert_lt(d->nwin, MAX_WINDOWS);
	d->win[d->nwin++] = (struct window){start, len};
}

static void make_windows(struct diff *d)
{
	uint64_t cs = d->cfg->cluster_size, size = d->cfg->size;
	uint64_t l1_span = cs * (cs / 8); /* guest bytes mapped by one L2 table */
	d->nwin = 0;
	add_window(d, 0, 40 * cs > 2 * MiB ? 40 * cs : 2 * MiB, size);
	if (size > 4 * GiB + 24 * cs)
		add_window(d, 4 * GiB - 8 * cs, 24 * cs, size);
	if (size > l1_span + 8 * cs)
		add_window(d, l1_span - 6 * cs, 12 * cs, size);
	if (size > 2 * TiB)
		add_window(d, 2 * TiB - 4 * cs, 8 * cs, size);
	add_window(d, size - 12 * cs, 12 * cs, size);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * A random range inside one window.  Data ops stay below MAX_BUF; zero and
 * discard ranges may span the whole window.
 */
static void pick_range(struct diff *d, bool big_ok, uint64_t *off, uint64_t *len)
{
	uint64_t cs = d->cfg->cluster_size;
	const struct window *w = &d->win[tu_below(&d->rng, (uint64_t)d->nwin)];
	uint64_t end = w->start + w->len;
	uint64_t maxlen = min_u64(MAX_BUF, 3 * cs + 4096);
	uint64_t o, l;
	if (tu_below(&d->rng, 16) == 0) {
		/*
		 * A long run of whole clusters (up to a few L2 tables' worth at
		 * small cluster sizes): one allocation spanning refcount blocks.
		 */
		uint64_t most = min_u64(320, MAX_BUF / cs);
		o = w->start + tu_below(&d->rng, w->len / cs) * cs;
		if (tu_below(&d->rng, 2)) /* from an L2 table boundary */
			o = o / (cs * (cs / 8)) * (cs * (cs / 8));
		if (o < w->start)
			o = w->start;
		l = cs * tu_range(&d->rng, 1, most);
		if (l > end - o)
			l = end - o;
		*off = o;
		*len = l;
		return;
	}
	switch (tu_below(&d->rng, big_ok ? 6 : 5)) {
	case 0: /* tiny, unaligned */
		o = tu_range(&d->rng, w->start, end - 1);
		l = tu_range(&d->rng, 1, 8192);
		break;
	case 1: /* sector aligned */
		o = w->start + tu_below(&d->rng, w->len / 512) * 512;
		l = 512 * tu_range(&d->rng, 1, min_u64(64, 3 * cs / 512));
		break;
	case 2: { /* crossing a cluster boundary */
		uint64_t b = w->start + tu_range(&d->rng, 1, w->len / cs - 1) * cs;
		uint64_t reach = min_u64(cs, 48 * KiB);
		o = b - tu_range(&d->rng, 1, reach);
		l = (b - o) + tu_range(&d->rng, 1, reach);
		break;
	}
	case 3: /* whole clusters */
		o = w->start + tu_below(&d->rng, w->len / cs) * cs;
		l = cs * tu_range(&d->rng, 1, cs >= MiB ? 2 : 3);
		break;
	case 4: /* unaligned, a few clusters */
		o = tu_range(&d->rng, w->start, end - 1);
		l = tu_range(&d->rng, 1, maxlen);
		break;
	default: /* zero/discard only: a large unaligned stretch */
		o = tu_range(&d->rng, w->start, end - 1);
		l = tu_range(&d->rng, 1, end - o);
		break;
	}
	if (o >= end)
		o = end - 1;
	if (l > end - o)
		l = end - o;
	if (!big_ok && l > maxlen)
		l = maxlen;
	if (l == 0)
		l = 1;
	*off = o;
	*len = l;
}

/* ---- operations applied to both ---------------------------------------- */

static void do_write(struct diff *d, uint64_t off, uint64_t len)
{
	tu_fill(&d->rng, d->wbuf, len);
	/* Some writes carry zeros or a constant: zero detection must not lose them. */
	uint64_t kind = tu_below(&d->rng, 16);
	if (kind == 0)
		memset(d->wbuf, 0, len);
	else if (kind == 1)
		memset(d->wbuf, (int)(d->op_index & 0xff) | 1, len);
	log_op(d, OP_WRITE, off, len);
	int rc = qcow_write(d->img, d->wbuf, off, len);
	DIFF_ASSERT(d, rc == 0, "op %u: qcow_write(off=%" PRIu64 ", len=%" PRIu64 "): %s: %s",
	            d->op_index, off, len, strerror(-rc), img_err(d));
	ref_write(d, d->wbuf, off, len);
}

static void do_zero(struct diff *d, uint64_t off, uint64_t len, bool unmap)
{
	log_op(d, unmap ? OP_ZERO_UNMAP : OP_ZERO, off, len);
	int rc = qcow_write_zeroes(d->img, off, len, unmap ? QCOW_ZERO_MAY_UNMAP : 0);
	DIFF_ASSERT(d, rc == 0,
	            "op %u: qcow_write_zeroes(off=%" PRIu64 ", len=%" PRIu64 ", unmap=%d): %s: %s",
	            d->op_index, off, len, (int)unmap, strerror(-rc), img_err(d));
	ref_zero(d, off, len);
}

static void do_discard(struct diff *d, uint64_t off, uint64_t len)
{
	log_op(d, OP_DISCARD, off, len);
	int rc = qcow_discard(d->img, off, len);
	DIFF_ASSERT(d, rc == 0, "op %u: qcow_discard(off=%" PRIu64 ", len=%" PRIu64 "): %s: %s",
	            d->op_index, off, len, strerror(-rc), img_err(d));
	uint64_t s, e;
	discard_span(d->cfg->cluster_size, off, len, &s, &e);
	ref_zero(d, s, e - s);
}

/*
 * qcow_block_status must describe a run starting at off, no longer than
 * asked; a run it calls zero, or allocated nowhere, must read as zeros.
 */
static void do_block_status(struct diff *d, uint64_t off, uint64_t len)
{
	struct qcow_extent ext;
	memset(&ext, 0xa5, sizeof(ext));
	log_op(d, OP_READ, off, len);
	int rc = qcow_block_status(d->img, off, len, &ext);
	DIFF_ASSERT(d, rc == 0, "op %u: qcow_block_status(%" PRIu64 ", %" PRIu64 "): %s: %s",
	            d->op_index, off, len, strerror(-rc), img_err(d));
	DIFF_ASSERT(d, ext.offset == off && ext.length > 0 && ext.length <= len,
	            "op %u: qcow_block_status(%" PRIu64 ", %" PRIu64 ") describes [%" PRIu64
	            ", +%" PRIu64 ")",
	            d->op_index, off, len, ext.offset, ext.length);
	bool zero = ext.flags & QCOW_EXTENT_ZERO;
	bool nowhere = ext.depth == -1;
	DIFF_ASSERT(d, !(nowhere && (ext.flags & QCOW_EXTENT_DATA)) && ext.depth >= -1,
	            "op %u: block status at %" PRIu64 ": flags 0x%x with depth %d", d->op_index,
	            off, ext.flags, ext.depth);
	if (!zero && !nowhere)
		return;
	uint64_t n = ext.length < MAX_BUF ? ext.length : MAX_BUF;
	ref_read(d, d->refbuf, off, n);
	for (uint64_t i = 0; i < n; i++)
		DIFF_ASSERT(d, d->refbuf[i] == 0,
		            "op %u: qcow_block_status says [%" PRIu64 ", +%" PRIu64
		            ") is %s (flags 0x%x, depth %d) but guest byte %" PRIu64
		            " is 0x%02x (seed=0x%" PRIx64 ")",
		            d->op_index, off, ext.length, zero ? "zero" : "unallocated", ext.flags,
		            ext.depth, off + i, d->refbuf[i], d->seed);
}

static void do_read(struct diff *d, uint64_t off, uint64_t len)
{
	log_op(d, OP_READ, off, len);
	check_range(d, off, len, "read");
}

/* Reads back the op's range and a cluster either side. */
static void verify_around(struct diff *d, uint64_t off, uint64_t len)
{
	uint64_t cs = d->cfg->cluster_size;
	uint64_t s = off > cs ? off - cs : 0;
	uint64_t e = off + len + cs;
	if (e > d->cfg->size)
		e = d->cfg->size;
	if (e - s > 2 * MAX_BUF)
		return; /* huge zero/discard ranges are covered by the full checks */
	check_range(d, s, e - s, "read-back");
}

static void run_ops(struct diff *d, unsigned nops)
{
	uint64_t off, len;
	for (unsigned i = 0; i < nops; i++, d->op_index++) {
		unsigned r = (unsigned)tu_below(&d->rng, 1000);
		if (r < 420) {
			pick_range(d, false, &off, &len);
			do_write(d, off, len);
		} else if (r < 590) {
			pick_range(d, false, &off, &len);
			do_read(d, off, len);
			continue;
		} else if (r < 620) {
			pick_range(d, true, &off, &len);
			do_block_status(d, off, len);
			continue;
		} else if (r < 720) {
			pick_range(d, true, &off, &len);
			do_zero(d, off, len, false);
		} else if (r < 820) {
			pick_range(d, true, &off, &len);
			do_zero(d, off, len, true);
		} else if (r < 950) {
			pick_range(d, true, &off, &len);
			do_discard(d, off, len);
		} else if (r < 990) {
			log_op(d, OP_FLUSH, 0, 0);
			int rc = qcow_flush(d->img);
			DIFF_ASSERT(d, rc == 0, "op %u: qcow_flush: %s: %s", d->op_index,
			            strerror(-rc), img_err(d));
			continue;
		} else {
			log_op(d, OP_REOPEN, 0, 0);
			close_image(d);
			open_image(d, QCOW_OPEN_RDWR);
			check_all_windows(d, "after reopen");
			continue;
		}
		if (tu_below(&d->rng, 2) == 0)
			verify_around(d, off, len);
	}
	tu_unwatch();
}

/* ---- backing files ----------------------------------------------------- */

/* Random writes into the windows of a raw base file, mirrored in the reference. */
static void fill_raw_base(struct diff *d, const char *path, uint64_t base_size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)base_size), 0);
	for (unsigned i = 0; i < 64; i++) {
		uint64_t off, len;
		pick_range(d, false, &off, &len);
		if (off >= base_size)
			continue;
		if (len > base_size - off)
			len = base_size - off;
		tu_fill(&d->rng, d->wbuf, len);
		cr_assert_eq(pwrite(fd, d->wbuf, len, (off_t)off), (ssize_t)len);
		ref_write(d, d->wbuf, off, len);
	}
	/* Data right up to the unaligned end of the base. */
	uint64_t tail = min_u64(base_size, 3 * 512);
	tu_fill(&d->rng, d->wbuf, tail);
	cr_assert_eq(pwrite(fd, d->wbuf, tail, (off_t)(base_size - tail)), (ssize_t)tail);
	ref_write(d, d->wbuf, base_size - tail, tail);
	close(fd);
}

/* A qcow2 image written through the library, mirrored in the reference. */
static void fill_qcow2_layer(struct diff *d, const char *path, uint64_t size, uint32_t cs,
                             const char *backing, const char *fmt, unsigned nops)
{
	create_image(d, path, size, cs, backing, fmt);
	char saved[512];
	memcpy(saved, d->img_path, sizeof(saved));
	snprintf(d->img_path, sizeof(d->img_path), "%s", path);
	open_image(d, QCOW_OPEN_RDWR);
	for (unsigned i = 0; i < nops; i++) {
		uint64_t off, len;
		pick_range(d, false, &off, &len);
		if (off >= size)
			continue;
		if (len > size - off)
			len = size - off;
		if (tu_below(&d->rng, 8) == 0)
			do_zero(d, off, len, tu_below(&d->rng, 2));
		else
			do_write(d, off, len);
	}
	check_all_windows(d, "base layer");
	close_image(d);
	memcpy(d->img_path, saved, sizeof(saved));
}

/* ---- the test driver --------------------------------------------------- */

static void qemu_checks(struct diff *d)
{
	if (!tu_have_prog("qemu-img")) {
		cr_log_warn("qemu-img not found: skipping qemu-img check/compare");
		return;
	}
	char out[512], msg[4096];
	snprintf(out, sizeof(out), "%s/qemu-img.out", g_dir);
	char *check[] = {"qemu-img", "check", "-f", "qcow2", d->img_path, NULL};
	int st = tu_run(check, out);
	tu_slurp(out, msg, sizeof(msg));
	DIFF_ASSERT(d, st == 0, "qemu-img check exited %d (seed=0x%" PRIx64 "):\n%s", st, d->seed,
	            msg);
	char *cmp[] = {"qemu-img", "compare",   "-f",        "qcow2", "-F",
	               "raw",      d->img_path, d->ref_path, NULL};
	st = tu_run(cmp, out);
	tu_slurp(out, msg, sizeof(msg));
	DIFF_ASSERT(d, st == 0, "qemu-img compare exited %d (seed=0x%" PRIx64 "):\n%s", st, d->seed,
	            msg);
}

static void run_differential(const struct diff_cfg *cfg)
{
	struct diff d = {.cfg = cfg, .ref_fd = -1};
	d.seed = tu_seed(cfg->seed);
	d.rng.s = d.seed;
	cr_log_info("differential: cluster_size=%" PRIu32 " size=%" PRIu64
	            " backing=%d ops=%u seed=0x%" PRIx64,
	            cfg->cluster_size, cfg->size, (int)cfg->backing, cfg->nops, d.seed);
	d.wbuf = malloc(MAX_BUF);
	d.rbuf = malloc(MAX_BUF);
	d.refbuf = malloc(MAX_BUF);
	cr_assert(d.wbuf && d.rbuf && d.refbuf);
	snprintf(d.img_path, sizeof(d.img_path), "%s/image.qcow2", g_dir);
	snprintf(d.ref_path, sizeof(d.ref_path), "%s/reference.raw", g_dir);
	d.ref_fd = open(d.ref_path, O_RDWR | O_CREAT | O_EXCL, 0644);
	cr_assert_geq(d.ref_fd, 0, "create reference: %s", strerror(errno));
	cr_assert_eq(ftruncate(d.ref_fd, (off_t)cfg->size), 0);
	make_windows(&d);

	char base[512], mid[512];
	snprintf(base, sizeof(base), "%s/base.raw", g_dir);
	snprintf(mid, sizeof(mid), "%s/base.qcow2", g_dir);
	uint64_t raw_size = cfg->size / 2 + 3 * 512 + 8 * KiB; /* not cluster aligned */
	switch (cfg->backing) {
	case BK_NONE:
		create_image(&d, d.img_path, cfg->size, cfg->cluster_size, NULL, NULL);
		break;
	case BK_QCOW2:
		/* A different cluster size below: CoW reads span several base clusters. */
		fill_qcow2_layer(&d, mid, cfg->size, 4096, NULL, NULL, 150);
		create_image(&d, d.img_path, 0, cfg->cluster_size, "base.qcow2", "qcow2");
		break;
	case BK_RAW:
		fill_raw_base(&d, base, raw_size);
		create_image(&d, d.img_path, cfg->size, cfg->cluster_size, "base.raw", "raw");
		break;
	case BK_CHAIN:
		fill_raw_base(&d, base, raw_size);
		fill_qcow2_layer(&d, mid, cfg->size, 4096, "base.raw", "raw", 120);
		create_image(&d, d.img_path, 0, cfg->cluster_size, "base.qcow2", NULL);
		break;
	}

	open_image(&d, QCOW_OPEN_RDWR);
	struct qcow_info info;
	qcow_get_info(d.img, &info);
	cr_assert_eq(info.size_bytes, cfg->size, "virtual size %" PRIu64 ", want %" PRIu64,
	             info.size_bytes, cfg->size);
	cr_assert_eq(info.cluster_size, cfg->cluster_size);
	cr_assert_eq(info.chain_depth, cfg->backing == BK_NONE    ? 0
	                               : cfg->backing == BK_CHAIN ? 2
	                                                          : 1);
	tu_watch("differential: seed=0x%" PRIx64 ": initial check", d.seed);
	check_all_windows(&d, "initial");

	run_ops(&d, cfg->nops);
	tu_watch("differential: seed=0x%" PRIx64 ": final flush, close, check", d.seed);
	check_all_windows(&d, "end of workload");
	int rc = qcow_flush(d.img);
	DIFF_ASSERT(&d, rc == 0, "final qcow_flush: %s", strerror(-rc));
	close_image(&d);

	/* Reopened read-only: clean, and still the reference. */
	open_image(&d, 0);
	struct qcow_check_result res;
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(d.img, 0, &res);
	DIFF_ASSERT(&d, rc == 0, "qcow_check: %s: %s", strerror(-rc), img_err(&d));
	DIFF_ASSERT(&d, res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0,
	            "qcow_check: %" PRIu64 " corruptions, %" PRIu64 " leaks, %" PRIu64
	            " check errors (seed=0x%" PRIx64 ")",
	            res.corruptions, res.leaks, res.check_errors, d.seed);
	check_all_windows(&d, "reopened read-only");
	qcow_get_info(d.img, &info);
	DIFF_ASSERT(&d, !info.dirty, "image still dirty after qcow_close");
	close_image(&d);

	tu_unwatch();
	qemu_checks(&d);

	close(d.ref_fd);
	free(d.wbuf);
	free(d.rbuf);
	free(d.refbuf);
}

static unsigned ops(unsigned n)
{
	return tu_scaled(n);
}

TestSuite(integration_differential, .init = setup_dir, .fini = teardown_dir, .timeout = 200);

Test(integration_differential, cluster_512)
{
	struct diff_cfg c = {
	    .cluster_size = 512, .size = 64 * GiB, .nops = ops(8000), .seed = 0x512};
	run_differential(&c);
}

Test(integration_differential, cluster_4k)
{
	struct diff_cfg c = {
	    .cluster_size = 4096, .size = 4 * TiB, .nops = ops(8000), .seed = 0x4096};
	run_differential(&c);
}

Test(integration_differential, cluster_64k)
{
	struct diff_cfg c = {
	    .cluster_size = 65536, .size = 4 * TiB, .nops = ops(6000), .seed = 0x10000};
	run_differential(&c);
}

Test(integration_differential, cluster_2m)
{
	struct diff_cfg c = {
	    .cluster_size = 2 * MiB, .size = 4 * TiB, .nops = ops(3000), .seed = 0x200000};
	run_differential(&c);
}

Test(integration_differential, cluster_64k_lazy_refcount64)
{
	struct diff_cfg c = {.cluster_size = 65536,
	                     .size = 4 * TiB,
	                     .nops = ops(3000),
	                     .refcount_bits = 64,
	                     .lazy_refcounts = true,
	                     .seed = 0x1a27};
	run_differential(&c);
}

/* refblock_entries == l2_entries: a whole-L2 run of new clusters spans refblocks. */
Test(integration_differential, cluster_512_refcount64)
{
	struct diff_cfg c = {.cluster_size = 512,
	                     .size = 16 * GiB,
	                     .nops = ops(3000),
	                     .refcount_bits = 64,
	                     .seed = 0x5164};
	run_differential(&c);
}

Test(integration_differential, cluster_512_refcount1)
{
	struct diff_cfg c = {.cluster_size = 512,
	                     .size = 8 * GiB,
	                     .nops = ops(3000),
	                     .refcount_bits = 1,
	                     .seed = 0x1b1};
	run_differential(&c);
}

/* Tiny caches: tables are evicted and written back in the middle of writes. */
Test(integration_differential, cluster_1k_tiny_cache)
{
	struct diff_cfg c = {.cluster_size = 1024,
	                     .size = 256 * GiB,
	                     .nops = ops(3000),
	                     .cache_bytes = 1,
	                     .seed = 0x7c4e};
	run_differential(&c);
}

Test(integration_differential, cluster_512_tiny_cache_backing_qcow2)
{
	struct diff_cfg c = {.cluster_size = 512,
	                     .size = 8 * GiB,
	                     .nops = ops(3000),
	                     .backing = BK_QCOW2,
	                     .cache_bytes = 1,
	                     .seed = 0x7c4f};
	run_differential(&c);
}

Test(integration_differential, backing_qcow2)
{
	struct diff_cfg c = {.cluster_size = 65536,
	                     .size = 8 * GiB,
	                     .nops = ops(4000),
	                     .backing = BK_QCOW2,
	                     .seed = 0xb0c2};
	run_differential(&c);
}

Test(integration_differential, backing_raw)
{
	struct diff_cfg c = {.cluster_size = 65536,
	                     .size = 8 * GiB,
	                     .nops = ops(4000),
	                     .backing = BK_RAW,
	                     .seed = 0xbaa0};
	run_differential(&c);
}

Test(integration_differential, backing_chain_raw_qcow2)
{
	struct diff_cfg c = {.cluster_size = 512,
	                     .size = 8 * GiB,
	                     .nops = ops(4000),
	                     .backing = BK_CHAIN,
	                     .seed = 0xc4a1};
	run_differential(&c);
}
