/* savina_weft.c - weft side of the Savina actor benchmarks (Imam & Sarkar,
 * AGERE 2014): the workloads and protocols of Savina's Akka versions
 * (shamsimam/savina), through weft's public API only; where weft's way
 * differs (how a ring is wired, who drives), the workload's comment says.
 *
 *   savina_weft <workload> [divisor]
 *
 * workload: pingpong counting threadring fjthroughput fjcreation big
 * chameneos idle. `divisor` (1 to 1000, default 1) divides the
 * workload's message (or actor) counts, for quick runs under the
 * sanitizers. Prints one line "RESULT savina.<workload> <value> <unit>":
 * milliseconds from the first spawn to the driver's completion
 * (uv_hrtime), or for idle the RSS increase per idle actor in bytes.
 * Exits 0, 1 when the run's own check (counts, checksums) fails or a weft
 * call fails, 2 on bad arguments.
 * WEFT_SCHEDULERS sets the scheduler count (default: one per CPU).
 *
 * Messages are one msgpack unsigned integer: a kind in the low 3 bits and
 * an argument above, sent pre-packed with weft_actor_send(); replies go to
 * weft_actor_sender(). An actor's state is a plain struct the caller
 * owns; an actor that ends normally stops with weft_actor_stop(). The
 * main thread spawns the first actors and waits with
 * weft_actor_system_wait() (Akka's awaitTermination in Savina). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sysconf */
#endif
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft/weft.h>

/* A weft call or a check that fails inside an actor ends the run at once:
 * the protocol cannot finish without it. */
#define DIE(...)                                  \
  do {                                            \
    fprintf(stderr, "savina_weft: " __VA_ARGS__); \
    fputc('\n', stderr);                          \
    fflush(stderr);                               \
    _Exit(1);                                     \
  } while (0)

#define CHECK(expr)                                                        \
  do {                                                                     \
    int rc_ = (expr);                                                      \
    if (rc_ != 0)                                                          \
      DIE("%s:%d: %s: %s", __FILE__, __LINE__, #expr, weft_err_name(rc_)); \
  } while (0)

/* Waits longer than this are a hang, not a result. */
#define WAIT_MS 120000

/* ---- messages ----------------------------------------------------------- */

static size_t pack_uint(unsigned char* b, uint64_t v) {
  int n, i;
  if (v < 128) {
    b[0] = (unsigned char)v;
    return 1;
  }
  if (v <= UINT8_MAX) {
    b[0] = 0xcc;
    n = 1;
  } else if (v <= UINT16_MAX) {
    b[0] = 0xcd;
    n = 2;
  } else if (v <= UINT32_MAX) {
    b[0] = 0xce;
    n = 4;
  } else {
    b[0] = 0xcf;
    n = 8;
  }
  for (i = 0; i < n; i++)
    b[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
  return (size_t)n + 1;
}

/* Send message `kind` with `arg` (below 2^61): 0 or weft's error. */
static int try_tell(weft_actor_id to, unsigned kind, uint64_t arg) {
  unsigned char b[9];
  return weft_actor_send(to, b, pack_uint(b, arg << 3 | kind));
}

/* The same, where a failure means the run is broken. Returns 0 (a
 * behaviour's "go on"). */
static int tell(weft_actor_id to, unsigned kind, uint64_t arg) {
  CHECK(try_tell(to, kind, arg));
  return 0;
}

static unsigned kind_of(weft_msg_t* m, uint64_t* arg) {
  const msgpack_object* o = weft_msg_object(m);
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    DIE("unexpected message type %d", (int)o->type);
  *arg = o->via.u64 >> 3;
  return (unsigned)(o->via.u64 & 7);
}

static int unexpected(unsigned kind) {
  DIE("unexpected message kind %u", kind);
}

static weft_actor_id spawn(weft_actor_system_t* sys,
                           weft_behaviour_fn fn,
                           void* state) {
  weft_actor_id id;
  CHECK(weft_actor_spawn(sys, fn, state, NULL, &id));
  return id;
}

static void wait_all(weft_actor_system_t* sys) {
  CHECK(weft_actor_system_wait(sys, WAIT_MS));
}

static double ms_since(uint64_t t0) {
  return (double)(uv_hrtime() - t0) / 1e6;
}

/* Savina's performComputation (ThroughputConfig, ForkJoinConfig): one
 * sine, squared, checked so that it is not optimized away. The angle is
 * read from a volatile so the sine is computed at run time, as the JVM
 * does. */
static volatile double theta = 37.2;

static void perform_computation(double t) {
  double sint = sin(t);
  double res = sint * sint;
  if (res <= 0)
    DIE("unrealistic res value %f", res);
}

/* Savina's PseudoRandom: 16-bit LCG, seeded with the actor's index. */
static int64_t next_int(int64_t* value, int64_t exclusive_max) {
  *value = ((*value * 1309) + 13849) & 65535;
  return *value % exclusive_max;
}

/* ---- PingPong: N round trips; the pinger pings itself between two (as
 * Savina's PingActor does: SendPong -> PingMessage to self -> SendPing). */

enum { PP_START, PP_PING, PP_SEND_PING, PP_SEND_PONG, PP_STOP };

typedef struct {
  weft_actor_id pong;
  uint64_t left;
} pinger_t;

static int pinger(weft_actor_t* self, void* state, weft_msg_t* m) {
  pinger_t* p = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg);
  switch (kind) {
    case PP_START:
    case PP_PING:
      p->left--;
      return tell(p->pong, PP_SEND_PING, 0);
    case PP_SEND_PONG:
      if (p->left > 0)
        return tell(weft_actor_self(self), PP_PING, 0);
      tell(p->pong, PP_STOP, 0);
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static int ponger(weft_actor_t* self, void* state, weft_msg_t* m) {
  uint64_t* pongs = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg);
  switch (kind) {
    case PP_SEND_PING:
      ++*pongs;
      return tell(weft_actor_sender(m), PP_SEND_PONG, 0);
    case PP_STOP:
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static bool pingpong(weft_actor_system_t* sys, unsigned div, double* ms) {
  uint64_t n = 1000000 / div, pongs = 0;
  pinger_t p = {0, n};
  uint64_t t0 = uv_hrtime();
  p.pong = spawn(sys, ponger, &pongs);
  tell(spawn(sys, pinger, &p), PP_START, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  return pongs == n && p.left == 0;
}

/* ---- Counting: a producer sends N increments to a counter in one
 * message handler (as Savina does), then asks for the count. A mailbox is
 * bounded only between a sender's messages, so the counter's mailbox may
 * hold many of them; the counter runs meanwhile on another scheduler (it
 * is stolen from the producer's, which keeps sending). */

enum { CT_START, CT_INC, CT_GET, CT_RESULT };

typedef struct {
  weft_actor_id counter;
  uint64_t n, sent, result;
} producer_t;

static int producer(weft_actor_t* self, void* state, weft_msg_t* m) {
  producer_t* p = state;
  uint64_t arg, i;
  unsigned kind = kind_of(m, &arg);
  switch (kind) {
    case CT_START:
      (void)self;
      for (i = 0; i < p->n; i++, p->sent++)
        tell(p->counter, CT_INC, 0);
      return tell(p->counter, CT_GET, 0);
    case CT_RESULT:
      p->result = arg;
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static int counter(weft_actor_t* self, void* state, weft_msg_t* m) {
  uint64_t* count = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg);
  switch (kind) {
    case CT_INC:
      ++*count;
      return 0;
    case CT_GET:
      tell(weft_actor_sender(m), CT_RESULT, *count);
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static bool counting(weft_actor_system_t* sys, unsigned div, double* ms) {
  uint64_t count = 0;
  producer_t p = {0, 2000000 / div, 0, 0};
  uint64_t t0 = uv_hrtime();
  p.counter = spawn(sys, counter, &count);
  tell(spawn(sys, producer, &p), CT_START, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  return p.result == p.n;
}

/* ---- ThreadRing: a token passed R hops around a ring, then an exit
 * message around once. The ring is built before the first message (the
 * states are the caller's), instead of Savina's DataMessage. */

enum { TR_PING, TR_EXIT };

typedef struct {
  weft_actor_id next;
  unsigned size;
  uint64_t pings;
} ring_t;

static int ring_member(weft_actor_t* self, void* state, weft_msg_t* m) {
  ring_t* r = state;
  uint64_t left;
  unsigned kind = kind_of(m, &left);
  int err;
  switch (kind) {
    case TR_PING:
      r->pings++;
      if (left > 0)
        return tell(r->next, TR_PING, left - 1);
      return tell(r->next, TR_EXIT, r->size);
    case TR_EXIT:
      /* The last exit reaches a member that has ended: dead or a dead
       * letter, as in Savina. */
      err = left > 0 ? try_tell(r->next, TR_EXIT, left - 1) : 0;
      if (err != WEFT_EDEADACTOR)
        CHECK(err);
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static bool threadring(weft_actor_system_t* sys, unsigned div, double* ms) {
  unsigned size = 500, i;
  uint64_t hops = 2000000 / div, pings = 0;
  ring_t* ring = calloc(size, sizeof(*ring));
  weft_actor_id* ids = calloc(size, sizeof(*ids));
  uint64_t t0;
  if (ring == NULL || ids == NULL)
    DIE("no memory");
  t0 = uv_hrtime();
  for (i = 0; i < size; i++)
    ids[i] = spawn(sys, ring_member, &ring[i]);
  for (i = 0; i < size; i++)
    ring[i] = (ring_t){ids[(i + 1) % size], size, 0};
  tell(ids[0], TR_PING, hops);
  wait_all(sys);
  *ms = ms_since(t0);
  for (i = 0; i < size; i++)
    pings += ring[i].pings;
  free(ring);
  free(ids);
  return pings == hops + 1;
}

/* ---- Fork-join throughput: A actors each get N messages, sent round robin
 * by a driver; each message runs performComputation(37.2). The driver is
 * an actor, as Erlang's is (a process), sending one round per message to
 * itself: between two rounds the mailboxes' high-water mark can mute it,
 * so memory stays bounded (Savina, CAF and Erlang send all 6,000,000 in
 * one loop into unbounded mailboxes). A driver on the main thread
 * (weft_actor_send_wait) costs a cross-core handoff per message and is
 * slower. */

enum { TP_NEXT, TP_WORK };

typedef struct {
  uint64_t done, n;
} tp_worker_t;

typedef struct {
  weft_actor_id* workers;
  unsigned nworkers;
  uint64_t round, n;
} tp_driver_t;

static int tp_worker(weft_actor_t* self, void* state, weft_msg_t* m) {
  tp_worker_t* w = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg);
  if (kind != TP_WORK)
    return unexpected(kind);
  w->done++;
  perform_computation(theta);
  return w->done == w->n ? weft_actor_stop(self, 0) : 0;
}

static int tp_driver(weft_actor_t* self, void* state, weft_msg_t* m) {
  tp_driver_t* d = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg), i;
  if (kind != TP_NEXT)
    return unexpected(kind);
  for (i = 0; i < d->nworkers; i++)
    tell(d->workers[i], TP_WORK, 0);
  if (++d->round < d->n)
    return tell(weft_actor_self(self), TP_NEXT, 0);
  return weft_actor_stop(self, 0);
}

static bool fjthroughput(weft_actor_system_t* sys, unsigned div, double* ms) {
  unsigned a = 60, i;
  uint64_t n = 100000 / div, done = 0;
  tp_worker_t* w = calloc(a, sizeof(*w));
  weft_actor_id* ids = calloc(a, sizeof(*ids));
  tp_driver_t d = {ids, a, 0, n};
  uint64_t t0;
  if (w == NULL || ids == NULL)
    DIE("no memory");
  t0 = uv_hrtime();
  for (i = 0; i < a; i++) {
    w[i].n = n;
    ids[i] = spawn(sys, tp_worker, &w[i]);
  }
  tell(spawn(sys, tp_driver, &d), TP_NEXT, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  for (i = 0; i < a; i++)
    done += w[i].done;
  free(w);
  free(ids);
  return done == (uint64_t)a * n && d.round == n;
}

/* ---- Fork-join creation: N actors, each spawned, sent one message that
 * runs performComputation(37.2), then ended. */

static atomic_uint_fast64_t fj_done;

static int fj_actor(weft_actor_t* self, void* state, weft_msg_t* m) {
  (void)state;
  (void)m;
  perform_computation(theta);
  /* relaxed: read after weft_actor_system_wait(), which orders the ends. */
  atomic_fetch_add_explicit(&fj_done, 1, memory_order_relaxed);
  return weft_actor_stop(self, 0);
}

static bool fjcreation(weft_actor_system_t* sys, unsigned div, double* ms) {
  uint64_t n = 200000 / div, i;
  uint64_t t0 = uv_hrtime();
  for (i = 0; i < n; i++)
    tell(spawn(sys, fj_actor, NULL), 0, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  return atomic_load(&fj_done) == n;
}

/* ---- Big: W actors each send N pings to pseudo-random neighbours, one at
 * a time (each answered with a pong before the next), then tell a sink;
 * the sink ends them all. */

enum { BG_START, BG_PING, BG_PONG, BG_EXIT };

typedef struct {
  const weft_actor_id* all;
  weft_actor_id sink;
  unsigned index, w;
  int64_t random, expected;
  uint64_t pings, n, bad;
} big_t;

typedef struct {
  const weft_actor_id* all;
  unsigned w, exits;
} sink_t;

static int big_actor(weft_actor_t* self, void* state, weft_msg_t* m) {
  big_t* b = state;
  uint64_t from;
  unsigned kind = kind_of(m, &from);
  switch (kind) {
    case BG_PING:
      return tell(weft_actor_sender(m), BG_PONG, b->index);
    case BG_PONG:
      if ((int64_t)from != b->expected)
        b->bad++;
      /* fall through */
    case BG_START:
      if (b->pings == b->n)
        return tell(b->sink, BG_EXIT, 0);
      b->expected = next_int(&b->random, b->w);
      b->pings++;
      return tell(b->all[b->expected], BG_PING, b->index);
    case BG_EXIT:
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static int big_sink(weft_actor_t* self, void* state, weft_msg_t* m) {
  sink_t* s = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg), i;
  if (kind != BG_EXIT)
    return unexpected(kind);
  if (++s->exits < s->w)
    return 0;
  for (i = 0; i < s->w; i++)
    tell(s->all[i], BG_EXIT, 0);
  return weft_actor_stop(self, 0);
}

static bool big(weft_actor_system_t* sys, unsigned div, double* ms) {
  unsigned w = 120, i;
  uint64_t n = 20000 / div, pings = 0, bad = 0;
  big_t* b = calloc(w, sizeof(*b));
  weft_actor_id* all = calloc(w, sizeof(*all));
  sink_t s = {all, w, 0};
  weft_actor_id sink;
  uint64_t t0;
  if (b == NULL || all == NULL)
    DIE("no memory");
  t0 = uv_hrtime();
  sink = spawn(sys, big_sink, &s);
  for (i = 0; i < w; i++) {
    b[i] = (big_t){all, sink, i, w, i, -1, 0, n, 0};
    all[i] = spawn(sys, big_actor, &b[i]);
  }
  for (i = 0; i < w; i++)
    tell(all[i], BG_START, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  for (i = 0; i < w; i++) {
    pings += b[i].pings;
    bad += b[i].bad;
  }
  free(b);
  free(all);
  return pings == (uint64_t)w * n && bad == 0 && s.exits == w;
}

/* ---- Chameneos: C chameneos meet N times in pairs through a mall; at a
 * meeting each takes the complement of the two colours. A meet message's
 * argument is the chameneo's index and colour; the mall forwards the
 * second's to the first, which answers the second with a change. */

enum { CH_START, CH_MEET, CH_CHANGE, CH_EXIT, CH_COUNT };
enum { RED, YELLOW, BLUE, FADED };

static unsigned complement(unsigned c, unsigned other) {
  static const unsigned char table[4][4] = {
      /* RED */ {RED, BLUE, YELLOW, FADED},
      /* YELLOW */ {BLUE, YELLOW, RED, FADED},
      /* BLUE */ {YELLOW, RED, BLUE, FADED},
      /* FADED */ {FADED, FADED, FADED, FADED}};
  return table[c][other];
}

typedef struct mall_s mall_t;

typedef struct {
  mall_t* mall;
  unsigned index, colour;
  uint64_t meetings;
} chameneo_t;

struct mall_s {
  weft_actor_id self;
  weft_actor_id* ids; /* Written before any chameneo runs. */
  chameneo_t* states;
  unsigned count, faded;
  uint64_t n, sum;
  weft_actor_id waiting;
};

static int meet(chameneo_t* c) {
  return tell(c->mall->self, CH_MEET, (uint64_t)c->index << 2 | c->colour);
}

static int chameneo(weft_actor_t* self, void* state, weft_msg_t* m) {
  chameneo_t* c = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg);
  switch (kind) {
    case CH_START:
      return meet(c);
    case CH_MEET:
      c->colour = complement(c->colour, (unsigned)(arg & 3));
      c->meetings++;
      tell(c->mall->ids[arg >> 2], CH_CHANGE, c->colour);
      return meet(c);
    case CH_CHANGE:
      c->colour = (unsigned)arg;
      c->meetings++;
      return meet(c);
    case CH_EXIT:
      c->colour = FADED;
      tell(weft_actor_sender(m), CH_COUNT, c->meetings);
      return weft_actor_stop(self, 0);
    default:
      return unexpected(kind);
  }
}

static int mall(weft_actor_t* self, void* state, weft_msg_t* m) {
  mall_t* ml = state;
  uint64_t arg;
  unsigned kind = kind_of(m, &arg), i;
  switch (kind) {
    case CH_START:
      ml->self = weft_actor_self(self);
      for (i = 0; i < ml->count; i++) {
        ml->states[i] = (chameneo_t){ml, i, i % 3, 0};
        ml->ids[i] = spawn(weft_actor_system(self), chameneo, &ml->states[i]);
      }
      for (i = 0; i < ml->count; i++)
        tell(ml->ids[i], CH_START, 0);
      return 0;
    case CH_MEET:
      if (ml->n == 0)
        return tell(weft_actor_sender(m), CH_EXIT, 0);
      if (ml->waiting == WEFT_ACTOR_NONE) {
        ml->waiting = weft_actor_sender(m);
        return 0;
      }
      ml->n--;
      tell(ml->waiting, CH_MEET, arg);
      ml->waiting = WEFT_ACTOR_NONE;
      return 0;
    case CH_COUNT:
      ml->sum += arg;
      if (++ml->faded == ml->count)
        return weft_actor_stop(self, 0);
      return 0;
    default:
      return unexpected(kind);
  }
}

static bool chameneos(weft_actor_system_t* sys, unsigned div, double* ms) {
  uint64_t n = 200000 / div;
  mall_t ml = {0, NULL, NULL, 100, 0, n, 0, WEFT_ACTOR_NONE};
  uint64_t t0;
  ml.ids = calloc(ml.count, sizeof(*ml.ids));
  ml.states = calloc(ml.count, sizeof(*ml.states));
  if (ml.ids == NULL || ml.states == NULL)
    DIE("no memory");
  t0 = uv_hrtime();
  tell(spawn(sys, mall, &ml), CH_START, 0);
  wait_all(sys);
  *ms = ms_since(t0);
  free(ml.ids);
  free(ml.states);
  return ml.sum == 2 * n && ml.faded == ml.count;
}

/* ---- Idle memory: the RSS of N actors that never run. */

static int idle_actor(weft_actor_t* self, void* state, weft_msg_t* m) {
  (void)self;
  (void)state;
  (void)m;
  return 0;
}

static double rss_bytes(void) {
  long size = 0, resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2)
    DIE("cannot read /proc/self/statm");
  fclose(f);
  return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

static bool idlemem(weft_actor_system_t* sys, unsigned div, double* bytes) {
  size_t n = 1000000 / div, i;
  double before = rss_bytes();
  for (i = 0; i < n; i++)
    CHECK(weft_actor_spawn(sys, idle_actor, NULL, NULL, NULL));
  *bytes = (rss_bytes() - before) / (double)n;
  return weft_actor_system_count(sys) == n;
}

/* ---- main ------------------------------------------------------------------
 */

static const struct {
  const char* name;
  bool (*run)(weft_actor_system_t* sys, unsigned div, double* value);
  const char* unit;
} workloads[] = {
    {"pingpong", pingpong, "ms"},     {"counting", counting, "ms"},
    {"threadring", threadring, "ms"}, {"fjthroughput", fjthroughput, "ms"},
    {"fjcreation", fjcreation, "ms"}, {"big", big, "ms"},
    {"chameneos", chameneos, "ms"},   {"idle", idlemem, "B/actor"},
};

static int usage(void) {
  size_t i;
  fprintf(stderr, "usage: savina_weft <");
  for (i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
    fprintf(stderr, "%s%s", i > 0 ? "|" : "", workloads[i].name);
  fprintf(stderr, "> [divisor]\n");
  return 2;
}

int main(int argc, char** argv) {
  weft_actor_system_opts_t opts;
  weft_actor_system_t* sys;
  const char* env = getenv("WEFT_SCHEDULERS");
  unsigned long div = 1;
  double value = 0;
  size_t i;
  bool ok;
  if (argc < 2 || argc > 3)
    return usage();
  /* The divisor: argv[2], or SAVINA_SCALE as the peers read it. */
  if (argc == 3 || (getenv("SAVINA_SCALE") != NULL &&
                    *getenv("SAVINA_SCALE") != '\0')) {
    const char* d = argc == 3 ? argv[2] : getenv("SAVINA_SCALE");
    char* end;
    div = strtoul(d, &end, 10);
    if (*end != '\0' || div == 0 || div > 1000)
      return usage();
  }
  for (i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
    if (strcmp(argv[1], workloads[i].name) == 0)
      break;
  if (i == sizeof(workloads) / sizeof(workloads[0]))
    return usage();
  memset(&opts, 0, sizeof(opts));
  if (env != NULL && *env != '\0')
    opts.schedulers = (unsigned)strtoul(env, NULL, 10);
  CHECK(weft_actor_system_new(&sys, &opts));
  ok = workloads[i].run(sys, (unsigned)div, &value);
  /* SAVINA_CHECK_OFFBY=1: every check must fail (run.sh's self-test). */
  if (getenv("SAVINA_CHECK_OFFBY") != NULL &&
      strcmp(getenv("SAVINA_CHECK_OFFBY"), "1") == 0)
    ok = false;
  CHECK(weft_actor_system_free(sys));
  if (!ok) {
    fprintf(stderr, "savina_weft: %s: result check failed\n", argv[1]);
    return 1;
  }
  printf("RESULT savina.%s %.1f %s\n", workloads[i].name, value,
         workloads[i].unit);
  return 0;
}
