/* SPDX-License-Identifier: MIT */
/*
 * test_names.c - the name rule and export names (common/names.c).  The
 * parser decides which image a client reaches and whether it may write,
 * so what it refuses is tested as hard as what it accepts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "names.h"

static bool valid(const char *s)
{
	return blockd_name_valid(s, strlen(s));
}

Test(names, valid_names)
{
	cr_expect(valid("a"));
	cr_expect(valid("0"));
	cr_expect(valid("vm1"));
	cr_expect(valid("Vm-1.disk_2"));
	cr_expect(valid("9a.b-c_d"));
	cr_expect(valid("a-"));
	cr_expect(valid("a."));
}

Test(names, invalid_names)
{
	cr_expect(!valid(""));
	cr_expect(!valid("-a"));
	cr_expect(!valid(".a"));
	cr_expect(!valid("_a"));
	cr_expect(!valid(".."));
	cr_expect(!valid("a b"));
	cr_expect(!valid("a/b"));
	cr_expect(!valid("a@b"));
	cr_expect(!valid("a:ro"));
	cr_expect(!valid("a%2f"));
	cr_expect(!valid("caf\xc3\xa9"));
	cr_expect(!valid("a\n"));
	cr_expect(!blockd_name_valid("a\0b", 3));
}

Test(names, length_limit)
{
	char s[BLOCKD_NAME_MAX + 2];

	memset(s, 'x', sizeof(s));
	cr_expect(blockd_name_valid(s, BLOCKD_NAME_MAX));
	cr_expect(!blockd_name_valid(s, BLOCKD_NAME_MAX + 1));
	cr_expect(!blockd_name_valid(s, 0));
}

/* A bad struct to start from: parse must overwrite it whole or not at all. */
static const struct blockd_export_name poison = {"poison", "poison", true};

static void expect_export(const char *s, const char *volume, const char *snapshot, bool ro_live)
{
	struct blockd_export_name e = poison;

	cr_assert_eq(blockd_export_name_parse(s, strlen(s), &e), 0, "\"%s\" should parse", s);
	cr_expect_str_eq(e.volume, volume, "\"%s\": volume", s);
	cr_expect_str_eq(e.snapshot, snapshot, "\"%s\": snapshot", s);
	cr_expect_eq(e.ro_live, ro_live, "\"%s\": ro_live", s);
}

static void expect_refused_bytes(const char *s, size_t len)
{
	struct blockd_export_name e = poison;

	cr_expect_eq(blockd_export_name_parse(s, len, &e), -EINVAL, "\"%.*s\" should be refused",
	             (int)len, s);
	cr_expect_eq(memcmp(&e, &poison, sizeof(e)), 0, "\"%.*s\" wrote its output on failure",
	             (int)len, s);
}

static void expect_refused(const char *s)
{
	expect_refused_bytes(s, strlen(s));
}

Test(export_name_parse, the_three_kinds)
{
	expect_export("vm1", "vm1", "", false);
	expect_export("vm1:ro", "vm1", "", true);
	expect_export("vm1@s1", "vm1", "s1", false);
	expect_export("a:ro", "a", "", true);
	expect_export("a@b", "a", "b", false);
	expect_export("a@ro", "a", "ro", false);
	expect_export("a.b-c_d@e.f-g_h", "a.b-c_d", "e.f-g_h", false);
}

Test(export_name_parse, empty_parts)
{
	expect_refused("");
	expect_refused(":ro");
	expect_refused("@");
	expect_refused("@s1");
	expect_refused("vm1@");
	expect_refused("@:ro");
	expect_refused("vm1@:ro");
}

Test(export_name_parse, snapshots_have_no_ro_suffix)
{
	expect_refused("vm1@s1:ro");
	expect_refused("vm1:ro@s1");
	expect_refused("vm1:ro:ro");
	expect_refused("vm1@s1@s2");
	expect_refused("vm1@@s1");
}

Test(export_name_parse, other_suffixes_and_bad_characters)
{
	expect_refused("vm1:rw");
	expect_refused("vm1:RO");
	expect_refused("vm1:");
	expect_refused("vm1 ");
	expect_refused(" vm1");
	expect_refused("vm1/..");
	expect_refused("../vm1");
	expect_refused("-vm1");
	expect_refused("vm1@-s1");
	expect_refused("vm1@.s1");
	expect_refused("vm1@s 1");
	expect_refused("vm1@s/1");
	expect_refused("v\xc3\xa9");
}

Test(export_name_parse, embedded_nul)
{
	expect_refused_bytes("vm1\0", 4);
	expect_refused_bytes("vm1\0:ro", 7);
	expect_refused_bytes("vm1@s\0", 6);
	expect_refused_bytes("\0", 1);
}

Test(export_name_parse, null)
{
	struct blockd_export_name e = poison;

	cr_expect_eq(blockd_export_name_parse(NULL, 0, &e), -EINVAL);
	cr_expect_eq(memcmp(&e, &poison, sizeof(e)), 0);
}

Test(export_name_parse, lengths)
{
	char s[BLOCKD_EXPORT_NAME_MAX + 8];
	const size_t max = BLOCKD_NAME_MAX;
	struct blockd_export_name e;

	/* Longest volume, each way. */
	memset(s, 'v', max);
	cr_expect_eq(blockd_export_name_parse(s, max, &e), 0);
	cr_expect_eq(strlen(e.volume), max);
	memcpy(s + max, ":ro", 3);
	cr_expect_eq(blockd_export_name_parse(s, max + 3, &e), 0);
	cr_expect(e.ro_live);
	/* Longest volume and snapshot. */
	s[max] = '@';
	memset(s + max + 1, 's', max);
	cr_expect_eq(blockd_export_name_parse(s, 2 * max + 1, &e), 0);
	cr_expect_eq(strlen(e.snapshot), max);
	/* One byte more, anywhere. */
	memset(s, 'v', max + 1);
	expect_refused_bytes(s, max + 1);
	memcpy(s + max + 1, ":ro", 3);
	expect_refused_bytes(s, max + 4);
	memset(s, 'v', max);
	s[max] = '@';
	memset(s + max + 1, 's', max + 1);
	expect_refused_bytes(s, 2 * max + 2);
	memset(s, 'x', sizeof(s));
	expect_refused_bytes(s, sizeof(s));
}

static void expect_format(const struct blockd_export_name *e, const char *want)
{
	char buf[BLOCKD_EXPORT_NAME_MAX + 1];

	cr_assert_eq(blockd_export_name_format(e, buf, sizeof(buf)), 0, "%s", want);
	cr_expect_str_eq(buf, want);
}

Test(export_name_format, the_three_kinds_and_back)
{
	static const char *const names[] = {"vm1", "vm1:ro", "vm1@s1", "a.b@c-d", "a:ro"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct blockd_export_name e;

		cr_assert_eq(blockd_export_name_parse(names[i], strlen(names[i]), &e), 0);
		expect_format(&e, names[i]);
	}
}

Test(export_name_format, refuses_what_is_not_an_export)
{
	struct blockd_export_name bad[] = {
	    {"", "", false},       {"", "s1", false},     {"vm1", "s1", true},
	    {"-vm1", "", false},   {"vm1:ro", "", false}, {"vm1", "s@1", false},
	    {"vm1@s1", "", false},
	};
	char buf[BLOCKD_EXPORT_NAME_MAX + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strcpy(buf, "untouched");
		cr_expect_eq(blockd_export_name_format(&bad[i], buf, sizeof(buf)), -EINVAL,
		             "case %zu", i);
		cr_expect_str_eq(buf, "untouched", "case %zu wrote its output on failure", i);
	}
}

Test(export_name_format, refuses_an_unterminated_name)
{
	struct blockd_export_name e;
	char buf[BLOCKD_EXPORT_NAME_MAX + 1];

	memset(&e, 'x', sizeof(e));
	e.ro_live = false;
	cr_expect_eq(blockd_export_name_format(&e, buf, sizeof(buf)), -EINVAL);
}

Test(export_name_format, buffer_sizes)
{
	struct blockd_export_name ro = {"vm1", "", true}, snap = {"vm1", "s1", false};
	char buf[8];

	strcpy(buf, "keep");
	cr_expect_eq(blockd_export_name_format(&ro, buf, 6), -ENAMETOOLONG);
	cr_expect_str_eq(buf, "keep");
	cr_expect_eq(blockd_export_name_format(&ro, buf, 7), 0);
	cr_expect_str_eq(buf, "vm1:ro");
	cr_expect_eq(blockd_export_name_format(&snap, buf, 6), -ENAMETOOLONG);
	cr_expect_eq(blockd_export_name_format(&snap, buf, 7), 0);
	cr_expect_str_eq(buf, "vm1@s1");
	cr_expect_eq(blockd_export_name_format(&snap, buf, 0), -ENAMETOOLONG);
}
