/* scenario_actor_remote.c - actors across nodes under concurrency (also run
 * under TSan): two nodes with a system each; 3 threads outside the actors
 * and 2 actors send to one remote actor while 2 threads make blocking
 * calls to another; then a thread keeps sending while node a's system
 * leaves and the nodes leave under it. Checks: every message arrives once
 * and in its sender's order, every call gets its own answer, nothing is
 * dropped, the late sender ends with WEFT_EDEADACTOR (its address ended
 * with the node) or a send that went before, and all ends clean. Exit 0 on
 * success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "nats_server.h"
#include "support.h"

#define THREADS 3
#define ACTORS 2
#define SENDERS (THREADS + ACTORS)
#define SENDS 2000
#define CALLERS 2
#define CALLS 200

static weft_actor_id remote_seq, remote_plus;
static int64_t next_of[SENDERS]; /* The seq actor's only. */
static atomic_int received, bad_order, calls_ok, late_done;
static atomic_int stop_late;

static int64_t read_int(weft_msg_t* m) {
  int64_t v = INT64_MIN;
  (void)weft_msg_read(m, "I", &v);
  return v;
}

/* Messages carry sender * SENDS + i. */
static int seq_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t v = read_int(m);
  int sender = (int)(v / SENDS);
  (void)self;
  (void)state;
  if (sender < 0 || sender >= SENDERS || v % SENDS != next_of[sender])
    atomic_fetch_add(&bad_order, 1);
  else
    next_of[sender]++;
  atomic_fetch_add(&received, 1);
  return 0;
}

static int plus_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)self;
  (void)state;
  if (weft_msg_take_reply(m, &r) == 0)
    weft_reply_send_fmt(r, "I", read_int(m) + 1);
  return 0;
}

/* An actor sender: its first message is its index. */
static int burst_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t id = read_int(m), i;
  (void)self;
  (void)state;
  for (i = 0; i < SENDS; i++)
    if (weft_actor_send_fmt(remote_seq, "I", id * SENDS + i) != 0)
      exit(1);
  return 0;
}

static void* sender(void* arg) {
  int id = (int)(intptr_t)arg, i;
  for (i = 0; i < SENDS; i++) {
    packed_t b = packed_int((int64_t)id * SENDS + i);
    int err = weft_actor_send_wait(remote_seq, b.data, b.len, 20000);
    if (err != 0) {
      fprintf(stderr, "send: %s\n", weft_err_name(err));
      exit(1);
    }
  }
  return NULL;
}

static void* caller(void* arg) {
  int id = (int)(intptr_t)arg, i;
  for (i = 0; i < CALLS; i++) {
    int64_t v = id * 100000 + i;
    packed_t b = packed_int(v);
    weft_msg_t* reply = NULL;
    int err = weft_actor_call(remote_plus, b.data, b.len, 20000, &reply);
    if (err != 0) {
      fprintf(stderr, "call: %s\n", weft_err_name(err));
      exit(1);
    }
    if (read_int(reply) == v + 1)
      atomic_fetch_add(&calls_ok, 1);
    weft_msg_free(reply);
  }
  return NULL;
}

/* Sends until its address ends under it (the node leaves). */
static void* late(void* arg) {
  weft_actor_id to = *(weft_actor_id*)arg;
  int err = 0;
  while (!atomic_load(&stop_late)) {
    err = weft_actor_send(to, "\x01", 1);
    if (err == WEFT_EDEADACTOR)
      break;
    if (err != 0 && err != WEFT_EMAILBOXFULL) {
      fprintf(stderr, "late: %s\n", weft_err_name(err));
      exit(1);
    }
  }
  atomic_store(&late_done, 1);
  return NULL;
}

static weft_loop_t* main_loop;
static int (*until)(void);

static void tick(uv_timer_t* t) {
  (void)t;
  if (until())
    weft_loop_stop(main_loop);
}

static void run_while_not(int (*cond)(void)) {
  uv_timer_t timer;
  until = cond;
  uv_timer_init(weft_loop_uv(main_loop), &timer);
  uv_timer_start(&timer, tick, 2, 2);
  while (!cond())
    weft_loop_run(main_loop);
  uv_close((uv_handle_t*)&timer, NULL);
  uv_run(weft_loop_uv(main_loop), UV_RUN_NOWAIT);
}

static weft_node_t *a, *b;

static int both_up(void) {
  return weft_node_is_up(a, "b") && weft_node_is_up(b, "a");
}

static void wait_both_up(void) {
  run_while_not(both_up);
}

static int all_in(void) {
  return atomic_load(&received) == SENDERS * SENDS;
}

static int is_late_done(void) {
  return atomic_load(&late_done);
}

int main(void) {
  nats_server_t server;
  weft_node_opts_t o = {0};
  weft_actor_system_opts_t so = {0};
  weft_actor_system_t *sa = NULL, *sb = NULL;
  weft_actor_opts_t ao = {0};
  weft_actor_id actors[ACTORS], late_to = 0;
  weft_node_stats_t st;
  pthread_t t[THREADS + CALLERS], lt;
  int i;
  main_loop = new_loop();
  if (nats_server_start(&server, NULL) != 0)
    return 1;
  o.servers = server.url;
  o.cluster = "scn";
  o.heartbeat_ms = 100;
  o.down_after_ms = 10000; /* The loop waits on threads at times. */
  o.name = "a";
  CHECK(weft_node_join(main_loop, &o, &a) == 0, "join a");
  o.name = "b";
  CHECK(weft_node_join(main_loop, &o, &b) == 0, "join b");
  so.schedulers = 2;
  CHECK(weft_actor_system_new(&sa, &so) == 0, "system a");
  CHECK(weft_actor_system_new(&sb, &so) == 0, "system b");
  CHECK(weft_actor_system_join(sa, a) == 0, "attach a");
  CHECK(weft_actor_system_join(sb, b) == 0, "attach b");
  ao.name = "seq";
  CHECK(weft_actor_spawn(sb, seq_fn, NULL, &ao, NULL) == 0, "seq");
  ao.name = "plus";
  CHECK(weft_actor_spawn(sb, plus_fn, NULL, &ao, NULL) == 0, "plus");
  wait_both_up();
  CHECK(weft_node_flush(a, 5000) == 0 && weft_node_flush(b, 5000) == 0,
        "flush");
  CHECK(weft_actor_remote(sa, "b", "seq", &remote_seq) == 0, "remote seq");
  CHECK(weft_actor_remote(sa, "b", "plus", &remote_plus) == 0, "remote plus");

  for (i = 0; i < THREADS; i++)
    pthread_create(&t[i], NULL, sender, (void*)(intptr_t)i);
  for (i = 0; i < CALLERS; i++)
    pthread_create(&t[THREADS + i], NULL, caller, (void*)(intptr_t)i);
  for (i = 0; i < ACTORS; i++) {
    CHECK(weft_actor_spawn(sa, burst_fn, NULL, NULL, &actors[i]) == 0,
          "burst");
    CHECK(weft_actor_send_fmt(actors[i], "I", (int64_t)(THREADS + i)) == 0,
          "start a burst");
  }
  run_while_not(all_in);
  for (i = 0; i < THREADS + CALLERS; i++)
    pthread_join(t[i], NULL);
  CHECK(atomic_load(&bad_order) == 0, "in each sender's order");
  CHECK(atomic_load(&calls_ok) == CALLERS * CALLS, "every call answered");
  CHECK(weft_node_stats(b, &st) == 0 && st.dropped_decode == 0,
        "nothing dropped");

  /* Leave under a sender. */
  i = weft_actor_remote(sa, "b", "seq", &late_to);
  CHECK(i == 0, "late address: %s", weft_err_name(i));
  pthread_create(&lt, NULL, late, &late_to);
  CHECK(weft_actor_system_leave(sa) == 0, "a's system leaves");
  run_while_not(is_late_done);
  pthread_join(lt, NULL);
  CHECK(weft_actor_system_leave(sb) == 0, "b's system leaves");
  CHECK(weft_node_leave(a) == 0, "leave a");
  CHECK(weft_node_leave(b) == 0, "leave b");
  CHECK(weft_actor_system_free(sa) == 0, "free a");
  CHECK(weft_actor_system_free(sb) == 0, "free b");
  run_and_free(main_loop);
  nats_server_stop(&server);
  puts("scenario_actor_remote: ok");
  return 0;
}
