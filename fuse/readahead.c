/* SPDX-License-Identifier: MIT */
/*
 * readahead.c - a larger read-ahead window for the mount (see blockfs.h).
 *
 * The kernel caps a FUSE mount's read-ahead at its default (128 KiB) when
 * the file system starts, whatever the file system asks for; only the
 * mount's backing device info in sysfs can raise it afterwards.  Sequential
 * reads through 128 KiB requests cost about twice what 1 MiB requests do
 * (bench/README.md), so blockfs raises it, on the first open of a disk
 * (the start-up has finished by then; done earlier, the kernel would lower
 * it again).  Needs root; otherwise the default stays.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockfs.h"

static char mountpoint[PATH_MAX];
static pthread_once_t once = PTHREAD_ONCE_INIT;

void blockfs_readahead_setup(const char *mnt)
{
	snprintf(mountpoint, sizeof(mountpoint), "%s", mnt);
}

/* Undoes the octal escapes (\040 for a space ...) of a mountinfo field, in place. */
static void unescape(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

static void raise_readahead(void)
{
	char line[2 * PATH_MAX + 512], dev[32] = "", path[PATH_MAX + 64];
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f || !mountpoint[0]) {
		if (f)
			fclose(f);
		return;
	}
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the last mount at our path is ours. */
	while (fgets(line, sizeof(line), f)) {
		char majmin[32], mnt[PATH_MAX + 1];

		if (sscanf(line, "%*u %*u %31s %*s %4096s", majmin, mnt) != 2)
			continue;
		unescape(mnt);
		if (strcmp(mnt, mountpoint) == 0)
			snprintf(dev, sizeof(dev), "%s", majmin);
	}
	fclose(f);
	if (!dev[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	f = fopen(path, "we");
	if (!f)
		return;
	fprintf(f, "%u\n", BLOCKFS_READAHEAD_KB);
	fclose(f);
}

void blockfs_readahead_once(void)
{
	pthread_once(&once, raise_readahead);
}
