/* SPDX-License-Identifier: MIT */
/*
 * image_check.c - "blockctl image check [--repair] [--json] FILE": the
 * library's consistency check (qcow_check), reported and exited like
 * qemu-img check so that scripts can use either:
 *
 *     0  no problem found
 *     1  the check could not complete (the image does not open, I/O errors)
 *     2  corruption found (refcounts below the references, bad entries,
 *        wrong COPIED flags)
 *     3  only leaked clusters found (refcounts nothing references)
 *
 * --repair opens the image read-write and, if the first pass found
 * anything, runs a second pass with QCOW_REPAIR_ALL and then checks the
 * repaired image again from scratch, as qemu-img does ("Double checking
 * the fixed image now..."): the report and the exit status describe what
 * that last pass found, so a problem the repair could not fix is never
 * reported as gone.  The image is opened without its backing chain: the
 * check looks at this file only.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "blockctl.h"
#include "image_cmds.h"
#include "image_file.h"

enum {
	CHECK_EXIT_CLEAN = 0,
	CHECK_EXIT_INCOMPLETE = 1,
	CHECK_EXIT_CORRUPT = 2,
	CHECK_EXIT_LEAKS = 3,
};

struct check_report {
	const char *path;
	uint64_t total_clusters;        /* guest clusters of the virtual disk */
	bool repaired;                  /* a repair pass ran */
	struct qcow_check_result found; /* the first pass */
	struct qcow_check_result res;   /* what remains: the last pass */
};

static int check_exit_status(const struct qcow_check_result *res)
{
	if (res->check_errors)
		return CHECK_EXIT_INCOMPLETE;
	if (res->corruptions)
		return CHECK_EXIT_CORRUPT;
	if (res->leaks)
		return CHECK_EXIT_LEAKS;
	return CHECK_EXIT_CLEAN;
}

/* How many of the problems the first pass found the repair made go away. */
static uint64_t fixed(uint64_t found, uint64_t remaining)
{
	return found > remaining ? found - remaining : 0;
}

static void check_print_human(const struct check_report *r)
{
	const struct qcow_check_result *res = &r->res;

	if (r->repaired) {
		printf("The following inconsistencies were found and repaired:\n\n"
		       "    %llu leaked clusters\n"
		       "    %llu corruptions\n\n"
		       "Double checking the fixed image now...\n",
		       (unsigned long long)fixed(r->found.leaks, res->leaks),
		       (unsigned long long)fixed(r->found.corruptions, res->corruptions));
	}
	if (!res->corruptions && !res->leaks && !res->check_errors)
		printf("No errors were found on the image.\n");
	if (res->corruptions)
		printf("\n%llu errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       (unsigned long long)res->corruptions);
	if (res->leaks)
		printf("\n%llu leaked clusters were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       (unsigned long long)res->leaks);
	if (res->check_errors)
		printf("\n%llu internal errors have occurred during the check.\n",
		       (unsigned long long)res->check_errors);
	if (r->total_clusters)
		printf("%llu/%llu = %.2f%% allocated\n",
		       (unsigned long long)res->allocated_clusters,
		       (unsigned long long)r->total_clusters,
		       100.0 * (double)res->allocated_clusters / (double)r->total_clusters);
	printf("Image end offset: %llu\n", (unsigned long long)res->image_end_offset);
}

static int check_print_json(const struct check_report *r)
{
	const struct qcow_check_result *res = &r->res;
	json_t *root;
	int ret = -ENOMEM;

	root = json_pack(
	    "{s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "filename", image_json_text(r->path),
	    "format", "qcow2", "check-errors", (json_int_t)res->check_errors, "corruptions",
	    (json_int_t)res->corruptions, "leaks", (json_int_t)res->leaks, "allocated-clusters",
	    (json_int_t)res->allocated_clusters, "total-clusters", (json_int_t)r->total_clusters,
	    "image-end-offset", (json_int_t)res->image_end_offset, "rebuilt", res->rebuilt != 0);
	if (!root)
		goto out_error;
	if (r->repaired &&
	    (json_object_set_new(root, "leaks-fixed",
	                         json_integer((json_int_t)fixed(r->found.leaks, res->leaks))) < 0 ||
	     json_object_set_new(
	         root, "corruptions-fixed",
	         json_integer((json_int_t)fixed(r->found.corruptions, res->corruptions))) < 0))
		goto out_put_root;
	if (json_dumpf(root, stdout, JSON_INDENT(4)) < 0 || putchar('\n') == EOF) {
		ret = -EIO;
		goto out_put_root;
	}
	ret = 0;
out_put_root:
	json_decref(root);
out_error:
	if (ret == -ENOMEM)
		cli_error("%s: cannot build the JSON output: out of memory", r->path);
	return ret;
}

static int check_run(struct check_report *r, struct image_file *f, bool repair)
{
	struct qcow_check_result repair_res;
	struct qcow_info info;
	int ret;

	qcow_get_info(f->qcow, &info);
	r->total_clusters =
	    info.size_bytes / info.cluster_size + (info.size_bytes % info.cluster_size != 0);
	ret = qcow_check(f->qcow, 0, &r->found);
	if (ret < 0) {
		cli_file_error(r->path, qcow_last_error(f->qcow));
		return ret;
	}
	r->res = r->found;
	if (!repair || (!r->found.corruptions && !r->found.leaks))
		return 0;
	ret = qcow_check(f->qcow, QCOW_REPAIR_ALL, &repair_res);
	if (ret == 0)
		ret = qcow_check(f->qcow, 0, &r->res);
	if (ret < 0) {
		cli_file_error(r->path, qcow_last_error(f->qcow));
		return ret;
	}
	r->res.rebuilt = repair_res.rebuilt;
	r->repaired = true;
	return 0;
}

int image_cmd_check(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"repair", no_argument, NULL, 'r'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct check_report r = {0};
	bool json = false, repair = false;
	struct image_file f;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'r')
			repair = true;
		else
			return image_common_option(c, argv, usage);
	}
	if (image_check_operands(argc, argv, 1, 1, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	r.path = argv[optind];
	if (image_file_open(&f, r.path, IMAGE_FORMAT_QCOW2,
	                    IMAGE_OPEN_NO_BACKING |
	                        (repair ? IMAGE_OPEN_WRITE | IMAGE_OPEN_REPAIR : 0)) < 0)
		return CHECK_EXIT_INCOMPLETE;
	ret = check_run(&r, &f, repair);
	if (ret < 0) {
		image_file_abandon(&f);
		return CHECK_EXIT_INCOMPLETE;
	}
	/* A repair is only done once it is on disk. */
	if (image_file_close(&f) < 0)
		return CHECK_EXIT_INCOMPLETE;
	if (json)
		ret = check_print_json(&r);
	else
		check_print_human(&r);
	if (ret < 0)
		return CHECK_EXIT_INCOMPLETE;
	if (r.res.check_errors) {
		cli_error("%s: the check could not complete: %llu internal errors", r.path,
		          (unsigned long long)r.res.check_errors);
		return CHECK_EXIT_INCOMPLETE;
	}
	return check_exit_status(&r.res);
}
