/* SPDX-License-Identifier: MIT */
/*
 * nbdclient.c - connecting with libnbd and requests with a timeout (see
 * nbdclient.h).
 *
 * Connecting uses libnbd's option mode: the connection stops after the
 * greeting (and STRUCTURED_REPLY), then NBD_OPT_GO is sent on its own,
 * whose completion gives the server's refusal as an errno while the
 * connection is still alive.  A plain connect would leave libnbd 1.14 with
 * no errno at all for NBD_REP_ERR_POLICY, and the same errno (ENOENT) for
 * "no such export" as for "no such socket".  Everything waits through
 * nbd_poll() against one deadline, so a server that accepts and then says
 * nothing costs timeout_ms, not forever.
 */
#include <errno.h>
#include <limits.h>
#include <time.h>

#include "errbuf.h"
#include "nbdclient.h"

/* Now on the monotonic clock, in ms. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* timeout_ms from now, or -1 (none) for a negative timeout. */
static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

const char *nbdclient_error(void)
{
	const char *e = nbd_get_error();

	return e ? e : "unknown libnbd error";
}

/* The connection can still carry commands (or is on its way there). */
static bool alive(struct nbd_handle *h)
{
	return !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h);
}

/*
 * Lets the state machine run once, waiting until deadline at most: 0, or
 * -ETIMEDOUT, or -EIO when polling failed (the handle is then usually
 * dead; the reason is nbdclient_error()'s).  h must be alive: a dead
 * handle has no descriptor, and poll(2) would just sleep.
 */
static int poll_once(struct nbd_handle *h, int64_t deadline)
{
	int64_t left = deadline < 0 ? -1 : deadline - now_ms();

	if (deadline >= 0 && left <= 0)
		return -ETIMEDOUT;
	if (nbd_poll(h, left > INT_MAX ? INT_MAX : (int)left) < 0 && nbd_get_errno() != EINTR)
		return -EIO;
	return 0;
}

static int setup(struct nbd_handle *h, const struct nbdclient_opts *o)
{
	if (nbd_set_opt_mode(h, true) < 0 ||
	    (o->want_block_status && nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0))
		return -1;
	if (o->uri)
		return nbd_set_uri_allow_tls(h, LIBNBD_TLS_DISABLE) < 0 ||
		               nbd_set_uri_allow_local_file(h, false) < 0 ||
		               nbd_set_uri_allow_transports(h, LIBNBD_ALLOW_TRANSPORT_TCP |
		                                                   LIBNBD_ALLOW_TRANSPORT_UNIX) < 0
		           ? -1
		           : 0;
	return nbd_set_tls(h, LIBNBD_TLS_DISABLE) < 0 || nbd_set_export_name(h, o->export_name) < 0
	           ? -1
	           : 0;
}

struct go_result {
	bool done;
	int err;
};

static int go_done(void *user_data, int *error)
{
	struct go_result *go = user_data;

	go->done = true;
	go->err = *error;
	return 1;
}

/*
 * NBD_OPT_GO on a negotiating handle: 0, -ENOENT, -EPERM, -ETIMEDOUT or
 * -EIO.  res must outlive h: libnbd may still call back into it when h is
 * closed before the server answered.
 */
static int go(struct nbd_handle *h, int64_t deadline, struct go_result *res)
{
	nbd_completion_callback cb = {.callback = go_done, .user_data = res};
	int rc;

	if (nbd_aio_opt_go(h, cb) < 0)
		return -EIO;
	while (!res->done) {
		if (!alive(h))
			return -EIO;
		rc = poll_once(h, deadline);
		if (rc < 0)
			return rc;
	}
	switch (res->err) {
	case 0:
		return nbd_aio_is_ready(h) ? 0 : -EIO;
	case ENOENT: /* NBD_REP_ERR_UNKNOWN */
		return -ENOENT;
	case EPERM:
	case EACCES:
	case ENOTSUP: /* NBD_REP_ERR_POLICY: libnbd 1.14 has no errno for it and says ENOTSUP */
		return -EPERM;
	default:
		return -EIO;
	}
}

static void describe(struct nbd_handle *h, const struct nbdclient_opts *o,
                     struct nbdclient_info *info)
{
	int64_t size = nbd_get_size(h), max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);

	*info = (struct nbdclient_info){
	    .size_bytes = size > 0 ? (uint64_t)size : 0,
	    .max_request_bytes = max > 0 && max <= UINT32_MAX ? (uint32_t)max : 0,
	    .read_only = nbd_is_read_only(h) == 1,
	    .can_flush = nbd_can_flush(h) == 1,
	    .can_zero = nbd_can_zero(h) == 1,
	    .can_multi_conn = nbd_can_multi_conn(h) == 1,
	    .block_status = o->want_block_status &&
	                    nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1,
	};
}

int nbdclient_connect(const struct nbdclient_opts *opts, struct nbd_handle **out,
                      struct nbdclient_info *info, char *err, size_t errlen)
{
	int64_t deadline = deadline_after(opts->timeout_ms);
	struct go_result res = {0};
	const char *why = NULL;
	struct nbd_handle *h;
	int rc = 0;

	if (!opts->uri == !opts->socket_path || (opts->socket_path && !opts->export_name)) {
		errbuf_set(err, errlen, "give a unix socket and an export name, or a URI");
		return -EINVAL;
	}
	h = nbd_create();
	if (!h) {
		errbuf_set(err, errlen, "%s", nbdclient_error());
		return -ENOMEM;
	}
	if (setup(h, opts) < 0 || (opts->uri ? nbd_aio_connect_uri(h, opts->uri)
	                                     : nbd_aio_connect_unix(h, opts->socket_path)) < 0) {
		int e = nbd_get_errno();

		/* Nothing reached the server yet: refused options or URI, or no connect. */
		rc = e == ENOMEM                                 ? -ENOMEM
		     : e == EINVAL || e == EPERM || e == ENOTSUP ? -EINVAL
		                                                 : -EIO;
		goto fail;
	}
	while (rc == 0 && nbd_aio_is_connecting(h))
		rc = poll_once(h, deadline);
	if (rc == 0 && !nbd_aio_is_negotiating(h)) {
		rc = -EIO;
		why = alive(h) ? "the server takes no options (no fixed newstyle handshake)"
		               : "the server hung up during the handshake";
	}
	if (rc == 0)
		rc = go(h, deadline, &res);
	if (rc < 0)
		goto fail;
	describe(h, opts, info);
	*out = h;
	return 0;
fail:
	if (rc == -ETIMEDOUT)
		errbuf_set(err, errlen, "no answer from the server within %d ms", opts->timeout_ms);
	else
		errbuf_set(err, errlen, "%s", why ? why : nbdclient_error());
	nbd_close(h);
	return rc;
}

/*
 * Waits for command cookie (or the failure of its aio call, cookie < 0):
 * see nbdclient.h for what comes back.
 */
static int finish(struct nbd_handle *h, int64_t cookie, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	int done, e;

	for (;;) {
		done = cookie < 0 ? -1 : nbd_aio_command_completed(h, cookie);
		if (done == 1)
			return 0;
		if (done < 0) {
			e = nbd_get_errno();
			return !alive(h) ? -ENOTCONN : e > 0 ? -e : -EIO;
		}
		if (!alive(h))
			return -ENOTCONN;
		e = poll_once(h, deadline);
		if (e < 0)
			return e == -ETIMEDOUT ? e : -ENOTCONN;
	}
}

int nbdclient_pread(struct nbd_handle *h, void *buf, size_t len, uint64_t off, int timeout_ms)
{
	return finish(h, nbd_aio_pread(h, buf, len, off, NBD_NULL_COMPLETION, 0), timeout_ms);
}

int nbdclient_pwrite(struct nbd_handle *h, const void *buf, size_t len, uint64_t off,
                     int timeout_ms)
{
	return finish(h, nbd_aio_pwrite(h, buf, len, off, NBD_NULL_COMPLETION, 0), timeout_ms);
}

int nbdclient_zero(struct nbd_handle *h, uint64_t len, uint64_t off, uint32_t flags, int timeout_ms)
{
	return finish(h, nbd_aio_zero(h, len, off, NBD_NULL_COMPLETION, flags), timeout_ms);
}

int nbdclient_flush(struct nbd_handle *h, int timeout_ms)
{
	return finish(h, nbd_aio_flush(h, NBD_NULL_COMPLETION, 0), timeout_ms);
}

void nbdclient_close(struct nbd_handle *h)
{
	if (!h)
		return;
	/* Queued and sent as far as the socket takes it now; closing ends it anyway. */
	if (nbd_aio_is_ready(h))
		nbd_aio_disconnect(h, 0);
	nbd_close(h);
}
