#!/bin/bash
# image convert -l SNAPSHOT copies the source as it was when the snapshot
# was taken (named by name or by id), at the snapshot's size, to raw,
# qcow2 or compressed qcow2, and leaves the source alone.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 1 0 1M' -c 'write -P 2 3M 4k' disk.qcow2 >/dev/null
qimg snapshot -c small disk.qcow2
qimg convert -l snapshot.name=small -O raw disk.qcow2 want-small.raw
qimg resize -q disk.qcow2 8M
qio -c 'write -P 3 512k 1M' -c 'write -P 4 6M 64k' disk.qcow2 >/dev/null
blockctl image snapshot create disk.qcow2 big
qimg convert -l snapshot.name=big -O raw disk.qcow2 want-big.raw
qio -c 'write -P 5 0 8M' disk.qcow2 >/dev/null
cp disk.qcow2 before.qcow2

blockctl image convert -l small -O raw disk.qcow2 small.raw
cmp want-small.raw small.raw || fail "-l small: the bytes differ"
[[ $(stat -c %s small.raw) == $((4 << 20)) ]] || fail "-l small: not the snapshot's size"
blockctl image convert -l 1 disk.qcow2 small.qcow2
qemu_check small.qcow2
qimg compare -q -F raw small.qcow2 want-small.raw || fail "-l 1 (by id)"
blockctl image convert --snapshot big -O raw disk.qcow2 big.raw
cmp want-big.raw big.raw || fail "--snapshot big: the bytes differ"
blockctl image convert -l big --compress disk.qcow2 big.qcow2
qemu_check big.qcow2
qimg compare -q -F raw big.qcow2 want-big.raw || fail "-l big --compress"
qimg info big.qcow2 | grep -q 'compression type: zstd' || fail "-l big --compress: not zstd"

cmp disk.qcow2 before.qcow2 || fail "reading a snapshot changed the source"
expect_pattern disk.qcow2 5 0 8M
