/* test_actor_remote.c - Criterion suite for actors across nodes
 * (weft/actor_remote.h): send, ask and reply-by-send between two nodes,
 * order, copies, monitors and links across nodes, noconnection when a
 * node in another process is killed, remote spawn, bad input, and
 * malformed envelopes from the network. Each test starts its own
 * nats-server (test/nats_server.h); most run two nodes and two systems
 * in this process. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>

/* node_support.h's other process is test/actor_remote_app here (CMake's
 * NODE_APP for this suite): start_node_app("b"). */
#include "node_support.h"

static void start_server(void) {
  cr_assert_eq(nats_server_start(&server, NULL), 0, "nats-server started");
}

static void stop_server(void) {
  nats_server_stop(&server);
}

TestSuite(actor_remote, .init = start_server, .fini = stop_server,
          .timeout = 120);

/* --- two nodes, two systems ----------------------------------------------- */

typedef struct {
  weft_loop_t* loop;
  events_t eva, evb;
  weft_node_t *a, *b;
  weft_actor_system_t *sa, *sb;
} duo_t;

/* Wait until `node` sees `name` up. */
static void wait_up(weft_loop_t* loop, weft_node_t* node, const char* name) {
  while (!weft_node_is_up(node, name))
    run_for(loop, 20);
}

static weft_actor_system_t* new_system(void) {
  weft_actor_system_opts_t o = {0};
  weft_actor_system_t* s = NULL;
  o.schedulers = 2;
  cr_assert_eq(weft_actor_system_new(&s, &o), 0);
  return s;
}

/* Nodes with the default heartbeats (node_support.h's join): slow to call
 * another down, as this loop also blocks in calls at times (the
 * noconnection test uses join_watching's 600 ms). */
static void duo_start(duo_t* d) {
  memset(d, 0, sizeof(*d));
  d->loop = new_loop();
  d->a = join(d->loop, "a", &d->eva);
  d->b = join(d->loop, "b", &d->evb);
  d->sa = new_system();
  d->sb = new_system();
  cr_assert_eq(weft_actor_system_join(d->sa, d->a), 0);
  cr_assert_eq(weft_actor_system_join(d->sb, d->b), 0);
  wait_up(d->loop, d->a, "b");
  wait_up(d->loop, d->b, "a");
  settle(d->a, d->b);
}

static void duo_stop(duo_t* d) {
  cr_assert_eq(weft_actor_system_leave(d->sa), 0);
  cr_assert_eq(weft_actor_system_leave(d->sb), 0);
  cr_assert_eq(weft_node_leave(d->a), 0);
  cr_assert_eq(weft_node_leave(d->b), 0);
  cr_assert_eq(weft_actor_system_free(d->sa), 0);
  cr_assert_eq(weft_actor_system_free(d->sb), 0);
  run_and_free(d->loop);
}

/* --- behaviours ----------------------------------------------------------- */

static int64_t read_int(weft_msg_t* m) {
  int64_t v = INT64_MIN;
  (void)weft_msg_read(m, "I", &v);
  return v;
}

/* An integer request n -> n + 1 (a negative one: that error); a message
 * n -> n + 1 sent back to its sender; a negative message ends the actor
 * with it as its reason. */
static int echo_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  int64_t v = read_int(m);
  weft_actor_id s;
  (void)self;
  (void)state;
  if (weft_actor_signal(m, NULL) != WEFT_SIGNAL_NONE)
    return 0;
  if (weft_msg_is_request(m)) {
    weft_reply_t* r = NULL;
    if (weft_msg_take_reply(m, &r) != 0)
      return 0;
    if (v < 0)
      weft_reply_error(r, (int)v);
    else
      weft_reply_send_fmt(r, "I", v + 1);
    return 0;
  }
  if (v < 0)
    return (int)v;
  s = weft_actor_sender(m);
  if (s != WEFT_ACTOR_NONE)
    weft_actor_send_fmt(s, "I", v + 1);
  return 0;
}

static weft_actor_id spawn_named(weft_actor_system_t* sys, const char* name,
                                 weft_behaviour_fn fn, void* state) {
  weft_actor_opts_t o = {0};
  weft_actor_id id = 0;
  o.name = name;
  cr_assert_eq(weft_actor_spawn(sys, fn, state, &o, &id), 0);
  return id;
}

/* What a client actor saw. */
typedef struct {
  weft_actor_id target;
  atomic_int done, asked, down, exits, stopped, got;
  atomic_int ask_status, reason, stop_reason;
  atomic_llong ask_value;
  atomic_ullong sender, from;
  int64_t next;
  atomic_int out_of_order;
} rec_t;

enum {
  GO = 1000,      /* send 7 and ask 100 */
  MONITOR = 2000, /* monitor the target */
  LINK = 3000,    /* link to it */
  LINK_TRAP = 3001,
  KILL = 5000, /* 5000 + k: send -k to the target */
  BURST = 100000 /* 100000 + n: send 0..n-1 to the target */
};

static void on_ask(weft_actor_t* self, void* state, void* arg, int status,
                   weft_msg_t* reply) {
  rec_t* r = arg;
  (void)self;
  (void)state;
  r->ask_status = status;
  r->ask_value = reply != NULL ? read_int(reply) : INT64_MIN;
  r->asked++;
}

static void client_stop(void* state, int reason) {
  rec_t* r = state;
  r->stop_reason = reason;
  r->stopped++;
}

static int client_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  rec_t* r = state;
  weft_signal_t sig;
  int64_t v, i;
  switch (weft_actor_signal(m, &sig)) {
    case WEFT_SIGNAL_DOWN:
      r->reason = sig.reason;
      r->from = sig.from;
      r->down++;
      return 0;
    case WEFT_SIGNAL_EXIT:
      r->reason = sig.reason;
      r->from = sig.from;
      r->exits++;
      return 0;
    default:
      break;
  }
  v = read_int(m);
  if (v == GO) {
    packed_t b = packed_int(100);
    weft_actor_send_fmt(r->target, "I", 7);
    weft_actor_ask(self, r->target, b.data, b.len, 10000, on_ask, r);
  } else if (v == 8) { /* The echo answered by send: again, to its sender. */
    r->sender = weft_actor_sender(m);
    weft_actor_send_fmt(weft_actor_sender(m), "I", 20);
  } else if (v == 21) {
    r->done++;
  } else if (v == MONITOR) {
    uint64_t ref;
    weft_actor_monitor(self, r->target, &ref);
  } else if (v == LINK || v == LINK_TRAP) {
    weft_actor_trap_exits(self, v == LINK_TRAP);
    weft_actor_link(self, r->target);
  } else if (v > KILL && v < KILL + 1000) {
    weft_actor_send_fmt(r->target, "I", -(v - KILL));
  } else if (v >= BURST) {
    for (i = 0; i < v - BURST; i++)
      weft_actor_send_fmt(r->target, "I", i);
  } else if (v < 0) {
    return (int)v; /* End with that reason. */
  }
  r->got++;
  return 0;
}

static weft_actor_id spawn_client(weft_actor_system_t* sys, rec_t* r) {
  weft_actor_opts_t o = {0};
  weft_actor_id id = 0;
  o.on_stop = client_stop;
  cr_assert_eq(weft_actor_spawn(sys, client_fn, r, &o, &id), 0);
  return id;
}

static void tell(weft_actor_id to, int64_t v) {
  packed_t b = packed_int(v);
  cr_assert_eq(weft_actor_send_wait(to, b.data, b.len, 10000), 0);
}

/* Counts integers and checks they come in order. */
static int seq_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  rec_t* r = state;
  int64_t v = read_int(m);
  (void)self;
  if (v != r->next)
    r->out_of_order++;
  r->next = v + 1;
  r->got++;
  return 0;
}

static int64_t call_int(weft_actor_id to, int64_t v, int* status) {
  packed_t b = packed_int(v);
  weft_msg_t* reply = NULL;
  int64_t out = INT64_MIN;
  *status = weft_actor_call(to, b.data, b.len, 10000, &reply);
  if (reply != NULL) {
    out = read_int(reply);
    weft_msg_free(reply);
  }
  return out;
}

/* --- tests ---------------------------------------------------------------- */

Test(actor_remote, send_ask_and_reply_by_send) {
  duo_t d;
  rec_t rc = {0};
  weft_actor_id echo, remote, client;
  char node[72] = {0};
  int status;
  duo_start(&d);
  echo = spawn_named(d.sb, "echo", echo_fn, NULL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "echo", &remote), 0);
  cr_assert_neq(remote, echo, "an address of this node");
  cr_assert(weft_actor_is_remote(remote, node));
  cr_assert_str_eq(node, "b");
  cr_assert_not(weft_actor_is_remote(echo, NULL));

  /* A blocking call from a thread outside the actors, and a replier's
   * error by name. */
  cr_assert_eq(call_int(remote, 41, &status), 42);
  cr_assert_eq(status, 0, "%s", weft_err_name(status));
  call_int(remote, WEFT_ENOENT, &status);
  cr_assert_eq(status, WEFT_ENOENT, "%s", weft_err_name(status));

  /* An actor sends and asks; the echo answers the send to its sender (a
   * proxy of the client on b), and the client answers that one's sender
   * (a proxy of the echo on a): both ways. */
  rc.target = remote;
  client = spawn_client(d.sa, &rc);
  tell(client, GO);
  run_until(d.loop, &rc.done);
  run_until(d.loop, &rc.asked);
  cr_assert_eq(rc.ask_status, 0, "%s", weft_err_name(rc.ask_status));
  cr_assert_eq(rc.ask_value, 101);
  cr_assert(weft_actor_is_remote((weft_actor_id)rc.sender, node),
            "the sender is an address on this node");
  cr_assert_str_eq(node, "b");
  cr_assert_neq((weft_actor_id)rc.sender, remote);
  duo_stop(&d);
}

Test(actor_remote, ten_thousand_sends_arrive_in_order) {
  duo_t d;
  rec_t seq = {0}, rc = {0};
  weft_actor_id client;
  duo_start(&d);
  spawn_named(d.sb, "seq", seq_fn, &seq);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "seq", &rc.target), 0);
  client = spawn_client(d.sa, &rc);
  tell(client, BURST + 10000);
  run_until_count(d.loop, &seq.got, 10000);
  run_for(d.loop, 100); /* Nothing more comes. */
  cr_assert_eq(atomic_load(&seq.got), 10000);
  cr_assert_eq(atomic_load(&seq.out_of_order), 0);
  duo_stop(&d);
}

/* What b's side sees: a monitor of its own actor. */
Test(actor_remote, monitor_gets_down_with_the_remote_reason) {
  duo_t d;
  rec_t rc = {0}, other = {0};
  weft_actor_id client, watcher;
  duo_start(&d);
  spawn_named(d.sb, "victim", echo_fn, NULL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "victim", &rc.target), 0);
  client = spawn_client(d.sa, &rc);
  tell(client, MONITOR);
  tell(client, KILL + 42); /* The victim ends with -42. */
  run_until(d.loop, &rc.down);
  cr_assert_eq(rc.reason, -42);
  cr_assert_eq((weft_actor_id)rc.from, rc.target);
  /* The address is gone as a local one would be. */
  cr_assert_eq(weft_actor_send(rc.target, "\x01", 1), WEFT_EDEADACTOR);

  /* A name nobody has there: DOWN with WEFT_EDEADACTOR (noproc). */
  cr_assert_eq(weft_actor_remote(d.sa, "b", "nobody", &other.target), 0);
  watcher = spawn_client(d.sa, &other);
  tell(watcher, MONITOR);
  run_until(d.loop, &other.down);
  cr_assert_eq(other.reason, WEFT_EDEADACTOR);
  duo_stop(&d);
}

Test(actor_remote, links_propagate_exits_both_ways) {
  duo_t d;
  rec_t trap = {0}, plain = {0}, dies = {0}, watch_b = {0};
  weft_actor_id t, p, x, w, victim2;
  duo_start(&d);
  /* b's actor ends: a trapping linked actor on a gets EXIT, a plain one
   * ends with the same reason. */
  spawn_named(d.sb, "victim", echo_fn, NULL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "victim", &trap.target), 0);
  plain.target = trap.target;
  t = spawn_client(d.sa, &trap);
  p = spawn_client(d.sa, &plain);
  tell(t, LINK_TRAP);
  tell(p, LINK);
  run_until_count(d.loop, &plain.got, 1);
  run_until_count(d.loop, &trap.got, 1);
  tell(t, KILL + 43);
  run_until(d.loop, &trap.exits);
  cr_assert_eq(trap.reason, -43);
  run_until(d.loop, &plain.stopped);
  cr_assert_eq(plain.stop_reason, -43, "the link ended it");

  /* a's actor ends: b's actor linked through it ends with its reason (a
   * monitor on b sees it). */
  victim2 = spawn_named(d.sb, "victim2", echo_fn, NULL);
  watch_b.target = victim2;
  w = spawn_client(d.sb, &watch_b);
  tell(w, MONITOR);
  run_until_count(d.loop, &watch_b.got, 1);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "victim2", &dies.target), 0);
  x = spawn_client(d.sa, &dies);
  tell(x, LINK);
  run_until_count(d.loop, &dies.got, 1);
  tell(x, -44);
  run_until(d.loop, &watch_b.down);
  cr_assert_eq(watch_b.reason, -44);
  duo_stop(&d);
}

/* Buffers cross as copies; shared buffers cannot leave the process. */
typedef struct {
  atomic_int done;
  size_t len;
  char bytes[8];
  int64_t n;
} bin_t;

static int bin_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  bin_t* b = state;
  const msgpack_object* o = weft_msg_object(m);
  (void)self;
  if (o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2 &&
      o->via.array.ptr[0].type == MSGPACK_OBJECT_BIN) {
    b->len = o->via.array.ptr[0].via.bin.size;
    memcpy(b->bytes, o->via.array.ptr[0].via.bin.ptr,
           b->len < sizeof(b->bytes) ? b->len : sizeof(b->bytes));
    b->n = (int64_t)o->via.array.ptr[1].via.u64;
  }
  b->done++;
  return 0;
}

Test(actor_remote, buffers_cross_as_copies_shared_do_not) {
  duo_t d;
  bin_t got = {0};
  weft_actor_id remote;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_msg_t* m = NULL;
  void* data = NULL;
  duo_start(&d);
  spawn_named(d.sb, "bin", bin_fn, &got);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "bin", &remote), 0);
  cr_assert_eq(weft_buffer_new(&buf, 5), 0);
  cr_assert_eq(weft_buffer_data(buf, &data, NULL), 0);
  memcpy(data, "hello", 5);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "[Bi]", buf, 7), 0);
  cr_assert_eq(weft_actor_send_msg(remote, &m), 0);
  cr_assert_null(m);
  cr_assert(weft_buffer_detached(buf), "given away as by a local transfer");
  run_until(d.loop, &got.done);
  cr_assert_eq(got.len, 5);
  cr_assert(memcmp(got.bytes, "hello", 5) == 0);
  cr_assert_eq(got.n, 7);
  weft_buffer_free(buf);

  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_actor_send_msg(remote, &m), WEFT_ENOTLOCAL);
  cr_assert_not_null(m, "still the caller's");
  weft_msg_free(m);
  weft_shared_release(sh);
  duo_stop(&d);
}

/* --- remote spawn --------------------------------------------------------- */

static atomic_int adders_stopped;

static int adder_init(const msgpack_object* args, void** state) {
  int64_t* s;
  if (args->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return WEFT_EINVAL;
  s = malloc(sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  *s = (int64_t)args->via.u64;
  *state = s;
  return 0;
}

static void adder_stop(void* state, int reason) {
  (void)reason;
  free(state);
  adders_stopped++;
}

static int adder2_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  weft_reply_t* r = NULL;
  (void)self;
  if (weft_msg_take_reply(m, &r) == 0)
    weft_reply_send_fmt(r, "I", read_int(m) + *(int64_t*)state);
  return 0;
}

/* Keeps every request's reply handle and does not answer, until a message
 * -1 comes: then it answers them all (WEFT_ECANCELED) and sets
 * `released`: answers that come after their askers' hub forgot them. */
#define SILENT_MAX 128
typedef struct {
  weft_reply_t* held[SILENT_MAX];
  int n;
  atomic_int released;
} silent_t;

static int silent_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  silent_t* s = state;
  weft_reply_t* r = NULL;
  (void)self;
  if (weft_actor_signal(m, NULL) != WEFT_SIGNAL_NONE)
    return 0;
  if (!weft_msg_is_request(m)) {
    if (read_int(m) == -1) {
      while (s->n > 0)
        weft_reply_error(s->held[--s->n], WEFT_ECANCELED);
      atomic_store(&s->released, 1);
    }
    return 0;
  }
  if (weft_msg_take_reply(m, &r) != 0)
    return 0;
  if (s->n < SILENT_MAX)
    s->held[s->n++] = r;
  else
    weft_reply_error(r, WEFT_ECANCELED);
  return 0;
}

/* An ask to another node whose reply never comes while both nodes stay up
 * (here its target keeps the handle; a reply lost by NATS is the same) is
 * forgotten once its caller's timeout has passed: counted in `expired`,
 * not kept until a node goes down. */
Test(actor_remote, asks_whose_caller_gave_up_are_forgotten) {
  duo_t d;
  silent_t silent = {0};
  weft_actor_opts_t o = {0};
  weft_actor_id remote, id;
  weft_node_stats_t st;
  int i, calls = 70;
  duo_start(&d);
  o.name = "silent";
  cr_assert_eq(weft_actor_spawn(d.sb, silent_fn, &silent, &o, &id), 0);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "silent", &remote), 0);
  for (i = 0; i < calls; i++) {
    packed_t b = packed_int(i);
    weft_msg_t* reply = NULL;
    int status = weft_actor_call(remote, b.data, b.len, 10, &reply);
    cr_assert_eq(status, WEFT_ETIMEDOUT, "call %d: %s", i,
                 weft_err_name(status));
    cr_assert_null(reply);
  }
  cr_assert_eq(weft_node_stats(d.a, &st), 0);
  /* At the 64th entry every earlier one was past its caller's deadline. */
  cr_assert_geq(st.expired, 63, "%llu expired",
                (unsigned long long)st.expired);
  cr_assert_leq(st.expired, (uint64_t)calls);
  /* The answers come late now: dropped (their entries are gone). */
  tell(id, -1);
  while (!atomic_load(&silent.released))
    run_for(d.loop, 10);
  duo_stop(&d);
}

Test(actor_remote, spawn_on_another_node) {
  duo_t d;
  events_t evc = {0};
  weft_node_t* c;
  weft_actor_id id = 0;
  packed_t ten = packed_int(10), str = packed_str("x");
  int status;
  char node[72];
  duo_start(&d);
  cr_assert_eq(weft_actor_register_behaviour(d.sb, "adder", adder2_fn,
                                             adder_init, adder_stop),
               0);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "adder", ten.data, ten.len,
                                   10000, &id),
               0);
  cr_assert(weft_actor_is_remote(id, node));
  cr_assert_str_eq(node, "b");
  cr_assert_eq(call_int(id, 5, &status), 15);
  cr_assert_eq(status, 0, "%s", weft_err_name(status));

  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "nosuch", NULL, 0, 10000, &id),
               WEFT_ENOENT);
  cr_assert_eq(id, 0);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "adder", str.data, str.len,
                                   10000, &id),
               WEFT_EINVAL, "init's own code");
  cr_assert_eq(weft_actor_spawn_on(d.sa, "zz", "adder", ten.data, ten.len,
                                   10000, &id),
               WEFT_ENOTCONNECTED, "a node that is not up");
  /* Up, but no system attached there: nobody answers. */
  c = join(d.loop, "c", &evc);
  wait_up(d.loop, d.a, "c");
  cr_assert_eq(weft_actor_spawn_on(d.sa, "c", "adder", ten.data, ten.len,
                                   10000, &id),
               WEFT_ENORESPONDERS);
  cr_assert_eq(weft_node_leave(c), 0);
  duo_stop(&d);
  cr_assert_eq(atomic_load(&adders_stopped), 1, "the state went to on_stop");
}

/* --- bad input ------------------------------------------------------------ */

Test(actor_remote, bad_input) {
  duo_t d;
  weft_actor_system_t* other = new_system();
  weft_actor_id id = 0, local;
  duo_start(&d);
  cr_assert_eq(weft_actor_system_join(NULL, d.a), WEFT_EINVAL);
  cr_assert_eq(weft_actor_system_join(d.sa, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_actor_system_join(d.sa, d.a), WEFT_EEXIST);
  cr_assert_eq(weft_actor_system_join(other, d.a), WEFT_EEXIST,
               "one system per node");
  cr_assert_eq(weft_actor_system_leave(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_actor_system_leave(other), WEFT_ENOENT);

  cr_assert_eq(weft_actor_remote(d.sa, NULL, "x", &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", NULL, &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "x", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "a.b", &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(d.sa, "b", "", &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(d.sa, "b*", "x", &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(NULL, "b", "x", &id), WEFT_EINVAL);
  cr_assert_eq(weft_actor_remote(other, "b", "x", &id), WEFT_EINVAL,
               "not attached");
  cr_assert_eq(weft_actor_remote(d.sa, "zz", "x", &id), WEFT_ENOTCONNECTED);
  cr_assert_eq(id, 0);
  cr_assert_eq(weft_actor_remote(d.sa, "a", "x", &id), WEFT_EDEADACTOR,
               "this node, nobody of that name");
  local = spawn_named(d.sa, "here", echo_fn, NULL);
  cr_assert_eq(weft_actor_remote(d.sa, "a", "here", &id), 0);
  cr_assert_eq(id, local, "this node's own actor");

  cr_assert_eq(weft_actor_register_behaviour(NULL, "x", echo_fn, NULL, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_register_behaviour(d.sb, "x", NULL, NULL, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_register_behaviour(d.sb, "x y", echo_fn, NULL, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_register_behaviour(d.sb, "x", echo_fn, NULL, NULL),
               0);
  cr_assert_eq(weft_actor_register_behaviour(d.sb, "x", echo_fn, NULL, NULL),
               WEFT_EEXIST);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "x", "\xc1", 1, 1000, &id),
               WEFT_EDECODE);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "x", NULL, 3, 1000, &id),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "x", NULL, 0, 1000, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_spawn_on(other, "b", "x", NULL, 0, 1000, &id),
               WEFT_EINVAL);
  cr_assert_eq(weft_actor_spawn_on(d.sa, "b", "x", NULL, 0, 10000, &id), 0,
               "nil arguments, no init");
  cr_assert_eq(weft_actor_system_free(other), 0);
  duo_stop(&d);
}

/* --- untrusted input ------------------------------------------------------ */

typedef struct {
  atomic_int n;
  char error[32];
} raw_t;

static void raw_reply(void* ctx, const weft__nats_msg_t* nm) {
  raw_t* r = ctx;
  snprintf(r->error, sizeof(r->error), "%s",
           nm->error != NULL ? nm->error : "");
  r->n++;
}

static void raw_done(void* ctx) {
  (void)ctx;
}

Test(actor_remote, malformed_envelopes_are_dropped_and_counted) {
  static const struct {
    const char* bytes;
    size_t len;
  } bad[] = {
      {"\x01", 1},                                  /* not an array */
      {"\x94\x00\xa1" "a\x00\x01", 6},              /* four elements */
      {"\x95\x07\xa1" "a\x00\x01\xc0", 7},          /* no such kind */
      {"\x95\x00\xa2" "a.\x00\x01\xc0", 8},         /* a bad node name */
      {"\x95\x00\xa1" "a\xff\x01\xc0", 7},          /* a negative sender */
      {"\x95\x00\xa1" "a\x00\x00\xc0", 7},          /* to id 0 */
      {"\x95\x00\xa1" "a\x00\xc3\xc0", 7},          /* to: a bool */
      {"\x95\x00\xa1" "a\x00\x01\xc0\x00", 8},      /* a byte after it */
      {"\x95\x00\xa1" "a\x00\x01\x92\x01", 8},      /* a cut value */
      {"\x95\x01\xa1" "a\x00\x01\xc0", 7},          /* WATCH from nobody */
      {"\x95\x02\xa1" "a\x00\x01\xa1x", 8},         /* DOWN, no int */
      {"\x95\x03\xa1" "a\x05\x01\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
       15},                                         /* EXIT, reason > int32 */
      {"\x95\x04\xa1" "a\x00\x01\xc0", 7},          /* SPAWN of an id */
      {"\x95\xdd\xff\xff\xff\xff", 6},              /* a huge claim */
  };
  duo_t d;
  raw_t raw = {0};
  weft__nats_sub_t* sub = NULL;
  weft_node_stats_t before, after;
  weft_actor_id remote;
  size_t i;
  int status;
  duo_start(&d);
  spawn_named(d.sb, "echo", echo_fn, NULL);
  cr_assert_eq(weft_node_stats(d.b, &before), 0);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    cr_assert_eq(weft__node_publish(d.a, "weft.test.b.a", NULL, bad[i].bytes,
                                    bad[i].len, NULL),
                 0);
  /* Well formed, but nothing to act on: a DOWN to an actor that is no
   * proxy, a message to a name nobody has. Ignored, not counted. */
  cr_assert_eq(weft__node_publish(d.a, "weft.test.b.a", NULL,
                                  "\x95\x02\xa1" "a\x00\x01\x00", 7, NULL),
               0);
  cr_assert_eq(weft__node_publish(d.a, "weft.test.b.a", NULL,
                                  "\x95\x00\xa1" "a\x00\xa2zz\x01", 9, NULL),
               0);
  /* A malformed request is answered EDECODE. */
  cr_assert_eq(weft__node_subscribe(d.a, "weft.test.a.x", NULL, raw_reply,
                                    raw_done, &raw, &sub),
               0);
  settle(d.a, d.b);
  cr_assert_eq(weft__node_publish(d.a, "weft.test.b.a", "weft.test.a.x",
                                  "\x01", 1, NULL),
               0);
  run_until(d.loop, &raw.n);
  cr_assert_str_eq(raw.error, "EDECODE");
  /* The request came after the rest, on the same subject: all read. */
  cr_assert_eq(weft_node_stats(d.b, &after), 0);
  cr_assert_eq(after.dropped_decode - before.dropped_decode,
               sizeof(bad) / sizeof(bad[0]) + 1, "%d",
               (int)(after.dropped_decode - before.dropped_decode));
  /* And b still serves. */
  cr_assert_eq(weft_actor_remote(d.sa, "b", "echo", &remote), 0);
  cr_assert_eq(call_int(remote, 1, &status), 2);
  weft__nats_unsubscribe(sub);
  duo_stop(&d);
}

/* --- noconnection --------------------------------------------------------- */

typedef struct {
  atomic_int done;
  int status;
  weft_actor_id to;
} call_t;

static void* hold_call(void* arg) {
  call_t* c = arg;
  weft_msg_t* reply = NULL;
  c->status = weft_actor_call(c->to, "\x01", 1, 60000, &reply);
  weft_msg_free(reply);
  c->done = 1;
  return NULL;
}

Test(actor_remote, node_killed_fires_monitors_and_links_with_noconnection) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_t* a = join_watching(loop, "a", &ev);
  weft_actor_system_t* sa = new_system();
  rec_t mon = {0}, link = {0};
  call_t held = {0};
  weft_actor_id m, l, hold_addr;
  pthread_t th;
  pid_t pid;
  int status, wst;
  cr_assert_eq(weft_actor_system_join(sa, a), 0);
  pid = start_node_app("b");
  wait_up(loop, a, "b");
  settle(a, NULL);
  status = weft_actor_remote(sa, "b", "victim", &mon.target);
  cr_assert_eq(status, 0, "%s", weft_err_name(status));
  cr_assert_eq(call_int(mon.target, 1, &status), 2, "%s",
               weft_err_name(status));
  link.target = mon.target;
  m = spawn_client(sa, &mon);
  l = spawn_client(sa, &link);
  tell(m, MONITOR);
  tell(l, LINK_TRAP);
  run_until_count(loop, &mon.got, 1);
  run_until_count(loop, &link.got, 1);
  /* An ask that b holds unanswered. */
  cr_assert_eq(weft_actor_remote(sa, "b", "hold", &hold_addr), 0);
  held.to = hold_addr;
  cr_assert_eq(pthread_create(&th, NULL, hold_call, &held), 0);
  run_for(loop, 200);

  cr_assert_eq(kill(pid, SIGKILL), 0);
  cr_assert_eq(waitpid(pid, &wst, 0), pid);
  run_until(loop, &ev.down);
  run_until(loop, &mon.down);
  run_until(loop, &link.exits);
  cr_assert_eq(mon.reason, WEFT_ENOTCONNECTED, "%s",
               weft_err_name(mon.reason));
  cr_assert_eq(link.reason, WEFT_ENOTCONNECTED);
  run_until(loop, &held.done);
  cr_assert_eq(held.status, WEFT_ENOTCONNECTED, "%s",
               weft_err_name(held.status));
  pthread_join(th, NULL);
  cr_assert_eq(weft_actor_send(mon.target, "\x01", 1), WEFT_EDEADACTOR);
  cr_assert_eq(weft_actor_remote(sa, "b", "victim", &mon.target),
               WEFT_ENOTCONNECTED);

  /* Back: reachable through a new address. */
  pid = start_node_app("b");
  wait_up(loop, a, "b");
  settle(a, NULL);
  cr_assert_eq(weft_actor_remote(sa, "b", "victim", &mon.target), 0);
  cr_assert_eq(call_int(mon.target, 5, &status), 6, "%s",
               weft_err_name(status));
  kill(pid, SIGTERM);
  cr_assert_eq(waitpid(pid, &wst, 0), pid);
  cr_assert_eq(weft_actor_system_leave(sa), 0);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_actor_system_free(sa), 0);
  run_and_free(loop);
}
