# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers for the shell tests, sourced by each tests/*.sh.  Modelled on
# SQLite's tester.tcl vocabulary: every test gets a scratch directory,
# registers cleanups that run on any exit, and asserts with helpers that
# say what failed.  Exit codes follow automake: 0 pass, 77 skip, 99 hard
# error, anything else fail.
set -eu

: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
CLONECTL="$top_builddir/clonectl"
CLONEFS="$top_builddir/clonefs"
CS_WRITER="$top_builddir/tests/cs-writer"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/clonefs-test.XXXXXX")
_cleanups=""
_checks=0

# Registers a shell command to run at exit, last registered first.
on_exit() {
        _cleanups="$1
$_cleanups"
}

_run_cleanups() {
        status=$?
        set +e
        printf '%s\n' "$_cleanups" | while IFS= read -r cmd; do
                [ -n "$cmd" ] && eval "$cmd" >/dev/null 2>&1
        done
        rm -rf "$workdir"
        if [ "$status" -eq 0 ]; then
                echo "# $_checks checks passed"
        fi
        exit "$status"
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

skip() {
        echo "SKIP: $*"
        exit 77
}

pass() {
        _checks=$((_checks + 1))
        echo "ok - $*"
}

# expect_ok DESCRIPTION COMMAND...: the command succeeds.
expect_ok() {
        desc=$1
        shift
        if "$@" >"$workdir/out" 2>"$workdir/err"; then
                pass "$desc"
        else
                cat "$workdir/out" "$workdir/err" >&2
                fail "$desc (exit $?)"
        fi
}

# expect_error DESCRIPTION PATTERN COMMAND...: the command fails with exactly
# one line on stderr, matching the extended regex PATTERN.
expect_error() {
        desc=$1
        pattern=$2
        shift 2
        if "$@" >"$workdir/out" 2>"$workdir/err"; then
                fail "$desc: succeeded, expected a failure"
        fi
        lines=$(wc -l <"$workdir/err")
        [ "$lines" -eq 1 ] || { cat "$workdir/err" >&2; fail "$desc: $lines lines on stderr, expected one"; }
        grep -Eq -- "$pattern" "$workdir/err" || { cat "$workdir/err" >&2; fail "$desc: stderr does not match /$pattern/"; }
        pass "$desc"
}

# expect_grep DESCRIPTION PATTERN FILE
expect_grep() {
        grep -Eq -- "$2" "$3" || { cat "$3" >&2; fail "$1: no line matches /$2/"; }
        pass "$1"
}

expect_eq() {
        [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
        pass "$1"
}

require_root() {
        [ "$(id -u)" -eq 0 ] || skip "needs root"
}

# FUSE tests skip on hosts without FUSE, except where CI demands it.
require_fuse() {
        if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null 2>&1; then
                if [ "${CLONEFS_REQUIRE_FUSE:-0}" = 1 ]; then
                        fail "FUSE is required (CLONEFS_REQUIRE_FUSE=1) but /dev/fuse or fusermount3 is missing"
                fi
                skip "no /dev/fuse or fusermount3"
        fi
}

# json_get FILE KEY: prints a top-level value of a JSON object.
json_get() {
        python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(str(v).lower() if isinstance(v,bool) else v)' "$1" "$2"
}

# flip_byte FILE OFFSET: inverts one byte in place.
flip_byte() {
        python3 - "$1" "$2" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xff]))
PY
}

# --- PostgreSQL 15, run by the tests as the postgres user -------------------
PGBIN=/usr/lib/postgresql/15/bin

require_postgres() {
        [ -x "$PGBIN/postgres" ] && id postgres >/dev/null 2>&1 || skip "needs PostgreSQL 15 (postgresql-15)"
}

# pg_run COMMAND ARGS...: runs a PostgreSQL program as postgres.
pg_run() {
        local prog=$1
        shift
        runuser -u postgres -- "$PGBIN/$prog" "$@"
}

pg_initdb() {
        pg_run initdb -D "$1" -A trust >/dev/null || fail "initdb $1 failed"
}

# pg_start DATADIR SOCKDIR: starts postgres on a Unix socket only, logging to
# DATADIR/log, and registers a kill of its postmaster by PID.
pg_start() {
        local data=$1 sock=$2 pid
        mkdir -p "$sock"
        chown postgres "$sock"
        pg_run pg_ctl -D "$data" -l "$data/log" -w -t 120 \
                -o "-k $sock -c listen_addresses= -c fsync=on" start >/dev/null ||
                { tail -n 20 "$data/log" >&2; fail "postgres did not start on $data"; }
        pid=$(head -n 1 "$data/postmaster.pid")
        echo "$pid" >"$workdir/postmaster.$(echo "$data" | md5sum | cut -c1-12)"
        on_exit "kill -9 $pid"
}

# pg_stop DATADIR: a clean, fast shutdown.
pg_stop() {
        pg_run pg_ctl -D "$1" -m fast -w -t 120 stop >/dev/null || fail "postgres on $1 did not stop"
}

# pg_kill DATADIR: kill -9 of the postmaster started on DATADIR (even when
# its data dir is gone), waiting until its backends are gone too.
pg_kill() {
        local pid
        pid=$(cat "$workdir/postmaster.$(echo "$1" | md5sum | cut -c1-12)")
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 1 200); do
                [ -z "$(pgrep -P "$pid" 2>/dev/null)" ] && ! kill -0 "$pid" 2>/dev/null && return 0
                sleep 0.05
        done
}

# pg_sql SOCKDIR SQL: one query's result, unaligned.
pg_sql() {
        pg_run psql -h "$1" -X -At -v ON_ERROR_STOP=1 -d postgres -c "$2"
}

# make_awkward_tree DIR: every node type, permission bit, owner, time,
# xattr, ACL, hardlink group and hole, and names and paths as awkward as
# Linux allows.  Needs root, setfattr and setfacl.
make_awkward_tree() {
        mkdir -p "$1"
        (
        set -e
        cd "$1"
        src=$1

        # Regular files: empty, small, block-aligned, odd-sized, random.
        : >empty
        echo hello >small
        head -c 16384 /dev/urandom >aligned
        head -c 1000003 /dev/urandom >odd
        # Sparse: holes at the start, the middle and the end.
        truncate -s 64M sparse
        printf 'middle' | dd of=sparse bs=1 seek=$((20 << 20)) conv=notrunc status=none
        printf 'tail' | dd of=sparse bs=1 seek=$((40 << 20)) conv=notrunc status=none
        # Directories, an empty one, permission bits of every kind.
        mkdir -p dirs/empty dirs/sticky dirs/setgid
        chmod 1777 dirs/sticky
        chmod 2755 dirs/setgid
        cp small suid && chmod 4755 suid
        cp small sgid && chmod 2711 sgid
        cp small nobody-may && chmod 000 nobody-may
        # Numeric owners that exist nowhere.
        cp small owned && chown 1234:5678 owned
        cp small private && chmod 600 private && chown 1234:5678 private
        ln -s small owned-link && chown -h 4321:8765 owned-link
        # Symlinks: plain, dangling, to a directory, a long target.
        ln -s small link
        ln -s does/not/exist dangling
        ln -s dirs dirlink
        ln -s "$(printf 'x%.0s' $(seq 1 1000))" longlink
        # Hardlinks: a group of three across directories, and a pair.
        echo linked >hl1
        ln hl1 dirs/hl2
        ln hl1 dirs/empty/../hl3
        echo pair >pair1 && ln pair1 pair2
        # Special files.
        mkfifo fifo
        python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$src/socket"
        mknod chardev c 1 3
        mknod blockdev b 7 200
        # Extended attributes: user, trusted, security, and ACLs.
        setfattr -n user.note -v "a note" small
        setfattr -n user.binary -v 0x00ff10 small
        setfattr -n trusted.secret -v hidden aligned
        setfattr -n security.label -v labelled odd 2>/dev/null || setfattr -n security.test -v x odd 2>/dev/null || true
        setfacl -m u:1000:rw,g:2000:r small
        setfacl -d -m u:1000:rwx dirs
        setfattr -n user.on-dir -v yes dirs
        # Names: newline, invalid UTF-8, 255 bytes, dashes and spaces.
        printf 'x' >"$(printf 'new\nline')"
        printf 'x' >"$(printf 'bad\xff\xfeutf8')"
        printf 'x' >"$(printf 'n%.0s' $(seq 1 255))"
        printf 'x' >" -leading dash and spaces "
        # A path of about 4 KiB: 20 directories of 199 bytes.
        deep=.
        for i in $(seq 1 20); do
                d=$(printf "%02d%0197d" "$i" 0)
                mkdir "$deep/$d"
                deep="$deep/$d"
        done
        echo deep >"$deep/file-at-the-bottom-of-a-4KiB-path"
        # Nanosecond times, and times before 1970 and after 2038.
        touch -h -d '2001-02-03 04:05:06.123456789' link
        touch -d '1965-01-01 00:00:00.5' small
        touch -d '2100-01-01 12:00:00.000000001' aligned
        touch -d '2011-11-11 11:11:11.111111111' dirs/empty dirs
        )
}

# mount_clonefs STORE MNT [ARGS...]: runs clonefs in the foreground in the
# background, waits for the mount, and unmounts and stops it at exit.
# Sets CLONEFS_PID.  Its stderr goes to $workdir/clonefs.log.
mount_clonefs() {
        local store=$1 mnt=$2 pid
        shift 2
        mkdir -p "$mnt"
        "$CLONEFS" "$store" "$mnt" -f "$@" 2>>"$workdir/clonefs.log" &
        pid=$!
        on_exit "fusermount3 -u -z '$mnt'; kill $pid"
        for _ in $(seq 1 200); do
                if mountpoint -q "$mnt"; then
                        CLONEFS_PID=$pid
                        return 0
                fi
                kill -0 "$pid" 2>/dev/null || { cat "$workdir/clonefs.log" >&2; fail "clonefs exited before mounting"; }
                sleep 0.05
        done
        fail "clonefs did not mount $mnt within 10 s"
}

# unmount_clonefs MNT: unmounts and waits for the daemon to exit.
unmount_clonefs() {
        fusermount3 -u "$1" || fail "cannot unmount $1"
        wait "$CLONEFS_PID" 2>/dev/null || true
}
