#!/bin/bash
# A cluster with a refcount that nothing references is a leak: image check
# exits 3 as qemu-img check does, and check --repair clears it.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 1 0 256k' -c 'write -P 2 1M 64k' disk.qcow2 >/dev/null
# One more cluster at the end of the file, counted but unreferenced.
end=$(stat -c %s disk.qcow2)
truncate -s $((end + 65536)) disk.qcow2
qcow2_edit disk.qcow2 refcount "$end" 1
check_verdict disk.qcow2 3
blockctl image check disk.qcow2 >check.txt || true
grep -qx '1 leaked clusters were found on the image.' check.txt || fail "$(cat check.txt)"
blockctl image check --json disk.qcow2 >check.json || true
[[ $(json_field check.json leaks) == 1 ]] || fail "leaks: $(cat check.json)"
[[ $(json_field check.json corruptions) == 0 ]] || fail "corruptions: $(cat check.json)"
repair_keeps_data disk.qcow2
