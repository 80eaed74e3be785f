/* test_pool_durable.c - Criterion suite for durable distributed pool tasks
 * (weft/pool_node.h "Durable tasks"): tasks submitted while no node serves
 * stay in the JetStream stream, the only serving node (another process)
 * is killed with SIGKILL mid-task and a new one runs everything, each
 * future settling exactly once with its own result; a task longer than
 * the ack wait taken once (the node says it is still at work); a
 * cancelled task, a submitter that died (its results counted as
 * orphaned), a malformed task dropped for good; a nats-server without JetStream refused by name; bad
 * input, and random damage to the readers of tasks and of the server's
 * answers. Each test starts its own nats-server with JetStream in a fresh
 * directory. */
#include <criterion/criterion.h>
#include "node_support.h"
#include "jetstream.h"
#include "pool_node_internal.h"
#include "pool_outcomes.h"

static char js_dir[64];

static void start_server(void) {
  const char* extra[] = {"-js", "-sd", js_dir, NULL};
  snprintf(js_dir, sizeof(js_dir), "/tmp/weft-js-XXXXXX");
  cr_assert_not_null(mkdtemp(js_dir));
  cr_assert_eq(nats_server_start(&server, extra), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
  char cmd[96];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", js_dir); /* Ours, mkdtemp's. */
  cr_assert_eq(system(cmd), 0);
}

TestSuite(pool_durable, .init = start_server, .fini = stop_server,
          .timeout = 120);

/* --- a serving node's pool ------------------------------------------------ */

/* [i, ms] -> [i, node name] after ms. */
static int work(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  where_t* w = weft_task_data(ctx);
  int64_t i = 0, ms = 0;
  if (weft_msg_read(arg, "II", &i, &ms) != 0)
    return WEFT_EDECODE;
  if (ms > 0) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_fetch_add(&w->ran, 1);
  return weft_msg_pack(result, "Is", i, w->name);
}

static const task_entry_t tasks[] = {{"work", work}, {NULL, NULL}};

/* The consumer's ack wait is `ack_wait_ms` when this node makes it. */
static void serve_durably(weft_loop_t* loop, serving_t* s, const char* name,
                          int64_t ack_wait_ms) {
  weft_pool_serve_opts_t so = {0};
  so.durable = true;
  so.ack_wait_ms = ack_wait_ms;
  serve_group_ex(loop, s, name, 2, &so, tasks);
}

/* test/pool_node_app serving durably as `name`, ready. */
static pid_t start_durable_app(const char* name) {
  const char* argv[] = {NODE_APP, server.url, name, "100", "durable", NULL};
  return start_ready_app(argv);
}

/* --- the submitter's side ------------------------------------------------- */


static weft_pool_t* durable_remote(weft_node_t* node) {
  weft_pool_remote_opts_t o = {0};
  weft_pool_t* rp = NULL;
  o.durable = true;
  cr_assert_eq(weft_pool_new_remote(&rp, node, "g", &o), 0);
  cr_assert_eq(weft_node_flush(node, 5000), 0);
  return rp;
}

/* --- tests ---------------------------------------------------------------- */

/* Submitted while nobody serves: kept in the stream. The only serving node
 * (another process) takes some and is killed with SIGKILL mid-task: every
 * serving node is gone, nothing settles. A new node runs them all,
 * those the killed node held included (redelivered after the ack wait);
 * each future settles once, with its own result. */
Test(pool_durable, tasks_survive_the_loss_of_every_serving_node) {
  weft_loop_t* loop = new_loop();
  serving_t b;
  events_t eva = {0};
  weft_node_t* a;
  weft_pool_t* rp;
  weft_pool_stats_t st;
  weft_pool_server_stats_t ss;
  static outcomes_t o;
  pid_t x;
  int from_x = 0, from_b = 0, settled_at_kill;
  a = join_watching(loop, "a", &eva);
  rp = durable_remote(a);
  memset(&o, 0, sizeof(o));
  for (int i = 0; i < 20; i++)
    submit_work(rp, &o, i, i, 200);
  run_for(loop, 300);
  cr_assert_eq(atomic_load(&o.settled), 0, "nothing settles: nobody serves");
  cr_assert_eq(weft_pool_stats(rp, &st), 0);
  cr_assert_eq(st.queued, 20, "all waiting: %zu", st.queued);
  x = start_durable_app("x");
  while (atomic_load(&o.settled) < 2)
    run_for(loop, 5);
  run_for(loop, 50); /* x has taken its next two. */
  kill(x, SIGKILL);
  waitpid(x, NULL, 0);
  settled_at_kill = atomic_load(&o.settled);
  cr_assert(settled_at_kill < 20, "x died with tasks left");
  run_for(loop, 300);
  /* Every serving node is gone: nothing runs, and nothing is failed. */
  cr_assert(atomic_load(&o.settled) <= settled_at_kill + 2,
            "at most results x had sent before it died came");
  serve_durably(loop, &b, "b", 1000); /* x made the consumer: 1 s. */
  run_until_count(loop, &o.settled, 20);
  run_for(loop, 1500); /* A redelivered duplicate would settle twice. */
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(atomic_load(&o.calls[i]), 1, "task %d settled once", i);
    cr_assert_eq(o.status[i], 0, "task %d: %s", i, weft_err_name(o.status[i]));
    cr_assert_eq(o.index[i], i, "task %d got its own result", i);
    if (strcmp(o.who[i], "x") == 0)
      from_x++;
    else if (strcmp(o.who[i], "b") == 0)
      from_b++;
  }
  cr_assert(from_x >= 2, "x ran some before it died: %d", from_x);
  cr_assert_eq(from_x + from_b, 20);
  cr_assert_eq(weft_pool_server_stats(b.server, &ss), 0);
  cr_assert(ss.taken >= (uint64_t)from_b, "b took what it ran");
  cr_assert(ss.max_in_flight <= 2, "never more than its workers: %u",
            ss.max_in_flight);
  cr_assert_eq(weft_pool_stats(rp, &st), 0);
  cr_assert_eq(st.queued + st.running, 0);
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  run_and_free(loop);
}

/* A cancelled task settles at once and its late result is dropped; a
 * submitter that left has its tasks run all the same and their results
 * counted as orphaned; a malformed task is dropped for good (counted). */
Test(pool_durable, cancel_orphans_and_malformed) {
  weft_loop_t* loop = new_loop();
  serving_t b;
  events_t eva = {0}, evc = {0};
  weft_node_t *a, *c;
  weft_pool_t *rp, *rc;
  weft_pool_server_stats_t ss;
  weft_node_stats_t ns;
  weft_task_t* t = NULL;
  static outcomes_t o, oc;
  packed_t arg = packed_ii(7, 0);
  a = join_watching(loop, "a", &eva);
  c = join_watching(loop, "c", &evc);
  rp = durable_remote(a);
  rc = durable_remote(c);
  memset(&o, 0, sizeof(o));
  memset(&oc, 0, sizeof(oc));
  cr_assert_eq(weft_pool_submit(rp, "work", arg.data, arg.len, NULL, NULL, &t),
               0);
  for (int i = 0; i < 3; i++)
    submit_work(rc, &oc, i, i, 0);
  run_for(loop, 200); /* Stored. */
  cr_assert_eq(weft_task_cancel(t), 0);
  cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
  /* c dies as far as the cluster is concerned: its tasks settle
   * ENOTCONNECTED there and stay in the stream. */
  cr_assert_eq(weft_node_leave(c), 0);
  run_until_count(loop, &oc.settled, 3);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(oc.status[i], WEFT_ENOTCONNECTED);
  cr_assert_eq(weft_pool_close(rc), 0);
  /* Foreign bytes in the stream. */
  cr_assert_eq(weft__node_publish(a, "weft.test.pool.g.tasks", NULL, "\x93\x01",
                                  2, NULL),
               0);
  submit_work(rp, &o, 0, 0, 0);
  /* A long ack wait: nothing here is meant to be delivered again, even on
   * a stalled machine. */
  serve_durably(loop, &b, "b", 30000);
  run_until_count(loop, &o.settled, 1);
  cr_assert_eq(o.status[0], 0);
  cr_assert_eq(o.index[0], 0);
  for (int i = 0; i < 400; i++) {
    cr_assert_eq(weft_pool_server_stats(b.server, &ss), 0);
    cr_assert_eq(weft_node_stats(b.node, &ns), 0);
    if (ss.taken == 5 && ss.orphaned == 3 && ns.dropped_decode == 1)
      break;
    run_for(loop, 10);
  }
  cr_assert_eq(ss.taken, 5, "the cancelled one, c's three and a's: %llu",
               (unsigned long long)ss.taken);
  cr_assert_eq(ss.orphaned, 3, "c's results had nobody: %llu",
               (unsigned long long)ss.orphaned);
  cr_assert_eq(ns.dropped_decode, 1, "the malformed task");
  run_for(loop, 1500); /* Nothing comes again (all acknowledged). */
  cr_assert_eq(weft_pool_server_stats(b.server, &ss), 0);
  cr_assert_eq(ss.taken, 5, "nothing delivered twice");
  cr_assert_eq(atomic_load(&o.calls[0]), 1);
  cr_assert_eq(weft_task_status(t), WEFT_ECANCELED, "still cancelled");
  weft_task_free(t);
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  run_and_free(loop);
}

/* A nats-server without JetStream: durable pools are refused by name at
 * once, not left waiting. */
Test(pool_durable, no_jetstream_enotsup) {
  nats_server_t plain;
  weft_loop_t* loop = new_loop();
  weft_node_t* a;
  weft_pool_t *pool, *rp = NULL;
  weft_pool_server_t* s = NULL;
  weft_pool_opts_t po = {0};
  weft_pool_remote_opts_t ro = {0};
  weft_pool_serve_opts_t so = {0};
  events_t ev = {0};
  cr_assert_eq(nats_server_start(&plain, NULL), 0);
  a = join_watching_at(loop, "a", plain.url, &ev);
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  ro.durable = true;
  so.durable = true;
  cr_assert_eq(weft_pool_new_remote(&rp, a, "g", &ro), WEFT_ENOTSUP);
  cr_assert_null(rp);
  po.max_threads = 1;
  cr_assert_eq(weft_pool_new(&pool, &po), 0);
  cr_assert_eq(weft_pool_serve_ex(a, pool, "g", &so, &s), WEFT_ENOTSUP);
  cr_assert_null(s);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_pool_close(pool), 0);
  run_and_free(loop);
  nats_server_stop(&plain);
}

/* Bad input: named errors; the durable wire's reader refuses what is not
 * [name, reply, arg]. */
Test(pool_durable, bad_input) {
  weft_loop_t* loop = new_loop();
  weft_node_t* a;
  weft_pool_t *pool, *rp = NULL;
  weft_pool_server_t* s = NULL;
  weft_pool_opts_t po = {0};
  weft_pool_remote_opts_t ro = {0};
  weft_pool_serve_opts_t so = {0};
  events_t ev = {0};
  unsigned char b[128];
  char name[65], reply[64];
  const unsigned char* arg = NULL;
  size_t n, arg_len = 0;
  a = join_watching(loop, "a", &ev);
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  ro.durable = true;
  ro.stream = "bad.name";
  cr_assert_eq(weft_pool_new_remote(&rp, a, "g", &ro), WEFT_EINVAL);
  po.max_threads = 1;
  cr_assert_eq(weft_pool_new(&pool, &po), 0);
  so.durable = true;
  so.ack_wait_ms = -1;
  cr_assert_eq(weft_pool_serve_ex(a, pool, "g", &so, &s), WEFT_EINVAL);
  so.ack_wait_ms = 0;
  so.stream = "";
  cr_assert_eq(weft_pool_serve_ex(a, pool, "g", &so, &s), WEFT_EINVAL);
  /* A stream of our own naming works. */
  so.stream = "mine";
  cr_assert_eq(weft_pool_serve_ex(a, pool, "g", &so, &s), 0);
  cr_assert_eq(weft_pool_unserve(s), 0);
  /* The wire. */
  n = weft__pool_wire_dtask(b, "work", "weft.c.a.t.1.2", "\xc0", 1);
  cr_assert_eq(weft__pool_wire_read_dtask(b, n, name, reply, sizeof(reply),
                                          &arg, &arg_len),
               0);
  cr_assert_str_eq(name, "work");
  cr_assert_str_eq(reply, "weft.c.a.t.1.2");
  cr_assert_eq(arg_len, 1);
  cr_assert_eq(arg[0], 0xc0);
  cr_assert_eq(weft__pool_wire_read_dtask(b, n - 1, name, reply,
                                          sizeof(reply), &arg, &arg_len),
               WEFT_EDECODE, "no argument");
  cr_assert_eq(weft__pool_wire_read_dtask(b, n, name, reply, 8, &arg,
                                          &arg_len),
               WEFT_EDECODE, "reply too long");
  n = weft__pool_wire_dtask(b, "work", "a.*", "\xc0", 1);
  cr_assert_eq(weft__pool_wire_read_dtask(b, n, name, reply, sizeof(reply),
                                          &arg, &arg_len),
               WEFT_EDECODE, "a wildcard reply");
  n = weft__pool_wire_task(b, "work", "\xc0", 1);
  cr_assert_eq(weft__pool_wire_read_dtask(b, n, name, reply, sizeof(reply),
                                          &arg, &arg_len),
               WEFT_EDECODE, "a core offer is not a durable task");
  /* Random damage to a task and to a JetStream answer: refused or read
   * within bounds, never a crash (ASan build). */
  srand(7);
  for (int k = 0; k < 20000; k++) {
    unsigned char m[64];
    char text[80];
    n = weft__pool_wire_dtask(m, "work", "weft.c.a.t.1.2", "\x92\x01\x02", 3);
    m[rand() % n] = (unsigned char)rand();
    if (k % 3 == 0)
      n = (size_t)rand() % (n + 1);
    if (weft__pool_wire_read_dtask(m, n, name, reply, sizeof(reply), &arg,
                                   &arg_len) == 0) {
      cr_assert(arg > m && arg + arg_len == m + n);
      cr_assert(strlen(reply) > 0 && strlen(reply) < sizeof(reply));
      cr_assert(weft__wire_name_ok(name));
    }
    n = (size_t)snprintf(text, sizeof(text),
                         "{\"error\":{\"code\":400,\"err_code\":10058}}");
    text[rand() % n] = (char)rand();
    cr_assert(weft__js_result(text, (size_t)rand() % (n + 1)) >= -1);
  }
  cr_assert_eq(weft__js_result("{\"stream\":\"s\",\"seq\":1}", 22), 0);
  cr_assert_eq(weft__js_result("{\"error\":{\"err_code\":10058}}", 28),
               10058);
  cr_assert_eq(weft__js_result("\x92\x02\xc0", 3), -1);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_pool_close(pool), 0);
  run_and_free(loop);
}

/* A task that runs longer than the ack wait is not delivered again while
 * its node works on it (the node tells the server so): another node with
 * workers free does not get it. */
Test(pool_durable, long_task_not_delivered_twice) {
  weft_loop_t* loop = new_loop();
  serving_t b, c;
  events_t eva = {0};
  weft_node_t* a;
  weft_pool_t* rp;
  weft_pool_server_stats_t sb, sc;
  static outcomes_t o;
  serve_durably(loop, &b, "b", 2000);
  serve_durably(loop, &c, "c", 2000);
  a = join_watching(loop, "a", &eva);
  rp = durable_remote(a);
  memset(&o, 0, sizeof(o));
  submit_work(rp, &o, 0, 0, 5000); /* The ack wait is 2000 ms. */
  run_until_count(loop, &o.settled, 1);
  run_for(loop, 300);
  cr_assert_eq(o.status[0], 0);
  cr_assert_eq(atomic_load(&o.calls[0]), 1);
  cr_assert_eq(weft_pool_server_stats(b.server, &sb), 0);
  cr_assert_eq(weft_pool_server_stats(c.server, &sc), 0);
  cr_assert_eq(sb.taken + sc.taken, 1, "taken once: b %llu, c %llu",
               (unsigned long long)sb.taken, (unsigned long long)sc.taken);
  cr_assert_eq(atomic_load(&b.where.ran) + atomic_load(&c.where.ran), 1);
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  unserve_group(&c);
  run_and_free(loop);
}
