#!/bin/bash
# image convert raw -> qcow2 -> raw gives back the same bytes; qemu-img
# compare agrees and checks the qcow2 clean.
. "$(dirname "$0")/lib.sh"

# Data, a hole, data not aligned to anything, a zero-filled block, a tail.
truncate -s $((24 << 20)) src.raw
head -c $((3 << 20)) /dev/urandom | dd of=src.raw conv=notrunc status=none
head -c 12345 /dev/urandom | dd of=src.raw bs=1 seek=$((9 << 20 | 777)) conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=64k seek=200 count=4 conv=notrunc status=none
head -c 1000 /dev/urandom | dd of=src.raw bs=1 seek=$(((24 << 20) - 1000)) conv=notrunc status=none

blockctl image convert -f raw -O qcow2 src.raw mid.qcow2
qemu_check mid.qcow2
qimg compare -q -f raw -F qcow2 src.raw mid.qcow2 || fail "qemu-img compare raw vs qcow2"
blockctl image convert -O raw mid.qcow2 back.raw
cmp src.raw back.raw || fail "round trip changed the bytes"
[[ $(stat -c %s back.raw) == $((24 << 20)) ]] || fail "raw size"

# Probing: no -f, a qcow2 source is read as qcow2; -O defaults to qcow2.
blockctl image convert mid.qcow2 again.qcow2
qemu_check again.qcow2
qimg compare -q mid.qcow2 again.qcow2 || fail "qcow2 -> qcow2"
[[ $(qimg info --output=json again.qcow2 | grep -c '"format": "qcow2"') -ge 1 ]] || fail "default -O"
