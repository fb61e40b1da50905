# The native map(kernel, items), for any kernel whose entry has a map_chunk.
#
#   caller (holds the GIL throughout)               helpers (workers, no GIL)
#   ---------------------------------               -------------------------
#   MapJob(n, kernel): allocate (the last point
#     where a collection, hence Python code, may run)
#   open(items): borrow the items' array
#   post helper cells (K_BATCH) ----------------->  fp_map_help: claim chunk k,
#   run(): claim chunks too, encode each and turn     read its items, compute,
#     it into result objects at once; turn the        store results and tags,
#     helpers' finished chunks into objects; wait     mark it C_ENCODED; until no chunk
#     only when every chunk is claimed and none       is left.  The last helper's
#     is ready                                        result cell frees the slot
#   NativeMap hands the objects out in order          (dispatcher)
#
# Helpers read Python objects without the GIL.  That is sound because the
# caller holds the GIL from open() until every claimed chunk is finished and
# runs no Python code meanwhile: it allocates only ints and floats (which
# never start a collection, so no finalizer runs) and never releases the GIL.
# No other thread can change or free the list, its items, or their operands
# while the helpers look, and the helpers only read (includes/pyread.h): an
# exact tuple's items, an exact int's or float's value.  They never touch a
# reference count.  A helper cell that a worker pops after run() has returned
# finds no chunk left to claim and touches no Python object.  (So helpers
# must be threads of this process: a pool of worker processes would post
# none.)
#
# An item that is not a tuple of the kernel's arity of exact ints (within
# int64) and floats, or whose int result does not fit 64 bits, is kept,
# with a reference, and computed by kernel(item) when the consumer reaches
# it: big ints, subclasses, mappings, arrays and bad tasks keep exactly the
# kernel's semantics and raise at their position.
from libc.stdlib cimport malloc, free as c_free
from libc.string cimport memset

cdef extern from "Python.h":
    # With the GIL: new references, NULL (and an error set) on failure.
    PyObject *_new_int "PyLong_FromLongLong"(long long v)
    PyObject *_new_float "PyFloat_FromDouble"(double v)
    PyObject **_items_of "PySequence_Fast_ITEMS"(object seq)
    void _incref "Py_INCREF"(PyObject *o)
    void _decref "Py_DECREF"(PyObject *o)

cdef extern from *:
    """
    /* Move the reference out of *slot: the caller owns it, the slot is cleared. */
    static inline PyObject *fp_map_take(PyObject **slot) {
        PyObject *o = *slot;
        *slot = NULL;
        return o;
    }
    """
    object fp_map_take(PyObject **slot)

cdef enum:
    MAP_WAIT_SPIN = 4000   # pause-loops the caller waits for a helper's chunk before sleeping
    MAP_PREFETCH = 16      # items the encoder reads ahead


cdef inline void fp_map_encode(const fp_kernel *e, fp_map_job *j, int64_t k, int nops,
                               fp_scalar_fn scalar) noexcept nogil:
    """Chunk k of a map job: compute each plain item with `scalar`, tag
    everything else for later.  Each kernel's map_chunk calls this with its
    entry, its arity and its scalar function (constants the compiler
    inlines, for a built-in)."""
    cdef int64_t i, lo = k * MAP_CHUNK, hi = min(lo + MAP_CHUNK, j.n)
    cdef PyObject *objs[FP_MAX_OPERANDS]
    cdef fp_word ops[FP_MAX_OPERANDS]
    cdef fp_word res[2]
    cdef uint32_t floats
    cdef int m, km
    cdef uint8_t tag
    for i in range(lo, hi):
        # The items are pointer chases through memory that is rarely in
        # cache: ask for item i + 16 now and its operands at i + 8.
        if i + MAP_PREFETCH < j.n:
            fp_prefetch_item(j.items[i + MAP_PREFETCH])
        if i + MAP_PREFETCH // 2 < j.n:
            fp_prefetch_operands(j.items[i + MAP_PREFETCH // 2], nops)
        tag = M_LATER
        if fp_read_tuple(j.items[i], nops, objs):
            floats = 0
            for m in range(nops):
                km = fp_read_operand(objs[m], &ops[m].i, &ops[m].d)
                if km == FP_READ_OTHER:
                    break
                if km == FP_READ_FLOAT:
                    floats |= 1u << m
            else:
                res[1].i = 0
                if scalar(e, floats, ops, res) == R_FLOAT:
                    j.vals[i].d = res[0].d
                    tag = M_FLOAT
                elif res[1].i == (res[0].i >> 63):
                    j.vals[i].i = res[0].i
                    tag = M_INT     # else the exact result needs Python's ints (or
                                    # the kernel does not take these operands)
        j.tags[i] = tag

cdef inline int64_t _claim(fp_map_job *j) noexcept nogil:
    return fp_add_i64_acq_rel(&j.next_chunk, 1) - 1

cdef void _wait_chunk(fp_map_job *j, int64_t k) noexcept nogil:
    # The caller (GIL held, on purpose) waits for a chunk a helper holds.
    # It may return early: the caller looks again.  Dekker pair with
    # fp_map_help: store `waiting`, read `progress` / bump `progress`, read
    # `waiting`; one of the two sees the other.
    cdef int i
    cdef uint32_t seen
    for i in range(MAP_WAIT_SPIN):
        if fp_load_u32_acquire(&j.state[k]) != C_FREE:
            return
        fp_cpu_relax()
    fp_store_u32_seq_cst(&j.waiting, 1)
    seen = fp_load_u32_seq_cst(&j.progress)
    if fp_load_u32_seq_cst(&j.state[k]) == C_FREE:
        fp_futex_wait(&j.progress, seen)
    fp_store_u32_seq_cst(&j.waiting, 0)

cdef void fp_map_help(fp_map_job *j) noexcept nogil:
    """A worker's share of a job: chunks until none is left."""
    cdef int64_t k = _claim(j)
    while k < j.nchunks:
        j.kernel.map_chunk(j.kernel, j, k)
        # Release: whoever sees C_ENCODED sees the chunk's results and tags.
        fp_store_u32_release(&j.state[k], C_ENCODED)
        fp_add_u32_seq_cst(&j.progress, 1)
        if fp_load_u32_seq_cst(&j.waiting):
            fp_futex_wake(&j.progress, 1)
        k = _claim(j)


cdef class MapJob:
    """The items of one map: their results computed, then as objects (or
    the items to compute later), which its NativeMap hands out."""

    def __cinit__(self, Py_ssize_t n, Kernel kernel):
        cdef Py_ssize_t nchunks = (n + MAP_CHUNK - 1) // MAP_CHUNK
        cdef Py_ssize_t state_bytes = (nchunks * sizeof(uint32_t) + 63) & ~63
        self.mem = <char *>malloc(state_bytes + n * sizeof(fp_map_val) + n)
        if self.mem == NULL:
            raise MemoryError()
        memset(self.mem, 0, state_bytes)    # the rest is written before it is read
        self.job.state = <uint32_t *>self.mem
        self.job.vals = <fp_map_val *>(self.mem + state_bytes)
        self.job.tags = <uint8_t *>(self.mem + state_bytes + n * sizeof(fp_map_val))
        self.job.n = n
        self.job.nchunks = nchunks
        self.job.kernel = kernel.entry

    def __dealloc__(self):
        self.release()
        c_free(self.mem)

    cdef void open(self, object items) noexcept:
        # items: a list or tuple of at least n items.  Valid until the caller
        # next runs Python code or releases the GIL.
        self.job.items = _items_of(items)

    cdef int run(self) except -1:
        """The caller's part: returns once every item has its result object
        (or its item, to compute later); only then may Python code run."""
        cdef fp_map_job *j = &self.job
        cdef int64_t dec = 0, k     # chunks below `dec` are decoded
        cdef uint32_t st
        while dec < j.nchunks:
            st = fp_load_u32_acquire(&j.state[dec])
            if st == C_DECODED:
                dec += 1
                continue
            if st == C_ENCODED:
                k = dec
            else:
                k = _claim(j)
                if k < j.nchunks:
                    j.kernel.map_chunk(j.kernel, j, k)
                    j.state[k] = C_ENCODED
                else:
                    # Every chunk is claimed and `dec` is not ready: decode
                    # another that is, else wait for a helper.
                    k = self._encoded_after(dec)
                    if k < 0:
                        _wait_chunk(j, dec)
                        continue
            if not self._decode(k):
                return self._abandon()
        j.items = NULL
        self.filled = j.n
        return 0

    cdef bint _decode(self, int64_t k) noexcept:
        # Objects for chunk k, in place of its results.  Allocates only ints and
        # floats; False (MemoryError set, chunk k left C_ENCODED) on failure.
        cdef fp_map_job *j = &self.job
        cdef int64_t i, lo = k * MAP_CHUNK, hi = min(lo + MAP_CHUNK, j.n)
        cdef PyObject *o
        cdef uint8_t tag
        for i in range(lo, hi):
            tag = j.tags[i]
            if tag == M_INT:
                o = _new_int(j.vals[i].i)
            elif tag == M_FLOAT:
                o = _new_float(j.vals[i].d)
            else:
                o = j.items[i]
                _incref(o)
            if o == NULL:
                while i > lo:
                    i -= 1
                    _decref(j.vals[i].o)
                return False
            j.vals[i].o = o
        j.state[k] = C_DECODED
        return True

    cdef int64_t _encoded_after(self, int64_t dec) noexcept:
        cdef int64_t k, claimed = min(fp_load_i64_acquire(&self.job.next_chunk), self.job.nchunks)
        for k in range(dec + 1, claimed):
            if fp_load_u32_acquire(&self.job.state[k]) == C_ENCODED:
                return k
        return -1

    cdef int _abandon(self) except -1:
        # A result could not be made (MemoryError is set): stop the helpers
        # claiming, wait for the chunks they hold, drop every object made.
        cdef fp_map_job *j = &self.job
        cdef int64_t i, k
        cdef int64_t claimed = min(fp_add_i64_acq_rel(&j.next_chunk, j.nchunks) - j.nchunks, j.nchunks)
        for k in range(claimed):
            while fp_load_u32_acquire(&j.state[k]) == C_FREE:
                _wait_chunk(j, k)
        j.items = NULL
        for k in range(claimed):
            if j.state[k] == C_DECODED:
                for i in range(k * MAP_CHUNK, min((k + 1) * MAP_CHUNK, j.n)):
                    _decref(j.vals[i].o)
                j.state[k] = C_ENCODED
        return -1

    cdef void release(self) noexcept:
        """Drop the results not yet taken (the consumer stopped)."""
        cdef Py_ssize_t i, stop = self.filled
        self.filled = self.pos
        for i in range(self.pos, stop):
            _decref(self.job.vals[i].o)


cdef class NativeMap:
    """The iterator `map(kernel, items)` returns.  Every plain result is
    made before map returns (so `timeout` never expires on one); an item
    kept for later is computed by the kernel when reached, and its error
    raised there, after which iteration stops."""
    cdef MapJob job
    cdef Kernel kernel

    def __dealloc__(self):
        # The job may outlive us (a helper cell not yet completed holds it):
        # let go of its results now.
        if self.job is not None:
            self.job.release()

    def __iter__(self):
        return self

    def __next__(self):
        # self.job is read in place, not into a local: no reference count
        # traffic on the per-item path.
        cdef Py_ssize_t i
        if self.job is None or self.job.pos == self.job.filled:
            self.job = None
            raise StopIteration
        i = self.job.pos
        self.job.pos = i + 1
        if self.job.job.tags[i] != M_LATER:
            return fp_map_take(&self.job.job.vals[i].o)
        return self._later(fp_map_take(&self.job.job.vals[i].o))

    cdef object _later(self, object item):
        try:
            return self.kernel(item)
        except BaseException:
            self.close()
            raise

    def __length_hint__(self):
        return 0 if self.job is None else self.job.filled - self.job.pos

    def close(self):
        """Stop: let go of every result not yet taken."""
        if self.job is not None:
            self.job.release()
            self.job = None
