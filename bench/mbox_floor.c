/* mbox_floor.c - ping-pong over two bare port mailboxes (transport/mbox.h):
 * two threads pinned to CPUs 0 and 1, each pushing a small value inline
 * and spinning (a pause per look, as floor.c's pair does) for the other's,
 * with no loop, no message object and no decoding. What weft's queue
 * itself costs a round trip, to hold between the spin floor (weft_floor:
 * one line's round trip) and weft's ping-pong (weft_bench pingpong, and
 * pingpong-int without decoding a container): bench/README.md.
 *
 *   weft_mbox_floor [ROUNDS] [N]
 *
 * Prints "RESULT mbox.pingpong.rtt <us> us", the median of ROUNDS
 * (default 5) runs of N (default 1,000,000) round trips. Uses weft's
 * transport/ only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setaffinity_np, CPU_SET */
#endif
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mbox.h"

#define MAX_ROUNDS 51

static weft__mbox_t to_echo, to_main;
static long n_trips;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(s), &s);
}

/* mbox.h's allocator contract: 64-byte aligned. */
static void* alloc64(size_t n) {
  return aligned_alloc(64, (n + 63) & ~(size_t)63);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* The next value of `q`, waited for as a port waits for more: a look at
 * the slot's line only, then a peek. */
static long take(weft__mbox_t* q) {
  weft__mbox_item_t it;
  long v = 0;
  while (!weft__mbox_ready(q) || !weft__mbox_peek(q, &it))
    cpu_relax();
  memcpy(&v, it.data, sizeof(v));
  weft__mbox_next(q, &it);
  return v;
}

static void put(weft__mbox_t* q, long v) {
  if (weft__mbox_push_inline(q, &v, sizeof(v), sizeof(v)) != 0) {
    fprintf(stderr, "mbox_floor: out of memory\n");
    exit(1);
  }
}

static void* echo(void* arg) {
  (void)arg;
  pin(1);
  for (;;) {
    long v = take(&to_echo);
    if (v < 0)
      return NULL;
    put(&to_main, v);
  }
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  double rtt[MAX_ROUNDS];
  pthread_t t;
  n_trips = argc > 2 ? atol(argv[2]) : 1000000;
  if (rounds < 1 || rounds > MAX_ROUNDS || n_trips < 1) {
    fprintf(stderr, "usage: %s [ROUNDS 1-%d] [N]\n", argv[0], MAX_ROUNDS);
    return 2;
  }
  if (weft__mbox_init(&to_echo, alloc64, free) != 0 ||
      weft__mbox_init(&to_main, alloc64, free) != 0 ||
      pthread_create(&t, NULL, echo, NULL) != 0) {
    fprintf(stderr, "mbox_floor: cannot start\n");
    return 1;
  }
  pin(0);
  for (int r = 0; r < rounds; r++) {
    double t0 = now_s();
    for (long i = 0; i < n_trips; i++) {
      put(&to_echo, i);
      if (take(&to_main) != i) {
        fprintf(stderr, "mbox_floor: wrong value back\n");
        return 1;
      }
    }
    rtt[r] = (now_s() - t0) / (double)n_trips * 1e6;
  }
  put(&to_echo, -1);
  pthread_join(t, NULL);
  weft__mbox_destroy(&to_echo);
  weft__mbox_destroy(&to_main);
  qsort(rtt, (size_t)rounds, sizeof(rtt[0]), cmp);
  printf("RESULT mbox.pingpong.rtt %.4g us\n", rtt[rounds / 2]);
  return 0;
}
