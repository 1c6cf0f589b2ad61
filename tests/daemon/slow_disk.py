# SPDX-License-Identifier: MIT
"""slow_disk.py - one volume whose disk stops answering must not freeze others.

  slow_disk.py DATA_DIR PAUSE_SOCKET [SCENARIO...]

Volume "slow" lives on a disk the test can stop (an nbdkit pause filter
under nbdfuse, set up by slow_disk.sh); volume "fast" on an ordinary one.
blockd runs one event loop (--threads 1), so every connection shares it.
Each scenario stops the slow disk while blockd has I/O of "slow" in
flight, then checks that, with the disk still stopped, blockd keeps
serving: handshakes and I/O on "fast", and the control API's listing.
Then it resumes the disk and checks that everything started completes.

The scenarios are the lock cycles and starvation of an earlier daemon:
  pool    allocating writes of "slow" fill the pool; a pool job of "fast"
          (an allocating write, a flush) must still run
  trim    a TRIM of "slow" waits for its in-flight read (quiesce), and
          GET /v1/volumes comes meanwhile: the listing and a new handshake
          must not wait for the TRIM
  restore a restore of "slow" waits for a NAME:ro reader's in-flight
          read; a new handshake must not wait for the restore
  view    a client asks for slow@v1 whose view is not open yet; opening
          it reads the stopped disk: other handshakes must not wait
While the disk is stopped nothing about "slow" can finish, so what must
finish meanwhile does or the scenario fails after BOUND seconds; that is a
bound on a stall, not on speed.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time

import nbd

BOUND = 20  # seconds something that does not need the stopped disk may take
CLUSTER = 65536


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.unix_path)


class Test:
    def __init__(self, data_dir, pause_socket):
        self.slow_file = data_dir + "/volumes/slow.qcow2"
        self.control = data_dir + "/control.sock"
        self.nbd_sock = data_dir + "/nbd.sock"
        self.pause_socket = pause_socket

    def uri(self, export):
        return "nbd+unix:///%s?socket=%s" % (export, self.nbd_sock)

    def connect(self, export):
        h = nbd.NBD()
        h.connect_uri(self.uri(export))
        return h

    def api(self, method, path, body=None):
        c = UnixHTTPConnection(self.control)
        c.request(method, path, body=json.dumps(body) if body is not None else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def disk(self, command):
        """Stops ('p') or resumes ('r') the slow disk; returns once it took effect."""
        if command == "p":
            # Reads must reach the disk, not the page cache of the file.
            fd = os.open(self.slow_file, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.pause_socket)
        s.sendall(command.encode())
        reply = s.recv(1)
        s.close()
        if reply != command.upper().encode():
            sys.exit("FAIL: pause filter answered %r to %r" % (reply, command))


class Job:
    """A call on a thread of its own, to wait for with a bound."""

    def __init__(self, what, fn):
        self.what = what
        self.error = None
        self.result = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as e:  # reported by wait()
            self.error = e
        self.done.set()

    def wait(self, why):
        if not self.done.wait(BOUND):
            sys.exit("FAIL: %s did not finish within %d s %s" % (self.what, BOUND, why))
        if self.error:
            sys.exit("FAIL: %s failed: %s" % (self.what, self.error))
        return self.result


def fast_client(t):
    """A new connection to "fast": handshake, a write, a read back, a flush."""

    def run():
        h = t.connect("fast")
        h.pwrite(b"f" * 4096, 0)
        if h.pread(4096, 0) != b"f" * 4096:
            raise RuntimeError("fast read back the wrong bytes")
        h.flush()
        h.shutdown()

    return Job("a new client of volume fast", run)


def listing(t):
    def run():
        status, body = t.api("GET", "/v1/volumes")
        if status != 200:
            raise RuntimeError("GET /v1/volumes: %d %s" % (status, body[:200]))

    return Job("GET /v1/volumes", run)


def settle():
    """Lets what was just started reach blockd and block there."""
    time.sleep(1)


def scenario_pool(t):
    slow = t.connect("slow")
    fast = t.connect("fast")
    t.disk("p")
    # Each write allocates a fresh cluster: a pool job that blocks on the disk.
    writers = []
    for i in range(12):
        h = slow if i % 2 else t.connect("slow")
        off = (16 << 20) + i * CLUSTER
        writers.append(Job("allocating write %d of slow" % i,
                           lambda h=h, off=off: h.pwrite(b"s" * 4096, off)))
    settle()
    alloc = Job("an allocating write of fast",
                lambda: fast.pwrite(b"a" * 4096, 32 << 20))
    alloc.wait("while slow's disk is stopped: slow's jobs hold every pool thread")
    Job("a flush of fast", fast.flush).wait(
        "while slow's disk is stopped: slow's jobs hold every pool thread")
    fast_client(t).wait("while slow's disk is stopped")
    t.disk("r")
    for w in writers:
        w.wait("after slow's disk resumed")
    slow.flush()
    fast.shutdown()
    slow.shutdown()


def scenario_trim(t):
    reader = t.connect("slow")
    trimmer = t.connect("slow")
    reader.pread(4096, 0)  # maps cluster 0 from cached metadata next time
    t.disk("p")
    read = Job("a read of slow", lambda: reader.pread(4096, 0))
    settle()
    trim = Job("a TRIM of slow", lambda: trimmer.trim(CLUSTER, 16 << 20))
    settle()
    listing(t).wait("while a TRIM of slow waits for slow's in-flight read")
    fast_client(t).wait("while a TRIM of slow waits for slow's in-flight read")
    t.disk("r")
    read.wait("after slow's disk resumed")
    trim.wait("after slow's disk resumed")
    listing(t).wait("after slow's disk resumed")
    reader.shutdown()
    trimmer.shutdown()


def scenario_restore(t):
    status, body = t.api("POST", "/v1/volumes/slow/snapshots", {"name": "s1"})
    if status != 201:
        sys.exit("FAIL: snapshot s1 of slow: %d %s" % (status, body[:200]))
    reader = t.connect("slow:ro")
    reader.pread(4096, 0)
    t.disk("p")
    read = Job("a read of slow:ro", lambda: reader.pread(4096, 0))
    settle()

    def restore():
        status, body = t.api("POST", "/v1/volumes/slow/snapshots/s1/restore")
        if status != 200:
            raise RuntimeError("restore: %d %s" % (status, body[:200]))

    rest = Job("the restore of slow", restore)
    settle()
    fast_client(t).wait("while a restore of slow waits for a reader's in-flight read")
    listing(t).wait("while a restore of slow waits for a reader's in-flight read")
    t.disk("r")
    read.wait("after slow's disk resumed")
    rest.wait("after slow's disk resumed")
    reader.shutdown()


def scenario_view(t):
    status, body = t.api("POST", "/v1/volumes/slow/snapshots", {"name": "v1"})
    if status != 201:
        sys.exit("FAIL: snapshot v1 of slow: %d %s" % (status, body[:200]))
    t.disk("p")

    def open_view():
        h = t.connect("slow@v1")
        h.pread(4096, 0)
        h.shutdown()

    view = Job("a client of slow@v1 (its view opens on the stopped disk)", open_view)
    settle()
    fast_client(t).wait("while slow@v1's view opens on the stopped disk")
    listing(t).wait("while slow@v1's view opens on the stopped disk")
    t.disk("r")
    view.wait("after slow's disk resumed")


SCENARIOS = (("pool", scenario_pool), ("trim", scenario_trim), ("restore", scenario_restore),
             ("view", scenario_view))


def main():
    t = Test(sys.argv[1], sys.argv[2])
    chosen = sys.argv[3:] or [name for name, _ in SCENARIOS]
    for name, fn in SCENARIOS:
        if name in chosen:
            print("--- %s" % name, flush=True)
            fn(t)
    print("ok")


if __name__ == "__main__":
    main()
