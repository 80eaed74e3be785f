/* test_node_cluster.c - nodes on a cluster of three NATS servers: a
 * server stopped and a node killed mid-run (weft/node.h). */
#include "node_support.h"

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
  char curl[3][64], routes[256], order[3][256];
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
  (void)order;
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
  char sa[256], sb[256], sc[256];
  weft_node_t *a, *b;
  weft_port_t *pin, *pout, *sin, *sout, *plus, *seq, *cwho;
  seq_t s = {0};
  who_t w;
  pid_t c;
  int status;
  start_routed();
  snprintf(sa, sizeof(sa), "%s,%s,%s", routed[0].url, routed[1].url,
           routed[2].url);
  snprintf(sb, sizeof(sb), "%s,%s,%s", routed[1].url, routed[2].url,
           routed[0].url);
  snprintf(sc, sizeof(sc), "%s,%s,%s", routed[2].url, routed[0].url,
           routed[1].url);
  a = join_watching_at(loop, "a", sa, &ea);
  b = join_watching_at(loop, "b", sb, &eb);
  serve(loop, b, "plus", plus_one, NULL, &pin, &pout);
  serve(loop, b, "seq", seq_message, &s, &sin, &sout);
  cr_assert_eq(weft_node_port(a, "b", "plus", &plus), 0);
  cr_assert_eq(weft_node_port(a, "b", "seq", &seq), 0);
  cr_assert_eq(weft_node_port(a, "c", "who", &cwho), 0);
  c = start_node_app_at("c", sc);
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
  c = start_node_app_at("c", sc);
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

