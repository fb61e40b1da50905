from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t

cdef class Core:
    cdef readonly Segment seg
    cdef fp_ctl *ctl
    cdef fp_ring *tasks
    cdef fp_ring *results
    cdef fp_word *operands          # the segment's operand words (a kernel's third operand)
    cdef SlotTable slots
    cdef object overflow
    cdef int32_t n_overflow
    cdef int32_t record_credits
    cdef int32_t max_chunks
    cdef readonly uint32_t state
    cdef int default_op
    cdef readonly object processor
    cdef object future_cls
    cdef bint lose_on_base_exception
    cdef readonly uint64_t tasks_in
    cdef readonly uint64_t tasks_out
    cdef readonly object _failure   # what broke the engine, if anything
    cdef uint32_t disp_started      # the dispatcher thread exists (or runs inline)
    cdef public int32_t n_workers   # the pool's size
    cdef public int32_t n_spawned   # worker indexes started so far (0 .. n_workers)
    cdef public bint grow_on_submit # start workers on demand from the submit path
    cdef object ctx_vars            # the values the snapshot below was taken of
    cdef object ctx_snap
    cdef dict __dict__
    # Result cells the dispatcher took from the ring and has not completed
    # yet: on the Core, not in a local, so that a callback that waits can
    # complete them (see _dispatch_until).  256 is BATCH in _engine.pyx.
    cdef fp_cell batch[256]
    cdef int batch_pos
    cdef int batch_len
    cdef object deferred            # deliveries a wait in a callback put off
    cdef int pump_depth             # waits in callbacks, one inside another
    cdef readonly bint procs        # the workers are processes: Python tasks travel as payloads
    cdef object area                # their payload blocks (a PayloadArea), or None
    cdef int32_t *free_blocks       # a stack of the free payload blocks' numbers
    cdef int32_t n_free_blocks
    # Stats and the bounded queue (_stats.pyx).
    cdef fp_pool_stats *stats       # the owner's counters, in the segment
    cdef uint64_t *stamps           # admission stamps, one per task slot, in the segment
    cdef uint64_t pending_stamp     # the stamp _admit writes for the task it admits (0: none)
    cdef uint32_t short_seq         # short-kind tasks submitted: one in FP_SAMPLE is timed
    cdef readonly int64_t max_queue # tasks that may wait for a worker (-1: no bound)
    cdef bint watch_drain           # a "drain" listener exists
    cdef bint drain_armed           # a task had to wait: emit "drain" once none waits
    cdef object _last_stats         # the stats as the pool stopped
    # Cancel and deadlines (_engine.pyx).
    cdef fp_task_ctl *tctl          # the segment's task control words, by task slot
    cdef readonly int64_t default_limit   # ns a task may run unless it says otherwise (0: no limit)
    cdef int32_t n_timed            # tasks with a timeout that hold a slot
    cdef list timer_heap            # (deadline, slot, gen) of timed tasks seen running
    cdef uint64_t *timed_seen       # each worker record's `timed` word, as last read

    cdef int _submit(self, int op, object task, object cb, object ctx, uint8_t mode,
                     object handle, int64_t limit) except -1
    cdef object _encode(self, int op, object task, fp_cell *c, fp_word *x)
    cdef object _context_snapshot(self)
    cdef int32_t _cells_needed(self, const fp_cell *c, object obj) noexcept
    cdef bint _has_room(self, const fp_cell *c, object obj) noexcept
    cdef int32_t _admit(self, fp_cell *c, const fp_word *x, object obj, object cb, object ctx,
                        uint8_t mode, int64_t limit, object handle, object queued) except -1
    cdef int _push_task(self, fp_cell *c, uint64_t *pos) except -1
    cdef int _fail_slot(self, int32_t slot, object err) except -1
    cdef int _put_payload(self, int32_t slot, fp_cell *c, object obj) except -1
    cdef object _read_payload(self, int32_t slot)
    cdef int _post_map_helpers(self, MapJob job, int32_t helpers) except -1
    cdef object _new_future(self)
    cdef object _to_payload(self, fp_cell *c, object obj)
    cdef int32_t _held_by(self, int idx) noexcept
    cdef void _start_dispatcher(self) noexcept with gil
    cdef int _run_python(self, const fp_cell *c, fp_cell *r, int idx) noexcept with gil
    cdef int _collect(self, fp_cell *out, int limit, uint32_t seen, int64_t wait_ns,
                      bint park) noexcept nogil
    cdef int _complete(self, fp_cell *r, bint defer=*) except -1
    cdef int _deliver_later(self, uint8_t mode, object cb, object ctx, object err, object value) except -1
    cdef int _run_deferred(self) except -1
    cdef int _complete_batch(self) except -1
    cdef int _collect_holding(self, uint32_t seen, int64_t wait_ns, bint proxy) noexcept nogil
    cdef void _release_slot(self, int32_t slot) noexcept
    cdef void _release_flags(self, int32_t slot, uint8_t flags) noexcept
    cdef bint _cancel_slot(self, int32_t slot, uint32_t gen) except -1
    cdef bint _cancel_queued(self, object queued) except -1
    cdef int _finish_early(self, int32_t slot, object err, bint timed_out, bint defer,
                           bint stop) except -1
    cdef int _cancel_future(self, object fut) except -1
    cdef int _deliver_soon(self, uint8_t mode, object cb, object ctx, object err) except -1
    cdef int _stop_running(self, int32_t slot) except -1
    cdef int64_t _timers(self, bint defer) except -2
    cdef int64_t _no_timers(self) noexcept
    cdef bint _timers_scan(self) except -1
    cdef int _time_out(self, int32_t slot, bint defer) except -1
    cdef int _deliver(self, uint8_t mode, object cb, object ctx, object err, object value) except -1
    cdef int _flush_overflow(self) except -1
    cdef bint _queue_room(self) noexcept
    cdef int _arm_drain(self) except -1
    cdef int _teardown(self) except -1
    cdef bint _set_state(self, uint32_t state)
