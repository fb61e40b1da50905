"""Array tasks for the add kernel: numpy arrays and array.array, with or without "out".

numpy is optional: the numpy tests skip without it, the array.array ones do not.
"""
from __future__ import annotations

import sys
import threading
import time
from array import array

import pytest

import fastpool
from _support import WAIT, Recorder, wait_for

SIZES = [0, 1, 1_000_003]


def numpy():
    return pytest.importorskip("numpy")


# -- numpy --------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_numpy_add_on_every_configuration(pool, dtype, size):
    np = numpy()
    a = np.arange(size, dtype=dtype)
    b = (np.arange(size, dtype=dtype) * 3) % 1000
    a_before, b_before = a.copy(), b.copy()
    result = pool.run({"a": a, "b": b}).result(timeout=WAIT)
    assert isinstance(result, np.ndarray)
    assert result.dtype == a.dtype
    assert result.shape == (size,)
    np.testing.assert_array_equal(result, a_before + b_before)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int64", "uint64", "float32"])
def test_numpy_add_for_each_numeric_type(make_pool, dtype):
    np = numpy()
    pool = make_pool(2, ring_size=2)
    a = (np.arange(10_007) % 50).astype(dtype)
    b = (np.arange(10_007) % 7).astype(dtype)
    result = pool.run({"a": a, "b": b}).result(timeout=WAIT)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, a + b)


@pytest.mark.parametrize("size", SIZES)
def test_numpy_add_into_out_returns_out(pool, size):
    np = numpy()
    a = np.linspace(0, 1, size)
    b = np.linspace(1, 2, size)
    out = np.full(size, -1.0)
    result = pool.run({"a": a, "b": b, "out": out}).result(timeout=WAIT)
    assert result is out
    np.testing.assert_array_equal(out, a + b)


def test_numpy_task_through_run_task_completes_exactly_once(make_pool):
    np = numpy()
    pool = make_pool(4, ring_size=2)
    a = np.ones(4_000_003)
    b = np.full(4_000_003, 2.0)
    rec = Recorder(1)
    pool.run_task({"a": a, "b": b}, rec.callback)
    [(err, result)] = rec.wait()
    pool.close()
    assert err is None
    assert len(rec) == 1
    np.testing.assert_array_equal(result, np.full(4_000_003, 3.0))


def test_numpy_tasks_mixed_with_scalar_tasks(pool):
    np = numpy()
    rec = Recorder(0)
    arrays = {}
    for i in range(30):
        arrays[i] = (np.arange(10_000 + i, dtype="int64"), np.full(10_000 + i, i, dtype="int64"))
        pool.run_task({"a": arrays[i][0], "b": arrays[i][1]}, rec.keyed(("array", i)))
        pool.run_task((i, i), rec.keyed(("scalar", i)))
    pool.close()
    calls = rec.by_key
    assert len(calls) == 60
    for i in range(30):
        assert calls[("scalar", i)] == [(None, 2 * i)]
        [(err, result)] = calls[("array", i)]
        assert err is None
        np.testing.assert_array_equal(result, arrays[i][0] + arrays[i][1])


@pytest.mark.parametrize("which", ["b", "out"])
def test_numpy_length_mismatch_is_a_value_error(make_pool, which):
    np = numpy()
    pool = make_pool(2, ring_size=2)
    task = {"a": np.ones(10), "b": np.ones(10), "out": np.empty(10)}
    task[which] = np.ones(11)
    exc = pool.run(task).exception(timeout=WAIT)
    assert isinstance(exc, ValueError)
    assert "length" in str(exc)
    assert pool.run((1, 2)).result(timeout=WAIT) == 3
    with pytest.raises(ValueError, match="length"):
        fastpool.kernels.add(task)


def test_kernel_called_directly_on_numpy_arrays():
    np = numpy()
    a, b = np.arange(1000.0), np.arange(1000.0)
    np.testing.assert_array_equal(fastpool.kernels.add({"a": a, "b": b}), a + b)
    out = np.empty(1000)
    assert fastpool.kernels.add({"a": a, "b": b, "out": out}) is out
    np.testing.assert_array_equal(out, a + b)


# -- array.array -------------------------------------------------------------


@pytest.mark.parametrize("typecode", ["d", "f", "i", "q", "B"])
def test_array_array_add(pool, typecode):
    a = array(typecode, [i % 100 for i in range(100_001)])
    b = array(typecode, [(i * 7) % 100 for i in range(100_001)])
    expected = array(typecode, [x + y for x, y in zip(a, b)])
    result = pool.run({"a": a, "b": b}).result(timeout=WAIT)
    assert len(result) == len(expected)
    assert list(result) == list(expected)


@pytest.mark.parametrize("typecode", ["d", "i"])
def test_array_array_add_into_out_returns_out(pool, typecode):
    n = 100_001
    a = array(typecode, range(n))
    b = array(typecode, range(n, 2 * n))
    out = array(typecode, [0]) * n
    result = pool.run({"a": a, "b": b, "out": out}).result(timeout=WAIT)
    assert result is out
    assert list(out) == [x + y for x, y in zip(a, b)]


def test_array_array_length_mismatch_is_a_value_error(make_pool):
    pool = make_pool(2, ring_size=2)
    rec = Recorder(1)
    pool.run_task({"a": array("d", [1.0, 2.0]), "b": array("d", [1.0])}, rec.callback)
    [(err, result)] = rec.wait()
    assert isinstance(err, ValueError)
    assert "length" in str(err)
    assert result is None
    assert pool.run((1, 2)).result(timeout=WAIT) == 3


# -- the caller keeps running (guarantee 6) ----------------------------------


@pytest.mark.timeout(120)
def test_another_python_thread_keeps_making_progress_during_a_large_array_add(make_pool):
    np = numpy()
    n = 8_000_000
    a, b, out = np.ones(n), np.ones(n), np.empty(n)
    task = {"a": a, "b": b, "out": out}
    pool = make_pool(1, ring_size=2)  # one worker, so the counter has a core of its own
    assert pool.run(task).result(timeout=WAIT) is out  # warm up: pages touched, workers up

    count = [0]
    running, stop = threading.Event(), threading.Event()

    def spin():
        running.set()
        while not stop.is_set():
            count[0] += 1

    def rate(window):
        c0, t0 = count[0], time.perf_counter()
        window()
        c1, t1 = count[0], time.perf_counter()
        return (c1 - c0) / (t1 - t0), t1 - t0

    def idle():
        threading.Event().wait(0.25)  # a measurement window, not synchronisation

    adds = [0]

    def add_for_a_while():
        start = time.perf_counter()
        while adds[0] < 3 or time.perf_counter() - start < 0.3:
            pool.run(task).result(timeout=WAIT)
            adds[0] += 1

    spinner = threading.Thread(target=spin)
    old_interval = sys.getswitchinterval()
    # A kernel that held the GIL would let the counter run only at switch
    # points; a short switch interval keeps those slivers negligible.
    sys.setswitchinterval(0.001)
    spinner.start()
    try:
        wait_for(running, "the counter thread")
        idle_before, _ = rate(idle)
        busy, busy_window = rate(add_for_a_while)
        idle_after, _ = rate(idle)
    finally:
        stop.set()
        sys.setswitchinterval(old_interval)
        spinner.join(WAIT)
    idle_rate = (idle_before + idle_after) / 2
    assert busy >= 0.3 * idle_rate, (
        f"counter ran at {busy:.0f}/s during {adds[0]} adds ({busy_window:.2f}s) "
        f"vs {idle_rate:.0f}/s idle")
    np.testing.assert_array_equal(out, np.full(n, 2.0))
