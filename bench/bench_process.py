"""Workloads 8 to 8f, worker processes: small Python tasks against
ProcessPoolExecutor, loky and multiprocessing.Pool; CPU-bound scaling from
one process to two and against threads; map over a million small items; a
16 MB array in and out; the native add kernel in processes against threads;
and how long a SIGKILLed worker's replacement takes to run the next task."""
import pytest

from workloads import ProcArray, ProcCpu, ProcMap, ProcNative, ProcSmall, Respawn, slug

WORKLOADS = [ProcSmall, ProcCpu, ProcMap, ProcArray, ProcNative, Respawn]


@pytest.mark.parametrize("workload, contender",
                         [(w, c) for w in WORKLOADS for c in w.contenders],
                         ids=[f"{w.key}-{slug(c)}" for w in WORKLOADS for c in w.contenders])
def test_process_pools(bench, workload, contender):
    bench(workload, contender)
