/* scenario_stress.c - the worker stress test, as a plain program (runs under
 * ThreadSanitizer too).
 *
 * Four workers. Main and every worker exchange a stream of data messages
 * both ways over the worker's parent port; workers 0 and 1 also talk
 * directly over a channel that main made with weft_channel_new() and sent
 * one end to each of them (weft_msg_add_port + weft_worker_post_msg; the
 * workers take them with weft_msg_take_port). Every stream is flow
 * controlled by cumulative acknowledgements (a window of WINDOW unacked
 * messages), so memory stays bounded whatever the scheduling.
 *
 * Each data message is [0, seq, payload, bin] where payload = mix(sender,
 * seq) and bin is a few bytes derived from (sender, seq). Every receiver
 * checks per-sender order (seq), each payload and bin, counts, and keeps an
 * order-sensitive checksum; workers report theirs to main over the parent
 * port; main recomputes every expected checksum and verifies.
 *
 * Messages: 1,000,000 data messages in total by default, 100,000 under
 * ThreadSanitizer; argv[1] or WEFT_STRESS_MESSAGES overrides (rounded to a
 * multiple of 10, at least 10). Returns 0 on success; prints the reason and
 * returns 1 otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

#define NWORKERS 4
#define WINDOW 4096
#define ACK_EVERY 512
#define MAIN_ID 100
/* Seconds after which a stalled run fails (a lost message would otherwise
 * hang until ctest's timeout). Only fires if the run is stuck. */
#define WATCHDOG_MS (240 * 1000)

enum { K_DATA = 0, K_ACK = 1, K_REPORT = 2, K_CHANNEL = 3 };

/* --- Payloads and checksums ------------------------------------------------ */

static uint64_t mix(uint64_t sender, uint64_t seq) {
  return mix64((sender << 40) ^ seq ^ 0x9e3779b97f4a7c15ull);
}

static size_t bin_len(uint64_t seq) {
  /* Mostly small; now and then larger than a message's inline buffer. */
  return seq % 997 == 0 ? 300 : (size_t)(seq % 41);
}

static uint8_t bin_byte(uint64_t sender, uint64_t seq, size_t i) {
  return (uint8_t)(seq * 31 + i * 7 + sender);
}

/* FNV-1a over the payload and the bin, chained message after message. */
static uint64_t hash_step(uint64_t h, uint64_t payload, const uint8_t* bin,
                          size_t n) {
  return fnv1a(fnv1a_u64(h, payload), bin, n);
}

#define HASH_SEED FNV_SEED

static uint64_t expected_hash(uint64_t sender, int64_t count) {
  uint8_t bin[300];
  uint64_t h = HASH_SEED;
  for (int64_t s = 0; s < count; s++) {
    size_t n = bin_len((uint64_t)s);
    for (size_t i = 0; i < n; i++)
      bin[i] = bin_byte(sender, (uint64_t)s, i);
    h = hash_step(h, mix(sender, (uint64_t)s), bin, n);
  }
  return h;
}

/* --- Streams: one direction between two parties ---------------------------- */

typedef int (*post_fn_t)(void* to, weft_pack_cb pack, void* arg);

typedef struct {
  uint64_t sender;
  int64_t total;
  int64_t sent;
  int64_t acked;
  post_fn_t post;
  void* to;
  int errors;
} tx_t;

typedef struct {
  uint64_t sender; /* Whose messages this stream carries. */
  int64_t total;
  int64_t next;
  uint64_t hash;
  int errors;
  char first_error[128];
  post_fn_t post; /* Where acks go. */
  void* to;
} rx_t;

typedef struct {
  uint64_t sender;
  uint64_t seq;
} data_arg_t;

static int pack_data(msgpack_packer* pk, void* arg) {
  const data_arg_t* d = arg;
  uint8_t bin[300];
  size_t n = bin_len(d->seq);
  for (size_t i = 0; i < n; i++)
    bin[i] = bin_byte(d->sender, d->seq, i);
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, K_DATA);
  msgpack_pack_uint64(pk, d->seq);
  msgpack_pack_uint64(pk, mix(d->sender, d->seq));
  msgpack_pack_bin(pk, n);
  return msgpack_pack_bin_body(pk, bin, n);
}

static int pack_ack(msgpack_packer* pk, void* arg) {
  msgpack_pack_array(pk, 2);
  msgpack_pack_uint8(pk, K_ACK);
  return msgpack_pack_int64(pk, *(const int64_t*)arg);
}

static void tx_pump(tx_t* t) {
  while (t->sent < t->total && t->sent - t->acked < WINDOW) {
    data_arg_t d = {t->sender, (uint64_t)t->sent};
    int err = t->post(t->to, pack_data, &d);
    if (err != 0) {
      t->errors++;
      return;
    }
    t->sent++;
  }
}

static void tx_ack(tx_t* t, int64_t count) {
  if (count < t->acked || count > t->sent)
    t->errors++;
  else
    t->acked = count;
  tx_pump(t);
}

static bool tx_done(const tx_t* t) {
  return t->acked == t->total;
}

static void rx_fail(rx_t* r, const char* what, int64_t seq) {
  if (r->errors++ == 0)
    snprintf(r->first_error, sizeof(r->first_error),
             "from %llu: %s at seq %lld (expected %lld)",
             (unsigned long long)r->sender, what, (long long)seq,
             (long long)r->next);
}

static void rx_data(rx_t* r, const msgpack_object* o) {
  const msgpack_object* a = o->via.array.ptr;
  uint64_t seq, payload;
  const uint8_t* bin;
  size_t n;
  if (o->via.array.size != 4 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      a[3].type != MSGPACK_OBJECT_BIN) {
    rx_fail(r, "malformed data message", -1);
    return;
  }
  seq = a[1].via.u64;
  payload = a[2].via.u64;
  bin = (const uint8_t*)a[3].via.bin.ptr;
  n = a[3].via.bin.size;
  if ((int64_t)seq != r->next) {
    rx_fail(r, "out of order", (int64_t)seq);
    r->next = (int64_t)seq; /* Resynchronize; the error stays counted. */
  }
  if (payload != mix(r->sender, seq))
    rx_fail(r, "wrong payload", (int64_t)seq);
  if (n != bin_len(seq)) {
    rx_fail(r, "wrong bin length", (int64_t)seq);
  } else {
    for (size_t i = 0; i < n; i++) {
      if (bin[i] != bin_byte(r->sender, seq, i)) {
        rx_fail(r, "wrong bin byte", (int64_t)seq);
        break;
      }
    }
  }
  if (r->next >= r->total)
    rx_fail(r, "more messages than sent", (int64_t)seq);
  r->hash = hash_step(r->hash, payload, bin, n);
  r->next++;
  if (r->next % ACK_EVERY == 0 || r->next == r->total) {
    int64_t count = r->next;
    int err = r->post(r->to, pack_ack, &count);
    if (err != 0)
      rx_fail(r, "ack post failed", (int64_t)seq);
  }
}

/* Kind of a message: K_* or -1. */
static int msg_kind(const msgpack_object* o) {
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2 ||
      o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return -1;
  return (int)o->via.array.ptr[0].via.u64;
}

static int64_t msg_ack_count(const msgpack_object* o) {
  const msgpack_object* c = &o->via.array.ptr[1];
  return c->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)c->via.u64 : -1;
}

/* --- Sizes ------------------------------------------------------------------- */

static int64_t per_stream_main;  /* Main <-> each worker, each way. */
static int64_t per_stream_chan;  /* Worker 0 <-> worker 1, each way. */

/* --- Worker side --------------------------------------------------------------- */

typedef struct {
  int id;
  bool has_channel;
  tx_t to_main;
  rx_t from_main;
  weft_port_t* chan;
  tx_t to_peer;
  rx_t from_peer;
  int errors;
  bool finished;
} wstate_t;

static _Thread_local wstate_t* me;

static int post_parent(void* to, weft_pack_cb pack, void* arg) {
  (void)to;
  return weft_port_post_fn(weft_parent_port(), pack, arg);
}

static int post_port(void* to, weft_pack_cb pack, void* arg) {
  return weft_port_post_fn(to, pack, arg);
}

static int pack_report(msgpack_packer* pk, void* arg) {
  const wstate_t* s = arg;
  msgpack_pack_array(pk, 8);
  msgpack_pack_uint8(pk, K_REPORT);
  msgpack_pack_int(pk, s->id);
  msgpack_pack_int64(pk, s->from_main.next);
  msgpack_pack_uint64(pk, s->from_main.hash);
  msgpack_pack_int64(pk, s->from_peer.next);
  msgpack_pack_uint64(pk, s->from_peer.hash);
  msgpack_pack_int(pk, s->errors + s->to_main.errors + s->from_main.errors +
                           s->to_peer.errors + s->from_peer.errors);
  if (s->from_main.errors > 0)
    return msgpack_pack_str_with_body(pk, s->from_main.first_error,
                                      strlen(s->from_main.first_error));
  if (s->from_peer.errors > 0)
    return msgpack_pack_str_with_body(pk, s->from_peer.first_error,
                                      strlen(s->from_peer.first_error));
  return msgpack_pack_str_with_body(pk, "", 0);
}

static void worker_maybe_finish(wstate_t* s) {
  if (s->finished)
    return;
  if (s->from_main.next != s->from_main.total || !tx_done(&s->to_main))
    return;
  if (s->has_channel &&
      (s->chan == NULL || s->from_peer.next != s->from_peer.total ||
       !tx_done(&s->to_peer)))
    return;
  s->finished = true;
  if (weft_port_post_fn(weft_parent_port(), pack_report, s) != 0)
    s->errors++;
  if (s->chan != NULL) {
    weft_port_free(s->chan);
    s->chan = NULL;
  }
  /* Nothing keeps the loop alive after this: the worker ends (exit 0). */
  weft_port_close(weft_parent_port());
}

static void on_peer_message(weft_port_t* port, weft_msg_t* msg) {
  wstate_t* s = me;
  const msgpack_object* o = weft_msg_object(msg);
  (void)port;
  switch (msg_kind(o)) {
    case K_DATA:
      rx_data(&s->from_peer, o);
      break;
    case K_ACK:
      tx_ack(&s->to_peer, msg_ack_count(o));
      break;
    default:
      s->errors++;
  }
  worker_maybe_finish(s);
}

static void take_channel(wstate_t* s, weft_msg_t* msg,
                         const msgpack_object* o) {
  const msgpack_object* a = o->via.array.ptr;
  int err;
  if (!s->has_channel || s->chan != NULL || o->via.array.size != 3 ||
      weft_msg_ext_kind(&a[1]) != WEFT_EXT_PORT ||
      a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
    s->errors++;
    return;
  }
  err = weft_msg_take_port(msg, &a[1], &s->chan);
  if (err != 0) {
    s->errors++;
    return;
  }
  s->to_peer.sender = (uint64_t)s->id;
  s->to_peer.total = per_stream_chan;
  s->to_peer.post = post_port;
  s->to_peer.to = s->chan;
  s->from_peer.sender = a[2].via.u64;
  s->from_peer.total = per_stream_chan;
  s->from_peer.hash = HASH_SEED;
  s->from_peer.post = post_port;
  s->from_peer.to = s->chan;
  if (weft_port_on_message(s->chan, on_peer_message) != 0)
    s->errors++;
  tx_pump(&s->to_peer);
}

static void on_parent_message(weft_port_t* port, weft_msg_t* msg) {
  wstate_t* s = me;
  const msgpack_object* o = weft_msg_object(msg);
  (void)port;
  switch (msg_kind(o)) {
    case K_DATA:
      rx_data(&s->from_main, o);
      break;
    case K_ACK:
      tx_ack(&s->to_main, msg_ack_count(o));
      break;
    case K_CHANNEL:
      take_channel(s, msg, o);
      break;
    default:
      s->errors++;
  }
  worker_maybe_finish(s);
}

static void worker_entry(weft_loop_t* loop, void* arg) {
  const msgpack_object* d = weft_worker_data();
  /* The state lives in the worker's own heap, freed with it. */
  wstate_t* s = weft_calloc(1, sizeof(*s));
  (void)loop;
  (void)arg;
  if (s == NULL) {
    weft_report_error("no memory for state");
    return;
  }
  if (d == NULL || d->type != MSGPACK_OBJECT_ARRAY || d->via.array.size != 2) {
    weft_report_error("bad worker data");
    return;
  }
  me = s;
  s->id = (int)d->via.array.ptr[0].via.u64;
  s->has_channel = d->via.array.ptr[1].type == MSGPACK_OBJECT_BOOLEAN &&
                   d->via.array.ptr[1].via.boolean;
  s->to_main.sender = (uint64_t)s->id;
  s->to_main.total = per_stream_main;
  s->to_main.post = post_parent;
  s->from_main.sender = MAIN_ID;
  s->from_main.total = per_stream_main;
  s->from_main.hash = HASH_SEED;
  s->from_main.post = post_parent;
  weft_port_on_message(weft_parent_port(), on_parent_message);
  tx_pump(&s->to_main);
}

/* --- Main side -------------------------------------------------------------------- */

typedef struct {
  int id;
  weft_worker_t* w;
  tx_t to_worker;
  rx_t from_worker;
  bool reported;
  int64_t rep_main_count, rep_peer_count;
  uint64_t rep_main_hash, rep_peer_hash;
  int64_t rep_errors;
  char rep_text[128];
  bool exited;
  int exit_code;
  int error_events;
} mstate_t;

static mstate_t ms[NWORKERS];
static int main_errors;

static int post_worker(void* to, weft_pack_cb pack, void* arg) {
  return weft_worker_post_fn(to, pack, arg);
}

static void read_report(mstate_t* m, const msgpack_object* o) {
  const msgpack_object* a = o->via.array.ptr;
  if (m->reported || o->via.array.size != 8 ||
      a[7].type != MSGPACK_OBJECT_STR) {
    main_errors++;
    return;
  }
  m->reported = true;
  m->rep_main_count = a[2].via.i64;
  m->rep_main_hash = a[3].via.u64;
  m->rep_peer_count = a[4].via.i64;
  m->rep_peer_hash = a[5].via.u64;
  m->rep_errors = a[6].via.i64;
  snprintf(m->rep_text, sizeof(m->rep_text), "%.*s",
           (int)a[7].via.str.size, a[7].via.str.ptr);
}

static void on_worker_message(weft_worker_t* w, weft_msg_t* msg) {
  mstate_t* m = weft_worker_get_data(w);
  const msgpack_object* o = weft_msg_object(msg);
  switch (msg_kind(o)) {
    case K_DATA:
      rx_data(&m->from_worker, o);
      break;
    case K_ACK:
      tx_ack(&m->to_worker, msg_ack_count(o));
      break;
    case K_REPORT:
      read_report(m, o);
      break;
    default:
      main_errors++;
  }
}

static void on_worker_messageerror(weft_worker_t* w, int err) {
  (void)w;
  (void)err;
  main_errors++;
}

static void on_worker_error(weft_worker_t* w, int err, const char* text) {
  mstate_t* m = weft_worker_get_data(w);
  fprintf(stderr, "scenario_stress: worker %d error %s: %s\n", m->id,
          weft_err_name(err), text);
  m->error_events++;
}

static void on_worker_exit(weft_worker_t* w, int code) {
  mstate_t* m = weft_worker_get_data(w);
  m->exited = true;
  m->exit_code = code;
}

static void send_channel_end(mstate_t* m, weft_port_t* end, int peer) {
  weft_msg_t* msg = NULL;
  msgpack_packer* pk;
  int err;
  CHECK(weft_msg_new(&msg) == 0, "weft_msg_new");
  pk = weft_msg_packer(msg);
  CHECK(pk != NULL, "weft_msg_packer");
  msgpack_pack_array(pk, 3);
  msgpack_pack_uint8(pk, K_CHANNEL);
  err = weft_msg_add_port(msg, end);
  CHECK(err == 0, "weft_msg_add_port: %s", weft_err_name(err));
  msgpack_pack_int(pk, peer);
  err = weft_worker_post_msg(m->w, &msg);
  CHECK(err == 0, "weft_worker_post_msg: %s", weft_err_name(err));
  CHECK(msg == NULL, "message still the sender's after a post");
  /* The sender's handle is a husk now. */
  CHECK(weft_port_closed(end), "transferred port still open here");
  CHECK(weft_port_free(end) == 0, "free the husk");
}

static void watchdog(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  fprintf(stderr, "scenario_stress: stalled after %d s:", WATCHDOG_MS / 1000);
  for (int i = 0; i < NWORKERS; i++)
    fprintf(stderr, " [w%d to %lld/%lld acked, from %lld, exited %d]", i,
            (long long)ms[i].to_worker.sent, (long long)ms[i].to_worker.acked,
            (long long)ms[i].from_worker.next, ms[i].exited);
  fprintf(stderr, "\n");
  exit(1);
}

static long parse_total(int argc, char** argv) {
  const char* s = argc > 1 ? argv[1] : getenv("WEFT_STRESS_MESSAGES");
  long total = UNDER_TSAN ? 100000 : 1000000;
  if (s != NULL && *s != '\0') {
    char* end;
    total = strtol(s, &end, 10);
    CHECK(*end == '\0' && total >= 10, "bad message count '%s'", s);
  }
  return total / 10 * 10;
}

int main(int argc, char** argv) {
  long total = parse_total(argc, argv);
  weft_loop_t* loop = NULL;
  weft_port_t *end0, *end1;
  weft_timer_id dog;
  int64_t delivered = 0;
  int err;

  /* 4 workers x 2 directions x total/10, plus 2 x total/10 on the channel. */
  per_stream_main = total / 10;
  per_stream_chan = total / 10;

  loop = new_loop();
  for (int i = 0; i < NWORKERS; i++) {
    mstate_t* m = &ms[i];
    weft_worker_opts_t opts;
    unsigned char data[16];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, i);
    if (i < 2)
      msgpack_pack_true(&pk);
    else
      msgpack_pack_false(&pk);
    memcpy(data, sb.data, sb.size);
    memset(&opts, 0, sizeof(opts));
    opts.data = data;
    opts.data_len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    opts.name = "stress";
    opts.user_data = m;
    opts.events.message = on_worker_message;
    opts.events.messageerror = on_worker_messageerror;
    opts.events.error = on_worker_error;
    opts.events.exit = on_worker_exit;
    m->id = i;
    err = weft_worker_spawn(&m->w, loop, worker_entry, &opts);
    CHECK(err == 0, "spawn %d: %s", i, weft_strerror(err));
    m->to_worker.sender = MAIN_ID;
    m->to_worker.total = per_stream_main;
    m->to_worker.post = post_worker;
    m->to_worker.to = m->w;
    m->from_worker.sender = (uint64_t)i;
    m->from_worker.total = per_stream_main;
    m->from_worker.hash = HASH_SEED;
    m->from_worker.post = post_worker;
    m->from_worker.to = m->w;
  }

  /* The direct channel between workers 0 and 1. */
  err = weft_channel_new(loop, &end0, &end1);
  CHECK(err == 0, "weft_channel_new: %s", weft_err_name(err));
  send_channel_end(&ms[0], end0, 1);
  send_channel_end(&ms[1], end1, 0);

  for (int i = 0; i < NWORKERS; i++)
    tx_pump(&ms[i].to_worker);

  dog = arm_watchdog(loop, WATCHDOG_MS, watchdog, NULL);
  err = weft_loop_run(loop);
  CHECK(err == 0, "weft_loop_run: %s", weft_err_name(err));
  weft_clear_timer(loop, dog);
  /* Let the cleared timer's handle finish closing. */
  CHECK(weft_loop_run(loop) == 0, "second run");

  CHECK(main_errors == 0, "%d bad messages on main", main_errors);
  for (int i = 0; i < NWORKERS; i++) {
    mstate_t* m = &ms[i];
    uint64_t want_from_main = expected_hash(MAIN_ID, per_stream_main);
    CHECK(m->exited, "worker %d did not exit", i);
    CHECK(m->error_events == 0, "worker %d: error event", i);
    CHECK(m->exit_code == 0, "worker %d: exit code %d", i, m->exit_code);
    CHECK(m->reported, "worker %d: no report", i);
    CHECK(m->rep_errors == 0, "worker %d: %lld errors: %s", i,
          (long long)m->rep_errors, m->rep_text);
    /* What main sent, as the worker saw it. */
    CHECK(m->rep_main_count == per_stream_main, "worker %d got %lld of %lld",
          i, (long long)m->rep_main_count, (long long)per_stream_main);
    CHECK(m->rep_main_hash == want_from_main, "worker %d: checksum from main",
          i);
    /* What the worker sent, as main saw it. */
    CHECK(m->from_worker.errors == 0, "from worker %d: %s", i,
          m->from_worker.first_error);
    CHECK(m->from_worker.next == per_stream_main, "main got %lld from %d",
          (long long)m->from_worker.next, i);
    CHECK(m->from_worker.hash == expected_hash((uint64_t)i, per_stream_main),
          "checksum from worker %d", i);
    CHECK(m->to_worker.errors == 0 && tx_done(&m->to_worker),
          "stream to worker %d: %d errors, %lld acked", i, m->to_worker.errors,
          (long long)m->to_worker.acked);
    delivered += m->rep_main_count + m->from_worker.next;
    /* The channel. */
    if (i < 2) {
      CHECK(m->rep_peer_count == per_stream_chan, "worker %d got %lld on "
            "the channel", i, (long long)m->rep_peer_count);
      CHECK(m->rep_peer_hash ==
                expected_hash((uint64_t)(1 - i), per_stream_chan),
            "worker %d: channel checksum", i);
      delivered += m->rep_peer_count;
    } else {
      CHECK(m->rep_peer_count == 0, "worker %d: channel traffic", i);
    }
    CHECK(weft_worker_post_fn(m->w, pack_ack, &delivered) == WEFT_ECLOSED,
          "post after exit");
    weft_worker_free(m->w);
  }
  CHECK(delivered == total, "delivered %lld of %ld", (long long)delivered,
        total);
  err = weft_loop_free(loop);
  CHECK(err == 0, "weft_loop_free: %s", weft_err_name(err));
  printf("scenario_stress: ok, %lld data messages checked (%d workers, "
         "direct channel between workers 0 and 1)\n",
         (long long)delivered, NWORKERS);
  return 0;
}
