#!/bin/bash
# SPDX-License-Identifier: MIT
# blockfs --image: one qcow2 file as MNT/disk, MNT/info.json and
# MNT/snapshots/SNAP/{disk,info.json}, no daemon.  Proves that blockfs
# backgrounds itself with the mount ready, relative paths and all (and -f
# stays in the foreground); that with --rw what is written through
# MNT/disk lands in the image: four concurrent writers sharing every
# cluster, a write across a cluster boundary, an ext4 made by mkfs.ext4 and
# filled by debugfs; that fsync works and punched holes read back as zeros
# and are unallocated for qemu-img, also when the clusters are shared with a
# snapshot, which keeps them; that a snapshot taken by blockctl keeps the
# old files (debugfs, a loop mount and e2fsck read it) while the live disk
# moves on; that both views equal what qemu-img convert reads and qemu-img
# check finds nothing; that without --rw every write, truncate and create
# gets EROFS, and snapshots stay read-only even with --rw; that sizes,
# mtimes and st_blocks are true and info.json matches qemu-img info; that
# readers share an image while a --rw mount takes it alone, and an image
# another process holds for writing (flock -x, a qemu-io session) is
# refused quickly, as are a missing and a non-qcow2 file, with one line
# "blockfs: ..."; and that fusermount3 -u leaves no mount behind and lets
# go of the image.
source "$(dirname "$0")/lib.sh"
need mkfs.ext4 debugfs e2fsck qemu-io fallocate

M=$((1 << 20))
SIZE=$((64 * M))

# wait_blocks_above FILE N: FILE's st_blocks exceeds N within 3 s (FUSE
# attributes may be cached for a second).
wait_blocks_above() {
	local i b
	for ((i = 0; i < 30; i++)); do
		b=$(stat -c %b "$1")
		((b > $2)) && return 0
		sleep 0.1
	done
	fail "st_blocks of $1 stayed at $b (was $2) after writing through it"
}

# close_to A B: A and B differ by at most 64 KiB or 1 %.
close_to() {
	local d=$(($1 - $2)) tol=$(($2 / 100))
	((d < 0)) && d=$((-d))
	((tol < 65536)) && tol=65536
	((d <= tol))
}

# stripes DISK|- K: writer K of 4 pwrites the 4 KiB blocks i = K, K+4, ...
# of [16 MiB, 32 MiB), block i holding its index over and over; with -
# (any K) it prints all of them, what the region should hold afterwards.
stripes() {
	sys_python - "$@" <<'EOF_PY'
import os, struct, sys
base, n = 16 << 20, 4096
def block(i):
    return struct.pack("<I", i) * 1024
if sys.argv[1] == "-":
    sys.stdout.buffer.write(b"".join(block(i) for i in range(n)))
    sys.exit(0)
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(int(sys.argv[2]), n, 4):
    os.pwrite(fd, block(i), base + 4096 * i)
os.close(fd)
EOF_PY
}

# info_allocated_close MNT IMAGE: MNT/info.json's "allocated" comes within
# 3 s close to what IMAGE takes on disk.
info_allocated_close() {
	local i got want
	for ((i = 0; i < 30; i++)); do
		got=$(json 'd["allocated"]' "$1/info.json")
		want=$(allocated_bytes "$2")
		close_to "$got" "$want" && return 0
		sleep 0.1
	done
	fail "$1/info.json says allocated $got, $2 takes $want bytes"
}

head -c 1M /dev/urandom >pat.bin
head -c 100000 /dev/urandom >odd.bin
{
	echo "hello from blockfs $$ $RANDOM $(date +%s.%N)"
	seq 1 2000
} >hello.src
head -c 3M /dev/urandom >big.src
echo "written after the snapshot $RANDOM" >other.src

blockctl image create img.qcow2 64M >/dev/null

# --- --rw, relative paths (blockfs must not lose them when it backgrounds).
blockfs_mount mnt --rw img.qcow2
[[ $(stat -c %F mnt/disk) == 'regular file' ]] || fail "mnt/disk is a $(stat -c %F mnt/disk)"
[[ $(stat -c %s mnt/disk) == "$SIZE" ]] || fail "mnt/disk is $(stat -c %s mnt/disk) bytes, not $SIZE"
[[ -d mnt/snapshots && -z $(ls -A mnt/snapshots) ]] ||
	fail "mnt/snapshots of an image without snapshots: $(ls -la mnt/snapshots 2>&1)"
! flock -n -s img.qcow2 true || fail "a --rw mount holds no exclusive flock on img.qcow2"
blocks_before=$(stat -c %b mnt/disk)
write_start=$(date +%s)
sleep 1
# 1 MiB at 32 MiB, fsync'd, then 512 KiB punched out of its middle.
t dd if=pat.bin of=mnt/disk bs=64k seek=512 conv=notrunc,fsync status=none ||
	fail "dd to mnt/disk on a --rw mount"
wait_blocks_above mnt/disk "$blocks_before"
mtime=$(stat -c %Y mnt/disk)
((mtime >= write_start + 1)) || fail "mtime of mnt/disk is $mtime, before the write at $((write_start + 1))"
out=$(t fallocate --punch-hole --keep-size -o $((32 * M + 256 * 1024)) -l $((512 * 1024)) mnt/disk 2>&1) ||
	fail "fallocate --punch-hole on a --rw mnt/disk: $out"
[[ $(stat -c %s mnt/disk) == "$SIZE" ]] || fail "punching a hole changed the size to $(stat -c %s mnt/disk)"
cp pat.bin want.bin
t dd if=/dev/zero of=want.bin bs=256k seek=1 count=2 conv=notrunc status=none
t dd if=mnt/disk of=got.bin bs=64k skip=512 count=16 status=none
cmp want.bin got.bin || fail "mnt/disk does not read back the write with its punched hole"
# Four writers at once, every 64 KiB cluster of [16 MiB, 32 MiB) written
# by all four; 100000 bytes at 8 MiB - 1234, across a cluster boundary.
pids=()
for k in 0 1 2 3; do
	stripes mnt/disk $k &
	pids+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || fail "concurrent striped writes to mnt/disk"
done
t dd if=odd.bin of=mnt/disk bs=100000 seek=$((8 * M - 1234)) oflag=seek_bytes conv=notrunc status=none ||
	fail "unaligned dd to mnt/disk"
stripes - >stripes.bin
cmp <(t dd if=mnt/disk bs=1M skip=16 count=16 status=none) stripes.bin ||
	fail "mnt/disk does not read back the concurrent striped writes"
out=$(sys_python -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)' mnt/disk 2>&1) || fail "fsync of mnt/disk on a --rw mount: $out"
info_allocated_close mnt img.qcow2
blockfs_unmount mnt img.qcow2

qemu_check img.qcow2
truncate -s "$SIZE" want.raw
t dd if=want.bin of=want.raw bs=64k seek=512 conv=notrunc status=none
t dd if=stripes.bin of=want.raw bs=1M seek=16 conv=notrunc status=none
t dd if=odd.bin of=want.raw bs=100000 seek=$((8 * M - 1234)) oflag=seek_bytes conv=notrunc status=none
qimg convert -O raw img.qcow2 got.raw
cmp want.raw got.raw || fail "the image does not hold what was written through mnt/disk"
qimg map --output=json img.qcow2 >map.json
sys_python -c 'import json, sys
lo, hi = int(sys.argv[2]), int(sys.argv[3])
for e in json.load(open(sys.argv[1])):
    s, n = e["start"], e["start"] + e["length"]
    if s < hi and n > lo and e["data"] and not e.get("zero"):
        sys.exit("punched range [%d, %d) still allocated: %s" % (lo, hi, e))' \
	map.json $((32 * M + 256 * 1024)) $((32 * M + 768 * 1024)) || fail "fallocate --punch-hole left data behind"

# --- --rw again: an ext4 filled by debugfs.
blockfs_mount mnt --rw img.qcow2
t mkfs.ext4 -q -F mnt/disk >mkfs.out 2>&1 || fail "mkfs.ext4 mnt/disk: $(cat mkfs.out)"
debugfs_run mnt/disk -w 'write hello.src hello.txt' 'write big.src big.bin'
debugfs_cat mnt/disk hello.txt | cmp - hello.src || fail "debugfs reads another hello.txt back"
t sync mnt/disk || fail "sync mnt/disk"
e2fsck_clean mnt/disk
blockfs_unmount mnt img.qcow2
qemu_check img.qcow2

blockctl image snapshot create img.qcow2 s1 >/dev/null
qimg convert -l snapshot.name=s1 -O raw img.qcow2 s1.raw

# --- --rw with a snapshot: the live disk moves on, the snapshot does not.
blockfs_mount mnt --rw img.qcow2
[[ $(ls mnt/snapshots) == s1 ]] || fail "mnt/snapshots lists '$(ls mnt/snapshots)', not s1"
expect_erofs "dd to a snapshot disk on a --rw mount" \
	t dd if=/dev/zero of=mnt/snapshots/s1/disk bs=4k count=1 conv=notrunc status=none
expect_erofs "truncate of a snapshot disk on a --rw mount" t truncate -s 1M mnt/snapshots/s1/disk
! t fallocate --punch-hole -o 0 -l 64k mnt/snapshots/s1/disk 2>/dev/null ||
	fail "fallocate --punch-hole on a snapshot disk succeeded on a --rw mount"
! t touch mnt/new.txt 2>/dev/null || fail "touch mnt/new.txt succeeded"
! t touch mnt/snapshots/s1/new.txt 2>/dev/null || fail "touch mnt/snapshots/s1/new.txt succeeded"
[[ ! -e mnt/new.txt && ! -e mnt/snapshots/s1/new.txt ]] || fail "a file was created in the tree"
# 128 KiB of big.bin punched out of the live disk: those clusters are the
# snapshot's too, which must keep them.
ext4_bs=$(t debugfs -R stats mnt/disk 2>/dev/null | awk -F': *' '$1 == "Block size" { print $2 }')
t debugfs -R 'blocks big.bin' mnt/disk >big.blocks 2>/dev/null
read -r punch_file_off punch_disk_off < <(sys_python -c 'import sys
bs, blocks = int(sys.argv[1]), [int(b) for b in open(sys.argv[2]).read().split()]
n = 131072 // bs
for i in range(len(blocks) - n + 1):
    if blocks[i] * bs % 65536 == 0 and blocks[i + n - 1] == blocks[i] + n - 1:
        print(i * bs, blocks[i] * bs)
        break' "$ext4_bs" big.blocks) || true
[[ -n ${punch_disk_off:-} ]] || fail "no 128 KiB aligned run in big.bin (block size '$ext4_bs'): $(cat big.blocks)"
cp big.src big.punched
t dd if=/dev/zero of=big.punched bs=128k count=1 seek="$punch_file_off" oflag=seek_bytes conv=notrunc status=none
out=$(t fallocate --punch-hole -o "$punch_disk_off" -l 131072 mnt/disk 2>&1) ||
	fail "fallocate --punch-hole of clusters shared with s1: $out"
cmp <(t dd if=mnt/disk bs=128k count=1 skip="$punch_disk_off" iflag=skip_bytes status=none) \
	<(head -c 131072 /dev/zero) || fail "the punched clusters of mnt/disk do not read zeros"
debugfs_run mnt/disk -w 'rm hello.txt' 'write other.src other.txt'
t sync mnt/disk || fail "sync mnt/disk"
cmp mnt/snapshots/s1/disk s1.raw || fail "the snapshot disk changed under writes to the live disk"
blockfs_unmount mnt img.qcow2

qemu_check img.qcow2
qimg info --output=json img.qcow2 >qinfo.json
qimg convert -O raw img.qcow2 out.raw
qimg convert -l snapshot.name=s1 -O raw img.qcow2 s1.again.raw
cmp s1.raw s1.again.raw || fail "snapshot s1 changed in the image"

# --- read-only (the default).
blockfs_mount mnt img.qcow2
! flock -n -x img.qcow2 true || fail "a read-only mount holds no flock on img.qcow2"
flock -n -s img.qcow2 true || fail "a read-only mount holds an exclusive flock on img.qcow2"
[[ $(cd mnt && ls | tr '\n' ' ') == "disk info.json snapshots " ]] || fail "mnt lists $(ls mnt | tr '\n' ' ')"
[[ $(ls mnt/snapshots) == s1 ]] || fail "mnt/snapshots lists '$(ls mnt/snapshots)', not s1"
[[ $(cd mnt/snapshots/s1 && ls | tr '\n' ' ') == "disk info.json " ]] ||
	fail "mnt/snapshots/s1 lists $(ls mnt/snapshots/s1 | tr '\n' ' ')"
! stat mnt/snapshots/nope >/dev/null 2>&1 || fail "mnt/snapshots/nope exists"

# Sizes, mtimes, st_blocks.
[[ $(stat -c %s mnt/disk) == "$SIZE" ]] || fail "mnt/disk is $(stat -c %s mnt/disk) bytes, not $SIZE"
[[ $(stat -c %s mnt/snapshots/s1/disk) == "$SIZE" ]] ||
	fail "mnt/snapshots/s1/disk is $(stat -c %s mnt/snapshots/s1/disk) bytes, not $SIZE"
for f in mnt/info.json mnt/snapshots/s1/info.json; do
	[[ $(stat -c %s "$f") == $(t cat "$f" | wc -c) ]] ||
		fail "$f: st_size $(stat -c %s "$f") but $(t cat "$f" | wc -c) bytes read"
done
img_mtime=$(stat -c %Y img.qcow2)
disk_mtime=$(stat -c %Y mnt/disk)
((disk_mtime >= img_mtime - 1 && disk_mtime <= img_mtime + 1)) ||
	fail "mtime of mnt/disk is $disk_mtime, of img.qcow2 $img_mtime"
snap_sec=$(json 'd["snapshots"][0]["date-sec"]' qinfo.json)
snap_mtime=$(stat -c %Y mnt/snapshots/s1/disk)
((snap_mtime >= snap_sec - 1 && snap_mtime <= img_mtime + 1)) ||
	fail "mtime of the snapshot disk is $snap_mtime, taken at $snap_sec, image last written $img_mtime"
actual=$(allocated_bytes img.qcow2)
disk_alloc=$(($(stat -c %b mnt/disk) * 512))
close_to "$disk_alloc" "$actual" ||
	fail "mnt/disk has st_blocks*512 = $disk_alloc, img.qcow2 takes $actual bytes"

# info.json against qemu-img info.
sys_python - mnt/info.json mnt/snapshots/s1/info.json qinfo.json "$actual" <<'EOF' || fail "info.json: see above"
import datetime, json, sys

fs = json.load(open(sys.argv[1]))
snap_fs = json.load(open(sys.argv[2]))
q = json.load(open(sys.argv[3]))
actual = int(sys.argv[4])
errs = []
if not isinstance(fs, dict) or sorted(fs) != ["allocated", "backing", "size", "snapshots"]:
    sys.exit("info.json: keys %s: %s" % (sorted(fs) if isinstance(fs, dict) else type(fs), fs))
if fs["size"] != q["virtual-size"]:
    errs.append("size %r, qemu-img says %r" % (fs["size"], q["virtual-size"]))
if fs["backing"] is not None:
    errs.append("backing %r for an image without one" % (fs["backing"],))
if not isinstance(fs["allocated"], int) or abs(fs["allocated"] - actual) > max(65536, actual // 100):
    errs.append("allocated %r, the file takes %d bytes" % (fs["allocated"], actual))
qs = {s["name"]: s for s in q.get("snapshots", [])}
names = [s.get("name") for s in fs["snapshots"]]
if sorted(names) != sorted(qs):
    errs.append("snapshot names %s, qemu-img says %s" % (names, sorted(qs)))
for s in fs["snapshots"]:
    if sorted(s) != ["created", "id", "name", "size"]:
        errs.append("snapshot keys %s" % sorted(s))
        continue
    qsn = qs.get(s["name"])
    if qsn is None:
        continue
    if str(s["id"]) != qsn["id"]:
        errs.append("snapshot %s id %r, qemu-img says %r" % (s["name"], s["id"], qsn["id"]))
    if s["size"] != q["virtual-size"]:
        errs.append("snapshot %s size %r, taken at %d" % (s["name"], s["size"], q["virtual-size"]))
    c = s["created"]
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        when = c
    elif isinstance(c, str):
        try:
            dt = datetime.datetime.fromisoformat(c.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=datetime.timezone.utc)
            when = dt.timestamp()
        except ValueError:
            when = None
    else:
        when = None
    if when is None or abs(when - qsn["date-sec"]) > 1:
        errs.append("snapshot %s created %r, qemu-img says date-sec %d" % (s["name"], c, qsn["date-sec"]))
# The contract fixes no schema for SNAP/info.json: an object that names s1
# (as "name" or "snapshot") and gives its size.
if (not isinstance(snap_fs, dict) or "s1" not in (snap_fs.get("name"), snap_fs.get("snapshot"))
        or snap_fs.get("size") != q["virtual-size"]):
    errs.append("snapshots/s1/info.json: %s" % (snap_fs,))
for e in errs:
    print("info.json: " + e, file=sys.stderr)
sys.exit(1 if errs else 0)
EOF

# Contents: the snapshot keeps the old files, the live disk the new ones.
debugfs_cat mnt/snapshots/s1/disk hello.txt | cmp - hello.src ||
	fail "debugfs cat hello.txt from the snapshot disk: $(cat debugfs.err)"
debugfs_cat mnt/snapshots/s1/disk big.bin | cmp - big.src || fail "big.bin in the snapshot disk"
debugfs_cat mnt/disk other.txt | cmp - other.src || fail "other.txt in the live disk"
debugfs_cat mnt/disk big.bin | cmp - big.punched || fail "big.bin in the live disk, a hole punched in it"
t debugfs -R 'stat hello.txt' mnt/disk 2>&1 | grep -q 'File not found' ||
	fail "hello.txt still in the live disk after rm"
e2fsck_clean mnt/disk
e2fsck_clean mnt/snapshots/s1/disk
cmp mnt/disk out.raw || fail "mnt/disk differs from qemu-img convert -O raw"
cmp mnt/snapshots/s1/disk s1.raw || fail "mnt/snapshots/s1/disk differs from qemu-img convert -l s1"

if [[ $EUID == 0 ]] && losetup -f >/dev/null 2>&1; then
	mkdir -p loopmnt
	out=$(t mount -o loop,ro mnt/snapshots/s1/disk loopmnt 2>&1) ||
		fail "mount -o loop,ro mnt/snapshots/s1/disk: $out"
	cmp loopmnt/hello.txt hello.src || fail "hello.txt through a loop mount of the snapshot"
	cmp loopmnt/big.bin big.src || fail "big.bin through a loop mount of the snapshot"
	t umount loopmnt || fail "umount of the loop mount"
	out=$(t mount -o loop,ro mnt/disk loopmnt 2>&1) || fail "mount -o loop,ro mnt/disk: $out"
	cmp loopmnt/other.txt other.src || fail "other.txt through a loop mount of the live disk"
	[[ ! -e loopmnt/hello.txt ]] || fail "hello.txt through a loop mount of the live disk"
	t umount loopmnt || fail "umount of the loop mount"
	for ((i = 0; i < 50; i++)); do
		[[ -z $(losetup -j mnt/disk; losetup -j mnt/snapshots/s1/disk) ]] && break
		sleep 0.1
	done
else
	echo "note: not root or no loop device, loop mounts not tried"
fi

# Read-only: writes, truncate, creating files get EROFS; nothing changes.
expect_erofs "dd to mnt/disk on a read-only mount" \
	t dd if=/dev/zero of=mnt/disk bs=4k count=1 conv=notrunc status=none
expect_erofs "O_RDWR open of mnt/disk on a read-only mount" \
	sys_python -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' mnt/disk
expect_erofs "truncate of mnt/disk on a read-only mount" t truncate -s 1M mnt/disk
expect_erofs "touch mnt/new.txt on a read-only mount" t touch mnt/new.txt
expect_erofs "dd to the snapshot disk" \
	t dd if=/dev/zero of=mnt/snapshots/s1/disk bs=4k count=1 conv=notrunc status=none
! t fallocate --punch-hole -o 0 -l 64k mnt/disk 2>/dev/null ||
	fail "fallocate --punch-hole succeeded on a read-only mount"
! t mkdir mnt/snapshots/s2 2>/dev/null || fail "mkdir mnt/snapshots/s2 succeeded on a read-only mount"
! t rm -f mnt/info.json 2>/dev/null || fail "rm mnt/info.json succeeded on a read-only mount"
[[ -e mnt/info.json && ! -e mnt/new.txt && ! -e mnt/snapshots/s2 ]] || fail "the read-only tree changed"
[[ $(stat -c %s mnt/disk) == "$SIZE" ]] || fail "mnt/disk is now $(stat -c %s mnt/disk) bytes"
cmp mnt/disk out.raw || fail "mnt/disk changed on a read-only mount"

# Readers share: a second read-only mount works, a --rw one is refused.
blockfs_mount mnt2 img.qcow2
cmp mnt2/disk out.raw || fail "a second read-only mount reads other bytes"
t fusermount3 -u mnt2 || fail "fusermount3 -u mnt2"
! mounted mnt2 || fail "mnt2 still mounted"
REFUSE_WHY="a read-only blockfs mount holds img.qcow2"
expect_refused 'img\.qcow2' --image img.qcow2 --rw mnt2
REFUSE_WHY=
# qemu sees our locks: it may read alongside a read-only mount, not write.
out=$(timeout 20 qemu-io -f qcow2 -c 'read 0 512' img.qcow2 2>&1) && rc=0 || rc=$?
[[ $rc != 0 ]] && grep -q 'write" lock' <<<"$out" ||
	fail "qemu-io opened img.qcow2 for writing under a blockfs mount (status $rc): $out"
timeout 20 qemu-io -r -f qcow2 -c 'read 0 512' img.qcow2 >/dev/null 2>&1 ||
	fail "qemu-io -r could not read img.qcow2 beside a read-only blockfs mount"
blockfs_unmount mnt img.qcow2
qemu_check img.qcow2
qimg convert -O raw img.qcow2 after.raw
cmp out.raw after.raw || fail "the image changed through a read-only mount"

# --- grown after the snapshot: the live view has the new size, s1 the old.
cp img.qcow2 grown.qcow2
blockctl image resize grown.qcow2 96M >/dev/null
blockfs_mount mnt grown.qcow2
[[ $(stat -c %s mnt/disk) == $((96 * M)) ]] || fail "grown mnt/disk is $(stat -c %s mnt/disk) bytes"
[[ $(stat -c %s mnt/snapshots/s1/disk) == "$SIZE" ]] ||
	fail "s1 of the grown image is $(stat -c %s mnt/snapshots/s1/disk) bytes, not $SIZE"
[[ $(json '(d["size"], [s["size"] for s in d["snapshots"]])' mnt/info.json) == "($((96 * M)), [$SIZE])" ]] ||
	fail "info.json of the grown image: $(cat mnt/info.json)"
cmp -n "$SIZE" mnt/disk out.raw || fail "the grown mnt/disk lost data"
cmp <(t dd if=mnt/disk bs=1M skip=64 status=none) <(head -c $((32 * M)) /dev/zero) ||
	fail "the grown part of mnt/disk is not zeros"
cmp mnt/snapshots/s1/disk s1.raw || fail "s1 of the grown image"
blockfs_unmount mnt grown.qcow2

# --- an overlay: reads fall through to its backing file, info.json names it.
blockctl image create --backing img.qcow2 --backing-format qcow2 top.qcow2 >/dev/null
qimg info --output=json top.qcow2 >qtop.json
blockfs_mount mnt top.qcow2
cmp mnt/disk out.raw || fail "the overlay's mnt/disk does not read its backing file"
[[ -z $(ls -A mnt/snapshots) ]] || fail "the overlay lists snapshots: $(ls mnt/snapshots)"
# "backing" is the name in the header, as qemu-img info shows it, or the
# canonical path (blockd's API shows those); not a path relative to
# wherever blockfs happened to be started.
backing=$(json 'd["backing"]' mnt/info.json)
[[ $backing == "$(json 'd["backing-filename"]' qtop.json)" ||
	$backing == "$(realpath img.qcow2)" ]] ||
	fail "the overlay's info.json says backing '$backing': $(cat mnt/info.json)"
[[ $(json 'd["size"]' mnt/info.json) == "$SIZE" ]] || fail "the overlay's info.json: $(cat mnt/info.json)"
blockfs_unmount mnt top.qcow2
wait_released img.qcow2

# --- refusals: another writer (flock -x, qemu-io), missing and bad files.
# What flock -x img.qcow2 sleep 30 does, as one process to stop afterwards.
(
	exec 8<img.qcow2
	flock -x 8
	exec sleep 30
) &
HELPER_PIDS+=($!)
for ((i = 0; i < 50; i++)); do
	flock -n -s img.qcow2 true 2>/dev/null || break
	sleep 0.1
done
((i < 50)) || fail "flock -x img.qcow2 never took the lock"
REFUSE_WHY="another process holds flock -x on img.qcow2"
expect_refused 'img\.qcow2' --image img.qcow2 --rw mnt
expect_refused 'img\.qcow2' --image img.qcow2 mnt
kill "${HELPER_PIDS[-1]}"
wait "${HELPER_PIDS[-1]}" 2>/dev/null || true
wait_released img.qcow2

qemu-io -f qcow2 -c 'sleep 30000' img.qcow2 >qio.out 2>&1 &
HELPER_PIDS+=($!)
# qemu's write permission is an OFD lock on byte 101 (polling with qemu-img
# info would race qemu-io for the locks).
ino=$(stat -c %i img.qcow2)
for ((i = 0; i < 100; i++)); do
	awk -v ino="$ino" '$2 == "OFDLCK" { split($6, dev, ":") }
		$2 == "OFDLCK" && dev[3] == ino && $7 <= 101 && ($8 == "EOF" || $8 >= 101) { f = 1 }
		END { exit !f }' /proc/locks && break
	kill -0 "${HELPER_PIDS[-1]}" 2>/dev/null || fail "qemu-io on img.qcow2 exited: $(cat qio.out)"
	sleep 0.1
done
((i < 100)) || fail "qemu-io never took its lock on img.qcow2: $(cat qio.out)"
REFUSE_WHY="qemu-io -f qcow2 has img.qcow2 open for writing"
expect_refused 'img\.qcow2' --image img.qcow2 --rw mnt
expect_refused 'img\.qcow2' --image img.qcow2 mnt
kill "${HELPER_PIDS[-1]}"
wait "${HELPER_PIDS[-1]}" 2>/dev/null || true

REFUSE_WHY=
expect_refused 'nope\.qcow2.*No such file' --image nope.qcow2 mnt
expect_refused 'nope\.qcow2.*No such file' --image nope.qcow2 --rw mnt
head -c 1M /dev/urandom >garbage.bin
expect_refused 'garbage\.bin' --image garbage.bin mnt
expect_refused 'garbage\.bin' --image garbage.bin --rw mnt
{ printf 'QFI\xfb'; head -c 4096 /dev/urandom; } >fake.qcow2
expect_refused 'fake\.qcow2' --image fake.qcow2 mnt
qimg convert -O raw img.qcow2 plain.raw
expect_refused 'plain\.raw' --image plain.raw mnt

# --- -f: stays in the foreground, exits 0 once unmounted.
mkdir -p fgmnt
"$BLOCKFS" --image "$TMP/img.qcow2" -f fgmnt >fg.out 2>fg.err </dev/null &
fg_pid=$!
HELPER_PIDS+=("$fg_pid")
for ((i = 0; i < 100; i++)); do
	mounted fgmnt && [[ -e fgmnt/disk ]] && break
	kill -0 "$fg_pid" 2>/dev/null || break
	sleep 0.1
done
mounted fgmnt || fail "blockfs -f never mounted: $(cat fg.err)"
kill -0 "$fg_pid" 2>/dev/null || fail "blockfs -f left the foreground"
cmp fgmnt/disk out.raw || fail "fgmnt/disk differs"
t fusermount3 -u fgmnt || fail "fusermount3 -u fgmnt"
for ((i = 0; i < 100; i++)); do
	kill -0 "$fg_pid" 2>/dev/null || break
	sleep 0.1
done
((i < 100)) || fail "blockfs -f still running 10 s after fusermount3 -u"
rc=0
wait "$fg_pid" || rc=$?
[[ $rc == 0 ]] || fail "blockfs -f exited $rc after fusermount3 -u: $(cat fg.err)"
! mounted fgmnt || fail "fgmnt still mounted"
wait_released img.qcow2
qemu_check img.qcow2
echo "PASS"
