/* SPDX-License-Identifier: MIT */
/*
 * ctlclient.c - blockd's control API client (see ctlclient.h): libcurl
 * over the unix socket, one easy handle per request (so threads never
 * share one), answers parsed with jansson.
 *
 * Failures are described in words about blockd and its socket, not about
 * HTTP: curl's own messages would speak of "localhost port 80".
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlclient.h"
#include "errbuf.h"
#include "size.h"

struct ctlclient {
	char *socket_path;
	char *user_agent;
	long connect_timeout_s;
	long timeout_s;
	size_t max_reply_bytes;
};

/* The reply as it arrives, NUL-terminated, never above max bytes. */
struct reply_buf {
	char *data;
	size_t len;
	size_t max;
	bool too_large;
};

int ctlclient_new(const struct ctlclient_opts *opts, struct ctlclient **out)
{
	struct ctlclient *c;

	if (!opts->socket_path || !opts->user_agent || opts->timeout_s <= 0 ||
	    opts->connect_timeout_s < 0 || opts->max_reply_bytes == 0)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->socket_path = strdup(opts->socket_path);
	c->user_agent = strdup(opts->user_agent);
	c->connect_timeout_s = opts->connect_timeout_s;
	c->timeout_s = opts->timeout_s;
	c->max_reply_bytes = opts->max_reply_bytes;
	if (!c->socket_path || !c->user_agent ||
	    curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK) {
		free(c->socket_path);
		free(c->user_agent);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void ctlclient_free(struct ctlclient *c)
{
	if (!c)
		return;
	free(c->socket_path);
	free(c->user_agent);
	free(c);
	curl_global_cleanup();
}

static size_t reply_write(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct reply_buf *r = user;
	size_t n = size * nmemb;
	char *grown;

	if (n > r->max - r->len) {
		r->too_large = true;
		return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
	}
	grown = realloc(r->data, r->len + n + 1);
	if (!grown)
		return 0;
	memcpy(grown + r->len, ptr, n);
	r->data = grown;
	r->len += n;
	r->data[r->len] = '\0';
	return n;
}

/* The transport failed: -errno and why, in words about blockd. */
static int transport_error(const struct ctlclient *c, CURL *curl, CURLcode rc, const char *curl_err,
                           const struct reply_buf *r, char *err, size_t errlen)
{
	char cap[SIZE_FORMAT_MAX];
	long os_errno = 0;

	curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
	if (r->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		errbuf_set(err, errlen, "blockd's reply is larger than %s; refused",
		           size_format(c->max_reply_bytes, cap, sizeof(cap)));
		return -EPROTO;
	}
	if (rc == CURLE_COULDNT_CONNECT) {
		errbuf_set(err, errlen, "cannot reach blockd at %s: %s", c->socket_path,
		           strerror(os_errno ? (int)os_errno : ECONNREFUSED));
		return -ECONNREFUSED;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		errbuf_set(err, errlen, "blockd at %s did not answer in time", c->socket_path);
		return -ETIMEDOUT;
	}
	if (rc == CURLE_OUT_OF_MEMORY) {
		errbuf_set(err, errlen, "out of memory");
		return -ENOMEM;
	}
	errbuf_set(err, errlen, "talking to blockd at %s: %s", c->socket_path,
	           curl_err[0] ? curl_err : curl_easy_strerror(rc));
	return -EIO;
}

static int request_setup(const struct ctlclient *c, CURL *curl, const char *method, const char *url,
                         const char *body_text, struct curl_slist **headers, struct reply_buf *r,
                         char *curl_err, char *err, size_t errlen)
{
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (rc == CURLE_OK)                                                                \
			rc = curl_easy_setopt(curl, opt, val);                                     \
	} while (0)
	SET(CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
	SET(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http");
#else
	SET(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
	SET(CURLOPT_PATH_AS_IS, 1L); /* a name like ".." is the daemon's to refuse */
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_NOPROXY, "*");
	if (c->connect_timeout_s > 0)
		SET(CURLOPT_CONNECTTIMEOUT, c->connect_timeout_s);
	SET(CURLOPT_TIMEOUT, c->timeout_s);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_reply_bytes);
	SET(CURLOPT_USERAGENT, c->user_agent);
	SET(CURLOPT_ERRORBUFFER, curl_err);
	SET(CURLOPT_WRITEFUNCTION, reply_write);
	SET(CURLOPT_WRITEDATA, r);
	SET(CURLOPT_CUSTOMREQUEST, method);
	if (body_text) {
		SET(CURLOPT_POSTFIELDS, body_text);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body_text));
	} else if (strcmp(method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "POST") == 0) {
		/* An empty body still needs Content-Length: 0. */
		SET(CURLOPT_POSTFIELDS, "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
#undef SET
	if (rc != CURLE_OK) {
		errbuf_set(err, errlen, "libcurl: %s", curl_easy_strerror(rc));
		return -EINVAL;
	}
	*headers = curl_slist_append(NULL, "Accept: application/json");
	if (*headers && body_text)
		*headers = curl_slist_append(*headers, "Content-Type: application/json");
	if (*headers)
		*headers = curl_slist_append(*headers, "Expect:");
	if (!*headers) {
		errbuf_set(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *headers) != CURLE_OK) {
		errbuf_set(err, errlen, "libcurl refused the request headers");
		return -EINVAL;
	}
	return 0;
}

/* Fills *reply from an answer of status with the text r (r->len bytes; may be 0). */
static int parse_answer(long status, const struct reply_buf *r, const char *method,
                        const char *path, struct ctlclient_reply *reply, char *err, size_t errlen)
{
	bool ok = status >= 200 && status < 300;
	json_t *body = NULL, *error;
	json_error_t jerr;

	if (r->len > 0) {
		body = json_loadb(r->data, r->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!body && ok) {
			errbuf_set(err, errlen, "%s %s: blockd's reply (HTTP %ld) is not JSON: %s",
			           method, path, status, jerr.text);
			return -EPROTO;
		}
	}
	*reply = (struct ctlclient_reply){.status = status, .body = body};
	error = ok ? NULL : json_object_get(body, "error");
	if (json_is_object(error)) {
		reply->error_code = json_string_value(json_object_get(error, "code"));
		reply->error_message = json_string_value(json_object_get(error, "message"));
	}
	return 0;
}

int ctlclient_request(struct ctlclient *c, const char *method, const char *path, const json_t *body,
                      struct ctlclient_reply *reply, char *err, size_t errlen)
{
	char url[CTLCLIENT_PATH_MAX + sizeof("http://localhost")], curl_err[CURL_ERROR_SIZE] = "";
	struct reply_buf r = {.max = c->max_reply_bytes};
	struct curl_slist *headers = NULL;
	char *body_text = NULL;
	long status = 0;
	CURL *curl;
	CURLcode rc;
	int ret;

	if (strlen(path) > CTLCLIENT_PATH_MAX) {
		errbuf_set(err, errlen, "request path too long");
		return -ENAMETOOLONG;
	}
	snprintf(url, sizeof(url), "http://localhost%s", path);
	if (body && !(body_text = json_dumps(body, JSON_COMPACT))) {
		errbuf_set(err, errlen, "out of memory");
		return -ENOMEM;
	}
	curl = curl_easy_init();
	if (!curl) {
		free(body_text);
		errbuf_set(err, errlen, "cannot initialise libcurl");
		return -ENOMEM;
	}
	ret = request_setup(c, curl, method, url, body_text, &headers, &r, curl_err, err, errlen);
	if (ret < 0)
		goto out;
	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK) {
		ret = transport_error(c, curl, rc, curl_err, &r, err, errlen);
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	ret = parse_answer(status, &r, method, path, reply, err, errlen);
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	free(body_text);
	free(r.data);
	return ret;
}

void ctlclient_reply_release(struct ctlclient_reply *r)
{
	json_decref(r->body);
	*r = (struct ctlclient_reply){0};
}

char *ctlclient_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, n = 0, len = strlen(s);
	char *out;

	out = malloc(3 * len + 1);
	if (!out)
		return NULL;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	out[n] = '\0';
	return out;
}
