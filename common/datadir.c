/* SPDX-License-Identifier: MIT */
/*
 * datadir.c - the default data directory and the sockets in it (see
 * datadir.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "datadir.h"

/* a followed by b into out, or -ENAMETOOLONG without touching out. */
static int join(char *out, size_t len, const char *a, const char *b)
{
	int n = snprintf(NULL, 0, "%s%s", a, b);

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	snprintf(out, len, "%s%s", a, b);
	return 0;
}

int datadir_default(char *out, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (geteuid() == 0)
		return join(out, len, "/var/lib/blockd", "");
	if (xdg && xdg[0] == '/')
		return join(out, len, xdg, "/blockd");
	if (home && home[0] == '/')
		return join(out, len, home, "/.local/state/blockd");
	return -ENOENT;
}

int datadir_control_socket(const char *dir, char *out, size_t len)
{
	return join(out, len, dir, "/" DATADIR_CONTROL_SOCKET);
}

int datadir_nbd_socket(const char *dir, char *out, size_t len)
{
	return join(out, len, dir, "/" DATADIR_NBD_SOCKET);
}
