# Three kernels, each registered with fastpool as this module is imported
# (under this module's name, which is how a worker process finds them).
from libc.math cimport sqrt
from libc.stdint cimport int64_t

from fastpool.abi cimport register_function, register_loop


# A function of one element: fastpool calls it for each.
cdef double _norm(double x, double y) noexcept nogil:
    return sqrt(x * x + y * y)

norm = register_function(__name__, "norm", "f8(f8,f8)", <void *>_norm)


# Integers: i8 operands are int64s, the result is an int.
cdef int64_t _gcd(int64_t a, int64_t b) noexcept nogil:
    if a < 0:
        a = -a
    if b < 0:
        b = -b
    while b:
        a, b = b, a % b
    return a

gcd = register_function(__name__, "gcd", "i8(i8,i8)", <void *>_gcd)


# A loop over a chunk of elements (a numpy-style inner loop): three operand
# arrays and the results, n of each.  The C compiler vectorizes it.
cdef void _lerp(char **args, int64_t n, void *data) noexcept nogil:
    cdef const double *a = <const double *>args[0]
    cdef const double *b = <const double *>args[1]
    cdef const double *t = <const double *>args[2]
    cdef double *out = <double *>args[3]
    cdef int64_t i
    for i in range(n):
        out[i] = a[i] + (b[i] - a[i]) * t[i]

lerp = register_loop(__name__, "lerp", "f8(f8,f8,f8)", _lerp, NULL)
