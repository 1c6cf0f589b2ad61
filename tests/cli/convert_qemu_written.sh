#!/bin/bash
# image convert of a qcow2 image written by qemu-io (writes, write -z,
# discard, a backing file) gives the bytes qemu-img convert gives.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 base.qcow2 8M
qio -c 'write -P 0x55 0 8M' base.qcow2 >/dev/null
qimg create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 top.qcow2 8M
qio -c 'write -P 0xaa 0 64k' \
	-c 'write -P 0xbb 100k 3k' \
	-c 'write -z 1M 256k' \
	-c 'discard 2M 64k' \
	-c 'write -P 0xcc 3M 1' \
	-c 'write -z 4M 4096' \
	-c 'write -P 0xdd 5M 512k' \
	-c 'write -z 5M 64k' \
	top.qcow2 >/dev/null

qimg convert -O raw top.qcow2 want.raw
blockctl image convert -O raw top.qcow2 got.raw
cmp want.raw got.raw || fail "raw output differs from qemu-img convert"

blockctl image convert top.qcow2 got.qcow2
qemu_check got.qcow2
qimg compare -q want.raw got.qcow2 || fail "qcow2 output differs from qemu-img convert"
qimg info --output=json got.qcow2 >info.json
[[ -z $(json_field info.json backing-filename) ]] || fail "the copy still has a backing file"
