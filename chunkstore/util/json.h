/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing JSON strings.  File names may hold any bytes, so bytes that are
 * not valid UTF-8 are written as \u00XX escapes of their Latin-1 reading
 * rather than dropped: the output is always valid JSON, and distinct names
 * stay distinct.
 */
#ifndef CFS_JSON_H
#define CFS_JSON_H

#include <stddef.h>
#include <stdio.h>

/* Writes s (len bytes) as a quoted JSON string. */
void json_write_string(FILE *f, const char *s, size_t len);

#endif
