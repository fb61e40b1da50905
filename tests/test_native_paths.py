"""The fast paths: futures completed without a Condition, and the batched
native map.  Each must keep the concurrent.futures contract."""
import concurrent.futures as cf
import threading

import pytest

import fastpool
from fastpool import kernels

from _support import WAIT


@pytest.fixture
def pool():
    p = fastpool.WorkerPool(2)
    yield p
    p.close()


def test_a_thread_blocked_in_result_is_woken(pool):
    gate = threading.Event()
    slow = fastpool.WorkerPool(1, processor=lambda t: gate.wait(WAIT) and t)
    try:
        fut = slow.run("x")
        got = []
        waiter = threading.Thread(target=lambda: got.append(fut.result(WAIT)))
        waiter.start()
        gate.set()
        waiter.join(WAIT)
        assert got == ["x"]
    finally:
        slow.close()


def test_wait_and_as_completed_see_pool_futures(pool):
    futs = [pool.run((i, i)) for i in range(2000)]
    done, not_done = cf.wait(futs, timeout=WAIT)
    assert not not_done
    assert sorted(f.result() for f in cf.as_completed(futs, timeout=WAIT)) == [2 * i for i in range(2000)]


def test_done_callback_added_before_completion_runs_once(pool):
    gate = threading.Event()
    slow = fastpool.WorkerPool(1, processor=lambda t: gate.wait(WAIT) and t)
    try:
        fut = slow.run(7)
        calls = []
        fut.add_done_callback(calls.append)
        gate.set()
        assert fut.result(WAIT) == 7
        assert calls == [fut]
    finally:
        slow.close()


def test_cancelled_pending_future_never_runs():
    gate = threading.Event()
    ran = []
    slow = fastpool.WorkerPool(1, processor=lambda t: (ran.append(t), gate.wait(WAIT)))
    try:
        first = slow.run("first")
        second = slow.submit(ran.append, "second")
        assert second.cancel()
        gate.set()
        first.result(WAIT)
        with pytest.raises(cf.CancelledError):
            second.result(WAIT)
        slow.close()
        assert ran == ["first"]
    finally:
        slow.close()


def test_future_exception_is_the_task_error(pool):
    fut = pool.run({"a": 1})
    assert isinstance(fut.exception(WAIT), KeyError)
    with pytest.raises(KeyError, match="missing key 'b'"):
        fut.result(WAIT)


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 20_000])
def test_native_map_keeps_order_across_batches(pool, n):
    items = [(i, -2 * i) if i % 3 else {"a": i, "b": 0.5} for i in range(n)]
    assert list(pool.map(kernels.add, items)) == [kernels.add(t) for t in items]


def test_native_map_exact_big_ints_and_overflow(pool):
    items = [(2**63 - 1, 1), (-(2**63), -1), (10**30, 1), (True, True)]
    assert list(pool.map(kernels.add, items)) == [a + b for a, b in items]


def test_native_map_raises_at_the_bad_item_then_stops(pool):
    it = pool.map(kernels.add, [(1, 2)] * 5000 + ["bad"] + [(3, 4)] * 5000)
    got = [next(it) for _ in range(5000)]
    assert got == [3] * 5000
    with pytest.raises(TypeError, match="task"):
        next(it)
    assert list(it) == []


def test_native_map_accepts_any_iterable_and_chunksize(pool):
    gen = ((i, i) for i in range(10_000))
    assert list(pool.map(kernels.add, gen, chunksize=100)) == [2 * i for i in range(10_000)]
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(kernels.add, [], chunksize=0)


def test_native_map_after_close_raises(pool):
    pool.close()
    with pytest.raises(fastpool.PoolClosedError):
        pool.map(kernels.add, [(1, 2)])
