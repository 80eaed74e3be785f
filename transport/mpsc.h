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

static inline void weft__mpsc_init(weft__mpsc_t* q) {
  atomic_init(&q->sentinel.next, NULL);
  atomic_init(&q->head, &q->sentinel);
  q->tail = &q->sentinel;
}

/* Thread: any. */
static inline void weft__mpsc_push(weft__mpsc_t* q, weft__mpsc_node_t* n) {
  weft__mpsc_node_t* prev;
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* acq_rel: release publishes n (and the payload written before the push)
   * to whoever later reads head; acquire orders us after the previous
   * producer, so prev->next is ours alone to write. seq_cst is used instead
   * because callers pair the push with a load of a "parked" flag (Dekker):
   * the push must not be reordered after that load. */
  prev = atomic_exchange_explicit(&q->head, n, memory_order_seq_cst);
  /* release: the consumer's acquire load of prev->next sees n's payload. */
  atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* The oldest node, or NULL if empty or a push is half done.
 * Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpsc_pop(weft__mpsc_t* q) {
  weft__mpsc_node_t* tail = q->tail;
  weft__mpsc_node_t* next =
      atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &q->sentinel) {
    if (next == NULL)
      return NULL;
    q->tail = next;
    tail = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  /* tail is the last linked node. If a producer already swapped head, its
   * link is on the way: report nothing for now. */
  if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
    return NULL;
  /* Put the sentinel back behind tail so tail can be handed out. */
  weft__mpsc_push(q, &q->sentinel);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  return NULL;
}

/* The oldest node not yet popped, left in the queue, or NULL. A later pop
 * may still return NULL while that node's push is half done.
 * Thread: consumer only. */
static inline weft__mpsc_node_t* weft__mpsc_peek(weft__mpsc_t* q) {
  if (q->tail != &q->sentinel)
    return q->tail;
  return atomic_load_explicit(&q->sentinel.next, memory_order_acquire);
}

/* True when nothing was pushed that has not been popped, counting pushes
 * that are half done as present. Thread: consumer only. */
static inline bool weft__mpsc_empty(weft__mpsc_t* q) {
  /* seq_cst: pairs with the producers' seq_cst exchange for the
   * park/wake handshake (see waker.h). */
  return q->tail == &q->sentinel &&
         atomic_load_explicit(&q->head, memory_order_seq_cst) == &q->sentinel;
}

#endif /* WEFT_TRANSPORT_MPSC_H */
