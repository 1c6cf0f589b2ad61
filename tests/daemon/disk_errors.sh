#!/bin/bash
# A disk that fails writes: clients get EIO, the log says what the qcow2
# library saw (naming the file and the host offset), at most a line a
# second per volume however many requests fail, with a count of those left
# out, and /metrics counts every failure.  Volume "bad" is a qcow2 image on
# a disk that fails every write while the file "inject" exists (nbdkit's
# error filter, as a file through nbdfuse); volume "good" on an ordinary one
# is written meanwhile, unaffected.
source "$(dirname "$0")/lib.sh"
need nbdkit nbdfuse fusermount3 curl
need_python_nbd
[[ -c /dev/fuse ]] || skip "no /dev/fuse"

DIR=$TMP/data
mkdir -p "$DIR/volumes"
# The disk is mounted over the volume file itself (volume files are never links).
touch "$DIR/volumes/bad.qcow2"
nbdkit -f -U "$TMP/nbdkit.sock" --filter=error memory size=256M error=EIO \
	error-pwrite-rate=100% error-pwrite-file="$TMP/inject" 2>>nbdkit.log &
HELPER_PIDS+=($!)
wait_until 10 "nbdkit did not start" test -S "$TMP/nbdkit.sock"
nbdfuse "$DIR/volumes/bad.qcow2" --unix "$TMP/nbdkit.sock" 2>>nbdfuse.log &
wait_until 10 "nbdfuse did not mount" test -s "$DIR/volumes/bad.qcow2"
t qemu-img create -q -f qcow2 fresh.qcow2 64M
dd if=fresh.qcow2 of="$DIR/volumes/bad.qcow2" conv=notrunc status=none
new_volume "$DIR" good 64M
start_blockd "$DIR"

# 150 writes to fresh clusters of bad, about 2 s of them, while good is written too.
touch inject
sys_python - "$(unix_uri bad)" "$(unix_uri good)" <<'PY' >writes.out
import sys, time, nbd
bad, good = nbd.NBD(), nbd.NBD()
bad.connect_uri(sys.argv[1])
good.connect_uri(sys.argv[2])
failed = 0
start = time.monotonic()
for i in range(150):
    try:
        bad.pwrite(b"x" * 4096, i * 65536)
    except nbd.Error as e:
        if e.errnum != 5:  # EIO
            sys.exit("a write failed with %s, not EIO" % e)
        failed += 1
    good.pwrite(bytes([i % 251 + 1]) * 4096, i * 65536)
    time.sleep(0.015)
elapsed = time.monotonic() - start
good.flush()
for i in range(150):
    if good.pread(4096, i * 65536) != bytes([i % 251 + 1]) * 4096:
        sys.exit("good lost a write")
print(failed, int(elapsed) + 1)
PY
rm inject
read -r failed seconds <writes.out
[[ $failed == 150 ]] || fail "$failed of 150 writes to the failing disk failed"

lines=$(grep -c 'volume bad: write at offset' "$BLOCKD_LOG" || true)
((lines >= 1)) || fail "no failed write of bad was logged"
# One line a second at most: the run took about 2.5 s (SECONDS, rounded up,
# longer on a loaded machine); one more for the edges.
((lines <= seconds + 1)) || fail "$lines lines in $seconds s for 150 failed writes of bad: not rate-limited"
grep -q 'volume bad: write at offset .* failed: .*bad\.qcow2: write at 0x[0-9a-f]* failed: Input/output error' "$BLOCKD_LOG" ||
	fail "the log does not carry the library's message: $(grep 'volume bad' "$BLOCKD_LOG" | tail -3)"
grep -q 'more failures not logged' "$BLOCKD_LOG" ||
	fail "the log does not count the failures it left out"
! grep -q 'volume good: .* failed' "$BLOCKD_LOG" || fail "good had failures"
errors=$(curl --silent --unix-socket "$DIR/control.sock" http://localhost/metrics |
	sed -n 's/^blockd_volume_errors_total{volume="bad",op="write"} //p')
[[ $errors == 150 ]] || fail "/metrics counts $errors write errors of bad, not 150"

stop_blockd
qemu_check "$DIR/volumes/good.qcow2"
echo ok
