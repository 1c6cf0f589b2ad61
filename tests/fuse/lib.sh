# SPDX-License-Identifier: MIT
# lib.sh - sourced by every blockfs test.  $1 is the blockfs binary, $2 the
# blockctl binary, $3 (tests of the daemon mode) the blockd binary.  Sets up
# a scratch folder (on exit background helpers are stopped, every FUSE and
# loop mount under it is taken down, a blockd still running is killed, then
# it is removed), skips (77) without /dev/fuse or a needed tool, and bounds
# every command in time.  The helpers all tests share are in ../lib.sh;
# here are blockfs's: mounting and unmounting it, its refusals, blockd's
# control API, and ext4 on a disk judged by e2fsprogs.
set -euo pipefail

USAGE="usage: $0 PATH-TO-BLOCKFS PATH-TO-BLOCKCTL [PATH-TO-BLOCKD]"
BLOCKFS=$(realpath "${1:?$USAGE}")
BLOCKCTL=$(realpath "${2:?$USAGE}")
BLOCKD=
if [[ -n ${3:-} ]]; then
	BLOCKD=$(realpath "$3")
fi
FUSE_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=${STEP_TIMEOUT:-30}
source "$FUSE_TEST_DIR/../lib.sh"
# Debian's python3 and e2fsprogs (a pyenv on PATH may shadow python3).
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
need timeout fusermount3 qemu-img flock python3
[[ -c /dev/fuse && -r /dev/fuse && -w /dev/fuse ]] || skip "/dev/fuse is not usable"
[[ -x $BLOCKFS ]] || { echo "FAIL: $BLOCKFS is not an executable" >&2; exit 1; }
[[ -x $BLOCKCTL ]] || { echo "FAIL: $BLOCKCTL is not an executable" >&2; exit 1; }
[[ -z $BLOCKD || -x $BLOCKD ]] || { echo "FAIL: $BLOCKD is not an executable" >&2; exit 1; }

scratch_dir blockfs-test

# mounted DIR: DIR is a mount point right now (per the kernel's table).
mounted() {
	local dir
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts
}

# blockfs_mount MOUNTPOINT [OPTIONS...] IMAGE: blockfs --image IMAGE OPTIONS
# MOUNTPOINT returns 0 within the step timeout, having backgrounded itself,
# and the mount is there as soon as it returns.
blockfs_mount() {
	local mnt=$1 rc=0
	shift
	local img=${*: -1}
	local opts=("${@:1:$#-1}")
	mkdir -p "$mnt"
	# Output to files: a daemon that kept a pipe open would hang $(...).
	t "$BLOCKFS" --image "$img" "${opts[@]}" "$mnt" >mount.out 2>mount.err </dev/null || rc=$?
	[[ $rc == 0 ]] || fail "blockfs --image $img ${opts[*]} $mnt exited $rc: $(cat mount.out mount.err)"
	mounted "$mnt" || fail "blockfs --image $img ${opts[*]} $mnt returned 0 but $mnt is not mounted"
	[[ -e $mnt/disk ]] || fail "blockfs returned 0 but $mnt/disk is not there: $(ls -la "$mnt" 2>&1)"
}

# wait_released IMAGE: no process holds a flock on IMAGE any more (blockfs
# closes the image once unmounted), within 10 s.
wait_released() {
	local i
	for ((i = 0; i < 100; i++)); do
		if flock -n -x "$1" true 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	fail "$1 is still locked 10 s after its blockfs mount went away"
}

# blockfs_unmount MOUNTPOINT IMAGE: fusermount3 -u works, the mount table no
# longer lists MOUNTPOINT, and blockfs lets go of IMAGE.
blockfs_unmount() {
	local out rc=0
	out=$(t fusermount3 -u "$1" 2>&1) || rc=$?
	[[ $rc == 0 ]] || fail "fusermount3 -u $1 exited $rc: $out"
	! mounted "$1" || fail "$1 is still in the mount table after fusermount3 -u"
	wait_released "$2"
}

# expect_refused PATTERN BLOCKFS-ARGS...: blockfs exits non-zero within 10 s
# with exactly one stderr line "blockfs: ..." matching the extended regex
# PATTERN, and the mount point (the last argument) is not mounted.
# $REFUSE_WHY, if set, says in failure messages why it should refuse.
expect_refused() {
	local pattern=$1 rc=0 start end
	shift
	local why=${REFUSE_WHY:+ ($REFUSE_WHY)}
	local mnt=${*: -1}
	mkdir -p "$mnt"
	start=$(date +%s)
	timeout 10 "$BLOCKFS" "$@" >refused.out 2>refused.err </dev/null || rc=$?
	end=$(date +%s)
	if mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
		fail "blockfs $* mounted (exit $rc) but should have been refused$why"
	fi
	[[ $rc != 0 ]] || fail "blockfs $* exited 0 but should have been refused$why"
	[[ $rc != 124 ]] || fail "blockfs $* hung (killed after 10 s): $(cat refused.err)"
	((end - start <= 5)) || fail "blockfs $* took $((end - start)) s to refuse"
	[[ $(wc -l <refused.err) == 1 ]] ||
		fail "blockfs $*: not one line on stderr: '$(cat refused.err)'"
	grep -q '^blockfs: ' refused.err || fail "blockfs $*: no 'blockfs: ' prefix: $(cat refused.err)"
	grep -qE -- "$pattern" refused.err ||
		fail "blockfs $*: '$(cat refused.err)' does not match '$pattern'"
	[[ ! -s refused.out ]] || fail "blockfs $*: wrote to stdout: $(cat refused.out)"
}

# expect_errno ERROR WHAT CMD...: CMD fails, saying ERROR (strerror's text
# for the errno wanted); its output is left in errno.out.
expect_errno() {
	local err=$1 what=$2 rc=0
	shift 2
	"$@" >errno.out 2>&1 || rc=$?
	[[ $rc != 0 ]] || fail "$what succeeded, wanted '$err': $(cat errno.out)"
	grep -q "$err" errno.out || fail "$what: want '$err', got status $rc: $(cat errno.out)"
}

# expect_erofs WHAT CMD...: CMD fails and says "Read-only file system".
expect_erofs() {
	expect_errno 'Read-only file system' "$@"
}

# --- the daemon mode: blockd, its control API, blockfs on it.

# api_get PATH: the body of GET PATH on blockd's control socket; fails
# unless blockd answers 200.
api_get() {
	sys_python - "$BLOCKD_DIR/control.sock" "$1" <<'EOF_PY'
import http.client, socket, sys

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(sys.argv[1])

c = Conn("localhost")
c.request("GET", sys.argv[2])
r = c.getresponse()
body = r.read()
if r.status != 200:
    sys.exit("GET %s: %d %s" % (sys.argv[2], r.status, body[:200]))
sys.stdout.buffer.write(body)
EOF_PY
}

# running PID: PID is a live process (a zombie whose parent has not reaped
# it, as a backgrounded blockfs may be, has exited).
running() {
	local state
	state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# blockfs_pid MOUNTPOINT: the pid of the blockfs serving the absolute
# MOUNTPOINT (its last argument), if any runs.
blockfs_pid() {
	local p args
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == "$BLOCKFS" ]] || continue
		mapfile -d '' args <"$p/cmdline" 2>/dev/null || continue
		if ((${#args[@]} > 0)) && [[ ${args[-1]} == "$1" ]]; then
			echo "${p#/proc/}"
			return 0
		fi
	done
}

# blockfs_daemon_mount MOUNTPOINT [OPTIONS...]: blockfs OPTIONS MOUNTPOINT
# (daemon mode) returns 0 within the step timeout, having backgrounded
# itself, and the tree can be listed as soon as it returns.
blockfs_daemon_mount() {
	local mnt rc=0
	mnt=$(realpath -m "$1")
	shift
	mkdir -p "$mnt"
	t "$BLOCKFS" "$@" "$mnt" >mount.out 2>mount.err </dev/null || rc=$?
	[[ $rc == 0 ]] || fail "blockfs $* $mnt exited $rc: $(cat mount.out mount.err)"
	mounted "$mnt" || fail "blockfs $* $mnt returned 0 but $mnt is not mounted"
	[[ -n $(blockfs_pid "$mnt") ]] || fail "blockfs $* $mnt returned 0 but no blockfs serves it"
	t ls "$mnt" >/dev/null 2>ls.err || fail "blockfs $* $mnt: ls of the mount fails: $(cat ls.err)"
}

# blockfs_daemon_unmount MOUNTPOINT: fusermount3 -u works, the mount table
# no longer lists MOUNTPOINT, and its blockfs exits within 10 s.
blockfs_daemon_unmount() {
	local mnt out rc=0 pid i
	mnt=$(realpath -m "$1")
	pid=$(blockfs_pid "$mnt")
	out=$(t fusermount3 -u "$mnt" 2>&1) || rc=$?
	[[ $rc == 0 ]] || fail "fusermount3 -u $mnt exited $rc: $out"
	! mounted "$mnt" || fail "$mnt is still in the mount table after fusermount3 -u"
	[[ -n $pid ]] || return 0
	for ((i = 0; i < 100; i++)); do
		running "$pid" || return 0
		sleep 0.1
	done
	fail "blockfs (pid $pid) still running 10 s after fusermount3 -u $mnt"
}

# --- ext4 on a disk, judged by e2fsprogs.

# debugfs_run DISK [-w] CMD...: debugfs runs the requests and reports no
# error (debugfs itself exits 0 whatever happens).
debugfs_run() {
	local disk=$1 w=()
	shift
	if [[ $1 == -w ]]; then
		w=(-w)
		shift
	fi
	printf '%s\n' "$@" >debugfs.cmds
	t debugfs "${w[@]}" -f debugfs.cmds "$disk" >debugfs.out 2>&1 ||
		fail "debugfs ${w[*]} $disk: $(cat debugfs.out)"
	if grep -vE '^(debugfs [0-9.]+ \(|debugfs: |Allocated inode: [0-9]+$)' debugfs.out | grep -q .; then
		fail "debugfs ${w[*]} $disk $*: $(cat debugfs.out)"
	fi
}

# debugfs_cat DISK PATH: the file's bytes, read by debugfs (read-only open).
debugfs_cat() {
	t debugfs -R "cat $2" "$1" 2>debugfs.err
}

# e2fsck_clean DISK: e2fsck -fn finds nothing wrong.
e2fsck_clean() {
	local rc=0
	t e2fsck -fn "$1" >e2fsck.out 2>&1 || rc=$?
	[[ $rc == 0 ]] || fail "e2fsck -fn $1 exited $rc: $(cat e2fsck.out)"
}
