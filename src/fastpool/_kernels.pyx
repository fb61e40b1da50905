# Built-in kernels: task parsing (with the GIL) and compute (without it).
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer,
                             PyBuffer_IsContiguous, PyBUF_RECORDS, PyBUF_RECORDS_RO)
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
import sys

cdef str _ADD = "add kernel"


cdef class ArrayTask:
    """The buffers of one array add, held until the task completes."""
    cdef Py_buffer va, vb, vo
    cdef bint ha, hb, ho
    cdef readonly object result
    cdef int32_t dtype
    cdef int64_t n

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        if self.ha:
            PyBuffer_Release(&self.va)
            self.ha = False
        if self.hb:
            PyBuffer_Release(&self.vb)
            self.hb = False
        if self.ho:
            PyBuffer_Release(&self.vo)
            self.ho = False

    cdef void fill_job(self, fp_job *job) noexcept:
        job.a = <char *>self.va.buf
        job.b = <char *>self.vb.buf
        job.out = <char *>self.vo.buf
        job.n = self.n
        job.dtype = self.dtype


cdef int32_t _dtype_of(Py_buffer *v) noexcept:
    """The element type of a 1-element-format buffer: DT_* | signedness bit,
    or 0 when unsupported.  Integers of one width add alike whatever their
    sign (wrapping), but a and b must still agree on the sign."""
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

cdef object _acquire(object x, Py_buffer *v, str name, bint writable):
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
            err = ValueError(f"{_ADD}: 'out' is read-only ({cause})")
            err.__cause__ = cause
            return err
    err = TypeError(f"{_ADD}: {name!r} cannot be read as an array of a numeric element type "
                    f"({type(cause).__name__}: {cause})")
    err.__cause__ = cause
    return err

cdef object _check_layout(Py_buffer *v, str name, Py_buffer *va):
    """None, or the exception for an operand the kernel cannot read as is:
    an unsupported element type, one other than va's (when va is not
    NULL), or a layout that is not C-contiguous."""
    cdef int32_t own = _dtype_of(v)
    if own == 0:
        fmt = _format(v)
        why = "non-native byte order" if fmt[:1] in (">", "!") else "expected a float or integer type"
        return TypeError(f"{_ADD}: {name!r} has unsupported element type {fmt!r} ({why})")
    if va != NULL and own != _dtype_of(va):
        return TypeError(f"{_ADD}: 'a' and {name!r} have different element types "
                         f"({_format(va)!r} and {_format(v)!r}); the add kernel does not convert")
    if not PyBuffer_IsContiguous(v, b'C'):
        return ValueError(f"{_ADD}: {name!r} is not C-contiguous; pass a contiguous copy "
                          "(numpy.ascontiguousarray)")
    return None

cdef object _shape_error(str name, Py_buffer *v, Py_buffer *va):
    if v.ndim == 1 and va.ndim == 1:
        if name == "out":
            return ValueError(f"{_ADD}: 'out' has length {v.shape[0]}, expected {va.shape[0]}")
        return ValueError(f"{_ADD}: 'a' and 'b' differ in length ({va.shape[0]} != {v.shape[0]})")
    if name == "out":
        return ValueError(f"{_ADD}: 'out' has shape {_shape(v)}, expected {_shape(va)}")
    return ValueError(f"{_ADD}: 'a' and 'b' differ in shape ({_shape(va)} != {_shape(v)}); "
                      "the add kernel does not broadcast")

# array.array typecodes of each element type, for results of non-numpy inputs
cdef dict _TYPECODES = {DT_F64: "d", DT_F32: "f",
                        DT_I8 | DT_SIGNED: "b", DT_I16 | DT_SIGNED: "h",
                        DT_I32 | DT_SIGNED: "i", DT_I64 | DT_SIGNED: "q",
                        DT_I8: "B", DT_I16: "H", DT_I32: "I", DT_I64: "Q"}

cdef object _new_like(object a, Py_buffer *v, int32_t dtype):
    """A result for `a`: a numpy array of its shape and type when it is a
    numpy array, else a zeroed array.array (1-D only), or the exception."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(a, np.ndarray):
        return np.empty(_shape(v), a.dtype)
    if v.ndim != 1:
        return ValueError(f"{_ADD}: 'a' is a {v.ndim}-dimensional {type(a).__name__}, not a numpy "
                          "array: pass an 'out' of its shape for the result")
    import array
    fmt = _format(v).lstrip("@=<")
    code = fmt if fmt in array.typecodes and array.array(fmt).itemsize == v.itemsize else _TYPECODES[dtype]
    out = array.array(code)
    if v.len:
        out.frombytes(bytes(v.len))
    return out

cdef object _array_task(object a, object b, object out):
    """Validate buffers a, b (and out); return an ArrayTask or an exception.

    a, b and out have one element type, one shape and a C-contiguous
    layout; out is new, or exactly the memory of a or b, or apart from both.
    """
    cdef ArrayTask t = ArrayTask()
    ma = sys.modules.get("numpy.ma")       # loaded if any masked array exists
    if ma is not None:
        for name, x in (("a", a), ("b", b), ("out", out)):
            if isinstance(x, ma.MaskedArray):
                return TypeError(f"{_ADD}: {name!r} is a numpy masked array; the add kernel "
                                 "would ignore its mask (pass plain arrays, e.g. x.filled())")
    err = _acquire(a, &t.va, "a", False)
    if err is not None:
        return err
    t.ha = True
    err = _acquire(b, &t.vb, "b", False)
    if err is not None:
        return err
    t.hb = True
    err = _check_layout(&t.va, "a", NULL)
    if err is not None:
        return err
    t.dtype = _dtype_of(&t.va)
    err = _check_layout(&t.vb, "b", &t.va)
    if err is not None:
        return err
    if not _same_shape(&t.va, &t.vb):
        return _shape_error("b", &t.vb, &t.va)
    t.n = t.va.len // t.va.itemsize
    if out is None:
        out = _new_like(a, &t.va, t.dtype)
        if isinstance(out, Exception):
            return out
    elif not PyObject_CheckBuffer(out):
        return TypeError(f"{_ADD}: 'out' must be a writable numeric buffer, not {type(out).__name__}")
    err = _acquire(out, &t.vo, "out", True)
    if err is not None:
        return err
    t.ho = True
    err = _check_layout(&t.vo, "out", &t.va)
    if err is not None:
        return err
    if not _same_shape(&t.vo, &t.va):
        return _shape_error("out", &t.vo, &t.va)
    # Each element of out depends on the same element of a and b only, so
    # out may be a or b exactly (an in-place add), in any chunk order; out
    # partly over an input would read elements already overwritten.
    if (_overlap(&t.vo, &t.va) and t.vo.buf != t.va.buf) or (
            _overlap(&t.vo, &t.vb) and t.vo.buf != t.vb.buf):
        return ValueError(f"{_ADD}: 'out' partly overlaps {'a' if _overlap(&t.vo, &t.va) else 'b'!r}; "
                          "it must be the same memory as an input, or apart from both")
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

cdef object _bad_operand(str name, object x):
    return TypeError(f"{_ADD}: {name!r} must be an int, a float or a numeric buffer, "
                     f"not {type(x).__name__}")

cdef object fp_encode_add(object task, fp_cell *c):
    """Parse an add task into c.  Returns the objects the slot must hold:
    None for a fully native task, (a, b) for the exact Python path, an
    ArrayTask for arrays, or the exception for a bad task (c.kind K_FAIL)."""
    cdef PyObject *pa
    cdef PyObject *pb
    cdef object a, b, out = None
    cdef type t = type(task)
    if t is dict:
        pa = PyDict_GetItem(task, "a")
        pb = PyDict_GetItem(task, "b")
        if pa == NULL or pb == NULL:
            c.kind = K_FAIL
            return KeyError(f"{_ADD}: task is missing key {'a' if pa == NULL else 'b'!r}")
        a = <object>pa
        b = <object>pb
        if len(<dict>task) > 2:
            out = task.get("out")
    elif t is tuple:
        if len(<tuple>task) != 2:
            c.kind = K_FAIL
            return ValueError(f"{_ADD}: a tuple task must be a 2-tuple (a, b), "
                              f"not a {len(<tuple>task)}-tuple")
        a = (<tuple>task)[0]
        b = (<tuple>task)[1]
    else:
        return _encode_slow(task, c)
    return _encode_operands(a, b, out, c)

cdef object _encode_slow(object task, fp_cell *c):
    # User mappings run Python code here; whatever they raise is this
    # task's error, for its callback, never the submitter's.
    try:
        return _encode_mapping_or_sequence(task, c)
    except Exception as e:
        c.kind = K_FAIL
        return e

cdef object _encode_mapping_or_sequence(object task, fp_cell *c):
    from collections.abc import Mapping
    if isinstance(task, Mapping):
        missing = "a" if "a" not in task else ("b" if "b" not in task else None)
        if missing is not None:
            c.kind = K_FAIL
            return KeyError(f"{_ADD}: task is missing key {missing!r}")
        return _encode_operands(task["a"], task["b"], task.get("out"), c)
    if isinstance(task, tuple):
        if len(task) != 2:
            c.kind = K_FAIL
            return ValueError(f"{_ADD}: a tuple task must be a 2-tuple (a, b), not a {len(task)}-tuple")
        return _encode_operands(task[0], task[1], None, c)
    c.kind = K_FAIL
    return TypeError(f"{_ADD}: task must be a mapping with keys 'a' and 'b' or a 2-tuple, "
                     f"not {type(task).__name__}")

cdef inline object _encode_operands(object a, object b, object out, fp_cell *c):
    cdef int ka = _scalar(a, &c.a)
    cdef int kb = _scalar(b, &c.b)
    if ka == 1 and kb == 1 and out is None:
        c.kind = K_ADD_I64
        return None
    if ka == 0:
        c.kind = K_FAIL
        return _bad_operand("a", a)
    if kb == 0:
        c.kind = K_FAIL
        return _bad_operand("b", b)
    if ka == 4 or kb == 4:
        return _encode_arrays(a, b, out, ka, kb, c)
    if out is not None:
        c.kind = K_FAIL
        return TypeError(f"{_ADD}: 'out' is for array tasks; 'a' and 'b' are numbers "
                         f"({type(a).__name__} and {type(b).__name__})")
    if ka == 3 or kb == 3:
        c.kind = K_ADD_PY
        return (a, b)
    # int64 and float mixed: Python converts the int with correct rounding,
    # and so does the C conversion (round to nearest, ties to even).
    if ka == 1:
        c.a.d = <double>c.a.i
    if kb == 1:
        c.b.d = <double>c.b.i
    c.kind = K_ADD_F64
    return None


cdef object _encode_arrays(object a, object b, object out, int ka, int kb, fp_cell *c):
    c.kind = K_FAIL
    if ka != kb:
        arr, other, x = ("a", "b", b) if ka == 4 else ("b", "a", a)
        return TypeError(f"{_ADD}: {arr!r} is an array, so {other!r} must be one too, not "
                         f"{type(x).__name__} (the add kernel does not broadcast)")
    try:
        r = _array_task(a, b, out)
    except Exception as e:
        # An exporter or allocation that raises: the task's error, never
        # the submitter's.
        return e
    if not isinstance(r, Exception):
        c.kind = K_ADD_ARRAY
    return r


cdef inline void fp_add_scalar(const fp_cell *t, fp_cell *r) noexcept nogil:
    if t.kind == K_ADD_I64:
        r.kind = R_INT
        if fp_add_i64_overflow(t.a.i, t.b.i, &r.a.i):
            # Both operands had the sign of the true sum; it is 2**64 away.
            r.b.i = 1 if t.a.i >= 0 else -1
        else:
            r.b.i = 0
    else:
        r.kind = R_FLOAT
        r.a.d = t.a.d + t.b.d

cdef object fp_int_result(const fp_cell *r):
    v = PyLong_FromLongLong(r.a.i)
    if r.b.i:
        carry = PyLong_FromLongLong(r.b.i)
        v += carry << 64
    return v

cdef void fp_add_array_chunk(const fp_job *j, int64_t start, int64_t stop) noexcept nogil:
    # Integer lanes wrap like numpy's: add as unsigned, where C defines it.
    cdef int64_t i
    cdef int32_t t = j.dtype & ~DT_SIGNED
    if t == DT_F64:
        for i in range(start, stop):
            (<double *>j.out)[i] = (<double *>j.a)[i] + (<double *>j.b)[i]
    elif t == DT_F32:
        for i in range(start, stop):
            (<float *>j.out)[i] = (<float *>j.a)[i] + (<float *>j.b)[i]
    elif t == DT_I64:
        for i in range(start, stop):
            (<uint64_t *>j.out)[i] = (<uint64_t *>j.a)[i] + (<uint64_t *>j.b)[i]
    elif t == DT_I32:
        for i in range(start, stop):
            (<uint32_t *>j.out)[i] = (<uint32_t *>j.a)[i] + (<uint32_t *>j.b)[i]
    elif t == DT_I16:
        for i in range(start, stop):
            (<uint16_t *>j.out)[i] = <uint16_t>((<uint16_t *>j.a)[i] + (<uint16_t *>j.b)[i])
    else:
        for i in range(start, stop):
            (<uint8_t *>j.out)[i] = <uint8_t>((<uint8_t *>j.a)[i] + (<uint8_t *>j.b)[i])


cdef class Kernel:
    """A native kernel: the pool runs it without the GIL.

    Also a plain callable that computes one task in the calling thread.
    """
    def __cinit__(self, str name):
        self.name = name

    def __repr__(self):
        return f"<fastpool kernel {self.name!r}>"

    def __reduce__(self):
        return (_kernel_by_name, (self.name,))

    def __call__(self, task):
        cdef fp_cell c, r
        cdef fp_job job
        obj = fp_encode_add(task, &c)
        if c.kind == K_ADD_I64 or c.kind == K_ADD_F64:
            fp_add_scalar(&c, &r)
            return fp_int_result(&r) if r.kind == R_INT else r.a.d
        if c.kind == K_ADD_PY:
            return obj[0] + obj[1]
        if c.kind == K_ADD_ARRAY:
            (<ArrayTask>obj).fill_job(&job)
            with nogil:
                fp_add_array_chunk(&job, 0, job.n)
            (<ArrayTask>obj).release()
            return (<ArrayTask>obj).result
        raise obj


add = Kernel("add")

def _kernel_by_name(name):
    if name == "add":
        return add
    raise ValueError(f"no kernel named {name!r}")


# ------------------------------------------------------------ the kernel table

cdef int fp_kernel_run(const fp_cell *c, fp_cell *r, fp_job **jobs) noexcept nogil:
    """Run a task cell with the native kernel its kind names, without the GIL.

    The one place where task kinds meet kernels: the worker loop knows none
    of them.  `jobs` holds the array and batch jobs of the pool's owner (NULL
    in another process, where such tasks are never sent).
    """
    cdef fp_job *job
    if c.kind == K_ADD_I64 or c.kind == K_ADD_F64:
        fp_add_scalar(c, r)
        return KR_DONE
    if c.kind == K_ADD_ARRAY and jobs != NULL:
        job = fp_job_at(jobs, c.slot)
        fp_add_array_chunk(job, c.a.i, c.b.i)
        # acq_rel: the last chunk's worker sees every other chunk's writes.
        if fp_sub_i64_acq_rel(&job.remaining, 1) != 0:
            return KR_PARTIAL
        # terminate() took some chunks before they started
        r.kind = R_CLOSED if fp_load_u32_acquire(&job.failed) else R_ARRAY
        return KR_DONE
    if c.kind == K_ADD_BATCH and jobs != NULL:
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
