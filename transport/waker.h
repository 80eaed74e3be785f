/* waker.h - wakes a libuv loop from other threads only when it is parked.
 *
 * The consumer thread announces that it is about to block in the loop's
 * poll (weft__waker_park_begin), re-checks its queues, and only then
 * blocks. A producer pushes first and then asks weft__waker_wake(), which
 * makes the (costly) wake-up system call only if the consumer announced
 * parking. Both sides use sequentially consistent operations (the push's
 * exchange and the empty check in mpsc.h, the flag here), so either the
 * consumer sees the new node or the producer sees the flag: no lost
 * wake-up, and a busy consumer is never woken by a system call.
 *
 * Closing. A producer's wake-up can run after the consumer already found
 * the node on its own (spinning, or woken by a timer) and went on to close
 * its loop; uv_async_send on a closed loop writes to fd -1 and libuv
 * aborts. So the owner closes in three steps: weft__waker_close() marks
 * the waker CLOSED (seq_cst store), then it waits until no producer is
 * inside a wake-up (a seq_cst load of a count each producer raises with a
 * seq_cst increment before its push and lowers with a seq_cst decrement
 * after its wake-up), and only then closes the async handle and the loop.
 * In the single seq_cst order, either a producer's increment comes before
 * the owner's load (then the owner reads 0 only after its decrement, which
 * releases: the whole wake-up happens before the close), or after it (then the
 * producer's later load of the flag comes after the CLOSED store, sees it,
 * and skips the wake-up). The flag doubles as the "dead" mark, so a push
 * still costs one load of it. */
#ifndef WEFT_TRANSPORT_WAKER_H
#define WEFT_TRANSPORT_WAKER_H

#include <stdalign.h>
#include <stdatomic.h>
#include <uv.h>

/* Values of `parked`. */
enum {
  WEFT__WAKER_BUSY = 0,   /* The consumer checks its queues itself. */
  WEFT__WAKER_PARKED = 1, /* About to block, or not driven: wake it. */
  WEFT__WAKER_CLOSED = 2  /* Being closed: never touch `async` again. */
};

typedef struct weft__waker_s {
  /* A WEFT__WAKER_* value. Written by the consumer, read by producers on
   * every push: its own cache line so it does not share one with queue
   * heads. */
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
 * callbacks); not once the waker is closed. Thread: any. */
void weft__waker_force(weft__waker_t* w);

/* Thread: the loop's thread. */
void weft__waker_park_begin(weft__waker_t* w);
void weft__waker_park_end(weft__waker_t* w);

/* From now on no wake-up touches `async` (see "Closing" above); the owner
 * then waits for producers already inside a wake-up before it closes
 * `async`. Park calls must not follow. Thread: the loop's thread. */
void weft__waker_close(weft__waker_t* w);

#endif /* WEFT_TRANSPORT_WAKER_H */
