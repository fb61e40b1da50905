"""Fixtures for the fastpool behaviour suite.

* ``leak_check`` (autouse): threads (threading.enumerate()), open file
  descriptors (/proc/self/fd) and /dev/shm entries present after a test must
  have been present before it. The pool's shared-memory prefix is not part of
  the contract, so every new /dev/shm name counts, except those another live
  process holds (/dev/shm is machine-wide).
* ``make_pool``: builds WorkerPools and terminates whatever the test left open
  (before ``leak_check`` looks).
* ``pool_factory`` / ``pool``: the same, parametrized over num_threads in
  NUM_THREADS and ring_size in RING_SIZES, so a behaviour written once runs on
  every configuration (CPython's create_executor_tests idea). ring_size=2
  makes every test with more than two tasks in flight go through the overflow
  FIFO.
"""
from __future__ import annotations

import pytest

import fastpool
from _support import Gate, Snapshot

NUM_THREADS = (1, 2, 4)
RING_SIZES = (2, 1024)


@pytest.fixture(autouse=True, scope="session")
def _process_wide_singletons():
    """Start what the stdlib keeps for the life of the process before any leak
    check looks: multiprocessing's resource tracker (a child process plus a pipe
    fd), which multiprocessing.shared_memory starts on first use."""
    try:
        from multiprocessing import forkserver, resource_tracker
    except ImportError:
        return
    from fastpool.workers import default_context

    resource_tracker.ensure_running()
    default_context()               # what fastpool's default fork server preloads
    forkserver.ensure_running()


@pytest.fixture(autouse=True)
def leak_check():
    before = Snapshot()
    yield
    problems = Snapshot().leaks_since(before)
    assert not problems, "; ".join(problems)


@pytest.fixture
def make_pool(leak_check):
    pools = []

    def make(num_threads=2, processor=None, **kwargs):
        pool = fastpool.WorkerPool(num_threads, processor, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()


@pytest.fixture(params=NUM_THREADS, ids=lambda n: f"threads{n}")
def num_threads(request):
    return request.param


@pytest.fixture(params=RING_SIZES, ids=lambda n: f"ring{n}")
def ring_size(request):
    return request.param


@pytest.fixture
def pool_factory(make_pool, num_threads, ring_size):
    """``pool_factory(processor=None, **overrides)`` -> a WorkerPool of this run's configuration."""

    def make(processor=None, **overrides):
        kwargs = {"num_threads": num_threads, "ring_size": ring_size}
        kwargs.update(overrides)
        return make_pool(processor=processor, **kwargs)

    return make


@pytest.fixture
def pool(pool_factory):
    return pool_factory()


@pytest.fixture(params=("thread", "process"))
def kind(request):
    """Each worker kind: a behaviour written once runs on both."""
    return request.param


@pytest.fixture
def gate():
    """A Gate (see _support), opened when the test ends."""
    with Gate() as g:
        yield g
