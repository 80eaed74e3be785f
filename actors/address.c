/* address.c - actor ids: a process-wide table of slots, each with a
 * generation, so that an id stays safe to use after its actor is gone.
 *
 * An id is (generation << 32) | (slot index + 1): never 0. The table is
 * a fixed array of chunk pointers (65,536 chunks of 65,536 slots), chunks
 * made on demand and never freed, so reading any slot an id names is
 * always safe. A slot's `state` holds its generation, a DEAD bit and the
 * count of senders inside a push (see internal.h). Generations of a
 * slot go up by one per actor; after 2^32 - 1 reuses of one slot an old
 * id could name a new actor again (Erlang's pids wrap too, after 2^28
 * per node incarnation in 32-bit builds).
 *
 * Free slots are kept on a stack under a mutex: a spawn and an end take
 * it once each (uncontended: ~20 ns). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHUNK_BITS 16
#define CHUNK_SLOTS ((uint32_t)1 << CHUNK_BITS)
#define NCHUNKS ((uint32_t)1 << 16)

static _Atomic(weft__slot_t*) chunks[NCHUNKS];
static uv_once_t table_once = UV_ONCE_INIT;
static uv_mutex_t table_lock;
static uint32_t* free_slots; /* Stack of free indexes; under table_lock. */
static size_t nfree, capfree;
static uint32_t next_fresh; /* Slots below it were handed out once. */

static void table_init(void) {
  if (uv_mutex_init(&table_lock) != 0)
    abort(); /* As libuv does when a mutex cannot be made. */
}

/* Where slot `i` of a chunk lies: four slots share a line, and the slots
 * of actors spawned one after the other (often the ones that talk to each
 * other, from different cores: every send writes its receiver's slot)
 * would share it too. So consecutive indexes are spread a quarter of a
 * chunk apart, and the four slots of a line belong to actors spawned
 * 16,384 apart. A bijection on the chunk's indexes: no memory cost. */
#define SLOTS_PER_LINE 4
static uint32_t slot_pos(uint32_t i) {
  return (i % SLOTS_PER_LINE) * (CHUNK_SLOTS / SLOTS_PER_LINE) +
         i / SLOTS_PER_LINE;
}

static weft__slot_t* slot_at(uint32_t index) {
  weft__slot_t* c = atomic_load_explicit(&chunks[index >> CHUNK_BITS],
                                         memory_order_acquire);
  return c == NULL ? NULL : &c[slot_pos(index & (CHUNK_SLOTS - 1))];
}

static weft__slot_t* slot_of(weft_actor_id id, uint32_t* gen) {
  uint32_t low = (uint32_t)id;
  *gen = (uint32_t)(id >> 32);
  if (low == 0)
    return NULL;
  return slot_at(low - 1);
}

/* Under table_lock. */
static int take_index(uint32_t* out) {
  if (nfree > 0) {
    *out = free_slots[--nfree];
    return 0;
  }
  if (next_fresh == UINT32_MAX)
    return WEFT_ENOMEM;
  if ((next_fresh & (CHUNK_SLOTS - 1)) == 0 &&
      atomic_load_explicit(&chunks[next_fresh >> CHUNK_BITS],
                           memory_order_relaxed) == NULL) {
    weft__slot_t* c =
        WEFT__FAILABLE(calloc(CHUNK_SLOTS, sizeof(weft__slot_t)));
    uint32_t i;
    if (c == NULL)
      return WEFT_ENOMEM;
    for (i = 0; i < CHUNK_SLOTS; i++) {
      /* Generation 1 first: an id is never 0 in either half. */
      atomic_init(&c[i].state, (uint64_t)1 << 32);
      atomic_init(&c[i].actor, NULL);
    }
    /* release: the slots' initial values before the chunk is seen. */
    atomic_store_explicit(&chunks[next_fresh >> CHUNK_BITS], c,
                          memory_order_release);
  }
  *out = next_fresh++;
  return 0;
}

int weft__slot_alloc(weft_actor_t* a, weft_actor_id* id) {
  uint32_t index;
  weft__slot_t* s;
  uint64_t st;
  int err;
  uv_once(&table_once, table_init);
  uv_mutex_lock(&table_lock);
  if (nfree == 0 && next_fresh == capfree) {
    /* Room for every slot ever handed out, made before a fresh one goes:
     * a slot can then always be given back without failing. */
    size_t cap = capfree == 0 ? 256 : capfree * 2;
    uint32_t* p = WEFT__FAILABLE(realloc(free_slots, cap * sizeof(*p)));
    if (p == NULL) {
      uv_mutex_unlock(&table_lock);
      return WEFT_ENOMEM;
    }
    free_slots = p;
    capfree = cap;
  }
  err = take_index(&index);
  uv_mutex_unlock(&table_lock);
  if (err != 0)
    return err;
  s = slot_at(index);
  st = atomic_load_explicit(&s->state, memory_order_relaxed);
  atomic_store_explicit(&s->actor, a, memory_order_relaxed);
  /* release: the actor (and the slot's actor pointer) before any sender
   * that reads this generation live. The free that put the slot back
   * left the DEAD bit set; clearing it opens the slot. */
  atomic_store_explicit(
      &s->state, st & ~(WEFT__SLOT_DEAD | WEFT__SLOT_NAMED | WEFT__SLOT_REFS),
      memory_order_release);
  *id = (st & ~(uint64_t)0xffffffffu) | (uint64_t)(index + 1);
  return 0;
}

weft_actor_t* weft__slot_enter(weft_actor_id id) {
  uint32_t gen;
  weft__slot_t* s = slot_of(id, &gen);
  uint64_t st;
  if (s == NULL)
    return NULL;
  st = atomic_load_explicit(&s->state, memory_order_relaxed);
  for (;;) {
    if ((uint32_t)(st >> 32) != gen || (st & WEFT__SLOT_DEAD) != 0)
      return NULL;
    /* acquire: pairs with the release in weft__slot_alloc(), so the
     * actor is seen whole. seq_cst would add nothing: the closer's
     * fetch_or is an RMW on this same word, so one of the two sees the
     * other. */
    if (atomic_compare_exchange_weak_explicit(&s->state, &st, st + 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return atomic_load_explicit(&s->actor, memory_order_relaxed);
  }
}

void weft__slot_leave(weft_actor_id id) {
  uint32_t gen;
  weft__slot_t* s = slot_of(id, &gen);
  /* release: our push into the actor happens before the closer, who
   * waits for the count to drop, frees it. */
  atomic_fetch_sub_explicit(&s->state, 1, memory_order_release);
}

void weft__slot_mark_named(weft_actor_id id) {
  uint32_t gen;
  atomic_fetch_or_explicit(&slot_of(id, &gen)->state, WEFT__SLOT_NAMED,
                           memory_order_relaxed);
}

void weft__slot_close(weft_actor_id id) {
  (void)weft__slot_close_named(id);
}

bool weft__slot_close_named(weft_actor_id id) {
  uint32_t gen;
  weft__slot_t* s = slot_of(id, &gen);
  uint64_t st;
  int spins = 0;
  atomic_fetch_or_explicit(&s->state, WEFT__SLOT_DEAD, memory_order_acq_rel);
  /* A sender inside holds the slot for one push: a few nanoseconds,
   * unless the system preempted it there. */
  for (;;) {
    /* acquire: the senders' pushes happen before what the closer does
     * next (draining the mailbox, freeing the actor). */
    st = atomic_load_explicit(&s->state, memory_order_acquire);
    if ((st & WEFT__SLOT_REFS) == 0)
      return (st & WEFT__SLOT_NAMED) != 0;
    if (++spins > 64)
      sched_yield();
  }
}

void weft__slot_free(weft_actor_id id) {
  uint32_t gen;
  weft__slot_t* s = slot_of(id, &gen);
  uint32_t index = (uint32_t)id - 1;
  atomic_store_explicit(&s->actor, NULL, memory_order_relaxed);
  /* Next generation, still DEAD until weft__slot_alloc() opens it.
   * Generation 0 is skipped: ids keep a non-zero high half. */
  gen++;
  if (gen == 0)
    gen = 1;
  atomic_store_explicit(&s->state, ((uint64_t)gen << 32) | WEFT__SLOT_DEAD,
                        memory_order_release);
  uv_mutex_lock(&table_lock);
  free_slots[nfree++] = index; /* Room was made at alloc. */
  uv_mutex_unlock(&table_lock);
}

bool weft__slot_alive(weft_actor_id id) {
  uint32_t gen;
  weft__slot_t* s = slot_of(id, &gen);
  uint64_t st;
  if (s == NULL)
    return false;
  st = atomic_load_explicit(&s->state, memory_order_acquire);
  return (uint32_t)(st >> 32) == gen && (st & WEFT__SLOT_DEAD) == 0;
}

void weft__slot_each(const weft_actor_system_t* sys,
                     void (*fn)(weft_actor_t* a, void* arg),
                     void* arg) {
  uint32_t i, n;
  uv_once(&table_once, table_init);
  uv_mutex_lock(&table_lock);
  n = next_fresh;
  uv_mutex_unlock(&table_lock);
  for (i = 0; i < n; i++) {
    /* Enter with the slot's current generation: an actor of another
     * system that its scheduler is ending meanwhile is then either kept
     * alive while we look, or skipped. */
    weft__slot_t* s = slot_at(i);
    uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    weft_actor_id id = (st & ~(uint64_t)0xffffffffu) | (uint64_t)(i + 1);
    weft_actor_t* a = weft__slot_enter(id);
    bool ours;
    if (a == NULL)
      continue;
    ours = a->sys == sys;
    weft__slot_leave(id);
    /* Ours: no scheduler of `sys` runs, so nobody else ends it now. */
    if (ours)
      fn(a, arg);
  }
}
