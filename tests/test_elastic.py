"""Elastic size: min_workers and idle_timeout, on both worker kinds.

Workers beyond min_workers leave after idle_timeout seconds without work
and come back when a task finds no idle worker, up to the pool's size;
"spawn" and "exit" report it, and leaving idle is not a crash (no "error",
no replacement, `respawns` unchanged, `workers` follows)."""
from __future__ import annotations

import math
import threading

import pytest

import fastpool
from fastpool import PoolClosedError
from _support import WAIT, Gate, Recorder, child_processes
from _tasks import double, worker_name, worker_name_at_gate


@pytest.fixture
def elastic(make_pool, kind):
    def make(num_threads=4, processor=double, **kwargs):
        return make_pool(num_threads, processor, workers=kind, **kwargs)
    return make


class Events:
    """A pool's "spawn", "exit" and "error" events, in order; wait(...)
    returns once the condition on them holds (bounded by WAIT)."""

    def __init__(self, pool) -> None:
        self.spawns: list[str] = []
        self.exits: list[tuple[str, object]] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        pool.on("spawn", lambda name: self._add(self.spawns, name))
        pool.on("exit", lambda name, exc: self._add(self.exits, (name, exc)))
        pool.on("error", lambda exc: self._add(self.errors, exc))

    def _add(self, where: list, item: object) -> None:
        with self._cond:
            where.append(item)
            self._cond.notify_all()

    def wait(self, what: str, predicate) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, WAIT):
                raise AssertionError(f"timed out after {WAIT}s waiting for {what}: "
                                     f"spawns {self.spawns}, exits {self.exits}")

    def wait_exits(self, n: int) -> None:
        self.wait(f"{n} exit events", lambda: len(self.exits) >= n)


def run_at_gate(pool, n):
    """n tasks that each hold a worker at a gate until it opens: once this
    returns, n workers are running at once.  Returns (gate, futures)."""
    gate = Gate()
    futs = [pool.run(gate.name) for _ in range(n)]
    for _ in range(n):
        gate.arrived()
    return gate, futs


# -- shrink and grow ------------------------------------------------------------------

def test_workers_beyond_min_leave_when_idle_and_come_back_on_demand(elastic):
    pool = elastic(4, worker_name_at_gate, min_workers=1, idle_timeout=0.2)
    assert pool.stats()["workers"] == 1        # min_workers start with the pool
    events = Events(pool)

    gate, futs = run_at_gate(pool, 4)
    assert pool.stats()["workers"] == 4
    gate.open()
    first = {f.result(WAIT) for f in futs}
    assert len(first) == 4 and set(events.spawns) < first

    events.wait_exits(3)
    assert pool.stats()["workers"] == 1
    assert all(exc is None for _, exc in events.exits)
    assert {name for name, _ in events.exits} < first
    stayed = first - {name for name, _ in events.exits}

    # Back up to the size on demand, and every task still runs right.
    gate, futs = run_at_gate(pool, 4)
    assert pool.stats()["workers"] == 4
    gate.open()
    second = {f.result(WAIT) for f in futs}
    assert len(second) == 4 and stayed < second
    assert len(events.spawns) == 3 + 3

    events.wait_exits(6)
    stats = pool.stats()
    assert (stats["workers"], stats["respawns"], stats["size"]) == (1, 0, 4)
    assert events.errors == []
    assert (stats["completed"], stats["failed"]) == (8, 0)


@pytest.mark.parametrize("kwargs", [dict(min_workers=0, idle_timeout=0.05), dict(idle_timeout=0.05)],
                         ids=["min_workers=0", "idle_timeout_alone"])
def test_a_pool_shrunk_to_no_worker_starts_one_for_the_next_task(elastic, kind, kwargs):
    before = set(child_processes())
    pool = elastic(2, **kwargs)
    assert pool.stats()["workers"] == 0        # nothing starts before there is work
    assert set(child_processes()) == before
    events = Events(pool)
    for i in range(1, 4):
        assert pool.run(i).result(WAIT) == 2 * i
        events.wait_exits(i)
        assert pool.stats()["workers"] == 0
    assert len(events.spawns) == 3 and events.errors == []
    assert [name for name, _ in events.exits] == events.spawns      # one worker at a time
    assert pool.stats()["respawns"] == 0


def test_min_workers_alone_starts_them_with_the_pool_and_the_rest_on_demand(elastic):
    pool = elastic(3, worker_name_at_gate, min_workers=1)
    assert pool.stats()["workers"] == 1
    events = Events(pool)
    gate, futs = run_at_gate(pool, 3)
    assert pool.stats()["workers"] == 3 and len(events.spawns) == 2
    gate.open()
    assert len({f.result(WAIT) for f in futs}) == 3
    pool.close()
    assert sorted(name for name, _ in events.exits) == sorted({f.result() for f in futs})


@pytest.mark.parametrize("kwargs", [dict(min_workers=3), dict(min_workers=3, idle_timeout=math.inf)],
                         ids=["min_workers", "and_an_infinite_idle_timeout"])
def test_min_workers_equal_to_the_size_starts_every_worker_at_once(elastic, kwargs):
    pool = elastic(3, worker_name, **kwargs)
    assert pool.stats()["workers"] == 3
    assert pool.run(None).result(WAIT).startswith("fastpool-worker")


def test_an_infinite_idle_timeout_alone_keeps_the_fixed_size(elastic, kind):
    pool = elastic(3, idle_timeout=math.inf)
    # As without it: worker processes all start with the pool, threads with the tasks.
    assert pool.stats()["workers"] == (3 if kind == "process" else 0)
    assert pool.run(2).result(WAIT) == 4


# -- the moment a worker leaves ---------------------------------------------------------

@pytest.mark.parametrize("idle_timeout", [0, 0.002], ids=["at_once", "2ms"])
def test_tasks_around_the_moment_workers_leave_complete_exactly_once(elastic, kind, idle_timeout):
    # Workers leave as soon as (or just after) they find no work, so nearly
    # every task is admitted while one is deciding to leave: each must run,
    # once, whether a worker stays for it or a new one starts.
    per_thread = 150 if kind == "thread" else 30
    burst = 40
    pool = elastic(3, min_workers=0, idle_timeout=idle_timeout)
    events = Events(pool)
    rec = Recorder(4 * per_thread * burst // 10)
    failures = []

    def produce(t):
        try:
            for i in range(per_thread):
                x = t * 1_000_000 + i
                if i % 10 == 0:
                    # A burst: many tasks at once, while the workers come and go.
                    for j in range(burst):
                        pool.run_task(x * 1000 + j, rec.keyed((x, j)))
                else:
                    assert pool.run(x).result(WAIT) == 2 * x
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(4 * WAIT)
    assert failures == [] and not any(t.is_alive() for t in threads)
    rec.wait()
    by_key = rec.by_key
    assert len(by_key) == len(rec) == 4 * per_thread * burst // 10
    assert all(calls == [(None, 2 * (x * 1000 + j))] for (x, j), calls in by_key.items())
    pool.close()
    assert sorted(name for name, _ in events.exits) == sorted(events.spawns)
    assert all(exc is None for _, exc in events.exits) and events.errors == []
    stats = pool.stats()
    assert (stats["completed"], stats["failed"], stats["respawns"]) == (
        4 * per_thread + 4 * per_thread * burst // 10 - 4 * per_thread // 10, 0, 0)


def test_native_maps_while_worker_threads_come_and_go(make_pool):
    # A native map posts cells for idle workers to help; a worker leaving
    # just then must not leave them unclaimed (close() waits for them).
    pool = make_pool(2, min_workers=0, idle_timeout=0)
    items = [(i, 1) for i in range(20_000)]
    expected = [i + 1 for i in range(20_000)]
    for _ in range(100):
        assert list(pool.map(fastpool.kernels.add, items)) == expected
    closer = threading.Thread(target=pool.close)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() waits for a map's helper cells that no worker takes"


# -- close and terminate ---------------------------------------------------------------

def test_close_while_shrunk_reports_each_worker_once(elastic):
    pool = elastic(3, worker_name_at_gate, min_workers=1, idle_timeout=0.05)
    events = Events(pool)
    gate, futs = run_at_gate(pool, 3)
    gate.open()
    names = {f.result(WAIT) for f in futs}
    events.wait_exits(2)
    pool.close()
    assert sorted(name for name, _ in events.exits) == sorted(names)
    assert pool.stats()["workers"] == 0


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_stopping_while_workers_start_leaves_nothing_behind(elastic, stop):
    pool = elastic(4, min_workers=0, idle_timeout=0.01)
    events = Events(pool)
    rec = Recorder(300)
    for i in range(300):
        pool.run_task(i, rec.keyed(i))
    getattr(pool, stop)()
    by_key = rec.by_key
    assert sorted(by_key) == list(range(300))
    for i, calls in by_key.items():
        [(err, result)] = calls
        if stop == "close" or err is None:
            assert (err, result) == (None, 2 * i)
        else:
            assert isinstance(err, PoolClosedError) and result is None
    assert sorted(name for name, _ in events.exits) == sorted(events.spawns)
    assert events.errors == []
    # (and the leak check: no thread, process, fd or segment left)


def test_a_worker_that_left_is_not_replaced_by_close(elastic):
    pool = elastic(2, min_workers=0, idle_timeout=0.01)
    events = Events(pool)
    assert pool.run(5).result(WAIT) == 10
    events.wait_exits(1)
    pool.close()
    assert len(events.exits) == len(events.spawns) == 1


# -- bad arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(min_workers=-1), ValueError, "min_workers must be >= 0 or None, got -1"),
    (dict(min_workers=5), ValueError, r"min_workers must be <= num_threads \(4\), got 5"),
    (dict(min_workers=1.0), TypeError, "min_workers must be an int or None, not float"),
    (dict(min_workers=True), TypeError, "min_workers must be an int or None, not bool"),
    (dict(idle_timeout=-1), ValueError, "idle_timeout must be >= 0 or None, got -1"),
    (dict(idle_timeout=math.nan), ValueError, "idle_timeout must be >= 0 or None, got nan"),
    (dict(idle_timeout="1"), TypeError, "idle_timeout must be a number or None, not str"),
    (dict(idle_timeout=True), TypeError, "idle_timeout must be a number or None, not bool"),
    (dict(min_workers=4, idle_timeout=1), ValueError,
     r"idle_timeout: no worker could ever leave, min_workers \(4\) is the pool's size"),
])
def test_bad_elastic_arguments(kind, kwargs, error, message):
    before = set(child_processes())
    with pytest.raises(error, match=f"^{message}$"):
        fastpool.WorkerPool(4, double, workers=kind, **kwargs)
    assert set(child_processes()) == before     # nothing started (the leak check: nothing else)

