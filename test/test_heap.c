/* test_heap.c - Criterion suite for weft's allocator: the process heap
 * outside workers, per-worker accounting inside them, and the heap limit
 * (error event with WEFT_EHEAPLIMIT, exit code 1, host carries on). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(heap, .timeout = 20);

/* ---- outside workers ----------------------------------------------------- */

Test(heap, process_heap_allocates_and_reports_nothing) {
  size_t used = 99, limit = 99;
  unsigned char* p = weft_malloc(1000);
  unsigned char* z;
  cr_assert_not_null(p);
  memset(p, 0x5a, 1000);
  p = weft_realloc(p, 100000);
  cr_assert_not_null(p);
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(p[i], 0x5a, "realloc lost byte %d", i);
  memset(p, 0x11, 100000);
  p = weft_realloc(p, 10);
  cr_assert_not_null(p);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(p[i], 0x11);
  z = weft_calloc(1000, 8);
  cr_assert_not_null(z);
  for (int i = 0; i < 8000; i++)
    cr_assert_eq(z[i], 0, "calloc byte %d not zero", i);
  cr_assert_eq(weft_heap_usage(&used, &limit), 0);
  cr_assert_eq(used, 0);
  cr_assert_eq(limit, 0);
  weft_free(p);
  weft_free(z);
  weft_free(NULL);
}

Test(heap, zero_sizes_and_null_realloc) {
  void* a = weft_malloc(0);
  void* b = weft_calloc(0, 16);
  void* c = weft_realloc(NULL, 32);
  cr_assert_not_null(a, "malloc(0) gives a unique pointer");
  cr_assert_not_null(b);
  cr_assert_not_null(c);
  memset(c, 1, 32);
  weft_free(a);
  weft_free(b);
  weft_free(c);
}

Test(heap, calloc_overflow_returns_null) {
  cr_assert_null(weft_calloc(SIZE_MAX, 2));
  cr_assert_null(weft_calloc(2, SIZE_MAX));
  cr_assert_null(weft_calloc(SIZE_MAX / 2 + 2, 2));
}

Test(heap, usage_arguments) {
  size_t used = 7, limit = 7;
  cr_assert_eq(weft_heap_usage(NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_heap_usage(&used, NULL), 0);
  cr_assert_eq(used, 0);
  cr_assert_eq(weft_heap_usage(NULL, &limit), 0);
  cr_assert_eq(limit, 0);
}

/* ---- inside a worker ----------------------------------------------------- */

/* What the worker saw; read by the test after the exit event (the owner
 * joins the worker's thread before it). */
typedef struct {
  int steps;
  size_t limit;
  size_t u0, u_malloc, u_free, u_calloc, u_grow, u_shrink, u_end;
  bool calloc_zeroed;
  bool realloc_kept;
  bool overflow_null;
  bool stop_after_overflow;
  int chunks;          /* 64 KiB chunks before NULL. */
  bool stop_after_null;
} probe_t;

static char events[256];
static int exit_code;
static int error_code;

static void logs(const char* s) {
  size_t n = strlen(events);
  snprintf(events + n, sizeof(events) - n, "%s%s", n ? " " : "", s);
}

static void on_online(weft_worker_t* w) {
  (void)w;
  logs("online");
}

static void on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  cr_assert_not_null(text);
  cr_assert_gt(strlen(text), 0, "error text is empty");
  error_code = err;
  logs("error");
}

static void on_exit_ev(weft_worker_t* w, int code) {
  (void)w;
  exit_code = code;
  logs("exit");
}

static weft_worker_t* spawn(weft_loop_t* loop,
                            weft_worker_entry_cb entry,
                            void* arg,
                            size_t max_heap) {
  weft_worker_opts_t opts = {0};
  opts.arg = arg;
  opts.max_heap_bytes = max_heap;
  opts.events.online = on_online;
  opts.events.error = on_error;
  opts.events.exit = on_exit_ev;
  events[0] = '\0';
  exit_code = -1;
  error_code = 0;
  return spawn_worker(loop, entry, &opts);
}

static void usage_entry(weft_loop_t* loop, void* arg) {
  probe_t* p = arg;
  unsigned char* a;
  unsigned char* c;
  (void)loop;
  weft_heap_usage(&p->u0, &p->limit);
  a = weft_malloc(100000);
  if (a == NULL)
    return;
  memset(a, 0x77, 100000);
  weft_heap_usage(&p->u_malloc, NULL);
  weft_free(a);
  weft_heap_usage(&p->u_free, NULL);

  c = weft_calloc(1000, 50);
  if (c == NULL)
    return;
  p->calloc_zeroed = true;
  for (int i = 0; i < 50000; i++)
    if (c[i] != 0)
      p->calloc_zeroed = false;
  weft_heap_usage(&p->u_calloc, NULL);
  c[0] = 1;
  c[49999] = 2;
  c = weft_realloc(c, 300000);
  if (c == NULL)
    return;
  p->realloc_kept = c[0] == 1 && c[49999] == 2;
  weft_heap_usage(&p->u_grow, NULL);
  c = weft_realloc(c, 1000);
  if (c == NULL)
    return;
  weft_heap_usage(&p->u_shrink, NULL);
  weft_free(c);
  weft_heap_usage(&p->u_end, NULL);
  p->steps = 1;
}

static void check_usage(const probe_t* p, size_t limit) {
  cr_assert_eq(p->steps, 1, "the worker did not finish its allocations");
  cr_assert_eq(p->limit, limit);
  cr_assert_geq(p->u_malloc, p->u0 + 100000, "usage %zu -> %zu", p->u0,
                p->u_malloc);
  cr_assert_eq(p->u_free, p->u0, "free did not give the bytes back");
  cr_assert(p->calloc_zeroed);
  cr_assert_geq(p->u_calloc, p->u0 + 50000);
  cr_assert(p->realloc_kept);
  cr_assert_geq(p->u_grow, p->u0 + 300000);
  cr_assert_lt(p->u_shrink, p->u_grow);
  cr_assert_eq(p->u_end, p->u0, "usage after everything was freed");
}

Test(heap, worker_usage_grows_and_shrinks) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, usage_entry, &p, 16 << 20);
  run_loop(loop);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  check_usage(&p, 16 << 20);
  weft_worker_free(w);
  free_loop(loop);
}

/* Without a limit the worker's heap is still counted. */
Test(heap, worker_usage_counted_without_limit) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, usage_entry, &p, 0);
  run_loop(loop);
  cr_assert_eq(exit_code, 0);
  check_usage(&p, 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* An impossible calloc is a NULL, not a heap-limit breach. */
static void overflow_entry(weft_loop_t* loop, void* arg) {
  probe_t* p = arg;
  (void)loop;
  p->overflow_null = weft_calloc(SIZE_MAX, 2) == NULL;
  p->stop_after_overflow = weft_should_stop();
  p->steps = 1;
}

Test(heap, worker_calloc_overflow_is_not_a_breach) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, overflow_entry, &p, 1 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  cr_assert(p.overflow_null);
  cr_assert(!p.stop_after_overflow);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

#define CHUNK (64 << 10)

static void hog_entry(weft_loop_t* loop, void* arg) {
  probe_t* p = arg;
  (void)loop;
  p->steps = 1;
  for (;;) {
    void* c = weft_malloc(CHUNK);
    if (c == NULL)
      break;
    memset(c, 0xee, CHUNK); /* Really use it. */
    p->chunks++;
    if (p->chunks > 1000)
      return; /* The limit did not work: stop before the machine does. */
  }
  p->stop_after_null = weft_should_stop();
}

static void ok_entry(weft_loop_t* loop, void* arg) {
  probe_t* p = arg;
  void* x = weft_malloc(4096);
  (void)loop;
  p->steps = x != NULL ? 1 : -1;
  weft_free(x);
}

Test(heap, worker_past_limit_gets_null_error_and_exit_1) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  probe_t q = {0};
  weft_worker_t* w;
  w = spawn(loop, hog_entry, &p, 1 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  cr_assert_leq(p.chunks, 16, "%d chunks of 64 KiB under a 1 MiB limit",
               p.chunks);
  cr_assert_gt(p.chunks, 0, "not even one chunk fitted");
  cr_assert(p.stop_after_null, "the breach did not ask the worker to stop");
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT, "error %d (%s)", error_code,
               weft_err_name(error_code));
  cr_assert_eq(exit_code, 1);
  cr_assert(weft_worker_exited(w));
  weft_worker_free(w);

  /* The host carries on: another worker runs normally. */
  w = spawn(loop, ok_entry, &q, 1 << 20);
  run_loop(loop);
  cr_assert_eq(q.steps, 1);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  free_loop(loop);
}

/* A breach found by a later callback (not the entry) ends the worker too. */
static void hog_in_timer(weft_loop_t* loop, void* arg) {
  hog_entry(loop, arg);
}

static void timer_hog_entry(weft_loop_t* loop, void* arg) {
  weft_set_timeout(loop, 1, hog_in_timer, arg, NULL);
}

Test(heap, breach_inside_loop_callback_ends_worker) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, timer_hog_entry, &p, 1 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  cr_assert_leq(p.chunks, 16);
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* Realloc past the limit fails the same way. */
static void realloc_hog_entry(weft_loop_t* loop, void* arg) {
  probe_t* p = arg;
  void* c = weft_malloc(CHUNK);
  (void)loop;
  p->steps = 1;
  while (c != NULL) {
    void* n = weft_realloc(c, (size_t)(p->chunks + 2) * CHUNK);
    if (n == NULL) {
      weft_free(c);
      break;
    }
    c = n;
    p->chunks++;
    if (p->chunks > 1000)
      return;
  }
  p->stop_after_null = weft_should_stop();
}

Test(heap, worker_realloc_past_limit_breaches) {
  weft_loop_t* loop = new_loop();
  probe_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, realloc_hog_entry, &p, 1 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  cr_assert_leq(p.chunks, 16);
  cr_assert(p.stop_after_null);
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* ---- what the limit covers besides weft_malloc (issue 5, item 14) -------- */

/* An array of `n` nils, pre-packed: decoding it costs n * 24 bytes. */
static char* nils(size_t n, size_t* len) {
  char* b = malloc(n + 5);
  cr_assert_not_null(b);
  b[0] = (char)0xdd;
  b[1] = (char)(n >> 24);
  b[2] = (char)(n >> 16);
  b[3] = (char)(n >> 8);
  b[4] = (char)n;
  memset(b + 5, 0xc0, n);
  *len = n + 5;
  return b;
}

typedef struct {
  int steps;
  int rc[4];
  size_t u0, u1, u2;
  int got;
} probe2_t;

/* A buffer past the limit fails before anything is allocated. Before the
 * fix weft_buffer_new() allocated and zeroed the bytes first: SIZE_MAX / 2
 * came back WEFT_ENOMEM (and 100 GiB got the process OOM-killed), so the
 * entry stops at the first wrong answer. */
static void buffer_hog_entry(weft_loop_t* loop, void* arg) {
  probe2_t* p = arg;
  weft_buffer_t* b = NULL;
  (void)loop;
  weft_heap_usage(&p->u0, NULL);
  p->rc[0] = weft_buffer_new(&b, SIZE_MAX / 2);
  if (p->rc[0] != WEFT_EHEAPLIMIT)
    return;
  p->rc[1] = weft_buffer_new(&b, (size_t)100 << 30);
  p->rc[2] = weft_buffer_new(&b, (size_t)1 << 30);
  p->rc[3] = weft_buffer_new(&b, ((size_t)8 << 20) + 1);
  weft_heap_usage(&p->u1, NULL);
  p->steps = 1;
}

Test(heap, buffer_past_the_limit_fails_before_allocating) {
  weft_loop_t* loop = new_loop();
  probe2_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, buffer_hog_entry, &p, 8 << 20);
  run_loop(loop);
  cr_assert_eq(p.rc[0], WEFT_EHEAPLIMIT, "SIZE_MAX / 2: %s",
               weft_err_name(p.rc[0]));
  cr_assert_eq(p.steps, 1);
  for (int i = 1; i < 4; i++)
    cr_assert_eq(p.rc[i], WEFT_EHEAPLIMIT, "call %d: %s", i,
                 weft_err_name(p.rc[i]));
  cr_assert_eq(p.u1, p.u0, "a refused buffer stayed charged");
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* A received message (weft_port_receive) is charged with what decoding it
 * allocated, until it is freed; past the limit receive fails before
 * decoding. Before the fix neither was charged. */
static void receive_entry(weft_loop_t* loop, void* arg) {
  probe2_t* p = arg;
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  size_t len;
  char* bytes = nils(100000, &len);
  if (weft_channel_new(loop, &a, &b) != 0)
    return;
  weft_heap_usage(&p->u0, NULL);
  p->rc[0] = weft_port_post(a, bytes, len);
  p->rc[1] = weft_port_receive(b, &m);
  weft_heap_usage(&p->u1, NULL);
  weft_msg_free(m);
  weft_heap_usage(&p->u2, NULL);
  p->rc[2] = weft_port_post(a, bytes, len);
  free(bytes);
  bytes = nils(1000000, &len); /* 24 MB decoded; 1 MB queued */
  p->rc[3] = weft_port_post(a, bytes, len);
  free(bytes);
  m = NULL;
  p->steps = 1;
  /* The first fits (2.4 MB), the second passes the limit. */
  if (weft_port_receive(b, &m) == 0) {
    weft_msg_t* n = NULL;
    p->got = weft_port_receive(b, &n);
    weft_msg_free(n);
  }
  weft_msg_free(m);
  weft_port_free(a);
  weft_port_free(b);
}

Test(heap, received_messages_are_charged_with_their_decoded_size) {
  weft_loop_t* loop = new_loop();
  probe2_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, receive_entry, &p, 8 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(p.rc[i], 0, "step %d: %s", i, weft_err_name(p.rc[i]));
  cr_assert_geq(p.u1, p.u0 + 100000 * sizeof(msgpack_object),
                "receive charged %zu -> %zu", p.u0, p.u1);
  cr_assert_eq(p.u2, p.u0, "free did not give the charge back");
  cr_assert_eq(p.got, WEFT_EHEAPLIMIT, "%s", weft_err_name(p.got));
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* Delivered messages: a kept one is charged with its decode zone; one
 * whose decoding would pass the limit ends the worker before msgpack
 * allocates (it decoded uncharged before the fix, the handler ran). */
static probe2_t* deliver_probe;

static void free_kept(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_msg_free(arg);
  weft_heap_usage(&deliver_probe->u2, NULL);
}

static void on_parent_message(weft_port_t* port, weft_msg_t* m) {
  probe2_t* p = deliver_probe;
  p->got++;
  if (p->got == 1) {
    p->rc[0] = weft_msg_keep(m);
    weft_heap_usage(&p->u1, NULL);
    weft_next_tick(weft_loop_current(), free_kept, m);
  } else {
    weft_port_close(port); /* Only without the fix: the worker ends. */
  }
}

static void deliver_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  deliver_probe = arg;
  weft_heap_usage(&deliver_probe->u0, NULL);
  weft_port_on_message(weft_parent_port(), on_parent_message);
}

static void post_nils(weft_worker_t* w) {
  size_t len;
  char* bytes = nils(100000, &len);
  cr_assert_eq(weft_worker_post(w, bytes, len), 0);
  free(bytes);
  bytes = nils(1000000, &len);
  cr_assert_eq(weft_worker_post(w, bytes, len), 0);
  free(bytes);
}

Test(heap, delivered_messages_are_charged_and_bounded_by_the_limit) {
  weft_loop_t* loop = new_loop();
  probe2_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, deliver_entry, &p, 8 << 20);
  post_nils(w);
  run_loop(loop);
  cr_assert_eq(p.got, 1, "%d messages reached the handler", p.got);
  cr_assert_eq(p.rc[0], 0);
  cr_assert_geq(p.u1, p.u0 + 100000 * sizeof(msgpack_object),
                "kept message charged %zu -> %zu", p.u0, p.u1);
  cr_assert_leq(p.u2 + 100000 * sizeof(msgpack_object), p.u1,
                "free did not give the charge back");
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* The backlog of a limited worker's port counts against its limit: posts
 * past it are accepted and dropped, and the owner's next receive answers
 * WEFT_EHEAPLIMIT and ends the worker (before the fix all of it queued
 * uncharged and receive returned the first message). The concurrent case
 * is scenario_heap. */
static void backlog_entry(weft_loop_t* loop, void* arg) {
  probe2_t* p = arg;
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  size_t len = (size_t)512 << 10;
  char* bytes = calloc(1, len);
  if (bytes == NULL || weft_channel_new(loop, &a, &b) != 0)
    return;
  bytes[0] = (char)0xc6; /* bin32 */
  bytes[1] = (char)((len - 5) >> 24);
  bytes[2] = (char)((len - 5) >> 16);
  bytes[3] = (char)((len - 5) >> 8);
  bytes[4] = (char)(len - 5);
  for (int i = 0; i < 4; i++)
    p->rc[i] = weft_port_post(a, bytes, len);
  free(bytes);
  p->got = weft_port_receive(b, &m);
  weft_msg_free(m);
  p->steps = 1;
  weft_port_free(a);
  weft_port_free(b);
}

Test(heap, a_backlog_past_the_limit_ends_the_worker) {
  weft_loop_t* loop = new_loop();
  probe2_t p = {0};
  weft_worker_t* w;
  w = spawn(loop, backlog_entry, &p, 1 << 20);
  run_loop(loop);
  cr_assert_eq(p.steps, 1);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(p.rc[i], 0, "post %d: %s", i, weft_err_name(p.rc[i]));
  cr_assert_eq(p.got, WEFT_EHEAPLIMIT, "%s", weft_err_name(p.got));
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}
