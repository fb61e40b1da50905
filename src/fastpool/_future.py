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
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from threading import Condition

_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class PoolFuture(Future):
    """A `concurrent.futures.Future`; `await fut` resumes on the awaiting loop."""

    def __init__(self) -> None:
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []

    @property
    def _condition(self) -> Condition:
        # setdefault is atomic under the GIL: racing threads share one Condition.
        d = self.__dict__
        cond = d.get("_cond")
        return cond if cond is not None else d.setdefault("_cond", Condition())

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout=None):
        if self._state == FINISHED:
            if self._exception is None:
                return self._result
            try:
                raise self._exception
            finally:
                self = None  # break the frame -> exception -> traceback cycle
        return super().result(timeout)

    def exception(self, timeout=None):
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def __await__(self):
        import asyncio  # only for users who await: keeps `import fastpool` light

        return asyncio.wrap_future(self).__await__()
