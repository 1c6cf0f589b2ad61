/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "datadir.h"

int datadir_default(char *out, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;

	if (geteuid() == 0)
		n = snprintf(out, len, "/var/lib/blockd");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, len, "%s/blockd", xdg);
	else if (home && home[0] == '/')
		n = snprintf(out, len, "%s/.local/state/blockd", home);
	else
		return -ENOENT;
	return (size_t)n < len ? 0 : -ENAMETOOLONG;
}
