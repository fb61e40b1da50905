"""fastpool.ThreadPoolExecutor: concurrent.futures.ThreadPoolExecutor's
interface and semantics on fastpool's native core."""
from __future__ import annotations

import itertools
import os
from concurrent.futures import thread as _stdlib_thread
from typing import Any, Callable

from fastpool._future import PoolFuture
from fastpool.pool import _PoolBase

__all__ = ["ThreadPoolExecutor", "BrokenThreadPool"]

BrokenThreadPool = _stdlib_thread.BrokenThreadPool


class ThreadPoolExecutor(_PoolBase):
    """Drop-in for `concurrent.futures.ThreadPoolExecutor`.

    Threads start on demand up to `max_workers`, are named
    `{thread_name_prefix}_{i}`, run `initializer(*initargs)` first, and show
    in `threading.enumerate()`.  A failing initializer breaks the pool
    (`BrokenThreadPool`), as in the standard library.
    """

    _counter = itertools.count().__next__
    # An exception that is not an Exception (SystemExit, KeyboardInterrupt)
    # goes to the future, as in the standard library.
    _lose_on_base_exception = False

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        self._initializer = initializer
        self._initargs = initargs
        self._broken: str | bool = False
        self._shutdown = False
        self._started = 0
        names = [f"{self._thread_name_prefix}_{i}" for i in range(max_workers)]
        self._start(max_workers, None, 1024, names, lazy=True)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> PoolFuture:
        if self._broken:
            raise BrokenThreadPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _stdlib_thread._shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        fut = self._submit_call(fn, args, kwargs)
        self._adjust_thread_count()
        return fut

    submit.__doc__ = _PoolBase.submit.__doc__

    def _adjust_thread_count(self) -> None:
        # As the standard library: a new thread only when none is idle.
        if self._started < self._max_workers and self._idle_workers() == 0:
            with self._state_lock:
                if self._started < self._max_workers and self.state == 0:
                    self._spawn(self._started)
                    self._started += 1

    def _initializer_failed(self) -> None:
        # Dispatcher thread: the pool is broken; fail what has not started.
        self._broken = "A thread initializer failed, the thread pool is not usable anymore"
        self._fail_unstarted(lambda: BrokenThreadPool(self._broken))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        super().shutdown(wait, cancel_futures=cancel_futures)

    shutdown.__doc__ = _PoolBase.shutdown.__doc__

    def _close_at_exit(self) -> None:
        self._shutdown = True
        self.close()

    def close(self) -> None:
        self._shutdown = True
        super().close()

    def terminate(self) -> None:
        self._shutdown = True
        super().terminate()
