"""Per-task timeouts (run_task/run `timeout=`, the pool's default), on both
worker kinds: counted from the start, the task completes once with
TaskTimeoutError at its deadline, a worker process is replaced, a worker
thread's late result never reaches the callback; bad timeouts are refused
at the call."""
from __future__ import annotations

import concurrent.futures as cf
import math
import random
import threading
import time
from fractions import Fraction

import pytest

import fastpool
from fastpool import TaskTimeoutError, WorkerPool
from _support import WAIT, Recorder, held
from _tasks import echo, gated, napping, pid_of, wait_at_gate


@pytest.fixture
def pool_of(make_pool, kind, gate):
    def make(processor=gated, num_threads=1, **kwargs):
        return make_pool(num_threads, processor, workers=kind, **kwargs)

    yield make
    gate.open()         # thread workers cannot be stopped from outside



def test_task_timeout_error_is_a_timeout_error():
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(TaskTimeoutError, cf.TimeoutError)


def test_a_timeout_counts_from_the_start(pool_of, gate):
    pool = pool_of()
    first = pool.run(held(gate, "first"))
    gate.arrived()
    got = Recorder(1)
    handle = pool.run_task(held(gate, "timed"), got.callback, timeout=0.2)
    fut = pool.run(held(gate, "timed too"), timeout=0.2)
    # Waiting behind `first` for longer than their timeout costs them nothing.
    with pytest.raises(cf.TimeoutError):
        fut.exception(timeout=0.5)
    assert len(got) == 0 and repr(handle) == "<fastpool.TaskHandle pending>"
    released = time.monotonic()
    gate.release_one()
    assert first.result(timeout=WAIT) == "first"
    gate.arrived()
    [(err, result)] = got.wait()
    assert time.monotonic() - released >= 0.2       # it started after `first` ended
    assert isinstance(err, TaskTimeoutError) and result is None
    assert str(err) == "the task ran longer than its timeout (0.2 s)"
    gate.release_one()      # (a worker thread still runs it: let it end)
    gate.arrived()          # then the next one started, and times out the same way
    assert isinstance(fut.exception(timeout=WAIT), TaskTimeoutError)
    assert handle.cancel() is False            # it has completed
    s = pool.stats()
    assert (s["timed_out"], s["failed"], s["cancelled"]) == (2, 0, 0)


def test_a_timed_out_process_worker_is_replaced(make_pool, gate):
    pool = make_pool(1, wait_at_gate, workers="process")
    events = []
    pool.on("exit", lambda name, exc: events.append(exc))
    errors = []
    pool.on("error", errors.append)
    before = pool.submit(pid_of, None).result(timeout=WAIT)
    fut = pool.run(gate.name, timeout=0.1)
    gate.arrived()
    assert isinstance(fut.exception(timeout=WAIT), TaskTimeoutError)
    after = pool.submit(pid_of, None).result(timeout=WAIT)
    assert after != before
    pool.close()
    assert errors == [] and events == [None, None]
    s = pool.stats()
    assert (s["timed_out"], s["respawns"], s["failed"]) == (1, 1, 0)


def test_a_thread_workers_late_result_never_reaches_the_callback(make_pool):
    started, go = threading.Event(), threading.Event()
    seen = []

    def task(x):
        started.set()
        go.wait(WAIT)
        seen.append(fastpool.cancelled())
        return "late"

    pool = make_pool(1, task)
    got = Recorder(1)
    pool.run_task(1, got.callback, timeout=0.1)
    assert started.wait(WAIT)
    [(err, result)] = got.wait()
    assert isinstance(err, TaskTimeoutError) and result is None
    go.set()
    assert pool.run(2).result(timeout=WAIT) == "late"       # the worker is free again
    pool.close()
    assert len(got) == 1 and seen == [True, False]


def test_the_pool_default_and_a_task_that_opts_out(pool_of, gate):
    pool = pool_of(timeout=0.1)
    fut = pool.run(held(gate, "a"))
    gate.arrived()
    assert isinstance(fut.exception(timeout=WAIT), TaskTimeoutError)
    gate.release_one()      # (a worker thread still runs it: let it end)
    got = Recorder(1)
    pool.run_task(held(gate, "b"), got.callback)
    gate.arrived()
    assert isinstance(got.wait()[0][0], TaskTimeoutError)
    gate.release_one()
    fut = pool.submit(wait_at_gate, gate.name)
    gate.arrived()
    assert isinstance(fut.exception(timeout=WAIT), TaskTimeoutError)
    gate.release_one()
    # A task's own timeout wins; math.inf is none.
    untimed = pool.run(held(gate, "c"), timeout=math.inf)
    gate.arrived()
    with pytest.raises(cf.TimeoutError):
        untimed.result(timeout=0.4)     # well past the pool's 0.1 s, still running
    gate.release_one()
    assert untimed.result(timeout=WAIT) == "c"
    assert pool.stats()["timed_out"] == 3


def test_a_deadline_after_an_old_one_passed_unused_is_kept(pool_of, gate):
    # The first task ends in time; its deadline passes while the worker runs
    # an untimed task; the next task's deadline, later than that one, is
    # kept all the same (the dispatcher slept without a limit in between).
    pool = pool_of(wait_at_gate)
    first = pool.run(gate.name, timeout=0.3)
    gate.arrived()
    gate.release_one()
    assert isinstance(first.result(timeout=WAIT), int)      # well within 0.3 s
    untimed = pool.run(gate.name)
    gate.arrived()
    with pytest.raises(cf.TimeoutError):
        untimed.result(timeout=0.5)         # meanwhile the first deadline passes
    gate.release_one()
    assert isinstance(untimed.result(timeout=WAIT), int)
    second = pool.run(gate.name, timeout=0.3)
    gate.arrived()
    assert isinstance(second.exception(timeout=WAIT), TaskTimeoutError)


def test_a_task_that_ends_in_time_keeps_its_result(pool_of):
    pool = pool_of(echo, num_threads=2, timeout=30)
    got = Recorder(200)
    for i in range(200):
        pool.run_task(i, got.keyed(i), timeout=30)
    futs = [pool.run(i) for i in range(200)]
    natives = [pool.submit(fastpool.kernels.add, (i, 1)) for i in range(200)]
    assert [f.result(timeout=WAIT) for f in futs] == list(range(200))
    assert [f.result(timeout=WAIT) for f in natives] == [i + 1 for i in range(200)]
    got.wait()
    pool.close()
    assert got.by_key == {i: [(None, i)] for i in range(200)}
    assert pool.stats()["timed_out"] == 0


def test_exactly_once_with_deadlines_near_the_run_time(make_pool, kind):
    # Tasks that run about as long as their timeout (and one in ten far
    # longer): each completes exactly once, with its result or with
    # TaskTimeoutError, and nothing comes after a timeout.  (On processes
    # each timeout costs a worker: fewer tasks.)
    n = 600 if kind == "thread" else 40
    pool = make_pool(2, napping, workers=kind, ring_size=16)
    rng = random.Random(3)
    got = Recorder(n // 2)        # the odd ones have callbacks
    futs = {}
    for i in range(n):
        timeout = rng.uniform(0.0005, 0.0015)
        run = 0.05 if i % 10 == 3 else rng.uniform(0, 0.002)
        if i % 2:
            pool.run_task((run, i), got.keyed(i), timeout=timeout)
        else:
            futs[i] = pool.run((run, i), timeout=timeout)
    outcomes = {}
    for i, fut in futs.items():
        err = fut.exception(timeout=WAIT)
        outcomes[i] = err if err is not None else fut.result()
    got.wait()
    pool.close()
    by_key = got.by_key
    assert sorted(by_key) == [i for i in range(n) if i % 2]
    for i, calls in by_key.items():
        [(err, result)] = calls
        outcomes[i] = err if err is not None else result
    timed_out = [i for i, o in outcomes.items() if isinstance(o, TaskTimeoutError)]
    assert all(outcomes[i] == i for i in outcomes if i not in timed_out)
    assert {i for i in outcomes if i % 10 == 3} <= set(timed_out)
    s = pool.stats()
    assert (s["timed_out"], s["completed"], s["failed"]) == (len(timed_out), n - len(timed_out), 0)


def test_a_callback_waiting_on_a_task_that_times_out(pool_of, gate):
    # The wait runs on the thread that keeps the deadlines: it fires them itself.
    pool = pool_of(num_threads=2)
    got = []
    done = threading.Event()

    def callback(err, result):
        try:
            pool.run(held(gate, "inner"), timeout=0.1).result(timeout=WAIT)
        except Exception as e:
            got.append(e)
        done.set()

    pool.run_task(held(gate, "outer"), callback, timeout=0.05)
    assert done.wait(WAIT)
    assert len(got) == 1 and isinstance(got[0], TaskTimeoutError)


# -- bad timeouts -------------------------------------------------------------------

BAD = [
    (-1, ValueError, "timeout must be a positive number of seconds or None, got -1"),
    (-0.5, ValueError, "timeout must be a positive number of seconds or None, got -0.5"),
    (0, ValueError, "timeout must be a positive number of seconds or None, got 0"),
    (math.nan, ValueError, "timeout must be a positive number of seconds or None, got nan"),
    (-math.inf, ValueError, "timeout must be a positive number of seconds or None, got -inf"),
    ("inf", TypeError, "timeout must be a number of seconds or None, not str"),
    (True, TypeError, "timeout must be a number of seconds or None, not bool"),
    ([1], TypeError, "timeout must be a number of seconds or None, not list"),
]


@pytest.mark.parametrize("value, error, message", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_timeouts_are_refused_at_the_call(make_pool, value, error, message):
    pool = make_pool(1)
    got = Recorder(0)
    with pytest.raises(error) as info:
        pool.run_task((1, 2), got.callback, timeout=value)
    assert str(info.value) == message
    with pytest.raises(error, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        pool.run((1, 2), timeout=value)
    with pytest.raises(error) as info:
        WorkerPool(1, timeout=value)
    assert str(info.value) == message
    assert pool.stats()["submitted"] == 0           # nothing was accepted
    assert pool.run((1, 2), timeout=Fraction(1, 2)).result(timeout=WAIT) == 3
    assert pool.run((1, 2), timeout=None).result(timeout=WAIT) == 3
