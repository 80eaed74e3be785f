/* pool_node_app.c - a node serving the distributed pool in a process of
 * its own, for test_pool_node's SIGKILL tests: `pool_node_app URL NAME
 * [HEARTBEAT_MS [durable]]` joins cluster "test" as NAME and serves group
 * "g" (with "durable": from its JetStream stream, ack wait 1 s) with a
 * pool of 2 workers and the task
 *   "work"  [i, ms] -> [i, NAME] after sleeping ms milliseconds
 * It prints "ready" once connected (its slots subscribed), and leaves
 * cleanly on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <weft/weft.h>

#include "app_ready.h"

static weft_node_t* node;
static weft_pool_t* pool;
static weft_pool_server_t* server;
static const char* name;
static uv_signal_t sigterm;

static int work(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t i = 0, ms = 0;
  (void)ctx;
  if (weft_msg_read(arg, "II", &i, &ms) != 0)
    return WEFT_EDECODE;
  if (ms > 0)
    {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  return weft_msg_pack(result, "Is", i, name);
}

static void on_sigterm(uv_signal_t* s, int signum) {
  (void)signum;
  uv_close((uv_handle_t*)s, NULL);
  weft_pool_unserve(server);
  weft_node_leave(node);
}

int main(int argc, char** argv) {
  weft_loop_t* loop = NULL;
  weft_node_opts_t o = {0};
  weft_pool_opts_t po = {0};
  weft_pool_serve_opts_t so = {0};
  if (argc < 3)
    return 2;
  name = argv[2];
  if (weft_loop_new(&loop) != 0)
    return 2;
  po.max_threads = 2;
  if (weft_pool_new(&pool, &po) != 0 ||
      weft_pool_register(pool, "work", work, NULL) != 0)
    return 2;
  o.servers = argv[1];
  o.name = name;
  o.cluster = "test";
  o.heartbeat_ms = argc > 3 ? atoi(argv[3]) : 100;
  o.on_event = print_ready_on_connect;
  so.durable = argc > 4 && strcmp(argv[4], "durable") == 0;
  so.ack_wait_ms = 1000;
  if (weft_node_join(loop, &o, &node) != 0 ||
      weft_pool_serve_ex(node, pool, "g", &so, &server) != 0)
    return 2;
  uv_signal_init(weft_loop_uv(loop), &sigterm);
  uv_signal_start(&sigterm, on_sigterm, SIGTERM);
  weft_loop_run(loop);
  weft_pool_close(pool);
  weft_loop_free(loop);
  return 0;
}
