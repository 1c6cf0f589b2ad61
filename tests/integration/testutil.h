/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - small helpers shared by the integration suites: a seeded
 * PRNG, a scale factor for sanitizer builds, a private temporary directory
 * and running qemu-img.  Header-only (static functions) so that every test
 * binary stays one translation unit plus the library.
 */
#ifndef BLOCKD_TESTS_INTEGRATION_TESTUTIL_H
#define BLOCKD_TESTS_INTEGRATION_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#if defined(__SANITIZE_ADDRESS__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif

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
static inline double tu_scale(void)
{
	const char *s = getenv("BLOCKD_TEST_SCALE");
	if (s && *s) {
		double v = strtod(s, NULL);
		if (v > 0)
			return v;
	}
	return TU_SANITIZED ? 0.5 : 1.0;
}

static inline unsigned tu_scaled(unsigned n)
{
	double v = n * tu_scale();
	return v < 1 ? 1 : (unsigned)v;
}

/* Seed: BLOCKD_TEST_SEED if set, else the given default (so CI is reproducible). */
static inline uint64_t tu_seed(uint64_t dflt)
{
	const char *s = getenv("BLOCKD_TEST_SEED");
	if (s && *s)
		return strtoull(s, NULL, 0);
	return dflt;
}

static inline int tu_rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static inline void tu_rmtree(const char *dir)
{
	if (dir && *dir)
		nftw(dir, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Creates a private directory under TMPDIR (or /tmp); 0 or -errno. */
static inline int tu_mkdtemp(char *dir, size_t len, const char *tag)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	int n = snprintf(dir, len, "%s/blockd-%s-XXXXXX", base, tag);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return mkdtemp(dir) ? 0 : -errno;
}

/* True if PROG is found on PATH and is executable. */
static inline bool tu_have_prog(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	char *copy = strdup(path);
	if (!copy)
		return false;
	bool found = false;
	for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && !found;
	     d = strtok_r(NULL, ":", &save)) {
		char full[4096];
		snprintf(full, sizeof(full), "%s/%s", d, prog);
		found = access(full, X_OK) == 0;
	}
	free(copy);
	return found;
}

/*
 * Runs argv (searched on PATH) with stdout and stderr sent to OUT_PATH
 * (or /dev/null when NULL).  Returns the exit status, or -1 if it could not
 * be run or was killed by a signal.
 */
static inline int tu_run(char *const argv[], const char *out_path)
{
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa))
		return -1;
	const char *out = out_path ? out_path : "/dev/null";
	posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return -1;
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (!WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Reads up to len-1 bytes of PATH into buf as a string (for messages). */
static inline void tu_slurp(const char *path, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
}

/*
 * Watchdog for one library call: tu_watch("qcow_write(off=..)") before it,
 * tu_unwatch() after.  A call still running after TU_WATCH_SECONDS prints
 * what hung and aborts, so a livelock fails fast with a useful message
 * instead of eating the whole test timeout.
 */
#define TU_WATCH_SECONDS 30

static char tu_watch_msg[512];

/* A directory the watchdog removes before aborting (set by the test). */
static const char *tu_watch_dir;

static inline void tu_watch_fire(int sig)
{
	(void)sig;
	static const char pre[] = "\nHANG: still running after 30 s: ";
	ssize_t w = write(2, pre, sizeof(pre) - 1);
	w = write(2, tu_watch_msg, strnlen(tu_watch_msg, sizeof(tu_watch_msg)));
	w = write(2, "\n", 1);
	(void)w;
	/* Not async-signal-safe, but the process is going down anyway. */
	tu_rmtree(tu_watch_dir);
	abort();
}

__attribute__((format(printf, 1, 2))) static inline void tu_watch(const char *fmt, ...)
{
	static bool installed;
	if (!installed) {
		signal(SIGALRM, tu_watch_fire);
		installed = true;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tu_watch_msg, sizeof(tu_watch_msg), fmt, ap);
	va_end(ap);
	alarm(TU_WATCH_SECONDS);
}

static inline void tu_unwatch(void)
{
	alarm(0);
}

#endif
