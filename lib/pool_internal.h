/* pool_internal.h - what pool.c offers the files above it (pool_parallel.c);
 * never installed. */
#ifndef WEFT_LIB_POOL_INTERNAL_H
#define WEFT_LIB_POOL_INTERNAL_H

#include <stdbool.h>

#include "weft/msg.h"
#include "weft/pool.h"

/* Whether the calling thread is one of `pool`'s own: a worker of the pool
 * or its hidden thread (where loop-less callbacks run). A call that blocks
 * until the pool's tasks are done deadlocks there (WEFT_EWRONGTHREAD).
 * Thread: any. */
bool weft__pool_on_thread(const weft_pool_t* pool);

/* A pool whose tasks run elsewhere (the distributed pool, pool_remote.c):
 * the same submit, future, callback, cancel and close, with the queue and
 * the workers replaced by the backend. The backend settles each task it
 * took exactly once with weft__pool_settle_bytes() (or a cancel does), and
 * then drops the reference it holds with weft__pool_task_release(). */
typedef struct weft__pool_backend_s {
  /* Take task `t` ("name" with argument `m`, checked, transfers not yet
   * committed: copy what is needed now). Runs under the pool's lock.
   * 0: the backend holds `t` (one reference) until it releases it; or an
   * error, nothing kept (WEFT_EQUEUEFULL counts as rejected). */
  int (*submit)(void* be, weft_task_t* t, const char* name, weft_msg_t* m);
  /* `t` was settled WEFT_ECANCELED by weft_task_cancel(): forget it (and
   * release it), and tell where it runs. Thread: the canceller's. */
  void (*cancel)(void* be, weft_task_t* t);
  /* The pool is closing (no submit comes any more): return once every
   * task settled and was released: `destroy` settles them WEFT_ECANCELED
   * at once, otherwise they run to their end. Thread: the closer's. */
  void (*end)(void* be, bool destroy);
  /* Tasks waiting to be taken, and taken (weft_pool_stats). Thread: any. */
  void (*counts)(void* be, size_t* queued, size_t* running);
} weft__pool_backend_t;

/* A pool (and its hidden thread, whose loop runs loop-less submitters'
 * callbacks and may run the backend's timers) with `backend`. opts as
 * weft_pool_new()'s, thread counts ignored; max_queue 0 is 1024.
 * Thread: any. */
int weft__pool_new_backend(weft_pool_t** out,
                           const weft_pool_opts_t* opts,
                           const weft__pool_backend_t* backend,
                           void* be);
/* The pool thread's loop (open until the pool ends). Thread: any. */
weft_loop_t* weft__pool_loop(const weft_pool_t* pool);
size_t weft__pool_max_queue(const weft_pool_t* pool);
/* Tasks the pool runs at once: max_threads * concurrent_tasks. */
unsigned weft__pool_capacity(const weft_pool_t* pool);
/* Settle `t` with `status`, and for 0 with the result `bytes` (one msgpack
 * value, copied; not one: the task fails WEFT_EDECODE). Whether this call
 * settled it (false: it had settled already). Thread: any. */
bool weft__pool_settle_bytes(weft_task_t* t,
                             int status,
                             const void* bytes,
                             size_t len);
/* Drop the backend's reference. Thread: any. */
void weft__pool_task_release(weft_task_t* t);

#endif /* WEFT_LIB_POOL_INTERNAL_H */
