#!/bin/bash
# What a repair cannot fix is still reported after it: an L2 entry that
# points past the end of the file survives check --repair (qemu-img check
# -r all cannot fix it either), so check --repair says so and exits 2,
# agreeing with qemu-img check on the repaired image.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 1 0 128k' disk.qcow2 >/dev/null
# Guest cluster 1 at 256 MiB, with COPIED: far past the end of the file.
qcow2_edit disk.qcow2 l2-entry 65536 0x8000000010000000
check_verdict disk.qcow2 2

rc=$(status blockctl image check --repair disk.qcow2)
[[ $rc == 2 ]] || { cat status.out status.err >&2; fail "check --repair exited $rc, wanted 2"; }
grep -q 'found and repaired' status.out || fail "no repair reported: $(cat status.out)"
grep -qx '1 errors were found on the image.' status.out || fail "what remains: $(cat status.out)"
check_verdict disk.qcow2 2
rc=$(status blockctl image check --repair --json disk.qcow2)
[[ $rc == 2 ]] || fail "check --repair --json exited $rc, wanted 2"
[[ $(json_field status.out corruptions) == 1 ]] || fail "--json: $(cat status.out)"
# The cluster that was fine still reads as before.
expect_pattern disk.qcow2 1 0 64k
