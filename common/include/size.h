/* SPDX-License-Identifier: MIT */
/*
 * size.h - sizes as people type them: "64K", "10G", "1048576", "+1G" (blockctl's
 * command line, blockd's options and control API).
 *
 * Suffixes K, M, G and T (either case) are powers of 1024; a plain number
 * is bytes.  Nothing else is accepted: no sign, no fraction, no whitespace,
 * no other suffix.  Values above INT64_MAX are refused, since every size
 * ends up as an off_t.
 */
#ifndef BLOCKD_COMMON_SIZE_H
#define BLOCKD_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Longest string size_format() writes, with its NUL: "1023 EiB". */
#define SIZE_FORMAT_MAX 16

/*
 * Parses s into *out_bytes.  Returns 0, -EINVAL for anything that is not a
 * size, or -ERANGE for a size above INT64_MAX.  *out_bytes is written only
 * on success.  Thread-safe.
 */
int size_parse(const char *s, uint64_t *out_bytes);

/*
 * Parses "[+|-]SIZE".  *sign is +1 or -1 for a relative size and 0 for an
 * absolute one.  Same errors as size_parse(); *sign and *out_bytes are
 * written only on success.  Thread-safe.
 */
int size_parse_delta(const char *s, int *sign, uint64_t *out_bytes);

/*
 * Writes bytes in human units ("512 B", "64 KiB", "1.46 GiB", three
 * significant digits, like qemu-img) into buf of len bytes (at least
 * SIZE_FORMAT_MAX).  Returns buf.  Thread-safe.
 */
const char *size_format(uint64_t bytes, char *buf, size_t len);

#endif
