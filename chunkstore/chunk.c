/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Chunks: naming them by keyed hash, compressing them and framing them as
 * pack records.  Pure functions of their inputs; no I/O, no shared state.
 *
 * Ids are XXH3-128 with a secret derived from the store's 256-bit key, one
 * secret per chunk kind.  Without the key nobody can compute an id, so no
 * one can craft data that collides with another clone's blocks.  The
 * derivation uses only xxHash's stable API (XXH3_128bits_withSeed), so ids
 * never change with the library version:
 *
 *     secret[kind][16*i .. 16*i+15] = XXH3_128(key || kind || "clonefs", seed = i)
 *
 * for i in 0..11 (192 bytes, XXH3's default secret size).
 */
#include <endian.h>
#include <errno.h>
#include <lz4.h>
#include <lz4hc.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cs-internal.h"

static const char hex_digits[] = "0123456789abcdef";

bool cs_chunk_id_is_zero(const cs_chunk_id *id)
{
        static const cs_chunk_id zero;
        return memcmp(id, &zero, sizeof(zero)) == 0;
}

bool cs_chunk_id_equal(const cs_chunk_id *a, const cs_chunk_id *b)
{
        return memcmp(a->bytes, b->bytes, CS_CHUNK_ID_SIZE) == 0;
}

char *cs_chunk_id_format(const cs_chunk_id *id, char buf[static CS_CHUNK_ID_STRING_MAX])
{
        for (size_t i = 0; i < CS_CHUNK_ID_SIZE; i++) {
                buf[2 * i] = hex_digits[id->bytes[i] >> 4];
                buf[2 * i + 1] = hex_digits[id->bytes[i] & 15];
        }
        buf[2 * CS_CHUNK_ID_SIZE] = 0;
        return buf;
}

static int unhex(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -EINVAL;
}

int cs_chunk_id_parse(const char *s, cs_chunk_id *ret_id)
{
        cs_chunk_id id;

        if (!s || strlen(s) != 2 * CS_CHUNK_ID_SIZE)
                return -EINVAL;
        for (size_t i = 0; i < CS_CHUNK_ID_SIZE; i++) {
                int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                id.bytes[i] = (uint8_t) (hi << 4 | lo);
        }
        *ret_id = id;
        return 0;
}

void cs_hasher_init(cs_hasher *h, const uint8_t key[CS_SECRET_SIZE])
{
        uint8_t input[CS_SECRET_SIZE + 1 + 7];

        memcpy(input, key, CS_SECRET_SIZE);
        memcpy(input + CS_SECRET_SIZE + 1, "clonefs", 7);
        for (int kind = 0; kind < _CS_KIND_MAX; kind++) {
                input[CS_SECRET_SIZE] = (uint8_t) kind;
                for (unsigned i = 0; i < CS_HASH_SECRET_SIZE / 16; i++) {
                        XXH128_canonical_t c;
                        XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(input, sizeof(input), i));
                        memcpy(h->secret[kind] + 16 * i, c.digest, 16);
                }
        }
}

void cs_hasher_hash(const cs_hasher *h, cs_chunk_kind kind, const void *data, size_t size,
                    cs_chunk_id *ret_id)
{
        XXH128_canonical_t c;

        XXH128_canonicalFromHash(&c, XXH3_128bits_withSecret(data, size, h->secret[kind],
                                                             CS_HASH_SECRET_SIZE));
        memcpy(ret_id->bytes, c.digest, CS_CHUNK_ID_SIZE);
        /* The zero id is reserved for zero blocks; a keyed hash landing on it
         * (probability 2^-128) is nudged rather than aliased. */
        if (UNLIKELY(cs_chunk_id_is_zero(ret_id)))
                ret_id->bytes[0] = 1;
}

bool cs_is_zero(const void *data, size_t size)
{
        const uint8_t *p = data;

        /* Compare the buffer with itself shifted by 16 bytes once its first
         * 16 are known to be zero: memcmp is vectorised, a byte loop is not. */
        if (size <= 16) {
                for (size_t i = 0; i < size; i++)
                        if (p[i])
                                return false;
                return true;
        }
        for (size_t i = 0; i < 16; i++)
                if (p[i])
                        return false;
        return memcmp(p, p + 16, size - 16) == 0;
}

void cs_record_header_encode(const cs_record_header *h, uint8_t out[CS_RECORD_HEADER_SIZE])
{
        uint32_t v;

        v = htole32(CS_RECORD_MAGIC);
        memcpy(out, &v, 4);
        out[4] = (uint8_t) h->kind;
        out[5] = (uint8_t) h->codec;
        out[6] = out[7] = 0;
        v = htole32(h->size);
        memcpy(out + 8, &v, 4);
        v = htole32(h->stored_size);
        memcpy(out + 12, &v, 4);
        memcpy(out + 16, h->id.bytes, CS_CHUNK_ID_SIZE);
}

int cs_record_header_decode(const uint8_t in[CS_RECORD_HEADER_SIZE], cs_record_header *ret)
{
        uint32_t magic, size, stored_size;

        memcpy(&magic, in, 4);
        memcpy(&size, in + 8, 4);
        memcpy(&stored_size, in + 12, 4);
        if (le32toh(magic) != CS_RECORD_MAGIC || in[4] >= _CS_KIND_MAX ||
            in[5] >= _CS_CODEC_MAX || in[6] || in[7])
                return -EBADMSG;
        ret->kind = in[4];
        ret->codec = in[5];
        ret->size = le32toh(size);
        ret->stored_size = le32toh(stored_size);
        if (ret->size > CS_CHUNK_SIZE_MAX || ret->stored_size > ret->size ||
            (ret->codec == CS_CODEC_RAW) != (ret->stored_size == ret->size))
                return -EBADMSG;
        memcpy(ret->id.bytes, in + 16, CS_CHUNK_ID_SIZE);
        return 0;
}

int cs_record_build(cs_chunk_kind kind, const cs_chunk_id *id, const void *data, size_t size,
                    int lz4hc_level, uint8_t **ret_record, size_t *ret_record_size)
{
        _cleanup_free_ uint8_t *record = NULL;
        cs_record_header h = { .kind = kind, .id = *id, .size = (uint32_t) size };
        int bound, n;

        if (size == 0 || size > CS_CHUNK_SIZE_MAX)
                return -EINVAL;
        bound = LZ4_compressBound((int) size);
        record = malloc(CS_RECORD_HEADER_SIZE + MAX((size_t) bound, size));
        if (!record)
                return -ENOMEM;

        /* Room for the worst case: LZ4's unbounded variant needs no output
         * checks and runs 4% fewer instructions (callgrind, 64 KiB blocks)
         * than one told to give up past size - 1 bytes.  Only a strictly
         * smaller result is kept, below: anything else costs a
         * decompression on every read for nothing. */
        if (lz4hc_level > 0)
                n = LZ4_compress_HC(data, (char *) record + CS_RECORD_HEADER_SIZE, (int) size, bound,
                                    lz4hc_level);
        else
                n = LZ4_compress_default(data, (char *) record + CS_RECORD_HEADER_SIZE, (int) size, bound);
        if (n > 0 && (size_t) n < size) {
                h.codec = CS_CODEC_LZ4;
                h.stored_size = (uint32_t) n;
        } else {
                h.codec = CS_CODEC_RAW;
                h.stored_size = (uint32_t) size;
                memcpy(record + CS_RECORD_HEADER_SIZE, data, size);
        }
        cs_record_header_encode(&h, record);
        *ret_record_size = CS_RECORD_HEADER_SIZE + h.stored_size;
        *ret_record = TAKE_PTR(record);
        return 0;
}

int cs_record_decode_payload(const cs_hasher *hasher, const cs_record_header *h,
                             const void *payload, void *out)
{
        cs_chunk_id actual;

        switch (h->codec) {
        case CS_CODEC_RAW:
                memcpy(out, payload, h->size);
                break;
        case CS_CODEC_LZ4: {
                int n = LZ4_decompress_safe(payload, out, (int) h->stored_size, (int) h->size);
                if (n < 0 || (uint32_t) n != h->size)
                        return -EBADMSG;
                break;
        }
        default:
                return -EBADMSG;
        }

        cs_hasher_hash(hasher, h->kind, out, h->size, &actual);
        if (!cs_chunk_id_equal(&actual, &h->id))
                return -EBADMSG;
        return 0;
}

size_t cs_tree_size(size_t n_children, size_t body_size)
{
        return 4 + n_children * CS_CHUNK_ID_SIZE + body_size;
}

void cs_tree_encode(void *buf, const cs_chunk_id *children, size_t n_children, const void *body,
                    size_t body_size)
{
        uint8_t *p = buf;
        uint32_t n = htole32((uint32_t) n_children);

        memcpy(p, &n, 4);
        if (n_children)
                memcpy(p + 4, children, n_children * CS_CHUNK_ID_SIZE);
        if (body_size)
                memcpy(p + 4 + n_children * CS_CHUNK_ID_SIZE, body, body_size);
}

int cs_tree_decode(const void *buf, size_t size, const cs_chunk_id **ret_children,
                   size_t *ret_n_children, const void **ret_body, size_t *ret_body_size)
{
        const uint8_t *p = buf;
        uint32_t n;

        if (size < 4)
                return -EBADMSG;
        memcpy(&n, p, 4);
        n = le32toh(n);
        if ((size - 4) / CS_CHUNK_ID_SIZE < n)
                return -EBADMSG;
        /* cs_chunk_id is a byte array: any alignment will do. */
        *ret_children = (const cs_chunk_id *) (p + 4);
        *ret_n_children = n;
        if (ret_body)
                *ret_body = p + 4 + (size_t) n * CS_CHUNK_ID_SIZE;
        if (ret_body_size)
                *ret_body_size = size - 4 - (size_t) n * CS_CHUNK_ID_SIZE;
        return 0;
}
