/* pool.c - a pool of worker threads running registered tasks (pool.h).
 *
 * The hand-off. Submitters put tasks on one queue (a list under the pool's
 * mutex). Workers take them straight from it: a worker with room for more
 * tasks and nothing to do sits on the "available" list, parked on its own
 * loop; a submit pops it from that list and schedules its drain on its loop
 * (one wake-up, and none while the worker is still draining: a busy worker
 * takes the next task itself when it finishes one). The result goes
 * straight from the worker to the submitter: a task on the submitter's
 * loop, or the future's futex word. The pool's own thread (a hidden loop
 * that owns the workers, which are ordinary weft workers) only spawns,
 * retires and replaces workers, and runs the callbacks of submitters that
 * have no loop.
 *
 * Settlement. A task settles once: whoever wins the compare-and-swap on
 * `settled` (the worker that ran it, a cancel, destroy, or the pool thread
 * when the task's worker died) writes the outcome and delivers it. Where a
 * settle and a change of the queue or running counts meet, the settle
 * happens first under the lock, so once the pool sees nothing queued or
 * running every delivery has been handed out (close waits on that).
 *
 * Memory. A task is counted (`refs`): its future, the pool side (from the
 * submit until the task left the queue or its worker), and a delivery in
 * flight. A task holds a reference to its pool, so a future outlives the
 * pool safely (the pool's memory goes with the last task). */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "futex.h"
#include "histogram.h"
#include "internal.h"
#include "trace.h"
#include "pool_internal.h"

/* Tasks one drain runs before it gives the worker's loop a turn (its
 * timers and I/O, for tasks that wait with WEFT_TASK_PENDING). */
#define DRAIN_BATCH 64
/* A future's wait: pause-spins, then sched_yield() for up to WAIT_SPIN_NS,
 * then the futex (as the loop waits for messages: see loop.c). How long it
 * yields adapts per waiting thread: a wait that had to park halves the
 * next one's budget, a wait that the spin answered doubles it back (from
 * WAIT_SPIN_MIN_NS). A thread waiting on long tasks (a parallel-for over
 * chunks of milliseconds) thus stops taking CPU from the pool's workers
 * after two waits, while one waiting on a stream of short tasks keeps
 * answering without a wake-up. Measured side by side (bench/ab.sh, offload
 * and pool, medians of 5, 2 CPUs): warm primes speedup 1.90x with a fixed
 * 50 us spin, 1.96x adaptive (mandel 1.94x, 1.96x); empty tasks through
 * futures 0.73 M/s, 0.76 M/s. */
#define WAIT_PAUSES 200
#define WAIT_SPIN_NS 50000
#define WAIT_SPIN_MIN_NS 1000
static _Thread_local uint32_t wait_spin_ns = WAIT_SPIN_NS;

/* Where a task is (pool lock). */
enum { AT_NONE, AT_QUEUE, AT_WORKER };
/* A pool worker's state (pool lock). */
enum {
  PW_STARTING, /* Spawned; its entry has not run. */
  PW_AVAIL,    /* On the available list, parked on its loop. */
  PW_SCHED,    /* Its drain is scheduled or running. */
  PW_FULL,     /* concurrent_tasks on it, not draining. */
  PW_RETIRING, /* Idle and terminated by the pool thread. */
  PW_DEAD      /* Its loop is torn down. */
};
/* A callback's delivery on the submitter's loop (`dstate`). */
enum { DS_WAIT, DS_PUSHING, DS_PUSHED, DS_GONE };
/* The future's futex word (`done`). */
enum { DONE_NO, DONE_NO_WAITERS_PARKED, DONE_YES };

typedef struct entry_s {
  struct entry_s* next;
  weft_task_fn fn;
  void* data;
  char name[];
} entry_t;

typedef struct pworker_s pworker_t;

struct weft_task_ctx_s {
  weft_task_t* task;
};

struct weft_task_s {
  weft__ready_t ready; /* The delivery of a callback. */
  weft_pool_t* pool;
  uint64_t id;
  /* relaxed increments (the holder already has a reference); acq_rel
   * decrement so the last holder sees every write before it frees. */
  atomic_int refs;

  /* Pool lock. */
  weft_task_t* next; /* In the queue or on its worker's list. */
  weft_task_t* prev;
  weft_task_t* dnext; /* Worker thread: finished within a drain. */
  int where;
  pworker_t* worker;

  const entry_t* entry;
  weft_task_ctx_t ctx;
  weft_msg_t* arg;     /* Owned by the pool side until freed. */
  weft_msg_t* out;     /* The result being built (the worker's). */
  weft_msg_t* result;  /* The settled result, for a future or a callback. */
  bool pending;        /* Returned WEFT_TASK_PENDING (worker thread). */
  bool has_future;     /* Fixed at submit. */
  bool taken;          /* Future holder only. */
  uint64_t t_submit;   /* ns, uv_hrtime(). */
  uint64_t t_start;    /* Worker thread; read by whoever settles. */
  uint64_t t_end;

  weft_task_done_cb cb;
  void* cb_ctx;
  weft_loop_t* loop;        /* The submitter's loop (a callback there). */
  weft__tracked_t tracked;  /* On `loop`, until delivered. */
  atomic_int dstate;        /* DS_*: delivery vs `loop`'s teardown. */

  /* relaxed: a hint for the task function, checked in loops. */
  atomic_bool canceled;
  /* The compare-and-swap that decides who settles (acq_rel). */
  atomic_int settled;
  int status; /* Written by the settler before `done` is released. */
  /* DONE_*: release by the settler; acquire by the future's readers. */
  _Atomic uint32_t done;
};

struct pworker_s {
  weft__ready_t ready; /* Its drain, on its own loop. */
  weft_pool_t* pool;
  weft_worker_t* w;      /* Pool thread only. */
  pworker_t* all_next;   /* Pool lock: every live worker. */
  pworker_t* all_prev;
  bool terminated;       /* Pool thread only. */
  bool retiring;         /* Pool lock: counted in nretiring (its state
                          * turns PW_DEAD at its teardown). */
  int err;               /* Pool thread: its error event's code. */
  uint64_t born;         /* ns; fixed at spawn. */

  /* Pool lock. */
  weft_loop_t* loop;
  int state;
  pworker_t* anext; /* Available list. */
  pworker_t* aprev;
  weft_task_t* tasks; /* Taken from the queue, not finished. */
  unsigned active;
  uint64_t idle_since;

  /* Worker thread only. */
  msgpack_zone* zone; /* Arguments decode into it (see run_task). */
  bool in_drain;
  weft_task_t* finished; /* In this drain, to unlink at its next lock. */
  weft__tracked_t tracked;
};

struct weft_pool_s {
  uv_mutex_t lock;
  /* acq_rel on the last decrement: see weft_task_s.refs. */
  atomic_int refs;

  /* Fixed at weft_pool_new(). */
  char name[32];
  unsigned min_threads;
  unsigned max_threads;
  size_t max_queue;
  uint64_t idle_timeout_ms;
  uint64_t idle_ns; /* The same, saturated. */
  unsigned concurrent;
  int nice_increment;
  bool sched_idle;
  int base_nice; /* The nice value of the thread that made the pool. */
  size_t max_heap;
  size_t stack_size;
  weft_loop_t* loop; /* The pool thread's. */
  pthread_t thread;  /* Written by pthread_create(): the closer's. */
  pthread_t self;    /* The pool thread's own id, set before `started`. */
  uint64_t created;

  /* Pool lock. */
  entry_t* entries;
  weft_task_t* qhead;
  weft_task_t* qtail;
  size_t queued;
  size_t running;
  pworker_t* avail; /* Most recently idle first. */
  pworker_t* avail_tail;
  unsigned nworkers; /* Alive, starting and retiring included. */
  unsigned nstarting;
  unsigned nretiring;
  bool closed;
  bool kick_pending; /* `kick` is on the pool loop's ready queue: set by
                      * kick(), cleared only by kick_run(), which the pop
                      * runs (a node pushed while linked breaks the queue). */
  bool finished; /* The pool thread is ending: nothing may wake it. */
  pworker_t* all;         /* Every spawned worker not yet exited. */
  unsigned nlive;         /* How many of them have `born` in born_sum. */
  uint64_t born_sum;      /* Sum of `born` over them. */
  uint64_t dead_alive_ns; /* Alive time of workers gone. */

  /* relaxed: read by task functions as a hint (weft_task_canceled). */
  atomic_bool destroying;
  /* Callbacks queued on the pool thread and not yet run (seq_cst: read
   * by the pool thread with the lock's counts to decide it is done). */
  atomic_size_t deliveries;

  /* Statistics (relaxed: counters only). */
  atomic_ullong submitted, completed, failed, canceled, rejected, busy_ns;
  weft__hist_t wait_h;
  weft__hist_t run_h;

  /* A pool whose tasks run elsewhere (pool_internal.h): set once before
   * the pool is handed out; NULL for a pool of worker threads. */
  const weft__pool_backend_t* backend;
  void* be;

  /* Pool thread only. */
  weft__ready_t kick;
  weft_timer_id sweep;
  unsigned next_index;
  bool holds_loop;
  int start_err;
  uv_sem_t started;
};

static atomic_ullong next_task_id = 1;
/* The pool worker running on this thread (NULL elsewhere). */
static _Thread_local pworker_t* current_pw;

static void maintain(weft_pool_t* pool);

/* ---- small helpers -------------------------------------------------------- */

static void pool_unref(weft_pool_t* pool) {
  entry_t* e;
  if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) != 1)
    return;
  while ((e = pool->entries) != NULL) {
    pool->entries = e->next;
    free(e);
  }
  uv_sem_destroy(&pool->started);
  uv_mutex_destroy(&pool->lock);
  weft__xfree(pool);
}

static void task_unref(weft_task_t* t) {
  weft_pool_t* pool;
  if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
    return;
  pool = t->pool;
  weft_msg_free(t->arg);
  weft_msg_free(t->out);
  weft_msg_free(t->result);
  weft__xfree(t);
  pool_unref(pool);
}

static void futex_wake_all(_Atomic uint32_t* word) {
  syscall(SYS_futex, (uint32_t*)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL,
          NULL, 0);
}

/* Wake the pool thread to run maintain(). Pool lock held. */
static void kick(weft_pool_t* pool) {
  if (pool->kick_pending || pool->finished)
    return;
  pool->kick_pending = true;
  weft__loop_schedule(pool->loop, &pool->kick);
}

/* Pool lock held. */
static void queue_unlink(weft_pool_t* pool, weft_task_t* t) {
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    pool->qhead = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  else
    pool->qtail = t->prev;
  t->next = t->prev = NULL;
  t->where = AT_NONE;
  pool->queued--;
  WEFT__TRACE_COUNTER("pool queue", "tasks", pool->queued);
}

/* Pool lock held. */
static void avail_push(weft_pool_t* pool, pworker_t* pw) {
  pw->aprev = NULL;
  pw->anext = pool->avail;
  if (pool->avail != NULL)
    pool->avail->aprev = pw;
  else
    pool->avail_tail = pw;
  pool->avail = pw;
  pw->state = PW_AVAIL;
}

/* Pool lock held. */
static void avail_remove(weft_pool_t* pool, pworker_t* pw) {
  if (pw->aprev != NULL)
    pw->aprev->anext = pw->anext;
  else
    pool->avail = pw->anext;
  if (pw->anext != NULL)
    pw->anext->aprev = pw->aprev;
  else
    pool->avail_tail = pw->aprev;
  pw->anext = pw->aprev = NULL;
}

/* Pool lock held. */
static void wtask_unlink(pworker_t* pw, weft_task_t* t) {
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    pw->tasks = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  t->next = t->prev = NULL;
  t->where = AT_NONE;
}

/* Pool lock held: whether a closing pool has nothing left to run. */
static bool drained(const weft_pool_t* pool) {
  return pool->queued == 0 && pool->running == 0;
}

/* ---- settling and delivering ---------------------------------------------- */

static int deliver_run(weft_loop_t* loop, weft__ready_t* r);

/* Settle `t` with `status` and `result` (taken, freed if it loses).
 * Returns whether this call settled it. Thread: any. */
static bool settle(weft_task_t* t, int status, weft_msg_t* result) {
  weft_pool_t* pool = t->pool;
  weft_loop_t* to = NULL; /* Where the callback goes. */
  int expected = 0;
  uint32_t old;
  if (!atomic_compare_exchange_strong_explicit(&t->settled, &expected, 1,
                                               memory_order_acq_rel,
                                               memory_order_acquire)) {
    weft_msg_free(result);
    return false;
  }
  t->status = status;
  if (status == 0)
    atomic_fetch_add_explicit(&pool->completed, 1, memory_order_relaxed);
  else if (status == WEFT_ECANCELED)
    atomic_fetch_add_explicit(&pool->canceled, 1, memory_order_relaxed);
  else
    atomic_fetch_add_explicit(&pool->failed, 1, memory_order_relaxed);
  if (status != WEFT_ECANCELED && t->t_start != 0) {
    weft__hist_add(&pool->wait_h, t->t_start - t->t_submit);
    if (t->t_end != 0)
      weft__hist_add(&pool->run_h, t->t_end - t->t_start);
  }
  if (t->cb != NULL) {
    t->result = result;
    if (t->loop != NULL) {
      int ds = DS_WAIT;
      /* acq_rel: pairs with the submitter loop's teardown (task_loop_gone):
       * either it sees us pushing and waits, or we see it gone. */
      if (atomic_compare_exchange_strong_explicit(&t->dstate, &ds, DS_PUSHING,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire)) {
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        to = t->loop;
      } else {
        weft_msg_free(t->result); /* The submitter's loop is gone. */
        t->result = NULL;
      }
    } else {
      atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&pool->deliveries, 1, memory_order_seq_cst);
      to = pool->loop;
    }
  } else if (t->has_future) {
    t->result = result;
  } else {
    weft_msg_free(result);
  }
  /* release: status and result are visible to a reader that sees DONE_YES.
   * Before the callback is scheduled, so that the callback (which may run
   * at once on another thread) finds the future settled. The task stays
   * alive: the caller holds a reference, the callback another. */
  old = atomic_exchange_explicit(&t->done, DONE_YES, memory_order_acq_rel);
  if (old == DONE_NO_WAITERS_PARKED)
    futex_wake_all(&t->done);
  if (to != NULL) {
    weft__loop_schedule(to, &t->ready);
    /* release: the push is done; a teardown waiting on it goes on. */
    if (to == t->loop)
      atomic_store_explicit(&t->dstate, DS_PUSHED, memory_order_release);
  }
  return true;
}

/* Hand the outcome to the callback. Thread: the delivery loop. */
static void call_back(weft_loop_t* loop, weft_task_t* t) {
  int status = t->status;
  weft_msg_t* msg = t->result;
  t->result = NULL;
  if (status == 0 && msg != NULL) {
    int err = weft__msg_hand_out(msg, loop); /* Freed on an error. */
    if (err != 0) {
      msg = NULL;
      status = err;
    }
  }
  t->cb(t->cb_ctx, status, msg);
  if (msg != NULL)
    weft__msg_take_back(msg, loop);
}

static int deliver_run(weft_loop_t* loop, weft__ready_t* r) {
  weft_task_t* t = weft__container_of(r, weft_task_t, ready);
  weft_pool_t* pool = t->pool;
  bool on_pool = t->loop == NULL;
  bool closing = weft__loop_closing(loop);
  if (!on_pool) {
    weft__loop_untrack(&t->tracked);
    if (!closing)
      weft__loop_keepalive(loop, -1);
  }
  if (!closing)
    call_back(loop, t);
  task_unref(t);
  if (on_pool) {
    /* The pool thread holds the owner's reference: `pool` is alive. The
     * last delivery may be what a closing pool waits for. */
    if (atomic_fetch_sub_explicit(&pool->deliveries, 1,
                                  memory_order_seq_cst) == 1)
      maintain(pool);
  }
  if (!closing)
    weft__loop_after_callback(loop);
  return 1;
}

/* The submitter's loop is torn down (a worker that submitted ends) before
 * the task's callback ran. Thread: that loop's. */
static void task_loop_gone(weft__tracked_t* tr) {
  weft_task_t* t = weft__container_of(tr, weft_task_t, tracked);
  int ds = DS_WAIT;
  weft__loop_untrack(tr);
  if (atomic_compare_exchange_strong_explicit(&t->dstate, &ds, DS_GONE,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
    return; /* A later settle drops the result. */
  /* A settle is pushing the delivery: wait until it is in the queue (the
   * teardown runs it, closing), so the loop is not freed under the push.
   * acquire: pairs with the settler's release of DS_PUSHED. */
  while (atomic_load_explicit(&t->dstate, memory_order_acquire) == DS_PUSHING)
    weft__cpu_relax();
}

/* ---- the worker side ------------------------------------------------------ */

/* nice_increment: Linux keeps a nice value per thread, and a thread starts
 * with its creator's; set it from the pool maker's value, so that workers
 * (spawned by the pool thread, already lowered) are not lowered twice.
 * sched_idle: any thread may lower itself to SCHED_IDLE (no privilege);
 * a failure leaves the thread as it was, as a failed setpriority does. */
static void lower_priority(const weft_pool_t* pool) {
  int prio;
  if (pool->sched_idle) {
    struct sched_param sp;
    memset(&sp, 0, sizeof(sp));
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    return;
  }
  if (pool->nice_increment == 0)
    return;
  prio = pool->base_nice + pool->nice_increment;
  (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), prio > 19 ? 19 : prio);
}

/* The buffers and ports a task function added to its result are the
 * pool's from then on (the function has returned before they travel):
 * free the handles it added. `objs`: the handles, from before the commit
 * (which replaces them in the transfer list). */
static void free_handles(weft_msg_t* m, void** objs) {
  uint32_t i;
  for (i = 0; i < m->nxfer; i++) {
    if (m->xfers[i].kind == WEFT_EXT_BUFFER)
      weft_buffer_free(objs[i]);
    else if (m->xfers[i].kind == WEFT_EXT_PORT)
      weft_port_free(objs[i]);
  }
}

/* A result that does not travel (the task failed): free it and what was
 * added to it (before a commit the list holds the function's handles).
 * Thread: the worker. */
static void drop_out(weft_msg_t* m) {
  uint32_t i;
  if (m == NULL)
    return;
  if (m->state == WEFT__MSG_BUILDING) {
    for (i = 0; i < m->nxfer; i++) {
      weft__xfer_t* x = &m->xfers[i];
      if (x->kind == WEFT_EXT_BUFFER)
        weft_buffer_free(x->obj);
      else if (x->kind == WEFT_EXT_PORT)
        weft_port_free(x->obj);
      else
        continue; /* A shared buffer: the message's own reference. */
      x->obj = NULL; /* Not the message's to drop. */
    }
  }
  weft_msg_free(m);
}

/* Turn the task's result message into one that can travel: nil if nothing
 * was packed, one msgpack value, transfers committed (and the handles the
 * function added freed). Thread: the worker. */
static int seal_result(weft_msg_t* m) {
  void** objs = NULL;
  uint32_t i;
  int err;
  if (m->len == 0 && msgpack_pack_nil(&m->pk) != 0)
    return WEFT_ENOMEM;
  err = weft__msgpack_scan(m->data, m->len, &m->need);
  if (err != 0)
    return err;
  m->scanned = true;
  if (m->nxfer > 0) {
    err = weft__msg_check_transfers(m);
    if (err != 0)
      return err;
    objs = WEFT__FAILABLE(weft__xalloc(m->nxfer * sizeof(*objs)));
    if (objs == NULL)
      return WEFT_ENOMEM;
    for (i = 0; i < m->nxfer; i++)
      objs[i] = m->xfers[i].obj;
  }
  weft__msg_commit_transfers(m);
  if (objs != NULL) {
    free_handles(m, objs);
    weft__xfree(objs);
  }
  return 0;
}

/* The task left its worker: unlink it, and, outside a drain, let the
 * worker take more. Within a drain it is unlinked when the drain takes the
 * lock for the next task (one lock per task, not two). Thread: the
 * worker. */
static void finish(pworker_t* pw, weft_task_t* t) {
  weft_pool_t* pool = pw->pool;
  if (pw->in_drain) {
    t->dnext = pw->finished;
    pw->finished = t;
    return;
  }
  uv_mutex_lock(&pool->lock);
  wtask_unlink(pw, t);
  pw->active--;
  pool->running--;
  if (!pw->in_drain && pw->state == PW_FULL) {
    if (pool->qhead != NULL) {
      pw->state = PW_SCHED;
      weft__loop_schedule(pw->loop, &pw->ready);
    } else {
      if (pw->active == 0)
        pw->idle_since = uv_hrtime();
      avail_push(pool, pw);
    }
  }
  if (pool->closed && drained(pool))
    kick(pool);
  uv_mutex_unlock(&pool->lock);
  task_unref(t); /* The pool side's reference. */
}

/* The task's function returned `rc` (or weft_task_done() was called).
 * Thread: the worker. */
static void complete(pworker_t* pw, weft_task_t* t, int rc) {
  weft_msg_t* out = t->out;
  t->out = NULL;
  if (weft_should_stop()) {
    /* The worker is ending (terminate, exit, an error or a heap breach):
     * its exit settles the task with the reason; the teardown frees the
     * messages. */
    t->out = out;
    return;
  }
  t->t_end = uv_hrtime();
  atomic_fetch_add_explicit(&pw->pool->busy_ns, t->t_end - t->t_start,
                            memory_order_relaxed);
  if (rc > 0)
    rc = WEFT_EINVAL; /* Not a code a task may return. */
  if (rc == 0)
    rc = seal_result(out);
  if (rc != 0) {
    drop_out(out);
    out = NULL;
  }
  weft_msg_free(t->arg); /* On its heap's thread. */
  t->arg = NULL;
  settle(t, rc, out);
  finish(pw, t);
}

/* Run one task taken from the queue. Thread: the worker. */
static void run_task(pworker_t* pw, weft_task_t* t) {
  msgpack_zone* zone;
  int rc;
  if (atomic_load_explicit(&t->settled, memory_order_acquire)) {
    finish(pw, t); /* Cancelled before it started. */
    return;
  }
  t->t_start = uv_hrtime();
  /* Decode into the worker's own zone, reused from task to task (a zone of
   * its own per argument was an allocation per task); a task that goes
   * pending takes the zone with its argument. */
  if (pw->zone == NULL)
    pw->zone = WEFT__FAILABLE(msgpack_zone_new(WEFT__MSG_ZONE_CHUNK));
  zone = pw->zone;
  rc = weft__msg_decode(t->arg, zone); /* zone NULL: one of its own. */
  if (rc == 0) {
    t->arg->state = WEFT__MSG_OWNED;
    t->out = weft__msg_alloc(WEFT__MSG_DATA, 0);
    if (t->out == NULL)
      rc = WEFT_ENOMEM;
    else
      weft__msg_start_packer(t->out);
  }
  if (rc == 0) {
    WEFT__TRACE_BEGIN_DETAIL("pool task", t->entry->name);
    rc = t->entry->fn(&t->ctx, t->arg, t->out);
    WEFT__TRACE_END();
    if (rc == WEFT_TASK_PENDING) {
      t->pending = true;
      if (zone != NULL) {
        t->arg->zone = zone; /* Freed with the argument. */
        pw->zone = NULL;
      }
      return;
    }
  }
  complete(pw, t, rc);
  /* The argument is freed (or, if the worker is ending, its teardown frees
   * it before the zone). */
  if (zone != NULL && pw->zone == zone && t->arg == NULL)
    msgpack_zone_clear(zone);
}

static int drain_run(weft_loop_t* loop, weft__ready_t* r) {
  pworker_t* pw = weft__container_of(r, pworker_t, ready);
  weft_pool_t* pool = pw->pool;
  int n = 0;
  if (weft__loop_closing(loop))
    return 1;
  pw->in_drain = true;
  for (;;) {
    weft_task_t* t = NULL;
    weft_task_t* fin;
    /* Ending (terminate, exit, an error): its exit settles what it
     * holds. */
    bool stop = weft_should_stop();
    uv_mutex_lock(&pool->lock);
    fin = pw->finished;
    pw->finished = NULL;
    for (weft_task_t* x = fin; x != NULL; x = x->dnext) {
      wtask_unlink(pw, x);
      pw->active--;
      pool->running--;
    }
    if (stop) {
      /* Stays PW_SCHED: nobody schedules it again. */
    } else if (n == DRAIN_BATCH) {
      /* Give the loop a turn; the drain goes on after it (state stays
       * PW_SCHED, so nobody else schedules it). */
      weft__loop_schedule(loop, &pw->ready);
    } else if (pool->qhead != NULL && pw->active < pool->concurrent) {
      t = pool->qhead;
      queue_unlink(pool, t);
      t->where = AT_WORKER;
      t->worker = pw;
      t->prev = NULL;
      t->next = pw->tasks;
      if (pw->tasks != NULL)
        pw->tasks->prev = t;
      pw->tasks = t;
      pw->active++;
      pool->running++;
    } else {
      if (pw->active < pool->concurrent) {
        if (pw->active == 0)
          pw->idle_since = uv_hrtime();
        avail_push(pool, pw);
      } else {
        pw->state = PW_FULL;
      }
      if (pool->closed && drained(pool))
        kick(pool);
    }
    uv_mutex_unlock(&pool->lock);
    while (fin != NULL) {
      weft_task_t* x = fin;
      fin = x->dnext;
      x->dnext = NULL;
      task_unref(x); /* The pool side's reference. */
    }
    if (t == NULL)
      break;
    run_task(pw, t);
    n++;
  }
  pw->in_drain = false;
  return 1 + n;
}

/* The worker's loop is torn down. Thread: the worker. */
static void pw_teardown(weft__tracked_t* tr) {
  pworker_t* pw = weft__container_of(tr, pworker_t, tracked);
  weft_pool_t* pool = pw->pool;
  weft_task_t* t;
  weft__loop_untrack(tr);
  uv_mutex_lock(&pool->lock);
  if (pw->state == PW_AVAIL)
    avail_remove(pool, pw);
  pw->state = PW_DEAD; /* Nobody schedules it from now on. */
  /* The messages of the tasks it still holds are this thread's (charged
   * to its heap): free them here; its exit settles the tasks. */
  for (t = pw->tasks; t != NULL; t = t->next) {
    weft_msg_free(t->arg);
    t->arg = NULL;
    weft_msg_free(t->out);
    t->out = NULL;
  }
  uv_mutex_unlock(&pool->lock);
  if (pw->zone != NULL)
    msgpack_zone_free(pw->zone); /* After the arguments decoded into it. */
  pw->zone = NULL;
  current_pw = NULL;
}

static void worker_entry(weft_loop_t* loop, void* arg) {
  pworker_t* pw = arg;
  weft_pool_t* pool = pw->pool;
  current_pw = pw;
  lower_priority(pool);
  /* Parked on its loop between tasks until the pool retires it. */
  weft__loop_keepalive(loop, 1);
  pw->ready.run = drain_run;
  pw->tracked.teardown = pw_teardown;
  weft__loop_track(loop, &pw->tracked);
  uv_mutex_lock(&pool->lock);
  pw->loop = loop;
  pool->nstarting--;
  if (pw->state == PW_STARTING) {
    pw->state = PW_SCHED;
    weft__loop_schedule(loop, &pw->ready);
  }
  uv_mutex_unlock(&pool->lock);
}

/* ---- the pool thread ------------------------------------------------------ */

static void pw_unlink_all(weft_pool_t* pool, pworker_t* pw) {
  if (pw->all_prev != NULL)
    pw->all_prev->all_next = pw->all_next;
  else
    pool->all = pw->all_next;
  if (pw->all_next != NULL)
    pw->all_next->all_prev = pw->all_prev;
}

static void on_worker_error(weft_worker_t* w, int err, const char* text) {
  pworker_t* pw = weft_worker_get_data(w);
  (void)text;
  if (pw->err == 0)
    pw->err = err;
}

static void on_worker_exit(weft_worker_t* w, int code) {
  pworker_t* pw = weft_worker_get_data(w);
  weft_pool_t* pool = pw->pool;
  int err = pw->err != 0 ? pw->err : WEFT_ETERMINATED;
  weft_task_t* list;
  uint64_t now = uv_hrtime();
  (void)code;
  uv_mutex_lock(&pool->lock);
  if (pw->state == PW_AVAIL)
    avail_remove(pool, pw);
  if (pw->state == PW_STARTING)
    pool->nstarting--;
  if (pw->retiring)
    pool->nretiring--;
  pw->state = PW_DEAD;
  pool->nworkers--;
  pool->nlive--;
  pool->born_sum -= pw->born;
  pool->dead_alive_ns += now - pw->born;
  pw_unlink_all(pool, pw);
  list = pw->tasks;
  pw->tasks = NULL;
  /* Settle before the counts change (see the top of the file). */
  for (weft_task_t* t = list; t != NULL; t = t->next) {
    t->where = AT_NONE;
    pool->running--;
    settle(t, err, NULL);
  }
  uv_mutex_unlock(&pool->lock);
  while (list != NULL) {
    weft_task_t* t = list;
    list = t->next;
    t->next = t->prev = NULL;
    task_unref(t);
  }
  weft_worker_free(w); /* Released when this event returns. */
  weft__xfree(pw);
  maintain(pool);
}

static int spawn_one(weft_pool_t* pool) {
  weft_worker_opts_t o;
  char name[48];
  pworker_t* pw = weft__xalloc64(sizeof(*pw));
  int err;
  if (pw == NULL)
    return WEFT_ENOMEM;
  pw->pool = pool;
  pw->state = PW_STARTING;
  pw->born = uv_hrtime();
  (void)snprintf(name, sizeof(name), "%s-%u", pool->name,
                 pool->next_index++);
  memset(&o, 0, sizeof(o));
  o.name = name;
  o.arg = pw;
  o.max_heap_bytes = pool->max_heap;
  o.stack_size = pool->stack_size;
  o.events.error = on_worker_error;
  o.events.exit = on_worker_exit;
  o.user_data = pw;
  /* A lowered priority stays with the thread: give such workers threads
   * of their own, never cached ones that other workers reuse. */
  if (pool->nice_increment > 0 || pool->sched_idle)
    o.flags = WEFT_WORKER_FRESH_THREAD;
  /* On `all` before its thread starts: the worker may take a task at
   * once, and destroy must find that task on it (linked after the spawn,
   * a destroy in between missed the running task, which then settled with
   * ETERMINATED or its own result instead of ECANCELED). */
  uv_mutex_lock(&pool->lock);
  pw->all_prev = NULL;
  pw->all_next = pool->all;
  if (pool->all != NULL)
    pool->all->all_prev = pw;
  pool->all = pw;
  pool->nlive++;
  pool->born_sum += pw->born;
  uv_mutex_unlock(&pool->lock);
  err = weft_worker_spawn(&pw->w, pool->loop, worker_entry, &o);
  if (err != 0) {
    uv_mutex_lock(&pool->lock);
    pw_unlink_all(pool, pw);
    pool->nlive--;
    pool->born_sum -= pw->born;
    uv_mutex_unlock(&pool->lock);
    weft__xfree(pw);
    return err;
  }
  return 0;
}

/* Fail everything queued with `err` (no worker could start). Pool lock
 * held; returns the tasks to unref after the unlock. */
static weft_task_t* fail_queue(weft_pool_t* pool, int err) {
  weft_task_t* list = NULL;
  while (pool->qhead != NULL) {
    weft_task_t* t = pool->qhead;
    settle(t, err, NULL);
    queue_unlink(pool, t);
    t->next = list;
    list = t;
  }
  return list;
}

static void unref_list(weft_task_t* list) {
  while (list != NULL) {
    weft_task_t* t = list;
    list = t->next;
    t->next = NULL;
    task_unref(t);
  }
}

/* Thread: the pool thread (the only one that changes `all`, under the
 * lock, so it may walk it without). */
static void terminate_all(weft_pool_t* pool) {
  pworker_t* pw;
  for (pw = pool->all; pw != NULL; pw = pw->all_next) {
    if (!pw->terminated) {
      pw->terminated = true;
      weft_worker_terminate(pw->w, NULL);
    }
  }
}

static void sweep(weft_loop_t* loop, void* arg);

/* Check for idle workers to retire every quarter of the idle timeout, while
 * there are workers above min_threads (an idle pool at its minimum wakes
 * no thread). Thread: the pool thread. */
static void arm_sweep(weft_pool_t* pool) {
  bool want;
  uint64_t every = pool->idle_timeout_ms / 4;
  if (pool->sweep != 0)
    return;
  uv_mutex_lock(&pool->lock);
  want = !pool->closed && pool->nworkers > pool->min_threads;
  uv_mutex_unlock(&pool->lock);
  /* On failure (no memory) the next spawn tries again. */
  if (want &&
      weft_set_interval(pool->loop, every > 0 ? every : 1, sweep, pool,
                        &pool->sweep) != 0)
    pool->sweep = 0;
}

/* Spawn what is needed, retire at close, end the pool thread when all is
 * done. Thread: the pool thread. */
static void maintain(weft_pool_t* pool) {
  unsigned n = 0, i;
  bool closed, destroying, done = false;
  uv_mutex_lock(&pool->lock);
  closed = pool->closed;
  destroying = atomic_load_explicit(&pool->destroying, memory_order_relaxed);
  if (!destroying) {
    /* A graceful close still needs workers for what is queued (one may
     * have died). */
    while (pool->nworkers + n < pool->max_threads &&
           ((!closed && pool->nworkers + n < pool->min_threads) ||
            pool->queued > pool->nstarting + n))
      n++;
    pool->nworkers += n;
    pool->nstarting += n;
  }
  if (closed && drained(pool) && pool->nworkers == 0 &&
             atomic_load_explicit(&pool->deliveries, memory_order_seq_cst) ==
                 0 &&
             !pool->finished) {
    pool->finished = true;
    done = true;
  }
  uv_mutex_unlock(&pool->lock);
  for (i = 0; i < n; i++) {
    int err = spawn_one(pool);
    if (err != 0) {
      weft_task_t* list = NULL;
      if (pool->start_err == 0)
        pool->start_err = err;
      uv_mutex_lock(&pool->lock);
      pool->nworkers--;
      pool->nstarting--;
      if (pool->nworkers == 0)
        list = fail_queue(pool, err);
      uv_mutex_unlock(&pool->lock);
      unref_list(list);
    }
  }
  if (n > 0)
    arm_sweep(pool);
  if (closed) {
    bool idle;
    uv_mutex_lock(&pool->lock);
    idle = drained(pool);
    uv_mutex_unlock(&pool->lock);
    if (destroying || idle)
      terminate_all(pool);
  }
  if (done) {
    weft_clear_timer(pool->loop, pool->sweep);
    pool->sweep = 0;
    if (pool->holds_loop) {
      pool->holds_loop = false;
      weft__loop_keepalive(pool->loop, -1);
    }
  }
}

static int kick_run(weft_loop_t* loop, weft__ready_t* r) {
  weft_pool_t* pool = weft__container_of(r, weft_pool_t, kick);
  if (weft__loop_closing(loop))
    return 1;
  /* Popped: the next kick may push it again. Only here, not in
   * maintain(), which also runs while `kick` is still queued (after the
   * last callback, in a worker's exit): a kick then pushed it a second
   * time and the queue lost what followed it. */
  uv_mutex_lock(&pool->lock);
  pool->kick_pending = false;
  uv_mutex_unlock(&pool->lock);
  maintain(pool);
  return 1;
}

/* Retire workers above min_threads idle for idle_timeout_ms. */
static void sweep(weft_loop_t* loop, void* arg) {
  weft_pool_t* pool = arg;
  pworker_t* list = NULL;
  uint64_t now;
  bool more;
  uv_mutex_lock(&pool->lock);
  now = uv_hrtime(); /* Not before a worker's idle_since, set under it. */
  while (!pool->closed && pool->avail_tail != NULL &&
         pool->nworkers - pool->nretiring > pool->min_threads) {
    pworker_t* pw = pool->avail_tail;
    if (pw->active != 0 || now - pw->idle_since < pool->idle_ns)
      break;
    avail_remove(pool, pw);
    pw->state = PW_RETIRING;
    pw->retiring = true;
    pool->nretiring++;
    pw->anext = list;
    list = pw;
  }
  more = !pool->closed && pool->nworkers - pool->nretiring > pool->min_threads;
  uv_mutex_unlock(&pool->lock);
  if (!more) {
    weft_clear_timer(loop, pool->sweep); /* Armed again by a spawn. */
    pool->sweep = 0;
  }
  while (list != NULL) {
    pworker_t* pw = list;
    list = pw->anext;
    pw->anext = NULL;
    pw->terminated = true;
    weft_worker_terminate(pw->w, NULL);
  }
}

static void* pool_thread(void* arg) {
  weft_pool_t* pool = arg;
  weft_loop_t* loop;
  int err;
  char name[16];
  /* The kernel keeps 15 bytes of a thread's name. */
  memcpy(name, pool->name, sizeof(name) - 1);
  name[sizeof(name) - 1] = '\0';
  pthread_setname_np(pthread_self(), name);
  pool->self = pthread_self();
  lower_priority(pool);
  err = weft_loop_new(&loop);
  if (err != 0) {
    pool->start_err = err;
    uv_sem_post(&pool->started);
    return NULL;
  }
  pool->loop = loop;
  pool->kick.run = kick_run;
  weft__loop_keepalive(loop, 1);
  pool->holds_loop = true;
  maintain(pool); /* min_threads */
  uv_sem_post(&pool->started);
  weft_loop_run(loop);
  weft_loop_free(loop);
  return NULL;
}

/* ---- public: the pool ----------------------------------------------------- */

int weft_pool_new(weft_pool_t** out, const weft_pool_opts_t* opts) {
  weft_pool_opts_t o;
  weft_pool_t* pool;
  long cpus;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (o.max_threads == 0)
    o.max_threads = cpus > 0 ? (unsigned)cpus : 1;
  if (o.min_threads > o.max_threads || o.nice_increment < 0 ||
      o.nice_increment > 19)
    return WEFT_EINVAL;
  pool = WEFT__FAILABLE(weft__xalloc64(sizeof(*pool)));
  if (pool == NULL)
    return WEFT_ENOMEM;
  (void)snprintf(pool->name, sizeof(pool->name), "%s",
           o.name != NULL ? o.name : "weft-pool");
  pool->min_threads = o.min_threads;
  pool->max_threads = o.max_threads;
  if (o.max_queue == 0)
    pool->max_queue = (size_t)1024 * o.max_threads;
  else
    pool->max_queue = o.max_queue;
  pool->idle_timeout_ms = o.idle_timeout_ms != 0 ? o.idle_timeout_ms : 1000;
  pool->idle_ns = pool->idle_timeout_ms > UINT64_MAX / 1000000u
                      ? UINT64_MAX
                      : pool->idle_timeout_ms * 1000000u;
  pool->concurrent = o.concurrent_tasks != 0 ? o.concurrent_tasks : 1;
  pool->nice_increment = o.nice_increment;
  pool->sched_idle = o.sched_idle;
  errno = 0;
  pool->base_nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  if (errno != 0)
    pool->base_nice = 0;
  pool->max_heap = o.max_heap_bytes;
  pool->stack_size = o.stack_size;
  pool->created = uv_hrtime();
  atomic_init(&pool->refs, 1);
  atomic_init(&pool->destroying, false);
  atomic_init(&pool->deliveries, 0);
  weft__hist_init(&pool->wait_h);
  weft__hist_init(&pool->run_h);
  if (uv_mutex_init(&pool->lock) != 0) {
    weft__xfree(pool);
    return WEFT_ENOMEM;
  }
  if (uv_sem_init(&pool->started, 0) != 0) {
    uv_mutex_destroy(&pool->lock);
    weft__xfree(pool);
    return WEFT_ENOMEM;
  }
  if (pthread_create(&pool->thread, NULL, pool_thread, pool) != 0) {
    pool_unref(pool);
    return WEFT_ESPAWN;
  }
  uv_sem_wait(&pool->started);
  err = pool->start_err;
  if (err != 0) {
    if (pool->loop != NULL) {
      weft_pool_destroy(pool);
    } else {
      pthread_join(pool->thread, NULL);
      pool_unref(pool);
    }
    return err == WEFT_ENOMEM ? err : WEFT_ESPAWN;
  }
  *out = pool;
  return 0;
}

int weft_pool_register(weft_pool_t* pool,
                       const char* name,
                       weft_task_fn fn,
                       void* data) {
  entry_t* e;
  size_t len;
  if (pool == NULL || name == NULL || fn == NULL)
    return WEFT_EINVAL;
  len = strlen(name);
  e = WEFT__FAILABLE(malloc(sizeof(*e) + len + 1));
  if (e == NULL)
    return WEFT_ENOMEM;
  e->fn = fn;
  e->data = data;
  memcpy(e->name, name, len + 1);
  uv_mutex_lock(&pool->lock);
  for (entry_t* x = pool->entries; x != NULL; x = x->next) {
    if (strcmp(x->name, name) == 0) {
      uv_mutex_unlock(&pool->lock);
      free(e);
      return WEFT_EBUSY;
    }
  }
  e->next = pool->entries;
  pool->entries = e;
  uv_mutex_unlock(&pool->lock);
  return 0;
}

/* Pool lock held. */
static const entry_t* lookup(weft_pool_t* pool, const char* name) {
  for (const entry_t* e = pool->entries; e != NULL; e = e->next)
    if (strcmp(e->name, name) == 0)
      return e;
  return NULL;
}

/* Queue `*msg` (BUILDING, checked) as task `name`. */
static int submit(weft_pool_t* pool,
                  const char* name,
                  weft_msg_t** msg,
                  weft_task_done_cb cb,
                  void* ctx,
                  weft_task_t** out) {
  weft_task_t* t;
  weft_loop_t* loop = cb != NULL ? weft_loop_current() : NULL;
  weft_msg_t* m = *msg;
  int err;
  if (m->len == 0 && msgpack_pack_nil(&m->pk) != 0)
    return WEFT_ENOMEM;
  if (m->len > WEFT_MSG_DEFAULT_LIMIT)
    return WEFT_EMSGSIZE;
  err = weft__msgpack_scan(m->data, m->len, &m->need);
  if (err != 0)
    return err;
  m->scanned = true;
  if (m->nxfer > 0) {
    err = weft__msg_check_transfers(m);
    if (err != 0)
      return err;
  }
  t = WEFT__FAILABLE(weft__xalloc(sizeof(*t)));
  if (t == NULL)
    return WEFT_ENOMEM;
  memset(t, 0, sizeof(*t));
  t->pool = pool;
  t->id = atomic_fetch_add_explicit(&next_task_id, 1, memory_order_relaxed);
  atomic_init(&t->refs, 1 + (out != NULL ? 1 : 0));
  t->ctx.task = t;
  t->has_future = out != NULL;
  t->cb = cb;
  t->cb_ctx = ctx;
  t->loop = loop;
  t->ready.run = deliver_run;
  atomic_init(&t->dstate, DS_WAIT);
  atomic_init(&t->canceled, false);
  atomic_init(&t->settled, 0);
  atomic_init(&t->done, DONE_NO);
  t->t_submit = uv_hrtime();

  /* Taken before the backend sees the task: it may settle and release it
   * on another thread before this call returns. */
  atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
  uv_mutex_lock(&pool->lock);
  if (pool->closed)
    err = WEFT_ECLOSED;
  else if (pool->backend != NULL) {
    /* And one for this call, which still writes to the task after the
     * backend may have settled and released it. */
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    err = pool->backend->submit(pool->be, t, name, m);
  }
  else if ((t->entry = lookup(pool, name)) == NULL)
    err = WEFT_ENOTASK;
  else if (pool->queued >= pool->max_queue)
    err = WEFT_EQUEUEFULL;
  if (err != 0) {
    if (err == WEFT_EQUEUEFULL)
      atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
    uv_mutex_unlock(&pool->lock);
    weft__xfree(t);
    atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_relaxed);
    return err;
  }
  /* Accepted: from here on nothing fails. */
  atomic_fetch_add_explicit(&pool->submitted, 1, memory_order_relaxed);
  weft__msg_commit_transfers(m);
  t->arg = m;
  *msg = NULL;
  if (pool->backend != NULL) {
    uv_mutex_unlock(&pool->lock); /* The backend holds the task. */
    goto accepted;
  }
  t->where = AT_QUEUE;
  t->next = NULL;
  t->prev = pool->qtail;
  if (pool->qtail != NULL)
    pool->qtail->next = t;
  else
    pool->qhead = t;
  pool->qtail = t;
  pool->queued++;
  WEFT__TRACE_COUNTER("pool queue", "tasks", pool->queued);
  if (pool->avail != NULL) {
    pworker_t* pw = pool->avail;
    avail_remove(pool, pw);
    pw->state = PW_SCHED;
    weft__loop_schedule(pw->loop, &pw->ready);
  } else if (pool->nworkers < pool->max_threads &&
             pool->queued > pool->nstarting) {
    kick(pool);
  }
  uv_mutex_unlock(&pool->lock);
accepted:
  if (loop != NULL) {
    /* The callback's delivery keeps the submitter's loop alive, and the
     * loop's teardown (a worker that ends) must not leave it dangling. */
    weft__loop_keepalive(loop, 1);
    t->tracked.teardown = task_loop_gone;
    weft__loop_track(loop, &t->tracked);
  }
  if (out != NULL)
    *out = t;
  if (pool->backend != NULL)
    task_unref(t); /* This call's. */
  return 0;
}

int weft_pool_submit(weft_pool_t* pool,
                     const char* name,
                     const void* bytes,
                     size_t len,
                     weft_task_done_cb cb,
                     void* ctx,
                     weft_task_t** out) {
  weft_msg_t* m;
  int err;
  if (out != NULL)
    *out = NULL;
  if (pool == NULL || name == NULL || (bytes == NULL && len > 0))
    return WEFT_EINVAL;
  if (len > WEFT_MSG_DEFAULT_LIMIT)
    return WEFT_EMSGSIZE;
  m = WEFT__FAILABLE(weft__msg_alloc(WEFT__MSG_DATA, len));
  if (m == NULL)
    return WEFT_ENOMEM;
  weft__msg_start_packer(m);
  if (len > 0)
    memcpy(m->data, bytes, len);
  m->len = len;
  err = submit(pool, name, &m, cb, ctx, out);
  if (err != 0)
    weft_msg_free(m);
  return err;
}

int weft_pool_submit_msg(weft_pool_t* pool,
                         const char* name,
                         weft_msg_t** msg,
                         weft_task_done_cb cb,
                         void* ctx,
                         weft_task_t** out) {
  if (out != NULL)
    *out = NULL;
  if (pool == NULL || name == NULL || msg == NULL || *msg == NULL ||
      (*msg)->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  return submit(pool, name, msg, cb, ctx, out);
}

int weft_pool_stats(weft_pool_t* pool, weft_pool_stats_t* out) {
  uint64_t now = uv_hrtime(), alive;
  if (pool == NULL || out == NULL)
    return WEFT_EINVAL;
  memset(out, 0, sizeof(*out));
  uv_mutex_lock(&pool->lock);
  out->queued = pool->queued;
  out->running = pool->running;
  if (pool->backend != NULL)
    pool->backend->counts(pool->be, &out->queued, &out->running);
  out->threads = pool->nworkers;
  alive = pool->dead_alive_ns + (uint64_t)pool->nlive * now - pool->born_sum;
  uv_mutex_unlock(&pool->lock);
  out->submitted = atomic_load_explicit(&pool->submitted, memory_order_relaxed);
  out->completed = atomic_load_explicit(&pool->completed, memory_order_relaxed);
  out->failed = atomic_load_explicit(&pool->failed, memory_order_relaxed);
  out->canceled = atomic_load_explicit(&pool->canceled, memory_order_relaxed);
  out->rejected = atomic_load_explicit(&pool->rejected, memory_order_relaxed);
  out->wait_p50_us = weft__hist_quantile(&pool->wait_h, 0.50) / 1000.0;
  out->wait_p99_us = weft__hist_quantile(&pool->wait_h, 0.99) / 1000.0;
  out->run_p50_us = weft__hist_quantile(&pool->run_h, 0.50) / 1000.0;
  out->run_p99_us = weft__hist_quantile(&pool->run_h, 0.99) / 1000.0;
  if (alive > 0) {
    double u =
        (double)atomic_load_explicit(&pool->busy_ns, memory_order_relaxed) /
        (double)alive;
    out->utilization = u > 1 ? 1 : u;
  }
  return 0;
}

int weft__pool_new_backend(weft_pool_t** out,
                           const weft_pool_opts_t* opts,
                           const weft__pool_backend_t* backend,
                           void* be) {
  weft_pool_opts_t o;
  int err;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  /* The pool thread runs loop-less submitters' callbacks and the
   * backend's timers; no worker is ever started (nothing is queued). */
  o.min_threads = 0;
  o.max_threads = 1;
  if (o.max_queue == 0)
    o.max_queue = 1024;
  err = weft_pool_new(out, &o);
  if (err != 0)
    return err;
  (*out)->backend = backend;
  (*out)->be = be;
  return 0;
}

weft_loop_t* weft__pool_loop(const weft_pool_t* pool) {
  return pool->loop;
}

size_t weft__pool_max_queue(const weft_pool_t* pool) {
  return pool->max_queue;
}

unsigned weft__pool_capacity(const weft_pool_t* pool) {
  return pool->max_threads * pool->concurrent;
}

bool weft__pool_settle_bytes(weft_task_t* t,
                             int status,
                             const void* bytes,
                             size_t len) {
  weft_msg_t* m = NULL;
  if (status == 0) {
    m = WEFT__FAILABLE(weft__msg_alloc(WEFT__MSG_DATA, len));
    if (m == NULL) {
      status = WEFT_ENOMEM;
    } else {
      memcpy(m->data, bytes, len);
      m->len = len;
      status = weft__msgpack_scan(m->data, m->len, &m->need);
      m->scanned = status == 0;
      weft__msg_commit_transfers(m); /* None: QUEUED, as a sealed result. */
    }
    if (status != 0) {
      weft_msg_free(m);
      m = NULL;
    }
  }
  return settle(t, status, m);
}

void weft__pool_task_release(weft_task_t* t) {
  task_unref(t);
}

bool weft__pool_on_thread(const weft_pool_t* pool) {
  return pthread_equal(pthread_self(), pool->self) ||
         (current_pw != NULL && current_pw->pool == pool);
}

static int pool_end(weft_pool_t* pool, bool destroy) {
  weft_task_t* list = NULL;
  if (pool == NULL)
    return WEFT_EINVAL;
  if (weft__pool_on_thread(pool))
    return WEFT_EWRONGTHREAD;
  uv_mutex_lock(&pool->lock);
  pool->closed = true;
  if (pool->backend != NULL) {
    /* Every task settles and leaves the backend in end(); then the pool
     * thread ends as for a pool with nothing queued or running. */
    uv_mutex_unlock(&pool->lock);
    pool->backend->end(pool->be, destroy);
    uv_mutex_lock(&pool->lock);
  } else if (destroy) {
    pworker_t* pw;
    atomic_store_explicit(&pool->destroying, true, memory_order_relaxed);
    list = fail_queue(pool, WEFT_ECANCELED);
    /* Running tasks: flagged and settled now; their workers are
     * terminated by the pool thread. */
    for (pw = pool->all; pw != NULL; pw = pw->all_next) {
      for (weft_task_t* t = pw->tasks; t != NULL; t = t->next) {
        atomic_store_explicit(&t->canceled, true, memory_order_relaxed);
        settle(t, WEFT_ECANCELED, NULL);
      }
    }
  }
  kick(pool);
  uv_mutex_unlock(&pool->lock);
  unref_list(list);
  pthread_join(pool->thread, NULL);
  pool_unref(pool);
  return 0;
}

int weft_pool_close(weft_pool_t* pool) {
  return pool_end(pool, false);
}

int weft_pool_destroy(weft_pool_t* pool) {
  return pool_end(pool, true);
}

/* ---- public: the future --------------------------------------------------- */

int weft_task_wait(weft_task_t* t, int64_t timeout_ms) {
  uint64_t t0, deadline = 0;
  bool parked = false;
  int i;
  if (t == NULL)
    return WEFT_EINVAL;
  /* acquire: pairs with the settler's release of DONE_YES. */
  if (atomic_load_explicit(&t->done, memory_order_acquire) == DONE_YES)
    return 0;
  if (timeout_ms == 0)
    return WEFT_ETIMEDOUT;
  t0 = uv_hrtime();
  /* Past about 292 years (in ns) the deadline would wrap: no limit. */
  if (timeout_ms > INT64_MAX / 1000000 - (int64_t)(t0 / 1000000))
    timeout_ms = -1;
  if (timeout_ms > 0)
    deadline = t0 + (uint64_t)timeout_ms * 1000000u;
  for (i = 0; i < WAIT_PAUSES; i++) {
    if (atomic_load_explicit(&t->done, memory_order_acquire) == DONE_YES)
      return 0;
    weft__cpu_relax();
  }
  for (;;) {
    uint64_t now = uv_hrtime();
    uint32_t v = atomic_load_explicit(&t->done, memory_order_acquire);
    int64_t left = -1;
    if (v == DONE_YES) {
      if (!parked && wait_spin_ns < WAIT_SPIN_NS)
        wait_spin_ns *= 2; /* The spin answered: spin longer next time. */
      return 0;
    }
    if (timeout_ms > 0) {
      if (now >= deadline)
        return WEFT_ETIMEDOUT;
      left = (int64_t)(deadline - now);
    }
    if (now - t0 < wait_spin_ns) {
      sched_yield();
      continue;
    }
    if (!parked) {
      parked = true;
      if (wait_spin_ns > WAIT_SPIN_MIN_NS)
        wait_spin_ns /= 2; /* It had to park: spin less next time. */
    }
    if (v == DONE_NO) {
      uint32_t expected = DONE_NO;
      /* acquire on failure: it may have become DONE_YES. */
      if (!atomic_compare_exchange_strong_explicit(
              &t->done, &expected, DONE_NO_WAITERS_PARKED,
              memory_order_acq_rel, memory_order_acquire))
        continue;
    }
    weft__futex_wait(&t->done, DONE_NO_WAITERS_PARKED, left);
  }
}

int weft_task_status(const weft_task_t* t) {
  if (t == NULL)
    return WEFT_EINVAL;
  if (atomic_load_explicit(&t->done, memory_order_acquire) != DONE_YES)
    return WEFT_EAGAIN;
  return t->status;
}

int weft_task_take_result(weft_task_t* t, weft_msg_t** out) {
  weft_msg_t* m;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (t == NULL)
    return WEFT_EINVAL;
  if (atomic_load_explicit(&t->done, memory_order_acquire) != DONE_YES)
    return WEFT_EAGAIN;
  if (t->status != 0)
    return t->status;
  if (t->cb != NULL || t->taken)
    return WEFT_EINVAL;
  t->taken = true;
  m = t->result;
  t->result = NULL;
  return weft__msg_own(m, NULL, out);
}

int weft_task_cancel(weft_task_t* t) {
  weft_pool_t* pool;
  bool won;
  if (t == NULL)
    return WEFT_EINVAL;
  if (atomic_load_explicit(&t->settled, memory_order_acquire))
    return WEFT_EINVAL;
  pool = t->pool; /* Alive: the task holds a reference. */
  uv_mutex_lock(&pool->lock);
  atomic_store_explicit(&t->canceled, true, memory_order_relaxed);
  won = settle(t, WEFT_ECANCELED, NULL);
  if (won && t->where == AT_QUEUE) {
    queue_unlink(pool, t);
    if (pool->closed && drained(pool))
      kick(pool);
    uv_mutex_unlock(&pool->lock);
    task_unref(t); /* The queue's reference; the caller holds another. */
    return 0;
  }
  uv_mutex_unlock(&pool->lock);
  if (won && pool->backend != NULL)
    pool->backend->cancel(pool->be, t); /* Tell where it runs. */
  return won ? 0 : WEFT_EINVAL;
}

uint64_t weft_task_id(const weft_task_t* t) {
  return t == NULL ? 0 : t->id;
}

void weft_task_free(weft_task_t* t) {
  if (t != NULL)
    task_unref(t);
}

/* ---- public: inside a task ------------------------------------------------ */

bool weft_task_canceled(const weft_task_ctx_t* ctx) {
  if (ctx == NULL)
    return false;
  return atomic_load_explicit(&ctx->task->canceled, memory_order_relaxed) ||
         atomic_load_explicit(&ctx->task->pool->destroying,
                              memory_order_relaxed);
}

void* weft_task_data(const weft_task_ctx_t* ctx) {
  return ctx == NULL ? NULL : ctx->task->entry->data;
}

int weft_task_done(weft_task_ctx_t* ctx, int status) {
  weft_task_t* t;
  if (ctx == NULL)
    return WEFT_EINVAL;
  t = ctx->task;
  if (!t->pending || current_pw == NULL || t->worker != current_pw)
    return WEFT_EINVAL;
  t->pending = false;
  if (status > 0)
    status = WEFT_EINVAL;
  complete(current_pw, t, status);
  return 0;
}
