/* loop.h - a thread's event loop with Node's semantics: next-tick and
 * microtask queues, timers, immediates, threadpool work and utilization. */
#ifndef WEFT_LOOP_H
#define WEFT_LOOP_H

#include <stdbool.h>
#include <uv.h>

#include "weft/common.h"

/* A task queued with weft_next_tick(), weft_queue_microtask(), a timer or an
 * immediate.
 * Runs on: the loop's thread. */
typedef void (*weft_task_cb)(weft_loop_t* loop, void* arg);

/* Identifies a timer or an immediate. 0 is never a valid id, so a zeroed
 * variable can always be passed to weft_clear_timer(). Ids are not reused
 * (a 32-bit generation guards each slot), so clearing a timer that already
 * fired is harmless.
 *
 * Every call below that takes a loop returns WEFT_EINVAL for a NULL loop
 * and WEFT_EWRONGTHREAD when called from a thread other than the loop's
 * (its owner: the thread that made it), unless it says otherwise. */
typedef uint64_t weft_timer_id;

/* Make a loop owned by the calling thread, with a libuv loop of its own.
 * A thread has at most one weft loop; workers get theirs from weft.
 * Returns 0, WEFT_EBUSY if the thread already has a loop, WEFT_EINVAL if
 * `out` is NULL, WEFT_ENOMEM (also when the system refuses the libuv
 * loop's descriptors). On error `*out` is NULL.
 * Ownership: the caller frees it with weft_loop_free().
 * Thread: any (the calling thread becomes the owner). */
WEFT_EXTERN int weft_loop_new(weft_loop_t** out);

/* Like weft_loop_new() but runs on an existing libuv loop `uv` that the
 * caller owns and drives (with uv_run() or weft_loop_run()). Messages and
 * weft's tasks are then delivered from handles weft adds to `uv`. Under a
 * plain uv_run(), call weft_loop_drain() first so the next-ticks and
 * microtasks of the code before it run (weft_loop_run() does that itself).
 * Returns 0, WEFT_EINVAL (`out` or `uv` NULL), WEFT_EBUSY (the thread
 * already has a loop), WEFT_ENOMEM. On error `*out` is NULL.
 * Ownership: `uv` stays the caller's; it must outlive the weft loop.
 * Thread: the thread that runs `uv` (it becomes the owner). */
WEFT_EXTERN int weft_loop_wrap(weft_loop_t** out, uv_loop_t* uv);

/* Close the loop. Returns WEFT_EBUSY (and changes nothing) while ports,
 * workers, timers or other weft handles on it are still open, while work
 * is pending, inside one of its callbacks or its run; run the loop until
 * weft_loop_run() returns first. A worker whose handle was freed
 * (weft_worker_free()) no longer counts, even while its thread still
 * ends. Accepts NULL (returns 0). Returns 0, WEFT_EBUSY,
 * WEFT_EWRONGTHREAD.
 * Another thread may still be inside its wake-up of this loop (a notify
 * whose waitAsync result the loop already delivered): the close waits for
 * it, and a later one finds the loop closed and makes no call on it, so the
 * libuv loop is never woken after it is closed. A worker's loop ends the
 * same way.
 * Thread: owner loop only (WEFT_EWRONGTHREAD otherwise). */
WEFT_EXTERN int weft_loop_free(weft_loop_t* loop);

/* The weft loop of the calling thread, or NULL. Inside a worker this is the
 * worker's loop. Thread: any. */
WEFT_EXTERN weft_loop_t* weft_loop_current(void);

/* The libuv loop under `loop` (for the caller's own handles). Callbacks of
 * the caller's own handles are not followed by a tick/microtask drain unless
 * they call weft_loop_drain(). NULL for a NULL loop or from another thread.
 * Thread: owner loop only. */
WEFT_EXTERN uv_loop_t* weft_loop_uv(weft_loop_t* loop);

/* Run the loop until nothing keeps it alive: no ref'd timer, immediate,
 * started port with a handler, running ref'd worker, pending work or other
 * active libuv handle. First drains the next-tick and microtask queues (the
 * "end of the main script" in Node). While messages flow the loop spins
 * briefly before it parks, so a busy loop answers in well under a
 * microsecond and an idle loop costs no CPU.
 * Returns 0, or WEFT_ETERMINATED when the worker owning it was terminated
 * or called weft_worker_exit(); WEFT_EBUSY when called inside its own run
 * (from one of its callbacks); WEFT_EINVAL, WEFT_EWRONGTHREAD.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_loop_run(weft_loop_t* loop);

/* Make weft_loop_run() return at the end of the current callback.
 * Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD. Thread: owner loop only. */
WEFT_EXTERN int weft_loop_stop(weft_loop_t* loop);

/* Queue `cb` on the next-tick queue (Node's process.nextTick). Next-ticks
 * run after the current callback, before microtasks.
 * Returns 0, WEFT_EINVAL (NULL loop or `cb`), WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM (on a worker: also over its heap limit, which ends it).
 * Thread: owner loop only. */
WEFT_EXTERN int weft_next_tick(weft_loop_t* loop, weft_task_cb cb, void* arg);

/* Queue `cb` on the microtask queue (Node's queueMicrotask / promise
 * reactions). After every macrotask callback weft runs all next-ticks, then
 * all microtasks, and repeats until both queues are empty.
 * On a worker asked to stop (weft_worker_terminate(), weft_worker_exit(), an
 * error) the drain stops between two callbacks and the rest is dropped, so
 * a chain of ticks or microtasks that never ends does not keep the worker
 * alive; it exits with code 1 when terminated (as in Node). Immediates
 * still queued are dropped the same way.
 * Returns 0, WEFT_EINVAL (NULL loop or `cb`), WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM (as for weft_next_tick()). Thread: owner loop only. */
WEFT_EXTERN int weft_queue_microtask(weft_loop_t* loop,
                                     weft_task_cb cb,
                                     void* arg);

/* Drain the next-tick and microtask queues now. For callbacks of the
 * caller's own libuv handles, which weft does not wrap. Inside a drain
 * (called from a tick or microtask) it returns at once: the outer drain
 * goes on. Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_loop_drain(weft_loop_t* loop);

/* setTimeout: run `cb` once after `ms` milliseconds. `out` may be NULL.
 * The delay counts from this call, even when the loop's thread has been
 * busy since the loop's last turn (the loop's cached clock is not used):
 * `cb` never runs earlier than `ms` milliseconds after the call, as
 * measured by uv_hrtime(). 0 means 1, as in Node.
 * Returns 0, WEFT_EINVAL (NULL loop or `cb`), WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM; on error `*out` (if given) is 0 and nothing is queued.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_set_timeout(weft_loop_t* loop,
                                 uint64_t ms,
                                 weft_task_cb cb,
                                 void* arg,
                                 weft_timer_id* out);

/* setInterval: run `cb` every `ms` milliseconds (at least 1) until cleared.
 * The first run counts from this call, as for weft_set_timeout().
 * Returns and `*out` on error: as weft_set_timeout().
 * Thread: owner loop only. */
WEFT_EXTERN int weft_set_interval(weft_loop_t* loop,
                                  uint64_t ms,
                                  weft_task_cb cb,
                                  void* arg,
                                  weft_timer_id* out);

/* setImmediate: run `cb` in the check phase, right after the loop polled
 * for I/O. Immediates queued by an immediate run on the next iteration.
 * Returns and `*out` on error: as weft_set_timeout().
 * Thread: owner loop only. */
WEFT_EXTERN int weft_set_immediate(weft_loop_t* loop,
                                   weft_task_cb cb,
                                   void* arg,
                                   weft_timer_id* out);

/* clearTimeout / clearInterval / clearImmediate. Clearing an id that
 * already fired or was cleared returns 0 and does nothing; an id that never
 * existed on this loop also returns 0 (as in Node). 0 is accepted.
 * Returns 0, WEFT_EINVAL (NULL loop), WEFT_EWRONGTHREAD.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_clear_timer(weft_loop_t* loop, weft_timer_id id);

/* timeout.ref() / unref(): whether a live timer keeps the loop alive.
 * Returns 0; WEFT_EINVAL for a NULL loop, for an id that is not live (a
 * timeout inside its own callback is no longer live) and for immediates,
 * which always keep the loop alive; WEFT_EWRONGTHREAD.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_timer_set_ref(weft_loop_t* loop,
                                   weft_timer_id id,
                                   bool ref);

/* Work for the libuv threadpool (size from UV_THREADPOOL_SIZE, default 4).
 * Runs on: a threadpool thread. It must not touch the loop. */
typedef void (*weft_work_cb)(void* arg);
/* Runs on: the loop's thread, after `work` finished. `status` is 0, or
 * WEFT_ECANCELED. Next-ticks and microtasks are drained after it. */
typedef void (*weft_after_work_cb)(weft_loop_t* loop, void* arg, int status);

/* Queue `work` on the threadpool and `after` (may be NULL) back on the
 * loop. The pending work keeps the loop alive (and weft_loop_free()
 * answers WEFT_EBUSY until `after` ran). Returns 0, WEFT_EINVAL (NULL
 * loop or `work`), WEFT_EWRONGTHREAD, WEFT_ENOMEM; on error nothing is
 * queued and `after` never runs. Thread: owner loop only. */
WEFT_EXTERN int weft_queue_work(weft_loop_t* loop,
                                weft_work_cb work,
                                weft_after_work_cb after,
                                void* arg);

/* Event-loop utilization, Node's performance.eventLoopUtilization(). Times
 * are milliseconds since the loop was made; `utilization` is
 * active / (idle + active). */
typedef struct weft_elu_s {
  double idle;        /* Time spent waiting for events: parked in the
                       * poll, or spinning briefly for messages. */
  double active;      /* Time spent running callbacks and weft itself. */
  double utilization; /* active / (idle + active), 0 when both are 0. */
} weft_elu_t;

/* Fill `out` with the loop's utilization so far; if `since` is not NULL,
 * with the difference to that earlier sample (as eventLoopUtilization(a)).
 * A worker's owner reads its worker's with weft_worker_utilization().
 * Returns 0, WEFT_EINVAL (NULL loop or `out`), WEFT_EWRONGTHREAD.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_loop_utilization(weft_loop_t* loop,
                                      const weft_elu_t* since,
                                      weft_elu_t* out);

#endif /* WEFT_LOOP_H */
