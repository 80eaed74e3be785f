/* test_pool.c - Criterion suite for the worker pool (pool.h): callbacks on
 * the submitter's loop and futures for threads without one, backpressure,
 * unknown tasks, cancellation, failure isolation (a worker that breaches
 * its heap limit, reports an error, exits or is terminated), idle
 * retirement, close vs destroy, statistics, results that do not decode,
 * nice_increment, concurrent tasks per worker.
 *
 * Task functions run on pool workers and never call cr_assert: they answer
 * with values the test's thread checks, or record them in atomics. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(pool, .timeout = 60);

/* --- Task functions ------------------------------------------------------- */

/* [n] -> n + 1 */
static int task_inc(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  const msgpack_object* o = weft_msg_object(arg);
  (void)ctx;
  if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return WEFT_EINVAL;
  return msgpack_pack_uint64(weft_msg_packer(res), o->via.u64 + 1) == 0
             ? 0
             : WEFT_ENOMEM;
}

/* Fails with the (negative) integer it is given. */
static int task_fail(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  (void)res;
  return (int)msg_int(arg);
}

/* Packs nothing: the result is nil. */
static int task_nil(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  (void)res;
  return 0;
}

/* Answers with data registered: a string. */
static int task_data(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  const char* s = weft_task_data(ctx);
  (void)arg;
  msgpack_pack_str(weft_msg_packer(res), strlen(s));
  msgpack_pack_str_body(weft_msg_packer(res), s, strlen(s));
  return 0;
}

static weft_pool_t* new_pool(const weft_pool_opts_t* o) {
  weft_pool_t* pool = NULL;
  int err = weft_pool_new(&pool, o);
  cr_assert_eq(err, 0, "weft_pool_new: %s", weft_err_name(err));
  cr_assert(pool != NULL);
  cr_assert_eq(weft_pool_register(pool, "inc", task_inc, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "fail", task_fail, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "nil", task_nil, NULL), 0);
  return pool;
}

static weft_task_t* submit_int(weft_pool_t* pool, const char* name, int64_t v) {
  packed_t p = packed_int(v);
  weft_task_t* t = NULL;
  int err = weft_pool_submit(pool, name, p.data, p.len, NULL, NULL, &t);
  cr_assert_eq(err, 0, "submit: %s", weft_err_name(err));
  cr_assert(t != NULL);
  return t;
}

/* Wait for a future and take its integer result. */
static int64_t take_int(weft_task_t* t) {
  weft_msg_t* m = NULL;
  int err = weft_task_wait(t, 20000);
  cr_assert_eq(err, 0, "wait: %s", weft_err_name(err));
  err = weft_task_take_result(t, &m);
  cr_assert_eq(err, 0, "take: %s", weft_err_name(err));
  int64_t v = msg_int(m);
  weft_msg_free(m);
  return v;
}

/* --- Futures (no loop) ----------------------------------------------------- */

Test(pool, future_round_trip) {
  weft_pool_t* pool = new_pool(NULL);
  weft_task_t* t = submit_int(pool, "inc", 41);
  cr_assert_eq(take_int(t), 42);
  cr_assert_eq(weft_task_status(t), 0);
  /* Taken once only. */
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_task_take_result(t, &m), WEFT_EINVAL);
  cr_assert(weft_task_id(t) > 0);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, future_many_in_order_of_ids) {
  weft_pool_opts_t o = {.max_threads = 2};
  weft_pool_t* pool = new_pool(&o);
  weft_task_t* t[200];
  for (int i = 0; i < 200; i++)
    t[i] = submit_int(pool, "inc", i);
  uint64_t last = 0;
  for (int i = 0; i < 200; i++) {
    cr_assert_eq(take_int(t[i]), i + 1);
    cr_assert_gt(weft_task_id(t[i]), last);
    last = weft_task_id(t[i]);
    weft_task_free(t[i]);
  }
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, task_error_fails_that_task_only) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_pool(&o);
  weft_task_t* bad = submit_int(pool, "fail", WEFT_ERANGE);
  weft_task_t* good = submit_int(pool, "inc", 1);
  cr_assert_eq(weft_task_wait(bad, 20000), 0);
  cr_assert_eq(weft_task_status(bad), WEFT_ERANGE);
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_task_take_result(bad, &m), WEFT_ERANGE);
  cr_assert_null(m);
  cr_assert_eq(take_int(good), 2);
  weft_task_free(bad);
  weft_task_free(good);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, nil_argument_and_nil_result) {
  weft_pool_t* pool = new_pool(NULL);
  weft_task_t* t = NULL;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_pool_submit(pool, "nil", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_take_result(t, &m), 0);
  cr_assert_eq(weft_msg_object(m)->type, MSGPACK_OBJECT_NIL);
  weft_msg_free(m);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, register_data_and_busy_name) {
  weft_pool_t* pool = new_pool(NULL);
  weft_task_t* t = NULL;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_pool_register(pool, "data", task_data, "hello"), 0);
  cr_assert_eq(weft_pool_register(pool, "data", task_data, "x"), WEFT_EBUSY);
  cr_assert_eq(weft_pool_register(pool, NULL, task_data, "x"), WEFT_EINVAL);
  cr_assert_eq(weft_pool_register(pool, "y", NULL, "x"), WEFT_EINVAL);
  cr_assert_eq(weft_pool_submit(pool, "data", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_take_result(t, &m), 0);
  cr_assert(obj_str_eq(weft_msg_object(m), "hello"));
  weft_msg_free(m);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, unknown_task_and_bad_input) {
  weft_pool_t* pool = new_pool(NULL);
  weft_task_t* t = (weft_task_t*)1;
  packed_t p = packed_int(1);
  const char junk[] = {(char)0xc1}; /* Never used in msgpack. */
  const char two[] = {1, 2};        /* Two values. */
  cr_assert_eq(weft_pool_submit(pool, "nope", p.data, p.len, NULL, NULL, &t),
               WEFT_ENOTASK);
  cr_assert_null(t);
  cr_assert_eq(weft_pool_submit(pool, "inc", junk, 1, NULL, NULL, &t),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_submit(pool, "inc", two, 2, NULL, NULL, &t),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_submit(NULL, "inc", p.data, p.len, NULL, NULL, &t),
               WEFT_EINVAL);
  cr_assert_eq(weft_pool_submit(pool, NULL, p.data, p.len, NULL, NULL, &t),
               WEFT_EINVAL);
  cr_assert_eq(weft_pool_submit(pool, "inc", NULL, 3, NULL, NULL, &t),
               WEFT_EINVAL);
  weft_pool_stats_t s;
  cr_assert_eq(weft_pool_stats(pool, &s), 0);
  cr_assert_eq(s.submitted, 0);
  cr_assert_eq(weft_task_wait(NULL, 0), WEFT_EINVAL);
  cr_assert_eq(weft_task_cancel(NULL), WEFT_EINVAL);
  weft_task_free(NULL);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, new_rejects_bad_options) {
  weft_pool_t* pool = NULL;
  weft_pool_opts_t a = {.min_threads = 3, .max_threads = 2};
  weft_pool_opts_t b = {.nice_increment = 20};
  weft_pool_opts_t c = {.nice_increment = -1};
  cr_assert_eq(weft_pool_new(NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new(&pool, &a), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new(&pool, &b), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new(&pool, &c), WEFT_EINVAL);
  cr_assert_null(pool);
  cr_assert_eq(weft_pool_close(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_destroy(NULL), WEFT_EINVAL);
}

/* --- Callbacks on the submitter's loop ------------------------------------ */

typedef struct {
  weft_loop_t* loop;
  int calls;
  int status;
  int64_t value;
  bool on_loop_thread;
} cb_rec_t;

static void on_done(void* ctx, int status, weft_msg_t* result) {
  cb_rec_t* r = ctx;
  r->calls++;
  r->status = status;
  r->value = result != NULL ? msg_int(result) : INT64_MIN;
  r->on_loop_thread = weft_loop_current() == r->loop;
}

Test(pool, callback_on_submitters_loop) {
  weft_loop_t* loop = new_loop();
  weft_pool_t* pool = new_pool(NULL);
  cb_rec_t r = {.loop = loop};
  packed_t p = packed_int(9);
  cr_assert_eq(weft_pool_submit(pool, "inc", p.data, p.len, on_done, &r, NULL),
               0);
  cr_assert_eq(r.calls, 0); /* Never inside the submit. */
  /* The pending callback keeps the loop alive until it ran. */
  run_loop(loop);
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.status, 0);
  cr_assert_eq(r.value, 10);
  cr_assert(r.on_loop_thread);
  cr_assert_eq(weft_pool_close(pool), 0);
  free_loop(loop);
}

Test(pool, callback_with_error_and_future) {
  weft_loop_t* loop = new_loop();
  weft_pool_t* pool = new_pool(NULL);
  cb_rec_t r = {.loop = loop};
  packed_t p = packed_int(WEFT_ERANGE);
  weft_task_t* t = NULL;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_pool_submit(pool, "fail", p.data, p.len, on_done, &r, &t),
               0);
  run_loop(loop);
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.status, WEFT_ERANGE);
  cr_assert_eq(r.value, INT64_MIN);
  cr_assert_eq(weft_task_status(t), WEFT_ERANGE);
  cr_assert_eq(weft_task_take_result(t, &m), WEFT_ERANGE);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
  free_loop(loop);
}

/* Without a loop, a callback runs on a pool thread. */
static atomic_int noloop_calls;
static atomic_llong noloop_value;
static pthread_t noloop_thread;
static atomic_bool noloop_other_thread;
static atomic_int noloop_close_err;

static void on_done_noloop(void* ctx, int status, weft_msg_t* result) {
  /* Closing from the pool's own thread is refused. */
  atomic_store(&noloop_close_err, weft_pool_close(ctx));
  atomic_store(&noloop_value, status == 0 ? msg_int(result) : status);
  atomic_store(&noloop_other_thread,
               !pthread_equal(pthread_self(), noloop_thread));
  atomic_fetch_add(&noloop_calls, 1);
}

Test(pool, callback_without_loop_runs_on_pool_thread) {
  weft_pool_t* pool = new_pool(NULL);
  packed_t p = packed_int(1);
  weft_task_t* t = NULL;
  noloop_thread = pthread_self();
  cr_assert_null(weft_loop_current());
  cr_assert_eq(
      weft_pool_submit(pool, "inc", p.data, p.len, on_done_noloop, pool, &t),
      0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  /* The result went to the callback. */
  weft_msg_t* m = NULL;
  WAIT_UNTIL(atomic_load(&noloop_calls) == 1, 20000);
  cr_assert_eq(weft_task_take_result(t, &m), WEFT_EINVAL);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
  cr_assert_eq(atomic_load(&noloop_calls), 1);
  cr_assert_eq(atomic_load(&noloop_value), 2);
  cr_assert(atomic_load(&noloop_other_thread));
  cr_assert_eq(atomic_load(&noloop_close_err), WEFT_EWRONGTHREAD);
}

/* --- Tasks that wait on the test ------------------------------------------ */

/* "block" waits until `gate` opens, or its task is cancelled (then it
 * records that it saw the flag and fails with WEFT_ECANCELED), and answers
 * its argument. */
static atomic_int gate;
static atomic_int block_started;
static atomic_int block_saw_cancel;
static atomic_int count_runs;

static int task_block(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  atomic_fetch_add(&block_started, 1);
  while (!atomic_load(&gate)) {
    if (weft_task_canceled(ctx)) {
      atomic_fetch_add(&block_saw_cancel, 1);
      return WEFT_ECANCELED;
    }
    if (weft_should_stop())
      return WEFT_ETERMINATED;
    uv_sleep(1);
  }
  return msgpack_pack_int64(weft_msg_packer(res), msg_int(arg)) == 0
             ? 0
             : WEFT_ENOMEM;
}

/* "count" counts its runs. */
static int task_count(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  (void)res;
  atomic_fetch_add(&count_runs, 1);
  return 0;
}

static void reset_gate(void) {
  atomic_store(&gate, 0);
  atomic_store(&block_started, 0);
  atomic_store(&block_saw_cancel, 0);
  atomic_store(&count_runs, 0);
}

static weft_pool_stats_t stats_of(weft_pool_t* pool) {
  weft_pool_stats_t s;
  cr_assert_eq(weft_pool_stats(pool, &s), 0);
  return s;
}

static size_t running_of(weft_pool_t* pool) {
  weft_pool_stats_t s;
  weft_pool_stats(pool, &s);
  return s.running;
}

static weft_pool_t* new_gated_pool(weft_pool_opts_t* o) {
  weft_pool_t* pool = new_pool(o);
  reset_gate();
  cr_assert_eq(weft_pool_register(pool, "block", task_block, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "count", task_count, NULL), 0);
  return pool;
}

/* --- Backpressure ---------------------------------------------------------- */

Test(pool, queue_full_fails_at_once_and_drops_nothing) {
  weft_pool_opts_t o = {.max_threads = 1, .max_queue = 2};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* t[3];
  weft_task_t* extra = (weft_task_t*)1;
  packed_t p = packed_int(5);
  t[0] = submit_int(pool, "block", 0);
  WAIT_UNTIL(running_of(pool) == 1, 20000);
  cr_assert_eq(running_of(pool), 1);
  t[1] = submit_int(pool, "block", 1);
  t[2] = submit_int(pool, "block", 2);
  /* Two wait for the worker: the queue is full. */
  cr_assert_eq(weft_pool_submit(pool, "block", p.data, p.len, NULL, NULL,
                                &extra),
               WEFT_EQUEUEFULL);
  cr_assert_null(extra);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.queued, 2);
  cr_assert_eq(s.running, 1);
  cr_assert_eq(s.rejected, 1);
  cr_assert_eq(s.submitted, 3);
  atomic_store(&gate, 1);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(take_int(t[i]), i);
    weft_task_free(t[i]);
  }
  /* Room again. */
  t[0] = submit_int(pool, "block", 7);
  cr_assert_eq(take_int(t[0]), 7);
  weft_task_free(t[0]);
  s = stats_of(pool);
  cr_assert_eq(s.completed, 4);
  cr_assert_eq(s.rejected, 1);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* --- Cancellation ---------------------------------------------------------- */

Test(pool, cancel_queued_task) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* running = submit_int(pool, "block", 1);
  WAIT_UNTIL(running_of(pool) == 1, 20000);
  weft_task_t* queued = submit_int(pool, "count", 0);
  cr_assert_eq(weft_task_status(queued), WEFT_EAGAIN);
  cr_assert_eq(weft_task_cancel(queued), 0);
  /* Settled at once, without waiting for the worker. */
  cr_assert_eq(weft_task_wait(queued, 0), 0);
  cr_assert_eq(weft_task_status(queued), WEFT_ECANCELED);
  cr_assert_eq(weft_task_cancel(queued), WEFT_EINVAL);
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_task_take_result(queued, &m), WEFT_ECANCELED);
  cr_assert_eq(stats_of(pool).queued, 0);
  atomic_store(&gate, 1);
  cr_assert_eq(take_int(running), 1);
  /* A task after it still runs; the cancelled one never did. */
  weft_task_t* after = submit_int(pool, "count", 0);
  cr_assert_eq(weft_task_wait(after, -1), 0);
  cr_assert_eq(atomic_load(&count_runs), 1);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.canceled, 1);
  cr_assert_eq(s.completed, 2);
  weft_task_free(queued);
  weft_task_free(running);
  weft_task_free(after);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, cancel_running_task_sets_flag_and_settles_at_once) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* t = submit_int(pool, "block", 1);
  WAIT_UNTIL(atomic_load(&block_started) == 1, 20000);
  cr_assert_eq(weft_task_cancel(t), 0);
  cr_assert_eq(weft_task_wait(t, 0), 0);
  cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
  /* The function saw the flag (its result is dropped). */
  WAIT_UNTIL(atomic_load(&block_saw_cancel) == 1, 20000);
  cr_assert_eq(atomic_load(&block_saw_cancel), 1);
  cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
  /* The worker goes on. */
  weft_task_t* next = submit_int(pool, "inc", 1);
  cr_assert_eq(take_int(next), 2);
  weft_task_free(next);
  weft_task_free(t);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.canceled, 1);
  cr_assert_eq(s.failed, 0);
  cr_assert_eq(weft_pool_close(pool), 0);
}

static weft_task_t* cancel_me;
static void cancel_later(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_task_cancel(cancel_me);
}

Test(pool, cancel_running_task_with_callback) {
  weft_loop_t* loop = new_loop();
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  cb_rec_t r = {.loop = loop};
  packed_t p = packed_int(3);
  cr_assert_eq(
      weft_pool_submit(pool, "block", p.data, p.len, on_done, &r, &cancel_me),
      0);
  WAIT_UNTIL(atomic_load(&block_started) == 1, 20000);
  cr_assert_eq(weft_set_timeout(loop, 1, cancel_later, NULL, NULL), 0);
  run_loop(loop);
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.status, WEFT_ECANCELED);
  weft_task_free(cancel_me);
  cr_assert_eq(weft_pool_close(pool), 0);
  /* The late result was dropped: still one call. */
  cr_assert_eq(r.calls, 1);
  free_loop(loop);
}

/* --- A worker that dies mid-task ------------------------------------------- */

static int task_heap(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  (void)res;
  void* p = weft_malloc((size_t)64 << 20); /* Past the 4 MiB limit. */
  if (p == NULL)
    return WEFT_ENOMEM;
  weft_free(p);
  return 0;
}

static int task_uncaught(weft_task_ctx_t* ctx, weft_msg_t* arg,
                         weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  (void)res;
  weft_report_error("boom");
  return 0;
}

static int task_exit(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  msgpack_pack_int(weft_msg_packer(res), 1); /* Dropped. */
  weft_worker_exit(3);
  return 0;
}

/* `killer` ends its worker; a task queued behind it and one after it
 * still complete on a replacement worker. */
static void check_worker_death(const char* killer, int expect) {
  weft_pool_opts_t o = {.max_threads = 1, .max_heap_bytes = 4 << 20};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "heap", task_heap, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "uncaught", task_uncaught, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "exit", task_exit, NULL), 0);
  weft_task_t* k = submit_int(pool, killer, 0);
  weft_task_t* behind = submit_int(pool, "inc", 10);
  cr_assert_eq(weft_task_wait(k, 20000), 0);
  cr_assert_eq(weft_task_status(k), expect, "%s: %s", killer,
               weft_err_name(weft_task_status(k)));
  cr_assert_eq(take_int(behind), 11);
  weft_task_t* after = submit_int(pool, "inc", 20);
  cr_assert_eq(take_int(after), 21);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.failed, 1);
  cr_assert_eq(s.completed, 2);
  cr_assert_eq(s.threads, 1);
  weft_task_free(k);
  weft_task_free(behind);
  weft_task_free(after);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, worker_heap_breach_fails_its_task_only) {
  check_worker_death("heap", WEFT_EHEAPLIMIT);
}

Test(pool, worker_uncaught_error_fails_its_task_only) {
  check_worker_death("uncaught", WEFT_EUNCAUGHT);
}

Test(pool, worker_exit_fails_its_task_only) {
  check_worker_death("exit", WEFT_ETERMINATED);
}

/* A task waiting for I/O (pending) on the same worker fails with the error
 * that ended the worker too: no task is left unsettled. */
static void pending_tick(weft_loop_t* loop, void* arg) {
  weft_task_ctx_t* ctx = arg;
  (void)loop;
  if (atomic_load(&gate) || weft_task_canceled(ctx)) {
    weft_task_done(ctx, 0);
    return;
  }
  weft_set_timeout(weft_loop_current(), 1, pending_tick, ctx, NULL);
}

/* "wait": completes later, once `gate` opens (polled by a timer on the
 * worker's loop). */
static int task_wait(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)arg;
  msgpack_pack_int(weft_msg_packer(res), 5);
  atomic_fetch_add(&block_started, 1);
  if (weft_set_timeout(weft_loop_current(), 1, pending_tick, ctx, NULL) != 0)
    return WEFT_ENOMEM;
  return WEFT_TASK_PENDING;
}

Test(pool, worker_death_fails_its_pending_tasks_too) {
  weft_pool_opts_t o = {.max_threads = 1, .concurrent_tasks = 2};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "wait", task_wait, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "uncaught", task_uncaught, NULL), 0);
  weft_task_t* w = submit_int(pool, "wait", 0);
  WAIT_UNTIL(atomic_load(&block_started) == 1, 20000);
  weft_task_t* k = submit_int(pool, "uncaught", 0);
  cr_assert_eq(weft_task_wait(k, 20000), 0);
  cr_assert_eq(weft_task_wait(w, 20000), 0);
  cr_assert_eq(weft_task_status(k), WEFT_EUNCAUGHT);
  cr_assert_eq(weft_task_status(w), WEFT_EUNCAUGHT);
  weft_task_t* after = submit_int(pool, "inc", 1);
  cr_assert_eq(take_int(after), 2);
  weft_task_free(w);
  weft_task_free(k);
  weft_task_free(after);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* --- Concurrent tasks per worker ------------------------------------------ */

Test(pool, concurrent_tasks_overlap_on_one_worker) {
  weft_pool_opts_t o = {.max_threads = 1, .concurrent_tasks = 3};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "wait", task_wait, NULL), 0);
  weft_task_t* t[4];
  for (int i = 0; i < 4; i++)
    t[i] = submit_int(pool, "wait", i);
  /* Three start on the one worker; the fourth waits for room. */
  WAIT_UNTIL(atomic_load(&block_started) == 3, 20000);
  cr_assert_eq(atomic_load(&block_started), 3);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.running, 3);
  cr_assert_eq(s.queued, 1);
  cr_assert_eq(s.threads, 1);
  atomic_store(&gate, 1);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(take_int(t[i]), 5);
    weft_task_free(t[i]);
  }
  cr_assert_eq(atomic_load(&block_started), 4);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, task_done_outside_pending_is_einval) {
  cr_assert_eq(weft_task_done(NULL, 0), WEFT_EINVAL);
}

/* --- Idle retirement and on-demand start ---------------------------------- */

Test(pool, workers_start_on_demand_and_retire_when_idle) {
  weft_pool_opts_t o = {.name = "tretire",
                        .min_threads = 1,
                        .max_threads = 3,
                        .idle_timeout_ms = 50};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(stats_of(pool).threads, 1);
  weft_task_t* t[3];
  for (int i = 0; i < 3; i++)
    t[i] = submit_int(pool, "block", i);
  WAIT_UNTIL(atomic_load(&block_started) == 3, 20000);
  cr_assert_eq(stats_of(pool).threads, 3);
  cr_assert_eq(count_threads_named("tretire-"), 3);
  atomic_store(&gate, 1);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(take_int(t[i]), i);
    weft_task_free(t[i]);
  }
  /* Above min_threads, idle 50 ms: retired, down to one. */
  WAIT_UNTIL(stats_of(pool).threads == 1, 20000);
  cr_assert_eq(stats_of(pool).threads, 1);
  WAIT_UNTIL(count_threads_named("tretire-") == 1, 20000);
  cr_assert_eq(count_threads_named("tretire-"), 1);
  /* min_threads is never retired. */
  uv_sleep(200);
  cr_assert_eq(stats_of(pool).threads, 1);
  /* Again: the retired ones no longer count. */
  atomic_store(&gate, 0);
  atomic_store(&block_started, 0);
  for (int i = 0; i < 3; i++)
    t[i] = submit_int(pool, "block", i);
  WAIT_UNTIL(atomic_load(&block_started) == 3, 20000);
  cr_assert_eq(stats_of(pool).threads, 3);
  atomic_store(&gate, 1);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(take_int(t[i]), i);
    weft_task_free(t[i]);
  }
  WAIT_UNTIL(stats_of(pool).threads == 1, 20000);
  cr_assert_eq(stats_of(pool).threads, 1);
  uv_sleep(200);
  cr_assert_eq(stats_of(pool).threads, 1);
  /* And the pool still works. */
  t[0] = submit_int(pool, "inc", 1);
  cr_assert_eq(take_int(t[0]), 2);
  weft_task_free(t[0]);
  cr_assert_eq(weft_pool_close(pool), 0);
  WAIT_UNTIL(count_threads_named("tretire") == 0, 20000);
  cr_assert_eq(count_threads_named("tretire"), 0);
}

/* --- Close vs destroy ------------------------------------------------------- */

static int task_slow(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  busy_ms(3);
  return msgpack_pack_int64(weft_msg_packer(res), msg_int(arg)) == 0
             ? 0
             : WEFT_ENOMEM;
}

Test(pool, close_finishes_queued_work) {
  weft_pool_opts_t o = {.max_threads = 2};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "slow", task_slow, NULL), 0);
  weft_task_t* t[20];
  for (int i = 0; i < 20; i++)
    t[i] = submit_int(pool, "slow", i);
  cr_assert_eq(weft_pool_close(pool), 0);
  /* Everything settled with its result; the futures outlive the pool. */
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(weft_task_wait(t[i], 0), 0);
    cr_assert_eq(take_int(t[i]), i);
    weft_task_free(t[i]);
  }
}

Test(pool, destroy_cancels_queued_and_running) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* running = submit_int(pool, "block", 0);
  WAIT_UNTIL(atomic_load(&block_started) == 1, 20000);
  weft_task_t* q[3];
  for (int i = 0; i < 3; i++)
    q[i] = submit_int(pool, "count", i);
  cr_assert_eq(weft_pool_destroy(pool), 0);
  cr_assert_eq(weft_task_wait(running, 0), 0);
  cr_assert_eq(weft_task_status(running), WEFT_ECANCELED, "%s",
               weft_err_name(weft_task_status(running)));
  /* The running function saw the flag before its worker ended. */
  cr_assert_eq(atomic_load(&block_saw_cancel), 1);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(weft_task_wait(q[i], 0), 0);
    cr_assert_eq(weft_task_status(q[i]), WEFT_ECANCELED);
    weft_task_free(q[i]);
  }
  cr_assert_eq(atomic_load(&count_runs), 0);
  weft_task_free(running);
}

/* A task that submits to its own pool while the pool closes. */
static weft_pool_t* self_pool;
static atomic_int resubmit_err;
static int task_resubmit(weft_task_ctx_t* ctx, weft_msg_t* arg,
                         weft_msg_t* res) {
  packed_t p = packed_int(1);
  (void)ctx;
  (void)arg;
  (void)res;
  while (!atomic_load(&gate))
    uv_sleep(1);
  atomic_store(&resubmit_err, weft_pool_submit(self_pool, "inc", p.data,
                                               p.len, NULL, NULL, NULL));
  /* Closing from a pool thread is refused. */
  return weft_pool_close(self_pool) == WEFT_EWRONGTHREAD ? 0 : WEFT_EINVAL;
}

static void* open_gate_later(void* arg) {
  (void)arg;
  uv_sleep(50);
  atomic_store(&gate, 1);
  return NULL;
}

Test(pool, submit_while_closing_is_eclosed) {
  weft_pool_opts_t o = {.max_threads = 1};
  self_pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(self_pool, "resubmit", task_resubmit, NULL),
               0);
  weft_task_t* t = submit_int(self_pool, "resubmit", 0);
  pthread_t th;
  pthread_create(&th, NULL, open_gate_later, NULL);
  cr_assert_eq(weft_pool_close(self_pool), 0);
  pthread_join(th, NULL);
  cr_assert_eq(atomic_load(&resubmit_err), WEFT_ECLOSED);
  cr_assert_eq(weft_task_status(t), 0);
  weft_task_free(t);
}

/* --- Statistics ------------------------------------------------------------- */

Test(pool, statistics) {
  weft_pool_opts_t o = {.max_threads = 2};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "slow", task_slow, NULL), 0);
  weft_task_t* t[10];
  for (int i = 0; i < 10; i++)
    t[i] = submit_int(pool, i < 8 ? "slow" : "fail", WEFT_ERANGE);
  for (int i = 0; i < 10; i++) {
    cr_assert_eq(weft_task_wait(t[i], -1), 0);
    weft_task_free(t[i]);
  }
  /* A worker counts a settled task as running until it takes the pool's
   * lock again (it unlinks it with the next one). */
  WAIT_UNTIL(running_of(pool) == 0, 20000);
  weft_pool_stats_t s = stats_of(pool);
  cr_assert_eq(s.submitted, 10);
  cr_assert_eq(s.completed, 8);
  cr_assert_eq(s.failed, 2);
  cr_assert_eq(s.canceled, 0);
  cr_assert_eq(s.rejected, 0);
  cr_assert_eq(s.queued, 0);
  cr_assert_eq(s.running, 0);
  cr_assert_geq(s.threads, 1);
  cr_assert_leq(s.threads, 2);
  /* Each slow task busies its worker 3 ms: a lower bound on the run
   * time's median (the histogram's buckets are within ~6%). */
  cr_assert_geq(s.run_p50_us, 2800.0, "run p50 %f", s.run_p50_us);
  cr_assert_geq(s.run_p99_us, s.run_p50_us);
  cr_assert_geq(s.wait_p99_us, s.wait_p50_us);
  cr_assert_gt(s.wait_p99_us, 0.0);
  cr_assert_gt(s.utilization, 0.0);
  cr_assert_leq(s.utilization, 1.0);
  cr_assert_eq(weft_pool_stats(NULL, &s), WEFT_EINVAL);
  cr_assert_eq(weft_pool_stats(pool, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* --- Results and arguments -------------------------------------------------- */

static int task_badresult(weft_task_ctx_t* ctx, weft_msg_t* arg,
                          weft_msg_t* res) {
  const char junk[] = {(char)0x92, 1}; /* An array of 2 with one element. */
  (void)ctx;
  (void)arg;
  return weft_msg_append(res, junk, sizeof(junk));
}

Test(pool, result_that_does_not_decode_fails_with_edecode) {
  weft_loop_t* loop = new_loop();
  weft_pool_t* pool = new_pool(NULL);
  cr_assert_eq(weft_pool_register(pool, "bad", task_badresult, NULL), 0);
  weft_task_t* t = NULL;
  cr_assert_eq(weft_pool_submit(pool, "bad", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_status(t), WEFT_EDECODE);
  weft_task_free(t);
  cb_rec_t r = {.loop = loop};
  cr_assert_eq(weft_pool_submit(pool, "bad", NULL, 0, on_done, &r, NULL), 0);
  run_loop(loop);
  cr_assert_eq(r.calls, 1);
  cr_assert_eq(r.status, WEFT_EDECODE);
  cr_assert_eq(stats_of(pool).failed, 2);
  cr_assert_eq(weft_pool_close(pool), 0);
  free_loop(loop);
}

/* Takes the buffer in its argument, answers [sum of its bytes, <a new
 * buffer of 3 bytes>]. */
static int task_buffers(weft_task_ctx_t* ctx, weft_msg_t* arg,
                        weft_msg_t* res) {
  const msgpack_object* o = weft_msg_object(arg);
  weft_buffer_t* in = NULL;
  weft_buffer_t* out = NULL;
  void* data;
  size_t size;
  uint64_t sum = 0;
  (void)ctx;
  if (weft_msg_take_buffer(arg, o, &in) != 0)
    return WEFT_EINVAL;
  weft_buffer_data(in, &data, &size);
  for (size_t i = 0; i < size; i++)
    sum += ((unsigned char*)data)[i];
  weft_buffer_free(in);
  if (weft_buffer_new(&out, 3) != 0)
    return WEFT_ENOMEM;
  weft_buffer_data(out, &data, &size);
  memset(data, 9, size);
  msgpack_pack_array(weft_msg_packer(res), 2);
  msgpack_pack_uint64(weft_msg_packer(res), sum);
  /* The pool owns `out` from here on: it moves with the result. */
  return weft_msg_add_buffer(res, out);
}

/* Adds a buffer to its result, then fails: the pool frees the buffer
 * (ASan's leak check sees it otherwise). */
static int task_buffer_fail(weft_task_ctx_t* ctx, weft_msg_t* arg,
                            weft_msg_t* res) {
  weft_buffer_t* out = NULL;
  (void)ctx;
  (void)arg;
  if (weft_buffer_new(&out, 1000) != 0)
    return WEFT_ENOMEM;
  msgpack_pack_array(weft_msg_packer(res), 1);
  weft_msg_add_buffer(res, out);
  return WEFT_ERANGE;
}

Test(pool, submit_msg_moves_buffers_both_ways) {
  weft_pool_t* pool = new_pool(NULL);
  cr_assert_eq(weft_pool_register(pool, "buffers", task_buffers, NULL), 0);
  weft_buffer_t* buf = NULL;
  weft_msg_t* msg = NULL;
  void* data;
  size_t size;
  cr_assert_eq(weft_buffer_new(&buf, 100), 0);
  weft_buffer_data(buf, &data, &size);
  memset(data, 2, size);
  cr_assert_eq(weft_msg_new(&msg), 0);
  cr_assert_eq(weft_msg_add_buffer(msg, buf), 0);
  weft_task_t* t = NULL;
  cr_assert_eq(weft_pool_submit_msg(pool, "buffers", &msg, NULL, NULL, &t), 0);
  cr_assert_null(msg);
  cr_assert(weft_buffer_detached(buf)); /* Moved, not copied. */
  weft_buffer_free(buf);
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_take_result(t, &m), 0);
  const msgpack_object* o = weft_msg_object(m);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(obj_int(&o->via.array.ptr[0]), 200);
  weft_buffer_t* back = NULL;
  cr_assert_eq(weft_msg_take_buffer(m, &o->via.array.ptr[1], &back), 0);
  cr_assert_eq(weft_buffer_size(back), 3);
  weft_buffer_free(back);
  weft_msg_free(m);
  weft_task_free(t);
  cr_assert_eq(weft_pool_register(pool, "buffail", task_buffer_fail, NULL), 0);
  cr_assert_eq(weft_pool_submit(pool, "buffail", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_status(t), WEFT_ERANGE);
  weft_task_free(t);
  /* A message with nothing in it is nil; a bad one stays the caller's. */
  cr_assert_eq(weft_pool_submit_msg(pool, "nil", NULL, NULL, NULL, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_msg_new(&msg), 0);
  cr_assert_eq(weft_pool_submit_msg(pool, "nope", &msg, NULL, NULL, NULL),
               WEFT_ENOTASK);
  cr_assert_not_null(msg);
  cr_assert_eq(weft_pool_submit_msg(pool, "nil", &msg, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_status(t), 0);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* --- Threads: names and priority ------------------------------------------- */

static int task_whoami(weft_task_ctx_t* ctx, weft_msg_t* arg,
                       weft_msg_t* res) {
  char name[16] = "";
  (void)ctx;
  (void)arg;
  pthread_getname_np(pthread_self(), name, sizeof(name));
  errno = 0;
  int prio = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  msgpack_pack_array(weft_msg_packer(res), 2);
  pack_str(weft_msg_packer(res), name);
  msgpack_pack_int(weft_msg_packer(res), prio);
  return 0;
}

/* Threads of the process whose name starts with `prefix`, and how many
 * of them have nice value `nice` (/proc/self/task/<tid>/stat, field 19). */
static int threads_with_nice(const char* prefix, int nice, int* named) {
  DIR* d = opendir("/proc/self/task");
  struct dirent* e;
  int n = 0;
  *named = 0;
  cr_assert(d != NULL);
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[32] = "", buf[1024];
    FILE* f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    if (fgets(comm, sizeof(comm), f) == NULL)
      comm[0] = '\0';
    fclose(f);
    if (strncmp(comm, prefix, strlen(prefix)) != 0)
      continue;
    (*named)++;
    snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    if (fgets(buf, sizeof(buf), f) != NULL) {
      /* After "(comm)": state is field 3; nice is field 19. */
      char* p = strrchr(buf, ')');
      int field = 2, v = 0;
      for (; p != NULL && *p != '\0'; p++) {
        if (*p == ' ' && ++field == 19) {
          v = atoi(p + 1);
          break;
        }
      }
      if (field == 19 && v == nice)
        n++;
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

Test(pool, thread_names_and_nice_increment) {
  weft_pool_opts_t o = {.name = "tnice", .nice_increment = 5};
  weft_pool_t* pool = new_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "whoami", task_whoami, NULL), 0);
  errno = 0;
  int base = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  cr_assert_eq(errno, 0);
  int expect = base + 5 > 19 ? 19 : base + 5;
  weft_task_t* t = NULL;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_pool_submit(pool, "whoami", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_take_result(t, &m), 0);
  const msgpack_object* a = weft_msg_object(m);
  cr_assert(obj_str_eq(&a->via.array.ptr[0], "tnice-0"));
  cr_assert_eq(obj_int(&a->via.array.ptr[1]), expect);
  weft_msg_free(m);
  weft_task_free(t);
  /* The calling thread keeps its own; every pool thread (the pool's own
   * "tnice" and the worker "tnice-0") is lowered. */
  cr_assert_eq(getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)), base);
  int named = 0;
  cr_assert_eq(threads_with_nice("tnice", expect, &named), 2);
  cr_assert_eq(named, 2);
  cr_assert_eq(weft_pool_close(pool), 0);
}

static int task_policy(weft_task_ctx_t* ctx, weft_msg_t* arg,
                       weft_msg_t* res) {
  (void)ctx;
  (void)arg;
  msgpack_pack_int(weft_msg_packer(res), sched_getscheduler(0));
  return 0;
}

Test(pool, sched_idle_runs_tasks_at_sched_idle_and_spares_the_caller) {
  weft_pool_opts_t o = {.name = "tidle", .max_threads = 2, .sched_idle = true};
  weft_pool_t* pool = new_pool(&o);
  weft_task_t* t[2] = {NULL, NULL};
  cr_assert_eq(weft_pool_register(pool, "policy", task_policy, NULL), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(weft_pool_submit(pool, "policy", NULL, 0, NULL, NULL, &t[i]),
                 0);
  for (int i = 0; i < 2; i++) {
    weft_msg_t* m = NULL;
    cr_assert_eq(weft_task_wait(t[i], -1), 0);
    cr_assert_eq(weft_task_take_result(t[i], &m), 0);
    cr_assert_eq(obj_int(weft_msg_object(m)), SCHED_IDLE);
    weft_msg_free(m);
    weft_task_free(t[i]);
  }
  /* The caller keeps its policy. */
  cr_assert_eq(sched_getscheduler(0), SCHED_OTHER);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, wait_times_out_never_early) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* t = submit_int(pool, "block", 4);
  uint64_t t0 = uv_hrtime();
  cr_assert_eq(weft_task_wait(t, 30), WEFT_ETIMEDOUT);
  cr_assert_geq(uv_hrtime() - t0, 30 * 1000000ull);
  cr_assert_eq(weft_task_wait(t, 0), WEFT_ETIMEDOUT);
  cr_assert_eq(weft_task_status(t), WEFT_EAGAIN);
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_task_take_result(t, &m), WEFT_EAGAIN);
  /* A huge timeout is no limit, not an overflow that times out early. */
  pthread_t th;
  pthread_create(&th, NULL, open_gate_later, NULL);
  cr_assert_eq(weft_task_wait(t, INT64_MAX), 0);
  pthread_join(th, NULL);
  cr_assert_eq(take_int(t), 4);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* A future waited from another thread than the submitter's. */
static void* wait_other(void* arg) {
  weft_task_t* t = arg;
  return (void*)(intptr_t)weft_task_wait(t, -1);
}

Test(pool, future_waited_from_several_threads) {
  weft_pool_opts_t o = {.max_threads = 1};
  weft_pool_t* pool = new_gated_pool(&o);
  weft_task_t* t = submit_int(pool, "block", 8);
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&th[i], NULL, wait_other, t);
  uv_sleep(20); /* Let them park on the futex. */
  atomic_store(&gate, 1);
  for (int i = 0; i < 3; i++) {
    void* rc;
    pthread_join(th[i], &rc);
    cr_assert_eq((intptr_t)rc, 0);
  }
  cr_assert_eq(take_int(t), 8);
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* --- The shared-buffer fast path ------------------------------------------ */

/* [begin, end, <shared>]: squares indexes begin..end-1 into the shared
 * array of uint32; nothing is copied. */
static int task_square(weft_task_ctx_t* ctx, weft_msg_t* arg,
                       weft_msg_t* res) {
  const msgpack_object* o = weft_msg_object(arg);
  weft_shared_t* sh = NULL;
  (void)ctx;
  (void)res;
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3)
    return WEFT_EDECODE;
  if (weft_msg_take_shared(arg, &o->via.array.ptr[2], &sh) != 0)
    return WEFT_EINVAL;
  uint32_t* a = weft_shared_data(sh);
  for (uint64_t i = o->via.array.ptr[0].via.u64;
       i < o->via.array.ptr[1].via.u64; i++)
    a[i] = (uint32_t)(i * i);
  weft_shared_release(sh);
  return 0;
}

Test(pool, shared_buffer_slices_copy_nothing) {
  weft_pool_opts_t o = {.max_threads = 2};
  weft_pool_t* pool = new_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "square", task_square, NULL), 0);
  weft_shared_t* sh = new_shared(1000 * sizeof(uint32_t));
  weft_task_t* t[4];
  for (int i = 0; i < 4; i++) {
    weft_msg_t* m = NULL;
    cr_assert_eq(weft_msg_new(&m), 0);
    msgpack_pack_array(weft_msg_packer(m), 3);
    msgpack_pack_uint64(weft_msg_packer(m), (uint64_t)i * 250);
    msgpack_pack_uint64(weft_msg_packer(m), (uint64_t)(i + 1) * 250);
    cr_assert_eq(weft_msg_add_shared(m, sh), 0);
    cr_assert_eq(weft_pool_submit_msg(pool, "square", &m, NULL, NULL, &t[i]),
                 0);
  }
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(weft_task_wait(t[i], -1), 0);
    cr_assert_eq(weft_task_status(t[i]), 0);
    weft_task_free(t[i]);
  }
  const uint32_t* a = weft_shared_data(sh);
  for (uint32_t i = 0; i < 1000; i++)
    cr_assert_eq(a[i], i * i);
  weft_shared_release(sh);
  cr_assert_eq(weft_pool_close(pool), 0);
}

Test(pool, destroy_cancels_pending_tasks) {
  weft_pool_opts_t o = {.max_threads = 1, .concurrent_tasks = 2};
  weft_pool_t* pool = new_gated_pool(&o);
  cr_assert_eq(weft_pool_register(pool, "wait", task_wait, NULL), 0);
  weft_task_t* t[3];
  for (int i = 0; i < 3; i++)
    t[i] = submit_int(pool, "wait", i);
  WAIT_UNTIL(atomic_load(&block_started) == 2, 20000);
  cr_assert_eq(atomic_load(&block_started), 2);
  cr_assert_eq(weft_pool_destroy(pool), 0);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(weft_task_wait(t[i], 0), 0);
    cr_assert_eq(weft_task_status(t[i]), WEFT_ECANCELED, "task %d: %s", i,
                 weft_err_name(weft_task_status(t[i])));
    weft_task_free(t[i]);
  }
}
