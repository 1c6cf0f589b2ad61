/* SPDX-License-Identifier: MIT */
/* The control API's route dispatch (blockd/route.c): every route, every refusal. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "route.h"

static void expect_route(const char *method, const char *url, enum route_id id, const char *vol,
                         const char *snap)
{
	struct route r;

	cr_assert_eq(route_match(method, url, &r), 0, "%s %s: no route (%u %s)", method, url,
	             r.status, r.message ? r.message : "");
	cr_assert_eq(r.id, id, "%s %s: route %d, want %d", method, url, r.id, id);
	cr_assert_str_eq(r.volume, vol, "%s %s", method, url);
	cr_assert_str_eq(r.snapshot, snap, "%s %s", method, url);
}

static void expect_refusal(const char *method, const char *url, unsigned status, const char *code)
{
	struct route r;

	cr_assert_eq(route_match(method, url, &r), -1, "%s %s: routed to %d", method, url, r.id);
	cr_assert_eq(r.status, status, "%s %s: status %u, want %u", method, url, r.status, status);
	cr_assert_str_eq(r.code, code, "%s %s", method, url);
	cr_assert(r.message && r.message[0], "%s %s: no message", method, url);
}

Test(route, every_route)
{
	expect_route("GET", "/metrics", ROUTE_METRICS_GET, "", "");
	expect_route("GET", "/v1/volumes", ROUTE_VOLUMES_GET, "", "");
	expect_route("POST", "/v1/volumes", ROUTE_VOLUMES_POST, "", "");
	expect_route("GET", "/v1/volumes/vm1", ROUTE_VOLUME_GET, "vm1", "");
	expect_route("PATCH", "/v1/volumes/vm1", ROUTE_VOLUME_PATCH, "vm1", "");
	expect_route("DELETE", "/v1/volumes/vm1", ROUTE_VOLUME_DELETE, "vm1", "");
	expect_route("POST", "/v1/volumes/vm1/recover", ROUTE_VOLUME_RECOVER, "vm1", "");
	expect_route("GET", "/v1/volumes/vm1/snapshots", ROUTE_SNAPSHOTS_GET, "vm1", "");
	expect_route("POST", "/v1/volumes/vm1/snapshots", ROUTE_SNAPSHOTS_POST, "vm1", "");
	expect_route("GET", "/v1/volumes/vm1/snapshots/s1", ROUTE_SNAPSHOT_GET, "vm1", "s1");
	expect_route("DELETE", "/v1/volumes/vm1/snapshots/s1", ROUTE_SNAPSHOT_DELETE, "vm1", "s1");
	expect_route("POST", "/v1/volumes/vm1/snapshots/s1/restore", ROUTE_SNAPSHOT_RESTORE, "vm1",
	             "s1");
}

Test(route, trailing_slash_and_names)
{
	expect_route("GET", "/v1/volumes/", ROUTE_VOLUMES_GET, "", "");
	expect_route("GET", "/v1/volumes/Vol_2.x-y/", ROUTE_VOLUME_GET, "Vol_2.x-y", "");
	/* Percent-escapes decode inside their segment. */
	expect_route("GET", "/v1/volumes/v%6d1/snapshots/%73%31", ROUTE_SNAPSHOT_GET, "vm1", "s1");
	/* The longest valid name, and one byte more. */
	{
		char url[512], name[BLOCKD_NAME_MAX + 2];

		memset(name, 'a', BLOCKD_NAME_MAX);
		name[BLOCKD_NAME_MAX] = '\0';
		snprintf(url, sizeof(url), "/v1/volumes/%s", name);
		expect_route("GET", url, ROUTE_VOLUME_GET, name, "");
		strcat(url, "a");
		expect_refusal("GET", url, 400, "bad_request");
	}
}

Test(route, invalid_names)
{
	/* An encoded "/" stays in its segment and makes the name invalid. */
	expect_refusal("GET", "/v1/volumes/a%2Fb", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/a%00b", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/a%zz", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/a%4", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/.hidden", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/-x", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/a@b", 400, "bad_request");
	expect_refusal("GET", "/v1/volumes/a:ro", 400, "bad_request");
	expect_refusal("DELETE", "/v1/volumes/vm1/snapshots/..", 400, "bad_request");
	expect_refusal("POST", "/v1/volumes/vm1/snapshots/a%20b/restore", 400, "bad_request");
	/* Names are checked before the rest of the path. */
	expect_refusal("GET", "/v1/volumes/bad!/whatever", 400, "bad_request");
}

Test(route, unknown_paths)
{
	expect_refusal("GET", "/", 404, "not_found");
	expect_refusal("GET", "", 404, "not_found");
	expect_refusal("GET", "v1/volumes", 404, "not_found");
	expect_refusal("GET", "/v2/volumes", 404, "not_found");
	expect_refusal("GET", "/v1", 404, "not_found");
	expect_refusal("GET", "/v1/volume", 404, "not_found");
	expect_refusal("GET", "/metrics/x", 404, "not_found");
	expect_refusal("GET", "/v1/volumes/vm1/snapshot", 404, "not_found");
	expect_refusal("POST", "/v1/volumes/vm1/snapshots/s1/revert", 404, "not_found");
	expect_refusal("GET", "/v1/volumes/vm1/snapshots/s1/restore/x", 404, "not_found");
	expect_refusal("GET", "/v1/volumes/vm1/snapshots/s1/restore/x/y/z", 404, "not_found");
	expect_refusal("POST", "/v1/volumes/vm1/recover/x", 404, "not_found");
}

Test(route, wrong_methods)
{
	expect_refusal("POST", "/metrics", 405, "method_not_allowed");
	expect_refusal("GET", "/v1/volumes/vm1/recover", 405, "method_not_allowed");
	expect_refusal("DELETE", "/v1/volumes", 405, "method_not_allowed");
	expect_refusal("PATCH", "/v1/volumes", 405, "method_not_allowed");
	expect_refusal("POST", "/v1/volumes/vm1", 405, "method_not_allowed");
	expect_refusal("PUT", "/v1/volumes/vm1", 405, "method_not_allowed");
	expect_refusal("DELETE", "/v1/volumes/vm1/snapshots", 405, "method_not_allowed");
	expect_refusal("POST", "/v1/volumes/vm1/snapshots/s1", 405, "method_not_allowed");
	expect_refusal("PATCH", "/v1/volumes/vm1/snapshots/s1", 405, "method_not_allowed");
	expect_refusal("GET", "/v1/volumes/vm1/snapshots/s1/restore", 405, "method_not_allowed");
	/* Methods are case-sensitive (RFC 9110 section 9.1). */
	expect_refusal("get", "/v1/volumes", 405, "method_not_allowed");
}
