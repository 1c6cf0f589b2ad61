#!/bin/bash
# The volumes folder and what blockd serves agree, whatever happens to the
# files behind its back:
#  - a file that cannot be opened is listed with "state": "error" and the
#    reason (and by blockctl volume list), refused over NBD with a clear
#    409 for changes, deletable, and served once SIGHUP finds it fixed;
#  - a file removed by hand is dropped at the next SIGHUP: no longer listed
#    or served, its connections get EIO or are cut, and deleting it says
#    404; deleting one removed by hand before any rescan succeeds;
#  - a file replaced by another is served as the new one after SIGHUP;
#  - a rescan never touches a temporary (".NAME.tmp"); the next start does.
source "$(dirname "$0")/lib.sh"
source "$DAEMON_TEST_DIR/api_lib.sh"

DIR=$TMP/data
new_volume "$DIR" good 16M
printf 'not a qcow2 image at all\n' >"$DIR/volumes/junk.qcow2"
new_volume "$DIR" cut 16M
head -c 40 "$DIR/volumes/cut.qcow2" >cut.part
mv cut.part "$DIR/volumes/cut.qcow2"
start_blockd "$DIR"

# volume_state NAME: "ok", "error" or "absent", as GET /v1/volumes lists it.
volume_state() {
	expect 200 GET /v1/volumes
	json "next((v['state'] for v in d['volumes'] if v['name'] == '$1'), 'absent')"
}

# wait_state NAME STATE: after a SIGHUP, until the listing says so (10 s at most).
wait_state() {
	local i
	for ((i = 0; i < 200; i++)); do
		[[ $(volume_state "$1") == "$2" ]] && return 0
		sleep 0.05
	done
	fail "volume $1 is $(volume_state "$1"), not $2, after the rescan: $(cat resp)"
}

# --- volumes that cannot be opened are listed, with the reason.
[[ $(names) == "cut good junk" ]] || fail "GET /v1/volumes: $(cat resp)"
for v in junk cut; do
	[[ $(volume_state $v) == error ]] || fail "$v is not in state error: $(cat resp)"
	expect 200 GET /v1/volumes/$v
	[[ $(json 'd["state"]') == error ]] || fail "GET $v: $(cat resp)"
	[[ -n $(json 'd["error"]') ]] || fail "GET $v gives no reason: $(cat resp)"
done
expect 200 GET /v1/volumes/junk
json 'd["error"]' | grep -qi 'qcow2\|magic\|image' || fail "junk's reason: $(cat resp)"
[[ $(volume_state good) == ok ]] || fail "good is not ok: $(cat resp)"
expect 200 GET /v1/volumes/good
[[ $(json '"error" in d') == false ]] || fail "a served volume has an error: $(cat resp)"
out=$(t "$BLOCKCTL" --data-dir "$DIR" volume list) || fail "blockctl volume list: $out"
grep -q '^junk .*error' <<<"$out" || fail "blockctl volume list does not show junk in error: $out"
out=$(t "$BLOCKCTL" --data-dir "$DIR" volume list --json) || fail "volume list --json"
grep -q '"state": "error"' <<<"$out" || fail "volume list --json: $out"
if t nbdinfo "$(unix_uri junk)" >nbdinfo.out 2>&1; then
	fail "nbdinfo opened the broken volume junk: $(cat nbdinfo.out)"
fi
expect_error 409 volume_error POST /v1/volumes/junk/snapshots '{"name": "s1"}'
expect_error 409 volume_error PATCH /v1/volumes/junk '{"size": "32M"}'
expect_error 409 conflict POST /v1/volumes '{"name": "junk", "size": "1M"}'

# Fixed behind blockd's back: served after SIGHUP.
t qemu-img create -q -f qcow2 fixed.qcow2 8M
mv fixed.qcow2 "$DIR/volumes/junk.qcow2"
kill -HUP "$BLOCKD_PID"
wait_state junk ok
[[ $(export_size junk) == $((8 << 20)) ]] || fail "junk is not served at 8 MiB after the fix"

# A broken volume can be deleted: its file goes.
expect 204 DELETE /v1/volumes/cut
[[ ! -e $DIR/volumes/cut.qcow2 ]] || fail "deleting cut left its file"
[[ $(volume_state cut) == absent ]] || fail "cut is still listed: $(cat resp)"

# --- a file removed by hand is dropped at the next rescan, with its connections.
nbd_write good 0 4096 7
$PYTHON - "$(unix_uri good)" ready go result <<'PY' &
import os, sys, time, nbd
uri, ready, go, result = sys.argv[1:]
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\1" * 4096, 0)
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
# Writes until one fails: EIO, or the connection cut.
outcome = "all writes succeeded"
for i in range(200):
    try:
        h.pwrite(b"\2" * 4096, 4096)
    except nbd.Error as e:
        outcome = "failed: %s" % e
        break
    time.sleep(0.05)
open(result, "w").write(outcome)
PY
WRITER=$!
for ((i = 0; i < 200; i++)); do
	[[ -f ready ]] && break
	sleep 0.05
done
[[ -f ready ]] || fail "the writer of good did not connect"
rm "$DIR/volumes/good.qcow2"
kill -HUP "$BLOCKD_PID"
wait_state good absent
touch go
wait "$WRITER" || fail "the writer of good failed"
grep -q '^failed' result || fail "writes to the removed volume good go on: $(cat result)"
grep -q 'volume good: .* was removed or replaced' "$BLOCKD_LOG" ||
	fail "blockd did not log that good's file went"
expect_error 404 not_found DELETE /v1/volumes/good
if t nbdinfo "$(unix_uri good)" >/dev/null 2>&1; then
	fail "the removed volume good is still served"
fi

# Removed by hand, deleted through the API before any rescan: that is what the caller wanted.
t "$BLOCKCTL" --data-dir "$DIR" volume create gone 1M >/dev/null || fail "create gone"
rm "$DIR/volumes/gone.qcow2"
expect 204 DELETE /v1/volumes/gone
[[ $(volume_state gone) == absent ]] || fail "gone is still listed: $(cat resp)"

# --- a file replaced by another is the new one after the rescan.
t "$BLOCKCTL" --data-dir "$DIR" volume create swap 1M >/dev/null || fail "create swap"
t qemu-img create -q -f qcow2 other.qcow2 4M
mv other.qcow2 "$DIR/volumes/swap.qcow2"
kill -HUP "$BLOCKD_PID"
for ((i = 0; i < 200; i++)); do
	[[ $(export_size swap) == $((4 << 20)) ]] && break
	sleep 0.05
done
[[ $(export_size swap) == $((4 << 20)) ]] || fail "the replaced swap is not served as the new file"

# --- temporaries: never touched by a rescan, removed by the next start.
touch "$DIR/volumes/.inflight.tmp"
rescans=$(grep -c "rescan:" "$BLOCKD_LOG")
kill -HUP "$BLOCKD_PID"
for ((i = 0; i < 200; i++)); do
	(($(grep -c "rescan:" "$BLOCKD_LOG") > rescans)) && break
	sleep 0.05
done
(($(grep -c "rescan:" "$BLOCKD_LOG") > rescans)) || fail "the rescan did not end"
[[ -e $DIR/volumes/.inflight.tmp ]] || fail "a rescan removed a temporary"
stop_blockd
start_blockd "$DIR"
[[ ! -e $DIR/volumes/.inflight.tmp ]] || fail "the start did not remove a temporary"
stop_blockd
check_files "$DIR"
api_done
echo ok
