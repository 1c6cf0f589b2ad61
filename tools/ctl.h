/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - what the daemon-facing commands of blockctl ("volume" and
 * "snapshot") share: where the daemon is, one HTTP request to its control
 * API, and the helpers that print its answers.
 *
 * The control API is HTTP/1.1 with JSON bodies on DIR/control.sock; the
 * volumes' data is served over NBD on DIR/nbd.sock (transfer.c).  Errors
 * follow blockctl.h: whoever detects one prints it, callers pass -errno up.
 */
#ifndef BLOCKD_TOOLS_CTL_H
#define BLOCKD_TOOLS_CTL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Where blockd is: the global options before the noun, or the defaults. */
struct ctl_target {
	char data_dir[PATH_MAX];     /* "" when only --control was given */
	char control_path[PATH_MAX]; /* the control socket */
};

/*
 * Parses "--data-dir DIR", "--control PATH" (and their "=" forms) at the
 * start of argv[1..].  Returns how many arguments it took, or -EINVAL
 * (printed: exit BLOCKCTL_EXIT_USAGE).  The defaults are filled in later,
 * by ctl_target_resolve().
 */
int ctl_parse_global(int argc, char **argv, struct ctl_target *t, const char *usage);

/* Fills in the default data directory and control socket; -errno (printed). */
int ctl_target_resolve(struct ctl_target *t);

/* The target the daemon commands talk to (set by main before dispatch). */
extern struct ctl_target ctl_target;

/* While set, ctl_request() prints no error for an answer that is not 2xx. */
extern bool ctl_quiet;

/*
 * One request to the control API: method ("GET", "POST", ...), path
 * ("/v1/volumes", with every name already escaped by ctl_escape()), and
 * an optional JSON body.  subject (or NULL) is what the command is about,
 * "vm1" or "vm1@s1": it starts an error message that does not name it.  On a 2xx answer returns 0
 * and *reply (if reply is not NULL) holds the JSON body, or NULL for an empty one (204).  On any
 * other answer prints the daemon's error message and returns -EIO, or -ENOENT / -EEXIST for 404 /
 * 409 (so callers can tell).
 */
int ctl_request(const char *method, const char *path, json_t *body, const char *subject,
                json_t **reply);

/*
 * s escaped for one segment of a URL path (every byte but unreserved ones
 * as %XX: "/" and "@" too).  Returns a malloc'ed string, or NULL (printed)
 * when out of memory.
 */
char *ctl_escape(const char *s);

/* Prints value as pretty JSON with sorted keys and a newline; -EIO on failure. */
int ctl_print_json(const json_t *value);

/* A string member of obj, or fallback when missing or not a string. */
const char *ctl_str(const json_t *obj, const char *key, const char *fallback);

/* An integer member of obj >= 0 into *out; -EPROTO (printed) when missing. */
int ctl_uint(const json_t *obj, const char *key, const char *what, uint64_t *out);

/* s with control characters as '?', cut to fit len; for table cells. */
const char *ctl_printable(const char *s, char *buf, size_t len);

/* Checks a volume or snapshot name given on the command line is not empty. */
int ctl_check_name(const char *what, const char *name, const char *usage);

/* "blockctl [OPTIONS] volume ...": argv[0] is "volume". */
int volume_main(int argc, char **argv);
void volume_print_usage(FILE *f);

/* "blockctl [OPTIONS] snapshot ...": argv[0] is "snapshot". */
/* The snapshot table of "snapshot list", for an array of SNAPSHOT objects. */
int snapshot_print_table(const json_t *snapshots);

int snapshot_main(int argc, char **argv);
void snapshot_print_usage(FILE *f);

/* transfer.c: "volume import" and "volume export" over NBD. */
#define IMPORT_USAGE "blockctl volume import [-f raw|qcow2] [--flatten] [-p] FILE NAME"
#define EXPORT_USAGE "blockctl volume export [--format raw|qcow2] [-p] NAME[@SNAP] FILE"
int volume_cmd_import(int argc, char **argv, const char *usage);
int volume_cmd_export(int argc, char **argv, const char *usage);

#endif
