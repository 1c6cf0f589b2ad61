/* SPDX-License-Identifier: MIT */
/*
 * image_cmds.h - what the files of the "blockctl image" commands share:
 * the argument helpers every command parses with, and the commands that
 * live outside image_cmds.c (snapshot in image_snapshot.c, check in
 * image_check.c).
 *
 * A command is int cmd(int argc, char **argv, const char *usage): argv[0]
 * is the command's name, getopt_long is reset (optind = 1, opterr = 0)
 * before the call, and the return value is the process exit status.
 */
#ifndef BLOCKD_TOOLS_IMAGE_CMDS_H
#define BLOCKD_TOOLS_IMAGE_CMDS_H

#include <jansson.h>
#include <stdio.h>

/*
 * What getopt_long answered that is not one of the command's own options:
 * --help (c == 'h'), an unknown option, a missing argument.  Prints the
 * usage or the usage error and returns the exit status.
 */
int image_common_option(int c, char **argv, const char *usage);

/* Checks that min..max operands are left after the options; -EINVAL (printed) if not. */
int image_check_operands(int argc, char **argv, int min, int max, const char *usage);

/* A JSON string for s; bytes that are not UTF-8 become '?'.  NULL when out of memory. */
json_t *image_json_text(const char *s);

#define SNAPSHOT_USAGE "blockctl image snapshot {create|list|delete|revert} ..."

/* "blockctl image snapshot ...": argv[0] is "snapshot". */
int image_cmd_snapshot(int argc, char **argv, const char *usage);

/* Prints the usage of every snapshot command, one per line, each indented by two spaces. */
void image_snapshot_print_usage(FILE *f);

#define CHECK_USAGE "blockctl image check [--repair] [--json] FILE"

/*
 * "blockctl image check": exits like qemu-img check, 0 clean, 1 the check
 * could not complete, 2 corruption found, 3 only leaked clusters found.
 */
int image_cmd_check(int argc, char **argv, const char *usage);

#endif
