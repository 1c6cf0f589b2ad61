#!/bin/bash
# SPDX-License-Identifier: MIT
# client_peer.sh - the proto client machine (proto_client_peer, $1) against
# real NBD servers on unix sockets: qemu-nbd (read-write, read-only, export
# names) and nbdkit (file, memory).  Every server runs under `timeout` and is
# stopped by the trap; writes are judged by cmp / qemu-img compare of the
# server's file against the image the tool expects (a failure shows the end
# of every server's log).  Skips (77) when qemu-nbd or nbdkit is missing.
set -euo pipefail

PEER=$(realpath "${1:?usage: $0 PATH-TO-proto_client_peer}")
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
source "$(dirname "$0")/../lib.sh"
need qemu-nbd nbdkit
scratch_dir proto-client-peer

SERVER_PID=
# stop_server: SIGTERM to the server, which then exits (also on exit).
stop_server() {
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}
at_exit stop_server

# start_server NAME SOCKET COMMAND...: runs COMMAND in the background (at most
# 60 s), its output in NAME.log, and waits, bounded, for SOCKET to appear.
start_server() {
	local name=$1 sock=$2
	shift 2
	rm -f "$sock"
	FAIL_LOGS+=("$TMP/$name.log")
	timeout 60 "$@" >"$name.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 100); do
		[[ -S $sock ]] && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || fail "$name: server exited before listening"
		sleep 0.1
	done
	fail "$name: $sock did not appear within 10 s"
}

# peer NAME ARGS...: runs the tool (at most STEP_TIMEOUT), its output in NAME.out.
peer() {
	local name=$1
	shift
	t "$PEER" "$@" >"$name.out" 2>&1
}

same_image() {
	cmp "$1" "$2" || fail "$1 and $2 differ"
	if command -v qemu-img >/dev/null; then
		qemu-img compare -q -f raw -F raw "$1" "$2" || fail "qemu-img compare: $1 != $2"
	fi
}

# A random image (32 MiB) and one whose size is not a multiple of 1 MiB.
head -c $((32 << 20)) /dev/urandom >disk.img
cp disk.img disk.orig
head -c $(((32 << 20) + 7680)) /dev/urandom >odd.img

# 1. qemu-nbd read-write: read, write (FUA, FLUSH, TRIM), read back, and the
#    file ends up as the tool expects.  qemu-nbd exits after its one client.
start_server qemu-rw "$TMP/q.sock" qemu-nbd --socket="$TMP/q.sock" -f raw disk.img
peer qemu-rw "$TMP/q.sock" "" disk.img --write --expect=disk.expect ||
	fail "qemu-nbd read-write: $(cat qemu-rw.out)"
grep -q '^ok: ' qemu-rw.out || fail "qemu-nbd read-write: $(cat qemu-rw.out)"
stop_server
same_image disk.img disk.expect
cmp -s disk.img disk.orig && fail "qemu-nbd read-write: nothing was written"

# 2. Read-only exports: READ_ONLY advertised, a WRITE is refused and the
#    file is unchanged.  nbdkit answers EPERM as the spec says; qemu-nbd 7.2
#    answers EINVAL to every request it refuses (nbd_trip() sends -EINVAL
#    for any nbd_co_receive_request() error), so EPERM or EINVAL there.
cp disk.img ro.img
start_server qemu-ro "$TMP/q.sock" qemu-nbd --socket="$TMP/q.sock" -f raw -r ro.img
peer qemu-ro "$TMP/q.sock" "" ro.img --write || fail "qemu-nbd read-only: $(cat qemu-ro.out)"
grep -Eq '^ok: .* read-only .* write-refused=(EPERM|EINVAL)$' qemu-ro.out ||
	fail "qemu-nbd -r: $(cat qemu-ro.out)"
stop_server
cmp ro.img disk.img || fail "qemu-nbd -r: read-only image changed"

start_server nbdkit-ro "$TMP/n.sock" nbdkit --foreground --exit-with-parent --readonly \
	--unix "$TMP/n.sock" file ro.img
peer nbdkit-ro "$TMP/n.sock" "" ro.img --write || fail "nbdkit read-only: $(cat nbdkit-ro.out)"
grep -Eq '^ok: .* read-only .* write-refused=EPERM$' nbdkit-ro.out ||
	fail "nbdkit -r: $(cat nbdkit-ro.out)"
stop_server
cmp ro.img disk.img || fail "nbdkit -r: read-only image changed"

# 3. qemu-nbd with export name x: asking for y fails with ENOENT (the
#    server's ERR_UNKNOWN), asking for x works on the same server.
start_server qemu-name "$TMP/q.sock" qemu-nbd --socket="$TMP/q.sock" -f raw -r --persistent \
	--export-name=x odd.img
if peer qemu-wrong "$TMP/q.sock" y odd.img; then
	fail "export y on a server with only x: $(cat qemu-wrong.out)"
fi
grep -q 'handshake failed: ENOENT' qemu-wrong.out || fail "not ENOENT: $(cat qemu-wrong.out)"
peer qemu-right "$TMP/q.sock" x odd.img || fail "export x: $(cat qemu-right.out)"
stop_server

# 4. nbdkit file plugin (exact, unaligned size) read-write.
cp odd.img odd.orig
start_server nbdkit-file "$TMP/n.sock" nbdkit --foreground --exit-with-parent --unix "$TMP/n.sock" \
	file odd.img
peer nbdkit-file "$TMP/n.sock" "" odd.img --write --expect=odd.expect ||
	fail "nbdkit file: $(cat nbdkit-file.out)"
stop_server
same_image odd.img odd.expect
cmp -s odd.img odd.orig && fail "nbdkit file: nothing was written"

# 5. nbdkit memory plugin: starts as zeros, read back in the tool.
truncate -s 32M zero.img
start_server nbdkit-memory "$TMP/n.sock" nbdkit --foreground --exit-with-parent --unix "$TMP/n.sock" \
	memory 32M
peer nbdkit-memory "$TMP/n.sock" "" zero.img --write || fail "nbdkit memory: $(cat nbdkit-memory.out)"
stop_server

cat qemu-rw.out qemu-ro.out nbdkit-ro.out qemu-wrong.out qemu-right.out nbdkit-file.out nbdkit-memory.out
echo "PASS"
