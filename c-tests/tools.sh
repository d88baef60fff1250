#!/usr/bin/env bash
# util-linux's own tools, unmodified, under the library inside the no-SysV sandbox, compared
# with the same commands against the kernel: ipcmk creates a queue, a set and a segment;
# /proc/sysvipc (read by cat), `ipcs` (-q -s -m, -i, -l, -u), `lsipc` (-i, -g) show them;
# ipcrm removes them (by id, by key, --all). Kernel and ipcshim outputs must be identical
# character for character after masking what legitimately differs: keys, ids, times, pids,
# shm rss (see the README). Totals of the whole machine (ipcs -u, lsipc -g's USED) cannot be
# compared with a kernel other programs use: under ipcshim they are checked against the
# namespace's known contents.
#
#   bash c-tests/tools.sh        (make c-tests runs it; prints "tools: N passed, N failed")
#
# Environment: IPCSHIM_LIB, IPCSHIM_BIN as for run-suite.sh.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NOSYSV="$ROOT/build/c-tests/nosysv"
IPCSHIM_LIB=${IPCSHIM_LIB:-$ROOT/target/release/libipcshim.so}
IPCSHIM_BIN=${IPCSHIM_BIN:-$ROOT/target/release/ipcshim}
export IPCSHIM_BROKER=${IPCSHIM_BROKER:-$IPCSHIM_BIN}

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() { echo "FAIL tools: $*"; failed=$((failed + 1)); }

for tool in ipcmk ipcs ipcrm lsipc; do
    command -v $tool >/dev/null || { fail "$tool not installed (util-linux)"; }
done
[ -x "$NOSYSV" ] && [ -f "$IPCSHIM_LIB" ] || { fail "build first ($NOSYSV, $IPCSHIM_LIB)"; echo "tools: $passed passed, $failed failed"; exit 1; }

# mask LIST: hides the whitespace-separated columns LIST (" 1 2 ") of each line with X,
# together with the blanks around them, so that a value of another width (left- or
# right-aligned) masks the same way and the other columns keep their exact padding.
mask() {
    awk -v list=" $1 " '{
        n = length($0); t = 0; split("", s); split("", e)
        for (i = 1; i <= n; i++) {
            c = substr($0, i, 1)
            if (c != " " && (i == 1 || substr($0, i - 1, 1) == " ")) s[++t] = i
            if (c != " " && (i == n || substr($0, i + 1, 1) == " ")) e[t] = i
        }
        split("", m)
        for (k = 1; k <= t; k++) if (index(list, " " k " ")) {
            from = k == 1 ? 1 : e[k - 1] + 1; to = k == t ? n : s[k + 1] - 1
            for (i = from; i <= to; i++) m[i] = 1
        }
        out = ""
        for (i = 1; i <= n; i++) out = out (m[i] ? "X" : substr($0, i, 1))
        print out
    }'
}

# The header line and our object's line (second column = id) of a /proc/sysvipc table,
# without the key column: ipcmk's keys are random, and a negative one overflows its %10d.
ours() { awk -v id="$1" '(NR == 1 || $2 == id) { sub(/^ *[^ ]+/, ""); print }'; }

# ipcs -i / lsipc -i: ids, keys, pids and times hidden.
mask_detail() {
    sed -E -e 's/((msqid|semid|shmid)=)[0-9]+/\1ID/' -e 's/(cpid=)[0-9]+/\1PID/' \
        -e 's/((change_time|ctime)( = |=)).*/\1TIME/' \
        -e 's/^((Key|ID|Creator PID|Last change):[ ]*).*/\1X/'
}

# One run of the scenario, every tool through "$@" (nothing, or the sandbox and preload).
# Prints the normalised outputs; ids it made are left in IDS for the caller.
scenario() {
    local q s m
    q=$("$@" ipcmk -Q -p 0640 | grep -o '[0-9]*$')
    s=$("$@" ipcmk -S 3 -p 0600 | grep -o '[0-9]*$')
    m=$("$@" ipcmk -M 4096 -p 0666 | grep -o '[0-9]*$')
    IDS="$q $s $m"
    echo "== ipcmk made queue, set and segment: ${q:+yes} ${s:+yes} ${m:+yes}"
    echo "== /proc/sysvipc"
    "$@" cat /proc/sysvipc/msg | ours "$q" | mask "1 5 6 11 12 13"
    "$@" cat /proc/sysvipc/sem | ours "$s" | mask "1 8 9"
    "$@" cat /proc/sysvipc/shm | ours "$m" | mask "1 4 5 11 12 13 14"
    echo "== ipcs"
    "$@" ipcs -q | awk -v id="$q" '/^-----/ || NF < 3 || $1 == "key" || $2 == id' | mask "1 2"
    "$@" ipcs -s | awk -v id="$s" '/^-----/ || NF < 3 || $1 == "key" || $2 == id' | mask "1 2"
    "$@" ipcs -m | awk -v id="$m" '/^-----/ || NF < 3 || $1 == "key" || $2 == id' | mask "1 2"
    "$@" ipcs -q -i "$q" | mask_detail
    "$@" ipcs -s -i "$s" | mask_detail
    "$@" ipcs -m -i "$m" | mask_detail
    echo "== ipcs -l"
    "$@" ipcs -l
    echo "== ipcs -u (structure)"
    "$@" ipcs -u | sed -E 's/[0-9]+/N/g'
    echo "== lsipc"
    "$@" lsipc -q -i "$q" | mask_detail
    "$@" lsipc -s -i "$s" | mask_detail
    "$@" lsipc -m -i "$m" | mask_detail
    "$@" lsipc -g -o RESOURCE,DESCRIPTION,LIMIT
    echo "== ipcrm"
    "$@" ipcrm -q "$q" -s "$s" && echo "removed by id"
    local key
    key=$("$@" ipcs -m | awk -v id="$m" '$2 == id { print $1 }')
    "$@" ipcrm -M "$key" && echo "removed by key"
    "$@" ipcs | awk -v q="$q" -v s="$s" -v m="$m" '$2 == q || $2 == s || $2 == m { print "still listed: " $0 }'
}

kernel_out=$(mktemp) shim_out=$(mktemp)
export IPCSHIM_NAMESPACE="tools-$$-$RANDOM"
trap 'rm -f "$kernel_out" "$shim_out"; "$IPCSHIM_BIN" stop --force >/dev/null 2>&1' EXIT

scenario >"$kernel_out" 2>&1
SHIM=("$NOSYSV" env "LD_PRELOAD=$IPCSHIM_LIB")
scenario "${SHIM[@]}" >"$shim_out" 2>&1

if diff -u --label kernel --label ipcshim "$kernel_out" "$shim_out"; then
    pass
else
    fail "the tools' outputs under ipcshim differ from the kernel's (above)"
fi
grep -q "removed by key" "$shim_out" && ! grep -q "still listed" "$shim_out" && pass || fail "ipcrm under ipcshim"

# The namespace's totals, which the kernel's machine-wide ones cannot show: one queue,
# a set of 3, a one-page segment.
"${SHIM[@]}" ipcmk -Q >/dev/null && "${SHIM[@]}" ipcmk -S 3 >/dev/null && "${SHIM[@]}" ipcmk -M 4096 >/dev/null
usage=$("${SHIM[@]}" ipcs -u)
for want in "allocated queues = 1" "used space = 0 bytes" "segments allocated 1" "pages allocated 1" \
    "used arrays = 1" "allocated semaphores = 3"; do
    grep -qx "$want" <<<"$usage" && pass || fail "ipcs -u: no line '$want' in:
$usage"
done
used=$("${SHIM[@]}" lsipc -g --noheadings --raw -o RESOURCE,USED | tr '\n' ' ')
[ "$used" = "MSGMNI 1 MSGMAX - MSGMNB - SHMMNI 1 SHMALL 1 SHMMAX - SHMMIN - SEMMNI 1 SEMMNS 3 SEMMSL - SEMOPM - SEMVMX - " ] &&
    pass || fail "lsipc -g USED: $used"
# ipcrm --all empties the namespace (never run against the kernel: it is shared).
"${SHIM[@]}" ipcrm --all && [ "$("${SHIM[@]}" ipcs | awk '$1 ~ /^0x/' | wc -l)" -eq 0 ] && pass || fail "ipcrm --all"
# A reader does not start a broker: after stop, cat shows the header only, and no broker.
"$IPCSHIM_BIN" stop --force >/dev/null 2>&1
[ "$("${SHIM[@]}" cat /proc/sysvipc/msg | wc -l)" -eq 1 ] && pass || fail "cat /proc/sysvipc/msg with no broker"
"$IPCSHIM_BIN" status >/dev/null 2>&1 && fail "reading /proc/sysvipc started a broker" || pass

echo "tools: $passed passed, $failed failed"
[ $failed -eq 0 ]
