# The kernel ABI: what travels in a task cell and what comes back.
from libc.stdint cimport int32_t, int64_t

cdef enum:
    # task kinds (cell.kind in the task ring)
    K_ADD_I64 = 1      # a.i + b.i, exact (overflow carried out)
    K_ADD_F64 = 2      # a.d + b.d
    K_ADD_PY = 3       # Python's a + b on the slot's objects, with the GIL
    K_ADD_ARRAY = 4    # elements [a.i, b.i) of the array job in the slot
    K_FAIL = 5         # bad task: the slot holds its exception; echo it
    K_PROC = 6         # the pool's Python processor(task), with the GIL
    K_CALL = 7         # fn(*args, **kwargs) from the slot, with the GIL
    K_ADD_BATCH = 8    # help with the map job in the slot (_map.pyx)

    # result kinds (cell.kind in the result ring)
    R_INT = 1          # a.i + b.i * 2**64  (b.i is the carry: -1, 0 or 1)
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

    DT_F64 = 1
    DT_F32 = 2
    DT_I64 = 3
    DT_I32 = 4
    DT_I16 = 5
    DT_I8 = 6
    DT_SIGNED = 0x100

cdef class Kernel:
    cdef readonly str name

cdef enum:
    # what fp_kernel_run did with a task cell
    KR_DONE = 0        # the result is in r: publish it
    KR_PARTIAL = 1     # one chunk of a job whose last chunk publishes: nothing to publish
    KR_HELD = 2        # no native kernel takes it: the pool's owner runs it (a hook)

cdef int fp_kernel_run(const fp_cell *c, fp_cell *r, fp_job **jobs) noexcept nogil
