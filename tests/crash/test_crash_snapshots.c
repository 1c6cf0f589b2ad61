/* SPDX-License-Identifier: MIT */
/*
 * test_crash_snapshots.c - snapshot create, delete and revert interrupted at
 * every write: by a crash (replayed host events) and by an I/O error.
 *
 * The requirement: "a snapshot create or delete interrupted at any write
 * leaves an image that opens, passes check with no corruption, and either
 * has the snapshot or not, whole."
 *
 * Crash replay.  A recording struct qcow_io_ops (as in test_crash_replay.c)
 * logs every host pwrite, punch, truncate and sync of a scripted workload:
 * guest writes with flushes, then create "a", more writes, create "b",
 * delete "a", revert "b", create "c", revert straight after a create,
 * re-create "a", and so on, with a close and reopen in the middle.  The
 * guest model (harness.h) keeps the active disk, a revert being a write of
 * the whole disk; each create keeps a copy of the disk it saved.
 *
 * A crash state is every event up to a sync plus some of the events up to
 * the next sync.  In intervals that overlap a snapshot operation every
 * in-order prefix is a state (each pwrite also torn), plus the interval's
 * last event alone, all but it, and random subsets with one torn write;
 * other intervals get a few states each.  For every state:
 *   - a read-only open succeeds and writes nothing; a clean image passes
 *     qcow_check with no corruption;
 *   - the snapshot list is the one before the operation in flight or the
 *     one after it (outside an operation: the current one), no duplicates;
 *   - each snapshot present, opened with qcow_open_opts.snapshot, reads
 *     exactly the disk it saved;
 *   - the active disk reads the model (old or new bytes of unflushed guest
 *     writes); while a snapshot operation is in flight it reads exactly the
 *     content before it or after it (revert: old disk or snapshot, whole);
 *   - a read-write open (which repairs a dirty image) passes qcow_check
 *     with no corruption, shows the same list and disk, and a probe write
 *     + flush lands without changing any snapshot (checked after close);
 *   - on a sample, qemu-img check exits 0 or 3, before and after.
 *
 * Faults.  On a prepared image (snapshots "a" and "b", different disks),
 * the N-th pwrite or sync of snapshot create/delete/revert fails with EIO
 * (once, or ENOSPC from then on), for every N until the call succeeds.  The
 * call must fail with a negative errno; the handle is then abandoned, or
 * used on (a write, flush, close); the file reopened passes qcow_check with
 * no corruption and has the snapshot whole or not at all.
 *
 * Reproduce with BLOCKD_TEST_SEED=<seed printed>; BLOCKD_CRASH_EVENTS=1
 * prints the whole event log of a failed state.
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

#define MAX_SNAPS 3    /* slots a, b, c */
#define MAX_SOPS  32   /* snapshot operations in the script */
#define MAX_NAME  1023 /* the library's cap on a name */

/* Iteration scale: halved again when the sanitizer suite says so. */
static unsigned scaled(unsigned n)
{
	return tu_scaled_by(n, getenv("BLOCKD_SANITIZED") ? 0.5 : 1.0);
}

/* The snapshot names of the slots: 'a', 'b', 'c', padded to len characters. */
static void make_names(char names[][MAX_NAME + 1], size_t len)
{
	for (int s = 0; s < MAX_SNAPS; s++) {
		size_t n = len < 1 ? 1 : len > MAX_NAME ? MAX_NAME : len;
		memset(names[s], '0' + s, n);
		names[s][0] = (char)('a' + s);
		names[s][n] = '\0';
	}
}

/* ---- snapshot lists ------------------------------------------------------ */

/*
 * Reads the image's snapshot list as a mask of slots (names[slot]).
 * Returns 0, or a message in why: unknown name, duplicate name or id,
 * wrong disk size.
 */
static int read_list(struct qcow_image *img, char names[][MAX_NAME + 1], uint64_t disk_size,
                     unsigned *mask, char *why, size_t whylen)
{
	struct qcow_snapshot_info *info = calloc(MAX_SNAPS + 1, sizeof(*info));
	cr_assert(info);
	uint32_t n = qcow_snapshot_count(img);
	unsigned m = 0;
	int rc = 0;
	if (n > MAX_SNAPS) {
		snprintf(why, whylen, "%" PRIu32 " snapshots listed, at most %d exist", n,
		         MAX_SNAPS);
		rc = -EINVAL;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		int e = qcow_snapshot_get(img, i, &info[i]);
		if (e) {
			snprintf(why, whylen, "qcow_snapshot_get(%" PRIu32 "): %s", i,
			         strerror(-e));
			rc = -EINVAL;
			goto out;
		}
		int s = 0;
		while (s < MAX_SNAPS && strcmp(names[s], info[i].name))
			s++;
		if (s == MAX_SNAPS) {
			snprintf(why, whylen, "snapshot %" PRIu32 " has an unknown name '%.40s'", i,
			         info[i].name);
			rc = -EINVAL;
			goto out;
		}
		if (m & (1u << s)) {
			snprintf(why, whylen, "snapshot '%c' listed twice", 'a' + s);
			rc = -EINVAL;
			goto out;
		}
		m |= 1u << s;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(info[j].id, info[i].id)) {
				snprintf(why, whylen,
				         "snapshots %" PRIu32 " and %" PRIu32 " share id '%s'", j,
				         i, info[i].id);
				rc = -EINVAL;
				goto out;
			}
		if (info[i].disk_size_bytes != disk_size) {
			snprintf(why, whylen,
			         "snapshot '%c' has disk size %" PRIu64 ", not %" PRIu64, 'a' + s,
			         info[i].disk_size_bytes, disk_size);
			rc = -EINVAL;
			goto out;
		}
	}
	*mask = m;
out:
	free(info);
	return rc;
}

static const char *mask_str(unsigned mask, char buf[8])
{
	int n = 0;
	buf[n++] = '{';
	for (int s = 0; s < MAX_SNAPS; s++)
		if (mask & (1u << s))
			buf[n++] = (char)('a' + s);
	buf[n++] = '}';
	buf[n] = '\0';
	return buf;
}

/*
 * Opens snapshot `name` of mf read-only (ro_ops: any write is counted) and
 * reads its disk into buf.  0, or a message in why.
 */
static int read_snapshot(struct memfile *mf, const char *name, uint8_t *buf, uint64_t size,
                         char *why, size_t whylen)
{
	char err[512] = "";
	struct qcow_image *img;
	struct qcow_open_opts o = {.path = "snapshot-view.qcow2",
	                           .ops = &ro_ops,
	                           .ctx = mf,
	                           .snapshot = name,
	                           .l2_cache_bytes = TEST_CACHE_BYTES,
	                           .refcount_cache_bytes = TEST_CACHE_BYTES};
	unsigned writes = g_ro_writes;
	int rc = qcow_open(&o, &img, err, sizeof(err));
	if (rc) {
		snprintf(why, whylen, "qcow_open(.snapshot='%.40s'): %s: %s", name, strerror(-rc),
		         err);
		return rc;
	}
	struct qcow_info info;
	qcow_get_info(img, &info);
	if (info.size_bytes != size) {
		snprintf(why, whylen, "snapshot view '%.40s' has size %" PRIu64 ", not %" PRIu64,
		         name, info.size_bytes, size);
		qcow_abandon(img);
		return -EINVAL;
	}
	uint64_t bad = 0;
	rc = read_all(img, buf, size, &bad);
	if (rc) {
		snprintf(why, whylen, "reading snapshot '%.40s' at %" PRIu64 ": %s: %s", name, bad,
		         strerror(-rc), qcow_last_error(img));
		qcow_abandon(img);
		return rc;
	}
	rc = qcow_close(img);
	if (rc) {
		snprintf(why, whylen, "closing snapshot view '%.40s': %s", name, strerror(-rc));
		return rc;
	}
	if (g_ro_writes != writes) {
		snprintf(why, whylen, "opening snapshot '%.40s' read-only wrote to the file", name);
		return -EROFS;
	}
	return 0;
}

/* ---- crash replay: configuration and workload --------------------------- */

struct crash_cfg {
	const char *name;
	uint32_t cluster_size;
	unsigned refcount_bits; /* 0: 16 */
	bool lazy_refcounts;
	uint64_t guest_size;
	unsigned writes_per_phase; /* guest operations in each W step */
	unsigned max_write_clusters;
	size_t name_len;      /* snapshot names padded to this length (1: "a") */
	unsigned hot_subsets; /* random torn subsets per interval in an operation */
	unsigned cold_states; /* states spread over the other intervals */
	unsigned qemu_every;  /* qemu-img check every n-th state */
	uint64_t seed;
};

enum step_kind { ST_WRITES, ST_CREATE, ST_DELETE, ST_REVERT, ST_REOPEN };

static const char *const step_names[] = {"writes", "create", "delete", "revert", "reopen"};

struct step {
	enum step_kind kind;
	int snap; /* slot, for snapshot steps */
};

/*
 * The script: back-to-back operations (create then revert, create then
 * delete, revert then delete), a revert to a snapshot whose clusters the
 * active disk shares, a name used again after its delete, and a reopen so
 * that later operations start from a table read from disk.
 */
static const struct step g_script[] = {
    {ST_WRITES, -1}, {ST_CREATE, 0},  {ST_WRITES, -1}, {ST_CREATE, 1},  {ST_WRITES, -1},
    {ST_REOPEN, -1}, {ST_DELETE, 0},  {ST_REVERT, 1},  {ST_WRITES, -1}, {ST_CREATE, 2},
    {ST_REVERT, 1},  {ST_WRITES, -1}, {ST_CREATE, 0},  {ST_DELETE, 1},  {ST_WRITES, -1},
    {ST_REVERT, 0},  {ST_DELETE, 2},  {ST_WRITES, -1},
};

/* One snapshot operation as recorded. */
struct sop {
	enum step_kind kind;
	int snap;
	size_t ev_start, ev_end; /* host events of the call */
	size_t gops_before;      /* guest model operations before it */
	unsigned mask_before, mask_after;
	uint8_t *saved; /* ST_CREATE: the disk it saved */
};

struct crash {
	const struct crash_cfg *cfg;
	uint64_t seed;
	struct tu_rng rng;
	struct recorder rec;
	struct gmodel model;
	size_t create_end; /* events of qcow_create */
	char names[MAX_SNAPS][MAX_NAME + 1];
	struct sop sops[MAX_SOPS];
	size_t nsops;
	uint8_t *got, *got2, *wbuf;
	const char *dir;
	bool have_qemu;
	/* The state being checked, for messages. */
	unsigned state_no;
	const char *shape;
	struct crash_state st;
	int amb; /* the snapshot operation in flight, or -1 */
	unsigned qemu_checks;
	unsigned states_in_ops;
	unsigned ops_seen[MAX_SOPS]; /* states in which each operation is in flight */
	unsigned ops_failed[MAX_SOPS];
	unsigned other_failed; /* failed states with no operation in flight */
	bool state_bad;        /* the state being checked has failed already */
	unsigned bad_states;
	struct fail_tally fails;
};

static void describe_sop(const struct crash *c, int i, char *buf, size_t len)
{
	if (i < 0) {
		snprintf(buf, len, "none");
		return;
	}
	const struct sop *s = &c->sops[i];
	char b[8], a[8];
	snprintf(buf, len, "#%d %s '%c' (events [%zu,%zu), list %s -> %s)", i, step_names[s->kind],
	         'a' + s->snap, s->ev_start, s->ev_end, mask_str(s->mask_before, b),
	         mask_str(s->mask_after, a));
}

/* With BLOCKD_CRASH_EVENTS: the snapshot operations that start at event i. */
static void describe_sops_at(const void *ctx, size_t i)
{
	const struct crash *c = ctx;
	char op[256];
	for (size_t s = 0; s < c->nsops; s++)
		if (c->sops[s].ev_start == i) {
			describe_sop(c, (int)s, op, sizeof(op));
			fprintf(stderr, "  -- snapshot op %s\n", op);
		}
}

static void describe_state(const struct crash *c)
{
	char op[256];
	describe_sop(c, c->amb, op, sizeof(op));
	fprintf(stderr,
	        "crash_snapshots[%s]: seed=0x%" PRIx64 " state %u (%s): events [0,%zu) + "
	        "subset of [%zu,%zu) (%zu events total); operation in flight: %s\n",
	        c->cfg->name, c->seed, c->state_no, c->shape, c->st.durable, c->st.durable,
	        c->st.max_events, c->rec.nev, op);
	state_describe(&c->st, &c->rec, &c->model, c->seed, describe_sops_at, c);
}

__attribute__((format(printf, 3, 4))) static void state_failed(struct crash *c, const char *kind,
                                                               const char *fmt, ...)
{
	bool detail = tally_add(&c->fails, kind);
	if (!c->state_bad) {
		c->state_bad = true;
		c->bad_states++;
		if (c->amb >= 0)
			c->ops_failed[c->amb]++;
		else
			c->other_failed++;
	}
	if (!detail && c->fails.count > 1)
		return;
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (detail) {
		describe_state(c);
		fprintf(stderr, "  FAILED (%s): %s\n", kind, msg);
	}
	if (c->fails.count == 1) {
		char op[256];
		describe_sop(c, c->amb, op, sizeof(op));
		snprintf(c->fails.first, sizeof(c->fails.first),
		         "state %u (%s, events [0,%zu) + %zu of [%zu,%zu), op in flight %s): "
		         "%s: %s",
		         c->state_no, c->shape, c->st.durable, c->st.nsubset, c->st.durable,
		         c->st.max_events, op, kind, msg);
	}
}

/* A W step: guest writes, write-zeroes and discards, flushed now and then and at the end. */
static void run_writes(struct crash *c, struct qcow_image *img)
{
	uint64_t cs = c->cfg->cluster_size;
	unsigned until_flush = (unsigned)tu_range(&c->rng, 2, 6);
	int rc;
	for (unsigned i = 0; i < c->cfg->writes_per_phase; i++) {
		uint64_t off, len;
		unsigned r = (unsigned)tu_below(&c->rng, 100);
		pick_range(&c->rng, cs, c->cfg->guest_size, c->cfg->max_write_clusters, false, &off,
		           &len);
		if (r < 70) {
			tu_fill(&c->rng, c->wbuf, len);
			guest_op(img, &c->model, &c->rec, GOP_WRITE, off, len, c->wbuf, 0, cs);
		} else if (r < 85) {
			unsigned fl = r < 78 ? QCOW_ZERO_MAY_UNMAP : 0;
			guest_op(img, &c->model, &c->rec, GOP_ZERO, off, len, NULL, fl, cs);
		} else {
			guest_op(img, &c->model, &c->rec, GOP_DISCARD, off, len, NULL, 0, cs);
		}
		if (--until_flush == 0 || i + 1 == c->cfg->writes_per_phase) {
			rc = qcow_flush(img);
			cr_assert_eq(rc, 0, "qcow_flush: %s: %s", strerror(-rc),
			             qcow_last_error(img));
			gm_flushed(&c->model, c->rec.nev);
			until_flush = (unsigned)tu_range(&c->rng, 2, 6);
		}
	}
}

static void run_script(struct crash *c)
{
	const struct crash_cfg *cfg = c->cfg;
	int rc;
	rec_create(&c->rec, cfg->guest_size, cfg->cluster_size, cfg->refcount_bits,
	           cfg->lazy_refcounts);
	c->create_end = c->rec.nev;

	struct qcow_image *img = rec_open(&c->rec, 0, c->seed);
	unsigned mask = 0;
	for (size_t k = 0; k < sizeof(g_script) / sizeof(g_script[0]); k++) {
		const struct step *st = &g_script[k];
		tu_watch("crash_snapshots[%s]: seed=0x%" PRIx64 ": script step %zu (%s)", cfg->name,
		         c->seed, k, step_names[st->kind]);
		if (st->kind == ST_WRITES) {
			run_writes(c, img);
			tu_unwatch();
			continue;
		}
		if (st->kind == ST_REOPEN) {
			rc = qcow_close(img);
			cr_assert_eq(rc, 0, "qcow_close mid-script: %s", strerror(-rc));
			gm_flushed(&c->model, c->rec.nev);
			img = rec_open(&c->rec, 0, c->seed);
			tu_unwatch();
			continue;
		}
		cr_assert_lt(c->nsops, MAX_SOPS);
		struct sop *s = &c->sops[c->nsops++];
		const char *name = c->names[st->snap];
		*s = (struct sop){.kind = st->kind,
		                  .snap = st->snap,
		                  .ev_start = c->rec.nev,
		                  .gops_before = c->model.nops,
		                  .mask_before = mask};
		gm_advance(&c->model, c->model.nops);
		switch (st->kind) {
		case ST_CREATE:
			s->saved = malloc(cfg->guest_size);
			cr_assert(s->saved);
			memcpy(s->saved, c->model.cur, cfg->guest_size);
			rc = qcow_snapshot_create(img, name);
			mask |= 1u << st->snap;
			break;
		case ST_DELETE:
			rc = qcow_snapshot_delete(img, name);
			mask &= ~(1u << st->snap);
			break;
		default: {
			/* Revert: the whole disk becomes the snapshot's. */
			const uint8_t *saved = NULL;
			for (size_t j = 0; j + 1 < c->nsops; j++)
				if (c->sops[j].kind == ST_CREATE && c->sops[j].snap == st->snap)
					saved = c->sops[j].saved;
			cr_assert(saved, "script reverts to a snapshot never created");
			rc = qcow_snapshot_revert(img, name);
			struct gop *g =
			    gm_add(&c->model, GOP_WRITE, 0, cfg->guest_size, saved, s->ev_start);
			g->ev_end = c->rec.nev;
			break;
		}
		}
		tu_unwatch();
		cr_assert_eq(rc, 0, "qcow_snapshot_%s('%c'): %s: %s", step_names[st->kind],
		             'a' + st->snap, strerror(-rc), qcow_last_error(img));
		s->ev_end = c->rec.nev;
		s->mask_after = mask;
		gm_flushed(&c->model, c->rec.nev); /* each operation ends with a flush */
		unsigned now = 0;
		char why[512] = "";
		rc = read_list(img, c->names, cfg->guest_size, &now, why, sizeof(why));
		cr_assert(rc == 0 && now == mask,
		          "after %s '%c' the handle lists %#x, expected %#x%s%s",
		          step_names[st->kind], 'a' + st->snap, now, mask, *why ? ": " : "", why);
		cr_assert_gt(s->ev_end, s->ev_start, "snapshot %s made no host events",
		             step_names[st->kind]);
		cr_assert_eq(c->rec.ev[s->ev_end - 1].kind, EV_SYNC,
		             "snapshot %s did not end with a sync", step_names[st->kind]);
	}
	rc = qcow_close(img);
	cr_assert_eq(rc, 0, "final qcow_close: %s", strerror(-rc));
	gm_flushed(&c->model, c->rec.nev);
}

/* ---- crash replay: judging one state ------------------------------------ */

/* The disk saved by the create of slot s that a state up to `max_events` may hold. */
static const uint8_t *saved_disk(const struct crash *c, int s, size_t max_events)
{
	const uint8_t *saved = NULL;
	for (size_t j = 0; j < c->nsops; j++)
		if (c->sops[j].kind == ST_CREATE && c->sops[j].snap == s &&
		    c->sops[j].ev_start < max_events)
			saved = c->sops[j].saved;
	return saved;
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

/* The snapshot list: before or after the operation in flight, else the current one. */
static bool judge_list(struct crash *c, unsigned mask, const char *what)
{
	unsigned want_a, want_b;
	if (c->amb >= 0) {
		want_a = c->sops[c->amb].mask_before;
		want_b = c->sops[c->amb].mask_after;
	} else {
		want_a = 0;
		for (size_t j = 0; j < c->nsops; j++)
			if (c->sops[j].ev_end <= c->st.durable)
				want_a = c->sops[j].mask_after;
		want_b = want_a;
	}
	char g[8], a[8], b[8];
	STATE_CHECK(c, NULL, mask == want_a || mask == want_b, "wrong snapshot list",
	            "%s: the image lists snapshots %s; valid here: %s or %s", what,
	            mask_str(mask, g), mask_str(want_a, a), mask_str(want_b, b));
	return true;
}

/* Every snapshot in mask reads exactly the disk its create saved. */
static bool judge_snapshots(struct crash *c, struct memfile *mf, unsigned mask, const char *what)
{
	uint64_t g = c->cfg->guest_size;
	for (int s = 0; s < MAX_SNAPS; s++) {
		if (!(mask & (1u << s)))
			continue;
		char why[1024] = "";
		int rc = read_snapshot(mf, c->names[s], c->got2, g, why, sizeof(why));
		STATE_CHECK(c, NULL, rc == 0, "snapshot view fails", "%s: %s", what, why);
		const uint8_t *want = saved_disk(c, s, c->st.max_events);
		cr_assert(want);
		uint64_t b = first_diff(want, c->got2, g);
		STATE_CHECK(c, NULL, b == g, "snapshot reads wrong data",
		            "%s: snapshot '%c' byte %" PRIu64 " (cluster %" PRIu64 " +%" PRIu64
		            ") reads 0x%02x, saved 0x%02x",
		            what, 'a' + s, b, b / c->cfg->cluster_size, b % c->cfg->cluster_size,
		            b < g ? c->got2[b] : 0, b < g ? want[b] : 0);
	}
	return true;
}

/* The active disk: the model, or whole before/after the operation in flight. */
static bool judge_active(struct crash *c, const uint8_t *got, const char *what)
{
	struct gmodel *m = &c->model;
	uint64_t g = c->cfg->guest_size, cs = c->cfg->cluster_size;
	if (c->amb < 0) {
		struct gm_verdict v = gm_judge(m, got, c->st.durable, c->st.max_events);
		if (!v.ok && tally_kind_count(&c->fails, "wrong active data") < TALLY_DETAILED)
			gm_explain(m, v.bad_off);
		STATE_CHECK(
		    c, NULL, v.ok, "wrong active data",
		    "%s: guest byte %" PRIu64 " (cluster %" PRIu64 " +%" PRIu64
		    ") reads 0x%02x; the last durable flush (after %zu ops) says 0x%02x and "
		    "none of the %zu operations that may have reached the disk wrote it",
		    what, v.bad_off, v.bad_off / cs, v.bad_off % cs, v.got, v.durable_ops,
		    v.expected, v.candidates);
		return true;
	}
	const struct sop *s = &c->sops[c->amb];
	size_t n0 = s->gops_before, n1 = n0 + (s->kind == ST_REVERT);
	/* Every guest write before the operation is durable, none after it started. */
	cr_assert_eq(gm_durable_ops(m, c->st.durable), n0,
	             "test structure: guest operations in flight with a snapshot operation");
	cr_assert(n1 >= m->nops || m->ops[n1].ev_start >= c->st.max_events,
	          "test structure: guest operations in flight with a snapshot operation");
	gm_advance(m, n0);
	uint64_t b0 = first_diff(m->cur, got, g);
	if (b0 == g)
		return true;
	uint8_t pre = m->cur[b0];
	gm_advance(m, n1);
	uint64_t b1 = first_diff(m->cur, got, g);
	if (b1 == g)
		return true;
	STATE_CHECK(c, NULL, false, s->kind == ST_REVERT ? "revert not whole" : "wrong active data",
	            "%s: the active disk is neither the one before the %s (byte %" PRIu64
	            " reads 0x%02x, was 0x%02x) nor the one after it (byte %" PRIu64
	            " reads 0x%02x, should be 0x%02x)",
	            what, step_names[s->kind], b0, got[b0], pre, b1, got[b1], m->cur[b1]);
	return true;
}

static bool open_ro(struct crash *c, struct memfile *mf, struct qcow_image **out, const char *what)
{
	char err[512] = "";
	struct qcow_open_opts ro = {.path = "crash-state.qcow2",
	                            .ops = &ro_ops,
	                            .ctx = mf,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	int rc = qcow_open(&ro, out, err, sizeof(err));
	STATE_CHECK(c, NULL, rc == 0, "read-only open fails", "%s: read-only qcow_open: %s: %s",
	            what, strerror(-rc), err);
	return true;
}

static bool check_state(struct crash *c, struct memfile *state, bool sample, bool final)
{
	char err[512] = "", why[512] = "";
	struct qcow_image *img;
	struct qcow_check_result res;
	struct qcow_info info;
	uint64_t g = c->cfg->guest_size, cs = c->cfg->cluster_size, bad = 0;
	unsigned mask = 0, mask2 = 0;
	int rc;

	/* Read-only: list, check, active disk, then each snapshot. */
	g_ro_writes = 0;
	if (!open_ro(c, state, &img, "the crash state"))
		return false;
	qcow_get_info(img, &info);
	rc = read_list(img, c->names, g, &mask, why, sizeof(why));
	STATE_CHECK(c, img, rc == 0, "bad snapshot list", "read-only: %s", why);
	rc = read_all(img, c->got, g, &bad);
	STATE_CHECK(c, img, rc == 0, "qcow_read fails", "read-only: qcow_read(%" PRIu64 "): %s: %s",
	            bad, strerror(-rc), qcow_last_error(img));
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_CHECK(c, img, rc == 0 && res.check_errors == 0, "qcow_check fails",
	            "qcow_check (read-only): rc %d, %" PRIu64 " check errors: %s", rc,
	            res.check_errors, qcow_last_error(img));
	STATE_EXPECT(c, info.dirty || res.corruptions == 0, "qcow_check: corruption",
	             "qcow_check of a clean crash state: %" PRIu64 " corruptions (%" PRIu64
	             " leaks)",
	             res.corruptions, res.leaks);
	/* A snapshot operation marks the image dirty until it is done. */
	STATE_CHECK(
	    c, img, !info.dirty || c->cfg->lazy_refcounts || c->amb >= 0, "dirty without lazy",
	    "dirty bit set on an image without lazy refcounts, outside a snapshot operation");
	STATE_CHECK(c, img, !final || (!info.dirty && res.leaks == 0), "unclean after close",
	            "the image as qcow_close left it: dirty %d, %" PRIu64 " leaks", (int)info.dirty,
	            res.leaks);
	rc = qcow_close(img);
	STATE_CHECK(c, NULL, rc == 0, "read-only close fails", "qcow_close (read-only): %s",
	            strerror(-rc));
	STATE_CHECK(c, NULL, g_ro_writes == 0, "read-only open writes",
	            "a read-only open/close wrote to the file (%u times)", g_ro_writes);
	if (!judge_list(c, mask, "read-only") || !judge_active(c, c->got, "read-only") ||
	    !judge_snapshots(c, state, mask, "read-only"))
		return false;

	if (sample && c->have_qemu && !info.dirty &&
	    !qemu_check_file(c, state, "on the crash state"))
		return false;

	/* Read-write: repairs a dirty image; nothing may change. */
	struct qcow_open_opts rw = {.path = "crash-state.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = state,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	rc = qcow_open(&rw, &img, err, sizeof(err));
	STATE_CHECK(c, NULL, rc == 0, "read-write open fails",
	            "read-write qcow_open of a crash state: %s: %s", strerror(-rc), err);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_EXPECT(c, rc == 0 && res.corruptions == 0 && res.check_errors == 0,
	             "qcow_check after rw open: corruption",
	             "qcow_check after a read-write open (rc %d): %" PRIu64 " corruptions, %" PRIu64
	             " leaks, %" PRIu64 " check errors",
	             rc, res.corruptions, res.leaks, res.check_errors);
	rc = read_list(img, c->names, g, &mask2, why, sizeof(why));
	STATE_CHECK(c, img, rc == 0 && mask2 == mask, "rw open changes the list",
	            "read-write open lists %#x, read-only listed %#x%s%s", mask2, mask,
	            *why ? ": " : "", why);
	rc = read_all(img, c->got2, g, &bad);
	STATE_CHECK(c, img, rc == 0, "qcow_read fails",
	            "read-write: qcow_read(%" PRIu64 "): %s: %s", bad, strerror(-rc),
	            qcow_last_error(img));
	bad = first_diff(c->got, c->got2, g);
	STATE_CHECK(c, img, bad == g, "rw open changes active data",
	            "the read-write open changed guest byte %" PRIu64 " (0x%02x -> 0x%02x)", bad,
	            bad < g ? c->got[bad] : 0, bad < g ? c->got2[bad] : 0);

	/* A probe write: copy-on-write must keep every snapshot as it was. */
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
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_EXPECT(c, rc == 0 && res.corruptions == 0, "qcow_check after probe: corruption",
	             "qcow_check after the probe write: %" PRIu64 " corruptions", res.corruptions);
	rc = qcow_close(img);
	STATE_CHECK(c, NULL, rc == 0, "read-write close fails", "qcow_close (read-write): %s",
	            strerror(-rc));

	/* After repair, probe and close: same list, the probe on top, snapshots intact. */
	if (!open_ro(c, state, &img, "after the read-write close"))
		return false;
	rc = read_list(img, c->names, g, &mask2, why, sizeof(why));
	STATE_CHECK(c, img, rc == 0 && mask2 == mask, "rw close changes the list",
	            "after the read-write close the image lists %#x, before %#x%s%s", mask2, mask,
	            *why ? ": " : "", why);
	rc = read_all(img, c->got2, g, &bad);
	STATE_CHECK(c, img, rc == 0, "qcow_read fails",
	            "after close: qcow_read(%" PRIu64 "): %s: %s", bad, strerror(-rc),
	            qcow_last_error(img));
	qcow_get_info(img, &info);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	STATE_EXPECT(c, rc == 0 && res.corruptions == 0 && !info.dirty, "corruption after rw close",
	             "qcow_check after the read-write close (dirty %d): %" PRIu64 " corruptions",
	             (int)info.dirty, res.corruptions);
	qcow_close(img);
	bad = first_diff(c->got, c->got2, g);
	STATE_CHECK(c, NULL, bad == g, "probe write disturbs data",
	            "after a probe write at %" PRIu64 "+%" PRIu64 ", guest byte %" PRIu64
	            " reads 0x%02x instead of 0x%02x",
	            poff, plen, bad, bad < g ? c->got2[bad] : 0, bad < g ? c->got[bad] : 0);
	/* Snapshots again (every other state: this is the costly part). */
	if (c->state_no % 2 == 0 &&
	    !judge_snapshots(c, state, mask, "after repair, probe write and close"))
		return false;

	if (sample && c->have_qemu &&
	    !qemu_check_file(c, state, "after our read-write open and close"))
		return false;
	return true;
}

/* ---- crash replay: enumerating states ----------------------------------- */

/* The snapshot operation whose events overlap [p, q), or -1. */
static int in_flight(const struct crash *c, size_t p, size_t q)
{
	int amb = -1;
	for (size_t j = 0; j < c->nsops; j++)
		if (c->sops[j].ev_start < q && c->sops[j].ev_end > p) {
			cr_assert_eq(amb, -1,
			             "test structure: two snapshot operations without a sync "
			             "between them (%zu and %zu)",
			             (size_t)amb, j);
			amb = (int)j;
		}
	return amb;
}

/* Builds and checks one state: base (events before p) + subset, one event torn. */
static void one_state(struct crash *c, const struct memfile *base, struct memfile *state,
                      unsigned *states, const char *shape)
{
	state_build(state, base, &c->rec, &c->st);
	c->state_no = *states;
	c->shape = shape;
	c->state_bad = false;
	/* BLOCKD_CRASH_SAVE=<state>:<path> writes that state out, for qemu-img and debugging. */
	const char *save = getenv("BLOCKD_CRASH_SAVE");
	char *colon = save ? strchr(save, ':') : NULL;
	if (colon && strtoul(save, NULL, 0) == *states) {
		int rc = mf_save(state, colon + 1);
		cr_assert_eq(rc, 0, "saving state %u to %s: %s", *states, colon + 1, strerror(-rc));
	}
	/* The op in flight is judged on the events that may be applied. */
	const struct crash_state *st = &c->st;
	size_t hi = st->nsubset ? st->subset[st->nsubset - 1] + 1 : st->durable;
	c->amb = in_flight(c, st->durable, hi > st->durable ? hi : st->durable);
	if (c->amb >= 0) {
		c->states_in_ops++;
		c->ops_seen[c->amb]++;
	}
	tu_watch("crash_snapshots[%s]: seed=0x%" PRIx64 ": checking state %u", c->cfg->name,
	         c->seed, *states);
	check_state(c, state, *states % c->cfg->qemu_every == 0,
	            st->durable == c->rec.nev && st->nsubset == 0);
	tu_unwatch();
	(*states)++;
}

static void run_crash(const struct crash_cfg *cfg)
{
	struct crash c = {.cfg = cfg};
	c.seed = tu_seed(cfg->seed);
	c.rng.s = c.seed;
	c.have_qemu = have_qemu_img();
	c.dir = crash_dir("crashsnap");
	make_names(c.names, cfg->name_len);
	gm_init(&c.model, cfg->guest_size);
	c.got = malloc(cfg->guest_size);
	c.got2 = malloc(cfg->guest_size);
	c.wbuf = malloc((cfg->max_write_clusters + 2) * cfg->cluster_size + 8192);
	cr_assert(c.got && c.got2 && c.wbuf && c.model.cur);

	run_script(&c);

	/* Sync points whose prefix holds the whole creation. */
	size_t nsync;
	size_t *syncs = sync_points(&c.rec, c.create_end, &nsync);
	size_t ncold = 0;
	for (size_t k = 0; k < nsync; k++)
		ncold += in_flight(&c, syncs[k], interval_end(&c.rec, syncs[k])) < 0;

	struct memfile base = {0}, state = {0};
	size_t applied = 0, cold_k = 0;
	struct crash_state *st = &c.st;
	st->subset = malloc((c.rec.nev + 1) * sizeof(*st->subset));
	cr_assert(st->subset);
	unsigned states = 0;
	for (size_t k = 0; k < nsync; k++) {
		size_t p = syncs[k], q = interval_end(&c.rec, p);
		for (; applied < p; applied++)
			apply_event(&base, &c.rec.ev[applied], c.rec.ev[applied].len);
		st->durable = p;
		st->max_events = q;
		bool hot = in_flight(&c, p, q) >= 0;
		unsigned variants;
		if (!hot) {
			/* Guest-only intervals: cold_states spread over them. */
			variants = (unsigned)((cold_k + 1) * cfg->cold_states / ncold -
			                      cold_k * cfg->cold_states / ncold);
			cold_k++;
			if (k + 1 == nsync && variants == 0)
				variants = 1; /* always the final state */
			for (unsigned v = 0; v < variants; v++) {
				if (v == 0 || q == p) {
					st->nsubset = 0;
					st->torn_ev = SIZE_MAX;
				} else {
					state_random_subset(st, &c.rng, &c.rec, p, q);
				}
				one_state(&c, &base, &state, &states,
				          st->nsubset ? "guest writes, torn subset" : "sync point");
			}
			continue;
		}
		/* The exact prefix, then every in-order prefix, whole and torn. */
		st->nsubset = 0;
		st->torn_ev = SIZE_MAX;
		one_state(&c, &base, &state, &states, "sync point in an operation");
		for (size_t i = p; i < q; i++) {
			st->subset[st->nsubset++] = i;
			st->torn_ev = SIZE_MAX;
			one_state(&c, &base, &state, &states, "in-order prefix");
			if (c.rec.ev[i].kind == EV_PWRITE && c.rec.ev[i].len >= 1024) {
				state_tear(st, &c.rng, &c.rec, i);
				one_state(&c, &base, &state, &states, "in-order prefix, last torn");
			}
		}
		if (q - p >= 2) {
			/* Only the last event (often the header), and all but it. */
			st->nsubset = 0;
			st->torn_ev = SIZE_MAX;
			st->subset[st->nsubset++] = q - 1;
			one_state(&c, &base, &state, &states, "only the last event");
			st->nsubset = 0;
			for (size_t i = p; i + 1 < q; i++)
				st->subset[st->nsubset++] = i;
			one_state(&c, &base, &state, &states, "all but the last event");
		}
		for (unsigned v = 0; q - p >= 2 && v < cfg->hot_subsets; v++) {
			state_random_subset(st, &c.rng, &c.rec, p, q);
			one_state(&c, &base, &state, &states, "torn random subset");
		}
	}

	fprintf(stderr,
	        "crash_snapshots[%s]: seed=0x%" PRIx64 ": %zu events, %zu sync points, %zu "
	        "snapshot operations, %u states (%u with an operation in flight), %u qemu-img "
	        "checks, file %" PRIu64 " bytes, %u states failed (%u failures)\n",
	        cfg->name, c.seed, c.rec.nev, nsync, c.nsops, states, c.states_in_ops,
	        c.qemu_checks, c.rec.live.size, c.bad_states, c.fails.count);
	for (size_t j = 0; j < c.nsops; j++) {
		char op[256];
		describe_sop(&c, (int)j, op, sizeof(op));
		fprintf(stderr, "crash_snapshots[%s]:   op %s: %u states, %u failed\n", cfg->name,
		        op, c.ops_seen[j], c.ops_failed[j]);
	}
	fprintf(stderr, "crash_snapshots[%s]:   no operation in flight: %u states failed\n",
	        cfg->name, c.other_failed);
	tally_print(&c.fails, "crash_snapshots");
	for (size_t j = 0; j < c.nsops; j++)
		cr_expect_gt(c.ops_seen[j], 0, "snapshot operation %zu was never interrupted", j);
	cr_expect_eq(c.fails.count, 0,
	             "%u of %u crash states failed (seed=0x%" PRIx64 "); first: %s", c.bad_states,
	             states, c.seed, c.fails.first);

	mf_free(&base);
	mf_free(&state);
	free(st->subset);
	free(syncs);
	free(c.got);
	free(c.got2);
	free(c.wbuf);
	for (size_t j = 0; j < c.nsops; j++)
		free(c.sops[j].saved);
	gm_free(&c.model);
	rec_free(&c.rec);
}

TestSuite(crash_snapshots, .fini = crash_dir_remove, .timeout = 300);

Test(crash_snapshots, cluster_64k)
{
	struct crash_cfg c = {.name = "64k",
	                      .cluster_size = 65536,
	                      .guest_size = 8 * MiB,
	                      .writes_per_phase = 12,
	                      .max_write_clusters = 3,
	                      .name_len = 1,
	                      .hot_subsets = scaled(12),
	                      .cold_states = scaled(40),
	                      .qemu_every = 8,
	                      .seed = 0x5aa90001};
	run_crash(&c);
}

Test(crash_snapshots, cluster_64k_lazy)
{
	struct crash_cfg c = {.name = "64k-lazy",
	                      .cluster_size = 65536,
	                      .lazy_refcounts = true,
	                      .guest_size = 8 * MiB,
	                      .writes_per_phase = 12,
	                      .max_write_clusters = 3,
	                      .name_len = 1,
	                      .hot_subsets = scaled(12),
	                      .cold_states = scaled(40),
	                      .qemu_every = 8,
	                      .seed = 0x5aa90002};
	run_crash(&c);
}

/*
 * 4 KiB clusters over 8 MiB: four L2 tables, and with 32-bit refcounts a
 * refcount block covers 4 MiB of file, and the file grows past it;
 * 1000-byte names make the snapshot table span two clusters once three
 * snapshots exist.
 */
Test(crash_snapshots, cluster_4k_long_names)
{
	struct crash_cfg c = {.name = "4k-rc32-long-names",
	                      .cluster_size = 4096,
	                      .refcount_bits = 32,
	                      .guest_size = 8 * MiB,
	                      .writes_per_phase = 40,
	                      .max_write_clusters = 24,
	                      .name_len = 1000,
	                      .hot_subsets = scaled(8),
	                      .cold_states = scaled(40),
	                      .qemu_every = 8,
	                      .seed = 0x5aa90003};
	run_crash(&c);
}

/* ---- faults: an I/O error at every write and sync of an operation ------ */

struct fault_cfg {
	const char *name;
	uint32_t cluster_size;
	bool lazy_refcounts;
	uint64_t guest_size;
	unsigned writes; /* guest writes between the prepared snapshots */
	size_t name_len;
	uint64_t seed;
};

/* Bytes some operation may have written over a base disk. */
struct overlay {
	uint64_t off, len;
	const uint8_t *data;
};

enum fault_op { FO_CREATE, FO_DELETE, FO_REVERT };

static const char *const fop_names[] = {"create 'c'", "delete 'a'", "revert 'a'"};

/* The prepared image: snapshots a and b, then more writes. */
struct fprep {
	const struct fault_cfg *cfg;
	char names[MAX_SNAPS][MAX_NAME + 1];
	struct memfile img;
	uint8_t *snap[2]; /* the disks a and b saved */
	uint8_t *active;  /* the active disk at the end */
	struct tu_rng rng;
	uint8_t *wbuf;
	/*
	 * Each run's buffers and files, allocated once: fresh ones every run
	 * cost more than the run under AddressSanitizer.
	 */
	uint8_t *post, *got, *snapc, *pdata, *xdata;
	struct memfile run_mf, copy;
	const char *dir;
	bool have_qemu;
	unsigned runs, qemu_checks;
	unsigned op_runs[3], op_failed[3]; /* runs with at least one failure, per operation */
	struct fail_tally fails;
};

/* The run being judged, for messages. */
struct frun {
	enum fault_op op;
	enum fault_on on;
	unsigned fail_at;
	int error;
	bool sticky, cont;
	int rc;
	bool failed; /* counted in fprep.op_failed */
};

__attribute__((format(printf, 4, 5))) static void
fault_failed(struct fprep *fp, struct frun *r, const char *kind, const char *fmt, ...)
{
	bool detail = tally_add(&fp->fails, kind);
	if (!r->failed) {
		r->failed = true;
		fp->op_failed[r->op]++;
	}
	if (!detail && fp->fails.count > 1)
		return;
	char msg[2048], where[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(where, sizeof(where),
	         "snapshot_faults[%s]: %s with %s on %s #%u of the call%s, call returned %d, "
	         "handle then %s (seed=0x%" PRIx64 ")",
	         fp->cfg->name, fop_names[r->op], r->error == -EIO ? "EIO" : "ENOSPC",
	         r->on == FAULT_PWRITE ? "pwrite" : "sync", r->fail_at,
	         r->sticky ? " and after" : " only", r->rc,
	         r->cont ? "written, flushed and closed" : "abandoned", fp->cfg->seed);
	if (detail)
		fprintf(stderr, "%s\n  FAILED (%s): %s\n", where, kind, msg);
	if (fp->fails.count == 1)
		snprintf(fp->fails.first, sizeof(fp->fails.first), "%s: %s: %s", where, kind, msg);
}

/* A random write inside the disk, at most two clusters; data in fp->wbuf. */
static void fault_range(struct fprep *fp, uint64_t *off, uint64_t *len)
{
	uint64_t g = fp->cfg->guest_size, cs = fp->cfg->cluster_size;
	*off = tu_below(&fp->rng, g / 512) * 512 + (tu_below(&fp->rng, 2) ? 0 : 100);
	*len = tu_range(&fp->rng, 1, 2 * cs);
	if (*off >= g)
		*off = g - 1;
	if (*len > g - *off)
		*len = g - *off;
	tu_fill(&fp->rng, fp->wbuf, *len);
}

static void prep_writes(struct fprep *fp, struct qcow_image *img)
{
	for (unsigned i = 0; i < fp->cfg->writes; i++) {
		uint64_t off, len;
		fault_range(fp, &off, &len);
		int rc = qcow_write(img, fp->wbuf, off, len);
		cr_assert_eq(rc, 0, "preparing: qcow_write: %s", qcow_last_error(img));
		memcpy(fp->active + off, fp->wbuf, len);
	}
	int rc = qcow_flush(img);
	cr_assert_eq(rc, 0, "preparing: qcow_flush: %s", qcow_last_error(img));
}

static void prepare(struct fprep *fp)
{
	const struct fault_cfg *cfg = fp->cfg;
	char err[512] = "";
	struct qcow_create_opts co = {.path = "faulted.qcow2",
	                              .ops = &memfile_ops,
	                              .ctx = &fp->img,
	                              .size_bytes = cfg->guest_size,
	                              .cluster_size = cfg->cluster_size,
	                              .lazy_refcounts = cfg->lazy_refcounts};
	int rc = qcow_create(&co, err, sizeof(err));
	cr_assert_eq(rc, 0, "qcow_create: %s", err);
	struct qcow_open_opts oo = {.path = "faulted.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = &fp->img,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	struct qcow_image *img;
	rc = qcow_open(&oo, &img, err, sizeof(err));
	cr_assert_eq(rc, 0, "qcow_open: %s", err);
	for (int s = 0; s < 2; s++) {
		prep_writes(fp, img);
		rc = qcow_snapshot_create(img, fp->names[s]);
		cr_assert_eq(rc, 0, "preparing: create '%c': %s", 'a' + s, qcow_last_error(img));
		fp->snap[s] = malloc(cfg->guest_size);
		cr_assert(fp->snap[s]);
		memcpy(fp->snap[s], fp->active, cfg->guest_size);
	}
	prep_writes(fp, img);
	rc = qcow_close(img);
	cr_assert_eq(rc, 0, "preparing: close: %s", strerror(-rc));
}

/* First byte of got that is neither base nor, where one covers it, an overlay's. */
static uint64_t overlay_diff(const uint8_t *got, const uint8_t *base, const struct overlay *ov,
                             int nov, uint64_t size)
{
	const uint64_t blk = 4096; /* blocks equal to base are skipped whole */
	for (uint64_t o = 0; o < size; o += blk) {
		uint64_t n = size - o < blk ? size - o : blk;
		if (!memcmp(got + o, base + o, n))
			continue;
		for (uint64_t b = o; b < o + n; b++) {
			if (got[b] == base[b])
				continue;
			bool ok = false;
			for (int k = 0; k < nov && !ok; k++)
				ok = b >= ov[k].off && b - ov[k].off < ov[k].len &&
				     ov[k].data[b - ov[k].off] == got[b];
			if (!ok)
				return b;
		}
	}
	return size;
}

static void run_fault(struct fprep *fp, struct frun *r, bool *fired)
{
	const struct fault_cfg *cfg = fp->cfg;
	uint64_t g = cfg->guest_size;
	struct faulty f = {.mf = fp->run_mf,
	                   .on = r->on,
	                   .fail_at = r->fail_at,
	                   .error = r->error,
	                   .sticky = r->sticky};
	struct memfile *copy = &fp->copy;
	struct qcow_image *img = NULL;
	char err[512] = "", why[512] = "";
	uint8_t *post = fp->post, *got = fp->got, *snapc = fp->snapc;
	uint8_t *pdata = fp->pdata, *xdata = fp->xdata;
	cr_assert_eq(mf_copy(&f.mf, &fp->img), 0);
	fp->runs++;
	fp->op_runs[r->op]++;
	tu_watch("snapshot_faults[%s]: %s, fault on %s #%u", cfg->name, fop_names[r->op],
	         r->on == FAULT_PWRITE ? "pwrite" : "sync", r->fail_at);

	struct qcow_open_opts oo = {.path = "faulted.qcow2",
	                            .ops = &faulty_ops,
	                            .ctx = &f,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	int rc = qcow_open(&oo, &img, err, sizeof(err));
	cr_assert_eq(rc, 0, "qcow_open before the fault: %s", err);

	/* An unflushed write: the operation's own flush makes it durable. */
	uint64_t poff, plen;
	fault_range(fp, &poff, &plen);
	memcpy(pdata, fp->wbuf, plen);
	rc = qcow_write(img, pdata, poff, plen);
	cr_assert_eq(rc, 0, "the pending write: %s", qcow_last_error(img));
	memcpy(snapc, fp->active, g);
	memcpy(snapc + poff, pdata, plen);

	unsigned before = 3, after; /* {a, b} */
	const char *name;
	f.armed = true;
	switch (r->op) {
	case FO_CREATE:
		name = fp->names[2];
		after = 7;
		memcpy(post, snapc, g);
		rc = qcow_snapshot_create(img, name);
		break;
	case FO_DELETE:
		name = fp->names[0];
		after = 2;
		memcpy(post, snapc, g);
		rc = qcow_snapshot_delete(img, name);
		break;
	default:
		name = fp->names[0];
		after = 3;
		memcpy(post, fp->snap[0], g);
		rc = qcow_snapshot_revert(img, name);
		break;
	}
	f.armed = false;
	r->rc = rc;
	*fired = f.fired > 0;
	F_EXPECT(fp, r, f.fired || rc == 0, "error without a fault",
	         "the call failed with no fault injected: %d %s", rc, qcow_last_error(img));
	F_EXPECT(fp, r, !f.fired || (rc < 0 && rc > -4096), "fault not reported",
	         "an injected %s failed but the call returned %d",
	         r->on == FAULT_PWRITE ? "pwrite" : "sync", rc);
	F_EXPECT(fp, r, rc == 0 || *qcow_last_error(img), "no error message",
	         "the call failed with %d but qcow_last_error() is empty", rc);

	/* The handle's list: old or new, never half. */
	unsigned hmask = 0;
	int lrc = read_list(img, fp->names, g, &hmask, why, sizeof(why));
	F_EXPECT(fp, r, lrc == 0 && (hmask == before || hmask == after), "handle list half",
	         "after the call the handle lists %#x (old %#x, new %#x)%s%s", hmask, before, after,
	         *why ? ": " : "", why);

	/* Abandon the handle, or go on using it (with the fault still armed if sticky). */
	uint64_t xoff = 0, xlen = 0;
	int wrc = -1, frc = -1;
	if (r->cont) {
		fault_range(fp, &xoff, &xlen);
		memcpy(xdata, fp->wbuf, xlen);
		f.armed = r->sticky;
		wrc = qcow_write(img, xdata, xoff, xlen);
		frc = qcow_flush(img);
		int crc = qcow_close(img);
		f.armed = false;
		F_EXPECT(fp, r, !(frc == 0 && crc != 0 && !r->sticky), "close fails after flush",
		         "qcow_flush succeeded but qcow_close then failed: %d", crc);
	} else {
		qcow_abandon(img);
	}
	img = NULL;

	/* The file as left: read-only first. */
	cr_assert_eq(mf_copy(copy, &f.mf), 0);
	struct qcow_open_opts ro = {.path = "faulted.qcow2",
	                            .ops = &ro_ops,
	                            .ctx = copy,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	g_ro_writes = 0;
	rc = qcow_open(&ro, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	F_CHECK(fp, r, rc == 0, "read-only reopen fails", "read-only reopen: %s: %s", strerror(-rc),
	        err);
	struct qcow_info info;
	struct qcow_check_result res;
	qcow_get_info(img, &info);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	F_EXPECT(fp, r, rc == 0 && (info.dirty || res.corruptions == 0), "qcow_check: corruption",
	         "qcow_check of the faulted file (rc %d, dirty %d): %" PRIu64
	         " corruptions, %" PRIu64 " leaks",
	         rc, (int)info.dirty, res.corruptions, res.leaks);
	unsigned mask = 0;
	rc = read_list(img, fp->names, g, &mask, why, sizeof(why));
	F_CHECK(fp, r, rc == 0, "bad snapshot list", "%s", why);
	F_CHECK(fp, r, mask == after || (r->rc != 0 && mask == before), "wrong snapshot list",
	        "the file lists %#x; old %#x, new %#x, the call returned %d", mask, before, after,
	        r->rc);
	F_CHECK(fp, r, !(r->cont && wrc == 0 && frc == 0) || mask == hmask,
	        "flushed handle disagrees with the file",
	        "a later write and flush on the handle succeeded, the handle lists %#x, the file "
	        "%#x",
	        hmask, mask);
	uint64_t bad = 0;
	rc = read_all(img, got, g, &bad);
	F_CHECK(fp, r, rc == 0, "read fails", "qcow_read(%" PRIu64 "): %s: %s", bad, strerror(-rc),
	        qcow_last_error(img));
	rc = qcow_close(img);
	img = NULL;
	F_CHECK(fp, r, rc == 0 && g_ro_writes == 0, "read-only open writes",
	        "read-only close returned %d after %u writes", rc, g_ro_writes);

	/* The active disk: whole before or after (unflushed writes old or new bytes). */
	struct overlay pre_ov[2] = {{poff, plen, pdata}, {xoff, xlen, xdata}};
	struct overlay post_ov[1] = {{xoff, xlen, xdata}};
	uint64_t bpost = overlay_diff(got, post, post_ov, 1, g);
	uint64_t bpre = r->rc ? overlay_diff(got, fp->active, pre_ov, 2, g) : 0;
	F_CHECK(fp, r, bpost == g || bpre == g,
	        r->op == FO_REVERT ? "revert not whole" : "wrong active data",
	        "the active disk is neither the one after the call (byte %" PRIu64
	        " reads 0x%02x, not 0x%02x) nor the one before (byte %" PRIu64 ")",
	        bpost, bpost < g ? got[bpost] : 0, bpost < g ? post[bpost] : 0, bpre);
	if (r->cont && wrc == 0 && frc == 0)
		F_CHECK(fp, r, memcmp(got + xoff, xdata, xlen) == 0, "flushed write lost",
		        "a write at %" PRIu64 "+%" PRIu64 " flushed after the failed call is gone",
		        xoff, xlen);

	/* Each snapshot present reads exactly what it saved. */
	for (int s = 0; s < 3; s++) {
		if (!(mask & (1u << s)))
			continue;
		const uint8_t *want = s < 2 ? fp->snap[s] : snapc;
		rc = read_snapshot(copy, fp->names[s], got, g, why, sizeof(why));
		F_CHECK(fp, r, rc == 0, "snapshot view fails", "%s", why);
		bad = first_diff(want, got, g);
		F_CHECK(fp, r, bad == g, "snapshot reads wrong data",
		        "snapshot '%c' byte %" PRIu64 " reads 0x%02x, saved 0x%02x", 'a' + s, bad,
		        got[bad], want[bad]);
	}

	if (fp->have_qemu && fp->runs % 8 == 0 && !info.dirty) {
		char msg[4096];
		int st = qemu_img_check_mf(copy, fp->dir, "faulted.qcow2", msg, sizeof(msg));
		fp->qemu_checks++;
		F_CHECK(fp, r, st == 0 || st == 3, "qemu-img check: corruption",
		        "qemu-img check exited %d:\n%s", st, msg);
	}

	/* Read-write: repairs; check and list again. */
	struct qcow_open_opts rw = {.path = "faulted.qcow2",
	                            .ops = &memfile_ops,
	                            .ctx = copy,
	                            .flags = QCOW_OPEN_RDWR,
	                            .l2_cache_bytes = TEST_CACHE_BYTES,
	                            .refcount_cache_bytes = TEST_CACHE_BYTES};
	rc = qcow_open(&rw, &img, err, sizeof(err));
	if (rc)
		img = NULL;
	F_CHECK(fp, r, rc == 0, "read-write reopen fails", "read-write reopen: %s: %s",
	        strerror(-rc), err);
	memset(&res, 0xff, sizeof(res));
	rc = qcow_check(img, 0, &res);
	F_EXPECT(fp, r, rc == 0 && res.corruptions == 0, "qcow_check after rw open: corruption",
	         "qcow_check after a read-write reopen: rc %d, %" PRIu64 " corruptions", rc,
	         res.corruptions);
	unsigned mask2 = 0;
	rc = read_list(img, fp->names, g, &mask2, why, sizeof(why));
	F_CHECK(fp, r, rc == 0 && mask2 == mask, "rw open changes the list",
	        "read-write reopen lists %#x, read-only %#x", mask2, mask);
	rc = qcow_close(img);
	img = NULL;
	F_CHECK(fp, r, rc == 0, "close after reopen fails", "qcow_close after the reopen: %s",
	        strerror(-rc));
out:
	tu_unwatch();
	if (img)
		qcow_abandon(img);
	fp->run_mf = f.mf; /* its memory, for the next run */
}

static void run_faults(const struct fault_cfg *cfg)
{
	struct fprep fp = {.cfg = cfg};
	fp.rng.s = tu_seed(cfg->seed);
	make_names(fp.names, cfg->name_len);
	fp.active = calloc(1, cfg->guest_size);
	fp.wbuf = malloc(2 * cfg->cluster_size);
	fp.post = malloc(cfg->guest_size);
	fp.got = malloc(cfg->guest_size);
	fp.snapc = malloc(cfg->guest_size);
	fp.pdata = malloc(2 * cfg->cluster_size);
	fp.xdata = malloc(2 * cfg->cluster_size);
	cr_assert(fp.active && fp.wbuf && fp.post && fp.got && fp.snapc && fp.pdata && fp.xdata);
	fp.have_qemu = have_qemu_img();
	fp.dir = crash_dir("snapfault");
	prepare(&fp);

	static const struct {
		enum fault_on on;
		int error;
		bool sticky;
	} kinds[] = {
	    {FAULT_PWRITE, -EIO, false},
	    {FAULT_SYNC, -EIO, false},
	    {FAULT_PWRITE, -ENOSPC, true},
	    {FAULT_SYNC, -EIO, true},
	};
	for (int op = FO_CREATE; op <= FO_REVERT; op++)
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			unsigned n = 1;
			for (;; n++) {
				cr_assert_lt(n, 100000, "the call never stops writing");
				struct frun r = {.op = (enum fault_op)op,
				                 .on = kinds[k].on,
				                 .fail_at = n,
				                 .error = kinds[k].error,
				                 .sticky = kinds[k].sticky,
				                 .cont = n % 2 == 0};
				bool fired = false;
				run_fault(&fp, &r, &fired);
				if (!fired)
					break;
			}
			fprintf(stderr, "snapshot_faults[%s]: %s: %u %ss, each failed in turn%s\n",
			        cfg->name, fop_names[op], n - 1,
			        kinds[k].on == FAULT_PWRITE ? "pwrite" : "sync",
			        kinds[k].sticky ? " (and every later one)" : "");
			cr_expect_gt(n, 1, "%s made no %s at all", fop_names[op],
			             kinds[k].on == FAULT_PWRITE ? "pwrite" : "sync");
		}
	fprintf(stderr, "snapshot_faults[%s]: %u runs, %u qemu-img checks, %u failures\n",
	        cfg->name, fp.runs, fp.qemu_checks, fp.fails.count);
	for (int op = FO_CREATE; op <= FO_REVERT; op++)
		fprintf(stderr, "snapshot_faults[%s]:   %s: %u of %u runs failed\n", cfg->name,
		        fop_names[op], fp.op_failed[op], fp.op_runs[op]);
	tally_print(&fp.fails, "snapshot_faults");
	cr_expect_eq(fp.fails.count, 0, "%u failures in %u faulted runs; first: %s", fp.fails.count,
	             fp.runs, fp.fails.first);
	mf_free(&fp.img);
	mf_free(&fp.run_mf);
	mf_free(&fp.copy);
	free(fp.snap[0]);
	free(fp.snap[1]);
	free(fp.active);
	free(fp.wbuf);
	free(fp.post);
	free(fp.got);
	free(fp.snapc);
	free(fp.pdata);
	free(fp.xdata);
}

TestSuite(snapshot_faults, .fini = crash_dir_remove, .timeout = 300);

Test(snapshot_faults, cluster_64k)
{
	struct fault_cfg c = {.name = "64k",
	                      .cluster_size = 65536,
	                      .guest_size = 8 * MiB,
	                      .writes = 20,
	                      .name_len = 1,
	                      .seed = 0x5aaf0001};
	run_faults(&c);
}

Test(snapshot_faults, cluster_4k_lazy_long_names)
{
	struct fault_cfg c = {.name = "4k-lazy-long-names",
	                      .cluster_size = 4096,
	                      .lazy_refcounts = true,
	                      .guest_size = 16 * MiB,
	                      .writes = 150,
	                      .name_len = 1000,
	                      .seed = 0x5aaf0002};
	run_faults(&c);
}
