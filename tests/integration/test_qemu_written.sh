#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test_qemu_written.sh - images written by qemu read, through the qcow library,
# exactly as `qemu-img convert -O raw` reads them; and where the image is
# writable, what the library writes leaves `qemu-img check` clean and reads back
# in qemu as expected.
#
#   test_qemu_written.sh QCOW_DUMP QCOW_PWRITE
#
# Cases: qemu-io writes / write -z / write -z -u / discard on a fresh image,
# compressed images (zlib, zstd), 3-deep backing chains (qcow2 and raw bases,
# relative names), a v2 image (compat=0.10, which we must refuse to write),
# cluster sizes 512 B and 2 MiB, refcount_bits 1 and 64, lazy refcounts (also
# left dirty by a killed qemu-io), an image with an internal snapshot (our
# writes must not change the snapshot).
#
# Exit 0: all passed; 77: qemu-img/qemu-io missing; 1: a case failed.
set -u

DUMP=${1:?usage: test_qemu_written.sh QCOW_DUMP QCOW_PWRITE}
PWRITE=${2:?usage: test_qemu_written.sh QCOW_DUMP QCOW_PWRITE}

STEP_TIMEOUT=${STEP_TIMEOUT:-60}
source "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io cmp dd
scratch_dir blockd-qemuw

failures=0
passes=0

# Each case runs in a subshell (run_case): fail ends the case, not the test.

cluster_size_of() {
	qemu-img info --output=json "$1" | sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p' | head -n1
}

# Our dump of IMG must equal qemu's raw conversion; leaves qemu's in $TMP/qemu.raw.
check_read() {
	local img=$1
	rm -f "$TMP/qemu.raw" "$TMP/ours.raw"
	qemu-img convert -O raw "$img" "$TMP/qemu.raw" || fail "qemu-img convert $img"
	"$DUMP" "$img" "$TMP/ours.raw" || fail "qcow_dump $img failed"
	cmp "$TMP/qemu.raw" "$TMP/ours.raw" >"$TMP/cmp.out" 2>&1 ||
		{ head -n3 "$TMP/cmp.out" >&2; fail "qcow_dump of $img differs from qemu-img convert"; }
}

# Patch the expected raw file like the library should patch the image.
exp_write() { # file off datafile
	dd if="$3" of="$1" bs=64k oflag=seek_bytes seek="$2" conv=notrunc status=none
}
exp_zero() { # file off len
	head -c "$3" /dev/zero >"$TMP/zeros.bin"
	exp_write "$1" "$2" "$TMP/zeros.bin"
}
exp_discard() { # file off len cluster_size: only whole clusters inside
	local s=$((($2 + $4 - 1) / $4 * $4)) e=$((($2 + $3) / $4 * $4))
	if ((e > s)); then exp_zero "$1" "$s" $((e - s)); fi
}

# Writes through the library (data, zeroes, a discard) at cluster-crossing
# and unaligned places, then: qemu-img check exit 0, qemu reads the expected
# content, and so do we.
check_write() {
	local img=$1
	local cs
	cs=$(cluster_size_of "$img")
	[ -n "$cs" ] || fail "no cluster size for $img"
	cp "$TMP/qemu.raw" "$TMP/expected.raw"
	local size
	size=$(stat -c %s "$TMP/expected.raw")
	head -c 5000 /dev/urandom >"$TMP/d1.bin"
	head -c $((cs * 2 + 777)) /dev/urandom >"$TMP/d2.bin"
	head -c 4096 /dev/urandom >"$TMP/d3.bin"
	local o1=$((4 * cs - 1000)) o2=$((size / 2 + 123)) o3=$((size - 4096))
	"$PWRITE" "$img" "$o1" "$TMP/d1.bin" || fail "qcow_pwrite data at $o1"
	exp_write "$TMP/expected.raw" "$o1" "$TMP/d1.bin"
	"$PWRITE" "$img" "$o2" "$TMP/d2.bin" || fail "qcow_pwrite data at $o2"
	exp_write "$TMP/expected.raw" "$o2" "$TMP/d2.bin"
	"$PWRITE" "$img" "$o3" "$TMP/d3.bin" || fail "qcow_pwrite data at $o3"
	exp_write "$TMP/expected.raw" "$o3" "$TMP/d3.bin"
	local z=$((3 * cs + 100)) zl=$((2 * cs + 300))
	"$PWRITE" "$img" "$z" -z "$zl" || fail "qcow_pwrite zeroes at $z"
	exp_zero "$TMP/expected.raw" "$z" "$zl"
	local d=$((size / 4 - cs / 2)) dl=$((3 * cs))
	"$PWRITE" "$img" "$d" -d "$dl" || fail "qcow_pwrite discard at $d"
	exp_discard "$TMP/expected.raw" "$d" "$dl" "$cs"

	qemu-img check "$img" >"$TMP/check.out" 2>&1 ||
		{ cat "$TMP/check.out" >&2; fail "qemu-img check after our writes (exit $?)"; }
	qemu-img convert -O raw "$img" "$TMP/after.raw" || fail "qemu-img convert after our writes"
	cmp "$TMP/expected.raw" "$TMP/after.raw" >"$TMP/cmp.out" 2>&1 ||
		{ head -n3 "$TMP/cmp.out" >&2; fail "qemu reads something else than we wrote"; }
	"$DUMP" "$img" "$TMP/ours.raw" || fail "qcow_dump after our writes"
	cmp "$TMP/expected.raw" "$TMP/ours.raw" >"$TMP/cmp.out" 2>&1 ||
		{ head -n3 "$TMP/cmp.out" >&2; fail "we read back something else than we wrote"; }
}

# A mixed set of qemu-io writes on a 64 MiB image.
qemu_writes() {
	local img=$1
	qio_cmds qcow2 "$img" "write -P 0x11 0 64k" "write -P 0x22 1000 3000" "write -P 0x33 65000 140000" \
		"write -P 0x44 1M 1M" "write -z 1200k 100k" "write -z -u 1536k 512k" \
		"discard 1800k 200k" "write -P 0x55 32M 4k" "write -P 0x66 63M 1M" \
		"write -z 63M 4k" "discard 62M 64k"
}

run_case() {
	CASE=$1
	shift
	(
		set -e
		"$@"
	)
	if [ $? -eq 0 ]; then
		passes=$((passes + 1))
		echo "ok   $CASE"
	else
		failures=$((failures + 1))
		echo "FAIL $CASE"
	fi
	rm -f "$TMP"/*.qcow2 "$TMP"/*.raw "$TMP"/*.bin
}

case_fresh() {
	qemu-img create -q -f qcow2 a.qcow2 64M
	qemu_writes a.qcow2
	check_read a.qcow2
	check_write a.qcow2
}

case_fresh_zero_discard_only() {
	qemu-img create -q -f qcow2 a.qcow2 16M
	qio_cmds qcow2 a.qcow2 "write -P 0x77 0 4M" "write -z 100k 1M" "write -z -u 2M 1M" "discard 3M 512k" \
		"discard 3900k 7k" "write -z -u 3500k 1000"
	check_read a.qcow2
	check_write a.qcow2
}

make_source_raw() { # path size
	truncate -s "$2" "$1"
	seq 1 400000 >"$TMP/text.bin"
	dd if="$TMP/text.bin" of="$1" bs=64k conv=notrunc status=none
	head -c 1M /dev/urandom >"$TMP/rand.bin"
	dd if="$TMP/rand.bin" of="$1" bs=64k seek=80 conv=notrunc status=none
	printf 'a small compressible tail' | dd of="$1" bs=1 seek=$((6 * 1024 * 1024 + 5)) \
		conv=notrunc status=none
	dd if="$TMP/text.bin" of="$1" bs=64k count=70001 iflag=count_bytes oflag=seek_bytes \
		seek=7000003 conv=notrunc status=none
}

case_compressed() { # compression_type cluster_size
	make_source_raw src.raw 8M
	qemu-img convert -c -f raw -O qcow2 -o "compression_type=$1,cluster_size=$2" src.raw c.qcow2
	qemu-img info c.qcow2 | grep -q "compression type: $1" || fail "not a $1 image"
	check_read c.qcow2
	cmp src.raw "$TMP/ours.raw" || fail "compressed image does not read as its source"
	check_write c.qcow2
}

case_chain_qcow2() {
	qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 64M
	qio_cmds qcow2 base.qcow2 "write -P 0xa1 0 8M" "write -P 0xa2 40M 3M" "write -P 0xa3 63M 1M"
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
	qio_cmds qcow2 mid.qcow2 "write -P 0xb1 1M 100k" "write -z 2M 1M" "discard 4M 1M" \
		"write -P 0xb2 41000000 5000"
	qemu-img create -q -f qcow2 -o cluster_size=512 -b mid.qcow2 -F qcow2 top.qcow2
	qio_cmds qcow2 top.qcow2 "write -P 0xc1 1100k 20000" "write -z -u 5M 64k" "discard 40M 64k" \
		"write -P 0xc2 2100k 1000"
	qemu-img convert -O raw mid.qcow2 "$TMP/mid.before.raw"
	check_read top.qcow2
	check_write top.qcow2
	# Our writes went to the top only.
	qemu-img convert -O raw mid.qcow2 "$TMP/mid.after.raw"
	cmp "$TMP/mid.before.raw" "$TMP/mid.after.raw" || fail "a backing layer changed"
	qemu-img check base.qcow2 >/dev/null && qemu-img check mid.qcow2 >/dev/null ||
		fail "a backing layer is no longer clean"
}

case_chain_raw_base() {
	head -c 3M /dev/urandom >base.raw
	truncate -s $((3 * 1024 * 1024 + 1536)) base.raw
	qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 8M
	qio_cmds qcow2 mid.qcow2 "write -P 0xd1 1M 70000" "write -z 2M 64k"
	qemu-img create -q -f qcow2 -o cluster_size=2M -b mid.qcow2 -F qcow2 top.qcow2 12M
	qio_cmds qcow2 top.qcow2 "write -P 0xe1 100k 1000" "write -P 0xe2 9M 64k"
	cp base.raw "$TMP/base.before.raw"
	check_read top.qcow2
	check_write top.qcow2
	cmp base.raw "$TMP/base.before.raw" || fail "the raw base changed"
}

case_v2() {
	qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 32M
	qio_cmds qcow2 v2.qcow2 "write -P 0x21 0 1M" "write -P 0x22 5000 5000" "write -z 512k 64k" \
		"discard 700k 128k"
	check_read v2.qcow2
	head -c 4096 /dev/urandom >"$TMP/d.bin"
	if "$PWRITE" v2.qcow2 0 "$TMP/d.bin" 2>/dev/null; then
		fail "the library wrote to a v2 image"
	fi
	qemu-img convert -O raw v2.qcow2 "$TMP/after.raw"
	cmp "$TMP/qemu.raw" "$TMP/after.raw" || fail "refused write changed the v2 image"
	qemu-img check v2.qcow2 >/dev/null || fail "v2 image no longer clean"
}

case_opts() { # qemu-img create -o options
	qemu-img create -q -f qcow2 -o "$1" o.qcow2 64M
	qemu_writes o.qcow2
	check_read o.qcow2
	check_write o.qcow2
}

case_lazy_dirty() {
	qemu-img create -q -f qcow2 -o lazy_refcounts=on l.qcow2 32M
	qio_cmds qcow2 l.qcow2 "write -P 0x31 0 1M"
	# Killed mid-session: dirty bit set, refcounts not written.
	qemu-io -f qcow2 -c "write -P 0x32 512k 1M" -c "write -P 0x33 20M 64k" -c "sigraise 9" \
		l.qcow2 >/dev/null 2>&1 || true
	qemu-img info l.qcow2 | grep -q 'cleanly shut down: no' ||
		fail "qemu-io did not leave the image dirty"
	check_read l.qcow2
	# Our writable open repairs it; check_write then wants qemu-img check clean.
	check_write l.qcow2
	qemu-img info l.qcow2 | grep -q 'cleanly shut down: no' && fail "still dirty after our close"
	return 0
}

case_snapshot() {
	qemu-img create -q -f qcow2 s.qcow2 32M
	qio_cmds qcow2 s.qcow2 "write -P 0x41 0 2M" "write -P 0x42 10M 100k" "write -z 1M 64k"
	qemu-img convert -O raw s.qcow2 "$TMP/snap.raw"
	qemu-img snapshot -c snap1 s.qcow2
	qio_cmds qcow2 s.qcow2 "write -P 0x43 1500k 100k" "write -P 0x44 20M 64k"
	check_read s.qcow2
	# Our writes land on clusters shared with snap1 (refcount 2): copy-on-write.
	check_write s.qcow2
	head -c 200000 /dev/urandom >"$TMP/d4.bin"
	"$PWRITE" s.qcow2 10 "$TMP/d4.bin" || fail "qcow_pwrite over the snapshot's clusters"
	"$PWRITE" s.qcow2 10485760 -d 1048576 || fail "qcow_pwrite discard over the snapshot"
	qemu-img check s.qcow2 >"$TMP/check.out" 2>&1 || { cat "$TMP/check.out" >&2; fail "check"; }
	qemu-img convert -l snapshot.name=snap1 -O raw s.qcow2 "$TMP/snap.after.raw"
	cmp "$TMP/snap.raw" "$TMP/snap.after.raw" || fail "our writes changed snapshot snap1"
	qemu-img snapshot -l s.qcow2 | grep -q snap1 || fail "snapshot snap1 is gone"
}

# Features we refuse: opening must fail with a message naming the feature.
case_refused() { # create options, word the message must contain
	qemu-img create -q -f qcow2 -o "$1" r.qcow2 16M
	qio_cmds qcow2 r.qcow2 "write -P 0x51 0 64k"
	if "$DUMP" r.qcow2 "$TMP/ours.raw" 2>"$TMP/err.out"; then
		fail "opened an image with $1"
	fi
	grep -qi "$2" "$TMP/err.out" || { cat "$TMP/err.out" >&2; fail "message does not name $2"; }
}

run_case "fresh image: write, write -z, write -z -u, discard" case_fresh
run_case "fresh image: zero and discard over data" case_fresh_zero_discard_only
run_case "compressed zlib 64k" case_compressed zlib 65536
run_case "compressed zstd 64k" case_compressed zstd 65536
run_case "compressed zstd 4k" case_compressed zstd 4096
run_case "compressed zlib 512" case_compressed zlib 512
run_case "3-deep chain of qcow2" case_chain_qcow2
run_case "3-deep chain over a raw base" case_chain_raw_base
run_case "v2 image (compat=0.10)" case_v2
run_case "cluster_size=512" case_opts cluster_size=512
run_case "cluster_size=2M" case_opts cluster_size=2M
run_case "refcount_bits=1" case_opts refcount_bits=1
run_case "refcount_bits=64" case_opts refcount_bits=64
run_case "lazy_refcounts=on" case_opts lazy_refcounts=on
run_case "preallocation=metadata" case_opts preallocation=metadata
run_case "preallocation=falloc, cluster_size=4k" case_opts preallocation=falloc,cluster_size=4k
run_case "extended_l2=on is refused" case_refused extended_l2=on "extended l2"
run_case "data_file is refused" case_refused "data_file=$TMP/data.raw" "data file"
run_case "lazy refcounts, left dirty by a killed qemu-io" case_lazy_dirty
run_case "internal snapshot" case_snapshot

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
