# fastpool's kernel ABI for Cython modules: your own nogil kernels in the
# pool.  No header or include path is needed: `cimport` this file.
#
#     # mymod.pyx
#     from fastpool.abi cimport register_function
#
#     cdef double norm(double x, double y) noexcept nogil:
#         return (x * x + y * y) ** 0.5
#
#     norm_kernel = register_function(__name__, "norm", "f8(f8,f8)", <void *>norm)
#
# register_function(module, name, signature, fn): a kernel that calls the C
#     function `fn` once per element, as fastpool.kernels.cfunc does.
# register_loop(module, name, signature, loop, data): a kernel whose loop
#     runs over a chunk of elements, as a numpy inner loop:
#     loop(args, n, data) reads n operands at args[0], args[1] (and args[2])
#     and writes n results at args[nops]; every element is 8 bytes, a double
#     (f8) or an int64 (i8), as the signature says.  A loop that the C
#     compiler can vectorize is the fastest kernel there is.
#
# Both return the kernel (a fastpool.kernels.Kernel), registered under
# "<module>.<name>": pass `__name__` as `module`, so that a worker process
# of a process pool, which imports the module by that name to find the
# kernel, registers it too.  Registering the same function under the same
# name again (the module imported again) returns the same kernel; anything
# else under a name that exists raises ValueError.  Signatures are those of
# fastpool.kernels.cfunc: "f8(f8,f8)", "i8(i8,i8)", "f8(f8,f8,f8)", ...
#
# The functions run in worker threads without the GIL (and in the calling
# thread, for a native map): they must not touch Python objects, and they
# run on many threads at once.
from libc.stdint cimport int64_t

cdef extern from *:
    """
    #include <Python.h>
    #include <stdint.h>

    #define FASTPOOL_ABI_VERSION 1

    typedef void (*fastpool_loop)(char **args, int64_t n, void *data);

    /* fastpool._core._ABI (a capsule): version 1.  Later versions only
     * append members. */
    typedef struct {
        uint32_t version;
        uint32_t size;
        PyObject *(*register_loop)(const char *module, const char *name, const char *signature,
                                   fastpool_loop loop, void *data);
        PyObject *(*register_function)(const char *module, const char *name,
                                       const char *signature, void *fn);
    } fastpool_abi_t;

    static const fastpool_abi_t *fastpool_abi(void) {
        static const fastpool_abi_t *abi = NULL;
        if (abi == NULL) {
            const fastpool_abi_t *a = (const fastpool_abi_t *)PyCapsule_Import("fastpool._core._ABI", 0);
            if (a == NULL)
                return NULL;
            if (a->version != FASTPOOL_ABI_VERSION) {
                PyErr_Format(PyExc_ImportError,
                             "this module was built for fastpool's kernel ABI %d, the installed "
                             "fastpool has ABI %d: rebuild it", FASTPOOL_ABI_VERSION, (int)a->version);
                return NULL;
            }
            abi = a;
        }
        return abi;
    }

    static PyObject *fastpool_register_loop(const char *module, const char *name,
                                            const char *signature, fastpool_loop loop, void *data) {
        const fastpool_abi_t *abi = fastpool_abi();
        return abi == NULL ? NULL : abi->register_loop(module, name, signature, loop, data);
    }

    static PyObject *fastpool_register_function(const char *module, const char *name,
                                                const char *signature, void *fn) {
        const fastpool_abi_t *abi = fastpool_abi();
        return abi == NULL ? NULL : abi->register_function(module, name, signature, fn);
    }
    """
    ctypedef void (*fastpool_loop)(char **args, int64_t n, void *data) noexcept nogil
    object fastpool_register_loop(const char *module, const char *name, const char *signature,
                                  fastpool_loop loop, void *data)
    object fastpool_register_function(const char *module, const char *name, const char *signature,
                                      void *fn)


cdef inline object register_loop(str module, str name, str signature, fastpool_loop loop,
                                 void *data):
    return fastpool_register_loop(module.encode("utf-8"), name.encode("utf-8"),
                                  signature.encode("utf-8"), loop, data)


cdef inline object register_function(str module, str name, str signature, void *fn):
    return fastpool_register_function(module.encode("utf-8"), name.encode("utf-8"),
                                      signature.encode("utf-8"), fn)
