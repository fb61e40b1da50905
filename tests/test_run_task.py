"""WorkerPool.run_task(task, callback): the Node.js WorkerPool's core API, on every configuration."""
from __future__ import annotations

import os
import threading

import pytest

import fastpool
from _support import WAIT, Recorder, threads_named, worker_threads


def add_in_python(task):
    return task["a"] + task["b"]


def test_run_task_returns_a_handle_and_calls_back_with_the_sum(pool):
    rec = Recorder(1)
    assert type(pool.run_task({"a": 1, "b": 2}, rec.callback)) is fastpool.TaskHandle
    assert rec.wait() == [(None, 3)]


def test_tuple_task(pool):
    rec = Recorder(1)
    pool.run_task((40, 2), rec.callback)
    assert rec.wait() == [(None, 42)]


@pytest.mark.parametrize("processor", [None, fastpool.kernels.add, add_in_python],
                         ids=["default", "native-add", "python"])
def test_every_callback_gets_the_result_of_its_own_task(pool_factory, processor):
    pool = pool_factory(processor)
    n = 2000
    rec = Recorder(n)
    for i in range(n):
        pool.run_task({"a": i, "b": 10 * i}, rec.keyed(i))
    rec.wait()
    pool.close()
    assert rec.by_key == {i: [(None, 11 * i)] for i in range(n)}


@pytest.mark.parametrize("task", [{"a": 1, "b": 2}, "not a task", {"a": 1}],
                         ids=["good", "bad-type", "missing-key"])
def test_callback_is_never_called_synchronously_inside_run_task(pool, task):
    caller = threading.get_ident()
    inside = [False]
    synchronous = []
    rec = Recorder(200)

    def callback(err, result):
        synchronous.append(inside[0] and threading.get_ident() == caller)
        rec.callback(err, result)

    for _ in range(200):
        inside[0] = True
        pool.run_task(task, callback)
        inside[0] = False
    rec.wait()
    assert not any(synchronous)


def test_python_processor_runs_in_a_named_visible_worker_thread(pool_factory):
    def processor(task):
        me = threading.current_thread()
        return task * 2, me.name, me in threading.enumerate(), me is threading.main_thread()

    pool = pool_factory(processor)
    rec = Recorder(1)
    pool.run_task(21, rec.callback)
    [(err, (value, name, visible, is_main))] = rec.wait()
    assert err is None
    assert value == 42
    assert name.startswith("fastpool-worker")
    assert visible
    assert not is_main


def test_processor_exception_goes_to_that_callback_and_the_worker_lives(pool_factory, num_threads):
    boom = ValueError("boom")
    lost = []

    def processor(task):
        if task == "boom":
            raise boom
        return task

    pool = pool_factory(processor)
    pool.on("exit", lambda name, exc: lost.append((name, exc)) if exc is not None else None)
    rec = Recorder(1 + 50)
    pool.run_task("boom", rec.keyed("boom"))
    for i in range(50):
        pool.run_task(i, rec.keyed(i))
    rec.wait()
    [(err, result)] = rec.by_key["boom"]
    assert err is boom
    assert result is None
    assert all(rec.by_key[i] == [(None, i)] for i in range(50))
    assert pool.num_threads == num_threads
    pool.close()
    assert lost == []


def test_single_worker_runs_tasks_in_submission_order(make_pool, ring_size):
    order = []

    def processor(task):
        order.append(task)
        return task

    pool = make_pool(1, processor, ring_size=ring_size)
    n = 500
    rec = Recorder(n)
    for i in range(n):
        pool.run_task(i, rec.callback)
    rec.wait()
    pool.close()
    assert order == list(range(n))


def test_num_threads_attribute(pool, num_threads):
    assert pool.num_threads == num_threads
    assert type(pool.num_threads) is int


def test_num_threads_defaults_to_cpu_count(make_pool):
    pool = make_pool(None)
    assert pool.num_threads == os.cpu_count()


def test_pool_has_num_threads_workers_running_at_once(pool_factory, num_threads):
    # Each task waits until num_threads tasks are running: only a pool with
    # num_threads live workers gets through the barrier.
    barrier = threading.Barrier(num_threads, timeout=10)
    pool = pool_factory(lambda task: barrier.wait() is not None)
    rec = Recorder(num_threads)
    for i in range(num_threads):
        pool.run_task(i, rec.callback)
    assert rec.wait() == [(None, True)] * num_threads
    assert len(worker_threads()) == num_threads
    assert len(threads_named("fastpool-dispatcher")) == 1


def test_tasks_from_many_threads_all_complete(pool):
    n_threads, per_thread = 4, 500
    rec = Recorder(n_threads * per_thread)

    def submit(t):
        for i in range(per_thread):
            pool.run_task((t, i), rec.keyed((t, i)))

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    rec.wait()
    assert rec.by_key == {(t, i): [(None, t + i)] for t in range(n_threads) for i in range(per_thread)}
