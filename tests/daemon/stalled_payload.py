# SPDX-License-Identifier: MIT
# stalled_payload.py PORT SOCKET PAYLOAD_TIMEOUT BOUND SCALE - the stalled
# payload attack of stalled_payload.sh against the blockd on 127.0.0.1:PORT
# and the unix socket SOCKET.  32 attacker connections (raw sockets, TCP)
# open volume "attack", each send one 32 MiB WRITE header and 1 byte of its
# payload, then nothing.  Meanwhile a victim (libnbd, on the unix socket: a
# different client) writes 4 KiB blocks to volume "victim" and times each
# write, until every attacker connection is cut off.  Fails if the victim's
# p99 latency is BOUND seconds or more, if one of its writes does not
# finish within 10 * SCALE s, if an attacker connection is cut before
# PAYLOAD_TIMEOUT seconds or still open after 60 * SCALE s, or if an
# attacker gets any reply.  Prints the victim's latencies, then "ok".
import select
import socket
import struct
import sys
import time

import nbd

PORT, SOCK = int(sys.argv[1]), sys.argv[2]
PAYLOAD_TIMEOUT, BOUND, SCALE = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
ATTACKERS = 32
PAYLOAD = 32 << 20
WRITE_LIMIT = 10 * SCALE  # one victim write: a daemon frozen by the attack
ATTACK_LIMIT = 60 * SCALE  # every attacker cut off by then
BLOCK = 4096
VICTIM_BLOCKS = (64 << 20) // BLOCK

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
OPT_GO, REP_ACK = 7, 1
CMD_WRITE = 1


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit(f"FAIL: connection closed in the handshake after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def attacker():
    """A connection to "attack" that sends a 32 MiB WRITE header and 1 byte."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=WRITE_LIMIT)
    _, _, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    s.sendall(struct.pack(">I", 3 if hflags & 2 else 1))
    name = b"attack"
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        _, _, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, length)
        if rtype == REP_ACK:
            break
        if rtype & 0x80000000:
            sys.exit(f"FAIL: GO attack refused: {rtype:#x}")
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, 0, PAYLOAD) + b"\x55")
    s.setblocking(False)
    return s


attack = {attacker(): time.monotonic() for _ in range(ATTACKERS)}
cut = []  # seconds from an attacker's byte to its connection's end

victim = nbd.NBD()
victim.connect_uri(f"nbd+unix:///victim?socket={SOCK}")
latencies = []
start = time.monotonic()
i = 0
while attack:
    if time.monotonic() - start > ATTACK_LIMIT:
        sys.exit(f"FAIL: {len(attack)} attacker connections still open after {ATTACK_LIMIT} s")
    buf = bytes([i % 251 + 1]) * BLOCK
    t0 = time.monotonic()
    cookie = victim.aio_pwrite(buf, (i % VICTIM_BLOCKS) * BLOCK)
    while not victim.aio_command_completed(cookie):
        if time.monotonic() - t0 > WRITE_LIMIT:
            sys.exit(f"FAIL: victim write {i} not done after {WRITE_LIMIT} s "
                     f"({len(attack)} attacker connections open)")
        victim.poll(100)
    latencies.append(time.monotonic() - t0)
    i += 1
    # Attacker connections the server has closed.
    ready, _, _ = select.select(list(attack), [], [], 0.01)
    for s in ready:
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
        if got:
            sys.exit(f"FAIL: an attacker got a reply: {got[:32]!r}")
        cut.append(time.monotonic() - attack.pop(s))
        s.close()

latencies.sort()
p99 = latencies[(len(latencies) * 99) // 100]
print(f"victim: {len(latencies)} writes during the attack, median "
      f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
      f"max {latencies[-1] * 1000:.1f} ms")
print(f"attackers cut off after {min(cut):.1f} to {max(cut):.1f} s")
if p99 >= BOUND:
    sys.exit(f"FAIL: victim p99 write latency {p99:.2f} s, bound {BOUND} s")
if min(cut) < PAYLOAD_TIMEOUT:
    sys.exit(f"FAIL: an attacker was cut off after {min(cut):.2f} s, "
             f"before the payload timeout of {PAYLOAD_TIMEOUT} s")
# What the victim wrote is there.
for j in range(min(i, VICTIM_BLOCKS)):
    last = max(k for k in range(j, i, VICTIM_BLOCKS))
    if victim.pread(BLOCK, j * BLOCK) != bytes([last % 251 + 1]) * BLOCK:
        sys.exit(f"FAIL: victim block {j} does not hold its last write")
victim.shutdown()
print("ok")
