# Typed kernels: a user's native function or loop in the kernel table.
#
# One set of table functions serves every typed kernel (as numpy's ufunc
# machinery serves every inner loop): each gets the kernel's entry, whose
# `loop` runs over n elements and whose `data` is what that loop needs.
#
#   scalar task    fp_typed_scalar: the operands as doubles or int64s into
#                  locals, loop(args, 1, data)
#   array chunk    fp_typed_array: loop(args, stop - start, data) on the chunk
#   map chunk      fp_map_encode with fp_typed_scalar
#
# The loop is either the user's own (registered through fastpool/abi.pxd)
# or, for a C function of one element (fastpool.kernels.cfunc, abi.pxd's
# register_function), one of the `_each_*` loops below, which call it once
# per element with `data` as its address.
#
# Every element of a typed kernel is 8 bytes: f8 is a double, i8 an int64.
from cpython.pycapsule cimport PyCapsule_New


cdef uint32_t fp_typed_scalar(const fp_kernel *e, uint32_t floats, const fp_word *o,
                              fp_word *r) noexcept nogil:
    cdef fp_word x[FP_MAX_OPERANDS + 1]     # the operands, then the result
    cdef char *args[FP_MAX_OPERANDS + 1]
    cdef int i, n = e.nops
    for i in range(n):
        if e.takes == FP_TAKES_F8:
            x[i].d = fp_as_double(floats, o, i)
        elif floats & (1u << i):
            # A float for int64 operands (an item of a map): "beyond 64
            # bits", so that the map leaves it to the kernel, which raises.
            r[0].i = 0
            r[1].i = 1
            return R_INT
        else:
            x[i].i = o[i].i
        args[i] = <char *>&x[i]
    args[n] = <char *>&x[n]
    e.loop(args, 1, e.data)
    if e.out_dtype == DT_F64:
        r[0].d = x[n].d
        return R_FLOAT
    r[0].i = x[n].i
    r[1].i = x[n].i >> 63        # the int64 result, sign-extended to 128 bits
    return R_INT

cdef void fp_typed_array(const fp_kernel *e, const fp_job *j, int64_t lo, int64_t hi) noexcept nogil:
    cdef char *args[FP_MAX_OPERANDS + 1]
    args[0] = j.a + lo * 8
    args[1] = j.b + lo * 8
    if e.nops > 2:
        args[2] = j.c + lo * 8
    args[e.nops] = j.out + lo * 8
    e.loop(args, hi - lo, e.data)

cdef void fp_typed_map(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil:
    fp_map_encode(e, j, k, e.nops, fp_typed_scalar)


# -- one C function per element ----------------------------------------------
#
# _each_R_OO(O): results of type R from two (or three) operands of type O,
# one call of the function per element.  Four calls before their four
# stores: the calls' overhead overlaps (a quarter less time per element
# than one call and its store at a time).  Out may be an operand exactly:
# element i is stored after operands i..i+3 are read, and only element i
# of each is.

ctypedef fused fp_res8:
    double
    int64_t

ctypedef fused fp_op8:
    double
    int64_t

cdef inline void _each2(fp_res8 *out, const fp_op8 *a, const fp_op8 *b, int64_t n,
                        void *fn) noexcept nogil:
    cdef fp_res8 (*f)(fp_op8, fp_op8) noexcept nogil
    f = <fp_res8 (*)(fp_op8, fp_op8) noexcept nogil>fn
    cdef fp_res8 r0, r1, r2, r3
    cdef int64_t i = 0
    while i + 4 <= n:
        r0 = f(a[i], b[i])
        r1 = f(a[i + 1], b[i + 1])
        r2 = f(a[i + 2], b[i + 2])
        r3 = f(a[i + 3], b[i + 3])
        out[i] = r0
        out[i + 1] = r1
        out[i + 2] = r2
        out[i + 3] = r3
        i += 4
    while i < n:
        out[i] = f(a[i], b[i])
        i += 1

cdef inline void _each3(fp_res8 *out, const fp_op8 *a, const fp_op8 *b, const fp_op8 *c, int64_t n,
                        void *fn) noexcept nogil:
    cdef fp_res8 (*f)(fp_op8, fp_op8, fp_op8) noexcept nogil
    f = <fp_res8 (*)(fp_op8, fp_op8, fp_op8) noexcept nogil>fn
    cdef fp_res8 r0, r1, r2, r3
    cdef int64_t i = 0
    while i + 4 <= n:
        r0 = f(a[i], b[i], c[i])
        r1 = f(a[i + 1], b[i + 1], c[i + 1])
        r2 = f(a[i + 2], b[i + 2], c[i + 2])
        r3 = f(a[i + 3], b[i + 3], c[i + 3])
        out[i] = r0
        out[i + 1] = r1
        out[i + 2] = r2
        out[i + 3] = r3
        i += 4
    while i < n:
        out[i] = f(a[i], b[i], c[i])
        i += 1

cdef void _each_f8_f8f8(char **args, int64_t n, void *fn) noexcept nogil:
    _each2(<double *>args[2], <const double *>args[0], <const double *>args[1], n, fn)

cdef void _each_f8_f8f8f8(char **args, int64_t n, void *fn) noexcept nogil:
    _each3(<double *>args[3], <const double *>args[0], <const double *>args[1],
           <const double *>args[2], n, fn)

cdef void _each_i8_i8i8(char **args, int64_t n, void *fn) noexcept nogil:
    _each2(<int64_t *>args[2], <const int64_t *>args[0], <const int64_t *>args[1], n, fn)

cdef void _each_i8_i8i8i8(char **args, int64_t n, void *fn) noexcept nogil:
    _each3(<int64_t *>args[3], <const int64_t *>args[0], <const int64_t *>args[1],
           <const int64_t *>args[2], n, fn)

cdef void _each_i8_f8f8(char **args, int64_t n, void *fn) noexcept nogil:
    _each2(<int64_t *>args[2], <const double *>args[0], <const double *>args[1], n, fn)

cdef void _each_i8_f8f8f8(char **args, int64_t n, void *fn) noexcept nogil:
    _each3(<int64_t *>args[3], <const double *>args[0], <const double *>args[1],
           <const double *>args[2], n, fn)

cdef void _each_f8_i8i8(char **args, int64_t n, void *fn) noexcept nogil:
    _each2(<double *>args[2], <const int64_t *>args[0], <const int64_t *>args[1], n, fn)

cdef void _each_f8_i8i8i8(char **args, int64_t n, void *fn) noexcept nogil:
    _each3(<double *>args[3], <const int64_t *>args[0], <const int64_t *>args[1],
           <const int64_t *>args[2], n, fn)

cdef fp_loop_fn _each_loop(str signature) noexcept:
    # (the signature as _signature_parts writes it)
    if signature == "f8(f8,f8)":
        return _each_f8_f8f8
    if signature == "f8(f8,f8,f8)":
        return _each_f8_f8f8f8
    if signature == "i8(i8,i8)":
        return _each_i8_i8i8
    if signature == "i8(i8,i8,i8)":
        return _each_i8_i8i8i8
    if signature == "i8(f8,f8)":
        return _each_i8_f8f8
    if signature == "i8(f8,f8,f8)":
        return _each_i8_f8f8f8
    if signature == "f8(i8,i8)":
        return _each_f8_i8i8
    if signature == "f8(i8,i8,i8)":
        return _each_f8_i8i8i8
    return NULL


cdef Kernel _register_typed(str name, str signature, fp_loop_fn loop, void *data, bint function,
                            bint by_name):
    # `function`: data is a C function of one element; loop is fastpool's.
    signature, result, operands = _signature_parts(signature)
    if function:
        loop = _each_loop(signature)
    return fp_register_kernel(name, len(operands), fp_typed_scalar, fp_typed_array, fp_typed_map,
                              None, signature, False, loop, data, by_name)

def _cfunc_kernel(str name, str signature, size_t address, spec, keep, bint loop=False):
    """A kernel calling the C function at `address` once per element, or,
    with `loop`, the loop at `address` once per chunk (fastpool.kernels.cfunc
    checks the function and makes `spec`, how another process gets it;
    `keep` is what the address needs alive)."""
    if address == 0:
        raise ValueError("cfunc: the function's address is NULL")
    cdef Kernel k
    if loop:
        k = _register_typed(name, signature, <fp_loop_fn>address, NULL, False, False)
    else:
        k = _register_typed(name, signature, NULL, <void *>address, True, False)
    k.spec = spec
    k.keep = keep
    return k


# -- the Cython ABI (fastpool/abi.pxd) ---------------------------------------
#
# A module registers its kernels as it is imported: `module` is its
# __name__, so that a worker process, which imports it by that name, has
# them too (the kernel records say "module").  What abi.pxd reaches
# through the capsule fastpool._core._ABI; a new version of the table only
# appends, and `version` changes only if existing members change.

ctypedef object (*fp_abi_loop_fn)(const char *module, const char *name, const char *signature,
                                  fp_loop_fn loop, void *data)
ctypedef object (*fp_abi_function_fn)(const char *module, const char *name, const char *signature,
                                      void *fn)

ctypedef struct fp_abi_table:
    uint32_t version
    uint32_t size
    fp_abi_loop_fn register_loop
    fp_abi_function_fn register_function

cdef enum:
    FP_ABI_VERSION = 1

cdef object _abi_register(const char *module, const char *name, const char *signature,
                          fp_loop_fn loop, void *data, bint function):
    cdef Kernel k
    mod = module.decode("utf-8")
    short = name.decode("utf-8")
    sig = _signature_parts(signature.decode("utf-8"))[0]
    full = f"{mod}.{short}"
    if (function and data == NULL) or (not function and loop == NULL):
        raise ValueError(f"kernel {full!r}: its {'function' if function else 'loop'} is NULL")
    k = _registry.get(full)
    if k is not None:
        # Registered again (the module was imported again): the same kernel.
        if (k.signature == sig and k.entry.data == data
                and k.entry.loop == (_each_loop(sig) if function else loop)):
            return k
        raise ValueError(f"a kernel named {full!r} exists already")
    k = _register_typed(full, sig, loop, data, function, True)
    k.spec = ("module", mod, short, sig)
    return k

cdef object _abi_register_loop(const char *module, const char *name, const char *signature,
                               fp_loop_fn loop, void *data):
    return _abi_register(module, name, signature, loop, data, False)

cdef object _abi_register_function(const char *module, const char *name, const char *signature,
                                   void *fn):
    return _abi_register(module, name, signature, NULL, fn, True)

cdef fp_abi_table fp_abi
fp_abi.version = FP_ABI_VERSION
fp_abi.size = sizeof(fp_abi_table)
fp_abi.register_loop = _abi_register_loop
fp_abi.register_function = _abi_register_function
_ABI = PyCapsule_New(<void *>&fp_abi, b"fastpool._core._ABI", NULL)
