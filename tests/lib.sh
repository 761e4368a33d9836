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
