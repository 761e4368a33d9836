/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing JSON strings.  File names may hold any bytes, so a byte that is
 * not part of valid UTF-8 is written as \uDCXX, a lone low surrogate, as
 * Python's surrogateescape does, rather than dropped: no byte reads as a
 * real character, and Python's json with os.fsencode() gives the name
 * back exactly.  RFC 8259's grammar allows the escape, but parsers that
 * insist on Unicode scalar values replace it with U+FFFD (jq, Go) or
 * refuse the document (serde_json): for those, such names are lossy.
 */
#ifndef CFS_JSON_H
#define CFS_JSON_H

#include <stddef.h>
#include <stdio.h>

/* Length of the valid UTF-8 sequence at s (len > 0 bytes), or 0 if
 * there is none: overlong forms and surrogates are not valid. */
size_t utf8_sequence(const unsigned char *s, size_t len);

/* Writes s (len bytes) as a quoted JSON string. */
void json_write_string(FILE *f, const char *s, size_t len);

#endif
