#!/bin/bash
# libnbd with its client-side checks off (set_strict_mode(0)) sends blockd
# the requests a careful client never would, with structured replies on
# and off, over TCP and the unix socket: reads past the end (EINVAL),
# writes past the end (ENOSPC or EINVAL, and nothing written), zero-length
# requests, unaligned ones, unknown command flags (EINVAL, nothing
# written), writes/trims/zeroes on a NAME@SNAP export (EPERM), block
# status with REQ_ONE (one extent) and without a negotiated context
# (EINVAL).  After every refused request the same connection still reads
# correctly.  An unknown export name fails to connect.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need nbdsh "$PYTHON" qemu-io
need_python_nbd

new_volume data vol 8M
# 0x42 in the first MiB, 0x43 in the last 64 KiB, nothing in between; the
# snapshot s1 holds that.
t qemu-io -f qcow2 -c 'write -P 0x42 0 1M' -c 'write -P 0x43 8128k 64k' \
	data/volumes/vol.qcow2 >/dev/null
blockctl image snapshot create data/volumes/vol.qcow2 s1 >/dev/null

start_blockd "$TMP/data"

cat >hostile.py <<'EOF'
import errno, sys
import nbd

uri, snap_uri, structured = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
failures = []
MiB = 1 << 20


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def connect(u, meta=True):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.set_request_structured_replies(structured)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(u)
    if h.get_structured_replies_negotiated() != structured:
        fail(f"structured replies negotiated: {h.get_structured_replies_negotiated()}")
    if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION) != (structured and meta):
        fail("base:allocation negotiated: {h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)}")
    return h


def alive(h, what):
    try:
        if h.pread(4096, 0) != b"\x42" * 4096 or h.pread(512, SIZE - 512) != b"\x43" * 512:
            fail(f"after {what}: good reads return wrong data")
    except nbd.Error as e:
        fail(f"after {what}: good read fails: {e}")


def refused(h, what, allowed, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum not in allowed:
            fail(f"{what}: {e.errno} ({e.string}), wanted one of {sorted(errno.errorcode[n] for n in allowed)}")
    else:
        fail(f"{what}: succeeded")
    alive(h, what)


def noop_ok(h, what, fn):
    # Zero-length requests: success (a no-op) or EINVAL, never anything else.
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != errno.EINVAL:
            fail(f"{what}: {e.errno} ({e.string})")
    alive(h, what)


h = connect(uri)
SIZE = h.get_size()
if SIZE != 8 * MiB:
    fail(f"size {SIZE}")
minimum = h.get_block_size(nbd.SIZE_MINIMUM)
E, S = errno.EINVAL, errno.ENOSPC
alive(h, "connecting")

# Out of range.
refused(h, "read at the end", {E}, lambda: h.pread(512, SIZE))
refused(h, "read across the end", {E}, lambda: h.pread(4096, SIZE - 2048))
refused(h, "read far past the end", {E}, lambda: h.pread(512, 1 << 62))
refused(h, "read with offset+length overflowing", {E}, lambda: h.pread(4096, (1 << 64) - 2048))
refused(h, "write at the end", {S, E}, lambda: h.pwrite(b"\x99" * 512, SIZE))
refused(h, "write across the end", {S, E}, lambda: h.pwrite(b"\x99" * 4096, SIZE - 2048))
refused(h, "write with offset+length overflowing", {S, E},
        lambda: h.pwrite(b"\x99" * 4096, (1 << 64) - 2048))
refused(h, "trim across the end", {S, E}, lambda: h.trim(4096, SIZE - 2048))
refused(h, "write_zeroes across the end", {S, E}, lambda: h.zero(4096, SIZE - 2048))
refused(h, "cache across the end", {E}, lambda: h.cache(4096, SIZE - 2048))
if structured:
    refused(h, "block_status across the end", {E},
            lambda: h.block_status(4096, SIZE - 2048, lambda *a: 0))
    refused(h, "block_status at the end", {E},
            lambda: h.block_status(512, SIZE, lambda *a: 0))
if h.pread(2048, SIZE - 2048) != b"\x43" * 2048:
    fail("a refused write across the end wrote its first half")

# Zero length.
noop_ok(h, "zero-length read", lambda: h.pread(0, 4096))
noop_ok(h, "zero-length read at the end", lambda: h.pread(0, SIZE))
noop_ok(h, "zero-length write", lambda: h.pwrite(b"", 4096))
noop_ok(h, "zero-length trim", lambda: h.trim(0, 4096))
noop_ok(h, "zero-length write_zeroes", lambda: h.zero(0, 4096))
noop_ok(h, "zero-length cache", lambda: h.cache(0, 4096))
noop_ok(h, "zero-length FUA write", lambda: h.pwrite(b"", 8192, nbd.CMD_FLAG_FUA))
if structured:
    noop_ok(h, "zero-length block_status", lambda: h.block_status(0, 4096, lambda *a: 0))

# Unaligned offsets and lengths (blockd advertises its minimum block size;
# below it requests are refused, at or above it they work).
if minimum > 1:
    refused(h, "unaligned read", {E}, lambda: h.pread(1001, 100))
    refused(h, "unaligned write", {E}, lambda: h.pwrite(b"\x77" * 1000, 3001))
else:
    if h.pread(1001, 100) != b"\x42" * 1001:
        fail("unaligned read")
    h.pwrite(b"\x77" * 1000, 3001)
    got = h.pread(3002, 3000)
    if got != b"\x42" + b"\x77" * 1000 + b"\x42" * 2001:
        fail("unaligned write: neighbours or data wrong")
    h.pwrite(b"\x42" * 1000, 3001)
    h.pwrite(b"\x55" * 1, 2 * MiB + 65535)
    if h.pread(3, 2 * MiB + 65534) != b"\x00\x55\x00":
        fail("one-byte write across nothing: wrong data")
    h.zero(1, 2 * MiB + 65535)
    alive(h, "unaligned requests")

# Unknown command flags: refused, and the write not done.
for bit in (1 << 6, 1 << 8, 1 << 15):
    refused(h, f"read with unknown flag {bit:#x}", {E}, lambda: h.pread(512, 0, bit))
    refused(h, f"write with unknown flag {bit:#x}", {E},
            lambda: h.pwrite(b"\x99" * 512, 0, bit))
    refused(h, f"trim with unknown flag {bit:#x}", {E}, lambda: h.trim(4096, 0, bit))
    refused(h, f"flush with unknown flag {bit:#x}", {E}, lambda: h.flush(bit))
    refused(h, f"write_zeroes with unknown flag {bit:#x}", {E}, lambda: h.zero(4096, 0, bit))
    refused(h, f"cache with unknown flag {bit:#x}", {E}, lambda: h.cache(4096, 0, bit))
    if structured:
        refused(h, f"block_status with unknown flag {bit:#x}", {E},
                lambda: h.block_status(4096, 0, lambda *a: 0, bit))
if h.pread(512, 0) != b"\x42" * 512:
    fail("a write with an unknown flag was carried out")

# The flags blockd does accept work (on a scratch range at 5 MiB).
h.pwrite(b"\x66" * 3 * 65536, 5 * MiB, nbd.CMD_FLAG_FUA)
h.zero(65536, 5 * MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
try:
    h.zero(65536, 5 * MiB + 65536, nbd.CMD_FLAG_FAST_ZERO)
except nbd.Error as e:
    if e.errnum != errno.ENOTSUP:
        fail(f"write_zeroes with FAST_ZERO: {e.errno} ({e.string})")
    h.zero(65536, 5 * MiB + 65536)
h.trim(65536, 5 * MiB + 2 * 65536, nbd.CMD_FLAG_FUA)
h.cache(65536, 5 * MiB)
if h.pread(2 * 65536, 5 * MiB) != bytes(2 * 65536):
    fail("write_zeroes with NO_HOLE/FUA/FAST_ZERO did not zero")
alive(h, "valid flags")

# Block status.
if structured:
    for off, want in ((0, 0), (4 * MiB, 3)):
        seen = []
        h.block_status(4 * MiB, off, lambda ctx, o, ents, err: seen.append((ctx, o, list(ents))) or 0,
                       nbd.CMD_FLAG_REQ_ONE)
        if len(seen) != 1 or seen[0][0] != "base:allocation" or len(seen[0][2]) != 2:
            fail(f"block_status REQ_ONE at {off}: {seen}")
        else:
            length, flags = seen[0][2]
            if not 0 < length <= min(4 * MiB, 8128 * 1024 - off) or flags != want:
                fail(f"block_status REQ_ONE at {off}: extent {length} flags {flags}, wanted {want}")
        if off == 0 and seen and seen[0][2] and seen[0][2][0] > MiB:
            fail(f"block_status REQ_ONE: data extent {seen[0][2][0]} longer than the data")
    alive(h, "block_status")
# DF: fine with structured replies, EINVAL without.
if structured:
    if h.pread(512, 0, nbd.CMD_FLAG_DF) != b"\x42" * 512:
        fail("read with DF: wrong data")
else:
    refused(h, "read with DF without structured replies", {E},
            lambda: h.pread(512, 0, nbd.CMD_FLAG_DF))
h.flush()
h.shutdown()

# Block status without base:allocation negotiated.
h = connect(uri, meta=False)
refused(h, "block_status without a negotiated context", {E},
        lambda: h.block_status(4096, 0, lambda *a: 0))
h.shutdown()

# The snapshot is read-only.
r = connect(snap_uri)
if not r.is_read_only():
    fail("snapshot export not read-only")
SIZE = r.get_size()
alive(r, "connecting to the snapshot")
refused(r, "write to the snapshot", {errno.EPERM}, lambda: r.pwrite(b"\x99" * 4096, 0))
refused(r, "FUA write to the snapshot", {errno.EPERM},
        lambda: r.pwrite(b"\x99" * 4096, 0, nbd.CMD_FLAG_FUA))
refused(r, "trim on the snapshot", {errno.EPERM, E}, lambda: r.trim(4096, 0))
refused(r, "write_zeroes on the snapshot", {errno.EPERM, E}, lambda: r.zero(4096, 0))
refused(r, "write past the end of the snapshot", {errno.EPERM, S, E},
        lambda: r.pwrite(b"\x99" * 4096, SIZE))
r.flush()
r.shutdown()

# The refused writes really were not done: new connections see the data.
for u in (uri, snap_uri):
    h = connect(u)
    SIZE = h.get_size()
    alive(h, "reconnecting")
    h.shutdown()

if failures:
    sys.exit(1)
EOF

for uri_of in tcp_uri unix_uri; do
	for structured in 1 0; do
		sys_python hostile.py "$($uri_of vol)" "$($uri_of vol@s1)" "$structured" ||
			fail "hostile requests over $uri_of (structured replies $structured)"
	done
done

# Unknown exports: the connection fails, with nbdsh and nbdinfo.
for name in nosuch vol@nosuch 'vol@' '../vol'; do
	if t nbdsh -u "$(tcp_uri "$name")" -c 'h.pread(512, 0)' 2>/dev/null; then
		fail "nbdsh connected to the unknown export '$name'"
	fi
	if t nbdinfo "$(unix_uri "$name")" >/dev/null 2>&1; then
		fail "nbdinfo connected to the unknown export '$name'"
	fi
done
t nbdsh -u "$(tcp_uri vol)" -c 'assert h.pread(512, 0) == b"\x42" * 512' ||
	fail "nbdsh cannot read a good export (the checks above prove nothing)"

stop_blockd
qemu_check data/volumes/vol.qcow2
