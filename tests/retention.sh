#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# tools/clonefs-retention applies a retention policy file: the first
# matching line's keep-* rules to each timeline through clonectl forget,
# then one gc; --dry-run changes nothing; a bad file is one error line and
# leaves every point in place.
. "$(dirname "$0")/lib.sh"

RETENTION="$top_builddir/tools/clonefs-retention"
[ -x "$RETENTION" ] || fail "tools/clonefs-retention was not built"
export CLONECTL CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null || fail "init failed"
mkdir -p "$workdir/src"
snap() { # TIMELINE N: N points, each with a file of its own
        for i in $(seq 1 "$2"); do
                head -c 100000 /dev/urandom >"$workdir/src/f"
                "$CLONECTL" snapshot "$1" --from "$workdir/src" >/dev/null || fail "snapshot $1 failed"
        done
}
snap app 5
snap other 3
snap dev-1 3
snap dev-2 2
count() { "$CLONECTL" --json points "$1" | grep -o '"name"' | wc -l; }
counts() { echo "$(count app) $(count other) $(count dev-1) $(count dev-2)"; }
expect_eq "points before" "$(counts)" "5 3 3 2"

cat >"$workdir/retention.conf" <<'CONF'
# a comment, then a blank line

app     keep-last=2   # the rest of a line after # is a comment too
dev-*   keep-last=1
dev-1   keep-last=3
CONF
expect_ok "a dry run succeeds" "$RETENTION" --dry-run "$workdir/retention.conf"
expect_grep "a dry run shows what it would remove" "would remove 3 of 5 points" "$workdir/out"
expect_grep "it echoes each command as it runs it" "^== clonectl forget app --keep-last 2 --dry-run$" "$workdir/out"
expect_eq "a dry run removes nothing" "$(counts)" "5 3 3 2"

expect_ok "the policy applies" "$RETENTION" "$workdir/retention.conf"
expect_eq "each timeline keeps what its first matching line says; unmatched ones keep all" "$(counts)" "2 3 1 1"
expect_grep "gc ran after forget" "^removed [0-9]+ unreachable chunks" "$workdir/out"
"$CLONECTL" verify >/dev/null || fail "the store does not verify after retention"
pass "the store verifies after retention"

# The store line; a timeline that no line matches is left alone.
mv "$workdir/store" "$workdir/store2"
printf 'store %s\nother keep-last=1\n' "$workdir/store2" >"$workdir/store.conf"
expect_ok "a store line names the store" "$RETENTION" "$workdir/store.conf"
expect_eq "the store line's store was pruned" "$(CLONEFS_STORE=$workdir/store2 count other)" "1"
export CLONEFS_STORE="$workdir/store2"

# Bad files: one line on stderr, nothing forgotten.
before=$(counts)
bad() { printf '%s\n' "$2" >"$workdir/bad.conf" && expect_error "$1" "$3" "$RETENTION" "$workdir/bad.conf"; }
bad "an unknown rule" $'app keep-last=1\napp keep-yearly=2' "bad.conf:2: unknown rule 'keep-yearly=2'"
bad "a rule without a count" "app keep-daily" "keep-daily' needs a count"
bad "a count that is not a number" "app keep-daily=x" "needs a count"
bad "a pattern without rules" "app" "'app' has no rules"
bad "a store line without a directory" "store" "expected 'store DIR'"
expect_error "a missing file" "cannot read" "$RETENTION" "$workdir/nope.conf"
expect_error "an unknown option" "unknown option '--bogus'" "$RETENTION" --bogus
expect_eq "bad files forget nothing" "$(counts)" "$before"

printf '# nothing but comments\n' >"$workdir/empty.conf"
expect_ok "a file without rules is not an error" "$RETENTION" "$workdir/empty.conf"
expect_grep "it says so" "has no rules: nothing to forget" "$workdir/out"
expect_ok "the shipped policy file (all comments) is valid" "$RETENTION" "$top_srcdir/tools/systemd/retention.conf"
