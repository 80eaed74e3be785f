/* scenario_trace.c - the trace under concurrency (plain C so that TSan runs
 * it): workers echo a stream of messages to main while a plain thread posts
 * to them too, and another thread starts and stops traces over and over
 * (stops that race with recording, with buffers written out because they
 * are full, with workers ending). Every trace file must pass the checks of
 * test/trace_check.h; the run must deliver every message. Exits 0 on
 * success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft/weft.h>

#include "support.h"
#include "trace.h" /* weft__trace_limit() */
#include "trace_check.h"

#define WORKERS 3
#define ROUNDS (UNDER_TSAN ? 3000 : 30000)
#define SIDE_POSTS (UNDER_TSAN ? 2000 : 20000)
#define SIDE_TAG 1000000000

static weft_worker_t* workers[WORKERS];
static int replies[WORKERS];
static atomic_int side_seen; /* Side posts received, all workers. */
static atomic_int done;
static char path[256];
static int traces_checked;
static size_t flows_seen;

/* --- worker --------------------------------------------------------------- */

static void w_on_message(weft_port_t* port, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  if (v >= SIDE_TAG) {
    atomic_fetch_add(&side_seen, 1); /* From the side thread: no answer. */
    return;
  }
  if (v < 0) {
    weft_port_close(port);
    return;
  }
  CHECK(port_post_int(port, v + 1) == 0, "worker: post failed");
}

static void w_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  CHECK(weft_port_on_message(weft_parent_port(), w_on_message) == 0,
        "on_message");
}

/* --- main ----------------------------------------------------------------- */

static void post_int(weft_worker_t* w, int64_t v) {
  packed_t p = packed_int(v);
  CHECK(weft_worker_post(w, p.data, p.len) == 0, "post to a worker failed");
}

static void m_on_message(weft_worker_t* w, weft_msg_t* msg) {
  int i;
  for (i = 0; i < WORKERS && workers[i] != w; i++) {
  }
  CHECK(i < WORKERS, "a reply from no worker");
  (void)msg;
  if (++replies[i] < ROUNDS)
    post_int(w, replies[i]);
  else
    post_int(w, -1);
}

/* --- the other threads ------------------------------------------------------ */

/* Posts to the workers from a thread with no loop. */
static void* side_thread(void* arg) {
  int k;
  (void)arg;
  for (k = 0; k < SIDE_POSTS; k++) {
    packed_t p = packed_int(SIDE_TAG + k);
    int err = weft_worker_post(workers[k % WORKERS], p.data, p.len);
    /* A worker that already ended refuses it. */
    CHECK(err == 0 || err == WEFT_ECLOSED, "side post: %s", weft_err_name(err));
  }
  return NULL;
}

static void check_file(void) {
  tc_trace_t t;
  size_t nflows = 0;
  CHECK(tc_load(path, &t), "%s: %s", path, t.err);
  CHECK(tc_check(&t, &nflows), "%s: %s", path, t.err);
  flows_seen += nflows;
  traces_checked++;
  tc_free(&t);
}

/* Starts and stops traces until the run is over, checking each file. */
static void* toggle_thread(void* arg) {
  int n = 0;
  (void)arg;
  while (!atomic_load(&done)) {
    CHECK(weft_trace_start(path) == 0, "weft_trace_start");
    /* Now and then a long one: buffers fill and are written out. */
    sleep_ms((UNDER_TSAN ? 20 : 5) * (++n % 4 == 0 ? 10 : 1));
    CHECK(weft_trace_stop() == 0, "weft_trace_stop");
    check_file();
    sleep_ms(1);
  }
  return NULL;
}

int main(void) {
  weft_loop_t* loop;
  pthread_t side, toggle;
  const char* dir = getenv("TMPDIR");
  int i;
  snprintf(path, sizeof(path), "%s/weft_scenario_trace_%d.json",
           dir != NULL && dir[0] != '\0' ? dir : "/tmp", (int)getpid());
  /* Buffers written out when one chunk is full: while other threads stop
   * traces. */
  weft__trace_limit(1, 1024);
  CHECK(weft_trace_start(path) == 0, "weft_trace_start");
  loop = new_loop();
  for (i = 0; i < WORKERS; i++) {
    weft_worker_opts_t opts = {0};
    opts.name = "trace-echo";
    opts.events.message = m_on_message;
    workers[i] = spawn_worker(loop, w_entry, &opts);
    post_int(workers[i], 0);
  }
  CHECK(weft_trace_stop() == 0, "weft_trace_stop");
  check_file();
  CHECK(pthread_create(&side, NULL, side_thread, NULL) == 0, "side thread");
  CHECK(pthread_create(&toggle, NULL, toggle_thread, NULL) == 0, "toggle");
  run_loop(loop);
  CHECK(pthread_join(side, NULL) == 0, "join side");
  atomic_store(&done, 1);
  CHECK(pthread_join(toggle, NULL) == 0, "join toggle");
  for (i = 0; i < WORKERS; i++) {
    CHECK(replies[i] == ROUNDS, "worker %d: %d replies", i, replies[i]);
    weft_worker_free(workers[i]);
  }
  free_loop(loop);
  /* Side posts to a worker that had ended are refused, not lost: only those
   * that arrived are counted. */
  CHECK(atomic_load(&side_seen) <= SIDE_POSTS, "side posts counted twice");
  CHECK(traces_checked >= 2, "only %d traces", traces_checked);
  remove(path);
  printf("scenario_trace: %d traces checked, %zu arrows\n", traces_checked,
         flows_seen);
  return 0;
}
