#!/bin/bash
# Writes after a snapshot (by qemu-io, over, around and past the data the
# snapshot holds) leave the snapshot reading the old content.
. "$(dirname "$0")/lib.sh"
need qemu-io

blockctl image create --cluster-size 4K disk.qcow2 2M
qio -c 'write -P 1 0 256k' -c 'write -P 2 1M 6k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 before.raw
blockctl image snapshot create disk.qcow2 keep

# Partial-cluster overwrites, a zero write, a discard, fresh clusters.
qio -c 'write -P 9 1000 5000' -c 'write -z 64k 64k' -c 'discard 128k 8k' \
	-c 'write -P 10 1M 2k' -c 'write -P 11 1536k 100k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 after.raw
! cmp -s before.raw after.raw || fail "the writes changed nothing"
qemu_check disk.qcow2

blockctl image convert -l keep -O raw disk.qcow2 snap.raw
cmp before.raw snap.raw || fail "blockctl: the snapshot changed under later writes"
qimg convert -l snapshot.name=keep -O raw disk.qcow2 snap-qemu.raw
cmp before.raw snap-qemu.raw || fail "qemu: the snapshot changed under later writes"
qimg compare -q -F raw disk.qcow2 after.raw || fail "the active image lost a write"
