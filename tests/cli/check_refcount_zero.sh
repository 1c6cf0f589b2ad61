#!/bin/bash
# A data cluster whose refcount was zeroed is corruption: image check
# exits 2 as qemu-img check does, and check --repair makes it whole again.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 1 0 256k' -c 'write -P 2 1M 64k' disk.qcow2 >/dev/null
check_verdict disk.qcow2 0
qcow2_edit disk.qcow2 refcount "$(host_offset disk.qcow2 65536)" 0
check_verdict disk.qcow2 2
blockctl image check --json disk.qcow2 >check.json || true
(($(json_field check.json corruptions) > 0)) || fail "no corruptions: $(cat check.json)"
repair_keeps_data disk.qcow2
expect_pattern disk.qcow2 1 0 256k
expect_pattern disk.qcow2 2 1M 64k
