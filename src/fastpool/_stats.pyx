# A pool's stats (see _stats.pxd for where each word lives and who writes it).
#
#  submitter (GIL)                 worker (no GIL)                      token holder (GIL)
#  submitted += 1                  busy = 1; stamp = stamps[slot]       completed / failed /
#  timed? stamps[slot] = now  -->  timed: start = now, wait = start -   cancelled += 1
#  (every task of a long kind,     stamp; run; end = now; add both      stamps[slot] = 0 as the
#  one in FP_SAMPLE of a short     to its own histograms; busy = 0; --> slot is given back
#  one)                            publish the result
#
SAMPLE = FP_SAMPLE      # for tests and tools

# Queued is read from what the pool keeps anyway: the task ring's
# positions and the FIFO's length; running from the workers' `busy` words.
from libc.limits cimport INT_MAX
from libc.math cimport ceil


cdef inline void fp_task_begin(fp_timing *tm, fp_ctl *ctl, fp_ring *tasks, fp_worker_stats *s,
                               const uint64_t *stamps, uint32_t slot) noexcept nogil:
    # A worker took a task cell (its slot holds a stamp if it is timed).
    # relaxed: the stamp was written before the cell was pushed (release),
    # and our pop of the cell was an acquire.
    cdef uint64_t stamp = fp_load_u64_relaxed(&stamps[slot])
    fp_store_u32_relaxed(&s.busy, 1)
    tm.start = 0
    if stamp:
        tm.start = fp_now_ns()
        tm.wait = tm.start - stamp if tm.start > stamp else 0
    # The owner waits for the queue to empty (a "drain" listener): the task
    # we took may have been the last one waiting.  It looks again when woken.
    if fp_load_u32_relaxed(&ctl.stats.drain_armed) and fp_ring_empty(tasks):
        fp_dispatcher_wake(ctl)

cdef inline void _hist_add(uint64_t *hist, uint64_t *top, uint64_t ns, uint64_t weight) noexcept nogil:
    cdef unsigned b = fp_log2_bucket(ns)
    if b >= FP_HIST_BUCKETS:
        b = FP_HIST_BUCKETS - 1
    # This worker is the only writer: a relaxed load and store, no RMW.
    fp_store_u64_relaxed(&hist[b], fp_load_u64_relaxed(&hist[b]) + weight)
    if ns > fp_load_u64_relaxed(top):
        fp_store_u64_relaxed(top, ns)

cdef inline void fp_task_end(fp_timing *tm, fp_ctl *ctl, fp_worker_stats *s, uint32_t kind) noexcept nogil:
    # The task has run; its result is not published yet, so whoever sees
    # the result sees the worker free and the task's times in the stats.
    # A task of a short kind (see _worker.pyx) stands for FP_SAMPLE of them.
    cdef uint64_t run, weight
    if tm.start:
        tm.end = fp_now_ns()
        weight = FP_SAMPLE if _short_kind(kind) else 1
        run = tm.end - tm.start
        _hist_add(s.wait, &s.wait_max, tm.wait, weight)
        _hist_add(s.run, &s.run_max, run, weight)
        fp_store_u64_relaxed(&s.busy_ns, fp_load_u64_relaxed(&s.busy_ns) + run * weight)
        fp_store_u64_relaxed(&s.timed, fp_load_u64_relaxed(&s.timed) + 1)
    fp_store_u32_relaxed(&s.busy, 0)
    fp_room_check(ctl)

cdef inline void fp_room_check(fp_ctl *ctl) noexcept nogil:
    # A worker is free, or a task left the queue without running (its
    # cancel): a bounded queue has room (see Core._queue_room).
    if fp_load_u32_relaxed(&ctl.stats.room_watch):
        # The Dekker pair with wait_for_room: we cleared `busy` (or took
        # the cell), then read room_waiters; a producer counts itself in,
        # then reads the `busy` words and the ring.  seq_cst fence: one of
        # us sees the other.
        fp_fence_seq_cst()
        if fp_load_u32_relaxed(&ctl.stats.room_waiters):
            fp_room_wake(ctl)

cdef inline void fp_room_wake(fp_ctl *ctl) noexcept nogil:
    # Producers parked in wait_for_room look again.
    fp_add_u32_seq_cst(&ctl.stats.room_seq, 1)
    fp_futex_wake(&ctl.stats.room_seq, INT_MAX)

cdef inline void fp_stat_add(uint64_t *counter, uint64_t n) noexcept nogil:
    # For the owner's counters: one writer at a time (the GIL); readers in
    # other processes load them relaxed.
    fp_store_u64_relaxed(counter, fp_load_u64_relaxed(counter) + n)


# ------------------------------------------------------------------ reading

cdef uint32_t fp_running(const fp_ctl *ctl, const fp_worker_stats *ws) noexcept nogil:
    """Workers running a task now."""
    cdef uint32_t i, n = 0
    for i in range(ctl.n_workers):
        n += fp_load_u32_relaxed(&ws[i].busy) != 0
    return n

cdef uint64_t fp_queued(fp_ctl *ctl, fp_ring *tasks) noexcept nogil:
    """Tasks accepted and not yet started: task cells no worker has taken
    (an array task counts once per chunk), and the FIFO behind them, less
    those cancelled (their cells wait for a worker to skip them)."""
    # The dequeue position first: it never passes the enqueue position.
    cdef uint64_t out = fp_load_u64_relaxed(&tasks.dequeue_pos)
    cdef uint64_t into = fp_load_u64_relaxed(&tasks.enqueue_pos)
    cdef uint64_t n = (into - out if into > out else 0) + fp_load_u64_relaxed(&ctl.stats.overflow)
    cdef uint64_t skipping = fp_load_u64_relaxed(&ctl.stats.skipping)
    return n - skipping if n > skipping else 0

cdef dict _hist_summary(uint64_t *hist, uint64_t top):
    # p50 and p99 interpolated within their log2 bucket, never above the
    # max; in seconds.
    cdef uint64_t count = 0, seen, rank
    cdef int b
    for b in range(FP_HIST_BUCKETS):
        count += hist[b]
    out = {"p50": None, "p99": None, "max": top / 1e9 if count else None}
    if count == 0:
        return out
    for key, q in (("p50", 0.50), ("p99", 0.99)):
        rank = max(1, <uint64_t>ceil(q * count))     # the rank-th smallest
        seen = 0
        for b in range(FP_HIST_BUCKETS):
            if seen + hist[b] >= rank:
                lo = 0.0 if b == 0 else <double>((<uint64_t>1) << (b - 1))
                hi = 1.0 if b == 0 else <double>((<uint64_t>1) << b)
                ns = lo + (hi - lo) * (rank - seen) / hist[b]
                out[key] = min(ns, <double>top) / 1e9
                break
            seen += hist[b]
    return out

def segment_stats(Segment seg):
    """The stats of the pool whose segment this is, as a dict (see
    WorkerPool.stats)."""
    cdef fp_ctl *ctl = seg.ctl
    cdef fp_worker_stats *w
    cdef uint64_t wait[FP_HIST_BUCKETS]
    cdef uint64_t run[FP_HIST_BUCKETS]
    cdef uint64_t wait_max = 0, run_max = 0, busy = 0, timed = 0, now
    cdef uint32_t i
    cdef int b
    if ctl == NULL:
        raise ValueError("the segment is closed")
    memset(wait, 0, sizeof(wait))
    memset(run, 0, sizeof(run))
    for i in range(ctl.n_workers):
        w = &seg.wstats[i]
        for b in range(FP_HIST_BUCKETS):
            wait[b] += fp_load_u64_relaxed(&w.wait[b])
            run[b] += fp_load_u64_relaxed(&w.run[b])
        wait_max = max(wait_max, fp_load_u64_relaxed(&w.wait_max))
        run_max = max(run_max, fp_load_u64_relaxed(&w.run_max))
        busy += fp_load_u64_relaxed(&w.busy_ns)
        timed += fp_load_u64_relaxed(&w.timed)
    now = fp_now_ns()
    cdef fp_pool_stats *s = &ctl.stats
    uptime = (now - s.t0_ns) / 1e9 if now > s.t0_ns else 0.0
    max_queue = fp_load_u64_relaxed(<uint64_t *>&s.max_queue)
    return {
        "submitted": fp_load_u64_relaxed(&s.submitted),
        "completed": fp_load_u64_relaxed(&s.completed),
        "failed": fp_load_u64_relaxed(&s.failed),
        "cancelled": fp_load_u64_relaxed(&s.cancelled),
        "timed_out": fp_load_u64_relaxed(&s.timed_out),
        "queued": fp_queued(ctl, seg.tasks),
        "running": fp_running(ctl, seg.wstats),
        "workers": fp_load_u32_relaxed(&s.workers),
        "respawns": fp_load_u64_relaxed(&s.respawns),
        "refused": fp_load_u64_relaxed(&s.refused),
        "wait": _hist_summary(wait, wait_max),
        "run": _hist_summary(run, run_max),
        "timed": timed,
        "busy": busy / 1e9,
        "utilization": min(1.0, busy / 1e9 / (ctl.n_workers * uptime)) if uptime > 0 else 0.0,
        "uptime": uptime,
        "size": ctl.n_workers,
        "max_queue": None if <int64_t>max_queue < 0 else <int64_t>max_queue,
        "kind": "process" if ctl.n_blocks else "thread",
        "owner_pid": ctl.owner_pid,
        "state": ("running", "closing", "terminating", "closed")[min(fp_load_u32_relaxed(&ctl.state), 3)],
    }
