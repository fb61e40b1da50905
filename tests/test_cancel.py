"""Cancel: TaskHandle.cancel() (run_task), a WorkerPool.run future's
cancel(), on both worker kinds: a task that has not started never runs, a
running one is stopped (a worker process replaced, a worker thread's task
asked through fastpool.cancelled()), every task completes exactly once.
The drop-in executors keep concurrent.futures' rule."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import ctypes
import random
import shutil
import subprocess
import sysconfig
import threading
import time

import pytest

import fastpool
from fastpool import TaskHandle, WorkerPool, kernels
from _support import WAIT, Recorder, held
from _tasks import echo, gated, pid_of, wait_at_gate

var = contextvars.ContextVar("var", default="unset")


@pytest.fixture
def pool_of(make_pool, kind, gate):
    def make(processor=gated, num_threads=1, **kwargs):
        return make_pool(num_threads, processor, workers=kind, **kwargs)

    yield make
    gate.open()         # thread workers cannot be stopped from outside



# -- before it starts ---------------------------------------------------------------

@pytest.mark.parametrize("ring_size", [2, 1024], ids=["fifo", "ring"])
def test_a_task_cancelled_before_it_starts_never_runs(pool_of, gate, ring_size):
    # One worker, held at the gate: everything after it waits, in the ring
    # or (ring_size=2) in the FIFO.  A cancelled gated task that ran would
    # block the worker at the gate, and the last task could not complete.
    pool = pool_of(ring_size=ring_size)
    first = pool.run(held(gate, "first"))
    gate.arrived()
    got = Recorder(3)
    handles = [pool.run_task(held(gate, f"h{i}"), got.keyed(i)) for i in range(3)]
    futs = [pool.run(held(gate, f"f{i}")) for i in range(3)]
    last = pool.submit(echo, "last")
    assert all(type(h) is TaskHandle for h in handles)
    assert [h.cancel() for h in handles] == [True] * 3
    assert [f.cancel() for f in futs] == [True] * 3
    assert all(f.cancelled() for f in futs)
    assert [h.cancel() for h in handles] == [True] * 3          # again: still cancelled
    calls = got.wait()
    assert all(isinstance(err, cf.CancelledError) and result is None for err, result in calls)
    assert sorted(got.by_key) == [0, 1, 2]
    gate.release_one()
    assert first.result(timeout=WAIT) == "first"
    assert last.result(timeout=WAIT) == "last"
    assert gate.nobody_waiting()
    pool.close()
    assert len(got) == 3
    for f in futs:
        with pytest.raises(cf.CancelledError):
            f.result(timeout=0)
    s = pool.stats()
    assert (s["submitted"], s["completed"], s["cancelled"], s["failed"]) == (8, 2, 6, 0)


def test_a_cancelled_callback_runs_once_in_the_submitters_context(pool_of, gate):
    pool = pool_of()
    first = pool.run(held(gate, "first"))
    gate.arrived()
    seen = []
    done = threading.Event()

    def callback(err, result):
        seen.append((var.get(), type(err), result, threading.current_thread().name))
        done.set()

    token = var.set("submitter")
    try:
        handle = pool.run_task(held(gate, "x"), callback)
    finally:
        var.reset(token)
    assert handle.cancel()
    assert done.wait(WAIT)
    gate.open()
    first.result(timeout=WAIT)
    pool.close()
    assert len(seen) == 1
    ctx_value, err_type, result, thread = seen[0]
    assert (ctx_value, err_type, result) == ("submitter", cf.CancelledError, None)
    assert thread != threading.current_thread().name      # never inside cancel()


def test_cancel_after_completion_returns_false(pool_of, gate):
    pool = pool_of(echo)
    got = Recorder(1)
    handle = pool.run_task("done", got.callback)
    assert got.wait() == [(None, "done")]
    fut = pool.run("done too")
    assert fut.result(timeout=WAIT) == "done too"
    assert handle.cancel() is False
    assert fut.cancel() is False
    assert repr(handle) == "<fastpool.TaskHandle done>"
    pool.close()
    assert len(got) == 1 and not fut.cancelled()
    assert pool.stats()["cancelled"] == 0


def test_a_handle_says_what_its_task_is_doing(pool_of, gate):
    pool = pool_of(ring_size=2)
    running = pool.run_task(held(gate, "r"), lambda err, result: None)
    gate.arrived()
    in_ring = pool.run_task(held(gate, "p"), lambda err, result: None)
    in_fifo = pool.run_task(held(gate, "q"), lambda err, result: None)
    assert (repr(running), repr(in_ring), repr(in_fifo)) == (
        "<fastpool.TaskHandle running>", "<fastpool.TaskHandle pending>",
        "<fastpool.TaskHandle queued>")
    assert in_fifo.cancel()
    assert repr(in_fifo) == "<fastpool.TaskHandle cancelled>"
    with pytest.raises(TypeError, match="run_task returns one"):
        TaskHandle()


def test_cancelling_a_waiting_task_makes_room_in_a_bounded_queue(pool_of, gate):
    pool = pool_of(max_queue=1)
    first = pool.run(held(gate, "first"))
    gate.arrived()
    queued = pool.run(held(gate, "queued"))
    with pytest.raises(fastpool.QueueFullError):
        pool.run(held(gate, "refused"))
    assert pool.wait_for_room(timeout=0) is False
    assert queued.cancel()
    assert pool.wait_for_room(timeout=WAIT) is True
    after = pool.submit(echo, "after")
    gate.open()
    assert (first.result(timeout=WAIT), after.result(timeout=WAIT)) == ("first", "after")


def test_a_thread_blocked_on_the_future_sees_its_cancel(pool_of, gate):
    pool = pool_of()
    first = pool.run(held(gate, "first"))
    gate.arrived()
    fut = pool.run(held(gate, "waited on"))
    outcome = []
    waiting = threading.Event()

    def wait():
        waiting.set()
        try:
            fut.result(timeout=WAIT)
        except Exception as e:
            outcome.append(e)

    t = threading.Thread(target=wait)
    t.start()
    assert waiting.wait(WAIT)
    assert fut.cancel()
    t.join(WAIT)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], cf.CancelledError)
    done, not_done = cf.wait([fut], timeout=WAIT)
    assert done == {fut} and not not_done
    gate.open()
    assert first.result(timeout=WAIT) == "first"


def test_a_callback_may_cancel_another_task(pool_of, gate):
    pool = pool_of()
    first = pool.run(held(gate, "first"))
    gate.arrived()
    order = []
    done = threading.Event()
    victim = pool.run_task(held(gate, "victim"), lambda err, result: (order.append(("victim", type(err))),
                                                                       done.set()))

    def canceller(err, result):
        order.append(("canceller", victim.cancel()))

    pool.run_task(held(gate, "x"), canceller).cancel()      # its callback cancels the victim
    assert done.wait(WAIT)
    gate.open()
    first.result(timeout=WAIT)
    pool.close()
    # The victim's callback runs once the canceller's has returned.
    assert order == [("canceller", True), ("victim", cf.CancelledError)]


def test_cancelling_a_coroutine_that_awaits_the_task_cancels_it(pool_of, gate):
    pool = pool_of()
    first = pool.run(held(gate, "first"))
    gate.arrived()

    async def main():
        async def waiter():
            return await pool.run(held(gate, "awaited"))

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)          # one turn of the loop: it awaits the pool's future now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    last = pool.submit(echo, "last")
    gate.release_one()
    assert (first.result(timeout=WAIT), last.result(timeout=WAIT)) == ("first", "last")
    assert gate.nobody_waiting()        # the awaited task never ran
    assert pool.stats()["cancelled"] == 1


# -- while it runs ------------------------------------------------------------------

def test_cancelling_a_running_task_replaces_its_worker_process(make_pool, gate):
    pool = make_pool(1, wait_at_gate, workers="process")
    events = []
    pool.on("exit", lambda name, exc: events.append(("exit", exc)))
    pool.on("spawn", lambda name: events.append(("spawn", name)))
    errors = []
    pool.on("error", errors.append)
    before = pool.submit(pid_of, None).result(timeout=WAIT)
    got = Recorder(1)
    handle = pool.run_task(gate.name, got.callback)
    gate.arrived()
    assert repr(handle) == "<fastpool.TaskHandle running>"
    assert handle.cancel()
    [(err, result)] = got.wait()
    assert isinstance(err, cf.CancelledError) and result is None
    fut = pool.run(gate.name)
    gate.arrived()
    assert fut.cancel() and fut.cancelled()
    after = pool.submit(pid_of, None).result(timeout=WAIT)     # the pool goes on
    assert after != before
    pool.close()
    assert len(got) == 1
    assert errors == []
    # Each stopped worker left quietly and was replaced; the last left at close.
    assert [what for what, _ in events] == ["exit", "spawn", "exit", "spawn", "exit"]
    assert [exc for what, exc in events if what == "exit"] == [None, None, None]
    s = pool.stats()
    assert (s["cancelled"], s["respawns"], s["failed"]) == (2, 2, 0)


def test_cancelling_a_running_thread_task_asks_it_to_stop(make_pool):
    started, go = threading.Event(), threading.Event()
    seen = []

    def task(x):
        seen.append(("before", fastpool.cancelled()))
        started.set()
        go.wait(WAIT)
        seen.append(("after", fastpool.cancelled()))
        return "dropped"

    pool = make_pool(1, task)
    got = Recorder(1)
    handle = pool.run_task(1, got.callback)
    assert started.wait(WAIT)
    assert handle.cancel()
    [(err, result)] = got.wait()          # at once: it does not wait for the task
    assert isinstance(err, cf.CancelledError) and result is None
    callback_saw = []
    pool.run_task(2, lambda err, result: callback_saw.append(fastpool.cancelled()))
    go.set()
    pool.close()
    assert seen == [("before", False), ("after", True), ("before", False), ("after", False)]
    assert len(got) == 1                  # what it returned was dropped
    assert callback_saw == [False] and fastpool.cancelled() is False


def test_a_running_future_of_a_thread_pool_is_cancelled_too(make_pool):
    started, go = threading.Event(), threading.Event()
    pool = make_pool(1, lambda x: (started.set(), go.wait(WAIT), x)[2])
    fut = pool.run("x")
    assert started.wait(WAIT)
    assert fut.cancel() and fut.cancelled()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)
    go.set()
    assert pool.run("next").result(timeout=WAIT) == "next"


# A C function of one element that counts its calls; the first one waits
# until the test has cancelled the task (release()), so that the cancel
# lands while the array task runs.
C_SOURCE = r"""
#include <stdint.h>
#include <time.h>

static int64_t calls;
static int go;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

double count_hold(double a, double b) {
    if (__atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) == 1) {
        double deadline = now() + 30.0;
        struct timespec pause = {0, 100000};
        while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST) && now() < deadline)
            nanosleep(&pause, NULL);
    }
    return a + b;
}

int64_t calls_made(void) { return __atomic_load_n(&calls, __ATOMIC_SEQ_CST); }
void release(void) { __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST); }
void reset(void) { calls = 0; go = 0; }
"""


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    """(the library, its count_hold as an f8(f8,f8) kernel)."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    d = tmp_path_factory.mktemp("countlib")
    src, lib = d / "fp_count.c", d / "libfp_count.so"
    src.write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=120)
    clib = ctypes.CDLL(str(lib))
    clib.calls_made.restype = ctypes.c_int64
    return clib, kernels.cfunc((str(lib), "count_hold"), "f8(f8,f8)")


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_a_native_array_task_stops_between_chunks(make_pool, counting, how):
    np = pytest.importorskip("numpy")
    clib, kernel = counting
    clib.reset()
    n = 1_000_000
    a = np.ones(n)
    out = np.full(n, -1.0)
    pool = make_pool(1, kernel)
    got = Recorder(1)
    handle = pool.run_task({"a": a, "b": a, "out": out}, got.callback,
                           timeout=0.05 if how == "timeout" else None)
    deadline = time.monotonic() + WAIT
    while clib.calls_made() == 0:       # (the first element waits in the C function)
        assert time.monotonic() < deadline, "the array task did not start"
    if how == "cancel":
        assert handle.cancel()
    [(err, result)] = got.wait()        # a timeout fires while the first element waits
    clib.release()
    assert isinstance(err, cf.CancelledError if how == "cancel" else fastpool.TaskTimeoutError)
    assert result is None
    assert pool.submit(kernels.add, (1, 2)).result(timeout=WAIT) == 3    # the worker is free
    pool.close()
    # It stopped: most elements were never computed.
    calls = clib.calls_made()
    assert calls < n // 10
    assert int((out == -1.0).sum()) == n - calls
    assert len(got) == 1


# -- exactly once -------------------------------------------------------------------

def test_exactly_once_with_random_cancels_racing_completions(make_pool, kind):
    # Thousands of tasks (hundreds on processes, where a cancel that lands
    # on a running task costs a worker), cancelled at random while they
    # wait, and from callbacks while the next ones start, run and complete:
    # each completes exactly once, with CancelledError exactly when a
    # cancel() of it returned True.
    n = 3000 if kind == "thread" else 600
    pool = make_pool(2, echo, workers=kind, ring_size=64)
    rng = random.Random(8)
    lock = threading.Lock()
    answers = {i: [] for i in range(n)}         # what each cancel() of task i returned
    tasks = [None] * n

    def cancel(i):
        won = tasks[i].cancel()
        with lock:
            answers[i].append(won)

    got = Recorder(n // 2)          # the odd ones have callbacks
    def callback_of(i):
        record = got.keyed(i)

        def callback(err, result):
            record(err, result)
            if i + 2 < n and tasks[i + 2] is not None and rng.random() < 0.1:
                cancel(i + 2)           # most likely starting or running now
        return callback

    for i in range(n):
        tasks[i] = pool.run_task(i, callback_of(i)) if i % 2 else pool.run(i)
        if rng.random() < 0.2:
            cancel(rng.randrange(i + 1))
    _, not_done = cf.wait(tasks[0::2], timeout=WAIT)
    assert not not_done
    got.wait()
    pool.close()
    won = {i: any(a) for i, a in answers.items()}
    for i in range(0, n, 2):
        assert tasks[i].cancelled() == won[i], i
        if not won[i]:
            assert tasks[i].result() == i
    by_key = got.by_key
    assert sorted(by_key) == list(range(1, n, 2))
    for i, calls in by_key.items():
        [(err, result)] = calls
        if won[i]:
            assert isinstance(err, cf.CancelledError) and result is None, i
        else:
            assert (err, result) == (None, i)
    s = pool.stats()
    assert s["cancelled"] == sum(won.values()) > 0
    assert s["completed"] == n - s["cancelled"]
    assert s["failed"] == s["timed_out"] == 0


def test_terminate_and_close_with_cancelled_tasks_pending(pool_of, gate, kind):
    pool = pool_of(ring_size=2)
    first = pool.run(held(gate, "first"))
    gate.arrived()
    got = Recorder(6)
    handles = [pool.run_task(held(gate, i), got.keyed(i)) for i in range(6)]
    for h in handles[::2]:
        assert h.cancel()
    gate.open()
    if kind == "process":
        pool.terminate()
    else:
        pool.close()
    calls = got.wait()
    assert len(calls) == 6 and sorted(got.by_key) == list(range(6))
    for i, [(err, result)] in got.by_key.items():
        if i % 2 == 0:
            assert isinstance(err, cf.CancelledError)
        elif kind == "process":
            assert isinstance(err, fastpool.PoolClosedError) or result == i
        else:
            assert (err, result) == (None, i)
    assert first.done()


# -- the drop-in executors and submit keep concurrent.futures' rule ------------------------

@pytest.mark.parametrize("executor", ["ThreadPoolExecutor", "ProcessPoolExecutor", "WorkerPool.submit"])
def test_a_running_future_of_the_executors_cannot_be_cancelled(executor, gate):
    if executor == "WorkerPool.submit":
        ex = WorkerPool(1)
    else:
        ex = getattr(fastpool, executor)(max_workers=1)
    try:
        running = ex.submit(wait_at_gate, gate.name)
        gate.arrived()
        waiting = ex.submit(echo, "waiting")
        assert running.cancel() is False and not running.cancelled()
        if executor != "ProcessPoolExecutor":
            # (a process pool's futures are running once in its ring, as the
            # stdlib's once in its call queue)
            assert waiting.cancel() is True and waiting.cancelled()
        gate.open()
        assert isinstance(running.result(timeout=WAIT), int)
        ex.shutdown(wait=True)
        assert ex.stats()["cancelled"] == (0 if executor == "ProcessPoolExecutor" else 1)
    finally:
        gate.open()
        ex.shutdown(wait=True)
