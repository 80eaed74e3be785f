/* support.h - helpers the test programs share: a failing check, loops and
 * channels that must open and close cleanly, packed msgpack values,
 * waiting with a bound, watchdogs, and the process's threads, descriptors
 * and memory read from /proc.
 *
 * Header-only (every helper is static inline) rather than a support.c
 * linked into every test: the same helpers serve the Criterion suites
 * (test_*.c), where a failed check is a cr_assert, and the plain scenario
 * programs (scenario_*.c, also built under TSan, where Criterion cannot
 * start), where it prints file:line and exits 1. Which of the two CHECK
 * becomes is decided by what the including file included before this
 * header (<criterion/criterion.h> or not), so one object file could not
 * serve both; a header also needs no change to test/CMakeLists.txt.
 *
 * Include it after <criterion/criterion.h> in a suite. The checks here run
 * on the calling thread: in a suite, call them from the test's thread only
 * (Criterion's asserts belong to it); the helpers that do not check
 * (packing callbacks, msg_int, the /proc readers, the clocks) may run
 * anywhere. */
#ifndef WEFT_TEST_SUPPORT_H
#define WEFT_TEST_SUPPORT_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <weft/weft.h>

/* --- Sanitizer builds ----------------------------------------------------- */

/* UNDER_SAN: ASan or TSan (slower, more memory); UNDER_TSAN: TSan only. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define UNDER_SAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define UNDER_SAN 1
#endif
#endif
#ifndef UNDER_SAN
#define UNDER_SAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* --- A failing check ------------------------------------------------------ */

/* CHECK(cond, fmt, ...): in a Criterion suite, cr_assert; in a scenario,
 * print "file:line: message (cond)", then what support_on_fail() asked
 * for (a seed, the case being run), and exit 1. */
#ifdef CRITERION_H_
#define CHECK(cond, ...) cr_assert(cond, __VA_ARGS__)
#else
#define CHECK(cond, ...)                    \
  do {                                      \
    if (!(cond)) {                          \
      support_fail_at_(__FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);         \
      support_fail_(#cond);                 \
    }                                       \
  } while (0)
#endif

/* The scenario's own context printer (NULL: none); a function-local static
 * so that a file that never sets it has no unused variable. */
static inline void (**support_fail_hook_(void))(void) {
  static void (*hook)(void);
  return &hook;
}

/* Run `fn` (it prints to stderr) when a scenario's CHECK fails. */
static inline void support_on_fail(void (*fn)(void)) {
  *support_fail_hook_() = fn;
}

static inline void support_fail_at_(const char* file, int line) {
  const char* base = strrchr(file, '/');
  fprintf(stderr, "%s:%d: ", base != NULL ? base + 1 : file, line);
}

static inline void support_fail_(const char* cond) {
  void (*hook)(void) = *support_fail_hook_();
  fprintf(stderr, " (%s)\n", cond);
  if (hook != NULL)
    hook();
  exit(1);
}

/* --- Loops, channels, workers --------------------------------------------- */

static inline weft_loop_t* new_loop(void) {
  weft_loop_t* loop = NULL;
  int err = weft_loop_new(&loop);
  CHECK(err == 0, "weft_loop_new: %s", weft_err_name(err));
  CHECK(loop != NULL, "weft_loop_new gave no loop");
  return loop;
}

/* A loop ends clean: nothing of it is still alive. */
static inline void free_loop(weft_loop_t* loop) {
  int err = weft_loop_free(loop);
  CHECK(err == 0, "weft_loop_free: %s", weft_err_name(err));
}

static inline void run_loop(weft_loop_t* loop) {
  int err = weft_loop_run(loop);
  CHECK(err == 0, "weft_loop_run: %s", weft_err_name(err));
}

static inline void run_and_free(weft_loop_t* loop) {
  run_loop(loop);
  free_loop(loop);
}

static inline void new_channel(weft_loop_t* loop,
                               weft_port_t** a,
                               weft_port_t** b) {
  int err = weft_channel_new(loop, a, b);
  CHECK(err == 0, "weft_channel_new: %s", weft_err_name(err));
  CHECK(*a != NULL && *b != NULL, "weft_channel_new gave no ports");
}

/* Free both ends of a channel: each must succeed. */
static inline void free_channel(weft_port_t* a, weft_port_t* b) {
  int err = weft_port_free(a);
  CHECK(err == 0, "weft_port_free(a): %s", weft_err_name(err));
  err = weft_port_free(b);
  CHECK(err == 0, "weft_port_free(b): %s", weft_err_name(err));
}

/* The end of a test with one channel: both ports, then the loop. */
/* Post `m` on `a` and take it back out of `b` with weft_port_receive()
 * (receiveMessageOnPort); the caller owns the message returned. */
static inline weft_msg_t* round_trip(weft_port_t* a,
                                     weft_port_t* b,
                                     weft_msg_t* m) {
  weft_msg_t* got = NULL;
  CHECK(weft_port_post_msg(a, &m) == 0, "post_msg");
  CHECK(m == NULL, "posted message handed over");
  CHECK(weft_port_receive(b, &got) == 0, "receive");
  CHECK(got != NULL, "received a message");
  return got;
}

static inline void finish(weft_loop_t* loop, weft_port_t* a, weft_port_t* b) {
  free_channel(a, b);
  free_loop(loop);
}

/* A worker that must start (`opts` may be NULL). */
static inline weft_worker_t* spawn_worker(weft_loop_t* loop,
                                          weft_worker_entry_cb entry,
                                          const weft_worker_opts_t* opts) {
  weft_worker_t* w = NULL;
  int err = weft_worker_spawn(&w, loop, entry, opts);
  CHECK(err == 0, "spawn: %s", weft_strerror(err));
  CHECK(w != NULL, "weft_worker_spawn gave no worker");
  return w;
}

/* How a worker ended, as its events told: how many error events, and the
 * exit code (-1 until the exit event). */
typedef struct {
  int errors;
  int exit_code;
} worker_end_t;

/* Worker events that fill the worker_end_t that is the worker's user data
 * (opts.user_data). They run on the owner's loop thread. */
static inline void worker_end_on_error(weft_worker_t* w,
                                       int err,
                                       const char* text) {
  worker_end_t* end = weft_worker_get_data(w);
  (void)err;
  (void)text;
  end->errors++;
}

static inline void worker_end_on_exit(weft_worker_t* w, int code) {
  worker_end_t* end = weft_worker_get_data(w);
  end->exit_code = code;
}

/* Record in `end` how the worker spawned with `opts` ends: clears `end`
 * and sets opts' user data and its error and exit events. An exit event of
 * the caller's own, set afterwards, calls worker_end_on_exit() itself. */
static inline void watch_worker_end(weft_worker_opts_t* opts,
                                    worker_end_t* end) {
  end->errors = 0;
  end->exit_code = -1;
  opts->user_data = end;
  opts->events.error = worker_end_on_error;
  opts->events.exit = worker_end_on_exit;
}

/* --- Packed values -------------------------------------------------------- */

/* One packed msgpack value, by value (no allocation to free). */
typedef struct {
  char data[512];
  size_t len;
} packed_t;

/* Copy what `sb` holds, then destroy it. */
static inline packed_t packed_from(msgpack_sbuffer* sb) {
  packed_t p;
  CHECK(sb->size <= sizeof(p.data), "packed value of %zu bytes", sb->size);
  memcpy(p.data, sb->data, sb->size);
  p.len = sb->size;
  msgpack_sbuffer_destroy(sb);
  return p;
}

static inline void pack_str(msgpack_packer* pk, const char* s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static inline packed_t packed_int(int64_t v) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_int64(&pk, v);
  return packed_from(&sb);
}

static inline packed_t packed_str(const char* s) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  pack_str(&pk, s);
  return packed_from(&sb);
}

/* An array of `n` unsigned integers. */
static inline packed_t packed_u64s(const uint64_t* v, size_t n) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_uint64(&pk, v[i]);
  return packed_from(&sb);
}

/* A weft_*_post_fn callback: packs *(const int64_t*)arg. Any thread. */
static inline int pack_int_cb(msgpack_packer* pk, void* arg) {
  return msgpack_pack_int64(pk, *(const int64_t*)arg);
}

/* The integer `o` holds; checks that it is one. */
static inline int64_t obj_int(const msgpack_object* o) {
  CHECK(o != NULL, "no object");
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    return (int64_t)o->via.u64;
  CHECK(o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER, "type %d", o->type);
  return o->via.i64;
}

/* The integer a message carries, or INT64_MIN if it is not one. Any
 * thread (it checks nothing). */
static inline int64_t msg_int(weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  if (o == NULL)
    return INT64_MIN;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    return (int64_t)o->via.u64;
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return o->via.i64;
  return INT64_MIN;
}

static inline bool obj_str_eq(const msgpack_object* o, const char* s) {
  return o != NULL && o->type == MSGPACK_OBJECT_STR &&
         o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Post the integer `v` on a port (the post's own result). */
static inline int port_post_int(weft_port_t* p, int64_t v) {
  packed_t b = packed_int(v);
  return weft_port_post(p, b.data, b.len);
}

/* --- Shared buffers ------------------------------------------------------- */

static inline weft_shared_t* new_shared(size_t size) {
  weft_shared_t* sh = NULL;
  int err = weft_shared_new(&sh, size);
  CHECK(err == 0, "weft_shared_new: %s", weft_err_name(err));
  CHECK(sh != NULL, "weft_shared_new gave no buffer");
  return sh;
}

#ifdef WEFT_LIB_INTERNAL_H /* weft__shared_waiters() */
/* Wait (sleeping 1 ms at a time) until `n` waiters are queued on the 32-
 * or 64-bit (`width` 4 or 8) slot `index`: a test waits for its sleepers
 * without guessing how long they take to fall asleep. */
static inline void await_waiters(weft_shared_t* sh,
                                 size_t index,
                                 size_t width,
                                 size_t n) {
  while (weft__shared_waiters(sh, index, width) < n)
    uv_sleep(1);
}
#endif

/* --- Clocks, waiting with a bound ----------------------------------------- */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Keep the thread busy (no sleep) for `ms`: synchronous work. */
static inline void busy_ms(uint64_t ms) {
  uint64_t t0 = uv_hrtime();
  while (uv_hrtime() - t0 < ms * 1000000u) {
  }
}

/* Sleep 1 ms at a time until `cond` holds or `ms` have passed; the caller
 * checks `cond` afterwards (a regression fails instead of hanging). */
#define WAIT_UNTIL(cond, ms)                                            \
  do {                                                                  \
    uint64_t wait_t0_ = uv_hrtime();                                    \
    while (!(cond) && uv_hrtime() - wait_t0_ < (uint64_t)(ms)*1000000u) \
      uv_sleep(1);                                                      \
  } while (0)

/* A watchdog: a timer on `loop` that runs `cb` (which fails the scenario)
 * after `ms`. Unref'd, so it never keeps the loop alive by itself: it
 * fires only while something else does, that is when the run is stuck.
 * Clear it with weft_clear_timer() once the run is over. */
static inline weft_timer_id arm_watchdog(weft_loop_t* loop,
                                         uint64_t ms,
                                         weft_task_cb cb,
                                         void* arg) {
  weft_timer_id dog = 0;
  int err = weft_set_timeout(loop, ms, cb, arg, &dog);
  CHECK(err == 0, "watchdog: %s", weft_err_name(err));
  err = weft_timer_set_ref(loop, dog, false);
  CHECK(err == 0, "unref watchdog: %s", weft_err_name(err));
  return dog;
}

/* --- Checksums and random numbers ----------------------------------------- */

/* FNV-1a: chain hashes with FNV_SEED as the first `h`. */
#define FNV_SEED 0xcbf29ce484222325ull

static inline uint64_t fnv1a(uint64_t h, const void* p, size_t n) {
  const uint8_t* b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* `v` as 8 little-endian bytes. */
static inline uint64_t fnv1a_u64(uint64_t h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> (8 * i));
  return fnv1a(h, b, 8);
}

/* SplitMix64's finalizer: a well-mixed 64-bit value from `z`. */
static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* SplitMix64: the next number of the sequence whose state is *s. */
static inline uint64_t splitmix(uint64_t* s) {
  return mix64(*s += 0x9e3779b97f4a7c15ull);
}

/* --- The process, from /proc ---------------------------------------------- */

/* Entries of a /proc directory, without "." and ".."; -1 if unreadable.
 * The directory's own descriptor is counted in /proc/self/fd: the same in
 * every sample. */
static inline int count_dir(const char* path) {
  DIR* d = opendir(path);
  struct dirent* e;
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  }
  closedir(d);
  return n;
}

/* Threads of the process whose name starts with `prefix`; -1 if
 * /proc/self/task is unreadable. */
static inline int count_threads_named(const char* prefix) {
  DIR* d = opendir("/proc/self/task");
  struct dirent* e;
  size_t plen = strlen(prefix);
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[32] = "";
    FILE* f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
    f = fopen(path, "r");
    if (f == NULL)
      continue; /* The thread ended meanwhile. */
    if (fgets(comm, sizeof(comm), f) != NULL &&
        strncmp(comm, prefix, plen) == 0)
      n++;
    fclose(f);
  }
  closedir(d);
  return n;
}

/* Resident memory (/proc/self/statm) in bytes; -1 if unreadable. */
static inline long long rss_bytes(void) {
  long pages = 0, res = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return -1;
  if (fscanf(f, "%ld %ld", &pages, &res) != 2)
    res = -1;
  fclose(f);
  return res < 0 ? -1 : (long long)res * sysconf(_SC_PAGESIZE);
}

#endif /* WEFT_TEST_SUPPORT_H */
