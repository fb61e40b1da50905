"""The built-in mandelbrot kernel (i8(f8,f8)): the escape count of the point
(a, b), as the same steps compute it in Python, on every path and worker
kind, over numbers and float64 arrays."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpool import kernels
from _support import WAIT, Recorder, outcome

LIMIT = kernels.MANDELBROT_LIMIT


def escape(x, y):
    """The kernel's steps in Python: each operation rounded once, as there."""
    x, y = float(x), float(y)
    zr = zi = 0.0
    for n in range(LIMIT):
        zr2, zi2 = zr * zr, zi * zi
        if zr2 + zi2 > 4.0:
            return n
        zi = 2.0 * zr * zi + y
        zr = zr2 - zi2 + x
    return LIMIT


def escape_numpy(np, x, y):
    """The same steps elementwise over arrays (what the benchmark's numpy
    contender computes)."""
    zr, zi = np.zeros_like(x), np.zeros_like(x)
    count = np.full(x.shape, LIMIT, dtype=np.int64)
    active = np.ones(x.shape, dtype=bool)
    with np.errstate(all="ignore"):
        for n in range(LIMIT):
            zr2, zi2 = zr * zr, zi * zi
            out = active & (zr2 + zi2 > 4.0)
            count[out] = n
            active &= ~out
            zi = 2.0 * zr * zi + y
            zr = zr2 - zi2 + x
    return count


def test_known_points():
    assert LIMIT == 256
    assert kernels.mandelbrot((0, 0)) == LIMIT                  # in the set
    assert kernels.mandelbrot((-1, 0)) == LIMIT
    assert kernels.mandelbrot((2, 2)) == 1
    assert kernels.mandelbrot({"a": 0.5, "b": 0.5}) == escape(0.5, 0.5) == 5
    assert kernels.mandelbrot((float("nan"), 0)) == LIMIT       # never > 2: NaN compares false
    assert kernels.mandelbrot((float("inf"), 0)) == 1


coords = st.one_of(st.floats(min_value=-2.5, max_value=1.5), st.floats(), st.integers(-3, 3),
                   st.integers(-(2**70), 2**70), st.booleans())


def test_direct_calls_match_python_on_random_points():
    @settings(max_examples=500, deadline=None)
    @given(x=coords, y=coords)
    def check(x, y):
        assert kernels.mandelbrot((x, y)) == escape(x, y)

    check()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_pools_match_python_on_random_points(make_pool, kind):
    pool = make_pool(2, kernels.mandelbrot, workers=kind, ring_size=4)

    @settings(max_examples=30, deadline=None)
    @given(points=st.lists(st.tuples(coords, coords), min_size=1, max_size=20))
    def check(points):
        want = [escape(x, y) for x, y in points]
        futs = [pool.run({"a": x, "b": y}) for x, y in points]
        subs = [pool.submit(kernels.mandelbrot, p) for p in points]
        rec = Recorder(len(points))
        for i, p in enumerate(points):
            pool.run_task(p, rec.keyed(i))
        rec.wait()
        assert [f.result(timeout=WAIT) for f in futs] == want
        assert [f.result(timeout=WAIT) for f in subs] == want
        assert [rec.by_key[i] for i in range(len(points))] == [[(None, w)] for w in want]
        assert list(pool.map(kernels.mandelbrot, points)) == want

    check()


def test_a_point_too_far_for_a_float_is_its_tasks_error(make_pool):
    pool = make_pool(1, kernels.mandelbrot)
    err = pool.run((2**1024, 0)).exception(timeout=WAIT)
    assert isinstance(err, OverflowError)
    assert str(err) == "mandelbrot kernel: 'a' is too large to convert to a float (i8(f8,f8) takes doubles)"
    err, _ = outcome(kernels.mandelbrot, ("0", 0))
    assert isinstance(err, TypeError) and str(err).startswith("mandelbrot kernel: 'a' must be an int, a float")


def test_arrays_split_across_workers_match_python_and_numpy(make_pool):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(5)
    n = 60_001
    x = rng.uniform(-2.2, 0.8, n)
    y = rng.uniform(-1.3, 1.3, n)
    x[:4] = [np.nan, np.inf, -0.0, 0.25]
    want = escape_numpy(np, x, y)
    some = rng.integers(0, n, 300)
    assert [escape(x[i], y[i]) for i in some] == list(want[some])
    pool = make_pool(4, kernels.mandelbrot)
    got = pool.run((x, y)).result(timeout=WAIT)
    assert got.dtype == np.int64 and got.shape == (n,)
    np.testing.assert_array_equal(got, want)
    out = np.full((3, n // 3), -1, dtype=np.int64)
    grid = (x[:out.size].reshape(out.shape), y[:out.size].reshape(out.shape))
    assert pool.submit(kernels.mandelbrot, {"a": grid[0], "b": grid[1], "out": out}).result(timeout=WAIT) is out
    np.testing.assert_array_equal(out.ravel(), want[:out.size])
    np.testing.assert_array_equal(kernels.mandelbrot((x, y)), want)


def test_arrays_are_float64_and_the_result_int64(make_pool):
    np = pytest.importorskip("numpy")
    pool = make_pool(1, kernels.mandelbrot)
    err = pool.run((np.zeros(3, np.float32), np.zeros(3, np.float32))).exception(timeout=WAIT)
    assert isinstance(err, TypeError)
    assert str(err) == ("mandelbrot kernel: 'a' has element type 'f'; the mandelbrot kernel takes "
                        "arrays of float64 (i8(f8,f8))")
    err = pool.run({"a": np.zeros(3), "b": np.zeros(3), "out": np.zeros(3)}).exception(timeout=WAIT)
    assert isinstance(err, TypeError)
    assert str(err) == "mandelbrot kernel: 'out' has element type 'd'; the mandelbrot kernel makes int64 (i8(f8,f8))"
