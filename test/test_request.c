/* test_request.c - Criterion suite for request/reply (weft/request.h):
 * replies with callback and context, error replies, timeouts and late
 * replies, WEFT_ENOREPLY and WEFT_ECLOSED, cancel, requests to workers,
 * blocking calls from threads without a loop, transfers both ways, and
 * bad input. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__port_live_cores() */
#include "support.h"

TestSuite(request, .timeout = 30);

/* --- helpers ------------------------------------------------------------- */

/* One call's outcome, as its callback saw it. */
typedef struct {
  int calls;     /* Times the callback ran (must end at 1). */
  int status;
  int64_t value; /* The reply's integer, if any. */
  void* ctx;     /* The context the callback got. */
  uint64_t at_ns;
} outcome_t;

static void on_outcome(void* ctx, int status, weft_msg_t* reply) {
  outcome_t* o = ctx;
  o->calls++;
  o->status = status;
  o->ctx = ctx;
  o->at_ns = now_ns();
  o->value = reply != NULL ? msg_int(reply) : INT64_MIN;
  cr_assert((status == 0) == (reply != NULL), "reply iff status 0");
}

/* A replier's handler: answers the integer it gets plus one. */
static void answer_plus_one(weft_port_t* p, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) + 1);
  (void)p;
  cr_assert(weft_msg_is_request(m));
  cr_assert_eq(weft_msg_reply(m, b.data, b.len), 0);
  cr_assert(!weft_msg_is_request(m), "answered: no longer a request");
  /* Answering twice: the handle is gone. */
  cr_assert_eq(weft_msg_reply(m, b.data, b.len), WEFT_EINVAL);
}

/* A channel whose second end answers with `handler` and does not keep the
 * loop alive by itself: the pending requests do. */
static void replier_channel(weft_loop_t* loop,
                            weft_port_t** a,
                            weft_port_t** b,
                            weft_port_message_cb handler) {
  new_channel(loop, a, b);
  cr_assert_eq(weft_port_on_message(*b, handler), 0);
  cr_assert_eq(weft_port_unref(*b), 0);
}

static int request_int(weft_port_t* p,
                       int64_t v,
                       int64_t timeout_ms,
                       outcome_t* o,
                       uint64_t* id) {
  packed_t b = packed_int(v);
  return weft_port_request(p, b.data, b.len, timeout_ms, on_outcome, o, id);
}

/* Reply handles a replier keeps to answer later. */
static weft_reply_t* kept[8];
static int nkept;

static void keep_handle(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  cr_assert_lt(nkept, 8);
  cr_assert_eq(weft_msg_take_reply(m, &kept[nkept]), 0);
  cr_assert_not_null(kept[nkept]);
  nkept++;
}

static void send_int(weft_reply_t* r, int64_t v) {
  packed_t b = packed_int(v);
  cr_assert_eq(weft_reply_send(r, b.data, b.len), 0);
}

/* --- reply, error, context ------------------------------------------------- */

Test(request, reply_reaches_callback_with_its_context) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o1 = {0}, o2 = {0};
  uint64_t id1 = 0, id2 = 0;
  replier_channel(loop, &a, &b, answer_plus_one);
  cr_assert_eq(request_int(a, 41, 0, &o1, &id1), 0);
  cr_assert_eq(request_int(a, 9, 1000, &o2, &id2), 0);
  cr_assert_eq(o1.calls, 0, "never inside the call");
  cr_assert_neq(id1, 0);
  cr_assert_neq(id1, id2, "every call has its own id");
  run_loop(loop); /* Returns: nothing keeps it alive once both settled. */
  cr_assert_eq(o1.calls, 1);
  cr_assert_eq(o1.status, 0);
  cr_assert_eq(o1.value, 42);
  cr_assert_eq(o1.ctx, &o1);
  cr_assert_eq(o2.calls, 1);
  cr_assert_eq(o2.value, 10);
  cr_assert_eq(o2.ctx, &o2);
  finish(loop, a, b);
}

static void answer_error(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t *r = NULL, *again = NULL;
  (void)p;
  cr_assert_eq(weft_msg_take_reply(m, &r), 0);
  cr_assert_eq(weft_msg_take_reply(m, &again), WEFT_EINVAL, "taken already");
  cr_assert_null(again);
  /* A code that is not negative becomes WEFT_EINVAL. */
  cr_assert_eq(weft_reply_error(r, msg_int(m) == 1 ? WEFT_ERANGE : 7), 0);
}

Test(request, error_reply_is_the_outcome) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o1 = {0}, o2 = {0};
  replier_channel(loop, &a, &b, answer_error);
  cr_assert_eq(request_int(a, 1, 0, &o1, NULL), 0);
  cr_assert_eq(request_int(a, 2, 0, &o2, NULL), 0);
  run_loop(loop);
  cr_assert_eq(o1.calls, 1);
  cr_assert_eq(o1.status, WEFT_ERANGE);
  cr_assert_eq(o2.calls, 1);
  cr_assert_eq(o2.status, WEFT_EINVAL);
  finish(loop, a, b);
}

/* --- timeouts and late replies ---------------------------------------------- */

typedef struct {
  weft_port_t* a;
  weft_loop_t* loop;
  outcome_t first, second;
  uint64_t t0;
} late_t;

static late_t late;

static void answer_second_later(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  send_int(kept[1], 222);
}

static void first_timed_out(void* ctx, int status, weft_msg_t* reply) {
  on_outcome(ctx, status, reply);
  /* The second call goes out while the first's reply is still to come:
   * that reply must not reach it. */
  cr_assert_eq(request_int(late.a, 2, 0, &late.second, NULL), 0);
}

static void keep_then_answer(weft_port_t* p, weft_msg_t* m) {
  keep_handle(p, m);
  if (nkept == 1)
    return; /* The first call: answered only after it timed out. */
  /* The second: first the late reply of the first call, then its own. */
  send_int(kept[0], 111);
  cr_assert_eq(weft_set_timeout(late.loop, 20, answer_second_later, NULL,
                                NULL),
               0);
}

Test(request, timeout_then_late_reply_is_dropped_and_counted) {
  weft_port_t* b;
  uint64_t late0 = weft_request_late_replies();
  late.loop = new_loop();
  nkept = 0;
  replier_channel(late.loop, &late.a, &b, keep_then_answer);
  late.t0 = now_ns();
  cr_assert_eq(weft_port_request(late.a, packed_int(1).data, 1, 50,
                                 first_timed_out, &late.first, NULL),
               0);
  run_loop(late.loop);
  cr_assert_eq(late.first.calls, 1);
  cr_assert_eq(late.first.status, WEFT_ETIMEDOUT);
  cr_assert_geq(late.first.at_ns - late.t0, 50 * 1000000ull,
                "never earlier than the timeout");
  cr_assert_eq(late.second.calls, 1);
  cr_assert_eq(late.second.status, 0);
  cr_assert_eq(late.second.value, 222, "its own reply, not the late one");
  cr_assert_eq(weft_request_late_replies() - late0, 1);
  finish(late.loop, late.a, b);
}

Test(request, reply_after_every_call_settled_is_counted) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  uint64_t late0 = weft_request_late_replies();
  nkept = 0;
  replier_channel(loop, &a, &b, keep_handle);
  cr_assert_eq(request_int(a, 1, 10, &o, NULL), 0);
  run_loop(loop);
  cr_assert_eq(o.status, WEFT_ETIMEDOUT);
  cr_assert_eq(nkept, 1);
  /* Nothing is pending on the loop any more: the reply is dropped. */
  send_int(kept[0], 5);
  cr_assert_eq(weft_request_late_replies() - late0, 1);
  cr_assert_eq(o.calls, 1);
  finish(loop, a, b);
}

/* --- ENOREPLY ---------------------------------------------------------------- */

static void ignore(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  cr_assert(weft_msg_is_request(m));
}

static void take_and_free(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)p;
  cr_assert_eq(weft_msg_take_reply(m, &r), 0);
  weft_reply_free(r);
}

Test(request, unanswered_request_settles_enoreply) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b, *c, *d;
  outcome_t o1 = {0}, o2 = {0}, o3 = {0};
  weft_msg_t* got = NULL;
  replier_channel(loop, &a, &b, ignore);
  replier_channel(loop, &c, &d, take_and_free);
  cr_assert_eq(request_int(a, 1, 0, &o1, NULL), 0);
  cr_assert_eq(request_int(c, 1, 0, &o2, NULL), 0);
  run_loop(loop);
  cr_assert_eq(o1.calls, 1);
  cr_assert_eq(o1.status, WEFT_ENOREPLY, "handler returned, no reply");
  cr_assert_eq(o2.calls, 1);
  cr_assert_eq(o2.status, WEFT_ENOREPLY, "handle freed");
  /* Received without a loop's handler, then freed. */
  cr_assert_eq(weft_port_on_message(b, NULL), 0);
  cr_assert_eq(request_int(a, 1, 0, &o3, NULL), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert(weft_msg_is_request(got));
  weft_msg_free(got);
  run_loop(loop);
  cr_assert_eq(o3.calls, 1);
  cr_assert_eq(o3.status, WEFT_ENOREPLY);
  free_channel(c, d);
  finish(loop, a, b);
}

/* --- ECLOSED ----------------------------------------------------------------- */

Test(request, peer_port_freed_with_request_queued_settles_eclosed) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  new_channel(loop, &a, &b); /* b never started: the request waits. */
  cr_assert_eq(request_int(a, 1, 0, &o, NULL), 0);
  cr_assert_eq(weft_port_free(b), 0);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(o.status, WEFT_ECLOSED);
  /* On a closed port nothing is sent and no callback runs. */
  cr_assert_eq(request_int(a, 1, 0, &o, NULL), WEFT_ECLOSED);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(weft_port_free(a), 0);
  free_loop(loop);
}

static void close_self(weft_port_t* p, weft_msg_t* m) {
  (void)m;
  cr_assert_eq(weft_port_close(p), 0);
}

Test(request, requests_after_the_peer_closes_settle_eclosed) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o1 = {0}, o2 = {0};
  replier_channel(loop, &a, &b, close_self);
  cr_assert_eq(request_int(a, 1, 0, &o1, NULL), 0);
  cr_assert_eq(request_int(a, 2, 0, &o2, NULL), 0);
  run_loop(loop);
  cr_assert_eq(o1.calls, 1);
  cr_assert_eq(o1.status, WEFT_ENOREPLY, "delivered, then unanswered");
  cr_assert_eq(o2.calls, 1);
  /* Delivered after 'close' is not: the port drops it. */
  cr_assert(o2.status == WEFT_ECLOSED || o2.status == WEFT_ENOREPLY,
            "%s", weft_err_name(o2.status));
  finish(loop, a, b);
}

/* --- cancel ------------------------------------------------------------------ */

Test(request, cancel_settles_ecanceled_and_the_reply_counts_late) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  uint64_t id = 0, late0 = weft_request_late_replies();
  nkept = 0;
  replier_channel(loop, &a, &b, keep_handle);
  cr_assert_eq(request_int(a, 1, 0, &o, &id), 0);
  cr_assert_eq(weft_loop_drain(loop), 0);
  cr_assert_eq(weft_request_cancel(loop, id), 0);
  cr_assert_eq(o.calls, 0, "not inside the cancel");
  cr_assert_eq(weft_request_cancel(loop, id), WEFT_EINVAL, "settled");
  cr_assert_eq(weft_request_cancel(loop, id + 1000), WEFT_EINVAL);
  cr_assert_eq(weft_request_cancel(NULL, id), WEFT_EINVAL);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(o.status, WEFT_ECANCELED);
  if (nkept == 1)
    send_int(kept[0], 1);
  else
    cr_assert_eq(nkept, 0);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(weft_request_late_replies() - late0, 1,
               "the reply, or the unanswered request, counted late");
  finish(loop, a, b);
}

/* --- bad input --------------------------------------------------------------- */

static void* request_without_loop(void* arg) {
  outcome_t o = {0};
  packed_t v = packed_int(1);
  intptr_t err =
      weft_port_request(arg, v.data, v.len, 0, on_outcome, &o, NULL);
  return (void*)err;
}

Test(request, bad_input_is_refused) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  packed_t v = packed_int(1);
  weft_msg_t* m = NULL;
  weft_reply_t* r = (weft_reply_t*)1;
  pthread_t t;
  void* res;
  uint64_t id = 99;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_request(NULL, v.data, v.len, 0, on_outcome, &o,
                                 &id),
               WEFT_EINVAL);
  cr_assert_eq(id, 0);
  cr_assert_eq(weft_port_request(a, v.data, v.len, 0, NULL, &o, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_port_request(a, NULL, 1, 0, on_outcome, &o, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_port_request(a, "\xc1", 1, 0, on_outcome, &o, NULL),
               WEFT_EDECODE, "not one msgpack value");
  cr_assert_eq(weft_port_request(a, "\x01\x02", 2, 0, on_outcome, &o, NULL),
               WEFT_EDECODE, "two values");
  cr_assert_eq(weft_port_request_msg(a, NULL, 0, on_outcome, &o, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_port_request_msg(a, &m, 0, on_outcome, &o, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_worker_request(NULL, v.data, v.len, 0, on_outcome, &o,
                                   NULL),
               WEFT_EINVAL);
  /* A thread that runs no loop: the callback would have nowhere to run. */
  cr_assert_eq(pthread_create(&t, NULL, request_without_loop, a), 0);
  cr_assert_eq(pthread_join(t, &res), 0);
  cr_assert_eq((intptr_t)res, WEFT_ENOLOOP);
  /* Not a request. */
  cr_assert_eq(weft_port_post(a, v.data, v.len), 0);
  cr_assert_eq(weft_port_receive(b, &m), 0);
  cr_assert(!weft_msg_is_request(m));
  cr_assert_eq(weft_msg_take_reply(m, &r), WEFT_EINVAL);
  cr_assert_null(r);
  cr_assert_eq(weft_msg_reply(m, v.data, v.len), WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert(!weft_msg_is_request(NULL));
  cr_assert_eq(weft_msg_take_reply(NULL, &r), WEFT_EINVAL);
  cr_assert_eq(weft_reply_send(NULL, v.data, v.len), WEFT_EINVAL);
  cr_assert_eq(weft_reply_send_msg(NULL, &m), WEFT_EINVAL);
  cr_assert_eq(weft_reply_error(NULL, WEFT_EINVAL), WEFT_EINVAL);
  weft_reply_free(NULL);
  cr_assert_eq(o.calls, 0);
  run_loop(loop);
  cr_assert_eq(o.calls, 0, "nothing was sent: no callback");
  finish(loop, a, b);
}

static void answer_badly(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)p;
  cr_assert_eq(weft_msg_take_reply(m, &r), 0);
  /* The handle is consumed whatever the result; the requester gets the
   * code. */
  cr_assert_eq(weft_reply_send(r, "\xc1", 1), WEFT_EDECODE);
}

Test(request, a_bad_reply_settles_with_its_error) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  replier_channel(loop, &a, &b, answer_badly);
  cr_assert_eq(request_int(a, 1, 0, &o, NULL), 0);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(o.status, WEFT_EDECODE);
  finish(loop, a, b);
}

/* --- workers ----------------------------------------------------------------- */

static void worker_answer(weft_port_t* p, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) * 2);
  (void)p;
  weft_msg_reply(m, b.data, b.len);
}

static void answering_worker(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), worker_answer);
}

typedef struct {
  weft_worker_t* w;
  outcome_t o[3];
  int settled;
} wcalls_t;

static void on_worker_outcome(void* ctx, int status, weft_msg_t* reply) {
  wcalls_t* wc = weft_worker_get_data(*(weft_worker_t**)ctx);
  outcome_t* o = &wc->o[wc->settled];
  on_outcome(o, status, reply);
  o->ctx = ctx;
  if (++wc->settled == 3)
    weft_worker_free(wc->w);
}

Test(request, worker_requests_get_their_replies) {
  weft_loop_t* loop = new_loop();
  wcalls_t wc = {0};
  weft_worker_opts_t opts = {0};
  packed_t v;
  opts.user_data = &wc;
  wc.w = spawn_worker(loop, answering_worker, &opts);
  for (int i = 0; i < 3; i++) {
    v = packed_int(10 + i);
    cr_assert_eq(weft_worker_request(wc.w, v.data, v.len, 5000,
                                     on_worker_outcome, &wc.w, NULL),
                 0);
  }
  run_and_free(loop);
  cr_assert_eq(wc.settled, 3);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(wc.o[i].status, 0);
    cr_assert_eq(wc.o[i].value, 2 * (10 + i), "in order");
    cr_assert_eq(wc.o[i].calls, 1);
  }
}

/* A worker that never reads its port and ends after a while: the requests
 * queued on it are freed undelivered. */
static void deaf_worker(weft_loop_t* loop, void* arg) {
  (void)arg;
  (void)loop;
  sleep_ms(30);
  weft_worker_exit(0);
}

/* A worker that keeps the reply handle and ends. */
static void keep_and_exit(weft_port_t* p, weft_msg_t* m) {
  static weft_reply_t* held;
  (void)p;
  weft_msg_take_reply(m, &held);
  weft_worker_exit(0);
}

static void keeping_worker(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), keep_and_exit);
}

static void free_on_exit(weft_worker_t* w, int code) {
  (void)code;
  weft_worker_free(w);
}

Test(request, worker_exit_with_request_pending_settles_eclosed) {
  weft_worker_entry_cb entries[2] = {deaf_worker, keeping_worker};
  for (int i = 0; i < 2; i++) {
    weft_loop_t* loop = new_loop();
    weft_worker_opts_t opts = {0};
    weft_worker_t* w;
    outcome_t o = {0};
    packed_t v = packed_int(1);
    opts.events.exit = free_on_exit;
    w = spawn_worker(loop, entries[i], &opts);
    cr_assert_eq(
        weft_worker_request(w, v.data, v.len, 0, on_outcome, &o, NULL), 0);
    run_and_free(loop);
    cr_assert_eq(o.calls, 1, "case %d", i);
    cr_assert_eq(o.status, WEFT_ECLOSED, "case %d: %s", i,
                 weft_err_name(o.status));
  }
}

/* --- blocking calls ---------------------------------------------------------- */

typedef struct {
  weft_worker_t* w;
  weft_port_t* port;
  int64_t timeout_ms;
  int n;
  int errs[8];
  int64_t values[8];
  uint64_t elapsed_ns[8];
  intptr_t on_loop; /* weft_loop_current() != NULL on the caller. */
} callers_t;

static void* call_worker_thread(void* arg) {
  callers_t* c = arg;
  c->on_loop = weft_loop_current() != NULL;
  for (int i = 0; i < c->n; i++) {
    weft_msg_t* reply = (weft_msg_t*)1;
    packed_t v = packed_int(i);
    uint64_t t0 = now_ns();
    c->errs[i] = weft_worker_call(c->w, v.data, v.len, c->timeout_ms, &reply);
    c->elapsed_ns[i] = now_ns() - t0;
    c->values[i] = reply != NULL ? msg_int(reply) : INT64_MIN;
    if ((c->errs[i] == 0) != (reply != NULL))
      c->values[i] = -999; /* Reply iff 0: checked by the test. */
    weft_msg_free(reply);
  }
  return NULL;
}

static void end_worker(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_worker_free(arg);
}

Test(request, blocking_worker_call_from_a_thread_without_loop) {
  weft_loop_t* loop = new_loop();
  callers_t c = {0};
  pthread_t t;
  c.w = spawn_worker(loop, answering_worker, NULL);
  c.n = 8;
  c.timeout_ms = 5000;
  cr_assert_eq(pthread_create(&t, NULL, call_worker_thread, &c), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(c.on_loop, 0);
  for (int i = 0; i < c.n; i++) {
    cr_assert_eq(c.errs[i], 0, "call %d: %s", i, weft_err_name(c.errs[i]));
    cr_assert_eq(c.values[i], 2 * i);
  }
  cr_assert_eq(weft_set_immediate(loop, end_worker, c.w, NULL), 0);
  run_and_free(loop);
}

static weft_reply_t* worker_kept[4];
static atomic_int worker_nkept;

/* Keeps the first handle; answers the second at once. */
static void worker_keep_first(weft_port_t* p, weft_msg_t* m) {
  int n = atomic_fetch_add(&worker_nkept, 1);
  (void)p;
  if (n == 0) {
    weft_msg_take_reply(m, &worker_kept[0]);
    return;
  }
  /* First the first call's late reply, then the second's own: the
   * second call's wait meets the late one first. */
  weft_reply_send(worker_kept[0], "\x05", 1);
  worker_answer(p, m);
}

static void keep_first_worker(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), worker_keep_first);
}

Test(request, blocking_call_times_out_then_the_next_gets_its_own_reply) {
  weft_loop_t* loop = new_loop();
  callers_t c = {0};
  pthread_t t;
  uint64_t late0 = weft_request_late_replies();
  atomic_store(&worker_nkept, 0);
  c.w = spawn_worker(loop, keep_first_worker, NULL);
  c.n = 2;
  c.timeout_ms = 60;
  cr_assert_eq(pthread_create(&t, NULL, call_worker_thread, &c), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(c.errs[0], WEFT_ETIMEDOUT);
  cr_assert_geq(c.elapsed_ns[0], 60 * 1000000ull, "never earlier");
  cr_assert_eq(c.values[0], INT64_MIN, "no reply on error");
  cr_assert_eq(c.errs[1], 0, "%s", weft_err_name(c.errs[1]));
  cr_assert_eq(c.values[1], 2, "its own reply, not the late 5");
  WAIT_UNTIL(weft_request_late_replies() - late0 == 1, 5000);
  cr_assert_eq(weft_request_late_replies() - late0, 1);
  cr_assert_eq(weft_set_immediate(loop, end_worker, c.w, NULL), 0);
  run_and_free(loop);
}

typedef struct {
  weft_port_t* port;
  int err;
  weft_msg_t* reply;
  uint64_t elapsed_ns;
  int64_t timeout_ms;
} pcall_t;

static void* port_call_thread(void* arg) {
  pcall_t* pc = arg;
  uint64_t t0 = now_ns();
  pc->err = weft_port_call(pc->port, "\x07", 1, pc->timeout_ms, &pc->reply);
  pc->elapsed_ns = now_ns() - t0;
  return NULL;
}

Test(request, blocking_port_call_timeout_and_closed_port) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  pthread_t t;
  pcall_t pc = {0};
  new_channel(loop, &a, &b); /* b is never read: no answer. */
  pc.port = a;
  pc.timeout_ms = 40;
  cr_assert_eq(pthread_create(&t, NULL, port_call_thread, &pc), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(pc.err, WEFT_ETIMEDOUT);
  cr_assert_null(pc.reply);
  cr_assert_geq(pc.elapsed_ns, 40 * 1000000ull);
  /* The peer goes while a call waits without limit: the request is freed
   * undelivered. */
  pc.timeout_ms = 0;
  cr_assert_eq(pthread_create(&t, NULL, port_call_thread, &pc), 0);
  sleep_ms(20);
  cr_assert_eq(weft_port_free(b), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(pc.err, WEFT_ECLOSED, "%s", weft_err_name(pc.err));
  cr_assert_null(pc.reply);
  /* A closed port: refused at once. */
  cr_assert_eq(pthread_create(&t, NULL, port_call_thread, &pc), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(pc.err, WEFT_ECLOSED);
  cr_assert_eq(weft_port_free(a), 0);
  run_and_free(loop);
}

Test(request, blocking_call_bad_input) {
  weft_msg_t* reply = (weft_msg_t*)1;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_port_call(NULL, "\x01", 1, 0, &reply), WEFT_EINVAL);
  cr_assert_null(reply);
  cr_assert_eq(weft_worker_call(NULL, "\x01", 1, 0, &reply), WEFT_EINVAL);
  cr_assert_eq(weft_port_call_msg(NULL, &m, 0, &reply), WEFT_EINVAL);
  cr_assert_eq(weft_worker_call_msg(NULL, &m, 0, &reply), WEFT_EINVAL);
}

/* --- transfers ---------------------------------------------------------------- */

/* The replier takes the buffer, adds one to each byte, and moves it back. */
static void bump_buffer(weft_port_t* p, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  weft_buffer_t* buf = NULL;
  weft_reply_t* r = NULL;
  weft_msg_t* out = NULL;
  unsigned char* d;
  size_t n;
  (void)p;
  cr_assert_eq(weft_msg_take_reply(m, &r), 0);
  cr_assert_eq(weft_msg_take_buffer(m, o, &buf), 0);
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, &n), 0);
  for (size_t i = 0; i < n; i++)
    d[i]++;
  cr_assert_eq(weft_msg_new(&out), 0);
  cr_assert_eq(weft_msg_add_buffer(out, buf), 0);
  cr_assert_eq(weft_reply_send_msg(r, &out), 0);
  cr_assert_null(out);
  cr_assert(weft_buffer_detached(buf), "moved back");
  weft_buffer_free(buf);
}

typedef struct {
  int calls;
  int status;
  unsigned char bytes[4];
  size_t n;
} bufback_t;

static void on_buffer_back(void* ctx, int status, weft_msg_t* reply) {
  bufback_t* bb = ctx;
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  bb->calls++;
  bb->status = status;
  if (status != 0)
    return;
  cr_assert_eq(weft_msg_take_buffer(reply, weft_msg_object(reply), &buf), 0);
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, &bb->n), 0);
  memcpy(bb->bytes, d, bb->n < 4 ? bb->n : 4);
  weft_buffer_free(buf);
}

Test(request, a_buffer_moves_both_ways) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = NULL;
  weft_msg_t* m = NULL;
  bufback_t bb = {0};
  unsigned char* d;
  size_t n;
  replier_channel(loop, &a, &b, bump_buffer);
  cr_assert_eq(weft_buffer_new(&buf, 4), 0);
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, &n), 0);
  memcpy(d, "\x01\x02\x03\x04", 4);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, buf), 0);
  cr_assert_eq(weft_port_request_msg(a, &m, 0, on_buffer_back, &bb, NULL), 0);
  cr_assert_null(m);
  cr_assert(weft_buffer_detached(buf), "moved out");
  run_loop(loop);
  cr_assert_eq(bb.calls, 1);
  cr_assert_eq(bb.status, 0, "%s", weft_err_name(bb.status));
  cr_assert_eq(bb.n, 4);
  cr_assert_eq(memcmp(bb.bytes, "\x02\x03\x04\x05", 4), 0);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

static void* call_with_buffer_thread(void* arg) {
  pcall_t* pc = arg;
  weft_buffer_t* buf = NULL;
  weft_msg_t* m = NULL;
  unsigned char* d;
  size_t n;
  weft_buffer_new(&buf, 4);
  weft_buffer_data(buf, (void**)&d, &n);
  memcpy(d, "\x0a\x0b\x0c\x0d", 4);
  weft_msg_new(&m);
  weft_msg_add_buffer(m, buf);
  pc->err = weft_port_call_msg(pc->port, &m, 5000, &pc->reply);
  weft_msg_free(m);
  weft_buffer_free(buf);
  return NULL;
}

static void bump_buffer_and_close(weft_port_t* p, weft_msg_t* m) {
  bump_buffer(p, m);
  cr_assert_eq(weft_port_close(p), 0);
}

/* The replier's loop runs on the test thread; the caller blocks on
 * another. */
Test(request, blocking_call_moves_a_buffer_both_ways) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  pthread_t t;
  pcall_t pc = {0};
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  size_t n;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(b, bump_buffer_and_close), 0);
  pc.port = a;
  cr_assert_eq(pthread_create(&t, NULL, call_with_buffer_thread, &pc), 0);
  run_loop(loop); /* Until the handler answered and closed its port. */
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(pc.err, 0, "%s", weft_err_name(pc.err));
  cr_assert_eq(
      weft_msg_take_buffer(pc.reply, weft_msg_object(pc.reply), &buf), 0);
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, &n), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(d, "\x0b\x0c\x0d\x0e", 4), 0);
  weft_buffer_free(buf);
  weft_msg_free(pc.reply);
  finish(loop, a, b);
}

/* --- more replier and requester paths ------------------------------------------ */

static void answer_fmt(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)p;
  cr_assert_eq(weft_msg_take_reply(m, &r), 0);
  cr_assert_eq(weft_reply_send_fmt(r, "si", "ok", (int)msg_int(m)), 0);
}

static weft_msg_t* kept_reply;

static void keep_reply(void* ctx, int status, weft_msg_t* reply) {
  on_outcome(ctx, status, reply);
  cr_assert_eq(weft_msg_keep(reply), 0);
  kept_reply = reply;
}

Test(request, fmt_reply_and_a_reply_kept_past_its_callback) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  outcome_t o = {0};
  const char* s = NULL;
  size_t slen = 0;
  int v = 0;
  packed_t req = packed_int(7);
  replier_channel(loop, &a, &b, answer_fmt);
  cr_assert_eq(weft_port_request(a, req.data, req.len, 0, keep_reply, &o,
                                 NULL),
               0);
  run_loop(loop);
  cr_assert_eq(o.calls, 1);
  cr_assert_eq(o.status, 0);
  cr_assert_not_null(kept_reply);
  cr_assert_eq(weft_msg_read(kept_reply, "si", &s, &slen, &v), 0);
  cr_assert_eq(slen, 2);
  cr_assert_eq(memcmp(s, "ok", 2), 0);
  cr_assert_eq(v, 7);
  weft_msg_free(kept_reply);
  finish(loop, a, b);
}

/* A worker asks its owner; the owner's message event answers; the worker
 * exits with the reply as its code. */
static void worker_asked(void* ctx, int status, weft_msg_t* reply) {
  (void)ctx;
  weft_worker_exit(status == 0 ? (int)msg_int(reply) : 100 - status);
}

static void asking_worker(weft_loop_t* loop, void* arg) {
  packed_t v = packed_int(20);
  (void)loop;
  (void)arg;
  if (weft_port_request(weft_parent_port(), v.data, v.len, 5000,
                        worker_asked, NULL, NULL) != 0)
    weft_worker_exit(99);
}

static void owner_answers(weft_worker_t* w, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) + 3);
  (void)w;
  cr_assert(weft_msg_is_request(m));
  cr_assert_eq(weft_msg_reply(m, b.data, b.len), 0);
}

Test(request, a_worker_requests_from_its_owner) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  worker_end_t end;
  weft_worker_t* w;
  watch_worker_end(&opts, &end);
  opts.events.message = owner_answers;
  w = spawn_worker(loop, asking_worker, &opts);
  run_loop(loop);
  cr_assert_eq(end.exit_code, 23);
  cr_assert_eq(end.errors, 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* Allowed on a loop thread too: it blocks that loop, so the replier must
 * run elsewhere (a worker). */
Test(request, blocking_call_from_a_loop_thread) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = spawn_worker(loop, answering_worker, NULL);
  weft_msg_t* reply = NULL;
  weft_msg_t* m = NULL;
  cr_assert_not_null(weft_loop_current());
  cr_assert_eq(weft_worker_call(w, "\x05", 1, 10000, &reply), 0);
  cr_assert_eq(msg_int(reply), 10);
  weft_msg_free(reply);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(msgpack_pack_int(weft_msg_packer(m), 8), 0);
  cr_assert_eq(weft_worker_call_msg(w, &m, 10000, &reply), 0);
  cr_assert_null(m);
  cr_assert_eq(msg_int(reply), 16);
  weft_msg_free(reply);
  weft_worker_free(w);
  run_and_free(loop);
}
