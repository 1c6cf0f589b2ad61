#!/bin/bash
# qemu's own tools as NBD clients of blockd: qemu-img info reads the size,
# qemu-io writes patterns (aligned, unaligned, zeroes, discards) that read
# back over NBD and are in the qcow2 file after shutdown, qemu-img convert
# copies a raw file into an export and from export to export, and qemu-img
# compare finds them equal, over TCP and over the unix socket; after
# shutdown the volume files equal the raw file and pass qemu-img check.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-io dd

new_volume data vol 16M
new_volume data conv 16M
new_volume data copy 16M
new_volume data small 3M
# 16 MiB of random data in runs, with zero runs and a tail of zeros between.
truncate -s 16M local.raw
for off in 0 3 5 11; do
	dd if=/dev/urandom of=local.raw bs=1M seek="$off" count=1 conv=notrunc status=none
done
dd if=/dev/urandom of=local.raw bs=1 seek=$((7 << 20 | 12345)) count=70000 conv=notrunc status=none

start_blockd "$TMP/data"

for uri_of in tcp_uri unix_uri; do
	for v in vol:16777216 conv:16777216 copy:16777216 small:3145728; do
		size=$(t qemu-img info --output=json "$($uri_of "${v%:*}")" |
			sed -n 's/^ *"virtual-size": \([0-9]*\),*$/\1/p')
		[[ $size == "${v#*:}" ]] || fail "qemu-img info $($uri_of "${v%:*}"): size '$size'"
	done
done

tcp=$(tcp_uri vol)
unix=$(unix_uri vol)
qio_cmds raw "$tcp" 'write -P 0xa1 0 64k' 'write -P 0xa2 1M 1M' 'write -P 0xa3 5000 3000' \
	'write -P 0xa4 15M 1M'
qio_cmds raw "$unix" 'write -P 0xb1 4M 8k' 'write -z 1536k 4k' 'write -P 0xb2 6M 128k' \
	'discard 6M 64k' 'writev -P 0xb3 9M 4k 512 12k'
qio_cmds raw "$tcp" 'aio_write -P 0xc1 10M 64k' 'aio_write -P 0xc2 10304k 64k' 'aio_flush'
expected_reads=(
	'read -P 0xa1 0 5000' 'read -P 0xa3 5000 3000' 'read -P 0xa1 8000 57536'
	'read -P 0 64k 960k' 'read -P 0xa2 1M 512k' 'read -P 0 1536k 4k'
	'read -P 0xa2 1540k 508k' 'read -P 0xa4 15M 1M' 'read -P 0xb1 4M 8k'
	'read -P 0xb2 6208k 64k' 'read -P 0xb3 9M 16896'
	'read -P 0xc1 10M 64k' 'read -P 0xc2 10304k 64k' 'read -P 0 12M 3M'
)
qio_cmds raw "$unix" "${expected_reads[@]}"
qio_cmds raw "$tcp" "${expected_reads[@]}"
# qemu-io checks what it reads; make sure a mismatch would be seen.
out=$(t qemu-io -f raw -c 'read -P 0xa2 0 4k' "$tcp" 2>&1) || true
grep -q 'Pattern verification failed' <<<"$out" ||
	fail "qemu-io does not notice a wrong pattern (the checks above prove nothing): $out"

t qemu-img convert -n -f raw -O raw local.raw "$(tcp_uri conv)" || fail "qemu-img convert into conv"
t qemu-img compare -q -f raw -F raw local.raw "$(tcp_uri conv)" ||
	fail "qemu-img compare local.raw with $(tcp_uri conv)"
t qemu-img compare -q -f raw -F raw local.raw "$(unix_uri conv)" ||
	fail "qemu-img compare local.raw with $(unix_uri conv)"
# From export to export, over the socket.
t qemu-img convert -n -f raw -O raw "$(unix_uri conv)" "$(unix_uri copy)" ||
	fail "qemu-img convert conv into copy"
t qemu-img compare -q -f raw -F raw local.raw "$(tcp_uri copy)" || fail "copy differs after convert"
# compare is able to tell a difference.
if t qemu-img compare -q -f raw -F raw local.raw "$(tcp_uri small)"; then
	fail "qemu-img compare found local.raw equal to an empty 3 MiB export"
fi

stop_blockd
out=$(t qemu-io -f qcow2 "${expected_reads[@]/#/-c}" data/volumes/vol.qcow2 2>&1) ||
	fail "qemu-io on vol.qcow2 after shutdown: $out"
! grep -qi 'fail\|error' <<<"$out" || fail "vol.qcow2 after shutdown: $out"
[[ $(grep -c '^read ' <<<"$out") == "${#expected_reads[@]}" ]] ||
	fail "qemu-io on vol.qcow2 did not do every read: $out"
for v in conv copy; do
	t qemu-img compare -q -f qcow2 -F raw "data/volumes/$v.qcow2" local.raw ||
		fail "data/volumes/$v.qcow2 differs from local.raw after shutdown"
	qemu_check "data/volumes/$v.qcow2"
done
qemu_check data/volumes/vol.qcow2
qemu_check data/volumes/small.qcow2
