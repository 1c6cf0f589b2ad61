/* SPDX-License-Identifier: MIT */
/*
 * ctlclient.h - the one client of blockd's control API (HTTP/1.1 + JSON on
 * a unix socket, DIR/control.sock), for blockctl and blockfs.
 *
 * A request is a method, a path ("/v1/volumes/vm1", each name escaped with
 * ctlclient_escape()) and an optional JSON body; the answer is its HTTP
 * status and its body parsed as JSON, with the daemon's error
 * {"error": {"code": ..., "message": ...}} picked out.  What a status means
 * is the caller's to decide: the client only fails when there is no usable
 * answer (the daemon cannot be reached or does not answer in time, the
 * reply is too large, a 2xx body is not JSON).
 *
 * Every request is bounded by the client's timeouts and reply cap; only
 * http:// is spoken, no proxy is used and redirects are not followed.
 *
 * Threads: ctlclient_new() and ctlclient_free() start and end libcurl for
 * the process: call them while no other thread uses libcurl.  In between,
 * ctlclient_request() may be called from any number of threads at once on
 * the same client (each request has its own connection).
 */
#ifndef BLOCKD_COMMON_CTLCLIENT_H
#define BLOCKD_COMMON_CTLCLIENT_H

#include <jansson.h>
#include <stddef.h>

/* Longest request path accepted (the URL adds a few bytes). */
#define CTLCLIENT_PATH_MAX 4096

struct ctlclient;

struct ctlclient_opts {
	const char *socket_path; /* the control socket (copied) */
	const char *user_agent;  /* "blockctl", "blockfs" (copied) */
	long connect_timeout_s;  /* to connect; 0: bounded by timeout_s alone */
	long timeout_s;          /* the whole request, connecting included (> 0) */
	size_t max_reply_bytes;  /* a longer reply fails the request (> 0) */
};

/* An answer; release it with ctlclient_reply_release(). */
struct ctlclient_reply {
	long status;  /* the HTTP status, 2xx or not */
	json_t *body; /* the body as JSON: NULL when empty (204), or not JSON and not 2xx */
	/* A non-2xx body's error.code and error.message when strings, else NULL (in body). */
	const char *error_code;
	const char *error_message;
};

/*
 * A client for opts (whose strings are copied).  Returns 0 and *out
 * (ctlclient_free() it), -EINVAL for missing options, or -ENOMEM (libcurl
 * would not start, or out of memory).
 */
int ctlclient_new(const struct ctlclient_opts *opts, struct ctlclient **out);

/* Frees c (NULL is fine); its replies stay valid. */
void ctlclient_free(struct ctlclient *c);

/*
 * One request: method ("GET", "POST", ...), path (starting with '/', names
 * escaped), body (borrowed; NULL for none).  Returns 0 when the daemon
 * answered, whatever the status, with *reply filled in (the caller's to
 * release); else -errno with the reason in err (errlen bytes, one line
 * without a trailing newline; err may be NULL), *reply untouched:
 *   -ECONNREFUSED  nothing listens at the socket ("cannot reach blockd at
 *                  SOCKET: why")
 *   -ETIMEDOUT     no whole answer within the timeouts
 *   -EPROTO        the reply is larger than the cap, or a 2xx body is not JSON
 *   -ENAMETOOLONG  path is longer than CTLCLIENT_PATH_MAX
 *   -ENOMEM, -EINVAL (libcurl refused an option), -EIO (any other failure)
 * Thread-safe.
 */
int ctlclient_request(struct ctlclient *c, const char *method, const char *path, const json_t *body,
                      struct ctlclient_reply *reply, char *err, size_t errlen);

/*
 * Drops the reply's body (error_code and error_message go with it) and
 * clears *r.  A reply belongs to the caller: any thread may release it.
 */
void ctlclient_reply_release(struct ctlclient_reply *r);

/*
 * s escaped for one segment of a URL path: every byte but the unreserved
 * ones (letters, digits, '-', '.', '_', '~') as %XX, '/' and '@' included.
 * Returns a malloc'ed string (the caller frees it), or NULL when out of
 * memory.  Thread-safe.
 */
char *ctlclient_escape(const char *s);

#endif
