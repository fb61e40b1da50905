# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, freethreading_compatible=False
include "_ring.pyx"
include "_segment.pyx"
include "_lease.pyx"
include "_freelist.pyx"
include "_stats.pyx"
include "_kernels.pyx"
include "_map.pyx"
include "_typed.pyx"
include "_builtins.pyx"
include "_worker.pyx"
include "_engine.pyx"
