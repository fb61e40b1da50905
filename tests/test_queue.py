"""The bounded queue: max_queue, QueueFullError, wait_for_room() and the
"drain" event, on both worker kinds."""
from __future__ import annotations

import math
import threading
import time

import pytest

import fastpool
from fastpool import PoolClosedError, QueueFullError
from _support import WAIT, Gate, Recorder, held
from _tasks import echo, gated, slow_echo


@pytest.fixture
def pool_of(make_pool, kind, gate):
    pools = []

    def make(processor=gated, num_threads=2, **kwargs):
        pool = make_pool(num_threads, processor, workers=kind, **kwargs)
        pools.append(pool)
        return pool

    yield make
    gate.open()         # thread workers cannot be stopped from outside
    for pool in pools:
        pool.terminate()



def arrived(gate, n):
    for _ in range(n):
        gate.arrived()


def busy_pool(pool_of, gate, max_queue, num_threads=2):
    """A pool whose workers all run gated tasks; their futures."""
    pool = pool_of(num_threads=num_threads, max_queue=max_queue)
    running = [pool.run(held(gate, f"r{i}")) for i in range(num_threads)]
    arrived(gate, num_threads)
    return pool, running


def test_queue_full_error_at_the_limit(pool_of, gate):
    pool, running = busy_pool(pool_of, gate, max_queue=3)
    got = Recorder(1)
    queued = [pool.run(held(gate, "q0")), pool.submit(echo, "q1")]
    pool.run_task(held(gate, "q2"), got.callback)
    assert pool.stats()["queued"] == 3
    assert pool.wait_for_room(timeout=0) is False
    for submit in (lambda: pool.run_task(held(gate, "x"), got.callback),
                   lambda: pool.run(held(gate, "x")),
                   lambda: pool.submit(echo, "x")):
        with pytest.raises(QueueFullError, match=r"^the pool's queue is full: 3 tasks wait for a "
                                                 r"worker \(max_queue\); wait_for_room\(\) waits "
                                                 r"until one more fits$"):
            submit()
    s = pool.stats()
    assert (s["submitted"], s["refused"], s["queued"], s["running"], s["max_queue"]) == (5, 3, 3, 2, 3)
    gate.open()
    assert [f.result(timeout=WAIT) for f in running + queued] == ["r0", "r1", "q0", "q1"]
    assert got.wait() == [(None, "q2")]
    assert pool.wait_for_room(timeout=0) is True
    assert pool.submit(echo, "after").result(timeout=WAIT) == "after"
    pool.close()
    s = pool.stats()
    assert (s["submitted"], s["completed"], s["refused"]) == (6, 6, 3)


def test_max_queue_zero_takes_tasks_only_while_a_worker_is_free(pool_of, gate):
    pool = pool_of(max_queue=0)
    first = [pool.run(held(gate, i)) for i in range(2)]      # two free workers
    arrived(gate, 2)
    with pytest.raises(QueueFullError):
        pool.run(held(gate, 2))
    gate.release_one()
    assert pool.wait_for_room(timeout=WAIT) is True
    last = pool.run(held(gate, 2))
    gate.open()
    assert [f.result(timeout=WAIT) for f in first + [last]] == [0, 1, 2]


def test_a_pool_without_max_queue_always_has_room(pool_of, gate):
    pool, _ = busy_pool(pool_of, gate, max_queue=None)
    futs = [pool.submit(echo, i) for i in range(100)]
    assert pool.wait_for_room(timeout=0) is True
    assert pool.stats()["queued"] == 100
    gate.open()
    assert [f.result(timeout=WAIT) for f in futs] == list(range(100))


def test_wait_for_room_wakes_when_a_task_ends(pool_of, gate):
    pool, running = busy_pool(pool_of, gate, max_queue=2)
    queued = [pool.submit(echo, i) for i in range(2)]
    woke = []
    done = threading.Event()

    def producer():
        woke.append(pool.wait_for_room())
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    try:
        deadline = time.monotonic() + WAIT
        while pool._room_waiters() == 0:        # it has counted itself in: a task's end must wake it
            assert time.monotonic() < deadline
        assert not done.is_set()
        gate.release_one()
        assert done.wait(WAIT)
        assert woke == [True]
    finally:
        gate.open()
        t.join(WAIT)
    assert [f.result(timeout=WAIT) for f in running + queued] == ["r0", "r1", 0, 1]
    assert pool._room_waiters() == 0


def test_wait_for_room_gives_up_after_its_timeout(pool_of, gate):
    pool, _ = busy_pool(pool_of, gate, max_queue=0)
    start = time.monotonic()
    assert pool.wait_for_room(timeout=0.05) is False
    assert time.monotonic() - start >= 0.05
    assert pool._room_waiters() == 0


def test_closing_the_pool_ends_a_wait_for_room(pool_of, gate):
    pool, running = busy_pool(pool_of, gate, max_queue=0)
    errors = []
    done = threading.Event()

    def producer():
        try:
            pool.wait_for_room()
        except BaseException as e:
            errors.append(e)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    deadline = time.monotonic() + WAIT
    while pool._room_waiters() == 0:
        assert time.monotonic() < deadline
    closer = threading.Thread(target=pool.close)
    closer.start()
    assert done.wait(WAIT)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosedError)
    gate.open()
    closer.join(WAIT)
    t.join(WAIT)
    assert [f.result(timeout=0) for f in running] == ["r0", "r1"]
    with pytest.raises(PoolClosedError):
        pool.wait_for_room()


def test_wait_for_room_in_a_callback_raises_instead_of_deadlocking(pool_of, gate):
    pool = pool_of(max_queue=4)
    seen = Recorder(2)

    def callback(err, result):
        try:
            pool.wait_for_room()
        except RuntimeError as e:
            seen.callback(None, e)

    def done_callback(fut):
        try:
            pool.wait_for_room(timeout=1)
        except RuntimeError as e:
            seen.callback(None, e)

    pool.run_task(held(gate, 1), callback)
    pool.run(held(gate, 2)).add_done_callback(done_callback)    # before it can complete
    gate.open()
    for _, e in seen.wait():
        assert str(e).startswith("wait_for_room() cannot wait in a callback of its own pool")
    # Another pool's callback may wait: it blocks no thread of this one.
    other = fastpool.WorkerPool(1)
    try:
        got = Recorder(1)
        other.run_task((1, 2), lambda err, result: got.callback(err, pool.wait_for_room(timeout=WAIT)))
        assert got.wait() == [(None, True)]
    finally:
        other.close()


def test_drain_is_emitted_once_each_time_the_waiting_tasks_have_all_started(pool_of):
    pool = pool_of(max_queue=10)
    drains = []
    drained = threading.Event()

    def on_drain():
        drains.append(pool.stats()["queued"])
        drained.set()

    pool.on("drain", on_drain)
    for _ in range(2):
        drained.clear()
        with Gate() as gate:
            running = [pool.run(held(gate, f"r{i}")) for i in range(2)]
            arrived(gate, 2)
            queued = [pool.submit(echo, i) for i in range(3)]
            assert not drained.is_set()      # three tasks wait
        assert drained.wait(WAIT)
        assert [f.result(timeout=WAIT) for f in running + queued] == ["r0", "r1", 0, 1, 2]
    pool.close()
    assert drains == [0, 0]


def test_a_flood_from_8_threads_keeps_memory_flat(pool_of, kind):
    """Producers that wait for room never hold more than max_queue tasks
    (each with a 16 KiB payload) in the pool, however far they outrun it."""
    pool = pool_of(slow_echo, max_queue=32)
    per_thread = 1000 if kind == "thread" else 400
    payload = 16 * 1024
    results = Recorder(8 * per_thread)
    peak = [0]
    refused = [0]

    def on_result(err, result):     # keeps no result: only what the pool holds may grow
        results.callback(err, len(result))

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def produce(k):
        for i in range(per_thread):
            task = bytes(payload)           # a fresh object each time
            while True:
                pool.wait_for_room(WAIT)
                try:
                    pool.run_task(task, on_result)
                    break
                except QueueFullError:      # another producer took the room
                    refused[0] += 1
            if i % 50 == 0:
                peak[0] = max(peak[0], rss())

    def flood():
        threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 4)
        results.wait(WAIT * 4)

    base = rss()
    flood()
    grown = peak[0] - base
    # Unbounded, the queue would hold most of 8 * per_thread * 16 KiB
    # (tens of MB); bounded, a few hundred KiB plus the allocator's slack.
    assert grown < 8 * per_thread * payload / 4, (grown, refused[0])
    s = pool.stats()
    assert s["completed"] == 8 * per_thread and s["failed"] == 0
    assert s["refused"] == refused[0]
    assert results.wait() == [(None, payload)] * (8 * per_thread)


@pytest.mark.parametrize("value, error, message", [
    (-1, ValueError, "max_queue must be >= 0 or None, got -1"),
    ("3", TypeError, "max_queue must be an int or None, not str"),
    (2.5, TypeError, "max_queue must be an int or None, not float"),
    (True, TypeError, "max_queue must be an int or None, not bool"),
])
def test_bad_max_queue(value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        fastpool.WorkerPool(1, max_queue=value)


@pytest.mark.parametrize("value, error, message", [
    (-1, ValueError, "timeout must be >= 0 or None, got -1"),
    (math.nan, ValueError, "timeout must be >= 0 or None, got nan"),
    ("1", TypeError, "timeout must be a number or None, not str"),
])
def test_bad_wait_for_room_timeout(make_pool, value, error, message):
    pool = make_pool(1, max_queue=1)
    with pytest.raises(error, match=f"^{message}$"):
        pool.wait_for_room(value)


@pytest.mark.parametrize("executor", ["ThreadPoolExecutor", "ProcessPoolExecutor"])
def test_executors_take_max_queue(executor, gate):
    ex = getattr(fastpool, executor)(1, max_queue=1)
    try:
        blocker = ex.submit(gated, held(gate, "b"))
        gate.arrived()
        waiting = ex.submit(echo, 1)
        with pytest.raises(QueueFullError):
            ex.submit(echo, 2)
        assert ex.wait_for_room(timeout=0) is False
        gate.open()
        assert ex.wait_for_room(timeout=WAIT) is True
        assert (blocker.result(timeout=WAIT), waiting.result(timeout=WAIT)) == ("b", 1)
        assert ex.stats()["refused"] == 1
    finally:
        gate.open()
        ex.shutdown()
    with pytest.raises(ValueError, match="max_queue"):
        getattr(fastpool, executor)(1, max_queue=-2)


@pytest.mark.parametrize("executor", [False, True])
def test_map_on_a_full_pool_waits_for_room(pool_of, gate, kind, executor, request):
    # Executor.map submits every item at the call: on a bounded pool it
    # waits for room, item by item, instead of failing half way.
    pool, running = busy_pool(pool_of, gate, max_queue=2)
    queued = [pool.run(held(gate, "q0")), pool.run(held(gate, "q1"))]
    if executor:
        cls = fastpool.ThreadPoolExecutor if kind == "thread" else fastpool.ProcessPoolExecutor
        ex = cls(2, max_queue=2)
        request.addfinalizer(lambda: (gate.open(), ex.shutdown()))
        ex.submit(gated, held(gate, "e0"))      # its workers held, its queue full
        ex.submit(gated, held(gate, "e1"))
        arrived(gate, 2)
        ex.submit(gated, held(gate, "e2"))
        ex.submit(gated, held(gate, "e3"))
        target = ex
    else:
        target = pool
    mapped = []

    def consume():
        try:
            mapped.append(list(target.map(echo, range(20))))
        except BaseException as e:
            mapped.append(e)

    t = threading.Thread(target=consume)
    t.start()
    gate.open()
    t.join(WAIT)
    assert not t.is_alive()
    assert mapped == [list(range(20))]
    assert [f.result(timeout=WAIT) for f in running + queued] == ["r0", "r1", "q0", "q1"]


def test_map_on_a_full_pool_times_out_as_a_whole(pool_of, gate):
    pool, running = busy_pool(pool_of, gate, max_queue=1)
    pool.run(held(gate, "q0"))
    with pytest.raises(TimeoutError):
        pool.map(echo, range(5), timeout=0.2)
    gate.open()
    assert [f.result(timeout=WAIT) for f in running] == ["r0", "r1"]
    assert pool.wait_for_room(timeout=WAIT)
    assert list(pool.map(echo, range(5))) == list(range(5))
