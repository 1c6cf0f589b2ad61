#!/bin/bash
# image create makes v3 (compat 1.1) images of the cluster size asked for,
# which qemu-img checks clean.
. "$(dirname "$0")/lib.sh"

for cs in 512:512 4K:4096 64K:65536 2M:2097152; do
	arg=${cs%%:*} bytes=${cs##*:}
	blockctl image create --cluster-size "$arg" "img-$arg.qcow2" 1G
	qemu_check "img-$arg.qcow2"
	qimg info --output=json "img-$arg.qcow2" >info.json
	[[ $(json_field info.json cluster-size) == "$bytes" ]] || fail "cluster size $arg: $(cat info.json)"
	[[ $(json_field info.json compat) == "1.1" ]] || fail "compat for $arg: $(cat info.json)"
	[[ $(json_field info.json virtual-size) == $((1 << 30)) ]] || fail "size for $arg"
	[[ $(json_field info.json format) == "qcow2" ]] || fail "format for $arg"
done

# Without --cluster-size: 64 KiB.
blockctl image create default.qcow2 10M
qimg info --output=json default.qcow2 >info.json
[[ $(json_field info.json cluster-size) == 65536 ]] || fail "default cluster size"
[[ $(json_field info.json virtual-size) == $((10 << 20)) ]] || fail "default size"
qemu_check default.qcow2
