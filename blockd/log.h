/* SPDX-License-Identifier: MIT */
/*
 * log.h - one line per event on stderr: time, level, message.  Thread-safe
 * (each line is one write).  Nothing on the data path logs at info level.
 */
#ifndef BLOCKD_LOG_H
#define BLOCKD_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* A longer line is cut: every message names a volume and a few numbers, far below this. */
#define LOG_LINE_BYTES 1024

/* Parses "debug", "info", "warn" or "error"; -1 for anything else. */
int log_parse_level(const char *s);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

__attribute__((format(printf, 2, 3))) void log_msg(enum log_level level, const char *fmt, ...);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
