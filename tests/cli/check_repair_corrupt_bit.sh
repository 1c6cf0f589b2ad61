#!/bin/bash
# An image marked corrupt (with a real corruption under it) opens for
# check --repair, is repaired, and comes out with the corrupt bit cleared,
# as qemu-img check -r all does; a plain writable open still refuses it.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 7 0 128k' disk.qcow2 >/dev/null
data=$(host_offset disk.qcow2 0)
qcow2_edit disk.qcow2 refcount "$data" 0
# Set the corrupt bit: incompatible features, byte 79, bit 1.
printf '\x02' | dd of=disk.qcow2 bs=1 seek=79 conv=notrunc status=none
qimg info --output=json disk.qcow2 | grep -q '"corrupt": true' || fail "corrupt bit not set"
expect_fail 1 'corrupt' image resize disk.qcow2 8M
qimg convert -O raw disk.qcow2 before.raw
rc=$(status blockctl image check --repair disk.qcow2)
[[ $rc == 0 ]] || { cat status.out status.err >&2; fail "check --repair exited $rc"; }
qimg info --output=json disk.qcow2 | grep -q '"corrupt": false' || fail "corrupt bit still set"
qemu_check disk.qcow2
qimg convert -O raw disk.qcow2 after.raw
cmp before.raw after.raw || fail "the repair changed the data"
