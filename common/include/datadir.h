/* SPDX-License-Identifier: MIT */
/*
 * datadir.h - where blockd keeps its data when not told, and where its
 * sockets are in it: the daemon, blockctl and blockfs must agree, so all
 * three ask here.
 *
 *   DIR/control.sock   the control API (HTTP + JSON)
 *   DIR/nbd.sock       NBD
 *
 * Every function writes its output only on success and is thread-safe
 * (datadir_default() reads the environment: not while another thread
 * changes it).
 */
#ifndef BLOCKD_COMMON_DATADIR_H
#define BLOCKD_COMMON_DATADIR_H

#include <stddef.h>

#define DATADIR_CONTROL_SOCKET "control.sock"
#define DATADIR_NBD_SOCKET     "nbd.sock"

/*
 * /var/lib/blockd for root, else $XDG_STATE_HOME/blockd, else
 * ~/.local/state/blockd, into out (len bytes).  0, -ENOENT (no usable
 * HOME) or -ENAMETOOLONG.
 */
int datadir_default(char *out, size_t len);

/* DIR/control.sock of data directory dir into out (len bytes): 0 or -ENAMETOOLONG. */
int datadir_control_socket(const char *dir, char *out, size_t len);

/* DIR/nbd.sock of data directory dir into out (len bytes): 0 or -ENAMETOOLONG. */
int datadir_nbd_socket(const char *dir, char *out, size_t len);

#endif
