# SPDX-License-Identifier: MIT
# lib.sh - sourced by every blockctl CLI test.  $1 is the blockctl binary.
# Sets up a scratch folder (removed on exit), skips (77) without qemu-img,
# and bounds every command in time.
set -euo pipefail

BLOCKCTL=${1:?usage: $0 PATH-TO-BLOCKCTL}
BLOCKCTL=$(realpath "$BLOCKCTL")
CLI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-60}

need() {
	local tool
	for tool in "$@"; do
		if ! command -v "$tool" >/dev/null; then
			echo "SKIP: $tool is not installed"
			exit 77
		fi
	done
}
need qemu-img timeout

TMP=$(mktemp -d "${TMPDIR:-/tmp}/blockctl-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

blockctl() {
	timeout "$STEP_TIMEOUT" "$BLOCKCTL" "$@"
}

qimg() {
	timeout "$STEP_TIMEOUT" qemu-img "$@"
}

qio() {
	timeout "$STEP_TIMEOUT" qemu-io "$@"
}

# qemu_check IMAGE: qemu-img finds no errors and no leaks.
qemu_check() {
	local rc=0
	qimg check "$1" >check.out 2>&1 || rc=$?
	if [[ $rc != 0 ]] || ! grep -q "No errors were found on the image" check.out; then
		cat check.out >&2
		fail "qemu-img check $1 (status $rc)"
	fi
}

# json_field FILE KEY: the first value of "KEY" in qemu's pretty JSON.
json_field() {
	grep -o "\"$2\": [^,}]*" "$1" | head -n1 | sed 's/^[^:]*: //; s/^"//; s/"$//'
}

# expect_fail STATUS PATTERN CMD...: blockctl fails with STATUS and exactly
# one stderr line "blockctl: ..." matching the extended regex PATTERN.
expect_fail() {
	local want=$1 pattern=$2 rc=0
	shift 2
	blockctl "$@" >fail.out 2>fail.err || rc=$?
	[[ $rc == "$want" ]] || { cat fail.err >&2; fail "blockctl $* exited $rc, wanted $want"; }
	[[ $(wc -l <fail.err) == 1 ]] || { cat fail.err >&2; fail "blockctl $*: not one line on stderr"; }
	grep -q '^blockctl: ' fail.err || fail "blockctl $*: no 'blockctl: ' prefix: $(cat fail.err)"
	grep -qE -- "$pattern" fail.err || fail "blockctl $*: '$(cat fail.err)' does not match '$pattern'"
}

# allocated_bytes FILE: what the file takes on disk.
allocated_bytes() {
	echo $(($(stat -c %b "$1") * $(stat -c %B "$1")))
}

# expect_pattern IMAGE BYTE OFFSET LENGTH: qemu-io reads BYTE throughout the range.
expect_pattern() {
	local out
	out=$(qio -r -c "read -P $2 $3 $4" "$1" 2>&1) || fail "qemu-io read $*: $out"
	if grep -q 'verification failed' <<<"$out" || ! grep -qE 'read ([0-9]+)/\1 bytes' <<<"$out"; then
		fail "$1: expected $2 at $3+$4: $out"
	fi
}

# sys_python ARGS...: Debian's python3 (a pyenv on PATH may shadow it).
sys_python() {
	PATH=/usr/bin:$PATH timeout "$STEP_TIMEOUT" python3 "$@"
}

# qcow2_edit IMAGE ACTION ARGS...: damage an image on purpose (qcow2_edit.py).
qcow2_edit() {
	sys_python "$CLI_DIR/qcow2_edit.py" "$@" || fail "qcow2_edit $*"
}

# host_offset IMAGE GUEST_OFFSET: where qemu-img map says the guest byte lives.
host_offset() {
	qimg map --output=json "$1" | sys_python -c '
import json, sys
guest = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["start"] <= guest < e["start"] + e["length"] and "offset" in e:
        print(e["offset"] + guest - e["start"])
        sys.exit(0)
sys.exit("no host offset for guest offset %d" % guest)' "$2" || fail "host_offset $*"
}

# status CMD...: runs CMD and prints its exit status (never fails itself).
status() {
	local rc=0
	"$@" >status.out 2>status.err || rc=$?
	echo "$rc"
}

# check_verdict IMAGE STATUS: qemu-img check and blockctl image check (human
# and --json) both exit with STATUS.
check_verdict() {
	local rc
	rc=$(status qimg check "$1")
	[[ $rc == "$2" ]] || { cat status.out status.err >&2; fail "qemu-img check $1: $rc, wanted $2"; }
	rc=$(status blockctl image check "$1")
	[[ $rc == "$2" ]] || { cat status.out status.err >&2; fail "blockctl image check $1: $rc, wanted $2"; }
	rc=$(status blockctl image check --json "$1")
	[[ $rc == "$2" ]] || { cat status.out status.err >&2; fail "blockctl check --json $1: $rc, wanted $2"; }
}

# repair_keeps_data IMAGE: blockctl image check --repair leaves an image
# qemu-img finds clean, reading the same bytes as before the repair.
repair_keeps_data() {
	local rc
	qimg convert -O raw "$1" repair-before.raw
	rc=$(status blockctl image check --repair "$1")
	[[ $rc == 0 ]] || { cat status.out status.err >&2; fail "check --repair $1 exited $rc"; }
	grep -q 'found and repaired' status.out || fail "check --repair $1 reports no repair"
	qemu_check "$1"
	check_verdict "$1" 0
	qimg convert -O raw "$1" repair-after.raw
	cmp repair-before.raw repair-after.raw || fail "the repair of $1 changed the data"
}
