#!/bin/bash
# SPDX-License-Identifier: MIT
# blockfs on a running blockd: MNT/NAME/{disk,info.json} and
# MNT/NAME/snapshots/SNAP/{disk,info.json}.  Proves that the tree lists
# exactly blockd's volumes and snapshots, with the sizes, st_blocks
# (allocated bytes) and mtimes its control API gives and info.json equal to
# the API's JSON; that every disk reads what nbdcopy reads from the same
# export, a snapshot its own bytes, with no reconnect per read; that
# reading claims nothing (a TCP client may write the volume meanwhile) and
# the attachment ends at the last close; that a read-only mount gets EROFS for every write, truncate,
# create and punch, and snapshots stay read-only with --rw; that with --rw
# mkfs.ext4 and debugfs write through MNT/vol/disk, fsync reaches blockd,
# truncate to another size is EINVAL and writing past the end ENOSPC; that a
# snapshot taken by blockctl under the mount shows up without remounting
# and keeps the old files (debugfs, a loop mount and e2fsck read it) while
# the live disk moves on; that punched holes and zeroed ranges read zeros
# and punched clusters are given back; that a volume another host writes is
# 0444 and EROFS for writing but still readable, with that host's data, and
# a volume blockfs writes is refused to other hosts until closed; that new
# and deleted volumes and snapshots show up and go within seconds, a volume
# grown while open reads whole at its new size in new opens, and a volume
# no file holds open can be deleted under the mount; that blockd's
# files, once it is stopped, show the same bytes through blockfs --image;
# that when blockd is killed, reads fail with EIO quickly, nothing hangs and
# fusermount3 -u works; that blockfs refuses to start without blockd and
# refuses --image or --control beside --data-dir; that --control and
# relative paths work.
source "$(dirname "$0")/lib.sh"
need nbdsh nbdcopy mkfs.ext4 debugfs e2fsck fallocate
[[ -n $BLOCKD ]] || fail "usage: $0 PATH-TO-BLOCKFS PATH-TO-BLOCKCTL PATH-TO-BLOCKD"
# ls sorts and tools speak as the assertions expect.
export LC_ALL=C

M=$((1 << 20))
K64=65536
VOL_SIZE=$((64 * M))
SPARE_SIZE=$((32 * M))
D=$TMP/d
MNT=$TMP/mnt

bctl() {
	blockctl --data-dir "$D" "$@"
}

# nbd_copy EXPORT FILE: what nbdcopy reads from EXPORT on the unix socket.
nbd_copy() {
	rm -f "$2"
	t nbdcopy "$(unix_uri "$1")" "$2" 2>nbdcopy.err || fail "nbdcopy of $1: $(cat nbdcopy.err)"
}

# api_field PATH EXPR: EXPR of GET PATH's JSON (bound to d).
api_field() {
	api_get "$1" >api.json || fail "GET $1"
	json "$2" api.json
}

# check_tree: the mount lists exactly blockd's volumes and snapshots, each
# disk with the API's size, allocated bytes (st_blocks * 512) and time, each
# info.json with the API's JSON; retried for 3 s while the caches catch up.
check_tree() {
	sys_python - "$BLOCKD_DIR/control.sock" "$MNT" <<'EOF_PY' || fail "the tree does not match the API: see above"
import datetime, http.client, json, os, socket, sys, time

sock, mnt = sys.argv[1], sys.argv[2]

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(sock)

def get(path):
    c = Conn("localhost")
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit("GET %s: %d" % (path, r.status))
    return json.loads(body)

def seconds(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

def check_file(errs, path, want_size, want_alloc, want_time):
    st = os.stat(path)
    if st.st_size != want_size:
        errs.append("%s: st_size %d, the API says %d" % (path, st.st_size, want_size))
    if st.st_blocks * 512 != want_alloc:
        errs.append("%s: st_blocks * 512 = %d, the API says allocated %d"
                    % (path, st.st_blocks * 512, want_alloc))
    if abs(st.st_mtime - seconds(want_time)) > 1:
        errs.append("%s: mtime %d, the API says %s" % (path, st.st_mtime, want_time))

def check_info(errs, path, want, keys):
    with open(path, "rb") as f:
        text = f.read()
    if os.stat(path).st_size != len(text):
        errs.append("%s: st_size %d, %d bytes read" % (path, os.stat(path).st_size, len(text)))
    got = json.loads(text)
    for k in keys:
        if k not in got or got[k] != want.get(k):
            errs.append("%s: %s is %r, the API says %r" % (path, k, got.get(k), want.get(k)))

def check():
    errs = []
    vols = get("/v1/volumes")["volumes"]
    names = sorted(v["name"] for v in vols)
    if sorted(os.listdir(mnt)) != names:
        errs.append("%s lists %s, blockd has %s" % (mnt, sorted(os.listdir(mnt)), names))
    for name in names:
        d = get("/v1/volumes/" + name)
        vdir = os.path.join(mnt, name)
        if sorted(os.listdir(vdir)) != ["disk", "info.json", "snapshots"]:
            errs.append("%s lists %s" % (vdir, sorted(os.listdir(vdir))))
        check_file(errs, vdir + "/disk", d["size"], d["allocated"], d["modified"])
        check_info(errs, vdir + "/info.json", d, ["name", "size", "snapshots", "backing"])
        snaps = sorted(s["name"] for s in d["snapshots"])
        if sorted(os.listdir(vdir + "/snapshots")) != snaps:
            errs.append("%s/snapshots lists %s, blockd has %s"
                        % (vdir, sorted(os.listdir(vdir + "/snapshots")), snaps))
        for snap in snaps:
            sd = get("/v1/volumes/%s/snapshots/%s" % (name, snap))
            sdir = "%s/snapshots/%s" % (vdir, snap)
            if sorted(os.listdir(sdir)) != ["disk", "info.json"]:
                errs.append("%s lists %s" % (sdir, sorted(os.listdir(sdir))))
            check_file(errs, sdir + "/disk", sd["size"], sd["allocated"], sd["created"])
            check_info(errs, sdir + "/info.json", dict(sd, volume=name),
                       ["name", "id", "created", "size", "allocated", "volume"])
    return errs

for attempt in range(30):
    errs = check()
    if not errs:
        sys.exit(0)
    time.sleep(0.1)
for e in errs:
    print(e, file=sys.stderr)
sys.exit(1)
EOF_PY
}

# mode_is FILE MODE: FILE's permission bits are MODE (octal, as stat %a).
mode_is() {
	[[ $(stat -c %a "$1" 2>/dev/null) == "$2" ]]
}

# open_fails WHAT FILE: opening FILE for writing fails with EROFS (as
# root; others may get EACCES first from a 0444 file).
open_fails() {
	local out rc=0
	out=$(sys_python -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' "$2" 2>&1) || rc=$?
	[[ $rc != 0 ]] || fail "$1: opening $2 for writing succeeded"
	grep -q 'Read-only file system' <<<"$out" ||
		{ [[ $EUID != 0 ]] && grep -q 'Permission denied' <<<"$out"; } ||
		fail "$1: opening $2 for writing: not EROFS: $out"
}

# attached VOL PEER RO: the API lists an attachment of VOL by PEER with
# read_only RO (True or False).
attached() {
	api_get "/v1/volumes/$1" >att.json 2>/dev/null &&
		[[ $(json "any(a['peer'] == '$2' and a['read_only'] == $3 for a in d['attachments'])" att.json) == true ]]
}

# no_attachments VOL: nothing is attached to VOL.
no_attachments() {
	api_get "/v1/volumes/$1" >att.json 2>/dev/null &&
		[[ $(json 'len(d["attachments"])' att.json) == 0 ]]
}

# hold MODE FILE: a background process keeps FILE open (MODE "<" to read,
# "<>" to write) for at most 60 s; its pid in HELD.
hold() {
	if [[ $1 == "<>" ]]; then
		(
			exec 3<>"$2"
			exec sleep 60
		) &
	else
		(
			exec 3<"$2"
			exec sleep 60
		) &
	fi
	HELD=$!
	HELPER_PIDS+=("$HELD")
}

# stop_helper PID: kills a background helper and reaps it.
stop_helper() {
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# tcp_attach EXPORT: an NBD client on TCP (another host, for blockd) can
# open EXPORT; its output in tcp.out.
tcp_attach() {
	t nbdsh -u "$(tcp_uri "$1")" -c 'print(h.get_size())' >tcp.out 2>&1
}

# expect_einval CMD...: CMD fails with "Invalid argument".
expect_einval() {
	expect_errno 'Invalid argument' "$*" "$@"
}

# expect_enospc CMD...: CMD fails with "No space left on device".
expect_enospc() {
	expect_errno 'No space left on device' "$*" "$@"
}

# listed DIR WORDS: ls DIR prints exactly WORDS (names and a space each).
listed() {
	[[ $(ls "$1" 2>/dev/null | tr '\n' ' ') == "$2" ]]
}

# gone PATH: PATH neither resolves nor is listed in its folder.
gone() {
	local f
	[[ ! -e $1 ]] || return 1
	for f in "$(dirname "$1")"/*; do
		[[ $f != "$1" ]] || return 1
	done
}

# mtime_since FILE SECONDS: FILE's mtime is SECONDS or later.
mtime_since() {
	(($(stat -c %Y "$1") >= $2))
}

# expect_usage_error ARGS...: blockfs ARGS exits 2 at once, its first
# stderr line "blockfs: ...", and mounts nothing (the last argument).
expect_usage_error() {
	local rc=0 mnt=${*: -1}
	mkdir -p "$mnt"
	timeout 10 "$BLOCKFS" "$@" >usage.out 2>usage.err </dev/null || rc=$?
	if mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
		fail "blockfs $* mounted (exit $rc): it is a usage error"
	fi
	[[ $rc == 2 ]] || fail "blockfs $* exited $rc, not 2 (usage error): $(cat usage.err)"
	head -n1 usage.err | grep -q '^blockfs: ' || fail "blockfs $*: stderr starts '$(head -n1 usage.err)'"
	[[ ! -s usage.out ]] || fail "blockfs $*: wrote to stdout: $(cat usage.out)"
}

head -c 1M /dev/urandom >a.bin
head -c 100000 /dev/urandom >odd.bin
head -c 64K /dev/urandom >p.bin
head -c 4K /dev/urandom >q.bin
head -c 2M /dev/urandom >r.bin
head -c 64K /dev/urandom >tcp.bin
{
	echo "hello from blockfs $$ $RANDOM $(date +%s.%N)"
	seq 1 2000
} >hello.src
head -c 3M /dev/urandom >big.src
echo "written after the snapshot $RANDOM" >other.src

# vol: 64 MiB imported from a raw file, snapshot s0, then 64 KiB at 2 MiB
# written over NBD (so vol and s0 differ); spare: created empty.
truncate -s "$VOL_SIZE" data.raw
t dd if=a.bin of=data.raw conv=notrunc status=none
t dd if=odd.bin of=data.raw bs=100000 seek=$((40 * M - 1234)) oflag=seek_bytes conv=notrunc status=none
start_blockd "$D"
bctl volume import -f raw data.raw vol >/dev/null || fail "blockctl volume import"
bctl volume create spare "$SPARE_SIZE" >/dev/null || fail "blockctl volume create spare"
bctl snapshot create vol s0 >/dev/null || fail "blockctl snapshot create vol s0"
t nbdsh -u "$(unix_uri vol)" -c "h.pwrite(open('p.bin', 'rb').read(), $((2 * M)))" -c 'h.flush()' ||
	fail "nbdsh write to vol"
cp data.raw vol.want
t dd if=p.bin of=vol.want bs=64k seek=32 conv=notrunc status=none
nbd_copy vol:ro vol.nbd
nbd_copy spare:ro spare.nbd
nbd_copy vol@s0 s0.nbd
cmp vol.nbd vol.want || fail "nbdcopy of vol:ro does not read what was imported and written"
cmp s0.nbd data.raw || fail "nbdcopy of vol@s0 does not read what was imported"

# --- usage errors, while blockd runs: nothing to do with a missing daemon.
expect_usage_error --data-dir "$D" --image "$D/volumes/vol.qcow2" "$MNT"
expect_usage_error --image "$D/volumes/vol.qcow2" --data-dir "$D" "$MNT"
expect_usage_error --data-dir "$D" --control "$D/control.sock" "$MNT"

# --- read-only, through --control.
blockfs_daemon_mount "$MNT" --control "$D/control.sock"
[[ $(ls "$MNT" | tr '\n' ' ') == "spare vol " ]] || fail "$MNT lists $(ls "$MNT" | tr '\n' ' ')"
! stat "$MNT/nope" >/dev/null 2>&1 || fail "$MNT/nope exists"
! stat "$MNT/vol/nope" >/dev/null 2>&1 || fail "$MNT/vol/nope exists"
! stat "$MNT/vol/snapshots/nope/disk" >/dev/null 2>&1 || fail "$MNT/vol/snapshots/nope/disk exists"
check_tree
for f in vol/disk spare/disk vol/info.json vol/snapshots/s0/disk vol/snapshots/s0/info.json; do
	mode_is "$MNT/$f" 444 || fail "$MNT/$f has mode $(stat -c %a "$MNT/$f") on a read-only mount"
done
[[ $(json 'd["volume"]' "$MNT/vol/snapshots/s0/info.json") == vol ]] ||
	fail "snapshots/s0/info.json does not name its volume: $(cat "$MNT/vol/snapshots/s0/info.json")"

# Every disk reads what nbdcopy reads from the same export, three at once.
pids=()
for f in vol/disk:vol.nbd spare/disk:spare.nbd vol/snapshots/s0/disk:s0.nbd vol/disk:vol.nbd; do
	cmp "$MNT/${f%%:*}" "${f#*:}" &
	pids+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || fail "a disk of $MNT does not read what nbdcopy reads from its export"
done
! cmp -s "$MNT/vol/disk" "$MNT/vol/snapshots/s0/disk" || fail "vol/disk reads the same as its snapshot s0"

# No reconnect per read: one open reading the whole 64 MiB volume (64 and
# more FUSE reads of at most 1 MiB) makes at most 4 connections.
conns_vol_ro() {
	grep -c ': export vol:ro (read-only)$' "$BLOCKD_LOG" || true
}
before=$(conns_vol_ro)
t cat "$MNT/vol/disk" >/dev/null || fail "cat $MNT/vol/disk"
after=$(conns_vol_ro)
((after > before && after - before <= 4)) ||
	fail "reading vol/disk once made $((after - before)) connections to vol:ro (1 to 4 expected)"

# Reading claims nothing: while a file holds vol:ro open, another host
# attaches vol read-write and writes; a fresh open reads its write; the
# attachment ends at the last close.
hold "<" "$MNT/vol/disk"
wait_until 3 "blockfs holding vol/disk open shows as a read-only attachment by local" attached vol local True
out=$(t nbdsh -u "$(tcp_uri vol)" -c "h.pwrite(open('q.bin', 'rb').read(), $((3 * M)))" -c 'h.flush()' 2>&1) ||
	fail "a TCP client could not write vol while blockfs reads it: $out"
cmp <(t dd if="$MNT/vol/disk" bs=4k skip=768 count=1 status=none) q.bin ||
	fail "a fresh open of vol/disk does not read what the TCP client wrote"
t dd if=q.bin of=vol.want bs=4k seek=768 conv=notrunc status=none
stop_helper "$HELD"
wait_until 3 "vol is still attached after blockfs closed its last file" no_attachments vol

# Writes refused on a read-only mount.
expect_erofs "dd to vol/disk on a read-only mount" \
	t dd if=/dev/zero of="$MNT/vol/disk" bs=4k count=1 conv=notrunc status=none
open_fails "a read-only mount" "$MNT/vol/disk"
expect_erofs "truncate of vol/disk on a read-only mount" t truncate -s 1M "$MNT/vol/disk"
expect_erofs "touch $MNT/x on a read-only mount" t touch "$MNT/x"
expect_erofs "touch $MNT/vol/x on a read-only mount" t touch "$MNT/vol/x"
expect_erofs "mkdir $MNT/newvol on a read-only mount" t mkdir "$MNT/newvol"
expect_erofs "mkdir vol/snapshots/s9 on a read-only mount" t mkdir "$MNT/vol/snapshots/s9"
expect_erofs "fallocate --punch-hole on a read-only mount" \
	t fallocate --punch-hole -o 0 -l 64k "$MNT/vol/disk"
expect_erofs "rm vol/info.json on a read-only mount" t rm -f "$MNT/vol/info.json"
expect_erofs "dd to a snapshot disk on a read-only mount" \
	t dd if=/dev/zero of="$MNT/vol/snapshots/s0/disk" bs=4k count=1 conv=notrunc status=none
[[ ! -e $MNT/x && ! -e $MNT/newvol && -e $MNT/vol/info.json ]] || fail "the read-only tree changed"
cmp "$MNT/vol/disk" vol.want || fail "vol/disk changed on a read-only mount"
blockfs_daemon_unmount "$MNT"

# --- --rw: an ext4 made and filled through vol/disk.
blockfs_daemon_mount "$MNT" --data-dir "$D" --rw
mode_is "$MNT/vol/disk" 644 || fail "vol/disk has mode $(stat -c %a "$MNT/vol/disk") on a --rw mount"
for f in vol/info.json vol/snapshots/s0/disk vol/snapshots/s0/info.json; do
	mode_is "$MNT/$f" 444 || fail "$MNT/$f has mode $(stat -c %a "$MNT/$f") on a --rw mount"
done
t mkfs.ext4 -q -F "$MNT/vol/disk" >mkfs.out 2>&1 || fail "mkfs.ext4 vol/disk: $(cat mkfs.out)"
debugfs_run "$MNT/vol/disk" -w 'write hello.src hello.txt' 'write big.src big.bin'
out=$(sys_python -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)' "$MNT/vol/disk" 2>&1) || fail "fsync of vol/disk on a --rw mount: $out"
t sync "$MNT/vol/disk" || fail "sync vol/disk"
debugfs_cat "$MNT/vol/disk" hello.txt | cmp - hello.src || fail "debugfs reads another hello.txt back"
# It is in blockd, not only in blockfs: nbdcopy's copy holds the files.
nbd_copy vol:ro live1.raw
debugfs_cat live1.raw hello.txt | cmp - hello.src || fail "hello.txt is not in blockd's vol after fsync"
debugfs_cat live1.raw big.bin | cmp - big.src || fail "big.bin is not in blockd's vol after fsync"
e2fsck_clean "$MNT/vol/disk"
expect_einval t truncate -s 1M "$MNT/vol/disk"
expect_einval t truncate -s $((VOL_SIZE + M)) "$MNT/vol/disk"
t truncate -s "$VOL_SIZE" "$MNT/vol/disk" || fail "truncate of vol/disk to its own size"
[[ $(stat -c %s "$MNT/vol/disk") == "$VOL_SIZE" ]] || fail "vol/disk is now $(stat -c %s "$MNT/vol/disk") bytes"
expect_enospc t dd if=/dev/zero of="$MNT/vol/disk" bs=4k count=1 seek=$((VOL_SIZE / 4096)) conv=notrunc status=none

# A snapshot taken under the mount appears without remounting.
bctl snapshot create vol s1 >/dev/null || fail "blockctl snapshot create vol s1 under a blockfs mount"
wait_until 5 'vol/snapshots lists $(ls "$MNT/vol/snapshots" | tr "\n" " "), not s0 s1' \
	listed "$MNT/vol/snapshots" "s0 s1 "
[[ -e $MNT/vol/snapshots/s1/disk ]] || fail "snapshots/s1 is listed but has no disk"
nbd_copy vol@s1 s1.nbd
cmp "$MNT/vol/snapshots/s1/disk" s1.nbd || fail "snapshots/s1/disk differs from nbdcopy of vol@s1"
debugfs_cat "$MNT/vol/snapshots/s1/disk" hello.txt | cmp - hello.src ||
	fail "debugfs cat hello.txt from snapshots/s1/disk: $(cat debugfs.err)"
debugfs_cat "$MNT/vol/snapshots/s1/disk" big.bin | cmp - big.src || fail "big.bin in snapshots/s1/disk"
e2fsck_clean "$MNT/vol/snapshots/s1/disk"
if [[ $EUID == 0 ]] && losetup -f >/dev/null 2>&1; then
	mkdir -p loopmnt
	out=$(t mount -o loop,ro "$MNT/vol/snapshots/s1/disk" loopmnt 2>&1) ||
		fail "mount -o loop,ro snapshots/s1/disk: $out"
	cmp loopmnt/hello.txt hello.src || fail "hello.txt through a loop mount of the snapshot"
	cmp loopmnt/big.bin big.src || fail "big.bin through a loop mount of the snapshot"
	t umount loopmnt || fail "umount of the loop mount"
	for ((i = 0; i < 50; i++)); do
		[[ -z $(losetup -j "$MNT/vol/snapshots/s1/disk") ]] && break
		sleep 0.1
	done
else
	echo "note: not root or no loop device, loop mounts not tried"
fi
# Snapshots stay read-only on a --rw mount.
expect_erofs "dd to a snapshot disk on a --rw mount" \
	t dd if=/dev/zero of="$MNT/vol/snapshots/s1/disk" bs=4k count=1 conv=notrunc status=none
open_fails "a snapshot on a --rw mount" "$MNT/vol/snapshots/s1/disk"
expect_erofs "truncate of a snapshot disk on a --rw mount" t truncate -s 1M "$MNT/vol/snapshots/s1/disk"
! t fallocate --punch-hole -o 0 -l 64k "$MNT/vol/snapshots/s1/disk" 2>/dev/null ||
	fail "fallocate --punch-hole on a snapshot disk succeeded on a --rw mount"
! t touch "$MNT/vol/new.txt" 2>/dev/null || fail "touch vol/new.txt succeeded on a --rw mount"

# The live disk moves on, the snapshot does not.
write_start=$(date +%s)
debugfs_run "$MNT/vol/disk" -w 'rm hello.txt' 'write other.src other.txt'
t sync "$MNT/vol/disk" || fail "sync vol/disk"
! cmp -s "$MNT/vol/disk" "$MNT/vol/snapshots/s1/disk" || fail "vol/disk still reads as its snapshot s1"
cmp "$MNT/vol/snapshots/s1/disk" s1.nbd || fail "snapshots/s1/disk changed under writes to vol/disk"
debugfs_cat "$MNT/vol/snapshots/s1/disk" hello.txt | cmp - hello.src || fail "hello.txt left snapshot s1"
debugfs_cat "$MNT/vol/disk" other.txt | cmp - other.src || fail "other.txt in vol/disk"
t debugfs -R 'stat hello.txt' "$MNT/vol/disk" 2>&1 | grep -q 'File not found' ||
	fail "hello.txt still in vol/disk after rm"
e2fsck_clean "$MNT/vol/disk"
wait_until 3 'mtime of vol/disk $(stat -c %Y "$MNT/vol/disk") stayed before the writes at $write_start' \
	mtime_since "$MNT/vol/disk" "$write_start"

# spare: 2 MiB at 8 MiB, then 1 MiB of whole clusters punched out of it
# (read as zeros, given back) and an unaligned range zeroed.
t dd if=r.bin of="$MNT/spare/disk" bs=1M seek=8 conv=notrunc,fsync status=none || fail "dd to spare/disk"
alloc_written=$(api_field /v1/volumes/spare 'd["allocated"]')
((alloc_written >= 2 * M)) || fail "spare allocates $alloc_written bytes after 2 MiB were written"
out=$(t fallocate --punch-hole -o $((8 * M + K64)) -l "$M" "$MNT/spare/disk" 2>&1) ||
	fail "fallocate --punch-hole on spare/disk: $out"
out=$(t fallocate --zero-range -o $((9 * M + 300000)) -l 70000 "$MNT/spare/disk" 2>&1) ||
	fail "fallocate --zero-range on spare/disk: $out"
[[ $(stat -c %s "$MNT/spare/disk") == "$SPARE_SIZE" ]] || fail "punching changed spare/disk's size"
# blockd gives freed clusters back once their metadata is written: at a flush.
t sync "$MNT/spare/disk" || fail "sync spare/disk"
cp spare.nbd spare.want
t dd if=r.bin of=spare.want bs=1M seek=8 conv=notrunc status=none
t dd if=/dev/zero of=spare.want bs=64k seek=$((8 * 16 + 1)) count=16 conv=notrunc status=none
t dd if=/dev/zero of=spare.want bs=70000 count=1 seek=$((9 * M + 300000)) oflag=seek_bytes conv=notrunc status=none
cmp "$MNT/spare/disk" spare.want || fail "spare/disk does not read zeros where punched and zeroed"
spare_allocated() {
	api_field /v1/volumes/spare 'd["allocated"]'
}
gave_back() {
	local now
	now=$(spare_allocated)
	((now <= alloc_written - M / 2)) && (($(stat -c %b "$MNT/spare/disk") * 512 <= alloc_written - M / 2))
}
wait_until 3 'punching 1 MiB of clusters out of spare gave nothing back: allocated $alloc_written, now $(spare_allocated), st_blocks $(stat -c %b "$MNT/spare/disk")' gave_back

# --- another host writes spare: 0444 and EROFS here, readable with its data.
nbdsh -u "$(tcp_uri spare)" -c "h.pwrite(open('tcp.bin', 'rb').read(), $((16 * M)))" -c 'h.flush()' \
	-c 'print("written", flush=True)' -c 'import time; time.sleep(60)' >writer.out 2>&1 </dev/null &
writer=$!
HELPER_PIDS+=("$writer")
wait_until 10 'the TCP writer never wrote spare: $(cat writer.out)' grep -qs written writer.out
wait_until 3 'spare/disk is $(stat -c %a "$MNT/spare/disk"), not 0444, while another host writes it' \
	mode_is "$MNT/spare/disk" 444
open_fails "spare attached read-write by another host" "$MNT/spare/disk"
expect_erofs "dd to spare/disk while another host writes it" \
	t dd if=/dev/zero of="$MNT/spare/disk" bs=4k count=1 conv=notrunc status=none
cmp <(t dd if="$MNT/spare/disk" bs=64k skip=256 count=1 status=none) tcp.bin ||
	fail "spare/disk does not read what the TCP writer wrote"
t dd if=tcp.bin of=spare.want bs=64k seek=256 conv=notrunc status=none
mode_is "$MNT/vol/disk" 644 || fail "vol/disk turned $(stat -c %a "$MNT/vol/disk") while another host writes spare"
stop_helper "$writer"
wait_until 3 'spare/disk stays $(stat -c %a "$MNT/spare/disk") after the other host left' \
	mode_is "$MNT/spare/disk" 644

# ... and while blockfs writes spare, other hosts are refused until it closes.
hold "<>" "$MNT/spare/disk"
wait_until 3 "spare held open for writing is not attached read-write by local" attached spare local False
mode_is "$MNT/spare/disk" 644 || fail "spare/disk is $(stat -c %a "$MNT/spare/disk") while this mount writes it"
t dd if=q.bin of="$MNT/spare/disk" bs=4k seek=1 conv=notrunc,fsync status=none ||
	fail "a second writer of spare/disk beside an open one"
t dd if=q.bin of=spare.want bs=4k seek=1 conv=notrunc status=none
rc=0
tcp_attach spare || rc=$?
[[ $rc != 0 ]] || fail "a TCP client attached spare while blockfs writes it: $(cat tcp.out)"
grep -q 'policy' tcp.out || fail "a TCP client to spare while blockfs writes it: not refused by policy: $(cat tcp.out)"
stop_helper "$HELD"
wait_until 5 'a TCP client still cannot attach spare after blockfs closed it: $(cat tcp.out)' tcp_attach spare
cmp "$MNT/spare/disk" spare.want || fail "spare/disk after the writers"

# --- volumes and snapshots come and go under the mount.
bctl volume create newvol 16M >/dev/null || fail "blockctl volume create newvol"
wait_until 5 "newvol did not appear in $MNT" test -e "$MNT/newvol/disk"
[[ $(stat -c %s "$MNT/newvol/disk") == $((16 * M)) ]] || fail "newvol/disk is $(stat -c %s "$MNT/newvol/disk") bytes"
cmp "$MNT/newvol/disk" <(head -c $((16 * M)) /dev/zero) || fail "a new volume does not read zeros"
hold "<" "$MNT/newvol/disk"
wait_until 3 "newvol held open is not attached" attached newvol local True
# Grown while a file of it is open: new opens see and read the new size
# (several at once, each on its own connections), with data written past
# the old end by another client.
bctl volume resize newvol 24M >/dev/null || fail "blockctl volume resize newvol 24M"
t nbdsh -u "$(unix_uri newvol)" -c 'h.pwrite(b"G" * 65536, 20 << 20)' || fail "nbdsh write to newvol"
size_is() {
	[[ $(stat -c %s "$1") == "$2" ]]
}
wait_until 5 'newvol/disk still $(stat -c %s "$MNT/newvol/disk") bytes after growing to 24M' \
	size_is "$MNT/newvol/disk" $((24 * M))
python3 -c 'import sys; sys.stdout.buffer.write(bytes(20 << 20) + b"G" * 65536 + bytes((4 << 20) - 65536))' \
	>grown.want
for i in 1 2 3 4; do
	t cmp "$MNT/newvol/disk" grown.want >"grown$i.out" 2>&1 &
done
for i in 1 2 3 4; do
	wait -n || fail "a reader of newvol after growing it: $(cat grown*.out)"
done
! bctl volume delete newvol >/dev/null 2>&1 || fail "blockctl deleted newvol while blockfs has it open"
stop_helper "$HELD"
# Release reaches blockfs just after close(2) returns: a moment's grace.
delete_newvol() {
	bctl volume delete newvol >delete.out 2>&1
}
wait_until 3 'blockctl volume delete newvol fails with no file of it open: $(cat delete.out)' delete_newvol
wait_until 5 'deleted newvol still in $MNT: $(ls "$MNT" | tr "\n" " ")' gone "$MNT/newvol"
bctl snapshot delete vol s0 >/dev/null || fail "blockctl snapshot delete vol s0"
wait_until 5 "deleted snapshot s0 still in vol/snapshots" gone "$MNT/vol/snapshots/s0"
check_tree

# What blockd holds at the end, then no attachment once unmounted.
nbd_copy vol:ro final.raw
cmp "$MNT/vol/disk" final.raw || fail "vol/disk differs from nbdcopy of vol:ro"
blockfs_daemon_unmount "$MNT"
wait_until 3 'vol has attachments left after unmounting: $(api_get /v1/volumes/vol)' no_attachments vol
wait_until 3 'spare has attachments left after unmounting: $(api_get /v1/volumes/spare)' no_attachments spare

# --- blockd stopped: its file through blockfs --image.
stop_blockd
blockfs_mount mnt2 "$D/volumes/vol.qcow2"
cmp mnt2/disk final.raw || fail "blockfs --image of vol.qcow2 differs from what blockd served"
cmp mnt2/snapshots/s1/disk s1.nbd || fail "blockfs --image of vol.qcow2: snapshot s1 differs"
debugfs_cat mnt2/disk other.txt | cmp - other.src || fail "other.txt through blockfs --image"
debugfs_cat mnt2/snapshots/s1/disk hello.txt | cmp - hello.src || fail "hello.txt in s1 through blockfs --image"
blockfs_unmount mnt2 "$D/volumes/vol.qcow2"

# --- blockd killed under a mounted tree: EIO, quickly; unmount works.
start_blockd "$D"
blockfs_daemon_mount "$MNT" --data-dir "$D"
cmp "$MNT/vol/disk" final.raw || fail "vol/disk after restarting blockd"
sys_python - "$MNT/vol/disk" >reader.out 2>&1 <<'EOF_PY' &
import errno, mmap, os, sys, time
# Reads 1 MiB at a time, a fresh open each time, until an error (50 s at
# most); then reads through a file opened before, whose connection broke.
def name(e):
    return errno.errorcode.get(e.errno, e.errno)
buf, end, i = mmap.mmap(-1, 1 << 20), time.time() + 50, 0
held = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
os.preadv(held, [buf], 0)
while time.time() < end:
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
        try:
            os.preadv(fd, [buf], (i % 64) << 20)
        finally:
            os.close(fd)
    except OSError as e:
        print("error", name(e), e, flush=True)
        try:
            os.preadv(held, [buf], 1 << 20)
            print("held: read", flush=True)
        except OSError as e:
            print("held:", name(e), e, flush=True)
        sys.exit(0)
    if i == 0:
        print("reading", flush=True)
    i += 1
print("no error in 50 s", flush=True)
EOF_PY
reader=$!
HELPER_PIDS+=("$reader")
wait_until 10 'the reader never read vol/disk: $(cat reader.out)' grep -qs reading reader.out
kill_blockd
killed_at=$(date +%s)
for ((i = 0; i < 150; i++)); do
	running "$reader" || break
	sleep 0.1
done
running "$reader" && fail "a reader of vol/disk still hangs 15 s after blockd was killed: $(cat reader.out)"
if ! grep -q '^error EIO' reader.out || ! grep -q '^held: EIO' reader.out; then
	fail "the readers of vol/disk: not EIO after blockd was killed: $(cat reader.out)"
fi
rc=0
timeout 40 dd if="$MNT/vol/disk" of=/dev/null bs=1M count=1 iflag=direct >dd.out 2>&1 || rc=$?
[[ $rc != 124 ]] || fail "a read of vol/disk hung 40 s with blockd killed"
[[ $rc != 0 ]] || fail "a read of vol/disk succeeded with blockd killed"
grep -q 'Input/output error' dd.out || fail "a read of vol/disk with blockd killed: $(cat dd.out)"
(($(date +%s) - killed_at <= 20)) || fail "reads took $(($(date +%s) - killed_at)) s to fail after blockd was killed"
# Listings may come from the catalog's cache for a second more.
ls_fails() {
	local rc=0
	timeout 40 ls "$MNT" >ls.out 2>&1 || rc=$?
	[[ $rc != 124 ]] || fail "ls $MNT hung with blockd killed"
	[[ $rc != 0 || ! -s ls.out ]]
}
wait_until 3 'ls $MNT still lists volumes with blockd killed: $(cat ls.out)' ls_fails
info_fails() {
	local rc=0
	timeout 40 cat "$MNT/vol/info.json" >/dev/null 2>&1 || rc=$?
	[[ $rc != 124 ]] || fail "cat vol/info.json hung with blockd killed"
	[[ $rc != 0 ]]
}
wait_until 3 "vol/info.json can still be read with blockd killed" info_fails
blockfs_daemon_unmount "$MNT"

# --- no blockd: refused with one line, at once.
REFUSE_WHY="blockd was killed; its sockets are left behind"
expect_refused 'blockd|cannot reach' --data-dir "$D" "$MNT"
expect_refused 'blockd|cannot reach' --data-dir "$D" --rw "$MNT"
REFUSE_WHY="no blockd ever ran there"
mkdir -p nodaemon
expect_refused 'blockd|cannot reach' --data-dir "$TMP/nodaemon" "$MNT"
expect_refused 'blockd|cannot reach' --control "$TMP/nodaemon/control.sock" "$MNT"
REFUSE_WHY=

# --- relative --data-dir and --control (blockfs must not lose them when it
# backgrounds itself).
start_blockd "$D"
blockfs_daemon_mount "$MNT" --data-dir d
cmp "$MNT/vol/disk" final.raw || fail "vol/disk through a mount with a relative --data-dir"
blockfs_daemon_unmount "$MNT"
blockfs_daemon_mount "$MNT" --control d/control.sock
cmp "$MNT/vol/disk" final.raw || fail "vol/disk through a mount with a relative --control"
blockfs_daemon_unmount "$MNT"
stop_blockd
echo "PASS"
