from libc.stdint cimport int64_t

cdef extern from "arith.h" nogil:
    void fp_add_i128(int64_t a, int64_t b, int64_t *lo, int64_t *hi)
    void fp_mul_i128(int64_t a, int64_t b, int64_t *lo, int64_t *hi)
    void fp_fma_i128(int64_t a, int64_t b, int64_t c, int64_t *lo, int64_t *hi)
    double fp_mul_i128_to_double(int64_t a, int64_t b)
