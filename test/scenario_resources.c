/* scenario_resources.c - workers give back what they take: after 10,000
 * sequential spawns and after 64 concurrent ones, the process has the same
 * threads (/proc/self/task), file descriptors (/proc/self/fd) and, within a
 * stated slack, memory (RSS from /proc/self/statm) as before.
 *
 * The thread cache (lib/worker_thread.c): a thread that ended a worker
 * waits up to 1 s (IDLE_MS) for the next spawn, and at most 8 (MAX_IDLE)
 * wait at once. So right after a phase the check allows exactly that: at
 * most 8 threads more than the baseline, and no descriptor more (an idle
 * thread holds no loop). Then it waits for the idle threads to expire
 * (polling every 10 ms, giving up after 30 s so that a leak fails instead
 * of hanging) and requires the exact baseline.
 *
 * Memory: RSS after a phase may exceed the baseline by RSS_SLACK (mimalloc
 * keeps freed segments for reuse; the baseline is taken after a warm-up of
 * 200 spawns). Not checked under sanitizers, whose quarantine and shadow
 * memory grow by design; LeakSanitizer checks leaks in the ASan build.
 *
 * Sequential spawns: argv[1] or WEFT_RESOURCE_SPAWNS (default 10,000, in
 * every build). Returns 0 on success; prints the reason and returns 1
 * otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

#define CONCURRENT 64
#define CONCURRENT_ROUNDS 4
#define WARMUP_SPAWNS 200
/* lib/worker_thread.c: MAX_IDLE threads wait at most IDLE_MS. */
#define MAX_IDLE 8
#define EXPIRE_WAIT_MS 30000
#define RSS_SLACK ((long long)16 << 20)

typedef struct {
  int threads;
  int fds;
  long long rss;
} usage_t;

static usage_t usage(void) {
  usage_t u;
  u.rss = rss_bytes();
  CHECK(u.rss >= 0, "read /proc/self/statm");
  u.threads = count_dir("/proc/self/task");
  CHECK(u.threads >= 0, "opendir /proc/self/task");
  /* opendir's own descriptor is counted too: the same in every sample. */
  u.fds = count_dir("/proc/self/fd");
  CHECK(u.fds >= 0, "opendir /proc/self/fd");
  return u;
}

/* Threads named by weft: "weft-worker" (a worker's default name) and
 * "weft-idle" (a cached thread). */
static int count_weft_threads(void) {
  int n = count_threads_named("weft-");
  CHECK(n >= 0, "opendir /proc/self/task");
  return n;
}

/* --- Workers ------------------------------------------------------------- */

static int exits, bad_exits, onlines;

static void empty_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

static void on_bye(weft_port_t* port, weft_msg_t* msg) {
  (void)msg;
  weft_port_close(port); /* Nothing keeps the loop alive: the worker ends. */
}

static void waiting_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), on_bye);
}

static void on_exit_cb(weft_worker_t* w, int code) {
  (void)w;
  exits++;
  if (code != 0)
    bad_exits++;
}

static weft_worker_t* ws[CONCURRENT];
static usage_t usage_during;

/* All CONCURRENT workers run at once (each waits for its message): sample
 * the usage, then let them go. */
static void on_online(weft_worker_t* w) {
  (void)w;
  if (++onlines < CONCURRENT)
    return;
  usage_during = usage();
  for (int i = 0; i < CONCURRENT; i++)
    CHECK(weft_worker_post(ws[i], "\xc0", 1) == 0, "post bye %d", i);
}

static void on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  fprintf(stderr, "scenario_resources: worker error %s: %s\n",
          weft_err_name(err), text);
  bad_exits++;
}

static void spawn_sequential(weft_loop_t* loop, long n) {
  weft_worker_opts_t opts;
  memset(&opts, 0, sizeof(opts));
  opts.events.exit = on_exit_cb;
  opts.events.error = on_error;
  for (long i = 0; i < n; i++) {
    weft_worker_t* w = NULL;
    int err = weft_worker_spawn(&w, loop, empty_entry, &opts);
    CHECK(err == 0, "spawn %ld: %s", i, weft_err_name(err));
    err = weft_loop_run(loop);
    CHECK(err == 0, "weft_loop_run: %s", weft_err_name(err));
    CHECK(weft_worker_exited(w), "worker %ld has not exited", i);
    weft_worker_free(w);
  }
}

static void spawn_concurrent(weft_loop_t* loop, const usage_t* base) {
  weft_worker_opts_t opts;
  memset(&opts, 0, sizeof(opts));
  opts.events.exit = on_exit_cb;
  opts.events.error = on_error;
  opts.events.online = on_online;
  onlines = 0;
  for (int i = 0; i < CONCURRENT; i++) {
    int err = weft_worker_spawn(&ws[i], loop, waiting_entry, &opts);
    CHECK(err == 0, "concurrent spawn %d: %s", i, weft_err_name(err));
  }
  run_loop(loop);
  CHECK(onlines == CONCURRENT, "%d of %d online", onlines, CONCURRENT);
  CHECK(usage_during.threads >= base->threads + CONCURRENT,
        "%d threads with %d workers running (baseline %d)",
        usage_during.threads, CONCURRENT, base->threads);
  for (int i = 0; i < CONCURRENT; i++) {
    CHECK(weft_worker_exited(ws[i]), "worker %d has not exited", i);
    weft_worker_free(ws[i]);
  }
}

/* After a phase: the threads that the cache does not keep end at once
 * (they are detached: the exit event can run just before they are gone),
 * the cached ones after IDLE_MS. Wait for both: at most MAX_IDLE threads
 * more than the baseline first, then exactly the baseline, and exactly the
 * baseline's descriptors. */
static usage_t settle(const char* phase, const usage_t* base) {
  usage_t now = usage();
  int waited = 0, cached_at = -1;
  while (now.threads != base->threads || now.fds != base->fds) {
    if (cached_at < 0 && now.threads <= base->threads + MAX_IDLE)
      cached_at = waited;
    CHECK(waited < EXPIRE_WAIT_MS,
          "%s: %d threads and %d descriptors %d ms after, baseline %d and %d",
          phase, now.threads, now.fds, waited, base->threads, base->fds);
    sleep_ms(10);
    waited += 10;
    now = usage();
  }
  printf("scenario_resources: %s: threads %d, descriptors %d (= baseline); "
         "at most %d idle threads left after %d ms, none after %d ms; "
         "RSS %.1f MiB (baseline %.1f, slack %lld MiB%s)\n",
         phase, now.threads, now.fds, MAX_IDLE, cached_at < 0 ? 0 : cached_at,
         waited, now.rss / 1048576.0, base->rss / 1048576.0, RSS_SLACK >> 20,
         UNDER_SAN ? ", not checked under sanitizers" : "");
  if (!UNDER_SAN)
    CHECK(now.rss <= base->rss + RSS_SLACK,
          "%s: RSS %lld bytes, baseline %lld + slack %lld", phase, now.rss,
          base->rss, RSS_SLACK);
  return now;
}

int main(int argc, char** argv) {
  const char* s = argc > 1 ? argv[1] : getenv("WEFT_RESOURCE_SPAWNS");
  long n = 10000;
  weft_loop_t* loop = NULL;
  usage_t base, zero;
  if (s != NULL && *s != '\0') {
    char* end;
    n = strtol(s, &end, 10);
    CHECK(*end == '\0' && n > 0, "bad spawn count '%s'", s);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  zero = usage();
  loop = new_loop();
  /* Warm up (first-use allocations of libuv, mimalloc, weft), let the
   * thread cache empty, then take the baseline. */
  spawn_sequential(loop, WARMUP_SPAWNS);
  spawn_concurrent(loop, &zero);
  /* The baseline: no weft thread left. (Not the thread count at start: a
   * sanitizer runtime starts a helper thread of its own on first use.) */
  for (int waited = 0; count_weft_threads() != 0; waited += 10) {
    CHECK(waited < EXPIRE_WAIT_MS, "warm-up: %d weft threads left",
          count_weft_threads());
    sleep_ms(10);
  }
  base = usage();
  if (!UNDER_SAN)
    CHECK(base.threads == zero.threads, "baseline: %d threads, at start %d",
          base.threads, zero.threads);

  spawn_sequential(loop, n);
  CHECK(exits == WARMUP_SPAWNS + CONCURRENT + n && bad_exits == 0,
        "%d exits (%d bad) after %ld sequential spawns", exits, bad_exits, n);
  (void)settle("sequential spawns", &base);

  for (int r = 0; r < CONCURRENT_ROUNDS; r++)
    spawn_concurrent(loop, &base);
  CHECK(exits == WARMUP_SPAWNS + CONCURRENT * (1 + CONCURRENT_ROUNDS) + n &&
            bad_exits == 0,
        "%d exits (%d bad) after the concurrent spawns", exits, bad_exits);
  (void)settle("concurrent spawns", &base);

  free_loop(loop);
  printf("scenario_resources: ok, %ld sequential and %d x %d concurrent "
         "spawns\n",
         n, CONCURRENT_ROUNDS, CONCURRENT);
  return 0;
}
