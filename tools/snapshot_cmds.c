/* SPDX-License-Identifier: MIT */
/*
 * snapshot_cmds.c - "blockctl snapshot": snapshots of the volumes a
 * running blockd serves, through its control API (ctl.h).
 *
 *     create VOL NAME    save the volume's current contents as NAME
 *     list [--json] VOL  the snapshot table, like qemu-img snapshot -l
 *     delete VOL NAME    drop a snapshot
 *     restore VOL NAME   make the volume's contents those of the snapshot
 *
 * A snapshot is also an NBD export of its own, VOL@NAME, read-only; see
 * "volume export" and "volume clone".
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockctl.h"
#include "ctl.h"
#include "image_cmds.h"
#include "size.h"

#define CREATE_USAGE  "blockctl snapshot create VOL NAME"
#define LIST_USAGE    "blockctl snapshot list [--json] VOL"
#define DELETE_USAGE  "blockctl snapshot delete VOL NAME"
#define RESTORE_USAGE "blockctl snapshot restore VOL NAME"

/* "/v1/volumes/VOL/snapshots[/SNAP]suffix", names escaped; NULL (printed) if out of memory. */
static char *snapshots_path(const char *vol, const char *snap, const char *suffix)
{
	char *v = ctl_escape(vol), *s = snap ? ctl_escape(snap) : NULL, *path = NULL;
	int n = -1;

	if (v && (!snap || s))
		n = asprintf(&path, "/v1/volumes/%s/snapshots%s%s%s", v, snap ? "/" : "",
		             snap ? s : "", suffix);
	if (n < 0) {
		if (v && (!snap || s))
			cli_error("out of memory");
		path = NULL;
	}
	free(v);
	free(s);
	return path;
}

/* --help and, with json non-NULL, --json.  Returns -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, const char *usage, bool *json)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c != 'j' || !json)
			return image_common_option(c == 'j' ? '?' : c, argv, usage);
		*json = true;
	}
	return -1;
}

/* ------------------------------------------------------------------------ */
/* list */

int snapshot_print_table(const json_t *snapshots)
{
	char id[64], name[256], created[64], size[SIZE_FORMAT_MAX];
	size_t i, width = 16;
	uint64_t bytes;
	json_t *s;

	if (!json_is_array(snapshots)) {
		cli_error("blockd's snapshot list has no \"snapshots\" array");
		return -EPROTO;
	}
	if (json_array_size(snapshots) == 0)
		return 0;
	json_array_foreach(snapshots, i, s)
	{
		size_t len = strlen(ctl_str(s, "name", "?"));

		if (len > width)
			width = len > 40 ? 40 : len;
	}
	printf("Snapshot list:\n");
	printf("%-8s %-*s %10s  %s\n", "ID", (int)width, "NAME", "SIZE", "CREATED");
	json_array_foreach(snapshots, i, s)
	{
		json_t *jid = json_object_get(s, "id");

		if (json_is_integer(jid))
			snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(jid));
		else
			ctl_printable(ctl_str(s, "id", "-"), id, sizeof(id));
		if (json_object_get(s, "size")) {
			if (ctl_uint(s, "size", "a snapshot", &bytes) < 0)
				return -EPROTO;
			size_format(bytes, size, sizeof(size));
		} else {
			snprintf(size, sizeof(size), "-");
		}
		printf("%-8s %-*s %10s  %s\n", id, (int)width,
		       ctl_printable(ctl_str(s, "name", "?"), name, sizeof(name)), size,
		       ctl_printable(ctl_str(s, "created", "-"), created, sizeof(created)));
	}
	return 0;
}

static int cmd_list(int argc, char **argv, const char *usage)
{
	json_t *reply = NULL;
	bool json = false;
	char *path;
	int ret;

	ret = parse_options(argc, argv, usage, &json);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 1, 1, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	path = snapshots_path(argv[optind], NULL, "");
	if (!path)
		return BLOCKCTL_EXIT_FAILURE;
	ret = ctl_request("GET", path, NULL, argv[optind], &reply);
	free(path);
	if (ret == 0 && json)
		ret = ctl_print_json(reply);
	else if (ret == 0)
		ret = snapshot_print_table(json_object_get(reply, "snapshots"));
	json_decref(reply);
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* create, delete, restore */

enum change { CHANGE_CREATE, CHANGE_DELETE, CHANGE_RESTORE };

static int change(int argc, char **argv, const char *usage, enum change what)
{
	const char *vol, *snap;
	json_t *body = NULL, *reply = NULL;
	char subject[1024];
	char *path;
	int ret;

	ret = parse_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 2, 2, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0 ||
	    ctl_check_name("snapshot", argv[optind + 1], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	vol = argv[optind];
	snap = argv[optind + 1];
	snprintf(subject, sizeof(subject), "%s@%s", vol, snap);
	if (what == CHANGE_CREATE) {
		path = snapshots_path(vol, NULL, "");
		body = json_pack("{s:s}", "name", snap);
		if (!body) {
			free(path);
			cli_error("out of memory (or a name that is not UTF-8)");
			return BLOCKCTL_EXIT_FAILURE;
		}
	} else {
		path = snapshots_path(vol, snap, what == CHANGE_RESTORE ? "/restore" : "");
	}
	if (!path) {
		json_decref(body);
		return BLOCKCTL_EXIT_FAILURE;
	}
	ret = ctl_request(what == CHANGE_DELETE ? "DELETE" : "POST", path, body, subject, &reply);
	json_decref(body);
	json_decref(reply);
	free(path);
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

static int cmd_create(int argc, char **argv, const char *usage)
{
	return change(argc, argv, usage, CHANGE_CREATE);
}

static int cmd_delete(int argc, char **argv, const char *usage)
{
	return change(argc, argv, usage, CHANGE_DELETE);
}

static int cmd_restore(int argc, char **argv, const char *usage)
{
	return change(argc, argv, usage, CHANGE_RESTORE);
}

/* ------------------------------------------------------------------------ */
/* Dispatch */

struct snapshot_cmd {
	const char *name;
	const char *usage;
	int (*run)(int argc, char **argv, const char *usage);
};

static const struct snapshot_cmd snapshot_cmds[] = {
    {"create", CREATE_USAGE, cmd_create},
    {"list", LIST_USAGE, cmd_list},
    {"delete", DELETE_USAGE, cmd_delete},
    {"restore", RESTORE_USAGE, cmd_restore},
};

#define SNAPSHOT_CMDS_COUNT (sizeof(snapshot_cmds) / sizeof(snapshot_cmds[0]))
#define SNAPSHOT_CMDS_USAGE                                                                        \
	"blockctl [--data-dir DIR] [--control PATH] snapshot {create|list|delete|restore} ..."

void snapshot_print_usage(FILE *f)
{
	size_t i;

	for (i = 0; i < SNAPSHOT_CMDS_COUNT; i++)
		fprintf(f, "  %s\n", snapshot_cmds[i].usage);
}

int snapshot_main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		cli_usage_error(SNAPSHOT_CMDS_USAGE, "missing snapshot command");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("usage: %s\n", SNAPSHOT_CMDS_USAGE);
		snapshot_print_usage(stdout);
		return EXIT_SUCCESS;
	}
	for (i = 0; i < SNAPSHOT_CMDS_COUNT; i++) {
		if (strcmp(argv[1], snapshot_cmds[i].name) != 0)
			continue;
		opterr = 0;
		optind = 1;
		return snapshot_cmds[i].run(argc - 1, argv + 1, snapshot_cmds[i].usage);
	}
	cli_usage_error(SNAPSHOT_CMDS_USAGE, "unknown snapshot command '%s'", argv[1]);
	return BLOCKCTL_EXIT_USAGE;
}
