#!/usr/bin/env bash
# Snapshot create and delete on an image with 16 GiB allocated in 64 KiB
# clusters (262144 data clusters): blockctl and qemu-img side by side, on
# identical copies, in the same run.  Not a test: prints times and ratios.
#
#   bench/snapshot.sh [path/to/blockctl] [rounds]
set -euo pipefail

blockctl=${1:-build/tools/blockctl}
rounds=${2:-3}
command -v qemu-img >/dev/null || { echo "needs qemu-img (qemu-utils)"; exit 1; }
[ -x "$blockctl" ] || { echo "no blockctl at $blockctl; build first"; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# preallocation=metadata allocates every cluster (L2 entries and refcounts)
# without writing 16 GiB of data: the metadata work of a snapshot is the same.
qemu-img create -q -f qcow2 -o cluster_size=64k,preallocation=metadata "$dir/base.qcow2" 16G

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

printf '%-8s %-10s %12s %12s %8s\n' round op blockctl_s qemu-img_s ratio
for r in $(seq 1 "$rounds"); do
	cp --sparse=always "$dir/base.qcow2" "$dir/ours.qcow2"
	cp --sparse=always "$dir/base.qcow2" "$dir/theirs.qcow2"
	sync

	t0=$(now); "$blockctl" image snapshot create "$dir/ours.qcow2" snap; t1=$(now)
	qemu-img snapshot -c snap "$dir/theirs.qcow2"; t2=$(now)
	ours=$(elapsed "$t0" "$t1"); theirs=$(elapsed "$t1" "$t2")
	printf '%-8s %-10s %12.3f %12.3f %8s\n' "$r" create "$ours" "$theirs" "$(ratio "$ours" "$theirs")"

	t0=$(now); "$blockctl" image snapshot delete "$dir/ours.qcow2" snap; t1=$(now)
	qemu-img snapshot -d snap "$dir/theirs.qcow2"; t2=$(now)
	ours=$(elapsed "$t0" "$t1"); theirs=$(elapsed "$t1" "$t2")
	printf '%-8s %-10s %12.3f %12.3f %8s\n' "$r" delete "$ours" "$theirs" "$(ratio "$ours" "$theirs")"

	qemu-img check -q "$dir/ours.qcow2"
done
echo "ratio = blockctl time / qemu-img time (below 1: blockctl is faster)"
