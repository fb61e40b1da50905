"""close / terminate / context manager / interpreter exit / respawn (guarantees 1, 5, 8, 10)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fastpool
from _support import WAIT, Recorder, Snapshot, new_shm_entries, shm_entries, threads_named, wait_for


def identity(task):
    return task


# -- close ------------------------------------------------------------------


@pytest.mark.parametrize("processor", [None, identity], ids=["native", "python"])
def test_close_returns_once_every_accepted_task_completed_and_its_callback_returned(pool_factory,
                                                                                   processor):
    pool = pool_factory(processor)
    n = 3000
    returned = []
    lock = threading.Lock()

    def callback(err, result):
        sum(range(200))  # some work between entering the callback and returning
        with lock:
            returned.append((err, result))

    for i in range(n):
        pool.run_task({"a": i, "b": i} if processor is None else i, callback)
    pool.close()
    assert len(returned) == n
    assert [err for err, _ in returned if err is not None] == []
    expected = [2 * i for i in range(n)] if processor is None else list(range(n))
    assert sorted(returned) == [(None, r) for r in expected]


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_stop_leaves_no_threads_fds_or_shared_memory(pool_factory, stop):
    before = Snapshot()
    pool = pool_factory()
    rec = Recorder(500)
    for i in range(500):
        pool.run_task((i, 1), rec.callback)
    assert threads_named("fastpool-worker")
    getattr(pool, stop)()
    assert len(rec) == 500  # every accepted task completed exactly once by the time stop returned
    assert threads_named("fastpool") == []
    assert Snapshot().leaks_since(before) == []


def test_close_twice_and_terminate_after_close_are_no_ops(pool):
    rec = Recorder(10)
    for i in range(10):
        pool.run_task((i, i), rec.callback)
    pool.close()
    pool.close()
    pool.terminate()
    pool.terminate()
    pool.close()
    assert len(rec) == 10


def test_terminate_twice_and_close_after_terminate_are_no_ops(pool):
    pool.terminate()
    pool.terminate()
    pool.close()
    with pytest.raises(fastpool.PoolClosedError):
        pool.run_task((1, 2), lambda err, result: None)


def test_close_emits_exit_for_each_worker(pool_factory, num_threads):
    # Workers start on demand; once num_threads tasks ran at once, all of
    # them exist, and close() reports each one leaving, once.
    barrier = threading.Barrier(num_threads, timeout=10)
    pool = pool_factory(lambda task: barrier.wait() is not None)
    exits, spawns = [], []
    lock = threading.Lock()

    def on_exit(name, exc):
        with lock:
            exits.append((name, exc))

    pool.on("exit", on_exit)
    pool.on("spawn", spawns.append)
    assert all(f.result(WAIT) for f in [pool.run(i) for i in range(num_threads)])
    pool.close()
    assert len(exits) == num_threads
    assert sorted(name for name, _ in exits) == sorted(spawns)
    assert all(isinstance(name, str) and name.startswith("fastpool-worker") for name, _ in exits)
    assert all(exc is None for _, exc in exits)


def test_workers_start_on_demand_up_to_num_threads(make_pool):
    pool = make_pool(4)
    assert pool.run((1, 2)).result(WAIT) == 3
    started = pool.n_spawned
    assert 1 <= started <= 4
    barrier = threading.Barrier(4, timeout=10)
    futs = [pool.submit(barrier.wait) for _ in range(4)]
    assert sorted(f.result(WAIT) for f in futs) == [0, 1, 2, 3]
    assert pool.n_spawned == 4
    for _ in range(100):
        pool.run((1, 1)).result(WAIT)
    assert pool.n_spawned == 4


# -- terminate --------------------------------------------------------------


def test_terminate_fails_the_tasks_that_have_not_started(make_pool, ring_size):
    started, release = threading.Event(), threading.Event()

    def processor(task):
        if task == "block":
            started.set()
            release.wait(WAIT)
        return task

    pool = make_pool(1, processor, ring_size=ring_size)
    rec = Recorder(0)
    pool.run_task("block", rec.keyed("block"))
    wait_for(started, "the blocking task to start")
    for i in range(20):
        pool.run_task(i, rec.keyed(i))

    calls_when_terminate_returned = []
    entered = threading.Event()

    def terminate():
        entered.set()
        pool.terminate()
        calls_when_terminate_returned.append(len(rec))

    stopper = threading.Thread(target=terminate)
    stopper.start()
    extra = 0
    try:
        wait_for(entered, "terminate() to be called")
        # The running task cannot be interrupted. Release it only once terminate
        # has visibly taken effect (run_task refuses new work); tasks accepted
        # meanwhile have not started either.
        deadline = time.monotonic() + WAIT
        while True:
            try:
                pool.run_task(f"extra{extra}", rec.keyed(f"extra{extra}"))
            except fastpool.PoolClosedError:
                break
            extra += 1
            assert time.monotonic() < deadline, "run_task still accepts work after terminate()"
    finally:
        release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive(), "terminate() did not return"
    total = 1 + 20 + extra
    assert calls_when_terminate_returned == [total]
    calls = rec.by_key
    assert len(calls["block"]) == 1
    not_started = [i for i in range(20)] + [f"extra{k}" for k in range(extra)]
    for key in not_started:
        [(err, result)] = calls[key]
        assert isinstance(err, fastpool.PoolClosedError), (key, err)
        assert result is None
    assert threads_named("fastpool") == []


def test_terminate_with_many_tasks_in_flight_completes_each_exactly_once(make_pool, ring_size):
    pool = make_pool(1, ring_size=ring_size)
    n = 20_000
    rec = Recorder(0)
    for i in range(n):
        pool.run_task((i, i), rec.keyed(i))
    pool.terminate()
    assert len(rec) == n
    for i, outcome in rec.by_key.items():
        [(err, result)] = outcome
        assert (err, result) == (None, 2 * i) or (
            isinstance(err, fastpool.PoolClosedError) and result is None
        ), (i, err, result)
    assert threads_named("fastpool") == []


# -- stopping from inside a callback ----------------------------------------


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_stop_from_inside_a_callback_does_not_deadlock(pool_factory, stop):
    pool = pool_factory()
    n = 50
    rec = Recorder(n)
    lock = threading.Lock()
    closer = []
    refused = []
    stop_returned = threading.Event()
    all_submitted = threading.Event()

    def make_callback(i):
        def callback(err, result):
            rec.keyed(i)(err, result)
            with lock:
                first = not closer
                closer.append(i)
            if first:
                wait_for(all_submitted, "the test to submit every task")
                getattr(pool, stop)()
                try:
                    pool.run_task((0, 0), lambda err, result: None)
                except fastpool.PoolClosedError:
                    refused.append(i)
                stop_returned.set()

        return callback

    for i in range(n):
        pool.run_task((i, i), make_callback(i))
    all_submitted.set()
    wait_for(stop_returned, f"{stop}() called inside a callback to return")
    pool.close()
    assert len(refused) == 1
    calls = rec.by_key
    assert sorted(calls) == list(range(n))
    for i, outcome in calls.items():
        [(err, result)] = outcome
        if stop == "close":
            assert (err, result) == (None, 2 * i)
        else:
            assert (err, result) == (None, 2 * i) or isinstance(err, fastpool.PoolClosedError)
    assert threads_named("fastpool") == []


# -- context manager ----------------------------------------------------------


def test_context_manager_closes_on_exit(leak_check):
    rec = Recorder(500)
    with fastpool.WorkerPool(2, ring_size=2) as pool:
        assert isinstance(pool, fastpool.WorkerPool)
        for i in range(500):
            pool.run_task((i, i), rec.keyed(i))
    assert rec.by_key == {i: [(None, 2 * i)] for i in range(500)}
    assert threads_named("fastpool") == []
    with pytest.raises(fastpool.PoolClosedError):
        pool.run_task((1, 2), lambda err, result: None)


def test_context_manager_closes_when_the_body_raises(leak_check):
    rec = Recorder(100)
    with pytest.raises(ZeroDivisionError):
        with fastpool.WorkerPool(2, ring_size=2) as pool:
            for i in range(100):
                pool.run_task((i, i), rec.callback)
            1 / 0
    assert len(rec) == 100
    assert threads_named("fastpool") == []


# -- respawn ------------------------------------------------------------------


class Fatal(BaseException):
    """A BaseException that is not an Exception."""


@pytest.mark.parametrize("make_fatal", [lambda: SystemExit(3), lambda: Fatal("fatal")],
                         ids=["SystemExit", "BaseException"])
def test_worker_lost_to_a_base_exception_is_replaced(pool_factory, num_threads, make_fatal):
    fatal = make_fatal()
    barrier = threading.Barrier(num_threads, timeout=10)

    def processor(task):
        if task == "die":
            raise fatal
        if task == "barrier":
            return barrier.wait() is not None
        return task

    pool = pool_factory(processor)
    # Workers start on demand: have all of them running before listening.
    assert all(f.result(WAIT) for f in [pool.run("barrier") for _ in range(num_threads)])
    events = []
    lock = threading.Lock()
    exited, spawned = threading.Event(), threading.Event()

    def on_exit(name, exc):
        with lock:
            events.append(("exit", name, exc))
        exited.set()

    def on_spawn(name):
        with lock:
            events.append(("spawn", name, None))
        spawned.set()

    errors = []
    pool.on("exit", on_exit)
    pool.on("spawn", on_spawn)
    pool.on("error", errors.append)

    rec = Recorder(1)
    pool.run_task("die", rec.callback)
    [(err, result)] = rec.wait()
    assert isinstance(err, fastpool.WorkerExitedError)
    assert err.__cause__ is fatal
    assert result is None

    wait_for(exited, "the exit event")
    wait_for(spawned, "the spawn event")
    with lock:
        seen = list(events)
    assert [kind for kind, _, _ in seen] == ["exit", "spawn"]
    _, exit_name, exit_exc = seen[0]
    assert isinstance(exit_name, str) and exit_name.startswith("fastpool-worker")
    assert exit_exc is not None
    assert exit_exc is fatal or exit_exc.__cause__ is fatal
    assert isinstance(seen[1][1], str) and seen[1][1].startswith("fastpool-worker")

    # The pool is back to num_threads workers: num_threads tasks meet at a barrier.
    rec = Recorder(num_threads)
    for _ in range(num_threads):
        pool.run_task("barrier", rec.callback)
    assert rec.wait() == [(None, True)] * num_threads
    assert pool.num_threads == num_threads
    assert pool.run("still works").result(timeout=WAIT) == "still works"
    pool.close()
    assert errors == []


def test_repeated_worker_loss_keeps_the_pool_whole(make_pool):
    deaths = 20
    spawns = []
    all_spawned = threading.Event()
    lock = threading.Lock()

    def processor(task):
        if task == "die":
            raise SystemExit(1)
        return task

    def on_spawn(name):
        with lock:
            spawns.append(name)
            if len(spawns) >= deaths + 1:    # the replacements and a first worker
                all_spawned.set()

    pool = make_pool(2, processor, ring_size=2)
    pool.on("spawn", on_spawn)
    rec = Recorder(deaths * 11)
    for d in range(deaths):
        pool.run_task("die", rec.keyed(("die", d)))
        for i in range(10):
            pool.run_task((d, i), rec.keyed((d, i)))
    rec.wait()
    wait_for(all_spawned, f"{deaths} spawn events")
    calls = rec.by_key
    for d in range(deaths):
        [(err, result)] = calls[("die", d)]
        assert isinstance(err, fastpool.WorkerExitedError)
        assert isinstance(err.__cause__, SystemExit)
        for i in range(10):
            assert calls[(d, i)] == [(None, (d, i))]
    barrier = threading.Barrier(2, timeout=10)
    futs = [pool.submit(barrier.wait) for _ in range(2)]
    assert sorted(f.result(timeout=WAIT) for f in futs) == [0, 1]
    pool.close()
    assert len(spawns) == deaths + 2        # the replacements and both first workers
    assert threads_named("fastpool") == []


# -- interpreter exit ---------------------------------------------------------

N_AT_EXIT = 2000

EXIT_SCRIPTS = {
    "native-callbacks": """
        pool = fastpool.WorkerPool(2, ring_size=2)
        for i in range(N):
            pool.run_task((i, i), lambda err, result: done.append(err))
    """,
    "python-processor": """
        pool = fastpool.WorkerPool(2, processor=abs, ring_size=2)
        for i in range(N):
            pool.run_task(-i, lambda err, result: done.append(err))
    """,
    "futures": """
        pool = fastpool.WorkerPool(2, ring_size=2)
        futs = [pool.run((i, i)) for i in range(N)]
        report = lambda: print(sum(f.done() for f in futs), flush=True)
    """,
    "executor": """
        ex = fastpool.ThreadPoolExecutor(2)
        futs = [ex.submit(pow, i, 2) for i in range(N)]
        report = lambda: print(sum(f.done() for f in futs), flush=True)
    """,
    "results-due-after-exit-starts": """
        # No result has arrived when exit starts and the ring holds every
        # task, so no dispatcher thread runs yet; from Python 3.12 on no
        # thread can start any more.
        import time
        pool = fastpool.WorkerPool(2, processor=time.sleep)
        for i in range(N):
            pool.run_task(0.2 if i < 2 else 0, lambda err, result: done.append(err))
    """,
    "two-pools-sys-exit": """
        pools = [fastpool.WorkerPool(n, ring_size=2) for n in (1, 4)]
        for i in range(N // 2):
            for p in pools:
                p.run_task((i, i), lambda err, result: done.append(err))
        sys.exit(0)
    """,
}

PRELUDE = """
import atexit, sys
done = []
report = lambda: print(len(done), flush=True)
atexit.register(lambda: report())  # registered before fastpool is imported, so it runs last
import fastpool
N = {n}
"""


@pytest.mark.parametrize("scenario", sorted(EXIT_SCRIPTS))
def test_interpreter_exit_without_close_runs_everything_and_leaves_nothing(scenario):
    script = PRELUDE.format(n=N_AT_EXIT) + textwrap.dedent(EXIT_SCRIPTS[scenario])
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastpool.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    before = shm_entries()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=WAIT, env=env)
    assert proc.stderr == ""
    assert proc.returncode == 0
    assert proc.stdout.strip() == str(N_AT_EXIT), proc.stdout
    assert new_shm_entries(before) == set()
