/* scenario_port.c - concurrent paths of ports and broadcast channels as a
 * plain program (runs under ThreadSanitizer, where Criterion cannot start):
 * many threads posting into one port, buffers and a port moving to a worker
 * and back, a port closed or freed while another thread posts on it,
 * broadcasts from several workers at once, two workers talking over a
 * channel that main handed them, a port moved to a worker mid-stream
 * while another thread posts to it, a port moved while it waits on its
 * old loop's ready queue, ports in transit inside each other's mailboxes,
 * a thread posting on a port while its owner transfers it, a plain
 * thread (no loop) receiving, blocking, what a worker posts, and the
 * owner changing a port's message limit while a thread posts on it. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "support.h"

/* --- helpers ------------------------------------------------------------- */

/* [a, b] as two uint32: 11 bytes, no allocation. */
static size_t pack_pair(unsigned char out[11], uint32_t a, uint32_t b) {
  out[0] = 0x92;
  out[1] = 0xce;
  out[2] = (unsigned char)(a >> 24);
  out[3] = (unsigned char)(a >> 16);
  out[4] = (unsigned char)(a >> 8);
  out[5] = (unsigned char)a;
  out[6] = 0xce;
  out[7] = (unsigned char)(b >> 24);
  out[8] = (unsigned char)(b >> 16);
  out[9] = (unsigned char)(b >> 8);
  out[10] = (unsigned char)b;
  return 11;
}

static bool read_pair(weft_msg_t* m, uint32_t* a, uint32_t* b) {
  const msgpack_object* o = weft_msg_object(m);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
      o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return false;
  *a = (uint32_t)o->via.array.ptr[0].via.u64;
  *b = (uint32_t)o->via.array.ptr[1].via.u64;
  return true;
}

static int post_uint(weft_port_t* p, uint64_t v) {
  unsigned char b[9] = {0xcf};
  for (int i = 0; i < 8; i++)
    b[1 + i] = (unsigned char)(v >> (56 - 8 * i));
  return weft_port_post(p, b, sizeof(b));
}

static bool read_uint(weft_msg_t* m, uint64_t* v) {
  const msgpack_object* o = weft_msg_object(m);
  if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return false;
  *v = o->via.u64;
  return true;
}

/* Worker events shared by the sections: errors fail the scenario. */
static int exits_seen;

static void on_worker_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  CHECK(0, "worker error %s: %s", weft_err_name(err), text);
}

static void on_worker_exit(weft_worker_t* w, int code) {
  (void)w;
  CHECK(code == 0, "worker exit code %d", code);
  exits_seen++;
}

/* --- 1. Several threads post into one port ------------------------------ */

#define POSTERS 4
#define PER_POSTER 20000

static struct {
  weft_port_t* a;
  uint32_t next[POSTERS];
  uint64_t sum;
  int total;
} fan;

static void fan_poster(void* arg) {
  uint32_t id = (uint32_t)(uintptr_t)arg;
  unsigned char b[11];
  for (uint32_t i = 0; i < PER_POSTER; i++) {
    int rc = weft_port_post(fan.a, b, pack_pair(b, id, i));
    CHECK(rc == 0, "post %u/%u: %s", id, i, weft_err_name(rc));
  }
}

static void fan_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad message");
  CHECK(id < POSTERS, "sender %u", id);
  CHECK(seq == fan.next[id], "sender %u: got %u, want %u", id, seq,
        fan.next[id]);
  fan.next[id]++;
  fan.sum += (uint64_t)seq * (id + 1);
  if (++fan.total == POSTERS * PER_POSTER)
    CHECK(weft_port_close(p) == 0, "close");
}

static void many_posters(void) {
  weft_loop_t* loop = new_loop();
  weft_port_t* b;
  uv_thread_t t[POSTERS];
  uint64_t want = 0;
  new_channel(loop, &fan.a, &b);
  CHECK(weft_port_on_message(b, fan_on_message) == 0, "on_message");
  for (uintptr_t i = 0; i < POSTERS; i++)
    CHECK(uv_thread_create(&t[i], fan_poster, (void*)i) == 0, "thread");
  run_loop(loop);
  for (int i = 0; i < POSTERS; i++)
    uv_thread_join(&t[i]);
  for (uint64_t id = 0; id < POSTERS; id++)
    want += (id + 1) * ((uint64_t)PER_POSTER * (PER_POSTER - 1) / 2);
  CHECK(fan.total == POSTERS * PER_POSTER, "total %d", fan.total);
  CHECK(fan.sum == want, "checksum %llu, want %llu",
        (unsigned long long)fan.sum, (unsigned long long)want);
  CHECK(weft_port_free(fan.a) == 0, "free a");
  CHECK(weft_port_free(b) == 0, "free b");
  free_loop(loop);
}

/* --- 2. A buffer and a port move to a worker and back -------------------- */

#define BUF_SIZE (256 * 1024)
#define BUF_ROUNDS 200

/* {"round": n, "buf": <buffer>} and optionally "port": <port> */
static weft_msg_t* buffer_msg(uint32_t round, weft_buffer_t* buf,
                              weft_port_t* port) {
  weft_msg_t* m = NULL;
  msgpack_packer* pk;
  CHECK(weft_msg_new(&m) == 0, "msg_new");
  pk = weft_msg_packer(m);
  msgpack_pack_map(pk, port != NULL ? 3 : 2);
  msgpack_pack_str(pk, 5);
  msgpack_pack_str_body(pk, "round", 5);
  msgpack_pack_uint32(pk, round);
  msgpack_pack_str(pk, 3);
  msgpack_pack_str_body(pk, "buf", 3);
  CHECK(weft_msg_add_buffer(m, buf) == 0, "add_buffer");
  if (port != NULL) {
    msgpack_pack_str(pk, 4);
    msgpack_pack_str_body(pk, "port", 4);
    CHECK(weft_msg_add_port(m, port) == 0, "add_port");
  }
  return m;
}

static const msgpack_object* field(weft_msg_t* m, const char* key) {
  const msgpack_object* o = weft_msg_object(m);
  if (o == NULL || o->type != MSGPACK_OBJECT_MAP)
    return NULL;
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    const msgpack_object* k = &o->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
        memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
      return &o->via.map.ptr[i].val;
  }
  return NULL;
}

/* Worker: add 1 to every byte, send the buffer back on the port. */
static void xw_on_buffer(weft_port_t* p, weft_msg_t* m) {
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  size_t n;
  const msgpack_object* r = field(m, "round");
  CHECK(r != NULL, "no round");
  CHECK(weft_msg_take_buffer(m, field(m, "buf"), &buf) == 0, "take buffer");
  CHECK(weft_buffer_data(buf, (void**)&d, &n) == 0 && n == BUF_SIZE, "data");
  for (size_t i = 0; i < n; i++)
    d[i]++;
  weft_msg_t* back = buffer_msg((uint32_t)r->via.u64, buf, NULL);
  CHECK(weft_port_post_msg(p, &back) == 0, "post back");
  CHECK(weft_buffer_detached(buf), "not detached");
  weft_buffer_free(buf);
}

static void xw_on_close(weft_port_t* p) {
  CHECK(weft_port_free(p) == 0, "worker free");
}

static void xw_on_parent(weft_port_t* parent, weft_msg_t* m) {
  weft_port_t* port = NULL;
  CHECK(weft_msg_take_port(m, field(m, "port"), &port) == 0, "take port");
  CHECK(weft_port_on_close(port, xw_on_close) == 0, "on_close");
  CHECK(weft_port_on_message(port, xw_on_buffer) == 0, "on_message");
  /* The first round came with the port: handle it here. */
  xw_on_buffer(port, m);
  CHECK(weft_port_on_message(parent, NULL) == 0, "parent off");
}

static void xw_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), xw_on_parent) == 0, "on");
}

static struct {
  void* data; /* where the bytes were first allocated */
  uint32_t rounds;
} xm;

static void xm_on_buffer(weft_port_t* p, weft_msg_t* m) {
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  size_t n;
  const msgpack_object* r = field(m, "round");
  CHECK(r != NULL && r->via.u64 == xm.rounds, "round order");
  CHECK(weft_msg_take_buffer(m, field(m, "buf"), &buf) == 0, "take buffer");
  CHECK(weft_buffer_data(buf, (void**)&d, &n) == 0 && n == BUF_SIZE, "data");
  CHECK((void*)d == xm.data, "buffer was copied");
  /* The worker added 1 per round; main adds 1 too. */
  for (size_t i = 0; i < n; i++) {
    CHECK(d[i] == (unsigned char)(i + 2 * xm.rounds + 1), "byte %zu", i);
    d[i]++;
  }
  xm.rounds++;
  if (xm.rounds == BUF_ROUNDS) {
    weft_buffer_free(buf);
    CHECK(weft_port_close(p) == 0, "close");
    return;
  }
  weft_msg_t* again = buffer_msg(xm.rounds, buf, NULL);
  CHECK(weft_port_post_msg(p, &again) == 0, "post again");
  weft_buffer_free(buf);
}

static void buffer_and_port_to_worker(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  weft_port_t *c1, *c2;
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  opts.events.error = on_worker_error;
  opts.events.exit = on_worker_exit;
  exits_seen = 0;
  new_channel(loop, &c1, &c2);
  CHECK(weft_port_on_message(c1, xm_on_buffer) == 0, "on_message");
  CHECK(weft_buffer_new(&buf, BUF_SIZE) == 0, "buffer");
  CHECK(weft_buffer_data(buf, (void**)&d, NULL) == 0, "data");
  for (size_t i = 0; i < BUF_SIZE; i++)
    d[i] = (unsigned char)i;
  xm.data = d;
  w = spawn_worker(loop, xw_entry, &opts);
  weft_msg_t* m = buffer_msg(0, buf, c2);
  CHECK(weft_worker_post_msg(w, &m) == 0, "post to worker");
  CHECK(weft_buffer_detached(buf) && weft_port_closed(c2), "moved");
  run_loop(loop);
  CHECK(xm.rounds == BUF_ROUNDS, "rounds %u", xm.rounds);
  CHECK(exits_seen == 1, "exit");
  weft_worker_free(w);
  weft_buffer_free(buf);
  CHECK(weft_port_free(c2) == 0, "free husk");
  CHECK(weft_port_free(c1) == 0, "free c1");
  free_loop(loop);
}

/* --- 3. A port closed or freed while another thread posts on it ---------- */

enum { CLOSE_RECEIVER, CLOSE_SENDER, FREE_RECEIVER };

static struct {
  weft_port_t* a;
  weft_port_t* b;
  atomic_int posted;
  atomic_int closed_seen;
  int received;
  int mode;
} race;

static void race_poster(void* arg) {
  unsigned char b[11];
  (void)arg;
  for (uint32_t i = 0;; i++) {
    int rc = weft_port_post(race.a, b, pack_pair(b, 0, i));
    if (rc == WEFT_ECLOSED)
      break;
    CHECK(rc == 0, "post: %s", weft_err_name(rc));
    atomic_fetch_add(&race.posted, 1);
  }
  atomic_store(&race.closed_seen, 1);
}

static void race_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad message");
  CHECK(seq == (uint32_t)race.received, "order: %u, want %d", seq,
        race.received);
  if (++race.received != 500)
    return;
  switch (race.mode) {
    case CLOSE_RECEIVER:
      CHECK(weft_port_close(p) == 0, "close b");
      break;
    case CLOSE_SENDER:
      CHECK(weft_port_close(race.a) == 0, "close a");
      break;
    default:
      CHECK(weft_port_free(p) == 0, "free b");
      race.b = NULL;
      break;
  }
}

static void close_while_posting(int mode) {
  weft_loop_t* loop = new_loop();
  uv_thread_t t;
  race.mode = mode;
  race.received = 0;
  atomic_store(&race.posted, 0);
  atomic_store(&race.closed_seen, 0);
  new_channel(loop, &race.a, &race.b);
  CHECK(weft_port_on_message(race.b, race_on_message) == 0, "on_message");
  CHECK(uv_thread_create(&t, race_poster, NULL) == 0, "thread");
  run_loop(loop);
  uv_thread_join(&t);
  CHECK(atomic_load(&race.closed_seen) == 1, "poster never saw ECLOSED");
  CHECK(race.received >= 500, "received %d", race.received);
  CHECK(race.received <= atomic_load(&race.posted), "received %d > posted %d",
        race.received, atomic_load(&race.posted));
  CHECK(weft_port_free(race.a) == 0, "free a");
  CHECK(weft_port_free(race.b) == 0, "free b");
  free_loop(loop);
}

/* --- 4. Broadcasts from several workers at once -------------------------- */

#define BC_WORKERS 3
#define BC_PER 2000

typedef struct {
  uint32_t id;
  weft_broadcast_t* bc;
  uint32_t next[BC_WORKERS];
  int received;
  bool posted_all;
} bcw_t;

static bcw_t bcw[BC_WORKERS];

static void bcw_maybe_done(bcw_t* s) {
  if (!s->posted_all || s->received != (BC_WORKERS - 1) * BC_PER)
    return;
  CHECK(post_uint(weft_parent_port(), (uint64_t)s->received) == 0, "report");
  weft_broadcast_close(s->bc);
}

static void bcw_on_bc(weft_broadcast_t* bc, weft_msg_t* m) {
  bcw_t* s = weft_broadcast_get_data(bc);
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad broadcast");
  CHECK(id < BC_WORKERS && id != s->id, "sender %u at %u", id, s->id);
  CHECK(seq == s->next[id], "worker %u from %u: %u, want %u", s->id, id, seq,
        s->next[id]);
  s->next[id]++;
  s->received++;
  bcw_maybe_done(s);
}

static void bcw_on_parent(weft_port_t* parent, weft_msg_t* m) {
  bcw_t* s = &bcw[*(uint32_t*)weft_port_get_data(parent)];
  unsigned char b[11];
  (void)m; /* "go" */
  for (uint32_t i = 0; i < BC_PER; i++) {
    int rc = weft_broadcast_post(s->bc, b, pack_pair(b, s->id, i));
    CHECK(rc == 0, "broadcast: %s", weft_err_name(rc));
  }
  s->posted_all = true;
  weft_port_on_message(parent, NULL);
  bcw_maybe_done(s);
}

static void bcw_entry(weft_loop_t* loop, void* arg) {
  bcw_t* s = arg;
  CHECK(weft_broadcast_new(loop, "storm", &s->bc) == 0, "open");
  weft_broadcast_set_data(s->bc, s);
  CHECK(weft_broadcast_on_message(s->bc, bcw_on_bc) == 0, "on");
  weft_port_set_data(weft_parent_port(), &s->id);
  CHECK(weft_port_on_message(weft_parent_port(), bcw_on_parent) == 0, "on");
  CHECK(post_uint(weft_parent_port(), 0) == 0, "ready");
}

static struct {
  weft_worker_t* w[BC_WORKERS];
  weft_broadcast_t* bc;
  uint32_t next[BC_WORKERS];
  int received;
  int ready;
  int reports;
} bcm;

static void bcm_maybe_done(void) {
  if (exits_seen == BC_WORKERS && bcm.received == BC_WORKERS * BC_PER)
    CHECK(weft_broadcast_close(bcm.bc) == 0, "close main");
}

static void bcm_on_bc(weft_broadcast_t* bc, weft_msg_t* m) {
  uint32_t id, seq;
  (void)bc;
  CHECK(read_pair(m, &id, &seq), "bad broadcast");
  CHECK(id < BC_WORKERS && seq == bcm.next[id], "main from %u: %u, want %u",
        id, seq, id < BC_WORKERS ? bcm.next[id] : 0);
  bcm.next[id]++;
  bcm.received++;
  bcm_maybe_done();
}

static void bcm_on_worker(weft_worker_t* w, weft_msg_t* m) {
  uint64_t v;
  (void)w;
  CHECK(read_uint(m, &v), "bad worker message");
  if (v == 0) {
    /* Ready; once all are, every worker starts at once. */
    if (++bcm.ready == BC_WORKERS)
      for (int i = 0; i < BC_WORKERS; i++)
        CHECK(weft_worker_post(bcm.w[i], "\xa2go", 3) == 0, "go");
  } else {
    CHECK(v == (BC_WORKERS - 1) * BC_PER, "a worker received %llu",
          (unsigned long long)v);
    bcm.reports++;
  }
}

static void bcm_on_exit(weft_worker_t* w, int code) {
  on_worker_exit(w, code);
  bcm_maybe_done();
}

static void broadcast_storm(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  opts.events.message = bcm_on_worker;
  opts.events.error = on_worker_error;
  opts.events.exit = bcm_on_exit;
  exits_seen = 0;
  CHECK(weft_broadcast_new(loop, "storm", &bcm.bc) == 0, "open main");
  CHECK(weft_broadcast_on_message(bcm.bc, bcm_on_bc) == 0, "on main");
  for (uint32_t i = 0; i < BC_WORKERS; i++) {
    bcw[i].id = i;
    opts.arg = &bcw[i];
    bcm.w[i] = spawn_worker(loop, bcw_entry, &opts);
  }
  run_loop(loop);
  CHECK(bcm.reports == BC_WORKERS, "reports %d", bcm.reports);
  CHECK(bcm.received == BC_WORKERS * BC_PER, "main received %d",
        bcm.received);
  for (int i = 0; i < BC_WORKERS; i++)
    weft_worker_free(bcm.w[i]);
  weft_broadcast_free(bcm.bc);
  free_loop(loop);
}

/* --- 5. Two workers talk over a channel main handed them ----------------- */

#define PINGS 5000

typedef struct {
  int id; /* 0 starts */
  int received;
} peer_t;

static peer_t peers[2];

static void peer_on_close(weft_port_t* p) {
  peer_t* s = weft_port_get_data(p);
  CHECK(post_uint(weft_parent_port(), (uint64_t)s->received + 1) == 0,
        "report");
  CHECK(weft_port_free(p) == 0, "free");
}

static void peer_on_message(weft_port_t* p, weft_msg_t* m) {
  peer_t* s = weft_port_get_data(p);
  uint64_t n;
  CHECK(read_uint(m, &n), "bad ping");
  CHECK(n % 2 == (uint64_t)(1 - s->id), "worker %d got %llu", s->id,
        (unsigned long long)n);
  s->received++;
  if (n == PINGS)
    CHECK(weft_port_close(p) == 0, "close");
  else
    CHECK(post_uint(p, n + 1) == 0, "pong");
}

static void peer_on_parent(weft_port_t* parent, weft_msg_t* m) {
  peer_t* s = weft_port_get_data(parent);
  weft_port_t* p = NULL;
  CHECK(weft_msg_take_port(m, weft_msg_object(m), &p) == 0, "take");
  weft_port_set_data(p, s);
  CHECK(weft_port_on_close(p, peer_on_close) == 0, "on_close");
  CHECK(weft_port_on_message(p, peer_on_message) == 0, "on_message");
  if (s->id == 0)
    CHECK(post_uint(p, 0) == 0, "first ping");
  CHECK(weft_port_on_message(parent, NULL) == 0, "parent off");
}

static void peer_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_port_set_data(weft_parent_port(), arg);
  CHECK(weft_port_on_message(weft_parent_port(), peer_on_parent) == 0, "on");
}

static uint64_t peer_reports;

static void peer_on_report(weft_worker_t* w, weft_msg_t* m) {
  uint64_t v;
  (void)w;
  CHECK(read_uint(m, &v), "bad report");
  peer_reports += v - 1;
}

static void worker_to_worker(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w[2];
  weft_worker_opts_t opts = {0};
  weft_port_t* ends[2];
  opts.events.message = peer_on_report;
  opts.events.error = on_worker_error;
  opts.events.exit = on_worker_exit;
  exits_seen = 0;
  new_channel(loop, &ends[0], &ends[1]);
  for (int i = 0; i < 2; i++) {
    weft_msg_t* m = NULL;
    peers[i].id = i;
    opts.arg = &peers[i];
    w[i] = spawn_worker(loop, peer_entry, &opts);
    CHECK(weft_msg_new(&m) == 0, "msg");
    CHECK(weft_msg_add_port(m, ends[i]) == 0, "add_port");
    CHECK(weft_worker_post_msg(w[i], &m) == 0, "post");
  }
  run_loop(loop);
  CHECK(exits_seen == 2, "exits %d", exits_seen);
  CHECK(peer_reports == PINGS + 1, "messages %llu, want %d",
        (unsigned long long)peer_reports, PINGS + 1);
  for (int i = 0; i < 2; i++) {
    weft_worker_free(w[i]);
    CHECK(weft_port_free(ends[i]) == 0, "free husk");
  }
  free_loop(loop);
}

/* --- 6. A port moves to a worker while another thread posts to it ------- */

#define MOVE_N 20000
#define MOVE_AT 1000

static struct {
  weft_port_t* c1;
  weft_worker_t* w;
  uint32_t main_next;
  bool direct; /* Hand over from inside the port's own handler. */
} mv;

static uint32_t mv_worker_next; /* worker thread only */

static void mv_poster(void* arg) {
  unsigned char b[11];
  (void)arg;
  for (uint32_t i = 0; i < MOVE_N; i++) {
    int rc = weft_port_post(mv.c1, b, pack_pair(b, 0, i));
    CHECK(rc == 0, "post %u: %s", i, weft_err_name(rc));
  }
}

static void mvw_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad message");
  CHECK(seq == mv_worker_next, "worker: %u, want %u", seq, mv_worker_next);
  if (++mv_worker_next == MOVE_N) {
    CHECK(post_uint(weft_parent_port(), mv_worker_next) == 0, "report");
    CHECK(weft_port_free(p) == 0, "free");
  }
}

static void mvw_on_parent(weft_port_t* parent, weft_msg_t* m) {
  weft_port_t* p = NULL;
  CHECK(weft_msg_take_port(m, weft_msg_object(m), &p) == 0, "take");
  mv_worker_next = MOVE_AT;
  CHECK(weft_port_on_message(p, mvw_on_message) == 0, "on_message");
  CHECK(weft_port_on_message(parent, NULL) == 0, "parent off");
}

static void mvw_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), mvw_on_parent) == 0, "on");
}

/* Hand the port over mid-stream, while the poster keeps going. */
static void mv_hand_over(weft_loop_t* loop, void* arg) {
  weft_port_t* p = arg;
  weft_msg_t* out = NULL;
  (void)loop;
  CHECK(weft_msg_new(&out) == 0, "msg");
  CHECK(weft_msg_add_port(out, p) == 0, "add_port");
  CHECK(weft_worker_post_msg(mv.w, &out) == 0, "post port");
  CHECK(weft_port_closed(p), "not moved");
}

static void mv_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad message");
  CHECK(seq == mv.main_next, "main: %u, want %u", seq, mv.main_next);
  if (++mv.main_next < MOVE_AT)
    return;
  if (mv.direct) {
    /* The port leaves this loop in the middle of its own drain. */
    mv_hand_over(NULL, p);
    return;
  }
  CHECK(weft_port_on_message(p, NULL) == 0, "pause");
  CHECK(weft_set_immediate(weft_loop_current(), mv_hand_over, p, NULL) == 0,
        "immediate");
}

static uint64_t mv_report;

static void mv_on_report(weft_worker_t* w, weft_msg_t* m) {
  (void)w;
  CHECK(read_uint(m, &mv_report), "bad report");
}

static void move_while_posting(bool direct) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  weft_port_t* c2;
  uv_thread_t t;
  opts.events.message = mv_on_report;
  opts.events.error = on_worker_error;
  opts.events.exit = on_worker_exit;
  exits_seen = 0;
  mv.main_next = 0;
  mv.direct = direct;
  mv_report = 0;
  new_channel(loop, &mv.c1, &c2);
  mv.w = spawn_worker(loop, mvw_entry, &opts);
  CHECK(weft_port_on_message(c2, mv_on_message) == 0, "on_message");
  CHECK(uv_thread_create(&t, mv_poster, NULL) == 0, "thread");
  run_loop(loop);
  uv_thread_join(&t);
  CHECK(mv.main_next == MOVE_AT, "main handled %u", mv.main_next);
  CHECK(mv_report == MOVE_N, "worker reached %llu",
        (unsigned long long)mv_report);
  CHECK(exits_seen == 1, "exit");
  weft_worker_free(mv.w);
  CHECK(weft_port_free(c2) == 0, "free husk");
  CHECK(weft_port_free(mv.c1) == 0, "free c1");
  free_loop(loop);
}

/* --- 7. A port transferred while it sits on its old loop's ready queue --
 * (issue 5 item 9). Main posts to a started port, so the port waits on
 * main's ready queue, and hands it to a worker without running its loop;
 * then main blocks until the worker has the messages. The new owner must
 * take over the schedule: before, delivery waited for main's loop to run
 * (here: never, so the wait timed out). */

#define QT_N 3

static atomic_int qt_got; /* Messages the worker received, in order. */

static void qt_main_handler(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  (void)m;
  CHECK(0, "delivered on the old loop");
}

static void qtw_on_message(weft_port_t* p, weft_msg_t* m) {
  uint64_t v = 0;
  CHECK(read_uint(m, &v), "bad message");
  CHECK(v == (uint64_t)atomic_load(&qt_got), "order: %llu",
        (unsigned long long)v);
  if (atomic_fetch_add(&qt_got, 1) + 1 == QT_N)
    CHECK(weft_port_free(p) == 0, "free");
}

static void qtw_on_parent(weft_port_t* parent, weft_msg_t* m) {
  weft_port_t* p = NULL;
  CHECK(weft_msg_take_port(m, weft_msg_object(m), &p) == 0, "take");
  CHECK(weft_port_on_message(p, qtw_on_message) == 0, "on_message");
  CHECK(weft_port_on_message(parent, NULL) == 0, "parent off");
}

static void qtw_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), qtw_on_parent) == 0, "on");
}

static void transfer_while_queued(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  weft_worker_t* w = NULL;
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  opts.events.error = on_worker_error;
  opts.events.exit = on_worker_exit;
  exits_seen = 0;
  atomic_store(&qt_got, 0);
  new_channel(loop, &a, &b);
  CHECK(weft_port_on_message(a, qt_main_handler) == 0, "on_message");
  for (int i = 0; i < QT_N; i++)
    CHECK(post_uint(b, (uint64_t)i) == 0, "post");
  /* a is on main's ready queue now. */
  w = spawn_worker(loop, qtw_entry, &opts);
  CHECK(weft_msg_new(&m) == 0, "msg");
  CHECK(weft_msg_add_port(m, a) == 0, "add_port");
  CHECK(weft_worker_post_msg(w, &m) == 0, "post port");
  /* Block without running main's loop (as a thread waiting for the worker
   * would); bounded so that a regression fails. */
  WAIT_UNTIL(atomic_load(&qt_got) >= QT_N, 10000);
  CHECK(atomic_load(&qt_got) == QT_N,
        "the worker got %d of %d messages while main's loop did not run",
        atomic_load(&qt_got), QT_N);
  run_loop(loop);
  CHECK(exits_seen == 1, "exit");
  weft_worker_free(w);
  CHECK(weft_port_free(a) == 0, "free husk");
  CHECK(weft_port_free(b) == 0, "free b");
  free_loop(loop);
}

/* --- 8. Two ports in transit inside each other's mailboxes (item 11) -----
 * A-B and C-D; A goes through C (into D's mailbox), D through B (into
 * A's); every handle is freed. Each core was held only by a message in the
 * other's mailbox: LeakSanitizer (ASan build) reported them at exit. */

/* A message whose value is the port itself. */
static int add_port(weft_msg_t* m, weft_port_t* port) {
  return weft_msg_add_port(m, port);
}

static void transit_cycle(void) {
  weft_loop_t* loop = new_loop();
  for (int i = 0; i < 1000; i++) {
    weft_port_t *a, *b, *c, *d;
    weft_msg_t* m = NULL;
    new_channel(loop, &a, &b);
    new_channel(loop, &c, &d);
    CHECK(weft_msg_new(&m) == 0 && add_port(m, a) == 0, "msg a");
    CHECK(weft_port_post_msg(c, &m) == 0, "post a through c");
    CHECK(weft_msg_new(&m) == 0 && add_port(m, d) == 0, "msg d");
    CHECK(weft_port_post_msg(b, &m) == 0, "post d through b");
    free_channel(a, b);
    free_channel(c, d);
  }
  run_and_free(loop);
}

/* --- 9. Posting on a port while its owner transfers it (item 12) ---------
 * A thread posts on x while main moves x into another channel's mailbox.
 * Every post either reaches x's peer y (it went before the move) or
 * answers WEFT_ECLOSED (after it): none is lost. The handle's core pointer
 * was read twice with plain loads (ThreadSanitizer: data race with the
 * transfer's write; the second read could see NULL). */

static struct {
  weft_port_t* x;
  weft_port_t* y;
  weft_port_t* c1;
  weft_port_t* c2;
  weft_port_t* done_in;
  weft_port_t* done_out;
  atomic_int posted;
  int received;
  bool moved;
} tp;

static void tp_poster(void* arg) {
  (void)arg;
  for (uint64_t i = 0;; i++) {
    int rc = post_uint(tp.x, i);
    if (rc == WEFT_ECLOSED)
      break;
    CHECK(rc == 0, "post: %s", weft_err_name(rc));
    atomic_fetch_add(&tp.posted, 1);
  }
  CHECK(post_uint(tp.done_in, (uint64_t)atomic_load(&tp.posted)) == 0,
        "done");
}

static void tp_count(weft_msg_t* m) {
  uint64_t v = 0;
  CHECK(read_uint(m, &v), "bad message");
  CHECK(v == (uint64_t)tp.received, "order: %llu, want %d",
        (unsigned long long)v, tp.received);
  tp.received++;
}

static void tp_on_y(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  tp_count(m);
  if (tp.received == 300 && !tp.moved) {
    weft_msg_t* out = NULL;
    tp.moved = true;
    CHECK(weft_msg_new(&out) == 0 && add_port(out, tp.x) == 0, "msg");
    CHECK(weft_port_post_msg(tp.c1, &out) == 0, "move x");
  }
}

static void tp_on_done(weft_port_t* p, weft_msg_t* m) {
  uint64_t posted = 0;
  weft_msg_t* left = NULL;
  CHECK(read_uint(m, &posted), "bad done");
  /* The poster's posts all finished before this one: what y has not
   * handled yet is in its mailbox. */
  while (weft_port_receive(tp.y, &left) == 0) {
    tp_count(left);
    weft_msg_free(left);
  }
  CHECK((uint64_t)tp.received == posted, "received %d, posted %llu",
        tp.received, (unsigned long long)posted);
  CHECK(weft_port_close(p) == 0, "close done");
  CHECK(weft_port_close(tp.y) == 0, "close y");
}

static void post_while_transferring(void) {
  weft_loop_t* loop = new_loop();
  uv_thread_t t;
  memset(&tp, 0, sizeof(tp));
  new_channel(loop, &tp.x, &tp.y);
  new_channel(loop, &tp.c1, &tp.c2);
  new_channel(loop, &tp.done_in, &tp.done_out);
  CHECK(weft_port_on_message(tp.y, tp_on_y) == 0, "on y");
  CHECK(weft_port_on_message(tp.done_out, tp_on_done) == 0, "on done");
  CHECK(uv_thread_create(&t, tp_poster, NULL) == 0, "thread");
  run_loop(loop);
  uv_thread_join(&t);
  CHECK(tp.moved, "never moved");
  weft_port_t* all[] = {tp.x, tp.y, tp.c1, tp.c2, tp.done_in, tp.done_out};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
    CHECK(weft_port_free(all[i]) == 0, "free %zu", i);
  run_and_free(loop);
}

/* --- 10. Pause and resume while another thread posts --------------------
 * A port that cannot deliver is HELD (posts leave it off the ready queue);
 * its owner moves it between HELD and scheduled while a thread posts.
 * Every message arrives, in order: no post is left unscheduled. */

#define PR_N 20000

static struct {
  weft_port_t* a;
  weft_port_t* b;
  uint32_t next;
  int pauses;
} pr;

static void pr_on_message(weft_port_t* p, weft_msg_t* m);

static void pr_resume(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(pr.b, pr_on_message) == 0, "resume");
}

static void pr_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t id, seq;
  CHECK(read_pair(m, &id, &seq), "bad message");
  CHECK(seq == pr.next, "got %u, want %u", seq, pr.next);
  if (++pr.next == PR_N) {
    CHECK(weft_port_close(p) == 0, "close");
    return;
  }
  if (pr.next % 97 == 0) {
    pr.pauses++;
    CHECK(weft_port_on_message(p, NULL) == 0, "pause");
    CHECK(weft_set_immediate(weft_loop_current(), pr_resume, NULL, NULL) == 0,
          "immediate");
  }
}

static void pr_poster(void* arg) {
  unsigned char b[11];
  (void)arg;
  for (uint32_t i = 0; i < PR_N; i++)
    CHECK(weft_port_post(pr.a, b, pack_pair(b, 0, i)) == 0, "post %u", i);
}

static void pr_watchdog(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(0, "stuck at %u of %u (a post left unscheduled)", pr.next, PR_N);
}

static void pause_resume_while_posting(void) {
  weft_loop_t* loop = new_loop();
  uv_thread_t t;
  weft_timer_id dog = 0;
  memset(&pr, 0, sizeof(pr));
  new_channel(loop, &pr.a, &pr.b);
  CHECK(weft_port_on_message(pr.b, pr_on_message) == 0, "on_message");
  /* Fires only while something else keeps the loop up: a hang fails. */
  dog = arm_watchdog(loop, 60000, pr_watchdog, NULL);
  CHECK(uv_thread_create(&t, pr_poster, NULL) == 0, "thread");
  run_loop(loop);
  CHECK(weft_clear_timer(loop, dog) == 0, "clear dog");
  uv_thread_join(&t);
  CHECK(pr.next == PR_N, "received %u of %u", pr.next, PR_N);
  CHECK(pr.pauses > 0, "never paused");
  free_channel(pr.a, pr.b);
  free_loop(loop);
}

/* --- 11b. The owner changes the message limit while a thread posts ----- */

#define ML_N 20000

static struct {
  weft_port_t *a, *b;
  uint32_t got;
} ml;

static void ml_on_message(weft_port_t* p, weft_msg_t* m) {
  uint32_t x, y;
  CHECK(read_pair(m, &x, &y) && y == ml.got, "message %u out of order",
        ml.got);
  ml.got++;
  /* Both limits admit the 11-byte posts: what is checked is that a limit
   * set on the loop and read by the posting thread is no data race. */
  CHECK(weft_port_set_max_message(ml.a, ml.got % 2 ? 11 : 4096) == 0,
        "set_max_message");
  if (ml.got == ML_N)
    CHECK(weft_port_close(p) == 0, "close");
}

static void ml_poster(void* arg) {
  unsigned char b[11];
  (void)arg;
  for (uint32_t i = 0; i < ML_N; i++)
    CHECK(weft_port_post(ml.a, b, pack_pair(b, 0, i)) == 0, "post %u", i);
}

static void max_message_while_posting(void) {
  weft_loop_t* loop = new_loop();
  uv_thread_t t;
  memset(&ml, 0, sizeof(ml));
  new_channel(loop, &ml.a, &ml.b);
  CHECK(weft_port_on_message(ml.b, ml_on_message) == 0, "on_message");
  CHECK(uv_thread_create(&t, ml_poster, NULL) == 0, "thread");
  run_loop(loop);
  uv_thread_join(&t);
  CHECK(ml.got == ML_N, "received %u of %u", ml.got, ML_N);
  free_channel(ml.a, ml.b);
  free_loop(loop);
}

/* --- 12. A plain thread receives, blocking, what a worker posts --------- */

#define BR_N 20000

static struct {
  weft_port_t* b;   /* Read by the receiver thread only while it runs. */
  uint64_t next;    /* Receiver thread. */
  int timeouts;     /* Receiver thread. */
} br;

static void brw_on_parent(weft_port_t* parent, weft_msg_t* m) {
  weft_port_t* p = NULL;
  CHECK(weft_msg_take_port(m, weft_msg_object(m), &p) == 0, "take");
  for (uint64_t i = 0; i < BR_N; i++) {
    CHECK(post_uint(p, i) == 0, "post %llu", (unsigned long long)i);
    if (i % 2000 == 0)
      uv_sleep(1); /* Let the receiver drain and park. */
  }
  CHECK(weft_port_free(p) == 0, "free"); /* Closes: the receiver ends. */
  CHECK(weft_port_on_message(parent, NULL) == 0, "parent off");
}

static void brw_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), brw_on_parent) == 0, "on");
}

static void br_receiver(void* arg) {
  (void)arg;
  for (;;) {
    weft_msg_t* m = NULL;
    uint64_t v;
    /* Short timeouts now and then: timing out races with the posts. */
    int rc = weft_port_receive_wait(br.b, br.next % 3 == 0 ? 1 : 5000, &m);
    if (rc == WEFT_ETIMEDOUT) {
      br.timeouts++;
      continue;
    }
    if (rc == WEFT_ECLOSED)
      return;
    CHECK(rc == 0, "receive_wait: %s", weft_err_name(rc));
    CHECK(read_uint(m, &v), "bad message");
    CHECK(v == br.next, "got %llu, want %llu", (unsigned long long)v,
          (unsigned long long)br.next);
    br.next++;
    weft_msg_free(m);
  }
}

static void blocking_receive_from_worker(void) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts;
  weft_worker_t* w;
  weft_port_t* a;
  weft_msg_t* m = NULL;
  uv_thread_t t;
  memset(&opts, 0, sizeof(opts));
  opts.events.error = on_worker_error;
  opts.events.exit = on_worker_exit;
  exits_seen = 0;
  br.next = 0;
  br.timeouts = 0;
  new_channel(loop, &a, &br.b);
  w = spawn_worker(loop, brw_entry, &opts);
  CHECK(uv_thread_create(&t, br_receiver, NULL) == 0, "thread");
  CHECK(weft_msg_new(&m) == 0, "msg");
  CHECK(weft_msg_add_port(m, a) == 0, "add_port");
  CHECK(weft_worker_post_msg(w, &m) == 0, "post");
  run_loop(loop); /* The worker's life; `b` costs this loop nothing. */
  uv_thread_join(&t);
  CHECK(exits_seen == 1, "exits %d", exits_seen);
  CHECK(br.next == BR_N, "received %llu of %d", (unsigned long long)br.next,
        BR_N);
  weft_worker_free(w);
  CHECK(weft_port_free(br.b) == 0, "free b");
  CHECK(weft_port_free(a) == 0, "free husk");
  free_loop(loop);
}

int main(void) {
  many_posters();
  buffer_and_port_to_worker();
  for (int round = 0; round < 5; round++) {
    close_while_posting(CLOSE_RECEIVER);
    close_while_posting(CLOSE_SENDER);
    close_while_posting(FREE_RECEIVER);
  }
  broadcast_storm();
  worker_to_worker();
  for (int round = 0; round < 3; round++) {
    move_while_posting(false);
    move_while_posting(true);
  }
  for (int round = 0; round < 3; round++)
    transfer_while_queued();
  transit_cycle();
  for (int round = 0; round < 5; round++)
    post_while_transferring();
  for (int round = 0; round < 3; round++)
    pause_resume_while_posting();
  for (int round = 0; round < 3; round++)
    blocking_receive_from_worker();
  max_message_while_posting();
  return 0;
}
