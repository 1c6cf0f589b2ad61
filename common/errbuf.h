/* SPDX-License-Identifier: MIT */
/*
 * errbuf.h - how common's functions hand a reason back to their caller:
 * a caller's buffer, which may be absent.  Private to common.
 */
#ifndef BLOCKD_COMMON_ERRBUF_H
#define BLOCKD_COMMON_ERRBUF_H

#include <stddef.h>

/* Formats into err (errlen bytes, cut to fit); nothing when err is NULL or errlen 0. */
void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
