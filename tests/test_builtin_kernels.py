"""The built-in kernels add, mul and fma (a * b + c): a task's result is
Python's own arithmetic on its operands (numpy's, for numpy scalars and
arrays), however it is run (called directly, run_task, run, submit, map)
and on either worker kind; a bad task is a clear error that names its
kernel, for that task's callback or future, never raised at the call."""
from __future__ import annotations

import operator
import pickle
import types
from array import array
from collections import OrderedDict
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from fastpool import kernels
from _support import WAIT, Recorder, assert_same_number, assert_same_outcome, outcome

NAMES = ("add", "mul", "fma")
OPS = {"add": operator.add, "mul": operator.mul, "fma": lambda a, b, c: a * b + c}
ARITY = {"add": 2, "mul": 2, "fma": 3}
PATHS = ("direct", "run_task", "run", "submit", "map")


def kernel(name):
    return getattr(kernels, name)


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def as_dict(ops):
    return dict(zip("abc", ops))


def python(name, ops):
    return outcome(OPS[name], *ops)


def through(path, pool, name, task):
    """(err, result) of kernel `name` on `task`, run one way.  Only "direct"
    may raise a bad task's error; every other path delivers it, so an
    exception at the call fails the test."""
    k = kernel(name)
    if path == "direct":
        return outcome(k, task)
    if path == "run_task":
        rec = Recorder(1)
        pool.run_task(task, rec.callback)
        [(err, result)] = rec.wait()
        return err, result
    if path == "map":
        # a plain neighbour first, so the item is one of a native batch
        it = pool.map(k, [(1,) * ARITY[name], task])
        assert next(it) == OPS[name](*(1,) * ARITY[name])
        return outcome(next, it)
    fut = pool.run(task) if path == "run" else pool.submit(k, task)
    err = fut.exception(timeout=WAIT)
    return err, None if err is not None else fut.result()


# -- numbers: Python's arithmetic ----------------------------------------------------

INF, NAN = float("inf"), float("nan")
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)
ONE_EPS = 1 + 2**-27        # (1 + 2**-27)**2 = 1 + 2**-26 + 2**-54: the last term rounds away

EDGES = {
    "add": [(1, 2), (I64_MAX, 1), (I64_MIN, -1), (I64_MAX, I64_MAX), (I64_MIN, I64_MIN),
            (2**64, -1), (10**30, 1), (0.1, 0.2), (1, 0.5), (2**53 + 1, 0.0), (True, True),
            (INF, -INF), (NAN, 1), (-0.0, -0.0), (-0.0, 0), (5e-324, 5e-324), (1e308, 1e308)],
    "mul": [(6, 7), (I64_MAX, 2), (I64_MIN, -1), (I64_MIN, I64_MIN), (I64_MAX, I64_MAX),
            (I64_MIN, I64_MAX), (2**32, 2**31), (-(2**32), 2**31), (3037000500, 3037000500),
            (2**64, 3), (10**30, -(10**30)), (0.1, 3), (2**53 + 1, 1.0), (I64_MAX, 0.5),
            (True, 2**62), (True, True), (INF, 0), (INF, -2), (NAN, 0), (-0.0, 5), (0, -1.5),
            (1e200, 1e200), (5e-324, 0.5), (-1, I64_MIN)],
    "fma": [(2, 3, 4), (I64_MAX, I64_MAX, I64_MAX), (I64_MIN, I64_MIN, I64_MIN),
            (I64_MIN, -1, 0), (I64_MIN, -1, -1), (3, 2**62, I64_MIN), (2**32, 2**31, -(2**63)),
            (I64_MAX, 2, -I64_MAX), (2**70, 2, 1), (1, 1, 2**64), (2**62, 4, 0.5),
            (2**53 + 1, 3, 0.0), (I64_MAX, I64_MAX, 1.0), (0.1, 0.1, -0.01),
            (ONE_EPS, ONE_EPS, -(1 + 2**-26)), (-1, 0, -0.0), (0, 5, -0.0), (-0.0, 1, -0.0),
            (0.5, 3, 2**60 + 1), (INF, 0, 1), (INF, 1, -INF), (NAN, 1, 1), (1e308, 10, -INF),
            (True, True, True), (True, 0.5, False), (1e200, 1e200, 1), (2**1000, 2**1000, 0.5)],
}


def test_fma_rounds_twice_as_python_does():
    # A fused multiply-add would keep the 2**-54 that Python's a * b rounds away.
    assert kernels.fma((ONE_EPS, ONE_EPS, -(1 + 2**-26))) == 0.0
    assert kernels.fma({"a": ONE_EPS, "b": ONE_EPS, "c": -(1 + 2**-26)}) == 0.0


@pytest.mark.parametrize("path", PATHS)
def test_edge_cases_are_pythons_arithmetic_on_every_path_and_kind(make_pool, name, kind, path):
    pool = make_pool(2, kernel(name), workers=kind, ring_size=2)
    for ops in EDGES[name]:
        for task in (as_dict(ops), ops):
            assert_same_outcome(through(path, pool, name, task), python(name, ops))


INT64_EDGES = [0, 1, -1, 2, 3, 2**31 - 1, -(2**31), 2**32, 2**53, 2**53 + 1, 3037000499, 3037000500,
               2**62, I64_MAX, I64_MIN, 2**63, I64_MIN - 1, 2**64 - 1, 2**64, 2**100, -(2**100)]
ints = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.integers(min_value=-(2**400), max_value=2**400),
    st.sampled_from(INT64_EDGES),
    st.integers(min_value=I64_MAX - 64, max_value=I64_MAX + 64),
    st.integers(min_value=I64_MIN - 64, max_value=I64_MIN + 64),
)
operands = st.one_of(ints, st.floats(), st.booleans())


def operand_tuples(name):
    return st.tuples(*[operands] * ARITY[name])


@pytest.mark.parametrize("name", NAMES)
def test_direct_calls_match_python_on_random_operands(name):
    @settings(max_examples=600, deadline=None)
    @given(ops=operand_tuples(name))
    def check(ops):
        expected = python(name, ops)
        assert_same_outcome(outcome(kernel(name), ops), expected)
        assert_same_outcome(outcome(kernel(name), as_dict(ops)), expected)

    check()


def test_pools_match_python_on_random_operands(make_pool, name, kind):
    k = kernel(name)
    pool = make_pool(2, k, workers=kind, ring_size=4)     # most tasks wait in the FIFO

    @settings(max_examples=60 if kind == "process" else 150, deadline=None)
    @given(batch=st.lists(operand_tuples(name), min_size=1, max_size=30))
    def check(batch):
        expected = [python(name, ops) for ops in batch]
        futs = [pool.run(as_dict(ops)) for ops in batch]
        subs = [pool.submit(k, ops) for ops in batch]
        rec = Recorder(len(batch))
        for i, ops in enumerate(batch):
            pool.run_task(ops, rec.keyed(i))
        rec.wait()
        for i, want in enumerate(expected):
            for fut in (futs[i], subs[i]):
                err = fut.exception(timeout=WAIT)
                assert_same_outcome((err, None if err else fut.result()), want)
            [(err, result)] = rec.by_key[i]
            assert_same_outcome((err, result), want)
        mapped = pool.map(k, batch)
        for want in expected:
            got = outcome(next, mapped)
            assert_same_outcome(got, want)
            if got[0] is not None:
                break       # Executor.map stops at the first error

    check()


def test_third_operands_of_queued_tasks_stay_their_own(make_pool, kind):
    # c travels apart from the cell (the task slot's operand word): many fma
    # tasks through a tiny ring, most of them waiting in the FIFO.
    pool = make_pool(2, kernels.fma, workers=kind, ring_size=2)
    n = 3000
    rec = Recorder(n // 2)         # the even ones; the odd ones are futures
    futs = []
    for i in range(n):
        c = i if i % 3 else i + 0.5
        if i % 2:
            futs.append((i, c, pool.run((i, 3, c))))
        else:
            pool.run_task({"a": i, "b": 3, "c": c}, rec.keyed(i))
    for i, c, fut in futs:
        assert_same_number(fut.result(timeout=WAIT), i * 3 + c)
    rec.wait()
    pool.close()
    for i, calls in rec.by_key.items():
        c = i if i % 3 else i + 0.5
        assert calls == [(None, i * 3 + c)]


# -- task forms ----------------------------------------------------------------------

class FrozenTask(Mapping):
    def __init__(self, **items):
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


FORMS = {
    "dict": as_dict,
    "dict-with-more-keys": lambda ops: {**as_dict(ops), "note": "ignored"},
    "OrderedDict": lambda ops: OrderedDict(as_dict(ops)),
    "MappingProxyType": lambda ops: types.MappingProxyType(as_dict(ops)),
    "Mapping": lambda ops: FrozenTask(**as_dict(ops)),
    "tuple": tuple,
}


@pytest.mark.parametrize("form", FORMS)
def test_every_task_form_on_every_path_and_kind(make_pool, name, kind, form):
    pool = make_pool(2, kernel(name), workers=kind)
    cases = [(7, -3, 5), (2**62, 2**62, 1), (2**70, 3, -1), (0.5, 3, 0.25)]
    for case in cases:
        ops = case[:ARITY[name]]
        for path in PATHS:
            assert_same_outcome(through(path, pool, name, FORMS[form](ops)), python(name, ops))


NUMPY_CASES = [
    lambda np: (np.int64(5), np.int64(7), np.int64(-3)),
    lambda np: (np.int64(2**62), np.int64(4), np.int64(1)),
    lambda np: (np.int8(100), np.int8(3), np.int8(-100)),
    lambda np: (np.uint8(200), 2, np.uint8(10)),
    lambda np: (np.int32(2**30), 4, 1),
    lambda np: (np.uint64(2**63), np.uint64(2), np.uint64(1)),
    lambda np: (np.int64(3), 2**70, 1),
    lambda np: (np.float32(0.1), 3, np.float32(0.2)),
    lambda np: (0.1, np.float32(3), 0.2),
    lambda np: (np.float64(0.5), np.int64(3), 2**70),
    lambda np: (np.float16(1.5), 2, 1),
    lambda np: (np.longdouble(1.5), 2, 1),
    lambda np: (np.bool_(True), np.bool_(True), np.bool_(True)),
    lambda np: (np.float32("nan"), 1, 1),
    lambda np: (2**62, np.int64(4), 0),
]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_numpy_scalars_compute_as_numpy_does(make_pool, name, kind):
    np = pytest.importorskip("numpy")
    pool = make_pool(2, kernel(name), workers=kind)
    for make in NUMPY_CASES:
        ops = make(np)[:ARITY[name]]
        for task in (as_dict(ops), ops):
            for path in PATHS:
                assert_same_outcome(through(path, pool, name, task), python(name, ops))


# -- arrays: numpy's elementwise arithmetic -------------------------------------------

DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float32", "float64"]


def random_array(np, rng, dtype, n):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-40, 40, n)
        if n:       # and some specials, anywhere
            specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e308, -1e308])
            where = rng.integers(0, n, n // 50 + 1)
            x[where] = rng.choice(specials, len(where))
        with np.errstate(all="ignore"):
            return x.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)


def numpy_result(np, name, ops):
    with np.errstate(all="ignore"):
        return OPS[name](*ops)


@pytest.mark.parametrize("n", [0, 1, 7, 100_003])
@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_compute_as_numpy_for_every_element_type(make_pool, name, dtype, n):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng([n, DTYPES.index(dtype), NAMES.index(name)])
    pool = make_pool(4, kernel(name))          # 100_003 elements: several chunks
    ops = [random_array(np, rng, dtype, n) for _ in range(ARITY[name])]
    before = [x.copy() for x in ops]
    want = numpy_result(np, name, ops)
    assert want.dtype == np.dtype(dtype)
    for path in ("direct", "run", "submit", "run_task"):
        err, got = through(path, pool, name, as_dict(ops))
        assert err is None, err
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        for x, x0 in zip(ops, before):
            np.testing.assert_array_equal(x, x0)       # inputs untouched
    out = np.empty_like(ops[0])
    assert pool.run({**as_dict(ops), "out": out}).result(timeout=WAIT) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("name, operand", [(n, x) for n in NAMES for x in "abc"[:ARITY[n]]])
def test_arrays_in_place_into_any_operand(make_pool, name, operand):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    pool = make_pool(4, kernel(name))
    ops = [random_array(np, rng, "float64", 200_001) for _ in range(ARITY[name])]
    want = numpy_result(np, name, ops)
    task = as_dict(ops)
    target = task[operand]
    assert pool.run({**task, "out": target}).result(timeout=WAIT) is target
    np.testing.assert_array_equal(target, want)


def test_arrays_of_any_shape(make_pool, name):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(3)
    pool = make_pool(2, kernel(name))
    ops = [random_array(np, rng, "int32", 300 * 70).reshape(300, 70) for _ in range(ARITY[name])]
    want = numpy_result(np, name, ops)
    for path in ("direct", "run"):
        err, got = through(path, pool, name, tuple(ops))
        assert err is None, err
        assert got.shape == (300, 70)
        np.testing.assert_array_equal(got, want)
    err, _ = through("run", pool, name, tuple(ops[:-1]) + (np.ascontiguousarray(ops[-1].T),))
    assert isinstance(err, ValueError) and str(err).startswith(f"{name} kernel: "), err
    assert "differ in shape" in str(err)


def test_array_array_operands(make_pool, name):
    pool = make_pool(2, kernel(name))
    ops = [array("q", [3, -4, 2**62, -(2**63)]), array("q", [5, 6, 4, -1]), array("q", [1, 2, 3, 4])]
    ops = ops[:ARITY[name]]
    got = pool.run(tuple(ops)).result(timeout=WAIT)
    assert isinstance(got, array) and got.typecode == "q"
    wrap = [((OPS[name](*vals) + 2**63) % 2**64) - 2**63 for vals in zip(*ops)]
    assert list(got) == wrap
    d = [array("d", [0.5, 1e308, -0.0]), array("d", [3.0, 10.0, 1.0]), array("d", [0.25, 0.0, -0.0])]
    d = d[:ARITY[name]]
    assert list(pool.run(tuple(d)).result(timeout=WAIT)) == [OPS[name](*v) for v in zip(*d)]


def test_array_tasks_in_a_process_pool_are_a_clear_error(make_pool, name):
    np = pytest.importorskip("numpy")
    pool = make_pool(1, kernel(name), workers="process")
    ops = (np.ones(4),) * ARITY[name]
    err = pool.run(ops).exception(timeout=WAIT)
    assert isinstance(err, TypeError)
    assert f"a process pool's {name} kernel takes numbers" in str(err)
    assert pool.run((2,) * ARITY[name]).result(timeout=WAIT) == OPS[name](*(2,) * ARITY[name])


# -- bad tasks: clear errors, each to its own task --------------------------------------

def bad_tasks(name):
    """(task, exception type, what its message says after "<name> kernel: ")."""
    n = ARITY[name]
    listed = "'a' and 'b'" if n == 2 else "'a', 'b' and 'c'"
    cases = [
        ({"a": 1}, KeyError, "task is missing key 'b'"),
        ({"b": 1, "c": 1}, KeyError, "task is missing key 'a'"),
        (FrozenTask(a=1), KeyError, "task is missing key 'b'"),
        ((1,) * (n - 1), ValueError, f"a tuple task must be a {n}-tuple"),
        ((1,) * (n + 1), ValueError, f"a tuple task must be a {n}-tuple"),
        ([1] * n, TypeError, f"task must be a mapping with keys {listed} or a {n}-tuple, not list"),
        (None, TypeError, "not NoneType"),
        (("x",) + (1,) * (n - 1), TypeError, "'a' must be an int, a float or a numeric buffer, not str"),
        ((1, None) + (1,) * (n - 2), TypeError, "'b' must be an int, a float or a numeric buffer"),
        ((1, 2j) + (1,) * (n - 2), TypeError, "not complex"),
        ({**as_dict((1,) * n), "out": array("d", [0.0])}, TypeError, "'out' is for array tasks"),
        ((array("d", [1.0]),) + (1.0,) * (n - 1), TypeError, "'a' is an array, so 'b' must be one too"),
        ((array("d", [1.0]), array("d", [1.0, 2.0])) + (array("d", [1.0]),) * (n - 2), ValueError,
         "'a' and 'b' differ in length (1 != 2)"),
    ]
    if n == 3:
        cases += [
            ({"a": 1, "b": 2}, KeyError, "task is missing key 'c'"),
            (FrozenTask(a=1, b=2), KeyError, "task is missing key 'c'"),
            ((1, 2, "x"), TypeError, "'c' must be an int, a float or a numeric buffer, not str"),
            ((array("d", [1.0]), array("d", [1.0]), 1.0), TypeError,
             "'a' is an array, so 'c' must be one too, not float (the fma kernel does not broadcast)"),
            ((array("d", [1.0]), array("d", [1.0]), array("d", [1.0, 2.0])), ValueError,
             "'a' and 'c' differ in length (1 != 2)"),
            ((array("d", [1.0]), array("d", [1.0]), array("f", [1.0])), TypeError,
             "'a' and 'c' have different element types ('d' and 'f'); the fma kernel does not convert"),
            ((array("d", [1.0, 2.0]), array("d", [1.0, 2.0]), memoryview(array("d", range(4)))[::2]),
             ValueError, "'c' is not C-contiguous"),
            ({"a": 1, "b": 2, "c": 3, "out": array("q", [0])}, TypeError,
             "'out' is for array tasks; 'a', 'b' and 'c' are numbers (int, int and int)"),
        ]
    return cases


def overlapping_c_task():
    buf = array("d", range(10))
    whole = memoryview(buf)
    return {"a": array("d", [1.0] * 9), "b": array("d", [1.0] * 9), "c": whole[1:], "out": whole[:9]}


@pytest.mark.parametrize("path", PATHS)
def test_bad_tasks_are_clear_errors_for_their_own_task(make_pool, name, kind, path):
    # (a bad array task fails as it is read, before a process pool would
    # refuse it for being an array task)
    pool = make_pool(2, kernel(name), workers=kind)
    cases = bad_tasks(name)
    if name == "fma":
        cases.append((overlapping_c_task(), ValueError, "'out' partly overlaps 'c'"))
    for task, error, says in cases:
        err, result = through(path, pool, name, task)
        assert isinstance(err, error), (task, err)
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        assert message.startswith(f"{name} kernel: "), message
        assert says in message, (message, says)
        assert result is None
    # and the pool goes on
    ops = (2,) * ARITY[name]
    assert through("run", pool, name, ops) == (None, OPS[name](*ops))


# -- kernels as objects ----------------------------------------------------------------

def test_kernels_pickle_by_name_and_are_the_same_objects(name):
    k = kernel(name)
    assert pickle.loads(pickle.dumps(k)) is k
    assert repr(k) == f"<fastpool kernel {name!r}>"
    assert k.name == name
    assert name in kernels.__all__
    assert isinstance(k, kernels.Kernel)


def test_kernels_are_made_by_fastpool_only():
    with pytest.raises(TypeError, match="made by fastpool"):
        kernels.Kernel()
    with pytest.raises(TypeError, match="made by fastpool"):
        kernels.Kernel("mul")


def test_a_kernel_as_the_processor_of_either_kind(make_pool, name, kind):
    pool = make_pool(2, kernel(name), workers=kind)
    ops = (3, 4, 5)[:ARITY[name]]
    want = OPS[name](*ops)
    assert pool.run(ops).result(timeout=WAIT) == want
    rec = Recorder(1)
    pool.run_task(as_dict(ops), rec.callback)
    assert rec.wait() == [(None, want)]
    # another kernel through submit, whatever the processor
    assert pool.submit(kernels.add, (1, 2)).result(timeout=WAIT) == 3


# -- map(kernel, items) ----------------------------------------------------------------

def mixed_items(name, n):
    n_ops = ARITY[name]
    kinds = [
        lambda i: (i, -2 * i, 3)[:n_ops],
        lambda i: (i * 0.5, i, 0.25)[:n_ops],
        lambda i: (True, i, False)[:n_ops],
        lambda i: as_dict((i, 0.25, i)[:n_ops]),
        lambda i: (I64_MAX, i + 2, I64_MAX)[:n_ops],     # the result leaves int64
        lambda i: (-(2**70) - i, 1, 1)[:n_ops],          # an operand beyond int64
        lambda i: (3, 2**62, I64_MIN + i)[:n_ops],       # fma: the product leaves int64, the result not
    ]
    return [kinds[(i * 7 + i // 3) % len(kinds)](i) for i in range(n)]


@pytest.fixture(params=[1, 2, 8], ids=lambda n: f"cpus{n}")
def cpus(request, monkeypatch):
    """As many CPUs as the native map may use (it takes one fewer helpers)."""
    monkeypatch.setattr(fastpool.pool, "_usable_cpus", lambda: request.param)
    return request.param


@pytest.mark.parametrize("n", [1, 2049, 70_000])
def test_native_map_is_the_kernel_on_each_item_in_order(make_pool, name, kind, cpus, n):
    pool = make_pool(2, workers=kind)
    items = mixed_items(name, n)
    k = kernel(name)
    assert list(pool.map(k, items)) == [k(t) for t in items]


def test_native_map_raises_at_a_bad_item_with_the_kernels_error(make_pool, name):
    pool = make_pool(2)
    good = (1,) * ARITY[name]
    it = pool.map(kernel(name), [good] * 50_000 + [(1, "x", 1)[:ARITY[name]]] + [good] * 10)
    assert sum(1 for _ in zip(range(50_000), it)) == 50_000
    with pytest.raises(TypeError, match=f"^{name} kernel: 'b' must be an int"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_executor_map_takes_every_kernel(name):
    k = kernel(name)
    items = [(i, i + 1, i + 2)[:ARITY[name]] for i in range(5000)]
    with fastpool.ThreadPoolExecutor(2) as ex:
        assert list(ex.map(k, items)) == [OPS[name](*t) for t in items]
        assert ex.submit(k, items[3]).result(timeout=WAIT) == OPS[name](*items[3])
