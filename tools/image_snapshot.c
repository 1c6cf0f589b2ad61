/* SPDX-License-Identifier: MIT */
/*
 * image_snapshot.c - "blockctl image snapshot": internal snapshots of a
 * qcow2 image, offline.
 *
 *     create FILE NAME   save the image's current contents as NAME
 *     list [--json] FILE the snapshot table, as qemu-img snapshot -l shows it
 *     delete FILE NAME   drop a snapshot and give its clusters back
 *     revert FILE NAME   make the image's contents those of the snapshot
 *
 * A snapshot is named by its name or, failing that, its id, as in qemu.
 * The work is the library's (qcow_snapshot_*), which makes each change
 * crash-safe; here are only the command lines and the listing.  The
 * image is opened without its backing chain: a snapshot never needs it.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockctl.h"
#include "image_cmds.h"
#include "image_file.h"
#include "size.h"

#define NS_PER_SEC 1000000000ull
#define NS_PER_MS  1000000ull

#define SNAPSHOT_CREATE_USAGE "blockctl image snapshot create FILE NAME"
#define SNAPSHOT_LIST_USAGE   "blockctl image snapshot list [--json] FILE"
#define SNAPSHOT_DELETE_USAGE "blockctl image snapshot delete FILE NAME"
#define SNAPSHOT_REVERT_USAGE "blockctl image snapshot revert FILE NAME"

/* A change to the snapshot table: one of the qcow_snapshot_* actions. */
typedef int (*snapshot_action)(struct qcow_image *img, const char *name);

static int snapshot_change(const char *path, const char *name, snapshot_action action)
{
	struct image_file f;
	int ret;

	ret =
	    image_file_open(&f, path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING);
	if (ret < 0)
		return ret;
	ret = action(f.qcow, name);
	if (ret < 0) {
		cli_file_error(path, qcow_last_error(f.qcow));
		/* Nothing more to write: the library has undone or fenced the change. */
		image_file_abandon(&f);
		return ret;
	}
	return image_file_close(&f);
}

/* "create FILE NAME" and its kin: no options, two operands. */
static int cmd_change(int argc, char **argv, const char *usage, snapshot_action action)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	c = getopt_long(argc, argv, ":h", longopts, NULL);
	if (c != -1)
		return image_common_option(c, argv, usage);
	if (image_check_operands(argc, argv, 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (argv[optind + 1][0] == '\0') {
		cli_usage_error(usage, "the snapshot name is empty");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (snapshot_change(argv[optind], argv[optind + 1], action) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	return EXIT_SUCCESS;
}

static int cmd_create(int argc, char **argv, const char *usage)
{
	return cmd_change(argc, argv, usage, qcow_snapshot_create);
}

static int cmd_delete(int argc, char **argv, const char *usage)
{
	return cmd_change(argc, argv, usage, qcow_snapshot_delete);
}

static int cmd_revert(int argc, char **argv, const char *usage)
{
	return cmd_change(argc, argv, usage, qcow_snapshot_revert);
}

/* ------------------------------------------------------------------------ */
/* list */

/* s with control characters as '?', so that one snapshot stays one row. */
static const char *printable(const char *s, char *buf, size_t len)
{
	size_t i;

	snprintf(buf, len, "%s", s);
	for (i = 0; buf[i]; i++) {
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	}
	return buf;
}

/* The columns of qemu-img snapshot -l, with DISK SIZE where qemu has ICOUNT. */
static void list_print_header(void)
{
	printf("Snapshot list:\n");
	printf("%-10s%-17s%8s%20s%13s%12s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
	       "DISK SIZE");
}

static void list_print_row(const struct qcow_snapshot_info *sn)
{
	char id[sizeof(sn->id)], name[sizeof(sn->name)];
	char vm_size[SIZE_FORMAT_MAX], disk_size[SIZE_FORMAT_MAX];
	char date[32] = "", clock[48];
	uint64_t secs = sn->vm_clock_ns / NS_PER_SEC;
	time_t when = (time_t)sn->date_sec;
	struct tm tm;

	if (localtime_r(&when, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
	         (unsigned long long)(secs / 3600), (unsigned long long)(secs / 60 % 60),
	         (unsigned long long)(secs % 60),
	         (unsigned long long)(sn->vm_clock_ns / NS_PER_MS % 1000));
	printf("%-9s %-16s %8s%20s%13s%12s\n", printable(sn->id, id, sizeof(id)),
	       printable(sn->name, name, sizeof(name)),
	       size_format(sn->vm_state_bytes, vm_size, sizeof(vm_size)), date, clock,
	       size_format(sn->disk_size_bytes, disk_size, sizeof(disk_size)));
}

/*
 * qemu-img info's field names; the VM clock is split into seconds and
 * nanoseconds as qemu splits it.
 */
static json_t *list_json_entry(const struct qcow_snapshot_info *sn)
{
	return json_pack(
	    "{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I}", "id", image_json_text(sn->id), "name",
	    image_json_text(sn->name), "date-sec", (json_int_t)sn->date_sec, "date-nsec",
	    (json_int_t)sn->date_nsec, "vm-clock-sec", (json_int_t)(sn->vm_clock_ns / NS_PER_SEC),
	    "vm-clock-nsec", (json_int_t)(sn->vm_clock_ns % NS_PER_SEC), "vm-state-size",
	    (json_int_t)sn->vm_state_bytes, "disk-size", (json_int_t)sn->disk_size_bytes);
}

static int list_snapshots(const struct image_file *f, bool json)
{
	uint32_t i, count = qcow_snapshot_count(f->qcow);
	struct qcow_snapshot_info *sn;
	json_t *array = NULL;
	int ret = -ENOMEM;

	sn = malloc(sizeof(*sn));
	if (!sn || (json && !(array = json_array())))
		goto out_free;
	for (i = 0; i < count; i++) {
		ret = qcow_snapshot_get(f->qcow, i, sn);
		if (ret < 0) {
			cli_file_error(f->path, "the snapshot table changed while listing it");
			goto out_free;
		}
		ret = -ENOMEM;
		if (json && json_array_append_new(array, list_json_entry(sn)) < 0)
			goto out_free;
		if (!json && i == 0)
			list_print_header();
		if (!json)
			list_print_row(sn);
	}
	ret = 0;
	if (json && (json_dumpf(array, stdout, JSON_INDENT(4)) < 0 || putchar('\n') == EOF))
		ret = -EIO;
out_free:
	if (ret == -ENOMEM)
		cli_error("%s: out of memory", f->path);
	json_decref(array);
	free(sn);
	return ret;
}

static int cmd_list(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct image_file f;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c != 'j')
			return image_common_option(c, argv, usage);
		json = true;
	}
	if (image_check_operands(argc, argv, 1, 1, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (image_file_open(&f, argv[optind], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	ret = list_snapshots(&f, json);
	if (image_file_close(&f) < 0)
		ret = -EIO;
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Dispatch */

struct snapshot_cmd {
	const char *name;
	const char *usage;
	int (*run)(int argc, char **argv, const char *usage);
};

static const struct snapshot_cmd snapshot_cmds[] = {
    {"create", SNAPSHOT_CREATE_USAGE, cmd_create},
    {"list", SNAPSHOT_LIST_USAGE, cmd_list},
    {"delete", SNAPSHOT_DELETE_USAGE, cmd_delete},
    {"revert", SNAPSHOT_REVERT_USAGE, cmd_revert},
};

#define SNAPSHOT_CMDS_COUNT (sizeof(snapshot_cmds) / sizeof(snapshot_cmds[0]))

void image_snapshot_print_usage(FILE *f)
{
	size_t i;

	for (i = 0; i < SNAPSHOT_CMDS_COUNT; i++)
		fprintf(f, "  %s\n", snapshot_cmds[i].usage);
}

int image_cmd_snapshot(int argc, char **argv, const char *usage)
{
	size_t i;

	if (argc < 2) {
		cli_usage_error(usage, "missing snapshot command");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("usage: %s\n", usage);
		image_snapshot_print_usage(stdout);
		return EXIT_SUCCESS;
	}
	for (i = 0; i < SNAPSHOT_CMDS_COUNT; i++) {
		if (strcmp(argv[1], snapshot_cmds[i].name) != 0)
			continue;
		optind = 1;
		return snapshot_cmds[i].run(argc - 1, argv + 1, snapshot_cmds[i].usage);
	}
	cli_usage_error(usage, "unknown snapshot command '%s'", argv[1]);
	return BLOCKCTL_EXIT_USAGE;
}
