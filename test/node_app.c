/* node_app.c - a weft node in a process of its own, for test_node's
 * cross-process tests: `node_app URL[,URL...] NAME [HEARTBEAT_MS]` joins
 * cluster "test" as NAME and serves
 *   "plus"  an integer n -> n + 1
 *   "who"   anything -> [NAME, pid]
 *   "hold"  requests kept unanswered (a call that waits until we die)
 * and registers the worker entry "adder" (test/spawn_entry.h) for remote
 * spawn.
 * It prints "ready" once connected, and leaves cleanly on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <weft/weft.h>

#include "app_ready.h"
#include "spawn_entry.h"

static weft_node_t* node;
static const char* name;
static weft_port_t *plus_in, *plus_out, *who_in, *who_out, *hold_in,
    *hold_out;
static uv_signal_t sigterm;

static void plus_one(weft_port_t* p, weft_msg_t* m) {
  int64_t n = 0;
  weft_reply_t* r = NULL;
  (void)p;
  if (weft_msg_take_reply(m, &r) != 0)
    return;
  if (weft_msg_read(m, "I", &n) != 0)
    weft_reply_error(r, WEFT_EDECODE);
  else
    weft_reply_send_fmt(r, "I", n + 1);
}

static void who(weft_port_t* p, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)p;
  if (weft_msg_take_reply(m, &r) == 0)
    weft_reply_send_fmt(r, "si", name, (int)getpid());
}

static void hold(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  weft_msg_keep(m); /* Never answered: freed when the process dies. */
}

static void close_channel(weft_port_t* a, weft_port_t* b) {
  weft_port_free(a);
  weft_port_free(b);
}

static void on_sigterm(uv_signal_t* s, int signum) {
  (void)signum;
  uv_close((uv_handle_t*)s, NULL);
  weft_node_leave(node);
  close_channel(plus_in, plus_out);
  close_channel(who_in, who_out);
  close_channel(hold_in, hold_out);
}

static void serve(weft_loop_t* loop, const char* what,
                  weft_port_message_cb cb, weft_port_t** in,
                  weft_port_t** out) {
  if (weft_channel_new(loop, in, out) != 0 ||
      weft_port_on_message(*out, cb) != 0 || weft_port_unref(*out) != 0 ||
      weft_node_export(node, what, *in) != 0) {
    fprintf(stderr, "node_app: cannot serve %s\n", what);
    exit(2);
  }
}

int main(int argc, char** argv) {
  weft_loop_t* loop = NULL;
  weft_node_opts_t o = {0};
  if (argc < 3)
    return 2;
  name = argv[2];
  if (weft_loop_new(&loop) != 0)
    return 2;
  o.servers = argv[1];
  o.name = name;
  o.cluster = "test";
  o.heartbeat_ms = argc > 3 ? atoi(argv[3]) : 100;
  o.on_event = print_ready_on_connect;
  if (weft_node_join(loop, &o, &node) != 0)
    return 2;
  serve(loop, "plus", plus_one, &plus_in, &plus_out);
  serve(loop, "who", who, &who_in, &who_out);
  serve(loop, "hold", hold, &hold_in, &hold_out);
  if (weft_node_register_worker(node, "adder", adder_main, NULL) != 0)
    return 2;
  uv_signal_init(weft_loop_uv(loop), &sigterm);
  uv_signal_start(&sigterm, on_sigterm, SIGTERM);
  weft_loop_run(loop);
  weft_loop_free(loop);
  return 0;
}
