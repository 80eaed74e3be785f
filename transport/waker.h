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
 * its loop; a write to the closed loop's descriptor would reach whatever
 * file took its number since. So the owner closes in three steps:
 * weft__waker_close() marks the waker CLOSED (seq_cst store), then it
 * waits until no producer is
 * inside a wake-up (a seq_cst load of a count each producer raises with a
 * seq_cst increment before its push and lowers with a seq_cst decrement
 * after its wake-up), and only then closes the loop.
 * In the single seq_cst order, either a producer's increment comes before
 * the owner's load (then the owner reads 0 only after its decrement, which
 * releases: the whole wake-up happens before the close), or after it (then the
 * producer's later load of the flag comes after the CLOSED store, sees it,
 * and skips the wake-up). The flag doubles as the "dead" mark, so a push
 * still costs one load of it.
 *
 * Why not uv_async_t. libuv before 1.45 (Debian 12 ships 1.44.2) makes
 * uv_async_send a two-step handshake, and the loop's thread busy-waits
 * (997 pauses, then sched_yield(), repeated) while a sender is between its
 * two steps. A sender that is preempted there (a pool thread at nice +10,
 * whose own eventfd write has just woken the loop) keeps the loop spinning
 * until the scheduler runs that sender again: up to a whole time slice,
 * 4 ms on an HZ=250 kernel, and the loop's sockets wait meanwhile
 * (libuv issues #2769 and #2949, fixed in libuv by pull request #3879).
 * perf showed 67% of the login API's loop thread in that spin while its
 * pool hashed (bench/README.md). So the waker makes the one system call
 * uv_async_send would make, a write to the wake-up descriptor libuv keeps
 * for every loop (an eventfd, or a pipe where there is none), and nothing
 * else: libuv's poll wakes and drains it, finds no async handle pending,
 * and the loop's check phase, which runs after every poll, hands the
 * queues to the consumer. A descriptor of weft's own (an eventfd under a
 * uv_poll_t) did the same at 5 more system calls per loop made and freed
 * (eventfd, ioctl, two epoll_ctl, close): spawn-to-exit 1.35x slower, side
 * by side (bench/ab.sh). The descriptor's number is read from the loop's
 * fields `async_io_watcher` and `async_wfd`, which libuv declares in its
 * public header (uv/unix.h, UV_LOOP_PRIVATE_FIELDS) throughout 1.x.
 * `signalled` coalesces wake-ups as uv_async_t's `pending` did: only the
 * first producer after the consumer's last check writes. */
#ifndef WEFT_TRANSPORT_WAKER_H
#define WEFT_TRANSPORT_WAKER_H

#include <stdalign.h>
#include <stdatomic.h>
#include <uv.h>

/* Values of `parked`. */
enum {
  WEFT__WAKER_BUSY = 0,   /* The consumer checks its queues itself. */
  WEFT__WAKER_PARKED = 1, /* About to block, or not driven: wake it. */
  WEFT__WAKER_CLOSED = 2  /* Being closed: never touch `fd` again. */
};

typedef struct weft__waker_s {
  /* A WEFT__WAKER_* value. Written by the consumer, read by producers on
   * every push: its own cache line so it does not share one with queue
   * heads. */
  alignas(64) atomic_int parked;
  /* 1 from a producer's write until the consumer's next check. */
  atomic_int signalled;
  /* uv_hrtime() of the last wake-up's write (0: none since the consumer
   * cleared it): when the work that woke a parked loop came, which the
   * loop's adaptive spin learns from (loop.c). Relaxed: a hint, ordered
   * with nothing. */
  _Atomic uint64_t woke_at;
  int fd;     /* libuv's wake-up descriptor of the loop. */
  size_t len; /* What a wake-up writes: 8 (eventfd) or 1 (pipe) bytes. */
} weft__waker_t;

/* The waker starts "parked": until weft__waker_park_end() is called (by a
 * driver that checks its queues itself) every wake makes a system call,
 * which is what a loop driven by plain uv_run() needs. The consumer calls
 * weft__waker_checked() in its check phase, then checks its queues.
 * Thread: the loop's thread. */
void weft__waker_init(weft__waker_t* w, uv_loop_t* loop);

/* A poll has drained the descriptor: the consumer is about to check its
 * queues; later pushes make a new wake-up. Thread: the loop's thread. */
void weft__waker_checked(weft__waker_t* w);

/* Thread: any. */
void weft__waker_wake(weft__waker_t* w);

/* Wake even if the consumer is busy (e.g. to ask it to stop between two
 * callbacks); not once the waker is closed. Thread: any. */
void weft__waker_force(weft__waker_t* w);

/* When the last wake-up was written (uv_hrtime()), 0 if none was since
 * the last call; clears it. Thread: the loop's thread. */
uint64_t weft__waker_take_woke_at(weft__waker_t* w);

/* Thread: the loop's thread. */
void weft__waker_park_begin(weft__waker_t* w);
void weft__waker_park_end(weft__waker_t* w);

/* From now on no wake-up touches the descriptor (see "Closing" above);
 * the owner then waits for producers already inside a wake-up before it
 * closes the loop. Park calls must not follow. Thread: the loop's
 * thread. */
void weft__waker_close(weft__waker_t* w);

#endif /* WEFT_TRANSPORT_WAKER_H */
