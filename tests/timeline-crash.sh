#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Snapshots that are killed, interrupted, raced by gc, or read a source that
# changes under them: never a partial point, always a store verify passes.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"

src="$workdir/src"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init --block-size 16K >/dev/null
mkdir -p "$src"
# New random content, so the next snapshot has new chunks to write.
refill() {
        for i in 1 2 3 4; do
                head -c $((48 << 20)) /dev/urandom >"$src/big$i"
        done
}
refill
expect_ok "a first point" "$CLONECTL" snapshot crash --from "$src" --label base
cp "$src/big1" "$workdir/base-big1"
refill

points() { "$CLONECTL" points crash --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# Wait until the snapshot has written something, then act.
wait_for_packs() {
        local before=$1 pid=$2
        for _ in $(seq 1 400); do
                now=$(du -sb "$CLONEFS_STORE/packs" | cut -f1)
                [ "$now" -gt $((before + (8 << 20))) ] && return 0
                kill -0 "$pid" 2>/dev/null || return 1
                sleep 0.02
        done
        return 1
}

# kill -9 in the middle of a snapshot
before=$(du -sb "$CLONEFS_STORE/packs" | cut -f1)
"$CLONECTL" snapshot crash --from "$src" --full >/dev/null 2>&1 &
pid=$!
on_exit "kill -9 $pid"
wait_for_packs "$before" "$pid" || fail "the snapshot finished before it could be killed"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
expect_eq "kill -9 left no partial point" "$(points)" 1
expect_ok "verify passes after kill -9" "$CLONECTL" verify
expect_ok "the old point still restores" "$CLONECTL" restore crash@base "$workdir/r1"
cmp "$workdir/base-big1" "$workdir/r1/big1" || fail "the old point lost data"
pass "and holds its data"

# SIGINT: no point, --post still runs, one clear line.
refill
before=$(du -sb "$CLONEFS_STORE/packs" | cut -f1)
"$CLONECTL" snapshot crash --from "$src" --full --post "touch $workdir/post-after-int" >"$workdir/out" 2>"$workdir/err" &
pid=$!
wait_for_packs "$before" "$pid" || fail "the snapshot finished before it could be interrupted"
kill -INT "$pid"
if wait "$pid"; then fail "an interrupted snapshot exited 0"; fi
expect_grep "the interruption is reported" "interrupted; no point created" "$workdir/err"
[ -e "$workdir/post-after-int" ] || fail "--post did not run after SIGINT"
pass "--post ran after SIGINT"
expect_eq "SIGINT left no partial point" "$(points)" 1
expect_ok "verify passes after SIGINT" "$CLONECTL" verify

# gc while a snapshot runs: gc waits for the writer, both succeed.
refill
"$CLONECTL" snapshot crash --from "$src" --full >"$workdir/snap" 2>&1 &
pid=$!
sleep 0.2
expect_ok "gc alongside a snapshot" "$CLONECTL" gc
wait "$pid" || { cat "$workdir/snap"; fail "the snapshot failed alongside gc"; }
pass "the snapshot succeeded alongside gc"
expect_ok "verify --data after both" "$CLONECTL" verify --data
expect_ok "the new point restores" "$CLONECTL" restore crash@latest "$workdir/r2"
cmp "$src/big4" "$workdir/r2/big4" || fail "the point made alongside gc lost data"
pass "the point made alongside gc is whole"

# A file that keeps changing while it is read is read again, then reported.
head -c $((64 << 20)) /dev/urandom >"$src/growing"
( while :; do echo x >>"$src/growing"; done ) &
writer=$!
on_exit "kill $writer"
if "$CLONECTL" snapshot crash --from "$src" >"$workdir/out" 2>"$workdir/err"; then
        fail "a snapshot of a file that kept changing exited 0"
fi
kill "$writer"
wait "$writer" 2>/dev/null || true
expect_grep "the changing file is reported" "growing: kept changing while being read" "$workdir/err"
expect_ok "verify after the changing file" "$CLONECTL" verify

# Files that vanish during the walk are skipped with a warning.
mkdir "$src/many"
for i in $(seq 1 3000); do : >"$src/many/f$i"; done
( sleep 0.05; rm -rf "$src/many" ) &
remover=$!
"$CLONECTL" snapshot crash --from "$src" --ignore-errors >"$workdir/out" 2>"$workdir/err" ||
        { cat "$workdir/err"; fail "a snapshot with vanishing files failed"; }
wait "$remover"
if grep -v "vanished while being read; skipped" "$workdir/err" | grep -q .; then
        cat "$workdir/err"
        fail "unexpected messages about vanishing files"
fi
pass "vanishing files only cause warnings ($(grep -c vanished "$workdir/err" || true) seen)"
expect_ok "verify --data at the end" "$CLONECTL" verify --data
