# SPDX-License-Identifier: MIT
# hostile_handshake.py PORT SOCKET PID - raw-socket NBD clients that break
# the handshake in every way hostile_handshake.sh wants checked against the
# blockd with process id PID, listening on 127.0.0.1:PORT and on the unix
# socket SOCKET.  Serves volumes "vol" (with snapshot s1) and "other".
# Prints one FAIL line per broken expectation; exits 1 if there were any.
import os
import socket
import struct
import sys
import time

PORT, SOCK, PID = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = 0x80000001, 0x80000002, 0x80000003, 0x80000006
ERR_TOO_BIG = 0x80000007
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
TIMEOUT = 10

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg, flush=True)


class Closed(Exception):
    pass


def connect(source=None, unix=False):
    if unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(SOCK)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", PORT))
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def greeting(s):
    magic, opt, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise AssertionError(f"bad greeting {magic:#x} {opt:#x}")
    if not hflags & 1:
        raise AssertionError(f"no fixed newstyle in handshake flags {hflags:#x}")
    return hflags


def start(source=None, unix=False):
    """Connects, reads the greeting, sends client flags fixed newstyle + no zeroes."""
    s = connect(source, unix)
    hflags = greeting(s)
    s.sendall(struct.pack(">I", 3 if hflags & 2 else 1))
    return s


def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def read_reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != REPLY_MAGIC:
        raise AssertionError(f"bad option reply magic {magic:#x}")
    if length > 1 << 20:
        raise AssertionError(f"option reply of {length} bytes")
    return opt, rtype, recv_exact(s, length)


def go_data(name):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", 0)


def go(s, name, opt=OPT_GO):
    """Sends GO (or INFO) for NAME; returns (reply type, export size or None)."""
    send_opt(s, opt, go_data(name))
    size = None
    while True:
        ropt, rtype, data = read_reply(s)
        if ropt != opt:
            raise AssertionError(f"reply to option {ropt}, wanted {opt}")
        if rtype == REP_INFO:
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == 0:
                size = struct.unpack(">Q", data[2:10])[0]
            continue
        return rtype, size


def read_cmd(s, offset, length, cookie=1):
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, cookie, offset, length))
    magic, err, ck = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC or ck != cookie:
        raise AssertionError(f"bad reply magic {magic:#x} cookie {ck}")
    if err:
        raise AssertionError(f"read error {err}")
    return recv_exact(s, length)


def disc(s):
    try:
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 2, 0, 0))
    except OSError:
        pass
    s.close()


def open_export(name=b"vol", source=None, unix=False):
    """A transmission-phase connection to NAME, or the failing reply type."""
    s = start(source, unix)
    rtype, size = go(s, name)
    if rtype != REP_ACK:
        s.close()
        return None, rtype
    return s, size


def good_client(what, name=b"vol"):
    """A full handshake and a read must work."""
    try:
        s, size = open_export(name)
        if s is None:
            fail(f"{what}: GO {name!r} refused with {size:#x}")
            return
        if size != 8 << 20:
            fail(f"{what}: size {size}")
        data = read_cmd(s, 0, 4096)
        if data != b"\x42" * 4096:
            fail(f"{what}: read returned wrong data")
        disc(s)
    except (OSError, Closed, AssertionError) as e:
        fail(f"{what}: good client failed: {e!r}")


def expect_close(s, what, allow_error_reply=False):
    """The server closes S within TIMEOUT (an error reply first is allowed if
    ALLOW_ERROR_REPLY).  Returns how it ended."""
    deadline = time.time() + TIMEOUT
    got = b""
    try:
        while time.time() < deadline:
            s.settimeout(max(0.1, deadline - time.time()))
            chunk = s.recv(65536)
            if not chunk:
                return "closed"
            got += chunk
            if allow_error_reply and len(got) >= 20:
                magic, _, rtype, _ = struct.unpack(">QIII", got[:20])
                if magic == REPLY_MAGIC and rtype & 0x80000000:
                    return "error reply"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except socket.timeout:
        pass
    finally:
        s.close()
    fail(f"{what}: server did not close the connection within {TIMEOUT} s (got {got[:40]!r})")
    return "open"


def proc_status(key):
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count():
    return len(os.listdir(f"/proc/{PID}/fd"))


def step(name):
    print(f"--- {name}", flush=True)


# ---------------------------------------------------------------------------
step("baseline")
good_client("baseline")
base_fds = fd_count()

step("bad magic")
s = connect()
greeting(s)
s.sendall(struct.pack(">I", 1))
s.sendall(b"NOTMAGIC" + struct.pack(">II", OPT_GO, 0))
expect_close(s, "option with bad magic")
s = connect()
greeting(s)
s.sendall(b"\x00" * 4 + b"GARBAGE!" * 8)
expect_close(s, "garbage after the client flags")
good_client("after bad magic")

step("unknown client flags")
for flags in (0x80000001, 0x4 | 1, 0xFFFFFFFF):
    s = connect()
    greeting(s)
    s.sendall(struct.pack(">I", flags))
    # Even a valid-looking option after them must not be answered.
    try:
        send_opt(s, OPT_GO, go_data(b"vol"))
    except OSError:
        pass
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout) as e:
        if isinstance(e, socket.timeout):
            fail(f"client flags {flags:#x}: connection not closed")
    s.close()
    if got:
        fail(f"client flags {flags:#x}: server answered {got[:40]!r}")
good_client("after unknown client flags")

step("huge option lengths")
rss0, vm0 = proc_status("VmRSS"), proc_status("VmSize")
for opt in (OPT_GO, OPT_LIST, OPT_INFO, 0x7FFF, OPT_EXPORT_NAME):
    for length in (0xFFFFFFFF, 0x80000000, 64 << 20):
        s = start()
        s.sendall(struct.pack(">QII", IHAVEOPT, opt, length))
        # Start sending the data: a server that swallows it all (or stores
        # it) is still reading when the deadline comes.
        ended = None
        deadline = time.time() + 3
        try:
            while time.time() < deadline:
                s.settimeout(0.2)
                try:
                    s.sendall(b"\x00" * (1 << 20))
                except socket.timeout:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            ended = "reset"
        if ended is None:
            expect_close(s, f"option {opt} of length {length:#x}", allow_error_reply=True)
        else:
            s.close()
rss1, vm1 = proc_status("VmRSS"), proc_status("VmSize")
print(f"RSS {rss0 >> 20} -> {rss1 >> 20} MiB, VmSize {vm0 >> 20} -> {vm1 >> 20} MiB", flush=True)
if rss1 - rss0 > 32 << 20:
    fail(f"RSS grew by {(rss1 - rss0) >> 20} MiB on huge option lengths")
if vm1 - vm0 > 512 << 20:
    fail(f"address space grew by {(vm1 - vm0) >> 20} MiB on huge option lengths")
good_client("after huge option lengths")

step("truncated handshakes")
pieces = [
    b"",
    b"\x00\x00",
    struct.pack(">I", 1),
    struct.pack(">I", 1) + struct.pack(">Q", IHAVEOPT)[:5],
    struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + go_data(b"vol")[:6],
    struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, OPT_GO, 14) + go_data(b"vol")[:-1],
]
for p in pieces:
    s = connect()
    greeting(s)
    s.sendall(p)
    s.close()
# Cut in the transmission phase too: half a request header, half a write.
s, _ = open_export()
s.sendall(struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_READ))
s.close()
s, _ = open_export()
s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 1, 5, 4 << 20, 65536) + b"\x99" * 1000)
s.close()
# Reset (RST) instead of FIN, mid-option.
s = start()
s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 50))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
time.sleep(0.3)
# (What a cut-off write leaves is unspecified: it was never acknowledged.)
good_client("after truncated handshakes", b"other")

step("idle connections")
idle = [connect() for _ in range(20)]
for s in idle[:10]:
    greeting(s)
    s.sendall(struct.pack(">I", 1) + struct.pack(">QI", IHAVEOPT, OPT_GO))  # half an option
t0 = time.time()
good_client("while 20 connections sit idle")
good_client("while 20 connections sit idle", b"other")
if time.time() - t0 > 5:
    fail(f"good clients took {time.time() - t0:.1f} s next to idle connections")
for s in idle:
    s.close()

step("export names")
names = [
    (b"../x", {ERR_UNKNOWN}),
    (b"a/b", {ERR_UNKNOWN}),
    (b"", {ERR_UNKNOWN}),
    (b"vol@nosuchsnap", {ERR_UNKNOWN}),
    (b"vol@", {ERR_UNKNOWN, ERR_INVALID}),
    (b"@s1", {ERR_UNKNOWN, ERR_INVALID}),
    (b"nosuch", {ERR_UNKNOWN}),
    (b".", {ERR_UNKNOWN}),
    (b"..", {ERR_UNKNOWN}),
    (b"vol.qcow2", {ERR_UNKNOWN}),
    (b"volumes/vol", {ERR_UNKNOWN}),
    (b"/vol", {ERR_UNKNOWN}),
    (b"VOL", {ERR_UNKNOWN}),
    (b"vol\x00", {ERR_UNKNOWN, ERR_INVALID}),
    (b"vol\x00x", {ERR_UNKNOWN, ERR_INVALID}),
    (b"vol@s1/../../x", {ERR_UNKNOWN}),
    (b"vol@s1@s1", {ERR_UNKNOWN}),
    (b"\xff\xfe", {ERR_UNKNOWN, ERR_INVALID}),
    (b"v" * 129, {ERR_UNKNOWN, ERR_INVALID}),
    (b"x" * 4096, {ERR_UNKNOWN, ERR_INVALID}),
    (b"x" * 5000, {ERR_UNKNOWN, ERR_INVALID, ERR_POLICY, ERR_TOO_BIG}),
    (b"%s" * 2000 + b"%n", {ERR_UNKNOWN, ERR_INVALID, ERR_POLICY, ERR_TOO_BIG}),
]
for opt in (OPT_GO, OPT_INFO):
    s = start()
    for name, allowed in names:
        try:
            rtype, _ = go(s, name, opt)
        except (Closed, OSError, AssertionError) as e:
            fail(f"option {opt} name {name[:20]!r}: connection broke: {e!r}")
            s = start()
            continue
        if rtype not in allowed:
            fail(f"option {opt} name {name[:20]!r} ({len(name)} bytes): reply {rtype:#x}, "
                 f"wanted one of {sorted(hex(a) for a in allowed)}")
    # After all those refusals the same connection still gets its export.
    try:
        rtype, size = go(s, b"vol@s1", opt)
        if rtype != REP_ACK or size != 8 << 20:
            fail(f"option {opt}: vol@s1 after bad names: reply {rtype:#x} size {size}")
        if opt == OPT_GO and rtype == REP_ACK:
            if read_cmd(s, 0, 512) != b"\x42" * 512:
                fail("vol@s1 read after bad names: wrong data")
            disc(s)
        else:
            s.close()
    except (Closed, OSError, AssertionError) as e:
        fail(f"option {opt}: good name after bad ones: {e!r}")
# EXPORT_NAME cannot answer with an error: the server just closes.
for name in (b"../x", b"a/b", b"vol@nosuchsnap", b"x" * 5000):
    s = start()
    send_opt(s, OPT_EXPORT_NAME, name)
    expect_close(s, f"EXPORT_NAME {name[:20]!r}")
good_client("after bad names")

step("200 connections")
conns = []
try:
    for i in range(200):
        conns.append(connect())
    for i, s in enumerate(conns):
        greeting(s)
    for i, s in enumerate(conns):
        s.sendall(struct.pack(">I", 1))
        if i % 2 == 0:
            send_opt(s, OPT_GO, go_data(b"vol" if i % 4 == 0 else b"vol@s1"))
except (OSError, Closed, AssertionError) as e:
    fail(f"200 connections: connection {len(conns)} failed: {e!r}")
# Read the GO replies and a block on every other connection.
for i, s in enumerate(conns):
    if i % 2:
        continue
    try:
        while True:
            ropt, rtype, _ = read_reply(s)
            if rtype != REP_INFO:
                break
        if rtype != REP_ACK:
            fail(f"connection {i} of 200: GO refused {rtype:#x}")
            continue
        if read_cmd(s, 0, 512, cookie=i) != b"\x42" * 512:
            fail(f"connection {i} of 200: wrong data")
    except (OSError, Closed, AssertionError) as e:
        fail(f"connection {i} of 200: {e!r}")
        break
good_client("with 200 connections open")
for i, s in enumerate(conns):
    if i % 3 == 0:
        disc(s)
    else:
        s.close()
# The volume stays open for a while after its last client (blockd's
# VOLUME_IDLE_CLOSE_SEC, 10 s), then lets go of its descriptors too.
deadline = time.time() + 25
while time.time() < deadline and fd_count() > base_fds + 2:
    time.sleep(0.1)
if fd_count() > base_fds + 2:
    fail(f"blockd holds {fd_count()} descriptors after 200 connections closed, {base_fds} before")
good_client("after 200 connections")

step("second host")
a, size = open_export(b"vol")
if a is None:
    fail(f"127.0.0.1 writer refused: {size:#x}")
else:
    b, rtype = open_export(b"vol", source="127.0.0.2")
    if b is not None or rtype != ERR_POLICY:
        fail(f"second host's GO on a held volume: {rtype if b is None else 'accepted'}"
             f"{'' if b is not None else f' ({rtype:#x})'}, wanted ERR_POLICY")
        if b is not None:
            disc(b)
    # The same host may open more connections; other volumes are free.
    a2, size = open_export(b"vol")
    if a2 is None:
        fail(f"second connection from the holding host refused: {size:#x}")
    else:
        disc(a2)
    o, size = open_export(b"other", source="127.0.0.2")
    if o is None:
        fail(f"second host refused on another volume: {size:#x}")
    else:
        disc(o)
    # The unix socket is another (local) host.
    u, rtype = open_export(b"vol", unix=True)
    if u is not None or rtype != ERR_POLICY:
        fail(f"unix client's GO on a volume held over TCP: "
             f"{'accepted' if u is not None else hex(rtype)}, wanted ERR_POLICY")
        if u is not None:
            disc(u)
    # NAME:ro reads the live volume without claiming it, from any host;
    # writes through it are refused with EPERM.
    for what, kw in (("127.0.0.2", {"source": "127.0.0.2"}), ("unix", {"unix": True})):
        r, size = open_export(b"vol:ro", **kw)
        if r is None:
            fail(f"{what}: GO vol:ro while 127.0.0.1 writes vol refused: {size:#x}")
            continue
        if size != 8 << 20 or read_cmd(r, 0, 4096) != b"\x42" * 4096:
            fail(f"{what}: vol:ro reads wrong size {size} or data")
        r.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 7, 0, 512) + b"\0" * 512)
        magic, err, ck = struct.unpack(">IIQ", recv_exact(r, 16))
        if ck != 7 or err != 1:
            fail(f"{what}: write through vol:ro answered error {err} (cookie {ck}), wanted EPERM")
        disc(r)
    for bad in (b":ro", b"vol:ro:ro", b"vol@s1:ro", b"vol:RO", b"vol:r", b"nope:ro"):
        r, rtype = open_export(bad, source="127.0.0.2")
        if r is not None or rtype != ERR_UNKNOWN:
            fail(f"GO {bad!r}: {'accepted' if r is not None else hex(rtype)}, wanted ERR_UNKNOWN")
            if r is not None:
                disc(r)
    # Still refused while a holds it; a's connection still works.
    if read_cmd(a, 0, 512) != b"\x42" * 512:
        fail("holder read after refusals: wrong data")
    disc(a)
    # Once the holder is gone, the second host gets the volume.
    deadline = time.time() + 5
    while True:
        b, rtype = open_export(b"vol", source="127.0.0.2")
        if b is not None or time.time() > deadline:
            break
        time.sleep(0.1)
    if b is None:
        fail(f"second host still refused after the first disconnected: {rtype:#x}")
    else:
        if read_cmd(b, 0, 512) != b"\x42" * 512:
            fail("second host read: wrong data")
        # Now 127.0.0.1 is the second host.
        c, rtype = open_export(b"vol")
        if c is not None or rtype != ERR_POLICY:
            fail(f"127.0.0.1 while 127.0.0.2 holds the volume: "
                 f"{'accepted' if c is not None else hex(rtype)}, wanted ERR_POLICY")
        disc(b)

good_client("at the end")
sys.exit(1 if failures else 0)
