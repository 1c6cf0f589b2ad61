# SPDX-License-Identifier: MIT
"""qcow2_edit.py - damage a qcow2 image on purpose, for the check tests.

    qcow2_edit.py IMAGE refcount HOST_OFFSET VALUE
        set the refcount of the cluster at HOST_OFFSET to VALUE
    qcow2_edit.py IMAGE clear-copied GUEST_OFFSET
        clear the COPIED flag (bit 63) of the L2 entry mapping GUEST_OFFSET
    qcow2_edit.py IMAGE l2-entry GUEST_OFFSET VALUE
        overwrite the whole L2 entry mapping GUEST_OFFSET with VALUE

Only what the tests need: 16-bit refcounts, a refcount block that is
already allocated for the cluster, a guest offset whose L2 table exists.
Header fields are big-endian: l1_table_offset at byte 40,
refcount_table_offset at 48, cluster_bits at 20, refcount_order at 96.
"""
import struct
import sys

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63


def u32(f, off):
    f.seek(off)
    return struct.unpack(">I", f.read(4))[0]


def u64(f, off):
    f.seek(off)
    return struct.unpack(">Q", f.read(8))[0]


def geometry(f):
    cluster_bits = u32(f, 20)
    if u32(f, 4) < 3 or u32(f, 96) != 4:
        sys.exit("qcow2_edit: only v3 images with 16-bit refcounts")
    return 1 << cluster_bits, u64(f, 40), u64(f, 48)


def set_refcount(f, host, value):
    cluster, _, rt = geometry(f)
    index = host // cluster
    per_block = cluster // 2
    block = u64(f, rt + 8 * (index // per_block)) & OFFSET_MASK
    if not block:
        sys.exit("qcow2_edit: no refcount block for host offset %d" % host)
    f.seek(block + 2 * (index % per_block))
    f.write(struct.pack(">H", value))


def l2_entry_offset(f, guest):
    cluster, l1, _ = geometry(f)
    per_table = cluster // 8
    l2 = u64(f, l1 + 8 * (guest // cluster // per_table)) & OFFSET_MASK
    if not l2:
        sys.exit("qcow2_edit: no L2 table for guest offset %d" % guest)
    return l2 + 8 * (guest // cluster % per_table)


def set_l2_entry(f, guest, value):
    f.seek(l2_entry_offset(f, guest))
    f.write(struct.pack(">Q", value))


def clear_copied(f, guest):
    where = l2_entry_offset(f, guest)
    entry = u64(f, where)
    if not entry & COPIED:
        sys.exit("qcow2_edit: the L2 entry for %d has no COPIED flag" % guest)
    f.seek(where)
    f.write(struct.pack(">Q", entry & ~COPIED))


def main(argv):
    if len(argv) == 5 and argv[2] == "refcount":
        action, args = set_refcount, (int(argv[3], 0), int(argv[4], 0))
    elif len(argv) == 5 and argv[2] == "l2-entry":
        action, args = set_l2_entry, (int(argv[3], 0), int(argv[4], 0))
    elif len(argv) == 4 and argv[2] == "clear-copied":
        action, args = clear_copied, (int(argv[3], 0),)
    else:
        sys.exit(__doc__)
    with open(argv[1], "r+b") as f:
        action(f, *args)


if __name__ == "__main__":
    main(sys.argv)
