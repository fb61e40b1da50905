"""Exactly once, one callback at a time, context, re-entrancy and idleness under load
(guarantees 1, 2, 3, 7)."""
from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
import time
from functools import partial

import pytest

import fastpool
from _support import WAIT, Recorder, wait_for

who = contextvars.ContextVar("who")


def run_threads(target, n):
    threads = [threading.Thread(target=target, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a submitting thread is stuck"


# -- exactly once -------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("num_threads, ring_size", [(4, 2), (2, 1024)])
def test_exactly_once_for_100000_tasks_from_8_submitting_threads(make_pool, num_threads, ring_size):
    pool = make_pool(num_threads, ring_size=ring_size)
    n_threads, per_thread = 8, 12_500
    total = n_threads * per_thread
    counts = [0] * total
    wrong = []
    lock = threading.Lock()
    done = threading.Event()
    seen = [0]

    def callback(k, err, result):
        # every 101st task is bad and must complete with its own TypeError
        ok = isinstance(err, TypeError) if k % 101 == 0 else (err is None and result == 3 * k)
        with lock:
            counts[k] += 1
            if not ok:
                wrong.append((k, err, result))
            seen[0] += 1
            if seen[0] == total:
                done.set()

    def submit(t):
        for k in range(t * per_thread, (t + 1) * per_thread):
            task = "bad" if k % 101 == 0 else (k, 2 * k)
            pool.run_task(task, partial(callback, k))

    run_threads(submit, n_threads)
    wait_for(done, f"{total} callbacks", timeout=120)
    pool.close()
    assert wrong == []
    assert [k for k, c in enumerate(counts) if c != 1] == []


def test_exactly_once_with_futures_from_several_threads(pool):
    n_threads, per_thread = 4, 1000
    futs = [[] for _ in range(n_threads)]

    def submit(t):
        futs[t].extend(pool.run((t, i)) for i in range(per_thread))

    run_threads(submit, n_threads)
    for t in range(n_threads):
        assert [f.result(timeout=WAIT) for f in futs[t]] == [t + i for i in range(per_thread)]


# -- one at a time ------------------------------------------------------------


@pytest.mark.parametrize("processor", [None, fastpool.kernels.add, lambda t: t[0] + t[1]],
                         ids=["default", "native", "python"])
def test_callbacks_never_run_concurrently(make_pool, processor):
    pool = make_pool(4, processor, ring_size=2)
    guard = threading.Lock()
    overlaps = [0]
    n_threads, per_thread = 4, 1500
    rec = Recorder(n_threads * per_thread)

    def callback(err, result):
        if guard.acquire(blocking=False):
            try:
                os.sched_yield()  # drop the GIL: a concurrent callback would get in here
                sum(range(50))
            finally:
                guard.release()
        else:
            overlaps[0] += 1
        rec.callback(err, result)

    def submit(t):
        for i in range(per_thread):
            pool.run_task((t, i), callback)

    run_threads(submit, n_threads)
    calls = rec.wait()
    pool.close()
    assert overlaps[0] == 0
    assert all(err is None for err, _ in calls)


# -- context ------------------------------------------------------------------


def test_each_callback_runs_in_its_submitters_context(pool):
    n_threads, per_thread = 8, 300
    rec = Recorder(n_threads * per_thread)
    mismatches = []

    def callback(expected, err, result):
        seen = who.get("<unset>")
        if seen != expected:
            mismatches.append((expected, seen))
        rec.callback(err, result)

    def submit(t):
        who.set(f"thread-{t}")
        for i in range(per_thread):
            pool.run_task((t, i), partial(callback, f"thread-{t}"))

    run_threads(submit, n_threads)
    rec.wait()
    assert mismatches == []


def test_callback_sees_the_context_as_it_was_at_submission(pool):
    seen = {}

    def make_callback(key, rec):
        def callback(err, result):
            seen[key] = who.get("<unset>")
            who.set("set-inside-a-callback")  # must not leak into anyone else's context
            rec.keyed(key)(err, result)

        return callback

    first_two = Recorder(2)

    def body():
        who.set("first")
        pool.run_task((1, 1), make_callback("first", first_two))
        who.set("second")
        pool.run_task((2, 2), make_callback("second", first_two))

    contextvars.copy_context().run(body)  # leave the test's own context untouched
    first_two.wait()
    last = Recorder(1)
    pool.run_task((3, 3), make_callback("unset", last))  # submitted where `who` is unset
    last.wait()
    assert seen == {"first": "first", "second": "second", "unset": "<unset>"}
    assert who.get("<unset>") == "<unset>"


def test_map_from_inside_a_context(pool):
    def body():
        who.set("mapped")
        return list(pool.map(fastpool.kernels.add, [(i, i) for i in range(100)]))

    assert contextvars.copy_context().run(body) == [2 * i for i in range(100)]


# -- re-entrancy ----------------------------------------------------------------


def test_a_chain_of_1000_tasks_submitted_from_callbacks(pool):
    depth = 1000
    chain = []
    finished = threading.Event()
    leaves = Recorder(2 * (depth - 1))

    def step(err, result):
        chain.append((err, result))
        if len(chain) < depth:
            pool.run_task((result, 1), step)
            # two more per link: with ring_size=2 the callback side overflows the ring too
            pool.run_task((result, result), leaves.keyed((result, "double")))
            pool.run_task({"a": result, "b": 0}, leaves.keyed((result, "same")))
        else:
            finished.set()

    pool.run_task((0, 1), step)
    wait_for(finished, f"a chain of {depth} callbacks")
    leaves.wait()
    assert chain == [(None, i) for i in range(1, depth + 1)]
    assert leaves.by_key == {
        **{(i, "double"): [(None, 2 * i)] for i in range(1, depth)},
        **{(i, "same"): [(None, i)] for i in range(1, depth)},
    }


def test_futures_submitted_from_done_callbacks(pool):
    depth = 100  # a done callback added to a finished future runs inline: keep the stack small
    results = []
    finished = threading.Event()

    def step(fut):
        results.append(fut.result())
        if len(results) < depth:
            pool.run((fut.result(), 1)).add_done_callback(step)
        else:
            finished.set()

    pool.run((0, 1)).add_done_callback(step)
    wait_for(finished, f"a chain of {depth} futures")
    assert results == list(range(1, depth + 1))


# -- quiet when idle --------------------------------------------------------------

IDLE_WINDOW = 0.5
IDLE_CPU_SHARE = 0.05


def cpu_share_while_idle():
    """CPU used by the whole process over a wait of IDLE_WINDOW, as a share of the wait."""
    cpu0, t0 = time.process_time(), time.monotonic()
    threading.Event().wait(IDLE_WINDOW)  # a measurement window, not synchronisation
    cpu1, t1 = time.process_time(), time.monotonic()
    return (cpu1 - cpu0) / (t1 - t0)


def test_idle_pool_uses_no_cpu(make_pool, num_threads):
    pool = make_pool(num_threads, ring_size=2)
    assert pool.run((1, 2)).result(timeout=WAIT) == 3
    share = cpu_share_while_idle()
    assert share < IDLE_CPU_SHARE, f"idle pool used {share:.1%} CPU"


def test_pool_goes_quiet_after_a_burst(make_pool, ring_size):
    pool = make_pool(4, ring_size=ring_size)
    rec = Recorder(20_000)
    for i in range(20_000):
        pool.run_task((i, i), rec.callback)
    rec.wait()
    share = cpu_share_while_idle()
    assert share < IDLE_CPU_SHARE, f"pool used {share:.1%} CPU after the burst"


def test_idle_thread_pool_executor_uses_no_cpu(leak_check):
    with fastpool.ThreadPoolExecutor(4) as ex:
        assert [f.result(timeout=WAIT) for f in [ex.submit(pow, i, 2) for i in range(100)]] == [
            i * i for i in range(100)]
        share = cpu_share_while_idle()
    assert share < IDLE_CPU_SHARE, f"idle executor used {share:.1%} CPU"


# -- the overflow FIFO and the garbage collector ------------------------------

# Run in a fresh interpreter: its small heap makes collections frequent.
_OVERFLOW_AND_GC = """
import gc, sys, threading
from time import sleep as pause
from functools import partial
import fastpool

class Finalized:
    def __init__(self):
        self.me = self                       # a cycle: freed by the collector
    def __del__(self):
        pause(0)                              # releases the GIL inside gc

gc.set_threshold(50, 2, 2)
for round_ in range(3):
    pool = fastpool.WorkerPool(2, ring_size=2)
    total = 8 * 2000
    done, lock, count = threading.Event(), threading.Lock(), [0]
    def callback(expected, err, result):
        Finalized()
        assert err is None and result == expected
        with lock:
            count[0] += 1
            if count[0] == total:
                done.set()
    def submit(t):
        for i in range(2000):
            Finalized()
            pool.run_task((t, i), partial(callback, t + i))
    threads = [threading.Thread(target=submit, args=(t,)) for t in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    if not done.wait(15):
        print(f"stalled at {count[0]} of {total}", flush=True)
        pool.terminate()
        sys.exit(1)
    pool.close()
print("ok")
"""


@pytest.mark.timeout(120)
def test_overflow_moves_on_when_a_collection_lets_the_dispatcher_run():
    # A submit that finds the ring full queues its task; making the queue
    # entry can run a collection whose finalizers let the dispatcher free
    # every slot and go to sleep before the entry lands.  The queue must
    # still move on.
    proc = subprocess.run([sys.executable, "-c", _OVERFLOW_AND_GC],
                          capture_output=True, text=True, timeout=100)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "ok", "")


def test_context_snapshots_are_shared_on_this_python():
    # Without it every task copies its submitter's Context (correct, slower).
    from fastpool._core import _context_snapshots_shared

    assert _context_snapshots_shared()


def test_what_a_callback_sets_does_not_reach_a_task_from_the_same_context(pool):
    seen = []
    rec = Recorder(200)

    def callback(err, result):
        seen.append(who.get("<unset>"))
        who.set(f"set-by-{result}")      # each callback must start clean
        rec.callback(err, result)

    def body():
        who.set("submitter")
        for i in range(200):
            pool.run_task((i, 0), callback)

    contextvars.copy_context().run(body)
    rec.wait()
    assert seen == ["submitter"] * 200


# -- futures and the garbage collector ----------------------------------------

# Before Python 3.12 a collection can start inside any allocation and run
# Python code (here a gc callback) that lets another thread run.  The trap
# stops the worker at its first collection, as it starts our task, while the
# submitter adds a done callback; then both go on.  PYTHONMALLOC=debug turns a
# use of freed memory into a crash.
_FUTURE_TOUCHED_DURING_A_COLLECTION = """
import gc, sys, threading
import fastpool

sys.setswitchinterval(60)               # only blocking calls hand the GIL over
main = threading.get_ident()
fired, touched, called = threading.Lock(), threading.Lock(), threading.Event()
fired.acquire()
touched.acquire()
armed = [True]

def trap(phase, info):
    if phase == "start" and armed[0] and threading.get_ident() != main:
        armed[0] = False
        fired.release()
        touched.acquire(timeout=30)

def task():
    return [42]                         # allocates, so the worker collects by now

with fastpool.WorkerPool(1) as pool:
    assert pool.submit(int).result(timeout=30) == 0    # the worker is up, and idle
    gc.callbacks.append(trap)
    gc.disable()
    junk = [[] for _ in range(gc.get_threshold()[0] + 100)]   # the next allocation collects
    held = [{} for _ in range(200)]     # no spare dicts: making one allocates
    fut = pool.submit(task)
    gc.enable()
    assert fired.acquire(True, 30), "no collection in the worker"
    fut.add_done_callback(lambda f: called.set())
    touched.release()
    assert called.wait(30), "the done callback never ran"
    assert fut.result(timeout=30) == [42]
    gc.callbacks.remove(trap)
del fut, junk, held
gc.collect()
print("ok")
"""


def test_a_future_touched_while_its_worker_collects_garbage():
    env = dict(os.environ, PYTHONMALLOC="debug")
    proc = subprocess.run([sys.executable, "-c", _FUTURE_TOUCHED_DURING_A_COLLECTION],
                          capture_output=True, text=True, timeout=100, env=env)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "ok", "")
