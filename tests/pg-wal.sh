#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# PostgreSQL WAL: pg receive-wal streams the source's WAL into the store
# through a restart of the source, acknowledges only what is stored, and
# every stored complete segment is byte-identical to the source's file;
# archive-wal stores a file and refuses other bytes under a stored name;
# wal-fetch hands segments back to a recovering server, which reaches a
# target time exactly; pg unlink drops the slot and stops a running
# receive-wal, and the name can be linked again.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg-lib.sh"

require_postgres
src=$workdir/src

PG_HBA="local replication all trust
local all all trust"
pg_init "$src" 5493
pg_start "$src"
sock=$src.sock
pg_sql "$src" 5493 "CREATE TABLE ticks(id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
expect_ok "pg link" cl pg link db "host=$sock port=5493 user=postgres"
expect_error "an unknown pg command is named" "unknown pg command 'frob'" cl pg frob
expect_error "a pg command with the wrong arguments" "usage: clonectl pg unlink TIMELINE" cl pg unlink db extra

# A base with no WAL yet covers no time: not the Unix epoch.
expect_ok "timeline show right after pg link" cl timeline show db
expect_grep "it says no time is covered yet" "no time covered yet" "$workdir/out"
grep -q 1970 "$workdir/out" && fail "timeline show prints the epoch: $(cat "$workdir/out")"
expect_ok "timeline show --json right after pg link" cl --json timeline show db
expect_eq "its base's from is null" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bases"][0]["from"])' "$workdir/out")" None

expect_error "receive-wal of an unlinked timeline" "not linked" cl pg receive-wal nope
expect_error "wal-fetch of a bad name" "not a WAL segment or history file name" cl pg wal-fetch db nonsense "$workdir/x"
expect_error "wal-fetch of a missing segment" "has no WAL segment" \
        cl pg wal-fetch db 0000000100000000000000F0 "$workdir/x"
# restore_command: only a file the store lacks is exit 1, which recovery
# takes for the end of the WAL; any other failure is above 125 and stops it.
status=0
cl pg wal-fetch db 0000000100000000000000F0 "$workdir/x" || status=$?
expect_eq "a missing segment exits 1, the end of the WAL to recovery" "$status" 1
status=0
cl pg wal-fetch nope 0000000100000000000000F0 "$workdir/x" || status=$?
expect_eq "an unlinked timeline exits above 125: recovery stops" "$(( status > 125 ))" 1
status=0
cl pg wal-fetch db 0000000100000000000000F0 2>/dev/null || status=$?
expect_eq "so does a restore_command written wrong (no destination)" "$(( status > 125 ))" 1

"$CLONECTL" --store "$store" pg receive-wal db >"$workdir/recv.out" 2>"$workdir/recv.err" &
recv=$!
on_exit "kill $recv"

tick() {
        pg_tick "$src" 5493 "$1"
}
tick 10
expect_error "a second receive-wal of the timeline" "slot 'clonefs_db' is in use: another receive-wal" \
        timeout 60 "$CLONECTL" --store "$store" pg receive-wal db
pg_sql "$src" 5493 "SELECT pg_switch_wal()" >/dev/null
tick 5
# A restart of the source while receive-wal runs, down long enough for a
# reconnect to fail.
pg_stop "$src"
sleep 2.5
as_pg "$PGBIN/pg_ctl" -D "$src" -l "$src.log" -w start >/dev/null || fail "restart"
tick 5
pg_sql "$src" 5493 "SELECT pg_switch_wal()" >/dev/null
tick 5
mid=$(pg_sql "$src" 5493 "SELECT max(at) FROM ticks")
sleep 1.1
tick 10
pg_sql "$src" 5493 "SELECT pg_switch_wal()" >/dev/null
tick 3
# One more complete segment the source cannot have recycled yet.
pg_sql "$src" 5493 "SELECT pg_switch_wal()" >/dev/null
tick 3

# Everything up to the last write is acknowledged: the slot's flush
# position (restart_lsn) reaches it only through receive-wal.
pg_wait_slot "$src" 5493
pass "the slot's position reaches the source's flush position"
kill -TERM $recv
wait $recv || { cat "$workdir/recv.err" >&2; fail "receive-wal exited with an error"; }
pass "receive-wal stops cleanly on SIGTERM"
grep -q "reconnecting" "$workdir/recv.err" || { cat "$workdir/recv.err" >&2; fail "no reconnect logged"; }
pass "receive-wal reconnected after the restart"
expect_grep "a failed reconnect is a warning" "^clonectl: warning: cannot connect to the source" "$workdir/recv.err"
expect_grep "the reconnect is logged once it works" "^clonectl: reconnected to the source: streaming from" "$workdir/recv.err"
if grep "error:" "$workdir/recv.err"; then
        fail "receive-wal logged an error line but went on (and exited 0)"
fi
pass "no error line from a receive-wal that carried on"

# Every complete segment the source still has matches the stored one.
n=0
for f in "$src"/pg_wal/0000000100000000000000??; do
        name=$(basename "$f")
        cur=$(pg_sql "$src" 5493 "SELECT pg_walfile_name(pg_current_wal_lsn())")
        [ "$name" \< "$cur" ] || continue
        cl pg wal-fetch db "$name" "$workdir/seg" 2>/dev/null || continue
        cmp -s "$f" "$workdir/seg" || fail "stored $name differs from the source's"
        n=$((n + 1))
done
[ "$n" -ge 3 ] || fail "only $n complete segments compared"
pass "$n stored segments are byte-identical to the source's"

# archive-wal: a file in, the same file out.
cur=$(pg_sql "$src" 5493 "SELECT pg_walfile_name(pg_current_wal_lsn())")
cp "$src/pg_wal/$cur" "$workdir/$cur.partial"
expect_ok "archive-wal a .partial file" cl pg archive-wal db "$workdir/$cur.partial"
expect_ok "wal-fetch it back" cl pg wal-fetch db "$cur" "$workdir/back"
cmp -s "$workdir/$cur.partial" "$workdir/back" || fail "the archived file came back different"
pass "the archived file comes back the same"
# archive_command must not replace an archived file with other bytes; the
# same bytes again (a retried archive_command) succeed.
seg=000000010000000000000002
expect_ok "wal-fetch a stored segment" cl pg wal-fetch db $seg "$workdir/$seg"
expect_ok "archive-wal of the same bytes under its name" cl pg archive-wal db "$workdir/$seg"
flip_byte "$workdir/$seg" 100000
expect_error "archive-wal of other bytes under a stored name" \
        "$seg is archived in timeline 'db' already, with other contents" cl pg archive-wal db "$workdir/$seg"
expect_ok "wal-fetch it again" cl pg wal-fetch db $seg "$workdir/again"
status=0
cl pg wal-fetch db $seg "$workdir/no-such-dir/$seg" 2>"$workdir/err" || status=$?
expect_eq "a destination that cannot be written exits above 125" "$(( status > 125 ))" 1
expect_grep "and says why in one line" "cannot write .*no-such-dir.*No such file or directory" "$workdir/err"
flip_byte "$workdir/$seg" 100000
cmp -s "$workdir/again" "$workdir/$seg" || fail "the stored $seg changed"
pass "the stored copy is kept"
printf '1\t0/5000000\tno recovery target specified\n' >"$workdir/00000002.history"
expect_ok "archive-wal of a history file" cl pg archive-wal db "$workdir/00000002.history"
expect_ok "archive-wal of it again" cl pg archive-wal db "$workdir/00000002.history"
printf '1\t0/6000000\tno recovery target specified\n' >"$workdir/00000002.history"
expect_error "archive-wal of another history file of that name" "00000002.history is archived .* with other contents" \
        cl pg archive-wal db "$workdir/00000002.history"
expect_error "archive-wal of a short full segment" "not a whole segment" \
        sh -c "head -c 100 '$workdir/$cur.partial' >'$workdir/000000010000000000000077' &&
               '$CLONECTL' --store '$store' pg archive-wal db '$workdir/000000010000000000000077'"
expect_ok "verify" cl verify --data
expect_ok "gc keeps the WAL" cl gc
expect_ok "verify after gc" cl verify --data

# Point-in-time recovery of the base point through wal-fetch.
restored=$workdir/restored
expect_ok "restore the base point" cl restore db@latest "$restored"
chown -R postgres: "$restored" "$store"
chmod 700 "$restored"
mkdir "$restored.sock" && chown postgres: "$restored.sock"
cat >>"$restored/postgresql.conf" <<EOF
port = 5494
unix_socket_directories = '$restored.sock'
restore_command = '$CLONECTL --store $store pg wal-fetch db %f %p'
recovery_target_time = '$mid'
recovery_target_action = 'promote'
EOF
touch "$restored/recovery.signal"
pg_start "$restored"
pg_wait_promoted "$restored" 5494
# Rows commit just after their "at": the source's commit timestamps say
# which ones committed by the target.
want=$(pg_sql "$src" 5493 "SELECT count(*) FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= '$mid'")
expect_eq "recovery stopped at the target: exactly the rows committed by then" \
        "$(pg_sql "$restored" 5494 "SELECT count(*) FROM ticks")" "$want"
expect_eq "the newest row is before the target, within a second" \
        "$(pg_sql "$restored" 5494 "SELECT max(at) <= '$mid' AND max(at) > '$mid'::timestamptz - interval '1 second' FROM ticks")" t
expect_eq "and no later row exists" "$(pg_sql "$restored" 5494 "SELECT count(*) FROM ticks WHERE at > '$mid'")" 0

# Retention: forgetting the first base point drops the WAL only it needed.
expect_ok "a second base point" cl pg sync db
expect_ok "forget --dry-run" cl --json forget db --keep-last 1 --dry-run
dry_segments=$(json_get "$workdir/out" wal_segments_dropped)
dry_wal=$(json_get "$workdir/out" wal_frees_bytes)
dry_total=$(json_get "$workdir/out" frees_bytes)
[ "$dry_segments" -gt 0 ] && [ "$dry_wal" -gt 0 ] && [ "$dry_total" -ge "$dry_wal" ] ||
        fail "forget --dry-run does not count the WAL it would drop: $(cat "$workdir/out")"
pass "forget --dry-run counts the WAL it would drop: $dry_segments segments, $dry_wal bytes of $dry_total"
expect_ok "the dry run dropped nothing" cl pg wal-fetch db 000000010000000000000002 "$workdir/x"
expect_ok "forget the first" cl forget db --keep-last 1
expect_grep "forget drops the WAL before the remaining base point" \
        "^dropped $dry_segments WAL segments from before the oldest base point kept, freeing" "$workdir/out"
expect_error "the first base point's WAL is gone" "has no WAL segment" \
        cl pg wal-fetch db 000000010000000000000002 "$workdir/x"
expect_ok "gc" cl --json gc
freed=$(json_get "$workdir/out" bytes_removed)
[ "$freed" -ge "$dry_total" ] || fail "gc freed $freed bytes, forget said $dry_total"
pass "gc freed at least what forget said ($freed >= $dry_total bytes)"
expect_ok "verify after gc" cl verify --data

# --- pg unlink ------------------------------------------------------------------
# A timeline whose points were all forgotten keeps its link and slot until
# pg unlink drops both, stopping the receive-wal that streams into it.
conn="host=$sock port=5493 user=postgres"
expect_ok "link a second timeline" cl pg link uri "$conn" --slot qa_uri
"$CLONECTL" --store "$store" pg receive-wal uri >"$workdir/recv2.out" 2>"$workdir/recv2.err" &
recv2=$!
on_exit "kill $recv2"
expect_ok "sync it" cl pg sync uri
tick 3
pg_sql "$src" 5493 "SELECT pg_switch_wal()" >/dev/null
tick 3
for p in $(cl points uri | awk 'NR > 1 {print $1}'); do
        expect_ok "forget uri@$p" cl forget "uri@$p"
done
expect_ok "gc" cl gc
expect_ok "timeline show of a linked timeline without points" cl timeline show uri
expect_grep "it shows the link" "PostgreSQL, slot qa_uri" "$workdir/out"
expect_eq "receive-wal still runs" "$(kill -0 $recv2 && echo yes)" yes
expect_ok "pg unlink while receive-wal streams into the timeline" cl pg unlink uri
expect_grep "it dropped the slot" "^unlinked timeline uri; replication slot qa_uri dropped" "$workdir/out"
expect_eq "the slot is gone from the source" \
        "$(pg_sql "$src" 5493 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'qa_uri'")" 0
status=0
wait $recv2 || status=$?
expect_eq "the running receive-wal stopped with status 3" "$status" 3
expect_grep "saying why" "error: timeline 'uri' was unlinked from its PostgreSQL server" "$workdir/recv2.err"
expect_error "receive-wal of the unlinked timeline" "timeline 'uri' is not linked" cl pg receive-wal uri
expect_error "pg unlink of an unlinked timeline" "timeline 'uri' is not linked" cl pg unlink uri
expect_error "the name is free" "no timeline 'uri'" cl timeline show uri
expect_ok "the name can be linked again" cl pg link uri "$conn" --slot qa_uri
expect_ok "timeline show --json of the new link" cl --json timeline show uri
expect_eq "no WAL of the old link is left to it" "$(json_get "$workdir/out" wal_segments)" 0
# The source out of reach: one line naming the slot, nothing changed.
pg_stop "$src"
expect_error "pg unlink with the source down" \
        "cannot drop replication slot 'qa_uri' of timeline 'uri' .*nothing changed; unlink with --keep-slot.*pg_drop_replication_slot\('qa_uri'\)" \
        cl pg unlink uri
expect_ok "still linked" cl timeline show uri
expect_grep "still linked, says timeline show" "PostgreSQL, slot qa_uri" "$workdir/out"
expect_ok "pg unlink --keep-slot with the source down" cl pg unlink uri --keep-slot
expect_grep "it says the slot is kept" "replication slot qa_uri is kept" "$workdir/out"
expect_ok "timeline show" cl timeline show uri
expect_grep "the points stay, unlinked" "^timeline uri: 1 points, not linked to PostgreSQL" "$workdir/out"
expect_error "a clone of its base point, which has no WAL left, is refused" \
        "uri@.* is a PostgreSQL base backup, and timeline 'uri' is not linked any more" \
        cl clone create bare --from uri@latest
as_pg "$PGBIN/pg_ctl" -D "$src" -l "$src.log" -w start >/dev/null || fail "start the source again"
expect_eq "the kept slot is on the source" \
        "$(pg_sql "$src" 5493 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'qa_uri'")" 1
pg_sql "$src" 5493 "SELECT pg_drop_replication_slot('qa_uri')" >/dev/null
expect_ok "verify after unlink" cl verify --data

# A slot the source invalidated (max_slot_wal_keep_size) while receive-wal
# was down: one clear line, no endless retries.
pg_sql "$src" 5493 "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'" >/dev/null
pg_sql "$src" 5493 "SELECT pg_reload_conf()" >/dev/null
for _ in 1 2 3 4; do
        pg_sql "$src" 5493 "INSERT INTO ticks SELECT FROM generate_series(1, 20000); SELECT pg_switch_wal()" >/dev/null
done
pg_sql "$src" 5493 "CHECKPOINT" >/dev/null
expect_eq "the source invalidated the slot" \
        "$(pg_sql "$src" 5493 "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'clonefs_db'")" lost
expect_error "receive-wal on an invalidated slot" "slot 'clonefs_db' on the source was invalidated.*link the server to a new timeline" \
        timeout 60 "$CLONECTL" --store "$store" pg receive-wal db
status=0
timeout 60 "$CLONECTL" --store "$store" pg receive-wal db 2>/dev/null || status=$?
expect_eq "it exits with status 3, which its unit does not restart on" "$status" 3
