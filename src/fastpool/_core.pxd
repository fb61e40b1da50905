# fastpool's native core: one extension built from the units below, so the
# hot helpers inline across them (ring <- free lists <- map <- kernels <- engine).
include "includes/atomic.pxd"
include "includes/arith.pxd"
include "includes/pyread.pxd"
include "includes/clock.pxd"

include "_ring.pxd"
include "_stats.pxd"
include "_segment.pxd"
include "_freelist.pxd"
include "_map.pxd"
include "_kernels.pxd"
include "_worker.pxd"
include "_engine.pxd"
