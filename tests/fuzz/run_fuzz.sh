#!/bin/sh
# SPDX-License-Identifier: MIT
# run_fuzz.sh - builds a seed corpus of valid images in a temporary
# directory, then runs the qcow open fuzzer over it for a bounded time.
#
#   run_fuzz.sh fuzz   FUZZER SEEDMAKER ARTIFACT_DIR SECONDS   (libFuzzer)
#   run_fuzz.sh replay REPLAY  SEEDMAKER ARTIFACT_DIR SECONDS   (plain driver)
#   run_fuzz.sh seeds  SEEDMAKER DIR                   (only write the corpus)
#
# Seeds: fuzz_make_seeds (qcow_create variants) and, when qemu-img is
# installed, qemu-made images with compressed clusters (zlib and zstd),
# internal snapshots, v2, lazy refcounts (one left dirty) and extended L2.  A failing input
# is left in ARTIFACT_DIR.
set -eu

make_seeds() { # SEEDMAKER DIR
	"$1" "$2"
	if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1; then
		echo "qemu-img/qemu-io not installed: qcow_create seeds only"
		return
	fi
	s=$2 q=$2/.qemu-tmp
	mkdir -p "$q"
	qemu-img create -q -f raw "$q/r.raw" 2M
	qemu-io -f raw -c 'write -P 0x41 0 64k' -c 'write -P 0x42 1M 100k' \
		-c 'write -P 0 1536k 4k' "$q/r.raw" >/dev/null
	qemu-img convert -c -O qcow2 -o cluster_size=4096 "$q/r.raw" "$s/qemu-zlib.qcow2"
	qemu-img convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd \
		"$q/r.raw" "$s/qemu-zstd.qcow2" || true
	qemu-img create -q -f qcow2 -o cluster_size=4096 "$s/qemu-snap.qcow2" 2M
	qemu-io -c 'write -P 1 0 8k' -c 'write -P 3 1M 4k' "$s/qemu-snap.qcow2" >/dev/null
	qemu-img snapshot -c s1 "$s/qemu-snap.qcow2"
	qemu-io -c 'write -P 2 0 4k' -c 'write -z 1M 4k' "$s/qemu-snap.qcow2" >/dev/null
	qemu-img snapshot -c s2 "$s/qemu-snap.qcow2"
	qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 "$s/qemu-v2.qcow2" 2M
	qemu-io -c 'write -P 5 4k 8k' "$s/qemu-v2.qcow2" >/dev/null
	qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4096 \
		"$s/qemu-lazy.qcow2" 2M
	qemu-io -c 'write -P 6 0 12k' "$s/qemu-lazy.qcow2" >/dev/null
	# killed mid-session: dirty bit left set, refcounts stale
	qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4096 \
		"$s/qemu-lazy-dirty.qcow2" 2M
	(qemu-io -c 'write -P 7 0 12k' -c 'sigraise 9' "$s/qemu-lazy-dirty.qcow2") \
		>/dev/null 2>&1 || true
	qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16384 \
		"$s/qemu-extl2.qcow2" 2M || true
	qemu-img create -q -f qcow2 -o cluster_size=4096 -b qemu-v2.qcow2 -F qcow2 \
		"$s/qemu-backed.qcow2" 2M
	rm -rf "$q"
}

mode=$1
if [ "$mode" = seeds ]; then
	mkdir -p "$3"
	make_seeds "$2" "$3"
	exit 0
fi
bin=$2 seedmaker=$3 artifacts=$4 seconds=$5

work=$(mktemp -d "${TMPDIR:-/tmp}/qcow-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/seeds" "$work/corpus" "$artifacts"
make_seeds "$seedmaker" "$work/seeds"
ls -l "$work/seeds"

case $mode in
fuzz)
	# New units go to the first directory; seeds are only read.
	# -max_len keeps the big 64 KiB-cluster seeds from slowing every run
	# (they are cut after their tables).
	"$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
		-max_len=262144 -dict="$(dirname "$0")/qcow2.dict" \
		-print_final_stats=1 -artifact_prefix="$artifacts/" \
		"$work/corpus" "$work/seeds"
	;;
replay)
	FUZZ_ARTIFACT_DIR=$artifacts "$bin" -t "$seconds" "$work/seeds"
	;;
*)
	echo "unknown mode $mode" >&2
	exit 2
	;;
esac
