/* fuzz_worker_data.c - foreign bytes as environment data
 * (weft_set_environment_data) and as workerData (weft_worker_spawn): both
 * refuse anything but exactly one msgpack value (WEFT_EDECODE); a worker
 * spawned with accepted bytes sees them decoded (weft_worker_data) and
 * its environment snapshot holds the same bytes. */
#include <stdatomic.h>

#include "fuzz_common.h"

typedef struct {
  const uint8_t* data;
  size_t size;
  atomic_int ok;
} ctx_t;

static void entry(weft_loop_t* loop, void* arg) {
  ctx_t* c = arg;
  const msgpack_object* o = weft_worker_data();
  const void* env;
  size_t len;
  (void)loop;
  FUZZ_CHECK(o != NULL);
  fuzz_sink += fuzz_walk(o, NULL, NULL);
  FUZZ_CHECK(weft_get_environment_data("fuzz", &env, &len) == 0);
  FUZZ_CHECK(len == c->size && memcmp(env, c->data, len) == 0);
  atomic_store(&c->ok, 1);
}

static int exit_code;

static void on_exit_event(weft_worker_t* w, int code) {
  (void)w;
  exit_code = code;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft_loop_t* loop = fuzz_loop();
  weft_worker_opts_t opts = {0};
  weft_worker_t* w = NULL;
  ctx_t c = {data, size, 0};
  int env, spawn;
  if (size == 0)
    return 0;
  env = weft_set_environment_data("fuzz", data, size);
  FUZZ_CHECK(fuzz_decode_code_ok(env));
  FUZZ_CHECK(env == weft__msgpack_validate(data, size));
  opts.data = data;
  opts.data_len = size;
  opts.arg = &c;
  opts.events.exit = on_exit_event;
  spawn = weft_worker_spawn(&w, loop, entry, &opts);
  FUZZ_CHECK(spawn == env);
  if (spawn == 0) {
    exit_code = -1;
    FUZZ_CHECK(weft_loop_run(loop) == 0);
    FUZZ_CHECK(exit_code == 0 && atomic_load(&c.ok));
    weft_worker_free(w);
  } else {
    FUZZ_CHECK(w == NULL);
  }
  weft_set_environment_data("fuzz", NULL, 0);
  return 0;
}
