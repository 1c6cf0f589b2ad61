/* SPDX-License-Identifier: MIT */
/*
 * test_faults.c - I/O errors at every point of a workload.
 *
 * An ops table over an in-memory file fails the N-th pwrite or the N-th
 * sync with -EIO or -ENOSPC, once (a transient error) or from then on (a
 * full disk), for N sweeping over everything a seeded workload does, from
 * qcow_create to qcow_close.  For every N:
 *   - no call fails before the fault fires, and none crashes;
 *   - a flush during which the fault fired fails;
 *   - fencing: an I/O error fails the flush it happens in and fences the
 *     image, so once a qcow_flush has failed, or a sync has failed
 *     anywhere, no later qcow_flush on that handle succeeds (none may
 *     claim durability until the image is reopened and checked) and
 *     qcow_close reports an error;
 *   - the file as written so far (the handle abandoned, or closed), reopened
 *     with working ops, opens read-only and read-write, qcow_check finds no
 *     corruption, and the guest reads what the last successful flush made
 *     durable, except where a later or failed operation wrote (old or new
 *     bytes only).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "qcow.h"
#include "testutil.h"

/* ---- the workload ------------------------------------------------------- */

struct fault_cfg {
	const char *name;
	uint32_t cluster_size;
	bool lazy_refcounts;
	uint64_t guest_size;
	unsigned nops;
	uint64_t cache_bytes; /* L2 and refcount caches; 0: TEST_CACHE_BYTES */
	uint64_t seed;
};

enum wop_kind { W_WRITE, W_ZERO, W_DISCARD, W_FLUSH };

struct wop {
	enum wop_kind kind;
	uint64_t off, len;
	unsigned zflags;
	uint8_t *data;
};

struct workload {
	struct wop *ops;
	unsigned n;
};

static void make_workload(const struct fault_cfg *cfg, struct workload *w)
{
	struct tu_rng rng = {cfg->seed};
	uint64_t cs = cfg->cluster_size, g = cfg->guest_size;
	w->n = cfg->nops;
	w->ops = calloc(w->n, sizeof(*w->ops));
	cr_assert(w->ops);
	for (unsigned i = 0; i < w->n; i++) {
		struct wop *o = &w->ops[i];
		unsigned r = (unsigned)tu_below(&rng, 100);
		if (r < 20) {
			o->kind = W_FLUSH;
			continue;
		}
		o->kind = r < 65 ? W_WRITE : r < 80 ? W_ZERO : W_DISCARD;
		o->zflags = tu_below(&rng, 2) ? QCOW_ZERO_MAY_UNMAP : 0;
		if (tu_below(&rng, 2)) {
			o->off = tu_below(&rng, g / cs) * cs;
			o->len = cs * tu_range(&rng, 1, 3);
		} else {
			o->off = tu_below(&rng, g - 1);
			o->len = tu_range(&rng, 1, 2 * cs);
		}
		if (o->len > g - o->off)
			o->len = g - o->off;
		if (o->kind == W_WRITE) {
			o->data = malloc(o->len);
			cr_assert(o->data);
			tu_fill(&rng, o->data, o->len);
		}
	}
}

static void free_workload(struct workload *w)
{
	for (unsigned i = 0; i < w->n; i++)
		free(w->ops[i].data);
	free(w->ops);
}

struct run_result {
	unsigned npwrite, nsync;
	bool fired;
};

/*
 * Failures are counted by kind and the test goes on, so that one run shows
 * every kind of problem; the first few of each kind are described.
 */
static struct fail_tally g_fails;

__attribute__((format(printf, 4, 5))) static void fault_failed(const struct fault_cfg *cfg,
                                                               const struct faulty *f,
                                                               const char *kind, const char *fmt,
                                                               ...)
{
	if (!tally_add(&g_fails, kind))
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char where[512];
	snprintf(where, sizeof(where),
	         "faults[%s]: fault on %s #%u %s%s, first fired in %s (seed=0x%" PRIx64 ")",
	         cfg->name, f->on == FAULT_PWRITE ? "pwrite" : "sync", f->fail_at,
	         f->error == -EIO ? "EIO" : "ENOSPC", f->sticky ? " sticky" : "",
	         f->fired_in ? f->fired_in : "(not fired)", cfg->seed);
	fprintf(stderr, "%s\n  FAILED (%s): %s\n", where, kind, msg);
	if (g_fails.count == 1)
		snprintf(g_fails.first, sizeof(g_fails.first), "%s: %s: %s", where, kind, msg);
}

/* Reopens the file with working ops and checks it. */
static void verify_after(const struct fault_cfg *cfg, struct faulty *f, struct gmodel *m)
{
	char err[512] = "";
	struct qcow_image *img = NULL;
	struct qcow_check_result res;
	struct qcow_info info;
	struct memfile copy = {0};
	uint8_t *got = malloc(cfg->guest_size);
	cr_assert(got);
	cr_assert_eq(mf_copy(&copy, &f->mf), 0);

	struct qcow_open_opts ro = {.path = "faulted.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = &copy,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	int rc = qcow_open(&ro, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	F_CHECK(cfg, f, rc == 0, "read-only reopen fails",
	        "read-only reopen after the fault: %s: %s", strerror(-rc), err);
	qcow_get_info(img, &info);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	F_CHECK(cfg, f, rc == 0 && (info.dirty || res.corruptions == 0), "qcow_check: corruption",
	        "qcow_check after the fault (rc %d, dirty %d): %" PRIu64 " corruptions", rc,
	        (int)info.dirty, res.corruptions);
	uint64_t off = 0;
	rc = read_all(img, got, cfg->guest_size, &off);
	F_CHECK(cfg, f, rc == 0, "read fails", "read at %" PRIu64 " after the fault: %s: %s", off,
	        strerror(-rc), qcow_last_error(img));
	qcow_close(img);
	img = NULL;
	struct gm_verdict v = gm_judge(m, got, f->events, f->events);
	if (!v.ok && g_fails.count < TALLY_DETAILED)
		gm_explain(m, v.bad_off);
	F_CHECK(cfg, f, v.ok, "wrong guest data",
	        "guest byte %" PRIu64 " reads 0x%02x; the last successful flush (after %zu ops) "
	        "says 0x%02x and none of the %zu later or failed operations wrote that",
	        v.bad_off, v.got, v.durable_ops, v.expected, v.candidates);

	struct qcow_open_opts rw = {.path = "faulted.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = &copy,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	rc = qcow_open(&rw, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	F_CHECK(cfg, f, rc == 0, "read-write reopen fails",
	        "read-write reopen after the fault: %s: %s", strerror(-rc), err);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	F_CHECK(cfg, f, rc == 0 && res.corruptions == 0, "qcow_check after rw reopen: corruption",
	        "qcow_check after a read-write reopen: rc %d, %" PRIu64 " corruptions", rc,
	        res.corruptions);
	rc = qcow_close(img);
	img = NULL;
	F_CHECK(cfg, f, rc == 0, "close after reopen fails", "qcow_close after the reopen: %s",
	        strerror(-rc));
out:
	if (img)
		qcow_abandon(img);
	mf_free(&copy);
	free(got);
}

#define CALL(f, name, expr) ((f)->current = (name), (expr))

/*
 * One run with the fault at (on, fail_at, error, sticky).  fail_at 0 counts
 * the events of a clean run.  abandon: drop the handle at the end as a
 * crash would, instead of closing it.
 */
static struct run_result run_once(const struct fault_cfg *cfg, const struct workload *w,
                                  enum fault_on on, unsigned fail_at, int error, bool sticky,
                                  bool abandon)
{
	struct faulty f = {
	    .armed = true, .on = on, .fail_at = fail_at, .error = error, .sticky = sticky};
	tu_watch("faults[%s]: seed=0x%" PRIx64 ": run with fault on %s #%u", cfg->name, cfg->seed,
	         on == FAULT_PWRITE ? "pwrite" : "sync", fail_at);
	struct gmodel m;
	gm_init(&m, cfg->guest_size);
	cr_assert(m.cur);
	char err[512] = "";
	struct qcow_image *img = NULL;
	bool created = false, judge = false;
	uint64_t cache = cfg->cache_bytes ? cfg->cache_bytes : TEST_CACHE_BYTES;
	struct qcow_create_opts co = {
	    .path = "faulted.qcow2",
	    .ops = &faulty_ops,
	    .ctx = &f,
	    .size_bytes = cfg->guest_size,
	    .cluster_size = cfg->cluster_size,
	    .lazy_refcounts = cfg->lazy_refcounts,
	};
	int rc = CALL(&f, "qcow_create", qcow_create(&co, err, sizeof(err)));
	F_CHECK(cfg, &f, rc == 0 || f.fired, "error without a fault",
	        "qcow_create failed with no fault: %s: %s", strerror(-rc), err);
	created = rc == 0;
	if (!created)
		goto out; /* a failed create leaves no image to judge */
	judge = true;
	struct qcow_open_opts oo = {.path = "faulted.qcow2",
	                            .ops = &faulty_ops,
	                            .ctx = &f,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = cache,
	                            .refcount_cache_bytes = cache};
	rc = CALL(&f, "qcow_open", qcow_open(&oo, &img, err, sizeof(err)));
	if (rc)
		img = NULL;
	F_CHECK(cfg, &f, rc == 0 || f.fired, "error without a fault",
	        "qcow_open failed with no fault: %s: %s", strerror(-rc), err);

	bool flush_failed = false;
	uint64_t cs = cfg->cluster_size;
	for (unsigned i = 0; img && i < w->n; i++) {
		const struct wop *o = &w->ops[i];
		size_t ev = f.events;
		unsigned fired_before = f.fired;
		struct gop *g = NULL;
		switch (o->kind) {
		case W_WRITE:
		case W_ZERO:
		case W_DISCARD: {
			enum gop_kind kind = o->kind == W_WRITE  ? GOP_WRITE
			                     : o->kind == W_ZERO ? GOP_ZERO
			                                         : GOP_DISCARD;
			rc = CALL(&f, gop_calls[kind],
			          gop_run(img, kind, o->off, o->len, o->data, o->zflags));
			g = gm_record(&m, kind, o->off, o->len, o->data, ev, cs);
			break;
		}
		case W_FLUSH: {
			bool fenced = flush_failed || f.sync_failed;
			rc = CALL(&f, "qcow_flush", qcow_flush(img));
			F_EXPECT(
			    cfg, &f, !(f.fired > fired_before && rc == 0),
			    "flush hides an I/O error",
			    "op %u: qcow_flush returned 0 although an I/O error happened during it",
			    i);
			F_EXPECT(
			    cfg, &f, !(fenced && rc == 0), "flush succeeds after fence",
			    "op %u: qcow_flush succeeded after an earlier %s failed on the same "
			    "handle (a failed flush fences the image)",
			    i, flush_failed ? "flush" : "sync");
			if (rc == 0 && !fenced)
				gm_flushed(&m, f.events);
			if (rc)
				flush_failed = true;
			break;
		}
		}
		if (g) {
			g->ev_end = f.events;
			g->failed = rc != 0;
		}
		F_CHECK(cfg, &f, rc == 0 || f.fired, "error without a fault",
		        "op %u failed with no fault injected: %s: %s", i, strerror(-rc),
		        qcow_last_error(img));
	}
	if (img) {
		bool fenced = flush_failed || f.sync_failed;
		if (abandon) {
			qcow_abandon(img);
		} else {
			rc = CALL(&f, "qcow_close", qcow_close(img));
			F_EXPECT(cfg, &f, rc == 0 || f.fired, "error without a fault",
			         "qcow_close failed with no fault: %s", strerror(-rc));
			F_EXPECT(cfg, &f, !(fenced && rc == 0), "close succeeds after fence",
			         "qcow_close reported success on a fenced image (an earlier %s "
			         "failed)",
			         flush_failed ? "flush" : "sync");
			if (rc == 0 && !fenced)
				gm_flushed(&m, f.events);
		}
		img = NULL;
	}
out:
	if (img)
		qcow_abandon(img);
	if (judge)
		verify_after(cfg, &f, &m);
	tu_unwatch();
	struct run_result r = {.npwrite = f.npwrite, .nsync = f.nsync, .fired = f.fired > 0};
	gm_free(&m);
	mf_free(&f.mf);
	return r;
}

/* Every N when there are few, else an even spread of at most max_runs. */
/* Events of a clean run, closed or abandoned at the end. */
struct totals {
	struct run_result closed, abandoned;
};

/*
 * Every N when there are few, else an even spread of at most max_runs;
 * every other run abandons its handle where the abandoned run reaches N.
 */
static unsigned sweep(const struct fault_cfg *cfg, const struct workload *w, enum fault_on on,
                      const struct totals *t, int error, bool sticky, unsigned max_runs)
{
	unsigned total = on == FAULT_PWRITE ? t->closed.npwrite : t->closed.nsync;
	unsigned total_ab = on == FAULT_PWRITE ? t->abandoned.npwrite : t->abandoned.nsync;
	unsigned step = total > max_runs ? (total + max_runs - 1) / max_runs : 1;
	unsigned runs = 0, fired = 0;
	for (unsigned n = 1; n <= total; n += step, runs++) {
		bool abandon = runs % 2 == 0 && n <= total_ab;
		fired += run_once(cfg, w, on, n, error, sticky, abandon).fired;
	}
	cr_assert_eq(fired, runs,
	             "%u of %u injected faults never fired: the workload differs between runs",
	             runs - fired, runs);
	return runs;
}

static void run_faults(const struct fault_cfg *cfg)
{
	struct workload w;
	make_workload(cfg, &w);
	struct totals t = {
	    .closed = run_once(cfg, &w, FAULT_PWRITE, 0, 0, false, false),
	    .abandoned = run_once(cfg, &w, FAULT_PWRITE, 0, 0, false, true),
	};
	struct run_result clean = t.closed;
	cr_assert_gt(clean.npwrite, 0);
	cr_assert_gt(clean.nsync, 0, "the workload made no sync at all");
	unsigned max_runs = tu_scaled(200);
	unsigned runs = 0;
	runs += sweep(cfg, &w, FAULT_PWRITE, &t, -EIO, false, max_runs);
	runs += sweep(cfg, &w, FAULT_SYNC, &t, -EIO, false, max_runs);
	runs += sweep(cfg, &w, FAULT_PWRITE, &t, -ENOSPC, true, max_runs / 2);
	runs += sweep(cfg, &w, FAULT_SYNC, &t, -EIO, true, max_runs / 4);
	runs += sweep(cfg, &w, FAULT_PWRITE, &t, -ENOSPC, false, max_runs / 4);
	fprintf(stderr,
	        "faults[%s]: %u pwrites, %u syncs in a clean run; %u faulted runs, %u failures\n",
	        cfg->name, clean.npwrite, clean.nsync, runs, g_fails.count);
	tally_print(&g_fails, "faults");
	cr_expect_eq(g_fails.count, 0, "%u failures in %u faulted runs; first: %s", g_fails.count,
	             runs, g_fails.first);
	free_workload(&w);
}

TestSuite(crash_faults, .timeout = 240);

Test(crash_faults, cluster_64k)
{
	struct fault_cfg c = {.name = "64k",
	                      .cluster_size = 65536,
	                      .guest_size = 4 * MiB,
	                      .nops = 150,
	                      .seed = 0xfa017001};
	run_faults(&c);
}

Test(crash_faults, cluster_512_lazy)
{
	struct fault_cfg c = {.name = "512-lazy",
	                      .cluster_size = 512,
	                      .lazy_refcounts = true,
	                      .guest_size = 1 * MiB,
	                      .nops = 150,
	                      .seed = 0xfa017002};
	run_faults(&c);
}

/* Smallest caches: write-backs (and their failures) happen inside writes. */
Test(crash_faults, cluster_512_tiny_cache)
{
	struct fault_cfg c = {.name = "512-tiny-cache",
	                      .cluster_size = 512,
	                      .guest_size = 4 * MiB,
	                      .nops = 150,
	                      .cache_bytes = 1,
	                      .seed = 0xfa017003};
	run_faults(&c);
}
