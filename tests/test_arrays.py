"""Array tasks for the add kernel: numpy arrays and array.array, with or without "out".

numpy is optional: the numpy tests skip without it, the array.array ones do not.
"""
from __future__ import annotations

import sys
import threading
import time
from array import array

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastpool
from _support import ADD_PATHS, WAIT, Recorder, add_through, wait_for

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


# -- what numpy would do, or a clear refusal, on every path ---------------------
# Each case builds a fresh task (in-place adds change their inputs).  An
# accepted one must give numpy's a + b: its dtype, shape and values, in the
# given "out" when there is one.  A refused one must reach the task's
# callback, future or map iteration as that error (and raise when the kernel
# is called directly), never raise at run_task/run/submit/map.


def _ro(x):
    x.flags.writeable = False
    return x


def _shifted(x, other, which, forward=True):
    """Input `which` is x[:-1] and "out" is x[1:] (or the other way round):
    the same memory, one element apart."""
    task = {"a": other, "b": other}
    task[which], task["out"] = (x[:-1], x[1:]) if forward else (x[1:], x[:-1])
    return task


def _in_place(x, other, which):
    task = {"a": other, "b": other, "out": x}
    task[which] = x
    return task


def _all_one(x):
    return {"a": x, "b": x, "out": x}


def _neighbours(x):
    return {"a": x[:-1], "b": x[1:]}


def _unaligned(np, dtype, n=100_003):
    """An array one byte off its type's alignment, filled with 0, 1, 2, ..."""
    size = np.dtype(dtype).itemsize
    x = np.frombuffer(bytearray(size * n + 1), dtype, count=n, offset=1)
    x[:] = np.arange(n) % 100
    return x


def _out_views_a_as_int64(np):
    x = np.arange(8.0)
    return {"a": x[:4], "b": np.ones(4), "out": x.view("int64")[2:6]}


ACCEPTED = [
    pytest.param(lambda np: {"a": np.arange(6.0).reshape(2, 3), "b": np.ones((2, 3))}, id="2d"),
    pytest.param(lambda np: {"a": np.arange(24, dtype="int32").reshape(2, 3, 4),
                             "b": np.arange(24, dtype="int32").reshape(2, 3, 4)}, id="3d"),
    pytest.param(lambda np: {"a": np.ones((0, 3)), "b": np.ones((0, 3))}, id="empty-2d"),
    pytest.param(lambda np: {"a": np.array(1.5), "b": np.array(2.0)}, id="0d"),
    pytest.param(lambda np: {"a": np.ones((3, 1)), "b": np.ones((3, 1)), "out": np.empty((3, 1))},
                 id="column-into-out"),
    pytest.param(lambda np: {"a": np.full(5, 127, "int8"), "b": np.ones(5, "int8")}, id="int8-wraps"),
    pytest.param(lambda np: {"a": np.full(5, 2**64 - 1, "uint64"), "b": np.full(5, 2, "uint64")},
                 id="uint64-wraps"),
    pytest.param(lambda np: _in_place(np.arange(6.0), np.full(6, 2.0), "a"), id="in-place-out-is-a"),
    pytest.param(lambda np: _in_place(np.arange(6.0), np.full(6, 2.0), "b"), id="in-place-out-is-b"),
    pytest.param(lambda np: _all_one(np.arange(6, dtype="int64")), id="a-is-b-is-out"),
    pytest.param(lambda np: _in_place(np.arange(6.0).reshape(2, 3), np.ones((2, 3)), "a"),
                 id="in-place-2d"),
    pytest.param(lambda np: _neighbours(np.arange(10.0)), id="inputs-overlap-each-other"),
    pytest.param(lambda np: {"a": np.ones(3, "int64"), "b": array("q", [1, 2, 3])},
                 id="numpy-and-array-array-of-one-type"),
    pytest.param(lambda np: {"a": np.ones(3, "<i4"), "b": np.ones(3, "=i4")}, id="explicit-native-order"),
    pytest.param(lambda np: {"a": _unaligned(np, "f8"), "b": _unaligned(np, "f8"),
                             "out": _unaligned(np, "f8")}, id="unaligned-float64"),
    pytest.param(lambda np: {"a": _unaligned(np, "i4"), "b": _unaligned(np, "i4")}, id="unaligned-int32"),
]


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("make", ACCEPTED)
def test_accepted_arrays_give_numpys_answer(make_pool, make, path):
    np = numpy()
    task = make(np)
    out = task.get("out")
    expected = np.add(task["a"], task["b"], out=np.empty_like(np.asarray(task["a"])))
    err, result = add_through(path, make_pool, task)
    assert err is None, err
    if out is not None:
        assert result is out
    assert isinstance(result, np.ndarray)
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)


REFUSED = [
    # shapes: no broadcasting, and never a result of another shape
    pytest.param(lambda np: {"a": np.ones((2, 3)), "b": np.ones(6)}, ValueError, "shape", id="2d-vs-1d"),
    pytest.param(lambda np: {"a": np.ones(6), "b": np.ones((2, 3))}, ValueError, "shape", id="1d-vs-2d"),
    pytest.param(lambda np: {"a": np.ones((3, 1)), "b": np.ones(3)}, ValueError, "shape",
                 id="column-vs-row"),
    pytest.param(lambda np: {"a": np.ones((1, 3)), "b": np.ones(3)}, ValueError, "shape",
                 id="broadcastable-1x3-vs-3"),
    pytest.param(lambda np: {"a": np.ones((2, 3)), "b": np.ones((3, 2))}, ValueError, "shape",
                 id="transposed-shape"),
    pytest.param(lambda np: {"a": np.array(1.0), "b": np.ones(1)}, ValueError, "shape", id="0d-vs-1d"),
    pytest.param(lambda np: {"a": np.ones(1), "b": np.array(1.0)}, ValueError, "shape", id="1d-vs-0d"),
    pytest.param(lambda np: {"a": np.ones((2, 3)), "b": np.ones((2, 3)), "out": np.empty(6)},
                 ValueError, "shape", id="flat-out-for-2d"),
    pytest.param(lambda np: {"a": np.ones(6), "b": np.ones(6), "out": np.empty((2, 3))},
                 ValueError, "shape", id="2d-out-for-flat"),
    pytest.param(lambda np: {"a": np.ones((2, 3)), "b": np.ones((2, 3)), "out": array("d", [0.0] * 6)},
                 ValueError, "shape", id="array-array-out-for-2d"),
    # out partly over an input
    pytest.param(lambda np: _shifted(np.arange(10.0), np.ones(9), "a"), ValueError, "overlap",
                 id="out-is-a-shifted"),
    pytest.param(lambda np: _shifted(np.arange(10.0), np.ones(9), "b"), ValueError, "overlap",
                 id="out-is-b-shifted"),
    pytest.param(lambda np: _shifted(np.arange(10.0), np.ones(9), "a", forward=False),
                 ValueError, "overlap", id="out-is-a-shifted-back"),
    pytest.param(_out_views_a_as_int64, TypeError, "element type", id="out-is-a-other-type"),
    # masks the kernel would ignore
    pytest.param(lambda np: {"a": np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "b": np.ones(2)},
                 TypeError, "masked", id="masked-a"),
    pytest.param(lambda np: {"a": np.ones(2), "b": np.ma.masked_array([1.0, 2.0], mask=[0, 1])},
                 TypeError, "masked", id="masked-b"),
    pytest.param(lambda np: {"a": np.ones(2), "b": np.ones(2), "out": np.ma.masked_array(np.zeros(2))},
                 TypeError, "masked", id="masked-out"),
    # layouts the kernel does not read
    pytest.param(lambda np: {"a": np.arange(10.0)[::2], "b": np.ones(5)}, ValueError, "contiguous",
                 id="strided-a"),
    pytest.param(lambda np: {"a": np.ones(5), "b": np.arange(10.0)[::2]}, ValueError, "contiguous",
                 id="strided-b"),
    pytest.param(lambda np: {"a": np.ones(5), "b": np.ones(5), "out": np.empty(10)[::2]},
                 ValueError, "contiguous", id="strided-out"),
    pytest.param(lambda np: {"a": np.ones((2, 3)).T, "b": np.ones((3, 2))}, ValueError, "contiguous",
                 id="fortran-order-a"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.ones(3), "out": _ro(np.empty(3))},
                 ValueError, "read-only", id="read-only-out"),
    # element types without a native add
    pytest.param(lambda np: {"a": np.array(["2020-01-01"], "datetime64[D]"),
                             "b": np.array([1], "timedelta64[D]")}, TypeError, "element type",
                 id="datetime64"),
    pytest.param(lambda np: {"a": np.array([1], "timedelta64[D]"), "b": np.array([1], "timedelta64[D]")},
                 TypeError, "element type", id="timedelta64"),
    pytest.param(lambda np: {"a": np.array([1], object), "b": np.array([1], object)},
                 TypeError, "element type", id="object"),
    pytest.param(lambda np: {"a": np.ones(2, complex), "b": np.ones(2, complex)},
                 TypeError, "element type", id="complex"),
    pytest.param(lambda np: {"a": np.ones(2, bool), "b": np.ones(2, bool)}, TypeError, "element type",
                 id="bool"),
    pytest.param(lambda np: {"a": np.ones(2, "float16"), "b": np.ones(2, "float16")},
                 TypeError, "element type", id="float16"),
    pytest.param(lambda np: {"a": np.ones(2, "longdouble"), "b": np.ones(2, "longdouble")},
                 TypeError, "element type", id="longdouble"),
    pytest.param(lambda np: {"a": np.zeros(2, "i4,i4"), "b": np.zeros(2, "i4,i4")},
                 TypeError, "element type", id="structured"),
    pytest.param(lambda np: {"a": np.array(["x"]), "b": np.array(["y"])}, TypeError, "element type",
                 id="unicode"),
    pytest.param(lambda np: {"a": np.ones(3, ">i4"), "b": np.ones(3, ">i4")}, TypeError, "byte order",
                 id="big-endian-int"),
    pytest.param(lambda np: {"a": np.ones(3, ">f8"), "b": np.ones(3, ">f8")}, TypeError, "byte order",
                 id="big-endian-float"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.ones(3, "bool")}, TypeError, "element type",
                 id="bool-b"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.ones(3), "out": np.empty(3, complex)},
                 TypeError, "element type", id="complex-out"),
    # mixed element types: no promotion
    pytest.param(lambda np: {"a": np.ones(3, "int32"), "b": np.ones(3, "float64")},
                 TypeError, "element type", id="int32-float64"),
    pytest.param(lambda np: {"a": np.ones(3, "float32"), "b": np.ones(3, "float64")},
                 TypeError, "element type", id="float32-float64"),
    pytest.param(lambda np: {"a": np.ones(3, "int64"), "b": np.ones(3, "uint64")},
                 TypeError, "element type", id="int64-uint64"),
    pytest.param(lambda np: {"a": np.ones(3, "int32"), "b": np.ones(3, "int64")},
                 TypeError, "element type", id="int32-int64"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.ones(3), "out": np.empty(3, "float32")},
                 TypeError, "element type", id="float32-out"),
    # a number and an array: no broadcasting either
    pytest.param(lambda np: {"a": np.float64(1), "b": np.ones(3)}, TypeError, "array", id="float64-array"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.float64(1)}, TypeError, "array", id="array-float64"),
    pytest.param(lambda np: {"a": np.ones(3, "int64"), "b": np.int64(1)}, TypeError, "array",
                 id="array-int64"),
    pytest.param(lambda np: {"a": np.array(1.0), "b": 1.0}, TypeError, "array", id="0d-array-float"),
    pytest.param(lambda np: (1, np.ones(3)), TypeError, "array", id="int-array"),
    pytest.param(lambda np: {"a": 1, "b": 2, "out": np.empty(1, "int64")}, TypeError, "out",
                 id="out-with-numbers"),
    pytest.param(lambda np: {"a": np.ones(3), "b": np.ones(3), "out": 5}, TypeError, "out",
                 id="out-not-a-buffer"),
]


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("make, error, match", REFUSED)
def test_unsupported_arrays_are_refused_clearly(make_pool, make, error, match, path):
    np = numpy()
    task = make(np)
    out = task.get("out") if isinstance(task, dict) else None
    out_before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    err, result = add_through(path, make_pool, task)
    assert isinstance(err, error), repr(err)
    assert match in str(err), str(err)
    assert str(err).startswith("add kernel: ")
    assert result is None
    if out_before is not None:
        np.testing.assert_array_equal(out, out_before)   # nothing written


def _2d(code):
    return memoryview(array(code, range(6))).cast("B").cast(code, (2, 3))


# A character array; "u" is deprecated from Python 3.13 on, which has "w".
_CHARS = "w" if sys.version_info >= (3, 13) else "u"

REFUSED_WITHOUT_NUMPY = [
    pytest.param(lambda: {"a": array(_CHARS, "ab"), "b": array(_CHARS, "cd")}, TypeError,
                 "element type", id="array-u"),
    pytest.param(lambda: {"a": memoryview(b"ab").cast("c"), "b": memoryview(b"cd").cast("c")},
                 TypeError, "element type", id="memoryview-c"),
    pytest.param(lambda: {"a": memoryview(b"\x01").cast("?"), "b": memoryview(b"\x01").cast("?")},
                 TypeError, "element type", id="memoryview-bool"),
    pytest.param(lambda: {"a": memoryview(bytes(16)).cast("P"), "b": memoryview(bytes(16)).cast("P")},
                 TypeError, "element type", id="memoryview-pointer"),
    pytest.param(lambda: {"a": array("d", [1.0]), "b": array("f", [1.0])}, TypeError, "element type",
                 id="d-and-f"),
    pytest.param(lambda: {"a": array("i", [1]), "b": array("I", [1])}, TypeError, "element type",
                 id="signed-and-unsigned"),
    pytest.param(lambda: {"a": memoryview(array("d", range(10)))[::2], "b": array("d", range(5))},
                 ValueError, "contiguous", id="strided-memoryview"),
    pytest.param(lambda: {"a": array("d", [1.0]), "b": array("d", [1.0]),
                          "out": memoryview(bytes(8)).cast("d")}, ValueError, "read-only",
                 id="read-only-memoryview-out"),
    pytest.param(lambda: {"a": array("d", [1.0]), "b": array("d", [1.0]), "out": bytes(8)},
                 ValueError, "read-only", id="bytes-out"),
    pytest.param(lambda: {"a": _2d("d"), "b": _2d("d")}, ValueError, "out", id="2d-memoryview-no-out"),
    pytest.param(lambda: {"a": _2d("d"), "b": array("d", range(6))}, ValueError, "shape",
                 id="2d-memoryview-vs-flat"),
    pytest.param(lambda: _shifted(memoryview(array("d", range(10))), array("d", [1.0] * 9), "a"),
                 ValueError, "overlap", id="memoryview-out-overlaps-a"),
    pytest.param(lambda: (array("d", [1.0]), 1.0), TypeError, "array", id="array-and-float"),
]


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("make, error, match", REFUSED_WITHOUT_NUMPY)
def test_unsupported_buffers_are_refused_clearly(make_pool, make, error, match, path):
    err, result = add_through(path, make_pool, make())
    assert isinstance(err, error), repr(err)
    assert match in str(err), str(err)
    assert str(err).startswith("add kernel: ")
    assert result is None


def _ctypes_array(ctype, values):
    import ctypes

    return (getattr(ctypes, ctype) * len(values))(*values)


ACCEPTED_WITHOUT_NUMPY = [
    # formats array.array has no typecode for, and ctypes' explicit-order ones
    pytest.param(lambda: memoryview(array("q", [1, -2, 3])).cast("B").cast("n"), id="ssize_t"),
    pytest.param(lambda: memoryview(array("d", [0.5, 1.0, 2.0])), id="memoryview-d"),
    pytest.param(lambda: _ctypes_array("c_long", [1, -2, 2**40]), id="ctypes-long"),
    pytest.param(lambda: _ctypes_array("c_int", [1, -2, 2**29]), id="ctypes-int"),
    pytest.param(lambda: _ctypes_array("c_ushort", [1, 2, 2**14]), id="ctypes-ushort"),
    pytest.param(lambda: _ctypes_array("c_double", [0.5, -1.0, 1e300]), id="ctypes-double"),
]


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("make", ACCEPTED_WITHOUT_NUMPY)
def test_other_numeric_buffer_formats_add(make_pool, make, path):
    a = make()
    err, result = add_through(path, make_pool, {"a": a, "b": make()})
    assert err is None, err
    assert memoryview(result).itemsize == memoryview(a).itemsize
    assert memoryview(result).tolist() == [x + x for x in a]


def test_in_place_add_on_every_configuration(pool):
    np = numpy()
    n = 1_000_003
    a = np.arange(n, dtype="int64")
    b = np.full(n, 7, dtype="int64")
    assert pool.run({"a": a, "b": b, "out": a}).result(timeout=WAIT) is a
    np.testing.assert_array_equal(a, np.arange(n, dtype="int64") + 7)


def test_large_partial_overlap_is_refused_and_leaves_out_alone(pool):
    np = numpy()
    x = np.arange(1_000_003.0)
    before = x.copy()
    exc = pool.run({"a": x[:-1], "b": x[:-1], "out": x[1:]}).exception(timeout=WAIT)
    assert isinstance(exc, ValueError) and "overlap" in str(exc)
    np.testing.assert_array_equal(x, before)


# -- properties against numpy --------------------------------------------------

NATIVE_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float32", "float64"]


def test_array_add_property_matches_numpy(make_pool):
    np = numpy()
    from hypothesis.extra.numpy import array_shapes, arrays

    pool = make_pool(2, ring_size=2)

    @st.composite
    def tasks(draw):
        dtype = np.dtype(draw(st.sampled_from(NATIVE_TYPES)))
        shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
        a = draw(arrays(dtype, shape))
        b = draw(arrays(dtype, shape))
        where = draw(st.sampled_from(["none", "new", "a", "b"]))
        out = {"none": None, "new": np.empty(shape, dtype), "a": a, "b": b}[where]
        return a, b, out

    @settings(max_examples=200, deadline=None)
    @given(task=tasks(), via_pool=st.booleans())
    def check(task, via_pool):
        a, b, out = task
        with np.errstate(all="ignore"):     # float overflow to inf is expected here
            expected = np.add(a, b, out=np.empty_like(a))
        t = {"a": a, "b": b} if out is None else {"a": a, "b": b, "out": out}
        result = pool.run(t).result(timeout=WAIT) if via_pool else fastpool.kernels.add(t)
        if out is not None:
            assert result is out
        assert result.dtype == expected.dtype and result.shape == expected.shape
        np.testing.assert_array_equal(result, expected)

    check()


def test_array_shape_mismatch_property_never_gives_a_result(make_pool):
    np = numpy()
    from hypothesis.extra.numpy import array_shapes

    pool = make_pool(2, ring_size=2)
    shapes = array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)

    @settings(max_examples=100, deadline=None)
    @given(sa=shapes, sb=shapes, so=st.one_of(st.none(), shapes))
    def check(sa, sb, so):
        assume(sa != sb or (so is not None and so != sa))
        t = {"a": np.ones(sa), "b": np.ones(sb)}
        if so is not None:
            t["out"] = np.zeros(so)
        exc = pool.run(t).exception(timeout=WAIT)
        assert isinstance(exc, ValueError) and ("shape" in str(exc) or "length" in str(exc)), exc
        with pytest.raises(ValueError):
            fastpool.kernels.add(t)
        if so is not None:
            assert not t["out"].any()

    check()


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
