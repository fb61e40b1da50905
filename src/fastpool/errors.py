"""The exceptions fastpool raises or hands to callbacks and futures."""


class PoolClosedError(RuntimeError):
    """The pool is closed: it accepts no new tasks, and `terminate()` fails
    the tasks that had not started."""


class WorkerExitedError(RuntimeError):
    """The worker running the task was lost (its `__cause__` says why)."""


class TaskTimeoutError(TimeoutError):
    """A task did not complete within its timeout."""
