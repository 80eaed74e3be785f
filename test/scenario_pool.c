/* scenario_pool.c - the pool under concurrency (plain C so that TSan runs
 * it): many threads submit at once, with and without loops (plain threads
 * with futures, threads with loops and callbacks, weft workers); futures
 * are waited from other threads than their submitter's; cancels race
 * completions; a submitter's loop ends before its callback ran; destroy
 * races submits made inside the pool (by tasks and by callbacks on the pool
 * thread) and cancels from outside. Every task must settle exactly once
 * with a result that checks out. Exits 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "internal.h" /* weft__failpoint_*() */
#include "support.h"

#define PLAIN_THREADS 3
#define LOOP_THREADS 2
#define WORKERS 2
#define PER_THREAD (UNDER_TSAN ? 300 : 2000)

static weft_pool_t* pool;

/* --- Tasks ----------------------------------------------------------------- */

/* [n] -> n * 2 + 1 */
static int task_twice(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  int64_t v = msg_int(arg);
  (void)ctx;
  if (v == INT64_MIN)
    v = 0; /* nil */
  return msgpack_pack_int64(weft_msg_packer(res), v * 2 + 1) == 0 ? 0
                                                                   : WEFT_ENOMEM;
}

static atomic_int gate;

/* Waits for `gate`, or a cancel, or its worker's end. */
static int task_block(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)arg;
  (void)res;
  while (!atomic_load(&gate)) {
    if (weft_task_canceled(ctx) || weft_should_stop())
      return WEFT_ECANCELED;
    uv_sleep(1);
  }
  return 0;
}

/* --- Submitters without a loop: futures ----------------------------------- */

static atomic_llong plain_sum;

static void* plain_thread(void* arg) {
  int64_t base = (int64_t)(intptr_t)arg * 1000000;
  weft_task_t* t[64];
  int n = 0;
  for (int i = 0; i < PER_THREAD; i++) {
    packed_t p = packed_int(base + i);
    int err;
    do {
      err = weft_pool_submit(pool, "twice", p.data, p.len, NULL, NULL, &t[n]);
      if (err == WEFT_EQUEUEFULL)
        uv_sleep(1);
    } while (err == WEFT_EQUEUEFULL);
    CHECK(err == 0, "submit: %s", weft_err_name(err));
    if (++n == 64 || i == PER_THREAD - 1) {
      for (int j = 0; j < n; j++) {
        weft_msg_t* m = NULL;
        CHECK(weft_task_wait(t[j], 60000) == 0, "wait");
        CHECK(weft_task_take_result(t[j], &m) == 0, "take");
        atomic_fetch_add(&plain_sum, msg_int(m));
        weft_msg_free(m);
        weft_task_free(t[j]);
      }
      n = 0;
    }
  }
  return NULL;
}

/* --- Submitters with a loop: callbacks ------------------------------------- */

typedef struct {
  weft_loop_t* loop;
  int64_t base;
  int submitted;
  int calls;
  int64_t sum;
} looper_t;

static void looper_done(void* ctx, int status, weft_msg_t* result);

static void looper_submit(looper_t* l) {
  packed_t p = packed_int(l->base + l->submitted);
  int err = weft_pool_submit(pool, "twice", p.data, p.len, looper_done, l,
                             NULL);
  CHECK(err == 0, "loop submit: %s", weft_err_name(err));
  l->submitted++;
}

static void looper_done(void* ctx, int status, weft_msg_t* result) {
  looper_t* l = ctx;
  CHECK(weft_loop_current() == l->loop, "callback on another thread");
  CHECK(status == 0, "status %s", weft_err_name(status));
  l->calls++;
  l->sum += msg_int(result);
  /* Keep 16 in flight. */
  if (l->submitted < PER_THREAD)
    looper_submit(l);
}

static void looper_start(looper_t* l) {
  for (int i = 0; i < 16 && l->submitted < PER_THREAD; i++)
    looper_submit(l);
}

static void* loop_thread(void* arg) {
  looper_t* l = arg;
  CHECK(weft_loop_new(&l->loop) == 0, "loop");
  looper_start(l);
  CHECK(weft_loop_run(l->loop) == 0, "run");
  CHECK(weft_loop_free(l->loop) == 0, "free loop");
  return NULL;
}

/* Weft workers submit from their own loops. */
static looper_t worker_loopers[WORKERS];

static void worker_entry(weft_loop_t* loop, void* arg) {
  looper_t* l = arg;
  l->loop = loop;
  looper_start(l);
}

static int64_t expected_sum(int64_t base, int n) {
  int64_t s = 0;
  for (int i = 0; i < n; i++)
    s += (base + i) * 2 + 1;
  return s;
}

static void many_submitters(void) {
  pthread_t plain[PLAIN_THREADS], loops[LOOP_THREADS];
  looper_t loopers[LOOP_THREADS];
  weft_loop_t* main_loop = new_loop();
  weft_worker_t* w[WORKERS];
  int64_t expect = 0;
  memset(loopers, 0, sizeof(loopers));
  memset(worker_loopers, 0, sizeof(worker_loopers));
  for (int i = 0; i < PLAIN_THREADS; i++) {
    pthread_create(&plain[i], NULL, plain_thread, (void*)(intptr_t)(i + 1));
    expect += expected_sum((int64_t)(i + 1) * 1000000, PER_THREAD);
  }
  for (int i = 0; i < LOOP_THREADS; i++) {
    loopers[i].base = (int64_t)(i + 10) * 1000000;
    pthread_create(&loops[i], NULL, loop_thread, &loopers[i]);
  }
  for (int i = 0; i < WORKERS; i++) {
    weft_worker_opts_t o = {.arg = &worker_loopers[i]};
    worker_loopers[i].base = (int64_t)(i + 20) * 1000000;
    CHECK(weft_worker_spawn(&w[i], main_loop, worker_entry, &o) == 0,
          "spawn");
  }
  run_loop(main_loop); /* Until the workers' loops end. */
  for (int i = 0; i < WORKERS; i++)
    weft_worker_free(w[i]);
  free_loop(main_loop);
  for (int i = 0; i < PLAIN_THREADS; i++)
    pthread_join(plain[i], NULL);
  for (int i = 0; i < LOOP_THREADS; i++)
    pthread_join(loops[i], NULL);
  CHECK(atomic_load(&plain_sum) == expect, "plain sum");
  for (int i = 0; i < LOOP_THREADS; i++) {
    CHECK(loopers[i].calls == PER_THREAD, "loop calls %d", loopers[i].calls);
    CHECK(loopers[i].sum == expected_sum(loopers[i].base, PER_THREAD),
          "loop sum");
  }
  for (int i = 0; i < WORKERS; i++) {
    CHECK(worker_loopers[i].calls == PER_THREAD, "worker calls %d",
          worker_loopers[i].calls);
    CHECK(worker_loopers[i].sum ==
              expected_sum(worker_loopers[i].base, PER_THREAD),
          "worker sum");
  }
}

/* --- Futures waited from other threads; cancels racing completion -------- */

/* Submit, waiting out backpressure. */
static void submit_retry(const char* name, int64_t v, weft_task_done_cb cb,
                         void* ctx, weft_task_t** out) {
  packed_t p = packed_int(v);
  int err;
  while ((err = weft_pool_submit(pool, name, p.data, p.len, cb, ctx, out)) ==
         WEFT_EQUEUEFULL)
    uv_sleep(1);
  CHECK(err == 0, "submit: %s", weft_err_name(err));
}

#define HANDOFF 256
static weft_task_t* handed[HANDOFF];
static atomic_int handed_n;
static atomic_int waited_ok, waited_canceled;

/* Takes every other future from `handed` (odd or even), cancels some of
 * them (racing the worker), waits, checks, frees. */
static void* waiter_thread(void* arg) {
  int parity = (int)(intptr_t)arg;
  for (int i = parity; i < HANDOFF; i += 2) {
    weft_task_t* t;
    while (atomic_load(&handed_n) <= i)
      uv_sleep(1);
    t = handed[i];
    if (i % 3 == 0)
      (void)weft_task_cancel(t); /* 0, or EINVAL once it settled. */
    CHECK(weft_task_wait(t, 60000) == 0, "wait");
    int st = weft_task_status(t);
    if (st == 0) {
      weft_msg_t* m = NULL;
      CHECK(weft_task_take_result(t, &m) == 0, "take");
      CHECK(msg_int(m) == i * 2 + 1, "value");
      weft_msg_free(m);
      atomic_fetch_add(&waited_ok, 1);
    } else {
      CHECK(st == WEFT_ECANCELED, "status %s", weft_err_name(st));
      CHECK(weft_task_cancel(t) == WEFT_EINVAL, "cancel twice");
      atomic_fetch_add(&waited_canceled, 1);
    }
    weft_task_free(t);
  }
  return NULL;
}

static atomic_int cb_calls[HANDOFF];
static void count_cb(void* ctx, int status, weft_msg_t* result) {
  int i = (int)(intptr_t)ctx;
  (void)result;
  CHECK(status == 0 || status == WEFT_ECANCELED, "cb status");
  atomic_fetch_add(&cb_calls[i], 1);
}

static void futures_and_cancels(void) {
  pthread_t th[2];
  weft_pool_stats_t before, after;
  weft_task_t* with_cb[HANDOFF];
  CHECK(weft_pool_stats(pool, &before) == 0, "stats");
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, waiter_thread, (void*)(intptr_t)i);
  for (int i = 0; i < HANDOFF; i++) {
    submit_retry("twice", i, NULL, NULL, &handed[i]);
    atomic_store(&handed_n, i + 1);
  }
  /* The same race with callbacks on the pool thread (no loop here): each
   * runs exactly once, whether the cancel or the worker wins. */
  for (int i = 0; i < HANDOFF; i++) {
    submit_retry("twice", i, count_cb, (void*)(intptr_t)i, &with_cb[i]);
    if (i % 2 == 0)
      (void)weft_task_cancel(with_cb[i]);
  }
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < HANDOFF; i++) {
    CHECK(weft_task_wait(with_cb[i], 60000) == 0, "wait cb");
    weft_task_free(with_cb[i]);
  }
  for (int i = 0; i < HANDOFF; i++)
    WAIT_UNTIL(atomic_load(&cb_calls[i]) == 1, 20000);
  uv_sleep(5);
  for (int i = 0; i < HANDOFF; i++)
    CHECK(atomic_load(&cb_calls[i]) == 1, "callback %d ran %d times", i,
          atomic_load(&cb_calls[i]));
  CHECK(atomic_load(&waited_ok) + atomic_load(&waited_canceled) == HANDOFF,
        "every future settled");
  CHECK(weft_pool_stats(pool, &after) == 0, "stats");
  CHECK(after.completed + after.canceled - before.completed -
                before.canceled ==
            2 * HANDOFF,
        "settled once each");
  CHECK(after.failed == before.failed, "nothing failed");
}

/* --- A submitter whose loop ends before its callback ----------------------- */

static atomic_int gone_cb_calls;
static void gone_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)status;
  (void)result;
  atomic_fetch_add(&gone_cb_calls, 1);
}

static void gone_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_pool_submit(pool, "block", NULL, 0, gone_cb, NULL, NULL) == 0,
        "submit");
  CHECK(weft_pool_submit(pool, "twice", NULL, 0, gone_cb, NULL, NULL) == 0,
        "submit");
  weft_worker_exit(0); /* Its loop ends with both callbacks pending. */
}

static void loop_gone(void) {
  weft_loop_t* main_loop = new_loop();
  weft_worker_t* w[4];
  atomic_store(&gate, 0);
  for (int i = 0; i < 4; i++)
    CHECK(weft_worker_spawn(&w[i], main_loop, gone_entry, NULL) == 0,
          "spawn");
  run_loop(main_loop);
  atomic_store(&gate, 1); /* Settles after the loops are gone. */
  for (int i = 0; i < 4; i++)
    weft_worker_free(w[i]);
  free_loop(main_loop);
}

/* --- Destroy racing submits -------------------------------------------------- */

static weft_pool_t* dpool;
static atomic_int fan_submits, fan_refused, chain_calls;

/* Submits two more of itself: a tree that grows until the pool refuses. */
static int task_fan(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)arg;
  (void)res;
  for (int i = 0; i < 2 && !weft_task_canceled(ctx); i++) {
    int err = weft_pool_submit(dpool, "fan", NULL, 0, NULL, NULL, NULL);
    if (err == 0)
      atomic_fetch_add(&fan_submits, 1);
    else
      atomic_fetch_add(&fan_refused, 1);
  }
  uv_sleep(1);
  return 0;
}

/* On the pool thread (no loop at the submitter): submit the next link. */
static void chain_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)result;
  atomic_fetch_add(&chain_calls, 1);
  if (status == 0)
    (void)weft_pool_submit(dpool, "twice", NULL, 0, chain_cb, NULL, NULL);
}

/* Cancels half the futures in `handed` while the pool is destroyed. */
static void* waiter_thread_destroy(void* arg) {
  int parity = (int)(intptr_t)arg;
  for (int i = parity; i < 64; i += 2) {
    (void)weft_task_cancel(handed[i]);
    CHECK(weft_task_wait(handed[i], 60000) == 0, "wait");
  }
  return NULL;
}

static void destroy_races(void) {
  weft_pool_opts_t o = {.max_threads = 3, .max_queue = 5000};
  weft_task_t* fut[64];
  pthread_t th[2];
  CHECK(weft_pool_new(&dpool, &o) == 0, "pool");
  CHECK(weft_pool_register(dpool, "fan", task_fan, NULL) == 0, "reg");
  CHECK(weft_pool_register(dpool, "twice", task_twice, NULL) == 0, "reg");
  CHECK(weft_pool_register(dpool, "block", task_block, NULL) == 0, "reg");
  atomic_store(&gate, 0);
  for (int i = 0; i < 4; i++)
    CHECK(weft_pool_submit(dpool, "twice", NULL, 0, chain_cb, NULL, NULL) ==
              0,
          "chain");
  CHECK(weft_pool_submit(dpool, "fan", NULL, 0, NULL, NULL, NULL) == 0, "fan");
  for (int i = 0; i < 64; i++)
    CHECK(weft_pool_submit(dpool, i % 2 ? "block" : "fan", NULL, 0, NULL, NULL,
                           &fut[i]) == 0,
          "submit");
  /* Cancels from two threads race the destroy. */
  memcpy(handed, fut, sizeof(fut));
  atomic_store(&handed_n, 64);
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, waiter_thread_destroy, (void*)(intptr_t)i);
  uv_sleep(20);
  CHECK(weft_pool_destroy(dpool) == 0, "destroy");
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < 64; i++) {
    int st = weft_task_status(fut[i]);
    CHECK(st == 0 || st == WEFT_ECANCELED, "status %s", weft_err_name(st));
    weft_task_free(fut[i]);
  }
  atomic_store(&gate, 1);
}

/* --- A kick while the pool thread's wake-up is queued -----------------------
 * The pool thread's wake-up item (its "kick") may be on its loop's ready
 * queue once at a time. A maintain() run outside that item (after the last
 * callback on the pool thread, or in a worker's exit event) used to clear
 * the flag that says so: the next kick pushed the item again while it was
 * still linked, and the queue lost what had been pushed after it (the CI
 * hang of alloc_round: a worker's exit, queued behind the kick on its
 * port's node, never ran, and close waited for that worker forever). The
 * steps below build that order every time, on the pool thread: callback A
 * (the last one counted for the pool thread) leaves [U, kick, X] queued
 * and returns (maintain); U's callback submits, which kicks again; X's
 * callback must still run. */
static weft_pool_t* kpool;
static atomic_int kq_started[2], kq_open[2];
static atomic_int kq_a_calls, kq_u_calls, kq_x_calls;

/* [i]: says it started, then waits for kq_open[i] (or its worker's end). */
static int task_gated(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  int64_t i = msg_int(arg);
  (void)res;
  atomic_store(&kq_started[i], 1);
  while (!atomic_load(&kq_open[i])) {
    if (weft_task_canceled(ctx) || weft_should_stop())
      return WEFT_ECANCELED;
    uv_sleep(1);
  }
  return 0;
}

static void kq_wait_flag(atomic_int* flag, const char* what) {
  for (int ms = 0; !atomic_load(flag); ms++) {
    CHECK(ms < 30000, "%s: not within 30 s", what);
    uv_sleep(1);
  }
}

/* Nothing queued or running: the one worker is on the available list (it
 * counts a task as running until it is back there). */
static void kq_wait_idle(void) {
  for (int ms = 0;; ms++) {
    weft_pool_stats_t st;
    CHECK(weft_pool_stats(kpool, &st) == 0, "stats");
    if (st.queued == 0 && st.running == 0)
      return;
    CHECK(ms < 30000, "worker not idle within 30 s");
    uv_sleep(1);
  }
}

static void kq_submit(const char* name, int64_t v, weft_task_done_cb cb) {
  packed_t p = packed_int(v);
  int err = weft_pool_submit(kpool, name, p.data, p.len, cb, NULL, NULL);
  CHECK(err == 0, "submit %s: %s", name, weft_err_name(err));
}

static void kq_x_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)result;
  CHECK(status == 0, "X: %s", weft_err_name(status));
  atomic_fetch_add(&kq_x_calls, 1);
}

/* After A's return: the worker is busy, so this submit kicks. */
static void kq_u_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)result;
  CHECK(status == 0, "U: %s", weft_err_name(status));
  atomic_fetch_add(&kq_u_calls, 1);
  kq_submit("twice", 1, NULL);
}

/* On the pool thread, counted (its submitter has no loop). Submits made
 * here deliver to the pool's loop without being counted. */
static void kq_a_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)result;
  CHECK(status == 0, "A: %s", weft_err_name(status));
  atomic_fetch_add(&kq_a_calls, 1);
  kq_wait_idle(); /* Else the next submit could kick now. */
  kq_submit("twice", 2, kq_u_cb);
  kq_wait_idle(); /* U is queued. */
  kq_submit("gated", 0, kq_x_cb);
  kq_wait_flag(&kq_started[0], "gated 0"); /* The worker is busy. */
  kq_submit("gated", 1, NULL); /* The kick: [U, kick]. */
  atomic_store(&kq_open[0], 1);
  kq_wait_flag(&kq_started[1], "gated 1"); /* X is queued: [U, kick, X]. */
}

static void kick_while_queued(void) {
  weft_pool_opts_t o = {.min_threads = 1, .max_threads = 2};
  weft_task_t* t = NULL;
  CHECK(weft_pool_new(&kpool, &o) == 0, "pool");
  CHECK(weft_pool_register(kpool, "twice", task_twice, NULL) == 0, "reg");
  CHECK(weft_pool_register(kpool, "gated", task_gated, NULL) == 0, "reg");
  /* The worker is up and idle. */
  CHECK(weft_pool_submit(kpool, "twice", NULL, 0, NULL, NULL, &t) == 0, "s");
  CHECK(weft_task_wait(t, 60000) == 0, "wait");
  weft_task_free(t);
  kq_wait_idle();
  kq_submit("twice", 3, kq_a_cb);
  kq_wait_flag(&kq_x_calls, "X's callback (lost from the pool's queue?)");
  atomic_store(&kq_open[1], 1);
  CHECK(weft_pool_close(kpool) == 0, "close");
  CHECK(atomic_load(&kq_a_calls) == 1 && atomic_load(&kq_u_calls) == 1 &&
            atomic_load(&kq_x_calls) == 1,
        "callbacks ran %d, %d, %d times", atomic_load(&kq_a_calls),
        atomic_load(&kq_u_calls), atomic_load(&kq_x_calls));
}

/* --- Allocation failures ---------------------------------------------------
 * With WEFT_FAILPOINTS: one round (make a pool, submit futures and loop
 * callbacks, wait, close) with the k-th allocation failing, for every k:
 * each call answers 0 or a named error, every accepted task settles
 * exactly once (with its result or WEFT_ENOMEM / WEFT_ESPAWN), the pool
 * closes, nothing leaks (ASan). */
#ifdef WEFT_FAILPOINTS
static bool named_alloc_error(int err) {
  return err == WEFT_ENOMEM || err == WEFT_ESPAWN;
}

typedef struct {
  int calls;
  int status;
} af_cb_t;

static void af_done(void* ctx, int status, weft_msg_t* result) {
  af_cb_t* c = ctx;
  c->calls++;
  c->status = status;
  if (status == 0)
    CHECK(msg_int(result) == 7, "callback value");
}

static void alloc_round(void) {
  weft_pool_opts_t o = {.max_threads = 2};
  weft_pool_t* p = NULL;
  weft_loop_t* loop = NULL;
  weft_task_t* t[4] = {NULL, NULL, NULL, NULL};
  af_cb_t cbs[2] = {{0, 0}, {0, 0}};
  bool cb_ok[2] = {false, false};
  packed_t three = packed_int(3);
  int err = weft_pool_new(&p, &o);
  if (err != 0) {
    CHECK(named_alloc_error(err), "pool_new: %s", weft_err_name(err));
    return;
  }
  err = weft_pool_register(p, "twice", task_twice, NULL);
  CHECK(err == 0 || named_alloc_error(err), "register: %s",
        weft_err_name(err));
  if (weft_loop_new(&loop) != 0)
    loop = NULL;
  for (int i = 0; i < 4; i++) {
    err = weft_pool_submit(p, "twice", three.data, three.len, NULL, NULL,
                           &t[i]);
    CHECK(err == 0 || err == WEFT_ENOMEM || err == WEFT_ENOTASK,
          "submit: %s", weft_err_name(err));
  }
  for (int i = 0; loop != NULL && i < 2; i++) {
    err = weft_pool_submit(p, "twice", three.data, three.len, af_done,
                           &cbs[i], NULL);
    CHECK(err == 0 || err == WEFT_ENOMEM || err == WEFT_ENOTASK,
          "submit cb: %s", weft_err_name(err));
    cb_ok[i] = err == 0;
  }
  for (int i = 0; i < 4; i++) {
    weft_msg_t* m = NULL;
    int st;
    if (t[i] == NULL)
      continue;
    CHECK(weft_task_wait(t[i], 60000) == 0, "wait");
    st = weft_task_status(t[i]);
    CHECK(st == 0 || named_alloc_error(st), "task: %s", weft_err_name(st));
    if (st == 0) {
      err = weft_task_take_result(t[i], &m);
      CHECK(err == 0 || err == WEFT_ENOMEM, "take: %s", weft_err_name(err));
      if (err == 0)
        CHECK(msg_int(m) == 7, "value");
      weft_msg_free(m);
    }
    weft_task_free(t[i]);
  }
  if (loop != NULL) {
    CHECK(weft_loop_run(loop) == 0, "run");
    for (int i = 0; i < 2; i++) {
      CHECK(cbs[i].calls == (cb_ok[i] ? 1 : 0), "callback ran %d times",
            cbs[i].calls);
      CHECK(cbs[i].status == 0 || named_alloc_error(cbs[i].status),
            "callback: %s", weft_err_name(cbs[i].status));
    }
  }
  CHECK(weft_pool_close(p) == 0, "close");
  if (loop != NULL)
    CHECK(weft_loop_free(loop) == 0, "loop free");
}

static void alloc_failures(void) {
  uint64_t n, hit = 0;
  weft__failpoint_arm(0);
  alloc_round();
  n = weft__failpoint_count();
  for (uint64_t k = 1; k <= n; k++) {
    weft__failpoint_arm(k);
    alloc_round();
    hit += weft__failpoint_fired();
  }
  weft__failpoint_arm(0);
  alloc_round(); /* Still usable. */
  printf("scenario_pool: %llu allocations in a round, %llu failure points "
         "hit\n",
         (unsigned long long)n, (unsigned long long)hit);
}
#else
static void alloc_failures(void) {}
#endif

int main(void) {
  weft_pool_opts_t o = {.max_threads = 3, .max_queue = 256};
  CHECK(weft_pool_new(&pool, &o) == 0, "pool");
  CHECK(weft_pool_register(pool, "twice", task_twice, NULL) == 0, "reg");
  CHECK(weft_pool_register(pool, "block", task_block, NULL) == 0, "reg");
  many_submitters();
  futures_and_cancels();
  loop_gone();
  atomic_store(&gate, 1);
  CHECK(weft_pool_close(pool) == 0, "close");
  CHECK(atomic_load(&gone_cb_calls) == 0, "callback on a gone loop");
  destroy_races();
  kick_while_queued();
  alloc_failures();
  printf("scenario_pool: ok (fan %d submits, %d refused; chain %d)\n",
         atomic_load(&fan_submits), atomic_load(&fan_refused),
         atomic_load(&chain_calls));
  return 0;
}
