"""Payload blocks (fastpool._payload): a task's or a result's pickle, with its
large buffers raw after it, in the block of its slot; a one-off shared-memory
segment when it does not fit, gone once read or discarded; readable from
another process; unpicklable objects and damaged blocks give clear errors."""
from __future__ import annotations

import operator
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
from multiprocessing import shared_memory

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import WAIT, shm_entries
from fastpool._payload import ALIGN, OUT_OF_BAND_MIN, PayloadArea, PayloadError

try:
    import numpy
except ImportError:      # numpy is optional: its tests skip
    numpy = None
needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")

PREFIX = f"fpt{os.getpid():x}"
HEAD = struct.Struct("<IBBxxIxxxxQQ")    # the documented header: magic, version, kind, n_buffers,
ENTRY = struct.Struct("<QQQ")            # stream length, total; table entries: offset, length, flags
BIG = OUT_OF_BAND_MIN                    # the smallest buffer that travels out of band


def spilled(prefix=PREFIX) -> set[str]:
    """One-off segments in /dev/shm of this test run's areas (of its children's: PREFIX + "c")."""
    return {name for name in shm_entries() if name.startswith(prefix + "-")}


@pytest.fixture
def shm_area():
    """shm_area(n_slots, block_size) -> (area, SharedMemory): an area over a
    fresh shared-memory segment, closed and unlinked after the test."""
    made = []

    def make(n_slots=2, block_size=1 << 20):
        shm = shared_memory.SharedMemory(create=True, size=n_slots * block_size)
        area = PayloadArea(shm.buf, n_slots, block_size, spill_prefix=PREFIX)
        made.append((area, shm))
        return area, shm

    yield make
    for area, shm in made:
        area.close()
        shm.close()
        shm.unlink()


def area_of(n_slots=2, block_size=1 << 20):
    return PayloadArea(bytearray(n_slots * block_size), n_slots, block_size, spill_prefix=PREFIX)


def roundtrip(obj, copy=True, block_size=1 << 20):
    area = area_of(2, block_size)
    area.write(1, obj)
    return area.read(1, copy=copy)


# -- things to carry --------------------------------------------------------------

def double(x):
    return 2 * x


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


def _explode():
    raise ValueError("boom while unpickling")


class Explodes:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return _explode, ()


PLAIN = {
    "none": None,
    "int": 42,
    "bigint": 2 ** 200 + 1,
    "float": -1.5e300,
    "str": "naïve ✓" * 10,
    "nested": {"a": [1, (2, 3.0), {"b": {None, frozenset({4})}}], "c": "d"},
    "task shape": (double, (1,), {}),
    "function": double,
    "builtin": operator.add,
    "class instance": Point(1, [2]),
    "small bytes": b"abc",
    "big bytes": bytes(range(256)) * 1024,
    "big bytearray": bytearray(b"xy") * BIG,
    "big bytes in args": (double, (b"\x01" * BIG,), {"k": bytearray(BIG + 3)}),
    "deep big bytes": [[[b"\x02" * BIG]]],
    "shared big bytes": [b"\x03" * BIG] * 2,
    "empty": (),
}


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_objects_come_back_equal(name, copy):
    obj = PLAIN[name]
    back = roundtrip(obj, copy)
    assert back == obj
    assert type(back) is type(obj)


@pytest.mark.parametrize("shape", ["bytes", "bytearray", "memoryview", "memoryview in args",
                                   "memoryview in kwargs"])
def test_large_bytes_likes_are_written_raw_at_aligned_offsets(shape):
    blob = bytes(range(251)) * (BIG // 251 + 1)
    obj = {
        "bytes": blob,
        "bytearray": bytearray(blob),
        "memoryview": memoryview(blob),
        "memoryview in args": (double, (1, memoryview(blob)), {}),
        "memoryview in kwargs": (double, (), {"data": memoryview(bytearray(blob))}),
    }[shape]
    area = area_of(1, 1 << 20)
    area.write(0, obj)
    at = bytes(area._view).find(blob)
    assert at > 0 and at % ALIGN == 0
    assert roundtrip(obj) == obj


def test_a_memoryview_deep_inside_is_refused_as_pickle_refuses_it():
    obj = [[memoryview(b"abc")]]
    with pytest.raises(TypeError) as expected:
        pickle.dumps(obj, 5)
    area = area_of(1, 256)
    with pytest.raises(TypeError) as got:
        area.write(0, obj)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
def test_an_exception_comes_back_as_pickle_gives_it(copy):
    try:
        raise KeyError("missing", 3)
    except KeyError as e:
        exc = e
    back = roundtrip(exc, copy)
    assert type(back) is KeyError and back.args == ("missing", 3)
    assert back.__traceback__ is None


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
def test_memoryviews_come_back_with_their_format_shape_and_mode(big, copy):
    k = BIG // 256 if big else 1
    writable = memoryview(bytearray(range(256)) * k).cast("i", (4, 16 * k))
    readonly = memoryview(bytes(range(256)) * k)
    strided = memoryview(bytearray(range(256)) * 2 * k)[::2]
    back = roundtrip((writable, readonly, strided), copy)
    for original, m in zip((writable, readonly, strided), back):
        assert type(m) is memoryview
        assert (m.format, m.shape, m.readonly) == (original.format, original.shape, original.readonly)
        assert m.tolist() == original.tolist()


def test_a_memoryview_of_a_format_cast_cannot_take_back_is_refused_at_write():
    import ctypes

    area = area_of()
    fine = memoryview(struct.pack("<ii", 1, 2))
    assert area.write(0, fine) > 0
    weird = memoryview((ctypes.c_int32 * 2)())   # format "<i": not one cast() takes
    assert weird.format == "<i"
    with pytest.raises(TypeError, match="memoryview of format '<i'"):
        area.write(0, weird)
    assert area.read(0) == fine


ARRAYS = {
    "int8 1-d": lambda np: np.arange(-100, 100, dtype=np.int8),
    "float64 2-d": lambda np: np.arange(12.0).reshape(3, 4),
    "big float64": lambda np: np.linspace(0, 1, BIG),
    "big complex fortran": lambda np: np.asfortranarray(
        (np.arange(BIG, dtype=np.complex128) * 1j).reshape(256, -1)),
    "big bool": lambda np: np.arange(BIG * 2) % 3 == 0,
    "big uint16 3-d": lambda np: np.arange(BIG * 3, dtype=np.uint16).reshape(3, 4, -1),
    "0-d": lambda np: np.array(3.5),
    "empty": lambda np: np.zeros((0, 5)),
    "structured": lambda np: np.array([(1, 2.0)] * (BIG // 8), dtype=[("a", "i4"), ("b", "f8")]),
    "non-contiguous": lambda np: np.arange(BIG, dtype=np.float32)[::3],
    "transposed slice": lambda np: np.arange(BIG * 2.0).reshape(512, -1)[:, 1::2].T,
    "read-only big": lambda np: _readonly(np.arange(BIG, dtype=np.int32)),
    "objects": lambda np: np.array([1, "a", None], dtype=object),
    "16 MB": lambda np: np.arange(2 * 1024 * 1024, dtype=np.float64),
}


def _readonly(a):
    a.setflags(write=False)
    return a


@needs_numpy
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_numpy_arrays_come_back_equal(name, copy):
    arr = ARRAYS[name](numpy)
    back = roundtrip([arr, {"again": arr}], copy, block_size=20 << 20)
    assert back[0] is back[1]["again"]          # one object, as pickle keeps it
    back = back[0]
    assert type(back) is numpy.ndarray
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert numpy.array_equal(back, arr)
    assert back.flags.writeable == arr.flags.writeable


# -- where the bytes are --------------------------------------------------------------

def _block_array(shm, area, slot):
    return numpy.frombuffer(shm.buf, numpy.uint8, count=area.block_size, offset=slot * area.block_size)


@needs_numpy
def test_a_view_read_leaves_large_arrays_in_the_block_64_byte_aligned(shm_area):
    area, shm = shm_area(2, 1 << 20)
    arrays = [numpy.arange(BIG // 8, dtype=numpy.int64), numpy.ones(BIG + 1, numpy.uint8),
              _readonly(numpy.arange(BIG, dtype=numpy.float32))]
    area.write(1, ("head", arrays))
    _, back = area.read(1, copy=False)
    block = _block_array(shm, area, 1)
    for a, b in zip(arrays, back):
        assert numpy.array_equal(a, b)
        assert b.flags.writeable == a.flags.writeable
        assert numpy.shares_memory(b, block)
        assert b.ctypes.data % ALIGN == 0
    del back, block, b


@needs_numpy
def test_a_copy_read_does_not_depend_on_the_block(shm_area):
    area, shm = shm_area(2, 1 << 20)
    arr = numpy.arange(BIG, dtype=numpy.int64)
    area.write(0, {"a": arr, "raw": b"\x05" * BIG})
    back = area.read(0, copy=True)
    block = _block_array(shm, area, 0)
    assert not numpy.shares_memory(back["a"], block)
    shm.buf[:area.block_size] = b"\xff" * area.block_size
    area.write(0, numpy.zeros(BIG))
    assert numpy.array_equal(back["a"], arr) and back["a"].flags.writeable
    assert back["raw"] == b"\x05" * BIG
    del block


@needs_numpy
@pytest.mark.parametrize("returned", ["itself", "a later view", "in a bigger result", "read-only"])
def test_a_result_made_of_the_task_it_was_read_from_is_written_intact(returned):
    """A worker reads its task without copying and returns (part of) it: the
    result is written over the very memory it is made of."""
    n = BIG // 8                          # 64 KiB of int64: out of band, and all fits the block
    area = area_of(1, 1 << 20)
    area.write(0, numpy.arange(n, dtype=numpy.int64))
    task = area.read(0, copy=False)
    task += 1
    expected = numpy.arange(1, n + 1, dtype=numpy.int64)
    if returned == "itself":
        result, check = task, lambda r: numpy.array_equal(r, expected)
    elif returned == "a later view":
        result, check = task[100:], lambda r: numpy.array_equal(r, expected[100:])
    elif returned == "in a bigger result":
        result = {"note": "x" * 300, "second": task[::-1] * 1, "first": task}
        check = lambda r: (numpy.array_equal(r["first"], expected)
                           and numpy.array_equal(r["second"], expected[::-1]))
    else:
        task.setflags(write=False)
        result = ("y" * 300, task)
        check = lambda r: numpy.array_equal(r[1], expected)
    assert area.write(0, result) <= area.block_size
    del task, result
    assert check(area.read(0))


# -- sizes: exact fit and the one-off segment -------------------------------------------------

def _bytes_of_layout_size(size):
    """A bytes payload (pickled in band) whose layout is exactly ``size`` bytes."""
    probe = area_of(1, 4096)
    for n in range(size):
        if probe.write(0, b"x" * n) == size:
            return b"x" * n
    raise AssertionError(f"no bytes payload of layout size {size}")


def test_a_payload_of_exactly_the_block_size_fits_and_one_byte_more_spills():
    fits = _bytes_of_layout_size(256)
    area = area_of(2, 256)
    area.write(1, "neighbour")
    before = spilled()
    assert area.write(0, fits) == 256
    assert spilled() == before
    assert area.read(0) == fits
    assert area.read(1) == "neighbour"

    assert area.write(0, fits + b"x") == 257
    assert len(spilled() - before) == 1
    assert area.read(0) == fits + b"x"
    assert spilled() == before
    assert area.read(1) == "neighbour"


@needs_numpy
def test_an_out_of_band_payload_of_exactly_the_block_size_fits():
    arr = numpy.arange(BIG // 8, dtype=numpy.int64)
    size = area_of(1, 1 << 20).write(0, arr)
    assert size % ALIGN == 0 and BIG < size < 2 * BIG
    exact = area_of(2, size)
    exact.write(1, "neighbour")
    before = spilled()
    assert exact.write(0, arr) == size
    assert spilled() == before
    assert numpy.array_equal(exact.read(0, copy=False), arr)
    assert exact.read(1) == "neighbour"

    short = area_of(1, size - ALIGN)
    assert short.write(0, arr) == size
    assert len(spilled() - before) == 1
    assert numpy.array_equal(short.read(0, copy=False), arr)
    assert spilled() == before


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "view"])
def test_a_payload_bigger_than_its_block_travels_in_a_one_off_segment_gone_once_read(copy):
    area = area_of(3, 256)
    obj = {"blob": b"\x07" * (3 * BIG), "text": "t" * 1000}
    before = spilled()
    size = area.write(2, obj)
    assert size > 256
    [name] = spilled() - before
    assert name.startswith(f"{PREFIX}-2-") and len(name) <= 30
    assert area.read(2, copy=copy) == obj
    assert spilled() == before
    with pytest.raises(PayloadError, match="slot 2 holds no payload"):
        area.read(2)


@needs_numpy
def test_a_view_read_of_a_one_off_segment_keeps_it_mapped_while_the_array_lives():
    area = area_of(1, 256)
    arr = numpy.arange(4 * BIG, dtype=numpy.float64)
    before = spilled()
    area.write(0, arr)
    back = area.read(0, copy=False)
    assert spilled() == before            # the name is gone at once ...
    assert numpy.array_equal(back, arr)   # ... the memory stays while the array lives
    back[:] = 0                           # writable, as the original was
    assert back.ctypes.data % ALIGN == 0
    del back                              # the leak check sees the mapping's descriptor closed


def test_discard_removes_a_one_off_segment_never_read():
    area = area_of(2, 256)
    before = spilled()
    area.write(1, b"\x08" * (2 * BIG))
    assert len(spilled() - before) == 1
    area.discard(1)
    assert spilled() == before
    with pytest.raises(PayloadError, match="slot 1 holds no payload"):
        area.read(1)
    area.discard(1)                       # nothing left: a no-op
    assert area.write(1, "next") < 256 and area.read(1) == "next"


def test_discard_empties_a_block_whatever_it_holds():
    area = area_of(1, 256)
    area.discard(0)
    area.write(0, "small")
    area.discard(0)
    with pytest.raises(PayloadError, match="holds no payload"):
        area.read(0)
    area._view[:64] = b"\xfe" * 64        # a torn write
    area.discard(0)
    with pytest.raises(PayloadError, match="holds no payload"):
        area.read(0)


def _spilled_header(area, slot, name: bytes, total=1 << 20):
    start = slot * area.block_size
    area._view[start + HEAD.size:start + HEAD.size + len(name)] = name
    HEAD.pack_into(area._view, start, 0x6C705046, 1, 2, 0, len(name), total)


def test_discard_of_a_segment_its_writer_never_made_is_quiet():
    """A writer names the segment in the block before making it, and may die in between."""
    area = area_of(2, 256)
    _spilled_header(area, 1, f"{PREFIX}-1-ff".encode())
    area.discard(1)
    with pytest.raises(PayloadError, match="holds no payload"):
        area.read(1)


def test_discard_and_read_never_unlink_a_segment_the_block_could_not_have_named():
    other = shared_memory.SharedMemory(create=True, size=4096)
    try:
        area = area_of(2, 256)
        for slot, name in [(0, other.name), (1, f"{PREFIX}-0-1"), (1, f"{other.name}-1-zz")]:
            _spilled_header(area, slot, name.encode())
            with pytest.raises(PayloadError, match="names no valid one-off segment"):
                area.read(slot)
            _spilled_header(area, slot, name.encode())
            area.discard(slot)
        assert other.name in shm_entries()
    finally:
        other.close()
        other.unlink()


def test_a_name_collision_with_a_leftover_takes_the_next_name():
    area = area_of(1, 256)
    leftover = shared_memory.SharedMemory(name=f"{PREFIX}-0-0", create=True, size=64)
    try:
        before = spilled()
        area.write(0, b"\x09" * BIG)
        [name] = spilled() - before
        assert name == f"{PREFIX}-0-1"
        assert area.read(0) == b"\x09" * BIG
        assert leftover.name in shm_entries()
    finally:
        leftover.close()
        leftover.unlink()


# -- another process ----------------------------------------------------------------------

CHILD = """
import sys
from multiprocessing import shared_memory
from fastpool._payload import PayloadArea
from fastpool._core import _attach_untracked
shm = _attach_untracked({name!r})
area = PayloadArea(shm, 2, {block_size}, spill_prefix={prefix!r})
{body}
area.close()
shm.close()
"""


def run_child(shm, block_size, body, prefix=PREFIX + "c"):
    script = CHILD.format(name=shm.name, block_size=block_size, prefix=prefix,
                          body=textwrap.dedent(body))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=WAIT, check=False)
    assert proc.returncode == 0, proc.stderr
    # stderr closes when the child's resource tracker has exited too: no
    # tracker complained about, or unlinked, a segment it should not own.
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.parametrize("block_size", [1 << 20, 256], ids=["in the block", "one-off segments"])
def test_a_task_is_read_and_its_result_written_in_another_process(shm_area, block_size):
    area, shm = shm_area(2, block_size)
    blob = bytes(range(256)) * (BIG // 128)
    before = spilled() | spilled(PREFIX + "c")
    area.write(1, (operator.add, (blob, b"!"), {}))
    out = run_child(shm, block_size, """
        fn, args, kwargs = area.read(1, copy=False)
        result = fn(*args, **kwargs)
        del fn, args, kwargs
        area.write(1, {"result": result, "n": len(result)})
        print("done")
    """)
    assert out == "done\n"
    assert area.read(1) == {"result": blob + b"!", "n": len(blob) + 1}
    assert spilled() | spilled(PREFIX + "c") == before    # both one-off segments, if any, are gone


@needs_numpy
@pytest.mark.parametrize("block_size", [1 << 20, 256], ids=["in the block", "one-off segments"])
def test_arrays_cross_to_another_process_and_back(shm_area, block_size):
    area, shm = shm_area(2, block_size)
    arr = numpy.arange(BIG, dtype=numpy.float64).reshape(256, -1)
    area.write(0, arr)
    run_child(shm, block_size, """
        import numpy
        a = area.read(0, copy=False)
        assert a.shape == (256, 256), a.shape
        a *= 2
        area.write(0, (a, a.T.copy(), a[::2]))
        del a
    """)
    doubled, transposed, halved = area.read(0, copy=False)
    assert numpy.array_equal(doubled, arr * 2)
    assert numpy.array_equal(transposed, (arr * 2).T)
    assert numpy.array_equal(halved, (arr * 2)[::2])
    del doubled, transposed, halved


def test_a_one_off_segment_outlives_its_writer_until_read_or_discarded(shm_area):
    """No resource tracker takes a one-off segment away when its writer exits."""
    area, shm = shm_area(2, 256)
    child_spills = spilled(PREFIX + "c")
    run_child(shm, 256, """
        area.write(0, b"\\x0a" * 100000)
        area.write(1, b"\\x0b" * 100000)
    """)
    made = spilled(PREFIX + "c") - child_spills
    assert len(made) == 2
    assert area.read(0) == b"\x0a" * 100000
    area.discard(1)
    assert not made & shm_entries()


# -- errors ---------------------------------------------------------------------------------

def _local_lambda():
    return lambda: 1


UNPICKLABLE = {
    "a lambda": _local_lambda,
    "a lock": threading.Lock,
    "a lock in a task": lambda: (double, (threading.Lock(),), {}),
    "a generator": lambda: (x for x in ()),
}


@pytest.mark.parametrize("name", list(UNPICKLABLE))
def test_an_unpicklable_object_raises_pickles_own_error_and_leaves_the_block_as_it_was(name):
    make = UNPICKLABLE[name]
    with pytest.raises(Exception) as expected:
        pickle.dumps(make(), 5)
    area = area_of(1, 256)
    area.write(0, "before")
    with pytest.raises(type(expected.value)) as got:
        area.write(0, make())
    assert str(got.value) == str(expected.value)
    assert area.read(0) == "before"
    area.write(0, "after")
    assert area.read(0) == "after"


@pytest.mark.parametrize("block_size", [1 << 20, 256], ids=["in the block", "one-off segment"])
def test_an_unpickling_error_propagates_unchanged(block_size):
    area = area_of(1, block_size)
    before = spilled()
    area.write(0, [b"\x0c" * BIG, Explodes()])
    with pytest.raises(ValueError, match="^boom while unpickling$"):
        area.read(0)
    assert spilled() == before            # a one-off segment is consumed even so
    area.write(0, "next")
    assert area.read(0) == "next"


def _damage(area, **fields):
    """Write a payload with one out-of-band buffer into slot 0, then change header fields."""
    area.write(0, bytes(BIG))
    magic, version, kind, n, length, total = HEAD.unpack_from(area._view, 0)
    values = {"magic": magic, "version": version, "kind": kind, "n": n, "length": length, "total": total}
    entry = dict(zip(("offset", "size", "flags"), ENTRY.unpack_from(area._view, HEAD.size)))
    for key, value in fields.items():
        (values if key in values else entry)[key] = value
    HEAD.pack_into(area._view, 0, *values.values())
    ENTRY.pack_into(area._view, HEAD.size, *entry.values())


DAMAGE = {
    "magic": ({"magic": 0x12345678}, "not a payload header"),
    "version": ({"version": 99}, "format version 99"),
    "kind": ({"kind": 7}, "unknown payload kind 7"),
    "total past the block": ({"total": (1 << 20) + 64}, "claims"),
    "stream past the total": ({"length": 1 << 40}, "does not fit"),
    "huge table": ({"n": 2 ** 32 - 1}, "does not fit"),
    "buffer past the total": ({"size": 1 << 40}, "buffer 0 of its table is damaged"),
    "unaligned buffer": ({"offset": ALIGN + 1}, "buffer 0 of its table is damaged"),
    "buffer over the stream": ({"offset": 0}, "buffer 0 of its table is damaged"),
    "unknown buffer flags": ({"flags": 6}, "buffer 0 of its table is damaged"),
    "spilled, no name": ({"kind": 2, "length": 0}, "names no valid one-off segment"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_header_is_a_clear_error(name):
    fields, message = DAMAGE[name]
    area = area_of(1, 1 << 20)
    _damage(area, **fields)
    with pytest.raises(PayloadError, match=message):
        area.read(0)
    area.write(0, "fine")                 # and the block is usable again
    assert area.read(0) == "fine"


def test_reading_a_block_never_written_says_so():
    area = area_of(3, 256)
    with pytest.raises(PayloadError, match="slot 2 holds no payload"):
        area.read(2)


def test_a_one_off_segment_gone_before_it_was_read_is_a_clear_error():
    area = area_of(1, 256)
    area.write(0, b"\x0d" * BIG)
    [name] = spilled()
    gone = shared_memory.SharedMemory(name)
    gone.close()
    gone.unlink()
    with pytest.raises(PayloadError, match="is gone"):
        area.read(0)
    with pytest.raises(PayloadError, match="holds no payload"):
        area.read(0)


# -- arguments -----------------------------------------------------------------------------

BAD_ARGS = [
    (lambda: PayloadArea(b"\0" * 4096, 1, 128), ValueError, "view must be writable"),
    (lambda: PayloadArea(object(), 1, 128), TypeError, "buffer protocol"),
    (lambda: PayloadArea(memoryview(bytearray(8192))[::2], 1, 128), ValueError, "contiguous"),
    (lambda: PayloadArea(bytearray(4096), 0, 128), ValueError, "n_slots must be at least 1"),
    (lambda: PayloadArea(bytearray(4096), 2.0, 128), TypeError, "n_slots must be an int"),
    (lambda: PayloadArea(bytearray(4096), 1, 100), ValueError, "multiple of 64"),
    (lambda: PayloadArea(bytearray(4096), 1, 64), ValueError, "at least 128"),
    (lambda: PayloadArea(bytearray(4096), 1, "128"), TypeError, "block_size must be an int"),
    (lambda: PayloadArea(bytearray(4096), 33, 128), ValueError, "need 4224 bytes, the view has 4096"),
    (lambda: PayloadArea(bytearray(4096), 1, 128, spill_prefix="a/b"), ValueError, "spill_prefix"),
    (lambda: PayloadArea(bytearray(4096), 1, 128, spill_prefix="a-b"), ValueError, "spill_prefix"),
    (lambda: PayloadArea(bytearray(4096), 1, 128, spill_prefix="x" * 17), ValueError, "spill_prefix"),
    (lambda: PayloadArea(bytearray(4096), 1, 128, spill_prefix=""), ValueError, "spill_prefix"),
    (lambda: PayloadArea(bytearray(4096), 1, 128, spill_prefix=b"p"), TypeError, "spill_prefix"),
]


@pytest.mark.parametrize("make, error, message", BAD_ARGS)
def test_bad_arguments_are_refused_with_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("call", ["write", "read", "discard"])
@pytest.mark.parametrize("slot, error, message", [
    (2, IndexError, r"slot 2 is out of range \(0 to 1\)"),
    (-1, IndexError, "out of range"),
    ("0", TypeError, "slot must be an int, not str"),
    (True, TypeError, "slot must be an int, not bool"),
])
def test_a_bad_slot_is_refused(call, slot, error, message):
    area = area_of(2, 128)
    args = (slot, "x") if call == "write" else (slot,)
    with pytest.raises(error, match=message):
        getattr(area, call)(*args)


def test_an_area_over_a_typed_view_uses_its_bytes():
    import array

    backing = array.array("d", bytes(4096))
    area = PayloadArea(backing, 2, 2048)
    area.write(1, "typed")
    assert area.read(1) == "typed"


# -- hypothesis -------------------------------------------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(max_size=300) | st.integers(0, 3 * BIG).map(lambda n: b"\x11" * n),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=12,
)


@given(obj=values, copy=st.booleans(), slot=st.integers(0, 2))
@settings(max_examples=150, deadline=None)
def test_any_plain_value_comes_back_equal_in_a_block_or_a_one_off_segment(obj, copy, slot):
    area = area_of(3, 512)
    before = spilled()
    area.write(slot, obj)
    assert area.read(slot, copy=copy) == obj
    assert spilled() == before


if numpy is not None:
    from hypothesis.extra import numpy as hnp

    arrays = hnp.arrays(
        dtype=st.sampled_from(["i1", "u2", "i4", "i8", "f4", "f8", "c16", "?"]),
        shape=hnp.array_shapes(max_dims=3, max_side=40),
    ).map(lambda a: numpy.tile(a, 3000) if a.size and a.size < 40 else a)

    @given(arr=arrays, copy=st.booleans(), step=st.integers(1, 3))
    @settings(max_examples=80, deadline=None)
    def test_any_numpy_array_comes_back_equal(arr, copy, step):
        arr = arr[..., ::step]
        area = area_of(2, 1 << 17)
        before = spilled()
        area.write(0, arr)
        back = area.read(0, copy=copy)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert numpy.array_equal(back, arr, equal_nan=arr.dtype.kind in "fc")
        del back
        assert spilled() == before


def test_the_native_fast_path_reads_and_writes_the_same_blocks():
    # The engine writes and reads small payloads natively (_segment.pyx);
    # what it writes, PayloadArea reads, and the other way round.
    from fastpool._core import Segment, block_put_stream, block_stream

    seg = Segment.create(1, 2, 4, named=False, block_size=4096, n_blocks=2)
    view = seg.payload_view()
    area = PayloadArea(view, 2, 4096, spill_prefix=PREFIX)
    try:
        assert block_put_stream(seg, 0, pickle.dumps({"a": [1, 2]}, 5))
        assert area.read(0) == {"a": [1, 2]}
        area.write(1, ("x", 3))
        assert pickle.loads(block_stream(seg, 1)) == ("x", 3)
        assert not block_put_stream(seg, 0, bytes(5000))        # too big: PayloadArea spills it
        area.write(0, bytearray(OUT_OF_BAND_MIN))               # out of band: not for the fast path
        assert block_stream(seg, 0) is None
        area.discard(0)
        with pytest.raises(IndexError):
            block_stream(seg, 2)
    finally:
        area.close()
        view.release()
        seg.close()
