/* SPDX-License-Identifier: MIT */
/*
 * test_size.c - the size parser and printer (common/size.c).
 * Wrong input is tested as hard as right input: a size read wrongly
 * creates or shrinks an image to the wrong size.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "size.h"

static const uint64_t untouched = 0xdeadbeefull;

static void expect_size(const char *s, uint64_t bytes)
{
	uint64_t out = untouched;

	cr_expect_eq(size_parse(s, &out), 0, "\"%s\" should parse", s);
	cr_expect_eq(out, bytes, "\"%s\" gave %llu, not %llu", s, (unsigned long long)out,
	             (unsigned long long)bytes);
}

static void expect_error(const char *s, int err)
{
	uint64_t out = untouched;
	int ret = size_parse(s, &out);

	cr_expect_eq(ret, err, "\"%s\" gave %d, not %d", s ? s : "(null)", ret, err);
	cr_expect_eq(out, untouched, "\"%s\" wrote its output on failure", s ? s : "(null)");
}

Test(size_parse, plain_bytes)
{
	expect_size("0", 0);
	expect_size("1", 1);
	expect_size("512", 512);
	expect_size("1048576", 1048576);
	expect_size("0007", 7);
}

Test(size_parse, suffixes_are_powers_of_1024_in_either_case)
{
	expect_size("1K", 1024);
	expect_size("1k", 1024);
	expect_size("64K", 65536);
	expect_size("1M", 1ull << 20);
	expect_size("2m", 2ull << 20);
	expect_size("10G", 10ull << 30);
	expect_size("1g", 1ull << 30);
	expect_size("3T", 3ull << 40);
	expect_size("1t", 1ull << 40);
	expect_size("0K", 0);
}

Test(size_parse, largest_values)
{
	expect_size("9223372036854775807", (uint64_t)INT64_MAX);
	/* INT64_MAX >> 40 = 8388607: 8388607T fits, 8388608T does not. */
	expect_size("8388607T", 8388607ull << 40);
	expect_error("8388608T", -ERANGE);
}

Test(size_parse, rejects_empty_and_null)
{
	expect_error("", -EINVAL);
	expect_error(NULL, -EINVAL);
}

Test(size_parse, rejects_unknown_suffixes)
{
	expect_error("12Q", -EINVAL);
	expect_error("1P", -EINVAL);
	expect_error("1E", -EINVAL);
	expect_error("1B", -EINVAL);
	expect_error("1KB", -EINVAL);
	expect_error("1KiB", -EINVAL);
	expect_error("1GG", -EINVAL);
	expect_error("K", -EINVAL);
	expect_error("G1", -EINVAL);
}

Test(size_parse, rejects_signs)
{
	expect_error("-1", -EINVAL);
	expect_error("+1", -EINVAL);
	expect_error("-0", -EINVAL);
	expect_error("--1", -EINVAL);
}

Test(size_parse, rejects_fractions_and_exponents)
{
	expect_error("1.5G", -EINVAL);
	expect_error("1.0", -EINVAL);
	expect_error(".5", -EINVAL);
	expect_error("1e3", -EINVAL);
	expect_error("0x10", -EINVAL);
	expect_error("1,000", -EINVAL);
	expect_error("1_000", -EINVAL);
}

Test(size_parse, rejects_whitespace_anywhere)
{
	expect_error(" 1", -EINVAL);
	expect_error("1 ", -EINVAL);
	expect_error("1 G", -EINVAL);
	expect_error("1G ", -EINVAL);
	expect_error("\t1", -EINVAL);
	expect_error("1\n", -EINVAL);
	expect_error(" ", -EINVAL);
}

Test(size_parse, rejects_overflow)
{
	expect_error("99999999T", -ERANGE);
	expect_error("9223372036854775808", -ERANGE); /* INT64_MAX + 1 */
	expect_error("18446744073709551615", -ERANGE);
	expect_error("18446744073709551616", -ERANGE);
	expect_error("99999999999999999999999999999999", -ERANGE);
	expect_error("17179869184G", -ERANGE);   /* 2^64 */
	expect_error("8796093022208M", -ERANGE); /* 2^63 */
}

Test(size_parse, rejects_garbage_after_overflowing_digits)
{
	/* Either error is fine, but never a success. */
	uint64_t out;

	cr_expect_lt(size_parse("99999999999999999999999x", &out), 0);
}

Test(size_parse, rejects_non_ascii_digits)
{
	expect_error("\xd9\xa1", -EINVAL);  /* ARABIC-INDIC DIGIT ONE */
	expect_error("1\xc2\xa0", -EINVAL); /* no-break space */
}

static void expect_delta(const char *s, int sign, uint64_t bytes)
{
	uint64_t out = untouched;
	int out_sign = 42;

	cr_expect_eq(size_parse_delta(s, &out_sign, &out), 0, "\"%s\" should parse", s);
	cr_expect_eq(out_sign, sign, "\"%s\": sign %d, not %d", s, out_sign, sign);
	cr_expect_eq(out, bytes, "\"%s\": %llu bytes", s, (unsigned long long)out);
}

static void expect_delta_error(const char *s, int err)
{
	uint64_t out = untouched;
	int out_sign = 42;

	cr_expect_eq(size_parse_delta(s, &out_sign, &out), err, "\"%s\" should fail", s);
	cr_expect_eq(out, untouched);
	cr_expect_eq(out_sign, 42);
}

Test(size_parse_delta, absolute_and_relative)
{
	expect_delta("1G", 0, 1ull << 30);
	expect_delta("+1G", 1, 1ull << 30);
	expect_delta("-512", -1, 512);
	expect_delta("+0", 1, 0);
}

Test(size_parse_delta, rejects_bad_input)
{
	expect_delta_error("", -EINVAL);
	expect_delta_error(NULL, -EINVAL);
	expect_delta_error("+", -EINVAL);
	expect_delta_error("-", -EINVAL);
	expect_delta_error("++1G", -EINVAL);
	expect_delta_error("+-1G", -EINVAL);
	expect_delta_error("+ 1G", -EINVAL);
	expect_delta_error(" +1G", -EINVAL);
	expect_delta_error("+1.5G", -EINVAL);
	expect_delta_error("-99999999T", -ERANGE);
}

static void expect_format(uint64_t bytes, const char *text)
{
	char buf[SIZE_FORMAT_MAX];

	cr_expect_str_eq(size_format(bytes, buf, sizeof(buf)), text, "%llu bytes",
	                 (unsigned long long)bytes);
}

Test(size_format, human_units)
{
	expect_format(0, "0 B");
	expect_format(512, "512 B");
	expect_format(999, "999 B");
	expect_format(1000, "0.977 KiB");
	expect_format(1024, "1 KiB");
	expect_format(65536, "64 KiB");
	expect_format(1ull << 30, "1 GiB");
	expect_format(3ull << 29, "1.5 GiB");
	expect_format(1023ull << 20, "0.999 GiB");
	expect_format(10ull << 40, "10 TiB");
	expect_format(UINT64_MAX, "16 EiB");
}

Test(size_format, truncates_to_a_small_buffer)
{
	char buf[4];

	size_format(1ull << 30, buf, sizeof(buf));
	cr_expect_str_eq(buf, "1 G");
}
