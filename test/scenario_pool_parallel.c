/* scenario_pool_parallel.c - the parallel helpers under threads (and TSan):
 * two plain threads run weft_pool_for() and weft_pool_map() on one pool at
 * the same time, with a small queue so that backpressure is waited out,
 * and a failing chunk in the middle; every index is marked exactly once,
 * every map result is in order, and the failing run reports its error
 * with nothing still running. Exit 0 on success. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

#define RANGE 3000
#define ROUNDS (UNDER_SAN ? 5 : 20)

static atomic_int running;

/* [b, e, shared]: add 1 to slot i for i in [b, e); fail on index 1234 when
 * slot RANGE holds 1 (the failing rounds). */
static int mark(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t b, e;
  weft_shared_t* sh = NULL;
  int32_t failing = 0;
  int rc = 0;
  (void)ctx;
  (void)result;
  if (weft_msg_read(arg, "IIH", &b, &e, &sh) != 0)
    return WEFT_EDECODE;
  atomic_fetch_add(&running, 1);
  weft_atomic_load32(sh, RANGE, &failing);
  for (int64_t i = b; i < e; i++) {
    if (failing && i == 1234)
      rc = WEFT_ERANGE;
    weft_atomic_add32(sh, (size_t)i, 1, NULL);
  }
  atomic_fetch_sub(&running, 1);
  weft_shared_release(sh);
  return rc;
}

static int twice(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t v;
  (void)ctx;
  if (weft_msg_read(arg, "I", &v) != 0)
    return WEFT_EDECODE;
  return weft_msg_pack(result, "I", 2 * v);
}

static weft_pool_t* pool;

static void* for_thread(void* arg) {
  (void)arg;
  for (int r = 0; r < ROUNDS; r++) {
    weft_shared_t* sh = new_shared((RANGE + 1) * sizeof(int32_t));
    int32_t* s = weft_shared_data(sh);
    bool failing = r % 3 == 2;
    int err;
    s[RANGE] = failing;
    err = weft_pool_for(pool, "mark", 0, RANGE, 1 + r * 7, sh);
    if (failing) {
      CHECK(err == WEFT_ERANGE, "round %d: %s", r, weft_err_name(err));
    } else {
      CHECK(err == 0, "round %d: %s", r, weft_err_name(err));
      for (int i = 0; i < RANGE; i++)
        CHECK(s[i] == 1, "round %d: index %d ran %d times", r, i, s[i]);
    }
    weft_shared_release(sh);
  }
  return NULL;
}

static void* map_thread(void* arg) {
  (void)arg;
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t v[50];
    weft_msg_t* res = NULL;
    const msgpack_object* o;
    packed_t p;
    int err;
    for (int i = 0; i < 50; i++)
      v[i] = (uint64_t)(r * 100 + i);
    p = packed_u64s(v, 50);
    err = weft_pool_map(pool, "twice", p.data, p.len, &res);
    CHECK(err == 0, "map round %d: %s", r, weft_err_name(err));
    o = weft_msg_object(res);
    CHECK(o != NULL && o->type == MSGPACK_OBJECT_ARRAY &&
              o->via.array.size == 50,
          "map round %d: not an array of 50", r);
    for (uint32_t i = 0; i < 50; i++)
      CHECK(obj_int(&o->via.array.ptr[i]) == (int64_t)(2 * v[i]),
            "map round %d: element %u", r, i);
    weft_msg_free(res);
  }
  return NULL;
}

int main(void) {
  weft_pool_opts_t opts;
  pthread_t a, b;
  memset(&opts, 0, sizeof opts);
  opts.name = "scn-par";
  opts.max_threads = 2;
  opts.max_queue = 4; /* Backpressure: the helpers wait it out. */
  CHECK(weft_pool_new(&pool, &opts) == 0, "weft_pool_new");
  CHECK(weft_pool_register(pool, "mark", mark, NULL) == 0, "register");
  CHECK(weft_pool_register(pool, "twice", twice, NULL) == 0, "register");
  CHECK(pthread_create(&a, NULL, for_thread, NULL) == 0, "pthread_create");
  CHECK(pthread_create(&b, NULL, map_thread, NULL) == 0, "pthread_create");
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  CHECK(atomic_load(&running) == 0, "a chunk still runs");
  CHECK(weft_pool_close(pool) == 0, "weft_pool_close");
  printf("scenario_pool_parallel: ok\n");
  return 0;
}
