#!/usr/bin/env bash
# Alternating runs of one benchmark case under several builds of the library: the way to
# tell whether a change made a case faster on a machine whose speed drifts from one minute
# to the next (each round runs every build once, so a drift hits all of them alike).
#
#   c-tests/ab.sh ROUNDS CASE ITERATIONS DIR...
#
# DIR: a directory holding a build's libipcshim.so and its ipcshim binary (the broker; a
# change to a shared-memory layout needs its own), e.g. a copy of target/release taken
# before the change. Each build runs in a namespace of its own, stopped at the end.
# Prints, per build, the median and the minimum ns/op over the rounds; for a case that
# makes two processes talk, also split by the line-move cost measured before each round
# (`bench linexfer`, near: under NEAR_NS, 150 by default; see bench.sh).
#
# Environment: BENCH_BIN (default <repo>/build/c-tests/bench). A report: exits 0 unless
# the arguments are wrong.
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=${BENCH_BIN:-$repo/build/c-tests/bench}
near_ns=${NEAR_NS:-150}
if [ $# -lt 4 ] || ! [[ $1 =~ ^[0-9]+$ && $3 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 ROUNDS CASE ITERATIONS DIR..." >&2
    exit 64
fi
rounds=$1 name=$2 iters=$3
shift 3
for d in "$@"; do
    [ -f "$d/libipcshim.so" ] && [ -x "$d/ipcshim" ] || { echo "$d: no libipcshim.so and ipcshim" >&2; exit 64; }
done
[ -x "$bench" ] || { echo "$bench is not built (make build/c-tests/bench)" >&2; exit 64; }

tag=ab-$$
stop_all() {
    local i=0
    for d in "$@"; do
        IPCSHIM_NAMESPACE=$tag-$i env -u LD_PRELOAD "$d/ipcshim" stop >/dev/null 2>&1
        i=$((i + 1))
    done
}
trap 'stop_all "$@"' EXIT

out=$(mktemp)
for ((r = 0; r < rounds; r++)); do
    line=$("$bench" linexfer | awk '{print $2}')
    i=0
    for d in "$@"; do
        v=$(IPCSHIM_NAMESPACE=$tag-$i IPCSHIM_BROKER="$d/ipcshim" LD_PRELOAD="$(cd "$d" && pwd)/libipcshim.so" \
            "$bench" "$name" "$iters" 2>/dev/null | awk '{print $2}')
        line="$line ${v:-nan}"
        i=$((i + 1))
    done
    echo "$line" >>"$out"
done

python3 - "$out" "$near_ns" "$@" <<'EOF'
import statistics, sys
path, near = sys.argv[1], float(sys.argv[2])
dirs = sys.argv[3:]
rows = [[float(x) for x in l.split()] for l in open(path) if l.strip()]
def show(label, rs):
    if not rs:
        return
    print(f"{label} ({len(rs)} rounds, a line moves in {statistics.median(r[0] for r in rs):.0f} ns)")
    for i, d in enumerate(dirs):
        v = [r[i + 1] for r in rs if r[i + 1] == r[i + 1]]
        if v:
            print(f"  {d}: median {statistics.median(v):.1f} ns/op, min {min(v):.1f}")
        else:
            print(f"  {d}: every run failed")
show("all", rows)
show("near", [r for r in rows if r[0] < near])
show("far", [r for r in rows if r[0] >= near])
EOF
rm -f "$out"
