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
from __future__ import annotations

from fastpool._core import MANDELBROT_LIMIT, Kernel, add, fma, mandelbrot, mul

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Kernel", "add", "mul", "fma", "mandelbrot", "MANDELBROT_LIMIT", "cfunc"]


def cfunc(fn: Any, signature: str, *, loop: bool = False) -> Kernel:
    """A native kernel that calls the C function `fn` once per element.

    `fn`: an int address, a ctypes function pointer, a numba ``@cfunc``
    object, or a ``(library_path, symbol)`` pair (the one form a process
    pool can carry: its workers load the library themselves; a ctypes
    function of a loaded library counts as such a pair).  `signature`:
    ``"f8(f8,f8)"``, ``"i8(i8,i8)"``, ``"f8(f8,f8,f8)"``, or another
    RESULT(OPERANDS) of f8 (double) and i8 (int64), two or three operands
    of one type.

    f8 operands take any real number (converted as float(x) converts it)
    and float64 arrays; i8 operands take ints within int64 (nothing is
    converted: a float or a bigger int is the task's error) and int64
    arrays.  The result is a float or an int (i8: the function's int64).
    Tasks have the built-in kernels' forms: a mapping with keys "a", "b"
    (and "c"), a tuple, or equal-shape arrays with an optional "out".

    `loop=True`: `fn` is a loop over a chunk of elements instead, called
    once per chunk, as a numpy inner loop: ``void fn(char **args, int64_t n,
    void *data)`` reads n operands at args[0], args[1] (and args[2]) and
    writes n results at args[nops], each 8 bytes (data is NULL).  A loop the
    compiler vectorizes costs what a built-in kernel does; one call per
    element costs about a nanosecond more per element.

    The same function and signature give the same kernel.  Each distinct
    one takes an entry of the kernel table (256, built-ins included) for
    the life of the process.
    """
    from fastpool._cfunc import cfunc as make     # ctypes and the checks: on first use

    return make(fn, signature, loop=loop)
