/* scenario_node.c - nodes over NATS under concurrency (also run under
 * TSan): 4 threads post on one remote port while 2 more make blocking
 * calls through another, a worker answers the calls, and the main loop
 * receives the posts. Checks: every post arrives exactly once and in each
 * sender's order, every call gets its own answer, nothing is dropped, and
 * both nodes leave clean. Exit 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "nats_server.h"
#include "support.h"

#define POSTERS 4
#define CALLERS 2
#define POSTS 3000
#define CALLS 300

static weft_port_t* remote_seq;
static weft_port_t* remote_plus;
static int64_t next_of[POSTERS];
static atomic_int received, bad_order, calls_ok, callers_done;

/* Posts carry sender * POSTS + i. */
static void seq_message(weft_port_t* p, weft_msg_t* m) {
  int64_t v = msg_int(m);
  int sender = (int)(v / POSTS);
  (void)p;
  if (sender < 0 || sender >= POSTERS || v % POSTS != next_of[sender])
    atomic_fetch_add(&bad_order, 1);
  else
    next_of[sender]++;
  atomic_fetch_add(&received, 1);
}

static void* poster(void* arg) {
  int id = (int)(intptr_t)arg, i;
  for (i = 0; i < POSTS; i++) {
    int err = port_post_int(remote_seq, (int64_t)id * POSTS + i);
    if (err != 0) {
      fprintf(stderr, "post: %s\n", weft_err_name(err));
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
    int err = weft_port_call(remote_plus, b.data, b.len, 20000, &reply);
    if (err != 0) {
      fprintf(stderr, "call: %s\n", weft_err_name(err));
      exit(1);
    }
    if (msg_int(reply) == v + 1)
      atomic_fetch_add(&calls_ok, 1);
    weft_msg_free(reply);
  }
  atomic_fetch_add(&callers_done, 1);
  return NULL;
}

/* The worker that answers calls: v -> v + 1. */
static void plus_one(weft_port_t* p, weft_msg_t* m) {
  packed_t b = packed_int(msg_int(m) + 1);
  (void)p;
  if (weft_msg_reply(m, b.data, b.len) != 0)
    exit(1);
}

static void worker_main(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  if (weft_port_on_message(weft_parent_port(), plus_one) != 0)
    exit(1);
}

static void tick(uv_timer_t* t) {
  weft_loop_t* loop = t->data;
  if (atomic_load(&received) == POSTERS * POSTS &&
      atomic_load(&callers_done) == CALLERS)
    weft_loop_stop(loop);
}

int main(void) {
  nats_server_t server;
  weft_loop_t* loop = new_loop();
  weft_node_opts_t o = {0};
  weft_node_t *a = NULL, *b = NULL;
  weft_port_t *in, *out;
  weft_worker_t* w;
  weft_node_stats_t st;
  pthread_t t[POSTERS + CALLERS];
  uv_timer_t timer;
  int i;
  if (nats_server_start(&server, NULL) != 0)
    return 1;
  o.servers = server.url;
  o.cluster = "scn";
  o.name = "a";
  CHECK(weft_node_join(loop, &o, &a) == 0, "join a");
  o.name = "b";
  /* A small bound: b's deliveries wait for room while its loop takes
   * messages (export_message's backpressure, under TSan too). */
  o.max_export_backlog = 4096;
  CHECK(weft_node_join(loop, &o, &b) == 0, "join b");

  new_channel(loop, &in, &out);
  CHECK(weft_port_on_message(out, seq_message) == 0, "handler");
  CHECK(weft_node_export(b, "seq", in) == 0, "export seq");
  w = spawn_worker(loop, worker_main, NULL);
  CHECK(weft_node_export_worker(b, "plus", w) == 0, "export the worker");
  CHECK(weft_node_port(a, "b", "seq", &remote_seq) == 0, "port seq");
  CHECK(weft_node_port(a, "b", "plus", &remote_plus) == 0, "port plus");
  CHECK(weft_node_flush(a, 5000) == 0 && weft_node_flush(b, 5000) == 0,
        "flush");

  for (i = 0; i < POSTERS; i++)
    pthread_create(&t[i], NULL, poster, (void*)(intptr_t)i);
  for (i = 0; i < CALLERS; i++)
    pthread_create(&t[POSTERS + i], NULL, caller, (void*)(intptr_t)i);
  uv_timer_init(weft_loop_uv(loop), &timer);
  timer.data = loop;
  uv_timer_start(&timer, tick, 5, 5);
  weft_loop_run(loop);
  for (i = 0; i < POSTERS + CALLERS; i++)
    pthread_join(t[i], NULL);
  uv_close((uv_handle_t*)&timer, NULL);

  CHECK(atomic_load(&received) == POSTERS * POSTS, "all posts arrived: %d",
        atomic_load(&received));
  CHECK(atomic_load(&bad_order) == 0, "in each sender's order");
  CHECK(atomic_load(&calls_ok) == CALLERS * CALLS, "every call answered");
  CHECK(weft_node_stats(b, &st) == 0, "stats");
  CHECK(st.dropped_decode == 0 && st.dropped_closed == 0 &&
            st.dropped_size == 0,
        "nothing dropped");
  CHECK(st.received == (uint64_t)(POSTERS * POSTS + CALLERS * CALLS),
        "received %llu", (unsigned long long)st.received);

  weft_port_free(remote_seq);
  weft_port_free(remote_plus);
  CHECK(weft_node_leave(a) == 0, "leave a");
  CHECK(weft_node_leave(b) == 0, "leave b");
  weft_worker_free(w); /* Ends it: its parent port closes. */
  free_channel(in, out);
  run_and_free(loop);
  nats_server_stop(&server);
  puts("scenario_node: ok");
  return 0;
}
