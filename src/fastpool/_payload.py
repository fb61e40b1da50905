"""Payload blocks: the pickled tasks and results of process workers, in shared memory.

A payload area is a writable buffer cut into ``n_slots`` blocks of
``block_size`` bytes; block ``slot`` belongs to task slot ``slot``.  The
parent writes a task's payload into its block, the worker reads it and writes
the result's payload over it, the parent reads that.  Nothing is allocated
and nothing is freed: the slot owns its block, and the rings that hand a slot
over make sure one side at a time touches it.

A block (offsets from its start; buffers are 64-byte aligned from there, so
in memory too when the area starts on a 64-byte boundary, as a mapping does)::

      0  header     magic, version, kind, n_buffers, stream length, total length
     32  table      n_buffers x (offset, length, flags)
         stream     pickle protocol 5, whose out-of-band buffers are ...
    64i  buffer 0   ... written raw after it, one copy each
    64j  buffer 1   (i < j < ...: in order, apart, after the stream)
         ...        up to `total length` bytes

A payload of plain values only (ints, floats, short strs and bytes, None,
bools; for a call, a tuple of them and a dict of them by name), which the
native fast path writes and reads, may be a marshal stream instead: about
half the cost of a pickle each way.  The first byte tells them apart: a
pickle (protocol 2 and up) starts with PROTO (0x80), a marshal stream never
does.  ``loads_stream`` reads either.

A payload that does not fit its block goes to a one-off shared-memory segment
with the same layout; the block then holds only a header of kind SPILLED
followed by that segment's name.  Whoever reads it unlinks it; whoever gives
up on it calls ``discard``.  One-off segments are kept out of the resource
tracker (``track=False`` on 3.13+, unregistered at once before), so no
tracker ever unlinks one in the wrong process; the reader attaches and
unlinks in one step, which the tracker sees as balanced.

A process pool's owner keeps some spill segments for reuse instead (see
_spill.py): its area is made with ``spill_cache=True``.  A payload it puts
in one leaves a block of kind CACHED (the segment's name); the area that
reads such a task (a worker's) maps the segment once and keeps it, and its
next ``put`` in that block is the task's result: into the same segment
(CACHED) when no view of the task is left and the result fits, else in the
block or a one-off segment, with kind RETURNED for an inline one (the native
fast path leaves those alone, so that the owner's ``read`` sees every
result of a task it put in a segment, and gives the segment back).  Inside
a kept segment the first out-of-band buffer starts on a page, so that a
task's array and a result made of it in place sit at the same offset and
need no copy.

Out of band (raw after the stream, one copy on each side): buffers of at
least OUT_OF_BAND_MIN bytes that pickle hands over as ``PickleBuffer`` (numpy
arrays and the like, wherever they are), a ``bytes`` or ``bytearray`` payload
of that size, and ``memoryview`` objects (which pickle itself refuses) when
they are the payload or sit in a tuple or dict at most two levels down
(``(fn, args, kwargs)`` and its ``args`` and ``kwargs``).  Smaller buffers
pickle in band, and so do bytes and bytearrays inside other objects: pickle's
C code gives no hook for them short of a Python call per pickled object, and
looking for them beforehand would cost every small payload more than the one
copy it saves a large one.
"""
from __future__ import annotations

import itertools
import marshal
import os
import pickle
import struct
import sys

__all__ = ["ALIGN", "OUT_OF_BAND_MIN", "PayloadArea", "PayloadError", "loads_stream", "plain"]

ALIGN = 64                    # every out-of-band buffer starts on this boundary
OUT_OF_BAND_MIN = 1 << 16     # smaller buffers pickle in band: copying beats a table entry

_MAGIC = 0x6C705046           # b"FPpl"
_VERSION = 1
_EMPTY, _INLINE, _SPILLED, _CACHED, _RETURNED = 0, 1, 2, 3, 4   # RETURNED: inline (see above)
_PAGE = 4096
_HEAD = struct.Struct("<IBBxxIxxxxQQ")   # magic, version, kind, n_buffers, stream (or name) length, total
_ENTRY = struct.Struct("<QQQ")           # offset, length, flags
_READONLY = 1                            # flags: the buffer was read-only; it comes back read-only
_EMPTY_HEADER = bytes(_HEAD.size)
_MIN_BLOCK = 2 * ALIGN                   # room for a SPILLED header and the longest name
_MAX_PREFIX = 16                         # names stay short (macOS allows 31 characters)
_SCAN_ITEMS = 32                         # bigger containers are not looked into
_BYTES_LIKE = frozenset({bytes, bytearray, memoryview})
_CASTABLE = frozenset("cbB?hHiIlLqQnNefdP")  # formats memoryview.cast() takes back
_TRACK_PARAM = sys.version_info >= (3, 13)
_dumps, _loads, _PickleBuffer = pickle.dumps, pickle.loads, pickle.PickleBuffer
_mloads = marshal.loads
_PROTO = 0x80                 # pickle's first opcode; never the first byte of a marshal stream
_PLAIN_MAX = 4096             # strs and bytes longer than this are not looked at for marshal
_PLAIN = frozenset({int, float, str, bytes, type(None), bool})
_pack_head, _unpack_head = _HEAD.pack_into, _HEAD.unpack_from


class PayloadError(ValueError):
    """A block that holds no payload, or whose header is not one this module wrote."""


class PayloadArea:
    """``n_slots`` blocks of ``block_size`` bytes over ``view`` (see the module docstring).

    ``spill_prefix`` starts the names of one-off segments (at most 16
    characters; a random one by default).  One area object serves any number
    of threads as long as each slot is used by one of them at a time.
    """

    def __init__(self, view, n_slots: int, block_size: int, *, spill_prefix: str | None = None,
                 spill_cache: bool = False):
        try:
            view = memoryview(view)
        except TypeError:
            raise TypeError(f"view must support the buffer protocol, not {type(view).__name__}") from None
        if view.readonly:
            raise ValueError("view must be writable")
        if not view.c_contiguous:
            raise ValueError("view must be contiguous")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        for what, value in (("n_slots", n_slots), ("block_size", block_size)):
            if type(value) is not int:
                raise TypeError(f"{what} must be an int, not {type(value).__name__}")
        if n_slots < 1:
            raise ValueError(f"n_slots must be at least 1, got {n_slots}")
        if block_size < _MIN_BLOCK or block_size % ALIGN:
            raise ValueError(f"block_size must be a multiple of {ALIGN} and at least {_MIN_BLOCK}, "
                             f"got {block_size}")
        if n_slots * block_size > view.nbytes:
            raise ValueError(f"{n_slots} blocks of {block_size} bytes need {n_slots * block_size} bytes, "
                             f"the view has {view.nbytes}")
        if spill_prefix is None:
            spill_prefix = "fpp" + os.urandom(5).hex()
        elif type(spill_prefix) is not str:
            raise TypeError(f"spill_prefix must be a str, not {type(spill_prefix).__name__}")
        elif not (0 < len(spill_prefix) <= _MAX_PREFIX and spill_prefix.isascii()
                  and spill_prefix.replace("_", "a").isalnum()):
            raise ValueError(f"spill_prefix must be 1 to {_MAX_PREFIX} ASCII letters, digits or '_', "
                             f"got {spill_prefix!r}")
        self.n_slots = n_slots
        self.block_size = block_size
        self.spill_prefix = spill_prefix
        self._view = view
        self._counter = itertools.count()
        self._lent = bytearray(n_slots)   # 1: a read(copy=False) lent out views into this block
        self._address = None              # of the view, found when first needed
        # A pool's owner: the kept segment each block's task went in, if any.
        self._cache = None
        self._held = None
        if spill_cache:
            from fastpool._spill import SpillCache

            self._cache = SpillCache(spill_prefix)
            self._held = [None] * n_slots
        # A worker: kept mappings, and what a block's task was read from
        # (its segment's name, mapping and Lease) until its result is put.
        self._maps = None
        self._reading = [None] * n_slots

    # -- writing -------------------------------------------------------------

    def write(self, slot: int, obj) -> int:
        """Pickle ``obj`` into block ``slot``; return the payload's size in bytes.

        A size above ``block_size`` means the payload went to a one-off
        segment.  If pickling fails its exception propagates and the block is
        left as it was.  ``obj`` may be made of views that ``read(slot,
        copy=False)`` lent out (a worker returning its task's array): those
        are copied aside before the block is overwritten.
        """
        if type(slot) is not int or not 0 <= slot < self.n_slots:
            raise self._bad_slot(slot)
        return self.put(slot, self.prepare(obj))

    @staticmethod
    def prepare(obj):
        """Pickle ``obj`` for a later ``put``: the stream, and the large
        buffers still in place (``frozen`` copies them)."""
        buffers = _Buffers()
        try:
            stream = _dumps(_OutOfBand(obj) if type(obj) in _BYTES_LIKE else obj, 5,
                            buffer_callback=buffers)
        except TypeError:
            lifted = _lift(obj)     # memoryviews near the top pickle through _OutOfBand
            if lifted is obj:
                raise
            buffers = _Buffers()
            stream = _dumps(lifted, 5, buffer_callback=buffers)
        return stream, buffers

    @staticmethod
    def frozen(prepared):
        """``prepared`` with its out-of-band buffers copied: what the caller
        changes afterwards no longer changes the payload."""
        stream, buffers = prepared
        if not buffers:
            return prepared
        copies = _Buffers()
        for m in buffers:
            copies.append(memoryview(bytes(m)) if m.readonly else memoryview(bytearray(m)))
        return stream, copies

    def put(self, slot: int, prepared) -> int:
        """Write what ``prepare`` made into block ``slot`` (as ``write``)."""
        start = slot * self.block_size
        stream, buffers = prepared
        view = self._view
        if self._held is not None and self._held[slot] is not None:
            self._give_back(slot)       # its result was read without us (should not happen)
        reading = self._reading[slot]
        if reading is not None:
            self._reading[slot] = None
            try:
                return self._put_result(slot, start, stream, buffers, reading)
            except BaseException:
                self._reading[slot] = (None, None, None)    # what is put instead says RETURNED
                raise
        if not buffers:
            total = _HEAD.size + len(stream)
            if total <= self.block_size:
                view[start + _HEAD.size:start + total] = stream
                _pack_head(view, start, _MAGIC, _VERSION, _INLINE, 0, len(stream), total)
                self._lent[slot] = 0
                return total
            offsets = ()
        else:
            if self._lent[slot]:
                buffers = self._unalias(start, buffers)
            end = _HEAD.size + _ENTRY.size * len(buffers) + len(stream)
            offsets = []
            for m in buffers:
                end = -(-end // ALIGN) * ALIGN
                offsets.append(end)
                end += m.nbytes
            total = end
            if total <= self.block_size:
                _put(view, start, stream, buffers, offsets, total)
                self._lent[slot] = 0
                return total
        self._lent[slot] = 0
        if self._cache is not None:
            kept = self._put_cached(slot, start, stream, buffers)
            if kept:
                return kept
        self._spill(slot, start, stream, buffers, offsets, total)
        return total

    def _put_cached(self, slot, start, stream, buffers):
        # The owner: into a kept segment, if the cache has room (else 0).
        from fastpool._spill import HEAD

        offsets, total = _layout(stream, buffers, HEAD)
        seg = self._cache.take(total)
        if seg is None:
            return 0
        try:
            _put(seg.view, HEAD, stream, buffers, offsets, total)
        except BaseException:
            self._cache.give(seg)
            raise
        self._held[slot] = seg
        self._name_header(start, _CACHED, seg.name, total)
        return total

    def _name_header(self, start, kind, name, total):
        raw = name.encode("ascii")
        view = self._view
        view[start + _HEAD.size:start + _HEAD.size + len(raw)] = raw
        _pack_head(view, start, _MAGIC, _VERSION, kind, 0, len(raw), total)

    def _put_result(self, slot, start, stream, buffers, reading):
        """A worker: the result of a task read from a kept segment.

        Into that segment when no view of the task is left and it fits;
        else in the block (kind RETURNED) or a one-off segment.  Views of
        the task that outlive it (kept by the task's code) pin the segment:
        the owner will never reuse it.
        """
        from fastpool._core import buffer_address
        from fastpool._spill import HEAD

        name, mapping, lease = reading
        free = False
        moved = ()
        if lease is not None:
            # Buffers of the result that lie in the segment (a task's array
            # returned, or changed in place and returned) are noted by
            # offset and let go of, so that only views kept elsewhere count.
            base, size = lease.address, len(mapping)
            moved = []
            for i, m in enumerate(buffers):
                address = buffer_address(m)
                if base <= address < base + size:
                    moved.append((i, address - base - HEAD, m.nbytes, m.readonly))
                    buffers[i] = None
                    try:
                        m.release()
                    except BufferError:
                        pass        # viewed elsewhere too: the lease stays held
            m = None
            free = lease.close()
            if not free:
                self._maps.pin(name, mapping)
            if moved:
                # The bytes are still there, and the mapping still ours.
                whole = memoryview(mapping)
                for i, offset, nbytes, readonly in moved:
                    part = whole[HEAD + offset:HEAD + offset + nbytes]
                    buffers[i] = part.toreadonly() if readonly else part
        self._lent[slot] = 0
        offsets, total = _layout(stream, buffers)
        if free and total > self.block_size:
            offsets, total = _layout(stream, buffers, HEAD)
            if HEAD + total <= len(mapping) and self._maps.reserve(name, mapping, HEAD + total):
                # A moved buffer already where it goes is not copied; the
                # others are copied aside first (they may lie where
                # something else goes).
                in_place = set()
                for i, offset, nbytes, readonly in moved:
                    if offset == offsets[i]:
                        in_place.add(i)
                    else:
                        b = buffers[i]
                        buffers[i] = memoryview(bytes(b) if readonly else bytearray(b))
                        b.release()
                _put(memoryview(mapping), HEAD, stream, buffers, offsets, total, _INLINE, in_place)
                self._name_header(start, _CACHED, name, total)
                return total
            offsets, total = _layout(stream, buffers)
        if total <= self.block_size:
            _put(self._view, start, stream, buffers, offsets, total, _RETURNED)
            return total
        self._spill(slot, start, stream, buffers, offsets, total)
        return total

    def _spill(self, slot, start, stream, buffers, offsets, total):
        # The block names the segment before the segment exists, so that a
        # writer dying at any point leaves nothing that discard() cannot find.
        view = self._view
        for _ in range(64):
            name = f"{self.spill_prefix}-{slot:x}-{next(self._counter):x}"
            raw = name.encode("ascii")
            view[start + _HEAD.size:start + _HEAD.size + len(raw)] = raw
            _HEAD.pack_into(view, start, _MAGIC, _VERSION, _SPILLED, 0, len(raw), total)
            try:
                shm = _create_untracked(name, total)
                break
            except FileExistsError:
                continue            # a leftover of an earlier process: take the next name
            except BaseException:
                view[start:start + _HEAD.size] = _EMPTY_HEADER
                raise
        else:
            view[start:start + _HEAD.size] = _EMPTY_HEADER
            raise FileExistsError(f"no free one-off segment name for slot {slot} with prefix "
                                  f"{self.spill_prefix!r}")
        try:
            _put(shm.buf, 0, stream, buffers, offsets, total)
        except BaseException:
            view[start:start + _HEAD.size] = _EMPTY_HEADER
            shm.close()
            _unlink(name)
            raise
        shm.close()

    def _unalias(self, start, buffers):
        """The buffers, with copies for those that lie in block ``start``.

        A worker that read its task with copy=False may return (a view of)
        the task's array: that memory is about to be overwritten by the very
        write that copies it.  A read-only buffer cannot be located cheaply,
        so it is copied whenever the block was lent.
        """
        import ctypes

        if self._address is None:
            self._address = ctypes.addressof(ctypes.c_char.from_buffer(self._view))
        lo = self._address + start
        hi = lo + self.block_size
        out = _Buffers()
        for m in buffers:
            if m.readonly:
                m = memoryview(bytes(m))
            else:
                address = ctypes.addressof(ctypes.c_char.from_buffer(m))
                if address < hi and address + m.nbytes > lo:
                    m = memoryview(bytearray(m))
            out.append(m)
        return out

    # -- reading -------------------------------------------------------------

    def read(self, slot: int, copy: bool = True):
        """Unpickle the payload of block ``slot``.

        ``copy=True``: out-of-band buffers are copied, so the object may
        outlive the block.  ``copy=False``: they are views into the block
        (zero copy); the caller must be done with the object before the block
        is written again.  A payload in a one-off segment is unlinked as it
        is read (with copy=False its memory stays mapped while the object
        lives).  Unpickling errors propagate unchanged; a block that holds no
        payload or a damaged header raises PayloadError.
        """
        if type(slot) is not int or not 0 <= slot < self.n_slots:
            raise self._bad_slot(slot)
        start = slot * self.block_size
        if self._held is None or self._held[slot] is None:
            return self._read(slot, start, copy, None)
        held = self._held[slot]
        self._held[slot] = None
        try:
            return self._read(slot, start, copy, held)
        finally:
            self._cache.release(held)     # unless the result was lent views of it

    def _read(self, slot, start, copy, held):
        view = self._view
        magic, version, kind, n, length, total = _unpack_head(view, start)
        if magic != _MAGIC or version != _VERSION:
            raise self._bad_header(slot, magic, version, kind)
        if kind == _INLINE or kind == _RETURNED:
            if total > self.block_size:
                raise PayloadError(f"slot {slot}: its header claims {total} bytes, "
                                   f"the block has {self.block_size}")
            if not n and _HEAD.size + length <= total:      # the common case: no buffers
                return loads_stream(view[start + _HEAD.size:start + _HEAD.size + length])
            obj = _load(view, start, n, length, total, copy, slot)
            if n and not copy:
                self._lent[slot] = 1
            return obj
        if kind == _SPILLED:
            return self._read_spilled(slot, start, length, total, copy)
        if kind == _CACHED:
            if held is not None:
                return self._read_kept_result(slot, start, length, total, held)
            return self._read_kept_task(slot, start, length, total, copy)
        raise self._bad_header(slot, magic, version, kind)

    def _kept_name(self, slot, start, length):
        if not 0 < length <= self.block_size - _HEAD.size:
            raise PayloadError(f"slot {slot}: its header names no valid kept segment")
        try:
            return bytes(self._view[start + _HEAD.size:start + _HEAD.size + length]).decode("ascii")
        except UnicodeDecodeError:
            raise PayloadError(f"slot {slot}: its header names no valid kept segment") from None

    def _read_kept_task(self, slot, start, length, total, copy):
        # A worker: a task in a segment its pool keeps.  The mapping is kept
        # too; the task's views come from a Lease, which put() looks at.
        from fastpool._core import Lease
        from fastpool._spill import SpillMaps

        self._reading[slot] = (None, None, None)   # even if this fails, the result says RETURNED
        name = self._kept_name(slot, start, length)
        if self._maps is None:
            self._maps = SpillMaps(self.spill_prefix)
        try:
            mapping = self._maps.get(name)
        except (OSError, ValueError) as e:
            raise PayloadError(f"slot {slot}: its kept segment {name!r} cannot be used: {e}") from None
        lease = Lease(mapping)
        self._reading[slot] = (name, mapping, lease)
        return _load_kept(memoryview(lease), total, copy, f"slot {slot} (kept segment {name!r})")

    def _read_kept_result(self, slot, start, length, total, held):
        # The owner: a result in the segment its task went in.  The object
        # is lent views of it (no copy); the segment is free again once the
        # last of them goes.
        name = self._kept_name(slot, start, length)
        if name != held.name:
            raise PayloadError(f"slot {slot}: its header names {name!r}, not the segment "
                               f"its task went in ({held.name!r})")
        return _load_kept(memoryview(self._cache.lend(held)), total, False,
                          f"slot {slot} (kept segment {name!r})")

    def _read_spilled(self, slot, start, length, total, copy):
        name = self._spilled_name(slot, start, length)
        if name is None:
            raise PayloadError(f"slot {slot}: its header names no valid one-off segment")
        try:
            shm = _attach_and_unlink(name)
        except FileNotFoundError:
            self._view[start:start + _HEAD.size] = _EMPTY_HEADER
            raise PayloadError(f"slot {slot}: its one-off segment {name!r} is gone") from None
        self._view[start:start + _HEAD.size] = _EMPTY_HEADER   # the name is gone: never again
        where = f"slot {slot} (one-off segment {name!r})"
        if shm.size < total:
            shm.close()
            raise PayloadError(f"{where}: {shm.size} bytes, its header claims {total}")
        # Keep the mapping, not the SharedMemory: it is unmapped when the
        # last view into it (an array read with copy=False) goes away.
        buf = memoryview(_detach_mapping(shm))
        magic, version, kind, n, length, inner_total = _HEAD.unpack_from(buf, 0)
        if magic != _MAGIC or version != _VERSION or kind != _INLINE or inner_total != total:
            raise PayloadError(f"{where}: not a payload this module wrote")
        # The mapping is this payload's alone: views into it need no copy.
        return _load(buf, 0, n, length, total, False, where)

    # -- giving up -----------------------------------------------------------

    def discard(self, slot: int) -> None:
        """Drop the payload of block ``slot`` unread; unlink its one-off segment if it has one.

        For a payload that will never be read (its task was abandoned, its
        worker died).  Whatever the block holds, even a torn write, it is
        empty afterwards.
        """
        start = self._start(slot)
        view = self._view
        if self._held is not None and self._held[slot] is not None:
            self._give_back(slot)
        magic, version, kind, _, length, _ = _HEAD.unpack_from(view, start)
        if magic == _MAGIC and version == _VERSION and kind == _SPILLED:
            name = self._spilled_name(slot, start, length)
            if name is not None:
                _unlink(name)
        view[start:start + _HEAD.size] = _EMPTY_HEADER

    def close(self) -> None:
        """Let go of the view, so that its owner can close the mapping under
        it; remove the kept segments (a pool's owner) or let go of their
        mappings (a worker)."""
        self._view.release()
        self._reading = [None] * self.n_slots
        if self._cache is not None:
            self._held = [None] * self.n_slots
            self._cache.close()
        if self._maps is not None:
            self._maps.close()

    def _give_back(self, slot):
        held = self._held[slot]
        self._held[slot] = None
        self._cache.release(held)

    # -- helpers -------------------------------------------------------------

    def _start(self, slot) -> int:
        if type(slot) is not int or not 0 <= slot < self.n_slots:
            raise self._bad_slot(slot)
        return slot * self.block_size

    def _bad_slot(self, slot):
        if type(slot) is not int:
            return TypeError(f"slot must be an int, not {type(slot).__name__}")
        return IndexError(f"slot {slot} is out of range (0 to {self.n_slots - 1})")

    def _spilled_name(self, slot, start, length):
        # Only a name this module could have made for this slot is ever
        # unlinked, whatever a damaged block says.
        if not 0 < length <= self.block_size - _HEAD.size:
            return None
        try:
            name = bytes(self._view[start + _HEAD.size:start + _HEAD.size + length]).decode("ascii")
        except UnicodeDecodeError:
            return None
        prefix, _, rest = name.partition("-")
        slot_hex, _, counter = rest.partition("-")
        if not (prefix and len(prefix) <= _MAX_PREFIX and prefix.replace("_", "a").isalnum()
                and slot_hex == f"{slot:x}" and counter and _is_hex(counter)):
            return None
        return name

    @staticmethod
    def _bad_header(slot, magic, version, kind):
        if magic == 0 and kind == _EMPTY:
            return PayloadError(f"slot {slot} holds no payload")
        if magic != _MAGIC:
            return PayloadError(f"slot {slot}: not a payload header (magic {magic:#010x})")
        if version != _VERSION:
            return PayloadError(f"slot {slot}: payload format version {version}, "
                                f"this fastpool reads {_VERSION}")
        return PayloadError(f"slot {slot}: unknown payload kind {kind}")


class _Buffers(list):
    """pickle's buffer_callback: large buffers go out of band (kept here), small ones in band."""

    __slots__ = ()

    def __call__(self, pb):
        m = pb.raw()
        if m.nbytes < OUT_OF_BAND_MIN:
            return True
        self.append(m)
        return False


def loads_stream(stream):
    """The object in a payload's stream: a pickle, or a marshal stream of plain values."""
    return _loads(stream) if stream[0] == _PROTO else _mloads(stream)


def plain(obj) -> bool:
    """``obj`` is a value marshal carries exactly: an int, float, bool, None,
    or a str or bytes of at most _PLAIN_MAX (exact types: a subclass, or any
    other buffer, would come back as its base type)."""
    t = type(obj)
    return t in _PLAIN and (t is not str and t is not bytes or len(obj) <= _PLAIN_MAX)


class _OutOfBandWanted(Exception):
    """_in_band_only met a buffer that should go out of band."""


def _in_band_only(pb):
    # pickle's buffer_callback for a payload expected to have no large
    # buffer: small ones pickle in band; a large one stops the pickling at
    # once, to be pickled again by prepare(), with the buffer out of band.
    if pb.raw().nbytes >= OUT_OF_BAND_MIN:
        raise _OutOfBandWanted
    return True


def _put(view, start, stream, buffers, offsets, total, kind=_INLINE, in_place=()):
    # Table, stream and buffers first, the header last.  Buffers numbered
    # in `in_place` are at their offset already.
    pos = start + _HEAD.size
    for m, offset in zip(buffers, offsets):
        _ENTRY.pack_into(view, pos, offset, m.nbytes, _READONLY if m.readonly else 0)
        pos += _ENTRY.size
    view[pos:pos + len(stream)] = stream
    for i, (m, offset) in enumerate(zip(buffers, offsets)):
        if i not in in_place:
            view[start + offset:start + offset + m.nbytes] = m
    _HEAD.pack_into(view, start, _MAGIC, _VERSION, kind, len(buffers), len(stream), total)


def _layout(stream, buffers, page_from=None):
    """Where the buffers go after the header, table and stream; and the
    total.  `page_from`: the payload starts `page_from` bytes into a page,
    and the first buffer goes on the next page boundary (a kept segment)."""
    end = _HEAD.size + _ENTRY.size * len(buffers) + len(stream)
    offsets = []
    for i, m in enumerate(buffers):
        if i == 0 and page_from is not None:
            end = -(-(end + page_from) // _PAGE) * _PAGE - page_from
        else:
            end = -(-end // ALIGN) * ALIGN
        offsets.append(end)
        end += m.nbytes
    return offsets, end


def _load_kept(buf, total, copy, where):
    from fastpool._spill import HEAD

    if HEAD + total > buf.nbytes:
        raise PayloadError(f"{where}: {buf.nbytes - HEAD} bytes, its header claims {total}")
    magic, version, kind, n, length, inner_total = _HEAD.unpack_from(buf, HEAD)
    if magic != _MAGIC or version != _VERSION or kind != _INLINE or inner_total != total:
        raise PayloadError(f"{where}: not a payload this module wrote")
    return _load(buf, HEAD, n, length, total, copy, where)


def _load(buf, start, n, length, total, copy, where):
    """Unpickle the payload at ``start``; ``where`` (a slot, or a description) names it in errors."""
    table = start + _HEAD.size
    stream = table + _ENTRY.size * n
    if type(where) is int:
        where = f"slot {where}"
    if n > total // _ENTRY.size or stream + length > start + total:
        raise PayloadError(f"{where}: its header does not fit its {total} bytes")
    if not n:
        return loads_stream(buf[stream:stream + length])
    buffers = []
    low = stream + length - start          # buffers follow the stream, in order, apart
    for i in range(n):
        offset, size, flags = _ENTRY.unpack_from(buf, table + i * _ENTRY.size)
        if offset < low or offset % ALIGN or offset + size > total or flags & ~_READONLY:
            raise PayloadError(f"{where}: buffer {i} of its table is damaged")
        low = offset + size
        b = buf[start + offset:start + low]
        if flags:
            b = bytes(b) if copy else b.toreadonly()
        elif copy:
            b = bytearray(b)
        buffers.append(b)
    return _loads(buf[stream:stream + length], buffers=buffers)


# -- bytes-likes out of band ----------------------------------------------------

def _lift(obj):
    """``obj`` with its memoryviews, and large bytes and bytearrays, near the
    top (see the module docstring) wrapped to pickle out of band; ``obj``
    itself when it has none."""
    t = type(obj)
    if t is tuple or t is dict:
        if len(obj) <= _SCAN_ITEMS:
            for v in (obj if t is tuple else obj.values()):
                tv = type(v)
                if tv is tuple or tv is dict:
                    if len(v) <= _SCAN_ITEMS:
                        for w in (v if tv is tuple else v.values()):
                            if type(w) in _BYTES_LIKE and _is_lifted(w):
                                return _lift_in(obj, 2)
                elif tv in _BYTES_LIKE and _is_lifted(v):
                    return _lift_in(obj, 2)
        return obj
    return _OutOfBand(obj) if t in _BYTES_LIKE and _is_lifted(obj) else obj


def _is_lifted(b):
    return type(b) is memoryview or len(b) >= OUT_OF_BAND_MIN


def _lift_in(obj, depth):
    # _lift found something to wrap: rebuild the tuples and dicts on the way to it.
    t = type(obj)
    if t in _BYTES_LIKE:
        return _OutOfBand(obj) if _is_lifted(obj) else obj
    if not depth or (t is not tuple and t is not dict) or len(obj) > _SCAN_ITEMS:
        return obj
    if t is tuple:
        return tuple([_lift_in(v, depth - 1) for v in obj])
    return {k: _lift_in(v, depth - 1) for k, v in obj.items()}


class _OutOfBand:
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __reduce_ex__(self, protocol):
        obj = self.obj
        if type(obj) is bytes:
            return _bytes, (_PickleBuffer(obj),)
        if type(obj) is bytearray:
            return _bytearray, (_PickleBuffer(obj),)
        if obj.format.lstrip("@") not in _CASTABLE:
            raise TypeError(f"cannot pickle a memoryview of format {obj.format!r}")
        data = obj if obj.c_contiguous else (obj.tobytes() if obj.readonly else bytearray(obj.tobytes()))
        return _memoryview, (_PickleBuffer(data), obj.format, obj.shape)


# What the reader's buffer becomes.  A copy=True reader hands over a fresh
# bytes (read-only buffers) or bytearray: take it as it is, no second copy.

def _bytes(buf):
    return buf if type(buf) is bytes else bytes(buf)


def _bytearray(buf):
    return buf if type(buf) is bytearray else bytearray(buf)


def _memoryview(buf, fmt, shape):
    m = memoryview(buf)
    if m.format != "B" or m.ndim != 1:
        m = m.cast("B")
    return m.cast(fmt, shape) if fmt != "B" or len(shape) != 1 else m


def _is_hex(text):
    return all(c in "0123456789abcdef" for c in text)


# -- one-off segments -------------------------------------------------------------

def _create_untracked(name, size):
    from multiprocessing import shared_memory

    if _TRACK_PARAM:
        return shared_memory.SharedMemory(name, create=True, size=size, track=False)
    from multiprocessing import resource_tracker

    shm = shared_memory.SharedMemory(name, create=True, size=size)
    # Before 3.13 every SharedMemory registers with the resource tracker,
    # which unlinks what is still registered when its process tree exits: the
    # reader, possibly in another tree, is the one to unlink this.
    resource_tracker.unregister(shm._name, "shared_memory")
    return shm


def _attach_and_unlink(name):
    """Map a one-off segment and remove its name at once.

    Before 3.13 attaching registers with the resource tracker and unlink()
    unregisters, so the two balance; on 3.13+ neither touches it.
    """
    from multiprocessing import shared_memory

    shm = (shared_memory.SharedMemory(name, track=False) if _TRACK_PARAM
           else shared_memory.SharedMemory(name))
    try:
        shm.unlink()
    except BaseException:
        shm.close()
        raise
    return shm


def _unlink(name):
    try:
        shm = _attach_and_unlink(name)
    except FileNotFoundError:
        return          # read already, or its writer died before making it
    shm.close()


def _detach_mapping(shm):
    """The mmap of ``shm``, which ``shm`` no longer owns: it stays mapped for
    as long as something views it, and is unmapped when it is collected."""
    mapping = shm._mmap
    shm._buf.release()
    shm._buf = None
    shm._mmap = None
    shm.close()         # now closes only the descriptor
    return mapping
