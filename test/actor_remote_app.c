/* actor_remote_app.c - an actor system on a node in a process of its own,
 * for test_actor_remote's noconnection test (started as node_support.h
 * starts node_app): `actor_remote_app URL NAME [HEARTBEAT_MS]` joins
 * cluster "test" as NAME (heartbeats every 100 ms by default), attaches an
 * actor system and registers
 *   "victim"  an integer request n -> n + 1
 *   "hold"    requests kept unanswered (an ask that waits until we die)
 * With GROUP (`actor_remote_app URL NAME HEARTBEAT_MS GROUP`, for
 * test_node_cluster) it also serves the distributed pool's group GROUP
 * with 2 workers and the task
 *   "work"    [i, ms] -> [i, NAME] after sleeping ms milliseconds
 * It prints "ready" once connected, and leaves cleanly on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include <weft/weft.h>

#include "app_ready.h"

static weft_node_t* node;
static weft_actor_system_t* sys;
static uv_signal_t sigterm;
static const char* name;
static weft_pool_t* pool;
static weft_pool_server_t* pool_server;

static int work(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t i = 0, ms = 0;
  (void)ctx;
  if (weft_msg_read(arg, "II", &i, &ms) != 0)
    return WEFT_EDECODE;
  if (ms > 0) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  return weft_msg_pack(result, "Is", i, name);
}

/* Serve pool group `group` (see the file comment). */
static int serve_pool(const char* group) {
  weft_pool_opts_t po = {0};
  po.max_threads = 2;
  if (weft_pool_new(&pool, &po) != 0 ||
      weft_pool_register(pool, "work", work, NULL) != 0)
    return -1;
  return weft_pool_serve(node, pool, group, &pool_server);
}

static int victim(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t n = 0;
  weft_reply_t* r = NULL;
  (void)self;
  (void)state;
  if (weft_msg_take_reply(m, &r) != 0)
    return 0;
  if (weft_msg_read(m, "I", &n) != 0)
    weft_reply_error(r, WEFT_EDECODE);
  else
    weft_reply_send_fmt(r, "I", n + 1);
  return 0;
}

static int hold(weft_actor_t* self, void* state, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)self;
  (void)state;
  (void)weft_msg_take_reply(m, &r); /* Never answered: dies with us. */
  return 0;
}

static void on_sigterm(uv_signal_t* s, int signum) {
  (void)signum;
  uv_close((uv_handle_t*)s, NULL);
  if (pool_server != NULL)
    weft_pool_unserve(pool_server);
  weft_actor_system_leave(sys);
  weft_node_leave(node);
}

int main(int argc, char** argv) {
  weft_loop_t* loop = NULL;
  weft_node_opts_t o = {0};
  weft_actor_opts_t a = {0};
  if (argc < 3)
    return 2;
  if (weft_loop_new(&loop) != 0 || weft_actor_system_new(&sys, NULL) != 0)
    return 2;
  o.servers = argv[1];
  name = argv[2];
  o.name = name;
  o.cluster = "test";
  o.heartbeat_ms = argc > 3 ? atoi(argv[3]) : 100;
  o.on_event = print_ready_on_connect;
  if (weft_node_join(loop, &o, &node) != 0 ||
      weft_actor_system_join(sys, node) != 0)
    return 2;
  if (argc > 4 && serve_pool(argv[4]) != 0)
    return 2;
  a.name = "victim";
  if (weft_actor_spawn(sys, victim, NULL, &a, NULL) != 0)
    return 2;
  a.name = "hold";
  if (weft_actor_spawn(sys, hold, NULL, &a, NULL) != 0)
    return 2;
  uv_signal_init(weft_loop_uv(loop), &sigterm);
  uv_signal_start(&sigterm, on_sigterm, SIGTERM);
  weft_loop_run(loop);
  weft_actor_system_free(sys);
  if (pool != NULL)
    weft_pool_close(pool);
  weft_loop_free(loop);
  return 0;
}
