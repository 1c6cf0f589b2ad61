/* SPDX-License-Identifier: MIT */
/*
 * image_cmds.c - "blockctl image": offline commands on image files.
 *
 *     create   a new qcow2 image, optionally over a backing file
 *     info     what an image is: format, sizes, qcow2 header fields
 *     map      which ranges hold data, read as zeros, or come from backing files
 *     convert  copy between raw and qcow2, keeping the copy sparse,
 *              optionally compressed or from a snapshot
 *     resize   grow or shrink a qcow2 image
 *     snapshot internal snapshots (image_snapshot.c)
 *     check    consistency check and repair (image_check.c)
 *
 * Each command parses its own options with getopt_long and returns the
 * process exit status; the work itself is done by functions that return
 * 0 or -errno and print their own error (see blockctl.h).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockctl.h"
#include "image_cmds.h"
#include "image_file.h"
#include "progress.h"
#include "size.h"

/* qcow2 virtual sizes are whole sectors for qemu. */
#define SECTOR_SIZE 512u

#define MIN_CLUSTER_SIZE 512u
#define MAX_CLUSTER_SIZE (2u << 20)

/* convert copies in chunks of this size: a multiple of every cluster size. */
#define CONVERT_CHUNK_BYTES MAX_CLUSTER_SIZE

/* Zero detection granularity for raw destinations: a file system block. */
#define RAW_ZERO_GRAIN_BYTES 4096u

/* A backing file's full name: the image's folder, '/', the stored name. */
#define BACKING_PATH_MAX 8192

/* map names the file at each depth; deeper chains are refused by the library. */
#define MAP_MAX_DEPTH 64

/* ------------------------------------------------------------------------ */
/* Arguments */

int image_common_option(int c, char **argv, const char *usage)
{
	const char *arg, *eq;

	if (c == 'h') {
		printf("usage: %s\n", usage);
		return EXIT_SUCCESS;
	}
	arg = argv[optind - 1];
	eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
	if (c == ':')
		cli_usage_error(usage, "option '%s' needs an argument", arg);
	else if (eq && optopt)
		cli_usage_error(usage, "option '%.*s' takes no argument", (int)(eq - arg), arg);
	else if (optopt)
		cli_usage_error(usage, "unknown option '-%c'", optopt);
	else
		cli_usage_error(usage, "unknown option '%s'", argv[optind - 1]);
	return BLOCKCTL_EXIT_USAGE;
}

int image_check_operands(int argc, char **argv, int min, int max, const char *usage)
{
	int count = argc - optind;

	if (count < min) {
		cli_usage_error(usage, "missing operand");
		return -EINVAL;
	}
	if (count > max) {
		cli_usage_error(usage, "unexpected operand '%s'", argv[optind + max]);
		return -EINVAL;
	}
	return 0;
}

static int size_error(const char *what, const char *s, int err)
{
	if (err == -ERANGE)
		cli_error("%s '%s' is too large (the limit is 8 EiB - 1 byte)", what, s);
	else
		cli_error("invalid %s '%s' (expected a number of bytes with an optional "
		          "K, M, G or T suffix)",
		          what, s);
	return err;
}

static int parse_size_arg(const char *what, const char *s, uint64_t *bytes)
{
	int ret = size_parse(s, bytes);

	return ret < 0 ? size_error(what, s, ret) : 0;
}

static int parse_cluster_size(const char *s, uint32_t *bytes)
{
	uint64_t value;

	if (parse_size_arg("cluster size", s, &value) < 0)
		return -EINVAL;
	if (value < MIN_CLUSTER_SIZE || value > MAX_CLUSTER_SIZE || (value & (value - 1))) {
		cli_error("invalid cluster size '%s' (a power of two from 512 to 2M)", s);
		return -EINVAL;
	}
	*bytes = (uint32_t)value;
	return 0;
}

static int parse_format_arg(const char *what, const char *s, enum image_format *format)
{
	if (image_format_parse(s, format) < 0) {
		cli_error("invalid %s '%s' (expected qcow2 or raw)", what, s);
		return -EINVAL;
	}
	return 0;
}

/* size <= INT64_MAX, so this cannot overflow. */
static uint64_t round_up_sector(uint64_t size)
{
	return (size + SECTOR_SIZE - 1) & ~(uint64_t)(SECTOR_SIZE - 1);
}

/* ------------------------------------------------------------------------ */
/* image create */

#define CREATE_USAGE                                                                               \
	"blockctl image create [--cluster-size N] [--backing FILE] "                               \
	"[--backing-format qcow2|raw] [--lazy-refcounts] FILE [SIZE]"

static int create_image(const struct qcow_create_opts *opts)
{
	char err[1024] = "";
	int ret;

	ret = qcow_create(opts, err, sizeof(err));
	if (ret < 0)
		cli_file_error(opts->path, err[0] ? err : strerror(-ret));
	return ret;
}

static int cmd_create(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"cluster-size", required_argument, NULL, 'c'},
	    {"backing", required_argument, NULL, 'b'},
	    {"backing-format", required_argument, NULL, 'F'},
	    {"lazy-refcounts", no_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct qcow_create_opts opts = {0};
	enum image_format backing_format;
	int c;

	while ((c = getopt_long(argc, argv, ":b:F:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_cluster_size(optarg, &opts.cluster_size) < 0)
				return BLOCKCTL_EXIT_FAILURE;
			break;
		case 'b':
			opts.backing_file = optarg;
			break;
		case 'F':
			if (parse_format_arg("backing format", optarg, &backing_format) < 0)
				return BLOCKCTL_EXIT_FAILURE;
			opts.backing_format = optarg;
			break;
		case 'l':
			opts.lazy_refcounts = true;
			break;
		default:
			return image_common_option(c, argv, usage);
		}
	}
	if (image_check_operands(argc, argv, opts.backing_file ? 1 : 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (opts.backing_format && !opts.backing_file) {
		cli_usage_error(usage, "--backing-format needs --backing");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (opts.backing_file && opts.backing_file[0] == '\0') {
		cli_error("the backing file name is empty");
		return BLOCKCTL_EXIT_FAILURE;
	}
	opts.path = argv[optind];
	if (argc - optind == 2 && parse_size_arg("size", argv[optind + 1], &opts.size_bytes) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	/* Whole sectors, rounded up as qemu-img does: qemu reads no partial sector. */
	opts.size_bytes = round_up_sector(opts.size_bytes);
	return create_image(&opts) < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* image info */

#define INFO_USAGE "blockctl image info [--json] FILE"

static const char *yes_no(bool value)
{
	return value ? "true" : "false";
}

static const char *compat_name(uint32_t version)
{
	return version >= 3 ? "1.1" : "0.10";
}

static const char *compression_name(enum qcow_compression compression)
{
	return compression == QCOW_COMPRESSION_ZSTD ? "zstd" : "zlib";
}

static bool info_corrupt(const struct qcow_info *info)
{
	return info->incompatible_features & (1ull << 1);
}

/*
 * Where the backing file is, as qemu shows it: a relative name is relative
 * to the image's folder.  The library resolves it only when it opened the
 * chain, and info opens the image alone (so that it works without it).
 */
static void backing_full_path(const char *image, const struct qcow_info *info, char *buf,
                              size_t len)
{
	const char *slash = strrchr(image, '/');

	if (info->backing_path[0])
		snprintf(buf, len, "%s", info->backing_path);
	else if (info->backing_file[0] == '/' || !slash)
		snprintf(buf, len, "%s", info->backing_file);
	else
		snprintf(buf, len, "%.*s/%s", (int)(slash - image), image, info->backing_file);
}

static void info_print_qcow2(const char *image, const struct qcow_info *info)
{
	char full[BACKING_PATH_MAX];

	printf("cluster_size: %u\n", info->cluster_size);
	if (info->backing_file[0]) {
		backing_full_path(image, info, full, sizeof(full));
		printf("backing file: %s", info->backing_file);
		if (strcmp(full, info->backing_file) != 0)
			printf(" (actual path: %s)", full);
		printf("\n");
		if (info->backing_format[0])
			printf("backing file format: %s\n", info->backing_format);
	}
	if (info->nb_snapshots)
		printf("snapshots: %u\n", info->nb_snapshots);
	printf("Format specific information:\n");
	printf("    compat: %s\n", compat_name(info->version));
	printf("    compression type: %s\n", compression_name(info->compression));
	printf("    lazy refcounts: %s\n", yes_no(info->lazy_refcounts));
	printf("    refcount bits: %u\n", info->refcount_bits);
	printf("    corrupt: %s\n", yes_no(info_corrupt(info)));
	printf("    dirty: %s\n", yes_no(info->dirty));
}

static int info_print_human(const struct image_file *f, const struct qcow_info *info,
                            uint64_t disk_bytes)
{
	char virtual_size[SIZE_FORMAT_MAX], disk_size[SIZE_FORMAT_MAX];

	printf("image: %s\n", f->path);
	printf("file format: %s\n", image_format_name(f->format));
	printf("virtual size: %s (%llu bytes)\n",
	       size_format(f->size_bytes, virtual_size, sizeof(virtual_size)),
	       (unsigned long long)f->size_bytes);
	printf("disk size: %s\n", size_format(disk_bytes, disk_size, sizeof(disk_size)));
	if (info)
		info_print_qcow2(f->path, info);
	return 0;
}

json_t *image_json_text(const char *s)
{
	json_t *value = json_string(s);
	char *copy;
	size_t i;

	if (value)
		return value;
	copy = strdup(s);
	if (!copy)
		return NULL;
	for (i = 0; copy[i]; i++) {
		if ((unsigned char)copy[i] >= 0x80)
			copy[i] = '?';
	}
	value = json_string(copy);
	free(copy);
	return value;
}

static int info_add_qcow2(json_t *root, const char *image, const struct qcow_info *info)
{
	char full[BACKING_PATH_MAX];
	json_t *specific;

	specific = json_pack("{s:s, s:{s:s, s:s, s:b, s:i, s:b, s:b, s:b}}", "type", "qcow2",
	                     "data", "compat", compat_name(info->version), "compression-type",
	                     compression_name(info->compression), "lazy-refcounts",
	                     info->lazy_refcounts, "refcount-bits", (int)info->refcount_bits,
	                     "corrupt", info_corrupt(info), "dirty", info->dirty, "extended-l2", 0);
	if (json_object_set_new(root, "format-specific", specific) < 0 ||
	    json_object_set_new(root, "cluster-size", json_integer(info->cluster_size)) < 0 ||
	    json_object_set_new(root, "dirty-flag", json_boolean(info->dirty)) < 0 ||
	    json_object_set_new(root, "snapshots", json_integer(info->nb_snapshots)) < 0)
		return -ENOMEM;
	if (!info->backing_file[0])
		return 0;
	backing_full_path(image, info, full, sizeof(full));
	if (json_object_set_new(root, "backing-filename", image_json_text(info->backing_file)) <
	        0 ||
	    json_object_set_new(root, "full-backing-filename", image_json_text(full)) < 0)
		return -ENOMEM;
	if (info->backing_format[0] &&
	    json_object_set_new(root, "backing-filename-format",
	                        image_json_text(info->backing_format)) < 0)
		return -ENOMEM;
	return 0;
}

static int info_print_json(const struct image_file *f, const struct qcow_info *info,
                           uint64_t disk_bytes)
{
	json_t *root;
	int ret = -ENOMEM;

	root = json_pack("{s:o, s:s, s:I, s:I}", "filename", image_json_text(f->path), "format",
	                 image_format_name(f->format), "virtual-size", (json_int_t)f->size_bytes,
	                 "actual-size", (json_int_t)disk_bytes);
	if (!root)
		goto out_error;
	if (info && info_add_qcow2(root, f->path, info) < 0)
		goto out_put_root;
	if (json_dumpf(root, stdout, JSON_INDENT(4)) < 0)
		goto out_put_root;
	putchar('\n');
	ret = 0;
out_put_root:
	json_decref(root);
out_error:
	if (ret < 0)
		cli_error("%s: cannot build the JSON output: out of memory", f->path);
	return ret;
}

static int cmd_info(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct qcow_info info;
	struct image_file f;
	uint64_t disk_bytes;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c != 'j')
			return image_common_option(c, argv, usage);
		json = true;
	}
	if (image_check_operands(argc, argv, 1, 1, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (image_file_open(&f, argv[optind], IMAGE_FORMAT_AUTO, IMAGE_OPEN_NO_BACKING) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	ret = image_file_disk_usage(f.path, &disk_bytes);
	if (ret < 0)
		goto out_close;
	if (f.format == IMAGE_FORMAT_QCOW2)
		qcow_get_info(f.qcow, &info);
	ret = (json ? info_print_json : info_print_human)(
	    &f, f.format == IMAGE_FORMAT_QCOW2 ? &info : NULL, disk_bytes);
out_close:
	if (image_file_close(&f) < 0)
		ret = -EIO;
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* image map */

#define MAP_USAGE "blockctl image map [--json] FILE"

struct map_state {
	struct image_file *f;
	bool json;
	unsigned nb_extents;
	int chain_depth;                /* backing files below the image */
	char *names[MAP_MAX_DEPTH + 1]; /* file at each depth */
};

/* Names the file at each depth of the chain, for the human output. */
static int map_collect_names(struct map_state *m)
{
	struct qcow_image *img = m->f->qcow;
	struct qcow_info *info;
	int depth = 0;

	m->names[0] = strdup(m->f->path);
	info = malloc(sizeof(*info));
	if (!m->names[0] || !info)
		goto out_nomem;
	while (img && depth < MAP_MAX_DEPTH) {
		qcow_get_info(img, info);
		img = qcow_backing(img);
		if (!img || !info->backing_file[0])
			break;
		depth++;
		m->names[depth] =
		    strdup(info->backing_path[0] ? info->backing_path : info->backing_file);
		if (!m->names[depth])
			goto out_nomem;
	}
	m->chain_depth = depth;
	free(info);
	return 0;
out_nomem:
	free(info);
	cli_error("%s: out of memory", m->f->path);
	return -ENOMEM;
}

static void map_free_names(struct map_state *m)
{
	int i;

	for (i = 0; i <= MAP_MAX_DEPTH; i++)
		free(m->names[i]);
}

static int map_emit_json(struct map_state *m, const struct qcow_extent *e)
{
	/* Like qemu-img: data found nowhere is reported at the bottom of the chain. */
	int depth = e->depth < 0 ? m->chain_depth : e->depth;
	json_t *obj;
	int ret;

	obj = json_pack("{s:I, s:I, s:i, s:b, s:b, s:b}", "start", (json_int_t)e->offset, "length",
	                (json_int_t)e->length, "depth", depth, "present", e->depth >= 0, "zero",
	                (e->flags & QCOW_EXTENT_ZERO) != 0, "data",
	                (e->flags & QCOW_EXTENT_DATA) != 0);
	if (!obj) {
		cli_error("%s: out of memory", m->f->path);
		return -ENOMEM;
	}
	fputs(m->nb_extents ? ",\n" : "[\n", stdout);
	ret = json_dumpf(obj, stdout, JSON_COMPACT);
	json_decref(obj);
	return ret < 0 ? -EIO : 0;
}

static int map_emit_human(struct map_state *m, const struct qcow_extent *e)
{
	const char *name = "-";

	if (m->nb_extents == 0)
		printf("%-19s %-19s %-6s %-6s %-6s %s\n", "Offset", "Length", "Depth", "Data",
		       "Zero", "File");
	if (e->depth >= 0 && e->depth <= m->chain_depth && m->names[e->depth])
		name = m->names[e->depth];
	printf("0x%-17llx 0x%-17llx ", (unsigned long long)e->offset,
	       (unsigned long long)e->length);
	if (e->depth >= 0)
		printf("%-6d ", e->depth);
	else
		printf("%-6s ", "-");
	printf("%-6s %-6s %s\n", (e->flags & QCOW_EXTENT_DATA) ? "yes" : "no",
	       (e->flags & QCOW_EXTENT_ZERO) ? "yes" : "no", name);
	return 0;
}

static int map_emit(struct map_state *m, const struct qcow_extent *e)
{
	int ret = m->json ? map_emit_json(m, e) : map_emit_human(m, e);

	m->nb_extents++;
	return ret;
}

/* Walks the whole image, merging neighbouring runs that look alike. */
static int map_walk(struct map_state *m)
{
	uint64_t off = 0, size = m->f->size_bytes;
	struct qcow_extent cur = {0}, ext;
	bool have = false;
	int ret;

	while (off < size) {
		ret = image_file_status(m->f, off, size - off, &ext);
		if (ret < 0)
			return ret;
		off += ext.length;
		if (have && ext.flags == cur.flags && ext.depth == cur.depth) {
			cur.length += ext.length;
			continue;
		}
		if (have && map_emit(m, &cur) < 0)
			return -EIO;
		cur = ext;
		have = true;
	}
	if (have && map_emit(m, &cur) < 0)
		return -EIO;
	if (m->json)
		fputs(m->nb_extents ? "\n]\n" : "[]\n", stdout);
	return 0;
}

static int cmd_map(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct map_state m = {0};
	struct image_file f;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c != 'j')
			return image_common_option(c, argv, usage);
		m.json = true;
	}
	if (image_check_operands(argc, argv, 1, 1, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (image_file_open(&f, argv[optind], IMAGE_FORMAT_AUTO, 0) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	m.f = &f;
	ret = map_collect_names(&m);
	if (ret < 0)
		goto out_free_names;
	ret = map_walk(&m);
out_free_names:
	map_free_names(&m);
	if (image_file_close(&f) < 0 && ret == 0)
		ret = -EIO;
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* image convert */

#define CONVERT_USAGE                                                                              \
	"blockctl image convert [-f raw|qcow2] [-O raw|qcow2] [--cluster-size N] "                 \
	"[-l SNAPSHOT] [-c|--compress] [-p] SRC DST"

struct convert {
	struct image_file src;
	struct image_file dst;
	uint64_t size_bytes; /* what is copied: the source's virtual size */
	size_t grain_bytes;  /* all-zero pieces of this size are not written */
	bool compress;       /* qcow2 destination: every cluster written compressed */
	unsigned char *buf;  /* CONVERT_CHUNK_BYTES */
	struct progress progress;
};

static bool extent_reads_zero(const struct qcow_extent *e)
{
	return (e->flags & QCOW_EXTENT_ZERO) || e->depth < 0;
}

static bool buffer_is_zero(const unsigned char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Fills buf with source bytes [start, start + len): data is read, zeros are not. */
static int convert_fill(struct convert *c, uint64_t start, size_t len)
{
	struct qcow_extent ext;
	size_t done = 0;
	int ret;

	while (done < len) {
		ret = image_file_status(&c->src, start + done, len - done, &ext);
		if (ret < 0)
			return ret;
		if (extent_reads_zero(&ext))
			memset(c->buf + done, 0, ext.length);
		else if ((ret = image_file_read(&c->src, c->buf + done, start + done, ext.length)) <
		         0)
			return ret;
		done += ext.length;
	}
	return 0;
}

/* Writes the pieces of buf (source bytes at start, start chunk-aligned) that are not all zero. */
static int convert_write_nonzero(struct convert *c, uint64_t start, size_t len)
{
	size_t pos = 0, run = 0;
	bool in_run = false;
	int ret;

	while (pos < len) {
		size_t n = len - pos < c->grain_bytes ? len - pos : c->grain_bytes;
		bool zero = buffer_is_zero(c->buf + pos, n);

		if (zero && in_run) {
			ret = image_file_write(&c->dst, c->buf + run, start + run, pos - run);
			if (ret < 0)
				return ret;
		}
		if (!zero && !in_run)
			run = pos;
		in_run = !zero;
		pos += n;
	}
	if (in_run)
		return image_file_write(&c->dst, c->buf + run, start + run, len - run);
	return 0;
}

/*
 * Writes every cluster of buf (source bytes at start, start chunk-aligned)
 * that is not all zeros as one compressed cluster.  The disk's last
 * cluster may be short: it ends with the destination's virtual size,
 * which is the source's rounded up to a sector, so the tail past the
 * source is zero-filled here (it stays inside buf: a chunk is a whole
 * number of sectors).
 */
static int convert_write_compressed(struct convert *c, uint64_t start, size_t len)
{
	size_t pos, n;
	int ret;

	for (pos = 0; pos < len; pos += n) {
		n = c->grain_bytes;
		if (c->dst.size_bytes - (start + pos) < n)
			n = (size_t)(c->dst.size_bytes - (start + pos));
		if (n > len - pos) {
			if (pos + n > CONVERT_CHUNK_BYTES) {
				cli_error(
				    "%s: internal error: cluster at %llu past the copy buffer",
				    c->dst.path, (unsigned long long)(start + pos));
				return -EIO;
			}
			memset(c->buf + len, 0, pos + n - len);
		}
		if (buffer_is_zero(c->buf + pos, n))
			continue;
		ret = image_file_write_compressed(&c->dst, c->buf + pos, start + pos, n);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Copies the chunk at *pos, or skips every whole chunk that reads as zeros. */
static int convert_step(struct convert *c, uint64_t *pos)
{
	uint64_t start = *pos, end, zero_end;
	struct qcow_extent ext;
	int ret;

	end = c->size_bytes - start < CONVERT_CHUNK_BYTES ? c->size_bytes
	                                                  : start + CONVERT_CHUNK_BYTES;
	ret = image_file_status(&c->src, start, c->size_bytes - start, &ext);
	if (ret < 0)
		return ret;
	if (extent_reads_zero(&ext) && ext.length >= end - start) {
		zero_end = start + ext.length;
		if (zero_end < c->size_bytes)
			zero_end -= zero_end % CONVERT_CHUNK_BYTES;
		*pos = zero_end > end ? zero_end : end;
		return 0;
	}
	ret = convert_fill(c, start, (size_t)(end - start));
	if (ret < 0)
		return ret;
	if (c->compress)
		ret = convert_write_compressed(c, start, (size_t)(end - start));
	else
		ret = convert_write_nonzero(c, start, (size_t)(end - start));
	if (ret < 0)
		return ret;
	*pos = end;
	return 0;
}

static int convert_copy(struct convert *c, bool show_progress)
{
	uint64_t pos = 0;
	int ret = 0;

	c->buf = malloc(CONVERT_CHUNK_BYTES);
	if (!c->buf) {
		cli_error("%s: out of memory", c->dst.path);
		return -ENOMEM;
	}
	progress_catch_interrupts();
	progress_init(&c->progress, show_progress, c->size_bytes);
	while (pos < c->size_bytes) {
		if (progress_interrupted()) {
			cli_error("%s: interrupted; the partial copy is removed", c->dst.path);
			ret = -EINTR;
			break;
		}
		progress_update(&c->progress, pos);
		ret = convert_step(c, &pos);
		if (ret < 0)
			break;
	}
	if (ret == 0)
		progress_finish(&c->progress);
	free(c->buf);
	c->buf = NULL;
	return ret;
}

static int convert_create_dst(struct convert *c, const char *path, enum image_format format,
                              uint32_t cluster_size)
{
	struct qcow_create_opts opts = {
	    .path = path,
	    /* qcow2 sizes are whole sectors; the tail past the source reads as zeros. */
	    .size_bytes = (c->size_bytes + 511) & ~511ull,
	    .cluster_size = cluster_size,
	    .compression = c->compress ? QCOW_COMPRESSION_ZSTD : QCOW_COMPRESSION_DEFLATE,
	};

	if (format == IMAGE_FORMAT_RAW) {
		c->grain_bytes = RAW_ZERO_GRAIN_BYTES;
		return image_file_create_raw(&c->dst, path, c->size_bytes);
	}
	c->grain_bytes = cluster_size ? cluster_size : 64u << 10;
	return image_file_create_qcow2(&c->dst, &opts);
}

struct convert_args {
	enum image_format src_format;
	enum image_format dst_format;
	uint32_t cluster_size; /* 0: the default */
	bool compress;
	bool progress;
	const char *snapshot; /* read the source as this snapshot (name or id); NULL: as it is */
	const char *src;
	const char *dst;
};

static int convert_run(const struct convert_args *a)
{
	struct convert c = {.compress = a->compress};
	int ret;

	if (a->snapshot)
		ret = image_file_open_snapshot(&c.src, a->src, a->src_format, a->snapshot);
	else
		ret = image_file_open(&c.src, a->src, a->src_format, 0);
	if (ret < 0)
		return ret;
	c.size_bytes = c.src.size_bytes;
	ret = convert_create_dst(&c, a->dst, a->dst_format, a->cluster_size);
	if (ret < 0)
		goto out_abandon_src;
	ret = convert_copy(&c, a->progress || isatty(STDERR_FILENO));
	if (ret < 0)
		goto out_abandon_dst;
	ret = image_file_close(&c.dst);
	if (ret < 0)
		goto out_unlink_dst;
	return image_file_close(&c.src);

out_abandon_dst:
	image_file_abandon(&c.dst);
out_unlink_dst:
	unlink(a->dst);
out_abandon_src:
	image_file_abandon(&c.src);
	return ret;
}

static int cmd_convert(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"cluster-size", required_argument, NULL, 'C'},
	    {"compress", no_argument, NULL, 'c'},
	    {"snapshot", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct convert_args a = {.dst_format = IMAGE_FORMAT_QCOW2};
	bool cluster_size_given = false;
	int c;

	while ((c = getopt_long(argc, argv, ":f:O:l:cph", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (parse_format_arg("source format", optarg, &a.src_format) < 0)
				return BLOCKCTL_EXIT_FAILURE;
			break;
		case 'O':
			if (parse_format_arg("output format", optarg, &a.dst_format) < 0)
				return BLOCKCTL_EXIT_FAILURE;
			break;
		case 'C':
			if (parse_cluster_size(optarg, &a.cluster_size) < 0)
				return BLOCKCTL_EXIT_FAILURE;
			cluster_size_given = true;
			break;
		case 'c':
			a.compress = true;
			break;
		case 'l':
			a.snapshot = optarg;
			break;
		case 'p':
			a.progress = true;
			break;
		default:
			return image_common_option(c, argv, usage);
		}
	}
	if (image_check_operands(argc, argv, 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (cluster_size_given && a.dst_format != IMAGE_FORMAT_QCOW2) {
		cli_usage_error(usage, "--cluster-size needs a qcow2 destination");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (a.compress && a.dst_format != IMAGE_FORMAT_QCOW2) {
		cli_usage_error(usage, "--compress needs a qcow2 destination");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (a.snapshot && a.snapshot[0] == '\0') {
		cli_usage_error(usage, "the snapshot name after -l is empty");
		return BLOCKCTL_EXIT_USAGE;
	}
	a.src = argv[optind];
	a.dst = argv[optind + 1];
	return convert_run(&a) < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* image resize */

#define RESIZE_USAGE "blockctl image resize FILE [+|-]SIZE"

/* The new size from the current one and a parsed "[+|-]SIZE". */
static int resize_target(const char *path, uint64_t current, int sign, uint64_t bytes,
                         uint64_t *target)
{
	char amount[SIZE_FORMAT_MAX];

	size_format(bytes, amount, sizeof(amount));
	if (sign == 0) {
		*target = bytes;
	} else if (sign > 0) {
		if (__builtin_add_overflow(current, bytes, target) || *target > INT64_MAX) {
			cli_error("%s: cannot grow by %s: the new size is too large", path, amount);
			return -ERANGE;
		}
	} else {
		if (bytes > current) {
			cli_error("%s: cannot shrink by %s: the image is only %llu bytes", path,
			          amount, (unsigned long long)current);
			return -ERANGE;
		}
		*target = current - bytes;
	}
	if (*target % SECTOR_SIZE) {
		/* qemu refuses these too: which way to round is the user's call. */
		cli_error("%s: the new size %llu is not a multiple of 512", path,
		          (unsigned long long)*target);
		return -EINVAL;
	}
	return 0;
}

static int resize_run(const char *path, const char *size_arg)
{
	struct image_file f;
	uint64_t bytes, target;
	int sign, ret;

	/* Parse before opening, so that a bad size does not touch the image. */
	ret = size_parse_delta(size_arg, &sign, &bytes);
	if (ret < 0)
		return size_error("size", size_arg, ret);
	ret =
	    image_file_open(&f, path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING);
	if (ret < 0)
		return ret;
	ret = resize_target(path, f.size_bytes, sign, bytes, &target);
	if (ret < 0)
		goto out_abandon;
	ret = qcow_resize(f.qcow, target);
	if (ret < 0) {
		cli_file_error(path, qcow_last_error(f.qcow));
		goto out_abandon;
	}
	return image_file_close(&f);

out_abandon:
	image_file_abandon(&f);
	return ret;
}

static int cmd_resize(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	/* '+': stop at the first operand, so that "-1G" after FILE is a size. */
	c = getopt_long(argc, argv, "+:h", longopts, NULL);
	if (c != -1)
		return image_common_option(c, argv, usage);
	if (image_check_operands(argc, argv, 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (resize_run(argv[optind], argv[optind + 1]) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	printf("Image resized.\n");
	return EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Dispatch */

struct image_cmd {
	const char *name;
	const char *usage;
	int (*run)(int argc, char **argv, const char *usage);
};

static const struct image_cmd image_cmds[] = {
    {"create", CREATE_USAGE, cmd_create},
    {"info", INFO_USAGE, cmd_info},
    {"map", MAP_USAGE, cmd_map},
    {"convert", CONVERT_USAGE, cmd_convert},
    {"resize", RESIZE_USAGE, cmd_resize},
    {"snapshot", SNAPSHOT_USAGE, image_cmd_snapshot},
    {"check", CHECK_USAGE, image_cmd_check},
};

#define IMAGE_CMDS_USAGE "blockctl image {create|info|map|convert|resize|snapshot|check} ..."

void image_print_usage(FILE *f)
{
	size_t i;

	for (i = 0; i < sizeof(image_cmds) / sizeof(image_cmds[0]); i++) {
		/* The snapshot group lists its own commands. */
		if (image_cmds[i].run == image_cmd_snapshot)
			image_snapshot_print_usage(f);
		else
			fprintf(f, "  %s\n", image_cmds[i].usage);
	}
}

int image_main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		cli_usage_error(IMAGE_CMDS_USAGE, "missing image command");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("usage: %s\n", IMAGE_CMDS_USAGE);
		image_print_usage(stdout);
		return EXIT_SUCCESS;
	}
	for (i = 0; i < sizeof(image_cmds) / sizeof(image_cmds[0]); i++) {
		if (strcmp(argv[1], image_cmds[i].name) != 0)
			continue;
		opterr = 0;
		optind = 1;
		return image_cmds[i].run(argc - 1, argv + 1, image_cmds[i].usage);
	}
	cli_usage_error(IMAGE_CMDS_USAGE, "unknown image command '%s'", argv[1]);
	return BLOCKCTL_EXIT_USAGE;
}
