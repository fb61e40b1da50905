"""Kernels of our own, run by fastpool's workers without the GIL.

    from fastpool import WorkerPool
    from userkernel import norm

    with WorkerPool(2, norm) as pool:
        pool.run((3.0, 4.0)).result()        # 5.0

They work in process pools too: a worker process imports
userkernel._kernels, which registers them again there.
"""
from userkernel._kernels import gcd, lerp, norm

__all__ = ["norm", "lerp", "gcd"]
