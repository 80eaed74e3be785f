/* test_actor.c - Criterion suite for actors (weft/actor.h): sending and
 * order, addresses of ended actors and reused slots, ask with timeouts and
 * late replies, the blocking call, links and exit signals, monitors,
 * registry, timers, fairness on a scheduler, backpressure (muting and
 * WEFT_EMAILBOXFULL), the mailbox limit, dead letters, bad input.
 *
 * Behaviours run on scheduler threads and never call cr_assert: they
 * record what they see (under a lock, or in atomics) and the test's
 * thread checks it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "support.h"
#include "../actors/internal.h" /* sizeof(weft_actor_t), slot bits */

TestSuite(actor, .timeout = 60);

/* Wait up to 20 s for `cond`; false if it never held. */
#define UNTIL(cond)                                             \
  ({                                                            \
    int waited_ = 0;                                            \
    while (!(cond) && waited_ < 20000) {                        \
      sleep_ms(1);                                              \
      waited_++;                                                \
    }                                                           \
    (bool)(cond);                                               \
  })

static weft_actor_system_t* new_system(unsigned schedulers) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t o = {0};
  o.schedulers = schedulers;
  cr_assert_eq(weft_actor_system_new(&sys, &o), 0);
  return sys;
}

/* --- A recorder: logs what it gets, answers requests with its count ----- */

#define LOG_MAX 8192

typedef struct {
  pthread_mutex_t lock;
  int64_t vals[LOG_MAX];
  weft_actor_id from[LOG_MAX];
  size_t n;
  weft_signal_t sigs[64];
  size_t nsig;
  atomic_int stopped;
  atomic_int stop_reason;
  int fail_on; /* A value that makes the behaviour fail with it. */
} rec_t;

static rec_t* rec_new(void) {
  rec_t* r = calloc(1, sizeof(*r));
  pthread_mutex_init(&r->lock, NULL);
  return r;
}

static size_t rec_count(rec_t* r) {
  size_t n;
  pthread_mutex_lock(&r->lock);
  n = r->n;
  pthread_mutex_unlock(&r->lock);
  return n;
}

static size_t rec_nsig(rec_t* r) {
  size_t n;
  pthread_mutex_lock(&r->lock);
  n = r->nsig;
  pthread_mutex_unlock(&r->lock);
  return n;
}

static int recorder(weft_actor_t* self, void* state, weft_msg_t* msg) {
  rec_t* r = state;
  weft_signal_t s;
  int64_t v;
  (void)self;
  if (weft_actor_signal(msg, &s) != WEFT_SIGNAL_NONE) {
    pthread_mutex_lock(&r->lock);
    if (r->nsig < 64)
      r->sigs[r->nsig++] = s;
    pthread_mutex_unlock(&r->lock);
    return 0;
  }
  if (weft_msg_is_request(msg)) {
    packed_t p = packed_int((int64_t)rec_count(r));
    return weft_msg_reply(msg, p.data, p.len) == 0 ? 0 : WEFT_EINVAL;
  }
  v = msg_int(msg);
  pthread_mutex_lock(&r->lock);
  if (r->n < LOG_MAX) {
    r->vals[r->n] = v;
    r->from[r->n] = weft_actor_sender(msg);
    r->n++;
  }
  pthread_mutex_unlock(&r->lock);
  if (r->fail_on != 0 && v == r->fail_on)
    return r->fail_on;
  return 0;
}

static void rec_stop(void* state, int reason) {
  rec_t* r = state;
  atomic_store(&r->stop_reason, reason);
  atomic_store(&r->stopped, 1);
}

static weft_actor_id spawn_rec(weft_actor_system_t* sys, rec_t* r,
                               unsigned flags) {
  weft_actor_opts_t o = {0};
  weft_actor_id id = 0;
  o.on_stop = rec_stop;
  o.flags = flags;
  cr_assert_eq(weft_actor_spawn(sys, recorder, r, &o, &id), 0);
  cr_assert_neq(id, WEFT_ACTOR_NONE);
  return id;
}

static int send_int(weft_actor_id to, int64_t v) {
  packed_t p = packed_int(v);
  return weft_actor_send(to, p.data, p.len);
}

static void rec_free(rec_t* r) {
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* --- Sending ----------------------------------------------------------------- */

Test(actor, messages_from_one_sender_arrive_in_order) {
  weft_actor_system_t* sys = new_system(2);
  rec_t* r = rec_new();
  weft_actor_id id = spawn_rec(sys, r, 0);
  int64_t i;
  for (i = 0; i < 5000; i++) {
    packed_t p = packed_int(i);
    /* Waits while the mailbox is over the high-water mark (4096): a
     * sender from outside may outrun the receiver. */
    cr_assert_eq(weft_actor_send_wait(id, p.data, p.len, 10000), 0);
  }
  cr_assert(UNTIL(rec_count(r) == 5000));
  for (i = 0; i < 5000; i++) {
    cr_assert_eq(r->vals[i], i, "message %lld came as %lld", (long long)i,
                 (long long)r->vals[i]);
    cr_assert_eq(r->from[i], WEFT_ACTOR_NONE, "sent from outside");
  }
  cr_assert_eq(weft_actor_system_free(sys), 0);
  cr_assert_eq(atomic_load(&r->stop_reason), WEFT_ECLOSED);
  rec_free(r);
}

/* Sends [0..n) to `to`, then ends. */
typedef struct {
  weft_actor_id to;
  int64_t n;
} burst_t;

static int burster(weft_actor_t* self, void* state, weft_msg_t* msg) {
  burst_t* b = state;
  int64_t i;
  (void)msg;
  for (i = 0; i < b->n; i++)
    if (send_int(b->to, i) != 0)
      return WEFT_EINVAL;
  return weft_actor_stop(self, 0);
}

Test(actor, an_actor_sender_is_known_and_its_messages_keep_order) {
  weft_actor_system_t* sys = new_system(2);
  rec_t* r = rec_new();
  burst_t b;
  weft_actor_id bid;
  int64_t i;
  b.to = spawn_rec(sys, r, 0);
  b.n = 3000;
  cr_assert_eq(weft_actor_spawn(sys, burster, &b, NULL, &bid), 0);
  cr_assert_eq(send_int(bid, 0), 0);
  cr_assert(UNTIL(rec_count(r) == 3000));
  for (i = 0; i < 3000; i++) {
    cr_assert_eq(r->vals[i], i);
    cr_assert_eq(r->from[i], bid, "weft_actor_sender() names the sender");
  }
  weft_actor_system_free(sys);
  rec_free(r);
}

/* Sends [0..n) to `to`, then kills it, in one message. */
static int burst_then_kill(weft_actor_t* self, void* state, weft_msg_t* msg) {
  burst_t* b = state;
  int64_t i;
  (void)msg;
  for (i = 0; i < b->n; i++)
    if (send_int(b->to, i) != 0)
      return WEFT_EINVAL;
  (void)weft_actor_exit(b->to, WEFT_EKILLED);
  return weft_actor_stop(self, 0);
}

Test(actor, a_burst_to_one_actor_comes_before_a_signal_sent_after_it) {
  /* The burst after its first message is batched (actor.c, "Batches"):
   * the kill must not pass it. One scheduler: the receiver runs only
   * after the burster's turn. */
  weft_actor_system_t* sys = new_system(1);
  rec_t* r = rec_new();
  burst_t b;
  weft_actor_id bid;
  int64_t i;
  b.to = spawn_rec(sys, r, 0);
  b.n = 100;
  cr_assert_eq(weft_actor_spawn(sys, burst_then_kill, &b, NULL, &bid), 0);
  cr_assert_eq(send_int(bid, 0), 0);
  cr_assert(UNTIL(atomic_load(&r->stopped) == 1));
  cr_assert_eq(atomic_load(&r->stop_reason), WEFT_EKILLED);
  cr_assert_eq(rec_count(r), 100, "all sent before the kill arrived first");
  for (i = 0; i < 100; i++)
    cr_assert_eq(r->vals[i], i);
  cr_assert_eq(weft_actor_system_dead_letters(sys), 0);
  weft_actor_system_free(sys);
  rec_free(r);
}

/* Sends [0..n) to `to`, -50 in place of 50, then ends. */
static int burst_with_fail(weft_actor_t* self, void* state, weft_msg_t* msg) {
  burst_t* b = state;
  int64_t i;
  (void)msg;
  for (i = 0; i < b->n; i++)
    if (send_int(b->to, i == 50 ? -50 : i) != 0)
      return WEFT_EINVAL;
  return weft_actor_stop(self, 0);
}

typedef struct {
  weft_msg_t* kept[10];
  atomic_int n;
} keeper_t;

static int keeper(weft_actor_t* self, void* state, weft_msg_t* msg) {
  keeper_t* k = state;
  int n = atomic_load(&k->n);
  (void)self;
  if (n < 10 && weft_msg_keep(msg) == 0) {
    k->kept[n] = msg;
    atomic_store(&k->n, n + 1);
  }
  return 0;
}

Test(actor, small_messages_kept_by_a_behaviour_stay_its_own) {
  /* Small values are delivered in a message the scheduler reuses
   * (actor.c, "light messages"): one kept must not be reused. */
  weft_actor_system_t* sys = new_system(1);
  keeper_t k;
  weft_actor_id id;
  int i;
  memset(&k, 0, sizeof(k));
  cr_assert_eq(weft_actor_spawn(sys, keeper, &k, NULL, &id), 0);
  for (i = 0; i < 10; i++)
    cr_assert_eq(send_int(id, 100 + i), 0);
  cr_assert(UNTIL(atomic_load(&k.n) == 10));
  for (i = 0; i < 10; i++) {
    cr_assert_eq(msg_int(k.kept[i]), 100 + i);
    cr_assert_eq(weft_actor_sender(k.kept[i]), WEFT_ACTOR_NONE);
  }
  for (i = 0; i < 10; i++)
    weft_msg_free(k.kept[i]);
  weft_actor_system_free(sys);
}

static int64_t dead_vals[256];
static atomic_int ndead_vals;
static void log_dead(void* arg, weft_actor_id to, weft_msg_t* msg) {
  int n = atomic_fetch_add(&ndead_vals, 1);
  (void)to;
  if (n < 256)
    dead_vals[n] = msg_int(msg);
  *(weft_actor_id*)arg = to;
}

Test(actor, an_actor_that_stops_inside_a_burst_leaves_its_rest_as_dead_letters) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {0};
  weft_actor_id dead_to = 0, bid;
  rec_t* r = rec_new();
  burst_t b;
  int64_t i;
  so.schedulers = 1;
  so.dead_letter = log_dead;
  so.dead_letter_arg = &dead_to;
  atomic_store(&ndead_vals, 0);
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  r->fail_on = -50; /* Ends it, inside the burst's second batch. */
  b.to = spawn_rec(sys, r, 0);
  b.n = 200;
  cr_assert_eq(weft_actor_spawn(sys, burst_with_fail, &b, NULL, &bid), 0);
  cr_assert_eq(send_int(bid, 0), 0);
  cr_assert(UNTIL(atomic_load(&r->stopped) == 1));
  cr_assert(UNTIL(weft_actor_system_count(sys) == 0));
  cr_assert_eq(atomic_load(&r->stop_reason), -50);
  cr_assert_eq(rec_count(r), 51, "0..49, -50 handled, none after the failure");
  for (i = 0; i < 50; i++)
    cr_assert_eq(r->vals[i], i);
  cr_assert_eq(r->vals[50], -50);
  cr_assert_eq(weft_actor_system_dead_letters(sys), 149);
  cr_assert_eq(atomic_load(&ndead_vals), 149);
  for (i = 0; i < 149; i++)
    cr_assert_eq(dead_vals[i], 51 + i, "dead letters in the order sent");
  cr_assert_eq(dead_to, b.to);
  weft_actor_system_free(sys);
  rec_free(r);
}

Test(actor, send_to_an_ended_actor_is_edeadactor_and_a_reused_slot_gets_none) {
  weft_actor_system_t* sys = new_system(1);
  rec_t* first = rec_new();
  rec_t* later = rec_new();
  weft_actor_id old = spawn_rec(sys, first, 0), fresh = 0;
  int i;
  cr_assert_eq(weft_actor_exit(old, WEFT_EKILLED), 0);
  cr_assert(UNTIL(atomic_load(&first->stopped) == 1));
  cr_assert(UNTIL(weft_actor_system_count(sys) == 0));
  /* The freed slot is the next one handed out (a stack): same index, next
   * generation. */
  for (i = 0; i < 4 && (uint32_t)fresh != (uint32_t)old; i++)
    fresh = spawn_rec(sys, later, 0);
  cr_assert_eq((uint32_t)fresh, (uint32_t)old, "the slot was reused");
  cr_assert_neq(fresh, old, "with another generation");
  cr_assert_eq(send_int(old, 7), WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_send_fmt(old, "i", 7), WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_exit(old, 0), WEFT_EDEADACTOR);
  cr_assert_eq(send_int(fresh, 8), 0);
  cr_assert(UNTIL(rec_count(later) == 1));
  cr_assert_eq(later->vals[0], 8, "only its own mail");
  cr_assert_eq(send_int(WEFT_ACTOR_NONE, 1), WEFT_EDEADACTOR);
  cr_assert_eq(send_int((weft_actor_id)0xffffffff00000005ull, 1),
               WEFT_EDEADACTOR);
  weft_actor_system_free(sys);
  rec_free(first);
  rec_free(later);
}

Test(actor, bad_input_is_refused_with_a_named_code) {
  weft_actor_system_t* sys = new_system(1);
  rec_t* r = rec_new();
  weft_actor_id id = spawn_rec(sys, r, 0);
  weft_msg_t* m = NULL;
  weft_port_t *a, *b;
  weft_loop_t* loop = new_loop();
  cr_assert_eq(weft_actor_system_new(NULL, NULL), WEFT_EINVAL);
  {
    weft_actor_system_opts_t o = {0};
    weft_actor_system_t* s2 = (void*)1;
    o.schedulers = 65;
    cr_assert_eq(weft_actor_system_new(&s2, &o), WEFT_EINVAL);
    cr_assert_null(s2);
  }
  cr_assert_eq(weft_actor_spawn(NULL, recorder, r, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_actor_spawn(sys, NULL, r, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_actor_send(id, NULL, 3), WEFT_EINVAL);
  cr_assert_eq(weft_actor_send(id, "\xc1", 1), WEFT_EDECODE, "never used");
  cr_assert_eq(weft_actor_send(id, "\x92\x01", 2), WEFT_EDECODE,
               "truncated");
  cr_assert_eq(weft_actor_send_msg(id, NULL), WEFT_EINVAL);
  /* A port cannot go to an actor. */
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_array(weft_msg_packer(m), 1);
  cr_assert_eq(weft_msg_add_port(m, a), 0);
  cr_assert_eq(weft_actor_send_msg(id, &m), WEFT_EINVAL);
  cr_assert_not_null(m, "the caller keeps it");
  weft_msg_free(m);
  free_channel(a, b);
  free_loop(loop);
  cr_assert_eq(weft_actor_register(sys, "", id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_stop(NULL, 0), WEFT_EINVAL);
  cr_assert_eq(weft_actor_link(NULL, id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_trap_exits(NULL, true), WEFT_EINVAL);
  cr_assert_eq(weft_actor_send_after(NULL, 1, false, "\x01", 1, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_system_free(NULL), 0);
  cr_assert(UNTIL(rec_count(r) == 0));
  weft_actor_system_free(sys);
  cr_assert_eq(rec_count(r), 0, "nothing bad was delivered");
  rec_free(r);
}

Test(actor, a_buffer_moves_to_an_actor_without_a_copy) {
  weft_actor_system_t* sys = new_system(1);
  weft_buffer_t* buf = NULL;
  weft_msg_t* m = NULL;
  weft_msg_t* reply = NULL;
  weft_actor_id id;
  rec_t* r = rec_new();
  void* data;
  cr_assert_eq(weft_buffer_new(&buf, 4096), 0);
  cr_assert_eq(weft_buffer_data(buf, &data, NULL), 0);
  memset(data, 0x5a, 4096);
  cr_assert_eq(weft_actor_spawn(sys, recorder, r, NULL, &id), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, buf), 0);
  cr_assert_eq(weft_actor_send_msg(id, &m), 0);
  cr_assert_null(m);
  cr_assert_eq(weft_buffer_size(buf), 0, "detached at the sender");
  weft_buffer_free(buf);
  (void)reply;
  cr_assert(UNTIL(rec_count(r) == 1), "delivered");
  weft_actor_system_free(sys);
  rec_free(r);
}

/* --- Ask and call -------------------------------------------------------------- */

/* Answers [n] with n + 1; never answers 0; answers -1 with an error;
 * keeps the request 99 unanswered until a plain message 98 comes. */
static weft_reply_t* held;

static int answerer(weft_actor_t* self, void* state, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  packed_t p;
  (void)self;
  (void)state;
  if (!weft_msg_is_request(msg)) {
    if (v == 98 && held != NULL) {
      p = packed_int(100);
      weft_reply_send(held, p.data, p.len);
      held = NULL;
    }
    return 0;
  }
  if (v == 0)
    return 0; /* Dropped unanswered: ENOREPLY. */
  if (v == -1) {
    weft_reply_t* r;
    weft_msg_take_reply(msg, &r);
    return weft_reply_error(r, WEFT_ERANGE);
  }
  if (v == 99)
    return weft_msg_take_reply(msg, &held);
  if (v == -2)
    return WEFT_ERANGE; /* Fails on the request, unanswered. */
  p = packed_int(v + 1);
  return weft_msg_reply(msg, p.data, p.len);
}

Test(actor, call_from_a_thread_without_a_loop) {
  weft_actor_system_t* sys = new_system(2);
  weft_actor_id id, dead;
  weft_msg_t* reply = NULL;
  packed_t p = packed_int(41);
  uint64_t late;
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &id), 0);
  cr_assert_eq(weft_actor_call(id, p.data, p.len, 5000, &reply), 0);
  cr_assert_eq(msg_int(reply), 42);
  weft_msg_free(reply);
  p = packed_int(0);
  cr_assert_eq(weft_actor_call(id, p.data, p.len, 5000, &reply), WEFT_ENOREPLY);
  cr_assert_null(reply);
  p = packed_int(-1);
  cr_assert_eq(weft_actor_call(id, p.data, p.len, 5000, &reply), WEFT_ERANGE,
               "the replier's error");
  late = weft_request_late_replies();
  p = packed_int(99);
  cr_assert_eq(weft_actor_call(id, p.data, p.len, 50, &reply), WEFT_ETIMEDOUT);
  cr_assert_eq(send_int(id, 98), 0); /* Now it answers, too late. */
  sleep_ms(50);
  /* The next call gets its own reply, not the late one, which is counted
   * when the thread's inbox meets it. */
  p = packed_int(5);
  cr_assert_eq(weft_actor_call(id, p.data, p.len, 5000, &reply), 0);
  cr_assert_eq(msg_int(reply), 6);
  weft_msg_free(reply);
  cr_assert_gt(weft_request_late_replies(), late, "the late reply is counted");
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &dead), 0);
  p = packed_int(-2);
  cr_assert_eq(weft_actor_call(dead, p.data, p.len, 5000, &reply), WEFT_ERANGE,
               "an actor that fails on a request answers with its reason");
  cr_assert_eq(weft_actor_call(dead, p.data, p.len, 5000, &reply),
               WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &dead), 0);
  cr_assert_eq(weft_actor_exit(dead, WEFT_EKILLED), 0);
  cr_assert(UNTIL(weft_actor_system_count(sys) == 1));
  cr_assert_eq(weft_actor_call(dead, p.data, p.len, 5000, &reply),
               WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_call(id, p.data, 0, 5000, &reply), WEFT_EINVAL);
  cr_assert_eq(weft_actor_call(id, "\xc1", 1, 5000, &reply), WEFT_EDECODE);
  weft_actor_system_free(sys);
}

/* Keeps every request's reply handle; its on_stop answers the first with
 * 100 and frees the second (the caller gets WEFT_ENOREPLY); a third stays
 * held past the actor's end. */
typedef struct {
  weft_reply_t* held[3];
  atomic_int n;
  atomic_int stopped;
} holder_t;

static int holder(weft_actor_t* self, void* state, weft_msg_t* msg) {
  holder_t* k = state;
  int n = atomic_load(&k->n);
  if (!weft_msg_is_request(msg)) {
    if (msg_int(msg) == 7)
      weft_actor_stop(self, 0);
    return 0;
  }
  if (n == 3)
    return 0;
  cr_assert_eq(weft_msg_take_reply(msg, &k->held[n]), 0);
  atomic_store(&k->n, n + 1);
  return 0;
}

static void holder_stop(void* state, int reason) {
  holder_t* k = state;
  packed_t p = packed_int(100);
  (void)reason;
  weft_reply_send(k->held[0], p.data, p.len);
  weft_reply_free(k->held[1]);
  atomic_store(&k->stopped, 1);
}

typedef struct {
  weft_actor_id to;
  int64_t v;
  int status;
  int64_t answer;
} blocked_call_t;

static void* blocked_call(void* arg) {
  blocked_call_t* c = arg;
  packed_t p = packed_int(c->v);
  weft_msg_t* reply = NULL;
  /* Long, but bounded: a call that nothing settles fails the test with
   * WEFT_ETIMEDOUT rather than hanging it. */
  c->status = weft_actor_call(c->to, p.data, p.len, 20000, &reply);
  c->answer = reply != NULL ? msg_int(reply) : -1;
  weft_msg_free(reply);
  return NULL;
}

/* The handles an actor holds at the system's end are its on_stop's to
 * answer or free; those it leaves are answered WEFT_ECLOSED after it. (The
 * schedulers' ends answered and freed them first: an on_stop that freed
 * one used freed memory, ASan's heap-use-after-free.) */
Test(actor, an_on_stop_answers_the_handles_its_actor_holds_at_the_end) {
  weft_actor_system_t* sys = new_system(2);
  holder_t k = {0};
  weft_actor_opts_t o = {0};
  weft_actor_id id;
  blocked_call_t calls[3];
  pthread_t th[3];
  int i;
  o.on_stop = holder_stop;
  cr_assert_eq(weft_actor_spawn(sys, holder, &k, &o, &id), 0);
  for (i = 0; i < 3; i++) {
    calls[i] = (blocked_call_t){.to = id, .v = i};
    cr_assert_eq(pthread_create(&th[i], NULL, blocked_call, &calls[i]), 0);
    cr_assert(UNTIL(atomic_load(&k.n) == i + 1), "handle %d taken", i);
  }
  cr_assert_eq(weft_actor_system_free(sys), 0);
  cr_assert_eq(atomic_load(&k.stopped), 1);
  for (i = 0; i < 3; i++)
    cr_assert_eq(pthread_join(th[i], NULL), 0);
  cr_assert_eq(calls[0].status, 0, "on_stop's answer");
  cr_assert_eq(calls[0].answer, 100);
  cr_assert_eq(calls[1].status, WEFT_ENOREPLY, "freed by on_stop");
  cr_assert_eq(calls[2].status, WEFT_EDEADACTOR, "left held: the system's end");
}

/* An actor that ends while it holds a handle settles its call at once,
 * with its reason (an exit signal's) or WEFT_EDEADACTOR (a normal end), as
 * an Erlang caller learns of the callee's exit; the handle stays valid and
 * an answer given through it later is dropped and counted late. */
Test(actor, an_actor_that_ends_holding_a_handle_settles_its_call) {
  weft_actor_system_t* sys = new_system(2);
  int reasons[2] = {WEFT_EKILLED, 0};
  int want[2] = {WEFT_EKILLED, WEFT_EDEADACTOR};
  int i;
  for (i = 0; i < 2; i++) {
    holder_t k = {0};
    weft_actor_id id;
    blocked_call_t call;
    pthread_t th;
    packed_t p = packed_int(5);
    uint64_t late;
    cr_assert_eq(weft_actor_spawn(sys, holder, &k, NULL, &id), 0);
    call = (blocked_call_t){.to = id, .v = 1};
    cr_assert_eq(pthread_create(&th, NULL, blocked_call, &call), 0);
    cr_assert(UNTIL(atomic_load(&k.n) == 1));
    if (reasons[i] != 0)
      cr_assert_eq(weft_actor_exit(id, reasons[i]), 0);
    else
      cr_assert_eq(send_int(id, 7), 0); /* It stops itself. */
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(call.status, want[i], "end %d: %s", i,
                 weft_err_name(call.status));
    late = weft_request_late_replies();
    cr_assert_eq(weft_reply_send(k.held[0], p.data, p.len), 0);
    cr_assert(UNTIL(weft_request_late_replies() > late),
              "the answer after the end is counted late");
  }
  cr_assert_eq(weft_actor_system_free(sys), 0);
}

/* An actor that asks another on "go" and records the outcomes. */
typedef struct {
  weft_actor_id target;
  int64_t question;
  int64_t timeout_ms;
  atomic_int status;
  atomic_llong answer;
  atomic_int outcomes;
  atomic_int in_turn; /* The callback ran as the asker, in its turn. */
  atomic_int call_busy;
} asker_t;

static void asked(weft_actor_t* self, void* state, void* arg, int status,
                  weft_msg_t* reply) {
  asker_t* a = state;
  atomic_store(&a->in_turn, self != NULL && state == arg &&
                                weft_actor_self(self) != 0);
  atomic_store(&a->status, status);
  if (reply != NULL)
    atomic_store(&a->answer, msg_int(reply));
  atomic_fetch_add(&a->outcomes, 1);
}

static int asker(weft_actor_t* self, void* state, weft_msg_t* msg) {
  asker_t* a = state;
  packed_t p = packed_int(a->question);
  weft_msg_t* r = NULL;
  (void)msg;
  int err;
  atomic_store(&a->call_busy,
               weft_actor_call(a->target, p.data, p.len, 10, &r));
  err = weft_actor_ask(self, a->target, p.data, p.len, a->timeout_ms, asked,
                       a);
  if (err != 0) { /* Refused at once: no callback will come. */
    atomic_store(&a->status, err);
    atomic_fetch_add(&a->outcomes, 1);
  }
  return 0;
}

static void ask_once(weft_actor_system_t* sys, asker_t* a) {
  weft_actor_id id;
  cr_assert_eq(weft_actor_spawn(sys, asker, a, NULL, &id), 0);
  cr_assert_eq(send_int(id, 1), 0);
  cr_assert(UNTIL(atomic_load(&a->outcomes) == 1));
  sleep_ms(20);
  cr_assert_eq(atomic_load(&a->outcomes), 1, "exactly once");
}

Test(actor, ask_from_an_actor_gets_the_reply_in_its_own_turn) {
  weft_actor_system_t* sys = new_system(2);
  asker_t a;
  memset(&a, 0, sizeof(a));
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &a.target), 0);
  a.question = 10;
  a.timeout_ms = 5000;
  ask_once(sys, &a);
  cr_assert_eq(atomic_load(&a.status), 0);
  cr_assert_eq(atomic_load(&a.answer), 11);
  cr_assert(atomic_load(&a.in_turn));
  cr_assert_eq(atomic_load(&a.call_busy), WEFT_EBUSY,
               "a blocking call inside a behaviour is refused");
  weft_actor_system_free(sys);
}

Test(actor, ask_times_out_and_the_late_reply_is_dropped) {
  weft_actor_system_t* sys = new_system(2);
  asker_t a;
  uint64_t late = weft_request_late_replies();
  uint64_t t0 = now_ns();
  memset(&a, 0, sizeof(a));
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &a.target), 0);
  a.question = 99; /* Held until it gets 98. */
  a.timeout_ms = 50;
  ask_once(sys, &a);
  cr_assert_eq(atomic_load(&a.status), WEFT_ETIMEDOUT);
  cr_assert_geq(now_ns() - t0, 50 * 1000000ull, "never early");
  cr_assert_eq(send_int(a.target, 98), 0);
  cr_assert(UNTIL(weft_request_late_replies() > late));
  sleep_ms(20);
  cr_assert_eq(atomic_load(&a.outcomes), 1, "the late reply is not delivered");
  weft_actor_system_free(sys);
}

Test(actor, ask_of_an_actor_that_ends_first_is_edeadactor) {
  weft_actor_system_t* sys = new_system(2);
  asker_t a;
  rec_t* r = rec_new();
  memset(&a, 0, sizeof(a));
  r->fail_on = -5;
  a.target = spawn_rec(sys, r, 0);
  /* Its mailbox: [-5] (it fails on it), then our request. */
  cr_assert_eq(send_int(a.target, -5), 0);
  a.question = 1;
  a.timeout_ms = 0;
  ask_once(sys, &a);
  cr_assert_eq(atomic_load(&a.status), WEFT_EDEADACTOR, "%s",
               weft_err_name(atomic_load(&a.status)));
  weft_actor_system_free(sys);
  rec_free(r);
}

static atomic_int loop_outcome;
static atomic_llong loop_answer;

static void asked_on_loop(weft_actor_t* self, void* state, void* arg,
                          int status, weft_msg_t* reply) {
  (void)arg;
  if (self == NULL && state == NULL && reply != NULL)
    atomic_store(&loop_answer, msg_int(reply));
  atomic_store(&loop_outcome, status == 0 ? 1 : status);
}

Test(actor, ask_from_a_loop_calls_back_on_that_loop) {
  weft_actor_system_t* sys = new_system(1);
  weft_loop_t* loop = new_loop();
  weft_actor_id id;
  packed_t p = packed_int(1);
  cr_assert_eq(weft_actor_spawn(sys, answerer, NULL, NULL, &id), 0);
  cr_assert_eq(weft_actor_ask(NULL, id, p.data, p.len, 5000, asked_on_loop,
                              NULL),
               0);
  run_loop(loop); /* The pending ask keeps it alive until the reply. */
  cr_assert_eq(atomic_load(&loop_outcome), 1);
  cr_assert_eq(atomic_load(&loop_answer), 2);
  free_loop(loop);
  cr_assert_eq(weft_actor_ask(NULL, id, p.data, p.len, 0, asked_on_loop, NULL),
               WEFT_ENOLOOP);
  weft_actor_system_free(sys);
}

/* --- Links, monitors, exit signals ------------------------------------------- */

/* On "link <id>" links; on "monitor <id>" monitors; on "trap" traps exits;
 * "unlink <id>", "demonitor"; records signals like the recorder. */
typedef struct {
  rec_t rec;
  uint64_t ref;
} watcher_t;

static int watcher(weft_actor_t* self, void* state, weft_msg_t* msg) {
  watcher_t* w = state;
  const char* cmd;
  size_t len;
  uint64_t arg;
  if (weft_actor_signal(msg, NULL) == WEFT_SIGNAL_NONE &&
      weft_msg_read(msg, "[sU]", &cmd, &len, &arg) == 0) {
    if (len == 4 && memcmp(cmd, "link", 4) == 0)
      return weft_actor_link(self, arg);
    if (len == 6 && memcmp(cmd, "unlink", 6) == 0)
      return weft_actor_unlink(self, arg);
    if (len == 7 && memcmp(cmd, "monitor", 7) == 0)
      return weft_actor_monitor(self, arg, &w->ref);
    if (len == 9 && memcmp(cmd, "demonitor", 9) == 0)
      return weft_actor_demonitor(self, w->ref);
    if (len == 8 && memcmp(cmd, "record_0", 8) == 0) /* remote.c's step */
      return weft__link_monitor_record(self, arg, 0);
    if (len == 4 && memcmp(cmd, "trap", 4) == 0)
      return weft_actor_trap_exits(self, arg != 0);
    if (len == 4 && memcmp(cmd, "stop", 4) == 0)
      return weft_actor_stop(self, (int)(int64_t)arg);
    if (len == 5 && memcmp(cmd, "sleep", 5) == 0) {
      sleep_ms((long)arg);
      return 0;
    }
  }
  return recorder(self, &w->rec, msg);
}

static void watcher_stop(void* state, int reason) {
  rec_stop(&((watcher_t*)state)->rec, reason);
}

static weft_actor_id spawn_watcher(weft_actor_system_t* sys, watcher_t* w,
                                   unsigned flags) {
  weft_actor_opts_t o = {0};
  weft_actor_id id;
  memset(w, 0, sizeof(*w));
  pthread_mutex_init(&w->rec.lock, NULL);
  o.on_stop = watcher_stop;
  o.flags = flags;
  cr_assert_eq(weft_actor_spawn(sys, watcher, w, &o, &id), 0);
  return id;
}

static void cmd(weft_actor_id to, const char* c, uint64_t arg) {
  cr_assert_eq(weft_actor_send_fmt(to, "[sU]", c, arg), 0);
}

/* Make sure `to` handled what was sent before (a call is queued behind). */
static void sync_with(weft_actor_id to) {
  weft_msg_t* r = NULL;
  packed_t p = packed_int(0);
  cr_assert_eq(weft_actor_call(to, p.data, p.len, 10000, &r), 0);
  weft_msg_free(r);
}

Test(actor, linked_actors_fail_together_with_the_reason) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b;
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib = spawn_watcher(sys, &b, 0);
  cmd(ia, "link", ib);
  sync_with(ia);
  sync_with(ib); /* b took the LINK signal. */
  cmd(ib, "stop", (uint64_t)(int64_t)WEFT_ERANGE);
  cr_assert(UNTIL(atomic_load(&a.rec.stopped) == 1));
  cr_assert_eq(atomic_load(&b.rec.stop_reason), WEFT_ERANGE);
  cr_assert_eq(atomic_load(&a.rec.stop_reason), WEFT_ERANGE,
               "the link carried b's reason");
  weft_actor_system_free(sys);
}

Test(actor, a_normal_end_does_not_take_links_down_and_a_trapper_gets_exit) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b, c, d;
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib = spawn_watcher(sys, &b, 0);
  weft_actor_id ic = spawn_watcher(sys, &c, WEFT_ACTOR_TRAP_EXIT);
  cmd(ia, "link", ib);
  cmd(ic, "link", ib);
  sync_with(ia);
  sync_with(ic);
  sync_with(ib);
  cmd(ib, "stop", 0);
  cr_assert(UNTIL(rec_nsig(&c.rec) == 1));
  cr_assert_eq(c.rec.sigs[0].kind, WEFT_SIGNAL_EXIT);
  cr_assert_eq(c.rec.sigs[0].from, ib);
  cr_assert_eq(c.rec.sigs[0].reason, 0);
  sync_with(ia);
  cr_assert_eq(atomic_load(&a.rec.stopped), 0, "a normal end spares a");
  cr_assert_eq(rec_nsig(&a.rec), 0, "a does not trap: no message");
  /* A trapper gets an abnormal end as a message too, and lives on. */
  {
    weft_actor_id id = spawn_watcher(sys, &d, 0);
    cmd(ic, "link", id);
    sync_with(ic);
    sync_with(id);
    cmd(id, "stop", (uint64_t)(int64_t)WEFT_EINVAL);
    cr_assert(UNTIL(rec_nsig(&c.rec) == 2));
    cr_assert_eq(c.rec.sigs[1].reason, WEFT_EINVAL);
    sync_with(ic);
    cr_assert_eq(atomic_load(&c.rec.stopped), 0);
  }
  weft_actor_system_free(sys);
}

Test(actor, unlink_removes_the_link_both_ways) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b, c;
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib = spawn_watcher(sys, &b, 0);
  cmd(ia, "link", ib);
  sync_with(ia);
  cmd(ia, "unlink", ib);
  sync_with(ia);
  sync_with(ib);
  cmd(ib, "stop", (uint64_t)(int64_t)WEFT_ERANGE);
  cr_assert(UNTIL(atomic_load(&b.rec.stopped) == 1));
  sync_with(ia);
  cr_assert_eq(atomic_load(&a.rec.stopped), 0);
  /* And the other way round. */
  {
    weft_actor_id ic = spawn_watcher(sys, &c, 0);
    cmd(ia, "link", ic);
    sync_with(ia);
    sync_with(ic);
    cmd(ia, "unlink", ic);
    sync_with(ia);
    cmd(ia, "stop", (uint64_t)(int64_t)WEFT_ERANGE);
    cr_assert(UNTIL(atomic_load(&a.rec.stopped) == 1));
    sync_with(ic);
    cr_assert_eq(atomic_load(&c.rec.stopped), 0);
  }
  weft_actor_system_free(sys);
}

Test(actor, linking_to_an_ended_actor_brings_its_exit_at_once) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b;
  weft_actor_id ia = spawn_watcher(sys, &a, WEFT_ACTOR_TRAP_EXIT);
  weft_actor_id ib = spawn_watcher(sys, &b, 0);
  cr_assert_eq(weft_actor_exit(ib, WEFT_EKILLED), 0);
  cr_assert(UNTIL(atomic_load(&b.rec.stopped) == 1));
  cmd(ia, "link", ib);
  cr_assert(UNTIL(rec_nsig(&a.rec) == 1));
  cr_assert_eq(a.rec.sigs[0].kind, WEFT_SIGNAL_EXIT);
  cr_assert_eq(a.rec.sigs[0].from, ib);
  cr_assert_eq(a.rec.sigs[0].reason, WEFT_EDEADACTOR, "noproc");
  weft_actor_system_free(sys);
}

Test(actor, spawn_with_a_link_fails_together) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b;
  weft_actor_opts_t o = {0};
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib;
  memset(&b, 0, sizeof(b));
  pthread_mutex_init(&b.rec.lock, NULL);
  o.on_stop = watcher_stop;
  o.link = ia;
  cr_assert_eq(weft_actor_spawn(sys, watcher, &b, &o, &ib), 0);
  cmd(ia, "stop", (uint64_t)(int64_t)WEFT_ENOMEM);
  cr_assert(UNTIL(atomic_load(&b.rec.stopped) == 1),
            "the spawned side ends with its linker");
  cr_assert_eq(atomic_load(&b.rec.stop_reason), WEFT_ENOMEM);
  o.link = ia; /* Ended now. */
  cr_assert_eq(weft_actor_spawn(sys, watcher, &b, &o, &ib), WEFT_EDEADACTOR);
  weft_actor_system_free(sys);
}

Test(actor, monitor_gets_one_down_with_the_reason_and_demonitor_drops_it) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b, c;
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib = spawn_watcher(sys, &b, 0);
  weft_actor_id ic;
  cmd(ia, "monitor", ib);
  sync_with(ia);
  sync_with(ib);
  cmd(ib, "stop", (uint64_t)(int64_t)WEFT_ETIMEDOUT);
  cr_assert(UNTIL(rec_nsig(&a.rec) == 1));
  cr_assert_eq(a.rec.sigs[0].kind, WEFT_SIGNAL_DOWN);
  cr_assert_eq(a.rec.sigs[0].from, ib);
  cr_assert_eq(a.rec.sigs[0].reason, WEFT_ETIMEDOUT);
  cr_assert_eq(a.rec.sigs[0].ref, a.ref);
  cr_assert_neq(a.ref, 0);
  sync_with(ia);
  cr_assert_eq(atomic_load(&a.rec.stopped), 0, "a monitor does not kill");
  /* Monitoring an ended actor: DOWN with WEFT_EDEADACTOR. */
  cmd(ia, "monitor", ib);
  cr_assert(UNTIL(rec_nsig(&a.rec) == 2));
  cr_assert_eq(a.rec.sigs[1].reason, WEFT_EDEADACTOR);
  /* A DOWN already queued is dropped by a demonitor: a sleeps, its
   * mailbox gets the demonitor command and then c's DOWN; the demonitor
   * comes first. */
  ic = spawn_watcher(sys, &c, 0);
  cmd(ia, "monitor", ic);
  sync_with(ia);
  sync_with(ic);
  cmd(ia, "sleep", 300);
  cmd(ia, "demonitor", 0);
  cr_assert_eq(weft_actor_exit(ic, WEFT_EKILLED), 0);
  cr_assert(UNTIL(atomic_load(&c.rec.stopped) == 1));
  sync_with(ia);
  cr_assert_eq(rec_nsig(&a.rec), 2, "no DOWN after the demonitor");
  weft_actor_system_free(sys);
}

/* A remote watcher's monitor (actors/remote.c) is recorded in the
 * watcher's own turn; a target named in the envelope may have ended and
 * lost its name by then, so the record has target 0. Its DOWN must still
 * come (dropped as unknown, a remote monitor never fired: seen as a rare
 * hang of test_actor_remote's monitor test under load). */
Test(actor, a_remote_watchers_record_without_its_target_still_takes_the_down) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, b;
  weft_actor_id ia = spawn_watcher(sys, &a, 0), ib = spawn_watcher(sys, &b, 0);
  uint64_t ref = weft__link_new_ref();
  cmd(ib, "stop", 0);
  cr_assert(UNTIL(atomic_load(&b.rec.stopped) == 1));
  cmd(ia, "record_0", ref);
  sync_with(ia);
  /* The MONITOR signal to the ended target: a DOWN with WEFT_EDEADACTOR. */
  weft__link_monitor_tell(ia, ib, ref);
  cr_assert(UNTIL(rec_nsig(&a.rec) == 1), "the DOWN came");
  cr_assert_eq(a.rec.sigs[0].kind, WEFT_SIGNAL_DOWN);
  cr_assert_eq(a.rec.sigs[0].ref, ref);
  cr_assert_eq(a.rec.sigs[0].reason, WEFT_EDEADACTOR);
  sync_with(ia);
  cr_assert_eq(atomic_load(&a.rec.stopped), 0);
  weft_actor_system_free(sys);
}

Test(actor, exit_signals_kill_is_untrappable_and_normal_is_ignored) {
  weft_actor_system_t* sys = new_system(2);
  watcher_t a, t;
  weft_actor_id ia = spawn_watcher(sys, &a, 0);
  weft_actor_id it = spawn_watcher(sys, &t, WEFT_ACTOR_TRAP_EXIT);
  cr_assert_eq(weft_actor_exit(ia, 0), 0);
  sync_with(ia);
  cr_assert_eq(atomic_load(&a.rec.stopped), 0, "reason 0 is ignored");
  cr_assert_eq(weft_actor_exit(it, WEFT_ERANGE), 0);
  cr_assert(UNTIL(rec_nsig(&t.rec) == 1), "trapped as a message");
  cr_assert_eq(t.rec.sigs[0].reason, WEFT_ERANGE);
  cr_assert_eq(t.rec.sigs[0].from, WEFT_ACTOR_NONE, "sent from outside");
  cr_assert_eq(weft_actor_exit(it, WEFT_EKILLED), 0);
  cr_assert(UNTIL(atomic_load(&t.rec.stopped) == 1));
  cr_assert_eq(atomic_load(&t.rec.stop_reason), WEFT_EKILLED);
  cr_assert_eq(weft_actor_exit(ia, WEFT_ERANGE), 0);
  cr_assert(UNTIL(atomic_load(&a.rec.stopped) == 1));
  cr_assert_eq(atomic_load(&a.rec.stop_reason), WEFT_ERANGE);
  weft_actor_system_free(sys);
}

Test(actor, a_failing_behaviour_does_not_stop_its_scheduler) {
  weft_actor_system_t* sys = new_system(1);
  rec_t* bad = rec_new();
  rec_t* good = rec_new();
  weft_actor_id ib, ig;
  bad->fail_on = WEFT_EINVAL;
  ib = spawn_rec(sys, bad, 0);
  ig = spawn_rec(sys, good, 0);
  cr_assert_eq(send_int(ib, WEFT_EINVAL), 0);
  cr_assert(UNTIL(atomic_load(&bad->stopped) == 1));
  cr_assert_eq(atomic_load(&bad->stop_reason), WEFT_EINVAL);
  cr_assert_eq(send_int(ib, 1), WEFT_EDEADACTOR);
  cr_assert_eq(send_int(ig, 1), 0);
  cr_assert(UNTIL(rec_count(good) == 1), "the scheduler runs on");
  weft_actor_system_free(sys);
  rec_free(bad);
  rec_free(good);
}

/* --- Registry ------------------------------------------------------------------ */

Test(actor, registry_names_actors_and_forgets_them_when_they_end) {
  weft_actor_system_t* sys = new_system(1);
  rec_t* r = rec_new();
  rec_t* r2 = rec_new();
  weft_actor_opts_t o = {0};
  weft_actor_id id = spawn_rec(sys, r, 0), id2;
  cr_assert_eq(weft_actor_whereis(sys, "svc"), WEFT_ACTOR_NONE);
  cr_assert_eq(weft_actor_register(sys, "svc", id), 0);
  cr_assert_eq(weft_actor_whereis(sys, "svc"), id);
  cr_assert_eq(weft_actor_register(sys, "svc", id), WEFT_EEXIST);
  cr_assert_eq(weft_actor_register(sys, "other", id), WEFT_EINVAL,
               "one name per actor");
  o.name = "svc";
  cr_assert_eq(weft_actor_spawn(sys, recorder, r2, &o, &id2), WEFT_EEXIST);
  cr_assert_eq(weft_actor_unregister(sys, "svc"), 0);
  cr_assert_eq(weft_actor_unregister(sys, "svc"), WEFT_ENOENT);
  cr_assert_eq(weft_actor_whereis(sys, "svc"), WEFT_ACTOR_NONE);
  cr_assert_eq(weft_actor_spawn(sys, recorder, r2, &o, &id2), 0);
  cr_assert_eq(weft_actor_whereis(sys, "svc"), id2);
  cr_assert_eq(weft_actor_exit(id2, WEFT_EKILLED), 0);
  cr_assert(UNTIL(weft_actor_whereis(sys, "svc") == WEFT_ACTOR_NONE),
            "the name goes with the actor");
  cr_assert_eq(weft_actor_register(sys, "svc", id2), WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_register(sys, "svc", id), 0, "free again");
  weft_actor_system_free(sys);
  rec_free(r);
  rec_free(r2);
}

/* --- Timers ---------------------------------------------------------------------- */

typedef struct {
  atomic_int fired;
  atomic_ullong first_ns;
  uint64_t set_ns;
  uint64_t timer;
  int every;
  int cancel_after;
} tick_t;

static int ticker(weft_actor_t* self, void* state, weft_msg_t* msg) {
  tick_t* t = state;
  int64_t v = msg_int(msg);
  if (v == 1000) { /* "start" */
    t->set_ns = now_ns();
    return weft_actor_send_after(self, 30, t->every, "\x07", 1, &t->timer);
  }
  if (v == 1001) /* "cancel" */
    return weft_actor_cancel_timer(self, t->timer) == 0 ? 0 : WEFT_EINVAL;
  if (v == 7) {
    if (atomic_fetch_add(&t->fired, 1) == 0)
      atomic_store(&t->first_ns, now_ns() - t->set_ns);
    if (weft_actor_sender(msg) != WEFT_ACTOR_NONE)
      return WEFT_EINVAL;
    if (t->cancel_after != 0 && atomic_load(&t->fired) == t->cancel_after)
      return weft_actor_cancel_timer(self, t->timer) == 0 ? 0 : WEFT_EINVAL;
  }
  return 0;
}

Test(actor, send_after_fires_once_never_early) {
  weft_actor_system_t* sys = new_system(2);
  tick_t t;
  weft_actor_id id;
  memset(&t, 0, sizeof(t));
  cr_assert_eq(weft_actor_spawn(sys, ticker, &t, NULL, &id), 0);
  cr_assert_eq(send_int(id, 1000), 0);
  cr_assert(UNTIL(atomic_load(&t.fired) == 1));
  cr_assert_geq(atomic_load(&t.first_ns), 30 * 1000000ull);
  sleep_ms(100);
  cr_assert_eq(atomic_load(&t.fired), 1);
  cr_assert_eq(send_int(id, 1001), 0, "cancel a fired one-shot");
  cr_assert(UNTIL(atomic_load(&t.fired) == 1 &&
                       weft_actor_system_count(sys) == 0),
            "cancelling a fired one-shot is EINVAL: the actor failed");
  weft_actor_system_free(sys);
}

Test(actor, periodic_timer_repeats_until_cancelled) {
  weft_actor_system_t* sys = new_system(2);
  tick_t t;
  weft_actor_id id;
  memset(&t, 0, sizeof(t));
  t.every = 1;
  t.cancel_after = 3;
  cr_assert_eq(weft_actor_spawn(sys, ticker, &t, NULL, &id), 0);
  cr_assert_eq(send_int(id, 1000), 0);
  cr_assert(UNTIL(atomic_load(&t.fired) == 3));
  sleep_ms(150);
  cr_assert_eq(atomic_load(&t.fired), 3, "no tick after the cancel");
  cr_assert_eq(weft_actor_system_count(sys), 1);
  weft_actor_system_free(sys);
}

Test(actor, a_timer_message_of_a_cancelled_timer_is_not_delivered) {
  /* What a cancel leaves behind: a timer message already queued whose
   * timer is no longer the actor's. Pushed here by hand (the race that
   * makes one is a matter of which scheduler runs what). */
  weft_actor_system_t* sys = new_system(1);
  rec_t* r = rec_new();
  weft_actor_id id = spawn_rec(sys, r, 0);
  packed_t p = packed_int(5);
  weft_msg_t* m = weft__actor_msg(WEFT__TAG_TIMER, 12345, p.data, p.len);
  cr_assert_eq(weft__actor_push(id, m, false), 0);
  cr_assert_eq(send_int(id, 6), 0);
  cr_assert(UNTIL(rec_count(r) == 1));
  cr_assert_eq(r->vals[0], 6, "only the ordinary message");
  weft_actor_system_free(sys);
  rec_free(r);
}

/* --- Scheduling ---------------------------------------------------------------- */

static atomic_llong busy_count;
static atomic_llong busy_seen_by_other;
static atomic_int busy_stop;

/* Sends itself one message per message, forever (until told). */
static int busy(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)state;
  (void)msg;
  atomic_fetch_add(&busy_count, 1);
  if (atomic_load(&busy_stop))
    return weft_actor_stop(self, 0);
  return weft_actor_send_fmt(weft_actor_self(self), "i", 1);
}

static int other(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)self;
  (void)state;
  (void)msg;
  atomic_store(&busy_seen_by_other, atomic_load(&busy_count));
  atomic_store(&busy_stop, 1);
  return 0;
}

Test(actor, a_busy_actor_yields_its_scheduler_after_a_batch) {
  weft_actor_system_t* sys = new_system(1);
  watcher_t w;
  weft_actor_id b, o, iw;
  atomic_store(&busy_seen_by_other, -1);
  cr_assert_eq(weft_actor_spawn(sys, busy, NULL, NULL, &b), 0);
  cr_assert_eq(weft_actor_spawn(sys, other, NULL, NULL, &o), 0);
  /* Hold the one scheduler, queue busy then other behind it. */
  iw = spawn_watcher(sys, &w, 0);
  cmd(iw, "sleep", 200);
  cr_assert_eq(send_int(b, 1), 0);
  cr_assert_eq(send_int(o, 1), 0);
  cr_assert(UNTIL(atomic_load(&busy_seen_by_other) >= 0));
  /* One turn of busy (a batch: 100 messages) came before other's; an
   * actor that ran until its mailbox was empty would never have let it. */
  cr_assert_leq(atomic_load(&busy_seen_by_other), 100);
  cr_assert_geq(atomic_load(&busy_seen_by_other), 1);
  weft_actor_system_free(sys);
}

static atomic_int woken_ran;
static atomic_int ran_during_turn;

static int woken(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)self;
  (void)state;
  (void)msg;
  atomic_store(&woken_ran, 1);
  return 0;
}

/* Sends to the actor it is given, then computes (without sending) until
 * that actor ran or 10 s passed. */
static int long_turn(weft_actor_t* self, void* state, weft_msg_t* msg) {
  uint64_t t0 = now_ns();
  (void)self;
  (void)state;
  if (weft_actor_send(*(weft_actor_id*)state, "\x01", 1) != 0)
    return WEFT_EINVAL;
  (void)msg;
  while (!atomic_load(&woken_ran) && now_ns() - t0 < 10000000000ull) {
  }
  atomic_store(&ran_during_turn, atomic_load(&woken_ran));
  return weft_actor_stop(self, 0);
}

Test(actor, an_actor_woken_by_a_long_turn_runs_on_an_idle_scheduler) {
  weft_actor_system_t* sys = new_system(2);
  weft_actor_id w, l;
  atomic_store(&woken_ran, 0);
  atomic_store(&ran_during_turn, -1);
  cr_assert_eq(weft_actor_spawn(sys, woken, NULL, NULL, &w), 0);
  cr_assert_eq(weft_actor_spawn(sys, long_turn, &w, NULL, &l), 0);
  sleep_ms(20); /* Both schedulers idle and parked. */
  cr_assert_eq(send_int(l, 1), 0);
  cr_assert(UNTIL(atomic_load(&ran_during_turn) >= 0));
  /* The woken actor was queued behind a turn that never ends by itself:
   * it ran only because the other scheduler took it (stale-entry poll). */
  cr_assert_eq(atomic_load(&ran_during_turn), 1);
  weft_actor_system_free(sys);
}

/* --- Backpressure ---------------------------------------------------------------- */

static atomic_int gate_open;

/* Holds its first message until the gate opens, then counts. */
static int gated(weft_actor_t* self, void* state, weft_msg_t* msg) {
  rec_t* r = state;
  (void)self;
  (void)msg;
  while (!atomic_load(&gate_open))
    sleep_ms(1);
  pthread_mutex_lock(&r->lock);
  r->n++;
  pthread_mutex_unlock(&r->lock);
  return 0;
}

Test(actor, an_outside_sender_gets_emailboxfull_over_the_high_water_mark) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {0};
  rec_t* r = rec_new();
  weft_actor_id id;
  long long sent = 0;
  int err = 0;
  so.schedulers = 1;
  so.high_water = 100;
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  atomic_store(&gate_open, 0);
  cr_assert_eq(weft_actor_spawn(sys, gated, r, NULL, &id), 0);
  /* The actor holds its first message: nothing is popped meanwhile. */
  while (sent < 1000 && (err = send_int(id, sent)) == 0)
    sent++;
  cr_assert_eq(err, WEFT_EMAILBOXFULL, "the outside sender is told");
  cr_assert_eq(sent, 101, "refused once the mailbox holds more than 100");
  atomic_store(&gate_open, 1);
  cr_assert(UNTIL(rec_count(r) == (size_t)sent),
            "nothing accepted is lost");
  cr_assert(UNTIL((err = send_int(id, 0)) != WEFT_EMAILBOXFULL));
  cr_assert_eq(err, 0, "drained below the low mark: accepted again");
  weft_actor_system_free(sys);
  rec_free(r);
}

static void* open_gate_later(void* arg) {
  (void)arg;
  sleep_ms(100);
  atomic_store(&gate_open, 1);
  return NULL;
}

static atomic_int wait_in_behaviour;

static int tries_send_wait(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)state;
  (void)msg;
  atomic_store(&wait_in_behaviour,
               weft_actor_send_wait(weft_actor_self(self), "\x01", 1, 10));
  return weft_actor_stop(self, 0);
}

Test(actor, send_wait_sleeps_until_the_mailbox_drains) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {0};
  rec_t* r = rec_new();
  weft_actor_id id, t;
  weft_msg_t* reply = NULL;
  pthread_t th;
  uint64_t t0;
  int i;
  so.schedulers = 1;
  so.high_water = 100;
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  atomic_store(&gate_open, 0);
  cr_assert_eq(weft_actor_spawn(sys, gated, r, NULL, &id), 0);
  for (i = 0; i < 101; i++)
    cr_assert_eq(send_int(id, i), 0);
  cr_assert_eq(send_int(id, 0), WEFT_EMAILBOXFULL);
  t0 = now_ns();
  cr_assert_eq(weft_actor_send_wait(id, "\x01", 1, 50), WEFT_EMAILBOXFULL,
               "nothing drains while the gate is shut: the time runs out");
  cr_assert_geq(now_ns() - t0, 50 * 1000000ull);
  t0 = now_ns();
  cr_assert_eq(weft_actor_call(id, "\x01", 1, 50, &reply), WEFT_ETIMEDOUT,
               "a call waits for room within its timeout, never EMAILBOXFULL");
  cr_assert_geq(now_ns() - t0, 50 * 1000000ull);
  pthread_create(&th, NULL, open_gate_later, NULL);
  t0 = now_ns();
  cr_assert_eq(weft_actor_send_wait(id, "\x01", 1, 20000), 0);
  cr_assert_geq(now_ns() - t0, 50 * 1000000ull, "it waited for the drain");
  pthread_join(th, NULL);
  cr_assert(UNTIL(rec_count(r) == 102), "all delivered");
  cr_assert_eq(weft_actor_spawn(sys, tries_send_wait, NULL, NULL, &t), 0);
  cr_assert_eq(send_int(t, 1), 0);
  cr_assert(UNTIL(atomic_load(&wait_in_behaviour) == WEFT_EBUSY));
  cr_assert_eq(weft_actor_send_wait(WEFT_ACTOR_NONE, "\x01", 1, 10),
               WEFT_EDEADACTOR);
  weft_actor_system_free(sys);
  rec_free(r);
}

typedef struct {
  weft_actor_id to;
  atomic_llong sent;
  atomic_llong max_ahead; /* sent - received, seen by the receiver */
  atomic_llong received;
  long long total;
} flood_t;

static int flood_rx(weft_actor_t* self, void* state, weft_msg_t* msg) {
  flood_t* f = state;
  long long ahead;
  (void)self;
  (void)msg;
  atomic_fetch_add(&f->received, 1);
  ahead = atomic_load(&f->sent) - atomic_load(&f->received);
  if (ahead > atomic_load(&f->max_ahead))
    atomic_store(&f->max_ahead, ahead);
  return 0;
}

static int flood_tx(weft_actor_t* self, void* state, weft_msg_t* msg) {
  flood_t* f = state;
  int i;
  (void)msg;
  for (i = 0; i < 500 && atomic_load(&f->sent) < f->total; i++) {
    if (send_int(f->to, i) != 0)
      return WEFT_EINVAL;
    atomic_fetch_add(&f->sent, 1);
  }
  if (atomic_load(&f->sent) < f->total)
    return send_int(weft_actor_self(self), 0);
  return weft_actor_stop(self, 0);
}

Test(actor, a_flooding_actor_is_muted_so_the_mailbox_stays_bounded) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {0};
  flood_t f;
  weft_actor_id rx, tx;
  so.schedulers = 1;
  so.high_water = 1000;
  memset(&f, 0, sizeof(f));
  f.total = 200000;
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  cr_assert_eq(weft_actor_spawn(sys, flood_rx, &f, NULL, &rx), 0);
  f.to = rx;
  cr_assert_eq(weft_actor_spawn(sys, flood_tx, &f, NULL, &tx), 0);
  cr_assert_eq(send_int(tx, 0), 0);
  cr_assert(UNTIL(atomic_load(&f.received) == f.total));
  /* Without muting the sender runs a turn of 500 for every turn of 100 of
   * the receiver: 160,000 would wait. Muted, at most the mark plus a few
   * turns. */
  cr_assert_leq(atomic_load(&f.max_ahead), 1000 + 4 * 500,
                "%lld messages were waiting",
                (long long)atomic_load(&f.max_ahead));
  weft_actor_system_free(sys);
}

Test(actor, a_mailbox_past_its_limit_ends_the_actor) {
  weft_actor_system_t* sys = new_system(1);
  weft_actor_opts_t o = {0};
  rec_t* r = rec_new();
  watcher_t w;
  weft_actor_id id, iw;
  int i;
  atomic_store(&gate_open, 0);
  o.mailbox_limit = 50;
  o.on_stop = rec_stop;
  cr_assert_eq(weft_actor_spawn(sys, gated, r, &o, &id), 0);
  iw = spawn_watcher(sys, &w, 0);
  cmd(iw, "monitor", id);
  sync_with(iw);
  for (i = 0; i < 200; i++)
    cr_assert_eq(send_int(id, i), 0);
  atomic_store(&gate_open, 1);
  cr_assert(UNTIL(atomic_load(&r->stopped) == 1));
  cr_assert_eq(atomic_load(&r->stop_reason), WEFT_EMAILBOXFULL);
  cr_assert(UNTIL(rec_nsig(&w.rec) == 1));
  cr_assert_eq(w.rec.sigs[0].reason, WEFT_EMAILBOXFULL);
  weft_actor_system_free(sys);
  rec_free(r);
}

/* --- Dead letters, memory -------------------------------------------------------- */

static atomic_int dead_seen;
static void on_dead(void* arg, weft_actor_id to, weft_msg_t* msg) {
  (void)arg;
  (void)to;
  if (msg_int(msg) >= 0)
    atomic_fetch_add(&dead_seen, 1);
}

Test(actor, mail_queued_when_an_actor_ends_is_dead_letters) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {0};
  rec_t* r = rec_new();
  watcher_t w;
  weft_actor_id id;
  int i;
  so.schedulers = 1;
  so.dead_letter = on_dead;
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  (void)r;
  {
    id = spawn_watcher(sys, &w, 0);
    w.rec.fail_on = -3;
    cmd(id, "sleep", 500); /* Everything below is queued meanwhile. */
    for (i = 1; i <= 10; i++)
      cr_assert_eq(send_int(id, i == 3 ? -3 : i), 0);
    cr_assert(UNTIL(atomic_load(&w.rec.stopped) == 1));
  }
  /* 1, 2, -3 handled (-3 failed it); 4..10 were queued: 7 dead letters. */
  cr_assert_eq(weft_actor_system_dead_letters(sys), 7);
  cr_assert_eq(atomic_load(&dead_seen), 7);
  weft_actor_system_free(sys);
  rec_free(r);
}

Test(actor, an_actor_costs_at_most_256_bytes_when_idle) {
  /* The struct and its slot; the cold part is made only for links,
   * monitors, timers and options (measured as RSS in make bench). */
  cr_assert_leq(sizeof(weft_actor_t) + sizeof(weft__slot_t), 256);
  cr_assert_leq(sizeof(weft_actor_t), 128, "one mimalloc size class");
}

Test(actor, system_wait_returns_when_the_last_actor_ends) {
  weft_actor_system_t* sys = new_system(2);
  rec_t* r = rec_new();
  weft_actor_id id = spawn_rec(sys, r, 0);
  cr_assert_eq(weft_actor_system_count(sys), 1);
  cr_assert_eq(weft_actor_system_wait(sys, 30), WEFT_ETIMEDOUT);
  cr_assert_eq(weft_actor_exit(id, WEFT_EKILLED), 0);
  cr_assert_eq(weft_actor_system_wait(sys, 0), 0);
  cr_assert_eq(weft_actor_system_count(sys), 0);
  weft_actor_system_free(sys);
  rec_free(r);
}
