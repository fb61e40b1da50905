# The shared segment: one block that holds a pool's control words, a record
# per worker, and the task and result rings.  Only offsets are stored in it,
# so a process that attaches by name may map it at another address.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

# Control words at the start of the segment.  Each group that is written by
# different threads sits on its own cache line.
ctypedef struct fp_ctl:
    uint32_t magic           # FP_MAGIC: what attach() checks first
    uint32_t version         # FP_LAYOUT_VERSION: the layout below
    uint64_t size            # bytes in the segment
    uint32_t state           # FP_RUNNING .. FP_STOPPING; written by the pool's owner
    uint32_t n_workers       # worker records after this block
    uint64_t workers         # offset of the worker records
    uint64_t task_ring       # offset of the task ring
    uint64_t result_ring     # offset of the result ring
    uint64_t payload         # offset of the payload blocks (0: none)
    uint64_t operands        # offset of the operand words: one per task slot
    uint32_t block_size      # bytes per payload block
    int32_t owner_pid        # the process that made the segment (workers watch it)
    uint32_t n_blocks        # payload blocks: one per Python task in the rings
    uint32_t kernels_size    # bytes of kernel records
    uint64_t wstats          # offset of the workers' stats blocks (fp_worker_stats)
    uint64_t stamps          # offset of the admission stamps, one per task slot (_stats.pyx)
    uint64_t kernels         # offset of the kernel records (0: none; see _kernels.pxd)
    uint64_t idle_ns         # elastic: a worker idle this long leaves (0: never; _worker.pyx)
    uint32_t min_workers     # ... unless `live` is down to this many
    uint32_t _pad0a
    uint64_t task_ctl        # offset of the task control words, one per task slot (fp_task_ctl)
    uint32_t work_seq        # futex word idle workers sleep on
    uint32_t sleepers        # workers parked, or about to park
    uint32_t spinners        # workers awake and looking for work
    uint32_t waking          # a wake-up is on its way to a parked worker
    uint32_t live            # workers started and not leaving idle (see _worker.pyx)
    uint8_t _pad1[44]
    uint32_t disp_seq        # futex word the dispatcher sleeps on
    uint32_t disp_sleeping   # the dispatcher is parked, or about to park
    uint64_t next_deadline   # the dispatcher wakes by then for a task's deadline (0: none)
    uint8_t _pad2[48]
    uint32_t disp_token      # who completes results: 0 free, 1 held, 2 held and wanted
    uint32_t proxy           # a thread waiting on a future holds the token and sleeps
    uint32_t proxy_seq       # futex word that thread sleeps on
    uint32_t fault_point     # tests: FP_FAULT_* where a worker process dies ...
    uint32_t fault_after     # ... the time it gets there after this many more
    uint8_t _pad3[44]
    fp_pool_stats stats      # the owner's counters (see _stats.pxd)

# One per worker, on its own cache line: written by that worker only (and,
# once a worker process is dead, read by its owner to recover what it held).
ctypedef struct fp_worker_rec:
    uint32_t slot            # the task slot it is running, or FP_NO_SLOT
    uint32_t tasks_low       # tasks it has run (wraps), a liveness hint
    int32_t pid              # its process (0: a thread of the owner)
    uint32_t leaving         # FP_LEAVE_*: why a worker process left on its own
    uint64_t task_pos        # 1 + the task-ring position of the task in `slot`
    uint64_t claim           # 1 + a task-ring position it is trying to pop (0: none)
    uint64_t rclaim          # 1 + a result-ring position it is trying to push (0: none)
    uint32_t idle            # FP_IDLE_*: the idle counters of fp_ctl it is counted in
    uint32_t _pad0
    uint64_t timed           # the last task with a timeout it started: its slot + 1, and a
                             # count of such starts above bit 32 (see _engine.pyx)
    uint8_t _pad[8]

# One per task slot, 32 bytes: what a task's owner and the worker that runs
# it tell each other about it (see _engine.pyx, "Cancel and deadlines").
ctypedef struct fp_task_ctl:
    uint32_t state           # FP_TS_*: moved only by CAS (fp_cas_u32_acq_rel)
    uint32_t _pad0
    uint64_t limit           # ns it may run (0: no timeout); the owner writes it before the push
    uint64_t deadline        # when it must be done (fp_now_ns); its worker writes it at the start
    uint64_t _pad1

cdef enum:
    FP_MAGIC = 0x46504f4f    # "FPOO"
    FP_LAYOUT_VERSION = 7
    FP_RUNNING = 0
    FP_CLOSING = 1           # accept nothing new; finish what was accepted
    FP_TERMINATING = 2       # accept nothing new; start nothing new
    FP_STOPPING = 3          # workers leave their loop
    FP_NO_SLOT = 0xffffffff
    FP_LEAVE_RETIRED = 1     # ran max_tasks_per_child tasks
    FP_LEAVE_INIT_FAILED = 2 # its initializer raised
    FP_LEAVE_IDLE = 3        # idle for idle_ns, beyond min_workers
    FP_LEAVE_STOPPED = 4     # its owner stopped the task it ran (a cancel, a timeout): killed
    FP_STOPPED_EXIT = 87     # the exit status of a worker process that saw that before the kill
    FP_TS_IDLE = 0           # task state: not started, or finished (its result is on its way)
    FP_TS_RUNNING = 1        # a worker started it
    FP_TS_CANCELLED = 2      # cancelled before it started: the worker that takes it skips it
    FP_TS_STOP = 3           # cancelled or timed out while running: stop (threads), killed (processes)
    FP_IDLE_SPINNING = 1     # counted in ctl.spinners (a worker process)
    FP_IDLE_PARKED = 2       # counted in ctl.sleepers (a worker process)

cdef class Segment:
    cdef object _mapping     # an mmap (anonymous) or a SharedMemory (named)
    cdef char *base
    cdef fp_ctl *ctl
    cdef fp_worker_rec *workers
    cdef fp_worker_stats *wstats
    cdef uint64_t *stamps
    cdef fp_task_ctl *tctl   # a task control block per task slot
    cdef fp_ring *tasks
    cdef fp_ring *results
    cdef fp_word *operands   # a kernel's third operand, by task slot (K_HAS_C)
    cdef readonly object name
    cdef readonly object payload     # a memoryview of the payload blocks, or None
    cdef object _owner_pid
    cdef readonly bint readonly      # mapped read-only, to read its stats

    cdef int _map(self, object mapping) except -1
    cdef void _locate(self) noexcept
    cdef void _drop_pointers(self) noexcept
