"""fastpool.ThreadPoolExecutor and fastpool.ProcessPoolExecutor: the
interfaces and semantics of concurrent.futures' executors on fastpool's
native core.

Each executor is a thin facade over a private pool (`_ExecutorPool`).  The
pool's workers hold the pool, never the facade, so an executor that is
dropped without shutdown() is collected, and then finishes what it accepted
and stops its workers, as the standard library's does.
"""
from __future__ import annotations

import itertools
import math
import os
import weakref
from concurrent.futures import Executor, _base
from concurrent.futures import thread as _stdlib_thread
from typing import Any, Callable, Iterable, Iterator

from fastpool import kernels
from fastpool._future import PoolFuture
from fastpool.errors import PoolClosedError
from fastpool.pool import MAX_WORKERS, _map_with_room, _PoolBase

__all__ = ["ThreadPoolExecutor", "BrokenThreadPool", "ProcessPoolExecutor"]

BrokenThreadPool = _stdlib_thread.BrokenThreadPool
_AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"
_process_cpu_count = getattr(os, "process_cpu_count", os.cpu_count)


class _ExecutorPool(_PoolBase):
    """The native pool under one ThreadPoolExecutor."""

    # An exception that is not an Exception (SystemExit, KeyboardInterrupt)
    # goes to the future, as in the standard library.
    _lose_on_base_exception = False

    def __init__(self, num_threads: int, names: list[str],
                 initializer: Callable[..., Any] | None, initargs: tuple,
                 procs: dict | None = None, max_queue: int | None = None) -> None:
        self._initializer = initializer if procs is None else None  # a process runs its own
        self._initargs = initargs
        self._broken: str | bool = False
        self._threads: set = set()      # every thread started, as the stdlib keeps it
        if procs is None:
            self._start(num_threads, None, 1024, names, lazy=True, max_queue=max_queue)
        else:
            # Futures are running once in the ring (as the stdlib's once in
            # its call queue): a small ring keeps the rest cancellable.
            ring = 1 << max(3, (2 * num_threads).bit_length())
            self._start(num_threads, None, ring, names, procs=procs, max_queue=max_queue)

    def _spawn(self, idx: int) -> None:
        super()._spawn(idx)
        self._threads.add(self._workers[idx])

    def _adjust_thread_count(self, max_workers: float) -> None:
        # A new thread while there are more unfinished tasks than threads:
        # a thread that finished its task is idle and takes the next one.
        # (The stdlib counts idle threads with a semaphore; this is the same
        # rule, and it does not depend on when a finished thread gets there.)
        started = len(self._threads)
        if started < max_workers and self.tasks_in - self.tasks_out > started:
            with self._state_lock:
                started = len(self._threads)
                if started < max_workers and self.state == 0:
                    self._spawn(started)

    def _map_helpers(self) -> int:
        # A native map's helpers must be threads that exist: start the first
        # one as a submit would, and count only the threads started.
        if not self._threads:
            with self._state_lock:
                if not self._threads and self.state == 0:
                    self._spawn(0)
        return min(len(self._threads), super()._map_helpers())

    def _worker_body(self, idx: int) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException:
                _base.LOGGER.critical("Exception in initializer:", exc_info=True)
                self._report_lost(idx, True)
                return
        self._worker_main(idx)

    def _dropped(self) -> None:
        # The executor was collected without shutdown(): shutdown(wait=False).
        # A finalizer can run in any thread at any point, even in this one
        # while it starts the dispatcher; then that start is enough.
        self._request_close()
        if self._dispatcher_lock.acquire(blocking=False):
            self._dispatcher_lock.release()
            self._ensure_dispatcher()

    def _workers_cannot_start(self, err: BaseException) -> None:
        # As the stdlib's: a process that dies abruptly breaks the pool.
        self._initializer_failed()

    def _initializer_failed(self) -> None:
        # Dispatcher thread: the pool is broken; fail what has not started.
        if self._broken:
            return
        if self.procs:
            from concurrent.futures.process import BrokenProcessPool as broken

            self._broken = ("A child process terminated abruptly, the process pool is not "
                            "usable anymore")
        else:
            broken = BrokenThreadPool
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
        self._fail_unstarted(lambda: broken(self._broken))


class _PoolExecutor(Executor):
    """What both executors share: a private pool behind the Executor API."""

    _pool: _ExecutorPool

    @property
    def _broken(self) -> str | bool:
        return self._pool._broken

    # Each executor says which BrokenExecutor it raises: `_broken_error(why)`.

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> PoolFuture:
        pool = self._pool
        if pool._broken:
            raise self._broken_error(pool._broken)   # type: ignore[attr-defined]
        if self._shutdown:
            raise RuntimeError(_AFTER_SHUTDOWN)
        if _stdlib_thread._shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        try:
            return pool._submit_call(fn, args, kwargs)
        except PoolClosedError:
            raise RuntimeError(_AFTER_SHUTDOWN) from None

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Executor.map; with `max_queue`, each item waits for room."""
        if self._pool.max_queue >= 0:
            return _map_with_room(self._pool, self.submit, fn, iterables, timeout)
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """As WorkerPool.wait_for_room: True once one more future fits in
        `max_queue`, False after `timeout` seconds."""
        return self._pool.wait_for_room(timeout)

    def stats(self) -> dict[str, Any]:
        """As WorkerPool.stats."""
        return self._pool.stats()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown: accept nothing new, optionally cancel what has
        not started, and (wait=True) return once every worker has stopped."""
        self._shutdown = True
        self._pool.shutdown(wait, cancel_futures=cancel_futures)

    def close(self) -> None:
        """shutdown(wait=True), as WorkerPool.close()."""
        self._shutdown = True
        self._pool.close()

    def terminate(self) -> None:
        """Start nothing new: futures that have not started fail with
        PoolClosedError; in a process pool running ones too (their workers
        are stopped).  Returns once nothing will run any more."""
        self._shutdown = True
        self._pool.terminate()


class ThreadPoolExecutor(_PoolExecutor):
    """Drop-in for `concurrent.futures.ThreadPoolExecutor`.

    Threads start on demand up to `max_workers` (a new one while there are
    more unfinished tasks than threads), are named `{thread_name_prefix}_{i}`,
    run `initializer(*initargs)` first, and show in `threading.enumerate()`
    and in `_threads`.  A failing initializer is logged on the
    `concurrent.futures` logger and breaks the pool (`BrokenThreadPool`).
    `max_workers` may be a float as in the stdlib (2.5: up to 3 threads), up
    to `fastpool.pool.MAX_WORKERS`.  `max_queue` (not in the stdlib) bounds
    the futures that may wait for a thread: beyond it submit() raises
    `fastpool.QueueFullError`, and `wait_for_room()` waits for room.
    Done-callbacks run on the pool's dispatcher thread, one at a time; one
    that waits for another future of the executor gets its result (see
    `fastpool.WorkerPool`).
    """

    _counter = itertools.count().__next__

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (), *,
                 max_queue: int | None = None) -> None:
        if max_workers is None:
            # As the stdlib: from Python 3.13 on, only the CPUs we may run on.
            max_workers = min(32, (_process_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        try:
            # As the stdlib: threads are numbered 0, 1, ... while the count is
            # below max_workers, so 2.5 means up to 3 threads.
            num_threads = math.ceil(max_workers)
        except (OverflowError, ValueError):
            raise ValueError(f"max_workers must be a finite number, got {max_workers!r}") from None
        if num_threads > MAX_WORKERS:
            # The native pool sizes its rings for every thread it may start.
            raise ValueError(f"max_workers must be <= {MAX_WORKERS}, got {max_workers!r}")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        self._initializer = initializer
        self._initargs = initargs
        self._shutdown = False
        names = [f"{self._thread_name_prefix}_{i}" for i in range(num_threads)]
        self._pool = pool = _ExecutorPool(num_threads, names, initializer, initargs,
                                          max_queue=max_queue)
        # Dropped without shutdown(): finish what was accepted, then stop.
        weakref.finalize(self, pool._dropped).atexit = False

    @property
    def _threads(self) -> set:
        return self._pool._threads

    def _broken_error(self, why: str) -> Exception:
        return BrokenThreadPool(why)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> PoolFuture:
        """Run fn(*args, **kwargs) in a worker thread; a Future for its result."""
        fut = self._submit(fn, args, kwargs)
        self._pool._adjust_thread_count(self._max_workers)
        return fut

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Executor.map; map(kernel, tasks) of a native kernel takes the native path."""
        if isinstance(fn, kernels.Kernel) and len(iterables) == 1:
            items = iterables[0]
            if type(items) is not list and type(items) is not tuple:
                items = list(items)
            if items:       # as the stdlib: nothing to run, nothing refused
                if self._pool._broken:
                    raise BrokenThreadPool(self._pool._broken)
                if self._shutdown or self._pool.closed:
                    raise RuntimeError(_AFTER_SHUTDOWN)
            return self._pool.map(fn, items, timeout=timeout, chunksize=chunksize)
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize)


class ProcessPoolExecutor(_PoolExecutor):
    """Drop-in for `concurrent.futures.ProcessPoolExecutor`.

    Worker processes (started with `mp_context`: by default forkserver
    where it exists, else spawn) attach to the pool's shared-memory segment;
    functions travel by reference and arguments and results pickled
    (protocol 5) through it, large buffers out of band.  All `max_workers`
    processes start with the first submit.  `initializer(*initargs)` runs
    first in each; one that raises breaks the pool (`BrokenProcessPool`).
    `max_tasks_per_child`: a worker process is replaced after that many
    tasks.  `max_queue` (not in the stdlib) bounds the futures that may wait
    for a worker: beyond it submit() raises `fastpool.QueueFullError`, and
    `wait_for_room()` waits for room.  `shm_name` is the pool's segment,
    which `python -m fastpool stats|top NAME` reads.

    Unlike the stdlib's, a worker process that dies (a signal, `os._exit`,
    a segfault) does not break the pool: only the future it was running
    fails, with `fastpool.WorkerExitedError`, which is also a
    `BrokenProcessPool`; a replacement starts and the pool stays usable.
    """

    _counter = itertools.count().__next__

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (), *,
                 max_tasks_per_child: int | None = None, max_queue: int | None = None) -> None:
        from fastpool.pool import _mp_context

        if max_workers is None:
            max_workers = _process_cpu_count() or 1
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_workers > MAX_WORKERS:
            raise ValueError(f"max_workers must be <= {MAX_WORKERS}, got {max_workers!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ctx = _mp_context(mp_context)
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if ctx.get_start_method(allow_none=False) == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different mp_context.")
        self._max_workers = max_workers
        self._mp_context = ctx
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._shutdown = False
        prefix = f"ProcessPoolExecutor-{self._counter()}"
        names = [f"{prefix}_{i}" for i in range(max_workers)]
        self._pool = pool = _ExecutorPool(
            max_workers, names, initializer, initargs,
            procs=dict(ctx=ctx, initializer=initializer, initargs=initargs,
                       max_tasks=max_tasks_per_child), max_queue=max_queue)
        weakref.finalize(self, pool._dropped).atexit = False

    def _broken_error(self, why: str) -> Exception:
        from concurrent.futures.process import BrokenProcessPool

        return BrokenProcessPool(why)

    @property
    def shm_name(self) -> str | None:
        """The name of the pool's shared-memory segment."""
        return self._pool.shm_name

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> PoolFuture:
        """Run fn(*args, **kwargs) in a worker process; a Future for its result."""
        return self._submit(fn, args, kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Executor.map; `chunksize` items travel to a worker together."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        import functools

        results = super().map(functools.partial(_run_chunk, fn), _chunks(iterables, chunksize),
                              timeout=timeout)
        return _flatten(results)


def _chunks(iterables: tuple, chunksize: int) -> Iterator[tuple]:
    """The argument tuples of map(), `chunksize` at a time."""
    it = zip(*iterables)
    while True:
        chunk = tuple(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


def _run_chunk(fn: Callable[..., Any], chunk: tuple) -> list:
    """In a worker process: one chunk of a map()."""
    return [fn(*args) for args in chunk]


def _flatten(results: Iterator[list]) -> Iterator[Any]:
    # Chunk by chunk, dropping each as it is consumed (as the stdlib's map).
    for chunk in results:
        chunk.reverse()
        while chunk:
            yield chunk.pop()
