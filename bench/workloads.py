"""The workloads of performance target table, shared by the pytest-benchmark
files (bench_*.py) and the ratio script (ratios.py).

One class per workload.  A workload makes its inputs once; its contenders
are the methods marked with @contender, each running one timed round and
returning what check() verifies, so a broken pool fails the benchmark
instead of timing nothing.  Pools are made when a contender is first
prepared and closed by close().

    wl = Callbacks()
    wl.prepare("fastpool")            # make its pool (untimed)
    wl.before_round("fastpool")       # untimed per-round setup
    result = wl.round("fastpool")     # the timed part
    wl.check("fastpool", result)      # raises AssertionError if wrong
    seconds = wl.measure("fastpool")  # all of the above, as ratios.py uses it
    wl.close()

Every pool gets one worker per core (os.cpu_count(), fastpool's default),
so the contenders run on the same number of threads or processes.
FASTPOOL_BENCH_SCALE (a float, default 1.0) multiplies every size, so CI can
run the whole suite at tiny sizes.  Timings are compared, never asserted.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import multiprocessing
import multiprocessing.pool
import operator
import os
import platform
import re
import site
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import fastpool
from fastpool import kernels


def _scale_from_env() -> float:
    text = os.environ.get("FASTPOOL_BENCH_SCALE", "1.0")
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"FASTPOOL_BENCH_SCALE must be a number, got {text!r}") from None
    if not value > 0:
        raise SystemExit(f"FASTPOOL_BENCH_SCALE must be > 0, got {text!r}")
    return value


SCALE = _scale_from_env()
NPROC = os.cpu_count() or 1
ROUNDS = 5                 # timed rounds per contender (pytest-benchmark and ratios.py)
WAIT_TIMEOUT = max(60.0, 600.0 * SCALE)   # seconds a round may wait for its last completion
IDLE_GAP = 0.002           # round trip: pause between tasks, far longer than a worker spins before parking
HEAVY_MODULES = ("numpy", "asyncio", "multiprocessing.shared_memory")


def hang_timeout(scale: float = SCALE) -> int:
    """Seconds after which a stuck benchmark is stopped with stacks: minutes
    at CI's tiny sizes, an hour at full size (process pools are slow)."""
    return max(300, round(3600 * scale))


# ------------------------------------------------------------------ tasks

def add_task(task: dict) -> Any:
    """What every Python-side contender runs: the Node.js WorkerPool example's `task.a + task.b`.
    Module level, so process pools can pickle it."""
    return task["a"] + task["b"]


def small_task(i: int) -> int:
    """A small Python task for process pools: what matters is the trip."""
    return i + 1


def cpu_task(n: int) -> int:
    """Pure-Python arithmetic, about a millisecond for n = CPU_TASK_N here."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def double_array(a: Any) -> Any:
    return a * 2


CPU_TASK_N = 40_000


def dict_tasks(n: int) -> list[dict]:
    """n add tasks as dicts; their results sum to n * n."""
    return [{"a": i, "b": i + 1} for i in range(n)]


def pair_tasks(n: int) -> list[tuple[int, int]]:
    """The same n tasks as (a, b) pairs: a task for kernels.add, args for starmap."""
    return [(i, i + 1) for i in range(n)]


def check_sum(results: list, n: int) -> None:
    assert len(results) == n, f"{len(results)} results for {n} tasks"
    total = sum(results)
    assert total == n * n, f"results sum to {total}, expected {n * n}"


class Collector:
    """The callback every contender of workload 1 ends in: Node-style
    callback(err, result).  list.append is atomic, so callbacks may arrive
    from several threads at once (ThreadPoolExecutor runs done-callbacks in
    its workers); `done` is set by the last one."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list = []
        self.errors: list = []
        self.done = threading.Event()
        results, errors, done = self.results, self.errors, self.done

        def callback(err, result):
            if err is not None:
                errors.append(err)
            results.append(result)
            if len(results) == expected:
                done.set()

        self.callback = callback

    # Adapters from the stdlib's callback shapes to the same callback.
    def on_future_done(self, fut: concurrent.futures.Future) -> None:
        try:
            result = fut.result()
        except BaseException as exc:
            self.callback(exc, None)
        else:
            self.callback(None, result)

    def on_result(self, result: Any) -> None:
        self.callback(None, result)

    def on_error(self, exc: BaseException) -> None:
        self.callback(exc, None)

    def wait(self) -> "Collector":
        if not self.done.wait(WAIT_TIMEOUT):
            raise AssertionError(f"{len(self.results)} of {self.expected} callbacks after {WAIT_TIMEOUT:.0f} s")
        return self

    def check(self) -> None:
        assert not self.errors, f"{len(self.errors)} tasks failed, first: {self.errors[0]!r}"
        check_sum(self.results, self.expected)


# ------------------------------------------------------------------ pools

@contextlib.contextmanager
def _threadpool(workers: int):
    pool = multiprocessing.pool.ThreadPool(workers)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def _process_pool(workers: int):
    # spawn: forking a process that runs fastpool's and other pools' threads is unsafe.
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _mp_pool(workers: int):
    return multiprocessing.get_context("spawn").Pool(workers)


@contextlib.contextmanager
def _closing_mp_pool(workers: int):
    pool = _mp_pool(workers)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def _loky_pool(workers: int):
    import loky

    return loky.ProcessPoolExecutor(max_workers=workers)


# kind -> factory(workers) returning a context manager that closes the pool
POOLS: dict[str, Callable[[int], Any]] = {
    "fastpool": lambda n: fastpool.WorkerPool(n),
    "fastpool.ThreadPoolExecutor": lambda n: fastpool.ThreadPoolExecutor(n),
    "ThreadPoolExecutor": lambda n: concurrent.futures.ThreadPoolExecutor(n),
    "ThreadPool": _threadpool,
    "ProcessPoolExecutor": _process_pool,
    "loky": _loky_pool,
    "fastpool process": lambda n: fastpool.WorkerPool(n, workers="process"),
    "fastpool.ProcessPoolExecutor": lambda n: fastpool.ProcessPoolExecutor(n),
    "multiprocessing.Pool": _closing_mp_pool,
}


# -------------------------------------------------------------- workloads

def contender(name: str, pool: str | None = None, workers: int | None = None, needs: str | None = None):
    """Mark a method as the contender `name`: it runs one timed round.
    `pool` (a kind in POOLS, with `workers`, default one per core) is made
    by prepare(); `needs` is a module without which the contender is skipped."""
    def mark(method):
        method.contender = (name, pool, workers or NPROC, needs)
        return method
    return mark


def slug(name: str) -> str:
    """A contender's name as a pytest id: "plain loop" -> "plain-loop"."""
    return name.replace(" + ", "+").replace(", ", "-").replace(" ", "-")


@dataclass
class Target:
    """The target for one contender, as a ratio:
    contender's median / fastpool's median >= at_least."""
    at_least: float
    text: str

    def met(self, ratio: float) -> bool:
        return ratio >= self.at_least


@dataclass
class Check:
    """A target that is not a ratio (idle CPU, modules loaded at import)."""
    label: str
    value: str
    target: str
    met: bool


class Workload:
    number = ""
    key = ""                     # --only NAME, and the pytest-benchmark group
    title = ""
    needs: tuple[str, ...] = ()  # modules without which the whole workload is skipped
    baseline = "fastpool"
    targets: dict[str, Target] = {}
    rounds = ROUNDS              # timed rounds per contender, pytest-benchmark and ratios.py
    warmup_rounds = 1
    contenders: dict[str, Callable[..., Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.contenders = {m.contender[0]: m for m in vars(cls).values() if hasattr(m, "contender")}

    def __init__(self, scale: float | None = None) -> None:
        self.scale = SCALE if scale is None else scale
        self.tasks_per_round = 1     # what "per task" divides a round by
        self._stack = contextlib.ExitStack()
        self._pools: dict[tuple[str, int], Any] = {}

    def scaled(self, n: int, minimum: int = 1) -> int:
        return max(minimum, round(n * self.scale))

    @property
    def group(self) -> str:
        return f"{self.number} {self.key}"

    @classmethod
    def missing(cls, name: str) -> str | None:
        """Why contender `name` cannot run here, or None."""
        for module in cls.needs + (cls.contenders[name].contender[3] or "",):
            if module and importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None

    def pool(self, kind: str, workers: int = NPROC) -> Any:
        if (kind, workers) not in self._pools:
            self._pools[kind, workers] = self._stack.enter_context(POOLS[kind](workers))
        return self._pools[kind, workers]

    def pool_of(self, name: str) -> Any:
        _, kind, workers, _ = self.contenders[name].contender
        return self.pool(kind, workers)

    def prepare(self, name: str) -> None:
        """Untimed, once per contender: make its pool."""
        if self.contenders[name].contender[1]:
            self.pool_of(name)

    def before_round(self, name: str) -> None:
        """Untimed, before every round."""

    def round(self, name: str) -> Any:
        return self.contenders[name](self)

    def check(self, name: str, result: Any) -> None:
        raise NotImplementedError

    def measure(self, name: str) -> float:
        """One checked round; seconds (what ratios.py takes medians of)."""
        self.before_round(name)
        start = time.perf_counter()
        result = self.round(name)
        elapsed = time.perf_counter() - start
        self.check(name, result)
        return elapsed

    def pedantic(self) -> dict:
        """Rounds for pytest-benchmark's pedantic mode."""
        return {"rounds": self.rounds, "warmup_rounds": self.warmup_rounds}

    def extra_info(self, name: str, result: Any) -> dict:
        """Extra facts for pytest-benchmark's saved results."""
        return {}

    def checks(self) -> list[Check]:
        """Targets of this workload that are not ratios (after the rounds)."""
        return []

    def notes(self) -> list[str]:
        """What a reader of the results needs to know (after the rounds)."""
        return []

    def close(self) -> None:
        self._stack.close()
        self._pools.clear()

    def __enter__(self) -> "Workload":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Callbacks(Workload):
    number = "1"
    key = "callbacks"
    title = "callback path: add tasks as dicts, each completion calls callback(err, result)"
    targets = {
        "ThreadPoolExecutor": Target(40, ">= 40x"),
        "ThreadPool": Target(20, ">= 20x"),
        "plain loop": Target(1 / 2.5, "fastpool within 2.5x"),
    }

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(200_000, 10)
        self.tasks = dict_tasks(self.n)

    @contender("fastpool", pool="fastpool")
    def fastpool_run_task(self) -> Collector:
        c = Collector(self.n)
        run_task, callback = self.pool_of("fastpool").run_task, c.callback
        for task in self.tasks:
            run_task(task, callback)
        return c.wait()

    @contender("ThreadPoolExecutor", pool="ThreadPoolExecutor")
    def tpe_add_done_callback(self) -> Collector:
        c = Collector(self.n)
        submit, done = self.pool_of("ThreadPoolExecutor").submit, c.on_future_done
        for task in self.tasks:
            submit(add_task, task).add_done_callback(done)
        return c.wait()

    @contender("ThreadPool", pool="ThreadPool")
    def threadpool_apply_async(self) -> Collector:
        c = Collector(self.n)
        apply_async, on_result, on_error = self.pool_of("ThreadPool").apply_async, c.on_result, c.on_error
        for task in self.tasks:
            apply_async(add_task, (task,), callback=on_result, error_callback=on_error)
        return c.wait()

    @contender("plain loop")
    def plain_loop(self) -> Collector:
        c = Collector(self.n)
        callback = c.callback
        for task in self.tasks:
            callback(None, task["a"] + task["b"])
        return c.wait()

    def check(self, name: str, result: Collector) -> None:
        result.check()


class Futures(Workload):
    number = "2"
    key = "futures"
    title = "futures path: submit every task, then every .result()"
    targets = {"ThreadPoolExecutor": Target(5, ">= 5x")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(100_000, 10)
        self.tasks = dict_tasks(self.n)

    @contender("fastpool", pool="fastpool")
    def fastpool_run(self) -> list:
        run = self.pool_of("fastpool").run
        futures = [run(task) for task in self.tasks]
        return [f.result() for f in futures]

    def _submit(self, name: str) -> list:
        submit = self.pool_of(name).submit
        futures = [submit(add_task, task) for task in self.tasks]
        return [f.result() for f in futures]

    @contender("ThreadPoolExecutor", pool="ThreadPoolExecutor")
    def tpe_submit(self) -> list:
        return self._submit("ThreadPoolExecutor")

    @contender("fastpool.ThreadPoolExecutor", pool="fastpool.ThreadPoolExecutor")
    def fastpool_tpe_submit(self) -> list:
        return self._submit("fastpool.ThreadPoolExecutor")

    def check(self, name: str, result: list) -> None:
        check_sum(result, self.n)


class Map(Workload):
    number = "3"
    key = "map"
    title = "batch path: map over (a, b) pairs, results in order"
    targets = {"ThreadPool.starmap": Target(2, ">= 2x")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(1_000_000, 10)
        self.pairs = pair_tasks(self.n)
        self.xs = [a for a, _ in self.pairs]
        self.ys = [b for _, b in self.pairs]
        self.chunksize: dict[str, int] = {}

    def prepare(self, name: str) -> None:
        super().prepare(name)
        if name != "fastpool" and name not in self.chunksize:
            self.chunksize[name] = self.tune_chunksize(name)

    def tune_chunksize(self, name: str) -> int:
        """The peer's best chunksize on this input: the stdlib's default rule
        (n / (4 * workers)) and powers of ten, each timed once, fastest wins."""
        candidates = {max(1, -(-self.n // (4 * NPROC)))} | {c for c in (100, 1_000, 10_000, 100_000) if c < self.n}
        timings = {}
        for chunksize in sorted(candidates):
            self.chunksize[name] = chunksize
            timings[chunksize] = self.measure(name)
        return min(timings, key=timings.get)

    @contender("fastpool", pool="fastpool")
    def fastpool_map(self) -> list:
        return list(self.pool_of("fastpool").map(kernels.add, self.pairs))

    @contender("ThreadPool.starmap", pool="ThreadPool")
    def threadpool_starmap(self) -> list:
        return self.pool_of("ThreadPool.starmap").starmap(
            operator.add, self.pairs, chunksize=self.chunksize["ThreadPool.starmap"])

    def _executor_map(self, name: str) -> list:
        return list(self.pool_of(name).map(operator.add, self.xs, self.ys, chunksize=self.chunksize[name]))

    @contender("ProcessPoolExecutor", pool="ProcessPoolExecutor")
    def ppe_map(self) -> list:
        return self._executor_map("ProcessPoolExecutor")

    @contender("loky", pool="loky", needs="loky")
    def loky_map(self) -> list:
        return self._executor_map("loky")

    def check(self, name: str, result: list) -> None:
        check_sum(result, self.n)

    def extra_info(self, name: str, result: Any) -> dict:
        return {"chunksize": self.chunksize[name]} if name in self.chunksize else {}

    def notes(self) -> list[str]:
        return [f"{name}: chunksize {size:,}, the fastest tried" for name, size in self.chunksize.items()]


class _OneTaskSamples(Workload):
    """A workload whose round is one {"a": 1, "b": 2} task, measured
    `samples` times: what ratios.py reports is their median."""

    def check(self, name: str, result: int) -> None:
        assert result == 3, f"1 + 2 gave {result!r}"

    def measure(self, name: str) -> float:
        return statistics.median([Workload.measure(self, name) for _ in range(self.samples)])

    def pedantic(self) -> dict:
        return {"rounds": self.samples, "warmup_rounds": self.warmup_rounds}


class RoundTrip(_OneTaskSamples):
    """One task at a time, the pool going idle between tasks.  A round is one
    task: in pytest-benchmark `samples` rounds, whose median is the p50; in
    ratios.py each measure() is the p50 of `samples` of them."""

    number = "4"
    key = "roundtrip"
    title = f"round trip: one task, then {IDLE_GAP * 1e3:g} ms idle, p50 latency"
    targets = {"ThreadPoolExecutor": Target(2, "p50 <= half")}
    warmup_rounds = 10

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.samples = self.scaled(1_000, 20)
        self.task = {"a": 1, "b": 2}
        self.idle_seconds = max(0.5, 2.0 * min(1.0, self.scale))

    def before_round(self, name: str) -> None:
        time.sleep(IDLE_GAP)

    @contender("fastpool", pool="fastpool")
    def fastpool_run(self) -> int:
        return self.pool_of("fastpool").run(self.task).result()

    @contender("ThreadPoolExecutor", pool="ThreadPoolExecutor")
    def tpe_submit(self) -> int:
        return self.pool_of("ThreadPoolExecutor").submit(add_task, self.task).result()


    def idle_cpu_percent(self) -> float:
        """CPU used by this whole process, in % of one core, while its pools
        sit idle for `idle_seconds`."""
        self.pool("fastpool")
        time.sleep(0.05)                      # let the workers finish spinning and park
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(self.idle_seconds)
        return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)

    def extra_info(self, name: str, result: Any) -> dict:
        return {"idle_cpu_percent": self.idle_cpu_percent()} if name == "fastpool" else {}

    def checks(self) -> list[Check]:
        percent = self.idle_cpu_percent()
        return [Check("idle fastpool pool, CPU", f"{percent:.2f} % of a core", "< 1 % of a core", percent < 1)]


class ShortLived(_OneTaskSamples):
    """A pool made, used for one task and closed, as `with Pool(2) as pool:`
    around one task: every round is one whole life; the median is reported."""

    number = "4b"
    key = "shortlived"
    title = "short-lived pool: make a pool of 2, run one task, close it"
    targets = {"ThreadPoolExecutor": Target(0.5, "fastpool <= 2x its cost")}
    warmup_rounds = 10

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.samples = self.scaled(500, 20)
        self.task = {"a": 1, "b": 2}

    @contender("fastpool")
    def fastpool_with(self) -> int:
        with fastpool.WorkerPool(2) as pool:
            return pool.run(self.task).result()

    @contender("ThreadPoolExecutor")
    def tpe_with(self) -> int:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return pool.submit(add_task, self.task).result()



class _ArrayAdd(Workload):
    """Array tasks for the add kernel: a + b into a preallocated `out` per
    contender, compared element by element with numpy's answer."""

    needs = ("numpy",)

    def make_arrays(self, n: int) -> None:
        import numpy as np

        self.np = np
        self.n = n
        self.a = np.arange(n, dtype=np.float64)
        self.b = np.full(n, 0.5)
        self.expected = self.a + self.b
        self.out = {name: np.full(n, np.nan) for name in self.contenders}   # pages faulted in now

    def task(self, name: str) -> dict:
        return {"a": self.a, "b": self.b, "out": self.out[name]}

    def before_round(self, name: str) -> None:
        self.out[name].fill(self.np.nan)    # a skipped chunk cannot pass for a stale result

    def check(self, name: str, result: Any) -> None:
        assert self.np.array_equal(result, self.expected), "array add gave wrong elements"
        assert self.np.array_equal(self.out[name], self.expected), "out was not filled"


class Arrays(_ArrayAdd):
    number = "5"
    key = "arrays"
    title = "array add: 2^24 float64, out given"
    targets = {"numpy.add": Target(1.2, ">= 1.2x")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.make_arrays(self.scaled(2 ** 24, 1024))
        self.title = f"array add: {self.n:,} float64, out given"

    @contender("fastpool", pool="fastpool")
    def fastpool_add(self):
        return self.pool_of("fastpool").run(self.task("fastpool")).result()

    @contender("numpy.add")
    def numpy_add(self):
        return self.np.add(self.a, self.b, out=self.out["numpy.add"])


class Scaling(_ArrayAdd):
    """The add kernel on arrays small enough to stay in cache (2^18 float64,
    2 MiB each), split across the workers, one task at a time: scaling of a
    light kernel (5c, mandelbrot, is the compute-bound one)."""

    number = "5b"
    key = "scaling"
    title = "add kernel in cache: 2^18 float64 per task, one task at a time, 2 workers vs 1"
    baseline = "fastpool, 2 workers"
    targets = {"fastpool, 1 worker": Target(1.8, ">= 1.8x")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.make_arrays(2 ** 18)
        self.adds = self.tasks_per_round = self.scaled(200, 2)

    def _adds(self, name: str):
        run, task = self.pool_of(name).run, self.task(name)
        for _ in range(self.adds):
            result = run(task).result()
        return result

    @contender("fastpool, 2 workers", pool="fastpool", workers=2)
    def two_workers(self):
        return self._adds("fastpool, 2 workers")

    @contender("fastpool, 1 worker", pool="fastpool", workers=1)
    def one_worker(self):
        return self._adds("fastpool, 1 worker")



class Mandelbrot(Workload):
    """The compute-bound built-in kernel: the escape count of every point of
    a grid (at most 256 steps of z = z*z + c each), the grid's rows split
    into tasks of a few rows, all submitted at once, so that the workers
    share the uneven work (points in the set take every step).  Against the
    same pool with one worker, and against numpy computing the same steps
    elementwise over the whole grid (same counts, checked)."""

    number = "5c"
    key = "mandelbrot"
    title = "mandelbrot kernel: escape counts of a grid, 2 workers vs 1 and vs numpy"
    needs = ("numpy",)
    baseline = "fastpool, 2 workers"
    targets = {"fastpool, 1 worker": Target(1.8, ">= 1.8x"), "numpy": Target(1.5, ">= 1.5x")}
    ROWS_PER_TASK = 8

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        import numpy as np

        self.np = np
        side = self.scale ** 0.5                  # the grid's area follows the scale
        h = max(2, round(480 * side))
        w = max(2, round(640 * side))
        y, x = np.mgrid[-1.2:1.2:h * 1j, -2.2:0.8:w * 1j]
        self.x, self.y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        self.expected = kernels.mandelbrot((self.x, self.y))        # one thread, here
        self.rows = [slice(r, r + self.ROWS_PER_TASK) for r in range(0, h, self.ROWS_PER_TASK)]
        self.tasks_per_round = len(self.rows)
        self.out = {name: np.empty((h, w), np.int64) for name in self.contenders}
        self.title = (f"mandelbrot kernel: escape counts of a {w} x {h} grid in {len(self.rows)} "
                      "tasks, 2 workers vs 1 and vs numpy")

    def before_round(self, name: str) -> None:
        self.out[name].fill(-1)

    def _pool_round(self, name: str) -> Any:
        submit, out = self.pool_of(name).submit, self.out[name]
        futures = [submit(kernels.mandelbrot, {"a": self.x[r], "b": self.y[r], "out": out[r]})
                   for r in self.rows]
        for f in futures:
            f.result()
        return out

    @contender("fastpool, 2 workers", pool="fastpool", workers=2)
    def two_workers(self) -> Any:
        return self._pool_round("fastpool, 2 workers")

    @contender("fastpool, 1 worker", pool="fastpool", workers=1)
    def one_worker(self) -> Any:
        return self._pool_round("fastpool, 1 worker")

    @contender("numpy")
    def numpy_steps(self) -> Any:
        np, x, y = self.np, self.x, self.y
        count = self.out["numpy"]
        count.fill(kernels.MANDELBROT_LIMIT)
        zr, zi = np.zeros_like(x), np.zeros_like(x)
        active = np.ones(x.shape, dtype=bool)
        with np.errstate(all="ignore"):       # escaped points run on to inf and nan, unread
            for n in range(kernels.MANDELBROT_LIMIT):
                zr2, zi2 = zr * zr, zi * zi
                out = active & (zr2 + zi2 > 4.0)
                count[out] = n
                active &= ~out
                zi = 2.0 * zr * zi + y
                zr = zr2 - zi2 + x
        return count

    def check(self, name: str, result: Any) -> None:
        assert self.np.array_equal(result, self.expected), "escape counts differ from the kernel's"


CFUNC_ADD_SOURCE = """\
#include <stdint.h>
double fastpool_bench_add(double a, double b) { return a + b; }
void fastpool_bench_add_loop(char **args, int64_t n, void *data) {
    const double *a = (const double *)args[0], *b = (const double *)args[1];
    double *out = (double *)args[2];
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}
"""


def _c_compiler() -> str | None:
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


class CfuncArrays(_ArrayAdd):
    """A C function of one element as a kernel (kernels.cfunc, "f8(f8,f8)",
    called once per element) against the built-in add, adding the same
    arrays in the same pool; and the same add as a C loop over a chunk
    (cfunc(..., loop=True), called once per chunk).  Both are compiled here
    with the system's C compiler."""

    number = "5d"
    key = "cfunc-arrays"
    title = "cfunc f8(f8,f8) add vs the built-in add: 2^24 float64, out given"
    baseline = "cfunc add"
    targets = {"built-in add": Target(1 / 1.1, ">= 0.91x (cfunc costs <= 1.1x add)")}

    @classmethod
    def missing(cls, name: str) -> str | None:
        return super().missing(name) or (None if _c_compiler() else "no C compiler")

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.make_arrays(self.scaled(2 ** 24, 1024))
        self.title = f"cfunc f8(f8,f8) add vs the built-in add: {self.n:,} float64, out given"
        self.kernel = self.loop_kernel = None

    def prepare(self, name: str) -> None:
        super().prepare(name)
        if self.kernel is None:
            import tempfile

            d = self._stack.enter_context(tempfile.TemporaryDirectory())
            src, lib = os.path.join(d, "add.c"), os.path.join(d, "libfastpool_bench_add.so")
            with open(src, "w") as f:
                f.write(CFUNC_ADD_SOURCE)
            subprocess.run([_c_compiler(), "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
            self.kernel = kernels.cfunc((lib, "fastpool_bench_add"), "f8(f8,f8)")
            self.loop_kernel = kernels.cfunc((lib, "fastpool_bench_add_loop"), "f8(f8,f8)", loop=True)

    @contender("cfunc add", pool="fastpool")
    def cfunc_add(self) -> Any:
        return self.pool_of("cfunc add").submit(self.kernel, self.task("cfunc add")).result()

    @contender("built-in add", pool="fastpool")
    def builtin_add(self) -> Any:
        return self.pool_of("built-in add").run(self.task("built-in add")).result()

    @contender("cfunc loop add", pool="fastpool")
    def cfunc_loop_add(self) -> Any:
        return self.pool_of("cfunc loop add").submit(self.loop_kernel, self.task("cfunc loop add")).result()


# ------------------------------------------------- whole-process workloads

def child_env() -> dict[str, str]:
    """The environment for a child interpreter that must import this fastpool."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastpool.__file__)))
    default_paths = set(site.getsitepackages()) | {site.getusersitepackages()}
    if root not in default_paths:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_python(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=child_env(), capture_output=True, text=True,
                          timeout=WAIT_TIMEOUT)
    assert proc.returncode == 0, f"python {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


_IMPORTTIME = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", re.M)


def imported(stderr: str) -> list[tuple[str, int]]:
    """(module, cumulative us) of the top-level imports in -X importtime output."""
    return [(name, int(us)) for us, indent, name in _IMPORTTIME.findall(stderr) if not indent]


@dataclass
class ImportResult:
    seconds: float            # cumulative import time of what the statement added
    heavy: list[str]          # HEAVY_MODULES loaded by it


class Import(Workload):
    number = "6"
    key = "import"
    title = "import time (python -X importtime, what the import adds to a bare interpreter)"
    targets = {"concurrent.futures": Target(1 / 1.3, "fastpool <= 1.3x its time")}
    rounds = 15

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.at_startup: set[str] | None = None
        self.heavy: list[str] | None = None

    def prepare(self, name: str) -> None:
        super().prepare(name)
        if name == "fastpool":
            # pip compiles .pyc files at install time, and the standard
            # library ships them; an editable or source-tree run with
            # PYTHONDONTWRITEBYTECODE would otherwise recompile on every import.
            import compileall
            import fastpool
            compileall.compile_dir(os.path.dirname(fastpool.__file__), quiet=1)
        if self.at_startup is None:    # what the interpreter imports before -c runs
            self.at_startup = {m for m, _ in imported(run_python("-X", "importtime", "-c", "pass").stderr)}

    def _import(self, module: str) -> ImportResult:
        code = (f"import {module}, sys; "
                f"print(' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
        proc = run_python("-X", "importtime", "-c", code)
        added = [us for m, us in imported(proc.stderr) if m not in self.at_startup]
        return ImportResult(sum(added) / 1e6, proc.stdout.split())

    @contender("fastpool")
    def import_fastpool(self) -> ImportResult:
        return self._import("fastpool")

    @contender("concurrent.futures")
    def import_concurrent_futures(self) -> ImportResult:
        return self._import("concurrent.futures")

    def check(self, name: str, result: ImportResult) -> None:
        assert result.seconds > 0, "python -X importtime reported no import"
        if name == "fastpool":
            self.heavy = result.heavy
            assert not result.heavy, f"import fastpool loaded {', '.join(result.heavy)}"

    def measure(self, name: str) -> float:
        self.before_round(name)
        result = self.round(name)
        self.check(name, result)
        return result.seconds

    def extra_info(self, name: str, result: ImportResult) -> dict:
        return {"importtime_us": round(result.seconds * 1e6), "heavy_modules": result.heavy}

    def checks(self) -> list[Check]:
        if self.heavy is None:
            return []
        loaded = ", ".join(self.heavy) or "none"
        return [Check("heavy modules at import", loaded, "none of " + ", ".join(HEAVY_MODULES), not self.heavy)]


COLD_FASTPOOL = """\
import fastpool
pool = fastpool.WorkerPool()
try:
    print(pool.run({"a": 1, "b": 2}).result())
finally:
    pool.close()
"""

COLD_STDLIB = """\
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import shared_memory

def add(task):
    return task["a"] + task["b"]

segment = shared_memory.SharedMemory(create=True, size=%d)
try:
    with ThreadPoolExecutor(%d) as executor:
        print(executor.submit(add, {"a": 1, "b": 2}).result())
finally:
    segment.close()
    segment.unlink()
"""


class ColdStart(Workload):
    number = "7"
    key = "coldstart"
    title = "cold start: a whole process that makes a pool, runs one task, closes it"
    targets = {"ThreadPoolExecutor + shm": Target(1 / 1.2, "fastpool <= 1.2x its time")}
    rounds = 15

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.segment_size: int | None = None

    def prepare(self, name: str) -> None:
        super().prepare(name)
        if self.segment_size is None:    # the baseline's segment is as large as fastpool's
            with fastpool.WorkerPool() as pool:
                shm_name = getattr(pool, "shm_name", None)   # not public API: 1 MiB without it
                shm_name = shm_name() if callable(shm_name) else shm_name
                self.segment_size = os.stat(f"/dev/shm/{shm_name.lstrip('/')}").st_size if shm_name else 1 << 20

    @contender("fastpool")
    def fastpool_script(self) -> str:
        return run_python("-c", COLD_FASTPOOL).stdout

    @contender("ThreadPoolExecutor + shm")
    def stdlib_script(self) -> str:
        return run_python("-c", COLD_STDLIB % (self.segment_size, NPROC)).stdout

    def check(self, name: str, result: str) -> None:
        assert result.strip() == "3", f"the script printed {result!r}"


# -------------------------------------------------------- worker processes

class ProcSmall(Workload):
    number = "8"
    key = "proc-small"
    title = "process pools, small Python tasks: submit(fn, i), then every .result()"
    targets = {
        "ProcessPoolExecutor": Target(20, ">= 20x"),
        "loky": Target(20, ">= 20x"),
        "multiprocessing.Pool.apply_async": Target(10, ">= 10x"),
    }

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(20_000, 10)

    def _submit(self, name: str) -> list:
        submit = self.pool_of(name).submit
        futures = [submit(small_task, i) for i in range(self.n)]
        return [f.result() for f in futures]

    @contender("fastpool", pool="fastpool process")
    def fastpool_submit(self) -> list:
        return self._submit("fastpool")

    @contender("fastpool.ProcessPoolExecutor", pool="fastpool.ProcessPoolExecutor")
    def fastpool_ppe_submit(self) -> list:
        return self._submit("fastpool.ProcessPoolExecutor")

    @contender("fastpool, callbacks", pool="fastpool process")
    def fastpool_done_callbacks(self) -> list:
        c = Collector(self.n)
        submit, done = self.pool_of("fastpool, callbacks").submit, c.on_future_done
        for i in range(self.n):
            submit(small_task, i).add_done_callback(done)
        return c.wait().results

    @contender("ProcessPoolExecutor", pool="ProcessPoolExecutor")
    def ppe_submit(self) -> list:
        return self._submit("ProcessPoolExecutor")

    @contender("loky", pool="loky", needs="loky")
    def loky_submit(self) -> list:
        return self._submit("loky")

    @contender("multiprocessing.Pool.apply_async", pool="multiprocessing.Pool")
    def mp_apply_async(self) -> list:
        apply_async = self.pool_of("multiprocessing.Pool.apply_async").apply_async
        results = [apply_async(small_task, (i,)) for i in range(self.n)]
        return [r.get() for r in results]

    def check(self, name: str, result: list) -> None:
        assert sorted(result) == list(range(1, self.n + 1)), f"{name}: wrong results"


class ProcCpu(Workload):
    number = "8b"
    key = "proc-cpu"
    title = "process pools, CPU-bound pure Python (about 1 ms a task): 2 processes vs 1, vs threads"
    baseline = "fastpool, 2 processes"
    targets = {
        "fastpool, 1 process": Target(1.8, ">= 1.8x (scaling)"),
        "fastpool, 2 threads": Target(1.7, ">= 1.7x"),
    }

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(400, 4)
        self.expected = cpu_task(CPU_TASK_N)

    def _run(self, name: str) -> list:
        submit = self.pool_of(name).submit
        futures = [submit(cpu_task, CPU_TASK_N) for _ in range(self.n)]
        return [f.result() for f in futures]

    @contender("fastpool, 2 processes", pool="fastpool process", workers=2)
    def two(self) -> list:
        return self._run("fastpool, 2 processes")

    @contender("fastpool, 1 process", pool="fastpool process", workers=1)
    def one(self) -> list:
        return self._run("fastpool, 1 process")

    @contender("fastpool, 2 threads", pool="fastpool", workers=2)
    def threads(self) -> list:
        return self._run("fastpool, 2 threads")

    def check(self, name: str, result: list) -> None:
        assert result == [self.expected] * self.n


class ProcMap(Map):
    number = "8c"
    key = "proc-map"
    title = "process pools, map over small items: operator.add on (a, b) pairs, results in order"
    targets = {"loky": Target(3, ">= 3x")}

    @contender("fastpool", pool="fastpool process")
    def fastpool_native(self) -> list:
        # map(kernels.add, pairs) on a process pool: native, nothing pickled.
        return list(self.pool_of("fastpool").map(kernels.add, self.pairs))

    def _executor_map(self, name: str) -> list:
        return list(self.pool_of(name).map(operator.add, self.xs, self.ys, chunksize=self.chunksize[name]))

    @contender("fastpool.ProcessPoolExecutor, operator.add", pool="fastpool.ProcessPoolExecutor")
    def fastpool_ppe_map(self) -> list:
        return self._executor_map("fastpool.ProcessPoolExecutor, operator.add")

    @contender("ProcessPoolExecutor", pool="ProcessPoolExecutor")
    def ppe_map(self) -> list:
        return self._executor_map("ProcessPoolExecutor")

    @contender("loky", pool="loky", needs="loky")
    def loky_map(self) -> list:
        return self._executor_map("loky")

    def check(self, name: str, result: list) -> None:
        check_sum(result, self.n)


class ProcArray(Workload):
    number = "8d"
    key = "proc-array"
    title = "process pools, a 16 MB numpy array in and out (a * 2), per round trip"
    needs = ("numpy",)
    targets = {"ProcessPoolExecutor": Target(5, ">= 5x")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        import numpy as np

        self.array = np.arange(max(1024, int(2 * 1024 * 1024 * self.scale)), dtype=np.float64)
        self.n = self.tasks_per_round = 4

    def _run(self, name: str) -> list:
        submit = self.pool_of(name).submit
        return [submit(double_array, self.array).result() for _ in range(self.n)]

    @contender("fastpool", pool="fastpool process")
    def fastpool_submit(self) -> list:
        return self._run("fastpool")

    @contender("ProcessPoolExecutor", pool="ProcessPoolExecutor")
    def ppe_submit(self) -> list:
        return self._run("ProcessPoolExecutor")

    @contender("loky", pool="loky", needs="loky")
    def loky_submit(self) -> list:
        return self._run("loky")

    def check(self, name: str, result: list) -> None:
        assert len(result) == self.n and all((r == self.array * 2).all() for r in result)


class ProcNative(Workload):
    number = "8e"
    key = "proc-native"
    title = "native add kernel on the callback path: worker processes vs worker threads"
    baseline = "fastpool, processes"
    targets = {"fastpool, threads": Target(1 / 1.5, "processes within 1.5x of threads")}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.n = self.tasks_per_round = self.scaled(200_000, 10)
        self.tasks = dict_tasks(self.n)

    def _run(self, name: str) -> Collector:
        c = Collector(self.n)
        run_task, callback = self.pool_of(name).run_task, c.callback
        for task in self.tasks:
            run_task(task, callback)
        return c.wait()

    @contender("fastpool, processes", pool="fastpool process")
    def procs(self) -> Collector:
        return self._run("fastpool, processes")

    @contender("fastpool, threads", pool="fastpool")
    def threads(self) -> Collector:
        return self._run("fastpool, threads")

    def check(self, name: str, result: Collector) -> None:
        result.check()


class Respawn(Workload):
    number = "8f"
    key = "respawn"
    title = "process pool: a worker SIGKILLed mid-task; the next task's wait on its replacement"
    targets: dict[str, Target] = {}

    def __init__(self, scale: float | None = None) -> None:
        super().__init__(scale)
        self.samples = self.scaled(10, 3)
        self.during: list[float] = []

    @contender("fastpool", pool="fastpool process", workers=1)
    def kill_then_run(self) -> float:
        import signal

        pool = self.pool_of("fastpool")
        pid = pool.submit(os.getpid).result()
        victim = pool.submit(time.sleep, 30)
        while pool._held_slots() == [None]:
            time.sleep(0.0005)
        start = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            victim.result()
        except fastpool.WorkerExitedError:
            pass
        pool.submit(small_task, 1).result()
        return time.perf_counter() - start

    def measure(self, name: str) -> float:
        seconds = statistics.median([self.round(name) for _ in range(self.samples)])
        self.during.append(seconds)
        return seconds

    def check(self, name: str, result: Any) -> None:
        assert result > 0

    def checks(self) -> list[Check]:
        seconds = max(self.during)
        return [Check("SIGKILL mid-task to the next task done on the replacement",
                      f"{seconds * 1e3:.0f} ms (worst round's median)", "< 500 ms", seconds < 0.5)]


WORKLOADS: list[type[Workload]] = [Callbacks, Futures, Map, RoundTrip, ShortLived, Arrays, Scaling,
                                   Mandelbrot, CfuncArrays, Import, ColdStart, ProcSmall, ProcCpu, ProcMap,
                                   ProcArray, ProcNative, Respawn]


# ---------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def machine() -> dict[str, Any]:
    """What a result needs next to it: the machine, the versions, the sizes."""
    return {
        "nproc": NPROC,
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "fastpool": fastpool.__version__,
        "fastpool_commit": _git_commit(),
        "numpy": _version("numpy"),
        "loky": _version("loky"),
        "workers_per_pool": NPROC,
    }
