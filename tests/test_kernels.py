"""The add kernel: its result is Python's a + b, called directly or through the pool."""
from __future__ import annotations

import contextvars
import math
import threading
import types
from collections import OrderedDict
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from _support import ADD_PATHS, WAIT, Recorder, add_through

add = fastpool.kernels.add

INF, NAN = float("inf"), float("nan")

# (a, b): the expected result is always Python's a + b
SCALAR_CASES = [
    pytest.param(1, 2, id="small-ints"),
    pytest.param(-5, 3, id="negative"),
    pytest.param(0, 0, id="zeros"),
    pytest.param(2**63 - 1, 1, id="int64-max-plus-one"),
    pytest.param(2**63 - 1, 2**63 - 1, id="int64-max-twice"),
    pytest.param(-(2**63), -1, id="int64-min-minus-one"),
    pytest.param(2**64 - 1, 1, id="uint64-max-plus-one"),
    pytest.param(2**64, 2**64, id="beyond-64-bits"),
    pytest.param(10**30, 1, id="bigint-plus-one"),
    pytest.param(2**200, -(2**200), id="bigints-cancel"),
    pytest.param(-(10**50), 7, id="negative-bigint"),
    pytest.param(0.1, 0.2, id="floats"),
    pytest.param(1, 0.5, id="int-float"),
    pytest.param(0.5, 1, id="float-int"),
    pytest.param(2**53 + 1, 0.0, id="int-rounds-to-float"),
    pytest.param(2**1000, 1.0, id="bigint-float"),
    pytest.param(True, True, id="bool-bool"),
    pytest.param(True, 1, id="bool-int"),
    pytest.param(False, 2**70, id="bool-bigint"),
    pytest.param(True, 1.5, id="bool-float"),
    pytest.param(INF, 1, id="inf"),
    pytest.param(INF, -INF, id="inf-minus-inf"),
    pytest.param(NAN, 1.0, id="nan"),
    pytest.param(-0.0, -0.0, id="negative-zeros"),
    pytest.param(-0.0, 0, id="negative-zero-int"),
    pytest.param(5e-324, 5e-324, id="subnormals"),
    pytest.param(1.7976931348623157e308, 1.7976931348623157e308, id="float-overflow-to-inf"),
]


def assert_same_number(result, expected):
    """Same type and value as Python's result; NaN matches NaN and -0.0 only -0.0.
    (numpy's floats are not all Python floats: anything but an int is compared so.)"""
    assert type(result) is type(expected), (result, expected)
    if not isinstance(expected, int) and math.isnan(expected):
        assert math.isnan(result)
    elif not isinstance(expected, int):
        assert result == expected and math.copysign(1, result) == math.copysign(1, expected), (
            result, expected)
    else:
        assert result == expected


@pytest.mark.parametrize("a, b", SCALAR_CASES)
def test_add_is_pythons_a_plus_b(a, b):
    assert_same_number(add({"a": a, "b": b}), a + b)
    assert_same_number(add((a, b)), a + b)


def test_add_of_the_worker_pool_example():
    assert add({"a": 1, "b": 2}) == 3
    assert add((1, 2)) == 3


class FrozenTask(Mapping):
    def __init__(self, **items):
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


@pytest.mark.parametrize("task", [
    OrderedDict(a=1, b=2),
    types.MappingProxyType({"a": 1, "b": 2}),
    FrozenTask(a=1, b=2),
], ids=["OrderedDict", "MappingProxyType", "Mapping-subclass"])
def test_add_accepts_any_mapping(make_pool, task):
    assert add(task) == 3
    pool = make_pool(2, ring_size=2)
    assert pool.run(task).result(timeout=WAIT) == 3


def test_pool_add_is_pythons_a_plus_b_on_every_configuration(pool):
    cases = [p.values for p in SCALAR_CASES]
    rec = Recorder(2 * len(cases))
    for i, (a, b) in enumerate(cases):
        pool.run_task({"a": a, "b": b}, rec.keyed(("mapping", i)))
        pool.run_task((a, b), rec.keyed(("tuple", i)))
    rec.wait()
    calls = rec.by_key
    for i, (a, b) in enumerate(cases):
        for form in ("mapping", "tuple"):
            [(err, result)] = calls[(form, i)]
            assert err is None, (a, b, err)
            assert_same_number(result, a + b)


def test_explicit_native_processor_is_the_same_as_the_default(make_pool):
    pool = make_pool(2, fastpool.kernels.add, ring_size=2)
    futs = [pool.run((2**63 - 1, i)) for i in range(100)]
    assert [f.result(timeout=WAIT) for f in futs] == [2**63 - 1 + i for i in range(100)]


# -- properties ---------------------------------------------------------------

INT64_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**32, 2**53, 2**53 + 1, 2**62, 2**63 - 1,
               -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 2**100, -(2**100)]
ints = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(2**1000), max_value=2**1000),  # bounded so int + float never raises
    st.sampled_from(INT64_EDGES),
    st.integers(min_value=2**63 - 64, max_value=2**63 + 64),
    st.integers(min_value=-(2**63) - 64, max_value=-(2**63) + 64),
)
operands = st.one_of(ints, st.floats(), st.booleans())


@settings(max_examples=500, deadline=None)
@given(a=operands, b=operands)
def test_add_property_matches_python(a, b):
    assert_same_number(add({"a": a, "b": b}), a + b)
    assert_same_number(add((a, b)), a + b)


def test_pool_results_property_match_python(make_pool):
    pool = make_pool(2, ring_size=2)

    @settings(max_examples=100, deadline=None)
    @given(pairs=st.lists(st.tuples(operands, operands), min_size=1, max_size=40))
    def check(pairs):
        futs = [pool.run({"a": a, "b": b}) for a, b in pairs]
        rec = Recorder(len(pairs))
        for i, pair in enumerate(pairs):
            pool.run_task(pair, rec.keyed(i))
        rec.wait()
        calls = rec.by_key
        for i, ((a, b), fut) in enumerate(zip(pairs, futs)):
            assert_same_number(fut.result(timeout=WAIT), a + b)
            [(err, result)] = calls[i]
            assert err is None
            assert_same_number(result, a + b)

    check()


# -- numpy scalars --------------------------------------------------------------
# A numpy scalar is a number, not a one-element buffer: the result is numpy's
# own a + b (its result type, its wrapping of fixed-width ints, its errors).

NUMPY_SCALAR_CASES = [
    pytest.param(lambda np: (np.int64(5), np.int64(7)), id="int64-int64"),
    pytest.param(lambda np: (np.int64(2**62), np.int64(2**62)), id="int64-wraps"),
    pytest.param(lambda np: (np.int64(-(2**63)), np.int64(-1)), id="int64-min-minus-one-wraps"),
    pytest.param(lambda np: (np.int32(2**31 - 1), 1), id="int32-int-wraps"),
    pytest.param(lambda np: (1, np.int32(5)), id="int-int32"),
    pytest.param(lambda np: (np.int8(-128), np.int8(-1)), id="int8-wraps"),
    pytest.param(lambda np: (np.uint8(250), np.uint8(10)), id="uint8-wraps"),
    pytest.param(lambda np: (np.uint8(250), 10), id="uint8-int-wraps"),
    pytest.param(lambda np: (np.uint64(2**64 - 1), np.uint64(1)), id="uint64-wraps"),
    pytest.param(lambda np: (np.int64(3), 2**70), id="int64-bigint-overflowerror"),
    pytest.param(lambda np: (np.int32(1), 2**40), id="int32-int-out-of-bounds"),
    pytest.param(lambda np: (np.int64(3), 1.5), id="int64-float"),
    pytest.param(lambda np: (np.int64(3), np.int32(4)), id="int64-int32"),
    pytest.param(lambda np: (np.float32(0.1), 0.2), id="float32-float"),
    pytest.param(lambda np: (0.2, np.float32(0.1)), id="float-float32"),
    pytest.param(lambda np: (np.float32(3e38), np.float32(3e38)), id="float32-overflow-to-inf"),
    pytest.param(lambda np: (np.float64(0.1), 0.2), id="float64-float"),
    pytest.param(lambda np: (np.float64(0.5), np.int64(2)), id="float64-int64"),
    pytest.param(lambda np: (np.float64(0.5), 2**70), id="float64-bigint"),
    pytest.param(lambda np: (np.float16(1), 2), id="float16-int"),
    pytest.param(lambda np: (np.longdouble(1), 1), id="longdouble-int"),
    pytest.param(lambda np: (np.bool_(True), np.bool_(True)), id="bool_-bool_"),
    pytest.param(lambda np: (np.bool_(True), 1), id="bool_-int"),
    pytest.param(lambda np: (True, np.bool_(True)), id="bool-bool_"),
    pytest.param(lambda np: (np.float32("nan"), 1), id="float32-nan"),
]


def python_outcome(a, b):
    try:
        return None, a + b
    except Exception as e:
        return e, None


def direct_outcome(task):
    try:
        return None, add(task)
    except Exception as e:
        return e, None


def assert_same_outcome(got, expected):
    """Same exception (type and message) or the same number."""
    (err, result), (expected_err, expected_result) = got, expected
    if expected_err is not None:
        assert type(err) is type(expected_err), (err, expected_err)
        assert str(err) == str(expected_err)
        assert result is None
    else:
        assert err is None, err
        assert_same_number(result, expected_result)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("form", ["dict", "tuple"])
@pytest.mark.parametrize("make", NUMPY_SCALAR_CASES)
def test_numpy_scalars_add_as_numpy_does(make_pool, make, form, path):
    np = pytest.importorskip("numpy")
    a, b = make(np)
    task = {"a": a, "b": b} if form == "dict" else (a, b)
    assert_same_outcome(add_through(path, make_pool, task), python_outcome(a, b))


NOT_NUMBERS = [
    pytest.param(lambda np: np.complex128(1), id="complex128"),
    pytest.param(lambda np: np.datetime64("2020-01-01"), id="datetime64"),
    pytest.param(lambda np: np.timedelta64(1, "D"), id="timedelta64"),
    pytest.param(lambda np: np.str_("1"), id="str_"),
    pytest.param(lambda np: np.bytes_(b"1"), id="bytes_"),
    pytest.param(lambda np: np.void(b"\x01"), id="void"),
]


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("make", NOT_NUMBERS)
def test_numpy_scalars_that_are_not_ints_or_floats_are_refused(make_pool, make, path):
    np = pytest.importorskip("numpy")
    x = make(np)
    for task in ({"a": x, "b": 1}, (1, x)):
        err, result = add_through(path, make_pool, task)
        assert isinstance(err, TypeError), err
        assert f"must be an int, a float or a numeric buffer, not {type(x).__name__}" in str(err)
        assert result is None


NUMPY_SCALAR_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                      "float16", "float32", "float64", "bool"]


def numpy_operands(np):
    from hypothesis.extra.numpy import from_dtype

    def scalars(name):
        dtype = np.dtype(name)
        return from_dtype(dtype).map(dtype.type)

    return st.one_of(operands, *(scalars(name) for name in NUMPY_SCALAR_TYPES))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_numpy_scalar_property_matches_numpy(make_pool):
    np = pytest.importorskip("numpy")
    pool = make_pool(2, ring_size=2)
    mixed = numpy_operands(np)

    @settings(max_examples=300, deadline=None)
    @given(pairs=st.lists(st.tuples(mixed, mixed), min_size=1, max_size=20))
    def check(pairs):
        futs = [pool.run({"a": a, "b": b}) for a, b in pairs]
        mapped = pool.map(add, pairs)
        for (a, b), fut in zip(pairs, futs):
            expected = python_outcome(a, b)
            assert_same_outcome(direct_outcome((a, b)), expected)
            err = fut.exception(timeout=WAIT)
            assert_same_outcome((err, None if err else fut.result()), expected)
            try:
                got = (None, next(mapped))
            except Exception as e:
                got = (e, None)
            assert_same_outcome(got, expected)
            if got[0] is not None:
                break   # Executor.map stops at the first error

    check()


def numpy_with_context_errstate():
    """numpy, if it keeps its error state in a contextvar (numpy 2 does;
    older ones kept it per thread, where no pool can carry it)."""
    np = pytest.importorskip("numpy")
    with np.errstate(over="raise"):
        ctx = contextvars.copy_context()
    seen = []
    t = threading.Thread(target=lambda: seen.append(ctx.run(np.geterr)["over"]))
    t.start()
    t.join(WAIT)
    if seen != ["raise"]:
        pytest.skip("this numpy keeps its error state per thread")
    return np


@pytest.mark.parametrize("path", ADD_PATHS)
@pytest.mark.parametrize("form", ["dict", "tuple"])
def test_numpy_scalars_follow_the_submitters_numpy_error_state(make_pool, form, path):
    # numpy keeps its error state in a contextvar: the add runs in the
    # submitter's context, as the callback does, whichever thread runs it.
    np = numpy_with_context_errstate()
    a, b = np.int64(2**62), np.int64(2**62)
    task = {"a": a, "b": b} if form == "dict" else (a, b)
    with np.errstate(over="raise"):
        expected = python_outcome(a, b)
        got = add_through(path, make_pool, task)
    assert isinstance(expected[0], FloatingPointError)
    assert_same_outcome(got, expected)
    with np.errstate(over="ignore"):
        expected = python_outcome(a, b)
        got = add_through(path, make_pool, task)
    assert expected[0] is None
    assert_same_outcome(got, expected)


def test_numpy_error_state_holds_for_tasks_that_wait_in_the_queue(make_pool):
    np = numpy_with_context_errstate()
    pool = make_pool(1, ring_size=2)     # most of these wait in the overflow FIFO
    task = (np.int64(2**62), np.int64(2**62))
    rec = Recorder(50)
    with np.errstate(over="raise"):
        futs = [pool.run(task) for _ in range(50)]
        for i in range(50):
            pool.run_task(task, rec.keyed(i))
    for fut in futs:
        assert isinstance(fut.exception(timeout=WAIT), FloatingPointError)
    rec.wait()
    assert all(isinstance(err, FloatingPointError) for err, _ in rec.wait())
