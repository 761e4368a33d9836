/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test helper for crash and concurrency tests of the chunk store.
 *
 *   cs-writer put STORE SEED COUNT BATCH [random|text]
 *       puts COUNT chunks of one block, commits every BATCH puts, and after
 *       each commit prints the ids it made durable, one per line, flushed.
 *       A failure prints one error line and exits 1.
 *   cs-writer check STORE
 *       reads ids from stdin and gets each one; exits 1 if any is missing
 *       or damaged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore.h"
#include "util/log.h"
#include "../tests/tap.h"

static int do_put(const char *path, uint64_t seed, long count, long batch, int kind)
{
        _cleanup_(cs_store_unrefp) cs_store *s = NULL;
        _cleanup_free_ cs_chunk_id *ids = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        char hex[CS_CHUNK_ID_STRING_MAX];
        long done = 0;
        uint32_t bs;
        int r;

        r = cs_store_open(path, CS_OPEN_WRITE, &s);
        if (r < 0)
                return log_error_errno(r, "cannot open store %s: %m", path);
        bs = cs_store_block_size(s);
        buf = malloc(bs);
        ids = calloc((size_t) batch, sizeof(*ids));
        if (!buf || !ids)
                return log_error_errno(-ENOMEM, "out of memory");

        for (long i = 0; i < count; i++) {
                tap_fill(buf, bs, kind, seed * 1000003 + (uint64_t) i);
                r = cs_store_put(s, CS_KIND_DATA, buf, bs, &ids[i - done]);
                if (r < 0)
                        return log_error_errno(r, "put %ld failed: %m", i);
                if (i + 1 - done == batch || i + 1 == count) {
                        r = cs_store_commit(s);
                        if (r < 0)
                                return log_error_errno(r, "commit after put %ld failed: %m", i);
                        for (long j = 0; j < i + 1 - done; j++)
                                printf("%s\n", cs_chunk_id_format(&ids[j], hex));
                        fflush(stdout);
                        done = i + 1;
                }
        }
        return 0;
}

static int do_check(const char *path)
{
        _cleanup_(cs_store_unrefp) cs_store *s = NULL;
        _cleanup_free_ uint8_t *buf = malloc(CS_BLOCK_SIZE_MAX);
        char line[128];
        long checked = 0, bad = 0;
        int r;

        r = cs_store_open(path, 0, &s);
        if (r < 0)
                return log_error_errno(r, "cannot open store %s: %m", path);
        while (fgets(line, sizeof(line), stdin)) {
                cs_chunk_id id;
                line[strcspn(line, "\n")] = 0;
                if (cs_chunk_id_parse(line, &id) < 0)
                        continue;
                checked++;
                r = cs_store_get(s, &id, buf, CS_BLOCK_SIZE_MAX);
                if (r < 0) {
                        log_error_errno(r, "chunk %s: %m", line);
                        bad++;
                }
        }
        printf("checked %ld chunks, %ld bad\n", checked, bad);
        return bad ? -EBADMSG : 0;
}

int main(int argc, char **argv)
{
        int r = -EINVAL;

        log_setup(argv[0], LOG_LEVEL_INFO);
        if (argc >= 6 && strcmp(argv[1], "put") == 0)
                r = do_put(argv[2], strtoull(argv[3], NULL, 10), atol(argv[4]), atol(argv[5]),
                           argc > 6 && strcmp(argv[6], "random") == 0 ? DATA_RANDOM : DATA_TEXT);
        else if (argc == 3 && strcmp(argv[1], "check") == 0)
                r = do_check(argv[2]);
        else
                log_error("usage: cs-writer put STORE SEED COUNT BATCH [random|text] | check STORE");
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
