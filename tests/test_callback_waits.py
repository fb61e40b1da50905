"""A callback that waits for another task of its own pool gets its result.

Callbacks and done-callbacks run on the thread that completes the pool's
tasks (its dispatcher, or a thread completing the future it waits on), so
such a wait would wait for itself.  Instead that thread keeps completing
tasks until what it waits for is done; callbacks still run one at a time.
Every wait here has a timeout, so a regression fails instead of hanging.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

import fastpool
from _support import WAIT, Recorder, wait_for


@pytest.fixture(params=["reference", "fastpool"])
def make_executor(request, leak_check):
    cls = cf.ThreadPoolExecutor if request.param == "reference" else fastpool.ThreadPoolExecutor
    executors = []

    def make(*args, **kwargs):
        ex = cls(*args, **kwargs)
        executors.append(ex)
        return ex

    yield make
    for ex in executors:
        ex.shutdown(wait=True)


def _in_done_callback(fut, body):
    """Run body() as fut's done-callback; returns (outcome list, event set when it ran)."""
    outcome, ran = [], threading.Event()

    def callback(_):
        try:
            outcome.append(("ok", body()))
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            outcome.append(("raised", e))
        finally:
            ran.set()

    fut.add_done_callback(callback)
    return outcome, ran


# -- ThreadPoolExecutor: as the stdlib -----------------------------------------


def test_done_callback_waiting_for_another_future_gets_its_result(make_executor):
    ex = make_executor(2)
    release_b, release_a = threading.Event(), threading.Event()
    b = ex.submit(lambda: release_b.wait(WAIT) and "b")
    a = ex.submit(release_a.wait, WAIT)

    def body():
        release_b.set()      # b can finish only now, and only if someone completes it
        return b.result(timeout=WAIT)

    outcome, ran = _in_done_callback(a, body)
    release_a.set()
    wait_for(ran, "the done-callback")
    assert outcome == [("ok", "b")]


def test_done_callback_can_submit_and_wait(make_executor):
    ex = make_executor(2)
    release = threading.Event()
    a = ex.submit(release.wait, WAIT)
    outcome, ran = _in_done_callback(a, lambda: ex.submit(pow, 2, 10).result(timeout=WAIT))
    release.set()
    wait_for(ran, "the done-callback")
    assert outcome == [("ok", 1024)]


def test_done_callback_can_use_wait_as_completed_and_map(make_executor):
    ex = make_executor(2)
    release = threading.Event()
    a = ex.submit(release.wait, WAIT)

    def body():
        futs = [ex.submit(pow, i, 2) for i in range(5)]
        _, not_done = cf.wait(futs, timeout=WAIT)
        assert not not_done
        completed = sorted(f.result() for f in cf.as_completed([ex.submit(abs, -i) for i in range(5)],
                                                                timeout=WAIT))
        return [f.result() for f in futs], completed, list(ex.map(abs, [-1, -2], timeout=WAIT))

    outcome, ran = _in_done_callback(a, body)
    release.set()
    wait_for(ran, "the done-callback")
    assert outcome == [("ok", ([0, 1, 4, 9, 16], [0, 1, 2, 3, 4], [1, 2]))]


def test_done_callback_wait_with_a_timeout_times_out(make_executor):
    ex = make_executor(2)
    release_a, release_b = threading.Event(), threading.Event()
    b = ex.submit(release_b.wait, WAIT)
    a = ex.submit(release_a.wait, WAIT)
    outcome, ran = _in_done_callback(a, lambda: b.result(timeout=0.05))
    try:
        release_a.set()
        wait_for(ran, "the done-callback")
    finally:
        release_b.set()
    [(kind, err)] = outcome
    assert kind == "raised" and isinstance(err, cf.TimeoutError)
    assert b.result(timeout=WAIT) is True


def test_done_callback_run_by_the_thread_waiting_on_its_future_can_wait_too(make_executor):
    # A thread waiting on a future while the dispatcher sleeps completes it
    # itself, and so runs its done-callbacks: a wait in one of them must not
    # block the thread that completes the pool's tasks.
    ex = make_executor(2)
    release = threading.Event()
    fut = ex.submit(lambda: release.wait(WAIT) and 1)
    outcome, ran = _in_done_callback(fut, lambda: ex.submit(pow, fut.result() + 1, 2).result(timeout=WAIT))
    release.set()
    assert fut.result(timeout=WAIT) == 1
    wait_for(ran, "the done-callback")
    assert outcome == [("ok", 4)]


def test_chain_of_done_callbacks_each_waiting_on_the_next_with_one_worker():
    # The stdlib's executor would need a thread per waiting link; here one will do.
    depth = 30
    got, threads, end = [], set(), threading.Event()
    with fastpool.ThreadPoolExecutor(1) as ex:

        def link(i):
            fut = ex.submit(pow, i, 2)
            if i < depth:
                fut.add_done_callback(lambda _: link(i + 1))
            threads.add(threading.get_ident())
            got.append(fut.result(timeout=WAIT))
            if i == depth:
                end.set()

        release = threading.Event()
        first = ex.submit(release.wait, WAIT)
        first.add_done_callback(lambda _: link(0))
        release.set()
        wait_for(end, "the end of the chain")
    assert sorted(got) == [i * i for i in range(depth + 1)]
    assert len(threads) == 1                                 # all on the one dispatcher thread


def test_many_done_callbacks_waiting_at_once():
    n = 2000
    with fastpool.ThreadPoolExecutor(2) as ex:
        rec = Recorder(n)
        for i in range(n):
            ex.submit(abs, -i).add_done_callback(
                lambda f: rec.callback(None, ex.submit(pow, f.result(), 2).result(timeout=WAIT)))
        assert sorted(r for _, r in rec.wait()) == [i * i for i in range(n)]


# -- WorkerPool -----------------------------------------------------------------


def test_run_task_callback_waiting_on_run_gets_the_result(pool):
    n = 20
    rec = Recorder(n)

    def callback(err, result):
        rec.callback(err, pool.run((result, 1000)).result(timeout=WAIT))

    for i in range(n):
        pool.run_task((i, i), callback)
    assert sorted(r for _, r in rec.wait()) == [2 * i + 1000 for i in range(n)]
    assert all(err is None for err, _ in rec.wait())


def test_done_callback_run_by_the_thread_waiting_on_run_can_wait_too(pool_factory):
    release = threading.Event()

    def processor(task):
        release.wait(WAIT)
        return task

    pool = pool_factory(processor)
    fut = pool.run(1)
    outcome, ran = _in_done_callback(fut, lambda: pool.run(fut.result() + 1).result(timeout=WAIT))
    release.set()
    assert fut.result(timeout=WAIT) == 1
    wait_for(ran, "the done-callback")
    assert outcome == [("ok", 2)]


def test_callbacks_that_wait_still_run_one_at_a_time(pool_factory):
    lock = threading.Lock()
    inside: dict[int, int] = {}      # thread -> how deeply it is inside callbacks
    overlaps = []
    pool = pool_factory(lambda task: task)
    n = 30
    rec = Recorder(n)

    def callback(err, result):
        me = threading.get_ident()
        with lock:
            if any(depth for thread, depth in inside.items() if thread != me):
                overlaps.append(result)
            inside[me] = inside.get(me, 0) + 1
        try:
            rec.callback(err, pool.run(result + 1).result(timeout=WAIT))
        finally:
            with lock:
                inside[me] -= 1

    for i in range(n):
        pool.run_task(i, callback)
    assert sorted(r for _, r in rec.wait()) == list(range(1, n + 1))
    assert overlaps == []
    assert len(inside) == 1


def test_chain_of_callbacks_each_waiting_on_the_next(pool):
    depth = 40
    got, end = [], threading.Event()

    def link(i):
        fut = pool.run((i, i))
        if i < depth:
            fut.add_done_callback(lambda _: link(i + 1))
        got.append(fut.result(timeout=WAIT))
        if i == depth:
            end.set()

    pool.run_task((0, 0), lambda err, result: link(0))
    wait_for(end, "the end of the chain")
    assert sorted(got) == [2 * i for i in range(depth + 1)]


def test_many_callbacks_waiting_at_once(pool):
    # Each waits while thousands of others are due: none may run out of stack.
    n = 3000
    rec = Recorder(n)
    errors = []
    pool.on("error", errors.append)

    def callback(err, result):
        rec.callback(err, pool.run((result, 1)).result(timeout=WAIT))

    for i in range(n):
        pool.run_task((i, 0), callback)
    assert sorted(r for _, r in rec.wait()) == list(range(1, n + 1))
    assert errors == []


def test_a_wait_that_needs_another_callback_to_run_completes(make_pool):
    # The awaited task waits for an event that only another task's callback
    # sets, and that callback is due only once the wait has begun.
    a_waits, b_ran = threading.Event(), threading.Event()

    def processor(task):
        if task == "b":
            a_waits.wait(WAIT)
        elif task == "needs b":
            if not b_ran.wait(WAIT):
                raise TimeoutError("the callback of b never ran")
        return task

    pool = make_pool(3, processor)
    rec = Recorder(2)

    def callback_a(err, result):
        fut = pool.run("needs b")
        a_waits.set()
        rec.keyed("a")(None, fut.result(timeout=WAIT))

    def callback_b(err, result):
        b_ran.set()
        rec.keyed("b")(err, result)

    pool.run_task("b", callback_b)
    pool.run_task("a", callback_a)
    rec.wait()
    assert rec.by_key == {"a": [(None, "needs b")], "b": [(None, "b")]}


def test_run_task_callbacks_chained_through_waits(pool):
    depth = 40
    rec = Recorder(1)

    def callback_at(i):
        def callback(err, result):
            if i == depth:
                rec.callback(err, result)
                return
            pool.run_task((result, 1), callback_at(i + 1))
            rec_inner = pool.run((result, 1)).result(timeout=WAIT)
            assert rec_inner == result + 1
        return callback

    pool.run_task((0, 0), callback_at(0))
    assert rec.wait() == [(None, depth)]


def test_wait_inside_a_callback_of_a_terminating_pool_raises_at_once(make_pool):
    release, waiting = threading.Event(), threading.Event()

    def processor(task):
        if task == "block":
            release.wait(WAIT)
        return task

    pool = make_pool(2, processor)
    blocked = pool.run("block")
    outcome = Recorder(1)

    def callback(err, result):
        waiting.set()
        try:
            blocked.result(timeout=WAIT)
            outcome.callback(None, "returned")
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            outcome.callback(e, None)
        finally:
            release.set()

    pool.run_task("first", callback)
    wait_for(waiting, "the callback to start waiting")
    pool.terminate()
    [(err, _)] = outcome.wait()
    assert isinstance(err, fastpool.PoolClosedError)
    assert "terminat" in str(err)
