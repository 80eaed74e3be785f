/* mbox.h - a port's mailbox: a queue with many producers and one consumer
 * made of slots in an array, cut in linked segments, where a small message
 * travels inline in its slot.
 *
 * Why not the node queue of mpsc.h. A list of nodes makes the consumer
 * chase pointers: it learns where message n+1 is only once message n's
 * line has crossed from the producer's core, so a stream pays one line's
 * turn-around per message (on the hosts of issue 9, 250 ns or more: a
 * ceiling of ~4 M msgs/s whatever else is done). Here messages follow
 * each other in memory: the consumer's reads stream (the hardware
 * prefetcher fetches the next lines while the current one is read) and
 * two slots share a line. A small message (WEFT__MBOX_INLINE bytes or
 * fewer, an integer or a short array) needs no allocation at all: the
 * producer copies it into its slot, the consumer copies it out, so there
 * is no malloc on one thread and free on the other for it either.
 *
 * Producers claim slot indexes with a CAS on `tail` (the order of claims
 * is the queue's order, so a post that happens before another is popped
 * before it, whatever threads made them); a claim is only made inside a
 * segment that exists, so a claim never fails half way: at a segment's
 * end the producer links the next one first, under `grow`. Out of memory
 * there, a pointer push goes to `over`, a node queue that needs no
 * allocation (so a push of a message never fails: closes, worker exits and
 * request outcomes rely on it), and while `over` holds anything every push
 * goes there too, so that one producer's order holds; the consumer takes
 * `over` only once the array is empty. An inline push refuses instead
 * (the caller then allocates a message and pushes it).
 *
 * Segments are freed (or kept as a spare) by the consumer once it has
 * moved past them and no producer is inside a push (`inflight`): a
 * producer may hold a pointer to a segment it read as the tail before
 * another producer linked the next one.
 *
 * A push that is half done (slot claimed, not yet written) makes the
 * consumer see nothing ready although weft__mbox_empty() is false, as
 * with mpsc.h; callers that park after an empty check never miss it. */
#ifndef WEFT_TRANSPORT_MBOX_H
#define WEFT_TRANSPORT_MBOX_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mpsc.h"

/* Slots per segment: 2 KiB of slots, so that a port costs little while a
 * stream links a new segment every 64 messages (one lock, no allocation
 * when the consumer handed a spare back). */
#define WEFT__MBOX_SLOTS 64
/* Bytes a slot carries inline. 20: a slot is 32 bytes, two to a line. */
#define WEFT__MBOX_INLINE 20

/* A slot's word: NULL until written; WEFT__MBOX_INL (the address of a
 * node nobody pushes) for inline bytes; else the node pushed. */
extern weft__mpsc_node_t weft__mbox_inline_mark;
#define WEFT__MBOX_INL (&weft__mbox_inline_mark)

typedef struct {
  _Atomic(weft__mpsc_node_t*) word;
  uint32_t len;   /* Inline bytes, with the caller's flag bit (see push). */
  unsigned char data[WEFT__MBOX_INLINE];
} weft__mbox_slot_t;

typedef struct weft__mbox_seg_s {
  _Atomic(struct weft__mbox_seg_s*) next;
  uint64_t base; /* The index of slots[0]. */
  struct weft__mbox_seg_s* later; /* On the retired or spare list. */
  alignas(64) weft__mbox_slot_t slots[WEFT__MBOX_SLOTS];
} weft__mbox_seg_t;

typedef struct {
  /* Producers, any thread: written by every push. */
  alignas(64) _Atomic uint64_t tail;     /* The next index to claim. */
  _Atomic(weft__mbox_seg_t*) tail_seg;   /* The segment that holds it. */
  atomic_uint inflight;                  /* Producers inside a push. */
  /* Read by every push and by a waiting consumer, written rarely: a line
   * of its own, so that a consumer waiting for more does not take the
   * producers' line from them. */
  alignas(64) atomic_uint nover;         /* Pushed on `over`, not popped. */
  pthread_mutex_t grow;                  /* Linking; the spare list. */
  weft__mbox_seg_t* spares;              /* Under `grow`. */
  int nspares;                           /* Under `grow`. */
  weft__mpsc_small_t over;
  void* (*alloc)(size_t);
  void (*free)(void*);
  /* Consumer only. */
  alignas(64) uint64_t head;
  weft__mbox_seg_t* head_seg;
  weft__mbox_seg_t* retired; /* Moved past; may still be read by a producer. */
  weft__mpsc_node_t* over_item; /* Popped from `over`, not yet taken. */
} weft__mbox_t;

/* What the consumer finds first: a node, or inline bytes (in the slot:
 * valid until weft__mbox_next()). */
typedef struct {
  weft__mpsc_node_t* node;
  const unsigned char* data;
  uint32_t len;
  bool over; /* From `over`. */
} weft__mbox_item_t;

/* 0, or -1 (out of memory: the first segment). `alloc` must return
 * 64-byte aligned memory. */
int weft__mbox_init(weft__mbox_t* q, void* (*alloc)(size_t),
                    void (*free_fn)(void*));
/* Free the segments. Thread: the last user; the queue must be empty. */
void weft__mbox_destroy(weft__mbox_t* q);
/* The slow paths of push and of the consumer's move to the next segment. */
int weft__mbox_grow(weft__mbox_t* q, weft__mbox_seg_t* full);
void weft__mbox_retire(weft__mbox_t* q, weft__mbox_seg_t* done);

/* Claim a slot: its address, or NULL (no segment could be had, or `over`
 * holds something). Between the producer's inflight increment and
 * decrement. */
static inline weft__mbox_slot_t* weft__mbox_claim_(weft__mbox_t* q) {
  for (;;) {
    /* seq_cst: a consumer that saw a later segment linked then read
     * `inflight` as 0 (and freed this one) is ordered before our increment,
     * and the link's store of tail_seg before its store of `next`: we then
     * read the new tail_seg. See weft__mbox_retire(). */
    weft__mbox_seg_t* s =
        atomic_load_explicit(&q->tail_seg, memory_order_seq_cst);
    /* Not before the load of tail_seg (which is seq_cst): `tail` is at
     * least s->base, and below s->base + SLOTS unless s is full. */
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t off = t - s->base;
    if (atomic_load_explicit(&q->nover, memory_order_seq_cst) != 0)
      return NULL;
    if (off < WEFT__MBOX_SLOTS) {
      /* seq_cst: (1) of the park/schedule handshake (port.c's comment):
       * the claim is what makes the queue non-empty. */
      if (atomic_compare_exchange_weak_explicit(&q->tail, &t, t + 1,
                                                memory_order_seq_cst,
                                                memory_order_relaxed))
        return &s->slots[off];
      continue;
    }
    if (weft__mbox_grow(q, s) != 0)
      return NULL;
  }
}

/* Where weft__mbox_push_inline_tail() puts its 8 bytes: the slot's last. */
#define WEFT__MBOX_TAIL_AT (WEFT__MBOX_INLINE - 8)

/* Both inline pushes: `tail` NULL, or 8 bytes for WEFT__MBOX_TAIL_AT. */
static inline int weft__mbox_push_inline_(weft__mbox_t* q,
                                          const void* bytes,
                                          uint32_t len,
                                          uint32_t word,
                                          const uint64_t* tail) {
  weft__mbox_slot_t* slot;
  atomic_fetch_add_explicit(&q->inflight, 1, memory_order_seq_cst);
  slot = weft__mbox_claim_(q);
  if (slot != NULL) {
    memcpy(slot->data, bytes, len);
    if (tail != NULL)
      memcpy(slot->data + WEFT__MBOX_TAIL_AT, tail, sizeof(*tail));
    slot->len = word;
    /* release: the bytes before the word the consumer acquires. */
    atomic_store_explicit(&slot->word, WEFT__MBOX_INL, memory_order_release);
  }
  /* release: our reads of the segment before a consumer that sees 0. */
  atomic_fetch_sub_explicit(&q->inflight, 1, memory_order_release);
  return slot != NULL ? 0 : -1;
}

/* Push `len` (<= WEFT__MBOX_INLINE) bytes inline, with `word` (the
 * caller's: its length and flags) returned with them. 0, or -1: push a
 * node instead. Thread: any. */
static inline int weft__mbox_push_inline(weft__mbox_t* q,
                                         const void* bytes,
                                         uint32_t len,
                                         uint32_t word) {
  return weft__mbox_push_inline_(q, bytes, len, word, NULL);
}

/* As weft__mbox_push_inline(), with `len` <= WEFT__MBOX_TAIL_AT bytes and
 * 8 more (`tail`) at WEFT__MBOX_TAIL_AT, copied straight into the slot (a
 * trace's stamp: see port.c). Thread: any. */
static inline int weft__mbox_push_inline_tail(weft__mbox_t* q,
                                              const void* bytes,
                                              uint32_t len,
                                              uint32_t word,
                                              uint64_t tail) {
  return weft__mbox_push_inline_(q, bytes, len, word, &tail);
}

/* Push node `n` (its owner's payload written before). Never fails.
 * Thread: any. */
static inline void weft__mbox_push_node(weft__mbox_t* q,
                                        weft__mpsc_node_t* n) {
  weft__mbox_slot_t* slot;
  atomic_fetch_add_explicit(&q->inflight, 1, memory_order_seq_cst);
  slot = weft__mbox_claim_(q);
  if (slot != NULL) {
    /* release: the message's contents before the consumer's acquire. */
    atomic_store_explicit(&slot->word, n, memory_order_release);
  } else {
    /* seq_cst: counted before it can be seen, so that a push after ours
     * (by us, or one ordered after us) comes here too. */
    atomic_fetch_add_explicit(&q->nover, 1, memory_order_seq_cst);
    (void)weft__mpscs_push(&q->over, n);
  }
  atomic_fetch_sub_explicit(&q->inflight, 1, memory_order_release);
}

/* Items pushed and not yet taken (half-done pushes included): for a
 * trace's counter. Thread: consumer. */
static inline int64_t weft__mbox_length(weft__mbox_t* q) {
  return (int64_t)(atomic_load_explicit(&q->tail, memory_order_relaxed) -
                   q->head) +
         (int64_t)atomic_load_explicit(&q->nover, memory_order_relaxed);
}

/* True when everything pushed was taken, counting half-done pushes as
 * present. seq_cst: (4) of the handshake. Thread: consumer. */
static inline bool weft__mbox_empty(weft__mbox_t* q) {
  return atomic_load_explicit(&q->tail, memory_order_seq_cst) == q->head &&
         atomic_load_explicit(&q->nover, memory_order_seq_cst) == 0;
}

/* Whether the oldest item looks written, reading only the line the next
 * push writes (and `over`'s count): for a consumer that waits for more,
 * without taking the producers' line (weft__mbox_empty() reads `tail`).
 * False for a push half done. Thread: consumer. */
static inline bool weft__mbox_ready(weft__mbox_t* q) {
  weft__mbox_seg_t* s = q->head_seg;
  uint64_t off = q->head - s->base;
  if (off == WEFT__MBOX_SLOTS) {
    s = atomic_load_explicit(&s->next, memory_order_acquire);
    off = 0;
  }
  /* relaxed: a hint; peek reads it again with acquire. */
  if (s != NULL &&
      atomic_load_explicit(&s->slots[off].word, memory_order_relaxed) != NULL)
    return true;
  return atomic_load_explicit(&q->nover, memory_order_relaxed) != 0;
}

/* The oldest item, left in the queue: true and `*it`, or false (nothing,
 * or the oldest push is half done). Thread: consumer. */
static inline bool weft__mbox_peek(weft__mbox_t* q, weft__mbox_item_t* it) {
  weft__mbox_seg_t* s = q->head_seg;
  uint64_t off = q->head - s->base;
  weft__mbox_slot_t* slot;
  weft__mpsc_node_t* w;
  if (off == WEFT__MBOX_SLOTS) {
    weft__mbox_seg_t* next =
        atomic_load_explicit(&s->next, memory_order_acquire);
    if (next == NULL)
      goto array_empty;
    q->head_seg = next;
    weft__mbox_retire(q, s);
    s = next;
    off = 0;
  }
  slot = &s->slots[off];
  /* acquire: the payload written before the word. */
  w = atomic_load_explicit(&slot->word, memory_order_acquire);
  if (w == NULL)
    goto array_empty;
  it->over = false;
  if (w == WEFT__MBOX_INL) {
    it->node = NULL;
    it->data = slot->data;
    it->len = slot->len;
  } else {
    it->node = w;
    it->data = NULL;
    it->len = 0;
  }
  return true;
array_empty:
  /* `over` is only for after the array: pushes made while it held
   * anything went there too. */
  if (atomic_load_explicit(&q->nover, memory_order_seq_cst) == 0)
    return false;
  /* Popped here and kept: a node queue's pop may not return a node its
   * peek showed (a push half done behind it). */
  if (q->over_item == NULL)
    q->over_item = weft__mpscs_pop(&q->over);
  if (q->over_item == NULL)
    return false;
  /* The array is looked at after the pop, not before: the pop acquires
   * the push, so every slot its producer claimed before (one of them may
   * have been claimed after an earlier look) shows in `tail` now. A claim
   * half done, or made meanwhile by another producer, comes first. */
  if (atomic_load_explicit(&q->tail, memory_order_seq_cst) != q->head)
    return false;
  it->node = q->over_item;
  it->over = true;
  it->data = NULL;
  it->len = 0;
  return true;
}

/* Take the item peek returned. Thread: consumer. */
static inline void weft__mbox_next(weft__mbox_t* q,
                                   const weft__mbox_item_t* it) {
  if (it->over) {
    q->over_item = NULL;
    /* seq_cst: after the item left, so that a producer that then sees 0
     * pushes into the array behind everything `over` held. */
    atomic_fetch_sub_explicit(&q->nover, 1, memory_order_seq_cst);
    return;
  }
  q->head++;
}

#endif /* WEFT_TRANSPORT_MBOX_H */
