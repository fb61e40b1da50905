# Bounded lock-free MPMC ring of fixed-size cells over caller-owned memory.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

ctypedef union fp_word:
    int64_t i
    uint64_t u
    double d

# One 32-byte cell.  `seq` is the ring's own sequence word; the rest is the
# message: a task (slot, kind, two operands) or a result (slot, status, value).
ctypedef struct fp_cell:
    uint64_t seq
    uint32_t slot
    uint32_t kind
    fp_word a
    fp_word b

# Lives at the start of the ring's region of the shared block.  Positions
# sit on their own cache lines so producers and consumers do not false-share.
ctypedef struct fp_ring:
    uint64_t mask            # capacity - 1; capacity is a power of two
    uint64_t cells_offset    # from the ring header, never a pointer
    uint8_t _pad0[48]
    uint64_t enqueue_pos     # next position a producer claims
    uint8_t _pad1[56]
    uint64_t dequeue_pos     # next position a consumer claims
    uint8_t _pad2[56]

cdef enum:
    FP_OK = 0
    FP_FULL = 1
    FP_EMPTY = 2

cdef size_t fp_ring_bytes(uint64_t capacity) noexcept nogil
cdef void fp_ring_init(fp_ring *r, uint64_t capacity) noexcept nogil
cdef int fp_ring_push(fp_ring *r, const fp_cell *msg) noexcept nogil
cdef int fp_ring_pop(fp_ring *r, fp_cell *out) noexcept nogil
cdef int fp_ring_push_pos(fp_ring *r, const fp_cell *msg, uint64_t *pos_out, uint64_t *claim) noexcept nogil
cdef int fp_ring_claim_tracked(fp_ring *r, fp_cell *out, uint64_t *claim) noexcept nogil
cdef void fp_ring_release_cell(fp_ring *r, uint64_t pos) noexcept nogil
cdef int fp_ring_recover_pop(fp_ring *r, uint64_t claim, fp_cell *out) noexcept nogil
cdef int fp_ring_recover_push(fp_ring *r, uint64_t claim, const fp_cell *msg) noexcept nogil
cdef bint fp_ring_empty(fp_ring *r) noexcept nogil
