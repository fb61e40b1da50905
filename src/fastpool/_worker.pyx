# The worker loop (see _worker.pxd).
#
# A worker pops a task cell, records the task's slot in its record (so that
# whoever watches the segment knows what it holds), runs it through the
# kernel table or the owner's hook, publishes the result and clears the
# record.  Between tasks it spins briefly, then parks on the segment's futex
# (process-shared).  CLOSING keeps workers going until every result is
# seen; TERMINATING stops them starting anything new.
#
# Elastic size (ctl.idle_ns > 0): a worker idle that long leaves, unless
# only ctl.min_workers are left (see _try_leave).  It parks for what is left
# of its idle time, so the timing costs nothing but that timed futex wait,
# and nothing at all in a pool of fixed size.

cdef enum:
    WORKER_SPIN = 100     # pause-loops a worker looks for work before parking
    TAKER_GRACE = 2000    # pause-loops (tens of us) a first result waits for a taker
    # what _try_leave decides
    LEAVE_STAY = 0        # one of the min_workers: it stays, parked until there is work
    LEAVE_GO = 1          # it leaves
    LEAVE_WORK = 2        # work came in meanwhile: it stays and looks for it

cdef uint64_t IDLE_STAYS = 0xffffffffffffffff   # idle_since of a worker that stays however long it idles

cdef bint fp_ring_has_work(void *r) noexcept nogil:
    return not fp_ring_empty(<fp_ring *>r)

cdef inline bint _short_kind(uint32_t kind) noexcept nogil:
    # Kinds that finish in nanoseconds: a worker running them stays counted
    # as looking for work, so a flood of them never triggers a wake-up.  (A
    # scalar of a user's kernel may take any time.)
    return ((kind & K_BASE_MASK) == K_SCALAR and fp_kernel_quick(kind)) or kind == K_FAIL

cdef inline void _spin_start(fp_worker *w) noexcept nogil:
    # The note first, the count after (see _freelist.pyx: a death between
    # them leaves `spinners` one too low, never one too high).
    if w.track:
        fp_store_u32_relaxed(&w.rec.idle, fp_load_u32_relaxed(&w.rec.idle) | FP_IDLE_SPINNING)
    fp_add_u32_seq_cst(&w.ctl.spinners, 1)
    fp_fault_point(FP_FAULT_SPIN)

cdef inline void _spin_stop(fp_worker *w) noexcept nogil:
    fp_sub_u32_seq_cst(&w.ctl.spinners, 1)
    if w.track:
        fp_store_u32_relaxed(&w.rec.idle, fp_load_u32_relaxed(&w.rec.idle) & ~(<uint32_t>FP_IDLE_SPINNING))

cdef int _try_leave(fp_worker *w) noexcept nogil:
    # An idle worker of an elastic pool, out of `sleepers` and `spinners`,
    # takes itself out of `live`, unless that would leave fewer than
    # min_workers.  The race with admission is a Dekker pair on `live`: a
    # submitter publishes its task, then (seq_cst fence, fp_idle_wake) reads
    # the idle counters and `live`, and starts a worker when none is idle and
    # fewer than the pool's size are live (Core._admit, WorkerPool._grow); we
    # lower `live`, then (fence) look at the ring once more.  At least one
    # of us sees the other: if we see the task we count ourselves back in
    # and stay (our worker index is still ours, so `live` stays within the
    # size even if a worker was started meanwhile too); if we do not, the
    # submitter saw `live` below the size and starts one (or, when no worker
    # index is free before ours is, the owner does once we are gone:
    # WorkerPool._regrow).
    cdef fp_ctl *ctl = w.ctl
    cdef uint32_t live
    if not fp_ring_empty(w.tasks):
        return LEAVE_WORK       # a submitter that counted us idle left this task to us
    live = fp_load_u32_seq_cst(&ctl.live)
    while True:
        if live <= fp_load_u32_relaxed(&ctl.min_workers):
            return LEAVE_STAY
        if fp_cas_u32_seq_cst(&ctl.live, &live, live - 1):
            break
    fp_fence_seq_cst()
    if not fp_ring_empty(w.tasks):
        fp_add_u32_seq_cst(&ctl.live, 1)
        return LEAVE_WORK
    # The count first, then the note: a worker process killed between the
    # two is taken for a crash and replaced, which leaves `live` one too
    # low (one worker beyond min_workers may stay), never too high (the pool
    # could no longer grow to its size).
    if w.track:
        fp_store_u32_relaxed(&w.rec.leaving, FP_LEAVE_IDLE)
    return LEAVE_GO

cdef inline bint _park(fp_worker *w, uint64_t idle_ns, uint64_t *idle_since) noexcept nogil:
    # Park until woken.  In an elastic pool (idle_ns > 0), for at most what is
    # left of the worker's idle time; once that has run out, True if it
    # leaves.  `idle_since`: when it last had work (0: it has had some since
    # it last parked; IDLE_STAYS: it is one of the min_workers).
    cdef uint32_t *note = &w.rec.idle if w.track else NULL
    cdef uint64_t now
    cdef int how
    if idle_ns == 0 or idle_since[0] == IDLE_STAYS:
        fp_idle_park(w.ctl, fp_ring_has_work, w.tasks, note, -1)
        return False
    now = fp_now_ns()
    if idle_since[0] == 0:
        idle_since[0] = now
    if now - idle_since[0] < idle_ns:
        fp_idle_park(w.ctl, fp_ring_has_work, w.tasks, note, <int64_t>(idle_since[0] + idle_ns - now))
        return False
    how = _try_leave(w)
    if how == LEAVE_GO:
        return True
    idle_since[0] = IDLE_STAYS if how == LEAVE_STAY else 0
    return False

cdef inline int _take(fp_worker *w, fp_cell *c) noexcept nogil:
    if not w.track:
        return fp_ring_pop(w.tasks, c)
    # A worker process: its record says what it holds at every step, so
    # that its owner can recover the task and the cell if it dies.
    if fp_ring_claim_tracked(w.tasks, c, &w.rec.claim) != FP_OK:
        fp_store_u64_relaxed(&w.rec.claim, 0)
        return FP_EMPTY
    fp_fault_point(FP_FAULT_CLAIM)
    fp_store_u32_relaxed(&w.rec.slot, c.slot)
    fp_store_u64_relaxed(&w.rec.task_pos, c.seq + 1)
    fp_ring_release_cell(w.tasks, c.seq)
    fp_store_u64_relaxed(&w.rec.claim, 0)
    fp_fault_point(FP_FAULT_RUN)
    return FP_OK

cdef int fp_worker_loop(fp_worker *w) noexcept nogil:
    """Run tasks until the pool stops (0), this worker is lost (1), retires
    (2, max_tasks) or leaves idle (3, an elastic pool)."""
    cdef fp_ctl *ctl = w.ctl
    cdef fp_cell c
    cdef bint spinning = False
    cdef int i, rc
    cdef bint found
    cdef uint64_t idle_ns = ctl.idle_ns     # set before any worker starts
    cdef uint64_t idle_since = 0
    while fp_load_u32_acquire(&ctl.state) < FP_TERMINATING:
        if _take(w, &c) == FP_OK:
            idle_since = 0
            if not _short_kind(c.kind):
                # Going off to a long task: stop counting as a searcher, and
                # pass on what is left: a burst of submits sends one wake-up,
                # so each woken worker wakes the next.
                if spinning:
                    spinning = False
                    _spin_stop(w)
                if not fp_ring_empty(w.tasks):
                    fp_idle_wake(ctl)
            rc = fp_worker_run_cell(w, &c)
            if rc == 0 and w.tasks_left and c.kind != K_FAIL:
                w.tasks_left -= 1
                if w.tasks_left == 0:
                    fp_store_u32_relaxed(&w.rec.leaving, FP_LEAVE_RETIRED)
                    rc = 2
            if rc:
                if spinning:
                    _spin_stop(w)
                return rc
            continue
        if not spinning:
            if <int32_t>fp_load_u32_seq_cst(&ctl.spinners) > 0:
                if _park(w, idle_ns, &idle_since):
                    return 3
                continue
            spinning = True
            _spin_start(w)
        found = False
        for i in range(WORKER_SPIN):
            fp_cpu_relax()
            if not fp_ring_empty(w.tasks):
                found = True
                break
        if found:
            continue
        spinning = False
        _spin_stop(w)
        if _park(w, idle_ns, &idle_since):
            return 3
    if spinning:
        _spin_stop(w)
    return 0

cdef inline bint _task_start(fp_worker *w, const fp_cell *c, fp_task_ctl *t) noexcept nogil:
    # Whether to run the cell: the task's state word moves from IDLE to
    # RUNNING by our CAS, unless its owner cancelled it first (CANCELLED:
    # skip it).  A chunk of an array job another chunk started finds it
    # RUNNING (run it) or STOP (skip it).  See _engine.pyx, "Cancel and
    # deadlines".
    cdef uint32_t seen = FP_TS_IDLE
    cdef uint64_t limit, deadline, nd
    cdef uint32_t base
    # acq_rel: an owner whose CAS finds RUNNING sees our record (which task
    # slot, which ring position) as written above, to stop this worker.
    if not fp_cas_u32_acq_rel(&t.state, &seen, FP_TS_RUNNING):
        base = c.kind & K_BASE_MASK
        return seen == FP_TS_RUNNING and (base == K_ARRAY or base == K_BATCH)
    # relaxed: the owner wrote the limit before pushing the cell we popped.
    limit = fp_load_u64_relaxed(&t.limit)
    if limit:
        # A timeout counts from now.  The deadline, then our record saying
        # which task we started (release: the dispatcher that reads the
        # record sees the deadline); then, the Dekker pair with the
        # dispatcher (it stores when it will wake next, then reads the
        # records), wake it if it would wake too late.
        deadline = fp_now_ns() + limit
        fp_store_u64_release(&t.deadline, deadline)
        fp_store_u64_release(&w.rec.timed, ((fp_load_u64_relaxed(&w.rec.timed) >> 32) + 1) << 32
                             | (<uint64_t>c.slot + 1))
        fp_fence_seq_cst()
        nd = fp_load_u64_seq_cst(&w.ctl.next_deadline)
        if nd == 0 or deadline < nd:
            fp_dispatcher_wake(w.ctl)
    return True

cdef inline bint _task_finish(fp_task_ctl *t) noexcept nogil:
    # The task has run: RUNNING back to IDLE, unless its owner stopped it
    # meanwhile (STOP: a cancel or a timeout completed it, and what it made
    # is dropped).  acq_rel, as the start.
    cdef uint32_t seen = FP_TS_RUNNING
    return fp_cas_u32_acq_rel(&t.state, &seen, FP_TS_IDLE)

cdef int fp_worker_run_cell(fp_worker *w, fp_cell *c) noexcept nogil:
    """Run one task cell; publish its result.  1 if this worker is lost."""
    cdef fp_cell r
    cdef int lost = 0
    cdef int rc
    cdef fp_timing tm
    cdef fp_task_ctl *t = &w.tctl[c.slot]
    # relaxed: the record is a hint for observers, ordered by the start below.
    fp_store_u32_relaxed(&w.rec.slot, c.slot)
    r.slot = c.slot
    r.b.i = 0
    if not _task_start(w, c, t):
        # Cancelled before it started: it never runs.  Its owner completed
        # it already; the result cell only gives the slot back.
        if fp_kernel_skip(c, &r, w.job_pages) == KR_DONE:
            fp_worker_publish(w, &r)
        fp_store_u32_relaxed(&w.rec.slot, FP_NO_SLOT)
        fp_room_check(w.ctl)        # it waited: a bounded queue has room now
        return 0
    fp_task_begin(&tm, w.ctl, w.tasks, w.stats, w.stamps, c.slot)
    rc = fp_kernel_run(c, &r, w.job_pages, w.operands, w.kmap, &t.state)
    if rc == KR_PARTIAL:
        fp_task_end(&tm, w.ctl, w.stats, c.kind)
        fp_store_u32_relaxed(&w.rec.slot, FP_NO_SLOT)
        return 0            # a chunk of a job whose last chunk publishes
    if rc == KR_HELD:
        if w.job_pages != NULL:
            # Before waiting for the GIL: shutdown(cancel_futures=True)
            # cancels only what no worker has taken, as the stdlib's leaves
            # a work item that a thread took from its queue.
            fp_store_u32_release(&fp_job_at(w.job_pages, c.slot).taken, 1)
        lost = w.hooks.run_held(w.hooks.owner, c, &r, w.idx)
    if not _task_finish(t) and w.track:
        # Its owner stopped the task and is killing this process for it
        # (a cancel, a timeout): the task ended first, so leave now; the
        # owner gives back what it held, as for any dead worker.
        fp_store_u32_relaxed(&w.rec.leaving, FP_LEAVE_STOPPED)
        _exit(FP_STOPPED_EXIT)
    fp_task_end(&tm, w.ctl, w.stats, c.kind)
    fp_worker_publish(w, &r)
    fp_store_u32_relaxed(&w.rec.slot, FP_NO_SLOT)
    fp_store_u32_relaxed(&w.rec.tasks_low, fp_load_u32_relaxed(&w.rec.tasks_low) + 1)
    return lost

cdef void fp_worker_publish(fp_worker *w, fp_cell *r) noexcept nogil:
    cdef uint64_t pos
    while fp_ring_push_pos(w.results, r, &pos, &w.rec.rclaim if w.track else NULL) != FP_OK:
        fp_yield()          # the dispatcher is mid-pop on this cell; never drop
    fp_dispatcher_notify(w.ctl)
    # The owner's dispatcher starts with the first result that no waiting
    # thread takes (a short-lived pool whose tasks are all waited on never
    # needs one).  Read after notify: a proxy seen here will take this
    # result, and one that steps aside starts the dispatcher itself.
    cdef int i
    if (w.hooks.dispatcher_started == NULL
            or fp_load_u32_acquire(w.hooks.dispatcher_started)):
        return
    # No dispatcher yet.  The thread that submitted this task is often a few
    # microseconds from waiting on it, and then takes it itself: give it
    # that long before starting a thread that a short-lived pool never needs.
    for i in range(TAKER_GRACE):
        if (fp_load_u32_seq_cst(&w.ctl.proxy) or fp_ring_empty(w.results)
                or fp_load_u32_acquire(w.hooks.dispatcher_started)):
            return
        fp_cpu_relax()
    w.hooks.start_dispatcher(w.hooks.owner)


# ------------------------------------------------------------ worker processes
#
# In a worker process the loop is the same; what the owner's hook does in a
# thread (run Python code with the slot's objects) is done here from the
# task's payload block (its number in cell.a): `runner(block, kind)` reads
# the task, runs it, writes the result or the exception back into the
# block and returns the result kind (R_PAYLOAD or R_PAYLOAD_ERR).  It must
# not raise.

cdef int _process_run_held(void *owner, const fp_cell *c, fp_cell *r, int idx) noexcept nogil:
    with gil:
        try:
            r.kind = (<object>owner)(<int>c.a.i, c.kind)     # its payload block
            return 0
        except BaseException:
            # The runner reports what it can; if even that failed, this
            # process cannot go on: it leaves, and its owner fails the task
            # it held (its record still names it) as for any dead worker.
            os._exit(70)
    return 1


# For the Python side of a worker process (fastpool.workers); any other kind
# it is given is a kernel's K_PY task (see kernel_py_op).
PAYLOAD_PROC = K_PROC
PAYLOAD_CALL = K_CALL
RESULT_PAYLOAD = R_PAYLOAD
RESULT_PAYLOAD_ERR = R_PAYLOAD_ERR


def run_worker_process(Segment seg, int idx, runner, uint64_t max_tasks=0):
    """The body of a worker process: attached to `seg`, run tasks until the
    pool stops (0), `max_tasks` have run (2) or it leaves idle (3)."""
    cdef fp_worker w
    cdef int rc
    if seg.ctl == NULL or not 0 <= idx < <int>seg.ctl.n_workers:
        raise ValueError(f"no worker {idx} in this segment")
    cdef KernelMap kmap = KernelMap(seg)
    memset(&w, 0, sizeof(w))
    w.ctl = seg.ctl
    w.tasks = seg.tasks
    w.results = seg.results
    w.operands = seg.operands
    w.kmap = &kmap.m
    w.rec = &seg.workers[idx]
    w.stats = &seg.wstats[idx]
    w.stamps = seg.stamps
    w.tctl = seg.tctl
    w.idx = idx
    w.track = True
    w.tasks_left = max_tasks
    w.hooks.owner = <void *>runner
    w.hooks.run_held = _process_run_held
    w.hooks.dispatcher_started = NULL    # the owner keeps one running
    w.rec.pid = os.getpid()
    global fp_fault
    fp_fault = &seg.ctl.fault_point
    _here_runs(seg, idx)        # for fastpool.cancelled() (_engine.pyx)
    with nogil:
        rc = fp_worker_loop(&w)
    return rc


def _leave_init_failed(Segment seg, int idx):
    """A worker process whose initializer raised says so before it exits."""
    if seg.ctl != NULL and 0 <= idx < <int>seg.ctl.n_workers:
        fp_store_u32_relaxed(&seg.workers[idx].leaving, FP_LEAVE_INIT_FAILED)
