#!/usr/bin/env bash
# Scale benchmark: the kernel's System V IPC against ipcshim (LD_PRELOAD) as a namespace
# fills up, and many clients at once.
#
#   c-tests/bench-scale.sh [CLIENTS]
#
# For each family, `bench scale FAMILY` grows it to 100, 1,000, 10,000 and 30,000 objects
# (4,096 segments at the default SHMMNI) and measures, at each size, a lookup of an existing
# key (msgget/semget/shmget without IPC_CREAT, keys spread over all objects) and an
# IPC_STAT: both should stay flat as the count grows. Under ipcshim it also reads the
# broker's memory (RSS and PSS from /proc/PID/smaps_rollup, and the pages its objects'
# memfds hold) and prints it per object, against the empty namespace. Then `bench clients
# CLIENTS` (default 1000) forks that many processes that each make one call and stay
# connected until all have: the time until all are served, an IPC_STAT while they are all
# connected, and the time for all of them to exit.
#
# One run per side (these runs are long, and the figures are about shape, not medians).
# A report, not a test: it exits 0 whatever the figures. The kernel side runs in an IPC
# namespace of its own when it may (root). Environment as bench.sh (IPCSHIM_LIB, BENCH_BIN,
# BENCH_TIMEOUT).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib=${IPCSHIM_LIB:-$repo/target/release/libipcshim.so}
case $lib in /*) ;; *) lib=$(pwd)/$lib ;; esac
bench=${BENCH_BIN:-$repo/build/c-tests/bench}
ipcshim=$repo/target/release/ipcshim
timeout_s=${BENCH_TIMEOUT:-300}
clients=${1:-1000}
namespace=bench-scale-$$

if [ ! -x "$bench" ] || [ ! -f "$lib" ] || [ ! -x "$ipcshim" ]; then
    echo "bench-scale: build first (make bench-scale): need $bench, $lib, $ipcshim" >&2
    exit 0
fi

stop_broker() {
    env -u LD_PRELOAD IPCSHIM_NAMESPACE="$namespace" "$ipcshim" stop --force >/dev/null 2>&1 || true
}
trap 'stop_broker; exit 130' INT TERM

kernel() { env -u LD_PRELOAD -u IPCSHIM_NAMESPACE timeout -k 5 "$timeout_s" "$bench" "$@" 2>&1; }
shim() {
    env LD_PRELOAD="$lib" IPCSHIM_NAMESPACE="$namespace" BENCH_BROKER_PID="$broker" \
        timeout -k 5 "$timeout_s" "$bench" "$@" 2>&1
}

# Start the namespace's broker (any call does) and find its pid for the memory figures.
env LD_PRELOAD="$lib" IPCSHIM_NAMESPACE="$namespace" "$bench" clients 1 >/dev/null 2>&1
broker=$(env -u LD_PRELOAD IPCSHIM_NAMESPACE="$namespace" "$ipcshim" status 2>/dev/null | awk '/broker pid/ { print $3 }')
broker=${broker:-0}

echo "== lookup and IPC_STAT as a family grows (ns/op; kernel | ipcshim), broker memory per object (KiB)"
printf '%-6s %8s %10s %10s %10s %10s %10s %10s %8s %8s %8s\n' family objects \
    "get k" "get shim" "stat k" "stat shim" "make+use k" "make+use" RSS/obj PSS/obj memfd/obj
for family in msg sem shm; do
    k_out=$(kernel scale "$family")
    s_out=$(shim scale "$family")
    # Lines: scale FAMILY OBJECTS create_ns get_ns ctl_ns rss_kb pss_kb memfd_kb
    awk -v fam="$family" -v kout="$k_out" -v sout="$s_out" '
        BEGIN {
            n = split(kout, kl, "\n")
            for (i = 1; i <= n; i++) { split(kl[i], f, " "); if (f[1] == "scale") k[f[3]] = kl[i]; else if (kl[i] != "") kerr = kl[i] }
            n = split(sout, sl, "\n")
            for (i = 1; i <= n; i++) {
                split(sl[i], f, " ")
                if (f[1] != "scale") { if (sl[i] != "") serr = sl[i]; continue }
                s[f[3]] = sl[i]; order[++m] = f[3]
            }
            split(s[0], base, " ")
            for (j = 1; j <= m; j++) {
                c = order[j]; if (c == 0) continue
                split(s[c], v, " ")
                kg = ks = kc = "n/a"
                if (c in k) { split(k[c], w, " "); kc = w[4]; kg = w[5]; ks = w[6] }
                rss = pss = mem = "n/a"
                if (v[7] >= 0 && base[7] >= 0) {
                    rss = sprintf("%.2f", (v[7] - base[7]) / c)
                    pss = sprintf("%.2f", (v[8] - base[8]) / c)
                    mem = sprintf("%.2f", (v[9] - base[9]) / c)
                }
                printf "%-6s %8d %10s %10s %10s %10s %10s %10s %8s %8s %8s\n", fam, c, kg, v[5], ks, v[6], kc, v[4], rss, pss, mem
            }
            if (kerr != "") print "  kernel: " kerr
            if (serr != "") print "  ipcshim: " serr
        }'
done

echo
echo "== $clients clients at once (ready: all connected and served once; stat: one IPC_STAT meanwhile; exit: all gone)"
printf '%-8s %10s %10s %10s %8s\n' side "ready ms" "stat ns" "exit ms" failed
for side in kernel shim; do
    out=$($side clients "$clients")
    line=$(printf '%s\n' "$out" | grep -m1 '^clients ' || true)
    if [ -n "$line" ]; then
        # clients N ready_ms stat_ns release_ms failed
        set -- $line
        printf '%-8s %10s %10s %10s %8s\n' "${side/shim/ipcshim}" "$3" "$4" "$5" "$6"
    else
        printf '%-8s %s\n' "${side/shim/ipcshim}" "error: $(printf '%s' "$out" | head -c 200)"
    fi
done

stop_broker
exit 0
