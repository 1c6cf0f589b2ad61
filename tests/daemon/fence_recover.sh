#!/bin/bash
# A disk that fails for a while: a failed write-back fences the volume
# (every flush fails, even once the disk works again: no flush may report
# success over lost pages), the API and /metrics say so with the reason,
# and the volume recovers without a restart: by itself once its clients
# have disconnected, or on POST /v1/volumes/NAME/recover, which cuts the
# clients still attached.  No flushed write is lost.  Volume "bad" is a
# qcow2 image on a disk that fails writes while the file "inject" exists
# (a write to a new cluster then fails its metadata write-back at the
# next flush) (nbdkit's error filter, through nbdfuse mounted over the
# volume file).
source "$(dirname "$0")/lib.sh"
need nbdkit nbdfuse fusermount3 curl
need_python_nbd
[[ -c /dev/fuse ]] || skip "no /dev/fuse"

DIR=$TMP/data
mkdir -p "$DIR/volumes"
VOL=$DIR/volumes/bad.qcow2
touch "$VOL"
nbdkit -f -U "$TMP/nbdkit.sock" --filter=error memory size=256M error=EIO \
	error-pwrite-rate=100% error-pwrite-file="$TMP/inject" 2>>nbdkit.log &
HELPER_PIDS+=($!)
wait_until 10 "nbdkit did not start" test -S "$TMP/nbdkit.sock"
nbdfuse "$VOL" --unix "$TMP/nbdkit.sock" 2>>nbdfuse.log &
wait_until 10 "nbdfuse did not mount" test -s "$VOL"
t qemu-img create -q -f qcow2 fresh.qcow2 64M
dd if=fresh.qcow2 of="$VOL" conv=notrunc status=none
start_blockd "$DIR"

api() {
	curl -sS --max-time $((30 * TEST_TIME_SCALE)) --unix-socket "$DIR/control.sock" "$@"
}
state() {
	api http://blockd/v1/volumes/bad >resp
	json 'd["state"]'
}

sys_python - "$(unix_uri bad)" "$DIR/control.sock" "$TMP/inject" "$TEST_TIME_SCALE" <<'PY'
import json, nbd, os, socket, sys, time
uri, control, inject, scale = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def api(method, path):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(30 * scale)
    c.connect(control)
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
              "Content-Length: 0\r\n\r\n".encode())
    reply = b""
    while chunk := c.recv(65536):
        reply += chunk
    head, body = reply.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), body.decode()

def block(i, tag):
    return bytes([tag]) * 4096 + i.to_bytes(4, "little") * 1024

def connect():
    # A fenced volume reopens on the pool when its last client has gone:
    # the first lookups may still find it in use.
    deadline = time.monotonic() + 10 * scale
    while True:
        h = nbd.NBD()
        try:
            h.connect_uri(uri)
            return h
        except nbd.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

def fence(h, what, i):
    open(inject, "w").close()
    try:
        h.pwrite(block(i, 0xEE), i * 65536)
    except nbd.Error:
        pass  # the write itself may fail or not; the flush must
    try:
        h.flush()
        sys.exit(f"{what}: a flush succeeded while the disk failed")
    except nbd.Error as e:
        if e.errnum != 5:
            sys.exit(f"{what}: the failed flush gave errno {e.errnum}, not EIO")
    status, body = api("GET", "/v1/volumes/bad")
    v = json.loads(body)
    if v["state"] != "fenced" or "write-back failed" not in v.get("error", ""):
        sys.exit(f"{what}: the API shows {v['state']!r} ({v.get('error')!r}), not fenced")
    _, metrics = api("GET", "/metrics")
    if 'blockd_volume_state{volume="bad",state="fenced"} 1' not in metrics:
        sys.exit(f"{what}: /metrics does not show bad as fenced")
    os.unlink(inject)
    # The disk works again, but what the failed write-back lost stays lost:
    # no flush on this connection may say otherwise.
    try:
        h.flush()
        sys.exit(f"{what}: a flush succeeded on the fenced volume after the disk came back")
    except nbd.Error:
        pass

def check(h, tags, what):
    for i, tag in tags.items():
        if h.pread(8192, i * 65536) != block(i, tag):
            sys.exit(f"{what}: block {i} does not hold its flushed data")

# Flushed data, then the disk fails.
a = connect()
flushed = {i: 0x11 for i in range(6)}
for i in flushed:
    a.pwrite(block(i, 0x11), i * 65536)
a.flush()
fence(a, "first failure", 20)
a.shutdown()

# Its only client gone, the volume reopens by itself (checked, repaired).
b = connect()
check(b, flushed, "after the automatic reopen")
b.pwrite(block(1, 0x22), 65536)
b.flush()
flushed[1] = 0x22
status, body = api("GET", "/v1/volumes/bad")
if json.loads(body)["state"] != "ok":
    sys.exit(f"after the automatic reopen the API shows {body}")

# Fenced again, with the client still attached: recover cuts it.
fence(b, "second failure", 30)
status, body = api("POST", "/v1/volumes/bad/recover")
if status != 200 or json.loads(body)["state"] != "ok":
    sys.exit(f"POST .../recover: {status} {body}")
try:
    b.flush()
    sys.exit("the client attached before the recovery could still flush")
except nbd.Error:
    pass
c = connect()
check(c, flushed, "after POST .../recover")
c.pwrite(block(2, 0x33), 2 * 65536)
c.flush()
c.shutdown()
print("ok")
PY
grep -q "volume bad: fenced, every flush fails" "$BLOCKD_LOG" || fail "the fence was not logged"
grep -q "volume bad: recovered" "$BLOCKD_LOG" || fail "the recovery was not logged"
# blockctl's way in; on a healthy volume it changes nothing.
[[ $(blockctl --data-dir "$DIR" volume recover bad) == "Volume recovered." ]] || fail "blockctl volume recover bad"
stop_blockd
qemu_check "$VOL"
echo ok
