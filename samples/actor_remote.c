/* actor_remote.c - actors across nodes (weft/actor_remote.h): two nodes of
 * one cluster, each with an actor system. Both run in this process here,
 * on a nats-server the sample starts on a free loopback port; across
 * hosts only the server URL changes. Node b registers a counter and a
 * behaviour others may spawn; node a sends to the counter and asks it,
 * spawns a greeter on b and asks that, then monitors the greeter and sees
 * it end with its reason. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "../test/nats_server.h" /* Starts and stops a nats-server. */

/* Node b's counter: adds what it is sent, answers a request with the sum. */
static int counter_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t* sum = state;
  int64_t v = 0;
  weft_reply_t* r = NULL;
  (void)self;
  if (weft_msg_take_reply(m, &r) == 0) {
    weft_reply_send_fmt(r, "I", *sum);
    return 0;
  }
  if (weft_msg_read(m, "I", &v) == 0)
    *sum += v;
  return 0;
}

/* The greeter other nodes spawn: its state is built from the spawn's
 * argument, a name. A request gets a greeting; an integer below zero ends
 * it with that reason. */
static int greeter_init(const msgpack_object* args, void** state) {
  char* s;
  if (args->type != MSGPACK_OBJECT_STR || args->via.str.size > 64)
    return WEFT_EINVAL;
  s = malloc(args->via.str.size + 8);
  if (s == NULL)
    return WEFT_ENOMEM;
  snprintf(s, args->via.str.size + 8, "hello, %.*s",
           (int)args->via.str.size, args->via.str.ptr);
  *state = s;
  return 0;
}

static void greeter_stop(void* state, int reason) {
  (void)reason;
  free(state);
}

static int greeter_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t v = 0;
  weft_reply_t* r = NULL;
  (void)self;
  if (weft_msg_take_reply(m, &r) == 0) {
    weft_reply_send_fmt(r, "s", (const char*)state);
    return 0;
  }
  if (weft_msg_read(m, "I", &v) == 0 && v < 0)
    return (int)v;
  return 0;
}

/* Node a's watcher: monitors the greeter, tells it to end, hears DOWN. */
static weft_actor_id greeter;
static int down_reason;
static atomic_int downs;

static int watcher_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  weft_signal_t sig;
  uint64_t ref;
  (void)state;
  if (weft_actor_signal(m, &sig) == WEFT_SIGNAL_DOWN) {
    down_reason = sig.reason;
    downs = 1;
    return 0;
  }
  weft_actor_monitor(self, greeter, &ref);
  weft_actor_send_fmt(greeter, "I", (int64_t)WEFT_ECANCELED);
  return 0;
}

/* Run the loop until `*flag` (a timer looks every 2 ms). */
static weft_loop_t* loop;
static weft_node_t *a, *b;
static int (*until)(void);

static void tick(uv_timer_t* t) {
  (void)t;
  if (until())
    weft_loop_stop(loop);
}

static void run_until(int (*cond)(void)) {
  uv_timer_t timer;
  until = cond;
  uv_timer_init(weft_loop_uv(loop), &timer);
  uv_timer_start(&timer, tick, 2, 2);
  while (!cond())
    weft_loop_run(loop);
  uv_close((uv_handle_t*)&timer, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

static int both_up(void) {
  return weft_node_is_up(a, "b") && weft_node_is_up(b, "a");
}

static void wait_both_up(void) {
  run_until(both_up);
}

static int down_heard(void) {
  return downs;
}

static int64_t call_int(weft_actor_id to) {
  weft_msg_t* reply = NULL;
  int64_t v = -1;
  if (weft_actor_call(to, "\xc0", 1, 5000, &reply) == 0)
    weft_msg_read(reply, "I", &v);
  weft_msg_free(reply);
  return v;
}

int main(void) {
  nats_server_t server;
  weft_node_opts_t o = {0};
  weft_actor_system_t *sa = NULL, *sb = NULL;
  weft_actor_opts_t named = {0};
  weft_actor_id counter, watcher;
  weft_msg_t* reply = NULL;
  const char* text = NULL;
  size_t len = 0;
  int64_t sum = 0;
  int k;
  if (nats_server_start(&server, NULL) != 0) {
    fprintf(stderr, "actor_remote: nats-server did not start\n");
    return 1;
  }
  weft_loop_new(&loop);
  o.servers = server.url;
  o.heartbeat_ms = 100;
  o.name = "a";
  weft_node_join(loop, &o, &a);
  o.name = "b";
  weft_node_join(loop, &o, &b);
  weft_actor_system_new(&sa, NULL);
  weft_actor_system_new(&sb, NULL);
  weft_actor_system_join(sa, a);
  weft_actor_system_join(sb, b);

  /* Node b: a registered counter and a behaviour for others to spawn. */
  named.name = "counter";
  weft_actor_spawn(sb, counter_fn, &sum, &named, NULL);
  weft_actor_register_behaviour(sb, "greeter", greeter_fn, greeter_init,
                                greeter_stop);
  wait_both_up();
  weft_node_flush(a, 5000);
  weft_node_flush(b, 5000);
  printf("nodes a and b are up\n");

  /* Node a: an address for b's counter, used as a local actor's. */
  weft_actor_remote(sa, "b", "counter", &counter);
  for (k = 1; k <= 3; k++)
    weft_actor_send_fmt(counter, "I", (int64_t)k);
  printf("b's counter after 1, 2, 3 sent from a: %lld\n",
         (long long)call_int(counter));

  /* Spawn on b, with an argument. */
  if (weft_actor_spawn_on(sa, "b", "greeter", "\xa5world", 6, 5000,
                          &greeter) != 0)
    return 1;
  if (weft_actor_call(greeter, "\xc0", 1, 5000, &reply) == 0 &&
      weft_msg_read(reply, "s", &text, &len) == 0)
    printf("the greeter spawned on b says: %.*s\n", (int)len, text);
  weft_msg_free(reply);
  printf("unknown behaviour: %s\n",
         weft_err_name(weft_actor_spawn_on(sa, "b", "nosuch", NULL, 0, 5000,
                                           &watcher)));

  /* A monitor across nodes hears the remote actor's reason. */
  weft_actor_spawn(sa, watcher_fn, NULL, NULL, &watcher);
  weft_actor_send(watcher, "\xc0", 1);
  run_until(down_heard);
  printf("the greeter ended; a's monitor heard: %s\n",
         weft_err_name(down_reason));

  weft_actor_system_leave(sa);
  weft_actor_system_leave(sb);
  weft_node_leave(a);
  weft_node_leave(b);
  weft_actor_system_free(sa);
  weft_actor_system_free(sb);
  weft_loop_run(loop);
  weft_loop_free(loop);
  nats_server_stop(&server);
  printf("nodes left, nats-server stopped\n");
  return 0;
}
