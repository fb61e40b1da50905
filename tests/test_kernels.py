"""The add kernel: its result is Python's a + b, called directly or through the pool."""
from __future__ import annotations

import math
import types
from collections import OrderedDict
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from _support import WAIT, Recorder

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
    """Same type and value as Python's result; NaN matches NaN and -0.0 only -0.0."""
    assert type(result) is type(expected), (result, expected)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(result)
    elif isinstance(expected, float):
        assert result == expected and math.copysign(1, result) == math.copysign(1, expected), (
            result, expected)
    else:
        assert result == expected


@pytest.mark.parametrize("a, b", SCALAR_CASES)
def test_add_is_pythons_a_plus_b(a, b):
    assert_same_number(add({"a": a, "b": b}), a + b)
    assert_same_number(add((a, b)), a + b)


def test_add_of_the_seed_example():
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
