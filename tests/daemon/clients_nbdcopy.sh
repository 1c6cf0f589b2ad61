#!/bin/bash
# nbdcopy through blockd: 64 MiB of random data copied into an export and
# back out is unchanged (TCP, unix socket, and with four connections at
# once, which blockd's multi-conn allows); a NAME@SNAP export reads as the
# volume was when the snapshot was taken, however the volume changed
# since; the volume files are clean afterwards.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need nbdcopy qemu-io dd cmp

# connections: how many connections blockd has logged as attached to an export so far.
connections() {
	grep -c 'connection [0-9]* from .*: export ' "$BLOCKD_LOG" || true
}

new_volume data vol 64M
new_volume data multi 64M
new_volume data snapv 8M
dd if=/dev/urandom of=random.raw bs=1M count=64 status=none
# Random data with a hole in the middle.
truncate -s 64M sparse.raw
dd if=/dev/urandom of=sparse.raw bs=1M count=20 status=none conv=notrunc
dd if=/dev/urandom of=sparse.raw bs=1M seek=40 count=24 status=none conv=notrunc
# The snapshot holds snap.raw; the volume is then overwritten in part
# before blockd starts, and in full while it runs.
dd if=/dev/urandom of=snap.raw bs=1M count=8 status=none
t qemu-img convert -n -f raw -O qcow2 snap.raw data/volumes/snapv.qcow2
blockctl image snapshot create data/volumes/snapv.qcow2 s1 >/dev/null
t qemu-io -f qcow2 -c 'write -P 0x5a 1M 2M' data/volumes/snapv.qcow2 >/dev/null

start_blockd "$TMP/data"

t nbdcopy random.raw "$(tcp_uri vol)" || fail "nbdcopy random.raw -> $(tcp_uri vol)"
t nbdcopy "$(tcp_uri vol)" out-tcp.raw || fail "nbdcopy $(tcp_uri vol) -> out-tcp.raw"
cmp random.raw out-tcp.raw || fail "64 MiB copied in and out over TCP differ"
t nbdcopy "$(unix_uri vol)" out-unix.raw || fail "nbdcopy $(unix_uri vol) -> out-unix.raw"
cmp random.raw out-unix.raw || fail "64 MiB read back over the unix socket differ"

# Into the export over the socket, with the hole: the old data there must
# be gone (nbdcopy zeroes it), and a flush at the end.
t nbdcopy --flush sparse.raw "$(unix_uri vol)" || fail "nbdcopy sparse.raw -> $(unix_uri vol)"
t nbdcopy "$(tcp_uri vol)" out-sparse.raw || fail "nbdcopy vol -> out-sparse.raw"
cmp sparse.raw out-sparse.raw || fail "sparse copy read back differs"

# Four connections each way.
before=$(connections)
t nbdcopy --connections=4 --threads=4 --requests=16 random.raw "$(tcp_uri multi)" ||
	fail "nbdcopy --connections=4 random.raw -> $(tcp_uri multi)"
t nbdcopy --connections=4 --threads=4 --requests=16 "$(tcp_uri multi)" out-multi.raw ||
	fail "nbdcopy --connections=4 $(tcp_uri multi) -> out-multi.raw"
cmp random.raw out-multi.raw || fail "copy with 4 connections differs"
after=$(connections)
((after - before >= 8)) ||
	fail "nbdcopy --connections=4 twice opened $((after - before)) connections, not 8 (no multi-conn?)"

# The snapshot, before and after the volume is overwritten over NBD.
t nbdcopy "$(tcp_uri snapv@s1)" snap-out1.raw || fail "nbdcopy $(tcp_uri snapv@s1)"
cmp snap.raw snap-out1.raw || fail "snapv@s1 is not the content at snapshot time"
t nbdcopy "$(tcp_uri snapv)" vol-now.raw || fail "nbdcopy $(tcp_uri snapv)"
cmp -s snap.raw vol-now.raw && fail "snapv equals its snapshot although it was overwritten"
out=$(t qemu-io -f raw -c 'read -P 0x5a 1M 2M' "$(tcp_uri snapv)" 2>&1) || true
if ! grep -q 'read 2097152/2097152' <<<"$out" || grep -q 'verification failed' <<<"$out"; then
	fail "snapv lacks the write made after the snapshot: $out"
fi
t nbdcopy random.raw "$(unix_uri snapv)" 2>/dev/null &&
	fail "nbdcopy of 64 MiB into an 8 MiB export succeeded"
head -c 8M random.raw >random8.raw
t nbdcopy random8.raw "$(unix_uri snapv)" || fail "nbdcopy random8.raw -> snapv"
t nbdcopy --connections=4 --threads=4 "$(unix_uri snapv@s1)" snap-out2.raw ||
	fail "nbdcopy --connections=4 $(unix_uri snapv@s1)"
cmp snap.raw snap-out2.raw || fail "snapv@s1 changed when the volume was overwritten"
t nbdcopy "$(unix_uri snapv)" vol-now.raw || fail "nbdcopy $(unix_uri snapv)"
cmp random8.raw vol-now.raw || fail "snapv does not hold what was copied into it"

stop_blockd
for v in vol multi snapv; do
	qemu_check "data/volumes/$v.qcow2"
done
t qemu-img compare -f qcow2 -F raw data/volumes/multi.qcow2 random.raw >/dev/null ||
	fail "multi.qcow2 differs from random.raw after shutdown"
t qemu-img compare -f qcow2 -F raw data/volumes/vol.qcow2 sparse.raw >/dev/null ||
	fail "vol.qcow2 differs from sparse.raw after shutdown"
t qemu-img convert -f qcow2 -O raw -l snapshot.name=s1 data/volumes/snapv.qcow2 snap-file.raw
cmp snap.raw snap-file.raw || fail "snapshot s1 in snapv.qcow2 changed"
