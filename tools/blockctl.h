/* SPDX-License-Identifier: MIT */
/*
 * blockctl.h - what the files of the blockctl command share: the exit
 * codes, the one way errors are printed, and the command groups.
 *
 * Error contract: every failure prints exactly one line on stderr,
 * "blockctl: FILE: problem" (or "blockctl: problem" when no file is
 * involved), and exits with BLOCKCTL_EXIT_FAILURE; a command line that
 * cannot be understood exits with BLOCKCTL_EXIT_USAGE and one line that
 * ends with the usage of the command.  The code that detects a failure
 * prints it; its callers only pass the negative errno up.
 */
#ifndef BLOCKD_TOOLS_BLOCKCTL_H
#define BLOCKD_TOOLS_BLOCKCTL_H

#include <stdio.h>

#define BLOCKCTL_EXIT_FAILURE 1
#define BLOCKCTL_EXIT_USAGE   2

/* Prints "blockctl: <message>" as one line (control characters become spaces). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Prints "blockctl: PATH: message", or "blockctl: message" when message
 * already starts with "PATH:" (as the qcow library's messages do).
 */
void cli_file_error(const char *path, const char *message);

/* Prints "blockctl: <message> (usage: <usage>)". */
void cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * "blockctl image ...": argv[0] is "image".  Returns the exit status.
 */
int image_main(int argc, char **argv);

/* Prints the usage of every image command to f. */
void image_print_usage(FILE *f);

#endif
