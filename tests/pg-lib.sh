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
