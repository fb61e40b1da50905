"""Workloads 5c and 5d, kernels of their own: the compute-bound mandelbrot
kernel with 2 workers against 1 and against numpy; and a C function as a
kernel (cfunc, called once per element) against the built-in add on the
same arrays."""
import pytest

pytest.importorskip("numpy")

from workloads import CfuncArrays, Mandelbrot, slug  # noqa: E402


@pytest.mark.parametrize("contender", list(Mandelbrot.contenders), ids=slug)
def test_mandelbrot(bench, contender):
    bench(Mandelbrot, contender)


@pytest.mark.parametrize("contender", list(CfuncArrays.contenders), ids=slug)
def test_cfunc_arrays(bench, contender):
    bench(CfuncArrays, contender)
