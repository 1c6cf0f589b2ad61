/* SPDX-License-Identifier: MIT */
/*
 * ctl.c - talking to blockd's control API (see ctl.h): where the daemon
 * is, one request through common's control-API client (ctlclient.h) with
 * blockctl's way of printing what went wrong, and the JSON helpers the
 * volume and snapshot commands print with.
 *
 * Every request is bounded: CTL_CONNECT_TIMEOUT_S to connect,
 * CTL_TIMEOUT_S for the whole exchange, CTL_MAX_REPLY_BYTES of reply.
 * Only http:// is ever spoken and redirects are not followed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockctl.h"
#include "ctl.h"
#include "ctlclient.h"
#include "datadir.h"

#define CTL_CONNECT_TIMEOUT_S 10L
#define CTL_TIMEOUT_S         300L
#define CTL_MAX_REPLY_BYTES   (16u << 20)

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

static struct ctlclient *client;

static void client_free(void)
{
	ctlclient_free(client);
	client = NULL;
}

/* The client for ctl_target, made on first use; -errno (printed). */
static int client_get(struct ctlclient **out)
{
	const struct ctlclient_opts opts = {
	    .socket_path = ctl_target.control_path,
	    .user_agent = "blockctl",
	    .connect_timeout_s = CTL_CONNECT_TIMEOUT_S,
	    .timeout_s = CTL_TIMEOUT_S,
	    .max_reply_bytes = CTL_MAX_REPLY_BYTES,
	};
	int ret;

	if (!client) {
		ret = ctlclient_new(&opts, &client);
		if (ret < 0) {
			cli_error("cannot initialise libcurl");
			return ret;
		}
		atexit(client_free);
	}
	*out = client;
	return 0;
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
static void print_api_error(const struct ctlclient_reply *r, const char *method, const char *path,
                            const char *subject)
{
	const char *message = r->error_message, *code = r->error_code;

	if (message && message[0] && subject && !names(message, subject))
		cli_error("%s: %s", subject, message);
	else if (message && message[0])
		cli_error("%s", message);
	else if (code)
		cli_error("%s %s: blockd answered %ld (%s)", method, path, r->status, code);
	else
		cli_error("%s %s: blockd answered HTTP %ld", method, path, r->status);
}

static int api_error(const struct ctlclient_reply *r, const char *method, const char *path,
                     const char *subject)
{
	if (!ctl_quiet)
		print_api_error(r, method, path, subject);
	switch (r->status) {
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

int ctl_request(const char *method, const char *path, json_t *body, const char *subject,
                json_t **reply)
{
	char err[PATH_MAX + 256];
	struct ctlclient_reply r;
	struct ctlclient *c;
	int ret;

	if (reply)
		*reply = NULL;
	ret = ctl_target_resolve(&ctl_target);
	if (ret < 0)
		return ret;
	ret = client_get(&c);
	if (ret < 0)
		return ret;
	ret = ctlclient_request(c, method, path, body, &r, err, sizeof(err));
	if (ret == -ECONNREFUSED) {
		cli_error("%s (is blockd running? see --data-dir)", err);
		return ret;
	}
	if (ret < 0) {
		cli_error("%s", err);
		return ret;
	}
	if (r.status < 200 || r.status >= 300) {
		ret = api_error(&r, method, path, subject);
	} else if (reply) {
		*reply = r.body;
		r.body = NULL;
	}
	ctlclient_reply_release(&r);
	return ret;
}

char *ctl_escape(const char *s)
{
	char *out = ctlclient_escape(s);

	if (!out)
		cli_error("out of memory");
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
