#!/usr/bin/env python3
"""Run a unittest suite verbosely and record each test's outcome; compare such records.

    unittest_report.py run RESULTS START_DIR TOP_DIR
        discovers and runs the tests under START_DIR (top-level directory TOP_DIR) with
        verbose output, and writes one line per test to RESULTS: "<outcome>\t<test id>",
        outcome one of pass fail error skip xfail xpass. Lines are written as tests finish,
        so a run that crashes or hangs still leaves the outcomes it reached.

    unittest_report.py compare NAME DIVERGENCES LABEL:KERNEL:IPCSHIM...
        for each run (its results against the kernel and under ipcshim), prints the tests
        with their outcome in both (every test for the first run, the others' differences),
        and fails if a test that passed against the kernel did not pass under ipcshim, unless
        DIVERGENCES names it with exactly that outcome (and fails if a listed divergence no
        longer happens, so the list stays true). Ends with "NAME: N passed, N failed,
        N skipped", counting test runs (passed: same result as the kernel, or the listed
        divergence; skipped: did not pass against the kernel, proving nothing about ipcshim).
"""
import faulthandler
import sys
import unittest


def run(results_path, start_dir, top_dir):
    faulthandler.enable()  # a crash inside the C extension prints a Python traceback
    out = open(results_path, "w", buffering=1)

    class RecordingResult(unittest.TextTestResult):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._failed_subtests = set()  # ids of tests already recorded as failed

        def _record(self, test, outcome):
            out.write(f"{outcome}\t{test.id()}\n")

        def addSuccess(self, test):
            super().addSuccess(test)
            # A test whose subtests failed was recorded as failed by addSubTest already.
            if test.id() not in self._failed_subtests:
                self._record(test, "pass")

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._record(test, "fail")

        def addError(self, test, err):
            super().addError(test, err)
            self._record(test, "error")

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._record(test, "skip")

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._record(test, "xfail")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._record(test, "xpass")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None and test.id() not in self._failed_subtests:
                self._failed_subtests.add(test.id())
                self._record(test, "fail")

    suite = unittest.defaultTestLoader.discover(start_dir, top_level_dir=top_dir)
    # sysv_ipc seeds rand() with time(NULL) when imported (discovery imports it) and draws
    # its random keys from it: copies started in the same second would draw the same keys
    # at the same moments and open each other's objects. Each run gets a seed of its own.
    import ctypes
    import os
    ctypes.CDLL(None).srand(os.getpid())
    result = unittest.TextTestRunner(verbosity=2, resultclass=RecordingResult).run(suite)
    return 0 if result.wasSuccessful() else 1


def read_results(path):
    outcomes = {}
    try:
        with open(path) as f:
            for line in f:
                outcome, _, test = line.rstrip("\n").partition("\t")
                if test:
                    outcomes[test] = outcome
    except FileNotFoundError:
        pass
    return outcomes


def read_divergences(path):
    """DIVERGENCES: "<test id> <expected outcome under ipcshim> <why...>" per line, # comments."""
    expected = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                test, outcome = line.split()[:2]
                expected[test] = outcome
    return expected


def verdict(test, kernel, ipcshim, divergences, divergences_path):
    """One test's verdict: ("pass" | "fail" | "skip", words to print)."""
    k = kernel.get(test, "missing")
    s = ipcshim.get(test, "missing")
    if test in divergences and test not in kernel:
        return "fail", "FAILED: listed as a divergence, but no such test ran"
    if k != "pass":
        return "skip", "not compared (did not pass against the kernel)"
    if test in divergences:
        if s == divergences[test]:
            return "pass", f"known divergence ({s}, listed in {divergences_path})"
        return "fail", f"FAILED: listed as a divergence with outcome {divergences[test]}"
    if s == "pass":
        return "pass", "same"
    return "fail", "FAILED: passes against the kernel, not under ipcshim"


def compare(name, divergences_path, runs):
    """runs: "LABEL:KERNEL:IPCSHIM" each, a run of the suite against the kernel and its
    counterpart under ipcshim. The first gets a line per test; the others only the tests
    whose verdict is not "same"."""
    divergences = read_divergences(divergences_path)
    counts = {"pass": 0, "fail": 0, "skip": 0}
    for i, run_spec in enumerate(runs):
        label, kernel_path, ipcshim_path = run_spec.split(":")
        kernel = read_results(kernel_path)
        ipcshim = read_results(ipcshim_path)
        tests = sorted(kernel.keys() | ipcshim.keys() | divergences.keys())
        width = max((len(t) for t in tests), default=0)
        print(f"-- {label}")
        if i == 0:
            print(f"{'test':<{width}}  {'kernel':<7} {'ipcshim':<7} verdict")
        shown = 0
        for test in tests:
            outcome, words = verdict(test, kernel, ipcshim, divergences, divergences_path)
            counts[outcome] += 1
            if i == 0 or words != "same":
                k, s = kernel.get(test, "missing"), ipcshim.get(test, "missing")
                print(f"{test:<{width}}  {k:<7} {s:<7} {words}")
                shown += 1
        if i > 0 and shown < len(tests):
            others = "the other" if shown else "all"
            print(f"{others} {len(tests) - shown} tests: same outcome against the kernel and under ipcshim")
        if not any(o == "pass" for o in kernel.values()):
            print(f"{label}: no test passed against the kernel: nothing was compared")
            counts["fail"] += 1
    print(f"{name}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        sys.exit(run(*sys.argv[2:]))
    if len(sys.argv) >= 5 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], sys.argv[4:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
