/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Parsing and printing byte counts for people: "64K", "1M", "1.5 GiB".
 */
#ifndef CFS_SIZE_H
#define CFS_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parses a number with an optional K, M, G or T suffix (powers of 1024,
 * with or without "iB").  -EINVAL for anything else, -ERANGE on overflow. */
int parse_size(const char *s, uint64_t *ret);

#define FORMAT_BYTES_MAX 16
/* "1.5 GiB"; returns buf. */
char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes);

#endif
