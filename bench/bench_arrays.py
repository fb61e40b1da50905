"""Workload 5, array add: 2^24 float64, a + b into a given out, fastpool's
add kernel split across its workers against numpy.add(out=); and 5b, the
same kernel on in-cache arrays with 2 workers against 1 (scaling)."""
import pytest

pytest.importorskip("numpy")

from workloads import Arrays, Scaling, slug  # noqa: E402


@pytest.mark.parametrize("contender", list(Arrays.contenders), ids=slug)
def test_arrays(bench, contender):
    bench(Arrays, contender)


@pytest.mark.parametrize("contender", list(Scaling.contenders), ids=slug)
def test_scaling(bench, contender):
    bench(Scaling, contender)
