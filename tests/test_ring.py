"""The native ring alone: FIFO order, capacity, and many threads at once."""
import threading

import pytest

from fastpool._core import Ring

from _support import WAIT


@pytest.fixture
def ring():
    r = Ring(8)
    yield r
    r.close()


def test_values_come_out_in_order(ring):
    for v in range(5):
        assert ring.push(v)
    assert [ring.pop() for _ in range(5)] == list(range(5))
    assert ring.pop() is None


def test_a_full_ring_refuses_and_frees_a_cell_per_pop(ring):
    for v in range(8):
        assert ring.push(v)
    assert not ring.push(99)
    assert ring.pop() == 0
    assert ring.push(8)
    assert [ring.pop() for _ in range(8)] == list(range(1, 9))


def test_wraps_around_many_laps(ring):
    for lap in range(1000):
        assert ring.push(lap) and ring.push(-lap)
        assert (ring.pop(), ring.pop()) == (lap, -lap)


@pytest.mark.parametrize("capacity", [0, 1, 3, 6])
def test_capacity_must_be_a_power_of_two(capacity):
    with pytest.raises(ValueError, match="power of two"):
        Ring(capacity)


def test_closed_ring_raises(ring):
    ring.close()
    with pytest.raises(ValueError, match="closed"):
        ring.push(1)
    ring.close()  # idempotent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("producers,consumers,capacity", [(4, 4, 64), (3, 1, 2), (1, 3, 1024)])
def test_many_producers_and_consumers_lose_and_duplicate_nothing(producers, consumers, capacity):
    """Each producer pushes its own range with the GIL released; consumers
    pop with the GIL released; every value arrives exactly once."""
    array = pytest.importorskip("array")
    per_producer = 50_000
    total = producers * per_producer
    ring = Ring(capacity)
    done = array.array("q", [0])
    outs = [array.array("q", bytes(8 * total)) for _ in range(consumers)]
    counts = [0] * consumers
    errors = []

    def produce(i):
        try:
            ring.push_range(i * per_producer, (i + 1) * per_producer)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def consume(j):
        try:
            counts[j] = ring.pop_into(outs[j], done)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    threads += [threading.Thread(target=consume, args=(j,)) for j in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "ring stress test hung"
    ring.close()
    assert errors == []
    seen = sorted(v for j in range(consumers) for v in outs[j][: counts[j]])
    assert seen == list(range(total))
    # Each producer's values leave the ring in the order it pushed them.
    for j in range(consumers):
        got = outs[j][: counts[j]]
        for i in range(producers):
            mine = [v for v in got if i * per_producer <= v < (i + 1) * per_producer]
            assert mine == sorted(mine)
