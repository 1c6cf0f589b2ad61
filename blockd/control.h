/* SPDX-License-Identifier: MIT */
/*
 * control.h - the control API server (HTTP + JSON on a unix socket).
 */
#ifndef BLOCKD_CONTROL_H
#define BLOCKD_CONTROL_H

#include "daemon.h"
#include "manage.h"
#include "store.h"

struct control;

/*
 * Listens on PATH (mode 0600) and serves the API on threads of its own:
 * reads from ST, changes through M.  nbd_tcp ("HOST:PORT", or NULL without
 * TCP) and nbd_socket go into the NBD URIs the API shows; a wildcard HOST
 * (0.0.0.0, ::) gives no TCP URI (null), as without TCP.  0 or -errno.
 */
int control_start(struct store *st, struct manager *m, struct daemon *d, const char *path,
                  const char *nbd_tcp, const char *nbd_socket, struct control **out);
/* Stops serving; calls in progress finish first. */
void control_stop(struct control *ctl);

#endif
