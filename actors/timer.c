/* timer.c - timers for actors: messages sent to the actor after a delay,
 * once or every period, cancellable.
 *
 * The timer itself is a loop timer on the scheduler the actor ran on when
 * it set it; the actor may run elsewhere when it fires, so what fires is a
 * message (tag TIMER, aux the timer's id) pushed into its mailbox. A
 * record is shared by the loop timer and the actor's list (two
 * references): cancel marks it (any scheduler) and clears the loop timer
 * if the actor runs on that loop now; otherwise the next firing sees the
 * mark and clears itself. A timer message is delivered only while its
 * record is on the actor's list and not cancelled, so a cancel also drops
 * messages already queued. One-shot timers leave the list when their
 * message is delivered. Each scheduler lists the records of its loop, so
 * that its loop's teardown (which drops timers without running them)
 * releases them. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct atimer_s {
  struct atimer_s* next; /* The scheduler's list (its thread only). */
  struct atimer_s* prev;
  atomic_int refs;
  atomic_bool cancelled;
  bool every;
  bool on_loop; /* The loop timer is live (its thread only). */
  weft_actor_id to;
  uint64_t id;
  weft__sched_t* sched;
  weft_timer_id tid;
  size_t len;
  char bytes[];
} atimer_t;

static _Atomic uint64_t next_id = 1;

/* Drop `n` references; the last one frees. */
static void unref(atimer_t* t, int n) {
  /* acq_rel: the last owner sees the other's writes before freeing. */
  if (atomic_fetch_sub_explicit(&t->refs, n, memory_order_acq_rel) == n)
    free(t);
}

/* The loop timer is gone or going: off the scheduler's list. The caller
 * then drops the loop's reference. */
static void unlist(atimer_t* t) {
  weft__sched_t* s = t->sched;
  t->on_loop = false;
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    s->timers = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
}

static void fire(weft_loop_t* loop, void* arg) {
  atimer_t* t = arg;
  int err = WEFT_EDEADACTOR;
  if (!atomic_load_explicit(&t->cancelled, memory_order_acquire)) {
    err = weft__actor_tell(t->to, WEFT__TAG_TIMER, t->id, t->bytes, t->len);
  }
  if (!t->every || err == WEFT_EDEADACTOR) {
    if (t->every)
      weft_clear_timer(loop, t->tid);
    unlist(t); /* A one-shot's loop timer is released after it runs. */
    unref(t, 1);
  }
}

int weft_actor_send_after(weft_actor_t* self, uint64_t ms, bool every,
                          const void* bytes, size_t len, uint64_t* id) {
  weft__sched_t* s = weft__sched_current();
  weft__actor_x_t* x;
  atimer_t* t;
  int err;
  if (id != NULL)
    *id = 0;
  if (self == NULL || self != weft__actor_current() || s == NULL ||
      (bytes == NULL && len > 0) || len == 0)
    return WEFT_EINVAL;
  err = weft__msgpack_validate(bytes, len);
  if (err != 0)
    return err;
  x = weft__actor_x(self);
  if (x == NULL)
    return WEFT_ENOMEM;
  if (x->ntimers == x->captimers) {
    size_t c = x->captimers == 0 ? 4 : x->captimers * 2;
    void** p = WEFT__FAILABLE(realloc(x->timers, c * sizeof(*p)));
    if (p == NULL)
      return WEFT_ENOMEM;
    x->timers = p;
    x->captimers = c;
  }
  t = WEFT__FAILABLE(malloc(sizeof(*t) + len));
  if (t == NULL)
    return WEFT_ENOMEM;
  memset(t, 0, sizeof(*t));
  atomic_init(&t->refs, 2);
  atomic_init(&t->cancelled, false);
  t->every = every;
  t->to = self->id;
  t->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
  t->sched = s;
  t->len = len;
  memcpy(t->bytes, bytes, len);
  err = every ? weft_set_interval(s->loop, ms, fire, t, &t->tid)
              : weft_set_timeout(s->loop, ms, fire, t, &t->tid);
  if (err != 0) {
    free(t);
    return err;
  }
  t->on_loop = true;
  t->next = s->timers;
  if (t->next != NULL)
    t->next->prev = t;
  s->timers = t;
  x->timers[x->ntimers++] = t;
  if (id != NULL)
    *id = t->id;
  return 0;
}

/* Drop the actor's reference to its i-th timer, cancelling it. */
static void drop(weft__actor_x_t* x, size_t i) {
  atimer_t* t = x->timers[i];
  weft__sched_t* s = weft__sched_current();
  int refs = 1; /* The actor's. */
  atomic_store_explicit(&t->cancelled, true, memory_order_release);
  /* On the timer's own loop the loop timer goes now (no later firing). */
  if (s == t->sched && t->on_loop) {
    weft_clear_timer(s->loop, t->tid);
    unlist(t);
    refs = 2;
  }
  x->timers[i] = x->timers[--x->ntimers];
  unref(t, refs);
}

int weft_actor_cancel_timer(weft_actor_t* self, uint64_t id) {
  size_t i;
  if (self == NULL || self->x == NULL || id == 0)
    return WEFT_EINVAL;
  for (i = 0; i < self->x->ntimers; i++)
    if (((atimer_t*)self->x->timers[i])->id == id) {
      drop(self->x, i);
      return 0;
    }
  return WEFT_EINVAL;
}

bool weft__timer_arrived(weft_actor_t* a, weft_msg_t* m) {
  size_t i;
  if (a->x != NULL)
    for (i = 0; i < a->x->ntimers; i++) {
      atimer_t* t = a->x->timers[i];
      if (t->id != m->aux)
        continue;
      if (!t->every)
        drop(a->x, i); /* Fired: gone from the list. */
      m->aux = 0;
      m->tag = WEFT__TAG_PLAIN; /* No sender. */
      return true;
    }
  weft_msg_free(m); /* Cancelled. */
  return false;
}

void weft__timer_end(weft_actor_t* a) {
  while (a->x != NULL && a->x->ntimers > 0)
    drop(a->x, a->x->ntimers - 1);
}

void weft__timer_sched_end(weft__sched_t* s) {
  atimer_t* t = s->timers;
  s->timers = NULL;
  while (t != NULL) { /* The loop drops its timers unrun. */
    atimer_t* next = t->next;
    t->on_loop = false;
    unref(t, 1);
    t = next;
  }
}
