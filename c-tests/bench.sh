#!/usr/bin/env bash
# Side-by-side benchmark: the kernel's System V IPC against ipcshim (LD_PRELOAD).
#
#   c-tests/bench.sh [ROUNDS] [CASES...]
#
# Runs every case (default: all of `bench list`) ROUNDS times (default 5) on each side,
# alternating kernel and ipcshim within every round, and prints a table of the medians in
# ns/op and the ratio kernel/ipcshim (above 1.00: ipcshim is faster). A side whose runs
# all failed shows "n/a" and the first error in the note column. Before each pair of runs
# it measures what moving one cache line between two processes' CPUs costs (`bench
# linexfer`): on a VM that changes from one moment to the next with where the host runs
# the vCPUs (here 35-90 ns on one core complex, 200-300 ns across), and with it every case
# that makes two processes talk (the broker's round trips included). A second table gives
# the medians of the pairs measured with near CPUs and with far ones (NEAR_NS, 150 by
# default, divides them). This is a report, not a test: it exits 0 whatever the figures
# or errors.
#
# Environment:
#   IPCSHIM_LIB    the library to preload (default: <repo>/target/release/libipcshim.so)
#   BENCH_TIMEOUT  seconds one run may take before it counts as an error (default 120)
#   BENCH_BIN      the bench binary (default: <repo>/build/c-tests/bench, built if stale)
# The ipcshim side runs in its own namespace, IPCSHIM_NAMESPACE=bench-$$, whose broker is
# stopped at the end.
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib=${IPCSHIM_LIB:-$repo/target/release/libipcshim.so}
case $lib in /*) ;; *) lib=$(pwd)/$lib ;; esac
timeout_s=${BENCH_TIMEOUT:-120}
bench=${BENCH_BIN:-$repo/build/c-tests/bench}
namespace=bench-$$

rounds=5
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    rounds=$1
    shift
fi
if [ "$rounds" -lt 1 ]; then
    echo "usage: $0 [ROUNDS] [CASES...]" >&2
    exit 64
fi

if [ -z "${BENCH_BIN:-}" ] && { [ ! -x "$bench" ] || [ "$repo/c-tests/bench.c" -nt "$bench" ]; }; then
    mkdir -p "$(dirname "$bench")"
    echo "building $bench" >&2
    gcc -O2 -Wall -Wextra -o "$bench" "$repo/c-tests/bench.c" -lpthread || exit 1
fi

if [ $# -gt 0 ]; then
    cases=("$@")
else
    mapfile -t cases < <("$bench" list)
fi

stop_broker() {
    if [ -x "$repo/target/release/ipcshim" ]; then
        env -u LD_PRELOAD IPCSHIM_NAMESPACE="$namespace" \
            "$repo/target/release/ipcshim" stop >/dev/null 2>&1 || true
    fi
}
trap 'stop_broker; exit 130' INT TERM

declare -A samples errors

near_ns=${NEAR_NS:-150}

# run SIDE CASE: one run; appends the figure to samples[SIDE,CASE] and sets `value`, or
# notes the error and leaves `value` empty.
run() {
    local side=$1 name=$2 out rc line
    value=
    if [ "$side" = ipcshim ] && [ ! -f "$lib" ]; then
        # LD_PRELOAD of a missing file is ignored by ld.so: the run would measure the kernel.
        errors[$side,$name]=${errors[$side,$name]:-"no library at $lib"}
        return
    fi
    if [ "$side" = kernel ]; then
        out=$(env -u LD_PRELOAD -u IPCSHIM_NAMESPACE timeout -k 5 "$timeout_s" "$bench" "$name" 2>/dev/null)
    else
        out=$(env LD_PRELOAD="$lib" IPCSHIM_NAMESPACE="$namespace" \
            timeout -k 5 "$timeout_s" "$bench" "$name" 2>/dev/null)
    fi
    rc=$?
    line=$(printf '%s\n' "$out" | grep -m1 "^$name " || true)
    value=${line#"$name "}
    if [ $rc -eq 0 ] && [[ $value =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
        samples[$side,$name]="${samples[$side,$name]:-} $value"
        return
    fi
    local why
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        why="timed out after ${timeout_s}s"
    elif [[ $value == error* ]]; then
        why=${value#error }
    else
        why="exit status $rc"
    fi
    value=
    errors[$side,$name]=${errors[$side,$name]:-$why}
    echo "  $side $name: $why" >&2
}

# pairs[CASE]: " line:kernel:ipcshim" for each pair of runs that both gave a figure.
declare -A pairs
linexfer=()
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    for name in "${cases[@]}"; do
        x=$(timeout 60 "$bench" linexfer 2>/dev/null | awk '$1 == "linexfer" { print $2 }')
        [ -n "$x" ] && linexfer+=("$x")
        if ((r % 2)); then
            run kernel "$name"; k=$value; run ipcshim "$name"; s=$value
        else
            run ipcshim "$name"; s=$value; run kernel "$name"; k=$value
        fi
        [ -n "$x" ] && [ -n "$k" ] && [ -n "$s" ] && pairs[$name]="${pairs[$name]:-} $x:$k:$s"
    done
done

median() { # numbers on stdin, one a line
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit
        if (NR % 2) printf "%.1f", v[(NR + 1) / 2]
        else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

printf '%-18s %14s %14s %15s  %s\n' case "kernel ns/op" "ipcshim ns/op" "kernel/ipcshim" note
for name in "${cases[@]}"; do
    k=$(printf '%s\n' ${samples[kernel,$name]:-} | grep . | median)
    s=$(printf '%s\n' ${samples[ipcshim,$name]:-} | grep . | median)
    ratio=n/a
    if [ -n "$k" ] && [ -n "$s" ]; then
        ratio=$(awk -v k="$k" -v s="$s" 'BEGIN { if (s > 0) printf "%.2f", k / s; else print "n/a" }')
    fi
    note=""
    [ -n "${errors[kernel,$name]:-}" ] && note="kernel: ${errors[kernel,$name]}"
    if [ -n "${errors[ipcshim,$name]:-}" ]; then
        note="${note:+$note; }ipcshim: ${errors[ipcshim,$name]}"
    fi
    printf '%-18s %14s %14s %15s  %s\n' "$name" "${k:-n/a}" "${s:-n/a}" "$ratio" "$note"
done

# The same by placement: the pairs whose line moved in under NEAR_NS, and the others.
# bin CASE near|far FIELD: that field (2: kernel, 3: ipcshim) of the case's pairs in the bin.
bin() {
    printf '%s\n' ${pairs[$1]:-} | awk -F: -v b="$2" -v f="$3" -v lim="$near_ns" \
        'NF == 3 && ((b == "near") == ($1 < lim)) { print $f }'
}
if [ ${#linexfer[@]} -gt 0 ]; then
    sorted=$(printf '%s\n' "${linexfer[@]}" | sort -g)
    echo
    echo "one cache line between two processes' CPUs: $(head -1 <<<"$sorted")-$(tail -1 <<<"$sorted") ns per move over the ${#linexfer[@]} pairs; by placement (near: under ${near_ns} ns):"
    printf '%-18s %8s %8s %7s %5s   %8s %8s %7s %5s\n' case "near: k" ipcshim ratio pairs "far: k" ipcshim ratio pairs
    for name in "${cases[@]}"; do
        cols=()
        for b in near far; do
            n=$(bin "$name" $b 2 | grep -c .)
            k=$(bin "$name" $b 2 | median)
            s=$(bin "$name" $b 3 | median)
            ratio=-
            [ -n "$k" ] && [ -n "$s" ] && ratio=$(awk -v k="$k" -v s="$s" 'BEGIN { if (s > 0) printf "%.2f", k / s; else print "-" }')
            cols+=("${k:--}" "${s:--}" "$ratio" "$n")
        done
        printf '%-18s %8s %8s %7s %5s   %8s %8s %7s %5s\n' "$name" "${cols[@]}"
    done
fi

stop_broker
exit 0
