/* SPDX-License-Identifier: MIT */
/*
 * names.h - the rule for volume and snapshot names, shared by blockd (which
 * serves only such names) and blockfs (which asks blockd for no other).
 */
#ifndef BLOCKD_NAMES_H
#define BLOCKD_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define BLOCKD_NAME_MAX 128 /* bytes, not counting the NUL */

/* Export NAME:ro is volume NAME read-only, claiming nothing (blockfs reads through it). */
#define BLOCKD_RO_SUFFIX ":ro"

/* A letter or digit, then letters, digits, '.', '_' or '-': len bytes of name, 1..BLOCKD_NAME_MAX.
 */
static inline bool blockd_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > BLOCKD_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

#endif
