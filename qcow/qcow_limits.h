/* SPDX-License-Identifier: MIT */
/*
 * qcow_limits.h - every cap the qcow library puts on sizes read from an image or
 * asked for by a caller, with the reason for each.  An image beyond a cap is
 * refused with a message; nothing here is allocated before it is checked.
 */
#ifndef BLOCKD_QCOW_LIMITS_H
#define BLOCKD_QCOW_LIMITS_H

/* Cluster sizes qemu accepts: 512 B .. 2 MiB. */
#define QCOW_MIN_CLUSTER_BITS 9
#define QCOW_MAX_CLUSTER_BITS 21

/* qemu's limits, so every image we accept is one qemu opens too. */
#define QCOW_MAX_L1_BYTES             (32u << 20)
#define QCOW_MAX_REFTABLE_BYTES       (8u << 20)
#define QCOW_MAX_SNAPSHOTS            65536u
#define QCOW_MAX_SNAPSHOT_TABLE_BYTES (64u << 20)
#define QCOW_MAX_BACKING_NAME         1023u

/*
 * All snapshot L1 tables together: 256 MiB maps 2 PiB at 64 KiB clusters,
 * yet bounds what open reads and records for a crafted snapshot table.
 */
#define QCOW_MAX_SNAPSHOT_L1_BYTES (256u << 20)

/* Host and guest offsets live in bits 9..55 of table entries. */
#define QCOW_MAX_HOST_OFFSET (1ull << 56)

/* qemu refuses virtual sizes above 2^63 - 512; we keep the same ceiling. */
#define QCOW_MAX_VIRTUAL_SIZE (INT64_MAX - 511)

/* Backing chains: deeper than this is refused (also ends reference loops). */
#define QCOW_MAX_CHAIN_DEPTH 64

/*
 * Metadata caches hold at least this many tables, so that one operation
 * (an L2 table plus the refblocks of an allocation) never evicts what it
 * holds pinned, and at most this many, to bound the hash table.
 */
#define QCOW_MIN_CACHED_TABLES 8u
#define QCOW_MAX_CACHED_TABLES 65536u

/*
 * Space at the end of the file is reserved ahead of allocation (refcount.c)
 * by a sixteenth of what the file uses, within these bounds: a growing
 * image makes few fallocate calls, and an image left alone keeps at most
 * this much reserved and unused past its end.
 */
#define QCOW_RESERVE_AHEAD_MIN_BYTES (1ull << 20)
#define QCOW_RESERVE_AHEAD_MAX_BYTES (32ull << 20)

/*
 * Clusters whose refcount drops wait for the next flush, so that they are
 * not reused before the mapping that dropped them is on disk; past this
 * many the image flushes on its own.
 */
#define QCOW_MAX_PENDING_FREES 65536u

/*
 * check/repair keeps one 32-bit counter per host cluster: 2^27 clusters is
 * 512 MiB of memory, an 8 TiB file at 64 KiB clusters.
 */
#define QCOW_MAX_CHECK_CLUSTERS (1ull << 27)

/*
 * check/repair visit at most this many L2 entries over all L1 tables
 * (active and snapshots): 16 TiB of mappings at 64 KiB clusters, about a
 * second of work, so a small crafted image pointing every L1 entry of
 * thousands of snapshots at one L2 table cannot make check run for hours.
 */
#define QCOW_MAX_CHECK_L2_ENTRIES (1ull << 28)

#endif
