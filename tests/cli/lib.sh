# SPDX-License-Identifier: MIT
# lib.sh - sourced by every blockctl CLI test.  $1 is the blockctl binary.
# Sets up a scratch folder (removed on exit), skips (77) without qemu-img,
# and bounds every command in time.  The helpers all tests share are in
# ../lib.sh; here are those of the image commands' tests: qemu's JSON,
# patterns, damaged images and check verdicts.
set -euo pipefail

BLOCKCTL=${1:?usage: $0 PATH-TO-BLOCKCTL}
BLOCKCTL=$(realpath "$BLOCKCTL")
CLI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-60}

source "$CLI_DIR/../lib.sh"
need qemu-img timeout
scratch_dir blockctl-test

# json_field FILE KEY: the first value of "KEY" in qemu's pretty JSON.
json_field() {
	grep -o "\"$2\": [^,}]*" "$1" | head -n1 | sed 's/^[^:]*: //; s/^"//; s/"$//'
}

# expect_pattern IMAGE BYTE OFFSET LENGTH: qemu-io reads BYTE throughout the range.
expect_pattern() {
	local out
	out=$(qio -r -c "read -P $2 $3 $4" "$1" 2>&1) || fail "qemu-io read $*: $out"
	if grep -q 'verification failed' <<<"$out" || ! grep -qE 'read ([0-9]+)/\1 bytes' <<<"$out"; then
		fail "$1: expected $2 at $3+$4: $out"
	fi
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
