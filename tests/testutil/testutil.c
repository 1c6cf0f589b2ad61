/* SPDX-License-Identifier: MIT */
/*
 * testutil.c - the helpers of testutil.h that are not inline: scale and
 * seed from the environment, temporary directories, running a program,
 * and the watchdog.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
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

double tu_scale(void)
{
	const char *s = getenv("BLOCKD_TEST_SCALE");
	if (s && *s) {
		double v = strtod(s, NULL);
		if (v > 0)
			return v;
	}
	return TU_SANITIZED ? 0.5 : 1.0;
}

unsigned tu_scaled_by(unsigned n, double factor)
{
	double v = n * tu_scale() * factor;
	return v < 1 ? 1 : (unsigned)v;
}

unsigned tu_scaled(unsigned n)
{
	return tu_scaled_by(n, 1.0);
}

uint64_t tu_seed(uint64_t dflt)
{
	const char *s = getenv("BLOCKD_TEST_SEED");
	if (s && *s)
		return strtoull(s, NULL, 0);
	return dflt;
}

static int tu_rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

void tu_rmtree(const char *dir)
{
	if (dir && *dir)
		nftw(dir, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_mkdtemp(char *dir, size_t len, const char *tag)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	int n = snprintf(dir, len, "%s/blockd-%s-XXXXXX", base, tag);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return mkdtemp(dir) ? 0 : -errno;
}

bool tu_have_prog(const char *prog)
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

int tu_run(char *const argv[], const char *out_path)
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

void tu_slurp(const char *path, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
}

/* ---- the watchdog ------------------------------------------------------- */

static char tu_watch_msg[512];

const char *tu_watch_dir;

static void tu_watch_fire(int sig)
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

void tu_watch(const char *fmt, ...)
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

void tu_unwatch(void)
{
	alarm(0);
}
