/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proto_replay.c - runs fuzz_proto.c's LLVMFuzzerTestOneInput without
 * libFuzzer, over built-in client sessions and deterministic mutations of
 * them: every feed pattern, every truncation, 32-bit edge values at every
 * 2-byte position, seeded random byte changes.  Same inputs on every run,
 * so a failure reproduces (the input is written to $FUZZ_ARTIFACT_DIR/
 * crash-replay when that is set and the input aborts).
 *
 *   fuzz_proto_replay [-t SECONDS] [-m MUTATIONS]   run
 *   fuzz_proto_replay -w DIR                         write the seeds (for libFuzzer)
 */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nbd_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seed {
	uint8_t p[4096];
	size_t len;
};

static void put(struct seed *s, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes && s->len < sizeof(s->p); i++)
		s->p[s->len++] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static void puts_(struct seed *s, const char *str)
{
	while (*str && s->len < sizeof(s->p))
		s->p[s->len++] = (uint8_t)*str++;
}

static void opt(struct seed *s, uint32_t code, uint32_t len)
{
	put(s, NBD_IHAVEOPT, 8);
	put(s, code, 4);
	put(s, len, 4);
}

static void go(struct seed *s, uint32_t code, const char *name)
{
	opt(s, code, 4 + (uint32_t)strlen(name) + 2 + 4);
	put(s, strlen(name), 4);
	puts_(s, name);
	put(s, 2, 2);
	put(s, NBD_INFO_BLOCK_SIZE, 2);
	put(s, NBD_INFO_NAME, 2);
}

static void meta(struct seed *s, uint32_t code, const char *name)
{
	opt(s, code, 4 + (uint32_t)strlen(name) + 4 + 4 + 15);
	put(s, strlen(name), 4);
	puts_(s, name);
	put(s, 1, 4);
	put(s, 15, 4);
	puts_(s, "base:allocation");
}

static void req(struct seed *s, uint16_t flags, uint16_t type, uint64_t off, uint32_t len)
{
	put(s, NBD_REQUEST_MAGIC, 4);
	put(s, flags, 2);
	put(s, type, 2);
	put(s, 0x1234, 8);
	put(s, off, 8);
	put(s, len, 4);
}

static size_t make_seeds(struct seed *seeds)
{
	static const char *const names[] = {"disk", "ro", "bs", ""};
	size_t n = 0;

	for (int i = 0; i < 4; i++) {
		struct seed *s = &seeds[n++];

		memset(s, 0, sizeof(*s));
		put(s, (uint64_t)i, 1); /* feed pattern */
		put(s, 3, 4);
		opt(s, 99, 2);
		puts_(s, "zz");
		opt(s, NBD_OPT_LIST, 0);
		opt(s, NBD_OPT_STRUCTURED_REPLY, 0);
		meta(s, NBD_OPT_LIST_META_CONTEXT, names[i]);
		meta(s, NBD_OPT_SET_META_CONTEXT, names[i]);
		go(s, NBD_OPT_INFO, names[(i + 1) % 4]);
		go(s, NBD_OPT_GO, names[i]);
		req(s, 0, NBD_CMD_READ, 0, 4096);
		req(s, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 512, 8);
		puts_(s, "payload!");
		req(s, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0,
		    1024);
		req(s, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 0, 65536);
		req(s, 0, NBD_CMD_TRIM, 1024, 512);
		req(s, 0, NBD_CMD_CACHE, 0, 512);
		req(s, 0, NBD_CMD_FLUSH, 0, 0);
		req(s, 0, NBD_CMD_DISC, 0, 0);
	}
	/* plain EXPORT_NAME without fixed newstyle */
	memset(&seeds[n], 0, sizeof(seeds[n]));
	put(&seeds[n], 1, 1);
	put(&seeds[n], 0, 4);
	opt(&seeds[n], NBD_OPT_EXPORT_NAME, 4);
	puts_(&seeds[n], "disk");
	req(&seeds[n], 0, NBD_CMD_WRITE, 0, 4);
	puts_(&seeds[n], "abcd");
	n++;
	/* ABORT */
	memset(&seeds[n], 0, sizeof(seeds[n]));
	put(&seeds[n], 0, 1);
	put(&seeds[n], 1, 4);
	opt(&seeds[n], NBD_OPT_ABORT, 0);
	n++;
	return n;
}

static const char *artifact_path;
static const uint8_t *cur;
static size_t cur_len;
static double deadline;
static unsigned long runs;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_abort(int sig)
{
	int fd;

	if (artifact_path && cur) {
		fd = open(artifact_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			if (write(fd, cur, cur_len) < 0) {
				/* nothing more to do in a signal handler */
			}
			close(fd);
		}
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool run(const uint8_t *p, size_t len)
{
	if (now_s() > deadline)
		return false;
	cur = p;
	cur_len = len;
	LLVMFuzzerTestOneInput(p, len);
	runs++;
	return true;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int write_seeds(const char *dir, const struct seed *seeds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		FILE *f;

		snprintf(path, sizeof(path), "%s/seed-%zu", dir, i);
		f = fopen(path, "wb");
		if (!f || fwrite(seeds[i].p, 1, seeds[i].len, f) != seeds[i].len) {
			perror(path);
			return 1;
		}
		fclose(f);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const uint32_t edges[] = {
	    0,  1,    2,    3,          7,          8,          9,          10,        11,
	    99, 4096, 4097, 0x7fffffff, 0x80000000, 0xffffffff, 0x25609513, 0x21e41c71};
	static struct seed seeds[8];
	static uint8_t buf[4096];
	size_t n = make_seeds(seeds);
	unsigned mutations = 3000;
	double budget = 30, t0 = now_s();
	char artifact[4096];
	const char *dir = getenv("FUZZ_ARTIFACT_DIR");
	int c;

	while ((c = getopt(argc, argv, "t:m:w:")) != -1) {
		switch (c) {
		case 't':
			budget = strtod(optarg, NULL);
			break;
		case 'm':
			mutations = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'w':
			return write_seeds(optarg, seeds, n);
		default:
			fprintf(stderr, "usage: fuzz_proto_replay [-t SECONDS] [-m N] [-w DIR]\n");
			return 2;
		}
	}
	if (dir && dir[0]) {
		snprintf(artifact, sizeof(artifact), "%s/crash-replay", dir);
		artifact_path = artifact;
	}
	signal(SIGABRT, on_abort);
	signal(SIGSEGV, on_abort);
	deadline = t0 + budget;

	for (size_t i = 0; i < n; i++) {
		const struct seed *s = &seeds[i];

		for (uint8_t mode = 0; mode < 4; mode++) {
			memcpy(buf, s->p, s->len);
			buf[0] = mode;
			if (!run(buf, s->len))
				goto out;
		}
		for (size_t k = 0; k < s->len; k += 3)
			if (!run(s->p, k))
				goto out;
		for (size_t off = 1; off + 4 <= s->len; off += 2)
			for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e += 3) {
				memcpy(buf, s->p, s->len);
				buf[off] = (uint8_t)(edges[e] >> 24);
				buf[off + 1] = (uint8_t)(edges[e] >> 16);
				buf[off + 2] = (uint8_t)(edges[e] >> 8);
				buf[off + 3] = (uint8_t)edges[e];
				if (!run(buf, s->len))
					goto out;
			}
		for (unsigned m = 0; m < mutations; m++) {
			unsigned changes = 1 + (unsigned)(rng() % 4);

			memcpy(buf, s->p, s->len);
			for (unsigned k = 0; k < changes; k++)
				buf[rng() % s->len] = (uint8_t)rng();
			if (!run(buf, s->len))
				goto out;
		}
	}
out:
	printf("%lu inputs from %zu seeds in %.1f s%s\n", runs, n, now_s() - t0,
	       now_s() > deadline ? " (time budget spent, stopped early)" : "");
	return 0;
}
