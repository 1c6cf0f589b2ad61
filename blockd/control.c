/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control API: HTTP/1.1 + JSON on DIR/control.sock (mode
 * 0600), served by libmicrohttpd on one thread of its own, so control calls
 * run one at a time and never on an event loop.  JSON in and out with
 * jansson.  Routes:
 *
 *   GET    /v1/volumes                         {"volumes": [VOLUME...]}
 *   POST   /v1/volumes                         {"name","size"} | {"name","from":"VOL@SNAP"}
 *   GET    /v1/volumes/NAME                    VOLUME with "snapshots"
 *   PATCH  /v1/volumes/NAME                    {"size"}
 *   DELETE /v1/volumes/NAME
 *   GET    /v1/volumes/NAME/snapshots          {"snapshots": [SNAPSHOT...]}
 *   POST   /v1/volumes/NAME/snapshots          {"name"}
 *   DELETE /v1/volumes/NAME/snapshots/SNAP
 *   POST   /v1/volumes/NAME/snapshots/SNAP/restore
 *   GET    /metrics                            Prometheus text
 *
 * Errors: {"error": {"code", "message"}} with 400, 404, 405, 409, 413 or 500.
 */
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "manage.h"
#include "qcow.h"
#include "size.h"
#include "store_internal.h"

/* Request bodies are small JSON objects; anything larger is refused (413). */
#define MAX_BODY_BYTES (64u << 10)

struct control {
	struct MHD_Daemon *mhd;
	struct store *st;
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
	default:
		return send_error(conn, 500, "internal", msg);
	}
}

static void iso_time(time_t t, char out[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *snapshot_json(const struct qcow_snapshot_info *si)
{
	char when[32];

	iso_time((time_t)si->date_sec, when);
	return json_pack("{s:s,s:s,s:s,s:I}", "name", si->name, "id", si->id, "created", when,
	                 "size", (json_int_t)si->disk_size_bytes);
}

static json_t *snapshots_json(struct volume *vol)
{
	json_t *arr = json_array();
	struct qcow_snapshot_info si;

	pthread_mutex_lock(&vol->main.lock);
	for (uint32_t i = 0; i < qcow_snapshot_count(vol->main.img); i++)
		if (qcow_snapshot_get(vol->main.img, i, &si) == 0)
			json_array_append_new(arr, snapshot_json(&si));
	pthread_mutex_unlock(&vol->main.lock);
	return arr;
}

/* A volume as the API shows it; st->lock held by the caller. */
static json_t *volume_json(struct control *ctl, struct volume *vol, bool details)
{
	char uri[PATH_MAX + 400], when[32];
	struct qcow_info info;
	struct stat sb;
	json_t *atts = json_array(), *o;

	pthread_mutex_lock(&vol->main.lock);
	qcow_get_info(vol->main.img, &info);
	pthread_mutex_unlock(&vol->main.lock);
	for (struct attachment *a = vol->attachments; a; a = a->next) {
		iso_time(a->since, when);
		json_array_append_new(atts, json_pack("{s:s,s:s,s:b,s:s,s:I}", "peer", a->peer,
		                                      "since", when, "read_only", a->read_only,
		                                      "export", a->export_name, "connections",
		                                      (json_int_t)a->connections));
	}
	if (fstat(vol->main.fd, &sb) < 0)
		memset(&sb, 0, sizeof(sb));
	iso_time(sb.st_mtime, when);
	o = json_pack("{s:s,s:I,s:I,s:s,s:I,s:o}", "name", vol->name, "size",
	              (json_int_t)vol->main.size, "allocated", (json_int_t)sb.st_blocks * 512,
	              "modified", when, "snapshot_count", (json_int_t)info.nb_snapshots,
	              "attachments", atts);
	/* The canonical path: clones name their base relative to the volumes folder. */
	if (info.backing_path[0] && !realpath(info.backing_path, uri))
		snprintf(uri, sizeof(uri), "%s", info.backing_path);
	json_object_set_new(o, "backing", info.backing_path[0] ? json_string(uri) : json_null());
	if (ctl->nbd_tcp[0]) {
		snprintf(uri, sizeof(uri), "nbd://%s/%s", ctl->nbd_tcp, vol->name);
		json_object_set_new(o, "nbd_uri", json_string(uri));
	}
	snprintf(uri, sizeof(uri), "nbd+unix:///%s?socket=%s", vol->name, ctl->nbd_socket);
	json_object_set_new(o, "nbd_unix_uri", json_string(uri));
	if (details)
		json_object_set_new(o, "snapshots", snapshots_json(vol));
	return o;
}

static struct volume *lookup(struct control *ctl, const char *name)
{
	struct volume *vol;

	if (!store_valid_name(name, strlen(name)))
		return NULL;
	pthread_mutex_lock(&ctl->st->lock);
	vol = find_volume(ctl->st, name, strlen(name));
	pthread_mutex_unlock(&ctl->st->lock);
	return vol;
}

static int send_volume(struct control *ctl, struct MHD_Connection *conn, unsigned status,
                       const char *name)
{
	struct volume *vol = lookup(ctl, name);
	json_t *o;

	if (!vol) {
		char msg[STORE_NAME_MAX + 32];

		snprintf(msg, sizeof(msg), "no volume %s", name);
		return send_error(conn, 404, "not_found", msg);
	}
	pthread_mutex_lock(&ctl->st->lock);
	o = volume_json(ctl, vol, true);
	pthread_mutex_unlock(&ctl->st->lock);
	return send_json(conn, status, o);
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
		rc = manage_clone(ctl->st, from, name, err, sizeof(err));
	} else {
		if (get_size(j, &size) < 0)
			return send_error(conn, 400, "bad_request",
			                  "\"size\" must be a positive number of bytes or a size "
			                  "such as \"10G\"");
		rc = manage_create(ctl->st, name, size, err, sizeof(err));
	}
	if (rc < 0)
		return send_failure(conn, rc, err);
	return send_volume(ctl, conn, 201, name);
}

static int list_volumes(struct control *ctl, struct MHD_Connection *conn)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&ctl->st->lock);
	for (struct volume *v = ctl->st->volumes; v; v = v->next)
		json_array_append_new(arr, volume_json(ctl, v, false));
	pthread_mutex_unlock(&ctl->st->lock);
	return send_json(conn, 200, json_pack("{s:o}", "volumes", arr));
}

/* Prometheus text exposition of the per-volume counters. */
static int metrics(struct control *ctl, struct MHD_Connection *conn)
{
	static const char *const ops[STATS_OPS] = {"read", "write", "flush", "other"};
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	struct MHD_Response *resp;
	int rc;

#define EMIT(...)                                                                                  \
	do {                                                                                       \
		int n_;                                                                            \
		while (buf && (n_ = snprintf(buf + len, cap - len, __VA_ARGS__)) >= 0 &&           \
		       (size_t)n_ >= cap - len) {                                                  \
			char *nb_ = realloc(buf, cap * 2);                                         \
			if (!nb_) {                                                                \
				free(buf);                                                         \
				buf = NULL;                                                        \
				break;                                                             \
			}                                                                          \
			buf = nb_;                                                                 \
			cap *= 2;                                                                  \
		}                                                                                  \
		if (buf)                                                                           \
			len += (size_t)n_;                                                         \
	} while (0)

	EMIT("# HELP blockd_connections NBD connections open.\n# TYPE blockd_connections gauge\n"
	     "blockd_connections %u\n",
	     atomic_load(&ctl->d->connections));
	EMIT("# HELP blockd_volume_bytes_total Bytes read and written per volume.\n"
	     "# TYPE blockd_volume_bytes_total counter\n");
	pthread_mutex_lock(&ctl->st->lock);
	for (struct volume *v = ctl->st->volumes; v; v = v->next)
		for (int op = 0; op < 2; op++)
			EMIT("blockd_volume_bytes_total{volume=\"%s\",op=\"%s\"} %llu\n", v->name,
			     ops[op], (unsigned long long)atomic_load(&v->stats.bytes[op]));
	EMIT("# HELP blockd_volume_ops_total Requests per volume and kind.\n"
	     "# TYPE blockd_volume_ops_total counter\n");
	for (struct volume *v = ctl->st->volumes; v; v = v->next)
		for (int op = 0; op < STATS_OPS; op++)
			EMIT("blockd_volume_ops_total{volume=\"%s\",op=\"%s\"} %llu\n", v->name,
			     ops[op], (unsigned long long)atomic_load(&v->stats.ops[op]));
	EMIT("# HELP blockd_volume_errors_total Failed requests per volume and kind.\n"
	     "# TYPE blockd_volume_errors_total counter\n");
	for (struct volume *v = ctl->st->volumes; v; v = v->next)
		for (int op = 0; op < STATS_OPS; op++)
			EMIT("blockd_volume_errors_total{volume=\"%s\",op=\"%s\"} %llu\n", v->name,
			     ops[op], (unsigned long long)atomic_load(&v->stats.errors[op]));
	EMIT("# HELP blockd_volume_latency_seconds Request latency per volume and kind.\n"
	     "# TYPE blockd_volume_latency_seconds histogram\n");
	for (struct volume *v = ctl->st->volumes; v; v = v->next) {
		for (int op = 0; op < STATS_OPS; op++) {
			unsigned long long cum = 0;

			for (int b = 0; b < STATS_BUCKETS; b++) {
				cum += atomic_load(&v->stats.latency[op][b]);
				if (b < STATS_BUCKETS - 1)
					EMIT(
					    "blockd_volume_latency_seconds_bucket{volume=\"%s\",op="
					    "\"%s\",le=\"%g\"} %llu\n",
					    v->name, ops[op], stats_bucket_us[b] / 1e6, cum);
				else
					EMIT(
					    "blockd_volume_latency_seconds_bucket{volume=\"%s\",op="
					    "\"%s\",le=\"+Inf\"} %llu\n",
					    v->name, ops[op], cum);
			}
			EMIT("blockd_volume_latency_seconds_sum{volume=\"%s\",op=\"%s\"} %g\n",
			     v->name, ops[op], atomic_load(&v->stats.latency_us_sum[op]) / 1e6);
			EMIT("blockd_volume_latency_seconds_count{volume=\"%s\",op=\"%s\"} %llu\n",
			     v->name, ops[op], cum);
		}
	}
	pthread_mutex_unlock(&ctl->st->lock);
#undef EMIT
	if (!buf)
		return send_error(conn, 500, "internal", "out of memory");
	resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        "text/plain; version=0.0.4; charset=utf-8");
	rc = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* Room for one decoded path segment; longer ones become "" (an invalid name). */
#define SEG_BYTES (STORE_NAME_MAX + 2)

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
 * Splits the raw path "/v1/volumes/A/snapshots/B/restore" into up to 6
 * segments and percent-decodes each one afterwards, so that an encoded
 * "/" stays inside its segment (and makes an invalid name) instead of
 * becoming a separator.  A segment that is too long, or decodes to a NUL
 * or a bad escape, becomes "".  Returns the count, or -1 for more than 6.
 */
static int split_path(const char *url, char seg[6][SEG_BYTES])
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
		if (n == 6)
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

/* No decoding by libmicrohttpd: split_path() decodes after splitting. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *uri)
{
	(void)cls;
	(void)conn;
	return strlen(uri);
}

static int route(struct control *ctl, struct MHD_Connection *conn, const char *url,
                 const char *method, const struct request_body *body)
{
	char seg[6][SEG_BYTES], err[512];
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	bool del = strcmp(method, "DELETE") == 0, patch = strcmp(method, "PATCH") == 0;
	int n = split_path(url, seg), ret = MHD_NO, rc;
	json_t *j;

	if (body->too_large)
		return send_error(conn, 413, "too_large", "request body too large");
	if (n == 1 && strcmp(seg[0], "metrics") == 0 && get)
		return metrics(ctl, conn);
	if (n < 2 || strcmp(seg[0], "v1") != 0 || strcmp(seg[1], "volumes") != 0)
		return send_error(conn, 404, "not_found", "no such endpoint");
	if (n >= 3 && !store_valid_name(seg[2], strlen(seg[2])))
		return send_error(conn, 400, "bad_request", "invalid volume name");
	if (n >= 5 && !store_valid_name(seg[4], strlen(seg[4])))
		return send_error(conn, 400, "bad_request", "invalid snapshot name");
	if (n == 2) {
		if (get)
			return list_volumes(ctl, conn);
		if (!post)
			return send_error(conn, 405, "method_not_allowed", "use GET or POST");
		if (!(j = parse_body(conn, body, &ret)))
			return ret;
		ret = post_volume(ctl, conn, j);
		json_decref(j);
		return ret;
	}
	if (n == 3) {
		if (get)
			return send_volume(ctl, conn, 200, seg[2]);
		if (del) {
			rc = manage_delete(ctl->st, seg[2], err, sizeof(err));
			return rc < 0 ? send_failure(conn, rc, err) : send_json(conn, 204, NULL);
		}
		if (!patch)
			return send_error(conn, 405, "method_not_allowed",
			                  "use GET, PATCH or DELETE");
		if (!(j = parse_body(conn, body, &ret)))
			return ret;
		{
			static const char *const keys[] = {"size", NULL};
			uint64_t size;

			if (!only_keys(j, keys) || get_size(j, &size) < 0) {
				json_decref(j);
				return send_error(conn, 400, "bad_request",
				                  "expected {\"size\": SIZE}");
			}
			json_decref(j);
			rc = manage_resize(ctl->st, seg[2], size, err, sizeof(err));
		}
		return rc < 0 ? send_failure(conn, rc, err) : send_volume(ctl, conn, 200, seg[2]);
	}
	if (strcmp(seg[3], "snapshots") != 0)
		return send_error(conn, 404, "not_found", "no such endpoint");
	if (n == 4) {
		struct volume *vol = lookup(ctl, seg[2]);

		if (!vol) {
			snprintf(err, sizeof(err), "no volume %s", seg[2]);
			return send_error(conn, 404, "not_found", err);
		}
		if (get)
			return send_json(conn, 200,
			                 json_pack("{s:o}", "snapshots", snapshots_json(vol)));
		if (!post)
			return send_error(conn, 405, "method_not_allowed", "use GET or POST");
		if (!(j = parse_body(conn, body, &ret)))
			return ret;
		{
			static const char *const keys[] = {"name", NULL};
			const char *snap = json_string_value(json_object_get(j, "name"));
			char name[SEG_BYTES];

			if (!only_keys(j, keys) || !snap) {
				json_decref(j);
				return send_error(conn, 400, "bad_request",
				                  "expected {\"name\": NAME}");
			}
			snprintf(name, sizeof(name), "%s", snap);
			rc = manage_snapshot_create(ctl->st, seg[2], snap, err, sizeof(err));
			json_decref(j);
			if (rc < 0)
				return send_failure(conn, rc, err);
			{
				struct qcow_snapshot_info si;
				json_t *o = NULL;

				pthread_mutex_lock(&vol->main.lock);
				for (uint32_t i = 0; i < qcow_snapshot_count(vol->main.img); i++)
					if (qcow_snapshot_get(vol->main.img, i, &si) == 0 &&
					    strcmp(si.name, name) == 0)
						o = snapshot_json(&si);
				pthread_mutex_unlock(&vol->main.lock);
				return o ? send_json(conn, 201, o)
				         : send_error(conn, 500, "internal", "snapshot vanished");
			}
		}
	}
	if (n == 5 && get) {
		struct qcow_snapshot_info si;
		struct volume *vol = lookup(ctl, seg[2]);
		uint64_t stored;
		json_t *o = NULL;

		if (vol) {
			pthread_mutex_lock(&vol->main.lock);
			for (uint32_t i = 0; !o && i < qcow_snapshot_count(vol->main.img); i++)
				if (qcow_snapshot_get(vol->main.img, i, &si) == 0 &&
				    strcmp(si.name, seg[4]) == 0)
					o = snapshot_json(&si);
			pthread_mutex_unlock(&vol->main.lock);
		}
		if (!o) {
			snprintf(err, sizeof(err), "no snapshot %s@%s", seg[2], seg[4]);
			return send_error(conn, 404, "not_found", err);
		}
		rc = store_snapshot_stored(ctl->st, seg[2], seg[4], &stored);
		if (rc < 0) {
			json_decref(o);
			snprintf(err, sizeof(err), "snapshot %s@%s cannot be read", seg[2], seg[4]);
			return send_failure(conn, rc, err);
		}
		json_object_set_new(o, "allocated", json_integer((json_int_t)stored));
		return send_json(conn, 200, o);
	}
	if (n == 5 && del) {
		rc = manage_snapshot_delete(ctl->st, seg[2], seg[4], err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_json(conn, 204, NULL);
	}
	if (n == 6 && strcmp(seg[5], "restore") == 0 && post) {
		rc = manage_snapshot_restore(ctl->st, seg[2], seg[4], err, sizeof(err));
		return rc < 0 ? send_failure(conn, rc, err) : send_volume(ctl, conn, 200, seg[2]);
	}
	if (n == 5 || (n == 6 && strcmp(seg[5], "restore") == 0))
		return send_error(conn, 405, "method_not_allowed", "method not allowed here");
	return send_error(conn, 404, "not_found", "no such endpoint");
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
		if (b->len + *upload_data_size > MAX_BODY_BYTES) {
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
	return route(ctl, conn, url, method, b) == MHD_YES ? MHD_YES : MHD_NO;
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

int control_start(struct store *st, struct daemon *d, const char *path, const char *nbd_tcp,
                  const char *nbd_socket, struct control **out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control *ctl;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("control socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->st = st;
	ctl->d = d;
	snprintf(ctl->nbd_tcp, sizeof(ctl->nbd_tcp), "%s", nbd_tcp ? nbd_tcp : "");
	snprintf(ctl->nbd_socket, sizeof(ctl->nbd_socket), "%s", nbd_socket);
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	unlink(path); /* the data directory's lock says no other daemon uses it */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	old = umask(0177); /* the socket is born 0600: only its owner controls volumes */
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		umask(old);
		log_error("cannot listen on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(ctl);
		return -errno;
	}
	umask(old);
	ctl->fd = fd;
	ctl->mhd = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, ctl,
	    MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	    MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_END);
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
