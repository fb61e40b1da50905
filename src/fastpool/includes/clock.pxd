from libc.stdint cimport uint64_t

cdef extern from "clock.h" nogil:
    uint64_t fp_now_ns()
    unsigned fp_log2_bucket(uint64_t ns)
