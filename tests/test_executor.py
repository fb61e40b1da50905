"""fastpool.ThreadPoolExecutor is a drop-in for concurrent.futures.ThreadPoolExecutor.

Every test also runs on the stdlib class ("reference"), which checks the test
itself: a behaviour the stdlib does not have is not a drop-in requirement.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import re
import contextlib
import operator
import subprocess
import sys
import threading
from concurrent.futures.thread import BrokenThreadPool

import pytest

import fastpool
from _support import WAIT, first_task_running, wait_for

INITIALIZER_FAILED = "A thread initializer failed, the thread pool is not usable anymore"
AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"


@pytest.fixture(params=["reference", "fastpool"])
def executor_cls(request):
    return cf.ThreadPoolExecutor if request.param == "reference" else fastpool.ThreadPoolExecutor


@contextlib.contextmanager
def _shut_down_after(cls):
    """A maker of `cls` instances, each shut down (waiting) at the end."""
    executors = []

    def make(*args, **kwargs):
        ex = cls(*args, **kwargs)
        executors.append(ex)
        return ex

    try:
        yield make
    finally:
        for ex in executors:
            ex.shutdown(wait=True)


@pytest.fixture
def make_executor(executor_cls, leak_check):
    with _shut_down_after(executor_cls) as make:
        yield make


@pytest.fixture(params=["reference", "fastpool", "WorkerPool"])
def make_any_executor(request, leak_check):
    """The Executor contract alone, on every executor fastpool offers."""
    cls = {"reference": cf.ThreadPoolExecutor, "fastpool": fastpool.ThreadPoolExecutor,
           "WorkerPool": fastpool.WorkerPool}[request.param]
    with _shut_down_after(cls) as make:
        yield make


def test_is_an_executor_returning_futures(make_executor):
    ex = make_executor(2)
    assert isinstance(ex, cf.Executor)
    fut = ex.submit(pow, 2, 5)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=WAIT) == 32


def test_submit_passes_args_and_kwargs(make_executor):
    ex = make_executor(2)
    assert ex.submit(int, "ff", base=16).result(timeout=WAIT) == 255
    assert ex.submit(dict, fn=1, self=2).result(timeout=WAIT) == {"fn": 1, "self": 2}


def test_exception_goes_to_the_future(make_executor):
    boom = ValueError("boom")

    def fail():
        raise boom

    ex = make_executor(2)
    assert ex.submit(fail).exception(timeout=WAIT) is boom


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda pid: ())(0)) < 2,
                    reason="needs CPU affinity and two usable CPUs")
def test_default_max_workers_is_the_stdlib_one_under_cpu_affinity():
    # From Python 3.13 on, the stdlib counts only the CPUs the process may
    # run on (os.process_cpu_count()), not all of them.  A fresh process, so
    # the affinity does not outlive the test.
    code = ("import os, concurrent.futures as cf, fastpool\n"
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "for ex in (cf.ThreadPoolExecutor(), fastpool.ThreadPoolExecutor()):\n"
            "    print(ex._max_workers)\n"
            "    ex.shutdown()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    reference, ours = proc.stdout.split()
    assert ours == reference


@pytest.mark.parametrize("max_workers", [0, -1])
def test_bad_max_workers_raises_like_the_stdlib(executor_cls, max_workers):
    with pytest.raises(ValueError, match="^max_workers must be greater than 0$"):
        executor_cls(max_workers)


def test_non_callable_initializer_raises_like_the_stdlib(executor_cls):
    with pytest.raises(TypeError, match="^initializer must be a callable$"):
        executor_cls(2, initializer=42)


def test_initializer_runs_with_initargs_in_each_worker_thread(make_executor):
    local = threading.local()
    initialized = []

    def init(*args):
        local.args = args
        initialized.append(threading.current_thread().name)

    ex = make_executor(2, initializer=init, initargs=(1, "x"))
    barrier = threading.Barrier(2, timeout=10)

    def task():
        barrier.wait()
        return threading.current_thread().name, local.args

    results = [f.result(timeout=WAIT) for f in [ex.submit(task) for _ in range(2)]]
    names = {name for name, _ in results}
    assert len(names) == 2
    assert all(args == (1, "x") for _, args in results)
    assert names <= set(initialized)


def test_initializer_failure_breaks_the_pool(make_executor):
    def init():
        raise ValueError("initializer failed")

    ex = make_executor(2, initializer=init)
    fut = ex.submit(pow, 2, 2)
    with pytest.raises(BrokenThreadPool) as excinfo:
        fut.result(timeout=WAIT)
    assert str(excinfo.value) == INITIALIZER_FAILED
    with pytest.raises(BrokenThreadPool) as excinfo:
        ex.submit(pow, 2, 2)
    assert str(excinfo.value) == INITIALIZER_FAILED
    for fn in (operator.add, fastpool.kernels.add):
        args = [(1, 2)] if fn is fastpool.kernels.add else ([1], [2])
        with pytest.raises(BrokenThreadPool):
            ex.map(fn, *args)
        assert list(ex.map(fn, *([] if fn is fastpool.kernels.add else ([], [])))) == []


def test_thread_name_prefix_names_the_worker_threads(make_executor):
    ex = make_executor(2, thread_name_prefix="fp-test")

    def whoami():
        me = threading.current_thread()
        return me.name, me in threading.enumerate()

    name, visible = ex.submit(whoami).result(timeout=WAIT)
    assert re.fullmatch(r"fp-test_\d+", name), name
    assert visible


def test_default_thread_names_are_like_the_stdlib(make_executor):
    ex = make_executor(2)
    name = ex.submit(lambda: threading.current_thread().name).result(timeout=WAIT)
    assert re.fullmatch(r"ThreadPoolExecutor-\d+_\d+", name), name


def test_submit_after_shutdown_raises_the_stdlib_error(make_executor):
    ex = make_executor(2)
    ex.shutdown()
    with pytest.raises(RuntimeError) as excinfo:
        ex.submit(pow, 2, 2)
    assert str(excinfo.value) == AFTER_SHUTDOWN


def test_map_after_shutdown_raises_the_stdlib_error_unless_empty(make_executor):
    ex = make_executor(2)
    ex.shutdown()
    for fn in (operator.add, fastpool.kernels.add):
        args = [(1, 2)] if fn is fastpool.kernels.add else ([1], [2])
        with pytest.raises(RuntimeError) as excinfo:
            ex.map(fn, *args)
        assert str(excinfo.value) == AFTER_SHUTDOWN
    assert list(ex.map(fastpool.kernels.add, [])) == []


def test_shutdown_twice_is_fine(make_executor):
    ex = make_executor(2)
    ex.submit(pow, 2, 2).result(timeout=WAIT)
    ex.shutdown()
    ex.shutdown()


def test_shutdown_wait_true_waits_for_pending_tasks(make_executor):
    ex = make_executor(2)
    futs = [ex.submit(sum, range(50_000)) for _ in range(40)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert {f.result() for f in futs} == {sum(range(50_000))}


def test_shutdown_wait_false_returns_before_running_tasks_finish(make_any_executor):
    ex = make_any_executor(2)
    started, release = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(10)
        return "done"

    fut = ex.submit(block)
    try:
        wait_for(started, "the task to start")
        ex.shutdown(wait=False)
        assert not fut.done()
    finally:
        release.set()
    assert fut.result(timeout=WAIT) == "done"
    ex.shutdown(wait=True)


def test_shutdown_cancel_futures_cancels_queued_work(make_executor):
    ex = make_executor(1)
    ran = []
    with first_task_running(ex) as first:
        rest = [ex.submit(ran.append, i) for i in range(10)]
        ex.shutdown(wait=False, cancel_futures=True)
    assert first.result(timeout=WAIT) == "first"
    ex.shutdown(wait=True)
    assert all(f.cancelled() for f in rest)
    assert ran == []


def test_cancel_a_queued_future(make_executor):
    ex = make_executor(1)
    ran = []
    with first_task_running(ex) as first:
        queued = ex.submit(ran.append, "queued")
        assert queued.cancel()
        assert not first.cancel()
    first.result(timeout=WAIT)
    ex.shutdown(wait=True)
    assert queued.cancelled()
    assert ran == []


def test_map_is_ordered_and_raises_the_item_exception(make_executor):
    ex = make_executor(2)

    def f(x):
        if x == 7:
            raise ValueError(x)
        return x * x

    it = ex.map(f, range(10))
    assert [next(it) for _ in range(7)] == [x * x for x in range(7)]
    with pytest.raises(ValueError):
        next(it)
    assert list(ex.map(pow, range(5), [2] * 5, chunksize=2)) == [0, 1, 4, 9, 16]


def test_map_timeout_raises_timeout_error(make_any_executor):
    ex = make_any_executor(2)
    release = threading.Event()

    def blocked(x):
        release.wait(WAIT)
        return x

    try:
        it = ex.map(blocked, [1, 2], timeout=0.2)
        # cf.TimeoutError: the builtin TimeoutError only from Python 3.11 on.
        with pytest.raises(cf.TimeoutError):
            list(it)
    finally:
        release.set()


def test_map_with_the_native_add_kernel_on_a_fresh_executor(make_any_executor):
    ex = make_any_executor(2)
    pairs = [(i, i + 1) for i in range(10_000)]
    assert list(ex.map(fastpool.kernels.add, pairs, timeout=WAIT)) == [2 * i + 1 for i in range(10_000)]


def test_context_manager_shuts_down_on_exit(executor_cls, leak_check):
    with executor_cls(2) as ex:
        futs = [ex.submit(sum, range(10_000)) for _ in range(20)]
    assert all(f.done() for f in futs)
    with pytest.raises(RuntimeError, match=AFTER_SHUTDOWN):
        ex.submit(pow, 2, 2)


def test_wait_and_as_completed_accept_its_futures(make_executor):
    ex = make_executor(2)
    futs = [ex.submit(pow, i, 2) for i in range(20)]
    done, not_done = cf.wait(futs, timeout=WAIT)
    assert not not_done
    assert sorted(f.result() for f in cf.as_completed(futs, timeout=WAIT)) == [i * i for i in range(20)]


# -- threads: started on demand, reused, visible as `_threads` ----------------


def _blocked_tasks(ex, n):
    """Submit n tasks that all wait until released; returns (started events, release)."""
    release = threading.Event()
    started = [threading.Event() for _ in range(n)]

    def block(ev):
        ev.set()
        release.wait(WAIT)
        return threading.current_thread()

    futs = [ex.submit(block, ev) for ev in started]
    return futs, started, release


def test_a_thread_starts_per_task_while_none_is_idle(make_executor):
    ex = make_executor(5)
    futs, started, release = _blocked_tasks(ex, 3)
    try:
        assert len(ex._threads) == 3
        for ev in started:
            wait_for(ev, "each task to start on its own thread")
    finally:
        release.set()
    ran_on = {f.result(timeout=WAIT) for f in futs}
    assert ran_on == ex._threads
    assert all(isinstance(t, threading.Thread) for t in ex._threads)


def test_threads_stop_at_max_workers(make_executor):
    ex = make_executor(4)
    futs, _, release = _blocked_tasks(ex, 12)
    try:
        assert len(ex._threads) == 4
    finally:
        release.set()
    assert len({f.result(timeout=WAIT) for f in futs}) == 4


def test_an_idle_thread_is_reused(make_executor):
    ex = make_executor()
    for _ in range(3):
        assert ex.submit(pow, 2, 3).result(timeout=WAIT) == 8
    assert len(ex._threads) == 1


def test_threads_are_joined_by_shutdown(make_executor):
    ex = make_executor(3, thread_name_prefix="joined")
    futs, _, release = _blocked_tasks(ex, 3)
    release.set()
    ran_on = {f.result(timeout=WAIT) for f in futs}
    ex.shutdown(wait=True)
    assert ran_on == ex._threads
    assert sorted(t.name for t in ex._threads) == ["joined_0", "joined_1", "joined_2"]
    assert not any(t.is_alive() for t in ex._threads)


def test_default_max_workers_is_the_stdlib_default(make_executor):
    # The stdlib counts the CPUs the process may use from Python 3.13 on.
    cpus = getattr(os, "process_cpu_count", os.cpu_count)()
    assert make_executor()._max_workers == min(32, (cpus or 1) + 4)


def test_float_max_workers_is_kept_and_rounds_up_like_the_stdlib(make_executor):
    ex = make_executor(2.5)
    assert ex._max_workers == 2.5
    barrier = threading.Barrier(3, timeout=WAIT)
    futs = [ex.submit(barrier.wait) for _ in range(3)]     # all three run at once
    assert sorted(f.result(timeout=WAIT) for f in futs) == [0, 1, 2]
    futs, _, release = _blocked_tasks(ex, 5)
    release.set()
    assert len({f.result(timeout=WAIT) for f in futs}) <= 3
    assert len(ex._threads) == 3


@pytest.mark.parametrize("bad", ["2", [2]])
def test_max_workers_of_the_wrong_type_raises_type_error_like_the_stdlib(executor_cls, bad):
    with pytest.raises(TypeError):
        executor_cls(bad)


def test_infinite_max_workers_raises_a_clear_error():
    with pytest.raises(ValueError, match="^max_workers must be a finite number, got inf$"):
        fastpool.ThreadPoolExecutor(float("inf"))


def test_max_workers_beyond_the_native_bound_raises_a_clear_error():
    from fastpool.pool import MAX_WORKERS
    fastpool.ThreadPoolExecutor(MAX_WORKERS).shutdown()
    for too_many in (MAX_WORKERS + 1, 10**9):
        with pytest.raises(ValueError, match=f"^max_workers must be <= {MAX_WORKERS}, got {too_many}$"):
            fastpool.ThreadPoolExecutor(too_many)


def test_initializer_failure_is_logged_on_the_concurrent_futures_logger(make_executor, caplog):
    def init():
        raise ValueError("no init")

    ex = make_executor(2, initializer=init)
    with pytest.raises(BrokenThreadPool):
        ex.submit(pow, 2, 2).result(timeout=WAIT)
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert records, caplog.records
    assert records[0].levelname == "CRITICAL"
    assert records[0].getMessage() == "Exception in initializer:"
    assert isinstance(records[0].exc_info[1], ValueError)


# -- dropping the executor -------------------------------------------------


def _join_threads_started_since(before, what):
    for t in set(threading.enumerate()) - before:
        t.join(WAIT)
        assert not t.is_alive(), f"{t.name} still running after {what}"


def test_dropping_the_executor_finishes_its_work_then_stops_its_threads(executor_cls, leak_check):
    import gc
    before = set(threading.enumerate())
    ex = executor_cls(2)
    release = threading.Event()

    def slow(x):
        release.wait(WAIT)
        return x * 2

    futs = [ex.submit(slow, i) for i in range(6)]
    threads = ex._threads
    del ex
    gc.collect()
    release.set()
    assert [f.result(timeout=WAIT) for f in futs] == [0, 2, 4, 6, 8, 10]
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    _join_threads_started_since(before, "the executor was dropped")


def test_an_unused_executor_dropped_leaves_nothing_behind(executor_cls, leak_check):
    import gc
    before = set(threading.enumerate())
    ex = executor_cls(2)
    del ex
    gc.collect()
    _join_threads_started_since(before, "the executor was dropped")


def test_shutdown_without_wait_stops_the_threads_once_done(executor_cls, leak_check):
    before = set(threading.enumerate())
    ex = executor_cls(2)
    assert ex.submit(pow, 2, 2).result(timeout=WAIT) == 4     # completed by the waiting thread
    ex.shutdown(wait=False)
    _join_threads_started_since(before, "shutdown(wait=False)")
