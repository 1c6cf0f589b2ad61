#!/bin/bash
# SPDX-License-Identifier: MIT
# A volume file names its own backing file, so it must not reach outside
# the data directory: volumes whose chain leads to a host file (an absolute
# path, a "../.." path, a symlink in bases/ pointing out, a file deeper in
# the chain) or to a backing file whose format is not recorded (a raw disk
# holding a qcow2 header, probed, would name any file: qemu's
# CVE-2008-2004), and volume files that are symlinks, are listed in state
# "error" with the reason, at start and when a SIGHUP finds them, and no
# client reads a byte of the host file.  Chains that stay inside (a
# symlink in bases/ to another base, a blockd-made clone) are served.
# blockctl volume import refuses an image with a backing file unless
# --flatten, and even then one whose backing format is not recorded;
# --flatten copies the chain's data.
source "$(dirname "$0")/lib.sh"
need_python_nbd

DIR=$TMP/data
HOST=$TMP/host # outside the data directory
MARKER=BLOCKD-HOST-SECRET-7d1f0c
mkdir -p "$DIR/volumes" "$DIR/bases" "$HOST"
HOST=$(realpath "$HOST") # as the messages show it

# The host file: the marker all over 1 MiB, raw.
sys_python - "$HOST/secret.raw" "$MARKER" <<'PY'
import sys
m = sys.argv[2].encode()
open(sys.argv[1], "wb").write((m * (1 << 20))[: 1 << 20])
PY
# A qcow2 image outside, holding the marker too (for a symlinked volume file).
qimg create -q -f qcow2 "$HOST/vol.qcow2" 1M
qimg convert -n -f raw -O qcow2 "$HOST/secret.raw" "$HOST/vol.qcow2"

# drop_backing_format FILE: the image no longer records its backing file's
# format (the backing format header extension becomes the end marker).
drop_backing_format() {
	sys_python - "$1" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    head = f.read(4096)
    at = head.find(bytes.fromhex("e2792aca"), 104)
    if at < 0:
        sys.exit("no backing format extension")
    f.seek(at)
    f.write(bytes(8))
PY
}

# qcow2 over a raw backing file: overlay FILE BACKING [FORMAT]
overlay() {
	qimg create -q -f qcow2 -u -b "$2" -F "${3:-raw}" "$1" 1M
}

# make_escapes SUFFIX: one volume per way out, named KIND$SUFFIX.
make_escapes() {
	local s=$1 v=$DIR/volumes
	overlay "$v/abs$s.qcow2" "$HOST/secret.raw"
	overlay "$v/rel$s.qcow2" ../../host/secret.raw
	ln -s "$HOST/secret.raw" "$DIR/bases/out$s.raw"
	overlay "$v/link$s.qcow2" "../bases/out$s.raw"
	# A guest-written raw disk holding a qcow2 header that names the host file.
	overlay "$DIR/bases/guest$s.raw" "$HOST/secret.raw"
	overlay "$v/probe$s.qcow2" "../bases/guest$s.raw" qcow2
	drop_backing_format "$v/probe$s.qcow2"
	# Inside at the first step, outside at the second.
	overlay "$DIR/bases/mid$s.qcow2" "$HOST/secret.raw"
	overlay "$v/deep$s.qcow2" "../bases/mid$s.qcow2" qcow2
	ln -s "$HOST/vol.qcow2" "$v/symvol$s.qcow2"
}

# refused_state NAME PATTERN: NAME is listed in state error, its reason matching PATTERN.
refused_state() {
	local state reason
	state=$(json "[v.get('state') for v in d['volumes'] if v['name'] == '$1']" list.json)
	reason=$(json "[v.get('error', '') for v in d['volumes'] if v['name'] == '$1']" list.json)
	[[ $state == "['error']" ]] || fail "volume $1 is listed as $state, not in error: $reason"
	grep -Eq -- "$2" <<<"$reason" || fail "volume $1: reason '$reason' does not match '$2'"
}

# check_refused SUFFIX: every escape made with SUFFIX is refused with its reason.
check_refused() {
	local s=$1
	blockctl --data-dir "$DIR" volume list --json >list.json || fail "volume list"
	refused_state "abs$s" "backing file $HOST/secret.raw is .*, outside .*/bases"
	refused_state "rel$s" "backing file \.\./\.\./host/secret.raw is $HOST/secret.raw, outside"
	refused_state "link$s" "backing file \.\./bases/out$s.raw is $HOST/secret.raw, outside"
	refused_state "probe$s" "format of backing file \.\./bases/guest$s.raw is not recorded.*qemu-img rebase -u -F"
	refused_state "deep$s" "mid$s.qcow2: backing file $HOST/secret.raw is .*, outside"
	refused_state "symvol$s" "symbolic link"
}

# no_marker NAME...: no export of these volumes shows the marker, or opens at all.
no_marker() {
	sys_python - "$BLOCKD_SOCK" "$MARKER" "$@" <<'PY'
import sys, nbd
sock, marker = sys.argv[1], sys.argv[2].encode()
for name in sys.argv[3:]:
    h = nbd.NBD()
    try:
        h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    except nbd.Error:
        continue
    size = h.get_size()
    data = h.pread(size, 0) if size else b""
    if marker[:8] in data:
        sys.exit("export %s serves the host file" % name)
    print("export %s opened (no marker)" % name)
PY
}

KINDS=(abs rel link probe deep symvol)

# --- at start
make_escapes ""
# Inside the data directory: a symlink in bases/ to another base is fine.
qimg create -q -f qcow2 "$DIR/bases/legit.qcow2" 1M
t qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' "$DIR/bases/legit.qcow2" >/dev/null
ln -s legit.qcow2 "$DIR/bases/alias.qcow2"
overlay "$DIR/volumes/inside.qcow2" ../bases/alias.qcow2 qcow2
start_blockd "$DIR"
check_refused ""
no_marker "${KINDS[@]}"
[[ $(json "[v['state'] for v in d['volumes'] if v['name'] == 'inside']" list.json) == "['ok']" ]] ||
	fail "volume inside (chain inside the data directory) is not served: $(cat list.json)"
t qemu-img compare -q -f raw -F qcow2 "$(unix_uri inside)" "$DIR/bases/legit.qcow2" ||
	fail "volume inside does not read as its base"

# --- at a SIGHUP rescan
make_escapes "2"
kill -HUP "$BLOCKD_PID"
wait_until 10 "the rescan did not list symvol2" \
	eval 'blockctl --data-dir "$DIR" volume list --json | grep -q "\"symvol2\""'
check_refused "2"
no_marker "${KINDS[@]/%/2}"
! grep -q "$MARKER" "$BLOCKD_LOG" || fail "the log shows the marker"

# --- a blockd-made clone is served, now and after a restart
ctl() {
	blockctl --data-dir "$DIR" "$@" >/dev/null || fail "blockctl $*"
}
ctl volume create src 4M
t qemu-io -f raw -c 'write -P 0x6b 1M 128k' "$(unix_uri src)" >/dev/null
ctl snapshot create src s1
ctl volume clone src@s1 cl1
t qemu-img compare -q -f raw -F raw "$(unix_uri src@s1)" "$(unix_uri cl1)" ||
	fail "the clone does not read as its snapshot"

# --- import
overlay "$HOST/evil.qcow2" "$HOST/secret.raw"
expect_fail 1 "^blockctl: .*evil.qcow2: has a backing file \(.*secret.raw\).*--flatten" \
	--data-dir "$DIR" volume import "$HOST/evil.qcow2" imp1
overlay "$HOST/guest.raw" "$HOST/secret.raw"
overlay "$HOST/probe.qcow2" guest.raw qcow2
drop_backing_format "$HOST/probe.qcow2"
expect_fail 1 "^blockctl: .*probe.qcow2: has a backing file" \
	--data-dir "$DIR" volume import "$HOST/probe.qcow2" imp2
expect_fail 1 "^blockctl: .*format of backing file guest.raw is not recorded.*qemu-img rebase -u -F" \
	--data-dir "$DIR" volume import --flatten "$HOST/probe.qcow2" imp2
blockctl --data-dir "$DIR" volume list --json >list.json || fail "volume list"
[[ $(json "[v['name'] for v in d['volumes'] if v['name'].startswith('imp')]" list.json) == "[]" ]] ||
	fail "a refused import left a volume: $(cat list.json)"
# An explicit --flatten of a chain copies every layer's data.
qimg create -q -f qcow2 base.qcow2 4M
t qemu-io -f qcow2 -c 'write -P 0x31 0 1M' -c 'write -P 0x32 3M 64k' base.qcow2 >/dev/null
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
t qemu-io -f qcow2 -c 'write -P 0x33 512k 4k' -c 'write -z 3M 4k' top.qcow2 >/dev/null
ctl volume import --flatten top.qcow2 imp3
t qemu-img compare -q -f qcow2 -F raw top.qcow2 "$(unix_uri imp3)" ||
	fail "the flattened import differs from its source chain"

stop_blockd
start_blockd "$DIR"
check_refused ""
t qemu-img compare -q -f raw -F raw "$(unix_uri src@s1)" "$(unix_uri cl1)" ||
	fail "after a restart, the clone does not read as its snapshot"
stop_blockd
echo ok
