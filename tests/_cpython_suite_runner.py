"""Run CPython's thread-pool tests from test_concurrent_futures; write what passed.

    python _cpython_suite_runner.py LIB_DIR {stdlib,fastpool} OUT_JSONL

LIB_DIR holds a `test` package (test.support and test_concurrent_futures)
fetched by test_cpython_suite.py.  With "fastpool", concurrent.futures'
ThreadPoolExecutor is fastpool's before the test module is imported, so its
ThreadPoolMixin, the tests that name `futures.ThreadPoolExecutor` directly and
the child interpreters some tests start (through test.support.script_helper)
all use it.  Only the test classes built on ThreadPoolMixin run.

Each outcome is appended to OUT_JSONL as it happens ({"id", "outcome",
"detail"}), so a run that hangs still reports what it got through: a test
that runs longer than TEST_SECONDS dumps every thread's stack to stderr and
ends the run, and the last "started" line names it.
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import unittest

TEST_SECONDS = 60    # the slowest of these tests takes about 6 s on the stdlib


def _preamble(lib_dir: str, mode: str) -> str:
    """First line of every `python -c` child: the same test package, the same executor."""
    paths = [lib_dir]
    line = f"import sys; sys.path[:0] = {paths!r}"
    if mode == "fastpool":
        import fastpool

        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(fastpool.__file__))))
        line = (f"import sys; sys.path[:0] = {paths!r}; import concurrent.futures, fastpool; "
                "concurrent.futures.ThreadPoolExecutor = fastpool.ThreadPoolExecutor")
    return line + "\n"


def _patch_children(preamble: str) -> None:
    from test.support import script_helper

    run = script_helper.run_python_until_end

    def run_with_preamble(*args, **env_vars):
        args = list(args)
        if "-c" in args:
            i = args.index("-c") + 1
            args[i] = preamble + args[i]
        return run(*args, **env_vars)

    script_helper.run_python_until_end = run_with_preamble


class _Recorder(unittest.TextTestResult):
    out = None   # the OUT_JSONL file, set by main()

    def _write(self, test, outcome, detail=None):
        self.out.write(json.dumps({"id": test.id(), "outcome": outcome, "detail": detail}) + "\n")
        self.out.flush()

    def startTest(self, test):
        faulthandler.dump_traceback_later(TEST_SECONDS, exit=True)
        self._write(test, "started")
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._write(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._write(test, "failed", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._write(test, "failed", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._write(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._write(test, "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._write(test, "unexpected success")


def main() -> int:
    lib_dir, mode, out_path = sys.argv[1:4]
    sys.path.insert(0, lib_dir)
    if mode == "fastpool":
        import concurrent.futures

        import fastpool

        concurrent.futures.ThreadPoolExecutor = fastpool.ThreadPoolExecutor
    elif mode != "stdlib":
        raise SystemExit(f"unknown mode {mode!r}")
    _patch_children(_preamble(lib_dir, mode))

    from test import test_concurrent_futures as tcf

    if mode == "fastpool":
        assert tcf.ThreadPoolMixin.executor_type is sys.modules["fastpool"].ThreadPoolExecutor
    loader = unittest.TestLoader()
    classes = sorted(
        (obj for obj in vars(tcf).values()
         if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
         and issubclass(obj, tcf.ThreadPoolMixin)),
        key=lambda cls: cls.__name__)
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for cls in classes)
    with open(out_path, "w") as out:
        _Recorder.out = out
        unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_Recorder).run(suite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
