/* SPDX-License-Identifier: MIT */
/*
 * volume_cmds.c - "blockctl volume": the volumes a running blockd serves,
 * through its control API (ctl.h).
 *
 *     create NAME SIZE        a new, empty volume
 *     clone VOL@SNAP NAME     a new volume over a snapshot of another
 *     list [--json]           every volume, one row each (like rbd ls -l)
 *     info [--json] NAME      one volume, its attachments and snapshots
 *     resize NAME [+|-]SIZE   grow or shrink a volume
 *     delete NAME             remove a volume
 *     recover NAME            reopen a fenced volume (or retry one that failed to open)
 *     import / export         copy data in or out over NBD (transfer.c)
 *
 * Names are the daemon's to judge: they are sent as given (escaped in
 * URLs), and its refusal is shown.  --json prints the API's JSON as it
 * came, pretty-printed with sorted keys.
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

#define SECTOR_SIZE 512u

/* Widest NAME column of the table; longer names widen only their row. */
#define NAME_COLUMN_MAX 40

#define CREATE_USAGE  "blockctl volume create NAME SIZE"
#define CLONE_USAGE   "blockctl volume clone VOL@SNAP NAME"
#define LIST_USAGE    "blockctl volume list [--json]"
#define INFO_USAGE    "blockctl volume info [--json] NAME"
#define RESIZE_USAGE  "blockctl volume resize NAME [+|-]SIZE"
#define DELETE_USAGE  "blockctl volume delete NAME"
#define RECOVER_USAGE "blockctl volume recover NAME"

/* ------------------------------------------------------------------------ */
/* Helpers */

static int size_error(const char *s, int err)
{
	if (err == -ERANGE)
		cli_error("size '%s' is too large (the limit is 8 EiB - 1 byte)", s);
	else
		cli_error("invalid size '%s' (expected a number of bytes with an optional "
		          "K, M, G or T suffix)",
		          s);
	return err;
}

/* "/v1/volumes/NAME" plus suffix, NAME escaped.  NULL (printed) when out of memory. */
static char *volume_path(const char *name, const char *suffix)
{
	char *escaped = ctl_escape(name), *path = NULL;

	if (escaped && asprintf(&path, "/v1/volumes/%s%s", escaped, suffix) < 0) {
		cli_error("out of memory");
		path = NULL;
	}
	free(escaped);
	return path;
}

/* Options: --help and, with json non-NULL, --json.  Returns -1 to go on, else the exit status. */
static int parse_simple_options(int argc, char **argv, const char *usage, bool *json)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	/* '+': "-1G" after NAME is a size, not an option. */
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		if (c != 'j' || !json)
			return image_common_option(c == 'j' ? '?' : c, argv, usage);
		*json = true;
	}
	return -1;
}

/*
 * Runs method on /v1/volumes, or on /v1/volumes/NAME when name is not
 * NULL, with body (consumed; NULL for none).  Returns the exit status.
 */
static int volume_call(const char *method, const char *name, json_t *body, const char *subject)
{
	char *path = NULL;
	int ret = -ENOMEM;

	if (name)
		path = volume_path(name, "");
	if (!name || path)
		ret = ctl_request(method, path ? path : "/v1/volumes", body, subject, NULL);
	json_decref(body);
	free(path);
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* create, clone, delete */

static int cmd_create(int argc, char **argv, const char *usage)
{
	uint64_t bytes;
	json_t *body;
	int ret;

	ret = parse_simple_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 2, 2, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	ret = size_parse(argv[optind + 1], &bytes);
	if (ret < 0) {
		size_error(argv[optind + 1], ret);
		return BLOCKCTL_EXIT_FAILURE;
	}
	/* Whole sectors, rounded up as "image create" and qemu-img do. */
	bytes = (bytes + SECTOR_SIZE - 1) & ~(uint64_t)(SECTOR_SIZE - 1);
	body = json_pack("{s:s, s:I}", "name", argv[optind], "size", (json_int_t)bytes);
	if (!body) {
		cli_error("out of memory (or a name that is not UTF-8)");
		return BLOCKCTL_EXIT_FAILURE;
	}
	return volume_call("POST", NULL, body, argv[optind]);
}

static int cmd_clone(int argc, char **argv, const char *usage)
{
	const char *from, *at;
	json_t *body;
	int ret;

	ret = parse_simple_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	from = argv[optind];
	at = strchr(from, '@');
	if (!at || at == from || at[1] == '\0') {
		cli_usage_error(usage, "'%s' is not VOL@SNAP", from);
		return BLOCKCTL_EXIT_USAGE;
	}
	if (ctl_check_name("volume", argv[optind + 1], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	body = json_pack("{s:s, s:s}", "name", argv[optind + 1], "from", from);
	if (!body) {
		cli_error("out of memory (or a name that is not UTF-8)");
		return BLOCKCTL_EXIT_FAILURE;
	}
	return volume_call("POST", NULL, body, argv[optind + 1]);
}

static int cmd_delete(int argc, char **argv, const char *usage)
{
	int ret;

	ret = parse_simple_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 1, 1, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	return volume_call("DELETE", argv[optind], NULL, argv[optind]);
}

/* Cuts the volume's clients and reopens it: after a failed write-back fenced it. */
static int cmd_recover(int argc, char **argv, const char *usage)
{
	char *path;
	int ret;

	ret = parse_simple_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 1, 1, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	path = volume_path(argv[optind], "/recover");
	ret = path ? ctl_request("POST", path, NULL, argv[optind], NULL) : -ENOMEM;
	free(path);
	if (ret < 0)
		return BLOCKCTL_EXIT_FAILURE;
	printf("Volume recovered.\n");
	return EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* resize */

static int resize_target(const char *name, const char *arg, uint64_t *target)
{
	uint64_t bytes, current;
	char amount[SIZE_FORMAT_MAX];
	json_t *vol = NULL;
	char *path;
	int sign, ret;

	ret = size_parse_delta(arg, &sign, &bytes);
	if (ret < 0)
		return size_error(arg, ret);
	*target = bytes;
	if (sign != 0) {
		path = volume_path(name, "");
		if (!path)
			return -ENOMEM;
		ret = ctl_request("GET", path, NULL, name, &vol);
		free(path);
		if (ret == 0)
			ret = ctl_uint(vol, "size", "the volume", &current);
		json_decref(vol);
		if (ret < 0)
			return ret;
		size_format(bytes, amount, sizeof(amount));
		if (sign > 0 &&
		    (__builtin_add_overflow(current, bytes, target) || *target > INT64_MAX)) {
			cli_error("%s: cannot grow by %s: the new size is too large", name, amount);
			return -ERANGE;
		}
		if (sign < 0 && bytes > current) {
			cli_error("%s: cannot shrink by %s: the volume is only %llu bytes", name,
			          amount, (unsigned long long)current);
			return -ERANGE;
		}
		if (sign < 0)
			*target = current - bytes;
	}
	if (*target % SECTOR_SIZE) {
		cli_error("%s: the new size %llu is not a multiple of 512", name,
		          (unsigned long long)*target);
		return -EINVAL;
	}
	return 0;
}

static int cmd_resize(int argc, char **argv, const char *usage)
{
	uint64_t target;
	json_t *body;
	int ret;

	ret = parse_simple_options(argc, argv, usage, NULL);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 2, 2, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	if (resize_target(argv[optind], argv[optind + 1], &target) < 0)
		return BLOCKCTL_EXIT_FAILURE;
	body = json_pack("{s:I}", "size", (json_int_t)target);
	if (!body) {
		cli_error("out of memory");
		return BLOCKCTL_EXIT_FAILURE;
	}
	ret = volume_call("PATCH", argv[optind], body, argv[optind]);
	if (ret == EXIT_SUCCESS)
		printf("Volume resized.\n");
	return ret;
}

/* ------------------------------------------------------------------------ */
/* list */

static int name_width(const json_t *volumes)
{
	size_t i, len;
	json_t *v;
	int width = 4;

	json_array_foreach(volumes, i, v)
	{
		len = strlen(ctl_str(v, "name", "?"));
		if (len > (size_t)width)
			width = len > NAME_COLUMN_MAX ? NAME_COLUMN_MAX : (int)len;
	}
	return width;
}

static int list_print_row(const json_t *v, int width)
{
	char name[256], size[SIZE_FORMAT_MAX], alloc[SIZE_FORMAT_MAX];
	uint64_t size_bytes, alloc_bytes, snaps = 0;
	json_t *att = json_object_get(v, "attachments");
	const char *backing = ctl_str(v, "backing", NULL);
	char back[256], state[16];

	if (ctl_uint(v, "size", "a volume", &size_bytes) < 0)
		return -EPROTO;
	if (json_object_get(v, "allocated")) {
		if (ctl_uint(v, "allocated", "a volume", &alloc_bytes) < 0)
			return -EPROTO;
		size_format(alloc_bytes, alloc, sizeof(alloc));
	} else {
		snprintf(alloc, sizeof(alloc), "-");
	}
	if (json_object_get(v, "snapshot_count") &&
	    ctl_uint(v, "snapshot_count", "a volume", &snaps) < 0)
		return -EPROTO;
	printf("%-*s  %10s  %10s  %5llu  %7zu  %-5s  %s\n", width,
	       ctl_printable(ctl_str(v, "name", "?"), name, sizeof(name)),
	       size_format(size_bytes, size, sizeof(size)), alloc, (unsigned long long)snaps,
	       json_is_array(att) ? json_array_size(att) : (size_t)0,
	       ctl_printable(ctl_str(v, "state", "ok"), state, sizeof(state)),
	       backing ? ctl_printable(backing, back, sizeof(back)) : "-");
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(ctl_str(*(json_t *const *)a, "name", ""),
	              ctl_str(*(json_t *const *)b, "name", ""));
}

/* The table, sorted by name whatever order blockd keeps its volumes in. */
static int list_print_table(const json_t *reply)
{
	json_t *volumes = json_object_get(reply, "volumes"), **rows;
	size_t i, count;
	int width, ret = 0;

	if (!json_is_array(volumes)) {
		cli_error("blockd's volume list has no \"volumes\" array");
		return -EPROTO;
	}
	count = json_array_size(volumes);
	if (count == 0)
		return 0;
	rows = calloc(count, sizeof(*rows));
	if (!rows) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < count; i++)
		rows[i] = json_array_get(volumes, i);
	qsort(rows, count, sizeof(*rows), by_name);
	width = name_width(volumes);
	printf("%-*s  %10s  %10s  %5s  %7s  %-5s  %s\n", width, "NAME", "SIZE", "ALLOCATED",
	       "SNAPS", "CLIENTS", "STATE", "BACKING");
	for (i = 0; i < count && ret == 0; i++)
		ret = list_print_row(rows[i], width);
	free(rows);
	return ret;
}

static int cmd_list(int argc, char **argv, const char *usage)
{
	json_t *reply = NULL;
	bool json = false;
	int ret;

	ret = parse_simple_options(argc, argv, usage, &json);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 0, 0, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	ret = ctl_request("GET", "/v1/volumes", NULL, NULL, &reply);
	if (ret == 0)
		ret = json ? ctl_print_json(reply) : list_print_table(reply);
	json_decref(reply);
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* info */

static void info_print_size(const char *label, const json_t *v, const char *key)
{
	json_t *n = json_object_get(v, key);
	char human[SIZE_FORMAT_MAX];

	if (!json_is_integer(n) || json_integer_value(n) < 0)
		return;
	printf("%-13s %s (%lld bytes)\n", label,
	       size_format((uint64_t)json_integer_value(n), human, sizeof(human)),
	       (long long)json_integer_value(n));
}

static void info_print_string(const char *label, const json_t *v, const char *key)
{
	const char *s = ctl_str(v, key, NULL);
	char buf[PATH_MAX];

	if (s)
		printf("%-13s %s\n", label, ctl_printable(s, buf, sizeof(buf)));
}

static void info_print_attachments(const json_t *atts)
{
	char peer[128], since[64], export[256];
	size_t i;
	json_t *a, *ro, *conns;

	if (!json_is_array(atts) || json_array_size(atts) == 0) {
		printf("%-13s none\n", "attachments:");
		return;
	}
	printf("attachments:\n");
	printf("  %-24s %-21s %-10s %-5s %s\n", "PEER", "SINCE", "MODE", "CONNS", "EXPORT");
	json_array_foreach(atts, i, a)
	{
		ro = json_object_get(a, "read_only");
		conns = json_object_get(a, "connections");
		printf("  %-24s %-21s %-10s %-5lld %s\n",
		       ctl_printable(ctl_str(a, "peer", "?"), peer, sizeof(peer)),
		       ctl_printable(ctl_str(a, "since", "-"), since, sizeof(since)),
		       json_is_true(ro) ? "read-only" : "read-write",
		       json_is_integer(conns) ? (long long)json_integer_value(conns) : 0LL,
		       ctl_printable(ctl_str(a, "export", "-"), export, sizeof(export)));
	}
}

static int info_print_human(const json_t *v)
{
	json_t *snaps = json_object_get(v, "snapshots");
	uint64_t size;

	if (!json_is_object(v) || ctl_uint(v, "size", "the volume", &size) < 0)
		return -EPROTO;
	info_print_string("name:", v, "name");
	info_print_string("state:", v, "state");
	if (json_object_get(v, "error"))
		info_print_string("error:", v, "error");
	info_print_size("size:", v, "size");
	info_print_size("allocated:", v, "allocated");
	info_print_string("backing:", v, "backing");
	info_print_string("nbd uri:", v, "nbd_uri");
	info_print_string("nbd unix uri:", v, "nbd_unix_uri");
	info_print_attachments(json_object_get(v, "attachments"));
	if (json_is_array(snaps) && json_array_size(snaps) > 0)
		return snapshot_print_table(snaps);
	printf("%-13s none\n", "snapshots:");
	return 0;
}

static int cmd_info(int argc, char **argv, const char *usage)
{
	json_t *reply = NULL;
	bool json = false;
	char *path;
	int ret;

	ret = parse_simple_options(argc, argv, usage, &json);
	if (ret >= 0)
		return ret;
	if (image_check_operands(argc, argv, 1, 1, usage) < 0 ||
	    ctl_check_name("volume", argv[optind], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	path = volume_path(argv[optind], "");
	if (!path)
		return BLOCKCTL_EXIT_FAILURE;
	ret = ctl_request("GET", path, NULL, argv[optind], &reply);
	free(path);
	if (ret == 0)
		ret = json ? ctl_print_json(reply) : info_print_human(reply);
	json_decref(reply);
	return ret < 0 ? BLOCKCTL_EXIT_FAILURE : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Dispatch */

struct volume_cmd {
	const char *name;
	const char *usage;
	int (*run)(int argc, char **argv, const char *usage);
};

static const struct volume_cmd volume_cmds[] = {
    {"create", CREATE_USAGE, cmd_create},
    {"clone", CLONE_USAGE, cmd_clone},
    {"list", LIST_USAGE, cmd_list},
    {"info", INFO_USAGE, cmd_info},
    {"resize", RESIZE_USAGE, cmd_resize},
    {"delete", DELETE_USAGE, cmd_delete},
    {"recover", RECOVER_USAGE, cmd_recover},
    {"import", IMPORT_USAGE, volume_cmd_import},
    {"export", EXPORT_USAGE, volume_cmd_export},
};

#define VOLUME_CMDS_COUNT (sizeof(volume_cmds) / sizeof(volume_cmds[0]))
#define VOLUME_CMDS_USAGE                                                                          \
	"blockctl [--data-dir DIR] [--control PATH] volume "                                       \
	"{create|clone|list|info|resize|delete|recover|import|export} ..."

void volume_print_usage(FILE *f)
{
	size_t i;

	for (i = 0; i < VOLUME_CMDS_COUNT; i++)
		fprintf(f, "  %s\n", volume_cmds[i].usage);
}

int volume_main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		cli_usage_error(VOLUME_CMDS_USAGE, "missing volume command");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("usage: %s\n", VOLUME_CMDS_USAGE);
		volume_print_usage(stdout);
		return EXIT_SUCCESS;
	}
	for (i = 0; i < VOLUME_CMDS_COUNT; i++) {
		if (strcmp(argv[1], volume_cmds[i].name) != 0)
			continue;
		opterr = 0;
		optind = 1;
		return volume_cmds[i].run(argc - 1, argv + 1, volume_cmds[i].usage);
	}
	cli_usage_error(VOLUME_CMDS_USAGE, "unknown volume command '%s'", argv[1]);
	return BLOCKCTL_EXIT_USAGE;
}
