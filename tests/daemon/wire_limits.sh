#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Backpressure and early EOF on the wire:
# a client that never reads replies cannot make blockd buffer without
# bound, duplicate cookies are answered, and EOF with requests in flight,
# EOF inside a WRITE payload and requests after DISC leave it serving;
# option replies a client never reads stay bounded; and SIGTERM with such
# a client still connected ends the daemon cleanly (exit 0).
source "$(dirname "$0")/lib.sh"
need "$PYTHON"

new_volume "$TMP/d" vol 128M
start_blockd "$TMP/d"
sys_python "$DAEMON_TEST_DIR/wire_limits.py" "$BLOCKD_SOCK" vol "$BLOCKD_PID" ||
	fail "wire limits"
# The script sent SIGTERM with a client connected that reads nothing.
rc=0
wait "$BLOCKD_PID" || rc=$?
BLOCKD_PID=
[[ $rc == 0 ]] || fail "blockd exited with status $rc after SIGTERM with a stuck client"
grep -q "closed (server stopping" "$BLOCKD_LOG" ||
	fail "the stuck client was not cut off by the stop"
qemu_check "$TMP/d/volumes/vol.qcow2"
t qemu-io -f qcow2 -c 'read -P 0x01 0 4k' -c 'read -P 0x08 4k 4k' \
	"$TMP/d/volumes/vol.qcow2" >/dev/null || fail "written blocks missing from the image"
echo "PASS"
