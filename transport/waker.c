/* waker.c - wake-ups of a parked loop, only when it is parked: a write to
 * libuv's own wake-up descriptor of the loop (waker.h says why not
 * uv_async_send). */
#include "waker.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

void weft__waker_init(weft__waker_t* w, uv_loop_t* loop) {
  atomic_init(&w->parked, WEFT__WAKER_PARKED);
  atomic_init(&w->signalled, 0);
  atomic_init(&w->woke_at, 0);
  /* As libuv's uv__async_send: a pipe's write end when the loop has one,
   * else the eventfd it reads. uv_loop_init() made both (its threadpool's
   * async handle), so they live as long as the loop. */
  if (loop->async_wfd != -1) {
    w->fd = loop->async_wfd;
    w->len = 1;
  } else {
    w->fd = loop->async_io_watcher.fd;
    w->len = sizeof(uint64_t);
  }
}

void weft__waker_checked(weft__waker_t* w) {
  /* libuv drained the descriptor in the poll that came before this check
   * phase. A producer that sets the flag after this exchange writes after
   * that drain, so the loop polls again; one that still read 1 made no
   * write, but its push comes before this exchange in the single order,
   * and the fence puts the consumer's reads of its queues after it. */
  atomic_exchange_explicit(&w->signalled, 0, memory_order_seq_cst);
  atomic_thread_fence(memory_order_seq_cst);
}

/* The wake-up itself; coalesced through `signalled`. */
static void signal_fd(weft__waker_t* w) {
  static const uint64_t one = 1; /* Its first byte is 1: a pipe's byte. */
  ssize_t r;
  /* A plain load first: under a burst every later producer stops here
   * without taking the line for writing. */
  if (atomic_load_explicit(&w->signalled, memory_order_seq_cst) != 0 ||
      atomic_exchange_explicit(&w->signalled, 1, memory_order_seq_cst) != 0)
    return;
  /* A clock read (tens of ns) next to a system call (microseconds). */
  atomic_store_explicit(&w->woke_at, uv_hrtime(), memory_order_relaxed);
  do
    r = write(w->fd, &one, w->len);
  while (r < 0 && errno == EINTR);
  /* EAGAIN: a full pipe or eventfd is readable already, as libuv's own
   * uv__async_send accepts. */
}

void weft__waker_wake(weft__waker_t* w) {
  /* seq_cst: this load must not move before the caller's push (see the
   * comment in waker.h), nor before the caller's count of itself as a
   * producer (weft__waker_close). A closed waker reads as not parked. */
  if (atomic_load_explicit(&w->parked, memory_order_seq_cst) ==
      WEFT__WAKER_PARKED)
    signal_fd(w);
}

void weft__waker_force(weft__waker_t* w) {
  /* seq_cst: as in weft__waker_wake. Many forces before the check make one
   * write. */
  if (atomic_load_explicit(&w->parked, memory_order_seq_cst) !=
      WEFT__WAKER_CLOSED)
    signal_fd(w);
}

uint64_t weft__waker_take_woke_at(weft__waker_t* w) {
  return atomic_exchange_explicit(&w->woke_at, 0, memory_order_relaxed);
}

void weft__waker_park_begin(weft__waker_t* w) {
  /* seq_cst: the following empty check must not move before this store. */
  atomic_store_explicit(&w->parked, WEFT__WAKER_PARKED, memory_order_seq_cst);
}

void weft__waker_park_end(weft__waker_t* w) {
  /* relaxed: a producer that still sees PARKED only makes a spare
   * wake-up. */
  atomic_store_explicit(&w->parked, WEFT__WAKER_BUSY, memory_order_relaxed);
}

void weft__waker_close(weft__waker_t* w) {
  /* seq_cst: ordered before the owner's check that no producer is inside
   * a wake-up (see waker.h). */
  atomic_store_explicit(&w->parked, WEFT__WAKER_CLOSED, memory_order_seq_cst);
}
