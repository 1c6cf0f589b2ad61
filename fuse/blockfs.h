/* SPDX-License-Identifier: MIT */
/*
 * blockfs.h - the two ways blockfs shows volumes (main.c picks one):
 * image_fs.c serves one qcow2 file through the qcow library, daemon_fs.c a
 * running blockd's volumes through its control API and NBD.
 */
#ifndef BLOCKD_FUSE_BLOCKFS_H
#define BLOCKD_FUSE_BLOCKFS_H

#define FUSE_USE_VERSION 31

#include <fuse.h>
#include <jansson.h>
#include <stdbool.h>

/*
 * Each mounts with ARGS (the mount point and FUSE options, ro added when
 * not rw) and returns fuse_main()'s exit status once unmounted, or 1 after
 * printing why nothing was mounted.
 */
int image_mode(struct fuse_args *args, const char *image, bool rw);
int daemon_mode(struct fuse_args *args, const char *control_path, const char *nbd_socket, bool rw);

/*
 * The mount's read-ahead window: blockfs_readahead_setup() with the
 * absolute mount point before mounting, blockfs_readahead_once() from the
 * first open of a disk (readahead.c says why then).
 */
#define BLOCKFS_READAHEAD_KB 1024
void blockfs_readahead_setup(const char *mountpoint);
void blockfs_readahead_once(void);

/* A read of text (NUL-terminated) at off into buf: the byte count. */
int blockfs_read_text(const char *text, char *buf, size_t len, off_t off);

/* o (consumed) as info.json's text: indented, keys sorted, ending in a newline; NULL when out of
 * memory. */
char *blockfs_json_text(json_t *o);

#endif
