#!/bin/bash
# SPDX-License-Identifier: MIT
# blockctl's daemon commands against a running blockd: every volume and
# snapshot command, its table and --json output, the errors (duplicates,
# missing volumes and snapshots, bad names, bad sizes, usage) with their
# exit codes, and import/export round trips over NBD (raw and qcow2, a
# snapshot export, sparse results) compared with cmp and qemu-img compare.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-io cmp "$PYTHON"

# ctl ARGS...: blockctl on the test daemon; stdout to out.txt, stderr to err.txt.
ctl() {
	blockctl --data-dir "$BLOCKD_DIR" "$@" >out.txt 2>err.txt
}

# ok ARGS...: the command succeeds with nothing on stderr.
ok() {
	ctl "$@" || fail "blockctl $* exited $?: $(cat err.txt)"
	[[ ! -s err.txt ]] || fail "blockctl $*: unexpected stderr: $(cat err.txt)"
}

# refused STATUS PATTERN ARGS...: the command exits STATUS with one line on
# stderr, "blockctl: ..." matching PATTERN (grep -E).
refused() {
	local want=$1 pattern=$2
	shift 2
	expect_fail "$want" "^blockctl: .*($pattern)" --data-dir "$BLOCKD_DIR" "$@"
}

start_blockd "$TMP/data"
[[ -S $BLOCKD_DIR/control.sock ]] || fail "no control socket in $BLOCKD_DIR"

# --- volume create / list / info ------------------------------------------
ok volume list
[[ ! -s out.txt ]] || fail "volume list of nothing printed: $(cat out.txt)"
ok volume create vm1 64M
ok volume create vm2 1000 # rounded up to 512 bytes, as image create does
ok volume list
grep -Eq '^NAME +SIZE +ALLOCATED' out.txt || fail "volume list header: $(cat out.txt)"
grep -Eq '^vm1 +64 MiB ' out.txt || fail "volume list row vm1: $(cat out.txt)"
grep -Eq '^vm2 +1 KiB ' out.txt || fail "volume list row vm2: $(cat out.txt)"
ok volume list --json
[[ $(json '" ".join(sorted(v["name"] for v in d["volumes"]))' out.txt) == "vm1 vm2" ]] ||
	fail "volume list --json: $(cat out.txt)"
[[ $(json '[v["size"] for v in d["volumes"] if v["name"] == "vm2"][0]' out.txt) == 1024 ]] ||
	fail "vm2 is not 1024 bytes: $(cat out.txt)"
ok volume info vm1
grep -q '^size: *64 MiB (67108864 bytes)' out.txt || fail "volume info: $(cat out.txt)"
ok volume info --json vm1
[[ $(json 'd["size"]' out.txt) == 67108864 ]] || fail "volume info --json size: $(cat out.txt)"
[[ $(json 'd["snapshots"]' out.txt) == "[]" ]] || fail "volume info --json snapshots: $(cat out.txt)"
# --control names the socket itself.
blockctl --control "$BLOCKD_DIR/control.sock" volume list >out.txt ||
	fail "blockctl --control volume list"
grep -q '^vm1 ' out.txt || fail "volume list through --control: $(cat out.txt)"

# --- errors -----------------------------------------------------------------
refused 1 "vm1.*already exists" volume create vm1 1M
refused 1 "invalid volume name" volume create ../x 1M
refused 1 "invalid volume name" volume create 'a/b' 1M
refused 1 "invalid volume name" volume info ../x
refused 1 "invalid size '1.5G'" volume create v3 1.5G
refused 1 "invalid size '10GB'" volume create v3 10GB
refused 1 "too large" volume create v3 99999999T
refused 1 "size" volume create v3 0
refused 1 "no volume nope" volume info nope
refused 1 "no volume nope|nope.*no such volume" volume delete nope
refused 1 "no volume nope|nope.*no such volume" volume resize nope 1M
refused 1 "no volume nope|nope.*no such volume" snapshot list nope
refused 1 "not a multiple of 512" volume resize vm1 1000
refused 1 "invalid size" volume resize vm1 1X
refused 1 "cannot shrink by" volume resize vm1 -1G
refused 2 "missing operand" volume create vm9
refused 2 "unexpected operand 'x'" volume delete vm1 x
refused 2 "unknown option '--bogus'" volume list --bogus
refused 2 "unknown volume command 'frob'" volume frob
refused 2 "unknown snapshot command 'frob'" snapshot frob
refused 2 "is not VOL@SNAP" volume clone vm1 vm9
refused 2 "snapshot name is empty" snapshot create vm1 ''
refused 2 "needs an argument" --data-dir
rc=0
blockctl --data-dir "$TMP/nowhere" volume list 2>err.txt || rc=$?
[[ $rc == 1 ]] && grep -q "cannot reach blockd at $TMP/nowhere/control.sock" err.txt ||
	fail "no daemon: exit $rc, $(cat err.txt)"

# --- resize -------------------------------------------------------------------
ok volume resize vm2 1M
grep -q "Volume resized." out.txt || fail "volume resize printed $(cat out.txt)"
ok volume resize vm2 +1M
ok volume resize vm2 -512K
ok volume info --json vm2
[[ $(json 'd["size"]' out.txt) == $((1536 << 10)) ]] || fail "vm2 after resizes: $(cat out.txt)"

# --- snapshots, clone, restore ---------------------------------------------
t qemu-io -f raw -c 'write -P 0x11 0 1M' "$(unix_uri vm1)" >/dev/null || fail "qemu-io write vm1"
ok snapshot create vm1 s1
refused 1 "already has a snapshot s1" snapshot create vm1 s1
ok snapshot list vm1
grep -q '^Snapshot list:' out.txt && grep -Eq '^[0-9]+ +s1 ' out.txt ||
	fail "snapshot list: $(cat out.txt)"
ok snapshot list --json vm1
[[ $(json '[s["name"] for s in d["snapshots"]]' out.txt) == "['s1']" ]] ||
	fail "snapshot list --json: $(cat out.txt)"
ok volume info vm1
grep -Eq '^[0-9]+ +s1 ' out.txt || fail "volume info shows no snapshot s1: $(cat out.txt)"
t qemu-io -f raw -c 'write -P 0x22 0 1M' "$(unix_uri vm1)" >/dev/null || fail "qemu-io write vm1"

ok volume clone vm1@s1 c1
refused 1 "has no snapshot nope" volume clone vm1@nope c2
refused 1 "c1.*already exists" volume clone vm1@s1 c1
t qemu-io -f raw -c 'read -P 0x11 0 1M' "$(unix_uri c1)" >/dev/null ||
	fail "clone c1 does not hold the snapshot's data"

ok snapshot restore vm1 s1
t qemu-io -f raw -c 'read -P 0x11 0 1M' "$(unix_uri vm1)" >/dev/null ||
	fail "vm1 does not read as s1 after restore"
refused 1 "has no snapshot nope" snapshot restore vm1 nope
ok snapshot create vm1 s2
ok snapshot delete vm1 s2
refused 1 "has no snapshot s2" snapshot delete vm1 s2
refused 1 "invalid snapshot name" snapshot delete vm1 ../x

# --- import / export --------------------------------------------------------
# A raw file, not a multiple of 512 bytes, with data at both ends and a
# large hole and an all-zero written block in between.
sys_python - <<-'EOF'
	import os
	with open("src.raw", "wb") as f:
	    f.truncate(40 * 1024 * 1024 + 1000)
	    f.seek(0); f.write(os.urandom(300000))
	    f.seek(5 * 1024 * 1024 + 7); f.write(b"\0" * 2 * 1024 * 1024)
	    f.seek(13 * 1024 * 1024 + 4093); f.write(os.urandom(5 * 1024 * 1024))
	    f.seek(40 * 1024 * 1024 - 10); f.write(os.urandom(1010))
EOF
size=$(stat -c %s src.raw)
ok volume import src.raw imp
ok volume info --json imp
[[ $(json 'd["size"]' out.txt) == $(((size + 511) / 512 * 512)) ]] ||
	fail "imported volume size: $(cat out.txt)"
(($(json 'd["allocated"]' out.txt) < 16 << 20)) || fail "import is not sparse: $(cat out.txt)"
ok volume export imp out.raw
cmp -n "$size" src.raw out.raw || fail "raw export differs from the imported file"
(($(stat -c %b out.raw) * 512 < 16 << 20)) || fail "raw export is not sparse"
refused 1 "already exists" volume export imp out.raw
ok volume export --format qcow2 imp out.qcow2
qemu_check out.qcow2
t qemu-img compare -f raw -F qcow2 out.raw out.qcow2 >/dev/null || fail "qcow2 export differs"

# qcow2 import of an image with a backing file: refused, unless --flatten
# says to read the chain (backing_escape.sh has the rest).
t qemu-img create -q -f qcow2 base.qcow2 8M
t qemu-io -f qcow2 -c 'write -P 0x33 0 1M' -c 'write -P 0x44 7M 64k' base.qcow2 >/dev/null
t qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
t qemu-io -f qcow2 -c 'write -P 0x55 512k 4k' -c 'write -z 7M 4k' top.qcow2 >/dev/null
refused 1 "top.qcow2: has a backing file \(base.qcow2\)" volume import -f qcow2 top.qcow2 q1
ok volume import -f qcow2 --flatten top.qcow2 q1
ok volume export q1 q1.raw
t qemu-img compare -f qcow2 -F raw top.qcow2 q1.raw >/dev/null || fail "qcow2 import differs"

# A snapshot's export reads the contents it was taken with.
ok snapshot create q1 before
t qemu-io -f raw -c 'write -P 0x66 0 2M' "$(unix_uri q1)" >/dev/null || fail "qemu-io write q1"
ok volume export q1@before before.raw
cmp before.raw q1.raw || fail "q1@before export differs from q1 before the write"
refused 1 "has no snapshot nope" volume export q1@nope nope.raw
[[ ! -e nope.raw ]] || fail "a failed export left nope.raw"
refused 1 "no volume nope" volume export nope nope.raw
[[ ! -e nope.raw ]] || fail "a failed export left nope.raw"

# Import errors: no source (no volume made), an existing volume (kept).
refused 1 "missing.raw: No such file" volume import missing.raw m1
ok volume list --json
[[ $(json '"m1" in [v["name"] for v in d["volumes"]]' out.txt) == false ]] ||
	fail "a failed import left volume m1"
refused 1 "imp.*already exists" volume import src.raw imp
ok volume export imp again.raw
cmp -n "$size" src.raw again.raw || fail "a refused import changed volume imp"
refused 2 "unknown option" volume import --bogus src.raw x
refused 1 "invalid source format" volume import -f vmdk src.raw x

# --- delete -------------------------------------------------------------------
for v in vm2 c1 imp q1; do
	ok volume delete "$v"
done
refused 1 "no volume imp|imp.*no such volume" volume delete imp
ok volume list
[[ $(awk 'NR > 1 {print $1}' out.txt | tr '\n' ' ') == "vm1 " ]] ||
	fail "volumes left: $(cat out.txt)"

stop_blockd
qemu_check "$BLOCKD_DIR/volumes/vm1.qcow2"
echo PASS
