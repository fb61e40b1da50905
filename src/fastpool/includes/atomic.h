/*
 * The few atomics and the futex wait/wake that fastpool's rings need.
 *
 * Every shared word is touched only through these helpers, so each memory
 * order is written down once, here, and each call site names the one it
 * needs.  GCC/Clang __atomic builtins; Linux futex, with a portable
 * fallback (sched_yield polling with a short sleep) elsewhere.
 */
#ifndef FASTPOOL_ATOMIC_H
#define FASTPOOL_ATOMIC_H

#include <stdint.h>
#include <time.h>
#include <sched.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Plain loads/stores with an explicit order. */
static inline uint64_t fp_load_u64_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t fp_load_u64_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fp_store_u64_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline uint32_t fp_load_u32_relaxed(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fp_store_u32_relaxed(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint32_t fp_load_u32_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t fp_load_u32_seq_cst(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void fp_store_u32_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void fp_store_u32_seq_cst(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* Claiming a ring position: relaxed is enough, because the claim itself
 * publishes nothing; the cell's sequence word (release/acquire) does. */
static inline int fp_cas_u64_relaxed(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 1 /* weak */,
                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
/* A worker process's claim: release, so that whoever sees the position
 * move past p (acquire) also sees the claim it recorded before. */
static inline int fp_cas_u64_release(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 1 /* weak */,
                                       __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}
static inline void fp_store_u64_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Counters used in the sleep/wake handshake are seq_cst: the waker's
 * "publish work, then read the sleeper count" and the sleeper's "raise the
 * count, then re-check for work" form a Dekker pair, which needs a total
 * order (acquire/release alone would let both sides miss each other). */
static inline uint32_t fp_add_u32_seq_cst(uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t fp_sub_u32_seq_cst(uint32_t *p, uint32_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t fp_xchg_u32_seq_cst(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline void fp_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/* Strong CAS for the dispatch token (a futex mutex): seq_cst, since taking
 * or leaving the dispatcher's role is part of the same Dekker handshakes. */
static inline int fp_cas_u32_seq_cst(uint32_t *p, uint32_t *expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0 /* strong */,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* A task slot's state word (see _engine.pyx, "Cancel and deadlines"): a
 * worker starting or finishing the task and its owner cancelling or timing
 * it out each move it with one strong CAS, so exactly one of two racing
 * moves happens.  acq_rel: whoever sees the word moved also sees what the
 * mover wrote before (the worker's record of what it holds, its deadline). */
static inline int fp_cas_u32_acq_rel(uint32_t *p, uint32_t *expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0 /* strong */,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
/* The dispatcher's next deadline: the Dekker pair with a worker that starts
 * a timed task (it publishes its deadline, then reads this; the dispatcher
 * stores this, then looks at the workers again), hence seq_cst. */
static inline void fp_store_u64_seq_cst(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t fp_load_u64_seq_cst(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

/* Chunk countdown of an array task: acq_rel so that the worker finishing the
 * last chunk sees every other worker's writes to the output before it
 * publishes the completion. */
static inline int64_t fp_sub_i64_acq_rel(int64_t *p, int64_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline int64_t fp_add_i64_acq_rel(int64_t *p, int64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline int64_t fp_load_i64_acquire(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fp_store_i64_release(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline void fp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void fp_yield(void) { sched_yield(); }

/* Sleep while *addr == expected (re-checked by the kernel atomically).
 * Spurious returns are allowed: callers always re-check their condition. */
static inline void fp_futex_wait(uint32_t *addr, uint32_t expected) {
#if defined(__linux__)
    /* Process-shared futex (no FUTEX_PRIVATE_FLAG): the word lives in a
     * shared-memory block that worker processes may map too. */
    syscall(SYS_futex, addr, FUTEX_WAIT, expected, NULL, NULL, 0);
#else
    struct timespec ts = {0, 50000};
    if (__atomic_load_n(addr, __ATOMIC_ACQUIRE) == expected) nanosleep(&ts, NULL);
#endif
}

/* The same, for at most `ns` nanoseconds (ns < 0: no limit). */
static inline void fp_futex_wait_ns(uint32_t *addr, uint32_t expected, int64_t ns) {
    if (ns < 0) {
        fp_futex_wait(addr, expected);
        return;
    }
#if defined(__linux__)
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, NULL, 0);
#else
    struct timespec ts = {0, ns < 50000 ? (long)ns : 50000};
    if (__atomic_load_n(addr, __ATOMIC_ACQUIRE) == expected) nanosleep(&ts, NULL);
#endif
}

/* Returns how many sleepers were woken (0 where unknown). */
static inline int fp_futex_wake(uint32_t *addr, int n) {
#if defined(__linux__)
    long woken = syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
    return woken > 0 ? (int)woken : 0;
#else
    (void)addr; (void)n;
    return 0;
#endif
}

/* Signed 64-bit add that reports overflow, for the exact int path. */
static inline int fp_add_i64_overflow(int64_t a, int64_t b, int64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
