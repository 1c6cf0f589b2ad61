#!/bin/bash
# SIGTERM with a client still connected and its writes never flushed
# (qemu-io -t unsafe sends no FLUSH; a libnbd client keeps its connection
# open through the signal): blockd exits 0 within seconds, and the qcow2
# files hold every acknowledged write, pass qemu-img check and have the
# dirty bit clear.  SIGHUP picks up a volume file created while blockd
# runs, without disturbing an open connection.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-io "$PYTHON" od
need_python_nbd

# exports URI: the sorted export names nbdinfo --list gives, one line.
exports() {
	t nbdinfo --list --json "$1" | sys_python -c 'import json, sys
print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))'
}

# not_dirty IMAGE: qemu-img info says dirty-flag false, and the header's
# incompatible-features dirty bit is clear.
not_dirty() {
	local flag
	flag=$(t qemu-img info --output=json "$1" | sys_python -c 'import json, sys
print(json.load(sys.stdin).get("dirty-flag"))')
	[[ $flag == False ]] || fail "$1: qemu-img info dirty-flag is '$flag'"
	[[ $(dirty_bit "$1") == 0 ]] || fail "$1: dirty bit set in the header"
}

new_volume data vol 16M
new_volume data other 4M
start_blockd "$TMP/data"
[[ $(exports "$(tcp_uri "")") == "other vol" ]] || fail "exports at start: $(exports "$(tcp_uri "")")"

# A client that writes, waits for holder.go, writes again after SIGHUP,
# then keeps its connection open, unflushed, until the server closes it.
cat >holder.py <<'EOF'
import os, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x71" * 65536, 0)
h.pwrite(b"\x72" * 4096, 3 * 2**20 + 100)
open("holder.ready", "w").close()
while not os.path.exists("holder.go"):
    time.sleep(0.05)
h.pwrite(b"\x73" * 65536, 8 * 2**20)
if h.pread(65536, 0) != b"\x71" * 65536:
    sys.exit("holder: first write not read back after SIGHUP")
open("holder.wrote", "w").close()
deadline = time.time() + 40
while time.time() < deadline and not (h.aio_is_dead() or h.aio_is_closed()):
    try:
        h.poll(100)
    except nbd.Error:
        break
print("holder: server closed the connection" if time.time() < deadline else "holder: timed out")
EOF
"$PYTHON" holder.py "$(tcp_uri vol)" >holder.out 2>&1 &
holder=$!
wait_until 20 "timed out waiting for holder.ready" test -e holder.ready

# SIGHUP: a volume made while blockd runs becomes an export.
new_volume data late 2M
t qemu-io -f qcow2 -c 'write -P 0x81 0 64k' data/volumes/late.qcow2 >/dev/null
kill -HUP "$BLOCKD_PID"
for ((i = 0; i < 100; i++)); do
	[[ $(exports "$(tcp_uri "")") == "late other vol" ]] && break
	sleep 0.1
done
[[ $(exports "$(tcp_uri "")") == "late other vol" ]] ||
	fail "after SIGHUP the exports are: $(exports "$(tcp_uri "")")"
kill -0 "$BLOCKD_PID" || fail "blockd died on SIGHUP"
size=$(t nbdinfo --size "$(unix_uri late)") || fail "nbdinfo --size $(unix_uri late)"
[[ $size == 2097152 ]] || fail "late: size $size"
touch holder.go
wait_until 20 "timed out waiting for holder.wrote" test -e holder.wrote

# Unflushed writes from qemu-io (cache=unsafe: no FLUSH is ever sent).
out=$(t qemu-io -t unsafe -f raw -c 'write -P 0x91 1M 1M' -c 'write -P 0x92 12345 1000' \
	-c 'write -z 2M 64k' "$(tcp_uri vol)" 2>&1) || fail "qemu-io on vol: $out"
out=$(t qemu-io -t unsafe -f raw -c 'write -P 0x82 1M 64k' "$(unix_uri late)" 2>&1) ||
	fail "qemu-io on late: $out"
out=$(t qemu-io -t unsafe -f raw -c 'write -P 0xa1 0 4M' "$(unix_uri other)" 2>&1) ||
	fail "qemu-io on other: $out"

# SIGTERM while the holder is still connected: exit 0 within 20 s.
pid=$BLOCKD_PID
(
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || exit 0
		sleep 0.1
	done
	kill -KILL "$pid"
) >/dev/null 2>&1 &
watchdog=$!
stop_blockd
wait "$watchdog" || true
wait "$holder" || fail "holder client: $(cat holder.out)"
grep -q 'server closed' holder.out || fail "holder: $(cat holder.out)"

qio_cmds qcow2 data/volumes/vol.qcow2 'read -P 0x71 0 12345' 'read -P 0x92 12345 1000' \
	'read -P 0x71 13345 52191' 'read -P 0 64k 960k' 'read -P 0x91 1M 1M' \
	'read -P 0 2M 1M' 'read -P 0 3M 100' 'read -P 0x72 3145828 4096' \
	'read -P 0 3149924 5238684' 'read -P 0x73 8M 64k' 'read -P 0 8256k 7M'
qio_cmds qcow2 data/volumes/late.qcow2 'read -P 0x81 0 64k' 'read -P 0x82 1M 64k' 'read -P 0 1088k 960k'
qio_cmds qcow2 data/volumes/other.qcow2 'read -P 0xa1 0 4M'
for v in vol late other; do
	qemu_check "data/volumes/$v.qcow2"
	not_dirty "data/volumes/$v.qcow2"
done
