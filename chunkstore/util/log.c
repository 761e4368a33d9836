/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One-line diagnostics on stderr.  The program name and level are set once
 * at startup (before threads exist), so the only shared state here is
 * written exactly once and then only read; error demotion is per thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *log_program = "clonefs";
static int log_max_level = LOG_LEVEL_INFO;
static _Thread_local bool log_demoted;

void log_setup(const char *program_name, int max_level)
{
        if (program_name) {
                const char *slash = strrchr(program_name, '/');
                log_program = slash ? slash + 1 : program_name;
        }
        log_max_level = max_level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

bool log_demote_errors(bool on)
{
        bool was = log_demoted;

        log_demoted = on;
        return was;
}

int log_full_errno(int level, int error, const char *format, ...)
{
        static const char *const prefixes[] = {
                [LOG_LEVEL_ERROR] = "error: ",
                [LOG_LEVEL_WARNING] = "warning: ",
                [LOG_LEVEL_INFO] = "",
                [LOG_LEVEL_DEBUG] = "debug: ",
        };
        char line[4096];
        va_list ap;

        if (level == LOG_LEVEL_ERROR && log_demoted)
                level = LOG_LEVEL_WARNING;
        if (level > log_max_level)
                return error;

        /* "%m" must name the error we were given, not whatever errno is now. */
        errno = error < 0 ? -error : error;
        va_start(ap, format);
        vsnprintf(line, sizeof(line), format, ap);
        va_end(ap);

        /* One write per line keeps lines whole when threads log at once. */
        fprintf(stderr, "%s: %s%s\n", log_program, prefixes[level], line);
        return error;
}
