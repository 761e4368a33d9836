#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The man pages render without a warning, and they are true to the code:
# every command that "clonectl --help" lists and every option that
# "clonefs --help" lists is documented in its page.
. "$(dirname "$0")/lib.sh"

man_dir="$top_srcdir/docs/man"
command -v groff >/dev/null || skip "no groff (apt-get install groff-base)"

for page in clonefs.8 clonectl.8; do
        [ -f "$man_dir/$page" ] || fail "$page is missing"
        LC_ALL=C.UTF-8 groff -man -ww -z "$man_dir/$page" 2>"$workdir/warnings" || fail "groff failed on $page"
        [ ! -s "$workdir/warnings" ] || { cat "$workdir/warnings" >&2; fail "groff warns about $page"; }
        pass "$page renders without warnings"
done
if command -v mandoc >/dev/null; then
        mandoc -T lint -W warning "$man_dir/clonefs.8" "$man_dir/clonectl.8" >"$workdir/lint" 2>&1 ||
                { cat "$workdir/lint" >&2; fail "mandoc -T lint warns"; }
        pass "mandoc -T lint is quiet"
fi

# The text as a reader sees it, hyphens plain.
render() {
        LC_ALL=C.UTF-8 MANWIDTH=200 groff -man -Tutf8 -P-c -P-b -P-u "$man_dir/$1" 2>/dev/null |
                sed 's/\xe2\x80\x90/-/g; s/\xe2\x88\x92/-/g'
}
render clonectl.8 >"$workdir/clonectl.txt"
render clonefs.8 >"$workdir/clonefs.txt"

# Every verb (and every clone subcommand) in clonectl's help.
"$CLONECTL" --help >"$workdir/help"
verbs=$(sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p; s/^  \([a-z][a-z-]*\)$/\1/p' "$workdir/help" | sort -u)
[ -n "$verbs" ] || fail "no commands found in clonectl --help"
for v in $verbs; do
        grep -Eq "^ {7}$v( |$)" "$workdir/clonectl.txt" || fail "clonectl(8) does not document '$v'"
done
pass "clonectl(8) documents every command of clonectl --help ($(echo $verbs | wc -w))"
for sub in create list destroy snapshot rewind refresh export; do
        grep -Eq "^ {7}clone $sub( |$)" "$workdir/clonectl.txt" || fail "clonectl(8) does not document 'clone $sub'"
done
pass "clonectl(8) documents every clone subcommand"

# Every long option clonectl accepts, taken from its source's option table.
opts=$(sed -n 's/.*{ "\([a-z-]*\)", \(no\|required\)_argument.*/\1/p' "$top_srcdir/tools/clonectl.c" | sort -u)
[ -n "$opts" ] || fail "no options found in tools/clonectl.c"
for o in $opts; do
        grep -q -- "--$o" "$workdir/clonectl.txt" || fail "clonectl(8) does not document --$o"
done
pass "clonectl(8) documents every option ($(echo $opts | wc -w))"

# Every -o option of clonefs.
"$CLONEFS" --help >"$workdir/fshelp" 2>&1 || true
fsopts=$(sed -n 's/^  -o \([a-z_]*\).*/\1/p' "$workdir/fshelp" | sort -u)
[ -n "$fsopts" ] || fail "no -o options found in clonefs --help"
for o in $fsopts; do
        grep -q -- "-o $o" "$workdir/clonefs.txt" || fail "clonefs(8) does not document -o $o"
done
pass "clonefs(8) documents every -o option ($(echo $fsopts | wc -w))"
for section in "LAYOUT OF THE MOUNT" FSTAB SIGNALS "EXIT STATUS"; do
        grep -q "^$section" "$workdir/clonefs.txt" || fail "clonefs(8) has no $section section"
done
for section in "EXIT STATUS" ENVIRONMENT EXAMPLES; do
        grep -q "^$section" "$workdir/clonectl.txt" || fail "clonectl(8) has no $section section"
done
pass "both pages have the sections issue 7 asks for"

# man(1) finds them the way it would after installation.
if command -v man >/dev/null; then
        mkdir -p "$workdir/man/man8"
        cp "$man_dir/clonefs.8" "$man_dir/clonectl.8" "$workdir/man/man8/"
        MANPATH="$workdir/man" MANWIDTH=80 man clonectl 2>"$workdir/manerr" | grep -q "clonectl - manage a clonefs store" ||
                { cat "$workdir/manerr" >&2; fail "man clonectl does not show the page"; }
        pass "man clonectl shows the page"
fi
