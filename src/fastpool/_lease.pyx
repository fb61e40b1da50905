# Leases: views of a kept shared mapping, and knowing when the last one goes.
#
# A spill segment that a pool keeps for reuse (see _spill.py) is mapped once
# per process and stays mapped.  A payload read from it with copy=False is
# made of views into that mapping; the segment may be written again only once
# none of them is alive.  A Lease is the exporter those views come from:
#
#     lease = Lease(mapping, on_free, token)
#     buf = memoryview(lease)          # the whole mapping, writable
#     obj = pickle.loads(..., buffers=[buf[a:b], ...])
#
# Slices of `buf` share its one export, so `exports` is 1 while any view of
# the lease lives and 0 once the last is gone.  Then `on_free(token)` is
# called (once, in whatever thread dropped the last view, possibly inside a
# collection: it must only record the fact) and the lease closes.  A closed
# lease makes no new views, so an object that reached it through a view's
# `.obj` cannot look at memory that is someone else's by then.

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBuffer_FillInfo,
                             PyBUF_WRITABLE, PyBUF_SIMPLE, PyBUF_ANY_CONTIGUOUS)


cdef class Lease:
    """Writable views of `mapping`; `on_free(token)` once none is left (see above)."""
    cdef Py_buffer src
    cdef bint has_src
    cdef readonly Py_ssize_t exports    # 1 while any view lives (slices share it), else 0
    cdef readonly bint closed
    cdef object on_free, token

    def __cinit__(self, mapping, on_free=None, token=None):
        PyObject_GetBuffer(mapping, &self.src, PyBUF_WRITABLE)
        self.has_src = True
        self.on_free = on_free
        self.token = token

    def __dealloc__(self):
        if self.has_src:
            PyBuffer_Release(&self.src)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.closed:
            raise BufferError("this spill segment lease is closed: its memory may be reused")
        PyBuffer_FillInfo(view, self, self.src.buf, self.src.len, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1
        if self.exports == 0 and self.on_free is not None:
            self.closed = True
            on_free, self.on_free = self.on_free, None
            token, self.token = self.token, None
            try:
                on_free(token)
            except BaseException:
                pass    # it only records; there is no one to tell here

    def close(self):
        """Make no more views; True if none is alive (the memory is free to
        reuse), False if some still are (it stays theirs)."""
        self.closed = True
        self.on_free = None
        self.token = None
        return self.exports == 0

    @property
    def address(self):
        """Where the mapping starts in this process."""
        return <size_t>self.src.buf


def buffer_address(obj):
    """The address of the first byte of a contiguous buffer (read-only ones too)."""
    cdef Py_buffer b
    PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE | PyBUF_ANY_CONTIGUOUS)
    address = <size_t>b.buf
    PyBuffer_Release(&b)
    return address
