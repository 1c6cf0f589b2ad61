# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# lib.sh - the helpers every shell test shares, each defined once: skipping,
# failing, time-bounded steps, a scratch folder cleaned up on exit, wrappers
# for qemu-img, qemu-io, blockctl and Debian's python3, JSON queries, qcow2
# checks, and a blockd for the test.
#
# Sourced by the folder libs (cli/lib.sh, daemon/lib.sh, fuse/lib.sh), which
# keep what is specific to their folder, and by the scripts that have no
# folder lib (proto/client_peer.sh, integration/test_qemu_written.sh).
# Sourcing it defines functions and a few variables and sets no shell
# options.  The caller sets STEP_TIMEOUT (seconds) before using t or a
# wrapper, BLOCKCTL (the binary) before blockctl or expect_fail, and BLOCKD
# before start_blockd.

# Debian's python3: it has libnbd's nbd module, which a pyenv python3 on
# PATH lacks.
PYTHON=/usr/bin/python3
# The scratch folder (scratch_dir), removed on exit.
TMP=
# Background helpers the test started, killed (SIGKILL) and reaped on exit.
HELPER_PIDS=()
# Commands (at_exit) run first on exit.
AT_EXIT=()
# Files fail shows the end of, besides blockd's log.
FAIL_LOGS=()
# Every time bound here (t, wait_until, starting and stopping blockd) is
# multiplied by this: ctest sets it in sanitizer builds, which run several
# times slower.  Bounds catch hangs; they say nothing about speed.
TEST_TIME_SCALE=${TEST_TIME_SCALE:-1}
# The blockd start_blockd started, while it runs, and its log.
BLOCKD_PID=
BLOCKD_LOG=

# --- skipping and failing

# skip WHY...: the test is skipped (exit 77).
skip() {
	echo "SKIP: $*"
	exit 77
}

# need TOOL...: the test is skipped unless every TOOL is installed.
need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || skip "$tool is not installed"
	done
}

# need_python_nbd: the test is skipped unless $PYTHON has the nbd module.
need_python_nbd() {
	"$PYTHON" -c 'import nbd' 2>/dev/null || skip "$PYTHON has no nbd module"
}

# fail MESSAGE: the test fails (exit 1), showing MESSAGE and the last 40
# lines of blockd's log (if a blockd ran) and of every file in FAIL_LOGS.
fail() {
	local log
	echo "FAIL: $*" >&2
	for log in ${BLOCKD_LOG:+"$BLOCKD_LOG"} "${FAIL_LOGS[@]}"; do
		[[ -s $log ]] || continue
		echo "--- $log (last 40 lines)" >&2
		tail -n 40 "$log" >&2
	done
	exit 1
}

# t CMD...: CMD, killed after STEP_TIMEOUT seconds (times TEST_TIME_SCALE).
t() {
	timeout "$((STEP_TIMEOUT * TEST_TIME_SCALE))" "$@"
}

# wait_until SECONDS WHAT CMD...: CMD succeeds within SECONDS (tried every
# 0.1 s), else the test fails with the message WHAT.  WHAT is expanded only
# then: give it in single quotes and its $(...) show the state at the end.
wait_until() {
	local secs=$(($1 * TEST_TIME_SCALE)) what=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	"$@" && return 0
	eval "what=\"$what\""
	fail "$what (waited $secs s)"
}

# --- the scratch folder and what is left running

# scratch_dir NAME: makes the folder TMP (${TMPDIR:-/tmp}/NAME.XXXXXX), runs
# cleanup when the test exits, and changes into TMP.
scratch_dir() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	trap cleanup EXIT
	cd "$TMP" || exit 1
}

# at_exit CMD [ARGS...]: cleanup runs CMD first when the test exits (its
# failure is ignored).
at_exit() {
	AT_EXIT+=("$(printf '%q ' "$@")")
}

# cleanup: the EXIT trap.  Runs the at_exit commands, kills the background
# helpers in HELPER_PIDS, takes down every FUSE and loop mount under TMP
# (deepest first), kills a blockd still running, then removes TMP (unless a
# mount could not be taken down).  The test keeps its exit status.
cleanup() {
	local rc=$? cmd pid m
	for cmd in "${AT_EXIT[@]}"; do
		eval "$cmd" || true
	done
	for pid in "${HELPER_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $TMP ]]; then
		# Deepest first: loop mounts of files inside a FUSE mount go before it.
		while read -r m; do
			[[ -n $m ]] || continue
			if awk -v d="$m" '$2 == d && $3 ~ /^fuse/ { f = 1 } END { exit !f }' /proc/self/mounts; then
				timeout 10 fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
			else
				timeout 10 umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
			fi
		done < <(awk -v t="$TMP/" 'index($2, t) == 1 { print length($2), $2 }' /proc/self/mounts |
			sort -rn | cut -d' ' -f2-)
	fi
	if [[ -n $BLOCKD_PID ]]; then
		kill -KILL "$BLOCKD_PID" 2>/dev/null || true
		wait "$BLOCKD_PID" 2>/dev/null || true
	fi
	if [[ -n $TMP ]]; then
		if awk -v t="$TMP/" 'index($2, t) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
			echo "cleanup: mounts left under $TMP, not removing it" >&2
		else
			rm -rf "$TMP" || true
		fi
	fi
	exit "$rc"
}

# --- the tools, bounded in time

# blockctl ARGS...: the blockctl under test.
blockctl() {
	t "$BLOCKCTL" "$@"
}

# qimg ARGS...: qemu-img.
qimg() {
	t qemu-img "$@"
}

# qio ARGS...: qemu-io ARGS; the test fails if qemu-io exits non-zero or
# reports an error, a failure or a pattern mismatch.  Prints qemu-io's
# output (stdout and stderr).
qio() {
	local out rc=0
	out=$(t qemu-io "$@" 2>&1) || rc=$?
	if [[ $rc != 0 ]] || grep -qi 'fail\|error\|mismatch' <<<"$out"; then
		echo "$out" >&2
		fail "qemu-io $* (status $rc)"
	fi
	echo "$out"
}

# qio_cmds FORMAT IMAGE CMD...: qio -f FORMAT -c CMD... IMAGE (an image
# file or an NBD URI), quietly.
qio_cmds() {
	local fmt=$1 img=$2 c args=()
	shift 2
	for c in "$@"; do
		args+=(-c "$c")
	done
	qio -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# sys_python ARGS...: $PYTHON, with /usr/bin first on its PATH.
sys_python() {
	PATH=/usr/bin:$PATH t "$PYTHON" "$@"
}

# json EXPR [FILE]: EXPR evaluated with d bound to the JSON document in
# FILE (default resp, where api leaves the last answer); a boolean prints
# as true or false and None as null, as JSON spells them.
json() {
	sys_python -c 'import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("null" if v is None else str(v).lower() if isinstance(v, bool) else v)' \
		"${2:-resp}" "$1"
}

# --- judging images and commands

# qemu_check IMAGE: qemu-img finds no errors and no leaks.
qemu_check() {
	local rc=0 out
	out=$(qimg check "$1" 2>&1) || rc=$?
	if [[ $rc != 0 ]] || ! grep -q "No errors were found on the image" <<<"$out"; then
		echo "$out" >&2
		fail "qemu-img check $1 (status $rc)"
	fi
}

# dirty_bit IMAGE: 1 if the qcow2 header's dirty bit (incompatible feature
# bit 0, byte 79) is set, else 0.
dirty_bit() {
	echo $(($(od -An -tu1 -j79 -N1 "$1") & 1))
}

# allocated_bytes FILE: what the file takes on disk.
allocated_bytes() {
	echo $(($(stat -c %b "$1") * $(stat -c %B "$1")))
}

# expect_fail STATUS PATTERN ARGS...: blockctl ARGS fails with STATUS and
# exactly one stderr line "blockctl: ..." matching the extended regex
# PATTERN.  Its output is left in fail.out and fail.err.
expect_fail() {
	local want=$1 pattern=$2 rc=0
	shift 2
	blockctl "$@" >fail.out 2>fail.err || rc=$?
	[[ $rc == "$want" ]] || { cat fail.err >&2; fail "blockctl $* exited $rc, wanted $want"; }
	[[ $(wc -l <fail.err) == 1 ]] || { cat fail.err >&2; fail "blockctl $*: not one line on stderr"; }
	grep -q '^blockctl: ' fail.err || fail "blockctl $*: no 'blockctl: ' prefix: $(cat fail.err)"
	grep -qE -- "$pattern" fail.err || fail "blockctl $*: '$(cat fail.err)' does not match '$pattern'"
}

# --- a blockd for the test

# start_blockd DIR [blockd options...]: starts blockd in the background on
# DIR with TCP on a free 127.0.0.1 port and the unix socket DIR/nbd.sock,
# and waits until it answers.  Sets BLOCKD_PID, BLOCKD_PORT, BLOCKD_DIR,
# BLOCKD_SOCK and BLOCKD_LOG (DIR/blockd.log, appended to).
# shellcheck disable=SC2034 # BLOCKD_DIR is for the callers
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
	for ((i = 0; i < 200 * TEST_TIME_SCALE; i++)); do
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
	fail "blockd did not become ready in $((10 * TEST_TIME_SCALE)) s"
}

# stop_blockd: SIGTERM, then the daemon must exit 0 within STEP_TIMEOUT.
stop_blockd() {
	local rc=0 i limit=$((STEP_TIMEOUT * TEST_TIME_SCALE))
	kill -TERM "$BLOCKD_PID"
	for ((i = 0; i < limit * 10; i++)); do
		kill -0 "$BLOCKD_PID" 2>/dev/null || break
		sleep 0.1
	done
	((i < limit * 10)) || fail "blockd still running $limit s after SIGTERM"
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
