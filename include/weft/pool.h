/* pool.h - a pool of worker threads running registered tasks (what Piscina
 * gives Node users): submit from a loop and get the result as a callback
 * on that loop, or from any thread and get a future to wait on, poll, or
 * be called back from.
 *
 * A task is a C function registered under a name. It takes one message
 * (one msgpack value, with transferred buffers, shared buffers and ports)
 * and returns one value or a negative error code. It runs on a pool
 * worker: an ordinary weft worker with its own thread, loop and heap, so
 * its heap limit, terminate and weft_should_stop() apply.
 *
 * Every submitted task settles exactly once: with its result, its error,
 * WEFT_ECANCELED, or the error that ended its worker (WEFT_EHEAPLIMIT,
 * WEFT_EUNCAUGHT, WEFT_ETERMINATED). A worker that ends with tasks on it
 * fails those tasks only; the pool starts a new worker and goes on.
 *
 * Memory: a pool owns its threads; a message handed to a submit moves to
 * the pool; a result handed to the submitter belongs to the submitter. */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <msgpack.h>

#include "weft/common.h"
#include "weft/loop.h"

typedef struct weft_pool_s weft_pool_t;
/* A submitted task as seen by its submitter: its future. */
typedef struct weft_task_s weft_task_t;
/* A running task as seen by its function. */
typedef struct weft_task_ctx_s weft_task_ctx_t;

/* A task function returns this to say it completes later, with
 * weft_task_done(): the task waits for I/O on its worker's loop
 * (weft_loop_current()), and the worker may run other tasks meanwhile
 * (opts.concurrent_tasks). */
#define WEFT_TASK_PENDING 1

/* A task function. `arg` is the task's argument: a received message, owned
 * by the pool (valid until the task completes; take its buffers, ports and
 * shared buffers with weft_msg_take_*() or weft_msg_read()). `result` is an
 * empty outgoing message for the result: pack at most one value into it
 * (weft_msg_packer(), weft_msg_pack(), transfers allowed); packing nothing
 * returns nil. Buffers and ports added to `result` belong to the pool from
 * then on (they travel once the function has returned): do not free those
 * handles; the pool frees them after the move, or with the result when
 * the task fails. Return 0 (done), a negative code (the task fails with
 * that code; whatever was packed is dropped), or WEFT_TASK_PENDING. A
 * result that is not one msgpack value fails the task with WEFT_EDECODE
 * (WEFT_ETOODEEP past WEFT_MSG_MAX_DEPTH); a positive code other than
 * WEFT_TASK_PENDING fails it with WEFT_EINVAL. If the worker ends while
 * the function runs (weft_report_error(), weft_worker_exit(), a heap
 * breach, destroy), the task fails with that reason instead
 * (WEFT_EUNCAUGHT, WEFT_ETERMINATED, WEFT_EHEAPLIMIT, WEFT_ECANCELED).
 * Runs on: a pool worker's thread. */
typedef int (*weft_task_fn)(weft_task_ctx_t* ctx,
                            weft_msg_t* arg,
                            weft_msg_t* result);

/* The outcome of a task. `status` is 0 with `result` set (valid for the
 * call; weft_msg_keep() keeps it), or a negative code with `result` NULL.
 * Runs on: the submitter's loop if the submitting thread had one
 * (next-ticks and microtasks drained after); otherwise on the pool's own
 * thread, right after the task settles: keep it short and thread-safe
 * there (it may submit more; it may not close the pool). A result that
 * cannot be decoded there (out of memory, the heap limit of a worker that
 * submitted) comes as that error with `result` NULL. If the submitter's
 * loop is torn down first (a worker that submitted ends), the callback is
 * dropped; the task still settles and its future sees the outcome. */
typedef void (*weft_task_done_cb)(void* ctx, int status, weft_msg_t* result);

/* Pool options; zero means default for every field. */
typedef struct weft_pool_opts_s {
  const char* name;          /* Thread names: "<name>-<n>"; "weft-pool". */
  unsigned min_threads;      /* Started at once and never retired; 0. */
  unsigned max_threads;      /* Started on demand; number of online CPUs. */
  size_t max_queue;          /* Tasks waiting for a worker (not running)
                              * past which a submit fails at once with
                              * WEFT_EQUEUEFULL; 0: 1024 per max thread;
                              * SIZE_MAX: unbounded. */
  uint64_t idle_timeout_ms;  /* A worker above min_threads idle this long
                              * retires; 0: 1000. */
  unsigned concurrent_tasks; /* Tasks one worker runs at a time (only
                              * tasks returning WEFT_TASK_PENDING overlap);
                              * 0: 1. */
  int nice_increment;        /* Added to each pool thread's nice value
                              * (Linux: per thread), 0..19; a saturated
                              * pool then yields the CPU to the loops. */
  size_t max_heap_bytes;     /* Each worker's heap limit; 0: none. */
  size_t stack_size;         /* Each worker's stack; 0: default. */
  bool sched_idle;           /* Linux SCHED_IDLE for every pool thread:
                              * they run only on CPU time that no other
                              * thread of the machine wants, and a waking
                              * loop (or any normal thread) takes a core
                              * from them at once, where nice +10 can
                              * still keep it waiting for the rest of a
                              * time slice. nice_increment is then moot.
                              * The pool starves while other work fills
                              * the cores: for a server whose loop must
                              * answer first (samples/login_api). */
} weft_pool_opts_t;

/* Make a pool and start its min_threads workers. The calling thread needs
 * no loop: the pool runs its own (a hidden thread that owns the workers).
 * Returns 0, WEFT_EINVAL (NULL out, min_threads > max_threads,
 * nice_increment outside 0..19), WEFT_ENOMEM, WEFT_ESPAWN.
 * Ownership: the caller ends it with weft_pool_close() or
 * weft_pool_destroy(). Thread: any. */
WEFT_EXTERN int weft_pool_new(weft_pool_t** out, const weft_pool_opts_t* opts);

/* Register `fn` under `name` (copied) with `data` (weft_task_data()).
 * Returns 0, WEFT_EINVAL, WEFT_EBUSY (the name is taken), WEFT_ENOMEM.
 * Thread: any. */
WEFT_EXTERN int weft_pool_register(weft_pool_t* pool,
                                   const char* name,
                                   weft_task_fn fn,
                                   void* data);

/* Submit task `name` with `len` pre-packed bytes (one msgpack value,
 * copied; NULL/0 means nil). `cb` (may be NULL) gets the outcome; if `out`
 * is not NULL it gets the task's future, which the caller frees with
 * weft_task_free(). With `cb` the result goes to `cb`; without it the
 * future holds it (weft_task_take_result()). A task pending with a
 * callback keeps the submitter's loop alive.
 * Returns 0 (the task will settle exactly once, never inside this call),
 * or, with nothing queued and no callback: WEFT_EINVAL, WEFT_ENOTASK (no
 * task is registered under `name`), WEFT_EQUEUEFULL (backpressure: the
 * queue is at max_queue), WEFT_ECLOSED (the pool is closing),
 * WEFT_EDECODE/WEFT_ETOODEEP (not one msgpack value), WEFT_EMSGSIZE,
 * WEFT_ENOMEM. Thread: any (a task function too: its callback then runs
 * on its worker's loop; a callback on the pool's thread too), but not
 * after weft_pool_close()/_destroy() returned; a submit racing with them
 * answers WEFT_ECLOSED. */
WEFT_EXTERN int weft_pool_submit(weft_pool_t* pool,
                                 const char* name,
                                 const void* bytes,
                                 size_t len,
                                 weft_task_done_cb cb,
                                 void* ctx,
                                 weft_task_t** out);
/* The same with a built message (weft_msg_new(), transfers included). On
 * 0 the pool owns it and `*msg` is NULL; on error the caller keeps it. */
WEFT_EXTERN int weft_pool_submit_msg(weft_pool_t* pool,
                                     const char* name,
                                     weft_msg_t** msg,
                                     weft_task_done_cb cb,
                                     void* ctx,
                                     weft_task_t** out);

/* --- The future (any thread that holds it) -----------------------------
 * A future stays valid until weft_task_free(), also after its pool was
 * closed or destroyed (every task has settled by then). One thread at a
 * time uses it, except weft_task_wait(), weft_task_status() and
 * weft_task_cancel(), which any number of threads may call at once. */

/* Wait until the task settled (0) or `timeout_ms` passed (WEFT_ETIMEDOUT,
 * never earlier; 0 polls, negative waits without limit). Spins briefly,
 * then sleeps on a futex. Returns WEFT_EINVAL for NULL. Several threads
 * may wait on one future. Thread: any (it blocks a loop thread's loop). */
WEFT_EXTERN int weft_task_wait(weft_task_t* t, int64_t timeout_ms);
/* The outcome without waiting: WEFT_EAGAIN while pending, then the
 * task's status (0 or its negative code). */
WEFT_EXTERN int weft_task_status(const weft_task_t* t);
/* Take the result of a task that settled with 0 and was submitted without
 * a callback. Returns 0 and sets `*out` (the caller owns it:
 * weft_msg_free() on this thread; on a worker it is charged to that
 * worker's heap), WEFT_EAGAIN (pending), the task's error code if it
 * failed, WEFT_EINVAL (taken already, or it went to a callback),
 * WEFT_ENOMEM / WEFT_EHEAPLIMIT (decoding it here failed; the result is
 * gone). */
WEFT_EXTERN int weft_task_take_result(weft_task_t* t, weft_msg_t** out);
/* Cancel (Node's AbortSignal). A queued task is removed; a running one is
 * flagged (weft_task_canceled() turns true for its function, whose
 * eventual result is dropped). Either way the task settles with
 * WEFT_ECANCELED at once: its callback runs as for any outcome. A cancel
 * racing the task's end: exactly one of them settles it.
 * Returns 0, or WEFT_EINVAL if it settled already. Thread: any. */
WEFT_EXTERN int weft_task_cancel(weft_task_t* t);
/* The task's id, unique in the process. */
WEFT_EXTERN uint64_t weft_task_id(const weft_task_t* t);
/* Release the future. A pending task goes on (its callback still runs);
 * a result not taken is freed. Accepts NULL. */
WEFT_EXTERN void weft_task_free(weft_task_t* t);

/* --- Inside a task function (the worker's thread) ---------------------- */

/* True once the task was cancelled or its pool is being destroyed. Long
 * loops check it (with weft_should_stop()) and return WEFT_ECANCELED.
 * Cheap: two relaxed loads. Thread: the task's worker. */
WEFT_EXTERN bool weft_task_canceled(const weft_task_ctx_t* ctx);
/* The `data` given to weft_pool_register(). Thread: the task's worker. */
WEFT_EXTERN void* weft_task_data(const weft_task_ctx_t* ctx);
/* Complete a task that returned WEFT_TASK_PENDING: `status` 0 sends what
 * was packed into its `result` message, a negative code fails it. `arg`
 * and `result` are freed after, and `ctx` is not valid any more (call it
 * once). Returns 0 or WEFT_EINVAL (not pending: the function has not
 * returned WEFT_TASK_PENDING yet, or another thread than its worker's).
 * A task cancelled meanwhile stays cancelled (its result is dropped).
 * Thread: the worker's loop. */
WEFT_EXTERN int weft_task_done(weft_task_ctx_t* ctx, int status);

/* --- Parallel helpers (block the calling thread) ----------------------- */

/* Parallel-for: split [begin, end) into chunks of `chunk` indexes (0: about
 * four chunks per thread) and run task `name` once per chunk, with the
 * argument [begin, end] (int64s), or [begin, end, <shared>] when `shared`
 * is not NULL (read it with weft_msg_read(arg, "IIH", ...): the chunk gets
 * its own reference, nothing is copied). Returns 0 once every chunk
 * succeeded, or the first chunk's error (in chunk order) after every
 * submitted chunk settled: a few chunks per thread are in flight at once,
 * and after an error the chunks not yet submitted never run, while those
 * submitted run to their end (none is still running when this returns, so
 * the shared buffer is the caller's again). An empty range (begin == end)
 * returns 0 and runs nothing. Also WEFT_EINVAL (NULL pool or name,
 * end < begin, chunk < 0) and the errors of weft_pool_submit();
 * backpressure is waited out, not returned.
 * Thread: any except the pool's own threads, its workers and the thread
 * its loop-less callbacks run on (WEFT_EWRONGTHREAD: the chunks could wait
 * for the very thread that waits for them); a loop thread's loop is
 * blocked meanwhile. */
WEFT_EXTERN int weft_pool_for(weft_pool_t* pool,
                              const char* name,
                              int64_t begin,
                              int64_t end,
                              int64_t chunk,
                              weft_shared_t* shared);
/* Map: `bytes` is one packed msgpack array; task `name` runs once per
 * element, with that element as its argument. On 0 `*results` is a message
 * whose value is the array of the results, in input order (the caller owns
 * it; buffers and shared buffers in the results move into it, a port in
 * a result fails the map with WEFT_EUNTRANSFERABLE). Otherwise `*results`
 * is NULL and the first error, as for weft_pool_for(); WEFT_EDECODE if
 * `bytes` is not one array (WEFT_ETOODEEP if nested too deep), WEFT_EINVAL
 * (NULL pool, name or results). Thread: as weft_pool_for(). */
WEFT_EXTERN int weft_pool_map(weft_pool_t* pool,
                              const char* name,
                              const void* bytes,
                              size_t len,
                              weft_msg_t** results);

/* --- Statistics and lifecycle ------------------------------------------ */

typedef struct weft_pool_stats_s {
  uint64_t submitted;  /* Accepted by a submit. */
  uint64_t completed;  /* Settled with 0. */
  uint64_t failed;     /* Settled with an error other than cancel. */
  uint64_t canceled;   /* Settled with WEFT_ECANCELED. */
  uint64_t rejected;   /* Submits refused with WEFT_EQUEUEFULL. */
  size_t queued;       /* Waiting for a worker now. */
  size_t running;      /* On a worker now (pending ones included; one
                        * that just settled may count for a moment). */
  unsigned threads;    /* Workers alive now (starting and idle too). */
  double wait_p50_us;  /* Submit to start, over completed and failed tasks. */
  double wait_p99_us;
  double run_p50_us;   /* Start to end on the worker. */
  double run_p99_us;
  double utilization;  /* Busy time / (alive time) summed over workers,
                        * since the pool was made, 0..1. */
} weft_pool_stats_t;

/* A snapshot of the pool's statistics. Returns 0 or WEFT_EINVAL.
 * Thread: any. */
WEFT_EXTERN int weft_pool_stats(weft_pool_t* pool, weft_pool_stats_t* out);

/* Graceful close: refuse new submits (WEFT_ECLOSED), let every queued and
 * running task finish (a worker that dies meanwhile is replaced), stop the
 * workers, free the pool. Blocks the calling thread until then (callbacks
 * meant for a loop run later on that loop; those meant for the pool's
 * thread have run). Every task has settled when it returns.
 * Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD (called from a pool thread).
 * Thread: any other thread. */
WEFT_EXTERN int weft_pool_close(weft_pool_t* pool);
/* Destroy: as close, but queued tasks settle with WEFT_ECANCELED at once
 * and running ones are cancelled (flagged, settled with WEFT_ECANCELED at
 * once) and their workers terminated. C code cannot be pre-empted: the
 * call returns once the running functions returned (weft_task_canceled()
 * and weft_should_stop() turn true for them). Thread: as
 * weft_pool_close(). */
WEFT_EXTERN int weft_pool_destroy(weft_pool_t* pool);

#endif /* WEFT_POOL_H */
