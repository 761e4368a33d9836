/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Point trees: the encoding of directories, files and points as chunks.
 *
 * Design notes
 *
 *  1. Every object here is a CS_KIND_TREE chunk: its child list (what gc
 *     walks) then a body.  Integers are little-endian.  Each body starts
 *     with a 4-byte magic that carries the object's type and version:
 *       "CPT1" point:     children [root directory]; body: one entry (the
 *                         root's own metadata, empty name, child 0 = dir)
 *       "CDI1" directory: children = its pages; body: le64 entry count,
 *                         le32 page count, per page: le32 entries,
 *                         le16 first-name length, first name
 *       "CPG1" page:      children = what its entries reference; body:
 *                         le32 entry count, then entries sorted by name
 *       "CSG1" segment:   children = up to CS_SEGMENT_BLOCKS block ids
 *  2. An entry: le16 name length, name, le32 mode, uid, gid, nlink,
 *     le64 size, le64 mtime sec, le32 mtime nsec, le64 ctime sec,
 *     le32 ctime nsec, le64 source dev, source ino, rdev, link group,
 *     u8 flags (bit 0: content is segmented; bit 1: le64 data blocks
 *     follows), [le64 data blocks], le32 first child, le32 child count,
 *     le32 target length, target, le16 xattr count, then per xattr: le16
 *     name length, name, le32 value length, value.
 *     A regular file's children are its block ids (at most
 *     CS_INLINE_BLOCKS_MAX) or its segment ids; a directory's single child
 *     is its directory object.  Data blocks, the file's blocks that are
 *     not holes, is written for segmented files by stores of format 2 on
 *     (format 1 readers would take it for the next field): st_blocks then
 *     needs no segment read.  Inline content counts its own zero ids.
 *  3. A page is closed once its entries pass PAGE_BODY_MAX bytes (so it may
 *     exceed it by one entry), so changing one file in a directory of a
 *     million rewrites one page and the small index, not the whole
 *     directory.  (cs_dir_load reads every page today; the index's first
 *     names allow a lookup to read one page.)
 *  4. Decoding checks every length against the buffer: a malformed object
 *     is -EBADMSG, never a read past its end.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cs-internal.h"

#define PAGE_BODY_MAX (64u * 1024)
#define PAGE_CHILDREN_MAX 8192u

#define MAGIC_POINT "CPT1"
#define MAGIC_DIR "CDI1"
#define MAGIC_PAGE "CPG1"
#define MAGIC_SEGMENT "CSG1"

/* --- A growable byte buffer --------------------------------------------- */

typedef struct buf {
        uint8_t *data;
        size_t size, capacity;
        bool failed;
} buf;

static void buf_grow(buf *b, size_t more)
{
        if (b->failed || b->size + more <= b->capacity)
                return;
        size_t cap = MAX(b->capacity * 2, b->size + more + 256);
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
                b->failed = true;
                return;
        }
        b->data = p;
        b->capacity = cap;
}

static void buf_put(buf *b, const void *p, size_t n)
{
        buf_grow(b, n);
        if (b->failed || n == 0)
                return;
        memcpy(b->data + b->size, p, n);
        b->size += n;
}

static void buf_u8(buf *b, uint8_t v)
{
        buf_put(b, &v, 1);
}

static void buf_u16(buf *b, uint16_t v)
{
        v = htole16(v);
        buf_put(b, &v, 2);
}

static void buf_u32(buf *b, uint32_t v)
{
        v = htole32(v);
        buf_put(b, &v, 4);
}

static void buf_u64(buf *b, uint64_t v)
{
        v = htole64(v);
        buf_put(b, &v, 8);
}

/* --- A bounds-checked reader -------------------------------------------- */

typedef struct reader {
        const uint8_t *p;
        size_t left;
        bool bad;
} reader;

static const void *rd_take(reader *r, size_t n)
{
        if (r->bad || n > r->left) {
                r->bad = true;
                return NULL;
        }
        const void *p = r->p;
        r->p += n;
        r->left -= n;
        return p;
}

#define RD_INT(bits)                                           \
        static uint##bits##_t rd_u##bits(reader *r)            \
        {                                                      \
                uint##bits##_t v = 0;                          \
                const void *p = rd_take(r, sizeof(v));         \
                if (p)                                         \
                        memcpy(&v, p, sizeof(v));              \
                return le##bits##toh(v);                       \
        }
RD_INT(16)
RD_INT(32)
RD_INT(64)
#undef RD_INT

static uint8_t rd_u8(reader *r)
{
        const uint8_t *p = rd_take(r, 1);
        return p ? *p : 0;
}

/* --- Entries ------------------------------------------------------------ */

enum {
        ENTRY_SEGMENTED = 1 << 0,
        ENTRY_DATA_BLOCKS = 1 << 1, /* format 2 */
};

static uint64_t count_data_blocks(const cs_chunk_id *ids, size_t n)
{
        uint64_t data = 0;

        for (size_t i = 0; i < n; i++)
                data += !cs_chunk_id_is_zero(&ids[i]);
        return data;
}

uint64_t cs_content_data_bytes(const cs_content *content, uint64_t size, uint32_t block_size)
{
        uint64_t data_blocks = content->segmented ? content->data_blocks
                                                  : count_data_blocks(content->ids, content->n);

        if (content->segmented && !content->data_blocks_known)
                return size;
        return MIN(data_blocks * block_size, size);
}


static void encode_entry(buf *b, const cs_entry *e, uint32_t first_child, uint32_t n_children,
                         bool with_data_blocks)
{
        bool segmented = S_ISREG(e->mode) && e->content.segmented;
        bool data_blocks = with_data_blocks && segmented && e->content.data_blocks_known;

        buf_u16(b, (uint16_t) e->name_len);
        buf_put(b, e->name, e->name_len);
        buf_u32(b, e->mode);
        buf_u32(b, e->uid);
        buf_u32(b, e->gid);
        buf_u32(b, e->nlink);
        buf_u64(b, e->size);
        buf_u64(b, (uint64_t) e->mtime_sec);
        buf_u32(b, e->mtime_nsec);
        buf_u64(b, (uint64_t) e->ctime_sec);
        buf_u32(b, e->ctime_nsec);
        buf_u64(b, e->source_dev);
        buf_u64(b, e->source_ino);
        buf_u64(b, e->rdev);
        buf_u64(b, e->link_group);
        buf_u8(b, (segmented ? ENTRY_SEGMENTED : 0) | (data_blocks ? ENTRY_DATA_BLOCKS : 0));
        if (data_blocks)
                buf_u64(b, e->content.data_blocks);
        buf_u32(b, first_child);
        buf_u32(b, n_children);
        if (S_ISLNK(e->mode)) {
                buf_u32(b, (uint32_t) e->size);
                buf_put(b, e->target, e->size);
        } else {
                buf_u32(b, 0);
        }
        buf_u16(b, (uint16_t) e->n_xattrs);
        for (size_t i = 0; i < e->n_xattrs; i++) {
                size_t len = strlen(e->xattrs[i].name);
                buf_u16(b, (uint16_t) len);
                buf_put(b, e->xattrs[i].name, len);
                buf_u32(b, e->xattrs[i].size);
                buf_put(b, e->xattrs[i].value, e->xattrs[i].size);
        }
}

/* The children an entry contributes to its object. */
static size_t entry_children(const cs_entry *e, const cs_chunk_id **ret)
{
        if (S_ISREG(e->mode)) {
                *ret = e->content.ids;
                return e->content.n;
        }
        if (S_ISDIR(e->mode)) {
                *ret = &e->subdir;
                return 1;
        }
        *ret = NULL;
        return 0;
}

/* Decodes one entry.  Strings point into the object's buffer; xattr
 * names are copied NUL-terminated into an allocation owned by the caller
 * through *xattr_storage (appended to a list freed with the directory). */
typedef struct decoded_object {
        uint8_t *data; /* the object, decompressed */
        size_t size;
        const cs_chunk_id *children;
        size_t n_children;
        reader body;
} decoded_object;

typedef struct allocation_list {
        void **items;
        size_t n, capacity;
} allocation_list;

static int keep_allocation(allocation_list *l, void *p)
{
        if (l->n == l->capacity) {
                size_t cap = l->capacity ? 2 * l->capacity : 16;
                void **items = reallocarray(l->items, cap, sizeof(*items));
                if (!items)
                        return -ENOMEM;
                l->items = items;
                l->capacity = cap;
        }
        l->items[l->n++] = p;
        return 0;
}

static void free_allocations(allocation_list *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->items[i]);
        free(l->items);
        *l = (allocation_list) {};
}

static int decode_entry(reader *r, const decoded_object *o, allocation_list *keep, cs_entry *e)
{
        uint32_t first_child, n_children, target_len;
        uint64_t data_blocks = 0;
        uint16_t n_xattrs;
        uint8_t flags;

        *e = (cs_entry) {};
        e->name_len = rd_u16(r);
        e->name = rd_take(r, e->name_len);
        e->mode = rd_u32(r);
        e->uid = rd_u32(r);
        e->gid = rd_u32(r);
        e->nlink = rd_u32(r);
        e->size = rd_u64(r);
        e->mtime_sec = (int64_t) rd_u64(r);
        e->mtime_nsec = rd_u32(r);
        e->ctime_sec = (int64_t) rd_u64(r);
        e->ctime_nsec = rd_u32(r);
        e->source_dev = rd_u64(r);
        e->source_ino = rd_u64(r);
        e->rdev = rd_u64(r);
        e->link_group = rd_u64(r);
        flags = rd_u8(r);
        if (flags & ENTRY_DATA_BLOCKS)
                data_blocks = rd_u64(r);
        first_child = rd_u32(r);
        n_children = rd_u32(r);
        target_len = rd_u32(r);
        e->target = rd_take(r, target_len);
        n_xattrs = rd_u16(r);
        if (r->bad || e->name_len > CS_NAME_MAX || e->mtime_nsec >= 1000000000u ||
            first_child > o->n_children || n_children > o->n_children - first_child)
                return -EBADMSG;

        if (n_xattrs > 0) {
                cs_xattr *x = calloc(n_xattrs, sizeof(*x));
                if (!x || keep_allocation(keep, x) < 0) {
                        free(x);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < n_xattrs; i++) {
                        uint16_t name_len = rd_u16(r);
                        const char *name = rd_take(r, name_len);
                        char *copy;
                        x[i].size = rd_u32(r);
                        x[i].value = rd_take(r, x[i].size);
                        if (r->bad)
                                return -EBADMSG;
                        copy = strndup(name, name_len);
                        if (!copy || keep_allocation(keep, copy) < 0) {
                                free(copy);
                                return -ENOMEM;
                        }
                        x[i].name = copy;
                }
                e->xattrs = x;
                e->n_xattrs = n_xattrs;
        }

        if (S_ISREG(e->mode)) {
                e->content = (cs_content) {
                        .segmented = flags & ENTRY_SEGMENTED,
                        .n = n_children,
                        .ids = o->children + first_child,
                };
                /* Inline ids are counted where asked, not on every
                 * directory load (cs_content_data_bytes). */
                e->content.data_blocks_known = !e->content.segmented || (flags & ENTRY_DATA_BLOCKS);
                if (e->content.segmented && (flags & ENTRY_DATA_BLOCKS))
                        e->content.data_blocks = data_blocks;
                if (e->content.data_blocks > (uint64_t) n_children * CS_SEGMENT_BLOCKS)
                        return -EBADMSG;
        } else if (S_ISDIR(e->mode)) {
                if (n_children != 1)
                        return -EBADMSG;
                memcpy(&e->subdir, &o->children[first_child], sizeof(e->subdir));
        } else if (n_children != 0) {
                return -EBADMSG;
        }
        if (S_ISLNK(e->mode) ? target_len != e->size : target_len != 0)
                return -EBADMSG;
        return 0;
}

/* Loads a tree object and checks its magic. */
static int load_object(cs_store *store, const cs_chunk_id *id, const char *magic, decoded_object *ret)
{
        _cleanup_free_ uint8_t *data = NULL;
        cs_chunk_info info;
        const void *body;
        size_t body_size;
        int r;

        r = cs_store_has(store, id, &info);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        if (info.kind != CS_KIND_TREE)
                return -EBADMSG;
        data = malloc(MAX(info.size, 1u));
        if (!data)
                return -ENOMEM;
        r = cs_store_get(store, id, data, info.size);
        if (r < 0)
                return r;
        *ret = (decoded_object) { .size = info.size };
        r = cs_tree_decode(data, info.size, &ret->children, &ret->n_children, &body, &body_size);
        if (r < 0)
                return r;
        if (body_size < 4 || memcmp(body, magic, 4) != 0)
                return -EBADMSG;
        ret->body = (reader) { .p = (const uint8_t *) body + 4, .left = body_size - 4 };
        ret->data = TAKE_PTR(data);
        return 0;
}

/* Puts a tree object made of children and body. */
static int put_object(cs_store *store, const cs_chunk_id *children, size_t n_children,
                      const buf *body, cs_chunk_id *ret_id)
{
        _cleanup_free_ uint8_t *object = NULL;
        size_t size = cs_tree_size(n_children, body->size);
        int r;

        if (body->failed)
                return -ENOMEM;
        if (size > CS_CHUNK_SIZE_MAX)
                return -E2BIG;
        object = malloc(size);
        if (!object)
                return -ENOMEM;
        cs_tree_encode(object, children, n_children, body->data, body->size);
        r = cs_store_put(store, CS_KIND_TREE, object, size, ret_id);
        return r < 0 ? r : 0;
}

/* --- File content ------------------------------------------------------- */

uint64_t cs_store_blocks_of(const cs_store *store, uint64_t size)
{
        return DIV_ROUND_UP(size, store->config.block_size);
}

int cs_content_build(cs_store *store, const cs_chunk_id *blocks, size_t n_blocks, cs_content *ret,
                     cs_chunk_id **ret_storage)
{
        _cleanup_free_ cs_chunk_id *segments = NULL;
        size_t n_segments;
        buf body = {};
        int r = 0;

        *ret_storage = NULL;
        if (n_blocks <= CS_INLINE_BLOCKS_MAX) {
                *ret = (cs_content) {
                        .segmented = false,
                        .n = n_blocks,
                        .ids = blocks,
                        .data_blocks_known = true,
                        .data_blocks = count_data_blocks(blocks, n_blocks),
                };
                return 0;
        }

        n_segments = DIV_ROUND_UP(n_blocks, CS_SEGMENT_BLOCKS);
        segments = calloc(n_segments, sizeof(*segments));
        if (!segments)
                return -ENOMEM;
        buf_put(&body, MAGIC_SEGMENT, 4);
        for (size_t s = 0; s < n_segments && r >= 0; s++) {
                size_t first = s * CS_SEGMENT_BLOCKS;
                r = put_object(store, blocks + first, MIN(CS_SEGMENT_BLOCKS, n_blocks - first), &body,
                               &segments[s]);
        }
        free(body.data);
        if (r < 0)
                return r;
        *ret = (cs_content) {
                .segmented = true,
                .n = n_segments,
                .ids = segments,
                .data_blocks_known = true,
                .data_blocks = count_data_blocks(blocks, n_blocks),
        };
        *ret_storage = TAKE_PTR(segments);
        return 0;
}

int cs_content_blocks(cs_store *store, const cs_content *content, uint64_t first, size_t n,
                      cs_chunk_id *blocks)
{
        size_t done = 0;

        if (!content->segmented) {
                if (first > content->n || n > content->n - first)
                        return -EINVAL;
                memcpy(blocks, content->ids + first, n * sizeof(*blocks));
                return 0;
        }
        while (done < n) {
                uint64_t k = first + done;
                size_t s = k / CS_SEGMENT_BLOCKS, offset = k % CS_SEGMENT_BLOCKS, take;
                decoded_object o;
                cs_chunk_id segment;
                int r;

                if (s >= content->n)
                        return -EINVAL;
                memcpy(&segment, &content->ids[s], sizeof(segment));
                r = load_object(store, &segment, MAGIC_SEGMENT, &o);
                if (r < 0)
                        return r;
                /* Every segment but the last holds exactly CS_SEGMENT_BLOCKS. */
                bool last = s + 1 == content->n;
                if ((!last && o.n_children != CS_SEGMENT_BLOCKS) || o.n_children > CS_SEGMENT_BLOCKS ||
                    offset >= o.n_children) {
                        free(o.data);
                        return last && offset >= o.n_children && o.n_children <= CS_SEGMENT_BLOCKS ? -EINVAL
                                                                                                   : -EBADMSG;
                }
                take = MIN(n - done, o.n_children - offset);
                memcpy(blocks + done, o.children + offset, take * sizeof(*blocks));
                free(o.data);
                done += take;
        }
        return 0;
}

/* --- Building directories ----------------------------------------------- */

typedef struct stored_entry {
        cs_entry e;
} stored_entry;

struct cs_dir_builder {
        cs_store *store;
        stored_entry *entries;
        size_t n, capacity;
        allocation_list keep;
};

int cs_dir_builder_new(cs_store *store, cs_dir_builder **ret)
{
        cs_dir_builder *b;

        if (!store || !ret)
                return -EINVAL;
        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->store = store;
        *ret = b;
        return 0;
}

cs_dir_builder *cs_dir_builder_free(cs_dir_builder *b)
{
        if (!b)
                return NULL;
        free_allocations(&b->keep);
        free(b->entries);
        return mfree(b);
}

void cs_dir_builder_freep(cs_dir_builder **b)
{
        cs_dir_builder_free(*b);
}

static void *keep_copy(allocation_list *keep, const void *p, size_t n)
{
        void *copy = malloc(MAX(n, 1u));
        if (!copy)
                return NULL;
        if (n)
                memcpy(copy, p, n);
        if (keep_allocation(keep, copy) < 0) {
                free(copy);
                return NULL;
        }
        return copy;
}

static bool entry_is_valid(const cs_entry *e)
{
        if (!e->name || e->name_len == 0 || e->name_len > CS_NAME_MAX ||
            memchr(e->name, '/', e->name_len) || memchr(e->name, 0, e->name_len) ||
            (e->name_len == 1 && e->name[0] == '.') ||
            (e->name_len == 2 && memcmp(e->name, "..", 2) == 0) || e->mtime_nsec >= 1000000000u ||
            e->n_xattrs > UINT16_MAX)
                return false;
        if (S_ISLNK(e->mode) && (!e->target || e->size > 65535))
                return false;
        if (S_ISREG(e->mode) && e->content.n && !e->content.ids)
                return false;
        return true;
}

bool cs_entry_same_xattrs(const cs_entry *a, const cs_entry *b)
{
        if (a->n_xattrs != b->n_xattrs)
                return false;
        for (size_t i = 0; i < a->n_xattrs; i++) {
                size_t j = 0;
                while (j < b->n_xattrs && strcmp(a->xattrs[i].name, b->xattrs[j].name) != 0)
                        j++;
                if (j == b->n_xattrs || a->xattrs[i].size != b->xattrs[j].size ||
                    memcmp(a->xattrs[i].value, b->xattrs[j].value, a->xattrs[i].size) != 0)
                        return false;
        }
        return true;
}

int cs_dir_builder_add(cs_dir_builder *b, const cs_entry *entry)
{
        const cs_chunk_id *children;
        size_t n_children;
        cs_entry e;

        if (!b || !entry || !entry_is_valid(entry))
                return -EINVAL;
        e = *entry;
        if (b->n == b->capacity) {
                size_t cap = b->capacity ? 2 * b->capacity : 64;
                stored_entry *p = reallocarray(b->entries, cap, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                b->entries = p;
                b->capacity = cap;
        }

        /* Deep copy: the caller's buffers may be gone by finish(). */
        e.name = keep_copy(&b->keep, entry->name, entry->name_len);
        e.target = S_ISLNK(entry->mode) ? keep_copy(&b->keep, entry->target, entry->size) : NULL;
        n_children = entry_children(entry, &children);
        if (S_ISREG(entry->mode))
                e.content.ids = keep_copy(&b->keep, children, n_children * sizeof(cs_chunk_id));
        if (!e.name || (S_ISLNK(entry->mode) && !e.target) ||
            (S_ISREG(entry->mode) && !e.content.ids))
                return -ENOMEM;
        if (entry->n_xattrs) {
                cs_xattr *x = keep_copy(&b->keep, entry->xattrs, entry->n_xattrs * sizeof(cs_xattr));
                if (!x)
                        return -ENOMEM;
                for (size_t i = 0; i < entry->n_xattrs; i++) {
                        x[i].name = keep_copy(&b->keep, entry->xattrs[i].name, strlen(entry->xattrs[i].name) + 1);
                        x[i].value = keep_copy(&b->keep, entry->xattrs[i].value, entry->xattrs[i].size);
                        if (!x[i].name || !x[i].value)
                                return -ENOMEM;
                }
                e.xattrs = x;
        }
        b->entries[b->n++] = (stored_entry) { .e = e };
        return 0;
}

static int compare_names(const char *a, size_t a_len, const char *b, size_t b_len)
{
        int c = memcmp(a, b, MIN(a_len, b_len));
        if (c != 0)
                return c;
        return a_len < b_len ? -1 : a_len > b_len;
}

static int compare_entries(const void *x, const void *y)
{
        const stored_entry *a = x, *b = y;
        return compare_names(a->e.name, a->e.name_len, b->e.name, b->e.name_len);
}

typedef struct page_builder {
        bool data_blocks; /* the store writes them (design note 2) */
        buf body;
        cs_chunk_id *children;
        size_t n_children, capacity;
        uint32_t n_entries;
} page_builder;

static int page_add(page_builder *p, const cs_entry *e)
{
        const cs_chunk_id *children;
        size_t n = entry_children(e, &children);

        if (p->n_children + n > p->capacity) {
                size_t cap = MAX(2 * p->capacity, p->n_children + n + 64);
                cs_chunk_id *c = reallocarray(p->children, cap, sizeof(*c));
                if (!c)
                        return -ENOMEM;
                p->children = c;
                p->capacity = cap;
        }
        if (n)
                memcpy(p->children + p->n_children, children, n * sizeof(*children));
        encode_entry(&p->body, e, (uint32_t) p->n_children, (uint32_t) n, p->data_blocks);
        p->n_children += n;
        p->n_entries++;
        return p->body.failed ? -ENOMEM : 0;
}

int cs_dir_builder_finish(cs_dir_builder *b, cs_chunk_id *ret_dir)
{
        page_builder page = { .data_blocks = b && cs_store_writes_data_blocks(b->store) };
        buf index = {}, page_body = {};
        cs_chunk_id *pages = NULL;
        size_t n_pages = 0, first = 0;
        int r = 0;

        if (!b || !ret_dir)
                return -EINVAL;
        if (b->n > 1)
                qsort(b->entries, b->n, sizeof(*b->entries), compare_entries);
        for (size_t i = 1; i < b->n; i++)
                if (compare_entries(&b->entries[i - 1], &b->entries[i]) == 0)
                        return -EEXIST;

        pages = calloc(MAX(b->n, 1u), sizeof(*pages));
        if (!pages)
                return -ENOMEM;
        buf_put(&index, MAGIC_DIR, 4);
        buf_u64(&index, b->n);
        buf_u32(&index, 0); /* page count, patched below */

        for (size_t i = 0; i <= b->n && r >= 0; i++) {
                bool flush = page.n_entries > 0 &&
                             (i == b->n || page.body.size >= PAGE_BODY_MAX ||
                              page.n_children >= PAGE_CHILDREN_MAX);
                if (flush) {
                        page_body.size = 0;
                        buf_put(&page_body, MAGIC_PAGE, 4);
                        buf_u32(&page_body, page.n_entries);
                        buf_put(&page_body, page.body.data, page.body.size);
                        r = put_object(b->store, page.children, page.n_children, &page_body,
                                       &pages[n_pages]);
                        if (r < 0)
                                break;
                        const cs_entry *f = &b->entries[first].e;
                        buf_u32(&index, page.n_entries);
                        buf_u16(&index, (uint16_t) f->name_len);
                        buf_put(&index, f->name, f->name_len);
                        n_pages++;
                        first = i;
                        page.body.size = 0;
                        page.n_children = 0;
                        page.n_entries = 0;
                }
                if (i < b->n)
                        r = page_add(&page, &b->entries[i].e);
        }
        if (r >= 0 && !index.failed) {
                uint32_t n = htole32((uint32_t) n_pages);
                memcpy(index.data + 4 + 8, &n, 4);
                r = put_object(b->store, pages, n_pages, &index, ret_dir);
        } else if (r >= 0) {
                r = -ENOMEM;
        }
        free(page.body.data);
        free(page.children);
        free(page_body.data);
        free(index.data);
        free(pages);
        return r;
}

int cs_point_build(cs_store *store, const cs_entry *root, cs_chunk_id *ret_point)
{
        buf body = {};
        cs_entry e;
        int r;

        if (!store || !root || !S_ISDIR(root->mode) || !ret_point)
                return -EINVAL;
        e = *root;
        e.name = "";
        e.name_len = 0;
        buf_put(&body, MAGIC_POINT, 4);
        encode_entry(&body, &e, 0, 1, false); /* a directory: no content */
        r = put_object(store, &root->subdir, 1, &body, ret_point);
        free(body.data);
        return r;
}

/* --- Loading directories ------------------------------------------------ */

struct cs_dir {
        cs_entry *entries;
        size_t n;
        allocation_list keep; /* object buffers, xattr arrays and names */
};

cs_dir *cs_dir_free(cs_dir *d)
{
        if (!d)
                return NULL;
        free_allocations(&d->keep);
        free(d->entries);
        return mfree(d);
}

void cs_dir_freep(cs_dir **d)
{
        cs_dir_free(*d);
}

static int load_page(cs_store *store, cs_dir *d, const cs_chunk_id *page_id, uint32_t expected)
{
        decoded_object o;
        uint32_t n;
        int r;

        r = load_object(store, page_id, MAGIC_PAGE, &o);
        if (r < 0)
                return r;
        r = keep_allocation(&d->keep, o.data);
        if (r < 0) {
                free(o.data);
                return r;
        }
        n = rd_u32(&o.body);
        if (o.body.bad || n != expected)
                return -EBADMSG;
        for (uint32_t i = 0; i < n; i++) {
                r = decode_entry(&o.body, &o, &d->keep, &d->entries[d->n]);
                if (r < 0)
                        return r;
                d->n++;
        }
        return o.body.left == 0 ? 0 : -EBADMSG;
}

int cs_dir_load(cs_store *store, const cs_chunk_id *dir_id, cs_dir **ret)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        decoded_object index;
        uint64_t n_entries;
        uint32_t n_pages;
        int r;

        if (!store || !dir_id || !ret)
                return -EINVAL;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        r = load_object(store, dir_id, MAGIC_DIR, &index);
        if (r < 0)
                return r;
        r = keep_allocation(&d->keep, index.data);
        if (r < 0) {
                free(index.data);
                return r;
        }
        n_entries = rd_u64(&index.body);
        n_pages = rd_u32(&index.body);
        /* Every entry takes more than 64 bytes of some page: bound the
         * allocation by what the pages could hold before trusting it. */
        if (index.body.bad || n_pages != index.n_children ||
            n_entries > (uint64_t) n_pages * (PAGE_BODY_MAX + 65536) / 64)
                return -EBADMSG;
        d->entries = calloc(MAX(n_entries, 1u), sizeof(*d->entries));
        if (!d->entries)
                return -ENOMEM;

        for (uint32_t p = 0; p < n_pages; p++) {
                uint32_t count = rd_u32(&index.body);
                uint16_t first_len = rd_u16(&index.body);
                cs_chunk_id page_id;
                rd_take(&index.body, first_len);
                if (index.body.bad || count > n_entries - d->n)
                        return -EBADMSG;
                memcpy(&page_id, &index.children[p], sizeof(page_id));
                r = load_page(store, d, &page_id, count);
                if (r < 0)
                        return r;
        }
        if (d->n != n_entries)
                return -EBADMSG;
        for (size_t i = 1; i < d->n; i++)
                if (compare_names(d->entries[i - 1].name, d->entries[i - 1].name_len,
                                  d->entries[i].name, d->entries[i].name_len) >= 0)
                        return -EBADMSG;
        *ret = TAKE_PTR(d);
        return 0;
}

size_t cs_dir_size(const cs_dir *d)
{
        return d->n;
}

const cs_entry *cs_dir_entry(const cs_dir *d, size_t i)
{
        return i < d->n ? &d->entries[i] : NULL;
}

const cs_entry *cs_dir_find(const cs_dir *d, const char *name, size_t name_len)
{
        size_t lo = 0, hi = d->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = compare_names(name, name_len, d->entries[mid].name, d->entries[mid].name_len);
                if (c == 0)
                        return &d->entries[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

int cs_point_load(cs_store *store, const cs_chunk_id *point, cs_entry *ret_root, cs_dir **ret_keep)
{
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL;
        decoded_object o;
        int r;

        if (!store || !point || !ret_root || !ret_keep)
                return -EINVAL;
        keep = calloc(1, sizeof(*keep));
        if (!keep)
                return -ENOMEM;
        r = load_object(store, point, MAGIC_POINT, &o);
        if (r < 0)
                return r;
        r = keep_allocation(&keep->keep, o.data);
        if (r < 0) {
                free(o.data);
                return r;
        }
        r = decode_entry(&o.body, &o, &keep->keep, ret_root);
        if (r < 0)
                return r;
        if (!S_ISDIR(ret_root->mode) || o.body.left != 0)
                return -EBADMSG;
        *ret_keep = TAKE_PTR(keep);
        return 0;
}
