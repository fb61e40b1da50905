# Bounded MPMC ring (Vyukov's sequence-per-cell design) in shared memory.
#
#   fp_ring header          cells (capacity of them, 32 bytes each)
#   +-----------------+     +-----+------+------+---------+---------+
#   | mask            |     | seq | slot | kind | a (8 B) | b (8 B) |  cell 0
#   | cells_offset ---+---> +-----+------+------+---------+---------+
#   | enqueue_pos     |     |                  ...                  |
#   | dequeue_pos     |     +---------------------------------------+
#   +-----------------+
#
# Cell i starts with seq == i.  The word stored in the cell is seq - i, so a
# fresh, zero-filled segment is a ring of empty cells as it is: creating a
# ring touches no page of its cells, and a short-lived pool pays only for the
# pages it uses.  A producer that claimed position p (CAS on
# enqueue_pos) owns cell p & mask while cell.seq == p, writes the message,
# then stores seq = p + 1 (release): the message is published.  A consumer
# that claimed p (CAS on dequeue_pos) waits for seq == p + 1 (acquire: it
# sees the message), copies it out, then stores seq = p + capacity
# (release): the cell is free for the producer one lap later.
#
# Who writes what: producers write enqueue_pos and a cell's message, then
# its seq; consumers write dequeue_pos and a cell's seq.  Only offsets are
# stored, so another process can map the same block at another address.
from libc.string cimport memset

cdef extern from "unistd.h" nogil:
    void _exit(int status)

# Fault points, for the crash tests: a worker process can be made to die at
# a chosen step (see Core._inject_fault).  fp_fault is NULL except in a
# worker process, where it points at its segment's fault words.
cdef enum:
    FP_FAULT_CLAIM = 1       # holding a task cell it claimed, not yet released
    FP_FAULT_PUBLISH = 2     # holding a result cell it claimed, not yet published
    FP_FAULT_RUN = 3         # holding a task, before running it
    FP_FAULT_WOKEN = 4       # woken from its park, the wake-up not yet spent
    FP_FAULT_SPIN = 5        # counted as spinning (looking for work)
    FP_FAULT_EXIT = 86       # the exit status of such a death

cdef uint32_t *fp_fault = NULL

cdef inline void fp_fault_point(uint32_t point) noexcept nogil:
    if (fp_fault != NULL and fp_load_u32_relaxed(&fp_fault[0]) == point
            and fp_sub_u32_seq_cst(&fp_fault[1], 1) == 0):
        _exit(FP_FAULT_EXIT)

cdef inline fp_cell *_cells(fp_ring *r) noexcept nogil:
    return <fp_cell *>((<char *>r) + r.cells_offset)

cdef size_t fp_ring_bytes(uint64_t capacity) noexcept nogil:
    return sizeof(fp_ring) + capacity * sizeof(fp_cell)

cdef void fp_ring_init(fp_ring *r, uint64_t capacity) noexcept nogil:
    # capacity must be a power of two >= 2 (checked by the Python caller);
    # the cells must be zero-filled, as a new shared-memory block is.
    memset(r, 0, sizeof(fp_ring))
    r.mask = capacity - 1
    r.cells_offset = sizeof(fp_ring)
    # The block is handed to other threads by starting them afterwards
    # (thread creation is a full barrier), so plain stores are enough here.

cdef inline uint64_t _seq(const fp_cell *cell, uint64_t i) noexcept nogil:
    # acquire: see the callers.  The cell stores seq - i (see the top).
    return fp_load_u64_acquire(&cell.seq) + i

cdef inline void _set_seq(fp_cell *cell, uint64_t i, uint64_t seq) noexcept nogil:
    fp_store_u64_release(&cell.seq, seq - i)

cdef int fp_ring_push(fp_ring *r, const fp_cell *msg) noexcept nogil:
    cdef uint64_t pos
    return fp_ring_push_pos(r, msg, &pos, NULL)

cdef int fp_ring_push_pos(fp_ring *r, const fp_cell *msg, uint64_t *pos_out,
                          uint64_t *claim) noexcept nogil:
    # The position taken goes to *pos_out.  `claim` (a worker process's
    # record, or NULL) holds 1 + the position it is claiming until the
    # message is published: see fp_ring_recover_push.
    cdef fp_cell *cells = _cells(r)
    cdef fp_cell *cell
    cdef uint64_t seq
    cdef int64_t dif
    # relaxed: the position is only a ticket; the cell's seq orders the data.
    cdef uint64_t pos = fp_load_u64_relaxed(&r.enqueue_pos)
    while True:
        cell = &cells[pos & r.mask]
        # acquire: pairs with the consumer's release of seq, so our writes
        # to the cell cannot overtake its reads of the previous message.
        seq = _seq(cell, pos & r.mask)
        dif = <int64_t>(seq - pos)
        if dif == 0:
            if claim == NULL:
                if fp_cas_u64_relaxed(&r.enqueue_pos, &pos, pos + 1):
                    break
            else:
                fp_store_u64_relaxed(claim, pos + 1)
                if fp_cas_u64_release(&r.enqueue_pos, &pos, pos + 1):
                    fp_fault_point(FP_FAULT_PUBLISH)
                    break
            # CAS failure reloaded pos; try the new position.
        elif dif < 0:
            return FP_FULL          # the cell still holds last lap's message
        else:
            pos = fp_load_u64_relaxed(&r.enqueue_pos)
    cell.slot = msg.slot
    cell.kind = msg.kind
    cell.a = msg.a
    cell.b = msg.b
    # release: publishes the message written above to the consumer.
    _set_seq(cell, pos & r.mask, pos + 1)
    pos_out[0] = pos
    if claim != NULL:
        fp_store_u64_relaxed(claim, 0)
    return FP_OK

cdef int fp_ring_pop(fp_ring *r, fp_cell *out) noexcept nogil:
    cdef fp_cell *cells = _cells(r)
    cdef fp_cell *cell
    cdef uint64_t seq
    cdef int64_t dif
    cdef uint64_t pos = fp_load_u64_relaxed(&r.dequeue_pos)
    while True:
        cell = &cells[pos & r.mask]
        # acquire: pairs with the producer's release; the message is visible.
        seq = _seq(cell, pos & r.mask)
        dif = <int64_t>(seq - (pos + 1))
        if dif == 0:
            if fp_cas_u64_relaxed(&r.dequeue_pos, &pos, pos + 1):
                break
        elif dif < 0:
            return FP_EMPTY         # not yet published
        else:
            pos = fp_load_u64_relaxed(&r.dequeue_pos)
    out.slot = cell.slot
    out.kind = cell.kind
    out.a = cell.a
    out.b = cell.b
    # release: our reads of the message happen before the producer's reuse.
    _set_seq(cell, pos & r.mask, pos + r.mask + 1)
    return FP_OK

# Worker processes can die at any instruction.  One that dies between
# claiming a position and releasing (pop) or publishing (push) its cell
# would wedge the ring: nobody else ever moves that cell on.  So a worker
# process records each claim in its worker record before making it (the
# claim CAS is a release, pairing with the acquire loads below), and its
# owner, once the process is gone, finishes what it left half done.

cdef int fp_ring_claim_tracked(fp_ring *r, fp_cell *out, uint64_t *claim) noexcept nogil:
    # fp_ring_pop for a worker process: the position goes to out.seq and the
    # cell is not released yet (the caller records what it took first, then
    # calls fp_ring_release_cell).
    cdef fp_cell *cells = _cells(r)
    cdef fp_cell *cell
    cdef uint64_t seq
    cdef int64_t dif
    cdef uint64_t pos = fp_load_u64_relaxed(&r.dequeue_pos)
    while True:
        cell = &cells[pos & r.mask]
        seq = _seq(cell, pos & r.mask)
        dif = <int64_t>(seq - (pos + 1))
        if dif == 0:
            fp_store_u64_relaxed(claim, pos + 1)
            if fp_cas_u64_release(&r.dequeue_pos, &pos, pos + 1):
                break
        elif dif < 0:
            return FP_EMPTY
        else:
            pos = fp_load_u64_relaxed(&r.dequeue_pos)
    out.seq = pos
    out.slot = cell.slot
    out.kind = cell.kind
    out.a = cell.a
    out.b = cell.b
    return FP_OK

cdef void fp_ring_release_cell(fp_ring *r, uint64_t pos) noexcept nogil:
    # release: as in fp_ring_pop.
    _set_seq(&_cells(r)[pos & r.mask], pos & r.mask, pos + r.mask + 1)

cdef int fp_ring_recover_pop(fp_ring *r, uint64_t claim, fp_cell *out) noexcept nogil:
    """A dead consumer's claim (1 + position, from its record): finish it.

    Returns 1 (the cell, claimed and never released, copied to *out, then
    released) or 0 (no cell is held at that position).  If the record says
    the dead worker copied the cell out, the cell was certainly its own;
    otherwise the caller must first rule out a live consumer holding the
    same claim."""
    cdef uint64_t pos = claim - 1
    cdef fp_cell *cell = &_cells(r)[pos & r.mask]
    if claim == 0:
        return 0
    if fp_load_u64_acquire(&r.dequeue_pos) <= pos:
        return 0            # its CAS never happened
    if _seq(cell, pos & r.mask) != pos + 1:
        return 0            # released: copied and recorded, or someone else's
    out.seq = pos
    out.slot = cell.slot
    out.kind = cell.kind
    out.a = cell.a
    out.b = cell.b
    fp_ring_release_cell(r, pos)
    return 1

cdef int fp_ring_recover_push(fp_ring *r, uint64_t claim, const fp_cell *msg) noexcept nogil:
    """A dead producer's claim: if it claimed the cell and never published
    it, publish `msg` there instead (1); else 0.  As fp_ring_recover_pop,
    the caller rules out a live producer holding the same claim."""
    cdef uint64_t pos = claim - 1
    cdef fp_cell *cell = &_cells(r)[pos & r.mask]
    if claim == 0 or fp_load_u64_acquire(&r.enqueue_pos) <= pos:
        return 0
    if _seq(cell, pos & r.mask) != pos:
        return 0            # published (or long consumed)
    cell.slot = msg.slot
    cell.kind = msg.kind
    cell.a = msg.a
    cell.b = msg.b
    _set_seq(cell, pos & r.mask, pos + 1)
    return 1

cdef bint fp_ring_empty(fp_ring *r) noexcept nogil:
    # A hint for the park/wake handshake: true when the next cell to pop has
    # not been published.  acquire, like pop, so a true "non-empty" is real.
    cdef uint64_t pos = fp_load_u64_relaxed(&r.dequeue_pos)
    cdef fp_cell *cell = &_cells(r)[pos & r.mask]
    return <int64_t>(_seq(cell, pos & r.mask) - (pos + 1)) < 0


cdef class Ring:
    """A ring over a shared-memory block, for tests and tools.

    The pool uses the fp_ring_* functions directly; this class lets the ring
    be exercised alone, from many threads, with the GIL released around the
    native loops.
    """
    cdef object _shm
    cdef object _view
    cdef fp_ring *_r
    cdef readonly uint64_t capacity

    def __cinit__(self, uint64_t capacity):
        if capacity < 2 or (capacity & (capacity - 1)):
            raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")
        from multiprocessing import shared_memory
        self._shm = shared_memory.SharedMemory(create=True, size=fp_ring_bytes(capacity))
        self._view = self._shm.buf
        cdef unsigned char[::1] mv = self._view
        self._r = <fp_ring *>&mv[0]
        self.capacity = capacity
        fp_ring_init(self._r, capacity)

    def close(self):
        if self._shm is not None:
            self._r = NULL
            self._view.release()
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    cdef fp_ring *_ring(self) except NULL:
        if self._r == NULL:
            raise ValueError("ring is closed")
        return self._r

    def push(self, int64_t value):
        """Push one value; False when the ring is full."""
        cdef fp_cell c
        c.slot = 0
        c.kind = 0
        c.a.i = value
        c.b.i = 0
        return fp_ring_push(self._ring(), &c) == FP_OK

    def pop(self):
        """Pop one value; None when the ring is empty."""
        cdef fp_cell c
        if fp_ring_pop(self._ring(), &c) == FP_OK:
            return c.a.i
        return None

    def push_range(self, int64_t start, int64_t stop):
        """Push start..stop-1 without the GIL, retrying while full."""
        cdef fp_ring *r = self._ring()
        cdef fp_cell c
        cdef int64_t v
        c.slot = 0
        c.kind = 0
        c.b.i = 0
        with nogil:
            v = start
            while v < stop:
                c.a.i = v
                if fp_ring_push(r, &c) == FP_OK:
                    v += 1
                else:
                    fp_yield()      # more threads than cores: let a consumer run

    def pop_into(self, int64_t[::1] out, int64_t[::1] done):
        """Pop values into out[] without the GIL until the shared counter
        done[0] (one per value popped, by all consumers) reaches len(out).
        Returns how many this call popped; they land at out[0:n]."""
        cdef fp_ring *r = self._ring()
        cdef fp_cell c
        cdef Py_ssize_t n = 0, total = out.shape[0]
        cdef int64_t *counter = &done[0]
        with nogil:
            while fp_load_i64_acquire(counter) < total:
                if fp_ring_pop(r, &c) == FP_OK:
                    out[n] = c.a.i
                    n += 1
                    fp_add_i64_acq_rel(counter, 1)
                else:
                    fp_yield()      # more threads than cores: let a producer run
        return n
