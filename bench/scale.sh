#!/usr/bin/env bash
# Many volumes in one data directory: blockd's start time, memory,
# descriptors and control-API listing latency for 1,000 and 10,000 qcow2
# volumes (64 MiB, 3 internal snapshots each), and qemu-storage-daemon
# exporting the same images over NBD (one blockdev and one NBD export each,
# added through QMP: it has no directory of volumes).  Also the cost of
# the first connection to an idle volume (blockd opens it then).  Not a
# test: prints numbers and ratios.
#
#   bench/scale.sh [path/to/blockd] [counts, default "1000 10000"]
set -euo pipefail

blockd=$(realpath "${1:-build/blockd/blockd}")
counts=${2:-"1000 10000"}
for tool in qemu-img qemu-storage-daemon python3; do
	command -v "$tool" >/dev/null || { echo "needs $tool"; exit 1; }
done
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "needs python3-libnbd"; exit 1; }
[ -x "$blockd" ] || { echo "no blockd at $blockd; build first"; exit 1; }
# Both servers get every descriptor this session may have.
ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$dir"' EXIT

qemu-img create -q -f qcow2 "$dir/template.qcow2" 64M
for snap in a b c; do qemu-img snapshot -c "$snap" "$dir/template.qcow2"; done

/usr/bin/python3 - "$blockd" "$dir" $counts <<'PY'
import json, os, shutil, signal, socket, statistics, subprocess, sys, time
import nbd

blockd, top, counts = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3:]]

def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))

def http(path, method="GET"):
    c = socket.socket(socket.AF_UNIX)
    c.connect(f"{data}/control.sock")
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    reply = b""
    while chunk := c.recv(1 << 20):
        reply += chunk
    c.close()
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])

def median_ms(fn, n=5):
    times = []
    for _ in range(n):
        t = time.monotonic()
        fn()
        times.append((time.monotonic() - t) * 1000)
    return statistics.median(times)

def first_read_ms(uri):
    t = time.monotonic()
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pread(4096, 0)
    ms = (time.monotonic() - t) * 1000
    h.shutdown()
    return ms

class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.cmd("qmp_capabilities")
    def cmd(self, command, **args):
        self.f.write(json.dumps({"execute": command, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"{command}: {r['error']['desc']}")

rows = []
for n in counts:
    data = f"{top}/data{n}"
    os.makedirs(f"{data}/volumes")
    for i in range(n):
        shutil.copyfile(f"{top}/template.qcow2", f"{data}/volumes/v{i}.qcow2")
    subprocess.run(["sync"])

    # blockd
    log = open(f"{data}/blockd.log", "w")
    t = time.monotonic()
    p = subprocess.Popen([blockd, "--data-dir", data, "--listen", "127.0.0.1:0"], stderr=log)
    while True:
        with open(f"{data}/blockd.log") as f:
            if " ready:" in f.read():
                break
        if p.poll() is not None:
            sys.exit(f"blockd exited at start with {n} volumes")
        time.sleep(0.01)
    b_start = time.monotonic() - t
    b_rss, b_fds = proc_stats(p.pid)
    listed = len(http("/v1/volumes")["volumes"])
    b_list = median_ms(lambda: http("/v1/volumes"))
    b_first = first_read_ms(f"nbd+unix:///v{n // 2}?socket={data}/nbd.sock")
    b_again = first_read_ms(f"nbd+unix:///v{n // 2}?socket={data}/nbd.sock")
    p.send_signal(signal.SIGTERM)
    p.wait()
    if listed != n:
        sys.exit(f"blockd listed {listed} of {n} volumes")

    # qemu-storage-daemon: every image added and exported through QMP
    qmp_path, nbd_path = f"{data}/qmp.sock", f"{data}/qsd-nbd.sock"
    t = time.monotonic()
    q = subprocess.Popen(["qemu-storage-daemon", "--chardev",
                          f"socket,id=m,path={qmp_path},server=on,wait=off",
                          "--monitor", "chardev=m",
                          "--nbd-server", f"addr.type=unix,addr.path={nbd_path}",
                          "--pidfile", f"{data}/qsd.pid"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(f"{data}/qsd.pid"):  # written once it is set up
        time.sleep(0.01)
    qmp = Qmp(qmp_path)
    exported = 0
    try:
        for i in range(n):
            qmp.cmd("blockdev-add", **{"node-name": f"v{i}", "driver": "qcow2",
                    "file": {"driver": "file", "filename": f"{data}/volumes/v{i}.qcow2"}})
            qmp.cmd("block-export-add", type="nbd", id=f"e{i}", **{"node-name": f"v{i}"},
                    writable=True, name=f"v{i}")
            exported += 1
    except RuntimeError as e:
        print(f"qemu-storage-daemon stopped at {exported} of {n} images: {e}")
    q_start = time.monotonic() - t
    q_rss, q_fds = proc_stats(q.pid)
    q_list = median_ms(lambda: qmp.cmd("query-block-exports"))
    q_first = first_read_ms(f"nbd+unix:///v{exported // 2}?socket={nbd_path}") if exported else 0
    q.send_signal(signal.SIGTERM)
    q.wait()
    rows.append((n, b_start, q_start, b_rss, q_rss, b_fds, q_fds, b_list, q_list, b_first,
                 b_again, q_first, exported))
    shutil.rmtree(data)

print(f"{'volumes':>8} {'server':<22} {'start_s':>8} {'rss_MiB':>8} {'fds':>6} "
      f"{'list_ms':>8} {'1st_read_ms':>11} {'again_ms':>8}")
for (n, bs, qs, br, qr, bf, qf, bl, ql, b1, b2, q1, ex) in rows:
    print(f"{n:>8} {'blockd':<22} {bs:>8.2f} {br:>8} {bf:>6} {bl:>8.1f} {b1:>11.2f} {b2:>8.2f}")
    print(f"{n:>8} {'qemu-storage-daemon':<22} {qs:>8.2f} {qr:>8} {qf:>6} {ql:>8.1f} "
          f"{q1:>11.2f} {'':>8}" + ("" if ex == n else f"  ({ex} of {n} exported)"))
    print(f"{n:>8} {'ratio blockd/qsd':<22} {bs / qs:>8.2f} {br / max(qr, 1):>8.2f} "
          f"{bf / max(qf, 1):>6.2f}")
print("start: until blockd logs ready / until qsd has added and exported every image;")
print("list: GET /v1/volumes / QMP query-block-exports, median of 5; 1st_read: connect and")
print("read 4 KiB of an idle volume (blockd opens it), again: the same once it is open.")
PY
