# Free-list bookkeeping: idle workers (park/wake) and free task slots.
# The control words they use (fp_ctl) are the segment's: _segment.pxd.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc

cdef void fp_idle_wake(fp_ctl *ctl) noexcept nogil
cdef void fp_idle_wake_all(fp_ctl *ctl) noexcept nogil
cdef void fp_idle_park(fp_ctl *ctl, bint (*has_work)(void *) noexcept nogil, void *arg,
                       uint32_t *idle, int64_t ns) noexcept nogil
cdef void fp_dispatcher_wake(fp_ctl *ctl) noexcept nogil
cdef void fp_dispatcher_notify(fp_ctl *ctl) noexcept nogil
cdef void fp_dispatcher_park(fp_ctl *ctl, uint32_t seen, bint (*has_work)(void *) noexcept nogil,
                             void *arg, int64_t ns) noexcept nogil
cdef bint fp_token_trylock(fp_ctl *ctl) noexcept nogil
cdef void fp_token_lock(fp_ctl *ctl) noexcept nogil
cdef void fp_token_unlock(fp_ctl *ctl) noexcept nogil
cdef void fp_proxy_park(fp_ctl *ctl, uint32_t seen, bint (*has_work)(void *) noexcept nogil,
                        void *arg, int64_t ns) noexcept nogil
cdef void fp_holder_park(fp_ctl *ctl, uint32_t seen, bint proxy, bint (*has_work)(void *) noexcept nogil,
                         void *arg, int64_t ns) noexcept nogil

# What a worker needs to run one chunk of an array task.  Process-local
# (it holds pointers into the caller's buffers), indexed by task slot.
ctypedef struct fp_job:
    char *a
    char *b
    char *c                  # a kernel's third operand (NULL: it takes two)
    char *out
    int64_t n
    int64_t remaining        # chunks not yet finished
    int32_t dtype
    int32_t cells            # task-ring cells the task was admitted for
    uint32_t failed          # terminate() took a chunk before it started
    uint32_t taken           # a worker took the task: shutdown(cancel_futures) leaves it
    uint64_t pos             # 1 + the task-ring position of its cell (single-cell tasks)
    int32_t block            # 1 + its payload block (a Python task for worker processes), or 0

cdef enum:
    JOB_SHIFT = 10               # jobs are allocated in pages of 1024 slots
    JOB_PAGE = 1 << JOB_SHIFT

cdef inline fp_job *fp_job_at(fp_job **pages, uint32_t slot) noexcept nogil:
    return &pages[slot >> JOB_SHIFT][slot & (JOB_PAGE - 1)]

cdef class SlotTable:
    cdef readonly int32_t capacity
    cdef int32_t nfree           # slots free: on the stack, or never used yet
    cdef int32_t nstack          # ids on the free stack
    cdef int32_t fresh           # ids below this have been handed out before
    cdef int32_t *free
    cdef fp_job **job_pages      # page p holds the jobs of slots p * JOB_PAGE ...
    cdef uint8_t *mode
    cdef uint8_t *flags          # SLOT_*: a timeout, an early completion (_engine.pyx)
    cdef uint32_t *gen           # how many tasks the slot has held: a TaskHandle's check
    cdef list cbs
    cdef list ctxs
    cdef list objs

    cdef inline int32_t take(self) except -2:
        # GIL held: slots are taken and given back only by Python threads.
        # Ids never used are handed out in order and the per-slot lists grow
        # with them, so a pool pays only for the slots it uses.
        if self.nfree == 0:
            return -1
        self.nfree -= 1
        if self.nstack:
            self.nstack -= 1
            return self.free[self.nstack]
        cdef int32_t slot = self.fresh
        if slot % JOB_PAGE == 0:
            # A new page; it reaches workers through the ring push that
            # carries its first task (release), like the task itself.
            self.job_pages[slot >> JOB_SHIFT] = <fp_job *>calloc(JOB_PAGE, sizeof(fp_job))
            if self.job_pages[slot >> JOB_SHIFT] == NULL:
                self.nfree += 1
                raise MemoryError()
        self.cbs.append(None)
        self.ctxs.append(None)
        self.objs.append(None)
        self.fresh += 1
        return slot

    cdef inline fp_job *job(self, int32_t slot) noexcept nogil:
        return fp_job_at(self.job_pages, slot)

    cdef inline void give(self, int32_t slot) noexcept:
        self.gen[slot] += 1         # a handle of the task that held it is stale now
        self.free[self.nstack] = slot
        self.nstack += 1
        self.nfree += 1

    cdef inline int32_t in_use(self) noexcept:
        return self.capacity - self.nfree
