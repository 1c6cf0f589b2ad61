# SPDX-License-Identifier: MIT
# lib.sh - sourced by every daemon test.  $1 is the blockd binary, $2 the
# blockctl binary.  Sets up a scratch folder (removed on exit, with any
# daemon still running stopped), skips (77) when a needed tool is missing,
# and bounds every command in time.
set -euo pipefail

BLOCKD=$(realpath "${1:?usage: $0 PATH-TO-BLOCKD PATH-TO-BLOCKCTL}")
BLOCKCTL=$(realpath "${2:?usage: $0 PATH-TO-BLOCKD PATH-TO-BLOCKCTL}")
DAEMON_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-120}
# libnbd's nbdsh is a python script; the pyenv python on PATH lacks the module.
export PATH=/usr/bin:$PATH

need() {
	local tool
	for tool in "$@"; do
		if ! command -v "$tool" >/dev/null; then
			echo "SKIP: $tool is not installed"
			exit 77
		fi
	done
}
need timeout qemu-img nbdinfo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/blockd-test.XXXXXX")
BLOCKD_PID=
cleanup() {
	if [[ -n $BLOCKD_PID ]]; then
		kill -KILL "$BLOCKD_PID" 2>/dev/null || true
		wait "$BLOCKD_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP"

fail() {
	echo "FAIL: $*" >&2
	if [[ -f ${BLOCKD_LOG:-/nonexistent} ]]; then
		echo "--- blockd log (last 40 lines)" >&2
		tail -n 40 "$BLOCKD_LOG" >&2
	fi
	exit 1
}

t() {
	timeout "$STEP_TIMEOUT" "$@"
}

# new_volume DIR NAME SIZE [blockctl image create options]: a volume file
# where blockd looks for it (DIR/volumes/NAME.qcow2).
new_volume() {
	local dir=$1 name=$2 size=$3
	shift 3
	mkdir -p "$dir/volumes"
	t "$BLOCKCTL" image create "$@" "$dir/volumes/$name.qcow2" "$size" >/dev/null
}

# start_blockd DIR [blockd options...]: starts blockd in the background on
# DIR with TCP on a free 127.0.0.1 port and the unix socket DIR/nbd.sock,
# and waits until it answers.  Sets BLOCKD_PID, BLOCKD_PORT, BLOCKD_SOCK,
# BLOCKD_LOG (DIR/blockd.log, appended to), and the URI helpers below.
start_blockd() {
	local dir=$1 i skip new
	shift
	BLOCKD_DIR=$dir
	BLOCKD_SOCK=$dir/nbd.sock
	BLOCKD_LOG=$dir/blockd.log
	mkdir -p "$dir"
	touch "$BLOCKD_LOG"
	# Only this daemon's lines count: a restart on the same folder appends.
	skip=$(wc -l <"$BLOCKD_LOG")
	"$BLOCKD" --data-dir "$dir" --listen 127.0.0.1:0 --socket "$BLOCKD_SOCK" "$@" \
		2>>"$BLOCKD_LOG" &
	BLOCKD_PID=$!
	for ((i = 0; i < 200; i++)); do
		if ! kill -0 "$BLOCKD_PID" 2>/dev/null; then
			wait "$BLOCKD_PID" || true
			BLOCKD_PID=
			fail "blockd exited during start-up"
		fi
		new=$(tail -n +"$((skip + 1))" "$BLOCKD_LOG")
		BLOCKD_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$new" |
			tail -n1)
		if [[ -n $BLOCKD_PORT ]] && grep -q " ready" <<<"$new"; then
			return 0
		fi
		sleep 0.05
	done
	fail "blockd did not become ready in 10 s"
}

# stop_blockd: SIGTERM, then the daemon must exit 0 within STEP_TIMEOUT.
stop_blockd() {
	local rc=0 i
	kill -TERM "$BLOCKD_PID"
	for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
		kill -0 "$BLOCKD_PID" 2>/dev/null || break
		sleep 0.1
	done
	wait "$BLOCKD_PID" || rc=$?
	BLOCKD_PID=
	[[ $rc == 0 ]] || fail "blockd exited with status $rc after SIGTERM"
}

# kill_blockd: SIGKILL, as a crash would.
kill_blockd() {
	kill -KILL "$BLOCKD_PID"
	wait "$BLOCKD_PID" 2>/dev/null || true
	BLOCKD_PID=
}

# tcp_uri NAME / unix_uri NAME: NBD URIs of an export.
tcp_uri() {
	echo "nbd://127.0.0.1:$BLOCKD_PORT/$1"
}
unix_uri() {
	echo "nbd+unix:///$1?socket=$BLOCKD_SOCK"
}

# qemu_check IMAGE: qemu-img finds no errors and no leaks.
qemu_check() {
	local rc=0 out
	out=$(t qemu-img check "$1" 2>&1) || rc=$?
	if [[ $rc != 0 ]] || ! grep -q "No errors were found on the image" <<<"$out"; then
		echo "$out" >&2
		fail "qemu-img check $1 (status $rc)"
	fi
}
