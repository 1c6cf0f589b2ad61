# SPDX-License-Identifier: MIT
"""api_client.py - the NBD and control-socket client of the api_*.sh tests.

  api_client.py hold URI READY GO [SHA_FILE]
      Connects to the export (one connection, so the volume stays attached),
      creates READY, and waits (at most 50 s) until GO exists.  With
      SHA_FILE it then reads the whole export on the same connection and
      writes the sha256 of its contents there.  Exits 0 unless something
      fails.

  api_client.py write URI OFFSET LENGTH BYTE
      Writes LENGTH bytes of value BYTE at OFFSET and flushes.

  api_client.py sha URI
      Prints the sha256 of the export's contents and its size.

  api_client.py snapshot-during-writes CONTROL_SOCK NBD_SOCK VOL SNAP
      Opens several connections to VOL (multi-conn) and, from one thread
      per connection, writes distinct 4 KiB blocks one after the other,
      each block once, noting when each write was issued and when it was
      acknowledged.  Meanwhile it asks the control API for snapshot SNAP of
      VOL (POST /v1/volumes/VOL/snapshots), noting when the request was
      sent and when its reply came back, and goes on writing until every
      connection has finished enough writes issued after the reply.  Then
      it reads VOL@SNAP and VOL over NBD and checks: every write
      acknowledged before the request was sent is in the snapshot, none
      issued after the reply is, a write in flight during the call is
      there whole or not at all, and VOL holds every write.
"""

import hashlib
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time

import nbd

BLOCK = 4096
CONNECTIONS = 4
MIN_BEFORE = 300  # writes acknowledged before the POST, per connection on average
MIN_AFTER = 300  # writes issued after the reply, per connection on average
MAX_SECONDS = 30


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def unix_uri(sock, export):
    return "nbd+unix:///%s?socket=%s" % (export, sock)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def sha_of(h):
    size = h.get_size()
    digest = hashlib.sha256()
    off = 0
    while off < size:
        n = min(4 << 20, size - off)
        digest.update(h.pread(n, off))
        off += n
    return digest.hexdigest(), size


def cmd_hold(uri, ready, go, sha_file=None):
    h = connect(uri)
    with open(ready, "w"):
        pass
    deadline = time.monotonic() + 50
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("hold: %s never appeared" % go)
        time.sleep(0.02)
    if sha_file:
        digest, _ = sha_of(h)
        with open(sha_file, "w") as f:
            f.write(digest + "\n")
    h.shutdown()


def cmd_write(uri, offset, length, byte):
    h = connect(uri)
    h.pwrite(bytes([byte]) * length, offset)
    h.flush()
    h.shutdown()


def cmd_sha(uri):
    h = connect(uri)
    digest, size = sha_of(h)
    print(digest, size)
    h.shutdown()


def block_bytes(block):
    return struct.pack("<QQ", 0x61706973_6E617073, block + 1) * (BLOCK // 16)


def cmd_snapshot_during_writes(control, nbd_sock, vol, snap):
    uri = unix_uri(nbd_sock, vol)
    handles = [connect(uri) for _ in range(CONNECTIONS)]
    nblocks = handles[0].get_size() // BLOCK
    # journal[i]: (block, issued, acknowledged) of connection i's writes
    journal = [[] for _ in range(CONNECTIONS)]
    marks = {}
    stop = threading.Event()
    errors = []

    def writer(i):
        h = handles[i]
        block = i
        try:
            # A connection whose share of blocks is used up just stops:
            # on a loaded machine one connection can run far ahead.
            while not stop.is_set() and block < nblocks:
                data = block_bytes(block)
                issued = time.monotonic()
                h.pwrite(data, block * BLOCK)
                acked = time.monotonic()
                journal[i].append((block, issued, acked))
                block += CONNECTIONS
        except Exception as e:  # reported by the main thread
            errors.append("connection %d: %s" % (i, e))
            stop.set()

    def count(pred):
        """Writes matching pred, summed over the connections."""
        return sum(1 for j in journal for w in j if pred(w))

    def writing():
        return any(th.is_alive() for th in threads)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(CONNECTIONS)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + MAX_SECONDS
    while count(lambda w: True) < MIN_BEFORE * CONNECTIONS and not stop.is_set() and writing():
        if time.monotonic() > deadline:
            errors.append("writes too slow before the snapshot")
            break
        time.sleep(0.001)
    if not errors:
        conn = UnixHTTPConnection(control)
        body = json.dumps({"name": snap})
        marks["sent"] = time.monotonic()
        conn.request("POST", "/v1/volumes/%s/snapshots" % vol, body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        reply = resp.read()
        marks["reply"] = time.monotonic()
        conn.close()
        if resp.status != 201:
            errors.append("POST snapshot: status %d: %s" % (resp.status, reply.decode()))
        while (not stop.is_set() and writing() and
               count(lambda w: w[1] > marks["reply"]) < MIN_AFTER * CONNECTIONS):
            if time.monotonic() > deadline:
                errors.append("writes too slow after the snapshot")
                break
            time.sleep(0.001)
    stop.set()
    for th in threads:
        th.join()
    for h in handles:
        h.shutdown()
    if not errors and (count(lambda w: w[2] < marks["sent"]) < MIN_BEFORE or
                       count(lambda w: w[1] > marks["reply"]) < MIN_AFTER):
        errors.append("too few writes on either side of the snapshot (%d blocks)" % nblocks)
    if errors:
        sys.exit("snapshot-during-writes: " + "; ".join(errors))

    writes = [w for j in journal for w in j]
    before = [w for w in writes if w[2] < marks["sent"]]
    after = [w for w in writes if w[1] > marks["reply"]]
    during = [w for w in writes if w[2] >= marks["sent"] and w[1] <= marks["reply"]]
    snap_h = connect(unix_uri(nbd_sock, vol + "@" + snap))
    main_h = connect(uri)
    bad = []
    during_in = 0
    for block, issued, acked in writes:
        want = block_bytes(block)
        got = snap_h.pread(BLOCK, block * BLOCK)
        if acked < marks["sent"]:
            if got != want:
                bad.append("block %d, acknowledged %.6f s before the POST was sent, is "
                           "%s in the snapshot" % (block, marks["sent"] - acked,
                                                   "zero" if got == bytes(BLOCK) else "wrong"))
        elif issued > marks["reply"]:
            if got != bytes(BLOCK):
                bad.append("block %d, issued %.6f s after the reply, is in the snapshot"
                           % (block, issued - marks["reply"]))
        elif got == want:
            during_in += 1
        elif got != bytes(BLOCK):
            bad.append("block %d, written during the call, is torn in the snapshot" % block)
        if main_h.pread(BLOCK, block * BLOCK) != want:
            bad.append("block %d is missing from the volume itself" % block)
    # Blocks nobody wrote stay zero in both.
    top = max(w[0] for w in writes) + 1
    for block in (top, top + 1):
        if block < nblocks:
            for name, h in (("snapshot", snap_h), ("volume", main_h)):
                if h.pread(BLOCK, block * BLOCK) != bytes(BLOCK):
                    bad.append("unwritten block %d is not zero in the %s" % (block, name))
    snap_h.shutdown()
    main_h.shutdown()
    print("snapshot-during-writes: %d writes: %d acknowledged before the POST, %d issued "
          "after the reply, %d in flight during the call (%d of them in the snapshot); "
          "the call took %.3f ms" % (len(writes), len(before), len(after), len(during),
                                      during_in, (marks["reply"] - marks["sent"]) * 1e3))
    if bad:
        for b in bad[:20]:
            print("  " + b, file=sys.stderr)
        sys.exit("snapshot-during-writes: %d blocks wrong" % len(bad))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "hold":
        cmd_hold(*args)
    elif cmd == "write":
        cmd_write(args[0], int(args[1]), int(args[2]), int(args[3], 0))
    elif cmd == "sha":
        cmd_sha(args[0])
    elif cmd == "snapshot-during-writes":
        cmd_snapshot_during_writes(*args)
    else:
        sys.exit("usage: see the docstring")


if __name__ == "__main__":
    main()
