/* test_worker.c - Criterion suite for workers: lifecycle events, the
 * worker's context (isMainThread, threadId, parentPort, workerData, thread
 * name), messages both ways, exit codes, errors, terminate, ref/unref,
 * environment data, the heap limit and nested workers; workers hosted for
 * threads with no loop, freeing a running worker then its loop at once,
 * worker data with transfers (opts.data_msg), hasRef and utilization.
 *
 * Worker threads never call cr_assert (Criterion's asserts belong to the
 * test's thread): they record what they saw in globals, which the main
 * thread checks after the worker's `exit` event (the exit message orders
 * the worker's writes before it). */
/* pthread_getname_np() */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__shared_waiters() */
#include "support.h"

TestSuite(worker, .timeout = 30);

/* --- Helpers ------------------------------------------------------------- */

/* Events seen on the main loop, in order: o online, m message,
 * E messageerror, e error, x exit, t terminate callback. */
static char ev[4096];
static int nev;
static int exit_code = -100;
static int term_code = -100;
static int error_err;
static char error_text[64];
static int msgerr_err;
static int64_t received[2048];
static int nreceived;
static bool bad_message; /* A message that is not an int arrived. */

static void log_ev(char c) {
  if (nev < (int)sizeof(ev) - 1)
    ev[nev++] = c;
  ev[nev] = '\0';
}

static void on_online(weft_worker_t* w) {
  (void)w;
  log_ev('o');
}

static void on_message(weft_worker_t* w, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  (void)w;
  log_ev('m');
  if (v == INT64_MIN)
    bad_message = true;
  else if (nreceived < (int)(sizeof(received) / sizeof(received[0])))
    received[nreceived++] = v;
}

static void on_messageerror(weft_worker_t* w, int err) {
  (void)w;
  log_ev('E');
  msgerr_err = err;
}

static void on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  log_ev('e');
  error_err = err;
  snprintf(error_text, sizeof(error_text), "%s", text);
}

static void on_exit_ev(weft_worker_t* w, int code) {
  (void)w;
  log_ev('x');
  exit_code = code;
}

static void on_terminated(weft_worker_t* w, int code) {
  (void)w;
  log_ev('t');
  term_code = code;
}

static weft_worker_opts_t logging_opts(void) {
  weft_worker_opts_t o;
  memset(&o, 0, sizeof(o));
  o.events.online = on_online;
  o.events.message = on_message;
  o.events.messageerror = on_messageerror;
  o.events.error = on_error;
  o.events.exit = on_exit_ev;
  return o;
}

/* A string of `n` copies of `c`, for event-log checks. */
static const char* repeat(char c, int n) {
  static char s[4096];
  cr_assert_lt(n, (int)sizeof(s));
  memset(s, c, (size_t)n);
  s[n] = '\0';
  return s;
}

/* --- Spawn, online, exit and the worker's context ------------------------ */

static struct {
  bool ran;
  pthread_t self;
  bool is_main;
  uint64_t tid;
  bool has_parent_port;
  bool loop_is_current;
  weft_loop_t* loop;
  char name[32];
  int name_err;
  bool data_is_nil;
  bool should_stop;
  int free_parent_port;
} ctx;

static void entry_context(weft_loop_t* loop, void* arg) {
  const msgpack_object* data = weft_worker_data();
  (void)arg;
  ctx.ran = true;
  ctx.self = pthread_self();
  ctx.is_main = weft_is_main_thread();
  ctx.tid = weft_thread_id();
  ctx.has_parent_port = weft_parent_port() != NULL;
  ctx.loop = loop;
  ctx.loop_is_current = weft_loop_current() == loop;
  ctx.name_err = pthread_getname_np(pthread_self(), ctx.name,
                                    sizeof(ctx.name));
  ctx.data_is_nil = data != NULL && data->type == MSGPACK_OBJECT_NIL;
  ctx.should_stop = weft_should_stop();
  ctx.free_parent_port = weft_port_free(weft_parent_port());
}

Test(worker, spawn_online_then_exit_and_context) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  int user;

  opts.name = "a-rather-long-worker-name";
  opts.user_data = &user;
  w = spawn_worker(loop, entry_context, &opts);
  cr_assert_eq(weft_worker_get_data(w), &user);
  cr_assert_gt(weft_worker_thread_id(w), 0);
  cr_assert_not(weft_worker_exited(w));
  run_loop(loop);

  cr_assert_str_eq(ev, "ox", "event order: %s", ev);
  cr_assert_eq(exit_code, 0);
  cr_assert(weft_worker_exited(w));
  cr_assert(ctx.ran);
  cr_assert_not(pthread_equal(ctx.self, pthread_self()),
                "the entry ran on the main thread");
  cr_assert_not(ctx.is_main);
  cr_assert_eq(ctx.tid, weft_worker_thread_id(w));
  cr_assert(ctx.has_parent_port);
  cr_assert_neq(ctx.loop, loop);
  cr_assert(ctx.loop_is_current);
  cr_assert_eq(ctx.name_err, 0);
  cr_assert_str_eq(ctx.name, "a-rather-long-w"); /* 15 bytes shown. */
  cr_assert(ctx.data_is_nil);
  cr_assert_not(ctx.should_stop);
  cr_assert_eq(ctx.free_parent_port, WEFT_EINVAL);

  /* The main thread's own context. */
  cr_assert(weft_is_main_thread());
  cr_assert_eq(weft_thread_id(), 0);
  cr_assert_null(weft_parent_port());
  cr_assert_null(weft_worker_data());
  cr_assert_not(weft_should_stop());

  weft_worker_free(w);
  free_loop(loop);
}

static atomic_int default_runs;
static char default_name[32];

static void entry_default_name(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  pthread_getname_np(pthread_self(), default_name, sizeof(default_name));
  atomic_fetch_add(&default_runs, 1);
}

Test(worker, null_opts_default_name_and_distinct_ids) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* a = spawn_worker(loop, entry_default_name, NULL);
  weft_worker_t* b;
  run_loop(loop);
  cr_assert(weft_worker_exited(a));
  cr_assert_str_eq(default_name, "weft-worker");
  b = spawn_worker(loop, entry_default_name, NULL);
  run_loop(loop);
  cr_assert(weft_worker_exited(b));
  cr_assert_eq(atomic_load(&default_runs), 2);
  cr_assert_gt(weft_worker_thread_id(a), 0);
  cr_assert_gt(weft_worker_thread_id(b), 0);
  cr_assert_neq(weft_worker_thread_id(a), weft_worker_thread_id(b));
  weft_worker_free(a);
  weft_worker_free(b);
  free_loop(loop);
}

/* --- workerData ----------------------------------------------------------- */

static struct {
  bool is_map;
  uint32_t size;
  int64_t n;
  char s[16];
  uint32_t arr_size;
  int64_t arr_sum;
} wdata;

static void entry_read_data(weft_loop_t* loop, void* arg) {
  const msgpack_object* o = weft_worker_data();
  (void)loop;
  (void)arg;
  if (o == NULL || o->type != MSGPACK_OBJECT_MAP)
    return;
  wdata.is_map = true;
  wdata.size = o->via.map.size;
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    const msgpack_object_kv* kv = &o->via.map.ptr[i];
    const msgpack_object_str* k = &kv->key.via.str;
    if (kv->key.type != MSGPACK_OBJECT_STR)
      continue;
    if (k->size == 1 && k->ptr[0] == 'n' &&
        kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      wdata.n = (int64_t)kv->val.via.u64;
    if (k->size == 1 && k->ptr[0] == 's' &&
        kv->val.type == MSGPACK_OBJECT_STR &&
        kv->val.via.str.size < sizeof(wdata.s))
      memcpy(wdata.s, kv->val.via.str.ptr, kv->val.via.str.size);
    if (k->size == 3 && memcmp(k->ptr, "arr", 3) == 0 &&
        kv->val.type == MSGPACK_OBJECT_ARRAY) {
      wdata.arr_size = kv->val.via.array.size;
      for (uint32_t j = 0; j < kv->val.via.array.size; j++)
        wdata.arr_sum += (int64_t)kv->val.via.array.ptr[j].via.u64;
    }
  }
}

Test(worker, worker_data_map_is_readable_inside) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  msgpack_sbuffer sb;
  msgpack_packer pk;
  weft_worker_t* w;
  packed_t data;

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  msgpack_pack_str_with_body(&pk, "n", 1);
  msgpack_pack_int(&pk, 42);
  msgpack_pack_str_with_body(&pk, "s", 1);
  msgpack_pack_str_with_body(&pk, "hello", 5);
  msgpack_pack_str_with_body(&pk, "arr", 3);
  msgpack_pack_array(&pk, 3);
  msgpack_pack_int(&pk, 1);
  msgpack_pack_int(&pk, 2);
  msgpack_pack_int(&pk, 300);
  data = packed_from(&sb);

  opts.data = data.data;
  opts.data_len = data.len;
  w = spawn_worker(loop, entry_read_data, &opts);
  /* The data was copied at spawn. */
  memset(data.data, 0xc1, sizeof(data.data));
  run_loop(loop);
  cr_assert_str_eq(ev, "ox");
  cr_assert_eq(exit_code, 0);
  cr_assert(wdata.is_map);
  cr_assert_eq(wdata.size, 3);
  cr_assert_eq(wdata.n, 42);
  cr_assert_str_eq(wdata.s, "hello");
  cr_assert_eq(wdata.arr_size, 3);
  cr_assert_eq(wdata.arr_sum, 303);
  weft_worker_free(w);
  free_loop(loop);
}

static atomic_int invalid_entry_runs;

static void entry_count(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  atomic_fetch_add(&invalid_entry_runs, 1);
}

Test(worker, invalid_worker_data_is_refused) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  static const unsigned char never_used[] = {0xc1};
  static const unsigned char truncated[] = {0x92, 0x01};
  static const unsigned char two_values[] = {0x01, 0x02};
  static const unsigned char short_str[] = {0xa5, 'a', 'b'};
  const struct {
    const void* p;
    size_t n;
  } bad[] = {{never_used, sizeof(never_used)},
             {truncated, sizeof(truncated)},
             {two_values, sizeof(two_values)},
             {short_str, sizeof(short_str)}};

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    weft_worker_t* w = (weft_worker_t*)&opts; /* Must be reset to NULL. */
    opts.data = bad[i].p;
    opts.data_len = bad[i].n;
    cr_assert_eq(weft_worker_spawn(&w, loop, entry_count, &opts),
                 WEFT_EDECODE, "case %zu", i);
    cr_assert_null(w, "case %zu", i);
  }
  /* Length without bytes. */
  {
    weft_worker_t* w = (weft_worker_t*)&opts;
    opts.data = NULL;
    opts.data_len = 3;
    cr_assert_eq(weft_worker_spawn(&w, loop, entry_count, &opts),
                 WEFT_EINVAL);
    cr_assert_null(w);
  }
  run_loop(loop);
  cr_assert_str_eq(ev, "", "events after a failed spawn: %s", ev);
  cr_assert_eq(atomic_load(&invalid_entry_runs), 0);
  free_loop(loop);
}

/* --- Messages both ways ---------------------------------------------------- */

#define ECHO_N 200

/* Worker: echo every message on the parent port; after the value `last`
 * close the port, which lets the worker's loop end. */
static atomic_int echo_last;

static void echo_handler(weft_port_t* port, weft_msg_t* msg) {
  size_t len;
  const char* data = weft_msg_data(msg, &len);
  weft_port_post(port, data, len);
  if (msg_int(msg) == atomic_load(&echo_last))
    weft_port_close(port);
}

static void entry_echo(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), echo_handler);
}

static int post_errors;

/* Post `v` alternately as pre-packed bytes and through a packer. */
static void post_int(weft_worker_t* w, int64_t v) {
  int err;
  if (v % 2 == 0) {
    packed_t p = packed_int(v);
    err = weft_worker_post(w, p.data, p.len);
  } else {
    err = weft_worker_post_fn(w, pack_int_cb, &v);
  }
  if (err != 0)
    post_errors++;
}

/* Main: ping-pong; the next message goes out only when the previous echo is
 * back, so the worker idles in its loop between messages. */
static void on_echo_pingpong(weft_worker_t* w, weft_msg_t* msg) {
  on_message(w, msg);
  if (nreceived < ECHO_N)
    post_int(w, nreceived);
}

Test(worker, messages_ping_pong_keep_worker_alive_until_port_closed) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;

  atomic_store(&echo_last, ECHO_N - 1);
  opts.events.message = on_echo_pingpong;
  w = spawn_worker(loop, entry_echo, &opts);
  post_int(w, 0);
  run_loop(loop);
  cr_assert_eq(post_errors, 0);
  cr_assert_eq(nreceived, ECHO_N);
  for (int i = 0; i < ECHO_N; i++)
    cr_assert_eq(received[i], i, "message %d is %lld", i,
                 (long long)received[i]);
  cr_assert_not(bad_message);
  cr_assert_eq(nev, ECHO_N + 2);
  cr_assert_eq(ev[0], 'o');
  cr_assert_eq(strncmp(ev + 1, repeat('m', ECHO_N), ECHO_N), 0);
  cr_assert_eq(ev[ECHO_N + 1], 'x');
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

Test(worker, messages_burst_arrive_in_order) {
  enum { N = 1000 };
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;

  atomic_store(&echo_last, N - 1);
  w = spawn_worker(loop, entry_echo, &opts);
  for (int i = 0; i < N; i++)
    post_int(w, i);
  cr_assert_eq(post_errors, 0);
  run_loop(loop);
  cr_assert_eq(nreceived, N);
  for (int i = 0; i < N; i++)
    cr_assert_eq(received[i], i);
  cr_assert_eq(ev[0], 'o');
  cr_assert_eq(ev[nev - 1], 'x');
  cr_assert_eq(nev, N + 2);
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

#define LAST_WORDS 100

static void entry_post_then_return(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  for (int64_t i = 0; i < LAST_WORDS; i++)
    weft_port_post_fn(weft_parent_port(), pack_int_cb, &i);
}

Test(worker, messages_posted_before_return_arrive_before_exit) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_post_then_return, &opts);
  run_loop(loop);
  cr_assert_eq(nreceived, LAST_WORDS);
  for (int i = 0; i < LAST_WORDS; i++)
    cr_assert_eq(received[i], i);
  cr_assert_eq(nev, LAST_WORDS + 2);
  cr_assert_eq(ev[0], 'o');
  cr_assert_eq(strncmp(ev + 1, repeat('m', LAST_WORDS), LAST_WORDS), 0);
  cr_assert_eq(ev[LAST_WORDS + 1], 'x', "events: %s", ev);
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- Exit codes, errors, messageerror -------------------------------------- */

static atomic_bool stop_after_exit;

static void entry_exit7(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_worker_exit(7);
  atomic_store(&stop_after_exit, weft_should_stop());
  /* A later call does not change the code. */
  weft_worker_exit(9);
}

Test(worker, worker_exit_sets_exit_code) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_exit7, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox");
  cr_assert_eq(exit_code, 7);
  cr_assert(atomic_load(&stop_after_exit));
  weft_worker_free(w);
  free_loop(loop);
}

static void exit3_handler(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg;
  weft_worker_exit(3);
}

static void entry_exit_in_callback(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), exit3_handler);
}

Test(worker, worker_exit_inside_callback_ends_a_live_loop) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_exit_in_callback, &opts);
  post_int(w, 1);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox");
  cr_assert_eq(exit_code, 3);
  weft_worker_free(w);
  free_loop(loop);
}

static void entry_boom(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  char text[8] = "boom";
  weft_report_error(text);
  memset(text, 'X', sizeof(text) - 1); /* The text was copied. */
}

Test(worker, report_error_gives_error_then_exit_1) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_boom, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "oex", "events: %s", ev);
  cr_assert_eq(error_err, WEFT_EUNCAUGHT);
  cr_assert_str_eq(error_text, "boom");
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

static void entry_bad_message(weft_loop_t* loop, void* arg) {
  static const unsigned char bad[] = {0xc1};
  int64_t five = 5;
  (void)loop;
  (void)arg;
  weft_port_post(weft_parent_port(), bad, sizeof(bad));
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &five);
}

Test(worker, malformed_message_from_worker_is_messageerror) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_bad_message, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "oEmx", "events: %s", ev);
  cr_assert_eq(msgerr_err, WEFT_EDECODE);
  cr_assert_eq(nreceived, 1);
  cr_assert_eq(received[0], 5);
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- terminate -------------------------------------------------------------- */

static atomic_bool spin_saw_stop;

static void entry_spin(weft_loop_t* loop, void* arg) {
  int64_t one = 1;
  volatile uint64_t x = 0;
  (void)loop;
  (void)arg;
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
  while (!weft_should_stop())
    x++;
  atomic_store(&spin_saw_stop, true);
}

static void terminate_on_message(weft_worker_t* w, weft_msg_t* msg) {
  on_message(w, msg);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
}

Test(worker, terminate_stops_a_cpu_loop_that_polls) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  opts.events.message = terminate_on_message;
  w = spawn_worker(loop, entry_spin, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "omxt", "events: %s", ev);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(term_code, 1);
  cr_assert(atomic_load(&spin_saw_stop));
  cr_assert(weft_worker_exited(w));
  weft_worker_free(w);
  free_loop(loop);
}

static void noop_handler(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg;
}

static void entry_parked(weft_loop_t* loop, void* arg) {
  int64_t one = 1;
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), noop_handler);
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
}

Test(worker, terminate_stops_a_parked_worker) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  opts.events.message = terminate_on_message;
  w = spawn_worker(loop, entry_parked, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "omxt", "events: %s", ev);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(term_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

static void flood_then_terminate(weft_worker_t* w) {
  on_online(w);
  for (int i = 0; i < 1000; i++)
    post_int(w, i);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
}

Test(worker, terminate_with_messages_in_flight) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  atomic_store(&echo_last, -1); /* Never closes by itself. */
  opts.events.online = flood_then_terminate;
  w = spawn_worker(loop, entry_echo, &opts);
  run_loop(loop);
  cr_assert_eq(post_errors, 0);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(term_code, 1);
  cr_assert_geq(nev, 3);
  cr_assert_eq(ev[0], 'o');
  cr_assert_eq(ev[nev - 2], 'x', "events: %s", ev);
  cr_assert_eq(ev[nev - 1], 't');
  cr_assert_leq(nreceived, 1000);
  for (int i = 0; i < nreceived; i++)
    cr_assert_eq(received[i], i); /* Whatever got back came in order. */
  weft_worker_free(w);
  free_loop(loop);
}

Test(worker, terminate_an_exited_worker_calls_back_at_once) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_exit7, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox");
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
  cr_assert_str_eq(ev, "oxt"); /* Synchronously. */
  cr_assert_eq(term_code, 7);
  cr_assert_eq(weft_worker_terminate(w, NULL), 0);
  run_loop(loop);
  cr_assert_str_eq(ev, "oxt");
  weft_worker_free(w);
  free_loop(loop);
}

Test(worker, post_after_exit_is_eclosed) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = spawn_worker(loop, entry_count, NULL);
  packed_t p = packed_int(1);
  int64_t v = 2;
  weft_msg_t* m = NULL;
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  cr_assert_eq(weft_worker_post(w, p.data, p.len), WEFT_ECLOSED);
  cr_assert_eq(weft_worker_post_fn(w, pack_int_cb, &v), WEFT_ECLOSED);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(msgpack_pack_int(weft_msg_packer(m), 3), 0);
  cr_assert_eq(weft_worker_post_msg(w, &m), WEFT_ECLOSED);
  cr_assert_not_null(m); /* Still the caller's. */
  weft_msg_free(m);
  /* ref/unref of an exited worker change nothing. */
  cr_assert_eq(weft_worker_ref(w), 0);
  run_loop(loop);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- ref / unref --------------------------------------------------------------- */

/* The worker stays alive (a handler on its parent port, nothing posted). */
static void entry_parked_quiet(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), noop_handler);
}

static void unref_on_online(weft_worker_t* w) {
  on_online(w);
  cr_assert_eq(weft_worker_unref(w), 0);
}

Test(worker, unref_worker_does_not_keep_loop_alive) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  opts.events.online = unref_on_online;
  w = spawn_worker(loop, entry_parked_quiet, &opts);
  run_loop(loop);
  /* The worker is alive (its parent port has a handler) but the loop
   * returned anyway. */
  cr_assert_str_eq(ev, "o");
  cr_assert_not(weft_worker_exited(w));
  /* ref() again: the loop now waits for the exit. */
  cr_assert_eq(weft_worker_ref(w), 0);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  cr_assert_str_eq(ev, "oxt", "events: %s", ev);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(term_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- Environment data --------------------------------------------------------- */

static packed_t env_k, env_k_worker;
static struct {
  int get_k;
  bool k_same;
  int get_removed;
  int get_bad;
  int set_own;
  int get_late;
  bool done;
} envr;

static void env_late_handler(weft_port_t* port, weft_msg_t* msg) {
  const void* b;
  size_t n;
  (void)msg;
  envr.get_late = weft_get_environment_data("late", &b, &n);
  envr.done = true;
  weft_port_close(port);
}

static void entry_env(weft_loop_t* loop, void* arg) {
  const void* b = NULL;
  size_t n = 0;
  (void)loop;
  (void)arg;
  envr.get_k = weft_get_environment_data("k", &b, &n);
  envr.k_same =
      envr.get_k == 0 && n == env_k.len && memcmp(b, env_k.data, n) == 0;
  envr.get_removed = weft_get_environment_data("removed", &b, &n);
  envr.get_bad = weft_get_environment_data("bad", &b, &n);
  /* The worker's own change stays in the worker. */
  envr.set_own = weft_set_environment_data("k", env_k_worker.data,
                                           env_k_worker.len);
  weft_port_on_message(weft_parent_port(), env_late_handler);
}

Test(worker, environment_data_is_snapshot_at_spawn) {
  static const unsigned char bad[] = {0x93, 0x01};
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  packed_t other = packed_int(-17);
  packed_t late = packed_int(2);
  const void* b;
  size_t n;
  msgpack_sbuffer sb;
  msgpack_packer pk;

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str_with_body(&pk, "a", 1);
  msgpack_pack_int(&pk, 1);
  env_k = packed_from(&sb);
  env_k_worker = packed_int(99);

  /* Overwrite: the last value wins. */
  cr_assert_eq(weft_set_environment_data("k", other.data, other.len), 0);
  cr_assert_eq(weft_set_environment_data("k", env_k.data, env_k.len), 0);
  cr_assert_eq(weft_get_environment_data("k", &b, &n), 0);
  cr_assert_eq(n, env_k.len);
  cr_assert_eq(memcmp(b, env_k.data, n), 0);
  /* Removing with len 0. */
  cr_assert_eq(weft_set_environment_data("removed", other.data, other.len),
               0);
  cr_assert_eq(weft_set_environment_data("removed", NULL, 0), 0);
  cr_assert_eq(weft_get_environment_data("removed", &b, &n), WEFT_EAGAIN);
  cr_assert_eq(weft_set_environment_data("removed", NULL, 0), 0);
  /* Malformed. */
  cr_assert_eq(weft_set_environment_data("bad", bad, sizeof(bad)),
               WEFT_EDECODE);
  cr_assert_eq(weft_get_environment_data("bad", &b, &n), WEFT_EAGAIN);

  w = spawn_worker(loop, entry_env, &opts);
  /* Set after the spawn: not in the worker's snapshot. */
  cr_assert_eq(weft_set_environment_data("late", late.data, late.len), 0);
  post_int(w, 1);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox", "events: %s", ev);
  cr_assert_eq(exit_code, 0);
  cr_assert(envr.done);
  cr_assert_eq(envr.get_k, 0);
  cr_assert(envr.k_same);
  cr_assert_eq(envr.get_removed, WEFT_EAGAIN);
  cr_assert_eq(envr.get_bad, WEFT_EAGAIN);
  cr_assert_eq(envr.set_own, 0);
  cr_assert_eq(envr.get_late, WEFT_EAGAIN);
  /* Main's value is untouched by the worker's set. */
  cr_assert_eq(weft_get_environment_data("k", &b, &n), 0);
  cr_assert_eq(n, env_k.len);
  cr_assert_eq(memcmp(b, env_k.data, n), 0);

  cr_assert_eq(weft_set_environment_data("k", NULL, 0), 0);
  cr_assert_eq(weft_set_environment_data("late", NULL, 0), 0);
  weft_worker_free(w);
  free_loop(loop);
}

Test(worker, environment_data_bad_arguments) {
  const void* b = (const void*)1;
  size_t n = 7;
  packed_t one = packed_int(1);
  cr_assert_eq(weft_set_environment_data(NULL, one.data, one.len), WEFT_EINVAL);
  cr_assert_eq(weft_set_environment_data("k", NULL, 3), WEFT_EINVAL);
  cr_assert_eq(weft_get_environment_data(NULL, &b, &n), WEFT_EINVAL);
  cr_assert_eq(weft_get_environment_data("k", NULL, &n), WEFT_EINVAL);
  cr_assert_eq(weft_get_environment_data("k", &b, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_get_environment_data("missing", &b, &n), WEFT_EAGAIN);
  cr_assert_null(b);
  cr_assert_eq(n, 0);
}

/* --- Heap limit ------------------------------------------------------------------ */

#define HEAP_LIMIT ((size_t)1 << 20)
#define HEAP_CHUNK 4096

static struct {
  long allocs;
  size_t limit_seen;
  bool got_null;
} heapr;

static void entry_eat_heap(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_heap_usage(NULL, &heapr.limit_seen);
  /* Bounded so a missing limit fails the test instead of eating RAM. */
  for (long i = 0; i < 4 * (long)(HEAP_LIMIT / HEAP_CHUNK); i++) {
    void* p = weft_malloc(HEAP_CHUNK);
    if (p == NULL) {
      heapr.got_null = true;
      break;
    }
    memset(p, 1, HEAP_CHUNK);
    heapr.allocs++;
  }
}

static weft_worker_t* second;
static int second_exit = -100;

static void on_second_exit(weft_worker_t* w, int code) {
  (void)w;
  second_exit = code;
}

static void on_heap_exit(weft_worker_t* w, int code) {
  weft_worker_opts_t o;
  on_exit_ev(w, code);
  /* The host carries on: spawn another worker from the exit event. */
  memset(&o, 0, sizeof(o));
  o.events.exit = on_second_exit;
  cr_assert_eq(weft_worker_spawn(&second, weft_loop_current(), entry_count,
                                 &o), 0);
}

Test(worker, heap_limit_breach_is_error_and_host_survives) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  void* p;
  opts.max_heap_bytes = HEAP_LIMIT;
  opts.events.exit = on_heap_exit;
  w = spawn_worker(loop, entry_eat_heap, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "oex", "events: %s", ev);
  cr_assert_eq(error_err, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(heapr.limit_seen, HEAP_LIMIT);
  cr_assert(heapr.got_null);
  cr_assert_gt(heapr.allocs, 0);
  cr_assert_leq((size_t)heapr.allocs * HEAP_CHUNK, HEAP_LIMIT);
  cr_assert_not_null(second);
  cr_assert_eq(second_exit, 0);
  cr_assert_eq(atomic_load(&invalid_entry_runs), 1);
  /* Main's own allocations are not limited. */
  p = weft_malloc(2 * HEAP_LIMIT);
  cr_assert_not_null(p);
  weft_free(p);
  weft_worker_free(w);
  weft_worker_free(second);
  free_loop(loop);
}

/* --- Errors ------------------------------------------------------------------------ */

static void entry_nop(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

Test(worker, null_arguments_are_einval) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = (weft_worker_t*)&loop;
  packed_t p = packed_int(1);
  int64_t v = 1;
  weft_msg_t* m = NULL;

  cr_assert_eq(weft_worker_spawn(NULL, loop, entry_nop, NULL), WEFT_EINVAL);
  /* No owner means the host loop (see hosted_*): with no entry, EINVAL. */
  cr_assert_eq(weft_worker_spawn(&w, NULL, NULL, NULL), WEFT_EINVAL);
  cr_assert_null(w);
  w = (weft_worker_t*)&loop;
  cr_assert_eq(weft_worker_spawn(&w, loop, NULL, NULL), WEFT_EINVAL);
  cr_assert_null(w);

  cr_assert_eq(weft_worker_post(NULL, p.data, p.len), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_fn(NULL, pack_int_cb, &v), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_msg(NULL, &m), WEFT_EINVAL);
  cr_assert_eq(weft_worker_terminate(NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_ref(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_unref(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_thread_id(NULL), 0);
  cr_assert_not(weft_worker_exited(NULL));
  cr_assert_null(weft_worker_get_data(NULL));
  weft_worker_set_data(NULL, &v); /* No crash. */
  weft_worker_free(NULL);

  /* On a live worker: NULL bytes, NULL packer, NULL message. */
  w = spawn_worker(loop, entry_parked, NULL);
  cr_assert_eq(weft_worker_post(w, NULL, 3), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post(w, p.data, 0), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_fn(w, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_msg(w, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_msg(w, &m), WEFT_EINVAL); /* *msg NULL */
  weft_worker_set_data(w, &v);
  cr_assert_eq(weft_worker_get_data(w), &v);
  cr_assert_eq(weft_worker_terminate(w, NULL), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  weft_worker_free(w);
  free_loop(loop);
}

static struct {
  weft_loop_t* loop;
  weft_worker_t* w;
  int spawn;
  bool spawn_out_null;
  int post;
  int post_fn;
  int terminate;
  int ref;
  int unref;
  bool is_main;
  bool should_stop;
} other;

static void other_thread(void* arg) {
  weft_worker_t* w = (weft_worker_t*)&other;
  packed_t p = packed_int(1);
  int64_t v = 1;
  (void)arg;
  other.spawn = weft_worker_spawn(&w, other.loop, entry_nop, NULL);
  other.spawn_out_null = w == NULL;
  other.post = weft_worker_post(other.w, p.data, p.len);
  other.post_fn = weft_worker_post_fn(other.w, pack_int_cb, &v);
  other.terminate = weft_worker_terminate(other.w, NULL);
  other.ref = weft_worker_ref(other.w);
  other.unref = weft_worker_unref(other.w);
  other.is_main = weft_is_main_thread();
  other.should_stop = weft_should_stop();
}

Test(worker, calls_other_than_post_from_a_thread_not_owning_the_loop_are_refused) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  uv_thread_t t;
  other.loop = loop;
  other.w = spawn_worker(loop, entry_parked, &opts);
  cr_assert_eq(uv_thread_create(&t, other_thread, NULL), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(other.spawn, WEFT_EWRONGTHREAD);
  cr_assert(other.spawn_out_null);
  /* Posts work from any thread (see the foreign-thread test below). */
  cr_assert_eq(other.post, 0);
  cr_assert_eq(other.post_fn, 0);
  cr_assert_eq(other.terminate, WEFT_EWRONGTHREAD);
  cr_assert_eq(other.ref, WEFT_EWRONGTHREAD);
  cr_assert_eq(other.unref, WEFT_EWRONGTHREAD);
  /* A thread that is not a worker counts as "main" for isMainThread. */
  cr_assert(other.is_main);
  cr_assert_not(other.should_stop);
  /* The refused calls changed nothing: the worker is alive and ref'd. */
  cr_assert_not(weft_worker_exited(other.w));
  cr_assert_eq(weft_worker_terminate(other.w, on_terminated), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(other.w));
  cr_assert_eq(term_code, 1);
  weft_worker_free(other.w);
  free_loop(loop);
}

Test(worker, worker_only_calls_on_main_are_einval) {
  cr_assert_eq(weft_worker_exit(0), WEFT_EINVAL);
  cr_assert_eq(weft_worker_exit(7), WEFT_EINVAL);
  cr_assert_eq(weft_report_error("boom"), WEFT_EINVAL);
  cr_assert_not(weft_should_stop());
  cr_assert(weft_is_main_thread());
}

/* --- Nested workers ---------------------------------------------------------------- */

static struct {
  uint64_t outer_tid;
  uint64_t inner_tid_seen_inside;
  uint64_t exit_cb_tid;        /* weft_thread_id() inside inner's exit. */
  bool exit_cb_on_outer_loop;
  bool inner_online;
  int inner_code;
  weft_loop_t* outer_loop;
  weft_worker_t* inner;
} nest;

static void entry_inner(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  nest.inner_tid_seen_inside = weft_thread_id();
  weft_worker_exit(5);
}

static void free_inner(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_worker_free(arg);
}

static int pack_nest_report(msgpack_packer* pk, void* arg) {
  (void)arg;
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, nest.inner_code);
  return msgpack_pack_uint64(pk, weft_worker_thread_id(nest.inner));
}

static void on_inner_online(weft_worker_t* w) {
  (void)w;
  nest.inner_online = true;
}

static void on_inner_exit(weft_worker_t* w, int code) {
  nest.inner_code = code;
  nest.exit_cb_tid = weft_thread_id();
  nest.exit_cb_on_outer_loop = weft_loop_current() == nest.outer_loop;
  weft_port_post_fn(weft_parent_port(), pack_nest_report, NULL);
  weft_set_immediate(weft_loop_current(), free_inner, w, NULL);
}

static void entry_outer(weft_loop_t* loop, void* arg) {
  weft_worker_opts_t o;
  (void)arg;
  nest.outer_tid = weft_thread_id();
  nest.outer_loop = loop;
  memset(&o, 0, sizeof(o));
  o.name = "inner";
  o.events.online = on_inner_online;
  o.events.exit = on_inner_exit;
  if (weft_worker_spawn(&nest.inner, loop, entry_inner, &o) != 0)
    weft_report_error("nested spawn failed");
}

static int64_t nest_msg_code = -1;
static uint64_t nest_msg_tid;

static void on_nest_message(weft_worker_t* w, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  log_ev('m');
  (void)w;
  if (o != NULL && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2) {
    nest_msg_code = o->via.array.ptr[0].via.i64;
    nest_msg_tid = o->via.array.ptr[1].via.u64;
  }
}

Test(worker, nested_worker_exit_arrives_at_outer_loop) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  opts.events.message = on_nest_message;
  w = spawn_worker(loop, entry_outer, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "omx", "events: %s", ev);
  cr_assert_eq(exit_code, 0);
  cr_assert(nest.inner_online);
  cr_assert_eq(nest.inner_code, 5);
  cr_assert_eq(nest_msg_code, 5);
  cr_assert_eq(nest.outer_tid, weft_worker_thread_id(w));
  cr_assert_gt(nest_msg_tid, 0);
  cr_assert_neq(nest_msg_tid, nest.outer_tid);
  cr_assert_eq(nest.inner_tid_seen_inside, nest_msg_tid);
  cr_assert_eq(nest.exit_cb_tid, nest.outer_tid);
  cr_assert(nest.exit_cb_on_outer_loop);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- weft_worker_free on a running worker ------------------------------------------ */

/* Inside a worker (so the outer worker's teardown waits for the inner one):
 * freeing a running inner worker stops it, and none of its events run
 * afterwards. */
static struct {
  atomic_int inner_events_after_free;
  atomic_bool inner_stopped;
  bool freed;
} frr;

static void fr_inner_handler(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg;
}

static void fr_inner_entry(weft_loop_t* loop, void* arg) {
  int64_t one = 1;
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), fr_inner_handler);
  /* More messages after the one that makes the owner free us. */
  for (int i = 0; i < 50; i++)
    weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
}

static void fr_inner_message(weft_worker_t* w, weft_msg_t* msg) {
  (void)msg;
  if (frr.freed) {
    atomic_fetch_add(&frr.inner_events_after_free, 1);
    return;
  }
  frr.freed = true;
  weft_worker_free(w);
}

static void fr_inner_exit(weft_worker_t* w, int code) {
  (void)w;
  (void)code;
  atomic_fetch_add(&frr.inner_events_after_free, 1);
}

static void fr_inner_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  (void)err;
  (void)text;
  atomic_fetch_add(&frr.inner_events_after_free, 1);
}

static void fr_outer_entry(weft_loop_t* loop, void* arg) {
  weft_worker_opts_t o;
  weft_worker_t* inner;
  (void)arg;
  memset(&o, 0, sizeof(o));
  o.events.message = fr_inner_message;
  o.events.exit = fr_inner_exit;
  o.events.error = fr_inner_error;
  if (weft_worker_spawn(&inner, loop, fr_inner_entry, &o) != 0)
    weft_report_error("nested spawn failed");
}

Test(worker, free_running_worker_inside_a_worker) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, fr_outer_entry, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox", "events: %s", ev);
  cr_assert_eq(exit_code, 0);
  cr_assert(frr.freed);
  cr_assert_eq(atomic_load(&frr.inner_events_after_free), 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* ---- Freeing and unref around the exit event ---- */

Test(worker, pending_unref_unref_right_after_spawn) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_parked_quiet, &opts);
  cr_assert_eq(weft_worker_unref(w), 0);
  run_loop(loop); /* Spins forever without the fix. */
  cr_assert_not(weft_worker_exited(w));
  cr_assert_eq(weft_worker_ref(w), 0);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  cr_assert_eq(term_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

static void free_on_message(weft_worker_t* w, weft_msg_t* msg) {
  on_message(w, msg);
  weft_worker_free(w);
}

Test(worker, pending_free_running_worker_on_main) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  opts.events.message = free_on_message;
  spawn_worker(loop, entry_parked, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "om", "events after free: %s", ev);
  free_loop(loop); /* EBUSY without the fix. */
}

/* weft_worker_free() of a running worker lets go of it at once: the loop
 * can be freed right after, with no run in between, and the worker's
 * thread still ends on its own and releases everything (its channel's
 * cores are counted: they go with the worker's record, last). */
static atomic_int spinning;

static void entry_spin_flag(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  atomic_store(&spinning, 1);
  while (!weft_should_stop())
    ;
  atomic_store(&spin_saw_stop, true);
}

Test(worker, free_running_worker_then_loop_needs_no_run) {
  long cores0 = weft__port_live_cores();
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  /* Freed before its thread may even have started. */
  w = spawn_worker(loop, entry_parked, &opts);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0); /* WEFT_EBUSY before. */
  WAIT_UNTIL(weft__port_live_cores() == cores0, 10000);
  cr_assert_eq(weft__port_live_cores(), cores0, "the worker did not end");

  /* Freed while busy in its entry: its thread sees the stop and ends. */
  loop = new_loop();
  atomic_store(&spinning, 0);
  atomic_store(&spin_saw_stop, false);
  w = spawn_worker(loop, entry_spin_flag, &opts);
  WAIT_UNTIL(atomic_load(&spinning), 10000);
  cr_assert(atomic_load(&spinning));
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0); /* WEFT_EBUSY before. */
  WAIT_UNTIL(weft__port_live_cores() == cores0, 10000);
  cr_assert_eq(weft__port_live_cores(), cores0, "the worker did not end");
  cr_assert(atomic_load(&spin_saw_stop));
  /* No event ran after the free. */
  cr_assert_eq(strchr(ev, 'x'), NULL, "events: %s", ev);
}

static void free_on_exit(weft_worker_t* w, int code) {
  on_exit_ev(w, code);
  weft_worker_free(w);
}

Test(worker, pending_free_inside_exit_event) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  opts.events.exit = free_on_exit;
  spawn_worker(loop, entry_exit7, &opts);
  run_loop(loop); /* Use after free without the fix. */
  cr_assert_str_eq(ev, "ox");
  cr_assert_eq(exit_code, 7);
  free_loop(loop);
}

/* ---- Threads: fresh on request, reused otherwise ---- */

static _Thread_local int tls_counter;
static atomic_int tls_seen[8];
static atomic_int tls_next;

static void tls_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  atomic_store(&tls_seen[atomic_fetch_add(&tls_next, 1)], ++tls_counter);
}

static int tls_exits;
static void tls_on_exit(weft_worker_t* w, int code);

static weft_worker_opts_t tls_opts;

static void tls_spawn_next(weft_loop_t* loop) {
  weft_worker_t* w = NULL;
  cr_assert_eq(weft_worker_spawn(&w, loop, tls_entry, &tls_opts), 0);
}

static void tls_on_exit(weft_worker_t* w, int code) {
  cr_assert_eq(code, 0);
  weft_worker_free(w); /* Deferred until the exit event returns. */
  if (++tls_exits < 8)
    tls_spawn_next(weft_loop_current());
}

/* Eight workers one after another, each on a thread made for it alone:
 * every one sees its thread-local variables fresh. */
Test(worker, fresh_thread_flag_gives_fresh_thread_locals) {
  weft_loop_t* loop = new_loop();
  int i;
  memset(&tls_opts, 0, sizeof(tls_opts));
  tls_opts.flags = WEFT_WORKER_FRESH_THREAD;
  tls_opts.events.exit = tls_on_exit;
  tls_exits = 0;
  atomic_store(&tls_next, 0);
  tls_spawn_next(loop);
  run_loop(loop);
  cr_assert_eq(tls_exits, 8);
  for (i = 0; i < 8; i++)
    cr_assert_eq(atomic_load(&tls_seen[i]), 1, "worker %d saw %d", i,
                 atomic_load(&tls_seen[i]));
  free_loop(loop);
}

/* Without the flag a finished worker's thread may take the next worker:
 * each still gets its own thread id, loop and parent port, and all eight
 * run to a normal exit. */
static weft_loop_t* reuse_loops[8];
static uint64_t reuse_ids[8];
static atomic_int reuse_next;

static void reuse_entry(weft_loop_t* loop, void* arg) {
  int i = atomic_fetch_add(&reuse_next, 1);
  (void)arg;
  reuse_loops[i] = loop;
  reuse_ids[i] = weft_thread_id();
  cr_assert_eq(weft_loop_current(), loop);
  cr_assert_not_null(weft_parent_port());
}

Test(worker, reused_threads_still_give_each_worker_its_own_context) {
  weft_loop_t* loop = new_loop();
  int i, j;
  memset(&tls_opts, 0, sizeof(tls_opts));
  tls_opts.events.exit = tls_on_exit;
  tls_exits = 0;
  atomic_store(&reuse_next, 0);
  for (i = 0; i < 8; i++) {
    weft_worker_t* w = NULL;
    weft_worker_opts_t o = {0};
    cr_assert_eq(weft_worker_spawn(&w, loop, reuse_entry, &o), 0);
    run_loop(loop);
    cr_assert(weft_worker_exited(w));
    weft_worker_free(w);
  }
  cr_assert_eq(atomic_load(&reuse_next), 8);
  for (i = 0; i < 8; i++)
    for (j = i + 1; j < 8; j++)
      cr_assert_neq(reuse_ids[i], reuse_ids[j]);
  free_loop(loop);
}

/* weft_worker_exit() inside a message handler: no further message of the
 * same batch is delivered (Node's process.exit ends the worker at once). */
static atomic_int exit_batch_seen;

static void exit_batch_handler(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg;
  atomic_fetch_add(&exit_batch_seen, 1);
  weft_worker_exit(3);
}

static atomic_int exit_batch_posted;

static void exit_batch_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  /* The handler goes on only once main has posted all 100: otherwise the
   * first message could end the worker while main still posts (ECLOSED). */
  while (!atomic_load(&exit_batch_posted))
    uv_sleep(1);
  weft_port_on_message(weft_parent_port(), exit_batch_handler);
}

static int exit_batch_code;
static void exit_batch_on_exit(weft_worker_t* w, int code) {
  (void)w;
  exit_batch_code = code;
}

Test(worker, exit_in_handler_stops_the_batch) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  int i;
  atomic_store(&exit_batch_seen, 0);
  atomic_store(&exit_batch_posted, 0);
  exit_batch_code = -1;
  opts.events.exit = exit_batch_on_exit;
  cr_assert_eq(weft_worker_spawn(&w, loop, exit_batch_entry, &opts), 0);
  /* Queued before the worker has a handler: they arrive as one batch. */
  for (i = 0; i < 100; i++)
    cr_assert_eq(weft_worker_post(w, "\x01", 1), 0);
  atomic_store(&exit_batch_posted, 1);
  run_loop(loop);
  cr_assert_eq(exit_batch_code, 3);
  cr_assert_eq(atomic_load(&exit_batch_seen), 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* resourceLimits.stackSizeMb: the worker's thread has the stack asked for
 * (and a worker asking for another size never lands on a cached thread of
 * the wrong size). */
static atomic_size_t stack_seen;

static void stack_entry(weft_loop_t* loop, void* arg) {
  pthread_attr_t attr;
  size_t size = 0;
  (void)loop;
  (void)arg;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstacksize(&attr, &size);
    pthread_attr_destroy(&attr);
  }
  atomic_store(&stack_seen, size);
}

Test(worker, stack_size_option_sets_the_thread_stack) {
  static const size_t sizes[] = {(size_t)1 << 20, (size_t)4 << 20,
                                 (size_t)1 << 20};
  weft_loop_t* loop = new_loop();
  size_t i;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    weft_worker_t* w = NULL;
    weft_worker_opts_t opts = {0};
    opts.stack_size = sizes[i];
    atomic_store(&stack_seen, 0);
    cr_assert_eq(weft_worker_spawn(&w, loop, stack_entry, &opts), 0);
    run_loop(loop);
    cr_assert_geq(atomic_load(&stack_seen), sizes[i]);
    cr_assert_lt(atomic_load(&stack_seen), sizes[i] * 2);
    weft_worker_free(w);
  }
  free_loop(loop);
}

/* opts.max_message_bytes limits both directions at the sender. */
static atomic_int big_from_worker;
static atomic_size_t limit_got;

static void limit_on_message(weft_port_t* port, weft_msg_t* msg) {
  size_t len = 0;
  weft_msg_data(msg, &len);
  atomic_store(&limit_got, len);
  weft_port_close(port);
}

static void limit_entry(weft_loop_t* loop, void* arg) {
  static const char big[] = {(char)0xa9, 'a', 'b', 'c', 'd',
                             'e', 'f', 'g', 'h', 'i'}; /* 10 bytes */
  (void)loop;
  (void)arg;
  atomic_store(&big_from_worker,
               weft_port_post(weft_parent_port(), big, sizeof big));
  weft_port_on_message(weft_parent_port(), limit_on_message);
}

Test(worker, message_limit_applies_both_ways) {
  static const char big[] = {(char)0xa9, 'a', 'b', 'c', 'd',
                             'e', 'f', 'g', 'h', 'i'};
  static const char at_limit[] = {(char)0xa7, 'a', 'b', 'c',
                                  'd',        'e', 'f', 'g'};
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  atomic_store(&limit_got, 0);
  opts.max_message_bytes = 8;
  cr_assert_eq(weft_worker_spawn(&w, loop, limit_entry, &opts), 0);
  cr_assert_eq(weft_worker_post(w, big, sizeof big), WEFT_EMSGSIZE);
  /* At the limit: fine. The worker stays until it got this one. */
  cr_assert_eq(weft_worker_post(w, at_limit, sizeof at_limit), 0);
  run_loop(loop);
  cr_assert_eq(atomic_load(&big_from_worker), WEFT_EMSGSIZE);
  cr_assert_eq(atomic_load(&limit_got), sizeof at_limit);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- terminate and weft_atomic_wait (Node: terminate() interrupts
 * Atomics.wait) ------------------------------------------------------------ */

static weft_shared_t* wsh;
static atomic_int wait_rc[3];
static atomic_int wait_res[3];

/* Block in a wait nobody notifies: width 4 or 8 in `arg`. */
static void entry_wait_forever(weft_loop_t* loop, void* arg) {
  weft_wait_result_t res = WEFT_WAIT_OK;
  int64_t one = 1;
  int rc;
  (void)loop;
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
  if ((intptr_t)arg == 4)
    rc = weft_atomic_wait32(wsh, 0, 0, -1, &res);
  else
    rc = weft_atomic_wait64(wsh, 0, 0, -1, &res);
  atomic_store(&wait_res[0], (int)res);
  atomic_store(&wait_rc[0], rc);
}

static intptr_t wait_width;

/* Terminate once the worker sleeps in its wait. */
static void terminate_when_waiting(weft_worker_t* w, weft_msg_t* msg) {
  on_message(w, msg);
  await_waiters(wsh, 0, (size_t)wait_width, 1);
  uv_sleep(5); /* Past the spin: asleep on its futex. */
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
}

/* Before the fix the wait never returned: the test timed out (the suite's
 * 30 s). */
Test(worker, terminate_wakes_a_worker_blocked_in_atomic_wait) {
  for (intptr_t width = 4; width <= 8; width += 4) {
    weft_loop_t* loop = new_loop();
    weft_worker_opts_t opts = logging_opts();
    weft_worker_t* w;
    nev = 0;
    ev[0] = '\0';
    cr_assert_eq(weft_shared_new(&wsh, 64), 0);
    atomic_store(&wait_rc[0], 1);
    wait_width = width;
    opts.events.message = terminate_when_waiting;
    opts.arg = (void*)width;
    w = spawn_worker(loop, entry_wait_forever, &opts);
    run_loop(loop);
    cr_assert_str_eq(ev, "omxt", "width %d: events %s", (int)width, ev);
    cr_assert_eq(atomic_load(&wait_rc[0]), WEFT_ETERMINATED, "width %d: %s",
                 (int)width, weft_err_name(atomic_load(&wait_rc[0])));
    cr_assert_eq(exit_code, 1);
    cr_assert_eq(term_code, 1);
    cr_assert_eq(weft__shared_waiters(wsh, 0, (size_t)width), 0);
    weft_worker_free(w);
    weft_shared_release(wsh);
    free_loop(loop);
  }
}

/* A wait that starts after the stop request returns at once, whatever the
 * slot holds (the worker is to end, as after Node's terminate()). */
static void entry_wait_after_stop(weft_loop_t* loop, void* arg) {
  weft_wait_result_t res = WEFT_WAIT_OK;
  int64_t one = 1;
  (void)loop;
  (void)arg;
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
  while (!weft_should_stop())
    uv_sleep(1);
  atomic_store(&wait_rc[0], weft_atomic_wait32(wsh, 0, 0, -1, &res));
  atomic_store(&wait_rc[1], weft_atomic_wait64(wsh, 0, 0, -1, &res));
  atomic_store(&wait_rc[2], weft_atomic_wait32(wsh, 0, 7, -1, &res));
}

/* Before the fix the first wait never returned: the test timed out. */
Test(worker, wait_started_after_terminate_returns_at_once) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  cr_assert_eq(weft_shared_new(&wsh, 64), 0);
  for (int i = 0; i < 3; i++)
    atomic_store(&wait_rc[i], 1);
  opts.events.message = terminate_on_message;
  w = spawn_worker(loop, entry_wait_after_stop, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "omxt", "events: %s", ev);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(atomic_load(&wait_rc[i]), WEFT_ETERMINATED, "wait %d: %s", i,
                 weft_err_name(atomic_load(&wait_rc[i])));
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  weft_shared_release(wsh);
  free_loop(loop);
}

/* weft_worker_exit() is a stop request too: the code stays the worker's. */
static void entry_exit_then_wait(weft_loop_t* loop, void* arg) {
  weft_wait_result_t res = WEFT_WAIT_OK;
  (void)loop;
  (void)arg;
  weft_worker_exit(5);
  atomic_store(&wait_rc[0], weft_atomic_wait32(wsh, 0, 0, -1, &res));
}

Test(worker, wait_after_worker_exit_returns_at_once) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  cr_assert_eq(weft_shared_new(&wsh, 64), 0);
  atomic_store(&wait_rc[0], 1);
  w = spawn_worker(loop, entry_exit_then_wait, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "ox", "events: %s", ev);
  cr_assert_eq(atomic_load(&wait_rc[0]), WEFT_ETERMINATED, "%s",
               weft_err_name(atomic_load(&wait_rc[0])));
  cr_assert_eq(exit_code, 5);
  weft_worker_free(w);
  weft_shared_release(wsh);
  free_loop(loop);
}

/* Until it is asked to stop, a worker's waits time out and wake as
 * before; so do the main thread's after a worker was terminated. */
static void entry_wait_normally(weft_loop_t* loop, void* arg) {
  weft_wait_result_t res = WEFT_WAIT_OK;
  int64_t one = 1;
  (void)loop;
  (void)arg;
  atomic_store(&wait_rc[0], weft_atomic_wait32(wsh, 0, 0, 20, &res));
  atomic_store(&wait_res[0], (int)res);
  weft_port_post_fn(weft_parent_port(), pack_int_cb, &one);
  atomic_store(&wait_rc[1], weft_atomic_wait64(wsh, 0, 0, -1, &res));
  atomic_store(&wait_res[1], (int)res);
}

static void notify_when_waiting(weft_worker_t* w, weft_msg_t* msg) {
  int woken = 0;
  on_message(w, msg);
  await_waiters(wsh, 0, 8, 1);
  cr_assert_eq(weft_atomic_store64(wsh, 0, 1), 0);
  cr_assert_eq(weft_atomic_notify64(wsh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
}

Test(worker, waits_on_a_worker_time_out_and_wake_as_before) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  weft_wait_result_t res = WEFT_WAIT_OK;
  cr_assert_eq(weft_shared_new(&wsh, 64), 0);
  opts.events.message = notify_when_waiting;
  w = spawn_worker(loop, entry_wait_normally, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "omx", "events: %s", ev);
  cr_assert_eq(exit_code, 0);
  cr_assert_eq(atomic_load(&wait_rc[0]), 0);
  cr_assert_eq(atomic_load(&wait_res[0]), WEFT_WAIT_TIMED_OUT);
  cr_assert_eq(atomic_load(&wait_rc[1]), 0);
  cr_assert_eq(atomic_load(&wait_res[1]), WEFT_WAIT_OK);
  weft_worker_free(w);
  /* The main thread is no worker: its waits never end with ETERMINATED. */
  cr_assert_eq(weft_atomic_wait32(wsh, 1, 0, 10, &res), 0);
  cr_assert_eq(res, WEFT_WAIT_TIMED_OUT);
  weft_shared_release(wsh);
  free_loop(loop);
}

/* --- terminate of an unref'd worker (Node resolves terminate() with 1) --- */

static void unref_terminate_on_online(weft_worker_t* w) {
  on_online(w);
  cr_assert_eq(weft_worker_unref(w), 0);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
}

/* Before the fix weft_loop_run returned at once ("o"), and the exit event
 * and terminate callback never ran, even on later runs. */
Test(worker, terminate_of_unrefd_worker_completes) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w;
  opts.events.online = unref_terminate_on_online;
  w = spawn_worker(loop, entry_parked_quiet, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "oxt", "events: %s", ev);
  cr_assert_eq(exit_code, 1);
  cr_assert_eq(term_code, 1);
  cr_assert(weft_worker_exited(w));
  weft_worker_free(w);
  free_loop(loop);
}

Test(worker, terminate_of_worker_unrefd_before_the_run_completes) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_parked_quiet, &opts);
  cr_assert_eq(weft_worker_unref(w), 0);
  cr_assert_eq(weft_worker_terminate(w, on_terminated), 0);
  run_loop(loop);
  cr_assert_str_eq(ev, "oxt", "events: %s", ev);
  cr_assert_eq(term_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* Without a callback an unref'd worker still does not hold the loop. */
Test(worker, terminate_without_callback_keeps_unref_semantics) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_parked_quiet, &opts);
  cr_assert_eq(weft_worker_unref(w), 0);
  cr_assert_eq(weft_worker_terminate(w, NULL), 0);
  run_loop(loop);
  /* Whatever arrived by then: the loop did not wait for the exit. Ref it
   * again and the next run does. */
  cr_assert_eq(weft_worker_ref(w), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- Posting from a thread that owns no loop ---------------------------- */

#define FOREIGN_N 100

static struct {
  weft_worker_t* w;
  int posted_errors;
  int after_exit;
} foreign;

static void foreign_poster(void* arg) {
  (void)arg;
  for (int64_t v = 1; v <= FOREIGN_N; v++) {
    int err = v % 2 == 0
                  ? weft_worker_post_fn(foreign.w, pack_int_cb, &v)
                  : weft_worker_post(foreign.w, packed_int(v).data,
                                     packed_int(v).len);
    if (err != 0)
      foreign.posted_errors++;
  }
}

static void foreign_after_exit(void* arg) {
  int64_t v = 1;
  weft_msg_t* m = NULL;
  (void)arg;
  foreign.after_exit = weft_worker_post(foreign.w, packed_int(1).data,
                                        packed_int(1).len);
  if (foreign.after_exit == WEFT_ECLOSED)
    foreign.after_exit = weft_worker_post_fn(foreign.w, pack_int_cb, &v);
  if (foreign.after_exit == WEFT_ECLOSED && weft_msg_new(&m) == 0) {
    msgpack_pack_int(weft_msg_packer(m), 1);
    foreign.after_exit = weft_worker_post_msg(foreign.w, &m);
    weft_msg_free(m); /* Still ours on error. */
  }
}

/* The echo worker closes its port after FOREIGN_N: every message posted
 * from the foreign thread arrives, in order; once the worker exited, a post
 * from another thread answers WEFT_ECLOSED (and ASan sees no freed memory
 * touched: the owner side's port was released at the exit event). */
Test(worker, posts_from_a_foreign_thread_arrive_in_order_then_eclosed) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  uv_thread_t t;
  atomic_store(&echo_last, FOREIGN_N);
  foreign.w = spawn_worker(loop, entry_echo, &opts);
  cr_assert_eq(uv_thread_create(&t, foreign_poster, NULL), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(foreign.posted_errors, 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(foreign.w));
  cr_assert_eq(nreceived, FOREIGN_N);
  for (int i = 0; i < FOREIGN_N; i++)
    cr_assert_eq(received[i], i + 1);
  cr_assert_eq(uv_thread_create(&t, foreign_after_exit, NULL), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(foreign.after_exit, WEFT_ECLOSED);
  weft_worker_free(foreign.w);
  free_loop(loop);
}

/* --- Hosted workers: spawned from a thread with no loop ------------------ */

/* Events of hosted workers run on weft's host thread: recorded in atomics
 * (and the thread's name), read by the test's thread. */
static struct {
  atomic_int online;
  atomic_llong got; /* The last integer the worker sent; -1: none. */
  atomic_int exit_code;
  atomic_int term_code;
  atomic_int exits;
  atomic_bool on_host_thread; /* Every event ran on "weft-host". */
  atomic_bool off_host_thread;
} hosted;

static void hosted_reset(void) {
  atomic_store(&hosted.online, 0);
  atomic_store(&hosted.got, -1);
  atomic_store(&hosted.exit_code, -1);
  atomic_store(&hosted.term_code, -1);
  atomic_store(&hosted.exits, 0);
  atomic_store(&hosted.on_host_thread, false);
  atomic_store(&hosted.off_host_thread, false);
}

static void hosted_note_thread(void) {
  char name[32] = "";
  pthread_getname_np(pthread_self(), name, sizeof(name));
  if (strcmp(name, "weft-host") == 0 && weft_loop_current() != NULL)
    atomic_store(&hosted.on_host_thread, true);
  else
    atomic_store(&hosted.off_host_thread, true);
}

static void hosted_on_online(weft_worker_t* w) {
  (void)w;
  hosted_note_thread();
  atomic_store(&hosted.online, 1);
}

static void hosted_on_message(weft_worker_t* w, weft_msg_t* msg) {
  (void)w;
  hosted_note_thread();
  atomic_store(&hosted.got, msg_int(msg));
}

static void hosted_on_exit(weft_worker_t* w, int code) {
  (void)w;
  hosted_note_thread();
  atomic_store(&hosted.exit_code, code);
  atomic_fetch_add(&hosted.exits, 1);
}

static void hosted_on_terminated(weft_worker_t* w, int code) {
  (void)w;
  hosted_note_thread();
  atomic_store(&hosted.term_code, code);
}

static weft_worker_opts_t hosted_opts(void) {
  weft_worker_opts_t o;
  memset(&o, 0, sizeof(o));
  o.events.online = hosted_on_online;
  o.events.message = hosted_on_message;
  o.events.exit = hosted_on_exit;
  return o;
}

/* The worker answers each integer n with n + 1 and keeps running. */
static void echo_plus_one(weft_port_t* port, weft_msg_t* msg) {
  int64_t v = msg_int(msg) + 1;
  weft_port_post_fn(port, pack_int_cb, &v);
}

static void entry_echo_plus_one(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), echo_plus_one);
}

Test(worker, hosted_worker_from_a_thread_with_no_loop) {
  weft_worker_opts_t opts = hosted_opts();
  weft_worker_t* w = NULL;
  int64_t v = 41;
  hosted_reset();
  cr_assert_null(weft_loop_current(), "the test's thread has no loop");
  /* WEFT_EINVAL before: an owner loop was required. */
  cr_assert_eq(weft_worker_spawn(&w, NULL, entry_echo_plus_one, &opts), 0);
  cr_assert_not_null(w);
  cr_assert_null(weft_loop_current(), "spawning made no loop here");
  /* A new thread carries its creator's name until it sets its own: a
   * worker thread the host just made is "weft-host" for a moment. */
  WAIT_UNTIL(count_threads_named("weft-host") == 1, 10000);
  cr_assert_eq(count_threads_named("weft-host"), 1);
  WAIT_UNTIL(atomic_load(&hosted.online), 10000);
  cr_assert(atomic_load(&hosted.online));
  cr_assert_eq(weft_worker_post_fn(w, pack_int_cb, &v), 0);
  WAIT_UNTIL(atomic_load(&hosted.got) == 42, 10000);
  cr_assert_eq(atomic_load(&hosted.got), 42);
  /* Owner calls work from here: they run on the host thread. */
  cr_assert(weft_worker_has_ref(w));
  cr_assert_eq(weft_worker_unref(w), 0);
  cr_assert_not(weft_worker_has_ref(w));
  cr_assert_eq(weft_worker_ref(w), 0);
  cr_assert(weft_worker_has_ref(w));
  cr_assert_not(weft_worker_exited(w));
  cr_assert_eq(weft_worker_terminate(w, hosted_on_terminated), 0);
  WAIT_UNTIL(atomic_load(&hosted.term_code) != -1, 10000);
  cr_assert_eq(atomic_load(&hosted.exit_code), 1);
  cr_assert_eq(atomic_load(&hosted.term_code), 1);
  cr_assert(weft_worker_exited(w));
  cr_assert_not(weft_worker_has_ref(w));
  cr_assert(atomic_load(&hosted.on_host_thread));
  cr_assert_not(atomic_load(&hosted.off_host_thread),
                "an event ran off the host thread");
  weft_worker_free(w);
  /* The host ends with its last worker. */
  WAIT_UNTIL(count_threads_named("weft-host") == 0, 10000);
  cr_assert_eq(count_threads_named("weft-host"), 0);
}

/* Freed while it runs, from the loop-less thread: no more events, the
 * host ends, and a later spawn starts a new host. */
Test(worker, hosted_worker_freed_running_then_host_restarts) {
  weft_worker_opts_t opts = hosted_opts();
  weft_worker_t* w = NULL;
  long cores0 = weft__port_live_cores();
  int i;
  hosted_reset();
  for (i = 0; i < 3; i++) {
    cr_assert_eq(weft_worker_spawn(&w, NULL, entry_echo_plus_one, &opts), 0);
    WAIT_UNTIL(atomic_load(&hosted.online) == 1, 10000);
    cr_assert_eq(atomic_load(&hosted.online), 1);
    atomic_store(&hosted.online, 0);
    weft_worker_free(w);
    WAIT_UNTIL(count_threads_named("weft-host") == 0, 10000);
    cr_assert_eq(count_threads_named("weft-host"), 0);
  }
  WAIT_UNTIL(weft__port_live_cores() == cores0, 10000);
  cr_assert_eq(weft__port_live_cores(), cores0);
  cr_assert_eq(atomic_load(&hosted.exits), 0, "an event ran after the free");
}

/* Two hosted workers share one host, which outlives the first. */
Test(worker, hosted_workers_share_one_host) {
  weft_worker_opts_t opts = hosted_opts();
  weft_worker_t *a = NULL, *b = NULL;
  int64_t v = 9;
  hosted_reset();
  cr_assert_eq(weft_worker_spawn(&a, NULL, entry_echo_plus_one, &opts), 0);
  cr_assert_eq(weft_worker_spawn(&b, NULL, entry_echo_plus_one, &opts), 0);
  /* A new thread carries its creator's name until it sets its own: a
   * worker thread the host just made is "weft-host" for a moment. */
  WAIT_UNTIL(count_threads_named("weft-host") == 1, 10000);
  cr_assert_eq(count_threads_named("weft-host"), 1);
  weft_worker_free(a);
  cr_assert_eq(weft_worker_post_fn(b, pack_int_cb, &v), 0);
  WAIT_UNTIL(atomic_load(&hosted.got) == 10, 10000);
  cr_assert_eq(atomic_load(&hosted.got), 10);
  /* A new thread carries its creator's name until it sets its own: a
   * worker thread the host just made is "weft-host" for a moment. */
  WAIT_UNTIL(count_threads_named("weft-host") == 1, 10000);
  cr_assert_eq(count_threads_named("weft-host"), 1);
  weft_worker_free(b);
  WAIT_UNTIL(count_threads_named("weft-host") == 0, 10000);
  cr_assert_eq(count_threads_named("weft-host"), 0);
}

/* --- workerData with transferables (opts.data_msg) ------------------------ */

static struct {
  bool same_object;     /* weft_msg_object(data_msg) == weft_worker_data(). */
  int take_buf;
  int take_buf_again;
  size_t buf_size;
  uint64_t buf_sum;
  int take_shared;
  int32_t shared_seen;
  int take_port;
  int64_t tag;
} wd;

static void entry_data_msg(weft_loop_t* loop, void* arg) {
  weft_msg_t* m = weft_worker_data_msg();
  const msgpack_object* o = weft_worker_data();
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  weft_port_t* port = NULL;
  void* bytes = NULL;
  size_t size = 0;
  (void)loop;
  (void)arg;
  wd.same_object = m != NULL && weft_msg_object(m) == o;
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
    return;
  wd.take_buf = weft_msg_take_buffer(m, &o->via.array.ptr[0], &buf);
  {
    weft_buffer_t* again = NULL;
    wd.take_buf_again =
        weft_msg_take_buffer(m, &o->via.array.ptr[0], &again);
  }
  if (wd.take_buf == 0 && weft_buffer_data(buf, &bytes, &size) == 0) {
    wd.buf_size = size;
    for (size_t i = 0; i < size; i++)
      wd.buf_sum += ((unsigned char*)bytes)[i];
  }
  weft_buffer_free(buf);
  wd.take_shared = weft_msg_take_shared(m, &o->via.array.ptr[1], &sh);
  if (wd.take_shared == 0) {
    weft_atomic_load32(sh, 0, &wd.shared_seen);
    weft_atomic_store32(sh, 1, 6); /* The spawner sees this. */
    weft_shared_release(sh);
  }
  wd.take_port = weft_msg_take_port(m, &o->via.array.ptr[2], &port);
  if (wd.take_port == 0)
    weft_port_on_message(port, echo_plus_one); /* Freed with the loop. */
  wd.tag = o->via.array.ptr[3].via.i64;
}

static int64_t dm_reply = -1;

static void dm_on_reply(weft_port_t* port, weft_msg_t* msg) {
  dm_reply = msg_int(msg);
  /* Closing our end closes the worker's: nothing keeps it alive then. */
  cr_assert_eq(weft_port_free(port), 0);
}

/* [buffer, shared, port, 7]: the buffer moves, the shared buffer is seen
 * by both, the port goes to the worker, which answers on it. */
static weft_msg_t* data_msg_of(weft_buffer_t* buf,
                               weft_shared_t* sh,
                               weft_port_t* port) {
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_array(weft_msg_packer(m), 4);
  cr_assert_eq(weft_msg_add_buffer(m, buf), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_msg_add_port(m, port), 0);
  msgpack_pack_int64(weft_msg_packer(m), 7);
  return m;
}

Test(worker, data_msg_moves_a_buffer_shares_a_shared_buffer_and_a_port) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_port_t *a, *b;
  weft_worker_t* w;
  void* bytes;
  size_t size;
  int32_t seen = 0;
  uint64_t sum = 0;
  cr_assert_eq(weft_buffer_new(&buf, 1000), 0);
  cr_assert_eq(weft_buffer_data(buf, &bytes, &size), 0);
  for (size_t i = 0; i < size; i++) {
    ((unsigned char*)bytes)[i] = (unsigned char)(i * 7);
    sum += (unsigned char)(i * 7);
  }
  cr_assert_eq(weft_atomic_store32(sh, 0, 5), 0);
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(a, dm_on_reply), 0);
  opts.data_msg = data_msg_of(buf, sh, b);
  w = spawn_worker(loop, entry_data_msg, &opts);
  /* The spawn took the message: the buffer is detached here, the port
   * moved (its handle is a husk). */
  cr_assert(weft_buffer_detached(buf));
  cr_assert_eq(weft_buffer_size(buf), 0);
  cr_assert_eq(port_post_int(b, 1), WEFT_ECLOSED);
  cr_assert_eq(port_post_int(a, 41), 0);
  run_loop(loop);
  cr_assert_eq(exit_code, 0, "exit %d (%s)", exit_code, ev);
  cr_assert(wd.same_object);
  cr_assert_eq(wd.take_buf, 0);
  cr_assert_eq(wd.take_buf_again, WEFT_EDETACHED);
  cr_assert_eq(wd.buf_size, 1000);
  cr_assert_eq(wd.buf_sum, sum);
  cr_assert_eq(wd.take_shared, 0);
  cr_assert_eq(wd.shared_seen, 5);
  cr_assert_eq(weft_atomic_load32(sh, 1, &seen), 0);
  cr_assert_eq(seen, 6, "the worker's store is seen by the spawner");
  cr_assert_eq(wd.take_port, 0);
  cr_assert_eq(dm_reply, 42, "the worker answered on the moved port");
  cr_assert_eq(wd.tag, 7);
  weft_worker_free(w);
  weft_buffer_free(buf);
  cr_assert_eq(weft_port_free(b), 0); /* The husk. */
  weft_shared_release(sh);
  free_loop(loop);
}

/* On error the caller keeps the message, unchanged: nothing detached or
 * moved, and it can still be used (here: given to a spawn that works). */
Test(worker, data_msg_stays_the_callers_on_error) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_buffer_t* buf = NULL;
  weft_buffer_t* pinned = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_port_t *a, *b;
  weft_worker_t* w = NULL;
  weft_msg_t* m;
  packed_t one = packed_int(1);
  cr_assert_eq(weft_buffer_new(&buf, 16), 0);
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(a, dm_on_reply), 0);
  opts.data_msg = data_msg_of(buf, sh, b);
  /* Bad arguments. */
  cr_assert_eq(weft_worker_spawn(&w, loop, NULL, &opts), WEFT_EINVAL);
  opts.data = one.data;
  opts.data_len = one.len;
  cr_assert_eq(weft_worker_spawn(&w, loop, entry_data_msg, &opts),
               WEFT_EINVAL, "data and data_msg both");
  opts.data = NULL;
  opts.data_len = 0;
  opts.max_message_bytes = 4;
  cr_assert_eq(weft_worker_spawn(&w, loop, entry_data_msg, &opts),
               WEFT_EMSGSIZE);
  opts.max_message_bytes = 0;
  cr_assert_null(w);
  cr_assert_not(weft_buffer_detached(buf));
  cr_assert_eq(port_post_int(b, 1), 0, "the port is still ours");
  /* A transfer that cannot be made: the buffer left with another post. */
  cr_assert_eq(weft_buffer_new(&pinned, 8), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_array(weft_msg_packer(m), 1);
  cr_assert_eq(weft_msg_add_buffer(m, pinned), 0);
  {
    weft_msg_t* first = NULL;
    weft_worker_opts_t o2 = opts;
    weft_msg_t* got;
    cr_assert_eq(weft_msg_new(&first), 0);
    cr_assert_eq(weft_msg_add_buffer(first, pinned), 0);
    got = round_trip(a, b, first); /* `pinned` is detached now. */
    weft_msg_free(got);
    o2.data_msg = m;
    cr_assert_eq(weft_worker_spawn(&w, loop, entry_data_msg, &o2),
                 WEFT_EDETACHED);
  }
  weft_msg_free(m);
  weft_buffer_free(pinned);
  /* Nothing was packed. */
  cr_assert_eq(weft_msg_new(&m), 0);
  {
    weft_worker_opts_t o2 = opts;
    o2.data_msg = m;
    cr_assert_eq(weft_worker_spawn(&w, loop, entry_data_msg, &o2),
                 WEFT_EDECODE);
  }
  weft_msg_free(m);
  /* The same message still spawns. */
  w = spawn_worker(loop, entry_data_msg, &opts);
  cr_assert(weft_buffer_detached(buf));
  cr_assert_eq(port_post_int(a, 1), 0);
  run_loop(loop);
  cr_assert_eq(wd.take_buf, 0);
  cr_assert_eq(wd.buf_size, 16);
  weft_worker_free(w);
  weft_buffer_free(buf);
  cr_assert_eq(weft_port_free(b), 0);
  weft_shared_release(sh);
  free_loop(loop);
}

/* What the worker does not take is freed with it (ASan: no leak), and the
 * untaken port closes (its peer sees 'close'). */
static bool dm_closed;

static void dm_on_close(weft_port_t* port) {
  dm_closed = true;
  cr_assert_eq(weft_port_free(port), 0);
}

Test(worker, data_msg_untaken_transfers_are_released_with_the_worker) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_port_t *a, *b;
  weft_worker_t* w;
  cr_assert_eq(weft_buffer_new(&buf, 64), 0);
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_close(a, dm_on_close), 0);
  cr_assert_eq(weft_port_start(a), 0);
  opts.data_msg = data_msg_of(buf, sh, b);
  w = spawn_worker(loop, entry_nop, &opts);
  run_loop(loop);
  cr_assert_eq(exit_code, 0);
  cr_assert(dm_closed);
  weft_worker_free(w);
  weft_buffer_free(buf);
  cr_assert_eq(weft_port_free(b), 0);
  weft_shared_release(sh);
  free_loop(loop);
}

/* --- hasRef and event-loop utilization ------------------------------------ */

static bool other_has_ref = true;

static void has_ref_other_thread(void* arg) {
  other_has_ref = weft_worker_has_ref(arg);
}

Test(worker, has_ref_follows_ref_unref_and_exit) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  weft_worker_t* w = spawn_worker(loop, entry_parked, &opts);
  uv_thread_t t;
  cr_assert_not(weft_worker_has_ref(NULL));
  cr_assert(weft_worker_has_ref(w));
  cr_assert_eq(uv_thread_create(&t, has_ref_other_thread, w), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_not(other_has_ref, "not the owner's thread: false");
  cr_assert_eq(weft_worker_unref(w), 0);
  cr_assert_not(weft_worker_has_ref(w));
  cr_assert_eq(weft_worker_ref(w), 0);
  cr_assert(weft_worker_has_ref(w));
  cr_assert_eq(weft_worker_terminate(w, NULL), 0);
  run_loop(loop);
  cr_assert(weft_worker_exited(w));
  cr_assert_not(weft_worker_has_ref(w), "an exited worker holds nothing");
  weft_worker_free(w);
  free_loop(loop);
}

/* A worker busy in its entry (a CPU loop) is active all the time, a
 * worker parked in its loop is idle: both read from the owner's loop.
 * Only a lower bound on the busy one and an upper bound on the idle one's
 * share are checked (shares, not speeds). */
static struct {
  weft_worker_t* busy;
  weft_worker_t* idle;
  weft_elu_t busy0, idle0;
  weft_elu_t busy1, idle1;
  int err0, err1;
} elu;

static void entry_busy_until_stopped(weft_loop_t* loop, void* arg) {
  volatile uint64_t x = 0;
  (void)loop;
  (void)arg;
  while (!weft_should_stop())
    x++;
}

static void elu_second(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  elu.err1 = weft_worker_utilization(elu.busy, &elu.busy0, &elu.busy1);
  elu.err1 |= weft_worker_utilization(elu.idle, &elu.idle0, &elu.idle1);
  cr_assert_eq(weft_worker_terminate(elu.busy, NULL), 0);
  cr_assert_eq(weft_worker_terminate(elu.idle, NULL), 0);
}

static void elu_first(weft_loop_t* loop, void* arg) {
  (void)arg;
  elu.err0 = weft_worker_utilization(elu.busy, NULL, &elu.busy0);
  elu.err0 |= weft_worker_utilization(elu.idle, NULL, &elu.idle0);
  cr_assert_eq(weft_set_timeout(loop, 300, elu_second, NULL, NULL), 0);
}

Test(worker, utilization_of_a_busy_and_an_idle_worker) {
  weft_loop_t* loop = new_loop();
  weft_elu_t after;
  cr_assert_eq(weft_worker_utilization(NULL, NULL, &after), WEFT_EINVAL);
  elu.busy = spawn_worker(loop, entry_busy_until_stopped, NULL);
  elu.idle = spawn_worker(loop, entry_parked, NULL);
  cr_assert_eq(weft_worker_utilization(elu.busy, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_set_timeout(loop, 100, elu_first, NULL, NULL), 0);
  run_loop(loop);
  cr_assert_eq(elu.err0, 0);
  cr_assert_eq(elu.err1, 0);
  /* Over the 300 ms between the samples. */
  cr_assert_gt(elu.busy1.utilization, 0.5, "busy: %f (active %f idle %f)",
               elu.busy1.utilization, elu.busy1.active, elu.busy1.idle);
  cr_assert_gt(elu.busy1.active, 0);
  cr_assert_lt(elu.idle1.utilization, 0.5, "idle: %f (active %f idle %f)",
               elu.idle1.utilization, elu.idle1.active, elu.idle1.idle);
  cr_assert_gt(elu.idle1.idle, 0);
  /* After the exit the last sample stays. */
  cr_assert(weft_worker_exited(elu.busy));
  cr_assert_eq(weft_worker_utilization(elu.busy, NULL, &after), 0);
  cr_assert_gt(after.active, elu.busy0.active);
  weft_worker_free(elu.busy);
  weft_worker_free(elu.idle);
  free_loop(loop);
}

/* A data message is charged to the worker's heap like a received one: one
 * past the limit ends the worker before its entry (error WEFT_EHEAPLIMIT,
 * exit 1, no online), and the host carries on. */
static atomic_bool big_entry_ran;

static void entry_note_ran(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  atomic_store(&big_entry_ran, true);
}

Test(worker, data_msg_over_the_heap_limit_ends_the_worker) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = logging_opts();
  static char blob[2 << 20];
  weft_msg_t* m = NULL;
  weft_worker_t* w;
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_bin(weft_msg_packer(m), sizeof(blob));
  msgpack_pack_bin_body(weft_msg_packer(m), blob, sizeof(blob));
  opts.data_msg = m;
  opts.max_heap_bytes = 1 << 20;
  w = spawn_worker(loop, entry_note_ran, &opts);
  run_loop(loop);
  cr_assert_str_eq(ev, "ex", "events: %s", ev);
  cr_assert_eq(error_err, WEFT_EHEAPLIMIT, "%s", weft_err_name(error_err));
  cr_assert_eq(exit_code, 1);
  cr_assert_not(atomic_load(&big_entry_ran));
  weft_worker_free(w);
  free_loop(loop);
}
