#!/usr/bin/env bash
# Instructions per operation of a single-process benchmark case under ipcshim, counted by
# callgrind: repeatable where wall-clock figures on a shared machine are not.
#
#   c-tests/callgrind.sh CASE [N]      (N: iterations, default 100000)
#
# Runs `bench CASE N` and `bench CASE 1` under valgrind --tool=callgrind with the library
# preloaded and prints (instructions(N) - instructions(1)) / (N - 1): start-up, warm-up
# and object creation cancel out. Only for cases that stay in one process (msg_64,
# msg_4096, sem_*, shm_*): callgrind follows no children here. The broker runs outside
# valgrind, in a namespace of its own (IPCSHIM_NAMESPACE=callgrind-$$), stopped at the
# end. Profiles are left in $TMPDIR (callgrind_annotate reads them).
#
# Environment: IPCSHIM_LIB (default target/release/libipcshim.so), BENCH_BIN (default
# build/c-tests/bench).
set -eu

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib=${IPCSHIM_LIB:-$repo/target/release/libipcshim.so}
bench=${BENCH_BIN:-$repo/build/c-tests/bench}
[ $# -ge 1 ] || { echo "usage: $0 CASE [N]" >&2; exit 64; }
name=$1
n=${2:-100000}
[ "$n" -ge 2 ] || { echo "N must be at least 2" >&2; exit 64; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

export IPCSHIM_NAMESPACE=callgrind-$$
export IPCSHIM_BROKER=${IPCSHIM_BROKER:-$repo/target/release/ipcshim}
trap 'env -u LD_PRELOAD "$IPCSHIM_BROKER" stop >/dev/null 2>&1 || true' EXIT
out=${TMPDIR:-/tmp}/callgrind.$name.$$

# One plain run starts the broker, so that valgrind sees only the client.
LD_PRELOAD=$lib "$bench" "$name" 10 >/dev/null

total() { # iterations → instructions of the whole run
    LD_PRELOAD=$lib valgrind --tool=callgrind --callgrind-out-file="$out.$1" "$bench" "$name" "$1" \
        >/dev/null 2>&1
    awk '/^(summary|totals):/ { print $2; exit }' "$out.$1"
}
big=$(total "$n")
one=$(total 1)
echo "$name: $(( (big - one) / (n - 1) )) instructions per operation (profile: $out.$n)"
