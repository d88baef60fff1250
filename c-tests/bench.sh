#!/usr/bin/env bash
# Side-by-side benchmark: the kernel's System V IPC against ipcshim (LD_PRELOAD).
#
#   c-tests/bench.sh [ROUNDS] [CASES...]
#
# Runs every case (default: all of `bench list`) ROUNDS times (default 5) on each side,
# alternating kernel and ipcshim within every round, and prints a table of the medians in
# ns/op and the ratio kernel/ipcshim (above 1.00: ipcshim is faster), then what moving
# one cache line between two processes' CPUs cost in each round (`bench linexfer`). A side
# whose runs all failed shows "n/a" and the first error in the note column. This is a
# report, not a test: it exits 0 whatever the figures or errors.
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

# run SIDE CASE: one run; appends the figure to samples[SIDE,CASE] or notes the error.
run() {
    local side=$1 name=$2 out rc line value
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
    errors[$side,$name]=${errors[$side,$name]:-$why}
    echo "  $side $name: $why" >&2
}

linexfer=()
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    x=$(timeout 60 "$bench" linexfer 2>/dev/null | awk '$1 == "linexfer" { print $2 }')
    [ -n "$x" ] && linexfer+=("$x")
    for name in "${cases[@]}"; do
        if ((r % 2)); then
            run kernel "$name"; run ipcshim "$name"
        else
            run ipcshim "$name"; run kernel "$name"
        fi
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

# The machine beside the figures: the cross-process cases (sem_contend_undo, msg_stream_1k,
# msg_pingpong) move cache lines between two CPUs, and what one move costs changes with
# where a VM's host runs its vCPUs, from one round to the next.
if [ ${#linexfer[@]} -gt 0 ]; then
    echo "one cache line between two processes' CPUs, ns per move, by round: ${linexfer[*]}"
fi

stop_broker
exit 0
