/* test_node_spawn.c - Criterion suite for remote spawn of workers
 * (weft/node.h, "Remote spawn"): a node registers the worker entry
 * "adder" (test/spawn_entry.h); another starts it there, asynchronously on
 * its loop and blocking from a thread, and reaches the new worker by the
 * name it got back; the worker's exit removes its export; every error by
 * its name; the wire as a foreign client sees it; leaving terminates the
 * spawned workers; and a node in another process (test/node_app.c)
 * spawns there and is seen down. Each test starts its own nats-server. */
#include <criterion/criterion.h>
#include "node_support.h"
#include "spawn_entry.h"

static void start_server(void) {
  cr_assert_eq(nats_server_start(&server, NULL), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
}

TestSuite(node_spawn, .init = start_server, .fini = stop_server,
          .timeout = 60);

/* --- helpers --------------------------------------------------------------- */

/* record_spawned(), and a name exactly on success. */
static void on_spawned(weft_node_t* node, int status, const char* name,
                       void* ctx) {
  cr_assert_eq(status == 0, name != NULL, "a name exactly on success");
  record_spawned(node, status, name, ctx);
}

/* Spawn "adder" with k on `node_name` from `from`'s loop: the outcome. */
static int spawn_async(weft_loop_t* loop, weft_node_t* from,
                       const char* node_name, const char* entry, int64_t k,
                       int64_t timeout_ms, spawned_t* s) {
  packed_t a = packed_int(k);
  memset(s, 0, sizeof(*s));
  cr_assert_eq(weft_node_spawn_worker_on_async(from, node_name, entry, a.data,
                                               a.len, timeout_ms, on_spawned,
                                               s),
               0);
  cr_assert_eq(atomic_load(&s->done), 0, "never inside the call");
  run_until(loop, &s->done);
  return s->status;
}

/* A request with integer v to `name` on `node_name`: its answer. */
static void call_int(weft_loop_t* loop, weft_node_t* from,
                     const char* node_name, const char* name, int64_t v,
                     answer_t* ans) {
  weft_port_t* p = NULL;
  cr_assert_eq(weft_node_port(from, node_name, name, &p), 0);
  request_int(p, v, 10000, ans);
  run_until(loop, &ans->done);
  weft_port_free(p);
}

static void register_adder(weft_node_t* node) {
  weft_worker_opts_t o = {0};
  o.name = "spawn-adder";
  cr_assert_eq(weft_node_register_worker(node, "adder", adder_main, &o), 0);
}

/* --- tests ------------------------------------------------------------------ */

Test(node_spawn, spawned_on_another_node_and_reached_by_its_name) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  spawned_t s1, s2;
  answer_t ans;
  register_adder(b);
  settle(a, b);
  run_until(loop, &ea.up); /* a sees b. */

  cr_assert_eq(spawn_async(loop, a, "b", "adder", 5, 5000, &s1), 0, "%s",
               weft_err_name(s1.status));
  cr_assert_eq(strncmp(s1.name, "adder-", 6), 0, "%s", s1.name);
  cr_assert_eq(spawn_async(loop, a, "b", "adder", 7, 5000, &s2), 0);
  cr_assert_str_neq(s1.name, s2.name, "each worker its own name");
  call_int(loop, a, "b", s1.name, 10, &ans);
  cr_assert_eq(ans.status, 0, "%s", weft_err_name(ans.status));
  cr_assert_eq(ans.value, 15, "workerData was 5");
  call_int(loop, a, "b", s2.name, 10, &ans);
  cr_assert_eq(ans.value, 17, "workerData was 7");
  /* The new name is an export of b's as any: not one of a's. */
  call_int(loop, a, "a", s1.name, 10, &ans);
  cr_assert_eq(ans.status, WEFT_ENORESPONDERS);

  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

/* The blocking form from a thread with no loop (also to the node's own
 * name, through the network), and on the loop to its own name (at once). */
typedef struct {
  weft_node_t* node;
  const char* target;
  int status;
  char name[WEFT_NODE_NAME_MAX + 1];
  atomic_int done;
} blocking_t;

static void* blocking_main(void* arg) {
  blocking_t* c = arg;
  c->status = weft_node_spawn_worker_on(c->node, c->target, "adder", "\x03",
                                        1, 5000, c->name);
  atomic_store(&c->done, 1);
  return NULL;
}

Test(node_spawn, blocking_from_a_thread_and_on_the_loop) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  blocking_t c1 = {0}, c2 = {0};
  char here[WEFT_NODE_NAME_MAX + 1];
  pthread_t t1, t2;
  answer_t ans;
  register_adder(b);
  settle(a, b);
  run_until(loop, &ea.up);
  c1.node = a;
  c1.target = "b";
  c2.node = b;
  c2.target = "b";
  cr_assert_eq(pthread_create(&t1, NULL, blocking_main, &c1), 0);
  cr_assert_eq(pthread_create(&t2, NULL, blocking_main, &c2), 0);
  run_until(loop, &c1.done); /* b serves on this loop. */
  run_until(loop, &c2.done);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  cr_assert_eq(c1.status, 0, "%s", weft_err_name(c1.status));
  cr_assert_eq(c2.status, 0, "%s", weft_err_name(c2.status));
  cr_assert_str_neq(c1.name, c2.name);
  call_int(loop, a, "b", c1.name, 1, &ans);
  cr_assert_eq(ans.value, 4);
  call_int(loop, b, "b", c2.name, 2, &ans);
  cr_assert_eq(ans.value, 5);

  /* On b's loop, to b: served here, without waiting for the loop. */
  cr_assert_eq(weft_node_spawn_worker_on(b, "b", "adder", "\x0a", 1, 1000,
                                         here),
               0);
  cr_assert_eq(strncmp(here, "adder-", 6), 0, "%s", here);
  settle(b, NULL); /* Its export reached the server. */
  call_int(loop, a, "b", here, 1, &ans);
  cr_assert_eq(ans.value, 11);
  cr_assert_eq(weft_node_spawn_worker_on(b, "b", "nope", NULL, 0, 1000, here),
               WEFT_ENOENT);
  cr_assert_str_eq(here, "");
  /* a registered nothing: on its loop, to itself, nobody serves. */
  cr_assert_eq(weft_node_spawn_worker_on(a, "a", "adder", NULL, 0, 1000, here),
               WEFT_ENORESPONDERS);

  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

Test(node_spawn, a_worker_that_exits_is_unexported) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t* p = NULL;
  spawned_t s;
  answer_t ans;
  int tries = 0;
  register_adder(b);
  settle(a, b);
  run_until(loop, &ea.up);
  cr_assert_eq(spawn_async(loop, a, "b", "adder", 1, 5000, &s), 0);
  cr_assert_eq(weft_node_port(a, "b", s.name, &p), 0);
  request_int(p, 1, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.value, 2);
  cr_assert_eq(port_post_int(p, -1), 0); /* The worker exits. */
  /* Its exit event on b's loop removes the export: a request then finds
   * nobody (not WEFT_ECLOSED from a worker that is gone). */
  do {
    run_for(loop, 20);
    request_int(p, 1, 10000, &ans);
    run_until(loop, &ans.done);
  } while (ans.status == 0 && ++tries < 250);
  cr_assert_eq(ans.status, WEFT_ENORESPONDERS, "%s",
               weft_err_name(ans.status));
  weft_port_free(p);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

/* Requests kept unanswered, freed by free_held() at the test's end. */
static weft_msg_t* held[8];
static int nheld;

static void hold_message(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  cr_assert(nheld < 8);
  cr_assert_eq(weft_msg_keep(m), 0);
  held[nheld++] = m;
}

static void free_held(void) {
  while (nheld > 0)
    weft_msg_free(held[--nheld]);
}

static void* async_elsewhere(void* arg) {
  weft_node_t* a = arg;
  spawned_t s;
  return (void*)(intptr_t)weft_node_spawn_worker_on_async(
      a, "b", "adder", NULL, 0, 100, on_spawned, &s);
}

Test(node_spawn, errors_by_name) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0}, ec = {0}, ed = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_node_t* c = join(loop, "c", &ec);
  weft_node_t* d = join(loop, "d", &ed);
  weft_port_t *hin, *hout;
  weft_worker_opts_t big = {0}, with_data = {0};
  char name[WEFT_NODE_NAME_MAX + 1];
  spawned_t s;
  pthread_t t;
  void* res = NULL;
  register_adder(b);
  /* A stack no thread can have: weft_worker_spawn()'s own error. */
  big.stack_size = (size_t)1 << 46;
  cr_assert_eq(weft_node_register_worker(b, "huge", adder_main, &big), 0);
  /* d serves the spawn export itself and never answers. */
  serve(loop, d, WEFT_NODE_SPAWN_EXPORT, hold_message, NULL, &hin, &hout);
  settle(a, b);
  settle(c, d);
  run_until_count(loop, &ea.up, 3);

  cr_assert_eq(spawn_async(loop, a, "b", "nope", 1, 5000, &s), WEFT_ENOENT);
  cr_assert_eq(spawn_async(loop, a, "b", "huge", 1, 5000, &s), WEFT_ESPAWN,
               "%s", weft_err_name(s.status));
  cr_assert_eq(spawn_async(loop, a, "c", "adder", 1, 5000, &s),
               WEFT_ENORESPONDERS, "c registered nothing");
  cr_assert_eq(spawn_async(loop, a, "d", "adder", 1, 200, &s), WEFT_ETIMEDOUT);
  cr_assert_eq(weft_node_spawn_worker_on_async(a, "zz", "adder", NULL, 0, 100,
                                               on_spawned, &s),
               WEFT_ENOTCONNECTED, "zz is not up");
  cr_assert_eq(weft_node_spawn_worker_on(a, "zz", "adder", NULL, 0, 100, name),
               WEFT_ENOTCONNECTED);

  /* Bad input. */
  cr_assert_eq(weft_node_spawn_worker_on(a, "b", "ad.der", NULL, 0, 100, name),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_spawn_worker_on(a, "b c", "adder", NULL, 0, 100,
                                         name),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_spawn_worker_on(a, "b", "adder", NULL, 0, 100, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_spawn_worker_on(NULL, "b", "adder", NULL, 0, 100,
                                         name),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_spawn_worker_on(a, "b", "adder", NULL, 3, 100, name),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_spawn_worker_on(a, "b", "adder", "\x92\x01", 2, 100,
                                         name),
               WEFT_EDECODE, "not one value");
  cr_assert_eq(weft_node_spawn_worker_on_async(a, "b", "adder", NULL, 0, 100,
                                               NULL, NULL),
               WEFT_EINVAL);
  cr_assert_eq(pthread_create(&t, NULL, async_elsewhere, a), 0);
  pthread_join(t, &res);
  cr_assert_eq((int)(intptr_t)res, WEFT_EWRONGTHREAD);
  cr_assert_eq(weft_node_register_worker(b, "adder", adder_main, NULL),
               WEFT_EEXIST);
  cr_assert_eq(weft_node_register_worker(b, "x y", adder_main, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_node_register_worker(b, "other", NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_node_register_worker(NULL, "other", adder_main, NULL),
               WEFT_EINVAL);
  with_data.data = "\x01";
  with_data.data_len = 1;
  cr_assert_eq(weft_node_register_worker(b, "other", adder_main, &with_data),
               WEFT_EINVAL, "the spawn's argument is the data");
  cr_assert_eq(weft_node_register_worker(d, "adder", adder_main, NULL),
               WEFT_EEXIST, "d exports the service's name itself");

  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  cr_assert_eq(weft_node_leave(c), 0);
  cr_assert_eq(weft_node_leave(d), 0);
  free_held();
  free_channel(hin, hout);
  run_and_free(loop);
}

/* A spawn waiting on a node that goes down settles WEFT_ENOTCONNECTED at
 * once (not at its timeout); and the blocking form, too. */
static void* blocking_on_d(void* arg) {
  blocking_t* c = arg;
  c->status = weft_node_spawn_worker_on(c->node, "d", "adder", NULL, 0, 0,
                                        c->name);
  atomic_store(&c->done, 1);
  return NULL;
}

Test(node_spawn, a_node_that_goes_down_settles_its_spawns) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, ed = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* d = join(loop, "d", &ed);
  weft_port_t *hin, *hout;
  spawned_t s = {0};
  blocking_t c = {0};
  pthread_t t;
  packed_t one = packed_int(1);
  serve(loop, d, WEFT_NODE_SPAWN_EXPORT, hold_message, NULL, &hin, &hout);
  settle(a, d);
  run_until(loop, &ea.up);
  cr_assert_eq(weft_node_spawn_worker_on_async(a, "d", "adder", one.data,
                                               one.len, 0, on_spawned, &s),
               0);
  c.node = a;
  cr_assert_eq(pthread_create(&t, NULL, blocking_on_d, &c), 0);
  run_for(loop, 200); /* Both requests are at d, held. */
  cr_assert_eq(atomic_load(&s.done), 0);
  cr_assert_eq(atomic_load(&c.done), 0);
  cr_assert_eq(weft_node_leave(d), 0); /* a sees it down at once. */
  run_until(loop, &s.done);
  run_until(loop, &c.done);
  pthread_join(t, NULL);
  cr_assert_eq(s.status, WEFT_ENOTCONNECTED, "%s", weft_err_name(s.status));
  cr_assert_eq(c.status, WEFT_ENOTCONNECTED, "%s", weft_err_name(c.status));
  cr_assert_eq(weft_node_leave(a), 0);
  free_held();
  free_channel(hin, hout);
  run_and_free(loop);
}

/* The wire, as a client that knows only docs/node.md: a request [entry,
 * args] on the export WEFT_NODE_SPAWN_EXPORT answers a str; a malformed
 * one EDECODE (counted); a post there starts nothing. */
typedef struct {
  atomic_int done;
  int status;
  char str[WEFT_NODE_NAME_MAX + 1];
} raw_t;

static void on_raw(void* ctx, int status, weft_msg_t* reply) {
  raw_t* r = ctx;
  const char* s = NULL;
  size_t len = 0;
  r->status = status;
  if (reply != NULL && weft_msg_read(reply, "s", &s, &len) == 0)
    snprintf(r->str, sizeof(r->str), "%.*s", (int)len, s);
  atomic_store(&r->done, 1);
}

static int raw_call(weft_loop_t* loop, weft_port_t* p, const char* bytes,
                    size_t len, raw_t* r) {
  memset(r, 0, sizeof(*r));
  cr_assert_eq(weft_port_request(p, bytes, len, 5000, on_raw, r, NULL), 0);
  run_until(loop, &r->done);
  return r->status;
}

Test(node_spawn, the_wire) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t* svc = NULL;
  weft_node_stats_t st;
  answer_t ans;
  raw_t r;
  size_t n;
  register_adder(b);
  settle(a, b);
  cr_assert_eq(weft_node_port(a, "b", WEFT_NODE_SPAWN_EXPORT, &svc), 0);
  /* ["adder", 40] */
  cr_assert_eq(raw_call(loop, svc, "\x92\xa5" "adder\x28", 8, &r), 0, "%s",
               weft_err_name(r.status));
  call_int(loop, a, "b", r.str, 2, &ans);
  cr_assert_eq(ans.value, 42);
  cr_assert_eq(raw_call(loop, svc, "\x01", 1, &r), WEFT_EDECODE,
               "not [entry, args]");
  cr_assert_eq(weft_node_stats(b, &st), 0);
  cr_assert_eq(st.dropped_decode, 1);
  /* ["ad der", nil]: an entry name that is no name. */
  cr_assert_eq(raw_call(loop, svc, "\x92\xa6" "ad der\xc0", 9, &r),
               WEFT_EDECODE);
  /* ["nope", nil] */
  cr_assert_eq(raw_call(loop, svc, "\x92\xa4nope\xc0", 7, &r), WEFT_ENOENT);
  /* A post: nobody to answer, nothing starts (the next spawn is #2). */
  cr_assert_eq(weft_port_post(svc, "\x92\xa5" "adder\x01", 8), 0);
  cr_assert_eq(raw_call(loop, svc, "\x92\xa5" "adder\x01", 8, &r), 0);
  n = strlen(r.str);
  cr_assert(n > 2 && strcmp(r.str + n - 2, "-2") == 0, "%s", r.str);
  weft_port_free(svc);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

/* The workers a node started for others end when it leaves: nothing of
 * them keeps its loop alive, and their threads go. */
Test(node_spawn, leaving_terminates_the_spawned_workers) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  spawned_t s;
  answer_t ans;
  int i;
  register_adder(b);
  settle(a, b);
  run_until(loop, &ea.up);
  for (i = 0; i < 3; i++)
    cr_assert_eq(spawn_async(loop, a, "b", "adder", i, 5000, &s), 0);
  call_int(loop, a, "b", s.name, 0, &ans); /* The last one runs. */
  cr_assert_eq(ans.value, 2);
  /* A worker's thread names itself once it runs: the first two may not
   * have yet when the third answers. */
  for (i = 0; i < 500 && count_threads_named("spawn-adder") < 3; i++)
    sleep_ms(10);
  cr_assert_eq(count_threads_named("spawn-adder"), 3);
  cr_assert_eq(weft_node_leave(b), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop); /* Returns: the workers hold it no more. */
  for (i = 0; i < 500 && count_threads_named("spawn-adder") > 0; i++)
    sleep_ms(10);
  cr_assert_eq(count_threads_named("spawn-adder"), 0);
}

/* Across processes: node_app (test/node_app.c) registers "adder"; the
 * worker it starts runs there (its pid); killed, it is seen down and a
 * spawn there is refused; restarted, it spawns again. */
static void on_k_pid(void* ctx, int status, weft_msg_t* reply) {
  int64_t* out = ctx;
  int64_t k = 0;
  int pid = 0;
  cr_assert_eq(status, 0, "%s", weft_err_name(status));
  cr_assert_eq(weft_msg_read(reply, "Ii", &k, &pid), 0);
  out[0] = k;
  out[1] = pid;
  out[2] = 1;
}

Test(node_spawn, in_another_process) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_t* a = join_watching(loop, "a", &ev);
  weft_port_t* p = NULL;
  spawned_t s;
  int64_t kp[3] = {0};
  pid_t b;
  int status;
  b = start_node_app("b");
  run_until_count(loop, &ev.up, 1);
  cr_assert_eq(spawn_async(loop, a, "b", "adder", 9, 10000, &s), 0, "%s",
               weft_err_name(s.status));
  cr_assert_eq(weft_node_port(a, "b", s.name, &p), 0);
  cr_assert_eq(weft_port_request(p, "\xc0", 1, 10000, on_k_pid, kp, NULL), 0);
  while (kp[2] == 0)
    run_for(loop, 5);
  cr_assert_eq(kp[0], 9);
  cr_assert_eq(kp[1], b, "the worker runs in node_app");
  weft_port_free(p);

  cr_assert_eq(kill(b, SIGKILL), 0);
  cr_assert_eq(waitpid(b, &status, 0), b);
  run_until_count(loop, &ev.down, 1);
  cr_assert_eq(weft_node_spawn_worker_on_async(a, "b", "adder", NULL, 0, 1000,
                                               on_spawned, &s),
               WEFT_ENOTCONNECTED);

  b = start_node_app("b");
  run_until_count(loop, &ev.up, 2);
  cr_assert_eq(spawn_async(loop, a, "b", "adder", 1, 10000, &s), 0, "%s",
               weft_err_name(s.status));
  cr_assert_eq(kill(b, SIGTERM), 0);
  cr_assert_eq(waitpid(b, &status, 0), b);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "node_app left cleanly with a spawned worker running");
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop);
}
