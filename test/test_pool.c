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
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
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

static void on_done_noloop(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
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
      weft_pool_submit(pool, "inc", p.data, p.len, on_done_noloop, NULL, &t),
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
}
