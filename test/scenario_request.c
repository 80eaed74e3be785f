/* scenario_request.c - concurrent paths of request/reply as a plain program
 * (runs under ThreadSanitizer, where Criterion cannot start): blocking
 * calls from several threads without a loop into one worker, replies
 * racing their timeouts (every call ends once, with its own reply or
 * WEFT_ETIMEDOUT, and every reply that missed its call is counted late),
 * a worker that answers through another worker (a chained request, and a
 * reply handle moved to the other worker's thread), a port freed while
 * a thread blocks in a call on it, and (WEFT_FAILPOINTS builds) a request
 * with its k-th allocation failing, for every k: the request is refused
 * with WEFT_ENOMEM and no callback runs, or its callback runs once. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__failpoint_arm() */
#include "support.h"

#define SCALE(n) (UNDER_TSAN ? (n) / 5 : (n))

/* --- helpers --------------------------------------------------------------- */

static void doubler(weft_port_t* p, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) * 2);
  (void)p;
  CHECK(weft_msg_reply(m, b.data, b.len) == 0, "reply");
}

static void doubler_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), doubler);
}

static void free_worker_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_worker_free(arg);
}

/* Free `w` from its loop and run the loop until everything ended. */
static void end_worker(weft_loop_t* loop, weft_worker_t* w) {
  CHECK(weft_set_immediate(loop, free_worker_task, w, NULL) == 0, "imm");
  run_and_free(loop);
}

/* --- 1. blocking calls from several threads ----------------------------------- */

#define CALLERS 4

typedef struct {
  weft_worker_t* w;
  int id;
  int calls;
  int64_t timeout_ms;
  int ok, timedout, bad;
} caller_t;

static void* caller_main(void* arg) {
  caller_t* c = arg;
  for (int i = 0; i < c->calls; i++) {
    int64_t v = (int64_t)c->id * 1000000 + i;
    packed_t b = packed_int(v);
    weft_msg_t* reply = NULL;
    int err = weft_worker_call(c->w, b.data, b.len, c->timeout_ms, &reply);
    if (err == 0 && msg_int(reply) == 2 * v)
      c->ok++;
    else if (err == WEFT_ETIMEDOUT && reply == NULL)
      c->timedout++;
    else
      c->bad++;
    weft_msg_free(reply);
  }
  return NULL;
}

static void blocking_calls_from_threads(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = spawn_worker(loop, doubler_entry, NULL);
  pthread_t t[CALLERS];
  caller_t c[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    c[i] = (caller_t){.w = w, .id = i, .calls = SCALE(1000),
                      .timeout_ms = 20000};
    CHECK(pthread_create(&t[i], NULL, caller_main, &c[i]) == 0, "thread");
  }
  for (int i = 0; i < CALLERS; i++) {
    CHECK(pthread_join(t[i], NULL) == 0, "join");
    CHECK(c[i].ok == c[i].calls, "caller %d: %d of %d ok, %d bad", i,
          c[i].ok, c[i].calls, c[i].bad);
  }
  end_worker(loop, w);
}

/* --- 2. replies racing timeouts --------------------------------------------- */

static atomic_uint answer_seed;
/* Answers the worker still owes (its timers): the worker ends only when
 * they are all sent, so none is dropped with its timer. */
static atomic_int answers_owed;

typedef struct {
  weft_reply_t* r;
  int64_t v;
} later_t;

static void answer_later_value(weft_loop_t* loop, void* arg) {
  later_t* l = arg;
  packed_t b = packed_int(2 * l->v);
  (void)loop;
  weft_reply_send(l->r, b.data, b.len);
  free(l);
  atomic_fetch_sub(&answers_owed, 1);
}

/* Answers at once, after a short spin, or from a 1 ms timer: replies land
 * before, at and after the callers' 1-2 ms timeouts. */
static void slow_doubler(weft_port_t* p, weft_msg_t* m) {
  unsigned s = atomic_fetch_add(&answer_seed, 1);
  uint64_t rnd = mix64(s);
  later_t* l = malloc(sizeof(*l));
  (void)p;
  CHECK(l != NULL, "malloc");
  atomic_fetch_add(&answers_owed, 1);
  l->v = msg_int(m);
  CHECK(weft_msg_take_reply(m, &l->r) == 0, "take");
  switch (rnd % 3) {
    case 0:
      answer_later_value(NULL, l);
      break;
    case 1:
      busy_ms(1);
      answer_later_value(NULL, l);
      break;
    default:
      CHECK(weft_set_timeout(weft_loop_current(), 1 + rnd % 2,
                             answer_later_value, l, NULL) == 0,
            "timer");
      break;
  }
}

static void slow_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), slow_doubler);
}

typedef struct {
  weft_worker_t* w;
  int left, inflight;
  int ok, timedout, bad;
  int64_t next;
} loop_caller_t;

static void loop_send(loop_caller_t* lc);

typedef struct {
  loop_caller_t* lc;
  int64_t v;
} loop_call_t;

static void loop_call_outcome(void* ctx, int status, weft_msg_t* reply) {
  loop_call_t* call = ctx;
  loop_caller_t* lc = call->lc;
  if (status == 0 && msg_int(reply) == 2 * call->v)
    lc->ok++;
  else if (status == WEFT_ETIMEDOUT && reply == NULL)
    lc->timedout++;
  else
    lc->bad++;
  free(call);
  lc->inflight--;
  loop_send(lc);
}

static void loop_send(loop_caller_t* lc) {
  while (lc->left > 0 && lc->inflight < 4) {
    loop_call_t* call = malloc(sizeof(*call));
    packed_t b;
    CHECK(call != NULL, "malloc");
    call->lc = lc;
    call->v = lc->next++;
    b = packed_int(call->v);
    CHECK(weft_worker_request(lc->w, b.data, b.len, 1 + call->v % 2,
                              loop_call_outcome, call, NULL) == 0,
          "request");
    lc->left--;
    lc->inflight++;
  }
}

static void replies_racing_timeouts(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = spawn_worker(loop, slow_entry, NULL);
  uint64_t late0 = weft_request_late_replies();
  pthread_t t[2];
  caller_t c[2];
  loop_caller_t lc = {.w = w, .left = SCALE(1000), .next = 7000000};
  int total, timedout = 0;
  for (int i = 0; i < 2; i++) {
    c[i] = (caller_t){.w = w, .id = i, .calls = SCALE(1000),
                      .timeout_ms = 1 + i};
    CHECK(pthread_create(&t[i], NULL, caller_main, &c[i]) == 0, "thread");
  }
  loop_send(&lc);
  /* The loop caller's calls keep the loop alive, not the worker (unref'd):
   * the run returns when they all settled. */
  CHECK(weft_worker_unref(w) == 0, "unref");
  run_loop(loop);
  CHECK(lc.left == 0 && lc.inflight == 0, "loop calls settled");
  CHECK(lc.bad == 0, "loop caller: %d bad outcomes", lc.bad);
  total = lc.ok + lc.timedout;
  timedout = lc.timedout;
  for (int i = 0; i < 2; i++) {
    CHECK(pthread_join(t[i], NULL) == 0, "join");
    CHECK(c[i].bad == 0, "caller %d: %d bad outcomes", i, c[i].bad);
    total += c[i].ok + c[i].timedout;
    timedout += c[i].timedout;
  }
  CHECK(total == SCALE(1000) * 3, "every call ended once: %d", total);
  /* Every outcome that missed its call counts late, once. The callers'
   * threads exited, so their inboxes are gone. */
  WAIT_UNTIL(atomic_load(&answers_owed) == 0, 10000);
  CHECK(atomic_load(&answers_owed) == 0, "answers owed");
  CHECK(weft_worker_ref(w) == 0, "ref");
  end_worker(loop, w);
  WAIT_UNTIL(weft_request_late_replies() - late0 == (uint64_t)timedout, 5000);
  CHECK(weft_request_late_replies() - late0 == (uint64_t)timedout,
        "late %llu, timed out %d",
        (unsigned long long)(weft_request_late_replies() - late0), timedout);
  printf("racing timeouts: %d calls, %d timed out, as many late replies\n",
         total, timedout);
}

/* --- 3. answering through another worker ------------------------------------- */

/* Worker B: [handle, v] answers the handle directly (it moved threads);
 * a request v answers 2v. */
static void b_handler(weft_port_t* p, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  (void)p;
  if (weft_msg_is_request(m)) {
    doubler(p, m);
    return;
  }
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2,
        "pair");
  {
    weft_reply_t* r = (weft_reply_t*)(uintptr_t)o->via.array.ptr[0].via.u64;
    packed_t b = packed_int(2 * obj_int(&o->via.array.ptr[1]) + 1);
    CHECK(weft_reply_send(r, b.data, b.len) == 0, "send from B");
  }
}

static void b_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), b_handler);
}

static weft_worker_t* a_child; /* Worker A's thread only. */

static void a_chained_outcome(void* ctx, int status, weft_msg_t* reply) {
  weft_reply_t* r = ctx;
  if (status != 0) {
    weft_reply_error(r, status);
    return;
  }
  {
    packed_t b = packed_int(msg_int(reply) + 1);
    CHECK(weft_reply_send(r, b.data, b.len) == 0, "send from A");
  }
}

/* Worker A: an odd v goes on to B as a request of A's own; an even one
 * sends B the reply handle itself. Both answer 2v + 1. */
static void a_handler(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  int64_t v = msg_int(m);
  (void)p;
  CHECK(weft_msg_take_reply(m, &r) == 0, "take in A");
  if (v % 2 != 0) {
    packed_t b = packed_int(v);
    CHECK(weft_worker_request(a_child, b.data, b.len, 0, a_chained_outcome,
                              r, NULL) == 0,
          "chained request");
  } else {
    unsigned char buf[32];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, (uint64_t)(uintptr_t)r);
    msgpack_pack_int64(&pk, v);
    CHECK(sb.size <= sizeof(buf), "size");
    memcpy(buf, sb.data, sb.size);
    CHECK(weft_worker_post(a_child, buf, sb.size) == 0, "handle to B");
    msgpack_sbuffer_destroy(&sb);
  }
}

static void a_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  a_child = spawn_worker(loop, b_entry, NULL);
  weft_worker_unref(a_child);
  weft_port_on_message(weft_parent_port(), a_handler);
}

typedef struct {
  int n, ok, bad;
  int64_t v[64];
} chain_t;

/* A thread without a loop calling A meanwhile. */
static void* chain_caller_main(void* arg) {
  caller_t* c = arg;
  for (int i = 0; i < c->calls; i++) {
    packed_t b = packed_int(5000 + i);
    weft_msg_t* reply = NULL;
    int err = weft_worker_call(c->w, b.data, b.len, c->timeout_ms, &reply);
    if (err == 0 && msg_int(reply) == 2 * (5000 + i) + 1)
      c->ok++;
    else
      c->bad++;
    weft_msg_free(reply);
  }
  return NULL;
}

static chain_t chain;

static void chain_cb(void* ctx, int status, weft_msg_t* reply) {
  int64_t v = *(int64_t*)ctx;
  if (status == 0 && msg_int(reply) == 2 * v + 1)
    chain.ok++;
  else
    chain.bad++;
  chain.n++;
}

static void answering_through_another_worker(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* a = spawn_worker(loop, a_entry, NULL);
  pthread_t t;
  caller_t c = {.w = a, .calls = SCALE(200), .timeout_ms = 20000};
  memset(&chain, 0, sizeof(chain));
  CHECK(pthread_create(&t, NULL, chain_caller_main, &c) == 0, "thread");
  for (int i = 0; i < 64; i++) {
    packed_t b;
    chain.v[i] = 1000 + i;
    b = packed_int(chain.v[i]);
    CHECK(weft_worker_request(a, b.data, b.len, 20000, chain_cb, &chain.v[i],
                              NULL) == 0,
          "request A");
  }
  CHECK(weft_worker_unref(a) == 0, "unref");
  run_loop(loop);
  CHECK(pthread_join(t, NULL) == 0, "join");
  CHECK(c.ok == c.calls, "blocking through A: %d of %d ok", c.ok, c.calls);
  CHECK(chain.n == 64 && chain.ok == 64, "chained: %d of %d ok, %d bad",
        chain.ok, chain.n, chain.bad);
  CHECK(weft_worker_ref(a) == 0, "ref");
  end_worker(loop, a);
}

/* --- 4. a port freed while a thread blocks in a call on it -------------------- */

typedef struct {
  weft_port_t* port;
  int calls, last_err;
} port_caller_t;

static void* port_caller_main(void* arg) {
  port_caller_t* pc = arg;
  for (;;) {
    weft_msg_t* reply = NULL;
    int err = weft_port_call(pc->port, "\x03", 1, 20000, &reply);
    weft_msg_free(reply);
    if (err != 0) {
      pc->last_err = err;
      return NULL;
    }
    pc->calls++;
  }
}

static void free_port_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  CHECK(weft_port_free(arg) == 0, "free b");
}

static void close_racing_calls(int round) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  pthread_t t;
  port_caller_t pc = {0};
  new_channel(loop, &a, &b);
  CHECK(weft_port_on_message(b, doubler) == 0, "handler");
  pc.port = a;
  CHECK(pthread_create(&t, NULL, port_caller_main, &pc) == 0, "thread");
  CHECK(weft_set_timeout(loop, 1 + (uint64_t)round % 4, free_port_task, b,
                         NULL) == 0,
        "timer");
  run_loop(loop);
  CHECK(pthread_join(t, NULL) == 0, "join");
  CHECK(pc.last_err == WEFT_ECLOSED, "round %d: call ended with %s", round,
        weft_err_name(pc.last_err));
  CHECK(weft_port_free(a) == 0, "free a");
  free_loop(loop);
}

/* --- 5. allocation failures ----------------------------------------------- */

#ifdef WEFT_FAILPOINTS
static void tolerant_doubler(weft_port_t* p, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) * 2);
  (void)p;
  weft_msg_reply(m, b.data, b.len); /* WEFT_ENOMEM goes to the caller. */
}

typedef struct {
  int calls, status;
  int64_t value;
} af_outcome_t;

static void af_cb(void* ctx, int status, weft_msg_t* reply) {
  af_outcome_t* o = ctx;
  o->calls++;
  o->status = status;
  o->value = reply != NULL ? msg_int(reply) : INT64_MIN;
}

/* One run with the k-th allocation failing (0: none); returns the
 * allocations it made. */
static uint64_t allocfail_run(uint64_t k) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  af_outcome_t o = {0};
  packed_t v = packed_int(21);
  uint64_t n;
  int err;
  new_channel(loop, &a, &b);
  CHECK(weft_port_on_message(b, tolerant_doubler) == 0, "handler");
  CHECK(weft_port_unref(b) == 0, "unref");
  weft__failpoint_arm(k);
  err = weft_port_request(a, v.data, v.len, 10000, af_cb, &o, NULL);
  CHECK(err == 0 || err == WEFT_ENOMEM, "k=%llu: request gave %s",
        (unsigned long long)k, weft_err_name(err));
  run_loop(loop);
  n = weft__failpoint_count();
  weft__failpoint_arm(0);
  if (err != 0) {
    CHECK(o.calls == 0, "k=%llu: refused, yet a callback ran",
          (unsigned long long)k);
  } else {
    CHECK(o.calls == 1, "k=%llu: %d callbacks", (unsigned long long)k,
          o.calls);
    CHECK(o.status != 0 || o.value == 42, "k=%llu: wrong reply",
          (unsigned long long)k);
    CHECK(k != 0 || o.status == 0, "no failure, yet %s",
          weft_err_name(o.status));
  }
  finish(loop, a, b);
  return n;
}

static void allocation_failures(void) {
  uint64_t n = allocfail_run(0);
  for (uint64_t k = 1; k <= n + 1; k++)
    allocfail_run(k);
  allocfail_run(0); /* Still usable. */
  printf("allocation failures: a request makes %llu allocations, each failed "
         "once\n",
         (unsigned long long)n);
}
#else
static void allocation_failures(void) {
}
#endif

int main(void) {
  blocking_calls_from_threads();
  for (int round = 0; round < 2; round++)
    replies_racing_timeouts();
  answering_through_another_worker();
  for (int round = 0; round < 8; round++)
    close_racing_calls(round);
  allocation_failures();
  printf("scenario_request: ok\n");
  return 0;
}
