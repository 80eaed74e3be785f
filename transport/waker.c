/* waker.c - wake-ups of a parked loop, only when it is parked. */
#include "waker.h"

int weft__waker_init(weft__waker_t* w, uv_loop_t* loop, uv_async_cb cb) {
  atomic_init(&w->parked, 1);
  return uv_async_init(loop, &w->async, cb);
}

void weft__waker_wake(weft__waker_t* w) {
  /* seq_cst: this load must not move before the caller's push (see the
   * comment in waker.h). */
  if (atomic_load_explicit(&w->parked, memory_order_seq_cst))
    weft__waker_force(w);
}

void weft__waker_force(weft__waker_t* w) {
  /* uv_async_send coalesces: many sends before the callback make one. */
  uv_async_send(&w->async);
}

void weft__waker_park_begin(weft__waker_t* w) {
  /* seq_cst: the following empty check must not move before this store. */
  atomic_store_explicit(&w->parked, 1, memory_order_seq_cst);
}

void weft__waker_park_end(weft__waker_t* w) {
  /* relaxed: a producer that still sees 1 only makes a spare wake-up. */
  atomic_store_explicit(&w->parked, 0, memory_order_relaxed);
}
