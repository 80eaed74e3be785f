/* test_pool_node.c - Criterion suite for the distributed pool
 * (weft/pool_node.h): tasks spread over serving nodes, results matched to
 * their submissions, errors by name, never more taken than workers, tasks
 * waiting while nobody serves, cancel, a serving node in another process
 * killed with SIGKILL (retry: all succeed; fail: its tasks
 * WEFT_ENOTCONNECTED; each settles once), malformed payloads dropped and
 * counted, and bad input. Each test starts its own nats-server. */
#include <criterion/criterion.h>
#include "node_support.h"
#include "pool_node_internal.h"
#include "pool_outcomes.h"

static void start_server(void) {
  cr_assert_eq(nats_server_start(&server, NULL), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
}

TestSuite(pool_node, .init = start_server, .fini = stop_server,
          .timeout = 120);

/* --- a serving node's pool ------------------------------------------------ */

/* [i, ms] -> [i, node name] after ms; a negative i fails with code i. */
static int work(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  where_t* w = weft_task_data(ctx);
  int64_t i = 0, ms = 0;
  int now;
  if (weft_msg_read(arg, "II", &i, &ms) != 0)
    return WEFT_EDECODE;
  now = atomic_fetch_add(&w->running, 1) + 1;
  for (int m = atomic_load(&w->max_running); now > m &&
       !atomic_compare_exchange_weak(&w->max_running, &m, now);) {
  }
  if (ms > 0)
    {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_fetch_sub(&w->running, 1);
  atomic_fetch_add(&w->ran, 1);
  if (i < 0)
    return (int)i;
  return weft_msg_pack(result, "Is", i, w->name);
}

/* Runs until cancelled (at most 10 s). */
static int sleepy(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  where_t* w = weft_task_data(ctx);
  (void)arg;
  (void)result;
  atomic_fetch_add(&w->running, 1);
  for (int i = 0; i < 10000 && !weft_task_canceled(ctx); i++)
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  if (weft_task_canceled(ctx))
    atomic_fetch_add(&w->saw_cancel, 1);
  atomic_fetch_sub(&w->running, 1);
  atomic_fetch_add(&w->ran, 1);
  return weft_task_canceled(ctx) ? WEFT_ECANCELED : 0;
}

static const task_entry_t tasks[] = {
    {"work", work}, {"sleepy", sleepy}, {NULL, NULL}};

static void serve_group(weft_loop_t* loop, serving_t* s, const char* name,
                        unsigned threads) {
  serve_group_ex(loop, s, name, threads, NULL, tasks);
  cr_assert_eq(weft_node_flush(s->node, 5000), 0); /* Slots are in. */
}

/* --- the submitter's side ------------------------------------------------- */


static weft_pool_t* remote(weft_node_t* node, weft_pool_on_down on_down) {
  weft_pool_remote_opts_t o = {0};
  weft_pool_t* rp = NULL;
  o.on_down = on_down;
  cr_assert_eq(weft_pool_new_remote(&rp, node, "g", &o), 0);
  cr_assert_eq(weft_node_flush(node, 5000), 0);
  return rp;
}

/* Node b serving with `threads` workers, node a with a remote pool. */
typedef struct {
  weft_loop_t* loop;
  serving_t b;
  events_t eva;
  weft_node_t* a;
  weft_pool_t* rp;
} pair_t;

static void pair_start(pair_t* p, unsigned threads) {
  memset(p, 0, sizeof(*p));
  p->loop = new_loop();
  serve_group(p->loop, &p->b, "b", threads);
  p->a = join_watching(p->loop, "a", &p->eva);
  p->rp = remote(p->a, WEFT_POOL_RETRY);
}

/* Close the remote pool (unless done already), leave, end. */
static void pair_end(pair_t* p) {
  if (p->rp != NULL)
    cr_assert_eq(weft_pool_close(p->rp), 0);
  cr_assert_eq(weft_node_leave(p->a), 0);
  unserve_group(&p->b);
  run_and_free(p->loop);
}

/* --- tests ---------------------------------------------------------------- */

/* Three serving nodes take a share each; every result is its task's. */
Test(pool_node, tasks_spread_over_nodes_results_matched) {
  weft_loop_t* loop = new_loop();
  serving_t b, c, d;
  events_t eva = {0};
  weft_node_t* a;
  weft_pool_t* rp;
  static outcomes_t o;
  int per[3] = {0};
  serve_group(loop, &b, "b", 2);
  serve_group(loop, &c, "c", 2);
  serve_group(loop, &d, "d", 2);
  a = join_watching(loop, "a", &eva);
  rp = remote(a, WEFT_POOL_RETRY);
  memset(&o, 0, sizeof(o));
  for (int i = 0; i < 60; i++)
    submit_work(rp, &o, i, 1000 + i, 5);
  run_until_count(loop, &o.settled, 60);
  for (int i = 0; i < 60; i++) {
    cr_assert_eq(atomic_load(&o.calls[i]), 1, "task %d settled once", i);
    cr_assert_eq(o.status[i], 0, "task %d: %s", i, weft_err_name(o.status[i]));
    cr_assert_eq(o.index[i], 1000 + i, "task %d got its own result", i);
    if (strcmp(o.who[i], "b") == 0)
      per[0]++;
    else if (strcmp(o.who[i], "c") == 0)
      per[1]++;
    else if (strcmp(o.who[i], "d") == 0)
      per[2]++;
  }
  cr_assert_eq(per[0] + per[1] + per[2], 60);
  cr_assert(per[0] > 0 && per[1] > 0 && per[2] > 0,
            "every node took some: b %d, c %d, d %d", per[0], per[1], per[2]);
  {
    weft_pool_stats_t st;
    cr_assert_eq(weft_pool_stats(rp, &st), 0);
    cr_assert_eq(st.submitted, 60);
    cr_assert_eq(st.completed, 60);
    cr_assert_eq(st.queued + st.running, 0);
  }
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  unserve_group(&c);
  unserve_group(&d);
  run_and_free(loop);
}

/* A task's error comes back by name; an unknown task is ENOTASK there; a
 * shared buffer cannot leave the process; a future works as locally. */
Test(pool_node, errors_by_name_and_futures) {
  pair_t p;
  weft_pool_t* rp;
  weft_task_t* t = NULL;
  weft_msg_t* m = NULL;
  weft_shared_t* sh = NULL;
  packed_t arg = packed_ii((int64_t)WEFT_EHEAPLIMIT, 0);
  int64_t i = 0;
  const char* s = NULL;
  size_t len = 0;
  pair_start(&p, 2);
  rp = p.rp;
  /* The task fails with EHEAPLIMIT: the code crosses by name. */
  cr_assert_eq(weft_pool_submit(rp, "work", arg.data, arg.len, NULL, NULL, &t),
               0);
  cr_assert_eq(weft_task_wait(t, 20000), 0);
  cr_assert_eq(weft_task_status(t), WEFT_EHEAPLIMIT);
  weft_task_free(t);
  /* No such task on the serving node. */
  cr_assert_eq(weft_pool_submit(rp, "nope", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, 20000), 0);
  cr_assert_eq(weft_task_status(t), WEFT_ENOTASK);
  weft_task_free(t);
  /* A future's result. */
  arg = packed_ii(41, 0);
  cr_assert_eq(weft_pool_submit(rp, "work", arg.data, arg.len, NULL, NULL, &t),
               0);
  cr_assert_eq(weft_task_wait(t, 20000), 0);
  cr_assert_eq(weft_task_take_result(t, &m), 0);
  cr_assert_eq(weft_msg_read(m, "Is", &i, &s, &len), 0);
  cr_assert_eq(i, 41);
  weft_msg_free(m);
  weft_task_free(t);
  /* A shared buffer stays here. */
  cr_assert_eq(weft_shared_new(&sh, 64), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "H", sh), 0);
  cr_assert_eq(weft_pool_submit_msg(rp, "work", &m, NULL, NULL, &t),
               WEFT_ENOTLOCAL);
  cr_assert_not_null(m, "the caller keeps a refused message");
  weft_msg_free(m);
  weft_shared_release(sh);
  /* A name that cannot cross. */
  cr_assert_eq(weft_pool_submit(rp, "no spaces", NULL, 0, NULL, NULL, &t),
               WEFT_EINVAL);
  pair_end(&p);
}

/* A node with 2 workers never holds more than 2 tasks, however many wait;
 * all of them run. */
Test(pool_node, never_more_taken_than_workers) {
  pair_t p;
  static outcomes_t o;
  weft_pool_server_stats_t st;
  pair_start(&p, 2);
  memset(&o, 0, sizeof(o));
  for (int i = 0; i < 24; i++)
    submit_work(p.rp, &o, i, i, 20);
  run_until_count(p.loop, &o.settled, 24);
  for (int i = 0; i < 24; i++)
    cr_assert_eq(o.status[i], 0);
  cr_assert_eq(weft_pool_server_stats(p.b.server, &st), 0);
  cr_assert_eq(st.capacity, 2);
  cr_assert_eq(st.taken, 24);
  cr_assert(st.max_in_flight <= 2, "at most 2 taken at once: %u",
            st.max_in_flight);
  cr_assert(atomic_load(&p.b.where.max_running) <= 2);
  cr_assert_eq(atomic_load(&p.b.where.max_running), 2, "both workers used");
  pair_end(&p);
}

/* Nobody serves: tasks wait (past max_queue a submit is refused), and run
 * once a node serves the group. */
Test(pool_node, tasks_wait_for_a_serving_node) {
  weft_loop_t* loop = new_loop();
  serving_t b;
  events_t eva = {0};
  weft_node_t* a;
  weft_pool_t* rp;
  weft_pool_remote_opts_t ro = {0};
  static outcomes_t o;
  weft_pool_stats_t st;
  packed_t arg = packed_ii(1, 0);
  a = join_watching(loop, "a", &eva);
  ro.max_queue = 5;
  cr_assert_eq(weft_pool_new_remote(&rp, a, "g", &ro), 0);
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  memset(&o, 0, sizeof(o));
  for (int i = 0; i < 5; i++)
    submit_work(rp, &o, i, i, 0);
  cr_assert_eq(weft_pool_submit(rp, "work", arg.data, arg.len, NULL, NULL,
                                NULL),
               WEFT_EQUEUEFULL);
  run_for(loop, 300);
  cr_assert_eq(atomic_load(&o.settled), 0, "nothing settles: nobody serves");
  cr_assert_eq(weft_pool_stats(rp, &st), 0);
  cr_assert_eq(st.queued, 5);
  cr_assert_eq(st.rejected, 1);
  serve_group(loop, &b, "b", 2);
  run_until_count(loop, &o.settled, 5);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(o.status[i], 0);
    cr_assert_eq(o.index[i], i);
  }
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  run_and_free(loop);
}

/* Cancel settles the caller's future at once and reaches the running
 * task there (weft_task_canceled). Destroy cancels what is left. */
Test(pool_node, cancel_reaches_the_serving_node) {
  pair_t p;
  weft_task_t *t = NULL, *t2 = NULL;
  weft_pool_server_stats_t st;
  pair_start(&p, 1);
  cr_assert_eq(weft_pool_submit(p.rp, "sleepy", NULL, 0, NULL, NULL, &t), 0);
  while (atomic_load(&p.b.where.running) == 0)
    run_for(p.loop, 5);
  cr_assert_eq(weft_task_cancel(t), 0);
  cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
  cr_assert_eq(weft_task_cancel(t), WEFT_EINVAL, "settled already");
  while (atomic_load(&p.b.where.ran) == 0)
    run_for(p.loop, 5);
  cr_assert_eq(weft_pool_server_stats(p.b.server, &st), 0);
  cr_assert_eq(st.canceled, 1);
  cr_assert_eq(atomic_load(&p.b.where.saw_cancel), 1,
               "the task function saw weft_task_canceled()");
  weft_task_free(t);
  /* Destroy: a running one is cancelled there too. */
  cr_assert_eq(weft_pool_submit(p.rp, "sleepy", NULL, 0, NULL, NULL, &t2), 0);
  while (atomic_load(&p.b.where.running) == 0)
    run_for(p.loop, 5);
  cr_assert_eq(weft_pool_destroy(p.rp), 0);
  p.rp = NULL;
  cr_assert_eq(weft_task_status(t2), WEFT_ECANCELED);
  weft_task_free(t2);
  while (atomic_load(&p.b.where.ran) < 2)
    run_for(p.loop, 5);
  cr_assert_eq(atomic_load(&p.b.where.saw_cancel), 2);
  pair_end(&p);
}

/* Until the serving node runs nothing, at most `ms` (a sleepy task that
 * was never told to stop runs 10 s): its stats. */
static weft_pool_server_stats_t server_quiet(pair_t* p, uint64_t ms) {
  weft_pool_server_stats_t st;
  uint64_t until = uv_hrtime() / 1000000u + ms;
  for (;;) {
    cr_assert_eq(weft_pool_server_stats(p->b.server, &st), 0);
    if (st.in_flight == 0)
      return st;
    cr_assert(uv_hrtime() / 1000000u < until,
              "a task still runs: its cancel never came");
    run_for(p->loop, 5);
  }
}

/* Cancelled, or destroyed, right after the submit, before the offer is
 * answered: a node that takes the task (its ack comes after) is still
 * told to stop it, before it starts or while it runs. A node may also
 * refuse such an offer (its one slot not free again yet): then nothing
 * runs. The close and the destroy return once the answer came (the ack
 * timeout is long here, so that they do not give up first). */
Test(pool_node, cancel_before_the_ack_still_reaches_the_taker) {
  pair_t p;
  weft_task_t* t = NULL;
  weft_pool_server_stats_t st;
  weft_pool_remote_opts_t ro = {0};
  pair_start(&p, 1);
  cr_assert_eq(weft_pool_close(p.rp), 0);
  p.rp = NULL;
  ro.on_down = WEFT_POOL_RETRY;
  ro.ack_timeout_ms = 15000;
  for (int round = 0; round < 2; round++) {
    weft_pool_t* rp = NULL;
    cr_assert_eq(weft_pool_new_remote(&rp, p.a, "g", &ro), 0);
    cr_assert_eq(weft_node_flush(p.a, 5000), 0);
    cr_assert_eq(weft_pool_submit(rp, "sleepy", NULL, 0, NULL, NULL, &t), 0);
    if (round == 0) { /* A cancel, then a close. */
      cr_assert_eq(weft_task_cancel(t), 0);
      cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
      cr_assert_eq(weft_pool_close(rp), 0);
    } else { /* A destroy. */
      cr_assert_eq(weft_pool_destroy(rp), 0);
      cr_assert_eq(weft_task_status(t), WEFT_ECANCELED);
    }
    weft_task_free(t);
    st = server_quiet(&p, 8000);
    cr_assert_eq(st.canceled, st.taken, "round %d: each task taken was told"
                 " to stop (taken %llu)", round,
                 (unsigned long long)st.taken);
    cr_assert_eq(atomic_load(&p.b.where.saw_cancel),
                 atomic_load(&p.b.where.ran), "if it ran, it saw the cancel");
    run_for(p.loop, 100); /* The slot opens again. */
  }
  cr_assert(st.taken >= 1, "an offer was taken at all");
  pair_end(&p);
}

/* A serving node in another process is killed with tasks in flight. */
static void killed_node(weft_pool_on_down on_down) {
  weft_loop_t* loop = new_loop();
  serving_t b;
  events_t eva = {0};
  weft_node_t* a;
  weft_pool_t* rp;
  static outcomes_t o;
  pid_t x;
  int from_x = 0, ok = 0, lost = 0;
  x = start_node_app_at("x", server.url);
  a = join_watching(loop, "a", &eva);
  while (!weft_node_is_up(a, "x"))
    run_for(loop, 10);
  rp = remote(a, on_down);
  memset(&o, 0, sizeof(o));
  /* Only x serves at first: it holds two tasks, the rest wait. */
  for (int i = 0; i < 20; i++)
    submit_work(rp, &o, i, i, 150);
  while (atomic_load(&o.settled) < 2)
    run_for(loop, 5);
  serve_group(loop, &b, "b", 2);
  run_for(loop, 50); /* x has taken its next two. */
  kill(x, SIGKILL);
  waitpid(x, NULL, 0);
  run_until_count(loop, &o.settled, 20);
  run_for(loop, 300); /* A late answer would settle something twice. */
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(atomic_load(&o.calls[i]), 1, "task %d settled once", i);
    if (o.status[i] == 0) {
      ok++;
      cr_assert_eq(o.index[i], i);
      if (strcmp(o.who[i], "x") == 0)
        from_x++;
    } else {
      cr_assert_eq(o.status[i], WEFT_ENOTCONNECTED, "task %d: %s", i,
                   weft_err_name(o.status[i]));
      lost++;
    }
  }
  cr_assert(from_x >= 2, "x ran some before it died: %d", from_x);
  cr_assert(atomic_load(&eva.down) >= 1, "x seen down");
  if (on_down == WEFT_POOL_RETRY) {
    cr_assert_eq(ok, 20, "all succeed: %d failed", lost);
  } else {
    cr_assert(lost >= 1 && lost <= 2, "x's tasks failed: %d", lost);
  }
  cr_assert_eq(weft_pool_close(rp), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  unserve_group(&b);
  run_and_free(loop);
}

Test(pool_node, killed_node_tasks_retried_elsewhere) {
  killed_node(WEFT_POOL_RETRY);
}

Test(pool_node, killed_node_tasks_fail_enotconnected) {
  killed_node(WEFT_POOL_FAIL);
}

/* Foreign bytes: offers and answers that are not the wire's are dropped
 * and counted (an offer with a reply subject is answered EDECODE); the
 * nodes go on. */
typedef struct {
  atomic_int n;
  int status;
  char error[32];
} heard_t;

static void heard(void* ctx, const weft__nats_msg_t* nm) {
  heard_t* h = ctx;
  h->status = nm->status;
  snprintf(h->error, sizeof(h->error), "%s",
           nm->error != NULL ? nm->error : "");
  atomic_fetch_add(&h->n, 1);
}

/* Offer `bad` raw and wait for its answer (again while the node's slots
 * are being replaced: "no responders"). */
static void offer_raw(weft_loop_t* loop, weft_node_t* a, heard_t* h,
                      const char* bad) {
  for (;;) {
    int n = atomic_load(&h->n);
    cr_assert_eq(weft__node_publish(a, "weft.test.pool.g", "weft.test.a.raw",
                                    bad, strlen(bad), NULL),
                 0);
    run_until_count(loop, &h->n, n + 1);
    if (h->status != WEFT_ENORESPONDERS)
      break;
    run_for(loop, 5);
  }
  cr_assert_str_eq(h->error, "EDECODE");
}

Test(pool_node, malformed_payloads_dropped_and_counted) {
  pair_t p;
  weft_loop_t* loop;
  weft_node_t* a;
  weft__nats_sub_t* sub = NULL;
  heard_t h = {0};
  weft_node_stats_t sb0, sb1, sa0, sa1;
  static const char* bad[] = {"\x93\xa1w\x01\x02", "\x92\x01\x01",
                              "\x92\xa3no \x01", "\x92\xa4work", "\xc1"};
  static outcomes_t o;
  pair_start(&p, 2);
  loop = p.loop;
  a = p.a;
  cr_assert_eq(weft__node_subscribe(a, "weft.test.a.raw", NULL, heard, NULL,
                                    &h, &sub),
               0);
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  cr_assert_eq(weft_node_stats(p.b.node, &sb0), 0);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    offer_raw(loop, a, &h, bad[i]);
  run_for(loop, 50);
  cr_assert_eq(weft__node_publish(a, "weft.test.pool.g", NULL, "\x92\xa4work",
                                  5, NULL),
               0); /* No reply subject: nobody to answer. */
  run_for(loop, 100);
  cr_assert_eq(weft_node_stats(p.b.node, &sb1), 0);
  cr_assert_eq(sb1.dropped_decode - sb0.dropped_decode, 6, "%llu %llu", (unsigned long long)sb0.dropped_decode, (unsigned long long)sb1.dropped_decode);
  /* Answers to a's remote pool that are not the wire's. */
  cr_assert_eq(weft_node_stats(a, &sa0), 0);
  /* a's first remote pool in this process answers on weft.test.a.t.1.* */
  cr_assert_eq(weft__node_publish(p.b.node, "weft.test.a.t.1.5", NULL,
                                  "\x92\x07\x01", 3, NULL),
               0);
  cr_assert_eq(weft__node_publish(p.b.node, "weft.test.a.t.1.x", NULL,
                                  "\x91\x01", 2, NULL),
               0);
  cr_assert_eq(weft_node_flush(p.b.node, 5000), 0);
  run_for(loop, 200);
  cr_assert_eq(weft_node_stats(a, &sa1), 0);
  cr_assert_eq(sa1.dropped_decode - sa0.dropped_decode, 2,
               "a bad answer and a bad id, for a's one remote pool");
  /* Both still work. */
  memset(&o, 0, sizeof(o));
  submit_work(p.rp, &o, 0, 7, 0);
  run_until_count(loop, &o.settled, 1);
  cr_assert_eq(o.status[0], 0);
  cr_assert_eq(o.index[0], 7);
  weft__nats_unsubscribe(sub);
  pair_end(&p);
}

/* Bad input gets a named error. The wire's readers refuse what is not
 * theirs (the fuzz target covers the rest). */
Test(pool_node, bad_input) {
  weft_loop_t* loop = new_loop();
  events_t eva = {0};
  weft_node_t* a = join_watching(loop, "a", &eva);
  weft_pool_t* rp = NULL;
  weft_pool_t* local = NULL;
  weft_pool_server_t* s = NULL;
  weft_pool_remote_opts_t ro = {0};
  char name[65];
  const unsigned char* arg;
  size_t len;
  int kind;
  cr_assert_eq(weft_pool_new_remote(NULL, a, "g", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new_remote(&rp, NULL, "g", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new_remote(&rp, a, "a.b", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_new_remote(&rp, a, "", NULL), WEFT_EINVAL);
  ro.on_down = (weft_pool_on_down)7;
  cr_assert_eq(weft_pool_new_remote(&rp, a, "g", &ro), WEFT_EINVAL);
  cr_assert_null(rp);
  cr_assert_eq(weft_pool_new(&local, NULL), 0);
  cr_assert_eq(weft_pool_serve(a, local, "a b", &s), WEFT_EINVAL);
  cr_assert_eq(weft_pool_serve(a, NULL, "g", &s), WEFT_EINVAL);
  cr_assert_eq(weft_pool_serve(a, local, "g", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_unserve(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_server_stats(NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft__pool_wire_read_task("\x92\xa1w", 3, name, &arg, &len),
               WEFT_EDECODE);
  cr_assert_eq(weft__pool_wire_read_task("\x92\xa1w\xc0", 4, name, &arg, &len),
               0);
  cr_assert_str_eq(name, "w");
  cr_assert_eq(len, 1);
  cr_assert_eq(weft__pool_wire_read_answer("\x92\x00\xa1.", 4, &kind, name,
                                           &arg, &len),
               WEFT_EDECODE);
  cr_assert_eq(weft__pool_wire_read_answer("\x92\x02\xc0\xc0", 4, &kind, name,
                                           &arg, &len),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_close(local), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop);
}
