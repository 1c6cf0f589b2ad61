/* SPDX-License-Identifier: MIT */
/*
 * harness.h - what the crash test programs (test_crash_replay.c,
 * test_crash_snapshots.c, test_faults.c) share, built once into the
 * crash_harness library:
 *
 *   memfile     an in-memory host file behind struct qcow_io_ops: pread fills
 *               past EOF with zeros, pwrite extends, punch_hole zeroes,
 *               truncate cuts or extends with zeros, sync and close do
 *               nothing (the test owns the memory);
 *   gmodel      the guest model, which judges what a crashed or failed image
 *               may read back (below);
 *   recorder    ops over a memfile that log every pwrite, punch, truncate and
 *               sync, so that a test can rebuild the file as any prefix of the
 *               events (plus torn or reordered unsynced writes) left it;
 *   crash_state one such rebuilt file: the events up to a sync, plus a subset
 *               of the events up to the next sync, one of them torn;
 *   ro_ops      ops that count (and refuse) any write through a read-only open;
 *   faulty      ops that fail the N-th pwrite or sync with an error;
 *   fail_tally  failures counted by kind, so that one run shows every kind of
 *               problem and describes the first few of each;
 * and small helpers: guest operations run on an image and recorded in the
 * model, reading a whole disk, qemu-img check of a memfile, and the test's
 * private directory.
 *
 * The guest model keeps every guest operation issued (kind, range, data, the
 * host events it issued) and every flush that returned 0.  For a state in
 * which all host events before `durable` are known to be applied and events
 * before `max_events` may be, the image must read, byte by byte, the content
 * after the last flush whose events are all durable, except where a later
 * operation (one that may have reached the disk) wrote: there it may read
 * that operation's value instead.  Torn and reordered host writes can pick old
 * or new per byte, never anything else: data from freed clusters, stale
 * metadata or garbage fail the check.
 *
 * Errors: functions that cannot go on (out of memory, a failed replay) fail
 * the running Criterion test with cr_assert; the others return 0 or -errno.
 * Not thread-safe: the tests are single-threaded.
 */
#ifndef BLOCKD_TESTS_CRASH_HARNESS_H
#define BLOCKD_TESTS_CRASH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * KiB)

/* ---- memfile ------------------------------------------------------------ */

struct memfile {
	uint8_t *data;
	uint64_t size;
	uint64_t cap;
};

/* The io ops; ctx is a struct memfile. */
int mf_pread(void *ctx, void *buf, size_t len, uint64_t off);
int mf_pwrite(void *ctx, const void *buf, size_t len, uint64_t off);
int mf_sync(void *ctx);
int mf_punch_hole(void *ctx, uint64_t off, uint64_t len);
int mf_truncate(void *ctx, uint64_t size);
int mf_get_size(void *ctx, uint64_t *size);
void mf_close(void *ctx);

extern const struct qcow_io_ops memfile_ops;

/* Makes dst a copy of src (dst's memory is reused); 0 or -errno. */
int mf_copy(struct memfile *dst, const struct memfile *src);

/* Frees the memory; the memfile is empty afterwards. */
void mf_free(struct memfile *mf);

/* Writes the file out to PATH (for qemu-img); 0 or -errno. */
int mf_save(const struct memfile *mf, const char *path);

/* ---- guest model -------------------------------------------------------- */

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

/* A model of a disk of `size` zero bytes (m->cur is NULL if out of memory). */
void gm_init(struct gmodel *m, uint64_t size);
void gm_free(struct gmodel *m);

/* Records an operation issued after `ev_start` host events (data copied). */
struct gop *gm_add(struct gmodel *m, enum gop_kind kind, uint64_t off, uint64_t len,
                   const void *data, size_t ev_start);

/*
 * gm_add for a guest call on [off, off + len): a discard is recorded as the
 * whole clusters (of cluster_size) inside the range, all it surely zeroes.
 */
struct gop *gm_record(struct gmodel *m, enum gop_kind kind, uint64_t off, uint64_t len,
                      const void *data, size_t ev_start, uint64_t cluster_size);

/* Records a flush that returned 0 when `ev_end` host events were logged. */
void gm_flushed(struct gmodel *m, size_t ev_end);

/* Advances m->cur to the content after the first nops operations. */
void gm_advance(struct gmodel *m, size_t nops);

/* Operations flushed in a state whose events before `durable` are applied. */
size_t gm_durable_ops(const struct gmodel *m, size_t durable);

struct gm_verdict {
	bool ok;
	uint64_t bad_off; /* first byte that matched nothing */
	uint8_t expected, got;
	size_t durable_ops, candidates;
};

/*
 * Judges a full read of the guest (`got`, m->size bytes).  Events before
 * `durable` are applied; events before `max_events` may be.  Operations
 * that failed are candidates whatever their place.  Advances m->cur.
 */
struct gm_verdict gm_judge(struct gmodel *m, const uint8_t *got, size_t durable, size_t max_events);

/* Prints the operations that touch byte b and the flushes (for failure reports). */
void gm_explain(const struct gmodel *m, uint64_t b);

/* ---- guest operations --------------------------------------------------- */

/* The library call of each kind, for messages. */
extern const char *const gop_calls[];

/* Runs one guest operation on img (data: GOP_WRITE; zflags: GOP_ZERO); its rc. */
int gop_run(struct qcow_image *img, enum gop_kind kind, uint64_t off, uint64_t len,
            const void *data, unsigned zflags);

/* ---- recorder ----------------------------------------------------------- */

enum ev_kind { EV_PWRITE, EV_PUNCH, EV_TRUNCATE, EV_SYNC };

extern const char *const ev_names[];

struct event {
	enum ev_kind kind;
	uint64_t off; /* truncate: the new size */
	uint64_t len;
	uint8_t *data;
};

/* The live file and the log of the events that made it. */
struct recorder {
	struct memfile live;
	struct event *ev;
	size_t nev, cap;
};

/* The io ops; ctx is a struct recorder. */
extern const struct qcow_io_ops rec_ops;

void rec_free(struct recorder *r);

/* Applies an event to mf, or only its first `len` bytes for a torn pwrite. */
void apply_event(struct memfile *mf, const struct event *e, uint64_t len);

/*
 * qcow_create of a qcow2 image "crash.qcow2" on the recorder (the test fails
 * if it fails); refcount_bits 0 is the default.
 */
void rec_create(struct recorder *r, uint64_t size, uint32_t cluster_size, unsigned refcount_bits,
                bool lazy_refcounts);

/* Opens it read-write (cache_bytes 0: the default caches); the test fails if it cannot. */
struct qcow_image *rec_open(struct recorder *r, uint64_t cache_bytes, uint64_t seed);

/*
 * Runs a guest operation that must succeed on img, which writes through the
 * recorder, and records it in m with the events it issued.
 */
struct gop *guest_op(struct qcow_image *img, struct gmodel *m, const struct recorder *r,
                     enum gop_kind kind, uint64_t off, uint64_t len, const void *data,
                     unsigned zflags, uint64_t cluster_size);

/*
 * A guest range on a disk of g bytes with clusters of cs, drawn from rng: a
 * short one anywhere, one across a cluster boundary (only when `cross`),
 * whole clusters, or whole sectors (at most maxc clusters of either).
 */
void pick_range(struct tu_rng *rng, uint64_t cs, uint64_t g, uint64_t maxc, bool cross,
                uint64_t *off, uint64_t *len);

/*
 * The range of a probe write on a crash state (within a disk of g bytes): a
 * cluster (of cs) and a bit, from a random place in the first 512 bytes of
 * a cluster; its data, drawn from rng too, into buf.
 */
void probe_range(struct tu_rng *rng, uint64_t cs, uint64_t g, uint8_t *buf, uint64_t *off,
                 uint64_t *len);

/* ---- crash states ------------------------------------------------------- */

struct crash_state {
	size_t durable;    /* events before it are applied */
	size_t max_events; /* events before it may be */
	size_t *subset;    /* events of [durable, max_events) applied, in order */
	size_t nsubset;
	size_t torn_ev;    /* the subset's event applied torn, or SIZE_MAX */
	uint64_t torn_len; /* how much of it */
};

/*
 * The sync points whose prefix holds the whole creation (events before
 * create_end), then the end of the log if it is not one: each is the number
 * of events up to and including a sync.  Returns a malloc'ed array, its
 * length in *n.
 */
size_t *sync_points(const struct recorder *r, size_t create_end, size_t *n);

/* The end of the interval that starts at p: the next sync event, or the end of the log. */
size_t interval_end(const struct recorder *r, size_t p);

/* Tears event i at a random 512-byte boundary (nothing of a write shorter than 1 KiB). */
void state_tear(struct crash_state *st, struct tu_rng *rng, const struct recorder *r, size_t i);

/* A random subset of [p, q) in order, one of its pwrites torn. */
void state_random_subset(struct crash_state *st, struct tu_rng *rng, const struct recorder *r,
                         size_t p, size_t q);

/* Builds the state: base (the events before st->durable), then the subset. */
void state_build(struct memfile *state, const struct memfile *base, const struct recorder *r,
                 const struct crash_state *st);

/*
 * Describes the state's subset on stderr and how to reproduce it; with
 * BLOCKD_CRASH_EVENTS set, also the whole log up to it with the guest
 * operations and flushes of m and what `more` (if not NULL) prints before
 * event i.
 */
void state_describe(const struct crash_state *st, const struct recorder *r, const struct gmodel *m,
                    uint64_t seed, void (*more)(const void *ctx, size_t i), const void *ctx);

/* ---- read-only ops ------------------------------------------------------ */

/* Writes attempted through ro_ops (which refuses them with -EBADF). */
extern unsigned g_ro_writes;

/* ctx is a struct memfile; a read-only open (or a snapshot view) must not write. */
extern const struct qcow_io_ops ro_ops;

/* ---- faulty ops --------------------------------------------------------- */

enum fault_on { FAULT_PWRITE, FAULT_SYNC };

/*
 * A memfile whose N-th pwrite or sync fails with `error`.  Only calls made
 * while `armed` count and fail; a failed pwrite of 1 KiB or more still
 * writes its first half (rounded down to 512 bytes), as part of it may
 * have reached the disk.
 */
struct faulty {
	struct memfile mf;
	bool armed;
	enum fault_on on;
	unsigned fail_at; /* 1-based; 0: never */
	int error;        /* -EIO or -ENOSPC */
	bool sticky;      /* keep failing after the first */
	unsigned npwrite, nsync;
	size_t events; /* pwrites + syncs + punches + truncates, armed or not */
	unsigned fired;
	bool sync_failed;
	const char *fired_in; /* the API call running when it first fired */
	const char *current;  /* the API call running now (set by the test) */
};

/* ctx is a struct faulty. */
extern const struct qcow_io_ops faulty_ops;

/* ---- failures, counted by kind ------------------------------------------ */

#define TALLY_MAX_KINDS 24
#define TALLY_DETAILED  2 /* failures of each kind described in full */

struct fail_tally {
	unsigned count;
	int nkinds;
	struct {
		const char *name;
		unsigned count;
	} kinds[TALLY_MAX_KINDS];
	char first[8192]; /* the first failure, for the test's verdict */
};

/* Counts one failure of `kind`; true if it is to be described in full. */
bool tally_add(struct fail_tally *t, const char *kind);

unsigned tally_kind_count(const struct fail_tally *t, const char *kind);

/* Prints the count of each kind on stderr, each line prefixed by who. */
void tally_print(const struct fail_tally *t, const char *who);

/*
 * In a function returning bool: unless cond holds, state_failed(c, kind,
 * fmt, ...) (which the test defines) records it, img (if not NULL) is
 * abandoned and the function returns false.  STATE_EXPECT records it and
 * goes on.
 */
#define STATE_CHECK(c, img, cond, kind, ...)                                                       \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			state_failed(c, kind, __VA_ARGS__);                                        \
			if (img)                                                                   \
				qcow_abandon(img);                                                 \
			return false;                                                              \
		}                                                                                  \
	} while (0)

#define STATE_EXPECT(c, cond, kind, ...)                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			state_failed(c, kind, __VA_ARGS__);                                        \
	} while (0)

/*
 * In a function with an `out:` label: unless cond holds, fault_failed(a, b,
 * kind, fmt, ...) (which the test defines) records it and F_CHECK goes to
 * out (the run cannot go on); F_EXPECT goes on.
 */
#define F_CHECK(a, b, cond, kind, ...)                                                             \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fault_failed(a, b, kind, __VA_ARGS__);                                     \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

#define F_EXPECT(a, b, cond, kind, ...)                                                            \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fault_failed(a, b, kind, __VA_ARGS__);                                     \
	} while (0)

/* ---- helpers ------------------------------------------------------------ */

/*
 * The table caches to open a test image with (qcow_open_opts.l2_cache_bytes
 * and .refcount_cache_bytes) when a test does not choose them.  1 MiB holds
 * every table of every image these tests make (guests of at most 16 MiB: at
 * most 128 KiB of L2 entries per snapshot or active disk; files of tens of
 * MiB: at most a few hundred KiB of refcount blocks), so nothing is evicted,
 * as with the defaults.  The defaults allocate 36 MiB per open, which under
 * AddressSanitizer (poisoning it, then faulting in its shadow) cost more
 * than all the checks of a crash state.
 */
#define TEST_CACHE_BYTES (1ull << 20)

/* Reads the whole disk (at most MiB per call); 0, or the failing rc and its offset in *bad_off. */
int read_all(struct qcow_image *img, uint8_t *buf, uint64_t size, uint64_t *bad_off);

/* The first index where a and b differ, or n. */
uint64_t first_diff(const uint8_t *a, const uint8_t *b, uint64_t n);

/*
 * Saves mf as DIR/NAME and runs `qemu-img check -f qcow2` on it (the test
 * fails if it cannot be saved); its output, up to len - 1 bytes, in msg.
 * Returns qemu-img's exit status, -1 if it did not run to the end.
 */
int qemu_img_check_mf(const struct memfile *mf, const char *dir, const char *name, char *msg,
                      size_t len);

/* Whether qemu-img is installed (warns in the test log once if not). */
bool have_qemu_img(void);

/*
 * Makes the test's private directory (blockd-TAG-XXXXXX under TMPDIR), which
 * the watchdog removes before aborting; returns its path.  crash_dir_remove
 * (a suite's .fini) removes it.
 */
const char *crash_dir(const char *tag);
void crash_dir_remove(void);

#endif
