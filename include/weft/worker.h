/* worker.h - workers: OS threads with their own loop and heap, spawned from
 * a C entry function (Node's worker_threads.Worker).
 *
 * C code cannot be pre-empted. weft_worker_terminate() takes effect when the
 * worker next returns to its loop, or when its code calls
 * weft_should_stop(), which long CPU loops should call now and then; a
 * blocking weft_atomic_wait32/64 on the worker is woken (WEFT_ETERMINATED).
 * A worker that ends (its loop torn down) while a child of its own still
 * runs terminates the child and waits for it, blocked (no CPU), before it
 * goes: no worker outlives its owner. A child whose handle was freed
 * (weft_worker_free()) is not waited for: it was told to stop then, and
 * its thread ends on its own without touching its owner's loop or heap.
 *
 * A thread that runs no loop spawns a *hosted* worker (owner NULL): weft
 * owns it on a hidden loop of its own (see weft_worker_spawn()). */
#ifndef WEFT_WORKER_H
#define WEFT_WORKER_H

#include <stdbool.h>
#include <msgpack.h>

#include "weft/common.h"
#include "weft/loop.h"

/* The worker's entry: the "script". `loop` is the worker's own loop; `arg`
 * is opts.arg. After it returns the loop runs until nothing keeps it alive,
 * weft_worker_exit() is called, or the worker is terminated.
 * Runs on: the worker's thread. */
typedef void (*weft_worker_entry_cb)(weft_loop_t* loop, void* arg);

/* Events on the owner's loop. Each may be NULL. `exit` is always last.
 * Runs on: the owner loop's thread (for a hosted worker, spawned with no
 * owner: weft's host thread, see weft_worker_spawn()); ticks/microtasks
 * drained after. */
typedef struct weft_worker_events_s {
  /* The worker's thread started and is about to run its entry. */
  void (*online)(weft_worker_t* w);
  /* A message the worker posted on its parent port; valid for the call
   * (weft_msg_keep() to keep it). */
  void (*message)(weft_worker_t* w, weft_msg_t* msg);
  /* A message from the worker did not decode (`err` is WEFT_EDECODE). */
  void (*messageerror)(weft_worker_t* w, int err);
  /* The worker ended with an error: WEFT_EUNCAUGHT (weft_report_error()),
   * WEFT_EHEAPLIMIT (heap limit breached), WEFT_ENOMEM (its heap, loop or
   * parent port could not be made; `online` does not run then). `text` is
   * valid for the call. */
  void (*error)(weft_worker_t* w, int err, const char* text);
  /* The thread is gone; `exit_code` is the code passed to weft_worker_exit(),
   * 0 after a normal end, 1 after terminate or an error. */
  void (*exit)(weft_worker_t* w, int exit_code);
} weft_worker_events_t;

/* opts.flags: run on a thread made for this worker alone. By default a
 * worker may run on a thread that ran an earlier, finished worker (weft
 * keeps a few such threads for a second, which makes a spawn several times
 * cheaper); every worker still gets its own loop, heap and name, but the
 * thread-local variables of your own code keep their values from the last
 * worker on that thread. */
#define WEFT_WORKER_FRESH_THREAD 1u

/* Worker options; zero means default for every field. */
typedef struct weft_worker_opts_s {
  const char* name;         /* Thread name (15 bytes shown); "weft-worker". */
  const void* data;         /* workerData: one packed msgpack value, */
  size_t data_len;          /* copied in; NULL/0 means nil. */
  void* arg;                /* Passed to the entry as is, never copied. */
  size_t max_heap_bytes;    /* Heap limit; 0 means none. What it covers:
                             * see "The heap limit" in weft/heap.h. */
  size_t stack_size;        /* Thread stack bytes; 0: platform default. */
  size_t max_message_bytes; /* Per-message limit both ways; 0: default. */
  weft_worker_events_t events; /* Callbacks on the owner's loop. */
  void* user_data;             /* weft_worker_get_data(). */
  unsigned flags;              /* WEFT_WORKER_FRESH_THREAD. */
  /* workerData with transferables (Node's workerData + transferList): a
   * message built with weft_msg_new() (buffers, ports and shared buffers
   * added with weft_msg_add_*), instead of `data`. On 0 the spawn took it:
   * buffers are detached from the caller, ports moved, and the worker
   * reads it with weft_worker_data_msg() (weft_msg_take_*()). On error the
   * caller keeps it, unchanged. */
  weft_msg_t* data_msg;
} weft_worker_opts_t;

/* Start a worker running `entry` on its own thread, loop and heap.
 * `opts` may be NULL; it and everything it points to may be freed when the
 * call returns (data and name are copied; data_msg: see its field). The
 * environment data of the calling thread (weft_set_environment_data()) is
 * snapshot into the worker.
 *
 * `owner` is the loop whose thread gets the worker's events and makes the
 * owner calls (terminate, ref, free...). With `owner` NULL the worker is
 * *hosted*: owned by a hidden loop on a thread of weft's own, "weft-host",
 * which is started by the first such spawn and ends when its last hosted
 * worker's handle is freed. This is for threads that run no loop (a
 * plugin, a plain main): the events then run on weft's host thread, not
 * the caller's (synchronise what they share with your threads), and the
 * owner calls on a hosted worker work from any thread: each runs on the
 * host thread while the caller waits (so do not call them while holding a
 * lock that an event of that worker takes). The terminate callback runs
 * on the host thread too. ref/unref of a hosted worker change only what
 * weft_worker_has_ref() answers: the host lives while it has workers.
 *
 * Returns 0, WEFT_EINVAL (NULL `out` or `entry`; both data and data_msg;
 * a data_msg that was posted or received), WEFT_EWRONGTHREAD (`owner` is
 * not the calling thread's loop), WEFT_EDECODE (data or data_msg is not
 * one msgpack value), WEFT_ETOODEEP (it nests deeper than
 * WEFT_MSG_MAX_DEPTH), WEFT_EMSGSIZE (data_msg is over
 * max_message_bytes), data_msg's transfer errors as for a post
 * (WEFT_EDETACHED, WEFT_EUNTRANSFERABLE, WEFT_ECLOSED, WEFT_EWRONGTHREAD
 * for a port of another loop), WEFT_ENOMEM, WEFT_ESPAWN (no thread could
 * be made; for a hosted worker also the host's). On error `*out` is NULL,
 * no event will run and data_msg is the caller's, unchanged.
 * Ownership: the caller frees the handle with weft_worker_free().
 * Thread: the thread of `owner`; any thread with `owner` NULL. */
WEFT_EXTERN int weft_worker_spawn(weft_worker_t** out,
                                  weft_loop_t* owner,
                                  weft_worker_entry_cb entry,
                                  const weft_worker_opts_t* opts);

/* worker.postMessage(): copy one pre-packed msgpack value to the worker's
 * parent port. Returns 0, WEFT_ECLOSED (the worker exited or is exiting),
 * WEFT_EMSGSIZE, WEFT_ETOODEEP, WEFT_EINVAL, WEFT_ENOMEM.
 * Thread: any thread, while the handle is not freed: the owner must not
 * call weft_worker_free() concurrently with a post from another thread.
 * Once the worker exited (its exit event ran on the owner loop) a post
 * answers WEFT_ECLOSED and touches no freed memory. Messages from one
 * thread arrive in the order posted. The same rule holds for
 * weft_worker_post_fn() and weft_worker_post_msg() (whose transferred
 * ports must belong to the caller's loop: WEFT_EWRONGTHREAD). */
WEFT_EXTERN int weft_worker_post(weft_worker_t* w,
                                 const void* bytes,
                                 size_t len);
/* Pack straight into the message; see weft_port_post_fn(). Returns 0,
 * WEFT_EINVAL (NULL `w` or `pack`), WEFT_EPACK (`pack` returned a positive
 * value) or the negative code `pack` returned, WEFT_EDECODE (nothing was
 * packed), WEFT_ECLOSED, WEFT_EMSGSIZE, WEFT_ETOODEEP, WEFT_ENOMEM.
 * Thread: as weft_worker_post(). */
WEFT_EXTERN int weft_worker_post_fn(weft_worker_t* w,
                                    int (*pack)(msgpack_packer* pk, void* arg),
                                    void* arg);
/* Post a built message with its transfer list; see weft_port_post_msg().
 * On 0 the worker's side owns it and `*msg` is NULL; on error nothing moved
 * and the caller still owns it. Returns 0, WEFT_EINVAL (NULL `w`, `msg` or
 * `*msg`, or a message already posted), WEFT_EDECODE (nothing packed),
 * WEFT_ECLOSED, WEFT_EMSGSIZE, WEFT_ETOODEEP, and the transfer errors:
 * WEFT_EDETACHED, WEFT_EUNTRANSFERABLE, WEFT_EDATACLONE, and for a port
 * WEFT_ECLOSED, WEFT_EWRONGTHREAD (not the caller's loop's) or
 * WEFT_EINVAL (a parent port). Thread: as weft_worker_post(). */
WEFT_EXTERN int weft_worker_post_msg(weft_worker_t* w, weft_msg_t** msg);

/* worker.terminate(): ask the worker to stop. It stops at its next return
 * to its loop or weft_should_stop() check; a weft_atomic_wait32/64 it is
 * blocked in (or starts later) returns WEFT_ETERMINATED at once. Its exit
 * code is then 1. `cb` (may be NULL) runs on the owner's loop once the
 * thread has exited, right after the `exit` event, with the exit code.
 * While `cb` is pending it keeps the owner's loop alive, also for an
 * unref'd worker (as Node's terminate() promise resolves with 1): the
 * loop's run does not return before `cb` ran. Without `cb` an unref'd
 * worker still does not hold the loop. Terminating a worker whose exit
 * event already ran calls `cb` at once with its exit code.
 * Returns 0, WEFT_EINVAL (NULL), WEFT_EWRONGTHREAD (not the owner's
 * thread). Thread: owner loop only; any thread for a hosted worker (see
 * weft_worker_spawn()), whose `cb` then runs on the host thread. */
WEFT_EXTERN int weft_worker_terminate(weft_worker_t* w,
                                      void (*cb)(weft_worker_t* w,
                                                 int exit_code));

/* ref()/unref(): whether the running worker keeps the owner's loop alive
 * (default: yes; a pending terminate callback holds it either way).
 * Returns 0, WEFT_EINVAL (NULL, or a handle already freed),
 * WEFT_EWRONGTHREAD (not the owner's thread).
 * Thread: owner loop only; any thread for a hosted worker. */
WEFT_EXTERN int weft_worker_ref(weft_worker_t* w);
WEFT_EXTERN int weft_worker_unref(weft_worker_t* w);

/* worker.hasRef(): true while the worker runs, ref'd (weft_worker_ref()),
 * and its handle is not freed. False for NULL, and from a thread that is
 * not the owner's (except for a hosted worker, see weft_worker_spawn()).
 * Thread: owner loop only. */
WEFT_EXTERN bool weft_worker_has_ref(const weft_worker_t* w);

/* worker.performance.eventLoopUtilization(): the worker's loop's
 * utilization so far (or less `since`, an earlier sample), as
 * weft_loop_utilization() gives it on the worker itself. Times count from
 * the making of the worker's loop: its entry's run is active time.
 * Before the loop exists all three are 0; once the worker has exited, its
 * last sample stays. Returns 0 or WEFT_EINVAL (NULL `w` or `out`).
 * Thread: any, while the handle is not freed (the worker's counters are
 * read under its lock and libuv's). */
WEFT_EXTERN int weft_worker_utilization(const weft_worker_t* w,
                                        const weft_elu_t* since,
                                        weft_elu_t* out);

/* The worker's threadId (> 0; the main thread is 0). Thread: any. */
WEFT_EXTERN uint64_t weft_worker_thread_id(const weft_worker_t* w);

/* Whether the worker's exit event has run; false for NULL.
 * Thread: owner loop only; any thread for a hosted worker. */
WEFT_EXTERN bool weft_worker_exited(const weft_worker_t* w);

/* User data for the handle (also set by opts.user_data). Never touched by
 * weft. NULL `w`: set does nothing, get returns NULL. Thread: owner loop
 * only; for a hosted worker any thread, the caller ordering these calls
 * with the events that read the data (they run on the host thread). */
WEFT_EXTERN void weft_worker_set_data(weft_worker_t* w, void* data);
WEFT_EXTERN void* weft_worker_get_data(const weft_worker_t* w);

/* Release the handle. A worker still running is asked to stop (as by
 * weft_worker_terminate()) and let go of at once: no more events are
 * delivered, nothing of it keeps or holds the owner's loop, so
 * weft_loop_free() of that loop may follow right away (no run in between).
 * Its thread ends on its own, as soon as it sees the stop, and then frees
 * what is left of the worker; messages it posts meanwhile are dropped.
 * Freed inside the worker's own `exit` event or terminate callback, the
 * handle is released when that callback returns. Do not use `w`
 * afterwards (a post on it included). Accepts NULL. Thread: owner loop
 * only (a call from another thread does nothing). */
WEFT_EXTERN void weft_worker_free(weft_worker_t* w);

/* --- Inside any thread: the worker's context -------------------------- */

/* isMainThread: false on a worker thread (true on any other thread, the
 * host thread of hosted workers included). Thread: any. */
WEFT_EXTERN bool weft_is_main_thread(void);

/* threadId: the calling worker's id, 0 outside workers. Thread: any. */
WEFT_EXTERN uint64_t weft_thread_id(void);

/* parentPort: the calling worker's port to its owner, NULL outside
 * workers. Owned by weft: do not free it. Thread: any. */
WEFT_EXTERN weft_port_t* weft_parent_port(void);

/* workerData: the decoded value given at spawn (opts.data, or the value of
 * opts.data_msg; nil if none), NULL outside workers. Valid for the
 * worker's life. Thread: any. */
WEFT_EXTERN const msgpack_object* weft_worker_data(void);

/* The message given as opts.data_msg, decoded (weft_msg_object() is
 * weft_worker_data()), or NULL (none given, or outside workers). Take
 * what it carries with weft_msg_take_buffer() / _take_port() /
 * _take_shared() on the worker's thread; each buffer and port once.
 * Ownership: weft's: do not free it. It and what was not taken from it
 * are freed when the worker ends. Thread: the worker. */
WEFT_EXTERN weft_msg_t* weft_worker_data_msg(void);

/* process.exit() inside a worker: stop the worker's loop at the end of the
 * current callback; `code` becomes the exit code. Later
 * weft_atomic_wait32/64 calls on the worker return WEFT_ETERMINATED.
 * Returns WEFT_EINVAL outside a worker. Thread: worker only. */
WEFT_EXTERN int weft_worker_exit(int code);

/* An uncaught error: the worker ends (exit code 1) and its owner gets the
 * `error` event with WEFT_EUNCAUGHT and `text` (copied; NULL: "uncaught
 * error"). Returns 0, or WEFT_EINVAL outside a worker. Thread: worker. */
WEFT_EXTERN int weft_report_error(const char* text);

/* True once the calling worker was asked to stop (terminate, exit, or an
 * error). Long CPU loops call this and return when it is true. Cheap: one
 * relaxed atomic load. False outside workers. Thread: any. */
WEFT_EXTERN bool weft_should_stop(void);

/* --- Environment data (setEnvironmentData / getEnvironmentData) ------- */

/* Set `key` (copied) to one packed msgpack value (copied) for the calling
 * thread; len 0 / NULL bytes removes it. Workers spawned later by this
 * thread get a snapshot. Returns 0, WEFT_EINVAL, WEFT_EDECODE (not one
 * msgpack value), WEFT_ETOODEEP (nests deeper than WEFT_MSG_MAX_DEPTH),
 * WEFT_ENOMEM. Thread: any (applies to the calling thread). */
WEFT_EXTERN int weft_set_environment_data(const char* key,
                                          const void* bytes,
                                          size_t len);

/* Look `key` up for the calling thread. Sets `*bytes`/`*len` to a view
 * valid until the key is set again or the thread ends. Returns 0,
 * WEFT_EAGAIN if the key is not set (then NULL/0), WEFT_EINVAL (a NULL
 * argument). Thread: any. */
WEFT_EXTERN int weft_get_environment_data(const char* key,
                                          const void** bytes,
                                          size_t* len);

#endif /* WEFT_WORKER_H */
