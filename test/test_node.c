/* test_node.c - Criterion suite for nodes over NATS (weft/node.h): join and
 * events, posts in order between two nodes, requests with replies, replier
 * errors and "no responders", blocking calls from a thread with no loop,
 * untrusted payloads from the network, what cannot leave the process, bad
 * input, and leaving with requests in flight. Each test starts its own
 * nats-server on a free loopback port (test/nats_server.h). */
#include <criterion/criterion.h>
#include "nats_conn.h" /* A raw connection's nats.c handle (batches). */
#include "node_support.h"

static void start_server(void) {
  cr_assert_eq(nats_server_start(&server, NULL), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
}

TestSuite(node, .init = start_server, .fini = stop_server, .timeout = 60);

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

/* The hook the layers on a node use (node_internal.h): a watcher sees
 * what on_event sees, after it, and LEAVING when its node leaves; one
 * removed stops seeing events. */
typedef struct {
  atomic_int up, leaving, other;
  char last_up[72];
} watch_t;

static void watcher(void* ctx, const weft_node_event_t* ev) {
  watch_t* w = ctx;
  if (ev->kind == WEFT_NODE_UP) {
    snprintf(w->last_up, sizeof(w->last_up), "%s", ev->node);
    w->up++;
  } else if ((int)ev->kind == WEFT__NODE_LEAVING) {
    w->leaving++;
  } else {
    w->other++;
  }
}

Test(node, watchers_see_membership_and_leaving) {
  weft_loop_t* loop = new_loop();
  events_t eva = {0}, evb = {0};
  watch_t w = {0}, gone = {0};
  weft_node_t* a = join(loop, "a", &eva);
  weft_node_t* b;
  cr_assert_eq(weft__node_watch(a, watcher, &w), 0);
  cr_assert_eq(weft__node_watch(a, watcher, &gone), 0);
  weft__node_unwatch(a, watcher, &gone);
  cr_assert_eq(weft__node_watch(NULL, watcher, &w), WEFT_EINVAL);
  cr_assert_str_eq(weft__node_cluster(a), "test");
  cr_assert_eq(weft__node_loop(a), loop);
  b = join(loop, "b", &evb);
  run_until(loop, &w.up);
  cr_assert_str_eq(w.last_up, "b");
  cr_assert_eq(atomic_load(&eva.up), atomic_load(&w.up));
  cr_assert_geq(atomic_load(&w.other), 1, "CONNECTED came too");
  cr_assert_eq(atomic_load(&w.leaving), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(atomic_load(&w.leaving), 1);
  cr_assert_eq(atomic_load(&gone.up) + atomic_load(&gone.leaving) +
                   atomic_load(&gone.other), 0, "a removed watcher saw nothing");
  run_and_free(loop);
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

/* Posts made back to back travel gathered, many in one NATS message
 * (nats.h: Weft-Batch), and still one by one, in order, to the export; a
 * request made after them comes after all of them. A plain subscriber on
 * the export's subject counts the NATS messages: fewer than the posts. */
static void seq_or_count(weft_port_t* p, weft_msg_t* m) {
  seq_t* s = weft_port_get_data(p);
  if (weft_msg_is_request(m)) {
    packed_t b = packed_int(atomic_load(&s->count));
    cr_assert_eq(weft_msg_reply(m, b.data, b.len), 0);
    return;
  }
  seq_message(p, m);
}

/* A plain subscriber's count of NATS messages on a subject, and whether
 * the request (the last message there) came: then every message before it
 * was counted (one subscription delivers in order). */
typedef struct {
  atomic_int msgs, request;
} nats_count_t;

static void count_nats(void* ctx, const weft__nats_msg_t* m) {
  nats_count_t* c = ctx;
  atomic_fetch_add(&c->msgs, 1);
  if (m->reply != NULL && m->reply[0] != '\0')
    atomic_store(&c->request, 1);
}

/* Node a (gathering posts for `gather_us`) posts n integers to b's "seq"
 * back to back, then asks b how many it has: the answer must be n (the
 * request came after every post), in order, each counted once. Returns how
 * many NATS messages carried them (a plain subscriber on the subject). */
static int posts_then_request(int64_t gather_us, int n) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_opts_t o = {0};
  weft_node_t *a = NULL, *b = join(loop, "b", &eb);
  weft_port_t *in, *out, *remote = NULL;
  weft__nats_opts_t ro = {0};
  weft__nats_t* raw = NULL;
  weft__nats_sub_t* sub = NULL;
  nats_count_t nats_msgs = {0, 0};
  weft_node_stats_t st;
  answer_t ans = {0};
  seq_t s = {0};
  int i;
  o.servers = server.url;
  o.name = "a";
  o.cluster = "test";
  o.on_event = on_event;
  o.ctx = &ea;
  o.post_gather_us = gather_us;
  cr_assert_eq(weft_node_join(loop, &o, &a), 0);
  s.want = n;
  serve(loop, b, "seq", seq_or_count, &s, &in, &out);
  ro.servers = server.url;
  ro.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&ro, NULL, NULL, &raw), 0);
  cr_assert_eq(weft__nats_subscribe(raw, "weft.test.b.p.seq", NULL,
                                    count_nats, NULL, &nats_msgs, &sub),
               0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0);
  cr_assert_eq(weft_node_port(a, "b", "seq", &remote), 0);
  settle(a, b);
  for (i = 0; i < n; i++)
    cr_assert_eq(port_post_int(remote, i), 0);
  request_int(remote, -1, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, 0);
  cr_assert_eq(ans.value, n, "the request came after %lld posts of %d",
               (long long)ans.value, n);
  cr_assert_eq(s.out_of_order, 0, "in the order posted");
  cr_assert_eq(atomic_load(&s.count), n);
  /* Counted once the plain subscriber has had the request too. */
  run_until(loop, &nats_msgs.request);
  cr_assert_eq(weft_node_stats(a, &st), 0);
  cr_assert_eq(st.published, (uint64_t)n + 1, "each post counted");
  cr_assert_eq(st.unsent, 0);
  cr_assert_eq(weft_node_stats(b, &st), 0);
  cr_assert_eq(st.received, (uint64_t)n + 1);
  cr_assert_eq(st.dropped_decode, 0);
  weft__nats_unsubscribe(sub);
  weft__nats_close(raw);
  cr_assert_eq(weft_port_free(remote), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
  return atomic_load(&nats_msgs.msgs) - 1; /* The request's. */
}

/* Posts made back to back travel gathered, many in one NATS message
 * (nats.h: Weft-Batch), and still one by one, in order, to the export; a
 * request made after them comes after all of them. A window of 50 ms (not
 * the default 10 us) so that posts gather however slowly this build posts
 * them; with gathering off, each post is its own NATS message. */
Test(node, back_to_back_posts_travel_together_in_order_before_a_request) {
  int n = 20000, msgs = posts_then_request(50000, n);
  cr_assert_lt(msgs, n / 10, "%d posts went in %d NATS messages", n, msgs);
  cr_assert_gt(msgs, 0);
  msgs = posts_then_request(-1, 1000);
  cr_assert_eq(msgs, 1000, "gathering off: %d NATS messages", msgs);
}

/* A Weft-Batch message from the network is foreign bytes too: its posts
 * up to a fault arrive, the fault is counted once, nothing crashes. */
static void publish_batch(weft__nats_t* raw, const char* subject,
                          const char* count, const void* data, size_t len) {
  natsMsg* m = NULL;
  cr_assert_eq(natsMsg_Create(&m, subject, NULL, data, (int)len), NATS_OK);
  cr_assert_eq(natsMsgHeader_Set(m, "Weft-Batch", count), NATS_OK);
  cr_assert_eq(natsConnection_PublishMsg(raw->nc, m), NATS_OK);
  natsMsg_Destroy(m);
}

Test(node, malformed_batches_are_dropped_and_counted) {
  weft_loop_t* loop = new_loop();
  events_t eb = {0};
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out;
  weft__nats_opts_t o = {0};
  weft__nats_t* raw = NULL;
  weft_node_stats_t st;
  seq_t s = {0};
  const char* subject = "weft.test.b.p.seq";
  /* Frames (transport/frame.h) of kind 1, each an integer: 0, 1, 2. */
  static const unsigned char three[] = {0, 0, 0, 1, 1, 0x00, 0, 0, 0, 1,
                                        1, 0x01, 0, 0, 0, 1, 1, 0x02};
  static const unsigned char kind0[] = {0, 0, 0, 1, 0, 0x05};
  s.want = 4;
  serve(loop, b, "seq", seq_message, &s, &in, &out);
  settle(b, NULL);
  o.servers = server.url;
  o.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&o, NULL, NULL, &raw), 0);
  /* Good: 0, 1 (a count of 2 over the first two frames). */
  publish_batch(raw, subject, "2", three, 12);
  /* Counts that do not match the frames: 2 then the fault, then nothing
   * (a count of 0 with a frame). */
  publish_batch(raw, subject, "4", three + 12, 6);
  publish_batch(raw, subject, "0", three, 6);
  /* Not a number; a frame of kind 0; a frame cut short; an empty batch
   * that says it holds one. */
  publish_batch(raw, subject, "x1", three, 6);
  publish_batch(raw, subject, "1", kind0, sizeof(kind0));
  publish_batch(raw, subject, "1", three, 5);
  publish_batch(raw, subject, "1", "", 0);
  /* Then a plain post: 3. */
  cr_assert_eq(weft__nats_publish(raw, subject, NULL, "\x03", 1, NULL), 0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0);
  run_until(loop, &s.done);
  cr_assert_eq(s.out_of_order, 0, "0, 1, 2, 3: what came before each fault");
  cr_assert_eq(weft_node_stats(b, &st), 0);
  cr_assert_eq(st.dropped_decode, 6, "got %llu",
               (unsigned long long)st.dropped_decode);
  cr_assert_eq(st.received, 4);
  weft__nats_close(raw);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* A buffer crosses hosts as a copy of its bytes (a bin), given away by the
 * sender as a local transfer would; ports and shared buffers cannot leave
 * the process (WEFT_ENOTLOCAL, the message still the caller's). */
static void echo_value(weft_port_t* p, weft_msg_t* m) {
  size_t len = 0;
  const char* bytes = weft_msg_data(m, &len);
  (void)p;
  cr_assert_eq(weft_msg_reply(m, bytes, len), 0);
}

typedef struct {
  atomic_int done;
  int status;
  char bytes[64];
  size_t len;
} echo_t;

static void on_echo(void* ctx, int status, weft_msg_t* reply) {
  echo_t* e = ctx;
  const char* s = NULL;
  size_t len = 0;
  e->status = status;
  if (reply != NULL && weft_msg_read(reply, "[yi]", &s, &len, &(int){0}) == 0 &&
      len < sizeof(e->bytes)) {
    memcpy(e->bytes, s, len);
    e->len = len;
  }
  atomic_store(&e->done, 1);
}

/* A node's heartbeat carries how many messages NATS dropped for it (slow
 * consumer); the others report a rise as WEFT_NODE_ERROR with
 * WEFT_ESLOWCONSUMER and its name, so a sender hears of drops too. Node "x"
 * here is raw heartbeats; a's own heartbeat says 0 in the same shape. */
typedef struct {
  atomic_int slow, up, own;
  char slow_node[72];
  unsigned char last[64];
} slow_watch_t;

static void slow_event(weft_node_t* n, const weft_node_event_t* ev,
                       void* ctx) {
  slow_watch_t* w = ctx;
  (void)n;
  if (ev->kind == WEFT_NODE_UP)
    w->up++;
  if (ev->kind == WEFT_NODE_ERROR && ev->code == WEFT_ESLOWCONSUMER) {
    snprintf(w->slow_node, sizeof(w->slow_node), "%s",
             ev->node != NULL ? ev->node : "(null)");
    w->slow++;
  }
}

static void own_beat(void* ctx, const weft__nats_msg_t* m) {
  slow_watch_t* w = ctx;
  if (atomic_load(&w->own) == 0 && m->len <= sizeof(w->last)) {
    memcpy(w->last, m->data, m->len);
    atomic_store(&w->own, (int)m->len);
  }
}

Test(node, a_slow_consumer_elsewhere_is_reported_with_its_name) {
  weft_loop_t* loop = new_loop();
  slow_watch_t w = {0};
  weft_node_opts_t o = {0};
  weft_node_t* a = NULL;
  weft__nats_opts_t ro = {0};
  weft__nats_t* raw = NULL;
  weft__nats_sub_t* sub = NULL;
  weft__wire_beat_t beat = {0x1234, false, 0}, seen;
  unsigned char b[WEFT__WIRE_BEAT_LEN];
  o.servers = server.url;
  o.name = "a";
  o.cluster = "test";
  o.heartbeat_ms = 100;
  o.on_event = slow_event;
  o.ctx = &w;
  cr_assert_eq(weft_node_join(loop, &o, &a), 0);
  ro.servers = server.url;
  ro.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&ro, NULL, NULL, &raw), 0);
  cr_assert_eq(weft__nats_subscribe(raw, "weft.test.presence.a", NULL,
                                    own_beat, NULL, &w, &sub), 0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0);
  settle(a, NULL);
  /* x is up with 0 drops: no error. */
  weft__wire_beat(&beat, b);
  cr_assert_eq(weft__nats_publish(raw, "weft.test.presence.x", NULL, b,
                                  sizeof(b), NULL), 0);
  run_until(loop, &w.up);
  cr_assert_eq(atomic_load(&w.slow), 0);
  /* x dropped 5: reported once, with x's name; the same count again is
   * not a new drop. */
  beat.slow = 5;
  weft__wire_beat(&beat, b);
  cr_assert_eq(weft__nats_publish(raw, "weft.test.presence.x", NULL, b,
                                  sizeof(b), NULL), 0);
  cr_assert_eq(weft__nats_publish(raw, "weft.test.presence.x", NULL, b,
                                  sizeof(b), NULL), 0);
  run_until(loop, &w.slow);
  cr_assert_str_eq(w.slow_node, "x");
  run_for(loop, 300);
  cr_assert_eq(atomic_load(&w.slow), 1, "one report per rise");
  /* a's own heartbeat: the 20-byte shape, 0 drops. */
  run_until_count(loop, &w.own, 1);
  cr_assert_eq(atomic_load(&w.own), WEFT__WIRE_BEAT_LEN);
  cr_assert_eq(weft__wire_read_beat(w.last, WEFT__WIRE_BEAT_LEN, &seen), 0);
  cr_assert_eq(seen.slow, 0);
  cr_assert_not(seen.leaving);
  weft__nats_unsubscribe(sub);
  weft__nats_close(raw);
  cr_assert_eq(weft_node_leave(a), 0);
  run_and_free(loop);
}

/* Backpressure: an export whose port's queue holds max_export_backlog
 * bytes takes no more from NATS; NATS holds the rest up to its pending
 * limit (65,536 messages) and drops what comes after as a slow consumer.
 * Nothing is lost silently: the receiving node counts every drop, the
 * sender hears of them (WEFT_NODE_ERROR, WEFT_ESLOWCONSUMER, "b"), and
 * what arrives is in order. Here the exported port has no handler until
 * the flood is over, so its queue only grows. */
typedef struct {
  atomic_int count;
  int64_t last;
  int not_increasing;
} rising_t;

static void rising_message(weft_port_t* p, weft_msg_t* m) {
  rising_t* r = weft_port_get_data(p);
  int64_t v = msg_int(m);
  if (v <= r->last)
    r->not_increasing++;
  r->last = v;
  atomic_fetch_add(&r->count, 1);
}

Test(node, a_full_export_holds_back_and_its_drops_are_counted_not_silent) {
  enum { N = 100000 };
  weft_loop_t* loop = new_loop();
  slow_watch_t w = {0};
  events_t eb = {0};
  rising_t got = {0, -1, 0};
  weft_node_opts_t o = {0};
  weft_node_t *a = NULL, *b = NULL;
  weft_port_t *in, *out, *p;
  weft_node_stats_t st;
  weft__nats_opts_t ro = {0};
  weft__nats_t* raw = NULL;
  o.servers = server.url;
  o.cluster = "test";
  o.heartbeat_ms = 100;
  /* The posting loop below holds the loop (and both nodes' heartbeats)
   * for a while, longer under ASan: nobody is to be seen down meanwhile
   * (a node seen down and up again starts with its drop count as is). */
  o.down_after_ms = 60000;
  o.name = "a";
  o.on_event = slow_event;
  o.ctx = &w;
  cr_assert_eq(weft_node_join(loop, &o, &a), 0);
  o.name = "b";
  o.on_event = on_event;
  o.ctx = &eb;
  o.max_export_backlog = 64 << 10;
  cr_assert_eq(weft_node_join(loop, &o, &b), 0);
  new_channel(loop, &in, &out);
  cr_assert_eq(weft_port_set_data(out, &got), 0);
  cr_assert_eq(weft_node_export(b, "sink", in), 0);
  cr_assert_eq(weft_node_port(a, "b", "sink", &p), 0);
  settle(a, b);
  /* a knows b (with 0 drops) before the flood: a node first seen with
   * drops already brings them unreported. */
  run_until(loop, &w.up);
  /* One NATS message per post, as a sender in another language (or posts
   * that come apart) sends them: NATS drops messages, so the count is of
   * posts here. (Posts that a weft node sends back to back travel many to
   * a NATS message, which a slow consumer drops whole: docs/node.md.) */
  ro.servers = server.url;
  ro.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&ro, NULL, NULL, &raw), 0);
  for (int64_t i = 0; i < N; i++) {
    packed_t v = packed_int(i);
    cr_assert_eq(weft__nats_publish(raw, "weft.test.b.p.sink", NULL, v.data,
                                    v.len, NULL),
                 0);
  }
  cr_assert_eq(weft__nats_flush(raw, 10000), 0);
  /* b's heartbeat tells a of the drops. */
  run_until(loop, &w.slow);
  cr_assert_str_eq(w.slow_node, "b");
  /* b's own event comes by another path (nats.c's error callback), in no
   * set order with a's report. */
  run_until(loop, &eb.errors);
  cr_assert_geq(atomic_load(&eb.errors), 1, "b heard it too");
  cr_assert_eq(eb.last_error, WEFT_ESLOWCONSUMER);
  {
    /* What waits in the exported port's queue stayed at the bound (one
     * message over it at most: the check comes before each post). */
    void* core = weft__port_hold(in);
    cr_assert_leq(weft__core_peer_backlog(core), (size_t)(64 << 10) + 1024);
    weft__port_unhold(core);
  }
  /* Now take them: every post either arrives (in order) or is counted. */
  cr_assert_eq(weft_port_on_message(out, rising_message), 0);
  for (;;) {
    run_for(loop, 50);
    cr_assert_eq(weft_node_stats(b, &st), 0);
    if ((uint64_t)atomic_load(&got.count) + st.slow_consumer >= N)
      break;
  }
  cr_assert_eq((uint64_t)atomic_load(&got.count) + st.slow_consumer,
               (uint64_t)N, "%d arrived, %llu counted as dropped",
               atomic_load(&got.count),
               (unsigned long long)st.slow_consumer);
  cr_assert_gt(st.slow_consumer, 0);
  cr_assert_eq(got.not_increasing, 0);
  weft__nats_close(raw);
  weft_port_free(p);
  weft_port_free(in);
  weft_port_free(out);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

Test(node, buffers_cross_as_copies_ports_and_shared_do_not) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_t* a = join(loop, "a", &ea);
  weft_node_t* b = join(loop, "b", &eb);
  weft_port_t *in, *out, *remote, *x, *y;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_msg_t* m = NULL;
  void* data = NULL;
  echo_t e = {0};
  serve(loop, b, "echo", echo_value, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "echo", &remote), 0);
  settle(a, b);

  cr_assert_eq(weft_buffer_new(&buf, 5), 0);
  cr_assert_eq(weft_buffer_data(buf, &data, NULL), 0);
  memcpy(data, "hello", 5);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "[Bi]", buf, 7), 0);
  cr_assert_eq(weft_port_request_msg(remote, &m, 10000, on_echo, &e, NULL), 0);
  cr_assert_null(m, "the message went");
  cr_assert(weft_buffer_detached(buf), "the sender gave the buffer away");
  run_until(loop, &e.done);
  cr_assert_eq(e.status, 0, "%s", weft_err_name(e.status));
  cr_assert_eq(e.len, 5);
  cr_assert(memcmp(e.bytes, "hello", 5) == 0, "the bytes came as a bin");
  weft_buffer_free(buf);

  new_channel(loop, &x, &y);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_port(m, x), 0);
  cr_assert_eq(weft_port_post_msg(remote, &m), WEFT_ENOTLOCAL);
  cr_assert_not_null(m, "the message is still the caller's");
  weft_msg_free(m);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_port_post_msg(remote, &m), WEFT_ENOTLOCAL);
  weft_msg_free(m);
  weft_shared_release(sh);
  free_channel(x, y);
  weft_port_free(remote);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
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

/* --- a client in another language ----------------------------------------- */

/* Node.js with the `nats` npm package calls node b's exports, a pool task
 * and an actor using only the wire of docs/node.md
 * (test/interop/weft_client.mjs checks the replies, the error header,
 * EDECODE and "no responders", a task's ack and result, an actor's answer
 * to an ask and EDEADACTOR); b receives its 100 posts and a batch of 3 in
 * order. */
static int square_task(weft_task_ctx_t* ctx, weft_msg_t* arg,
                       weft_msg_t* result) {
  int64_t v = 0;
  (void)ctx;
  if (weft_msg_read(arg, "I", &v) != 0)
    return WEFT_EDECODE;
  return weft_msg_pack(result, "I", v * v);
}

static int doubler(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t v = 0;
  weft_reply_t* r = NULL;
  (void)self;
  (void)state;
  if (weft_actor_signal(m, NULL) != WEFT_SIGNAL_NONE ||
      !weft_msg_is_request(m) || weft_msg_read(m, "I", &v) != 0 ||
      weft_msg_take_reply(m, &r) != 0)
    return 0;
  weft_reply_send_fmt(r, "I", v * 2);
  return 0;
}

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
  weft_pool_opts_t po = {0};
  weft_pool_t* pool = NULL;
  weft_pool_server_t* server_pool = NULL;
  weft_actor_system_opts_t so = {0};
  weft_actor_system_t* sys = NULL;
  weft_actor_opts_t ao = {0};
  weft_actor_id id = 0;
  s.want = 103;
  serve(loop, b, "plus", plus_one, NULL, &pin, &pout);
  serve(loop, b, "seq", seq_message, &s, &sin, &sout);
  po.max_threads = 1;
  cr_assert_eq(weft_pool_new(&pool, &po), 0);
  cr_assert_eq(weft_pool_register(pool, "square", square_task, NULL), 0);
  cr_assert_eq(weft_pool_serve(b, pool, "math", &server_pool), 0);
  so.schedulers = 1;
  cr_assert_eq(weft_actor_system_new(&sys, &so), 0);
  cr_assert_eq(weft_actor_system_join(sys, b), 0);
  ao.name = "doubler";
  cr_assert_eq(weft_actor_spawn(sys, doubler, NULL, &ao, &id), 0);
  settle(b, NULL);
  c.pid = fork();
  cr_assert(c.pid >= 0);
  if (c.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
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
  cr_assert_eq(weft_pool_unserve(server_pool), 0);
  cr_assert_eq(weft_actor_system_leave(sys), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  cr_assert_eq(weft_actor_system_free(sys), 0);
  cr_assert_eq(weft_pool_close(pool), 0);
  free_channel(pin, pout);
  free_channel(sin, sout);
  run_and_free(loop);
}

