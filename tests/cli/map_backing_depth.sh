#!/bin/bash
# image map reports data from a backing file at depth 1 and the image's
# own clusters at depth 0, as qemu-img map does.
. "$(dirname "$0")/lib.sh"
need qemu-io

qimg create -q -f qcow2 base.qcow2 4M
qio -c 'write -P 1 0 1M' base.qcow2 >/dev/null
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qio -c 'write -P 2 0 64k' top.qcow2 >/dev/null

blockctl image map --json top.qcow2 | tr -d ' ' >map.json
grep -q '"start":0,"length":65536,"depth":0,.*"data":true' map.json || fail "own data: $(cat map.json)"
grep -q '"start":65536,"length":983040,"depth":1,.*"data":true' map.json ||
	fail "backing data: $(cat map.json)"

blockctl image map top.qcow2 >map.txt
grep -q 'base.qcow2' map.txt || fail "human map does not name the backing file: $(cat map.txt)"
grep -q 'top.qcow2' map.txt || fail "human map does not name the image: $(cat map.txt)"
