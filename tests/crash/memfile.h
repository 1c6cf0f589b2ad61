/* SPDX-License-Identifier: MIT */
/*
 * memfile.h - an in-memory host file behind struct qcow_io_ops, and a guest
 * model that judges what a crashed or failed image may read back.
 *
 * memfile: pread fills past EOF with zeros, pwrite extends, punch_hole
 * zeroes, truncate cuts or extends with zeros, sync does nothing, close
 * does nothing (the test owns the memory).
 *
 * The guest model keeps every guest operation issued (kind, range, data,
 * the host events it issued) and every flush that returned 0.  For a state
 * in which all host events before `durable_events` are known to be applied
 * and events up to `max_events` may be, the image must read, byte by byte,
 * the content after the last flush whose events are all durable, except
 * where a later operation (one that may have reached the disk) wrote: there
 * it may read that operation's value instead.  Torn and reordered host
 * writes can pick old or new per byte, never anything else: data from freed
 * clusters, stale metadata or garbage fail the check.
 *
 * Header-only (static functions) so each crash test is one file plus this.
 */
#ifndef BLOCKD_TESTS_CRASH_MEMFILE_H
#define BLOCKD_TESTS_CRASH_MEMFILE_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow.h"

/* ---- memfile ------------------------------------------------------------ */

struct memfile {
	uint8_t *data;
	uint64_t size;
	uint64_t cap;
};

static inline int mf_reserve(struct memfile *mf, uint64_t need)
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

static inline int mf_set_size(struct memfile *mf, uint64_t size)
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

static inline int mf_pread(void *ctx, void *buf, size_t len, uint64_t off)
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

static inline int mf_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
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

static inline int mf_sync(void *ctx)
{
	(void)ctx;
	return 0;
}

static inline int mf_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct memfile *mf = ctx;
	if (off >= mf->size)
		return 0;
	if (len > mf->size - off)
		len = mf->size - off;
	memset(mf->data + off, 0, len);
	return 0;
}

static inline int mf_truncate(void *ctx, uint64_t size)
{
	return mf_set_size(ctx, size);
}

static inline int mf_get_size(void *ctx, uint64_t *size)
{
	*size = ((struct memfile *)ctx)->size;
	return 0;
}

static inline void mf_close(void *ctx)
{
	(void)ctx;
}

static const struct qcow_io_ops memfile_ops = {
    .pread = mf_pread,
    .pwrite = mf_pwrite,
    .sync = mf_sync,
    .punch_hole = mf_punch_hole,
    .truncate = mf_truncate,
    .get_size = mf_get_size,
    .close = mf_close,
};

static inline int mf_copy(struct memfile *dst, const struct memfile *src)
{
	int rc = mf_reserve(dst, src->size);
	if (rc)
		return rc;
	if (src->size)
		memcpy(dst->data, src->data, src->size);
	dst->size = src->size;
	return 0;
}

static inline void mf_free(struct memfile *mf)
{
	free(mf->data);
	*mf = (struct memfile){0};
}

/* Writes the file out (for qemu-img); 0 or -errno. */
static inline int mf_save(const struct memfile *mf, const char *path)
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

/* ---- guest model ------------------------------------------------------- */

enum gop_kind { GOP_WRITE, GOP_ZERO, GOP_DISCARD };

struct gop {
	enum gop_kind kind;
	uint64_t off; /* for a discard: the whole clusters it zeroes */
	uint64_t len;
	uint8_t *data;   /* GOP_WRITE only */
	size_t ev_start; /* host events logged before the call */
	size_t ev_end;   /* ... and after it */
	bool failed;     /* the call returned an error */
};

struct gflush {
	size_t ev_end; /* host events logged when it returned 0 */
	size_t nops;   /* guest operations issued before it */
};

struct gmodel {
	uint64_t size;
	struct gop *ops;
	size_t nops, cap_ops;
	struct gflush *flushes;
	size_t nflushes, cap_flushes;
	/* The content after ops[0..applied) (failed ones skipped). */
	uint8_t *cur;
	size_t applied;
};

static inline void gm_init(struct gmodel *m, uint64_t size)
{
	*m = (struct gmodel){.size = size};
	m->cur = calloc(1, size);
}

static inline void gm_free(struct gmodel *m)
{
	for (size_t i = 0; i < m->nops; i++)
		free(m->ops[i].data);
	free(m->ops);
	free(m->flushes);
	free(m->cur);
	*m = (struct gmodel){0};
}

static inline struct gop *gm_add(struct gmodel *m, enum gop_kind kind, uint64_t off, uint64_t len,
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

static inline void gm_flushed(struct gmodel *m, size_t ev_end)
{
	if (m->nflushes == m->cap_flushes) {
		m->cap_flushes = m->cap_flushes ? m->cap_flushes * 2 : 64;
		m->flushes = realloc(m->flushes, m->cap_flushes * sizeof(*m->flushes));
		if (!m->flushes)
			abort();
	}
	m->flushes[m->nflushes++] = (struct gflush){.ev_end = ev_end, .nops = m->nops};
}

static inline void gm_apply(struct gmodel *m, const struct gop *g)
{
	if (g->failed || !g->len)
		return;
	if (g->kind == GOP_WRITE)
		memcpy(m->cur + g->off, g->data, g->len);
	else
		memset(m->cur + g->off, 0, g->len);
}

/* Advances m->cur to the content after the first nops operations. */
static inline void gm_advance(struct gmodel *m, size_t nops)
{
	if (nops < m->applied) {
		memset(m->cur, 0, m->size);
		m->applied = 0;
	}
	for (; m->applied < nops; m->applied++)
		gm_apply(m, &m->ops[m->applied]);
}

/* Operations flushed in a state whose events before `durable` are applied. */
static inline size_t gm_durable_ops(const struct gmodel *m, size_t durable)
{
	size_t n = 0;
	for (size_t i = 0; i < m->nflushes; i++)
		if (m->flushes[i].ev_end <= durable)
			n = m->flushes[i].nops;
	return n;
}

struct gm_verdict {
	bool ok;
	uint64_t bad_off; /* first byte that matched nothing */
	uint8_t expected, got;
	size_t durable_ops, candidates;
};

static inline bool gm_op_value(const struct gop *g, uint64_t b, uint8_t *v)
{
	if (!g->len || b < g->off || b >= g->off + g->len)
		return false;
	*v = g->kind == GOP_WRITE ? g->data[b - g->off] : 0;
	return true;
}

/*
 * Judges a full read of the guest (`got`, m->size bytes).  Events before
 * `durable` are applied; events before `max_events` may be.  Operations
 * that failed are candidates whatever their place.  Advances m->cur.
 */
static inline struct gm_verdict gm_judge(struct gmodel *m, const uint8_t *got, size_t durable,
                                         size_t max_events)
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

/* Prints the operations that touch byte b (for failure reports). */
static inline void gm_explain(const struct gmodel *m, uint64_t b)
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

#endif
