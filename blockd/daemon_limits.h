/* SPDX-License-Identifier: MIT */
/*
 * daemon_limits.h - the daemon's bounds, each with its reason.  The protocol's own
 * bounds (option and string lengths, payload size) are in proto_limits.h.
 */
#ifndef BLOCKD_DAEMON_LIMITS_H
#define BLOCKD_DAEMON_LIMITS_H

/*
 * Connections per daemon.  Each costs a protocol machine (~20 KiB), a
 * receive buffer (RECV_BUFFER_BYTES) and up to CONN_MAX_INFLIGHT_BYTES of
 * requests; 1024 of them stay well inside memory while far above what the
 * hosts of one storage node open (a few per attached disk).
 */
#define MAX_CONNECTIONS 1024u

/* A client that has not finished the handshake by then is cut off, so idle sockets cannot pile up.
 */
#define HANDSHAKE_TIMEOUT_SEC 30

/*
 * A connection whose replies have not moved for this long is cut off: a
 * client that stops reading would otherwise hold its requests' memory (and
 * the daemon-wide budget) for ever.
 */
#define SEND_STALL_TIMEOUT_SEC 60

/* SIGTERM: connections still busy after this long are cut off so that the daemon exits. */
#define STOP_GRACE_SEC 10

/*
 * At start, how long a unix socket that still accepts may take to go away
 * before it counts as another server's: a killed daemon's rings release it
 * within milliseconds.
 */
#define UNIX_STALE_WAIT_MS 2000

/*
 * Reply bytes the daemon makes up itself (option replies, error and empty
 * replies) queued per connection before it stops reading: a client that
 * sends cheap requests and reads nothing cannot grow the queue further.
 */
#define CONN_MAX_QUEUED_REPLY_BYTES (1u << 20)

/* Receive buffer per connection: many 4 KiB writes per recv, small next to a request payload. */
#define RECV_BUFFER_BYTES (256u << 10)

/*
 * Requests in flight per connection (received and not yet answered).
 * Above any client's queue depth (qemu uses 16, libnbd 64); beyond it we
 * stop reading the socket, which is the backpressure.
 */
#define CONN_MAX_INFLIGHT 256u
/* Bytes of payload held per connection: two maximum payloads. */
#define CONN_MAX_INFLIGHT_BYTES (64ull << 20)

/* The same, for the whole daemon: bounds memory whatever the number of connections. */
#define DAEMON_MAX_INFLIGHT       8192u
#define DAEMON_MAX_INFLIGHT_BYTES (1ull << 30)

/*
 * Pieces of one READ reply (hole and data runs): bounds the reply's chunk
 * headers; a more fragmented range is sent as data.
 */
#define REQUEST_MAX_SEGMENTS 64u

/* Extents in one BLOCK_STATUS reply; clients ask again for the rest. */
#define BLOCK_STATUS_MAX_EXTENTS 1024u

#endif
