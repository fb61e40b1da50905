"""fastpool.kernels.cfunc: a C function as a kernel.

Each signature against Python's arithmetic on random operands, on every
path (called directly, run_task, run, submit, map) and worker kind; the
task forms of the built-ins (mappings, tuples, arrays with "out"); the
errors (bad signatures, null and foreign addresses, wrong arities, a
library or symbol that does not exist, an address in a process pool), each
clear and never a crash; and a slow C function that runs while the
caller's Python code goes on.

The C functions are compiled here, into a small library, with the
system's C compiler.
"""
from __future__ import annotations

import ctypes
import math
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
import time
import types
from array import array
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpool
from fastpool import kernels
from _support import WAIT, Recorder, assert_same_number, outcome

PATHS = ("direct", "run_task", "run", "submit", "map")
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

C_SOURCE = r"""
#include <stdint.h>
#include <time.h>

double add(double a, double b) { return a + b; }
double muladd(double a, double b, double c) { return a * b + c; }
int64_t isub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
int64_t imix(int64_t a, int64_t b, int64_t c) { return (int64_t)((uint64_t)a * 3u + (uint64_t)b - (uint64_t)c); }
int64_t cmp(double a, double b) { return (a > b) - (a < b); }
double half_diff(int64_t a, int64_t b) { return (double)a * 0.5 - (double)b; }
double one(double a) { return a; }
int answer = 42;

/* The same as loops over n elements (kernels.cfunc(..., loop=True)). */
void add_loop(char **args, int64_t n, void *data) {
    const double *a = (const double *)args[0], *b = (const double *)args[1];
    double *out = (double *)args[2];
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void imix_loop(char **args, int64_t n, void *data) {
    const int64_t *a = (const int64_t *)args[0], *b = (const int64_t *)args[1], *c = (const int64_t *)args[2];
    int64_t *out = (int64_t *)args[3];
    for (int64_t i = 0; i < n; i++)
        out[i] = imix(a[i], b[i], c[i]);
}

/* hold(a, b): counts itself in, then spins until release() (or 10 s: -1). */
static int started_count, go;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

double hold(double a, double b) {
    double deadline = now() + 10.0;
    __atomic_add_fetch(&started_count, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST))
        if (now() > deadline)
            return -1.0;
    return a + b;
}

int started(void) { return __atomic_load_n(&started_count, __ATOMIC_SEQ_CST); }
void release(void) { __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST); }
void reset(void) { started_count = 0; go = 0; }
"""


@pytest.fixture(scope="session")
def clib(tmp_path_factory):
    """The path of the compiled library."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    d = tmp_path_factory.mktemp("clib")
    src, lib = d / "fp_test_funcs.c", d / "libfp_test_funcs.so"
    src.write_text(C_SOURCE)
    # -ffp-contract=off: a * b + c rounds twice, as Python computes it
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib), str(src)],
                   check=True, timeout=120)
    return str(lib)


def wrap64(v):
    return ((v + 2**63) % 2**64) - 2**63


def as_f8(x):
    if isinstance(x, float):
        return x
    try:
        return float(x)
    except OverflowError:
        raise OverflowError("too large to convert to a float") from None


def as_i8(x):
    if isinstance(x, float):
        raise TypeError("must be an int")
    if not I64_MIN <= x <= I64_MAX:
        raise OverflowError("does not fit int64")
    return int(x)


# name -> (signature, Python's computation on the converted operands, operand conversion)
FUNCS = {
    "add": ("f8(f8,f8)", lambda a, b: a + b, as_f8),
    "muladd": ("f8(f8,f8,f8)", lambda a, b, c: a * b + c, as_f8),
    "isub": ("i8(i8,i8)", lambda a, b: wrap64(a - b), as_i8),
    "imix": ("i8(i8,i8,i8)", lambda a, b, c: wrap64(a * 3 + b - c), as_i8),
    "cmp": ("i8(f8,f8)", lambda a, b: (a > b) - (a < b), as_f8),
    "half_diff": ("f8(i8,i8)", lambda a, b: a * 0.5 - b, as_i8),
}


def arity(name):
    return FUNCS[name][0].count(",") + 1


def python(name, ops):
    """(err, result) as the kernel must give it: an error's type, or the number."""
    _, fn, convert = FUNCS[name]
    try:
        return None, fn(*[convert(x) for x in ops])
    except (TypeError, OverflowError) as e:
        return e, None


def assert_outcome(name, got, expected):
    (err, result), (want_err, want) = got, expected
    if want_err is not None:
        assert type(err) is type(want_err), (err, want_err)
        assert str(err).startswith(f"{name} kernel: "), err
        assert result is None
    else:
        assert err is None, err
        assert_same_number(result, want)


@pytest.fixture(params=list(FUNCS))
def name(request):
    return request.param


def kernel_of(clib, name):
    return kernels.cfunc((clib, name), FUNCS[name][0])


def as_dict(ops):
    return dict(zip("abc", ops))


def through(path, pool, k, task, n):
    """(err, result) of kernel k on task, run one way."""
    if path == "direct":
        return outcome(k, task)
    if path == "run_task":
        rec = Recorder(1)
        pool.run_task(task, rec.callback)
        [(err, result)] = rec.wait()
        return err, result
    if path == "map":
        it = pool.map(k, [(1,) * n, task])
        assert next(it) == k((1,) * n)
        return outcome(next, it)
    fut = pool.run(task) if path == "run" else pool.submit(k, task)
    err = fut.exception(timeout=WAIT)
    return err, None if err is not None else fut.result()


# -- numbers: each signature against Python ----------------------------------------

ints = st.one_of(st.integers(min_value=I64_MIN, max_value=I64_MAX),
                 st.integers(min_value=-(2**70), max_value=2**70),
                 st.sampled_from([0, 1, -1, I64_MAX, I64_MIN, 2**53 + 1, 2**63, I64_MIN - 1, 2**1100]))
operands = st.one_of(ints, st.floats(), st.booleans())


def test_direct_calls_match_python_on_random_operands(clib, name):
    k = kernel_of(clib, name)
    n = arity(name)

    @settings(max_examples=500, deadline=None)
    @given(ops=st.tuples(*[operands] * n))
    def check(ops):
        expected = python(name, ops)
        assert_outcome(name, outcome(k, ops), expected)
        assert_outcome(name, outcome(k, as_dict(ops)), expected)

    check()


def test_pools_match_python_on_random_operands(make_pool, clib, name, kind):
    k = kernel_of(clib, name)
    n = arity(name)
    pool = make_pool(2, k, workers=kind, ring_size=4)     # most tasks wait in the FIFO

    @settings(max_examples=40 if kind == "process" else 100, deadline=None)
    @given(batch=st.lists(st.tuples(*[operands] * n), min_size=1, max_size=20))
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
                assert_outcome(name, (err, None if err else fut.result()), want)
            [got] = rec.by_key[i]
            assert_outcome(name, got, want)
        mapped = pool.map(k, batch)
        for want in expected:
            got = outcome(next, mapped)
            assert_outcome(name, got, want)
            if got[0] is not None:
                break       # map stops at the first error

    check()


def test_numpy_scalars_are_converted_or_refused(clib):
    np = pytest.importorskip("numpy")
    add = kernel_of(clib, "add")
    isub = kernel_of(clib, "isub")
    assert add((np.float32(0.1), np.int64(3))) == float(np.float32(0.1)) + 3.0
    assert add((np.longdouble(2.5), np.bool_(True))) == 3.5
    assert isub((np.int64(I64_MIN), np.uint8(1))) == I64_MAX       # wraps, as the C function does
    assert isub((np.bool_(True), np.int32(-2))) == 3
    with pytest.raises(TypeError, match=r"^isub kernel: 'a' must be an int \(i8\(i8,i8\) takes int64"):
        isub((np.float64(1.0), 2))
    with pytest.raises(OverflowError, match=r"^isub kernel: 'b' does not fit int64"):
        isub((1, np.uint64(2**63)))


# -- task forms ---------------------------------------------------------------------

FORMS = {
    "dict": as_dict,
    "dict-with-more-keys": lambda ops: {**as_dict(ops), "note": "ignored"},
    "OrderedDict": lambda ops: OrderedDict(as_dict(ops)),
    "MappingProxyType": lambda ops: types.MappingProxyType(as_dict(ops)),
    "tuple": tuple,
}


@pytest.mark.parametrize("form", FORMS)
def test_every_task_form_on_every_path_and_kind(make_pool, clib, name, kind, form):
    k = kernel_of(clib, name)
    n = arity(name)
    pool = make_pool(2, k, workers=kind)
    for case in [(7, -3, 5), (2**62, 2**62, 1), (0.5, 3, 0.25), (True, -1, I64_MIN)]:
        ops = case[:n]
        for path in PATHS:
            assert_outcome(name, through(path, pool, k, FORMS[form](ops), n), python(name, ops))


def random_operand_array(np, rng, code, size):
    if code == "f8":
        x = rng.standard_normal(size) * 10.0 ** rng.integers(-5, 5, size)
        if size:
            x[rng.integers(0, size, size // 50 + 1)] = np.nan
        return x
    return rng.integers(I64_MIN, I64_MAX, size, dtype=np.int64, endpoint=True)


def numpy_reference(np, name, ops):
    sig = FUNCS[name][0]
    result = np.float64 if sig.startswith("f8") else np.int64
    _, fn, _ = FUNCS[name]
    return np.array([fn(*(x.item() for x in row)) for row in zip(*ops)], dtype=result)


@pytest.mark.parametrize("size", [0, 1, 5, 70_001])
def test_arrays_split_across_workers_match_python(make_pool, clib, name, size):
    np = pytest.importorskip("numpy")
    k = kernel_of(clib, name)
    sig = FUNCS[name][0]
    in_code = sig[sig.index("(") + 1:][:2]
    rng = np.random.default_rng([size, list(FUNCS).index(name)])
    ops = [random_operand_array(np, rng, in_code, size) for _ in range(arity(name))]
    want = numpy_reference(np, name, ops)
    pool = make_pool(4, k)          # 70_001 elements: several chunks
    for path in ("direct", "run", "submit", "run_task"):
        err, got = through(path, pool, k, tuple(ops), arity(name))
        assert err is None, err
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    out = np.empty_like(want)
    assert pool.run({**as_dict(ops), "out": out}).result(timeout=WAIT) is out
    np.testing.assert_array_equal(out, want)
    if want.dtype == ops[0].dtype:      # in place, into an operand
        target = ops[0].copy()
        assert pool.run({**as_dict([target] + ops[1:]), "out": target}).result(timeout=WAIT) is target
        np.testing.assert_array_equal(target, want)


def test_array_array_operands_and_results(make_pool, clib):
    pool = make_pool(2)
    got = pool.submit(kernel_of(clib, "cmp"), (array("d", [1.0, 2.0, 3.0]), array("d", [2.0, 2.0, 1.0])))
    got = got.result(timeout=WAIT)
    assert isinstance(got, array) and got.typecode == "q" and list(got) == [-1, 0, 1]
    got = pool.submit(kernel_of(clib, "isub"), (array("q", [5, I64_MIN]), array("q", [7, 1])))
    assert list(got.result(timeout=WAIT)) == [-2, I64_MAX]


def test_array_element_types_are_the_signatures(make_pool, clib):
    np = pytest.importorskip("numpy")
    pool = make_pool(2)
    add, isub, cmp = kernel_of(clib, "add"), kernel_of(clib, "isub"), kernel_of(clib, "cmp")
    cases = [
        (add, (np.ones(3, np.float32), np.ones(3, np.float32)), TypeError,
         "add kernel: 'a' has element type 'f'; the add kernel takes arrays of float64 (f8(f8,f8))"),
        (isub, (np.ones(3, np.uint64), np.ones(3, np.uint64)), TypeError,
         "isub kernel: 'a' has element type 'L'; the isub kernel takes arrays of int64 (i8(i8,i8))"),
        (add, (np.ones(3), np.ones(3, np.int64)), TypeError, "'a' and 'b' have different element types"),
        (cmp, {"a": np.ones(3), "b": np.ones(3), "out": np.ones(3)}, TypeError,
         "cmp kernel: 'out' has element type 'd'; the cmp kernel makes int64 (i8(f8,f8))"),
        (add, (np.ones(3), 1.0), TypeError, "'a' is an array, so 'b' must be one too"),
        (add, (np.ones(3), np.ones(4)), ValueError, "'a' and 'b' differ in length (3 != 4)"),
    ]
    for k, task, error, says in cases:
        err = pool.submit(k, task).exception(timeout=WAIT)
        assert isinstance(err, error) and says in str(err), (task, err)


def test_array_tasks_in_a_process_pool_are_a_clear_error(make_pool, clib):
    np = pytest.importorskip("numpy")
    k = kernel_of(clib, "add")
    pool = make_pool(1, k, workers="process")
    err = pool.run((np.ones(4), np.ones(4))).exception(timeout=WAIT)
    assert isinstance(err, TypeError) and "a process pool's add kernel takes numbers" in str(err)
    assert pool.run((1, 2)).result(timeout=WAIT) == 3.0


# -- the forms of a function ----------------------------------------------------------

def test_every_form_of_a_function_gives_a_kernel(make_pool, clib):
    lib = ctypes.CDLL(clib)
    address = ctypes.cast(lib.add, ctypes.c_void_p).value
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)
    forms = {
        "pair": (clib, "add"),
        "path pair": (os.fsencode(clib), "add"),
        "int": address,
        "ctypes prototype": proto(address),
        "ctypes function of a library": lib.add,
    }
    pool = make_pool(2)
    for what, fn in forms.items():
        k = kernels.cfunc(fn, "f8(f8,f8)")
        assert isinstance(k, kernels.Kernel) and k.signature == "f8(f8,f8)" and k.nops == 2, what
        assert k((1.5, 2)) == 3.5, what
        assert pool.submit(k, (1, 2)).result(timeout=WAIT) == 3.0, what
        assert list(pool.map(k, [(1, 2), (0.5, 0.25)])) == [3.0, 0.75], what
        assert kernels.cfunc(fn, " f8 ( f8, f8 ) ") is k, what    # the same function: the same kernel
    # a library's function carries its library and symbol: it pickles
    # and reaches worker processes; a bare address does neither
    assert kernels.cfunc(lib.add, "f8(f8,f8)") is kernels.cfunc((clib, "add"), "f8(f8,f8)")
    assert pickle.loads(pickle.dumps(kernels.cfunc((clib, "add"), "f8(f8,f8)"))) is kernels.cfunc(
        (clib, "add"), "f8(f8,f8)")
    with pytest.raises(TypeError, match="made from an address, which means nothing in another process"):
        pickle.dumps(kernels.cfunc(address, "f8(f8,f8)"))


def test_a_cfunc_kernel_as_the_processor_of_either_kind(make_pool, clib, kind):
    k = kernel_of(clib, "muladd")
    pool = make_pool(2, k, workers=kind)
    assert pool.run((2, 3, 4)).result(timeout=WAIT) == 10.0
    rec = Recorder(1)
    pool.run_task({"a": 0.5, "b": 4, "c": -1}, rec.callback)
    assert rec.wait() == [(None, 1.0)]
    assert pool.submit(kernels.add, (1, 2)).result(timeout=WAIT) == 3      # a built-in beside it
    assert pool.submit(kernel_of(clib, "isub"), (1, 2)).result(timeout=WAIT) == -1


def test_executor_map_and_submit_take_a_cfunc_kernel(clib):
    k = kernel_of(clib, "isub")
    items = [(i, 2 * i) for i in range(5000)]
    with fastpool.ThreadPoolExecutor(2) as ex:
        assert list(ex.map(k, items)) == [-i for i in range(5000)]
        assert ex.submit(k, (9, 4)).result(timeout=WAIT) == 5
    with fastpool.ProcessPoolExecutor(1) as ex:
        assert ex.submit(k, (9, 4)).result(timeout=WAIT) == 5
        assert list(ex.map(k, items[:50])) == [-i for i in range(50)]


def test_native_map_raises_at_an_item_a_typed_kernel_does_not_take(make_pool, clib):
    # The helpers compute the plain items without the GIL; an item of
    # floats for int64 operands is left to the kernel, which raises there.
    isub = kernel_of(clib, "isub")
    pool = make_pool(2)
    items = [(i, 1) for i in range(10_000)] + [(1.5, 1)] + [(1, 1)] * 10
    it = pool.map(isub, items)
    assert [next(it) for _ in range(10_000)] == [i - 1 for i in range(10_000)]
    with pytest.raises(TypeError, match=r"^isub kernel: 'a' must be an int \(i8\(i8,i8\) takes int64"):
        next(it)
    half_diff = kernel_of(clib, "half_diff")
    assert list(pool.map(half_diff, [(3, 1), (True, 2)] * 3000)) == [0.5, -1.5] * 3000


@pytest.mark.parametrize("name", ["add", "imix"])
def test_a_loop_computes_what_its_function_does(make_pool, clib, kind, name):
    np = pytest.importorskip("numpy")
    sig = FUNCS[name][0]
    k = kernels.cfunc((clib, f"{name}_loop"), sig, loop=True)
    assert k is not kernel_of(clib, name) and k.signature == sig
    n = arity(name)
    pool = make_pool(2, k, workers=kind)
    cases = [(7, -3, 5), (2**62, 2**62, 1), (True, -1, I64_MIN), (0.5, 3, 0.25), (2**70, 1, 1)]
    for case in cases:
        ops = case[:n]
        for path in PATHS:
            assert_outcome(f"{name}_loop", through(path, pool, k, ops, n), python(name, ops))
    assert pickle.loads(pickle.dumps(k)) is k
    if kind == "thread":
        rng = np.random.default_rng(11)
        ops = [random_operand_array(np, rng, sig[sig.index("(") + 1:][:2], 70_001) for _ in range(n)]
        np.testing.assert_array_equal(pool.run(tuple(ops)).result(timeout=WAIT), numpy_reference(np, name, ops))


def test_a_loop_prototype_must_be_a_loops(clib):
    lib = ctypes.CDLL(clib)
    address = ctypes.cast(lib.add_loop, ctypes.c_void_p).value
    loop = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int64, ctypes.c_void_p)
    assert kernels.cfunc(loop(address), "f8(f8,f8)", loop=True)((1, 2)) == 3.0
    d2 = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)
    with pytest.raises(ValueError, match=r"^cfunc: a loop is void \(char \*\*args, int64 n, void \*data\), "
                                         r"not c_double \(c_double, c_double\)"):
        kernels.cfunc(d2(address), "f8(f8,f8)", loop=True)

# -- errors: clear, at cfunc() or for the task, never a crash ----------------------------

def test_bad_functions_are_clear_errors_at_cfunc(clib):
    lib = ctypes.CDLL(clib)
    add_address = ctypes.cast(lib.add, ctypes.c_void_p).value
    data = ctypes.c_double(1.0)
    d2 = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)
    cases = [
        (0, ValueError, "cfunc: address 0 is NULL"),
        (-5, ValueError, "is not an address"),
        (2**64, ValueError, "is not an address"),
        (4096, ValueError, "is not mapped in this process: not a function"),
        (ctypes.addressof(data), ValueError, "is in memory that is not executable"),
        (ctypes.cast(ctypes.pointer(data), ctypes.c_void_p).value, ValueError, "not executable"),
        ((clib, "answer"), ValueError, "symbol 'answer' of"),       # data, not code
        (("/nonexistent/libnothing.so", "f"), ValueError, "cfunc: cannot load library '/nonexistent/libnothing.so'"),
        (("libfastpool-no-such-library.so", "f"), ValueError, "cannot load library"),
        ((clib, "no_such_symbol"), ValueError, "has no symbol 'no_such_symbol'"),
        ((clib,), TypeError, "a (library_path, symbol) pair, not a 1-tuple"),
        ((clib, "add", "x"), TypeError, "not a 3-tuple"),
        ((3, "add"), TypeError, "library_path must be a str or a path"),
        ((clib, b"add"), TypeError, "symbol must be a str"),
        ("add", TypeError, "cfunc: fn must be an int address, a ctypes function pointer"),
        (True, TypeError, "not bool"),
        (None, TypeError, "not NoneType"),
        (d2(lambda a, b: a + b), TypeError, "made from a Python callable"),
        (ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(add_address), ValueError,
         "the function takes 1 argument (c_double); the signature f8(f8,f8) has 2"),
        (ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double)(add_address),
         ValueError, "takes 3 arguments"),
        (ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_float)(add_address), ValueError,
         "argument 2 of the function is c_float, the signature f8(f8,f8) says f8"),
        (ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, ctypes.c_double)(add_address), ValueError,
         "the function returns c_int, the signature f8(f8,f8) says f8"),
        (ctypes.CFUNCTYPE(None, ctypes.c_double, ctypes.c_double)(add_address), ValueError,
         "returns void"),
    ]
    for fn, error, says in cases:
        with pytest.raises(error) as info:
            kernels.cfunc(fn, "f8(f8,f8)")
        assert says in str(info.value), (fn, info.value)
        assert str(info.value).startswith("cfunc: "), info.value


@pytest.mark.parametrize("signature, says", [
    ("f4(f4,f4)", "unsupported type 'f4'"),
    ("f8(f8)", "1 operand; a kernel takes 2 or 3"),
    ("f8(f8,f8,f8,f8)", "4 operands; a kernel takes 2 or 3"),
    ("f8()", "unsupported type ''"),
    ("f8(f8,i8)", "the operands must be of one type"),
    ("f8 f8", "is not RESULT(OPERAND,OPERAND[,OPERAND])"),
    ("f8(f8,f8", "is not RESULT"),
    ("", "is not RESULT"),
])
def test_bad_signatures_are_clear_errors(clib, signature, says):
    with pytest.raises(ValueError) as info:
        kernels.cfunc((clib, "add"), signature)
    assert str(info.value).startswith(f"cfunc: signature {signature!r}"), info.value
    assert says in str(info.value)


def test_a_signature_must_be_a_str(clib):
    with pytest.raises(TypeError, match=r"^cfunc: signature must be a str such as 'f8\(f8,f8\)', not NoneType"):
        kernels.cfunc((clib, "add"), None)


@pytest.mark.parametrize("path", PATHS)
def test_bad_tasks_are_clear_errors_for_their_own_task(make_pool, clib, kind, path):
    add, isub = kernel_of(clib, "add"), kernel_of(clib, "isub")
    pools = {k: make_pool(1, k, workers=kind) for k in (add, isub)}   # run and run_task use the processor
    cases = [
        (add, {"a": 1}, KeyError, "add kernel: task is missing key 'b'"),
        (add, (1, 2, 3), ValueError, "add kernel: a tuple task must be a 2-tuple"),
        (add, [1, 2], TypeError, "add kernel: task must be a mapping with keys 'a' and 'b' or a 2-tuple"),
        (add, ("x", 1), TypeError, "add kernel: 'a' must be an int, a float or a numeric buffer, not str"),
        (add, (2**1024, 1), OverflowError, "add kernel: 'a' is too large to convert to a float"),
        (add, {"a": 1, "b": 2, "out": array("d", [0.0])}, TypeError, "add kernel: 'out' is for array tasks"),
        (isub, (1.0, 2), TypeError, "isub kernel: 'a' must be an int (i8(i8,i8) takes int64 operands), not float"),
        (isub, (1, 2**63), OverflowError, "isub kernel: 'b' does not fit int64 (i8(i8,i8) takes int64 operands)"),
        (isub, (1, I64_MIN - 1), OverflowError, "isub kernel: 'b' does not fit int64"),
    ]
    for k, task, error, says in cases:
        err, result = through(path, pools[k], k, task, 2)
        assert isinstance(err, error), (task, err)
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        assert message.startswith(says), (message, says)
        assert result is None
    assert through(path, pools[add], add, (1, 2), 2) == (None, 3.0)     # and the pools go on
    assert through(path, pools[isub], isub, (1, 2), 2) == (None, -1)


def test_an_address_cannot_reach_a_process_pool(make_pool, clib):
    address = ctypes.cast(ctypes.CDLL(clib).add, ctypes.c_void_p).value
    k = kernels.cfunc(address, "f8(f8,f8)")
    pool = make_pool(1, workers="process")
    err = pool.submit(k, (1, 2)).exception(timeout=WAIT)
    assert isinstance(err, ValueError)
    assert str(err) == (f"the 0x{address:x} kernel cannot run in worker processes: it was made from "
                        "an address, which means nothing in another process; make it from "
                        "(library_path, symbol) to run it in a process pool")
    rec = Recorder(1)
    fastpool.WorkerPool.run_task(pool, {"a": 1, "b": 2}, rec.callback)   # the pool's processor: add
    assert rec.wait() == [(None, 3)]
    # map runs in the calling process, where the address means what it says
    assert list(pool.map(k, [(1, 2)])) == [3.0]
    with pytest.raises(ValueError, match="processor: the .* kernel cannot run in worker processes: it was "
                                         "made from an address"):
        fastpool.WorkerPool(1, k, workers="process")
    # the pair runs there
    assert pool.submit(kernels.cfunc((clib, "add"), "f8(f8,f8)"), (1, 2)).result(timeout=WAIT) == 3.0


def test_a_library_a_worker_process_cannot_load_fails_its_tasks(make_pool, clib, tmp_path):
    # The library loads here, then is gone before a worker process loads it.
    copy = tmp_path / "libfp_gone.so"
    shutil.copy(clib, copy)
    k = kernels.cfunc((str(copy), "add"), "f8(f8,f8)")
    copy.unlink()
    pool = make_pool(1, workers="process")
    for _ in range(2):      # the worker remembers it could not, and says so each time
        err = pool.submit(k, (1, 2)).exception(timeout=WAIT)
        assert isinstance(err, RuntimeError)
        assert str(err).startswith("add kernel: a worker process could not load it (ValueError: cfunc: "
                                   f"cannot load library {str(copy)!r}"), err
    assert pool.submit(kernels.add, (1, 2)).result(timeout=WAIT) == 3       # and it goes on
    assert pool.submit(kernel_of(clib, "add"), (1, 2)).result(timeout=WAIT) == 3.0


# -- without the GIL ----------------------------------------------------------------------

def test_a_slow_c_function_runs_while_the_callers_python_code_does(make_pool, clib):
    # Two `hold` calls start and spin until the caller, after a stretch of
    # Python code of its own, releases them: only possible if neither holds
    # the GIL, and if they run at once.
    lib = ctypes.CDLL(clib)
    lib.reset()
    hold = kernels.cfunc((clib, "hold"), "f8(f8,f8)")
    pool = make_pool(2, hold)
    futs = [pool.run((1.0, 2.0)), pool.submit(hold, (3.0, 4.0))]
    deadline = time.monotonic() + WAIT
    while lib.started() < 2:
        assert time.monotonic() < deadline, f"{lib.started()} of 2 calls started"
    counter = 0
    while counter < 200_000:        # the caller's Python code, while both spin
        counter += 1
    assert lib.started() == 2
    lib.release()
    assert [f.result(timeout=WAIT) for f in futs] == [3.0, 7.0]     # -1.0: a call gave up waiting


# -- numba's @cfunc (an optional test dependency) --------------------------------------------

def test_numba_cfuncs_are_kernels(make_pool):
    numba = pytest.importorskip("numba")
    np = pytest.importorskip("numpy")

    @numba.cfunc("float64(float64, float64)")
    def hyp(a, b):
        return math.sqrt(a * a + b * b)

    @numba.cfunc("int64(int64, int64)")
    def imax(a, b):
        return a if a > b else b

    @numba.cfunc("float64(float64)")
    def unary(a):
        return a

    k = kernels.cfunc(hyp, "f8(f8,f8)")
    assert k((3, 4)) == 5.0
    assert kernels.cfunc(hyp, "f8(f8,f8)") is k
    pool = make_pool(2)
    assert pool.submit(k, {"a": 5, "b": 12}).result(timeout=WAIT) == 13.0
    x = np.arange(100_000, dtype=np.float64)
    np.testing.assert_array_equal(pool.submit(k, (x, x)).result(timeout=WAIT), np.sqrt(x * x + x * x))
    assert list(pool.map(kernels.cfunc(imax, "i8(i8,i8)"), [(1, 2), (-3, -4)])) == [2, -3]
    with pytest.raises(ValueError, match="cfunc: the function takes 1 argument"):
        kernels.cfunc(unary, "f8(f8,f8)")
    with pytest.raises(ValueError, match="argument 1 of the function is c_double, the signature i8"):
        kernels.cfunc(hyp, "i8(i8,i8)")
    procs = make_pool(1, workers="process")
    err = procs.submit(k, (3, 4)).exception(timeout=WAIT)
    assert isinstance(err, ValueError) and "made from an address" in str(err)


# -- the kernel table -------------------------------------------------------------------------

def test_a_full_kernel_table_is_a_clear_error(clib):
    # In a process of its own: every kernel made keeps its entry.
    script = f"""
import ctypes
from fastpool import kernels
add = ctypes.cast(ctypes.CDLL({clib!r}).add, ctypes.c_void_p).value
code = ctypes.cast(ctypes.CDLL("libc.so.6").printf, ctypes.c_void_p).value
made = [kernels.cfunc(add, "f8(f8,f8)")]
try:
    for i in range(300):
        made.append(kernels.cfunc(code + i, "f8(f8,f8)"))   # addresses in libc's code, never called
except ValueError as e:
    print(len(made), e)
print(kernels.cfunc(add, "f8(f8,f8)") is made[0], made[0]((1, 2)))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.stderr == ""
    first, second = proc.stdout.splitlines()
    n = int(first.split()[0])
    assert 200 < n < 256
    assert first.endswith(": the table holds 256 kernels, each for the life of the process")
    assert "no room for kernel" in first
    assert second == "True 3.0"


def test_the_kernels_module_lists_cfunc_and_mandelbrot():
    assert {"cfunc", "mandelbrot", "MANDELBROT_LIMIT"} <= set(kernels.__all__)
    assert repr(kernels.mandelbrot) == "<fastpool kernel 'mandelbrot' i8(f8,f8)>"
    assert kernels.add.signature is None and kernels.mandelbrot.signature == "i8(f8,f8)"
