/* trace_demo - worker_sum (a CPU-heavy sum on a worker while main's interval
 * keeps ticking) with a timeline trace of the run: open the file it writes
 * in Perfetto (ui.perfetto.dev, "Open trace file") or chrome://tracing.
 * docs/trace.md says what the tracks, spans and arrows are.
 *
 *   trace_demo [FILE]      (default: weft-trace-demo.json)
 *
 * The same program as samples/worker_sum.c, with weft_trace_start() before
 * the worker is spawned and weft_trace_stop() after the loop has run. */
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
    if ((i & 0xffffff) == 0 && weft_should_stop())
      return;
  }
  snprintf(reply, sizeof(reply), "Done. Sum = %llu", sum);
  weft_port_post_fn(port, pack_str, reply);
  weft_port_close(port);
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

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "weft-trace-demo.json";
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  int err;

  err = weft_trace_start(path);
  if (err != 0) {
    fprintf(stderr, "weft_trace_start(%s): %s\n", path, weft_strerror(err));
    return 1;
  }
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
  weft_worker_free(w);
  err = weft_loop_free(loop);
  if (err != 0) {
    fprintf(stderr, "weft_loop_free: %s\n", weft_strerror(err));
    return 1;
  }
  err = weft_trace_stop();
  if (err != 0) {
    fprintf(stderr, "weft_trace_stop: %s\n", weft_strerror(err));
    return 1;
  }
  printf("main: the loop ticked %d times while the worker summed\n", ticks);
  printf("trace: written to %s\n", path);
  printf("trace: open it in https://ui.perfetto.dev (Open trace file) or "
         "chrome://tracing (Load)\n");
  return ticks > 0 ? 0 : 1;
}
