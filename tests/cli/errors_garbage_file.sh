#!/bin/bash
# A file that is not an image (or not the format asked for) is refused with
# one line and status 1; a directory and a FIFO too, without hanging.
. "$(dirname "$0")/lib.sh"

head -c 1M /dev/urandom >garbage.bin
expect_fail 1 'garbage.bin: .*qcow2' image resize garbage.bin 2M
expect_fail 1 'garbage.bin: .*qcow2' image convert -f qcow2 garbage.bin out.qcow2
[[ ! -e out.qcow2 ]] || fail "a destination was left behind"

# qcow2 magic followed by garbage.
{ printf 'QFI\xfb'; head -c 4096 /dev/urandom; } >fake.qcow2
expect_fail 1 'fake.qcow2: ' image info fake.qcow2
expect_fail 1 'fake.qcow2: ' image map fake.qcow2
expect_fail 1 'fake.qcow2: ' image convert fake.qcow2 out.qcow2
[[ ! -e out.qcow2 ]] || fail "a destination was left behind"

mkdir adir
expect_fail 1 'adir: ' image info adir
mkfifo afifo
expect_fail 1 'afifo: ' image info afifo
expect_fail 1 'afifo: ' image convert afifo out.qcow2
