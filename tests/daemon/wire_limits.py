#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Raw-socket checks of blockd's transmission-phase limits.

Usage: wire_limits.py UNIX-SOCKET EXPORT BLOCKD-PID

- A client that sends thousands of large READs and reads no reply must not
  make the daemon buffer them all: its RSS stays bounded while replies pile
  up, and once the client reads, every request is answered (duplicate
  cookies included) with the right data.
- EOF with requests in flight, EOF in the middle of a WRITE payload, and
  requests after NBD_CMD_DISC leave the daemon serving.
- A client that sends cheap options (NBD_OPT_LIST) and reads no reply
  cannot make the daemon queue replies without bound.
- Last, with such a client still connected and replies unread, SIGTERM
  still makes the daemon exit (the caller checks the status).
"""
import os
import signal
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_GO = 7
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3

SOCK, EXPORT, PID = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("server closed the connection")
        buf += chunk
    return bytes(buf)


def connect():
    """Fixed newstyle + NO_ZEROES, GO on EXPORT, no structured replies."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(SOCK)
    magic, opt, flags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT or flags & 3 != 3:
        fail("bad greeting")
    s.sendall(struct.pack(">I", 3))
    data = struct.pack(">I", len(EXPORT)) + EXPORT + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    size = None
    while True:
        magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        payload = recv_exact(s, length)
        if magic != REP_MAGIC or opt != OPT_GO:
            fail("bad option reply")
        if rtype == 1:  # ACK
            break
        if rtype == 3 and struct.unpack(">H", payload[:2])[0] == 0:  # INFO_EXPORT
            size = struct.unpack(">Q", payload[2:10])[0]
        elif rtype & 0x80000000:
            fail("GO refused: 0x%x" % rtype)
    return s, size


def request(s, cmd, cookie, offset, length, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, cookie, offset, length) + payload)


def simple_reply(s, data_len):
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC:
        fail("bad reply magic 0x%x" % magic)
    data = recv_exact(s, data_len) if err == 0 else b""
    return err, cookie, data


def rss_kib():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    fail("no VmRSS for blockd")


def pattern(block):
    return bytes([(block * 7 + 1) & 0xFF]) * 4096


def still_serves():
    s, _ = connect()
    request(s, CMD_READ, 1, 0, 4096)
    err, cookie, data = simple_reply(s, 4096)
    if err or cookie != 1 or data != pattern(0):
        fail("daemon no longer serves reads correctly")
    request(s, CMD_DISC, 2, 0, 0)
    s.close()


# Known content: 1 MiB of 4 KiB blocks with their own pattern.
s, size = connect()
if size is None or size < (64 << 20):
    fail("export too small or size not reported")
for b in range(256):
    request(s, CMD_WRITE, b, b * 4096, 4096, pattern(b))
for b in range(256):
    err, cookie, _ = simple_reply(s, 0)
    if err:
        fail("write %d failed: %d" % (cookie, err))
request(s, CMD_FLUSH, 999, 0, 0)
if simple_reply(s, 0)[0]:
    fail("flush failed")

# 18: 2000 READs of 1 MiB (2 GiB of replies) without reading; cookies repeat.
base = rss_kib()
n, length = 2000, 1 << 20
s.setblocking(False)
sent = 0
deadline = time.monotonic() + 20
msgs = [struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i % 100, 0, length) for i in range(n)]
blob = b"".join(msgs)
# The daemon stops reading once its limits are reached, so not all of it
# may go out now: send what the socket takes, without reading replies.
while sent < len(blob) and time.monotonic() < deadline:
    try:
        sent += s.send(blob[sent:])
    except BlockingIOError:
        time.sleep(0.05)
time.sleep(1.0)
grown = rss_kib() - base
print("requests sent: %d of %d; RSS growth with replies unread: %d KiB" %
      (sent // 28, n, grown))
if grown > 400 * 1024:
    fail("blockd buffered %d KiB for a client that reads no replies" % grown)
if sent == len(blob):
    print("note: the socket took every request (kernel buffers); the bound still held")
s.setblocking(True)
s.settimeout(60)
# Now read: every request is answered, each with the data at offset 0.
seen = {}
want = b"".join(pattern(b) for b in range(256))
for i in range(n):
    if sent < len(blob):
        try:
            s.setblocking(False)
            sent += s.send(blob[sent:])
        except BlockingIOError:
            pass
        s.setblocking(True)
        s.settimeout(60)
    err, cookie, data = simple_reply(s, length)
    if err or data != want:
        fail("read reply %d (cookie %d) wrong: err %d" % (i, cookie, err))
    seen[cookie] = seen.get(cookie, 0) + 1
if any(v != n // 100 for v in seen.values()) or len(seen) != 100:
    fail("replies per cookie wrong: %r" % seen)
print("all %d replies arrived with duplicate cookies intact" % n)
request(s, CMD_DISC, 0, 0, 0)
s.close()

# 19a: EOF with requests in flight.
s, _ = connect()
for i in range(200):
    request(s, CMD_READ, i, i * 65536, 65536)
s.close()
# 19b: EOF between a WRITE header and the end of its payload.
s, _ = connect()
request(s, CMD_WRITE, 1, 1 << 20, 1 << 20, b"\xee" * 1000)
s.close()
# 19c: requests after DISC are not answered; the connection closes.
s, _ = connect()
request(s, CMD_DISC, 1, 0, 0)
try:
    request(s, CMD_READ, 2, 0, 4096)
    rest = s.recv(16)
except (BrokenPipeError, ConnectionResetError):
    rest = b""
if rest:
    fail("the daemon answered a request sent after NBD_CMD_DISC")
s.close()
still_serves()

# Handshake amplification: 1M LIST options (16 MiB) without reading.
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(SOCK)
recv_exact(s, 18)
s.sendall(struct.pack(">I", 3))
base = rss_kib()
blob = struct.pack(">QII", IHAVEOPT, 3, 0) * (1 << 20)
s.setblocking(False)
sent = 0
deadline = time.monotonic() + 10
while sent < len(blob) and time.monotonic() < deadline:
    try:
        sent += s.send(blob[sent:])
    except BlockingIOError:
        time.sleep(0.02)
time.sleep(0.5)
grown = rss_kib() - base
print("LIST options sent: %d; RSS growth with replies unread: %d KiB" % (sent // 16, grown))
if grown > 32 * 1024:
    fail("blockd queued %d KiB of option replies for a client that reads none" % grown)
s.close()
still_serves()

# A stuck client holding replies, then SIGTERM: the daemon must still exit.
stuck, _ = connect()
stuck.setblocking(False)
blob = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i, 0, 1 << 20)
                for i in range(500))
try:
    stuck.send(blob)
except BlockingIOError:
    pass
time.sleep(0.5)
os.kill(PID, signal.SIGTERM)


def exited():
    try:
        with open("/proc/%d/status" % PID) as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return True


# Keep the stuck socket open (unread) until the daemon is gone.
deadline = time.monotonic() + 90
while not exited() and time.monotonic() < deadline:
    time.sleep(0.1)
if not exited():
    fail("blockd did not exit after SIGTERM while a client read no replies")
stuck.close()
print("ok")
