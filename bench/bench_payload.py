"""Payload blocks (fastpool._payload) against pickle through a
multiprocessing.Pipe, in one process and one run: a small task
``(fn, (1,), {})`` and a 16 MB float64 array (scaled by
FASTPOOL_BENCH_SCALE), each written and read back once per round.

The arena contenders copy into and out of shared memory; the Pipe
contenders pickle, send, receive and unpickle (the 16 MB one sends from a
thread, since a pipe holds only 64 KiB).  No other process is involved on
either side, so wake-up costs are left out of both.

    pytest bench/bench_payload.py --benchmark-only
"""
from __future__ import annotations

import multiprocessing
import pickle
import threading

import pytest

from fastpool._payload import OUT_OF_BAND_MIN, PayloadArea
from workloads import SCALE, add_task

np = pytest.importorskip("numpy")

SMALL = (add_task, (1,), {})
ARRAY_BYTES = max(OUT_OF_BAND_MIN, int(16 * 1024 * 1024 * SCALE))


@pytest.fixture(scope="module")
def array():
    return np.arange(ARRAY_BYTES // 8, dtype=np.float64)


@pytest.fixture(scope="module")
def pipe():
    reader, writer = multiprocessing.Pipe(duplex=False)
    yield reader, writer
    reader.close()
    writer.close()


def _shm_area(block_size, n_slots=2):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=n_slots * block_size)
    return shm, PayloadArea(shm.buf, n_slots, block_size)


@pytest.fixture(scope="module")
def areas(array):
    """A block big enough for the array, and one of 64 KiB that sends it to a one-off segment."""
    block = -(-(array.nbytes + 4096) // 64) * 64
    made = {"in the block": _shm_area(block), "one-off segment": _shm_area(64 * 1024)}
    yield {name: area for name, (_, area) in made.items()}
    for shm, area in made.values():
        area.close()
        shm.close()
        shm.unlink()


# -- small -------------------------------------------------------------------------

@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
def test_small_arena(benchmark, areas, copy):
    area = areas["in the block"]
    benchmark.group = "payload: small task (fn, (1,), {}), write + read"

    def round_trip():
        area.write(1, SMALL)
        return area.read(1, copy=copy)

    assert benchmark(round_trip) == SMALL


def test_small_pipe(benchmark, pipe):
    reader, writer = pipe
    benchmark.group = "payload: small task (fn, (1,), {}), write + read"

    def round_trip():
        writer.send_bytes(pickle.dumps(SMALL, 5))
        return pickle.loads(reader.recv_bytes())

    assert benchmark(round_trip) == SMALL


def test_small_pickle_only(benchmark):
    benchmark.group = "payload: small task (fn, (1,), {}), write + read"
    assert benchmark(lambda: pickle.loads(pickle.dumps(SMALL, 5))) == SMALL


# -- 16 MB ----------------------------------------------------------------------------

ROUNDS = {"rounds": 10, "iterations": 1, "warmup_rounds": 1}


@pytest.mark.parametrize("where", ["in the block", "one-off segment"])
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
def test_array_arena(benchmark, areas, array, where, copy):
    area = areas[where]
    benchmark.group = "payload: 16 MB float64 array, write + read"

    def round_trip():
        area.write(0, array)
        back = area.read(0, copy=copy)
        return back[-1]           # views into the block must not outlive the round

    assert benchmark.pedantic(round_trip, **ROUNDS) == array[-1]


def test_array_pipe(benchmark, pipe, array):
    reader, writer = pipe
    benchmark.group = "payload: 16 MB float64 array, write + read"

    def round_trip():
        sender = threading.Thread(target=lambda: writer.send_bytes(pickle.dumps(array, 5)))
        sender.start()
        back = pickle.loads(reader.recv_bytes())
        sender.join()
        return back

    back = benchmark.pedantic(round_trip, **ROUNDS)
    assert np.array_equal(back, array)
