"""`python -m fastpool demo | stats NAME | top NAME`.

demo: the Node.js WorkerPool's example, measured.  Many add tasks go through
`run_task` with callbacks (every result checked), with a progress bar; then
the same tasks through concurrent.futures' ThreadPoolExecutor for
comparison; then one array add split across the workers.

stats, top: a running pool's counters, read from its shared segment by
another process (the segment's name is `pool.shm_name`): printed once, or
redrawn every interval until `q` or Ctrl-C, or the pool stops.
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


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.01 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.01 and 3600, got {text}")
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


# -- stats and top ----------------------------------------------------------------

class _Refused(Exception):
    """The name does not lead to a fastpool pool: say why, exit with 2."""


def _attach(name: str):
    """The pool's segment, mapped read-only (and never registered with the
    resource tracker, which would unlink it when this process exits)."""
    from fastpool._core import Segment

    try:
        return Segment.attach(name, readonly=True)
    except FileNotFoundError:
        raise _Refused(f"no pool named {name!r}: there is no shared-memory segment by that name "
                       f"(a pool's name is its shm_name; a thread pool has one only when made "
                       f"with shm_name=...)") from None
    except ValueError as e:
        raise _Refused(str(e)) from None
    except OSError as e:
        raise _Refused(f"cannot open {name!r}: {e.strerror or e}") from None


def _read(seg, name: str) -> dict:
    from fastpool._core import segment_stats

    stats = segment_stats(seg)
    stats["name"] = name
    return stats


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _render(stats: dict, rates: dict | None = None) -> list[str]:
    """The lines that `stats` prints and `top` redraws."""
    bound = "" if stats["max_queue"] is None else f" of {stats['max_queue']}"
    now = "" if rates is None else (f", {100 * rates['utilization']:.1f} % now, "
                                    f"{rates['completed']:.0f} tasks/s")
    lines = [
        (f"fastpool pool {stats['name']}: {stats['size']} {stats['kind']} workers, "
         f"owner pid {stats['owner_pid']}, {stats['state']}, up {_duration(stats['uptime'])}"),
        (f"  tasks    submitted {stats['submitted']}  completed {stats['completed']}  "
         f"failed {stats['failed']}  cancelled {stats['cancelled']}  timed out {stats['timed_out']}  "
         f"refused {stats['refused']}"),
        (f"  now      queued {stats['queued']}{bound}  running {stats['running']}  "
         f"workers {stats['workers']}  respawns {stats['respawns']}"),
        f"  busy     utilization {100 * stats['utilization']:.1f} % since start{now}",
    ]
    for key, title in (("wait", "wait    "), ("run", "run     ")):
        h = stats[key]
        lines.append(f"  {title} p50 {_duration(h['p50'])}  p99 {_duration(h['p99'])}  "
                     f"max {_duration(h['max'])}")
    lines.append(f"  ({stats['timed']} tasks timed; wait: accepted to started, run: started to done)")
    return lines


def stats_command(args: argparse.Namespace) -> int:
    seg = _attach(args.name)
    try:
        stats = _read(seg, args.name)
    finally:
        seg.close()
    if args.json:
        import json

        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        print("\n".join(_render(stats)))
    return 0


def _owner_gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def top_command(args: argparse.Namespace) -> int:
    """Redraw the pool's stats every interval: in place on a terminal (ANSI
    escapes), one block after another otherwise.  `q` (on a terminal) or
    Ctrl-C quits; so does the pool stopping."""
    import os
    import select

    seg = _attach(args.name)
    out = sys.stdout
    tty = out.isatty()
    keys = None
    saved = None
    try:
        if sys.stdin.isatty():
            import termios
            import tty as _tty

            keys = sys.stdin.fileno()
            saved = termios.tcgetattr(keys)
            _tty.setcbreak(keys)        # keys arrive one by one, unechoed
        if tty:
            out.write("\x1b[?25l\x1b[2J")        # hide the cursor, clear the screen
        before = None
        shown = 0
        while True:
            stats = _read(seg, args.name)
            rates = None
            if before is not None:
                dt = stats["uptime"] - before["uptime"]
                if dt > 0:
                    rates = {"completed": (stats["completed"] + stats["failed"]
                                           - before["completed"] - before["failed"]) / dt,
                             "utilization": min(1.0, (stats["busy"] - before["busy"])
                                                / (stats["size"] * dt))}
            lines = _render(stats, rates)
            ended = stats["state"] == "closed" or _owner_gone(stats["owner_pid"])
            lines.append("  (the pool has stopped)" if ended else
                         f"  refresh every {args.interval:g} s" + (", q to quit" if keys is not None else ""))
            if tty:
                out.write("\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            shown += 1
            if ended or (args.count and shown >= args.count):
                return 0
            before = stats
            if keys is None:
                import time

                time.sleep(args.interval)
                continue
            ready, _, _ = select.select([keys], [], [], args.interval)
            if ready and os.read(keys, 64).lower().startswith(b"q"):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if tty:
            out.write("\x1b[?25h")
            out.flush()
        if saved is not None:
            import termios

            termios.tcsetattr(keys, termios.TCSADRAIN, saved)
        seg.close()


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
    st = sub.add_parser("stats", help="print a running pool's stats once",
                        description="Print the counters of a running pool, read from its shared "
                                    "segment (NAME is the pool's shm_name).")
    st.add_argument("name", metavar="NAME", help="the pool's shared-memory segment name (pool.shm_name)")
    st.add_argument("--json", action="store_true", help="print them as JSON")
    tp = sub.add_parser("top", help="show a running pool's stats, redrawn live",
                        description="Show the counters of a running pool, redrawn every interval "
                                    "until q, Ctrl-C, or the pool stops.")
    tp.add_argument("name", metavar="NAME", help="the pool's shared-memory segment name (pool.shm_name)")
    tp.add_argument("--interval", type=_interval, default=1.0, help="seconds between refreshes (default 1)")
    tp.add_argument("--count", type=_positive, default=None, help="stop after this many refreshes")
    args = parser.parse_args(argv)
    commands = {"demo": demo, "stats": stats_command, "top": top_command}
    if args.command not in commands:
        parser.print_help(sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except _Refused as e:
        print(f"python -m fastpool {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
