# The kernel table (see _kernels.pxd) and what every kernel shares: reading
# a task into a cell (with the GIL), checking array operands, running a cell
# (without the GIL), and turning a result back into a Python object.  The
# kernels themselves are entries: the built-in ones are in _builtins.pyx.
#
#   a task (mapping, tuple)          its cell.kind                      runs
#   int64s and floats           ->   K_SCALAR | types | kernel     ->   entry.scalar, no GIL
#   other ints and floats       ->   K_PY | kernel (the operands   ->   Kernel.py_op, with the GIL
#   (big ints, numpy scalars)        in the slot)
#   arrays (and an "out")       ->   K_ARRAY | kernel, a cell      ->   entry.array, no GIL
#                                    per chunk
#   anything else               ->   K_FAIL (its exception in the slot)
#
# A typed kernel (a signature such as "f8(f8,f8)": cfunc kernels, those
# registered through fastpool/abi.pxd, mandelbrot) takes no Python path:
# its operands are converted to doubles (as float(x) does) or must be
# int64s as they are read, and its arrays have its element types.
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer,
                             PyBuffer_IsContiguous, PyBUF_RECORDS, PyBUF_RECORDS_RO)
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
import os
import sys

# The table.  An entry never moves or changes once registered, and the same
# kernels are registered in the same order in every process that imports
# fastpool, so an index in a cell means the same kernel to a worker process.
cdef fp_kernel fp_kernels[FP_MAX_KERNELS]
cdef PyObject *fp_kernel_objs[FP_MAX_KERNELS]   # each entry's Kernel (held by _kernels_made)
cdef int32_t fp_n_kernels = 0
cdef int32_t fp_n_builtins = 0                    # kernels [0, fp_n_builtins) are _builtins.pyx's
cdef fp_kernel fp_kernel_missing                  # a worker process could not load the kernel
cdef dict _registry = {}                          # name -> Kernel (built-ins, registered by module)
cdef list _kernels_made = []                      # every Kernel: entries live as long as the process
cdef object _MAKING = object()                    # only fp_register_kernel makes a Kernel

cdef tuple _NAMES = ("a", "b", "c")

cdef str _listed(tuple names):
    # 'a' and 'b' / 'a', 'b' and 'c'
    return _and([repr(x) for x in names])

cdef str _and(list words):
    # (no negative indexes: the module is compiled with wraparound=False)
    cdef Py_ssize_t last = len(words) - 1
    return words[0] if last == 0 else ", ".join(words[:last]) + " and " + words[last]

cdef inline Kernel fp_kernel_of(uint32_t kind):
    return <Kernel>fp_kernel_objs[(kind >> K_KERNEL_SHIFT) & (FP_MAX_KERNELS - 1)]

cdef inline Kernel _kernel_at(int32_t index):
    return <Kernel>fp_kernel_objs[index]


cdef class ArrayTask:
    """The buffers of one array task, held until the task completes."""
    cdef Py_buffer v[FP_MAX_OPERANDS]     # the inputs: v[0 .. held) are held
    cdef Py_buffer vo
    cdef int nops
    cdef int held
    cdef bint ho
    cdef readonly object result
    cdef int32_t dtype
    cdef int64_t n

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        while self.held:
            self.held -= 1
            PyBuffer_Release(&self.v[self.held])
        if self.ho:
            PyBuffer_Release(&self.vo)
            self.ho = False

    cdef void fill_job(self, fp_job *job) noexcept:
        job.a = <char *>self.v[0].buf
        job.b = <char *>self.v[1].buf
        job.c = <char *>self.v[2].buf if self.nops > 2 else NULL
        job.out = <char *>self.vo.buf
        job.n = self.n
        job.dtype = self.dtype


cdef int32_t _dtype_of(Py_buffer *v) noexcept:
    """The element type of a 1-element-format buffer: DT_* | signedness bit,
    or 0 when unsupported.  Integers of one width compute alike whatever
    their sign (wrapping), but the operands must still agree on the sign."""
    cdef const char *f = v.format
    cdef char code
    if f == NULL:
        f = b"B"                # the buffer protocol's default: unsigned bytes
    if f[0] == b'@' or f[0] == b'=' or f[0] == b'<':
        # '<' is native only on little-endian machines, which is all we run on.
        f += 1
    if f[0] == 0 or f[1] != 0:
        return 0
    code = f[0]
    if code == b'd' and v.itemsize == 8:
        return DT_F64
    if code == b'f' and v.itemsize == 4:
        return DT_F32
    if code in b'bhilqn':
        return _int_dtype(v.itemsize) | DT_SIGNED
    if code in b'BHILQN':
        return _int_dtype(v.itemsize)
    return 0

cdef inline int32_t _int_dtype(Py_ssize_t size) noexcept:
    if size == 1:
        return DT_I8
    if size == 2:
        return DT_I16
    if size == 4:
        return DT_I32
    if size == 8:
        return DT_I64
    return 0

cdef str _format(Py_buffer *v):
    return "B" if v.format == NULL else (<bytes>v.format).decode("ascii", "replace")

cdef tuple _shape(Py_buffer *v):
    cdef int i
    return tuple([v.shape[i] for i in range(v.ndim)])

cdef bint _same_shape(Py_buffer *x, Py_buffer *y) noexcept:
    # Both were asked for with their shape (PyBUF_STRIDES implies PyBUF_ND).
    cdef int i
    if x.ndim != y.ndim:
        return False
    for i in range(x.ndim):
        if x.shape[i] != y.shape[i]:
            return False
    return True

cdef bint _overlap(Py_buffer *x, Py_buffer *y) noexcept:
    cdef char *p = <char *>x.buf
    cdef char *q = <char *>y.buf
    return x.len > 0 and y.len > 0 and p < q + y.len and q < p + x.len

cdef object _acquire(str what, object x, Py_buffer *v, str name, bint writable):
    """Get x's buffer into v (strided, with its format); None, or the
    exception saying why x cannot be this operand."""
    try:
        PyObject_GetBuffer(x, v, PyBUF_RECORDS if writable else PyBUF_RECORDS_RO)
        return None
    except Exception as e:
        cause = e
    if writable:
        try:
            PyObject_GetBuffer(x, v, PyBUF_RECORDS_RO)
        except Exception:
            pass
        else:
            PyBuffer_Release(v)
            err = ValueError(f"{what}: 'out' is read-only ({cause})")
            err.__cause__ = cause
            return err
    err = TypeError(f"{what}: {name!r} cannot be read as an array of a numeric element type "
                    f"({type(cause).__name__}: {cause})")
    err.__cause__ = cause
    return err

cdef object _check_layout(str what, Py_buffer *v, str name, Py_buffer *va):
    """None, or the exception for an operand the kernel cannot read as is:
    an unsupported element type, one other than va's (when va is not
    NULL), or a layout that is not C-contiguous."""
    cdef int32_t own = _dtype_of(v)
    if own == 0:
        fmt = _format(v)
        why = "non-native byte order" if fmt[:1] in (">", "!") else "expected a float or integer type"
        return TypeError(f"{what}: {name!r} has unsupported element type {fmt!r} ({why})")
    if va != NULL and own != _dtype_of(va):
        return TypeError(f"{what}: 'a' and {name!r} have different element types "
                         f"({_format(va)!r} and {_format(v)!r}); the {what} does not convert")
    if not PyBuffer_IsContiguous(v, b'C'):
        return ValueError(f"{what}: {name!r} is not C-contiguous; pass a contiguous copy "
                          "(numpy.ascontiguousarray)")
    return None

cdef object _shape_error(str what, str name, Py_buffer *v, Py_buffer *va):
    if v.ndim == 1 and va.ndim == 1:
        if name == "out":
            return ValueError(f"{what}: 'out' has length {v.shape[0]}, expected {va.shape[0]}")
        return ValueError(f"{what}: 'a' and {name!r} differ in length ({va.shape[0]} != {v.shape[0]})")
    if name == "out":
        return ValueError(f"{what}: 'out' has shape {_shape(v)}, expected {_shape(va)}")
    return ValueError(f"{what}: 'a' and {name!r} differ in shape ({_shape(va)} != {_shape(v)}); "
                      f"the {what} does not broadcast")

cdef str _dtype_name(int32_t dtype):
    return {DT_F64: "float64", DT_I64 | DT_SIGNED: "int64"}.get(dtype, _TYPECODES.get(dtype, "?"))

# array.array typecodes of each element type, for results of non-numpy inputs
cdef dict _TYPECODES = {DT_F64: "d", DT_F32: "f",
                        DT_I8 | DT_SIGNED: "b", DT_I16 | DT_SIGNED: "h",
                        DT_I32 | DT_SIGNED: "i", DT_I64 | DT_SIGNED: "q",
                        DT_I8: "B", DT_I16: "H", DT_I32: "I", DT_I64: "Q"}

cdef object _new_like(str what, object a, Py_buffer *v, int32_t dtype, int32_t out_dtype):
    """A result for `a` (of element type `dtype`): a numpy array of its
    shape when it is a numpy array, else a zeroed array.array (1-D only), of
    element type `out_dtype` (a's own when that is `dtype`); or the exception."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(a, np.ndarray):
        return np.empty(_shape(v), a.dtype if out_dtype == dtype else _TYPECODES[out_dtype])
    if v.ndim != 1:
        return ValueError(f"{what}: 'a' is a {v.ndim}-dimensional {type(a).__name__}, not a numpy "
                          "array: pass an 'out' of its shape for the result")
    import array
    fmt = _format(v).lstrip("@=<")
    if out_dtype == dtype and fmt in array.typecodes and array.array(fmt).itemsize == v.itemsize:
        code = fmt
    else:
        code = _TYPECODES[out_dtype]
    out = array.array(code)
    if v.len:
        out.frombytes(bytes(v.len // v.itemsize * out.itemsize))
    return out

cdef object _array_task(Kernel k, tuple ops, object out):
    """Validate the buffers of ops (and out); return an ArrayTask or an exception.

    The operands and out have one element type, one shape and a
    C-contiguous layout; out is new, or exactly the memory of an operand,
    or apart from all of them.
    """
    cdef ArrayTask t = ArrayTask()
    cdef int i
    cdef str what = k.what
    cdef tuple names = _NAMES[:k.nops]
    ma = sys.modules.get("numpy.ma")       # loaded if any masked array exists
    if ma is not None:
        for name, x in zip(names + ("out",), ops + (out,)):
            if isinstance(x, ma.MaskedArray):
                return TypeError(f"{what}: {name!r} is a numpy masked array; the {what} "
                                 "would ignore its mask (pass plain arrays, e.g. x.filled())")
    t.nops = k.nops
    for i in range(k.nops):
        err = _acquire(what, ops[i], &t.v[i], names[i], False)
        if err is not None:
            return err
        t.held = i + 1
    err = _check_layout(what, &t.v[0], "a", NULL)
    if err is not None:
        return err
    t.dtype = _dtype_of(&t.v[0])
    if k.entry.in_dtype and t.dtype != k.entry.in_dtype:
        return TypeError(f"{what}: 'a' has element type {_format(&t.v[0])!r}; the {what} takes "
                         f"arrays of {_dtype_name(k.entry.in_dtype)} ({k.signature})")
    cdef int32_t out_dtype = k.entry.out_dtype if k.entry.out_dtype else t.dtype
    for i in range(1, k.nops):
        err = _check_layout(what, &t.v[i], names[i], &t.v[0])
        if err is not None:
            return err
        if not _same_shape(&t.v[i], &t.v[0]):
            return _shape_error(what, names[i], &t.v[i], &t.v[0])
    t.n = t.v[0].len // t.v[0].itemsize
    if out is None:
        out = _new_like(what, ops[0], &t.v[0], t.dtype, out_dtype)
        if isinstance(out, Exception):
            return out
    elif not PyObject_CheckBuffer(out):
        return TypeError(f"{what}: 'out' must be a writable numeric buffer, not {type(out).__name__}")
    err = _acquire(what, out, &t.vo, "out", True)
    if err is not None:
        return err
    t.ho = True
    err = _check_layout(what, &t.vo, "out", &t.v[0] if out_dtype == t.dtype else NULL)
    if err is not None:
        return err
    if _dtype_of(&t.vo) != out_dtype:
        return TypeError(f"{what}: 'out' has element type {_format(&t.vo)!r}; the {what} makes "
                         f"{_dtype_name(out_dtype)} ({k.signature})")
    if not _same_shape(&t.vo, &t.v[0]):
        return _shape_error(what, "out", &t.vo, &t.v[0])
    # Each element of out depends on the same element of the operands only,
    # so out may be an operand exactly (in place), in any chunk order; out
    # partly over an operand would read elements already overwritten.
    for i in range(k.nops):
        if _overlap(&t.vo, &t.v[i]) and t.vo.buf != t.v[i].buf:
            return ValueError(f"{what}: 'out' partly overlaps {names[i]!r}; it must be the same "
                              f"memory as an input, or apart from {'both' if k.nops == 2 else 'all of them'}")
    t.result = out
    return t


cdef inline int _scalar(object x, fp_word *w) noexcept:
    """1: int64 in w.i, 2: float in w.d, 3: another int/float (Python path),
    4: a buffer, 0: not an operand."""
    cdef int overflow = 0
    cdef type t = type(x)
    if t is int or t is bool:
        w.i = PyLong_AsLongLongAndOverflow(x, &overflow)
        return 3 if overflow else 1
    if t is float:
        w.d = PyFloat_AS_DOUBLE(x)
        return 2
    return _other_scalar(x)

# (numpy.generic, its bool/int/float types, timedelta64: an "integer" that
# is not a number here) once numpy is loaded
cdef object _numpy_scalar_types = None

cdef int _other_scalar(object x) noexcept:
    # Off the hot path.  A numpy scalar exports a 0-d buffer, but it is a
    # number: numpy's own a + b (its result type, its fixed-width wrapping)
    # on the Python path.  numpy is never imported here: if it is not loaded,
    # x is not one of its scalars.
    global _numpy_scalar_types
    if isinstance(x, (int, float)):
        return 3
    if _numpy_scalar_types is None:
        np = sys.modules.get("numpy")
        if np is not None and hasattr(np, "generic"):
            _numpy_scalar_types = (np.generic, (np.bool_, np.integer, np.floating), np.timedelta64)
    if _numpy_scalar_types is not None and isinstance(x, _numpy_scalar_types[0]):
        if isinstance(x, _numpy_scalar_types[1]) and not isinstance(x, _numpy_scalar_types[2]):
            return 3
        return 0
    if PyObject_CheckBuffer(x) and not isinstance(x, (bytes, bytearray, str)):
        return 4
    return 0

cdef object _bad_operand(str what, str name, object x):
    return TypeError(f"{what}: {name!r} must be an int, a float or a numeric buffer, "
                     f"not {type(x).__name__}")

cdef object fp_encode(int32_t index, object task, fp_cell *c, fp_word *x):
    """Read a task of the kernel at `index` in the table into c, and its
    third operand (if the kernel takes one and it is a number) into x.
    Returns the objects the slot must hold: None for a fully native task,
    the operands for the exact Python path, an ArrayTask for arrays, or the
    exception for a bad task (c.kind K_FAIL)."""
    cdef PyObject *pa
    cdef PyObject *pb
    cdef PyObject *pc = NULL
    cdef object a, b, cc = None, out = None
    cdef int nops = fp_kernels[index].nops
    cdef type t = type(task)
    if t is dict:
        pa = PyDict_GetItem(task, "a")
        pb = PyDict_GetItem(task, "b")
        if nops > 2:
            pc = PyDict_GetItem(task, "c")
        if pa == NULL or pb == NULL or (pc == NULL and nops > 2):
            c.kind = K_FAIL
            return KeyError(f"{_kernel_at(index).what}: task is missing key "
                            f"{'a' if pa == NULL else 'b' if pb == NULL else 'c'!r}")
        a = <object>pa
        b = <object>pb
        if pc != NULL:
            cc = <object>pc
        if len(<dict>task) > nops:
            out = task.get("out")
    elif t is tuple:
        if len(<tuple>task) != nops:
            c.kind = K_FAIL
            return _arity_error(_kernel_at(index), len(<tuple>task))
        a = (<tuple>task)[0]
        b = (<tuple>task)[1]
        if nops > 2:
            cc = (<tuple>task)[2]
    else:
        return _encode_slow(_kernel_at(index), task, c, x)
    return _encode_operands(index, nops, a, b, cc, out, c, x)

cdef object _arity_error(Kernel k, Py_ssize_t n):
    return ValueError(f"{k.what}: a tuple task must be a {k.nops}-tuple ({', '.join(_NAMES[:k.nops])}), "
                      f"not a {n}-tuple")

cdef object _encode_slow(Kernel k, object task, fp_cell *c, fp_word *x):
    # User mappings run Python code here; whatever they raise is this
    # task's error, for its callback, never the submitter's.
    try:
        return _encode_mapping_or_sequence(k, task, c, x)
    except Exception as e:
        c.kind = K_FAIL
        return e

cdef object _encode_mapping_or_sequence(Kernel k, object task, fp_cell *c, fp_word *x):
    from collections.abc import Mapping
    cdef tuple names = _NAMES[:k.nops]
    if isinstance(task, Mapping):
        for name in names:
            if name not in task:
                c.kind = K_FAIL
                return KeyError(f"{k.what}: task is missing key {name!r}")
        return _encode_operands(k.index, k.nops, task["a"], task["b"],
                                task["c"] if k.nops > 2 else None, task.get("out"), c, x)
    if isinstance(task, tuple):
        if len(task) != k.nops:
            c.kind = K_FAIL
            return _arity_error(k, len(task))
        return _encode_operands(k.index, k.nops, task[0], task[1], task[2] if k.nops > 2 else None,
                                None, c, x)
    c.kind = K_FAIL
    return TypeError(f"{k.what}: task must be a mapping with keys {_listed(names)} or a "
                     f"{k.nops}-tuple, not {type(task).__name__}")

cdef inline object _encode_operands(int32_t index, int nops, object a, object b, object cc,
                                    object out, fp_cell *c, fp_word *x):
    # Each operand: 1 int64, 2 float, 3 another int or float, 4 a buffer, 0 bad.
    cdef int ka = _scalar(a, &c.a)
    cdef int kb = _scalar(b, &c.b)
    cdef int kc = _scalar(cc, x) if nops > 2 else 1
    if ka == 1 and kb == 1 and kc == 1 and out is None:
        c.kind = K_SCALAR | <uint32_t>index << K_KERNEL_SHIFT | (K_HAS_C if nops > 2 else 0)
        return None
    return _encode_other(_kernel_at(index), a, b, cc, out, ka, kb, kc, c, x)

cdef object _encode_other(Kernel k, object a, object b, object cc, object out,
                          int ka, int kb, int kc, fp_cell *c, fp_word *x):
    # Not all int64s: floats, the Python path, arrays or a bad task.
    cdef uint32_t kind = K_SCALAR | k.kind_bits | (K_HAS_C if k.nops > 2 else 0)
    c.kind = K_FAIL
    if ka == 0:
        return _bad_operand(k.what, "a", a)
    if kb == 0:
        return _bad_operand(k.what, "b", b)
    if kc == 0:
        return _bad_operand(k.what, "c", cc)
    ops = (a, b) if k.nops == 2 else (a, b, cc)
    if ka == 4 or kb == 4 or kc == 4:
        return _encode_arrays(k, ops, out, (ka, kb, kc), c)
    if out is not None:
        return TypeError(f"{k.what}: 'out' is for array tasks; {_listed(_NAMES[:k.nops])} are "
                         f"numbers ({_listed_types(ops)})")
    if k.entry.takes != FP_TAKES_PYTHON:
        return _encode_typed(k, ops, ka, kb, kc, c, x)
    if ka == 3 or kb == 3 or kc == 3:
        c.kind = K_PY | k.kind_bits
        return ops
    # int64s and floats: the kernel's scalar function applies Python's
    # rules for the mix (see fp_as_double).
    c.kind = kind | <uint32_t>((ka == 2) | (kb == 2) << 1 | (kc == 2) << 2) << K_FLOAT_SHIFT
    return None

cdef object _encode_typed(Kernel k, tuple ops, int ka, int kb, int kc, fp_cell *c, fp_word *x):
    # Numbers for a typed kernel: as doubles (FP_TAKES_F8) or int64s
    # (FP_TAKES_I8), read now; no Python path.
    cdef fp_word *words[FP_MAX_OPERANDS]
    cdef int kinds[FP_MAX_OPERANDS]
    cdef uint32_t floats = 0
    cdef int i
    words[0] = &c.a
    words[1] = &c.b
    words[2] = x
    kinds[0] = ka
    kinds[1] = kb
    kinds[2] = kc
    for i in range(k.nops):
        if kinds[i] == 1:
            continue                # an int64: as it is (the scalar converts it for f8)
        if k.entry.takes == FP_TAKES_F8:
            if kinds[i] == 3:
                try:
                    words[i].d = float(ops[i])
                except OverflowError:
                    return OverflowError(f"{k.what}: {_NAMES[i]!r} is too large to convert to a "
                                         f"float ({k.signature} takes doubles)")
            floats |= 1u << i
        else:
            err = _to_int64(k, i, ops[i], words[i]) if kinds[i] == 3 else None
            if kinds[i] == 2 or err is not None:
                return err if err is not None else _not_int64(k, i, ops[i])
    c.kind = (K_SCALAR | k.kind_bits | (K_HAS_C if k.nops > 2 else 0)
              | floats << K_FLOAT_SHIFT)
    return None

cdef object _not_int64(Kernel k, int i, object x):
    return TypeError(f"{k.what}: {_NAMES[i]!r} must be an int ({k.signature} takes int64 "
                     f"operands), not {type(x).__name__}")

cdef object _to_int64(Kernel k, int i, object x, fp_word *w):
    # An int that is not an exact int64: a big int, an int subclass, a numpy
    # integer or bool.  None (its value in w) or the exception.
    import operator
    try:
        v = operator.index(x)
    except TypeError:
        if type(x).__name__ != "bool" or type(x).__module__ != "numpy":
            return _not_int64(k, i, x)
        v = int(x)          # numpy.bool_, as Python's bool
    if not -(1 << 63) <= v < (1 << 63):
        return OverflowError(f"{k.what}: {_NAMES[i]!r} does not fit int64 ({k.signature} takes "
                             "int64 operands)")
    w.i = v
    return None

cdef str _listed_types(tuple ops):
    return _and([type(x).__name__ for x in ops])

cdef object _encode_arrays(Kernel k, tuple ops, object out, tuple kinds, fp_cell *c):
    c.kind = K_FAIL
    cdef int i
    arrays = [i for i in range(k.nops) if kinds[i] == 4]
    if len(arrays) != k.nops:
        other = next(i for i in range(k.nops) if kinds[i] != 4)
        return TypeError(f"{k.what}: {_NAMES[arrays[0]]!r} is an array, so {_NAMES[other]!r} must be "
                         f"one too, not {type(ops[other]).__name__} (the {k.what} does not broadcast)")
    try:
        r = _array_task(k, ops, out)
    except Exception as e:
        # An exporter or allocation that raises: the task's error, never
        # the submitter's.
        return e
    if not isinstance(r, Exception):
        c.kind = K_ARRAY | k.kind_bits
    return r


# ------------------------------------------------------------ running a task

cdef inline double fp_as_double(uint32_t floats, const fp_word *ops, int i) noexcept nogil:
    """Operand i as Python converts it in int-and-float arithmetic: an int64
    rounded to the nearest double (ties to even), as the C conversion does."""
    return ops[i].d if floats & (1u << i) else <double>ops[i].i

cdef inline void fp_scalar_run(const fp_kernel *e, const fp_cell *t, const fp_word *x,
                               fp_cell *r) noexcept nogil:
    # A scalar task cell (its third operand in *x) into a result cell.
    cdef fp_word ops[FP_MAX_OPERANDS]
    cdef fp_word res[2]
    ops[0] = t.a
    ops[1] = t.b
    if t.kind & K_HAS_C:
        ops[2] = x[0]
    res[1].i = 0
    r.kind = e.scalar(e, (t.kind >> K_FLOAT_SHIFT) & ((1u << FP_MAX_OPERANDS) - 1), ops, res)
    r.a = res[0]
    r.b = res[1]

cdef object fp_int_result(const fp_cell *r):
    # R_INT: the 128-bit two's complement (a: low word, b: high word).
    if r.b.i == (r.a.i >> 63):
        return PyLong_FromLongLong(r.a.i)      # it fits 64 bits
    v = PyLong_FromUnsignedLongLong(r.a.u)
    high = PyLong_FromLongLong(r.b.i)
    return v + (high << 64)

cdef object fp_scalar_result(const fp_cell *r):
    return fp_int_result(r) if r.kind == R_INT else r.a.d


cdef class Kernel:
    """A native kernel: the pool runs it without the GIL.

    Also a plain callable that computes one task in the calling thread.
    Kernels are made by fastpool: the built-ins (fastpool.kernels.add, mul,
    fma, mandelbrot), fastpool.kernels.cfunc, and Cython modules through
    fastpool/abi.pxd.  A kernel pickles as what names it (a built-in's
    name, a library and symbol, a module and name); one made from an
    address cannot be pickled.
    """
    def __cinit__(self, token=None):
        if token is not _MAKING:
            raise TypeError("fastpool kernels are made by fastpool: use fastpool.kernels.add, "
                            "mul, fma, mandelbrot or cfunc")

    def __repr__(self):
        if self.signature is None:
            return f"<fastpool kernel {self.name!r}>"
        return f"<fastpool kernel {self.name!r} {self.signature}>"

    def __reduce__(self):
        spec = self.spec
        if spec is None:
            return (_kernel_by_name, (self.name,))
        if isinstance(spec, str):
            raise TypeError(f"cannot pickle the {self.what}: {spec}")
        if spec[0] == "lib":
            from fastpool.kernels import cfunc
            return (cfunc, ((spec[1], spec[2]), spec[3]))
        if spec[0] == "libloop":
            from fastpool._cfunc import cfunc_loop
            return (cfunc_loop, ((spec[1], spec[2]), spec[3]))
        return (_kernel_from_module, (spec[1], spec[2]))

    def __call__(self, task):
        cdef fp_cell c, r
        cdef fp_word x
        cdef fp_job job
        obj = fp_encode(self.index, task, &c, &x)
        cdef uint32_t base = c.kind & K_BASE_MASK
        if base == K_SCALAR:
            fp_scalar_run(self.entry, &c, &x, &r)
            return fp_scalar_result(&r)
        if base == K_PY:
            return self.py_op(*obj)
        if base == K_ARRAY:
            (<ArrayTask>obj).fill_job(&job)
            with nogil:
                self.entry.array(self.entry, &job, 0, job.n)
            (<ArrayTask>obj).release()
            return (<ArrayTask>obj).result
        raise obj


# Signatures of typed kernels: RESULT(OPERAND, OPERAND[, OPERAND]), each
# f8 (a double) or i8 (an int64), the operands of one type.
cdef dict _SIG_TYPES = {"f8": DT_F64, "i8": DT_I64 | DT_SIGNED}
_SIGNATURE_HELP = ("RESULT(OPERAND,OPERAND[,OPERAND]) with types f8 (double) or i8 (int64), "
                   "the operands of one type: 'f8(f8,f8)', 'i8(i8,i8)', 'f8(f8,f8,f8)', "
                   "'i8(f8,f8)', ...")

def _signature_parts(signature):
    """(the signature written plainly, its result type, its operand types),
    e.g. ("f8(f8,f8)", "f8", ("f8", "f8")); ValueError if fastpool does not
    take it."""
    if not isinstance(signature, str):
        raise TypeError(f"signature must be a str such as 'f8(f8,f8)', not {type(signature).__name__}")
    text = "".join(signature.split()).lower()
    result, paren, rest = text.partition("(")
    if not paren or not rest.endswith(")"):
        raise ValueError(f"signature {signature!r} is not {_SIGNATURE_HELP}")
    operands = tuple(rest[:len(rest) - 1].split(","))
    for t in (result,) + operands:
        if t not in _SIG_TYPES:
            raise ValueError(f"signature {signature!r}: unsupported type {t!r}; expected {_SIGNATURE_HELP}")
    if not 2 <= len(operands) <= FP_MAX_OPERANDS:
        raise ValueError(f"signature {signature!r}: {len(operands)} operand{'s' if len(operands) != 1 else ''}; "
                         "a kernel takes 2 or 3")
    if len(set(operands)) != 1:
        raise ValueError(f"signature {signature!r}: the operands must be of one type ({_SIGNATURE_HELP})")
    return f"{result}({','.join(operands)})", result, operands


cdef Kernel fp_register_kernel(str name, int nops, fp_scalar_fn scalar, fp_array_fn array,
                               fp_map_fn map_chunk, object py_op, str signature=None,
                               bint quick=False, fp_loop_fn loop=NULL, void *data=NULL,
                               bint by_name=True):
    """Add a kernel to the table; its Kernel object.  A `signature` makes it
    typed: its operands are taken as that signature says (no Python path),
    and `loop` and `data` are there for its functions.  `by_name`: it is
    found by its name (fastpool's own and registered kernels; a cfunc
    kernel is not)."""
    global fp_n_kernels
    cdef Kernel k
    cdef int32_t i = fp_n_kernels
    cdef int32_t takes = FP_TAKES_PYTHON, in_dtype = 0, out_dtype = 0
    if by_name and name in _registry:
        raise ValueError(f"a kernel named {name!r} exists already")
    if i == FP_MAX_KERNELS:
        raise ValueError(f"no room for kernel {name!r}: the table holds {FP_MAX_KERNELS} kernels, "
                         "each for the life of the process")
    if signature is not None:
        signature, result, operands = _signature_parts(signature)
        if len(operands) != nops:
            raise ValueError(f"kernel {name!r}: {nops} operands, but its signature is {signature}")
        takes = FP_TAKES_F8 if operands[0] == "f8" else FP_TAKES_I8
        in_dtype = _SIG_TYPES[operands[0]]
        out_dtype = _SIG_TYPES[result]
    if not 2 <= nops <= FP_MAX_OPERANDS:
        raise ValueError(f"kernel {name!r}: {nops} operands (2 or 3 are supported)")
    if scalar == NULL or array == NULL or map_chunk == NULL:
        raise ValueError(f"kernel {name!r}: every entry runs scalars, arrays and maps")
    # Claimed before anything below can let another thread in; no task
    # names the entry until its Kernel exists.
    fp_n_kernels = i + 1
    fp_kernels[i].nops = nops
    fp_kernels[i].takes = takes
    fp_kernels[i].in_dtype = in_dtype
    fp_kernels[i].out_dtype = out_dtype
    fp_kernels[i].quick = quick
    fp_kernels[i].scalar = scalar
    fp_kernels[i].array = array
    fp_kernels[i].map_chunk = map_chunk
    fp_kernels[i].loop = loop
    fp_kernels[i].data = data
    k = Kernel.__new__(Kernel, _MAKING)
    k.name = name
    k.nops = nops
    k.py_op = py_op
    k.signature = signature
    k.index = i
    k.kind_bits = <uint32_t>i << K_KERNEL_SHIFT
    k.entry = &fp_kernels[i]
    k.what = f"{name} kernel"
    _kernels_made.append(k)
    if by_name:
        _registry[name] = k
    fp_kernel_objs[i] = <PyObject *>k
    return k

cdef void fp_seal_builtins() noexcept:
    # The end of _builtins.pyx: the kernels so far are registered in the
    # same order by every process that imports fastpool.
    global fp_n_builtins
    fp_n_builtins = fp_n_kernels

def _kernel_by_name(name):
    k = _registry.get(name)
    if k is None:
        raise ValueError(f"no kernel named {name!r}")
    return k

def _kernel_from_module(str module, str name):
    """The kernel `name` that module `module` registers (fastpool/abi.pxd)
    when it is imported."""
    import importlib
    importlib.import_module(module)
    k = _registry.get(f"{module}.{name}")
    if k is None:
        raise ValueError(f"module {module!r} registers no kernel named {name!r}")
    return k

def kernel_py_op(uint32_t kind):
    """The Python operation of the kernel a task kind names (a worker
    process runs K_PY tasks with it).  Only built-ins have one, and their
    indexes are the same in every process."""
    return fp_kernel_of(kind).py_op


# ------------------------------------------------- kernels in worker processes
#
# A worker process has its own table.  The built-ins are at the same
# indexes in every process; any other kernel reaches a process pool's
# workers as a record in the segment (fp_kreg_*, _kernels.pxd), which the
# owner writes before the first task of that kernel enters the ring:
#
#   owner (submit, GIL)                       worker process (fp_kernel_run)
#   fp_kreg_publish: append the record,       a cell names owner index i that its
#   count++ (release), then push the cell     fp_kmap does not know: with the GIL,
#                                             read the new records, load the kernel
#                                             ("lib": cfunc; "module": import it),
#                                             map i -> its own entry; if that fails,
#                                             write why into the record and answer
#                                             R_NO_KERNEL for i from then on

cdef inline fp_kreg_head *_kreg(Segment seg) noexcept:
    if seg is None or seg.ctl == NULL or seg.ctl.kernels == 0:
        return NULL
    return <fp_kreg_head *>(seg.base + seg.ctl.kernels)

cdef inline fp_kreg_rec *_kreg_rec(fp_kreg_head *h, uint32_t offset) noexcept:
    return <fp_kreg_rec *>(<char *>h + sizeof(fp_kreg_head) + offset)

cdef object fp_kreg_publish(Segment seg, uint32_t kind):
    """Before a task of the kernel `kind` names goes to worker processes:
    None once they can find the kernel, or the exception that fails the task."""
    cdef int32_t index = (kind >> K_KERNEL_SHIFT) & (FP_MAX_KERNELS - 1)
    cdef fp_kreg_head *h = _kreg(seg)
    if index < fp_n_builtins or (h != NULL and h.published[index]):
        return None
    return _kreg_append(seg, h, _kernel_at(index))

cdef object _kreg_append(Segment seg, fp_kreg_head *h, Kernel k):
    cdef fp_kreg_rec *rec
    cdef uint64_t need
    spec = k.spec
    if isinstance(spec, str):
        return ValueError(f"the {k.what} cannot run in worker processes: {spec}")
    if h == NULL:
        return RuntimeError(f"{k.what}: this pool's segment has no room for kernel records")
    data = b"".join([os.fsencode(field) + b"\0" for field in spec])
    need = (sizeof(fp_kreg_rec) + len(data) + 7) & ~(<uint64_t>7)
    if h.used + need > seg.ctl.kernels_size - sizeof(fp_kreg_head):
        return RuntimeError(f"{k.what}: no room for its record in this pool's segment "
                            f"({FP_KREG_BYTES} bytes of kernel records are used up)")
    rec = _kreg_rec(h, h.used)
    rec.index = k.index
    rec.size = <uint32_t>need
    rec.spec_len = <uint32_t>len(data)
    rec.err_state = 0
    memcpy(<char *>rec + sizeof(fp_kreg_rec), <const char *>data, len(data))
    h.used += <uint32_t>need
    h.published[k.index] = 1
    # release: a worker that sees the count sees the record (the push of the
    # task's cell, a release too, comes after).
    fp_store_u32_release(&h.count, h.count + 1)
    return None

cdef object fp_kreg_missing_error(Segment seg, int32_t index):
    """The error of a task whose kernel a worker process could not load
    (R_NO_KERNEL), with the reason that worker wrote, if any."""
    cdef fp_kreg_head *h = _kreg(seg)
    cdef fp_kreg_rec *rec
    cdef uint32_t i, offset = 0
    reason = None
    if h != NULL:
        for i in range(fp_load_u32_acquire(&h.count)):
            rec = _kreg_rec(h, offset)
            if rec.index == index and fp_load_u32_acquire(&rec.err_state) == 2:
                reason = rec.err[:FP_KREG_ERR].split(b"\0", 1)[0].decode("utf-8", "replace")
                break
            offset += rec.size
    what = _kernel_at(index).what
    return RuntimeError(f"{what}: a worker process could not load it"
                        + (f" ({reason})" if reason else ""))


cdef class KernelMap:
    """A worker process's map from its owner's kernel indexes to its own
    table (fp_kmap), filled from the segment's kernel records on demand."""

    def __cinit__(self, Segment seg):
        cdef int32_t i
        self.seg = seg
        self.specs = {}
        self.kernels = {}
        self.m.loader = <void *>self
        for i in range(fp_n_builtins):
            self.m.entries[i] = &fp_kernels[i]

    cdef const fp_kernel *load(self, int32_t index) noexcept:
        # With the GIL, from a worker's loop: never raises.
        cdef Kernel k
        try:
            self._read_records()
            found = self.specs.get(index)
            if found is None:
                self.m.entries[index] = &fp_kernel_missing   # its owner sent no record
            else:
                try:
                    k = _kernel_from_spec(found[1])
                except Exception as e:
                    self._failed(found[0], f"{type(e).__name__}: {e}")
                    self.m.entries[index] = &fp_kernel_missing
                else:
                    self.kernels[index] = k
                    self.m.entries[index] = k.entry
        except BaseException:
            self.m.entries[index] = &fp_kernel_missing
        return self.m.entries[index]

    def _read_records(self):
        cdef fp_kreg_head *h = _kreg(self.seg)
        cdef fp_kreg_rec *rec
        cdef uint32_t n
        if h == NULL:
            return
        n = fp_load_u32_acquire(&h.count)
        while self.seen < n:
            rec = _kreg_rec(h, self.offset)
            data = (<char *>rec + sizeof(fp_kreg_rec))[:rec.spec_len]
            fields = tuple([os.fsdecode(f) for f in data.split(b"\0")])[:data.count(b"\0")]
            self.specs[rec.index] = (self.offset, fields)
            self.offset += rec.size
            self.seen += 1

    def _failed(self, uint32_t offset, str reason):
        # The first worker to fail writes why; the owner reads it once it
        # has this worker's R_NO_KERNEL (whose push orders the text before it).
        cdef fp_kreg_rec *rec = _kreg_rec(_kreg(self.seg), offset)
        cdef bytes text = reason.encode("utf-8", "replace")[:FP_KREG_ERR - 1]
        if fp_xchg_u32_seq_cst(&rec.err_state, 1) == 0:
            memcpy(rec.err, <const char *>text, len(text))
            rec.err[len(text)] = 0
            fp_store_u32_release(&rec.err_state, 2)

cdef Kernel _kernel_from_spec(tuple fields):
    cdef Kernel k
    if fields[0] in ("lib", "libloop") and len(fields) == 4:
        from fastpool.kernels import cfunc
        k = cfunc((fields[1], fields[2]), fields[3], loop=fields[0] == "libloop")
    elif fields[0] == "module" and len(fields) == 4:
        k = _kernel_from_module(fields[1], fields[2])
    else:
        raise ValueError(f"unknown kernel record {fields!r}")
    if k.signature != fields[3]:
        raise ValueError(f"the {k.what} here has signature {k.signature}, its owner's {fields[3]}")
    return k


# ------------------------------------------------------------ the kernel table

cdef bint fp_kernel_quick(uint32_t kind) noexcept nogil:
    """The kernel `kind` names is a built-in whose scalars take nanoseconds
    (the same in every process: built-ins have the same indexes)."""
    cdef uint32_t i = (kind >> K_KERNEL_SHIFT) & (FP_MAX_KERNELS - 1)
    return i < <uint32_t>fp_n_builtins and fp_kernels[i].quick

cdef const fp_kernel *_kmap_load(fp_kmap *m, int32_t index) noexcept with gil:
    return (<KernelMap>m.loader).load(index)

cdef inline const fp_kernel *_entry_of(uint32_t kind, fp_kmap *m) noexcept nogil:
    cdef uint32_t i = (kind >> K_KERNEL_SHIFT) & (FP_MAX_KERNELS - 1)
    cdef const fp_kernel *e
    if m == NULL:
        return &fp_kernels[i]
    e = m.entries[i]
    if e == NULL:
        e = _kmap_load(m, <int32_t>i)
    return e

cdef int fp_kernel_run(const fp_cell *c, fp_cell *r, fp_job **jobs,
                       const fp_word *operands, fp_kmap *kmap, const uint32_t *state) noexcept nogil:
    """Run a task cell with the native kernel it names, without the GIL.

    The one place where task kinds meet kernels: the worker loop knows none
    of them.  `jobs` holds the array and batch jobs of the pool's owner (NULL
    in another process, where such tasks are never sent); `operands` the
    segment's operand words, one per task slot; `kmap` a worker process's
    map of its owner's kernel indexes (NULL: the owner's own threads);
    `state` the task's state word: an array chunk runs FP_STOP_STEP
    elements at a time and stops once it says FP_TS_STOP (a cancel or a
    timeout; what the task computed is dropped).
    """
    cdef fp_job *job
    cdef const fp_kernel *e
    cdef uint32_t base = c.kind & K_BASE_MASK
    cdef int64_t lo, hi
    if base == K_SCALAR:
        e = _entry_of(c.kind, kmap)
        if e == &fp_kernel_missing:
            r.kind = R_NO_KERNEL
            r.a.i = (c.kind >> K_KERNEL_SHIFT) & (FP_MAX_KERNELS - 1)
            return KR_DONE
        fp_scalar_run(e, c, &operands[c.slot], r)
        return KR_DONE
    if base == K_ARRAY and jobs != NULL:
        job = fp_job_at(jobs, c.slot)
        e = _entry_of(c.kind, NULL)
        lo = c.a.i
        # relaxed: the stop word is a request, read again every step; the
        # owner's CAS that set it decided the task's outcome already.
        while lo < c.b.i and fp_load_u32_relaxed(state) != FP_TS_STOP:
            hi = min(c.b.i, lo + FP_STOP_STEP)
            e.array(e, job, lo, hi)
            lo = hi
        # acq_rel: the last chunk's worker sees every other chunk's writes.
        if fp_sub_i64_acq_rel(&job.remaining, 1) != 0:
            return KR_PARTIAL
        # terminate() took some chunks before they started
        r.kind = R_CLOSED if fp_load_u32_acquire(&job.failed) else R_ARRAY
        return KR_DONE
    if base == K_BATCH and jobs != NULL:
        job = fp_job_at(jobs, c.slot)
        fp_map_help(<fp_map_job *>job.a)
        if fp_sub_i64_acq_rel(&job.remaining, 1) != 0:
            return KR_PARTIAL      # another helper of this job publishes
        r.kind = R_BATCH
        return KR_DONE
    if c.kind == K_FAIL:
        r.kind = R_ERR             # the slot holds the task's exception
        return KR_DONE
    return KR_HELD

cdef int fp_kernel_skip(const fp_cell *c, fp_cell *r, fp_job **jobs) noexcept nogil:
    """A task cell whose task was cancelled before it started (or, for a
    chunk, stopped): run nothing.  KR_PARTIAL for a chunk of a job that
    another chunk's worker publishes, else KR_DONE with R_SKIPPED in r."""
    cdef uint32_t base = c.kind & K_BASE_MASK
    if (base == K_ARRAY or base == K_BATCH) and jobs != NULL:
        if fp_sub_i64_acq_rel(&fp_job_at(jobs, c.slot).remaining, 1) != 0:
            return KR_PARTIAL
    r.kind = R_SKIPPED
    return KR_DONE
