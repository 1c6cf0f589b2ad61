/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - small helpers shared by the C test programs (integration/ and
 * crash/): a seeded PRNG, a scale factor for sanitizer builds, a private
 * temporary directory, running qemu-img, and a watchdog for one library
 * call.  The PRNG is inline here; the rest is in testutil.c (the testutil
 * library), so that the watchdog's state exists once per program.
 *
 * Not thread-safe (tests are single-threaded; Criterion runs each test in
 * its own process).
 */
#ifndef BLOCKD_TESTS_TESTUTIL_H
#define BLOCKD_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* splitmix64: tiny, seedable, good enough to drive a workload. */
struct tu_rng {
	uint64_t s;
};

static inline uint64_t tu_next(struct tu_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t tu_below(struct tu_rng *r, uint64_t n)
{
	return tu_next(r) % n;
}

/* Uniform in [lo, hi]. */
static inline uint64_t tu_range(struct tu_rng *r, uint64_t lo, uint64_t hi)
{
	return lo + tu_below(r, hi - lo + 1);
}

static inline void tu_fill(struct tu_rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t v = tu_next(r);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = tu_next(r);
		memcpy(p, &v, len);
	}
}

/*
 * Iteration scale: BLOCKD_TEST_SCALE (a positive number, 1 = default) or,
 * unset, 1 for normal builds and 0.5 under AddressSanitizer.
 */
double tu_scale(void);

/* n * tu_scale(), at least 1. */
unsigned tu_scaled(unsigned n);

/* n * tu_scale() * factor, at least 1. */
unsigned tu_scaled_by(unsigned n, double factor);

/* Seed: BLOCKD_TEST_SEED if set, else the given default (so CI is reproducible). */
uint64_t tu_seed(uint64_t dflt);

/* Removes DIR and everything below it (no-op for NULL or ""). */
void tu_rmtree(const char *dir);

/* Creates a private directory under TMPDIR (or /tmp); 0 or -errno. */
int tu_mkdtemp(char *dir, size_t len, const char *tag);

/* True if PROG is found on PATH and is executable. */
bool tu_have_prog(const char *prog);

/*
 * Runs argv (searched on PATH) with stdout and stderr sent to OUT_PATH
 * (or /dev/null when NULL).  Returns the exit status, or -1 if it could not
 * be run or was killed by a signal.
 */
int tu_run(char *const argv[], const char *out_path);

/* Reads up to len-1 bytes of PATH into buf as a string (for messages). */
void tu_slurp(const char *path, char *buf, size_t len);

/*
 * Watchdog for one library call: tu_watch("qcow_write(off=..)") before it,
 * tu_unwatch() after.  A call still running after TU_WATCH_SECONDS prints
 * what hung and aborts, so a livelock fails fast with a useful message
 * instead of eating the whole test timeout.
 */
#define TU_WATCH_SECONDS 30

/* A directory the watchdog removes before aborting (set by the test). */
extern const char *tu_watch_dir;

__attribute__((format(printf, 1, 2))) void tu_watch(const char *fmt, ...);
void tu_unwatch(void);

#endif
