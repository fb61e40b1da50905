"""Helpers shared by the fastpool behaviour tests (no fixtures here; see conftest.py).

Every wait in the suite goes through WAIT: a hang becomes a failure with a
message, never a stuck run.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections import defaultdict

WAIT = 30.0  # upper bound for any single wait on an Event or a future

SHM_DIR = "/dev/shm"

_gate_ids = itertools.count()


class Gate:
    """Holds the tasks that call `_tasks.wait_at_gate(gate.name)`, in worker
    threads or worker processes alike, until `open()`.

    A listening Unix socket (abstract: nothing on disk): a task connects and
    blocks reading; `arrived()` accepts one, so it returns once a task is
    running; `open()` closes the listener, which resets every waiting
    connection, and a task that comes later finds nothing to wait on.
    """

    def __init__(self) -> None:
        self.name = f"\0fastpool-test-gate-{os.getpid()}-{next(_gate_ids)}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.name)
        self._listener.listen(1024)
        self._arrived: list[socket.socket] = []
        self._lock = threading.Lock()

    def arrived(self, timeout: float = WAIT) -> None:
        """Returns once one more task waits at the gate (raises after timeout)."""
        self._listener.settimeout(timeout)
        conn, _ = self._listener.accept()
        with self._lock:
            self._arrived.append(conn)

    def nobody_waiting(self) -> bool:
        """No task waits at the gate beyond those arrived() accepted."""
        self._listener.setblocking(False)
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return True
        finally:
            self._listener.setblocking(True)
        conn.close()
        return False

    def release_one(self) -> None:
        """Lets the task that arrived first (of those still held) go on."""
        with self._lock:
            conn = self._arrived.pop(0)
        conn.close()

    def open(self) -> None:
        with self._lock:
            self._listener.close()
            for conn in self._arrived:
                conn.close()
            self._arrived.clear()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self.open()


def threads_named(prefix: str) -> list[threading.Thread]:
    """Live threads whose name starts with ``prefix``."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def worker_threads() -> list[threading.Thread]:
    return threads_named("fastpool-worker")


def _held_by_other_processes() -> set[str]:
    """/dev/shm names that another live process has mapped or open.

    /dev/shm is machine-wide: segments that belong to someone else's running
    process are not this test's leaks.
    """
    me = os.getpid()
    held = set()
    prefix = SHM_DIR + "/"
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    i = line.find(prefix)
                    if i >= 0:
                        held.add(line[i + len(prefix):].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(prefix):
                    held.add(target[len(prefix):].split()[0])
        except OSError:
            continue  # the process went away, or is not ours to read
    return held


def _held_by_this_process() -> set[str]:
    prefix = SHM_DIR + "/"
    held = {t[len(prefix):] for t in open_fds().values() if t.startswith(prefix)}
    with open("/proc/self/maps") as maps:
        for line in maps:
            i = line.find(prefix)
            if i >= 0:
                held.add(line[i + len(prefix):].split()[0])
    return held


def shm_entries() -> set[str]:
    """/dev/shm names, less POSIX named semaphores ("sem." names): fastpool
    makes none, and the standard library's (its process pool's queues and
    locks) appear and may be left behind by any program on the machine."""
    try:
        return {n for n in os.listdir(SHM_DIR) if not n.startswith("sem.")}
    except FileNotFoundError:
        return set()


SHM_GRACE = 1.0


def new_shm_entries(before: set[str]) -> set[str]:
    """/dev/shm names present now and not in ``before``, not counting other processes'.

    A segment this process still holds is a leak at once. A name nobody holds
    may be another process's segment between its close() and unlink() (another
    test run on the machine): it counts only if it is still there after
    SHM_GRACE seconds.
    """
    def new_and_not_foreign():
        new = shm_entries() - before
        return new - _held_by_other_processes() if new else new

    new = new_and_not_foreign()
    deadline = time.monotonic() + SHM_GRACE
    while new and not new <= _held_by_this_process() and time.monotonic() < deadline:
        threading.Event().wait(0.02)  # re-check for other processes' segments, not synchronisation
        new = new_and_not_foreign()
    return new


def open_fds() -> dict[int, str]:
    """fd number -> what it points to, for this process."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the descriptor os.listdir used for the listing, closed by now
    return fds


def child_processes() -> dict[int, str]:
    """pid -> state letter ("Z": a zombie) of this process's children."""
    me = os.getpid()
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue        # gone meanwhile
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == me:
            children[int(name)] = fields[0]
    return children


class Snapshot:
    """Threads, fds, child processes and /dev/shm entries at one moment;
    ``leaks_since`` diffs two."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = open_fds()
        self.shm = shm_entries()
        self.children = child_processes()

    def leaks_since(self, before: "Snapshot") -> list[str]:
        problems = []
        threads = [t for t in self.threads - before.threads if t.is_alive()]
        if threads:
            problems.append(f"threads left behind: {sorted(t.name for t in threads)}")
        fds = {
            fd: target
            for fd, target in self.fds.items()
            if fd > 2 and before.fds.get(fd) != target
        }
        if fds:
            problems.append(f"file descriptors left open: {fds}")
        children = {pid: state for pid, state in self.children.items() if pid not in before.children}
        if children:
            problems.append(f"child processes left behind (pid: state): {children}")
        shm = new_shm_entries(before.shm) if self.shm - before.shm else set()
        if shm:
            problems.append(f"/dev/shm entries left behind: {sorted(shm)}")
        return problems


def wait_for(event: threading.Event, what: str, timeout: float = WAIT) -> None:
    if not event.wait(timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Recorder:
    """Collects ``callback(err, result)`` calls.

    ``callback`` records under no key, ``keyed(k)`` returns a callback that
    records under ``k``. ``wait()`` returns once ``expected`` calls in total
    have arrived (it fails on timeout). Thread safe, so it does not depend on
    callbacks being serialised.
    """

    def __init__(self, expected: int = 1) -> None:
        self.expected = expected
        self.calls: list[tuple[object, object, object]] = []  # (key, err, result)
        self._lock = threading.Lock()
        self._done = threading.Event()
        if expected <= 0:
            self._done.set()

    def _record(self, key, err, result) -> None:
        with self._lock:
            self.calls.append((key, err, result))
            if len(self.calls) >= self.expected:
                self._done.set()

    def callback(self, err, result) -> None:
        self._record(None, err, result)

    def keyed(self, key):
        def callback(err, result):
            self._record(key, err, result)

        return callback

    def wait(self, timeout: float = WAIT) -> list[tuple[object, object]]:
        if not self._done.wait(timeout):
            raise AssertionError(
                f"only {len(self.calls)} of {self.expected} callbacks after {timeout}s"
            )
        return [(err, result) for _, err, result in self.calls]

    @property
    def by_key(self) -> dict[object, list[tuple[object, object]]]:
        out = defaultdict(list)
        with self._lock:
            for key, err, result in self.calls:
                out[key].append((err, result))
        return dict(out)

    def __len__(self) -> int:
        with self._lock:
            return len(self.calls)


@contextlib.contextmanager
def first_task_running(pool):
    """Keep the pool's only worker busy with a task until the block ends;
    yields that task's future (its result is "first")."""
    started, release = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(WAIT)
        return "first"

    first = pool.submit(block)
    try:
        wait_for(started, "the first task to start")
        yield first
    finally:
        release.set()


# Every way to run one add task; each must give the same outcome.
ADD_PATHS = ("run_task", "run", "submit", "direct", "map")


def add_through(path, make_pool, task):
    """(err, result) of the add kernel on ``task``, run one way.

    "direct" calls ``kernels.add(task)``, which raises a bad task's error;
    every other path must deliver that error to the task's callback, future
    or iteration, so an exception at the call itself fails the test. The
    pool is closed before returning, so a callback that came twice would be
    seen.
    """
    from fastpool import kernels

    if path == "direct":
        try:
            return None, kernels.add(task)
        except Exception as e:
            return e, None
    pool = make_pool(2, ring_size=2)
    if path == "run_task":
        rec = Recorder(1)
        pool.run_task(task, rec.callback)
        [(err, result)] = rec.wait()
        pool.close()
        assert len(rec) == 1, rec.calls
        return err, result
    if path == "map":
        # a neighbour in the same batch, so the batch path is the one taken
        it = pool.map(kernels.add, [(1, 2), task])
        assert next(it) == 3
        try:
            return None, next(it)
        except Exception as e:
            return e, None
        finally:
            pool.close()
    if path == "run":
        fut = pool.run(task)
    elif path == "submit":
        fut = pool.submit(kernels.add, task)
    else:
        raise ValueError(f"unknown path {path!r}")
    err = fut.exception(timeout=WAIT)
    result = None if err is not None else fut.result()
    pool.close()
    return err, result


def assert_same_number(result, expected):
    """Same type and value as Python's result; NaN matches NaN and -0.0 only -0.0.
    (numpy's floats are not all Python floats: anything but an int is compared so.)"""
    import math

    assert type(result) is type(expected), (result, expected)
    if not isinstance(expected, int) and math.isnan(expected):
        assert math.isnan(result)
    elif not isinstance(expected, int):
        assert result == expected and math.copysign(1, result) == math.copysign(1, expected), (
            result, expected)
    else:
        assert result == expected


def assert_same_outcome(got, expected):
    """(err, result) pairs: the same exception (type and message) or the same number."""
    (err, result), (expected_err, expected_result) = got, expected
    if expected_err is not None:
        assert type(err) is type(expected_err), (err, expected_err)
        assert str(err) == str(expected_err)
        assert result is None
    else:
        assert err is None, err
        assert_same_number(result, expected_result)


def outcome(fn, *args):
    """(None, fn(*args)), or (the exception, None)."""
    try:
        return None, fn(*args)
    except Exception as e:
        return e, None


def held(gate, value):
    """The argument of _tasks.gated: wait at `gate`, then return `value`."""
    return (gate.name, value)


def wait_exited(pids, timeout=10):
    """Wait on each process itself (a pidfd is readable once it has
    exited); assert none outlives `timeout` seconds."""
    import select

    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue        # gone already
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        assert ready, f"process {pid} outlived its owner by {timeout} s"
