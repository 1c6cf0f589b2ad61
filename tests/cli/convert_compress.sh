#!/bin/bash
# image convert --compress writes a zstd qcow2 whose data clusters are
# compressed: qemu-img info says zstd, qemu-img check counts compressed
# clusters and finds no errors, the file is much smaller than a plain
# copy, qemu-img compare finds it identical, and qemu can write over a
# compressed cluster afterwards.
. "$(dirname "$0")/lib.sh"
need qemu-io

# Text (compresses well), a hole, random bytes, zeros, a short last cluster.
size=$(((6 << 20) + 12800))
truncate -s $size src.raw
seq 1 500000 >text.txt
head -c $((3 << 20)) text.txt | dd of=src.raw conv=notrunc status=none
head -c 70000 /dev/urandom | dd of=src.raw bs=1k seek=4000 conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=64k seek=70 count=4 conv=notrunc status=none
head -c 9000 text.txt | dd of=src.raw bs=1 seek=$((size - 9000)) conv=notrunc status=none

blockctl image convert --compress src.raw small.qcow2
blockctl image convert src.raw plain.qcow2
qimg info small.qcow2 | grep -q 'compression type: zstd' || fail "not zstd: $(qimg info small.qcow2)"
qemu_check small.qcow2
qimg check --output=json small.qcow2 >check.json
compressed=$(json_field check.json compressed-clusters)
# 48 clusters of text and the short last one at least.
((compressed >= 49)) || fail "only ${compressed:-no} compressed clusters: $(cat check.json)"
qimg compare -q -f raw -F qcow2 src.raw small.qcow2 || fail "qemu-img compare"
small=$(stat -c %s small.qcow2)
plain=$(stat -c %s plain.qcow2)
((small * 4 < plain)) || fail "compressed copy is $small bytes, the plain one $plain"
# The hole and the zeros stay unallocated.
qimg map --output=json small.qcow2 >map.json
grep -q '"start": 3145728, "length": [0-9]*, "depth": 0, "present": false, "zero": true' map.json ||
	fail "the hole after the text was written: $(cat map.json)"

# qemu writes over compressed clusters (copy-on-write into normal clusters).
qio -c 'write -P 9 100k 8k' -c "write -P 10 $((size - 512)) 512" small.qcow2 >/dev/null
qio -f raw -c 'write -P 9 100k 8k' -c "write -P 10 $((size - 512)) 512" src.raw >/dev/null
qemu_check small.qcow2
qimg compare -q -f raw -F qcow2 src.raw small.qcow2 || fail "compare after qemu's writes"

# Smaller clusters, and a source whose size is not a whole sector.
blockctl image convert --compress --cluster-size 4K src.raw small4k.qcow2
qemu_check small4k.qcow2
qimg compare -q -f raw -F qcow2 src.raw small4k.qcow2 || fail "4K clusters"
head -c 5000 src.raw >odd.raw
blockctl image convert -c odd.raw odd.qcow2
qemu_check odd.qcow2
qimg convert -O raw odd.qcow2 odd-back.raw
cmp -n 5000 odd.raw odd-back.raw || fail "odd size: the bytes differ"
[[ $(qimg info --output=json odd.qcow2 | grep -o '"virtual-size": [0-9]*') == '"virtual-size": 5120' ]] ||
	fail "odd size: virtual size"
expect_fail 2 'qcow2 destination.*usage' image convert --compress -O raw src.raw out.raw
[[ ! -e out.raw ]] || fail "a refused --compress created a file"
