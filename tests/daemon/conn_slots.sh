#!/bin/bash
# Connection slots (issue 12, points 6 and 8d), see conn_slots.py.
# - With --max-client-connections 4, a client (127.0.0.2) holds 4
#   connections and its next 20 are closed before the greeting, with a
#   warning naming it, at most one a second; other clients (127.0.0.1, the
#   unix socket) still connect and are served.
# - With --idle-timeout, a connection with nothing in flight that sends
#   nothing is cut off (and logged), one with a request in flight is not.
# - nbdinfo --list over TCP lists 50 exports: libnbd 1.14 takes ~200 ms
#   per export there, so the handshake lasts ~10 s, longer than the
#   handshake limit (here --idle-timeout, shorter than the 30 s default),
#   which must count only the time the client leaves the server waiting.
#   It runs in the background meanwhile.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_python_nbd

IDLE=$((2 * TEST_TIME_SCALE))

# 50 empty volumes: one made, copied (qemu-img takes ~0.1 s to start).
mkdir -p idle/volumes
t qemu-img create -q -f qcow2 empty.qcow2 1M
for i in $(seq 1 50); do
	cp empty.qcow2 "idle/volumes/v$i.qcow2"
done
new_volume list vol 8M
new_volume list hog 8M
new_volume idle vol 8M

# Daemon 1: the slot cap.
start_blockd "$TMP/list" --max-client-connections 4
LIST_PORT=$BLOCKD_PORT LIST_SOCK=$BLOCKD_SOCK LIST_LOG=$BLOCKD_LOG

sys_python "$DAEMON_TEST_DIR/conn_slots.py" slots "$LIST_PORT" "$LIST_SOCK" 4 \
	"$TEST_TIME_SCALE" >slots.out || fail "the slot cap (see above)"
cat slots.out
grep -q "refusing a connection: client 127\.0\.0\.2 has as many connections as --max-client-connections allows" \
	"$LIST_LOG" || fail "no warning names the client refused"
refused=$(grep -c "refusing a connection" "$LIST_LOG" || true)
seconds=$(sed -n 's/^seconds //p' slots.out)
((refused <= seconds + 1)) || fail "$refused warnings in $seconds s: not rate-limited"
stop_blockd

# Daemon 2: the idle timeout, and the long listing.
start_blockd "$TMP/idle" --idle-timeout "$IDLE" --payload-timeout 600
t nbdinfo --list "nbd://127.0.0.1:$BLOCKD_PORT/" >list.txt 2>list.err &
NBDINFO_PID=$!
sys_python "$DAEMON_TEST_DIR/conn_slots.py" idle "$BLOCKD_PORT" "$IDLE" "$TEST_TIME_SCALE" ||
	fail "the idle timeout (see above)"
idle=$(grep -c "closed (idle for longer than --idle-timeout" "$BLOCKD_LOG" || true)
[[ $idle == 1 ]] || fail "$idle connections closed as idle, wanted 1"
wait "$NBDINFO_PID" || fail "nbdinfo --list over TCP failed: $(tail -3 list.err)"
exports=$(grep -c '^export="' list.txt || true)
((exports == 51)) || fail "nbdinfo --list over TCP listed $exports exports of 51"
! grep -q "handshake timed out" "$BLOCKD_LOG" || fail "a handshake timed out"
stop_blockd
echo ok
