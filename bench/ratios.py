"""The performance targets as ratios, measured here without pytest.

Each workload of workloads.py runs its contenders interleaved round by round
(A B C A B C ...), after one untimed warm-up round each; the table gives
every contender's median, per task, its ratio to fastpool and the target.
Also writes bench/results.json (every round, the machine, the versions) and,
when matplotlib is installed, the chart bench/ratios.png.

    python bench/ratios.py                        # full sizes: many minutes
    python bench/ratios.py --quick                # tiny sizes: a smoke run, not a measurement
    python bench/ratios.py --only callbacks --only map --rounds 9

Ratio = the contender's median / fastpool's median: above 1, fastpool is faster.
"""
from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import workloads

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
CHART = HERE / "ratios.png"
QUICK_SCALE = 0.01
MIN_ROUNDS = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def guarded(timeout: int, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args); a hang past `timeout` seconds dumps every thread's stack and exits."""
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        return fn(*args)
    finally:
        faulthandler.cancel_dump_traceback_later()


def run_workload(cls: type[workloads.Workload], scale: float, rounds: int) -> dict[str, Any]:
    skipped = {name: cls.missing(name) for name in cls.contenders if cls.missing(name)}
    record: dict[str, Any] = {"number": cls.number, "key": cls.key, "title": cls.title,
                              "baseline": cls.baseline, "rounds": rounds, "contenders": [], "checks": []}
    if cls.baseline in skipped:
        record["skipped"] = skipped[cls.baseline]
        log(f"{cls.number} {cls.key}: skipped, {skipped[cls.baseline]}")
        return record
    names = [name for name in cls.contenders if name not in skipped]
    timeout = workloads.hang_timeout(scale)
    times: dict[str, list[float]] = {name: [] for name in names}
    with cls(scale) as wl:
        record.update(title=wl.title, tasks_per_round=wl.tasks_per_round)
        for name in names:
            log(f"{wl.group}: preparing and warming up {name}")
            guarded(timeout, wl.prepare, name)
            guarded(timeout, wl.measure, name)
        for r in range(rounds):
            log(f"{wl.group}: round {r + 1}/{rounds}")
            for name in names:
                times[name].append(guarded(timeout, wl.measure, name))
        record["checks"] = [vars(c) for c in guarded(timeout, wl.checks)]
        record["notes"] = wl.notes()
    base = statistics.median(times[cls.baseline])
    for name in names:
        median = statistics.median(times[name])
        target = cls.targets.get(name)
        ratio = median / base
        record["contenders"].append({
            "name": name,
            "median_s": median,
            "per_task_s": median / record["tasks_per_round"],
            "rounds_s": times[name],
            "ratio": ratio,
            "target": target.text if target else None,
            "target_ratio": target.at_least if target else None,
            "met": target.met(ratio) if target else None,
        })
    for name, reason in skipped.items():
        record["contenders"].append({"name": name, "skipped": reason})
    return record


# ------------------------------------------------------------------ table

def fmt_seconds(s: float) -> str:
    for unit, size in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def yes_no(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        "## fastpool against its peers: the performance targets",
        "",
        f"Machine: {m['nproc']} x {m['cpu']}, {m['python']}, {m['platform']}; "
        f"fastpool {m['fastpool']} ({m['fastpool_commit'] or 'no git'}), numpy {m['numpy'] or '-'}, "
        f"loky {m['loky'] or '-'}; every pool has {m['workers_per_pool']} workers.",
        f"Run: {s['date']}, scale {s['scale']:g}{' (--quick: too small to measure anything)' if s['quick'] else ''}; "
        "contenders interleaved round by round, medians; "
        "ratio = contender / fastpool (above 1: fastpool is faster).",
        "",
        "| # | workload | contender | median per task | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    met = total = 0
    for w in report["workloads"]:
        if "skipped" in w:
            lines.append(f"| {w['number']} | {w['key']} | (skipped: {w['skipped']}) | | | | |")
            continue
        for c in w["contenders"]:
            if "skipped" in c:
                lines.append(f"| {w['number']} | {w['key']} | {c['name']} | skipped: {c['skipped']} | | | |")
                continue
            ratio = "1 (baseline)" if c["name"] == w["baseline"] else fmt_ratio(c["ratio"])
            lines.append(f"| {w['number']} | {w['key']} | {c['name']} | {fmt_seconds(c['per_task_s'])} | "
                         f"{ratio} | {c['target'] or ''} | {yes_no(c['met'])} |")
            if c["met"] is not None:
                total += 1
                met += c["met"]
        for c in w["checks"]:
            lines.append(f"| {w['number']} | {w['key']} | {c['label']} | {c['value']} | | {c['target']} | "
                         f"{yes_no(c['met'])} |")
            total += 1
            met += c["met"]
    lines += ["", f"Targets met: {met} of {total}.", "", "Workloads:"]
    for w in report["workloads"]:
        per_round = f"{w['tasks_per_round']:,} tasks per round, " if w.get("tasks_per_round", 1) > 1 else ""
        lines.append(f"- {w['number']} {w['key']} ({per_round}{w['rounds']} rounds): {w['title']}")
        lines += [f"  - {note}" for note in w.get("notes", [])]
    lines += ["", "Rerun: `python bench/ratios.py` (options: --quick, --rounds N, --only NAME)."]
    return "\n".join(lines)


# ------------------------------------------------------------------ chart

def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D

    bars = [(f"{w['number']} {w['key']}: {c['name']}", c) for w in report["workloads"]
            for c in w["contenders"] if "ratio" in c and c["name"] != w["baseline"]]
    if not bars:
        return False
    colours = {True: "tab:green", False: "tab:red", None: "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.38 * len(bars)))
    ys = list(range(len(bars)))[::-1]          # first workload on top
    ratios = [c["ratio"] for _, c in bars]
    # Bars grow from parity (1), so a contender faster than fastpool points left.
    ax.barh(ys, [r - 1 for r in ratios], left=1, height=0.65, color=[colours[c["met"]] for _, c in bars])
    for y, (_, c) in zip(ys, bars):
        if c["target_ratio"] is not None:
            ax.vlines(c["target_ratio"], y - 0.45, y + 0.45, colors="black", linestyles="--", linewidth=1.5)
        ax.annotate(fmt_ratio(c["ratio"]), (c["ratio"], y), xytext=(4 if c["ratio"] >= 1 else -4, 0),
                    textcoords="offset points", va="center", ha="left" if c["ratio"] >= 1 else "right", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    low = min(ratios + [c["target_ratio"] or 1 for _, c in bars])
    high = max(ratios + [c["target_ratio"] or 1 for _, c in bars])
    ax.set_xlim(min(0.5, low / 2), high * 2)
    ax.set_yticks(ys)
    ax.set_yticklabels([label for label, _ in bars], fontsize=8)
    ax.set_xlabel("contender's median / fastpool's (log scale; right of 1: fastpool is faster)")
    m, s = report["machine"], report["settings"]
    ax.set_title(f"fastpool {m['fastpool']} vs peers: {m['nproc']} x {m['cpu']}, {m['python']}, "
                 f"scale {s['scale']:g}{' (--quick: not a measurement)' if s['quick'] else ''}", fontsize=9)
    ax.legend(handles=[Patch(color=colours[True], label="target met"),
                       Patch(color=colours[False], label="target missed"),
                       Patch(color=colours[None], label="no target"),
                       Line2D([], [], color="black", linestyle="--", label="target")],
              fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    keys = [cls.key for cls in workloads.WORKLOADS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="workloads: " + ", ".join(keys))
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes (scale {QUICK_SCALE}): checks the script runs, measures nothing")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help=f"timed rounds per contender (at least {MIN_ROUNDS}; "
                             f"default {workloads.ROUNDS}, 15 for import and cold start)")
    parser.add_argument("--only", action="append", choices=keys, metavar="NAME",
                        help="run only this workload (repeatable): " + ", ".join(keys))
    parser.add_argument("--scale", type=float,
                        help="size factor (default FASTPOOL_BENCH_SCALE, or 1.0)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}, got {args.rounds}")
    if args.scale is not None and not args.scale > 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = args.scale or (QUICK_SCALE if args.quick else workloads.SCALE)
    report: dict[str, Any] = {
        "machine": workloads.machine(),
        "settings": {"scale": scale, "quick": args.quick, "rounds": args.rounds,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "workloads": [],
    }
    for cls in workloads.WORKLOADS:
        if args.only and cls.key not in args.only:
            continue
        report["workloads"].append(run_workload(cls, scale, args.rounds or cls.rounds))
    print(markdown(report))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {RESULTS}")
    if chart(report, CHART):
        log(f"wrote {CHART}")
    else:
        log("no chart: matplotlib is not installed (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
