#!/bin/bash
# image convert of a raw file whose size is not a multiple of 512, and of
# an empty file.
. "$(dirname "$0")/lib.sh"

head -c 1000 /dev/urandom >odd.raw
blockctl image convert odd.raw odd.qcow2
qemu_check odd.qcow2
blockctl image convert -O raw odd.qcow2 back.raw
cmp -n 1000 odd.raw back.raw || fail "content"
size=$(stat -c %s back.raw)
((size == 1000 || size == 1024)) || fail "odd size came back as $size"
[[ $(head -c "$size" back.raw | tail -c +1001 | tr -d '\0' | wc -c) == 0 ]] || fail "tail not zero"

: >empty.raw
blockctl image convert -O raw empty.raw empty-copy.raw
[[ $(stat -c %s empty-copy.raw) == 0 ]] || fail "empty raw copy"
