"""Stats: counters in the pool's shared segment, read by pool.stats() and,
from another process, by `python -m fastpool stats NAME` and `top NAME`;
on both worker kinds."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
import uuid

import pytest

import fastpool
from _support import WAIT, Recorder
from _tasks import echo, fail_odd, gated


@pytest.fixture
def pool_of(make_pool, kind, gate):
    """Pools of this run's worker kind, named so that another process can
    read their stats; gated tasks are let go before the pools stop."""
    pools = []

    def make(processor=None, num_threads=2, **kwargs):
        if kind == "thread":
            kwargs.setdefault("shm_name", unique_name())
        pool = make_pool(num_threads, processor, workers=kind, **kwargs)
        pools.append(pool)
        return pool

    yield make
    gate.open()         # thread workers cannot be stopped from outside
    for pool in pools:
        pool.terminate()


def unique_name() -> str:
    return f"fastpool-test-{uuid.uuid4().hex[:12]}"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastpool", *args], capture_output=True,
                          text=True, timeout=WAIT)


def check_histogram(h: dict, at_least: float = 0.0) -> None:
    assert set(h) == {"p50", "p99", "max"}
    assert 0 <= h["p50"] <= h["p99"] <= h["max"] < WAIT
    assert h["max"] >= at_least


# -- counts ------------------------------------------------------------------------

def test_counts_are_exact_after_tasks_and_failures(pool_of):
    pool = pool_of(fail_odd)
    n = 200
    got = Recorder(n)
    for i in range(n):
        pool.run_task(i, got.callback)
    got.wait()
    s = pool.stats()
    assert (s["submitted"], s["completed"], s["failed"]) == (n, n // 2, n // 2)
    assert (s["cancelled"], s["timed_out"], s["refused"], s["respawns"]) == (0, 0, 0, 0)
    assert (s["queued"], s["running"], s["workers"], s["size"]) == (0, 0, 2, 2)
    assert s["timed"] == n                  # Python tasks: every one
    check_histogram(s["wait"])
    check_histogram(s["run"])
    assert s["run"]["p50"] > 0
    assert 0 < s["busy"] <= 2 * s["uptime"]
    assert 0 < s["utilization"] <= 1
    assert s["max_queue"] is None and s["state"] == "running" and s["owner_pid"] == os.getpid()
    pool.close()
    after = pool.stats()            # as they were when the pool stopped
    assert (after["submitted"], after["completed"], after["failed"]) == (n, n // 2, n // 2)
    assert after["state"] == "closed" and (after["workers"], after["running"], after["queued"]) == (0, 0, 0)


def test_native_kernel_tasks_on_numbers_are_timed_one_in_32(pool_of):
    from fastpool._core import SAMPLE

    assert SAMPLE == 32
    pool = pool_of()
    n = 3 * SAMPLE
    got = Recorder(n)
    for i in range(n):
        pool.run_task((i, 1), got.callback)
    assert sorted(r for _, r in got.wait()) == list(range(1, n + 1))
    products = [pool.submit(fastpool.kernels.mul, (i, 3)) for i in range(SAMPLE + 1)]
    assert [f.result(timeout=WAIT) for f in products] == [3 * i for i in range(SAMPLE + 1)]
    s = pool.stats()
    total = n + SAMPLE + 1
    assert (s["submitted"], s["completed"], s["failed"]) == (total, total, 0)
    assert s["timed"] == 5      # the 1st, 33rd, 65th, 97th and 129th
    check_histogram(s["run"])
    check_histogram(s["wait"])


def test_a_bad_task_and_a_lost_worker_count_as_failed(pool_of, kind):
    pool = pool_of()
    with pytest.raises(TypeError):
        pool.run({"a": "x", "b": object()}).result(timeout=WAIT)
    s = pool.stats()
    assert (s["submitted"], s["completed"], s["failed"]) == (1, 0, 1)
    if kind == "process":
        from _tasks import crash

        with pytest.raises(fastpool.WorkerExitedError):
            pool.submit(crash, "exit").result(timeout=WAIT)
        assert pool.submit(echo, 1).result(timeout=WAIT) == 1
        s = pool.stats()
        assert (s["submitted"], s["completed"], s["failed"], s["respawns"]) == (3, 1, 2, 1)


# -- what the histograms measure -----------------------------------------------------

def test_wait_and_run_times_cover_what_happened(pool_of, gate):
    """One worker: task a runs until released; b waits behind it.  Its wait
    lasts at least from b's submit to a's release; a's run at least from
    its start to its release.  Meanwhile another process reads the live
    pool: one running, one queued."""
    pool = pool_of(gated, num_threads=1)
    a = pool.run((gate.name, "a"))
    gate.arrived()
    a_started = time.monotonic()
    b = pool.submit(echo, "b")
    b_submitted = time.monotonic()
    proc = cli("stats", pool.shm_name, "--json")       # takes a while: that is the wait measured
    released = time.monotonic()
    gate.open()
    assert (a.result(timeout=WAIT), b.result(timeout=WAIT)) == ("a", "b")
    assert proc.returncode == 0, proc.stderr
    live = json.loads(proc.stdout)
    assert (live["submitted"], live["queued"], live["running"], live["completed"]) == (2, 1, 1, 0)
    assert live["name"] == pool.shm_name and live["kind"] == pool_kind(pool)
    s = pool.stats()
    check_histogram(s["wait"], at_least=released - b_submitted)
    check_histogram(s["run"], at_least=released - a_started)
    assert s["timed"] == 2


def pool_kind(pool) -> str:
    return "process" if pool.procs else "thread"


# -- python -m fastpool stats | top ------------------------------------------------

def test_stats_prints_a_live_pool_from_another_process(pool_of, gate):
    pool = pool_of(gated)
    futs = [pool.run((gate.name, i)) for i in range(3)]
    gate.arrived()
    gate.arrived()
    proc = cli("stats", pool.shm_name)
    gate.open()
    assert [f.result(timeout=WAIT) for f in futs] == [0, 1, 2]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert f"fastpool pool {pool.shm_name}: 2 {pool_kind(pool)} workers" in proc.stdout
    assert "submitted 3  completed 0  failed 0" in proc.stdout
    assert "queued 1  running 2  workers 2  respawns 0" in proc.stdout
    # Reading it did not take the segment with it, nor disturb the pool.
    assert pool.run((gate.name, 3)).result(timeout=WAIT) == 3      # the gate is open now
    pool.close()
    assert pool.stats()["completed"] == 4


def test_reading_a_pool_leaves_the_resource_tracker_alone(pool_of):
    # Registered there, the segment would be unlinked when the reader exits.
    pool = pool_of(echo)
    script = (f"from multiprocessing import resource_tracker\n"
              f"from fastpool.__main__ import _attach, _read\n"
              f"seg = _attach({pool.shm_name!r})\n"
              f"print(_read(seg, 'x')['size'])\n"
              f"seg.close()\n"
              f"print(resource_tracker._resource_tracker._pid)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "None"]        # read, and no tracker was ever started


def read_until(fd: int, predicate, what: str) -> bytes:
    """Read from `fd` until predicate(everything read) holds."""
    data = b""
    deadline = time.monotonic() + WAIT
    while not predicate(data):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"timed out waiting for {what}; got {data!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:         # EIO: the other side has closed
            chunk = b""
        if not chunk:
            raise AssertionError(f"the output ended before {what}; got {data!r}")
        data += chunk
    return data


FRAME = b"\x1b[H"       # where top starts each redraw


def test_top_redraws_a_live_pool_on_a_terminal(pool_of, gate):
    pool = pool_of(gated)
    futs = [pool.run((gate.name, i)) for i in range(3)]
    gate.arrived()
    gate.arrived()
    master, slave = pty.openpty()
    try:
        top = subprocess.Popen([sys.executable, "-m", "fastpool", "top", pool.shm_name,
                                "--interval", "0.05"],
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        try:
            # The first frame, then a redraw in place: the rate line appears
            # from the second frame on.
            out = read_until(master, lambda d: d.count(FRAME) >= 3 and b"tasks/s" in d.split(FRAME)[-2],
                             "a few refreshes")
            assert out.startswith(b"\x1b[?25l\x1b[2J")          # cursor hidden, screen cleared
            frame = out.split(FRAME)[-2].decode()
            lines = [line.rstrip("\x1b[K\r") for line in frame.split("\n")]
            assert lines[0].startswith(f"fastpool pool {pool.shm_name}: 2 {pool_kind(pool)} workers")
            assert "submitted 3  completed 0" in lines[1]
            assert "queued 1  running 2  workers 2" in lines[2]
            assert "% now" in lines[3]
            assert lines[4].lstrip().startswith("wait") and lines[5].lstrip().startswith("run")
            assert "q to quit" in frame
            # Keys arrive one at a time, unechoed, while it runs.
            assert not termios.tcgetattr(slave)[3] & termios.ICANON
            gate.open()
            assert [f.result(timeout=WAIT) for f in futs] == [0, 1, 2]
            read_until(master, lambda d: b"completed 3" in d, "the new counts")
            os.write(master, b"q")
            assert top.wait(WAIT) == 0
            rest = read_until(master, lambda d: b"\x1b[?25h" in d, "the cursor shown again")
            assert rest.endswith(b"\x1b[?25h")
            assert termios.tcgetattr(slave)[3] & termios.ECHO        # the terminal as it was
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
    finally:
        os.close(master)
        os.close(slave)


def test_top_stops_when_the_pool_stops(pool_of):
    pool = pool_of(echo)
    assert pool.run(1).result(timeout=WAIT) == 1
    top = subprocess.Popen([sys.executable, "-m", "fastpool", "top", pool.shm_name, "--interval", "0.05"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = read_until(top.stdout.fileno(), lambda d: b"refresh every" in d, "the first frame")
        assert b"\x1b[" not in first            # not a terminal: plain blocks
        pool.close()
        out, err = top.communicate(timeout=WAIT)
        assert top.returncode == 0, err
        assert err == b""
        assert (first + out).rstrip().endswith(b"(the pool has stopped)")
        assert b"closed" in out
    finally:
        if top.poll() is None:
            top.kill()
            top.communicate()


def test_top_count_stops_after_that_many_refreshes(pool_of):
    pool = pool_of(echo)
    proc = cli("top", pool.shm_name, "--interval", "0.01", "--count", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("refresh every 0.01 s") == 3


# -- names that are not pools ------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "top"])
def test_an_unknown_name_is_refused(command):
    proc = cli(command, "fastpool-no-such-pool")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"python -m fastpool {command}: no pool named 'fastpool-no-such-pool': "
                           f"there is no shared-memory segment by that name (a pool's name is its "
                           f"shm_name; a thread pool has one only when made with shm_name=...)\n")


@pytest.mark.parametrize("size", [0, 64, 8192], ids=["empty", "too-small", "zeros"])
def test_a_segment_that_is_not_a_pool_is_refused(size):
    import _posixshmem

    name = unique_name()
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, size)
        proc = cli("stats", name, "--json")
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"python -m fastpool stats: {name!r} is not a fastpool pool")
    finally:
        os.close(fd)
        _posixshmem.shm_unlink("/" + name)


def test_a_pool_of_another_layout_version_is_refused(make_pool):
    from fastpool._core import _attach_untracked

    pool = make_pool(1, shm_name=unique_name())
    raw = _attach_untracked(pool.shm_name)
    try:
        raw[4] += 1          # the layout version word, after the magic
        proc = cli("stats", pool.shm_name)
        raw[4] -= 1
    finally:
        raw.close()
    assert proc.returncode == 2
    assert "is a fastpool pool of another version" in proc.stderr


# -- naming a thread pool's segment --------------------------------------------------

def test_a_thread_pool_is_anonymous_unless_named(make_pool):
    assert make_pool(1).shm_name is None
    name = unique_name()
    pool = make_pool(1, shm_name=name)
    assert pool.shm_name == name
    assert os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(FileExistsError, match=f"a shared-memory segment named '{name}' exists already"):
        make_pool(1, shm_name=name)
    pool.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_process_pool_takes_the_name_it_is_given(make_pool):
    name = unique_name()
    pool = make_pool(1, echo, workers="process", shm_name=name)
    assert pool.shm_name == name
    assert pool.run(5).result(timeout=WAIT) == 5       # its workers attached by that name
    proc = cli("stats", name, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["completed"] == 1
    pool.close()
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("value, error, message", [
    (3, TypeError, "shm_name must be a str or None, not int"),
    ("", ValueError, "shm_name must be a non-empty name without '/', got ''"),
    ("a/b", ValueError, "shm_name must be a non-empty name without '/', got 'a/b'"),
])
def test_bad_shm_names(value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        fastpool.WorkerPool(1, shm_name=value)
