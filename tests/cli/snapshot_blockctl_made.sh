#!/bin/bash
# Snapshots blockctl creates are qemu's to use: qemu-img snapshot -l lists
# them, qemu-img convert -l reads each byte-identical to the image when it
# was taken, qemu-img snapshot -a reverts to one and -d deletes it, and
# qemu-img check stays clean after every step.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 8M
qio -c 'write -P 1 0 1M' -c 'write -P 2 3M 64k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 first.raw
blockctl image snapshot create disk.qcow2 first
qemu_check disk.qcow2

qio -c 'write -P 3 512k 1M' -c 'write -z 3M 64k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 second.raw
blockctl image snapshot create disk.qcow2 'second one'
qemu_check disk.qcow2
qio -c 'write -P 4 0 8M' disk.qcow2 >/dev/null

qimg snapshot -l disk.qcow2 >list.txt
grep -qE '^1 +first ' list.txt || { cat list.txt >&2; fail "qemu-img does not list 'first'"; }
grep -qE '^2 +second one ' list.txt || { cat list.txt >&2; fail "qemu-img does not list 'second one'"; }

qimg convert -l snapshot.name=first -O raw disk.qcow2 got-first.raw
cmp first.raw got-first.raw || fail "snapshot 'first' reads differently in qemu"
qimg convert -l snapshot.name='second one' -O raw disk.qcow2 got-second.raw
cmp second.raw got-second.raw || fail "snapshot 'second one' reads differently in qemu"

qimg snapshot -a first disk.qcow2
qemu_check disk.qcow2
qimg compare -q -F raw disk.qcow2 first.raw || fail "qemu-img snapshot -a first"

qimg snapshot -d first disk.qcow2
qemu_check disk.qcow2
qimg snapshot -l disk.qcow2 >list.txt
! grep -q ' first ' list.txt || fail "qemu-img snapshot -d left 'first'"
qimg snapshot -a 'second one' disk.qcow2
qemu_check disk.qcow2
qimg compare -q -F raw disk.qcow2 second.raw || fail "qemu-img snapshot -a 'second one'"
qimg snapshot -d 'second one' disk.qcow2
qemu_check disk.qcow2
[[ -z $(qimg snapshot -l disk.qcow2) ]] || fail "snapshots left after deleting both"
