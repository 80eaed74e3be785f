/* shared_counter.c - four workers add to one shared counter with atomics,
 * then take turns with wait/notify; the main thread learns they are done
 * through waitAsync and prints the exact total. */
#include <stdio.h>
#include <stdlib.h>

#include <weft/weft.h>

#define WORKERS    4
#define FREE_ADDS  500000 /* Per worker, all at once. */
#define ROUNDS     10     /* Turns per worker in the ring. */
#define BATCH      50000  /* Adds per turn. */
#define PER_WORKER (FREE_ADDS + ROUNDS * BATCH)

/* Int32 slots of the shared buffer. */
enum { COUNTER = 0, TURN = 1, DONE = 2 };

static int exited;
static int32_t turns_seen;

/* --- Worker side ------------------------------------------------------- */

static void fail(const char* what, int err) {
  fprintf(stderr, "%s: %s\n", what, weft_strerror(err));
  exit(1);
}

/* The one message a worker gets: [index, <shared buffer>].
 * Runs on: the worker's loop. */
static void on_start(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  weft_shared_t* sh = NULL;
  int32_t index;
  int err;
  (void)port;

  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
    fail("worker: unexpected message", WEFT_EINVAL);
  index = (int32_t)o->via.array.ptr[0].via.u64;
  err = weft_msg_take_shared(msg, &o->via.array.ptr[1], &sh);
  if (err != 0)
    fail("weft_msg_take_shared", err);

  /* Phase 1: everyone adds at once; atomic adds lose nothing. */
  for (int i = 0; i < FREE_ADDS; i++)
    weft_atomic_add32(sh, COUNTER, 1, NULL);

  /* Phase 2: a ring. Turn t belongs to worker t % WORKERS; the owner does
   * its batch, passes the turn on and wakes the others. Everyone else
   * sleeps in wait (spinning briefly first) until the turn changes. */
  for (int round = 0; round < ROUNDS; round++) {
    int32_t mine = round * WORKERS + index;
    int32_t turn;
    weft_wait_result_t r;
    for (;;) {
      weft_atomic_load32(sh, TURN, &turn);
      if (turn == mine)
        break;
      weft_atomic_wait32(sh, TURN, turn, -1, &r);
    }
    for (int i = 0; i < BATCH; i++)
      weft_atomic_add32(sh, COUNTER, 1, NULL);
    weft_atomic_store32(sh, TURN, mine + 1);
    weft_atomic_notify32(sh, TURN, -1, NULL);
  }

  /* The very last turn tells the main thread. */
  if (index == WORKERS - 1) {
    weft_atomic_store32(sh, DONE, 1);
    weft_atomic_notify32(sh, DONE, -1, NULL);
  }
  weft_shared_release(sh);
  weft_worker_exit(0);
}

/* Runs on: the worker's thread. */
static void worker_main(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), on_start);
}

/* --- Main thread ------------------------------------------------------- */

/* Runs on: the main loop. */
static void on_exit_event(weft_worker_t* w, int exit_code) {
  (void)w;
  if (exit_code != 0)
    fprintf(stderr, "a worker exited with %d\n", exit_code);
  exited++;
}

/* waitAsync: the main loop keeps running while the workers take turns.
 * Runs on: the main loop. */
static void on_done(weft_loop_t* loop, void* arg, weft_wait_result_t r) {
  weft_shared_t* sh = arg;
  (void)loop;
  weft_atomic_load32(sh, TURN, &turns_seen);
  printf("hand-off done: %s after %d turns\n",
         r == WEFT_WAIT_OK ? "notified" : "already set", (int)turns_seen);
}

static int post_start(weft_worker_t* w, int index, weft_shared_t* sh) {
  weft_msg_t* msg = NULL;
  msgpack_packer* pk;
  int err = weft_msg_new(&msg);
  if (err != 0)
    return err;
  pk = weft_msg_packer(msg);
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, index);
  err = weft_msg_add_shared(msg, sh); /* The message holds a reference. */
  if (err == 0)
    err = weft_worker_post_msg(w, &msg); /* On success it owns msg. */
  if (err != 0)
    weft_msg_free(msg);
  return err;
}

int main(void) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = NULL;
  weft_worker_t* workers[WORKERS];
  weft_worker_opts_t opts = {0};
  int32_t total;
  int err;

  if ((err = weft_loop_new(&loop)) != 0)
    fail("weft_loop_new", err);
  if ((err = weft_shared_new(&sh, 64)) != 0)
    fail("weft_shared_new", err);
  printf("workers: %d\n", WORKERS);

  /* Slot DONE is 0 now; the callback runs when the last worker notifies. */
  err = weft_atomic_wait_async32(loop, sh, DONE, 0, -1, on_done, sh);
  if (err != 0)
    fail("weft_atomic_wait_async32", err);

  opts.events.exit = on_exit_event;
  for (int i = 0; i < WORKERS; i++) {
    opts.name = "counter";
    if ((err = weft_worker_spawn(&workers[i], loop, worker_main, &opts)) != 0)
      fail("weft_worker_spawn", err);
    if ((err = post_start(workers[i], i, sh)) != 0)
      fail("post", err);
  }

  /* Runs until every worker has exited and the wait has resolved. */
  if ((err = weft_loop_run(loop)) != 0)
    fail("weft_loop_run", err);

  weft_atomic_load32(sh, COUNTER, &total);
  printf("exited: %d\n", exited);
  printf("total = %d (expected %d)\n", (int)total, WORKERS * PER_WORKER);

  for (int i = 0; i < WORKERS; i++)
    weft_worker_free(workers[i]);
  if ((err = weft_loop_free(loop)) != 0)
    fail("weft_loop_free", err);
  weft_shared_release(sh);
  return total == WORKERS * PER_WORKER && exited == WORKERS ? 0 : 1;
}
