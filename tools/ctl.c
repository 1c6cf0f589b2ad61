/* SPDX-License-Identifier: MIT */
/*
 * ctl.c - talking to blockd's control API (see ctl.h): where the daemon
 * is, one HTTP request over its unix socket with libcurl, and the JSON
 * helpers the volume and snapshot commands print with.
 *
 * Every request is bounded: CTL_CONNECT_TIMEOUT_S to connect,
 * CTL_TIMEOUT_S for the whole exchange, CTL_MAX_REPLY_BYTES of reply.
 * Only http:// is ever spoken and redirects are not followed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockctl.h"
#include "ctl.h"
#include "datadir.h"

#define CTL_CONNECT_TIMEOUT_S 10L
#define CTL_TIMEOUT_S         300L
#define CTL_MAX_REPLY_BYTES   (16u << 20)
#define CTL_URL_MAX           (PATH_MAX + 64)

struct ctl_target ctl_target;
bool ctl_quiet;

/* ------------------------------------------------------------------------ */
/* Where the daemon is */

static int set_path(char *dst, const char *src, const char *option, const char *usage)
{
	if (src[0] == '\0') {
		cli_usage_error(usage, "%s needs a non-empty path", option);
		return -EINVAL;
	}
	if ((size_t)snprintf(dst, PATH_MAX, "%s", src) >= PATH_MAX) {
		cli_usage_error(usage, "%s: path too long", option);
		return -EINVAL;
	}
	return 0;
}

int ctl_parse_global(int argc, char **argv, struct ctl_target *t, const char *usage)
{
	static const char *const options[] = {"--data-dir", "--control"};
	int i = 1;

	while (i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0') {
		const char *arg = argv[i], *value = NULL;
		size_t k, len;
		int taken = 1;

		for (k = 0; k < 2; k++) {
			len = strlen(options[k]);
			if (strncmp(arg, options[k], len) == 0 &&
			    (arg[len] == '\0' || arg[len] == '='))
				break;
		}
		if (k == 2)
			break; /* --help and the like: main's business */
		if (arg[len] == '=') {
			value = arg + len + 1;
		} else if (i + 1 < argc) {
			value = argv[i + 1];
			taken = 2;
		} else {
			cli_usage_error(usage, "option '%s' needs an argument", arg);
			return -EINVAL;
		}
		if (set_path(k == 0 ? t->data_dir : t->control_path, value, options[k], usage) < 0)
			return -EINVAL;
		i += taken;
	}
	return i - 1;
}

int ctl_target_resolve(struct ctl_target *t)
{
	int ret;

	if (t->control_path[0])
		return 0;
	if (!t->data_dir[0]) {
		ret = datadir_default(t->data_dir, sizeof(t->data_dir));
		if (ret == -ENOENT) {
			cli_error("no HOME or XDG_STATE_HOME to find blockd in: give --data-dir");
			return ret;
		}
		if (ret < 0) {
			cli_error("the default data directory's path is too long: give --data-dir");
			return ret;
		}
	}
	if (datadir_control_socket(t->data_dir, t->control_path, sizeof(t->control_path)) < 0) {
		cli_error("%s/" DATADIR_CONTROL_SOCKET ": path too long", t->data_dir);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* One request */

struct reply_buf {
	char *data;
	size_t len;
	bool too_large;
};

static size_t reply_write(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct reply_buf *r = user;
	size_t n = size * nmemb;
	char *grown;

	if (n > CTL_MAX_REPLY_BYTES - r->len) {
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

static bool curl_ready;

static int ctl_curl_init(void)
{
	if (curl_ready)
		return 0;
	if (curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK) {
		cli_error("cannot initialise libcurl");
		return -ENOMEM;
	}
	curl_ready = true;
	atexit(curl_global_cleanup);
	return 0;
}

/* The transport failed: say why, in words about blockd rather than about HTTP. */
static int transport_error(CURL *curl, CURLcode rc, const char *errbuf, const struct reply_buf *r)
{
	const char *sock = ctl_target.control_path;
	long os_errno = 0;

	curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
	if (r->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		cli_error("blockd's reply is larger than %u MiB; refused",
		          CTL_MAX_REPLY_BYTES >> 20);
		return -EPROTO;
	}
	if (rc == CURLE_COULDNT_CONNECT) {
		cli_error("cannot reach blockd at %s: %s (is blockd running? see --data-dir)", sock,
		          os_errno ? strerror((int)os_errno) : "connection refused");
		return -ECONNREFUSED;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		cli_error("blockd at %s did not answer in time", sock);
		return -ETIMEDOUT;
	}
	cli_error("talking to blockd at %s: %s", sock, errbuf[0] ? errbuf : curl_easy_strerror(rc));
	return -EIO;
}

/* Whether message already names subject's volume ("vm1" of "vm1@s1"), as a word. */
static bool names(const char *message, const char *subject)
{
	size_t len = strcspn(subject, "@");
	const char *p;

	if (len == 0)
		return false;
	for (p = message; *p; p++) {
		bool start = p == message || strchr(" '\"", p[-1]) != NULL;

		/* strchr() finds the terminator too: the end of the message ends a word. */
		if (start && strncmp(p, subject, len) == 0 && strchr(" @:,;'\"", p[len]) != NULL)
			return true;
	}
	return false;
}

/* A non-2xx answer: the daemon's one-line message, whatever else it sent. */
static void print_api_error(long status, const char *method, const char *path, const char *subject,
                            json_t *body)
{
	const char *message = NULL, *code = NULL;
	json_t *error = body ? json_object_get(body, "error") : NULL;

	if (json_is_object(error)) {
		message = ctl_str(error, "message", NULL);
		code = ctl_str(error, "code", NULL);
	}
	if (message && message[0] && subject && !names(message, subject))
		cli_error("%s: %s", subject, message);
	else if (message && message[0])
		cli_error("%s", message);
	else if (code)
		cli_error("%s %s: blockd answered %ld (%s)", method, path, status, code);
	else
		cli_error("%s %s: blockd answered HTTP %ld", method, path, status);
}

static int api_error(long status, const char *method, const char *path, const char *subject,
                     json_t *body)
{
	if (!ctl_quiet)
		print_api_error(status, method, path, subject, body);
	switch (status) {
	case 404:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 400:
	case 413:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int request_setup(CURL *curl, const char *method, const char *url, const char *body_text,
                         struct curl_slist **headers, struct reply_buf *r, char *errbuf)
{
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (rc == CURLE_OK)                                                                \
			rc = curl_easy_setopt(curl, opt, val);                                     \
	} while (0)
	SET(CURLOPT_UNIX_SOCKET_PATH, ctl_target.control_path);
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
	SET(CURLOPT_CONNECTTIMEOUT, CTL_CONNECT_TIMEOUT_S);
	SET(CURLOPT_TIMEOUT, CTL_TIMEOUT_S);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CTL_MAX_REPLY_BYTES);
	SET(CURLOPT_USERAGENT, "blockctl");
	SET(CURLOPT_ERRORBUFFER, errbuf);
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
		cli_error("libcurl: %s", curl_easy_strerror(rc));
		return -EINVAL;
	}
	*headers = curl_slist_append(NULL, "Accept: application/json");
	if (*headers && body_text)
		*headers = curl_slist_append(*headers, "Content-Type: application/json");
	if (*headers)
		*headers = curl_slist_append(*headers, "Expect:");
	if (!*headers) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	if (curl_easy_setopt(curl, CURLOPT_HTTPHEADER, *headers) != CURLE_OK)
		return -EINVAL;
	return 0;
}

int ctl_request(const char *method, const char *path, json_t *body, const char *subject,
                json_t **reply)
{
	char url[CTL_URL_MAX], errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers = NULL;
	struct reply_buf r = {0};
	char *body_text = NULL;
	json_t *answer = NULL;
	json_error_t jerr;
	long status = 0;
	CURL *curl;
	CURLcode rc;
	int ret;

	if (reply)
		*reply = NULL;
	ret = ctl_target_resolve(&ctl_target);
	if (ret < 0)
		return ret;
	ret = ctl_curl_init();
	if (ret < 0)
		return ret;
	if ((size_t)snprintf(url, sizeof(url), "http://localhost%s", path) >= sizeof(url)) {
		cli_error("request path too long");
		return -ENAMETOOLONG;
	}
	if (body && !(body_text = json_dumps(body, JSON_COMPACT))) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	curl = curl_easy_init();
	if (!curl) {
		free(body_text);
		cli_error("cannot initialise libcurl");
		return -ENOMEM;
	}
	ret = request_setup(curl, method, url, body_text, &headers, &r, errbuf);
	if (ret < 0)
		goto out;
	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK) {
		ret = transport_error(curl, rc, errbuf, &r);
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (r.len > 0) {
		answer = json_loadb(r.data, r.len, JSON_REJECT_DUPLICATES, &jerr);
		if (!answer && status >= 200 && status < 300) {
			cli_error("%s %s: blockd's reply (HTTP %ld) is not JSON: %s", method, path,
			          status, jerr.text);
			ret = -EPROTO;
			goto out;
		}
	}
	if (status < 200 || status >= 300) {
		ret = api_error(status, method, path, subject, answer);
		goto out;
	}
	if (reply) {
		*reply = answer;
		answer = NULL;
	}
	ret = 0;
out:
	json_decref(answer);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	free(body_text);
	free(r.data);
	return ret;
}

char *ctl_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, n = 0, len = strlen(s);
	char *out;

	out = malloc(3 * len + 1);
	if (!out) {
		cli_error("out of memory");
		return NULL;
	}
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

/* ------------------------------------------------------------------------ */
/* Printing answers */

int ctl_print_json(const json_t *value)
{
	if (json_dumpf(value, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) < 0 || putchar('\n') == EOF)
		return -EIO;
	return 0;
}

const char *ctl_str(const json_t *obj, const char *key, const char *fallback)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : fallback;
}

int ctl_uint(const json_t *obj, const char *key, const char *what, uint64_t *out)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		cli_error("blockd's description of %s has no valid \"%s\"", what, key);
		return -EPROTO;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

const char *ctl_printable(const char *s, char *buf, size_t len)
{
	size_t i;

	snprintf(buf, len, "%s", s);
	for (i = 0; buf[i]; i++) {
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	}
	return buf;
}

int ctl_check_name(const char *what, const char *name, const char *usage)
{
	if (name[0] == '\0') {
		cli_usage_error(usage, "the %s name is empty", what);
		return -EINVAL;
	}
	return 0;
}
