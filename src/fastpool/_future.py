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
from threading import Condition, local
from time import monotonic

from fastpool._core import _add_done_callback

_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

# `.pool` is the pool whose dispatch token this thread holds, while it
# holds it: its dispatcher thread, or (`.proxy`) a thread that took it to
# complete the future it waits on.  Callbacks run there, so a wait in a
# callback there would block the very thread that completes the pool's
# tasks: it completes them instead (Core._dispatch_until).
_dispatching = local()


class _DispatchingEvent:
    """The Event of a concurrent.futures waiter (wait, as_completed) made on
    a token holder: wait() completes the pool's tasks until it is set."""

    __slots__ = ("_event", "_pool", "_proxy")

    def __init__(self, pool, proxy, event) -> None:
        self._pool = pool
        self._proxy = proxy
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        self._pool._wake_dispatch()      # set by another thread: look again

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout=None) -> bool:
        if getattr(_dispatching, "pool", None) is not self._pool:
            return self._event.wait(timeout)
        return self._pool._dispatch_until(self._event.is_set, timeout, self._proxy)


class _WaiterList(list):
    """A future's waiters.  concurrent.futures.wait and as_completed add
    one; added on a token holder, its event becomes a _DispatchingEvent."""

    __slots__ = ()

    def append(self, waiter) -> None:
        pool = getattr(_dispatching, "pool", None)
        if pool is not None and not isinstance(waiter.event, _DispatchingEvent):
            waiter.event = _DispatchingEvent(pool, _dispatching.proxy, waiter.event)
        list.append(self, waiter)


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
        # That takes one __dict__: the pool makes it with the future, before
        # another thread can see it (see Core._new_future).
        d = self.__dict__
        value = d.get(name)
        return value if value is not None else d.setdefault(name, make())

    @property
    def _condition(self) -> Condition:
        return self._lazy("_cond", Condition)

    @property
    def _waiters(self) -> list:
        return self._lazy("_waiters_list", _WaiterList)

    @property
    def _done_callbacks(self) -> list:
        return self._lazy("_callbacks_list", list)

    def add_done_callback(self, fn) -> None:
        # Without a Condition: a callback costs a list append, not a
        # Condition and a locked completion.
        if not _add_done_callback(self, fn):
            super().add_done_callback(fn)

    def done(self) -> bool:
        return self._state in _DONE

    def cancel(self) -> bool:
        # WorkerPool.run's futures cancel as the pool does (TaskHandle.cancel):
        # a running task too.  The rest keep concurrent.futures' rule.
        task = self.__dict__.get("_task")
        if task is None:
            return super().cancel()
        return task.cancel()

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
        # Returns the time left for the usual wait, if it must wait the
        # usual way.
        holder = getattr(_dispatching, "pool", None)
        if holder is not None:
            # In a callback, on the thread that completes holder's tasks.
            if not self.done() and not self._dispatch_until_done(holder, timeout):
                return 0
            return timeout
        pool = self._pool
        if pool is None or self._state not in (PENDING, RUNNING):
            return timeout
        # While the pool's dispatcher sleeps, the waiting thread completes
        # this future itself (one wake-up fewer for a lone task).  The
        # done-callbacks it runs then may wait in turn (see above).
        _dispatching.pool, _dispatching.proxy = pool, True
        try:
            if timeout is None:
                pool._wait_result(self, None)
                return None
            end = monotonic() + timeout
            pool._wait_result(self, timeout)
            return max(0.0, end - monotonic())
        finally:
            _dispatching.pool = None

    def _dispatch_until_done(self, pool, timeout) -> bool:
        # Complete pool's tasks here until this future is done.  A completion
        # that does not come through the pool (another pool's future, a
        # cancel()) wakes us through the done-callback.
        wake = pool._wake_dispatch
        self.add_done_callback(wake)
        try:
            return pool._dispatch_until(self.done, timeout, _dispatching.proxy)
        finally:
            with self._condition:
                try:
                    self._done_callbacks.remove(wake)
                except ValueError:
                    pass

    def _finish_quietly(self, err, value) -> bool:
        # set_result / set_exception without running the done-callbacks
        # (the pool runs them a little later, see Core._deliver_later);
        # False if the future is no longer pending or running.
        with self._condition:
            if self._state not in (PENDING, RUNNING):
                return False
            if err is None:
                self._result = value
            else:
                self._exception = err
            self._state = FINISHED
            for waiter in self._waiters:
                if err is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            self._condition.notify_all()
        return True

    def __await__(self):
        import asyncio  # only for users who await: keeps `import fastpool` light

        return asyncio.wrap_future(self).__await__()
