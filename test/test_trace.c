/* test_trace.c - the timeline trace (include/weft/trace.h, docs/trace.md):
 * a run with workers, messages, timers, immediates, next-ticks, libuv
 * threadpool work and pool tasks writes a file that parses as JSON, has one
 * named track per thread that ran, closed and nested spans, and arrows whose
 * two ends pair up (test/trace_check.h); the API's error codes; WEFT_TRACE;
 * a stop and a start inside a callback; streams, whose deliveries share
 * clock reads while they are short. */
#include <criterion/criterion.h>
#include <stdint.h>

#include <weft/weft.h>

#include "support.h"
#include "trace.h" /* WEFT__TRACE_STREAM_EVERY */
#include "trace_check.h"

TestSuite(trace, .timeout = 60);

#define WORKERS 2
#define MSGS 20

static void trace_path(char* buf, size_t cap, const char* tag) {
  const char* dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/weft_test_trace_%s_%d.json",
           dir != NULL && dir[0] != '\0' ? dir : "/tmp", tag, (int)getpid());
}

static void load_and_check(const char* path, tc_trace_t* t) {
  size_t nflows = 0;
  cr_assert(tc_load(path, t), "%s: %s", path, t->err);
  cr_assert(tc_check(t, &nflows), "%s: %s", path, t->err);
}

/* --- worker side ---------------------------------------------------------- */

static void w_noop(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

static void w_work(void* arg) {
  (void)arg;
  sleep_ms(1);
}

static void w_after(weft_loop_t* loop, void* arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
}

static void w_on_message(weft_port_t* port, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  if (v < 0) {
    weft_port_close(port); /* The worker ends when its loop is empty. */
    return;
  }
  weft_next_tick(weft_loop_current(), w_noop, NULL);
  cr_assert_eq(port_post_int(port, v), 0);
}

static void w_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  cr_assert_eq(weft_port_on_message(weft_parent_port(), w_on_message), 0);
  cr_assert_eq(weft_set_timeout(loop, 1, w_noop, NULL, NULL), 0);
  cr_assert_eq(weft_set_immediate(loop, w_noop, NULL, NULL), 0);
  cr_assert_eq(weft_queue_work(loop, w_work, w_after, NULL), 0);
}

/* --- main side ------------------------------------------------------------ */

static weft_worker_t* workers[WORKERS];
static int replies[WORKERS];
static int pool_done;

static void post_int(weft_worker_t* w, int64_t v) {
  packed_t p = packed_int(v);
  cr_assert_eq(weft_worker_post(w, p.data, p.len), 0);
}

static void m_on_message(weft_worker_t* w, weft_msg_t* msg) {
  int i = w == workers[0] ? 0 : 1;
  (void)msg;
  if (++replies[i] == MSGS)
    post_int(w, -1);
}

static int task_twice(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  (void)ctx;
  return msgpack_pack_int64(weft_msg_packer(res), msg_int(arg) * 2) == 0
             ? 0
             : WEFT_ENOMEM;
}

static void pool_cb(void* ctx, int status, weft_msg_t* result) {
  (void)ctx;
  (void)result;
  cr_assert_eq(status, 0);
  pool_done++;
}

Test(trace, a_run_with_workers_writes_a_well_formed_trace) {
  char path[256];
  weft_loop_t* loop;
  weft_pool_t* pool = NULL;
  weft_pool_opts_t popts = {0};
  tc_trace_t t;
  int i, k;
  trace_path(path, sizeof(path), "run");
  cr_assert_eq(weft_trace_start(path), 0);
  cr_assert(weft_trace_running());
  loop = new_loop();
  popts.name = "tpool";
  popts.max_threads = 1;
  cr_assert_eq(weft_pool_new(&pool, &popts), 0);
  cr_assert_eq(weft_pool_register(pool, "twice", task_twice, NULL), 0);
  for (i = 0; i < WORKERS; i++) {
    weft_worker_opts_t opts = {0};
    opts.name = i == 0 ? "trace-w0" : "trace-w1";
    opts.events.message = m_on_message;
    workers[i] = spawn_worker(loop, w_entry, &opts);
    for (k = 0; k < MSGS; k++)
      post_int(workers[i], k);
  }
  for (k = 0; k < 3; k++) {
    packed_t p = packed_int(k);
    cr_assert_eq(
        weft_pool_submit(pool, "twice", p.data, p.len, pool_cb, NULL, NULL), 0);
  }
  cr_assert_eq(weft_set_timeout(loop, 2, w_noop, NULL, NULL), 0);
  cr_assert_eq(weft_set_immediate(loop, w_noop, NULL, NULL), 0);
  run_loop(loop);
  cr_assert_eq(replies[0], MSGS);
  cr_assert_eq(replies[1], MSGS);
  cr_assert_eq(pool_done, 3);
  for (i = 0; i < WORKERS; i++)
    weft_worker_free(workers[i]);
  free_loop(loop);
  cr_assert_eq(weft_pool_close(pool), 0);
  cr_assert_eq(weft_trace_stop(), 0);
  cr_assert(!weft_trace_running());

  load_and_check(path, &t);
  /* One track per thread that ran. */
  cr_assert_eq(tc_tracks_named(&t, "main", false), 1);
  cr_assert_eq(tc_tracks_named(&t, "trace-w0", false), 1);
  cr_assert_eq(tc_tracks_named(&t, "trace-w1", false), 1);
  cr_assert_geq(tc_tracks_named(&t, "uv threadpool", true), 1);
  cr_assert_geq(tc_tracks_named(&t, "tpool", true), 1);
  /* Spans for the callbacks each thread ran. */
  cr_assert_geq(tc_count(&t, 'B', "message", "main"), WORKERS * MSGS);
  cr_assert_geq(tc_count(&t, 'B', "message", "trace-w0"), MSGS);
  cr_assert_geq(tc_count(&t, 'B', "message", "trace-w1"), MSGS);
  cr_assert_geq(tc_count(&t, 'B', "ticks", "trace-w0"), 1);
  cr_assert_geq(tc_count(&t, 'B', "timeout", "trace-w1"), 1);
  cr_assert_geq(tc_count(&t, 'B', "timeout", "main"), 1);
  cr_assert_geq(tc_count(&t, 'B', "immediate", "trace-w0"), 1);
  cr_assert_geq(tc_count(&t, 'B', "immediate", "main"), 1);
  cr_assert_geq(tc_count(&t, 'B', "work", "uv threadpool"), WORKERS);
  cr_assert_geq(tc_count(&t, 'B', "after work", "trace-w"), WORKERS);
  cr_assert_geq(tc_count(&t, 'B', "pool task", "tpool"), 3);
  cr_assert_geq(tc_count(&t, 'B', "worker online", "main"), WORKERS);
  cr_assert_geq(tc_count(&t, 'B', "worker exit", "main"), WORKERS);
  /* Callbacks the loop runs are never inside one another. */
  cr_assert_eq(tc_nested(&t, "message"), 0);
  cr_assert_eq(tc_nested(&t, "immediate"), 0);
  cr_assert_eq(tc_nested(&t, "timeout"), 0);
  cr_assert_eq(tc_nested(&t, "worker online"), 0);
  /* Markers. */
  cr_assert_eq(tc_count(&t, 'i', "worker spawn", "main"), WORKERS);
  cr_assert_eq(tc_count(&t, 'i', "worker online", "trace-w0"), 1);
  cr_assert_eq(tc_count(&t, 'i', "worker exit", "trace-w1"), 1);
  /* Arrows: each request and each answer (tc_check paired them). */
  cr_assert_geq(tc_count(&t, 's', NULL, "main"), WORKERS * MSGS);
  cr_assert_geq(tc_count(&t, 'f', NULL, "main"), WORKERS * MSGS);
  cr_assert_geq(tc_count(&t, 's', NULL, "trace-w0"), MSGS);
  /* Counters. */
  cr_assert_geq(tc_count(&t, 'C', "queued messages", NULL), 1);
  cr_assert_geq(tc_count(&t, 'C', "pool queue", NULL), 1);
  tc_free(&t);
  remove(path);
}

Test(trace, start_and_stop_answer_their_error_codes) {
  char path[256];
  tc_trace_t t;
  trace_path(path, sizeof(path), "api");
  cr_assert_eq(weft_trace_start(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_trace_start(""), WEFT_EINVAL);
  cr_assert_eq(weft_trace_stop(), WEFT_ENOTSTARTED);
  cr_assert_eq(weft_trace_start("/nonexistent-weft-dir/t.json"), UV_ENOENT);
  cr_assert(!weft_trace_running());
  cr_assert_eq(weft_trace_start(path), 0);
  cr_assert_eq(weft_trace_start(path), WEFT_EBUSY);
  cr_assert(weft_trace_running());
  cr_assert_eq(weft_trace_stop(), 0);
  cr_assert(!weft_trace_running());
  cr_assert_eq(weft_trace_stop(), WEFT_ENOTSTARTED);
  /* An empty trace is still a valid file. */
  load_and_check(path, &t);
  tc_free(&t);
  remove(path);
}

Test(trace, weft_trace_in_the_environment_traces_from_the_first_loop) {
  char path[256];
  weft_loop_t* loop;
  tc_trace_t t;
  trace_path(path, sizeof(path), "env");
  cr_assert_eq(setenv("WEFT_TRACE", path, 1), 0);
  cr_assert(!weft_trace_running());
  loop = new_loop();
  cr_assert(weft_trace_running());
  cr_assert_eq(weft_set_timeout(loop, 1, w_noop, NULL, NULL), 0);
  run_and_free(loop);
  cr_assert_eq(weft_trace_stop(), 0);
  /* Read once: a later loop starts nothing. */
  loop = new_loop();
  cr_assert(!weft_trace_running());
  free_loop(loop);
  unsetenv("WEFT_TRACE");
  load_and_check(path, &t);
  cr_assert_eq(tc_tracks_named(&t, "main", false), 1);
  cr_assert_eq(tc_count(&t, 'B', "timeout", "main"), 1);
  tc_free(&t);
  remove(path);
}

static char second_path[256];
static int imm_ran;

static void imm_cb(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  imm_ran++;
}

/* Inside a timer's span: the first trace ends (its open spans closed at
 * the stop), the second begins (the timer's end, whose begin it did not
 * see, is left out). */
static void swap_traces(weft_loop_t* loop, void* arg) {
  (void)arg;
  cr_assert_eq(weft_trace_stop(), 0);
  cr_assert_eq(weft_trace_start(second_path), 0);
  cr_assert_eq(weft_set_immediate(loop, imm_cb, NULL, NULL), 0);
}

Test(trace, a_stop_and_a_start_inside_a_callback_leave_both_files_whole) {
  char path[256];
  weft_loop_t* loop;
  tc_trace_t t;
  trace_path(path, sizeof(path), "first");
  trace_path(second_path, sizeof(second_path), "second");
  cr_assert_eq(weft_trace_start(path), 0);
  loop = new_loop();
  cr_assert_eq(weft_set_timeout(loop, 1, swap_traces, NULL, NULL), 0);
  run_and_free(loop);
  cr_assert_eq(imm_ran, 1);
  cr_assert_eq(weft_trace_stop(), 0);
  load_and_check(path, &t);
  cr_assert_eq(tc_count(&t, 'B', "timeout", "main"), 1);
  cr_assert_eq(tc_count(&t, 'E', NULL, "main"), 1);
  tc_free(&t);
  load_and_check(second_path, &t);
  cr_assert_eq(tc_count(&t, 'B', "immediate", "main"), 1);
  cr_assert_eq(tc_count(&t, 'B', "timeout", "main"), 0);
  cr_assert_eq(tc_count(&t, 'E', NULL, "main"), 1);
  tc_free(&t);
  remove(path);
  remove(second_path);
}

/* A thread that ran a worker while one trace ran runs the next worker (the
 * thread cache) in the next trace: the new worker gets a track under its
 * own name. */
static void alpha_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  cr_assert_eq(weft_set_timeout(loop, 20, w_noop, NULL, NULL), 0);
}

static void alpha_online(weft_worker_t* w) {
  (void)w;
  cr_assert_eq(weft_trace_stop(), 0); /* While alpha still runs. */
}

static void beta_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  cr_assert_eq(port_post_int(weft_parent_port(), 7), 0);
  weft_port_close(weft_parent_port());
}

Test(trace, a_cached_thread_shows_its_next_worker_under_that_name) {
  char p1[256], p2[256];
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  tc_trace_t t;
  trace_path(p1, sizeof(p1), "alpha");
  trace_path(p2, sizeof(p2), "beta");
  loop = new_loop();
  cr_assert_eq(weft_trace_start(p1), 0);
  opts.name = "alpha";
  opts.events.online = alpha_online;
  w = spawn_worker(loop, alpha_entry, &opts);
  run_loop(loop);
  weft_worker_free(w);
  cr_assert_eq(weft_trace_start(p2), 0);
  opts.name = "beta";
  opts.events.online = NULL;
  w = spawn_worker(loop, beta_entry, &opts);
  run_loop(loop);
  weft_worker_free(w);
  free_loop(loop);
  cr_assert_eq(weft_trace_stop(), 0);
  load_and_check(p2, &t);
  /* (alpha's thread may still record its own exit into this trace: its
   * exit message reaches main before the thread's last event.) */
  cr_assert_eq(tc_tracks_named(&t, "beta", false), 1);
  cr_assert_eq(tc_count(&t, 'i', "worker online", "beta"), 1);
  cr_assert_eq(tc_count(&t, 'i', "worker online", "alpha"), 0);
  tc_free(&t);
  load_and_check(p1, &t);
  cr_assert_eq(tc_tracks_named(&t, "alpha", false), 1);
  tc_free(&t);
  remove(p1);
  remove(p2);
}

/* --- a stream: arrows start in the span that posted --------------------- */

#define BURST 64

static int echoes;

static void echo_on_message(weft_port_t* port, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  if (v < 0) {
    weft_port_close(port);
    return;
  }
  cr_assert_eq(port_post_int(port, v), 0); /* Nothing else is recorded. */
}

static void echo_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  cr_assert_eq(weft_port_on_message(weft_parent_port(), echo_on_message), 0);
}

static void echo_back(weft_worker_t* w, weft_msg_t* msg) {
  (void)msg;
  if (++echoes == BURST)
    post_int(w, -1);
}

/* The track named `name`: its tid, or -1. */
static long track_of(const tc_trace_t* t, const char* name) {
  size_t i;
  for (i = 0; i < t->n; i++) {
    if (t->ev[i].ph == 'M' && strcmp(t->ev[i].name, "thread_name") == 0 &&
        strcmp(t->ev[i].arg_name, name) == 0)
      return t->ev[i].tid;
  }
  return -1;
}

/* The "message" spans on track `tid`, in order, into `out` (room for
 * t->n); their number. Message spans do not nest: each ends at the
 * track's next end. */
static size_t message_spans(const tc_trace_t* t, long tid, tc_span_t* out) {
  size_t i, j, ns = 0;
  for (i = 0; i < t->n; i++) {
    const tc_event_t* b = &t->ev[i];
    if (b->tid != tid || b->ph != 'B' || strcmp(b->name, "message") != 0)
      continue;
    for (j = i + 1; j < t->n; j++) {
      if (t->ev[j].tid == tid && t->ev[j].ph == 'E')
        break;
    }
    cr_assert_lt(j, t->n, "a message span without an end");
    out[ns].tid = tid;
    out[ns].b = b->ts;
    out[ns].e = t->ev[j].ts;
    ns++;
  }
  return ns;
}

/* Deliveries in a stream share clock reads (lib/trace.c, tbuf_t.run); a
 * post inside one must still start its arrow inside that delivery's span,
 * not in one before it: each echo's span holds exactly one arrow start. */
Test(trace, each_echo_of_a_stream_starts_its_arrow_in_its_own_span) {
  char path[256];
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  tc_trace_t t;
  tc_span_t* spans;
  long tid;
  int k, one = 0, more = 0;
  size_t i, j, ns;
  trace_path(path, sizeof(path), "stream");
  cr_assert_eq(weft_trace_start(path), 0);
  loop = new_loop();
  opts.name = "echo";
  opts.events.message = echo_back;
  w = spawn_worker(loop, echo_entry, &opts);
  for (k = 0; k < BURST; k++) /* Queued before it runs: a stream. */
    post_int(w, k);
  run_loop(loop);
  cr_assert_eq(echoes, BURST);
  weft_worker_free(w);
  free_loop(loop);
  cr_assert_eq(weft_trace_stop(), 0);
  load_and_check(path, &t);
  tid = track_of(&t, "echo");
  cr_assert_neq(tid, -1);
  spans = calloc(t.n + 1, sizeof(*spans));
  cr_assert_not_null(spans);
  ns = message_spans(&t, tid, spans);
  for (i = 0; i < ns; i++) {
    int starts = 0;
    for (j = 0; j < t.n; j++) {
      const tc_event_t* s = &t.ev[j];
      if (s->ph == 's' && s->tid == tid && s->ts >= spans[i].b &&
          s->ts <= spans[i].e)
        starts++;
    }
    if (starts == 1)
      one++;
    else if (starts > 1)
      more++;
  }
  cr_assert_eq(more, 0, "%d spans hold more than one arrow start", more);
  /* And the close's span: its control message has an arrow too. */
  cr_assert_geq(one, BURST, "%d spans hold one arrow start", one);
  free(spans);
  tc_free(&t);
  if (getenv("KEEP_TRACE") == NULL)
    remove(path);
}

/* --- a stream that reads the clock at every 16th delivery ---------------- */

#define STREAM 2000
#define SLOW_STREAM 160
#define SLOW_US 200

static int sunk;
static int sink_n; /* Messages the sink waits for before it answers. */
static bool sink_slow; /* Even messages busy the sink for SLOW_US. */

static void sink_on_message(weft_port_t* port, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  if (sink_slow && v % 2 == 0) {
    uint64_t end = now_ns() + SLOW_US * 1000u;
    while (now_ns() < end) {
    }
  }
  if (++sunk == sink_n) {
    cr_assert_eq(port_post_int(port, sunk), 0);
    weft_port_close(port);
  }
}

static void sink_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  cr_assert_eq(weft_port_on_message(weft_parent_port(), sink_on_message), 0);
}

static void sink_done(weft_worker_t* w, weft_msg_t* msg) {
  (void)w;
  cr_assert_eq(msg_int(msg), sink_n);
}

/* Posts `n` integers to a worker named "sink" before its loop runs (a
 * stream), traced; loads the file, checked. `spans`: the sink's "message"
 * spans, in order (the caller frees them). */
static size_t run_sink(const char* tag, int n, bool slow, tc_trace_t* t,
                       tc_span_t** spans) {
  char path[256];
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  long tid;
  int k;
  sunk = 0;
  sink_n = n;
  sink_slow = slow;
  trace_path(path, sizeof(path), tag);
  cr_assert_eq(weft_trace_start(path), 0);
  loop = new_loop();
  opts.name = "sink";
  opts.events.message = sink_done;
  w = spawn_worker(loop, sink_entry, &opts);
  for (k = 0; k < n; k++)
    post_int(w, k);
  run_loop(loop);
  cr_assert_eq(sunk, n);
  weft_worker_free(w);
  free_loop(loop);
  cr_assert_eq(weft_trace_stop(), 0);
  load_and_check(path, t);
  if (getenv("KEEP_TRACE") == NULL)
    remove(path);
  tid = track_of(t, "sink");
  cr_assert_neq(tid, -1);
  *spans = calloc(t->n + 1, sizeof(**spans));
  cr_assert_not_null(*spans);
  return message_spans(t, tid, *spans);
}

/* Deliveries in a stream share clock reads (lib/trace.c: flush_window()):
 * still one span per message, one after the other, each with its arrow. */
Test(trace, a_stream_shows_every_message_in_order_with_its_arrow) {
  tc_trace_t t;
  tc_span_t* spans;
  size_t i, ns = run_sink("sink", STREAM, false, &t, &spans);
  long tid = spans[0].tid;
  int arrows = 0;
  cr_assert_eq(ns, STREAM, "%zu message spans for %d messages", ns, STREAM);
  for (i = 0; i < ns; i++) {
    cr_assert_gt(spans[i].e, spans[i].b, "span %zu is empty", i);
    if (i > 0)
      cr_assert_geq(spans[i].b, spans[i - 1].e, "span %zu overlaps", i);
  }
  for (i = 0; i < t.n; i++) {
    if (t.ev[i].ph == 'f' && t.ev[i].tid == tid)
      arrows++;
  }
  cr_assert_geq(arrows, STREAM, "%d arrows end on the sink", arrows);
  free(spans);
  tc_free(&t);
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/* A stream whose every other delivery is slow reads the clock at every
 * delivery (once it has seen a slow one): each shows its own length, not
 * a share of its neighbours'. */
Test(trace, slow_deliveries_in_a_stream_show_their_own_length) {
  tc_trace_t t;
  tc_span_t* spans;
  double fast[SLOW_STREAM];
  int nfast = 0;
  size_t i, ns = run_sink("slow", SLOW_STREAM, true, &t, &spans);
  cr_assert_eq(ns, SLOW_STREAM);
  /* The first window may be spread (no slow one seen before it). */
  for (i = WEFT__TRACE_STREAM_EVERY; i < ns; i++) {
    double len = spans[i].e - spans[i].b;
    if (i % 2 == 0)
      cr_assert_geq(len, SLOW_US * 0.9, "slow message %zu: a span of %.1f us",
                    i, len);
    else
      fast[nfast++] = len;
  }
  qsort(fast, (size_t)nfast, sizeof(fast[0]), cmp_double);
  cr_assert_lt(fast[nfast / 2], SLOW_US / 4.0,
               "the fast messages' median span is %.1f us", fast[nfast / 2]);
  free(spans);
  tc_free(&t);
}
