/* mpsc.h - an intrusive lock-free queue with many producers and one
 * consumer (Vyukov's node-based MPSC, as in Pony's messageq.c).
 *
 * Producers may push from any thread: one atomic exchange and one store per
 * push, no lock, no allocation. Only the consumer (one thread at a time;
 * ownership may move between threads when a happens-before edge orders the
 * hand-over) pops and asks whether the queue is empty.
 *
 * A push that is half done (exchange done, link not yet stored) makes pop
 * return NULL although the queue is not empty; weft__mpsc_empty() reports
 * such a queue as non-empty, so callers that park after an empty check
 * never miss it. */
#ifndef WEFT_TRANSPORT_MPSC_H
#define WEFT_TRANSPORT_MPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct weft__mpsc_node_s {
  _Atomic(struct weft__mpsc_node_s*) next;
} weft__mpsc_node_t;

typedef struct weft__mpsc_s {
  /* Producers, any thread: exchange only. */
  alignas(64) _Atomic(weft__mpsc_node_t*) head;
  /* Consumer only: the oldest node not yet popped (or the sentinel). */
  alignas(64) weft__mpsc_node_t* tail;
  weft__mpsc_node_t sentinel;
} weft__mpsc_t;

#define weft__container_of(ptr, type, field) \
  ((type*)((char*)(ptr)-offsetof(type, field)))

/* The same queue without the cache-line alignment: 24 bytes, for objects
 * that have one each and must stay small (an actor's mailbox). Producers
 * and the consumer then share a line; that is the price of the size. */
typedef struct weft__mpsc_small_s {
  _Atomic(weft__mpsc_node_t*) head;
  weft__mpsc_node_t* tail;
  weft__mpsc_node_t sentinel;
} weft__mpsc_small_t;

/* The algorithm, on the three fields of either layout. */

static inline void weft__mpsc_init_at(_Atomic(weft__mpsc_node_t*)* head,
                                      weft__mpsc_node_t** tail,
                                      weft__mpsc_node_t* sentinel) {
  atomic_init(&sentinel->next, NULL);
  atomic_init(head, sentinel);
  *tail = sentinel;
}

/* Thread: any. Returns the node pushed before `n` (the sentinel when the
 * queue was empty, or a half-done push): callers that only need "was it
 * empty" compare it with the sentinel. */
static inline weft__mpsc_node_t* weft__mpsc_push_at(
    _Atomic(weft__mpsc_node_t*)* head,
    weft__mpsc_node_t* n) {
  weft__mpsc_node_t* prev;
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* acq_rel: release publishes n (and the payload written before the push)
   * to whoever later reads head; acquire orders us after the previous
   * producer, so prev->next is ours alone to write. seq_cst is used instead
   * because callers pair the push with a load of a "parked" flag (Dekker):
   * the push must not be reordered after that load. */
  prev = atomic_exchange_explicit(head, n, memory_order_seq_cst);
  /* release: the consumer's acquire load of prev->next sees n's payload. */
  atomic_store_explicit(&prev->next, n, memory_order_release);
  return prev;
}

/* The oldest node, or NULL if empty or a push is half done.
 * Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpsc_pop_at(
    _Atomic(weft__mpsc_node_t*)* head,
    weft__mpsc_node_t** tailp,
    weft__mpsc_node_t* sentinel) {
  weft__mpsc_node_t* tail = *tailp;
  weft__mpsc_node_t* next =
      atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == sentinel) {
    if (next == NULL)
      return NULL;
    *tailp = next;
    tail = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next != NULL) {
    *tailp = next;
    return tail;
  }
  /* tail is the last linked node. If a producer already swapped head, its
   * link is on the way: report nothing for now. */
  if (tail != atomic_load_explicit(head, memory_order_acquire))
    return NULL;
  /* Put the sentinel back behind tail so tail can be handed out. */
  weft__mpsc_push_at(head, sentinel);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    *tailp = next;
    return tail;
  }
  return NULL;
}

/* True when nothing was pushed that has not been popped, counting pushes
 * that are half done as present. Thread: consumer only. */
static inline bool weft__mpsc_empty_at(_Atomic(weft__mpsc_node_t*)* head,
                                       weft__mpsc_node_t* tail,
                                       weft__mpsc_node_t* sentinel) {
  /* seq_cst: pairs with the producers' seq_cst exchange for the
   * park/wake handshake (see waker.h). */
  return tail == sentinel &&
         atomic_load_explicit(head, memory_order_seq_cst) == sentinel;
}

/* The aligned queue. */

static inline void weft__mpsc_init(weft__mpsc_t* q) {
  weft__mpsc_init_at(&q->head, &q->tail, &q->sentinel);
}

/* Thread: any. */
static inline void weft__mpsc_push(weft__mpsc_t* q, weft__mpsc_node_t* n) {
  (void)weft__mpsc_push_at(&q->head, n);
}

/* Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpsc_pop(weft__mpsc_t* q) {
  return weft__mpsc_pop_at(&q->head, &q->tail, &q->sentinel);
}

/* The oldest node not yet popped, left in the queue, or NULL. A later pop
 * may still return NULL while that node's push is half done.
 * Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpsc_peek(weft__mpsc_t* q) {
  if (q->tail != &q->sentinel)
    return q->tail;
  return atomic_load_explicit(&q->sentinel.next, memory_order_acquire);
}

/* Thread: consumer only. */
static inline bool weft__mpsc_empty(weft__mpsc_t* q) {
  return weft__mpsc_empty_at(&q->head, q->tail, &q->sentinel);
}

/* The small queue: the same calls. */

static inline void weft__mpscs_init(weft__mpsc_small_t* q) {
  weft__mpsc_init_at(&q->head, &q->tail, &q->sentinel);
}

/* Thread: any. True when the queue was empty before this push (counting
 * a half-done push as present). */
static inline bool weft__mpscs_push(weft__mpsc_small_t* q,
                                    weft__mpsc_node_t* n) {
  return weft__mpsc_push_at(&q->head, n) == &q->sentinel;
}

/* Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpscs_pop(weft__mpsc_small_t* q) {
  return weft__mpsc_pop_at(&q->head, &q->tail, &q->sentinel);
}

/* Thread: consumer only. */
static inline bool weft__mpscs_empty(weft__mpsc_small_t* q) {
  return weft__mpsc_empty_at(&q->head, q->tail, &q->sentinel);
}

#endif /* WEFT_TRANSPORT_MPSC_H */
