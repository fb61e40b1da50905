"""What a hostile user found: the dispatcher must never die, a task is read
once, a forked child cannot touch its parent's pool, terminate() does not
wait for a stuck task to fail the unstarted ones, sizes are bounded before
anything is allocated."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import fastpool
from _support import WAIT, Recorder, first_task_running, new_shm_entries, shm_entries, wait_for


def run_script(script: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout)


# -- the dispatcher never dies ----------------------------------------------


class Fatal(BaseException):
    """Not an Exception: what a careless listener or callback might raise."""


def test_error_listener_raising_a_base_exception_is_logged_and_the_pool_goes_on(make_pool, caplog):
    pool = make_pool(2)

    def listener(exc):
        raise Fatal("listener")

    def bad_callback(err, result):
        raise ValueError("callback")

    pool.on("error", listener)
    rec = Recorder(1)
    pool.run_task((1, 2), bad_callback)
    pool.run_task((3, 4), rec.callback)
    assert rec.wait() == [(None, 7)]
    assert pool.run((5, 6)).result(WAIT) == 11
    pool.close()
    assert any("listener" in r.getMessage() or "Fatal" in str(r.exc_info) for r in caplog.records)


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt, Fatal])
def test_done_callback_raising_a_base_exception_is_reported_and_the_pool_goes_on(make_pool, exc):
    pool = make_pool(1)
    errors = []
    pool.on("error", errors.append)
    gate = threading.Event()

    def raising(fut):
        gate.set()
        raise exc("done-callback")

    with first_task_running(pool):     # so that f is still queued below
        f = pool.run((1, 1))
        f.add_done_callback(raising)
    wait_for(gate, "the done-callback")
    assert f.result(WAIT) == 2
    assert pool.run((2, 2)).result(WAIT) == 4
    pool.close()
    assert [type(e) for e in errors] == [exc]


def test_base_exception_from_a_run_task_callback_is_reported_and_the_pool_goes_on(make_pool):
    pool = make_pool(2)
    errors = []
    pool.on("error", errors.append)

    def callback(err, result):
        raise SystemExit(3)

    pool.run_task((1, 1), callback)
    assert pool.run((2, 2)).result(WAIT) == 4
    pool.close()
    assert [type(e) for e in errors] == [SystemExit]


def test_engine_failure_breaks_the_pool_cleanly(make_pool):
    """An internal failure of the dispatcher (here: starting a replacement
    worker fails) completes every pending task with an error, stops the
    workers and lets close() return."""
    pool = make_pool(1, lambda t: (_ for _ in ()).throw(SystemExit) if t == "die" else t)

    def no_threads(idx):
        raise RuntimeError("can't start new thread")

    with first_task_running(pool):
        pool._spawn = no_threads
        doomed = pool.run("die")
        pending = [pool.run(i) for i in range(20)]
    with pytest.raises(fastpool.WorkerExitedError):
        doomed.result(WAIT)
    for f in pending:
        err = f.exception(WAIT)
        assert isinstance(err, (fastpool.PoolClosedError, fastpool.WorkerExitedError)), err
    pool.close()
    with pytest.raises(fastpool.PoolClosedError):
        pool.run(1)


def test_no_thread_for_the_first_worker_fails_the_task_and_breaks_the_pool(make_pool):
    pool = make_pool(1)

    def no_threads(idx):
        raise RuntimeError("can't start new thread")

    pool._spawn = no_threads
    with pytest.raises(RuntimeError, match="can't start new thread"):
        pool.run((1, 2))
    pool.close()
    with pytest.raises(fastpool.PoolClosedError):
        pool.run((1, 2))


# -- a task is read once ----------------------------------------------------


@pytest.mark.parametrize("ring_size", [2, 1024])
def test_a_queued_task_changed_after_submit_runs_as_submitted(make_pool, ring_size):
    pool = make_pool(1, ring_size=ring_size)
    with first_task_running(pool):
        tasks = [{"a": i, "b": 1} for i in range(50)]
        futs = [pool.run(t) for t in tasks]
        for t in tasks:
            t["a"] = 1000
            t["b"] = "not a number"
    assert [f.result(WAIT) for f in futs] == [i + 1 for i in range(50)]


def test_a_queued_task_that_would_no_longer_encode_still_runs(make_pool):
    pool = make_pool(1, ring_size=2)
    with first_task_running(pool):
        tasks = [{"a": i, "b": 1} for i in range(10)]
        futs = [pool.run(t) for t in tasks]
        for t in tasks:
            t.clear()
    assert [f.result(WAIT) for f in futs] == [i + 1 for i in range(10)]
    assert pool.run((1, 1)).result(WAIT) == 2


# -- fork --------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_a_closed_copy_and_the_parent_pool_is_untouched():
    script = """
        import os, sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads
        import fastpool
        pool = fastpool.WorkerPool(2)
        assert pool.run((1, 2)).result(10) == 3
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                pool.run((1, 1))
                code = 10                      # must not run on the parent's workers
            except fastpool.PoolClosedError:
                pass
            try:
                pool.run_task((1, 1), lambda e, r: None)
                code = 11
            except fastpool.PoolClosedError:
                pass
            pool.terminate()                   # touches nothing of the parent's
            pool.close()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        # the parent's pool is whole
        assert [pool.run((i, i)).result(10) for i in range(1000)] == [2 * i for i in range(1000)]
        pool.close()
        print("ok")
    """
    proc = run_script(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# -- terminate with a stuck task ----------------------------------------------


@pytest.mark.parametrize("ring_size", [2, 1024])
def test_terminate_fails_unstarted_tasks_at_once_while_a_task_is_stuck(make_pool, ring_size):
    pool = make_pool(1, ring_size=ring_size)
    with first_task_running(pool) as first:
        rec = Recorder(30)
        for i in range(30):
            pool.run_task((i, i), rec.callback)
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        # The stuck task is still running: the unstarted ones fail now.
        calls = rec.wait()
        assert all(isinstance(err, fastpool.PoolClosedError) for err, _ in calls), calls
        assert not first.done()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert first.result(WAIT) == "first"


def test_terminate_fails_an_array_task_once_while_a_task_is_stuck(make_pool):
    np = pytest.importorskip("numpy")
    pool = make_pool(1)
    with first_task_running(pool):
        a = np.arange(1_000_000, dtype=np.float64)
        rec = Recorder(1)
        pool.run_task({"a": a, "b": a}, rec.callback)
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        [(err, result)] = rec.wait()
        assert isinstance(err, fastpool.PoolClosedError)
    stopper.join(WAIT)
    assert len(rec) == 1


# -- sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("ring_size", [2**40, 2**31, 2**21])
def test_ring_size_too_large_names_the_argument(ring_size):
    with pytest.raises(ValueError, match="ring_size"):
        fastpool.WorkerPool(1, ring_size=ring_size)


@pytest.mark.parametrize("n", [2**31, 10**6])
def test_num_threads_too_large_names_the_argument_before_allocating(n):
    with pytest.raises(ValueError, match="num_threads"):
        fastpool.WorkerPool(n)


def test_ctrl_c_during_close_leaves_no_segment():
    # The task sends the SIGINT once the main thread is blocked in close().
    script = """
        import os, signal, sys, threading, fastpool

        # Ctrl-C raises KeyboardInterrupt even if this process was started
        # with SIGINT ignored (as a shell's background job is).
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def task(t):
            main = threading.main_thread().ident
            while True:
                frame = sys._current_frames().get(main)
                names = set()
                while frame is not None:
                    names.add(frame.f_code.co_name)
                    frame = frame.f_back
                if "close" in names:
                    break
                threading.Event().wait(0.001)   # poll the main thread's stack
            # To the main thread itself, as a terminal's Ctrl-C reaches a
            # single-threaded program: sent to the process, the kernel may
            # hand it to this thread, and the main thread, blocked in a
            # wait, would only see it once close() has returned.
            signal.pthread_kill(main, signal.SIGINT)
            threading.Event().wait(0.3)
            return t

        pool = fastpool.WorkerPool(1, task)
        pool.run(1)
        pool.close()
    """
    before = shm_entries()
    proc = run_script(script)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr
    assert new_shm_entries(before) == set()


def test_repr_says_closed_once_close_returned(make_pool):
    pool = make_pool(2)
    assert "running" in repr(pool)
    pool.close()
    assert "closed" in repr(pool)


# -- a thread waiting on a future completes it while the dispatcher sleeps ----


def test_other_tasks_complete_while_a_thread_waits_on_a_stuck_task(make_pool):
    pool = make_pool(2)
    release = threading.Event()
    stuck = pool.submit(release.wait, WAIT)
    waiting = threading.Thread(target=stuck.result, args=(WAIT,))
    waiting.start()
    try:
        rec = Recorder(200)
        for i in range(200):
            pool.run_task((i, 1), rec.callback)
        assert sorted(r for _, r in rec.wait()) == [i + 1 for i in range(200)]
        assert [pool.run((i, i)).result(WAIT) for i in range(100)] == [2 * i for i in range(100)]
    finally:
        release.set()
    waiting.join(WAIT)
    assert stuck.result(WAIT) is True


def test_result_with_timeout_on_a_stuck_task_times_out_and_the_pool_goes_on(make_pool):
    import concurrent.futures as cf

    pool = make_pool(1)
    with first_task_running(pool) as first:
        with pytest.raises(cf.TimeoutError):
            first.result(0.05)
        with pytest.raises(cf.TimeoutError):
            first.exception(0.05)
    assert first.result(WAIT) == "first"
    assert pool.run((1, 2)).result(WAIT) == 3


def test_terminate_is_not_held_up_by_a_thread_waiting_on_a_stuck_task(make_pool):
    pool = make_pool(1)
    with first_task_running(pool) as first:
        waiting = threading.Thread(target=first.result, args=(WAIT,))
        waiting.start()
        queued = [pool.run((i, i)) for i in range(20)]
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        for f in queued:
            assert isinstance(f.exception(WAIT), fastpool.PoolClosedError)
        assert not first.done()
    stopper.join(WAIT)
    waiting.join(WAIT)
    assert first.result(WAIT) == "first"


@pytest.mark.parametrize("num_threads", [1, 2, 4])
def test_many_threads_waiting_on_their_own_futures_each_get_exactly_their_result(make_pool, num_threads):
    pool = make_pool(num_threads)
    errors = []
    rec = Recorder(4 * 500)

    def producer(k):
        try:
            for i in range(500):
                if i % 3 == 0:
                    pool.run_task((k, i), rec.callback)
                    continue
                got = pool.run((k, i)).result(WAIT)
                assert got == k + i, (k, i, got)
                rec.callback(None, got)
        except BaseException as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    calls = rec.wait()
    assert sorted(r for _, r in calls) == sorted(k * 1000 + i for k in range(4) for i in range(500))
