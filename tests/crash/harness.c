/* SPDX-License-Identifier: MIT */
/*
 * harness.c - the crash tests' shared harness (see harness.h): in-memory
 * files, the guest model, the recorder and crash states, read-only and
 * faulty ops, failure tallies and small helpers.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- memfile ------------------------------------------------------------ */

static int mf_reserve(struct memfile *mf, uint64_t need)
{
	if (need <= mf->cap)
		return 0;
	if (need > (1ull << 34))
		return -EFBIG; /* a test image never grows this big */
	uint64_t cap = mf->cap ? mf->cap : (1u << 20);
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(mf->data, cap);
	if (!p)
		return -ENOMEM;
	mf->data = p;
	mf->cap = cap;
	return 0;
}

static int mf_set_size(struct memfile *mf, uint64_t size)
{
	if (size > mf->size) {
		int rc = mf_reserve(mf, size);
		if (rc)
			return rc;
		memset(mf->data + mf->size, 0, size - mf->size);
	}
	mf->size = size;
	return 0;
}

int mf_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct memfile *mf = ctx;
	uint8_t *b = buf;
	size_t have = 0;
	if (off < mf->size)
		have = mf->size - off < len ? (size_t)(mf->size - off) : len;
	if (have)
		memcpy(b, mf->data + off, have);
	memset(b + have, 0, len - have);
	return 0;
}

int mf_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct memfile *mf = ctx;
	uint64_t end;
	if (__builtin_add_overflow(off, (uint64_t)len, &end))
		return -EFBIG;
	if (end > mf->size) {
		int rc = mf_set_size(mf, end);
		if (rc)
			return rc;
	}
	memcpy(mf->data + off, buf, len);
	return 0;
}

int mf_sync(void *ctx)
{
	(void)ctx;
	return 0;
}

int mf_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct memfile *mf = ctx;
	if (off >= mf->size)
		return 0;
	if (len > mf->size - off)
		len = mf->size - off;
	memset(mf->data + off, 0, len);
	return 0;
}

int mf_truncate(void *ctx, uint64_t size)
{
	return mf_set_size(ctx, size);
}

int mf_get_size(void *ctx, uint64_t *size)
{
	*size = ((struct memfile *)ctx)->size;
	return 0;
}

void mf_close(void *ctx)
{
	(void)ctx;
}

const struct qcow_io_ops memfile_ops = {
    .pread = mf_pread,
    .pwrite = mf_pwrite,
    .sync = mf_sync,
    .punch_hole = mf_punch_hole,
    .truncate = mf_truncate,
    .get_size = mf_get_size,
    .close = mf_close,
};

int mf_copy(struct memfile *dst, const struct memfile *src)
{
	int rc = mf_reserve(dst, src->size);
	if (rc)
		return rc;
	if (src->size)
		memcpy(dst->data, src->data, src->size);
	dst->size = src->size;
	return 0;
}

void mf_free(struct memfile *mf)
{
	free(mf->data);
	*mf = (struct memfile){0};
}

int mf_save(const struct memfile *mf, const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	size_t n = mf->size ? fwrite(mf->data, 1, mf->size, f) : 0;
	int rc = (n == mf->size) ? 0 : -EIO;
	if (fclose(f))
		rc = -EIO;
	return rc;
}

/* ---- guest model -------------------------------------------------------- */

void gm_init(struct gmodel *m, uint64_t size)
{
	*m = (struct gmodel){.size = size};
	m->cur = calloc(1, size);
}

void gm_free(struct gmodel *m)
{
	for (size_t i = 0; i < m->nops; i++)
		free(m->ops[i].data);
	free(m->ops);
	free(m->flushes);
	free(m->cur);
	*m = (struct gmodel){0};
}

struct gop *gm_add(struct gmodel *m, enum gop_kind kind, uint64_t off, uint64_t len,
                   const void *data, size_t ev_start)
{
	if (m->nops == m->cap_ops) {
		m->cap_ops = m->cap_ops ? m->cap_ops * 2 : 256;
		m->ops = realloc(m->ops, m->cap_ops * sizeof(*m->ops));
		if (!m->ops)
			abort();
	}
	struct gop *g = &m->ops[m->nops++];
	*g = (struct gop){.kind = kind, .off = off, .len = len, .ev_start = ev_start};
	if (data && len) {
		g->data = malloc(len);
		if (!g->data)
			abort();
		memcpy(g->data, data, len);
	}
	return g;
}

struct gop *gm_record(struct gmodel *m, enum gop_kind kind, uint64_t off, uint64_t len,
                      const void *data, size_t ev_start, uint64_t cluster_size)
{
	if (kind == GOP_DISCARD) {
		uint64_t cs = cluster_size;
		uint64_t s = (off + cs - 1) / cs * cs, e = (off + len) / cs * cs;
		return gm_add(m, GOP_DISCARD, s, e > s ? e - s : 0, NULL, ev_start);
	}
	return gm_add(m, kind, off, len, kind == GOP_WRITE ? data : NULL, ev_start);
}

void gm_flushed(struct gmodel *m, size_t ev_end)
{
	if (m->nflushes == m->cap_flushes) {
		m->cap_flushes = m->cap_flushes ? m->cap_flushes * 2 : 64;
		m->flushes = realloc(m->flushes, m->cap_flushes * sizeof(*m->flushes));
		if (!m->flushes)
			abort();
	}
	m->flushes[m->nflushes++] = (struct gflush){.ev_end = ev_end, .nops = m->nops};
}

static void gm_apply(struct gmodel *m, const struct gop *g)
{
	if (g->failed || !g->len)
		return;
	if (g->kind == GOP_WRITE)
		memcpy(m->cur + g->off, g->data, g->len);
	else
		memset(m->cur + g->off, 0, g->len);
}

void gm_advance(struct gmodel *m, size_t nops)
{
	if (nops < m->applied) {
		memset(m->cur, 0, m->size);
		m->applied = 0;
	}
	for (; m->applied < nops; m->applied++)
		gm_apply(m, &m->ops[m->applied]);
}

size_t gm_durable_ops(const struct gmodel *m, size_t durable)
{
	size_t n = 0;
	for (size_t i = 0; i < m->nflushes; i++)
		if (m->flushes[i].ev_end <= durable)
			n = m->flushes[i].nops;
	return n;
}

static bool gm_op_value(const struct gop *g, uint64_t b, uint8_t *v)
{
	if (!g->len || b < g->off || b >= g->off + g->len)
		return false;
	*v = g->kind == GOP_WRITE ? g->data[b - g->off] : 0;
	return true;
}

struct gm_verdict gm_judge(struct gmodel *m, const uint8_t *got, size_t durable, size_t max_events)
{
	struct gm_verdict v = {.ok = true};
	size_t nd = gm_durable_ops(m, durable);
	gm_advance(m, nd);
	v.durable_ops = nd;
	size_t *cand = malloc((m->nops + 1) * sizeof(*cand)), nc = 0;
	if (!cand)
		abort();
	for (size_t j = 0; j < m->nops; j++)
		if (m->ops[j].failed || (j >= nd && m->ops[j].ev_start < max_events))
			cand[nc++] = j;
	v.candidates = nc;
	const size_t blk = 512;
	for (uint64_t o = 0; o < m->size && v.ok; o += blk) {
		size_t n = m->size - o < blk ? (size_t)(m->size - o) : blk;
		if (!memcmp(m->cur + o, got + o, n))
			continue;
		for (uint64_t b = o; b < o + n; b++) {
			if (m->cur[b] == got[b])
				continue;
			bool match = false;
			for (size_t k = 0; k < nc && !match; k++) {
				uint8_t val;
				if (gm_op_value(&m->ops[cand[k]], b, &val) && val == got[b])
					match = true;
			}
			if (!match) {
				v.ok = false;
				v.bad_off = b;
				v.expected = m->cur[b];
				v.got = got[b];
				break;
			}
		}
	}
	free(cand);
	return v;
}

void gm_explain(const struct gmodel *m, uint64_t b)
{
	static const char *const names[] = {"write", "write_zeroes", "discard"};
	for (size_t j = 0; j < m->nops; j++) {
		const struct gop *g = &m->ops[j];
		if (!g->len || b < g->off || b >= g->off + g->len)
			continue;
		uint8_t val = g->kind == GOP_WRITE ? g->data[b - g->off] : 0;
		fprintf(stderr,
		        "  op %zu %s off=%" PRIu64 " len=%" PRIu64
		        " value=0x%02x events [%zu,%zu)%s\n",
		        j, names[g->kind], g->off, g->len, val, g->ev_start, g->ev_end,
		        g->failed ? " FAILED" : "");
	}
	for (size_t i = 0; i < m->nflushes; i++)
		fprintf(stderr, "  flush %zu: after op %zu, events %zu\n", i, m->flushes[i].nops,
		        m->flushes[i].ev_end);
}

/* ---- guest operations --------------------------------------------------- */

const char *const gop_calls[] = {"qcow_write", "qcow_write_zeroes", "qcow_discard"};

int gop_run(struct qcow_image *img, enum gop_kind kind, uint64_t off, uint64_t len,
            const void *data, unsigned zflags)
{
	switch (kind) {
	case GOP_WRITE:
		return qcow_write(img, data, off, len);
	case GOP_ZERO:
		return qcow_write_zeroes(img, off, len, zflags);
	case GOP_DISCARD:
		return qcow_discard(img, off, len);
	}
	return -EINVAL;
}

/* ---- recorder ----------------------------------------------------------- */

const char *const ev_names[] = {"pwrite", "punch_hole", "truncate", "sync"};

static struct event *rec_add(struct recorder *r, enum ev_kind kind, uint64_t off, uint64_t len)
{
	if (r->nev == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 1024;
		r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
		if (!r->ev)
			abort();
	}
	struct event *e = &r->ev[r->nev++];
	*e = (struct event){.kind = kind, .off = off, .len = len};
	return e;
}

static int rec_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	return mf_pread(&((struct recorder *)ctx)->live, buf, len, off);
}

static int rec_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct recorder *r = ctx;
	int rc = mf_pwrite(&r->live, buf, len, off);
	if (rc)
		return rc;
	struct event *e = rec_add(r, EV_PWRITE, off, len);
	e->data = malloc(len ? len : 1);
	if (!e->data)
		abort();
	memcpy(e->data, buf, len);
	return 0;
}

static int rec_sync(void *ctx)
{
	rec_add(ctx, EV_SYNC, 0, 0);
	return 0;
}

static int rec_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct recorder *r = ctx;
	rec_add(r, EV_PUNCH, off, len);
	return mf_punch_hole(&r->live, off, len);
}

static int rec_truncate(void *ctx, uint64_t size)
{
	struct recorder *r = ctx;
	rec_add(r, EV_TRUNCATE, size, 0);
	return mf_truncate(&r->live, size);
}

static int rec_get_size(void *ctx, uint64_t *size)
{
	return mf_get_size(&((struct recorder *)ctx)->live, size);
}

const struct qcow_io_ops rec_ops = {
    .pread = rec_pread,
    .pwrite = rec_pwrite,
    .sync = rec_sync,
    .punch_hole = rec_punch_hole,
    .truncate = rec_truncate,
    .get_size = rec_get_size,
    .close = mf_close,
};

void rec_free(struct recorder *r)
{
	for (size_t i = 0; i < r->nev; i++)
		free(r->ev[i].data);
	free(r->ev);
	mf_free(&r->live);
}

void apply_event(struct memfile *mf, const struct event *e, uint64_t len)
{
	int rc = 0;
	switch (e->kind) {
	case EV_PWRITE:
		if (len)
			rc = mf_pwrite(mf, e->data, len, e->off);
		break;
	case EV_PUNCH:
		rc = mf_punch_hole(mf, e->off, e->len);
		break;
	case EV_TRUNCATE:
		rc = mf_truncate(mf, e->off);
		break;
	case EV_SYNC:
		break;
	}
	cr_assert_eq(rc, 0, "replaying an event: %s", strerror(-rc));
}

void rec_create(struct recorder *r, uint64_t size, uint32_t cluster_size, unsigned refcount_bits,
                bool lazy_refcounts)
{
	char err[512] = "";
	struct qcow_create_opts co = {
	    .path = "crash.qcow2",
	    .ops = &rec_ops,
	    .ctx = r,
	    .size_bytes = size,
	    .cluster_size = cluster_size,
	    .refcount_bits = refcount_bits,
	    .lazy_refcounts = lazy_refcounts,
	};
	int rc = qcow_create(&co, err, sizeof(err));
	cr_assert_eq(rc, 0, "qcow_create on the recorder: %s: %s", strerror(-rc), err);
}

struct qcow_image *rec_open(struct recorder *r, uint64_t cache_bytes, uint64_t seed)
{
	char err[512] = "";
	struct qcow_open_opts o = {.path = "crash.qcow2",
	                           .ops = &rec_ops,
	                           .ctx = r,
	                           .flags = QCOW_OPEN_RDWR,
	                           .l2_cache_bytes = cache_bytes,
	                           .refcount_cache_bytes = cache_bytes};
	struct qcow_image *img;
	int rc = qcow_open(&o, &img, err, sizeof(err));
	cr_assert_eq(rc, 0, "qcow_open on the recorder: %s: %s (seed=0x%" PRIx64 ")", strerror(-rc),
	             err, seed);
	return img;
}

struct gop *guest_op(struct qcow_image *img, struct gmodel *m, const struct recorder *r,
                     enum gop_kind kind, uint64_t off, uint64_t len, const void *data,
                     unsigned zflags, uint64_t cluster_size)
{
	size_t ev_start = r->nev;
	int rc = gop_run(img, kind, off, len, data, zflags);
	cr_assert_eq(rc, 0, "%s(%" PRIu64 ", %" PRIu64 "): %s: %s", gop_calls[kind], off, len,
	             strerror(-rc), qcow_last_error(img));
	struct gop *g = gm_record(m, kind, off, len, data, ev_start, cluster_size);
	g->ev_end = r->nev;
	return g;
}

void pick_range(struct tu_rng *rng, uint64_t cs, uint64_t g, uint64_t maxc, bool cross,
                uint64_t *off, uint64_t *len)
{
	/* Without `cross`, the draw picks among the other three shapes. */
	unsigned shape = (unsigned)tu_below(rng, cross ? 4 : 3);
	if (!cross && shape > 0)
		shape++;
	uint64_t o, l;
	switch (shape) {
	case 0:
		o = tu_below(rng, g);
		l = tu_range(rng, 1, 4096);
		break;
	case 1: {
		uint64_t b = tu_range(rng, 1, g / cs - 1) * cs;
		o = b - tu_range(rng, 1, cs < 8192 ? cs : 8192);
		l = (b - o) + tu_range(rng, 1, cs < 8192 ? cs : 8192);
		break;
	}
	case 2:
		o = tu_below(rng, g / cs) * cs;
		l = cs * tu_range(rng, 1, maxc);
		break;
	default:
		o = tu_below(rng, g / 512) * 512;
		l = 512 * tu_range(rng, 1, maxc * cs / 512);
		break;
	}
	if (l > g - o)
		l = g - o;
	*off = o;
	*len = l;
}

void probe_range(struct tu_rng *rng, uint64_t cs, uint64_t g, uint8_t *buf, uint64_t *off,
                 uint64_t *len)
{
	uint64_t o = tu_below(rng, g / cs) * cs + tu_below(rng, 512);
	uint64_t l = cs + tu_range(rng, 1, cs);
	if (l > g - o)
		l = g - o;
	tu_fill(rng, buf, l);
	*off = o;
	*len = l;
}

/* ---- crash states ------------------------------------------------------- */

size_t *sync_points(const struct recorder *r, size_t create_end, size_t *n)
{
	size_t nsync = 0;
	size_t *syncs = malloc((r->nev + 1) * sizeof(*syncs));
	cr_assert(syncs);
	for (size_t i = 0; i < r->nev; i++)
		if (r->ev[i].kind == EV_SYNC && i + 1 >= create_end)
			syncs[nsync++] = i + 1;
	if (nsync == 0 || syncs[nsync - 1] != r->nev)
		syncs[nsync++] = r->nev; /* everything, as left at the end */
	*n = nsync;
	return syncs;
}

size_t interval_end(const struct recorder *r, size_t p)
{
	size_t q = p;
	while (q < r->nev && r->ev[q].kind != EV_SYNC)
		q++;
	return q;
}

void state_tear(struct crash_state *st, struct tu_rng *rng, const struct recorder *r, size_t i)
{
	const struct event *e = &r->ev[i];
	st->torn_ev = i;
	st->torn_len = e->len >= 1024 ? 512 * tu_below(rng, e->len / 512) : 0;
}

void state_random_subset(struct crash_state *st, struct tu_rng *rng, const struct recorder *r,
                         size_t p, size_t q)
{
	st->nsubset = 0;
	st->torn_ev = SIZE_MAX;
	st->torn_len = 0;
	size_t writes = 0;
	for (size_t i = p; i < q; i++)
		if (tu_below(rng, 2)) {
			st->subset[st->nsubset++] = i;
			writes += r->ev[i].kind == EV_PWRITE;
		}
	if (!writes)
		return;
	size_t t = tu_below(rng, writes);
	for (size_t i = 0; i < st->nsubset; i++)
		if (r->ev[st->subset[i]].kind == EV_PWRITE && t-- == 0) {
			state_tear(st, rng, r, st->subset[i]);
			break;
		}
}

void state_build(struct memfile *state, const struct memfile *base, const struct recorder *r,
                 const struct crash_state *st)
{
	int rc = mf_copy(state, base);
	cr_assert_eq(rc, 0);
	for (size_t i = 0; i < st->nsubset; i++) {
		const struct event *e = &r->ev[st->subset[i]];
		apply_event(state, e, st->subset[i] == st->torn_ev ? st->torn_len : e->len);
	}
}

void state_describe(const struct crash_state *st, const struct recorder *r, const struct gmodel *m,
                    uint64_t seed, void (*more)(const void *ctx, size_t i), const void *ctx)
{
	for (size_t i = 0; i < st->nsubset; i++) {
		const struct event *e = &r->ev[st->subset[i]];
		fprintf(stderr, "  + event %zu %s off=%" PRIu64 " len=%" PRIu64 "%s\n",
		        st->subset[i], ev_names[e->kind], e->off, e->len,
		        st->subset[i] == st->torn_ev ? " (torn)" : "");
		if (st->subset[i] == st->torn_ev)
			fprintf(stderr, "    torn after %" PRIu64 " bytes\n", st->torn_len);
	}
	fprintf(stderr, "  reproduce: BLOCKD_TEST_SEED=0x%" PRIx64 "\n", seed);
	if (!getenv("BLOCKD_CRASH_EVENTS"))
		return;
	/* The whole log up to the state, with the guest operations. */
	size_t op = 0;
	for (size_t i = 0; i < st->max_events && i < r->nev; i++) {
		if (more)
			more(ctx, i);
		for (; op < m->nops && m->ops[op].ev_start == i; op++)
			fprintf(stderr,
			        "  -- guest op %zu: kind %d off=%" PRIu64 " len=%" PRIu64 "\n", op,
			        (int)m->ops[op].kind, m->ops[op].off, m->ops[op].len);
		for (size_t f = 0; f < m->nflushes; f++)
			if (m->flushes[f].ev_end == i)
				fprintf(stderr, "  -- flush returned\n");
		const struct event *e = &r->ev[i];
		fprintf(stderr, "  event %zu %s off=0x%" PRIx64 " len=%" PRIu64 "\n", i,
		        ev_names[e->kind], e->off, e->len);
	}
}

/* ---- read-only ops ------------------------------------------------------ */

unsigned g_ro_writes;

static int ro_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	(void)buf;
	(void)len;
	(void)off;
	g_ro_writes++;
	return -EBADF;
}

static int ro_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	(void)ctx;
	(void)off;
	(void)len;
	g_ro_writes++;
	return -EBADF;
}

static int ro_truncate(void *ctx, uint64_t size)
{
	(void)ctx;
	(void)size;
	g_ro_writes++;
	return -EBADF;
}

const struct qcow_io_ops ro_ops = {
    .pread = mf_pread,
    .pwrite = ro_pwrite,
    .sync = mf_sync,
    .punch_hole = ro_punch_hole,
    .truncate = ro_truncate,
    .get_size = mf_get_size,
    .close = mf_close,
};

/* ---- faulty ops --------------------------------------------------------- */

static int faulty_hit(struct faulty *f, unsigned count)
{
	if (f->fail_at && (count == f->fail_at || (f->sticky && count > f->fail_at))) {
		if (!f->fired)
			f->fired_in = f->current;
		f->fired++;
		return f->error;
	}
	return 0;
}

static int fy_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	return mf_pread(&((struct faulty *)ctx)->mf, buf, len, off);
}

static int fy_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct faulty *f = ctx;
	f->events++;
	if (f->armed) {
		f->npwrite++;
		int rc = f->on == FAULT_PWRITE ? faulty_hit(f, f->npwrite) : 0;
		if (rc) {
			/* A failed write may have reached part of the disk: its first half. */
			if (len >= 1024)
				mf_pwrite(&f->mf, buf, len / 1024 * 512, off);
			return rc;
		}
	}
	return mf_pwrite(&f->mf, buf, len, off);
}

static int fy_sync(void *ctx)
{
	struct faulty *f = ctx;
	f->events++;
	if (!f->armed)
		return 0;
	f->nsync++;
	int rc = f->on == FAULT_SYNC ? faulty_hit(f, f->nsync) : 0;
	if (rc)
		f->sync_failed = true;
	return rc;
}

static int fy_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct faulty *f = ctx;
	f->events++;
	return mf_punch_hole(&f->mf, off, len);
}

static int fy_truncate(void *ctx, uint64_t size)
{
	struct faulty *f = ctx;
	f->events++;
	return mf_truncate(&f->mf, size);
}

static int fy_get_size(void *ctx, uint64_t *size)
{
	return mf_get_size(&((struct faulty *)ctx)->mf, size);
}

const struct qcow_io_ops faulty_ops = {
    .pread = fy_pread,
    .pwrite = fy_pwrite,
    .sync = fy_sync,
    .punch_hole = fy_punch_hole,
    .truncate = fy_truncate,
    .get_size = fy_get_size,
    .close = mf_close,
};

/* ---- failures, counted by kind ------------------------------------------ */

static int tally_find(const struct fail_tally *t, const char *kind)
{
	int k = 0;
	while (k < t->nkinds && strcmp(t->kinds[k].name, kind))
		k++;
	return k;
}

bool tally_add(struct fail_tally *t, const char *kind)
{
	int k = tally_find(t, kind);
	if (k == t->nkinds && t->nkinds < TALLY_MAX_KINDS) {
		t->kinds[k].name = kind;
		t->kinds[k].count = 0;
		t->nkinds++;
	}
	unsigned seen = k < TALLY_MAX_KINDS ? t->kinds[k].count++ : TALLY_DETAILED;
	t->count++;
	return seen < TALLY_DETAILED;
}

unsigned tally_kind_count(const struct fail_tally *t, const char *kind)
{
	int k = tally_find(t, kind);
	return k < t->nkinds ? t->kinds[k].count : 0;
}

void tally_print(const struct fail_tally *t, const char *who)
{
	for (int k = 0; k < t->nkinds; k++)
		fprintf(stderr, "%s:   %u x %s\n", who, t->kinds[k].count, t->kinds[k].name);
}

/* ---- helpers ------------------------------------------------------------ */

int read_all(struct qcow_image *img, uint8_t *buf, uint64_t size, uint64_t *bad_off)
{
	for (uint64_t off = 0; off < size; off += MiB) {
		size_t n = size - off < MiB ? (size_t)(size - off) : MiB;
		int rc = qcow_read(img, buf + off, off, n);
		if (rc) {
			*bad_off = off;
			return rc;
		}
	}
	return 0;
}

uint64_t first_diff(const uint8_t *a, const uint8_t *b, uint64_t n)
{
	/* Whole blocks by memcmp: a byte loop over megabytes is slow unoptimized. */
	const uint64_t blk = 4096;
	uint64_t i = 0;
	while (i < n) {
		uint64_t m = n - i < blk ? n - i : blk;
		if (memcmp(a + i, b + i, m) != 0)
			break;
		i += m;
	}
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

int qemu_img_check_mf(const struct memfile *mf, const char *dir, const char *name, char *msg,
                      size_t len)
{
	char path[512], out[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(out, sizeof(out), "%s/qemu-img.out", dir);
	int rc = mf_save(mf, path);
	cr_assert_eq(rc, 0, "saving %s: %s", path, strerror(-rc));
	char *argv[] = {"qemu-img", "check", "-f", "qcow2", path, NULL};
	int st = tu_run(argv, out);
	tu_slurp(out, msg, len);
	return st;
}

bool have_qemu_img(void)
{
	static int have = -1;
	if (have < 0) {
		have = tu_have_prog("qemu-img");
		if (!have)
			cr_log_warn("qemu-img not found: only the library's own check runs");
	}
	return have;
}

static char g_dir[256];

const char *crash_dir(const char *tag)
{
	int rc = tu_mkdtemp(g_dir, sizeof(g_dir), tag);
	cr_assert_eq(rc, 0, "mkdtemp: %s", strerror(-rc));
	tu_watch_dir = g_dir;
	return g_dir;
}

void crash_dir_remove(void)
{
	tu_rmtree(g_dir);
}
