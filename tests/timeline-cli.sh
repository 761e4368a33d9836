#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Timelines end to end: incremental snapshots, labels, names within one
# second, restore, diff, forget in any order, gc, hooks, and one clear
# error line for bad input.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"

src="$workdir/src"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init --block-size 16K >/dev/null
mkdir -p "$src/sub"
head -c $((10 << 20)) /dev/urandom >"$src/table"
seq 1 100000 >"$src/sub/log"
echo one >"$src/sub/one"
# Files changed in the second a point starts are read again by the next
# snapshot (they may be "racily clean"): let that second pass.
sleep 1.1

# Bad input.
expect_error "an invalid timeline name" "invalid timeline name" "$CLONECTL" snapshot 'bad/name' --from "$src"
expect_error "a timeline name with a colon" "invalid timeline name" "$CLONECTL" snapshot 'a:b' --from "$src"
expect_error "no --from" "needs --from" "$CLONECTL" snapshot db
expect_error "a missing source" "cannot read source directory" "$CLONECTL" snapshot db --from "$workdir/nope"
expect_error "a regular file as the source" "cannot read source directory .*/sub/log: Not a directory" \
        "$CLONECTL" snapshot db --from "$src/sub/log"
expect_error "an invalid label" "invalid label" "$CLONECTL" snapshot db --from "$src" --label 'no spaces'
expect_error "points of a missing timeline" "no timeline 'nope'" "$CLONECTL" points nope
expect_error "restore of a missing timeline" "no point 'latest' in timeline 'nope'" "$CLONECTL" restore nope@latest "$workdir/x"
expect_error "restore without a point" "names no point" "$CLONECTL" restore db "$workdir/x"

# First point, labelled; the name is the UTC time in ISO 8601 basic format.
expect_ok "first snapshot" "$CLONECTL" snapshot db --from "$src" --label first
first=$(cat "$workdir/out")
[[ "$first" =~ ^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$ ]] || fail "point name '$first' is not ISO 8601 basic"
pass "the point is named $first"
expect_error "a label is unique in its timeline" "label 'first' already names point" \
        "$CLONECTL" snapshot db --from "$src" --label first

# Unchanged: nothing is read, and the point costs almost nothing.
expect_ok "unchanged snapshot" "$CLONECTL" snapshot db --from "$src" --json
cp "$workdir/out" "$workdir/unchanged.json"
expect_eq "no file read" "$(json_get "$workdir/unchanged.json" files_read)" 0
expect_eq "no byte read" "$(json_get "$workdir/unchanged.json" bytes_read)" 0
expect_eq "every file reused" "$(json_get "$workdir/unchanged.json" files_reused)" 3
stored=$(json_get "$workdir/unchanged.json" bytes_stored)
[ "$stored" -lt 4096 ] || fail "an unchanged point stored $stored bytes"
pass "an unchanged point stores $stored bytes"

# Two points in the same second get distinct names.
"$CLONECTL" snapshot db --from "$src" >"$workdir/n1"
"$CLONECTL" snapshot db --from "$src" >"$workdir/n2"
[ "$(cat "$workdir/n1")" != "$(cat "$workdir/n2")" ] || fail "two points share a name"
pass "points made in quick succession have distinct names ($(cat "$workdir/n1"), $(cat "$workdir/n2"))"

# An 8 KiB write into 10 MiB stores about one block.
printf '%8192s' x | dd of="$src/table" bs=1 seek=$((3 << 20)) conv=notrunc status=none
expect_ok "snapshot after a small change" "$CLONECTL" snapshot db --from "$src" --label changed --json
new=$(json_get "$workdir/out" bytes_new)
[ "$new" -le $((2 * 16384 + 8192)) ] || fail "an 8 KiB change stored $new new bytes"
pass "an 8 KiB change stored $new new bytes"
expect_eq "only the changed file was read" "$(json_get "$workdir/out" files_read)" 1

expect_ok "--full reads everything" "$CLONECTL" snapshot db --from "$src" --full --json
expect_eq "--full read every file" "$(json_get "$workdir/out" files_read)" 3

expect_ok "points --json" "$CLONECTL" points db --json
expect_eq "six points" "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$workdir/out")" 6
expect_ok "timelines" "$CLONECTL" timelines
expect_grep "the timeline is listed" "^db +6 " "$workdir/out"

# diff
echo two >"$src/sub/two"
rm "$src/sub/one"
expect_ok "snapshot with a file added and one removed" "$CLONECTL" snapshot db --from "$src"
expect_ok "diff" "$CLONECTL" diff db@first db@latest
expect_grep "diff shows the added file" "^\+ sub/two$" "$workdir/out"
expect_grep "diff shows the removed file" "^- sub/one$" "$workdir/out"
expect_grep "diff shows the modified file with its changed bytes" "^M table  \(16.0 KiB changed\)" "$workdir/out"
expect_ok "diff --json" "$CLONECTL" diff --json db@first db@latest
expect_eq "diff --json counts" "$(json_get "$workdir/out" added):$(json_get "$workdir/out" removed):$(json_get "$workdir/out" modified)" "1:1:2"

# diff: link groups are numbered per point, so untouched hard links are
# not "modified"; metadata changes are named; names are shown as they are
# when valid UTF-8, else escaped (text) or surrogate-escaped (JSON).
mkdir -p "$workdir/dsrc"
echo f >"$workdir/dsrc/f" && ln "$workdir/dsrc/f" "$workdir/dsrc/g"
echo m >"$workdir/dsrc/m"
expect_ok "snapshot a tree with a hard link" "$CLONECTL" snapshot dt --from "$workdir/dsrc" --label A
echo a >"$workdir/dsrc/a1" && ln "$workdir/dsrc/a1" "$workdir/dsrc/a2"
chmod 600 "$workdir/dsrc/m"
echo u >"$workdir/dsrc/$(printf 'caf\xc3\xa9')"
echo x >"$workdir/dsrc/$(printf 'bad\xff')"
expect_ok "snapshot with a new hard link pair, a chmod and odd names" "$CLONECTL" snapshot dt --from "$workdir/dsrc" --label B
expect_ok "diff across the new hard links" "$CLONECTL" diff dt@A dt@B
grep -Eq "^M (f|g) " "$workdir/out" && { cat "$workdir/out" >&2; fail "diff calls untouched hard links modified"; }
pass "untouched hard links are not modified"
expect_grep "a chmod is named" "^M m  \(mode\)$" "$workdir/out"
expect_grep "a valid UTF-8 name shows as it is" "^\+ café$" "$workdir/out"
expect_grep "a byte that is not UTF-8 is escaped" '^\+ bad\\xff$' "$workdir/out"
expect_ok "diff --json across them" "$CLONECTL" diff --json dt@A dt@B
python3 - "$workdir/out" <<'PY' || fail "diff --json does not give the names back"
import json, os, sys
d = json.load(open(sys.argv[1]))
paths = {os.fsencode(c["path"]) for c in d["changes"]}
assert "caf\u00e9".encode() in paths and b"bad\xff" in paths, paths
assert [c["what"] for c in d["changes"] if c["path"] == "m"] == ["mode"], d["changes"]
PY
pass "diff --json: os.fsencode() gives both names back; a chmod is named"

# restore by label and by latest
expect_ok "restore by label" "$CLONECTL" restore db@first "$workdir/r-first"
cmp "$workdir/r-first/sub/one" <(echo one) || fail "restored label content differs"
pass "the labelled point has the old file"
expect_error "restore into a non-empty directory" "not empty" "$CLONECTL" restore db@latest "$workdir/r-first"

# forget in any order, then gc
expect_ok "forget --dry-run" "$CLONECTL" forget db --keep-last 2 --dry-run
expect_grep "dry run names what it would remove" "^would remove 5 of 7 points" "$workdir/out"
expect_ok "the dry run removed nothing" "$CLONECTL" points db --json
expect_eq "still seven points" "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$workdir/out")" 7
expect_ok "forget the middle point by label" "$CLONECTL" forget db@changed
expect_ok "forget the first point" "$CLONECTL" forget "db@$first"
expect_ok "gc" "$CLONECTL" gc --json
expect_eq "the old block is still used by later points" "$(json_get "$workdir/out" chunks_removed)" 0
expect_ok "forget --keep-last 1 --prune" "$CLONECTL" forget db --keep-last 1 --prune
expect_grep "forget shows what each removal frees" "^remove +[0-9TZ-]+ +frees [1-9]" "$workdir/out"
expect_grep "and gc reclaims it" "^removed [1-9][0-9]* unreachable chunks" "$workdir/out"
expect_ok "verify --data after forget and gc" "$CLONECTL" verify --data --json
expect_eq "nothing unreachable after gc" "$(json_get "$workdir/out" orphan_chunks)" 0
expect_ok "restore the last point" "$CLONECTL" restore db@latest "$workdir/r-last"
cmp "$src/table" "$workdir/r-last/table" || fail "the remaining point lost data"
pass "the remaining point restores"
expect_error "forget needs a rule" "forget needs a rule" "$CLONECTL" forget db

# "Racily clean": a same-size rewrite with the mtime put back, in the second
# the previous point started, must still be read.
echo aaaa >"$src/racy"
mtime=$(stat -c %y "$src/racy")
expect_ok "snapshot a fresh file" "$CLONECTL" snapshot racy --from "$src"
echo bbbb >"$src/racy"
touch -d "$mtime" "$src/racy"
expect_ok "snapshot after a same-size rewrite with the old mtime" "$CLONECTL" snapshot racy --from "$src"
expect_ok "restore it" "$CLONECTL" restore racy@latest "$workdir/r-racy"
expect_eq "the rewrite was not missed" "$(cat "$workdir/r-racy/racy")" bbbb

# Hooks: a failing --pre aborts, --post always runs.
expect_error "a failing --pre aborts" "--pre command failed with exit status 3" \
        "$CLONECTL" snapshot db --from "$src" --pre 'exit 3' --post "touch $workdir/post-ran"
[ -e "$workdir/post-ran" ] || fail "--post did not run after a failing --pre"
pass "--post ran after a failing --pre"
expect_ok "hooks around a snapshot" "$CLONECTL" snapshot db --from "$src" \
        --pre "echo pre >$workdir/order" --post "echo post >>$workdir/order"
expect_eq "hooks ran in order" "$(tr '\n' ' ' <"$workdir/order")" "pre post "

# SIGINT and SIGTERM during --pre: passed on to --pre's process group (what
# it started stops too), no point, --post runs, one line, exit 1.  A script
# starts background jobs with SIGINT ignored; clonectl catches it anyway.
points_of() { "$CLONECTL" points "$1" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
wait_for_file() {
        for _ in $(seq 1 200); do
                [ -s "$1" ] && return 0
                sleep 0.05
        done
        return 1
}
# A process gone, or a zombie no one reaps.
gone() {
        for _ in $(seq 1 40); do
                [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)" = Z ] && return 0
                sleep 0.05
        done
        return 1
}
before=$(points_of db)
for sig in TERM INT; do
        rm -f "$workdir/pre-child" "$workdir/post-ran"
        if [ $sig = TERM ]; then
                pre="sleep 10 & echo \$! >$workdir/pre-child; wait"
        else
                pre="echo \$\$ >$workdir/pre-child; exec sleep 10"
        fi
        "$CLONECTL" snapshot db --from "$src" --pre "$pre" --post "touch $workdir/post-ran" \
                >"$workdir/out" 2>"$workdir/err" &
        pid=$!
        on_exit "kill -9 $pid"
        wait_for_file "$workdir/pre-child" || fail "--pre did not start"
        kill -$sig $pid
        status=0
        wait $pid || status=$?
        expect_eq "SIG$sig during --pre exits 1" "$status" 1
        expect_eq "with one line" "$(cat "$workdir/err")" "clonectl: error: interrupted; no point created"
        [ -e "$workdir/post-ran" ] || fail "--post did not run after SIG$sig during --pre"
        pass "--post ran after SIG$sig during --pre"
        gone "$(cat "$workdir/pre-child")" || fail "what --pre started outlived SIG$sig"
        pass "SIG$sig reached what --pre started"
        expect_eq "SIG$sig during --pre made no point" "$(points_of db)" "$before"
done

# A --pre that is stopped (as by SIGTTOU) is continued to take the signal.
rm -f "$workdir/pre-child"
"$CLONECTL" snapshot db --from "$src" --pre "echo \$\$ >$workdir/pre-child; kill -STOP \$\$" \
        >"$workdir/out" 2>"$workdir/err" &
pid=$!
on_exit "kill -9 $pid"
wait_for_file "$workdir/pre-child" || fail "--pre did not start"
for _ in $(seq 1 100); do
        [ "$(awk '{print $3}' "/proc/$(cat "$workdir/pre-child")/stat" 2>/dev/null)" = T ] && break
        sleep 0.05
done
kill -0 "$pid" 2>/dev/null || fail "clonectl exited before the signal"
kill -TERM $pid
gone "$pid" || { kill -CONT "$(cat "$workdir/pre-child")"; fail "SIGTERM did not end a stopped --pre"; }
status=0
wait $pid || status=$?
expect_eq "SIGTERM ends a stopped --pre, exit 1" "$status" 1
expect_eq "SIGTERM during a stopped --pre made no point" "$(points_of db)" "$before"

# SIGTERM during --post: --post is not interrupted (it may restart what
# --pre stopped), then no point, the same line, exit 1.
rm -f "$workdir/post-started" "$workdir/post-done"
"$CLONECTL" snapshot db --from "$src" \
        --post "echo x >$workdir/post-started; sleep 1; echo x >$workdir/post-done" >"$workdir/out" 2>"$workdir/err" &
pid=$!
on_exit "kill -9 $pid"
wait_for_file "$workdir/post-started" || fail "--post did not start"
kill -TERM $pid
status=0
wait $pid || status=$?
expect_eq "SIGTERM during --post exits 1" "$status" 1
[ -e "$workdir/post-done" ] || fail "--post was cut short by SIGTERM"
pass "--post ran to its end"
expect_eq "one line after SIGTERM during --post" "$(cat "$workdir/err")" "clonectl: error: interrupted; no point created"
expect_eq "SIGTERM during --post made no point" "$(points_of db)" "$before"
expect_ok "verify after the interrupted hooks" "$CLONECTL" verify

# Hooks and the terminal (script(1) gives clonectl one).  In its
# foreground a hook keeps it: stty, as a password prompt does, works.
# Outside it (stdin not the terminal), a hook that touches /dev/tty would
# be stopped for ever by SIGTTOU: it is killed and reported instead.
timeout 60 script -qec "'$CLONECTL' --store '$CLONEFS_STORE' snapshot db --from '$src' \
        --pre 'stty -echo; stty echo' --post 'stty -echo; stty echo'" /dev/null >"$workdir/tty.out" 2>&1 ||
        { cat "$workdir/tty.out" >&2; fail "hooks that use the terminal failed (or hung) in its foreground"; }
pass "in a terminal's foreground, hooks may use it (stty)"
before=$(points_of db)
status=0
timeout 60 script -qec "'$CLONECTL' --store '$CLONEFS_STORE' snapshot db --from '$src' \
        --pre 'stty -echo </dev/tty' </dev/null" /dev/null >"$workdir/tty.out" 2>&1 || status=$?
[ "$status" -ne 124 ] || fail "a --pre stopped by SIGTTOU hung the snapshot"
expect_eq "a --pre that wants the terminal outside its foreground fails, exit 1" "$status" 1
expect_grep "and says it was stopped for the terminal" \
        "--pre command stopped to wait for the terminal, which it cannot have outside the foreground, and was killed" \
        "$workdir/tty.out"
expect_eq "it made no point" "$(points_of db)" "$before"

# A clone's snapshots go to the timeline of its name, and rewind takes the
# latest of them: nothing else may add a point there.
expect_ok "a clone" "$CLONECTL" clone create dev --from db@latest
expect_error "snapshot into a clone's timeline is refused" \
        "timeline 'dev' belongs to the clone of that name: use 'clonectl clone snapshot dev'" \
        "$CLONECTL" snapshot dev --from "$src"
expect_error "pg link of a clone's name is refused" "timeline 'dev' belongs to the clone" \
        "$CLONECTL" pg link dev "host=$workdir/no-server"
expect_error "and the clone's timeline is still empty" "no timeline 'dev'" "$CLONECTL" points dev
expect_ok "clone snapshot writes there" "$CLONECTL" clone snapshot dev
expect_error "also once it has points" "belongs to the clone of that name" "$CLONECTL" snapshot dev --from "$src"
expect_ok "the clone is destroyed" "$CLONECTL" clone destroy dev

# Unreadable files fail the snapshot and no point is made; --ignore-errors
# makes it without them.  Root reads through chmod 000, so nobody runs it.
if id nobody >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        mkdir "$workdir/nb" "$workdir/nb/src" "$workdir/nb/src/closed"
        echo secret >"$workdir/nb/src/secret" && chmod 000 "$workdir/nb/src/secret"
        echo inside >"$workdir/nb/src/closed/inside" && chmod 000 "$workdir/nb/src/closed"
        echo open >"$workdir/nb/src/open" && chmod 644 "$workdir/nb/src/open"
        chmod 755 "$workdir/nb/src"
        chown nobody "$workdir/nb"
        chmod 755 "$workdir"
        nb() { runuser -u nobody -- "$CLONECTL" --store "$workdir/nb/store" "$@"; }
        nb init >/dev/null
        expect_error "unreadable files fail the snapshot in one line" \
                "cannot snapshot .*/nb/src: 2 files could not be read, the first: (secret|closed): .*Permission denied; no point created" \
                nb snapshot nb --from "$workdir/nb/src"
        expect_eq "and print no point name" "$(cat "$workdir/out")" ""
        expect_error "no point was made" "no timeline 'nb'" nb points nb
        if nb -v snapshot nb --from "$workdir/nb/src" >"$workdir/out" 2>"$workdir/err"; then
                fail "a snapshot with unreadable files exited 0"
        fi
        expect_grep "-v names the unreadable file" "secret: cannot read: Permission denied" "$workdir/err"
        expect_grep "-v names the unreadable directory" "closed: cannot open directory: Permission denied" \
                "$workdir/err"
        expect_ok "--ignore-errors makes the point" nb snapshot nb --from "$workdir/nb/src" --ignore-errors
        expect_grep "and names what it lacks" "secret: cannot read: Permission denied" "$workdir/err"
        expect_ok "points" nb points nb --json
        expect_eq "one point" "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$workdir/out")" 1
        expect_ok "the point holds the readable file" nb restore nb@latest "$workdir/nb/restored"
        [ -e "$workdir/nb/restored/open" ] && [ ! -e "$workdir/nb/restored/secret" ] ||
                fail "the point should hold 'open' and not 'secret'"
        pass "the point holds what could be read"
        chmod 644 "$workdir/nb/src/secret"
        expect_error "one unreadable file is named with the count" \
                "1 file could not be read: closed: cannot open directory: Permission denied; no point created" \
                nb snapshot nb --from "$workdir/nb/src"
        expect_ok "still one point" nb points nb --json
        expect_eq "the failed snapshot added none" "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$workdir/out")" 1
fi
