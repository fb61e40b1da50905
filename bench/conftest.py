"""pytest glue for the benchmark suite: each bench_*.py file names a
workload class from workloads.py and its contenders; the `bench` fixture
runs one contender in pedantic mode, in the workload's pytest-benchmark
group, and checks its result, so a broken pool fails instead of timing
nothing.  Workloads (and so their pools) are made once per module and
closed at the module's end."""
from __future__ import annotations

import functools

import pytest

import workloads


def pytest_report_header(config):
    m = workloads.machine()
    return (f"fastpool bench: scale {workloads.SCALE:g} (FASTPOOL_BENCH_SCALE), {m['nproc']} x {m['cpu']}, "
            f"fastpool {m['fastpool']}, numpy {m['numpy']}, loky {m['loky']}")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastpool_bench"] = dict(workloads.machine(), scale=workloads.SCALE)


def pytest_collection_modifyitems(config, items):
    # A hang fails with stacks (workloads.hang_timeout); --timeout overrides.
    if config.pluginmanager.hasplugin("timeout") and config.getoption("timeout", None) is None:
        for item in items:
            item.add_marker(pytest.mark.timeout(workloads.hang_timeout()))


@pytest.fixture(scope="module")
def _open_workloads():
    opened: dict[type, workloads.Workload] = {}
    yield opened
    for workload in opened.values():
        workload.close()


@pytest.fixture
def bench(benchmark, _open_workloads):
    """bench(WorkloadClass, contender): benchmark one round of the contender
    (skipped when a module it needs is not installed); returns its result."""

    def run(cls: type[workloads.Workload], name: str):
        reason = cls.missing(name)
        if reason:
            pytest.skip(reason)
        if cls not in _open_workloads:
            _open_workloads[cls] = cls()
        workload = _open_workloads[cls]
        workload.prepare(name)
        benchmark.group = workload.group
        benchmark.extra_info.update(contender=name, tasks_per_round=workload.tasks_per_round,
                                    scale=workload.scale, title=workload.title)
        result = benchmark.pedantic(workload.round, args=(name,),
                                    setup=functools.partial(workload.before_round, name),
                                    **workload.pedantic())
        workload.check(name, result)
        benchmark.extra_info.update(workload.extra_info(name, result))
        return result

    return run

