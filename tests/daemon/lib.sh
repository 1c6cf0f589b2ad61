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
# need, fail, t, start_blockd, stop_blockd, kill_blockd, tcp_uri, unix_uri.
source "$DAEMON_TEST_DIR/../blockd_lib.sh"
# libnbd's nbdsh is a python script; the pyenv python on PATH lacks the module.
export PATH=/usr/bin:$PATH
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


# new_volume DIR NAME SIZE [blockctl image create options]: a volume file
# where blockd looks for it (DIR/volumes/NAME.qcow2).
new_volume() {
	local dir=$1 name=$2 size=$3
	shift 3
	mkdir -p "$dir/volumes"
	t "$BLOCKCTL" image create "$@" "$dir/volumes/$name.qcow2" "$size" >/dev/null
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
