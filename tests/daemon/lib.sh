# SPDX-License-Identifier: MIT
# lib.sh - sourced by every daemon test.  $1 is the blockd binary, $2 the
# blockctl binary.  Sets up a scratch folder (removed on exit, with any
# daemon still running stopped), skips (77) when a needed tool is missing,
# and bounds every command in time.  The helpers all tests share (a blockd
# for the test among them) are in ../lib.sh.
set -euo pipefail

BLOCKD=$(realpath "${1:?usage: $0 PATH-TO-BLOCKD PATH-TO-BLOCKCTL}")
BLOCKCTL=$(realpath "${2:?usage: $0 PATH-TO-BLOCKD PATH-TO-BLOCKCTL}")
DAEMON_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-120}
source "$DAEMON_TEST_DIR/../lib.sh"
# libnbd's nbdsh is a python script; the pyenv python on PATH lacks the module.
export PATH=/usr/bin:$PATH
need timeout qemu-img nbdinfo
scratch_dir blockd-test

# new_volume DIR NAME SIZE [blockctl image create options]: a volume file
# where blockd looks for it (DIR/volumes/NAME.qcow2).
new_volume() {
	local dir=$1 name=$2 size=$3
	shift 3
	mkdir -p "$dir/volumes"
	blockctl image create "$@" "$dir/volumes/$name.qcow2" "$size" >/dev/null
}
