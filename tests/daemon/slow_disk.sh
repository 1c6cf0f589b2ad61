#!/bin/bash
# A volume whose disk stops answering freezes nobody else (slow_disk.py):
# volume "slow" is a qcow2 image on a disk the test can stop and resume
# (nbdkit's memory plugin behind its pause filter, as a file through
# nbdfuse), volume "fast" an ordinary file.  Afterwards both images are
# clean for qemu-img check.
source "$(dirname "$0")/lib.sh"
need nbdkit nbdfuse fusermount3
need_python_nbd
[[ -c /dev/fuse ]] || skip "no /dev/fuse"

DIR=$TMP/data
# cleanup kills nbdkit (HELPER_PIDS), then unmounts the disk.

mkdir -p "$DIR/volumes"
# The disk is mounted over the volume file itself (volume files are never links).
touch "$DIR/volumes/slow.qcow2"
nbdkit -f -U "$TMP/nbdkit.sock" --filter=pause memory size=256M \
	pause-control="$TMP/pause.sock" 2>>nbdkit.log &
HELPER_PIDS+=($!)
for ((i = 0; i < 200; i++)); do
	[[ -S $TMP/nbdkit.sock && -S $TMP/pause.sock ]] && break
	sleep 0.05
done
[[ -S $TMP/pause.sock ]] || fail "nbdkit did not start"
nbdfuse "$DIR/volumes/slow.qcow2" --unix "$TMP/nbdkit.sock" &
for ((i = 0; i < 200; i++)); do
	[[ -s $DIR/volumes/slow.qcow2 ]] && break
	sleep 0.05
done
[[ -s $DIR/volumes/slow.qcow2 ]] || fail "nbdfuse did not mount"
t qemu-img create -q -f qcow2 fresh.qcow2 64M
dd if=fresh.qcow2 of="$DIR/volumes/slow.qcow2" conv=notrunc status=none
new_volume "$DIR" fast 64M

start_blockd "$DIR" --threads 1
# Cluster 0 of slow holds data, so that reading it is ring I/O on the disk.
sys_python - "$(unix_uri slow)" <<'PY'
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"r" * 65536, 0)
h.flush()
h.shutdown()
PY
# SLOW_DISK_SCENARIOS: some of pool, trim, restore, view (default: all).
# shellcheck disable=SC2086
t $PYTHON "$DAEMON_TEST_DIR/slow_disk.py" "$DIR" "$TMP/pause.sock" ${SLOW_DISK_SCENARIOS:-} ||
	fail "a stopped disk held up other volumes or the API"
stop_blockd
qemu_check "$DIR/volumes/fast.qcow2"
qemu_check "$DIR/volumes/slow.qcow2"
echo ok
