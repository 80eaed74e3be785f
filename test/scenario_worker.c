/* scenario_worker.c - concurrent paths of workers as a plain program (runs
 * under ThreadSanitizer, where Criterion cannot start):
 *   1. terminate while messages flow both ways, many rounds;
 *   2. many short-lived workers, a bounded number at a time;
 *   3. a worker exits while the main thread is still posting to it.
 * Returns 0 on success; prints the reason and returns 1 otherwise. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "scenario_worker: %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, " (%s)\n", #cond);                               \
      exit(1);                                                         \
    }                                                                  \
  } while (0)

static weft_loop_t* new_loop(void) {
  weft_loop_t* loop = NULL;
  int err = weft_loop_new(&loop);
  CHECK(err == 0, "weft_loop_new: %s", weft_strerror(err));
  return loop;
}

static void free_loop(weft_loop_t* loop) {
  int err = weft_loop_free(loop);
  CHECK(err == 0, "weft_loop_free: %s", weft_err_name(err));
}

/* Messages are [kind, seq]. */
enum { K_FLOOD = 0, K_ECHO = 1, K_DATA = 2 };

typedef struct {
  int64_t kind;
  int64_t seq;
} pair_t;

static int pack_pair(msgpack_packer* pk, void* arg) {
  const pair_t* p = arg;
  msgpack_pack_array(pk, 2);
  msgpack_pack_int64(pk, p->kind);
  return msgpack_pack_int64(pk, p->seq);
}

static bool read_pair(weft_msg_t* msg, pair_t* out) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
    return false;
  for (int i = 0; i < 2; i++) {
    const msgpack_object* e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
      return false;
  }
  out->kind = (int64_t)o->via.array.ptr[0].via.u64;
  out->seq = (int64_t)o->via.array.ptr[1].via.u64;
  return true;
}

/* --- 1. Terminate with messages in flight both ways ------------------------ */

#define T_ROUNDS 50
#define T_FLOOD 500

/* Worker: flood the owner from the entry, and echo what the owner sends. */
static void t_echo(weft_port_t* port, weft_msg_t* msg) {
  pair_t p;
  if (!read_pair(msg, &p))
    return;
  p.kind = K_ECHO;
  weft_port_post_fn(port, pack_pair, &p);
}

static void t_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), t_echo);
  for (int64_t i = 0; i < T_FLOOD; i++) {
    pair_t p = {K_FLOOD, i};
    if (weft_port_post_fn(weft_parent_port(), pack_pair, &p) != 0)
      break;
  }
}

static struct {
  int round;
  int64_t next[2]; /* Next expected seq per kind (flood, echo). */
  int messages;
  int exits;
  int exit_code;
  int term_calls;
  int term_code;
  bool term_before_exit;
  bool terminated;
} tr;

static void t_terminate(weft_worker_t* w);

static void t_on_term(weft_worker_t* w, int code) {
  (void)w;
  tr.term_calls++;
  tr.term_code = code;
  if (tr.exits == 0)
    tr.term_before_exit = true;
}

static void t_terminate(weft_worker_t* w) {
  int err;
  if (tr.terminated)
    return;
  tr.terminated = true;
  err = weft_worker_terminate(w, t_on_term);
  CHECK(err == 0, "terminate: %s", weft_err_name(err));
}

static void t_online(weft_worker_t* w) {
  /* Post a burst to the worker, then (in some rounds) terminate at once. */
  for (int64_t i = 0; i < T_FLOOD; i++) {
    pair_t p = {K_DATA, i};
    int err = weft_worker_post_fn(w, pack_pair, &p);
    CHECK(err == 0, "post %lld: %s", (long long)i, weft_err_name(err));
  }
  if (tr.round % 3 == 0)
    t_terminate(w);
}

static void t_message(weft_worker_t* w, weft_msg_t* msg) {
  pair_t p;
  CHECK(tr.exits == 0, "message after exit");
  CHECK(read_pair(msg, &p), "bad message");
  CHECK(p.kind == K_FLOOD || p.kind == K_ECHO, "kind %lld",
        (long long)p.kind);
  CHECK(p.seq == tr.next[p.kind], "round %d kind %lld: seq %lld, want %lld",
        tr.round, (long long)p.kind, (long long)p.seq,
        (long long)tr.next[p.kind]);
  tr.next[p.kind]++;
  tr.messages++;
  if (tr.round % 3 == 1 && tr.messages == 1)
    t_terminate(w);
  if (tr.round % 3 == 2 && tr.messages == 300)
    t_terminate(w);
}

static void t_exit(weft_worker_t* w, int code) {
  (void)w;
  CHECK(tr.term_calls == 0, "terminate callback before exit");
  tr.exits++;
  tr.exit_code = code;
}

static void terminate_in_flight(void) {
  long total = 0;
  for (int r = 0; r < T_ROUNDS; r++) {
    weft_loop_t* loop = new_loop();
    weft_worker_opts_t opts;
    weft_worker_t* w = NULL;
    int err;
    memset(&tr, 0, sizeof(tr));
    tr.round = r;
    memset(&opts, 0, sizeof(opts));
    opts.events.online = t_online;
    opts.events.message = t_message;
    opts.events.exit = t_exit;
    err = weft_worker_spawn(&w, loop, t_entry, &opts);
    CHECK(err == 0, "spawn: %s", weft_strerror(err));
    CHECK(weft_loop_run(loop) == 0, "run");
    CHECK(tr.terminated, "round %d: never terminated", r);
    CHECK(tr.exits == 1, "round %d: %d exits", r, tr.exits);
    CHECK(tr.exit_code == 1, "round %d: exit code %d", r, tr.exit_code);
    CHECK(tr.term_calls == 1, "round %d: %d terminate callbacks", r,
          tr.term_calls);
    CHECK(tr.term_code == 1, "round %d: terminate code %d", r, tr.term_code);
    CHECK(!tr.term_before_exit, "terminate callback before exit");
    CHECK(weft_worker_exited(w), "not exited");
    {
      pair_t p = {K_DATA, 0};
      err = weft_worker_post_fn(w, pack_pair, &p);
      CHECK(err == WEFT_ECLOSED, "post after exit: %s", weft_err_name(err));
    }
    total += tr.messages;
    weft_worker_free(w);
    free_loop(loop);
  }
  printf("terminate in flight: %d rounds, %ld messages back\n", T_ROUNDS,
         total);
}

/* --- 2. Many short-lived workers, a few at a time --------------------------- */

#define S_TOTAL 100
#define S_AT_ONCE 8

static struct {
  weft_loop_t* loop;
  weft_worker_t* w[S_TOTAL];
  int idx[S_TOTAL];
  int spawned;
  int running;
  int max_running;
  int exited;
  bool got[S_TOTAL];
  bool exited_w[S_TOTAL];
} sr;

static void s_entry(weft_loop_t* loop, void* arg) {
  const msgpack_object* d = weft_worker_data();
  pair_t p = {K_DATA, 0};
  (void)loop;
  (void)arg;
  if (d == NULL || d->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
    weft_report_error("no worker data");
    return;
  }
  p.seq = (int64_t)d->via.u64 * 3 + 1;
  weft_port_post_fn(weft_parent_port(), pack_pair, &p);
}

static void s_spawn_next(void);

static void s_message(weft_worker_t* w, weft_msg_t* msg) {
  int i = *(int*)weft_worker_get_data(w);
  pair_t p;
  CHECK(read_pair(msg, &p), "bad message");
  CHECK(p.seq == (int64_t)i * 3 + 1, "worker %d sent %lld", i,
        (long long)p.seq);
  CHECK(!sr.got[i], "worker %d: two messages", i);
  CHECK(!sr.exited_w[i], "worker %d: message after exit", i);
  sr.got[i] = true;
}

static void s_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  CHECK(0, "error event %s: %s", weft_err_name(err), text);
}

static void s_exit(weft_worker_t* w, int code) {
  int i = *(int*)weft_worker_get_data(w);
  CHECK(code == 0, "worker %d: exit code %d", i, code);
  CHECK(sr.got[i], "worker %d: exit before its message", i);
  CHECK(!sr.exited_w[i], "worker %d: two exits", i);
  sr.exited_w[i] = true;
  sr.exited++;
  sr.running--;
  s_spawn_next();
}

static void s_spawn_next(void) {
  while (sr.running < S_AT_ONCE && sr.spawned < S_TOTAL) {
    int i = sr.spawned++;
    unsigned char data[9];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    weft_worker_opts_t opts;
    int err;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_int(&pk, i);
    memcpy(data, sb.data, sb.size);
    memset(&opts, 0, sizeof(opts));
    opts.data = data;
    opts.data_len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    opts.name = "short-lived";
    opts.events.message = s_message;
    opts.events.error = s_error;
    opts.events.exit = s_exit;
    sr.idx[i] = i;
    opts.user_data = &sr.idx[i];
    err = weft_worker_spawn(&sr.w[i], sr.loop, s_entry, &opts);
    CHECK(err == 0, "spawn %d: %s", i, weft_strerror(err));
    sr.running++;
    if (sr.running > sr.max_running)
      sr.max_running = sr.running;
  }
}

static void many_short_lived(void) {
  memset(&sr, 0, sizeof(sr));
  sr.loop = new_loop();
  s_spawn_next();
  CHECK(weft_loop_run(sr.loop) == 0, "run");
  CHECK(sr.spawned == S_TOTAL, "spawned %d", sr.spawned);
  CHECK(sr.exited == S_TOTAL, "exited %d", sr.exited);
  CHECK(sr.running == 0, "running %d", sr.running);
  CHECK(sr.max_running <= S_AT_ONCE, "max running %d", sr.max_running);
  for (int i = 0; i < S_TOTAL; i++) {
    CHECK(sr.got[i] && sr.exited_w[i], "worker %d incomplete", i);
    CHECK(weft_worker_thread_id(sr.w[i]) > 0, "thread id");
    for (int j = 0; j < i; j++)
      CHECK(weft_worker_thread_id(sr.w[i]) != weft_worker_thread_id(sr.w[j]),
            "workers %d and %d share a thread id", i, j);
  }
  for (int i = 0; i < S_TOTAL; i++)
    weft_worker_free(sr.w[i]);
  free_loop(sr.loop);
  printf("short-lived: %d workers, at most %d at once\n", S_TOTAL,
         sr.max_running);
}

/* --- 3. A worker exits while the owner posts to it ---------------------------- */

#define E_ROUNDS 10
#define E_CHUNK 1000
#define E_MAX_POSTS 2000000L

static atomic_int e_limit; /* Messages the worker takes before it exits. */

static void e_handler(weft_port_t* port, weft_msg_t* msg) {
  static _Thread_local int seen;
  (void)port;
  (void)msg;
  if (++seen == atomic_load(&e_limit)) {
    seen = 0;
    weft_worker_exit(0);
  }
}

static void e_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  /* Even rounds: take some messages, then exit. Odd rounds: end at once. */
  if (atomic_load(&e_limit) > 0)
    weft_port_on_message(weft_parent_port(), e_handler);
}

static struct {
  weft_worker_t* w;
  long posted;
  long closed;
  bool exited;
  int exit_code;
} er;

static void e_post_chunk(weft_loop_t* loop, void* arg) {
  (void)arg;
  if (er.exited)
    return;
  for (int i = 0; i < E_CHUNK && er.posted + er.closed < E_MAX_POSTS; i++) {
    pair_t p = {K_DATA, er.posted};
    int err = weft_worker_post_fn(er.w, pack_pair, &p);
    CHECK(err == 0 || err == WEFT_ECLOSED, "post: %s", weft_err_name(err));
    if (err == 0) {
      CHECK(er.closed == 0, "post succeeded after ECLOSED");
      er.posted++;
    } else {
      er.closed++;
    }
  }
  if (er.closed == 0 && er.posted < E_MAX_POSTS)
    weft_set_immediate(loop, e_post_chunk, NULL, NULL);
}

static void e_online(weft_worker_t* w) {
  (void)w;
  e_post_chunk(weft_loop_current(), NULL);
}

static void e_exit(weft_worker_t* w, int code) {
  (void)w;
  er.exited = true;
  er.exit_code = code;
}

static void exit_while_posting(void) {
  long closed_rounds = 0;
  for (int r = 0; r < E_ROUNDS; r++) {
    weft_loop_t* loop = new_loop();
    weft_worker_opts_t opts;
    int err;
    pair_t p = {K_DATA, 0};
    memset(&er, 0, sizeof(er));
    atomic_store(&e_limit, r % 2 == 0 ? 50 + 40 * r : 0);
    memset(&opts, 0, sizeof(opts));
    opts.events.online = e_online;
    opts.events.exit = e_exit;
    err = weft_worker_spawn(&er.w, loop, e_entry, &opts);
    CHECK(err == 0, "spawn: %s", weft_strerror(err));
    CHECK(weft_loop_run(loop) == 0, "run");
    CHECK(er.exited, "round %d: no exit", r);
    CHECK(er.exit_code == 0, "round %d: exit code %d", r, er.exit_code);
    if (r % 2 == 0)
      CHECK(er.posted >= atomic_load(&e_limit), "round %d: posted %ld", r,
            er.posted);
    err = weft_worker_post_fn(er.w, pack_pair, &p);
    CHECK(err == WEFT_ECLOSED, "post after exit: %s", weft_err_name(err));
    if (er.closed > 0)
      closed_rounds++;
    weft_worker_free(er.w);
    free_loop(loop);
  }
  printf("exit while posting: %d rounds, %ld saw ECLOSED while posting\n",
         E_ROUNDS, closed_rounds);
}

int main(void) {
  terminate_in_flight();
  many_short_lived();
  exit_while_posting();
  printf("scenario_worker: ok\n");
  return 0;
}
