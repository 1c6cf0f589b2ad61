/* SPDX-License-Identifier: MIT */
/*
 * size.c - parsing and printing sizes (see size.h).
 *
 * The parser is strict on purpose: a size typed wrong ("1.5G", "10GB",
 * " 1G") is refused rather than read as something else, because the
 * commands that take one create or shrink images.
 */
#include <errno.h>
#include <stdio.h>

#include "size.h"

static int suffix_shift(char c, unsigned *shift)
{
	switch (c) {
	case 'k':
	case 'K':
		*shift = 10;
		return 0;
	case 'm':
	case 'M':
		*shift = 20;
		return 0;
	case 'g':
	case 'G':
		*shift = 30;
		return 0;
	case 't':
	case 'T':
		*shift = 40;
		return 0;
	default:
		return -EINVAL;
	}
}

int size_parse(const char *s, uint64_t *out_bytes)
{
	uint64_t value = 0;
	unsigned shift = 0;
	const char *p = s;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (__builtin_mul_overflow(value, 10, &value) ||
		    __builtin_add_overflow(value, (uint64_t)(*p - '0'), &value))
			return -ERANGE;
	}
	if (*p != '\0') {
		if (suffix_shift(*p, &shift) < 0 || p[1] != '\0')
			return -EINVAL;
	}
	if (value > (uint64_t)INT64_MAX >> shift)
		return -ERANGE;
	*out_bytes = value << shift;
	return 0;
}

int size_parse_delta(const char *s, int *sign, uint64_t *out_bytes)
{
	int dir = 0;
	int ret;

	if (s && (*s == '+' || *s == '-')) {
		dir = *s == '+' ? 1 : -1;
		s++;
	}
	ret = size_parse(s, out_bytes);
	if (ret < 0)
		return ret;
	*sign = dir;
	return 0;
}

const char *size_format(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double value = (double)bytes;
	size_t unit = 0;

	/* Move up a unit before "%.3g" would round to 1000 and need an exponent. */
	while (value >= 999.5 && unit + 1 < sizeof(units) / sizeof(units[0])) {
		value /= 1024.0;
		unit++;
	}
	if (unit == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.3g %s", value, units[unit]);
	return buf;
}
