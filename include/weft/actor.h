/* actor.h - light actors: a behaviour function, its state and a mailbox,
 * many of them run on a few scheduler threads (M:N), with ask, links,
 * monitors, a registry and timers (Erlang's processes, CAF's actors).
 *
 * A *system* owns a fixed set of scheduler threads (default: one per CPU).
 * Each scheduler is an ordinary weft worker: its own thread, loop and heap,
 * so a behaviour may use the loop's timers and I/O
 * (weft_actor_loop()). An actor is scheduled when a message reaches its
 * empty mailbox and then runs on one scheduler at a time, one message at a
 * time, up to a batch of messages per turn (opts.batch, default 100)
 * before the scheduler moves on to the next runnable actor (fairness). A
 * scheduler that runs out of actors advertises itself idle; a busy one
 * that has actors waiting hands them to it (work is requested by the idle
 * and given by the busy: the run queue is the scheduler loop's own queue,
 * whose one consumer cannot be stolen from). An idle scheduler spins
 * briefly, then parks in its loop's poll and costs no CPU.
 *
 * Addresses. An actor is known by a weft_actor_id: a slot index and the
 * slot's generation. The id stays safe to use after the actor is gone: a
 * send to it returns WEFT_EDEADACTOR and touches nothing of the dead
 * actor; a slot reused by a later actor has a new generation, so mail for
 * its predecessor never reaches it. Ids are process-wide; 0
 * (WEFT_ACTOR_NONE) is never an actor.
 *
 * Messages are weft messages (weft/msg.h): one msgpack value, copied;
 * owned buffers moved; shared buffers by reference. A behaviour reads them
 * as a port's message handler does (weft_msg_object(), weft_msg_read(),
 * weft_msg_take_*(), weft_msg_keep()). Messages from one sender (one actor,
 * or one thread outside the actors) to one actor arrive in the order sent.
 * Ports cannot be sent to actors (WEFT_EINVAL): a port belongs to a loop,
 * an actor to no loop in particular.
 *
 * Failure (Erlang's model). A behaviour that returns a negative code ends
 * its actor with that code as its exit reason; so does weft_actor_stop()
 * with a reason, a mailbox past the actor's limit
 * (WEFT_EMAILBOXFULL) and an exit signal from a linked actor. Reason 0
 * is a normal end. The failure of an actor never takes its scheduler or
 * another actor down, except through links. Linked actors fail together:
 * when one ends with a reason other than 0, each linked actor that does
 * not trap exits ends with the same reason; one that traps exits gets an
 * EXIT signal as a message instead (also for a normal end). A monitor
 * gets one DOWN signal when its target ends, with the reason. An actor
 * on another node (weft/actor_remote.h) that cannot be reached any more
 * (its node went down, or the connection closed for good) ends, as its
 * links and monitors here see it, with WEFT_ENOTCONNECTED (Erlang's
 * noconnection).
 *
 * Memory: a system owns its actors; an actor's state belongs to the caller
 * who spawned it and is handed back to opts.on_stop (if given) when the
 * actor ends, on the scheduler it ended on. */
#ifndef WEFT_ACTOR_H
#define WEFT_ACTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <msgpack.h>

#include "weft/common.h"
#include "weft/loop.h"
#include "weft/request.h"

typedef struct weft_actor_system_s weft_actor_system_t;
/* The running actor, as its behaviour sees it ("self"). Valid only during
 * the call that got it (a behaviour, an ask callback, on_stop). */
typedef struct weft_actor_s weft_actor_t;
typedef uint64_t weft_actor_id;
#define WEFT_ACTOR_NONE ((weft_actor_id)0)

/* A behaviour: handle one message. `msg` is valid for the call (keep it
 * with weft_msg_keep()); a request (weft_actor_ask(), weft_actor_call())
 * is answered with weft_msg_reply() or weft_msg_take_reply() as on a
 * port. Signals (DOWN, EXIT) come here too: weft_actor_signal() tells
 * them apart. Return 0 to go on, or a negative code: the actor ends with
 * it as its exit reason (its links and monitors hear of it).
 * Runs on: a scheduler thread; one call at a time per actor. */
typedef int (*weft_behaviour_fn)(weft_actor_t* self,
                                 void* state,
                                 weft_msg_t* msg);

/* The actor ended with `reason` (0: normal). Free or keep `state` here.
 * The actor can no longer send or receive. Runs on: the scheduler the
 * actor ended on, or the thread of weft_actor_system_free() for actors
 * still alive then (with reason WEFT_ECLOSED). */
typedef void (*weft_actor_stop_fn)(void* state, int reason);

/* --- Systems ------------------------------------------------------------ */

typedef struct weft_actor_system_opts_s {
  /* Scheduler threads; 0: one per CPU (uv_available_parallelism()),
   * at most 64. */
  unsigned schedulers;
  /* Messages an actor handles per turn before others on its scheduler get
   * theirs; 0: 100. */
  unsigned batch;
  /* A mailbox holding more than this many messages is over its high-water
   * mark: an actor sending to it is muted (not run again) until it drains
   * below `low_water`; a sender that is not an actor gets
   * WEFT_EMAILBOXFULL. 0: 4096. `low_water` 0: half of it. */
  size_t high_water;
  size_t low_water;
  /* Messages that reach no actor (sent to an id whose actor ended while
   * they were queued) are counted and, if set, handed here: `msg` is
   * valid for the call. Runs on: the thread where the actor ended.
   * Sends refused at once (WEFT_EDEADACTOR) are not dead letters: their
   * sender is told. */
  void (*dead_letter)(void* arg, weft_actor_id to, weft_msg_t* msg);
  void* dead_letter_arg;
  /* Scheduler thread names: "<name>-<n>"; NULL: "weft-actor". */
  const char* name;
} weft_actor_system_opts_t;

/* Start a system and its scheduler threads. `opts` may be NULL.
 * Returns 0, WEFT_EINVAL (NULL out, more than 64 schedulers, low_water >
 * high_water), WEFT_ENOMEM, WEFT_ESPAWN. On error `*out` is NULL.
 * Ownership: the caller frees it with weft_actor_system_free().
 * Thread: any (also one that runs no loop). */
WEFT_EXTERN int weft_actor_system_new(weft_actor_system_t** out,
                                      const weft_actor_system_opts_t* opts);

/* Wait until the system has no live actor, or `timeout_ms` passed (<= 0:
 * no limit). Returns 0, WEFT_ETIMEDOUT, WEFT_EINVAL (NULL), WEFT_EBUSY
 * (called on one of the system's scheduler threads: it would wait for
 * itself). Thread: any but the system's schedulers. */
WEFT_EXTERN int weft_actor_system_wait(weft_actor_system_t* sys,
                                       int64_t timeout_ms);

/* Stop the schedulers, end every actor still alive (its on_stop runs on
 * the calling thread with WEFT_ECLOSED; its queued messages are freed, a
 * request among them answered WEFT_ECLOSED), then answer WEFT_ECLOSED the
 * reply handles taken in turns that neither a behaviour nor an on_stop
 * answered or freed (they must not be used after), free the system. Ids of its
 * actors answer WEFT_EDEADACTOR afterwards. Accepts NULL (returns 0).
 * Returns 0 or WEFT_EBUSY (called on one of its scheduler threads:
 * nothing happens). Thread: any but the system's schedulers. */
WEFT_EXTERN int weft_actor_system_free(weft_actor_system_t* sys);

/* Live actors of the system (a snapshot). Thread: any. */
WEFT_EXTERN size_t weft_actor_system_count(const weft_actor_system_t* sys);

/* Dead letters counted so far (see opts.dead_letter). Thread: any. */
WEFT_EXTERN uint64_t weft_actor_system_dead_letters(
    const weft_actor_system_t* sys);

/* --- Spawning ------------------------------------------------------------- */

/* opts.flags: trap exits from the start (see weft_actor_trap_exits()). */
#define WEFT_ACTOR_TRAP_EXIT 1u

typedef struct weft_actor_opts_s {
  /* Register the actor under this name (copied); the spawn fails with
   * WEFT_EEXIST if the name is taken. NULL: no name. */
  const char* name;
  weft_actor_stop_fn on_stop;
  /* End the actor with WEFT_EMAILBOXFULL when its mailbox holds more than
   * this many messages (checked at each turn). 0: no limit (the system's
   * high-water mark still mutes senders). */
  size_t mailbox_limit;
  /* Link the new actor to this one before it can run (Erlang's
   * spawn_link): no window in which one could end unseen. Inside a
   * behaviour, `self`'s id links to the caller. 0: none. */
  weft_actor_id link;
  unsigned flags; /* WEFT_ACTOR_TRAP_EXIT */
} weft_actor_opts_t;

/* Spawn an actor running `fn` with `state` (may be NULL). It runs only
 * when a message comes. `opts` may be NULL.
 * Returns 0 and `*out` (may be NULL), or WEFT_EINVAL (NULL sys or fn),
 * WEFT_ECLOSED (the system is being freed), WEFT_EEXIST (name taken),
 * WEFT_EDEADACTOR (opts.link names an actor that has ended: the new actor
 * is not started), WEFT_ENOMEM. On error on_stop does not run: `state`
 * stays the caller's.
 * Thread: any. Inside a behaviour the new actor is first queued on the
 * caller's scheduler. */
WEFT_EXTERN int weft_actor_spawn(weft_actor_system_t* sys,
                                 weft_behaviour_fn fn,
                                 void* state,
                                 const weft_actor_opts_t* opts,
                                 weft_actor_id* out);

/* --- Sending -------------------------------------------------------------- */

/* Send `len` pre-packed bytes (one msgpack value, copied) to `to`.
 * Returns 0 (queued: it will be handled, or be a dead letter if the actor
 * ends first), WEFT_EDEADACTOR (no such actor: it ended, or never was),
 * WEFT_EMAILBOXFULL (the sender is not an actor and the mailbox is over
 * the high-water mark: nothing sent; try again later), WEFT_EINVAL (NULL
 * bytes with len > 0), WEFT_EMSGSIZE (over WEFT_MSG_DEFAULT_LIMIT),
 * WEFT_ETOODEEP, WEFT_ENOMEM. An actor sending to a mailbox over the mark
 * gets 0 and is muted after its current message (see
 * weft_actor_system_opts_t.high_water).
 * Thread: any. Inside a behaviour the message carries the sender
 * (weft_actor_sender()). Messages from one sender to one actor arrive in
 * the order sent, with the sender's signals (weft_actor_exit(), links,
 * monitors) in their place among them. Inside a behaviour, small values
 * (15 bytes or fewer, nothing transferred) sent one after another to the
 * same actor after a first one are batched: they are queued when the
 * batch fills, when the behaviour sends anything to another actor, or
 * when it returns (docs/actors.md, "Small messages and batches"). */
WEFT_EXTERN int weft_actor_send(weft_actor_id to,
                                const void* bytes,
                                size_t len);
/* weft_actor_send() for threads outside the actors that would rather wait
 * than get WEFT_EMAILBOXFULL: while the mailbox is over the high-water
 * mark, sleep (no CPU) until the actor has drained below it, for at most
 * `timeout_ms` in all (0 or less: no limit). Returns as weft_actor_send()
 * (WEFT_EMAILBOXFULL only when the time ran out); WEFT_EBUSY inside a
 * behaviour or on a scheduler thread (an actor is muted instead).
 * Thread: any but the system's schedulers. */
WEFT_EXTERN int weft_actor_send_wait(weft_actor_id to,
                                     const void* bytes,
                                     size_t len,
                                     int64_t timeout_ms);
/* Pack straight into the message: `pack` packs one value. Returns as
 * weft_actor_send(), plus WEFT_EPACK or `pack`'s own negative code. */
WEFT_EXTERN int weft_actor_send_fn(weft_actor_id to,
                                   int (*pack)(msgpack_packer* pk, void* arg),
                                   void* arg);
/* Send a built message (weft_msg_new()) with its buffers and shared
 * buffers. On 0 the actor owns it and `*msg` is NULL; on error nothing
 * moved and the caller keeps it. Returns as weft_actor_send(), plus
 * WEFT_EINVAL (NULL, posted, or carrying a port), WEFT_EDECODE (nothing
 * packed), the transfer errors of weft_port_post_msg(). */
WEFT_EXTERN int weft_actor_send_msg(weft_actor_id to, weft_msg_t** msg);
/* Send the values of a format string (weft/format.h). */
WEFT_EXTERN int weft_actor_send_fmt(weft_actor_id to, const char* fmt, ...);

/* --- Asking --------------------------------------------------------------- */

/* The outcome of an ask: `status` 0 with `reply` (valid for the call;
 * weft_msg_keep() keeps it), or a negative code with `reply` NULL:
 * WEFT_ETIMEDOUT, WEFT_EDEADACTOR (the actor ended before answering),
 * WEFT_ENOREPLY (it handled the request without answering), the code it
 * gave weft_reply_error(), or the reason it failed or was killed with
 * (a failure on the request, or an end while it held the request's reply
 * handle). Runs once per ask. Runs on: for an actor
 * asker, its own turn (`self` and `state` are the asker's, one message at
 * a time as for its behaviour); for a loop asker (`self` NULL), its loop,
 * with `state` NULL. */
typedef void (*weft_ask_cb)(weft_actor_t* self,
                            void* state,
                            void* arg,
                            int status,
                            weft_msg_t* reply);

/* Ask `to` with `len` pre-packed bytes (one msgpack value, copied) and get
 * the reply through `cb(…, arg, …)`. `timeout_ms` > 0 bounds the wait
 * (never earlier); 0 or less: no limit. A reply that comes after the
 * timeout is dropped and counted (weft_request_late_replies()).
 * `self` is the asking actor (inside its behaviour or ask callback), or
 * NULL for code on a weft loop that is not an actor's (the callback then
 * runs on that loop, which the pending ask keeps alive).
 * Returns 0 (cb runs exactly once, never inside this call), or with
 * nothing sent: WEFT_EINVAL (NULL cb, bytes or len 0), WEFT_EDECODE (not
 * one msgpack value), WEFT_EDEADACTOR, WEFT_EMAILBOXFULL (as for a send),
 * WEFT_ENOLOOP (`self` NULL on a thread without a loop: use
 * weft_actor_call()), WEFT_EMSGSIZE, WEFT_ETOODEEP, WEFT_ENOMEM.
 * Thread: `self`'s behaviour, or the owner of a weft loop. */
WEFT_EXTERN int weft_actor_ask(weft_actor_t* self,
                               weft_actor_id to,
                               const void* bytes,
                               size_t len,
                               int64_t timeout_ms,
                               weft_ask_cb cb,
                               void* arg);

/* Ask and wait, for code outside the actors (a plain main, a thread with
 * no loop): blocks the calling thread (spin briefly, then park) until the
 * reply, an error or the timeout (> 0; 0 or less: none). A mailbox over
 * its high-water mark is waited on within the same timeout, as
 * weft_actor_send_wait() does (never WEFT_EMAILBOXFULL).
 * Returns 0 and `*reply` (the caller frees it with weft_msg_free()), or
 * the codes of weft_ask_cb's `status` and weft_actor_ask()'s; WEFT_EBUSY
 * when called from a behaviour (it would block a scheduler: use
 * weft_actor_ask()). Thread: any but a scheduler's. */
WEFT_EXTERN int weft_actor_call(weft_actor_id to,
                                const void* bytes,
                                size_t len,
                                int64_t timeout_ms,
                                weft_msg_t** reply);

/* --- Inside a behaviour --------------------------------------------------- */

/* The actor's own id. 0 for NULL. Thread: the actor's turn. */
WEFT_EXTERN weft_actor_id weft_actor_self(const weft_actor_t* self);
/* Its system. Thread: the actor's turn. */
WEFT_EXTERN weft_actor_system_t* weft_actor_system(const weft_actor_t* self);
/* The loop of the scheduler running the actor now: for timers and I/O
 * whose callbacks need not run as the actor (the actor may run on another
 * scheduler later; use weft_actor_send_after() for timers that are
 * messages). Thread: the actor's turn. */
WEFT_EXTERN weft_loop_t* weft_actor_loop(const weft_actor_t* self);
/* The actor that sent `msg`, or WEFT_ACTOR_NONE (sent from outside the
 * actors, or by weft itself: signals, timers). Thread: the holder. */
WEFT_EXTERN weft_actor_id weft_actor_sender(const weft_msg_t* msg);

/* End the actor after the current message with `reason` (0: normal).
 * Returns 0 or WEFT_EINVAL (NULL). Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_stop(weft_actor_t* self, int reason);

/* Send an exit signal to `to` (Erlang's exit/2): with `reason` 0 a
 * trapping actor gets an EXIT message and another ignores it; with
 * another reason a trapping actor gets the message and another ends with
 * that reason; WEFT_EKILLED ends it whether it traps or not.
 * Returns 0, WEFT_EDEADACTOR, WEFT_ENOMEM. Thread: any. */
WEFT_EXTERN int weft_actor_exit(weft_actor_id to, int reason);

/* --- Links, monitors, signals -------------------------------------------- */

/* Link `self` and `other` (both ways; linking twice is one link). If
 * `other` has ended already, `self` gets its EXIT with reason
 * WEFT_EDEADACTOR (as Erlang's noproc), as if it had ended then.
 * Returns 0, WEFT_EINVAL (NULL, or `other` is `self`), WEFT_ENOMEM.
 * Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_link(weft_actor_t* self, weft_actor_id other);
/* Remove the link both ways; no EXIT comes from it afterwards. Returns 0
 * (also when there was none), WEFT_EINVAL. Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_unlink(weft_actor_t* self, weft_actor_id other);

/* Watch `target`: `self` gets one DOWN signal when it ends, with the
 * reason (WEFT_EDEADACTOR if it had ended already). `*ref` identifies the
 * monitor (never 0, never reused). Returns 0, WEFT_EINVAL (NULL self or
 * ref), WEFT_ENOMEM. Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_monitor(weft_actor_t* self,
                                   weft_actor_id target,
                                   uint64_t* ref);
/* Stop watching: no DOWN of `ref` is delivered after this call, even one
 * already queued. Returns 0, WEFT_EINVAL (NULL, or not a monitor of
 * `self`'s). Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_demonitor(weft_actor_t* self, uint64_t ref);

/* Whether exit signals from links come as EXIT messages (true) or end the
 * actor (false, the default). Returns 0 or WEFT_EINVAL. Thread: the
 * actor's turn. */
WEFT_EXTERN int weft_actor_trap_exits(weft_actor_t* self, bool on);

/* What kind of message a behaviour got. */
typedef enum {
  WEFT_SIGNAL_NONE = 0, /* An ordinary message. */
  WEFT_SIGNAL_DOWN = 1, /* A monitored actor ended. */
  WEFT_SIGNAL_EXIT = 2, /* A linked actor ended (trapping exits), or
                         * weft_actor_exit() was called on this actor. */
  WEFT_SIGNAL_TIMER = 3 /* Not used: timer messages are ordinary. */
} weft_signal_kind;

typedef struct weft_signal_s {
  weft_signal_kind kind;
  weft_actor_id from; /* The actor that ended (or that sent the exit). */
  int reason;         /* Its exit reason; 0 is normal. */
  uint64_t ref;       /* DOWN: the monitor's ref. */
} weft_signal_t;

/* Which signal `msg` is (WEFT_SIGNAL_NONE for an ordinary message; then
 * `out` is zeroed). `out` may be NULL. A signal's value is also a plain
 * msgpack array: ["DOWN", from, ref, reason] or ["EXIT", from, reason].
 * Thread: the holder. */
WEFT_EXTERN weft_signal_kind weft_actor_signal(const weft_msg_t* msg,
                                               weft_signal_t* out);

/* --- Registry ------------------------------------------------------------- */

/* Register `id` under `name` (copied) in its system; the name is removed
 * when the actor ends. An actor has at most one name. Returns 0,
 * WEFT_EINVAL (NULL, empty name, or the actor has a name already),
 * WEFT_EEXIST (the name is taken), WEFT_EDEADACTOR, WEFT_ENOMEM.
 * Thread: any. */
WEFT_EXTERN int weft_actor_register(weft_actor_system_t* sys,
                                    const char* name,
                                    weft_actor_id id);
/* The actor registered under `name`, or WEFT_ACTOR_NONE. Thread: any. */
WEFT_EXTERN weft_actor_id weft_actor_whereis(weft_actor_system_t* sys,
                                             const char* name);
/* Remove `name`. Returns 0, WEFT_EINVAL (NULL), WEFT_ENOENT (not
 * registered). Thread: any. */
WEFT_EXTERN int weft_actor_unregister(weft_actor_system_t* sys,
                                      const char* name);

/* --- Timers --------------------------------------------------------------- */

/* Send `len` pre-packed bytes (copied now) to `self` after `ms`
 * milliseconds (0 means 1), and with `every` set, again every `ms` until
 * cancelled or the actor ends. The message comes as an ordinary message
 * with no sender; it never comes earlier than `ms` after the call.
 * `*id` (may be NULL) names the timer for weft_actor_cancel_timer().
 * Returns 0, WEFT_EINVAL (NULL self, or bytes NULL with len > 0),
 * WEFT_EDECODE, WEFT_ENOMEM. Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_send_after(weft_actor_t* self,
                                      uint64_t ms,
                                      bool every,
                                      const void* bytes,
                                      size_t len,
                                      uint64_t* id);
/* Cancel a timer of `self`'s: no message of it is delivered after this
 * call, even one already queued. Returns 0, WEFT_EINVAL (NULL, or not a
 * live timer of `self`'s: fired one-shot timers are gone).
 * Thread: the actor's turn. */
WEFT_EXTERN int weft_actor_cancel_timer(weft_actor_t* self, uint64_t id);

#endif /* WEFT_ACTOR_H */
