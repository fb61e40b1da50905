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
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer,
                             PyBuffer_IsContiguous, PyBUF_RECORDS, PyBUF_RECORDS_RO)
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
import sys

# The table.  An entry never moves or changes once registered, and the same
# kernels are registered in the same order in every process that imports
# fastpool, so an index in a cell means the same kernel to a worker process.
cdef fp_kernel fp_kernels[FP_MAX_KERNELS]
cdef PyObject *fp_kernel_objs[FP_MAX_KERNELS]   # each entry's Kernel (held by _registry)
cdef int32_t fp_n_kernels = 0
cdef dict _registry = {}                          # name -> Kernel
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

# array.array typecodes of each element type, for results of non-numpy inputs
cdef dict _TYPECODES = {DT_F64: "d", DT_F32: "f",
                        DT_I8 | DT_SIGNED: "b", DT_I16 | DT_SIGNED: "h",
                        DT_I32 | DT_SIGNED: "i", DT_I64 | DT_SIGNED: "q",
                        DT_I8: "B", DT_I16: "H", DT_I32: "I", DT_I64: "Q"}

cdef object _new_like(str what, object a, Py_buffer *v, int32_t dtype):
    """A result for `a`: a numpy array of its shape and type when it is a
    numpy array, else a zeroed array.array (1-D only), or the exception."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(a, np.ndarray):
        return np.empty(_shape(v), a.dtype)
    if v.ndim != 1:
        return ValueError(f"{what}: 'a' is a {v.ndim}-dimensional {type(a).__name__}, not a numpy "
                          "array: pass an 'out' of its shape for the result")
    import array
    fmt = _format(v).lstrip("@=<")
    code = fmt if fmt in array.typecodes and array.array(fmt).itemsize == v.itemsize else _TYPECODES[dtype]
    out = array.array(code)
    if v.len:
        out.frombytes(bytes(v.len))
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
    for i in range(1, k.nops):
        err = _check_layout(what, &t.v[i], names[i], &t.v[0])
        if err is not None:
            return err
        if not _same_shape(&t.v[i], &t.v[0]):
            return _shape_error(what, names[i], &t.v[i], &t.v[0])
    t.n = t.v[0].len // t.v[0].itemsize
    if out is None:
        out = _new_like(what, ops[0], &t.v[0], t.dtype)
        if isinstance(out, Exception):
            return out
    elif not PyObject_CheckBuffer(out):
        return TypeError(f"{what}: 'out' must be a writable numeric buffer, not {type(out).__name__}")
    err = _acquire(what, out, &t.vo, "out", True)
    if err is not None:
        return err
    t.ho = True
    err = _check_layout(what, &t.vo, "out", &t.v[0])
    if err is not None:
        return err
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
    return _encode_other(_kernel_at(index), a, b, cc, out, ka, kb, kc, c)

cdef object _encode_other(Kernel k, object a, object b, object cc, object out,
                          int ka, int kb, int kc, fp_cell *c):
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
    if ka == 3 or kb == 3 or kc == 3:
        c.kind = K_PY | k.kind_bits
        return ops
    # int64s and floats: the kernel's scalar function applies Python's
    # rules for the mix (see fp_as_double).
    c.kind = kind | <uint32_t>((ka == 2) | (kb == 2) << 1 | (kc == 2) << 2) << K_FLOAT_SHIFT
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
    r.kind = e.scalar((t.kind >> K_FLOAT_SHIFT) & ((1u << FP_MAX_OPERANDS) - 1), ops, res)
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
    Kernels are made by fastpool (fastpool.kernels.add, mul, fma) and
    pickle by name.
    """
    def __cinit__(self, token=None):
        if token is not _MAKING:
            raise TypeError("fastpool kernels are made by fastpool: use fastpool.kernels.add, "
                            "mul or fma")

    def __repr__(self):
        return f"<fastpool kernel {self.name!r}>"

    def __reduce__(self):
        return (_kernel_by_name, (self.name,))

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
                self.entry.array(&job, 0, job.n)
            (<ArrayTask>obj).release()
            return (<ArrayTask>obj).result
        raise obj


cdef Kernel fp_register_kernel(str name, int nops, fp_scalar_fn scalar, fp_array_fn array,
                               fp_map_fn map_chunk, object py_op):
    """Add a kernel to the table; its Kernel object."""
    global fp_n_kernels
    cdef Kernel k
    cdef int32_t i = fp_n_kernels
    if name in _registry:
        raise ValueError(f"a kernel named {name!r} exists already")
    if i == FP_MAX_KERNELS:
        raise ValueError(f"no room for kernel {name!r}: the table holds {FP_MAX_KERNELS}")
    if not 2 <= nops <= FP_MAX_OPERANDS:
        raise ValueError(f"kernel {name!r}: {nops} operands (2 or 3 are supported)")
    if scalar == NULL or array == NULL or map_chunk == NULL:
        raise ValueError(f"kernel {name!r}: every entry runs scalars, arrays and maps")
    fp_kernels[i].nops = nops
    fp_kernels[i].scalar = scalar
    fp_kernels[i].array = array
    fp_kernels[i].map_chunk = map_chunk
    k = Kernel.__new__(Kernel, _MAKING)
    k.name = name
    k.nops = nops
    k.py_op = py_op
    k.index = i
    k.kind_bits = <uint32_t>i << K_KERNEL_SHIFT
    k.entry = &fp_kernels[i]
    k.what = f"{name} kernel"
    _registry[name] = k
    fp_kernel_objs[i] = <PyObject *>k
    fp_n_kernels = i + 1
    return k

def _kernel_by_name(name):
    k = _registry.get(name)
    if k is None:
        raise ValueError(f"no kernel named {name!r}")
    return k

def kernel_py_op(uint32_t kind):
    """The Python operation of the kernel a task kind names (a worker
    process runs K_PY tasks with it)."""
    return fp_kernel_of(kind).py_op


# ------------------------------------------------------------ the kernel table

cdef int fp_kernel_run(const fp_cell *c, fp_cell *r, fp_job **jobs,
                       const fp_word *operands) noexcept nogil:
    """Run a task cell with the native kernel it names, without the GIL.

    The one place where task kinds meet kernels: the worker loop knows none
    of them.  `jobs` holds the array and batch jobs of the pool's owner (NULL
    in another process, where such tasks are never sent); `operands` the
    segment's operand words, one per task slot.
    """
    cdef fp_job *job
    cdef uint32_t base = c.kind & K_BASE_MASK
    if base == K_SCALAR:
        fp_scalar_run(&fp_kernels[c.kind >> K_KERNEL_SHIFT], c, &operands[c.slot], r)
        return KR_DONE
    if base == K_ARRAY and jobs != NULL:
        job = fp_job_at(jobs, c.slot)
        fp_kernels[c.kind >> K_KERNEL_SHIFT].array(job, c.a.i, c.b.i)
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
