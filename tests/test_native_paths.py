"""The fast paths: futures completed without a Condition, and the batched
native map.  Each must keep the concurrent.futures contract."""
import concurrent.futures as cf
import threading
import weakref
from array import array

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


# ------------------------------------------------- map(kernels.add, ...)
#
# The native map reads the input at the call (as Executor.map does), returns
# results in order, and computes an item that is not a plain pair of ints
# and floats (big ints, subclasses, arrays, bad tasks) only when iteration
# reaches it, exactly as kernels.add(item) would.

ADDED: list[int] = []


class LoudInt(int):
    """An int whose additions are recorded in ADDED: shows when an item is computed."""

    def __add__(self, other):
        ADDED.append(int(self))
        return int(self) + other


class Task(dict):
    """A mapping task that can be weakly referenced."""


def mixed_items(n):
    """Plain int and float pairs with every other kind of task mixed in."""
    kinds = [
        lambda i: (i, -2 * i),
        lambda i: (i * 0.5, i),
        lambda i: (True, i),
        lambda i: {"a": i, "b": 0.25},
        lambda i: (2**63 - 1, i + 1),        # the sum leaves int64
        lambda i: (-(2**70) - i, 1),          # an operand beyond int64
        lambda i: Task(a=i, b=i),
    ]
    return [kinds[(i * 7 + i // 3) % len(kinds)](i) for i in range(n)]


@pytest.fixture(params=[1, 2, 8], ids=lambda n: f"cpus{n}")
def cpus(request, monkeypatch):
    """As many CPUs as the native map may use (it takes one fewer helpers)."""
    monkeypatch.setattr(fastpool.pool, "_usable_cpus", lambda: request.param)
    return request.param


@pytest.mark.parametrize("n", [0, 1, 2047, 2048, 2049, 70_000, 140_001])
def test_native_map_of_mixed_items_is_kernel_add_in_order(pool_factory, cpus, n):
    pool = pool_factory()
    items = mixed_items(n)
    assert list(pool.map(kernels.add, items)) == [kernels.add(t) for t in items]


def test_native_map_int_float_mixes_follow_python(pool):
    inf, nan = float("inf"), float("nan")
    items = [(2**53 + 1, 0.0), (-(2**63), 0.5), (2**63 - 1, -1.0), (2**63, 1.0), (True, 0.5),
             (1.5, 2), (inf, -5), (nan, 1), (-0.0, 0), (0, -0.0), (10**400, 1), (-1, 1)] * 500
    got = list(pool.map(kernels.add, items))
    want = [a + b for a, b in items]
    assert [(type(g), repr(g)) for g in got] == [(type(w), repr(w)) for w in want]


def test_native_map_reads_the_input_at_the_call(pool):
    items = [(i, i) for i in range(50_000)] + [(10**30, 1)]
    it = pool.map(kernels.add, items)
    items[:] = [(-1, -1)] * 10
    assert list(it) == [2 * i for i in range(50_000)] + [10**30 + 1]


def test_native_map_takes_any_iterable(pool):
    n = 30_000
    want = [2 * i + 1 for i in range(n)]
    assert list(pool.map(kernels.add, tuple((i, i + 1) for i in range(n)))) == want
    assert list(pool.map(kernels.add, ((i, i + 1) for i in range(n)))) == want
    assert list(pool.map(kernels.add, iter([(i, i + 1) for i in range(n)]))) == want
    assert list(pool.map(kernels.add, [])) == []
    assert list(pool.map(kernels.add, iter(()))) == []


def test_native_map_raises_the_input_error_at_the_call(pool):
    def broken():
        yield (1, 2)
        raise LookupError("no more tasks")

    with pytest.raises(LookupError, match="no more tasks"):
        pool.map(kernels.add, broken())


def test_native_map_computes_an_item_only_when_reached(pool):
    ADDED.clear()
    it = pool.map(kernels.add, [(1, 2)] * 10_000 + [(LoudInt(5), 1)] + [(3, 4)] * 10_000)
    assert [next(it) for _ in range(10_000)] == [3] * 10_000
    assert ADDED == []
    assert next(it) == 6
    assert ADDED == [5]
    assert list(it) == [7] * 10_000


def test_native_map_raises_at_a_bad_item_far_into_the_input(pool):
    it = pool.map(kernels.add, [(1, 2)] * 100_000 + [(1, "x")] + [(3, 4)] * 100_000)
    assert sum(1 for _, _ in zip(range(100_000), it)) == 100_000
    with pytest.raises(TypeError, match="'b' must be an int, a float or a numeric buffer"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_native_map_closed_early_lets_go_of_everything(pool):
    items = [(i, i) if i % 1000 else (array("d", [i]), array("d", [1.0])) for i in range(100_000)]
    held = weakref.ref(items[-1000][0])
    it = pool.map(kernels.add, items)
    assert next(it) == array("d", [1.0])
    del items
    assert held() is not None           # still to be computed
    it.close()
    assert held() is None
    assert list(it) == []
    task = Task(a=1, b=2)
    held = weakref.ref(task)
    it = pool.map(kernels.add, [task] * 10)
    del task
    assert held() is not None
    del it
    assert held() is None


def test_native_map_results_outlive_an_expired_timeout(pool):
    # Every result is computed before map returns: like a done future's
    # result, it is never a TimeoutError, however late it is asked for.
    it = pool.map(kernels.add, [(i, 1) for i in range(100_000)], timeout=0)
    assert list(it) == list(range(1, 100_001))


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_native_map_does_not_wait_for_busy_workers(make_pool, cpus, stop):
    pool = make_pool(2)
    started = [threading.Event(), threading.Event()]
    release = threading.Event()

    def block(i):
        started[i].set()
        return release.wait(WAIT)

    blockers = [pool.submit(block, i) for i in range(2)]
    for e in started:
        assert e.wait(WAIT)
    try:
        items = [(i, 1) for i in range(200_000)]
        assert list(pool.map(kernels.add, items, timeout=WAIT)) == list(range(1, 200_001))
        del items
    finally:
        release.set()
    assert [f.result(WAIT) for f in blockers] == [True, True]
    getattr(pool, stop)()


def test_native_map_from_inside_a_task(pool_factory, cpus):
    pool = pool_factory()
    items = [(i, i) for i in range(100_000)]
    fut = pool.submit(lambda: list(pool.map(kernels.add, items)))
    assert fut.result(WAIT) == [2 * i for i in range(100_000)]
