"""`await pool.run(task)` in asyncio: results, errors, and resuming on the awaiting loop."""
from __future__ import annotations

import asyncio
import threading

import pytest

import fastpool
from _support import WAIT


def test_await_pool_run(pool):
    async def main():
        return await pool.run({"a": 1, "b": 2})

    assert asyncio.run(main()) == 3


def test_await_resumes_on_the_awaiting_loop_and_task(pool):
    async def main():
        loop = asyncio.get_running_loop()
        me = threading.get_ident()
        task = asyncio.current_task()
        out = []
        for i in range(50):
            result = await pool.run((i, i))
            out.append((result, threading.get_ident() == me,
                        asyncio.get_running_loop() is loop, asyncio.current_task() is task))
        return out

    assert asyncio.run(main()) == [(2 * i, True, True, True) for i in range(50)]


def test_many_concurrent_awaits(pool):
    async def main():
        return await asyncio.gather(*(pool.run((i, 1)) for i in range(2000)))

    assert asyncio.run(main()) == [i + 1 for i in range(2000)]


def test_loops_in_different_threads_each_resume_on_their_own(pool):
    results = {}
    errors = []

    def run_loop(t):
        async def main():
            me = threading.get_ident()
            values = await asyncio.gather(*(pool.run((t, i)) for i in range(300)))
            on_my_thread = [threading.get_ident() == me]
            for i in range(20):
                await pool.run((t, i))
                on_my_thread.append(threading.get_ident() == me)
            return values, all(on_my_thread)

        try:
            results[t] = asyncio.run(main())
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run_loop, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert results == {t: ([t + i for i in range(300)], True) for t in range(4)}


def test_await_bad_task_raises_its_exception(pool):
    async def main():
        with pytest.raises(TypeError, match="task"):
            await pool.run("not a task")
        return await pool.run((1, 2))

    assert asyncio.run(main()) == 3


def test_await_processor_exception_raises_the_same_object(pool_factory):
    boom = ValueError("boom")

    def processor(task):
        if task == "boom":
            raise boom
        return task

    pool = pool_factory(processor)

    async def main():
        with pytest.raises(ValueError) as excinfo:
            await pool.run("boom")
        return excinfo.value

    assert asyncio.run(main()) is boom


def test_awaiting_does_not_block_the_loop(pool_factory):
    release = threading.Event()

    def processor(task):
        return task if release.wait(10) else "the loop was blocked"

    pool = pool_factory(processor)

    async def main():
        async def releaser():
            release.set()  # can only run if the loop is free while the pool works

        result, _ = await asyncio.gather(pool.run("ok"), releaser())
        return result

    try:
        assert asyncio.run(main()) == "ok"
    finally:
        release.set()


def test_run_in_executor_accepts_the_pool(pool):
    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            loop.run_in_executor(pool, pow, 2, 8),
            loop.run_in_executor(pool, fastpool.kernels.add, (3, 4)),
        )

    assert asyncio.run(main()) == [256, 7]


def test_run_in_executor_accepts_the_thread_pool_executor(leak_check):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ex, sum, range(10))

    with fastpool.ThreadPoolExecutor(2) as ex:
        assert asyncio.run(main()) == 45
