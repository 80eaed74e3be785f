/* floor.c - what this machine allows, measured in the same run as the
 * workloads (bench/run.sh runs it first): hosts of one machine kind differ
 * (the turn-around of a cache line between two vCPUs varied 3x between two
 * hosts), so weft's figures are also printed as multiples of these.
 *
 *   weft_floor [ROUNDS]
 *
 * - floor.spin_rtt: two threads pinned to different CPUs hand one cache
 *   line back and forth (each waits with a pause loop for the other's
 *   store): one round trip, the least a message there and an answer back
 *   can cost. Compare weft's ping-pong and wait/notify round trips.
 * - floor.spin_rtt_1cpu: the same with both threads on one CPU, each
 *   yielding to the other (sched_yield): what a round trip costs when no
 *   line crosses cores.
 * - floor.futex_rtt: the same pair parking on futexes instead (each waits
 *   in FUTEX_WAIT until the other's FUTEX_WAKE): the round trip of two
 *   wake-ups, what a message costs when the receiver sleeps.
 * - floor.memcpy1m: memcpy of 1 MiB from one buffer to another, GB/s:
 *   compare weft's copy of a 1 MiB message.
 *
 * Each is the median of ROUNDS (default 5) timed runs, printed as
 * "RESULT <metric> <value> <unit>" like weft_bench. Uses no weft code. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setaffinity_np, CPU_SET */
#endif
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 51

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char* what) {
  fprintf(stderr, "weft_floor: %s\n", what);
  exit(1);
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void result(const char* metric, double value, const char* unit) {
  printf("RESULT %s %.4g %s\n", metric, value, unit);
  fflush(stdout);
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
    die("pthread_setaffinity_np failed");
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* --- The pair: one thread answers each ping of the other --------------- */

enum { SPIN, YIELD, FUTEX };

typedef struct {
  /* One line for the ball (spin, yield); a futex word per direction. */
  _Alignas(64) _Atomic uint32_t ball;
  _Alignas(64) _Atomic uint32_t to_b;
  _Alignas(64) _Atomic uint32_t to_a;
  int mode;
  int cpu_b;
  uint64_t n;
} pair_t;

static void futex_wait(_Atomic uint32_t* w, uint32_t v) {
  syscall(SYS_futex, (uint32_t*)w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t* w) {
  syscall(SYS_futex, (uint32_t*)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wait until *w == v: pause, or yield, or sleep on the futex. */
static void await(pair_t* p, _Atomic uint32_t* w, uint32_t v) {
  uint32_t cur;
  while ((cur = atomic_load_explicit(w, memory_order_acquire)) != v) {
    if (p->mode == SPIN)
      cpu_relax();
    else if (p->mode == YIELD)
      sched_yield();
    else
      futex_wait(w, cur);
  }
}

static void hand(pair_t* p, _Atomic uint32_t* w, uint32_t v) {
  atomic_store_explicit(w, v, memory_order_release);
  if (p->mode == FUTEX)
    futex_wake(w);
}

static void* b_main(void* arg) {
  pair_t* p = arg;
  pin(p->cpu_b);
  for (uint64_t i = 0; i < p->n; i++) {
    if (p->mode == FUTEX) {
      await(p, &p->to_b, (uint32_t)(2 * i + 1));
      hand(p, &p->to_a, (uint32_t)(2 * i + 2));
    } else {
      await(p, &p->ball, (uint32_t)(2 * i + 1));
      hand(p, &p->ball, (uint32_t)(2 * i + 2));
    }
  }
  return NULL;
}

/* Microseconds per round trip over n round trips, A on CPU 0. */
static double pair_rtt(int mode, int cpu_b, uint64_t n) {
  pair_t* p = aligned_alloc(64, sizeof(*p));
  pthread_t b;
  double t0, t1;
  if (p == NULL)
    die("out of memory");
  memset(p, 0, sizeof(*p));
  p->mode = mode;
  p->cpu_b = cpu_b;
  p->n = n;
  pin(0);
  if (pthread_create(&b, NULL, b_main, p) != 0)
    die("pthread_create failed");
  t0 = now_s();
  for (uint64_t i = 0; i < n; i++) {
    if (mode == FUTEX) {
      hand(p, &p->to_b, (uint32_t)(2 * i + 1));
      await(p, &p->to_a, (uint32_t)(2 * i + 2));
    } else {
      hand(p, &p->ball, (uint32_t)(2 * i + 1));
      await(p, &p->ball, (uint32_t)(2 * i + 2));
    }
  }
  t1 = now_s();
  pthread_join(b, NULL);
  free(p);
  return (t1 - t0) * 1e6 / (double)n;
}

/* --- memcpy ---------------------------------------------------------------- */

static double memcpy_gbs(size_t size, int reps) {
  char* a = malloc(size);
  char* b = malloc(size);
  double t0, t1;
  if (a == NULL || b == NULL)
    die("out of memory");
  memset(a, 1, size);
  memset(b, 2, size); /* Both mapped and warm. */
  t0 = now_s();
  for (int i = 0; i < reps; i++) {
    a[i % size] = (char)i; /* The copy is not the same twice. */
    memcpy(b, a, size);
    __asm__ __volatile__("" : : "r"(b) : "memory"); /* Keep every copy. */
  }
  t1 = now_s();
  free(a);
  free(b);
  return (double)size * reps / (t1 - t0) / 1e9;
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  double v[4][MAX_ROUNDS];
  if (rounds < 1 || rounds > MAX_ROUNDS)
    die("ROUNDS must be 1..51");
  if (cpus < 2)
    fprintf(stderr, "weft_floor: one CPU: the cross-CPU figures use CPU 0 "
                    "twice\n");
  for (int r = 0; r < rounds; r++) {
    v[0][r] = pair_rtt(SPIN, cpus > 1 ? 1 : 0, 200000);
    v[1][r] = pair_rtt(YIELD, 0, 100000);
    v[2][r] = pair_rtt(FUTEX, cpus > 1 ? 1 : 0, 20000);
    v[3][r] = memcpy_gbs((size_t)1 << 20, 2000);
  }
  result("floor.spin_rtt", median(v[0], rounds), "us");
  result("floor.spin_rtt_1cpu", median(v[1], rounds), "us");
  result("floor.futex_rtt", median(v[2], rounds), "us");
  result("floor.memcpy1m", median(v[3], rounds), "GB/s");
  return 0;
}
