/* SPDX-License-Identifier: MIT */
/*
 * route.h - the control API's routes: which handler a method and a path
 * reach, with the names in the path decoded and checked.  Pure: no I/O,
 * no allocation, no state; thread-safe.
 *
 *   GET    /metrics
 *   GET    /v1/volumes                         list
 *   POST   /v1/volumes                         create or clone
 *   GET    /v1/volumes/NAME                    one volume
 *   PATCH  /v1/volumes/NAME                    resize
 *   DELETE /v1/volumes/NAME
 *   POST   /v1/volumes/NAME/recover            reopen a fenced or failed volume
 *   GET    /v1/volumes/NAME/snapshots          list
 *   POST   /v1/volumes/NAME/snapshots          take one
 *   GET    /v1/volumes/NAME/snapshots/SNAP     one snapshot
 *   DELETE /v1/volumes/NAME/snapshots/SNAP
 *   POST   /v1/volumes/NAME/snapshots/SNAP/restore
 *
 * Path segments are split before they are percent-decoded, so an encoded
 * "/" stays inside its segment (and makes an invalid name).
 */
#ifndef BLOCKD_ROUTE_H
#define BLOCKD_ROUTE_H

#include "names.h"

enum route_id {
	ROUTE_METRICS_GET,
	ROUTE_VOLUMES_GET,
	ROUTE_VOLUMES_POST,
	ROUTE_VOLUME_GET,
	ROUTE_VOLUME_PATCH,
	ROUTE_VOLUME_DELETE,
	ROUTE_VOLUME_RECOVER,
	ROUTE_SNAPSHOTS_GET,
	ROUTE_SNAPSHOTS_POST,
	ROUTE_SNAPSHOT_GET,
	ROUTE_SNAPSHOT_DELETE,
	ROUTE_SNAPSHOT_RESTORE,
};

struct route {
	enum route_id id;
	char volume[BLOCKD_NAME_MAX + 1];   /* a valid name, for routes below /v1/volumes/NAME */
	char snapshot[BLOCKD_NAME_MAX + 1]; /* a valid name, for routes below .../snapshots/SNAP */
	/* When no route matches: the HTTP status (400, 404, 405), error code and message. */
	unsigned status;
	const char *code;
	const char *message;
};

/*
 * Routes METHOD on URL (the raw path, still percent-encoded, without the
 * query).  0 with r->id and the names; -1 with r->status, code and message.
 */
int route_match(const char *method, const char *url, struct route *r);

#endif
