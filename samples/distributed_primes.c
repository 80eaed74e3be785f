/* distributed_primes - count the primes below N on one thread, then on a
 * cluster of 3 nodes (processes joined through NATS), each counting its
 * chunks on its own worker pool; print each node's share, both times and
 * the speedup. One command starts the whole local cluster:
 *
 *   distributed_primes [N]                       (default 2000000)
 *
 * starts a nats-server on a free loopback port, then two more copies of
 * itself as nodes "n1" and "n2", and is node "n0" too:
 *
 *   distributed_primes --node NAME --servers URL (what it starts)
 *
 * Every node exports the name "count": a request [lo, hi] is counted on the
 * node's pool and answered with the count. The first process cuts [2, N)
 * into chunks and keeps a few requests in flight per node: a node that
 * answers gets the next chunk, so faster nodes take more. Everything here
 * is the API used between threads (weft_port_request, weft_msg_reply,
 * weft_pool_submit); only weft_node_join/_export/_port are new
 * (docs/node.md). Linux: the copies are started from /proc/self/exe. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, prctl */
#endif
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <weft/weft.h>

#define NODES     3
#define CHUNKS    96 /* Many more than threads: the fast take more. */
#define IN_FLIGHT 4  /* Requests outstanding per node. */

/* --- The work: trial division, as samples/parallel_primes.c ------------ */

static bool is_prime(int64_t n) {
  if (n < 2)
    return false;
  if (n % 2 == 0)
    return n == 2;
  for (int64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0)
      return false;
  return true;
}

static int64_t count_primes(int64_t lo, int64_t hi) {
  int64_t n = 0;
  for (int64_t i = lo; i < hi; i++)
    n += is_prime(i);
  return n;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* --- A node: "count" served by a pool ----------------------------------- */

/* The pool task: [lo, hi] -> the count. Runs on a pool thread. */
static int count_task(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  int64_t lo, hi;
  int err = weft_msg_read(arg, "II", &lo, &hi);
  (void)ctx;
  if (err != 0)
    return err;
  return weft_msg_pack(res, "I", count_primes(lo, hi));
}

/* The task settled (on the node's loop): its result is the reply. */
static void task_done(void* ctx, int status, weft_msg_t* result) {
  weft_reply_t* r = ctx;
  size_t len;
  const char* bytes;
  if (status != 0) {
    weft_reply_error(r, status);
    return;
  }
  bytes = weft_msg_data(result, &len);
  weft_reply_send(r, bytes, len);
}

static weft_pool_t* pool;
static weft_loop_t* loop;

/* A message on the exported port: a request [lo, hi] goes to the pool with
 * its reply handle; the post "quit" ends the node. */
static void on_count(weft_port_t* port, weft_msg_t* msg) {
  weft_reply_t* r = NULL;
  size_t len;
  const char* bytes = weft_msg_data(msg, &len);
  int err;
  (void)port;
  if (!weft_msg_is_request(msg)) {
    weft_loop_stop(loop);
    return;
  }
  weft_msg_take_reply(msg, &r);
  err = weft_pool_submit(pool, "count", bytes, len, task_done, r, NULL);
  if (err != 0)
    weft_reply_error(r, err);
}

/* The servers are gone for good: end the node. */
static void on_node_event(weft_node_t* node,
                          const weft_node_event_t* ev,
                          void* ctx) {
  (void)node;
  (void)ctx;
  if (ev->kind == WEFT_NODE_CLOSED)
    weft_loop_stop(loop);
}

/* Join as `name`, make the pool and export "count" on a port whose handler
 * hands the requests to it. */
static int node_start(const char* name,
                      const char* servers,
                      weft_node_t** node,
                      weft_port_t** in,
                      weft_port_t** out) {
  weft_node_opts_t o = {.servers = servers,
                        .name = name,
                        .cluster = "primes",
                        .on_event = on_node_event};
  weft_pool_opts_t po = {.name = name};
  int err;
  if ((err = weft_loop_new(&loop)) != 0 ||
      (err = weft_pool_new(&pool, &po)) != 0 ||
      (err = weft_pool_register(pool, "count", count_task, NULL)) != 0 ||
      (err = weft_node_join(loop, &o, node)) != 0 ||
      (err = weft_channel_new(loop, in, out)) != 0 ||
      (err = weft_port_on_message(*out, on_count)) != 0)
    return err;
  return weft_node_export(*node, "count", *in);
}

static void node_stop(weft_node_t* node, weft_port_t* in, weft_port_t* out) {
  weft_node_leave(node);
  weft_port_free(in);
  weft_port_free(out);
  weft_pool_close(pool);
  weft_loop_free(loop);
}

/* A node started by the first process: serve until "quit". */
static int node_main(const char* name, const char* servers) {
  weft_node_t* node = NULL;
  weft_port_t *in = NULL, *out = NULL;
  int err = node_start(name, servers, &node, &in, &out);
  if (err != 0) {
    fprintf(stderr, "node %s: %s\n", name, weft_strerror(err));
    return 1;
  }
  weft_loop_run(loop);
  node_stop(node, in, out);
  return 0;
}

/* --- The first process: the cluster and the split ----------------------- */

typedef struct {
  const char* name;
  weft_port_t* port;
  int chunks;
  int64_t primes;
} peer_t;

static peer_t peers[NODES] = {{.name = "n0"}, {.name = "n1"}, {.name = "n2"}};
static int64_t next_lo, end_n, chunk_len, total;
static int answered, chunks, failed;

static int request_range(peer_t* p, int64_t lo, int64_t hi, weft_reply_cb cb);

/* Send `p` the next chunk, if any is left. */
static void send_next(peer_t* p);

static void on_counted(void* ctx, int status, weft_msg_t* reply) {
  peer_t* p = ctx;
  int64_t n = 0;
  if (status != 0 || weft_msg_read(reply, "I", &n) != 0) {
    fprintf(stderr, "node %s: %s\n", p->name, weft_strerror(status));
    failed++;
  }
  p->chunks++;
  p->primes += n;
  total += n;
  if (++answered == chunks)
    weft_loop_stop(loop);
  else
    send_next(p);
}

static void send_next(peer_t* p) {
  int64_t lo = next_lo, hi = lo + chunk_len < end_n ? lo + chunk_len : end_n;
  if (lo >= end_n)
    return;
  next_lo = hi;
  if (request_range(p, lo, hi, on_counted) != 0) {
    failed++;
    if (++answered == chunks)
      weft_loop_stop(loop);
  }
}

static int request_range(peer_t* p, int64_t lo, int64_t hi, weft_reply_cb cb) {
  weft_msg_t* m = NULL;
  int err = weft_msg_new(&m);
  if (err == 0)
    err = weft_msg_pack(m, "II", lo, hi);
  if (err == 0)
    err = weft_port_request_msg(p->port, &m, 60000, cb, p, NULL);
  weft_msg_free(m); /* NULL once the request owns it. */
  return err;
}

/* Is every node up? Each is asked for an empty range until it answers
 * (WEFT_ENORESPONDERS until its export reached the server), for 10 s. */
static int nodes_up;
static double up_deadline;
static void probe(weft_loop_t* l, void* arg);

static void on_probe(void* ctx, int status, weft_msg_t* reply) {
  peer_t* p = ctx;
  (void)reply;
  if (status == 0) {
    if (++nodes_up == NODES)
      weft_loop_stop(loop);
  } else {
    weft_set_timeout(loop, 20, probe, p, NULL);
  }
}

static void probe(weft_loop_t* l, void* arg) {
  peer_t* p = arg;
  (void)l;
  if (now_ms() > up_deadline)
    weft_loop_stop(loop); /* Given up: nodes_up < NODES. */
  else if (request_range(p, 0, 0, on_probe) != 0)
    weft_set_timeout(loop, 20, probe, p, NULL);
}

/* Start `argv` as a child that dies with us (PR_SET_PDEATHSIG). */
static pid_t start(const char* const* argv, bool quiet) {
  pid_t pid;
  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (quiet) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execvp(argv[0], (char* const*)argv);
    _exit(127);
  }
  return pid;
}

/* nats-server on a free loopback port; waits until it accepts. */
static pid_t start_nats(char* url, size_t size) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  char port[16];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr*)&a, sizeof(a)); /* Port 0: a free one. */
  getsockname(fd, (struct sockaddr*)&a, &len);
  close(fd);
  snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
  snprintf(url, size, "nats://127.0.0.1:%s", port);
  const char* argv[] = {"nats-server", "-a", "127.0.0.1", "-p", port, NULL};
  pid_t pid = start(argv, true);
  for (int i = 0; pid > 0 && i < 500; i++) {
    struct timespec ts = {0, 10000000};
    fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = connect(fd, (struct sockaddr*)&a, sizeof(a)) == 0;
    close(fd);
    if (ok)
      return pid;
    if (waitpid(pid, NULL, WNOHANG) == pid)
      break;
    nanosleep(&ts, NULL);
  }
  fprintf(stderr,
          "distributed_primes: nats-server did not start "
          "(is it installed?)\n");
  if (pid > 0 && kill(pid, SIGKILL) == 0)
    waitpid(pid, NULL, 0);
  return -1;
}

/* Wait for `pid` at most 10 s, then kill it. Whether it exited in time,
 * with status 0 if `zero` (nats-server exits 1 on SIGTERM). */
static bool reap(pid_t pid, bool zero) {
  int status = 0;
  for (int i = 0; i < 1000; i++) {
    struct timespec ts = {0, 10000000};
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) && (!zero || WEXITSTATUS(status) == 0);
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return false;
}

static int cluster_main(int64_t n) {
  char url[64];
  weft_node_t* node = NULL;
  weft_port_t *in = NULL, *out = NULL;
  pid_t nats, kids[NODES - 1];
  double t0, t_serial, t_cluster;
  int64_t serial;
  bool clean = true;
  int err;

  printf("counting the primes below %" PRId64 " on %d nodes\n", n, NODES);
  t0 = now_ms();
  serial = count_primes(2, n);
  t_serial = now_ms() - t0;
  printf("one thread: %" PRId64 " primes\n", serial);
  printf("  time: %.1f ms\n", t_serial);

  /* The cluster: a NATS server, nodes n1 and n2, and this process as n0. */
  if ((nats = start_nats(url, sizeof(url))) < 0)
    return 1;
  for (int i = 1; i < NODES; i++) {
    const char* argv[] = {
        "/proc/self/exe", "--node", peers[i].name, "--servers", url, NULL,
    };
    kids[i - 1] = start(argv, false);
  }
  err = node_start(peers[0].name, url, &node, &in, &out);
  for (int i = 0; err == 0 && i < NODES; i++)
    err = weft_node_port(node, peers[i].name, "count", &peers[i].port);
  if (err != 0) {
    fprintf(stderr, "distributed_primes: %s\n", weft_strerror(err));
    return 1;
  }
  up_deadline = now_ms() + 10000;
  for (int i = 0; i < NODES; i++)
    probe(loop, &peers[i]);
  weft_loop_run(loop);
  if (nodes_up < NODES) {
    fprintf(stderr, "distributed_primes: %d of %d nodes up after 10 s\n",
            nodes_up, NODES);
    return 1; /* The children and the server die with us. */
  }
  printf("%d nodes up through %s\n", NODES, url);

  /* The split: IN_FLIGHT chunks per node to start, then one more per
   * answer, to the node that answered. */
  end_n = n;
  next_lo = 2;
  chunk_len = (n - 2 + CHUNKS - 1) / CHUNKS;
  chunks = (int)((n - 2 + chunk_len - 1) / chunk_len);
  t0 = now_ms();
  for (int k = 0; k < IN_FLIGHT; k++)
    for (int i = 0; i < NODES; i++)
      send_next(&peers[i]);
  weft_loop_run(loop);
  t_cluster = now_ms() - t0;

  for (int i = 0; i < NODES; i++)
    printf("  node %s: %2d chunks, %6" PRId64 " primes\n", peers[i].name,
           peers[i].chunks, peers[i].primes);
  printf("cluster: %" PRId64 " primes in %d chunks\n", total, chunks);
  printf("  time: %.1f ms\n", t_cluster);
  printf("results agree: %s\n", total == serial && !failed ? "yes" : "NO");
  printf("  speedup: %.2fx (%d nodes on one machine of %ld cores)\n",
         t_serial / t_cluster, NODES, sysconf(_SC_NPROCESSORS_ONLN));

  /* Stop: "quit" to the other nodes (a post, sent before we leave), then
   * our own node, the children and the server. */
  for (int i = 1; i < NODES; i++)
    weft_port_post(peers[i].port, "\xa4quit", 5);
  weft_node_flush(node, 5000);
  for (int i = 0; i < NODES; i++)
    weft_port_free(peers[i].port);
  node_stop(node, in, out);
  for (int i = 1; i < NODES; i++)
    clean = reap(kids[i - 1], true) && clean;
  kill(nats, SIGTERM);
  clean = reap(nats, false) && clean;
  printf("nodes and nats-server stopped: %s\n",
         clean ? "cleanly" : "NOT cleanly");
  return total == serial && !failed && clean ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 5 && strcmp(argv[1], "--node") == 0 &&
      strcmp(argv[3], "--servers") == 0)
    return node_main(argv[2], argv[4]);
  int64_t n = argc > 1 ? strtoll(argv[1], NULL, 10) : 2000000;
  if (argc > 2 || n < 3) {
    fprintf(stderr,
            "usage: distributed_primes [N >= 3]\n"
            "       distributed_primes --node NAME --servers URL\n");
    return 2;
  }
  return cluster_main(n);
}
