/* system.c - an actor system: its scheduler threads and where a runnable
 * actor is queued.
 *
 * A scheduler is a hosted weft worker (weft/worker.h: owned by weft's host
 * thread, so a system works from a program with no loop) whose loop runs
 * forever: its ready queue, the loop's one many-producer queue, is the
 * scheduler's run queue, and the loop's spin-then-park is the scheduler's
 * idle policy. An actor's turn is a ready item (actor.c).
 *
 * Run queues and stealing. An actor made runnable by a behaviour goes to
 * the back of its scheduler's ring (a bounded queue with one producer, the
 * scheduler itself, and many consumers: the scheduler takes from the
 * front, and so may other schedulers), so a conversation stays on one
 * core and what piles up can be stolen. A "drain" item on the scheduler
 * loop's ready queue runs the ring's actors, a bounded number per turn of
 * the loop, so that messages from other threads, timers and I/O get their
 * turn too. Actors made runnable from another thread go straight on the
 * loop's ready queue (its one consumer cannot be stolen from) of an idle
 * scheduler, or round robin; so do a ring's overflow.
 * A scheduler that runs out of work (the loop calls sched_idle before it
 * spins or parks) steals from a ring that holds STEAL_MIN actors or more,
 * and otherwise advertises itself in `idle_mask`. A busy scheduler wakes
 * an idle one to come and steal at once when its ring reaches STEAL_MIN
 * actors, or when the turn in progress keeps sending (every
 * STEAL_NOTIFY_SENDS sends): an actor that floods another keeps its
 * scheduler, and the receiver moves to the idle core. A shorter ring is
 * left to its scheduler (or to the poll below): an actor moved to another
 * core makes each of its messages cross cores, which costs more than
 * short turns gain (internal.h, STEAL_MIN).
 *
 * Polling. A lone actor just queued is not stolen at once: its own
 * scheduler usually takes it next, so a ping-pong stays on one core. But
 * the turn under way may compute for long without sending. So an idle
 * scheduler, while another one has a turn under way or actors waiting,
 * looks again every POLL_MS (a loop timer), and steals an actor that sat
 * at the front of a ring through a whole poll (that ring's front did not
 * move). A scheduler that queues the first actor in its ring while every
 * idle one sleeps without polling wakes one (a no-op item) so that it
 * starts. With no turn under way anywhere nobody polls: an idle system
 * costs no CPU (0.16 ms of CPU over 2 s, measured).
 *
 * Heaps. Actors move between schedulers, and with them the messages they
 * keep: a scheduler's thread therefore runs with no worker heap of its own
 * (weft__heap_set_current(NULL)), so that what is kept on one scheduler
 * may be freed on another. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "trace.h"

static _Thread_local weft__sched_t* tl_sched;

weft__sched_t* weft__sched_current(void) {
  return tl_sched;
}

static bool steal(weft__sched_t* s, size_t min);
static bool steal_stale(weft__sched_t* s);
static bool others_busy(const weft__sched_t* s);
static void poll_fired(weft_loop_t* loop, void* arg);

/* The loop ran out of work: steal from a pile, or an actor that waited
 * through a whole poll; else say we are idle, and poll while others are
 * busy. */
static void sched_idle(void* arg) {
  weft__sched_t* s = arg;
  uint64_t bit = (uint64_t)1 << s->index;
  if (steal(s, STEAL_MIN) || steal_stale(s))
    return;
  /* relaxed: a hint; the claim (fetch_and) decides. */
  if ((atomic_load_explicit(&s->sys->idle_mask, memory_order_relaxed) & bit) ==
      0)
    atomic_fetch_or_explicit(&s->sys->idle_mask, bit, memory_order_relaxed);
  if (others_busy(s)) {
    if (!s->poll_armed &&
        weft_set_timeout(s->loop, POLL_MS, poll_fired, s, NULL) == 0)
      s->poll_armed = true;
    atomic_store_explicit(&s->polling, true, memory_order_relaxed);
  } else {
    s->seen_valid = false;
    atomic_store_explicit(&s->polling, false, memory_order_relaxed);
  }
}

/* Clear our idle bit once we have work again. */
static void sched_busy(weft__sched_t* s) {
  uint64_t bit = (uint64_t)1 << s->index;
  if (atomic_load_explicit(&s->sys->idle_mask, memory_order_relaxed) & bit)
    atomic_fetch_and_explicit(&s->sys->idle_mask, ~bit, memory_order_relaxed);
}

/* Claim an idle scheduler other than `self` (may be NULL): its index, or
 * -1. */
static int claim_idle(weft_actor_system_t* sys, const weft__sched_t* self) {
  uint64_t mask = atomic_load_explicit(&sys->idle_mask, memory_order_relaxed);
  if (self != NULL)
    mask &= ~((uint64_t)1 << self->index);
  while (mask != 0) {
    int i = __builtin_ctzll(mask);
    uint64_t bit = (uint64_t)1 << i;
    if (atomic_fetch_and_explicit(&sys->idle_mask, ~bit,
                                  memory_order_relaxed) &
        bit)
      return i;
    mask &= ~bit;
  }
  return -1;
}

/* ---- the ring: one producer (the owner), many consumers ---------------- */

static bool ring_push(weft__sched_t* s, weft_actor_t* a) {
  size_t b = atomic_load_explicit(&s->bottom, memory_order_relaxed);
  size_t t = atomic_load_explicit(&s->top, memory_order_acquire);
  if (b - t >= WEFT__RING)
    return false;
  atomic_store_explicit(&s->ring[b & (WEFT__RING - 1)], a,
                        memory_order_relaxed);
  /* release: the entry (and the actor's state before it was queued)
   * before a consumer that sees the new bottom. */
  atomic_store_explicit(&s->bottom, b + 1, memory_order_release);
  return true;
}

/* The oldest entry, or NULL. Any thread. */
static weft_actor_t* ring_take(weft__sched_t* s) {
  size_t t = atomic_load_explicit(&s->top, memory_order_acquire);
  for (;;) {
    size_t b = atomic_load_explicit(&s->bottom, memory_order_acquire);
    weft_actor_t* a;
    if (t >= b)
      return NULL;
    a = atomic_load_explicit(&s->ring[t & (WEFT__RING - 1)],
                             memory_order_relaxed);
    /* The slot is overwritten only after top passed it, so if the CAS
     * finds top still at t, `a` is the entry queued there. acq_rel: the
     * winner owns `a` from here. */
    if (atomic_compare_exchange_weak_explicit(&s->top, &t, t + 1,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      return a;
  }
}

static size_t ring_len(weft__sched_t* s) {
  size_t b = atomic_load_explicit(&s->bottom, memory_order_relaxed);
  size_t t = atomic_load_explicit(&s->top, memory_order_relaxed);
  return b > t ? b - t : 0;
}

/* Budget of actor turns per run of the drain item. */
#define DRAIN_TURNS 64

static void drain_soon(weft__sched_t* s) {
  if (!s->drain_pending) {
    s->drain_pending = true;
    weft__loop_schedule(s->loop, &s->drain);
  }
}

static int drain_run(weft_loop_t* loop, weft__ready_t* r) {
  weft__sched_t* s = weft__container_of(r, weft__sched_t, drain);
  int n = 1, turns;
  s->drain_pending = false;
  for (turns = 0; turns < DRAIN_TURNS; turns++) {
    weft_actor_t* a = ring_take(s);
    if (a == NULL)
      break;
    WEFT__TRACE_BEGIN("actor turn");
    n += weft__actor_run(loop, &a->ready);
    WEFT__TRACE_END();
    if (weft__loop_stopping(loop) || weft__loop_closing(loop))
      break;
  }
  if (ring_len(s) > 0 && !weft__loop_closing(loop))
    drain_soon(s); /* The rest after what else the loop has queued. */
  return n;
}

/* Move one actor of `v`'s ring into ours. */
static bool take_from(weft__sched_t* s, weft__sched_t* v) {
  weft_actor_t* a = ring_take(v);
  if (a == NULL)
    return false;
  if (!ring_push(s, a))
    weft__loop_schedule(s->loop, &a->ready);
  else
    drain_soon(s);
  return true;
}

/* Steal one actor from another scheduler's ring into ours, from a ring
 * that holds at least `min` actors. (Half of the ring at once was
 * measured too: no better on the Savina workloads, and fjthroughput
 * slower, bench/savina_weft.c, side by side.) */
static bool steal(weft__sched_t* s, size_t min) {
  weft_actor_system_t* sys = s->sys;
  unsigned i;
  for (i = 1; i < sys->nsched; i++) {
    weft__sched_t* v = &sys->scheds[(s->index + i) % sys->nsched];
    if (ring_len(v) >= min && take_from(s, v))
      return true;
  }
  return false;
}

/* Steal an actor that has waited in another ring since our last poll: its
 * scheduler has not taken one for POLL_MS (a long turn). Then note where
 * every ring's front is now. True when one was taken. */
static bool steal_stale(weft__sched_t* s) {
  weft_actor_system_t* sys = s->sys;
  bool took = false;
  unsigned i;
  for (i = 0; i < sys->nsched; i++) {
    weft__sched_t* v = &sys->scheds[i];
    size_t top;
    if (v == s)
      continue;
    top = atomic_load_explicit(&v->top, memory_order_relaxed);
    if (!took && s->seen_valid && top == s->seen_top[i] && ring_len(v) > 0)
      took = take_from(s, v);
    s->seen_top[i] = atomic_load_explicit(&v->top, memory_order_relaxed);
  }
  s->seen_valid = true;
  return took;
}

/* Whether another scheduler has actors waiting or a turn under way: then
 * an idle scheduler keeps polling (see "Polling" in the file comment). */
static bool others_busy(const weft__sched_t* s) {
  weft_actor_system_t* sys = s->sys;
  unsigned i;
  for (i = 0; i < sys->nsched; i++) {
    weft__sched_t* v = &sys->scheds[i];
    if (v != s && (atomic_load_explicit(&v->in_turn, memory_order_relaxed) ||
                   ring_len(v) > 0))
      return true;
  }
  return false;
}

static void poll_fired(weft_loop_t* loop, void* arg) {
  weft__sched_t* s = arg;
  (void)loop;
  s->poll_armed = false; /* The loop's idle hook comes next: it looks. */
}

static int poke_run(weft_loop_t* loop, weft__ready_t* r) {
  weft__sched_t* s = weft__container_of(r, weft__sched_t, poke);
  (void)loop;
  atomic_store_explicit(&s->poke_pending, false, memory_order_relaxed);
  return 1;
}

static int steal_run(weft_loop_t* loop, weft__ready_t* r) {
  weft__sched_t* s = weft__container_of(r, weft__sched_t, steal_item);
  (void)loop;
  atomic_store_explicit(&s->steal_pending, false, memory_order_relaxed);
  sched_busy(s);
  (void)steal(s, 1);
  return 1;
}

/* Wake an idle scheduler other than `s` to steal from `s`'s ring. */
static void notify_idle(weft__sched_t* s) {
  weft_actor_system_t* sys = s->sys;
  int i;
  if (atomic_load_explicit(&sys->idle_mask, memory_order_relaxed) == 0 ||
      (i = claim_idle(sys, s)) < 0)
    return;
  if (!atomic_exchange_explicit(&sys->scheds[i].steal_pending, true,
                                memory_order_relaxed))
    weft__loop_schedule(sys->scheds[i].loop, &sys->scheds[i].steal_item);
}

/* A first actor in our ring while every idle scheduler sleeps without
 * polling: wake one, so that it polls (and steals the actor if our turn
 * keeps it waiting). One that polls already needs no waking. */
static void wake_poller(weft__sched_t* s) {
  weft_actor_system_t* sys = s->sys;
  uint64_t mask = atomic_load_explicit(&sys->idle_mask, memory_order_relaxed) &
                  ~((uint64_t)1 << s->index);
  weft__sched_t* v;
  if (mask == 0)
    return;
  v = &sys->scheds[__builtin_ctzll(mask)];
  /* One that polls already watches our ring. Otherwise a no-op item: its
   * loop then runs out of work again, and its idle hook starts polling. */
  if (!atomic_load_explicit(&v->polling, memory_order_relaxed) &&
      !atomic_exchange_explicit(&v->poke_pending, true, memory_order_relaxed))
    weft__loop_schedule(v->loop, &v->poke);
}

void weft__sched_sent(weft__sched_t* s) {
  if (++s->sends % STEAL_NOTIFY_SENDS == 0 && ring_len(s) > 0)
    notify_idle(s);
}

void weft__sched_queue(weft_actor_t* a) {
  weft_actor_system_t* sys = a->sys;
  weft__sched_t* s = tl_sched;
  int i;
  if (s != NULL && s->sys == sys) {
    bool more = ring_len(s) + 1 >= STEAL_MIN;
    if (ring_push(s, a)) {
      drain_soon(s);
      if (more)
        notify_idle(s);
      else
        wake_poller(s);
      return;
    }
    weft__loop_schedule(s->loop, &a->ready); /* The ring is full. */
    return;
  }
  i = claim_idle(sys, NULL);
  if (i < 0)
    i = (int)(atomic_fetch_add_explicit(&sys->next, 1, memory_order_relaxed) %
              sys->nsched);
  weft__loop_schedule(sys->scheds[i].loop, &a->ready);
}

void weft__sched_turn(weft__sched_t* s, bool start) {
  atomic_store_explicit(&s->in_turn, start, memory_order_relaxed);
  if (!start)
    return;
  s->sends = 0;
  sched_busy(s);
}

void weft__system_live(weft_actor_system_t* sys, int delta) {
  /* acq_rel: an end's effects (on_stop) happen before a waiter that sees
   * the count reach 0 returns. */
  size_t before = atomic_fetch_add_explicit(&sys->live, (size_t)(ptrdiff_t)delta,
                                            memory_order_acq_rel);
  if (delta < 0 && before == (size_t)-delta) {
    uv_mutex_lock(&sys->lock);
    uv_cond_broadcast(&sys->cond);
    uv_mutex_unlock(&sys->lock);
  }
}

static void sched_teardown(weft__tracked_t* t) {
  weft__sched_t* s = weft__container_of(t, weft__sched_t, tracked);
  weft__loop_untrack(t);
  weft__timer_sched_end(s);
  weft__actor_sched_end(s);
}

static void sched_entry(weft_loop_t* loop, void* arg) {
  weft__sched_t* s = arg;
  weft_actor_system_t* sys = s->sys;
  /* See "Heaps" in the file comment. */
  weft__heap_set_current(NULL);
  tl_sched = s;
  weft__replies_divert(weft__actor_replies);
  s->tracked.teardown = sched_teardown;
  weft__loop_track(loop, &s->tracked);
  weft__loop_keepalive(loop, 1); /* Until the system ends. */
  s->drain.run = drain_run;
  s->steal_item.run = steal_run;
  s->poke.run = poke_run;
  weft__loop_on_idle(loop, sched_idle, s);
  uv_mutex_lock(&sys->lock);
  s->loop = loop; /* Under the lock: stop_schedulers() reads it. */
  sys->online++;
  uv_cond_broadcast(&sys->cond);
  uv_mutex_unlock(&sys->lock);
}

static void sched_exit(weft_worker_t* w, int code) {
  weft__sched_t* s = weft_worker_get_data(w);
  weft_actor_system_t* sys = s->sys;
  (void)code;
  uv_mutex_lock(&sys->lock);
  sys->exited++;
  uv_cond_broadcast(&sys->cond);
  uv_mutex_unlock(&sys->lock);
}

static void sched_error(weft_worker_t* w, int err, const char* text) {
  weft__sched_t* s = weft_worker_get_data(w);
  (void)err;
  /* A behaviour called weft_report_error() or broke a limit: the
   * scheduler is gone with what it ran. Say so; the others go on. */
  (void)fprintf(stderr, "weft: actor scheduler %s-%u ended: %s\n", s->sys->name,
          s->index, text != NULL ? text : "error");
}

/* The last task of a scheduler (system free): wait until every scheduler
 * is here, so that none runs a turn (and queues an actor on a loop that
 * is gone) any more, then end. */
static void sched_stop(weft_loop_t* loop, void* arg) {
  weft__sched_t* s = arg;
  weft_actor_system_t* sys = s->sys;
  uv_mutex_lock(&sys->lock);
  sys->quiesced++;
  uv_cond_broadcast(&sys->cond);
  while (sys->quiesced < sys->started)
    uv_cond_wait(&sys->cond, &sys->lock);
  uv_mutex_unlock(&sys->lock);
  weft__loop_keepalive(loop, -1);
  weft_worker_exit(0);
}

/* Stop the schedulers that came online and free every one spawned. */
static void stop_schedulers(weft_actor_system_t* sys) {
  unsigned i;
  uv_mutex_lock(&sys->lock);
  sys->started = sys->online;
  uv_mutex_unlock(&sys->lock);
  for (i = 0; i < sys->nsched; i++)
    if (sys->scheds[i].loop != NULL &&
        weft__loop_post_task(sys->scheds[i].loop, sched_stop,
                             &sys->scheds[i]) != 0)
      weft_worker_terminate(sys->scheds[i].worker, NULL); /* No memory. */
  uv_mutex_lock(&sys->lock);
  while (sys->exited < sys->spawned)
    uv_cond_wait(&sys->cond, &sys->lock);
  uv_mutex_unlock(&sys->lock);
  for (i = 0; i < sys->nsched; i++) {
    weft_worker_free(sys->scheds[i].worker);
    sys->scheds[i].worker = NULL;
  }
}

int weft_actor_system_new(weft_actor_system_t** out,
                          const weft_actor_system_opts_t* opts) {
  weft_actor_system_opts_t o;
  weft_actor_system_t* sys;
  unsigned i;
  int err = 0;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (o.schedulers == 0)
    o.schedulers = uv_available_parallelism();
  if (o.schedulers > 64)
    return WEFT_EINVAL;
  if (o.batch == 0)
    o.batch = 100;
  if (o.high_water == 0)
    o.high_water = 4096;
  if (o.low_water == 0)
    o.low_water = o.high_water / 2;
  if (o.low_water > o.high_water)
    return WEFT_EINVAL;
  sys = weft__xalloc64(sizeof(*sys));
  if (sys == NULL)
    return WEFT_ENOMEM;
  /* Zeroed and 64-byte aligned: each ring's indexes have lines of their
   * own. */
  sys->scheds = weft__xalloc64(o.schedulers * sizeof(*sys->scheds));
  if (sys->scheds == NULL) {
    weft__xfree(sys);
    return WEFT_ENOMEM;
  }
  sys->nsched = o.schedulers;
  sys->batch = o.batch;
  sys->high_water = o.high_water;
  sys->low_water = o.low_water;
  sys->dead_letter = o.dead_letter;
  sys->dead_letter_arg = o.dead_letter_arg;
  (void)snprintf(sys->name, sizeof(sys->name), "%s",
           o.name != NULL ? o.name : "weft-actor");
  if (uv_mutex_init(&sys->lock) != 0) {
    weft__xfree(sys->scheds);
    weft__xfree(sys);
    return WEFT_ENOMEM;
  }
  if (uv_cond_init(&sys->cond) != 0) {
    uv_mutex_destroy(&sys->lock);
    weft__xfree(sys->scheds);
    weft__xfree(sys);
    return WEFT_ENOMEM;
  }
  err = weft__registry_init(sys);
  for (i = 0; err == 0 && i < sys->nsched; i++) {
    weft_worker_opts_t wo;
    char name[32]; /* Threads show 15 bytes of it. */
    weft__sched_t* s = &sys->scheds[i];
    s->sys = sys;
    s->index = i;
    (void)snprintf(name, sizeof(name), "%s-%u", sys->name, i);
    memset(&wo, 0, sizeof(wo));
    wo.name = name;
    wo.user_data = s;
    wo.arg = s;
    wo.events.exit = sched_exit;
    wo.events.error = sched_error;
    err = weft_worker_spawn(&s->worker, NULL, sched_entry, &wo);
    if (err == 0) {
      uv_mutex_lock(&sys->lock);
      sys->spawned++;
      uv_mutex_unlock(&sys->lock);
    }
  }
  /* Wait for every loop (or its worker's early end): from then on any
   * thread may queue on the loops, and a stop reaches each. */
  uv_mutex_lock(&sys->lock);
  while (sys->online + sys->exited < sys->spawned)
    uv_cond_wait(&sys->cond, &sys->lock);
  if (err == 0 && sys->online < sys->nsched)
    err = WEFT_ESPAWN;
  uv_mutex_unlock(&sys->lock);
  if (err != 0) {
    stop_schedulers(sys);
    weft__registry_free(sys);
    uv_cond_destroy(&sys->cond);
    uv_mutex_destroy(&sys->lock);
    weft__xfree(sys->scheds);
    weft__xfree(sys);
    return err;
  }
  *out = sys;
  return 0;
}

static bool on_own_scheduler(const weft_actor_system_t* sys) {
  return tl_sched != NULL && tl_sched->sys == sys;
}

int weft_actor_system_wait(weft_actor_system_t* sys, int64_t timeout_ms) {
  int64_t deadline;
  int err = 0;
  if (sys == NULL)
    return WEFT_EINVAL;
  if (on_own_scheduler(sys))
    return WEFT_EBUSY;
  deadline = timeout_ms > 0 ? weft__deadline_ns(timeout_ms) : -1;
  uv_mutex_lock(&sys->lock);
  while (atomic_load_explicit(&sys->live, memory_order_acquire) != 0) {
    if (deadline < 0) {
      uv_cond_wait(&sys->cond, &sys->lock);
    } else {
      int64_t left = deadline - (int64_t)uv_hrtime();
      if (left <= 0 ||
          uv_cond_timedwait(&sys->cond, &sys->lock, (uint64_t)left) != 0) {
        if (atomic_load_explicit(&sys->live, memory_order_acquire) != 0)
          err = WEFT_ETIMEDOUT;
        break;
      }
    }
  }
  uv_mutex_unlock(&sys->lock);
  return err;
}

int weft_actor_system_free(weft_actor_system_t* sys) {
  if (sys == NULL)
    return 0;
  if (on_own_scheduler(sys))
    return WEFT_EBUSY;
  /* Its proxies keep reply handles taken on the schedulers: settled
   * before the schedulers go (remote.c). */
  weft__remote_system_free(sys);
  atomic_store_explicit(&sys->closing, true, memory_order_release);
  stop_schedulers(sys);
  /* No scheduler runs: the actors left are ours alone. */
  weft__slot_each(sys, weft__actor_destroy, NULL);
  /* After the on_stops: one may answer or free a handle its actor held. */
  weft__replies_answer(&sys->replies, WEFT_ECLOSED);
  weft__registry_free(sys);
  uv_cond_destroy(&sys->cond);
  uv_mutex_destroy(&sys->lock);
  weft__xfree(sys->scheds);
  weft__xfree(sys);
  return 0;
}

size_t weft_actor_system_count(const weft_actor_system_t* sys) {
  if (sys == NULL)
    return 0;
  return atomic_load_explicit(&sys->live, memory_order_relaxed);
}

uint64_t weft_actor_system_dead_letters(const weft_actor_system_t* sys) {
  if (sys == NULL)
    return 0;
  return atomic_load_explicit(&sys->dead_letters, memory_order_relaxed);
}
