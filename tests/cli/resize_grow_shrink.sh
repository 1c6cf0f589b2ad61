#!/bin/bash
# image resize grows and shrinks (absolute, +N, -N); qemu-img sees the new
# size and the data below it is kept.
. "$(dirname "$0")/lib.sh"
need qemu-io

size_of() {
	qimg info --output=json "$1" >info.json
	json_field info.json virtual-size
}

blockctl image create img.qcow2 64M
qio -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 30M 1M' img.qcow2 >/dev/null

blockctl image resize img.qcow2 +64M >/dev/null
[[ $(size_of img.qcow2) == $((128 << 20)) ]] || fail "grow by 64M"
qio -c 'write -P 0x77 100M 1M' img.qcow2 >/dev/null
qemu_check img.qcow2

blockctl image resize img.qcow2 1G >/dev/null
[[ $(size_of img.qcow2) == $((1 << 30)) ]] || fail "grow to 1G"

blockctl image resize img.qcow2 32M >/dev/null
[[ $(size_of img.qcow2) == $((32 << 20)) ]] || fail "shrink to 32M"
qemu_check img.qcow2

blockctl image resize img.qcow2 -1M >/dev/null
[[ $(size_of img.qcow2) == $((31 << 20)) ]] || fail "shrink by 1M"
qemu_check img.qcow2

expect_pattern img.qcow2 0x5a 0 1M
expect_pattern img.qcow2 0xa5 30M 1M

# Growing again shows zeros where data was cut off, not the old bytes.
blockctl image resize img.qcow2 128M >/dev/null
expect_pattern img.qcow2 0 100M 1M
qemu_check img.qcow2
