#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/chunkstore.sh [BUILD_DIR]: throughput of the chunk store against
# what one core of this machine does with the same algorithms.
#
# Runs "bench-chunkstore synthetic" (put of new data, put of the same data
# again, get twice: "get-first" reads the packs from disk, since the store
# writes them with direct I/O, and "get" what the page cache then holds)
# with 1 and 2 threads on SIZE_MIB of database-page-like data, REPEAT
# times each, "lz4 -b1" on exactly that data right after each 2-thread
# run (so that both meet the same machine: on a VM the hypervisor's steal
# comes and goes), then "lz4 -b1 -B<block size>" and "xxhsum -b",
# and prints a table with the ratios the issue sets as targets:
#
#   put new, 2 threads  >= 1.5 x lz4 -1 compression speed of one core
#   put dup, 2 threads  >= 2000 MB/s
#   get, 2 threads      >= 1500 MB/s (cached packs; get-first is printed too)
#
# Builds nothing: run "make bench" in BUILD_DIR (default ".") first.
# Environment: SIZE_MIB (default 1024), REPEAT (default 3), THREADS
# (default "1 2"), BENCH_TMPDIR (where the store and data go; default
# /var/tmp: it must be a real disk, not tmpfs, to count the fsyncs),
# MAX_ATTEMPTS (default 3 x REPEAT: runs during which other processes used
# the CPU are discarded and redone, up to this many runs per thread count).
# MB is 10^6 bytes throughout; xxhsum's MiB-based figures are converted.
set -eu

builddir=${1:-.}
bench=$builddir/bench/bench-chunkstore
size_mib=${SIZE_MIB:-1024}
repeat=${REPEAT:-3}
max_attempts=${MAX_ATTEMPTS:-$((3 * repeat))}
threads_list=${THREADS:-1 2}

die() {
        echo "chunkstore.sh: $*" >&2
        exit 1
}

[ -x "$bench" ] || die "$bench not found: run 'make bench' in $builddir first"
command -v lz4 >/dev/null || die "lz4 not found (apt-get install lz4)"
command -v xxhsum >/dev/null || die "xxhsum not found (apt-get install xxhash)"

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-bench.XXXXXX")
cleanup() {
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# kv LINE KEY: the value of KEY=... in a key=value line.
kv() {
        printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# The numbers in FILE, one per line: "MEDIAN (MIN-MAX)", or just the median.
summary() {
        sort -g "$1" | awk '{ v[NR] = $1 } END { printf "%s (%s-%s)\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
median() {
        sort -g "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "# chunkstore benchmark: $size_mib MiB, threads: $threads_list, $repeat runs each"
echo "# machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
        "kernel $(uname -r), store in $(df -P "$work" | awk 'NR == 2 { print $1 }')" \
        "($(stat -f -c %T "$work"))"

# A run during which other processes used the CPU (other_cpu - steal >
# 0.2 cores, over more than 5 ticks of /proc/stat) is discarded and done
# again, up to MAX_ATTEMPTS runs per thread count; "discarded" counts them.
# Steal, the time a VM's hypervisor gives its CPUs to other guests, cannot
# be waited out: it is printed instead, for the store's runs and for the
# lz4 runs they are compared with.
data=$work/data

# lz4 -b prints progress lines separated by \r; the last one is the result:
#  " |-data    : 1073741824 -> 520227646 (2.061), 582.1 MB/s ,4642.7 MB/s"
lz4_bench() {
        lz4 "$@" "$data" 2>&1 | tr '\r' '\n' | grep 'MB/s ,' | tail -1 |
                sed -n 's/.*(\([0-9.]*\)), *\([0-9.]*\) MB\/s *, *\([0-9.]*\) MB\/s.*/\1 \2 \3/p'
}

# "BUSY STEAL": cores' worth of CPU time the machine was busy (steal not
# included) and stolen since the last call; the first call starts the clock.
cpu_mark=
cpu_since() {
        now=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat) now_t=$(date +%s.%N)
        if [ -n "$cpu_mark" ]; then
                echo "$cpu_mark $now $now_t" | awk -v hz="$(getconf CLK_TCK)" \
                        '{ w = hz * ($6 - $3); printf "%.2f %.2f\n", ($4 - $1) / w, ($5 - $2) / w }'
        fi
        cpu_mark="$now $now_t"
}

# One core's lz4 -1 on the data: "RATIO COMPRESS DECOMPRESS STEAL", tried
# again (up to 3 times) while other processes use more than 0.2 cores.
lz4_one_core() {
        for try in 1 2 3; do
                cpu_since >/dev/null
                result=$(lz4_bench -b1)
                read -r busy steal <<EOF
$(cpu_since)
EOF
                if awk -v b="$busy" 'BEGIN { exit !(b <= 1.2) }' || [ "$try" = 3 ]; then
                        echo "$result $steal"
                        return
                fi
                echo "# discarded: lz4 -b1 $result, while the machine was busy $busy cores" >&2
        done
}

# The largest thread count measured: its runs are compared with lz4.
tmax=$(echo "$threads_list" | tr ' ' '\n' | sort -n | tail -1)
compression=
discarded=0
for t in $threads_list; do
        good=0
        attempts=0
        while [ "$good" -lt "$repeat" ] && [ "$attempts" -lt "$max_attempts" ]; do
                attempts=$((attempts + 1))
                rm -rf "$work/store"
                if [ -e "$data" ]; then
                        out=$("$bench" synthetic "$work/store" --size "$size_mib" --threads "$t")
                else
                        out=$("$bench" synthetic "$work/store" --size "$size_mib" --threads "$t" --data-out "$data")
                fi
                busy=$(printf '%s\n' "$out" | grep 'other_cpu=' |
                        sed 's/.* seconds=\([0-9.]*\) .*other_cpu=\([0-9.]*\) steal=\([0-9.-]*\).*/\1 \2 \3/' |
                        awk '{ o = $2 - ($3 > 0 ? $3 : 0) } o > 0.2 && $1 * o > 0.05' | wc -l)
                if [ "$busy" -gt 0 ]; then
                        printf '%s\n' "$out" | grep -v 'op=data' | sed 's/^/# discarded: /'
                        discarded=$((discarded + 1))
                        continue
                fi
                printf '%s\n' "$out" | grep -v 'op=data' | sed 's/^/# /'
                for op in put-new put-dup get-first get; do
                        kv "$(printf '%s\n' "$out" | grep "op=$op ")" mb_s >>"$work/$op.$t"
                done
                kv "$(printf '%s\n' "$out" | grep "op=put-new ")" steal >>"$work/steal.$t"
                compression=$(kv "$(printf '%s\n' "$out" | grep 'op=stats')" compression)
                block_size=$(kv "$(printf '%s\n' "$out" | grep 'op=data')" block_size)
                good=$((good + 1))
                if [ "$t" = "$tmax" ]; then
                        # One core's lz4 -1 on the same data, right after each
                        # run, so that both see the same machine.
                        read -r lz4_ratio lz4_c lz4_d lz4_steal <<EOF
$(lz4_one_core)
EOF
                        echo "# lz4 -b1: ratio $lz4_ratio, compress $lz4_c MB/s, decompress $lz4_d MB/s, steal $lz4_steal"
                        echo "$lz4_c" >>"$work/lz4-c"
                        echo "$lz4_d" >>"$work/lz4-d"
                        echo "$lz4_steal" >>"$work/lz4-steal"
                        # The pair's ratio: the host's speed drifts between
                        # runs, less within a pair.
                        awk -v p="$(kv "$(printf '%s\n' "$out" | grep "op=put-new ")" mb_s)" -v l="$lz4_c" \
                                'BEGIN { printf "%.2f\n", p / l }' >>"$work/pair-ratio"
                fi
        done
        [ "$good" -gt 0 ] || die "every run with $t threads shared the CPU with other processes: find an idle machine"
done
rm -rf "$work/store"

lz4_c=$(median "$work/lz4-c")
lz4_d=$(median "$work/lz4-d")
read -r lz4b_ratio lz4b_c lz4b_d <<EOF
$(lz4_bench -b1 -B"$block_size")
EOF
echo "# lz4 -b1 -B$block_size: ratio $lz4b_ratio, compress $lz4b_c MB/s, decompress $lz4b_d MB/s"
# What both cores do at once: two lz4 processes side by side.  On a VM or
# with SMT this is often well below twice one core.
lz4_bench -b1 >"$work/lz4-a" &
lz4_pid=$!
lz4_bench -b1 >"$work/lz4-b"
wait "$lz4_pid"
read -r _ lz4_a _ <"$work/lz4-a" || lz4_a=
read -r _ lz4_b _ <"$work/lz4-b" || lz4_b=
if [ -n "$lz4_a" ] && [ -n "$lz4_b" ]; then
        lz4_2c=$(awk -v a="$lz4_a" -v b="$lz4_b" 'BEGIN { printf "%.1f", a + b }')
        echo "# lz4 -b1, two processes at once: compress $lz4_a + $lz4_b = $lz4_2c MB/s"
else
        lz4_2c=
        echo "# lz4 -b1, two processes at once: no result (got '$lz4_a' and '$lz4_b')"
fi

# xxhsum -b lines: " 5#XXH3_64b   :  102400 ->  440339 it/s (43001.9 MB/s)", MB = 2^20
xxh=$(xxhsum -b 2>&1 | tr '\r' '\n' | grep '#XXH')
xxh_speed() {
        printf '%s\n' "$xxh" | grep "#$1 " | tail -1 |
                sed -n 's/.*(\s*\([0-9.]*\) MB\/s).*/\1/p' | awk '{ printf "%.0f", $1 * 1.048576 }'
}
xxh3=$(xxh_speed XXH3_64b)
xxh128=$(xxh_speed XXH128)
echo "# xxhsum -b (100 KB in cache): XXH3_64b $xxh3 MB/s, XXH128 $xxh128 MB/s"

echo
echo "Chunk store: $size_mib MiB of synthetic database pages, block size $block_size," \
        "store compression ${compression}x (lz4 -1 whole file ${lz4_ratio}x)"
echo "MB/s, median of the runs kept (min-max)"
printf '%-8s %5s' "threads" "runs"
for op in put-new put-dup get-first get; do
        printf ' %24s' "$op"
done
echo
for t in $threads_list; do
        printf '%-8s %5s' "$t" "$(wc -l <"$work/put-new.$t")"
        for op in put-new put-dup get-first get; do
                printf ' %24s' "$(summary "$work/$op.$t")"
        done
        echo
done

# The targets use the largest thread count measured (2 by default).
put_new=$(median "$work/put-new.$tmax")
put_dup=$(median "$work/put-dup.$tmax")
get=$(median "$work/get.$tmax")

verdict() { # verdict VALUE TARGET
        awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t) ? "PASS" : "FAIL" }'
}
ratio() {
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}
echo
echo "Targets ($tmax threads)"
printf '%-30s %12s %24s %8s\n' "measure" "value" "target" "result"
pair_ratio=$(median "$work/pair-ratio")
printf '%-30s %12s %24s %8s\n' "put new / lz4 -1, by pair" "${pair_ratio}x" \
        ">= 1.50x" "$(verdict "$pair_ratio" 1.5)"
printf '%-30s %12s %24s %8s\n' "put dup" "$put_dup MB/s" ">= 2000 MB/s" "$(verdict "$put_dup" 2000)"
printf '%-30s %12s %24s %8s\n' "get" "$get MB/s" ">= 1500 MB/s" "$(verdict "$get" 1500)"
echo "put new / lz4 -1, by pair: the median of $(wc -l <"$work/pair-ratio") ratios of a $tmax-thread run's put new" \
        "to one core's lz4 -b1 right after it: $(summary "$work/pair-ratio");" \
        "of the medians: $(ratio "$put_new" "$lz4_c")x (lz4 -b1 $(summary "$work/lz4-c") MB/s)"
echo "Steal (cores the hypervisor gave to other guests): put new $(summary "$work/steal.$tmax")," \
        "lz4 -b1 $(summary "$work/lz4-steal")"
if [ "$discarded" -gt 0 ]; then
        echo "Note: $discarded runs were discarded and redone because other processes used the CPU."
fi
echo
echo "Ratios to one core's tools"
printf '%-30s %12s\n' "put new / lz4 -1 -B$block_size" "$(ratio "$put_new" "$lz4b_c")x"
printf '%-30s %12s\n' "put dup / XXH128 (xxhsum -b)" "$(ratio "$put_dup" "$xxh128")x"
printf '%-30s %12s\n' "put dup / XXH3_64b" "$(ratio "$put_dup" "$xxh3")x"
printf '%-30s %12s\n' "get / lz4 -1 decompress" "$(ratio "$get" "$lz4_d")x"
if [ -n "$lz4_2c" ]; then
        printf '%-30s %12s\n' "put new / lz4 -1 on both cores" "$(ratio "$put_new" "$lz4_2c")x"
fi
