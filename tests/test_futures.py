"""WorkerPool.run / submit / map / shutdown: the Future and Executor side of the pool."""
from __future__ import annotations

import concurrent.futures as cf
import operator
import threading

import pytest

import fastpool
from _support import WAIT, first_task_running, wait_for


def test_run_returns_a_pool_future_with_the_sum(pool):
    fut = pool.run({"a": 1, "b": 2})
    assert isinstance(fut, fastpool.PoolFuture)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=WAIT) == 3


def test_many_run_futures_each_get_their_result(pool):
    futs = [pool.run((i, 2 * i)) for i in range(2000)]
    assert [f.result(timeout=WAIT) for f in futs] == [3 * i for i in range(2000)]


def test_run_bad_task_sets_the_future_exception(pool):
    fut = pool.run("not a task")
    exc = fut.exception(timeout=WAIT)
    assert isinstance(exc, TypeError)
    assert "task" in str(exc)
    assert pool.run((1, 2)).result(timeout=WAIT) == 3


def test_run_processor_exception_is_the_same_object(pool_factory):
    boom = KeyError("boom")

    def processor(task):
        raise boom

    pool = pool_factory(processor)
    assert pool.run(1).exception(timeout=WAIT) is boom


def test_run_future_done_callbacks_are_called(pool):
    seen = []
    called = threading.Event()

    def done(fut):
        seen.append(fut.result())
        called.set()

    fut = pool.run((2, 3))
    fut.add_done_callback(done)
    wait_for(called, "the done callback")
    assert seen == [5]


@pytest.mark.parametrize("wait_too", [False, True])
def test_done_callbacks_racing_completions_each_run_once(make_pool, kind, wait_too):
    # Callbacks added while the dispatcher completes the same futures: each
    # runs exactly once, in the order added, on a done future; whether the
    # future finished before or after it was added.  With wait_too, a
    # waiter also gives some futures their Condition in the middle.
    pool = make_pool(2, abs, workers=kind)
    n = 3000
    calls = [[] for _ in range(n)]
    all_called = threading.Event()
    remaining = [2 * n]
    lock = threading.Lock()

    def callback(i, which):
        def done(fut):
            assert fut.done()
            calls[i].append((which, fut.result()))
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    all_called.set()
        return done

    futs = []
    for i in range(n):
        fut = pool.run(-i)
        fut.add_done_callback(callback(i, 0))
        if wait_too and i % 7 == 0 and futs:
            futs[i // 2].result(timeout=WAIT)
        fut.add_done_callback(callback(i, 1))
        futs.append(fut)
    wait_for(all_called, "every done callback")
    assert calls == [[(0, i), (1, i)] for i in range(n)]


def test_run_after_close_raises_pool_closed_error(pool):
    pool.close()
    with pytest.raises(fastpool.PoolClosedError):
        pool.run((1, 2))


def test_submit_passes_args_and_kwargs(pool):
    assert pool.submit(pow, 2, 10).result(timeout=WAIT) == 1024
    assert pool.submit(int, "ff", base=16).result(timeout=WAIT) == 255
    # fn is positional-only: "fn" and "self" are ordinary keyword arguments
    assert pool.submit(dict, fn=1, self=2).result(timeout=WAIT) == {"fn": 1, "self": 2}


def test_submit_returns_a_concurrent_future(pool):
    assert isinstance(pool.submit(pow, 2, 2), cf.Future)


def test_submit_runs_python_functions_in_a_worker_thread(pool):
    name = pool.submit(lambda: threading.current_thread().name).result(timeout=WAIT)
    assert name.startswith("fastpool-worker")


def test_submit_native_kernel(pool):
    add = fastpool.kernels.add
    assert pool.submit(add, {"a": 1, "b": 2}).result(timeout=WAIT) == 3
    assert pool.submit(add, (2**70, 1)).result(timeout=WAIT) == 2**70 + 1
    exc = pool.submit(add, "bad").exception(timeout=WAIT)
    assert isinstance(exc, TypeError)
    assert "task" in str(exc)


def test_submit_exception_is_the_same_object(pool):
    boom = ValueError("boom")

    def fail():
        raise boom

    assert pool.submit(fail).exception(timeout=WAIT) is boom


def test_submit_after_shutdown_raises_runtime_error(pool):
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(pow, 2, 2)
    with pytest.raises(fastpool.PoolClosedError):
        pool.run_task((1, 2), lambda err, result: None)


def test_map_native_kernel_is_ordered(pool):
    tasks = [(i, 2 * i) for i in range(1000)]
    assert list(pool.map(fastpool.kernels.add, tasks)) == [3 * i for i in range(1000)]


def test_map_several_iterables_stops_at_the_shortest(pool):
    assert list(pool.map(operator.add, range(100), range(100, 300))) == [
        i + 100 + i for i in range(100)
    ]
    assert list(pool.map(pow, [2, 3, 4], [2, 2])) == [4, 9]


def test_map_chunksize_does_not_change_results(pool):
    tasks = [{"a": i, "b": i} for i in range(103)]
    expected = [2 * i for i in range(103)]
    for chunksize in (1, 7, 1000):
        assert list(pool.map(fastpool.kernels.add, tasks, chunksize=chunksize)) == expected
        assert list(pool.map(add_pair, tasks, chunksize=chunksize)) == expected


def add_pair(task):
    return task["a"] + task["b"]


def test_map_raises_the_item_exception_when_iteration_reaches_it(pool):
    def f(x):
        if x == 5:
            raise ValueError(x)
        return x

    it = pool.map(f, range(10))
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        next(it)


def test_map_bad_native_task_raises_when_reached(pool):
    it = pool.map(fastpool.kernels.add, [(1, 2), "bad", (3, 4)])
    assert next(it) == 3
    with pytest.raises(TypeError, match="task"):
        next(it)


def test_future_cancel_while_queued(make_pool, ring_size):
    pool = make_pool(1, ring_size=ring_size)
    ran = []
    with first_task_running(pool) as first:
        queued = pool.submit(ran.append, "queued")
        assert queued.cancel()
    assert first.result(timeout=WAIT) == "first"
    pool.shutdown(wait=True)
    assert queued.cancelled()
    assert ran == []


def test_shutdown_wait_true_waits_for_every_submitted_task(pool):
    futs = [pool.submit(sum, range(20_000)) for _ in range(50)]
    futs += [pool.run((i, i)) for i in range(500)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs[50:]] == [2 * i for i in range(500)]


def test_shutdown_cancel_futures_cancels_what_has_not_started(make_pool, ring_size):
    pool = make_pool(1, ring_size=ring_size)
    with first_task_running(pool) as first:
        rest = [pool.submit(pow, i, 2) for i in range(10)]
        pool.shutdown(wait=False, cancel_futures=True)
        assert not first.cancelled()
    assert first.result(timeout=WAIT) == "first"
    pool.shutdown(wait=True)
    assert all(f.cancelled() for f in rest)
