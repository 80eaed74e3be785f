/* scenario_pool_node.c - the distributed pool under concurrency (also run
 * under TSan): node a's remote pool gets tasks from 4 threads at once (2
 * wait on futures, 2 are called back on the pool's thread), a fifth
 * cancels tasks while they run, and nodes b and c serve the group with 2
 * workers each. Run twice: over core NATS, then durable (JetStream: the
 * tasks go through a work-queue stream, the serving nodes' pullers,
 * nats.c's threads and the pools' threads all at once). Checks: every
 * task settles exactly once with its own result (or WEFT_ECANCELED for a
 * cancelled one), both nodes took tasks, neither held more than its
 * workers, and everything ends clean. Exit 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <weft/weft.h>

#include "nats_server.h"
#include "support.h"
#include "weft/pool_node.h"

#define WAITERS 2
#define CALLED 2
#define TASKS 150
#define CANCELS 20

static weft_pool_t* rpool;
static atomic_int threads_done, called_back, bad;
static atomic_int calls[CALLED][TASKS];

/* n -> n * 2 (a little work). */
static int twice(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t n = 0;
  (void)ctx;
  if (weft_msg_read(arg, "I", &n) != 0)
    return WEFT_EDECODE;
  return weft_msg_pack(result, "I", n * 2);
}

/* Runs until cancelled (at most 5 s). */
static int slow(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  (void)arg;
  (void)result;
  for (int i = 0; i < 5000 && !weft_task_canceled(ctx); i++)
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  return 0;
}

static void* waiter(void* arg) {
  int id = (int)(intptr_t)arg;
  for (int i = 0; i < TASKS; i++) {
    int64_t v = id * 100000 + i, got = 0;
    packed_t b = packed_int(v);
    weft_task_t* t = NULL;
    weft_msg_t* m = NULL;
    int err = weft_pool_submit(rpool, "twice", b.data, b.len, NULL, NULL, &t);
    if (err == 0)
      err = weft_task_wait(t, 30000);
    if (err == 0)
      err = weft_task_take_result(t, &m);
    if (err != 0 || weft_msg_read(m, "I", &got) != 0 || got != 2 * v) {
      fprintf(stderr, "waiter %d task %d: %s\n", id, i, weft_err_name(err));
      atomic_fetch_add(&bad, 1);
    }
    weft_msg_free(m);
    weft_task_free(t);
  }
  atomic_fetch_add(&threads_done, 1);
  return NULL;
}

static void on_done(void* ctx, int status, weft_msg_t* result) {
  intptr_t k = (intptr_t)ctx;
  int id = (int)(k / TASKS), i = (int)(k % TASKS);
  int64_t got = 0;
  if (status != 0 || weft_msg_read(result, "I", &got) != 0 ||
      got != 2 * (int64_t)k)
    atomic_fetch_add(&bad, 1);
  atomic_fetch_add(&calls[id][i], 1);
  atomic_fetch_add(&called_back, 1);
}

static void* submitter(void* arg) {
  int id = (int)(intptr_t)arg;
  for (int i = 0; i < TASKS; i++) {
    intptr_t k = (intptr_t)id * TASKS + i;
    packed_t b = packed_int((int64_t)k);
    int err;
    while ((err = weft_pool_submit(rpool, "twice", b.data, b.len, on_done,
                                   (void*)k, NULL)) == WEFT_EQUEUEFULL)
      nanosleep(&(struct timespec){0, 1000000}, NULL);
    if (err != 0)
      atomic_fetch_add(&bad, 1);
  }
  atomic_fetch_add(&threads_done, 1);
  return NULL;
}

static void* canceller(void* arg) {
  (void)arg;
  for (int i = 0; i < CANCELS; i++) {
    weft_task_t* t = NULL;
    int err = weft_pool_submit(rpool, "slow", NULL, 0, NULL, NULL, &t);
    if (err == 0) {
      nanosleep(&(struct timespec){0, (i % 5) * 1000000}, NULL);
      err = weft_task_cancel(t);
      if (err == 0 && weft_task_status(t) != WEFT_ECANCELED)
        err = WEFT_EINVAL;
      weft_task_free(t);
    }
    if (err != 0) {
      fprintf(stderr, "cancel %d: %s\n", i, weft_err_name(err));
      atomic_fetch_add(&bad, 1);
    }
  }
  atomic_fetch_add(&threads_done, 1);
  return NULL;
}

static void tick(uv_timer_t* t) {
  if (atomic_load(&threads_done) == WAITERS + CALLED + 1 &&
      atomic_load(&called_back) == CALLED * TASKS)
    weft_loop_stop(t->data);
}

typedef struct {
  weft_node_t* node;
  weft_pool_t* pool;
  weft_pool_server_t* server;
} serving_t;

static void serve(weft_loop_t* loop, const char* url, const char* name,
                  bool durable, serving_t* s) {
  weft_node_opts_t o = {0};
  weft_pool_opts_t po = {0};
  weft_pool_serve_opts_t so = {0};
  so.durable = durable;
  po.max_threads = 2;
  CHECK(weft_pool_new(&s->pool, &po) == 0, "pool");
  CHECK(weft_pool_register(s->pool, "twice", twice, NULL) == 0, "register");
  CHECK(weft_pool_register(s->pool, "slow", slow, NULL) == 0, "register");
  o.servers = url;
  o.cluster = durable ? "scd" : "scn";
  o.name = name;
  CHECK(weft_node_join(loop, &o, &s->node) == 0, "join %s", name);
  CHECK(weft_pool_serve_ex(s->node, s->pool, "g", &so, &s->server) == 0,
        "serve");
  CHECK(weft_node_flush(s->node, 5000) == 0, "flush");
}

static void unserve(serving_t* s, unsigned* taken) {
  weft_pool_server_stats_t st;
  CHECK(weft_pool_server_stats(s->server, &st) == 0, "stats");
  CHECK(st.max_in_flight <= st.capacity, "at most %u taken at once: %u",
        st.capacity, st.max_in_flight);
  *taken = (unsigned)st.taken;
  CHECK(weft_pool_unserve(s->server) == 0, "unserve");
  CHECK(weft_node_leave(s->node) == 0, "leave");
  CHECK(weft_pool_close(s->pool) == 0, "close");
}

static void scenario(const char* url, bool durable) {
  weft_loop_t* loop = new_loop();
  weft_node_opts_t o = {0};
  weft_pool_remote_opts_t ro = {0};
  weft_node_t* a = NULL;
  serving_t b, c;
  pthread_t t[WAITERS + CALLED + 1];
  uv_timer_t timer;
  unsigned tb = 0, tc = 0;
  int i, n = 0;
  atomic_store(&threads_done, 0);
  atomic_store(&called_back, 0);
  atomic_store(&bad, 0);
  for (i = 0; i < CALLED; i++)
    for (int k = 0; k < TASKS; k++)
      atomic_store(&calls[i][k], 0);
  serve(loop, url, "b", durable, &b);
  serve(loop, url, "c", durable, &c);
  o.servers = url;
  o.cluster = durable ? "scd" : "scn";
  o.name = "a";
  CHECK(weft_node_join(loop, &o, &a) == 0, "join a");
  ro.durable = durable;
  CHECK(weft_pool_new_remote(&rpool, a, "g", &ro) == 0, "remote pool");
  CHECK(weft_node_flush(a, 5000) == 0, "flush");

  for (i = 0; i < WAITERS; i++)
    pthread_create(&t[n++], NULL, waiter, (void*)(intptr_t)i);
  for (i = 0; i < CALLED; i++)
    pthread_create(&t[n++], NULL, submitter, (void*)(intptr_t)i);
  pthread_create(&t[n++], NULL, canceller, NULL);
  uv_timer_init(weft_loop_uv(loop), &timer);
  timer.data = loop;
  uv_timer_start(&timer, tick, 5, 5);
  weft_loop_run(loop);
  for (i = 0; i < n; i++)
    pthread_join(t[i], NULL);
  uv_close((uv_handle_t*)&timer, NULL);

  CHECK(atomic_load(&bad) == 0, "every task settled right");
  for (i = 0; i < CALLED; i++)
    for (int k = 0; k < TASKS; k++)
      CHECK(atomic_load(&calls[i][k]) == 1, "called back once");
  CHECK(weft_pool_close(rpool) == 0, "close the remote pool");
  CHECK(weft_node_leave(a) == 0, "leave a");
  unserve(&b, &tb);
  unserve(&c, &tc);
  CHECK(tb > 0 && tc > 0, "both served: b %u, c %u", tb, tc);
  run_and_free(loop);
}

int main(void) {
  nats_server_t server;
  char dir[] = "/tmp/weft-js-scn-XXXXXX";
  char cmd[64];
  const char* extra[] = {"-js", "-sd", dir, NULL};
  if (mkdtemp(dir) == NULL || nats_server_start(&server, extra) != 0)
    return 1;
  scenario(server.url, false);
  puts("scenario_pool_node: over core NATS: ok");
  scenario(server.url, true);
  nats_server_stop(&server);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir); /* Ours, mkdtemp's. */
  CHECK(system(cmd) == 0, "remove the store");
  puts("scenario_pool_node: ok");
  return 0;
}
