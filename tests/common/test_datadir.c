/* SPDX-License-Identifier: MIT */
/*
 * test_datadir.c - the default data directory and its sockets
 * (common/datadir.c): blockd, blockctl and blockfs meet there only if all
 * three compute the same paths.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datadir.h"

Test(datadir_default, root_or_xdg_or_home)
{
	char out[PATH_MAX];

	cr_assert_eq(setenv("XDG_STATE_HOME", "/x/state", 1), 0);
	cr_assert_eq(setenv("HOME", "/home/u", 1), 0);
	cr_assert_eq(datadir_default(out, sizeof(out)), 0);
	cr_expect_str_eq(out, geteuid() == 0 ? "/var/lib/blockd" : "/x/state/blockd");
	cr_assert_eq(setenv("XDG_STATE_HOME", "relative", 1), 0);
	cr_assert_eq(datadir_default(out, sizeof(out)), 0);
	cr_expect_str_eq(out, geteuid() == 0 ? "/var/lib/blockd" : "/home/u/.local/state/blockd");
}

Test(datadir_default, no_home)
{
	char out[PATH_MAX] = "untouched";

	cr_assert_eq(unsetenv("XDG_STATE_HOME"), 0);
	cr_assert_eq(unsetenv("HOME"), 0);
	if (geteuid() == 0) {
		cr_expect_eq(datadir_default(out, sizeof(out)), 0);
		cr_expect_str_eq(out, "/var/lib/blockd");
	} else {
		cr_expect_eq(datadir_default(out, sizeof(out)), -ENOENT);
		cr_expect_str_eq(out, "untouched");
	}
}

Test(datadir_default, too_long)
{
	char out[8] = "keep";

	cr_assert_eq(setenv("XDG_STATE_HOME", "/x/state", 1), 0);
	cr_expect_eq(datadir_default(out, sizeof(out)), -ENAMETOOLONG);
	cr_expect_str_eq(out, "keep");
}

Test(datadir_sockets, paths)
{
	char out[64];

	cr_assert_eq(datadir_control_socket("/d", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "/d/control.sock");
	cr_assert_eq(datadir_nbd_socket("/d", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "/d/nbd.sock");
	cr_assert_eq(datadir_nbd_socket("rel/dir", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "rel/dir/nbd.sock");
}

Test(datadir_sockets, exact_fit_and_one_byte_short)
{
	char out[sizeof("/d/nbd.sock")];

	cr_expect_eq(datadir_nbd_socket("/d", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "/d/nbd.sock");
	strcpy(out, "keep");
	cr_expect_eq(datadir_nbd_socket("/d", out, sizeof(out) - 1), -ENAMETOOLONG);
	cr_expect_str_eq(out, "keep");
	cr_expect_eq(datadir_control_socket("/d", out, sizeof(out)), -ENAMETOOLONG);
	cr_expect_str_eq(out, "keep");
	cr_expect_eq(datadir_control_socket("/d", out, 0), -ENAMETOOLONG);
}
