"""Spill segments a process pool keeps (fastpool._spill): a payload too big
for its block travels in a shared-memory segment that the pool's owner and
its workers keep mapped and reuse, instead of one made and removed for each
trip.  Results come back equal however they are made from their task; the
cache stays within its bounds; a segment whose task's views a worker kept
is never reused; nothing is left in /dev/shm after close, terminate, a
worker killed mid-transfer, or an owner killed with SIGKILL."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from multiprocessing import shared_memory

import pytest

import fastpool
from fastpool import WorkerExitedError, _spill
from fastpool._payload import PayloadArea, PayloadError
from _support import WAIT, shm_entries, wait_exited
from _tasks import (both, describe, double_in_place, echo, first_half, keep, kept_intact,
                    killed_holding, make_array)

try:
    import numpy
except ImportError:      # numpy is optional: its tests skip
    numpy = None
needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")

PREFIX = f"fps{os.getpid():x}"
BLOCK = 1 << 16          # a process pool's block size


def kept(prefix) -> set[str]:
    """The kept spill segments of the pool (or area) whose prefix this is."""
    return {n for n in shm_entries() if n.startswith(prefix + "-k-")}


def sizes_of(names) -> int:
    return sum(os.stat(f"/dev/shm/{n}").st_size for n in names if os.path.exists(f"/dev/shm/{n}"))


# -- one process: an owner's area and a worker's over the same blocks --------------------

@pytest.fixture
def blocks():
    shm = shared_memory.SharedMemory(create=True, size=2 * BLOCK)
    yield shm
    shm.close()
    shm.unlink()


@pytest.fixture
def areas(blocks):
    """(owner, worker): PayloadAreas over the same two blocks, the owner's
    keeping spill segments; both closed after the test."""
    owner = PayloadArea(blocks.buf, 2, BLOCK, spill_prefix=PREFIX, spill_cache=True)
    worker = PayloadArea(blocks.buf, 2, BLOCK, spill_prefix=PREFIX)
    yield owner, worker
    worker.close()
    owner.close()


def trip(owner, worker, fn, task, slot=1):
    """What a pool does with one task: the owner puts it, the worker reads it
    (views, no copy), runs fn, pickles the result and lets go of it, then
    puts it; the owner reads that."""
    owner.write(slot, task)
    arg = worker.read(slot, copy=False)
    result = fn(arg)
    del arg
    prepared = worker.prepare(result)
    del result
    worker.put(slot, prepared)
    del prepared
    return owner.read(slot)


SIZES = [BLOCK - 100, BLOCK + 1, (1 << 17) - 200, 1 << 17, 3 << 20, (16 << 20) + 1]


@pytest.mark.parametrize("size", SIZES)
def test_bytes_of_any_size_make_the_trip_in_a_reused_segment(areas, size):
    owner, worker = areas
    data = os.urandom(size)
    for _ in range(3):
        assert trip(owner, worker, lambda b: b[::-1], data) == data[::-1]
    # Whatever went through a segment went through the same one every time.
    assert len(kept(PREFIX)) == (1 if size > BLOCK else 0)


@needs_numpy
@pytest.mark.parametrize("make", [
    lambda a: a + 1,                        # a new array, as big
    double_in_place,                        # the task's array changed in place and returned
    echo,                                   # the task's array itself
    first_half,                             # part of it, at another offset
    both,                                   # itself and a new one
    lambda a: a[::2],                       # not contiguous: pickled in band
    lambda a: numpy.zeros(3 * len(a)),      # bigger than the task's segment
    lambda a: float(a.sum()),               # small: back in the block
], ids=["new", "in place", "itself", "part", "two", "strided", "bigger", "small"])
def test_results_made_from_the_task_come_back_equal(areas, make):
    owner, worker = areas
    a = numpy.arange(1 << 18, dtype=numpy.float64)       # 2 MB
    for _ in range(3):
        expected = make(a.copy())
        got = trip(owner, worker, make, a)
        if isinstance(expected, tuple):
            assert all(numpy.array_equal(g, e) for g, e in zip(got, expected))
        else:
            assert numpy.array_equal(got, expected)
        del got
    assert numpy.array_equal(a, numpy.arange(1 << 18, dtype=numpy.float64))   # never written to
    assert len(kept(PREFIX)) == 1


@needs_numpy
def test_a_result_lent_views_of_its_segment_keeps_it_from_reuse(areas):
    owner, worker = areas
    a = numpy.arange(1 << 18, dtype=numpy.float64)
    results = [trip(owner, worker, lambda x, k=k: x + k, a) for k in range(4)]
    assert len(kept(PREFIX)) == 4                 # each result holds its own
    for k, r in enumerate(results):
        assert numpy.array_equal(r, a + k)
    del results
    assert trip(owner, worker, lambda x: x * 2, a).sum() == (a * 2).sum()
    assert len(kept(PREFIX)) == 4                 # and they are reused once let go


@needs_numpy
def test_views_a_task_keeps_pin_its_segment_which_is_never_reused(areas):
    owner, worker = areas
    stash = []

    def keep_it(x):
        stash.append((x, x.copy()))
        return float(x.sum())

    a = numpy.arange(1 << 18, dtype=numpy.float64)
    assert trip(owner, worker, keep_it, a) == a.sum()
    pinned = kept(PREFIX)
    assert pinned == set()          # unlinked once the owner read the result
    for k in range(5):
        assert numpy.array_equal(trip(owner, worker, lambda x, k=k: x - k, a + k), a)
    view, copy = stash[0]
    assert numpy.array_equal(view, copy)    # never overwritten
    assert len(kept(PREFIX)) == 1


def test_a_header_naming_another_segment_is_a_clear_error(areas, blocks):
    owner, worker = areas
    owner.write(0, bytes(BLOCK * 2))
    assert worker.read(0, copy=False) == bytes(BLOCK * 2)
    worker.write(0, bytes(BLOCK * 2))
    name_at = 32        # after the block's header
    blocks.buf[name_at:name_at + 4] = b"zzzz"
    with pytest.raises(PayloadError, match="not the segment its task went in"):
        owner.read(0)
    # The segment was given back all the same: the next trip reuses it.
    assert trip(owner, worker, echo, bytes(BLOCK * 2), slot=0) == bytes(BLOCK * 2)
    assert len(kept(PREFIX)) == 1


def test_a_task_abandoned_gives_its_segment_back(areas):
    owner, _ = areas
    owner.write(0, bytes(BLOCK * 2))
    owner.discard(0)
    owner.write(1, bytes(BLOCK * 2))
    owner.discard(1)
    assert len(kept(PREFIX)) == 1
    owner.close()
    assert kept(PREFIX) == set()


def test_no_room_in_shared_memory_fails_the_payload_with_an_oserror(areas, monkeypatch):
    owner, worker = areas
    if _spill._fallocate is None:
        pytest.skip("no posix_fallocate here: space is not reserved up front")
    assert trip(owner, worker, echo, bytes(1 << 20)) == bytes(1 << 20)

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_spill, "_fallocate", full)
    assert trip(owner, worker, echo, bytes(1 << 20)) == bytes(1 << 20)    # reserved already
    with pytest.raises(OSError, match="no room in shared memory for a payload"):
        owner.write(0, bytes(2 << 20))
    assert kept(PREFIX) == set()        # what could not be reserved is removed, the rest trimmed
    monkeypatch.undo()
    assert trip(owner, worker, echo, bytes(2 << 20), slot=0) == bytes(2 << 20)


def test_a_pool_whose_shared_memory_is_full_fails_that_task_alone(proc_pool, monkeypatch):
    pool = proc_pool(1, echo)
    if _spill._fallocate is None:
        pytest.skip("no posix_fallocate here: space is not reserved up front")

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_spill, "_fallocate", full)     # in this process: the pool's owner
    err = pool.run(bytes(1 << 20)).exception(timeout=WAIT)
    assert isinstance(err, OSError) and "no room in shared memory" in str(err)
    assert pool.run(b"small").result(timeout=WAIT) == b"small"
    monkeypatch.undo()
    assert pool.run(bytes(1 << 20)).result(timeout=WAIT) == bytes(1 << 20)


def test_the_cache_stays_within_its_bounds(areas, monkeypatch):
    monkeypatch.setattr(_spill, "LIMIT", 1 << 20)
    monkeypatch.setattr(_spill, "MAX_SEGMENTS", 3)
    shm = shared_memory.SharedMemory(create=True, size=8 * BLOCK)
    try:
        owner = PayloadArea(shm.buf, 8, BLOCK, spill_prefix=PREFIX + "b", spill_cache=True)
        worker = PayloadArea(shm.buf, 8, BLOCK, spill_prefix=PREFIX + "b")
        rng = random.Random(5)
        held = []
        for i in range(60):
            size = rng.choice([BLOCK + 1, 200_000, 300_000, 600_000, 2 << 20])
            data = bytes([i % 256]) * size
            slot = i % 8
            owner.write(slot, data)
            names = kept(PREFIX + "b")
            assert len(names) <= 3 and sizes_of(names) <= 1 << 20, names
            assert worker.read(slot, copy=False) == data
            worker.write(slot, data)
            got = owner.read(slot)
            assert got == data
            held.append(got)
            if len(held) > 4:
                held.pop(0)
        worker.close()
        owner.close()
        assert kept(PREFIX + "b") == set()
    finally:
        shm.close()
        shm.unlink()


def test_a_lease_counts_its_views_and_says_when_the_last_goes():
    from fastpool._core import Lease

    freed = []
    mapping = bytearray(100)
    lease = Lease(mapping, freed.append, "token")
    assert lease.exports == 0
    view = memoryview(lease)
    parts = [view[10:20], view[50:]]
    assert lease.exports == 1 and not freed
    view.release()
    parts[0][0] = 7
    assert mapping[10] == 7
    del parts
    assert lease.exports == 0 and freed == ["token"] and lease.closed
    with pytest.raises(BufferError, match="closed"):
        memoryview(lease)


# -- process pools ---------------------------------------------------------------------

@pytest.fixture
def proc_pool(make_pool):
    def make(num_threads=2, processor=None, **kwargs):
        return make_pool(num_threads, processor, workers="process", **kwargs)
    return make


@pytest.mark.parametrize("size", [BLOCK + 1, 200_000, 3 << 20, 20 << 20])
def test_payloads_of_many_sizes_travel_both_ways_through_kept_segments(proc_pool, size):
    pool = proc_pool(2, echo)
    prefix = pool._spill_prefix
    data = os.urandom(size)
    for _ in range(6):
        assert pool.run(data).result(timeout=WAIT) == data
    names = kept(prefix)
    assert 1 <= len(names) <= 2         # one per task at once in the rings
    for _ in range(6):
        assert pool.run(data).result(timeout=WAIT) == data
    assert kept(prefix) == names        # reused, none made again
    pool.close()
    assert kept(prefix) == set()


@needs_numpy
def test_arguments_of_every_kind_and_size_reach_the_worker(proc_pool):
    # Small ones pickle in band into the block; a large buffer anywhere
    # goes out of band; memoryviews are lifted out of band; what does not
    # fit a block takes a kept segment.
    pool = proc_pool(1)
    small, big = numpy.ones(10), numpy.ones(1 << 17)
    cases = [
        ((1, "x", None), {}),
        ((small,), {"k": small}),
        ((big,), {}),
        ((small, [big]), {}),
        ((memoryview(bytes(100)),), {"m": memoryview(bytearray(1 << 17))}),
        ((bytes(1 << 17), bytearray(10)), {}),
        (("x" * (1 << 17),), {}),
    ]
    for args, kwargs in cases:
        got = pool.submit(describe, *args, **kwargs).result(timeout=WAIT)
        want = describe(*args, **kwargs)
        assert got == (want[0], want[1]), (args, kwargs)


@needs_numpy
def test_arrays_made_in_a_worker_from_their_task_come_back_equal(proc_pool):
    pool = proc_pool(2)
    a = numpy.arange(1 << 20, dtype=numpy.float64)        # 8 MB
    for _ in range(3):
        assert numpy.array_equal(pool.submit(double_in_place, a).result(timeout=WAIT), a * 2)
        assert numpy.array_equal(pool.submit(echo, a).result(timeout=WAIT), a)
        assert numpy.array_equal(pool.submit(first_half, a).result(timeout=WAIT), a[:len(a) // 2])
        x, y = pool.submit(both, a).result(timeout=WAIT)
        assert numpy.array_equal(x, a) and numpy.array_equal(y, a * 3)
        assert numpy.array_equal(pool.submit(make_array, 5 << 20).result(timeout=WAIT),
                                 numpy.arange(5 << 20, dtype=numpy.uint8))
    assert numpy.array_equal(a, numpy.arange(1 << 20, dtype=numpy.float64))


@needs_numpy
def test_an_array_a_worker_keeps_is_never_overwritten(proc_pool):
    pool = proc_pool(1)
    a = numpy.arange(1 << 18, dtype=numpy.float64)
    assert pool.submit(keep, a).result(timeout=WAIT) == a.sum()
    for k in range(10):
        assert numpy.array_equal(pool.submit(echo, a + k).result(timeout=WAIT), a + k)
    assert pool.submit(keep, a * 2).result(timeout=WAIT) == (a * 2).sum()
    assert pool.submit(kept_intact).result(timeout=WAIT) == (2, True)


def test_the_cache_of_a_pool_stays_within_its_bounds(proc_pool, monkeypatch):
    monkeypatch.setattr(_spill, "LIMIT", 2 << 20)
    monkeypatch.setattr(_spill, "MAX_SEGMENTS", 4)
    pool = proc_pool(2, echo)
    prefix = pool._spill_prefix
    rng = random.Random(3)
    held = []
    for i in range(40):
        futs = [pool.run(bytes([i]) * rng.choice([BLOCK + 1, 300_000, 900_000, 3 << 20]))
                for _ in range(3)]
        held += [f.result(timeout=WAIT) for f in futs]
        names = kept(prefix)
        assert len(names) <= 4 and sizes_of(names) <= 2 << 20, names
        del held[:-6]
    assert all(set(h) == {h[0]} for h in held)
    pool.close()
    assert kept(prefix) == set()


@needs_numpy
@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_nothing_is_left_after_close_or_terminate_and_lent_results_stay_valid(proc_pool, stop):
    pool = proc_pool(2)
    prefix = pool._spill_prefix
    a = numpy.arange(1 << 19, dtype=numpy.float64)
    results = [pool.submit(numpy.multiply, a, k).result(timeout=WAIT) for k in range(3)]
    running = pool.submit(numpy.multiply, a, 7)
    assert kept(prefix)
    getattr(pool, stop)()
    assert kept(prefix) == set()
    assert not {n for n in shm_entries() if n.startswith(prefix)}
    for k, r in enumerate(results):
        assert numpy.array_equal(r, a * k)
    assert running.done()


def test_a_worker_killed_holding_a_kept_segment_fails_its_task_alone(proc_pool):
    pool = proc_pool(1, echo)
    prefix = pool._spill_prefix
    data = os.urandom(1 << 20)
    assert pool.run(data).result(timeout=WAIT) == data
    names = kept(prefix)
    err = pool.submit(killed_holding, data).exception(timeout=WAIT)
    assert isinstance(err, WorkerExitedError)
    for _ in range(3):
        assert pool.run(data).result(timeout=WAIT) == data
    assert kept(prefix) == names        # given back, and reused by the replacement
    pool.close()
    assert kept(prefix) == set()


def test_a_worker_killed_after_writing_a_result_in_a_kept_segment(proc_pool):
    # It dies publishing: its result is in the segment, never read.
    pool = proc_pool(1, echo, ring_size=4)
    prefix = pool._spill_prefix
    data = os.urandom(1 << 20)
    assert pool.run(data).result(timeout=WAIT) == data
    names = kept(prefix)
    pool._inject_fault("publish", 1)
    assert isinstance(pool.run(data).exception(timeout=WAIT), WorkerExitedError)
    assert [pool.run(data).result(timeout=WAIT) == data for _ in range(3)] == [True] * 3
    assert kept(prefix) == names
    pool.close()
    assert kept(prefix) == set()


@pytest.mark.timeout(240)      # hundreds of replacements: seconds on a quiet machine
def test_workers_killed_at_random_mid_transfer(proc_pool):
    pool = proc_pool(2, echo, ring_size=8)
    prefix = pool._spill_prefix
    blobs = [bytes([i]) * (200_000 + 4096 * i) for i in range(16)]
    stop = threading.Event()
    rng = random.Random(7)
    completed = [0]

    def killer():
        seen = -1
        while not stop.wait(rng.uniform(0.005, 0.03)):
            # Kill again only once something completed since the last kill:
            # on a busy machine a replacement can take longer to start than
            # the pause, and killing each one before it takes a task would
            # stop all progress (the pool's, not a defect of it).
            if completed[0] == seen:
                continue
            seen = completed[0]
            pids = []
            for p in list(pool._workers):
                try:
                    pids.append(p.pid)
                except (AttributeError, ValueError):    # none, or closed: it is gone
                    pass
            pids = [pid for pid in pids if pid]
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    k = threading.Thread(target=killer)
    k.start()
    try:
        futs = [pool.run(blobs[i % 16]) for i in range(400)]
        for f in futs:
            f.add_done_callback(lambda _: completed.__setitem__(0, completed[0] + 1))
        outcomes = [f.exception(timeout=120) or f.result(timeout=0) for f in futs]
    finally:
        stop.set()
        k.join()
    for i, out in enumerate(outcomes):
        assert out == blobs[i % 16] or isinstance(out, WorkerExitedError), (i, out)
    assert sum(out == blobs[i % 16] for i, out in enumerate(outcomes)) > 0
    assert all(pool.run(b).result(timeout=WAIT) == b for b in blobs)
    pool.close()
    assert not {n for n in shm_entries() if n.startswith(prefix)}


def test_an_idle_pool_lets_its_kept_segments_go(proc_pool, monkeypatch):
    monkeypatch.setattr(_spill, "TRIM_AFTER", 0.05)
    pool = proc_pool(1, echo)
    prefix = pool._spill_prefix
    data = os.urandom(1 << 20)
    assert pool.run(data).result(timeout=WAIT) == data
    gone = threading.Event()
    for _ in range(int(WAIT / 0.02)):
        if not kept(prefix):
            gone.set()
            break
        threading.Event().wait(0.02)        # polling for the outcome, not synchronising
    assert gone.is_set(), "the idle pool kept its spill segment"
    assert pool.run(data).result(timeout=WAIT) == data      # and makes one again when needed
    pool.close()


OWNER = """
import signal, sys
sys.path[:0] = {paths!r}
from fastpool import WorkerPool
import _tasks
pool = WorkerPool(2, _tasks.echo, workers="process")
data = bytes(3 << 20)
held = [pool.run(data).result(timeout=30) for _ in range(3)]
running = pool.run(data)
print(pool.shm_name, pool._spill_prefix, *[p.pid for p in pool._workers], flush=True)
signal.pause()        # until the test kills this owner
"""


def test_an_owner_killed_with_kept_segments_leaves_nothing(tmp_path):
    paths = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(fastpool.__file__))]
    proc = subprocess.Popen([sys.executable, "-c", OWNER.format(paths=paths)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line, "the owner did not start its pool"
        name, prefix, pids = line[0], line[1], [int(p) for p in line[2:]]
        assert kept(prefix)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    wait_exited(pids)      # each worker process on its own
    left = {n for n in shm_entries() if n == name or n.startswith(prefix + "-")}
    assert not left, left
