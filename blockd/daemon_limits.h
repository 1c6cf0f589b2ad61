/* SPDX-License-Identifier: MIT */
/*
 * daemon_limits.h - the daemon's bounds, each with its reason.  The protocol's own
 * bounds (option and string lengths, payload size) are in proto_limits.h.
 */
#ifndef BLOCKD_DAEMON_LIMITS_H
#define BLOCKD_DAEMON_LIMITS_H

#include "proto.h"

/* ------------------------------------------------------------ threads */

/* Event loops (--threads): far above any CPU count we run on; bounds the worker table. */
#define MAX_THREADS 256u

/*
 * Pool threads per event loop, plus a few: jobs of one image run one at a
 * time, so this many volumes can have a flush or a cache miss in progress
 * at once while the rest wait their turn, round robin.
 */
#define POOL_THREADS_PER_LOOP 2u
#define POOL_THREADS_EXTRA    2u

/* ---------------------------------------------------------------- ring */

/* Submission queue entries per loop: one batch of a busy loop's requests. */
#define RING_ENTRIES 1024u
/*
 * Completion queue entries per loop, and the cap on operations in flight
 * on one ring: a loop never submits more than its completion queue holds,
 * so completions are never lost or left in the kernel's overflow list.
 */
#define RING_CQ_ENTRIES 16384u

/* ---------------------------------------------------------- connections */

/*
 * Connections per daemon.  Each costs a protocol machine (~20 KiB), a
 * receive buffer (RECV_BUFFER_BYTES) and up to CONN_MAX_INFLIGHT_BYTES of
 * requests; 1024 of them stay well inside memory while far above what the
 * hosts of one storage node open (a few per attached disk).
 */
#define MAX_CONNECTIONS 1024u

/*
 * Connections one client (clients.h: an IP address, a uid on the unix
 * socket) may hold at once, by default (--max-client-connections): far
 * above what the VMs of one host open (one per disk, a few with
 * multi-conn), and a quarter of MAX_CONNECTIONS, so that one client cannot
 * take every slot.
 */
#define DEFAULT_MAX_CLIENT_CONNECTIONS (MAX_CONNECTIONS / 4)

/* Longest client identity: an IPv6 address or "uid:N" today, a TLS identity later. */
#define CLIENT_KEY_MAX 256

/*
 * A client in the handshake that sends nothing for this long is cut off,
 * so that idle sockets cannot pile up.  It counts time spent waiting for
 * the client's next bytes, not the whole handshake: a client may list
 * thousands of exports at its own pace (libnbd 1.14 takes ~200 ms per
 * export over TCP).  One that dribbles a byte at a time holds its slot
 * longer, but the per-client connection cap bounds how many it can hold.
 * A shorter --idle-timeout applies here too.
 */
#define HANDSHAKE_TIMEOUT_SEC 30

/*
 * --idle-timeout default: a connection with nothing in flight that sends
 * nothing for this long is cut off.  Long, because an idle VM's NBD client
 * sends nothing at all (qemu has no NBD-level keepalive) and must not lose
 * its disk; dead hosts are found sooner by TCP keepalive (below).  0
 * disables it.
 */
#define DEFAULT_IDLE_TIMEOUT_SEC (24u * 3600u)
#define MAX_IDLE_TIMEOUT_SEC     (365u * 24u * 3600u)

/*
 * --payload-timeout default: a WRITE whose payload stops arriving for this
 * long cuts its connection off, giving back its buffer; a live TCP link
 * that moves nothing for half a minute has failed.  Its client's other
 * connections go on.
 */
#define DEFAULT_PAYLOAD_TIMEOUT_SEC 30u
#define MAX_PAYLOAD_TIMEOUT_SEC     3600u

/*
 * TCP keepalive on accepted connections: a host that died without closing
 * its connections (power, network) is noticed after
 * TCP_KEEPALIVE_IDLE_SEC + TCP_KEEPALIVE_COUNT * TCP_KEEPALIVE_INTERVAL_SEC,
 * 2 minutes, while a live idle VM's kernel answers the probes.
 */
#define TCP_KEEPALIVE_IDLE_SEC     60
#define TCP_KEEPALIVE_INTERVAL_SEC 15
#define TCP_KEEPALIVE_COUNT        4

/*
 * A connection whose replies have not moved for this long is cut off: a
 * client that stops reading would otherwise hold its requests' memory (and
 * the daemon-wide budget) for ever.
 */
#define SEND_STALL_TIMEOUT_SEC 60

/* SIGTERM: connections still busy after this long are cut off so that the daemon exits. */
#define STOP_GRACE_SEC 10

/*
 * At start, how long a unix socket that still accepts, a TCP port still
 * listening or a volume file still locked may take to go away before it
 * counts as another process's: the io_uring of a daemon killed a moment
 * ago holds its files until the kernel tears the ring down, within
 * milliseconds.
 */
#define STALE_WAIT_MS  2000
#define STALE_RETRY_MS 50

/* Pending connections on a listening socket (listen(2) backlog). */
#define LISTEN_BACKLOG 128

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
 * The share of those one client may hold (its connections together): a
 * client over it (payloads that stalled, a host that sends faster than its
 * disks take) pauses its own connections and leaves the rest of the budget
 * to the others.  A quarter: 256 MiB in flight is more than a host needs
 * to keep its disks busy.  Four clients together can still take the whole
 * budget; payloads that stall are cut off after --payload-timeout.
 */
#define CLIENT_MAX_INFLIGHT       (DAEMON_MAX_INFLIGHT / 4)
#define CLIENT_MAX_INFLIGHT_BYTES (DAEMON_MAX_INFLIGHT_BYTES / 4)

/*
 * Request slots are kept per connection once made and reused, so a busy
 * connection allocates nothing per request.  A slot keeps its data buffer
 * too if it is at most SLOT_KEEP_BUFFER_BYTES (the sizes a random-I/O
 * client repeats) and the connection keeps at most CONN_KEPT_BUFFER_BYTES
 * of such buffers: idle connections hold little.
 */
#define SLOT_KEEP_BUFFER_BYTES (128u << 10)
#define CONN_KEPT_BUFFER_BYTES (4u << 20)

/*
 * Pieces of one READ reply (hole and data runs): bounds the reply's chunk
 * headers; a more fragmented range is sent as data.
 */
#define REQUEST_MAX_SEGMENTS 64u

/* Extents in one BLOCK_STATUS reply; clients ask again for the rest. */
#define BLOCK_STATUS_MAX_EXTENTS 1024u

/* Data-path errors logged per volume: one line a second, with a count of those left out. */
#define ERROR_LOG_INTERVAL_SEC 1

/*
 * The preferred block size exports advertise: the page size, the smallest
 * write that never makes the page cache read around it.
 */
#define EXPORT_PREFERRED_BLOCK 4096u

/*
 * Request buffers (up to 32 MiB each) come and go all the time: glibc keeps
 * blocks below HEAP_MMAP_THRESHOLD_BYTES on its heap, reused, instead of
 * fresh mmap()s that fault in and zero every page again, and gives memory
 * back to the system only above HEAP_TRIM_THRESHOLD_BYTES of free heap.
 * The in-flight limits bound what the heap holds.
 */
#define HEAP_MMAP_THRESHOLD_BYTES (PROTO_MAX_PAYLOAD + (1u << 20))
#define HEAP_TRIM_THRESHOLD_BYTES (256u << 20)

/* --cache-size: below 1 MiB of L2 tables a volume thrashes on any workload. */
#define MIN_CACHE_BYTES (1u << 20)

/* ------------------------------------------------------------- volumes */

/*
 * How long a volume nobody uses stays open: reconnecting clients (a VM's
 * reboot, a tool that connects per command) find it open, while thousands
 * of idle volumes hold no descriptor, lock or metadata cache.
 */
#define VOLUME_IDLE_CLOSE_SEC 10

/*
 * L2 cache of the open that reads a volume at start (its header and
 * snapshot table, or a repair's walk): the served image gets --cache-size
 * when it is opened for use; thousands of full caches made and freed at
 * start would only cost time.
 */
#define STORE_SCAN_CACHE_BYTES (256u << 10)

/*
 * POST .../recover: how long the volume's connections (cut within a loop's
 * tick, a second) may take to go before the call gives up.
 */
#define RECOVER_WAIT_MS 10000

/* Largest volume: 1 PiB, far past any disk and inside the L1 table cap of 64 KiB clusters. */
#define MANAGE_MAX_VOLUME_BYTES (1ull << 50)

/* A clone's base copy moves this much at a time through one buffer. */
#define MANAGE_COPY_CHUNK_BYTES (4u << 20)

/*
 * L2 cache of the private images that read a whole snapshot once (a base
 * copy, counting its bytes): sequential reads reuse a table a few times,
 * so a small cache does; it bounds the memory of such calls.
 */
#define MANAGE_COPY_CACHE_BYTES  (1u << 20)
#define MANAGE_COUNT_CACHE_BYTES (256u << 10)

/* ---------------------------------------------------------- control API */

/* Request bodies are small JSON objects; anything larger is refused (413). */
#define CONTROL_MAX_BODY_BYTES (64u << 10)

/* Control connections at once, and how long an idle one stays open. */
#define CONTROL_MAX_CONNECTIONS  64u
#define CONTROL_IDLE_TIMEOUT_SEC 30u

/*
 * Threads serving the control API: reads (listings, metrics) go on while a
 * change (a clone's copy) takes long; changes themselves run one at a time.
 */
#define CONTROL_THREADS 4u

#endif
