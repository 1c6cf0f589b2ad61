/* SPDX-License-Identifier: MIT */
/*
 * progress.h - a one-line progress bar on stderr for long commands.
 *
 * The bar is redrawn in place with '\r' only when the shown percentage
 * changes, so a fast copy does not spend its time printing.  A disabled
 * bar prints nothing; every call is cheap either way.  Not thread-safe.
 */
#ifndef BLOCKD_TOOLS_PROGRESS_H
#define BLOCKD_TOOLS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
	bool enabled;
	bool drawn;           /* something is on the line: finish with '\n' */
	uint64_t total_bytes; /* 0 counts as done */
	int shown_permyriad;  /* last value drawn, in 1/100 of a percent; -1: none */
};

/* Sets p up; nothing is printed until the first progress_update(). */
void progress_init(struct progress *p, bool enabled, uint64_t total_bytes);

/* Shows done_bytes out of the total (values above the total show 100%). */
void progress_update(struct progress *p, uint64_t done_bytes);

/* Shows 100% and ends the line.  */
void progress_finish(struct progress *p);

/* Ends the line as it is, so that an error message starts on a line of its own. */
void progress_abort(struct progress *p);

/* progress_abort() on whichever bar is on the screen; for the error printers. */
void progress_end_line(void);

/*
 * SIGINT, SIGTERM and SIGHUP only set a flag from then on, so that a long
 * copy can stop cleanly and remove its partial output.
 */
void progress_catch_interrupts(void);
/* True once one of those signals arrived. */
bool progress_interrupted(void);

#endif
