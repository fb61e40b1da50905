# The engine: native worker loops, the dispatcher loop and the submit path.
#
#  submitters (GIL)             workers (no GIL)                dispatcher (GIL per batch)
#  encode task -> take slot ->  pop task ring -> kernel ->      pop result ring in batches ->
#  push task ring -> wake one   push result ring -> notify      free slot, callback(err, result)
#  idle worker if none is       dispatcher if it sleeps         in the task's Context, or
#  awake                                                        resolve its future
#
# Invariants.  A task holds one slot from submit until the dispatcher takes
# its result; it may hold up to `max_chunks` task-ring cells meanwhile
# (`record_credits` counts them).  Both are given out only while they last,
# so a ring push can only meet a cell that a consumer is still copying out
# (it then waits for it, see _push_task); what does not fit waits, in order, in
# `overflow` until the dispatcher frees room.  Every accepted task yields
# exactly one result cell (or, at terminate, is failed by the teardown from
# its unpopped task cells), and the dispatcher completes it exactly once,
# unless a cancel or a timeout completed it first (see "Cancel and
# deadlines" below): then what comes back only gives the slot back.
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Copy, PyContext_Enter, PyContext_Exit
from cpython.object cimport PyObject

cdef extern from "Python.h":
    # The thread's current context (NULL until it first needs one): public
    # in the non-limited API since 3.7.
    ctypedef struct fp_tstate "PyThreadState":
        PyObject *context
    fp_tstate *fp_tstate_get "PyThreadState_Get"()

cdef extern from "context.h":
    PyObject *fp_context_vars(PyObject *ctx)

cdef bint _context_layout_checked():
    """Whether fp_context_vars reads the mapping of real contexts: a copy
    shares it, a set in one context replaces it there only."""
    import contextvars
    var = contextvars.ContextVar("fastpool-layout-check")
    c1 = contextvars.copy_context()
    c2 = c1.copy()
    shared = fp_context_vars(<PyObject *>c1)
    if shared == NULL or shared != fp_context_vars(<PyObject *>c2):
        return False
    c1.run(var.set, 1)
    return (fp_context_vars(<PyObject *>c1) != shared
            and fp_context_vars(<PyObject *>c2) == shared
            and c1.get(var) == 1 and var not in c2)

cdef bint _share_snapshots = _context_layout_checked()

def _context_snapshots_shared():
    """Whether tasks from an unchanged context share one snapshot (tests)."""
    return _share_snapshots
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memset
cimport cython
import os
from time import monotonic as _monotonic
from concurrent.futures._base import InvalidStateError, Future, CancelledError as _CancelledError
from heapq import heappush as _heappush, heappop as _heappop, heapify as _heapify
import threading as _threading
from fastpool.errors import TaskTimeoutError as _TaskTimeoutError
# pickle, imported with the first process pool: `import fastpool` stays cheap.
_loads = _dumps = _in_band_only = _OutOfBandWanted = _mloads = _mdumps = None


cdef inline bint _plain(object x):
    # What marshal carries exactly (see _payload.plain).
    cdef type t = type(x)
    if t is int or t is float or t is bool or x is None:
        return True
    return (t is str or t is bytes) and len(x) <= 4096


cdef bint _plain_tuple(object t):
    # A tuple of a few plain values (a kernel's operands, a small task).
    if type(t) is not tuple or len(<tuple>t) > 8:
        return False
    for a in <tuple>t:
        if not _plain(a):
            return False
    return True


cdef bint _plain_call(object args, object kwargs):
    if type(args) is not tuple or type(kwargs) is not dict:
        return False
    for a in <tuple>args:
        if not _plain(a):
            return False
    for k, v in (<dict>kwargs).items():
        if type(k) is not str or not _plain(v):
            return False
    return True

cdef extern from "Python.h":
    object PyObject_GenericGetDict(object, void *)

cdef enum:
    # what a submit runs: a native kernel (its index in the table, >= 0), or
    OP_PROC = -1           # the pool's processor(task)
    OP_CALL = -2           # fn(*args, **kwargs)

    MODE_CALLBACK = 0
    MODE_FUTURE = 1
    MODE_QUIET = 2         # nothing waits for the task (a native map's helpers)

    # slots.flags: what else a task slot holds (see "Cancel and deadlines")
    SLOT_TIMED = 1         # the task has a timeout: its limit is in the slot's control word
    SLOT_ARMED = 2         # it was seen running: its deadline is in timer_heap
    SLOT_DONE = 4          # completed early (a cancel, a timeout): what comes back is dropped
    SLOT_RESET = 8         # its state word needs resetting when the slot is given back
    SLOT_SKIP = 16         # cancelled before it started: counted in stats.skipping

    BATCH = 256            # results taken per dispatcher round
    DISPATCH_SPIN = 200    # same for the dispatcher
    MIN_CHUNK = 16384      # elements below which an array is not split further
    STALL_NS = 5000000     # a wait in a callback runs a put-off callback after this long

# The hooks a worker thread calls into its pool (see _worker.pxd).  The
# thread's own reference keeps the pool alive while its worker runs.

cdef int _hook_run_held(void *owner, const fp_cell *c, fp_cell *r, int idx) noexcept nogil:
    return (<Core>owner)._run_python(c, r, idx)

cdef void _hook_start_dispatcher(void *owner) noexcept nogil:
    (<Core>owner)._start_dispatcher()

cdef inline bint _needs_block(uint32_t kind, bint procs) noexcept:
    # A Python task for a worker process travels pickled in a payload block.
    return procs and (kind == K_PROC or kind == K_CALL or (kind & K_BASE_MASK) == K_PY)

cdef fp_pool_stats _no_stats     # where a closed pool's counters go

cdef uint64_t _pow2_at_least(uint64_t n) noexcept:
    cdef uint64_t c = 2
    while c < n:
        c <<= 1
    return c


cdef class _Unreadable:
    """A payload that could not be unpickled (its exception)."""
    cdef object exc

    def __cinit__(self, exc):
        self.exc = exc


@cython.no_gc
cdef class _Queued:
    """A task waiting in the FIFO, already encoded (read once, at submit).

    Not tracked by the cyclic GC: a burst of submits queues thousands,
    each of which every collection would visit, and one is dropped as soon
    as its task moves into the ring (or fails at close), so no cycle
    through it outlives the pool."""
    cdef fp_cell cell
    cdef fp_word x          # a kernel's third operand (cell.kind & K_HAS_C)
    cdef object obj, cb, ctx
    cdef uint8_t mode
    cdef bint started       # its future was marked running (worker processes)
    cdef uint64_t stamp     # when it was accepted, if it is timed (_stats.pyx)
    cdef int64_t limit      # ns it may run once started (0: no timeout)
    cdef int32_t slot       # -1 while it waits; then its task slot, or -2: it completed waiting
    cdef uint32_t gen       # that slot's generation (SlotTable.gen)


cdef class Core:
    """Native part of a pool; fastpool.pool.WorkerPool builds on it."""

    def _core_init(self, int32_t num_threads, int32_t ring_size, processor,
                   bint lose_on_base_exception, future_cls, named=False,
                   uint32_t block_size=0, int32_t n_blocks=0):
        """`n_blocks` > 0: the workers are processes attached to a named
        segment; Python tasks and results travel pickled through payload
        blocks of `block_size` bytes (see _payload.py), one per Python task
        in the rings: at most `n_blocks` of them at once, the rest wait in
        the FIFO (native tasks travel in the cells and need none).
        `named`: the segment gets a name (True), or this name (a str), so
        that other processes can read its stats."""
        cdef int32_t i
        from collections import deque
        # Every worker must be able to hold a task at once, or tasks that
        # wait for each other (a barrier) could never all start.
        ring_size = max(ring_size, <int32_t>_pow2_at_least(num_threads))
        self.max_chunks = min(2 * num_threads, ring_size)
        self.n_workers = num_threads
        self.record_credits = ring_size
        self.lose_on_base_exception = lose_on_base_exception
        self.future_cls = future_cls
        self.processor = processor
        self.default_op = (<Kernel>processor).index if isinstance(processor, Kernel) else OP_PROC
        if n_blocks and isinstance(processor, Kernel) and isinstance((<Kernel>processor).spec, str):
            raise ValueError(f"processor: the {(<Kernel>processor).what} cannot run in worker "
                             f"processes: {(<Kernel>processor).spec}")
        self.slots = SlotTable(ring_size)
        self.overflow = deque()
        self.deferred = deque()
        n_blocks = min(n_blocks, ring_size)
        self.seg = Segment.create(num_threads, ring_size,
                                  _pow2_at_least(ring_size + 2 * num_threads + 2),
                                  named or n_blocks != 0, block_size, n_blocks)
        self.stats = &self.seg.ctl.stats
        self.stamps = self.seg.stamps
        self.tctl = self.seg.tctl
        self.max_queue = -1
        self.timer_heap = []
        self.timed_seen = <uint64_t *>calloc(num_threads, sizeof(uint64_t))
        if self.timed_seen == NULL:
            raise MemoryError()
        if n_blocks:
            global _loads, _dumps, _in_band_only, _OutOfBandWanted, _mloads, _mdumps
            from fastpool._payload import PayloadArea, _in_band_only, _OutOfBandWanted
            from marshal import loads as _mloads, dumps as _mdumps
            from pickle import loads as _loads, dumps as _dumps
            self.procs = True
            self.area = PayloadArea(self.seg.payload_view(), n_blocks, block_size, spill_cache=True)
            self.free_blocks = <int32_t *>malloc(n_blocks * sizeof(int32_t))
            if self.free_blocks == NULL:
                raise MemoryError()
            for i in range(n_blocks):       # block 0 on top: a quiet pool reuses a few
                self.free_blocks[i] = n_blocks - 1 - i
            self.n_free_blocks = n_blocks
        self.ctl = self.seg.ctl
        self.tasks = self.seg.tasks
        self.results = self.seg.results
        self.operands = self.seg.operands
        self.state = FP_RUNNING

    def _configure_elastic(self, uint32_t min_workers, uint64_t idle_ns):
        """Workers beyond `min_workers` leave after `idle_ns` idle (0: never).
        Before any worker starts: they read it once."""
        self.ctl.min_workers = min_workers
        self.ctl.idle_ns = idle_ns

    def _add_live(self, int32_t n):
        """The Python layer: `n` worker indexes taken (> 0) or given back
        (< 0) by the owner; a worker gives its own back as it leaves idle."""
        if self.ctl != NULL:
            fp_add_u32_seq_cst(&self.ctl.live, <uint32_t>n)

    def _live_workers(self):
        """Workers started and not leaving idle (see _try_leave)."""
        return 0 if self.ctl == NULL else fp_load_u32_seq_cst(&self.ctl.live)

    def _configure_timeout(self, int64_t limit_ns):
        """Tasks may run `limit_ns` unless they say otherwise (0: no limit;
        see task_timeout_ns)."""
        self.default_limit = limit_ns

    def _configure_queue(self, int64_t max_queue):
        """At most `max_queue` tasks wait for a worker (-1: no bound)."""
        self.max_queue = max_queue
        self.stats.max_queue = max_queue
        self.stats.room_watch = max_queue >= 0

    def _inject_fault(self, str point, uint32_t after=1):
        """Tests: the `after`-th time a worker process reaches `point`
        ("claim", "publish", "run", "woken" or "spin"), it dies there
        (exit status 86)."""
        cdef uint32_t code = {"claim": FP_FAULT_CLAIM, "publish": FP_FAULT_PUBLISH,
                              "run": FP_FAULT_RUN, "woken": FP_FAULT_WOKEN,
                              "spin": FP_FAULT_SPIN}[point]
        if self.ctl == NULL or not self.procs:
            raise ValueError("fault points are for worker processes of an open pool")
        fp_store_u32_seq_cst(&self.ctl.fault_after, after)
        fp_store_u32_seq_cst(&self.ctl.fault_point, code)

    def __dealloc__(self):
        if self.free_blocks != NULL:
            c_free(self.free_blocks)
        c_free(self.timed_seen)

    def _payload_prefix(self):
        return None if self.area is None else self.area.spill_prefix

    @property
    def shm_name(self):
        """The shared-memory segment's name, or None (an anonymous mapping)."""
        return None if self.seg is None else self.seg.name

    # ---------------------------------------------------------------- submit

    def run_task(self, task, callback, timeout=None):
        """Run `task`; later call callback(err, result) in this Context.
        Returns a TaskHandle (handle.cancel()).  `timeout`: seconds it may
        run once started (None: the pool's default)."""
        cdef int64_t limit = self.default_limit
        if self.state != FP_RUNNING:
            self._raise_closed()
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if timeout is not None:
            limit = _limit_ns(timeout)
        cdef TaskHandle h = TaskHandle.__new__(TaskHandle)
        h.core = self
        h.slot = -1
        self._submit(self.default_op, task, callback, self._context_snapshot(), MODE_CALLBACK, h, limit)
        return h

    def run(self, task, timeout=None):
        """Run `task`; return a future (awaitable) for its result, whose
        cancel() is the pool's (TaskHandle.cancel)."""
        cdef int64_t limit = self.default_limit
        if self.state != FP_RUNNING:
            self._raise_closed()
        if timeout is not None:
            limit = _limit_ns(timeout)
        fut = self._new_future()
        cdef TaskHandle h = TaskHandle.__new__(TaskHandle)
        h.core = self
        h.slot = -1
        fut._task = h
        self._submit(self.default_op, task, fut, None, MODE_FUTURE, h, limit)
        return fut

    cdef object _new_future(self):
        # A future of this pool.  Its __dict__ is made here, before another
        # thread can see the future.  Before Python 3.12 a collection can run inside the making
        # of an instance __dict__ and switch threads; two threads making the
        # same one at once then each get a dict and the object keeps one:
        # what the other thread writes is lost (3.9, 3.10), or both share
        # storage that one of them frees (3.11).
        fut = self.future_cls()
        PyObject_GenericGetDict(fut, NULL)
        fut._pool = self
        return fut

    def _map_kernel(self, Kernel kernel, items, int32_t helpers):
        """map(kernel, items) for a list or tuple: the calling thread and up
        to `helpers` idle workers read and compute the items; a NativeMap of
        the results (see _map.pyx)."""
        cdef NativeMap results = NativeMap()
        cdef MapJob job
        results.kernel = kernel
        cdef Py_ssize_t n = len(items)
        if n == 0:
            return results
        if self.state != FP_RUNNING:
            self._raise_closed()
        cdef int32_t live = fp_load_u32_relaxed(&self.ctl.live)
        if helpers > 0 and self.grow_on_submit and live < min(helpers, self.n_workers):
            self._grow(helpers - live)     # threads start on demand
        job = MapJob(n, kernel)
        if self.state != FP_RUNNING:    # starting threads let other threads in
            self._raise_closed()
        # From open() until run() returns, no Python code may run and the
        # GIL is never released: helpers are reading the items.
        job.open(items)
        self._post_map_helpers(job, helpers)
        job.run()
        results.job = job
        if (self.ctl != NULL and self.ctl.idle_ns and self._tasks_waiting()
                and fp_load_u32_relaxed(&self.ctl.live) < <uint32_t>self.n_workers):
            # A worker that left idle as the helpers' cells came may have
            # missed them (see _try_leave): someone must take them, or
            # their slot is never free.
            try:
                self._grow(1)
            except Exception as e:
                self._report_quietly(e)
        return results

    cdef int _post_map_helpers(self, MapJob job, int32_t helpers) except -1:
        # Up to `helpers` cells for idle workers, if room is free at once;
        # otherwise the caller does the whole job.  Keeps the GIL.
        cdef fp_cell c
        cdef fp_job *slot_job
        cdef int32_t slot, i
        cdef int64_t need = min(<int64_t>helpers, job.job.nchunks - 1, <int64_t>self.max_chunks)
        if need <= 0 or self.n_overflow or self.slots.nfree == 0 or self.record_credits < need:
            return 0
        slot = self.slots.take()
        self.record_credits -= <int32_t>need
        self.slots.mode[slot] = MODE_QUIET
        self.slots.objs[slot] = job         # the old value is None: no finalizer runs
        self.tasks_in += 1
        slot_job = self.slots.job(slot)
        slot_job.a = <char *>&job.job
        slot_job.cells = <int32_t>need
        slot_job.remaining = need
        c.kind = K_BATCH
        c.slot = <uint32_t>slot
        c.a.i = 0
        c.b.i = 0
        for i in range(need):
            while fp_ring_push(self.tasks, &c) != FP_OK:
                fp_yield()      # as _push_task, but keeping the GIL (see _map_kernel)
        fp_idle_wake(self.ctl)
        return 0

    def _submit_call(self, fn, args, kwargs):
        """Executor.submit: fn(*args, **kwargs) in a worker; a Future."""
        if self.state != FP_RUNNING:
            self._raise_closed()
        fut = self._new_future()
        if type(fn) is Kernel and len(args) == 1 and not kwargs:
            self._submit((<Kernel>fn).index, args[0], fut, None, MODE_FUTURE, None, self.default_limit)
        else:
            self._submit(OP_CALL, (fn, args, kwargs), fut, None, MODE_FUTURE, None, self.default_limit)
        return fut

    cdef int _submit(self, int op, object task, object cb, object ctx, uint8_t mode,
                     object handle, int64_t limit) except -1:
        # The task is read once, here: what waits in the FIFO is its encoded
        # form, so a caller changing the task object later changes nothing.
        # `handle`: its TaskHandle (None: it has none); `limit`: the ns it
        # may run once started (0: no timeout).
        cdef _Queued q
        cdef fp_cell c
        cdef fp_word x
        cdef uint64_t stamp = 0
        if self.max_queue >= 0 and not self._queue_room():
            self._refuse()
        obj = self._encode(op, task, &c, &x)
        if self.procs:
            obj = self._to_payload(&c, obj)
        elif (c.kind & K_BASE_MASK) == K_PY and ctx is None:
            # A kernel's Python operation (numpy's a + b) can read
            # contextvars (numpy's error state): a future's task runs in its
            # submitter's context too.
            ctx = self._context_snapshot()
        # Timed: every task of a long kind, one in FP_SAMPLE of the short
        # ones (a clock read costs more than such a task).
        if _short_kind(c.kind):
            self.short_seq += 1
            if self.short_seq & (FP_SAMPLE - 1) == 1:
                stamp = fp_now_ns()
        elif (c.kind & K_BASE_MASK) != K_ARRAY:
            stamp = fp_now_ns()
        # Encoding ran user code, and any allocation can run a collection
        # whose finalizers let other threads in: a close() may have got
        # through since the caller looked.  Nothing below lets go of the
        # GIL before the task is in the ring or the queue.
        if self.state != FP_RUNNING:
            self._raise_closed()
        if not self.n_overflow and self._has_room(&c, obj):
            if self.procs and mode == MODE_FUTURE:
                # A worker process cannot mark it running: it is running
                # from here on, as the stdlib's once in its call queue.  (A
                # new future has no Condition: this lets no thread in.)
                _start(cb)
            self.pending_stamp = stamp
            # Counted first: admitting may start a thread, which lets the
            # dispatcher complete the task before we get the GIL back.
            fp_stat_add(&self.stats.submitted, 1)
            self._admit(&c, &x, obj, cb, ctx, mode, limit, handle, None)
            if self.watch_drain:
                self._arm_drain()
            return 0
        # Room is freed only by the dispatcher, which then moves these on.
        q = _Queued.__new__(_Queued)
        q.cell = c
        q.x = x
        if _needs_block(c.kind, self.procs) and type(obj) is not bytes:
            obj = self.area.frozen(obj)     # its buffers, as they are now
        q.obj = obj
        q.cb = cb
        q.ctx = ctx
        q.mode = mode
        q.stamp = stamp
        q.limit = limit
        q.slot = -1
        if handle is not None:
            (<TaskHandle>handle).q = q
        if self.state != FP_RUNNING:    # the same, for the allocation just made
            self._raise_closed()
        fp_stat_add(&self.stats.submitted, 1)
        self.overflow.append(q)
        self.n_overflow += 1
        fp_store_u64_relaxed(&self.stats.overflow, self.n_overflow)
        if self.watch_drain:
            self._arm_drain()
        if not self.disp_started:
            self._ensure_dispatcher()   # only it moves the queue on
        if self.ctl != NULL and self.n_overflow and self._has_room(
                &(<_Queued>self.overflow[0]).cell, (<_Queued>self.overflow[0]).obj):
            # Making the entry can run a collection, whose finalizers can
            # let the dispatcher run: it may have freed every slot and gone
            # to sleep since we looked.  Wake it to move the queue on.
            fp_dispatcher_wake(self.ctl)
        return 0

    cdef object _to_payload(self, fp_cell *c, object obj):
        # A worker process gets Python tasks pickled, now (the task is read
        # once): what cannot be pickled fails this task alone, with the
        # pickling error, through the native K_FAIL echo.  A task with no
        # large buffer (nearly all) is one stream: bytes, nothing more (no
        # buffer list that lives as long as it waits); marshal's when it is
        # made of plain values only (see _payload.py), else pickle's.  The
        # others are what PayloadArea.prepare makes.
        cdef type t
        cdef Py_ssize_t room = self.ctl.block_size - sizeof(fp_payload_head)
        if _needs_block(c.kind, True):
            try:
                if c.kind == K_CALL:
                    # A plain function travels as its pickled reference,
                    # made once (see workers.FunctionRefs).
                    fn, args, kwargs = obj
                    obj = (self._fn_ref(fn), args, kwargs)
                    if type(obj[0]) is bytes and _plain_call(args, kwargs):
                        m = _mdumps(obj)
                        if len(m) <= room:
                            return m
                elif _plain(obj) or _plain_tuple(obj):
                    m = _mdumps(obj)
                    if len(m) <= room:
                        return m
                t = type(obj)
                if t is not bytes and t is not bytearray and t is not memoryview:
                    try:
                        return _dumps(obj, 5, buffer_callback=_in_band_only)
                    except _OutOfBandWanted:
                        pass
                    except TypeError:
                        pass        # a memoryview in the task: prepare() lifts it
                return self.area.prepare(obj)
            except Exception as e:
                c.kind = K_FAIL
                return e
        if (c.kind & K_BASE_MASK) == K_ARRAY:
            (<ArrayTask>obj).release()
            what = fp_kernel_of(c.kind).what
            c.kind = K_FAIL
            return TypeError(f"array tasks run on thread workers: a process pool's {what} "
                             "takes numbers (use workers=\"thread\" for arrays)")
        if (c.kind & K_BASE_MASK) == K_SCALAR:
            # A kernel that is not a built-in: its record first, so that the
            # workers can load it (or this task's error: an address).
            err = fp_kreg_publish(self.seg, c.kind)
            if err is not None:
                c.kind = K_FAIL
                return err
        return obj

    cdef object _context_snapshot(self):
        """A copy of the caller's current Context, shared by every task
        submitted while that context holds the same values.

        A thread that submits many tasks from one context would otherwise
        make a Context per task and keep them all alive, tracked by the
        cyclic GC, until their callbacks ran.  The values are an immutable
        mapping: the same mapping object (kept alive here, so its address
        is not reused) means the same values.  Tasks only read the
        snapshot; callbacks run in a copy of it (see _deliver).
        """
        cdef PyObject *cur = fp_tstate_get().context
        if (_share_snapshots and cur != NULL and self.ctx_snap is not None
                and fp_context_vars(cur) == <PyObject *>self.ctx_vars):
            return self.ctx_snap
        snap = PyContext_CopyCurrent()
        if _share_snapshots:
            self.ctx_vars = <object>fp_context_vars(<PyObject *>snap)
            self.ctx_snap = snap
        return snap

    cdef object _encode(self, int op, object task, fp_cell *c, fp_word *x):
        """Fill c.kind (and operands, the third in x) for `task`; return
        what its slot holds."""
        if op >= 0:
            return fp_encode(op, task, c, x)
        c.kind = K_PROC if op == OP_PROC else K_CALL
        return task

    cdef inline int32_t _cells_needed(self, const fp_cell *c, object obj) noexcept:
        if (c.kind & K_BASE_MASK) != K_ARRAY:
            return 1
        return <int32_t>max(1, min(<int64_t>self.max_chunks, (<ArrayTask>obj).n // MIN_CHUNK))

    cdef inline bint _has_room(self, const fp_cell *c, object obj) noexcept:
        return (self.slots.nfree != 0 and self.record_credits >= self._cells_needed(c, obj)
                and (self.n_free_blocks != 0 or not self.procs or not _needs_block(c.kind, True)))

    cdef int32_t _admit(self, fp_cell *c, const fp_word *x, object obj, object cb, object ctx,
                        uint8_t mode, int64_t limit, object handle, object queued) except -1:
        """Give an encoded task a slot and its ring cells; wake a worker.
        Its TaskHandle (`handle`), or its FIFO entry (`queued`), learns the
        slot at once: once the task is in the ring it may complete, and the
        slot go to another task, before this returns."""
        cdef int32_t slot, need = self._cells_needed(c, obj)
        cdef int64_t i, n, per
        cdef uint64_t pos
        slot = self.slots.take()
        if slot < 0:    # the callers looked for room with nothing in between
            raise SystemError("fastpool: no free task slot at admission")
        if handle is not None:
            (<TaskHandle>handle).slot = slot
            (<TaskHandle>handle).gen = self.slots.gen[slot]
        elif queued is not None:
            (<_Queued>queued).slot = slot
            (<_Queued>queued).gen = self.slots.gen[slot]
        if limit:
            # Before the push that hands the task over (release): the worker
            # that starts it reads the limit and writes its deadline.
            fp_store_u64_relaxed(&self.tctl[slot].limit, <uint64_t>limit)
            self.slots.flags[slot] = SLOT_TIMED
            self.n_timed += 1
        self.record_credits -= need
        self.slots.mode[slot] = mode
        self.slots.cbs[slot] = cb
        self.slots.ctxs[slot] = ctx
        self.slots.objs[slot] = obj
        self.tasks_in += 1
        if self.pending_stamp:
            # Before the push that hands the task over (release).
            self.stamps[slot] = self.pending_stamp
            self.pending_stamp = 0
        c.slot = <uint32_t>slot
        self.slots.job(slot).cells = need
        if (c.kind & K_BASE_MASK) != K_ARRAY:
            self.slots.job(slot).remaining = 1
            if c.kind & K_HAS_C:
                self.operands[slot] = x[0]      # published by the push below
            if self.procs and _needs_block(c.kind, True):
                self._put_payload(slot, c, obj)
            self._push_task(c, &pos)
            self.slots.job(slot).pos = pos + 1
            fp_idle_wake(self.ctl)
            # After fp_idle_wake's fence: see _try_leave (_worker.pyx).
            if self.grow_on_submit and fp_load_u32_relaxed(&self.ctl.live) < <uint32_t>self.n_workers:
                self._grow(1)
            if limit and not self.disp_started:
                self._ensure_dispatcher()   # it keeps the deadlines
            return slot
        # Array: `need` chunk cells over one job; the worker that finishes
        # the last chunk publishes the result.
        n = (<ArrayTask>obj).n
        (<ArrayTask>obj).fill_job(self.slots.job(slot))
        self.slots.job(slot).remaining = need
        per = (n + need - 1) // need
        for i in range(need):
            c.a.i = i * per
            c.b.i = min(n, (i + 1) * per)
            self._push_task(c, &pos)
        fp_add_u32_seq_cst(&self.ctl.work_seq, 1)
        fp_futex_wake(&self.ctl.work_seq, need)
        fp_fence_seq_cst()      # see _try_leave (_worker.pyx)
        if self.grow_on_submit and fp_load_u32_relaxed(&self.ctl.live) < <uint32_t>self.n_workers:
            self._grow(need)
        if limit and not self.disp_started:
            self._ensure_dispatcher()
        return slot

    cdef int _put_payload(self, int32_t slot, fp_cell *c, object obj) except -1:
        # Worker processes: the task's pickle into a payload block, whose
        # number travels in the cell (kept apart from _admit, the hot path
        # of thread pools).
        self.n_free_blocks -= 1
        c.a.i = self.free_blocks[self.n_free_blocks]
        self.slots.job(slot).block = <int32_t>c.a.i + 1
        try:
            if type(obj) is bytes:
                if not block_put_stream(self.seg, c.a.i, obj):
                    self.area.put(<int>c.a.i, (obj, ()))
            elif obj[1] or not block_put_stream(self.seg, c.a.i, obj[0]):
                self.area.put(<int>c.a.i, obj)
            self.slots.objs[slot] = None
        except Exception as e:      # no room for a one-off segment
            c.kind = K_FAIL
            self.slots.objs[slot] = e
        return 0

    cdef object _read_payload(self, int32_t slot):
        # The result (or exception) a worker process left in the task's
        # block; what cannot be read comes back as an _Unreadable.
        cdef int32_t block = self.slots.job(slot).block - 1
        try:
            stream = block_stream(self.seg, block)
            if stream is not None:
                return _loads(stream) if stream[0] == 0x80 else _mloads(stream)
            return self.area.read(block)
        except BaseException as e:
            return _Unreadable(e)

    cdef inline int _push_task(self, fp_cell *c, uint64_t *pos) except -1:
        # Admission control keeps the tasks in the ring below its capacity,
        # but workers release cells out of order: one lap on, our cell may
        # still be held by a worker between claiming it and copying it out
        # (preempted mid-pop).  It is a few instructions from done and needs
        # no GIL, so yield the CPU to it until it lets go.
        while fp_ring_push_pos(self.tasks, c, pos, NULL) != FP_OK:
            with nogil:
                fp_yield()
        return 0

    def _raise_closed(self):
        from fastpool.errors import PoolClosedError
        raise PoolClosedError("cannot run new tasks: the pool is closed")

    # --------------------------------------------------------------- workers

    def _worker_main(self, int idx):
        """Body of worker thread idx: the native loop, GIL released."""
        cdef int rc = 0
        cdef fp_cell c
        cdef fp_worker w
        memset(&w, 0, sizeof(w))        # a thread: no claim tracking, no task limit
        w.ctl = self.ctl
        w.tasks = self.tasks
        w.results = self.results
        w.rec = &self.seg.workers[idx]
        w.stats = &self.seg.wstats[idx]
        w.stamps = self.seg.stamps
        w.tctl = self.seg.tctl
        w.job_pages = self.slots.job_pages
        w.operands = self.operands
        w.kmap = NULL
        w.idx = idx
        w.hooks.owner = <void *>self
        w.hooks.run_held = _hook_run_held
        w.hooks.dispatcher_started = &self.disp_started
        w.hooks.start_dispatcher = _hook_start_dispatcher
        # A new thread takes its first task before it lets go of the GIL, as
        # the stdlib's threads take a work item: the submit that started it
        # (it waits for the thread to start) cannot get in between and see
        # that task as still queued (shutdown(cancel_futures=True)).
        cdef bint first = (fp_load_u32_acquire(&self.ctl.state) < FP_TERMINATING
                           and fp_ring_pop(self.tasks, &c) == FP_OK)
        if first:
            fp_store_u32_release(&self.slots.job(c.slot).taken, 1)
            if not _short_kind(c.kind) and not fp_ring_empty(self.tasks):
                fp_idle_wake(self.ctl)
        _here_runs(self.seg, idx)       # for fastpool.cancelled()
        # The worker holds no reference: the thread's own (its target is a
        # bound method of this pool) keeps the pool alive while it runs.
        with nogil:
            if first:
                rc = fp_worker_run_cell(&w, &c)
            if rc == 0:
                rc = fp_worker_loop(&w)
            if rc == 3:
                # Left idle: tell the dispatcher, which joins this thread.
                c.slot = FP_NO_SLOT
                c.kind = R_LEFT
                c.a.i = idx
                c.b.i = 0
                fp_worker_publish(&w, &c)

    cdef void _start_dispatcher(self) noexcept with gil:
        try:
            self._ensure_dispatcher()
        except BaseException as e:
            self._report_quietly(e)

    def _nothing_pending(self):
        return self.slots.in_use() == 0 and not self.n_overflow and not self.deferred

    def _mark_dispatcher_started(self):
        """Called by the Python layer, under its lock, before it starts (or
        runs inline) the dispatcher loop."""
        fp_store_u32_release(&self.disp_started, 1)

    @property
    def _dispatcher_started(self):
        return fp_load_u32_acquire(&self.disp_started) != 0

    cdef int _run_python(self, const fp_cell *c, fp_cell *r, int idx) noexcept with gil:
        cdef int32_t slot = c.slot
        if self.slots.flags[slot] & SLOT_DONE:
            # Cancelled or timed out while this worker waited for the GIL.
            r.kind = R_SKIPPED
            return 0
        objs = self.slots.objs
        try:
            if (c.kind & K_BASE_MASK) == K_PY:
                res = _context_call(self.slots.ctxs[slot], fp_kernel_of(c.kind).py_op, objs[slot])
            else:
                if self.slots.mode[slot] == MODE_FUTURE:
                    if not _start(self.slots.cbs[slot]):
                        r.kind = R_CANCELLED
                        return 0
                if c.kind == K_PROC:
                    res = self.processor(objs[slot])
                else:
                    fn, args, kwargs = objs[slot]
                    res = fn(*args, **kwargs)
            objs[slot] = res
            r.kind = R_OBJ
        except Exception as e:
            objs[slot] = e
            r.kind = R_ERR
        except BaseException as e:
            objs[slot] = e
            if self.lose_on_base_exception:
                r.kind = R_LOST
                r.a.i = idx
                return 1
            r.kind = R_ERR
        return 0

    def _report_lost(self, int idx, bint init_failed):
        """Called by a worker thread that leaves with no task in hand."""
        cdef fp_cell r
        r.slot = FP_NO_SLOT
        r.kind = R_INIT_FAILED if init_failed else R_WORKER_LOST
        r.a.i = idx
        r.b.i = 0
        cdef fp_worker w
        memset(&w, 0, sizeof(w))
        w.ctl = self.ctl
        w.results = self.results
        w.hooks.dispatcher_started = &self.disp_started
        w.hooks.owner = <void *>self
        w.hooks.start_dispatcher = _hook_start_dispatcher
        with nogil:
            fp_worker_publish(&w, &r)

    # ------------------------------------------------------------ dispatcher

    def _dispatch_main(self):
        """Body of the dispatcher thread: completions, one at a time.

        It must never die: user code it runs (callbacks, done-callbacks,
        listeners) is guarded where it is called, and if the engine itself
        fails, the pool breaks cleanly: unstarted tasks fail, the workers
        stop, and the teardown below still runs.
        """
        cdef int n
        cdef uint32_t seen
        cdef int64_t wait_ns
        cdef bint park
        with nogil:
            fp_token_lock(self.ctl)     # held while awake; lent out in park
        try:
            while True:
                # Read the wake-up word before looking at the state: a close()
                # or terminate() after this point changes it, so the park below
                # returns at once instead of missing the request.
                seen = fp_load_u32_seq_cst(&self.ctl.disp_seq)
                if self.state == FP_TERMINATING or (
                        self.state == FP_CLOSING and self.slots.in_use() == 0 and not self.n_overflow
                        and not self.deferred):
                    break
                if self.drain_armed:
                    self._check_drain()     # after `seen`: a worker's wake-up is not missed
                # After `seen`: a timed task that starts after our look at
                # the workers wakes us (see _timers).
                wait_ns = self._timers(False) if self.n_timed else self._no_timers()
                if self.batch_pos >= self.batch_len:
                    # A cancel's callback waiting in `deferred`: no parking.
                    park = not self.deferred
                    with nogil:
                        n = self._collect(self.batch, BATCH, seen, wait_ns, park)
                    if n >= 0:
                        self.batch_len = n
                        self.batch_pos = 0
                self._complete_batch()
                if self.n_overflow:
                    self._flush_overflow()
        except BaseException as e:
            self._engine_failed(e)
        self._teardown()

    def _engine_failed(self, exc):
        """The dispatcher itself failed: stop as terminate() would."""
        if self._failure is None:
            self._failure = exc
        self._set_state(FP_TERMINATING)
        self._report_quietly(exc)   # reporting is best effort; stopping cleanly is not
        try:
            self._ensure_dispatcher()     # it fails what is pending
        except BaseException:
            pass        # then close() or exit does it in its own thread

    def _wait_result(self, fut, timeout):
        """Wait for `fut` (a task of this pool) by completing it here.

        A thread about to block on one of our futures while the dispatcher
        sleeps takes the dispatcher's role for that one result: the worker
        wakes it directly, and the dispatcher stays asleep.  It completes
        only its own future: any other result is put back for the
        dispatcher, and it steps aside at once when the dispatcher wants
        its token back (a close, a terminate, more results).  Returns
        whether `fut` is done; if not, the caller waits the usual way.
        """
        cdef fp_cell c
        cdef int64_t ns = -1
        cdef bint mine
        cdef uint32_t seen
        cdef fp_ctl *ctl = self.ctl
        if ctl == NULL or self.state != FP_RUNNING or not fp_token_trylock(ctl):
            return False
        deadline = None if timeout is None else _monotonic() + timeout
        try:
            if self.batch_pos < self.batch_len:
                return False    # a result left for the dispatcher comes first
            while True:
                # Read before the look at `fut`: a cancel after it wakes us.
                seen = fp_load_u32_seq_cst(&ctl.proxy_seq)
                if fp_ring_pop(self.results, &c) == FP_OK:
                    mine = (c.slot != FP_NO_SLOT and c.kind != R_LOST
                            and self.slots.cbs[c.slot] is fut)
                    if not mine:
                        # Leave it to the dispatcher as the next to complete:
                        # results complete in the order they were published
                        # (a dead worker's notice must follow its results).
                        self.batch[0] = c
                        self.batch_pos = 0
                        self.batch_len = 1
                        return False
                    try:
                        self._complete(&c)
                    except BaseException as e:
                        self._engine_failed(e)
                    # A done-callback that waited took more results
                    # (_dispatch_until): they are ours to complete.
                    self._complete_batch()
                    if self.n_overflow:
                        self._flush_overflow()
                    return True
                if fut.done():
                    return True     # cancelled meanwhile (the pool's cancel, in another thread)
                if self.state != FP_RUNNING or fp_load_u32_seq_cst(&ctl.disp_token) != 1:
                    return False
                if deadline is not None:
                    ns = <int64_t>((deadline - _monotonic()) * 1e9)
                    if ns <= 0:
                        return False
                with nogil:
                    fp_proxy_park(ctl, seen, fp_ring_has_work, self.results, ns)
        finally:
            fp_token_unlock(ctl)
            # What arrived meanwhile, or what we left, is the dispatcher's.
            if self.batch_pos < self.batch_len or self.deferred:
                if not self.disp_started:
                    self._ensure_dispatcher()
                fp_dispatcher_wake(ctl)
            elif not fp_ring_empty(self.results) or self.n_overflow:
                if not self.disp_started:
                    self._ensure_dispatcher()
                fp_dispatcher_notify(ctl)

    cdef int _collect(self, fp_cell *out, int limit, uint32_t seen, int64_t wait_ns,
                      bint park) noexcept nogil:
        # Results into out; if there are none and `park`, wait for some, at
        # most wait_ns (< 0: no limit; the next deadline).
        cdef int n = 0, i
        while n < limit and fp_ring_pop(self.results, &out[n]) == FP_OK:
            n += 1
        if n or not park:
            return n
        for i in range(DISPATCH_SPIN):
            fp_cpu_relax()
            if not fp_ring_empty(self.results):
                break
        else:
            fp_dispatcher_park(self.ctl, seen, fp_ring_has_work, self.results, wait_ns)
            if self.batch_pos < self.batch_len:
                return -1       # a thread that held the token meanwhile left a result
        while n < limit and fp_ring_pop(self.results, &out[n]) == FP_OK:
            n += 1
        return n

    cdef int _complete_batch(self) except -1:
        # Complete the taken cells in order, then what waits in callbacks
        # put off (_dispatch_until).  Each cell is copied out first: a
        # callback that waits moves batch_pos on and may refill the batch.
        cdef fp_cell c
        while True:
            if self.batch_pos < self.batch_len:
                c = self.batch[self.batch_pos]
                self.batch_pos += 1
                try:
                    self._complete(&c)
                except BaseException as e:
                    # The rest of the batch still completes, then we stop.
                    self._engine_failed(e)
            elif self.deferred:
                try:
                    self._run_deferred()
                except BaseException as e:
                    self._engine_failed(e)
            else:
                return 0

    cdef int _complete(self, fp_cell *r, bint defer=False) except -1:
        cdef int32_t slot
        cdef uint8_t mode
        cdef uint32_t kind = r.kind
        if r.slot == FP_NO_SLOT:
            if kind == R_DIED:
                self._process_died(<int>r.a.i, <int>r.b.i)
            elif kind == R_LEFT:
                self._on_worker_left(<int>r.a.i)
            else:
                self._on_worker_lost(r.a.i, kind == R_INIT_FAILED)
            return 0
        slot = <int32_t>r.slot
        mode = self.slots.mode[slot]
        cb = self.slots.cbs[slot]
        ctx = self.slots.ctxs[slot]
        obj = self.slots.objs[slot]
        self.slots.cbs[slot] = None
        self.slots.ctxs[slot] = None
        self.slots.objs[slot] = None
        if self.slots.flags[slot] & SLOT_DONE:
            # A cancel or a timeout completed it: what came back is dropped
            # (an array task's buffers go with `obj`), unread.
            if self.slots.job(slot).block:
                self.area.discard(self.slots.job(slot).block - 1)
            self._release_slot(slot)
            if kind == R_LOST:
                self._on_worker_lost(r.a.i, False, obj)
            return 0
        if kind == R_PAYLOAD or kind == R_PAYLOAD_ERR:
            # Read the block while the slot is still this task's: unpickling
            # lets other threads in, and once the slot is given back a
            # submit may write the next task's payload into its block.
            obj = self._read_payload(slot)
            if type(obj) is _Unreadable:
                kind = R_UNREADABLE
        self._release_slot(slot)
        if mode == MODE_QUIET:
            return 0                # a native map's helpers, done or failed
        err = None
        value = None
        try:
            if kind == R_INT:
                value = fp_int_result(r)
            elif kind == R_FLOAT:
                value = r.a.d
            elif kind == R_OBJ or kind == R_BATCH:
                value = obj
            elif kind == R_PAYLOAD:
                value = obj
            elif kind == R_PAYLOAD_ERR:
                err = obj
            elif kind == R_UNREADABLE:
                err = _unreadable_result((<_Unreadable>obj).exc)
            elif kind == R_ARRAY:
                (<ArrayTask>obj).release()
                value = (<ArrayTask>obj).result
            elif kind == R_ERR:
                err = obj
            elif kind == R_LOST:
                err = self._worker_exited_error(obj)
            elif kind == R_CLOSED:
                err = self._closed_error()
            elif kind == R_NO_KERNEL:
                err = fp_kreg_missing_error(self.seg, <int32_t>r.a.i)
            elif kind == R_CANCELLED:
                fp_stat_add(&self.stats.cancelled, 1)
                return 0
            elif kind == R_SKIPPED:
                err = SystemError("fastpool: a task that was not cancelled was skipped")
            else:
                err = SystemError(f"fastpool: unknown result kind {kind}")
        except BaseException as e:
            # Turning the result into Python objects failed (out of memory):
            # the task still completes exactly once, with that error.
            err, value = e, None
        fp_stat_add(&self.stats.completed if err is None else &self.stats.failed, 1)
        if defer:
            self._deliver_later(mode, cb, ctx, err, value)
        else:
            self._deliver(mode, cb, ctx, err, value)
        if kind == R_LOST:
            self._on_worker_lost(r.a.i, False, obj)
        return 0

    cdef int _fail_slot(self, int32_t slot, object err) except -1:
        # Complete the task in `slot` with err, now (a dead worker held it),
        # unless a cancel or a timeout completed it (then only give it back).
        cdef uint8_t mode = self.slots.mode[slot]
        cdef uint8_t flags = self.slots.flags[slot]
        cb = self.slots.cbs[slot]
        ctx = self.slots.ctxs[slot]
        self.slots.cbs[slot] = None
        self.slots.ctxs[slot] = None
        self.slots.objs[slot] = None
        if self.slots.job(slot).block:
            self.area.discard(self.slots.job(slot).block - 1)   # a one-off segment it may have left
        # Its worker died with the task's state word saying RUNNING.
        self.slots.flags[slot] = flags | SLOT_RESET
        self._release_slot(slot)
        if mode != MODE_QUIET and not flags & SLOT_DONE:
            fp_stat_add(&self.stats.failed, 1)
            self._deliver(mode, cb, ctx, err, None)
        return 0

    cdef int32_t _held_by(self, int idx) noexcept:
        # The task slot dead worker `idx` held (its record names the slot and
        # the cell's position, which a later task in the same slot cannot
        # share), or -1: it held nothing, or what it held has completed.
        cdef fp_worker_rec *rec = &self.seg.workers[idx]
        cdef uint32_t slot = rec.slot
        if (slot == FP_NO_SLOT or slot >= <uint32_t>self.slots.fresh or rec.task_pos == 0
                or self.slots.job(slot).pos != rec.task_pos):
            return -1
        return <int32_t>slot

    def _process_died(self, int idx, int status):
        """Dispatcher: worker process `idx` is gone (its death notice came
        after every result it published).  Fail the task it held, if any,
        then let the Python layer report and replace it."""
        cdef fp_worker_rec *rec
        cdef int32_t slot
        if self.ctl == NULL:
            return
        rec = &self.seg.workers[idx]
        slot = self._held_by(idx)
        leaving = rec.leaving
        started = rec.pid != 0      # it reached its loop (run_worker_process)
        rec.slot = FP_NO_SLOT
        rec.task_pos = 0
        rec.claim = 0
        rec.rclaim = 0
        rec.leaving = 0
        rec.pid = 0
        err = self._worker_died_error(idx, status, slot >= 0, started)
        fp_store_u32_relaxed(&self.seg.wstats[idx].busy, 0)    # it runs nothing now
        if self.max_queue >= 0:
            fp_room_wake(self.ctl)
        if slot >= 0:
            self._fail_slot(slot, err)
        self._on_process_exit(idx, status, leaving, err, slot >= 0, started)

    def _fail_held(self, make_error):
        """Teardown, worker processes gone: fail what they held."""
        cdef int idx
        cdef int32_t slot
        if self.ctl == NULL or not self.procs:
            return
        for idx in range(<int>self.ctl.n_workers):
            slot = self._held_by(idx)
            self.seg.workers[idx].slot = FP_NO_SLOT
            if slot >= 0:
                try:
                    self._fail_slot(slot, make_error())
                except BaseException as e:
                    self._report_quietly(e)

    def _worker_process_gone(self, int idx, int status, live):
        """The watcher: worker process `idx` has exited (`live`: the indexes
        of workers still running).  Finish the ring operation it was in the
        middle of, if any, and post its death notice."""
        cdef fp_worker_rec *rec
        cdef fp_cell c, d
        cdef uint64_t claim, pos
        cdef int j
        if self.ctl == NULL:
            return
        rec = &self.seg.workers[idx]
        claim = rec.claim
        if claim and claim != rec.task_pos:
            # It may have lost that claim to a live worker still copying the
            # cell out: wait until none holds it (nanoseconds, unless preempted).
            while any(self.seg.workers[j].claim == claim for j in live):
                with nogil:
                    fp_yield()
        if claim and fp_ring_recover_pop(self.tasks, claim, &c) == 1:
            rec.slot = c.slot
            rec.task_pos = claim
        rec.claim = 0
        d.slot = FP_NO_SLOT
        d.kind = R_DIED
        d.a.i = idx
        d.b.i = status
        claim = rec.rclaim
        if claim:
            while any(self.seg.workers[j].rclaim == claim for j in live):
                with nogil:
                    fp_yield()
        if not (claim and fp_ring_recover_push(self.results, claim, &d) == 1):
            with nogil:
                while fp_ring_push_pos(self.results, &d, &pos, NULL) != FP_OK:
                    fp_yield()
        rec.rclaim = 0
        # Take it out of the idle counters it was in, forget a wake-up it
        # may have taken and never spent, and have the parked workers look
        # at the ring again (see _freelist.pyx): otherwise no submit might
        # wake anyone any more.
        idle = rec.idle
        if idle & FP_IDLE_SPINNING:
            fp_sub_u32_seq_cst(&self.ctl.spinners, 1)
        if idle & FP_IDLE_PARKED:
            fp_sub_u32_seq_cst(&self.ctl.sleepers, 1)
        rec.idle = 0
        fp_store_u32_seq_cst(&self.ctl.waking, 0)
        fp_idle_wake_all(self.ctl)
        fp_dispatcher_wake(self.ctl)

    cdef void _release_slot(self, int32_t slot) noexcept:
        # Give back the slot, the ring cells and the payload block the task held.
        cdef fp_job *job = self.slots.job(slot)
        cdef uint8_t flags = self.slots.flags[slot]
        if flags:
            self._release_flags(slot, flags)
        if self.stamps != NULL and self.stamps[slot]:
            self.stamps[slot] = 0       # the slot's next task may not be timed
        self.record_credits += job.cells
        if job.block:
            self.free_blocks[self.n_free_blocks] = job.block - 1
            self.n_free_blocks += 1
        memset(job, 0, sizeof(fp_job))
        self.slots.give(slot)
        self.tasks_out += 1

    cdef int _deliver(self, uint8_t mode, object cb, object ctx, object err, object value) except -1:
        # Whatever user code raises here (a callback, a future's
        # done-callbacks), BaseExceptions included, is reported, never let
        # out: the dispatcher must go on.
        if mode == MODE_FUTURE:
            try:
                _resolve(cb, err, value)
            except BaseException as e:
                self._callback_error(e)
            return 0
        # A fresh copy of the shared snapshot, so that what a callback sets
        # stays its own; it dies young, which the GC handles cheaply.
        ctx = PyContext_Copy(ctx)
        PyContext_Enter(ctx)
        try:
            cb(err, value)
        except BaseException as e:
            self._callback_error(e)
        finally:
            PyContext_Exit(ctx)
        return 0

    cdef int _deliver_later(self, uint8_t mode, object cb, object ctx, object err, object value) except -1:
        # _deliver, minus the user code: a future is finished now (its
        # waiters wake), its done-callbacks and a task's callback are queued
        # in `deferred`.  Only waits in callbacks (_dispatch_until) do this.
        if mode == MODE_FUTURE:
            d = getattr(cb, "__dict__", None)
            if d is None or not d.get("_callbacks_list") or not cb._finish_quietly(err, value):
                _resolve(cb, err, value)      # no done-callbacks to run
                return 0
            self.deferred.append((mode, cb, None, None, None))
        else:
            self.deferred.append((mode, cb, ctx, err, value))
        return 0

    cdef int _run_deferred(self) except -1:
        mode, cb, ctx, err, value = self.deferred.popleft()
        if mode != MODE_FUTURE:
            return self._deliver(mode, cb, ctx, err, value)
        try:
            cb._invoke_callbacks()
        except BaseException as e:
            self._callback_error(e)
        return 0

    cdef int _flush_overflow(self) except -1:
        # Move queued tasks into the rings, oldest first, while room lasts.
        cdef _Queued q
        while self.n_overflow:
            q = <_Queued>self.overflow[0]
            if not self._has_room(&q.cell, q.obj):
                break
            if self.procs and q.mode == MODE_FUTURE and not q.started:
                # Marking it running may wait for its Condition, letting
                # other threads in: look at the room again afterwards.
                q.started = True
                started = _start(q.cb)
                if q.slot != -1:
                    continue    # the pool's cancel took it out of the queue meanwhile
                if not started:
                    self.overflow.popleft()     # cancelled while it waited: it never runs
                    self.n_overflow -= 1
                    fp_store_u64_relaxed(&self.stats.overflow, self.n_overflow)
                    fp_stat_add(&self.stats.cancelled, 1)
                continue
            self.overflow.popleft()
            self.n_overflow -= 1
            fp_store_u64_relaxed(&self.stats.overflow, self.n_overflow)
            self.pending_stamp = q.stamp
            self._admit(&q.cell, &q.x, q.obj, q.cb, q.ctx, q.mode, q.limit, None, q)
            q.obj = q.cb = q.ctx = None     # the slot holds them now (a TaskHandle may hold q)
        return 0

    # ------------------------------------------------ cancel and deadlines
    #
    # A task's state word (fp_task_ctl.state, one per task slot, in the
    # segment) decides, by CAS, which of two racing moves happens:
    #
    #                worker: start (CAS)            worker: finish (CAS)
    #     IDLE --------------------------> RUNNING ----------------------> IDLE
    #      |                                  |                    (its result is published)
    #      | owner: cancel (CAS)              | owner: cancel or deadline (CAS)
    #      v                                  v
    #   CANCELLED                           STOP   thread: fastpool.cancelled() is True, an
    #   the worker that takes its cell             array chunk stops, what it returns is
    #   skips it: it never runs                    dropped; process: killed (its finish
    #                                              CAS fails if it ends first: it exits)
    #
    # Exactly one of "a worker starts it" and "the cancel wins" happens; a
    # task that finished (IDLE again, its result on its way or not yet
    # completed) may still be cancelled: its result is then dropped.  The
    # owner decides the outcome under the GIL: a cancel or a deadline marks
    # the slot SLOT_DONE and completes the task at once (CancelledError, or
    # TaskTimeoutError); whatever comes back for it later (a result, a
    # skipped cell, a dead worker's notice) only gives the slot back, and
    # resets its state word.  A cancelled task still in the FIFO leaves it.
    #
    # Deadlines.  A timeout counts from the start: the worker that starts a
    # task with a limit writes its deadline, then its record's `timed` word
    # (which task it started), then wakes the dispatcher if the dispatcher's
    # next wake-up (ctl.next_deadline) is later than that deadline.  The
    # dispatcher reads the workers' `timed` words each round while timed
    # tasks exist (_timers_scan), keeps the deadlines of those running in a
    # heap, fires the ones due (CAS RUNNING -> STOP) and parks on its futex
    # until the earliest (_collect's wait): no thread polls, and a pool
    # whose tasks have no timeout never looks.

    cdef void _release_flags(self, int32_t slot, uint8_t flags) noexcept:
        # The slot is given back: undo what its flags say was set.
        cdef fp_task_ctl *t
        self.slots.flags[slot] = 0
        if flags & SLOT_TIMED:
            self.n_timed -= 1
        if flags & SLOT_SKIP:
            fp_stat_add(&self.stats.skipping, <uint64_t>-1)
        if self.tctl == NULL:
            return
        t = &self.tctl[slot]
        # relaxed: the next task's push (release) publishes these.
        if flags & SLOT_TIMED:
            fp_store_u64_relaxed(&t.limit, 0)
            fp_store_u64_relaxed(&t.deadline, 0)
        if flags & SLOT_RESET:
            fp_store_u32_relaxed(&t.state, FP_TS_IDLE)

    cdef bint _cancel_slot(self, int32_t slot, uint32_t gen) except -1:
        # TaskHandle.cancel for a task that holds `slot` (if it still does).
        cdef uint32_t seen = FP_TS_IDLE
        cdef fp_task_ctl *t
        cdef bint stop = False
        if (slot < 0 or slot >= self.slots.fresh or self.slots.gen[slot] != gen
                or self.slots.flags[slot] & SLOT_DONE or self.tctl == NULL
                or self.slots.cbs[slot] is None):
            # It completed, or its completion has begun: the token holder
            # took its callback (and may be reading its result, which lets
            # other threads in, before it gives the slot back).
            return False
        t = &self.tctl[slot]
        if fp_cas_u32_acq_rel(&t.state, &seen, FP_TS_CANCELLED):
            # It waits in the ring (or has finished, its result on its way):
            # it no longer counts as waiting, so a bounded queue has room.
            # (Until the slot is given back: a moment after a worker skips
            # it, the count is one low.)
            self.slots.flags[slot] |= SLOT_SKIP
            fp_stat_add(&self.stats.skipping, 1)
            if self.max_queue >= 0:
                fp_room_wake(self.ctl)
            if self.drain_armed:
                fp_dispatcher_wake(self.ctl)
        else:
            # Not IDLE: RUNNING (only this owner sets CANCELLED or STOP,
            # and marks the slot done as it does).  Ask it to stop, unless
            # it finishes first: then its result is dropped.
            stop = fp_cas_u32_acq_rel(&t.state, &seen, FP_TS_STOP)
        self._finish_early(slot, _CancelledError(), False, True, stop)
        return True

    cdef bint _cancel_queued(self, object queued) except -1:
        # TaskHandle.cancel for a task waiting in the FIFO: it leaves it.
        cdef _Queued q = <_Queued>queued
        self.overflow.remove(q)
        q.slot = -2
        self.n_overflow -= 1
        fp_store_u64_relaxed(&self.stats.overflow, self.n_overflow)
        fp_stat_add(&self.stats.cancelled, 1)
        mode, cb, ctx = q.mode, q.cb, q.ctx
        q.obj = q.cb = q.ctx = None
        if self.ctl != NULL:
            if self.max_queue >= 0:
                fp_room_wake(self.ctl)      # a producer may fit now
            if self.drain_armed:
                fp_dispatcher_wake(self.ctl)
        if mode == MODE_FUTURE:
            self._cancel_future(cb)
        else:
            self._deliver_soon(mode, cb, ctx, _CancelledError())
        return True

    cdef int _finish_early(self, int32_t slot, object err, bint timed_out, bint defer,
                           bint stop) except -1:
        # Complete the task in `slot` now, with err (its cancel, or its
        # deadline); the slot stays held until its cell comes back.
        # `defer`: not on the dispatcher's own loop (a callback waits in
        # `deferred`); `stop`: it is running, stop it.
        cdef uint8_t mode = self.slots.mode[slot]
        cb = self.slots.cbs[slot]
        ctx = self.slots.ctxs[slot]
        self.slots.cbs[slot] = None
        self.slots.ctxs[slot] = None
        self.slots.flags[slot] |= SLOT_DONE | SLOT_RESET
        fp_stat_add(&self.stats.timed_out if timed_out else &self.stats.cancelled, 1)
        if stop:
            self._stop_running(slot)
        if mode == MODE_FUTURE and not timed_out:
            self._cancel_future(cb)     # in this thread, as Future.cancel() runs its callbacks
        elif not defer:
            self._deliver(mode, cb, ctx, err, None)
        elif mode == MODE_FUTURE:
            self._deliver_later(mode, cb, ctx, err, None)
        else:
            self._deliver_soon(mode, cb, ctx, err)
        return 0

    cdef int _cancel_future(self, object fut) except -1:
        _force_cancel(fut)
        if self.ctl != NULL:
            # A thread may wait for it holding the token (_wait_result),
            # asleep on the proxy word: it looks at its future again.
            fp_add_u32_seq_cst(&self.ctl.proxy_seq, 1)
            fp_futex_wake(&self.ctl.proxy_seq, 1)
        return 0

    cdef int _deliver_soon(self, uint8_t mode, object cb, object ctx, object err) except -1:
        # A callback, from any thread: the token holder runs it (one at a
        # time, after the callback running now, if any).
        self.deferred.append((mode, cb, ctx, err, None))
        if not self.disp_started:
            self._ensure_dispatcher()
        if self.ctl != NULL:
            fp_dispatcher_wake(self.ctl)
        return 0

    cdef int _stop_running(self, int32_t slot) except -1:
        # The task in `slot` was moved RUNNING -> STOP.  A thread reads it
        # (fastpool.cancelled(), array chunks); a worker process is killed,
        # and replaced as any dead worker.  Its record names the task: our
        # CAS read (acquire) what the worker wrote before its start (release).
        cdef uint32_t i
        cdef fp_worker_rec *rec
        cdef uint64_t pos = self.slots.job(slot).pos
        if not self.procs or self.ctl == NULL:
            return 0
        for i in range(self.ctl.n_workers):
            rec = &self.seg.workers[i]
            if (fp_load_u32_relaxed(&rec.slot) == <uint32_t>slot
                    and fp_load_u64_relaxed(&rec.task_pos) == pos):
                fp_store_u32_relaxed(&rec.leaving, FP_LEAVE_STOPPED)
                self._kill_worker(i)
                break
        return 0

    cdef int64_t _timers(self, bint defer) except -2:
        # The token holder, while timed tasks exist: fire the deadlines that
        # are due; the ns until the next one (-1: none known).
        cdef uint64_t top = 0, now
        cdef int32_t slot
        heap = self.timer_heap
        while True:
            self._timers_scan()
            now = fp_now_ns()
            while heap:
                entry = heap[0]
                slot = entry[1]
                if (self.slots.gen[slot] != <uint32_t>entry[2]
                        or self.slots.flags[slot] & SLOT_DONE):
                    _heappop(heap)      # it completed
                    continue
                if <uint64_t>entry[0] > now:
                    break
                _heappop(heap)
                self.slots.flags[slot] &= ~SLOT_ARMED
                self._time_out(slot, defer)
                if self.ctl == NULL:
                    return -1
            top = <uint64_t>heap[0][0] if heap else 0
            # The Dekker pair with _task_start (_worker.pyx): say when we
            # wake next, then look at the workers again; a worker publishes
            # its deadline, then reads this.  One of us sees the other.
            fp_store_u64_seq_cst(&self.ctl.next_deadline, top)
            fp_fence_seq_cst()
            if not self._timers_scan():
                break
        if len(heap) > 2 * self.n_timed + 64:
            # Tasks that completed in time leave their entries behind.
            heap[:] = [e for e in heap if self.slots.gen[<int32_t>e[1]] == <uint32_t>e[2]]
            _heapify(heap)
        if top == 0:
            return -1
        now = fp_now_ns()
        return <int64_t>(top - now) if top > now else 0

    cdef int64_t _no_timers(self) noexcept:
        # No timed task holds a slot: the token holder may sleep without a
        # limit, and a worker that starts a timed task (admitted after this
        # look, under the GIL) must wake it.  -1.
        if fp_load_u64_relaxed(&self.ctl.next_deadline):
            fp_store_u64_seq_cst(&self.ctl.next_deadline, 0)
        return -1

    cdef bint _timers_scan(self) except -1:
        # Timed tasks that started since the last look (the workers'
        # `timed` words) go into the heap; whether any did.
        cdef uint32_t i
        cdef uint64_t word, deadline
        cdef int32_t slot
        cdef bint moved = False
        for i in range(self.ctl.n_workers):
            # acquire: pairs with the worker's release, which came after
            # it wrote the deadline.
            word = fp_load_u64_acquire(&self.seg.workers[i].timed)
            if word == self.timed_seen[i]:
                continue
            self.timed_seen[i] = word
            slot = <int32_t>(word & 0xffffffff) - 1
            if (slot < 0 or slot >= self.slots.fresh
                    or (self.slots.flags[slot] & (SLOT_TIMED | SLOT_ARMED | SLOT_DONE)) != SLOT_TIMED
                    or fp_load_u32_acquire(&self.tctl[slot].state) != FP_TS_RUNNING):
                continue    # completed, or finished already, or it is not that task any more
            deadline = fp_load_u64_acquire(&self.tctl[slot].deadline)
            if deadline == 0:
                continue
            _heappush(self.timer_heap, (deadline, slot, self.slots.gen[slot]))
            self.slots.flags[slot] |= SLOT_ARMED
            moved = True
        return moved

    cdef int _time_out(self, int32_t slot, bint defer) except -1:
        # Its deadline is due: RUNNING -> STOP, unless it finished first
        # (IDLE: its result is on its way, and completes it).
        cdef uint32_t seen = FP_TS_RUNNING
        cdef fp_task_ctl *t = &self.tctl[slot]
        if self.slots.cbs[slot] is None or not fp_cas_u32_acq_rel(&t.state, &seen, FP_TS_STOP):
            return 0
        limit = fp_load_u64_relaxed(&t.limit) / 1e9
        err = _TaskTimeoutError(f"the task ran longer than its timeout ({limit:g} s)")
        self._finish_early(slot, err, True, defer, True)
        return 0

    # ------------------------------------------------- stats, bounded queue

    cdef bint _queue_room(self) noexcept:
        # Room for one more task: fewer than max_queue wait, or fewer than
        # max_queue plus the workers free to take them (a task that a free
        # worker takes at once never queues, as with piscina's maxQueue).
        # The workers' busy words are read only when the first test fails.
        cdef uint64_t waiting
        if self.ctl == NULL:
            return True         # closed: the caller raises PoolClosedError
        waiting = fp_queued(self.ctl, self.tasks)
        if waiting < <uint64_t>self.max_queue:
            return True
        return waiting < <uint64_t>self.max_queue + self.ctl.n_workers - fp_running(self.ctl, self.seg.wstats)

    def _refuse(self):
        from fastpool.errors import QueueFullError
        fp_stat_add(&self.stats.refused, 1)
        raise QueueFullError(f"the pool's queue is full: {self.max_queue} tasks wait for a worker "
                             f"(max_queue); wait_for_room() waits until one more fits")

    cdef int _arm_drain(self) except -1:
        # A task was accepted and a "drain" listener exists: if the task
        # has to wait (more tasks wait than workers are free), arm the
        # dispatcher to emit "drain" once none waits, and wake it when that
        # may be so (workers, see fp_task_begin).
        if (not self.drain_armed and self.ctl != NULL
                and fp_queued(self.ctl, self.tasks)
                > self.ctl.n_workers - fp_running(self.ctl, self.seg.wstats)):
            self.drain_armed = True
            fp_store_u32_relaxed(&self.stats.drain_armed, 1)
            if not self.disp_started:
                self._ensure_dispatcher()
            fp_dispatcher_wake(self.ctl)
        return 0

    def _watch_drain(self, bint on):
        self.watch_drain = on

    def _check_drain(self):
        """Dispatcher: emit "drain" if a task had to wait and none waits now."""
        if self.drain_armed and self.ctl != NULL and fp_queued(self.ctl, self.tasks) == 0:
            self.drain_armed = False
            fp_store_u32_relaxed(&self.stats.drain_armed, 0)
            self._emit("drain")

    def _wait_room(self, timeout):
        """wait_for_room (validated by the Python layer): True once one more
        task fits, False after `timeout` seconds (None: no limit)."""
        cdef int64_t ns = -1
        cdef uint32_t seen
        cdef fp_ctl *ctl
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            if self.state != FP_RUNNING or self.ctl == NULL:
                self._raise_closed()
            if self.max_queue < 0:
                return True
            ctl = self.ctl
            # The Dekker pair with fp_task_end: count ourselves in, then
            # look at the workers' busy words; a worker clears its word,
            # then reads the count.  The wake-up word is read before the look.
            fp_add_u32_seq_cst(&ctl.stats.room_waiters, 1)
            try:
                fp_fence_seq_cst()
                seen = fp_load_u32_seq_cst(&ctl.stats.room_seq)
                if self._queue_room():
                    return True
                if deadline is not None:
                    ns = <int64_t>((deadline - _monotonic()) * 1e9)
                    if ns <= 0:
                        return False
                with nogil:
                    fp_futex_wait_ns(&ctl.stats.room_seq, seen, ns)
            finally:
                # A close() wakes us before the segment can go (it goes
                # with the GIL held, and we hold it here).
                if self.ctl != NULL:
                    fp_sub_u32_seq_cst(&ctl.stats.room_waiters, 1)

    def _room_waiters(self):
        """Producers in wait_for_room (tests)."""
        return 0 if self.ctl == NULL else fp_load_u32_seq_cst(&self.ctl.stats.room_waiters)

    def _note_workers(self, uint32_t alive, uint32_t respawned=0):
        """The Python layer: `alive` workers now, `respawned` of them new
        replacements."""
        fp_store_u32_relaxed(&self.stats.workers, alive)
        fp_stat_add(&self.stats.respawns, respawned)

    def _stats(self):
        """The stats, live; once the pool has stopped, as they were then."""
        if self.ctl != NULL:
            return segment_stats(self.seg)
        last = self._last_stats
        if last is None:
            return None
        return {k: dict(v) if type(v) is dict else v for k, v in last.items()}

    cdef int _teardown(self) except -1:
        cdef fp_cell c
        interrupted = None
        try:
            if self.state == FP_TERMINATING:
                # Before waiting for the workers: a stuck task must not delay
                # the PoolClosedError of the tasks that never started.
                self._fail_unstarted(self._closed_error)
            with nogil:
                fp_store_u32_seq_cst(&self.ctl.state, FP_STOPPING)
                fp_idle_wake_all(self.ctl)
            while True:
                # The segment must outlive every worker: an interrupt (Ctrl-C
                # in a close() that runs this in the main thread) is held
                # back until they are all gone.
                try:
                    self._join_workers()
                    break
                except BaseException as e:
                    interrupted = e
            # Workers are gone: what they published completes normally; what
            # they never started (a task that raced terminate) fails.
            while fp_ring_pop(self.results, &c) == FP_OK:
                try:
                    self._complete(&c)
                except BaseException as e:
                    self._report_quietly(e)
            self._fail_held(self._closed_error)
            self._fail_unstarted(self._closed_error)
            # Callbacks of tasks cancelled meanwhile.
            while self.deferred:
                try:
                    self._run_deferred()
                except BaseException as e:
                    self._report_quietly(e)
        finally:
            self.state = FP_STOPPING
            try:
                self._last_stats = segment_stats(self.seg)
            except BaseException:
                pass        # stats are best effort; letting go of the segment is not
            self._release_memory()
        if interrupted is not None:
            raise interrupted
        return 0

    def _report_quietly(self, exc):
        try:
            self._emit_error(exc)
        except BaseException:
            pass

    def _fail_unstarted(self, make_error):
        """Complete every task no worker has started with make_error().

        Workers may still be running other chunks of an array task whose
        chunk we take here: the job is marked failed, and whoever finishes
        its last chunk completes it (with R_CLOSED if it was marked).
        """
        cdef fp_cell c
        cdef fp_job *job
        cdef _Queued q
        while fp_ring_pop(self.tasks, &c) == FP_OK:
            job = self.slots.job(c.slot)
            if job.block:
                self.area.discard(job.block - 1)
            fp_store_u32_release(&job.failed, 1)
            if fp_sub_i64_acq_rel(&job.remaining, 1) == 0:
                c.kind = R_ERR
                self.slots.objs[c.slot] = make_error()
                try:
                    self._complete(&c)
                except BaseException as e:
                    self._report_quietly(e)
        while self.n_overflow:
            q = <_Queued>self.overflow.popleft()
            q.slot = -2
            self.n_overflow -= 1
            fp_store_u64_relaxed(&self.stats.overflow, self.n_overflow)
            fp_stat_add(&self.stats.failed, 1)
            self.tasks_in += 1
            self.tasks_out += 1
            try:
                self._deliver(q.mode, q.cb, q.ctx, make_error(), None)
            except BaseException as e:
                self._report_quietly(e)

    def _pending_futures(self):
        """Futures of tasks no worker has taken yet (for shutdown(cancel_futures))."""
        cdef int32_t i
        cdef _Queued q
        futs = [q.cb for q in self.overflow if q.mode == MODE_FUTURE]
        for i in range(self.slots.fresh):
            if (self.slots.mode[i] == MODE_FUTURE and self.slots.cbs[i] is not None
                    and not fp_load_u32_acquire(&self.slots.job(i).taken)):
                futs.append(self.slots.cbs[i])
        return futs

    def _held_slots(self):
        """The task slot each worker is running (None: none), from the
        worker records in the segment."""
        cdef uint32_t i, slot
        if self.ctl == NULL:
            return []
        held = []
        for i in range(self.ctl.n_workers):
            slot = fp_load_u32_relaxed(&self.seg.workers[i].slot)
            held.append(None if slot == FP_NO_SLOT else slot)
        return held

    def _tasks_waiting(self):
        """Task cells pushed and not yet taken by a worker (a hint)."""
        if self.ctl == NULL:
            return 0
        return (fp_load_u64_relaxed(&self.tasks.enqueue_pos)
                - fp_load_u64_relaxed(&self.tasks.dequeue_pos))

    def _idle_workers(self):
        """Workers parked or looking for work (a hint, for lazy spawning)."""
        if self.ctl == NULL:
            return 0
        return (fp_load_u32_seq_cst(&self.ctl.sleepers)
                + max(0, <int32_t>fp_load_u32_seq_cst(&self.ctl.spinners)))

    def _release_memory(self):
        self.stats = &_no_stats     # writes after this go nowhere
        self.stamps = NULL
        self.tctl = NULL
        self.ctl = NULL
        self.tasks = NULL
        self.results = NULL
        if self.area is not None:
            self.area.close()
        if self.seg is not None:
            self.seg.close()

    # ------------------------------------------------- waiting in a callback
    #
    # Callbacks and done-callbacks run on the thread that holds the dispatch
    # token: the dispatcher, or a thread that took it to complete the future
    # it waits on (_wait_result).  A callback there that waits for another
    # task of the pool (fut.result(), concurrent.futures.wait) would wait for
    # the very thread it blocks.  _future.py sends such a wait here instead:
    # the token holder goes on completing tasks until what it waits for is
    # done, keeping the token, so no other thread runs a callback meanwhile.
    # It starts with the cells already taken (self.batch, in order).
    #
    # Completing a task here runs no user code: a future finishes at once
    # (its waiters wake), but its done-callbacks, like a task's callback, go
    # to `deferred`, and run once the waiting callback has returned
    # (_complete_batch).  Were they run here, nested, a few hundred callbacks
    # that each wait would run out of stack.  Only if what we wait for may
    # need one of them (nothing arrives for a while) does the oldest run
    # here, nested; the quiet spell doubles with each level of nesting.

    def _dispatch_until(self, done, timeout, bint proxy):
        """Complete tasks until done() is true (True) or `timeout` seconds
        have passed (False).  Only on the token holder: the dispatcher, or
        (`proxy`) the thread in _wait_result."""
        cdef uint32_t seen
        cdef int64_t wait_ns, stall_ns, timer_ns
        cdef fp_cell c
        cdef int n
        deadline = None if timeout is None else _monotonic() + timeout
        quiet_since = _monotonic()
        self.pump_depth += 1
        try:
            while not done():
                if self.batch_pos < self.batch_len:
                    c = self.batch[self.batch_pos]
                    self.batch_pos += 1
                    try:
                        # Futures finish now; callbacks wait until the
                        # waiting one returns, so waits do not pile up.
                        self._complete(&c, self.state < FP_TERMINATING)
                    except BaseException as e:
                        self._engine_failed(e)
                    quiet_since = _monotonic()
                    continue
                if self.ctl == NULL or self.state >= FP_TERMINATING:
                    # Tasks that have not started will only fail, in the
                    # teardown, after this callback returns: take what has
                    # been published, then give up rather than wait for ever.
                    n = 0
                    while self.ctl != NULL and n < BATCH and fp_ring_pop(self.results, &self.batch[n]) == FP_OK:
                        n += 1
                    if n == 0:
                        from fastpool.errors import PoolClosedError
                        raise PoolClosedError("the pool is terminating: a callback cannot wait for its tasks")
                    self.batch_len = n
                    self.batch_pos = 0
                    continue
                if self.n_overflow:
                    self._flush_overflow()
                # Read the wake-up word before the last look at done(): a
                # completion elsewhere after this point (another pool, a
                # cancel) wakes us through _wake_dispatch.
                seen = fp_load_u32_seq_cst(&self.ctl.proxy_seq if proxy else &self.ctl.disp_seq)
                # Deadlines fall due here too (futures finish now, callbacks
                # wait in `deferred`); after `seen`, as in _dispatch_main.
                timer_ns = self._timers(True) if self.n_timed else self._no_timers()
                if done():
                    break
                now = _monotonic()
                wait_ns = -1
                if deadline is not None:
                    if now >= deadline:
                        return False
                    wait_ns = <int64_t>((deadline - now) * 1e9) + 1
                if self.deferred:
                    # What we wait for may wait for something a put-off
                    # callback does: after a quiet spell, run the oldest one
                    # here.  The spell doubles with each wait nested inside
                    # another, so nesting stays shallow.
                    stall_ns = (<int64_t>STALL_NS) << min(self.pump_depth - 1, 30)
                    stall_ns -= <int64_t>((now - quiet_since) * 1e9)
                    if stall_ns <= 0:
                        quiet_since = now
                        self._run_deferred()
                        continue
                    if wait_ns < 0 or stall_ns < wait_ns:
                        wait_ns = stall_ns
                if timer_ns >= 0 and (wait_ns < 0 or timer_ns < wait_ns):
                    wait_ns = timer_ns
                with nogil:
                    n = self._collect_holding(seen, wait_ns, proxy)
                self.batch_len = n
                self.batch_pos = 0
        finally:
            self.pump_depth -= 1
        return True

    cdef int _collect_holding(self, uint32_t seen, int64_t wait_ns, bint proxy) noexcept nogil:
        # Results into self.batch; if there are none, park (at most wait_ns,
        # < 0: until woken) without lending the token.
        cdef int n = 0
        while n < BATCH and fp_ring_pop(self.results, &self.batch[n]) == FP_OK:
            n += 1
        if n == 0:
            fp_holder_park(self.ctl, seen, proxy, fp_ring_has_work, self.results, wait_ns)
            while n < BATCH and fp_ring_pop(self.results, &self.batch[n]) == FP_OK:
                n += 1
        return n

    def _wake_dispatch(self, *_):
        """Make a token holder parked in _dispatch_until look again (any thread)."""
        if self.ctl != NULL:
            fp_dispatcher_wake(self.ctl)
            fp_add_u32_seq_cst(&self.ctl.proxy_seq, 1)
            fp_futex_wake(&self.ctl.proxy_seq, 1)

    # ------------------------------------------------------------ lifecycle

    def _forget_after_fork(self):
        """In a forked child: this copy of the pool is closed.  The segment,
        the workers and the dispatcher are the parent's: touch none of them
        (no state write, no wake-up, no unlink)."""
        self.state = FP_STOPPING
        if self.ctl != NULL:
            # The parent's counters as of the fork (reading is harmless);
            # this copy of the pool is closed.
            self._last_stats = dict(segment_stats(self.seg), state="closed", workers=0)
        self.stats = &_no_stats
        self.stamps = NULL
        self.tctl = NULL
        self.ctl = NULL
        self.tasks = NULL
        self.results = NULL
        if self.area is not None:
            self.area.close()       # its view, so that the mapping can go
        if self.seg is not None:
            self.seg.forget()
        self.disp_started = 1   # nothing to dispatch here, not even inline

    cdef bint _set_state(self, uint32_t state):
        # GIL held; state only moves forward.  Wake the dispatcher to act.
        if self.state >= state or self.ctl == NULL:
            return False
        self.state = state
        fp_store_u32_seq_cst(&self.ctl.state, state)
        fp_dispatcher_wake(self.ctl)
        fp_room_wake(self.ctl)      # producers in wait_for_room: the pool is closed
        if state >= FP_TERMINATING:
            fp_idle_wake_all(self.ctl)
        return True

    def _request_close(self):
        return self._set_state(FP_CLOSING)

    def _request_terminate(self):
        return self._set_state(FP_TERMINATING)



# The very objects concurrent.futures stores, so `is` is exact.
from concurrent.futures._base import (PENDING as _PENDING, RUNNING as _RUNNING,
                                      CANCELLED as _CANCELLED, FINISHED as _FINISHED,
                                      CANCELLED_AND_NOTIFIED as _CANCELLED_AND_NOTIFIED)

cdef int _resolve(object fut, object err, object value) except -1:
    """Complete a future exactly once, respecting a cancel.

    A PoolFuture whose Condition was never made has no waiter and cannot
    have been cancelled (both make it), so it is completed by plain stores,
    which nothing can interleave with while we hold the GIL; then the
    done-callbacks added without a Condition (_add_done_callback) run.
    Otherwise the standard, locked path notifies everyone.
    """
    cdef dict d = getattr(fut, "__dict__", None)
    if d is not None and "_cond" not in d and type(fut) is not Future:
        state = d.get("_state", _PENDING)
        if state is _PENDING or state is _RUNNING:
            if err is None:
                d["_result"] = value
            else:
                d["_exception"] = err
            d["_state"] = _FINISHED
            # Read after the state is FINISHED, with no allocation between:
            # a callback added from now on sees it done and runs at once.
            if d.get("_callbacks_list"):
                fut._invoke_callbacks()
            return 0
    try:
        if fut._state == _CANCELLED:
            fut.set_running_or_notify_cancel()
        elif err is None:
            fut.set_result(value)
        else:
            fut.set_exception(err)
    except InvalidStateError:
        # Cancelled between our look and our write: let its waiters know.
        if fut._state == _CANCELLED:
            fut.set_running_or_notify_cancel()
    return 0

def _add_done_callback(fut, fn):
    """Future.add_done_callback for a PoolFuture without its Condition:
    True if fn was added to the callbacks that _resolve runs, False if the
    standard, locked path must do it (the future has a Condition, or is
    done).  The check and the append are one step under the GIL: nothing
    between them lets another thread in (dict look-ups on str keys, a store,
    a list append: no allocation that could run the GC), so the dispatcher's
    plain completion is either wholly before it or wholly after."""
    cdef dict d = fut.__dict__
    cdef list added = [fn]       # made first: making it may run the GC, which may switch threads
    if "_cond" in d:
        return False
    state = d.get("_state", _PENDING)
    if state is not _PENDING and state is not _RUNNING:
        return False
    callbacks = d.get("_callbacks_list")
    if callbacks is None:
        d["_callbacks_list"] = added
    else:
        (<list>callbacks).append(fn)
    return True

def _unreadable_result(exc):
    # As the stdlib's process pool, whose result handler breaks the pool:
    # a BrokenProcessPool (here for this task alone), the cause attached.
    from concurrent.futures.process import BrokenProcessPool
    err = BrokenProcessPool(f"the task's result could not be unpickled: {exc!r}")
    err.__cause__ = exc
    return err

cdef object _context_call(object ctx, object op, tuple operands):
    # A kernel's Python operation, in (a copy of) the submitter's Context.
    if ctx is None:
        return op(*operands)
    return ctx.copy().run(op, *operands)   # the snapshot may be shared

cdef bint _start(object fut) except -1:
    """set_running_or_notify_cancel(), without a Condition when none exists."""
    cdef dict d = getattr(fut, "__dict__", None)
    if d is not None and "_cond" not in d and d.get("_state", _PENDING) is _PENDING:
        d["_state"] = _RUNNING
        return True
    if d is not None and "_task" in d:
        # The pool's cancel may complete this future at any time (it tells
        # its waiters itself): running, unless that happened.
        with fut._condition:
            if fut._state is _PENDING:
                fut._state = _RUNNING
                return True
            return False
    return fut.set_running_or_notify_cancel()


cdef bint _force_cancel(object fut) except -1:
    """The pool's cancel of a future (WorkerPool.run): as Future.cancel(),
    a running future too, and its waiters (wait, as_completed) are told at
    once, as an executor tells them of a cancelled future it dequeues."""
    with fut._condition:
        state = fut._state
        if state is _FINISHED:
            return False
        if state is _CANCELLED or state is _CANCELLED_AND_NOTIFIED:
            return True
        fut._state = _CANCELLED_AND_NOTIFIED
        for waiter in fut._waiters:
            waiter.add_cancelled(fut)
        fut._condition.notify_all()
    fut._invoke_callbacks()
    return True


cdef int64_t _LIMIT_MAX = 1 << 62       # ns (146 years): beyond it, no limit

cdef int64_t _limit_ns(object timeout) except -1:
    """A task's timeout in seconds -> ns it may run (0: no limit, for an
    infinite one).  A clear error, naming `timeout`, for anything else."""
    cdef double secs
    cdef type t = type(timeout)
    if t is not float and t is not int:
        import numbers
        if t is bool or not isinstance(timeout, numbers.Real):
            raise TypeError(f"timeout must be a number of seconds or None, not {t.__name__}")
    secs = float(timeout)
    if not secs > 0:        # NaN too
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if secs * 1e9 >= <double>_LIMIT_MAX:
        return 0            # math.inf: no timeout (how a task opts out of the pool's default)
    return max(1, <int64_t>(secs * 1e9))


def task_timeout_ns(timeout):
    """A task's timeout in seconds (None: none) as the engine keeps it: ns,
    0 for none.  ValueError or TypeError, naming `timeout`, if it is not one."""
    return 0 if timeout is None else _limit_ns(timeout)


@cython.no_gc
@cython.freelist(64)
cdef class TaskHandle:
    """What WorkerPool.run_task returns: `cancel()` the task.

    Not tracked by the cyclic GC (one is made per task, and most are
    dropped at once): it holds its pool and, if the task waited in the
    FIFO, that entry, neither of which holds a handle."""
    cdef Core core
    cdef _Queued q          # its FIFO entry, if it had to wait (then slot/gen are q's)
    cdef int32_t slot       # its task slot (-1: none yet)
    cdef uint32_t gen       # that slot's generation: the slot is still this task's
    cdef bint won           # cancel() returned True

    def __init__(self):
        raise TypeError("TaskHandle cannot be made directly: WorkerPool.run_task returns one")

    def cancel(self):
        """Cancel the task: True unless it has completed already.  It then
        completes once, with concurrent.futures.CancelledError: a task that
        has not started never runs; a running one is stopped (a worker
        process is replaced; a worker thread's task sees
        fastpool.cancelled() become true, and what it returns is dropped)."""
        cdef _Queued q = self.q
        if self.won:
            return True
        if q is None:
            self.won = self.core._cancel_slot(self.slot, self.gen)
        elif q.slot == -1:
            self.won = self.core._cancel_queued(q)
        else:
            self.won = self.core._cancel_slot(q.slot, q.gen)
        return self.won

    def __repr__(self):
        cdef int32_t slot = self.slot
        cdef uint32_t gen = self.gen
        cdef Core core = self.core
        if self.won:
            what = "cancelled"
        elif self.q is not None and self.q.slot == -1:
            what = "queued"
        else:
            if self.q is not None:
                slot, gen = self.q.slot, self.q.gen
            if (slot < 0 or core.tctl == NULL or core.slots.gen[slot] != gen
                    or core.slots.flags[slot] & SLOT_DONE or core.slots.cbs[slot] is None):
                what = "done"
            elif fp_load_u32_relaxed(&core.tctl[slot].state) == FP_TS_RUNNING:
                what = "running"
            else:
                what = "pending"
        return f"<fastpool.TaskHandle {what}>"


# fastpool.cancelled(): the thread's task, found through its worker record.
_task_here = _threading.local()

@cython.final
cdef class _Spot:
    cdef Segment seg
    cdef int idx

    @staticmethod
    cdef _Spot at(Segment seg, int idx):
        cdef _Spot s = _Spot.__new__(_Spot)
        s.seg = seg
        s.idx = idx
        return s

def _here_runs(Segment seg, int idx):
    """This thread is worker `idx` of the pool whose segment is `seg`."""
    _task_here.spot = _Spot.at(seg, idx)

def cancelled():
    """True inside a task whose cancel() (or timeout) asked it to stop;
    False otherwise, and outside tasks."""
    cdef _Spot spot = getattr(_task_here, "spot", None)
    cdef Segment seg
    cdef uint32_t slot
    if spot is None:
        return False
    seg = spot.seg
    if seg.ctl == NULL:
        return False
    # relaxed: the worker reads its own record; the owner's CAS set STOP
    # (a request, which this thread sees soon enough).
    slot = fp_load_u32_relaxed(&seg.workers[spot.idx].slot)
    if slot == FP_NO_SLOT or slot > seg.tasks.mask:
        return False
    return fp_load_u32_relaxed(&seg.tctl[slot].state) == FP_TS_STOP
