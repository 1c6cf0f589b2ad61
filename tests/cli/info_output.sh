#!/bin/bash
# image info: human and JSON output for qcow2 (with backing file) and raw.
. "$(dirname "$0")/lib.sh"

blockctl image create --cluster-size 4K --lazy-refcounts base.qcow2 1G
blockctl image create --backing base.qcow2 --backing-format qcow2 top.qcow2

blockctl image info top.qcow2 >info.txt
grep -qx 'image: top.qcow2' info.txt || fail "image line: $(cat info.txt)"
grep -qx 'file format: qcow2' info.txt || fail "format line"
grep -qx 'virtual size: 1 GiB (1073741824 bytes)' info.txt || fail "virtual size line"
grep -q '^disk size: ' info.txt || fail "disk size line"
grep -qx 'cluster_size: 65536' info.txt || fail "cluster size line"
grep -q '^backing file: base.qcow2' info.txt || fail "backing line"
grep -qx 'backing file format: qcow2' info.txt || fail "backing format line"
grep -qx '    compat: 1.1' info.txt || fail "compat line"
grep -qx '    refcount bits: 16' info.txt || fail "refcount bits line"
grep -qx '    lazy refcounts: false' info.txt || fail "lazy refcounts line"
grep -qx '    dirty: false' info.txt || fail "dirty line"
grep -qx '    compression type: zlib' info.txt || fail "compression line"

blockctl image info --json base.qcow2 >base.json
[[ $(json_field base.json format) == qcow2 ]] || fail "json format: $(cat base.json)"
[[ $(json_field base.json virtual-size) == $((1 << 30)) ]] || fail "json size"
[[ $(json_field base.json cluster-size) == 4096 ]] || fail "json cluster size"
[[ $(json_field base.json compat) == 1.1 ]] || fail "json compat"
[[ $(json_field base.json lazy-refcounts) == true ]] || fail "json lazy refcounts"
[[ $(json_field base.json refcount-bits) == 16 ]] || fail "json refcount bits"
[[ $(json_field base.json dirty-flag) == false ]] || fail "json dirty"
if command -v jq >/dev/null; then
	jq -e '.["virtual-size"] == 1073741824' base.json >/dev/null || fail "jq: $(cat base.json)"
	blockctl image info --json top.qcow2 | jq -e '.["backing-filename"] == "base.qcow2"' >/dev/null ||
		fail "jq backing"
fi

# The same numbers qemu-img reports.
qimg info --output=json base.qcow2 >qemu.json
for key in virtual-size cluster-size compat lazy-refcounts refcount-bits; do
	[[ $(json_field qemu.json $key) == $(json_field base.json $key) ]] || fail "$key differs from qemu"
done

# A raw file.
truncate -s 10M disk.raw
blockctl image info disk.raw >raw.txt
grep -qx 'file format: raw' raw.txt || fail "raw format: $(cat raw.txt)"
grep -qx 'virtual size: 10 MiB (10485760 bytes)' raw.txt || fail "raw size: $(cat raw.txt)"
blockctl image info --json disk.raw >raw.json
[[ $(json_field raw.json format) == raw ]] || fail "raw json format"
[[ $(json_field raw.json virtual-size) == 10485760 ]] || fail "raw json size"
