#!/bin/bash
# Every image command on a missing file: one line naming the file, status 1.
. "$(dirname "$0")/lib.sh"

expect_fail 1 'nope.qcow2: .*No such file' image info nope.qcow2
expect_fail 1 'nope.qcow2: .*No such file' image info --json nope.qcow2
expect_fail 1 'nope.qcow2: .*No such file' image map nope.qcow2
expect_fail 1 'nope.qcow2: .*No such file' image resize nope.qcow2 1G
expect_fail 1 'nope.qcow2: .*No such file' image convert nope.qcow2 out.qcow2
[[ ! -e out.qcow2 ]] || fail "convert of a missing file left a destination"
expect_fail 1 'nodir/x.qcow2: ' image create nodir/x.qcow2 1G
# Without a size, the size of a missing backing file cannot be known.
expect_fail 1 'missing.qcow2' image create --backing missing.qcow2 --backing-format qcow2 top.qcow2
[[ ! -e top.qcow2 ]] || fail "create over a missing backing file left an image"
