/* test_cluster.c - Node's cluster: the test process is the primary, the
 * children run test/cluster_app (CLUSTER_APP, its path from CMake). TCP
 * requests are made by blocking jobs on the loop's threadpool
 * (weft_queue_work), each on a fresh connection, so the loop keeps serving
 * the cluster's events meanwhile. */
#include <criterion/criterion.h>

#include <errno.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "support.h"

#ifdef WEFT_FAILPOINTS
#include "internal.h" /* weft__failpoint_arm() */
#endif

TestSuite(cluster, .timeout = 120);

#define MAXW 16

typedef struct {
  weft_loop_t* loop;
  weft_cluster_t* c;
  int forks;
  int onlines;
  int listenings;
  int disconnects;
  int exits;
  int errors;
  int last_error;
  int port;
  unsigned ids[MAXW];     /* By fork order. */
  int codes[MAXW];        /* Exit code by id. */
  int signals[MAXW];      /* Exit signal by id. */
  bool disconnected[MAXW]; /* Disconnect came before exit, by id. */
  int listen_port[MAXW];  /* By id. */
  int step;
  int count;
  int want_exits;
  bool closed;
  uint64_t t0;
  /* Messages. */
  void (*on_message)(weft_cluster_worker_t* w, weft_msg_t* m);
  void (*on_online)(weft_cluster_worker_t* w);
  void (*on_listening)(weft_cluster_worker_t* w);
  void (*on_exit)(weft_cluster_worker_t* w, int code, int sig);
} ctx_t;

static ctx_t X;

static void ev_fork(weft_cluster_worker_t* w) {
  unsigned id = weft_cluster_worker_id(w);
  cr_assert(id > 0 && id < MAXW, "id %u", id);
  cr_assert(weft_cluster_worker_pid(w) > 0);
  cr_assert(weft_cluster_worker_connected(w));
  X.ids[X.forks++] = id;
}

static void ev_online(weft_cluster_worker_t* w) {
  X.onlines++;
  if (X.on_online != NULL)
    X.on_online(w);
}

static void ev_listening(weft_cluster_worker_t* w, const char* host, int port) {
  cr_assert(strncmp(host, "127.0.0.", 8) == 0, "host %s", host);
  cr_assert(port > 0);
  X.listen_port[weft_cluster_worker_id(w)] = port;
  X.listenings++;
  if (X.port == 0)
    X.port = port;
  if (X.on_listening != NULL)
    X.on_listening(w);
}

static void ev_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  if (X.on_message != NULL)
    X.on_message(w, m);
}

static void ev_disconnect(weft_cluster_worker_t* w) {
  X.disconnects++;
  X.disconnected[weft_cluster_worker_id(w)] = true;
  cr_assert(!weft_cluster_worker_connected(w));
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "i", 1), WEFT_ECLOSED);
}

static void ev_exit(weft_cluster_worker_t* w, int code, int sig) {
  unsigned id = weft_cluster_worker_id(w);
  X.exits++;
  X.codes[id] = code;
  X.signals[id] = sig;
  /* Always after the disconnect. */
  cr_assert(X.disconnected[id], "exit of %u before its disconnect", id);
  cr_assert_eq(weft_cluster_worker_pid(w), 0);
  cr_assert_eq(weft_cluster_worker_kill(w, 0), WEFT_ENOTSTARTED);
  if (X.on_exit != NULL)
    X.on_exit(w, code, sig);
}

static void ev_error(weft_cluster_t* c, weft_cluster_worker_t* w, int err) {
  (void)w;
  cr_assert_eq(c, X.c);
  X.errors++;
  X.last_error = err;
}

static void on_closed(weft_cluster_t* c) {
  cr_assert_eq(c, X.c);
  X.closed = true;
}

/* A cluster running cluster_app with `mode` ("" for the default). */
static void start(const char* port, const char* mode, weft_cluster_opts_t* o) {
  static char* argv[5];
  weft_cluster_opts_t def = {0};
  int err;
  memset(&X, 0, sizeof(X));
  X.loop = new_loop();
  if (o == NULL)
    o = &def;
  argv[0] = (char*)CLUSTER_APP;
  argv[1] = (char*)"127.0.0.1";
  argv[2] = (char*)port;
  argv[3] = mode[0] != '\0' ? (char*)mode : NULL;
  argv[4] = NULL;
  o->exec = CLUSTER_APP;
  o->argv = argv;
  o->events.fork = ev_fork;
  o->events.online = ev_online;
  o->events.listening = ev_listening;
  o->events.message = ev_message;
  o->events.disconnect = ev_disconnect;
  o->events.exit = ev_exit;
  o->events.error = ev_error;
  err = weft_cluster_new(&X.c, X.loop, o);
  cr_assert_eq(err, 0, "weft_cluster_new: %s", weft_err_name(err));
}

static weft_cluster_worker_t* fork1(void) {
  weft_cluster_worker_t* w = NULL;
  int err = weft_cluster_fork(X.c, &w);
  cr_assert_eq(err, 0, "fork: %s", weft_err_name(err));
  cr_assert_not_null(w);
  return w;
}

static void end(void) {
  run_loop(X.loop);
  cr_assert(X.closed, "the cluster's close callback did not run");
  free_loop(X.loop);
}

/* --- TCP requests from the threadpool ---------------------------------- */

typedef struct {
  int port;
  const char* line;
  int pid; /* The answer, or a negative errno. */
} job_t;

/* A socket connected to 127.0.0.1:port, with a 10 s read timeout: the
 * descriptor, or -1 (no socket) or -2 (no connection). */
static int connect_loopback(int port) {
  struct sockaddr_in a;
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr*)&a, sizeof(a)) != 0) {
    close(fd);
    return -2;
  }
  return fd;
}

/* Read `fd` to its end and close it: the pid the child answered, -3
 * (closed without an answer, or reset) or -4 (timed out: not closed by
 * the server). */
static int read_pid(int fd) {
  char buf[32];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      close(fd);
      return -4;
    }
    if (n <= 0)
      break; /* The end, or a reset (closed with the line unread). */
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  return len > 1 && buf[len - 1] == '\n' ? atoi(buf) : -3;
}

static void request(void* arg) {
  job_t* j = arg;
  int fd = connect_loopback(j->port);
  size_t n = strlen(j->line);
  if (fd < 0) {
    j->pid = fd;
    return;
  }
  if (write(fd, j->line, n) != (ssize_t)n) {
    j->pid = -2;
    close(fd);
    return;
  }
  j->pid = read_pid(fd);
}

static void queue_request(const char* line, weft_after_work_cb after) {
  job_t* j = malloc(sizeof(*j));
  int err;
  cr_assert_not_null(j);
  j->port = X.port;
  j->line = line;
  j->pid = 0;
  err = weft_queue_work(X.loop, request, after, j);
  cr_assert_eq(err, 0, "queue_work: %s", weft_err_name(err));
}

/* --- serving: two children, SIGKILL one, nothing lost -------------------- */

/* Steps: 1 pairs of slow requests until both children answered; 2 one
 * request after the other, the first child SIGKILLed after the 10th (when
 * no request is in flight), until its replacement listens and 10 more
 * answered; 3 pairs of slow requests until the replacement answered. */
static struct {
  int pids[2]; /* The first two children. */
  int seen_mask;
  int inflight;
  int rounds;
  int victim;
  int requests_after_restart;
  int replacement;
  bool replacement_seen;
  bool rr;          /* WEFT_CLUSTER_SCHED_RR. */
  bool wait_victim; /* RR: no request until the victim's exit. */
} S;

static void serve_next(void);

static int known(int pid) {
  if (pid == S.pids[0])
    return 1;
  if (pid == S.pids[1])
    return 2;
  return 0;
}

static void after_request(weft_loop_t* loop, void* arg, int status) {
  job_t* j = arg;
  int pid = j->pid;
  (void)loop;
  free(j);
  cr_assert_eq(status, 0);
  /* Every request gets an answer: across the kill and the restart too. */
  cr_assert(pid > 0, "request %d failed (%d) in step %d", X.count, pid,
            X.step);
  X.count++;
  S.inflight--;
  if (X.step == 1) {
    S.seen_mask |= known(pid);
    cr_assert(known(pid) != 0, "pid %d is not a child", pid);
  } else if (X.step == 2) {
    cr_assert(pid != S.victim || S.victim == 0);
  } else if (X.step == 3) {
    if (pid == S.replacement)
      S.replacement_seen = true;
  }
  if (S.inflight == 0)
    serve_next();
}

static void serve_next(void) {
  if (X.step == 1) {
    if (S.seen_mask == 3) {
      X.step = 2;
      X.count = 0;
    } else {
      cr_assert(S.rounds++ < 100, "one child served every request");
      S.inflight = 2;
      queue_request("slow\n", after_request);
      queue_request("slow\n", after_request);
      return;
    }
  }
  if (X.step == 2) {
    cr_assert(X.count < 2000, "the killed child was not replaced");
    if (X.count == 10 && S.victim == 0) {
      /* No request is in flight: the victim holds none. */
      S.victim = S.pids[0];
      cr_assert_eq(kill(S.victim, SIGKILL), 0);
      if (S.rr) {
        /* A connection written to the victim's pipe before it was seen
         * dead would be lost with it (Node's RR alike): wait for its
         * exit. Under SCHED_NONE nothing waits: the accept queue is the
         * primary's. */
        S.wait_victim = true;
        return;
      }
    }
    if (S.replacement != 0 && ++S.requests_after_restart > 10) {
      X.step = 3;
      S.rounds = 0;
    } else {
      S.inflight = 1;
      queue_request("pid\n", after_request);
      return;
    }
  }
  if (X.step == 3) {
    if (S.replacement_seen) {
      X.step = 4;
      cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
      return;
    }
    cr_assert(S.rounds++ < 100, "the replacement never served");
    S.inflight = 2;
    queue_request("slow\n", after_request);
    queue_request("slow\n", after_request);
  }
}

static void serve_listening(weft_cluster_worker_t* w) {
  unsigned id = weft_cluster_worker_id(w);
  /* Every child listens on the port the first one got. */
  cr_assert_eq(X.listen_port[id], X.port);
  if (id <= 2)
    S.pids[id - 1] = weft_cluster_worker_pid(w);
  if (X.listenings == 2) {
    X.step = 1;
    serve_next();
  } else if (id == 3) {
    S.replacement = weft_cluster_worker_pid(w);
  }
}

static void serve_exit(weft_cluster_worker_t* w, int code, int sig) {
  unsigned id = weft_cluster_worker_id(w);
  if (X.step < 4) {
    /* Only the victim dies before the close, by the signal. */
    cr_assert_eq(id, 1u);
    cr_assert_eq(code, 0);
    cr_assert_eq(sig, SIGKILL);
    if (S.wait_victim) {
      S.wait_victim = false;
      serve_next();
    }
  } else {
    /* Closed: the children end on their own on the disconnect. */
    cr_assert_eq(code, 0, "child %u exit code %d", id, code);
    cr_assert_eq(sig, 0);
  }
}

static void serve_and_sigkill(weft_cluster_sched_t sched) {
  weft_cluster_opts_t o = {0};
  memset(&S, 0, sizeof(S));
  S.rr = sched == WEFT_CLUSTER_SCHED_RR;
  o.restart = true;
  o.sched = sched;
  start("0", "", &o);
  X.on_listening = serve_listening;
  X.on_exit = serve_exit;
  fork1();
  fork1();
  cr_assert_eq(weft_cluster_size(X.c), 2u);
  end();
  cr_assert_eq(X.forks, 3, "the killed child was replaced once");
  cr_assert_eq(X.ids[2], 3u, "the replacement has a new id");
  cr_assert_eq(X.onlines, 3);
  cr_assert_eq(X.listenings, 3);
  cr_assert_eq(X.exits, 3);
  cr_assert_eq(X.errors, 0);
  cr_assert(S.replacement_seen);
}

Test(cluster, two_children_share_a_socket_and_survive_sigkill) {
  serve_and_sigkill(WEFT_CLUSTER_SCHED_NONE);
}

Test(cluster, round_robin_survives_sigkill) {
  serve_and_sigkill(WEFT_CLUSTER_SCHED_RR);
}

/* --- round robin: 4 connections at once on 2 children ------------------- */

typedef struct {
  int port;
  int pids[4];
} four_t;

/* Connect 4 sockets, then ask each for its child's pid: all 4 are open
 * before any is served. */
static void four_requests(void* arg) {
  four_t* f = arg;
  int fds[4];
  int i;
  for (i = 0; i < 4; i++) {
    fds[i] = connect_loopback(f->port);
    f->pids[i] = fds[i] < 0 ? fds[i] : -1;
  }
  for (i = 0; i < 4; i++)
    if (fds[i] >= 0 && write(fds[i], "pid\n", 4) != 4)
      f->pids[i] = -2;
  for (i = 0; i < 4; i++) {
    if (fds[i] < 0)
      continue;
    if (f->pids[i] == -1)
      f->pids[i] = read_pid(fds[i]);
    else
      close(fds[i]);
  }
}

static struct {
  four_t job;
  bool done;
  int again; /* ["again", WEFT_EAGAIN] messages. */
  int pids[3]; /* By id. */
} F;

static void four_maybe_close(void) {
  if (F.done && F.again == 2)
    cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

static void after_four(weft_loop_t* loop, void* arg, int status) {
  (void)loop;
  (void)arg;
  cr_assert_eq(status, 0);
  F.done = true;
  four_maybe_close();
}

static void four_listening(weft_cluster_worker_t* w) {
  F.pids[weft_cluster_worker_id(w)] = weft_cluster_worker_pid(w);
  if (X.listenings == 2) {
    F.job.port = X.port;
    cr_assert_eq(weft_queue_work(X.loop, four_requests, after_four, &F.job),
                 0);
  }
}

static void four_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int rc = 0;
  (void)w;
  cr_assert_eq(weft_msg_read(m, "[*i]", &rc), 0);
  /* A second take in the same on_connection: nothing is pending. */
  cr_assert_eq(rc, WEFT_EAGAIN, "got %s", weft_err_name(rc));
  F.again++;
  four_maybe_close();
}

Test(cluster, round_robin_gives_each_child_its_turn) {
  weft_cluster_opts_t o = {0};
  int i, n1 = 0, n2 = 0;
  memset(&F, 0, sizeof(F));
  o.sched = WEFT_CLUSTER_SCHED_RR;
  start("0", "", &o);
  X.on_listening = four_listening;
  X.on_message = four_message;
  fork1();
  fork1();
  end();
  for (i = 0; i < 4; i++) {
    cr_assert(F.job.pids[i] > 0, "connection %d failed (%d)", i,
              F.job.pids[i]);
    n1 += F.job.pids[i] == F.pids[1];
    n2 += F.job.pids[i] == F.pids[2];
  }
  /* In turn: 1, 2, 1, 2 (the kernel may give all 4 to one child). */
  cr_assert(n1 == 2 && n2 == 2, "child 1 got %d, child 2 got %d", n1, n2);
  for (i = 0; i < 4; i++)
    cr_assert_eq(F.job.pids[i], F.pids[i % 2 + 1], "connection %d", i);
}

/* --- messages -------------------------------------------------------------- */

#define NMSG 1000

static void echo_online(weft_cluster_worker_t* w) {
  int i;
  for (i = 0; i < NMSG; i++) {
    int err = weft_cluster_worker_post_fmt(w, "[si]", "echo", i);
    cr_assert_eq(err, 0, "post %d: %s", i, weft_err_name(err));
  }
}

static void echo_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int i = -1;
  unsigned id = 0;
  int err = weft_msg_read(m, "[*iu]", &i, &id);
  cr_assert_eq(err, 0, "read: %s", weft_err_name(err));
  cr_assert_eq(i, X.count, "message %d came as number %d", i, X.count);
  cr_assert_eq(id, weft_cluster_worker_id(w));
  if (++X.count == NMSG)
    cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

Test(cluster, messages_both_ways_in_order) {
  start("0", "nolisten", NULL);
  X.on_online = echo_online;
  X.on_message = echo_message;
  fork1();
  end();
  cr_assert_eq(X.count, NMSG);
  cr_assert_eq(X.exits, 1);
  cr_assert_eq(X.codes[1], 0);
}

/* A child starts with UV_TCP_SINGLE_ACCEPT=1 (so that children share a
 * burst of connections), unless the primary's environment sets it. */
static char env_seen[16];

static const char* env_name = "UV_TCP_SINGLE_ACCEPT";

static void env_online(weft_cluster_worker_t* w) {
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[ss]", "env", env_name), 0);
}

static void env_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  (void)w;
  cr_assert(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2);
  if (o->via.array.ptr[1].type == MSGPACK_OBJECT_STR &&
      o->via.array.ptr[1].via.str.size < sizeof(env_seen)) {
    memcpy(env_seen, o->via.array.ptr[1].via.str.ptr,
           o->via.array.ptr[1].via.str.size);
    env_seen[o->via.array.ptr[1].via.str.size] = '\0';
  } else {
    strcpy(env_seen, "(unset)");
  }
  cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

static void check_child_env(const char* ours, const char* expected) {
  if (ours != NULL)
    cr_assert_eq(setenv("UV_TCP_SINGLE_ACCEPT", ours, 1), 0);
  else
    cr_assert_eq(unsetenv("UV_TCP_SINGLE_ACCEPT"), 0);
  memset(env_seen, 0, sizeof(env_seen));
  env_name = "UV_TCP_SINGLE_ACCEPT";
  start("0", "nolisten", NULL);
  X.on_online = env_online;
  X.on_message = env_message;
  fork1();
  end();
  cr_assert_str_eq(env_seen, expected);
}

/* The policy a child is told (WEFT_CLUSTER_SCHED): opts.sched, else
 * WEFT_CLUSTER_SCHED_POLICY ("none" or RR). */
static void check_child_sched(const char* policy,
                              weft_cluster_sched_t sched,
                              const char* expected) {
  weft_cluster_opts_t o = {0};
  if (policy != NULL)
    cr_assert_eq(setenv("WEFT_CLUSTER_SCHED_POLICY", policy, 1), 0);
  else
    cr_assert_eq(unsetenv("WEFT_CLUSTER_SCHED_POLICY"), 0);
  memset(env_seen, 0, sizeof(env_seen));
  o.sched = sched;
  start("0", "nolisten", &o);
  env_name = "WEFT_CLUSTER_SCHED";
  X.on_online = env_online;
  X.on_message = env_message;
  fork1();
  end();
  cr_assert_str_eq(env_seen, expected);
  cr_assert_eq(unsetenv("WEFT_CLUSTER_SCHED_POLICY"), 0);
}

Test(cluster, scheduling_policy_default_and_environment) {
  weft_cluster_opts_t o = {0};
  weft_cluster_t* c = NULL;
  weft_loop_t* loop;
  check_child_sched(NULL, WEFT_CLUSTER_SCHED_DEFAULT, "rr");
  check_child_sched("rr", WEFT_CLUSTER_SCHED_DEFAULT, "rr");
  check_child_sched("none", WEFT_CLUSTER_SCHED_DEFAULT, "none");
  check_child_sched("none", WEFT_CLUSTER_SCHED_RR, "rr");
  check_child_sched(NULL, WEFT_CLUSTER_SCHED_NONE, "none");
  loop = new_loop();
  o.sched = (weft_cluster_sched_t)7;
  cr_assert_eq(weft_cluster_new(&c, loop, &o), WEFT_EINVAL);
  cr_assert_null(c);
  free_loop(loop);
}

Test(cluster, children_accept_one_at_a_time_unless_told_otherwise) {
  check_child_env(NULL, "1");
  check_child_env("0", "0");
}

/* A message of 3 MiB (read in many pieces, next to small ones). */
#define BIG ((size_t)3 << 20)
static unsigned char* big;

static void big_online(weft_cluster_worker_t* w) {
  size_t i;
  big = malloc(BIG);
  cr_assert_not_null(big);
  for (i = 0; i < BIG; i++)
    big[i] = (unsigned char)(i * 7 + i / 4096);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[si]", "echo", 1), 0);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[sy]", "echo", big, BIG), 0);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[si]", "echo", 2), 0);
}

static void big_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  const void* p = NULL;
  size_t len = 0;
  int i = 0;
  (void)w;
  X.count++;
  if (X.count == 2) {
    cr_assert_eq(weft_msg_read(m, "[*yu]", &p, &len, NULL), 0);
    cr_assert_eq(len, BIG);
    cr_assert(memcmp(p, big, BIG) == 0);
    return;
  }
  cr_assert_eq(weft_msg_read(m, "[*iu]", &i, NULL), 0);
  cr_assert_eq(i, X.count == 1 ? 1 : 2);
  if (X.count == 3)
    cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

Test(cluster, a_large_message_crosses_in_pieces) {
  start("0", "nolisten", NULL);
  X.on_online = big_online;
  X.on_message = big_message;
  fork1();
  end();
  free(big);
  cr_assert_eq(X.count, 3);
}

/* The primary keeps a message and reads it from a timer; the child keeps
 * one too and answers ["kept", 7] after reading it from a timer. */
static weft_msg_t* kept;

static void read_kept(weft_loop_t* loop, void* arg) {
  int x = 0;
  (void)loop;
  (void)arg;
  cr_assert_eq(weft_msg_read(kept, "[si]", NULL, NULL, &x), 0);
  cr_assert_eq(x, 7);
  weft_msg_free(kept);
  kept = NULL;
  cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

static void keep_online(weft_cluster_worker_t* w) {
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[si]", "keep", 7), 0);
}

static void keep_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  (void)w;
  cr_assert_eq(weft_msg_read(m, "[si]", NULL, NULL, NULL), 0);
  cr_assert_eq(weft_msg_keep(m), 0);
  kept = m;
  cr_assert_eq(weft_set_timeout(X.loop, 5, read_kept, NULL, NULL), 0);
}

Test(cluster, keep_a_message_on_both_sides) {
  start("0", "nolisten", NULL);
  X.on_online = keep_online;
  X.on_message = keep_message;
  fork1();
  end();
  cr_assert_null(kept);
}

/* Calls on a child's handle from a thread that is not the loop's. */
typedef struct {
  weft_cluster_worker_t* w;
  int post, post_fmt, disconnect, kill;
} wrong_t;

static void* wrong_thread(void* arg) {
  wrong_t* t = arg;
  t->post = weft_cluster_worker_post(t->w, "\x01", 1);
  t->post_fmt = weft_cluster_worker_post_fmt(t->w, "i", 1);
  t->disconnect = weft_cluster_worker_disconnect(t->w);
  t->kill = weft_cluster_worker_kill(t->w, SIGKILL);
  return NULL;
}

/* Posting errors at the sender; the child stays connected through all. */
static void errors_online(weft_cluster_worker_t* w) {
  wrong_t wt = {w, 0, 0, 0, 0};
  pthread_t t;
  static const char two[2] = {0x01, 0x02};
  static const char bad[1] = {(char)0xc1};
  char big[100];
  weft_msg_t* m = NULL;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  weft_port_t* pa = NULL;
  weft_port_t* pb = NULL;
  memset(big, 0, sizeof(big));
  big[0] = (char)0xc4; /* bin 8 of 98 bytes */
  big[1] = 98;
  cr_assert_eq(weft_cluster_worker_post(NULL, two, 1), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_post(w, NULL, 1), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_post(w, two, 0), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_post(w, two, 2), WEFT_EDECODE);
  cr_assert_eq(weft_cluster_worker_post(w, bad, 1), WEFT_EDECODE);
  cr_assert_eq(weft_cluster_worker_post(w, big, sizeof(big)), WEFT_EMSGSIZE);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_post_msg(w, NULL), WEFT_EINVAL);
  /* A message that lists a buffer, or a shared buffer, stays here. */
  cr_assert_eq(weft_buffer_new(&buf, 16), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "B", buf), 0);
  cr_assert_eq(weft_cluster_worker_post_msg(w, &m), WEFT_ENOTLOCAL);
  cr_assert_not_null(m, "a refused message stays the caller's");
  weft_msg_free(m);
  cr_assert_eq(weft_buffer_size(buf), 16u, "nothing moved");
  weft_buffer_free(buf);
  new_channel(X.loop, &pa, &pb);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[sP]", "echo", pa),
               WEFT_ENOTLOCAL);
  cr_assert_eq(weft_port_post_fmt(pa, "i", 1), 0, "the port stayed here");
  free_channel(pa, pb);
  cr_assert_eq(weft_shared_new(&sh, 64), 0);
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[H]", sh), WEFT_ENOTLOCAL);
  weft_shared_release(sh);
  cr_assert_eq(pthread_create(&t, NULL, wrong_thread, &wt), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(wt.post, WEFT_EWRONGTHREAD);
  cr_assert_eq(wt.post_fmt, WEFT_EWRONGTHREAD);
  cr_assert_eq(wt.disconnect, WEFT_EWRONGTHREAD);
  cr_assert_eq(wt.kill, WEFT_EWRONGTHREAD);
  cr_assert(weft_cluster_worker_connected(w));
  /* Nothing was sent: the next message is the first the child sees. */
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[si]", "echo", 1), 0);
  m = NULL;
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "[si]", "echo", 2), 0);
  cr_assert_eq(weft_cluster_worker_post_msg(w, &m), 0);
  cr_assert_null(m, "a posted message is taken");
}

static void errors_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int i = 0;
  cr_assert_eq(weft_msg_read(m, "[*iu]", &i, NULL), 0);
  cr_assert_eq(i, ++X.count);
  if (X.count == 2) {
    cr_assert_eq(weft_cluster_worker_disconnect(w), 0);
    cr_assert_eq(weft_cluster_worker_disconnect(w), WEFT_ECLOSED);
    cr_assert_eq(weft_cluster_worker_post_fmt(w, "i", 1), WEFT_ECLOSED);
  }
}

static void close_later(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

/* Close once X.want_exits (default 1) children exited: from a timer, so
 * that a restart, which would come right after this exit event, is seen. */
static void close_on_exit(weft_cluster_worker_t* w, int code, int sig) {
  (void)w;
  (void)code;
  (void)sig;
  if (X.exits == (X.want_exits != 0 ? X.want_exits : 1))
    cr_assert_eq(weft_set_timeout(X.loop, 1, close_later, NULL, NULL), 0);
}

Test(cluster, sender_refuses_bad_messages) {
  weft_cluster_opts_t o = {0};
  o.max_message = 64;
  o.restart = true;
  start("0", "nolisten", &o);
  X.on_online = errors_online;
  X.on_message = errors_message;
  X.on_exit = close_on_exit;
  fork1();
  end();
  cr_assert_eq(X.count, 2);
  /* Disconnected by the primary, exited 0: not restarted. */
  cr_assert_eq(X.forks, 1);
  cr_assert_eq(X.codes[1], 0);
  cr_assert_eq(X.signals[1], 0);
}

/* A child that sends bytes that are no frame: error, disconnect. */
static void garbage_online(weft_cluster_worker_t* w) {
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[s]", "garbage"), 0);
}

Test(cluster, a_child_that_breaks_the_protocol_is_disconnected) {
  start("0", "nolisten", NULL);
  X.on_online = garbage_online;
  X.on_exit = close_on_exit;
  fork1();
  end();
  cr_assert_eq(X.errors, 1);
  cr_assert_eq(X.last_error, WEFT_EDECODE);
  cr_assert_eq(X.disconnects, 1);
  cr_assert_eq(X.codes[1], 0, "the child ends on the disconnect");
}

/* --- lifecycle ----------------------------------------------------------- */

/* Child 1 is told to exit(5): restarted (the primary did not end it), as
 * 3, which the primary then disconnects (exit 0, not restarted). Child 2
 * is killed with SIGTERM through the API: not restarted. */
static void life_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int code = 0;
  cr_assert_eq(weft_cluster_worker_id(w), 1u);
  cr_assert_eq(weft_msg_read(m, "[si]", NULL, NULL, &code), 0);
  cr_assert_eq(code, 5);
  cr_assert(!X.disconnected[1], "a message after the disconnect");
  X.count++;
}

static void life_online(weft_cluster_worker_t* w) {
  unsigned id = weft_cluster_worker_id(w);
  if (id == 1)
    cr_assert_eq(weft_cluster_worker_post_fmt(w, "[si]", "exit", 5), 0);
  else if (id == 2)
    cr_assert_eq(weft_cluster_worker_kill(w, 0), 0);
  else if (id == 3)
    cr_assert_eq(weft_cluster_worker_disconnect(w), 0);
}

Test(cluster, exit_codes_signals_and_what_restarts) {
  weft_cluster_opts_t o = {0};
  o.restart = true;
  start("0", "nolisten", &o);
  X.on_online = life_online;
  X.on_message = life_message;
  X.on_exit = close_on_exit;
  X.want_exits = 3;
  fork1();
  fork1();
  end();
  cr_assert_eq(X.forks, 3, "only the child that exited by itself restarts");
  cr_assert_eq(X.count, 1, "what child 1 wrote before it ended was read");
  cr_assert_eq(X.codes[1], 5);
  cr_assert_eq(X.signals[1], 0);
  cr_assert_eq(X.codes[2], 0);
  cr_assert_eq(X.signals[2], SIGTERM);
  cr_assert_eq(X.codes[3], 0, "a disconnected child ends with 0");
  cr_assert_eq(X.signals[3], 0);
  cr_assert_eq(X.errors, 0);
}

/* A child that disconnects itself and exits 0 is not restarted. */
static void self_disconnect_online(weft_cluster_worker_t* w) {
  cr_assert_eq(weft_cluster_worker_post_fmt(w, "[s]", "disconnect"), 0);
}

Test(cluster, a_child_that_disconnects_itself_is_not_restarted) {
  weft_cluster_opts_t o = {0};
  o.restart = true;
  start("0", "nolisten", &o);
  X.on_online = self_disconnect_online;
  X.on_exit = close_on_exit;
  fork1();
  end();
  cr_assert_eq(X.forks, 1);
  cr_assert_eq(X.codes[1], 0);
}

Test(cluster, restart_intensity) {
  weft_cluster_opts_t o = {0};
  o.restart = true;
  o.max_restarts = 2;
  o.restart_window_ms = 60000;
  start("0", "exit3", &o);
  X.on_exit = close_on_exit;
  X.want_exits = 3;
  fork1();
  end();
  cr_assert_eq(X.forks, 3, "one child and two restarts, then no more");
  cr_assert_eq(X.exits, 3);
  cr_assert_eq(X.onlines, 0);
  cr_assert_eq(X.errors, 1);
  cr_assert_eq(X.last_error, WEFT_ERESTARTS);
  cr_assert_eq(X.codes[1], 3);
  cr_assert_eq(X.codes[3], 3);
}

/* A child that ignores the disconnect is killed after the grace time. */
static void stubborn_listening(weft_cluster_worker_t* w) {
  (void)w;
  X.t0 = uv_hrtime();
  cr_assert_eq(weft_cluster_close(X.c, 200, on_closed), 0);
  cr_assert_eq(weft_cluster_close(X.c, 200, on_closed), WEFT_EBUSY);
  cr_assert_eq(weft_cluster_fork(X.c, NULL), WEFT_ECLOSED);
}

Test(cluster, close_kills_a_child_after_the_grace_time) {
  weft_cluster_opts_t o = {0};
  o.restart = true;
  start("0", "stubborn", &o);
  X.on_listening = stubborn_listening;
  fork1();
  end();
  cr_assert_eq(X.signals[1], SIGKILL);
  cr_assert_eq(X.forks, 1);
  cr_assert(uv_hrtime() - X.t0 >= 200 * 1000000ull);
}

/* --- listening ------------------------------------------------------------ */

/* A port taken by a socket of our own (listening, without SO_REUSEADDR):
 * its number, `*fd` the socket. */
static int sock_port_of(uv_tcp_t* t) {
  struct sockaddr_in a;
  int n = (int)sizeof(a);
  cr_assert_eq(uv_tcp_getsockname(t, (struct sockaddr*)&a, &n), 0);
  return ntohs(a.sin_port);
}

static int busy_port(int* fd) {
  struct sockaddr_in a;
  socklen_t n = sizeof(a);
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(*fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(*fd, (struct sockaddr*)&a, sizeof(a)), 0);
  cr_assert_eq(listen(*fd, 1), 0);
  cr_assert_eq(getsockname(*fd, (struct sockaddr*)&a, &n), 0);
  return ntohs(a.sin_port);
}

static void status_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int status = 0;
  (void)w;
  cr_assert_eq(weft_msg_read(m, "[*i]", &status), 0);
  X.last_error = status;
  X.count++;
  cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

Test(cluster, listen_error_travels_to_the_child) {
  char port[16];
  int fd;
  snprintf(port, sizeof(port), "%d", busy_port(&fd));
  start(port, "", NULL);
  X.on_message = status_message;
  fork1();
  end();
  close(fd);
  cr_assert_eq(X.count, 1);
  cr_assert_eq(X.last_error, UV_EADDRINUSE, "got %s",
               weft_err_name(X.last_error));
  cr_assert_eq(X.listenings, 0);
}

Test(cluster, listen_before_join_in_a_child) {
  start("0", "early", NULL);
  X.on_message = status_message;
  fork1();
  end();
  cr_assert_eq(X.count, 1);
  cr_assert_eq(X.last_error, WEFT_ENOTSTARTED, "got %s",
               weft_err_name(X.last_error));
}

/* --- outside a cluster ---------------------------------------------------- */

static bool in_call;
static int local_calls;
static int local_status[2];

static void on_conn(uv_stream_t* s, int status) {
  (void)s;
  (void)status;
}

static void local_cb(uv_tcp_t* s, int status, void* ctx) {
  cr_assert(!in_call, "the callback ran inside weft_cluster_listen()");
  local_status[(intptr_t)ctx] = status;
  local_calls++;
  uv_close((uv_handle_t*)s, NULL);
}

typedef struct {
  weft_loop_t* loop;
  weft_cluster_t* c;
  uv_tcp_t* s;
  int listen;
  int fork;
  int close;
  int join;
} other_t;

static void* other_thread(void* arg) {
  other_t* o = arg;
  weft_cluster_worker_t* w = NULL;
  o->listen = weft_cluster_listen(o->loop, o->s, "127.0.0.1", 0, 0, on_conn,
                                  local_cb, NULL);
  o->fork = weft_cluster_fork(o->c, NULL);
  o->close = weft_cluster_close(o->c, 0, NULL);
  o->join = weft_cluster_join(o->loop, NULL, NULL, &w);
  return NULL;
}

Test(cluster, outside_a_cluster) {
  weft_loop_t* loop = new_loop();
  weft_cluster_worker_t* w = (weft_cluster_worker_t*)&loop;
  weft_cluster_t* c = NULL;
  uv_tcp_t s1, s2, s3;
  other_t o;
  pthread_t t;
  char port[16];
  int fd;
  cr_assert(weft_cluster_is_primary());
  cr_assert_eq(weft_cluster_join(loop, NULL, NULL, &w), WEFT_EINVAL);
  cr_assert_null(w);
  cr_assert_eq(weft_cluster_join(NULL, NULL, NULL, &w), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_join(loop, NULL, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_new(NULL, loop, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_new(&c, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_fork(NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_close(NULL, 0, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_kill(NULL, 0), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_disconnect(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_worker_pid(NULL), 0);
  cr_assert_eq(weft_cluster_size(NULL), 0u);
  cr_assert_eq(weft_cluster_accept(NULL, NULL), WEFT_EINVAL);

  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &s1), 0);
  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &s2), 0);
  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &s3), 0);
  cr_assert_eq(weft_cluster_listen(loop, &s1, "localhost", 0, 0, on_conn,
                                   local_cb, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_listen(loop, &s1, "127.0.0.1", -1, 0, on_conn,
                                   local_cb, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_listen(loop, &s1, "127.0.0.1", 65536, 0, on_conn,
                                   local_cb, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_listen(loop, &s1, "127.0.0.1", 0, 0, on_conn,
                                   NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_cluster_listen(loop, NULL, "127.0.0.1", 0, 0, on_conn,
                                   local_cb, NULL), WEFT_EINVAL);

  /* Wrong thread. */
  cr_assert_eq(weft_cluster_new(&c, loop, NULL), 0);
  o = (other_t){loop, c, &s3, 0, 0, 0, 0};
  cr_assert_eq(pthread_create(&t, NULL, other_thread, &o), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(o.listen, WEFT_EWRONGTHREAD);
  cr_assert_eq(o.fork, WEFT_EWRONGTHREAD);
  cr_assert_eq(o.close, WEFT_EWRONGTHREAD);
  cr_assert_eq(o.join, WEFT_EINVAL, "the primary cannot join");
  cr_assert_eq(weft_cluster_size(c), 0u);
  cr_assert_eq(weft_cluster_close(c, 0, NULL), 0);
  uv_close((uv_handle_t*)&s3, NULL);

  /* Here the socket is bound in this process; the outcome comes later. */
  snprintf(port, sizeof(port), "%d", busy_port(&fd));
  in_call = true;
  cr_assert_eq(weft_cluster_listen(loop, &s1, "127.0.0.1", 0, 0, on_conn,
                                   local_cb, (void*)0), 0);
  cr_assert_eq(weft_cluster_listen(loop, &s2, "::1", atoi(port), 0, on_conn,
                                   local_cb, (void*)1), 0);
  in_call = false;
  cr_assert_eq(local_calls, 0);
  run_loop(loop);
  close(fd);
  cr_assert_eq(local_calls, 2);
  cr_assert_eq(local_status[0], 0);
  free_loop(loop);
}

/* Outside a cluster weft_cluster_accept() is uv_accept(). */
static struct {
  uv_tcp_t server;
  uv_tcp_t client;
  uv_tcp_t spare;
  int fd;
  int accepted;
  int again;
} A;

static void accept_conn(uv_stream_t* s, int status) {
  cr_assert_eq(status, 0);
  cr_assert_eq(weft_cluster_accept((uv_tcp_t*)s, NULL), WEFT_EINVAL);
  A.accepted = weft_cluster_accept((uv_tcp_t*)s, &A.client);
  A.again = weft_cluster_accept((uv_tcp_t*)s, &A.spare);
  uv_close((uv_handle_t*)&A.client, NULL);
  uv_close((uv_handle_t*)&A.spare, NULL);
  uv_close((uv_handle_t*)s, NULL);
}

static void accept_listening(uv_tcp_t* s, int status, void* ctx) {
  struct sockaddr_in a;
  (void)ctx;
  cr_assert_eq(status, 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)sock_port_of(s));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  A.fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(A.fd >= 0);
  /* Loopback: the kernel completes it before the server accepts. */
  cr_assert_eq(connect(A.fd, (struct sockaddr*)&a, sizeof(a)), 0);
}

Test(cluster, accept_outside_a_cluster_is_uv_accept) {
  weft_loop_t* loop = new_loop();
  memset(&A, 0, sizeof(A));
  A.accepted = A.again = 1;
  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &A.server), 0);
  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &A.client), 0);
  cr_assert_eq(uv_tcp_init(weft_loop_uv(loop), &A.spare), 0);
  cr_assert_eq(weft_cluster_listen(loop, &A.server, "127.0.0.1", 0, 0,
                                   accept_conn, accept_listening, NULL),
               0);
  run_loop(loop);
  close(A.fd);
  cr_assert_eq(A.accepted, 0, "got %s", weft_err_name(A.accepted));
  cr_assert_eq(A.again, UV_EAGAIN, "got %s", weft_err_name(A.again));
  free_loop(loop);
}

/* A primary with the defaults starts itself again (/proc/self/exe with
 * its own arguments): cluster_app as a primary of its own copy. */
Test(cluster, the_default_child_is_this_program_again) {
  int status = system(CLUSTER_APP " 127.0.0.1 0 self");
  cr_assert(WIFEXITED(status), "status %#x", status);
  cr_assert_eq(WEXITSTATUS(status), 0);
}

/* A program that cannot be started: libuv's error, no handle, no event,
 * and the cluster still closes. */
Test(cluster, fork_of_a_missing_program_fails) {
  weft_cluster_opts_t o = {0};
  weft_cluster_worker_t* w = (weft_cluster_worker_t*)&o;
  char* argv[] = {(char*)"weft-cluster-app", NULL};
  int err;
  memset(&X, 0, sizeof(X));
  X.loop = new_loop();
  o.exec = "/nonexistent/weft-cluster-app";
  o.argv = argv;
  o.events.fork = ev_fork;
  cr_assert_eq(weft_cluster_new(&X.c, X.loop, &o), 0);
  err = weft_cluster_fork(X.c, &w);
  cr_assert_eq(err, UV_ENOENT, "got %s", weft_err_name(err));
  cr_assert_null(w);
  cr_assert_eq(X.forks, 0);
  cr_assert_eq(weft_cluster_size(X.c), 0u);
  cr_assert_eq(weft_cluster_close(X.c, 0, on_closed), 0);
  cr_assert(!X.closed, "the close callback ran inside the call");
  end();
}

/* A reply whose socket cannot go to the server that asked (it has one)
 * fails with UV_EBUSY, and the socket it brought does not end up with the
 * next request's server (libuv's uv_accept() closes it on an error: this
 * checks that weft relies on that rightly, and reports the error). */
static bool twice_rr;

static void twice_message(weft_cluster_worker_t* w, weft_msg_t* m) {
  int s1 = 1, s2 = 1, s3 = 1, right = 0;
  (void)w;
  cr_assert_eq(weft_msg_read(m, "[siiii]", NULL, NULL, &s1, &s2, &s3, &right),
               0);
  cr_assert_eq(s1, 0);
  cr_assert_eq(s2, UV_EBUSY, "got %s", weft_err_name(s2));
  cr_assert_eq(s3, 0);
  /* Under RR no server has a socket. */
  if (!twice_rr)
    cr_assert(right, "the second server got the first one's socket");
  X.count++;
  cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
}

Test(cluster, a_socket_that_cannot_be_used_is_dropped) {
  weft_cluster_opts_t o = {0};
  o.sched = WEFT_CLUSTER_SCHED_NONE; /* Only this policy sends sockets. */
  twice_rr = false;
  start("0", "twice", &o);
  X.on_message = twice_message;
  fork1();
  end();
  cr_assert_eq(X.count, 1);
  cr_assert_eq(X.listenings, 2);
}

/* Under RR a server asks once: the second weft_cluster_listen() with it
 * is refused (WEFT_EBUSY, UV_EBUSY's value) and the others listen. */
Test(cluster, round_robin_a_server_asks_once) {
  weft_cluster_opts_t o = {0};
  o.sched = WEFT_CLUSTER_SCHED_RR;
  twice_rr = true;
  start("0", "twice", &o);
  X.on_message = twice_message;
  fork1();
  end();
  cr_assert_eq(X.count, 1);
  cr_assert_eq(X.listenings, 2);
}

/* Under RR a connection that the child's on_connection does not take is
 * closed, and so is one that no child listens for (its only child was
 * killed): the client reads the end, it does not wait. */
static weft_cluster_worker_t* unserved_w;

static void unserved_after(weft_loop_t* loop, void* arg, int status) {
  job_t* j = arg;
  int pid = j->pid;
  (void)loop;
  free(j);
  cr_assert_eq(status, 0);
  cr_assert_eq(pid, -3, "step %d: got %d, not a close", X.step, pid);
  if (X.step == 1) {
    X.step = 2;
    cr_assert_eq(weft_cluster_worker_kill(unserved_w, SIGKILL), 0);
  } else {
    X.step = 3;
    cr_assert_eq(weft_cluster_close(X.c, 10000, on_closed), 0);
  }
}

static void unserved_listening(weft_cluster_worker_t* w) {
  (void)w;
  X.step = 1;
  queue_request("pid\n", unserved_after);
}

static void unserved_exit(weft_cluster_worker_t* w, int code, int sig) {
  (void)w;
  (void)code;
  cr_assert_eq(sig, SIGKILL);
  /* No child listens now; the primary's socket is still open. */
  queue_request("pid\n", unserved_after);
}

Test(cluster, round_robin_closes_what_no_child_takes) {
  weft_cluster_opts_t o = {0};
  o.sched = WEFT_CLUSTER_SCHED_RR;
  start("0", "noaccept", &o);
  X.on_listening = unserved_listening;
  X.on_exit = unserved_exit;
  unserved_w = fork1();
  end();
  cr_assert_eq(X.step, 3);
}


#ifdef WEFT_FAILPOINTS
/* Each allocation weft makes to create a cluster, fork a child and post
 * to it fails in turn (lib/failpoint.c): every call answers 0 or
 * WEFT_ENOMEM, and the cluster still closes with nothing left over (ASan
 * checks the leaks). */
static int fp_run(void) {
  static char* argv[] = {(char*)CLUSTER_APP, (char*)"127.0.0.1", (char*)"0",
                         (char*)"nolisten", NULL};
  weft_cluster_opts_t o = {0};
  weft_cluster_t* c = NULL;
  weft_cluster_worker_t* w = NULL;
  int err;
  o.exec = CLUSTER_APP;
  o.argv = argv;
  err = weft_cluster_new(&c, X.loop, &o);
  if (err != 0)
    return err;
  err = weft_cluster_fork(c, &w);
  if (err == 0)
    err = weft_cluster_worker_post_fmt(w, "[si]", "echo", 1);
  cr_assert_eq(weft_cluster_close(c, 10000, NULL), 0);
  return err;
}

Test(cluster, allocation_failures_are_named_errors) {
  uint64_t n, k, hit = 0;
  int rc;
  memset(&X, 0, sizeof(X));
  X.loop = new_loop();
  weft__failpoint_arm(0);
  rc = fp_run();
  n = weft__failpoint_count();
  cr_assert_eq(rc, 0);
  run_loop(X.loop);
  cr_assert(n > 3, "only %llu allocations", (unsigned long long)n);
  for (k = 1; k <= n; k++) {
    weft__failpoint_arm(k);
    rc = fp_run();
    hit += weft__failpoint_fired();
    cr_assert(rc == 0 || (rc == WEFT_ENOMEM && weft__failpoint_fired()),
              "allocation %llu: %s", (unsigned long long)k, weft_err_name(rc));
    weft__failpoint_arm(0);
    run_loop(X.loop);
  }
  cr_assert(hit > 0);
  free_loop(X.loop);
}
#endif
