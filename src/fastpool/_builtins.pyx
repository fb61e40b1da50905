# The built-in kernels.  Each is one block: its scalar function, its array
# loop, its map chunk and its entry in the table (fp_register_kernel, see
# _kernels.pxd).  Adding a kernel is adding a block here: task encoding,
# the engine, the worker loop and map() run every kernel from its entry.
#
# A task's result is Python's own arithmetic on its operands: ints exact at
# any size (int64 operands give a 128-bit result natively; bigger ones take
# the Python path), floats rounded as Python rounds them (one rounding per
# operation: a * b + c rounds twice, it is never a fused multiply-add; the
# extension is built with -ffp-contract=off), numpy scalars as numpy
# computes them (on the Python path), and arrays elementwise as numpy
# computes them for one element type (integer lanes wrap).
import operator

ctypedef fused fp_lane:
    double
    float
    uint64_t
    uint32_t
    uint16_t
    uint8_t

# Integer lanes compute as unsigned, where C defines the wrapping; lanes
# narrower than int widen to uint32_t first, never to int (whose overflow C
# leaves undefined).
cdef inline fp_lane _lane_add(fp_lane a, fp_lane b) noexcept nogil:
    if fp_lane is uint8_t or fp_lane is uint16_t:
        return <fp_lane>(<uint32_t>a + <uint32_t>b)
    else:
        return a + b

cdef inline fp_lane _lane_mul(fp_lane a, fp_lane b) noexcept nogil:
    if fp_lane is uint8_t or fp_lane is uint16_t:
        return <fp_lane>(<uint32_t>a * <uint32_t>b)
    else:
        return a * b


# -- add: a + b -------------------------------------------------------------

cdef uint32_t _add_scalar(const fp_kernel *e, uint32_t floats, const fp_word *o,
                          fp_word *r) noexcept nogil:
    if floats == 0:
        fp_add_i128(o[0].i, o[1].i, &r[0].i, &r[1].i)
        return R_INT
    r[0].d = fp_as_double(floats, o, 0) + fp_as_double(floats, o, 1)
    return R_FLOAT

cdef inline void _add_lanes(const fp_job *j, int64_t lo, int64_t hi, fp_lane *out) noexcept nogil:
    cdef const fp_lane *a = <const fp_lane *>j.a
    cdef const fp_lane *b = <const fp_lane *>j.b
    cdef int64_t i
    for i in range(lo, hi):
        out[i] = _lane_add(a[i], b[i])

cdef void _add_array(const fp_kernel *e, const fp_job *j, int64_t lo, int64_t hi) noexcept nogil:
    cdef int32_t t = j.dtype & ~DT_SIGNED
    if t == DT_F64:
        _add_lanes(j, lo, hi, <double *>j.out)
    elif t == DT_F32:
        _add_lanes(j, lo, hi, <float *>j.out)
    elif t == DT_I64:
        _add_lanes(j, lo, hi, <uint64_t *>j.out)
    elif t == DT_I32:
        _add_lanes(j, lo, hi, <uint32_t *>j.out)
    elif t == DT_I16:
        _add_lanes(j, lo, hi, <uint16_t *>j.out)
    else:
        _add_lanes(j, lo, hi, <uint8_t *>j.out)

cdef void _add_map(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil:
    fp_map_encode(e, j, k, 2, _add_scalar)

add = fp_register_kernel("add", 2, _add_scalar, _add_array, _add_map, operator.add, None, True)


# -- mul: a * b -------------------------------------------------------------

cdef uint32_t _mul_scalar(const fp_kernel *e, uint32_t floats, const fp_word *o,
                          fp_word *r) noexcept nogil:
    if floats == 0:
        fp_mul_i128(o[0].i, o[1].i, &r[0].i, &r[1].i)
        return R_INT
    r[0].d = fp_as_double(floats, o, 0) * fp_as_double(floats, o, 1)
    return R_FLOAT

cdef inline void _mul_lanes(const fp_job *j, int64_t lo, int64_t hi, fp_lane *out) noexcept nogil:
    cdef const fp_lane *a = <const fp_lane *>j.a
    cdef const fp_lane *b = <const fp_lane *>j.b
    cdef int64_t i
    for i in range(lo, hi):
        out[i] = _lane_mul(a[i], b[i])

cdef void _mul_array(const fp_kernel *e, const fp_job *j, int64_t lo, int64_t hi) noexcept nogil:
    cdef int32_t t = j.dtype & ~DT_SIGNED
    if t == DT_F64:
        _mul_lanes(j, lo, hi, <double *>j.out)
    elif t == DT_F32:
        _mul_lanes(j, lo, hi, <float *>j.out)
    elif t == DT_I64:
        _mul_lanes(j, lo, hi, <uint64_t *>j.out)
    elif t == DT_I32:
        _mul_lanes(j, lo, hi, <uint32_t *>j.out)
    elif t == DT_I16:
        _mul_lanes(j, lo, hi, <uint16_t *>j.out)
    else:
        _mul_lanes(j, lo, hi, <uint8_t *>j.out)

cdef void _mul_map(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil:
    fp_map_encode(e, j, k, 2, _mul_scalar)

mul = fp_register_kernel("mul", 2, _mul_scalar, _mul_array, _mul_map, operator.mul, None, True)


# -- fma: a * b + c ---------------------------------------------------------
#
# As Python evaluates it: a * b first (an exact int when both are ints),
# then + c; each step rounded once when it is a float.

cdef uint32_t _fma_scalar(const fp_kernel *e, uint32_t floats, const fp_word *o,
                          fp_word *r) noexcept nogil:
    if floats == 0:
        fp_fma_i128(o[0].i, o[1].i, o[2].i, &r[0].i, &r[1].i)
        return R_INT
    if floats == 4:
        # int * int + float: the exact product, rounded once, plus c
        r[0].d = fp_mul_i128_to_double(o[0].i, o[1].i) + o[2].d
    else:
        r[0].d = fp_as_double(floats, o, 0) * fp_as_double(floats, o, 1) + fp_as_double(floats, o, 2)
    return R_FLOAT

cdef inline void _fma_lanes(const fp_job *j, int64_t lo, int64_t hi, fp_lane *out) noexcept nogil:
    cdef const fp_lane *a = <const fp_lane *>j.a
    cdef const fp_lane *b = <const fp_lane *>j.b
    cdef const fp_lane *c = <const fp_lane *>j.c
    cdef int64_t i
    for i in range(lo, hi):
        out[i] = _lane_add(_lane_mul(a[i], b[i]), c[i])

cdef void _fma_array(const fp_kernel *e, const fp_job *j, int64_t lo, int64_t hi) noexcept nogil:
    cdef int32_t t = j.dtype & ~DT_SIGNED
    if t == DT_F64:
        _fma_lanes(j, lo, hi, <double *>j.out)
    elif t == DT_F32:
        _fma_lanes(j, lo, hi, <float *>j.out)
    elif t == DT_I64:
        _fma_lanes(j, lo, hi, <uint64_t *>j.out)
    elif t == DT_I32:
        _fma_lanes(j, lo, hi, <uint32_t *>j.out)
    elif t == DT_I16:
        _fma_lanes(j, lo, hi, <uint16_t *>j.out)
    else:
        _fma_lanes(j, lo, hi, <uint8_t *>j.out)

cdef void _fma_map(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil:
    fp_map_encode(e, j, k, 3, _fma_scalar)

def _fma(a, b, c):
    return a * b + c

fma = fp_register_kernel("fma", 3, _fma_scalar, _fma_array, _fma_map, _fma, None, True)


# -- mandelbrot: the escape count of the point (a, b) ---------------------------
#
# A compute-bound kernel: up to 256 steps (FP_MANDELBROT_LIMIT) of
# z = z*z + c, with c = a + b*i and z from 0, each a handful of dependent
# floating-point operations, per element.  Its result is the number of steps
# after which |z| > 2 first holds, or 256 if it never does (the point is
# taken to be in the set).  Typed, "i8(f8,f8)": the operands are converted
# to doubles as float(x) converts them, arrays are float64 and the result
# int64.  The same steps in Python (or numpy, elementwise) give the same
# count: each operation is rounded once, as there.

cdef enum:
    FP_MANDELBROT_LIMIT = 256

cdef inline int64_t _escape(double x, double y) noexcept nogil:
    cdef double zr = 0.0, zi = 0.0, zr2, zi2
    cdef int64_t n
    for n in range(FP_MANDELBROT_LIMIT):
        zr2 = zr * zr
        zi2 = zi * zi
        if zr2 + zi2 > 4.0:
            return n
        zi = 2.0 * zr * zi + y
        zr = zr2 - zi2 + x
    return FP_MANDELBROT_LIMIT

cdef uint32_t _mandelbrot_scalar(const fp_kernel *e, uint32_t floats, const fp_word *o,
                                 fp_word *r) noexcept nogil:
    r[0].i = _escape(fp_as_double(floats, o, 0), fp_as_double(floats, o, 1))
    r[1].i = 0
    return R_INT

cdef void _mandelbrot_array(const fp_kernel *e, const fp_job *j, int64_t lo, int64_t hi) noexcept nogil:
    cdef const double *x = <const double *>j.a
    cdef const double *y = <const double *>j.b
    cdef int64_t *out = <int64_t *>j.out
    cdef int64_t i
    for i in range(lo, hi):
        out[i] = _escape(x[i], y[i])

cdef void _mandelbrot_map(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil:
    fp_map_encode(e, j, k, 2, _mandelbrot_scalar)

mandelbrot = fp_register_kernel("mandelbrot", 2, _mandelbrot_scalar, _mandelbrot_array,
                                _mandelbrot_map, None, "i8(f8,f8)")
MANDELBROT_LIMIT = FP_MANDELBROT_LIMIT


fp_seal_builtins()
