#!/bin/bash
# create and convert refuse to overwrite an existing file, and leave it as it was.
. "$(dirname "$0")/lib.sh"

head -c 64k /dev/urandom >src.raw
echo precious >dst.qcow2
cp dst.qcow2 keep
expect_fail 1 'dst.qcow2: ' image create dst.qcow2 1G
expect_fail 1 'dst.qcow2: ' image convert src.raw dst.qcow2
expect_fail 1 'dst.qcow2: ' image convert -O raw src.raw dst.qcow2
cmp dst.qcow2 keep || fail "the existing file was changed"
