/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Byte counts as people write and read them.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "size.h"

int parse_size(const char *s, uint64_t *ret)
{
        static const char suffixes[] = "KMGT";
        unsigned long long v;
        const char *p;
        char *end;
        int shift = 0;

        if (!s || !isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -ERANGE;
        p = end;
        if (*p) {
                const char *q = strchr(suffixes, toupper((unsigned char) *p));
                if (!q)
                        return -EINVAL;
                shift = 10 * (int) (q - suffixes + 1);
                p++;
                if (strcasecmp(p, "iB") == 0 || strcasecmp(p, "B") == 0)
                        p += strlen(p);
                if (*p)
                        return -EINVAL;
        }
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        *ret = (uint64_t) v << shift;
        return 0;
}

char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes)
{
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double v = (double) bytes;
        size_t u = 0;

        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, FORMAT_BYTES_MAX, "%llu B", (unsigned long long) bytes);
        else
                snprintf(buf, FORMAT_BYTES_MAX, "%.1f %s", v, units[u]);
        return buf;
}
