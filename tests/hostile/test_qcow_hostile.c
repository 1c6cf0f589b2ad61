/* SPDX-License-Identifier: MIT */
/*
 * test_qcow_hostile.c - crafted qcow2 images fed to the qcow library.
 *
 * Every test starts from a valid image made by qcow_create (or qemu-img,
 * when the test is about something only qemu makes), then pokes big-endian
 * fields at the offsets of the qcow2 spec's 'Header' to build one of the
 * inputs qemu-iotests 080 and 060 craft (bad header fields, feature bits,
 * table offsets and sizes, header extensions, L1/L2 entries).  Two kinds of outcome are
 * checked:
 *
 *  - rejections: qcow_open returns a negative errno and writes one line
 *    naming the file and the problem (a keyword is checked);
 *  - images that may open but carry a bad table: the read or write that
 *    reaches the bad entry returns a negative errno, the process survives,
 *    and nothing is ever written over metadata (the header cluster, the L1
 *    table, the refcount table and the data already there are compared
 *    byte for byte afterwards).  Every way a cluster is written or given
 *    back is tried through an entry naming metadata: write, copy-on-write,
 *    overwrite of a compressed cluster, discard, write-zeroes with unmap,
 *    the dirty-bit rebuild, check --repair, and the non-blocking
 *    qcow_map_cached path the daemon uses.
 *
 * Only the public API (qcow.h) is used; images live in a mkdtemp directory
 * that is removed after each test.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "qcow.h"

#if defined(__SANITIZE_ADDRESS__)
#define HOSTILE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOSTILE_ASAN 1
#endif
#endif
#ifndef HOSTILE_ASAN
#define HOSTILE_ASAN 0
#endif

/* Header byte offsets (qcow2 spec, 'Header'). */
enum {
	H_MAGIC = 0,
	H_VERSION = 4,
	H_BACKING_OFFSET = 8,
	H_BACKING_SIZE = 16,
	H_CLUSTER_BITS = 20,
	H_SIZE = 24,
	H_CRYPT = 32,
	H_L1_SIZE = 36,
	H_L1_OFFSET = 40,
	H_RT_OFFSET = 48,
	H_RT_CLUSTERS = 56,
	H_NB_SNAPSHOTS = 60,
	H_SNAPSHOTS_OFFSET = 64,
	H_INCOMPAT = 72,
	H_COMPAT = 80,
	H_AUTOCLEAR = 88,
	H_REFCOUNT_ORDER = 96,
	H_HEADER_LENGTH = 100,
	H_COMPRESSION_TYPE = 104,
};

#define INCOMPAT_DIRTY       (1ull << 0)
#define INCOMPAT_CORRUPT     (1ull << 1)
#define INCOMPAT_DATA_FILE   (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2       (1ull << 4)
#define OFLAG_COPIED         (1ull << 63)
#define OFLAG_COMPRESSED     (1ull << 62)
#define OFFSET_MASK          0x00fffffffffffe00ull

#define MiB             (1ull << 20)
#define GiB             (1ull << 30)
#define DEFAULT_SIZE    (64 * MiB)
#define DEFAULT_CLUSTER 65536u
#define ERRLEN          1024
/*
 * Not PATH_MAX: the qcow target exports its folder as an include path, so
 * <limits.h> here would be qcow/limits.h.
 */
#define PATHLEN 4096

/* Pattern of the guest data written before the image is damaged. */
#define OLD_BYTE 0x11
/* Pattern of the write attempted through the damaged metadata. */
#define NEW_BYTE 0xab

static char g_dir[PATHLEN];

/* ---- temporary directory -------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void setup(void)
{
	snprintf(g_dir, sizeof(g_dir), "%s/qcow-hostile-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(g_dir), "mkdtemp: %s", strerror(errno));
}

static void teardown(void)
{
	if (g_dir[0])
		nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(qcow_hostile, .init = setup, .fini = teardown, .timeout = 60);

static void path_of(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", g_dir, name);

	cr_assert(n > 0 && (size_t)n < len);
}

/* ---- raw file access (big-endian pokes) ------------------------------ */

static void raw_write(const char *path, const void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_WRONLY);

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len, "pwrite %s", path);
	close(fd);
}

static void raw_read(const char *path, void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	memset(buf, 0, len);
	n = pread(fd, buf, len, (off_t)off);
	cr_assert(n >= 0, "pread %s", path);
	close(fd);
}

static void poke8(const char *path, uint64_t off, uint8_t v)
{
	raw_write(path, &v, 1, off);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	raw_write(path, b, 4, off);
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	raw_write(path, b, 8, off);
}

static uint32_t peek32(const char *path, uint64_t off)
{
	uint8_t b[4];

	raw_read(path, b, 4, off);
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t peek64(const char *path, uint64_t off)
{
	uint8_t b[8];
	uint64_t v = 0;

	raw_read(path, b, 8, off);
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return (uint64_t)st.st_size;
}

static void *read_all(const char *path, uint64_t off, size_t len)
{
	void *buf = malloc(len);

	cr_assert_not_null(buf);
	raw_read(path, buf, len, off);
	return buf;
}

/* ---- building images -------------------------------------------------- */

struct mk {
	uint64_t size;
	uint32_t cluster;
	const char *backing;
	bool lazy;
	enum qcow_compression compression;
};

static void make_image_opts(const char *path, const struct mk *m)
{
	struct qcow_create_opts o = {
	    .path = path,
	    .size_bytes = m->size ? m->size : DEFAULT_SIZE,
	    .cluster_size = m->cluster ? m->cluster : DEFAULT_CLUSTER,
	    .backing_file = m->backing,
	    .lazy_refcounts = m->lazy,
	    .compression = m->compression,
	};
	char err[ERRLEN] = "";
	int rc = qcow_create(&o, err, sizeof(err));

	cr_assert_eq(rc, 0, "qcow_create %s: %d %s", path, rc, err);
}

static void make_image(const char *path)
{
	struct mk m = {0};

	make_image_opts(path, &m);
}

static int open_image(const char *path, unsigned flags, struct qcow_image **img, char *err)
{
	struct qcow_open_opts o = {.path = path, .flags = flags};

	err[0] = '\0';
	*img = NULL;
	return qcow_open(&o, img, err, ERRLEN);
}

/* Writes four clusters of OLD_BYTE at guest offset 0 and closes. */
static void fill_start(const char *path)
{
	struct qcow_image *img;
	char err[ERRLEN];
	size_t len = 4 * DEFAULT_CLUSTER;
	void *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	memset(buf, OLD_BYTE, len);
	rc = open_image(path, QCOW_OPEN_RDWR, &img, err);
	cr_assert_eq(rc, 0, "open %s: %d %s", path, rc, err);
	rc = qcow_write(img, buf, 0, len);
	cr_assert_eq(rc, 0, "write: %d %s", rc, qcow_last_error(img));
	cr_assert_eq(qcow_close(img), 0);
	free(buf);
}

/* Where qcow_create and the first writes put things. */
struct layout {
	uint32_t cluster;
	uint32_t header_length;
	uint64_t l1_off;
	uint64_t rt_off;
	uint64_t rb_off;   /* first refcount block */
	uint64_t l2_off;   /* L2 table of guest offset 0 */
	uint64_t data_off; /* host cluster of guest cluster 0 */
	uint64_t file_size;
};

static struct layout get_layout(const char *path)
{
	struct layout l = {0};
	uint32_t bits = peek32(path, H_CLUSTER_BITS);

	cr_assert(bits >= 9 && bits <= 21, "cluster_bits %u", bits);
	l.cluster = 1u << bits;
	l.header_length = peek32(path, H_HEADER_LENGTH);
	l.l1_off = peek64(path, H_L1_OFFSET);
	l.rt_off = peek64(path, H_RT_OFFSET);
	l.rb_off = peek64(path, l.rt_off) & ~0x1ffull;
	l.l2_off = peek64(path, l.l1_off) & OFFSET_MASK;
	if (l.l2_off)
		l.data_off = peek64(path, l.l2_off) & OFFSET_MASK;
	l.file_size = file_size(path);
	return l;
}

/* A 64 MiB image, 64 KiB clusters, four clusters of data at offset 0. */
static struct layout make_filled(const char *path)
{
	struct layout l;

	make_image(path);
	fill_start(path);
	l = get_layout(path);
	cr_assert_neq(l.l2_off, 0, "no L2 table after a write");
	cr_assert_neq(l.data_off, 0, "no data cluster after a write");
	cr_assert_eq(l.l2_off % l.cluster, 0);
	cr_assert_eq(l.data_off % l.cluster, 0);
	return l;
}

/* Stores name as the backing file of path (after the extensions, in cluster 0). */
static void set_backing(const char *path, const char *name)
{
	raw_write(path, name, strlen(name), 4096);
	poke64(path, H_BACKING_OFFSET, 4096);
	poke32(path, H_BACKING_SIZE, (uint32_t)strlen(name));
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

static int run(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- checking outcomes ------------------------------------------------ */

/* True if hay contains one of the '|'-separated keywords, ignoring case. */
static bool has_keyword(const char *hay, const char *keywords)
{
	char buf[256];
	char *save = NULL;

	if (!keywords[0])
		return true;
	snprintf(buf, sizeof(buf), "%s", keywords);
	for (char *k = strtok_r(buf, "|", &save); k; k = strtok_r(NULL, "|", &save))
		if (strcasestr(hay, k))
			return true;
	return false;
}

static void check_message(const char *err, const char *names, const char *keywords)
{
	cr_log_info("message: %s", err);
	cr_assert(err[0] != '\0', "empty error message");
	cr_assert_null(strchr(err, '\n'), "message is not one line: \"%s\"", err);
	cr_assert(strlen(err) < ERRLEN - 1, "message fills the whole buffer");
	cr_assert_not_null(strstr(err, names), "message \"%s\" does not name \"%s\"", err, names);
	cr_assert(has_keyword(err, keywords), "message \"%s\" does not mention %s", err, keywords);
}

/* qcow_open must refuse path (flags) with a message naming it and the problem. */
static void expect_reject_named(const char *path, unsigned flags, const char *names,
                                const char *keywords)
{
	struct qcow_image *img = NULL;
	char err[ERRLEN];
	int rc = open_image(path, flags, &img, err);

	if (rc == 0) {
		qcow_close(img);
		cr_assert_fail("%s opened (flags %u) but should be refused (%s)", path, flags,
		               keywords);
	}
	cr_assert_lt(rc, 0, "rc %d", rc);
	cr_assert_null(img, "out-parameter written on failure");
	check_message(err, names, keywords);
}

static void expect_reject(const char *path, unsigned flags, const char *keywords)
{
	expect_reject_named(path, flags, path, keywords);
}

/* Refused both read-only and read-write. */
static void expect_reject_both(const char *path, const char *keywords)
{
	expect_reject(path, 0, keywords);
	expect_reject(path, QCOW_OPEN_RDWR, keywords);
}

static void expect_opens(const char *path, unsigned flags)
{
	struct qcow_image *img;
	char err[ERRLEN];
	int rc = open_image(path, flags, &img, err);

	cr_assert_eq(rc, 0, "valid image %s refused: %d %s", path, rc, err);
	cr_assert_eq(qcow_close(img), 0);
}

/*
 * The image may open; then a read of [off, off+len) must fail with a
 * negative errno and a message.  Returns true if it opened.
 */
static bool expect_read_fails(const char *path, unsigned flags, uint64_t off, size_t len)
{
	struct qcow_image *img;
	char err[ERRLEN];
	void *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	rc = open_image(path, flags, &img, err);
	if (rc < 0) {
		/* Refusing the image at open is fine too, with a proper message. */
		check_message(err, path, "");
		free(buf);
		return false;
	}
	rc = qcow_read(img, buf, off, len);
	cr_expect_lt(rc, 0, "read of bad range [%" PRIu64 ", +%zu) returned %d", off, len, rc);
	if (rc < 0) {
		cr_expect(rc >= -4095, "rc %d is not an errno", rc);
		check_message(qcow_last_error(img), path, "");
	}
	qcow_close(img);
	free(buf);
	return true;
}

/* The image may open rw; then a write to [off, off+len) must fail. */
static void expect_write_fails(const char *path, uint64_t off, size_t len)
{
	struct qcow_image *img;
	char err[ERRLEN];
	void *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	memset(buf, NEW_BYTE, len);
	rc = open_image(path, QCOW_OPEN_RDWR, &img, err);
	if (rc < 0) {
		check_message(err, path, "");
		free(buf);
		return;
	}
	rc = qcow_write(img, buf, off, len);
	cr_expect_lt(rc, 0, "write through bad metadata at %" PRIu64 " returned %d", off, rc);
	if (rc < 0)
		check_message(qcow_last_error(img), path, "");
	qcow_close(img);
	free(buf);
}

/*
 * qcow_check on a read-only open must complete and notice the damage
 * (qemu-img check flags all of these); a refused open is fine too.
 */
static void expect_check_finds(const char *path)
{
	struct qcow_image *img;
	struct qcow_check_result res;
	char err[ERRLEN];
	int rc = open_image(path, 0, &img, err);

	if (rc < 0) {
		check_message(err, path, "");
		return;
	}
	memset(&res, 0, sizeof(res));
	rc = qcow_check(img, 0, &res);
	cr_expect_eq(rc, 0, "check: %d %s", rc, qcow_last_error(img));
	cr_log_info("check: corruptions %" PRIu64 " leaks %" PRIu64 " errors %" PRIu64,
	            res.corruptions, res.leaks, res.check_errors);
	cr_expect_gt(res.corruptions + res.check_errors, 0, "check found nothing wrong");
	qcow_close(img);
}

/*
 * Opens rw (if the library lets it), writes NEW_BYTE at each of the guest
 * offsets given, closes.  Whatever the calls return, they must not crash.
 * Returns the number of writes that reported success.
 */
static int try_writes(const char *path, const uint64_t *offs, int n, size_t len)
{
	struct qcow_image *img;
	char err[ERRLEN];
	void *buf = malloc(len);
	int rc, ok = 0;

	cr_assert_not_null(buf);
	memset(buf, NEW_BYTE, len);
	rc = open_image(path, QCOW_OPEN_RDWR, &img, err);
	if (rc < 0) {
		check_message(err, path, "");
		free(buf);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		rc = qcow_write(img, buf, offs[i], len);
		cr_log_info("write at %" PRIu64 ": %d", offs[i], rc);
		if (rc == 0)
			ok++;
		else
			check_message(qcow_last_error(img), path, "");
	}
	rc = qcow_flush(img);
	(void)rc;
	qcow_close(img);
	free(buf);
	return ok;
}

static bool contains_run(const uint8_t *p, size_t len, uint8_t byte, size_t run)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		n = p[i] == byte ? n + 1 : 0;
		if (n >= run)
			return true;
	}
	return false;
}

/* No run of the new write's pattern landed in [off, off+len) of the file. */
static void expect_no_new_data(const char *path, uint64_t off, size_t len, const char *what)
{
	uint8_t *p = read_all(path, off, len);

	cr_expect(!contains_run(p, len, NEW_BYTE, 64),
	          "guest data was written over the %s at host offset %" PRIu64, what, off);
	free(p);
}

/*
 * The header cluster is unchanged, except for bits a writer may
 * legitimately flip there: dirty/corrupt and the autoclear field, and, if
 * allow_rt_move, the refcount table location (a rebuild moves it).
 */
static void expect_header_same(const uint8_t *before, const char *path, uint32_t cluster,
                               bool allow_rt_move)
{
	uint8_t *after = read_all(path, 0, cluster);
	uint8_t mask[4096];
	uint32_t n = cluster < sizeof(mask) ? cluster : sizeof(mask);

	memset(mask, 0xff, sizeof(mask));
	mask[H_INCOMPAT + 7] = (uint8_t) ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
	memset(mask + H_AUTOCLEAR, 0, 8);
	if (allow_rt_move)
		memset(mask + H_RT_OFFSET, 0, 12);
	for (uint32_t i = 0; i < cluster; i++) {
		uint8_t m = i < n ? mask[i] : 0xff;

		if ((before[i] & m) != (after[i] & m)) {
			cr_expect_fail("header cluster byte %u changed: %#x -> %#x", i, before[i],
			               after[i]);
			break;
		}
	}
	free(after);
}

/* The guest data written by fill_start is still at its host cluster. */
static void expect_old_data_intact(const char *path, const struct layout *l)
{
	uint8_t *p = read_all(path, l->data_off, l->cluster);

	for (uint32_t i = 0; i < l->cluster; i++) {
		if (p[i] != OLD_BYTE) {
			cr_expect_fail("existing data cluster at %" PRIu64
			               " overwritten (byte %u = %#x)",
			               l->data_off, i, p[i]);
			break;
		}
	}
	free(p);
}

static void expect_same_bytes(const char *path, uint64_t off, const void *before, size_t len,
                              const char *what)
{
	uint8_t *after = read_all(path, off, len);

	cr_expect(memcmp(before, after, len) == 0, "%s at %" PRIu64 " changed", what, off);
	free(after);
}

/* ---- header: magic, version, cluster size, header length --------------- */

Test(qcow_hostile, bad_magic)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_MAGIC, 0x514649fcu);
	expect_reject_both(p, "magic|not a qcow");
}

Test(qcow_hostile, version_1)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_VERSION, 1);
	expect_reject_both(p, "version");
}

Test(qcow_hostile, version_4)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_VERSION, 4);
	expect_reject_both(p, "version");
}

Test(qcow_hostile, version_huge)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_VERSION, 0xffffffffu);
	expect_reject_both(p, "version");
}

Test(qcow_hostile, cluster_bits_8)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_CLUSTER_BITS, 8);
	expect_reject_both(p, "cluster");
}

Test(qcow_hostile, cluster_bits_22)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_CLUSTER_BITS, 22);
	expect_reject_both(p, "cluster");
}

Test(qcow_hostile, cluster_bits_64_and_max)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_CLUSTER_BITS, 64);
	expect_reject_both(p, "cluster");
	poke32(p, H_CLUSTER_BITS, 0xffffffffu);
	expect_reject_both(p, "cluster");
	poke32(p, H_CLUSTER_BITS, 0);
	expect_reject_both(p, "cluster");
}

Test(qcow_hostile, header_length_below_104)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_HEADER_LENGTH, 96);
	expect_reject_both(p, "header");
	poke32(p, H_HEADER_LENGTH, 72);
	expect_reject_both(p, "header");
	poke32(p, H_HEADER_LENGTH, 0);
	expect_reject_both(p, "header");
}

Test(qcow_hostile, header_length_not_multiple_of_8)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_HEADER_LENGTH, 108);
	expect_reject_both(p, "header");
	poke32(p, H_HEADER_LENGTH, 105);
	expect_reject_both(p, "header");
}

Test(qcow_hostile, header_length_larger_than_cluster)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_HEADER_LENGTH, DEFAULT_CLUSTER + 8);
	expect_reject_both(p, "header");
	poke32(p, H_HEADER_LENGTH, 0xfffffff8u);
	expect_reject_both(p, "header");
}

Test(qcow_hostile, header_length_larger_than_small_cluster)
{
	char p[PATHLEN];
	struct mk m = {.cluster = 512};

	path_of(p, sizeof(p), "img.qcow2");
	make_image_opts(p, &m);
	poke32(p, H_HEADER_LENGTH, 520);
	expect_reject_both(p, "header");
}

/* ---- feature bits ----------------------------------------------------- */

Test(qcow_hostile, unknown_incompatible_bit_5)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, 1ull << 5);
	expect_reject_both(p, "unknown incompatible feature");
}

Test(qcow_hostile, unknown_incompatible_bit_63)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, 1ull << 63);
	expect_reject_both(p, "unknown incompatible feature");
}

Test(qcow_hostile, unknown_compatible_bits_are_ignored)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_COMPAT, 0xfffffffffffffffeull);
	expect_opens(p, 0);
	expect_opens(p, QCOW_OPEN_RDWR);
}

Test(qcow_hostile, encryption_aes)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_CRYPT, 1);
	expect_reject_both(p, "encrypt");
}

Test(qcow_hostile, encryption_luks)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_CRYPT, 2);
	expect_reject_both(p, "encrypt");
}

Test(qcow_hostile, encryption_luks_from_qemu)
{
	char p[PATHLEN], cmd[PATHLEN * 2];

	if (!have_qemu_img())
		cr_skip_test("qemu-img not installed");
	path_of(p, sizeof(p), "luks.qcow2");
	snprintf(cmd, sizeof(cmd),
	         "qemu-img create -q -f qcow2 --object secret,id=s0,data=abc "
	         "-o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 %s 1M",
	         p);
	if (run(cmd) != 0)
		cr_skip_test("qemu-img cannot make LUKS images here");
	expect_reject_both(p, "encrypt");
}

Test(qcow_hostile, external_data_file_bit)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, INCOMPAT_DATA_FILE);
	expect_reject_both(p, "data file|data-file|data_file|external");
}

Test(qcow_hostile, external_data_file_from_qemu)
{
	char p[PATHLEN], d[PATHLEN], cmd[PATHLEN * 3];

	if (!have_qemu_img())
		cr_skip_test("qemu-img not installed");
	path_of(p, sizeof(p), "ext.qcow2");
	path_of(d, sizeof(d), "ext.raw");
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o data_file=%s %s 1M", d, p);
	cr_assert_eq(run(cmd), 0);
	expect_reject_both(p, "data file|data-file|data_file|external");
}

Test(qcow_hostile, extended_l2_bit)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, INCOMPAT_EXTL2);
	expect_reject_both(p, "extended l2|extended_l2|extended-l2|subcluster");
}

Test(qcow_hostile, extended_l2_from_qemu)
{
	char p[PATHLEN], cmd[PATHLEN * 2];

	if (!have_qemu_img())
		cr_skip_test("qemu-img not installed");
	path_of(p, sizeof(p), "extl2.qcow2");
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o extended_l2=on %s 1M", p);
	cr_assert_eq(run(cmd), 0);
	expect_reject_both(p, "extended l2|extended_l2|extended-l2|subcluster");
}

Test(qcow_hostile, corrupt_bit_refuses_read_write)
{
	char p[PATHLEN];
	uint8_t *before;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, INCOMPAT_CORRUPT);
	before = read_all(p, 0, DEFAULT_CLUSTER);
	expect_reject(p, QCOW_OPEN_RDWR, "corrupt");
	/* A refused open must not have cleared the bit or rewritten anything. */
	expect_same_bytes(p, 0, before, DEFAULT_CLUSTER, "header cluster");
	free(before);
}

Test(qcow_hostile, compression_type_without_bit)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	cr_assert_geq(peek32(p, H_HEADER_LENGTH), 112u, "qcow_create writes header_length 112");
	poke8(p, H_COMPRESSION_TYPE, 1);
	expect_reject_both(p, "compression");
}

Test(qcow_hostile, compression_type_unknown)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_INCOMPAT, INCOMPAT_COMPRESSION);
	poke8(p, H_COMPRESSION_TYPE, 2);
	expect_reject_both(p, "compression");
	poke8(p, H_COMPRESSION_TYPE, 0xff);
	expect_reject_both(p, "compression");
}

Test(qcow_hostile, refcount_order_7)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_REFCOUNT_ORDER, 7);
	expect_reject_both(p, "refcount");
	poke32(p, H_REFCOUNT_ORDER, 0xffffffffu);
	expect_reject_both(p, "refcount");
}

/* ---- table offsets and sizes ------------------------------------------ */

Test(qcow_hostile, l1_offset_misaligned)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	l = get_layout(p);
	poke64(p, H_L1_OFFSET, l.l1_off + 512);
	expect_reject_both(p, "l1");
}

Test(qcow_hostile, l1_offset_beyond_2_56)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_L1_OFFSET, 1ull << 56);
	expect_reject_both(p, "l1");
	poke64(p, H_L1_OFFSET, 0xffffffffffff0000ull);
	expect_reject_both(p, "l1");
}

Test(qcow_hostile, l1_offset_zero)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_L1_OFFSET, 0);
	/* The L1 table would be the header cluster: refuse. */
	expect_reject_both(p, "l1");
}

Test(qcow_hostile, reftable_offset_misaligned)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	l = get_layout(p);
	poke64(p, H_RT_OFFSET, l.rt_off + 512);
	expect_reject_both(p, "refcount|reftable");
}

Test(qcow_hostile, reftable_offset_beyond_2_56)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_RT_OFFSET, 1ull << 56);
	expect_reject_both(p, "refcount|reftable");
	poke64(p, H_RT_OFFSET, 0xffffffffffff0000ull);
	expect_reject_both(p, "refcount|reftable");
}

Test(qcow_hostile, snapshot_offset_misaligned)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_NB_SNAPSHOTS, 1);
	poke64(p, H_SNAPSHOTS_OFFSET, DEFAULT_CLUSTER + 512);
	expect_reject_both(p, "snapshot");
}

Test(qcow_hostile, snapshot_offset_beyond_2_56)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_NB_SNAPSHOTS, 1);
	poke64(p, H_SNAPSHOTS_OFFSET, 1ull << 56);
	expect_reject_both(p, "snapshot");
	poke64(p, H_SNAPSHOTS_OFFSET, 0xffffffffffff0000ull);
	expect_reject_both(p, "snapshot");
}

Test(qcow_hostile, l1_size_too_small_for_virtual_size)
{
	char p[PATHLEN];
	struct mk m = {.size = 2 * GiB};

	/* 2 GiB at 64 KiB clusters needs 4 L1 entries (512 MiB each). */
	path_of(p, sizeof(p), "img.qcow2");
	make_image_opts(p, &m);
	cr_assert_geq(peek32(p, H_L1_SIZE), 4u);
	poke32(p, H_L1_SIZE, 3);
	expect_reject_both(p, "l1");
	poke32(p, H_L1_SIZE, 0);
	expect_reject_both(p, "l1");
}

Test(qcow_hostile, virtual_size_grown_past_l1)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	/* 64 MiB needs one L1 entry; 1 TiB needs 2048. */
	poke64(p, H_SIZE, 1ull << 40);
	expect_reject_both(p, "l1|size");
}

Test(qcow_hostile, virtual_size_beyond_limit)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_SIZE, 0xfffffffffffffe00ull);
	expect_reject_both(p, "size|l1");
}

/* Current address-space size, from /proc/self/status (VmSize, kB). */
static uint64_t vm_size_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * Caps the address space of this test process (Criterion forks one per
 * test) at its current size + 256 MiB, so a library that believes an
 * absurd table size fails to allocate instead of swapping.  Not under
 * ASan, which reserves terabytes of shadow.
 */
static void limit_memory(void)
{
	static bool done;
	uint64_t cur = vm_size_bytes();
	struct rlimit rl;

	if (HOSTILE_ASAN || cur == 0 || done)
		return;
	done = true;
	rl.rlim_cur = rl.rlim_max = cur + 256 * MiB;
	cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Pokes a 32-bit size field of a fresh image to each absurd value (after
 * setting the 64-bit field pre_field to pre_value, if pre_field != 0);
 * each open must fail fast.
 */
static void absurd_u32(uint64_t field, const char *keywords, uint64_t pre_field, uint64_t pre_value)
{
	static const uint32_t values[] = {0x7fffffffu, 0x80000000u, 0xffffffffu, 0x01000000u};
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	if (pre_field)
		poke64(p, pre_field, pre_value);
	limit_memory();
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		double t0 = now_s();

		poke32(p, field, values[i]);
		expect_reject_both(p, keywords);
		cr_expect_lt(now_s() - t0, 2.0, "refusing value %#x took %.1f s", values[i],
		             now_s() - t0);
	}
}

Test(qcow_hostile, l1_size_absurd)
{
	absurd_u32(H_L1_SIZE, "l1", 0, 0);
}

Test(qcow_hostile, reftable_clusters_absurd)
{
	absurd_u32(H_RT_CLUSTERS, "refcount|reftable", 0, 0);
}

Test(qcow_hostile, nb_snapshots_absurd)
{
	/* The snapshot table needs a sane offset, so only the count is absurd. */
	absurd_u32(H_NB_SNAPSHOTS, "snapshot", H_SNAPSHOTS_OFFSET, DEFAULT_CLUSTER);
}

Test(qcow_hostile, l1_size_just_over_qemu_limit)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	limit_memory();
	/* 32 MiB / 8 = 4 Mi entries is qemu's cap; one more is refused. */
	poke32(p, H_L1_SIZE, (32u << 20) / 8 + 1);
	expect_reject_both(p, "l1");
}

/* ---- backing file name and header extensions --------------------------- */

Test(qcow_hostile, backing_file_size_over_1023)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_BACKING_OFFSET, 4096);
	poke32(p, H_BACKING_SIZE, 1024);
	expect_reject_both(p, "backing");
	poke32(p, H_BACKING_SIZE, 0xffffffffu);
	expect_reject_both(p, "backing");
}

Test(qcow_hostile, backing_name_past_cluster_0)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_BACKING_OFFSET, DEFAULT_CLUSTER - 10);
	poke32(p, H_BACKING_SIZE, 100);
	expect_reject_both(p, "backing");
	poke64(p, H_BACKING_OFFSET, 1ull << 40);
	poke32(p, H_BACKING_SIZE, 8);
	expect_reject_both(p, "backing");
	/* offset + size wraps around 2^64 */
	poke64(p, H_BACKING_OFFSET, 0xfffffffffffffff8ull);
	poke32(p, H_BACKING_SIZE, 16);
	expect_reject_both(p, "backing");
}

/* With 512-byte clusters, cluster_size - len must not wrap (it did: a 1023-byte over-read). */
Test(qcow_hostile, backing_name_longer_than_small_cluster)
{
	struct mk m = {.cluster = 512};
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image_opts(p, &m);
	poke64(p, H_BACKING_OFFSET, 112);
	poke32(p, H_BACKING_SIZE, 1023);
	expect_reject_both(p, "backing");
	poke32(p, H_BACKING_SIZE, 513);
	expect_reject_both(p, "backing");
}

Test(qcow_hostile, backing_name_overlaps_header)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_BACKING_OFFSET, 8);
	poke32(p, H_BACKING_SIZE, 16);
	expect_reject_both(p, "backing");
}

Test(qcow_hostile, missing_backing_file)
{
	char p[PATHLEN];
	static const char name[] = "does-not-exist.qcow2";

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	raw_write(p, name, strlen(name), 4096);
	poke64(p, H_BACKING_OFFSET, 4096);
	poke32(p, H_BACKING_SIZE, (uint32_t)strlen(name));
	expect_reject_named(p, 0, g_dir, "backing|does-not-exist");
	/* Without the chain it opens. */
	expect_opens(p, QCOW_OPEN_NO_BACKING);
}

/* Puts one header extension {type, length} at header_length. */
static void poke_extension(const char *path, uint32_t type, uint32_t len)
{
	uint32_t at = peek32(path, H_HEADER_LENGTH);

	poke32(path, at, type);
	poke32(path, at + 4, len);
}

Test(qcow_hostile, extension_length_past_cluster)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke_extension(p, 0x12345678u, DEFAULT_CLUSTER);
	expect_reject_both(p, "extension");
	poke_extension(p, 0x12345678u, 0xfffffff8u);
	expect_reject_both(p, "extension");
	poke_extension(p, 0x12345678u, 0xffffffffu);
	expect_reject_both(p, "extension");
}

Test(qcow_hostile, known_extension_length_past_cluster)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	/* backing format, feature table: known types with lying lengths */
	poke_extension(p, 0xe2792acau, 0xfffffff0u);
	expect_reject_both(p, "extension|backing");
	poke_extension(p, 0x6803f857u, DEFAULT_CLUSTER - 8);
	expect_reject_both(p, "extension|feature");
}

Test(qcow_hostile, extension_without_end_marker)
{
	char p[PATHLEN];
	uint8_t *c;
	uint32_t hl;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	hl = peek32(p, H_HEADER_LENGTH);
	/* Fill cluster 0 after the header with 8-byte extensions {x, 0}. */
	c = calloc(1, DEFAULT_CLUSTER);
	cr_assert_not_null(c);
	for (uint32_t off = hl; off + 8 <= DEFAULT_CLUSTER; off += 8) {
		c[off] = 0x7e;
		c[off + 3] = (uint8_t)(off / 8);
	}
	raw_write(p, c + hl, DEFAULT_CLUSTER - hl, hl);
	free(c);
	/* Must terminate: either refuse or stop at the cluster end. */
	{
		struct qcow_image *img;
		char err[ERRLEN];
		int rc = open_image(p, 0, &img, err);

		if (rc == 0)
			qcow_close(img);
		else
			check_message(err, p, "extension|header");
	}
}

/* ---- truncated and empty files ------------------------------------------ */

Test(qcow_hostile, truncated_to_50_bytes)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	cr_assert_eq(truncate(p, 50), 0);
	expect_reject_both(p, "header|short|trunc|small|eof|end of file|magic|size");
}

Test(qcow_hostile, empty_file)
{
	char p[PATHLEN];
	int fd;

	path_of(p, sizeof(p), "img.qcow2");
	fd = open(p, O_CREAT | O_WRONLY | O_EXCL, 0644);
	cr_assert(fd >= 0);
	close(fd);
	expect_reject_both(p, "header|short|trunc|small|eof|end of file|empty|magic|size");
}

Test(qcow_hostile, truncated_to_header_cluster)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t off[] = {0, 32 * MiB};

	/* Tables now past EOF (see l1_table_beyond_eof): check notices, writes survive. */
	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	cr_assert_eq(truncate(p, l.cluster), 0);
	expect_read_fails(p, 0, 0, 4096);
	expect_check_finds(p);
	try_writes(p, off, 2, 4096);
	expect_no_new_data(p, 0, l.cluster, "header cluster");
}

Test(qcow_hostile, nonexistent_file)
{
	char p[PATHLEN];

	path_of(p, sizeof(p), "nothing.qcow2");
	expect_reject_both(p, "no such|exist|open");
}

/* ---- version 2 ----------------------------------------------------------- */

/* Turns a fresh qcow_create image into v2: version 2, no v3 fields, no extensions. */
static void make_v2_by_poking(const char *path)
{
	uint8_t zero[512] = {0};

	make_image(path);
	fill_start(path);
	poke32(path, H_VERSION, 2);
	raw_write(path, zero, sizeof(zero), 72);
}

static void check_v2(const char *path)
{
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t buf[4096];
	struct qcow_info info;
	int rc;

	expect_reject(path, QCOW_OPEN_RDWR, "version 2|v2|version|compat|0.10|read-only|read only");
	rc = open_image(path, 0, &img, err);
	cr_assert_eq(rc, 0, "read-only open of a v2 image: %d %s", rc, err);
	qcow_get_info(img, &info);
	cr_expect_eq(info.version, 2u);
	cr_expect(info.read_only);
	rc = qcow_read(img, buf, 0, sizeof(buf));
	cr_expect_eq(rc, 0, "read: %d %s", rc, qcow_last_error(img));
	qcow_close(img);
}

Test(qcow_hostile, v2_read_write_refused_read_only_works)
{
	char p[PATHLEN];
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t buf[4096];
	int rc;

	path_of(p, sizeof(p), "v2.qcow2");
	make_v2_by_poking(p);
	check_v2(p);
	rc = open_image(p, 0, &img, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(qcow_read(img, buf, 0, sizeof(buf)), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], OLD_BYTE, "v2 data differs at %zu", i);
	qcow_close(img);
}

Test(qcow_hostile, v2_from_qemu)
{
	char p[PATHLEN], cmd[PATHLEN * 2];

	if (!have_qemu_img())
		cr_skip_test("qemu-img not installed");
	path_of(p, sizeof(p), "v2q.qcow2");
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o compat=0.10 %s 4M", p);
	cr_assert_eq(run(cmd), 0);
	check_v2(p);
}

/* ---- bad L1 / L2 entries: open may succeed, I/O through them must fail ---- */

Test(qcow_hostile, l1_entry_reserved_bits)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t e;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	e = peek64(p, l.l1_off);
	poke64(p, l.l1_off, e | 0x2);
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	poke64(p, l.l1_off, e | (1ull << 60));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_old_data_intact(p, &l);
}

Test(qcow_hostile, l1_entry_l2_misaligned)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l1_off, OFLAG_COPIED | (l.l2_off + 512));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	expect_old_data_intact(p, &l);
}

Test(qcow_hostile, l1_entry_l2_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.l1_off, OFLAG_COPIED | (1ull << 40));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	poke64(p, l.l1_off, OFLAG_COPIED | ((1ull << 56) - l.cluster));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_header_same(hdr, p, l.cluster, false);
	expect_old_data_intact(p, &l);
	cr_expect_lt(file_size(p), 1ull << 32, "file grew to %" PRIu64, file_size(p));
	free(hdr);
}

Test(qcow_hostile, l2_entry_reserved_bits)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t e;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	e = peek64(p, l.l2_off);
	poke64(p, l.l2_off, e | 0x2);
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	poke64(p, l.l2_off, e | (1ull << 57));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
}

Test(qcow_hostile, l2_entry_misaligned)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l2_off, OFLAG_COPIED | (l.data_off + 512));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
}

Test(qcow_hostile, l2_entry_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l2_off, OFLAG_COPIED | (1ull << 40));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	cr_expect_lt(file_size(p), 1ull << 32, "file grew to %" PRIu64, file_size(p));
	/* preallocated zero cluster beyond EOF */
	poke64(p, l.l2_off, (1ull << 40) | 1);
	{
		uint64_t off = 0;

		try_writes(p, &off, 1, 4096);
	}
	cr_expect_lt(file_size(p), 1ull << 32, "file grew to %" PRIu64, file_size(p));
}

/* x = 62 - (cluster_bits - 8): where the sector count starts. */
static uint64_t compressed_entry(uint32_t cluster, uint64_t host, uint64_t extra_sectors)
{
	unsigned bits = (unsigned)__builtin_ctz(cluster);
	unsigned x = 62 - (bits - 8);

	return OFLAG_COMPRESSED | (extra_sectors << x) | host;
}

Test(qcow_hostile, compressed_garbage_deflate)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t junk[2048];

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	memset(junk, 0xff, sizeof(junk));
	raw_write(p, junk, sizeof(junk), l.data_off);
	poke64(p, l.l2_off, compressed_entry(l.cluster, l.data_off, 3));
	expect_read_fails(p, 0, 0, 4096);
	/* odd host offset, random-looking bytes */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	raw_write(p, junk, sizeof(junk), l.data_off);
	poke64(p, l.l2_off, compressed_entry(l.cluster, l.data_off + 13, 2));
	expect_read_fails(p, 0, 0, 4096);
	/* A partial write of a compressed cluster must decompress first: fails too. */
	expect_write_fails(p, 0, 4096);
}

Test(qcow_hostile, compressed_garbage_zstd)
{
	char p[PATHLEN];
	struct layout l;
	struct mk m = {.compression = QCOW_COMPRESSION_ZSTD};
	uint8_t junk[2048];
	static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};

	path_of(p, sizeof(p), "img.qcow2");
	make_image_opts(p, &m);
	fill_start(p);
	l = get_layout(p);
	cr_assert_neq(l.data_off, 0);
	memset(junk, 0xff, sizeof(junk));
	memcpy(junk, zstd_magic, sizeof(zstd_magic));
	raw_write(p, junk, sizeof(junk), l.data_off);
	poke64(p, l.l2_off, compressed_entry(l.cluster, l.data_off, 3));
	expect_read_fails(p, 0, 0, 4096);
	/* A frame header claiming a huge content size, then garbage. */
	junk[4] = 0xe0; /* FCS field 8 bytes, single segment */
	memset(junk + 5, 0x7f, 8);
	raw_write(p, junk, sizeof(junk), l.data_off);
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
}

Test(qcow_hostile, compressed_spanning_eof)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t max_extra;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	max_extra = (1ull << (__builtin_ctz(l.cluster) - 8)) - 1;
	/* Starts 200 bytes before EOF, runs max_extra sectors further. */
	{
		uint8_t junk[200];

		memset(junk, 0xff, sizeof(junk));
		raw_write(p, junk, sizeof(junk), l.file_size - 200);
	}
	poke64(p, l.l2_off, compressed_entry(l.cluster, l.file_size - 200, max_extra));
	expect_read_fails(p, 0, 0, 4096);
	/* Starts past EOF. */
	poke64(p, l.l2_off, compressed_entry(l.cluster, l.file_size + 4096, 1));
	expect_read_fails(p, 0, 0, 4096);
	/* Starts at the last byte an offset can name. */
	poke64(p, l.l2_off, compressed_entry(l.cluster, (1ull << 54) - 1, max_extra));
	expect_read_fails(p, 0, 0, 4096);
}

Test(qcow_hostile, compressed_with_copied_bit)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	/* COPIED on a compressed entry is corruption (qemu-img check). */
	poke64(p, l.l2_off, OFLAG_COPIED | compressed_entry(l.cluster, l.data_off, 1));
	expect_read_fails(p, 0, 0, 4096);
	expect_write_fails(p, 0, 4096);
	expect_check_finds(p);
	expect_old_data_intact(p, &l);
}

Test(qcow_hostile, l1_table_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;

	/*
	 * The whole L1 table past EOF would read as zeros and hide the data
	 * (qemu 7.2 does just that; qemu-img check reports it).  Refuse at open
	 * or fail the read; check must report it.
	 */
	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, H_L1_OFFSET, 1ull << 40);
	expect_read_fails(p, 0, 0, 4096);
	expect_check_finds(p);
	poke64(p, H_L1_OFFSET, l.file_size);
	expect_read_fails(p, 0, 0, 4096);
	expect_check_finds(p);
}

Test(qcow_hostile, reftable_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;
	uint64_t off = 32 * MiB;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, H_RT_OFFSET, 1ull << 40);
	hdr = read_all(p, 0, l.cluster);
	try_writes(p, &off, 1, 4096);
	expect_header_same(hdr, p, l.cluster, false);
	expect_old_data_intact(p, &l);
	cr_expect_lt(file_size(p), 1ull << 32, "file grew to %" PRIu64, file_size(p));
	free(hdr);
}

/* ---- snapshot table entries ------------------------------------------------ */

struct snap {
	bool active_l1; /* share the active L1 table (l1_offset ignored) */
	uint64_t l1_offset;
	uint32_t l1_size;
	uint16_t id_len;
	uint16_t name_len;
	uint32_t extra_size;
	uint32_t nb; /* nb_snapshots to store in the header */
};

/*
 * Appends a snapshot table of one entry at the end of a filled image and
 * points the header at it.  Fields not given are those of a sane snapshot
 * sharing the active L1 table.
 */
static struct layout make_snapshot_image(const char *path, const struct snap *sn)
{
	struct layout l = make_filled(path);
	uint64_t at = (l.file_size + l.cluster - 1) & ~(uint64_t)(l.cluster - 1);
	uint8_t *e = calloc(1, l.cluster);
	uint32_t extra = sn->extra_size;
	size_t pos;

	uint64_t l1 = sn->active_l1 ? l.l1_off : sn->l1_offset;

	cr_assert_not_null(e);
	/* header (40 bytes) */
	for (int i = 0; i < 8; i++)
		e[i] = (uint8_t)(l1 >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		e[8 + i] = (uint8_t)(sn->l1_size >> (24 - 8 * i));
	e[12] = (uint8_t)(sn->id_len >> 8);
	e[13] = (uint8_t)sn->id_len;
	e[14] = (uint8_t)(sn->name_len >> 8);
	e[15] = (uint8_t)sn->name_len;
	for (int i = 0; i < 4; i++)
		e[36 + i] = (uint8_t)(extra >> (24 - 8 * i));
	/* extra: vm state size 0, disk size 64 MiB, icount -1 */
	pos = 40;
	if (extra >= 16) {
		uint64_t disk = DEFAULT_SIZE;

		for (int i = 0; i < 8; i++)
			e[pos + 8 + (size_t)i] = (uint8_t)(disk >> (56 - 8 * i));
	}
	if (extra >= 24)
		memset(e + pos + 16, 0xff, 8);
	pos += extra < 1024 ? extra : 24;
	memcpy(e + pos, "1", 1);
	memcpy(e + pos + 1, "snap", 4);
	raw_write(path, e, l.cluster, at);
	free(e);
	poke32(path, H_NB_SNAPSHOTS, sn->nb ? sn->nb : 1);
	poke64(path, H_SNAPSHOTS_OFFSET, at);
	return get_layout(path);
}

/*
 * Opens read-only and runs check: each may fail (naming the file), but
 * fast, without crashing and without huge allocations.
 */
static void survive_open_and_check(const char *path, const char *keywords)
{
	struct qcow_image *img;
	struct qcow_check_result res;
	char err[ERRLEN];
	double t0 = now_s();
	int rc;

	limit_memory();
	rc = open_image(path, 0, &img, err);
	if (rc < 0) {
		check_message(err, path, keywords);
	} else {
		rc = qcow_check(img, 0, &res);
		cr_log_info("check: %d corruptions %" PRIu64, rc, res.corruptions);
		if (rc < 0)
			check_message(qcow_last_error(img), path, "");
		qcow_close(img);
	}
	cr_expect_lt(now_s() - t0, 5.0, "took %.1f s", now_s() - t0);
}

Test(qcow_hostile, snapshot_sane_entry_opens)
{
	char p[PATHLEN];
	struct snap sn = {
	    .active_l1 = true, .l1_size = 1, .id_len = 1, .name_len = 4, .extra_size = 24};

	/* The baseline of the snapshot tests: this one is fine to open read-only. */
	path_of(p, sizeof(p), "img.qcow2");
	make_snapshot_image(p, &sn);
	expect_opens(p, 0);
	survive_open_and_check(p, "");
}

Test(qcow_hostile, snapshot_l1_size_absurd)
{
	char p[PATHLEN];
	struct snap sn = {.active_l1 = true,
	                  .l1_size = 0xffffffffu,
	                  .id_len = 1,
	                  .name_len = 4,
	                  .extra_size = 24};

	/* qemu opens this and fails only when the snapshot is used. */
	path_of(p, sizeof(p), "img.qcow2");
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
}

Test(qcow_hostile, snapshot_l1_offset_bad)
{
	char p[PATHLEN];
	struct snap sn = {.l1_size = 1, .id_len = 1, .name_len = 4, .extra_size = 24};

	path_of(p, sizeof(p), "img.qcow2");
	sn.l1_offset = 0x30200;
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
	sn.l1_offset = 1ull << 56;
	remove(p);
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
	sn.l1_offset = 0;
	remove(p);
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
}

Test(qcow_hostile, snapshot_strings_past_table)
{
	char p[PATHLEN];
	struct snap sn = {.active_l1 = true,
	                  .l1_size = 1,
	                  .id_len = 0xffff,
	                  .name_len = 0xffff,
	                  .extra_size = 24};

	path_of(p, sizeof(p), "img.qcow2");
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
}

Test(qcow_hostile, snapshot_extra_data_absurd)
{
	char p[PATHLEN];
	struct snap sn = {
	    .active_l1 = true, .l1_size = 1, .id_len = 1, .name_len = 4, .extra_size = 0xffffffffu};

	/* qemu: "Too much extra metadata in snapshot table entry" at open. */
	path_of(p, sizeof(p), "img.qcow2");
	make_snapshot_image(p, &sn);
	expect_reject(p, 0, "snapshot");
}

Test(qcow_hostile, snapshot_count_past_table_end)
{
	char p[PATHLEN];
	struct snap sn = {.active_l1 = true,
	                  .l1_size = 1,
	                  .id_len = 1,
	                  .name_len = 4,
	                  .extra_size = 24,
	                  .nb = 60000};

	/* 60000 entries claimed; all but one read as zeros past EOF. */
	path_of(p, sizeof(p), "img.qcow2");
	make_snapshot_image(p, &sn);
	survive_open_and_check(p, "snapshot");
}

/* ---- refcount table damage: never write over metadata ------------------------ */

/*
 * After damaging the refcounts of a filled image: a read-write session that
 * writes fresh clusters must either fail or leave every existing cluster
 * alone (header, L1, L2, refcount table, the old data).
 */
static void check_no_overwrite_after_writes(const char *path, const struct layout *l,
                                            const uint8_t *hdr, bool allow_rt_move)
{
	uint64_t offs[] = {32 * MiB, 48 * MiB, 8 * MiB, 4 * DEFAULT_CLUSTER};
	uint8_t *l1 = read_all(path, l->l1_off, l->cluster);
	uint8_t *l2 = read_all(path, l->l2_off, 64);

	try_writes(path, offs, 4, 64 * 1024);
	expect_header_same(hdr, path, l->cluster, allow_rt_move);
	expect_no_new_data(path, 0, l->cluster, "header cluster");
	expect_no_new_data(path, l->l1_off, l->cluster, "L1 table");
	expect_no_new_data(path, l->l2_off, l->cluster, "L2 table");
	if (peek64(path, H_RT_OFFSET) == l->rt_off)
		expect_no_new_data(path, l->rt_off, l->cluster, "refcount table");
	expect_no_new_data(path, l->rb_off, l->cluster, "refcount block");
	expect_same_bytes(path, l->l2_off, l2, 64, "L2 entries of guest cluster 0..7");
	/* Only entry 0 (the L2 table for the first 512 MiB) may exist. */
	{
		uint8_t *now = read_all(path, l->l1_off, 8);

		cr_expect(memcmp(now, l1, 8) == 0, "L1[0] changed");
		free(now);
	}
	expect_old_data_intact(path, l);
	free(l1);
	free(l2);
}

Test(qcow_hostile, reftable_entry_zero)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	/* No refblock: every cluster, header included, looks free. */
	poke64(p, l.rt_off, 0);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	free(hdr);
}

Test(qcow_hostile, reftable_entry_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.rt_off, 1ull << 40);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	cr_expect_lt(file_size(p), 1ull << 32, "file grew to %" PRIu64, file_size(p));
	free(hdr);
}

Test(qcow_hostile, reftable_entry_points_at_header)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	/*
	 * Offset 0 (the header cluster as refcount block) can only be written
	 * with a reserved bit set, since 0 means "no block".
	 */
	poke64(p, l.rt_off, 0x1);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	free(hdr);
}

Test(qcow_hostile, reftable_entry_misaligned)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.rt_off, l.rb_off + 512);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	free(hdr);
}

Test(qcow_hostile, refcounts_of_used_clusters_zero)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr, *zero;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	/* Refblock all zeros: header, tables, data all have refcount 0. */
	zero = calloc(1, l.cluster);
	cr_assert_not_null(zero);
	raw_write(p, zero, l.cluster, l.rb_off);
	free(zero);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	free(hdr);
}

Test(qcow_hostile, refcount_block_is_l1_table)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	/* The refblock pointer names the L1 table (self-overlapping metadata). */
	poke64(p, l.rt_off, l.l1_off);
	check_no_overwrite_after_writes(p, &l, hdr, true);
	free(hdr);
}

/* ---- dirty-bit rebuild and check --repair over hostile tables ------------------ */

#define COMPAT_LAZY (1ull << 0)

/*
 * Sets the dirty bit (with lazy refcounts) so a writable open rebuilds the
 * refcounts from the L1/L2 tables, then opens read-write, writes, closes:
 * fast, bounded in memory and file size, never over metadata.
 */
static void dirty_rebuild_survives(const char *path, const struct layout *l)
{
	uint8_t *hdr;
	uint64_t off = 32 * MiB;
	double t0;

	poke64(path, H_COMPAT, peek64(path, H_COMPAT) | COMPAT_LAZY);
	poke64(path, H_INCOMPAT, peek64(path, H_INCOMPAT) | INCOMPAT_DIRTY);
	hdr = read_all(path, 0, l->cluster);
	limit_memory();
	t0 = now_s();
	try_writes(path, &off, 1, 4096);
	cr_expect_lt(now_s() - t0, 5.0, "rebuild took %.1f s", now_s() - t0);
	cr_expect_lt(file_size(path), 1ull << 30, "file grew to %" PRIu64, file_size(path));
	expect_header_same(hdr, path, l->cluster, true);
	expect_no_new_data(path, 0, l->cluster, "header cluster");
	expect_no_new_data(path, l->l1_off, l->cluster, "L1 table");
	expect_no_new_data(path, l->l2_off, l->cluster, "L2 table");
	expect_old_data_intact(path, l);
	free(hdr);
}

Test(qcow_hostile, dirty_rebuild_l2_entry_far_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | (1ull << 50));
	dirty_rebuild_survives(p, &l);
}

Test(qcow_hostile, dirty_rebuild_l1_entry_far_beyond_eof)
{
	char p[PATHLEN];
	struct mk m = {.size = 2 * GiB};
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	make_image_opts(p, &m);
	fill_start(p);
	l = get_layout(p);
	poke64(p, l.l1_off + 8, OFLAG_COPIED | (1ull << 50));
	dirty_rebuild_survives(p, &l);
}

Test(qcow_hostile, dirty_rebuild_l2_entry_at_l1_table)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | l.l1_off);
	dirty_rebuild_survives(p, &l);
	{
		uint64_t off = 8ull * DEFAULT_CLUSTER;

		/* guest cluster 8 maps onto the L1 table: writing it must not reach it */
		try_writes(p, &off, 1, 4096);
		expect_no_new_data(p, l.l1_off, l.cluster, "L1 table");
	}
}

Test(qcow_hostile, dirty_rebuild_refcounts_zeroed)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *zero;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	zero = calloc(1, l.cluster);
	cr_assert_not_null(zero);
	raw_write(p, zero, l.cluster, l.rb_off);
	free(zero);
	dirty_rebuild_survives(p, &l);
}

/* Opens rw, runs check with QCOW_REPAIR_ALL, then writes; returns the check result. */
static int repair_then_write(const char *path, uint64_t off, struct qcow_check_result *res)
{
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t buf[4096];
	int rc = open_image(path, QCOW_OPEN_RDWR, &img, err);

	cr_assert_eq(rc, 0, "read-write open for repair refused: %d %s", rc, err);
	memset(res, 0, sizeof(*res));
	rc = qcow_check(img, QCOW_REPAIR_ALL, res);
	cr_log_info("repair: %d corruptions %" PRIu64 " leaks %" PRIu64 " rebuilt %" PRIu64, rc,
	            res->corruptions, res->leaks, res->rebuilt);
	if (rc < 0)
		check_message(qcow_last_error(img), path, "");
	memset(buf, NEW_BYTE, sizeof(buf));
	cr_log_info("write after repair: %d", qcow_write(img, buf, off, sizeof(buf)));
	qcow_close(img);
	return rc;
}

static void expect_qemu_check_clean(const char *path)
{
	char cmd[PATHLEN + 64];
	int rc;

	if (!have_qemu_img())
		return;
	snprintf(cmd, sizeof(cmd), "qemu-img check -q -f qcow2 '%s' >/dev/null 2>&1", path);
	rc = run(cmd);
	/* 0 clean, 3 leaks only */
	cr_expect(rc == 0 || rc == 3, "qemu-img check after repair: exit %d", rc);
}

Test(qcow_hostile, repair_zeroed_refcounts)
{
	char p[PATHLEN];
	struct layout l;
	struct qcow_check_result res;
	uint8_t *hdr, *zero;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	zero = calloc(1, l.cluster);
	cr_assert_not_null(zero);
	raw_write(p, zero, l.cluster, l.rb_off);
	free(zero);
	cr_expect_eq(repair_then_write(p, 32 * MiB, &res), 0);
	cr_expect_eq(res.corruptions, 0, "corruptions left after repair");
	expect_header_same(hdr, p, l.cluster, true);
	expect_no_new_data(p, 0, l.cluster, "header cluster");
	expect_no_new_data(p, l.l1_off, l.cluster, "L1 table");
	expect_no_new_data(p, l.l2_off, l.cluster, "L2 table");
	expect_old_data_intact(p, &l);
	expect_qemu_check_clean(p);
	free(hdr);
}

Test(qcow_hostile, repair_with_l2_entry_at_l1_table)
{
	char p[PATHLEN];
	struct layout l;
	struct qcow_check_result res;
	uint8_t *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | l.l1_off);
	repair_then_write(p, 8ull * DEFAULT_CLUSTER, &res);
	expect_header_same(hdr, p, l.cluster, true);
	expect_no_new_data(p, 0, l.cluster, "header cluster");
	expect_no_new_data(p, l.l1_off, l.cluster, "L1 table");
	expect_old_data_intact(p, &l);
	free(hdr);
}

/* ---- L2 entries pointing into metadata with COPIED set (iotest 060) ----------- */

static void write_through_entry(const char *path, const struct layout *l, uint64_t target,
                                const char *what)
{
	uint8_t *hdr = read_all(path, 0, l->cluster);
	uint8_t *tgt = read_all(path, target, l->cluster);
	uint64_t off = 0;

	poke64(path, l->l2_off, OFLAG_COPIED | target);
	try_writes(path, &off, 1, 4096);
	expect_no_new_data(path, target, l->cluster, what);
	expect_header_same(hdr, path, l->cluster, false);
	if (target != l->l2_off)
		expect_same_bytes(path, target + 64, tgt + 64, 64, what);
	free(hdr);
	free(tgt);
}

Test(qcow_hostile, l2_entry_at_header_copied)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	/* offset 0 with COPIED: only meaningful with an external data file */
	write_through_entry(p, &l, 0, "header cluster");
	expect_read_fails(p, 0, 0, 4096);
}

Test(qcow_hostile, l2_entry_at_l1_table_copied)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	write_through_entry(p, &l, l.l1_off, "L1 table");
	expect_check_finds(p);
}

Test(qcow_hostile, l2_entry_at_reftable_copied)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	write_through_entry(p, &l, l.rt_off, "refcount table");
}

Test(qcow_hostile, l2_entry_at_refblock_copied)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	write_through_entry(p, &l, l.rb_off, "refcount block");
	expect_check_finds(p);
}

Test(qcow_hostile, l2_entry_at_own_l2_table_copied)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	write_through_entry(p, &l, l.l2_off, "L2 table");
}

Test(qcow_hostile, l1_entry_at_reftable)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *rt;
	uint64_t off = 100ull * DEFAULT_CLUSTER; /* L2 index 100: reftable[100] == 0 */

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	rt = read_all(p, l.rt_off, l.cluster);
	/* The "L2 table" of guest [0, 512 MiB) is the refcount table. */
	poke64(p, l.l1_off, OFLAG_COPIED | l.rt_off);
	expect_check_finds(p);
	try_writes(p, &off, 1, 4096);
	if (peek64(p, H_RT_OFFSET) == l.rt_off)
		expect_same_bytes(p, l.rt_off, rt, l.cluster, "refcount table");
	free(rt);
}

Test(qcow_hostile, l1_entry_at_header)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *hdr;
	uint64_t off = 200ull * DEFAULT_CLUSTER;

	/*
	 * An L2 table at offset 0 cannot be named (0 means none); 512, inside
	 * the header cluster and misaligned, is the closest.
	 */
	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.l1_off, OFLAG_COPIED | 512);
	try_writes(p, &off, 1, 4096);
	expect_header_same(hdr, p, l.cluster, false);
	expect_no_new_data(p, 0, l.cluster, "header cluster");
	free(hdr);
}

/*
 * Discard and write-zeroes release host clusters: through an L2 entry that
 * names a metadata cluster they must not free it (the next allocation
 * would reuse it) nor punch a hole in it.
 */
static void release_through_entry(const char *path, const struct layout *l, uint64_t target,
                                  const char *what, bool twice)
{
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t *before = read_all(path, target, l->cluster);
	uint8_t *hdr = read_all(path, 0, l->cluster);
	uint8_t *buf = malloc(l->cluster);
	uint64_t g = 8ull * l->cluster; /* guest cluster 8 */
	int rc;

	cr_assert_not_null(buf);
	/*
	 * One reference: the refcount would drop 1 -> 0 without underflow.
	 * Two: discard one, write-zeroes (unmap) the other.
	 */
	poke64(path, l->l2_off + 8 * 8, OFLAG_COPIED | target);
	if (twice)
		poke64(path, l->l2_off + 9 * 8, OFLAG_COPIED | target);
	rc = open_image(path, QCOW_OPEN_RDWR, &img, err);
	if (rc < 0) {
		check_message(err, path, "");
		goto out;
	}
	rc = qcow_discard(img, g, l->cluster);
	cr_log_info("discard: %d %s", rc, rc ? qcow_last_error(img) : "");
	if (twice) {
		rc = qcow_write_zeroes(img, g + l->cluster, l->cluster, QCOW_ZERO_MAY_UNMAP);
		cr_log_info("write_zeroes unmap: %d %s", rc, rc ? qcow_last_error(img) : "");
	}
	/* Frees wait for a flush; after it, allocate fresh clusters. */
	rc = qcow_flush(img);
	cr_log_info("flush: %d %s", rc, rc ? qcow_last_error(img) : "");
	memset(buf, NEW_BYTE, l->cluster);
	for (int i = 0; i < 8; i++)
		cr_log_info("write: %d",
		            qcow_write(img, buf, 16 * MiB + (uint64_t)i * l->cluster, l->cluster));
	qcow_flush(img);
	qcow_close(img);
	/* Tables that legitimately change with new allocations are not compared. */
	if (target != l->l2_off && target != l->rb_off)
		expect_same_bytes(path, target, before, l->cluster, what);
	expect_no_new_data(path, target, l->cluster, what);
	expect_header_same(hdr, path, l->cluster, false);
	expect_old_data_intact(path, l);
	/* Every cluster up to the old data is in use: none may have refcount 0. */
	if (peek64(path, H_RT_OFFSET) == l->rt_off && peek64(path, l->rt_off) == l->rb_off) {
		for (uint64_t c = 0; c <= l->data_off / l->cluster; c++) {
			uint8_t rc16[2];

			raw_read(path, rc16, 2, l->rb_off + 2 * c);
			cr_expect(rc16[0] | rc16[1], "refcount of in-use cluster %" PRIu64 " is 0",
			          c);
		}
	}
out:
	free(buf);
	free(before);
	free(hdr);
}

Test(qcow_hostile, discard_through_entry_at_l1_table)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	release_through_entry(p, &l, l.l1_off, "L1 table", false);
	remove(p);
	l = make_filled(p);
	release_through_entry(p, &l, l.l1_off, "L1 table", true);
}

Test(qcow_hostile, discard_through_entry_at_reftable)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	release_through_entry(p, &l, l.rt_off, "refcount table", false);
	remove(p);
	l = make_filled(p);
	release_through_entry(p, &l, l.rt_off, "refcount table", true);
}

Test(qcow_hostile, discard_through_entry_at_refblock)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	release_through_entry(p, &l, l.rb_off, "refcount block", false);
	remove(p);
	l = make_filled(p);
	release_through_entry(p, &l, l.rb_off, "refcount block", true);
}

Test(qcow_hostile, discard_through_entry_at_own_l2_table)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	release_through_entry(p, &l, l.l2_off, "L2 table", false);
	remove(p);
	l = make_filled(p);
	release_through_entry(p, &l, l.l2_off, "L2 table", true);
	{
		/* the L2 table must still map guest cluster 0 to the old data */
		uint64_t e = peek64(p, l.l2_off);

		cr_expect_eq(e & OFFSET_MASK, l.data_off, "L2[0] now %#" PRIx64, e);
	}
}

Test(qcow_hostile, discard_through_entry_at_header)
{
	char p[PATHLEN];
	struct layout l;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	/* 512 inside cluster 0: misaligned, and the header cluster */
	release_through_entry(p, &l, 0, "header cluster", false);
	remove(p);
	l = make_filled(p);
	release_through_entry(p, &l, 0, "header cluster", true);
}

Test(qcow_hostile, discard_through_entry_at_other_data)
{
	char p[PATHLEN];
	struct layout l;

	/*
	 * Guest clusters 0, 8 and 9 share one data cluster with refcount 1;
	 * releasing 8 and 9 is a double free that must be caught.  (Releasing
	 * only 8 is not checked: without a metadata overlap nothing short of
	 * a full scan can tell, and qemu does not either.)
	 */
	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	release_through_entry(p, &l, l.data_off, "data cluster of guest cluster 0", true);
}

/*
 * The other ways a host cluster is released: copy-on-write of a cluster
 * whose COPIED bit is clear (the old cluster is decremented afterwards),
 * and a partial write into a compressed cluster (its sectors are released).
 * Through an entry naming the L1 table, neither may free it.
 */
static void write_then_allocate(const char *path, const struct layout *l, uint64_t guest)
{
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t *buf = malloc(l->cluster);
	int rc = open_image(path, QCOW_OPEN_RDWR, &img, err);

	cr_assert_not_null(buf);
	if (rc < 0) {
		check_message(err, path, "");
		free(buf);
		return;
	}
	memset(buf, NEW_BYTE, l->cluster);
	rc = qcow_write(img, buf, guest + 512, 512);
	cr_log_info("partial write: %d %s", rc, rc ? qcow_last_error(img) : "");
	rc = qcow_flush(img);
	cr_log_info("flush: %d %s", rc, rc ? qcow_last_error(img) : "");
	for (int i = 0; i < 8; i++)
		cr_log_info("write: %d",
		            qcow_write(img, buf, 16 * MiB + (uint64_t)i * l->cluster, l->cluster));
	qcow_close(img);
	free(buf);
}

Test(qcow_hostile, cow_through_entry_at_l1_table)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *l1, *hdr;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	l1 = read_all(p, l.l1_off, l.cluster);
	hdr = read_all(p, 0, l.cluster);
	/* COPIED clear: "shared", so a write copies it and drops the old reference */
	poke64(p, l.l2_off + 8 * 8, l.l1_off);
	write_then_allocate(p, &l, 8ull * l.cluster);
	expect_no_new_data(p, l.l1_off, l.cluster, "L1 table");
	expect_same_bytes(p, l.l1_off, l1, l.cluster, "L1 table");
	expect_header_same(hdr, p, l.cluster, false);
	expect_old_data_intact(p, &l);
	free(l1);
	free(hdr);
}

Test(qcow_hostile, compressed_overwrite_through_l1_table)
{
	char p[PATHLEN];
	struct layout l;
	uint8_t *raw, *z, *l1, *hdr;
	uLongf zlen;
	z_stream zs;
	uint64_t at;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	/* A valid raw-deflate cluster in the unused tail of the L1 table cluster. */
	raw = malloc(l.cluster);
	z = malloc(2 * l.cluster);
	cr_assert(raw && z);
	memset(raw, 0x42, l.cluster);
	memset(&zs, 0, sizeof(zs));
	cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = raw;
	zs.avail_in = l.cluster;
	zs.next_out = z;
	zs.avail_out = 2 * l.cluster;
	cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
	zlen = zs.total_out;
	deflateEnd(&zs);
	at = l.l1_off + l.cluster / 2;
	raw_write(p, z, zlen, at);
	l1 = read_all(p, l.l1_off, l.cluster);
	hdr = read_all(p, 0, l.cluster);
	poke64(p, l.l2_off + 8 * 8, compressed_entry(l.cluster, at, (zlen + 511) / 512));
	/* Sanity: it reads back as 0x42 (or the image is refused, also fine). */
	{
		struct qcow_image *img;
		char err[ERRLEN];

		if (open_image(p, 0, &img, err) == 0) {
			memset(raw, 0, l.cluster);
			cr_log_info("read compressed: %d",
			            qcow_read(img, raw, 8ull * l.cluster, l.cluster));
			cr_log_info("byte 0: %#x", raw[0]);
			qcow_close(img);
		}
	}
	write_then_allocate(p, &l, 8ull * l.cluster);
	expect_no_new_data(p, l.l1_off, l.cluster, "L1 table");
	expect_same_bytes(p, l.l1_off, l1, l.cluster, "L1 table");
	expect_header_same(hdr, p, l.cluster, false);
	expect_old_data_intact(p, &l);
	free(raw);
	free(z);
	free(l1);
	free(hdr);
}

/* ---- the non-blocking map path (qcow_map_cached + qcow_cache_insert_l2) ------- */

/*
 * Maps guest [off, off+len) the way the daemon does: on -EAGAIN read the
 * table it names (straight from the file) and insert it, at most 4 times.
 * Returns the last result.
 */
static int map_like_daemon(struct qcow_image *img, const char *path, uint32_t cluster, uint64_t off,
                           uint64_t len, struct qcow_map *map)
{
	uint8_t *table = malloc(cluster);
	int rc = -EAGAIN;

	cr_assert_not_null(table);
	for (int i = 0; i < 4 && rc == -EAGAIN; i++) {
		uint64_t need = UINT64_MAX;

		rc = qcow_map_cached(img, off, len, map, &need);
		if (rc != -EAGAIN)
			break;
		cr_log_info("map asks for table at %#" PRIx64, need);
		cr_expect_eq(need % cluster, 0, "asked for a misaligned table %#" PRIx64, need);
		cr_expect_lt(need, file_size(path), "asked for a table past EOF %#" PRIx64, need);
		if (need >= (1ull << 56))
			break;
		/* What a daemon would do: read it (zeros past EOF) and insert it. */
		raw_read(path, table, cluster, need);
		rc = qcow_cache_insert_l2(img, need, table);
		cr_log_info("insert: %d", rc);
		if (rc < 0)
			break;
		rc = -EAGAIN;
	}
	free(table);
	return rc;
}

/* A DATA mapping that lets a write go straight to disk must not name metadata. */
static void expect_map_safe(const char *path, const struct layout *l, uint64_t guest,
                            const uint64_t *forbidden, int nforbidden)
{
	struct qcow_image *img;
	struct qcow_map map;
	char err[ERRLEN];
	int rc = open_image(path, QCOW_OPEN_RDWR, &img, err);

	if (rc < 0) {
		check_message(err, path, "");
		return;
	}
	rc = map_like_daemon(img, path, l->cluster, guest, l->cluster, &map);
	cr_log_info("map: %d kind %d host %#" PRIx64 " need %d", rc, rc == 0 ? (int)map.kind : -1,
	            rc == 0 ? map.host_offset : 0, rc == 0 ? (int)map.need : -1);
	if (rc == 0 && map.kind == QCOW_MAP_DATA) {
		cr_expect_lt(map.host_offset, file_size(path), "DATA mapped past EOF: %#" PRIx64,
		             map.host_offset);
		for (int i = 0; i < nforbidden; i++) {
			bool hit = map.host_offset / l->cluster == forbidden[i] / l->cluster;

			cr_expect(!hit || map.need != QCOW_NEED_NOTHING,
			          "map lets a write go straight to metadata at %#" PRIx64,
			          map.host_offset);
			cr_expect(!hit, "map returns metadata cluster %#" PRIx64 " as guest data",
			          map.host_offset);
		}
	} else if (rc < 0) {
		cr_expect(rc != -EAGAIN, "map still needs tables after 4 inserts");
	}
	qcow_close(img);
}

Test(qcow_hostile, map_cached_l2_entry_at_metadata)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t meta[4];

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	meta[0] = 0;
	meta[1] = l.l1_off;
	meta[2] = l.rt_off;
	meta[3] = l.rb_off;
	for (int i = 1; i < 4; i++) {
		poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | meta[i]);
		expect_map_safe(p, &l, 8ull * l.cluster, meta, 4);
	}
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | l.l2_off);
	meta[0] = l.l2_off;
	expect_map_safe(p, &l, 8ull * l.cluster, meta, 1);
}

Test(qcow_hostile, map_cached_l2_entry_beyond_eof)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t none = UINT64_MAX;

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | (1ull << 40));
	expect_map_safe(p, &l, 8ull * l.cluster, &none, 0);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | (l.data_off + 512));
	expect_map_safe(p, &l, 8ull * l.cluster, &none, 0);
	poke64(p, l.l2_off + 8 * 8, OFLAG_COPIED | l.data_off | 0x2);
	{
		struct qcow_image *img;
		struct qcow_map map;
		char err[ERRLEN];

		cr_assert_eq(open_image(p, 0, &img, err), 0, "%s", err);
		cr_expect_lt(map_like_daemon(img, p, l.cluster, 8ull * l.cluster, l.cluster, &map),
		             0, "entry with reserved bits mapped");
		qcow_close(img);
	}
}

Test(qcow_hostile, map_cached_l1_entry_bad)
{
	char p[PATHLEN];
	struct layout l;
	uint64_t none = UINT64_MAX;
	struct qcow_image *img;
	char err[ERRLEN];

	path_of(p, sizeof(p), "img.qcow2");
	l = make_filled(p);
	poke64(p, l.l1_off, OFLAG_COPIED | (l.l2_off + 512));
	expect_map_safe(p, &l, 0, &none, 0);
	poke64(p, l.l1_off, OFLAG_COPIED | (1ull << 40));
	expect_map_safe(p, &l, 0, &none, 0);
	/* The "L2 table" is the refcount table: never a straight write into it. */
	poke64(p, l.l1_off, OFLAG_COPIED | l.rt_off);
	{
		uint64_t meta[] = {l.rt_off, l.l1_off, 0, l.rb_off};

		expect_map_safe(p, &l, 0, meta, 4);
	}
	/* Inserting a table the image never asked for must be refused or harmless. */
	poke64(p, l.l1_off, OFLAG_COPIED | l.l2_off);
	cr_assert_eq(open_image(p, QCOW_OPEN_RDWR, &img, err), 0, "%s", err);
	{
		uint8_t *junk = malloc(l.cluster);

		cr_assert_not_null(junk);
		memset(junk, 0xff, l.cluster);
		cr_log_info("insert junk at L1: %d", qcow_cache_insert_l2(img, l.l1_off, junk));
		cr_log_info("insert junk at 1: %d", qcow_cache_insert_l2(img, 1, junk));
		cr_log_info("insert junk past EOF: %d",
		            qcow_cache_insert_l2(img, 1ull << 40, junk));
		free(junk);
	}
	{
		uint8_t buf[4096];

		cr_expect_eq(qcow_read(img, buf, 0, sizeof(buf)), 0, "%s", qcow_last_error(img));
		cr_expect_eq(buf[0], OLD_BYTE);
	}
	qcow_close(img);
	cr_expect_eq(peek64(p, l.l1_off) & OFFSET_MASK, l.l2_off, "L1[0] damaged");
}

/* ---- header extensions with hostile contents ----------------------------------- */

/* Writes one extension {type, len, data} at header_length, then the end marker. */
static void put_extension(const char *path, uint32_t type, const void *data, uint32_t len)
{
	uint32_t at = peek32(path, H_HEADER_LENGTH);
	uint8_t zero[16] = {0};

	poke32(path, at, type);
	poke32(path, at + 4, len);
	raw_write(path, data, len, at + 8);
	raw_write(path, zero, sizeof(zero), at + 8 + ((len + 7) & ~7u));
}

Test(qcow_hostile, backing_format_extension_too_long)
{
	char p[PATHLEN], b[PATHLEN];
	char fmt[200];
	struct qcow_image *img;
	struct qcow_info *info = malloc(sizeof(*info));
	char err[ERRLEN];
	int rc;

	cr_assert_not_null(info);
	path_of(b, sizeof(b), "base.qcow2");
	make_image(b);
	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	set_backing(p, "base.qcow2");
	memset(fmt, 'q', sizeof(fmt));
	put_extension(p, 0xe2792acau, fmt, sizeof(fmt));
	rc = open_image(p, QCOW_OPEN_NO_BACKING, &img, err);
	if (rc == 0) {
		qcow_get_info(img, info);
		cr_expect_not_null(memchr(info->backing_format, 0, sizeof(info->backing_format)));
		qcow_close(img);
	} else {
		check_message(err, p, "format|backing|extension");
	}
	/* With the chain, an unknown format must be refused by name. */
	expect_reject_named(p, 0, p, "format");
	free(info);
}

Test(qcow_hostile, backing_format_unknown)
{
	char p[PATHLEN], b[PATHLEN];

	path_of(b, sizeof(b), "base.qcow2");
	make_image(b);
	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	set_backing(p, "base.qcow2");
	put_extension(p, 0xe2792acau, "vmdk", 4);
	expect_reject_named(p, 0, g_dir, "format|vmdk");
}

Test(qcow_hostile, backing_format_raw_with_nul)
{
	char p[PATHLEN], b[PATHLEN];
	struct qcow_image *img;
	char err[ERRLEN];
	int rc;

	/* "raw\0qcow2": the embedded NUL must not make it "raw" silently? either is safe. */
	path_of(b, sizeof(b), "base.qcow2");
	make_image(b);
	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	set_backing(p, "base.qcow2");
	put_extension(p, 0xe2792acau, "raw\0qcow2", 9);
	rc = open_image(p, 0, &img, err);
	if (rc == 0)
		qcow_close(img);
	else
		check_message(err, p, "");
}

Test(qcow_hostile, duplicate_extension)
{
	char p[PATHLEN];
	uint32_t at;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	at = peek32(p, H_HEADER_LENGTH);
	/* two backing-format extensions; no backing file at all */
	poke32(p, at, 0xe2792acau);
	poke32(p, at + 4, 5);
	raw_write(p, "qcow2\0\0\0", 8, at + 8);
	poke32(p, at + 16, 0xe2792acau);
	poke32(p, at + 20, 3);
	raw_write(p, "raw\0\0\0\0\0", 8, at + 24);
	poke64(p, at + 32, 0);
	{
		struct qcow_image *img;
		char err[ERRLEN];
		int rc = open_image(p, 0, &img, err);

		if (rc == 0)
			qcow_close(img);
		else
			check_message(err, p, "extension|format");
	}
}

Test(qcow_hostile, autoclear_bits_cleared_on_write)
{
	char p[PATHLEN];
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t buf[4096] = {1};
	int rc;

	/* Bits we do not maintain (bitmaps and unknown) must be cleared by a writer. */
	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke64(p, H_AUTOCLEAR, 0xffffffffffffffffull);
	rc = open_image(p, QCOW_OPEN_RDWR, &img, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(qcow_write(img, buf, 0, sizeof(buf)), 0);
	cr_assert_eq(qcow_flush(img), 0);
	cr_expect_eq(peek64(p, H_AUTOCLEAR), 0, "autoclear %#" PRIx64 " after a write",
	             peek64(p, H_AUTOCLEAR));
	qcow_close(img);
}

/* ---- backing chains ---------------------------------------------------------- */

Test(qcow_hostile, backing_loop_two_images)
{
	char a[PATHLEN], b[PATHLEN];

	path_of(a, sizeof(a), "a.qcow2");
	path_of(b, sizeof(b), "b.qcow2");
	make_image(a);
	make_image(b);
	set_backing(a, "b.qcow2");
	set_backing(b, "a.qcow2");
	expect_reject_named(a, 0, g_dir, "loop|chain|depth|deep|recurs|cycle");
	/* Read-write too: the message must say loop, not a lock conflict. */
	expect_reject_named(a, QCOW_OPEN_RDWR, g_dir, "loop|chain|depth|deep|recurs|cycle");
	expect_opens(a, QCOW_OPEN_NO_BACKING);
}

Test(qcow_hostile, backing_loop_self)
{
	char a[PATHLEN];

	path_of(a, sizeof(a), "self.qcow2");
	make_image(a);
	set_backing(a, "self.qcow2");
	expect_reject_named(a, 0, g_dir, "loop|chain|depth|deep|recurs|cycle");
	expect_reject_named(a, QCOW_OPEN_RDWR, g_dir, "loop|chain|depth|deep|recurs|cycle");
}

Test(qcow_hostile, backing_chain_deeper_than_64, .timeout = 120)
{
	enum { N = 70 };
	char p[PATHLEN], name[64];
	struct qcow_image *img;
	char err[ERRLEN];
	struct qcow_info *info = malloc(sizeof(*info));
	int rc;

	cr_assert_not_null(info);
	for (int i = 0; i < N; i++) {
		struct mk m = {.size = MiB};

		snprintf(name, sizeof(name), "c%02d.qcow2", i);
		path_of(p, sizeof(p), name);
		make_image_opts(p, &m);
		if (i > 0) {
			snprintf(name, sizeof(name), "c%02d.qcow2", i - 1);
			set_backing(p, name);
		}
	}
	/* c10 has 10 backing files: fine. */
	path_of(p, sizeof(p), "c10.qcow2");
	rc = open_image(p, 0, &img, err);
	cr_assert_eq(rc, 0, "chain of 10: %d %s", rc, err);
	qcow_get_info(img, info);
	cr_expect_eq(info->chain_depth, 10);
	qcow_close(img);
	/* c69 has 69. */
	snprintf(name, sizeof(name), "c%02d.qcow2", N - 1);
	path_of(p, sizeof(p), name);
	expect_reject_named(p, 0, g_dir, "chain|depth|deep|backing|loop");
	expect_reject_named(p, QCOW_OPEN_RDWR, g_dir, "chain|depth|deep|backing|loop");
	free(info);
}

Test(qcow_hostile, backing_file_is_garbage)
{
	char a[PATHLEN], b[PATHLEN];
	struct qcow_image *img;
	char err[ERRLEN];
	int rc;

	/* A qcow2 backing file whose header is bad is refused with its name. */
	path_of(a, sizeof(a), "top.qcow2");
	path_of(b, sizeof(b), "base.qcow2");
	make_image(b);
	poke32(b, H_CLUSTER_BITS, 30);
	make_image(a);
	set_backing(a, "base.qcow2");
	rc = open_image(a, 0, &img, err);
	if (rc == 0) {
		qcow_close(img);
		cr_assert_fail("opened with a broken backing file");
	}
	check_message(err, "base.qcow2", "cluster");
}

/* ---- error buffer handling ---------------------------------------------------- */

Test(qcow_hostile, small_error_buffer_is_terminated)
{
	char p[PATHLEN];
	struct qcow_open_opts o = {0};
	struct qcow_image *img = NULL;
	char buf[64];
	int rc;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	poke32(p, H_VERSION, 9);
	o.path = p;
	memset(buf, 'Z', sizeof(buf));
	rc = qcow_open(&o, &img, buf, 16);
	cr_assert_lt(rc, 0);
	cr_assert_null(img);
	cr_assert_lt(strnlen(buf, 16), 16u, "not NUL-terminated within errlen");
	for (size_t i = 16; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 'Z', "wrote past errlen at %zu", i);
	rc = qcow_open(&o, &img, NULL, 0);
	cr_assert_lt(rc, 0);
}

Test(qcow_hostile, out_of_range_guest_io_is_refused)
{
	char p[PATHLEN];
	struct qcow_image *img;
	char err[ERRLEN];
	uint8_t buf[4096];
	struct qcow_extent ext;
	int rc;

	path_of(p, sizeof(p), "img.qcow2");
	make_image(p);
	rc = open_image(p, QCOW_OPEN_RDWR, &img, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_lt(qcow_read(img, buf, DEFAULT_SIZE - 100, sizeof(buf)), 0);
	cr_expect_lt(qcow_read(img, buf, UINT64_MAX - 100, sizeof(buf)), 0);
	cr_expect_lt(qcow_write(img, buf, DEFAULT_SIZE, 1), 0);
	cr_expect_lt(qcow_write(img, buf, UINT64_MAX - 10, sizeof(buf)), 0);
	cr_expect_lt(qcow_write_zeroes(img, UINT64_MAX - 10, 4096, 0), 0);
	cr_expect_lt(qcow_discard(img, DEFAULT_SIZE - 512, UINT64_MAX), 0);
	rc = qcow_block_status(img, UINT64_MAX - 10, 4096, &ext);
	cr_expect_lt(rc, 0);
	cr_expect_eq(qcow_close(img), 0);
}
