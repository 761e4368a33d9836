#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A timeline switch of the source: clonefs is linked to a standby, which
# is promoted while receive-wal streams from it.  The receiver follows the
# server onto timeline 2 (TIMELINE_HISTORY), stores both timelines' WAL
# byte for byte, and a clone at a time after the promotion recovers across
# the switch.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg-lib.sh"

require_postgres
require_fuse
primary=$workdir/primary
standby=$workdir/standby
pport=$((20000 + RANDOM % 20000))
sport=$((pport + 1))

pg_init "$primary" "$pport"
pg_start "$primary"
pg_sql "$primary" "$pport" "CREATE TABLE ticks(id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"

mkdir -p "$standby" "$standby.sock" && chown postgres: "$standby" "$standby.sock" && chmod 700 "$standby"
as_pg "$PGBIN/pg_basebackup" -h "$primary.sock" -p "$pport" -U postgres -D "$standby" -R -X stream ||
        fail "pg_basebackup of the standby"
cat >>"$standby/postgresql.conf" <<EOF
port = $sport
unix_socket_directories = '$standby.sock'
EOF
pg_start "$standby"
expect_eq "the standby is in recovery" "$(pg_sql "$standby" "$sport" "SELECT pg_is_in_recovery()")" t

expect_ok "link the standby" cl pg link db "host=$standby.sock port=$sport user=postgres"
"$CLONECTL" --store "$store" pg receive-wal db >"$workdir/recv.out" 2>"$workdir/recv.err" &
recv=$!
on_exit "kill $recv"

pg_tick "$primary" "$pport" 10
pg_sql "$primary" "$pport" "SELECT pg_switch_wal()" >/dev/null
pg_tick "$primary" "$pport" 5
# Let the standby replay everything, then promote it.
want=$(pg_sql "$primary" "$pport" "SELECT pg_current_wal_lsn()")
for _ in $(seq 100); do
        [ "$(pg_sql "$standby" "$sport" "SELECT pg_last_wal_replay_lsn() >= '$want'")" = t ] && break
        sleep 0.1
done
pg_stop "$primary"
as_pg "$PGBIN/pg_ctl" -D "$standby" -w promote >/dev/null || fail "promote"
expect_eq "the promoted standby is on timeline 2" \
        "$(pg_sql "$standby" "$sport" "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)::int")" 2
pg_tick "$standby" "$sport" 10
T=$(pg_sql "$standby" "$sport" "SELECT max(at) FROM ticks")
sleep 1.1
pg_tick "$standby" "$sport" 5
pg_sql "$standby" "$sport" "SELECT pg_switch_wal()" >/dev/null
pg_tick "$standby" "$sport" 3
pg_wait_slot "$standby" "$sport"
pass "receive-wal followed the server onto timeline 2"
grep -q "switched to timeline 2" "$workdir/recv.err" || { cat "$workdir/recv.err" >&2; fail "no switch logged"; }
pass "the switch is logged"

expect_ok "the history file of timeline 2 is stored" cl pg wal-fetch db 00000002.history "$workdir/h"
cmp -s "$workdir/h" "$standby/pg_wal/00000002.history" || fail "00000002.history differs"
pass "it is the server's"
n=0
cur=$(pg_sql "$standby" "$sport" "SELECT pg_walfile_name(pg_current_wal_lsn())")
for f in "$standby"/pg_wal/00000002000000000000000?; do
        name=$(basename "$f")
        [ "$name" \< "$cur" ] || continue
        cl pg wal-fetch db "$name" "$workdir/seg" 2>/dev/null || continue
        cmp -s "$f" "$workdir/seg" || fail "stored $name differs from the server's"
        n=$((n + 1))
done
[ "$n" -ge 1 ] || fail "no complete segment of timeline 2 compared"
pass "$n stored segments of timeline 2 are byte-identical"

expect_ok "clone create --at a time after the promotion" cl clone create c1 --from db --at "$T"
mnt=$workdir/c1
mount_clonefs "$store" "$mnt" -o clone=c1 -o allow_other
cport=$((sport + 1))
pg_start_on "$mnt" "$cport"
wantn=$(pg_sql "$standby" "$sport" "SELECT count(*) FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= '$T'")
expect_eq "the clone holds exactly the rows committed by T, across the switch" \
        "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$wantn"
expect_eq "the clone went past timeline 2 (it promoted onto 3)" \
        "$(pg_sql "$mnt" "$cport" "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)::int")" 3
kill -TERM $recv
wait $recv || { cat "$workdir/recv.err" >&2; fail "receive-wal failed"; }
pass "receive-wal stopped cleanly"
