/* SPDX-License-Identifier: MIT */
/*
 * recorder.h - qcow_io_ops over a memfile that logs every pwrite, punch,
 * truncate and sync, so crash tests can rebuild the file as any prefix of
 * the events (plus torn or reordered unsynced writes) left it; and ops
 * that count any write made through a read-only open.  Shared by the crash
 * tests; include after memfile.h.
 */
#ifndef BLOCKD_TESTS_RECORDER_H
#define BLOCKD_TESTS_RECORDER_H

enum ev_kind { EV_PWRITE, EV_PUNCH, EV_TRUNCATE, EV_SYNC };

static const char *const ev_names[] = {"pwrite", "punch_hole", "truncate", "sync"};

struct event {
	enum ev_kind kind;
	uint64_t off; /* truncate: the new size */
	uint64_t len;
	uint8_t *data;
};

struct recorder {
	struct memfile live;
	struct event *ev;
	size_t nev, cap;
};

static inline struct event *rec_add(struct recorder *r, enum ev_kind kind, uint64_t off,
                                    uint64_t len)
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

static inline int rec_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	return mf_pread(&((struct recorder *)ctx)->live, buf, len, off);
}

static inline int rec_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
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

static inline int rec_sync(void *ctx)
{
	rec_add(ctx, EV_SYNC, 0, 0);
	return 0;
}

static inline int rec_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct recorder *r = ctx;
	rec_add(r, EV_PUNCH, off, len);
	return mf_punch_hole(&r->live, off, len);
}

static inline int rec_truncate(void *ctx, uint64_t size)
{
	struct recorder *r = ctx;
	rec_add(r, EV_TRUNCATE, size, 0);
	return mf_truncate(&r->live, size);
}

static inline int rec_get_size(void *ctx, uint64_t *size)
{
	return mf_get_size(&((struct recorder *)ctx)->live, size);
}

static inline void rec_close(void *ctx)
{
	(void)ctx;
}

static const struct qcow_io_ops rec_ops = {
    .pread = rec_pread,
    .pwrite = rec_pwrite,
    .sync = rec_sync,
    .punch_hole = rec_punch_hole,
    .truncate = rec_truncate,
    .get_size = rec_get_size,
    .close = rec_close,
};

static inline void rec_free(struct recorder *r)
{
	for (size_t i = 0; i < r->nev; i++)
		free(r->ev[i].data);
	free(r->ev);
	mf_free(&r->live);
}

/* Applies an event, or only its first `len` bytes for a torn pwrite. */
static inline void apply_event(struct memfile *mf, const struct event *e, uint64_t len)
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

/* Read-only ops: a read-only open (or a snapshot view) must not write. */

static unsigned g_ro_writes;

static inline int ro_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	(void)buf;
	(void)len;
	(void)off;
	g_ro_writes++;
	return -EBADF;
}

static inline int ro_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	(void)ctx;
	(void)off;
	(void)len;
	g_ro_writes++;
	return -EBADF;
}

static inline int ro_truncate(void *ctx, uint64_t size)
{
	(void)ctx;
	(void)size;
	g_ro_writes++;
	return -EBADF;
}

static const struct qcow_io_ops ro_ops = {
    .pread = mf_pread,
    .pwrite = ro_pwrite,
    .sync = mf_sync,
    .punch_hole = ro_punch_hole,
    .truncate = ro_truncate,
    .get_size = mf_get_size,
    .close = mf_close,
};

#endif
