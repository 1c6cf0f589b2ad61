# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# blockd_lib.sh - skipping, failing, time-bounded steps and a blockd for a test
# script, sourced by tests/daemon/lib.sh and tests/fuse/lib.sh.  Needs
# STEP_TIMEOUT, and $BLOCKD (the binary) to start a daemon.

# need TOOL...: the test is skipped (77) unless every TOOL is installed.
need() {
	local tool
	for tool in "$@"; do
		if ! command -v "$tool" >/dev/null; then
			echo "SKIP: $tool is not installed"
			exit 77
		fi
	done
}

# fail MESSAGE: the test fails, with the end of blockd's log if one ran.
fail() {
	echo "FAIL: $*" >&2
	if [[ -s ${BLOCKD_LOG:-/nonexistent} ]]; then
		echo "--- blockd log (last 40 lines)" >&2
		tail -n 40 "$BLOCKD_LOG" >&2
	fi
	exit 1
}

# t CMD...: CMD, killed after STEP_TIMEOUT seconds.
t() {
	timeout "$STEP_TIMEOUT" "$@"
}

# start_blockd DIR [blockd options...]: starts blockd in the background on
# DIR with TCP on a free 127.0.0.1 port and the unix socket DIR/nbd.sock,
# and waits until it answers.  Sets BLOCKD_PID, BLOCKD_PORT, BLOCKD_DIR,
# BLOCKD_SOCK and BLOCKD_LOG (DIR/blockd.log, appended to).
start_blockd() {
	local dir i skip new
	[[ -n $BLOCKD ]] || fail "start_blockd: no blockd binary given"
	dir=$(realpath -m "$1")
	shift
	BLOCKD_DIR=$dir
	BLOCKD_SOCK=$dir/nbd.sock
	BLOCKD_LOG=$dir/blockd.log
	mkdir -p "$dir"
	touch "$BLOCKD_LOG"
	# Only this daemon's lines count: a restart on the same folder appends.
	skip=$(wc -l <"$BLOCKD_LOG")
	"$BLOCKD" --data-dir "$dir" --listen 127.0.0.1:0 --socket "$BLOCKD_SOCK" "$@" \
		2>>"$BLOCKD_LOG" </dev/null &
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
	((i < STEP_TIMEOUT * 10)) || fail "blockd still running $STEP_TIMEOUT s after SIGTERM"
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
