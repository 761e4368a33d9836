/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON string output for --json modes.
 */
#include <stdint.h>

#include "json.h"

size_t utf8_sequence(const unsigned char *s, size_t len)
{
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xe0) == 0xc0) {
                n = 2;
                cp = s[0] & 0x1f;
        } else if ((s[0] & 0xf0) == 0xe0) {
                n = 3;
                cp = s[0] & 0x0f;
        } else if ((s[0] & 0xf8) == 0xf0) {
                n = 4;
                cp = s[0] & 0x07;
        } else {
                return 0;
        }
        if (n > len)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return n;
}

void json_write_string(FILE *f, const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *) s;

        fputc('"', f);
        for (size_t i = 0; i < len;) {
                size_t n = utf8_sequence(p + i, len - i);
                unsigned char c = p[i];

                if (n == 0) {
                        /* Python's surrogateescape: never a character, so
                         * never confused with one, and os.fsencode() turns
                         * it back into the byte. */
                        fprintf(f, "\\udc%02x", c);
                        i++;
                } else if (n > 1) {
                        fwrite(p + i, 1, n, f);
                        i += n;
                } else {
                        if (c == '"' || c == '\\')
                                fprintf(f, "\\%c", c);
                        else if (c == '\n')
                                fputs("\\n", f);
                        else if (c == '\t')
                                fputs("\\t", f);
                        else if (c < 0x20 || c == 0x7f)
                                fprintf(f, "\\u%04x", c);
                        else
                                fputc(c, f);
                        i++;
                }
        }
        fputc('"', f);
}
