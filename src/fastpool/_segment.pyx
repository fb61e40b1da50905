# The shared segment (see _segment.pxd for its layout).
#
#   fp_ctl | fp_worker_rec x n | fp_worker_stats x n | task ring | result ring
#          | operand words | admission stamps | task control words
#          | kernel records (named segments) | payload blocks
#
# The operand words are one per task slot (task_cap of them): a scalar task
# whose kernel takes a third operand carries it there, written before its
# cell is pushed (the push's release orders it for the worker that pops it).
# The kernel records tell worker processes how to load the kernels that are
# not built-ins (_kernels.pyx, fp_kreg_publish).
#
# The admission stamps are one per task slot too (_stats.pyx), and so are
# the task control words (fp_task_ctl: a task's state, its timeout and
# deadline; see _engine.pyx).
#
# A segment is made zero-filled by the kernel, so every counter, record and
# ring cell starts out as it should (the rings store their sequence words
# relative to the cell index for this reason): making one touches only the
# pages of its header.  A pool whose workers are threads maps an anonymous
# region; one that other processes join makes a named segment, which they
# attach to and check (magic, layout version, size) before trusting any
# offset in it.  Only the process that made a named segment unlinks it.
from libc.string cimport memset
import os


cdef class Segment:

    @staticmethod
    def create(uint32_t n_workers, uint64_t task_cap, uint64_t result_cap, named=False,
               uint32_t block_size=0, uint32_t n_blocks=0):
        """A new segment; with `n_blocks` payload blocks of `block_size`
        bytes (the pickled tasks and results of worker processes, see
        _payload.py).  `named`: False for an anonymous mapping, True for a
        named segment with a name of its own, or that name (a str).
        `task_cap` is also the number of task slots (one stamp each)."""
        cdef Segment seg = Segment.__new__(Segment)
        cdef size_t workers_off = sizeof(fp_ctl)
        cdef size_t wstats_off = workers_off + n_workers * sizeof(fp_worker_rec)
        cdef size_t task_off = wstats_off + n_workers * sizeof(fp_worker_stats)
        cdef size_t result_off = task_off + fp_ring_bytes(task_cap)
        cdef size_t operands_off = result_off + fp_ring_bytes(result_cap)
        cdef size_t stamps_off = (operands_off + task_cap * sizeof(fp_word) + 63) & ~(<size_t>63)
        cdef size_t tctl_off = (stamps_off + task_cap * sizeof(uint64_t) + 63) & ~(<size_t>63)
        cdef size_t kernels_off = tctl_off + task_cap * sizeof(fp_task_ctl)
        cdef size_t kernels_size = FP_KREG_BYTES if named or n_blocks else 0
        cdef size_t payload_off = kernels_off + kernels_size
        cdef size_t size = payload_off
        cdef uint32_t i
        if n_blocks:
            payload_off = (payload_off + 4095) & ~(<size_t>4095)   # blocks start on a page
            size = payload_off + <size_t>n_blocks * block_size
        if named:
            from multiprocessing import shared_memory
            if named is True:
                mapping = shared_memory.SharedMemory(create=True, size=size)
            else:
                try:
                    mapping = shared_memory.SharedMemory(named, create=True, size=size)
                except FileExistsError:
                    raise FileExistsError(
                        f"a shared-memory segment named {named!r} exists already (another "
                        f"pool's, or one whose process was killed): choose another shm_name") from None
            seg.name = mapping.name
        else:
            # Thread workers need no name: an anonymous shared mapping is
            # cheaper to make and to drop, and can never be left behind.
            import mmap
            mapping = mmap.mmap(-1, size)
        seg._owner_pid = os.getpid()
        seg._map(mapping)
        seg.ctl.version = FP_LAYOUT_VERSION
        seg.ctl.size = size
        seg.ctl.n_workers = n_workers
        seg.ctl.workers = workers_off
        seg.ctl.wstats = wstats_off
        seg.ctl.stamps = stamps_off
        seg.ctl.task_ctl = tctl_off
        seg.ctl.task_ring = task_off
        seg.ctl.result_ring = result_off
        seg.ctl.payload = payload_off if n_blocks else 0
        seg.ctl.operands = operands_off
        seg.ctl.kernels = kernels_off if kernels_size else 0
        seg.ctl.kernels_size = kernels_size
        seg.ctl.block_size = block_size if n_blocks else 0
        seg.ctl.n_blocks = n_blocks
        seg.ctl.owner_pid = os.getpid()
        seg.ctl.stats.t0_ns = fp_now_ns()
        seg.ctl.stats.max_queue = -1
        seg._locate()
        for i in range(n_workers):
            seg.workers[i].slot = FP_NO_SLOT
        fp_ring_init(seg.tasks, task_cap)
        fp_ring_init(seg.results, result_cap)
        # Last, release: a reader that attaches by name meanwhile (python -m
        # fastpool stats) sees a whole header, or no pool.
        fp_store_u32_release(&seg.ctl.magic, FP_MAGIC)
        return seg

    @staticmethod
    def attach(str name, bint readonly=False):
        """Map the named segment of a pool made by another process
        (`readonly`: only to read its stats)."""
        cdef Segment seg = Segment.__new__(Segment)
        mapping = _attach_untracked(name, readonly)
        seg.name = name
        seg.readonly = readonly
        try:
            seg._check(mapping)
            seg._map(mapping)
            seg._locate()
        except BaseException:
            mapping.close()
            raise
        return seg

    def _check(self, mapping):
        cdef Py_ssize_t have = len(mapping)
        cdef const unsigned char[::1] mv
        cdef const fp_ctl *c
        cdef const fp_ring *tasks
        if have < <Py_ssize_t>sizeof(fp_ctl):
            raise ValueError(f"{self.name!r} is not a fastpool pool (too small)")
        mv = mapping
        c = <const fp_ctl *>&mv[0]
        if c.magic != FP_MAGIC:
            raise ValueError(f"{self.name!r} is not a fastpool pool")
        if c.version != FP_LAYOUT_VERSION:
            raise ValueError(f"{self.name!r} is a fastpool pool of another version "
                             f"(layout {c.version}, this fastpool reads {FP_LAYOUT_VERSION})")
        if (c.size > <uint64_t>have or c.result_ring + sizeof(fp_ring) > c.size
                or c.task_ring + sizeof(fp_ring) > c.size
                or c.workers + <uint64_t>c.n_workers * sizeof(fp_worker_rec) > c.size
                or c.wstats + <uint64_t>c.n_workers * sizeof(fp_worker_stats) > c.size):
            raise ValueError(f"{self.name!r}: its header does not fit its size")
        tasks = <const fp_ring *>&mv[c.task_ring]
        if c.stamps + (tasks.mask + 1) * sizeof(uint64_t) > c.size:
            raise ValueError(f"{self.name!r}: its header does not fit its size")
        if c.task_ctl + (tasks.mask + 1) * sizeof(fp_task_ctl) > c.size:
            raise ValueError(f"{self.name!r}: its task control words do not fit its size")
        if c.operands < c.result_ring + sizeof(fp_ring) or c.operands > c.size:
            raise ValueError(f"{self.name!r}: its operand words do not fit its size")
        if c.kernels and (c.kernels < c.operands or c.kernels + c.kernels_size > c.size):
            raise ValueError(f"{self.name!r}: its kernel records do not fit its size")
        if c.payload and c.payload + <uint64_t>c.n_blocks * c.block_size > c.size:
            raise ValueError(f"{self.name!r}: its payload blocks do not fit its size")

    cdef int _map(self, object mapping) except -1:
        # const: a read-only mapping too (the pointers are then only read).
        cdef const unsigned char[::1] mv = mapping.buf if hasattr(mapping, "buf") else mapping
        self._mapping = mapping
        self.base = <char *>&mv[0]
        self.ctl = <fp_ctl *>self.base
        return 0

    @property
    def owner_pid(self):
        return None if self.ctl == NULL else self.ctl.owner_pid

    def payload_view(self):
        """A writable memoryview of the payload blocks (None: the segment
        has none).  Release it before close()."""
        if self.ctl == NULL or self.ctl.payload == 0:
            return None
        whole = memoryview(self._mapping.buf if hasattr(self._mapping, "buf") else self._mapping)
        view = whole[self.ctl.payload:self.ctl.payload + <uint64_t>self.ctl.n_blocks * self.ctl.block_size]
        whole.release()
        return view

    @property
    def n_blocks(self):
        return 0 if self.ctl == NULL else self.ctl.n_blocks

    @property
    def block_size(self):
        return 0 if self.ctl == NULL else self.ctl.block_size

    cdef void _locate(self) noexcept:
        # The parts, from the offsets in the header.
        self.workers = <fp_worker_rec *>(self.base + self.ctl.workers)
        self.wstats = <fp_worker_stats *>(self.base + self.ctl.wstats)
        self.stamps = <uint64_t *>(self.base + self.ctl.stamps)
        self.tctl = <fp_task_ctl *>(self.base + self.ctl.task_ctl)
        self.tasks = <fp_ring *>(self.base + self.ctl.task_ring)
        self.results = <fp_ring *>(self.base + self.ctl.result_ring)
        self.operands = <fp_word *>(self.base + self.ctl.operands)

    cdef void _drop_pointers(self) noexcept:
        self.base = NULL
        self.ctl = NULL
        self.workers = NULL
        self.wstats = NULL
        self.stamps = NULL
        self.tctl = NULL
        self.tasks = NULL
        self.results = NULL
        self.operands = NULL

    def close(self):
        """Unmap; the process that made a named segment also unlinks it."""
        self._drop_pointers()
        mapping, self._mapping = self._mapping, None
        if mapping is None:
            return
        mapping.close()
        if self.name is not None and os.getpid() == self._owner_pid:
            try:
                mapping.unlink()
            except FileNotFoundError:
                pass    # someone else already removed the name; ours is gone either way

    def forget(self):
        """In a forked child: let go of the parent's segment, touching nothing."""
        self._drop_pointers()
        self._owner_pid = None
        self._mapping = None    # unmapped in this process only


def _attach_untracked(name, bint readonly=False):
    # Map the segment itself, not through SharedMemory: before 3.13 that
    # registers it with the resource tracker, which worker processes share
    # with their owner (its registration, not theirs, must stand) and which
    # would unlink the segment when a process that attached exits.
    import _posixshmem, mmap
    fd = _posixshmem.shm_open("/" + name.lstrip("/"), os.O_RDONLY if readonly else os.O_RDWR,
                              mode=0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError(f"{name!r} is not a fastpool pool (empty)")
        if readonly:
            return mmap.mmap(fd, size, prot=mmap.PROT_READ)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


# -- payload blocks: the common case without Python-level struct work --------
#
# A block's layout is _payload.py's; a payload that is one pickle stream
# with no out-of-band buffers and fits its block (nearly every small task
# and result) is written and read here, the rest by _payload.PayloadArea.

from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy

ctypedef struct fp_payload_head:     # _payload._HEAD, "<IBBxxIxxxxQQ"
    uint32_t magic
    uint8_t version
    uint8_t kind
    uint8_t _pad0[2]
    uint32_t n_buffers
    uint32_t _pad1
    uint64_t length                  # of the pickle stream after the header
    uint64_t total                   # header + stream

cdef enum:
    PAYLOAD_MAGIC = 0x6C705046       # _payload._MAGIC
    PAYLOAD_VERSION = 1
    PAYLOAD_INLINE = 1

cdef inline char *_block(Segment seg, int64_t block) except NULL:
    if seg.ctl == NULL or not 0 <= block < <int64_t>seg.ctl.n_blocks:
        raise IndexError(f"no payload block {block}")
    return seg.base + seg.ctl.payload + <uint64_t>block * seg.ctl.block_size

def block_stream(Segment seg, int64_t block):
    """The pickle stream in `block` as a read-only memoryview (valid while
    the block is not written again), or None if it holds anything else."""
    cdef char *p = _block(seg, block)
    cdef fp_payload_head *h = <fp_payload_head *>p
    if (h.magic != PAYLOAD_MAGIC or h.version != PAYLOAD_VERSION or h.kind != PAYLOAD_INLINE
            or h.n_buffers != 0 or h.total != sizeof(fp_payload_head) + h.length
            or h.total > seg.ctl.block_size):
        return None
    return PyMemoryView_FromMemory(p + sizeof(fp_payload_head), <Py_ssize_t>h.length, PyBUF_READ)

def block_put_stream(Segment seg, int64_t block, bytes stream):
    """Write `stream` (a pickle with no out-of-band buffers) into `block`;
    False if it does not fit (then PayloadArea.put spills it)."""
    cdef char *p = _block(seg, block)
    cdef fp_payload_head *h = <fp_payload_head *>p
    cdef Py_ssize_t n = PyBytes_GET_SIZE(stream)
    if <uint64_t>n + sizeof(fp_payload_head) > seg.ctl.block_size:
        return False
    memcpy(p + sizeof(fp_payload_head), PyBytes_AS_STRING(stream), n)
    # The header last, as _payload does (the ring push that hands the block
    # over orders all of it for the reader).
    h.version = PAYLOAD_VERSION
    h.kind = PAYLOAD_INLINE
    h.n_buffers = 0
    h.length = <uint64_t>n
    h.total = sizeof(fp_payload_head) + <uint64_t>n
    h.magic = PAYLOAD_MAGIC
    return True
