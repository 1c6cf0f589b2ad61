#!/bin/bash
# SPDX-License-Identifier: MIT
# Snapshots and clones through blockd's control API.  A snapshot taken
# while four connections write holds every write acknowledged before the
# POST was sent and none issued after its reply (api_client.py
# snapshot-during-writes); the NAME@SNAP export serves it read-only.
# Snapshots are listed (in GET .../snapshots and in the volume's info),
# deleted (not while NAME@SNAP is attached: 409) and restored (not while a
# client has the volume attached read-write: 409; a reader of NAME@SNAP
# does not stop it, and goes on reading the snapshot); a restored volume
# reads as the snapshot.  A clone of VOL@SNAP reads as the snapshot and
# diverges on write without changing the origin or the snapshot; its
# qcow2 file has a backing file in DIR/bases, the base made by the first
# clone and shared, untouched, by the second (O(1)).  Deleting the origin
# leaves its clones readable; deleting the last clone removes the base.
# Errors get 400, 404 or 409.  All of it is the same after restarts, and
# qemu-img check finds nothing in any file.
source "$(dirname "$0")/lib.sh"
source "$DAEMON_TEST_DIR/api_lib.sh"

DIR=$TMP/data
M=$((1 << 20))
start_blockd "$DIR"

# --- a snapshot taken under writes holds exactly the acknowledged ones.
expect 201 POST /v1/volumes '{"name": "vol", "size": "64M"}'
sys_python "$CLIENT" snapshot-during-writes "$DIR/control.sock" "$BLOCKD_SOCK" vol s1 ||
	fail "the snapshot taken under writes is wrong"
wait_detached vol
# Twice more, on volumes of their own, for other timings.
for w in w2 w3; do
	expect 201 POST /v1/volumes "{\"name\": \"$w\", \"size\": \"64M\"}"
	sys_python "$CLIENT" snapshot-during-writes "$DIR/control.sock" "$BLOCKD_SOCK" "$w" snap ||
		fail "the snapshot of $w taken under writes is wrong"
	wait_detached "$w"
	expect 204 DELETE "/v1/volumes/$w"
done

# --- list.
expect 200 GET /v1/volumes/vol/snapshots
[[ $(json 'sorted(d)') == "['snapshots']" ]] || fail "GET snapshots has keys $(json 'sorted(d)')"
[[ $(json '[(s["name"], s["size"]) for s in d["snapshots"]]') == "[('s1', $((64 * M)))]" ]] ||
	fail "GET snapshots: $(cat resp)"
[[ $(json 'sorted(d["snapshots"][0])') == "['created', 'id', 'name', 'size']" ]] ||
	fail "a snapshot has keys $(json 'sorted(d["snapshots"][0])')"
json 'd["snapshots"][0]["created"]' | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' ||
	fail "created is not an ISO time: $(cat resp)"
s1_id=$(json 'd["snapshots"][0]["id"]')
expect 201 POST /v1/volumes/vol/snapshots '{"name": "s2"}'
[[ $(json 'd["name"], d["size"]') == "('s2', $((64 * M)))" ]] || fail "POST s2 answered $(cat resp)"
[[ $(json 'd["id"]') != "$s1_id" ]] || fail "s1 and s2 have the same id $s1_id"
expect 200 GET /v1/volumes/vol
[[ $(json 'd["snapshot_count"], [s["name"] for s in d["snapshots"]]') == "(2, ['s1', 's2'])" ]] ||
	fail "the volume's info lists snapshots $(cat resp)"
t nbdinfo --list "$(unix_uri "")" >list.txt || fail "nbdinfo --list"
grep -q 'export="vol@s1"' list.txt && grep -q 'export="vol@s2"' list.txt ||
	fail "NBD does not list vol@s1 and vol@s2: $(cat list.txt)"

# One snapshot: its entry plus the bytes it holds in the file, whole
# clusters of data written before it was taken (none written after).
expect 201 POST /v1/volumes '{"name": "al", "size": "8M"}'
t nbdsh -u "$(unix_uri al)" -c 'h.pwrite(b"a" * 3 * 65536, 0); h.pwrite(b"b" * 100, 5 << 20); h.flush()' ||
	fail "nbdsh writes to al"
expect 201 POST /v1/volumes/al/snapshots '{"name": "a"}'
t nbdsh -u "$(unix_uri al)" -c 'h.pwrite(b"c" * 2 * 65536, 1 << 20); h.flush()' || fail "nbdsh al"
expect 200 GET /v1/volumes/al/snapshots/a
[[ $(json 'sorted(d)') == "['allocated', 'created', 'id', 'name', 'size']" ]] ||
	fail "GET one snapshot has keys $(json 'sorted(d)')"
[[ $(json 'd["name"], d["size"], d["allocated"]') == "('a', $((8 * M)), $((4 * 65536)))" ]] ||
	fail "GET al/snapshots/a: $(cat resp)"
# The same once al@a is served over NBD (then its view counts it).
t nbdinfo --size "$(unix_uri al@a)" >/dev/null || fail "nbdinfo al@a"
expect 200 GET /v1/volumes/al/snapshots/a
[[ $(json 'd["allocated"]') == $((4 * 65536)) ]] || fail "GET al/snapshots/a once served: $(cat resp)"
expect 201 POST /v1/volumes/al/snapshots '{"name": "b"}'
expect 200 GET /v1/volumes/al/snapshots/b
[[ $(json 'd["allocated"]') == $((6 * 65536)) ]] || fail "GET al/snapshots/b: $(cat resp)"
expect_error 404 not_found GET /v1/volumes/al/snapshots/nosuch
expect_error 404 not_found GET /v1/volumes/nosuch/snapshots/a
wait_detached al
expect 204 DELETE /v1/volumes/al

# The snapshot is read-only over NBD.
t nbdinfo --json "$(unix_uri vol@s1)" >info.json || fail "nbdinfo vol@s1"
[[ $(json 'd["exports"][0]["is_read_only"]' info.json) == true ]] || fail "vol@s1 is writable"

# --- errors.
expect_error 409 conflict POST /v1/volumes/vol/snapshots '{"name": "s1"}'
expect_error 404 not_found POST /v1/volumes/nosuch/snapshots '{"name": "x"}'
expect_error 404 not_found DELETE /v1/volumes/vol/snapshots/nosuch
expect_error 404 not_found DELETE /v1/volumes/nosuch/snapshots/s1
expect_error 404 not_found POST /v1/volumes/vol/snapshots/nosuch/restore
expect_error 404 not_found POST /v1/volumes/nosuch/snapshots/s1/restore
for name in '../x' 'a/b' '' '.s' 'a b' 'x@y' "$(printf 'n%.0s' {1..129})"; do
	expect_error 400 bad_request POST /v1/volumes/vol/snapshots "{\"name\": \"$name\"}"
done
expect_error 400 bad_request POST /v1/volumes/vol/snapshots '{"name": "x", "extra": 1}'
expect_error 400 bad_request POST /v1/volumes/vol/snapshots '{"name": 1}'
expect_error 400 bad_request POST /v1/volumes/vol/snapshots '{}'
expect_error 400 bad_request POST /v1/volumes/vol/snapshots '{"name": "x"'
expect_error 400 bad_request DELETE /v1/volumes/vol/snapshots/..
expect_error 400 bad_request POST /v1/volumes/vol/snapshots/%2e%2e/restore
expect_error 405 method_not_allowed GET /v1/volumes/vol/snapshots/s1/restore
expect_error 405 method_not_allowed POST /v1/volumes/vol/snapshots/s1 '{}'
expect_error 405 method_not_allowed DELETE /v1/volumes/vol/snapshots/s1/restore
expect_error 404 not_found POST /v1/volumes '{"name": "c", "from": "vol@nosuch"}'
expect_error 404 not_found POST /v1/volumes '{"name": "c", "from": "nosuch@s1"}'
for from in vol vol@ @s1 'vol@s1@x' '../vol@s1' 'vol@../s1' 'vol@a/b'; do
	expect_error 400 bad_request POST /v1/volumes "{\"name\": \"c\", \"from\": \"$from\"}"
done
expect_error 400 bad_request POST /v1/volumes '{"name": "../c", "from": "vol@s1"}'
expect_error 400 bad_request POST /v1/volumes '{"name": "c", "from": 1}'
expect_error 409 conflict POST /v1/volumes '{"name": "vol", "from": "vol@s1"}'
[[ -z $(ls -A "$DIR/bases") ]] || fail "refused clones left $(ls -A "$DIR/bases") in bases"
[[ $(names) == vol ]] || fail "refused calls made volumes: $(cat resp)"
expect 200 GET /v1/volumes/vol/snapshots
[[ $(json '[s["name"] for s in d["snapshots"]]') == "['s1', 's2']" ]] ||
	fail "refused calls changed the snapshots: $(cat resp)"

# --- delete: refused while vol@s2 is attached; then the export is gone.
hold_start s2 vol@s2
expect 200 GET /v1/volumes/vol
[[ $(json '[(a["export"], a["read_only"]) for a in d["attachments"]]') == "[('vol@s2', True)]" ]] ||
	fail "attachments of a snapshot reader: $(json 'd["attachments"]')"
expect_error 409 conflict DELETE /v1/volumes/vol/snapshots/s2
# A volume whose snapshot is read can still be snapshotted; s1 can go.
expect 201 POST /v1/volumes/vol/snapshots '{"name": "s3"}'
expect 204 DELETE /v1/volumes/vol/snapshots/s3
hold_stop s2
wait_detached vol
expect 204 DELETE /v1/volumes/vol/snapshots/s2
[[ ! -s resp ]] || fail "DELETE of a snapshot answered 204 with a body: $(cat resp)"
expect 200 GET /v1/volumes/vol/snapshots
[[ $(json '[s["name"] for s in d["snapshots"]]') == "['s1']" ]] ||
	fail "after deleting s2 and s3: $(cat resp)"
t nbdinfo --size "$(unix_uri vol@s2)" >/dev/null 2>&1 && fail "vol@s2 is still served"

# --- restore.
dump vol@s1 s1.raw
dump vol vol-before.raw
cmp -s s1.raw vol-before.raw && fail "vol already reads as s1: the restore would prove nothing"
# Refused while a client has the volume attached read-write.
hold_start w vol
expect_error 409 conflict POST /v1/volumes/vol/snapshots/s1/restore
hold_stop w
wait_detached vol
dump vol vol-now.raw
cmp vol-before.raw vol-now.raw || fail "a refused restore changed the volume"
# Allowed while only vol@s1 is read; that reader goes on reading s1.
hold_start r vol@s1 sha
expect 200 POST /v1/volumes/vol/snapshots/s1/restore
[[ $(json 'd["name"], d["snapshot_count"]') == "('vol', 1)" ]] || fail "restore answered $(cat resp)"
hold_stop r
[[ $HOLD_SHA == "$(sha256sum <s1.raw | cut -d' ' -f1)" ]] ||
	fail "the reader of vol@s1 read other data across the restore"
wait_detached vol
dump vol vol-now.raw
cmp s1.raw vol-now.raw || fail "the restored volume does not read as s1"
dump vol@s1 s1-now.raw
cmp s1.raw s1-now.raw || fail "the restore changed s1"
# The volume is writable again, and the snapshot stays as it was.
nbd_write vol $((60 * M)) 65536 0x77
dump vol vol-now.raw
cp s1.raw vol.want
printf '\x77%.0s' $(seq 65536) | dd of=vol.want bs=1 seek=$((60 * M)) conv=notrunc status=none
cmp vol.want vol-now.raw || fail "a write after the restore"

# --- clones.
start=$(date +%s%N)
expect 201 POST /v1/volumes '{"name": "c1", "from": "vol@s1"}'
first_ms=$((($(date +%s%N) - start) / 1000000))
[[ $(json 'd["name"], d["size"], d["snapshot_count"]') == "('c1', $((64 * M)), 0)" ]] ||
	fail "POST c1 answered $(cat resp)"
mapfile -t bases < <(ls -A "$DIR/bases")
((${#bases[@]} == 1)) || fail "after the first clone bases holds: ${bases[*]}"
base=$DIR/bases/${bases[0]}
[[ ${bases[0]} == vol@s1-*.qcow2 ]] || fail "the base is named ${bases[0]}"
[[ $(realpath "$(json 'd["backing"]')") == "$(realpath "$base")" ]] ||
	fail "c1's backing is $(json 'd["backing"]'), not $base"
base_id=$(stat -c '%i %Y %s' "$base")
dump c1 c1.raw
cmp s1.raw c1.raw || fail "the clone does not read as the snapshot"
# Writing to the clone changes neither the snapshot nor the origin.
nbd_write c1 $((8 * M)) 4096 0xc1
cp s1.raw c1.want
printf '\xc1%.0s' $(seq 4096) | dd of=c1.want bs=1 seek=$((8 * M)) conv=notrunc status=none
dump c1 c1.raw
cmp c1.want c1.raw || fail "the clone after a write"
cmp -s c1.want s1.raw && fail "the write to the clone changed nothing"
dump vol@s1 s1-now.raw
cmp s1.raw s1-now.raw || fail "a write to the clone changed the snapshot"
dump vol vol-now.raw
cmp vol.want vol-now.raw || fail "a write to the clone changed the origin"
# A write to the origin does not reach the clone.
nbd_write vol $((8 * M)) 4096 0x0f
printf '\x0f%.0s' $(seq 4096) | dd of=vol.want bs=1 seek=$((8 * M)) conv=notrunc status=none
dump c1 c1.raw
cmp c1.want c1.raw || fail "a write to the origin changed the clone"
# The second clone of the same snapshot reuses the base as it is.
start=$(date +%s%N)
expect 201 POST /v1/volumes '{"name": "c2", "from": "vol@s1"}'
second_ms=$((($(date +%s%N) - start) / 1000000))
echo "clone of vol@s1: first $first_ms ms, second $second_ms ms"
mapfile -t bases2 < <(ls -A "$DIR/bases")
[[ ${bases2[*]} == "${bases[*]}" ]] || fail "after the second clone bases holds: ${bases2[*]}"
[[ $(stat -c '%i %Y %s' "$base") == "$base_id" ]] || fail "the second clone rewrote the base"
dump c2 c2.raw
cmp s1.raw c2.raw || fail "the second clone does not read as the snapshot"
expect_error 409 conflict POST /v1/volumes '{"name": "c2", "from": "vol@s1"}'
# A clone is a volume like any other: it takes snapshots of its own.
expect 201 POST /v1/volumes/c1/snapshots '{"name": "cs"}'
dump c1@cs cs.raw
cmp c1.want cs.raw || fail "the clone's own snapshot"
# qemu sees a clone as an image with a backing file (relative: the data
# directory can move).
t qemu-img info -U --output=json "$DIR/volumes/c2.qcow2" >qinfo.json || fail "qemu-img info c2"
[[ $(json 'd["backing-filename"]' qinfo.json) == "../bases/${bases[0]}" ]] ||
	fail "qemu-img info: c2's backing file is $(json 'd.get("backing-filename")' qinfo.json)"
[[ $(json 'd.get("backing-filename-format")' qinfo.json) == qcow2 ]] ||
	fail "qemu-img info: c2's backing format is $(json 'd.get("backing-filename-format")' qinfo.json)"
[[ $(realpath "$(json 'd["full-backing-filename"]' qinfo.json)") == "$(realpath "$base")" ]] ||
	fail "qemu-img info: c2's backing file resolves to $(json 'd["full-backing-filename"]' qinfo.json)"
t qemu-img info -U --output=json "$base" >qinfo.json || fail "qemu-img info on the base"
[[ $(json 'd.get("backing-filename")' qinfo.json) == null ]] || fail "the base has a backing file"

# --- a restart keeps all of it.
expect 200 GET /v1/volumes
json 'sorted((v["name"], v["size"], v["backing"], v["snapshot_count"]) for v in d["volumes"])' \
	>before.txt
expect 200 GET /v1/volumes/vol/snapshots
cp resp snaps-before.json
stop_blockd
check_files "$DIR"
start_blockd "$DIR"
expect 200 GET /v1/volumes
json 'sorted((v["name"], v["size"], v["backing"], v["snapshot_count"]) for v in d["volumes"])' \
	>after.txt
cmp before.txt after.txt || fail "volumes after a restart: $(cat after.txt), before: $(cat before.txt)"
expect 200 GET /v1/volumes/vol/snapshots
cmp snaps-before.json resp || fail "vol's snapshots after a restart: $(cat resp)"
for pair in vol:vol.want vol@s1:s1.raw c1:c1.want c2:s1.raw c1@cs:c1.want; do
	dump "${pair%%:*}" now.raw
	cmp "${pair#*:}" now.raw || fail "${pair%%:*} after a restart"
done

# --- deleting the origin leaves its clones working.
expect 204 DELETE /v1/volumes/vol
[[ ! -e $DIR/volumes/vol.qcow2 ]] || fail "vol.qcow2 left after DELETE"
t nbdinfo --size "$(unix_uri vol@s1)" >/dev/null 2>&1 && fail "vol@s1 is served after vol is gone"
[[ -f $base ]] || fail "deleting the origin removed the base its clones use"
expect_error 404 not_found POST /v1/volumes '{"name": "c3", "from": "vol@s1"}'
dump c1 now.raw
cmp c1.want now.raw || fail "c1 after its origin was deleted"
dump c2 now.raw
cmp s1.raw now.raw || fail "c2 after its origin was deleted"
# One clone goes: the other still uses the base.
expect 204 DELETE /v1/volumes/c1
[[ -f $base ]] || fail "the base was removed while c2 uses it"
stop_blockd
check_files "$DIR"
start_blockd "$DIR"
[[ $(names) == c2 ]] || fail "after deleting vol and c1 and a restart: $(cat resp)"
dump c2 now.raw
cmp s1.raw now.raw || fail "c2 after its origin was deleted and a restart"
# The last clone goes, and the base with it.
expect 204 DELETE /v1/volumes/c2
[[ ! -e $base ]] || fail "the base outlived the last clone"
[[ -z $(ls -A "$DIR/bases") ]] || fail "bases holds $(ls -A "$DIR/bases") after the last clone"
[[ -z $(ls -A "$DIR/volumes") ]] || fail "volumes holds $(ls -A "$DIR/volumes") after deleting all"
stop_blockd
start_blockd "$DIR"
[[ $(names) == "" ]] || fail "volumes after deleting all and a restart: $(cat resp)"
stop_blockd
api_done
echo "PASS: control API snapshots and clones"
