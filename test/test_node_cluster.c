/* test_node_cluster.c - nodes on a cluster of three NATS servers: a
 * server stopped and a node killed mid-run (weft/node.h), for ports, and
 * for remote actors' monitors, the distributed pool and remote spawn. */
#include "node_support.h"
#include "pool_outcomes.h"
#include "spawn_entry.h"

/* --- a cluster of three NATS servers --------------------------------------- */

/* Three nats-servers joined by routes; node a prefers server 1, node b
 * server 2, node c (another process) server 3. Calls and posts cross the
 * routes; server 2 is stopped mid-run: b fails over and is served again,
 * with nothing lost, duplicated or reordered once it is back, and nobody
 * sees b down; then node c is killed (seen down by a and b) and comes
 * back. */
static nats_server_t routed[3];

static void stop_routed(void) {
  for (int i = 0; i < 3; i++)
    nats_server_stop(&routed[i]);
}

TestSuite(node_cluster, .fini = stop_routed, .timeout = 90);

static void start_routed(void) {
  int cport[3];
  char curl[3][64], routes[256];
  for (int i = 0; i < 3; i++) {
    cport[i] = nats_free_port();
    snprintf(curl[i], sizeof(curl[i]), "nats://127.0.0.1:%d", cport[i]);
  }
  snprintf(routes, sizeof(routes), "%s,%s,%s", curl[0], curl[1], curl[2]);
  for (int i = 0; i < 3; i++) {
    const char* extra[] = {"--cluster", curl[i], "--routes", routes,
                           "--cluster_name", "weft-test", NULL};
    cr_assert_eq(nats_server_start(&routed[i], extra), 0, "server %d", i);
  }
}

/* The servers' URLs for node a, b and c (`out` 0, 1, 2), each list
 * beginning with the node's own server and failing over to the next. */
static void routed_urls(char out[3][256]) {
  for (int i = 0; i < 3; i++)
    snprintf(out[i], sizeof(out[i]), "%s,%s,%s", routed[i].url,
             routed[(i + 1) % 3].url, routed[(i + 2) % 3].url);
}

/* Retry a call until the name is served (interest crosses the routes
 * asynchronously after a subscribe or a fail-over). */
static void call_until_served(weft_loop_t* loop, weft_port_t* p) {
  answer_t ans;
  for (int i = 0; i < 200; i++) {
    request_int(p, 1, 5000, &ans);
    run_until(loop, &ans.done);
    if (ans.status == 0)
      return;
    cr_assert(ans.status == WEFT_ENORESPONDERS || ans.status == WEFT_ETIMEDOUT,
              "%s", weft_err_name(ans.status));
    run_for(loop, 20);
  }
  cr_assert_fail("never served");
}

static int calls_answered(weft_loop_t* loop, weft_port_t* p, int n) {
  int ok = 0;
  for (int i = 0; i < n; i++) {
    answer_t ans;
    request_int(p, i, 10000, &ans);
    run_until(loop, &ans.done);
    if (ans.status == 0 && ans.value == i + 1)
      ok++;
  }
  return ok;
}

Test(node_cluster, three_servers_lose_one_server_and_one_node) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  char urls[3][256];
  weft_node_t *a, *b;
  weft_port_t *pin, *pout, *sin, *sout, *plus, *seq, *cwho;
  seq_t s = {0};
  who_t w;
  pid_t c;
  int status;
  start_routed();
  routed_urls(urls);
  a = join_watching_at(loop, "a", urls[0], &ea);
  b = join_watching_at(loop, "b", urls[1], &eb);
  serve(loop, b, "plus", plus_one, NULL, &pin, &pout);
  serve(loop, b, "seq", seq_message, &s, &sin, &sout);
  cr_assert_eq(weft_node_port(a, "b", "plus", &plus), 0);
  cr_assert_eq(weft_node_port(a, "b", "seq", &seq), 0);
  cr_assert_eq(weft_node_port(a, "c", "who", &cwho), 0);
  c = start_node_app_at("c", urls[2]);
  run_until_count(loop, &ea.up, 2); /* b and c, across the routes. */
  run_until_count(loop, &eb.up, 2);

  call_until_served(loop, plus);
  cr_assert_eq(calls_answered(loop, plus, 100), 100);
  ask_who(loop, cwho, &w);
  cr_assert_eq(w.status, 0, "%s", weft_err_name(w.status));
  cr_assert_eq(w.pid, c);

  /* Server 2 goes: b fails over to server 3. */
  nats_server_stop(&routed[1]);
  run_until_count(loop, &eb.reconnected, 1);
  call_until_served(loop, plus);
  cr_assert_eq(calls_answered(loop, plus, 100), 100, "b served again");
  s.want = 1000;
  for (int i = 0; i < s.want; i++)
    cr_assert_eq(port_post_int(seq, i), 0);
  run_until(loop, &s.done);
  cr_assert_eq(atomic_load(&s.count), s.want, "nothing lost or duplicated");
  cr_assert_eq(s.out_of_order, 0);
  cr_assert_eq(atomic_load(&ea.down), 0, "nobody saw b down");

  /* Node c is killed: a and b see it; it comes back. */
  cr_assert_eq(kill(c, SIGKILL), 0);
  cr_assert_eq(waitpid(c, &status, 0), c);
  run_until_count(loop, &ea.down, 1);
  run_until_count(loop, &eb.down, 1);
  cr_assert_str_eq(ea.last_down, "c");
  cr_assert_str_eq(eb.last_down, "c");
  c = start_node_app_at("c", urls[2]);
  run_until_count(loop, &ea.up, 3);
  ask_who(loop, cwho, &w);
  cr_assert_eq(w.pid, c, "the new c answers");
  cr_assert_eq(kill(c, SIGTERM), 0);
  cr_assert_eq(waitpid(c, &status, 0), c);

  weft_port_free(plus);
  weft_port_free(seq);
  weft_port_free(cwho);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(pin, pout);
  free_channel(sin, sout);
  run_and_free(loop);
}


/* --- the other layers on the same cluster ---------------------------------- */

/* Node c (test/actor_remote_app, another process on server 3) runs an
 * actor system ("victim") and serves the distributed pool's group "g"
 * with 2 workers; a (server 1) and b (server 2) run actor systems, b
 * serves "g" too, and a submits to "g" with WEFT_POOL_RETRY. Mid-run,
 * server 2 is stopped (b fails over) and c is killed with SIGKILL while
 * it holds tasks: a and b see c down, their monitors of c's actor fire
 * with WEFT_ENOTCONNECTED (noconnection), and every task settles exactly
 * once with its own result. c restarted rejoins: its actor answers again
 * and it takes pool tasks again. */

#define TASKS 24

typedef struct {
  weft_actor_id target;
  atomic_int got, down, reason;
} watcher_t;

enum { MONITOR = 1 };

static int watcher_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  watcher_t* w = state;
  weft_signal_t sig;
  if (weft_actor_signal(m, &sig) == WEFT_SIGNAL_DOWN) {
    atomic_store(&w->reason, sig.reason);
    atomic_fetch_add(&w->down, 1);
    return 0;
  }
  if (msg_int(m) == MONITOR) {
    uint64_t ref;
    cr_assert_eq(weft_actor_monitor(self, w->target, &ref), 0);
  }
  atomic_fetch_add(&w->got, 1);
  return 0;
}

/* A local actor of `sys` that monitors actor "victim" of node c. */
static void monitor_victim(weft_loop_t* loop, weft_actor_system_t* sys,
                           watcher_t* w) {
  weft_actor_opts_t o = {0};
  weft_actor_id id = 0;
  weft_msg_t* reply = NULL;
  packed_t one = packed_int(1), mon = packed_int(MONITOR);
  memset(w, 0, sizeof(*w));
  cr_assert_eq(weft_actor_remote(sys, "c", "victim", &w->target), 0);
  cr_assert_eq(weft_actor_call(w->target, one.data, one.len, 10000, &reply),
               0, "c's victim answers");
  cr_assert_eq(msg_int(reply), 2);
  weft_msg_free(reply);
  cr_assert_eq(weft_actor_spawn(sys, watcher_fn, w, &o, &id), 0);
  cr_assert_eq(weft_actor_send(id, mon.data, mon.len), 0);
  run_until(loop, &w->got);
}

/* test/actor_remote_app as node c on `servers`, serving pool group "g". */
static pid_t start_c(const char* servers) {
  const char* argv[] = {ACTOR_APP, servers, "c", "100", "g", NULL};
  return start_ready_app(argv);
}

/* The caller's view of each task: pool_outcomes.h. Submitted as a message
 * (weft_pool_submit_msg), [1000 + i, ms]. */
static void submit(weft_pool_t* rp, outcomes_t* o, int i, int64_t ms) {
  weft_msg_t* arg = NULL;
  ctxs[i].o = o;
  ctxs[i].i = i;
  cr_assert_eq(weft_msg_new(&arg), 0);
  cr_assert_eq(weft_msg_pack(arg, "II", (int64_t)(1000 + i), ms), 0);
  cr_assert_eq(weft_pool_submit_msg(rp, "work", &arg, on_done, &ctxs[i],
                                    NULL),
               0);
}

/* [i, ms] -> [i, "b"]: b's share of group "g". */
static int b_work(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t i = 0, ms = 0;
  (void)ctx;
  if (weft_msg_read(arg, "II", &i, &ms) != 0)
    return WEFT_EDECODE;
  if (ms > 0)
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000},
              NULL);
  return weft_msg_pack(result, "Is", i, "b");
}

/* Start "adder" on b with workerData 40 and call it: 2 -> 42. */
static void spawn_on_b(weft_loop_t* loop, weft_node_t* a) {
  spawned_t s = {0};
  weft_port_t* p = NULL;
  answer_t ans;
  cr_assert_eq(weft_node_spawn_worker_on_async(a, "b", "adder", "\x28", 1,
                                               10000, record_spawned, &s),
               0);
  run_until(loop, &s.done);
  cr_assert_eq(s.status, 0, "%s", weft_err_name(s.status));
  cr_assert_eq(weft_node_port(a, "b", s.name, &p), 0);
  call_until_served(loop, p); /* Its export crosses the routes. */
  request_int(p, 2, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.value, 42);
  weft_port_free(p);
}

Test(node_cluster, monitors_and_pool_tasks_survive_a_lost_server_and_node) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  char urls[3][256];
  weft_node_t *a, *b;
  weft_actor_system_t *sysa = NULL, *sysb = NULL;
  watcher_t wa, wb;
  weft_pool_t *rp = NULL, *bpool = NULL;
  weft_pool_server_t* bserver = NULL;
  weft_pool_remote_opts_t ro = {0};
  weft_pool_opts_t po = {0};
  static outcomes_t o;
  weft_msg_t* reply = NULL;
  weft_actor_id victim;
  packed_t five = packed_int(5);
  int from_c = 0, c_again = 0, round;
  pid_t c;
  int status;
  start_routed();
  routed_urls(urls);
  a = join_watching_at(loop, "a", urls[0], &ea);
  b = join_watching_at(loop, "b", urls[1], &eb);
  cr_assert_eq(weft_actor_system_new(&sysa, NULL), 0);
  cr_assert_eq(weft_actor_system_new(&sysb, NULL), 0);
  cr_assert_eq(weft_actor_system_join(sysa, a), 0);
  cr_assert_eq(weft_actor_system_join(sysb, b), 0);
  cr_assert_eq(weft_node_register_worker(b, "adder", adder_main, NULL), 0);
  c = start_c(urls[2]);
  while (!weft_node_is_up(a, "c") || !weft_node_is_up(b, "c") ||
         !weft_node_is_up(a, "b"))
    run_for(loop, 10);
  monitor_victim(loop, sysa, &wa);
  monitor_victim(loop, sysb, &wb);

  /* Only c serves at first: it holds two tasks, the rest wait. */
  ro.on_down = WEFT_POOL_RETRY;
  cr_assert_eq(weft_pool_new_remote(&rp, a, "g", &ro), 0);
  memset(&o, 0, sizeof(o));
  for (int i = 0; i < TASKS; i++)
    submit(rp, &o, i, 300);
  while (atomic_load(&o.settled) < 2)
    run_for(loop, 5);
  po.max_threads = 2;
  cr_assert_eq(weft_pool_new(&bpool, &po), 0);
  cr_assert_eq(weft_pool_register(bpool, "work", b_work, NULL), 0);
  cr_assert_eq(weft_pool_serve(b, bpool, "g", &bserver), 0);

  /* Server 2 goes: b fails over to server 3 with tasks in flight. */
  nats_server_stop(&routed[1]);
  run_until_count(loop, &eb.reconnected, 1);
  /* c is killed while it holds tasks (two at a time, 300 ms each). */
  cr_assert(atomic_load(&o.settled) < TASKS - 4, "tasks still in flight");
  cr_assert_eq(kill(c, SIGKILL), 0);
  cr_assert_eq(waitpid(c, &status, 0), c);
  run_until_count(loop, &ea.down, 1);
  run_until_count(loop, &eb.down, 1);
  cr_assert_str_eq(ea.last_down, "c");
  cr_assert_str_eq(eb.last_down, "c");
  run_until(loop, &wa.down);
  run_until(loop, &wb.down);
  cr_assert_eq(atomic_load(&wa.reason), WEFT_ENOTCONNECTED, "%s",
               weft_err_name(atomic_load(&wa.reason)));
  cr_assert_eq(atomic_load(&wb.reason), WEFT_ENOTCONNECTED, "%s",
               weft_err_name(atomic_load(&wb.reason)));

  run_until_count(loop, &o.settled, TASKS);
  run_for(loop, 300); /* A late answer would settle something twice. */
  for (int i = 0; i < TASKS; i++) {
    cr_assert_eq(atomic_load(&o.calls[i]), 1, "task %d settled once", i);
    cr_assert_eq(o.status[i], 0, "task %d: %s", i, weft_err_name(o.status[i]));
    cr_assert_eq(o.index[i], 1000 + i, "task %d has its own result", i);
    cr_assert(strcmp(o.who[i], "b") == 0 || strcmp(o.who[i], "c") == 0);
    from_c += strcmp(o.who[i], "c") == 0;
  }
  cr_assert(from_c >= 2, "c ran some before it died: %d", from_c);
  cr_assert_eq(atomic_load(&ea.down), 1, "only c was seen down: %s",
               ea.last_down);
  cr_assert_eq(atomic_load(&eb.down), 1);

  /* b, failed over, still starts workers for a (across the routes). */
  spawn_on_b(loop, a);

  /* c comes back: its actor answers and it takes tasks again. */
  c = start_c(urls[2]);
  while (!weft_node_is_up(a, "c") || !weft_node_is_up(b, "c"))
    run_for(loop, 10);
  cr_assert_eq(weft_actor_remote(sysa, "c", "victim", &victim), 0);
  cr_assert_eq(weft_actor_call(victim, five.data, five.len, 10000, &reply), 0);
  cr_assert_eq(msg_int(reply), 6);
  weft_msg_free(reply);
  for (round = 0; round < 20 && c_again == 0; round++) {
    memset(&o, 0, sizeof(o));
    for (int i = 0; i < 8; i++)
      submit(rp, &o, i, 50);
    run_until_count(loop, &o.settled, 8);
    for (int i = 0; i < 8; i++) {
      cr_assert_eq(o.status[i], 0, "%s", weft_err_name(o.status[i]));
      cr_assert_eq(o.index[i], 1000 + i);
      c_again += strcmp(o.who[i], "c") == 0;
    }
  }
  cr_assert(c_again > 0, "the restarted c serves the pool again");
  cr_assert_eq(kill(c, SIGTERM), 0);
  cr_assert_eq(waitpid(c, &status, 0), c);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "c left cleanly");

  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_pool_unserve(bserver), 0);
  cr_assert_eq(weft_actor_system_leave(sysa), 0);
  cr_assert_eq(weft_actor_system_leave(sysb), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  cr_assert_eq(weft_pool_close(bpool), 0);
  cr_assert_eq(weft_actor_system_free(sysa), 0);
  cr_assert_eq(weft_actor_system_free(sysb), 0);
  run_and_free(loop);
}
