#!/bin/bash
# image map --json agrees with qemu-img map --output=json on which ranges
# hold data and which read as zeros.
. "$(dirname "$0")/lib.sh"
need qemu-io awk

# normalise: "start length data zero" per byte range, neighbours with the
# same flags merged (qemu also splits runs where the host offset jumps).
normalise() {
	grep -o '"start": *[0-9]*, *"length": *[0-9]*\|"zero": *[a-z]*\|"data": *[a-z]*' |
		tr -d ' "' | awk -F: '
		/^start/ { split($0, a, /[:,]/); s = a[2]; l = a[4]; next }
		/^zero/ { z = $2; next }
		/^data/ {
			d = $2
			if (n && d == pd && z == pz && s == ps + pl) { pl += l; next }
			if (n) print ps, pl, pd, pz
			ps = s; pl = l; pd = d; pz = z; n = 1
		}
		END { if (n) print ps, pl, pd, pz }'
}

compare_maps() {
	qimg map --output=json "$1" | normalise >want.txt
	blockctl image map --json "$1" >got.json
	normalise <got.json >got.txt
	diff -u want.txt got.txt || fail "map of $1 differs from qemu-img map"
}

qimg create -q -f qcow2 plain.qcow2 16M
qio -c 'write -P 0xaa 0 64k' \
	-c 'write -P 0xbb 192k 128k' \
	-c 'write -z 1M 256k' \
	-c 'write -P 0xcc 2M 64k' \
	-c 'discard 2M 64k' \
	-c 'write -P 0xdd 15M 1M' \
	plain.qcow2 >/dev/null
compare_maps plain.qcow2

# Empty and fully written images.
qimg create -q -f qcow2 empty.qcow2 1G
compare_maps empty.qcow2
qimg create -q -f qcow2 -o cluster_size=512 full.qcow2 1M
qio -c 'write -P 1 0 1M' full.qcow2 >/dev/null
compare_maps full.qcow2

# A raw file with a hole.
truncate -s 4M hole.raw
head -c 64k /dev/urandom | dd of=hole.raw bs=64k seek=10 conv=notrunc status=none
compare_maps hole.raw
