#!/bin/bash
# Thousands of volumes in one data directory, under a descriptor limit an
# operator's service manager may well set: blockd starts with all of them,
# lists them, serves any of them (volumes and snapshots, unix socket and
# TCP), holds descriptors only for volumes in use, and its control API and
# a client keep being served while 1,000 TCP connections sit in their NBD
# handshake.
source "$(dirname "$0")/lib.sh"
need curl
need_python_nbd

VOLUMES=${SCALE_VOLUMES:-2000}
# 3 descriptors a volume kept open would need 6,000; 1,000 stalled
# handshakes need 1,000 more.
ulimit -n 4096

DIR=$TMP/data
mkdir -p "$DIR/volumes"
t qemu-img create -q -f qcow2 template.qcow2 64M
for snap in a b c; do
	t qemu-img snapshot -c "$snap" template.qcow2
done
sys_python - "$DIR/volumes" "$VOLUMES" <<'PY'
import shutil, sys
for i in range(int(sys.argv[2])):
    shutil.copyfile("template.qcow2", f"{sys.argv[1]}/v{i}.qcow2")
PY
start_blockd "$DIR"

fds() {
	find "/proc/$BLOCKD_PID/fd" -mindepth 1 | wc -l
}
api() {
	curl -sS --max-time $((30 * TEST_TIME_SCALE)) --unix-socket "$DIR/control.sock" "$@"
}

! grep -q "not served" "$BLOCKD_LOG" || fail "volumes not served: $(grep -m3 'not served' "$BLOCKD_LOG")"
api http://blockd/v1/volumes >list.json
listed=$(sys_python -c 'import json,sys; v=json.load(open("list.json"))["volumes"]; print(sum(1 for x in v if x["state"] == "ok" and x["snapshot_count"] == 3))')
[[ $listed == "$VOLUMES" ]] || fail "$listed of $VOLUMES volumes listed as served with 3 snapshots"
idle_fds=$(fds)
((idle_fds < 100)) || fail "blockd holds $idle_fds descriptors with no client"

# Any volume, any way in: write and read back, a snapshot's view, over both sockets.
sys_python - "$BLOCKD_SOCK" "$BLOCKD_PORT" "$VOLUMES" <<'PY'
import nbd, sys
sock, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i, uri in ((0, f"nbd+unix:///v0?socket={sock}"),
               (n - 1, f"nbd://127.0.0.1:{port}/v{n - 1}"),
               (n // 2, f"nbd+unix:///v{n // 2}?socket={sock}")):
    h = nbd.NBD()
    h.connect_uri(uri)
    data = bytes([i % 251 + 1]) * 65536
    h.pwrite(data, 1 << 20)
    h.flush()
    if h.pread(65536, 1 << 20) != data:
        sys.exit(f"v{i}: read back other data")
    h.shutdown()
h = nbd.NBD()
h.connect_uri(f"nbd://127.0.0.1:{port}/v{n // 3}@b")
if h.get_size() != 64 << 20 or h.pread(4096, 0) != bytes(4096):
    sys.exit("snapshot b of a volume reads wrong")
h.shutdown()
PY

# 1,000 TCP connections that stop in the handshake, from 20 addresses of
# the loopback net (as 20 hosts would); meanwhile the API and a client go on.
sys_python - "$BLOCKD_PORT" "$DIR/control.sock" "$BLOCKD_SOCK" <<'PY'
import json, nbd, socket, sys
port, control, sock = int(sys.argv[1]), sys.argv[2], sys.argv[3]
held = []
for i in range(1000):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 50}", 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
def api(method, path, body=None):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(30)
    c.connect(control)
    data = json.dumps(body).encode() if body is not None else b""
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: blockd\r\nConnection: close\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
              .encode() + data)
    reply = b""
    while chunk := c.recv(65536):
        reply += chunk
    c.close()
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1]
status, body = api("GET", "/v1/volumes")
if status != 200 or len(json.loads(body)["volumes"]) < 2000:
    sys.exit(f"GET /v1/volumes with 1,000 handshakes pending: {status}")
status, body = api("POST", "/v1/volumes", {"name": "late", "size": 1 << 20})
if status != 201:
    sys.exit(f"creating a volume with 1,000 handshakes pending: {status} {body!r}")
h = nbd.NBD()
h.connect_uri(f"nbd+unix:///late?socket={sock}")
h.pwrite(b"\x5a" * 4096, 0)
h.flush()
if h.pread(4096, 0) != b"\x5a" * 4096:
    sys.exit("late reads other data")
h.shutdown()
for s in held:
    s.close()
PY

# Volumes nobody uses any more are closed again (blockd's
# VOLUME_IDLE_CLOSE_SEC, 10 s): their descriptors go.
fds_back() {
	(($(fds) <= idle_fds))
}
wait_until 30 'blockd still holds $(fds) descriptors, $idle_fds when idle' fds_back
stop_blockd
for v in v0 "v$((VOLUMES - 1))" "v$((VOLUMES / 2))" late; do
	qemu_check "$DIR/volumes/$v.qcow2"
done
echo "PASS: $VOLUMES volumes served with $idle_fds descriptors when idle"
