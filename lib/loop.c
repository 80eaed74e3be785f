/* loop.c - a thread's event loop with Node's semantics on top of libuv:
 * next-tick and microtask queues drained after every macrotask, timers,
 * immediates in the check phase, threadpool work, cross-thread delivery
 * with spin-then-park, and event-loop utilization. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "internal.h"
#include "trace.h"

/* How a loop waits for cross-thread messages once it has nothing to do:
 * first it spins on its ready queue with a pause instruction (an answer
 * within ~0.2 us costs no system call), then it keeps checking between
 * sched_yield() calls, which leave the core to any other runnable thread,
 * until its spin budget has passed; then it parks in the poll. Waking a
 * parked thread costs 50-70 us on the machines we measure (design.md), so
 * a spin pays when the next message comes sooner than that. Measured with
 * bench/weft_bench (see bench/README.md): pausing for longer slowed the
 * other thread of a pair (4000 pauses: spawn-to-exit 185 us; 200 pauses
 * then yields: 100 us), and parking right away made each round trip of a
 * ping-pong a wake-up (54 us instead of 0.7 us).
 *
 * The budget adapts to how messages have been arriving (as glibc's adaptive
 * mutexes and pool.c's future waits do), between 0 and SPIN_NS. The loop
 * keeps the gaps of its last SPIN_HIST waits after cross-thread traffic:
 * from the wait's start to the work that ended it, exact whether a spin
 * found the work or a wake-up brought it (the waker stamps its write:
 * transport/waker.h), "never" when none came within SPIN_NS (a timer or
 * I/O woke it, or nothing came for long). The budget is the one that
 * would have cost those waits the least: a gap under the budget costs its
 * length in spinning, any other costs the whole budget and then a
 * wake-up, priced at its measured latency (SPIN_WAKE_NS); a budget of 0
 * costs a wake-up each time. So a ping-pong (answers within a microsecond) spins, and a
 * loop whose messages come in bursts a millisecond apart (an echo server
 * at 10,000 messages/s) parks at once: the spin that ends each burst
 * finds nothing, and a budget that caught the burst's quick answers would
 * pay that whole spin every time. The gap a wake-up measures is the
 * producer's write, not the wake-up's own latency (tens of us here),
 * which a spin need not cover: measuring to the wake-up made the budget
 * twice that latency after every burst, and the spins at bursts' ends
 * were most of the CPU that echo server paid (1 worker at 10,000/s: 70-100
 * us of spinning on each side per millisecond).
 * With a budget of 0 the loop parks straight away, as Node's does; the
 * next quick answers bring the spin back. Why it matters beyond CPU: while
 * the loop spins it does not poll its sockets, and a sched_yield() next to
 * runnable threads (a pool hashing at nice +10) gives the core away for
 * the rest of their time slice (up to a 4 ms tick on an HZ=250 kernel).
 * samples/login_api, receiving a pool result every ~20 ms while its pool
 * hashed on both cores, answered GET /health with a p99 of 3.6-3.8 ms
 * spinning a fixed 100 us after each result and 2.6-2.8 ms with an
 * adaptive budget (3 runs of 8 s each, wrk; the rest of that tail was
 * libuv's uv_async_send: see transport/waker.h). */
#ifndef SPIN_PAUSES
#define SPIN_PAUSES 200
#endif
#ifndef SPIN_NS
#define SPIN_NS 100000u
#endif
#define SPIN_MIN_NS 2000u
/* What a wait that ends in a wake-up costs, for the budget's choice: its
 * latency, from the producer's write to the check phase of the loop it
 * woke, averaged over the last wake-ups (SPIN_WAKE_NS to start with,
 * kept between SPIN_WAKE_MIN_NS and SPIN_WAKE_MAX_NS), plus SPIN_WAKE_NS
 * for the system calls, the producer's write among them: that one is on
 * the sender's path, and priced at the latency alone, the 8 workers of a
 * fan-out parked between their messages and main paid a write for each
 * (bench fanout: 4.5 M msgs/s against 13 M, side by side). About 10-20 us on
 * a quiet 2-vCPU VM (a futex round trip is 12-24 us there); on a loaded
 * machine, where the woken thread waits for a core, far more, and a
 * spin, whose sched_yield() lets the other threads run meanwhile, pays
 * for longer gaps: priced at a fixed 20 us, a ping-pong on a host loaded
 * by other builds parked at every round trip (45 us against 7-21 us for
 * the older budget, side by side). */
#define SPIN_WAKE_NS 20000u
#define SPIN_WAKE_MIN_NS 5000u
#define SPIN_WAKE_MAX_NS 200000u
#define SPIN_HIST 8 /* Gaps kept; a power of two. */
/* A sched_yield() that took this long ran another thread (see
 * spin_for_work()). */
#define SPIN_YIELD_RAN_NS 5000u
#define SPIN_NEVER UINT32_MAX
/* After this much work (counted as for READY_BATCH: about one unit per
 * message) delivered without a real poll, poll anyway so sockets are not
 * starved by a message flood (timers and immediates are checked after
 * every drain). It counted drains, each up to READY_BATCH * PORT_BATCH
 * messages; in units a flood polls every few thousand messages, and a
 * ping-pong (two units a drain) no more often than before. */
#define FAST_PATH_MAX 4096
/* Work per ready-queue drain, across all ports, before timers, immediates
 * and I/O get a turn: each entry run counts one, each message a port
 * delivers one more. It counts messages, not only queue entries: a port re-queued after its own batch (PORT_BATCH in
 * port.c) goes to the back of the same queue, so a count of entries let
 * one drain deliver READY_BATCH * PORT_BATCH = 262,144 messages of a
 * port that feeds itself, and a timer waited for two such drains. */
#define READY_BATCH 1024

typedef struct {
  weft_task_cb cb;
  void* arg;
} task_t;

/* A growable ring of tasks: no allocation per task in steady state. */
typedef struct {
  task_t* items;
  size_t cap;  /* Power of two, or 0. */
  size_t head; /* Index of the oldest task. */
  size_t len;
} task_ring_t;

enum { TIMER_TIMEOUT, TIMER_INTERVAL, TIMER_IMMEDIATE };

typedef struct weft__timer_s {
  uv_timer_t handle;
  weft_loop_t* loop;
  weft_task_cb cb;
  void* arg;
  weft_timer_id id;
  int kind;
  bool ref;
  uint64_t epoch;                 /* Immediates: the check turn they join. */
  struct weft__timer_s* imm_next; /* Immediates: FIFO links. */
  struct weft__timer_s* imm_prev;
} weft__timer_t;

typedef struct {
  uint32_t gen;
  uint32_t next_free; /* Index + 1 of the next free slot, 0 for none. */
  weft__timer_t* timer;
} timer_slot_t;

typedef struct {
  uv_work_t req;
  weft_loop_t* loop;
  weft_work_cb work;
  weft_after_work_cb after;
  void* arg;
} work_t;

typedef struct {
  weft__ready_t ready;
  weft_task_cb cb;
  void* arg;
} posted_task_t;

struct weft_loop_s {
  /* Cross-thread part: producers push here and read the waker's flag. */
  weft__mpsc_t ready;
  weft__waker_t waker;
  atomic_int stop_requested; /* Any thread: weft__loop_request_stop(). */
  /* Producers inside weft__loop_schedule() or weft__loop_request_stop():
   * a push can be consumed (and the loop closed) before its producer has
   * finished the wake-up, so the waker and the libuv loop are
   * closed, and the loop's memory freed, only once none is left (see
   * "Closing" in waker.h for the handshake with the waker's flag). */
  atomic_int producers;

  /* Everything below: owner loop only. */
  uv_loop_t* uv;
  uv_loop_t own_uv;
  bool owns_uv;
  uv_check_t check;
  uv_idle_t idle; /* Active while immediates are pending. */
  task_ring_t ticks;
  task_ring_t micro;
  bool draining;
  bool stop;
  bool closing;
  bool running;
  int depth;        /* weft callbacks on the stack (plain uv_run too). */
  int pending_work; /* weft_queue_work() requests not yet completed. */
  int keepalive;
  int handles;
  timer_slot_t* slots;
  uint32_t nslots;
  uint32_t free_slot; /* Index + 1, 0 for none. */
  weft__timer_t* imm_head;
  weft__timer_t* imm_tail;
  uint64_t imm_epoch;
  weft__tracked_t tracked; /* Sentinel. */
  msgpack_zone* zone;
  weft_msg_t* spare_msg; /* Owner only: see weft__loop_spare_msg(). */
  /* Time spent spinning for messages (counts as idle). Written by the
   * owner only; relaxed: a counter another thread may sample
   * (weft__loop_elu_ns), ordered with nothing else. */
  _Atomic uint64_t spin_ns;
  _Atomic uint64_t spins; /* Spins made (budget > 0); as spin_ns. */
  bool recent_ready; /* Ready items were handled since the last spin. */
  void (*idle_hook)(void* arg); /* weft__loop_on_idle(); owner only. */
  void* idle_arg;
  uint32_t spin_budget_ns; /* Owner only: see SPIN_NS. */
  uint32_t spin_gaps[SPIN_HIST]; /* Owner only: the last waits' gaps. */
  uint32_t spin_gap_at;          /* Owner only: the next to replace. */
  uint32_t wake_ns;   /* Owner only: a wake-up's latency (SPIN_WAKE_NS). */
  bool parked;        /* Owner only: in a park's turn of the libuv loop. */
  uint64_t woke_ns;   /* Owner only: that turn's check phase (0: none). */
  uint64_t start_ns;
};

static _Thread_local weft_loop_t* current_loop;

static bool stop_now(weft_loop_t* loop);

/* ---- task rings --------------------------------------------------------- */

static int ring_push(task_ring_t* r, weft_task_cb cb, void* arg) {
  if (r->len == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 64;
    task_t* n = weft__local_alloc(ncap * sizeof(*n));
    size_t i;
    if (n == NULL)
      return WEFT_ENOMEM;
    for (i = 0; i < r->len; i++)
      n[i] = r->items[(r->head + i) & (r->cap - 1)];
    weft__local_free(r->items);
    r->items = n;
    r->cap = ncap;
    r->head = 0;
  }
  r->items[(r->head + r->len) & (r->cap - 1)] = (task_t){cb, arg};
  r->len++;
  return 0;
}

static bool ring_pop(task_ring_t* r, task_t* out) {
  if (r->len == 0)
    return false;
  *out = r->items[r->head];
  r->head = (r->head + 1) & (r->cap - 1);
  r->len--;
  return true;
}

/* ---- thread checks ------------------------------------------------------ */

bool weft__loop_on_thread(const weft_loop_t* loop) {
  return loop != NULL && current_loop == loop;
}

#define CHECK_OWNER(loop)       \
  do {                          \
    if ((loop) == NULL)         \
      return WEFT_EINVAL;       \
    if (current_loop != (loop)) \
      return WEFT_EWRONGTHREAD; \
  } while (0)

weft_loop_t* weft_loop_current(void) {
  return current_loop;
}

/* ---- creation ----------------------------------------------------------- */

static void check_cb(uv_check_t* h);
static void idle_cb(uv_idle_t* h) {
  (void)h; /* Only there to keep the poll from blocking. */
}

static int loop_setup(weft_loop_t** out, uv_loop_t* uv) {
  weft_loop_t* loop;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  WEFT__TRACE_ENV();
  if (current_loop != NULL)
    return WEFT_EBUSY;
  /* Other threads push onto the loop's ready queue: it lives in the
   * cross-thread heap, cache-line aligned. */
  loop = weft__xalloc64(sizeof(*loop));
  if (loop == NULL)
    return WEFT_ENOMEM;
  weft__mpsc_init(&loop->ready);
  atomic_init(&loop->stop_requested, 0);
  atomic_init(&loop->producers, 0);
  atomic_init(&loop->spin_ns, 0);
  atomic_init(&loop->spins, 0);
  /* A full first spin; the gaps it and the next waits measure decide. */
  loop->spin_budget_ns = SPIN_NS;
  loop->wake_ns = SPIN_WAKE_NS;
  for (int i = 0; i < SPIN_HIST; i++)
    loop->spin_gaps[i] = SPIN_NEVER;
  if (uv == NULL) {
    err = uv_loop_init(&loop->own_uv);
    if (err != 0) {
      /* Out of descriptors or memory (a libuv code such as UV_EMFILE is
       * not one of weft's: loop.h promises WEFT_ENOMEM). */
      weft__xfree(loop);
      return WEFT_ENOMEM;
    }
    loop->uv = &loop->own_uv;
    loop->owns_uv = true;
  } else {
    loop->uv = uv;
  }
  /* Needed for weft_loop_utilization(); must precede the first run. */
  uv_loop_configure(loop->uv, UV_METRICS_IDLE_TIME);
  loop->zone = WEFT__FAILABLE(msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE));
  if (loop->zone == NULL)
    goto fail;
  weft__waker_init(&loop->waker, loop->uv);
  uv_check_init(loop->uv, &loop->check);
  loop->check.data = loop;
  uv_check_start(&loop->check, check_cb);
  uv_unref((uv_handle_t*)&loop->check);
  uv_idle_init(loop->uv, &loop->idle);
  loop->idle.data = loop;
  loop->tracked.next = loop->tracked.prev = &loop->tracked;
  loop->start_ns = uv_hrtime();
  current_loop = loop;
  *out = loop;
  return 0;

fail:
  if (loop->zone != NULL)
    msgpack_zone_free(loop->zone);
  if (loop->owns_uv)
    uv_loop_close(loop->uv);
  weft__xfree(loop);
  return WEFT_ENOMEM;
}

int weft_loop_new(weft_loop_t** out) {
  return loop_setup(out, NULL);
}

int weft_loop_wrap(weft_loop_t** out, uv_loop_t* uv) {
  if (uv == NULL)
    return WEFT_EINVAL;
  return loop_setup(out, uv);
}

uv_loop_t* weft_loop_uv(weft_loop_t* loop) {
  if (loop == NULL || current_loop != loop)
    return NULL;
  return loop->uv;
}

/* ---- closing ------------------------------------------------------------ */

static void noop_close(uv_handle_t* h) {
  (void)h;
}

static void free_timer_close(uv_handle_t* h) {
  weft__local_free(h->data);
}

static void release_slot(weft_loop_t* loop, weft_timer_id id) {
  uint32_t idx = (uint32_t)(id & 0xffffffffu) - 1;
  timer_slot_t* s = &loop->slots[idx];
  s->timer = NULL;
  s->gen++;
  if (s->gen == 0)
    s->gen = 1;
  s->next_free = loop->free_slot;
  loop->free_slot = idx + 1;
}

/* No producer touches the waker after this returns: late ones
 * see the waker closed and skip the wake-up (waker.h, "Closing"). */
static void wait_for_producers(weft_loop_t* loop) {
  weft__waker_close(&loop->waker);
  /* seq_cst: see waker.h; reading 0 also synchronizes with the last
   * producer's decrement, so its eventfd write happens before the close. */
  while (atomic_load_explicit(&loop->producers, memory_order_seq_cst) != 0)
    sched_yield();
}

static void close_internal(weft_loop_t* loop) {
  uint32_t i;
  /* Timers and immediates still pending are dropped. */
  for (i = 0; i < loop->nslots; i++) {
    weft__timer_t* t = loop->slots[i].timer;
    if (t == NULL)
      continue;
    loop->slots[i].timer = NULL;
    if (t->kind == TIMER_IMMEDIATE)
      weft__local_free(t);
    else
      uv_close((uv_handle_t*)&t->handle, free_timer_close);
  }
  loop->imm_head = loop->imm_tail = NULL;
  wait_for_producers(loop);
  uv_close((uv_handle_t*)&loop->check, noop_close);
  uv_close((uv_handle_t*)&loop->idle, noop_close);
}

static void release_memory(weft_loop_t* loop) {
  weft__mpsc_node_t* n;
  /* acquire: pairs with the producers' decrement (weft__loop_schedule):
   * producers that came after close_internal() pushed but did not wake;
   * their nodes are popped below. */
  while (atomic_load_explicit(&loop->producers, memory_order_acquire) != 0)
    sched_yield();
  /* Tasks posted from other threads after the last drain: release them
   * without running user code (the loop is gone). */
  while ((n = weft__mpsc_pop(&loop->ready)) != NULL) {
    weft__ready_t* r = weft__container_of(n, weft__ready_t, node);
    r->run(loop, r);
  }
  msgpack_zone_free(loop->zone);
  weft__xfree(loop->spare_msg);
  weft__local_free(loop->ticks.items);
  weft__local_free(loop->micro.items);
  weft__local_free(loop->slots);
  if (current_loop == loop)
    current_loop = NULL;
  weft__xfree(loop);
}

static void count_busy(uv_handle_t* h, void* arg) {
  if (!uv_is_closing(h) && uv_is_active(h) && uv_has_ref(h))
    ++*(int*)arg;
}

/* uv_loop_alive() without the handles that are only closing (a cleared
 * timer): weft_loop_free() finishes those closes itself. */
static bool uv_busy(uv_loop_t* uv) {
  int n = 0;
  if (uv->active_reqs.count > 0)
    return true;
  uv_walk(uv, count_busy, &n);
  return n > 0;
}

/* A ref'd timer or any immediate of weft's is still pending. */
static bool timers_pending(const weft_loop_t* loop) {
  uint32_t i;
  if (loop->imm_head != NULL)
    return true;
  for (i = 0; i < loop->nslots; i++) {
    const weft__timer_t* t = loop->slots[i].timer;
    if (t != NULL && t->kind != TIMER_IMMEDIATE && t->ref)
      return true;
  }
  return false;
}

int weft_loop_free(weft_loop_t* loop) {
  int err;
  if (loop == NULL)
    return 0;
  CHECK_OWNER(loop);
  if (loop->handles > 0 || loop->keepalive > 0 || loop->running ||
      loop->depth > 0 || loop->pending_work > 0 || timers_pending(loop))
    return WEFT_EBUSY;
  if (loop->owns_uv && uv_busy(loop->uv))
    return WEFT_EBUSY;
  loop->closing = true;
  close_internal(loop);
  uv_run(loop->uv, UV_RUN_NOWAIT);
  if (loop->owns_uv) {
    err = uv_loop_close(loop->uv);
    if (err != 0)
      return err; /* Should not happen: handles were checked above. */
  }
  release_memory(loop);
  return 0;
}

static void close_foreign(uv_handle_t* h, void* arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void weft__loop_teardown(weft_loop_t* loop) {
  loop->closing = true;
  loop->stop = false;
  /* Close every tracked object; each may post more work to itself, so
   * drain the ready queue between rounds without running user code. */
  while (loop->tracked.next != &loop->tracked) {
    weft__tracked_t* t = loop->tracked.next;
    t->teardown(t);
    if (loop->tracked.next == t)
      weft__loop_untrack(t); /* A teardown that forgot to untrack. */
  }
  close_internal(loop);
  /* Close the caller's own handles too, then wait for queued work. */
  uv_walk(loop->uv, close_foreign, NULL);
  for (;;) {
    weft__mpsc_node_t* n;
    uv_run(loop->uv, UV_RUN_DEFAULT);
    while ((n = weft__mpsc_pop(&loop->ready)) != NULL) {
      weft__ready_t* r = weft__container_of(n, weft__ready_t, node);
      r->run(loop, r);
    }
    if (uv_loop_close(loop->uv) == 0)
      break;
  }
  release_memory(loop);
}

/* ---- tracking ----------------------------------------------------------- */

void weft__loop_track(weft_loop_t* loop, weft__tracked_t* t) {
  t->next = loop->tracked.next;
  t->prev = &loop->tracked;
  loop->tracked.next->prev = t;
  loop->tracked.next = t;
}

void weft__loop_untrack(weft__tracked_t* t) {
  if (t->next == NULL || t->next == t)
    return;
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->next = t->prev = t;
}

bool weft__loop_closing(const weft_loop_t* loop) {
  return loop->closing;
}

void weft__loop_keepalive(weft_loop_t* loop, int delta) {
  int before = loop->keepalive;
  loop->keepalive += delta;
  if (before <= 0 && loop->keepalive > 0)
    uv_ref((uv_handle_t*)&loop->check);
  else if (before > 0 && loop->keepalive <= 0)
    uv_unref((uv_handle_t*)&loop->check);
}

void weft__loop_hold(weft_loop_t* loop, bool* held, bool want) {
  if (want == *held)
    return;
  *held = want;
  weft__loop_keepalive(loop, want ? 1 : -1);
}

void weft__loop_handles(weft_loop_t* loop, int delta) {
  loop->handles += delta;
}

msgpack_zone* weft__loop_zone(weft_loop_t* loop) {
  return loop->zone;
}

weft_msg_t** weft__loop_spare_msg(weft_loop_t* loop) {
  return &loop->spare_msg;
}

msgpack_zone* weft__loop_take_zone(weft_loop_t* loop) {
  msgpack_zone* z = loop->zone;
  msgpack_zone* fresh =
      WEFT__FAILABLE(msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE));
  if (fresh == NULL)
    return NULL;
  loop->zone = fresh;
  return z;
}

/* ---- ticks and microtasks ----------------------------------------------- */

int weft_next_tick(weft_loop_t* loop, weft_task_cb cb, void* arg) {
  if (cb == NULL)
    return WEFT_EINVAL;
  CHECK_OWNER(loop);
  return ring_push(&loop->ticks, cb, arg);
}

int weft_queue_microtask(weft_loop_t* loop, weft_task_cb cb, void* arg) {
  if (cb == NULL)
    return WEFT_EINVAL;
  CHECK_OWNER(loop);
  return ring_push(&loop->micro, cb, arg);
}

/* Whether terminate, weft_worker_exit() or an error asked the loop to
 * stop. relaxed: only a poll between callbacks; weft_loop_run() reads the
 * flag again with acquire (stop_now) before it returns. */
static bool stop_asked(weft_loop_t* loop) {
  return atomic_load_explicit(&loop->stop_requested, memory_order_relaxed);
}

void weft__loop_after_callback(weft_loop_t* loop) {
  task_t t;
  bool traced;
  if (loop->draining)
    return; /* A task called weft_loop_drain(): the outer drain goes on. */
  loop->draining = true;
  traced = WEFT__TRACE_BEGIN_IF(loop->ticks.len + loop->micro.len > 0, "ticks");
  /* Node: all next-ticks, then all microtasks (those queued by microtasks
   * included), and again while a microtask queued a next-tick. A stop
   * request (terminate) cuts the drain between two callbacks, as Node's
   * terminate() cuts a chain of microtasks that never ends; what is left
   * is dropped with the loop. */
  while ((loop->ticks.len > 0 || loop->micro.len > 0) && !stop_asked(loop)) {
    while (!stop_asked(loop) && ring_pop(&loop->ticks, &t))
      t.cb(loop, t.arg);
    while (!stop_asked(loop) && ring_pop(&loop->micro, &t))
      t.cb(loop, t.arg);
  }
  WEFT__TRACE_END_IF(traced);
  loop->draining = false;
}

int weft_loop_drain(weft_loop_t* loop) {
  CHECK_OWNER(loop);
  weft__loop_after_callback(loop);
  return 0;
}

/* ---- timers and immediates ---------------------------------------------- */

static weft__timer_t* timer_lookup(weft_loop_t* loop, weft_timer_id id) {
  uint32_t idx = (uint32_t)(id & 0xffffffffu);
  uint32_t gen = (uint32_t)(id >> 32);
  if (idx == 0 || idx > loop->nslots)
    return NULL;
  if (loop->slots[idx - 1].gen != gen)
    return NULL;
  return loop->slots[idx - 1].timer;
}

static int timer_alloc(weft_loop_t* loop, weft__timer_t** out) {
  weft__timer_t* t;
  uint32_t idx;
  if (loop->free_slot == 0) {
    uint32_t n = loop->nslots ? loop->nslots * 2 : 16;
    uint32_t i;
    timer_slot_t* s = weft__local_alloc(n * sizeof(*s));
    if (s == NULL)
      return WEFT_ENOMEM;
    if (loop->nslots)
      memcpy(s, loop->slots, loop->nslots * sizeof(*s));
    for (i = loop->nslots; i < n; i++) {
      s[i].gen = 1;
      s[i].timer = NULL;
      s[i].next_free = i + 1 < n ? i + 2 : 0;
    }
    weft__local_free(loop->slots);
    loop->slots = s;
    loop->free_slot = loop->nslots + 1;
    loop->nslots = n;
  }
  t = weft__local_calloc(sizeof(*t));
  if (t == NULL)
    return WEFT_ENOMEM;
  idx = loop->free_slot - 1;
  loop->free_slot = loop->slots[idx].next_free;
  loop->slots[idx].timer = t;
  t->id = ((uint64_t)loop->slots[idx].gen << 32) | (idx + 1);
  t->loop = loop;
  t->ref = true;
  *out = t;
  return 0;
}

static void timer_cb(uv_timer_t* h) {
  weft__timer_t* t = h->data;
  weft_loop_t* loop = t->loop;
  weft_task_cb cb = t->cb;
  void* arg = t->arg;
  if (loop->stop && !loop->closing) {
    /* weft_loop_stop() ran earlier in this turn: wait for the next run.
     * (A 0 ms re-arm would fire again within the same timers phase.) */
    uv_timer_start(h, timer_cb, 1, uv_timer_get_repeat(h));
    return;
  }
  if (t->kind == TIMER_TIMEOUT) {
    /* A timeout is gone before its callback runs: clearing it inside is a
     * no-op, as in Node. */
    release_slot(loop, t->id);
    uv_close((uv_handle_t*)&t->handle, free_timer_close);
  }
  if (loop->closing)
    return;
  loop->depth++;
  WEFT__TRACE_BEGIN(t->kind == TIMER_INTERVAL ? "interval" : "timeout");
  cb(loop, arg);
  weft__loop_after_callback(loop);
  WEFT__TRACE_END();
  loop->depth--;
}

/* Checks shared by timers and immediates, then a slot for a new one. */
static int new_timer(weft_loop_t* loop,
                     weft_task_cb cb,
                     void* arg,
                     weft_timer_id* out,
                     int kind,
                     weft__timer_t** t) {
  int err;
  if (out != NULL)
    *out = 0;
  if (cb == NULL)
    return WEFT_EINVAL;
  CHECK_OWNER(loop);
  err = timer_alloc(loop, t);
  if (err != 0)
    return err;
  (*t)->cb = cb;
  (*t)->arg = arg;
  (*t)->kind = kind;
  return 0;
}

/* The libuv timeout that makes a timer due `ms` milliseconds from now.
 * libuv counts from the loop's cached time, which is as old as the loop's
 * last turn: after 300 ms of synchronous work a 50 ms timeout would fire
 * at once. Counting from the precise clock, rounded up to the next whole
 * millisecond, the timer is due no earlier than `ms` after this call (the
 * loop's clock, coarse or precise, never runs ahead of uv_hrtime()). The
 * cached time is left alone: moving it inside a timer callback could make
 * timers already queued due again within the same timers phase. */
static uint64_t timeout_from_now(weft_loop_t* loop, uint64_t ms) {
  uint64_t now_ms = (uv_hrtime() + 999999) / 1000000;
  uint64_t cached = uv_now(loop->uv);
  uint64_t lag = now_ms > cached ? now_ms - cached : 0;
  return ms > UINT64_MAX - lag ? UINT64_MAX : ms + lag;
}

static int start_timer(weft_loop_t* loop,
                       uint64_t ms,
                       weft_task_cb cb,
                       void* arg,
                       weft_timer_id* out,
                       int kind) {
  weft__timer_t* t;
  int err = new_timer(loop, cb, arg, out, kind, &t);
  if (err != 0)
    return err;
  uv_timer_init(loop->uv, &t->handle);
  t->handle.data = t;
  if (ms == 0)
    ms = 1; /* As Node: 0 means 1 ms, so a timeout set in a timer callback
             * waits for the next turn (after immediates and I/O). */
  uv_timer_start(&t->handle, timer_cb, timeout_from_now(loop, ms),
                 kind == TIMER_INTERVAL ? ms : 0);
  if (out != NULL)
    *out = t->id;
  return 0;
}

int weft_set_timeout(weft_loop_t* loop,
                     uint64_t ms,
                     weft_task_cb cb,
                     void* arg,
                     weft_timer_id* out) {
  return start_timer(loop, ms, cb, arg, out, TIMER_TIMEOUT);
}

int weft_set_interval(weft_loop_t* loop,
                      uint64_t ms,
                      weft_task_cb cb,
                      void* arg,
                      weft_timer_id* out) {
  return start_timer(loop, ms, cb, arg, out, TIMER_INTERVAL);
}

static void imm_unlink(weft_loop_t* loop, weft__timer_t* t) {
  if (t->imm_prev)
    t->imm_prev->imm_next = t->imm_next;
  else
    loop->imm_head = t->imm_next;
  if (t->imm_next)
    t->imm_next->imm_prev = t->imm_prev;
  else
    loop->imm_tail = t->imm_prev;
  if (loop->imm_head == NULL)
    uv_idle_stop(&loop->idle);
}

int weft_set_immediate(weft_loop_t* loop,
                       weft_task_cb cb,
                       void* arg,
                       weft_timer_id* out) {
  weft__timer_t* t;
  int err = new_timer(loop, cb, arg, out, TIMER_IMMEDIATE, &t);
  if (err != 0)
    return err;
  t->epoch = loop->imm_epoch;
  t->imm_prev = loop->imm_tail;
  if (loop->imm_tail)
    loop->imm_tail->imm_next = t;
  else
    loop->imm_head = t;
  loop->imm_tail = t;
  /* An active idle handle makes the poll return at once, so the check
   * phase comes round without waiting for I/O. */
  uv_idle_start(&loop->idle, idle_cb);
  if (out != NULL)
    *out = t->id;
  return 0;
}

int weft_clear_timer(weft_loop_t* loop, weft_timer_id id) {
  weft__timer_t* t;
  CHECK_OWNER(loop);
  t = timer_lookup(loop, id);
  if (t == NULL)
    return 0;
  release_slot(loop, id);
  if (t->kind == TIMER_IMMEDIATE) {
    imm_unlink(loop, t);
    weft__local_free(t);
  } else {
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t*)&t->handle, free_timer_close);
  }
  return 0;
}

int weft_timer_set_ref(weft_loop_t* loop, weft_timer_id id, bool ref) {
  weft__timer_t* t;
  CHECK_OWNER(loop);
  t = timer_lookup(loop, id);
  if (t == NULL || t->kind == TIMER_IMMEDIATE)
    return WEFT_EINVAL;
  t->ref = ref;
  if (ref)
    uv_ref((uv_handle_t*)&t->handle);
  else
    uv_unref((uv_handle_t*)&t->handle);
  return 0;
}

/* The check phase: Node's immediates queued before this turn, in order. */
static void run_immediates(weft_loop_t* loop) {
  uint64_t epoch;
  if (loop->imm_head == NULL)
    return;
  epoch = loop->imm_epoch++;
  while (loop->imm_head != NULL && loop->imm_head->epoch <= epoch &&
         !loop->stop && !stop_asked(loop)) {
    weft__timer_t* t = loop->imm_head;
    weft_task_cb cb = t->cb;
    void* arg = t->arg;
    imm_unlink(loop, t);
    release_slot(loop, t->id);
    weft__local_free(t);
    WEFT__TRACE_BEGIN("immediate");
    cb(loop, arg);
    weft__loop_after_callback(loop);
    WEFT__TRACE_END();
  }
}

/* ---- threadpool work ---------------------------------------------------- */

static void work_run(uv_work_t* req) {
  work_t* w = req->data;
  WEFT__TRACE_WORK_BEGIN();
  w->work(w->arg);
  WEFT__TRACE_END();
}

static void work_after(uv_work_t* req, int status) {
  work_t* w = req->data;
  weft_loop_t* loop = w->loop;
  weft_after_work_cb after = w->after;
  void* arg = w->arg;
  weft__local_free(w);
  loop->pending_work--;
  if (after == NULL)
    return;
  if (loop->closing && status == 0)
    status = WEFT_ECANCELED;
  loop->depth++;
  WEFT__TRACE_BEGIN("after work");
  after(loop, arg, status == UV_ECANCELED ? WEFT_ECANCELED : status);
  if (!loop->closing)
    weft__loop_after_callback(loop);
  WEFT__TRACE_END();
  loop->depth--;
}

int weft_queue_work(weft_loop_t* loop,
                    weft_work_cb work,
                    weft_after_work_cb after,
                    void* arg) {
  work_t* w;
  int err;
  if (work == NULL)
    return WEFT_EINVAL;
  CHECK_OWNER(loop);
  w = weft__local_alloc(sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  w->loop = loop;
  w->work = work;
  w->after = after;
  w->arg = arg;
  w->req.data = w;
  err = uv_queue_work(loop->uv, &w->req, work_run, work_after);
  if (err != 0)
    weft__local_free(w);
  else
    loop->pending_work++;
  return err;
}

/* ---- cross-thread delivery ---------------------------------------------- */

bool weft__loop_stopping(weft_loop_t* loop) {
  return stop_now(loop);
}

uint32_t weft__loop_spin_budget(const weft_loop_t* loop) {
  return loop->spin_budget_ns;
}

bool weft__loop_has_ready(weft_loop_t* loop) {
  return !weft__mpsc_empty(&loop->ready);
}

void weft__loop_on_idle(weft_loop_t* loop, void (*cb)(void* arg), void* arg) {
  loop->idle_hook = cb;
  loop->idle_arg = arg;
}

void weft__loop_schedule(weft_loop_t* loop, weft__ready_t* r) {
  /* seq_cst: before our load of the waker's flag in the single order, so
   * that a closing owner either waits for us or we see the waker closed
   * (waker.h, "Closing"). A locked add on x86, as relaxed was. */
  atomic_fetch_add_explicit(&loop->producers, 1, memory_order_seq_cst);
  weft__mpsc_push(&loop->ready, &r->node);
  weft__waker_wake(&loop->waker);
  /* seq_cst (a release): our last touch of the loop, wake-up included,
   * happens before the owner closes the waker and frees it. */
  atomic_fetch_sub_explicit(&loop->producers, 1, memory_order_seq_cst);
}

static int posted_task_run(weft_loop_t* loop, weft__ready_t* r) {
  posted_task_t* p = weft__container_of(r, posted_task_t, ready);
  weft_task_cb cb = p->cb;
  void* arg = p->arg;
  weft__xfree(p);
  /* During teardown the task still runs: posted tasks are weft's own
   * completions (async waits, exits) that must release what they hold. */
  WEFT__TRACE_BEGIN("task");
  cb(loop, arg);
  if (!loop->closing)
    weft__loop_after_callback(loop);
  WEFT__TRACE_END();
  return 1;
}

int weft__loop_post_task(weft_loop_t* loop, weft_task_cb cb, void* arg) {
  posted_task_t* p = weft__xalloc(sizeof(*p));
  if (p == NULL)
    return WEFT_ENOMEM;
  p->ready.run = posted_task_run;
  p->cb = cb;
  p->arg = arg;
  weft__loop_schedule(loop, &p->ready);
  return 0;
}

void weft__loop_request_stop(weft_loop_t* loop) {
  /* Counted as a producer for the same reason as weft__loop_schedule(). */
  atomic_fetch_add_explicit(&loop->producers, 1, memory_order_seq_cst);
  atomic_store_explicit(&loop->stop_requested, 1, memory_order_release);
  weft__waker_force(&loop->waker);
  atomic_fetch_sub_explicit(&loop->producers, 1, memory_order_seq_cst);
}

static bool stop_now(weft_loop_t* loop) {
  if (loop->stop)
    return true;
  if (atomic_load_explicit(&loop->stop_requested, memory_order_acquire)) {
    loop->stop = true;
    return true;
  }
  return false;
}

/* Hand out what other threads pushed: the "poll phase" of weft messages.
 * Returns the work done (see READY_BATCH). */
static int process_ready(weft_loop_t* loop) {
  int n = 0;
  while (n < READY_BATCH && !stop_now(loop)) {
    weft__mpsc_node_t* node = weft__mpsc_pop(&loop->ready);
    weft__ready_t* r;
    if (node == NULL)
      break;
    r = weft__container_of(node, weft__ready_t, node);
    /* Cross-thread traffic: an answer may follow soon (see spinning). */
    loop->recent_ready = true;
    n += r->run(loop, r); /* 1 + messages delivered: see READY_BATCH. */
  }
  if (loop->stop)
    uv_stop(loop->uv);
  return n;
}

/* After every poll: what other threads handed over (a wake-up is a write to
 * libuv's own descriptor, which the poll drained: see waker.h), then the
 * immediates. The check handle is referenced while weft__loop_keepalive()
 * says so: an active check handle keeps a loop alive without making its
 * poll return early. */
static void check_cb(uv_check_t* h) {
  weft_loop_t* loop = h->data;
  if (loop->parked && loop->woke_ns == 0)
    loop->woke_ns = uv_hrtime(); /* For adapt_spin(). */
  weft__waker_checked(&loop->waker);
  loop->depth++;
  process_ready(loop);
  run_immediates(loop);
  loop->depth--;
}

/* ---- running ------------------------------------------------------------ */

static bool work_arrived(weft_loop_t* loop) {
  return !weft__mpsc_empty(&loop->ready) ||
         atomic_load_explicit(&loop->stop_requested, memory_order_relaxed);
}

/* The budget that would have cost the last waits the least (see
 * SPIN_NS): each gap (plus a quarter, for jitter) is a candidate. */
static uint32_t spin_choose(const weft_loop_t* loop) {
  uint64_t wake = (uint64_t)loop->wake_ns + SPIN_WAKE_NS;
  uint64_t best_cost = (uint64_t)SPIN_HIST * wake; /* Budget 0. */
  uint32_t best = 0;
  int i, j;
  for (i = 0; i < SPIN_HIST; i++) {
    uint64_t g = loop->spin_gaps[i], b, cost = 0;
    if (g == SPIN_NEVER)
      continue;
    b = g + g / 4 < SPIN_MIN_NS ? SPIN_MIN_NS : g + g / 4;
    if (b > SPIN_NS)
      b = SPIN_NS;
    for (j = 0; j < SPIN_HIST; j++) {
      uint64_t h = loop->spin_gaps[j];
      cost += h <= b ? h : b + wake;
    }
    if (cost < best_cost || (cost == best_cost && b < best)) {
      best_cost = cost;
      best = (uint32_t)b;
    }
  }
  return best;
}

/* A wait after cross-thread traffic ended `gap` ns after it started (more
 * than SPIN_NS: as good as never): learn it, choose the next budget. */
static void spin_learn(weft_loop_t* loop, uint64_t gap) {
  loop->spin_gaps[loop->spin_gap_at++ & (SPIN_HIST - 1)] =
      gap > SPIN_NS ? SPIN_NEVER : (uint32_t)gap;
  loop->spin_budget_ns = spin_choose(loop);
}

/* Spin until the ready queue has something or the budget is spent (see
 * SPIN_NS). True when something arrived. */
static bool spin_for_work(weft_loop_t* loop, uint64_t t0) {
  uint64_t budget = loop->spin_budget_ns;
  uint64_t now = t0, gap = 0;
  bool found = false;
  int i;
  if (budget == 0)
    return false;
  atomic_store_explicit(
      &loop->spins, atomic_load_explicit(&loop->spins, memory_order_relaxed) + 1,
      memory_order_relaxed);
  /* Pauses first (a clock read every 16: 200 take 4-8 us here, more than
   * a short budget), then yields. Work found right after a sched_yield()
   * that ran other threads (it took SPIN_YIELD_RAN_NS or more) came at
   * some time during that yield: the gap learnt is the look before it,
   * as the time the yield took is the core's, not the gap's. Learnt to
   * the look after, it made the 8 workers of the bench's fan-out (9
   * threads on 2 vCPUs) see gaps of "never" after their yields found
   * work, park after each drain and have main pay a wake-up write for
   * each: 10,000-15,000 writes a run instead of about 1,000, fanout 0.64x
   * side by side with the older budget. Anywhere else the gap is the
   * look that found the work, as before: learnt to the look before
   * everywhere, gaps came out short, budgets ran out just before the work
   * came, and on a quiet host cpurate at 10,000 and 100,000/s cost
   * 1.5-2x the CPU. For the same reason the work is looked for once more
   * after such a yield before the budget ends the spin (after every
   * yield, cpurate at 100,000/s cost 1.3x). */
  for (i = 0;; i++) {
    found = work_arrived(loop);
    if (found)
      break;
    if (i < SPIN_PAUSES) {
      weft__cpu_relax();
      if ((i & 15) != 15)
        continue;
      now = uv_hrtime();
    } else {
      uint64_t before = now;
      sched_yield();
      now = uv_hrtime();
      if (now - before >= SPIN_YIELD_RAN_NS && work_arrived(loop)) {
        found = true;
        gap = before > t0 ? before - t0 : 1;
        break;
      }
    }
    if (now - t0 >= budget)
      break;
  }
  if (found && gap == 0)
    gap = uv_hrtime() - t0; /* Found by a pause or a quick yield. */
  now = uv_hrtime();
  atomic_store_explicit(
      &loop->spin_ns,
      atomic_load_explicit(&loop->spin_ns, memory_order_relaxed) +
          (now - t0),
      memory_order_relaxed);
  if (found)
    spin_learn(loop, gap);
  return found;
}

/* After a park that followed cross-thread traffic (the wait began at t0,
 * with the spin if any): learn when work came (see SPIN_NS). */
static void adapt_spin(weft_loop_t* loop, uint64_t t0, bool work_came) {
  uint64_t woke = weft__waker_take_woke_at(&loop->waker);
  uint64_t at = work_came ? (woke > t0 ? woke : uv_hrtime()) : 0;
  if (woke > t0 && loop->woke_ns > woke) {
    /* A wake-up's latency: a quarter of the way to this one. */
    uint64_t l = loop->woke_ns - woke;
    int64_t w = loop->wake_ns;
    w += ((int64_t)(l > SPIN_WAKE_MAX_NS ? SPIN_WAKE_MAX_NS : l) - w) / 4;
    loop->wake_ns = w < SPIN_WAKE_MIN_NS ? SPIN_WAKE_MIN_NS : (uint32_t)w;
  }
  loop->woke_ns = 0;
  spin_learn(loop, work_came ? at - t0 : UINT64_MAX);
}

static bool loop_busy(weft_loop_t* loop) {
  return uv_loop_alive(loop->uv) || loop->ticks.len > 0 ||
         loop->micro.len > 0 || loop->imm_head != NULL;
}

/* Whether the loop has more to do; when not, first hand weft's ready queue
 * what needs no live turn: entries of ports freed or moved since they were
 * queued are released now (each holds its port's memory), not at
 * weft_loop_free(). With `stop` set a live port delivers nothing and keeps
 * its place (an unref'd port's messages wait for a later run, as in
 * Node), so the pass is bounded. A posted task (weft's own completion)
 * runs as it would in a turn, and ends the pass. */
static bool loop_alive(weft_loop_t* loop) {
  int n;
  if (loop_busy(loop))
    return true;
  for (n = 0; n < READY_BATCH; n++) {
    weft__mpsc_node_t* node = weft__mpsc_pop(&loop->ready);
    weft__ready_t* r;
    if (node == NULL)
      break;
    r = weft__container_of(node, weft__ready_t, node);
    if (r->run == posted_task_run) {
      r->run(loop, r);
      break;
    }
    loop->stop = true;
    r->run(loop, r);
    loop->stop = false;
  }
  return loop_busy(loop) || stop_now(loop);
}

int weft_loop_run(weft_loop_t* loop) {
  int fast = 0;
  bool watch, polled = false, just_polled;
  uint64_t idle_t0 = 0;
  CHECK_OWNER(loop);
  if (loop->running)
    return WEFT_EBUSY;
  loop->running = true;
  loop->stop = false;
  /* The code before the run is Node's main script: its ticks come first. */
  weft__loop_after_callback(loop);
  weft__waker_park_end(&loop->waker);
  while (!stop_now(loop)) {
    just_polled = polled;
    polled = false;
    if (!weft__mpsc_empty(&loop->ready) && fast < FAST_PATH_MAX) {
      /* Fast path: messages are waiting and, if no timer is due and no
       * immediate or pending callback is queued, the next uv_run would
       * only poll for I/O and then reach the check phase. Deliver straight
       * away as that poll phase would, then run the check phase. */
      uv_update_time(loop->uv);
      if (uv_backend_timeout(loop->uv) != 0) {
        fast += process_ready(loop);
        if (loop->stop)
          break;
        run_immediates(loop);
        continue;
      }
    }
    fast = 0;
    /* Right after a park's turn, which polled and ran the check phase and
     * the due timers, and with nothing handed over since, another turn
     * would only poll again: one system call (epoll_wait) per wake-up
     * saved. Whatever that turn left to do makes the backend's timeout 0
     * below (immediates, pending callbacks, closing handles, due
     * timers), and the next round runs a turn for it. */
    if (!just_polled)
      uv_run(loop->uv, UV_RUN_NOWAIT);
    if (stop_now(loop))
      break;
    /* Nothing keeps the loop alive: what is still queued belongs to
     * unref'd objects and waits for a later run (as in Node). */
    if (!loop_alive(loop))
      break;
    if (!weft__mpsc_empty(&loop->ready))
      continue;
    if (uv_backend_timeout(loop->uv) == 0)
      continue; /* Something is due at once. */
    if (loop->idle_hook != NULL) {
      loop->idle_hook(loop->idle_arg);
      if (!weft__mpsc_empty(&loop->ready))
        continue;
    }
    /* Spin only after cross-thread traffic, where an answer may be on its
     * way: a loop woken by a timer or I/O alone parks straight away, so
     * periodic timers cost no spinning (8 workers with 1 ms intervals:
     * 44% of a core when every wake-up spun, 10% now). */
    watch = loop->recent_ready;
    if (watch) {
      loop->recent_ready = false;
      idle_t0 = uv_hrtime();
      if (spin_for_work(loop, idle_t0))
        continue;
      (void)weft__waker_take_woke_at(&loop->waker); /* An older write's. */
    }
    weft__waker_park_begin(&loop->waker);
    if (weft__mpsc_empty(&loop->ready) &&
        !atomic_load_explicit(&loop->stop_requested, memory_order_acquire)) {
      loop->parked = watch;
      uv_run(loop->uv, UV_RUN_ONCE);
      loop->parked = false;
      polled = true;
    }
    weft__waker_park_end(&loop->waker);
    /* The wake-up's ready items ran inside that turn (its check phase)
     * and set recent_ready again, or still wait in the queue. */
    if (watch)
      adapt_spin(loop, idle_t0, loop->recent_ready || work_arrived(loop));
  }
  /* Back to "parked" so producers wake a loop that nobody drives. */
  weft__waker_park_begin(&loop->waker);
  loop->running = false;
  if (atomic_load_explicit(&loop->stop_requested, memory_order_acquire))
    return WEFT_ETERMINATED;
  return 0;
}

int weft_loop_stop(weft_loop_t* loop) {
  CHECK_OWNER(loop);
  /* Under a plain uv_run() (a wrapped loop) only libuv's stop applies: a
   * sticky flag would keep the next uv_run() from delivering anything. */
  if (loop->running)
    loop->stop = true;
  uv_stop(loop->uv);
  return 0;
}

/* ---- utilization -------------------------------------------------------- */

uint64_t weft__loop_spins(weft_loop_t* loop) {
  return atomic_load_explicit(&loop->spins, memory_order_relaxed);
}

void weft__loop_elu_ns(weft_loop_t* loop, uint64_t* idle, uint64_t* total) {
  /* uv_metrics_idle_time() reads libuv's counters under libuv's own
   * metrics lock, so another thread may call it; `start_ns` is fixed at
   * creation. */
  uint64_t now = uv_hrtime();
  *idle = uv_metrics_idle_time(loop->uv) +
          atomic_load_explicit(&loop->spin_ns, memory_order_relaxed);
  *total = now - loop->start_ns;
  if (*idle > *total)
    *idle = *total;
}

void weft__elu_fill(uint64_t idle_ns,
                    uint64_t total_ns,
                    const weft_elu_t* since,
                    weft_elu_t* out) {
  double total;
  out->idle = (double)idle_ns / 1e6;
  out->active = (double)(total_ns - idle_ns) / 1e6;
  if (since != NULL) {
    out->idle -= since->idle;
    out->active -= since->active;
    if (out->idle < 0)
      out->idle = 0;
    if (out->active < 0)
      out->active = 0;
  }
  total = out->idle + out->active;
  out->utilization = total > 0 ? out->active / total : 0;
}

int weft_loop_utilization(weft_loop_t* loop,
                          const weft_elu_t* since,
                          weft_elu_t* out) {
  uint64_t idle, total;
  if (out == NULL)
    return WEFT_EINVAL;
  CHECK_OWNER(loop);
  weft__loop_elu_ns(loop, &idle, &total);
  weft__elu_fill(idle, total, since, out);
  return 0;
}
