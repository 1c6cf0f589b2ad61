#!/usr/bin/env bash
# Sequential reads of a whole volume through blockfs against nbdcopy of the
# same export, side by side in the same run.  Not a test: prints the median
# time of each way and the ratio blockfs / nbdcopy (below 2: within the 2x
# that blockfs aims for; below 1: blockfs is faster).
#
#   bench/blockfs.sh [--size SIZE] [--rounds N] [--blockd PATH] [--blockctl PATH]
#                    [--blockfs PATH]
#
# One blockd serves one volume of SIZE (default 1G) filled with random bytes;
# blockfs mounts it read-only.  Every round runs, in turn:
#   nbdcopy-null  nbdcopy of the export to null: (reads only)
#   nbdcopy-file  nbdcopy of the export to a file in a tmpfs folder
#   blockfs-cat   cat MNT/vol/disk > /dev/null (128 KiB reads)
#   blockfs-dd    dd if=MNT/vol/disk of=FILE bs=1M, FILE in the same tmpfs folder
# blockfs opens the volume with its page cache dropped, so every round reads
# through NBD; the qcow2 file sits in the host's page cache for both.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:$PATH # libnbd's tools are python; a pyenv python lacks the module

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
blockd=$root/build/blockd/blockd
blockctl=$root/build/tools/blockctl
blockfs=$root/build/fuse/blockfs
size=1G
rounds=5

while (($#)); do
	case $1 in
	--size) size=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--blockd) blockd=$2; shift 2 ;;
	--blockctl) blockctl=$2; shift 2 ;;
	--blockfs) blockfs=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
for tool in nbdcopy fusermount3 python3; do
	command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

work=$(mktemp -d /tmp/blockfs-bench.XXXXXX)
out=$(mktemp -d /dev/shm/blockfs-bench.XXXXXX)
blockd_pid=
cleanup() {
	mountpoint -q "$work/mnt" && { fusermount3 -u "$work/mnt" || fusermount3 -uz "$work/mnt"; }
	[[ -n $blockd_pid ]] && kill -TERM "$blockd_pid" 2>/dev/null && wait "$blockd_pid" || true
	rm -rf "$work" "$out"
}
trap cleanup EXIT

data=$work/data
mkdir -p "$data" "$work/mnt"
"$blockd" --data-dir "$data" --listen none 2>"$work/blockd.log" &
blockd_pid=$!
for ((i = 0; i < 100; i++)); do
	grep -q ' ready' "$work/blockd.log" && break
	sleep 0.1
done
grep -q ' ready' "$work/blockd.log" || { cat "$work/blockd.log" >&2; exit 1; }
"$blockctl" --data-dir "$data" volume create vol "$size" >/dev/null
uri="nbd+unix:///vol?socket=$data/nbd.sock"
bytes=$(nbdinfo --size "$uri")
head -c "$bytes" /dev/urandom >"$out/src.raw"
nbdcopy "$out/src.raw" "$uri"
rm -f "$out/src.raw"
"$blockfs" --data-dir "$data" "$work/mnt"


# seconds CMD...: wall time of CMD.
seconds() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@"
	t1=$(date +%s.%N)
	python3 -c "print(f'{$t1 - $t0:.3f}')"
}

declare -A times
ways=(nbdcopy-null nbdcopy-file blockfs-cat blockfs-dd)
for ((r = 1; r <= rounds; r++)); do
	times[nbdcopy-null]+=" $(seconds nbdcopy "${uri/vol/vol:ro}" null:)"
	times[nbdcopy-file]+=" $(seconds nbdcopy "${uri/vol/vol:ro}" "$out/a.raw")"
	rm -f "$out/a.raw"
	times[blockfs-cat]+=" $(seconds sh -c "cat '$work/mnt/vol/disk' >/dev/null")"
	times[blockfs-dd]+=" $(seconds dd if="$work/mnt/vol/disk" of="$out/b.raw" bs=1M status=none)"
	rm -f "$out/b.raw"
done

# Read now: blockfs raises it at the first open of a disk (as root).
ra=$(cat "/sys/class/bdi/$(mountpoint -d "$work/mnt")/read_ahead_kb" 2>/dev/null || echo '?')
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "volume $size, $rounds rounds, blockfs read-ahead ${ra} KiB; median seconds (MB/s)"
for w in "${ways[@]}"; do
	m=$(median "${times[$w]}")
	printf '  %-13s %7s s  %6.0f MB/s   (all: %s)\n' "$w" "$m" \
		"$(python3 -c "print($bytes / $m / 1e6)")" "${times[$w]# }"
done
ratio() { python3 -c "print(f'{$(median "${times[$1]}") / $(median "${times[$2]}"):.2f}')"; }
echo "ratios (time, blockfs / nbdcopy):"
echo "  blockfs-dd  / nbdcopy-file  $(ratio blockfs-dd nbdcopy-file)"
echo "  blockfs-cat / nbdcopy-null  $(ratio blockfs-cat nbdcopy-null)"
