/* mbox.c - the slow paths of mbox.h: linking a segment, and handing back
 * the ones the consumer moved past. */
#include "mbox.h"

weft__mpsc_node_t weft__mbox_inline_mark;

/* Spare segments a queue keeps for its next links (a stream then links
 * without allocating); more are freed. */
#define MBOX_SPARES 2

static weft__mbox_seg_t* seg_new(weft__mbox_t* q, uint64_t base) {
  weft__mbox_seg_t* s = q->alloc(sizeof(*s));
  if (s == NULL)
    return NULL;
  memset(s, 0, sizeof(*s));
  atomic_init(&s->next, NULL);
  s->base = base;
  return s;
}

int weft__mbox_init(weft__mbox_t* q, void* (*alloc)(size_t),
                    void (*free_fn)(void*)) {
  weft__mbox_seg_t* s;
  q->alloc = alloc;
  q->free = free_fn;
  s = seg_new(q, 0);
  if (s == NULL)
    return -1;
  if (pthread_mutex_init(&q->grow, NULL) != 0) {
    free_fn(s);
    return -1;
  }
  atomic_init(&q->tail, 0);
  atomic_init(&q->tail_seg, s);
  atomic_init(&q->inflight, 0);
  atomic_init(&q->nover, 0);
  q->spares = NULL;
  q->nspares = 0;
  weft__mpscs_init(&q->over);
  q->head = 0;
  q->head_seg = s;
  q->retired = NULL;
  q->over_item = NULL;
  return 0;
}

static void free_list(weft__mbox_t* q, weft__mbox_seg_t* s) {
  while (s != NULL) {
    weft__mbox_seg_t* later = s->later;
    q->free(s);
    s = later;
  }
}

void weft__mbox_destroy(weft__mbox_t* q) {
  weft__mbox_seg_t* s = q->head_seg;
  while (s != NULL) {
    weft__mbox_seg_t* next = atomic_load_explicit(&s->next,
                                                  memory_order_relaxed);
    q->free(s);
    s = next;
  }
  free_list(q, q->retired);
  free_list(q, q->spares);
  pthread_mutex_destroy(&q->grow);
}

int weft__mbox_grow(weft__mbox_t* q, weft__mbox_seg_t* full) {
  weft__mbox_seg_t* s;
  int err = 0;
  pthread_mutex_lock(&q->grow);
  /* Another producer may have linked it meanwhile. */
  if (atomic_load_explicit(&q->tail_seg, memory_order_relaxed) == full) {
    s = q->spares;
    if (s != NULL) {
      q->spares = s->later;
      q->nspares--;
      s->base = full->base + WEFT__MBOX_SLOTS;
    } else {
      s = seg_new(q, full->base + WEFT__MBOX_SLOTS);
    }
    if (s != NULL) {
      s->later = NULL;
      /* tail_seg first (seq_cst), then the link: a consumer that follows
       * the link and then sees no producer inside a push knows that any
       * later push reads the new tail_seg (see weft__mbox_retire). The
       * link's release publishes `base` and the cleared slots. */
      atomic_store_explicit(&q->tail_seg, s, memory_order_seq_cst);
      atomic_store_explicit(&full->next, s, memory_order_release);
    } else {
      err = -1;
    }
  }
  pthread_mutex_unlock(&q->grow);
  return err;
}

void weft__mbox_retire(weft__mbox_t* q, weft__mbox_seg_t* done) {
  weft__mbox_seg_t* s;
  done->later = q->retired;
  q->retired = done;
  /* seq_cst: pairs with the producers' increment before they read
   * tail_seg. 0 here: every producer that could have read a retired
   * segment as the tail has left its push, and every later one reads a
   * segment linked after them (they were linked before we moved past). */
  if (atomic_load_explicit(&q->inflight, memory_order_seq_cst) != 0)
    return;
  s = q->retired;
  q->retired = NULL;
  pthread_mutex_lock(&q->grow);
  while (s != NULL && q->nspares < MBOX_SPARES) {
    weft__mbox_seg_t* later = s->later;
    /* Cleared for reuse; published to the next linker by the lock. */
    memset(s->slots, 0, sizeof(s->slots));
    atomic_store_explicit(&s->next, NULL, memory_order_relaxed);
    s->later = q->spares;
    q->spares = s;
    q->nspares++;
    s = later;
  }
  pthread_mutex_unlock(&q->grow);
  free_list(q, s);
}
