# A worker: the loop that takes task cells, runs them and publishes results.
# It needs the segment (control words, its record, the rings) and the kernel
# table, nothing else, so the same loop serves a thread of the pool's owner
# or, given an attached segment, another process.  What only the owner can
# do is declared here as hooks: running a task whose code or data it holds
# (Python callables and objects in its task slots), and making sure a
# dispatcher exists to complete what is published.
from libc.stdint cimport uint32_t, uint64_t

ctypedef struct fp_hooks:
    void *owner
    # Run a task that no native kernel takes: fill r, return 1 if this
    # worker is lost (it leaves its loop; the owner replaces it).  Called
    # without the GIL; the hook takes it if it needs it.
    int (*run_held)(void *owner, const fp_cell *c, fp_cell *r, int idx) noexcept nogil
    # After publishing a result, when *dispatcher_started is 0 and no
    # waiting thread will take it: start the owner's dispatcher.
    const uint32_t *dispatcher_started      # NULL: there is always one
    void (*start_dispatcher)(void *owner) noexcept nogil

ctypedef struct fp_worker:
    fp_ctl *ctl
    fp_ring *tasks
    fp_ring *results
    fp_worker_rec *rec          # this worker's record in the segment
    fp_worker_stats *stats      # its stats block in the segment
    const uint64_t *stamps      # the segment's admission stamps (_stats.pyx)
    fp_task_ctl *tctl           # the segment's task control words (a task's state, its deadline)
    fp_job **job_pages          # the owner's array jobs; NULL in another process
    const fp_word *operands     # the segment's operand words (see _segment.pyx)
    fp_kmap *kmap               # a worker process: its owner's kernel indexes (NULL: a thread)
    int idx
    bint track                  # a worker process: record every ring claim (see _ring.pyx)
    uint64_t tasks_left         # leave after this many tasks (0: never)
    fp_hooks hooks

cdef int fp_worker_loop(fp_worker *w) noexcept nogil
cdef int fp_worker_run_cell(fp_worker *w, fp_cell *c) noexcept nogil
cdef void fp_worker_publish(fp_worker *w, fp_cell *r) noexcept nogil
cdef bint fp_ring_has_work(void *r) noexcept nogil
