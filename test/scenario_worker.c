/* scenario_worker.c - concurrent paths of workers as a plain program (runs
 * under ThreadSanitizer, where Criterion cannot start):
 *   1. terminate while messages flow both ways, many rounds;
 *   2. many short-lived workers, a bounded number at a time;
 *   3. a worker exits while the main thread is still posting to it;
 *   4. terminate interrupts a worker blocked in weft_atomic_wait32/64, at
 *      every point of the wait (before it starts, spinning, asleep, racing
 *      a notify or a short timeout);
 *   5. a worker whose child is busy blocks, not spins, while it ends;
 *   6. a thread that runs no loop posts to a worker while it lives, then
 *      gets WEFT_ECLOSED once it exited;
 *   7. threads that run no loop spawn hosted workers (owner NULL) at the
 *      same time, with a data message (a moved buffer, a shared buffer),
 *      post, get events on the host thread, read the utilization,
 *      terminate and free them, round after round, so the host loop stops
 *      and starts again while other threads spawn;
 *   8. a running worker freed and its loop freed right after, while the
 *      worker's thread is still busy and posting.
 * Returns 0 on success; prints the reason and returns 1 otherwise. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_getcpuclockid() */
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__shared_waiters() */
#include "support.h"

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
    run_loop(loop);
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
    packed_t data = packed_int(i);
    weft_worker_opts_t opts;
    int err;
    memset(&opts, 0, sizeof(opts));
    opts.data = data.data;
    opts.data_len = data.len;
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
  run_loop(sr.loop);
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
    run_loop(loop);
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

/* --- 4. terminate interrupts a blocking wait --------------------------------
 * Node's terminate() interrupts Atomics.wait. Each round a worker blocks in
 * a wait on a slot nobody notifies (even rounds: one wait32 without a
 * timeout; odd rounds: wait64 with 1 ms timeouts in a loop, so terminate
 * also races a timeout) and the owner terminates it at a different point
 * of the wait each round. Every round must end: the wait returns
 * WEFT_ETERMINATED (or OK where a notify raced the terminate), the worker
 * exits with 1 and no waiter is left queued. Before the fix the wait never
 * returned: the watchdog below fails the round instead of hanging. */

#define W_ROUNDS 100
#define W_WATCHDOG_MS 20000
#define W_NO_RC 1 /* No wait returned (the entry never ran). */

enum {
  W_AT_SPAWN,    /* Before the thread even runs the entry. */
  W_AT_ONLINE,   /* In the online event. */
  W_AT_QUEUED,   /* As soon as the wait is queued (usually spinning). */
  W_AT_ASLEEP,   /* A little later (usually asleep on the futex). */
  W_WITH_NOTIFY, /* Right after a notify of the same slot. */
  W_WHEN_COUNT
};

static struct {
  weft_loop_t* loop;
  weft_shared_t* sh;
  weft_worker_t* w;
  int round; /* Written before the spawn, read by the worker. */
  weft_timer_id dog;
  weft_timer_id poll;
  atomic_int entered;
  atomic_int rc;       /* The last wait's return code, or W_NO_RC. */
  atomic_int result;   /* Its result when rc is 0. */
  atomic_long timeouts;
  bool exited;
  int exit_code;
  int term_calls;
  int term_code;
} wr;

static void w_entry(weft_loop_t* loop, void* arg) {
  weft_wait_result_t res = WEFT_WAIT_OK;
  int rc;
  (void)loop;
  (void)arg;
  atomic_store(&wr.entered, 1);
  if (wr.round % 2 == 0) {
    rc = weft_atomic_wait32(wr.sh, 0, 0, -1, &res);
    /* A notify that won the race: the next wait returns at once. */
    if (rc == 0 && res == WEFT_WAIT_OK)
      rc = weft_atomic_wait32(wr.sh, 0, 0, -1, &res);
  } else {
    do {
      rc = weft_atomic_wait64(wr.sh, 0, 0, 1, &res);
      if (rc == 0 && res == WEFT_WAIT_TIMED_OUT)
        atomic_fetch_add(&wr.timeouts, 1);
    } while (rc == 0);
  }
  atomic_store(&wr.result, (int)res);
  atomic_store(&wr.rc, rc);
}

static void w_on_term(weft_worker_t* w, int code) {
  (void)w;
  wr.term_calls++;
  wr.term_code = code;
}

static void w_terminate(void) {
  int err = weft_worker_terminate(wr.w, w_on_term);
  CHECK(err == 0, "terminate: %s", weft_err_name(err));
}

static void w_watchdog(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(0, "round %d: the worker's wait was not interrupted (entered %d)",
        wr.round, atomic_load(&wr.entered));
}

static void w_poll(weft_loop_t* loop, void* arg) {
  int when = wr.round % W_WHEN_COUNT;
  (void)arg;
  wr.poll = 0;
  if (weft__shared_waiters(wr.sh, 0, 4) == 0) {
    CHECK(weft_set_timeout(loop, 0, w_poll, NULL, &wr.poll) == 0, "poll");
    return;
  }
  if (when == W_AT_ASLEEP)
    uv_sleep(2); /* Past the 20 us spin: the waiter sleeps (or times out). */
  if (when == W_WITH_NOTIFY)
    CHECK(weft_atomic_notify32(wr.sh, 0, 1, NULL) == 0, "notify");
  w_terminate();
}

static void w_online(weft_worker_t* w) {
  int when = wr.round % W_WHEN_COUNT;
  (void)w;
  if (when == W_AT_ONLINE)
    w_terminate();
  else if (when != W_AT_SPAWN)
    CHECK(weft_set_timeout(wr.loop, 0, w_poll, NULL, &wr.poll) == 0, "poll");
}

static void w_exit(weft_worker_t* w, int code) {
  (void)w;
  wr.exited = true;
  wr.exit_code = code;
  weft_clear_timer(wr.loop, wr.dog);
  weft_clear_timer(wr.loop, wr.poll);
}

static void terminate_interrupts_wait(void) {
  int interrupted = 0, notified = 0, skipped = 0;
  long timeouts = 0;
  for (int r = 0; r < W_ROUNDS; r++) {
    weft_worker_opts_t opts;
    int err, rc, when = r % W_WHEN_COUNT;
    memset(&wr, 0, sizeof(wr));
    wr.loop = new_loop();
    CHECK(weft_shared_new(&wr.sh, 64) == 0, "shared");
    wr.round = r;
    atomic_init(&wr.rc, W_NO_RC);
    memset(&opts, 0, sizeof(opts));
    opts.events.online = w_online;
    opts.events.exit = w_exit;
    err = weft_worker_spawn(&wr.w, wr.loop, w_entry, &opts);
    CHECK(err == 0, "spawn: %s", weft_strerror(err));
    err = weft_set_timeout(wr.loop, W_WATCHDOG_MS, w_watchdog, NULL, &wr.dog);
    CHECK(err == 0, "watchdog: %s", weft_err_name(err));
    if (when == W_AT_SPAWN)
      w_terminate();
    run_loop(wr.loop);
    CHECK(wr.exited, "round %d: no exit", r);
    CHECK(wr.exit_code == 1, "round %d: exit code %d", r, wr.exit_code);
    CHECK(wr.term_calls == 1 && wr.term_code == 1,
          "round %d: terminate callback %d times, code %d", r, wr.term_calls,
          wr.term_code);
    rc = atomic_load(&wr.rc);
    if (!atomic_load(&wr.entered)) {
      CHECK(when == W_AT_SPAWN || when == W_AT_ONLINE,
            "round %d: the entry never ran", r);
      skipped++;
    } else if (rc == 0) {
      /* Only a notify ends a wait without a timeout with 0 here, and then
       * the second wait must have been interrupted. */
      CHECK(0, "round %d: wait returned 0 (result %d) after terminate", r,
            atomic_load(&wr.result));
    } else {
      CHECK(rc == WEFT_ETERMINATED, "round %d: wait returned %s", r,
            weft_err_name(rc));
      interrupted++;
      if (when == W_WITH_NOTIFY && r % 2 == 0 &&
          atomic_load(&wr.result) == WEFT_WAIT_OK)
        notified++;
    }
    CHECK(weft__shared_waiters(wr.sh, 0, 4) == 0, "round %d: waiter left", r);
    timeouts += atomic_load(&wr.timeouts);
    weft_worker_free(wr.w);
    weft_shared_release(wr.sh);
    free_loop(wr.loop);
  }
  printf("terminate interrupts wait: %d rounds, %d interrupted (%d after a "
         "racing notify), %d ended before the entry, %ld short timeouts\n",
         W_ROUNDS, interrupted, notified, skipped, timeouts);
}

/* --- 5. A worker whose child is busy blocks while it ends --------------------
 * A worker (the middle one) ends while its child runs C code that does not
 * poll weft_should_stop() for about a second. The middle thread must wait
 * for the child before its loop goes, and it used to spin (sched_yield) all
 * that time: 1.9 s of CPU over a 2 s wait. The checks are about behaviour,
 * not speed, and hold whatever the machine's speed and load:
 *   - a thread that blocks (futex, condition variable) uses almost no CPU
 *     while it waits, one that polls uses what the scheduler gives it (a
 *     core on an idle machine), so the middle thread's CPU time over the
 *     child's busy second must stay well under that wall time (< 10%);
 *   - on a loaded machine a sched_yield poller gets little CPU and could
 *     pass that check, but it is never asleep: its state in
 *     /proc/self/task/TID/stat is 'R' (running or runnable) at every
 *     sample, a blocked thread's is 'S'. So the middle thread must also be
 *     found asleep in at least 90% of samples taken over that second
 *     (before the fix: 0%).
 * The child itself takes the samples: the middle thread is certainly alive
 * and in its teardown from the moment the child sees the stop request
 * until the child returns. */

#define B_BUSY_NS 1000000000LL
#define B_SAMPLE_NS 1000000LL
#define B_MAX_CPU_SHARE 0.10
#define B_MIN_ASLEEP_SHARE 0.90

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t clock_ns(clockid_t c) {
  struct timespec ts;
  CHECK(clock_gettime(c, &ts) == 0, "clock_gettime");
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The scheduler state of thread `tid` of this process ('R', 'S', ...), or
 * '?' if it cannot be read. */
static char thread_state(long tid) {
  char path[64], buf[512];
  const char* p;
  size_t n;
  FILE* f;
  snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
  f = fopen(path, "r");
  if (f == NULL)
    return '?';
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* "tid (comm) S ...": the name may hold anything, so from the last ')'. */
  p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' ? p[2] : '?';
}

static struct {
  clockid_t middle_clock; /* Written by the middle before it spawns. */
  long middle_tid;        /* Likewise. */
  /* Written by the child; read by main after the middle's exit event
   * (child gone -> middle's teardown -> middle's exit message). */
  bool saw_stop;
  int64_t cpu_ns;
  int64_t wall_ns;
  int samples;
  int asleep; /* Samples that found the middle thread sleeping ('S'). */
  int unreadable;
  int middle_exit;
  bool middle_exited;
} br;

static void b_child_entry(weft_loop_t* loop, void* arg) {
  int64_t w0, w1, c0, c1, give_up, next;
  volatile uint64_t x = 0;
  (void)loop;
  (void)arg;
  CHECK(weft_port_post(weft_parent_port(), "\xc0", 1) == 0, "child post");
  /* The middle ends on that message and its teardown terminates us. */
  give_up = mono_ns() + 60 * 1000000000LL;
  while (!weft_should_stop() && mono_ns() < give_up)
    x++;
  br.saw_stop = weft_should_stop();
  c0 = clock_ns(br.middle_clock);
  w0 = mono_ns();
  /* Busy: C code that does not look at the stop request. */
  next = w0;
  do {
    x++;
    w1 = mono_ns();
    if (w1 >= next) {
      char st = thread_state(br.middle_tid);
      next = w1 + B_SAMPLE_NS;
      br.samples++;
      br.asleep += st == 'S';
      br.unreadable += st == '?';
    }
  } while (w1 - w0 < B_BUSY_NS);
  c1 = clock_ns(br.middle_clock);
  br.cpu_ns = c1 - c0;
  br.wall_ns = w1 - w0;
}

static void b_middle_message(weft_worker_t* w, weft_msg_t* msg) {
  (void)w;
  (void)msg;
  weft_worker_exit(0); /* Tear down while the child is busy. */
}

static void b_middle_entry(weft_loop_t* loop, void* arg) {
  weft_worker_opts_t opts;
  weft_worker_t* child = NULL;
  (void)arg;
  CHECK(pthread_getcpuclockid(pthread_self(), &br.middle_clock) == 0,
        "pthread_getcpuclockid");
  br.middle_tid = (long)syscall(SYS_gettid);
  memset(&opts, 0, sizeof(opts));
  opts.name = "busy-child";
  opts.events.message = b_middle_message;
  CHECK(weft_worker_spawn(&child, loop, b_child_entry, &opts) == 0,
        "spawn child");
  /* Not freed: the middle's teardown stops it and waits for it. */
}

static void b_middle_exit(weft_worker_t* w, int code) {
  (void)w;
  br.middle_exited = true;
  br.middle_exit = code;
}

static void teardown_blocks_on_busy_child(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts;
  weft_worker_t* middle = NULL;
  double share, asleep;
  memset(&br, 0, sizeof(br));
  memset(&opts, 0, sizeof(opts));
  opts.name = "middle";
  opts.events.exit = b_middle_exit;
  CHECK(weft_worker_spawn(&middle, loop, b_middle_entry, &opts) == 0,
        "spawn middle");
  run_loop(loop);
  CHECK(br.middle_exited && br.middle_exit == 0, "middle exit %d",
        br.middle_exit);
  CHECK(br.saw_stop, "the child never saw the middle's stop request");
  CHECK(br.wall_ns >= B_BUSY_NS, "wall %lld ns", (long long)br.wall_ns);
  share = (double)br.cpu_ns / (double)br.wall_ns;
  CHECK(br.samples > 0 && br.unreadable == 0, "%d of %d samples unreadable",
        br.unreadable, br.samples);
  asleep = (double)br.asleep / br.samples;
  printf("teardown with a busy child: %.1f ms of CPU over %.1f ms (%.1f%%), "
         "asleep in %d of %d samples\n",
         br.cpu_ns / 1e6, br.wall_ns / 1e6, share * 100, br.asleep,
         br.samples);
  CHECK(share < B_MAX_CPU_SHARE,
        "the ending worker used %.0f%% of a core while it waited for its "
        "child (it spins instead of blocking)",
        share * 100);
  CHECK(asleep >= B_MIN_ASLEEP_SHARE,
        "the ending worker was asleep in only %.0f%% of samples while it "
        "waited for its child (it polls instead of blocking)",
        asleep * 100);
  weft_worker_free(middle);
  free_loop(loop);
}

/* --- 6. A thread with no loop posts to a worker until it exited -------- */

#define F_N 20000

static struct {
  weft_worker_t* w;
  int64_t posted;   /* Poster thread; read after the join. */
  int64_t received; /* Owner loop: the worker's report. */
} fp;

static int64_t f_next; /* Worker thread only. */

static void f_handler(weft_port_t* port, weft_msg_t* msg) {
  pair_t p;
  CHECK(read_pair(msg, &p) && p.kind == K_DATA, "bad message");
  CHECK(p.seq == f_next, "got %lld, want %lld", (long long)p.seq,
        (long long)f_next);
  if (++f_next == F_N) {
    pair_t r = {K_ECHO, f_next};
    CHECK(weft_port_post_fn(port, pack_pair, &r) == 0, "report");
    /* Stop taking messages: the loop ends, the worker exits, while the
     * poster still posts. */
    CHECK(weft_port_on_message(port, NULL) == 0, "off");
  }
}

static void f_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  f_next = 0;
  CHECK(weft_port_on_message(weft_parent_port(), f_handler) == 0, "on");
}

/* Post until the worker is gone: 0 while it lives, then WEFT_ECLOSED. */
static void f_poster(void* arg) {
  (void)arg;
  for (int64_t i = 0;; i++) {
    pair_t p = {K_DATA, i};
    int rc = weft_worker_post_fn(fp.w, pack_pair, &p);
    if (rc == WEFT_ECLOSED)
      break;
    CHECK(rc == 0, "post %lld: %s", (long long)i, weft_err_name(rc));
    fp.posted++;
  }
}

static void f_message(weft_worker_t* w, weft_msg_t* msg) {
  pair_t p;
  (void)w;
  CHECK(read_pair(msg, &p) && p.kind == K_ECHO, "bad report");
  fp.received = p.seq;
}

static void post_from_foreign_thread(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts;
  uv_thread_t t;
  memset(&opts, 0, sizeof(opts));
  opts.events.message = f_message;
  fp.posted = 0;
  fp.received = 0;
  fp.w = spawn_worker(loop, f_entry, &opts);
  CHECK(uv_thread_create(&t, f_poster, NULL) == 0, "thread");
  run_loop(loop);
  CHECK(weft_worker_exited(fp.w), "not exited");
  uv_thread_join(&t); /* Ends on WEFT_ECLOSED after the exit event. */
  CHECK(fp.received == F_N, "worker took %lld", (long long)fp.received);
  CHECK(fp.posted >= F_N, "posted %lld", (long long)fp.posted);
  weft_worker_free(fp.w); /* After the join: no post runs concurrently. */
  free_loop(loop);
}

/* --- 7. Hosted workers spawned by threads with no loop ------------------ */

#define H_THREADS 3
#define H_ROUNDS 4
#define H_MSGS 200

typedef struct {
  atomic_llong echoed; /* Host thread writes, the spawner reads. */
  atomic_int term_code;
  atomic_int exits;
  int64_t data_sum;    /* Worker thread; read after the exit (ordered by
                        * the exit event and the spawner's acquire). */
} h_state_t;

static void h_echo(weft_port_t* port, weft_msg_t* msg) {
  pair_t p;
  CHECK(read_pair(msg, &p) && p.kind == K_DATA, "bad message");
  p.kind = K_ECHO;
  CHECK(weft_port_post_fn(port, pack_pair, &p) == 0, "echo");
}

static void h_entry(weft_loop_t* loop, void* arg) {
  weft_msg_t* m = weft_worker_data_msg();
  const msgpack_object* o = weft_worker_data();
  h_state_t* st = arg;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  void* bytes;
  size_t size;
  (void)loop;
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY &&
            o->via.array.size == 2,
        "workerData");
  CHECK(weft_msg_take_buffer(m, &o->via.array.ptr[0], &buf) == 0, "buf");
  CHECK(weft_buffer_data(buf, &bytes, &size) == 0, "bytes");
  for (size_t i = 0; i < size; i++)
    st->data_sum += ((unsigned char*)bytes)[i];
  weft_buffer_free(buf);
  CHECK(weft_msg_take_shared(m, &o->via.array.ptr[1], &sh) == 0, "shared");
  CHECK(weft_atomic_add32(sh, 0, 1, NULL) == 0, "add");
  weft_shared_release(sh);
  CHECK(weft_port_on_message(weft_parent_port(), h_echo) == 0, "on");
}

static void h_message(weft_worker_t* w, weft_msg_t* msg) {
  h_state_t* st = weft_worker_get_data(w);
  pair_t p;
  CHECK(read_pair(msg, &p) && p.kind == K_ECHO, "bad echo");
  atomic_store(&st->echoed, p.seq);
}

static void h_exit(weft_worker_t* w, int code) {
  h_state_t* st = weft_worker_get_data(w);
  (void)code;
  atomic_fetch_add(&st->exits, 1);
}

static void h_terminated(weft_worker_t* w, int code) {
  h_state_t* st = weft_worker_get_data(w);
  atomic_store(&st->term_code, code);
}

static weft_shared_t* h_shared;

static void h_spawner(void* arg) {
  (void)arg;
  CHECK(weft_loop_current() == NULL, "a loop-less thread");
  for (int round = 0; round < H_ROUNDS; round++) {
    h_state_t st;
    weft_worker_opts_t opts;
    weft_worker_t* w = NULL;
    weft_buffer_t* buf = NULL;
    weft_msg_t* m = NULL;
    weft_elu_t e;
    void* bytes;
    size_t size;
    int64_t sum = 0;
    atomic_init(&st.echoed, -1);
    atomic_init(&st.term_code, -1);
    atomic_init(&st.exits, 0);
    st.data_sum = 0;
    CHECK(weft_buffer_new(&buf, 256) == 0, "buffer");
    CHECK(weft_buffer_data(buf, &bytes, &size) == 0, "bytes");
    for (size_t i = 0; i < size; i++) {
      ((unsigned char*)bytes)[i] = (unsigned char)(i + round);
      sum += (unsigned char)(i + round);
    }
    CHECK(weft_msg_new(&m) == 0, "msg");
    msgpack_pack_array(weft_msg_packer(m), 2);
    CHECK(weft_msg_add_buffer(m, buf) == 0, "add buffer");
    CHECK(weft_msg_add_shared(m, h_shared) == 0, "add shared");
    memset(&opts, 0, sizeof(opts));
    opts.events.message = h_message;
    opts.events.exit = h_exit;
    opts.user_data = &st;
    opts.arg = &st;
    opts.data_msg = m;
    CHECK(weft_worker_spawn(&w, NULL, h_entry, &opts) == 0, "spawn");
    CHECK(weft_buffer_detached(buf), "buffer moved");
    weft_buffer_free(buf);
    for (int64_t i = 0; i < H_MSGS; i++) {
      pair_t p = {K_DATA, i};
      CHECK(weft_worker_post_fn(w, pack_pair, &p) == 0, "post");
      CHECK(weft_worker_utilization(w, NULL, &e) == 0, "elu");
    }
    WAIT_UNTIL(atomic_load(&st.echoed) == H_MSGS - 1, 30000);
    CHECK(atomic_load(&st.echoed) == H_MSGS - 1, "echoed %lld",
          (long long)atomic_load(&st.echoed));
    CHECK(weft_worker_has_ref(w), "has_ref");
    CHECK(weft_worker_unref(w) == 0 && !weft_worker_has_ref(w), "unref");
    CHECK(weft_worker_ref(w) == 0 && weft_worker_has_ref(w), "ref");
    CHECK(!weft_worker_exited(w), "running");
    CHECK(weft_worker_terminate(w, h_terminated) == 0, "terminate");
    WAIT_UNTIL(atomic_load(&st.term_code) != -1, 30000);
    CHECK(atomic_load(&st.term_code) == 1, "term %d",
          atomic_load(&st.term_code));
    CHECK(atomic_load(&st.exits) == 1, "exit event");
    CHECK(weft_worker_exited(w), "exited");
    CHECK(weft_worker_utilization(w, NULL, &e) == 0 && e.active > 0, "elu");
    CHECK(st.data_sum == sum, "data sum");
    weft_worker_free(w);
  }
}

static void hosted_from_loopless_threads(void) {
  uv_thread_t t[H_THREADS];
  int32_t n = 0;
  h_shared = new_shared(64);
  for (int i = 0; i < H_THREADS; i++)
    CHECK(uv_thread_create(&t[i], h_spawner, NULL) == 0, "thread");
  for (int i = 0; i < H_THREADS; i++)
    uv_thread_join(&t[i]);
  CHECK(weft_atomic_load32(h_shared, 0, &n) == 0, "load");
  CHECK(n == H_THREADS * H_ROUNDS, "workers saw the shared buffer %d", n);
  weft_shared_release(h_shared);
  /* Not under TSan: reading /proc opens a descriptor whose number the
   * ended host's loop held, and libuv's closes are invisible to TSan
   * (see tsan.supp). test_worker checks the host's end. */
  if (!UNDER_TSAN) {
    WAIT_UNTIL(count_threads_named("weft-host") == 0, 30000);
    CHECK(count_threads_named("weft-host") == 0, "the host did not end");
  }
  printf("hosted: %d loop-less threads, %d workers each, host ended\n",
         H_THREADS, H_ROUNDS);
}

/* --- 8. Free a running worker, then its loop, with no run between ------- */

static void fr_entry(weft_loop_t* loop, void* arg) {
  int64_t v = 1;
  (void)loop;
  (void)arg;
  while (!weft_should_stop())
    weft_port_post_fn(weft_parent_port(), pack_int_cb, &v);
}

static void free_then_free_loop(void) {
  long cores0 = weft__port_live_cores();
  for (int i = 0; i < 20; i++) {
    weft_loop_t* loop = new_loop();
    weft_worker_t* w = spawn_worker(loop, fr_entry, NULL);
    weft_elu_t e;
    if (i % 2 == 0)
      sleep_ms(1); /* Sometimes it runs already, sometimes not yet. */
    CHECK(weft_worker_utilization(w, NULL, &e) == 0, "elu");
    weft_worker_free(w);
    free_loop(loop);
  }
  WAIT_UNTIL(weft__port_live_cores() == cores0, 30000);
  CHECK(weft__port_live_cores() == cores0, "cores %ld, want %ld",
        weft__port_live_cores(), cores0);
  printf("free then free loop: 20 rounds, every worker ended\n");
}

int main(void) {
  terminate_in_flight();
  many_short_lived();
  exit_while_posting();
  terminate_interrupts_wait();
  teardown_blocks_on_busy_child();
  for (int round = 0; round < 3; round++)
    post_from_foreign_thread();
  hosted_from_loopless_threads();
  free_then_free_loop();
  printf("scenario_worker: ok\n");
  return 0;
}
