#!/bin/bash
# image create --lazy-refcounts sets the lazy refcounts feature qemu sees.
. "$(dirname "$0")/lib.sh"

blockctl image create --lazy-refcounts lazy.qcow2 64M
blockctl image create plain.qcow2 64M
qimg info --output=json lazy.qcow2 >lazy.json
qimg info --output=json plain.qcow2 >plain.json
[[ $(json_field lazy.json lazy-refcounts) == true ]] || fail "lazy: $(cat lazy.json)"
[[ $(json_field plain.json lazy-refcounts) == false ]] || fail "plain: $(cat plain.json)"
qemu_check lazy.qcow2
qemu_check plain.qcow2
