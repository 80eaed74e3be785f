/* scenario_loop.c - concurrent paths of the event loop as a plain program
 * (runs under ThreadSanitizer, where Criterion cannot start):
 *   1. several threads, each with its own loop, run timers, intervals,
 *      immediates, next-ticks, microtasks and threadpool work at the same
 *      time, and each checks Node's ordering on its own loop;
 *   2. producer threads post into a port whose loop alternates between
 *      spinning and parking (random small sleeps between posts, an interval
 *      running on the loop); every message arrives exactly once, in order
 *      per producer. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "scenario_loop: %s:%d: ", __FILE__, __LINE__);  \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, " (%s)\n", #cond);                              \
      exit(1);                                                        \
    }                                                                 \
  } while (0)

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
  CHECK(weft_loop_run(loop) == 0, "run");
  CHECK(weft_loop_free(loop) == 0, "free");
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
  CHECK(weft_loop_new(&loop) == 0, "loop");
  CHECK(weft_channel_new(loop, &in, &out) == 0, "channel");
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
  CHECK(weft_loop_run(loop) == 0, "run");
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
  CHECK(weft_loop_free(loop) == 0, "free loop");
}

/* --- 3. Both at once ------------------------------------------------------- */

static void posts_thread(void* arg) {
  (void)arg;
  posts_into_parking_loop();
}

int main(void) {
  uv_thread_t t;
  loops_on_threads();
  posts_into_parking_loop();
  /* The parking loop on its own thread while other loops run. */
  CHECK(uv_thread_create(&t, posts_thread, NULL) == 0, "thread");
  loops_on_threads();
  uv_thread_join(&t);
  return 0;
}
