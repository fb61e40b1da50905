"""Native kernels.

The built-in ones: `add` (a + b), `mul` (a * b) and `fma` (a * b + c).  A
task is a mapping with keys "a", "b" (and "c") or a tuple of the operands:
numbers give Python's own result (ints exact at any size), equal-shape
arrays of one element type give numpy's elementwise result, into an
optional "out".  A pool runs native kernels in its worker threads without
the GIL; called directly, a kernel computes the task in the calling thread:
`add({"a": 1, "b": 2}) == 3`.
"""
from fastpool._core import Kernel, add, fma, mul

__all__ = ["Kernel", "add", "mul", "fma"]
