#!/bin/bash
# SPDX-License-Identifier: MIT
# The volume endpoints of blockd's control API (DIR/control.sock, mode
# 0600), driven with curl.  POST /v1/volumes makes a volume from an integer
# size or a string such as "10G" (a qcow2 file DIR/volumes/NAME.qcow2 that
# NBD clients then see at that size, no temporary left behind); GET lists
# and describes volumes with every documented field; PATCH grows a volume
# while a client is connected (a new connection sees the new size, the old
# one keeps working) and shrinks it only when it is detached and has no
# snapshots (409 otherwise); DELETE removes the file (204), but not while
# a client holds a connection (409).  Bad requests get the documented
# status and an {"error": {"code", "message"}} body: duplicate 409,
# missing 404, malformed JSON, unknown keys, bad names (in the body and in
# the URL) and bad sizes 400, a body over 64 KiB 413, a wrong method 405,
# an unknown path 404; none of them changes anything.  Everything is as it
# was after a restart, and qemu-img check finds nothing in any file.
source "$(dirname "$0")/lib.sh"
source "$DAEMON_TEST_DIR/api_lib.sh"

DIR=$TMP/data
G=$((1 << 30))
M=$((1 << 20))
start_blockd "$DIR"

# The socket is its owner's alone.
sock_mode=$(stat -c %a "$DIR/control.sock")
[[ $sock_mode == 600 ]] || fail "control.sock has mode $sock_mode, not 600"
[[ -S $DIR/control.sock ]] || fail "control.sock is not a socket"

[[ $(names) == "" ]] || fail "a fresh data directory lists volumes: $(cat resp)"

# --- create: an integer size and a size string.
expect 201 POST /v1/volumes '{"name": "alpha", "size": 67108864}'
[[ $(json 'd["name"], d["size"]') == "('alpha', 67108864)" ]] ||
	fail "POST alpha answered $(cat resp)"
expect 201 POST /v1/volumes '{"name": "big", "size": "10G"}'
[[ $(json 'd["size"]') == $((10 * G)) ]] || fail "\"10G\" made $(json 'd["size"]') bytes"
expect 201 POST /v1/volumes '{"name": "Vol_2.x-y", "size": "1M"}'
[[ $(json 'd["size"]') == "$M" ]] || fail "\"1M\" made $(json 'd["size"]') bytes"
for v in alpha big Vol_2.x-y; do
	[[ -f $DIR/volumes/$v.qcow2 ]] || fail "no file for volume $v"
done
leftover=$(find "$DIR/volumes" "$DIR/bases" -name '*.tmp')
[[ -z $leftover ]] || fail "temporaries left after creating volumes: $leftover"
[[ $(export_size alpha) == $((64 * M)) ]] || fail "nbdinfo: alpha is $(export_size alpha) bytes"
[[ $(export_size big) == $((10 * G)) ]] || fail "nbdinfo: big is $(export_size big) bytes"
[[ $(qemu-img info -U --output=json "$DIR/volumes/big.qcow2" | json 'd["virtual-size"]' /dev/stdin) == $((10 * G)) ]] ||
	fail "qemu-img info: big.qcow2 is not 10G"

# --- list and info.
[[ $(names) == "Vol_2.x-y alpha big" ]] || fail "GET /v1/volumes: $(cat resp)"
[[ $(json 'sorted(d)') == "['volumes']" ]] || fail "GET /v1/volumes has keys $(json 'sorted(d)')"
[[ $(json 'sorted(d["volumes"][0])') == "['allocated', 'attachments', 'backing', 'modified', 'name', 'nbd_unix_uri', 'nbd_uri', 'size', 'snapshot_count', 'state']" ]] ||
	fail "a listed volume has keys $(json 'sorted(d["volumes"][0])')"
[[ $(json '" ".join(v["state"] for v in d["volumes"])') == "ok ok ok" ]] ||
	fail "listed volumes are not all in state ok: $(cat resp)"
expect 200 GET /v1/volumes/alpha
[[ $(json 'sorted(d)') == "['allocated', 'attachments', 'backing', 'modified', 'name', 'nbd_unix_uri', 'nbd_uri', 'size', 'snapshot_count', 'snapshots', 'state']" ]] ||
	fail "GET /v1/volumes/alpha has keys $(json 'sorted(d)')"
[[ $(json 'd["name"], d["size"], d["backing"], d["snapshot_count"], d["attachments"], d["snapshots"]') == "('alpha', 67108864, None, 0, [], [])" ]] ||
	fail "GET /v1/volumes/alpha: $(cat resp)"
[[ $(json 'd["modified"]') == "$(date -u -r "$BLOCKD_DIR/volumes/alpha.qcow2" +%Y-%m-%dT%H:%M:%SZ)" ]] ||
	fail "modified $(json 'd["modified"]') is not the file's mtime"
[[ $(json 'd["nbd_uri"]') == "$(tcp_uri alpha)" ]] || fail "nbd_uri $(json 'd["nbd_uri"]')"
[[ $(json 'd["nbd_unix_uri"]') == "$(unix_uri alpha)" ]] ||
	fail "nbd_unix_uri $(json 'd["nbd_unix_uri"]')"
alloc=$(json 'd["allocated"]')
file_alloc=$(($(stat -c %b "$DIR/volumes/alpha.qcow2") * 512))
[[ $alloc == "$file_alloc" ]] || fail "allocated is $alloc, the file has $file_alloc bytes"
# Both URIs reach the volume.
for uri in "$(tcp_uri alpha)" "$(unix_uri alpha)"; do
	[[ $(t nbdinfo --size "$uri") == $((64 * M)) ]] || fail "nbdinfo --size $uri"
done
# allocated follows the data written.
nbd_write alpha 0 $((8 * M)) 0x5a
expect 200 GET /v1/volumes/alpha
(($(json 'd["allocated"]') >= 8 * M)) || fail "allocated $(json 'd["allocated"]') after 8 MiB written"

# --- PATCH: grow online.  A client stays connected meanwhile; it sees the
# old size, a new connection the new one; the attachment shows in info.
hold_start grow alpha sha
expect 200 GET /v1/volumes/alpha
[[ $(json '[(a["export"], a["read_only"], a["connections"], a["peer"]) for a in d["attachments"]]') == "[('alpha', False, 1, 'local')]" ]] ||
	fail "attachments while a client is connected: $(json 'd["attachments"]')"
[[ $(json 'sorted(d["attachments"][0])') == "['connections', 'export', 'peer', 'read_only', 'since']" ]] ||
	fail "attachment keys $(json 'sorted(d["attachments"][0])')"
expect 200 PATCH /v1/volumes/alpha '{"size": "128M"}'
[[ $(json 'd["name"], d["size"]') == "('alpha', 134217728)" ]] || fail "PATCH grow: $(cat resp)"
[[ $(export_size alpha) == $((128 * M)) ]] ||
	fail "a new connection sees $(export_size alpha) bytes after growing to 128M"
expect 200 PATCH /v1/volumes/alpha "{\"size\": $((192 * M))}"
[[ $(json 'd["size"]') == $((192 * M)) ]] || fail "PATCH grow (integer): $(cat resp)"
[[ $(export_size alpha) == $((192 * M)) ]] || fail "nbdinfo after growing to 192M"
# Shrinking is refused while attached, and changes nothing.
expect_error 409 conflict PATCH /v1/volumes/alpha '{"size": "32M"}'
expect 200 GET /v1/volumes/alpha
[[ $(json 'd["size"]') == $((192 * M)) ]] || fail "a refused shrink changed the size: $(cat resp)"
# The connected client reads its (old-size) view of the volume.
hold_stop grow
want_sha=$( (head -c $((8 * M)) /dev/zero | tr '\0' '\132'; head -c $((56 * M)) /dev/zero) |
	sha256sum | cut -d' ' -f1)
[[ $HOLD_SHA == "$want_sha" ]] || fail "the client connected across the resizes read other data"
wait_detached alpha
# The grown part reads as zeros, the old data is kept.
dump alpha alpha.raw
[[ $(stat -c %s alpha.raw) == $((192 * M)) ]] || fail "alpha reads as $(stat -c %s alpha.raw) bytes"
(head -c $((8 * M)) /dev/zero | tr '\0' '\132'; head -c $((184 * M)) /dev/zero) >want.raw
cmp alpha.raw want.raw || fail "alpha after growing does not read as 8M of 0x5a then zeros"

# --- shrink: refused with a snapshot, allowed when detached without one.
expect 201 POST /v1/volumes/Vol_2.x-y/snapshots '{"name": "keep"}'
expect_error 409 conflict PATCH /v1/volumes/Vol_2.x-y '{"size": "512K"}'
expect 200 GET /v1/volumes/Vol_2.x-y
[[ $(json 'd["size"], d["snapshot_count"]') == "($M, 1)" ]] ||
	fail "a shrink refused for the snapshot changed the volume: $(cat resp)"
expect 204 DELETE /v1/volumes/Vol_2.x-y/snapshots/keep
expect 200 PATCH /v1/volumes/Vol_2.x-y '{"size": "512K"}'
[[ $(json 'd["size"]') == $((512 << 10)) ]] || fail "shrink: $(cat resp)"
[[ $(export_size Vol_2.x-y) == $((512 << 10)) ]] || fail "nbdinfo after the shrink"
expect 200 PATCH /v1/volumes/alpha '{"size": "16M"}'
[[ $(json 'd["size"]') == $((16 * M)) ]] || fail "shrink alpha: $(cat resp)"
dump alpha alpha.raw
head -c $((16 * M)) want.raw | cmp - alpha.raw || fail "alpha after shrinking to 16M"

# --- DELETE: refused while a client holds a connection.
expect 201 POST /v1/volumes '{"name": "doomed", "size": "4M"}'
hold_start del doomed
expect_error 409 conflict DELETE /v1/volumes/doomed
[[ -f $DIR/volumes/doomed.qcow2 ]] || fail "a refused DELETE removed the file"
expect 200 GET /v1/volumes/doomed
hold_stop del
wait_detached doomed
expect 204 DELETE /v1/volumes/doomed
[[ ! -s resp ]] || fail "DELETE answered 204 with a body: $(cat resp)"
[[ ! -e $DIR/volumes/doomed.qcow2 ]] || fail "DELETE left doomed.qcow2"
expect_error 404 not_found GET /v1/volumes/doomed
expect_error 404 not_found DELETE /v1/volumes/doomed
[[ $(names) == "Vol_2.x-y alpha big" ]] || fail "after DELETE: $(cat resp)"
t nbdinfo --size "$(unix_uri doomed)" >/dev/null 2>&1 && fail "the deleted volume is still served"
# The name can be used again, for a new, empty volume.
expect 201 POST /v1/volumes '{"name": "doomed", "size": "2M"}'
dump doomed doomed.raw
cmp doomed.raw <(head -c $((2 * M)) /dev/zero) || fail "a re-made volume is not empty"

# --- errors.
expect_error 409 conflict POST /v1/volumes '{"name": "alpha", "size": "1M"}'
expect_error 404 not_found GET /v1/volumes/nosuch
expect_error 404 not_found PATCH /v1/volumes/nosuch '{"size": "1M"}'
expect_error 404 not_found DELETE /v1/volumes/nosuch
expect_error 404 not_found GET /v1/volumes/nosuch/snapshots
# Malformed bodies.
expect_error 400 bad_request POST /v1/volumes '{"name": "m1", "size": 1'
expect_error 400 bad_request POST /v1/volumes 'name=m1&size=1'
expect_error 400 bad_request POST /v1/volumes '["m1", 1]'
expect_error 400 bad_request POST /v1/volumes '"m1"'
expect_error 400 bad_request POST /v1/volumes ''
expect_error 400 bad_request POST /v1/volumes '{"name": "m1", "name": "m2", "size": 1}'
expect_error 400 bad_request POST /v1/volumes '{"size": "1M"}'
expect_error 400 bad_request POST /v1/volumes '{"name": 7, "size": "1M"}'
expect_error 400 bad_request POST /v1/volumes '{"name": "m1"}'
expect_error 400 bad_request POST /v1/volumes '{"name": "m1", "size": "1M", "from": "alpha@s"}'
expect_error 400 bad_request PATCH /v1/volumes/alpha '{"size": "1M"'
expect_error 400 bad_request PATCH /v1/volumes/alpha ''
expect_error 400 bad_request PATCH /v1/volumes/alpha '{}'
# Unknown keys.
expect_error 400 bad_request POST /v1/volumes '{"name": "m1", "size": "1M", "color": "red"}'
expect_error 400 bad_request POST /v1/volumes '{"name": "m1", "Size": "1M"}'
expect_error 400 bad_request PATCH /v1/volumes/alpha '{"size": "32M", "force": true}'
# Bad names, in the body...
long=$(printf 'n%.0s' {1..129})
max=$(printf 'm%.0s' {1..128})
for name in '../x' 'a/b' '' "$long" '.hidden' '-x' 'a b' 'x@y' 'a\u0000b' 'é'; do
	expect_error 400 bad_request POST /v1/volumes "{\"name\": \"$name\", \"size\": \"1M\"}"
done
# ... and in the URL, as a path segment (../x), percent-encoded, too long.
for path in ../x .. %2e%2e %2E%2E/snapshots a%2Fb a%2fb/snapshots "$long" "$long/snapshots" \
	.hidden a%20b 'x@y'; do
	expect_error 400 bad_request GET "/v1/volumes/$path"
	expect_error 400 bad_request DELETE "/v1/volumes/$path"
done
expect_error 400 bad_request PATCH "/v1/volumes/$long" '{"size": "1M"}'
expect_error 400 bad_request PATCH /v1/volumes/.. '{"size": "1M"}'
# A literal slash splits the path: no such endpoint.
expect_error 404 not_found GET /v1/volumes/a/b
expect_error 404 not_found DELETE /v1/volumes/a/b
# 128 characters is a valid name.
expect 201 POST /v1/volumes "{\"name\": \"$max\", \"size\": \"1M\"}"
expect 200 GET "/v1/volumes/$max"
expect 204 DELETE "/v1/volumes/$max"
# Bad sizes: create and resize.
for size in 0 -1 '"0"' '"-1"' '"12Q"' '"abc"' '""' '"1.5G"' '"10 G"' 1.5 true null '[1]' \
	$((1 << 62)) 18446744073709551616 '"1025T"' '"2P"' '"16E"' '"99999999999999999999"' \
	$(((1 << 50) + 1)); do
	expect_error 400 bad_request POST /v1/volumes "{\"name\": \"s1\", \"size\": $size}"
	expect_error 400 bad_request PATCH /v1/volumes/alpha "{\"size\": $size}"
done
# The largest size allowed (1 PiB) is accepted.
expect 201 POST /v1/volumes '{"name": "huge", "size": "1024T"}'
[[ $(json 'd["size"]') == $((1 << 50)) ]] || fail "\"1024T\" made $(json 'd["size"]') bytes"
expect 204 DELETE /v1/volumes/huge
# A body over 64 KiB.
$PYTHON -c 'import json; print(json.dumps({"name": "toolarge", "size": "1M", "pad": "x" * 70000}))' \
	>large.json
expect_error 413 too_large POST /v1/volumes @large.json
expect_error 413 too_large PATCH /v1/volumes/alpha @large.json
head -c $((1 << 20)) /dev/zero | tr '\0' ' ' >spaces.json
expect_error 413 too_large POST /v1/volumes @spaces.json
# Just under the limit is parsed (and refused only for its unknown key).
$PYTHON -c 'import json; print(json.dumps({"name": "m1", "size": "1M", "pad": "x" * 60000}))' \
	>fine.json
expect_error 400 bad_request POST /v1/volumes @fine.json
# Wrong methods.
expect_error 405 method_not_allowed PUT /v1/volumes '{"name": "m1", "size": "1M"}'
expect_error 405 method_not_allowed DELETE /v1/volumes
expect_error 405 method_not_allowed PATCH /v1/volumes '{"size": "1M"}'
expect_error 405 method_not_allowed POST /v1/volumes/alpha '{"size": "1M"}'
expect_error 405 method_not_allowed PUT /v1/volumes/alpha '{"size": "1M"}'
expect_error 405 method_not_allowed DELETE /v1/volumes/alpha/snapshots
expect_error 405 method_not_allowed PATCH /v1/volumes/alpha/snapshots '{"name": "s"}'
# Unknown paths.
for path in / /v1 /v2/volumes /v1/volume /v1/volumes/alpha/snapshotz /v1/volumes/alpha/x/y \
	/v1/volumes/alpha/snapshots/s/restore/more /v1/volumes/alpha/snapshots/s/revert \
	/v1/volumes/alpha/snapshots/s/restore/a/b/c /v1//volumes /nosuch; do
	expect_error 404 not_found GET "$path"
done
# Nothing above changed the store.
[[ $(names) == "Vol_2.x-y alpha big doomed" ]] || fail "after the bad requests: $(cat resp)"
leftover=$(find "$DIR/volumes" "$DIR/bases" -mindepth 1 ! -name '*.qcow2')
[[ -z $leftover ]] || fail "files other than volumes after the bad requests: $leftover"
expect 200 GET /v1/volumes/alpha
[[ $(json 'd["size"], d["snapshot_count"]') == "($((16 * M)), 0)" ]] ||
	fail "alpha changed: $(cat resp)"
# The socket still serves (no error above wedged it).
expect 200 GET /metrics
grep -q '^blockd_volume_ops_total{volume="alpha",op="write"} [1-9]' resp ||
	fail "/metrics does not count alpha's writes: $(grep alpha resp | head -3)"

# --- a restart: the same volumes, sizes and data.
expect 200 GET /v1/volumes
json 'sorted((v["name"], v["size"], v["backing"], v["snapshot_count"]) for v in d["volumes"])' \
	>before.txt
stop_blockd
[[ ! -e $DIR/control.sock ]] || fail "control.sock left after a clean stop"
check_files "$DIR"
start_blockd "$DIR"
sock_mode=$(stat -c %a "$DIR/control.sock")
[[ $sock_mode == 600 ]] || fail "control.sock has mode $sock_mode after a restart"
expect 200 GET /v1/volumes
json 'sorted((v["name"], v["size"], v["backing"], v["snapshot_count"]) for v in d["volumes"])' \
	>after.txt
cmp before.txt after.txt || fail "the volumes after a restart: $(cat after.txt), before: $(cat before.txt)"
dump alpha alpha.raw
head -c $((16 * M)) want.raw | cmp - alpha.raw || fail "alpha after a restart"
[[ $(export_size big) == $((10 * G)) ]] || fail "big after a restart"
stop_blockd
check_files "$DIR"
api_done
echo "PASS: control API volume endpoints"
