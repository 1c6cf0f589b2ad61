/* SPDX-License-Identifier: MIT */
/*
 * blockctl.c - the blockctl command line: dispatch to the command groups
 * and the error printing every command uses (see blockctl.h).
 *
 * The offline image commands work on files; the volume and snapshot
 * commands talk to a running blockd (ctl.h), found through the global
 * options --data-dir and --control given before them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockctl.h"
#include "ctl.h"
#include "progress.h"

/* A message longer than this is cut; paths are at most PATH_MAX anyway. */
#define CLI_MESSAGE_MAX 8192

static void cli_print_line(const char *prefix, const char *message, const char *suffix)
{
	char line[CLI_MESSAGE_MAX];
	size_t i;

	snprintf(line, sizeof(line), "%s%s%s", prefix, message, suffix);
	/* One line, whatever a file name or a library message holds. */
	for (i = 0; line[i] != '\0'; i++) {
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = ' ';
	}
	progress_end_line();
	fprintf(stderr, "blockctl: %s\n", line);
	fflush(stderr);
}

void cli_error(const char *fmt, ...)
{
	char message[CLI_MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	cli_print_line("", message, "");
}

void cli_file_error(const char *path, const char *message)
{
	size_t len = strlen(path);
	char prefix[CLI_MESSAGE_MAX];

	if (!message || message[0] == '\0')
		message = "unknown error";
	if (strncmp(message, path, len) == 0 && message[len] == ':') {
		cli_print_line("", message, "");
		return;
	}
	snprintf(prefix, sizeof(prefix), "%s: ", path);
	cli_print_line(prefix, message, "");
}

void cli_usage_error(const char *usage, const char *fmt, ...)
{
	char message[CLI_MESSAGE_MAX];
	char suffix[CLI_MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	snprintf(suffix, sizeof(suffix), " (usage: %s)", usage);
	cli_print_line("", message, suffix);
}

static void print_usage(FILE *f)
{
	fputs("usage: blockctl COMMAND ...\n"
	      "\n"
	      "Offline image commands (no daemon needed):\n",
	      f);
	image_print_usage(f);
	fputs("\n"
	      "Daemon commands (blockctl [--data-dir DIR] [--control PATH] COMMAND ...):\n",
	      f);
	volume_print_usage(f);
	snapshot_print_usage(f);
	fputs("\n"
	      "--data-dir DIR finds blockd's DIR/control.sock and DIR/nbd.sock (default\n"
	      "/var/lib/blockd as root, else $XDG_STATE_HOME/blockd or ~/.local/state/blockd);\n"
	      "--control PATH names the control socket itself.\n"
	      "SIZE takes a K, M, G or T suffix (powers of 1024); plain numbers are bytes.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const char usage[] = "blockctl [--data-dir DIR] [--control PATH] "
	                            "{image|volume|snapshot} ...";
	int status, skip;

	skip = ctl_parse_global(argc, argv, &ctl_target, usage);
	if (skip < 0)
		return BLOCKCTL_EXIT_USAGE;
	/* The command group sees itself as argv[1], after the global options. */
	argv[skip] = argv[0];
	argc -= skip;
	argv += skip;
	if (argc < 2) {
		cli_usage_error(usage, "missing command");
		return BLOCKCTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		print_usage(stdout);
		return fflush(stdout) == 0 ? EXIT_SUCCESS : BLOCKCTL_EXIT_FAILURE;
	}
	if (strcmp(argv[1], "image") == 0) {
		status = image_main(argc - 1, argv + 1);
	} else if (strcmp(argv[1], "volume") == 0) {
		status = volume_main(argc - 1, argv + 1);
	} else if (strcmp(argv[1], "snapshot") == 0) {
		status = snapshot_main(argc - 1, argv + 1);
	} else {
		cli_usage_error(usage, "unknown command '%s'", argv[1]);
		return BLOCKCTL_EXIT_USAGE;
	}
	/* Output lost to a full disk or a closed pipe is a failure too. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (status == EXIT_SUCCESS)
			cli_error("standard output: %s", strerror(errno));
		return BLOCKCTL_EXIT_FAILURE;
	}
	return status;
}
