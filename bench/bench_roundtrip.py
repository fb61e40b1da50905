"""Workload 4, the round trip: one task at a time, submitted and waited
for, with the pool left idle (workers parked) before each.  Every round is
one task, so the group's median is the p50.  fastpool's benchmark also
records the CPU an idle pool uses (extra_info idle_cpu_percent).  Workload
4b, the short-lived pool: one whole pool life (make, one task, close) per
round."""
import pytest

from workloads import RoundTrip, ShortLived, slug


@pytest.mark.parametrize("contender", list(RoundTrip.contenders), ids=slug)
def test_roundtrip(bench, contender):
    bench(RoundTrip, contender)


@pytest.mark.parametrize("contender", list(ShortLived.contenders), ids=slug)
def test_shortlived(bench, contender):
    bench(ShortLived, contender)
