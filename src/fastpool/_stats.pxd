# A pool's stats, kept in its shared segment so that another process can
# read them (python -m fastpool stats|top NAME).  Nothing here takes a lock
# or a contended atomic: every word has one writer at a time, which updates
# it with a relaxed load and store; readers load it relaxed and may see a
# set of counters a few tasks apart, never a torn word.
#
#   fp_ctl.stats           the owner's counters: submitters and the token
#                          holder write them, one at a time under the GIL
#   fp_worker_stats x n    one block per worker, written by that worker only:
#                          wait and run time histograms, busy time
#   stamps x slots         when each timed task was accepted (its submitter
#                          writes it, the worker that starts it reads it)
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

cdef enum:
    FP_HIST_BUCKETS = 48     # log2 buckets of nanoseconds (clock.h); the last
                             # holds everything from 2**46 ns (19 hours) on
    FP_SAMPLE = 32           # one task in 32 of the short kinds is timed, and
                             # counts for 32 (a clock read costs more than the task)

ctypedef struct fp_pool_stats:
    # Rarely written: workers read these on every task.
    uint64_t t0_ns           # when the pool was made (fp_now_ns)
    int64_t max_queue        # -1: no bound
    uint32_t room_watch      # 1: workers wake producers waiting for room when a task ends
    uint32_t drain_armed     # 1: a task had to wait; the owner emits "drain" once none waits
    uint8_t _pad0[40]
    # Submitters.
    uint64_t submitted       # tasks accepted
    uint64_t overflow        # of those, waiting in the FIFO (the rest of `queued` is in the task ring)
    uint64_t refused         # QueueFullError raised
    uint64_t skipping        # of `queued`, cancelled: a worker will skip them (see Core._cancel_slot)
    uint8_t _pad1[32]
    # The token holder (dispatcher), and the pool's lifecycle.
    uint64_t completed       # tasks that gave a result
    uint64_t failed          # tasks that completed with an exception
    uint64_t cancelled
    uint64_t timed_out
    uint64_t respawns        # workers started to replace one that left
    uint32_t workers         # workers alive now
    uint32_t _pad2a
    uint8_t _pad2[16]
    # Producers waiting for room (wait_for_room) park on room_seq.
    uint32_t room_seq
    uint32_t room_waiters
    uint8_t _pad3[56]

ctypedef struct fp_worker_stats:
    uint64_t busy_ns         # time spent running timed tasks (each times its weight)
    uint64_t wait_max
    uint64_t run_max
    uint64_t timed           # tasks timed (the histograms count each times its weight)
    uint32_t busy            # 1 while the worker runs a task (until just before it publishes)
    uint8_t _pad[28]
    uint64_t wait[FP_HIST_BUCKETS]     # admission to start
    uint64_t run[FP_HIST_BUCKETS]      # start to end

# A task's timing, in the worker that runs it.
ctypedef struct fp_timing:
    uint64_t start           # 0: the task is not timed
    uint64_t wait
    uint64_t end
