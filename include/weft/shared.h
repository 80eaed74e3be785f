/* shared.h - shared memory between threads (Node's SharedArrayBuffer) and
 * atomics on it (Node's Atomics), with futex wait/notify and waitAsync.
 *
 * Races on the contents are the user's business, as in Node: use the
 * atomics below (or your own synchronization) for anything two threads
 * touch at once. */
#ifndef WEFT_SHARED_H
#define WEFT_SHARED_H

#include <stdbool.h>

#include "weft/common.h"

/* Allocate `size` zeroed bytes, 64-byte aligned, with one reference.
 * Ownership: the caller holds that reference; release it with
 * weft_shared_release(). The bytes are freed when the last holder (handles,
 * messages in flight) releases. Returns 0, WEFT_EINVAL, WEFT_ENOMEM.
 * Thread: any. */
WEFT_EXTERN int weft_shared_new(weft_shared_t** out, size_t size);

/* Reference counting. These are not ref()/unref(): for ports, workers
 * and broadcast channels those mean "keeps the loop alive"; a shared
 * buffer keeps no loop alive and counts references instead. */

/* Take one more reference for a new holder (returns `sh`; NULL for NULL).
 * The caller must hold a reference already. Ownership: the new holder
 * drops it with weft_shared_release(). Thread: any. */
WEFT_EXTERN weft_shared_t* weft_shared_retain(weft_shared_t* sh);

/* Drop one reference; the last frees the memory (the holder's writes to
 * the bytes happen before the free). Do not use `sh` after dropping one's
 * last reference. Accepts NULL. Thread: any. */
WEFT_EXTERN void weft_shared_release(weft_shared_t* sh);

/* The bytes (valid while the caller holds a reference; NULL for NULL) and
 * their size (0 for NULL; fixed at weft_shared_new()). The bytes belong to
 * the buffer, not to the caller: never free them. Thread: any. */
WEFT_EXTERN void* weft_shared_data(const weft_shared_t* sh);
WEFT_EXTERN size_t weft_shared_size(const weft_shared_t* sh);

/* Atomics on 32-bit and 64-bit slots. `index` counts slots of that width
 * from the start of the buffer (as an Int32Array / BigInt64Array over it).
 * All are sequentially consistent. Each returns 0, WEFT_EINVAL (NULL
 * buffer) or WEFT_ERANGE (index past the end). Read-modify-write calls
 * store the previous value in `*old` when `old` is not NULL.
 * Thread: any. */
typedef enum {
  WEFT_ATOMIC_ADD,
  WEFT_ATOMIC_SUB,
  WEFT_ATOMIC_AND,
  WEFT_ATOMIC_OR,
  WEFT_ATOMIC_XOR,
  WEFT_ATOMIC_EXCHANGE
} weft_atomic_op_t;

WEFT_EXTERN int weft_atomic_load32(weft_shared_t* sh,
                                   size_t index,
                                   int32_t* out);
WEFT_EXTERN int weft_atomic_store32(weft_shared_t* sh,
                                    size_t index,
                                    int32_t value);
WEFT_EXTERN int weft_atomic_rmw32(weft_shared_t* sh,
                                  size_t index,
                                  weft_atomic_op_t op,
                                  int32_t value,
                                  int32_t* old);
WEFT_EXTERN int weft_atomic_add32(weft_shared_t* sh,
                                  size_t index,
                                  int32_t value,
                                  int32_t* old);
WEFT_EXTERN int weft_atomic_sub32(weft_shared_t* sh,
                                  size_t index,
                                  int32_t value,
                                  int32_t* old);
WEFT_EXTERN int weft_atomic_and32(weft_shared_t* sh,
                                  size_t index,
                                  int32_t value,
                                  int32_t* old);
WEFT_EXTERN int weft_atomic_or32(weft_shared_t* sh,
                                 size_t index,
                                 int32_t value,
                                 int32_t* old);
WEFT_EXTERN int weft_atomic_xor32(weft_shared_t* sh,
                                  size_t index,
                                  int32_t value,
                                  int32_t* old);
WEFT_EXTERN int weft_atomic_exchange32(weft_shared_t* sh,
                                       size_t index,
                                       int32_t value,
                                       int32_t* old);
/* compareExchange: store `desired` if the slot holds `expected`; `*old`
 * gets the value found either way. */
WEFT_EXTERN int weft_atomic_cas32(weft_shared_t* sh,
                                  size_t index,
                                  int32_t expected,
                                  int32_t desired,
                                  int32_t* old);

/* The same on 64-bit slots (a BigInt64Array over the buffer). */
WEFT_EXTERN int weft_atomic_load64(weft_shared_t* sh,
                                   size_t index,
                                   int64_t* out);
WEFT_EXTERN int weft_atomic_store64(weft_shared_t* sh,
                                    size_t index,
                                    int64_t value);
WEFT_EXTERN int weft_atomic_rmw64(weft_shared_t* sh,
                                  size_t index,
                                  weft_atomic_op_t op,
                                  int64_t value,
                                  int64_t* old);
WEFT_EXTERN int weft_atomic_add64(weft_shared_t* sh,
                                  size_t index,
                                  int64_t value,
                                  int64_t* old);
WEFT_EXTERN int weft_atomic_sub64(weft_shared_t* sh,
                                  size_t index,
                                  int64_t value,
                                  int64_t* old);
WEFT_EXTERN int weft_atomic_and64(weft_shared_t* sh,
                                  size_t index,
                                  int64_t value,
                                  int64_t* old);
WEFT_EXTERN int weft_atomic_or64(weft_shared_t* sh,
                                 size_t index,
                                 int64_t value,
                                 int64_t* old);
WEFT_EXTERN int weft_atomic_xor64(weft_shared_t* sh,
                                  size_t index,
                                  int64_t value,
                                  int64_t* old);
WEFT_EXTERN int weft_atomic_exchange64(weft_shared_t* sh,
                                       size_t index,
                                       int64_t value,
                                       int64_t* old);
WEFT_EXTERN int weft_atomic_cas64(weft_shared_t* sh,
                                  size_t index,
                                  int64_t expected,
                                  int64_t desired,
                                  int64_t* old);

/* What a wait ended with (Atomics.wait's "ok", "not-equal", "timed-out"). */
typedef enum {
  WEFT_WAIT_OK = 0,        /* Woken by a notify. */
  WEFT_WAIT_NOT_EQUAL = 1, /* The slot did not hold `expected`. */
  WEFT_WAIT_TIMED_OUT = 2  /* `timeout_ms` passed. */
} weft_wait_result_t;

/* Atomics.wait: if the slot holds `expected`, block the calling thread
 * until a notify on that slot or `timeout_ms` (negative: forever). First it
 * watches the slot for up to 20 us without queuing: if the slot stops
 * holding `expected` meanwhile, it returns WEFT_WAIT_NOT_EQUAL, what a call
 * made a moment later would return (so a store then notify from another
 * thread may meet "not-equal" where Node would say "ok", and that notify
 * counts no waiter); then it queues, spins briefly and sleeps on a futex. Blocking freezes the caller's loop:
 * on a loop thread prefer the async form. Returns 0 with `*result` set,
 * WEFT_EINVAL, WEFT_ERANGE, or WEFT_ETERMINATED (`*result` not set).
 * On a worker's thread the wait is interrupted when the worker is asked to
 * stop (weft_worker_terminate(), weft_worker_exit(), an error: whenever
 * weft_should_stop() turns true), as Node's terminate() interrupts
 * Atomics.wait: a wait in progress returns WEFT_ETERMINATED, and so does
 * every wait started after the request, at once, whatever the slot holds;
 * return to the loop then. A notify that dequeued the waiter before the
 * request still gives WEFT_WAIT_OK. Waits on other threads (the main
 * thread, threads you create) are never interrupted. WEFT_EINVAL also for
 * a NULL `result`. Thread: any (on a loop thread it blocks the loop). */
WEFT_EXTERN int weft_atomic_wait32(weft_shared_t* sh,
                                   size_t index,
                                   int32_t expected,
                                   int64_t timeout_ms,
                                   weft_wait_result_t* result);
WEFT_EXTERN int weft_atomic_wait64(weft_shared_t* sh,
                                   size_t index,
                                   int64_t expected,
                                   int64_t timeout_ms,
                                   weft_wait_result_t* result);

/* Atomics.notify: wake up to `count` waiters (negative: all) of the slot,
 * sync and async, oldest first. `*woken` (may be NULL) gets how many.
 * Waiters are keyed by byte address, as in JavaScript: notify32 on slot 2
 * and notify64 on slot 1 reach the same waiters.
 * Only makes a system call when a waiter is sleeping. Returns 0 (count 0
 * wakes nobody), WEFT_EINVAL (NULL buffer), WEFT_ERANGE. Thread: any. */
WEFT_EXTERN int weft_atomic_notify32(weft_shared_t* sh,
                                     size_t index,
                                     int count,
                                     int* woken);
WEFT_EXTERN int weft_atomic_notify64(weft_shared_t* sh,
                                     size_t index,
                                     int count,
                                     int* woken);

/* Atomics.waitAsync: the result is delivered as `cb` on `loop`, which a
 * pending wait keeps alive. If the slot does not hold `expected`, `cb` runs
 * with WEFT_WAIT_NOT_EQUAL on the next loop turn (never synchronously).
 * The waiter holds a reference to `sh` until `cb` has run. Returns 0,
 * WEFT_EINVAL (NULL loop, buffer or cb), WEFT_ERANGE, WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM; on error `cb` never runs. If the loop is torn down first
 * (its worker ends), the wait is dropped without calling `cb`, also when a
 * notify already resolved it and its result had not been delivered yet;
 * the wait's memory and timer are released either way.
 * `timeout_ms` (negative: none) counts from the call, even when the
 * loop's thread was busy before it.
 * Runs on: `loop`'s thread; ticks/microtasks drained after.
 * Thread: `loop`'s owner only. */
typedef void (*weft_wait_cb)(weft_loop_t* loop,
                             void* arg,
                             weft_wait_result_t result);
WEFT_EXTERN int weft_atomic_wait_async32(weft_loop_t* loop,
                                         weft_shared_t* sh,
                                         size_t index,
                                         int32_t expected,
                                         int64_t timeout_ms,
                                         weft_wait_cb cb,
                                         void* arg);

#endif /* WEFT_SHARED_H */
