# The kernel ABI: what travels in a task cell, what comes back, and the
# table of native kernels that the worker loop runs without the GIL.
from libc.stdint cimport int32_t, int64_t, uint32_t

cdef enum:
    # task kinds (cell.kind in the task ring).  The low byte is the kind; a
    # native kernel's task carries the kernel's index in the table from bit
    # K_KERNEL_SHIFT on, and a scalar task its operand types (K_FLOAT_SHIFT).
    K_SCALAR = 1       # numbers: a, b in the cell, c in the slot's operand word (K_HAS_C)
    K_PY = 3           # the kernel's Python operation on the slot's operands, with the GIL
    K_ARRAY = 4        # elements [a.i, b.i) of the array job in the slot
    K_FAIL = 5         # bad task: the slot holds its exception; echo it
    K_PROC = 6         # the pool's Python processor(task), with the GIL
    K_CALL = 7         # fn(*args, **kwargs) from the slot, with the GIL
    K_BATCH = 8        # help with the map job in the slot (_map.pyx)

    K_BASE_MASK = 0xff
    K_FLOAT_SHIFT = 8      # bit K_FLOAT_SHIFT + i: operand i is a double (else an int64)
    K_HAS_C = 1 << 12      # a third operand waits in the slot's operand word (the segment's)
    K_KERNEL_SHIFT = 16    # the kernel's index in the table

    # result kinds (cell.kind in the result ring)
    R_INT = 1          # a.u + b.i * 2**64: the exact 128-bit result, low word and high word
    R_FLOAT = 2        # a.d
    R_OBJ = 3          # the slot's object is the result
    R_ERR = 4          # the slot's object is the exception
    R_LOST = 5         # the worker a.i was lost running this task
    R_CANCELLED = 6    # the task's future was cancelled before it ran
    R_ARRAY = 7        # the array job in the slot is complete
    R_WORKER_LOST = 8  # no slot: worker a.i was lost between tasks
    R_INIT_FAILED = 9  # no slot: worker a.i's initializer raised
    R_BATCH = 10       # every helper of the map job in the slot is done
    R_CLOSED = 11      # the task was failed by terminate() before all of it ran
    R_PAYLOAD = 12     # the slot's payload block holds the result (a worker process)
    R_PAYLOAD_ERR = 13 # the slot's payload block holds the exception
    R_DIED = 14        # no slot: worker process a.i is gone, wait status b.i
    R_UNREADABLE = 15  # (never in a ring) the payload could not be unpickled here
    R_NO_KERNEL = 16   # a worker process could not load the kernel a.i names (see fp_kreg_rec)
    R_LEFT = 17        # no slot: worker thread a.i left, idle (an elastic pool)
    R_SKIPPED = 18     # not run: the task was cancelled before it started (its owner completed it)

    DT_F64 = 1
    DT_F32 = 2
    DT_I64 = 3
    DT_I32 = 4
    DT_I16 = 5
    DT_I8 = 6
    DT_SIGNED = 0x100

    FP_MAX_KERNELS = 256   # kernel indexes fit in 8 bits of cell.kind
    FP_MAX_OPERANDS = 3

    # What numbers a kernel takes (fp_kernel.takes)
    FP_TAKES_PYTHON = 0    # ints and floats, computed as Python computes them: int64s and
                           # floats natively, other numbers (big ints, numpy scalars) by py_op
    FP_TAKES_F8 = 1        # any real number, converted to a double as float(x) converts it
    FP_TAKES_I8 = 2        # ints within int64 only

    # The kernel records of a process pool's segment (fp_kreg_*, below)
    FP_KREG_BYTES = 1 << 17
    FP_KREG_ERR = 232      # bytes of a record's error text

# One kernel: how each kind of its tasks runs, without the GIL.  A kernel
# takes `nops` operands (2: a, b; 3: a, b, c), all numbers, or all arrays of
# one element type and shape.  Each function gets the kernel's own entry
# first (as a numpy loop gets its data): one set of functions serves every
# kernel of a signature, each with its own `loop` and `data`.
#
#   scalar(e, floats, ops, res): ops[i] is an int64 (ops[i].i) or, when bit
#       i of `floats` is set, a double (ops[i].d).  Returns R_INT with the
#       exact result as a 128-bit two's complement in res[0] (low word) and
#       res[1] (high word), or R_FLOAT with res[0].d.  For FP_TAKES_PYTHON,
#       Python's own semantics for those operand types (the same result as
#       Python's arithmetic on the ints and floats).  Operands a typed kernel
#       does not take (floats for i8: only a native map passes such) give
#       R_INT with res[1] = 1 and res[0] = 0, a result beyond 64 bits, which
#       the map leaves to the kernel itself: it raises the item's error.
#   array(e, job, start, stop): elements [start, stop) of job.out from job.a,
#       job.b (and job.c), of element type job.dtype.
#   map_chunk(e, job, k): chunk k of a native map's items: fp_map_encode
#       (_map.pyx) with the kernel's arity and scalar function.
#
# How a task is encoded (which forms, which checks, which errors) is common
# to every kernel (fp_encode, in _kernels.pyx), following `takes`,
# `in_dtype` and `out_dtype`; for FP_TAKES_PYTHON, what is not an int64, a
# float or an array of the supported types runs the kernel's Python
# operation (Kernel.py_op).
ctypedef uint32_t (*fp_scalar_fn)(const fp_kernel *e, uint32_t floats, const fp_word *ops,
                                  fp_word *res) noexcept nogil
ctypedef void (*fp_array_fn)(const fp_kernel *e, const fp_job *j, int64_t start, int64_t stop) noexcept nogil
ctypedef void (*fp_map_fn)(const fp_kernel *e, fp_map_job *j, int64_t k) noexcept nogil

# A typed kernel's loop (the ABI of fastpool/abi.pxd, as numpy's inner
# loops): args[0 .. nops) point at the first of n operand elements, args[nops]
# at the first of n results, each 8 bytes (a double or an int64).
ctypedef void (*fp_loop_fn)(char **args, int64_t n, void *data) noexcept nogil

cdef struct fp_kernel:
    int32_t nops
    int32_t takes          # FP_TAKES_*: the numbers it takes
    int32_t in_dtype       # the element type of array operands (0: any, the same for all)
    int32_t out_dtype      # the element type of its results (0: the operands')
    bint quick             # a built-in whose scalars take nanoseconds (see _worker.pyx)
    fp_scalar_fn scalar
    fp_array_fn array
    fp_map_fn map_chunk
    fp_loop_fn loop        # a typed kernel's loop over elements (NULL: the functions above do it all)
    void *data             # what `loop` is given: a C function's address, or the user's data

cdef class Kernel:
    cdef readonly str name
    cdef readonly int nops
    cdef readonly object py_op     # the operation on Python objects: py_op(a, b[, c]), or None
    cdef readonly str signature    # a typed kernel's, "f8(f8,f8)"; None: Python's arithmetic
    cdef int32_t index
    cdef uint32_t kind_bits        # index << K_KERNEL_SHIFT
    cdef const fp_kernel *entry
    cdef str what                  # "<name> kernel", how errors begin
    # How another process gets the same kernel (see fp_kreg_publish): None
    # for a built-in (the same index everywhere), a tuple of str fields
    # ("lib" or "libloop", path, symbol, signature) or ("module", module,
    # name, signature), or a str saying why it cannot.
    cdef object spec
    cdef object keep               # what the entry's data needs alive (a library, a ctypes object)

cdef enum:
    # what fp_kernel_run did with a task cell
    KR_DONE = 0        # the result is in r: publish it
    KR_PARTIAL = 1     # one chunk of a job whose last chunk publishes: nothing to publish
    KR_HELD = 2        # no native kernel takes it: the pool's owner runs it (a hook)

    FP_STOP_STEP = 8192    # elements an array chunk runs between two looks at its stop word

# A process pool's kernel records, in its segment (ctl.kernels): the
# owner appends one (with the GIL) before the first task of a kernel that
# is not a built-in goes into the ring, and a worker process that meets a
# kernel index it does not know reads them to load that kernel itself
# (fp_kmap).  Only the owner writes, except a record's error text.
ctypedef struct fp_kreg_head:
    uint32_t count                   # records published (release)
    uint32_t used                    # bytes of records (owner only)
    uint8_t published[FP_MAX_KERNELS]    # owner only: kernel i has a record

ctypedef struct fp_kreg_rec:         # followed by its spec: fields, each ending in a NUL
    int32_t index                    # the kernel's index in the owner's table
    uint32_t size                    # bytes of the record, spec included (a multiple of 8)
    uint32_t spec_len
    uint32_t err_state               # 0; 1: a worker is writing err; 2: err says why it could not load it
    char err[FP_KREG_ERR]

# A worker process's view of its owner's table: the owner's kernel index ->
# this process's entry (NULL: not loaded yet; fp_kernel_missing: it could
# not be).  `loader` is its KernelMap.
ctypedef struct fp_kmap:
    const fp_kernel *entries[FP_MAX_KERNELS]
    void *loader

cdef class KernelMap:
    cdef fp_kmap m
    cdef Segment seg
    cdef uint32_t seen             # records read
    cdef uint32_t offset           # bytes of records read
    cdef dict specs                # owner index -> (record offset, spec fields)
    cdef dict kernels              # owner index -> this process's Kernel

    cdef const fp_kernel *load(self, int32_t index) noexcept

cdef int fp_kernel_run(const fp_cell *c, fp_cell *r, fp_job **jobs,
                       const fp_word *operands, fp_kmap *kmap, const uint32_t *state) noexcept nogil
cdef int fp_kernel_skip(const fp_cell *c, fp_cell *r, fp_job **jobs) noexcept nogil
cdef bint fp_kernel_quick(uint32_t kind) noexcept nogil
