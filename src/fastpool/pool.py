"""WorkerPool: the Node.js WorkerPool, on fastpool's native core.

The native core (`fastpool._core.Core`) owns the rings, the worker loops and
the dispatcher loop, and runs `run_task`/`run` itself, so the per-task path
never passes through Python code here.  This layer validates arguments,
starts, replaces and joins threads, emits events, and speaks the
`concurrent.futures.Executor` interface.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from concurrent.futures import Executor

from fastpool import _future, kernels
from fastpool._core import Core, task_timeout_ns
from fastpool._future import PoolFuture
from fastpool.errors import PoolClosedError, QueueFullError, WorkerExitedError
from fastpool.workers import FunctionRefs, ProcessWorkers, ThreadWorkers

TYPE_CHECKING = False   # typing costs milliseconds to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator

__all__ = ["WorkerPool"]

logger = logging.getLogger("fastpool")

EVENTS = ("error", "spawn", "exit", "drain")
MAX_WORKERS = 4096          # checked before anything is allocated
MAX_RING_SIZE = 1 << 20     # 32 MiB of task cells; more waits in the FIFO anyway
BLOCK_SIZE = 1 << 16        # bytes per payload block; bigger payloads go to one-off segments
PAYLOAD_BLOCKS = 256        # Python tasks in a process pool's rings at once (16 MiB of blocks)
WORKER_KINDS = ("thread", "process")
START_FAILURES = 3          # worker processes dead before their loop, in a row: the pool breaks
LEAVE_RETIRED, LEAVE_INIT_FAILED, LEAVE_IDLE, LEAVE_STOPPED = 1, 2, 3, 4   # why a worker process left (_segment.pxd)

# The pool's states, as the native core numbers them.
RUNNING, CLOSING, TERMINATING, STOPPED = 0, 1, 2, 3
_pool_ids = iter(range(1, 1 << 62))
_live_pools: "weakref.WeakSet[_PoolBase]" = weakref.WeakSet()
_atexit_registered = False


def _exiting() -> bool:
    # Python 3.12 starts no thread once the interpreter exits: a pool then
    # finishes with the threads it has, and close() runs the dispatch loop
    # itself if no dispatcher thread was running.
    return threading._SHUTTING_DOWN


def _close_all_at_exit() -> None:
    # Like concurrent.futures: at interpreter exit, finish what was accepted.
    for pool in list(_live_pools):
        pool._close_at_exit()


def _forget_pools_after_fork() -> None:
    # A forked child shares the parent's segment but not its threads: its
    # copies of the pools are closed and must touch nothing of the parent's.
    for pool in list(_live_pools):
        pool._forget_after_fork()
    _live_pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _track(pool: "_PoolBase") -> None:
    global _atexit_registered
    if not _atexit_registered:
        # Runs before threading joins non-daemon threads, so our threads
        # are told to stop instead of being waited on forever.
        threading._register_atexit(_close_all_at_exit)
        _atexit_registered = True
    _live_pools.add(pool)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not on every platform
        return os.cpu_count() or 1


def _mp_context(start_method: Any) -> Any:
    """A multiprocessing context from a start method's name, a context, or None (the default)."""
    from fastpool.workers import default_context

    if start_method is None:
        return default_context()
    if isinstance(start_method, str):
        import multiprocessing

        try:
            return multiprocessing.get_context(start_method)
        except ValueError:
            raise ValueError(f"unknown start method {start_method!r}; expected one of "
                             f"{', '.join(multiprocessing.get_all_start_methods())}") from None
    if not hasattr(start_method, "Process"):
        raise TypeError(f"start_method must be a name or a multiprocessing context, "
                        f"not {type(start_method).__name__}")
    return start_method


def _check_max_queue(value: Any) -> int:
    """max_queue as the native core takes it: -1 for None (no bound)."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_queue must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_queue must be >= 0 or None, got {value}")
    return min(value, (1 << 62))


def _check_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(value).__name__}")
    if not value >= 0:      # NaN too
        raise ValueError(f"timeout must be >= 0 or None, got {value!r}")
    return float(value)


def _check_elastic(min_workers: Any, idle_timeout: Any, num_threads: int) -> tuple[int | None, int]:
    """min_workers and idle_timeout as the native core takes them: the
    workers kept (None: a pool of fixed size) and the idle time, in ns,
    after which the others leave (0: never)."""
    if min_workers is not None:
        if isinstance(min_workers, bool) or not isinstance(min_workers, int):
            raise TypeError(f"min_workers must be an int or None, not {type(min_workers).__name__}")
        if min_workers < 0:
            raise ValueError(f"min_workers must be >= 0 or None, got {min_workers}")
        if min_workers > num_threads:
            raise ValueError(f"min_workers must be <= num_threads ({num_threads}), got {min_workers}")
    if idle_timeout is None:
        return min_workers, 0
    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
        raise TypeError(f"idle_timeout must be a number or None, not {type(idle_timeout).__name__}")
    if not idle_timeout >= 0:      # NaN too
        raise ValueError(f"idle_timeout must be >= 0 or None, got {idle_timeout!r}")
    if idle_timeout == math.inf:
        return min_workers, 0       # as None: never
    if min_workers is None:
        min_workers = 0
    if min_workers == num_threads:
        raise ValueError(f"idle_timeout: no worker could ever leave, min_workers ({min_workers}) "
                         f"is the pool's size")
    return min_workers, max(1, min(int(idle_timeout * 1e9), 1 << 62))


def _check_shm_name(value: Any) -> Any:
    if value is None:
        return False
    if not isinstance(value, str):
        raise TypeError(f"shm_name must be a str or None, not {type(value).__name__}")
    if not value or "/" in value or "\0" in value or len(value) > 200:
        raise ValueError(f"shm_name must be a non-empty name without '/', got {value!r}")
    return value


def _check_count(name: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if value > most:
        raise ValueError(f"{name} must be <= {most}, got {value}")
    return value


def _map_with_room(pool: Any, submit: Callable[..., Any], fn: Callable[..., Any],
                   iterables: tuple, timeout: float | None) -> Iterator[Any]:
    """Executor.map on a pool with max_queue: every item is submitted at
    the call, as there, each waiting for room in the queue; `timeout`
    counts from the call, over the waits and the results alike."""
    import time

    end = None if timeout is None else time.monotonic() + timeout
    futures: list = []
    try:
        for args in zip(*iterables):
            while True:
                try:
                    futures.append(submit(fn, *args))
                    break
                except QueueFullError:
                    left = None if end is None else max(0.0, end - time.monotonic())
                    if not pool.wait_for_room(left):
                        raise TimeoutError(f"map: no room in the queue within {timeout} s") from None
    except BaseException:
        for f in futures:
            f.cancel()
        raise

    def results() -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                f = futures.pop()
                try:
                    yield f.result(None if end is None else end - time.monotonic())
                finally:
                    f.cancel()      # after a timeout: as Executor.map, it is not wanted
        finally:
            for f in futures:
                f.cancel()

    return results()


class _PoolBase(Core, Executor):
    """Threads, events and lifecycle shared by WorkerPool and ThreadPoolExecutor."""

    _lose_on_base_exception = True
    _dispatch_in_closer = False     # no dispatcher thread could start (see _exiting)
    _elastic = False                # workers may leave idle, and start while the pool closes

    def _start(self, num_threads: int, processor: Any, ring_size: int,
               worker_names: list[str], lazy: bool = False, procs: dict | None = None,
               max_queue: Any = None, shm_name: Any = None, timeout: Any = None) -> None:
        """`procs`: the workers are processes, started with these keyword
        arguments of ProcessWorkers (mp_context, initializer, initargs,
        max_tasks); None: threads.  `max_queue`, `shm_name` and `timeout`
        as WorkerPool takes them."""
        max_queue = _check_max_queue(max_queue)
        limit = task_timeout_ns(timeout)
        named = _check_shm_name(shm_name)
        if isinstance(ring_size, bool) or not isinstance(ring_size, int):
            raise TypeError(f"ring_size must be an int, not {type(ring_size).__name__}")
        if ring_size < 2 or ring_size & (ring_size - 1):
            raise ValueError(f"ring_size must be a power of two >= 2, got {ring_size}")
        if ring_size > MAX_RING_SIZE:
            raise ValueError(f"ring_size must be <= {MAX_RING_SIZE}, got {ring_size}")
        self._listeners: dict[str, list[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._worker_names = worker_names
        self._workers: list[threading.Thread | None] = [None] * num_threads
        # Worker indexes taken: from a start until the worker leaves idle
        # (a replacement keeps its index).  Counted in the segment's `live`
        # too, which a worker lowers itself as it decides to leave.
        self._taken = [False] * num_threads
        self._state_lock = threading.Lock()   # thread start/replace, not the hot path
        self._start_failures = [0, 0]         # (in a row, tasks done at the first): _cannot_start
        if processor is None:
            processor = kernels.add
        self._core_init(num_threads, ring_size, processor, self._lose_on_base_exception, PoolFuture,
                        named, BLOCK_SIZE, PAYLOAD_BLOCKS if procs is not None else 0)
        self._configure_queue(max_queue)
        self._configure_timeout(limit)
        if procs is None:
            self._kind: ThreadWorkers | ProcessWorkers = ThreadWorkers(self)
        else:
            self._spill_prefix = self._payload_prefix()
            self._fn_ref = FunctionRefs().ref
            self._kind = ProcessWorkers(self, processor=self.processor, **procs)
        # Threads start when there is work for them: workers one by one as
        # tasks arrive and none is idle (WorkerPool; the executor has its
        # own rule), the dispatcher with the first result that no waiting
        # thread completes itself.  A short-lived pool pays for what it uses.
        self._dispatcher: threading.Thread | None = None
        self._runner: threading.Thread | None = None    # the thread running the dispatch loop
        self._dispatcher_lock = threading.Lock()
        self._stopped = threading.Event()
        self.grow_on_submit = not lazy
        _track(self)

    def _forget_after_fork(self) -> None:
        super()._forget_after_fork()
        # Locks another thread held at the fork stay held in the child.
        self._state_lock = threading.Lock()
        self._dispatcher_lock = threading.Lock()
        self._dispatcher = None
        self._workers = [None] * len(self._workers)
        if isinstance(self._kind, ProcessWorkers):
            self._kind.forget_after_fork()
        self._stopped.set()

    # ----------------------------------------------------------- threads

    def _grow(self, wanted: int) -> None:
        # From the submit path, while fewer than num_threads workers are live:
        # start one unless enough idle ones are there to take what waits.
        # Worker processes take milliseconds to start: all of them at once,
        # unless the pool is elastic.  A worker leaving idle keeps its index
        # until the dispatcher has seen it go (and then calls _regrow): until
        # then there may be no free index, though fewer are live.
        if self.procs and not self._elastic:
            wanted = self.n_workers
        elif self._idle_workers() > self._tasks_waiting():
            return
        with self._state_lock:
            try:
                while wanted > 0 and (self.state == RUNNING or self._elastic and self.state == CLOSING):
                    try:
                        idx = self._taken.index(False)
                    except ValueError:
                        return
                    self._spawn(idx)
                    wanted -= 1
            except BaseException as e:
                if isinstance(e, RuntimeError) and _exiting() and any(self._workers):
                    return      # the workers there finish what was accepted
                if not any(self._workers):
                    # Nothing could run the accepted tasks: break the pool,
                    # so that they fail instead of waiting forever.
                    self._engine_failed(e)
                raise

    def _ensure_dispatcher(self) -> None:
        with self._dispatcher_lock:
            if self._dispatcher is None and not self._dispatcher_started:
                t = threading.Thread(target=self._dispatch_body, name="fastpool-dispatcher")
                self._mark_dispatcher_started()
                self._dispatcher = t
                try:
                    t.start()
                except RuntimeError:
                    # No thread: close() runs the dispatch loop in its own.
                    self._dispatcher = None
                    self._dispatch_in_closer = True
                    if not _exiting():
                        raise

    def _dispatch_body(self) -> None:
        self._runner = threading.current_thread()
        # A wait in a callback run here completes this pool's tasks (_future.py).
        # (Inline, in close(), this thread may be running another pool's callback.)
        here = _future._dispatching
        outer = getattr(here, "pool", None), getattr(here, "proxy", False)
        here.pool, here.proxy = self, False
        try:
            self._dispatch_main()
        finally:
            here.pool, here.proxy = outer
            self._stopped.set()

    # ----------------------------------------------------------- threads

    def _spawn(self, idx: int) -> None:
        if self.procs and not self._dispatcher_started:
            self._ensure_dispatcher()   # worker processes cannot start it
        n_spawned, self.n_spawned = self.n_spawned, max(self.n_spawned, idx + 1)
        fresh = not self._taken[idx]    # else a replacement, in its place
        if fresh:
            self._taken[idx] = True
            self._add_live(1)
        try:
            t = self._kind.start(idx, self._worker_names[idx])
        except BaseException:
            self._workers[idx] = None
            self.n_spawned = n_spawned
            if fresh:
                self._taken[idx] = False
                self._add_live(-1)
            raise
        self._count_workers()
        self._emit("spawn", t.name)

    def _respawn(self, idx: int) -> None:
        # A replacement for worker idx, which left.
        self._spawn(idx)
        self._note_workers(self._alive(), 1)

    def _alive(self) -> int:
        return sum(t is not None for t in self._workers)

    def _count_workers(self) -> None:
        self._note_workers(self._alive())

    def _worker_body(self, idx: int) -> None:
        self._worker_main(idx)

    def _on_worker_lost(self, idx: int, init_failed: bool, exc: BaseException | None = None) -> None:
        # Dispatcher thread.  The worker has left its loop (or is leaving).
        if init_failed:
            self._initializer_failed()
            return
        old = self._workers[idx]
        if old is not None:
            old.join()
            self._emit("exit", old.name, exc)
        if exc is None:
            self._emit_error(WorkerExitedError(f"worker {old.name if old else idx} exited unexpectedly"))
        if self.state in (RUNNING, CLOSING):   # keep the pool's size
            self._respawn(idx)

    def _on_worker_left(self, idx: int) -> None:
        # Dispatcher thread: worker thread idx left, idle (an elastic pool).
        old = self._workers[idx]
        if old is None:
            return      # the teardown joined it already, and reported it
        old.join()
        self._left(idx, old.name)

    def _left(self, idx: int, name: str) -> None:
        # A worker left idle: not an error, and no replacement; its index is
        # free again.  Tasks that came meanwhile may have found no idle
        # worker and no free index: start one for them now.
        with self._state_lock:
            self._workers[idx] = None
            self._taken[idx] = False
        self._count_workers()
        self._emit("exit", name, None)
        self._regrow()

    def _regrow(self) -> None:
        if self._tasks_waiting() and self._live_workers() < self.n_workers:
            try:
                self._grow(1)
            except Exception as e:
                self._emit_error(e)

    def _worker_died_error(self, idx: int, status: int | None, held: bool,
                           started: bool = True) -> BaseException:
        old = self._workers[idx]
        name = old.name if old is not None else self._worker_names[idx]
        err = ProcessWorkers.died_error(name, status)
        if not held:
            err.args = (err.args[0].replace("while running this task",
                                            "while idle" if started else "before it started"),)
        return err

    def _on_process_exit(self, idx: int, status: int | None, leaving: int,
                         err: BaseException, held: bool, started: bool = True) -> None:
        # Dispatcher thread: worker process idx is gone; the task it held,
        # if any, has been failed with err.
        old, self._workers[idx] = self._workers[idx], None
        if old is None and not held:
            return      # the teardown joined it already, and reported it
        self._count_workers()
        name = old.name if old is not None else self._worker_names[idx]
        if leaving == LEAVE_IDLE and not held:
            self._left(idx, name)
            return
        if self._kind.stopping and not held:
            # The pool is stopping: a worker that left (seeing it stop
            # before it was told) is not replaced.
            self._emit("exit", name, None)
            return
        if leaving == LEAVE_INIT_FAILED:
            self._emit("exit", name, None)
            self._initializer_failed()
            return
        if leaving == LEAVE_RETIRED or leaving == LEAVE_STOPPED:
            # Retired, or stopped with the task it ran (a cancel, a timeout).
            self._emit("exit", name, None)
        else:
            self._emit("exit", name, err)
            self._emit_error(err)
            if not started and not held and self._cannot_start(status, err):
                return
        if self.state in (RUNNING, CLOSING) and not self._kind.stopping:   # keep the pool's size
            try:
                with self._state_lock:
                    if self._workers[idx] is None:
                        self._respawn(idx)
            except Exception as e:
                self._emit_error(e)
                if not any(self._workers):
                    raise       # nothing left to run the accepted tasks: the pool breaks

    def _cannot_start(self, status: int | None, err: BaseException) -> bool:
        # A worker process died before it reached its loop (its main module
        # fails to import, its processor to unpickle).  Replacing it
        # forever would spin and never run a task: START_FAILURES of them
        # with no task completed between, and the pool breaks.  One that
        # was killed (SIGKILL, SIGTERM) did not fail: someone stopped it.
        import signal

        if status is None or -status in (signal.SIGKILL, signal.SIGTERM):
            return False
        s = self._stats()
        done = s["completed"] + s["failed"]
        if done != self._start_failures[1]:
            self._start_failures = [0, done]
        self._start_failures[0] += 1
        if self._start_failures[0] < START_FAILURES:
            return False
        self._workers_cannot_start(err)
        return True

    def _workers_cannot_start(self, err: BaseException) -> None:
        # Nothing could run the accepted tasks: raised on the dispatcher,
        # this breaks the pool (they fail with it as their cause).
        raise type(err)(f"worker processes cannot start: {START_FAILURES} in a row died "
                        f"before running a task; the last: {err}") from err

    def _initializer_failed(self) -> None:
        pass

    def _kill_worker(self, idx: int) -> None:
        # The engine stopped the task worker process idx runs (a cancel, a
        # timeout): the process goes, and is replaced as any dead worker.
        self._kind.kill(idx)

    def _join_workers(self) -> None:
        # Dispatcher thread, after workers were told to stop.
        kind = self._kind
        kind.quiesce()
        terminating = self.state == TERMINATING
        for i, t in enumerate(self._workers):
            if t is not None:
                kind.join(t, terminating)
                self._workers[i] = None     # one "exit" per worker, even if lost meanwhile
                self._emit("exit", t.name, None)
        self._count_workers()
        kind.stop()

    # ------------------------------------------------------------ events

    def on(self, event: str, listener: Callable[..., Any]) -> None:
        """Add a listener: "error" (exc), "spawn" (worker name), "exit"
        (worker name, exc), "drain" (no argument: the tasks that had to wait
        for a worker have all started)."""
        self._listener_list(event)
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self._listeners[event].append(listener)
        if event == "drain":
            self._watch_drain(True)

    def off(self, event: str, listener: Callable[..., Any]) -> None:
        """Remove a listener added with on(); unknown listeners are ignored."""
        listeners = self._listener_list(event)
        try:
            listeners.remove(listener)
        except ValueError:
            pass
        if event == "drain" and not listeners:
            self._watch_drain(False)

    def _listener_list(self, event: str) -> list[Callable[..., Any]]:
        try:
            return self._listeners[event]
        except (KeyError, TypeError):
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}") from None

    def _emit(self, event: str, *args: Any) -> None:
        # Runs on the dispatcher, which must not die: whatever a listener
        # raises, a BaseException included, is logged and the next one runs.
        for listener in list(self._listeners[event]):
            try:
                listener(*args)
            except BaseException:
                logger.exception("fastpool: %r listener %r raised", event, listener)

    def _emit_error(self, exc: BaseException) -> None:
        if self._listeners["error"]:
            self._emit("error", exc)
        else:
            logger.error("fastpool: %s", exc, exc_info=exc)

    def _callback_error(self, exc: BaseException) -> None:
        # A callback raised: the pool carries on, the error goes to listeners.
        if self._listeners["error"]:
            self._emit("error", exc)
        else:
            logger.error("fastpool: exception in task callback", exc_info=exc)

    @staticmethod
    def _worker_exited_error(cause: BaseException) -> WorkerExitedError:
        err = WorkerExitedError(f"the worker running this task exited: {cause!r}")
        err.__cause__ = cause
        return err

    def _closed_error(self) -> PoolClosedError:
        failure = self._failure
        if failure is None:
            return PoolClosedError("the pool was terminated before the task started")
        err = PoolClosedError(f"the pool broke before the task started: {failure!r}")
        err.__cause__ = failure
        return err

    # --------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Accept nothing new; return once every accepted task has completed
        and its callback has returned.  Idempotent."""
        self._request_close()
        self._wait_stopped()

    def terminate(self) -> None:
        """Start nothing new: tasks not yet started complete with
        PoolClosedError.  Returns once nothing will run any more."""
        self._request_terminate()
        self._wait_stopped()

    def _wait_stopped(self) -> None:
        me = threading.current_thread()
        if me is self._runner or me in self._workers:
            return      # called from a callback or a task: cannot wait for itself
        with self._dispatcher_lock:
            inline = (self._dispatcher is None and not self._dispatcher_started
                      and self._nothing_pending())
            if inline:
                self._mark_dispatcher_started()
        if inline:
            # No dispatcher was ever needed and nothing is left to complete:
            # this thread tears the pool down itself.
            self._dispatch_body()
            if isinstance(self._failure, KeyboardInterrupt):
                raise self._failure
            return
        self._ensure_dispatcher()
        with self._dispatcher_lock:
            here, self._dispatch_in_closer = self._dispatch_in_closer, False
        if here:
            self._dispatch_body()
            return
        self._stopped.wait()
        if self._dispatcher is not None:
            self._dispatcher.join()

    def _close_at_exit(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.state != RUNNING

    # ------------------------------------------------- queue and stats

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until the queue has room for one more task (True), or
        `timeout` seconds have passed (False).  Returns at once on a pool
        without max_queue.  Another producer may take the room first: then
        the next run_task raises QueueFullError again.  Raises
        PoolClosedError once the pool is closed, and RuntimeError in a
        callback of this pool: the thread running it is the one that moves
        the queue on, so the wait could never end."""
        timeout = _check_timeout(timeout)
        if self.max_queue >= 0 and getattr(_future._dispatching, "pool", None) is self:
            raise RuntimeError("wait_for_room() cannot wait in a callback of its own pool (the "
                               "thread running callbacks is the one that makes room): catch "
                               "QueueFullError there, or produce from another thread")
        return self._wait_room(timeout)

    def stats(self) -> dict[str, Any]:
        """The pool's counters, as a dict: submitted, completed (with a
        result), failed, cancelled, timed_out, refused (QueueFullError),
        queued (accepted, not started), running, workers (alive), respawns;
        "wait" (accepted to started) and "run" (started to done), each
        {"p50", "p99", "max"} in seconds from log2 histograms ("timed": how
        many tasks they hold; one in 32 native kernel tasks on numbers is
        timed); utilization (busy time / (size * uptime)), uptime, size,
        max_queue, kind, owner_pid, state.  Read from the pool's shared segment, as
        `python -m fastpool stats NAME` reads them from another process;
        after the pool has stopped, as they were then."""
        return self._stats()

    # -------------------------------------------------------- Executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> PoolFuture:
        """Run fn(*args, **kwargs) in a worker; native kernels take the native path."""
        return self._submit_call(fn, args, kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Executor.map: results in order; an item's exception is raised
        when iteration reaches it."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if isinstance(fn, kernels.Kernel) and len(iterables) == 1:
            # Native path: the items are read and computed at the call, by
            # this thread and idle workers together; results come out in order.
            items = iterables[0]
            if type(items) is not list and type(items) is not tuple:
                items = list(items)
            # As Executor.map: nothing to run, nothing refused.
            return self._map_kernel(fn, items, self._map_helpers() if items else 0)
        if self.max_queue >= 0:
            return _map_with_room(self, self.submit, fn, iterables, timeout)
        return super().map(fn, *iterables, timeout=timeout)

    def _map_helpers(self) -> int:
        """How many workers may help with a native map: the calling thread
        works too, so one CPU fewer than this process may use.  (Worker
        processes cannot read this process's items.)"""
        return 0 if self.procs else min(self.n_workers, _usable_cpus() - 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown: close, optionally cancelling pending futures."""
        if cancel_futures:
            for fut in self._pending_futures():
                fut.cancel()
        self._request_close()
        if wait:
            self._wait_stopped()
        else:
            self._ensure_dispatcher()   # it stops the workers once they are done

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class WorkerPool(_PoolBase):
    """A fixed set of workers running tasks from a FIFO: the Node.js WorkerPool.

    `processor` is what a worker does with a task: a native kernel
    (`fastpool.kernels.add`, the default, `mul` or `fma`), or any callable
    f(task) -> result.
    `workers="thread"` (the default) runs it in threads of this process,
    native kernels without the GIL, Python code with it.  `workers="process"`
    runs it in worker processes (started with `start_method`: None for
    forkserver where it exists, else spawn; or "fork", "spawn", or a
    multiprocessing context), so Python code runs in parallel and a worker
    that crashes costs only the task it held (WorkerExitedError); the
    processor and the tasks' functions travel by reference, tasks and
    results pickled through shared memory (at most 256 Python tasks at once
    in the rings of a process pool).  `ring_size` is how many tasks can be
    in the native rings at once (rounded up to fit one per worker); the rest
    wait in a FIFO, so `run_task` never blocks.

    `max_queue` bounds how many tasks may wait for a worker (None: no
    bound): beyond it `run_task`, `run` and `submit` raise QueueFullError,
    and `wait_for_room()` blocks a producer until one more fits; "drain" is
    emitted when the tasks that had to wait have all started.  `stats()`
    returns the pool's counters, which live in its shared segment: a
    process pool's is named (`shm_name`), so `python -m fastpool stats NAME`
    and `top NAME` read them from another process; a thread pool maps an
    anonymous one unless given `shm_name`, the name to make it under.

    `run_task` returns a TaskHandle: `handle.cancel()` (and `cancel()` of a
    `run` future) completes the task once with CancelledError unless it has
    completed; a task that has not started never runs, a running one is
    stopped (a worker process is replaced; a worker thread's task sees
    `fastpool.cancelled()` become true, and its result is dropped).
    `timeout` (seconds; per task, or the pool's default here) counts from
    the start: the task then completes with TaskTimeoutError and is stopped
    the same way.  `submit` keeps concurrent.futures' rule (a running
    future cannot be cancelled); the pool's timeout applies to it.

    Callbacks run one at a time on the thread that completes tasks.  One
    that waits for another task of the pool (`pool.run(t).result()`,
    `concurrent.futures.wait`) gets its result: the waiting thread completes
    tasks meanwhile instead of blocking, and the callbacks that fall due run
    after the waiting one returns.  After `terminate()`, such a wait that
    is not already satisfied raises PoolClosedError.

    Elastic size: with `min_workers`, that many workers start with the
    pool and the others when a task finds no idle worker, up to
    `num_threads`; with `idle_timeout` (seconds; min_workers then defaults
    to 0), a worker beyond min_workers that has had no work that long
    leaves, reported by "exit" with no error and not replaced.  By default
    the size is fixed: worker processes all start with the pool, threads
    as tasks come, and none leaves.
    """

    def __init__(self, num_threads: int | None = None, processor: Callable[[Any], Any] | None = None,
                 *, workers: str = "thread", start_method: Any = None,
                 ring_size: int = 65536, max_queue: int | None = None,
                 timeout: float | None = None, shm_name: str | None = None,
                 min_workers: int | None = None, idle_timeout: float | None = None) -> None:
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        _check_count("num_threads", num_threads, MAX_WORKERS)
        min_workers, idle_ns = _check_elastic(min_workers, idle_timeout, num_threads)
        if processor is not None and not callable(processor):
            raise TypeError(f"processor must be callable or None, not {type(processor).__name__}")
        if workers not in WORKER_KINDS:
            raise ValueError(f"workers must be 'thread' or 'process', got {workers!r}")
        procs = None
        if workers == "process":
            procs = dict(ctx=_mp_context(start_method), initializer=None, initargs=(), max_tasks=None)
        elif start_method is not None:
            raise ValueError("start_method is for workers='process'")
        pid = next(_pool_ids)
        names = [f"fastpool-worker-{pid}-{i}" for i in range(num_threads)]
        self._start(num_threads, processor, ring_size, names, procs=procs, max_queue=max_queue,
                    shm_name=shm_name, timeout=timeout)
        start = num_threads if procs is not None else 0     # a fixed set of processes, started now
        if min_workers is not None:
            self._elastic = True
            self._configure_elastic(min_workers, idle_ns)
            start = min_workers
        if start:
            try:
                with self._state_lock:
                    for i in range(start):
                        self._spawn(i)
            except BaseException:
                # (an unpicklable processor, no processes left to start):
                # what was made goes, the segment and the dispatcher too.
                self.terminate()
                raise

    @property
    def num_threads(self) -> int:
        return len(self._workers)

    def __repr__(self) -> str:
        state = ("running", "closing", "terminating", "closed")[min(self.state, STOPPED)]
        kind = " workers='process'" if self.procs else ""
        return f"<fastpool.WorkerPool {state} num_threads={self.num_threads}{kind}>"
