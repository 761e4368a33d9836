#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# PostgreSQL 15 on clones, through the kernel: a data dir snapshotted into
# a point, two clones running postgres at once under pgbench, the clonefs
# daemon killed with -9 in the middle of pgbench, a remount, crash
# recovery, and pg_amcheck finding no corruption.  The point and the other
# clone stay untouched throughout.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root
require_postgres

chmod 755 "$workdir"
src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null

# A source database with pgbench tables, stopped cleanly before its snapshot.
mkdir -p "$src"
chown postgres "$src"
pg_initdb "$src/data"
pg_start "$src/data" "$workdir/sock-src"
pg_run pgbench -h "$workdir/sock-src" -i -q -s 3 postgres >/dev/null 2>&1 || fail "pgbench -i on the source failed"
accounts=$(pg_sql "$workdir/sock-src" "SELECT count(*) FROM pgbench_accounts")
pg_stop "$src/data"
sleep 1.1
expect_ok "snapshot a stopped data dir" "$CLONECTL" snapshot pgsrc --from "$src"
expect_ok "clone a" "$CLONECTL" clone create a --from pgsrc@latest
expect_ok "clone b" "$CLONECTL" clone create b --from pgsrc@latest

mount_clonefs "$CLONEFS_STORE" "$mnt" -o allow_other
a="$mnt/clones/a/data"
b="$mnt/clones/b/data"
expect_eq "the clone's data dir keeps its owner and mode" "$(stat -c %U:%a "$a")" "postgres:700"

pg_start "$a" "$workdir/sock-a"
pg_start "$b" "$workdir/sock-b"
expect_eq "postgres on clone a sees the source's rows" "$(pg_sql "$workdir/sock-a" "SELECT count(*) FROM pgbench_accounts")" "$accounts"
pg_run pgbench -h "$workdir/sock-a" -i -q -s 2 postgres >/dev/null 2>&1 || fail "pgbench -i on clone a failed"
pass "pgbench -i on clone a"

# Both clones under load at once.
pg_run pgbench -h "$workdir/sock-a" -c 2 -j 1 -T 15 postgres >"$workdir/bench-a" 2>&1 &
bench_a=$!
pg_run pgbench -h "$workdir/sock-b" -c 2 -j 1 -T 15 postgres >"$workdir/bench-b" 2>&1 &
bench_b=$!
wait "$bench_a" || { cat "$workdir/bench-a" >&2; fail "pgbench on clone a failed"; }
wait "$bench_b" || { cat "$workdir/bench-b" >&2; fail "pgbench on clone b failed"; }
pass "pgbench -T 15 on two clones at once: $(grep -o 'tps = [0-9.]*' "$workdir/bench-a" | head -1) and $(grep -o 'tps = [0-9.]*' "$workdir/bench-b" | head -1)"
expect_eq "clone b still has the source's scale" "$(pg_sql "$workdir/sock-b" "SELECT count(*) FROM pgbench_accounts")" "$accounts"
expect_eq "clone a has its own scale" "$(pg_sql "$workdir/sock-a" "SELECT count(*) FROM pgbench_accounts")" 200000
pg_sql "$workdir/sock-a" "CREATE TABLE marker(v text); INSERT INTO marker VALUES ('committed before the crash')" >/dev/null
pg_sql "$workdir/sock-b" "CHECKPOINT" >/dev/null

# kill -9 of the daemon in the middle of pgbench (-n: without the run's
# truncation of pgbench_history, so rows can be counted): every postgres on the
# mount loses its files at once, like a power cut for the clone.
committed_before=$(pg_sql "$workdir/sock-a" "SELECT count(*) FROM pgbench_history")
pg_run pgbench -n -h "$workdir/sock-a" -c 2 -j 1 -T 60 postgres >"$workdir/bench-crash" 2>&1 &
bench_crash=$!
sleep 5
kill -9 "$CLONEFS_PID"
wait "$CLONEFS_PID" 2>/dev/null || true
wait "$bench_crash" 2>/dev/null && fail "pgbench went on after the daemon died"
pg_kill "$a"
pg_kill "$b"
fusermount3 -u -z "$mnt" 2>/dev/null || true
pass "the daemon was killed during pgbench"

mount_clonefs "$CLONEFS_STORE" "$mnt" -o allow_other
pg_start "$a" "$workdir/sock-a"
expect_grep "postgres on clone a ran crash recovery" "redo done|database system was not properly shut down" "$a/log"
expect_eq "the committed marker row survived" "$(pg_sql "$workdir/sock-a" "SELECT v FROM marker")" "committed before the crash"
committed_after=$(pg_sql "$workdir/sock-a" "SELECT count(*) FROM pgbench_history")
[ "$committed_after" -ge "$committed_before" ] || { grep -v "^$" "$a/log" | tail -n 30 >&2; fail "pgbench_history lost rows: $committed_before before, $committed_after after"; }
pass "no committed transaction lost ($committed_before rows before the crash run, $committed_after after recovery)"
pg_run pg_amcheck -h "$workdir/sock-a" --install-missing --heapallindexed --rootdescend postgres >"$workdir/amcheck" 2>&1 ||
        { cat "$workdir/amcheck" >&2; fail "pg_amcheck found corruption on clone a"; }
pass "pg_amcheck --heapallindexed finds no corruption after recovery"
pg_run pgbench -h "$workdir/sock-a" -c 2 -j 1 -T 3 postgres >/dev/null 2>&1 || fail "pgbench after recovery failed"
pass "clone a takes writes again after recovery"
pg_stop "$a"

pg_start "$b" "$workdir/sock-b"
pg_run pg_amcheck -h "$workdir/sock-b" --install-missing --heapallindexed postgres >"$workdir/amcheck" 2>&1 ||
        { cat "$workdir/amcheck" >&2; fail "pg_amcheck found corruption on clone b"; }
pass "clone b recovers too and pg_amcheck finds nothing"
pg_stop "$b"

# Neither clone touched the point it came from.
diff -r --no-dereference "$src/" "$mnt/timelines/pgsrc/latest/" >"$workdir/diff" 2>&1 ||
        { head "$workdir/diff" >&2; fail "the point differs from the source"; }
pass "the point still equals the source data dir"
unmount_clonefs "$mnt"
