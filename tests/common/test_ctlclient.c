/* SPDX-License-Identifier: MIT */
/*
 * test_ctlclient.c - the control-API client (common/ctlclient.c) against
 * a canned HTTP server on a unix socket in this process: statuses and
 * bodies as given, the daemon's error picked out, and every way there is
 * no usable answer (nobody listening, no answer in time, a reply over the
 * cap, a 2xx body that is not JSON) failing with its errno and a reason.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctlclient.h"
#include "one_server.h"

/* What the canned HTTP server answers, and what it was asked. */
struct http {
	char *reply; /* NULL: read the request, then say nothing until closed */
	char request[4096];
};

static void answer(struct one_server *s, int conn)
{
	struct http *h = s->data;
	size_t have = 0;

	/* Headers, then as much body as Content-Length says (our bodies are small). */
	while (have + 1 < sizeof(h->request)) {
		ssize_t k = recv(conn, h->request + have, sizeof(h->request) - 1 - have, 0);
		const char *end, *cl;

		if (k <= 0)
			break;
		have += (size_t)k;
		h->request[have] = '\0';
		end = strstr(h->request, "\r\n\r\n");
		cl = strcasestr(h->request, "Content-Length: ");
		if (end &&
		    (!cl || have >= (size_t)(end + 4 - h->request) + strtoul(cl + 16, NULL, 10)))
			break;
	}
	if (h->reply)
		one_server_put(conn, h->reply, strlen(h->reply));
	else
		one_server_drain(conn);
}

/* A server s that answers one request with STATUS ("200 OK") and BODY, or not when STATUS is NULL.
 */
static void server_start(struct one_server *s, struct http *h, const char *status, const char *body)
{
	memset(h, 0, sizeof(*h));
	if (status)
		cr_assert_geq(asprintf(&h->reply,
		                       "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: "
		                       "close\r\n\r\n%s",
		                       status, strlen(body), body),
		              0);
	one_server_start(s, "control.sock", answer, h);
}

static void server_stop(struct one_server *s)
{
	struct http *h = s->data;

	one_server_stop(s);
	free(h->reply);
}

static struct ctlclient *client_for(const char *path, long timeout_s, size_t max_reply)
{
	const struct ctlclient_opts opts = {
	    .socket_path = path,
	    .user_agent = "test_ctlclient",
	    .connect_timeout_s = timeout_s,
	    .timeout_s = timeout_s,
	    .max_reply_bytes = max_reply,
	};
	struct ctlclient *c = NULL;

	cr_assert_eq(ctlclient_new(&opts, &c), 0);
	return c;
}

static const char volumes[] = "{\"volumes\": [{\"name\": \"a\"}]}";

/* One request that gets an answer (STATUS, BODY) from a fresh server s: *r holds it. */
static void exchange(struct one_server *s, struct http *h, const char *status, const char *body,
                     const char *method, const char *path, const json_t *request,
                     struct ctlclient_reply *r)
{
	struct ctlclient *c;
	char err[256] = "";

	server_start(s, h, status, body);
	c = client_for(s->path, 10, 1 << 20);
	cr_assert_eq(ctlclient_request(c, method, path, request, r, err, sizeof(err)), 0, "%s",
	             err);
	server_stop(s);
	ctlclient_free(c);
}

Test(ctlclient, get_parses_the_body)
{
	struct ctlclient_reply r;
	struct one_server s;
	struct http h;

	exchange(&s, &h, "200 OK", volumes, "GET", "/v1/volumes", NULL, &r);
	cr_expect_eq(r.status, 200);
	cr_expect(json_is_array(json_object_get(r.body, "volumes")));
	cr_expect_null(r.error_code);
	cr_expect_null(r.error_message);
	cr_expect(strncmp(h.request, "GET /v1/volumes HTTP/1.1\r\n", 26) == 0, "%s", h.request);
	cr_expect_not_null(strstr(h.request, "User-Agent: test_ctlclient\r\n"), "%s", h.request);
	ctlclient_reply_release(&r);
	cr_expect_null(r.body);
}

Test(ctlclient, post_sends_the_json_body)
{
	json_t *body = json_pack("{s:s, s:I}", "name", "vm1", "size", (json_int_t)1024);
	struct ctlclient_reply r;
	struct one_server s;
	struct http h;

	exchange(&s, &h, "201 Created", "", "POST", "/v1/volumes", body, &r);
	cr_expect_eq(r.status, 201);
	cr_expect_null(r.body, "an empty body is no JSON value");
	cr_expect(strncmp(h.request, "POST /v1/volumes HTTP/1.1\r\n", 27) == 0, "%s", h.request);
	cr_expect_not_null(strstr(h.request, "Content-Type: application/json\r\n"));
	cr_expect_not_null(strstr(h.request, "\r\n\r\n{\"name\":\"vm1\",\"size\":1024}"), "%s",
	                   h.request);
	ctlclient_reply_release(&r);
	json_decref(body);
}

Test(ctlclient, an_api_error_is_an_answer)
{
	struct ctlclient_reply r;
	struct one_server s;
	struct http h;

	exchange(&s, &h, "409 Conflict",
	         "{\"error\": {\"code\": \"attached\", \"message\": \"vm1 is busy\"}}", "DELETE",
	         "/v1/volumes/vm1", NULL, &r);
	cr_expect_eq(r.status, 409);
	cr_expect_str_eq(r.error_code, "attached");
	cr_expect_str_eq(r.error_message, "vm1 is busy");
	ctlclient_reply_release(&r);
}

Test(ctlclient, an_error_without_json_is_an_answer_too)
{
	struct ctlclient_reply r;
	struct one_server s;
	struct http h;

	exchange(&s, &h, "500 Oops", "oops!", "GET", "/v1/volumes", NULL, &r);
	cr_expect_eq(r.status, 500);
	cr_expect_null(r.body);
	cr_expect_null(r.error_message);
	ctlclient_reply_release(&r);
}

static void expect_failure(const char *status, const char *body, size_t max_reply, long timeout_s,
                           int want, const char *words)
{
	struct ctlclient_reply r = {.status = 42};
	struct one_server s;
	struct ctlclient *c;
	struct http h;
	char err[256] = "";

	server_start(&s, &h, status, body);
	c = client_for(s.path, timeout_s, max_reply);
	cr_expect_eq(ctlclient_request(c, "GET", "/v1/volumes", NULL, &r, err, sizeof(err)), want);
	cr_expect_not_null(strstr(err, words), "\"%s\" does not say \"%s\"", err, words);
	cr_expect_eq(r.status, 42, "the reply was written on failure");
	ctlclient_free(c);
	server_stop(&s);
}

Test(ctlclient, a_2xx_body_that_is_not_json)
{
	expect_failure("200 OK", "{oh!", 1 << 20, 10, -EPROTO,
	               "GET /v1/volumes: blockd's reply (HTTP 200) is not JSON");
}

Test(ctlclient, a_reply_over_the_cap)
{
	expect_failure("200 OK", volumes, 16, 10, -EPROTO, "larger than 16 B; refused");
}

Test(ctlclient, no_answer_in_time)
{
	expect_failure(NULL, NULL, 1 << 20, 1, -ETIMEDOUT, "did not answer in time");
}

Test(ctlclient, nobody_listening)
{
	struct ctlclient_reply r = {.status = 42};
	struct ctlclient *c = client_for("/nonexistent/control.sock", 10, 1 << 20);
	char err[256] = "";

	cr_expect_eq(ctlclient_request(c, "GET", "/v1/volumes", NULL, &r, err, sizeof(err)),
	             -ECONNREFUSED);
	cr_expect_str_eq(err, "cannot reach blockd at /nonexistent/control.sock: No such file or "
	                      "directory");
	cr_expect_eq(r.status, 42);
	ctlclient_free(c);
}

Test(ctlclient, path_too_long)
{
	struct ctlclient *c = client_for("/nonexistent/control.sock", 10, 1 << 20);
	char *path = malloc(CTLCLIENT_PATH_MAX + 2);
	struct ctlclient_reply r;

	cr_assert_not_null(path);
	memset(path, 'a', CTLCLIENT_PATH_MAX + 1);
	path[0] = '/';
	path[CTLCLIENT_PATH_MAX + 1] = '\0';
	cr_expect_eq(ctlclient_request(c, "GET", path, NULL, &r, NULL, 0), -ENAMETOOLONG);
	free(path);
	ctlclient_free(c);
}

Test(ctlclient, bad_options)
{
	struct ctlclient_opts opts = {
	    .socket_path = "/s", .user_agent = "t", .timeout_s = 1, .max_reply_bytes = 1};
	struct ctlclient *c = NULL;

	opts.timeout_s = 0;
	cr_expect_eq(ctlclient_new(&opts, &c), -EINVAL);
	opts.timeout_s = 1;
	opts.max_reply_bytes = 0;
	cr_expect_eq(ctlclient_new(&opts, &c), -EINVAL);
	opts.max_reply_bytes = 1;
	opts.socket_path = NULL;
	cr_expect_eq(ctlclient_new(&opts, &c), -EINVAL);
	cr_expect_null(c);
}

Test(ctlclient_escape, unreserved_bytes_stay)
{
	char *e = ctlclient_escape("Az09-._~");

	cr_assert_not_null(e);
	cr_expect_str_eq(e, "Az09-._~");
	free(e);
}

Test(ctlclient_escape, everything_else_is_percent_encoded)
{
	char *e = ctlclient_escape("vm1@s1/../x y%\xff?#");

	cr_assert_not_null(e);
	cr_expect_str_eq(e, "vm1%40s1%2F..%2Fx%20y%25%FF%3F%23");
	free(e);
	e = ctlclient_escape("");
	cr_assert_not_null(e);
	cr_expect_str_eq(e, "");
	free(e);
}
