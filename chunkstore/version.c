/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libraries the chunk store links, as loaded at run time, against the
 * oldest versions configure.ac accepts.  Programs include no library
 * header of their own (sqlite3.h, lz4.h, xxhash.h stay in here), so
 * "clonectl doctor" asks this file.
 */
#include <lz4.h>
#include <sqlite3.h>
#include <stdio.h>
#include <xxhash.h>

#include "chunkstore.h"

/* configure.ac: sqlite3 >= 3.35, liblz4 >= 1.9, libxxhash >= 0.8. */
#define MIN_SQLITE 3035000
#define MIN_LZ4 10900
#define MIN_XXHASH 800

static void set(cs_library_version *v, const char *name, const char *package, const char *minimum, bool too_old)
{
        v->name = name;
        v->package = package;
        v->minimum = minimum;
        v->too_old = too_old;
}

void cs_library_versions(cs_library_version ret[static CS_LIBRARY_COUNT])
{
        unsigned x = XXH_versionNumber();

        set(&ret[0], "SQLite", "libsqlite3-0", "3.35", sqlite3_libversion_number() < MIN_SQLITE);
        snprintf(ret[0].version, sizeof(ret[0].version), "%s", sqlite3_libversion());
        set(&ret[1], "LZ4", "liblz4-1", "1.9", LZ4_versionNumber() < MIN_LZ4);
        snprintf(ret[1].version, sizeof(ret[1].version), "%s", LZ4_versionString());
        set(&ret[2], "xxHash", "libxxhash0", "0.8", x < MIN_XXHASH);
        snprintf(ret[2].version, sizeof(ret[2].version), "%u.%u.%u", x / 10000, x / 100 % 100, x % 100);
}
