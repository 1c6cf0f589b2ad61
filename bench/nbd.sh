#!/usr/bin/env bash
# NBD I/O through fio's nbd engine: blockd against qemu-nbd (--cache=none
# --aio=io_uring, and --cache=writeback) serving identical qcow2 images, side
# by side in the same run.  Not a test: prints IOPS or bandwidth per row and
# the ratio blockd / qemu-nbd (above 1: blockd is faster), and the CPU
# time each server spent per request.
#
#   bench/nbd.sh [--quick] [--rows LIST] [--runtime S] [--ramp S] [--size SIZE]
#                [--blockd PATH] [--blockctl PATH] [--blockd-args 'ARGS']
#                [--rounds N] [--stand-in] [--keep DIR] [--baseline PATH]
#
# Every server gets, for every row, a fresh copy of the image in a folder of
# its own and is stopped after the row (blockd with SIGTERM: it must exit).
# The servers take turns row by row (blockd, qemu-nbd none, qemu-nbd
# writeback; then the next row) so that noise on a shared machine falls on
# all of them alike.  --baseline adds an older blockd binary as a fourth
# column, taking its turn the same way, to measure a change of blockd.
# Read rows and overwrite rows use a copy of one image whose every cluster
# was written beforehand (qemu-io, before any server starts); allocating
# rows start from an empty image.  A second table gives each server's CPU
# time per request (user + system, every thread), counted over the
# measured seconds only, like fio's I/Os.
set -euo pipefail
export PATH=/usr/bin:$PATH # nbdinfo is a python script; the pyenv python lacks its module

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
blockd=$root/build/blockd/blockd
blockctl=$root/build/tools/blockctl
blockd_args=
quick=0
rows_filter=
runtime=
ramp=
fill=
standin=0
keep=
baseline=
rounds=1

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --quick            short smoke run: 3 s per row, 1 s ramp, 256 MiB image
  --rows LIST        comma-separated row names or shell patterns (e.g. 'rr4k-*,sw1m')
  --runtime S        seconds measured per row and server (default 10; quick 3)
  --ramp S           seconds of warm-up not measured (default 2; quick 1)
  --size SIZE        size of the prefilled image for read and overwrite rows
                     (default 1G; quick 256M)
  --blockd PATH      default build/blockd/blockd
  --blockctl PATH    default build/tools/blockctl (makes the images; qemu-img if absent)
  --blockd-args ARGS extra blockd options, e.g. '--threads 2 --cache-size 64M'
  --stand-in         put qemu-nbd --cache=writeback in the blockd column (checks
                     this script without the daemon)
  --rounds N         run every row N times (servers still taking turns) and
                     print the median (default 1)
  --keep DIR         keep every fio JSON output and server log in DIR
  --baseline PATH    another blockd binary (e.g. built from an older commit) as a
                     fourth column, and the ratio blockd / baseline
Rows:
EOF
	for r in "${rows[@]}"; do printf '  %-14s %s\n' "$r" "${desc[$r]}"; done
}

# name -> fio options; image kind (full: every cluster written; empty: fresh)
declare -A fioargs desc kind
rows=()
row() { rows+=("$1"); kind[$1]=$2; desc[$1]=$3; fioargs[$1]=$4; }
row rr4k-qd1 full "4k random read QD1" "--rw=randread --bs=4k --iodepth=1"
row rr4k-qd32 full "4k random read QD32" "--rw=randread --bs=4k --iodepth=32"
row rw4k-qd1 full "4k random overwrite QD1" "--rw=randwrite --bs=4k --iodepth=1"
row rw4k-qd32 full "4k random overwrite QD32" "--rw=randwrite --bs=4k --iodepth=32"
row alloc4k-qd32 empty "4k writes each allocating a cluster QD32" "--rw=write:60k --bs=4k --iodepth=32"
row sr1m-qd8 full "1M sequential read QD8" "--rw=read --bs=1M --iodepth=8"
row sw1m-qd8 empty "1M sequential write, allocating, QD8" "--rw=write --bs=1M --iodepth=8"
row rr4k-qd32-2c full "4k random read QD32, 2 connections" "--rw=randread --bs=4k --iodepth=32 --numjobs=2"
row rw4k-qd32-2c full "4k random overwrite QD32, 2 connections" "--rw=randwrite --bs=4k --iodepth=32 --numjobs=2"

while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--rows) rows_filter=$2; shift ;;
	--runtime) runtime=$2; shift ;;
	--ramp) ramp=$2; shift ;;
	--size) fill=$2; shift ;;
	--blockd) blockd=$2; shift ;;
	--blockctl) blockctl=$2; shift ;;
	--blockd-args) blockd_args=$2; shift ;;
	--stand-in) standin=1 ;;
	--keep) keep=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--baseline) baseline=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option $1 (see --help)" >&2; exit 1 ;;
	esac
	shift
done
if [ $quick = 1 ]; then
	runtime=${runtime:-3} ramp=${ramp:-1} fill=${fill:-256M}
else
	runtime=${runtime:-10} ramp=${ramp:-2} fill=${fill:-1G}
fi
# Allocating rows stop at the end of the image or after runtime, whichever
# comes first; they never wrap around onto clusters already allocated.
# 4k every 64 KiB: 1 TiB of virtual size is 16M clusters, more than any
# server allocates in one row.  Disk use is about 64 KiB per write.
alloc_size=1T
# 1M sequential writes: capped at 8 GiB written (4 GiB quick) to bound disk use.
sw_size=8G
[ $quick = 1 ] && sw_size=4G

for tool in fio qemu-nbd qemu-img qemu-io nbdinfo python3 timeout; do
	command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
fio --enghelp=nbd >/dev/null 2>&1 || { echo "this fio has no nbd engine" >&2; exit 1; }
if [ $standin = 0 ] && [ ! -x "$blockd" ]; then
	echo "no blockd at $blockd; build first (or --stand-in to check the script)" >&2
	exit 1
fi

selected=()
for r in "${rows[@]}"; do
	if [ -z "$rows_filter" ]; then selected+=("$r"); continue; fi
	IFS=, read -ra pats <<<"$rows_filter"
	for p in "${pats[@]}"; do
		# shellcheck disable=SC2053 # the pattern is meant to glob
		if [[ $r == $p ]]; then selected+=("$r"); break; fi
	done
done
[ ${#selected[@]} -gt 0 ] || { echo "no row matches '$rows_filter' (see --help)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-nbd.XXXXXX")
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill -KILL "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
[ -n "$keep" ] && mkdir -p "$keep"

log() { echo "$*" >&2; }

mkimg() { # FILE SIZE: 64 KiB clusters either way
	if [ -x "$blockctl" ]; then
		"$blockctl" image create "$1" "$2" >/dev/null
	else
		qemu-img create -q -f qcow2 -o cluster_size=64k "$1" "$2"
	fi
}

# The prefilled image: every cluster written once, with a pattern that is not
# zero (so no server can turn reads or overwrites into zero handling).
log "prefilling a $fill image ..."
mkimg "$dir/full.qcow2" "$fill"
qemu-io -f qcow2 -c "write -q -P 0x5a 0 $fill" "$dir/full.qcow2" >/dev/null
qemu-img check -q "$dir/full.qcow2"

servers=(blockd none writeback)
notes=()
declare -A label=([blockd]=blockd [none]="qemu-nbd none" [writeback]="qemu-nbd writeback" [baseline]="blockd baseline")
if [ -n "$baseline" ]; then
	[ -x "$baseline" ] || { echo "no blockd at $baseline (--baseline)" >&2; exit 1; }
	servers+=(baseline)
fi
[ $standin = 1 ] && label[blockd]="blockd (stand-in: qemu-nbd writeback)"

# start SERVER RUNDIR: serves RUNDIR/volumes/vol.qcow2 as export "vol" on
# RUNDIR/nbd.sock; returns once nbdinfo can list the exports.
start() {
	local srv=$1 run=$2 _
	local sock=$run/nbd.sock img=$run/volumes/vol.qcow2
	local q=(qemu-nbd -f qcow2 --persistent --shared=8 --discard=unmap -k "$sock" -x vol)
	case $srv in
	blockd)
		if [ $standin = 1 ]; then
			"${q[@]}" --cache=writeback "$img" 2>"$run/server.log" &
		else
			# shellcheck disable=SC2086 # blockd_args is a list of options
			"$blockd" --data-dir "$run" --listen 127.0.0.1:0 --socket "$sock" $blockd_args 2>"$run/server.log" &
		fi ;;
	baseline)
		# shellcheck disable=SC2086 # blockd_args is a list of options
		"$baseline" --data-dir "$run" --listen 127.0.0.1:0 --socket "$sock" $blockd_args 2>"$run/server.log" & ;;
	none) "${q[@]}" --cache=none --aio=io_uring "$img" 2>"$run/server.log" & ;;
	writeback) "${q[@]}" --cache=writeback "$img" 2>"$run/server.log" & ;;
	esac
	server_pid=$!
	for _ in $(seq 1 300); do
		if ! kill -0 "$server_pid" 2>/dev/null; then
			wait "$server_pid" || true
			server_pid=
			log "${label[$srv]} exited before serving; its log:"
			tail -n 20 "$run/server.log" >&2
			return 1
		fi
		if [ -S "$sock" ] && nbdinfo --list "nbd+unix:///?socket=$sock" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	log "${label[$srv]} not serving after 30 s; its log:"
	tail -n 20 "$run/server.log" >&2
	return 1
}

# stop SERVER RUNDIR: SIGTERM, then wait up to 60 s; sets stopped to the
# seconds taken.
stop() {
	local srv=$1 t0 rc=0
	t0=$(date +%s.%N)
	kill -TERM "$server_pid" 2>/dev/null || true
	for _ in $(seq 1 600); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$server_pid" 2>/dev/null; then
		log "WARNING: ${label[$srv]} still running 60 s after SIGTERM; killing it"
		kill -KILL "$server_pid" 2>/dev/null || true
		notes+=("$row: ${label[$srv]} did not exit within 60 s of SIGTERM")
	fi
	wait "$server_pid" 2>/dev/null || rc=$?
	server_pid=
	if [ $rc != 0 ] && [ $rc != 143 ]; then
		notes+=("$row: ${label[$srv]} exited with status $rc after SIGTERM")
	fi
	stopped=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# metric ROW JSON: "IOPS MiB/s" summed over reads and writes (and over jobs:
# the jobs are grouped), or "error MESSAGE".
metric() {
	python3 - "$2" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        text = f.read()
    j = json.loads(text[text.index("{"):])  # fio may print notes before the JSON
except Exception as e:
    print("error no-json")
    sys.exit(0)
job = j["jobs"][0]
if job.get("error"):
    print("error fio-error-%d" % job["error"])
    sys.exit(0)
iops = job["read"]["iops"] + job["write"]["iops"]
mib = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 2**20
ios = job["read"]["total_ios"] + job["write"]["total_ios"]
print("%.0f %.1f %d" % (iops, mib, ios))
EOF
}

# Reads through blockd must return what was written: a fast server that
# answers with the wrong data would make every read row meaningless.
if [ $standin = 0 ]; then
	mkdir -p "$dir/verify/volumes"
	cp --sparse=always "$dir/full.qcow2" "$dir/verify/volumes/vol.qcow2"
	start blockd "$dir/verify" || exit 1
	if ! out=$(qemu-io -f raw -c "read -q -P 0x5a 0 $fill" "nbd+unix:///vol?socket=$dir/verify/nbd.sock" 2>&1) ||
		[ -n "$out" ]; then
		echo "reading the prefilled image through blockd did not return the data written: $out" >&2
		exit 1
	fi
	row=verify stopped=
	stop blockd
	rm -rf "$dir/verify"
fi

# cpu_ticks PID: user + system time of every thread of PID, in clock ticks
# (fields 14 and 15 of /proc/PID/stat, counted after the command name).
cpu_ticks() {
	local f
	read -ra f <<<"$(sed 's/.*) //' "/proc/$1/stat")"
	echo $((f[11] + f[12]))
}
hz=$(getconf CLK_TCK)

declare -A result failed cpu
n=0
for row in "${selected[@]}"; do
	for round in $(seq 1 "$rounds"); do
	for srv in "${servers[@]}"; do
		n=$((n + 1))
		run=$dir/run$n
		mkdir -p "$run/volumes"
		img=$run/volumes/vol.qcow2
		size=
		case ${kind[$row]} in
		full) cp --sparse=always "$dir/full.qcow2" "$img" ;;
		empty)
			case $row in
			alloc*) mkimg "$img" $alloc_size ;;
			*) mkimg "$img" $sw_size; size=$sw_size ;;
			esac ;;
		esac
		sync "$img"
		if ! start "$srv" "$run"; then
			failed[$row,$srv]="did not start"
			notes+=("$row: ${label[$srv]} did not start")
			continue
		fi
		timing=(--ramp_time="$ramp" --runtime="$runtime")
		[ "${kind[$row]}" = full ] && timing+=(--time_based)
		[ -n "$size" ] && timing+=(--size="$size")
		# shellcheck disable=SC2086 # fioargs is a list of options
		timeout $((runtime + ramp + 120)) \
			fio --name="$row" --ioengine=nbd --uri="nbd+unix:///vol?socket=$run/nbd.sock" \
			${fioargs[$row]} "${timing[@]}" --group_reporting \
			--output-format=json --output="$run/fio.json" >"$run/fio.log" 2>&1 &
		fio_pid=$!
		# The server's CPU time is counted from the end of the ramp, like fio's I/Os.
		sleep "$ramp"
		cpu0=$(cpu_ticks "$server_pid")
		wait "$fio_pid" || rc=$?
		cpu1=$(cpu_ticks "$server_pid")
		rc=${rc:-0}
		m=$(metric "$row" "$run/fio.json")
		if [ "$rc" = 124 ]; then
			m="error hang"
			notes+=("$row: fio against ${label[$srv]} still running $((runtime + ramp + 120)) s after start; killed")
		elif [ "$rc" != 0 ] && [ "${m%% *}" != error ]; then
			m="error fio-exit-$rc"
		fi
		if [ "${m%% *}" = error ]; then
			log "--- fio output ($row, ${label[$srv]}):"
			tail -n 30 "$run/fio.log" >&2
			if [ -s "$run/fio.json" ]; then grep -m5 -i 'error\|err=' "$run/fio.json" >&2 || true; fi
			[ "$rc" = 124 ] || notes+=("$row: ${label[$srv]}: ${m#error }")
		fi
		rc=
		stop "$srv" "$run"
		# The image a server wrote must still be a sound qcow2 image.
		if ! check=$(qemu-img check "$img" 2>&1); then
			notes+=("$row: qemu-img check failed on the image ${label[$srv]} served: $(echo "$check" | tail -n 3 | tr '\n' ' ')")
		fi
		if [ "${m%% *}" = error ]; then
			failed[$row,$srv]=${failed[$row,$srv]:-${m#error }}
		else
			read -r iops mib ios <<<"$m"
			case $row in *1m*) v=$mib ;; *) v=$iops ;; esac
			result[$row,$srv]+="$v "
			us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$hz" -v n="$ios" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')
			cpu[$row,$srv]+="$us "
			m+=" $us"
		fi
		log "$(printf '%-14s %2d %-38s %s  (IOPS MiB/s I/Os server-CPU-us/request; exit after SIGTERM: %s s)' "$row" "$round" "${label[$srv]}" "$m" "$stopped")"
		if [ -n "$keep" ]; then
			for f in fio.json fio.log server.log; do
				cp "$run/$f" "$keep/$row.$round.$srv.$f" 2>/dev/null || true
			done
		fi
		rm -rf "$run"
	done
	done
done

# median VALUES...: the median of the numbers given.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# value ROW SERVER: the row's figure (IOPS for 4k rows, MiB/s for 1M rows),
# the median over the rounds; "err" if any round failed.
value() {
	if [ -n "${failed[$1,$2]:-}" ] || [ -z "${result[$1,$2]:-}" ]; then echo err; return; fi
	# shellcheck disable=SC2086 # one value per round
	median ${result[$1,$2]}
}
# cpu_cell ROW SERVER: the median server CPU time per request, in microseconds.
cpu_cell() {
	if [ -n "${failed[$1,$2]:-}" ] || [ -z "${cpu[$1,$2]:-}" ]; then echo "-"; return; fi
	# shellcheck disable=SC2086 # one value per round
	median ${cpu[$1,$2]}
}
cell() {
	local v
	v=$(value "$1" "$2")
	case $v in
	err) echo "FAILED: ${failed[$1,$2]:-error}" ;;
	*) case $1 in
		*1m*) printf '%.0f MiB/s' "$v" ;;
		*) awk -v v="$v" 'BEGIN { if (v >= 10000) printf "%.1fk IOPS", v / 1000; else printf "%d IOPS", v }' ;;
		esac ;;
	esac
}
ratio() {
	local a b
	a=$(value "$1" blockd) b=$(value "$1" "$2")
	if [ "$a" = err ] || [ "$b" = err ]; then echo "-"; return; fi
	awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

echo
echo "fio $(fio --version | sed 's/^fio-//'), nbd engine; ${runtime} s per row after ${ramp} s ramp$([ "$rounds" -gt 1 ] && echo ", median of $rounds rounds"); prefilled image ${fill}, 64 KiB clusters$([ $standin = 1 ] && echo "; STAND-IN: the blockd column is qemu-nbd --cache=writeback")"
echo
if [ -n "$baseline" ]; then
	echo "| row | blockd | qemu-nbd none | qemu-nbd writeback | blockd baseline | ratio vs none | ratio vs writeback | ratio vs baseline |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
else
	echo "| row | blockd | qemu-nbd none | qemu-nbd writeback | ratio vs none | ratio vs writeback |"
	echo "|---|---:|---:|---:|---:|---:|"
fi
for row in "${selected[@]}"; do
	if [ -n "$baseline" ]; then
		echo "| ${desc[$row]} (\`$row\`) | $(cell "$row" blockd) | $(cell "$row" none) | $(cell "$row" writeback) | $(cell "$row" baseline) | $(ratio "$row" none) | $(ratio "$row" writeback) | $(ratio "$row" baseline) |"
	else
		echo "| ${desc[$row]} (\`$row\`) | $(cell "$row" blockd) | $(cell "$row" none) | $(cell "$row" writeback) | $(ratio "$row" none) | $(ratio "$row" writeback) |"
	fi
done
echo
echo "ratio = blockd / the other server (above 1: blockd is faster)"
echo
echo "Server CPU time per request in microseconds (user + system, every thread; median; below: less CPU)"
echo
header="| row |"
for srv in "${servers[@]}"; do header+=" ${label[$srv]} |"; done
echo "$header"
echo "|---|$(for _ in "${servers[@]}"; do printf -- '---:|'; done)"
for row in "${selected[@]}"; do
	line="| \`$row\` |"
	for srv in "${servers[@]}"; do line+=" $(cpu_cell "$row" "$srv") |"; done
	echo "$line"
done
if [ ${#notes[@]} -gt 0 ]; then
	echo
	echo "Notes:"
	for note in "${notes[@]}"; do echo "- $note"; done
fi
