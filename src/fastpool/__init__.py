"""fastpool: a worker pool whose hot path is native.

    from fastpool import WorkerPool
    pool = WorkerPool(2)
    pool.run_task({"a": 1, "b": 2}, lambda err, result: print(result))   # 3
    pool.close()

Tasks and results travel through lock-free rings in a shared-memory block;
worker threads run native kernels with the GIL released; callbacks run one
at a time in the context their task was submitted from.
"""
from fastpool import kernels
from fastpool._core import TaskHandle, cancelled
from fastpool._future import PoolFuture
from fastpool.errors import PoolClosedError, QueueFullError, TaskTimeoutError, WorkerExitedError
from fastpool.pool import WorkerPool

__all__ = [
    "WorkerPool",
    "TaskHandle",
    "cancelled",
    "ThreadPoolExecutor",
    "PoolFuture",
    "PoolClosedError",
    "QueueFullError",
    "WorkerExitedError",
    "TaskTimeoutError",
    "BrokenThreadPool",
    "ProcessPoolExecutor",
    "BrokenProcessPool",
    "kernels",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The executor drop-in pulls in concurrent.futures.thread: load it only
    # for those who use it, so `import fastpool` stays cheap.
    if name in ("ThreadPoolExecutor", "BrokenThreadPool", "ProcessPoolExecutor"):
        from fastpool import executor

        return getattr(executor, name)
    if name == "BrokenProcessPool":
        # concurrent.futures.process imports multiprocessing: only on demand.
        from concurrent.futures.process import BrokenProcessPool

        return BrokenProcessPool
    raise AttributeError(f"module 'fastpool' has no attribute {name!r}")
