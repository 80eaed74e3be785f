/* test_broadcast.c - Criterion suite for BroadcastChannel: delivery to every
 * other channel of the name (not to the poster, not to other names), copies,
 * order, across threads, close, malformed and oversize posts, ref/unref,
 * argument and thread checks. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(broadcast, .timeout = 20);

/* --- helpers ------------------------------------------------------------- */

static int post_int(weft_broadcast_t* bc, int64_t v) {
  packed_t p = packed_int(v);
  return weft_broadcast_post(bc, p.data, p.len);
}

static weft_broadcast_t* open_bc(weft_loop_t* loop, const char* name) {
  weft_broadcast_t* bc = NULL;
  cr_assert_eq(weft_broadcast_new(loop, name, &bc), 0);
  cr_assert_not_null(bc);
  return bc;
}

/* What one channel received; attached with weft_broadcast_set_data(). */
#define REC_MAX 64
typedef struct {
  int n;
  int64_t vals[REC_MAX];
  const char* ptrs[REC_MAX]; /* where each payload lived */
} rec_t;

static int total; /* over all channels of a test */
static int stop_at;
static weft_broadcast_t* all[8];
static int nall;

static void stop_all(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  for (int i = 0; i < nall; i++)
    cr_assert_eq(weft_broadcast_close(all[i]), 0);
}

static void noop_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

static void on_rec(weft_broadcast_t* bc, weft_msg_t* m) {
  rec_t* r = weft_broadcast_get_data(bc);
  const msgpack_object* o = weft_msg_object(m);
  cr_assert_not_null(r);
  cr_assert_not_null(o);
  if (r->n < REC_MAX) {
    r->vals[r->n] = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                        ? o->via.i64
                        : (int64_t)o->via.u64;
    r->ptrs[r->n] = weft_msg_data(m, NULL);
  }
  r->n++;
  total++;
  /* Once all expected copies arrived, close everything on the next turn:
   * a copy that went astray would have been queued by then. */
  if (total == stop_at)
    cr_assert_eq(weft_set_timeout(weft_loop_current(), 10, stop_all, NULL,
                                  NULL),
                 0);
}

static weft_broadcast_t* watched(weft_loop_t* loop, const char* name,
                                 rec_t* r) {
  weft_broadcast_t* bc = open_bc(loop, name);
  weft_broadcast_set_data(bc, r);
  cr_assert_eq(weft_broadcast_on_message(bc, on_rec), 0);
  all[nall++] = bc;
  return bc;
}

static void free_all(void) {
  for (int i = 0; i < nall; i++)
    weft_broadcast_free(all[i]);
  nall = 0;
}

/* --- one loop ------------------------------------------------------------ */

Test(broadcast, a_post_reaches_every_other_channel_of_the_name_only) {
  weft_loop_t* loop = new_loop();
  rec_t r1 = {0}, r2 = {0}, r3 = {0}, ry = {0}, rxx = {0};
  weft_broadcast_t* x1 = watched(loop, "x", &r1);
  weft_broadcast_t* x2 = watched(loop, "x", &r2);
  weft_broadcast_t* x3 = watched(loop, "x", &r3);
  weft_broadcast_t* y = watched(loop, "y", &ry);
  watched(loop, "xx", &rxx);
  (void)x2;
  (void)x3;
  stop_at = 4;
  cr_assert_eq(post_int(x1, 7), 0);
  cr_assert_eq(post_int(x1, -8), 0);
  run_loop(loop);
  cr_assert_eq(r1.n, 0, "the poster got its own message");
  cr_assert_eq(ry.n, 0);
  cr_assert_eq(rxx.n, 0);
  cr_assert_eq(r2.n, 2);
  cr_assert_eq(r3.n, 2);
  cr_assert_eq(r2.vals[0], 7);
  cr_assert_eq(r2.vals[1], -8);
  cr_assert_eq(r3.vals[0], 7);
  cr_assert_eq(r3.vals[1], -8);
  /* Each receiver has its own copy. */
  cr_assert_neq(r2.ptrs[0], r3.ptrs[0]);
  (void)y;
  free_all();
  free_loop(loop);
}

Test(broadcast, many_posts_arrive_in_order_at_each_channel) {
  weft_loop_t* loop = new_loop();
  rec_t r1 = {0}, r2 = {0}, r3 = {0};
  weft_broadcast_t* x1 = watched(loop, "ordered", &r1);
  watched(loop, "ordered", &r2);
  watched(loop, "ordered", &r3);
  stop_at = 2 * REC_MAX;
  for (int i = 0; i < REC_MAX; i++)
    cr_assert_eq(post_int(x1, i), 0);
  run_loop(loop);
  cr_assert_eq(r2.n, REC_MAX);
  cr_assert_eq(r3.n, REC_MAX);
  for (int i = 0; i < REC_MAX; i++) {
    cr_assert_eq(r2.vals[i], i);
    cr_assert_eq(r3.vals[i], i);
  }
  free_all();
  free_loop(loop);
}

Test(broadcast, a_closed_channel_gets_nothing_and_cannot_post) {
  weft_loop_t* loop = new_loop();
  rec_t r1 = {0}, r2 = {0}, r3 = {0};
  weft_broadcast_t* x1 = watched(loop, "x", &r1);
  weft_broadcast_t* x2 = watched(loop, "x", &r2);
  watched(loop, "x", &r3);
  cr_assert_eq(post_int(x1, 1), 0); /* queued on x2 and x3 */
  cr_assert_eq(weft_broadcast_close(x2), 0);
  cr_assert_eq(weft_broadcast_close(x2), 0); /* twice is fine */
  cr_assert_eq(post_int(x2, 5), WEFT_ECLOSED);
  cr_assert_eq(weft_broadcast_on_message(x2, on_rec), WEFT_ECLOSED);
  cr_assert_eq(post_int(x1, 2), 0);
  stop_at = 2;
  run_loop(loop);
  cr_assert_eq(r2.n, 0, "a closed channel received");
  cr_assert_eq(r3.n, 2);
  cr_assert_eq(r1.n, 0);
  free_all();
  free_loop(loop);
}

Test(broadcast, channels_without_handler_drop_messages) {
  weft_loop_t* loop = new_loop();
  rec_t r2 = {0};
  weft_broadcast_t* x1 = open_bc(loop, "x");
  weft_broadcast_t* x2 = open_bc(loop, "x");
  weft_broadcast_set_data(x2, &r2);
  cr_assert_eq(post_int(x1, 1), 0); /* no handler on x2 yet: dropped */
  /* Nothing keeps the loop alive but this timer; the copy for x2 is
   * handled (and dropped) meanwhile. */
  cr_assert_eq(weft_set_timeout(loop, 5, noop_task, NULL, NULL), 0);
  run_loop(loop);
  cr_assert_eq(r2.n, 0);
  cr_assert_eq(weft_broadcast_on_message(x2, on_rec), 0);
  all[nall++] = x1;
  all[nall++] = x2;
  stop_at = 1;
  cr_assert_eq(post_int(x1, 2), 0);
  run_loop(loop);
  cr_assert_eq(r2.n, 1);
  cr_assert_eq(r2.vals[0], 2);
  free_all();
  free_loop(loop);
}

Test(broadcast, malformed_posts_are_edecode_and_deliver_nothing) {
  weft_loop_t* loop = new_loop();
  rec_t r2 = {0};
  weft_broadcast_t* x1 = watched(loop, "x", &r2);
  weft_broadcast_t* x2 = watched(loop, "x", &r2);
  static const unsigned char never_used[] = {0xc1};
  static const unsigned char two_values[] = {0x01, 0x02};
  static const unsigned char truncated[] = {0x93, 0x01};
  (void)x2;
  cr_assert_eq(weft_broadcast_post(x1, never_used, sizeof(never_used)),
               WEFT_EDECODE);
  cr_assert_eq(weft_broadcast_post(x1, two_values, sizeof(two_values)),
               WEFT_EDECODE);
  cr_assert_eq(weft_broadcast_post(x1, truncated, sizeof(truncated)),
               WEFT_EDECODE);
  stop_at = 1;
  cr_assert_eq(post_int(x1, 3), 0);
  run_loop(loop);
  cr_assert_eq(r2.n, 1);
  cr_assert_eq(r2.vals[0], 3);
  free_all();
  free_loop(loop);
}

/* Before the fix a 33-deep value failed validation as WEFT_ENOMEM
 * (msgpack-c's fixed stack of 32). */
Test(broadcast, values_nested_deeper_than_32_are_etoodeep) {
  weft_loop_t* loop = new_loop();
  rec_t r2 = {0};
  weft_broadcast_t* x1 = watched(loop, "x", &r2);
  weft_broadcast_t* x2 = watched(loop, "x", &r2);
  unsigned char deep[40];
  static const unsigned char claims[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  (void)x2;
  memset(deep, 0x91, sizeof deep);
  deep[33] = 0x07;
  cr_assert_eq(weft_broadcast_post(x1, deep, 34), WEFT_ETOODEEP);
  cr_assert_eq(weft_broadcast_post(x1, deep + 1, 33), 0); /* 32 levels */
  cr_assert_eq(weft_broadcast_post(x1, claims, sizeof claims), WEFT_EDECODE);
  stop_at = 2;
  cr_assert_eq(post_int(x1, 3), 0);
  run_loop(loop);
  cr_assert_eq(r2.n, 2);
  cr_assert_eq(r2.vals[1], 3);
  free_all();
  free_loop(loop);
}

static int kept_n;
static weft_msg_t* kept_msg;

static void on_keep(weft_broadcast_t* bc, weft_msg_t* m) {
  cr_assert_eq(weft_msg_keep(m), 0);
  kept_msg = m;
  kept_n++;
  cr_assert_eq(weft_broadcast_close(bc), 0);
}

Test(broadcast, a_message_can_be_kept_past_the_callback) {
  weft_loop_t* loop = new_loop();
  weft_broadcast_t* x1 = open_bc(loop, "k");
  weft_broadcast_t* x2 = open_bc(loop, "k");
  cr_assert_eq(weft_broadcast_on_message(x2, on_keep), 0);
  cr_assert_eq(post_int(x1, 99), 0);
  run_loop(loop);
  cr_assert_eq(kept_n, 1);
  cr_assert_eq(weft_msg_object(kept_msg)->via.u64, 99);
  weft_msg_free(kept_msg);
  weft_broadcast_free(x1);
  weft_broadcast_free(x2);
  free_loop(loop);
}

static void on_close_self(weft_broadcast_t* bc, weft_msg_t* m) {
  (void)m;
  kept_n++;
  weft_broadcast_free(bc); /* inside its own callback */
}

Test(broadcast, free_inside_the_callback_drops_the_rest) {
  weft_loop_t* loop = new_loop();
  weft_broadcast_t* x1 = open_bc(loop, "f");
  weft_broadcast_t* x2 = open_bc(loop, "f");
  cr_assert_eq(weft_broadcast_on_message(x2, on_close_self), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(post_int(x1, i), 0);
  run_loop(loop);
  cr_assert_eq(kept_n, 1);
  /* x2 is gone: posts reach nobody. */
  cr_assert_eq(post_int(x1, 9), 0);
  weft_broadcast_free(x1);
  free_loop(loop);
}

/* --- ref / unref ----------------------------------------------------------- */

static void unref_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  cr_assert_eq(weft_broadcast_unref(arg), 0);
}

Test(broadcast, an_unrefd_channel_does_not_keep_the_loop_alive) {
  weft_loop_t* loop = new_loop();
  rec_t r = {0};
  weft_broadcast_t* x = open_bc(loop, "u");
  weft_broadcast_set_data(x, &r);
  cr_assert_eq(weft_broadcast_on_message(x, on_rec), 0);
  cr_assert_eq(weft_set_timeout(loop, 1, unref_task, x, NULL), 0);
  run_loop(loop); /* would hang if still ref'd */
  cr_assert_eq(weft_broadcast_ref(x), 0);
  cr_assert_eq(weft_broadcast_unref(x), 0);
  run_loop(loop);
  weft_broadcast_free(x);
  free_loop(loop);
}

/* --- across threads -------------------------------------------------------- */

/* The worker opens "x", says "ready" on its parent port, posts 1000 on "x",
 * and closes once it received 7 from main. */
static void wk_on_bc(weft_broadcast_t* bc, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  packed_t got;
  if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
    weft_report_error("bad broadcast");
    return;
  }
  got = packed_int((int64_t)o->via.u64 + 100);
  weft_port_post(weft_parent_port(), got.data, got.len);
  weft_broadcast_close(bc);
}

static void wk_entry(weft_loop_t* loop, void* arg) {
  weft_broadcast_t* bc = NULL;
  packed_t p = packed_int(1000);
  (void)arg;
  if (weft_broadcast_new(loop, "x", &bc) != 0 ||
      weft_broadcast_on_message(bc, wk_on_bc) != 0) {
    weft_report_error("open failed");
    return;
  }
  if (weft_port_post(weft_parent_port(), "\xa5ready", 6) != 0 ||
      weft_broadcast_post(bc, p.data, p.len) != 0)
    weft_report_error("post failed");
  /* Freed by the worker's teardown if still open at the end. */
}

static struct {
  weft_broadcast_t* x1;
  rec_t r1;
  int ready;
  int64_t echoed;
  bool exited;
  worker_end_t end;
} wk;

static void wk_on_message(weft_worker_t* w, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  (void)w;
  if (o->type == MSGPACK_OBJECT_STR) {
    wk.ready++;
    cr_assert_eq(post_int(wk.x1, 7), 0);
  } else {
    wk.echoed = (int64_t)o->via.u64;
  }
}

/* The worker is gone and its post on "x" has arrived: stop listening on
 * main's side too. The two come on different ports (the exit on the
 * worker's, the post on "x"), and weft orders messages per port, not
 * across ports (as Node): the worker's echo and exit can be delivered in
 * the same turn as "ready", before "x" has had its turn, so main closes
 * "x" at whichever of the two comes last. */
static void wk_close_when_done(void) {
  if (wk.exited && wk.r1.n >= 1)
    cr_assert_eq(weft_broadcast_close(wk.x1), 0);
}

static void wk_on_rec(weft_broadcast_t* bc, weft_msg_t* m) {
  on_rec(bc, m);
  wk_close_when_done();
}

static void wk_on_exit(weft_worker_t* w, int code) {
  worker_end_on_exit(w, code);
  wk.exited = true;
  wk_close_when_done();
}

Test(broadcast, channels_on_different_threads_talk) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  watch_worker_end(&opts, &wk.end);
  opts.events.message = wk_on_message;
  opts.events.exit = wk_on_exit;
  wk.x1 = open_bc(loop, "x");
  weft_broadcast_set_data(wk.x1, &wk.r1);
  cr_assert_eq(weft_broadcast_on_message(wk.x1, wk_on_rec), 0);
  w = spawn_worker(loop, wk_entry, &opts);
  run_loop(loop);
  cr_assert_eq(wk.end.errors, 0);
  cr_assert_eq(wk.end.exit_code, 0);
  cr_assert_eq(wk.ready, 1);
  cr_assert_eq(wk.echoed, 107, "the worker did not get main's post");
  cr_assert_eq(wk.r1.n, 1, "main did not get the worker's post");
  cr_assert_eq(wk.r1.vals[0], 1000);
  weft_worker_free(w);
  weft_broadcast_free(wk.x1);
  free_loop(loop);
}

/* A worker's own message limit applies to its broadcasts. */
static int limit_rc[2];

static void limit_entry(weft_loop_t* loop, void* arg) {
  weft_broadcast_t* bc = NULL;
  (void)arg;
  /* A timer keeps the worker's loop turning once (see noop_task). */
  weft_set_timeout(loop, 1, noop_task, NULL, NULL);
  weft_broadcast_new(loop, "lim", &bc);
  limit_rc[0] = weft_broadcast_post(bc, "\xa7" "1234567", 8);
  limit_rc[1] = weft_broadcast_post(bc, "\xa8" "12345678", 9);
  weft_broadcast_free(bc);
}

Test(broadcast, a_workers_message_limit_applies) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  opts.max_message_bytes = 8;
  w = spawn_worker(loop, limit_entry, &opts);
  run_loop(loop);
  cr_assert_eq(limit_rc[0], 0);
  cr_assert_eq(limit_rc[1], WEFT_EMSGSIZE);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- errors ---------------------------------------------------------------- */

Test(broadcast, null_arguments_are_einval) {
  weft_loop_t* loop = new_loop();
  weft_broadcast_t* bc = (weft_broadcast_t*)&bc;
  cr_assert_eq(weft_broadcast_new(loop, "n", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_new(NULL, "n", &bc), WEFT_EINVAL);
  cr_assert_null(bc);
  cr_assert_eq(weft_broadcast_new(loop, NULL, &bc), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_on_message(NULL, on_rec), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_post(NULL, "\x01", 1), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_ref(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_unref(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_close(NULL), WEFT_EINVAL);
  cr_assert_null(weft_broadcast_get_data(NULL));
  cr_assert_eq(weft_broadcast_set_data(NULL, &bc), WEFT_EINVAL);
  cr_assert(!weft_broadcast_has_ref(NULL));
  cr_assert_eq(weft_broadcast_free(NULL), 0);
  bc = open_bc(loop, "n");
  cr_assert_eq(weft_broadcast_post(bc, NULL, 1), WEFT_EINVAL);
  cr_assert_eq(weft_broadcast_post(bc, "\x01", 0), WEFT_EINVAL);
  weft_broadcast_free(bc);
  free_loop(loop);
}

typedef struct {
  weft_loop_t* loop;
  weft_broadcast_t* bc;
  int rc[9];
} wrong_t;

static void wrong_thread(void* arg) {
  wrong_t* w = arg;
  weft_broadcast_t* other = NULL;
  w->rc[0] = weft_broadcast_new(w->loop, "t", &other);
  w->rc[1] = weft_broadcast_on_message(w->bc, on_rec);
  w->rc[2] = post_int(w->bc, 1);
  w->rc[3] = weft_broadcast_ref(w->bc);
  w->rc[4] = weft_broadcast_unref(w->bc);
  w->rc[5] = weft_broadcast_close(w->bc);
  w->rc[6] = weft_broadcast_free(w->bc); /* nothing happens */
  w->rc[7] = weft_broadcast_set_data(w->bc, w);
  /* The getters cannot report an error: off the loop, NULL and false. */
  w->rc[8] = weft_broadcast_get_data(w->bc) == NULL &&
                     !weft_broadcast_has_ref(w->bc)
                 ? WEFT_EWRONGTHREAD
                 : 0;
}

Test(broadcast, calls_from_another_thread_are_ewrongthread) {
  weft_loop_t* loop = new_loop();
  wrong_t w = {.loop = loop};
  uv_thread_t t;
  rec_t r = {0};
  int data;
  w.bc = open_bc(loop, "t");
  weft_broadcast_t* peer = open_bc(loop, "t");
  cr_assert_eq(weft_broadcast_set_data(peer, &r), 0);
  cr_assert_eq(weft_broadcast_set_data(w.bc, &data), 0);
  cr_assert_eq(weft_broadcast_on_message(w.bc, on_rec), 0);
  cr_assert(weft_broadcast_has_ref(w.bc));
  cr_assert_eq(uv_thread_create(&t, wrong_thread, &w), 0);
  uv_thread_join(&t);
  cr_assert_eq(weft_broadcast_get_data(w.bc), &data);
  cr_assert_eq(weft_broadcast_on_message(w.bc, NULL), 0);
  for (int i = 0; i < 9; i++)
    cr_assert_eq(w.rc[i], WEFT_EWRONGTHREAD, "call %d returned %d", i,
                 w.rc[i]);
  /* Still open and working. */
  cr_assert_eq(weft_broadcast_on_message(peer, on_rec), 0);
  all[nall++] = w.bc;
  all[nall++] = peer;
  stop_at = 1;
  cr_assert_eq(post_int(w.bc, 4), 0);
  run_loop(loop);
  cr_assert_eq(r.n, 1);
  free_all();
  free_loop(loop);
}

Test(broadcast, user_data_round_trips) {
  weft_loop_t* loop = new_loop();
  weft_broadcast_t* bc = open_bc(loop, "d");
  int x;
  cr_assert_null(weft_broadcast_get_data(bc));
  cr_assert_eq(weft_broadcast_set_data(bc, &x), 0);
  cr_assert_eq(weft_broadcast_get_data(bc), &x);
  cr_assert_eq(weft_broadcast_free(bc), 0);
  free_loop(loop);
}

/* hasRef(): true exactly while the channel counts in its loop's
 * keep-alive. */
Test(broadcast, has_ref_follows_handler_ref_and_close) {
  weft_loop_t* loop = new_loop();
  weft_broadcast_t* bc = open_bc(loop, "h");
  cr_assert(!weft_broadcast_has_ref(bc)); /* No handler. */
  cr_assert_eq(weft_broadcast_on_message(bc, on_rec), 0);
  cr_assert(weft_broadcast_has_ref(bc));
  cr_assert_eq(weft_broadcast_unref(bc), 0);
  cr_assert(!weft_broadcast_has_ref(bc));
  run_loop(loop); /* Returns at once: nothing holds the loop. */
  cr_assert_eq(weft_broadcast_ref(bc), 0);
  cr_assert(weft_broadcast_has_ref(bc));
  cr_assert_eq(weft_broadcast_on_message(bc, NULL), 0);
  cr_assert(!weft_broadcast_has_ref(bc));
  cr_assert_eq(weft_broadcast_on_message(bc, on_rec), 0);
  cr_assert_eq(weft_broadcast_close(bc), 0);
  cr_assert(!weft_broadcast_has_ref(bc));
  run_loop(loop);
  cr_assert_eq(weft_broadcast_free(bc), 0);
  free_loop(loop);
}
