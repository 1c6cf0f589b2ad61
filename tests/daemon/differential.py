# SPDX-License-Identifier: MIT
"""differential.py - the same random NBD requests to blockd and to qemu-nbd.

  differential.py SEED OPS URI_A URI_B SHADOW_OUT [INITIAL_RAW]

Sends OPS seeded random requests (READ, WRITE, WRITE_ZEROES with and
without NO_HOLE and FAST_ZERO, TRIM, FLUSH, BLOCK_STATUS, CACHE, with FUA
here and there, at unaligned offsets and lengths, some past the end of the
disk) first to export A (blockd), then to export B (qemu-nbd), over two
connections each.  Both must answer alike: every read byte for byte, every
error with the same errno.  Both are also checked against a model of the
disk (INITIAL_RAW, the backing file's contents, or zeros): reads must
match it, and a BLOCK_STATUS extent marked ZERO must read as zeros.  At the
end the model is written to SHADOW_OUT for qemu-img compare.

Past the end of the disk, blockd must answer as the spec says (ENOSPC for
WRITE and WRITE_ZEROES, EINVAL otherwise); qemu-nbd 7.2 answers EINVAL
for WRITE_ZEROES, which is tolerated.  Also tolerated, because the NBD
spec allows it: a FAST_ZERO request that is not cluster-aligned may fail
with ENOTSUP on one server only (the client then falls back to a plain
WRITE_ZEROES, as real clients do); BLOCK_STATUS extents may differ in
length and in the HOLE and ZERO hints.
"""

import os
import random
import sys

import nbd

CLUSTER = 65536
CONNECTIONS = 2
DEBUG = "DEBUG" in os.environ  # print what is tolerated


def connect(uri):
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    # Let out-of-bounds and unaligned requests reach the server: its answer
    # is what we compare, not libnbd's.
    h.set_strict_mode(h.get_strict_mode() & ~(nbd.STRICT_BOUNDS | nbd.STRICT_ALIGN))
    return h


def flag_names(flags):
    names = [n for n, f in (("FUA", nbd.CMD_FLAG_FUA), ("NO_HOLE", nbd.CMD_FLAG_NO_HOLE),
                            ("FAST_ZERO", nbd.CMD_FLAG_FAST_ZERO), ("DF", nbd.CMD_FLAG_DF),
                            ("REQ_ONE", nbd.CMD_FLAG_REQ_ONE)) if flags & f]
    return "|".join(names) or "0"


class Mismatch(Exception):
    pass


class Server:
    def __init__(self, name, uri):
        self.name = name
        self.handles = [connect(uri) for _ in range(CONNECTIONS)]
        h = self.handles[0]
        self.size = h.get_size()
        self.caps = {c: getattr(h, c)() for c in (
            "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache",
            "can_df", "can_multi_conn", "is_read_only")}
        self.caps["base:allocation"] = h.can_meta_context("base:allocation")
        self.block_sizes = [h.get_block_size(k) for k in (
            nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM)]

    def check_chunks(self, off, length, flags, chunks):
        """The chunks of a read cover it exactly once (one chunk with DF)."""
        pos = off
        for offset, count, status in sorted(chunks):
            if offset != pos or status not in (nbd.READ_DATA, nbd.READ_HOLE) or count == 0:
                raise Mismatch(f"{self.name}: read {off}+{length}: bad chunks {chunks}")
            pos += count
        if pos != off + length or (flags & nbd.CMD_FLAG_DF and len(chunks) != 1):
            raise Mismatch(f"{self.name}: read {off}+{length} flags {flag_names(flags)}: "
                           f"chunks {chunks}")

    def do(self, conn, op):
        """Runs op on one connection: ('ok', result) or ('err', errno name)."""
        h = self.handles[conn]
        kind, off, length, flags = op[:4]
        try:
            if kind == "read":
                chunks = []

                def chunk(subbuf, offset, status, err):
                    chunks.append((offset, len(subbuf), status))
                    return 0
                data = h.pread_structured(length, off, chunk, flags)
                self.check_chunks(off, length, flags, chunks)
                return "ok", data
            if kind == "write":
                h.pwrite(op[4], off, flags)
            elif kind == "zero":
                h.zero(length, off, flags)
            elif kind == "trim":
                h.trim(length, off, flags)
            elif kind == "flush":
                h.flush()
            elif kind == "cache":
                h.cache(length, off)
            elif kind == "status":
                extents = []

                def cb(context, offset, entries, err):
                    if context == "base:allocation":
                        extents.append((offset, list(entries)))
                    return 0
                h.block_status(length, off, cb, flags)
                return "ok", extents
            return "ok", None
        except nbd.Error as e:
            if not h.aio_is_ready():
                raise Mismatch(f"{self.name}: the connection died: {e.string}")
            return "err", e.errno or str(e.errnum)


class Differential:
    def __init__(self, seed, a, b, initial):
        self.rng = random.Random(seed)
        self.a, self.b = a, b
        self.size = a.size
        self.shadow = bytearray(self.size)
        if initial:
            with open(initial, "rb") as f:
                data = f.read(self.size)
            self.shadow[:len(data)] = data
        self.log = []  # (op number, description) of every request, for messages
        self.counts = {}
        self.fast_zero_divergence = 0
        self.status_hint_divergence = 0
        self.errno_divergence = 0
        self.use_fast_zero = a.caps["can_fast_zero"] and b.caps["can_fast_zero"]

    # --- picking requests

    def offset_length(self, max_len):
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            # Cluster-aligned.
            length = rng.randint(1, max(1, max_len // CLUSTER)) * CLUSTER
            off = rng.randrange(0, self.size // CLUSTER) * CLUSTER
        elif r < 0.30:
            # Sector-aligned.
            length = rng.randint(1, max_len // 512) * 512
            off = rng.randrange(0, self.size // 512) * 512
        else:
            # Byte-granular, often small.
            length = rng.randint(1, rng.choice((64, 4096, max_len)))
            off = rng.randrange(0, self.size)
        if rng.random() < 0.6:
            # Mostly the first 8 MiB, so requests overlap.
            off %= 8 << 20
        if rng.random() < 0.05:
            off = self.size - length  # up to the last byte
        off = max(0, min(off, self.size - 1))
        length = max(1, min(length, self.size - off))
        return off, length

    def out_of_bounds(self):
        rng = self.rng
        kind = rng.choice(("read", "write", "zero", "trim", "cache", "status"))
        if rng.random() < 0.5:
            off = self.size - rng.randint(0, 4096)
            length = rng.randint(self.size - off + 1, self.size - off + 8192)
        else:
            off = self.size + rng.randint(0, 1 << 20)
            length = rng.randint(1, 4096)
        op = [kind, off, length, 0]
        if kind == "write":
            op.append(rng.randbytes(length))
        return op

    def pick(self):
        rng = self.rng
        r = rng.random()
        fua = nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0
        if r < 0.28:
            off, length = self.offset_length(256 << 10)
            flags = nbd.CMD_FLAG_DF if rng.random() < 0.1 else 0
            return ["read", off, length, flags]
        if r < 0.52:
            off, length = self.offset_length(256 << 10)
            data = rng.randbytes(length) if rng.random() < 0.9 else bytes(length)
            return ["write", off, length, fua, data]
        if r < 0.64:
            off, length = self.offset_length(4 << 20)
            flags = fua
            if rng.random() < 0.4:
                flags |= nbd.CMD_FLAG_NO_HOLE
            if self.use_fast_zero and rng.random() < 0.3:
                flags |= nbd.CMD_FLAG_FAST_ZERO
            return ["zero", off, length, flags]
        if r < 0.72:
            off, length = self.offset_length(4 << 20)
            return ["trim", off, length, fua]
        if r < 0.75:
            return ["flush", 0, 0, 0]
        if r < 0.86:
            off, length = self.offset_length(8 << 20)
            flags = nbd.CMD_FLAG_REQ_ONE if rng.random() < 0.2 else 0
            return ["status", off, length, flags]
        if r < 0.90:
            off, length = self.offset_length(4 << 20)
            return ["cache", off, length, 0]
        if r < 0.96:
            return self.out_of_bounds()
        if r < 0.995:
            off, length = self.offset_length(4 << 20)
            return ["read", off, length, 0]
        return ["readall", 0, self.size, 0]

    # --- the model

    def apply(self, op):
        kind, off, length = op[:3]
        if kind == "write":
            self.shadow[off:off + length] = op[4]
        elif kind == "zero":
            self.shadow[off:off + length] = bytes(length)
        elif kind == "trim":
            # Whole clusters read as zeros afterwards; partial ones are kept.
            first = -(-off // CLUSTER) * CLUSTER
            end = (off + length) // CLUSTER * CLUSTER
            if end > first:
                self.shadow[first:end] = bytes(end - first)

    # --- checking

    def fail(self, n, op, what):
        lines = [f"op {n}: {self.describe(op)}: {what}", "recent requests:"]
        lines += [f"  op {i}: {d}" for i, d in self.log[-25:]]
        raise Mismatch("\n".join(lines))

    @staticmethod
    def describe(op):
        kind, off, length, flags = op[:4]
        if kind == "flush":
            return "flush"
        return f"{kind} offset {off} length {length} flags {flag_names(flags)}"

    def first_difference(self, x, y):
        for i in range(min(len(x), len(y))):
            if x[i] != y[i]:
                return i
        return min(len(x), len(y))

    def check_read(self, n, op, got_a, got_b, off):
        if got_a != got_b:
            i = self.first_difference(got_a, got_b)
            self.fail(n, op, f"blockd and qemu-nbd differ at offset {off + i}: "
                      f"blockd {got_a[i:i + 16].hex()}, qemu-nbd {got_b[i:i + 16].hex()}")
        want = bytes(self.shadow[off:off + len(got_a)])
        if got_a != want:
            i = self.first_difference(got_a, want)
            self.fail(n, op, f"both servers differ from the model at offset {off + i}: "
                      f"read {got_a[i:i + 16].hex()}, model {want[i:i + 16].hex()}")

    def check_status(self, n, op, server, extents):
        kind, off, length, flags = op[:4]
        if len(extents) != 1 or extents[0][0] != off:
            self.fail(n, op, f"{server.name}: base:allocation answered {extents}")
        entries = extents[0][1]
        if not entries or len(entries) % 2:
            self.fail(n, op, f"{server.name}: bad extent list {entries}")
        if flags & nbd.CMD_FLAG_REQ_ONE and len(entries) != 2:
            self.fail(n, op, f"{server.name}: REQ_ONE answered {len(entries) // 2} extents")
        pos = off
        for i in range(0, len(entries), 2):
            ext_len, ext_flags = entries[i], entries[i + 1]
            if ext_len == 0:
                self.fail(n, op, f"{server.name}: an empty extent in {entries}")
            end = min(pos + ext_len, self.size)
            if pos + ext_len > self.size:
                self.fail(n, op, f"{server.name}: extent past the end: {entries}")
            if i + 2 < len(entries) and pos + ext_len > off + length:
                self.fail(n, op, f"{server.name}: a non-final extent past the request")
            if ext_flags & nbd.STATE_ZERO and self.shadow[pos:end].strip(b"\0"):
                self.fail(n, op, f"{server.name}: extent {pos}+{ext_len} flagged ZERO "
                          f"holds data")
            pos += ext_len
        return entries

    def status_map(self, off, entries, limit):
        """Per-512-byte flags of a reply, for comparing the two servers' hints."""
        flags = []
        pos = off
        for i in range(0, len(entries), 2):
            for p in range(pos, min(pos + entries[i], limit), 512):
                flags.append(entries[i + 1])
            pos += entries[i]
        return flags

    def run_op(self, n, op):
        kind, off, length, flags = op[:4]
        conn = self.rng.randrange(CONNECTIONS)
        self.log.append((n, f"conn {conn} " + self.describe(op)))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "readall":
            for start in range(0, self.size, 8 << 20):
                part = ["read", start, min(8 << 20, self.size - start), 0]
                ra, rb = self.a.do(conn, part), self.b.do(conn, part)
                if ra[0] != "ok" or rb[0] != "ok":
                    self.fail(n, part, f"blockd {ra[0]} {ra[1] if ra[0] == 'err' else ''}, "
                              f"qemu-nbd {rb[0]} {rb[1] if rb[0] == 'err' else ''}")
                self.check_read(n, part, ra[1], rb[1], start)
            return
        ra = self.a.do(conn, op)
        rb = self.b.do(conn, op)
        in_bounds = off + length <= self.size

        if kind == "zero" and flags & nbd.CMD_FLAG_FAST_ZERO and in_bounds and \
                (ra[0] == "err" or rb[0] == "err"):
            for server, res in ((self.a, ra), (self.b, rb)):
                if res[0] == "err" and res[1] != "ENOTSUP":
                    self.fail(n, op, f"{server.name}: FAST_ZERO failed with {res[1]}, "
                              f"not ENOTSUP")
            aligned = off % CLUSTER == 0 and length % CLUSTER == 0
            if ra[0] != rb[0]:
                if aligned:
                    self.fail(n, op, f"cluster-aligned FAST_ZERO: blockd {ra}, qemu-nbd {rb}")
                self.fast_zero_divergence += 1
                if DEBUG:
                    print(f"op {n}: {self.describe(op)}: blockd {ra}, qemu-nbd {rb}")
            # The client falls back to writing zeros the slow way, on both
            # (a failed request may have zeroed part of the range).
            plain = ["zero", off, length, flags & ~nbd.CMD_FLAG_FAST_ZERO]
            self.log.append((n, f"conn {conn} fallback " + self.describe(plain)))
            ra, rb = self.a.do(conn, plain), self.b.do(conn, plain)

        if not in_bounds:
            # The spec: ENOSPC for a write (or zeroing) past the end, EINVAL
            # for anything else.  blockd must say exactly that; qemu-nbd 7.2
            # says EINVAL for WRITE_ZEROES, the same kind of error.
            want = "ENOSPC" if kind in ("write", "zero") else "EINVAL"
            if ra != ("err", want):
                self.fail(n, op, f"past the end of the disk: blockd answered {ra[0]} "
                          f"{ra[1] if ra[0] == 'err' else ''}, wanted {want}")
            if rb[0] != "err" or rb[1] not in ("EINVAL", "ENOSPC"):
                self.fail(n, op, f"past the end of the disk: qemu-nbd answered {rb}")
            if rb[1] != want:
                self.errno_divergence += 1
            return
        if ra[0] != rb[0] or (ra[0] == "err" and ra[1] != rb[1]):
            self.fail(n, op, f"blockd answered {ra[0]} {ra[1] if ra[0] == 'err' else ''}, "
                      f"qemu-nbd {rb[0]} {rb[1] if rb[0] == 'err' else ''}")
        if ra[0] == "err":
            self.fail(n, op, f"both servers failed with {ra[1]}")
        if kind == "read":
            self.check_read(n, op, ra[1], rb[1], off)
        elif kind == "status":
            ea = self.check_status(n, op, self.a, ra[1])
            eb = self.check_status(n, op, self.b, rb[1])
            limit = off + length
            ma, mb = self.status_map(off, ea, limit), self.status_map(off, eb, limit)
            if ma[:min(len(ma), len(mb))] != mb[:min(len(ma), len(mb))]:
                self.status_hint_divergence += 1
                if DEBUG:
                    print(f"op {n}: {self.describe(op)}: blockd {ea[:8]} qemu-nbd {eb[:8]}")
        else:
            self.apply(op)
        # A write seen by one connection is seen by the other (multi-conn).
        if kind in ("write", "zero", "trim") and self.rng.random() < 0.2:
            other = (conn + 1) % CONNECTIONS
            check = ["read", off, length, 0]
            self.log.append((n, f"conn {other} read back"))
            ra, rb = self.a.do(other, check), self.b.do(other, check)
            if ra[0] != "ok" or rb[0] != "ok":
                self.fail(n, check, f"read back: blockd {ra[0]}, qemu-nbd {rb[0]}")
            self.check_read(n, check, ra[1], rb[1], off)


def main(argv):
    if len(argv) not in (6, 7):
        print(__doc__, file=sys.stderr)
        return 2
    seed, ops = int(argv[1]), int(argv[2])
    a = Server("blockd", argv[3])
    b = Server("qemu-nbd", argv[4])
    shadow_out = argv[5]
    initial = argv[6] if len(argv) == 7 else None
    print(f"differential: seed {seed}, {ops} requests, size {a.size}")
    if a.size != b.size:
        print(f"FAIL: sizes differ: blockd {a.size}, qemu-nbd {b.size}", file=sys.stderr)
        return 1
    for cap in a.caps:
        if a.caps[cap] != b.caps[cap]:
            print(f"note: {cap}: blockd {a.caps[cap]}, qemu-nbd {b.caps[cap]}")
    print(f"block sizes (min, preferred, max): blockd {a.block_sizes}, "
          f"qemu-nbd {b.block_sizes}")
    for need in ("can_flush", "can_fua", "can_trim", "can_zero", "can_cache",
                 "can_multi_conn", "base:allocation"):
        if not a.caps[need]:
            print(f"FAIL: blockd does not offer {need}", file=sys.stderr)
            return 1
    d = Differential(seed, a, b, initial)
    try:
        # Start and end with the whole disk.
        d.run_op(0, ["readall", 0, d.size, 0])
        for n in range(1, ops + 1):
            d.run_op(n, d.pick())
        d.run_op(ops + 1, ["flush", 0, 0, 0])
        d.run_op(ops + 2, ["readall", 0, d.size, 0])
    except Mismatch as e:
        print(f"FAIL (seed {seed}): {e}", file=sys.stderr)
        if not str(e).startswith("op "):
            print("recent requests:", file=sys.stderr)
            for i, desc in d.log[-25:]:
                print(f"  op {i}: {desc}", file=sys.stderr)
        return 1
    for server in (a, b):
        for h in server.handles:
            h.shutdown()
    with open(shadow_out, "wb") as f:
        f.write(d.shadow)
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(d.counts.items())))
    print(f"tolerated: {d.fast_zero_divergence} unaligned FAST_ZERO answered differently, "
          f"{d.status_hint_divergence} BLOCK_STATUS replies with other hints, "
          f"{d.errno_divergence} out-of-bounds errors where qemu-nbd strays from the spec")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
