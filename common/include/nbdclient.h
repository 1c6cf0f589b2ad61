/* SPDX-License-Identifier: MIT */
/*
 * nbdclient.h - the one NBD client of the tree, for blockctl and blockfs:
 * a thin layer over libnbd.
 *
 * Why libnbd and not a client of our own: it is a maintained client
 * (structured replies, block status and meta contexts, TLS with x509 and
 * PSK, which the network issues will need, NBD URIs), and it keeps our
 * server judged by an independent implementation of the protocol: a
 * misreading of the spec shared by our own client and our server would
 * never show.
 *
 * What this layer adds to libnbd: one way to connect (a unix socket and an
 * export name, or a URI; base:allocation if asked; TLS off, since blockd
 * speaks TLS nowhere yet; no URI that makes libnbd read local files or
 * reach vsock; a refusal told apart from a failure; a bound on the
 * handshake), requests that give up after a timeout (an aio call, then
 * nbd_poll() until it completes or the time is up) and libnbd's error
 * text.  Everything else is libnbd's API on the handle it returns.
 *
 * Threads: libnbd handles are thread-safe and keep their error text per
 * thread; these functions keep no state of their own.  A handle used with
 * the request helpers must carry one thread's requests at a time (each
 * polls the handle until its own command completes).
 */
#ifndef BLOCKD_COMMON_NBDCLIENT_H
#define BLOCKD_COMMON_NBDCLIENT_H

#include <libnbd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where to connect: socket_path with export_name, or uri. */
struct nbdclient_opts {
	const char *socket_path; /* a unix socket, or NULL */
	const char *export_name; /* with socket_path: NAME, NAME:ro, NAME@SNAP ("" the default) */
	const char *uri;         /* nbd:// or nbd+unix:// instead of socket_path, or NULL */
	bool want_block_status;  /* ask for the base:allocation meta context */
	int timeout_ms;          /* connecting and the handshake; -1: no limit */
};

/* The export as the server described it. */
struct nbdclient_info {
	uint64_t size_bytes;
	uint32_t max_request_bytes; /* the server's largest READ/WRITE; 0: it did not say */
	bool read_only;
	bool can_flush;
	bool can_zero;       /* WRITE_ZEROES */
	bool can_multi_conn; /* a FLUSH on one connection covers all of them */
	bool block_status;   /* base:allocation was asked for and agreed */
};

/*
 * Connects and completes the handshake.  Returns 0 with *out (the
 * caller's: nbdclient_close() or nbd_close() it) and *info, or -errno with
 * libnbd's or our reason in err (errlen bytes; err may be NULL):
 *   -ENOENT     the server has no such export
 *   -EPERM      the server refused the export (NBD_REP_ERR_POLICY: blockd
 *               when another host writes the volume)
 *   -ETIMEDOUT  no complete handshake within timeout_ms
 *   -EINVAL     opts, or the URI, were refused before connecting
 *   -ENOMEM
 *   -EIO        the server could not be reached, hung up, refused the
 *               export otherwise or broke the protocol
 * *out and *info are written only on success.  Thread-safe.
 */
int nbdclient_connect(const struct nbdclient_opts *opts, struct nbd_handle **out,
                      struct nbdclient_info *info, char *err, size_t errlen);

/*
 * Requests, each waiting at most timeout_ms (-1: no limit) for its reply.
 * Returns 0, or:
 *   -ETIMEDOUT  no reply in time
 *   -ENOTCONN   the connection broke (or could not be polled)
 *     After either of these the handle is unusable: close it before buf is
 *     freed or used again, since libnbd could still complete the command
 *     into it.
 *   any other -errno: the server's error for this command, or libnbd's
 *     refusal to send it (-EINVAL out of bounds, ...); the handle stays
 *     usable.
 * The text of the last failure is nbdclient_error()'s.  flags are
 * LIBNBD_CMD_FLAG_*.
 */
int nbdclient_pread(struct nbd_handle *h, void *buf, size_t len, uint64_t off, int timeout_ms);
int nbdclient_pwrite(struct nbd_handle *h, const void *buf, size_t len, uint64_t off,
                     int timeout_ms);
int nbdclient_zero(struct nbd_handle *h, uint64_t len, uint64_t off, uint32_t flags,
                   int timeout_ms);
int nbdclient_flush(struct nbd_handle *h, int timeout_ms);

/*
 * Says goodbye (NBD_CMD_DISC, as far as it can be sent without waiting)
 * and closes h (NULL is fine).  Never blocks on the server.
 */
void nbdclient_close(struct nbd_handle *h);

/* This thread's last libnbd error text ("unknown libnbd error" if none): libnbd owns it. */
const char *nbdclient_error(void);

#endif
