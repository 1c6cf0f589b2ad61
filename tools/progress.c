/* SPDX-License-Identifier: MIT */
/*
 * progress.c - the progress bar (see progress.h).  It looks like
 *
 *     [##########################..............................]  43.21%
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "progress.h"

#define PROGRESS_BAR_WIDTH 50

/* The bar on the screen, if any, so that an error can start a new line. */
static struct progress *drawn_bar;

void progress_init(struct progress *p, bool enabled, uint64_t total_bytes)
{
	p->enabled = enabled;
	p->drawn = false;
	p->total_bytes = total_bytes;
	p->shown_permyriad = -1;
}

static int permyriad_of(const struct progress *p, uint64_t done_bytes)
{
	if (p->total_bytes == 0 || done_bytes >= p->total_bytes)
		return 10000;
	/* done < total <= 2^64: the quotient fits; long double keeps 64 bits. */
	return (int)((long double)done_bytes * 10000.0L / (long double)p->total_bytes);
}

static void progress_draw(struct progress *p, int permyriad)
{
	char bar[PROGRESS_BAR_WIDTH + 1];
	int filled = permyriad * PROGRESS_BAR_WIDTH / 10000;

	memset(bar, '#', (size_t)filled);
	memset(bar + filled, '.', (size_t)(PROGRESS_BAR_WIDTH - filled));
	bar[PROGRESS_BAR_WIDTH] = '\0';
	fprintf(stderr, "\r[%s] %3d.%02d%%", bar, permyriad / 100, permyriad % 100);
	fflush(stderr);
	p->drawn = true;
	p->shown_permyriad = permyriad;
	drawn_bar = p;
}

void progress_update(struct progress *p, uint64_t done_bytes)
{
	int permyriad;

	if (!p->enabled)
		return;
	permyriad = permyriad_of(p, done_bytes);
	if (permyriad != p->shown_permyriad)
		progress_draw(p, permyriad);
}

void progress_finish(struct progress *p)
{
	if (!p->enabled)
		return;
	progress_update(p, p->total_bytes);
	progress_abort(p);
}

void progress_abort(struct progress *p)
{
	if (!p->enabled || !p->drawn)
		return;
	fputc('\n', stderr);
	fflush(stderr);
	p->drawn = false;
	drawn_bar = NULL;
}

void progress_end_line(void)
{
	if (drawn_bar)
		progress_abort(drawn_bar);
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

void progress_catch_interrupts(void)
{
	struct sigaction sa = {.sa_handler = on_interrupt, .sa_flags = SA_RESTART};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

bool progress_interrupted(void)
{
	return interrupted != 0;
}
