#!/bin/bash
# Snapshot commands that cannot be done fail with one line and leave the
# image as it was: a name already taken, a snapshot that does not exist,
# any change to a version 2 image, a raw file.
. "$(dirname "$0")/lib.sh"

qimg create -q -f qcow2 disk.qcow2 1M
blockctl image snapshot create disk.qcow2 one
cp disk.qcow2 before.qcow2

expect_fail 1 "^blockctl: disk.qcow2: .*'one' already exists" image snapshot create disk.qcow2 one
expect_fail 1 "^blockctl: disk.qcow2: .*no snapshot .*'two'" image snapshot delete disk.qcow2 two
expect_fail 1 "^blockctl: disk.qcow2: .*no snapshot .*'two'" image snapshot revert disk.qcow2 two
expect_fail 1 "^blockctl: disk.qcow2: .*snapshot.*'two'" image convert -l two disk.qcow2 out.qcow2
[[ ! -e out.qcow2 ]] || fail "convert -l of a missing snapshot left a file"
expect_fail 2 'name is empty.*usage' image snapshot create disk.qcow2 ''
expect_fail 2 'missing operand.*usage' image snapshot create disk.qcow2
expect_fail 2 'missing operand.*usage' image snapshot list
expect_fail 2 'unknown snapshot command.*usage' image snapshot frob disk.qcow2
expect_fail 2 'missing snapshot command.*usage' image snapshot
cmp disk.qcow2 before.qcow2 || fail "a refused command changed the image"
qemu_check disk.qcow2
[[ $(qimg snapshot -l disk.qcow2 | grep -c ' one ') == 1 ]] || fail "snapshot 'one' is gone"

# Version 2 (compat=0.10): listed, but never changed.
qimg create -q -f qcow2 -o compat=0.10 old.qcow2 1M
qimg snapshot -c v2snap old.qcow2
cp old.qcow2 old-before.qcow2
blockctl image snapshot list old.qcow2 | grep -qE '^1 +v2snap ' || fail "v2 snapshot not listed"
for args in "create old.qcow2 new" "delete old.qcow2 v2snap" "revert old.qcow2 v2snap"; do
	# shellcheck disable=SC2086 # the words are the arguments
	expect_fail 1 '^blockctl: old.qcow2: ' image snapshot $args
done
cmp old.qcow2 old-before.qcow2 || fail "a refused command changed the v2 image"

truncate -s 1M plain.raw
expect_fail 1 '^blockctl: plain.raw: .*qcow2' image snapshot create plain.raw x
expect_fail 1 '^blockctl: plain.raw: .*qcow2' image snapshot list plain.raw
expect_fail 1 '^blockctl: plain.raw: .*snapshots' image convert -l x plain.raw out.qcow2
