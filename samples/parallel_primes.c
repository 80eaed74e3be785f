/* parallel_primes - count the primes below N on one thread, then on a
 * worker pool with weft_pool_for(), and print both times, the speedup and
 * the pool's statistics. `make demo` runs it.
 *
 *   parallel_primes [N]      (default 2000000)
 *
 * The pool runs the task "count" once per chunk of [2, N). Each chunk adds
 * its count to slot 0 of a shared buffer with one atomic add: the chunks
 * share one total and nothing is copied back. Trial division makes the
 * later chunks (bigger numbers) dearer than the first ones, so the range is
 * cut into more chunks than threads: a thread that finishes early takes
 * the next chunk. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime */
#endif
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <weft/weft.h>

#define CHUNKS 64 /* Chunks per run: enough to even out the uneven cost. */

static bool is_prime(int64_t n) {
  if (n < 2)
    return false;
  if (n % 2 == 0)
    return n == 2;
  for (int64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0)
      return false;
  return true;
}

static int64_t count_primes(int64_t begin, int64_t end) {
  int64_t n = 0;
  for (int64_t i = begin; i < end; i++)
    n += is_prime(i);
  return n;
}

/* The task: [begin, end, shared]. Runs on a pool thread. */
static int count_task(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  int64_t begin, end, n = 0;
  weft_shared_t* total = NULL;
  (void)res;
  int err = weft_msg_read(arg, "IIH", &begin, &end, &total);
  if (err != 0)
    return err;
  /* Long loops look at the cancel flag now and then. */
  for (int64_t i = begin; i < end; i += 4096) {
    if (weft_task_canceled(ctx)) {
      weft_shared_release(total);
      return WEFT_ECANCELED;
    }
    n += count_primes(i, i + 4096 < end ? i + 4096 : end);
  }
  err = weft_atomic_add64(total, 0, n, NULL);
  weft_shared_release(total);
  return err;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int fail(const char* what, int err) {
  fprintf(stderr, "parallel_primes: %s: %s\n", what, weft_strerror(err));
  return 1;
}

int main(int argc, char** argv) {
  int64_t n = argc > 1 ? strtoll(argv[1], NULL, 10) : 2000000;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  weft_pool_opts_t opts = {0};
  weft_pool_t* pool = NULL;
  weft_shared_t* total = NULL;
  weft_pool_stats_t st;
  int64_t serial, parallel = 0;
  double t0, t_serial, t_pool, t_cold;
  int err;

  if (n < 3) {
    fprintf(stderr, "usage: parallel_primes [N >= 3]\n");
    return 2;
  }
  printf("counting the primes below %" PRId64 "\n", n);

  /* One thread. */
  t0 = now_ms();
  serial = count_primes(2, n);
  t_serial = now_ms() - t0;
  printf("one thread: %" PRId64 " primes\n", serial);
  printf("  time: %.1f ms\n", t_serial);

  /* The pool: one thread per core, all started now (min = max), so that
   * the timed run below measures the work, not thread start. */
  t0 = now_ms();
  opts.name = "primes";
  opts.min_threads = cpus > 0 ? (unsigned)cpus : 1;
  opts.max_threads = opts.min_threads;
  err = weft_pool_new(&pool, &opts);
  if (err != 0)
    return fail("weft_pool_new", err);
  err = weft_pool_register(pool, "count", count_task, NULL);
  if (err != 0)
    return fail("weft_pool_register", err);
  t_cold = now_ms() - t0;
  err = weft_shared_new(&total, 64);
  if (err != 0)
    return fail("weft_shared_new", err);

  t0 = now_ms();
  err = weft_pool_for(pool, "count", 2, n, (n - 2 + CHUNKS - 1) / CHUNKS,
                      total);
  if (err != 0)
    return fail("weft_pool_for", err);
  t_pool = now_ms() - t0;
  weft_atomic_load64(total, 0, &parallel);
  printf("pool: %" PRId64 " primes\n", parallel);
  printf("  time: %.1f ms on %ld threads (pool start: %.2f ms more)\n",
         t_pool, cpus, t_cold);
  printf("results agree: %s\n", parallel == serial ? "yes" : "NO");
  printf("  speedup: %.2fx warm, %.2fx counting pool start (ideal %ld.00x)\n",
         t_serial / t_pool, t_serial / (t_pool + t_cold), cpus);

  err = weft_pool_stats(pool, &st);
  if (err != 0)
    return fail("weft_pool_stats", err);
  printf("pool stats: completed %" PRIu64 ", failed %" PRIu64
         ", canceled %" PRIu64 ", rejected %" PRIu64 "\n",
         st.completed, st.failed, st.canceled, st.rejected);
  printf("  threads %u, queue wait p50 %.0f us p99 %.0f us, "
         "run p50 %.0f us p99 %.0f us, utilization %.0f%%\n",
         st.threads, st.wait_p50_us, st.wait_p99_us, st.run_p50_us,
         st.run_p99_us, st.utilization * 100.0);

  weft_shared_release(total);
  err = weft_pool_close(pool);
  if (err != 0)
    return fail("weft_pool_close", err);
  return parallel == serial ? 0 : 1;
}
