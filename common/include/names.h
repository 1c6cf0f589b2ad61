/* SPDX-License-Identifier: MIT */
/*
 * names.h - the rule for volume and snapshot names, and the NBD export
 * names made of them: blockd serves only such names, blockfs asks for no
 * other, and both read and write export names here.
 *
 * An export name is one of
 *
 *   NAME        volume NAME, read-write
 *   NAME:ro     volume NAME read-only, claiming nothing (blockfs reads through it)
 *   NAME@SNAP   snapshot SNAP of volume NAME, read-only
 *
 * with NAME and SNAP valid names (blockd_name_valid()).  Nothing else is:
 * not an empty part, not "NAME@SNAP:ro", not a second '@', not a NUL.
 *
 * Every function here is pure and thread-safe.
 */
#ifndef BLOCKD_COMMON_NAMES_H
#define BLOCKD_COMMON_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define BLOCKD_NAME_MAX 128 /* bytes, not counting the NUL */

/* Export NAME:ro is volume NAME read-only, claiming nothing. */
#define BLOCKD_RO_SUFFIX ":ro"

/* Longest export name, not counting the NUL: NAME@SNAP with both at their longest. */
#define BLOCKD_EXPORT_NAME_MAX (2 * BLOCKD_NAME_MAX + 1)

/* An export name taken apart. */
struct blockd_export_name {
	char volume[BLOCKD_NAME_MAX + 1];   /* NUL-terminated, valid */
	char snapshot[BLOCKD_NAME_MAX + 1]; /* "" unless the export is a snapshot */
	bool ro_live;                       /* NAME:ro (never with a snapshot) */
};

/*
 * Whether the len bytes at name are a valid volume or snapshot name: 1 to
 * BLOCKD_NAME_MAX bytes, a letter or digit (ASCII), then letters, digits,
 * '.', '_' or '-'.  name need not be NUL-terminated.
 */
bool blockd_name_valid(const char *name, size_t len);

/*
 * Takes the export name in the len bytes at name (not necessarily
 * NUL-terminated) apart into *out.  Returns 0, or -EINVAL when it is not
 * an export name by the rule above (too long included); *out is written
 * only on success.
 */
int blockd_export_name_parse(const char *name, size_t len, struct blockd_export_name *out);

/*
 * Writes the export name of *e, NUL-terminated, into buf of len bytes
 * (BLOCKD_EXPORT_NAME_MAX + 1 is always enough).  Returns 0, -EINVAL when
 * *e does not describe an export (an invalid name, or ro_live with a
 * snapshot), or -ENAMETOOLONG when buf is too small; buf is written only on
 * success.
 */
int blockd_export_name_format(const struct blockd_export_name *e, char *buf, size_t len);

#endif
