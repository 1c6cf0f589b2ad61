#!/bin/bash
# SPDX-License-Identifier: MIT
# fsync through blockfs is durable: a writer on MNT/vol/disk (a --rw
# mount) writes blocks and fsyncs them in batches, journalling each batch
# whose fsync returned 0; blockd is killed with SIGKILL at a random moment
# after the writer's first fsync returned (three rounds).  Proves that
# every journalled block is intact after blockd restarts (read back through
# NBD and through the same, never remounted, blockfs, which reconnects by
# itself); that the writer saw EIO, not a hang, while blockd was gone;
# that when unflushed writes went down with blockd the next fsync of every
# file open then fails with EIO (once each), and later writes and fsyncs
# work; that fsync through a file opened read-only flushes what the mount
# wrote; and that after a clean stop qemu-img check finds nothing wrong
# with the image but clusters leaked by the kills.
source "$(dirname "$0")/lib.sh"
need nbdcopy
[[ -n $BLOCKD ]] || fail "usage: $0 PATH-TO-BLOCKFS PATH-TO-BLOCKCTL PATH-TO-BLOCKD"

D=$TMP/d
MNT=$TMP/mnt
SIZE=$((64 << 20))
SEED=${CRASH_SEED:-$RANDOM}
echo "CRASH_SEED=$SEED"

# leaked_clusters: what qemu-img check counts as leaked in the volume (not
# locking it: a killed blockd's io_uring may hold it a moment longer).  A
# kill while blockd writes metadata back may leak clusters (refcounts
# reach the disk before the L2 entries that use them, qcow/tables.c), and
# a volume made by blockctl has no lazy refcounts, so no dirty bit has the
# next start repair them (crash_kill9.sh allows the same for its volume
# "small").  Leaks harm no data; any other finding fails the test.
leaked_clusters() {
	local rc=0
	qimg check -U --output=json "$D/volumes/vol.qcow2" >leaks.json 2>leaks.err || rc=$?
	[[ $rc == 0 || $rc == 3 ]] ||
		fail "qemu-img check (status $rc) finds more than leaks: $(cat leaks.json leaks.err)"
	json 'd.get("leaks", 0)' leaks.json
}

start_blockd "$D"
blockctl --data-dir "$D" volume create vol "$SIZE" >/dev/null || fail "volume create"
blockfs_daemon_mount "$MNT" --data-dir "$D" --rw

# writer.py DISK JOURNAL ROUND SEED: writes this round's 60 KiB blocks
# (each at its own offset, 64 KiB apart; a block's bytes depend only on the
# seed, the round and its index, so writing it again changes nothing) over
# and over, fsync after every 8, appending "ROUND INDEX" to JOURNAL for
# every block an fsync covered; prints "writing" once the first batch is
# journalled.  Stops at the first error (blockd gone) and prints it.
cat >writer.py <<'EOF'
import os, random, sys
disk, journal, rnd, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
BLOCK, SLOTS = 61440, 1024
def block(i):
    return random.Random(seed * 1000003 + rnd * 10007 + i).randbytes(BLOCK)
fd = os.open(disk, os.O_RDWR)
j = open(journal, "a")
done = []
started = False
try:
    for _ in range(1000):
        for i in range(rnd * SLOTS // 3, (rnd + 1) * SLOTS // 3):
            os.pwrite(fd, block(i), i * 65536 + (i % 7) * 512)
            done.append(i)
            if len(done) == 8:
                os.fsync(fd)
                j.write("".join(f"{rnd} {k}\n" for k in done))
                j.flush()
                done = []
                if not started:
                    print("writing", flush=True)
                    started = True
    print("finished without being stopped")
except OSError as e:
    print("stopped:", e.strerror)
EOF

# check.py SOURCE JOURNAL SEED: every journalled block of every round is
# in SOURCE (a raw file) as written.
cat >check.py <<'EOF'
import random, sys
src, journal, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
BLOCK = 61440
blocks = {tuple(map(int, line.split())) for line in open(journal)}
bad = 0
with open(src, "rb") as f:
    for rnd, i in sorted(blocks):
        want = random.Random(seed * 1000003 + rnd * 10007 + i).randbytes(BLOCK)
        off = i * 65536 + (i % 7) * 512
        f.seek(off)
        if f.read(BLOCK) != want:
            bad += 1
            if bad < 5:
                print(f"block {i} (round {rnd}) at {off} lost after an fsync that returned 0")
print(f"{len(blocks)} fsynced blocks checked, {bad} lost")
sys.exit(1 if bad else 0)
EOF
: >journal

for round in 0 1 2; do
	# The writer is killed with blockd at a random moment well inside its
	# run: once it is writing, not a fixed time after it was started (on a
	# loaded machine python3 may take longer than that to start, and its
	# open then meets no daemon and fails with EIO, as it should).
	sys_python writer.py "$MNT/vol/disk" journal "$round" "$SEED" >"writer$round.out" 2>&1 &
	writer=$!
	HELPER_PIDS+=("$writer")
	for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
		grep -qx writing "writer$round.out" && break
		running "$writer" ||
			fail "round $round: the writer stopped before blockd was killed: $(cat "writer$round.out")"
		sleep 0.1
	done
	grep -qx writing "writer$round.out" ||
		fail "round $round: no fsync of the writer returned within $STEP_TIMEOUT s"
	sleep "0.$((RANDOM % 6 + 2))"
	kill_blockd
	rc=0
	wait "$writer" || rc=$?
	[[ $rc != 124 ]] || fail "round $round: the writer hung after blockd was killed"
	grep -q "stopped: Input/output error" "writer$round.out" ||
		fail "round $round: the writer did not see EIO: $(cat "writer$round.out")"
	echo "round $round: $(sort -u journal | wc -l) fsynced blocks so far"
	start_blockd "$D"
	# Through NBD, from the restarted daemon.
	t nbdcopy "$(unix_uri vol)" "image$round.raw" || fail "nbdcopy after round $round"
	sys_python check.py "image$round.raw" journal "$SEED" || fail "round $round: nbdcopy check"
	rm -f "image$round.raw"
done
(($(wc -l <journal) >= 8)) || fail "no fsync ever returned before the kills: $(cat writer*.out)"

# The same mount, never remounted, reads the same through its new connections.
sys_python check.py "$MNT/vol/disk" journal "$SEED" || fail "blockfs check after the restarts"

# Unflushed writes that went down with blockd make the next fsync fail,
# once for every file open at the time: the writer's and another
# read-write file (Linux reports a failed write-back to each).  Writes
# after that are flushed as usual.
cat >lost.py <<'EOF'
import os, sys, time
disk, waitfile = sys.argv[1], sys.argv[2]
a = os.open(disk, os.O_RDWR)
b = os.open(disk, os.O_RDWR)
os.pwrite(a, b"x" * 4096, 0)
os.fsync(a)
os.pwrite(a, b"y" * 4096, 4096)          # acknowledged, never flushed
print("ready", flush=True)
while os.path.exists(waitfile):          # the test kills and restarts blockd
    time.sleep(0.05)
os.pwrite(a, b"z" * 4096, 8192)          # on a new connection
for name, fd in (("b", b), ("a", a), ("a again", a)):
    try:
        os.fsync(fd)
        print(f"fsync {name}: ok")
    except OSError as e:
        print(f"fsync {name}:", e.strerror)
os.pwrite(a, b"w" * 4096, 12288)
os.fsync(a)
print("fsync after that: ok")
EOF
touch waitfile
sys_python lost.py "$MNT/vol/disk" waitfile >lost.out 2>&1 &
lost=$!
HELPER_PIDS+=("$lost")
for ((i = 0; i < 100; i++)); do
	grep -q ready lost.out && break
	sleep 0.1
done
grep -q ready lost.out || fail "lost.py did not start: $(cat lost.out)"
kill_blockd
start_blockd "$D"
rm waitfile
wait "$lost" || fail "lost.py failed: $(cat lost.out)"
for want in "fsync b: Input/output error" "fsync a: Input/output error" "fsync a again: ok" \
	"fsync after that: ok"; do
	grep -qx "$want" lost.out || fail "after losing unflushed writes, wanted '$want': $(cat lost.out)"
done

# fsync through a file opened read-only flushes what the mount wrote (as
# sync FILE does): the data written through another file survives kill -9.
cat >rosync.py <<'EOF'
import os, sys
disk = sys.argv[1]
w = os.open(disk, os.O_RDWR)
os.pwrite(w, b"R" * 65536, 40 << 20)     # a fresh cluster: its mapping is in blockd's memory
r = os.open(disk, os.O_RDONLY)
os.fsync(r)
print("synced", flush=True)
EOF
sys_python rosync.py "$MNT/vol/disk" >rosync.out 2>&1 || fail "rosync.py: $(cat rosync.out)"
kill_blockd
crash_leaks=$(leaked_clusters)
start_blockd "$D"
t nbdcopy "$(unix_uri vol)" after.raw || fail "nbdcopy after the read-only fsync"
sys_python -c 'import sys; d = open(sys.argv[1], "rb").read()[40 << 20:(40 << 20) + 65536]
sys.exit(0 if d == b"R" * 65536 else 1)' after.raw ||
	fail "data flushed by fsync on a read-only file was lost at kill -9"
rm -f after.raw

blockfs_daemon_unmount "$MNT"
stop_blockd
# The last start and the clean stop leaked nothing; what the kills leaked
# is all that qemu-img check may find, and -r leaks must leave it clean.
leaks=$(leaked_clusters)
((leaks == crash_leaks)) ||
	fail "$leaks leaked clusters after the clean stop, $crash_leaks after the last kill"
rc=0
qimg check -r leaks "$D/volumes/vol.qcow2" >check.out 2>&1 || rc=$?
[[ $rc == 0 ]] || fail "qemu-img check -r leaks (status $rc): more than leaks: $(cat check.out)"
qemu_check "$D/volumes/vol.qcow2"
echo "PASS"
