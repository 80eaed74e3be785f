/* worker_thread.c - the OS threads workers run on: a new detached thread,
 * or one that finished an earlier worker and waits, for a short while, to
 * take the next.
 *
 * Why a cache: on the machines we measure, creating and joining an empty
 * pthread costs about 40 us (measured: /tmp probe, 3000 create+join pairs),
 * most of a worker's spawn-to-exit. A thread that just ended a worker spins
 * for SPIN_NS, then sleeps on a futex for at most IDLE_MS, and takes the
 * next worker without a thread creation. A thread runs one worker at a
 * time; each worker still gets its own loop, heap and name. What a cached
 * thread keeps between workers is the caller's own thread-local storage:
 * code that relies on fresh thread-locals asks for WEFT_WORKER_FRESH_THREAD.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "futex.h"
#include "internal.h"

/* Idle threads kept at most, how long one spins and then sleeps before it
 * exits. Sleeping threads cost no CPU. */
#define MAX_IDLE 8
#define SPIN_NS  50000
#define IDLE_MS  1000

enum { SLOT_RUNNING, SLOT_IDLE, SLOT_SLEEPING, SLOT_ASSIGNED };

typedef struct slot_s {
  struct slot_s* next; /* Idle list; guarded by idle_lock. */
  size_t stack_size;   /* Fixed at creation. */
  bool cacheable;      /* Fixed at creation. */
  /* Futex word. The thread moves IDLE -> SLEEPING; a spawner moves
   * IDLE/SLEEPING -> ASSIGNED under idle_lock. */
  _Atomic uint32_t state;
  void (*fn)(void* arg); /* Written before ASSIGNED is published. */
  void* arg;
} slot_t;

static uv_once_t idle_once = UV_ONCE_INIT;
static uv_mutex_t idle_lock;
static slot_t* idle_head; /* Guarded by idle_lock. */
static int idle_count;    /* Guarded by idle_lock. */

static void idle_init(void) {
  if (uv_mutex_init(&idle_lock) != 0)
    abort(); /* Only fails without resources at start-up. */
}

/* Offer the calling thread for the next worker. True when one was
 * assigned (slot->fn/arg are set), false when the thread should end. */
static bool wait_for_work(slot_t* s) {
  uint64_t t0, now;
  uv_mutex_lock(&idle_lock);
  if (idle_count >= MAX_IDLE) {
    uv_mutex_unlock(&idle_lock);
    return false;
  }
  atomic_store_explicit(&s->state, SLOT_IDLE, memory_order_relaxed);
  s->next = idle_head;
  idle_head = s;
  idle_count++;
  uv_mutex_unlock(&idle_lock);
  pthread_setname_np(pthread_self(), "weft-idle");

  t0 = now = uv_hrtime();
  /* acquire: pairs with the spawner's release, so fn/arg are visible. */
  while (now - t0 < SPIN_NS) {
    if (atomic_load_explicit(&s->state, memory_order_acquire) == SLOT_ASSIGNED)
      return true;
    sched_yield();
    now = uv_hrtime();
  }
  for (;;) {
    uint32_t expected = SLOT_IDLE;
    int64_t left = (int64_t)IDLE_MS * 1000000 - (int64_t)(now - t0);
    if (atomic_load_explicit(&s->state, memory_order_acquire) == SLOT_ASSIGNED)
      return true;
    if (left <= 0)
      break;
    /* acq_rel: a spawner that sees SLEEPING knows to wake us. */
    atomic_compare_exchange_strong_explicit(&s->state, &expected, SLOT_SLEEPING,
                                            memory_order_acq_rel,
                                            memory_order_acquire);
    if (expected == SLOT_ASSIGNED)
      return true;
    weft__futex_wait(&s->state, SLOT_SLEEPING, left);
    now = uv_hrtime();
  }
  /* Timed out: leave the list unless a spawner took us meanwhile. */
  uv_mutex_lock(&idle_lock);
  if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_ASSIGNED) {
    slot_t** pp;
    for (pp = &idle_head; *pp != NULL; pp = &(*pp)->next) {
      if (*pp == s) {
        *pp = s->next;
        idle_count--;
        break;
      }
    }
    uv_mutex_unlock(&idle_lock);
    return false;
  }
  uv_mutex_unlock(&idle_lock);
  return true;
}

static void thread_main(void* arg) {
  slot_t* s = arg;
  do {
    s->fn(s->arg);
  } while (s->cacheable && wait_for_work(s));
  free(s);
}

int weft__thread_run(size_t stack_size,
                     bool fresh,
                     void (*fn)(void* arg),
                     void* arg) {
  uv_thread_options_t topts;
  uv_thread_t tid;
  slot_t** pp;
  slot_t* s = NULL;
  uv_once(&idle_once, idle_init);
  if (!fresh) {
    uv_mutex_lock(&idle_lock);
    for (pp = &idle_head; *pp != NULL; pp = &(*pp)->next) {
      if ((*pp)->stack_size == stack_size) {
        s = *pp;
        *pp = s->next;
        idle_count--;
        break;
      }
    }
    if (s != NULL) {
      uint32_t prev;
      s->fn = fn;
      s->arg = arg;
      /* release: publishes fn/arg to the thread's acquire load. */
      prev = atomic_exchange_explicit(&s->state, SLOT_ASSIGNED,
                                      memory_order_acq_rel);
      uv_mutex_unlock(&idle_lock);
      if (prev == SLOT_SLEEPING)
        weft__futex_wake(&s->state);
      return 0;
    }
    uv_mutex_unlock(&idle_lock);
  }
  s = WEFT__FAILABLE(calloc(1, sizeof(*s)));
  if (s == NULL)
    return WEFT_ENOMEM;
  s->stack_size = stack_size;
  s->cacheable = !fresh;
  s->fn = fn;
  s->arg = arg;
  atomic_init(&s->state, SLOT_RUNNING);
  topts.flags = stack_size ? UV_THREAD_HAS_STACK_SIZE : 0;
  topts.stack_size = stack_size;
  if (uv_thread_create_ex(&tid, &topts, thread_main, s) != 0) {
    free(s);
    return WEFT_ESPAWN;
  }
  /* Nobody joins a worker thread: the worker's exit message tells its
   * owner that the worker is done (see worker.c). */
  pthread_detach(tid);
  return 0;
}
