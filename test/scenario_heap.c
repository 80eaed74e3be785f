/* scenario_heap.c - a limited worker's backlog, as a plain program (runs
 * under ThreadSanitizer, where Criterion cannot start): the main thread
 * posts 32 MiB to a worker limited to 4 MiB while the worker is busy. The
 * queued bytes count against the worker's limit: posts past it are
 * dropped and the worker ends with WEFT_EHEAPLIMIT (exit code 1); the
 * host carries on. Before the fix all 32 MiB queued uncharged and were
 * delivered. Returns 0 on success; prints the reason and returns 1. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#define CHECK(cond, ...)                                             \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "scenario_heap: %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                  \
      fprintf(stderr, " (%s)\n", #cond);                             \
      exit(1);                                                       \
    }                                                                \
  } while (0)

#define LIMIT ((size_t)4 << 20)
#define NPOST 32
#define PAYLOAD ((size_t)1 << 20)

/* Set by main once it posted everything; the worker waits for it. */
static atomic_int posted;
static int delivered; /* Worker thread; read by main after the exit. */
static int error_code, exit_code = -1;
static char* bytes;
static size_t len;

static void on_parent_message(weft_port_t* port, weft_msg_t* m) {
  (void)m;
  if (++delivered == NPOST)
    weft_port_close(port); /* Without the fix: all arrive, exit 0. */
}

static void entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  /* Busy while the backlog builds (acquire: pairs with main's release). */
  while (!atomic_load_explicit(&posted, memory_order_acquire))
    uv_sleep(1);
  weft_port_on_message(weft_parent_port(), on_parent_message);
}

static void on_online(weft_worker_t* w) {
  for (int i = 0; i < NPOST; i++) {
    int err = weft_worker_post(w, bytes, len);
    CHECK(err == 0, "post %d: %s", i, weft_err_name(err));
  }
  atomic_store_explicit(&posted, 1, memory_order_release);
}

static void on_error(weft_worker_t* w, int err, const char* text) {
  (void)w;
  (void)text;
  error_code = err;
}

static void on_exit_ev(weft_worker_t* w, int code) {
  (void)w;
  exit_code = code;
}

int main(void) {
  weft_loop_t* loop = NULL;
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  int err;
  /* One bin 32 of PAYLOAD bytes. */
  len = PAYLOAD + 5;
  bytes = calloc(1, len);
  CHECK(bytes != NULL, "calloc");
  bytes[0] = (char)0xc6;
  bytes[1] = (char)(PAYLOAD >> 24);
  bytes[2] = (char)(PAYLOAD >> 16);
  bytes[3] = (char)(PAYLOAD >> 8);
  bytes[4] = (char)PAYLOAD;

  CHECK(weft_loop_new(&loop) == 0, "weft_loop_new");
  opts.max_heap_bytes = LIMIT;
  opts.events.online = on_online;
  opts.events.error = on_error;
  opts.events.exit = on_exit_ev;
  err = weft_worker_spawn(&w, loop, entry, &opts);
  CHECK(err == 0, "spawn: %s", weft_err_name(err));
  CHECK(weft_loop_run(loop) == 0, "weft_loop_run");
  CHECK(error_code == WEFT_EHEAPLIMIT, "error %s, %d delivered",
        weft_err_name(error_code), delivered);
  CHECK(exit_code == 1, "exit code %d", exit_code);
  CHECK((size_t)delivered * PAYLOAD <= LIMIT, "%d MiB delivered", delivered);
  weft_worker_free(w);
  CHECK(weft_loop_free(loop) == 0, "weft_loop_free");
  free(bytes);
  printf("scenario_heap: ok (%d of %d delivered before the breach)\n",
         delivered, NPOST);
  return 0;
}
