/*
 * Exact integer arithmetic for the built-in kernels: int64 operands, an
 * exact result as a 128-bit two's complement split in two words (low, high),
 * which Python turns into an int of any size.  The products and sums of
 * int64 operands that the kernels make always fit 128 bits:
 * |a * b + c| <= 2**126 + 2**63 < 2**127.
 */
#ifndef FASTPOOL_ARITH_H
#define FASTPOOL_ARITH_H

#include <stdint.h>

static inline void fp_i128_split(__int128 v, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)(uint64_t)v;         /* the low word, as a signed word */
    *hi = (int64_t)(v >> 64);           /* GCC: >> of a signed value is arithmetic */
}

/* The common case first, in 64 bits: then the high word is the low word's
 * sign, which a caller that inlines this sees without comparing. */
static inline void fp_add_i128(int64_t a, int64_t b, int64_t *lo, int64_t *hi) {
    if (__builtin_add_overflow(a, b, lo))
        fp_i128_split((__int128)a + b, lo, hi);
    else
        *hi = *lo >> 63;
}

static inline void fp_mul_i128(int64_t a, int64_t b, int64_t *lo, int64_t *hi) {
    if (__builtin_mul_overflow(a, b, lo))
        fp_i128_split((__int128)a * b, lo, hi);
    else
        *hi = *lo >> 63;
}

static inline void fp_fma_i128(int64_t a, int64_t b, int64_t c, int64_t *lo, int64_t *hi) {
    fp_i128_split((__int128)a * b + c, lo, hi);
}

/* Python's float(a * b) for int64 a and b: the exact product, rounded once
 * to the nearest double (ties to even), as int.__float__ rounds. */
static inline double fp_mul_i128_to_double(int64_t a, int64_t b) {
    return (double)((__int128)a * b);
}

#endif
