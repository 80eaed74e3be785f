/* weft_bench.c - weft side of the weft vs Node.js benchmark: the same
 * workloads as bench/node/bench.js, through weft's public API only.
 *
 *   weft_bench <pingpong|call|throughput|copy1m|transfer|atomics|spawn|idle|tick> [N]
 *
 * Each workload prints lines "RESULT <metric> <value> <unit>" that
 * bench/run.sh collects (units ending in "/s": higher is better). Any weft
 * call that fails ends the program with the error's name on stderr. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, getrusage */
#endif
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <weft/weft.h>

#define MiB ((size_t)1 << 20)

#define CHECK(expr)                                                        \
  do {                                                                     \
    int rc_ = (expr);                                                      \
    if (rc_ != 0) {                                                        \
      fprintf(stderr, "%s:%d: %s failed: %s (%d): %s\n", __FILE__,         \
              __LINE__, #expr, weft_err_name(rc_), rc_,                    \
              weft_strerror(rc_));                                         \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define DIE(...)                                                           \
  do {                                                                     \
    fprintf(stderr, "weft_bench: " __VA_ARGS__);                           \
    fputc('\n', stderr);                                                   \
    exit(1);                                                               \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void result(const char* metric, double value, const char* unit) {
  double a = value < 0 ? -value : value;
  if (a >= 100)
    printf("RESULT %s %.1f %s\n", metric, value, unit);
  else
    printf("RESULT %s %.4g %s\n", metric, value, unit);
  fflush(stdout);
}

/* --- msgpack by hand (pre-packed bytes, as a C program would keep) ----- */

/* [1, "ping"] */
static const unsigned char PING[] = {0x92, 0x01, 0xa4, 'p', 'i', 'n', 'g'};
/* nil: "stop" */
static const unsigned char STOP[] = {0xc0};

/* A uint as msgpack; returns the length (at most 9). */
static size_t pack_uint(unsigned char* p, uint64_t v) {
  if (v < 128) {
    p[0] = (unsigned char)v;
    return 1;
  }
  if (v <= UINT32_MAX) {
    p[0] = 0xce;
    for (int i = 0; i < 4; i++) p[1 + i] = (unsigned char)(v >> (24 - 8 * i));
    return 5;
  }
  p[0] = 0xcf;
  for (int i = 0; i < 8; i++) p[1 + i] = (unsigned char)(v >> (56 - 8 * i));
  return 9;
}

static uint64_t obj_uint(const msgpack_object* o) {
  if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    DIE("expected a positive integer in a message");
  return o->via.u64;
}

static bool is_nil(weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  return o != NULL && o->type == MSGPACK_OBJECT_NIL;
}

/* workerData: N as a uint. */
static uint64_t worker_n(void) {
  return obj_uint(weft_worker_data());
}

/* --- Common owner-side plumbing ---------------------------------------- */

static void on_worker_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  DIE("worker error %s: %s", weft_err_name(err), text ? text : "");
}

static void on_worker_messageerror(weft_worker_t* w, int err) {
  (void)w;
  DIE("worker messageerror %s", weft_err_name(err));
}

static int exits_seen;
static void on_worker_exit(weft_worker_t* w, int code) {
  (void)w;
  exits_seen++;
  if (code != 0) DIE("worker exited with code %d", code);
}

/* Spawn one worker with `entry`, workerData = n, message handler `on_msg`,
 * optional online handler, and opts.flags. */
static weft_worker_t* spawn_flags(weft_loop_t* loop,
                                  weft_worker_entry_cb entry,
                                  uint64_t n,
                                  void (*on_msg)(weft_worker_t*, weft_msg_t*),
                                  void (*on_online)(weft_worker_t*),
                                  unsigned flags) {
  unsigned char data[9];
  weft_worker_opts_t opts;
  memset(&opts, 0, sizeof opts);
  opts.name = "bench-worker";
  opts.data = data;
  opts.data_len = pack_uint(data, n);
  opts.flags = flags;
  opts.events.message = on_msg;
  opts.events.online = on_online;
  opts.events.error = on_worker_error;
  opts.events.messageerror = on_worker_messageerror;
  opts.events.exit = on_worker_exit;
  weft_worker_t* w = NULL;
  CHECK(weft_worker_spawn(&w, loop, entry, &opts));
  return w;
}

static weft_worker_t* spawn(weft_loop_t* loop,
                            weft_worker_entry_cb entry,
                            uint64_t n,
                            void (*on_msg)(weft_worker_t*, weft_msg_t*),
                            void (*on_online)(weft_worker_t*)) {
  return spawn_flags(loop, entry, n, on_msg, on_online, 0);
}

/* Run the loop until the worker(s) are gone, then release everything. */
static void finish(weft_loop_t* loop, weft_worker_t** ws, int nw) {
  CHECK(weft_loop_run(loop));
  for (int i = 0; i < nw; i++) {
    if (!weft_worker_exited(ws[i])) DIE("loop returned before worker exit");
    weft_worker_free(ws[i]);
  }
  CHECK(weft_loop_free(loop));
}

/* --- 1. pingpong -------------------------------------------------------- */

/* Worker: decode each message (as Node's deserializer does) and echo it. */
static void echo_cb(weft_port_t* port, weft_msg_t* msg) {
  if (is_nil(msg)) {
    CHECK(weft_port_close(port));
    return;
  }
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) DIE("echo: not an array");
  size_t len = 0;
  const char* bytes = weft_msg_data(msg, &len);
  CHECK(weft_port_post(port, bytes, len));
}

static void echo_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), echo_cb));
}

static struct {
  uint64_t n, warm, got;
  double t0;
  double rtt_us;      /* The result, for "call". */
  const char* prefix; /* Of the metrics' names ("call." inside "call"). */
} pp = {.prefix = ""};

static void pp_on_message(weft_worker_t* w, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
    DIE("pingpong: bad echo");
  pp.got++;
  if (pp.got == pp.warm) pp.t0 = now_s();
  if (pp.got < pp.warm + pp.n) {
    CHECK(weft_worker_post(w, PING, sizeof PING));
    return;
  }
  double dt = now_s() - pp.t0;
  char metric[32];
  pp.rtt_us = dt / (double)pp.n * 1e6;
  snprintf(metric, sizeof metric, "%spingpong.rtt", pp.prefix);
  result(metric, pp.rtt_us, "us");
  snprintf(metric, sizeof metric, "%spingpong.rate", pp.prefix);
  result(metric, (double)pp.n / dt, "rt/s");
  CHECK(weft_worker_post(w, STOP, sizeof STOP));
}

static void bench_pingpong(uint64_t n) {
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  pp.n = n;
  pp.warm = n < 1000 ? n : 1000;
  weft_worker_t* w = spawn(loop, echo_entry, 0, pp_on_message, NULL);
  CHECK(weft_worker_post(w, PING, sizeof PING));
  finish(loop, &w, 1);
}

/* --- 1b. call ------------------------------------------------------------
 * A thread with no loop (main, here) makes blocking weft_worker_call()s to
 * a worker that answers each with the bytes it got, decoded first as the
 * echo of ping-pong decodes them; measured in the same run as ping-pong,
 * right after it, with their ratio. The worker's owner loop runs on a
 * thread of its own, so that the calling thread has none. */

static void answer_cb(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  if (is_nil(msg)) {
    weft_worker_exit(0);
    return;
  }
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) DIE("call: not an array");
  size_t len = 0;
  const char* bytes = weft_msg_data(msg, &len);
  CHECK(weft_msg_reply(msg, bytes, len));
}

static void answer_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), answer_cb));
}

static struct {
  _Atomic(weft_worker_t*) w; /* Set by the owner thread once spawned. */
} cl;

static void* call_owner(void* arg) {
  weft_loop_t* loop;
  (void)arg;
  CHECK(weft_loop_new(&loop));
  weft_worker_t* w = spawn(loop, answer_entry, 0, NULL, NULL);
  atomic_store(&cl.w, w);
  finish(loop, &w, 1); /* Until the worker exits (main posts STOP). */
  return NULL;
}

static void bench_call(uint64_t n) {
  pthread_t owner;
  weft_worker_t* w;
  uint64_t warm = n < 1000 ? n : 1000;
  double t0 = 0;
  pp.prefix = "call.";
  bench_pingpong(n);
  if (pthread_create(&owner, NULL, call_owner, NULL) != 0) DIE("call: thread");
  while ((w = atomic_load(&cl.w)) == NULL) sched_yield();
  if (weft_loop_current() != NULL) DIE("call: the caller has a loop");
  for (uint64_t i = 0; i < warm + n; i++) {
    weft_msg_t* reply = NULL;
    if (i == warm) t0 = now_s();
    CHECK(weft_worker_call(w, PING, sizeof PING, 5000, &reply));
    const msgpack_object* o = weft_msg_object(reply);
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
      DIE("call: bad reply");
    weft_msg_free(reply);
  }
  double rtt = (now_s() - t0) / (double)n * 1e6;
  result("call.rtt", rtt, "us");
  result("call.ratio", rtt / pp.rtt_us, "x");
  CHECK(weft_worker_post(w, STOP, sizeof STOP));
  pthread_join(owner, NULL);
}

/* --- 2. throughput ------------------------------------------------------ */

static struct {
  uint64_t n, seen, sum;
} tp_worker;

static void count_cb(weft_port_t* port, weft_msg_t* msg) {
  tp_worker.sum += obj_uint(weft_msg_object(msg));
  if (++tp_worker.seen == tp_worker.n) {
    unsigned char b[9];
    CHECK(weft_port_post(port, b, pack_uint(b, tp_worker.sum)));
    CHECK(weft_port_close(port));
  }
}

static void count_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  tp_worker.n = worker_n();
  CHECK(weft_port_on_message(weft_parent_port(), count_cb));
}

static struct {
  uint64_t n;
  double t0;
} tp;

static void tp_on_online(weft_worker_t* w) {
  tp.t0 = now_s();
  unsigned char b[9];
  for (uint64_t i = 0; i < tp.n; i++) CHECK(weft_worker_post(w, b, pack_uint(b, i)));
}

static void tp_on_message(weft_worker_t* w, weft_msg_t* msg) {
  (void)w;
  double dt = now_s() - tp.t0;
  uint64_t sum = obj_uint(weft_msg_object(msg));
  if (sum != tp.n * (tp.n - 1) / 2) DIE("throughput: wrong sum %" PRIu64, sum);
  result("throughput", (double)tp.n / dt, "msgs/s");
}

static void bench_throughput(uint64_t n) {
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  tp.n = n;
  weft_worker_t* w = spawn(loop, count_entry, n, tp_on_message, tp_on_online);
  finish(loop, &w, 1);
}

/* --- 3. copy1m ---------------------------------------------------------- */

/* Worker: ack each payload with its size (a small int). */
static void sink_cb(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o != NULL && o->type == MSGPACK_OBJECT_NIL) {
    CHECK(weft_port_close(port));
    return;
  }
  if (o == NULL || o->type != MSGPACK_OBJECT_BIN) DIE("copy1m: not a bin");
  unsigned char b[9];
  CHECK(weft_port_post(port, b, pack_uint(b, o->via.bin.size)));
}

static void sink_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), sink_cb));
}

#define COPY_WINDOW 8
#define COPY_WARM 16

static struct {
  unsigned char* payload; /* bin 32 header + 1 MiB */
  size_t len;
  uint64_t n, total, sent, acked;
  double t0;
} cp;

static void cp_post(weft_worker_t* w) {
  CHECK(weft_worker_post(w, cp.payload, cp.len));
  cp.sent++;
}

static void cp_on_message(weft_worker_t* w, weft_msg_t* msg) {
  if (obj_uint(weft_msg_object(msg)) != MiB) DIE("copy1m: bad ack");
  cp.acked++;
  if (cp.acked == COPY_WARM) cp.t0 = now_s();
  if (cp.sent < cp.total) cp_post(w);
  if (cp.acked == cp.total) {
    double dt = now_s() - cp.t0;
    result("copy1m", (double)cp.n * (double)MiB / dt / 1e9, "GB/s");
    CHECK(weft_worker_post(w, STOP, sizeof STOP));
  }
}

static void bench_copy1m(uint64_t n) {
  cp.len = 5 + MiB;
  cp.payload = malloc(cp.len);
  if (cp.payload == NULL) DIE("out of memory");
  cp.payload[0] = 0xc6; /* bin 32 */
  cp.payload[1] = (unsigned char)(MiB >> 24);
  cp.payload[2] = (unsigned char)(MiB >> 16);
  cp.payload[3] = (unsigned char)(MiB >> 8);
  cp.payload[4] = (unsigned char)MiB;
  for (size_t i = 0; i < MiB; i++) cp.payload[5 + i] = (unsigned char)(i * 31);
  cp.n = n;
  cp.total = COPY_WARM + n;

  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  weft_worker_t* w = spawn(loop, sink_entry, 0, cp_on_message, NULL);
  while (cp.sent < COPY_WINDOW && cp.sent < cp.total) cp_post(w);
  finish(loop, &w, 1);
  free(cp.payload);
}

/* --- 4. transfer -------------------------------------------------------- */

/* Take the buffer a message carries (its whole value is the placeholder). */
static weft_buffer_t* take_buffer(weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || weft_msg_ext_kind(o) != WEFT_EXT_BUFFER)
    DIE("transfer: message carries no buffer");
  weft_buffer_t* b = NULL;
  CHECK(weft_msg_take_buffer(msg, o, &b));
  return b;
}

/* A message whose value is `buf`, transferred. */
static weft_msg_t* buffer_msg(weft_buffer_t* buf) {
  weft_msg_t* m = NULL;
  CHECK(weft_msg_new(&m));
  CHECK(weft_msg_add_buffer(m, buf));
  return m;
}

/* Worker: send each buffer straight back, transferred. */
static void bounce_cb(weft_port_t* port, weft_msg_t* msg) {
  if (is_nil(msg)) {
    CHECK(weft_port_close(port));
    return;
  }
  weft_buffer_t* b = take_buffer(msg);
  weft_msg_t* m = buffer_msg(b);
  CHECK(weft_port_post_msg(port, &m));
  if (!weft_buffer_detached(b)) DIE("transfer: buffer not detached after post");
  weft_buffer_free(b);
}

static void bounce_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), bounce_cb));
}

static struct {
  size_t size;
  const char* metric;
  uint64_t n, warm, got;
  double t0;
} tr;

static void tr_send(weft_worker_t* w, weft_buffer_t* b) {
  weft_msg_t* m = buffer_msg(b);
  CHECK(weft_worker_post_msg(w, &m));
  weft_buffer_free(b); /* the handle; the bytes moved */
}

static void tr_on_message(weft_worker_t* w, weft_msg_t* msg) {
  weft_buffer_t* b = take_buffer(msg);
  if (weft_buffer_size(b) != tr.size) DIE("transfer: wrong size back");
  tr.got++;
  if (tr.got == tr.warm) tr.t0 = now_s();
  if (tr.got < tr.warm + tr.n) {
    tr_send(w, b);
    return;
  }
  double dt = now_s() - tr.t0;
  /* Two transfers per round trip. */
  result(tr.metric, dt / (2.0 * (double)tr.n) * 1e6, "us");
  weft_buffer_free(b);
  CHECK(weft_worker_post(w, STOP, sizeof STOP));
}

static void bench_transfer_one(size_t size, const char* metric, uint64_t n) {
  tr.size = size;
  tr.metric = metric;
  tr.n = n;
  tr.warm = n < 100 ? n : 100;
  tr.got = 0;
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  weft_worker_t* w = spawn(loop, bounce_entry, 0, tr_on_message, NULL);
  weft_buffer_t* b = NULL;
  CHECK(weft_buffer_new(&b, size));
  tr_send(w, b);
  finish(loop, &w, 1);
}

static void bench_transfer(uint64_t n) {
  bench_transfer_one(1024, "transfer.1k", n);
  bench_transfer_one(MiB, "transfer.1m", n);
  bench_transfer_one(64 * MiB, "transfer.64m", n);
}

/* --- 5. atomics --------------------------------------------------------- */

/* Slot 0: ping sequence (main writes); slot 1: pong sequence (worker). */
static void atomics_cb(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL || weft_msg_ext_kind(o) != WEFT_EXT_SHARED)
    DIE("atomics: message carries no shared buffer");
  weft_shared_t* sh = NULL;
  CHECK(weft_msg_take_shared(msg, o, &sh));
  uint64_t n = worker_n();
  unsigned char ready = 1;
  CHECK(weft_port_post(port, &ready, 1));
  for (uint64_t i = 1; i <= n; i++) {
    int32_t v;
    weft_wait_result_t r;
    for (;;) {
      CHECK(weft_atomic_load32(sh, 0, &v));
      if (v == (int32_t)i) break;
      CHECK(weft_atomic_wait32(sh, 0, (int32_t)(i - 1), -1, &r));
    }
    CHECK(weft_atomic_store32(sh, 1, (int32_t)i));
    CHECK(weft_atomic_notify32(sh, 1, 1, NULL));
  }
  weft_shared_unref(sh);
  CHECK(weft_port_close(port));
}

static void atomics_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), atomics_cb));
}

static struct {
  weft_shared_t* sh;
  uint64_t n, warm;
} at;

static void at_on_message(weft_worker_t* w, weft_msg_t* msg) {
  (void)w;
  (void)msg; /* "ready" */
  double t0 = 0;
  for (uint64_t i = 1; i <= at.warm + at.n; i++) {
    if (i == at.warm + 1) t0 = now_s();
    CHECK(weft_atomic_store32(at.sh, 0, (int32_t)i));
    CHECK(weft_atomic_notify32(at.sh, 0, 1, NULL));
    int32_t v;
    weft_wait_result_t r;
    for (;;) {
      CHECK(weft_atomic_load32(at.sh, 1, &v));
      if (v == (int32_t)i) break;
      CHECK(weft_atomic_wait32(at.sh, 1, (int32_t)(i - 1), -1, &r));
    }
  }
  double dt = now_s() - t0;
  result("atomics.rtt", dt / (double)at.n * 1e6, "us");
}

static void bench_atomics(uint64_t n) {
  at.n = n;
  at.warm = 1000;
  CHECK(weft_shared_new(&at.sh, 64));
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  weft_worker_t* w = spawn(loop, atomics_entry, at.warm + n, at_on_message, NULL);
  weft_msg_t* m = NULL;
  CHECK(weft_msg_new(&m));
  CHECK(weft_msg_add_shared(m, at.sh));
  CHECK(weft_worker_post_msg(w, &m));
  finish(loop, &w, 1);
  weft_shared_unref(at.sh);
}

/* --- 6. spawn ----------------------------------------------------------- */

static void empty_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

static void spawn_once(weft_loop_t* loop, unsigned flags) {
  weft_worker_t* w = spawn_flags(loop, empty_entry, 0, NULL, NULL, flags);
  CHECK(weft_loop_run(loop));
  if (!weft_worker_exited(w)) DIE("spawn: loop returned before the exit event");
  weft_worker_free(w);
}

/* spawn.each: the default, where a finished worker's thread may take the
 * next worker; spawn.fresh: WEFT_WORKER_FRESH_THREAD, a new OS thread for
 * every worker (what Node always does). */
static void bench_spawn(uint64_t n) {
  static const struct {
    const char* metric;
    unsigned flags;
  } modes[] = {{"spawn.each", 0}, {"spawn.fresh", WEFT_WORKER_FRESH_THREAD}};
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    for (int i = 0; i < 10; i++) spawn_once(loop, modes[m].flags); /* warm-up */
    exits_seen = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) spawn_once(loop, modes[m].flags);
    double dt = now_s() - t0;
    if ((uint64_t)exits_seen != n) DIE("spawn: %d exit events for %" PRIu64, exits_seen, n);
    result(modes[m].metric, dt / (double)n * 1e6, "us");
    if (m == 0) result("spawn.rate", (double)n / dt, "workers/s");
  }
  CHECK(weft_loop_free(loop));
}

/* --- 7. idle ------------------------------------------------------------ */

static void noop_cb(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg;
}

static void noop_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

/* arg non-NULL: also run a 1 ms interval that does nothing ("tick"). */
static void idle_entry(weft_loop_t* loop, void* arg) {
  CHECK(weft_port_on_message(weft_parent_port(), noop_cb));
  if (arg != NULL)
    CHECK(weft_set_interval(loop, 1, noop_task, NULL, NULL));
}

#define IDLE_MAX 64
static struct {
  weft_worker_t* ws[IDLE_MAX];
  int nw;
  bool tick;
  double wall0, cpu0;
} id;

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); /* all threads of the process */
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void idle_measured(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  double cpu = cpu_s() - id.cpu0;
  double wall = now_s() - id.wall0;
  char metric[32];
  snprintf(metric, sizeof metric, "%s%d.cpu", id.tick ? "tick" : "idle",
           id.nw);
  result(metric, cpu / wall * 100.0, "%core");
  for (int i = 0; i < id.nw; i++) CHECK(weft_worker_terminate(id.ws[i], NULL));
}

static void idle_settled(weft_loop_t* loop, void* arg) {
  (void)arg;
  id.cpu0 = cpu_s();
  id.wall0 = now_s();
  CHECK(weft_set_timeout(loop, 2000, idle_measured, NULL, NULL));
}

static void idle_on_exit(weft_worker_t* w, int code) {
  (void)w;
  if (code != 1) DIE("idle: terminated worker exited with code %d", code);
}

static void run_idle(uint64_t n, bool tick) {
  if (n == 0 || n > IDLE_MAX) DIE("idle: 1..%d workers", IDLE_MAX);
  id.nw = (int)n;
  id.tick = tick;
  weft_loop_t* loop;
  CHECK(weft_loop_new(&loop));
  for (int i = 0; i < id.nw; i++) {
    weft_worker_opts_t opts;
    memset(&opts, 0, sizeof opts);
    opts.name = "bench-idle";
    opts.arg = tick ? &id : NULL;
    opts.events.error = on_worker_error;
    opts.events.exit = idle_on_exit;
    CHECK(weft_worker_spawn(&id.ws[i], loop, idle_entry, &opts));
  }
  CHECK(weft_set_timeout(loop, 1000, idle_settled, NULL, NULL));
  CHECK(weft_loop_run(loop));
  for (int i = 0; i < id.nw; i++) weft_worker_free(id.ws[i]);
  CHECK(weft_loop_free(loop));
}

static void bench_idle(uint64_t n) {
  run_idle(n, false);
}

/* Like idle, but every worker runs a 1 ms interval: what a loop woken by
 * timers alone costs. */
static void bench_tick(uint64_t n) {
  run_idle(n, true);
}

/* --- main --------------------------------------------------------------- */

static const struct {
  const char* name;
  void (*fn)(uint64_t n);
  uint64_t n;
} WORKLOADS[] = {
    {"pingpong", bench_pingpong, 500000},
    {"call", bench_call, 200000},
    {"throughput", bench_throughput, 5000000},
    {"copy1m", bench_copy1m, 10000},
    {"transfer", bench_transfer, 20000},
    {"atomics", bench_atomics, 500000},
    {"spawn", bench_spawn, 2000},
    {"idle", bench_idle, 8},
    {"tick", bench_tick, 8},
};

int main(int argc, char** argv) {
  size_t nw = sizeof WORKLOADS / sizeof WORKLOADS[0];
  for (size_t i = 0; argc >= 2 && i < nw; i++) {
    if (strcmp(argv[1], WORKLOADS[i].name) != 0) continue;
    uint64_t n = argc >= 3 ? strtoull(argv[2], NULL, 10) : WORKLOADS[i].n;
    if (n == 0) DIE("N must be > 0");
    WORKLOADS[i].fn(n);
    return 0;
  }
  fprintf(stderr, "usage: %s <", argc > 0 ? argv[0] : "weft_bench");
  for (size_t i = 0; i < nw; i++) fprintf(stderr, "%s%s", i ? "|" : "", WORKLOADS[i].name);
  fprintf(stderr, "> [N]\n");
  return 2;
}
