"""Native kernels.

The built-in ones: `add` (a + b), `mul` (a * b) and `fma` (a * b + c).  A
task is a mapping with keys "a", "b" (and "c") or a tuple of the operands:
numbers give Python's own result (ints exact at any size), equal-shape
arrays of one element type give numpy's elementwise result, into an
optional "out".  A pool runs native kernels in its worker threads without
the GIL; called directly, a kernel computes the task in the calling thread:
`add({"a": 1, "b": 2}) == 3`.

Typed kernels take their operands as a signature says ("i8(f8,f8)": two
doubles in, an int64 out): `mandelbrot` (the escape count of the point
(a, b), at most MANDELBROT_LIMIT steps, a compute-bound demonstration),
`cfunc(fn, signature)` (a C function, called once per element), and the
kernels a Cython module registers through fastpool/abi.pxd.
"""
from fastpool._cfunc import cfunc
from fastpool._core import MANDELBROT_LIMIT, Kernel, add, fma, mandelbrot, mul

__all__ = ["Kernel", "add", "mul", "fma", "mandelbrot", "MANDELBROT_LIMIT", "cfunc"]
