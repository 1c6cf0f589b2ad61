/* SPDX-License-Identifier: MIT */
/*
 * blockfs - volumes and snapshots as plain files, through FUSE.
 *
 *   blockfs [--data-dir DIR | --control PATH] [--rw] [-f] MOUNTPOINT
 *   blockfs --image FILE.qcow2 [--rw] [-f] MOUNTPOINT
 *   fusermount3 -u MOUNTPOINT
 *
 * main.c reads the options and hands over to the daemon mode (daemon_fs.c)
 * or the image mode (image_fs.c); libfuse takes the rest (-f, -d, -o ...).
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockfs.h"
#include "datadir.h"

static struct options {
	char *image;
	char *data_dir;
	char *control;
	int rw;
} opt;

static const struct fuse_opt option_spec[] = {
    /* "--image FILE" and "--image=FILE" (the value then starts with '='). */
    {"--image %s", offsetof(struct options, image), 0},
    {"--data-dir %s", offsetof(struct options, data_dir), 0},
    {"--control %s", offsetof(struct options, control), 0},
    {"--rw", offsetof(struct options, rw), 1},
    FUSE_OPT_END,
};

char *blockfs_json_text(json_t *o)
{
	char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL, *t2;
	size_t n;

	json_decref(o);
	if (!text)
		return NULL;
	n = strlen(text);
	t2 = realloc(text, n + 2);
	if (!t2) {
		free(text);
		return NULL;
	}
	t2[n] = '\n';
	t2[n + 1] = '\0';
	return t2;
}

int blockfs_read_text(const char *text, char *buf, size_t len, off_t off)
{
	size_t tl = strlen(text);

	if (off < 0 || (size_t)off >= tl)
		return 0;
	if (len > tl - (size_t)off)
		len = tl - (size_t)off;
	memcpy(buf, text + off, len);
	return (int)len;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: blockfs [--data-dir DIR | --control PATH] [--rw] [-f] MOUNTPOINT\n"
	           "       blockfs --image FILE.qcow2 [--rw] [-f] MOUNTPOINT\n"
	           "       fusermount3 -u MOUNTPOINT\n"
	           "Shows a running blockd's volumes as MOUNTPOINT/NAME/{disk,info.json} and\n"
	           "MOUNTPOINT/NAME/snapshots/SNAP/{disk,info.json} (data through NBD, listings\n"
	           "through the control API; default data directory as blockd's), or one qcow2\n"
	           "image as MOUNTPOINT/disk, MOUNTPOINT/info.json and MOUNTPOINT/snapshots/.\n"
	           "Read-only unless --rw; snapshots always are.  -f stays in the foreground.\n");
}

/* "--x=VALUE" leaves "=VALUE" in the option's string. */
static const char *value(const char *s)
{
	return s && s[0] == '=' ? s + 1 : s;
}

/*
 * Where the daemon's sockets are: DIR/control.sock and DIR/nbd.sock, or
 * --control PATH and nbd.sock beside it.  Made absolute: in the background
 * the working folder is "/".  -errno, printed.
 */
static int daemon_paths(char *control, char *nbd, size_t len)
{
	char given[PATH_MAX], dir[PATH_MAX], copy[PATH_MAX];
	const char *file = DATADIR_CONTROL_SOCKET;

	if (opt.control) {
		snprintf(copy, sizeof(copy), "%s", value(opt.control));
		snprintf(given, sizeof(given), "%s", dirname(copy));
		snprintf(copy, sizeof(copy), "%s", value(opt.control));
		file = basename(copy);
	} else if (opt.data_dir) {
		snprintf(given, sizeof(given), "%s", value(opt.data_dir));
	} else if (datadir_default(given, sizeof(given)) < 0) {
		fprintf(stderr, "blockfs: no HOME or XDG_STATE_HOME to find blockd in: give "
		                "--data-dir\n");
		return -ENOENT;
	}
	if (!realpath(given, dir)) {
		fprintf(stderr, "blockfs: %s: %s (is blockd running? see --data-dir)\n", given,
		        strerror(errno));
		return -errno;
	}
	if ((size_t)snprintf(control, len, "%s/%s", dir, file) >= len ||
	    datadir_nbd_socket(dir, nbd, len) < 0) {
		fprintf(stderr, "blockfs: the daemon's socket paths are too long\n");
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Notes the mount point (the argument that is no option) for readahead.c; keeps it for libfuse. */
static int note_mountpoint(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	char abs[PATH_MAX];

	(void)data;
	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && realpath(arg, abs))
		blockfs_readahead_setup(abs);
	return 1;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	char control[PATH_MAX], nbd[PATH_MAX];
	int rc = 2;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
	}
	if (fuse_opt_parse(&args, &opt, option_spec, note_mountpoint) < 0)
		return 2;
	if (opt.image && (opt.data_dir || opt.control)) {
		fprintf(stderr, "blockfs: --image shows one file without a daemon: it does not "
		                "go with --data-dir or --control\n");
		usage(stderr);
		goto out;
	}
	if (opt.data_dir && opt.control) {
		fprintf(stderr, "blockfs: give --data-dir or --control, not both\n");
		usage(stderr);
		goto out;
	}
	fuse_opt_add_arg(&args, "-ofsname=blockfs");
	fuse_opt_add_arg(&args, "-odefault_permissions");
	if (opt.image) {
		rc = image_mode(&args, value(opt.image), opt.rw);
	} else if (daemon_paths(control, nbd, sizeof(control)) < 0) {
		rc = 1;
	} else {
		rc = daemon_mode(&args, control, nbd, opt.rw);
	}
out:
	fuse_opt_free_args(&args);
	free(opt.image);
	free(opt.data_dir);
	free(opt.control);
	return rc;
}
