/*
 * The clock of the pool's stats: CLOCK_MONOTONIC, which every process of
 * the machine shares, so a task stamped by its submitter and started by a
 * worker process measures its wait on one scale.  On Linux it is read in
 * the vDSO (about 20 ns with the TSC clocksource), never a system call;
 * CLOCK_MONOTONIC_COARSE costs a tenth of that but ticks once a jiffy
 * (1 to 10 ms), too coarse for tasks of microseconds.
 */
#ifndef FASTPOOL_CLOCK_H
#define FASTPOOL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds; never 0 (0 marks "not stamped"). */
static inline uint64_t fp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 1;
}

/* Log2 bucket of a duration: 0 for 0 ns, b for [2**(b-1), 2**b) ns. */
static inline unsigned fp_log2_bucket(uint64_t ns) {
    return ns ? 64u - (unsigned)__builtin_clzll(ns) : 0u;
}

#endif
