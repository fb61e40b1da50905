/*
 * What a Context holds, to tell cheaply whether the current context changed.
 *
 * A contextvars.Context keeps its variables in an immutable mapping that a
 * ContextVar.set replaces and Context.copy() shares.  Two contexts whose
 * mapping is the same object hold the same values, so a pool can give every
 * task submitted from an unchanged context one shared snapshot instead of a
 * new copy each.  CPython keeps that mapping right after the object header
 * and one pointer, the same on every version we build for; the layout is
 * checked against real contexts at import (fp_context_layout_ok in
 * _engine.pyx), and without that check passing the snapshot is never shared.
 * Only a pointer-sized field well inside the object is read.
 */
#ifndef FASTPOOL_CONTEXT_H
#define FASTPOOL_CONTEXT_H

#include <Python.h>

typedef struct {
    PyObject_HEAD
    void *ctx_prev;
    PyObject *ctx_vars;
} fp_context_head;

static inline PyObject *fp_context_vars(PyObject *ctx) {
    return ((fp_context_head *)ctx)->ctx_vars;
}

#endif
