/* pool_outcomes.h - the submitter's side of the distributed pool's tests
 * (test_pool_node, test_pool_durable, test_node_cluster): for each task,
 * how many times its callback ran, its status, and the [index, node name]
 * its "work" task answers, so a test checks that every task settled
 * exactly once with its own result. */
#ifndef WEFT_TEST_POOL_OUTCOMES_H
#define WEFT_TEST_POOL_OUTCOMES_H

#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdio.h>

#include <weft/weft.h>

#include "support.h"

#define MAXT 64

typedef struct {
  atomic_int settled; /* Callbacks run, all tasks. */
  atomic_int calls[MAXT];
  int status[MAXT];
  int64_t index[MAXT];
  char who[MAXT][16];
} outcomes_t;

typedef struct {
  outcomes_t* o;
  int i;
} slot_ctx_t;

static slot_ctx_t ctxs[MAXT];

/* A task's callback: `ctx` is its slot. */
static inline void on_done(void* ctx, int status, weft_msg_t* result) {
  slot_ctx_t* c = ctx;
  outcomes_t* o = c->o;
  const char* s = NULL;
  size_t len = 0;
  int64_t i = -1;
  atomic_fetch_add(&o->calls[c->i], 1);
  o->status[c->i] = status;
  if (result != NULL && weft_msg_read(result, "Is", &i, &s, &len) == 0) {
    o->index[c->i] = i;
    snprintf(o->who[c->i], sizeof(o->who[c->i]), "%.*s", (int)len, s);
  }
  atomic_fetch_add(&o->settled, 1);
}

static inline packed_t packed_ii(int64_t a, int64_t b) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 2);
  msgpack_pack_int64(&pk, a);
  msgpack_pack_int64(&pk, b);
  return packed_from(&sb);
}

/* Task `i` of `o`: "work" with [arg, ms] (the serving test apps answer
 * [arg, their name] after `ms`). */
static inline void submit_work(weft_pool_t* rp, outcomes_t* o, int i,
                               int64_t arg, int64_t ms) {
  packed_t b = packed_ii(arg, ms);
  cr_assert_lt(i, MAXT);
  ctxs[i].o = o;
  ctxs[i].i = i;
  cr_assert_eq(
      weft_pool_submit(rp, "work", b.data, b.len, on_done, &ctxs[i], NULL), 0);
}

#endif /* WEFT_TEST_POOL_OUTCOMES_H */
