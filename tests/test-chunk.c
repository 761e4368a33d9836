/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of chunk.c: ids, keyed hashing, records, tree objects.
 */
#include <errno.h>

#include "cs-internal.h"
#include "tap.h"

static void test_ids(void)
{
        cs_chunk_id id, parsed;
        char hex[CS_CHUNK_ID_STRING_MAX];

        for (int i = 0; i < CS_CHUNK_ID_SIZE; i++)
                id.bytes[i] = (uint8_t) (i * 17 + 3);
        cs_chunk_id_format(&id, hex);
        is_int(strlen(hex), 32, "an id formats as 32 hex digits");
        ok(cs_chunk_id_parse(hex, &parsed) == 0 && cs_chunk_id_equal(&id, &parsed), "format and parse round-trip");
        is_int(cs_chunk_id_parse("0123", &parsed), -EINVAL, "a short id is rejected");
        is_int(cs_chunk_id_parse("zz23456789abcdef0123456789abcdef", &parsed), -EINVAL, "a non-hex id is rejected");
        ok(cs_chunk_id_is_zero(&(cs_chunk_id) {}), "the zero id is zero");
        ok(!cs_chunk_id_is_zero(&id), "another id is not zero");
}

static void test_hashing(void)
{
        uint8_t key1[CS_SECRET_SIZE] = { 1 }, key2[CS_SECRET_SIZE] = { 2 };
        static cs_hasher h1, h2;
        cs_chunk_id a, b, c, d;
        char data[1000];

        tap_fill(data, sizeof(data), DATA_TEXT, 1);
        cs_hasher_init(&h1, key1);
        cs_hasher_init(&h2, key2);
        cs_hasher_hash(&h1, CS_KIND_DATA, data, sizeof(data), &a);
        cs_hasher_hash(&h1, CS_KIND_DATA, data, sizeof(data), &b);
        cs_hasher_hash(&h2, CS_KIND_DATA, data, sizeof(data), &c);
        cs_hasher_hash(&h1, CS_KIND_TREE, data, sizeof(data), &d);
        ok(cs_chunk_id_equal(&a, &b), "the same data under the same key has the same id");
        ok(!cs_chunk_id_equal(&a, &c), "another key gives another id");
        ok(!cs_chunk_id_equal(&a, &d), "the kind is part of the id");
        data[500] ^= 1;
        cs_hasher_hash(&h1, CS_KIND_DATA, data, sizeof(data), &b);
        ok(!cs_chunk_id_equal(&a, &b), "one flipped bit changes the id");

        memset(data, 0, sizeof(data));
        ok(cs_is_zero(data, sizeof(data)), "zeros are zero");
        ok(cs_is_zero(data, 7), "short zeros are zero");
        data[999] = 1;
        ok(!cs_is_zero(data, sizeof(data)), "a last non-zero byte is seen");
        data[999] = 0;
        data[3] = 1;
        ok(!cs_is_zero(data, sizeof(data)), "an early non-zero byte is seen");
}

static void test_records(void)
{
        static const size_t sizes[] = { 1, 15, 16, 17, 100, 4095, 4096, 65535, 65536, 1048576 };
        uint8_t key[CS_SECRET_SIZE] = { 7 };
        static cs_hasher h;
        uint8_t *data = malloc(1048576), *out = malloc(1048576);

        cs_hasher_init(&h, key);
        for (size_t k = 0; k < 2; k++)
                for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                        int kind = k == 0 ? DATA_RANDOM : DATA_TEXT;
                        uint8_t *record = NULL;
                        size_t record_size = 0;
                        cs_record_header hdr;
                        cs_chunk_id id;

                        tap_fill(data, sizes[i], kind, i);
                        cs_hasher_hash(&h, CS_KIND_DATA, data, sizes[i], &id);
                        ok(cs_record_build(CS_KIND_DATA, &id, data, sizes[i], k, &record, &record_size) == 0,
                           "build a %s record of %zu bytes", kind == DATA_RANDOM ? "random" : "text", sizes[i]);
                        ok(cs_record_header_decode(record, &hdr) == 0 && hdr.size == sizes[i] &&
                                   cs_chunk_id_equal(&hdr.id, &id),
                           "its header decodes");
                        if (kind == DATA_RANDOM)
                                ok(hdr.codec == CS_CODEC_RAW, "random data is stored raw");
                        else if (sizes[i] >= 4096)
                                ok(hdr.codec == CS_CODEC_LZ4 && hdr.stored_size < sizes[i] / 2,
                                   "text is compressed (%u of %zu bytes)", hdr.stored_size, sizes[i]);
                        memset(out, 0xaa, sizes[i]);
                        ok(cs_record_decode_payload(&h, &hdr, record + CS_RECORD_HEADER_SIZE, out) == 0 &&
                                   memcmp(out, data, sizes[i]) == 0,
                           "it decodes to the same bytes");
                        record[CS_RECORD_HEADER_SIZE + hdr.stored_size / 2] ^= 0x40;
                        is_int(cs_record_decode_payload(&h, &hdr, record + CS_RECORD_HEADER_SIZE, out), -EBADMSG,
                               "a flipped byte is caught");
                        record[0] ^= 1;
                        is_int(cs_record_header_decode(record, &hdr), -EBADMSG, "a bad magic is caught");
                        free(record);
                }
        free(data);
        free(out);
}

static void test_trees(void)
{
        cs_chunk_id children[3] = { { { 1 } }, { { 0 } }, { { 3 } } };
        const cs_chunk_id *got;
        const void *body;
        size_t n, body_size, size = cs_tree_size(3, 5);
        uint8_t *buf = malloc(size);

        cs_tree_encode(buf, children, 3, "hello", 5);
        ok(cs_tree_decode(buf, size, &got, &n, &body, &body_size) == 0, "a tree decodes");
        ok(n == 3 && memcmp(got, children, sizeof(children)) == 0, "with its children");
        ok(body_size == 5 && memcmp(body, "hello", 5) == 0, "and its body");
        is_int(cs_tree_decode(buf, 20, &got, &n, &body, &body_size), -EBADMSG, "a truncated tree is rejected");
        is_int(cs_tree_decode(buf, 3, &got, &n, &body, &body_size), -EBADMSG, "a tiny tree is rejected");
        free(buf);
}

int main(void)
{
        test_ids();
        test_hashing();
        test_records();
        test_trees();
        return tap_done();
}
