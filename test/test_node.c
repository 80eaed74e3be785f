/* test_node.c - Criterion suite for nodes over NATS (weft/node.h): join and
 * events, posts in order between two nodes, requests with replies, replier
 * errors and "no responders", blocking calls from a thread with no loop,
 * untrusted payloads from the network, what cannot leave the process, bad
 * input, and leaving with requests in flight. Each test starts its own
 * nats-server on a free loopback port (test/nats_server.h). */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h"
#include "nats.h" /* Raw publishes, as a foreign client would make them. */
#include "nats_server.h"
#include "support.h"

static nats_server_t server;

static void start_server(void) {
  cr_assert_eq(nats_server_start(&server, NULL), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
}

TestSuite(node, .init = start_server, .fini = stop_server, .timeout = 60);

/* --- helpers ------------------------------------------------------------- */

typedef struct {
  atomic_int connected, closed, errors, up, down;
  int last_error;
  char last_up[72], last_down[72];
} events_t;

static void on_event(weft_node_t* node, const weft_node_event_t* ev,
                     void* ctx) {
  events_t* e = ctx;
  (void)node;
  if (ev->kind == WEFT_NODE_CONNECTED)
    e->connected++;
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

static weft_node_t* join(weft_loop_t* loop, const char* name, events_t* ev) {
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

/* Run `loop` until `*flag` is set (or the suite's timeout). */
typedef struct {
  weft_loop_t* loop;
  atomic_int* flag;
  uv_timer_t timer;
} until_t;

static void until_tick(uv_timer_t* t) {
  until_t* u = t->data;
  if (atomic_load(u->flag))
    weft_loop_stop(u->loop);
}

static void run_until(weft_loop_t* loop, atomic_int* flag) {
  until_t u = {loop, flag, {0}};
  uv_timer_init(weft_loop_uv(loop), &u.timer);
  u.timer.data = &u;
  uv_timer_start(&u.timer, until_tick, 1, 1);
  while (!atomic_load(flag))
    weft_loop_run(loop);
  uv_close((uv_handle_t*)&u.timer, NULL);
  uv_run(weft_loop_uv(loop), UV_RUN_NOWAIT);
}

/* Run `loop` for `ms`. */
static void set_flag(uv_timer_t* t) {
  atomic_store((atomic_int*)t->data, 1);
}

static void run_for(weft_loop_t* loop, uint64_t ms) {
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
static void settle(weft_node_t* a, weft_node_t* b) {
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

static void seq_message(weft_port_t* p, weft_msg_t* m) {
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
static void plus_one(weft_port_t* p, weft_msg_t* m) {
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

static void on_answer(void* ctx, int status, weft_msg_t* reply) {
  answer_t* a = ctx;
  a->status = status;
  a->value = reply != NULL ? msg_int(reply) : INT64_MIN;
  atomic_store(&a->done, 1);
}

static void request_int(weft_port_t* p, int64_t v, int64_t timeout_ms,
                        answer_t* a) {
  packed_t b = packed_int(v);
  atomic_store(&a->done, 0);
  cr_assert_eq(
      weft_port_request(p, b.data, b.len, timeout_ms, on_answer, a, NULL), 0);
}

/* A served name on node `b`: its port's peer runs `handler`. */
static void serve(weft_loop_t* loop, weft_node_t* node, const char* name,
                  weft_port_message_cb handler, void* data,
                  weft_port_t** in, weft_port_t** out) {
  new_channel(loop, in, out);
  cr_assert_eq(weft_port_set_data(*out, data), 0);
  cr_assert_eq(weft_port_on_message(*out, handler), 0);
  cr_assert_eq(weft_port_unref(*out), 0);
  cr_assert_eq(weft_node_export(node, name, *in), 0);
}

/* --- tests ---------------------------------------------------------------- */

Test(node, join_connects_and_leaves) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_t* node = join(loop, "a", &ev);
  cr_assert_str_eq(weft_node_name(node), "a");
  run_until(loop, &ev.connected);
  cr_assert_eq(atomic_load(&ev.connected), 1, "one CONNECTED event");
  cr_assert(weft_node_connected(node));
  cr_assert_eq(weft_node_leave(node), 0);
  run_and_free(loop); /* Left: nothing keeps the loop alive. */
}

Test(node, posts_arrive_in_order) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out, *remote = NULL;
  weft_node_stats_t st;
  seq_t s = {0};
  int i;
  s.want = 2000;
  serve(loop, b, "seq", seq_message, &s, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "seq", &remote), 0);
  settle(a, b);
  for (i = 0; i < s.want; i++)
    cr_assert_eq(port_post_int(remote, i), 0);
  run_until(loop, &s.done);
  cr_assert_eq(atomic_load(&s.count), s.want);
  cr_assert_eq(s.out_of_order, 0, "in the order posted");
  cr_assert_eq(weft_node_stats(b, &st), 0);
  cr_assert_eq(st.received, (uint64_t)s.want);
  cr_assert_eq(weft_node_stats(a, &st), 0);
  cr_assert_eq(st.published, (uint64_t)s.want);
  cr_assert_eq(weft_port_free(remote), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

Test(node, request_reply_and_errors) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out, *remote, *nobody;
  answer_t ans;
  serve(loop, b, "plus", plus_one, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "plus", &remote), 0);
  cr_assert_eq(weft_node_port(a, "b", "nobody", &nobody), 0);
  settle(a, b);

  request_int(remote, 41, 5000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, 0, "%s", weft_err_name(ans.status));
  cr_assert_eq(ans.value, 42);

  /* The replier's error comes back by name as the same code. */
  request_int(remote, WEFT_EQUEUEFULL, 5000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, WEFT_EQUEUEFULL, "%s", weft_err_name(ans.status));

  /* Nobody serves that name: NATS says so at once (no timeout). */
  request_int(nobody, 1, 30000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, WEFT_ENORESPONDERS, "%s",
               weft_err_name(ans.status));

  /* After unexport the name has no responder either. */
  cr_assert_eq(weft_node_unexport(b, "plus"), 0);
  cr_assert_eq(weft_node_unexport(b, "plus"), WEFT_ENOENT);
  settle(b, a);
  request_int(remote, 1, 30000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, WEFT_ENORESPONDERS, "%s",
               weft_err_name(ans.status));

  weft_port_free(remote);
  weft_port_free(nobody);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* A thread with no loop calls a remote name and blocks for the reply. */
typedef struct {
  weft_port_t* remote;
  int status;
  int64_t value;
  atomic_int done;
} caller_t;

static void* caller_main(void* arg) {
  caller_t* c = arg;
  packed_t b = packed_int(99);
  weft_msg_t* reply = NULL;
  c->status = weft_port_call(c->remote, b.data, b.len, 10000, &reply);
  if (reply != NULL) {
    c->value = msg_int(reply);
    weft_msg_free(reply);
  }
  atomic_store(&c->done, 1);
  return NULL;
}

Test(node, blocking_call_from_a_thread_without_loop) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out;
  caller_t c = {0};
  pthread_t t;
  serve(loop, b, "plus", plus_one, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "plus", &c.remote), 0);
  settle(a, b);
  cr_assert_eq(pthread_create(&t, NULL, caller_main, &c), 0);
  run_until(loop, &c.done); /* Node b's replier runs on this loop. */
  pthread_join(t, NULL);
  cr_assert_eq(c.status, 0, "%s", weft_err_name(c.status));
  cr_assert_eq(c.value, 100);
  weft_port_free(c.remote);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* Foreign bytes on an export's subject: dropped and counted, and a request
 * among them is answered with the error's name. */
typedef struct {
  atomic_int done;
  char error[32];
  int status;
} raw_reply_t;

static void raw_reply(void* ctx, const weft__nats_msg_t* m) {
  raw_reply_t* r = ctx;
  snprintf(r->error, sizeof(r->error), "%s", m->error ? m->error : "");
  r->status = m->status;
  atomic_store(&r->done, 1);
}

Test(node, malformed_payloads_are_dropped_and_counted) {
  weft_loop_t* loop = new_loop();
  events_t eb = {0};
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out;
  weft__nats_opts_t o = {0};
  weft__nats_t* raw = NULL;
  weft__nats_sub_t* sub = NULL;
  weft_node_stats_t st;
  raw_reply_t rr = {0};
  seq_t s = {0};
  const char* subject = "weft.test.b.p.seq";
  static const unsigned char bad[][4] = {
      {0x92, 0x01, 0, 0}, /* An array of 2 with one element. */
      {0xc1, 0, 0, 0},    /* Never used. */
      {0x01, 0x02, 0, 0}, /* Two values. */
  };
  static const size_t bad_len[] = {2, 1, 2};
  size_t i;
  s.want = 1;
  serve(loop, b, "seq", seq_message, &s, &in, &out);
  settle(b, NULL);
  o.servers = server.url;
  o.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&o, NULL, NULL, &raw), 0);
  cr_assert_eq(weft__nats_subscribe(raw, "raw.reply", NULL, raw_reply, NULL,
                                    &rr, &sub),
               0);
  for (i = 0; i < 3; i++)
    cr_assert_eq(
        weft__nats_publish(raw, subject, NULL, bad[i], bad_len[i], NULL), 0);
  cr_assert_eq(weft__nats_publish(raw, subject, NULL, "", 0, NULL), 0);
  /* A malformed request: answered EDECODE. */
  cr_assert_eq(weft__nats_publish(raw, subject, "raw.reply", bad[0], 2, NULL),
               0);
  /* Then a good one (0): it arrives, after the bad ones. */
  cr_assert_eq(weft__nats_publish(raw, subject, NULL, "\x00", 1, NULL), 0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0);
  run_until(loop, &s.done);
  run_until(loop, &rr.done);
  cr_assert_str_eq(rr.error, "EDECODE");
  cr_assert_eq(weft_node_stats(b, &st), 0);
  cr_assert_eq(st.dropped_decode, 5, "got %llu",
               (unsigned long long)st.dropped_decode);
  cr_assert_eq(st.received, 1);
  cr_assert_eq(atomic_load(&s.count), 1);
  weft__nats_unsubscribe(sub);
  weft__nats_close(raw);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

Test(node, buffers_and_ports_cannot_leave_the_process) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_port_t *remote, *x, *y;
  weft_buffer_t* buf = NULL;
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_node_port(a, "b", "any", &remote), 0);
  cr_assert_eq(weft_buffer_new(&buf, 16), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, buf), 0);
  cr_assert_eq(weft_port_post_msg(remote, &m), WEFT_ENOTLOCAL);
  cr_assert_not_null(m, "the message is still the caller's");
  cr_assert(!weft_buffer_detached(buf), "the buffer was not moved");
  weft_msg_free(m);
  new_channel(loop, &x, &y);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_port(m, x), 0);
  cr_assert_eq(weft_port_post_msg(remote, &m), WEFT_ENOTLOCAL);
  weft_msg_free(m);
  weft_buffer_free(buf);
  free_channel(x, y);
  weft_port_free(remote);
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop);
}

Test(node, bad_input) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0};
  weft_node_opts_t o = {0};
  weft_node_t* node = NULL;
  weft_port_t *in, *out, *p = NULL;
  cr_assert_eq(weft_node_join(loop, NULL, &node), WEFT_EINVAL);
  o.name = "a";
  cr_assert_eq(weft_node_join(loop, &o, &node), WEFT_EINVAL, "no servers");
  o.servers = server.url;
  o.name = "a.b";
  cr_assert_eq(weft_node_join(loop, &o, &node), WEFT_EINVAL, "dot in name");
  o.name = "a*";
  cr_assert_eq(weft_node_join(loop, &o, &node), WEFT_EINVAL, "wildcard");
  o.name = "";
  cr_assert_eq(weft_node_join(loop, &o, &node), WEFT_EINVAL, "empty");
  o.name = "a";
  o.cluster = "x>";
  cr_assert_eq(weft_node_join(loop, &o, &node), WEFT_EINVAL, "cluster");
  cr_assert_null(node);
  node = join(loop, "a", &ea);
  new_channel(loop, &in, &out);
  cr_assert_eq(weft_node_export(node, "x.y", in), WEFT_EINVAL);
  cr_assert_eq(weft_node_export(node, "x", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_node_export(node, "x", in), 0);
  cr_assert_eq(weft_node_export(node, "x", in), WEFT_EEXIST);
  cr_assert_eq(weft_node_unexport(node, "nope"), WEFT_ENOENT);
  cr_assert_eq(weft_node_port(node, "b", "y z", &p), WEFT_EINVAL);
  cr_assert_eq(weft_node_port(node, "b.c", "y", &p), WEFT_EINVAL);
  cr_assert_null(p);
  cr_assert_eq(weft_node_leave(node), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* Leaving settles our requests still waiting with WEFT_ENOTCONNECTED and
 * closes the node's ports. */
static void ignore(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  weft_msg_keep(m); /* Never answered while the test runs. */
  weft_port_set_data(p, m);
}

typedef struct {
  atomic_int closed;
} closed_t;

static void on_closed(weft_port_t* p) {
  closed_t* c = weft_port_get_data(p);
  atomic_store(&c->closed, 1);
}

Test(node, leave_settles_requests_and_closes_ports) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out, *remote;
  weft_msg_t* kept;
  answer_t ans;
  closed_t cl = {0};
  serve(loop, b, "sink", ignore, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "sink", &remote), 0);
  cr_assert_eq(weft_port_set_data(remote, &cl), 0);
  cr_assert_eq(weft_port_on_close(remote, on_closed), 0);
  settle(a, b);
  request_int(remote, 7, 60000, &ans);
  while (weft_port_get_data(out) == NULL)
    uv_run(weft_loop_uv(loop), UV_RUN_ONCE);
  cr_assert_eq(atomic_load(&ans.done), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, WEFT_ENOTCONNECTED, "%s",
               weft_err_name(ans.status));
  run_until(loop, &cl.closed);
  cr_assert_eq(port_post_int(remote, 1), WEFT_ECLOSED);
  weft_port_free(remote);
  kept = weft_port_get_data(out);
  weft_msg_free(kept); /* Its request settles: late for b's sink. */
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* A server that is not there: join still returns at once, and the node
 * reports CLOSED when its attempts ran out. */
Test(node, unreachable_servers_end_in_closed) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_opts_t o = {0};
  weft_node_t* node = NULL;
  char url[64];
  snprintf(url, sizeof(url), "nats://127.0.0.1:%d", nats_free_port());
  o.servers = url;
  o.name = "lonely";
  o.max_reconnect = 2;
  o.reconnect_wait_ms = 20;
  o.on_event = on_event;
  o.ctx = &ev;
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  cr_assert(!weft_node_connected(node));
  run_until(loop, &ev.closed);
  cr_assert_eq(atomic_load(&ev.connected), 0);
  cr_assert_eq(weft_node_leave(node), 0);
  run_and_free(loop);
}

/* --- other processes ------------------------------------------------------ */

/* test/node_app as node `name`, started and connected ("ready"). */
static pid_t start_node_app(const char* name) {
  int fds[2];
  pid_t pid;
  char line[64] = {0};
  size_t n = 0;
  cr_assert_eq(pipe(fds), 0);
  pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(NODE_APP, NODE_APP, server.url, name, "100", (char*)NULL);
    _exit(127);
  }
  close(fds[1]);
  while (n < sizeof(line) - 1 && strstr(line, "ready\n") == NULL) {
    struct pollfd p = {fds[0], POLLIN, 0};
    ssize_t r;
    cr_assert_eq(poll(&p, 1, 20000), 1, "node_app %s is ready", name);
    r = read(fds[0], line + n, sizeof(line) - 1 - n);
    cr_assert(r > 0, "node_app %s exited early", name);
    n += (size_t)r;
  }
  close(fds[0]);
  return pid;
}

static weft_node_t* join_watching(weft_loop_t* loop, const char* name,
                                  events_t* ev) {
  weft_node_opts_t o = {0};
  weft_node_t* node = NULL;
  o.servers = server.url;
  o.name = name;
  o.cluster = "test";
  o.heartbeat_ms = 100;
  o.down_after_ms = 600;
  o.on_event = on_event;
  o.ctx = ev;
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  return node;
}

/* Wait until `*counter` reaches `want`. */
typedef struct {
  weft_loop_t* loop;
  atomic_int* counter;
  int want;
} count_wait_t;

static void count_tick(uv_timer_t* t) {
  count_wait_t* c = t->data;
  if (atomic_load(c->counter) >= c->want)
    weft_loop_stop(c->loop);
}

static void run_until_count(weft_loop_t* loop, atomic_int* counter, int want) {
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

typedef struct {
  atomic_int done;
  int status;
  char name[16];
  int64_t pid;
} who_t;

static void on_who(void* ctx, int status, weft_msg_t* reply) {
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

static void ask_who(weft_loop_t* loop, weft_port_t* p, who_t* w) {
  memset(w, 0, sizeof(*w));
  cr_assert_eq(weft_port_request(p, "\xc0", 1, 10000, on_who, w, NULL), 0);
  run_until(loop, &w->done);
}

/* Another process is a node: it is seen up, serves calls, is seen down
 * when killed (its caller's waiting call settles ENOTCONNECTED at once, not
 * at its timeout), comes back as a new instance, and leaves cleanly. */
Test(node, a_killed_node_is_seen_down_and_rejoins) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_t* a = join_watching(loop, "a", &ev);
  weft_port_t *who, *plus, *hold;
  who_t w;
  answer_t ans, held;
  pid_t b;
  int status;
  cr_assert_eq(weft_node_port(a, "b", "who", &who), 0);
  cr_assert_eq(weft_node_port(a, "b", "plus", &plus), 0);
  cr_assert_eq(weft_node_port(a, "b", "hold", &hold), 0);

  b = start_node_app("b");
  run_until_count(loop, &ev.up, 1);
  cr_assert_str_eq(ev.last_up, "b");
  cr_assert(weft_node_is_up(a, "b"));
  ask_who(loop, who, &w);
  cr_assert_eq(w.status, 0, "%s", weft_err_name(w.status));
  cr_assert_str_eq(w.name, "b");
  cr_assert_eq(w.pid, b, "the reply came from the child");
  request_int(plus, 41, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.value, 42);

  request_int(hold, 1, 60000, &held); /* b never answers it. */
  cr_assert_eq(weft_node_flush(a, 5000), 0);
  cr_assert_eq(kill(b, SIGKILL), 0);
  cr_assert_eq(waitpid(b, &status, 0), b);
  run_until_count(loop, &ev.down, 1);
  cr_assert_str_eq(ev.last_down, "b");
  cr_assert(!weft_node_is_up(a, "b"));
  run_until(loop, &held.done);
  cr_assert_eq(held.status, WEFT_ENOTCONNECTED, "%s",
               weft_err_name(held.status));

  /* Back, as a new process: up again, and served by the new one. */
  b = start_node_app("b");
  run_until_count(loop, &ev.up, 2);
  ask_who(loop, who, &w);
  cr_assert_eq(w.status, 0, "%s", weft_err_name(w.status));
  cr_assert_eq(w.pid, b);

  /* A clean leave is seen as down too. */
  cr_assert_eq(kill(b, SIGTERM), 0);
  cr_assert_eq(waitpid(b, &status, 0), b);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "node_app left cleanly");
  run_until_count(loop, &ev.down, 2);

  weft_port_free(who);
  weft_port_free(plus);
  weft_port_free(hold);
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop);
}

/* --- security: TLS, credentials, per-node permissions ---------------------- */

/* A CA, a server certificate for 127.0.0.1 signed by it, and a nats-server
 * that requires TLS and a user per node, each allowed to publish only on
 * the cluster's exports and its own presence, and to subscribe only to its
 * own subjects and the presence of others (replies go through
 * allow_responses). */
static char tls_dir[64];
static char ca_file[128];

static void sh(const char* fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void start_secure_server(void) {
  char conf[128];
  FILE* f;
  const char* extra[3];
  snprintf(tls_dir, sizeof(tls_dir), "/tmp/weft-tls-XXXXXX");
  cr_assert_not_null(mkdtemp(tls_dir));
  sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
     "ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem "
     "-days 1 -subj /CN=weft-test-ca 2>/dev/null",
     tls_dir);
  sh("cd %s && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
     "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
     "-keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && "
     "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
     "-CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null",
     tls_dir);
  snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", tls_dir);
  snprintf(conf, sizeof(conf), "%s/nats.conf", tls_dir);
  f = fopen(conf, "w");
  cr_assert_not_null(f);
  fprintf(f,
          "tls { cert_file: \"%s/server.pem\", key_file: \"%s/server.key\" }\n"
          "authorization { users = [\n",
          tls_dir, tls_dir);
  for (const char* u = "abc"; *u != '\0'; u++)
    fprintf(f,
            "  { user: \"%c\", password: \"pw-%c\", permissions: {\n"
            "    publish: { allow: [\"weft.sec.*.p.>\", "
            "\"weft.sec.presence.%c\"] },\n"
            "    subscribe: { allow: [\"weft.sec.%c.>\", "
            "\"weft.sec.presence.*\"] },\n"
            "    allow_responses: true } }\n",
            *u, *u, *u, *u);
  fprintf(f, "] }\n");
  fclose(f);
  extra[0] = "-c";
  extra[1] = conf;
  extra[2] = NULL;
  cr_assert_eq(nats_server_start(&server, extra), 0, "nats-server started");
  /* tls:// from here on. */
  snprintf(server.url, sizeof(server.url), "tls://127.0.0.1:%d", server.port);
}

static void stop_secure_server(void) {
  nats_server_stop(&server);
  sh("rm -rf %s", tls_dir);
}

TestSuite(node_security, .init = start_secure_server,
          .fini = stop_secure_server, .timeout = 60);

static weft_node_opts_t secure_opts(const char* name, const char* password,
                                    events_t* ev) {
  weft_node_opts_t o = {0};
  o.servers = server.url;
  o.name = name;
  o.cluster = "sec";
  o.user = name;
  o.password = password;
  o.tls_ca = ca_file;
  o.heartbeat_ms = 100;
  o.max_reconnect = 2;
  o.reconnect_wait_ms = 20;
  o.on_event = on_event;
  o.ctx = ev;
  return o;
}

Test(node_security, nodes_with_credentials_call_each_other_over_tls) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_opts_t oa = secure_opts("a", "pw-a", &ea);
  weft_node_opts_t ob = secure_opts("b", "pw-b", &eb);
  weft_node_t *a = NULL, *b = NULL;
  weft_port_t *in, *out, *remote;
  answer_t ans;
  cr_assert_eq(weft_node_join(loop, &oa, &a), 0);
  cr_assert_eq(weft_node_join(loop, &ob, &b), 0);
  run_until_count(loop, &ea.up, 1); /* a sees b: heartbeats pass. */
  serve(loop, b, "plus", plus_one, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "plus", &remote), 0);
  settle(a, b);
  request_int(remote, 1, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, 0, "%s", weft_err_name(ans.status));
  cr_assert_eq(ans.value, 2);
  cr_assert_eq(atomic_load(&ea.errors), 0, "no permission was refused");
  cr_assert_eq(atomic_load(&eb.errors), 0, "no permission was refused");
  weft_port_free(remote);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* Without the cluster's credentials, or without TLS, a node never gets in. */
static void refused(const char* user, const char* password, bool tls) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_opts_t o = secure_opts("a", password, &ev);
  weft_node_t* node = NULL;
  weft_port_t* p = NULL;
  char plain[64];
  o.user = user;
  if (!tls) {
    snprintf(plain, sizeof(plain), "nats://127.0.0.1:%d", server.port);
    o.servers = plain;
    o.tls_ca = NULL;
  }
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  run_until(loop, &ev.closed);
  cr_assert_eq(atomic_load(&ev.connected), 0, "never connected");
  if (tls) {
    cr_assert_eq(atomic_load(&ev.errors), 1, "the refusal was reported");
    cr_assert_eq(ev.last_error, UV_EACCES, "%s", weft_err_name(ev.last_error));
  }
  cr_assert(!weft_node_connected(node));
  cr_assert_eq(weft_node_port(node, "b", "x", &p), WEFT_ENOTCONNECTED);
  cr_assert_eq(weft_node_leave(node), 0);
  run_and_free(loop);
}

Test(node_security, no_credentials_is_refused) {
  refused(NULL, NULL, true);
}

Test(node_security, a_wrong_password_is_refused) {
  refused("a", "pw-b", true);
}

Test(node_security, no_tls_is_refused) {
  refused("a", "pw-a", false);
}

/* Node a's credentials cannot speak for node c (its heartbeat), nor listen
 * to node b's replies: the server refuses both, the client hears of it,
 * and node b never sees a node "c" come up. */
typedef struct {
  atomic_int errors;
  int code;
} raw_events_t;

static void raw_event(void* ctx, int event, int code) {
  raw_events_t* r = ctx;
  if (event == WEFT__NATS_ERROR) {
    r->code = code;
    atomic_fetch_add(&r->errors, 1);
  }
}

static void count_msg(void* ctx, const weft__nats_msg_t* m) {
  (void)m;
  atomic_fetch_add((atomic_int*)ctx, 1);
}

Test(node_security, a_node_cannot_use_another_nodes_subjects) {
  weft_loop_t* loop = new_loop();
  events_t eb = {0};
  weft_node_opts_t ob = secure_opts("b", "pw-b", &eb);
  weft_node_t* b = NULL;
  weft__nats_opts_t o = {0};
  weft__nats_t* raw = NULL;
  weft__nats_sub_t* sub = NULL;
  raw_events_t re = {0};
  atomic_int got = 0;
  /* A heartbeat as node.c writes one: [instance, leaving]. */
  static const unsigned char fake_beat[11] = {0x92, 0xcf, 0, 0, 0, 0,
                                              0,    0,    0, 7, 0};
  cr_assert_eq(weft_node_join(loop, &ob, &b), 0);
  run_until(loop, &eb.connected);
  o.servers = server.url;
  o.user = "a";
  o.password = "pw-a";
  o.tls_ca = ca_file;
  o.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&o, raw_event, &re, &raw), 0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0, "a's credentials connect");
  /* Speak for c: refused. */
  cr_assert_eq(weft__nats_publish(raw, "weft.sec.presence.c", NULL, fake_beat,
                                  sizeof(fake_beat), NULL),
               0, "buffered; the server refuses it");
  /* Listen to b's replies: refused. */
  cr_assert_eq(weft__nats_subscribe(raw, "weft.sec.b.r.*", NULL, count_msg,
                                    NULL, &got, &sub),
               0);
  weft__nats_flush(raw, 5000);
  while (atomic_load(&re.errors) < 2)
    uv_sleep(10);
  cr_assert_eq(re.code, UV_EACCES, "%s", weft_err_name(re.code));
  /* b never saw "c": run through several heartbeat periods. */
  cr_assert_eq(weft_node_flush(b, 5000), 0);
  run_for(loop, 500);
  cr_assert(!weft_node_is_up(b, "c"), "the forged heartbeat did not pass");
  cr_assert_eq(atomic_load(&got), 0);
  weft__nats_unsubscribe(sub);
  weft__nats_close(raw);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

/* --- a client in another language ----------------------------------------- */

/* Node.js with the `nats` npm package calls node b's exports using only
 * the wire of docs/node.md (test/interop/weft_client.mjs checks the
 * replies, the error header, EDECODE and "no responders"); b receives its
 * 100 posts in order. */
typedef struct {
  pid_t pid;
  int status;
  atomic_int exited;
  weft_loop_t* loop;
} child_wait_t;

static void child_tick(uv_timer_t* t) {
  child_wait_t* c = t->data;
  if (waitpid(c->pid, &c->status, WNOHANG) == c->pid) {
    atomic_store(&c->exited, 1);
    uv_timer_stop(t);
  }
}

Test(node, a_nodejs_client_calls_node_exports) {
  weft_loop_t* loop = new_loop();
  events_t eb = {0};
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *pin, *pout, *sin, *sout;
  seq_t s = {0};
  child_wait_t c = {0};
  uv_timer_t t;
  s.want = 100;
  serve(loop, b, "plus", plus_one, NULL, &pin, &pout);
  serve(loop, b, "seq", seq_message, &s, &sin, &sout);
  settle(b, NULL);
  c.pid = fork();
  cr_assert(c.pid >= 0);
  if (c.pid == 0) {
    execlp("node", "node", INTEROP_DIR "/weft_client.mjs", server.url,
           (char*)NULL);
    _exit(127);
  }
  uv_timer_init(weft_loop_uv(loop), &t);
  t.data = &c;
  uv_timer_start(&t, child_tick, 10, 10);
  run_until(loop, &c.exited);
  uv_close((uv_handle_t*)&t, NULL);
  cr_assert(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0,
            "weft_client.mjs failed (status %d; is `npm ci` done in "
            "test/interop?)",
            c.status);
  run_until(loop, &s.done);
  cr_assert_eq(s.out_of_order, 0, "the posts came in order");
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(pin, pout);
  free_channel(sin, sout);
  run_and_free(loop);
}
