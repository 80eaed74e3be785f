/* scenario_node_spawn.c - remote spawn under concurrency (also run under
 * TSan): 3 threads make blocking spawns on node b (which waits for a's
 * loop to make their ports, lib/node_spawn.c) and call each new worker
 * from their thread, while a's loop makes async spawns and the spawned
 * workers exit on their own (their exports removed on b's loop). Checks:
 * every spawn answers with a name of its own, every worker adds its own
 * workerData, nothing is dropped, and both nodes leave with workers still
 * running. Exit 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "nats_server.h"
#include "spawn_entry.h"
#include "support.h"

#define THREADS 3
#define SPAWNS 8  /* Per thread. */
#define ASYNCS 12 /* From the loop. */

static weft_node_t *a, *b;
static atomic_int threads_done, asyncs_done, ok;
static char names[THREADS * SPAWNS + ASYNCS][WEFT_NODE_NAME_MAX + 1];

static void* spawner(void* arg) {
  int id = (int)(intptr_t)arg, i;
  for (i = 0; i < SPAWNS; i++) {
    int64_t k = id * 1000 + i;
    packed_t kb = packed_int(k);
    char* name = names[id * SPAWNS + i];
    int err = weft_node_spawn_worker_on(a, "b", "adder", kb.data, kb.len,
                                        20000, name);
    if (err != 0) {
      fprintf(stderr, "spawn: %s\n", weft_err_name(err));
      exit(1);
    }
    atomic_fetch_add(&ok, 1);
  }
  atomic_fetch_add(&threads_done, 1);
  return NULL;
}

static void on_spawned(weft_node_t* node, int status, const char* name,
                       void* ctx) {
  int i = (int)(intptr_t)ctx;
  (void)node;
  if (status != 0) {
    fprintf(stderr, "async spawn: %s\n", weft_err_name(status));
    exit(1);
  }
  snprintf(names[THREADS * SPAWNS + i], WEFT_NODE_NAME_MAX + 1, "%s", name);
  atomic_fetch_add(&asyncs_done, 1);
}

/* Run `loop` until `*counter` reaches `want`. */
typedef struct {
  weft_loop_t* loop;
  atomic_int* counter;
  int want;
} count_wait_t;

static void count_tick(uv_timer_t* t) {
  count_wait_t* c = t->data;
  if (atomic_load(c->counter) >= c->want)
    weft_loop_stop(c->loop);
}

static void run_until_count(weft_loop_t* loop, atomic_int* counter,
                            int want) {
  count_wait_t c = {loop, counter, want};
  uv_timer_t timer;
  uv_timer_init(weft_loop_uv(loop), &timer);
  timer.data = &c;
  uv_timer_start(&timer, count_tick, 1, 1);
  while (atomic_load(counter) < want)
    weft_loop_run(loop);
  uv_close((uv_handle_t*)&timer, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

/* A call to each spawned worker: n -> n + k; then every other one exits. */
typedef struct {
  int64_t want;
  atomic_int* answered;
} want_t;

static void on_answer(void* ctx, int status, weft_msg_t* reply) {
  want_t* w = ctx;
  if (status != 0 || msg_int(reply) != w->want) {
    fprintf(stderr, "answer: %s\n", weft_err_name(status));
    exit(1);
  }
  atomic_fetch_add(w->answered, 1);
  free(w);
}

static void set_flag(uv_timer_t* t) {
  atomic_store((atomic_int*)t->data, 1);
}

/* Run `loop` for `ms`. */
static void run_for(weft_loop_t* loop, uint64_t ms) {
  atomic_int later = 0;
  uv_timer_t t;
  uv_timer_init(weft_loop_uv(loop), &t);
  t.data = &later;
  uv_timer_start(&t, set_flag, ms, 0);
  run_until_count(loop, &later, 1);
  uv_close((uv_handle_t*)&t, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

int main(void) {
  nats_server_t server;
  weft_loop_t* loop = new_loop();
  weft_node_opts_t o = {0};
  weft_port_t* ports[THREADS * SPAWNS + ASYNCS];
  atomic_int answered = 0;
  pthread_t t[THREADS];
  int i, j;
  if (nats_server_start(&server, NULL) != 0)
    return 1;
  o.servers = server.url;
  o.cluster = "scn";
  o.name = "a";
  CHECK(weft_node_join(loop, &o, &a) == 0, "join a");
  o.name = "b";
  CHECK(weft_node_join(loop, &o, &b) == 0, "join b");
  CHECK(weft_node_register_worker(b, "adder", adder_main, NULL) == 0,
        "register");
  CHECK(weft_node_flush(a, 5000) == 0 && weft_node_flush(b, 5000) == 0,
        "flush");
  while (!weft_node_is_up(a, "b"))
    run_for(loop, 5);

  for (i = 0; i < THREADS; i++)
    pthread_create(&t[i], NULL, spawner, (void*)(intptr_t)i);
  for (i = 0; i < ASYNCS; i++) {
    packed_t kb = packed_int(100000 + i);
    CHECK(weft_node_spawn_worker_on_async(a, "b", "adder", kb.data, kb.len,
                                          20000, on_spawned,
                                          (void*)(intptr_t)i) == 0,
          "async spawn");
  }
  run_until_count(loop, &threads_done, THREADS);
  run_until_count(loop, &asyncs_done, ASYNCS);
  for (i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  CHECK(atomic_load(&ok) == THREADS * SPAWNS, "every blocking spawn");

  /* Names of their own; each worker its own workerData. */
  for (i = 0; i < THREADS * SPAWNS + ASYNCS; i++) {
    int64_t k = i < THREADS * SPAWNS
                    ? (i / SPAWNS) * 1000 + i % SPAWNS
                    : 100000 + (i - THREADS * SPAWNS);
    want_t* w = calloc(1, sizeof(*w));
    packed_t one = packed_int(1);
    for (j = 0; j < i; j++)
      CHECK(strcmp(names[i], names[j]) != 0, "unique: %s", names[i]);
    CHECK(w != NULL, "alloc");
    w->want = k + 1;
    w->answered = &answered;
    CHECK(weft_node_port(a, "b", names[i], &ports[i]) == 0, "port");
    CHECK(weft_port_request(ports[i], one.data, one.len, 20000, on_answer, w,
                            NULL) == 0,
          "request");
  }
  run_until_count(loop, &answered, THREADS * SPAWNS + ASYNCS);
  /* Half of them exit (their exports go on b's loop); the rest are
   * running when the nodes leave. */
  for (i = 0; i < THREADS * SPAWNS + ASYNCS; i += 2)
    CHECK(port_post_int(ports[i], -1) == 0, "post exit");
  CHECK(weft_node_flush(a, 5000) == 0, "flush a");
  run_for(loop, 50); /* b's loop takes some of the exits. */
  for (i = 0; i < THREADS * SPAWNS + ASYNCS; i++)
    weft_port_free(ports[i]);
  CHECK(weft_node_leave(a) == 0, "leave a");
  CHECK(weft_node_leave(b) == 0, "leave b");
  run_and_free(loop);
  nats_server_stop(&server);
  puts("scenario_node_spawn: ok");
  return 0;
}
