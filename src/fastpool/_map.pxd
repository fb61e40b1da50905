# The native map(kernel, items): the items read, computed and turned back
# into Python objects by the calling thread and idle workers together.
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, int64_t

cdef struct fp_kernel         # the kernel table's entry (_kernels.pxd)

ctypedef union fp_map_val:
    int64_t i            # an int result (of int64 operands) that fits 64 bits
    double d             # a float result
    PyObject *o          # then: the result object, or the item to compute later

ctypedef struct fp_map_job:
    PyObject **items     # the input's items (borrowed; see _map.pyx)
    int64_t n
    int64_t nchunks
    int64_t next_chunk   # chunks claimed so far (fetch-and-add; may pass nchunks)
    uint32_t progress    # futex word: bumped each time a helper finishes a chunk
    uint32_t waiting     # the caller sleeps on `progress`
    uint32_t *state      # per chunk: C_FREE, C_ENCODED, C_DECODED
    fp_map_val *vals     # per item
    uint8_t *tags        # per item: M_INT, M_FLOAT or M_LATER
    # the kernel: its entry's map_chunk computes chunk k's items
    const fp_kernel *kernel

cdef enum:
    M_LATER = 0          # kernel(item) when the consumer reaches it
    M_INT = 1
    M_FLOAT = 2

    C_FREE = 0           # not claimed yet, or being encoded
    C_ENCODED = 1        # results and tags written (release)
    C_DECODED = 2        # result objects written (caller only)

    MAP_CHUNK = 2048     # items per claim

cdef void fp_map_help(fp_map_job *j) noexcept nogil

cdef class MapJob:
    cdef fp_map_job job
    cdef char *mem
    cdef Py_ssize_t pos        # the next result the consumer takes
    cdef Py_ssize_t filled     # vals[pos:filled] are objects this job owns

    cdef void open(self, object items) noexcept
    cdef int run(self) except -1
    cdef bint _decode(self, int64_t k) noexcept
    cdef int64_t _encoded_after(self, int64_t dec) noexcept
    cdef int _abandon(self) except -1
    cdef void release(self) noexcept
