#!/usr/bin/env python3
"""Run a unittest suite verbosely and record each test's outcome; compare two such records.

    unittest_report.py run RESULTS START_DIR TOP_DIR
        discovers and runs the tests under START_DIR (top-level directory TOP_DIR) with
        verbose output, and writes one line per test to RESULTS: "<outcome>\t<test id>",
        outcome one of pass fail error skip xfail xpass. Lines are written as tests finish,
        so a run that crashes or hangs still leaves the outcomes it reached.

    unittest_report.py compare NAME KERNEL IPCSHIM DIVERGENCES
        prints one line per test with its outcome against the kernel and under ipcshim, and
        fails if a test that passed against the kernel did not pass under ipcshim, unless
        DIVERGENCES names it with exactly that outcome (and fails if a listed divergence no
        longer happens, so the list stays true). Ends with "NAME: N passed, N failed,
        N skipped", counting the compared tests (passed: same result as the kernel; skipped:
        tests that did not pass against the kernel, which prove nothing about ipcshim).
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


def compare(name, kernel_path, ipcshim_path, divergences_path):
    kernel = read_results(kernel_path)
    ipcshim = read_results(ipcshim_path)
    divergences = read_divergences(divergences_path)
    passed = failed = skipped = 0
    width = max((len(t) for t in kernel.keys() | ipcshim.keys()), default=0)
    print(f"{'test':<{width}}  {'kernel':<7} {'ipcshim':<7} verdict")
    for test in sorted(kernel.keys() | ipcshim.keys() | divergences.keys()):
        k = kernel.get(test, "missing")
        s = ipcshim.get(test, "missing")
        if test in divergences and test not in kernel:
            verdict = "FAILED: listed as a divergence, but no such test ran"
            failed += 1
        elif k != "pass":
            verdict = "not compared (did not pass against the kernel)"
            skipped += 1
        elif test in divergences:
            if s == divergences[test]:
                verdict = f"known divergence ({s}, listed in {divergences_path})"
                passed += 1
            else:
                verdict = f"FAILED: listed as a divergence with outcome {divergences[test]}"
                failed += 1
        elif s == "pass":
            verdict = "same"
            passed += 1
        else:
            verdict = "FAILED: passes against the kernel, not under ipcshim"
            failed += 1
        print(f"{test:<{width}}  {k:<7} {s:<7} {verdict}")
    if not any(o == "pass" for o in kernel.values()):
        print(f"{name}: no test passed against the kernel: nothing was compared")
        failed += 1
    print(f"{name}: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        sys.exit(run(*sys.argv[2:]))
    if len(sys.argv) == 6 and sys.argv[1] == "compare":
        sys.exit(compare(*sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
