#!/usr/bin/env bash
# Run the C conformance suite in one mode.
#
#   bash c-tests/run-suite.sh MODE [TEST...]
#
# MODE:
#   kernel          every test against the kernel's System V IPC, each (when it may: root)
#                   in an IPC namespace of its own, as ipcshim's modes use a private
#                   namespace: the machine's other objects and ids (other programs', other
#                   runs') neither disturb the test nor are disturbed by it (shm_limits
#                   fills SHMMNI; shm_info counts used ids)
#   ipcshim         every test with LD_PRELOAD=$IPCSHIM_LIB in a private namespace
#                   (IPCSHIM_NAMESPACE=check-<pid>-<random>); the namespace's broker is
#                   stopped at the end with "ipcshim stop"
#   sandbox         like ipcshim, each test run under build/c-tests/nosysv, so the kernel's
#                   SysV IPC is unavailable and only the library can make the tests pass
#   sandbox-kernel  a shm test against the kernel under nosysv: it must FAIL (proves that
#                   the sandbox blocks the kernel); succeeds only if it does
#
# TEST...: names of tests (c-tests/tests/NAME.c) to run instead of all of them.
#
# Builds nothing: the Makefile builds build/c-tests/*. Each test gets `timeout 60`.
# Prints one line per test and ends with "MODE: N passed, N failed"; exits non-zero if
# any test failed.
#
# Environment: IPCSHIM_LIB (default target/release/libipcshim.so), IPCSHIM_BIN (default
# target/release/ipcshim, used for "ipcshim stop"), TEST_TIMEOUT (default 60 seconds).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build/c-tests"
NOSYSV="$BUILD/nosysv"
TIMEOUT=${TEST_TIMEOUT:-60}

usage() {
    echo "usage: $0 kernel|ipcshim|sandbox|sandbox-kernel [TEST...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
MODE=$1
shift
case "$MODE" in
    kernel | ipcshim | sandbox | sandbox-kernel) ;;
    *) usage ;;
esac

# The tests to run: every c-tests/tests/*.c, or the names given.
TESTS=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        t=$(basename "$t")
        TESTS+=("${t%.c}")
    done
else
    for src in "$ROOT"/c-tests/tests/*.c; do
        [ -e "$src" ] || continue
        t=$(basename "$src")
        TESTS+=("${t%.c}")
    done
fi

if [ "$MODE" = sandbox-kernel ] && [ $# -eq 0 ]; then
    # One shm test is enough to show that the kernel's SysV IPC is blocked.
    pick=""
    for t in shm_get "${TESTS[@]}"; do
        case "$t" in
            shm_*) if [ -x "$BUILD/$t" ]; then pick=$t; break; fi ;;
        esac
    done
    if [ -z "$pick" ]; then
        echo "sandbox-kernel: no shm test binary in $BUILD (build the suite first)" >&2
        echo "sandbox-kernel: 0 passed, 1 failed"
        exit 1
    fi
    TESTS=("$pick")
fi

if [ ${#TESTS[@]} -eq 0 ]; then
    echo "$MODE: no tests found under $ROOT/c-tests/tests" >&2
    echo "$MODE: 0 passed, 1 failed"
    exit 1
fi

case "$MODE" in
    sandbox | sandbox-kernel)
        if [ ! -x "$NOSYSV" ]; then
            echo "$MODE: $NOSYSV is not built" >&2
            echo "$MODE: 0 passed, 1 failed"
            exit 1
        fi
        ;;
esac

PRELOAD=()
IPCSHIM_BIN=${IPCSHIM_BIN:-$ROOT/target/release/ipcshim}
stop_broker() {
    if [ -x "$IPCSHIM_BIN" ]; then
        if ! "$IPCSHIM_BIN" stop >/dev/null 2>&1; then
            echo "note: '$IPCSHIM_BIN stop' failed (namespace $IPCSHIM_NAMESPACE)" >&2
        fi
    fi
}
case "$MODE" in
    ipcshim | sandbox)
        IPCSHIM_LIB=${IPCSHIM_LIB:-$ROOT/target/release/libipcshim.so}
        case "$IPCSHIM_LIB" in
            /*) ;;
            *) IPCSHIM_LIB="$(pwd)/$IPCSHIM_LIB" ;;
        esac
        if [ ! -f "$IPCSHIM_LIB" ]; then
            echo "$MODE: $IPCSHIM_LIB not found (run make first)" >&2
            echo "$MODE: 0 passed, 1 failed"
            exit 1
        fi
        export IPCSHIM_LIB
        IPCSHIM_NAMESPACE="check-$$-$RANDOM"
        export IPCSHIM_NAMESPACE
        PRELOAD=(env "LD_PRELOAD=$IPCSHIM_LIB")
        trap stop_broker EXIT
        ;;
esac

SANDBOX=()
case "$MODE" in
    sandbox | sandbox-kernel) SANDBOX=("$NOSYSV") ;;
esac

# kernel: a fresh IPC namespace per test, where util-linux's unshare may make one.
ISOLATE=()
if [ "$MODE" = kernel ]; then
    if unshare --ipc true 2>/dev/null; then
        ISOLATE=(unshare --ipc)
    else
        echo "note: kernel tests share the machine's IPC namespace (unshare --ipc is not allowed)" >&2
    fi
fi

# Show a failed test's output, at most 80 lines of it.
show_output() {
    local lines
    lines=$(wc -l <"$out")
    head -n 80 "$out" | sed 's/^/    /'
    if [ "$lines" -gt 80 ]; then
        echo "    ... ($((lines - 80)) more lines)"
    fi
}

passed=0
failed=0
out=$(mktemp "${TMPDIR:-/tmp}/run-suite.XXXXXX")
cd "$ROOT" || exit 1

for t in "${TESTS[@]}"; do
    bin="$BUILD/$t"
    if [ ! -x "$bin" ]; then
        echo "FAIL $t ($MODE): $bin is not built"
        failed=$((failed + 1))
        continue
    fi
    # timeout runs [unshare --ipc] [nosysv] [env LD_PRELOAD=...] test: only the test itself
    # (and what it execs) is preloaded, and under nosysv the whole tree is sandboxed.
    timeout -k 5 "$TIMEOUT" "${ISOLATE[@]}" "${SANDBOX[@]}" "${PRELOAD[@]}" "$bin" >"$out" 2>&1 </dev/null
    rc=$?
    if [ "$MODE" = sandbox-kernel ]; then
        if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ]; then
            echo "PASS $t ($MODE: failed as expected without the kernel's SysV IPC, status $rc)"
            passed=$((passed + 1))
        else
            echo "FAIL $t ($MODE: status $rc; it should have failed under nosysv)"
            show_output
            failed=$((failed + 1))
        fi
        continue
    fi
    if [ $rc -eq 0 ]; then
        echo "PASS $t ($MODE)"
        passed=$((passed + 1))
    else
        why="status $rc"
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="timed out after ${TIMEOUT}s"
        [ $rc -gt 128 ] && [ $rc -ne 137 ] && why="killed by signal $((rc - 128))"
        echo "FAIL $t ($MODE): $why"
        show_output
        failed=$((failed + 1))
    fi
done
rm -f "$out"

echo "$MODE: $passed passed, $failed failed"
[ $failed -eq 0 ]
