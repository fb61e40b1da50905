from cpython.object cimport PyObject
from libc.stdint cimport int64_t

cdef extern from "pyread.h" nogil:
    enum:
        FP_READ_OTHER
        FP_READ_INT
        FP_READ_FLOAT
    void fp_prefetch_item(PyObject *item)
    void fp_prefetch_operands(PyObject *item, int n)
    bint fp_read_tuple(PyObject *item, int n, PyObject **ops)
    int fp_read_operand(PyObject *x, int64_t *i, double *d)
