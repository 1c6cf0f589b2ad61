#!/bin/bash
# SPDX-License-Identifier: MIT
# A volume left dirty by kill -9 is repaired at the next start, and the log
# says so in one line naming the file and what the repair fixed: as many
# leaked clusters and corruptions as qemu-img check finds in a copy of the
# crashed image (a leak and a corruption added by hand on top of what the
# crash left make sure there is something to find).  A volume closed cleanly logs no repair.
source "$(dirname "$0")/lib.sh"
need_python_nbd

DIR=$TMP/data
new_volume "$DIR" lazy 64M --lazy-refcounts
new_volume "$DIR" clean 16M
start_blockd "$DIR"

# Writes to fresh clusters, a flush (lazy refcounts: the dirty bit goes on
# disk with the metadata), more writes never flushed.
sys_python - "$(unix_uri lazy)" <<'PY'
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(48):
    h.pwrite(bytes([i + 1]) * 4096, (i * 17 % 1000) * 65536)
h.flush()
for i in range(48, 64):
    h.pwrite(bytes([i + 1]) * 4096, (i * 17 % 1000) * 65536)
PY
kill_blockd
[[ $(dirty_bit "$DIR/volumes/lazy.qcow2") == 1 ]] || fail "the crash left lazy with no dirty bit"

# Damage added on top of what the crash left, so that there is something to
# find: the header cluster's refcount becomes 2 (a leak) and that of the
# data cluster at guest offset 0 becomes 0 (a corruption).
data=$(t qemu-img map --output=json -f qcow2 "$DIR/volumes/lazy.qcow2" |
	json '[e["offset"] for e in d if e["start"] == 0][0]' /dev/stdin)
sys_python - "$DIR/volumes/lazy.qcow2" "$data" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(48)
    table = struct.unpack(">Q", f.read(8))[0]
    f.seek(table)
    block = struct.unpack(">Q", f.read(8))[0]  # 64 KiB clusters, 16-bit refcounts
    f.seek(block)
    f.write(struct.pack(">H", 2))
    f.seek(block + 2 * (int(sys.argv[2]) >> 16))
    f.write(struct.pack(">H", 0))
PY
cp "$DIR/volumes/lazy.qcow2" crashed.qcow2
rc=0
t qemu-img check crashed.qcow2 >check.out 2>&1 || rc=$?
[[ $rc == 2 || $rc == 3 ]] || { cat check.out >&2; fail "qemu-img check of the crashed image exited $rc"; }
leaks=$(sed -n 's/^\([0-9]*\) leaked clusters\? w.*found.*/\1/p' check.out)
errors=$(sed -n 's/^\([0-9]*\) errors\? w.*found.*/\1/p' check.out)
((${leaks:-0} >= 1 && ${errors:-0} >= 1)) ||
	{ cat check.out >&2; fail "qemu-img check does not see the damage"; }

start_blockd "$DIR"
line=$(grep 'lazy.qcow2: not closed cleanly' "$BLOCKD_LOG") ||
	fail "the repair of lazy is not logged"
[[ $(wc -l <<<"$line") == 1 ]] || fail "more than one line for the repair of lazy: $line"
want="repaired at open: ${leaks:-0} leaked cluster(s) freed, ${errors:-0} corruption(s) fixed, refcounts rebuilt"
[[ $line == *"$want" ]] || fail "the repair line says '$line', qemu-img check found: $want"
! grep -q 'clean.qcow2: not closed cleanly' "$BLOCKD_LOG" || fail "clean was repaired"
stop_blockd
qemu_check "$DIR/volumes/lazy.qcow2"
echo ok
