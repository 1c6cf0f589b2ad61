#!/bin/bash
# image check on healthy images (blockctl's, qemu's, with snapshots, with
# compressed clusters) exits 0 like qemu-img check and says so; --repair
# leaves a clean image alone; --json carries the counters.
. "$(dirname "$0")/lib.sh"
need qemu-io

blockctl image create empty.qcow2 1M
check_verdict empty.qcow2 0

qimg create -q -f qcow2 -o cluster_size=4096 disk.qcow2 4M
qio -c 'write -P 1 0 100k' -c 'write -z 1M 64k' -c 'write -P 2 3M 8k' disk.qcow2 >/dev/null
qimg snapshot -c s disk.qcow2
qio -c 'write -P 3 0 10k' disk.qcow2 >/dev/null
check_verdict disk.qcow2 0
blockctl image check disk.qcow2 >check.txt
grep -qx 'No errors were found on the image.' check.txt || fail "check output: $(cat check.txt)"
qimg check --output=json disk.qcow2 >qemu.json
want_end=$(json_field qemu.json image-end-offset)
grep -qx "Image end offset: $want_end" check.txt || fail "image end offset, qemu says $want_end"

blockctl image check --json disk.qcow2 >check.json
for key in check-errors corruptions leaks; do
	[[ $(json_field check.json $key) == 0 ]] || fail "$key: $(cat check.json)"
done
[[ $(json_field check.json image-end-offset) == "$want_end" ]] || fail "json end offset"
[[ $(json_field check.json rebuilt) == false ]] || fail "rebuilt: $(cat check.json)"
(($(json_field check.json allocated-clusters) > 0)) || fail "allocated-clusters"

cp disk.qcow2 before.qcow2
blockctl image check --repair disk.qcow2 >check.txt
grep -q 'No errors' check.txt || fail "check --repair of a clean image: $(cat check.txt)"
! grep -q 'repaired' check.txt || fail "check --repair repaired a clean image"
qimg compare -q before.qcow2 disk.qcow2 || fail "check --repair changed the contents"
qemu_check disk.qcow2

qimg convert -c -O qcow2 disk.qcow2 compressed.qcow2
check_verdict compressed.qcow2 0
