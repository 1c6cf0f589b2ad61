# SPDX-License-Identifier: MIT
"""crash_client.py - the NBD client of crash_kill9.sh.

  crash_client.py run URI SIZE JOURNAL SEED FIRST_ID READY_FILE
      Opens several connections to the export (multi-conn) and, from one
      thread per connection, sends random WRITE, WRITE_ZEROES and TRIM
      requests (some with FUA) and now and then a FLUSH, until the server
      goes away (the test kills it) or a time limit passes.  Every request
      is written to JOURNAL before it is sent and again when it is
      acknowledged; the journal is fsynced after every acknowledged FLUSH
      and FUA request, so it always holds at least what the server has
      promised is durable.

  crash_client.py verify URI SIZE JOURNAL BASELINE
      Rebuilds from BASELINE (what each sector held at the start of the
      round; all zeros if the file does not exist) and JOURNAL the set of
      values each 512-byte sector may hold after the crash, reads the whole
      export and checks every sector.  Then it flushes and stores what it
      read as the baseline of the next round.

The model.  Every written sector holds a recognisable value: the request
id and the sector number, repeated.  Requests that overlap are never in
flight together (the client waits), so the requests touching one sector
form a sequence.  A request is durable once the server acknowledged it
with FUA, or once a FLUSH sent after its acknowledgement (on any
connection: multi-conn) was acknowledged.  After a crash a sector may hold
the value of its last durable request or of any request after that one,
acknowledged or still in flight, and nothing else: not an older value, not
another sector's data, not garbage.  A TRIM may leave the old value or
zeros.
"""

import os
import random
import struct
import sys
import threading
import time

import nbd

SECTOR = 512
ZERO_SECTOR = bytes(SECTOR)
CONNECTIONS = 3
MAX_SECONDS = 30
GARBAGE = -1


def sector_bytes(req_id, sector):
    """The 512 bytes request req_id writes to sector."""
    return struct.pack("<QQ", req_id, sector) * (SECTOR // 16)


def payload(req_id, offset, length):
    first = offset // SECTOR
    return b"".join(sector_bytes(req_id, s) for s in range(first, first + length // SECTOR))


def decode(data, sector):
    """Which value a sector read back holds: 0 (zeros), a request id, or GARBAGE."""
    if data == ZERO_SECTOR:
        return 0
    req_id, where = struct.unpack_from("<QQ", data)
    if where == sector and data == sector_bytes(req_id, sector):
        return req_id
    return GARBAGE


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


class Journal:
    """Append-only log of requests; its line order is the order of events."""

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def log(self, line):
        self.file.write(line + "\n")

    def sync(self):
        self.file.flush()
        os.fsync(self.file.fileno())


class Writer:
    def __init__(self, uri, size, journal, seed, first_id):
        self.uri = uri
        self.size = size
        self.journal = Journal(journal)
        self.rng = random.Random(seed)
        self.next_id = first_id
        self.lock = threading.Condition()
        self.in_flight = {}  # request id -> (first sector, end sector)
        self.stop = False
        self.server_errors = []
        self.sent = 0
        self.acked = 0
        self.flushes = 0
        self.name = os.path.basename(journal)

    def pick(self, rng):
        """A random request: kind, offset, length (sector aligned), FUA."""
        r = rng.random()
        if r < 0.6:
            length = rng.randint(1, 32) * SECTOR  # 512 B .. 16 KiB
        elif r < 0.9:
            length = rng.randint(32, 512) * SECTOR  # .. 256 KiB
        else:
            length = rng.randint(512, 2048) * SECTOR  # .. 1 MiB
        if rng.random() < 0.5:
            # A hot area, so that requests overwrite each other.
            area = min(8 << 20, self.size)
        else:
            area = self.size
        length = min(length, area)
        offset = rng.randrange(0, (area - length) // SECTOR + 1) * SECTOR
        r = rng.random()
        kind = "W" if r < 0.78 else "Z" if r < 0.90 else "T"
        fua = rng.random() < 0.05
        return kind, offset, length, fua

    def begin(self, kind, offset, length, fua):
        """Waits until no request in flight overlaps, then journals this one."""
        first, end = offset // SECTOR, (offset + length) // SECTOR
        with self.lock:
            while any(f < end and first < e for f, e in self.in_flight.values()):
                self.lock.wait()
            req_id = self.next_id
            self.next_id += 1
            self.in_flight[req_id] = (first, end)
            self.sent += 1
            self.journal.log(f"S {req_id} {kind} {offset} {length} {int(fua)}")
        return req_id

    def end(self, req_id, fua):
        with self.lock:
            del self.in_flight[req_id]
            self.journal.log(f"A {req_id}")
            self.acked += 1
            if fua:
                self.journal.sync()
            self.lock.notify_all()

    def forget(self, req_id):
        """A request that failed: it stays in the journal as possibly landed."""
        with self.lock:
            del self.in_flight[req_id]
            self.lock.notify_all()

    def flush(self, h, flush_id):
        with self.lock:
            self.journal.log(f"FS {flush_id}")
        h.flush()
        with self.lock:
            self.journal.log(f"FA {flush_id}")
            self.journal.sync()
            self.flushes += 1

    def failed(self, h, what, err):
        """Records an error reply; a dead connection is the kill, not an error."""
        if h.aio_is_dead() or h.aio_is_closed():
            return
        with self.lock:
            self.server_errors.append(f"{what}: {err.string} ({err.errno})")
            self.journal.log(f"E {what}: {err.string}")

    def worker(self, index, h):
        rng = random.Random(self.rng.random())
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop and time.monotonic() < deadline:
            if rng.random() < 0.015:
                flush_id = f"{index}.{rng.getrandbits(32):08x}"
                try:
                    self.flush(h, flush_id)
                except nbd.Error as err:
                    self.failed(h, f"FLUSH {flush_id}", err)
                    break
                continue
            kind, offset, length, fua = self.pick(rng)
            req_id = self.begin(kind, offset, length, fua)
            flags = nbd.CMD_FLAG_FUA if fua else 0
            try:
                if kind == "W":
                    h.pwrite(payload(req_id, offset, length), offset, flags)
                elif kind == "Z":
                    if rng.random() < 0.5:
                        flags |= nbd.CMD_FLAG_NO_HOLE
                    h.zero(length, offset, flags)
                else:
                    h.trim(length, offset, flags)
            except nbd.Error as err:
                self.forget(req_id)
                self.failed(h, f"{kind} id {req_id} offset {offset} length {length}", err)
                break
            self.end(req_id, fua)
        self.stop = True

    def run(self, ready_file):
        handles = [connect(self.uri) for _ in range(CONNECTIONS)]
        for h in handles:
            if h.get_size() != self.size:
                sys.exit(f"export size {h.get_size()}, expected {self.size}")
            if not (h.can_multi_conn() and h.can_flush() and h.can_fua()
                    and h.can_trim() and h.can_zero()):
                sys.exit("the export must offer multi-conn, FLUSH, FUA, TRIM and WRITE_ZEROES")
        threads = [threading.Thread(target=self.worker, args=(i, h))
                   for i, h in enumerate(handles)]
        for t in threads:
            t.start()
        with open(ready_file, "w") as f:
            f.write("connected\n")
        for t in threads:
            t.join()
        self.journal.sync()
        print(f"{self.name}: {self.acked} requests and {self.flushes} flushes acknowledged, "
              f"{self.sent - self.acked} unanswered")
        if self.server_errors:
            for e in self.server_errors:
                print(f"{self.name}: the server failed a request: {e}", file=sys.stderr)
            return 1
        return 0


class Model:
    """Per sector: the values it may hold after the crash."""

    def __init__(self, sectors, baseline):
        # lv[s]: what the sector holds if nothing crashed (a set because of
        # TRIM); may[s]: what it may hold after the crash.
        self.baseline = baseline
        self.lv = [frozenset((v,)) for v in baseline]
        self.may = [set(v) for v in self.lv]
        self.history = {}  # sector -> [(request id, kind, durable)] for messages

    @staticmethod
    def replay(path):
        """Requests in send order with their durability, from a journal."""
        requests = {}  # id -> [kind, offset, length, fua, acked_at]
        order = []
        flush_sent = {}
        last_durable_flush = -1  # the latest send position of an acknowledged FLUSH
        with open(path) as f:
            for pos, line in enumerate(f):
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "S":
                    req_id = int(parts[1])
                    requests[req_id] = [parts[2], int(parts[3]), int(parts[4]),
                                        parts[5] == "1", None]
                    order.append(req_id)
                elif parts[0] == "A":
                    requests[int(parts[1])][4] = pos
                elif parts[0] == "FS":
                    flush_sent[parts[1]] = pos
                elif parts[0] == "FA":
                    last_durable_flush = max(last_durable_flush, flush_sent[parts[1]])
        result = []
        for req_id in order:
            kind, offset, length, fua, acked_at = requests[req_id]
            durable = acked_at is not None and (fua or acked_at < last_durable_flush)
            result.append((req_id, kind, offset, length, durable, acked_at is not None))
        return result

    def apply(self, req_id, kind, offset, length, durable):
        for s in range(offset // SECTOR, (offset + length) // SECTOR):
            if kind == "W":
                lv = frozenset((req_id,))
            elif kind == "Z":
                lv = frozenset((0,))
            else:
                lv = self.lv[s] | {0}
            self.lv[s] = lv
            if durable:
                self.may[s] = set(lv)
            else:
                self.may[s] |= lv
            self.history.setdefault(s, []).append((req_id, kind, durable))


def read_baseline(path, sectors):
    if not os.path.exists(path):
        return [0] * sectors
    with open(path, "rb") as f:
        data = f.read()
    return list(struct.unpack(f"<{sectors}q", data))


def verify(uri, size, journal, baseline_path):
    sectors = size // SECTOR
    model = Model(sectors, read_baseline(baseline_path, sectors))
    requests = Model.replay(journal)
    for req_id, kind, offset, length, durable, acked in requests:
        model.apply(req_id, kind, offset, length, durable)
    ndurable = sum(1 for r in requests if r[4])
    nacked = sum(1 for r in requests if r[5])
    name = os.path.basename(journal)
    print(f"{name}: {len(requests)} requests journalled, {nacked} acknowledged, "
          f"{ndurable} durable")

    h = connect(uri)
    if h.get_size() != size:
        sys.exit(f"export size {h.get_size()} after the restart, expected {size}")
    seen = [0] * sectors
    bad = []
    chunk = 1 << 20
    for offset in range(0, size, chunk):
        data = h.pread(min(chunk, size - offset), offset)
        for i in range(len(data) // SECTOR):
            s = offset // SECTOR + i
            value = decode(data[i * SECTOR:(i + 1) * SECTOR], s)
            seen[s] = value
            if value not in model.may[s]:
                bad.append((s, value, data[i * SECTOR:i * SECTOR + 32]))
    for s, value, head in bad[:10]:
        what = "garbage " + head.hex() if value == GARBAGE else f"value {value}"
        print(f"{name}: sector {s} (offset {s * SECTOR}) holds {what}, "
              f"allowed {sorted(model.may[s])}", file=sys.stderr)
        print(f"  held {model.baseline[s]} before the round, then requests "
              f"(id, kind, durable): {model.history.get(s, [])}", file=sys.stderr)
    if bad:
        print(f"{name}: {len(bad)} sectors hold what they may not", file=sys.stderr)
        return 1
    # What the disk holds now becomes the baseline, once durable.
    h.flush()
    h.shutdown()
    with open(baseline_path + ".new", "wb") as f:
        f.write(struct.pack(f"<{sectors}q", *seen))
        f.flush()
        os.fsync(f.fileno())
    os.replace(baseline_path + ".new", baseline_path)
    written = sum(1 for v in seen if v > 0)
    print(f"{name}: all {sectors} sectors hold allowed values ({written} written)")
    return 0


def main(argv):
    if len(argv) == 8 and argv[1] == "run":
        _, _, uri, size, journal, seed, first_id, ready = argv
        w = Writer(uri, int(size), journal, int(seed), int(first_id))
        return w.run(ready)
    if len(argv) == 6 and argv[1] == "verify":
        _, _, uri, size, journal, baseline = argv
        return verify(uri, int(size), journal, baseline)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
