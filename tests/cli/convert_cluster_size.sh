#!/bin/bash
# image convert --cluster-size sets the cluster size of the qcow2 copy.
. "$(dirname "$0")/lib.sh"

head -c $((1 << 20)) /dev/urandom >src.raw
for cs in 512:512 4K:4096 2M:2097152; do
	blockctl image convert --cluster-size "${cs%%:*}" src.raw "out-${cs%%:*}.qcow2"
	qemu_check "out-${cs%%:*}.qcow2"
	qimg info --output=json "out-${cs%%:*}.qcow2" >info.json
	[[ $(json_field info.json cluster-size) == "${cs##*:}" ]] || fail "cluster size $cs"
	qimg compare -q src.raw "out-${cs%%:*}.qcow2" || fail "content with cluster size $cs"
done
