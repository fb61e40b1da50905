"""Workload 2, the futures path: 100,000 tasks submitted, then every
.result().  fastpool's pool.run against ThreadPoolExecutor.submit, and
fastpool's drop-in ThreadPoolExecutor running the same Python function."""
import pytest

from workloads import Futures, slug


@pytest.mark.parametrize("contender", list(Futures.contenders), ids=slug)
def test_futures(bench, contender):
    bench(Futures, contender)
