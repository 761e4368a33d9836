#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# kill -9 of a writer in the middle of a batch leaves a store that verify
# passes and that holds every chunk whose commit had returned; two writer
# processes at once never corrupt a pack or the catalog.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"

store="$workdir/store"
"$CLONECTL" --store "$store" init --block-size 16K >/dev/null

for round in 1 2 3; do
        # Made here, not by the background job's redirection, which may
        # not have run yet when the loop below first counts its lines.
        : >"$workdir/ids.$round"
        "$CS_WRITER" put "$store" "$round" 10000000 64 text >>"$workdir/ids.$round" &
        pid=$!
        on_exit "kill -9 $pid"
        # Let it commit a few batches and be in the middle of another.
        while [ "$(wc -l <"$workdir/ids.$round")" -lt $((round * 300)) ]; do
                kill -0 "$pid" 2>/dev/null || fail "the writer died on its own"
                sleep 0.05
        done
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        committed=$(wc -l <"$workdir/ids.$round")
        expect_ok "round $round: verify passes after kill -9 ($committed chunks committed)" \
                "$CLONECTL" --store "$store" verify
        expect_ok "round $round: every committed chunk is there" \
                sh -c "'$CS_WRITER' check '$store' <'$workdir/ids.$round'"
done

# The next writer recovers the dead writers' packs: their uncommitted tails
# are cut off, so no reclaimable bytes remain.
expect_ok "a new writer after the crashes" sh -c "'$CS_WRITER' put '$store' 9 10 5 >/dev/null"
expect_ok "verify --data after recovery" "$CLONECTL" --store "$store" verify --data --json
expect_eq "recovery cut off the uncommitted tails" "$(json_get "$workdir/out" orphan_bytes)" 0

# Two writers at once: one shared seed (the same chunks, racing) and one own.
"$CS_WRITER" put "$store" 42 600 25 text >"$workdir/a" &
a=$!
"$CS_WRITER" put "$store" 42 600 25 text >"$workdir/b" &
b=$!
"$CS_WRITER" put "$store" 43 600 40 random >"$workdir/c"
wait "$a" || fail "writer a failed"
wait "$b" || fail "writer b failed"
pass "three writers ran at once"
expect_ok "verify --data after concurrent writers" "$CLONECTL" --store "$store" verify --data
cat "$workdir/a" "$workdir/b" "$workdir/c" >"$workdir/all"
expect_ok "every chunk of every writer reads" sh -c "'$CS_WRITER' check '$store' <'$workdir/all'"
expect_ok "stats" "$CLONECTL" --store "$store" stats --json
chunks=$(json_get "$workdir/out" chunks)
[ "$chunks" -ge 1200 ] || fail "expected at least 1200 distinct chunks, got $chunks"
pass "racing writers stored shared chunks (catalog has $chunks chunks)"
