#!/bin/bash
# SPDX-License-Identifier: MIT
# nbdinfo sees what blockd serves, over TCP and the unix socket: --list
# names every volume and its snapshot (NAME@SNAP), --json gives the right
# sizes and flags (writable volume: flush/fua/trim/zero, multi-conn;
# snapshot: read-only), and --map gives the data/zero/hole layout that
# qemu-img map read from the same qcow2 file before blockd opened it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-io "$PYTHON"

new_volume data vol 4M
new_volume data other 1M
vol=data/volumes/vol.qcow2
# Data clusters (one written with zeros), explicit zero clusters, a
# cluster only partly written, and unallocated space in between.
t qemu-io -f qcow2 -c 'write -P 0x11 0 192k' -c 'write -z 512k 128k' \
	-c 'write -P 0 2M 64k' -c 'write -P 0x22 3M 4k' -c 'write -P 0x33 4032k 64k' \
	"$vol" >/dev/null
blockctl image snapshot create "$vol" s1 >/dev/null
t qemu-img map --output=json "$vol" >want-map.json
# Ranges holding non-zero bytes: never reported as zero.
nonzero="0:196608 3145728:4096 4128768:65536"
grep -q '"present": false' want-map.json || fail "no unallocated range in the test image"
grep -q '"present": true, "zero": true' want-map.json || fail "no zero cluster in the test image"

start_blockd "$TMP/data"

for uri_of in tcp_uri unix_uri; do
	list_uri=$($uri_of "")
	t nbdinfo --list --json "$list_uri" >list.json || fail "nbdinfo --list $list_uri"
	names=$(json '" ".join(sorted(e["export-name"] for e in d["exports"]))' list.json)
	[[ $names == "other vol vol@s1" ]] || fail "nbdinfo --list $list_uri: exports '$names'"
	t nbdinfo --list "$list_uri" >list.txt || fail "nbdinfo --list (text) $list_uri"
	grep -q 'export="vol@s1"' list.txt || fail "vol@s1 missing from nbdinfo --list: $(cat list.txt)"

	t nbdinfo --json "$($uri_of vol)" >vol.json || fail "nbdinfo --json $($uri_of vol)"
	[[ $(json 'd["exports"][0]["export-size"]' vol.json) == 4194304 ]] ||
		fail "vol size: $(cat vol.json)"
	for key in is_read_only:false can_multi_conn:true can_flush:true can_fua:true \
		can_trim:true can_zero:true; do
		[[ $(json "d['exports'][0]['${key%:*}']" vol.json) == "${key#*:}" ]] ||
			fail "vol over $uri_of: ${key%:*} is not ${key#*:}: $(cat vol.json)"
	done

	t nbdinfo --json "$($uri_of other)" >other.json || fail "nbdinfo --json other"
	[[ $(json 'd["exports"][0]["export-size"]' other.json) == 1048576 ]] ||
		fail "other size: $(cat other.json)"

	t nbdinfo --json "$($uri_of vol@s1)" >snap.json || fail "nbdinfo --json vol@s1"
	[[ $(json 'd["exports"][0]["export-size"]' snap.json) == 4194304 ]] ||
		fail "vol@s1 size: $(cat snap.json)"
	[[ $(json 'd["exports"][0]["is_read_only"]' snap.json) == true ]] ||
		fail "vol@s1 is not read-only: $(cat snap.json)"

	t nbdinfo --map --json "$($uri_of vol)" >got-map.json || fail "nbdinfo --map $($uri_of vol)"
	# Every NBD extent agrees with every qemu-img map range it overlaps:
	# data -> no hole bit; explicit zero cluster -> zero bit; unallocated
	# -> hole and zero; known non-zero bytes -> neither.  The extents
	# must tile the whole disk.
	sys_python - want-map.json got-map.json 4194304 "$nonzero" <<-'EOF' ||
		import json, sys
		want = json.load(open(sys.argv[1]))
		got = json.load(open(sys.argv[2]))
		size = int(sys.argv[3])
		nonzero = [tuple(map(int, r.split(":"))) for r in sys.argv[4].split()]
		pos = 0
		bad = []
		for e in got:
		    s, l, ty = e["offset"], e["length"], e["type"]
		    if s != pos or l <= 0:
		        bad.append(f"extent {e} does not follow {pos}")
		    pos = s + l
		    for w in want:
		        if w["start"] >= s + l or w["start"] + w["length"] <= s:
		            continue
		        if w["data"]:
		            ok = ty & 1 == 0
		        elif w["present"]:
		            ok = ty & 2 == 2
		        else:
		            ok = ty == 3
		        if not ok:
		            bad.append(f"extent {e} vs qemu-img {w}")
		    for ns, nl in nonzero:
		        if ns < s + l and ns + nl > s and ty != 0:
		            bad.append(f"extent {e} covers non-zero bytes at {ns}")
		if pos != size:
		    bad.append(f"extents end at {pos}, not {size}")
		for b in bad:
		    print(b)
		sys.exit(1 if bad else 0)
	EOF
		fail "nbdinfo --map over $uri_of disagrees with qemu-img map: $(cat got-map.json)"
done

stop_blockd
qemu_check "$vol"
