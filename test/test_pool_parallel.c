/* test_pool_parallel.c - Criterion suite for the parallel helpers of
 * weft/pool.h: weft_pool_for() runs every chunk of a range exactly once
 * (chunk sizes 1, odd, default, the whole range and bigger), an empty
 * range runs nothing, a failing chunk gives the first error only after
 * every submitted chunk settled, the shared buffer reaches every chunk as
 * the same memory; weft_pool_map() keeps input order, moves buffers in
 * results, and reports errors; bad input gets its named error. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(pool_parallel, .timeout = 60);

#define RANGE 1000

/* Chunks run (every task call of the "mark" task). */
static atomic_int chunks_run;
/* Chunk functions running right now, and the most seen at once. */
static atomic_int running;
/* The data pointer each chunk saw for its shared buffer (all equal). */
static _Atomic(void*) seen_data;
static atomic_int seen_other_data;
/* The largest chunk seen. */
static atomic_llong biggest;

static void reset(void) {
  atomic_store(&chunks_run, 0);
  atomic_store(&running, 0);
  atomic_store(&seen_data, NULL);
  atomic_store(&seen_other_data, 0);
  atomic_store(&biggest, 0);
}

/* "mark": [b, e, shared]: add 1 to int32 slot (i - base) for each i in
 * [b, e), where base is the int32 in slot RANGE + 1 (the range's start
 * may be negative). */
static int mark(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t b, e, i;
  weft_shared_t* sh = NULL;
  int32_t base = 0;
  void* expect = NULL;
  (void)ctx;
  (void)result;
  if (weft_msg_read(arg, "IIH", &b, &e, &sh) != 0)
    return WEFT_EDECODE;
  atomic_fetch_add(&chunks_run, 1);
  if (!atomic_compare_exchange_strong(&seen_data, &expect,
                                      weft_shared_data(sh)) &&
      expect != weft_shared_data(sh))
    atomic_store(&seen_other_data, 1);
  {
    long long n = (long long)(e - b), old = atomic_load(&biggest);
    while (n > old && !atomic_compare_exchange_weak(&biggest, &old, n)) {
    }
  }
  weft_atomic_load32(sh, RANGE + 1, &base);
  for (i = b; i < e; i++)
    weft_atomic_add32(sh, (size_t)(i - base), 1, NULL);
  weft_shared_release(sh);
  return 0;
}

/* "span": [b, e] without a shared buffer: counts chunks and indexes. */
static atomic_llong indexes_seen;
static atomic_llong lowest, highest; /* Smallest begin, largest end. */
static int span(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t b, e;
  (void)ctx;
  (void)result;
  if (weft_msg_read(arg, "II", &b, &e) != 0)
    return WEFT_EDECODE;
  atomic_fetch_add(&chunks_run, 1);
  /* Wraps for the widest range; that test does not read it. */
  atomic_fetch_add(&indexes_seen, (long long)((uint64_t)e - (uint64_t)b));
  {
    long long old = atomic_load(&lowest);
    while (b < old && !atomic_compare_exchange_weak(&lowest, &old, b)) {
    }
    old = atomic_load(&highest);
    while (e > old && !atomic_compare_exchange_weak(&highest, &old, e)) {
    }
  }
  return 0;
}

/* "fail": [b, e, shared]: chunks holding index 500 fail with WEFT_ERANGE,
 * those holding 900 with WEFT_EBUSY; each chunk sleeps a little so that
 * several are in flight when one fails, and marks slot 0 of the shared
 * buffer while it runs. */
static int fail(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t b, e;
  int rc = 0;
  (void)ctx;
  (void)result;
  if (weft_msg_read(arg, "II", &b, &e) != 0)
    return WEFT_EDECODE;
  atomic_fetch_add(&running, 1);
  atomic_fetch_add(&chunks_run, 1);
  sleep_ms(2);
  if (b <= 500 && 500 < e)
    rc = WEFT_ERANGE;
  else if (b <= 900 && 900 < e)
    rc = WEFT_EBUSY;
  atomic_fetch_sub(&running, 1);
  return rc;
}

/* "square": an int -> its square; a negative int fails with WEFT_ERANGE. */
static int square(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t v;
  (void)ctx;
  if (weft_msg_read(arg, "I", &v) != 0)
    return WEFT_EDECODE;
  if (v < 0)
    return WEFT_ERANGE;
  return weft_msg_pack(result, "I", v * v);
}

/* "bytes": an int n -> a transferred buffer of n bytes, each n. */
static int bytes_task(weft_task_ctx_t* ctx,
                      weft_msg_t* arg,
                      weft_msg_t* result) {
  int64_t n;
  weft_buffer_t* buf = NULL;
  void* data;
  size_t size;
  int err;
  (void)ctx;
  if (weft_msg_read(arg, "I", &n) != 0 || n < 1 || n > 255)
    return WEFT_EDECODE;
  err = weft_buffer_new(&buf, (size_t)n);
  if (err != 0)
    return err;
  weft_buffer_data(buf, &data, &size);
  memset(data, (int)n, size);
  /* The handle is the pool's from now on (pool.h): not freed here. */
  return weft_msg_pack(result, "[BI]", buf, n);
}

/* "shape": an int n -> {"n": [n, "s", nil, {}], "x": 1.5}. */
static int shape(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  int64_t n;
  msgpack_packer* pk = weft_msg_packer(result);
  (void)ctx;
  if (weft_msg_read(arg, "I", &n) != 0)
    return WEFT_EDECODE;
  msgpack_pack_map(pk, 2);
  pack_str(pk, "n");
  msgpack_pack_array(pk, 4);
  msgpack_pack_int64(pk, n);
  pack_str(pk, "s");
  msgpack_pack_nil(pk);
  msgpack_pack_map(pk, 0);
  pack_str(pk, "x");
  return msgpack_pack_double(pk, 1.5);
}

/* "nested": the helpers called from a task of their own pool (the pool is
 * the task's data) -> [for's code, map's code]. */
static int nested(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* result) {
  weft_pool_t* pool = weft_task_data(ctx);
  static const unsigned char one[] = {0x91, 0x01}; /* [1] */
  weft_msg_t* res = NULL;
  int a, b;
  (void)arg;
  a = weft_pool_for(pool, "span", 0, 10, 1, NULL);
  b = weft_pool_map(pool, "square", one, sizeof one, &res);
  weft_msg_free(res);
  return weft_msg_pack(result, "ii", a, b);
}

/* A loop-less completion callback (the pool's own thread) that calls the
 * helpers: their codes go to `ctx`. */
static atomic_int cb_codes[3];
static void nested_cb(void* ctx, int status, weft_msg_t* result) {
  weft_pool_t* pool = ctx;
  static const unsigned char one[] = {0x91, 0x01};
  weft_msg_t* res = NULL;
  (void)result;
  atomic_store(&cb_codes[0], weft_pool_for(pool, "span", 0, 10, 1, NULL));
  atomic_store(&cb_codes[1],
               weft_pool_map(pool, "square", one, sizeof one, &res));
  weft_msg_free(res);
  atomic_store(&cb_codes[2], status == 0 ? 1 : status); /* Last: done. */
}

static weft_pool_t* new_pool(void) {
  weft_pool_t* pool = NULL;
  weft_pool_opts_t opts;
  memset(&opts, 0, sizeof opts);
  opts.name = "t-par";
  opts.max_threads = 2;
  cr_assert_eq(weft_pool_new(&pool, &opts), 0);
  cr_assert_eq(weft_pool_register(pool, "mark", mark, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "span", span, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "fail", fail, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "square", square, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "bytes", bytes_task, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "shape", shape, NULL), 0);
  cr_assert_eq(weft_pool_register(pool, "nested", nested, pool), 0);
  reset();
  return pool;
}

static void close_pool(weft_pool_t* pool) {
  cr_assert_eq(weft_pool_close(pool), 0);
}

/* Run "mark" over [begin, begin + RANGE) in chunks of `chunk`; check every
 * index was marked once and the number of chunks. */
static void for_once(weft_pool_t* pool, int64_t begin, int64_t chunk) {
  weft_shared_t* sh = new_shared((RANGE + 2) * sizeof(int32_t));
  int64_t i, want;
  int32_t* slots = weft_shared_data(sh);
  reset();
  slots[RANGE + 1] = (int32_t)begin;
  cr_assert_eq(weft_pool_for(pool, "mark", begin, begin + RANGE, chunk, sh),
               0, "chunk %lld", (long long)chunk);
  for (i = 0; i < RANGE; i++)
    cr_assert_eq(slots[i], 1, "index %lld ran %d times (chunk %lld)",
                 (long long)(begin + i), slots[i], (long long)chunk);
  cr_assert_eq(slots[RANGE], 0, "a chunk ran past the end");
  if (chunk > 0) {
    want = (RANGE + chunk - 1) / chunk;
    cr_assert_eq(atomic_load(&chunks_run), want, "chunk %lld: %d chunks",
                 (long long)chunk, atomic_load(&chunks_run));
    cr_assert_leq(atomic_load(&biggest), chunk);
  } else {
    /* Default: about four per thread, and more than one. */
    cr_assert_gt(atomic_load(&chunks_run), 1);
  }
  cr_assert_eq(atomic_load(&seen_data), (void*)slots,
               "a chunk saw another copy of the shared buffer");
  cr_assert_eq(atomic_load(&seen_other_data), 0);
  weft_shared_release(sh);
}

/* --- parallel-for -------------------------------------------------------- */

Test(pool_parallel, for_runs_every_index_exactly_once_for_every_chunk_size) {
  weft_pool_t* pool = new_pool();
  static const int64_t sizes[] = {1, 7, 0, 100, 999, RANGE, RANGE + 1,
                                  5 * RANGE};
  size_t i;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for_once(pool, 0, sizes[i]);
  /* A range that starts below zero. */
  for_once(pool, -RANGE / 2, 7);
  for_once(pool, -3 * RANGE, 0);
  close_pool(pool);
}

Test(pool_parallel, for_without_shared_passes_begin_and_end) {
  weft_pool_t* pool = new_pool();
  atomic_store(&indexes_seen, 0);
  cr_assert_eq(weft_pool_for(pool, "span", 10, 10 + 12345, 100, NULL), 0);
  cr_assert_eq(atomic_load(&chunks_run), 124);
  cr_assert_eq(atomic_load(&indexes_seen), 12345);
  close_pool(pool);
}

Test(pool_parallel, for_the_widest_range) {
  weft_pool_t* pool = new_pool();
  atomic_store(&lowest, INT64_MAX);
  atomic_store(&highest, INT64_MIN);
  /* 2^64 - 1 indexes in a few chunks: no overflow in the split. */
  cr_assert_eq(weft_pool_for(pool, "span", INT64_MIN, INT64_MAX, 0, NULL), 0);
  cr_assert_gt(atomic_load(&chunks_run), 1);
  cr_assert_eq(atomic_load(&lowest), INT64_MIN);
  cr_assert_eq(atomic_load(&highest), INT64_MAX);
  /* And with a chunk size that leaves a short last chunk. */
  reset();
  atomic_store(&highest, INT64_MIN);
  cr_assert_eq(weft_pool_for(pool, "span", INT64_MIN, INT64_MAX,
                             INT64_MAX / 2, NULL),
               0);
  cr_assert_eq(atomic_load(&chunks_run), 5);
  cr_assert_eq(atomic_load(&highest), INT64_MAX);
  close_pool(pool);
}

Test(pool_parallel, for_an_empty_range_runs_nothing) {
  weft_pool_t* pool = new_pool();
  cr_assert_eq(weft_pool_for(pool, "span", 5, 5, 0, NULL), 0);
  cr_assert_eq(weft_pool_for(pool, "span", 5, 5, 3, NULL), 0);
  cr_assert_eq(atomic_load(&chunks_run), 0);
  close_pool(pool);
}

Test(pool_parallel, for_returns_the_first_error_after_every_chunk_settled) {
  weft_pool_t* pool = new_pool();
  /* Chunks of 10: chunk 50 holds 500 (ERANGE), chunk 90 holds 900
   * (EBUSY); the first in chunk order wins. */
  cr_assert_eq(weft_pool_for(pool, "fail", 0, RANGE, 10, NULL), WEFT_ERANGE);
  /* No chunk function still runs once it returned (the pool's own
   * counters may lag: a task settles before its worker is counted free). */
  cr_assert_eq(atomic_load(&running), 0);
  /* The chunks past the failing one that were not yet submitted never
   * ran: well below the 100 chunks of the range. */
  cr_assert_lt(atomic_load(&chunks_run), 100);
  cr_assert_geq(atomic_load(&chunks_run), 51);

  /* The later error alone is reported when it is the only one. */
  reset();
  cr_assert_eq(weft_pool_for(pool, "fail", 600, RANGE, 10, NULL), WEFT_EBUSY);
  cr_assert_eq(atomic_load(&running), 0);
  close_pool(pool);
}

Test(pool_parallel, for_shared_buffer_is_the_same_memory_in_every_chunk) {
  weft_pool_t* pool = new_pool();
  /* for_once checks that every chunk saw the caller's data pointer and
   * that its writes are visible to the caller: nothing was copied. */
  for_once(pool, 0, 50);
  close_pool(pool);
}

Test(pool_parallel, helpers_refuse_the_pools_own_threads) {
  weft_pool_t* pool = new_pool();
  weft_task_t* t = NULL;
  weft_msg_t* r = NULL;
  int a = 0, b = 0;
  /* From a task of the pool: its chunks could wait for its own thread. */
  cr_assert_eq(weft_pool_submit(pool, "nested", NULL, 0, NULL, NULL, &t), 0);
  cr_assert_eq(weft_task_wait(t, -1), 0);
  cr_assert_eq(weft_task_take_result(t, &r), 0);
  cr_assert_eq(weft_msg_read(r, "ii", &a, &b), 0);
  cr_assert_eq(a, WEFT_EWRONGTHREAD);
  cr_assert_eq(b, WEFT_EWRONGTHREAD);
  weft_msg_free(r);
  weft_task_free(t);
  /* From a completion callback of a loop-less submitter (the pool's own
   * thread runs it). */
  atomic_store(&cb_codes[2], 0);
  cr_assert_eq(weft_pool_submit(pool, "span", "\x92\x00\x01", 3, nested_cb,
                                pool, NULL),
               0);
  for (int i = 0; i < 20000 && atomic_load(&cb_codes[2]) == 0; i++)
    sleep_ms(1);
  cr_assert_eq(atomic_load(&cb_codes[2]), 1);
  cr_assert_eq(atomic_load(&cb_codes[0]), WEFT_EWRONGTHREAD);
  cr_assert_eq(atomic_load(&cb_codes[1]), WEFT_EWRONGTHREAD);
  close_pool(pool);
}

Test(pool_parallel, for_bad_input) {
  weft_pool_t* pool = new_pool();
  cr_assert_eq(weft_pool_for(pool, "nope", 0, 10, 1, NULL), WEFT_ENOTASK);
  cr_assert_eq(weft_pool_for(NULL, "span", 0, 10, 1, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_for(pool, NULL, 0, 10, 1, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_for(pool, "span", 10, 0, 1, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_pool_for(pool, "span", 0, 10, -1, NULL), WEFT_EINVAL);
  cr_assert_eq(atomic_load(&chunks_run), 0);
  close_pool(pool);
}

/* --- map ----------------------------------------------------------------- */

/* Pack an array of `n` ints from `v`. */
static packed_t packed_ints(const int64_t* v, size_t n) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  size_t i;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, (uint32_t)n);
  for (i = 0; i < n; i++)
    msgpack_pack_int64(&pk, v[i]);
  return packed_from(&sb);
}

Test(pool_parallel, map_keeps_input_order) {
  weft_pool_t* pool = new_pool();
  int64_t v[100];
  weft_msg_t* res = NULL;
  const msgpack_object* o;
  size_t i;
  packed_t p;
  for (i = 0; i < 100; i++)
    v[i] = (int64_t)(i * 7 % 100);
  p = packed_ints(v, 100);
  cr_assert_eq(weft_pool_map(pool, "square", p.data, p.len, &res), 0);
  cr_assert_not_null(res);
  o = weft_msg_object(res);
  cr_assert_not_null(o);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 100);
  for (i = 0; i < 100; i++)
    cr_assert_eq(obj_int(&o->via.array.ptr[i]), v[i] * v[i], "element %zu",
                 i);
  weft_msg_free(res);

  /* The empty array maps to the empty array. */
  p = packed_ints(v, 0);
  cr_assert_eq(weft_pool_map(pool, "square", p.data, p.len, &res), 0);
  o = weft_msg_object(res);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 0);
  weft_msg_free(res);
  close_pool(pool);
}

Test(pool_parallel, map_results_keep_their_shape) {
  weft_pool_t* pool = new_pool();
  int64_t v[2] = {7, -8};
  weft_msg_t* res = NULL;
  packed_t p = packed_ints(v, 2);
  const msgpack_object* o;
  size_t i;
  cr_assert_eq(weft_pool_map(pool, "shape", p.data, p.len, &res), 0);
  o = weft_msg_object(res);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 2);
  for (i = 0; i < 2; i++) {
    const msgpack_object* m = &o->via.array.ptr[i];
    int64_t n = 0;
    double x = 0;
    cr_assert_eq(m->type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(m->via.map.size, 2);
    cr_assert(obj_str_eq(&m->via.map.ptr[0].key, "n"));
    cr_assert_eq(weft_obj_read(&m->via.map.ptr[0].val, "[Isn*]", &n, NULL,
                               NULL),
                 0);
    cr_assert_eq(n, v[i]);
    cr_assert_eq(m->via.map.ptr[0].val.via.array.ptr[3].type,
                 MSGPACK_OBJECT_MAP);
    cr_assert(obj_str_eq(&m->via.map.ptr[1].key, "x"));
    cr_assert_eq(weft_obj_read(&m->via.map.ptr[1].val, "d", &x), 0);
    cr_assert_eq(x, 1.5);
  }
  weft_msg_free(res);
  close_pool(pool);
}

Test(pool_parallel, map_moves_buffers_of_the_results) {
  weft_pool_t* pool = new_pool();
  int64_t v[3] = {3, 1, 200};
  weft_msg_t* res = NULL;
  weft_buffer_t* b[3] = {NULL, NULL, NULL};
  int64_t n[3];
  packed_t p = packed_ints(v, 3);
  size_t i, k;
  cr_assert_eq(weft_pool_map(pool, "bytes", p.data, p.len, &res), 0);
  cr_assert_eq(weft_msg_read(res, "[[BI][BI][BI]]", &b[0], &n[0], &b[1],
                             &n[1], &b[2], &n[2]),
               0);
  for (i = 0; i < 3; i++) {
    void* data = NULL;
    size_t size = 0;
    cr_assert_eq(n[i], v[i]);
    cr_assert_eq(weft_buffer_data(b[i], &data, &size), 0);
    cr_assert_eq(size, (size_t)v[i]);
    for (k = 0; k < size; k++)
      cr_assert_eq(((unsigned char*)data)[k], (unsigned char)v[i]);
    weft_buffer_free(b[i]);
  }
  weft_msg_free(res);
  close_pool(pool);
}

Test(pool_parallel, map_returns_the_first_error) {
  weft_pool_t* pool = new_pool();
  int64_t v[6] = {1, 2, -3, 4, -5, 6};
  weft_msg_t* res = (weft_msg_t*)&v; /* Must be cleared. */
  packed_t p = packed_ints(v, 6);
  cr_assert_eq(weft_pool_map(pool, "square", p.data, p.len, &res),
               WEFT_ERANGE);
  cr_assert_null(res);
  close_pool(pool);
}

Test(pool_parallel, map_bad_input) {
  weft_pool_t* pool = new_pool();
  weft_msg_t* res = NULL;
  int64_t v[2] = {1, 2};
  packed_t one = packed_int(5);
  packed_t s = packed_str("not an array");
  packed_t arr = packed_ints(v, 2);
  static const unsigned char truncated[] = {0x93, 0x01}; /* [1, ...] */
  static const unsigned char two[] = {0x91, 0x01, 0x02}; /* [1] 2 */
  cr_assert_eq(weft_pool_map(pool, "square", one.data, one.len, &res),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_map(pool, "square", s.data, s.len, &res),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_map(pool, "square", truncated, sizeof truncated,
                             &res),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_map(pool, "square", two, sizeof two, &res),
               WEFT_EDECODE);
  cr_assert_eq(weft_pool_map(pool, "square", NULL, 0, &res), WEFT_EDECODE);
  cr_assert_null(res);
  cr_assert_eq(weft_pool_map(pool, "nope", arr.data, arr.len, &res),
               WEFT_ENOTASK);
  cr_assert_null(res);
  cr_assert_eq(weft_pool_map(pool, "square", arr.data, arr.len, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_pool_map(NULL, "square", arr.data, arr.len, &res),
               WEFT_EINVAL);
  cr_assert_eq(weft_pool_map(pool, NULL, arr.data, arr.len, &res),
               WEFT_EINVAL);
  close_pool(pool);
}
