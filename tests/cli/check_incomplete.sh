#!/bin/bash
# image check exits 1, as qemu-img check does, when it cannot check at
# all: no such file, not a qcow2 image, a header it refuses; one line each.
. "$(dirname "$0")/lib.sh"

expect_fail 1 '^blockctl: missing.qcow2: .*No such file' image check missing.qcow2
expect_fail 1 '^blockctl: missing.qcow2: ' image check --repair missing.qcow2
truncate -s 1M plain.raw
expect_fail 1 '^blockctl: plain.raw: .*qcow2' image check plain.raw
expect_fail 1 '^blockctl: plain.raw: .*qcow2' image check --json plain.raw
qimg create -q -f qcow2 disk.qcow2 1M
# A cluster size of 2^40 (cluster_bits at byte 20).
printf '\x28' | dd of=disk.qcow2 bs=1 seek=23 conv=notrunc status=none
expect_fail 1 '^blockctl: disk.qcow2: ' image check disk.qcow2
expect_fail 1 '^blockctl: disk.qcow2: ' image check --repair disk.qcow2
