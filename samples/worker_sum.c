/* worker_sum - offload a CPU-heavy sum to a worker while the main loop stays
 * free: Node's classic worker_threads example, in C with weft.
 *
 * The main thread posts "Start calculation"; the worker sums the integers
 * below 1e9 and answers "Done. Sum = ..."; meanwhile an interval on the main
 * loop keeps ticking, which shows the main thread was never blocked. */
#include <stdio.h>
#include <string.h>
#include <weft/weft.h>

#define LIMIT 1000000000ULL

static weft_timer_id ticker;
static int ticks;

static int pack_str(msgpack_packer* pk, void* arg) {
  const char* s = arg;
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  return msgpack_pack_str_body(pk, s, n);
}

/* ---- worker side ---- */

static void on_start(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  unsigned long long sum = 0, i;
  char reply[64];
  if (o->type != MSGPACK_OBJECT_STR)
    return;
  printf("worker: got \"%.*s\"\n", (int)o->via.str.size, o->via.str.ptr);
  fflush(stdout);
  for (i = 0; i < LIMIT; i++) {
    sum += i;
    /* C cannot be pre-empted: a long loop checks now and then whether the
     * owner asked it to stop. */
    if ((i & 0xffffff) == 0 && weft_should_stop())
      return;
  }
  snprintf(reply, sizeof(reply), "Done. Sum = %llu", sum);
  weft_port_post_fn(port, pack_str, reply);
  weft_port_close(port); /* Nothing more to do: let the worker end. */
}

static void worker_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), on_start);
}

/* ---- main side ---- */

static void on_tick(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  ticks++;
  if (ticks <= 3 || ticks % 10 == 0)
    printf("main: tick %d (main loop is free)\n", ticks);
}

static void on_result(weft_worker_t* w, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  (void)w;
  printf("main: worker says \"%.*s\"\n", (int)o->via.str.size,
         o->via.str.ptr);
  weft_clear_timer(weft_loop_current(), ticker);
}

static void on_exit_cb(weft_worker_t* w, int code) {
  (void)w;
  printf("main: worker exited with code %d\n", code);
}

int main(void) {
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  int err;

  err = weft_loop_new(&loop);
  if (err != 0) {
    fprintf(stderr, "weft_loop_new: %s\n", weft_strerror(err));
    return 1;
  }
  opts.name = "sum-worker";
  opts.events.message = on_result;
  opts.events.exit = on_exit_cb;
  err = weft_worker_spawn(&w, loop, worker_entry, &opts);
  if (err != 0) {
    fprintf(stderr, "weft_worker_spawn: %s\n", weft_strerror(err));
    return 1;
  }
  /* Said before the post: once posted, the worker may print first. */
  printf("main: posting \"Start calculation\"\n");
  weft_worker_post_fn(w, pack_str, "Start calculation");
  weft_set_interval(loop, 50, on_tick, NULL, &ticker);
  weft_loop_run(loop);
  printf("main: the main loop ticked %d times while the worker summed\n",
         ticks);
  weft_worker_free(w);
  err = weft_loop_free(loop);
  if (err != 0) {
    fprintf(stderr, "weft_loop_free: %s\n", weft_strerror(err));
    return 1;
  }
  return ticks > 0 ? 0 : 1;
}
