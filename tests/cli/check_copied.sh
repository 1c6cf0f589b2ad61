#!/bin/bash
# An L2 entry of a cluster with refcount 1 that lacks the COPIED flag is
# corruption: image check exits 2 as qemu-img check does, and check
# --repair sets the flag again without touching the data.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 4M
qio -c 'write -P 1 0 256k' -c 'write -P 2 1M 64k' disk.qcow2 >/dev/null
qcow2_edit disk.qcow2 clear-copied 65536
check_verdict disk.qcow2 2
repair_keeps_data disk.qcow2
# Writable again the ordinary way: a write in place lands where it should.
qio -c 'write -P 3 64k 4k' disk.qcow2 >/dev/null
qemu_check disk.qcow2
expect_pattern disk.qcow2 3 64k 4k
expect_pattern disk.qcow2 1 68k 188k
