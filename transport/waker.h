/* waker.h - wakes a libuv loop from other threads only when it is parked.
 *
 * The consumer thread announces that it is about to block in the loop's
 * poll (weft__waker_park_begin), re-checks its queues, and only then
 * blocks. A producer pushes first and then asks weft__waker_wake(), which
 * makes the (costly) wake-up system call only if the consumer announced
 * parking. Both sides use sequentially consistent operations (the push's
 * exchange and the empty check in mpsc.h, the flag here), so either the
 * consumer sees the new node or the producer sees the flag: no lost
 * wake-up, and a busy consumer is never woken by a system call. */
#ifndef WEFT_TRANSPORT_WAKER_H
#define WEFT_TRANSPORT_WAKER_H

#include <stdalign.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct weft__waker_s {
  /* Written by the consumer, read by producers on every push: its own
   * cache line so it does not share one with queue heads. */
  alignas(64) atomic_int parked;
  uv_async_t async;
} weft__waker_t;

/* `cb` runs on the loop's thread after a wake-up. The waker starts
 * "parked": until weft__waker_park_end() is called (by a driver that checks
 * its queues itself) every wake makes a system call, which is what a loop
 * driven by plain uv_run() needs. Thread: the loop's thread. */
int weft__waker_init(weft__waker_t* w, uv_loop_t* loop, uv_async_cb cb);

/* Thread: any. */
void weft__waker_wake(weft__waker_t* w);

/* Wake even if the consumer is busy (e.g. to ask it to stop between two
 * callbacks). Thread: any. */
void weft__waker_force(weft__waker_t* w);

/* Thread: the loop's thread. */
void weft__waker_park_begin(weft__waker_t* w);
void weft__waker_park_end(weft__waker_t* w);

#endif /* WEFT_TRANSPORT_WAKER_H */
