"""Worker kinds: how a pool's workers are started, watched and replaced.

The engine (fastpool._core) does not know what a worker is: it publishes
task cells in the shared segment and completes the result cells that come
back.  A worker kind starts worker `idx` (which then runs the native worker
loop on the segment), tells the engine when one is gone, and joins them at
the end.  Threads run the loop in this process; processes attach to the
segment by name.  Another kind (workers on other machines, say) would be
one more class with the same four methods.

    start(idx, name) -> handle    the handle (.name, .join()) goes into pool._workers[idx]
                                  before the worker starts, so that it is there
                                  before anything can report the worker gone
    join(handle, terminating)     wait for a worker that was told to stop
    quiesce()                     the pool is stopping: exits are expected now
    stop()                        after the last join: let go of what watches them
    kill(idx)                     stop worker idx and the task it runs, if it can be
"""
from __future__ import annotations

import os
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ThreadWorkers", "ProcessWorkers", "FunctionRefs"]

TERMINATE_GRACE = 0.2    # seconds a terminating pool's worker process has to stop before it is killed


class ThreadWorkers:
    """Workers are threads of this process, running the loop without the GIL."""

    kind = "thread"
    stopping = False

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def start(self, idx: int, name: str) -> threading.Thread:
        t = threading.Thread(target=self._pool._worker_body, args=(idx,), name=name)
        self._pool._workers[idx] = t
        t.start()
        return t

    def join(self, handle: threading.Thread, terminating: bool) -> None:
        handle.join()       # a thread cannot be stopped from outside

    def quiesce(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def kill(self, idx: int) -> None:
        pass        # a thread cannot be stopped from outside: its task is asked to stop


def default_context():
    """forkserver where it exists, else spawn (as the stdlib's process pool on 3.14)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # A fork server that has fastpool's worker module loaded starts each
    # worker process (and each replacement) without importing it again.
    # Only possible before the server starts; what else it preloads stays.
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    preload = getattr(server, "_preload_modules", None)
    if getattr(server, "_forkserver_pid", 0) is None and isinstance(preload, list) \
            and __name__ not in preload:
        ctx.set_forkserver_preload(preload + [__name__])
    return ctx


class ProcessWorkers:
    """Workers are processes attached to the pool's named segment.

    One thread of this process (the watcher) blocks on the processes'
    sentinels; when one exits, it finishes whatever ring operation the dead
    worker was in the middle of and posts a death notice to the result ring,
    after everything that worker published.  The dispatcher then fails the
    task it held, reports it, and starts a replacement.
    """

    kind = "process"

    def __init__(self, pool: Any, ctx: Any, processor: Any, initializer: Any, initargs: tuple,
                 max_tasks: int | None) -> None:
        self._pool = pool
        self._ctx = ctx if ctx is not None else default_context()
        self._processor = processor
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks = max_tasks or 0
        self._lock = threading.Lock()
        self._procs: dict[int, Any] = {}      # idx -> the live Process
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._watcher: threading.Thread | None = None
        self._joined: list = []

    def start(self, idx: int, name: str) -> Any:
        pool = self._pool
        if self._stopping:
            raise RuntimeError("the pool's workers are stopping: no new worker process")
        p = self._ctx.Process(
            target=_process_main, name=name,
            args=(pool.shm_name, idx, self._processor, self._initializer, self._initargs,
                  self._max_tasks, pool._spill_prefix, os.getpid()))
        pool._workers[idx] = p
        p.start()
        with self._lock:
            self._procs[idx] = p
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="fastpool-watcher",
                                                 daemon=True)
                self._watcher.start()
        os.write(self._wake_w, b"\0")     # watch its sentinel too
        return p

    def _watch(self) -> None:
        from multiprocessing.connection import wait

        while True:
            with self._lock:
                if self._stopping and not self._procs:
                    return
                watched = {p.sentinel: (idx, p) for idx, p in self._procs.items()}
            for ready in wait([self._wake_r, *watched]):
                if ready == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                idx, p = watched[ready]
                status = _reap(p)
                with self._lock:
                    if self._procs.get(idx) is p:
                        del self._procs[idx]
                    live = list(self._procs)
                    expected = self._stopping
                if not expected:
                    self._pool._worker_process_gone(idx, status, live)

    def join(self, handle: Any, terminating: bool) -> None:
        # Workers leave their loop once the pool stops; one running a task
        # of a terminating pool is killed after a short grace (its task
        # then fails with PoolClosedError).
        try:
            handle.join(TERMINATE_GRACE if terminating else None)
            if handle.exitcode is None and not _ended(handle):
                handle.kill()
                handle.join()
        except ValueError:
            return      # closed already: the watcher saw it exit
        self._joined.append(handle)     # closed in stop(), once nothing watches it

    def kill(self, idx: int) -> None:
        """Stop worker idx now (SIGKILL): the engine stopped the task it
        runs.  The watcher sees it go, and it is replaced."""
        with self._lock:
            p = self._procs.get(idx)
        if p is not None:
            try:
                p.kill()
            except ValueError:
                pass        # reaped and closed meanwhile: it is gone already

    def quiesce(self) -> None:
        with self._lock:
            self._stopping = True

    @property
    def stopping(self) -> bool:
        """The pool is stopping its workers: none is replaced any more."""
        return self._stopping

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._procs.clear()
            watcher = self._watcher
        os.write(self._wake_w, b"\0")
        if watcher is not None:
            watcher.join()
        for p in self._joined:
            _close(p)
        self._joined.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def forget_after_fork(self) -> None:
        # A forked child's copy: the parent's processes are not its children.
        self._procs = {}
        self._watcher = None
        self._lock = threading.Lock()

    @staticmethod
    def died_error(name: str, status: int | None) -> BaseException:
        if status is None:
            how = "exited"
        elif status < 0:
            import signal

            try:
                how = f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
        else:
            how = f"exited with code {status}"
        return _process_exited_error_type()(f"worker process {name} {how} while running this task")


class FunctionRefs:
    """Pickled references to plain functions, made once per function.

    Pickling a function by reference looks its module up and checks the
    name each time: most of the cost of a small task's payload.  A module
    level function (or a builtin function of a module) pickles to the same
    few bytes every time, so the pool sends those bytes and the worker
    process keeps what they resolve to (`_Runner`).  Anything else (a bound
    method, whose object pickles by value; a callable object) is pickled
    with each call, as before.
    """

    MAX = 1024      # distinct functions remembered

    def __init__(self) -> None:
        from types import BuiltinFunctionType, FunctionType, ModuleType

        self._refs: dict = {}
        self._function, self._builtin, self._module = FunctionType, BuiltinFunctionType, ModuleType

    def ref(self, fn: Any) -> Any:
        t = type(fn)
        if t is not self._function and not (t is self._builtin and type(fn.__self__) is self._module):
            return fn
        ref = self._refs.get(fn)    # functions hash by identity
        if ref is None:
            import pickle

            ref = pickle.dumps(fn, 5)   # a lambda or a nested function raises here, as it would anyway
            if len(self._refs) < self.MAX:
                self._refs[fn] = ref
        return ref


def _reap(p: Any) -> int | None:
    """Wait for process `p`, whose sentinel is ready, let go of its fds; its
    exit status, or None if someone else reaped it first (multiprocessing's
    active_children() does, from any thread)."""
    p.join()
    status = p.exitcode
    _close(p)
    return status


def _ended(p: Any) -> bool:
    # Its sentinel, not its exit code: that is None too when someone else
    # reaped it.
    from multiprocessing.connection import wait

    return bool(wait([p.sentinel], 0))


def _close(p: Any) -> None:
    try:
        p.close()
    except ValueError:
        # Reaped by someone else, so this Process cannot tell that it has
        # ended: drop its fds the way its finalizer would.
        popen = getattr(p, "_popen", None)
        if popen is not None and hasattr(popen, "close"):
            popen.close()


_exited_type = None


def _process_exited_error_type() -> type:
    # WorkerExitedError that is also the stdlib's BrokenProcessPool; made on
    # first use, since concurrent.futures.process imports multiprocessing.
    global _exited_type
    if _exited_type is None:
        from concurrent.futures.process import BrokenProcessPool

        from fastpool.errors import WorkerExitedError

        class ProcessExitedError(WorkerExitedError, BrokenProcessPool):
            """A worker process died while running the task."""

        ProcessExitedError.__module__ = "fastpool.errors"
        ProcessExitedError.__qualname__ = "ProcessExitedError"
        _exited_type = ProcessExitedError
    return _exited_type


# ------------------------------------------------------- in the worker process

def _process_main(name: str, idx: int, processor: Any, initializer: Any, initargs: tuple,
                  max_tasks: int, spill_prefix: str, owner_pid: int) -> None:
    """A worker process: attach to the pool's segment and run its tasks."""
    from fastpool import _core
    from fastpool._payload import PayloadArea

    threading.Thread(target=_watch_owner, args=(owner_pid, name, spill_prefix),
                     name="fastpool-owner-watch", daemon=True).start()
    seg = _core.Segment.attach(name)
    area = None
    try:
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException:
                from concurrent.futures import _base

                _base.LOGGER.critical("Exception in initializer:", exc_info=True)
                _core._leave_init_failed(seg, idx)
                return
        area = PayloadArea(seg.payload_view(), seg.n_blocks, seg.block_size,
                           spill_prefix=spill_prefix)
        _core.run_worker_process(seg, idx, _Runner(seg, area, processor), max_tasks)
    finally:
        if area is not None:
            area.close()
        seg.close()


class _Runner:
    """Runs one task from its payload block; writes back its result or exception."""

    def __init__(self, seg: Any, area: Any, processor: Any) -> None:
        import marshal
        import pickle

        from fastpool import _core
        from fastpool._payload import plain

        self.seg = seg
        self.functions: dict = {}       # FunctionRefs' bytes -> the function
        self.stream_of, self.put_stream = _core.block_stream, _core.block_put_stream
        self.loads, self.mloads, self.mdumps, self.plain = pickle.loads, marshal.loads, marshal.dumps, plain
        self.area = area
        self.processor = processor
        self.kinds = (_core.PAYLOAD_PROC, _core.PAYLOAD_CALL)
        self.kernel_op = _core.kernel_py_op
        self.ok, self.failed = _core.RESULT_PAYLOAD, _core.RESULT_PAYLOAD_ERR

    def _function(self, ref: bytes) -> Any:
        # A FunctionRefs reference: unpickled once, then kept (up to MAX).
        fn = self.functions.get(ref)
        if fn is None:
            fn = self.loads(ref)
            if len(self.functions) < FunctionRefs.MAX:
                self.functions[ref] = fn
        return fn

    def __call__(self, slot: int, kind: int) -> int:
        # `slot`: the task's payload block.
        area = self.area
        proc, call = self.kinds
        stream = self.stream_of(self.seg, slot)
        if stream is None:
            return self._call_large(slot, kind)
        try:
            task = self.loads(stream) if stream[0] == 0x80 else self.mloads(stream)
            stream = None
        except BaseException as e:
            # As the stdlib's process pool, whose worker dies of it (and the
            # pool breaks): a BrokenProcessPool, for this task alone.
            from concurrent.futures.process import BrokenProcessPool

            err = BrokenProcessPool(f"the task's arguments could not be unpickled: {e!r}")
            err.__cause__ = e
            return self._error(slot, err)
        try:
            if kind == call:
                fn, args, kwargs = task
                task = None
                if type(fn) is bytes:
                    fn = self._function(fn)
                result = fn(*args, **kwargs)
            elif kind == proc:
                result = self.processor(task)
            else:       # a native kernel's task on Python objects (big ints, numpy scalars)
                result = self.kernel_op(kind)(*task)
        except BaseException as e:
            task = result = None
            return self._error(slot, e)
        task = None
        try:
            # Plain values as marshal's stream, the rest pickled (see _payload.py).
            if self.plain(result) and self.put_stream(self.seg, slot, self.mdumps(result)):
                return self.ok
            prepared = area.prepare(result)
            if prepared[1] or not self.put_stream(self.seg, slot, prepared[0]):
                area.put(slot, prepared)
            return self.ok
        except BaseException as e:      # the result does not pickle
            result = None
            return self._error(slot, e)

    def _call_large(self, slot: int, kind: int) -> int:
        # A task with out-of-band buffers or in a spill segment: read with
        # views into where it lies (no copy).  Its result is written once
        # every reference to the task is gone, so that the area can tell
        # whether the task's code kept views of it (see PayloadArea.put).
        prepared, code = self._run_large(slot, kind)
        try:
            self.area.put(slot, prepared)
            return code
        except BaseException as e:      # no room for a one-off segment
            prepared = None
            return self._error(slot, e)

    def _run_large(self, slot: int, kind: int) -> tuple:
        area = self.area
        try:
            task = area.read(slot, copy=False)
        except BaseException as e:
            from concurrent.futures.process import BrokenProcessPool

            err = BrokenProcessPool(f"the task's arguments could not be unpickled: {e!r}")
            err.__cause__ = e
            return self._prepared_error(err), self.failed
        try:
            proc, call = self.kinds
            if kind == call:
                fn, args, kwargs = task
                task = None
                if type(fn) is bytes:
                    fn = self._function(fn)
                result = fn(*args, **kwargs)
                fn = args = kwargs = None
            elif kind == proc:
                result = self.processor(task)
            else:       # a native kernel's task on Python objects (big ints, numpy scalars)
                args, task = task, None
                result = self.kernel_op(kind)(*args)
                args = None
        except BaseException as e:
            task = fn = args = kwargs = None
            return self._prepared_error(e), self.failed
        task = None
        try:
            return area.prepare(result), self.ok
        except BaseException as e:      # the result does not pickle
            result = None
            return self._prepared_error(e), self.failed

    def _prepared_error(self, exc: BaseException) -> tuple:
        from concurrent.futures.process import _ExceptionWithTraceback as wrap

        try:
            return self.area.prepare(wrap(exc, exc.__traceback__))
        except BaseException as e:      # the exception itself does not pickle
            return self.area.prepare(wrap(e, e.__traceback__))

    def _error(self, slot: int, exc: BaseException) -> int:
        # As the stdlib's process pool: the exception, with the worker's
        # traceback as its __cause__ (a _RemoteTraceback) once unpickled.
        from concurrent.futures.process import _ExceptionWithTraceback as wrap

        try:
            self.area.write(slot, wrap(exc, exc.__traceback__))
        except BaseException as e:      # the exception itself does not pickle
            self.area.write(slot, wrap(e, e.__traceback__))
        return self.failed


def _watch_owner(owner_pid: int, name: str, spill_prefix: str) -> None:
    """A worker process's guard: when the pool's owner is gone (even killed
    with SIGKILL, so it could not close its pool), remove the segment and
    the pool's one-off payload segments, and exit."""
    import select

    try:
        fd = os.pidfd_open(owner_pid)
    except ProcessLookupError:
        fd = None                   # gone already
    except (AttributeError, OSError):
        fd = -1                     # no pidfds here: look once a second
    if fd is not None and fd >= 0:
        select.select([fd], [], [])
    elif fd == -1:
        import time

        while _alive(owner_pid):
            time.sleep(1.0)
    _remove_segments(name, spill_prefix)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _remove_segments(name: str, spill_prefix: str) -> None:
    try:
        import _posixshmem
    except ImportError:
        return
    names = [name]
    try:
        names += [n for n in os.listdir("/dev/shm") if n.startswith(spill_prefix + "-")]
    except OSError:
        pass
    for n in names:
        try:
            _posixshmem.shm_unlink("/" + n.lstrip("/"))
        except OSError:
            pass
