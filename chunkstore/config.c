/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The store's config file: a few "key = value" lines, written once by
 * init and never changed.  It holds the store's key, so it is mode 0600.
 *
 *     # clonefs store
 *     format = 1
 *     block_size = 65536
 *     compression = lz4 | lz4hc:LEVEL
 *     secret = 64 hex digits
 *
 * Unknown keys are an error: a newer writer that added one would bump
 * "format", so an unknown key means damage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cs-internal.h"

#define CONFIG_TMP CS_CONFIG_FILE ".tmp"
#define CONFIG_MAX 4096

int cs_config_write(int dir_fd, const cs_config *config)
{
        _cleanup_close_ int fd = -1;
        char text[CONFIG_MAX], secret_hex[2 * CS_SECRET_SIZE + 1], compression[32];
        int len;

        for (size_t i = 0; i < CS_SECRET_SIZE; i++)
                snprintf(secret_hex + 2 * i, 3, "%02x", config->secret[i]);
        if (config->lz4hc_level > 0)
                snprintf(compression, sizeof(compression), "lz4hc:%d", config->lz4hc_level);
        else
                snprintf(compression, sizeof(compression), "lz4");
        len = snprintf(text, sizeof(text),
                       "# clonefs store: do not edit; the secret keys every chunk id\n"
                       "format = %u\nblock_size = %" PRIu32 "\ncompression = %s\nsecret = %s\n",
                       config->format, config->block_size, compression, secret_hex);

        fd = openat(dir_fd, CONFIG_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        if (write(fd, text, (size_t) len) != len)
                return errno ? negative_errno() : -ENOSPC;
        if (fsync(fd) < 0)
                return negative_errno();
        if (renameat(dir_fd, CONFIG_TMP, dir_fd, CS_CONFIG_FILE) < 0)
                return negative_errno();
        return fsync(dir_fd) < 0 ? negative_errno() : 0;
}

static int parse_u32(const char *s, uint32_t *ret)
{
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || end == s || *end || v > UINT32_MAX)
                return -EBADMSG;
        *ret = (uint32_t) v;
        return 0;
}

static int parse_line(char *line, cs_config *c, unsigned *seen)
{
        char *eq = strchr(line, '='), *key = line, *value, *end;
        uint32_t v;

        if (!eq)
                return -EBADMSG;
        *eq = 0;
        value = eq + 1;
        for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
                end[-1] = 0;
        value += strspn(value, " \t");
        for (end = value + strlen(value); end > value && (end[-1] == ' ' || end[-1] == '\t'); end--)
                end[-1] = 0;

        if (strcmp(key, "format") == 0) {
                if (parse_u32(value, &v) < 0)
                        return -EBADMSG;
                c->format = v;
                *seen |= 1;
        } else if (strcmp(key, "block_size") == 0) {
                if (parse_u32(value, &c->block_size) < 0)
                        return -EBADMSG;
                *seen |= 2;
        } else if (strcmp(key, "compression") == 0) {
                if (strcmp(value, "lz4") == 0)
                        c->lz4hc_level = 0;
                else if (strncmp(value, "lz4hc:", 6) == 0 && parse_u32(value + 6, &v) == 0 &&
                         v >= 1 && v <= 12)
                        c->lz4hc_level = (int) v;
                else
                        return -EBADMSG;
                *seen |= 4;
        } else if (strcmp(key, "secret") == 0) {
                if (strlen(value) != 2 * CS_SECRET_SIZE)
                        return -EBADMSG;
                for (size_t i = 0; i < CS_SECRET_SIZE; i++) {
                        unsigned byte;
                        if (sscanf(value + 2 * i, "%2x", &byte) != 1)
                                return -EBADMSG;
                        c->secret[i] = (uint8_t) byte;
                }
                *seen |= 8;
        } else {
                return -EBADMSG; /* the format is known to be ours by now */
        }
        return 0;
}

int cs_config_read(int dir_fd, cs_config *ret_config)
{
        _cleanup_fclose_ FILE *f = NULL;
        cs_config c = {};
        char line[512];
        unsigned seen = 0;
        int fd, r;

        fd = openat(dir_fd, CS_CONFIG_FILE, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -EMEDIUMTYPE : negative_errno();
        f = fdopen(fd, "r");
        if (!f) {
                safe_close(fd);
                return negative_errno();
        }

        /* The format decides how to read the rest: judge it first, so that a
         * newer store is called newer, not damaged. */
        while (fgets(line, sizeof(line), f)) {
                unsigned format;
                if (sscanf(line, "format = %u", &format) == 1) {
                        c.format = format;
                        break;
                }
        }
        if (c.format == 0)
                return -EBADMSG;
        if (c.format > CS_FORMAT_VERSION)
                return -EPROTONOSUPPORT;

        rewind(f);
        while (fgets(line, sizeof(line), f)) {
                size_t n = strlen(line);
                if (n && line[n - 1] == '\n')
                        line[--n] = 0;
                if (n == 0 || line[0] == '#')
                        continue;
                r = parse_line(line, &c, &seen);
                if (r < 0)
                        return r;
        }
        if (ferror(f))
                return -EIO;
        if (seen != 15 || c.format < 1 || c.block_size < CS_BLOCK_SIZE_MIN ||
            c.block_size > CS_BLOCK_SIZE_MAX || (c.block_size & (c.block_size - 1)))
                return -EBADMSG;
        *ret_config = c;
        return 0;
}
