"""The future that pools return: a concurrent.futures.Future that asyncio
code can also await, and that is cheap when nobody waits on it.

`concurrent.futures.Future()` builds a Condition (with its lock and bound
methods) for every future, which costs more than running an add task.  A
PoolFuture makes that Condition only when a thread first needs it (to wait,
to add a callback, to cancel, or for `wait`/`as_completed`).  The pool's
dispatcher completes a future that has no Condition yet directly, in one
step under the GIL (see `_engine.pyx`, `_resolve`); a future that has one
is completed the standard way, so waiters are always notified.
"""
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from threading import Condition
from time import monotonic

_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class PoolFuture(Future):
    """A `concurrent.futures.Future`; `await fut` resumes on the awaiting loop."""

    # A new future is these class attributes and an empty instance: making
    # one costs an allocation.  Whatever changes is stored on the instance.
    _state = PENDING
    _result = None
    _exception = None
    _pool = None        # the pool running the task, set by the pool
    __init__ = object.__init__

    def _lazy(self, name: str, make):
        # setdefault is atomic under the GIL: racing threads share one object.
        d = self.__dict__
        value = d.get(name)
        return value if value is not None else d.setdefault(name, make())

    @property
    def _condition(self) -> Condition:
        return self._lazy("_cond", Condition)

    @property
    def _waiters(self) -> list:
        return self._lazy("_waiters_list", list)

    @property
    def _done_callbacks(self) -> list:
        return self._lazy("_callbacks_list", list)

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout=None):
        if self._state != FINISHED:
            timeout = self._wait_in_pool(timeout)
        if self._state == FINISHED:
            if self._exception is None:
                return self._result
            try:
                raise self._exception
            finally:
                self = None  # break the frame -> exception -> traceback cycle
        return super().result(timeout)

    def exception(self, timeout=None):
        if self._state != FINISHED:
            timeout = self._wait_in_pool(timeout)
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def _wait_in_pool(self, timeout):
        # While the pool's dispatcher sleeps, the waiting thread completes
        # this future itself (one wake-up fewer for a lone task); returns
        # the time left for the usual wait, if it must wait the usual way.
        pool = self._pool
        if pool is None or self._state not in (PENDING, RUNNING):
            return timeout
        if timeout is None:
            pool._wait_result(self, None)
            return None
        end = monotonic() + timeout
        pool._wait_result(self, timeout)
        return max(0.0, end - monotonic())

    def __await__(self):
        import asyncio  # only for users who await: keeps `import fastpool` light

        return asyncio.wrap_future(self).__await__()
