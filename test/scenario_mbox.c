/* scenario_mbox.c - the mailbox queue of transport/mbox.h on its own
 * (plain C so that TSan runs it):
 *
 * 1. One thread: inline items and nodes come out in the order pushed,
 *    across many segments; empty() is true only when all were taken; an
 *    inline item's bytes and flag come back as pushed; a segment that
 *    cannot be allocated sends nodes around the slots (`over`) and inline
 *    pushes are refused, and order still holds; after `over` drained, the
 *    slots are used again.
 * 2. Several producer threads against one consumer, with segment
 *    allocations failing at random: every item arrives exactly once, in
 *    each producer's order, whatever path it took; and the consumer that
 *    sees empty() after every producer finished has everything.
 * Exits 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbox.h"
#include "support.h"

/* --- allocation that fails on demand -------------------------------------- */

static atomic_int fail_mode;   /* 0: never; 1: always; 2: 1 in 4. */
static atomic_uint fail_seed = 1;
static atomic_long live_segs;

static void* seg_alloc(size_t n) {
  int mode = atomic_load(&fail_mode);
  if (mode == 1)
    return NULL;
  if (mode == 2) {
    /* A shared LCG: which call fails does not matter, only that some do. */
    unsigned s = atomic_fetch_add(&fail_seed, 2654435761u);
    if ((s >> 13) % 4 == 0)
      return NULL;
  }
  void* p = aligned_alloc(64, (n + 63) & ~(size_t)63);
  if (p != NULL)
    atomic_fetch_add(&live_segs, 1);
  return p;
}

static void seg_free(void* p) {
  if (p != NULL)
    atomic_fetch_sub(&live_segs, 1);
  free(p);
}

/* An item: a node carrying (producer, seq), or inline bytes of them. */
typedef struct {
  weft__mpsc_node_t node;
  uint32_t who;
  uint64_t seq;
} item_t;

/* Take one item: its producer and sequence; false when none is ready. */
static bool take(weft__mbox_t* q, uint32_t* who, uint64_t* seq,
                 uint32_t* flag) {
  weft__mbox_item_t it;
  if (!weft__mbox_peek(q, &it))
    return false;
  if (it.node != NULL) {
    item_t* x = weft__container_of(it.node, item_t, node);
    *who = x->who;
    *seq = x->seq;
    *flag = 0;
    weft__mbox_next(q, &it);
    free(x);
    return true;
  }
  CHECK((it.len & 0x7fffffffu) == 12, "inline length %u", it.len);
  memcpy(who, it.data, 4);
  memcpy(seq, it.data + 4, 8);
  *flag = it.len & 0x80000000u;
  weft__mbox_next(q, &it);
  return true;
}

/* Push (who, seq): inline when `inl` and the slots take it, else a node. */
static void push(weft__mbox_t* q, uint32_t who, uint64_t seq, bool inl) {
  if (inl) {
    unsigned char b[12];
    memcpy(b, &who, 4);
    memcpy(b + 4, &seq, 8);
    if (weft__mbox_push_inline(q, b, 12, 12 | (uint32_t)(seq & 1) << 31) == 0)
      return;
  }
  item_t* x = malloc(sizeof(*x));
  CHECK(x != NULL, "malloc");
  x->who = who;
  x->seq = seq;
  weft__mbox_push_node(q, &x->node);
}

/* --- 1. one thread ------------------------------------------------------- */

static void one_thread(void) {
  weft__mbox_t q;
  uint32_t who, flag;
  uint64_t seq, want = 0, i;
  const uint64_t n = 10 * WEFT__MBOX_SLOTS + 7;
  CHECK(weft__mbox_init(&q, seg_alloc, seg_free) == 0, "init");
  CHECK(weft__mbox_empty(&q), "a new queue is empty");
  CHECK(!take(&q, &who, &seq, &flag), "nothing to take");
  for (i = 0; i < n; i++)
    push(&q, 0, i, i % 3 != 0);
  CHECK(!weft__mbox_empty(&q), "not empty");
  while (take(&q, &who, &seq, &flag)) {
    CHECK(seq == want, "got %llu, want %llu", (unsigned long long)seq,
          (unsigned long long)want);
    /* Pushed inline (seq % 3 != 0) carries its flag, odd seqs set. */
    if (seq % 3 != 0)
      CHECK(flag == (uint32_t)(seq & 1) << 31, "flag of %llu",
            (unsigned long long)seq);
    want++;
  }
  CHECK(want == n, "took %llu of %llu", (unsigned long long)want,
        (unsigned long long)n);
  CHECK(weft__mbox_empty(&q), "empty after all were taken");

  /* No segment can be allocated: pushes use up the current segment and
   * the spares the consumer handed back, then inline pushes are refused
   * and nodes go around the slots (over). */
  atomic_store(&fail_mode, 1);
  {
    uint64_t cut = want;
    unsigned char b[12];
    uint32_t zero = 0;
    for (;;) {
      CHECK(cut - want <= 4 * WEFT__MBOX_SLOTS, "inline never refused");
      memcpy(b, &zero, 4);
      memcpy(b + 4, &cut, 8);
      if (weft__mbox_push_inline(&q, b, 12, 12) != 0)
        break;
      cut++;
    }
    CHECK(cut - want > WEFT__MBOX_SLOTS, "the spares took none");
    for (i = 0; i < 5; i++)
      push(&q, 0, cut + i, false);
    atomic_store(&fail_mode, 0);
    /* `over` holds some: later pushes, inline asked or not, follow them
     * (memory is back, but the slots would pass them). */
    CHECK(weft__mbox_push_inline(&q, b, 4, 4) == -1,
          "inline refused while over holds messages");
    for (i = 5; i < 9; i++)
      push(&q, 0, cut + i, true);
    while (take(&q, &who, &seq, &flag)) {
      CHECK(seq == want, "around the slots: got %llu, want %llu",
            (unsigned long long)seq, (unsigned long long)want);
      want++;
    }
    CHECK(want == cut + 9, "took up to %llu of %llu",
          (unsigned long long)want, (unsigned long long)cut + 9);
  }
  CHECK(weft__mbox_empty(&q), "empty after over drained");
  /* The slots are used again. */
  push(&q, 0, want, true);
  {
    weft__mbox_item_t it;
    CHECK(weft__mbox_peek(&q, &it) && it.node == NULL && !it.over,
          "inline again once over is empty");
  }
  CHECK(take(&q, &who, &seq, &flag) && seq == want, "last");
  CHECK(weft__mbox_empty(&q), "empty at the end");
  weft__mbox_destroy(&q);
}

/* --- 2. producers against one consumer ----------------------------------- */

#define PRODUCERS 4
#define PER (UNDER_TSAN ? 20000 : 300000)

static weft__mbox_t shared_q;
static atomic_int producers_done;

static void* producer(void* arg) {
  uint32_t who = (uint32_t)(uintptr_t)arg;
  uint64_t i;
  for (i = 0; i < PER; i++)
    push(&shared_q, who, i, (i + who) % 5 != 0);
  atomic_fetch_add(&producers_done, 1);
  return NULL;
}

static void many_producers(void) {
  pthread_t th[PRODUCERS];
  uint64_t next[PRODUCERS] = {0};
  uint64_t total = 0;
  uint32_t who, flag;
  uint64_t seq;
  int i;
  CHECK(weft__mbox_init(&shared_q, seg_alloc, seg_free) == 0, "init");
  atomic_store(&fail_mode, getenv("MBOX_NOFAIL") ? 0 : 2);
  for (i = 0; i < PRODUCERS; i++)
    pthread_create(&th[i], NULL, producer, (void*)(uintptr_t)i);
  for (;;) {
    if (take(&shared_q, &who, &seq, &flag)) {
      CHECK(who < PRODUCERS, "producer %u", who);
      CHECK(seq == next[who], "producer %u: got %llu, want %llu", who,
            (unsigned long long)seq, (unsigned long long)next[who]);
      next[who]++;
      total++;
      continue;
    }
    /* All producers finished before this empty() looked: nothing can be
     * missing any more. */
    if (atomic_load(&producers_done) == PRODUCERS &&
        weft__mbox_empty(&shared_q))
      break;
  }
  for (i = 0; i < PRODUCERS; i++)
    pthread_join(th[i], NULL);
  atomic_store(&fail_mode, 0);
  CHECK(total == (uint64_t)PRODUCERS * PER, "took %llu of %llu",
        (unsigned long long)total, (unsigned long long)PRODUCERS * PER);
  weft__mbox_destroy(&shared_q);
}

int main(void) {
  one_thread();
  CHECK(atomic_load(&live_segs) == 0, "%ld segments not freed",
        atomic_load(&live_segs));
  many_producers();
  CHECK(atomic_load(&live_segs) == 0, "%ld segments not freed",
        atomic_load(&live_segs));
  printf("scenario_mbox: ok\n");
  return 0;
}
