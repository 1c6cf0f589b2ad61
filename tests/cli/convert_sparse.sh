#!/bin/bash
# image convert keeps a mostly empty image sparse, both ways, and skips
# all-zero blocks of a raw source.
. "$(dirname "$0")/lib.sh"

truncate -s 4G src.raw
head -c $((1 << 20)) /dev/urandom | dd of=src.raw bs=1M seek=1000 conv=notrunc status=none
# Written zeros take space in the raw file but must not in the copies.
dd if=/dev/zero of=src.raw bs=1M seek=2000 count=16 conv=notrunc status=none

blockctl image convert -f raw src.raw sparse.qcow2
qemu_check sparse.qcow2
qimg info --output=json sparse.qcow2 >info.json
actual=$(json_field info.json actual-size)
((actual < (8 << 20))) || fail "qcow2 copy takes $actual bytes"
qimg map --output=json sparse.qcow2 | grep '"data": true' >data.json
[[ $(wc -l <data.json) == 1 ]] || fail "qcow2 copy maps more than one data run: $(cat data.json)"

blockctl image convert -O raw sparse.qcow2 sparse.raw
[[ $(stat -c %s sparse.raw) == $((4 << 30)) ]] || fail "raw copy size"
used=$(allocated_bytes sparse.raw)
((used < (8 << 20))) || fail "raw copy takes $used bytes"
qimg compare -q -f raw -F raw src.raw sparse.raw || fail "raw copy differs"
