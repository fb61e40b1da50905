"""Workload 3, the batch path: 1,000,000 (a, b) tasks mapped, results in
order.  pool.map(kernels.add, tasks) against ThreadPool.starmap(operator.add)
and the process pools' map(operator.add), each peer with the chunksize that
was fastest for it on this input (recorded in extra_info)."""
import pytest

from workloads import Map, slug


@pytest.mark.parametrize("contender", list(Map.contenders), ids=slug)
def test_map(bench, contender):
    bench(Map, contender)
