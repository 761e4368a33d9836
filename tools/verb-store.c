/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The store verbs: init, verify, stats.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clonectl.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

int verb_init(int argc, char **argv)
{
        cs_init_params params = {
                .block_size = (uint32_t) arg_block_size,
                .lz4hc_level = arg_lz4hc_level,
        };
        char size[FORMAT_BYTES_MAX];
        int r;

        if (arg_block_size && (arg_block_size < CS_BLOCK_SIZE_MIN || arg_block_size > CS_BLOCK_SIZE_MAX ||
                               (arg_block_size & (arg_block_size - 1))))
                return log_error_errno(-EINVAL, "block size %" PRIu64 " is not a power of two from 4K to 1M",
                                       arg_block_size);

        r = cs_store_init(arg_store, &params);
        if (r == -EEXIST)
                return log_error_errno(r, "cannot create store %s: the directory is not empty", arg_store);
        if (r < 0)
                return log_error_errno(r, "cannot create store %s: %m", arg_store);

        if (!params.block_size)
                params.block_size = CS_BLOCK_SIZE_DEFAULT;
        printf("created store %s (block size %s, %s)\n", arg_store,
               format_bytes(size, params.block_size), params.lz4hc_level ? "lz4hc" : "lz4");
        return 0;
}

static void print_problem(void *userdata, cs_problem_severity severity, const char *message)
{
        unsigned *n_printed = userdata;
        const char *label = severity == CS_PROBLEM_ERROR ? "error" : "notice";

        if (!arg_json) {
                printf("%s: %s\n", label, message);
                return;
        }
        printf("%s{\"severity\":\"%s\",\"message\":", (*n_printed)++ ? "," : "", label);
        json_write_string(stdout, message, strlen(message));
        printf("}");
}

int verb_verify(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        cs_verify_report report = {};
        unsigned n_printed = 0;
        int r;

        r = open_store(0, &store);
        if (r < 0)
                return r;
        if (arg_json)
                printf("{\"problems\":[");
        r = cs_store_verify(store, arg_data ? CS_VERIFY_DATA : 0, print_problem, &n_printed, &report);
        if (arg_json)
                printf("],");
        if (r < 0 && r != -EBADMSG) {
                fflush(stdout);
                return log_error_errno(r, "cannot verify store %s: %m", arg_store);
        }

        if (arg_json)
                printf("\"ok\":%s,\"chunks_checked\":%" PRIu64 ",\"chunks_damaged\":%" PRIu64
                       ",\"chunks_missing\":%" PRIu64 ",\"packs_checked\":%" PRIu64
                       ",\"orphan_bytes\":%" PRIu64 ",\"orphan_chunks\":%" PRIu64 ",\"errors\":%" PRIu64 "}\n",
                       r == 0 ? "true" : "false", report.chunks_checked, report.chunks_damaged,
                       report.chunks_missing, report.packs_checked, report.orphan_bytes,
                       report.orphan_chunks, report.errors);
        else
                printf("checked %" PRIu64 " chunks%s in %" PRIu64 " packs: %" PRIu64 " errors, "
                       "%" PRIu64 " unreachable chunks, %" PRIu64 " reclaimable pack bytes\n",
                       report.chunks_checked, arg_data ? " (data re-hashed)" : "", report.packs_checked,
                       report.errors, report.orphan_chunks, report.orphan_bytes);
        if (r < 0)
                return log_error_errno(r, "store %s failed verification: %" PRIu64 " errors", arg_store,
                                       report.errors);
        return 0;
}

static double ratio(uint64_t a, uint64_t b)
{
        return b ? (double) a / (double) b : 0.0;
}

int verb_stats(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        char b1[FORMAT_BYTES_MAX], b2[FORMAT_BYTES_MAX], b3[FORMAT_BYTES_MAX], b4[FORMAT_BYTES_MAX];
        cs_stats s;
        int r;

        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = cs_store_stats(store, &s);
        if (r < 0)
                return log_error_errno(r, "cannot read statistics of store %s: %m", arg_store);

        if (arg_json) {
                printf("{\"block_size\":%" PRIu32 ",\"compression\":\"%s\",\"logical_bytes\":%" PRIu64
                       ",\"unique_bytes\":%" PRIu64 ",\"stored_bytes\":%" PRIu64 ",\"pack_bytes\":%" PRIu64
                       ",\"catalog_bytes\":%" PRIu64 ",\"chunks\":%" PRIu64 ",\"packs\":%" PRIu64
                       ",\"roots\":%" PRIu64 ",\"dedup_ratio\":%.3f,\"compression_ratio\":%.3f}\n",
                       s.block_size, s.lz4hc_level ? "lz4hc" : "lz4", s.logical_bytes, s.unique_bytes,
                       s.stored_bytes, s.pack_bytes, s.catalog_bytes, s.chunks, s.packs, s.roots,
                       ratio(s.logical_bytes, s.unique_bytes), ratio(s.unique_bytes, s.stored_bytes));
                return 0;
        }
        printf("store:             %s\n", arg_store);
        printf("block size:        %s, %s\n", format_bytes(b1, s.block_size), s.lz4hc_level ? "lz4hc" : "lz4");
        printf("logical bytes:     %s (%" PRIu64 ")\n", format_bytes(b1, s.logical_bytes), s.logical_bytes);
        printf("unique bytes:      %s (%" PRIu64 ")\n", format_bytes(b2, s.unique_bytes), s.unique_bytes);
        printf("stored bytes:      %s (%" PRIu64 ")\n", format_bytes(b3, s.stored_bytes), s.stored_bytes);
        printf("pack files:        %s in %" PRIu64 " packs\n", format_bytes(b4, s.pack_bytes), s.packs);
        printf("catalog:           %s\n", format_bytes(b1, s.catalog_bytes));
        printf("chunks:            %" PRIu64 "\n", s.chunks);
        printf("roots:             %" PRIu64 "\n", s.roots);
        printf("dedup ratio:       %.2fx\n", ratio(s.logical_bytes, s.unique_bytes));
        printf("compression ratio: %.2fx\n", ratio(s.unique_bytes, s.stored_bytes));
        return 0;
}
