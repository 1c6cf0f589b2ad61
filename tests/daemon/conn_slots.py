# SPDX-License-Identifier: MIT
# conn_slots.py - raw-socket and libnbd clients for conn_slots.sh.
#
#   conn_slots.py slots PORT SOCKET CAP SCALE
#       against a blockd with --max-client-connections CAP: a client from
#       127.0.0.2 opens CAP connections (each gets its export "hog"), then
#       20 more, which are closed before the greeting; meanwhile clients
#       from 127.0.0.1 and on the unix socket get volume "vol" and write and
#       read it; once the first client closes one connection it may open
#       one again.  Prints "seconds N": how long it took, rounded up.
#   conn_slots.py idle PORT IDLE SCALE
#       against a blockd with --idle-timeout IDLE: a connection that opened
#       "vol" and sends nothing is cut off after IDLE seconds (not before);
#       one that sent a WRITE header and half its payload, and then nothing
#       for twice as long, is not (a request is in flight): the rest of its
#       payload is then taken and answered.
#
# Exits non-zero with a FAIL line on the first broken expectation.
import math
import socket
import struct
import sys
import time

import nbd

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_GO, REP_ACK = 7, 1
CMD_WRITE = 1


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def connect(port, source, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def greeting(s):
    """The server's greeting, answered with fixed newstyle (+ no zeroes)."""
    _, _, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    s.sendall(struct.pack(">I", 3 if hflags & 2 else 1))


def go(s, name):
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        _, _, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, length)
        if rtype == REP_ACK:
            return
        if rtype & 0x80000000:
            fail(f"GO {name!r} refused: {rtype:#x}")


def closed_by_server(s, timeout):
    """True if the server closes S within TIMEOUT without sending a byte."""
    s.settimeout(timeout)
    try:
        got = s.recv(4096)
    except ConnectionResetError:
        got = b""
    except socket.timeout:
        return False
    if got:
        fail(f"a connection that should be refused got {got[:32]!r}")
    return True


def served(uri, what):
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"\x5a" * 4096, 0)
    if h.pread(4096, 0) != b"\x5a" * 4096:
        fail(f"{what}: read back wrong data")
    h.shutdown()


def slots(port, sock, cap, scale):
    start = time.monotonic()
    limit = 10 * scale
    hog = []
    for i in range(cap):
        s = connect(port, "127.0.0.2", limit)
        greeting(s)
        go(s, b"hog")
        hog.append(s)
    # Past the cap: closed before the greeting.
    for i in range(20):
        s = connect(port, "127.0.0.2", limit)
        if not closed_by_server(s, limit):
            fail(f"connection {cap + i + 1} of 127.0.0.2 (cap {cap}) was not closed")
        s.close()
    # Others are still served, over TCP and on the unix socket.
    served(f"nbd://127.0.0.1:{port}/vol", "client 127.0.0.1")
    served(f"nbd+unix:///vol?socket={sock}", "client on the unix socket")
    # The hog's connections still work.
    for s in hog:
        s.settimeout(0)
        try:
            if s.recv(1) == b"":
                fail("a connection of 127.0.0.2 within its cap was closed")
        except BlockingIOError:
            pass
    # One closed, one may open again (once the server has let go of it).
    hog.pop().close()
    deadline = time.monotonic() + limit
    while True:
        s = connect(port, "127.0.0.2", limit)
        try:
            greeting(s)
            break
        except (ConnectionError, OSError):
            s.close()
            if time.monotonic() > deadline:
                fail("127.0.0.2 cannot connect again after closing one of its connections")
            time.sleep(0.1)
    go(s, b"hog")
    hog.append(s)
    for s in hog:
        s.close()
    print("slots ok")
    print(f"seconds {math.ceil(time.monotonic() - start)}")


def idle(port, idle_sec, scale):
    limit = 10 * scale
    quiet = connect(port, "127.0.0.1", limit)
    greeting(quiet)
    go(quiet, b"vol")
    t_quiet = time.monotonic()
    busy = connect(port, "127.0.0.1", limit)
    greeting(busy)
    go(busy, b"vol")
    length = 65536
    busy.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 7, 0, length) +
                 b"\x33" * (length // 2))
    t_busy = time.monotonic()
    if not closed_by_server(quiet, 4 * idle_sec + limit):
        fail(f"an idle connection was not cut off within {4 * idle_sec + limit} s")
    waited = time.monotonic() - t_quiet
    if waited < idle_sec:
        fail(f"an idle connection was cut off after {waited:.1f} s, before {idle_sec} s")
    print(f"idle connection cut off after {waited:.1f} s")
    # The one with a write in flight has sent nothing for as long: it stays
    # until it has sent nothing for twice the idle timeout.
    time.sleep(max(0, t_busy + 2 * idle_sec + 1 - time.monotonic()))
    try:
        busy.sendall(b"\x33" * (length // 2))
        magic, err, cookie = struct.unpack(">IIQ", recv_exact(busy, 16))
    except (ConnectionError, OSError) as e:
        fail(f"a connection with a request in flight was cut off: {e!r}")
    if magic != SIMPLE_REPLY_MAGIC or err or cookie != 7:
        fail(f"the slow write got magic {magic:#x} error {err} cookie {cookie}")
    busy.close()
    print("idle ok")


if sys.argv[1] == "slots":
    slots(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
else:
    idle(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
