/* test_heap.c - Criterion suite for weft's allocator: the process heap
 * outside workers, per-worker accounting inside them, and the heap limit
 * (error event with WEFT_EHEAPLIMIT, exit code 1, host carries on). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft/weft.h>

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
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  opts.arg = arg;
  opts.max_heap_bytes = max_heap;
  opts.events.online = on_online;
  opts.events.error = on_error;
  opts.events.exit = on_exit_ev;
  events[0] = '\0';
  exit_code = -1;
  error_code = 0;
  cr_assert_eq(weft_worker_spawn(&w, loop, entry, &opts), 0);
  cr_assert_not_null(w);
  return w;
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
  weft_loop_t* loop;
  probe_t p = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, usage_entry, &p, 16 << 20);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  check_usage(&p, 16 << 20);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
}

/* Without a limit the worker's heap is still counted. */
Test(heap, worker_usage_counted_without_limit) {
  weft_loop_t* loop;
  probe_t p = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, usage_entry, &p, 0);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(exit_code, 0);
  check_usage(&p, 0);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
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
  weft_loop_t* loop;
  probe_t p = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, overflow_entry, &p, 1 << 20);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(p.steps, 1);
  cr_assert(p.overflow_null);
  cr_assert(!p.stop_after_overflow);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
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
  weft_loop_t* loop;
  probe_t p = {0};
  probe_t q = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, hog_entry, &p, 1 << 20);
  cr_assert_eq(weft_loop_run(loop), 0);
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
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(q.steps, 1);
  cr_assert_str_eq(events, "online exit");
  cr_assert_eq(exit_code, 0);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
}

/* A breach found by a later callback (not the entry) ends the worker too. */
static void hog_in_timer(weft_loop_t* loop, void* arg) {
  hog_entry(loop, arg);
}

static void timer_hog_entry(weft_loop_t* loop, void* arg) {
  weft_set_timeout(loop, 1, hog_in_timer, arg, NULL);
}

Test(heap, breach_inside_loop_callback_ends_worker) {
  weft_loop_t* loop;
  probe_t p = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, timer_hog_entry, &p, 1 << 20);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(p.steps, 1);
  cr_assert_leq(p.chunks, 16);
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
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
  weft_loop_t* loop;
  probe_t p = {0};
  weft_worker_t* w;
  cr_assert_eq(weft_loop_new(&loop), 0);
  w = spawn(loop, realloc_hog_entry, &p, 1 << 20);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(p.steps, 1);
  cr_assert_leq(p.chunks, 16);
  cr_assert(p.stop_after_null);
  cr_assert_str_eq(events, "online error exit");
  cr_assert_eq(error_code, WEFT_EHEAPLIMIT);
  cr_assert_eq(exit_code, 1);
  weft_worker_free(w);
  cr_assert_eq(weft_loop_free(loop), 0);
}
