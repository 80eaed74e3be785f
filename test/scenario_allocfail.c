/* scenario_allocfail.c - allocation-failure injection (built with
 * WEFT_FAILPOINTS=ON, which scripts/test.sh turns on; otherwise it only
 * says so and passes).
 *
 * For each main scenario (spawn with worker and environment data, on a
 * cached and on a fresh thread; a buffer and a shared buffer to a worker
 * and back; post and receive; transfer of a buffer, a port and a shared
 * buffer; waitAsync and notify; broadcast; ticks, timers, immediates and
 * threadpool work on the main loop and on a worker's fresh loop) it first
 * counts the allocations weft makes in one run
 * (N), then runs it again N times, the k-th allocation failing in run k.
 * Every run must end with either success or a named error
 * (WEFT_ENOMEM) handed to the caller of the call that could not allocate;
 * every message a post accepted must arrive exactly once, none that was
 * refused may arrive; afterwards a run without failure must succeed (the
 * runtime is still usable), and at the end the loop must free cleanly (no
 * handle left) and LeakSanitizer must find nothing (ASan build).
 *
 * Prints, per scenario, the allocations counted and the failure points hit
 * (the numbers in docs/reliability.md). */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h"
#include "support.h"

#ifndef WEFT_FAILPOINTS
int main(void) {
  printf("scenario_allocfail: skipped (configure with -DWEFT_FAILPOINTS=ON)\n");
  return 0;
}
#else

static const char* current_name = "";
static uint64_t current_k;

/* A failed CHECK also names the scenario and the failing allocation. */
static void print_case(void) {
  fprintf(stderr, "scenario_allocfail: in [%s k=%llu]\n", current_name,
          (unsigned long long)current_k);
}

/* The only code an allocation failure may give the caller. */
static bool named(int err) {
  return err == WEFT_ENOMEM;
}

/* A failing call: return its code from the scenario (after `cleanup`). */
#define TRY(expr)                                                   \
  do {                                                              \
    int err_ = (expr);                                              \
    if (err_ != 0) {                                                \
      CHECK(named(err_), "%s gave %s", #expr, weft_err_name(err_)); \
      rc = err_;                                                    \
      goto out;                                                     \
    }                                                               \
  } while (0)

/* A guard so that a lost message fails the scenario instead of hanging
 * it: a raw libuv timer (no weft allocation) that stops the loop. */
static uv_timer_t guard;
static bool guard_fired;

static void guard_cb(uv_timer_t* t) {
  (void)t;
  guard_fired = true;
  weft_loop_stop(weft_loop_current());
}

/* Initialized once in main (unref'd: it never keeps the loop alive). */
static void guard_start(weft_loop_t* loop) {
  (void)loop;
  guard_fired = false;
  uv_timer_start(&guard, guard_cb, 20000, 0);
}

static void guard_stop(void) {
  uv_timer_stop(&guard);
  CHECK(!guard_fired, "the loop did not finish within 20 s");
}

/* [seq, "x" * pad] packed by hand: `pad` > 96 makes a heap payload. */
static size_t pack_seq(unsigned char* out, uint32_t seq, size_t pad) {
  size_t n = 0;
  out[n++] = 0x92;
  out[n++] = 0xce;
  out[n++] = (unsigned char)(seq >> 24);
  out[n++] = (unsigned char)(seq >> 16);
  out[n++] = (unsigned char)(seq >> 8);
  out[n++] = (unsigned char)seq;
  out[n++] = 0xd9;
  out[n++] = (unsigned char)pad;
  memset(out + n, 'x', pad);
  return n + pad;
}

static uint32_t read_seq(weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY &&
            o->via.array.size >= 1 &&
            o->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER,
        "message is not [seq, ...]");
  return (uint32_t)o->via.array.ptr[0].via.u64;
}

/* ---- spawn: worker data, environment data, a message back ---------------- */

static atomic_int worker_post_err;
static int spawn_msgs, spawn_online, spawn_error, spawn_exit = -1;

static void spawn_entry(weft_loop_t* loop, void* arg) {
  const msgpack_object* d = weft_worker_data();
  const void* env;
  size_t len;
  int err;
  (void)loop;
  (void)arg;
  CHECK(d != NULL && d->type == MSGPACK_OBJECT_ARRAY && d->via.array.size == 3,
        "worker data");
  CHECK(weft_get_environment_data("allocfail", &env, &len) == 0 && len == 1,
        "environment data");
  err = weft_port_post(weft_parent_port(), "\xa2ok", 3);
  if (err != 0) {
    atomic_store(&worker_post_err, err);
    weft_worker_exit(3);
  }
}

static void spawn_on_online(weft_worker_t* w) {
  (void)w;
  spawn_online++;
}

static void spawn_on_message(weft_worker_t* w, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  (void)w;
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_STR, "worker message");
  spawn_msgs++;
}

static void spawn_on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  (void)text;
  CHECK(spawn_error == 0, "two error events");
  spawn_error = err;
}

static void spawn_on_exit(weft_worker_t* w, int code) {
  (void)w;
  spawn_exit = code;
}

static int spawn_with(weft_loop_t* loop, unsigned flags) {
  static const unsigned char data[] = {0x93, 1, 2, 3};
  weft_worker_opts_t opts = {0};
  weft_worker_t* w = NULL;
  int rc = 0;
  spawn_msgs = spawn_online = spawn_error = 0;
  spawn_exit = -1;
  atomic_store(&worker_post_err, 0);
  TRY(weft_set_environment_data("allocfail", "\xc3", 1));
  opts.data = data;
  opts.data_len = sizeof(data);
  opts.events.online = spawn_on_online;
  opts.events.message = spawn_on_message;
  opts.events.error = spawn_on_error;
  opts.events.exit = spawn_on_exit;
  opts.flags = flags;
  TRY(weft_worker_spawn(&w, loop, spawn_entry, &opts));
  guard_start(loop);
  run_loop(loop);
  guard_stop();
  CHECK(spawn_exit >= 0, "no exit event");
  if (spawn_exit == 0) {
    CHECK(spawn_error == 0 && spawn_msgs == 1 && spawn_online == 1,
          "exit 0 with error %d, %d messages, %d online", spawn_error,
          spawn_msgs, spawn_online);
  } else if (spawn_exit == 3) {
    rc = atomic_load(&worker_post_err);
    CHECK(named(rc) && spawn_msgs == 0, "worker's post: %s, %d messages",
          weft_err_name(rc), spawn_msgs);
  } else {
    /* The worker could not start or run: the owner is told why. */
    CHECK(spawn_exit == 1 && named(spawn_error) && spawn_msgs <= 1,
          "exit %d with error %s", spawn_exit, weft_err_name(spawn_error));
    rc = spawn_error;
  }
out:
  weft_worker_free(w);
  weft_set_environment_data("allocfail", NULL, 0);
  return rc;
}

static int run_spawn(weft_loop_t* loop) {
  return spawn_with(loop, 0);
}

/* A thread of its own: also the thread record's allocation. */
static int run_spawn_fresh(weft_loop_t* loop) {
  return spawn_with(loop, WEFT_WORKER_FRESH_THREAD);
}

/* ---- a buffer and a shared buffer to a worker and back ------------------- */

static atomic_int wt_worker_err, wt_worker_got;
static int wt_back, wt_owner_err, wt_error, wt_exit;
static weft_shared_t* wt_sh;

/* Worker: take both, check them, send the buffer back. */
static void wt_on_message(weft_port_t* port, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  weft_msg_t* back = NULL;
  void* bytes;
  size_t size;
  int err;
  weft_port_on_message(port, NULL); /* One message: then the worker ends. */
  atomic_store(&wt_worker_got, 1);
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2,
        "worker: message");
  err = weft_msg_take_buffer(m, &o->via.array.ptr[0], &buf);
  if (err == 0)
    err = weft_msg_take_shared(m, &o->via.array.ptr[1], &sh);
  if (err == 0) {
    CHECK(sh == wt_sh, "worker: shared buffer");
    CHECK(weft_buffer_data(buf, &bytes, &size) == 0 && size == 64 &&
              ((unsigned char*)bytes)[63] == 9,
          "worker: buffer");
    err = weft_msg_new(&back);
  }
  if (err == 0)
    err = weft_msg_add_buffer(back, buf);
  if (err == 0)
    err = weft_port_post_msg(port, &back);
  weft_msg_free(back);
  weft_buffer_free(buf);
  if (sh != NULL)
    weft_shared_release(sh);
  if (err != 0) {
    atomic_store(&wt_worker_err, err);
    weft_worker_exit(3);
  }
}

static void wt_entry(weft_loop_t* loop, void* arg) {
  int err;
  (void)loop;
  (void)arg;
  err = weft_port_on_message(weft_parent_port(), wt_on_message);
  CHECK(err == 0, "worker: on_message");
}

static void wt_on_owner_message(weft_worker_t* w, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  weft_buffer_t* buf = NULL;
  int err;
  (void)w;
  err = weft_msg_take_buffer(m, o, &buf);
  if (err == 0) {
    CHECK(weft_buffer_size(buf) == 64, "buffer back");
    wt_back++;
  } else {
    CHECK(named(err), "take back: %s", weft_err_name(err));
    wt_owner_err = err;
  }
  weft_buffer_free(buf);
}

static void wt_on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  (void)text;
  wt_error = err;
}

static void wt_on_exit(weft_worker_t* w, int code) {
  (void)w;
  wt_exit = code;
}

static int run_worker_transfer(weft_loop_t* loop) {
  weft_worker_opts_t opts = {0};
  weft_worker_t* w = NULL;
  weft_buffer_t* buf = NULL;
  weft_msg_t* m = NULL;
  void* bytes;
  int rc = 0, err;
  atomic_store(&wt_worker_err, 0);
  atomic_store(&wt_worker_got, 0);
  wt_back = wt_owner_err = wt_error = 0;
  wt_exit = -1;
  wt_sh = NULL;
  opts.events.message = wt_on_owner_message;
  opts.events.error = wt_on_error;
  opts.events.exit = wt_on_exit;
  TRY(weft_shared_new(&wt_sh, 16));
  TRY(weft_buffer_new(&buf, 64));
  CHECK(weft_buffer_data(buf, &bytes, NULL) == 0, "buffer");
  memset(bytes, 9, 64);
  TRY(weft_worker_spawn(&w, loop, wt_entry, &opts));
  err = weft_msg_new(&m);
  if (err == 0 && msgpack_pack_array(weft_msg_packer(m), 2) != 0)
    err = WEFT_ENOMEM;
  if (err == 0)
    err = weft_msg_add_buffer(m, buf);
  if (err == 0)
    err = weft_msg_add_shared(m, wt_sh);
  if (err == 0)
    err = weft_worker_post_msg(w, &m);
  /* WEFT_ECLOSED: the worker failed before the post and closed its port
   * (its error event says why, below). */
  CHECK(err == 0 || named(err) || err == WEFT_ECLOSED, "post to the worker: %s",
        weft_err_name(err));
  CHECK(weft_buffer_detached(buf) == (err == 0), "detached iff posted");
  if (err != 0 && err != WEFT_ECLOSED) {
    rc = err;
    weft_worker_terminate(w, NULL); /* It would wait for a message. */
  }
  guard_start(loop);
  run_loop(loop);
  guard_stop();
  CHECK(wt_exit >= 0, "no exit event");
  if (rc != 0)
    goto out;
  if (err == WEFT_ECLOSED)
    CHECK(wt_exit == 1 && named(wt_error), "post: ECLOSED, exit %d, error %s",
          wt_exit, weft_err_name(wt_error));
  if (wt_exit == 0) {
    /* The worker ran: it got the message, and the owner got it back or
     * was told why not. */
    CHECK(atomic_load(&wt_worker_got) == 1, "accepted message lost");
    CHECK(wt_back + (wt_owner_err != 0) == 1, "%d back, owner error %s",
          wt_back, weft_err_name(wt_owner_err));
    rc = wt_owner_err;
  } else if (wt_exit == 3) {
    rc = atomic_load(&wt_worker_err);
    CHECK(named(rc) && wt_back == 0, "worker: %s", weft_err_name(rc));
  } else {
    CHECK(wt_exit == 1 && named(wt_error), "exit %d, error %s", wt_exit,
          weft_err_name(wt_error));
    rc = wt_error;
  }
out:
  weft_msg_free(m);
  weft_worker_free(w);
  weft_buffer_free(buf);
  if (wt_sh != NULL)
    weft_shared_release(wt_sh);
  return rc;
}

/* ---- post and receive: every accepted message exactly once --------------- */

#define POSTS 8

static bool accepted[POSTS];
static int seen[POSTS];
static int handler_expect, handler_got, keep_err;
static weft_msg_t* kept;

static int pack_seq_fn(msgpack_packer* pk, void* arg) {
  uint32_t seq = (uint32_t)(uintptr_t)arg;
  if (msgpack_pack_array(pk, 2) != 0 || msgpack_pack_uint32(pk, seq) != 0 ||
      msgpack_pack_str(pk, 150) != 0)
    return WEFT_ENOMEM;
  {
    char pad[150];
    memset(pad, 'y', sizeof(pad));
    if (msgpack_pack_str_body(pk, pad, sizeof(pad)) != 0)
      return WEFT_ENOMEM;
  }
  return 0;
}

/* Post seq with one of four ways of posting. */
static int post_one(weft_port_t* port, uint32_t seq) {
  unsigned char buf[256];
  weft_msg_t* m = NULL;
  int err;
  switch (seq % 4) {
    case 0:
      return weft_port_post(port, buf, pack_seq(buf, seq, 4));
    case 1:
      return weft_port_post(port, buf, pack_seq(buf, seq, 200));
    case 2:
      err = weft_port_post_fn(port, pack_seq_fn, (void*)(uintptr_t)seq);
      /* The packer's writer reports a failed allocation as msgpack's -1,
       * which the callback above turns into WEFT_ENOMEM. */
      return err;
    default:
      err = weft_msg_new(&m);
      if (err != 0)
        return err;
      err = weft_msg_append(m, buf, pack_seq(buf, seq, 120));
      if (err == 0)
        err = weft_port_post_msg(port, &m);
      weft_msg_free(m);
      return err;
  }
}

static void note_seen(uint32_t seq, uint32_t* last, bool* any) {
  CHECK(seq < POSTS && accepted[seq], "message %u arrived but was refused",
        (unsigned)seq);
  CHECK(seen[seq] == 0, "message %u arrived twice", (unsigned)seq);
  CHECK(!*any || seq > *last, "message %u after %u", (unsigned)seq,
        (unsigned)*last);
  seen[seq]++;
  *last = seq;
  *any = true;
}

static uint32_t handler_last;
static bool handler_any;

static void on_post_message(weft_port_t* port, weft_msg_t* m) {
  note_seen(read_seq(m), &handler_last, &handler_any);
  handler_got++;
  if (kept == NULL) {
    /* Keeping takes the loop's decode zone: it may fail, and says so. */
    int err = weft_msg_keep(m);
    if (err == 0)
      kept = m;
    else
      keep_err = err;
  }
  if (handler_got == handler_expect)
    weft_port_on_message(port, NULL);
}

static int run_post(weft_loop_t* loop) {
  weft_port_t *a = NULL, *b = NULL;
  weft_msg_t* m;
  uint32_t seq, last = 0;
  bool any = false;
  int rc = 0, err, i, first_err = 0;
  memset(accepted, 0, sizeof(accepted));
  memset(seen, 0, sizeof(seen));
  handler_expect = handler_got = keep_err = 0;
  handler_any = false;
  kept = NULL;
  TRY(weft_channel_new(loop, &a, &b));
  /* Half read with weft_port_receive(), half delivered to a handler. */
  for (seq = 0; seq < POSTS / 2; seq++) {
    err = post_one(a, seq);
    CHECK(err == 0 || named(err), "post %u: %s", (unsigned)seq,
          weft_err_name(err));
    accepted[seq] = err == 0;
    if (err != 0 && first_err == 0)
      first_err = err;
  }
  for (;;) {
    err = weft_port_receive(b, &m);
    if (err == WEFT_EAGAIN)
      break;
    if (err != 0) {
      /* The receiver is told; the message it could not decode stays
       * pending, so a second call gets it. */
      CHECK(named(err), "receive: %s", weft_err_name(err));
      if (first_err == 0)
        first_err = err;
      continue;
    }
    note_seen(read_seq(m), &last, &any);
    weft_msg_free(m);
  }
  for (seq = POSTS / 2; seq < POSTS; seq++) {
    err = post_one(a, seq);
    CHECK(err == 0 || named(err), "post %u: %s", (unsigned)seq,
          weft_err_name(err));
    accepted[seq] = err == 0;
    handler_expect += err == 0;
    if (err != 0 && first_err == 0)
      first_err = err;
  }
  if (handler_expect > 0) {
    TRY(weft_port_on_message(b, on_post_message));
    guard_start(loop);
    run_loop(loop);
    guard_stop();
  }
  CHECK(handler_got == handler_expect, "handler got %d of %d", handler_got,
        handler_expect);
  if (keep_err != 0) {
    CHECK(named(keep_err), "keep: %s", weft_err_name(keep_err));
    if (first_err == 0)
      first_err = keep_err;
  }
  for (i = 0; i < POSTS; i++)
    CHECK(seen[i] == (accepted[i] ? 1 : 0), "message %d: seen %d times", i,
          seen[i]);
  rc = first_err;
out:
  weft_msg_free(kept);
  kept = NULL;
  weft_port_free(a);
  weft_port_free(b);
  return rc;
}

/* ---- transfer: a buffer, a port and a shared buffer in one message ------- */

static int run_transfer(weft_loop_t* loop) {
  weft_port_t *a = NULL, *b = NULL, *c = NULL, *d = NULL, *moved = NULL;
  weft_buffer_t *buf = NULL, *got_buf = NULL;
  weft_shared_t *sh = NULL, *got_sh = NULL;
  weft_msg_t *m = NULL, *r = NULL, *r2 = NULL;
  const msgpack_object* o;
  void* bytes;
  size_t size;
  int rc = 0, err;
  TRY(weft_channel_new(loop, &a, &b));
  TRY(weft_channel_new(loop, &c, &d));
  TRY(weft_buffer_new(&buf, 100));
  CHECK(weft_buffer_data(buf, &bytes, &size) == 0 && size == 100, "buffer");
  memset(bytes, 7, size);
  TRY(weft_shared_new(&sh, 64));
  TRY(weft_msg_new(&m));
  if (msgpack_pack_array(weft_msg_packer(m), 4) != 0)
    TRY(WEFT_ENOMEM);
  TRY(weft_msg_add_buffer(m, buf));
  TRY(weft_msg_add_port(m, c));
  TRY(weft_msg_add_shared(m, sh));
  if (msgpack_pack_uint32(weft_msg_packer(m), 42) != 0)
    TRY(WEFT_ENOMEM);
  err = weft_port_post_msg(a, &m);
  if (err != 0) {
    /* Nothing moved. */
    CHECK(!weft_buffer_detached(buf) && !weft_port_closed(c),
          "a failed post moved something");
    TRY(err);
  }
  CHECK(weft_buffer_detached(buf) && weft_port_closed(c), "post moved nothing");
  do {
    err = weft_port_receive(b, &r);
    CHECK(err != WEFT_EAGAIN, "the posted message is gone");
    CHECK(err == 0 || named(err), "receive: %s", weft_err_name(err));
    if (err != 0 && rc == 0)
      rc = err;
  } while (err != 0);
  o = weft_msg_object(r);
  CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4,
        "transfer message");
  TRY(weft_msg_take_buffer(r, &o->via.array.ptr[0], &got_buf));
  CHECK(weft_buffer_data(got_buf, &bytes, &size) == 0 && size == 100 &&
            ((unsigned char*)bytes)[99] == 7,
        "moved buffer");
  TRY(weft_msg_take_shared(r, &o->via.array.ptr[2], &got_sh));
  CHECK(got_sh == sh, "shared buffer");
  TRY(weft_msg_take_port(r, &o->via.array.ptr[1], &moved));
  /* The moved port still talks to d. */
  TRY(weft_port_post(d, "\x01", 1));
  do {
    err = weft_port_receive(moved, &r2);
    CHECK(err != WEFT_EAGAIN, "the message on the moved port is gone");
    CHECK(err == 0 || named(err), "receive: %s", weft_err_name(err));
    if (err != 0 && rc == 0)
      rc = err;
  } while (err != 0);
out:
  weft_msg_free(r2);
  weft_msg_free(r);
  weft_msg_free(m);
  weft_port_free(moved);
  weft_port_free(a);
  weft_port_free(b);
  weft_port_free(c);
  weft_port_free(d);
  weft_buffer_free(got_buf);
  weft_buffer_free(buf);
  if (got_sh != NULL)
    weft_shared_release(got_sh);
  if (sh != NULL)
    weft_shared_release(sh);
  return rc;
}

/* ---- waitAsync: notified, timed out, not equal --------------------------- */

static int wait_results[3];
static int wait_calls;

static void on_wait(weft_loop_t* loop, void* arg, weft_wait_result_t result) {
  (void)loop;
  wait_results[(uintptr_t)arg] = (int)result;
  wait_calls++;
}

static int run_wait(weft_loop_t* loop) {
  weft_shared_t* sh = NULL;
  int rc = 0, woken = -1, started = 0, i;
  bool queued[3] = {false, false, false};
  wait_calls = 0;
  for (i = 0; i < 3; i++)
    wait_results[i] = -1;
  TRY(weft_shared_new(&sh, 64));
  /* 0: notified (or, if the notify cannot queue the completion, times
   * out after 300 ms), 1: times out, 2: not equal. */
  rc = weft_atomic_wait_async32(loop, sh, 0, 0, 300, on_wait, (void*)0);
  queued[0] = rc == 0;
  if (rc == 0)
    rc = weft_atomic_wait_async32(loop, sh, 1, 0, 1, on_wait, (void*)1);
  queued[1] = queued[0] && rc == 0;
  if (rc == 0)
    rc = weft_atomic_wait_async32(loop, sh, 2, 5, 100, on_wait, (void*)2);
  queued[2] = queued[1] && rc == 0;
  CHECK(rc == 0 || named(rc), "wait_async: %s", weft_err_name(rc));
  for (i = 0; i < 3; i++)
    started += queued[i];
  if (queued[0]) {
    CHECK(weft_atomic_notify32(sh, 0, 1, &woken) == 0, "notify");
    CHECK(woken == 0 || woken == 1, "woken %d", woken);
  }
  if (started > 0) {
    guard_start(loop);
    run_loop(loop);
    guard_stop();
  }
  CHECK(wait_calls == started, "%d of %d waits resolved", wait_calls, started);
  if (queued[0]) {
    /* A notify that could not queue the completion leaves the waiter
     * waiting and does not count it: then it must time out, not vanish. */
    CHECK(wait_results[0] == (woken == 1 ? WEFT_WAIT_OK : WEFT_WAIT_TIMED_OUT),
          "notified wait: %d (woken %d)", wait_results[0], woken);
  }
  if (queued[1])
    CHECK(wait_results[1] == WEFT_WAIT_TIMED_OUT, "timed-out wait");
  if (queued[2])
    CHECK(wait_results[2] == WEFT_WAIT_NOT_EQUAL, "not-equal wait");
out:
  if (sh != NULL)
    weft_shared_release(sh);
  return rc;
}

/* ---- broadcast: all receivers or none ------------------------------------ */

static int bc_got[2];
static int bc_expect;
static weft_broadcast_t* bc_r[2];

static void bc_unref_all(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_broadcast_unref(bc_r[0]);
  weft_broadcast_unref(bc_r[1]);
}

static void on_bc(weft_broadcast_t* bc, weft_msg_t* m) {
  int i = (int)(uintptr_t)weft_broadcast_get_data(bc);
  CHECK(read_seq(m) == 9, "broadcast payload");
  bc_got[i]++;
  if (bc_got[0] + bc_got[1] == bc_expect)
    bc_unref_all(NULL, NULL); /* Both heard it: let the loop end. */
}

static int run_broadcast(weft_loop_t* loop) {
  weft_broadcast_t *s = NULL, **r = bc_r;
  unsigned char buf[64];
  int rc = 0, err, i;
  bc_got[0] = bc_got[1] = 0;
  bc_expect = 0;
  r[0] = r[1] = NULL;
  TRY(weft_broadcast_new(loop, "allocfail", &s));
  for (i = 0; i < 2; i++) {
    TRY(weft_broadcast_new(loop, "allocfail", &r[i]));
    weft_broadcast_set_data(r[i], (void*)(uintptr_t)i);
    TRY(weft_broadcast_on_message(r[i], on_bc));
    TRY(weft_broadcast_unref(r[i]));
  }
  err = weft_broadcast_post(s, buf, pack_seq(buf, 9, 10));
  CHECK(err == 0 || named(err), "broadcast_post: %s", weft_err_name(err));
  for (i = 0; i < 2; i++)
    weft_broadcast_ref(r[i]);
  if (err == 0) {
    bc_expect = 2;
  } else {
    /* Refused: nobody may get it. Listen for 20 ms all the same (the
     * injected failure happened: this timer's allocation succeeds). */
    rc = err;
    CHECK(weft_set_timeout(loop, 20, bc_unref_all, NULL, NULL) == 0,
          "set_timeout");
  }
  guard_start(loop);
  run_loop(loop);
  guard_stop();
  CHECK(bc_got[0] == (err == 0) && bc_got[1] == (err == 0),
        "post gave %s; receivers got %d and %d", weft_err_name(err), bc_got[0],
        bc_got[1]);
out:
  weft_broadcast_free(s);
  weft_broadcast_free(r[0]);
  weft_broadcast_free(r[1]);
  r[0] = r[1] = NULL;
  return rc;
}

/* ---- ticks, microtasks, timers, immediates, threadpool work -------------- */

enum { T_TICK, T_MICRO, T_TIMEOUT, T_IMMEDIATE, T_INTERVAL, T_WORK, T_N };

static int t_ran[T_N];
static weft_timer_id t_interval;

static void t_cb(weft_loop_t* loop, void* arg) {
  int i = (int)(uintptr_t)arg;
  t_ran[i]++;
  if (i == T_INTERVAL && t_ran[i] == 2)
    CHECK(weft_clear_timer(loop, t_interval) == 0, "clear_timer");
}

static void t_work(void* arg) {
  (void)arg;
}

static void t_after(weft_loop_t* loop, void* arg, int status) {
  (void)loop;
  CHECK(status == 0, "work status %d", status);
  t_ran[(uintptr_t)arg]++;
}

static int t_ok[T_N];

/* Queue one of each; returns the first error. */
static int t_start(weft_loop_t* loop) {
  int* ok = t_ok;
  int rc = 0, i;
  memset(t_ran, 0, sizeof(t_ran));
  ok[T_TICK] = weft_next_tick(loop, t_cb, (void*)T_TICK);
  ok[T_MICRO] = weft_queue_microtask(loop, t_cb, (void*)T_MICRO);
  ok[T_TIMEOUT] = weft_set_timeout(loop, 1, t_cb, (void*)T_TIMEOUT, NULL);
  ok[T_IMMEDIATE] = weft_set_immediate(loop, t_cb, (void*)T_IMMEDIATE, NULL);
  ok[T_INTERVAL] =
      weft_set_interval(loop, 1, t_cb, (void*)T_INTERVAL, &t_interval);
  ok[T_WORK] = weft_queue_work(loop, t_work, t_after, (void*)T_WORK);
  for (i = 0; i < T_N; i++) {
    CHECK(ok[i] == 0 || named(ok[i]), "call %d: %s", i, weft_err_name(ok[i]));
    if (ok[i] != 0 && rc == 0)
      rc = ok[i];
  }
  return rc;
}

/* What was accepted ran (an interval twice, then cleared); what was
 * refused never ran. */
static void t_check(void) {
  int i, want;
  for (i = 0; i < T_N; i++) {
    want = t_ok[i] != 0 ? 0 : i == T_INTERVAL ? 2 : 1;
    CHECK(t_ran[i] == want, "callback %d ran %d times (call gave %s)", i,
          t_ran[i], weft_err_name(t_ok[i]));
  }
}

static int run_timers(weft_loop_t* loop) {
  int rc = t_start(loop);
  guard_start(loop);
  run_loop(loop);
  guard_stop();
  t_check();
  return rc;
}

/* The same on a worker's fresh loop: its task rings and timer table are
 * allocated on first use, which the main loop did long ago. */
static int tw_rc, tw_exit, tw_error;

static void tw_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  tw_rc = t_start(loop); /* The worker's loop runs them after this. */
}

static void tw_on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  (void)text;
  tw_error = err;
}

static void tw_on_exit(weft_worker_t* w, int code) {
  (void)w;
  tw_exit = code;
}

static int run_timers_worker(weft_loop_t* loop) {
  weft_worker_opts_t opts = {0};
  weft_worker_t* w = NULL;
  int rc = 0;
  tw_rc = tw_error = 0;
  tw_exit = -1;
  memset(t_ran, 0, sizeof(t_ran));
  memset(t_ok, 0, sizeof(t_ok));
  opts.events.error = tw_on_error;
  opts.events.exit = tw_on_exit;
  TRY(weft_worker_spawn(&w, loop, tw_entry, &opts));
  guard_start(loop);
  run_loop(loop);
  guard_stop();
  /* The exit event orders the worker's writes before these reads. */
  if (tw_exit == 0) {
    t_check();
    rc = tw_rc;
  } else {
    CHECK(tw_exit == 1 && named(tw_error), "exit %d, error %s", tw_exit,
          weft_err_name(tw_error));
    rc = tw_error;
  }
out:
  weft_worker_free(w);
  return rc;
}

/* ---- the driver ---------------------------------------------------------- */

typedef struct {
  const char* name;
  int (*run)(weft_loop_t* loop);
} scenario_t;

static const scenario_t scenarios[] = {
    {"spawn", run_spawn},
    {"spawn_fresh", run_spawn_fresh},
    {"worker_xfer", run_worker_transfer},
    {"post", run_post},
    {"transfer", run_transfer},
    {"wait_async", run_wait},
    {"broadcast", run_broadcast},
    {"timers", run_timers},
    {"timers_worker", run_timers_worker},
};

int main(void) {
  weft_loop_t* loop = NULL;
  size_t i;
  setvbuf(stdout, NULL, _IOLBF, 0);
  support_on_fail(print_case);
  loop = new_loop();
  uv_timer_init(weft_loop_uv(loop), &guard);
  uv_unref((uv_handle_t*)&guard);
  for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
    const scenario_t* s = &scenarios[i];
    uint64_t n, k, hit = 0, errors = 0;
    int rc;
    current_name = s->name;
    current_k = 0;
    weft__failpoint_arm(0);
    rc = s->run(loop);
    n = weft__failpoint_count();
    CHECK(rc == 0, "the scenario fails without injection: %s",
          weft_err_name(rc));
    for (k = 1; k <= n; k++) {
      current_k = k;
      weft__failpoint_arm(k);
      rc = s->run(loop);
      hit += weft__failpoint_fired();
      errors += rc != 0;
      CHECK(rc == 0 || weft__failpoint_fired(),
            "an error without a failed allocation: %s", weft_err_name(rc));
      weft__failpoint_arm(0);
      /* The runtime is still usable. */
      rc = s->run(loop);
      CHECK(rc == 0, "the run after the failure fails: %s", weft_err_name(rc));
    }
    printf(
        "scenario_allocfail: %-13s %3llu allocations, %3llu failure points "
        "hit, %3llu reported to the caller, the rest absorbed\n",
        s->name, (unsigned long long)n, (unsigned long long)hit,
        (unsigned long long)errors);
  }
  current_name = "end";
  uv_close((uv_handle_t*)&guard, NULL);
  CHECK(weft_loop_free(loop) == 0, "a handle was left open on the loop");
  printf("scenario_allocfail: ok\n");
  return 0;
}
#endif
