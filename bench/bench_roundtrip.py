"""Workload 4, the round trip: one task at a time, submitted and waited
for, with the pool left idle (workers parked) before each.  Every round is
one task, so the group's median is the p50.  fastpool's benchmark also
records the CPU an idle pool uses (extra_info idle_cpu_percent)."""
import pytest

from workloads import RoundTrip, slug


@pytest.mark.parametrize("contender", list(RoundTrip.contenders), ids=slug)
def test_roundtrip(bench, contender):
    bench(RoundTrip, contender)
