/* supervisor.h - supervisors (Erlang/OTP's supervisor): an actor that
 * starts children, links to them, and restarts them by a strategy when
 * they fail, up to a restart intensity past which it fails itself.
 *
 * A child is an actor (a behaviour with a state made afresh for every
 * start), a nested supervisor, or a plain weft worker: a worker child is
 * represented by a small actor of weft's own that owns the worker (a
 * hosted worker, weft/worker.h), posts to it what is sent to it, and ends
 * with the worker: with reason 0 when the worker's entry and loop finished
 * (exit code 0), the worker's error (WEFT_EUNCAUGHT, WEFT_EHEAPLIMIT, ...)
 * when it failed, and its exit code when it called weft_worker_exit()
 * with another. So a worker is supervised exactly as an actor is.
 *
 * Restarts. A child that ends is restarted by its restart type:
 * PERMANENT always, TRANSIENT when its reason is not 0, TEMPORARY never
 * (it is removed). By the strategy: ONE_FOR_ONE restarts that child;
 * ONE_FOR_ALL ends all others (in reverse start order) and restarts all;
 * REST_FOR_ONE ends those started after it and restarts them with it. A
 * child being ended for a restart is unlinked, monitored and killed
 * (WEFT_EKILLED); the new ones start, in start order, only when every
 * ended one is gone (its DOWN came), so two incarnations of one child
 * never run at once. More than `max_restarts` restarts within `period_ms`
 * make the supervisor end all its children and then itself, with reason
 * WEFT_ERESTARTS, which its own supervisor (if any) sees.
 *
 * A supervisor ends its children when it ends (for any reason: an exit
 * signal from its parent link, weft_actor_exit(), the intensity). It
 * answers two requests (weft_actor_ask() or weft_actor_call() with the
 * value as a msgpack array of one string): ["which_children"] -> an array
 * of the children's ids in start order (0 for a child not running now),
 * and ["count_restarts"] -> the number of restarts so far. */
#ifndef WEFT_SUPERVISOR_H
#define WEFT_SUPERVISOR_H

#include <stdint.h>

#include "weft/actor.h"
#include "weft/common.h"
#include "weft/worker.h"

typedef enum {
  WEFT_ONE_FOR_ONE = 0,
  WEFT_ONE_FOR_ALL = 1,
  WEFT_REST_FOR_ONE = 2
} weft_sup_strategy;

typedef enum {
  WEFT_RESTART_PERMANENT = 0,
  WEFT_RESTART_TRANSIENT = 1,
  WEFT_RESTART_TEMPORARY = 2
} weft_restart_kind;

typedef struct weft_supervisor_opts_s weft_supervisor_opts_t;

/* One child. Exactly one of `behaviour`, `supervisor` and `worker_entry`
 * is set. Everything it points to must live as long as the supervisor
 * (the spec is copied, not what it points to, except `name`). */
typedef struct weft_child_spec_s {
  const char* name; /* For your logs; copied. May be NULL. */
  weft_restart_kind restart;
  /* An actor: at each start, its state is init(arg) (NULL init: `arg`
   * itself) and on_stop(state, reason) runs when it ends. An init that
   * returns NULL while `init` is set fails the start (WEFT_ENOMEM). */
  weft_behaviour_fn behaviour;
  void* (*init)(void* arg);
  weft_actor_stop_fn on_stop;
  void* arg;
  unsigned flags; /* weft_actor_opts_t.flags (WEFT_ACTOR_TRAP_EXIT). */
  /* A nested supervisor. */
  const weft_supervisor_opts_t* supervisor;
  /* A worker: spawned hosted, with `worker_opts` (may be NULL; its
   * `events` are weft's and ignored, its `arg` is passed as is). */
  weft_worker_entry_cb worker_entry;
  const weft_worker_opts_t* worker_opts;
} weft_child_spec_t;

struct weft_supervisor_opts_s {
  weft_sup_strategy strategy;
  /* Restart intensity: at most this many restarts within `period_ms`;
   * 0: 3 and 5000 ms. */
  unsigned max_restarts;
  uint64_t period_ms;
  const weft_child_spec_t* children; /* Copied. */
  size_t nchildren;
};

/* Spawn a supervisor in `sys` and start its children (in its first turn,
 * right after this call: a child that fails to start ends the supervisor
 * with that child's error). `aopts` (may be NULL) are the supervisor
 * actor's own options: a name, a link to a parent (a supervisor spawned
 * by another actor is usually linked to it). The supervisor always traps
 * exits. Returns 0 and `*out` (may be NULL), WEFT_EINVAL (NULL sys or
 * opts, a child with none or several of behaviour/supervisor/
 * worker_entry, a strategy or restart kind out of range), or the codes of
 * weft_actor_spawn(). Thread: any. */
WEFT_EXTERN int weft_supervisor_spawn(weft_actor_system_t* sys,
                                      const weft_supervisor_opts_t* opts,
                                      const weft_actor_opts_t* aopts,
                                      weft_actor_id* out);

/* Blocking helpers for code outside the actors (weft_actor_call()):
 * the children's ids in start order (up to `cap`; `*n` gets how many
 * children there are), and the restarts so far. Return 0 or the codes of
 * weft_actor_call() (WEFT_EDEADACTOR once the supervisor ended).
 * Thread: any but a scheduler's. */
WEFT_EXTERN int weft_supervisor_children(weft_actor_id sup,
                                         weft_actor_id* ids,
                                         size_t cap,
                                         size_t* n,
                                         int64_t timeout_ms);
WEFT_EXTERN int weft_supervisor_restarts(weft_actor_id sup,
                                         uint64_t* count,
                                         int64_t timeout_ms);

#endif /* WEFT_SUPERVISOR_H */
