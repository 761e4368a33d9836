#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# One entry point for a fresh Debian 12 machine (run as root):
#
#   tools/dev.sh demo       install dependencies, build, run the main job on a sample
#   tools/dev.sh test       install dependencies, build, run the whole test suite
#   tools/dev.sh sanitize   build with ASan+UBSan in _build-asan and run the suite
#   tools/dev.sh deps       install build and test dependencies only
#   tools/dev.sh build      configure and build in _build
#
# Builds out of tree in _build/ so the source tree stays clean.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/_build"

# Build dependencies come from debian/control; the rest is what the tests
# and benchmarks drive for real.
test_packages=(
        build-essential autoconf automake libtool pkgconf
        fuse3 rsync acl attr python3 procps util-linux file
        postgresql-15 postgresql-client-15 mariadb-server xxhash lz4
        groff-base man-db systemd lintian faketime
)

need_root() {
        if [ "$(id -u)" -ne 0 ]; then
                echo "tools/dev.sh: error: run as root (it installs packages with apt-get)" >&2
                exit 1
        fi
}

deps() {
        need_root
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${test_packages[@]}" >/dev/null
        apt-get build-dep -y -qq "$top" >/dev/null
}

configure_in() {
        local dir=$1
        shift
        (cd "$top" && autoreconf -fi >/dev/null 2>&1) || { echo "tools/dev.sh: error: autoreconf failed" >&2; exit 1; }
        mkdir -p "$dir"
        (cd "$dir" && "$top/configure" --quiet --enable-werror "$@" >/dev/null)
}

build() {
        configure_in "$build"
        make -C "$build" -j"$(nproc)" --no-print-directory >/dev/null
}

# Runs make check in a build dir, prints failing logs, and ends with the
# plain "N passed, N failed" line.
check_in() {
        local dir=$1 status=0
        make -C "$dir" -j"$(nproc)" --no-print-directory check >"$dir/check.out" 2>&1 || status=$?
        grep -E '^(PASS|FAIL|XPASS|ERROR|SKIP):' "$dir/check.out" | grep -v '^PASS: tests/test-' || true
        if [ "$status" -ne 0 ]; then
                for log in $(grep -lE '^(FAIL|ERROR)' "$dir"/tests/*.log 2>/dev/null); do
                        echo "===== $log"
                        tail -n 40 "$log"
                done
        fi
        local total pass fail skip errors
        total=$(sed -n 's/^# TOTAL: *//p' "$dir/check.out" | tail -n 1)
        pass=$(sed -n 's/^# PASS: *//p' "$dir/check.out" | tail -n 1)
        fail=$(sed -n 's/^# FAIL: *//p' "$dir/check.out" | tail -n 1)
        errors=$(sed -n 's/^# ERROR: *//p' "$dir/check.out" | tail -n 1)
        skip=$(sed -n 's/^# SKIP: *//p' "$dir/check.out" | tail -n 1)
        echo "${pass:-0} passed, $(( ${fail:-0} + ${errors:-0} )) failed, ${skip:-0} skipped (of ${total:-0} tests in $(basename "$dir"))"
        return "$status"
}

run_test() {
        deps
        build
        check_in "$build"
}

run_sanitize() {
        configure_in "$top/_build-asan" --enable-sanitizers
        make -C "$top/_build-asan" -j"$(nproc)" --no-print-directory >/dev/null
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                check_in "$top/_build-asan"
}

# A small application directory: text, a database-like file with a hole,
# links of every kind.  Deterministic, so two runs store the same bytes.
make_sample() {
        local dir=$1
        mkdir -p "$dir/app/config" "$dir/app/data" "$dir/app/logs"
        for i in $(seq 1 200); do
                printf 'setting_%d = value %d\n' "$i" $((i * 7)) >>"$dir/app/config/app.conf"
        done
        python3 - "$dir/app/data/table.db" <<'PY'
import sys, random
random.seed(7)
with open(sys.argv[1], "wb") as f:
    for page in range(2048):                  # 16 MiB of 8 KiB "pages"
        rows = b"".join(b"%08d|customer-%05d|%10.2f|active\n" % (page * 100 + r, random.randrange(50000), random.random() * 1e4) for r in range(160))
        f.write(rows[:8192].ljust(8192, b"\0"))
    f.seek(64 << 20)                          # a 48 MiB hole, then a tail page
    f.write(b"tail page\n" * 800)
PY
        seq 1 20000 | sed 's/^/request served in 12ms id=/' >"$dir/app/logs/access.log"
        cp "$dir/app/logs/access.log" "$dir/app/logs/access.log.1"
        ln -s ../config/app.conf "$dir/app/data/config-link"
        ln "$dir/app/config/app.conf" "$dir/app/config/app.conf.hardlink"
}

run_demo() {
        deps
        build
        local demo=/tmp/clonefs-demo
        local clonectl="$build/clonectl" clonefs="$build/clonefs"
        if mountpoint -q "$demo/mnt" 2>/dev/null; then
                fusermount3 -u "$demo/mnt"
        fi
        rm -rf "$demo"
        mkdir -p "$demo/mnt"
        make_sample "$demo/source"
        export CLONEFS_STORE="$demo/store"
        echo "== clonectl init"
        "$clonectl" init
        echo "== clonectl snapshot app --from $demo/source/app --label first"
        "$clonectl" snapshot app --from "$demo/source/app" --label first
        echo "== change one page, snapshot again (only the changed block is stored)"
        printf 'changed!' | dd of="$demo/source/app/data/table.db" bs=1 seek=81920 conv=notrunc status=none
        "$clonectl" snapshot app --from "$demo/source/app" --json
        echo "== clonectl points app"
        "$clonectl" points app
        echo "== clonectl diff app@first app@latest"
        "$clonectl" diff app@first app@latest
        echo "== clonefs $CLONEFS_STORE $demo/mnt  (unmounted when the demo exits)"
        "$clonefs" "$CLONEFS_STORE" "$demo/mnt"
        # $demo is expanded now: the trap runs after run_demo has returned.
        trap "fusermount3 -u '$demo/mnt' && echo '== unmounted $demo/mnt'" EXIT
        ls "$demo/mnt" "$demo/mnt/timelines/app"
        echo "== clonectl clone create dev --from app@first  (the mount shows it at once)"
        "$clonectl" clone create dev --from app@first
        ls "$demo/mnt/clones"
        echo "== write into the clone: the point beside it does not change"
        local before after
        before=$(sha256sum <"$demo/mnt/timelines/app/first/config/app.conf")$(sha256sum <"$demo/mnt/timelines/app/first/data/table.db")
        echo "setting_1 = changed in the clone" >"$demo/mnt/clones/dev/config/app.conf"
        printf 'clone write' | dd of="$demo/mnt/clones/dev/data/table.db" bs=1 seek=4096 conv=notrunc status=none
        after=$(sha256sum <"$demo/mnt/timelines/app/first/config/app.conf")$(sha256sum <"$demo/mnt/timelines/app/first/data/table.db")
        echo "clone: $(head -n 1 "$demo/mnt/clones/dev/config/app.conf")"
        echo "point: $(head -n 1 "$demo/mnt/timelines/app/first/config/app.conf")"
        cmp "$demo/mnt/clones/dev/data/table.db" "$demo/mnt/timelines/app/first/data/table.db" || true
        if [ "$before" = "$after" ]; then
                echo "point app@first: unchanged (same SHA-256 before and after the clone's writes)"
        else
                echo "tools/dev.sh: error: the point changed under the clone's writes" >&2
                exit 1
        fi
        echo "== clonectl clone list (the clone stores only what it changed)"
        "$clonectl" clone list
        echo "== clonectl stats"
        "$clonectl" stats
        echo "== clonectl verify --data"
        "$clonectl" verify --data
        echo "demo store: $demo/store (CLONEFS_STORE=$demo/store $clonectl ...; $clonefs $demo/store MOUNTPOINT)"
}

case "${1:-}" in
deps) deps ;;
build) build ;;
test) run_test ;;
sanitize) run_sanitize ;;
demo) run_demo ;;
*)
        echo "usage: tools/dev.sh demo|test|sanitize|deps|build" >&2
        exit 2
        ;;
esac
