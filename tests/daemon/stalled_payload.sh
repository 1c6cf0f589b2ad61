#!/bin/bash
# Stalled payloads (issue 12, point 1): 32 connections over TCP from one
# client each send a 32 MiB WRITE header and 1 byte of its payload, then
# nothing: together the daemon's whole in-flight budget.  Meanwhile a
# client on the unix socket (another identity) writes 4 KiB blocks to
# another volume: its p99 latency stays under 1 s (times TEST_TIME_SCALE;
# before the fix every write of the victim waited as long as the attack
# lasted).  Every attacker connection is cut off once its payload has
# stalled for --payload-timeout (never sooner), and the log names each one:
# connection id, client, export and how much of the payload arrived.  See
# stalled_payload.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_python_nbd

PAYLOAD_TIMEOUT=$((1 * TEST_TIME_SCALE))
BOUND=$((1 * TEST_TIME_SCALE))

new_volume data attack 64M
new_volume data victim 64M
start_blockd "$TMP/data" --payload-timeout "$PAYLOAD_TIMEOUT"

rc=0
sys_python "$DAEMON_TEST_DIR/stalled_payload.py" "$BLOCKD_PORT" "$BLOCKD_SOCK" \
	"$PAYLOAD_TIMEOUT" "$BOUND" "$TEST_TIME_SCALE" >attack.out 2>&1 || rc=$?
cat attack.out
[[ $rc == 0 ]] || fail "stalled_payload.py exited $rc"

# One warning per attacker connection, naming it.
pattern="connection [0-9]+ from 127\.0\.0\.1, export attack: write at offset 0 stalled: "
pattern+="1 of 33554432 payload bytes arrived, none for [0-9]+ s; cutting the connection off"
stalled=$(grep -cE "$pattern" "$BLOCKD_LOG" || true)
[[ $stalled == 32 ]] || fail "$stalled of 32 stalled attacker connections logged"
ids=$(grep -oE "connection [0-9]+ from 127\.0\.0\.1, export attack: write at offset 0 stalled" \
	"$BLOCKD_LOG" | sort -u | wc -l)
[[ $ids == 32 ]] || fail "the stall warnings name $ids connections, not 32"
closed=$(grep -c "from 127\.0\.0\.1 closed (write payload stalled" "$BLOCKD_LOG" || true)
[[ $closed == 32 ]] || fail "$closed of 32 attacker connections logged as closed for the stall"
! grep -q "from local closed (write payload stalled" "$BLOCKD_LOG" || fail "the victim was cut off"

stop_blockd
qemu_check data/volumes/victim.qcow2
qemu_check data/volumes/attack.qcow2
echo ok
