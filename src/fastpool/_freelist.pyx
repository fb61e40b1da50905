# Free-list bookkeeping.
#
# Idle workers.  The kernel's futex queue on ctl.work_seq is the list of idle
# workers: FUTEX_WAKE with n = 1 takes exactly one of them off it, so a
# submit wakes one parked worker, never all.  Around it three counters keep
# the wake-ups rare:
#   spinners  workers awake and looking for work; while there is one, a new
#             task will be found without any wake-up, so submit makes no
#             system call at all (the common case under load);
#   sleepers  workers that announced they are about to sleep;
#   waking    one wake-up is already on its way, so a burst of submits sends
#             one, not one per task.
# The handshake is the classic Dekker pair, hence seq_cst: the submitter
# publishes the task, then reads `sleepers`; the parker raises `sleepers`,
# then re-reads the ring.  At least one of them sees the other.
#
# A worker process can die anywhere, SIGKILL included, so it also notes in
# its record (`idle`) which counters it is in, and its owner takes it out of
# them when it is gone (ProcessWorkers' watcher, Core._worker_process_gone),
# clears `waking` (a wake-up it took and never spent) and wakes every parked
# worker to look again.  The note and the count are two stores, so a death
# between them can leave a count off by one: the orders below make that
# error the harmless kind.  `sleepers` can only be left too high (an extra
# wake-up now and then); `spinners` only too low, even below zero (read as
# signed: an extra wake-up, never a lost one).
#
# Free task slots.  A fixed table (capacity = ring size) maps a slot id,
# carried in ring cells, to the Python objects of the task: callback or
# future, its Context, and the task's own objects.  The free list is a stack
# of ids, touched only with the GIL held; ids never used yet come after it,
# in order, so a quiet pool reuses the same few.  Taking a slot is also admission
# control: at most `capacity` tasks are in the rings at once, so a producer
# never waits for room, only (rarely) for a consumer still copying out the
# cell it claimed a lap earlier.
from libc.stdlib cimport malloc, calloc, free as c_free
from libc.limits cimport INT_MAX

cdef void fp_idle_wake(fp_ctl *ctl) noexcept nogil:
    # Called after publishing work.  seq_cst fence: our push must be visible
    # before we read `sleepers` (the other half of the Dekker pair is in park).
    fp_fence_seq_cst()
    if fp_load_u32_seq_cst(&ctl.sleepers) == 0:
        return
    if <int32_t>fp_load_u32_seq_cst(&ctl.spinners) > 0:
        return
    if fp_xchg_u32_seq_cst(&ctl.waking, 1) != 0:
        return
    # Bump before waking: a parker that read the old value will not sleep.
    fp_add_u32_seq_cst(&ctl.work_seq, 1)
    if fp_futex_wake(&ctl.work_seq, 1) == 0:
        # Nobody was asleep in the kernel: the counted sleeper is still on
        # its way in (the bump stops it) or already left.  Either way no
        # woken worker will clear the flag, so clear it here, or later
        # submits would skip a wake-up that is needed.
        fp_store_u32_seq_cst(&ctl.waking, 0)

cdef void fp_idle_wake_all(fp_ctl *ctl) noexcept nogil:
    fp_add_u32_seq_cst(&ctl.work_seq, 1)
    fp_futex_wake(&ctl.work_seq, INT_MAX)

cdef void fp_idle_park(fp_ctl *ctl, bint (*has_work)(void *) noexcept nogil, void *arg,
                       uint32_t *idle, int64_t ns) noexcept nogil:
    # `idle`: a worker process's note of the counters it is in (else NULL).
    # `ns`: sleep at most this long (< 0: until woken), an elastic pool's
    # idle time left (see _worker.pyx).
    fp_add_u32_seq_cst(&ctl.sleepers, 1)
    if idle != NULL:
        fp_store_u32_relaxed(idle, fp_load_u32_relaxed(idle) | FP_IDLE_PARKED)
    fp_fence_seq_cst()
    # Read the word before re-checking: a wake that comes after the check
    # changes it, and futex_wait then returns at once.
    cdef uint32_t seen = fp_load_u32_seq_cst(&ctl.work_seq)
    if not has_work(arg) and fp_load_u32_acquire(&ctl.state) < FP_STOPPING:
        fp_futex_wait_ns(&ctl.work_seq, seen, ns)
        fp_fault_point(FP_FAULT_WOKEN)
    if idle != NULL:
        fp_store_u32_relaxed(idle, fp_load_u32_relaxed(idle) & ~(<uint32_t>FP_IDLE_PARKED))
    fp_sub_u32_seq_cst(&ctl.sleepers, 1)
    # A wake-up that reached us is spent: let the next submit send another.
    fp_store_u32_seq_cst(&ctl.waking, 0)

cdef void fp_dispatcher_wake(fp_ctl *ctl) noexcept nogil:
    # Unconditional: for close/terminate and other control changes.  A
    # thread dispatching by proxy is told too, so that it steps aside.
    fp_add_u32_seq_cst(&ctl.disp_seq, 1)
    fp_futex_wake(&ctl.disp_seq, 1)
    fp_add_u32_seq_cst(&ctl.proxy_seq, 1)
    fp_futex_wake(&ctl.proxy_seq, 1)

cdef void fp_dispatcher_notify(fp_ctl *ctl) noexcept nogil:
    # After publishing a result.  If a thread waiting on a future holds the
    # dispatch token (see fp_proxy_park), wake it instead of the dispatcher:
    # that saves the lone task a wake-up.  Otherwise only the first worker
    # to find the dispatcher asleep wakes it: one wake-up per batch.
    fp_fence_seq_cst()
    if fp_load_u32_seq_cst(&ctl.proxy) != 0:
        fp_add_u32_seq_cst(&ctl.proxy_seq, 1)
        fp_futex_wake(&ctl.proxy_seq, 1)
        return
    if fp_load_u32_seq_cst(&ctl.disp_sleeping) == 0:
        return
    if fp_xchg_u32_seq_cst(&ctl.disp_sleeping, 0) == 1:
        fp_add_u32_seq_cst(&ctl.disp_seq, 1)
        fp_futex_wake(&ctl.disp_seq, 1)

cdef void fp_dispatcher_park(fp_ctl *ctl, uint32_t seen, bint (*has_work)(void *) noexcept nogil,
                             void *arg, int64_t ns) noexcept nogil:
    # `seen` was read by the dispatcher before it last looked at the pool's
    # state, so a control change since then makes the wait return at once.
    # While it sleeps the dispatcher lends out its token: a thread that
    # waits on a future may complete results meanwhile.  At most `ns`
    # nanoseconds (< 0: no limit): a task's deadline.
    fp_token_unlock(ctl)
    fp_store_u32_seq_cst(&ctl.disp_sleeping, 1)
    fp_fence_seq_cst()
    if not has_work(arg):
        fp_futex_wait_ns(&ctl.disp_seq, seen, ns)
    fp_store_u32_seq_cst(&ctl.disp_sleeping, 0)
    fp_token_lock(ctl)

# The dispatch token.  Results are completed only by the thread that holds
# it, so callbacks never run two at a time.  The dispatcher holds it while
# awake; a thread blocked on a future may take it (try-lock only) while the
# dispatcher sleeps, and gives it back as soon as the dispatcher wants it.
# A futex mutex: 0 free, 1 held, 2 held and the dispatcher waits for it.

cdef bint fp_token_trylock(fp_ctl *ctl) noexcept nogil:
    cdef uint32_t expected = 0
    return fp_cas_u32_seq_cst(&ctl.disp_token, &expected, 1)

cdef void fp_token_lock(fp_ctl *ctl) noexcept nogil:
    cdef uint32_t c = 0
    if fp_cas_u32_seq_cst(&ctl.disp_token, &c, 1):
        return
    if c != 2:
        c = fp_xchg_u32_seq_cst(&ctl.disp_token, 2)
    while c != 0:
        # Ask the holder (a proxy, asleep on its own word) to step aside.
        fp_add_u32_seq_cst(&ctl.proxy_seq, 1)
        fp_futex_wake(&ctl.proxy_seq, 1)
        fp_futex_wait(&ctl.disp_token, 2)
        c = fp_xchg_u32_seq_cst(&ctl.disp_token, 2)

cdef void fp_token_unlock(fp_ctl *ctl) noexcept nogil:
    if fp_xchg_u32_seq_cst(&ctl.disp_token, 0) == 2:
        fp_futex_wake(&ctl.disp_token, 1)

cdef void fp_holder_park(fp_ctl *ctl, uint32_t seen, bint proxy, bint (*has_work)(void *) noexcept nogil,
                         void *arg, int64_t ns) noexcept nogil:
    # The token holder waits for a result inside a callback (a wait there,
    # see Core._dispatch_until) and keeps the token: no other thread may run
    # a callback before that one returns.  The dispatcher sleeps on its own
    # word; a proxy on the proxy word, which workers wake first, so the two
    # never share one.  `seen` was read before the holder last looked at
    # what it waits for.
    cdef uint32_t *flag = &ctl.proxy if proxy else &ctl.disp_sleeping
    fp_store_u32_seq_cst(flag, 1)
    fp_fence_seq_cst()
    if not has_work(arg):
        fp_futex_wait_ns(&ctl.proxy_seq if proxy else &ctl.disp_seq, seen, ns)
    fp_store_u32_seq_cst(flag, 0)

cdef void fp_proxy_park(fp_ctl *ctl, uint32_t seen, bint (*has_work)(void *) noexcept nogil,
                        void *arg, int64_t ns) noexcept nogil:
    # The token holder that is not the dispatcher waits for a result.  The
    # Dekker pair with fp_dispatcher_notify: we raise `proxy`, then re-check
    # the ring; a worker publishes, then reads `proxy`.  `seen` (proxy_seq)
    # was read before the holder last looked at its future: a cancel since
    # then wakes us.
    fp_store_u32_seq_cst(&ctl.proxy, 1)
    fp_fence_seq_cst()
    if not has_work(arg) and fp_load_u32_seq_cst(&ctl.disp_token) == 1:
        fp_futex_wait_ns(&ctl.proxy_seq, seen, ns)
    fp_store_u32_seq_cst(&ctl.proxy, 0)


cdef class SlotTable:
    def __cinit__(self, int32_t capacity):
        self.capacity = capacity
        self.nfree = capacity
        self.free = <int32_t *>malloc(capacity * sizeof(int32_t))
        self.job_pages = <fp_job **>calloc(capacity // JOB_PAGE + 1, sizeof(fp_job *))
        self.mode = <uint8_t *>calloc(capacity, sizeof(uint8_t))
        self.flags = <uint8_t *>calloc(capacity, sizeof(uint8_t))
        self.gen = <uint32_t *>calloc(capacity, sizeof(uint32_t))
        if (self.free == NULL or self.job_pages == NULL or self.mode == NULL or self.flags == NULL
                or self.gen == NULL):
            raise MemoryError()
        self.cbs = []
        self.ctxs = []
        self.objs = []

    def __dealloc__(self):
        cdef int32_t p
        if self.job_pages != NULL:
            for p in range(self.capacity // JOB_PAGE + 1):
                c_free(self.job_pages[p])
        c_free(self.free)
        c_free(self.job_pages)
        c_free(self.mode)
        c_free(self.flags)
        c_free(self.gen)
