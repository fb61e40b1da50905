"""Workloads 6 and 7, start-up, each in a fresh interpreter: `import
fastpool` against `import concurrent.futures` (the timed part is the whole
`python -X importtime` process; extra_info importtime_us is what the import
itself took, and fastpool's must load no numpy, asyncio or
multiprocessing.shared_memory), and a cold-start script (import, make a
pool, run one task, close) against ThreadPoolExecutor plus one shared-memory
segment of the same size."""
import pytest

from workloads import ColdStart, Import, slug


@pytest.mark.parametrize("contender", list(Import.contenders), ids=slug)
def test_import(bench, contender):
    bench(Import, contender)


@pytest.mark.parametrize("contender", list(ColdStart.contenders), ids=slug)
def test_coldstart(bench, contender):
    bench(ColdStart, contender)
