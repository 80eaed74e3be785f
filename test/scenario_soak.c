/* scenario_soak.c - everything at once, for a while: rounds of workers that
 * exchange messages with main and with each other, move a port between
 * them, broadcast, share a buffer and transfer buffers, with sizes drawn at
 * random from a seeded generator (the seed is printed; SOAK_SEED replays).
 *
 * One round: main spawns 3 or 4 workers; each opens the broadcast channel
 * "weft-soak" and says READY; then main sends GO to each, with a fresh
 * shared buffer and, to workers 0 and 1, the two ends A and B of a fresh
 * channel. Then, in chunks from immediates (so that everything interleaves):
 *   - main -> each worker and each worker -> main: N data messages;
 *   - A <-> B: N each way; worker 0 sends half of A's stream, then moves A
 *     (with the stream's state) to main, which moves it on to worker 2,
 *     which finishes the stream: messages B posted meanwhile wait in A's
 *     mailbox and must reach worker 2 in order;
 *   - each worker broadcasts M messages; every other worker and main get
 *     each one;
 *   - each worker does N atomic adds on the shared buffer.
 * Data messages are [kind, stream, seq, payload, bin] plus, now and then, a
 * transferred buffer; bin and buffer have random sizes and contents derived
 * from (stream, seq). Every receiver checks per-stream order (a seq below
 * the next expected is a duplicate, above it a reorder), every byte, counts
 * and keeps an order-sensitive checksum (FNV-1a); the sender keeps the same
 * checksum of what it sent; workers report theirs to main, which compares
 * every pair, every count and the atomics, then starts the next round until
 * the time is up. Workers end by closing their ports (exit code 0).
 *
 * Duration: argv[1] or SOAK_SECONDS (seconds, default 10; 5 under TSan).
 * RSS (/proc/self/statm) is sampled after a warm-up (a fifth of the run, at
 * most 30 s), between rounds (the highest is printed) and at the end. Runs
 * of 60 s or more fail if RSS at the end or between rounds grew by more
 * than RSS_SLACK over the sample after the warm-up (not under sanitizers,
 * whose quarantine and shadow memory grow by design); shorter runs only
 * report it. A round that stalls (a lost message) fails after
 * ROUND_WATCHDOG_MS. Prints one summary line; returns 0 on success, 1
 * (with the reason) on any loss, duplicate, reorder, corruption or
 * mismatch. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/weft.h>

#include "support.h"

#define NW_MAX 4
/* Length of a worker's report (see worker_finish). */
#define REP_LEN (14 + 3 * NW_MAX)
#define CHUNK 32
#define BC_NAME "weft-soak"
/* RSS may grow this much after the warm-up in a long run. */
#define RSS_SLACK ((long long)32 << 20)
/* A round takes well under a second; one that has not ended after this
 * long lost a message (it would otherwise wait forever). A hang guard, not
 * a speed check. */
#define ROUND_WATCHDOG_MS 120000

enum { K_DATA, K_READY, K_GO, K_PORT, K_REPORT, K_BCAST };
/* Stream tags (plus the round, so that a stale message is caught). */
enum { S_TO_WORKER = 100, S_TO_MAIN = 0, S_BCAST = 200, S_A2B = 300,
       S_B2A = 301 };

static uint64_t seed;

/* A failed CHECK also prints the seed. */
static void print_seed(void) {
  fprintf(stderr, "scenario_soak: seed %llu (SOAK_SEED replays)\n",
          (unsigned long long)seed);
}

/* --- Random numbers, payloads, checksums --------------------------------- */

static uint64_t mix(uint64_t tag, uint64_t seq) {
  uint64_t s = (tag << 32) ^ seq;
  return splitmix(&s);
}

static uint8_t byte_at(uint64_t tag, uint64_t seq, size_t i) {
  return (uint8_t)(seq * 31 + i * 7 + tag + (i >> 8));
}

/* Sizes: mostly small, now and then past a message's inline bytes or large. */
static size_t bin_size(uint64_t* rng) {
  uint64_t r = splitmix(rng);
  return r % 16 == 0 ? (size_t)(r >> 8) % 8192 : (size_t)(r >> 8) % 160;
}

static size_t buf_size(uint64_t* rng) {
  uint64_t r = splitmix(rng);
  if (r % 16 != 0)
    return SIZE_MAX; /* No buffer. */
  return (size_t)(r >> 8) % 65536;
}

/* --- Streams -------------------------------------------------------------- */

typedef struct {
  uint64_t sent;
  uint64_t hash;
} tx_t;

typedef struct {
  uint64_t next;  /* Next expected seq. */
  uint64_t count; /* Accepted. */
  uint64_t hash;
  uint64_t dup, reord, bad;
} rx_t;

static void rx_init(rx_t* r) {
  memset(r, 0, sizeof(*r));
  r->hash = FNV_SEED;
}

/* Build one data message of stream `tag` (already round-mixed); `*bufp` is
 * the transferred buffer's handle or NULL, for the caller to free after
 * the post (a detached husk then). */
static weft_msg_t* build_data(int kind, uint64_t tag, tx_t* t, uint64_t* rng,
                              weft_buffer_t** bufp) {
  static _Thread_local uint8_t bin[8192];
  weft_msg_t* msg = NULL;
  weft_buffer_t* buf = NULL;
  msgpack_packer* pk;
  uint64_t seq = t->sent;
  uint64_t payload = mix(tag, seq);
  size_t n = bin_size(rng);
  size_t bn = buf_size(rng);
  int err;
  for (size_t i = 0; i < n; i++)
    bin[i] = byte_at(tag, seq, i);
  CHECK(weft_msg_new(&msg) == 0, "weft_msg_new");
  pk = weft_msg_packer(msg);
  CHECK(pk != NULL, "weft_msg_packer");
  msgpack_pack_array(pk, bn == SIZE_MAX ? 5 : 6);
  msgpack_pack_uint8(pk, (uint8_t)kind);
  msgpack_pack_uint64(pk, tag);
  msgpack_pack_uint64(pk, seq);
  msgpack_pack_uint64(pk, payload);
  msgpack_pack_bin(pk, n);
  msgpack_pack_bin_body(pk, bin, n);
  t->hash = fnv1a_u64(t->hash, seq);
  t->hash = fnv1a_u64(t->hash, payload);
  t->hash = fnv1a(t->hash, bin, n);
  if (bn != SIZE_MAX) {
    uint8_t* d;
    size_t sz;
    CHECK(weft_buffer_new(&buf, bn) == 0, "weft_buffer_new(%zu)", bn);
    CHECK(weft_buffer_data(buf, (void**)&d, &sz) == 0 && sz == bn, "data");
    for (size_t i = 0; i < bn; i++)
      d[i] = byte_at(tag ^ 0x55, seq, i);
    t->hash = fnv1a(t->hash, d, bn);
    err = weft_msg_add_buffer(msg, buf);
    CHECK(err == 0, "weft_msg_add_buffer: %s", weft_err_name(err));
  }
  t->sent++;
  *bufp = buf;
  return msg;
}

/* Check one data message against stream `tag`; update `r`. */
static void rx_data(rx_t* r, uint64_t tag, weft_msg_t* msg,
                    const msgpack_object* o) {
  const msgpack_object* a = o->via.array.ptr;
  uint64_t seq, payload;
  size_t n;
  const uint8_t* bin;
  if ((o->via.array.size != 5 && o->via.array.size != 6) ||
      a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      a[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      a[4].type != MSGPACK_OBJECT_BIN || a[1].via.u64 != tag) {
    r->bad++;
    return;
  }
  seq = a[2].via.u64;
  payload = a[3].via.u64;
  n = a[4].via.bin.size;
  bin = (const uint8_t*)a[4].via.bin.ptr;
  if (seq < r->next)
    r->dup++;
  else if (seq > r->next)
    r->reord++;
  r->next = seq + 1;
  r->count++;
  if (payload != mix(tag, seq))
    r->bad++;
  for (size_t i = 0; i < n; i++) {
    if (bin[i] != byte_at(tag, seq, i)) {
      r->bad++;
      break;
    }
  }
  r->hash = fnv1a_u64(r->hash, seq);
  r->hash = fnv1a_u64(r->hash, payload);
  r->hash = fnv1a(r->hash, bin, n);
  if (o->via.array.size == 6) {
    weft_buffer_t* buf = NULL;
    uint8_t* d;
    size_t sz;
    if (msg == NULL || weft_msg_ext_kind(&a[5]) != WEFT_EXT_BUFFER ||
        weft_msg_take_buffer(msg, &a[5], &buf) != 0 ||
        weft_buffer_data(buf, (void**)&d, &sz) != 0) {
      r->bad++;
      weft_buffer_free(buf);
      return;
    }
    for (size_t i = 0; i < sz; i++) {
      if (d[i] != byte_at(tag ^ 0x55, seq, i)) {
        r->bad++;
        break;
      }
    }
    r->hash = fnv1a(r->hash, d, sz);
    weft_buffer_free(buf);
  }
}

static int msg_kind(const msgpack_object* o) {
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1 ||
      o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return -1;
  return (int)o->via.array.ptr[0].via.u64;
}

static uint64_t u64_at(const msgpack_object* o, uint32_t i) {
  if (o->type != MSGPACK_OBJECT_ARRAY || i >= o->via.array.size ||
      o->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return UINT64_MAX;
  return o->via.array.ptr[i].via.u64;
}

static uint64_t tag_of(uint64_t round, uint64_t stream) {
  return (round << 20) | stream;
}

/* --- Worker side ------------------------------------------------------------ */

/* The state of one end of the A/B channel; travels with A. */
typedef struct {
  tx_t tx;
  rx_t rx;
} chan_t;

typedef struct {
  int id, nw;
  uint64_t round, n, m;
  uint64_t rng;
  weft_loop_t* loop;
  weft_broadcast_t* bc;
  weft_shared_t* sh;
  bool go, finished, pumping;
  rx_t from_main;
  tx_t to_main;
  tx_t bc_tx;
  rx_t bc_rx[NW_MAX];
  weft_port_t* chan; /* A (workers 0, then 2) or B (worker 1). */
  bool chan_done;    /* Worker 0: A moved away; others: stream complete. */
  chan_t cs;
  uint64_t atomics;
  uint64_t errors;
} wstate_t;

static _Thread_local wstate_t* me;

static void worker_pump(weft_loop_t* loop, void* arg);

static void pack_u64s(msgpack_packer* pk, const uint64_t* v, size_t n) {
  for (size_t i = 0; i < n; i++)
    msgpack_pack_uint64(pk, v[i]);
}

static void worker_finish(wstate_t* s) {
  weft_msg_t* msg = NULL;
  msgpack_packer* pk;
  uint64_t rep[REP_LEN];
  size_t k = 0;
  if (s->finished || !s->go || s->from_main.count < s->n ||
      s->to_main.sent < s->n || s->bc_tx.sent < s->m || s->atomics < s->n)
    return;
  for (int j = 0; j < s->nw; j++) {
    if (j != s->id && s->bc_rx[j].count < s->m)
      return;
  }
  if (s->id <= 2 && !s->chan_done)
    return;
  s->finished = true;
  rep[k++] = K_REPORT;
  rep[k++] = (uint64_t)s->id;
  rep[k++] = s->errors;
  rep[k++] = s->from_main.count;
  rep[k++] = s->from_main.hash;
  rep[k++] = s->from_main.dup;
  rep[k++] = s->from_main.reord;
  rep[k++] = s->from_main.bad;
  rep[k++] = s->to_main.hash;
  rep[k++] = s->bc_tx.hash;
  for (int j = 0; j < NW_MAX; j++) {
    rep[k++] = s->bc_rx[j].count;
    rep[k++] = s->bc_rx[j].hash;
    rep[k++] = s->bc_rx[j].dup + s->bc_rx[j].reord + s->bc_rx[j].bad;
  }
  /* The channel end this worker finished with (none for worker 0). */
  rep[k++] = s->id == 0 ? 0 : s->cs.tx.hash;
  rep[k++] = s->id == 0 ? 0 : s->cs.rx.count;
  rep[k++] = s->id == 0 ? 0 : s->cs.rx.hash;
  rep[k++] = s->cs.rx.dup + s->cs.rx.reord + s->cs.rx.bad;
  CHECK(weft_msg_new(&msg) == 0, "weft_msg_new");
  pk = weft_msg_packer(msg);
  msgpack_pack_array(pk, (uint32_t)k);
  pack_u64s(pk, rep, k);
  CHECK(weft_port_post_msg(weft_parent_port(), &msg) == 0, "post report");
  if (s->chan != NULL)
    CHECK(weft_port_free(s->chan) == 0, "free channel end");
  s->chan = NULL;
  weft_broadcast_free(s->bc);
  s->bc = NULL;
  weft_shared_release(s->sh);
  s->sh = NULL;
  /* Nothing keeps the loop alive after this: the worker ends (code 0). */
  CHECK(weft_port_close(weft_parent_port()) == 0, "close parent port");
}

static void on_chan_message(weft_port_t* port, weft_msg_t* msg) {
  wstate_t* s = me;
  const msgpack_object* o = weft_msg_object(msg);
  (void)port;
  if (msg_kind(o) != K_DATA) {
    s->errors++;
    return;
  }
  rx_data(&s->cs.rx, tag_of(s->round, s->id == 1 ? S_A2B : S_B2A), msg, o);
  if (s->id != 0 && s->cs.rx.count >= s->n && s->cs.tx.sent >= s->n)
    s->chan_done = true;
  worker_finish(s);
}

static void start_pump(wstate_t* s) {
  if (!s->pumping && !s->finished) {
    s->pumping = true;
    CHECK(weft_set_immediate(s->loop, worker_pump, s, NULL) == 0, "immediate");
  }
}

/* Worker 0: move A to main with the stream's state. */
static void move_a(wstate_t* s) {
  weft_msg_t* msg = NULL;
  msgpack_packer* pk;
  uint64_t st[8] = {s->cs.tx.sent, s->cs.tx.hash, s->cs.rx.next,
                    s->cs.rx.count, s->cs.rx.hash, s->cs.rx.dup,
                    s->cs.rx.reord, s->cs.rx.bad};
  int err;
  CHECK(weft_msg_new(&msg) == 0, "weft_msg_new");
  pk = weft_msg_packer(msg);
  msgpack_pack_array(pk, 10);
  msgpack_pack_uint8(pk, K_PORT);
  err = weft_msg_add_port(msg, s->chan);
  CHECK(err == 0, "weft_msg_add_port: %s", weft_err_name(err));
  pack_u64s(pk, st, 8);
  err = weft_port_post_msg(weft_parent_port(), &msg);
  CHECK(err == 0, "move A: %s", weft_err_name(err));
  CHECK(weft_port_closed(s->chan), "moved port still open here");
  CHECK(weft_port_free(s->chan) == 0, "free the husk");
  s->chan = NULL;
  s->chan_done = true;
}

static void worker_pump(weft_loop_t* loop, void* arg) {
  wstate_t* s = arg;
  bool more = false;
  static _Thread_local uint8_t bin[8192];
  (void)loop;
  s->pumping = false;
  for (int k = 0; k < CHUNK && s->to_main.sent < s->n; k++) {
    weft_buffer_t* buf;
    weft_msg_t* msg = build_data(K_DATA, tag_of(s->round, S_TO_MAIN + s->id),
                                 &s->to_main, &s->rng, &buf);
    int err = weft_port_post_msg(weft_parent_port(), &msg);
    CHECK(err == 0, "worker %d post to main: %s", s->id, weft_err_name(err));
    CHECK(buf == NULL || weft_buffer_detached(buf), "buffer not moved");
    weft_buffer_free(buf);
  }
  more |= s->to_main.sent < s->n;
  for (int k = 0; k < CHUNK && s->bc_tx.sent < s->m; k++) {
    /* Broadcast copies: no transfers; packed by hand into `bin`. */
    uint64_t tag = tag_of(s->round, S_BCAST + s->id);
    uint64_t seq = s->bc_tx.sent;
    size_t n = bin_size(&s->rng) % 1024;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int err;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++)
      bin[i] = byte_at(tag, seq, i);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, K_BCAST);
    msgpack_pack_uint64(&pk, tag);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_uint64(&pk, mix(tag, seq));
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, bin, n);
    s->bc_tx.hash = fnv1a_u64(s->bc_tx.hash, seq);
    s->bc_tx.hash = fnv1a_u64(s->bc_tx.hash, mix(tag, seq));
    s->bc_tx.hash = fnv1a(s->bc_tx.hash, bin, n);
    err = weft_broadcast_post(s->bc, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    CHECK(err == 0, "broadcast post: %s", weft_err_name(err));
    s->bc_tx.sent++;
  }
  more |= s->bc_tx.sent < s->m;
  if (s->chan != NULL && s->cs.tx.sent < s->n) {
    uint64_t stop = s->id == 0 ? s->n / 2 : s->n;
    uint64_t tag = tag_of(s->round, s->id == 1 ? S_B2A : S_A2B);
    for (int k = 0; k < CHUNK && s->cs.tx.sent < stop; k++) {
      weft_buffer_t* buf;
      weft_msg_t* msg = build_data(K_DATA, tag, &s->cs.tx, &s->rng, &buf);
      int err = weft_port_post_msg(s->chan, &msg);
      CHECK(err == 0, "worker %d post on channel: %s", s->id,
            weft_err_name(err));
      CHECK(buf == NULL || weft_buffer_detached(buf), "buffer not moved");
      weft_buffer_free(buf);
    }
    if (s->id == 0 && s->cs.tx.sent == stop)
      move_a(s);
    else if (s->cs.tx.sent >= s->n && s->cs.rx.count >= s->n)
      s->chan_done = true;
    more |= s->chan != NULL && s->cs.tx.sent < s->n;
  }
  for (int k = 0; k < CHUNK && s->atomics < s->n; k++) {
    CHECK(weft_atomic_add32(s->sh, 0, 1, NULL) == 0, "add32");
    CHECK(weft_atomic_add64(s->sh, 1 + (size_t)s->id, (int64_t)s->atomics,
                            NULL) == 0,
          "add64");
    s->atomics++;
  }
  more |= s->atomics < s->n;
  if (more)
    start_pump(s);
  worker_finish(s);
}

static void on_worker_bcast(weft_broadcast_t* bc, weft_msg_t* msg) {
  wstate_t* s = me;
  const msgpack_object* o = weft_msg_object(msg);
  uint64_t stream = u64_at(o, 1) & 0xfffff;
  (void)bc;
  if (msg_kind(o) != K_BCAST || stream < S_BCAST ||
      stream >= S_BCAST + (uint64_t)s->nw || stream == S_BCAST + (uint64_t)s->id) {
    s->errors++;
    return;
  }
  rx_data(&s->bc_rx[stream - S_BCAST], tag_of(s->round, stream), NULL, o);
  worker_finish(s);
}

static void take_a(wstate_t* s, weft_msg_t* msg, const msgpack_object* o) {
  const msgpack_object* a = o->via.array.ptr;
  int err;
  CHECK(o->via.array.size == 10 && s->id == 2 && s->chan == NULL,
        "unexpected port move");
  err = weft_msg_take_port(msg, &a[1], &s->chan);
  CHECK(err == 0, "take A: %s", weft_err_name(err));
  s->cs.tx.sent = u64_at(o, 2);
  s->cs.tx.hash = u64_at(o, 3);
  s->cs.rx.next = u64_at(o, 4);
  s->cs.rx.count = u64_at(o, 5);
  s->cs.rx.hash = u64_at(o, 6);
  s->cs.rx.dup = u64_at(o, 7);
  s->cs.rx.reord = u64_at(o, 8);
  s->cs.rx.bad = u64_at(o, 9);
  CHECK(weft_port_on_message(s->chan, on_chan_message) == 0, "on_message A");
  start_pump(s);
}

static void on_parent_message(weft_port_t* port, weft_msg_t* msg) {
  wstate_t* s = me;
  const msgpack_object* o = weft_msg_object(msg);
  int err;
  (void)port;
  switch (msg_kind(o)) {
    case K_DATA:
      rx_data(&s->from_main, tag_of(s->round, S_TO_WORKER + s->id), msg, o);
      break;
    case K_GO:
      CHECK(!s->go && o->via.array.size >= 2, "bad GO");
      err = weft_msg_take_shared(msg, &o->via.array.ptr[1], &s->sh);
      CHECK(err == 0, "take shared: %s", weft_err_name(err));
      if (s->id <= 1) {
        CHECK(o->via.array.size == 3, "GO without a port");
        err = weft_msg_take_port(msg, &o->via.array.ptr[2], &s->chan);
        CHECK(err == 0, "take channel end: %s", weft_err_name(err));
        CHECK(weft_port_on_message(s->chan, on_chan_message) == 0, "on_msg");
      }
      s->go = true;
      start_pump(s);
      break;
    case K_PORT:
      take_a(s, msg, o);
      break;
    default:
      s->errors++;
  }
  worker_finish(s);
}

static void worker_entry(weft_loop_t* loop, void* arg) {
  const msgpack_object* d = weft_worker_data();
  /* In the worker's own heap: freed with it (an immediate may still hold
   * it after the worker finished). */
  wstate_t* s = weft_calloc(1, sizeof(*s));
  (void)arg;
  CHECK(s != NULL, "weft_calloc");
  CHECK(d != NULL && d->type == MSGPACK_OBJECT_ARRAY && d->via.array.size == 6,
        "bad worker data");
  me = s;
  s->loop = loop;
  s->id = (int)u64_at(d, 0);
  s->nw = (int)u64_at(d, 1);
  s->round = u64_at(d, 2);
  s->n = u64_at(d, 3);
  s->m = u64_at(d, 4);
  s->rng = u64_at(d, 5);
  rx_init(&s->from_main);
  s->to_main.hash = s->bc_tx.hash = s->cs.tx.hash = FNV_SEED;
  rx_init(&s->cs.rx);
  for (int j = 0; j < NW_MAX; j++)
    rx_init(&s->bc_rx[j]);
  CHECK(weft_broadcast_new(loop, BC_NAME, &s->bc) == 0, "broadcast_new");
  CHECK(weft_broadcast_on_message(s->bc, on_worker_bcast) == 0, "bc handler");
  CHECK(weft_port_on_message(weft_parent_port(), on_parent_message) == 0,
        "parent handler");
  {
    uint8_t ready[2] = {0x91, K_READY}; /* [K_READY] */
    CHECK(weft_port_post(weft_parent_port(), ready, 2) == 0, "post READY");
  }
}

/* --- Main side ----------------------------------------------------------------- */

typedef struct {
  weft_worker_t* w;
  bool ready, reported, exited;
  int exit_code, error_events;
  tx_t to_w;
  rx_t from_w;
  uint64_t rep[REP_LEN];
} mstate_t;

static weft_loop_t* loop;
static weft_broadcast_t* main_bc;
static mstate_t ms[NW_MAX];
static rx_t main_bc_rx[NW_MAX];
static int nw;
static uint64_t round_no, n_per, m_per;
static uint64_t rng;
static weft_shared_t* round_sh;
static weft_port_t *end_a, *end_b;
static bool main_pumping, round_over;
static int nready;
static uint64_t t_start, t_end_ns, warmup_ns;
static long long rss_before = -1, rss_after, rss_max;
static uint64_t rounds, messages, spawns, ports_moved, buffers_moved;
static uint64_t lost, duplicated, reordered, corrupt;
static weft_timer_id dog;

static void start_round(weft_loop_t* l, void* arg);
static void watchdog(weft_loop_t* l, void* arg);

static void main_pump(weft_loop_t* l, void* arg) {
  bool more = false;
  (void)l;
  (void)arg;
  main_pumping = false;
  for (int i = 0; i < nw; i++) {
    mstate_t* m = &ms[i];
    for (int k = 0; k < CHUNK && m->to_w.sent < n_per; k++) {
      weft_buffer_t* buf;
      weft_msg_t* msg = build_data(K_DATA, tag_of(round_no, S_TO_WORKER + i),
                                   &m->to_w, &rng, &buf);
      int err = weft_worker_post_msg(m->w, &msg);
      CHECK(err == 0, "post to worker %d: %s", i, weft_err_name(err));
      if (buf != NULL) {
        CHECK(weft_buffer_detached(buf), "buffer not moved");
        buffers_moved++;
      }
      weft_buffer_free(buf);
    }
    more |= m->to_w.sent < n_per;
  }
  if (more && !main_pumping) {
    main_pumping = true;
    CHECK(weft_set_immediate(loop, main_pump, NULL, NULL) == 0, "immediate");
  }
}

static void send_go(void) {
  for (int i = 0; i < nw; i++) {
    weft_msg_t* msg = NULL;
    msgpack_packer* pk;
    int err;
    CHECK(weft_msg_new(&msg) == 0, "weft_msg_new");
    pk = weft_msg_packer(msg);
    msgpack_pack_array(pk, i <= 1 ? 3 : 2);
    msgpack_pack_uint8(pk, K_GO);
    CHECK(weft_msg_add_shared(msg, round_sh) == 0, "add shared");
    if (i <= 1) {
      err = weft_msg_add_port(msg, i == 0 ? end_a : end_b);
      CHECK(err == 0, "add port: %s", weft_err_name(err));
    }
    err = weft_worker_post_msg(ms[i].w, &msg);
    CHECK(err == 0, "post GO: %s", weft_err_name(err));
  }
  CHECK(weft_port_free(end_a) == 0 && weft_port_free(end_b) == 0, "husks");
  end_a = end_b = NULL;
  ports_moved += 2;
  main_pump(loop, NULL);
}

/* Check the round and start the next one (or end). */
static void end_round(weft_loop_t* l, void* arg) {
  uint64_t msgs = 0;
  int32_t v32;
  (void)arg;
  for (int i = 0; i < nw; i++) {
    mstate_t* m = &ms[i];
    const uint64_t* r = m->rep;
    uint64_t fails;
    CHECK(m->exit_code == 0 && m->error_events == 0,
          "worker %d: exit code %d, %d error events", i, m->exit_code,
          m->error_events);
    CHECK(r[1] == (uint64_t)i && r[2] == 0, "worker %d: %llu errors", i,
          (unsigned long long)r[2]);
    /* main -> worker. */
    lost += n_per > r[3] ? n_per - r[3] : 0;
    duplicated += r[5];
    reordered += r[6];
    corrupt += r[7];
    CHECK(r[3] == n_per && r[5] == 0 && r[6] == 0 && r[7] == 0,
          "main -> worker %d: %llu of %llu, %llu dup, %llu reordered, %llu "
          "corrupt", i, (unsigned long long)r[3], (unsigned long long)n_per,
          (unsigned long long)r[5], (unsigned long long)r[6],
          (unsigned long long)r[7]);
    CHECK(r[4] == m->to_w.hash, "main -> worker %d: checksum", i);
    /* worker -> main. */
    lost += n_per > m->from_w.count ? n_per - m->from_w.count : 0;
    duplicated += m->from_w.dup;
    reordered += m->from_w.reord;
    corrupt += m->from_w.bad;
    CHECK(m->from_w.count == n_per && m->from_w.dup == 0 &&
              m->from_w.reord == 0 && m->from_w.bad == 0,
          "worker %d -> main: %llu of %llu, %llu dup, %llu reordered", i,
          (unsigned long long)m->from_w.count, (unsigned long long)n_per,
          (unsigned long long)m->from_w.dup,
          (unsigned long long)m->from_w.reord);
    CHECK(r[8] == m->from_w.hash, "worker %d -> main: checksum", i);
    msgs += 2 * n_per;
    /* Broadcasts of worker i: at main and at every other worker. */
    CHECK(main_bc_rx[i].count == m_per && main_bc_rx[i].dup == 0 &&
              main_bc_rx[i].reord == 0 && main_bc_rx[i].bad == 0,
          "broadcast %d at main: %llu of %llu", i,
          (unsigned long long)main_bc_rx[i].count, (unsigned long long)m_per);
    CHECK(main_bc_rx[i].hash == r[9], "broadcast %d at main: checksum", i);
    msgs += m_per;
    for (int j = 0; j < nw; j++) {
      const uint64_t* rj = ms[j].rep + 10 + 3 * i;
      if (j == i)
        continue;
      lost += m_per > rj[0] ? m_per - rj[0] : 0;
      CHECK(rj[0] == m_per && rj[2] == 0,
            "broadcast %d at worker %d: %llu of %llu, %llu bad", i, j,
            (unsigned long long)rj[0], (unsigned long long)m_per,
            (unsigned long long)rj[2]);
      CHECK(rj[1] == r[9], "broadcast %d at worker %d: checksum", i, j);
      msgs += m_per;
    }
    fails = r[10 + 3 * NW_MAX + 3];
    CHECK(fails == 0, "worker %d: %llu bad channel messages", i,
          (unsigned long long)fails);
  }
  /* The channel: B is worker 1's, A ended at worker 2. */
  {
    const uint64_t* b = ms[1].rep + 10 + 3 * NW_MAX;
    const uint64_t* a = ms[2].rep + 10 + 3 * NW_MAX;
    CHECK(a[1] == n_per && b[1] == n_per, "channel: A got %llu, B got %llu of "
          "%llu", (unsigned long long)a[1], (unsigned long long)b[1],
          (unsigned long long)n_per);
    lost += (n_per - a[1]) + (n_per - b[1]);
    CHECK(a[2] == b[0], "channel B -> A: checksum");
    CHECK(b[2] == a[0], "channel A -> B: checksum");
    msgs += 2 * n_per;
  }
  /* Atomics. */
  CHECK(weft_atomic_load32(round_sh, 0, &v32) == 0, "load32");
  CHECK((int32_t)v32 == (int32_t)(n_per * (uint64_t)nw), "atomic count %d",
        (int)v32);
  for (int i = 0; i < nw; i++) {
    int64_t sum;
    CHECK(weft_atomic_load64(round_sh, 1 + (size_t)i, &sum) == 0, "load64");
    CHECK((uint64_t)sum == n_per * (n_per - 1) / 2, "atomic sum %d", i);
  }
  weft_shared_release(round_sh);
  round_sh = NULL;
  for (int i = 0; i < nw; i++) {
    CHECK(weft_worker_post(ms[i].w, "\xc0", 1) == WEFT_ECLOSED, "post after "
          "exit");
    weft_worker_free(ms[i].w);
    ms[i].w = NULL;
  }
  messages += msgs;
  rounds++;
  if (rss_before < 0 && now_ns() - t_start >= warmup_ns) {
    rss_before = rss_bytes();
  } else if (rss_before >= 0) {
    long long r = rss_bytes(); /* Between rounds: the highest after warm-up. */
    if (r > rss_max)
      rss_max = r;
  }
  if (now_ns() < t_end_ns) {
    start_round(l, NULL);
  } else {
    weft_broadcast_free(main_bc);
    main_bc = NULL;
    weft_clear_timer(loop, dog);
  }
}

static void try_end_round(void) {
  if (round_over)
    return;
  for (int i = 0; i < nw; i++) {
    if (!ms[i].exited || !ms[i].reported || ms[i].from_w.count < n_per ||
        main_bc_rx[i].count < m_per)
      return;
  }
  round_over = true;
  CHECK(weft_set_immediate(loop, end_round, NULL, NULL) == 0, "immediate");
}

static void forward_a(weft_msg_t* msg, const msgpack_object* o) {
  weft_port_t* a = NULL;
  weft_msg_t* out = NULL;
  msgpack_packer* pk;
  int err;
  CHECK(o->via.array.size == 10, "bad PORT message");
  err = weft_msg_take_port(msg, &o->via.array.ptr[1], &a);
  CHECK(err == 0, "main takes A: %s", weft_err_name(err));
  CHECK(weft_msg_new(&out) == 0, "weft_msg_new");
  pk = weft_msg_packer(out);
  msgpack_pack_array(pk, 10);
  msgpack_pack_uint8(pk, K_PORT);
  err = weft_msg_add_port(out, a);
  CHECK(err == 0, "add A: %s", weft_err_name(err));
  for (uint32_t i = 2; i < 10; i++)
    msgpack_pack_uint64(pk, u64_at(o, i));
  err = weft_worker_post_msg(ms[2].w, &out);
  CHECK(err == 0, "move A on: %s", weft_err_name(err));
  CHECK(weft_port_free(a) == 0, "free A's husk");
  ports_moved += 2;
}

static void on_worker_message(weft_worker_t* w, weft_msg_t* msg) {
  mstate_t* m = weft_worker_get_data(w);
  int i = (int)(m - ms);
  const msgpack_object* o = weft_msg_object(msg);
  switch (msg_kind(o)) {
    case K_DATA:
      rx_data(&m->from_w, tag_of(round_no, S_TO_MAIN + i), msg, o);
      break;
    case K_READY:
      CHECK(!m->ready, "READY twice");
      m->ready = true;
      if (++nready == nw)
        send_go();
      break;
    case K_PORT:
      CHECK(i == 0, "PORT from worker %d", i);
      forward_a(msg, o);
      break;
    case K_REPORT:
      CHECK(!m->reported && o->via.array.size == REP_LEN,
            "bad report from %d", i);
      for (uint32_t k = 0; k < o->via.array.size; k++)
        m->rep[k] = u64_at(o, k);
      m->reported = true;
      break;
    default:
      CHECK(0, "unexpected message kind %d from worker %d", msg_kind(o), i);
  }
  try_end_round();
}

static void on_main_bcast(weft_broadcast_t* bc, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  uint64_t stream = u64_at(o, 1) & 0xfffff;
  (void)bc;
  CHECK(msg_kind(o) == K_BCAST && stream >= S_BCAST &&
            stream < S_BCAST + (uint64_t)nw,
        "bad broadcast at main");
  rx_data(&main_bc_rx[stream - S_BCAST], tag_of(round_no, stream), NULL, o);
  try_end_round();
}

static void on_worker_error(weft_worker_t* w, int err, const char* text) {
  mstate_t* m = weft_worker_get_data(w);
  fprintf(stderr, "scenario_soak: worker %d: %s: %s\n", (int)(m - ms),
          weft_err_name(err), text);
  m->error_events++;
}

static void on_worker_messageerror(weft_worker_t* w, int err) {
  (void)w;
  CHECK(0, "messageerror %s", weft_err_name(err));
}

static void on_worker_exit(weft_worker_t* w, int code) {
  mstate_t* m = weft_worker_get_data(w);
  m->exited = true;
  m->exit_code = code;
  try_end_round();
}

static void start_round(weft_loop_t* l, void* arg) {
  int err;
  (void)arg;
  round_no++;
  weft_clear_timer(l, dog);
  dog = arm_watchdog(l, ROUND_WATCHDOG_MS, watchdog, NULL);
  nw = 3 + (int)(splitmix(&rng) % 2);
  n_per = 50 + splitmix(&rng) % (UNDER_TSAN ? 300 : 1000);
  m_per = 10 + splitmix(&rng) % 200;
  nready = 0;
  round_over = false;
  memset(ms, 0, sizeof(ms));
  for (int i = 0; i < NW_MAX; i++)
    rx_init(&main_bc_rx[i]);
  /* A shared buffer of random size (room for the counters at least). */
  err = weft_shared_new(&round_sh, 64 + 64 * (size_t)(splitmix(&rng) % 64));
  CHECK(err == 0, "weft_shared_new: %s", weft_err_name(err));
  err = weft_channel_new(l, &end_a, &end_b);
  CHECK(err == 0, "weft_channel_new: %s", weft_err_name(err));
  for (int i = 0; i < nw; i++) {
    mstate_t* m = &ms[i];
    uint64_t d[6] = {(uint64_t)i, (uint64_t)nw, round_no, n_per, m_per,
                     splitmix(&rng)};
    packed_t data = packed_u64s(d, 6);
    weft_worker_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.data = data.data;
    opts.data_len = data.len;
    opts.name = "soak";
    opts.user_data = m;
    opts.events.message = on_worker_message;
    opts.events.messageerror = on_worker_messageerror;
    opts.events.error = on_worker_error;
    opts.events.exit = on_worker_exit;
    m->to_w.hash = FNV_SEED;
    rx_init(&m->from_w);
    err = weft_worker_spawn(&m->w, l, worker_entry, &opts);
    CHECK(err == 0, "spawn %d: %s", i, weft_err_name(err));
    spawns++;
  }
}

static void watchdog(weft_loop_t* l, void* arg) {
  (void)l;
  (void)arg;
  fprintf(stderr, "scenario_soak: stalled in round %llu:",
          (unsigned long long)round_no);
  for (int i = 0; i < nw; i++)
    fprintf(stderr,
            " [w%d ready %d sent %llu/%llu, from %llu, bc %llu, reported %d, "
            "exited %d]",
            i, ms[i].ready, (unsigned long long)ms[i].to_w.sent,
            (unsigned long long)n_per, (unsigned long long)ms[i].from_w.count,
            (unsigned long long)main_bc_rx[i].count, ms[i].reported,
            ms[i].exited);
  fprintf(stderr, "\n");
  CHECK(0, "watchdog");
}

/* --- A pool task stream beside the rounds --------------------------------
 * A thread without a loop submits batches of tasks (some fail, some are
 * cancelled at random) with a callback (on the pool thread) and a future
 * each; every task must settle exactly once, with the outcome its kind
 * calls for, until the time is up. */
#define POOL_BATCH 128
static atomic_int pool_calls[POOL_BATCH];
static uint64_t pool_tasks;

static int soak_task(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  const msgpack_object* o = weft_msg_object(arg);
  (void)ctx;
  if (o->via.array.ptr[1].via.u64 == 1)
    return WEFT_ERANGE;
  return msgpack_pack_uint64(weft_msg_packer(res),
                             o->via.array.ptr[0].via.u64 * 3);
}

static void soak_done(void* ctx, int status, weft_msg_t* result) {
  (void)status;
  (void)result;
  atomic_fetch_add(&pool_calls[(intptr_t)ctx], 1);
}

static void* pool_stream(void* arg) {
  weft_pool_opts_t o = {.name = "soakpool", .max_threads = 2};
  weft_pool_t* pool = NULL;
  weft_pool_stats_t st;
  weft_task_t* t[POOL_BATCH];
  uint64_t prng = seed ^ 0x5eed, kind[POOL_BATCH];
  int canceled[POOL_BATCH];
  (void)arg;
  CHECK(weft_pool_new(&pool, &o) == 0, "pool");
  CHECK(weft_pool_register(pool, "soak", soak_task, NULL) == 0, "register");
  while (now_ns() < t_end_ns) {
    for (int i = 0; i < POOL_BATCH; i++) {
      uint64_t v[2] = {pool_tasks + (uint64_t)i, splitmix(&prng) % 4};
      packed_t p = packed_u64s(v, 2);
      kind[i] = v[1];
      atomic_store(&pool_calls[i], 0);
      CHECK(weft_pool_submit(pool, "soak", p.data, p.len, soak_done,
                             (void*)(intptr_t)i, &t[i]) == 0,
            "pool submit");
      canceled[i] = kind[i] == 2 && weft_task_cancel(t[i]) == 0;
    }
    for (int i = 0; i < POOL_BATCH; i++) {
      int s;
      CHECK(weft_task_wait(t[i], 60000) == 0, "pool wait");
      s = weft_task_status(t[i]);
      CHECK(s == (canceled[i] ? WEFT_ECANCELED
                              : kind[i] == 1 ? WEFT_ERANGE
                                             : 0),
            "pool task %llu (kind %llu): %s",
            (unsigned long long)(pool_tasks + (uint64_t)i),
            (unsigned long long)kind[i], weft_err_name(s));
      weft_task_free(t[i]);
    }
    for (int i = 0; i < POOL_BATCH; i++) {
      WAIT_UNTIL(atomic_load(&pool_calls[i]) >= 1, 60000);
      CHECK(atomic_load(&pool_calls[i]) == 1, "pool callback ran %d times",
            atomic_load(&pool_calls[i]));
    }
    pool_tasks += POOL_BATCH;
    uv_sleep(1); /* A stream beside the rounds, not a flood. */
  }
  CHECK(weft_pool_stats(pool, &st) == 0, "pool stats");
  CHECK(st.submitted == pool_tasks &&
            st.completed + st.failed + st.canceled == pool_tasks,
        "pool settled %llu of %llu",
        (unsigned long long)(st.completed + st.failed + st.canceled),
        (unsigned long long)pool_tasks);
  CHECK(weft_pool_close(pool) == 0, "pool close");
  return NULL;
}

/* --- Actors beside the rounds -----------------------------------------------
 * A thread of its own runs actor rounds until the time is up: a ring of
 * relays (a random size) carries token streams to a sink that checks each
 * stream's order and counts and keeps the streams' checksums; meanwhile
 * short-lived actors, linked in pairs and watched by a monitor actor, are
 * spawned and killed: every kill must bring exactly one DOWN, and each
 * pair's partner must end with the killed one's reason. At the end of a
 * round the relays are killed and the system must be back to its
 * long-lived actors. */

#define A_STREAMS 8

typedef struct {
  weft_actor_id next;
  weft_actor_id sink;
} relay_t;

typedef struct {
  uint64_t next[A_STREAMS];
  uint64_t sum[A_STREAMS]; /* FNV-1a over the seqs, in arrival order */
  uint64_t got;
  uint64_t bad;
} asink_t;

static uint64_t actor_msgs, actor_rounds, actor_churn;

static uint64_t fnv(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++)
    h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  return h;
}

/* [stream, seq, hops left] */
static int relay(weft_actor_t* self, void* state, weft_msg_t* msg) {
  relay_t* r = state;
  uint64_t st, seq, hops;
  (void)self;
  if (weft_msg_read(msg, "[UUU]", &st, &seq, &hops) != 0)
    return WEFT_EDECODE;
  if (hops == 0)
    return weft_actor_send_fmt(r->sink, "[UU]", st, seq);
  return weft_actor_send_fmt(r->next, "[UUU]", st, seq, hops - 1);
}

static int asink(weft_actor_t* self, void* state, weft_msg_t* msg) {
  asink_t* k = state;
  uint64_t st, seq;
  (void)self;
  if (weft_msg_is_request(msg)) {
    weft_reply_t* r;
    uint64_t out[A_STREAMS + 2];
    packed_t p;
    memcpy(out, k->sum, sizeof(k->sum));
    out[A_STREAMS] = k->got;
    out[A_STREAMS + 1] = k->bad;
    p = packed_u64s(out, A_STREAMS + 2);
    if (weft_msg_take_reply(msg, &r) == 0)
      weft_reply_send(r, p.data, p.len);
    return 0;
  }
  if (weft_msg_read(msg, "[UU]", &st, &seq) != 0 || st >= A_STREAMS ||
      seq != k->next[st]) {
    k->bad++;
    return 0;
  }
  k->next[st]++;
  k->sum[st] = fnv(k->sum[st], seq);
  k->got++;
  return 0;
}

static atomic_ullong downs_seen, partner_ok;

/* Monitors every id it is sent; counts DOWNs. */
static int awatch(weft_actor_t* self, void* state, weft_msg_t* msg) {
  uint64_t id, ref;
  (void)state;
  if (weft_actor_signal(msg, NULL) == WEFT_SIGNAL_DOWN) {
    atomic_fetch_add(&downs_seen, 1);
    return 0;
  }
  if (weft_msg_is_request(msg))
    return weft_msg_reply(msg, "\xc0", 1);
  if (weft_msg_read(msg, "U", &id) == 0)
    return weft_actor_monitor(self, id, &ref);
  return 0;
}

static int idle_actor(weft_actor_t* self, void* state, weft_msg_t* msg) {
  (void)self;
  (void)state;
  (void)msg;
  return 0;
}

static void partner_stop(void* state, int reason) {
  (void)state;
  if (reason == WEFT_ERANGE || reason == WEFT_EKILLED)
    atomic_fetch_add(&partner_ok, 1);
}

static void* actor_stream(void* arg) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t so = {.schedulers = 2};
  asink_t* k = calloc(1, sizeof(*k));
  uint64_t prng = seed ^ 0xac7, sent_sum[A_STREAMS], seq[A_STREAMS] = {0};
  uint64_t kills = 0, pairs = 0;
  weft_actor_id sink, watcher;
  (void)arg;
  for (int i = 0; i < A_STREAMS; i++)
    sent_sum[i] = 0;
  CHECK(weft_actor_system_new(&sys, &so) == 0, "actor system");
  CHECK(weft_actor_spawn(sys, asink, k, NULL, &sink) == 0, "sink");
  CHECK(weft_actor_spawn(sys, awatch, NULL, NULL, &watcher) == 0, "watcher");
  while (now_ns() < t_end_ns) {
    size_t n = 16 + splitmix(&prng) % 241;
    weft_actor_id* ring = calloc(n, sizeof(*ring));
    relay_t* rs = calloc(n, sizeof(*rs));
    weft_msg_t* r = NULL;
    for (size_t i = 0; i < n; i++) {
      rs[i].sink = sink;
      CHECK(weft_actor_spawn(sys, relay, &rs[i], NULL, &ring[i]) == 0,
            "relay");
    }
    for (size_t i = 0; i < n; i++)
      rs[i].next = ring[(i + 1) % n];
    for (int t = 0; t < 200; t++) {
      uint64_t st = splitmix(&prng) % A_STREAMS;
      int err;
      /* A stream always enters at the same relay, so it follows one path
       * and keeps its order. */
      while ((err = weft_actor_send_fmt(ring[st % n], "[UUU]", st, seq[st],
                                        (uint64_t)(n + st))) ==
             WEFT_EMAILBOXFULL)
        uv_sleep(1);
      CHECK(err == 0, "token send: %s", weft_err_name(err));
      sent_sum[st] = fnv(sent_sum[st], seq[st]);
      seq[st]++;
      actor_msgs += n + st + 1;
      /* Churn: a linked pair, one watched; the watched one is killed. */
      if (t % 20 == 0) {
        weft_actor_id a, b;
        weft_actor_opts_t po = {.on_stop = partner_stop};
        CHECK(weft_actor_spawn(sys, idle_actor, NULL, NULL, &a) == 0, "a");
        po.link = a;
        CHECK(weft_actor_spawn(sys, idle_actor, NULL, &po, &b) == 0, "b");
        CHECK(weft_actor_send_fmt(watcher, "U", a) == 0, "watch");
        CHECK(weft_actor_exit(a, (splitmix(&prng) & 1) ? WEFT_ERANGE
                                                        : WEFT_EKILLED) == 0,
              "kill");
        kills++;
        pairs++;
        actor_churn++;
      }
    }
    /* Everything of the round arrived, in order, once. */
    for (;;) {
      const msgpack_object* o;
      uint64_t total = 0;
      CHECK(weft_actor_call(sink, "\xc0", 1, 60000, &r) == 0, "sink call");
      o = weft_msg_object(r);
      for (int i = 0; i < A_STREAMS; i++)
        total += seq[i];
      if (o->via.array.ptr[A_STREAMS].via.u64 == total) {
        for (int i = 0; i < A_STREAMS; i++)
          CHECK(o->via.array.ptr[i].via.u64 == sent_sum[i],
                "actor stream %d: checksum differs", i);
        CHECK(o->via.array.ptr[A_STREAMS + 1].via.u64 == 0,
              "actor tokens out of order");
        weft_msg_free(r);
        break;
      }
      weft_msg_free(r);
      uv_sleep(1);
    }
    for (size_t i = 0; i < n; i++)
      CHECK(weft_actor_exit(ring[i], WEFT_EKILLED) == 0, "relay kill");
    WAIT_UNTIL(weft_actor_system_count(sys) == 2, 60000);
    CHECK(weft_actor_system_count(sys) == 2, "%zu actors left over",
          weft_actor_system_count(sys));
    WAIT_UNTIL(atomic_load(&downs_seen) == kills, 60000);
    CHECK(atomic_load(&downs_seen) == kills, "DOWNs: %llu of %llu",
          (unsigned long long)atomic_load(&downs_seen),
          (unsigned long long)kills);
    CHECK(atomic_load(&partner_ok) == pairs, "linked partners: %llu of %llu",
          (unsigned long long)atomic_load(&partner_ok),
          (unsigned long long)pairs);
    free(ring);
    free(rs);
    actor_rounds++;
  }
  CHECK(weft_actor_system_free(sys) == 0, "actor system free");
  free(k);
  return NULL;
}

int main(int argc, char** argv) {
  const char* d = argc > 1 ? argv[1] : getenv("SOAK_SECONDS");
  const char* sd = getenv("SOAK_SEED");
  double seconds = UNDER_TSAN ? 5 : 10;
  double elapsed;
  int err;
  if (d != NULL && *d != '\0') {
    char* end;
    seconds = strtod(d, &end);
    CHECK(*end == '\0' && seconds > 0 && seconds < 1e6, "bad duration '%s'",
          d);
  }
  if (sd != NULL && *sd != '\0')
    seed = strtoull(sd, NULL, 0);
  else
    seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  rng = seed;
  support_on_fail(print_seed);
  printf("scenario_soak: seed %llu, %.0f s\n", (unsigned long long)seed,
         seconds);
  fflush(stdout);

  t_start = now_ns();
  t_end_ns = t_start + (uint64_t)(seconds * 1e9);
  warmup_ns = (uint64_t)(seconds * 1e9 / 5);
  if (warmup_ns > 30000000000ull)
    warmup_ns = 30000000000ull;

  loop = new_loop();
  CHECK(weft_broadcast_new(loop, BC_NAME, &main_bc) == 0, "broadcast_new");
  CHECK(weft_broadcast_on_message(main_bc, on_main_bcast) == 0, "handler");
  start_round(loop, NULL);
  pthread_t pool_th, actor_th;
  pthread_create(&pool_th, NULL, pool_stream, NULL);
  pthread_create(&actor_th, NULL, actor_stream, NULL);
  err = weft_loop_run(loop);
  pthread_join(pool_th, NULL);
  pthread_join(actor_th, NULL);
  CHECK(err == 0, "weft_loop_run: %s", weft_err_name(err));
  /* Let the cleared watchdog's handle finish closing. */
  CHECK(weft_loop_run(loop) == 0, "second run");
  CHECK(main_bc == NULL, "loop ended before the last round (round %llu)",
        (unsigned long long)round_no);
  elapsed = (double)(now_ns() - t_start) / 1e9;
  rss_after = rss_bytes();
  err = weft_loop_free(loop);
  CHECK(err == 0, "weft_loop_free: %s", weft_err_name(err));

  printf("scenario_soak: %llu messages in %.1f s (%llu rounds, %llu workers, "
         "%llu port moves, %llu buffers moved from main, %llu pool tasks), "
         "actors: %llu messages in %llu rounds, %llu linked pairs killed; "
         "lost %llu, duplicated %llu, reordered %llu, "
         "corrupt %llu, RSS before %.1f MiB after %.1f MiB (highest between "
         "rounds %.1f MiB, warm-up %.0f s), "
         "seed %llu\n",
         (unsigned long long)messages, elapsed, (unsigned long long)rounds,
         (unsigned long long)spawns, (unsigned long long)ports_moved,
         (unsigned long long)buffers_moved, (unsigned long long)pool_tasks,
         (unsigned long long)actor_msgs, (unsigned long long)actor_rounds,
         (unsigned long long)actor_churn, (unsigned long long)lost, (unsigned long long)duplicated,
         (unsigned long long)reordered, (unsigned long long)corrupt,
         rss_before / 1048576.0, rss_after / 1048576.0, rss_max / 1048576.0,
         warmup_ns / 1e9,
         (unsigned long long)seed);
  CHECK(lost == 0 && duplicated == 0 && reordered == 0 && corrupt == 0,
        "messages lost or out of order");
  if (seconds >= 60 && !UNDER_SAN) {
    CHECK(rss_before > 0, "no RSS sample after the warm-up");
    CHECK(rss_after <= rss_before + RSS_SLACK &&
              rss_max <= rss_before + RSS_SLACK,
          "RSS grew from %lld to %lld bytes (highest %lld) after the warm-up "
          "(slack %lld)",
          rss_before, rss_after, rss_max, RSS_SLACK);
  }
  return 0;
}
