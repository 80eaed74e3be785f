/* node_support.h - what the node suites (test_node*.c, test_pool_node.c,
 * test_pool_durable.c) share: each suite's nats-server (`server`), node
 * events, running a loop until something happened, the exports the tests
 * serve, test/node_app as another process, a remote spawn's outcome and a
 * node serving a pool. One suite per binary: Criterion 2.4.1 leaks in its
 * runner (48 bytes, under ASan) when one binary has several suites with
 * .init/.fini. */
#ifndef WEFT_TEST_NODE_SUPPORT_H
#define WEFT_TEST_NODE_SUPPORT_H

#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h"
#include "nats.h" /* Raw publishes, as a foreign client would make them. */
#include "node_internal.h"
#include "nats_server.h"
#include "support.h"

static nats_server_t server;

/* --- helpers ------------------------------------------------------------- */

typedef struct {
  atomic_int connected, closed, errors, up, down, disconnected, reconnected;
  int last_error;
  char last_up[72], last_down[72];
} events_t;

static inline void on_event(weft_node_t* node, const weft_node_event_t* ev,
                     void* ctx) {
  events_t* e = ctx;
  (void)node;
  if (ev->kind == WEFT_NODE_CONNECTED)
    e->connected++;
  else if (ev->kind == WEFT_NODE_DISCONNECTED)
    e->disconnected++;
  else if (ev->kind == WEFT_NODE_RECONNECTED)
    e->reconnected++;
  else if (ev->kind == WEFT_NODE_CLOSED)
    e->closed++;
  else if (ev->kind == WEFT_NODE_ERROR) {
    e->last_error = ev->code;
    e->errors++;
  } else if (ev->kind == WEFT_NODE_UP) {
    cr_assert_not_null(ev->node);
    snprintf(e->last_up, sizeof(e->last_up), "%s", ev->node);
    e->up++;
  } else if (ev->kind == WEFT_NODE_DOWN) {
    cr_assert_not_null(ev->node);
    snprintf(e->last_down, sizeof(e->last_down), "%s", ev->node);
    e->down++;
  }
}

static inline weft_node_t* join(weft_loop_t* loop, const char* name, events_t* ev) {
  weft_node_opts_t o = {0};
  weft_node_t* node = NULL;
  o.servers = server.url;
  o.name = name;
  o.cluster = "test";
  o.on_event = on_event;
  o.ctx = ev;
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  cr_assert_not_null(node);
  return node;
}

/* Wait until `*counter` reaches `want`. */
typedef struct {
  weft_loop_t* loop;
  atomic_int* counter;
  int want;
} count_wait_t;

static inline void count_tick(uv_timer_t* t) {
  count_wait_t* c = t->data;
  if (atomic_load(c->counter) >= c->want)
    weft_loop_stop(c->loop);
}

static inline void run_until_count(weft_loop_t* loop, atomic_int* counter, int want) {
  count_wait_t c = {loop, counter, want};
  uv_timer_t timer;
  uv_timer_init(weft_loop_uv(loop), &timer);
  timer.data = &c;
  uv_timer_start(&timer, count_tick, 1, 1);
  while (atomic_load(counter) < want)
    weft_loop_run(loop);
  uv_close((uv_handle_t*)&timer, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

/* Run `loop` until `*flag` is set (or the suite's timeout). */
static inline void run_until(weft_loop_t* loop, atomic_int* flag) {
  run_until_count(loop, flag, 1);
}

/* Run `loop` for `ms`. */
static inline void set_flag(uv_timer_t* t) {
  atomic_store((atomic_int*)t->data, 1);
}

static inline void run_for(weft_loop_t* loop, uint64_t ms) {
  atomic_int later = 0;
  uv_timer_t t;
  uv_timer_init(weft_loop_uv(loop), &t);
  t.data = &later;
  uv_timer_start(&t, set_flag, ms, 0);
  run_until(loop, &later);
  uv_close((uv_handle_t*)&t, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

/* Subscriptions reach the server before anything is published to them:
 * flush both nodes (the server answers a flush after it processed what
 * came before it). */
static inline void settle(weft_node_t* a, weft_node_t* b) {
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  if (b != NULL)
    cr_assert_eq(weft_node_flush(b, 5000), 0);
}

/* --- receivers ------------------------------------------------------------ */

typedef struct {
  atomic_int count;
  int64_t next; /* The value expected next. */
  int out_of_order;
  atomic_int done;
  int want;
} seq_t;

static inline void seq_message(weft_port_t* p, weft_msg_t* m) {
  seq_t* s = weft_port_get_data(p);
  int64_t v = msg_int(m);
  if (v != s->next)
    s->out_of_order++;
  s->next = v + 1;
  if (atomic_fetch_add(&s->count, 1) + 1 == s->want)
    atomic_store(&s->done, 1);
}

/* Answers an integer with itself plus one; a negative one with that error
 * code (a replier's error travels by name). */
static inline void plus_one(weft_port_t* p, weft_msg_t* m) {
  int64_t v = msg_int(m);
  (void)p;
  cr_assert(weft_msg_is_request(m));
  if (v < 0) {
    weft_reply_t* r = NULL;
    cr_assert_eq(weft_msg_take_reply(m, &r), 0);
    cr_assert_eq(weft_reply_error(r, (int)v), 0);
  } else {
    packed_t b = packed_int(v + 1);
    cr_assert_eq(weft_msg_reply(m, b.data, b.len), 0);
  }
}

typedef struct {
  atomic_int done;
  int status;
  int64_t value;
} answer_t;

static inline void on_answer(void* ctx, int status, weft_msg_t* reply) {
  answer_t* a = ctx;
  a->status = status;
  a->value = reply != NULL ? msg_int(reply) : INT64_MIN;
  atomic_store(&a->done, 1);
}

static inline void request_int(weft_port_t* p, int64_t v, int64_t timeout_ms,
                        answer_t* a) {
  packed_t b = packed_int(v);
  atomic_store(&a->done, 0);
  cr_assert_eq(
      weft_port_request(p, b.data, b.len, timeout_ms, on_answer, a, NULL), 0);
}

/* A served name on node `b`: its port's peer runs `handler`. */
static inline void serve(weft_loop_t* loop, weft_node_t* node, const char* name,
                  weft_port_message_cb handler, void* data,
                  weft_port_t** in, weft_port_t** out) {
  new_channel(loop, in, out);
  cr_assert_eq(weft_port_set_data(*out, data), 0);
  cr_assert_eq(weft_port_on_message(*out, handler), 0);
  cr_assert_eq(weft_port_unref(*out), 0);
  cr_assert_eq(weft_node_export(node, name, *in), 0);
}

/* --- other processes ------------------------------------------------------ */

/* Start `argv[0]` with `argv` (NULL-terminated) and wait until it says
 * "ready" on its stdout (a node app: connected); killed with the test. */
static inline pid_t start_ready_app(const char* const* argv) {
  int fds[2];
  pid_t pid;
  char line[64] = {0};
  size_t n = 0;
  cr_assert_eq(pipe(fds), 0);
  pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* Not left behind by a failed test. */
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], (char* const*)argv);
    _exit(127);
  }
  close(fds[1]);
  while (n < sizeof(line) - 1 && strstr(line, "ready\n") == NULL) {
    struct pollfd p = {fds[0], POLLIN, 0};
    ssize_t r;
    cr_assert_eq(poll(&p, 1, 20000), 1, "%s %s is ready", argv[0], argv[2]);
    r = read(fds[0], line + n, sizeof(line) - 1 - n);
    cr_assert(r > 0, "%s %s exited early", argv[0], argv[2]);
    n += (size_t)r;
  }
  close(fds[0]);
  return pid;
}

/* test/node_app as node `name` on `servers`, started and connected
 * ("ready"). */
static inline pid_t start_node_app_at(const char* name, const char* servers) {
  const char* argv[] = {NODE_APP, servers, name, "100", NULL};
  return start_ready_app(argv);
}

static inline pid_t start_node_app(const char* name) {
  return start_node_app_at(name, server.url);
}

static inline weft_node_t* join_watching_at(weft_loop_t* loop, const char* name,
                                     const char* servers, events_t* ev) {
  weft_node_opts_t o = {0};
  weft_node_t* node = NULL;
  o.servers = servers;
  o.reconnect_wait_ms = 50;
  o.name = name;
  o.cluster = "test";
  o.heartbeat_ms = 100;
  o.down_after_ms = 600;
  o.on_event = on_event;
  o.ctx = ev;
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  return node;
}

static inline weft_node_t* join_watching(weft_loop_t* loop, const char* name,
                                  events_t* ev) {
  return join_watching_at(loop, name, server.url, ev);
}

typedef struct {
  atomic_int done;
  int status;
  char name[16];
  int64_t pid;
} who_t;

static inline void on_who(void* ctx, int status, weft_msg_t* reply) {
  who_t* w = ctx;
  const char* s = NULL;
  size_t len = 0;
  int pid = 0;
  w->status = status;
  if (reply != NULL && weft_msg_read(reply, "si", &s, &len, &pid) == 0) {
    snprintf(w->name, sizeof(w->name), "%.*s", (int)len, s);
    w->pid = pid;
  }
  atomic_store(&w->done, 1);
}

static inline void ask_who(weft_loop_t* loop, weft_port_t* p, who_t* w) {
  memset(w, 0, sizeof(*w));
  cr_assert_eq(weft_port_request(p, "\xc0", 1, 10000, on_who, w, NULL), 0);
  run_until(loop, &w->done);
}

/* Another process is a node: it is seen up, serves calls, is seen down
 * when killed (its caller's waiting call settles ENOTCONNECTED at once, not
 * at its timeout), comes back as a new instance, and leaves cleanly. */

/* --- remote spawn (test_node_spawn.c, test_node_cluster.c) -------------- */

/* A remote spawn's outcome, filled in by record_spawned(). */
typedef struct {
  atomic_int done;
  int status;
  char name[WEFT_NODE_NAME_MAX + 1];
} spawned_t;

/* A weft_node_spawn_worker_on_async() callback: the outcome into `ctx`
 * (a spawned_t), `done` last. */
static inline void record_spawned(weft_node_t* node, int status,
                                  const char* name, void* ctx) {
  spawned_t* s = ctx;
  (void)node;
  s->status = status;
  snprintf(s->name, sizeof(s->name), "%s", name != NULL ? name : "");
  atomic_store(&s->done, 1);
}

/* --- a node serving a pool (test_pool_node.c, test_pool_durable.c) ------- */

/* The data a serving node's task functions get: the node's name and
 * counts the tests read. */
typedef struct {
  const char* name;
  atomic_int running, max_running, ran, saw_cancel;
} where_t;

typedef struct {
  weft_node_t* node;
  weft_pool_t* pool;
  weft_pool_server_t* server;
  where_t where;
  events_t ev;
} serving_t;

/* A task function to register, by its name. */
typedef struct {
  const char* name;
  weft_task_fn fn;
} task_entry_t;

/* Node `name` on `loop` serving group "g" as `so` says (NULL: the
 * defaults) with a pool of `threads` workers that runs `tasks` (up to a
 * NULL name), each given &s->where. */
static inline void serve_group_ex(weft_loop_t* loop, serving_t* s,
                                  const char* name, unsigned threads,
                                  const weft_pool_serve_opts_t* so,
                                  const task_entry_t* tasks) {
  weft_pool_opts_t po = {0};
  memset(s, 0, sizeof(*s));
  s->where.name = name;
  po.max_threads = threads;
  cr_assert_eq(weft_pool_new(&s->pool, &po), 0);
  for (; tasks->name != NULL; tasks++)
    cr_assert_eq(
        weft_pool_register(s->pool, tasks->name, tasks->fn, &s->where), 0);
  s->node = join_watching(loop, name, &s->ev);
  cr_assert_eq(weft_pool_serve_ex(s->node, s->pool, "g", so, &s->server), 0);
}

static inline void unserve_group(serving_t* s) {
  cr_assert_eq(weft_pool_unserve(s->server), 0);
  cr_assert_eq(weft_node_leave(s->node), 0);
  cr_assert_eq(weft_pool_close(s->pool), 0);
}

#endif /* WEFT_TEST_NODE_SUPPORT_H */
