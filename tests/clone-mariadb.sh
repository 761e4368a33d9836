#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# MariaDB on a clone: a data dir snapshotted into a point, mariadbd started
# on a clone with its default settings (InnoDB with O_DIRECT and
# asynchronous I/O), a write and a read back, a clean shutdown and a
# second start; the point and the source keep their rows.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root
command -v mariadbd >/dev/null && id mysql >/dev/null 2>&1 || skip "needs mariadb-server"

chmod 755 "$workdir"
src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null

# my_start DATADIR: mariadbd on a Unix socket only, defaults otherwise
# (--no-defaults keeps the machine's my.cnf out), killed by PID on exit.
my_start() {
        local data=$1 pid
        mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$workdir/my/sock" \
                --pid-file="$workdir/my/pid" --skip-networking --log-error="$workdir/my/log" 2>/dev/null &
        pid=$!
        on_exit "kill -9 $pid"
        MY_PID=$pid
        for _ in $(seq 1 600); do
                mariadb-admin --no-defaults --socket="$workdir/my/sock" -uroot ping >/dev/null 2>&1 && return 0
                kill -0 "$pid" 2>/dev/null || { tail -n 20 "$workdir/my/log" >&2; fail "mariadbd exited on $data"; }
                sleep 0.1
        done
        fail "mariadbd did not answer within 60 s"
}

my_stop() {
        mariadb-admin --no-defaults --socket="$workdir/my/sock" -uroot shutdown || fail "mariadb-admin shutdown failed"
        wait "$MY_PID" || fail "mariadbd exited with an error"
}

my_sql() {
        mariadb --no-defaults --socket="$workdir/my/sock" -uroot -N -B -e "$1"
}

mkdir -p "$src/mysql" "$workdir/my"
chown mysql "$src/mysql" "$workdir/my"
mariadb-install-db --no-defaults --user=mysql --datadir="$src/mysql" --auth-root-authentication-method=normal \
        >"$workdir/install.log" 2>&1 || { cat "$workdir/install.log" >&2; fail "mariadb-install-db failed"; }
my_start "$src/mysql"
my_sql "CREATE DATABASE app; USE app; CREATE TABLE app.t(id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB;
        INSERT INTO app.t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_10000;" || fail "writing the source failed"
my_stop
sleep 1.1
expect_ok "snapshot a MariaDB data dir" "$CLONECTL" snapshot mysql --from "$src"
expect_ok "clone it" "$CLONECTL" clone create dev --from mysql@latest

mount_clonefs "$CLONEFS_STORE" "$mnt" -o allow_other
data="$mnt/clones/dev/mysql"
my_start "$data"
pass "mariadbd starts on the clone with default settings"
expect_eq "the clone has the source's rows" "$(my_sql "SELECT COUNT(*) FROM app.t")" 10000
my_sql "USE app; UPDATE app.t SET v = 'changed in the clone' WHERE id <= 100; INSERT INTO app.t VALUES (20000, 'new');
        CREATE TABLE app.big ENGINE=InnoDB SELECT seq AS id, REPEAT('x', 200) AS pad FROM seq_1_to_50000;" ||
        fail "writing the clone failed"
expect_eq "a write reads back" "$(my_sql "SELECT COUNT(*) FROM app.t WHERE v = 'changed in the clone'")" 100
expect_eq "a new table reads back" "$(my_sql "SELECT COUNT(*) FROM app.big")" 50000
my_stop
my_start "$data"
expect_eq "the writes survive a restart" "$(my_sql "SELECT COUNT(*) FROM app.t")" 10001
expect_eq "CHECK TABLE finds nothing" "$(my_sql "CHECK TABLE app.t, app.big" | awk '$3 == "status" {print $4}' | sort -u)" OK
my_stop

diff -r --no-dereference "$src/" "$mnt/timelines/mysql/latest/" >"$workdir/diff" 2>&1 ||
        { head "$workdir/diff" >&2; fail "the point differs from the source"; }
pass "the point still equals the source data dir"
unmount_clonefs "$mnt"
