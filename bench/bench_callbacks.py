"""Workload 1, the callback path: 200,000 add tasks given as dicts, each
completion calling the same Node-style callback(err, result), timed until
the last callback.  fastpool's run_task against ThreadPoolExecutor.submit +
add_done_callback, multiprocessing.pool.ThreadPool.apply_async(callback=),
a plain Python loop calling the callback (no pool), ProcessPoolExecutor and
loky."""
import pytest

from workloads import Callbacks, slug


@pytest.mark.parametrize("contender", list(Callbacks.contenders), ids=slug)
def test_callbacks(bench, contender):
    bench(Callbacks, contender)
