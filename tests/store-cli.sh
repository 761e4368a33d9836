#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# clonectl init/verify/stats: the happy path, and one clear error line for
# every kind of bad input, leaving the store intact.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"

store="$workdir/store"

expect_error "a block size that is not a power of two" "block size .* power of two" \
        "$CLONECTL" --store "$store" init --block-size 3000
expect_error "a malformed block size" "invalid --block-size" \
        "$CLONECTL" --store "$store" init --block-size banana
expect_ok "init" "$CLONECTL" --store "$store" init --block-size 16K
expect_grep "init names the block size" "16.0 KiB" "$workdir/out"
expect_error "init twice" "not empty" "$CLONECTL" --store "$store" init
expect_error "a block size of 0" "invalid --block-size '0'" "$CLONECTL" --store "$workdir/zero" init --block-size 0
[ ! -e "$workdir/zero" ] || fail "a refused init created a store"
expect_error "an empty --store" "--store needs a directory" "$CLONECTL" --store "" init
expect_error "an option the command does not take" "option --label does not apply to 'stats'" \
        "$CLONECTL" --store "$store" stats --label x
expect_error "an option a clone command does not take" "option --force does not apply to 'clone list'" \
        "$CLONECTL" --store "$store" clone list --force
expect_error "an unknown clone command" "unknown clone command 'bogus'" "$CLONECTL" --store "$store" clone bogus x
# Option errors of every verb are the usual one line, not getopt's own.
expect_error "an unknown short option" "^clonectl: error: unknown option '-x' \(try 'clonectl --help'\)$" \
        "$CLONECTL" --store "$store" snapshot -x t --from "$workdir"
expect_error "an unknown short option in a cluster" "^clonectl: error: unknown option '-x'" \
        "$CLONECTL" --store "$store" gc -vx
expect_error "an unknown long option" "^clonectl: error: unknown option '--bogus' " \
        "$CLONECTL" --store "$store" points t --bogus=1
expect_error "an option without its value" "^clonectl: error: option '--label' needs a value$" \
        "$CLONECTL" --store "$store" clone snapshot c --label
expect_error "a value for an option that takes none" "^clonectl: error: option '--json' takes no value$" \
        "$CLONECTL" --store "$store" stats --json=yes
expect_error "an ambiguous abbreviation" "^clonectl: error: option '--keep' is ambiguous" \
        "$CLONECTL" --store "$store" forget t --keep 1
for args in "clone" "stats extra" "snapshot -- -x --from $workdir"; do
        # shellcheck disable=SC2086
        "$CLONECTL" --store "$store" $args >/dev/null 2>"$workdir/err" && fail "clonectl $args succeeded"
        [ "$(wc -l <"$workdir/err")" = 1 ] || { cat "$workdir/err" >&2; fail "clonectl $args: not one line"; }
done
pass "usage errors are one line"

expect_eq "store directory mode" "$(stat -c %a "$store")" 700
expect_eq "config mode" "$(stat -c %a "$store/config")" 600
expect_eq "catalog mode" "$(stat -c %a "$store/catalog.db")" 600

expect_ok "stats --json" "$CLONECTL" --store "$store" stats --json
cp "$workdir/out" "$workdir/stats.json"
expect_eq "block size in stats" "$(json_get "$workdir/stats.json" block_size)" 16384
expect_eq "an empty store has no chunks" "$(json_get "$workdir/stats.json" chunks)" 0

expect_ok "the store comes from \$CLONEFS_STORE" env CLONEFS_STORE="$store" "$CLONECTL" stats
expect_grep "stats names the store" "^store: +$store" "$workdir/out"

mkdir "$workdir/plain"
expect_error "a directory that is not a store" "is not a clonefs store" \
        "$CLONECTL" --store "$workdir/plain" verify
expect_error "a missing store" "does not exist" "$CLONECTL" --store "$workdir/nope" stats
expect_error "an unknown command" "unknown command 'frobnicate'" "$CLONECTL" --store "$store" frobnicate
expect_error "no command" "no command given" "$CLONECTL"
expect_error "an extra argument" "wrong number of arguments" "$CLONECTL" --store "$store" stats extra

cp -a "$store" "$workdir/newer"
sed -i "s/^format = [0-9]*$/format = 7/" "$workdir/newer/config"
expect_error "a store of a newer format" "newer format" "$CLONECTL" --store "$workdir/newer" stats
cp -a "$store" "$workdir/older"
sed -i "s/^format = [0-9]*$/format = 1/" "$workdir/older/config"
expect_ok "a store of format 1 still works" "$CLONECTL" --store "$workdir/older" stats
expect_eq "and stays format 1" "$(grep '^format' "$workdir/older/config")" "format = 1"

# Data in, then damage it and watch verify find it.
"$CS_WRITER" put "$store" 1 40 10 >"$workdir/ids" || fail "cs-writer put failed"
expect_eq "40 chunks written" "$(wc -l <"$workdir/ids")" 40
# The catalog's -wal file stays (a full disk can still open the store),
# but empty once the last connection closed: it was left as large as the
# largest batch made it, 12 MB of a 315 MB store after one snapshot.
expect_eq "the catalog's WAL is empty once the writer closed" "$(stat -c %s "$store/catalog.db-wal")" 0
expect_ok "verify a clean store" "$CLONECTL" --store "$store" verify
expect_ok "verify --data a clean store" "$CLONECTL" --store "$store" verify --data --json
expect_eq "verify --json says ok" "$(json_get "$workdir/out" ok)" true
expect_eq "every chunk checked" "$(json_get "$workdir/out" chunks_checked)" 40
expect_grep "chunks unreachable from any root are reported" "orphan_chunks\":40" "$workdir/out"

pack=$(ls "$store"/packs/*.pack | head -n 1)
flip_byte "$pack" 100   # inside the first record's payload
expect_error "verify --data finds a flipped byte" "failed verification: 1 errors" \
        "$CLONECTL" --store "$store" verify --data
expect_grep "the damaged chunk is named" "^error: chunk [0-9a-f]{32} in pack .* damaged" "$workdir/out"
if "$CS_WRITER" check "$store" <"$workdir/ids" >"$workdir/check" 2>&1; then
        fail "get returned a damaged chunk"
fi
expect_grep "get refuses the damaged chunk" "checked 40 chunks, 1 bad" "$workdir/check"
flip_byte "$pack" 100
expect_ok "the store is intact once the byte is restored" "$CLONECTL" --store "$store" verify --data
expect_ok "every chunk reads" sh -c "'$CS_WRITER' check '$store' <'$workdir/ids'"

flip_byte "$pack" 40    # inside the first record's header
expect_error "plain verify finds a damaged record header" "failed verification" \
        "$CLONECTL" --store "$store" verify
flip_byte "$pack" 40

truncate -s 2000 "$pack"
expect_error "verify finds a truncated pack" "failed verification" "$CLONECTL" --store "$store" verify
expect_grep "and says so" "truncated" "$workdir/out"
rm "$pack"
expect_error "verify finds a missing pack" "failed verification" "$CLONECTL" --store "$store" verify
expect_grep "and says so" "is missing" "$workdir/out"

# A clone whose base point was forgotten says so in clone list, and still
# holds the point's files.
fstore="$workdir/forget-store"
mkdir "$workdir/fsrc"
echo first >"$workdir/fsrc/f"
"$CLONECTL" --store "$fstore" init >/dev/null || fail "init failed"
"$CLONECTL" --store "$fstore" snapshot fg --from "$workdir/fsrc" --label one >/dev/null || fail "snapshot failed"
echo second >"$workdir/fsrc/f"
"$CLONECTL" --store "$fstore" snapshot fg --from "$workdir/fsrc" --label two >/dev/null || fail "snapshot failed"
expect_ok "clone create from the first point" "$CLONECTL" --store "$fstore" clone create dev --from fg@one
expect_ok "clone list" "$CLONECTL" --store "$fstore" clone list
grep -q "forgotten" "$workdir/out" && fail "a live base point is listed as forgotten"
pass "a live base point is listed as it is"
expect_ok "forget the base point" "$CLONECTL" --store "$fstore" forget fg@one
expect_ok "clone list" "$CLONECTL" --store "$fstore" clone list
expect_grep "clone list marks the forgotten base" "fg@[0-9TZ]+ [(]forgotten[)]" "$workdir/out"
expect_ok "clone list --json" "$CLONECTL" --store "$fstore" clone list --json
expect_grep "and --json says it" '"base_forgotten":true' "$workdir/out"
expect_ok "the clone still exports" "$CLONECTL" --store "$fstore" clone export dev "$workdir/fout"
expect_eq "with the forgotten point's file" "$(cat "$workdir/fout/f")" first
