#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""stress.py - the clients of stress.sh: one blockd, many clients at once.

  stress.py run DIR PORT PID SECONDS OUT
      Makes the volumes (w0, w1, r0, c0) through the control API, starts one
      process per role below (stress.py role ROLE ...), and exits 0 if every
      role passed and the data directory holds what it should at the end.

Roles (each a process, with several threads; a role stops once SECONDS have
passed, or at once when another role failed):

  w0, w1  A volume written all the time: three connections of one host
          (w0: the unix socket, host "local"; w1: TCP from 127.0.0.1)
          send WRITE (some FUA), TRIM, WRITE_ZEROES, FLUSH and verifying
          READs of 4 KiB blocks, never two requests on one block at once,
          and journal each request's send and acknowledgement times.  An API
          thread takes snapshots and checks each at once against the journal
          (read back through NAME@SNAP), deletes snapshots (409 while a
          reader holds NAME@SNAP), tries restores (always 409: a writer is
          attached), grows the volume, clones snapshots (the clone reads as
          the snapshot) and deletes the clones.  A reader thread cycles
          through NAME@SNAP and NAME:ro over both transports (writes there
          get EPERM); a prober joins NAME from the writing host (multi-conn)
          and asks for it from the other hosts (ERR_POLICY).
  r0      A volume written in bursts by one client that connects, writes,
          flushes and leaves; between bursts snapshots, restores (200, or 409
          while the writer is attached), snapshot deletes and clones, each
          checked against a model of the contents; meanwhile readers hammer
          r0:ro (bursts of reads in flight, and connect/read/disconnect
          cycles) and r0@SNAP (checked against the model).
  misc    Volumes t0..t3 created and deleted (409 while attached, gone after);
          c0 contested by three hosts that connect read-write in cycles (one
          at a time may hold it, the others get ERR_POLICY), with snapshots
          restored under them (409 while one is attached); GET /v1/volumes,
          GET /v1/volumes/NAME and GET /metrics in a loop, checking that no
          volume lists two writing hosts; SIGHUP to blockd every 0.5-1 s.

Every NBD command, handshake, disconnect and API call is timed by a watchdog:
one that takes longer than the bound (5 s times STRESS_SLOW) fails the run,
even if it never returns (then the role reports what it was waiting for and
gives up).  Time the client process itself could not run (a heartbeat
thread notes when it wakes late: CPU starvation on a loaded machine, the
GIL) is not held against the daemon; a deadlocked daemon leaves its clients
idle, so it never hides a stall.  Any error not in the role's explicit list
of allowed refusals fails the run.  Failures print one "FAIL:" line each.
"""

import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

import nbd

BLOCK = 4096
MAGIC = 0x7374726573735F62  # "stress_b"
POLICY = "server policy prevents"
ZERO_BLOCK = bytes(BLOCK)
W_SIZE = 32 << 20
R_SIZE = 16 << 20
C_SIZE = 16 << 20
T_SIZE = 16 << 20
W_GROW_MAX = 8 << 20  # W volumes grow by 1 MiB steps up to this much
MAX_SNAPS = 5  # snapshots kept per volume before deleting comes first
READ_CHUNK = 1 << 20
CLUSTER = 65536  # of the images blockd makes


def now():
    return time.monotonic()


class Abort(Exception):
    """The run failed (already reported) or is stopping: unwind the thread."""


# ------------------------------------------------------------- the context


class Ctx:
    """What every thread of a role shares: config, failures, the watchdog."""

    def __init__(self, role, data_dir, port, pid, seconds, out):
        self.role = role
        self.dir = data_dir
        self.control = os.path.join(data_dir, "control.sock")
        self.nbd_sock = os.path.join(data_dir, "nbd.sock")
        self.port = port
        self.pid = pid
        self.seconds = seconds
        self.out = out
        self.slow = float(os.environ.get("STRESS_SLOW", "1"))
        self.bound = 5.0 * self.slow
        # Waits that are not one request: a detach noticed after a close, a
        # refusal that must clear once every client is gone.
        self.grace = 10.0 * self.slow
        self.t0 = now()
        self.stop = threading.Event()  # the role's threads finish up
        self.failed = threading.Event()
        self.lock = threading.Lock()
        self.ops = {}  # id -> [kind, what, start, thread, reported]
        self.op_seq = 0
        self.slowest = {}  # kind -> (seconds, what)
        self.counts = {}
        self.stop_file = os.path.join(out, "stop")
        self.lags = []  # (end, seconds): times this process's threads were held up
        self.over_1s = 0

    def heartbeat(self):
        """Notes when this process itself was held up (CPU starved, GIL):
        a slow request's report says how much of it was the client's."""
        while True:
            t = now()
            time.sleep(0.05)
            lag = now() - t - 0.05
            if lag > 0.1:
                with self.lock:
                    self.lags.append((now(), lag))
                    del self.lags[:-1000]

    def client_lag(self, start, end):
        with self.lock:
            return sum(min(lag, e - start) for e, lag in self.lags if start < e <= end + 0.06)

    def log(self, msg):
        print("[%s %7.2f] %s" % (self.role, now() - self.t0, msg), file=sys.stderr, flush=True)

    def fail(self, msg):
        with self.lock:
            first = not self.failed.is_set()
            self.failed.set()
        print("FAIL: [%s %7.2f] %s" % (self.role, now() - self.t0, msg), file=sys.stderr,
              flush=True)
        if first:
            with open(self.stop_file, "a") as f:
                f.write("%s: %s\n" % (self.role, msg))
        self.stop.set()
        raise Abort()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def check(self):
        """Raises Abort once the role is stopping (between operations)."""
        if self.stop.is_set():
            raise Abort()

    def sleep(self, seconds):
        if self.stop.wait(seconds):
            raise Abort()

    # The liveness bound: begin/end around every request.
    def begin(self, kind, what):
        with self.lock:
            self.op_seq += 1
            self.ops[self.op_seq] = [kind, what, now(), threading.current_thread().name, False]
            return self.op_seq

    def end(self, op):
        t = now()
        with self.lock:
            kind, what, start, _, reported = self.ops.pop(op)
        took = t - start
        lag = self.client_lag(start, t) if took > 0.5 else 0
        with self.lock:
            if took - lag > self.slowest.get(kind, (0, 0, ""))[0]:
                self.slowest[kind] = (took - lag, took, what)
            if took - lag > 1.0 * self.slow:
                self.over_1s += 1
        if took - lag > self.bound:
            msg = "%s took %.2f s (bound %.1f s; this client process could not run for " \
                "%.2f s of it)" % (what, took, self.bound, lag)
            if reported:
                self.log("the stalled request finished: " + msg)
            else:
                self.fail(msg)

    def timed(self, kind, what):
        return Timed(self, kind, what)

    def watchdog(self):
        while True:
            time.sleep(0.1)
            t = now()
            stalled = []
            with self.lock:
                late = [op for op in self.ops.values() if not op[4] and t - op[2] > self.bound]
            for op in late:
                lag = self.client_lag(op[2], t)
                if t - op[2] - lag > self.bound:
                    op[4] = True
                    stalled.append("%s has been waiting %.1f s (bound %.1f s; thread %s; this "
                                   "client process could not run for %.2f s of it)"
                                   % (op[1], t - op[2], self.bound, op[3], lag))
            for s in stalled:
                try:
                    self.fail("STALL: " + s)
                except Abort:
                    pass
            if os.path.exists(self.stop_file):
                self.stop.set()
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                try:
                    self.fail("blockd (pid %d) is gone" % self.pid)
                except Abort:
                    pass
                return

    def pending(self):
        t = now()
        with self.lock:
            return ["%s: waiting %.1f s (thread %s)" % (op[1], t - op[2], op[3])
                    for op in self.ops.values()]


class Timed:
    def __init__(self, ctx, kind, what):
        self.ctx, self.kind, self.what = ctx, kind, what

    def __enter__(self):
        self.op = self.ctx.begin(self.kind, self.what)
        return self

    def __exit__(self, *exc):
        self.ctx.end(self.op)
        return False


# ------------------------------------------------------------ control API


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def api(ctx, method, path, body=None, allow=(200,)):
    """One call on the control socket, timed.  A status outside allow fails
    the run; so does an error reply not shaped {"error": {code, message}}
    with the code its status means.  Returns (status, parsed JSON or text)."""
    what = "%s %s%s" % (method, path, " " + json.dumps(body) if body is not None else "")
    data = json.dumps(body).encode() if body is not None else None
    segs = path.split("/")
    for i in (3, 5):  # /v1/volumes/NAME/snapshots/SNAP
        if len(segs) > i:
            segs[i] = "*"
    with ctx.timed("api %s %s" % (method, "/".join(segs)), what):
        try:
            conn = UnixHTTPConnection(ctx.control, 120 * ctx.slow)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            ctx.fail("%s: %s: %s" % (what, type(e).__name__, e))
    status = resp.status
    ctx.count("api %d" % status)
    text = raw.decode(errors="replace")
    parsed = text
    if resp.getheader("Content-Type", "").startswith("application/json"):
        try:
            parsed = json.loads(text)
        except ValueError as e:
            ctx.fail("%s: status %d, bad JSON (%s): %s" % (what, status, e, text[:300]))
    if status not in allow:
        ctx.fail("%s: status %d (allowed here: %s): %s"
                 % (what, status, ", ".join(map(str, allow)), text[:500]))
    codes = {400: "bad_request", 404: "not_found", 409: "conflict"}
    if status in codes:
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(err, dict) or err.get("code") != codes[status] or \
                not err.get("message"):
            ctx.fail("%s: status %d with a malformed error body: %s" % (what, status, text[:300]))
    return status, parsed


# --------------------------------------------------------------- NBD


def block_bytes(tag, block, value):
    """The 4 KiB that value `value` of block `block` of volume `tag` reads as."""
    if value == 0:
        return ZERO_BLOCK
    return struct.pack("<QQQQ", MAGIC, tag, block, value) * (BLOCK // 32)


def decode(data, tag, block):
    """Which value a block read back holds: 0 (zeros), a value, or None (garbage)."""
    if data == ZERO_BLOCK:
        return 0
    magic, t, b, v = struct.unpack_from("<QQQQ", data)
    if magic == MAGIC and t == tag and b == block and data == data[:32] * (BLOCK // 32):
        return v
    return None


class Conn:
    """One NBD connection, its requests timed."""

    def __init__(self, ctx, export, via, h):
        self.ctx, self.export, self.via, self.h = ctx, export, via, h
        self.size = h.get_size()
        self.closing = False

    def what(self, cmd, off=None, length=None, flags=0):
        s = "%s %s (%s)" % (cmd, self.export, self.via)
        if off is not None:
            s += " offset %d length %d" % (off, length)
        if flags & nbd.CMD_FLAG_FUA:
            s += " FUA"
        if flags & nbd.CMD_FLAG_NO_HOLE:
            s += " NO_HOLE"
        return s

    def call(self, kind, what, fn, *args, eperm=False):
        """Runs one command; eperm: it must fail with EPERM (a read-only export)."""
        with self.ctx.timed("nbd " + kind, what):
            try:
                r = fn(*args)
            except nbd.Error as e:
                if eperm and e.errno == "EPERM" and "command failed" in (e.string or ""):
                    self.ctx.count("EPERM as expected")
                    return None
                self.ctx.fail("%s: %s" % (what, e.string))
        if eperm:
            self.ctx.fail("%s: succeeded on a read-only export (EPERM expected)" % what)
        return r

    def pread(self, length, off):
        return self.call("read", self.what("READ", off, length), self.h.pread, length, off)

    def pwrite(self, data, off, flags=0):
        self.call("write", self.what("WRITE", off, len(data), flags), self.h.pwrite, data, off,
                  flags)

    def pwrite_refused(self, data, off):
        self.h.set_strict_mode(self.h.get_strict_mode() & ~nbd.STRICT_COMMANDS)
        self.call("write", self.what("WRITE (read-only export)", off, len(data)), self.h.pwrite,
                  data, off, eperm=True)

    def trim(self, length, off, flags=0):
        self.call("trim", self.what("TRIM", off, length, flags), self.h.trim, length, off, flags)

    def zero(self, length, off, flags=0):
        self.call("zero", self.what("WRITE_ZEROES", off, length, flags), self.h.zero, length,
                  off, flags)

    def flush(self):
        self.call("flush", self.what("FLUSH"), self.h.flush)

    def read_bursts(self, n, length):
        """n reads of length bytes at random offsets, all sent at once."""
        bufs = [nbd.Buffer(length) for _ in range(n)]
        span = self.size // length
        what = self.what("%d READs of %d bytes in flight at once" % (n, length))
        with self.ctx.timed("nbd read burst", what):
            try:
                cookies = [self.h.aio_pread(b, random.randrange(span) * length) for b in bufs]
                left = set(cookies)
                while left:
                    self.h.poll(-1)
                    for c in list(left):
                        if self.h.aio_command_completed(c):
                            left.discard(c)
            except nbd.Error as e:
                self.ctx.fail("%s: %s" % (what, e.string))

    def read_all(self, size=None):
        """The whole export (or its first size bytes), in 1 MiB reads."""
        size = self.size if size is None else size
        parts = []
        for off in range(0, size, READ_CHUNK):
            parts.append(self.pread(min(READ_CHUNK, size - off), off))
        return b"".join(parts)

    def close(self):
        self.closing = True
        with self.ctx.timed("nbd disconnect", "disconnect from %s (%s)" % (self.export, self.via)):
            try:
                self.h.shutdown()
            except nbd.Error as e:
                self.ctx.fail("disconnect from %s (%s): %s" % (self.export, self.via, e.string))
        self.h = None  # the handle closes the socket when freed


def connect(ctx, export, via, policy=False, gone=False, may_refuse=False):
    """Opens export over `via`: "unix" (host "local"), "tcp" (127.0.0.1) or
    "tcp2" (127.0.0.2, another host).  With policy, ERR_POLICY is the
    expected answer (None is returned) and success fails the run; with
    may_refuse, ERR_POLICY (None) and success are both fine; with gone, the
    export must not exist.  Any other handshake failure fails the run."""
    h = nbd.NBD()
    h.set_export_name(export)
    what = "handshake for %s over %s" % (export, via)
    with ctx.timed("nbd handshake", what):
        try:
            if via == "unix":
                h.connect_unix(ctx.nbd_sock)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1" if via == "tcp" else "127.0.0.2", 0))
                s.connect(("127.0.0.1", ctx.port))
                h.connect_socket(s.detach())
        except nbd.Error as e:
            msg = e.string or ""
            if (policy or may_refuse) and POLICY in msg:
                ctx.count("ERR_POLICY as expected")
                return None
            if gone and "no export named" in msg:
                ctx.count("ENOENT for a deleted export")
                return None
            ctx.fail("%s: %s" % (what, msg))
        except OSError as e:
            ctx.fail("%s: %s" % (what, e))
    if policy:
        ctx.fail("%s: succeeded, but another host holds the volume (ERR_POLICY expected)" % what)
    if gone:
        ctx.fail("%s: succeeded, but the volume was deleted" % what)
    ctx.count("handshakes")
    return Conn(ctx, export, via, h)


def spawn(ctx, name, fn, *args):
    def run():
        try:
            fn(*args)
        except Abort:
            pass
        except Exception:
            try:
                ctx.fail("thread %s: unexpected exception:\n%s" % (name, traceback.format_exc()))
            except Abort:
                pass
    th = threading.Thread(target=run, name=name, daemon=True)
    th.start()
    return th


# ------------------------------------------------- the journal of a volume


class Journal:
    """What every block of a volume may hold, from the requests sent to it.

    ops[b] lists the requests on block b in order, each [kind, value, sent,
    acked]: kind "w" (value written), "z" (zeros), "t" (TRIM: zeros or what
    was there), "s" (a summary of earlier ones: value is a set).  Requests
    on one block never overlap: busy holds the blocks with one in flight.
    A request is appended, with its send time read under the lock, before it
    is sent; so once a reply time is read, every request sent before it is
    in the journal."""

    def __init__(self, tag, nblocks):
        self.tag = tag
        self.nblocks = nblocks
        self.lock = threading.Lock()
        self.busy = set()
        self.ops = [[] for _ in range(nblocks)]
        self.next_value = 1

    def claim(self, first, n):
        with self.lock:
            if any(b in self.busy for b in range(first, first + n)):
                return False
            self.busy.update(range(first, first + n))
            return True

    def release(self, first, n):
        with self.lock:
            self.busy.difference_update(range(first, first + n))

    def start(self, first, n, kind):
        """Journals a request on blocks first..first+n-1; returns the entries."""
        with self.lock:
            t = now()
            entries = []
            for b in range(first, first + n):
                v = 0
                if kind == "w":
                    v = self.next_value
                    self.next_value += 1
                e = [kind, v, t, None]
                self.ops[b].append(e)
                entries.append(e)
            return entries

    @staticmethod
    def done(entries):
        t = now()
        for e in entries:
            e[3] = t

    @staticmethod
    def apply(state, e):
        if e[0] == "w":
            return {e[1]}
        if e[0] == "z":
            return {0}
        if e[0] == "t":
            return state | {0}
        return set(e[1])

    def state(self, b, upto=None):
        """The values block b may hold after its requests up to index upto."""
        s = {0}
        ops = self.ops[b]
        for e in ops[: len(ops) if upto is None else upto + 1]:
            s = self.apply(s, e)
        return s

    @staticmethod
    def last_acked_before(ops, t):
        a = -1
        for i, e in enumerate(ops):
            if e[3] is not None and e[3] < t:
                a = i
        return a

    def allowed_in_snapshot(self, ops, sent, reply):
        """Values a snapshot asked for at `sent` and answered at `reply` may
        hold: the last request acknowledged before `sent`, or any request
        after it that was sent before `reply`."""
        a = self.last_acked_before(ops, sent)
        s = {0}
        for e in ops[: a + 1]:
            s = self.apply(s, e)
        allowed = set(s)
        for e in ops[a + 1:]:
            if e[2] >= reply:
                break
            s = self.apply(s, e)
            allowed |= s
        return allowed

    def prune(self, t):
        """Forgets what no snapshot asked for after t needs."""
        with self.lock:
            for b in range(self.nblocks):
                ops = self.ops[b]
                a = self.last_acked_before(ops, t)
                if a > 0:
                    s = {0}
                    for e in ops[:a]:
                        s = self.apply(s, e)
                    self.ops[b] = [["s", s, 0.0, 0.0]] + ops[a:]


def fmt_values(vals):
    return "{" + ", ".join("zeros" if v == 0 else str(v) for v in sorted(vals)) + "}"


# ----------------------------------------------------- snapshot bookkeeping


class Snaps:
    """The snapshots a role made of its volume, and who reads them.  Only
    the role's API thread creates and deletes them; a reader picks one that
    is not being deleted, and the deleter leaves one alone while a reader is
    in its handshake (else the reader's handshake could fail)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.snaps = {}  # name -> {values, size, deleting, connecting, readers}
        self.order = []
        self.seq = 0

    def add(self, name, info):
        with self.lock:
            info.update(deleting=False, connecting=0, readers=set())
            self.snaps[name] = info
            self.order.append(name)

    def pick_for_reading(self):
        with self.lock:
            names = [n for n in self.order if not self.snaps[n]["deleting"]]
            if not names:
                return None
            name = random.choice(names)
            self.snaps[name]["connecting"] += 1
            return name

    def connected(self, name, token, ok):
        with self.lock:
            s = self.snaps[name]
            s["connecting"] -= 1
            if ok:
                s["readers"].add(token)

    def leaving(self, name, token):
        with self.lock:
            self.snaps[name]["readers"].discard(token)

    def pick_for_delete(self, oldest=False):
        """Marks a snapshot being deleted; returns it and its readers now."""
        with self.lock:
            names = [n for n in self.order
                     if not self.snaps[n]["deleting"] and self.snaps[n]["connecting"] == 0]
            if not names:
                return None, set()
            name = names[0] if oldest else random.choice(names)
            self.snaps[name]["deleting"] = True
            return name, set(self.snaps[name]["readers"])

    def still_reading(self, name, tokens):
        with self.lock:
            return tokens & self.snaps[name]["readers"]

    def unmark(self, name):
        with self.lock:
            self.snaps[name]["deleting"] = False

    def remove(self, name):
        with self.lock:
            del self.snaps[name]
            self.order.remove(name)

    def names(self):
        with self.lock:
            return list(self.order)

    def get(self, name):
        with self.lock:
            return self.snaps[name]


def delete_snapshot(ctx, vol, snaps):
    """Deletes one snapshot.  409 is the answer while a reader holds
    VOL@SNAP: a 204 while a reader was attached all through the call fails
    the run.  A 409 otherwise (a reader that just left is detached a moment
    later) leaves it for later.  Returns True if deleted."""
    name, readers = snaps.pick_for_delete()
    if name is None:
        return False
    status, _ = api(ctx, "DELETE", "/v1/volumes/%s/snapshots/%s" % (vol, name),
                    allow=(204, 409))
    through = snaps.still_reading(name, readers)
    if status == 204:
        if through:
            ctx.fail("DELETE /v1/volumes/%s/snapshots/%s answered 204 while %s@%s was "
                     "attached all through the call (409 expected)" % (vol, name, vol, name))
        snaps.remove(name)
        ctx.count("snapshot deleted")
        return True
    ctx.count("snapshot delete refused (409)" + (" while attached" if through else ""))
    snaps.unmark(name)
    return False


def delete_volume_eventually(ctx, name):
    """DELETE a volume our clients have just left: 409 for a moment (the
    detach is noticed a little later), then 204 within the grace time."""
    deadline = now() + ctx.grace
    while True:
        status, body = api(ctx, "DELETE", "/v1/volumes/" + name, allow=(204, 409))
        if status == 204:
            return
        if now() > deadline:
            ctx.fail("DELETE /v1/volumes/%s still refused %.0f s after its last client left: %s"
                     % (name, ctx.grace, body))
        time.sleep(0.05)


def check_gone(ctx, name):
    api(ctx, "GET", "/v1/volumes/" + name, allow=(404,))
    connect(ctx, name + ":ro", random.choice(("unix", "tcp")), gone=True)


def wait_detached(ctx, name):
    deadline = now() + ctx.grace
    while True:
        _, d = api(ctx, "GET", "/v1/volumes/" + name)
        if not d["attachments"]:
            return
        if now() > deadline:
            ctx.fail("volume %s still lists attachments %.0f s after every client of this run "
                     "left: %s" % (name, ctx.grace, d["attachments"]))
        time.sleep(0.05)


def decode_all(data, tag):
    """What each block of an export read whole holds (see decode)."""
    return [decode(data[b * BLOCK:(b + 1) * BLOCK], tag, b) for b in range(len(data) // BLOCK)]


# ------------------------------------------------------------ role: w0, w1

WRITERS = 3


class WRole:
    def __init__(self, ctx, vol, tag):
        self.ctx, self.vol, self.tag = ctx, vol, tag
        self.via = "unix" if vol == "w0" else "tcp"  # the writing host
        self.others = [v for v in ("unix", "tcp", "tcp2") if v != self.via]
        self.nblocks = W_SIZE // BLOCK
        self.j = Journal(tag, self.nblocks)
        self.snaps = Snaps()
        self.size_lock = threading.Lock()
        self.min_size = W_SIZE  # size every new connection must see at least
        self.clones = 0

    def writer(self, i):
        ctx, j = self.ctx, self.j
        c = connect(ctx, self.vol, self.via)
        self.ready.release()
        while not ctx.stop.is_set():
            # FLUSH and FUA, each an fsync under the image's lock, a few
            # times a second per connection: the disk is shared.
            r = random.random()
            if r < 0.02:
                c.flush()
                ctx.count("FLUSH")
                continue
            if r < 0.55:
                kind, n = "w", random.randint(1, 4)
            elif r < 0.67:
                kind, n = "t", random.choice((1, 3, 16, 32))
            elif r < 0.79:
                kind, n = "z", random.choice((1, 2, 16, 32))
            else:
                kind, n = "r", random.randint(1, 4)
            first = random.randrange(self.nblocks - n + 1)
            if n >= 16:
                first -= first % 16  # whole 64 KiB clusters: really discarded
            if not j.claim(first, n):
                continue
            try:
                off, length = first * BLOCK, n * BLOCK
                flags = nbd.CMD_FLAG_FUA if random.random() < 0.05 else 0
                if kind == "r":
                    data = c.pread(length, off)
                    for k in range(n):
                        b = first + k
                        got = decode(data[k * BLOCK:(k + 1) * BLOCK], self.tag, b)
                        with j.lock:
                            want = j.state(b)
                        if got not in want:
                            ctx.fail("%s block %d reads as %s after every request on it was "
                                     "acknowledged; it may only hold %s"
                                     % (self.vol, b, "garbage" if got is None else got,
                                        fmt_values(want)))
                    ctx.count("READ verified")
                    continue
                entries = j.start(first, n, kind)
                if kind == "w":
                    data = b"".join(block_bytes(self.tag, first + k, entries[k][1])
                                    for k in range(n))
                    c.pwrite(data, off, flags)
                    ctx.count("WRITE FUA" if flags else "WRITE")
                elif kind == "t":
                    c.trim(length, off, flags)
                    ctx.count("TRIM")
                else:
                    if random.random() < 0.5:
                        flags |= nbd.CMD_FLAG_NO_HOLE
                    c.zero(length, off, flags)
                    ctx.count("WRITE_ZEROES")
                j.done(entries)
            finally:
                j.release(first, n)
        # Attached until the role's other threads are done: they count on it.
        while not self.others_done.wait(0.1):
            pass
        c.close()

    def snapshot(self):
        """Takes a snapshot while the writers write and checks it at once."""
        ctx = self.ctx
        self.snaps.seq += 1
        name = "s%d" % self.snaps.seq
        sent = now()
        _, d = api(ctx, "POST", "/v1/volumes/%s/snapshots" % self.vol, {"name": name},
                   allow=(201,))
        reply = now()
        if d.get("name") != name:
            ctx.fail("POST snapshot %s answered %s" % (name, d))
        ctx.count("snapshot taken")
        with self.j.lock:
            ops = [list(o) for o in self.j.ops]
        c = connect(ctx, "%s@%s" % (self.vol, name), random.choice(("unix", "tcp", "tcp2")))
        if c.size != d["size"]:
            ctx.fail("%s@%s: the export's size is %d, the API said %d"
                     % (self.vol, name, c.size, d["size"]))
        if c.size < W_SIZE:
            ctx.fail("%s@%s: size %d, smaller than the volume ever was" % (self.vol, name, c.size))
        data = c.read_all()
        c.close()
        values, bad = [], []
        for b in range(c.size // BLOCK):
            got = decode(data[b * BLOCK:(b + 1) * BLOCK], self.tag, b)
            values.append(got)
            allowed = self.j.allowed_in_snapshot(ops[b], sent, reply) if b < self.nblocks \
                else {0}
            if got not in allowed:
                hist = ["%s%s sent %+.3f acked %s" % (
                    e[0], "" if e[0] in "zt" else "=" + str(e[1]) if e[0] == "w"
                    else fmt_values(e[1]), e[2] - sent,
                    "never" if e[3] is None else "%+.3f" % (e[3] - sent))
                    for e in ops[b][-6:]] if b < self.nblocks else []
                bad.append("block %d holds %s, allowed %s; its last requests (times relative to "
                           "the POST being sent; the reply came at %+.3f): %s"
                           % (b, "garbage" if got is None else got, fmt_values(allowed),
                              reply - sent, "; ".join(hist)))
        if bad:
            ctx.fail("snapshot %s@%s (taken while writers ran) misses acknowledged writes or "
                     "holds unknown data in %d block(s):\n  %s"
                     % (self.vol, name, len(bad), "\n  ".join(bad[:10])))
        self.j.prune(sent)
        ctx.count("snapshot verified")
        self.snaps.add(name, {"values": values, "size": c.size})

    def clone(self):
        ctx = self.ctx
        names = [n for n in self.snaps.names() if not self.snaps.get(n)["deleting"]]
        if not names:
            return
        snap = random.choice(names)
        info = self.snaps.get(snap)
        self.clones += 1
        clone = "%sk%d" % (self.vol, self.clones)
        _, d = api(ctx, "POST", "/v1/volumes", {"name": clone, "from": "%s@%s" % (self.vol, snap)},
                   allow=(201,))
        if d["size"] != info["size"]:
            ctx.fail("clone %s of %s@%s has size %d, the snapshot %d"
                     % (clone, self.vol, snap, d["size"], info["size"]))
        c = connect(ctx, clone, "unix")
        if decode_all(c.read_all(), self.tag) != info["values"]:
            ctx.fail("clone %s does not read as %s@%s" % (clone, self.vol, snap))
        c.pwrite(b"\xc1" * BLOCK, 0, nbd.CMD_FLAG_FUA)
        api(ctx, "DELETE", "/v1/volumes/" + clone, allow=(409,))  # attached: refused
        c.close()
        ctx.count("clone verified")
        delete_volume_eventually(ctx, clone)
        ctx.count("clone deleted")

    def api_thread(self):
        ctx = self.ctx
        while not ctx.stop.is_set():
            r = random.random()
            n = len(self.snaps.names())
            if n < 1 or (r < 0.35 and n < MAX_SNAPS):
                self.snapshot()
            elif r < 0.55 or n >= MAX_SNAPS:
                delete_snapshot(ctx, self.vol, self.snaps)
            elif r < 0.65:
                # A writer is attached all the time: restore is refused.
                snap = random.choice(self.snaps.names())
                api(ctx, "POST", "/v1/volumes/%s/snapshots/%s/restore" % (self.vol, snap),
                    allow=(409,))
                ctx.count("restore refused (writer attached)")
            elif r < 0.75:
                with self.size_lock:
                    size = self.min_size + (1 << 20)
                if size <= W_SIZE + W_GROW_MAX:
                    _, d = api(ctx, "PATCH", "/v1/volumes/" + self.vol, {"size": size})
                    if d["size"] != size:
                        ctx.fail("PATCH %s to %d answered size %d" % (self.vol, size, d["size"]))
                    with self.size_lock:
                        self.min_size = size
                    ctx.count("grown")
            elif r < 0.85:
                self.clone()
            else:
                snap = random.choice(self.snaps.names())
                _, d = api(ctx, "GET", "/v1/volumes/%s/snapshots/%s" % (self.vol, snap))
                info = self.snaps.get(snap)
                # At least the clusters that hold data, at most the whole size.
                clusters = len({b * BLOCK // CLUSTER for b, v in enumerate(info["values"]) if v})
                if d["name"] != snap or d["size"] != info["size"] or \
                        not clusters * CLUSTER <= d["allocated"] <= info["size"]:
                    ctx.fail("GET /v1/volumes/%s/snapshots/%s: %s; the snapshot holds data in "
                             "%d cluster(s) of 64 KiB" % (self.vol, snap, d, clusters))
            ctx.sleep(random.uniform(0.01, 0.15))

    def reader(self, ident):
        """NAME@SNAP and NAME:ro cycles: handshake, a few reads, disconnect."""
        ctx = self.ctx
        seq = 0
        while not ctx.stop.is_set():
            via = random.choice(("unix", "tcp", "tcp2"))
            seq += 1
            token = "%s.%d" % (ident, seq)
            snap = self.snaps.pick_for_reading() if random.random() < 0.7 else None
            if snap is None:
                c = connect(ctx, self.vol + ":ro", via)
                for _ in range(random.randint(1, 4)):
                    c.pread(BLOCK * random.randint(1, 16),
                            BLOCK * random.randrange(self.nblocks - 16))
                if random.random() < 0.2:
                    c.pwrite_refused(b"x" * BLOCK, 0)
                c.close()
                ctx.count("ro cycles")
                continue
            ok = False
            try:
                c = connect(ctx, "%s@%s" % (self.vol, snap), via)
                ok = True
            finally:
                self.snaps.connected(snap, token, ok)
            info = self.snaps.get(snap)
            try:
                for _ in range(random.randint(1, 4)):
                    b = random.randrange(info["size"] // BLOCK - 16)
                    n = random.randint(1, 16)
                    data = c.pread(n * BLOCK, b * BLOCK)
                    for k in range(n):
                        got = decode(data[k * BLOCK:(k + 1) * BLOCK], self.tag, b + k)
                        if got != info["values"][b + k]:
                            ctx.fail("%s@%s block %d reads as %s, it read as %s when the "
                                     "snapshot was taken" % (self.vol, snap, b + k, got,
                                                             info["values"][b + k]))
                if random.random() < 0.2:
                    c.pwrite_refused(b"x" * BLOCK, 0)
                ctx.sleep(random.uniform(0, 0.05))
            finally:
                self.snaps.leaving(snap, token)
            c.close()
            ctx.count("snapshot reader cycles")

    def prober(self):
        """NAME read-write: joined from the writing host, refused to others."""
        ctx = self.ctx
        while not ctx.stop.is_set():
            if random.random() < 0.5:
                with self.size_lock:
                    min_size = self.min_size
                c = connect(ctx, self.vol, self.via)
                if c.size < min_size:
                    ctx.fail("%s: a new connection sees size %d, after the volume was grown "
                             "to %d" % (self.vol, c.size, min_size))
                for _ in range(random.randint(1, 3)):
                    c.pread(BLOCK, BLOCK * random.randrange(self.nblocks))
                c.close()
                ctx.count("writer-host joins")
            else:
                connect(ctx, self.vol, random.choice(self.others), policy=True)
            ctx.sleep(random.uniform(0.005, 0.05))

    def run(self):
        ctx = self.ctx
        self.ready = threading.Semaphore(0)
        self.others_done = threading.Event()
        threads = [spawn(ctx, "writer%d" % i, self.writer, i) for i in range(WRITERS)]
        for _ in range(WRITERS):  # every writer attached before restores are tried
            while not self.ready.acquire(timeout=0.1):
                ctx.check()
        others = [spawn(ctx, "api", self.api_thread), spawn(ctx, "reader1", self.reader, "a"),
                  spawn(ctx, "reader2", self.reader, "b"), spawn(ctx, "prober", self.prober)]

        def release():
            for th in others:
                th.join()
            self.others_done.set()
        return others + [spawn(ctx, "release", release)] + threads

    def finish(self):
        """After the threads stopped: the volume holds the journal's last
        values, every snapshot still reads as when it was taken, and the
        snapshots can go once nobody reads them."""
        ctx = self.ctx
        c = connect(ctx, self.vol + ":ro", "unix")
        data = c.read_all(W_SIZE)
        c.close()
        for b in range(self.nblocks):
            got = decode(data[b * BLOCK:(b + 1) * BLOCK], self.tag, b)
            want = self.j.state(b)
            if got not in want:
                ctx.fail("%s block %d reads as %s at the end; it may only hold %s"
                         % (self.vol, b, "garbage" if got is None else got, fmt_values(want)))
        for name in self.snaps.names():
            c = connect(ctx, "%s@%s" % (self.vol, name), "unix")
            if decode_all(c.read_all(), self.tag) != self.snaps.get(name)["values"]:
                ctx.fail("%s@%s reads otherwise at the end than when it was taken"
                         % (self.vol, name))
            c.close()
        # Every client of the volume is gone: all but the last two snapshots go.
        deadline = now() + ctx.grace
        while len(self.snaps.names()) > 2:
            if not delete_snapshot(ctx, self.vol, self.snaps):
                if now() > deadline:
                    ctx.fail("%s: deleting snapshots still refused %.0f s after every reader "
                             "left" % (self.vol, ctx.grace))
                time.sleep(0.05)


# ------------------------------------------------------------------ role: r0

R_TAG = 3


class RRole:
    """r0: one writer in bursts, snapshots and restores checked against a
    model of the contents (values[b] is what block b holds)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.vol = "r0"
        self.nblocks = R_SIZE // BLOCK
        self.values = [1] * self.nblocks  # the setup wrote value 1 everywhere
        self.next_value = 2
        self.snaps = Snaps()
        self.clones = 0
        self.last_writer_left = 0.0

    def check_model(self, data, values, what, first=0):
        """data, read from block first on, holds values."""
        bad = []
        for k in range(len(values)):
            got = decode(data[k * BLOCK:(k + 1) * BLOCK], R_TAG, first + k)
            if got != values[k]:
                bad.append("block %d reads as %s, expected %s"
                           % (first + k, "garbage" if got is None else got, values[k]))
        if bad:
            self.ctx.fail("%s: %d block(s) wrong:\n  %s" % (what, len(bad), "\n  ".join(bad[:10])))

    def burst(self):
        ctx = self.ctx
        c = connect(ctx, self.vol, "unix")
        for _ in range(random.randint(8, 48)):
            b = random.randrange(self.nblocks - 3)
            n = random.randint(1, 4)
            if random.random() < 0.1:
                c.zero(n * BLOCK, b * BLOCK)
                vals = [0] * n
            else:
                vals = list(range(self.next_value, self.next_value + n))
                self.next_value += n
                c.pwrite(b"".join(block_bytes(R_TAG, b + k, vals[k]) for k in range(n)),
                         b * BLOCK, nbd.CMD_FLAG_FUA if random.random() < 0.2 else 0)
            self.values[b:b + n] = vals
        c.flush()
        names = self.snaps.names()
        if names and random.random() < 0.3:
            # The writer is attached: restore is refused.
            api(ctx, "POST", "/v1/volumes/r0/snapshots/%s/restore" % random.choice(names),
                allow=(409,))
            ctx.count("restore refused (writer attached)")
        c.close()
        self.last_writer_left = now()
        ctx.count("write bursts")

    def snapshot(self):
        ctx = self.ctx
        self.snaps.seq += 1
        name = "g%d" % self.snaps.seq
        api(ctx, "POST", "/v1/volumes/r0/snapshots", {"name": name}, allow=(201,))
        c = connect(ctx, "r0@" + name, random.choice(("unix", "tcp")))
        data = c.read_all()
        c.close()
        self.check_model(data, self.values, "snapshot r0@%s right after it was taken" % name)
        self.snaps.add(name, {"values": list(self.values), "size": len(data)})
        ctx.count("snapshot verified")

    def restore(self):
        ctx = self.ctx
        names = [n for n in self.snaps.names() if not self.snaps.get(n)["deleting"]]
        if not names:
            return
        snap = random.choice(names)
        path = "/v1/volumes/r0/snapshots/%s/restore" % snap
        while True:
            status, d = api(ctx, "POST", path, allow=(200, 409))
            if status == 200:
                break
            # Our writer left a moment ago; blockd notices a little later.
            if now() - self.last_writer_left > ctx.grace:
                ctx.fail("POST %s: 409 %.1f s after the last writer left: %s"
                         % (path, now() - self.last_writer_left, d))
            time.sleep(0.05)
        if d["size"] != R_SIZE:
            ctx.fail("r0 restored to %s has size %d" % (snap, d["size"]))
        self.values = list(self.snaps.get(snap)["values"])
        c = connect(ctx, "r0:ro", random.choice(("unix", "tcp")))
        if random.random() < 0.3:
            self.check_model(c.read_all(), self.values, "r0 right after its restore to %s" % snap)
        else:
            for _ in range(8):
                b = random.randrange(self.nblocks - 8)
                self.check_model(c.pread(8 * BLOCK, b * BLOCK), self.values[b:b + 8],
                                 "r0 right after its restore to %s" % snap, b)
        c.close()
        ctx.count("restored and verified")

    def clone(self):
        ctx = self.ctx
        names = [n for n in self.snaps.names() if not self.snaps.get(n)["deleting"]]
        if not names:
            return
        snap = random.choice(names)
        self.clones += 1
        clone = "r0k%d" % self.clones
        api(ctx, "POST", "/v1/volumes", {"name": clone, "from": "r0@" + snap}, allow=(201,))
        c = connect(ctx, clone, random.choice(("unix", "tcp")))
        self.check_model(c.read_all(), self.snaps.get(snap)["values"],
                         "clone %s of r0@%s" % (clone, snap))
        api(ctx, "DELETE", "/v1/volumes/" + clone, allow=(409,))  # attached: refused
        c.close()
        delete_volume_eventually(ctx, clone)
        check_gone(ctx, clone)
        ctx.count("clone verified and deleted")

    def main_thread(self):
        ctx = self.ctx
        while not ctx.stop.is_set():
            n = len(self.snaps.names())
            r = random.random()
            # Restores come often: each one waits for the reads in flight
            # on r0:ro, which is where a lock cycle with the loops shows.
            if r < 0.25:
                self.burst()
            elif r < 0.4 and n < MAX_SNAPS:
                self.snapshot()
            elif r < 0.75:
                self.restore()
            elif r < 0.9 or n >= MAX_SNAPS:
                delete_snapshot(ctx, self.vol, self.snaps)
            else:
                self.clone()
            ctx.sleep(random.uniform(0.01, 0.1))

    def ro_burst_reader(self, via):
        """Keeps reads of r0:ro in flight, over one connection."""
        ctx = self.ctx
        c = connect(ctx, "r0:ro", via)
        while not ctx.stop.is_set():
            c.read_bursts(8, random.choice((4096, 65536, 262144)))
            ctx.count("ro read bursts")
            ctx.sleep(random.uniform(0, 0.005))
        c.close()

    def ro_cycler(self, via):
        ctx = self.ctx
        while not ctx.stop.is_set():
            c = connect(ctx, "r0:ro", via)
            for _ in range(random.randint(1, 4)):
                c.pread(65536, 65536 * random.randrange(R_SIZE // 65536))
            if random.random() < 0.1:
                c.pwrite_refused(b"x" * BLOCK, 0)
            c.close()
            ctx.count("ro cycles")
            ctx.sleep(random.uniform(0, 0.01))

    def snap_reader(self, ident):
        ctx = self.ctx
        seq = 0
        while not ctx.stop.is_set():
            snap = self.snaps.pick_for_reading()
            if snap is None:
                ctx.sleep(0.05)
                continue
            seq += 1
            token = "%s.%d" % (ident, seq)
            ok = False
            try:
                c = connect(ctx, "r0@" + snap, random.choice(("unix", "tcp", "tcp2")))
                ok = True
            finally:
                self.snaps.connected(snap, token, ok)
            try:
                values = self.snaps.get(snap)["values"]
                for _ in range(random.randint(1, 4)):
                    b = random.randrange(self.nblocks - 16)
                    data = c.pread(16 * BLOCK, b * BLOCK)
                    for k in range(16):
                        got = decode(data[k * BLOCK:(k + 1) * BLOCK], R_TAG, b + k)
                        if got != values[b + k]:
                            ctx.fail("r0@%s block %d reads as %s, expected %s"
                                     % (snap, b + k, got, values[b + k]))
                if random.random() < 0.1:
                    c.pwrite_refused(b"x" * BLOCK, 0)
                ctx.sleep(random.uniform(0, 0.05))
            finally:
                self.snaps.leaving(snap, token)
            c.close()
            ctx.count("snapshot reader cycles")

    def run(self):
        ctx = self.ctx
        return [spawn(ctx, "main", self.main_thread),
                spawn(ctx, "ro-burst-unix", self.ro_burst_reader, "unix"),
                spawn(ctx, "ro-burst-tcp", self.ro_burst_reader, "tcp"),
                spawn(ctx, "ro-cycle-unix", self.ro_cycler, "unix"),
                spawn(ctx, "ro-cycle-tcp", self.ro_cycler, "tcp"),
                spawn(ctx, "snap-reader1", self.snap_reader, "a"),
                spawn(ctx, "snap-reader2", self.snap_reader, "b")]

    def finish(self):
        ctx = self.ctx
        c = connect(ctx, "r0:ro", "unix")
        self.check_model(c.read_all(), self.values, "r0 at the end")
        c.close()
        for name in self.snaps.names():
            c = connect(ctx, "r0@" + name, "tcp")
            self.check_model(c.read_all(), self.snaps.get(name)["values"],
                             "r0@%s at the end" % name)
            c.close()


# ---------------------------------------------------------------- role: misc

HOSTS = {"unix": "local", "tcp": "127.0.0.1", "tcp2": "127.0.0.2"}
CHURN = ["t0", "t1", "t2", "t3"]
FIXED = ("w0", "w1", "r0", "c0")


class MiscRole:
    def __init__(self, ctx):
        self.ctx = ctx
        self.lock = threading.Lock()
        self.c0_writers = {}  # token -> host, while connected read-write
        self.c0_snaps = []
        self.c0_seq = 0
        self.existing = set()

    def churn(self):
        """t0..t3: created, attached, refused deletion while attached, deleted."""
        ctx = self.ctx
        while not ctx.stop.is_set():
            name = random.choice(CHURN)
            if name not in self.existing:
                size = random.choice((1, 4, 16)) << 20
                _, d = api(ctx, "POST", "/v1/volumes", {"name": name, "size": size},
                           allow=(201,))
                if d["size"] != size or d["attachments"]:
                    ctx.fail("POST /v1/volumes %s answered %s" % (name, d))
                self.existing.add(name)
                ctx.count("volume created")
                if random.random() < 0.5:
                    continue  # left for a while, through some SIGHUP rescans
            via = random.choice(("unix", "tcp", "tcp2"))
            export = name if random.random() < 0.5 else name + ":ro"
            c = connect(ctx, export, via)
            if c.pread(BLOCK, 0) != ZERO_BLOCK:
                ctx.fail("new volume %s does not read as zeros" % name)
            api(ctx, "DELETE", "/v1/volumes/" + name, allow=(409,))  # attached: refused
            c.close()
            delete_volume_eventually(ctx, name)
            self.existing.discard(name)
            check_gone(ctx, name)
            ctx.count("volume deleted")
            ctx.sleep(random.uniform(0.01, 0.1))

    def c0_cycler(self, via):
        """c0 read-write from one host: held, or refused while another holds it."""
        ctx = self.ctx
        host = HOSTS[via]
        seq = 0
        base = {"unix": 0, "tcp": 256, "tcp2": 512}[via]
        while not ctx.stop.is_set():
            c = connect(ctx, "c0", via, may_refuse=True)
            if c is None:
                ctx.sleep(random.uniform(0, 0.005))
                continue
            seq += 1
            token = "%s.%d" % (threading.current_thread().name, seq)
            with self.lock:
                others = {h for h in self.c0_writers.values() if h != host}
                self.c0_writers[token] = host
            if others:
                ctx.fail("c0: the read-write handshake of host %s succeeded while %s held c0 "
                         "(attached and not yet leaving)" % (host, ", ".join(sorted(others))))
            try:
                for _ in range(random.randint(1, 3)):
                    c.pread(BLOCK, BLOCK * random.randrange(C_SIZE // BLOCK))
                c.pwrite(os.urandom(16) * (BLOCK // 16), BLOCK * (base + random.randrange(256)))
                if random.random() < 0.3:
                    c.flush()
                ctx.sleep(random.uniform(0, 0.03))
            finally:
                with self.lock:
                    del self.c0_writers[token]
            c.close()
            ctx.count("c0 held by " + host)
            ctx.sleep(random.uniform(0, 0.02))

    def c0_api(self):
        """Snapshots of c0 restored under the cyclers: 409 while one is attached."""
        ctx = self.ctx
        while not ctx.stop.is_set():
            r = random.random()
            if not self.c0_snaps or (r < 0.3 and len(self.c0_snaps) < MAX_SNAPS):
                self.c0_seq += 1
                name = "c%d" % self.c0_seq
                api(ctx, "POST", "/v1/volumes/c0/snapshots", {"name": name}, allow=(201,))
                self.c0_snaps.append(name)
            elif r < 0.8:
                snap = random.choice(self.c0_snaps)
                with self.lock:
                    before = set(self.c0_writers)
                status, _ = api(ctx, "POST", "/v1/volumes/c0/snapshots/%s/restore" % snap,
                                allow=(200, 409))
                with self.lock:
                    through = before & set(self.c0_writers)
                if status == 200 and through:
                    ctx.fail("c0 restored to %s while a writer (%s) was attached all through "
                             "the call (409 expected)" % (snap, ", ".join(sorted(through))))
                ctx.count("c0 restore %d" % status)
            else:
                snap = self.c0_snaps.pop(random.randrange(len(self.c0_snaps)))
                api(ctx, "DELETE", "/v1/volumes/c0/snapshots/" + snap, allow=(204,))
            ctx.sleep(random.uniform(0.01, 0.1))

    def getter(self):
        """GET /v1/volumes, GET /v1/volumes/NAME, GET /metrics: one writing host each."""
        ctx = self.ctx
        while not ctx.stop.is_set():
            _, d = api(ctx, "GET", "/v1/volumes")
            names = set()
            for v in d["volumes"]:
                names.add(v["name"])
                self.check_attachments(v)
            if not set(FIXED) <= names:
                ctx.fail("GET /v1/volumes lists %s: missing %s"
                         % (sorted(names), sorted(set(FIXED) - names)))
            for name in random.sample(sorted(names), min(3, len(names))):
                status, v = api(ctx, "GET", "/v1/volumes/" + name,
                                allow=(200,) if name in FIXED else (200, 404))
                if status == 200:
                    self.check_attachments(v)
                    if v["snapshot_count"] != len(v["snapshots"]):
                        ctx.fail("GET /v1/volumes/%s: snapshot_count %d, %d listed"
                                 % (name, v["snapshot_count"], len(v["snapshots"])))
            _, m = api(ctx, "GET", "/metrics")
            for line in m.splitlines():
                if line and not line.startswith("#") and \
                        not re.match(r"^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$", line):
                    ctx.fail("GET /metrics: bad line %r" % line)
            if "blockd_connections" not in m:
                ctx.fail("GET /metrics has no blockd_connections")
            ctx.sleep(random.uniform(0, 0.05))

    def check_attachments(self, v):
        rw = {a["peer"] for a in v["attachments"] if not a["read_only"]}
        if len(rw) > 1:
            self.ctx.fail("volume %s lists %d writing hosts: %s"
                          % (v["name"], len(rw), v["attachments"]))
        want = {"w0": "local", "w1": "127.0.0.1"}.get(v["name"])
        if want and rw and rw != {want}:
            self.ctx.fail("volume %s is attached read-write by %s, but only %s writes it"
                          % (v["name"], rw, want))

    def hupper(self):
        ctx = self.ctx
        while not ctx.stop.is_set():
            ctx.sleep(random.uniform(0.5, 1.0))
            try:
                os.kill(ctx.pid, signal.SIGHUP)
            except ProcessLookupError:
                ctx.fail("blockd (pid %d) is gone" % ctx.pid)
            ctx.count("SIGHUP")

    def run(self):
        ctx = self.ctx
        return [spawn(ctx, "churn", self.churn), spawn(ctx, "c0-api", self.c0_api),
                spawn(ctx, "getter", self.getter), spawn(ctx, "hup", self.hupper)] + \
            [spawn(ctx, "c0-%s-%d" % (via, i), self.c0_cycler, via)
             for via in HOSTS for i in range(2)]

    def finish(self):
        for name in sorted(self.existing):
            delete_volume_eventually(self.ctx, name)
            check_gone(self.ctx, name)


# -------------------------------------------------------------- the roles


def run_role(role, data_dir, port, pid, seconds, out):
    ctx = Ctx(role, data_dir, port, pid, seconds, out)
    random.seed("%s-%s" % (role, os.environ.get("STRESS_SEED", time.time_ns())))
    threading.Thread(target=ctx.watchdog, name="watchdog", daemon=True).start()
    threading.Thread(target=ctx.heartbeat, name="heartbeat", daemon=True).start()
    if role in ("w0", "w1"):
        r = WRole(ctx, role, 1 if role == "w0" else 2)
    elif role == "r0":
        r = RRole(ctx)
    else:
        r = MiscRole(ctx)
    threads = []
    try:
        threads = r.run()
    except Abort:
        pass
    deadline = ctx.t0 + seconds
    while not ctx.stop.is_set() and now() < deadline:
        ctx.stop.wait(0.1)
    ctx.stop.set()
    ctx.log("stopping")
    # Threads finish what they are doing (a clone, say, with its delete's
    # grace time); one stuck in a request for longer than the bound was
    # reported by the watchdog, and after a while longer is given up on.
    give_up = now() + 3 * ctx.bound + 2 * ctx.grace + 10
    for th in threads:
        th.join(max(0.0, give_up - now()))
    stuck = [th.name for th in threads if th.is_alive()]
    if stuck:
        if not ctx.failed.is_set():
            try:
                ctx.fail("threads %s did not finish" % ", ".join(stuck))
            except Abort:
                pass
        for p in ctx.pending():
            ctx.log("still waiting: " + p)
        ctx.log("giving up on threads %s" % ", ".join(stuck))
        summary(ctx)
        sys.stderr.flush()
        os._exit(1)
    if not ctx.failed.is_set():
        ctx.stop = threading.Event()  # the final checks make requests again
        ctx.log("final checks")
        try:
            r.finish()
        except Abort:
            pass
    summary(ctx)
    return 1 if ctx.failed.is_set() else 0


def summary(ctx):
    counts = ", ".join("%s %d" % kv for kv in sorted(ctx.counts.items()))
    ctx.log("done: " + counts)
    slow = ", ".join("%s %.2f s" % (k, v[0]) for k, v in
                     sorted(ctx.slowest.items(), key=lambda kv: -kv[1][0])[:8])
    ctx.log("slowest: " + slow)
    ctx.log("requests over %.0f s: %d; this process held up %d times for over 0.1 s, at most "
            "%.2f s" % (1.0 * ctx.slow, ctx.over_1s, len(ctx.lags),
                        max([lag for _, lag in ctx.lags] or [0])))
    with open(os.path.join(ctx.out, "slowest." + ctx.role), "w") as f:
        for k, v in sorted(ctx.slowest.items(), key=lambda kv: -kv[1][0]):
            f.write("%.3f\t%s\t%s (measured %.3f s, the rest the client could not run)\n"
                    % (v[0], k, v[2], v[1]))


# ------------------------------------------------------------------ run


def setup(ctx):
    for name, size in (("w0", W_SIZE), ("w1", W_SIZE), ("r0", R_SIZE), ("c0", C_SIZE)):
        api(ctx, "POST", "/v1/volumes", {"name": name, "size": size}, allow=(201,))
    # r0 is written whole (value 1 in every block), so that its readers'
    # requests are real reads carried out on the event loops' rings.
    c = connect(ctx, "r0", "unix")
    for off in range(0, R_SIZE, READ_CHUNK):
        c.pwrite(b"".join(block_bytes(R_TAG, b, 1)
                          for b in range(off // BLOCK, (off + READ_CHUNK) // BLOCK)), off)
    c.flush()
    c.close()
    wait_detached(ctx, "r0")


def final_checks(ctx):
    """The data directory holds the four volumes and nothing else: every
    clone and t-volume was deleted, and bases go with their last clone."""
    _, d = api(ctx, "GET", "/v1/volumes")
    names = sorted(v["name"] for v in d["volumes"])
    if names != sorted(FIXED):
        ctx.fail("at the end GET /v1/volumes lists %s, expected %s" % (names, sorted(FIXED)))
    for name in FIXED:
        wait_detached(ctx, name)
    files = sorted(os.listdir(os.path.join(ctx.dir, "volumes")))
    if files != sorted(n + ".qcow2" for n in FIXED):
        ctx.fail("at the end DIR/volumes holds %s" % files)
    bases = sorted(os.listdir(os.path.join(ctx.dir, "bases")))
    if bases:
        ctx.fail("at the end DIR/bases holds %s, though every clone was deleted" % bases)
    # What blockd measured itself (for the log: a slow request the daemon
    # did not see as slow waited in the client or the kernel).
    _, m = api(ctx, "GET", "/metrics")
    total, over = {}, {}
    for line in m.splitlines():
        g = re.match(r'blockd_volume_latency_seconds_bucket\{volume="[^"]+",op="([a-z]+)",'
                     r'le="([^"]+)"\} (\d+)', line)
        if g and g.group(2) == "+Inf":
            total[g.group(1)] = total.get(g.group(1), 0) + int(g.group(3))
        elif g and g.group(2) in ("0.1", "1"):
            key = (g.group(1), g.group(2))
            over[key] = over.get(key, 0) - int(g.group(3))
    ctx.log("blockd's own latencies of the volumes left: " + ", ".join(
        "%s %d (over 0.1 s %d, over 1 s %d)" % (op, n, n + over.get((op, "0.1"), 0),
                                                n + over.get((op, "1"), 0))
        for op, n in sorted(total.items())))


def run(data_dir, port, pid, seconds, out):
    ctx = Ctx("run", data_dir, port, pid, seconds, out)
    threading.Thread(target=ctx.watchdog, name="watchdog", daemon=True).start()
    threading.Thread(target=ctx.heartbeat, name="heartbeat", daemon=True).start()
    try:
        setup(ctx)
    except Abort:
        return 1
    procs = {}
    for role in ("w0", "w1", "r0", "misc"):
        procs[role] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "role", role, data_dir, str(port),
             str(pid), str(seconds), out])
    rc = 0
    deadline = now() + seconds + 120 * ctx.slow
    for role, p in procs.items():
        try:
            p.wait(max(1.0, deadline - now()))
        except subprocess.TimeoutExpired:
            print("FAIL: role %s did not finish; killing it" % role, file=sys.stderr)
            p.kill()
            p.wait()
        if p.returncode != 0:
            rc = 1
            if not os.path.exists(ctx.stop_file):
                print("FAIL: role %s exited with status %d" % (role, p.returncode),
                      file=sys.stderr)
    if rc == 0:
        try:
            final_checks(ctx)
        except Abort:
            rc = 1
    return rc


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "run":
        _, _, d, port, pid, seconds, out = sys.argv
        sys.exit(run(d, int(port), int(pid), float(seconds), out))
    if len(sys.argv) == 8 and sys.argv[1] == "role":
        _, _, role, d, port, pid, seconds, out = sys.argv
        sys.exit(run_role(role, d, int(port), int(pid), float(seconds), out))
    sys.exit("usage: stress.py run DIR PORT PID SECONDS OUT")


if __name__ == "__main__":
    main()
