/* SPDX-License-Identifier: MIT */
/*
 * datadir.h - where blockd keeps its data when not told: the daemon and
 * blockctl must agree, so both ask here.
 */
#ifndef BLOCKD_DATADIR_H
#define BLOCKD_DATADIR_H

#include <stddef.h>

/*
 * /var/lib/blockd for root, else $XDG_STATE_HOME/blockd, else
 * ~/.local/state/blockd.  0, -ENOENT (no usable HOME) or -ENAMETOOLONG.
 */
int datadir_default(char *out, size_t len);

#endif
