#!/bin/bash
# Deleting a snapshot gives its space back: once every cluster it held has
# been overwritten, deleting it drops the allocated clusters (qemu-img
# check) and the image end offset.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 disk.qcow2 8M
qio -c 'write -P 1 0 4M' disk.qcow2 >/dev/null
blockctl image snapshot create disk.qcow2 old
qio -c 'write -P 2 0 4M' disk.qcow2 >/dev/null

# end_offset IMAGE: qemu-img check's image end offset.
end_offset() {
	qimg check --output=json "$1" >check.json || fail "qemu-img check $1"
	json_field check.json image-end-offset
}
with=$(end_offset disk.qcow2)
disk_with=$(allocated_bytes disk.qcow2)
blockctl image snapshot delete disk.qcow2 old
qemu_check disk.qcow2
without=$(end_offset disk.qcow2)
disk_without=$(allocated_bytes disk.qcow2)
# The 4 MiB the snapshot kept come back, as holes or as a shorter file.
((disk_with - disk_without >= 3 << 20)) ||
	fail "disk usage $disk_with -> $disk_without bytes after deleting the snapshot"
((without <= with)) || fail "image end offset grew: $with -> $without"
expect_pattern disk.qcow2 2 0 4M

# The freed clusters are reused: writing 4 MiB more does not grow the file past before.
qio -c 'write -P 3 4M 4M' disk.qcow2 >/dev/null
qemu_check disk.qcow2
((($(end_offset disk.qcow2)) <= with + (1 << 20))) || fail "freed clusters were not reused"
