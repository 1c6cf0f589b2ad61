#!/bin/bash
# image create --backing with a qcow2 backing file named relative to the
# image's folder (as qemu resolves it); the size comes from the backing file.
. "$(dirname "$0")/lib.sh"
need qemu-io

mkdir sub
qimg create -q -f qcow2 sub/base.qcow2 32M
qio -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 20M 64k' sub/base.qcow2 >/dev/null

blockctl image create --backing base.qcow2 --backing-format qcow2 sub/top.qcow2
qemu_check sub/top.qcow2
qimg info --output=json sub/top.qcow2 >info.json
[[ $(json_field info.json virtual-size) == $((32 << 20)) ]] || fail "size: $(cat info.json)"
[[ $(json_field info.json backing-filename) == base.qcow2 ]] || fail "backing: $(cat info.json)"
[[ $(json_field info.json backing-filename-format) == qcow2 ]] || fail "format: $(cat info.json)"
qimg compare -q sub/top.qcow2 sub/base.qcow2 || fail "top differs from its backing file"

# A write to the top image shows there and leaves the backing file alone.
qio -c 'write -P 0x11 512k 64k' sub/top.qcow2 >/dev/null
expect_pattern sub/top.qcow2 0x11 512k 64k
expect_pattern sub/top.qcow2 0xab 0 512k
expect_pattern sub/top.qcow2 0xcd 20M 64k
expect_pattern sub/base.qcow2 0xab 512k 64k
qemu_check sub/top.qcow2

# An explicit size overrides the backing file's.
blockctl image create --backing base.qcow2 sub/big.qcow2 64M
qimg info --output=json sub/big.qcow2 >big.json
[[ $(json_field big.json virtual-size) == $((64 << 20)) ]] || fail "explicit size: $(cat big.json)"
qemu_check sub/big.qcow2

# blockctl shows the backing file where qemu finds it.
blockctl image info --json sub/top.qcow2 >ours.json
[[ $(json_field ours.json full-backing-filename) == sub/base.qcow2 ]] || fail "full backing: $(cat ours.json)"
