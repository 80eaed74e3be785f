/* scrypt_rate.c - the floor of the login benchmark (bench/login.sh): how many
 * of the login API's password hashes per second this machine's cores do,
 * with no server, no event loop and no HTTP in the way.
 *
 *   scrypt_rate [SECONDS [ROUNDS [THREADS]]]     defaults: 3 3 <online CPUs>
 *
 * The hash is the one samples/login_api.c verifies: libsodium's
 * crypto_pwhash_scryptsalsa208sha256_ll, N=16384 r=8 p=1, 32-byte output,
 * a 16-byte salt (16 MiB of scratch memory per hash, allocated by libsodium
 * on every call, as in the server). THREADS threads each hash in a loop for
 * SECONDS; a round's rate is the sum over threads of (hashes done / time
 * of that thread's last completed hash), so a hash cut off by the end of
 * the round costs nothing. Prints the median of ROUNDS rounds:
 *
 *   RESULT scrypt.rate <hashes/s, all threads> hashes/s
 *   RESULT scrypt.hash_ms <ms per hash on one thread, all threads busy> ms
 *   RESULT scrypt.threads <THREADS> threads
 *   RESULT scrypt.faults_per_hash <minor page faults per hash> faults
 *
 * The last one is there because libsodium maps and unmaps the 16 MiB of
 * every hash (4096 fresh pages, each a page fault), which on some virtual
 * machines costs as much as the hashing itself; OpenSSL's scrypt (Node's)
 * gets its memory from malloc, which reuses it.
 *
 * and every round on stderr. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#define HASH_N 16384u
#define HASH_R 8u
#define HASH_P 1u
#define OUT_LEN 32

static const char PASSWORD[] = "wonderland";
static unsigned char salt[16]; /* SALT_BYTES of samples/login_api.c */
static unsigned char expected[OUT_LEN];

typedef struct {
  pthread_t tid;
  int index;
  double start;    /* common start, CLOCK_MONOTONIC seconds */
  double deadline; /* no new hash starts after this */
  long count;      /* hashes completed */
  double last;     /* seconds from start to the last completion */
  int bad;         /* a hash failed or differed from the expected one */
} worker;

static pthread_barrier_t go;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int hash(unsigned char out[OUT_LEN]) {
  return crypto_pwhash_scryptsalsa208sha256_ll(
      (const uint8_t*)PASSWORD, sizeof PASSWORD - 1, salt, sizeof salt,
      HASH_N, HASH_R, HASH_P, out, OUT_LEN);
}

static void* run(void* arg) {
  worker* w = arg;
  char name[16];
  snprintf(name, sizeof name, "scrypt-%d", w->index);
  pthread_setname_np(pthread_self(), name);
  /* The main thread sets start and deadline for everyone after the barrier
   * has released all threads: wait for it, then read them. */
  pthread_barrier_wait(&go);
  pthread_barrier_wait(&go);
  unsigned char out[OUT_LEN];
  while (now_s() < w->deadline) {
    if (hash(out) != 0 || memcmp(out, expected, OUT_LEN) != 0) {
      w->bad = 1;
      break;
    }
    w->count++;
    w->last = now_s() - w->start;
  }
  return NULL;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 3;
  int rounds = argc > 2 ? atoi(argv[2]) : 3;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = argc > 3 ? atoi(argv[3]) : (int)(ncpu > 0 ? ncpu : 1);
  if (seconds <= 0 || rounds < 1 || threads < 1 || threads > 1024) {
    fprintf(stderr, "usage: scrypt_rate [SECONDS [ROUNDS [THREADS]]]\n");
    return 2;
  }
  if (sodium_init() < 0) {
    fprintf(stderr, "scrypt_rate: sodium_init failed\n");
    return 1;
  }
  for (size_t i = 0; i < sizeof salt; i++) salt[i] = (unsigned char)(i * 7 + 1);
  if (hash(expected) != 0) {
    fprintf(stderr, "scrypt_rate: crypto_pwhash_scryptsalsa208sha256_ll failed\n");
    return 1;
  }

  worker* ws = calloc((size_t)threads, sizeof *ws);
  double* rates = calloc((size_t)rounds, sizeof *rates);
  double* per_hash = calloc((size_t)rounds, sizeof *per_hash);
  double* faults = calloc((size_t)rounds, sizeof *faults);
  if (!ws || !rates || !per_hash || !faults) {
    fprintf(stderr, "scrypt_rate: out of memory\n");
    return 1;
  }
  for (int r = 0; r < rounds; r++) {
    if (pthread_barrier_init(&go, NULL, (unsigned)threads + 1) != 0) {
      fprintf(stderr, "scrypt_rate: pthread_barrier_init failed\n");
      return 1;
    }
    memset(ws, 0, (size_t)threads * sizeof *ws);
    for (int i = 0; i < threads; i++) {
      ws[i].index = i;
      if (pthread_create(&ws[i].tid, NULL, run, &ws[i]) != 0) {
        fprintf(stderr, "scrypt_rate: pthread_create failed\n");
        return 1;
      }
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    pthread_barrier_wait(&go); /* every thread exists */
    double start = now_s();
    for (int i = 0; i < threads; i++) {
      ws[i].start = start;
      ws[i].deadline = start + seconds;
    }
    pthread_barrier_wait(&go); /* the barrier orders these writes */
    double rate = 0;
    long total = 0;
    int bad = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(ws[i].tid, NULL);
      bad |= ws[i].bad;
      total += ws[i].count;
      if (ws[i].count > 0) rate += (double)ws[i].count / ws[i].last;
    }
    pthread_barrier_destroy(&go);
    getrusage(RUSAGE_SELF, &ru1);
    if (bad) {
      fprintf(stderr, "scrypt_rate: a hash failed or gave a different result\n");
      return 1;
    }
    rates[r] = rate;
    per_hash[r] = rate > 0 ? 1000.0 * threads / rate : 0;
    faults[r] = total > 0 ? (double)(ru1.ru_minflt - ru0.ru_minflt) / (double)total : 0;
    fprintf(stderr, "scrypt_rate: round %d: %d threads, %ld hashes, %.2f hashes/s, %.1f ms per hash, %.0f page faults per hash\n",
            r + 1, threads, total, rate, per_hash[r], faults[r]);
  }
  printf("RESULT scrypt.rate %.2f hashes/s\n", median(rates, rounds));
  printf("RESULT scrypt.hash_ms %.2f ms\n", median(per_hash, rounds));
  printf("RESULT scrypt.threads %d threads\n", threads);
  printf("RESULT scrypt.faults_per_hash %.0f faults\n", median(faults, rounds));
  free(faults);
  free(ws);
  free(rates);
  free(per_hash);
  return 0;
}
