/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control API: HTTP/1.1 + JSON on DIR/control.sock (mode
 * 0600), served by libmicrohttpd on a few threads of its own (epoll), never
 * on an event loop.  JSON in and out with jansson.  route.h lists the
 * routes; reads (listings, metrics) take no lock a change holds, changes
 * go through manage.h one at a time.
 *
 * Errors: {"error": {"code", "message"}} with 400, 404, 405, 409, 413 or 500.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "daemon_limits.h"
#include "log.h"
#include "manage.h"
#include "route.h"
#include "size.h"
#include "store.h"
#include "unixsock.h"

struct control {
	struct MHD_Daemon *mhd;
	struct store *st;
	struct manager *m;
	struct daemon *d;
	char nbd_tcp[300];
	char nbd_socket[PATH_MAX];
	char path[PATH_MAX];
	int fd;
};

struct request_body {
	char *data;
	size_t len;
	bool too_large;
};

static int send_json(struct MHD_Connection *conn, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	struct MHD_Response *resp;
	int rc;

	json_decref(body);
	if (body && !text)
		return MHD_NO;
	resp =
	    MHD_create_response_from_buffer(text ? strlen(text) : 0, text ? text : (char *)"",
	                                    text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	if (text)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	rc = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static int send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                      const char *msg)
{
	return send_json(conn, status,
	                 json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

/* Maps a manage_* result to its HTTP error. */
static int send_failure(struct MHD_Connection *conn, int rc, const char *msg)
{
	switch (rc) {
	case -EINVAL:
		return send_error(conn, 400, "bad_request", msg);
	case -ENOENT:
		return send_error(conn, 404, "not_found", msg);
	case -EEXIST:
	case -EBUSY:
		return send_error(conn, 409, "conflict", msg);
	case -ENXIO:
		return send_error(conn, 409, "volume_error", msg);
	case -ENOMEM:
		return send_error(conn, 500, "internal", "out of memory");
	default:
		return send_error(conn, 500, "internal", msg);
	}
}

static int send_not_found(struct MHD_Connection *conn, const char *what, const char *name)
{
	char msg[3 * STORE_NAME_MAX + 64];

	snprintf(msg, sizeof(msg), "no %s %s", what, name);
	return send_error(conn, 404, "not_found", msg);
}

static void iso_time(time_t t, char out[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *snapshot_json(const struct store_snapshot *s)
{
	char when[32];

	iso_time((time_t)s->date_sec, when);
	return json_pack("{s:s,s:s,s:s,s:I}", "name", s->name, "id", s->id, "created", when, "size",
	                 (json_int_t)s->disk_size);
}

static json_t *snapshots_json(const struct store_info *info)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < info->n_snapshots; i++)
		json_array_append_new(arr, snapshot_json(&info->snapshots[i]));
	return arr;
}

/* A volume as the API shows it. */
static json_t *volume_json(struct control *ctl, const struct store_info *info, bool details)
{
	char uri[PATH_MAX + 400], when[32];
	json_t *atts = json_array(), *o;

	for (size_t i = 0; i < info->n_holders; i++) {
		const struct store_holder *h = &info->holders[i];

		iso_time(h->since, when);
		json_array_append_new(atts, json_pack("{s:s,s:s,s:b,s:s,s:I}", "peer", h->holder,
		                                      "since", when, "read_only", h->read_only,
		                                      "export", h->target, "connections",
		                                      (json_int_t)h->connections));
	}
	iso_time(info->modified, when);
	o = json_pack("{s:s,s:s,s:I,s:I,s:s,s:I,s:o}", "name", info->name, "state",
	              info->error    ? "error"
	              : info->fenced ? "fenced"
	                             : "ok",
	              "size", (json_int_t)info->size, "allocated", (json_int_t)info->allocated,
	              "modified", when, "snapshot_count", (json_int_t)info->n_snapshots,
	              "attachments", atts);
	if (info->error || info->fenced)
		json_object_set_new(o, "error", json_string(info->error_text));
	json_object_set_new(o, "backing",
	                    info->backing[0] ? json_string(info->backing) : json_null());
	if (ctl->nbd_tcp[0]) {
		snprintf(uri, sizeof(uri), "nbd://%s/%s", ctl->nbd_tcp, info->name);
		json_object_set_new(o, "nbd_uri", json_string(uri));
	} else {
		json_object_set_new(o, "nbd_uri", json_null());
	}
	snprintf(uri, sizeof(uri), "nbd+unix:///%s?socket=%s", info->name, ctl->nbd_socket);
	json_object_set_new(o, "nbd_unix_uri", json_string(uri));
	if (details)
		json_object_set_new(o, "snapshots", snapshots_json(info));
	return o;
}

/* Volume NAME's info (with its snapshots); answers 404 or 500 itself when it returns -1. */
static int get_info(struct control *ctl, struct MHD_Connection *conn, const char *name,
                    struct store_info *info, int *ret)
{
	struct volume *vol;
	int rc;

	if (store_get(ctl->st, name, &vol) < 0) {
		*ret = send_not_found(conn, "volume", name);
		return -1;
	}
	rc = store_info(vol, true, info);
	store_put(vol);
	if (rc < 0) {
		*ret = send_failure(conn, rc, "out of memory");
		return -1;
	}
	return 0;
}

static int send_volume(struct control *ctl, struct MHD_Connection *conn, unsigned status,
                       const char *name)
{
	struct store_info info;
	json_t *o;
	int ret;

	if (get_info(ctl, conn, name, &info, &ret) < 0)
		return ret;
	o = volume_json(ctl, &info, true);
	store_info_free(&info);
	return send_json(conn, status, o);
}

static int list_volumes(struct control *ctl, struct MHD_Connection *conn)
{
	json_t *arr = json_array();
	struct volume **all;
	size_t n;

	if (store_get_all(ctl->st, &all, &n) < 0) {
		json_decref(arr);
		return send_failure(conn, -ENOMEM, NULL);
	}
	for (size_t i = 0; i < n; i++) {
		struct store_info info;

		if (store_info(all[i], false, &info) == 0) {
			json_array_append_new(arr, volume_json(ctl, &info, false));
			store_info_free(&info);
		}
		store_put(all[i]);
	}
	free(all);
	return send_json(conn, 200, json_pack("{s:o}", "volumes", arr));
}

/* Snapshot SNAP of volume NAME as JSON, or NULL (answered: 404 or 500, in *ret). */
static json_t *find_snapshot_json(struct control *ctl, struct MHD_Connection *conn,
                                  const char *name, const char *snap, int *ret)
{
	struct store_info info;
	json_t *o = NULL;
	char msg[2 * STORE_NAME_MAX + 32];

	if (get_info(ctl, conn, name, &info, ret) < 0)
		return NULL;
	for (size_t i = 0; i < info.n_snapshots && !o; i++)
		if (strcmp(info.snapshots[i].name, snap) == 0)
			o = snapshot_json(&info.snapshots[i]);
	store_info_free(&info);
	if (!o) {
		snprintf(msg, sizeof(msg), "%s@%s", name, snap);
		*ret = send_not_found(conn, "snapshot", msg);
	}
	return o;
}

/* Parses the body as a JSON object; on failure answers 400 and returns NULL. */
static json_t *parse_body(struct MHD_Connection *conn, const struct request_body *b, int *ret)
{
	json_error_t e;
	json_t *j = b->len ? json_loadb(b->data, b->len, JSON_REJECT_DUPLICATES, &e) : NULL;
	char msg[256];

	if (!j || !json_is_object(j)) {
		snprintf(msg, sizeof(msg), "the body must be a JSON object%s%s", j ? "" : ": ",
		         j ? "" : (b->len ? e.text : "empty body"));
		json_decref(j);
		*ret = send_error(conn, 400, "bad_request", msg);
		return NULL;
	}
	return j;
}

/* "size": an integer number of bytes or a string such as "10G". */
static int get_size(json_t *j, uint64_t *out)
{
	json_t *v = json_object_get(j, "size");

	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v) && size_parse(json_string_value(v), out) == 0 && *out > 0)
		return 0;
	return -EINVAL;
}

static bool only_keys(json_t *j, const char *const *keys)
{
	const char *k;
	json_t *v;

	json_object_foreach(j, k, v)
	{
		bool ok = false;

		(void)v;
		for (const char *const *p = keys; *p && !ok; p++)
			ok = strcmp(k, *p) == 0;
		if (!ok)
			return false;
	}
	return true;
}

static int post_volume(struct control *ctl, struct MHD_Connection *conn, json_t *j)
{
	static const char *const keys[] = {"name", "size", "from", NULL};
	const char *name = json_string_value(json_object_get(j, "name"));
	const char *from = json_string_value(json_object_get(j, "from"));
	char err[512];
	uint64_t size;
	int rc;

	if (!only_keys(j, keys) || !name || (from && json_object_get(j, "size")))
		return send_error(conn, 400, "bad_request",
		                  "expected {\"name\": NAME, \"size\": SIZE} or {\"name\": NAME, "
		                  "\"from\": \"VOLUME@SNAPSHOT\"}");
	if (from) {
		rc = manage_clone(ctl->m, from, name, err, sizeof(err));
	} else {
		if (get_size(j, &size) < 0)
			return send_error(conn, 400, "bad_request",
			                  "\"size\" must be a positive number of bytes or a size "
			                  "such as \"10G\"");
		rc = manage_create(ctl->m, name, size, err, sizeof(err));
	}
	if (rc < 0)
		return send_failure(conn, rc, err);
	return send_volume(ctl, conn, 201, name);
}

static int patch_volume(struct control *ctl, struct MHD_Connection *conn, const char *name,
                        json_t *j)
{
	static const char *const keys[] = {"size", NULL};
	char err[512];
	uint64_t size;
	int rc;

	if (!only_keys(j, keys) || get_size(j, &size) < 0)
		return send_error(conn, 400, "bad_request", "expected {\"size\": SIZE}");
	rc = manage_resize(ctl->m, name, size, err, sizeof(err));
	return rc < 0 ? send_failure(conn, rc, err) : send_volume(ctl, conn, 200, name);
}

static int post_snapshot(struct control *ctl, struct MHD_Connection *conn, const char *name,
                         json_t *j)
{
	static const char *const keys[] = {"name", NULL};
	const char *snap = json_string_value(json_object_get(j, "name"));
	char err[512];
	json_t *o;
	int rc, ret;

	if (!only_keys(j, keys) || !snap)
		return send_error(conn, 400, "bad_request", "expected {\"name\": NAME}");
	rc = manage_snapshot_create(ctl->m, name, snap, err, sizeof(err));
	if (rc < 0)
		return send_failure(conn, rc, err);
	o = find_snapshot_json(ctl, conn, name, snap, &ret);
	return o ? send_json(conn, 201, o) : ret;
}

static int get_snapshot(struct control *ctl, struct MHD_Connection *conn, const char *name,
                        const char *snap)
{
	char err[512];
	uint64_t stored;
	json_t *o;
	int rc, ret;

	o = find_snapshot_json(ctl, conn, name, snap, &ret);
	if (!o)
		return ret;
	rc = manage_snapshot_stored(ctl->m, name, snap, &stored, err, sizeof(err));
	if (rc < 0) {
		json_decref(o);
		return send_failure(conn, rc, err);
	}
	json_object_set_new(o, "allocated", json_integer((json_int_t)stored));
	return send_json(conn, 200, o);
}

/* Where a /metrics answer starts: a few volumes' worth; it doubles as needed. */
#define METRICS_START_BYTES (64u << 10)

/* Appends to a growing text buffer; on failure frees it and leaves it NULL. */
struct text {
	char *buf;
	size_t len, cap;
};

static void emit(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	while (t->buf) {
		char *nb = NULL;

		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		if (n >= 0)
			nb = realloc(t->buf, t->cap * 2);
		if (!nb)
			free(t->buf);
		t->buf = nb;
		t->cap *= 2;
	}
}

/* Prometheus text exposition of the per-volume counters. */
static int metrics(struct control *ctl, struct MHD_Connection *conn)
{
	static const char *const ops[STATS_OPS] = {"read", "write", "flush", "other"};
	struct text t = {.buf = malloc(METRICS_START_BYTES), .cap = METRICS_START_BYTES};
	struct MHD_Response *resp;
	struct volume **all;
	size_t n;
	int rc;

	if (store_get_all(ctl->st, &all, &n) < 0) {
		free(t.buf);
		return send_failure(conn, -ENOMEM, NULL);
	}
	emit(&t,
	     "# HELP blockd_connections NBD connections open.\n"
	     "# TYPE blockd_connections gauge\nblockd_connections %u\n",
	     atomic_load(&ctl->d->connections));
	emit(&t, "# HELP blockd_volume_state A volume's state (ok, fenced or error), as 1.\n"
	         "# TYPE blockd_volume_state gauge\n");
	for (size_t i = 0; i < n; i++)
		emit(&t, "blockd_volume_state{volume=\"%s\",state=\"%s\"} 1\n", volume_name(all[i]),
		     store_state(all[i]));
	emit(&t, "# HELP blockd_volume_bytes_total Bytes read and written per volume.\n"
	         "# TYPE blockd_volume_bytes_total counter\n");
	for (size_t i = 0; i < n; i++)
		for (int op = STATS_READ; op <= STATS_WRITE; op++)
			emit(&t, "blockd_volume_bytes_total{volume=\"%s\",op=\"%s\"} %llu\n",
			     volume_name(all[i]), ops[op],
			     (unsigned long long)atomic_load(&volume_stats(all[i])->bytes[op]));
	emit(&t, "# HELP blockd_volume_ops_total Requests per volume and kind.\n"
	         "# TYPE blockd_volume_ops_total counter\n");
	for (size_t i = 0; i < n; i++)
		for (int op = 0; op < STATS_OPS; op++)
			emit(&t, "blockd_volume_ops_total{volume=\"%s\",op=\"%s\"} %llu\n",
			     volume_name(all[i]), ops[op],
			     (unsigned long long)atomic_load(&volume_stats(all[i])->ops[op]));
	emit(&t, "# HELP blockd_volume_errors_total Failed requests per volume and kind.\n"
	         "# TYPE blockd_volume_errors_total counter\n");
	for (size_t i = 0; i < n; i++)
		for (int op = 0; op < STATS_OPS; op++)
			emit(&t, "blockd_volume_errors_total{volume=\"%s\",op=\"%s\"} %llu\n",
			     volume_name(all[i]), ops[op],
			     (unsigned long long)atomic_load(&volume_stats(all[i])->errors[op]));
	emit(&t, "# HELP blockd_volume_latency_seconds Request latency per volume and kind.\n"
	         "# TYPE blockd_volume_latency_seconds histogram\n");
	for (size_t i = 0; i < n; i++) {
		struct volume_stats *s = volume_stats(all[i]);
		const char *v = volume_name(all[i]);

		for (int op = 0; op < STATS_OPS; op++) {
			unsigned long long cum = 0;

			for (int b = 0; b < STATS_BUCKETS; b++) {
				char le[32];

				cum += atomic_load(&s->latency[op][b]);
				if (b < STATS_BUCKETS - 1)
					snprintf(le, sizeof(le), "%g", stats_bucket_us[b] / 1e6);
				else
					snprintf(le, sizeof(le), "+Inf");
				emit(&t,
				     "blockd_volume_latency_seconds_bucket{volume=\"%s\",op=\"%s\","
				     "le=\"%s\"} %llu\n",
				     v, ops[op], le, cum);
			}
			emit(&t, "blockd_volume_latency_seconds_sum{volume=\"%s\",op=\"%s\"} %g\n",
			     v, ops[op], atomic_load(&s->latency_us_sum[op]) / 1e6);
			emit(&t,
			     "blockd_volume_latency_seconds_count{volume=\"%s\",op=\"%s\"} %llu\n",
			     v, ops[op], cum);
		}
	}
	for (size_t i = 0; i < n; i++)
		store_put(all[i]);
	free(all);
	if (!t.buf)
		return send_failure(conn, -ENOMEM, NULL);
	resp = MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(t.buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        "text/plain; version=0.0.4; charset=utf-8");
	rc = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* No decoding by libmicrohttpd: route_match() decodes after splitting. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *uri)
{
	(void)cls;
	(void)conn;
	return strlen(uri);
}

/* The handlers that need a body, with it parsed. */
static int with_body(struct control *ctl, struct MHD_Connection *conn, const struct route *r,
                     const struct request_body *body)
{
	int ret;
	json_t *j = parse_body(conn, body, &ret);

	if (!j)
		return ret;
	switch (r->id) {
	case ROUTE_VOLUMES_POST:
		ret = post_volume(ctl, conn, j);
		break;
	case ROUTE_VOLUME_PATCH:
		ret = patch_volume(ctl, conn, r->volume, j);
		break;
	default: /* ROUTE_SNAPSHOTS_POST */
		ret = post_snapshot(ctl, conn, r->volume, j);
		break;
	}
	json_decref(j);
	return ret;
}

static int dispatch(struct control *ctl, struct MHD_Connection *conn, const char *url,
                    const char *method, const struct request_body *body)
{
	struct store_info info;
	struct route r;
	char err[512];
	json_t *o;
	int rc, ret;

	if (body->too_large)
		return send_error(conn, 413, "too_large", "request body too large");
	if (route_match(method, url, &r) < 0)
		return send_error(conn, r.status, r.code, r.message);
	switch (r.id) {
	case ROUTE_METRICS_GET:
		return metrics(ctl, conn);
	case ROUTE_VOLUMES_GET:
		return list_volumes(ctl, conn);
	case ROUTE_VOLUME_GET:
		return send_volume(ctl, conn, 200, r.volume);
	case ROUTE_VOLUME_DELETE:
		rc = manage_delete(ctl->m, r.volume, err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_json(conn, 204, NULL);
	case ROUTE_SNAPSHOTS_GET:
		if (get_info(ctl, conn, r.volume, &info, &ret) < 0)
			return ret;
		o = json_pack("{s:o}", "snapshots", snapshots_json(&info));
		store_info_free(&info);
		return send_json(conn, 200, o);
	case ROUTE_SNAPSHOT_GET:
		return get_snapshot(ctl, conn, r.volume, r.snapshot);
	case ROUTE_SNAPSHOT_DELETE:
		rc = manage_snapshot_delete(ctl->m, r.volume, r.snapshot, err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_json(conn, 204, NULL);
	case ROUTE_VOLUME_RECOVER:
		rc = manage_recover(ctl->m, r.volume, err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_volume(ctl, conn, 200, r.volume);
	case ROUTE_SNAPSHOT_RESTORE:
		rc = manage_snapshot_restore(ctl->m, r.volume, r.snapshot, err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_volume(ctl, conn, 200, r.volume);
	case ROUTE_SNAPSHOTS_POST: {
		struct volume *vol;

		if (store_get(ctl->st, r.volume, &vol) < 0)
			return send_not_found(conn, "volume", r.volume);
		store_put(vol);
	}
		/* fall through */
	case ROUTE_VOLUMES_POST:
	case ROUTE_VOLUME_PATCH:
		return with_body(ctl, conn, &r, body);
	}
	return send_error(conn, 500, "internal", "unknown route");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct control *ctl = cls;
	struct request_body *b = *con_cls;

	(void)version;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return MHD_NO;
		*con_cls = b;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (b->len + *upload_data_size > CONTROL_MAX_BODY_BYTES) {
			b->too_large = true;
		} else if (!b->too_large) {
			char *nd = realloc(b->data, b->len + *upload_data_size);

			if (!nd)
				return MHD_NO;
			memcpy(nd + b->len, upload_data, *upload_data_size);
			b->data = nd;
			b->len += *upload_data_size;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return dispatch(ctl, conn, url, method, b) == MHD_YES ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request_body *b = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (b) {
		free(b->data);
		free(b);
		*con_cls = NULL;
	}
}

/*
 * Whether HOST:PORT, as main.c shows the TCP listener ("0.0.0.0:10809",
 * "[::]:10809"), is a wildcard address.  A client cannot connect to one,
 * and blockd cannot tell which of the host's addresses its clients reach
 * (the host name may resolve to a loopback address, as Debian's
 * /etc/hosts makes it), so such a listener gets no nbd_uri.
 */
static bool tcp_is_wildcard(const char *host_port)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(host_port, ':');
	size_t len = colon ? (size_t)(colon - host_port) : 0;
	struct in6_addr a6;
	struct in_addr a4;

	if (len >= 2 && host_port[0] == '[' && host_port[len - 1] == ']') {
		host_port++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(host))
		return false;
	memcpy(host, host_port, len);
	host[len] = '\0';
	if (inet_pton(AF_INET, host, &a4) == 1)
		return a4.s_addr == htonl(INADDR_ANY);
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_UNSPECIFIED(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr32[3] == htonl(INADDR_ANY));
	return false;
}

int control_start(struct store *st, struct manager *m, struct daemon *d, const char *path,
                  const char *nbd_tcp, const char *nbd_socket, struct control **out)
{
	struct control *ctl;
	int fd;

	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->st = st;
	ctl->m = m;
	ctl->d = d;
	if (nbd_tcp && !tcp_is_wildcard(nbd_tcp))
		snprintf(ctl->nbd_tcp, sizeof(ctl->nbd_tcp), "%s", nbd_tcp);
	snprintf(ctl->nbd_socket, sizeof(ctl->nbd_socket), "%s", nbd_socket);
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	/*
	 * 0600: only its owner controls volumes.  The data directory's lock
	 * says no other daemon uses the path.
	 */
	fd = unixsock_listen(path, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		free(ctl);
		return fd;
	}
	ctl->fd = fd;
	ctl->mhd = MHD_start_daemon(
	    MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, ctl,
	    MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)CONTROL_THREADS, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned)CONTROL_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)CONTROL_IDLE_TIMEOUT_SEC, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
	    MHD_OPTION_END);
	if (!ctl->mhd) {
		log_error("cannot start the control API on %s", path);
		close(fd);
		unlink(path);
		free(ctl);
		return -EIO;
	}
	log_info("control API on %s", path);
	*out = ctl;
	return 0;
}

void control_stop(struct control *ctl)
{
	MHD_stop_daemon(ctl->mhd);
	close(ctl->fd);
	unlink(ctl->path);
	free(ctl);
}
