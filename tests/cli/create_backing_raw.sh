#!/bin/bash
# image create --backing with a raw backing file, relative to the image's folder.
. "$(dirname "$0")/lib.sh"

mkdir sub
head -c $((4 << 20)) /dev/urandom >sub/base.raw
truncate -s 16M sub/base.raw

blockctl image create --backing base.raw --backing-format raw sub/top.qcow2
qemu_check sub/top.qcow2
qimg info --output=json sub/top.qcow2 >info.json
[[ $(json_field info.json virtual-size) == $((16 << 20)) ]] || fail "size: $(cat info.json)"
[[ $(json_field info.json backing-filename) == base.raw ]] || fail "backing: $(cat info.json)"
[[ $(json_field info.json backing-filename-format) == raw ]] || fail "format: $(cat info.json)"
qimg compare -q sub/top.qcow2 sub/base.raw || fail "top differs from its raw backing file"

# blockctl reads through the chain too: converting the top gives the base's bytes.
blockctl image convert -O raw sub/top.qcow2 flat.raw
cmp flat.raw sub/base.raw || fail "convert through a raw backing file"
