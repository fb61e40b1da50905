/*
 * Reads of immutable Python objects that need no GIL, for the native map:
 * an exact tuple's items and the values of exact ints and floats.
 *
 * The caller guarantees that the objects stay alive and unchanged while it
 * reads (see _map.pyx: the thread that owns the items holds the GIL and runs
 * no Python code meanwhile).  Nothing here touches a reference count, sets
 * an error or allocates.
 */
#ifndef FASTPOOL_PYREAD_H
#define FASTPOOL_PYREAD_H

#include <Python.h>
#include <stdint.h>
#if PY_VERSION_HEX < 0x030B0000
#include <longintrepr.h>    /* from 3.11 on, Python.h includes it */
#endif

enum { FP_READ_OTHER = 0, FP_READ_INT = 1, FP_READ_FLOAT = 2 };

/* An exact n-tuple: its items in ops[0..n) (borrowed), 1; else 0. */
static inline int fp_read_tuple(PyObject *item, int n, PyObject **ops) {
    int i;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != n)
        return 0;
    for (i = 0; i < n; i++)
        ops[i] = PyTuple_GET_ITEM(item, i);
    return 1;
}

/* Start loading what fp_read_tuple and fp_read_operand will read, a few
 * items ahead: the item itself, then (once it is in cache) its operands. */
static inline void fp_prefetch_item(PyObject *item) {
    __builtin_prefetch(item);
}

static inline void fp_prefetch_operands(PyObject *item, int n) {
    int i;
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == n) {
        for (i = 0; i < n; i++)
            __builtin_prefetch(PyTuple_GET_ITEM(item, i));
    }
}

/* FP_READ_INT: an exact int or a bool within int64, in *i.
 * FP_READ_FLOAT: an exact float, in *d.  FP_READ_OTHER: anything else. */
static inline int fp_read_operand(PyObject *x, int64_t *i, double *d) {
    PyTypeObject *t = Py_TYPE(x);
    if (t == &PyLong_Type || t == &PyBool_Type) {
        int overflow = 0;
#if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)x)) {
            *i = (int64_t)PyUnstable_Long_CompactValue((PyLongObject *)x);
            return FP_READ_INT;
        }
#else
        /* One digit or none: the common case, without a call.  Zero has
         * size 0, so its (always allocated) digit is never used. */
        Py_ssize_t size = Py_SIZE(x);
        if (size >= -1 && size <= 1) {
            *i = (int64_t)size * (int64_t)((PyLongObject *)x)->ob_digit[0];
            return FP_READ_INT;
        }
#endif
        /* On an exact int this only reads its digits. */
        *i = PyLong_AsLongLongAndOverflow(x, &overflow);
        return overflow ? FP_READ_OTHER : FP_READ_INT;
    }
    if (t == &PyFloat_Type) {
        *d = PyFloat_AS_DOUBLE(x);
        return FP_READ_FLOAT;
    }
    return FP_READ_OTHER;
}

#endif
