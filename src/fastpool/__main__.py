"""`python -m fastpool demo`: the Node.js WorkerPool's example, measured.

Many add tasks go through `run_task` with callbacks (every result checked),
with a progress bar; then the same tasks through concurrent.futures'
ThreadPoolExecutor for comparison; then one array add split across the
workers.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastpool import WorkerPool, kernels


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}"


class _Tally:
    """Counts checked results; `done` is set at the last one."""

    def __init__(self, n: int) -> None:
        self.n, self.count, self.bad = n, 0, 0
        self.done = threading.Event()

    def record(self, ok: bool) -> None:
        self.bad += not ok
        self.count += 1
        if self.count == self.n:
            self.done.set()


def run_fastpool(tasks: list[dict], threads: int, progress: bool) -> float:
    """The Node.js WorkerPool example: every task through run_task, each callback checks its result."""
    n = len(tasks)
    tally = _Tally(n)

    def make_callback(expected: int):
        def callback(err, result):      # callbacks never overlap: no lock
            tally.record(err is None and result == expected)
        return callback

    callbacks = [make_callback(t["a"] + t["b"]) for t in tasks]
    stop_progress = threading.Event()
    if progress:
        def show():
            while not stop_progress.wait(0.05):
                print("\r  fastpool  " + _bar(tally.count, n), end="", file=sys.stderr, flush=True)
        shower = threading.Thread(target=show, daemon=True)
        shower.start()
    with WorkerPool(threads) as pool:
        start = time.perf_counter()
        run_task = pool.run_task
        for task, callback in zip(tasks, callbacks):
            run_task(task, callback)
        tally.done.wait()
        elapsed = time.perf_counter() - start
    stop_progress.set()
    if progress:
        shower.join()
        print("\r  fastpool  " + _bar(n, n), file=sys.stderr)
    if tally.bad:
        raise SystemExit(f"fastpool demo: {tally.bad} of {n} results were wrong")
    return elapsed


def run_stdlib(tasks: list[dict], threads: int) -> float:
    """The same tasks through ThreadPoolExecutor.submit + add_done_callback."""
    tally = _Tally(len(tasks))
    lock = threading.Lock()

    def add(task):
        return task["a"] + task["b"]

    def make_callback(expected: int):
        def callback(fut):              # run by any worker thread: locked
            with lock:
                tally.record(fut.exception() is None and fut.result() == expected)
        return callback

    callbacks = [make_callback(t["a"] + t["b"]) for t in tasks]
    with ThreadPoolExecutor(threads) as ex:
        start = time.perf_counter()
        for task, callback in zip(tasks, callbacks):
            ex.submit(add, task).add_done_callback(callback)
        tally.done.wait()
        elapsed = time.perf_counter() - start
    if tally.bad:
        raise SystemExit(f"fastpool demo: ThreadPoolExecutor got {tally.bad} wrong results")
    return elapsed


def run_array(threads: int, size: int) -> tuple[float, str]:
    """One array add through the pool, checked element by element."""
    try:
        import numpy as np
    except ImportError:
        import array
        a = array.array("d", range(size))
        b = array.array("d", (2.0 * i for i in range(size)))
        out = array.array("d", bytes(8 * size))
        kind = "array.array"
    else:
        a = np.arange(size, dtype=np.float64)
        b = 2.0 * a
        out = np.empty_like(a)
        kind = "numpy"
    with WorkerPool(threads) as pool:
        start = time.perf_counter()
        result = pool.run({"a": a, "b": b, "out": out}).result()
        elapsed = time.perf_counter() - start
    if result is not out or any(out[i] != 3.0 * i for i in (0, 1, size // 2, size - 1)):
        raise SystemExit("fastpool demo: the array add gave a wrong result")
    if kind == "numpy" and not (out == 3.0 * a).all():
        raise SystemExit("fastpool demo: the array add gave a wrong result")
    return elapsed, kind


def demo(args: argparse.Namespace) -> int:
    threads = args.threads
    n = args.tasks
    print(f"fastpool demo: {n:,} add tasks, {threads} worker threads")
    tasks = [{"a": i, "b": 2 * i} for i in range(n)]
    # The standard library is slow enough that a sample tells its rate.
    sample = tasks[: min(n, 50_000)]
    fp = run_fastpool(tasks, threads, progress=not args.no_progress)
    std = run_stdlib(sample, threads)
    fp_rate = n / fp
    std_rate = len(sample) / std
    print()
    print(f"  {'pool':<38} {'tasks/s':>12} {'µs/task':>9}")
    print(f"  {'fastpool.WorkerPool.run_task':<38} {fp_rate:>12,.0f} {1e6 / fp_rate:>9.2f}")
    print(f"  {'ThreadPoolExecutor.submit + callback':<38} {std_rate:>12,.0f} {1e6 / std_rate:>9.2f}")
    print(f"  fastpool is {fp_rate / std_rate:.1f}x the standard library's throughput"
          f" (all {n:,} results checked)")
    size = args.array_size
    elapsed, kind = run_array(threads, size)
    gbs = 3 * 8 * size / elapsed / 1e9
    print(f"\n  array add: {size:,} float64 ({kind}) in {elapsed * 1e3:.1f} ms, {gbs:.1f} GB/s, result checked")
    # What the kernel computes, called directly:
    assert kernels.add({"a": 1, "b": 2}) == 3
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastpool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="run the add-kernel demo and print the throughput",
                       description="Run the Node.js WorkerPool's add tasks with callbacks, compare with "
                                   "ThreadPoolExecutor, then an array add.")
    d.add_argument("--tasks", type=_positive, default=200_000, help="number of add tasks (default 200000)")
    d.add_argument("--threads", type=_positive, default=2, help="worker threads (default 2)")
    d.add_argument("--array-size", type=_positive, default=1 << 22, help="elements in the array add (default 2**22)")
    d.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    args = parser.parse_args(argv)
    if args.command != "demo":
        parser.print_help(sys.stderr)
        return 2
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
