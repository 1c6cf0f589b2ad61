/* SPDX-License-Identifier: MIT */
#include <stdbool.h>
#include <string.h>

#include "route.h"

/* Path segments at most: /v1/volumes/NAME/snapshots/SNAP/restore. */
#define MAX_SEGMENTS 6
/* Room for one decoded segment; a longer one becomes "" (an invalid name). */
#define SEG_BYTES (BLOCKD_NAME_MAX + 2)

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Splits the raw path into up to MAX_SEGMENTS segments, percent-decoding
 * each after the split.  A segment that is too long, or decodes to a NUL
 * or a bad escape, becomes "".  A trailing slash is ignored.  Returns the
 * count, or -1 for more segments or a path not starting with "/".
 */
static int split_path(const char *url, char seg[MAX_SEGMENTS][SEG_BYTES])
{
	const char *p = url;
	int n = 0;

	if (*p != '/')
		return -1;
	while (*p) {
		const char *q;
		size_t len, k = 0;
		bool bad = false;

		p++;
		q = strchr(p, '/');
		len = q ? (size_t)(q - p) : strlen(p);
		if (len == 0 && !q)
			break; /* a trailing slash */
		if (n == MAX_SEGMENTS)
			return -1;
		for (size_t i = 0; i < len && !bad; i++) {
			int c = (unsigned char)p[i];

			if (c == '%') {
				int hi = i + 2 < len ? hex_digit(p[i + 1]) : -1;
				int lo = i + 2 < len ? hex_digit(p[i + 2]) : -1;

				if (hi < 0 || lo < 0 || (hi | lo) == 0) {
					bad = true;
					break;
				}
				c = hi * 16 + lo;
				i += 2;
			}
			if (k + 1 >= SEG_BYTES)
				bad = true;
			else
				seg[n][k++] = (char)c;
		}
		seg[n][bad ? 0 : k] = '\0';
		n++;
		p += len;
	}
	return n;
}

static int no_route(struct route *r, unsigned status, const char *code, const char *message)
{
	r->status = status;
	r->code = code;
	r->message = message;
	return -1;
}

static int not_allowed(struct route *r, const char *message)
{
	return no_route(r, 405, "method_not_allowed", message);
}

static int found(struct route *r, enum route_id id)
{
	r->id = id;
	return 0;
}

int route_match(const char *method, const char *url, struct route *r)
{
	char seg[MAX_SEGMENTS][SEG_BYTES];
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	bool del = strcmp(method, "DELETE") == 0, patch = strcmp(method, "PATCH") == 0;
	int n = split_path(url, seg);

	memset(r, 0, sizeof(*r));
	if (n == 1 && strcmp(seg[0], "metrics") == 0)
		return get ? found(r, ROUTE_METRICS_GET) : not_allowed(r, "use GET");
	if (n < 2 || strcmp(seg[0], "v1") != 0 || strcmp(seg[1], "volumes") != 0)
		return no_route(r, 404, "not_found", "no such endpoint");
	if (n >= 3) {
		if (!blockd_name_valid(seg[2], strlen(seg[2])))
			return no_route(r, 400, "bad_request", "invalid volume name");
		strcpy(r->volume, seg[2]);
	}
	if (n >= 5) {
		if (!blockd_name_valid(seg[4], strlen(seg[4])))
			return no_route(r, 400, "bad_request", "invalid snapshot name");
		strcpy(r->snapshot, seg[4]);
	}
	if (n == 4 && strcmp(seg[3], "recover") == 0)
		return post ? found(r, ROUTE_VOLUME_RECOVER) : not_allowed(r, "use POST");
	if ((n >= 4 && strcmp(seg[3], "snapshots") != 0) ||
	    (n == 6 && strcmp(seg[5], "restore") != 0))
		return no_route(r, 404, "not_found", "no such endpoint");
	switch (n) {
	case 2:
		return get    ? found(r, ROUTE_VOLUMES_GET)
		       : post ? found(r, ROUTE_VOLUMES_POST)
		              : not_allowed(r, "use GET or POST");
	case 3:
		return get     ? found(r, ROUTE_VOLUME_GET)
		       : patch ? found(r, ROUTE_VOLUME_PATCH)
		       : del   ? found(r, ROUTE_VOLUME_DELETE)
		               : not_allowed(r, "use GET, PATCH or DELETE");
	case 4:
		return get    ? found(r, ROUTE_SNAPSHOTS_GET)
		       : post ? found(r, ROUTE_SNAPSHOTS_POST)
		              : not_allowed(r, "use GET or POST");
	case 5:
		return get   ? found(r, ROUTE_SNAPSHOT_GET)
		       : del ? found(r, ROUTE_SNAPSHOT_DELETE)
		             : not_allowed(r, "use GET or DELETE");
	default:
		return post ? found(r, ROUTE_SNAPSHOT_RESTORE) : not_allowed(r, "use POST");
	}
}
