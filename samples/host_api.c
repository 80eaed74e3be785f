/* host_api - weft as a plain library: a C main with NO event loop of its
 * own makes a worker pool, submits tasks and waits on their futures (with
 * timeouts, polling, a completion callback, cancellation), maps an array
 * over the pool, and reads the pool's statistics; then it spawns a worker
 * of its own and makes blocking calls into it, with timeouts. Nothing here
 * runs a loop: the pool runs its own threads, and the worker is "hosted"
 * (spawned with no owner loop: weft's host thread owns it).
 *
 * Each step prints what it got; the times vary, so they are not printed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nanosleep */
#endif
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <weft/weft.h>

/* ---- tasks (they run on the pool's threads) ---- */

/* "square": an int -> its square. */
static int square(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t v;
  int err;
  (void)ctx;
  err = weft_msg_read(arg, "I", &v); /* WEFT_EDECODE if not an int. */
  if (err != 0)
    return err;
  return weft_msg_pack(result, "I", v * v);
}

/* "slow": sleep `ms` in 1 ms steps, watching the cancel flag; -> "done". */
static int slow(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t ms;
  struct timespec step = {0, 1000000};
  int err = weft_msg_read(arg, "I", &ms);
  if (err != 0)
    return err;
  for (int64_t i = 0; i < ms; i++) {
    if (weft_task_canceled(ctx))
      return WEFT_ECANCELED;
    nanosleep(&step, NULL);
  }
  return weft_msg_pack(result, "s", "done");
}

/* ---- a worker of our own (its own thread, loop and heap) ---- */

/* Answer a kept request after a delay: its caller may have given up. */
static void answer_late(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_reply_send_fmt(arg, "s", "late");
}

/* Requests ["add", a, b] -> a + b; ["slow", 0, ms] -> "late" after `ms`;
 * anything else -> the error WEFT_EINVAL. Runs on the worker's loop. */
static void on_request(weft_port_t* port, weft_msg_t* msg) {
  const char* op = NULL;
  size_t oplen = 0;
  int64_t a = 0, b = 0;
  weft_reply_t* r = NULL;
  (void)port;
  if (weft_msg_take_reply(msg, &r) != 0)
    return; /* A plain post: nothing to answer. */
  if (weft_msg_read(msg, "sII", &op, &oplen, &a, &b) != 0) {
    weft_reply_error(r, WEFT_EDECODE);
  } else if (oplen == 3 && memcmp(op, "add", 3) == 0) {
    weft_reply_send_fmt(r, "I", a + b);
  } else if (oplen == 4 && memcmp(op, "slow", 4) == 0 && b >= 0) {
    /* The handle may outlive the message: answer from a timer. */
    if (weft_set_timeout(weft_loop_current(), (uint64_t)b, answer_late, r,
                         NULL) != 0)
      weft_reply_error(r, WEFT_ENOMEM);
  } else {
    weft_reply_error(r, WEFT_EINVAL);
  }
}

static void calc_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), on_request);
}

/* ---- helpers ---- */

static void die(const char* what, int err) {
  fprintf(stderr, "host_api: %s: %s (%s)\n", what, weft_strerror(err),
          weft_err_name(err));
  exit(1);
}

#define TRY(what, expr)        \
  do {                         \
    int err_ = (expr);         \
    if (err_ != 0)             \
      die(what, err_);         \
  } while (0)

/* Submit task `name` with one int64 argument; returns its future. */
static weft_task_t* submit_int(weft_pool_t* pool,
                               const char* name,
                               int64_t v,
                               weft_task_done_cb cb,
                               void* ctx) {
  weft_msg_t* m = NULL;
  weft_task_t* t = NULL;
  TRY("weft_msg_new", weft_msg_new(&m));
  TRY("weft_msg_pack", weft_msg_pack(m, "I", v));
  TRY("weft_pool_submit_msg",
      weft_pool_submit_msg(pool, name, &m, cb, ctx, &t));
  return t;
}

/* The int64 a finished task returned. */
static int64_t take_int(weft_task_t* t) {
  weft_msg_t* r = NULL;
  int64_t v = 0;
  TRY("weft_task_take_result", weft_task_take_result(t, &r));
  TRY("weft_msg_read", weft_msg_read(r, "I", &v));
  weft_msg_free(r);
  return v;
}

/* A blocking call ["op", a, b] into worker `w`: its outcome code, and the
 * reply in `*reply` on 0. */
static int call3(weft_worker_t* w,
                 const char* op,
                 int64_t a,
                 int64_t b,
                 int64_t timeout_ms,
                 weft_msg_t** reply) {
  weft_msg_t* m = NULL;
  int err;
  TRY("weft_msg_new", weft_msg_new(&m));
  TRY("weft_msg_pack", weft_msg_pack(m, "sII", op, a, b));
  err = weft_worker_call_msg(w, &m, timeout_ms, reply);
  weft_msg_free(m); /* NULL once the call took it. */
  return err;
}

/* A completion callback: with no loop on the submitting thread it runs on
 * a pool thread as the task settles, so it only stores and signals. */
typedef struct {
  atomic_int done;
  int status;
  int64_t value;
} outcome_t;

static void on_done(void* ctx, int status, weft_msg_t* result) {
  outcome_t* o = ctx;
  int64_t v = 0;
  if (status == 0 && weft_msg_read(result, "I", &v) != 0)
    status = WEFT_EDECODE;
  o->status = status;
  o->value = v;
  atomic_store_explicit(&o->done, 1, memory_order_release); /* Publishes
                                                             * the above. */
}

int main(void) {
  weft_pool_opts_t opts;
  weft_pool_t* pool = NULL;
  weft_task_t *t, *blocker, *queued;
  weft_pool_stats_t st;
  outcome_t out;
  int err;

  printf("host_api: no event loop in this program (weft_loop_current() %s)\n",
         weft_loop_current() == NULL ? "is NULL" : "is set");

  /* One thread, so that a second task waits in the queue. */
  memset(&opts, 0, sizeof opts);
  opts.name = "host";
  opts.max_threads = 1;
  TRY("weft_pool_new", weft_pool_new(&pool, &opts));
  TRY("register square", weft_pool_register(pool, "square", square, NULL));
  TRY("register slow", weft_pool_register(pool, "slow", slow, NULL));

  /* 1. Submit, wait, take the result. */
  t = submit_int(pool, "square", 7, NULL, NULL);
  TRY("weft_task_wait", weft_task_wait(t, 5000));
  printf("1. square(7) = %" PRId64 "\n", take_int(t));
  weft_task_free(t);

  /* 2. A wait that times out, then one that does not. */
  t = submit_int(pool, "slow", 500, NULL, NULL);
  err = weft_task_wait(t, 10);
  printf("2. slow(500 ms), waited 10 ms: %s\n", weft_err_name(err));
  TRY("weft_task_wait", weft_task_wait(t, 10000));
  {
    weft_msg_t* r = NULL;
    const char* s = NULL;
    size_t n = 0;
    TRY("weft_task_take_result", weft_task_take_result(t, &r));
    TRY("weft_msg_read", weft_msg_read(r, "s", &s, &n));
    printf("   waited longer: \"%.*s\"\n", (int)n, s);
    weft_msg_free(r);
  }
  weft_task_free(t);

  /* 3. Polling: status is WEFT_EAGAIN while the task is pending. */
  t = submit_int(pool, "slow", 50, NULL, NULL);
  err = weft_task_status(t);
  printf("3. polled at once: %s\n", weft_err_name(err));
  while ((err = weft_task_status(t)) == WEFT_EAGAIN) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL); /* The host does its own work meanwhile. */
  }
  printf("   polled until settled: status %d\n", err);
  weft_task_free(t);

  /* 4. A completion callback, and no future at all. */
  memset(&out, 0, sizeof out);
  atomic_init(&out.done, 0);
  TRY("submit with a callback",
      weft_pool_submit(pool, "square", "\x2a", 1, on_done, &out, NULL));
  for (int i = 0; i < 10000 && !atomic_load_explicit(&out.done,
                                                     memory_order_acquire);
       i++) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  if (!atomic_load_explicit(&out.done, memory_order_acquire))
    die("the callback did not run", WEFT_ETIMEDOUT);
  printf("4. callback: status %d, square(42) = %" PRId64 "\n", out.status,
         out.value);

  /* 5. Cancel a task still in the queue (the only thread is busy). */
  blocker = submit_int(pool, "slow", 100, NULL, NULL);
  queued = submit_int(pool, "square", 3, NULL, NULL);
  TRY("weft_task_cancel", weft_task_cancel(queued));
  TRY("weft_task_wait", weft_task_wait(queued, 5000));
  printf("5. cancelled while queued: %s\n",
         weft_err_name(weft_task_status(queued)));
  /* ...and one already running: its loop sees the flag. */
  TRY("weft_task_cancel", weft_task_cancel(blocker));
  TRY("weft_task_wait", weft_task_wait(blocker, 5000));
  printf("   cancelled while running: %s\n",
         weft_err_name(weft_task_status(blocker)));
  weft_task_free(queued);
  weft_task_free(blocker);

  /* 6. Errors come back as codes, never as a crash. */
  err = weft_pool_submit(pool, "cube", "\x03", 1, NULL, NULL, &t);
  printf("6. unknown task: %s\n", weft_err_name(err));
  t = NULL;
  TRY("weft_pool_submit", weft_pool_submit(pool, "square", "\xa1x", 2, NULL,
                                           NULL, &t));
  TRY("weft_task_wait", weft_task_wait(t, 5000));
  printf("   square(\"x\"): %s\n", weft_err_name(weft_task_status(t)));
  weft_task_free(t);

  /* 7. A parallel map: one task per element, results in input order. */
  {
    static const unsigned char ten[] = {0x9a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    weft_msg_t* res = NULL;
    const msgpack_object* o;
    int64_t sum = 0, v = 0;
    TRY("weft_pool_map", weft_pool_map(pool, "square", ten, sizeof ten, &res));
    o = weft_msg_object(res); /* An array, one result per element. */
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      TRY("weft_obj_read", weft_obj_read(&o->via.array.ptr[i], "I", &v));
      sum += v;
    }
    printf("7. map square over 1..10: %u results, last %" PRId64
           ", sum %" PRId64 "\n",
           o->via.array.size, v, sum);
    weft_msg_free(res);
  }

  TRY("weft_pool_stats", weft_pool_stats(pool, &st));
  printf("pool stats: completed %" PRIu64 ", failed %" PRIu64
         ", canceled %" PRIu64 "\n",
         st.completed, st.failed, st.canceled);
  TRY("weft_pool_close", weft_pool_close(pool));
  printf("pool closed\n");

  /* 8. A worker of our own, and blocking calls into it. */
  {
    weft_worker_t* w = NULL;
    weft_msg_t* reply = NULL;
    int64_t v = 0;
    uint64_t late0 = weft_request_late_replies();
    TRY("weft_worker_spawn", weft_worker_spawn(&w, NULL, calc_entry, NULL));
    TRY("call add", call3(w, "add", 2, 40, 5000, &reply));
    TRY("weft_msg_read", weft_msg_read(reply, "I", &v));
    weft_msg_free(reply);
    printf("8. worker call add(2, 40) = %" PRId64 "\n", v);
    err = call3(w, "slow", 0, 300, 20, &reply);
    printf("   a call the worker answers after 300 ms, waited 20 ms: %s\n",
           weft_err_name(err));
    /* Its answer comes later, while no call waits: the next call meets it
     * first, drops it and counts it, and gets its own reply. */
    {
      struct timespec t = {0, 400000000};
      nanosleep(&t, NULL);
    }
    TRY("call add", call3(w, "add", 1, 1, 5000, &reply));
    TRY("weft_msg_read", weft_msg_read(reply, "I", &v));
    weft_msg_free(reply);
    printf("   the next call gets its own reply: %" PRId64 "\n", v);
    /* On a busy machine the answer may come later still: a blocking
     * caller finds late replies when it next calls, so call again. */
    for (int i = 0; i < 50 && weft_request_late_replies() == late0; i++) {
      struct timespec t = {0, 100000000};
      nanosleep(&t, NULL);
      TRY("call add", call3(w, "add", 0, 0, 5000, &reply));
      weft_msg_free(reply);
    }
    printf("   late replies dropped: %" PRIu64 "\n",
           weft_request_late_replies() - late0);
    err = call3(w, "mul", 6, 7, 5000, &reply);
    printf("   unknown op: %s\n", weft_err_name(err));
    TRY("weft_worker_terminate", weft_worker_terminate(w, NULL));
    weft_worker_free(w);
    printf("worker freed\n");
  }
  return 0;
}
