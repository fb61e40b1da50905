"""The shared segment: made with a header that another process checks
(magic, layout version, size) before it trusts any offset in it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from multiprocessing import shared_memory

import pytest

from _support import WAIT
from fastpool._core import Segment


def test_a_named_segment_is_attached_by_name_from_another_process():
    seg = Segment.create(2, 16, 32, named=True)
    try:
        script = textwrap.dedent(f"""
            from fastpool._core import Segment
            seg = Segment.attach({seg.name!r})
            seg.close()
            print("attached")
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=WAIT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "attached"
        # The other process's exit did not take the segment with it.
        again = Segment.attach(seg.name)
        again.close()
    finally:
        seg.close()


def test_an_anonymous_segment_has_no_name():
    seg = Segment.create(1, 2, 4)
    assert seg.name is None
    seg.close()


@pytest.mark.parametrize("size", [4096, 8], ids=["no-header", "too-small"])
def test_attach_refuses_a_segment_that_is_not_a_pool(size):
    other = shared_memory.SharedMemory(create=True, size=size)
    try:
        with pytest.raises(ValueError, match="is not a fastpool pool"):
            Segment.attach(other.name)
    finally:
        other.close()
        other.unlink()


def test_attach_refuses_another_layout_version():
    seg = Segment.create(1, 2, 4, named=True)
    try:
        from fastpool._core import _attach_untracked

        raw = _attach_untracked(seg.name)
        raw[4] = 99          # the version word, after the magic
        with pytest.raises(ValueError, match="another version"):
            Segment.attach(seg.name)
        raw.close()
    finally:
        seg.close()


def test_attach_to_a_name_that_does_not_exist_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        Segment.attach("fastpool-no-such-segment")


def test_each_worker_records_the_slot_of_the_task_it_runs(make_pool):
    import threading

    from _support import first_task_running

    pool = make_pool(2)
    assert pool._held_slots() == [None, None]
    with first_task_running(pool):
        held = pool._held_slots()
        assert sorted(held, key=lambda s: s is None)[0] is not None
        assert held.count(None) == 1
    done = threading.Event()
    pool.run_task((1, 1), lambda err, result: done.set())
    assert done.wait(WAIT)
    pool.close()
    assert pool._held_slots() == []
