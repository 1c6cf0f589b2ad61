/* SPDX-License-Identifier: MIT */
/*
 * names.c - the name rule and export names (see names.h).
 *
 * The parser accepts exactly what blockd's export lookup has always
 * accepted: a first '@' splits NAME from SNAP (both must be valid, so a
 * second '@' or a ":ro" after SNAP is refused by the rule itself); without
 * one, a trailing ":ro" after at least one byte marks a read-only view of
 * the volume; whatever is left must be a valid name.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

static bool name_char_ok(char c, bool first)
{
	bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

	return alnum || (!first && (c == '.' || c == '_' || c == '-'));
}

bool blockd_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > BLOCKD_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char_ok(name[i], i == 0))
			return false;
	return true;
}

int blockd_export_name_parse(const char *name, size_t len, struct blockd_export_name *out)
{
	const size_t sfx = sizeof(BLOCKD_RO_SUFFIX) - 1;
	const char *at;
	size_t vlen = len, slen = 0;
	bool ro = false;

	if (!name || len > BLOCKD_EXPORT_NAME_MAX)
		return -EINVAL;
	at = memchr(name, '@', len);
	if (at) {
		vlen = (size_t)(at - name);
		slen = len - vlen - 1;
		if (!blockd_name_valid(at + 1, slen))
			return -EINVAL;
	} else if (len > sfx && memcmp(name + len - sfx, BLOCKD_RO_SUFFIX, sfx) == 0) {
		vlen = len - sfx;
		ro = true;
	}
	if (!blockd_name_valid(name, vlen))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	memcpy(out->volume, name, vlen);
	if (at)
		memcpy(out->snapshot, at + 1, slen);
	out->ro_live = ro;
	return 0;
}

int blockd_export_name_format(const struct blockd_export_name *e, char *buf, size_t len)
{
	size_t vlen = strnlen(e->volume, sizeof(e->volume));
	size_t slen = strnlen(e->snapshot, sizeof(e->snapshot));
	size_t need = vlen;

	if (!blockd_name_valid(e->volume, vlen) ||
	    (slen > 0 && (e->ro_live || !blockd_name_valid(e->snapshot, slen))))
		return -EINVAL;
	need += slen > 0 ? 1 + slen : e->ro_live ? sizeof(BLOCKD_RO_SUFFIX) - 1 : 0;
	if (need >= len)
		return -ENAMETOOLONG;
	if (slen > 0)
		snprintf(buf, len, "%s@%s", e->volume, e->snapshot);
	else
		snprintf(buf, len, "%s%s", e->volume, e->ro_live ? BLOCKD_RO_SUFFIX : "");
	return 0;
}
