#!/bin/bash
# A full disk: the volumes folder is a 64 MiB tmpfs holding a 16 MiB filler
# file and a 1 GiB volume.  One client, on one connection throughout:
# writes 8 MiB and flushes; writes 1 MiB blocks under a second L2 table
# (whose table has never been written) until a write fails, which must be
# with ENOSPC; then a FLUSH must succeed (nothing was lost, so nothing is
# fenced), everything acknowledged reads back, an overwrite in place still
# lands; the filler is deleted and writes resume where they failed, with no
# daemon restart.  After a clean stop qemu-img check finds no errors and no
# leaked clusters.
source "$(dirname "$0")/lib.sh"
need_python_nbd

DIR=$TMP/data
mkdir -p "$DIR/volumes"
mount -t tmpfs -o size=64M,mode=0755 blockd-enospc "$DIR/volumes" 2>/dev/null ||
	skip "cannot mount a tmpfs (needs root)"
head -c 16M /dev/zero >"$DIR/volumes/filler"
new_volume "$DIR" v 1G
start_blockd "$DIR"
pid=$BLOCKD_PID

sys_python - "$(unix_uri v)" "$DIR/volumes/filler" <<'PY' || fail "the client: see above"
import errno, os, sys, nbd

M = 1 << 20
SECOND = 512 * M  # the second L2 table's range, at 64 KiB clusters
h = nbd.NBD()
h.connect_uri(sys.argv[1])

def block(i):
    return bytes([i % 251 + 1]) * M

def check(i, off, what):
    if h.pread(M, off) != block(i):
        sys.exit("%s: the block at %d MiB reads wrong" % (what, off // M))

for i in range(8):
    h.pwrite(block(i), i * M)
h.flush()

written = None
for j in range(128):
    try:
        h.pwrite(block(100 + j), SECOND + j * M)
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC:
            sys.exit("a write to the full disk failed with %s, not ENOSPC" % e)
        written = j
        break
if written is None:
    sys.exit("128 MiB written to a 64 MiB file system")
for j in range(written + 1, written + 4):
    try:
        h.pwrite(block(100 + j), SECOND + j * M)
        sys.exit("a write after ENOSPC succeeded with the disk still full")
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC:
            sys.exit("a second write to the full disk failed with %s, not ENOSPC" % e)
try:
    h.flush()
except nbd.Error as e:
    sys.exit("FLUSH after ENOSPC failed: %s" % e)
for i in range(8):
    check(i, i * M, "flushed before the disk filled")
for j in range(written):
    check(100 + j, SECOND + j * M, "acknowledged before ENOSPC")
try:
    h.pwrite(block(50), 0)
except nbd.Error as e:
    sys.exit("an overwrite in place on the full disk failed: %s" % e)
check(50, 0, "overwritten in place on the full disk")

os.unlink(sys.argv[2])
for j in range(written, written + 8):
    try:
        h.pwrite(block(100 + j), SECOND + j * M)
    except nbd.Error as e:
        sys.exit("a write after space was freed failed: %s" % e)
h.flush()
for j in range(written + 8):
    check(100 + j, SECOND + j * M, "written after space was freed")
h.shutdown()
print("%d MiB fitted before ENOSPC" % written)
PY
kill -0 "$pid" 2>/dev/null || fail "blockd is gone"
grep -q 'volume v: write at offset .*No space left on device' "$BLOCKD_LOG" ||
	fail "the failed writes were not logged with their reason"

stop_blockd
qemu_check "$DIR/volumes/v.qcow2"
echo ok
