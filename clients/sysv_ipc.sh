#!/usr/bin/env bash
# A real client's test suite: the Python package sysv_ipc (a C extension calling libc's
# System V IPC functions) runs its own unittest suite against the kernel, then under
# `ipcshim run --private` inside the no-SysV sandbox (build/c-tests/nosysv); every test that
# passes against the kernel must pass under ipcshim (clients/sysv_ipc.divergences lists the
# exceptions, now none).
#
#   bash clients/sysv_ipc.sh        (make check-clients builds what it needs, then runs this)
#
# The first run downloads the pinned sdist from PyPI (hash-checked) and builds it into a
# virtual environment under build/clients; later runs reuse both and need no network.
# Needs: python3 with venv, a C compiler, target/release/{ipcshim,libipcshim.so} and
# build/c-tests/nosysv. Ends with "sysv_ipc: N passed, N failed, N skipped".
#
# The suite runs alone, then as COPIES copies at once (default 3) sharing one kernel, or one
# ipcshim namespace: many clients of one broker. Its tests use random keys (each copy seeded
# apart: clients/unittest_report.py), so the copies meet only in the shared limits and the
# broker, as they would in the kernel.
set -euo pipefail
COPIES=${CLIENT_COPIES:-3}

# bash clients/sysv_ipc.sh --together MODE WORK PY REPORT: the COPIES copies at once, run from
# the sdist directory, each writing WORK/together-N.MODE.{results,log} (used below; under
# ipcshim this runs inside the sandbox, so that one namespace holds all the copies).
if [ "${1:-}" = --together ]; then
    mode=$2 work=$3 py=$4 report=$5
    for i in $(seq "$COPIES"); do
        "$py" "$report" run "$work/together-$i.$mode.results" tests . \
            >"$work/together-$i.$mode.log" 2>&1 &
    done
    wait
    exit 0
fi

SYSV_IPC_VERSION=1.2.0
SYSV_IPC_SHA256=ef96ab33bb62e4d14142f0be0524dcc0c3c70c96442df2fc773c67b7c7514199
SETUPTOOLS_VERSION=80.9.0   # builds the extension (no build isolation: nothing unpinned)
TIMEOUT=${CLIENT_TIMEOUT:-600}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="$ROOT/build/clients"
VENV="$WORK/venv"
SRC="$WORK/sysv_ipc-$SYSV_IPC_VERSION"
IPCSHIM="$ROOT/target/release/ipcshim"
NOSYSV="$ROOT/build/c-tests/nosysv"
REPORT="$ROOT/clients/unittest_report.py"
PY="$VENV/bin/python"

for f in "$IPCSHIM" "$ROOT/target/release/libipcshim.so" "$NOSYSV"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "sysv_ipc: $f is not built (make check-clients builds it)" >&2; exit 1; }
done
mkdir -p "$WORK"

# The virtual environment with the pinned sysv_ipc built from its sdist, and the sdist's
# tests unpacked beside it. Rebuilt whenever it does not import the pinned version.
installed() {
    [ -d "$SRC/tests" ] &&
        "$PY" -c "import sys, sysv_ipc; sys.exit(sysv_ipc.VERSION != '$SYSV_IPC_VERSION')" 2>/dev/null
}
if ! installed; then
    echo "== sysv_ipc: building $SYSV_IPC_VERSION from its PyPI sdist into $VENV"
    rm -rf "$VENV" "$SRC" "$WORK/dist"
    python3 -m venv "$VENV"
    pip=("$VENV/bin/pip" --disable-pip-version-check --no-input -q)
    "${pip[@]}" install "setuptools==$SETUPTOOLS_VERSION"
    echo "sysv_ipc==$SYSV_IPC_VERSION --hash=sha256:$SYSV_IPC_SHA256" >"$WORK/requirements.txt"
    "${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation \
        -r "$WORK/requirements.txt" -d "$WORK/dist"
    tar -xzf "$WORK/dist/sysv_ipc-$SYSV_IPC_VERSION.tar.gz" -C "$WORK"
    # Built from the sdist with the machine's compiler; its setup probes semtimedop by
    # compiling a small program, which must succeed here (SEMAPHORE_TIMEOUT_SUPPORTED).
    "${pip[@]}" install --no-deps --no-build-isolation "$WORK/dist/sysv_ipc-$SYSV_IPC_VERSION.tar.gz"
    installed || { echo "sysv_ipc: the build did not give an importable sysv_ipc $SYSV_IPC_VERSION" >&2; exit 1; }
fi
"$PY" -c "import sys, sysv_ipc; sys.exit(not sysv_ipc.SEMAPHORE_TIMEOUT_SUPPORTED)" ||
    { echo "sysv_ipc: built without semtimedop support: its timeout tests would be skipped" >&2; exit 1; }

# The suite imports the installed module; it runs from the unpacked sdist (its tests are a
# package, tests/), whose src/ directory does not shadow the module's name.
cd "$SRC"

rm -f "$WORK"/*.results "$WORK"/together-*.log
echo "== sysv_ipc: its suite against the kernel"
status=0
timeout -k 10 "$TIMEOUT" "$PY" "$REPORT" run "$WORK/alone.kernel.results" tests . || status=$?
echo "(exit status $status)"
echo "== sysv_ipc: $COPIES copies at once against the kernel (output in $WORK/together-N.kernel.log)"
timeout -k 10 "$TIMEOUT" bash "$ROOT/clients/sysv_ipc.sh" --together kernel "$WORK" "$PY" "$REPORT" || true

# The sandbox must really block the kernel for this client (ENOSYS), or the runs below
# would prove nothing.
blocked='import errno, sysv_ipc
try:
    sysv_ipc.SharedMemory(None, sysv_ipc.IPC_CREX, size=4096).remove()
except OSError as e:
    raise SystemExit(e.errno != errno.ENOSYS)
raise SystemExit(1)'
if ! "$NOSYSV" "$PY" -c "$blocked"; then
    echo "sysv_ipc: under $NOSYSV without ipcshim, sysv_ipc did not fail with ENOSYS" >&2
    exit 1
fi

# ipcshim run preloads the library in a fresh namespace (torn down when the suite ends);
# nosysv, inside it, installs the seccomp filter and execs python, so the whole suite and
# everything it starts (the broker included) runs without the kernel's System V IPC.
echo "== sysv_ipc: its suite under ipcshim run --private, inside $NOSYSV"
status=0
timeout -k 10 "$TIMEOUT" "$IPCSHIM" run --private -- "$NOSYSV" \
    "$PY" "$REPORT" run "$WORK/alone.ipcshim.results" tests . || status=$?
echo "(exit status $status)"
echo "== sysv_ipc: $COPIES copies at once in one ipcshim namespace, inside $NOSYSV (output in $WORK/together-N.ipcshim.log)"
timeout -k 10 "$TIMEOUT" "$IPCSHIM" run --private -- "$NOSYSV" \
    bash "$ROOT/clients/sysv_ipc.sh" --together ipcshim "$WORK" "$PY" "$REPORT" || true

echo "== sysv_ipc: each test against the kernel and under ipcshim"
runs=("alone:$WORK/alone.kernel.results:$WORK/alone.ipcshim.results")
for i in $(seq "$COPIES"); do
    runs+=("copy $i of $COPIES at once:$WORK/together-$i.kernel.results:$WORK/together-$i.ipcshim.results")
done
if ! "$PY" "$REPORT" compare sysv_ipc "$ROOT/clients/sysv_ipc.divergences" "${runs[@]}"; then
    # The verbose output of the copies that ran at once, for their tracebacks.
    for log in "$WORK"/together-*.log; do
        [ -f "$log" ] && grep -q '^FAILED' "$log" && { echo "== $log"; cat "$log"; }
    done
    exit 1
fi
