/* scenario_actor.c - actors under concurrency (plain C so that TSan runs
 * it): ping-pong between two actors; 100,000 actors (fewer under TSan)
 * passing tokens with a final checksum; several outside threads sending
 * to one actor, in order per sender; spawns and ends racing sends to ids
 * of ended actors (a reused slot must not get its predecessor's mail);
 * asks from actors and blocking calls from threads, with timeouts; a
 * flood from one actor into a slow one (muted, memory bounded); reply
 * handles handed to another thread while their actor is killed (the call
 * settles once, whichever comes first); the system freed with actors
 * alive, mail queued and timers pending.
 * Exits 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

#define N_ACTORS (UNDER_TSAN ? 2000 : UNDER_SAN ? 20000 : 100000)
#define HOPS 3
#define PINGS (UNDER_TSAN ? 2000 : 100000)

static weft_actor_system_t* sys;

/* An int value, or INT64_MIN. */
static int64_t val(weft_msg_t* m) {
  return msg_int(m);
}

static int send_int(weft_actor_id to, int64_t v) {
  packed_t p = packed_int(v);
  int err = weft_actor_send(to, p.data, p.len);
  return err;
}

/* Answer the request held in *slot with v, touching the state no more
 * after the answer: several states here live on main's stack, and main
 * returns (reusing that stack) as soon as its call has the answer, maybe
 * before this scheduler thread runs again. A CI run once saw the old
 * order, answer then `*slot = NULL`, zero a return address of main's. */
static void reply_last(weft_reply_t** slot, int64_t v) {
  weft_reply_t* r = *slot;
  *slot = NULL;
  weft_reply_send_fmt(r, "I", v);
}

/* --- 1. ping-pong ------------------------------------------------------- */

typedef struct {
  weft_actor_id peer;
  int64_t left;
  weft_reply_t* done; /* Answered when the count runs out. */
} pp_t;

static int ponger(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)self;
  (void)state;
  return send_int(weft_actor_sender(msg), val(msg));
}

static int pinger(weft_actor_t* self, void* state, weft_msg_t* msg) {
  pp_t* p = state;
  (void)self;
  if (weft_msg_is_request(msg)) { /* start */
    CHECK(weft_msg_take_reply(msg, &p->done) == 0, "take reply");
    return send_int(p->peer, p->left);
  }
  CHECK(val(msg) == p->left, "pong %lld, want %lld", (long long)val(msg),
        (long long)p->left);
  if (--p->left == 0) {
    packed_t r = packed_int(1);
    weft_reply_send(p->done, r.data, r.len);
    return 0;
  }
  return send_int(p->peer, p->left);
}

static void ping_pong(void) {
  pp_t st = {0, PINGS, NULL};
  weft_actor_id a, b;
  weft_msg_t* reply = NULL;
  packed_t go = packed_int(0);
  CHECK(weft_actor_spawn(sys, ponger, NULL, NULL, &b) == 0, "spawn");
  st.peer = b;
  CHECK(weft_actor_spawn(sys, pinger, &st, NULL, &a) == 0, "spawn");
  CHECK(weft_actor_call(a, go.data, go.len, 0, &reply) == 0, "call");
  CHECK(msg_int(reply) == 1, "done");
  weft_msg_free(reply);
  CHECK(weft_actor_exit(a, WEFT_EKILLED) == 0, "kill");
  CHECK(weft_actor_exit(b, WEFT_EKILLED) == 0, "kill");
}

/* --- 2. many actors, tokens, checksum --------------------------------------- */

typedef struct {
  weft_actor_id next;
  weft_actor_id sink;
} hop_t;

/* Each token [value, hops left] goes to `next`, value + 1, until its hops
 * run out; then the sink gets the value. */
static int hopper(weft_actor_t* self, void* state, weft_msg_t* msg) {
  hop_t* h = state;
  int64_t v, left;
  (void)self;
  CHECK(weft_msg_read(msg, "[II]", &v, &left) == 0, "token");
  if (left == 0)
    return weft_actor_send_fmt(h->sink, "I", v);
  return weft_actor_send_fmt(h->next, "[II]", v + 1, left - 1);
}

typedef struct {
  int64_t sum;
  int64_t count;
  int64_t want;
  weft_reply_t* done;
} sink_t;

static int sink(weft_actor_t* self, void* state, weft_msg_t* msg) {
  sink_t* s = state;
  (void)self;
  if (weft_msg_is_request(msg)) {
    CHECK(weft_msg_take_reply(msg, &s->done) == 0, "take");
  } else {
    s->sum += val(msg);
    s->count++;
  }
  if (s->done != NULL && s->count == s->want) {
    /* The reply last: the state is on main's stack, and main may return
     * as soon as it has the answer (see reply_last()). */
    reply_last(&s->done, s->sum);
  }
  return 0;
}

static void sink_stop(void* state, int reason) {
  (void)state;
  CHECK(reason == WEFT_EKILLED, "sink ended: %s", weft_err_name(reason));
}

static void free_state(void* state, int reason) {
  (void)reason;
  free(state);
}

static void many(void) {
  weft_actor_id* ids = calloc(N_ACTORS, sizeof(*ids));
  hop_t** hs = calloc(N_ACTORS, sizeof(*hs));
  sink_t sk = {0, 0, N_ACTORS, NULL};
  weft_actor_id sid;
  weft_msg_t* reply = NULL;
  weft_actor_opts_t o = {0};
  int64_t want = 0, got = 0;
  packed_t q = packed_int(0);
  int i;
  {
    weft_actor_opts_t so = {0};
    so.on_stop = sink_stop;
    CHECK(weft_actor_spawn(sys, sink, &sk, &so, &sid) == 0, "spawn sink");
  }
  o.on_stop = free_state;
  for (i = 0; i < N_ACTORS; i++) {
    hop_t* h = calloc(1, sizeof(*h));
    h->sink = sid;
    hs[i] = h;
    CHECK(weft_actor_spawn(sys, hopper, h, &o, &ids[i]) == 0, "spawn %d", i);
  }
  /* The states are written before any token moves (a send orders them
   * before the receiver's turn). */
  for (i = 0; i < N_ACTORS; i++)
    hs[i]->next = ids[(i + 1) % N_ACTORS];
  /* A token starts at every actor and hops HOPS times, +1 per hop. */
  for (i = 0; i < N_ACTORS; i++) {
    int err;
    for (;;) {
      err = weft_actor_send_fmt(ids[i], "[II]", (int64_t)i, (int64_t)HOPS);
      if (err != WEFT_EMAILBOXFULL)
        break;
      sleep_ms(1);
    }
    CHECK(err == 0, "send %s", weft_err_name(err));
    want += i + HOPS;
  }
  CHECK(weft_actor_call(sid, q.data, q.len, 0, &reply) == 0, "call sink");
  got = msg_int(reply);
  CHECK(got == want, "checksum %lld, want %lld", (long long)got,
        (long long)want);
  weft_msg_free(reply);
  for (i = 0; i < N_ACTORS; i++)
    CHECK(weft_actor_exit(ids[i], WEFT_EKILLED) == 0, "kill %d", i);
  i = weft_actor_exit(sid, WEFT_EKILLED);
  CHECK(i == 0, "kill sink: %s", weft_err_name(i));
  free(ids);
  free(hs);
}

/* --- 3. outside senders, order per sender ------------------------------------ */

#define SENDERS 4
#define PER_SENDER (UNDER_TSAN ? 2000 : 50000)

typedef struct {
  int64_t next[SENDERS];
  int64_t total;
  weft_reply_t* done;
} order_t;

static int orderer(weft_actor_t* self, void* state, weft_msg_t* msg) {
  order_t* o = state;
  int64_t who, seq;
  (void)self;
  if (weft_msg_is_request(msg)) {
    CHECK(weft_msg_take_reply(msg, &o->done) == 0, "take");
  } else {
    CHECK(weft_msg_read(msg, "[II]", &who, &seq) == 0, "read");
    CHECK(seq == o->next[who], "sender %lld: got %lld, want %lld",
          (long long)who, (long long)seq, (long long)o->next[who]);
    o->next[who]++;
    o->total++;
  }
  if (o->done != NULL && o->total == SENDERS * PER_SENDER)
    reply_last(&o->done, o->total);
  return 0;
}

typedef struct {
  weft_actor_id to;
  int64_t who;
  int64_t full; /* WEFT_EMAILBOXFULL seen. */
} sender_arg_t;

static void* sender_thread(void* arg) {
  sender_arg_t* s = arg;
  int64_t i;
  for (i = 0; i < PER_SENDER; i++) {
    int err;
    while ((err = weft_actor_send_fmt(s->to, "[II]", s->who, i)) ==
           WEFT_EMAILBOXFULL) {
      s->full++;
      sched_yield();
    }
    CHECK(err == 0, "send: %s", weft_err_name(err));
  }
  return NULL;
}

static void outside_senders(void) {
  order_t st;
  pthread_t th[SENDERS];
  sender_arg_t args[SENDERS];
  weft_actor_id id;
  weft_msg_t* reply = NULL;
  packed_t q = packed_int(0);
  int i;
  memset(&st, 0, sizeof(st));
  CHECK(weft_actor_spawn(sys, orderer, &st, NULL, &id) == 0, "spawn");
  for (i = 0; i < SENDERS; i++) {
    args[i].to = id;
    args[i].who = i;
    args[i].full = 0;
    pthread_create(&th[i], NULL, sender_thread, &args[i]);
  }
  for (i = 0; i < SENDERS; i++)
    pthread_join(th[i], NULL);
  CHECK(weft_actor_call(id, q.data, q.len, 0, &reply) == 0, "call");
  CHECK(msg_int(reply) == SENDERS * PER_SENDER, "total");
  weft_msg_free(reply);
  CHECK(weft_actor_exit(id, WEFT_EKILLED) == 0, "kill");
}

/* --- 4. churn: sends to ended actors, reused slots ------------------------ */

#define CHURN (UNDER_TSAN ? 500 : 20000)

static atomic_int wrong_mail;
static _Atomic uint64_t last_dead;
static atomic_bool churn_done;

/* State: the actor's own id, so a message for another id is caught. */
static int churner(weft_actor_t* self, void* state, weft_msg_t* msg) {
  uint64_t for_id;
  (void)state;
  CHECK(weft_msg_read(msg, "U", &for_id) == 0, "read");
  if (for_id != weft_actor_self(self))
    atomic_fetch_add(&wrong_mail, 1);
  return WEFT_ECANCELED; /* End on the first message. */
}

static void* churn_sender(void* arg) {
  (void)arg;
  while (!atomic_load(&churn_done)) {
    uint64_t id = atomic_load(&last_dead);
    int err;
    if (id == 0)
      continue;
    err = weft_actor_send_fmt(id, "U", id);
    CHECK(err == 0 || err == WEFT_EDEADACTOR || err == WEFT_EMAILBOXFULL,
          "send: %s", weft_err_name(err));
  }
  return NULL;
}

static void churn(void) {
  pthread_t th;
  int i;
  pthread_create(&th, NULL, churn_sender, NULL);
  for (i = 0; i < CHURN; i++) {
    weft_actor_id id;
    CHECK(weft_actor_spawn(sys, churner, NULL, NULL, &id) == 0, "spawn");
    int err;
    atomic_store(&last_dead, id);
    /* The other thread's message may have ended it already, or its
     * flood may have filled the mailbox before the actor's first turn. */
    err = weft_actor_send_fmt(id, "U", id);
    CHECK(err == 0 || err == WEFT_EDEADACTOR || err == WEFT_EMAILBOXFULL,
          "send: %s", weft_err_name(err));
  }
  atomic_store(&churn_done, true);
  pthread_join(th, NULL);
  CHECK(weft_actor_system_wait(sys, 60000) == 0, "all churners ended");
  CHECK(atomic_load(&wrong_mail) == 0, "%d messages reached a reused slot",
        atomic_load(&wrong_mail));
}

/* --- 5. flood into a slow actor ------------------------------------------- */

#define FLOOD (UNDER_TSAN ? 20000 : 400000)

typedef struct {
  int64_t got;
  uint64_t max_backlog;
  weft_reply_t* done;
} slow_t;

static int slow(weft_actor_t* self, void* state, weft_msg_t* msg) {
  slow_t* s = state;
  volatile int spin = 0;
  (void)self;
  if (weft_msg_is_request(msg)) {
    CHECK(weft_msg_take_reply(msg, &s->done) == 0, "take");
  } else {
    int i;
    for (i = 0; i < 200; i++)
      spin++;
    s->got++;
  }
  if (s->done != NULL && s->got == FLOOD)
    reply_last(&s->done, s->got);
  return 0;
}

typedef struct {
  weft_actor_id to;
  int64_t sent;
} flooder_t;

/* Sends in rounds of 1000 per message to itself, so that it can be
 * muted between rounds. */
static int flooder(weft_actor_t* self, void* state, weft_msg_t* msg) {
  flooder_t* f = state;
  int i;
  (void)msg;
  for (i = 0; i < 1000 && f->sent < FLOOD; i++, f->sent++)
    CHECK(weft_actor_send_fmt(f->to, "I", f->sent) == 0, "flood send");
  if (f->sent < FLOOD)
    return weft_actor_send_fmt(weft_actor_self(self), "i", 0);
  return WEFT_ECANCELED;
}

static void flood(void) {
  slow_t st = {0, 0, NULL};
  flooder_t fl = {0, 0};
  weft_actor_id s, f;
  weft_msg_t* reply = NULL;
  packed_t q = packed_int(0);
  CHECK(weft_actor_spawn(sys, slow, &st, NULL, &s) == 0, "spawn");
  fl.to = s;
  CHECK(weft_actor_spawn(sys, flooder, &fl, NULL, &f) == 0, "spawn");
  CHECK(weft_actor_send_fmt(f, "i", 0) == 0, "start");
  CHECK(weft_actor_call(s, q.data, q.len, 0, &reply) == 0, "call");
  CHECK(msg_int(reply) == FLOOD, "all flood messages arrived");
  weft_msg_free(reply);
  CHECK(weft_actor_exit(s, WEFT_EKILLED) == 0, "kill");
}

/* --- 6. a handle answered on another thread as its actor ends ----------- */

#define HANDOFFS (UNDER_TSAN ? 200 : 2000)

static _Atomic(weft_reply_t*) handed;
static atomic_bool handoffs_done;

/* Takes the request's handle and hands it to the answering thread. */
static int delegator(weft_actor_t* self, void* state, weft_msg_t* msg) {
  weft_reply_t* r;
  (void)self;
  (void)state;
  if (!weft_msg_is_request(msg))
    return 0;
  CHECK(weft_msg_take_reply(msg, &r) == 0, "take");
  while (atomic_load(&handed) != NULL)
    sched_yield(); /* The last one is still being answered. */
  atomic_store(&handed, r);
  return 0;
}

/* Answers every handle handed to it, until told to stop. */
static void* answerer_thread(void* arg) {
  (void)arg;
  for (;;) {
    weft_reply_t* r = atomic_exchange(&handed, NULL);
    if (r != NULL)
      weft_reply_send_fmt(r, "I", (int64_t)1);
    else if (atomic_load(&handoffs_done))
      return NULL;
    else
      sched_yield();
  }
}

typedef struct {
  weft_actor_id to;
  int status;
} handoff_call_t;

static void* handoff_caller(void* arg) {
  handoff_call_t* c = arg;
  weft_msg_t* reply = NULL;
  c->status = weft_actor_call(c->to, "\x01", 1, 20000, &reply);
  weft_msg_free(reply);
  return NULL;
}

static void handoffs(void) {
  pthread_t answerer;
  int i, answered = 0, ended = 0;
  CHECK(pthread_create(&answerer, NULL, answerer_thread, NULL) == 0, "thread");
  for (i = 0; i < HANDOFFS; i++) {
    handoff_call_t c = {0};
    pthread_t caller;
    CHECK(weft_actor_spawn(sys, delegator, NULL, NULL, &c.to) == 0, "spawn");
    CHECK(pthread_create(&caller, NULL, handoff_caller, &c) == 0, "caller");
    /* Kill it at some point of the call: before, while or after its
     * handle moves to the answerer. */
    if (i % 3 != 0)
      sched_yield();
    (void)weft_actor_exit(c.to, WEFT_EKILLED);
    CHECK(pthread_join(caller, NULL) == 0, "join");
    if (c.status == 0)
      answered++;
    else if (c.status == WEFT_EKILLED || c.status == WEFT_EDEADACTOR)
      ended++;
    else
      CHECK(0, "call %d: %s", i, weft_err_name(c.status));
  }
  atomic_store(&handoffs_done, true);
  CHECK(pthread_join(answerer, NULL) == 0, "join answerer");
  printf("scenario_actor: handoffs %d answered, %d settled by the end\n",
         answered, ended);
}

/* --- 7. free with actors alive -------------------------------------------- */

static atomic_int stopped;

static void count_stop(void* state, int reason) {
  (void)state;
  CHECK(reason == WEFT_ECLOSED, "reason %d", reason);
  atomic_fetch_add(&stopped, 1);
}

static int idler(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)state;
  (void)msg;
  return weft_actor_send_after(self, 60000, false, "\x01", 1, NULL);
}

static void free_alive(void) {
  weft_actor_system_t* s2;
  weft_actor_opts_t o = {0};
  weft_actor_id ids[64];
  int i;
  CHECK(weft_actor_system_new(&s2, NULL) == 0, "system");
  o.on_stop = count_stop;
  for (i = 0; i < 64; i++) {
    CHECK(weft_actor_spawn(s2, idler, NULL, &o, &ids[i]) == 0, "spawn");
    CHECK(weft_actor_send_fmt(ids[i], "i", i) == 0, "send");
  }
  CHECK(weft_actor_system_free(s2) == 0, "free");
  CHECK(atomic_load(&stopped) == 64, "on_stop ran %d times",
        atomic_load(&stopped));
  for (i = 0; i < 64; i++)
    CHECK(weft_actor_send_fmt(ids[i], "i", 0) == WEFT_EDEADACTOR,
          "ids of a freed system are dead");
}

int main(void) {
  weft_actor_system_opts_t o = {0};
  o.schedulers = 2;
  CHECK(weft_actor_system_new(&sys, &o) == 0, "system");
  ping_pong();
  many();
  outside_senders();
  churn();
  flood();
  handoffs();
  CHECK(weft_actor_system_wait(sys, 60000) == 0, "all ended");
  CHECK(weft_actor_system_free(sys) == 0, "free");
  free_alive();
  printf("scenario_actor: ok\n");
  return 0;
}
