/* link_cut_driver.c - node "a" of test/netns/three_hosts.sh: three hosts
 * (network namespaces), each with a nats-server of one cluster and a weft
 * node; this one runs on host 1 and checks, with the link of host 3 cut
 * and restored by the commands it is given:
 *   1. b and c come up, and a call to each one's "plus" answers;
 *   2. host 3's link cut: c goes down (its heartbeats stop) while b stays
 *      up, a call to b still answers, a call to c fails (no responders,
 *      a timeout or not connected, never a reply);
 *   3. the link restored: c comes up again and a call to it answers.
 *   link_cut_driver URL CUT_CMD RESTORE_CMD
 * Prints what it sees; exits 0 when all of it held. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <weft/weft.h>

static atomic_int up_b, up_c, down_b, down_c, done;
static weft_port_t *to_b, *to_c;
static const char *cut_cmd, *restore_cmd;
static int failures;

static void on_event(weft_node_t* n, const weft_node_event_t* ev, void* ctx) {
  (void)n;
  (void)ctx;
  if (ev->kind != WEFT_NODE_UP && ev->kind != WEFT_NODE_DOWN)
    return;
  printf("event: %s %s\n", ev->kind == WEFT_NODE_UP ? "up" : "down",
         ev->node);
  fflush(stdout);
  if (strcmp(ev->node, "b") == 0)
    atomic_fetch_add(ev->kind == WEFT_NODE_UP ? &up_b : &down_b, 1);
  else if (strcmp(ev->node, "c") == 0)
    atomic_fetch_add(ev->kind == WEFT_NODE_UP ? &up_c : &down_c, 1);
}

static void check(int ok, const char* what) {
  printf("%s: %s\n", ok ? "ok" : "FAILED", what);
  fflush(stdout);
  if (!ok)
    failures++;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Wait until *v >= want, at most ms. */
static int wait_for(atomic_int* v, int want, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    if (atomic_load(v) >= want)
      return 1;
    sleep_ms(10);
  }
  return atomic_load(v) >= want;
}

/* plus(n) on `p`: n + 1, or a negative error. */
static int64_t plus(weft_port_t* p, int64_t n, int timeout_ms) {
  weft_msg_t* r = NULL;
  unsigned char b[9] = {0xd3};
  int64_t out = -1;
  int err;
  for (int i = 0; i < 8; i++)
    b[1 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
  err = weft_port_call(p, b, sizeof(b), timeout_ms, &r);
  if (err != 0)
    return err;
  if (weft_msg_read(r, "I", &out) != 0)
    out = WEFT_EDECODE;
  weft_msg_free(r);
  return out;
}

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000u;
}

/* A call that answers within `ms`, retried (routes and interest settle):
 * by the clock, as a call can fail at once (no responders while the
 * servers' route is not back yet) as well as time out. */
static int answers(weft_port_t* p, int ms) {
  uint64_t until = now_ms() + (uint64_t)ms;
  do {
    if (plus(p, 41, 500) == 42)
      return 1;
    sleep_ms(100);
  } while (now_ms() < until);
  return 0;
}

static void* scenario(void* arg) {
  int64_t r;
  (void)arg;
  check(wait_for(&up_b, 1, 30000) && wait_for(&up_c, 1, 30000),
        "b and c came up");
  check(answers(to_b, 10000), "a call to b answers");
  check(answers(to_c, 10000), "a call to c answers");

  printf("cutting host 3's link: %s\n", cut_cmd);
  fflush(stdout);
  check(system(cut_cmd) == 0, "the cut command ran");
  check(wait_for(&down_c, 1, 15000), "c went down");
  check(atomic_load(&down_b) == 0, "b stayed up");
  check(plus(to_b, 1, 3000) == 2, "a call to b still answers");
  r = plus(to_c, 1, 2000);
  printf("a call to c while cut: %lld (%s)\n", (long long)r,
         r < 0 ? weft_err_name((int)r) : "a reply");
  check(r == WEFT_ENORESPONDERS || r == WEFT_ETIMEDOUT ||
            r == WEFT_ENOTCONNECTED,
        "a call to c fails with a named error");

  printf("restoring host 3's link: %s\n", restore_cmd);
  fflush(stdout);
  check(system(restore_cmd) == 0, "the restore command ran");
  check(wait_for(&up_c, 2, 60000), "c came up again");
  check(answers(to_c, 20000), "a call to c answers again");
  check(atomic_load(&down_b) == 0, "b never went down");
  atomic_store(&done, 1);
  return NULL;
}

static void tick(uv_timer_t* t) {
  if (atomic_load(&done))
    weft_loop_stop(t->data);
}

int main(int argc, char** argv) {
  weft_loop_t* loop = NULL;
  weft_node_t* node = NULL;
  weft_node_opts_t o = {0};
  uv_timer_t timer;
  pthread_t th;
  if (argc != 4) {
    fprintf(stderr, "usage: link_cut_driver URL CUT_CMD RESTORE_CMD\n");
    return 2;
  }
  cut_cmd = argv[2];
  restore_cmd = argv[3];
  if (weft_loop_new(&loop) != 0)
    return 2;
  o.servers = argv[1];
  o.name = "a";
  o.cluster = "test";
  o.heartbeat_ms = 100;
  o.down_after_ms = 1000;
  o.max_reconnect = -1;
  o.on_event = on_event;
  if (weft_node_join(loop, &o, &node) != 0 ||
      weft_node_port(node, "b", "plus", &to_b) != 0 ||
      weft_node_port(node, "c", "plus", &to_c) != 0)
    return 2;
  uv_timer_init(weft_loop_uv(loop), &timer);
  timer.data = loop;
  uv_timer_start(&timer, tick, 10, 10);
  pthread_create(&th, NULL, scenario, NULL);
  while (!atomic_load(&done))
    weft_loop_run(loop);
  pthread_join(th, NULL);
  uv_close((uv_handle_t*)&timer, NULL);
  weft_port_free(to_b);
  weft_port_free(to_c);
  weft_node_leave(node);
  weft_loop_run(loop);
  weft_loop_free(loop);
  printf("%s\n", failures == 0 ? "link_cut_driver: ok" : "link_cut_driver: FAILED");
  return failures == 0 ? 0 : 1;
}
