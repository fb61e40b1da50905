"""Spill segments a process pool keeps: large payloads without page faults.

A payload that does not fit its payload block goes to a shared-memory
segment.  Made afresh for each payload, every page of that segment is
allocated, zero-filled and mapped by the kernel in the writer, mapped again
in the reader, and freed at unlink: for a 16 MB array that costs several
times the copy itself.  So a pool keeps some spill segments mapped in its
own process and in its worker processes, and passes them to and fro:

    owner (SpillCache)                       worker process (SpillMaps)
    take(size) -> a free segment S
    writes the task into S; its block
    says CACHED and names S       -------->  maps S by name (once: kept)
                                             reads the task, with views into
                                             S (through a Lease); runs it;
                                             once no view of the task is
                                             left, writes the result into S
    reads the result with views   <--------  (CACHED again), or elsewhere if
    into S (through a Lease); S is           it does not fit; marks S PINNED
    free again when the last goes            if the task's views outlived it

Segments are powers of two in size, from MIN_CLASS; a pool keeps at most
LIMIT bytes of them (counted by size) in at most MAX_SEGMENTS segments, and
a payload that finds no room in the cache takes a one-off segment as before.
A free segment unused for TRIM_AFTER seconds is removed (a thread of the
owner looks while the cache holds any segment), and close() removes them
all.  Removing a free segment truncates it first, which frees its memory
even though workers still map it: a worker never touches a segment again
after it gave it back, and drops mappings of removed segments whenever it
maps a new one.  A PINNED segment (the task's code kept views of its
arguments) is unlinked and never reused or truncated: its memory lives as
long as those views.

Every segment starts with its header; the payload (_payload.py's layout)
follows at HEAD:

    0  magic u32 | flags u32 (PINNED) | size u64 | reserved u64 | ...  64 bytes

`reserved`: bytes allocated up front (posix_fallocate where it exists).  A
write to an unallocated page of a full /dev/shm kills the writer with
SIGBUS; allocating first makes that an OSError for the one payload.
"""
from __future__ import annotations

import errno
import itertools
import os
import struct
import threading
import time
from collections import deque

__all__ = ["HEAD", "SpillCache", "SpillMaps", "is_cached_name"]

HEAD = 64                      # the segment's own header; the payload starts here
MIN_CLASS = 1 << 17            # smallest segment (payloads above one 64 KiB block)
LIMIT = 256 << 20              # bytes of segments a pool keeps, by size
MAX_SEGMENTS = 32              # segments a pool keeps (mappings in each worker)
TRIM_AFTER = 5.0               # seconds a free segment is kept unused

_MAGIC = 0x63735046            # b"FPsc"
_PINNED = 1
_SEG_HEAD = struct.Struct("<IIQQ")       # magic, flags, size, reserved
_FLAGS_AT = 4
_RESERVED_AT = 16
_TAG = "-k-"                   # names: <prefix>-k-<counter in hex>

_FREE, _HELD, _LENT = 0, 1, 2

try:
    import _posixshmem
except ImportError:            # no POSIX shared memory here: nothing is cached
    _posixshmem = None
_fallocate = getattr(os, "posix_fallocate", None)


def is_cached_name(name: str, prefix: str | None = None) -> bool:
    """A name SpillCache could have made (with `prefix`, if given)."""
    head, tag, counter = name.rpartition(_TAG)
    return (bool(tag) and bool(head) and len(head) <= 16 and head.replace("_", "a").isalnum()
            and head.isascii() and (prefix is None or head == prefix)
            and 0 < len(counter) <= 16 and all(c in "0123456789abcdef" for c in counter))


def size_class(need: int) -> int:
    return max(MIN_CLASS, 1 << (need - 1).bit_length())


def _shm_open(name: str, flags: int) -> int:
    return _posixshmem.shm_open("/" + name, flags, mode=0o600)


def _shm_unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def _map(name: str, fd: int, size: int):
    import mmap

    return mmap.mmap(fd, size)


def _reserve(name: str, mapping, need: int) -> None:
    """Allocate the first `need` bytes of segment `name` (OSError if /dev/shm is full)."""
    reserved = _SEG_HEAD.unpack_from(mapping, 0)[3]
    if need <= reserved:
        return
    if _fallocate is not None:
        fd = _shm_open(name, os.O_RDWR)
        try:
            _fallocate(fd, 0, need)
        finally:
            os.close(fd)
    struct.pack_into("<Q", mapping, _RESERVED_AT, need)


class _Seg:
    __slots__ = ("last_used", "mapping", "name", "size", "state", "view")

    def __init__(self, name: str, size: int, mapping) -> None:
        self.name = name
        self.size = size
        self.mapping = mapping
        self.view = memoryview(mapping)
        self.state = _HELD
        self.last_used = 0.0


class SpillCache:
    """The spill segments one pool keeps (its owner's side; see the module docstring).

    Thread-safe: tasks are written by any submitting thread, results read
    by the dispatcher.  A lease's last view may go in any thread, even
    inside a collection: that only appends to a deque, which take() and
    the trimmer drain.
    """

    def __init__(self, prefix: str, *, limit: int | None = None, max_segments: int | None = None,
                 trim_after: float | None = None) -> None:
        self.prefix = prefix
        self.limit = LIMIT if limit is None else limit
        self.max_segments = MAX_SEGMENTS if max_segments is None else max_segments
        self.trim_after = TRIM_AFTER if trim_after is None else trim_after
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._segs: dict[str, _Seg] = {}
        self._free: dict[int, list[_Seg]] = {}    # size -> free segments, the last used last
        self._returned: deque = deque()           # segments whose lease's last view went
        self._bytes = 0
        self._counter = itertools.count()
        self._closed = _posixshmem is None
        self._trimmer: threading.Thread | None = None

    # -- the owner's side of a trip ---------------------------------------------------

    def take(self, total: int) -> _Seg | None:
        """A segment for a payload of `total` bytes, reserved and held for it;
        None if the cache has no room (then the payload goes to a one-off
        segment).  OSError if /dev/shm has no room even after trimming."""
        need = HEAD + total
        size = size_class(need)
        if size > self.limit or self._closed:
            return None
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                return None
            self._drain()
            free = self._free.get(size)
            seg = free.pop() if free else self._make(size)
            if seg is None:
                return None
            seg.state = _HELD
            if self._trimmer is None:
                self._trimmer = threading.Thread(target=self._trim_loop, name="fastpool-spill-trim",
                                                 daemon=True)
                self._trimmer.start()
        try:
            _reserve(seg.name, seg.mapping, need)
        except OSError as e:
            with self._lock:
                self._retire(seg)
                if e.errno != errno.ENOSPC:
                    raise
                self._trim(0.0)         # make room, then try once more
            return self._take_again(total, e)
        return seg

    def _take_again(self, total: int, first: OSError) -> _Seg | None:
        need = HEAD + total
        with self._lock:
            seg = self._make(size_class(need))
        if seg is None:
            raise first
        try:
            _reserve(seg.name, seg.mapping, need)
        except OSError:
            with self._lock:
                self._retire(seg)
            raise OSError(errno.ENOSPC, f"no room in shared memory for a payload of {total} bytes") \
                from first
        return seg

    def give(self, seg: _Seg) -> None:
        """`seg` is done with (the result was read, or the task abandoned)."""
        with self._lock:
            self._give(seg)

    def release(self, seg: _Seg) -> None:
        """Done with `seg` after reading its block's result: give it back,
        unless the result was lent views of it (then their Lease does)."""
        if seg.state != _LENT:
            self.give(seg)

    def lend(self, seg: _Seg):
        """A Lease over `seg` for a result read from it: `seg` is given back
        when the last view of the lease goes."""
        from fastpool._core import Lease

        seg.state = _LENT
        return Lease(seg.mapping, self._lease_ended, seg)

    def _lease_ended(self, seg: _Seg) -> None:
        # Any thread, maybe inside a collection: only record it.
        if not self._closed:
            self._returned.append(seg)

    # -- upkeep ---------------------------------------------------------------------

    def trim(self, idle: float = 0.0) -> None:
        """Remove the free segments unused for `idle` seconds or more."""
        with self._lock:
            self._drain()
            self._trim(idle)

    def stats(self) -> dict:
        """Segments kept (any state), their bytes by size, and those free."""
        with self._lock:
            self._drain()
            return {"segments": len(self._segs), "bytes": self._bytes,
                    "free": sum(len(v) for v in self._free.values())}

    def close(self) -> None:
        """Remove every segment: free ones at once, lent and held ones by
        name (their memory goes with the last view of them).  In a forked
        child, only let go of the parent's objects."""
        with self._lock:
            if self._closed and not self._segs:
                return
            self._closed = True
            owner = os.getpid() == self._pid
            trimmer, self._trimmer = self._trimmer, None
            self._wake.notify_all()
            segs = list(self._segs.values())
            self._segs.clear()
            self._free.clear()
            self._returned.clear()
            self._bytes = 0
        if trimmer is not None and owner and trimmer is not threading.current_thread():
            trimmer.join()
        if not owner:
            return
        for seg in segs:
            self._remove(seg, truncate=seg.state == _FREE)

    # -- inside the lock ------------------------------------------------------------

    def _make(self, size: int) -> _Seg | None:
        if len(self._segs) >= self.max_segments or self._bytes + size > self.limit:
            self._evict(size)
            if len(self._segs) >= self.max_segments or self._bytes + size > self.limit:
                return None
        for _ in range(64):
            name = f"{self.prefix}{_TAG}{next(self._counter):x}"
            try:
                fd = _shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
                break
            except FileExistsError:
                continue        # a leftover of an earlier process: take the next name
        else:
            return None
        try:
            os.ftruncate(fd, size)
            mapping = _map(name, fd, size)
        except BaseException:
            _shm_unlink(name)
            raise
        finally:
            os.close(fd)
        _SEG_HEAD.pack_into(mapping, 0, _MAGIC, 0, size, HEAD)
        seg = _Seg(name, size, mapping)
        self._segs[name] = seg
        self._bytes += size
        return seg

    def _evict(self, size: int) -> None:
        # Free segments of other sizes, the least recently used first, until one of `size` fits.
        free = sorted((s for v in self._free.values() for s in v), key=lambda s: s.last_used)
        for seg in free:
            if len(self._segs) < self.max_segments and self._bytes + size <= self.limit:
                return
            self._free[seg.size].remove(seg)
            self._retire(seg)

    def _give(self, seg: _Seg) -> None:
        if self._segs.get(seg.name) is not seg or seg.state == _FREE:
            return              # removed meanwhile (closed, or retired), or given back already
        if _SEG_HEAD.unpack_from(seg.mapping, 0)[1] & _PINNED:
            # A worker still has views of it: never reuse it, never truncate it.
            del self._segs[seg.name]
            self._bytes -= seg.size
            self._remove(seg, truncate=False)
            return
        seg.state = _FREE
        seg.last_used = time.monotonic()
        self._free.setdefault(seg.size, []).append(seg)

    def _drain(self) -> None:
        returned = self._returned
        while returned:
            self._give(returned.popleft())

    def _trim(self, idle: float) -> None:
        cutoff = time.monotonic() - idle
        for size, free in list(self._free.items()):
            keep = [s for s in free if s.last_used > cutoff]
            for seg in free:
                if seg.last_used <= cutoff:
                    self._retire(seg)
            if keep:
                self._free[size] = keep
            else:
                del self._free[size]

    def _retire(self, seg: _Seg) -> None:
        # A free (or just failed) segment leaves the cache, its memory freed.
        if self._segs.pop(seg.name, None) is seg:
            self._bytes -= seg.size
        self._remove(seg, truncate=True)

    @staticmethod
    def _remove(seg: _Seg, truncate: bool) -> None:
        if truncate:
            try:
                fd = _shm_open(seg.name, os.O_RDWR)
            except OSError:
                pass
            else:
                try:
                    os.ftruncate(fd, 0)     # frees its pages, in every process that maps it
                except OSError:
                    pass
                finally:
                    os.close(fd)
        _shm_unlink(seg.name)
        mapping, seg.mapping = seg.mapping, None
        seg.view.release()
        try:
            mapping.close()
        except BufferError:
            pass                # a lent result still views it: unmapped when that goes

    def _trim_loop(self) -> None:
        with self._lock:
            while not self._closed:
                self._wake.wait(self.trim_after)
                if self._closed:
                    return
                self._drain()
                self._trim(self.trim_after)
                if not self._segs:
                    self._trimmer = None     # take() starts another when needed
                    return


class SpillMaps:
    """A worker process's mappings of its pool's kept spill segments, by name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._maps: dict = {}

    def get(self, name: str):
        """The mapping of segment `name` (mapped on first use, then kept).
        FileNotFoundError if it is gone; ValueError if it is not one."""
        mapping = self._maps.get(name)
        if mapping is not None:
            return mapping
        if _posixshmem is None or not is_cached_name(name, self.prefix):
            raise ValueError(f"{name!r} is not a spill segment of this pool")
        self._prune()
        fd = _shm_open(name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < HEAD:
                raise ValueError(f"spill segment {name!r} is empty")
            mapping = _map(name, fd, size)
        finally:
            os.close(fd)
        magic, _, seg_size, _ = _SEG_HEAD.unpack_from(mapping, 0)
        if magic != _MAGIC or seg_size != size:
            mapping.close()
            raise ValueError(f"{name!r} is not a spill segment this fastpool made")
        self._maps[name] = mapping
        return mapping

    def pin(self, name: str, mapping) -> None:
        """Views of the task outlived it: the owner must never reuse the
        segment; this process lets go of it (the views keep it mapped)."""
        struct.pack_into("<I", mapping, _FLAGS_AT, _SEG_HEAD.unpack_from(mapping, 0)[1] | _PINNED)
        if self._maps.get(name) is mapping:
            del self._maps[name]

    @staticmethod
    def reserve(name: str, mapping, need: int) -> bool:
        """Make sure the first `need` bytes are allocated; False if they cannot be."""
        try:
            _reserve(name, mapping, need)
            return True
        except OSError:
            return False

    def _prune(self) -> None:
        # Mappings of segments the owner removed (it unlinks them; names are
        # never reused), so that this process holds no more than the cache.
        for name in list(self._maps):
            try:
                os.close(_shm_open(name, os.O_RDONLY))
            except FileNotFoundError:
                self._drop(name)
            except OSError:
                pass

    def _drop(self, name: str) -> None:
        mapping = self._maps.pop(name)
        try:
            mapping.close()
        except BufferError:
            pass

    def close(self) -> None:
        for name in list(self._maps):
            self._drop(name)
