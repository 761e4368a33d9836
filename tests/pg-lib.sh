# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers for tests that run a real PostgreSQL 15 as a replication
# source, sourced after lib.sh: they replace lib.sh's plainer
# require_postgres, pg_start, pg_stop and pg_sql (used by the tests that
# run postgres on clones) with ones that configure and address a server by
# its directory and port.  Servers run as the postgres user in the test's
# scratch directory, listen only on a Unix socket there, and are stopped
# (immediate) on any exit.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# Skips without root, PostgreSQL 15 or its user; then makes the scratch
# directory reachable for postgres and a store in $store, used by cl().
require_postgres() {
        require_root
        [ -x "$PGBIN/postgres" ] || skip "no PostgreSQL 15 at $PGBIN"
        getent passwd postgres >/dev/null || skip "no postgres user"
        chmod 755 "$workdir"
        store=$workdir/store
        "$CLONECTL" --store "$store" init >/dev/null
}

cl() {
        "$CLONECTL" --store "$store" "$@"
}

as_pg() {
        runuser -u postgres -- "$@"
}

# pg_init DIR PORT: initdb DIR, a socket directory DIR.sock, replication
# settings; hba lines come from $PG_HBA (one per line).
pg_init() {
        dir=$1
        port=$2
        mkdir -p "$dir.sock" "$dir"
        chown postgres: "$dir.sock" "$dir"
        chmod 700 "$dir"
        as_pg "$PGBIN/initdb" -D "$dir" -U postgres -A trust --no-sync >"$dir.initdb.log" 2>&1 ||
                { cat "$dir.initdb.log" >&2; fail "initdb $dir"; }
        cat >>"$dir/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir.sock'
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
max_slot_wal_keep_size = 1GB
fsync = off
full_page_writes = on
log_min_messages = warning
track_commit_timestamp = on
EOF
        printf '%s\n' "${PG_HBA:-local all all trust
local replication all trust}" >"$dir/pg_hba.conf"
}

# pg_start DIR: starts the server and registers its stop.
pg_start() {
        touch "$1.log" && chown postgres: "$1.log"
        as_pg "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -t 60 start >/dev/null ||
                { cat "$1.log" >&2; fail "cannot start postgres in $1"; }
        on_exit "runuser -u postgres -- $PGBIN/pg_ctl -D '$1' -m immediate -w stop"
}

pg_stop() {
        as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null
}

# pg_sql DIR PORT SQL [USER]: one value, unaligned.
pg_sql() {
        as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$1.sock" -p "$2" -U "${4:-postgres}" -d postgres -c "$3"
}

# pg_tick DIR PORT N: N rows into ticks, one transaction each, 100 ms apart.
pg_tick() {
        for _ in $(seq "$3"); do
                pg_sql "$1" "$2" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
                sleep 0.1
        done
}

# pg_wait_slot DIR PORT: waits (15 s at most) until the clonefs_db slot has
# been acknowledged up to the server's flush position; fails otherwise.
pg_wait_slot() {
        local last
        last=$(pg_sql "$1" "$2" "SELECT pg_current_wal_flush_lsn()")
        for _ in $(seq 150); do
                [ "$(pg_sql "$1" "$2" "SELECT restart_lsn >= '$last' FROM pg_replication_slots
                                         WHERE slot_name = 'clonefs_db'")" = t ] && return 0
                sleep 0.1
        done
        cat "$workdir/recv.err" >&2
        fail "the slot was not acknowledged up to $last"
}

# pg_wait_promoted DIR PORT: waits (30 s at most) for the end of recovery.
pg_wait_promoted() {
        for _ in $(seq 300); do
                [ "$(pg_sql "$1" "$2" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && return 0
                sleep 0.1
        done
        cat "$1.log" >&2
        fail "$1 did not finish recovery"
}

# pg_start_on MNT PORT: starts postgres on a clone's mount (socket MNT.sock,
# log MNT.log), registers its stop, waits for the end of recovery.
pg_start_on() {
        mkdir -p "$1.sock" && chown postgres: "$1.sock"
        touch "$1.log" && chown postgres: "$1.log"
        as_pg "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -t 120 -o "-p $2 -k $1.sock -c listen_addresses=''" \
                start >/dev/null || { cat "$1.log" >&2; fail "postgres did not start on $1"; }
        on_exit "runuser -u postgres -- $PGBIN/pg_ctl -D '$1' -m immediate -w stop"
        pg_wait_promoted "$1" "$2"
}
