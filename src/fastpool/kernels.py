"""Native kernels.

`add` is the built-in one: `add({"a": 1, "b": 2}) == 3`.  A pool runs native
kernels in its worker threads without the GIL; called directly, a kernel
computes the task in the calling thread.
"""
from fastpool._core import Kernel, add

__all__ = ["Kernel", "add"]
