/* waker.c - wake-ups of a parked loop, only when it is parked. */
#include "waker.h"

int weft__waker_init(weft__waker_t* w, uv_loop_t* loop, uv_async_cb cb) {
  atomic_init(&w->parked, WEFT__WAKER_PARKED);
  return uv_async_init(loop, &w->async, cb);
}

void weft__waker_wake(weft__waker_t* w) {
  /* seq_cst: this load must not move before the caller's push (see the
   * comment in waker.h), nor before the caller's count of itself as a
   * producer (weft__waker_close). A closed waker reads as not parked. */
  if (atomic_load_explicit(&w->parked, memory_order_seq_cst) ==
      WEFT__WAKER_PARKED)
    uv_async_send(&w->async);
}

void weft__waker_force(weft__waker_t* w) {
  /* seq_cst: as in weft__waker_wake. uv_async_send coalesces: many sends
   * before the callback make one. */
  if (atomic_load_explicit(&w->parked, memory_order_seq_cst) !=
      WEFT__WAKER_CLOSED)
    uv_async_send(&w->async);
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
