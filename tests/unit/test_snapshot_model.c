/* SPDX-License-Identifier: MIT */
/*
 * Model-based stress of internal snapshots: hundreds of random writes,
 * zero writes, discards and snapshot create/delete/revert, with reopens,
 * against an in-memory model of the active disk and of every snapshot.
 * At the end every snapshot and the active image must read exactly as
 * modelled, and check must find no corruption and no leak (and so must
 * qemu-img check, when it is installed).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow.h"

#define DISK      (8u << 20)
#define MAX_SNAPS 12

struct model {
	uint8_t *active;
	char names[MAX_SNAPS][16];
	uint8_t *snaps[MAX_SNAPS]; /* NULL: slot unused */
};

static char dir[] = "/tmp/qcow-snapmodel-XXXXXX";
static char path[sizeof(dir) + 16];
static uint64_t rng;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static struct qcow_image *reopen(struct qcow_image *img)
{
	struct qcow_open_opts o = {.path = path, .flags = QCOW_OPEN_RDWR};
	char err[512];

	if (img)
		cr_assert_eq(qcow_close(img), 0);
	cr_assert_eq(qcow_open(&o, &img, err, sizeof(err)), 0, "%s", err);
	return img;
}

static void expect_reads(struct qcow_image *img, const uint8_t *want, uint64_t off, size_t len,
                         const char *what, int step)
{
	uint8_t *got = malloc(len);

	cr_assert_eq(qcow_read(img, got, off, len), 0, "%s", qcow_last_error(img));
	cr_assert_eq(memcmp(got, want + off, len), 0, "%s differs at step %d (off %llu len %zu)",
	             what, step, (unsigned long long)off, len);
	free(got);
}

static void step_io(struct qcow_image *img, struct model *m, uint32_t cs, int step)
{
	uint64_t off = next() % DISK, len = 1 + next() % (3 * cs);
	unsigned op = next() % 4;

	if (off + len > DISK)
		len = DISK - off;
	if (op == 0 || op == 1) {
		uint8_t *buf = malloc(len);

		for (uint64_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(step * 7 + i);
		cr_assert_eq(qcow_write(img, buf, off, len), 0, "%s", qcow_last_error(img));
		memcpy(m->active + off, buf, len);
		free(buf);
	} else if (op == 2) {
		cr_assert_eq(qcow_write_zeroes(img, off, len, next() % 2 ? QCOW_ZERO_MAY_UNMAP : 0),
		             0, "%s", qcow_last_error(img));
		memset(m->active + off, 0, len);
	} else {
		uint64_t first = (off + cs - 1) / cs * cs, end = (off + len) / cs * cs;

		cr_assert_eq(qcow_discard(img, off, len), 0, "%s", qcow_last_error(img));
		if (off + len == DISK)
			end = DISK;
		if (end > first)
			memset(m->active + first, 0, end - first);
	}
	expect_reads(img, m->active, off, len, "active", step);
}

static void step_snapshot(struct qcow_image *img, struct model *m, int step)
{
	unsigned slot = next() % MAX_SNAPS, op = next() % 3;

	if (!m->snaps[slot]) {
		snprintf(m->names[slot], sizeof(m->names[slot]), "s%d", step);
		cr_assert_eq(qcow_snapshot_create(img, m->names[slot]), 0, "%s",
		             qcow_last_error(img));
		m->snaps[slot] = malloc(DISK);
		memcpy(m->snaps[slot], m->active, DISK);
		cr_assert_eq(qcow_snapshot_create(img, m->names[slot]), -EEXIST);
	} else if (op == 0) {
		cr_assert_eq(qcow_snapshot_delete(img, m->names[slot]), 0, "%s",
		             qcow_last_error(img));
		free(m->snaps[slot]);
		m->snaps[slot] = NULL;
		cr_assert_eq(qcow_snapshot_delete(img, m->names[slot]), -ENOENT);
	} else {
		cr_assert_eq(qcow_snapshot_revert(img, m->names[slot]), 0, "%s",
		             qcow_last_error(img));
		memcpy(m->active, m->snaps[slot], DISK);
	}
}

static void verify_all(struct model *m, int step)
{
	struct qcow_open_opts o = {.path = path};
	struct qcow_check_result res;
	struct qcow_image *img;
	char err[512];

	cr_assert_eq(qcow_open(&o, &img, err, sizeof(err)), 0, "%s", err);
	expect_reads(img, m->active, 0, DISK, "active", step);
	cr_assert_eq(qcow_check(img, 0, &res), 0);
	cr_assert(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0,
	          "check: %llu corruptions, %llu leaks", (unsigned long long)res.corruptions,
	          (unsigned long long)res.leaks);
	qcow_close(img);
	for (int i = 0; i < MAX_SNAPS; i++) {
		if (!m->snaps[i])
			continue;
		o.snapshot = m->names[i];
		cr_assert_eq(qcow_open(&o, &img, err, sizeof(err)), 0, "%s", err);
		expect_reads(img, m->snaps[i], 0, DISK, m->names[i], step);
		qcow_close(img);
	}
}

static void run(uint32_t cs, uint64_t seed, int steps)
{
	struct qcow_create_opts co = {.size_bytes = DISK, .cluster_size = cs};
	struct model m = {.active = calloc(1, DISK)};
	struct qcow_image *img = NULL;
	char err[512], cmd[256];
	int n_snap = 0;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.qcow2", dir);
	co.path = path;
	cr_assert_eq(qcow_create(&co, err, sizeof(err)), 0, "%s", err);
	rng = seed;
	img = reopen(NULL);
	for (int step = 0; step < steps; step++) {
		unsigned r = next() % 100;

		if (r < 70) {
			step_io(img, &m, cs, step);
		} else if (r < 95) {
			step_snapshot(img, &m, step);
			n_snap++;
		} else {
			img = reopen(img);
		}
	}
	cr_assert_gt(n_snap, steps / 10, "too few snapshot steps to mean anything");
	cr_assert_eq(qcow_close(img), 0);
	verify_all(&m, steps);
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s' >/dev/null 2>&1", path);
	if (system("command -v qemu-img >/dev/null") == 0)
		cr_assert_eq(system(cmd), 0, "qemu-img check finds problems (seed %llu)",
		             (unsigned long long)seed);
	for (int i = 0; i < MAX_SNAPS; i++)
		free(m.snaps[i]);
	free(m.active);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static int steps(void)
{
	return getenv("BLOCKD_SANITIZED") ? 500 : 1500;
}

Test(qcow_snapshot_model, cluster_64k)
{
	run(65536, 0x5eed0001, steps());
}

Test(qcow_snapshot_model, cluster_4k)
{
	run(4096, 0x5eed0002, steps());
}

Test(qcow_snapshot_model, cluster_512)
{
	run(512, 0x5eed0003, steps() / 2);
}
