/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Logging for the programs (clonectl, clonefs, test helpers).  The library
 * never prints; programs print one line per error, prefixed with the
 * program's name, and return the negative errno they were given so that
 * "return log_error_errno(r, ...)" reads naturally.  "%m" in a format
 * expands to strerror(-r).
 */
#ifndef CFS_LOG_H
#define CFS_LOG_H

#include <stdbool.h>

#include "macro.h"

enum {
        LOG_LEVEL_ERROR,
        LOG_LEVEL_WARNING,
        LOG_LEVEL_INFO,
        LOG_LEVEL_DEBUG,
};

/* Set once by main() before any thread starts; read-only afterwards. */
void log_setup(const char *program_name, int max_level);
int log_get_max_level(void);

int log_full_errno(int level, int error, const char *format, ...) _printf_(3, 4);

/* While on, errors logged by this thread print as warnings: for work that
 * is retried (receive-wal's reconnects), whose failure is not the
 * program's last word and comes with no exit status.  Per thread, so it
 * needs no lock; returns the previous setting, to put back. */
bool log_demote_errors(bool on);

#define log_error_errno(e, ...) log_full_errno(LOG_LEVEL_ERROR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_LEVEL_WARNING, (e), __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_LEVEL_ERROR, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)                                                    \
        (UNLIKELY(log_get_max_level() >= LOG_LEVEL_DEBUG)                 \
                 ? log_full_errno(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)        \
                 : 0)

#endif
