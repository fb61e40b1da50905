"""Run CPython's thread- or process-pool tests from test_concurrent_futures; write what passed.

    python _cpython_suite_runner.py LIB_DIR {thread,process} {stdlib,fastpool} OUT_JSONL [ONLY ...]

LIB_DIR holds a `test` package (test.support and test_concurrent_futures)
fetched by test_cpython_suite.py.  With "fastpool", concurrent.futures'
ThreadPoolExecutor ("thread") or ProcessPoolExecutor ("process") is fastpool's
before the test module is imported, so the suite's mixins, the tests that name
`futures.ThreadPoolExecutor` or `futures.ProcessPoolExecutor` directly and the
child interpreters some tests start (through test.support.script_helper) all
use it.  Only the test classes built on ThreadPoolMixin ("thread") or on the
ProcessPool{Fork,Forkserver,Spawn}Mixin ("process") run; each ONLY, a class
name or a start method (fork, forkserver, spawn), narrows that to its classes.

The process tests start workers with fork, forkserver and spawn, and a worker
imports test_concurrent_futures to find the functions it is sent: for
"process", LIB_DIR (and fastpool's package root) go on PYTHONPATH too, so a
worker started by any means finds them.

Each outcome is appended to OUT_JSONL as it happens ({"id", "outcome",
"detail", "seconds"}), so a run that hangs still reports what it got through:
a test that runs longer than TEST_SECONDS dumps every thread's stack to stderr
and ends the run, and the last "started" line names it.
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import unittest

TEST_SECONDS = 60    # the slowest of these tests takes about 6 s on the stdlib
EXECUTORS = {"thread": "ThreadPoolExecutor", "process": "ProcessPoolExecutor"}


def _paths(lib_dir: str, mode: str) -> list[str]:
    """Where a child finds the test package (and, for "fastpool", fastpool)."""
    paths = [lib_dir]
    if mode == "fastpool":
        import fastpool

        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(fastpool.__file__))))
    return paths


def _preamble(lib_dir: str, kind: str, mode: str) -> str:
    """First line of every `python -c` child: the same test package, the same executor."""
    paths = _paths(lib_dir, mode)
    line = f"import sys; sys.path[:0] = {paths!r}"
    if mode == "fastpool":
        name = EXECUTORS[kind]
        line += f"; import concurrent.futures, fastpool; concurrent.futures.{name} = fastpool.{name}"
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
        seconds = round(time.monotonic() - self._started, 3)
        self.out.write(json.dumps({"id": test.id(), "outcome": outcome, "detail": detail,
                                   "seconds": seconds}) + "\n")
        self.out.flush()

    def startTest(self, test):
        faulthandler.dump_traceback_later(TEST_SECONDS, exit=True, file=sys.__stderr__)
        self._streams = sys.stdout, sys.stderr
        self._started = time.monotonic()
        self._write(test, "started")
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.out.flush()
        # As regrtest does: a test that replaced sys.stderr does not take
        # it from the tests after it.  Some replace it from a thread that
        # unpickles a result (_raise_error_ignore_stderr), and a pool that
        # completes fast can do so before the test has saved the original.
        sys.stdout, sys.stderr = self._streams
        # Armed again, not cancelled: a hang between two tests (a class's
        # teardown, a finalizer) dumps every stack too.
        faulthandler.dump_traceback_later(TEST_SECONDS, exit=True, file=sys.__stderr__)

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


def _mixins(tcf, kind: str) -> dict[str, type]:
    """The suite's executor mixins for this kind, by start method."""
    if kind == "thread":
        return {"thread": tcf.ThreadPoolMixin}
    return {"fork": tcf.ProcessPoolForkMixin, "forkserver": tcf.ProcessPoolForkserverMixin,
            "spawn": tcf.ProcessPoolSpawnMixin}


def main() -> int:
    faulthandler.enable()     # a fatal signal in this process prints its stacks
    lib_dir, kind, mode, out_path, *only = sys.argv[1:]
    if kind not in EXECUTORS:
        raise SystemExit(f"unknown kind {kind!r}")
    name = EXECUTORS[kind]
    sys.path.insert(0, lib_dir)
    if mode == "fastpool":
        import concurrent.futures

        import fastpool

        if not hasattr(fastpool, name):
            raise SystemExit(f"fastpool has no {name}")
        setattr(concurrent.futures, name, getattr(fastpool, name))
    elif mode != "stdlib":
        raise SystemExit(f"unknown mode {mode!r}")
    if kind == "process":
        os.environ["PYTHONPATH"] = os.pathsep.join(
            _paths(lib_dir, mode) + list(filter(None, [os.environ.get("PYTHONPATH")])))
    _patch_children(_preamble(lib_dir, kind, mode))

    from test import test_concurrent_futures as tcf

    mixins = _mixins(tcf, kind)
    if mode == "fastpool":
        assert all(m.executor_type is getattr(sys.modules["fastpool"], name) for m in mixins.values())

    def selected(cls: type) -> bool:
        return not only or any(cls.__name__ == o or (o in mixins and issubclass(cls, mixins[o]))
                               for o in only)

    loader = unittest.TestLoader()
    classes = sorted(
        (obj for obj in vars(tcf).values()
         if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
         and issubclass(obj, tuple(mixins.values())) and selected(obj)),
        key=lambda cls: cls.__name__)
    if not classes:
        raise SystemExit(f"no {kind} test classes match {only}")
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for cls in classes)
    with open(out_path, "w") as out:
        _Recorder.out = out
        try:
            unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_Recorder).run(suite)
        except BaseException:
            import traceback

            traceback.print_exc(file=sys.__stderr__)    # sys.stderr may be a test's by now
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
