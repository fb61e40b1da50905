"""The exceptions fastpool raises or hands to callbacks and futures."""
from concurrent.futures import BrokenExecutor as _BrokenExecutor
from concurrent.futures import TimeoutError as _FutureTimeoutError

# concurrent.futures.TimeoutError is the builtin TimeoutError from Python 3.11
# on; before, a task's timeout must be both so that either `except` catches it.
if _FutureTimeoutError is TimeoutError:
    _TIMEOUT_BASES: tuple = (TimeoutError,)
else:
    _TIMEOUT_BASES = (TimeoutError, _FutureTimeoutError)


class PoolClosedError(RuntimeError):
    """The pool is closed: it accepts no new tasks, and `terminate()` fails
    the tasks that had not started."""


class QueueFullError(RuntimeError):
    """The pool's queue is full (`max_queue` tasks wait for a worker): the
    task was not accepted.  `pool.wait_for_room()` waits until one more fits."""


class WorkerExitedError(_BrokenExecutor):
    """The worker running the task was lost: a thread that raised a
    BaseException (its `__cause__`), or a worker process that died (the
    message names its exit code or signal).  A worker process's is also a
    `concurrent.futures.process.BrokenProcessPool`."""


class TaskTimeoutError(*_TIMEOUT_BASES):
    """A task did not complete within its timeout."""


def __getattr__(name: str):
    # A worker process's WorkerExitedError is also the stdlib's
    # BrokenProcessPool, whose module imports multiprocessing: made on demand.
    if name == "ProcessExitedError":
        from fastpool.workers import _process_exited_error_type

        return _process_exited_error_type()
    raise AttributeError(f"module 'fastpool.errors' has no attribute {name!r}")
