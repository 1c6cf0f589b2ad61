#!/bin/bash
# Snapshots qemu-img creates are blockctl's to use: listed, read with
# convert -l (by name and by id), reverted and deleted, with qemu-img
# check clean after every step.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 -o cluster_size=4096 disk.qcow2 4M
qio -c 'write -P 5 0 300k' -c 'write -P 6 2M 4k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 a.raw
qimg snapshot -c alpha disk.qcow2
qio -c 'write -P 7 100k 1M' -c 'discard 2M 4k' disk.qcow2 >/dev/null
qimg convert -O raw disk.qcow2 b.raw
qimg snapshot -c beta disk.qcow2
qio -c 'write -P 8 0 4M' disk.qcow2 >/dev/null

blockctl image snapshot list disk.qcow2 >list.txt
grep -qE '^1 +alpha ' list.txt || { cat list.txt >&2; fail "blockctl does not list alpha"; }
grep -qE '^2 +beta ' list.txt || { cat list.txt >&2; fail "blockctl does not list beta"; }
blockctl image snapshot list --json disk.qcow2 >list.json
[[ $(grep -c '"name"' list.json) == 2 ]] || fail "list --json: $(cat list.json)"
[[ $(json_field list.json disk-size) == $((4 << 20)) ]] || fail "disk-size: $(cat list.json)"

blockctl image convert -l alpha -O raw disk.qcow2 got-a.raw
cmp a.raw got-a.raw || fail "blockctl reads alpha differently"
blockctl image convert -l 2 -O raw disk.qcow2 got-b.raw
cmp b.raw got-b.raw || fail "blockctl reads snapshot id 2 (beta) differently"

blockctl image snapshot revert disk.qcow2 alpha
qemu_check disk.qcow2
qimg compare -q -F raw disk.qcow2 a.raw || fail "revert to alpha"
blockctl image snapshot delete disk.qcow2 alpha
qemu_check disk.qcow2
qimg compare -q -F raw disk.qcow2 a.raw || fail "deleting alpha changed the image"
qimg convert -l snapshot.name=beta -O raw disk.qcow2 got-b.raw
cmp b.raw got-b.raw || fail "deleting alpha changed beta"
blockctl image snapshot revert disk.qcow2 beta
qemu_check disk.qcow2
qimg compare -q -F raw disk.qcow2 b.raw || fail "revert to beta"
blockctl image snapshot delete disk.qcow2 beta
qemu_check disk.qcow2
[[ -z $(qimg snapshot -l disk.qcow2) ]] || fail "qemu-img still lists snapshots"
[[ -z $(blockctl image snapshot list disk.qcow2) ]] || fail "blockctl still lists snapshots"
[[ $(blockctl image snapshot list --json disk.qcow2) == "[]" ]] || fail "list --json of none"
