"""Errors go where they belong (guarantee 4).

* Errors about a task reach that task's callback or future (the bad-task table).
* A callback that raises goes to the "error" listeners, or to the "fastpool"
  logger when there are none; the pool keeps working.
* Errors about using the pool raise at the call.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import threading

import pytest

import fastpool
from _support import WAIT, Recorder, wait_for

# (task, exception type, fragment of the message)
BAD_TASKS = [
    pytest.param("1+2", TypeError, "task", id="str"),
    pytest.param(None, TypeError, "task", id="None"),
    pytest.param([1, 2], TypeError, "task", id="list"),
    pytest.param([[1, 2], [3, 4]], TypeError, "task", id="nested-lists"),
    pytest.param([{"a": 1, "b": 2}], TypeError, "task", id="list-of-mapping"),
    pytest.param({"a": 1}, Exception, "missing key 'b'", id="missing-b"),
    pytest.param({"b": 1}, Exception, "missing key 'a'", id="missing-a"),
    pytest.param((), ValueError, "2-tuple", id="0-tuple"),
    pytest.param((1,), ValueError, "2-tuple", id="1-tuple"),
    pytest.param((1, 2, 3), ValueError, "2-tuple", id="3-tuple"),
    pytest.param({"a": "1", "b": 2}, TypeError, "'a'", id="str-operand"),
    pytest.param({"a": 1, "b": None}, TypeError, "'b'", id="None-operand"),
    pytest.param({"a": 1j, "b": 2}, TypeError, "'a'", id="complex-operand"),
    pytest.param({"a": 1, "b": {"a": 1, "b": 2}}, TypeError, "'b'", id="dict-operand"),
    pytest.param(("x", 2), TypeError, "'a'", id="tuple-str-operand"),
    pytest.param((1, None), TypeError, "'b'", id="tuple-None-operand"),
]


def check_error(err, exc_type, fragment):
    assert isinstance(err, exc_type), repr(err)
    assert fragment in str(err), repr(err)


@pytest.mark.parametrize("task, exc_type, fragment", BAD_TASKS)
def test_bad_task_completes_with_an_exception_to_its_own_callback(make_pool, ring_size, task, exc_type,
                                                                  fragment):
    pool = make_pool(2, ring_size=ring_size)
    rec = Recorder(3)
    pool.run_task((1, 2), rec.keyed("before"))
    pool.run_task(task, rec.keyed("bad"))
    pool.run_task((3, 4), rec.keyed("after"))
    rec.wait()
    pool.close()
    calls = rec.by_key
    assert calls["before"] == [(None, 3)]
    assert calls["after"] == [(None, 7)]
    [(err, result)] = calls["bad"]
    check_error(err, exc_type, fragment)
    assert result is None


@pytest.mark.parametrize("task, exc_type, fragment", BAD_TASKS)
def test_bad_task_sets_the_exception_of_its_future(make_pool, task, exc_type, fragment):
    pool = make_pool(2, ring_size=2)
    fut = pool.run(task)
    check_error(fut.exception(timeout=WAIT), exc_type, fragment)
    assert pool.run((5, 6)).result(timeout=WAIT) == 11


@pytest.mark.parametrize("task, exc_type, fragment", BAD_TASKS)
def test_kernel_called_directly_raises_for_a_bad_task(task, exc_type, fragment):
    with pytest.raises(exc_type) as excinfo:
        fastpool.kernels.add(task)
    check_error(excinfo.value, exc_type, fragment)


def test_bad_tasks_interleaved_with_good_ones_on_every_configuration(pool):
    bad = [p.values for p in BAD_TASKS]
    rounds = 20
    rec = Recorder(rounds * (len(bad) + 1))
    for r in range(rounds):
        for i, (task, _, _) in enumerate(bad):
            pool.run_task(task, rec.keyed((r, i)))
        pool.run_task((r, r), rec.keyed((r, "good")))
    rec.wait()
    pool.close()
    calls = rec.by_key
    for r in range(rounds):
        assert calls[(r, "good")] == [(None, 2 * r)]
        for i, (_, exc_type, fragment) in enumerate(bad):
            [(err, result)] = calls[(r, i)]
            check_error(err, exc_type, fragment)
            assert result is None


# -- callbacks that raise ---------------------------------------------------


class CallbackFailed(Exception):
    pass


def fastpool_records(caplog):
    return [r for r in caplog.records if r.name == "fastpool" or r.name.startswith("fastpool.")]


def record_mentions(record, exc):
    return (record.exc_info is not None and record.exc_info[1] is exc) or str(exc) in record.getMessage()


def test_raising_callback_goes_to_every_error_listener(pool, caplog):
    caplog.set_level(logging.DEBUG, logger="fastpool")
    boom = CallbackFailed("callback failed")
    first, second = [], []
    heard = threading.Event()

    def raising(err, result):
        raise boom

    def listener2(exc):
        second.append(exc)
        heard.set()

    pool.on("error", first.append)
    pool.on("error", listener2)
    pool.run_task((1, 2), raising)
    wait_for(heard, "the error listener")
    rec = Recorder(1)
    pool.run_task((2, 3), rec.callback)
    assert rec.wait() == [(None, 5)]
    pool.close()
    assert len(first) == 1 and first[0] is boom
    assert len(second) == 1 and second[0] is boom
    assert not any(record_mentions(r, boom) for r in fastpool_records(caplog))


def test_raising_callback_without_listeners_is_logged_to_fastpool_logger(pool, caplog):
    caplog.set_level(logging.DEBUG, logger="fastpool")
    boom = CallbackFailed("callback failed, nobody listening")

    def raising(err, result):
        raise boom

    pool.run_task((1, 2), raising)
    rec = Recorder(1)
    pool.run_task((2, 3), rec.callback)
    assert rec.wait() == [(None, 5)]
    pool.close()
    logged = [r for r in fastpool_records(caplog) if record_mentions(r, boom)]
    assert len(logged) == 1
    assert logged[0].levelno >= logging.ERROR


def test_off_removes_the_error_listener_and_logging_resumes(pool, caplog):
    caplog.set_level(logging.DEBUG, logger="fastpool")
    heard = []
    boom = CallbackFailed("after off")
    listener = heard.append

    def raising(err, result):
        raise boom

    pool.on("error", listener)
    pool.off("error", listener)
    pool.run_task((1, 2), raising)
    pool.close()
    assert heard == []
    assert any(record_mentions(r, boom) for r in fastpool_records(caplog))


def test_many_raising_callbacks_do_not_harm_the_pool(pool):
    errors = []
    pool.on("error", errors.append)
    n = 400
    rec = Recorder(n)

    def make_callback(i):
        def callback(err, result):
            rec.keyed(i)(err, result)
            if i % 2:
                raise CallbackFailed(i)

        return callback

    for i in range(n):
        pool.run_task((i, 1), make_callback(i))
    rec.wait()
    pool.close()
    assert rec.by_key == {i: [(None, i + 1)] for i in range(n)}
    assert sorted(e.args[0] for e in errors) == list(range(1, n, 2))


# -- usage errors raise at the call -----------------------------------------


@pytest.mark.parametrize("num_threads", [True, False, 1.5, 2.0, "2", [2]])
def test_num_threads_of_the_wrong_type_raises_type_error(num_threads):
    with pytest.raises(TypeError):
        fastpool.WorkerPool(num_threads)


@pytest.mark.parametrize("num_threads", [0, -1])
def test_num_threads_below_one_raises_value_error(num_threads):
    with pytest.raises(ValueError):
        fastpool.WorkerPool(num_threads)


@pytest.mark.parametrize("processor", [1, "add", object(), {"a": 1}])
def test_processor_that_is_not_callable_raises_type_error(processor):
    with pytest.raises(TypeError):
        fastpool.WorkerPool(2, processor)


@pytest.mark.parametrize("ring_size", [0, 1, 3, 1000])
def test_ring_size_that_is_not_a_power_of_two_at_least_two_raises_value_error(ring_size):
    with pytest.raises(ValueError):
        fastpool.WorkerPool(2, ring_size=ring_size)


@pytest.mark.parametrize("callback", [None, 1, "callback", object()])
def test_non_callable_callback_raises_type_error_at_the_call(make_pool, callback):
    pool = make_pool(2, ring_size=2)
    with pytest.raises(TypeError):
        pool.run_task((1, 2), callback)
    assert pool.run((1, 2)).result(timeout=WAIT) == 3


@pytest.mark.parametrize("stop", ["close", "terminate", "shutdown"])
def test_run_task_after_stop_raises_pool_closed_error_and_never_calls_back(make_pool, stop):
    pool = make_pool(2)
    getattr(pool, stop)()
    called = []
    with pytest.raises(fastpool.PoolClosedError):
        pool.run_task((1, 2), lambda err, result: called.append(err))
    pool.close()
    assert called == []


def test_on_unknown_event_raises_value_error(make_pool):
    pool = make_pool(1)
    with pytest.raises(ValueError):
        pool.on("bogus", lambda *args: None)


def test_off_of_an_unregistered_listener_is_not_an_error(make_pool):
    pool = make_pool(1)
    pool.off("error", lambda exc: None)
    pool.off("spawn", print)
    pool.off("exit", print)


def test_exception_hierarchy():
    assert issubclass(fastpool.PoolClosedError, RuntimeError)
    assert issubclass(fastpool.WorkerExitedError, Exception)
    assert issubclass(fastpool.TaskTimeoutError, Exception)


def test_task_timeout_error_is_both_timeout_errors():
    # Before Python 3.11, concurrent.futures.TimeoutError is not the builtin
    # one; code catching either must catch a task's timeout on every Python.
    assert issubclass(fastpool.TaskTimeoutError, TimeoutError)
    assert issubclass(fastpool.TaskTimeoutError, cf.TimeoutError)
