/* scenario_loop.c - concurrent paths of the event loop as a plain program
 * (runs under ThreadSanitizer, where Criterion cannot start):
 *   1. several threads, each with its own loop, run timers, intervals,
 *      immediates, next-ticks, microtasks and threadpool work at the same
 *      time, and each checks Node's ordering on its own loop;
 *   2. producer threads post into a port whose loop alternates between
 *      spinning and parking (random small sleeps between posts, an interval
 *      running on the loop); every message arrives exactly once, in order
 *      per producer;
 *   4. terminate cuts a worker's chain of microtasks that never ends;
 *   5. a wake-up that comes late (after the loop found the task on its own
 *      and closed) must not touch the closed loop: a worker's loop torn
 *      down, and a main loop freed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__loop_has_ready(), weft__shared_waiters() */
#include "support.h"

/* --- 1. Loops on several threads ------------------------------------------ */

#define LOOP_THREADS 4
#define ROUNDS 50
#define JOBS 40

enum { EV_AFTER = 1, EV_TICK, EV_MICRO, EV_IMMEDIATE, EV_TIMEOUT2 };

typedef struct {
  int id;
  weft_loop_t* loop;
  int log[ROUNDS * 5 + 8];
  int nlog;
  int rounds;
  int interval_hits;
  weft_timer_id interval;
  /* Threadpool jobs: written by the pool, read back on the loop. */
  long inputs[JOBS];
  long outputs[JOBS];
  int after_calls[JOBS];
  int jobs_done;
  uv_thread_t self;
} looper_t;

static void add(looper_t* l, int ev) {
  CHECK(l->nlog < (int)(sizeof(l->log) / sizeof(l->log[0])), "log full");
  l->log[l->nlog++] = ev;
}

static void ev_tick(weft_loop_t* loop, void* arg) {
  (void)loop;
  add(arg, EV_TICK);
}

static void ev_micro(weft_loop_t* loop, void* arg) {
  (void)loop;
  add(arg, EV_MICRO);
}

static void ev_immediate(weft_loop_t* loop, void* arg) {
  (void)loop;
  add(arg, EV_IMMEDIATE);
}

static void round_work(void* arg) {
  (void)arg;
}

static void round_after(weft_loop_t* loop, void* arg, int status);

static void ev_timeout2(weft_loop_t* loop, void* arg) {
  looper_t* l = arg;
  add(l, EV_TIMEOUT2);
  if (++l->rounds < ROUNDS)
    CHECK(weft_queue_work(loop, round_work, round_after, l) == 0, "work");
}

/* A round: in a threadpool after-callback (an I/O callback for Node's
 * ordering) queue a 0 ms timeout, an immediate, a microtask and a tick.
 * Expected: after, tick, micro, immediate, timeout. */
static void round_after(weft_loop_t* loop, void* arg, int status) {
  looper_t* l = arg;
  CHECK(status == 0, "round status %d", status);
  add(l, EV_AFTER);
  CHECK(weft_set_timeout(loop, 0, ev_timeout2, l, NULL) == 0, "timeout");
  CHECK(weft_set_immediate(loop, ev_immediate, l, NULL) == 0, "immediate");
  CHECK(weft_queue_microtask(loop, ev_micro, l) == 0, "microtask");
  CHECK(weft_next_tick(loop, ev_tick, l) == 0, "tick");
}

static void on_interval(weft_loop_t* loop, void* arg) {
  looper_t* l = arg;
  if (++l->interval_hits == 5)
    CHECK(weft_clear_timer(loop, l->interval) == 0, "clear interval");
}

typedef struct {
  looper_t* l;
  int index;
} job_t;

static job_t jobs_of[LOOP_THREADS][JOBS];

static void job_work(void* arg) {
  job_t* j = arg;
  long x = j->l->inputs[j->index];
  long acc = 0;
  for (long i = 0; i <= x; i++)
    acc += i;
  j->l->outputs[j->index] = acc;
}

static void job_after(weft_loop_t* loop, void* arg, int status) {
  job_t* j = arg;
  looper_t* l = j->l;
  long x = l->inputs[j->index];
  uv_thread_t self = uv_thread_self();
  CHECK(status == 0, "after status %d", status);
  CHECK(loop == l->loop, "after on another loop");
  CHECK(uv_thread_equal(&self, &l->self), "after not on the loop thread");
  CHECK(l->outputs[j->index] == x * (x + 1) / 2, "job %d of loop %d wrong",
        j->index, l->id);
  l->after_calls[j->index]++;
  l->jobs_done++;
}

static void looper_main(void* arg) {
  looper_t* l = arg;
  weft_loop_t* loop;
  l->self = uv_thread_self();
  CHECK(weft_loop_new(&loop) == 0, "loop on thread %d", l->id);
  CHECK(weft_loop_current() == loop, "current");
  l->loop = loop;
  for (int i = 0; i < JOBS; i++) {
    jobs_of[l->id][i] = (job_t){l, i};
    l->inputs[i] = 1000 * (l->id + 1) + i;
    CHECK(weft_queue_work(loop, job_work, job_after, &jobs_of[l->id][i]) == 0,
          "queue work");
  }
  CHECK(weft_set_interval(loop, 1, on_interval, l, &l->interval) == 0,
        "interval");
  CHECK(weft_queue_work(loop, round_work, round_after, l) == 0, "work");
  run_and_free(loop);
  CHECK(weft_loop_current() == NULL, "current after free");
}

static void loops_on_threads(void) {
  static looper_t ls[LOOP_THREADS];
  uv_thread_t t[LOOP_THREADS];
  for (int i = 0; i < LOOP_THREADS; i++) {
    memset(&ls[i], 0, sizeof(ls[i]));
    ls[i].id = i;
    CHECK(uv_thread_create(&t[i], looper_main, &ls[i]) == 0, "thread");
  }
  for (int i = 0; i < LOOP_THREADS; i++)
    uv_thread_join(&t[i]);
  for (int i = 0; i < LOOP_THREADS; i++) {
    looper_t* l = &ls[i];
    static const int want[5] = {EV_AFTER, EV_TICK, EV_MICRO, EV_IMMEDIATE,
                                EV_TIMEOUT2};
    CHECK(l->rounds == ROUNDS, "loop %d: %d rounds", i, l->rounds);
    CHECK(l->nlog == ROUNDS * 5, "loop %d: %d events", i, l->nlog);
    for (int k = 0; k < l->nlog; k++)
      CHECK(l->log[k] == want[k % 5], "loop %d: event %d is %d, want %d", i,
            k, l->log[k], want[k % 5]);
    CHECK(l->interval_hits == 5, "loop %d: interval ran %d times", i,
          l->interval_hits);
    CHECK(l->jobs_done == JOBS, "loop %d: %d jobs", i, l->jobs_done);
    for (int k = 0; k < JOBS; k++)
      CHECK(l->after_calls[k] == 1, "loop %d job %d: after ran %d times", i,
            k, l->after_calls[k]);
  }
}

/* --- 2. Cross-thread posts into a parking loop ---------------------------- */

#define PRODUCERS 2
#define PER_PRODUCER 5000

typedef struct {
  weft_port_t* port; /* The sending end; posting is allowed from any thread. */
  int id;
  unsigned seed;
  int failures;
} producer_t;

typedef struct {
  int producer;
  uint32_t seq;
} pair_t;

static int pack_pair(msgpack_packer* pk, void* arg) {
  pair_t* p = arg;
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, p->producer);
  return msgpack_pack_uint32(pk, p->seq);
}

static void producer_main(void* arg) {
  producer_t* p = arg;
  for (uint32_t s = 0; s < PER_PRODUCER; s++) {
    pair_t pair = {p->id, s};
    unsigned r = (unsigned)rand_r(&p->seed) % 100;
    if (weft_port_post_fn(p->port, pack_pair, &pair) != 0)
      p->failures++;
    if (r < 2) {
      uv_sleep(1); /* Long enough for the loop to park. */
    } else if (r < 6) {
      for (int i = 0; i < 1 + (int)(r * 7); i++)
        uv_thread_self(); /* A short pause: the loop may be spinning. */
    }
  }
}

typedef struct {
  weft_port_t* in;
  uint32_t next[PRODUCERS];
  long received;
  long bad;
  int ticks_seen;
  int interval_hits;
  weft_timer_id interval;
} consumer_t;

static consumer_t consumer;

static void consumer_tick(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  consumer.ticks_seen++;
}

static void on_pair(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  weft_loop_t* loop = weft_loop_current();
  int who;
  uint32_t seq;
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2,
        "message shape");
  who = (int)o->via.array.ptr[0].via.u64;
  seq = (uint32_t)o->via.array.ptr[1].via.u64;
  CHECK(who >= 0 && who < PRODUCERS, "producer %d", who);
  if (seq != consumer.next[who]) {
    fprintf(stderr, "scenario_loop: producer %d: got seq %u, want %u\n", who,
            seq, consumer.next[who]);
    consumer.bad++;
  }
  consumer.next[who] = seq + 1;
  consumer.received++;
  /* A tick per message: drained after every message callback. */
  weft_next_tick(loop, consumer_tick, NULL);
  if (consumer.received == (long)PRODUCERS * PER_PRODUCER) {
    CHECK(weft_clear_timer(loop, consumer.interval) == 0, "clear interval");
    CHECK(weft_port_close(port) == 0, "close");
  }
}

static void consumer_interval(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  consumer.interval_hits++;
}

static void posts_into_parking_loop(void) {
  weft_loop_t* loop;
  weft_port_t *in, *out;
  producer_t prods[PRODUCERS];
  uv_thread_t t[PRODUCERS];
  memset(&consumer, 0, sizeof(consumer));
  loop = new_loop();
  new_channel(loop, &in, &out);
  consumer.in = in;
  CHECK(weft_port_on_message(in, on_pair) == 0, "on_message");
  /* A timer keeps the loop's poll bounded, so it parks with a timeout. */
  CHECK(weft_set_interval(loop, 3, consumer_interval, NULL,
                          &consumer.interval) == 0,
        "interval");
  for (int i = 0; i < PRODUCERS; i++) {
    prods[i] = (producer_t){out, i, 0x9e3779b9u * (unsigned)(i + 1), 0};
    CHECK(uv_thread_create(&t[i], producer_main, &prods[i]) == 0, "thread");
  }
  run_loop(loop);
  for (int i = 0; i < PRODUCERS; i++) {
    uv_thread_join(&t[i]);
    CHECK(prods[i].failures == 0, "producer %d: %d posts failed", i,
          prods[i].failures);
  }
  CHECK(consumer.bad == 0, "%ld messages out of order", consumer.bad);
  CHECK(consumer.received == (long)PRODUCERS * PER_PRODUCER,
        "received %ld of %d", consumer.received, PRODUCERS * PER_PRODUCER);
  for (int i = 0; i < PRODUCERS; i++)
    CHECK(consumer.next[i] == PER_PRODUCER, "producer %d ends at %u", i,
          consumer.next[i]);
  CHECK(consumer.ticks_seen == PRODUCERS * PER_PRODUCER, "ticks %d",
        consumer.ticks_seen);
  CHECK(weft_port_free(in) == 0, "free in");
  CHECK(weft_port_free(out) == 0, "free out");
  free_loop(loop);
}

/* --- 3. Both at once ------------------------------------------------------- */

static void posts_thread(void* arg) {
  (void)arg;
  posts_into_parking_loop();
}

/* --- 4. terminate cuts an endless microtask chain (issue 5, item 3) ------ */

static atomic_int chain_runs;
static atomic_int chain_done;

static void chain_micro(weft_loop_t* loop, void* arg) {
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  weft_queue_microtask(loop, chain_micro, NULL);
}

static void chain_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  weft_queue_microtask(loop, chain_micro, NULL);
}

static int chain_code = -1;

static void chain_exit(weft_worker_t* w, int code) {
  (void)w;
  chain_code = code;
}

static void chain_watch(weft_loop_t* loop, void* arg) {
  if (atomic_load(&chain_runs) < 1000) {
    weft_set_timeout(loop, 1, chain_watch, arg, NULL);
    return;
  }
  CHECK(weft_worker_terminate(arg, NULL) == 0, "terminate");
}

/* The old code never ended the worker: fail instead of hanging. */
static void watchdog(void* arg) {
  WAIT_UNTIL(atomic_load(&chain_done), 30000);
  CHECK(atomic_load(&chain_done), "%s: still running after 30 s",
        (const char*)arg);
}

static void terminate_cuts_chain(void) {
  weft_loop_t* loop = NULL;
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  uv_thread_t dog;
  atomic_store(&chain_done, 0);
  CHECK(uv_thread_create(&dog, watchdog, "endless microtask chain") == 0,
        "thread");
  opts.events.exit = chain_exit;
  loop = new_loop();
  w = spawn_worker(loop, chain_entry, &opts);
  CHECK(weft_set_timeout(loop, 1, chain_watch, w, NULL) == 0, "timeout");
  run_loop(loop);
  CHECK(chain_code == 1, "exit code %d", chain_code);
  weft_worker_free(w);
  free_loop(loop);
  atomic_store(&chain_done, 1);
  uv_thread_join(&dog);
}

/* --- 5. Late wake-ups meet a closed loop (issue 5, item 2) ----------------
 * weft__loop_schedule() pushes, then wakes the loop if it is parked. The
 * loop can find the pushed task without the wake-up (a timer woke it, or
 * it was not running), finish, and close itself while the producer has not
 * made its wake-up call yet. The wake-up is a write of 8 bytes to the
 * loop's eventfd (transport/waker.c). This program replaces write() with
 * one that, on threads that ask for it, holds such a write until the
 * loop's owner says it is closing, and a little longer: the window made
 * wide. Then it checks that the descriptor is still open: a weft that
 * closed the loop under the producer would write to a closed descriptor
 * (or to whatever file took its number); a fixed weft waits for the
 * producer before it closes, or the producer sees the loop closed and
 * makes no call. (weft's calls bind to this definition, libweft.so's and
 * weft_static's alike, as an executable's symbols come first; it forwards
 * to the next one, libc's or a sanitizer's.) */

typedef ssize_t (*write_fn)(int fd, const void* buf, size_t n);
static write_fn real_write;
static _Thread_local bool hold_sends; /* This thread's wake-ups are held. */
static atomic_int owner_closing;      /* The loop's owner is closing it. */
static atomic_int held_sends;         /* Wake-ups that were held. */
static atomic_int in_hold;            /* Held wake-ups not yet returned. */

ssize_t write(int fd, const void* buf, size_t n) {
  ssize_t r;
  if (real_write == NULL) /* A call before main() (one thread then). */
    real_write = (write_fn)(uintptr_t)dlsym(RTLD_NEXT, "write");
  if (!hold_sends || n != sizeof(uint64_t))
    return real_write(fd, buf, n);
  /* Bounded: a fixed weft makes the owner wait for this very call. */
  atomic_fetch_add(&in_hold, 1);
  atomic_fetch_add(&held_sends, 1);
  for (int i = 0; i < 300 && !atomic_load(&owner_closing); i++)
    uv_sleep(1);
  if (atomic_load(&owner_closing))
    uv_sleep(30); /* Long enough for the owner to close the loop. */
  CHECK(fcntl(fd, F_GETFD) != -1,
        "a late wake-up found its eventfd closed: the loop closed under it");
  r = real_write(fd, buf, n);
  atomic_fetch_sub(&in_hold, 1);
  return r;
}

/* The end of a round: no held send may outlive it (the next round's loop
 * could take the same memory and descriptor and hide a late send). */
static void await_held_sends(void) {
  while (atomic_load(&in_hold) > 0)
    uv_sleep(1);
}

#define LATE_ROUNDS 4

/* 5a. A notify resolves a worker's waitAsync; the worker's loop, woken by
 * an interval rather than by the notify, delivers it and the worker ends
 * and closes its loop while the notifier is still in its wake-up. */

static void late_wait_done(weft_loop_t* loop, void* arg, weft_wait_result_t r) {
  (void)loop;
  CHECK(r == WEFT_WAIT_OK, "wait result %d", r);
  weft_atomic_add32(arg, 2, 1, NULL);
  atomic_store(&owner_closing, 1);
}

static void late_tick(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

static void late_wait_entry(weft_loop_t* loop, void* arg) {
  weft_shared_t* sh = arg;
  weft_timer_id iv;
  CHECK(weft_atomic_wait_async32(loop, sh, 0, 0, -1, late_wait_done, sh) == 0,
        "wait_async");
  /* Wakes the parked loop every millisecond; does not keep it alive. */
  CHECK(weft_set_interval(loop, 1, late_tick, NULL, &iv) == 0, "interval");
  CHECK(weft_timer_set_ref(loop, iv, false) == 0, "unref");
}

static void late_notifier(void* arg) {
  weft_shared_t* sh = arg;
  int woken = 0;
  hold_sends = true;
  await_waiters(sh, 0, 4, 1);
  uv_sleep(5); /* The worker's loop is parked by now. */
  CHECK(weft_atomic_notify32(sh, 0, 1, &woken) == 0 && woken == 1,
        "notify woke %d", woken);
}

static void late_wake_after_wait_async(void) {
  weft_shared_t* sh = NULL;
  int32_t done;
  CHECK(weft_shared_new(&sh, 64) == 0, "shared");
  for (int i = 0; i < LATE_ROUNDS; i++) {
    weft_loop_t* loop = NULL;
    weft_worker_t* w = NULL;
    weft_worker_opts_t opts = {0};
    uv_thread_t t;
    atomic_store(&owner_closing, 0);
    opts.arg = sh;
    loop = new_loop();
    w = spawn_worker(loop, late_wait_entry, &opts);
    CHECK(uv_thread_create(&t, late_notifier, sh) == 0, "thread");
    run_loop(loop);
    uv_thread_join(&t);
    weft_worker_free(w);
    free_loop(loop);
    await_held_sends();
  }
  printf("late wake-ups after waitAsync: %d held\n",
         atomic_load(&held_sends));
  weft_atomic_load32(sh, 2, &done);
  CHECK(done == LATE_ROUNDS, "%d of %d waits resolved", (int)done,
        LATE_ROUNDS);
  weft_shared_release(sh);
}

/* 5b. The same on the main thread: its loop, woken by an interval, delivers
 * a notify's completion, returns, and weft_loop_free() closes it while the
 * notifier is still in its wake-up. (Ports cannot race this way: a port
 * schedules under its lock, which the owner takes to release the port.) */

static void main_wait_done(weft_loop_t* loop,
                           void* arg,
                           weft_wait_result_t r) {
  (void)loop;
  CHECK(r == WEFT_WAIT_OK, "wait result %d", r);
  ++*(int*)arg;
}

static void late_wake_on_main_loop(void) {
  weft_shared_t* sh = NULL;
  int before = atomic_load(&held_sends);
  int done = 0;
  CHECK(weft_shared_new(&sh, 64) == 0, "shared");
  for (int i = 0; i < LATE_ROUNDS; i++) {
    weft_loop_t* loop = NULL;
    weft_timer_id iv;
    uv_thread_t t;
    atomic_store(&owner_closing, 0);
    loop = new_loop();
    CHECK(weft_atomic_wait_async32(loop, sh, 0, 0, -1, main_wait_done,
                                   &done) == 0,
          "wait_async");
    CHECK(weft_set_interval(loop, 1, late_tick, NULL, &iv) == 0, "interval");
    CHECK(weft_timer_set_ref(loop, iv, false) == 0, "unref");
    CHECK(uv_thread_create(&t, late_notifier, sh) == 0, "thread");
    run_loop(loop);
    atomic_store(&owner_closing, 1);
    free_loop(loop);
    uv_thread_join(&t);
    await_held_sends();
  }
  CHECK(done == LATE_ROUNDS, "%d of %d waits resolved", done, LATE_ROUNDS);
  printf("late wake-ups on the main loop: %d held\n",
         atomic_load(&held_sends) - before);
  weft_shared_release(sh);
}

int main(void) {
  uv_thread_t t;
  real_write = (write_fn)(uintptr_t)dlsym(RTLD_NEXT, "write");
  CHECK(real_write != NULL, "dlsym(write)");
  late_wake_after_wait_async();
  late_wake_on_main_loop();
  terminate_cuts_chain();
  CHECK(atomic_load(&held_sends) > 0, "no wake-up was held: test is void");
  loops_on_threads();
  posts_into_parking_loop();
  /* The parking loop on its own thread while other loops run. */
  CHECK(uv_thread_create(&t, posts_thread, NULL) == 0, "thread");
  loops_on_threads();
  uv_thread_join(&t);
  return 0;
}
