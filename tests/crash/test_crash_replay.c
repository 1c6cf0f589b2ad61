/* SPDX-License-Identifier: MIT */
/*
 * test_crash_replay.c - record every host write and sync the library makes,
 * replay prefixes and torn, reordered tails, and check every state.
 *
 * A recording struct qcow_io_ops wraps an in-memory file and logs each
 * pwrite (offset + data), punch_hole, truncate and sync.  A seeded workload
 * of writes, write-zeroes and discards with a flush every few operations
 * (and a close+reopen half-way) runs through the library, from qcow_create
 * on: creation is recorded too.
 *
 * A crash state is: every event up to a sync, plus a random subset of the
 * events between that sync and the next one, applied in order, one of them
 * torn (only a 512-byte-aligned prefix of it written).  For each state:
 *   - qcow_open read-only succeeds and writes nothing; unless the dirty bit
 *     is set (lazy refcounts), qcow_check finds no corruption;
 *   - the guest reads the content of the last flush that the state holds,
 *     except where a later operation wrote, where it may read that
 *     operation's bytes instead (old or new, never anything else);
 *   - qcow_open read-write (repairing a dirty image) succeeds, qcow_check
 *     finds no corruption (leaks allowed), the guest reads the same bytes,
 *     and a new write + flush lands without disturbing anything else;
 *   - on a sample, `qemu-img check` finds no corruption (exit 0 or 3),
 *     before our repair (if the state is not dirty) and after our close.
 *
 * Reproduce with BLOCKD_TEST_SEED=<seed printed> (and BLOCKD_TEST_SCALE).
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

/* ---- the test ---------------------------------------------------------- */

struct crash_cfg {
	const char *name;
	uint32_t cluster_size;
	unsigned refcount_bits;
	bool lazy_refcounts;
	uint64_t guest_size;
	unsigned nops;
	unsigned target_states;
	unsigned max_write_clusters;
	uint64_t cache_bytes;           /* L2 and refcount caches; 0: the defaults */
	unsigned min_reftable_clusters; /* the workload must grow the refcount table */
	uint64_t seed;
};

struct crash {
	const struct crash_cfg *cfg;
	uint64_t seed;
	struct tu_rng rng;
	struct recorder rec;
	struct gmodel model;
	size_t create_end; /* events of qcow_create */
	uint8_t *got, *got2, *wbuf;
	const char *dir;
	bool have_qemu;
	/* The state being checked, for messages. */
	unsigned state_no;
	struct crash_state st;
	unsigned qemu_checks;
	struct fail_tally fails;
};

static void describe_state(const struct crash *c)
{
	fprintf(stderr,
	        "crash_replay[%s]: seed=0x%" PRIx64
	        " state %u: events [0,%zu) + subset of [%zu,%zu)"
	        " (%zu events total, create ended at %zu)\n",
	        c->cfg->name, c->seed, c->state_no, c->st.durable, c->st.durable, c->st.max_events,
	        c->rec.nev, c->create_end);
	state_describe(&c->st, &c->rec, &c->model, c->seed, NULL, NULL);
}

/* Counts a failed state by kind; the first few of each are described in full. */
__attribute__((format(printf, 3, 4))) static void state_failed(struct crash *c, const char *kind,
                                                               const char *fmt, ...)
{
	if (!tally_add(&c->fails, kind))
		return;
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	describe_state(c);
	fprintf(stderr, "  FAILED (%s): %s\n", kind, msg);
	if (c->fails.count == 1)
		snprintf(c->fails.first, sizeof(c->fails.first), "state %u: %s: %s", c->state_no,
		         kind, msg);
}

static void pick(struct crash *c, uint64_t maxclusters, uint64_t *off, uint64_t *len)
{
	pick_range(&c->rng, c->cfg->cluster_size, c->cfg->guest_size, maxclusters, true, off, len);
}

static void run_workload(struct crash *c)
{
	const struct crash_cfg *cfg = c->cfg;
	int rc;
	rec_create(&c->rec, cfg->guest_size, cfg->cluster_size, cfg->refcount_bits,
	           cfg->lazy_refcounts);
	c->create_end = c->rec.nev;

	struct qcow_image *img = rec_open(&c->rec, cfg->cache_bytes, c->seed);
	unsigned until_flush = (unsigned)tu_range(&c->rng, 1, 6);
	uint64_t cs = cfg->cluster_size;
	uint64_t zmax = cfg->max_write_clusters * 2 > 8 ? cfg->max_write_clusters * 2 : 8;
	for (unsigned i = 0; i < cfg->nops; i++) {
		uint64_t off, len;
		unsigned r = (unsigned)tu_below(&c->rng, 100);
		tu_watch("crash_replay[%s]: seed=0x%" PRIx64 ": workload op %u", cfg->name, c->seed,
		         i);
		if (r < 60) {
			pick(c, cfg->max_write_clusters, &off, &len);
			tu_fill(&c->rng, c->wbuf, len);
			guest_op(img, &c->model, &c->rec, GOP_WRITE, off, len, c->wbuf, 0, cs);
		} else if (r < 78) {
			pick(c, zmax, &off, &len);
			unsigned fl = r < 69 ? QCOW_ZERO_MAY_UNMAP : 0;
			guest_op(img, &c->model, &c->rec, GOP_ZERO, off, len, NULL, fl, cs);
		} else {
			pick(c, zmax, &off, &len);
			guest_op(img, &c->model, &c->rec, GOP_DISCARD, off, len, NULL, 0, cs);
		}

		if (i == cfg->nops / 2) {
			/* Close counts as a flush; reopen. */
			rc = qcow_close(img);
			cr_assert_eq(rc, 0, "qcow_close mid-workload: %s", strerror(-rc));
			gm_flushed(&c->model, c->rec.nev);
			img = rec_open(&c->rec, cfg->cache_bytes, c->seed);
			until_flush = (unsigned)tu_range(&c->rng, 1, 6);
		} else if (--until_flush == 0) {
			rc = qcow_flush(img);
			cr_assert_eq(rc, 0, "qcow_flush: %s: %s", strerror(-rc),
			             qcow_last_error(img));
			gm_flushed(&c->model, c->rec.nev);
			until_flush = (unsigned)tu_range(&c->rng, 1, 6);
		}
	}
	rc = qcow_close(img);
	tu_unwatch();
	cr_assert_eq(rc, 0, "final qcow_close: %s", strerror(-rc));
	gm_flushed(&c->model, c->rec.nev);
}

static bool read_guest(struct crash *c, struct qcow_image *img, uint8_t *buf, const char *what)
{
	uint64_t off = 0;
	int rc = read_all(img, buf, c->cfg->guest_size, &off);
	STATE_CHECK(c, img, rc == 0, "qcow_read fails", "%s: qcow_read(%" PRIu64 "): %s: %s", what,
	            off, strerror(-rc), qcow_last_error(img));
	return true;
}

static bool judge(struct crash *c, const uint8_t *got, const char *what)
{
	struct gm_verdict v = gm_judge(&c->model, got, c->st.durable, c->st.max_events);
	if (!v.ok && tally_kind_count(&c->fails, "wrong guest data") < TALLY_DETAILED)
		gm_explain(&c->model, v.bad_off);
	STATE_CHECK(c, NULL, v.ok, "wrong guest data",
	            "%s: guest byte %" PRIu64 " (cluster %" PRIu64 " +%" PRIu64 ") reads 0x%02x; "
	            "the last durable flush (after %zu ops) says 0x%02x and none of the %zu "
	            "operations that may have reached the disk wrote 0x%02x there",
	            what, v.bad_off, v.bad_off / c->cfg->cluster_size,
	            v.bad_off % c->cfg->cluster_size, v.got, v.durable_ops, v.expected,
	            v.candidates, v.got);
	return true;
}

static bool qemu_check_file(struct crash *c, const struct memfile *mf, const char *when)
{
	char msg[4096];
	int st = qemu_img_check_mf(mf, c->dir, "state.qcow2", msg, sizeof(msg));
	c->qemu_checks++;
	STATE_CHECK(c, NULL, st == 0 || st == 3, "qemu-img check: corruption",
	            "qemu-img check %s exited %d:\n%s", when, st, msg);
	return true;
}

static bool check_state(struct crash *c, struct memfile *state, bool sample, bool final)
{
	char err[512] = "";
	struct qcow_image *img;
	struct qcow_check_result res;
	struct qcow_info info;
	uint64_t g = c->cfg->guest_size, cs = c->cfg->cluster_size;

	/* Read-only. */
	g_ro_writes = 0;
	struct qcow_open_opts ro = {.path = "crash-state.qcow2",
	                            .ops = &ro_ops,
	                            .ctx = state,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	int rc = qcow_open(&ro, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	STATE_CHECK(c, NULL, rc == 0, "read-only open fails",
	            "read-only qcow_open of a crash state: %s: %s", strerror(-rc), err);
	qcow_get_info(img, &info);
	if (!read_guest(c, img, c->got, "read-only"))
		return false;
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_CHECK(c, img, rc == 0 && res.check_errors == 0, "qcow_check fails",
	            "qcow_check (read-only): rc %d, %" PRIu64 " check errors: %s", rc,
	            res.check_errors, qcow_last_error(img));
	STATE_CHECK(c, img, info.dirty || res.corruptions == 0, "qcow_check: corruption",
	            "qcow_check of a clean crash state: %" PRIu64 " corruptions (%" PRIu64
	            " leaks)",
	            res.corruptions, res.leaks);
	STATE_CHECK(c, img, !info.dirty || c->cfg->lazy_refcounts, "dirty without lazy",
	            "dirty bit set on an image without lazy refcounts");
	STATE_CHECK(c, img, !final || (!info.dirty && res.leaks == 0), "unclean after close",
	            "the image as qcow_close left it: dirty %d, %" PRIu64 " leaks", (int)info.dirty,
	            res.leaks);
	rc = qcow_close(img);
	STATE_CHECK(c, NULL, rc == 0, "read-only close fails", "qcow_close (read-only): %s",
	            strerror(-rc));
	STATE_CHECK(c, NULL, g_ro_writes == 0, "read-only open writes",
	            "a read-only open/close wrote to the file (%u times)", g_ro_writes);
	if (!judge(c, c->got, "read-only"))
		return false;

	if (sample && c->have_qemu && !info.dirty &&
	    !qemu_check_file(c, state, "on the crash state"))
		return false;

	/* Read-write: repairs a dirty image. */
	struct qcow_open_opts rw = {.path = "crash-state.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = state,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	rc = qcow_open(&rw, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	STATE_CHECK(c, NULL, rc == 0, "read-write open fails",
	            "read-write qcow_open of a crash state: %s: %s", strerror(-rc), err);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_CHECK(c, img, rc == 0 && res.corruptions == 0 && res.check_errors == 0,
	            "qcow_check after rw open: corruption",
	            "qcow_check after a read-write open (rc %d): %" PRIu64 " corruptions, %" PRIu64
	            " leaks, %" PRIu64 " check errors",
	            rc, res.corruptions, res.leaks, res.check_errors);
	if (!read_guest(c, img, c->got2, "read-write"))
		return false;
	STATE_CHECK(c, img, memcmp(c->got, c->got2, g) == 0, "rw open changes guest data",
	            "the read-write open changed what the guest reads");

	/* A new allocation must not land on anything in use. */
	uint64_t poff, plen;
	probe_range(&c->rng, cs, g, c->wbuf, &poff, &plen);
	rc = qcow_write(img, c->wbuf, poff, plen);
	STATE_CHECK(c, img, rc == 0, "probe write fails",
	            "probe qcow_write(%" PRIu64 ", %" PRIu64 "): %s: %s", poff, plen, strerror(-rc),
	            qcow_last_error(img));
	rc = qcow_flush(img);
	STATE_CHECK(c, img, rc == 0, "probe flush fails", "probe qcow_flush: %s: %s", strerror(-rc),
	            qcow_last_error(img));
	memcpy(c->got + poff, c->wbuf, plen);
	if (!read_guest(c, img, c->got2, "after the probe write"))
		return false;
	uint64_t b = first_diff(c->got, c->got2, g);
	STATE_CHECK(c, img, b == g, "probe write disturbs data",
	            "after a probe write at %" PRIu64 "+%" PRIu64 " on the repaired state, "
	            "guest byte %" PRIu64 " reads 0x%02x instead of 0x%02x",
	            poff, plen, b, b < g ? c->got2[b] : 0, b < g ? c->got[b] : 0);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_CHECK(c, img, rc == 0 && res.corruptions == 0, "qcow_check after probe: corruption",
	            "qcow_check after the probe write: %" PRIu64 " corruptions", res.corruptions);
	rc = qcow_close(img);
	STATE_CHECK(c, NULL, rc == 0, "read-write close fails", "qcow_close (read-write): %s",
	            strerror(-rc));

	if (sample && c->have_qemu &&
	    !qemu_check_file(c, state, "after our read-write open and close"))
		return false;
	return true;
}

static void run_crash(const struct crash_cfg *cfg)
{
	struct crash c = {.cfg = cfg};
	c.seed = tu_seed(cfg->seed);
	c.rng.s = c.seed;
	c.have_qemu = have_qemu_img();
	c.dir = crash_dir("crash");
	gm_init(&c.model, cfg->guest_size);
	c.got = malloc(cfg->guest_size);
	c.got2 = malloc(cfg->guest_size);
	c.wbuf = malloc((cfg->max_write_clusters + 16) * cfg->cluster_size + 8192);
	cr_assert(c.got && c.got2 && c.wbuf && c.model.cur);

	run_workload(&c);
	if (cfg->min_reftable_clusters) {
		/* Header field refcount_table_clusters (big-endian u32 at byte 56). */
		const uint8_t *h = c.rec.live.data;
		uint32_t rt =
		    (uint32_t)h[56] << 24 | (uint32_t)h[57] << 16 | (uint32_t)h[58] << 8 | h[59];
		cr_assert_geq(
		    rt, cfg->min_reftable_clusters,
		    "the workload did not grow the refcount table (%u clusters, file %" PRIu64
		    " bytes)",
		    rt, c.rec.live.size);
	}

	/* Sync points whose prefix holds the whole creation. */
	size_t nsync;
	size_t *syncs = sync_points(&c.rec, c.create_end, &nsync);
	cr_assert_geq(nsync, 2, "the workload made no sync after creation (%zu events)", c.rec.nev);
	/*
	 * target_states spread evenly over the sync points (a sync may get
	 * none when there are more syncs than states wanted).
	 */
	uint64_t target = cfg->target_states;

	struct memfile base = {0}, state = {0};
	size_t applied = 0;
	c.st.subset = malloc((c.rec.nev + 1) * sizeof(*c.st.subset));
	cr_assert(c.st.subset);
	unsigned states = 0;
	for (size_t k = 0; k < nsync; k++) {
		size_t p = syncs[k];
		for (; applied < p; applied++)
			apply_event(&base, &c.rec.ev[applied], c.rec.ev[applied].len);
		size_t q = interval_end(&c.rec, p);
		unsigned variants = (unsigned)((k + 1) * target / nsync - k * target / nsync);
		if (k + 1 == nsync && variants == 0)
			variants = 1; /* always check the final state */
		/* Intervals that rewrite the header (new refcount table, dirty bit) get more. */
		bool hot = false;
		for (size_t i = p; i < q; i++)
			hot |= c.rec.ev[i].kind == EV_PWRITE && c.rec.ev[i].off == 0;
		if (hot && variants < 4)
			variants = 4;
		for (unsigned v = 0; v < variants; v++) {
			/*
			 * The first state at a sync rotates between the exact
			 * prefix, only the interval's last event (typically the
			 * pointer to everything else: header or L1), and a
			 * torn random subset; further states are torn subsets.
			 */
			unsigned shape = q == p   ? 0
			                 : hot    ? (v < 2 ? v : 2)
			                 : v == 0 ? (unsigned)(k % 3)
			                          : 2;
			bool exact = shape == 0;
			c.state_no = states;
			c.st.durable = p;
			c.st.max_events = q;
			c.st.nsubset = 0;
			c.st.torn_ev = SIZE_MAX;
			c.st.torn_len = 0;
			if (shape == 1)
				c.st.subset[c.st.nsubset++] = q - 1;
			else if (!exact)
				state_random_subset(&c.st, &c.rng, &c.rec, p, q);
			state_build(&state, &base, &c.rec, &c.st);
			tu_watch("crash_replay[%s]: seed=0x%" PRIx64 ": checking state %u",
			         cfg->name, c.seed, states);
			check_state(&c, &state, states % 10 == 0, exact && p == c.rec.nev);
			tu_unwatch();
			states++;
		}
	}
	fprintf(stderr,
	        "crash_replay[%s]: seed=0x%" PRIx64 ": %zu events, %zu sync points, %u states, "
	        "%u qemu-img checks, %u states failed\n",
	        cfg->name, c.seed, c.rec.nev, nsync, states, c.qemu_checks, c.fails.count);
	tally_print(&c.fails, "crash_replay");
	cr_expect_eq(c.fails.count, 0,
	             "%u of %u crash states failed (seed=0x%" PRIx64 "); first: %s", c.fails.count,
	             states, c.seed, c.fails.first);
	cr_assert_geq(states, cfg->target_states / 2, "only %u crash states", states);

	mf_free(&base);
	mf_free(&state);
	free(c.st.subset);
	free(syncs);
	free(c.got);
	free(c.got2);
	free(c.wbuf);
	gm_free(&c.model);
	rec_free(&c.rec);
}

TestSuite(crash_replay, .fini = crash_dir_remove, .timeout = 240);

Test(crash_replay, cluster_64k)
{
	struct crash_cfg c = {.name = "64k",
	                      .cluster_size = 65536,
	                      .guest_size = 8 * MiB,
	                      .nops = tu_scaled(250),
	                      .target_states = tu_scaled(900),
	                      .max_write_clusters = 3,
	                      .seed = 0xc0ffee01};
	run_crash(&c);
}

Test(crash_replay, cluster_64k_lazy)
{
	struct crash_cfg c = {.name = "64k-lazy",
	                      .cluster_size = 65536,
	                      .lazy_refcounts = true,
	                      .guest_size = 8 * MiB,
	                      .nops = tu_scaled(250),
	                      .target_states = tu_scaled(900),
	                      .max_write_clusters = 3,
	                      .seed = 0xc0ffee02};
	run_crash(&c);
}

/*
 * 64-bit refcounts at 512 B: a refblock covers 32 KiB and a refcount table
 * cluster 2 MiB of host file, so the workload grows the table several times.
 */
Test(crash_replay, cluster_512_refcount64)
{
	struct crash_cfg c = {.name = "512-rc64",
	                      .cluster_size = 512,
	                      .refcount_bits = 64,
	                      .guest_size = 8 * MiB,
	                      .nops = 800,
	                      .target_states = tu_scaled(900),
	                      .max_write_clusters = 63,
	                      .min_reftable_clusters = 2,
	                      .seed = 0xc0ffee03};
	run_crash(&c);
}

Test(crash_replay, cluster_512_refcount64_lazy)
{
	struct crash_cfg c = {.name = "512-rc64-lazy",
	                      .cluster_size = 512,
	                      .refcount_bits = 64,
	                      .lazy_refcounts = true,
	                      .guest_size = 8 * MiB,
	                      .nops = 800,
	                      .target_states = tu_scaled(900),
	                      .max_write_clusters = 63,
	                      .min_reftable_clusters = 2,
	                      .seed = 0xc0ffee04};
	run_crash(&c);
}

/* Smallest caches: L2 tables and refblocks are evicted in the middle of writes. */
Test(crash_replay, cluster_1k_tiny_cache)
{
	struct crash_cfg c = {.name = "1k-tiny-cache",
	                      .cluster_size = 1024,
	                      .guest_size = 16 * MiB,
	                      .nops = tu_scaled(250),
	                      .target_states = tu_scaled(600),
	                      .max_write_clusters = 16,
	                      .cache_bytes = 1,
	                      .seed = 0xc0ffee05};
	run_crash(&c);
}
