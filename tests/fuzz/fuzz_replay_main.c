/* SPDX-License-Identifier: MIT */
/*
 * fuzz_replay_main.c - runs LLVMFuzzerTestOneInput without libFuzzer.
 *
 *   fuzz_qcow_open_replay [-m MUTATIONS] [-t SECONDS] FILE|DIR...
 *
 * Every seed (each regular file, or each file in a directory) is run as
 * is, then as deterministic mutations: every header field (qcow2 spec,
 * 'Header') poked to a list of edge values, L1/L2/refcount table entries
 * poked to hostile values, and seeded random bit flips, mostly in the
 * header cluster and the tables.  Same inputs on every run, so a failure
 * reproduces; a finding aborts, and the input that was running is written
 * to $FUZZ_ARTIFACT_DIR/crash-replay if that is set.
 *
 * -m bounds the random flips per seed, -t stops early (successfully, with a
 * note) once the time budget is spent, to keep CI runs bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seeds above this are skipped: mutations copy the whole image each time. */
#define REPLAY_MAX_SEED_BYTES (16u << 20)

struct field {
	uint32_t off;
	uint8_t width; /* bytes */
};

/*
 * The header fields (qcow2 spec, 'Header'), then the type and length of the
 * first header extension, at 112 in the images qemu and qcow_create write.
 */
static const struct field header_fields[] = {
    {0, 4},  {4, 4},  {8, 8},  {16, 4},  {20, 4},  {24, 8},  {32, 4},
    {36, 4}, {40, 8}, {48, 8}, {56, 4},  {60, 4},  {64, 8},  {72, 8},
    {80, 8}, {88, 8}, {96, 4}, {100, 4}, {104, 1}, {112, 4}, {116, 4},
};

static const uint64_t edge_values[] = {
    0,          1,
    2,          3,
    7,          8,
    9,          16,
    21,         22,
    63,         64,
    104,        112,
    512,        513,
    0x10000,    0x10200,
    0x7fffffff, 0x80000000,
    0xffffffff, 1ull << 40,
    1ull << 56, (1ull << 56) - 512,
    1ull << 63, 0x8000000000000001ull,
    UINT64_MAX,
};

/* Hostile values for table entries; some are relative to the file size. */
static const uint64_t entry_values[] = {
    0,
    1,
    0x200,
    1ull << 63,
    (1ull << 63) | 0x200,
    (1ull << 62),
    (1ull << 62) | 0x3fffffffffffffffull,
    (1ull << 63) | (1ull << 40),
    (1ull << 40),
    0x3f000000000001feull,
    UINT64_MAX,
};

struct seed {
	char *name;
	uint8_t *data;
	size_t size;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t get_be(const uint8_t *p, size_t size, uint64_t off, unsigned width)
{
	uint64_t v = 0;

	if (off > size || width > size - off)
		return 0;
	for (unsigned i = 0; i < width; i++)
		v = v << 8 | p[off + i];
	return v;
}

static void put_be(uint8_t *p, size_t size, uint64_t off, unsigned width, uint64_t v)
{
	if (off > size || width > size - off)
		return;
	for (unsigned i = 0; i < width; i++)
		p[off + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
}

static const char *artifact_path;
static unsigned long runs;
static double deadline;
static bool out_of_time;
static const uint8_t *cur_data;
static size_t cur_size;

/* Provided by the sanitizer runtimes; absent (NULL) in plain builds. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

/* Leaves the input that was running in artifact_path (async-signal-safe). */
static void save_current(void)
{
	size_t done = 0;
	int fd;

	if (!artifact_path || !cur_data)
		return;
	fd = open(artifact_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return;
	while (done < cur_size) {
		ssize_t n = write(fd, cur_data + done, cur_size - done);

		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
}

static void on_fatal_signal(int sig)
{
	save_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void run(const uint8_t *data, size_t size)
{
	if (now_s() > deadline) {
		out_of_time = true;
		return;
	}
	cur_data = data;
	cur_size = size;
	LLVMFuzzerTestOneInput(data, size);
	cur_data = NULL;
	runs++;
}

static int read_file(const char *path, struct seed *s)
{
	FILE *f = fopen(path, "rb");
	struct stat st;

	if (!f)
		return -errno;
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > REPLAY_MAX_SEED_BYTES) {
		fclose(f);
		return -EINVAL;
	}
	s->size = (size_t)st.st_size;
	s->data = malloc(s->size ? s->size : 1);
	s->name = strdup(path);
	if (!s->data || !s->name || fread(s->data, 1, s->size, f) != s->size) {
		fclose(f);
		free(s->data);
		free(s->name);
		return -EIO;
	}
	fclose(f);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(((const struct seed *)a)->name, ((const struct seed *)b)->name);
}

static int add_path(const char *path, struct seed **seeds, size_t *n)
{
	struct stat st;
	struct seed s;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;

		if (!d)
			return -1;
		while ((e = readdir(d))) {
			char sub[4096];

			if (e->d_name[0] == '.')
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			if (add_path(sub, seeds, n) < 0) {
				closedir(d);
				return -1;
			}
		}
		closedir(d);
		return 0;
	}
	if (read_file(path, &s) < 0) {
		fprintf(stderr, "%s: skipped (not a readable regular file <= 16 MiB)\n", path);
		return 0;
	}
	*seeds = realloc(*seeds, (*n + 1) * sizeof(**seeds));
	if (!*seeds)
		return -1;
	(*seeds)[(*n)++] = s;
	return 0;
}

static void poke_header_fields(const struct seed *s, uint8_t *buf)
{
	for (size_t f = 0; f < sizeof(header_fields) / sizeof(header_fields[0]); f++) {
		const struct field *fd = &header_fields[f];
		uint64_t old = get_be(s->data, s->size, fd->off, fd->width);

		for (size_t v = 0; v < sizeof(edge_values) / sizeof(edge_values[0]); v++) {
			uint64_t val = edge_values[v];

			if (fd->width < 8)
				val &= (1ull << (8 * fd->width)) - 1;
			if (val == old)
				continue;
			memcpy(buf, s->data, s->size);
			put_be(buf, s->size, fd->off, fd->width, val);
			run(buf, s->size);
		}
		/* old value +- one cluster-ish step */
		memcpy(buf, s->data, s->size);
		put_be(buf, s->size, fd->off, fd->width, old + 512);
		run(buf, s->size);
	}
}

/* Table entries worth poking: L1[0], L1[1], its L2[0..3], reftable[0], refblock[0..3]. */
static size_t table_entry_offsets(const struct seed *s, uint64_t out[16], uint64_t *cluster)
{
	uint32_t bits = (uint32_t)get_be(s->data, s->size, 20, 4);
	uint64_t l1 = get_be(s->data, s->size, 40, 8);
	uint64_t rt = get_be(s->data, s->size, 48, 8);
	uint64_t l2, rb;
	size_t n = 0;

	if (bits < 9 || bits > 21)
		return 0;
	*cluster = 1ull << bits;
	if (l1 && l1 < s->size) {
		out[n++] = l1;
		out[n++] = l1 + 8;
		l2 = get_be(s->data, s->size, l1, 8) & 0x00fffffffffffe00ull;
		for (int i = 0; l2 && l2 < s->size && i < 4; i++)
			out[n++] = l2 + 8 * (uint64_t)i;
	}
	if (rt && rt < s->size) {
		out[n++] = rt;
		rb = get_be(s->data, s->size, rt, 8) & ~0x1ffull;
		for (int i = 0; rb && rb < s->size && i < 4; i++)
			out[n++] = rb + 2 * (uint64_t)i;
	}
	return n;
}

static void poke_table_entries(const struct seed *s, uint8_t *buf)
{
	uint64_t offs[16], cluster = 0;
	size_t n = table_entry_offsets(s, offs, &cluster);
	uint64_t l1 = get_be(s->data, s->size, 40, 8);
	uint64_t rt = get_be(s->data, s->size, 48, 8);

	for (size_t i = 0; i < n; i++) {
		uint64_t rel[] = {
		    (1ull << 63) | l1,              /* points at the L1 table */
		    (1ull << 63) | rt,              /* at the refcount table */
		    (1ull << 63) | s->size,         /* just past EOF */
		    (1ull << 62) | (s->size - 100), /* compressed, spanning EOF */
		    (1ull << 63) | cluster,         /* the cluster after the header */
		};

		for (size_t v = 0; v < sizeof(entry_values) / sizeof(entry_values[0]); v++) {
			memcpy(buf, s->data, s->size);
			put_be(buf, s->size, offs[i], 8, entry_values[v]);
			run(buf, s->size);
		}
		for (size_t v = 0; v < sizeof(rel) / sizeof(rel[0]); v++) {
			memcpy(buf, s->data, s->size);
			put_be(buf, s->size, offs[i], 8, rel[v]);
			run(buf, s->size);
		}
	}
}

/* Random bit flips and byte sets, mostly in cluster 0 and the tables. */
static void flip_bits(const struct seed *s, uint8_t *buf, unsigned count)
{
	uint64_t offs[16], cluster = 512;
	size_t n = table_entry_offsets(s, offs, &cluster);

	if (!s->size)
		return;
	for (unsigned i = 0; i < count; i++) {
		unsigned flips = 1 + (unsigned)(rng() % 4);

		memcpy(buf, s->data, s->size);
		for (unsigned f = 0; f < flips; f++) {
			uint64_t r = rng(), pos;

			switch (r % 4) {
			case 0:
			case 1:
				pos = (r >> 8) % (s->size < 512 ? s->size : 512);
				break;
			case 2:
				pos = n ? offs[(r >> 8) % n] + ((r >> 20) % 8) : (r >> 8) % s->size;
				break;
			default:
				pos = (r >> 8) % s->size;
				break;
			}
			if (pos >= s->size)
				continue;
			if (r & (1ull << 40))
				buf[pos] ^= (uint8_t)(1u << ((r >> 32) % 8));
			else
				buf[pos] = (uint8_t)(r >> 48);
		}
		run(buf, s->size);
	}
	(void)cluster;
}

/* Truncations: every short prefix of the header, then cluster boundaries. */
static void truncations(const struct seed *s)
{
	static const size_t cuts[] = {0, 1, 4, 8, 50, 71, 72, 103, 104, 111, 112, 512, 4096, 65536};

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		if (cuts[i] < s->size)
			run(s->data, cuts[i]);
}

static void usage(void)
{
	fprintf(stderr, "usage: fuzz_qcow_open_replay [-m FLIPS] [-t SECONDS] FILE|DIR...\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct seed *seeds = NULL;
	size_t nseeds = 0;
	unsigned flips = 300;
	double budget = 70, t0 = now_s();
	char artifact[4096];
	const char *dir = getenv("FUZZ_ARTIFACT_DIR");
	int opt;

	while ((opt = getopt(argc, argv, "m:t:")) != -1) {
		switch (opt) {
		case 'm':
			flips = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 't':
			budget = strtod(optarg, NULL);
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage();
	for (int i = optind; i < argc; i++)
		if (add_path(argv[i], &seeds, &nseeds) < 0)
			return 1;
	if (nseeds == 0) {
		fprintf(stderr, "no seeds\n");
		return 1;
	}
	qsort(seeds, nseeds, sizeof(*seeds), cmp_names);
	if (dir && dir[0]) {
		snprintf(artifact, sizeof(artifact), "%s/crash-replay", dir);
		artifact_path = artifact;
		signal(SIGABRT, on_fatal_signal);
		signal(SIGSEGV, on_fatal_signal);
		signal(SIGBUS, on_fatal_signal);
		signal(SIGFPE, on_fatal_signal);
		if (__sanitizer_set_death_callback)
			__sanitizer_set_death_callback(save_current);
	}
	deadline = t0 + budget;

	for (size_t i = 0; i < nseeds && !out_of_time; i++) {
		struct seed *s = &seeds[i];
		uint8_t *buf = malloc(s->size ? s->size : 1);
		unsigned long before = runs;

		if (!buf)
			return 1;
		rng_state = 0x9e3779b97f4a7c15ull ^ (i + 1) * 0x100000001b3ull;
		run(s->data, s->size);
		truncations(s);
		poke_header_fields(s, buf);
		poke_table_entries(s, buf);
		flip_bits(s, buf, flips);
		printf("%-50s %8zu bytes %6lu inputs\n", s->name, s->size, runs - before);
		free(buf);
	}
	printf("%lu inputs from %zu seeds in %.1f s%s\n", runs, nseeds, now_s() - t0,
	       out_of_time ? " (time budget spent, stopped early)" : "");
	for (size_t i = 0; i < nseeds; i++) {
		free(seeds[i].data);
		free(seeds[i].name);
	}
	free(seeds);
	return 0;
}
