#!/bin/bash
# Bad sizes and cluster sizes are refused with one line, before any file
# is made or touched.
. "$(dirname "$0")/lib.sh"

for size in '' 12Q -1 1.5G 99999999T ' 1G' '1G ' 0x10 1e9 1GB abc; do
	# "--": a size such as -1 is an operand here, not an unknown option.
	expect_fail 1 'size' image create -- img.qcow2 "$size"
	[[ ! -e img.qcow2 ]] || fail "size '$size' created an image"
done
for cs in 0 256 1000 4M 3K '' 64Q -64K; do
	expect_fail 1 'cluster size' image create --cluster-size "$cs" img.qcow2 1G
	expect_fail 1 'cluster size' image convert --cluster-size "$cs" img.qcow2 out.qcow2
	[[ ! -e img.qcow2 ]] || fail "cluster size '$cs' created an image"
done

blockctl image create img.qcow2 1G
cp img.qcow2 before.qcow2
for size in 12Q 1.5G 99999999T +99999999T ++1G '+' ''; do
	expect_fail 1 'size' image resize img.qcow2 "$size"
done
expect_fail 1 'shrink' image resize img.qcow2 -2G
expect_fail 1 'too large' image resize img.qcow2 +9223372036854775807
# Beyond what the image format can map: the library refuses it.
expect_fail 1 'img.qcow2: ' image resize img.qcow2 8388607T
cmp img.qcow2 before.qcow2 || fail "a refused resize changed the image"

# qemu sees whole sectors only: resize refuses a partial one, create rounds up like qemu-img.
expect_fail 1 'multiple of 512' image resize img.qcow2 1000
expect_fail 1 'multiple of 512' image resize img.qcow2 +1
cmp img.qcow2 before.qcow2 || fail "a refused resize changed the image"
blockctl image create odd.qcow2 1000
qimg info --output=json odd.qcow2 >odd.json
[[ $(json_field odd.json virtual-size) == 1024 ]] || fail "create 1000: $(cat odd.json)"
