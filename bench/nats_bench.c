/* nats_bench.c - weft's remote ports against raw nats.c, the floor of the
 * engine they run on (issue 10): two processes on loopback through one
 * nats-server, 64-byte messages. bench/run.sh starts the nats-server and,
 * for each side and round, a server process and a client process:
 *
 *   nats_bench freeport                   a free loopback TCP port
 *   nats_bench serve raw|rawasap|weft URL the server process: prints
 *                                         "ready", then serves until killed
 *   nats_bench raw|rawasap|weft rtt|oneway|mib|all URL [N]
 *                                         the client: RESULT lines
 *   nats_bench dpool URL [N]              the distributed pool over 1, 2
 *                                         and 3 serving nodes (below)
 *
 * raw: a nats.c connection on each side. The server subscribes to
 * "bench.echo" and answers each request with its own payload
 * (natsConnection_Publish on the reply subject); a message without a reply
 * subject is counted. The client times natsConnection_Request (round
 * trip) and natsConnection_Publish (one-way).
 * weft: a node on each side. The server exports "echo", a port whose
 * handler (on the server's loop) answers each request with its own bytes
 * (weft_msg_reply) and counts posts. The client gets the port with
 * weft_node_port and times weft_port_call (round trip, blocking the
 * calling thread as natsConnection_Request does) and weft_port_post.
 * Both: the request "count" (the msgpack string) is answered with the
 * number of posts counted since the last one.
 *
 * Workloads (same parameters for both sides):
 *   rtt     64-byte request/reply, N (3,000) round trips after 500 of
 *           warm-up: median and p99
 *   oneway  N (500,000) 64-byte posts (after a tenth of that), then
 *           one "count" request, the end marker (the server has every
 *           post when it answers: one connection, one subject, in order):
 *           posts received per second (the server's count over the time
 *           from the first post to the count's answer), posts sent per
 *           second, and the posts lost. A count request lost with the
 *           posts is asked again after 1 s (oneway_marker_retries): that
 *           second counts in the time, as a sender that must know would
 *           wait it
 *   mib     1 MiB request/reply (the payload is 1 MiB), N (50) after 5
 *           of warm-up: median
 *
 * rawasap: raw with natsOptions_SetSendAsap on both connections (every
 * publish written at once, no flusher wait): the engine's latency floor.
 *
 * zmq (when built with libzmq, WEFT_BENCH_ZMQ): ZeroMQ, brokerless (no
 * server between the two processes, as Erlang distribution and Node's fork
 * IPC): the server binds a REP socket on the NATS URL's port + 1 (round
 * trips and "count") and a PULL socket on port + 2 (posts); the client
 * uses REQ and PUSH (ZeroMQ's own batching: PUSH queues up to its high
 * water mark, 1,000 by default, then blocks the sender: nothing is lost).
 *
 * Metrics: nats.<side>.rtt, .rtt_p99 (us), .oneway, .oneway_sent
 * (msgs/s), .oneway_lost (posts the server never counted: nats.c drops
 * the messages of a subscription that falls 65,536 behind, a slow
 * consumer), .mib (us). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime */
#endif
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <weft/weft.h>
#ifdef WEFT_BENCH_ZMQ
#include <zmq.h>
#endif

#define SUBJECT           "bench.echo"
#define MSG_LEN           64
#define MIB               ((size_t)1 << 20)
#define COUNT_REQ         "\245count" /* The msgpack string "count" (0xa5). */
#define COUNT_LEN         6
#define MARKER_TIMEOUT_MS 1000 /* Then the count is asked again. */

#define DIE(...)                                 \
  do {                                           \
    fprintf(stderr, "nats_bench: " __VA_ARGS__); \
    fputc('\n', stderr);                         \
    exit(1);                                     \
  } while (0)
#define NATS_CHECK(expr)                            \
  do {                                              \
    natsStatus s_ = (expr);                         \
    if (s_ != NATS_OK)                              \
      DIE("%s: %s", #expr, natsStatus_GetText(s_)); \
  } while (0)
#define WEFT_CHECK(expr)                        \
  do {                                          \
    int rc_ = (expr);                           \
    if (rc_ != 0)                               \
      DIE("%s: %s", #expr, weft_err_name(rc_)); \
  } while (0)

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static void result(const char* side,
                   const char* metric,
                   double v,
                   const char* unit) {
  printf("RESULT nats.%s.%s %.4g %s\n", side, metric, v, unit);
  fflush(stdout);
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/* A msgpack bin of exactly `len` bytes in all (header included), so that
 * both sides carry the same bytes: 64 for the small messages, 1 MiB for
 * the big one. */
static char* payload(size_t len) {
  char* p = malloc(len);
  if (p == NULL)
    DIE("out of memory");
  memset(p, 'x', len);
  if (len < 256 + 2) {
    p[0] = (char)0xc4;
    p[1] = (char)(len - 2);
  } else {
    uint32_t n = htonl((uint32_t)(len - 5));
    p[0] = (char)0xc6;
    memcpy(p + 1, &n, 4);
  }
  return p;
}

/* The answer to "count": a msgpack uint64. */
static void pack_count(char out[9], uint64_t n) {
  out[0] = (char)0xcf;
  for (int i = 0; i < 8; i++)
    out[1 + i] = (char)(n >> (56 - 8 * i));
}

static uint64_t unpack_count(const char* b, size_t len) {
  uint64_t n = 0;
  if (len != 9 || (unsigned char)b[0] != 0xcf)
    DIE("bad count reply (%zu bytes)", len);
  for (int i = 0; i < 8; i++)
    n = n << 8 | (unsigned char)b[1 + i];
  return n;
}

/* One client: the three calls both sides have. */
typedef struct {
  const char* side;
  void (*call)(const char* data, size_t len); /* A round trip. */
  void (*post)(const char* data, size_t len); /* One-way. */
  /* The end marker: false if it timed out (lost: see oneway). */
  bool (*count)(uint64_t* out);
} client_t;

static void run_rtt(const client_t* c, int n) {
  char* msg = payload(MSG_LEN);
  double* t = malloc(sizeof(double) * (size_t)n);
  if (t == NULL)
    DIE("out of memory");
  for (int i = 0; i < 500; i++)
    c->call(msg, MSG_LEN);
  for (int i = 0; i < n; i++) {
    double t0 = now_us();
    c->call(msg, MSG_LEN);
    t[i] = now_us() - t0;
  }
  qsort(t, (size_t)n, sizeof(double), cmp_double);
  result(c->side, "rtt", t[n / 2], "us");
  result(c->side, "rtt_p99", t[(size_t)n * 99 / 100], "us");
  free(t);
  free(msg);
}

/* Ask for the count until it comes: the request itself may be dropped
 * with the posts before it when the receiver falls behind. */
static uint64_t count(const client_t* c, int* retries) {
  uint64_t n = 0;
  for (int i = 0; i < 30; i++) {
    if (c->count(&n))
      return n;
    ++*retries;
  }
  DIE("%s: no answer to 30 count requests", c->side);
}

static void run_oneway(const client_t* c, int n) {
  char* msg = payload(MSG_LEN);
  uint64_t got;
  double t0;
  int retries = 0;
  /* Warm-up: a tenth, and the counter back to 0. */
  for (int i = 0; i < n / 10; i++)
    c->post(msg, MSG_LEN);
  count(c, &retries);
  retries = 0;
  t0 = now_us();
  for (int i = 0; i < n; i++)
    c->post(msg, MSG_LEN);
  got = count(c, &retries);
  t0 = (now_us() - t0) * 1e-6;
  result(c->side, "oneway", (double)got / t0, "msgs/s");
  result(c->side, "oneway_sent", (double)n / t0, "msgs/s");
  /* More than sent: a warm-up post counted late (the zmq side's count
   * waits for its puller to go quiet, 2 ms); not a loss. */
  result(c->side, "oneway_lost",
         got < (uint64_t)n ? (double)((uint64_t)n - got) : 0.0, "msgs");
  result(c->side, "oneway_marker_retries", retries, "requests");
  free(msg);
}

static void run_mib(const client_t* c, int n) {
  char* msg = payload(MIB);
  double* t = malloc(sizeof(double) * (size_t)n);
  if (t == NULL)
    DIE("out of memory");
  for (int i = 0; i < 5; i++)
    c->call(msg, MIB);
  for (int i = 0; i < n; i++) {
    double t0 = now_us();
    c->call(msg, MIB);
    t[i] = now_us() - t0;
  }
  qsort(t, (size_t)n, sizeof(double), cmp_double);
  result(c->side, "mib", t[n / 2], "us");
  free(t);
  free(msg);
}

/* --- raw nats.c ---------------------------------------------------------- */

static natsConnection* nc;
static bool asap; /* Side "rawasap". */

static natsConnection* raw_connect(const char* url) {
  natsOptions* o = NULL;
  natsConnection* c = NULL;
  NATS_CHECK(natsOptions_Create(&o));
  NATS_CHECK(natsOptions_SetURL(o, url));
  /* rawasap: publish at once from the publishing thread instead of
   * through nats.c's flusher thread, which waits about 1 ms to batch
   * (natsConnection_Request always sends at once). */
  if (asap)
    NATS_CHECK(natsOptions_SetSendAsap(o, true));
  NATS_CHECK(natsConnection_Connect(&c, o));
  natsOptions_Destroy(o);
  return c;
}

static uint64_t raw_counted; /* The subscription's one delivery thread. */

static void raw_on_msg(natsConnection* c,
                       natsSubscription* sub,
                       natsMsg* m,
                       void* ctx) {
  const char* reply = natsMsg_GetReply(m);
  const char* data = natsMsg_GetData(m);
  int len = natsMsg_GetDataLength(m);
  (void)sub;
  (void)ctx;
  if (reply == NULL) {
    raw_counted++;
  } else if (len == COUNT_LEN && memcmp(data, COUNT_REQ, COUNT_LEN) == 0) {
    char b[9];
    pack_count(b, raw_counted);
    raw_counted = 0;
    natsConnection_Publish(c, reply, b, 9);
  } else {
    natsConnection_Publish(c, reply, data, len);
  }
  natsMsg_Destroy(m);
}

static void raw_serve(const char* url) {
  natsSubscription* sub = NULL;
  nc = raw_connect(url);
  NATS_CHECK(natsConnection_Subscribe(&sub, nc, SUBJECT, raw_on_msg, NULL));
  /* nats.c's default pending limits, as a weft node's subscriptions. */
  NATS_CHECK(natsConnection_Flush(nc));
  printf("ready\n");
  fflush(stdout);
  for (;;)
    pause();
}

static void raw_call(const char* data, size_t len) {
  natsMsg* r = NULL;
  NATS_CHECK(natsConnection_Request(&r, nc, SUBJECT, data, (int)len, 10000));
  if ((size_t)natsMsg_GetDataLength(r) != len)
    DIE("raw: a reply of %d bytes for %zu", natsMsg_GetDataLength(r), len);
  natsMsg_Destroy(r);
}

static void raw_post(const char* data, size_t len) {
  NATS_CHECK(natsConnection_Publish(nc, SUBJECT, data, (int)len));
}

static bool raw_count(uint64_t* n) {
  natsMsg* r = NULL;
  natsStatus s = natsConnection_Request(&r, nc, SUBJECT, COUNT_REQ, COUNT_LEN,
                                        MARKER_TIMEOUT_MS);
  if (s == NATS_TIMEOUT)
    return false;
  NATS_CHECK(s);
  *n = unpack_count(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r));
  natsMsg_Destroy(r);
  return true;
}

/* --- weft ----------------------------------------------------------------- */

static weft_port_t* echo;
static uint64_t weft_counted; /* The server's loop only. */

static weft_node_t* weft_join(weft_loop_t* loop,
                              const char* url,
                              const char* name) {
  weft_node_opts_t o = {.servers = url, .name = name, .cluster = "bench"};
  weft_node_t* node = NULL;
  WEFT_CHECK(weft_node_join(loop, &o, &node));
  return node;
}

static void weft_on_msg(weft_port_t* p, weft_msg_t* m) {
  size_t len;
  const char* data = weft_msg_data(m, &len);
  (void)p;
  if (!weft_msg_is_request(m)) {
    weft_counted++;
  } else if (len == COUNT_LEN && memcmp(data, COUNT_REQ, COUNT_LEN) == 0) {
    char b[9];
    pack_count(b, weft_counted);
    weft_counted = 0;
    weft_msg_reply(m, b, 9);
  } else {
    weft_msg_reply(m, data, len);
  }
}

static void weft_serve(const char* url) {
  weft_loop_t* loop = NULL;
  weft_port_t *in = NULL, *out = NULL;
  weft_node_t* node;
  WEFT_CHECK(weft_loop_new(&loop));
  node = weft_join(loop, url, "srv");
  WEFT_CHECK(weft_channel_new(loop, &in, &out));
  WEFT_CHECK(weft_port_on_message(out, weft_on_msg));
  WEFT_CHECK(weft_node_export(node, "echo", in));
  WEFT_CHECK(weft_node_flush(node, 10000));
  printf("ready\n");
  fflush(stdout);
  weft_loop_run(loop); /* Until killed. */
}

static void weft_call(const char* data, size_t len) {
  weft_msg_t* r = NULL;
  size_t n;
  WEFT_CHECK(weft_port_call(echo, data, len, 10000, &r));
  weft_msg_data(r, &n);
  if (n != len)
    DIE("weft: a reply of %zu bytes for %zu", n, len);
  weft_msg_free(r);
}

static void weft_post(const char* data, size_t len) {
  WEFT_CHECK(weft_port_post(echo, data, len));
}

static bool weft_count(uint64_t* n) {
  weft_msg_t* r = NULL;
  size_t len;
  const char* b;
  int err = weft_port_call(echo, COUNT_REQ, COUNT_LEN, MARKER_TIMEOUT_MS, &r);
  if (err == WEFT_ETIMEDOUT)
    return false;
  WEFT_CHECK(err);
  b = weft_msg_data(r, &len);
  *n = unpack_count(b, len);
  weft_msg_free(r);
  return true;
}

/* --- ZeroMQ (brokerless) ------------------------------------------------- */

#ifdef WEFT_BENCH_ZMQ
static void* zctx;
static void *zreq, *zpush;

#define ZMQ_CHECK(expr)                                  \
  do {                                                   \
    if ((expr) < 0)                                      \
      DIE("%s: %s", #expr, zmq_strerror(zmq_errno()));   \
  } while (0)

/* tcp://127.0.0.1:<the NATS URL's port + k> */
static void zmq_endpoint(const char* url, int k, char* out, size_t n) {
  const char* colon = strrchr(url, ':');
  if (colon == NULL)
    DIE("zmq: no port in %s", url);
  snprintf(out, n, "tcp://127.0.0.1:%d", atoi(colon + 1) + k);
}

/* One thread answers REP (round trips, count), another counts PULL. */
static _Atomic uint64_t zmq_counted;

static void* zmq_pull_main(void* arg) {
  void* pull = arg;
  char b[MSG_LEN];
  for (;;) {
    if (zmq_recv(pull, b, sizeof(b), 0) >= 0)
      zmq_counted++;
  }
  return NULL;
}

static void zmq_serve(const char* url) {
  char ep[64];
  void *rep, *pull;
  pthread_t th;
  zmq_msg_t m;
  zctx = zmq_ctx_new();
  rep = zmq_socket(zctx, ZMQ_REP);
  pull = zmq_socket(zctx, ZMQ_PULL);
  zmq_endpoint(url, 1, ep, sizeof(ep));
  ZMQ_CHECK(zmq_bind(rep, ep));
  zmq_endpoint(url, 2, ep, sizeof(ep));
  ZMQ_CHECK(zmq_bind(pull, ep));
  if (pthread_create(&th, NULL, zmq_pull_main, pull) != 0)
    DIE("zmq: thread");
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    zmq_msg_init(&m);
    ZMQ_CHECK(zmq_msg_recv(&m, rep, 0));
    if (zmq_msg_size(&m) == COUNT_LEN &&
        memcmp(zmq_msg_data(&m), COUNT_REQ, COUNT_LEN) == 0) {
      char b[9];
      /* The posts before the count came on another socket: wait until the
       * puller has them all (it is ahead or at most a queue behind). */
      uint64_t n = zmq_counted, last;
      do {
        last = n;
        usleep(2000);
        n = zmq_counted;
      } while (n != last);
      pack_count(b, n);
      zmq_counted -= n;
      zmq_msg_close(&m);
      ZMQ_CHECK(zmq_send(rep, b, 9, 0));
    } else {
      ZMQ_CHECK(zmq_msg_send(&m, rep, 0)); /* Echo: the message moves. */
    }
  }
}

static void zmq_client(const char* url) {
  char ep[64];
  zctx = zmq_ctx_new();
  zreq = zmq_socket(zctx, ZMQ_REQ);
  zpush = zmq_socket(zctx, ZMQ_PUSH);
  zmq_endpoint(url, 1, ep, sizeof(ep));
  ZMQ_CHECK(zmq_connect(zreq, ep));
  zmq_endpoint(url, 2, ep, sizeof(ep));
  ZMQ_CHECK(zmq_connect(zpush, ep));
}

static void zmq_call(const char* data, size_t len) {
  zmq_msg_t m;
  ZMQ_CHECK(zmq_send(zreq, data, len, 0));
  zmq_msg_init(&m);
  ZMQ_CHECK(zmq_msg_recv(&m, zreq, 0));
  if (zmq_msg_size(&m) != len)
    DIE("zmq: a reply of %zu bytes for %zu", zmq_msg_size(&m), len);
  zmq_msg_close(&m);
}

static void zmq_post(const char* data, size_t len) {
  ZMQ_CHECK(zmq_send(zpush, data, len, 0));
}

static bool zmq_count(uint64_t* n) {
  char b[16];
  int got;
  ZMQ_CHECK(zmq_send(zreq, COUNT_REQ, COUNT_LEN, 0));
  got = zmq_recv(zreq, b, sizeof(b), 0);
  ZMQ_CHECK(got);
  *n = unpack_count(b, (size_t)got);
  return true;
}
#endif

/* --- the distributed pool ------------------------------------------------- */

/* dpool: tasks through a remote pool (weft/pool_node.h) served by 1, 2 and
 * 3 nodes, each with a pool of DPOOL_WORKERS workers, all in this process
 * (one NATS connection per node). A task sleeps DPOOL_TASK_MS: it holds
 * its worker as a task waiting for I/O or a device does, without the CPU,
 * so what is measured is how the taking of tasks scales with nodes, not
 * how many cores the host has. N tasks (default 2,000) are submitted at
 * once with a callback; the rate is N over the time to the last one.
 * Metrics: nats.dpool.nodes<k> (tasks/s) and .nodes<k>_ideal (k * workers
 * / task time). */
#define DPOOL_WORKERS 2
#define DPOOL_TASK_MS 10

static int dpool_task(weft_task_ctx_t* ctx, weft_msg_t* arg,
                      weft_msg_t* result) {
  struct timespec ts = {0, DPOOL_TASK_MS * 1000000L};
  (void)ctx;
  (void)arg;
  (void)result;
  nanosleep(&ts, NULL);
  return 0;
}

static int dpool_done_n;

static void dpool_done(void* ctx, int status, weft_msg_t* result) {
  weft_loop_t* loop = ctx;
  (void)result;
  if (status != 0)
    DIE("dpool: a task failed: %s", weft_err_name(status));
  if (--dpool_done_n == 0)
    weft_loop_stop(loop);
}

static void run_dpool(const char* url, int n) {
  weft_loop_t* loop = NULL;
  weft_node_t *cli, *srv[3];
  weft_pool_t* pools[3];
  weft_pool_server_t* servers[3];
  weft_pool_t* rp = NULL;
  weft_pool_remote_opts_t ro = {.max_queue = SIZE_MAX};
  char name[16], metric[32];
  WEFT_CHECK(weft_loop_new(&loop));
  cli = weft_join(loop, url, "dpool-cli");
  WEFT_CHECK(weft_pool_new_remote(&rp, cli, "bench", &ro));
  WEFT_CHECK(weft_node_flush(cli, 10000));
  for (int k = 0; k < 3; k++) {
    weft_pool_opts_t po = {.max_threads = DPOOL_WORKERS,
                           .min_threads = DPOOL_WORKERS};
    double t0, t1;
    snprintf(name, sizeof(name), "dpool-%d", k);
    WEFT_CHECK(weft_pool_new(&pools[k], &po));
    WEFT_CHECK(weft_pool_register(pools[k], "sleep", dpool_task, NULL));
    srv[k] = weft_join(loop, url, name);
    WEFT_CHECK(weft_pool_serve(srv[k], pools[k], "bench", &servers[k]));
    WEFT_CHECK(weft_node_flush(srv[k], 10000));
    dpool_done_n = n;
    t0 = now_us();
    for (int i = 0; i < n; i++)
      WEFT_CHECK(
          weft_pool_submit(rp, "sleep", NULL, 0, dpool_done, loop, NULL));
    weft_loop_run(loop);
    t1 = now_us();
    snprintf(metric, sizeof(metric), "nodes%d", k + 1);
    result("dpool", metric, n / ((t1 - t0) / 1e6), "tasks/s");
    snprintf(metric, sizeof(metric), "nodes%d_ideal", k + 1);
    result("dpool", metric, (k + 1) * DPOOL_WORKERS * 1000.0 / DPOOL_TASK_MS,
           "tasks/s");
  }
  WEFT_CHECK(weft_pool_close(rp));
  WEFT_CHECK(weft_node_leave(cli));
  for (int k = 0; k < 3; k++) {
    WEFT_CHECK(weft_pool_unserve(servers[k]));
    WEFT_CHECK(weft_node_leave(srv[k]));
    WEFT_CHECK(weft_pool_close(pools[k]));
  }
  weft_loop_run(loop);
  weft_loop_free(loop);
}

/* ------------------------------------------------------------------------ */

static int free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr*)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr*)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* The sides this build has (bench/run.sh reads it for zmq). */
#ifdef WEFT_BENCH_ZMQ
#define SIDES "raw|rawasap|weft|zmq"
#else
#define SIDES "raw|rawasap|weft"
#endif

static void usage(void) {
  fprintf(stderr,
          "usage: nats_bench freeport\n"
          "       nats_bench serve " SIDES " URL\n"
          "       nats_bench " SIDES " rtt|oneway|mib|all URL [N]\n"
          "       nats_bench dpool URL [N]\n");
  exit(2);
}

int main(int argc, char** argv) {
  client_t c;
  const char* wl;
  int n;
  weft_loop_t* loop = NULL;
  weft_node_t* node = NULL;

  if (argc == 2 && strcmp(argv[1], "freeport") == 0) {
    printf("%d\n", free_port());
    return 0;
  }
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "dpool") == 0) {
    run_dpool(argv[2], argc == 4 ? atoi(argv[3]) : 2000);
    nats_Close();
    return 0;
  }
  if (argc < 4)
    usage();
  asap = strcmp(argv[1], "rawasap") == 0 || strcmp(argv[2], "rawasap") == 0;
  if (argc == 4 && strcmp(argv[1], "serve") == 0) {
    if (strcmp(argv[2], "raw") == 0 || asap)
      raw_serve(argv[3]);
    else if (strcmp(argv[2], "weft") == 0)
      weft_serve(argv[3]);
#ifdef WEFT_BENCH_ZMQ
    else if (strcmp(argv[2], "zmq") == 0)
      zmq_serve(argv[3]);
#endif
    usage();
  }
  if (argc < 4 || argc > 5)
    usage();
  wl = argv[2];
  n = argc > 4 ? atoi(argv[4]) : 0;
  if (strcmp(argv[1], "raw") == 0 || asap) {
    c = (client_t){argv[1], raw_call, raw_post, raw_count};
    nc = raw_connect(argv[3]);
  } else if (strcmp(argv[1], "weft") == 0) {
    c = (client_t){"weft", weft_call, weft_post, weft_count};
    WEFT_CHECK(weft_loop_new(&loop));
    node = weft_join(loop, argv[3], "cli");
    WEFT_CHECK(weft_node_port(node, "srv", "echo", &echo));
#ifdef WEFT_BENCH_ZMQ
  } else if (strcmp(argv[1], "zmq") == 0) {
    c = (client_t){"zmq", zmq_call, zmq_post, zmq_count};
    zmq_client(argv[3]);
#endif
  } else {
    usage();
  }
  if (strcmp(wl, "rtt") == 0 || strcmp(wl, "all") == 0)
    run_rtt(&c, n > 0 ? n : 3000);
  if (strcmp(wl, "oneway") == 0 || strcmp(wl, "all") == 0)
    run_oneway(&c, n > 0 ? n : 500000);
  if (strcmp(wl, "mib") == 0 || strcmp(wl, "all") == 0)
    run_mib(&c, n > 0 ? n : 50);

  if (node != NULL) {
    weft_port_free(echo);
    WEFT_CHECK(weft_node_leave(node));
    weft_loop_free(loop);
  } else if (nc != NULL) {
    natsConnection_Destroy(nc);
  }
#ifdef WEFT_BENCH_ZMQ
  if (zctx != NULL) {
    int linger = 0;
    zmq_setsockopt(zreq, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(zpush, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(zreq);
    zmq_close(zpush);
    zmq_ctx_term(zctx);
  }
#endif
  nats_Close();
  return 0;
}
