/* internal.h - what the files of actors/ share; never installed.
 *
 * Files: address (ids, slots, the table), system (schedulers and the run
 * queues), actor (spawn, send, a turn, the end), link (links, monitors,
 * exit signals), ask, timer, registry, worker_child, supervisor. They call
 * each other; actors/ calls into lib/ through lib/internal.h, and lib/
 * knows nothing of actors (scripts/check_layers.sh checks both).
 *
 * An actor is held by exactly one party at a time, which alone may run
 * or queue it: a scheduler's run queue, the scheduler running it, a
 * mailbox it is muted on, or nobody (its mailbox is empty; the send that
 * finds it so queues it). `sched` arbitrates: see actor.c. */
#ifndef WEFT_ACTORS_INTERNAL_H
#define WEFT_ACTORS_INTERNAL_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "weft/actor.h"
#include "weft/supervisor.h"
#include "../lib/internal.h"

/* --- message tags (weft_msg_t.tag; 0: plain) ----------------------------- */
enum {
  WEFT__TAG_PLAIN = 0,     /* aux: the sending actor's id, or 0. */
  WEFT__TAG_LINK = 1,      /* aux: the actor that linked to us. */
  WEFT__TAG_UNLINK = 2,    /* aux: the actor that unlinked. */
  WEFT__TAG_MONITOR = 3,   /* aux: the watcher; value [ref]. */
  WEFT__TAG_DEMONITOR = 4, /* aux: the ref. */
  WEFT__TAG_EXIT = 5,      /* A linked actor ended. aux: it; value
                            * ["EXIT", from, reason]. */
  WEFT__TAG_EXIT_SENT = 6, /* weft_actor_exit(); as TAG_EXIT. */
  WEFT__TAG_DOWN = 7,      /* aux: the ref; ["DOWN", from, ref, reason]. */
  WEFT__TAG_TIMER = 8,     /* aux: the timer's id; the user's value. */
  WEFT__TAG_ASK_REPLY = 9, /* aux: the ask's record; a kept reply (code
                            * 0) or an empty message carrying the code. */
  WEFT__TAG_UNMUTE = 10,   /* Not a message: see mute records. */
  WEFT__TAG_REMOTE = 11    /* To a proxy (remote.c): an envelope from the
                            * network; aux: an answer id, or 0. */
};

/* --- address.c ------------------------------------------------------------
 * A process-wide table of slots. A slot's `state` packs its generation
 * (high 32 bits), a DEAD bit, and the number of senders inside a push
 * (low 31 bits): a sender enters with a CAS that checks the generation and
 * the bit, so an actor is freed only after every push into it is done
 * and after no new one can start. Slot memory is never freed: an old id
 * always reads a valid slot. */
#define WEFT__SLOT_DEAD ((uint64_t)1 << 31)
#define WEFT__SLOT_NAMED ((uint64_t)1 << 30) /* Has a registry entry. */
#define WEFT__SLOT_REFS ((uint64_t)WEFT__SLOT_NAMED - 1)

typedef struct weft__slot_s {
  _Atomic uint64_t state;
  _Atomic(weft_actor_t*) actor;
} weft__slot_t;

/* A fresh slot for `a` (generation published with it): 0 and `*id`, or
 * WEFT_ENOMEM. The actor is reachable from then on. Thread: any. */
int weft__slot_alloc(weft_actor_t* a, weft_actor_id* id);
/* Enter the slot of `id`: the live actor, held until weft__slot_leave(),
 * or NULL (ended, never was, or being freed). Thread: any. */
weft_actor_t* weft__slot_enter(weft_actor_id id);
void weft__slot_leave(weft_actor_id id);
/* The owner ends its actor: no new sender gets in; returns once every
 * sender inside is out. Thread: the actor's turn. */
void weft__slot_close(weft_actor_id id);
/* Mark that `id` has a name (the caller holds its slot). Thread: any. */
void weft__slot_mark_named(weft_actor_id id);
/* Close (as weft__slot_close) and say whether the actor had a name. */
bool weft__slot_close_named(weft_actor_id id);
/* Give the slot back with the next generation. Thread: any, after close. */
void weft__slot_free(weft_actor_id id);
/* Whether `id` still names a live (not closed) actor. Thread: any. */
bool weft__slot_alive(weft_actor_id id);
/* Call `fn` on every actor of `sys` still in the table (system free, after
 * its schedulers are gone). Thread: the system's freer. */
void weft__slot_each(const weft_actor_system_t* sys,
                     void (*fn)(weft_actor_t* a, void* arg),
                     void* arg);

/* --- system.c -------------------------------------------------------------- */

/* A scheduler's ring: actors it made runnable, stealable (system.c). */
#define WEFT__RING 1024
/* A ring that holds this many actors is stolen from at once (system.c):
 * fewer are left to their scheduler, or to the poll below. Moving an
 * actor to another core makes every message to or from it cross cores
 * (a line's turn-around each), which costs more than a short turn gains:
 * Savina's Big ran in 480 ms with 64 against 600-1000 ms with 2, and
 * Fork-join throughput in 600 against 800-1900 ms (side by side, 3 runs
 * each; 16 and 32 in between, 128 no better). */
#define STEAL_MIN 64
/* A turn that has sent this many messages wakes an idle scheduler to
 * steal from its ring (system.c). */
#define STEAL_NOTIFY_SENDS 64
/* How often an idle scheduler looks for actors that wait behind a long
 * turn, while another scheduler is busy (system.c). */
#define POLL_MS 1

typedef struct weft__sched_s {
  weft_actor_system_t* sys;
  unsigned index;
  weft_worker_t* worker;
  weft_loop_t* loop; /* Set before the system is handed out. */
  weft__tracked_t tracked;  /* Its loop's teardown: timers. */
  void* timers;             /* timer.c's records on this loop. */
  weft__ready_t drain;      /* Runs the ring's actors. */
  weft_msg_t* spare;        /* Delivers light messages (actor.c); owner. */
  void* out;                /* The turn's batch of light messages, and */
  weft_actor_id out_to;     /* its receiver (actor.c); owner only. */
  bool drain_pending;       /* Owner only. */
  unsigned sends;           /* In the turn in progress; owner only. */
  weft__ready_t steal_item; /* "Come and steal", from a busy scheduler. */
  atomic_bool steal_pending;
  weft__ready_t poke; /* "Start polling" (a no-op that wakes the loop). */
  atomic_bool poke_pending;
  atomic_bool in_turn; /* A turn is under way (read by pollers). */
  atomic_bool polling; /* Idle, with a poll timer (read by wakers). */
  bool poll_armed;     /* Owner only. */
  bool seen_valid;     /* seen_top holds the last poll's fronts. */
  size_t seen_top[64]; /* Owner only: each ring's `top` at the last poll. */
  /* Consumers (any scheduler) take at `top`; the owner adds at `bottom`. */
  alignas(64) _Atomic size_t top;
  alignas(64) _Atomic size_t bottom;
  _Atomic(weft_actor_t*) ring[WEFT__RING];
} weft__sched_t;

struct weft_actor_system_s {
  unsigned nsched;
  unsigned batch;
  size_t high_water;
  size_t low_water;
  void (*dead_letter)(void* arg, weft_actor_id to, weft_msg_t* msg);
  void* dead_letter_arg;
  weft__sched_t* scheds;
  /* Bit i: scheduler i has nothing to run and takes actors (see
   * weft__sched_idle). */
  alignas(64) _Atomic uint64_t idle_mask;
  atomic_uint next; /* Round robin for actors queued from outside. */
  atomic_bool closing;
  _Atomic uint64_t dead_letters;
  /* Reply handles taken on the schedulers and not answered yet: those of
   * actors that ended (weft__actor_replies) and those taken outside a turn
   * (an ask's callback). Answered WEFT_ECLOSED after the actors' on_stops
   * at the system's end (request.c's lists, diverted from the scheduler
   * workers' own, which their loops' ends answer before the on_stops). */
  weft__replies_t replies;
  /* weft_actor_send_wait(): threads waiting for room in a mailbox, and
   * the word they sleep on, bumped when an actor with waiters around ends
   * a turn at or below the high-water mark (actor.c). */
  alignas(64) atomic_int room_waiters;
  _Atomic uint32_t room_seq;
  alignas(64) _Atomic size_t live; /* Actors alive. */
  uv_mutex_t lock;                 /* live == 0 waits, online, exits. */
  uv_cond_t cond;
  unsigned spawned;  /* Scheduler workers made. */
  unsigned online;   /* Their loops up (scheds[i].loop set). */
  unsigned started;  /* Online when the stop began. */
  unsigned quiesced; /* In their stop task. */
  unsigned exited;
  void* registry; /* registry.c, under its own lock. */
  uv_mutex_t reg_lock;
  char name[12];
};

/* The scheduler the calling thread is, or NULL. Thread: any. */
weft__sched_t* weft__sched_current(void);
/* Queue the runnable actor `a` (the caller holds it; see the file
 * comment): on the calling scheduler if it is one of a's system's, unless
 * that one has work waiting and another is idle; else on an idle
 * scheduler or the next in turn. Thread: any. */
void weft__sched_queue(weft_actor_t* a);
/* A turn starts (`start`) or ends on `s` / a behaviour on `s` sent a
 * message: the stealing heuristics (system.c). Thread: the scheduler. */
void weft__sched_turn(weft__sched_t* s, bool start);
void weft__sched_sent(weft__sched_t* s);
/* An actor live count step, and the wake-up of weft_actor_system_wait()
 * at 0. Thread: any. */
void weft__system_live(weft_actor_system_t* sys, int delta);

/* --- actor.c --------------------------------------------------------------- */

/* Cold parts of an actor, made on first use: links, monitors, timers,
 * name, limits. Thread: the actor's turn (the owner) only. */
typedef struct weft__actor_x_s {
  weft_actor_id* links;
  size_t nlinks, caplinks;
  struct weft__watch_s* watchers; /* Who monitors us. */
  size_t nwatchers, capwatchers;
  uint64_t* monitors; /* Refs of our monitors ([ref, target] pairs). */
  size_t nmonitors, capmonitors;
  void** timers; /* timer.c's records. */
  size_t ntimers, captimers;
  weft_actor_stop_fn on_stop;
  size_t mailbox_limit;
  /* Reply handles taken in its turns and not answered yet (request.c's
   * list, under its lock): its end settles their calls and gives them to
   * the system's. `took_replies`: one was ever listed (owner only; the end
   * then looks at the list). */
  weft__replies_t replies;
  bool took_replies;
} weft__actor_x_t;

typedef struct weft__watch_s {
  weft_actor_id who;
  uint64_t ref;
} weft__watch_t;

/* Actor flags (owner only). */
enum {
  WEFT__A_TRAP = 1u,     /* Trap exits. */
  WEFT__A_STOP = 2u,     /* End after this message (`reason`). */
  WEFT__A_LINKING = 4u   /* Spawned with a link not yet confirmed. */
};

/* Values of `sched`. */
enum {
  WEFT__RUN_IDLE = 0, /* Nobody holds it: the next send queues it. */
  WEFT__RUN_HELD = 1  /* Queued, running, or muted. */
};

/* Values of `muted`. */
enum { WEFT__MUTE_NO = 0, WEFT__MUTE_YES = 1 };

/* 128 bytes with mimalloc's size classes (checked in test_actor). */
struct weft_actor_s {
  weft__ready_t ready;     /* On a scheduler loop's run queue. */
  weft__mpsc_small_t mbox; /* Messages (weft_msg_t.node). */
  atomic_uint sched;       /* WEFT__RUN_*. */
  atomic_uint muted;       /* WEFT__MUTE_*; set by the actor, cleared by
                            * whoever unmutes it (CAS). */
  /* The mailbox's length is pushed - popped: senders count their pushes,
   * the owner publishes its pops after each turn. Both on the line the
   * push writes anyway. */
  _Atomic uint64_t pushed;
  _Atomic uint64_t popped; /* Written by the owner only. */
  uint8_t flags;           /* WEFT__A_*; owner only. */
  int32_t reason;           /* With WEFT__A_STOP. */
  weft_behaviour_fn fn;
  void* state;
  weft_actor_system_t* sys;
  weft_actor_id id;
  weft__actor_x_t* x;
  /* Actors muted on us (mute records, pushed by any thread, taken whole
   * by the owner). */
  _Atomic(void*) mutees;
  /* Owner only, during a turn: an overloaded actor we sent to. */
  weft_actor_id mute_on;
};

/* The actor whose turn the calling thread runs, or NULL. Thread: any. */
weft_actor_t* weft__actor_current(void);
/* Where a reply handle taken on a scheduler thread goes (request.c's
 * weft__replies_divert): the running actor's list, else its system's. */
weft__replies_t* weft__actor_replies(void);
/* The cold part, made if needed (NULL: out of memory). Owner only. */
weft__actor_x_t* weft__actor_x(weft_actor_t* a);
/* Push `msg` (tag and aux set by the caller) into `to`'s mailbox and queue
 * the actor if that push made it runnable. `from_outside`: a sender that
 * is not an actor, refused over the high-water mark; actors and weft's
 * own signals are never refused for load. 0, WEFT_EDEADACTOR or
 * WEFT_EMAILBOXFULL; on an error the caller still owns `msg`.
 * Thread: any. */
int weft__actor_push(weft_actor_id to, weft_msg_t* msg, bool from_outside);
/* The same, and `*over` (may be NULL): the push left the mailbox over the
 * high-water mark. */
int weft__actor_push_load(weft_actor_id to, weft_msg_t* msg,
                          bool from_outside, bool* over);
/* Sleep until `to`'s mailbox is at or below the high-water mark (0), or
 * the deadline (uv_hrtime(); negative: none) passes (WEFT_EMAILBOXFULL),
 * or the actor is gone (WEFT_EDEADACTOR). May return 0 early (woken by
 * another actor's drain): callers try again. Thread: not a scheduler. */
int weft__actor_wait_room(weft_actor_id to, int64_t deadline);
/* weft's own message (a signal, a timer, a start): weft__actor_msg() and
 * weft__actor_push() as weft's, never refused for load; freed if it could
 * not go. 0, WEFT_EDEADACTOR or WEFT_ENOMEM. Thread: any. */
int weft__actor_tell(weft_actor_id to, int tag, uint64_t aux,
                     const void* bytes, size_t len);
/* A message of `len` bytes (copied), tag and aux set. NULL: no memory. */
weft_msg_t* weft__actor_msg(int tag, uint64_t aux, const void* bytes,
                            size_t len);
/* End `a` now (from its turn): links, monitors, mailbox, timers, name,
 * on_stop, slot. Thread: the actor's turn. */
void weft__actor_end(weft_actor_t* a, int reason);
/* Free what is left of an actor when its system is freed (no scheduler
 * runs any more). Thread: the system's freer. */
void weft__actor_destroy(weft_actor_t* a, void* arg);
/* Run a turn of `a` (its ready item). */
int weft__actor_run(weft_loop_t* loop, weft__ready_t* r);
/* Free a scheduler's spare message (its loop's teardown). */
void weft__actor_sched_end(weft__sched_t* s);

/* --- link.c ---------------------------------------------------------------- */

/* Handle a signal message in `a`'s turn; returns true when it was one
 * (consumed: freed or delivered). May mark `a` to stop. */
bool weft__link_signal(weft_actor_t* a, weft_msg_t* msg, bool* deliver);
/* At the end of `a`: tell links and watchers, and answer link/monitor
 * signals still queued. */
void weft__link_end(weft_actor_t* a, int reason);
/* The signals still queued at the end: answer them (true: consumed). */
bool weft__link_queued_at_end(weft_actor_t* a, weft_msg_t* msg, int reason);
/* Record a link both ways for a spawn: the child side. */
int weft__link_add(weft_actor_t* a, weft_actor_id other);
/* A monitor for a remote watcher (remote.c): a ref, the MONITOR signal
 * from any thread, and the watcher's record in its turn. */
uint64_t weft__link_new_ref(void);
void weft__link_monitor_tell(weft_actor_id watcher, weft_actor_id target,
                             uint64_t ref);
int weft__link_monitor_record(weft_actor_t* a, uint64_t ref,
                              weft_actor_id target);

/* --- ask.c ----------------------------------------------------------------- */

/* Deliver an ask outcome in the asker's turn (tag ASK_REPLY); frees it
 * unless the callback kept the reply. */
void weft__ask_deliver(weft_actor_t* a, weft_msg_t* msg);
/* An outcome for an asker that ended: free it. */
void weft__ask_drop(weft_msg_t* msg);

/* --- timer.c --------------------------------------------------------------- */

/* A timer message in the owner's turn: true when it is to be delivered
 * (the timer is live); a cancelled one is freed. */
bool weft__timer_arrived(weft_actor_t* a, weft_msg_t* msg);
/* Cancel every timer of the ending actor. */
void weft__timer_end(weft_actor_t* a);
/* A scheduler loop's teardown: release the records of its timers. */
void weft__timer_sched_end(weft__sched_t* s);

/* --- worker_child.c -------------------------------------------------------- */

/* Spawn the actor that stands for a worker child of `spec`, linked to
 * `link`; it starts the worker in its first turn. 0 and `*out`, or the
 * codes of weft_actor_spawn(). Thread: the supervisor's turn. */
int weft__worker_child_spawn(weft_actor_system_t* sys,
                             const weft_child_spec_t* spec,
                             weft_actor_id link,
                             weft_actor_id* out);

/* --- registry.c ------------------------------------------------------------ */

int weft__registry_init(weft_actor_system_t* sys);
void weft__registry_free(weft_actor_system_t* sys);
/* Remove the name of `id`, if it has one. Thread: any. */
void weft__registry_drop_id(weft_actor_system_t* sys, weft_actor_id id);

/* --- remote.c -------------------------------------------------------------- */

/* Send `*msg` (sealed, with transfers) to proxy `to`: its buffers as
 * copies of their bytes, shared buffers refused (WEFT_ENOTLOCAL); as
 * weft_actor_send_msg() otherwise. */
int weft__remote_send_flat(weft_actor_id to, weft_msg_t** msg);
/* Detach the system from its node and forget its behaviours (system
 * free, before its schedulers stop). */
void weft__remote_system_free(const weft_actor_system_t* sys);

#endif /* WEFT_ACTORS_INTERNAL_H */
