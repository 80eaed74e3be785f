/* port.c - message ports: an MPSC mailbox per port, scheduled on its
 * loop's ready queue on the empty-to-non-empty edge, entangled in pairs,
 * transferable between loops.
 *
 * Scheduling. A producer pushes onto the port's mailbox and then reads
 * `scheduled`; only the producer that moves it from IDLE to QUEUED pushes
 * the port on its loop's ready queue (and wakes the loop if parked). While
 * the loop drains the port, `scheduled` stays QUEUED and producers only
 * push; when the mailbox runs dry (after a short wait for more), the loop
 * clears it and then looks once more, so a message pushed meanwhile is
 * either seen or schedules the port again. A port that cannot deliver (no
 * handler, no close listener: a port read with weft_port_receive()) is
 * HELD: producers leave it off the ready queue, so a loop that never runs
 * does not collect queue entries for it; setting a handler schedules it.
 *
 * Why the handshake holds under the C11 model, not only on x86: the
 * producer does (1) the mailbox push, a seq_cst exchange of the mailbox
 * head, then (2) a seq_cst load of `scheduled`; the consumer does (3) a
 * seq_cst store of IDLE to `scheduled` (HELD when it wants no schedule),
 * then (4) a seq_cst load of the mailbox head (weft__mpsc_empty). The
 * owner's moves from HELD to IDLE (settle) are a seq_cst CAS then the
 * same load, and pair the same way. All four are seq_cst, so they sit in
 * one total order S that agrees with each thread's program order. If (4)
 * misses the push, (4) precedes (1) in S, so S runs 3 < 4 < 1 < 2 and the
 * load (2) must return the IDLE of (3) or a later value: the producer (or
 * another that set QUEUED after (3)) schedules the port. With (2) relaxed
 * (as it was) nothing forbids (2) from returning the QUEUED of before (3):
 * x86's locked exchange is a full barrier and hides that, but AArch64 may
 * satisfy a later load before the exchange's store is visible, and a
 * message would sit unscheduled. A seq_cst load costs nothing on x86 (a
 * plain mov; the store side pays) and is an LDAR on AArch64, which the
 * exchange's release store cannot pass: no fence per message. A "test"
 * of this cannot fail on x86; the argument above is the check.
 *
 * Moving. `loop` says which loop consumes the mailbox. It is NULL while
 * the port travels in a message; `lock` makes "read loop, push on its ready
 * queue" atomic against a change of loop and against a loop going away.
 * A port transferred while it sits on its old loop's ready queue leaves
 * that queue entry behind as an orphan (the old loop only drops it) and
 * takes a fresh ready node, so the new owner schedules it at once.
 *
 * Transit cycles. A port travelling in a message is read only by whoever
 * takes that message. `carrier` names the port whose mailbox holds the
 * message carrying a travelling core; a post that would put a port's
 * carrier chain inside itself (A travels in D's mailbox and D is posted
 * into A's) makes garbage that nobody can ever reach: such a message is
 * freed at once, which closes and frees the ports of the cycle.
 *
 * Lifetime. `refs` counts the user's handle, the peer's link (each port of
 * a pair keeps the other alive until it is freed itself, so a post racing
 * with a close never touches freed memory), and each presence on a ready
 * queue. */
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "internal.h"
#include "mbox.h"
#include "trace.h"

/* `scheduled` doubles as a futex word (see unpark()). */
_Static_assert(sizeof(atomic_int) == sizeof(uint32_t), "futex word");

/* Messages one run of a port delivers before the port goes to the back of
 * its loop's ready queue (the loop bounds a whole drain: see READY_BATCH). */
#define PORT_BATCH 256
/* Pause iterations a drained port waits for its sender (wait_for_more),
 * and the longest it waits past them. */
#define PORT_LINGER 64
#define PORT_LINGER_NS 5000

/* Values of `scheduled`. */
enum {
  IDLE,   /* On no ready queue; the next push schedules it. */
  QUEUED, /* On its loop's ready queue or being drained. */
  HELD,   /* Cannot deliver: pushes leave it alone (see the file comment). */
  PARKED  /* HELD, and a thread blocks in weft_port_receive_wait() on this
           * word (a futex): the producer that sees it wakes that thread. */
};

typedef struct pcore_s pcore_t;

/* A port's link in a ready queue. The core has one of its own; a port
 * transferred while that one sits on its old loop's queue takes another
 * (see detach). */
typedef struct {
  weft__ready_t ready;
  pcore_t* core;
  atomic_bool queued; /* On a ready queue: set by the pusher, cleared by
                       * the loop that pops it. */
  _Atomic(weft_loop_t*) on; /* The loop whose queue it was pushed on. */
  bool orphan;        /* Left behind by a transfer: the loop that pops it
                       * only drops it. Written and read by that loop. */
  bool heap;          /* Allocated, not the core's own. */
} pnode_t;

struct pcore_s {
  pnode_t home;    /* The core's own ready node. */
  weft__mbox_t mb; /* Incoming messages; consumer: the owning loop. */
  /* Any thread. */
  alignas(64) atomic_int scheduled; /* IDLE, QUEUED or HELD. */
  atomic_int refs;
  atomic_int closed;          /* This end will take no more messages. */
  _Atomic(weft_loop_t*) loop; /* Written under `lock`. */
  uv_mutex_t lock;
  pnode_t* node;         /* The ready node in use; under `lock`. */
  pcore_t* peer;         /* Fixed at creation; see "Lifetime". */
  /* `peer` is a sink (weft__channel_new_sink; fixed before the pair is
   * shared). Here, beside `peer`, which a post reads anyway, rather than
   * read from the sink fields at the peer's end: those share a line with
   * what the peer's owner writes at every pop, and reading them from the
   * poster cost a line transfer per message (bench: ping-pong 1.28 us
   * against 0.81, one-way 5.6 M msgs/s against 11.6 M, side by side). */
  bool to_sink;
  weft_msg_t* close_msg; /* Made with the core, so a close always
                          * reaches the peer; sent once (`closed`). */
  weft_port_t* handle;   /* The handle the owner loop uses; NULL
                          * while in transit. */
  atomic_size_t max_msg; /* Set by the owner, read by posters (relaxed:
                          * a limit, not a publication). */
  pcore_t* carrier; /* In transit: the port whose mailbox holds the
                     * message carrying this one. Under transit_lock. */
  /* Backlog of a port on a limited worker (see backlog_admit). Relaxed:
   * counts only; `overflow` is ordered by the schedule handshake. */
  atomic_size_t queued;  /* Bytes of data messages in the mailbox. */
  atomic_size_t qlimit;  /* The owner heap's limit; 0: not counted. */
  atomic_int overflow;   /* A post was dropped: the owner breaches. */
  /* Set when the owner let go for good (finish_core): nobody consumes the
   * mailbox any more, so whoever pushes after that drains it (see
   * drain_released). `draining`: drains asked for and not yet done. */
  atomic_int released;
  atomic_int draining;

  /* Owner loop only. */
  weft__tracked_t tracked;
  weft_port_message_cb on_message;
  weft_port_error_cb on_error;
  weft_port_close_cb on_close;
  const weft__port_hooks_t* hooks;
  void* hook_owner;
  void* data;
  bool started;
  bool ref;
  bool holds_keepalive; /* Counted in the loop's keep-alive. */
  bool close_emitted;
  bool close_pending; /* A close event is posted to the loop. */
  bool internal;      /* A worker's parent port: weft_port_free() refuses it. */
  bool in_run;        /* Being drained by port_run (off the ready queue,
                       * `scheduled` still QUEUED). */
  bool pop_nomem;     /* The last pop found an inline message and had no
                       * memory for it: it waits first in line. */

  /* A far end that is a function (weft__channel_new_sink): what is posted
   * to it goes to `sink` on the poster's thread, never to the mailbox.
   * Fixed before the pair is shared. */
  weft__sink_fn sink;
  void* sink_ctx;
  void (*sink_free)(void* ctx); /* When the far core is freed. */
};

/* The user's handle. After a transfer the sender's handle is a husk with
 * no core: every call on it answers WEFT_ECLOSED until it is freed. Other
 * threads may post on a handle while its owner transfers it: `core` is
 * read once per call, atomically (acquire: the core's fields), and set to
 * NULL by the transfer (release). */
struct weft_port_s {
  _Atomic(pcore_t*) core;
};

static int port_run(weft_loop_t* loop, weft__ready_t* r);
static void port_teardown(weft__tracked_t* t);
static void drop_in_transit(pcore_t* p);

/* Cores alive (tests: nothing piles up). */
static atomic_long live_cores;

/* Guards `carrier` of every core (taken only for messages that carry
 * ports, never per plain message). */
static uv_mutex_t transit_lock;
static uv_once_t transit_once = UV_ONCE_INIT;

static void transit_init(void) {
  if (uv_mutex_init(&transit_lock) != 0)
    abort(); /* Cannot happen on Linux (no resources are allocated). */
}

long weft__port_live_cores(void) {
  return atomic_load_explicit(&live_cores, memory_order_relaxed);
}

static pcore_t* hcore(const weft_port_t* h) {
  return atomic_load_explicit(&((weft_port_t*)h)->core, memory_order_acquire);
}

static void core_ref(pcore_t* p) {
  atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

/* A limited worker's backlog: the bytes of data messages queued on one of
 * its ports count against its heap limit until they are popped. A post
 * that would pass the limit is dropped (as Node drops messages to a dead
 * worker) and the owner, at its next turn on this port, breaches its heap:
 * the worker ends with WEFT_EHEAPLIMIT (Node: ERR_WORKER_OUT_OF_MEMORY).
 * Cost: nothing for ports of unlimited loops (one relaxed load); one
 * atomic add and one sub per message otherwise. Thread: any. */
static bool backlog_admit_bytes(pcore_t* p, size_t limit, size_t bytes) {
  size_t before =
      atomic_fetch_add_explicit(&p->queued, bytes, memory_order_relaxed);
  if (bytes > limit || before > limit - bytes) {
    atomic_fetch_sub_explicit(&p->queued, bytes, memory_order_relaxed);
    /* seq_cst, with the exchange in schedule() and the load in
     * backlog_check() after the consumer's clear of `scheduled`: either
     * the port is scheduled again or the consumer sees the flag. */
    atomic_store_explicit(&p->overflow, 1, memory_order_seq_cst);
    return false;
  }
  return true;
}

static bool backlog_admit(pcore_t* p, weft_msg_t* m) {
  size_t limit = atomic_load_explicit(&p->qlimit, memory_order_relaxed);
  if (limit == 0 || m->kind != WEFT__MSG_DATA)
    return true;
  if (!backlog_admit_bytes(p, limit, weft__msg_bytes(m)))
    return false;
  m->backlog = true;
  return true;
}

/* A message left the mailbox. Thread: the owner loop. */
static void backlog_release(pcore_t* p, weft_msg_t* m) {
  if (m->backlog) {
    m->backlog = false;
    atomic_fetch_sub_explicit(&p->queued, weft__msg_bytes(m),
                              memory_order_relaxed);
  }
}

/* Whether a post to this port was dropped over the limit; if so the
 * calling (owner) worker's heap is breached. Thread: the owner loop. */
static bool backlog_check(pcore_t* p) {
  if (!atomic_load_explicit(&p->overflow, memory_order_seq_cst))
    return false;
  weft__heap_breach();
  return true;
}

static bool carries_ports(const weft_msg_t* m) {
  uint32_t i;
  for (i = 0; i < m->nxfer; i++) {
    if (m->xfers[i].kind == WEFT_EXT_PORT && !m->xfers[i].taken)
      return true;
  }
  return false;
}

/* `m` (carrying ports) is about to go into `y`'s mailbox: record `y` as
 * the carrier of its ports, unless that closes a cycle (`y`'s own chain of
 * carriers leads to one of them); false then, nothing recorded. */
static bool transit_enter(pcore_t* y, weft_msg_t* m) {
  uint32_t i;
  pcore_t* cur;
  bool cycle = false;
  uv_once(&transit_once, transit_init);
  uv_mutex_lock(&transit_lock);
  /* Each `carrier` names a core whose mailbox still holds the message:
   * alive until that message leaves it, which clears the link under this
   * lock first. No cycle exists already, so the walk ends. */
  for (cur = y; cur != NULL && !cycle; cur = cur->carrier) {
    for (i = 0; i < m->nxfer; i++) {
      if (m->xfers[i].kind == WEFT_EXT_PORT && m->xfers[i].obj == cur)
        cycle = true;
    }
  }
  for (i = 0; i < m->nxfer && !cycle; i++) {
    if (m->xfers[i].kind == WEFT_EXT_PORT)
      ((pcore_t*)m->xfers[i].obj)->carrier = y;
  }
  uv_mutex_unlock(&transit_lock);
  return !cycle;
}

/* `m` left a mailbox: its ports are carried by nobody's mailbox now. */
static void transit_leave(weft_msg_t* m) {
  uint32_t i;
  uv_once(&transit_once, transit_init);
  uv_mutex_lock(&transit_lock);
  for (i = 0; i < m->nxfer; i++) {
    if (m->xfers[i].kind == WEFT_EXT_PORT && !m->xfers[i].taken)
      ((pcore_t*)m->xfers[i].obj)->carrier = NULL;
  }
  uv_mutex_unlock(&transit_lock);
}

/* An inline slot's length word: the length in the low byte, then what
 * decoding it allocates (`need`: at most 24 bytes per payload byte, so 16
 * bits hold it), INLINE_SCANNED when the sender walked it (the receiver
 * then need not), and INLINE_COUNTED when it counts in the port's backlog. */
#define INLINE_COUNTED 0x80000000u
#define INLINE_SCANNED 0x40000000u
/* A trace's stamp (the start of the post's arrow: lib/trace.c) rides in
 * the slot's last 8 bytes, after a payload of at most INLINE_STAMP_AT. */
#define INLINE_STAMPED 0x20000000u
#define INLINE_STAMP_AT WEFT__MBOX_TAIL_AT
#define INLINE_LEN(w) ((w)&0xffu)
#define INLINE_NEED(w) (((w) >> 8) & 0xffffu)
_Static_assert(WEFT__MBOX_INLINE <= 0xff && 24 * WEFT__MBOX_INLINE <= 0xffff,
               "inline length word");

/* What an inline message counts in a backlog: the message it becomes. */
#define INLINE_BYTES sizeof(weft_msg_t)

/* An inline item left the mailbox: its backlog count goes (consumer). */
static void inline_release(pcore_t* p, uint32_t word) {
  if (word & INLINE_COUNTED)
    atomic_fetch_sub_explicit(&p->queued, INLINE_BYTES, memory_order_relaxed);
}

/* The kind of the oldest message, or -1 when none is ready (consumer). */
static int peek_kind(pcore_t* p) {
  weft__mbox_item_t it;
  if (!weft__mbox_peek(&p->mb, &it))
    return -1;
  if (it.node == NULL)
    return WEFT__MSG_DATA;
  return weft__container_of(it.node, weft_msg_t, node)->kind;
}

/* Pop the oldest message of `p`'s mailbox (consumer only). An inline one
 * becomes a message of this thread's (freed here too: no cross-thread
 * free); out of memory for it, NULL with `pop_nomem` set, and it stays
 * first in line. `stamp`: NULL, or where an inline message's trace stamp
 * goes (0: none) rather than into the message, for the delivery's record
 * (weft__trace_deliver()); left as it is for a message that carries its
 * own. `loop`: the owner loop, when this is its thread (its spare message
 * object may be used), or NULL. */
static weft_msg_t* pop_msg(pcore_t* p, uint64_t* stamp, weft_loop_t* loop) {
  weft__mbox_item_t it;
  weft_msg_t* m;
  p->pop_nomem = false;
  if (!weft__mbox_peek(&p->mb, &it))
    return NULL;
  if (it.node == NULL && it.data != NULL) {
    uint32_t len = INLINE_LEN(it.len);
    m = loop != NULL ? weft__msg_alloc_on(loop, WEFT__MSG_DATA, len)
                     : weft__msg_alloc(WEFT__MSG_DATA, len);
    if (m == NULL) {
      p->pop_nomem = true;
      return NULL;
    }
    memcpy(m->data, it.data, len);
    m->len = len;
    m->state = WEFT__MSG_QUEUED;
    if (it.len & INLINE_SCANNED) { /* Walked at the sender (or a scalar). */
      m->scanned = true;
      m->need = INLINE_NEED(it.len);
    }
    if (stamp != NULL) {
      *stamp = 0;
      if (it.len & INLINE_STAMPED)
        memcpy(stamp, it.data + INLINE_STAMP_AT, sizeof(*stamp));
    } else if (it.len & INLINE_STAMPED) {
      uint64_t st;
      memcpy(&st, it.data + INLINE_STAMP_AT, sizeof(st));
      weft__trace_restamp(m, st);
    }
    inline_release(p, it.len);
    weft__mbox_next(&p->mb, &it);
    return m;
  }
  weft__mbox_next(&p->mb, &it);
  m = weft__container_of(it.node, weft_msg_t, node);
  backlog_release(p, m);
  if (m->nxfer != 0 && carries_ports(m))
    transit_leave(m);
  return m;
}

static void drop_mailbox(pcore_t* p) {
  weft__mbox_item_t it;
  while (weft__mbox_peek(&p->mb, &it)) {
    if (it.node == NULL) { /* Inline: nothing to free. */
      inline_release(p, it.len);
      weft__mbox_next(&p->mb, &it);
      continue;
    }
    weft_msg_free(pop_msg(p, NULL, NULL));
  }
}

static void core_unref(pcore_t* p) {
  /* acq_rel: the last holder sees every other holder's writes. */
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* Nobody can push now: producers reach a core through its peer, which
   * held a reference until it was released itself. */
  drop_mailbox(p);
  weft__mbox_destroy(&p->mb);
  weft_msg_free(p->close_msg);
  uv_mutex_destroy(&p->lock);
  if (p->sink_free != NULL)
    p->sink_free(p->sink_ctx); /* No post can be inside the sink now. */
  if (p->node->heap)
    weft__xfree(p->node); /* Not queued: a queued node holds a reference. */
  atomic_fetch_sub_explicit(&live_cores, 1, memory_order_relaxed);
  weft__xfree(p);
}

static pcore_t* core_alloc(void) {
  pcore_t* p = weft__xalloc64(sizeof(*p));
  if (p == NULL)
    return NULL;
  p->close_msg = weft__msg_alloc(WEFT__MSG_CLOSE, 0);
  if (p->close_msg == NULL) {
    weft__xfree(p);
    return NULL;
  }
  if (weft__mbox_init(&p->mb, weft__xalloc64, weft__xfree) != 0) {
    weft_msg_free(p->close_msg);
    weft__xfree(p);
    return NULL;
  }
  if (uv_mutex_init(&p->lock) != 0) {
    weft__mbox_destroy(&p->mb);
    weft_msg_free(p->close_msg);
    weft__xfree(p);
    return NULL;
  }
  /* Not started and no close listener: nothing to schedule yet. */
  atomic_init(&p->scheduled, HELD);
  atomic_init(&p->refs, 1); /* The handle's (or the travelling message's). */
  atomic_init(&p->closed, 0);
  atomic_init(&p->loop, NULL);
  p->home.ready.run = port_run;
  p->home.core = p;
  atomic_init(&p->home.queued, false);
  atomic_init(&p->home.on, NULL);
  p->node = &p->home;
  atomic_init(&p->queued, 0);
  atomic_init(&p->qlimit, 0);
  atomic_init(&p->overflow, 0);
  atomic_init(&p->released, 0);
  atomic_init(&p->draining, 0);
  p->tracked.next = p->tracked.prev = &p->tracked;
  p->tracked.teardown = port_teardown;
  p->ref = true;
  atomic_init(&p->max_msg, WEFT_MSG_DEFAULT_LIMIT);
  atomic_fetch_add_explicit(&live_cores, 1, memory_order_relaxed);
  return p;
}

static weft_port_t* handle_new(pcore_t* p) {
  weft_port_t* h = weft__xalloc(sizeof(*h));
  if (h == NULL)
    return NULL;
  atomic_init(&h->core, p);
  p->handle = h;
  return h;
}

static weft_loop_t* core_loop(const pcore_t* p) {
  return atomic_load_explicit(&((pcore_t*)p)->loop, memory_order_acquire);
}

static bool is_closed(const pcore_t* p) {
  return atomic_load_explicit(&((pcore_t*)p)->closed, memory_order_acquire);
}

static bool deliverable(const pcore_t* p) {
  return p->started && (p->on_message != NULL || p->hooks != NULL);
}

/* What `scheduled` rests at when the port is on no ready queue. A port
 * with a close listener is scheduled for a close even without a handler
 * (both ends see 'close', as in Node). Thread: owner loop. */
static int idle_state(const pcore_t* p) {
  return deliverable(p) || p->on_close != NULL || p->close_pending ? IDLE
                                                                   : HELD;
}

/* Keep the loop alive while a handler waits for messages. */
static void update_keepalive(pcore_t* p) {
  weft_loop_t* loop = core_loop(p);
  /* A handler waiting for messages keeps the loop alive, and so does a
   * close whose event has not run yet. */
  bool want =
      p->hooks == NULL && !p->close_emitted &&
      ((p->started && p->on_message != NULL && p->ref && !is_closed(p)) ||
       p->close_pending);
  if (loop != NULL) /* A port in transit holds nothing (see detach). */
    weft__loop_hold(loop, &p->holds_keepalive, want);
}

static void attach(pcore_t* p, weft_loop_t* loop) {
  /* Runs on `loop`'s thread: its heap's limit bounds the backlog. */
  atomic_store_explicit(&p->qlimit, weft__heap_limit(), memory_order_relaxed);
  uv_mutex_lock(&p->lock);
  atomic_store_explicit(&p->loop, loop, memory_order_release);
  uv_mutex_unlock(&p->lock);
  weft__loop_track(loop, &p->tracked);
  weft__loop_handles(loop, 1);
}

/* A ready node for `p` that is on no queue: its own if free, else a new
 * one (NULL if out of memory). */
static pnode_t* spare_node(pcore_t* p) {
  pnode_t* n;
  /* acquire: pairs with the release that cleared it after its pop. */
  if (p->node != &p->home &&
      !atomic_load_explicit(&p->home.queued, memory_order_acquire))
    return &p->home;
  n = weft__xalloc(sizeof(*n));
  if (n == NULL)
    return NULL;
  n->ready.run = port_run;
  n->core = p;
  atomic_init(&n->queued, false);
  atomic_init(&n->on, NULL);
  n->orphan = false;
  n->heap = true;
  return n;
}

/* Take `p` off its loop; `moving`: to another loop (a transfer). */
static void detach(pcore_t* p, bool moving) {
  weft_loop_t* loop = core_loop(p);
  if (loop == NULL)
    return;
  weft__loop_hold(loop, &p->holds_keepalive, false);
  weft__loop_untrack(&p->tracked);
  weft__loop_handles(loop, -1);
  uv_mutex_lock(&p->lock);
  if (p->in_run) {
    /* Moved away from inside its own drain: it is on no ready queue, so
     * release `scheduled` for the new owner. */
    p->in_run = false;
    atomic_store_explicit(&p->scheduled, IDLE, memory_order_seq_cst);
  } else if (moving &&
             atomic_load_explicit(&p->node->queued, memory_order_relaxed) &&
             atomic_load_explicit(&p->node->on, memory_order_relaxed) ==
                 loop) {
    /* On this loop's ready queue (pushers set `queued` and `on` under the
     * lock, and only this thread pops it): leave that entry behind for
     * this loop to drop, and let the new owner schedule with another node,
     * without waiting for this loop to run. Out of memory: the entry stays
     * the port's, and this loop passes it on when it pops it (so does an
     * older loop that still holds such an entry). */
    pnode_t* n = spare_node(p);
    if (n != NULL) {
      p->node->orphan = true;
      p->node = n;
      atomic_store_explicit(&p->scheduled, IDLE, memory_order_seq_cst);
    }
  }
  atomic_store_explicit(&p->loop, NULL, memory_order_release);
  uv_mutex_unlock(&p->lock);
}

/* A blocking receiver announced it parks (PARKED, then it re-checked the
 * mailbox: the Dekker pair of the file comment with PARKED in the place of
 * IDLE). Only the producer whose CAS moves it back to HELD wakes it: one
 * syscall per park, none per message. seq_cst: pairs with the receiver's
 * CAS to PARKED and its mailbox check. Thread: any. */
static void unpark(pcore_t* p) {
  int parked = PARKED;
  if (atomic_compare_exchange_strong_explicit(&p->scheduled, &parked, HELD,
                                              memory_order_seq_cst,
                                              memory_order_seq_cst))
    weft__futex_wake((_Atomic uint32_t*)&p->scheduled);
}

/* Push `p` on its loop's ready queue unless it is there already or HELD. */
static void schedule(pcore_t* p) {
  weft_loop_t* loop;
  int idle = IDLE;
  /* Test first: in a stream of messages the flag is mostly QUEUED already
   * and a load keeps the cache line shared. seq_cst, not relaxed: this
   * load is (2) of the handshake in the file comment; the same load tells
   * a parked blocking receiver (PARKED): a loop consumer pays nothing for
   * that but the compare on the path that returns anyway. */
  int s = atomic_load_explicit(&p->scheduled, memory_order_seq_cst);
  if (s != IDLE) {
    if (s == PARKED)
      unpark(p);
    return;
  }
  if (!atomic_compare_exchange_strong_explicit(&p->scheduled, &idle, QUEUED,
                                               memory_order_seq_cst,
                                               memory_order_seq_cst))
    return;
  uv_mutex_lock(&p->lock);
  loop = atomic_load_explicit(&p->loop, memory_order_relaxed);
  if (loop != NULL) {
    core_ref(p); /* Held by the ready queue. */
    atomic_store_explicit(&p->node->queued, true, memory_order_relaxed);
    atomic_store_explicit(&p->node->on, loop, memory_order_relaxed);
    weft__loop_schedule(loop, &p->node->ready);
  } else {
    /* In transit or gone: whoever attaches the port schedules it. */
    atomic_store_explicit(&p->scheduled, IDLE, memory_order_seq_cst);
  }
  uv_mutex_unlock(&p->lock);
}

/* The owner changed what the port can deliver: move between IDLE and
 * HELD (unless it is QUEUED: port_run settles it), and schedule it if it
 * can act on what waits. Thread: owner loop. */
static void settle(pcore_t* p) {
  int want = idle_state(p);
  int cur = want == IDLE ? HELD : IDLE;
  atomic_compare_exchange_strong_explicit(&p->scheduled, &cur, want,
                                          memory_order_seq_cst,
                                          memory_order_seq_cst);
  if (want == IDLE && !weft__mbox_empty(&p->mb))
    schedule(p);
}

/* Free what waits in a released core's mailbox: a post that passed its
 * closed checks while the owner let go lands after the owner's last drain,
 * and would wait there until the peer is freed (a request's caller would
 * wait that long for its WEFT_ECLOSED). Every pusher that sees `released`
 * after its push asks for a drain, and so does the owner after it set
 * `released`; seq_cst on `released`, with the push's seq_cst exchange: a
 * push the owner's drain missed sees the flag. `draining` counts the
 * requests: the one that moves it from 0 drains (the mailbox's consumer
 * for that while: acq_rel moves it between threads), and goes round again
 * while more came meanwhile; the others return at once, so a drain that
 * frees messages which post elsewhere never waits on another drain. A push
 * that is half done stops a drain, but its pusher asks after it.
 * Thread: any that holds a reference to `p`. */
static void drain_released(pcore_t* p) {
  int n = 1;
  if (atomic_fetch_add_explicit(&p->draining, 1, memory_order_acq_rel) != 0)
    return;
  do {
    drop_mailbox(p);
    n = atomic_fetch_sub_explicit(&p->draining, n, memory_order_acq_rel) - n;
  } while (n != 0);
}

static void enqueue(pcore_t* p, weft_msg_t* msg) {
  if (msg->state == WEFT__MSG_BUILDING)
    msg->state = WEFT__MSG_QUEUED;
  if (!backlog_admit(p, msg)) {
    /* The owner ends (see backlog_admit). Ports it carried travel in no
     * mailbox now: clear their carrier before they are dropped. */
    if (msg->nxfer != 0 && carries_ports(msg))
      transit_leave(msg);
    weft_msg_free(msg);
    schedule(p);
    return;
  }
  WEFT__TRACE_POST(msg);
  weft__mbox_push_node(&p->mb, &msg->node);
  schedule(p);
  WEFT__TRACE_POSTED();
  if (atomic_load_explicit(&p->released, memory_order_seq_cst))
    drain_released(p);
}

void weft__port_limit_backlog(void* core, size_t limit) {
  atomic_store_explicit(&((pcore_t*)core)->qlimit, limit,
                        memory_order_relaxed);
}

void* weft__port_hold(weft_port_t* h) {
  pcore_t* p = hcore(h);
  core_ref(p);
  return p;
}

void weft__port_unhold(void* core) {
  core_unref(core);
}

void* weft__port_hold_pair(weft_port_t* h) {
  pcore_t* p = hcore(h);
  core_ref(p);
  core_ref(p->peer);
  return p;
}

void weft__core_hold_pair(void* core) {
  pcore_t* p = core;
  core_ref(p);
  core_ref(p->peer);
}

void weft__port_unhold_pair(void* core) {
  pcore_t* p = core;
  pcore_t* peer = p->peer;
  core_unref(p);
  core_unref(peer);
}

void weft__port_enqueue_core(void* core, weft_msg_t* msg) {
  enqueue(core, msg);
}

void weft__port_enqueue(weft_port_t* h, weft_msg_t* msg) {
  enqueue(hcore(h), msg);
}

/* Close this end: the peer learns after everything posted before. */
static void close_core(pcore_t* p) {
  if (atomic_exchange_explicit(&p->closed, 1, memory_order_acq_rel) == 0) {
    weft_msg_t* m = p->close_msg;
    p->close_msg = NULL;
    if (!is_closed(p->peer))
      enqueue(p->peer, m);
    else
      weft_msg_free(m);
  }
  update_keepalive(p);
}

/* The end of a core's life as somebody's port: closed, off its loop, its
 * link to the peer and its handle reference dropped. */
static void finish_core(pcore_t* p) {
  pcore_t* peer = p->peer;
  close_core(p);
  detach(p, false);
  p->handle = NULL;
  p->on_message = NULL;
  p->on_close = NULL;
  p->on_error = NULL;
  /* No consumer from here on: see drain_released(). */
  atomic_store_explicit(&p->released, 1, memory_order_seq_cst);
  drain_released(p);
  core_unref(peer); /* Our link to the peer. */
  core_unref(p);    /* The handle's reference. */
}

/* A travelling core nobody will take: nobody can read its mailbox either,
 * so what waits there goes now (ports travelling in it included), not when
 * the peer lets go. Thread: any (a core in transit has no consumer). */
static void drop_in_transit(pcore_t* p) {
  drop_mailbox(p);
  finish_core(p);
}

/* ---- creating ----------------------------------------------------------- */

static int pair(pcore_t** a, pcore_t** b) {
  *a = core_alloc();
  *b = core_alloc();
  if (*a == NULL || *b == NULL) {
    if (*a)
      core_unref(*a);
    if (*b)
      core_unref(*b);
    return WEFT_ENOMEM;
  }
  (*a)->peer = *b;
  (*b)->peer = *a;
  core_ref(*a); /* Held by b's link. */
  core_ref(*b); /* Held by a's link. */
  return 0;
}

static void unpair(pcore_t* a, pcore_t* b) {
  core_unref(a);
  core_unref(b);
  core_unref(a);
  core_unref(b);
}

int weft_channel_new(weft_loop_t* loop,
                     weft_port_t** port1,
                     weft_port_t** port2) {
  pcore_t *a, *b;
  weft_port_t *ha, *hb;
  if (port1 != NULL)
    *port1 = NULL;
  if (port2 != NULL)
    *port2 = NULL;
  if (loop == NULL || port1 == NULL || port2 == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  if (pair(&a, &b) != 0)
    return WEFT_ENOMEM;
  ha = handle_new(a);
  hb = handle_new(b);
  if (ha == NULL || hb == NULL) {
    weft__xfree(ha);
    weft__xfree(hb);
    unpair(a, b);
    return WEFT_ENOMEM;
  }
  attach(a, loop);
  attach(b, loop);
  *port1 = ha;
  *port2 = hb;
  return 0;
}

int weft__channel_new_detached(weft_loop_t* loop,
                               weft_port_t** local,
                               void** remote) {
  pcore_t *a, *b;
  if (pair(&a, &b) != 0)
    return WEFT_ENOMEM;
  *local = handle_new(a);
  if (*local == NULL) {
    unpair(a, b);
    return WEFT_ENOMEM;
  }
  attach(a, loop);
  *remote = b;
  return 0;
}

int weft__channel_new_sink(weft_loop_t* loop,
                           weft__sink_fn sink,
                           void (*sink_free)(void* ctx),
                           void* ctx,
                           weft_port_t** local,
                           void** far) {
  int err = weft__channel_new_detached(loop, local, far);
  if (err == 0) {
    pcore_t* b = *far;
    b->sink = sink;
    b->sink_free = sink_free;
    b->sink_ctx = ctx;
    b->peer->to_sink = true;
  }
  return err;
}

bool weft__sink_abandoned(void* far) {
  return is_closed(((pcore_t*)far)->peer);
}

void weft__sink_close(void* far) {
  drop_in_transit(far);
}

int weft__inbox_new(void** inbox, void** sender) {
  pcore_t *a, *b;
  if (pair(&a, &b) != 0)
    return WEFT_ENOMEM;
  *inbox = a;
  *sender = b;
  return 0;
}

void weft__port_set_hooks(weft_port_t* h,
                          const weft__port_hooks_t* hooks,
                          void* owner) {
  pcore_t* p = hcore(h);
  p->hooks = hooks;
  p->hook_owner = owner;
  p->started = true;
  /* The hook owner closes this port itself: the loop's teardown of ports
   * would come too early (a worker's exit follows its port's close). */
  weft__loop_untrack(&p->tracked);
  settle(p);
}

weft_loop_t* weft__port_loop(const weft_port_t* h) {
  pcore_t* p = hcore(h);
  return p == NULL ? NULL : core_loop(p);
}

void* weft__port_owner(const weft_port_t* h) {
  return hcore(h)->hook_owner;
}

void weft__port_untrack(weft_port_t* h) {
  weft__loop_untrack(&hcore(h)->tracked);
}

void weft__port_mark_internal(weft_port_t* h) {
  hcore(h)->internal = true;
}

/* ---- moving ------------------------------------------------------------- */

int weft__port_transferable(const weft_port_t* h) {
  const pcore_t* p = hcore(h);
  if (p == NULL)
    return WEFT_ECLOSED;
  if (p->internal)
    return WEFT_EINVAL;
  if (is_closed(p))
    return WEFT_ECLOSED;
  if (!weft__loop_on_thread(core_loop(p)))
    return WEFT_EWRONGTHREAD;
  return 0;
}

void* weft__port_detach(weft_port_t* h) {
  pcore_t* p = hcore(h);
  detach(p, true);
  p->handle = NULL;
  p->started = false;
  p->on_message = NULL;
  p->on_error = NULL;
  p->on_close = NULL;
  p->data = NULL;
  p->ref = true;
  /* The handle's reference now belongs to the message. release: a thread
   * posting on the husk reads NULL and answers WEFT_ECLOSED. */
  atomic_store_explicit(&h->core, NULL, memory_order_release);
  return p;
}

int weft__port_adopt(void* core, weft_loop_t* loop, weft_port_t** out) {
  pcore_t* p = core;
  weft_port_t* h = handle_new(p);
  if (h == NULL)
    return WEFT_ENOMEM;
  attach(p, loop);
  /* Messages that arrived while the port travelled wait for a handler
   * (weft_port_on_message() or weft_port_start() schedule the port). The
   * new owner takes over the schedule: an entry left on the old loop's
   * ready queue is an orphan (see detach). */
  settle(p);
  *out = h;
  return 0;
}

void weft__port_drop_in_transit(void* core) {
  /* The message that carried it was freed untaken: close it for good. */
  drop_in_transit(core);
}

/* ---- delivering --------------------------------------------------------- */

static void emit_close(pcore_t* p) {
  weft_loop_t* loop = core_loop(p);
  if (p->close_emitted)
    return;
  p->close_emitted = true;
  p->close_pending = false;
  update_keepalive(p);
  if (p->on_close != NULL && p->handle != NULL && loop != NULL &&
      !weft__loop_closing(loop)) {
    p->on_close(p->handle);
    weft__loop_after_callback(loop);
  }
}

static void message_error(weft_loop_t* loop, pcore_t* p, int err) {
  if (p->hooks != NULL && p->hooks->messageerror != NULL)
    p->hooks->messageerror(p->handle, err);
  else if (p->on_error != NULL)
    p->on_error(p->handle, err);
  weft__loop_after_callback(loop);
}

/* A worker's control message (online, error, exit) goes to weft's hooks;
 * a port without them has no use for it. */
static void control(pcore_t* p, weft_msg_t* m) {
  if (p->hooks != NULL && p->hooks->control != NULL)
    p->hooks->control(p->handle, m);
  else
    weft_msg_free(m);
}

/* 'close' is emitted from the loop (Node emits it asynchronously): until
 * then the close keeps the loop alive. */
static void close_later(pcore_t* p) {
  int held = HELD;
  p->close_pending = true;
  update_keepalive(p);
  /* Scheduled even when HELD and empty: port_run emits the event. */
  atomic_compare_exchange_strong_explicit(&p->scheduled, &held, IDLE,
                                          memory_order_seq_cst,
                                          memory_order_seq_cst);
  schedule(p);
}

/* Hand one message to the user (or to weft's hooks). */
static void dispatch(weft_loop_t* loop, pcore_t* p, weft_msg_t* m) {
  int err;
  if (m->kind == WEFT__MSG_CLOSE) {
    weft_msg_free(m);
    atomic_store_explicit(&p->closed, 1, memory_order_release);
    emit_close(p);
    return;
  }
  if (m->kind != WEFT__MSG_DATA) {
    control(p, m);
    return;
  }
  if (p->close_emitted) {
    /* Only a post that raced with the close lands here (see port.h). */
    weft_msg_free(m);
    return;
  }
  err = weft__msg_hand_out(m, loop);
  if (err != 0) {
    message_error(loop, p, err);
    return;
  }
  if (p->hooks != NULL && p->hooks->message != NULL)
    p->hooks->message(p->handle, m);
  else
    p->on_message(p->handle, m);
  weft__msg_take_back(m, loop);
  weft__loop_after_callback(loop);
}

/* The mailbox looked empty: while nothing else waits on the loop, give a
 * sender that is mid-stream, or the peer of a ping-pong, a moment, so a
 * busy port stays scheduled and its producers never pay for rescheduling
 * it (a reschedule moves four or five cache lines between the cores where
 * a message found by the waiting port moves one or two). The moment is
 * PORT_LINGER pauses, and past that as long as the loop's own adaptive
 * spin would wait (weft__loop_spin_budget: 0 when work rarely comes soon,
 * so that a port at a moderate rate costs no more CPU than before), at
 * most PORT_LINGER_NS. Reads only the line the next push writes
 * (weft__mbox_ready), not the producers'. True when more arrived. */
static bool wait_for_more(weft_loop_t* loop, pcore_t* p) {
  uint64_t budget = weft__loop_spin_budget(loop);
  uint64_t t0 = 0;
  int i;
  if (budget > PORT_LINGER_NS)
    budget = PORT_LINGER_NS;
  for (i = 0;; i++) {
    WEFT__TRACE_SPIN(); /* The next delivery's begin, read while idle. */
    if (weft__mbox_ready(&p->mb))
      return true;
    if (weft__loop_has_ready(loop))
      return false;
    weft__cpu_relax();
    if (i >= PORT_LINGER && (i & 15) == 0) {
      uint64_t now = uv_hrtime();
      if (t0 == 0)
        t0 = now;
      if (now - t0 >= budget)
        break;
    }
  }
  return !weft__mbox_empty(&p->mb);
}

/* The loop popped one of `p`'s ready nodes (the port's or an orphan):
 * returns 1 plus the messages it delivered (process_ready's budget). */
static int port_run(weft_loop_t* loop, weft__ready_t* r) {
  pnode_t* node = weft__container_of(r, pnode_t, ready);
  pcore_t* p = node->core;
  int n = 0;
  if (node->orphan) {
    /* Left here by a transfer; the port has another node now. Read `heap`
     * before the release: the port's next owner may reuse the node. */
    bool heap = node->heap;
    node->orphan = false;
    /* release: the reuser (spare_node) reads it with acquire. */
    atomic_store_explicit(&node->queued, false, memory_order_release);
    core_unref(p);
    if (heap)
      weft__xfree(node);
    return 1;
  }
  atomic_store_explicit(&node->queued, false, memory_order_relaxed);
  if (core_loop(p) == loop)
    backlog_check(p);
  if (core_loop(p) != loop || weft__loop_closing(loop)) {
    /* seq_cst: see below. */
    atomic_store_explicit(&p->scheduled, IDLE, memory_order_seq_cst);
    /* Moved on while queued here and no spare node could be had (see
     * detach): pass it on (or drop the schedule when it is in transit;
     * the adopter schedules it). */
    if (core_loop(p) != loop)
      schedule(p);
    core_unref(p);
    return 1;
  }
  p->in_run = true;
  WEFT__TRACE_QUEUE(weft__mbox_length(&p->mb));
  /* `scheduled` stays QUEUED while we drain, so producers only push. Hooked
   * ports go on after 'close': a worker's exit follows it. core_loop()
   * first: once the port moved (a handler may transfer it), its other
   * fields belong to the adopting loop's thread. */
  while (n < PORT_BATCH && core_loop(p) == loop && deliverable(p) &&
         (!p->close_emitted || p->hooks != NULL) && !weft__loop_closing(loop) &&
         !weft__loop_stopping(loop)) {
    uint64_t stamp = WEFT__TRACE_STAMP_IN_MSG;
    weft_msg_t* m = pop_msg(p, &stamp, loop);
    if (m == NULL) {
      WEFT__TRACE_SETTLE(); /* The last delivery's end, before a wait. */
      if (!p->pop_nomem && wait_for_more(loop, p))
        continue;
      break; /* Out of memory: the next run tries again. */
    }
    n++;
    WEFT__TRACE_DELIVER(m, stamp);
    dispatch(loop, p, m);
    WEFT__TRACE_END_DELIVERY();
  }
  WEFT__TRACE_SETTLE();
  if (core_loop(p) != loop) {
    /* Moved away inside the drain; detach() released `scheduled`. */
    core_unref(p);
    return n + 1;
  }
  p->in_run = false;
  if ((n == PORT_BATCH || weft__loop_stopping(loop)) && deliverable(p) &&
      !p->close_emitted && !weft__loop_closing(loop)) {
    /* Batch full: to the back of the ready queue, still scheduled, with
     * the reference the queue already holds. */
    atomic_store_explicit(&p->node->queued, true, memory_order_relaxed);
    atomic_store_explicit(&p->node->on, loop, memory_order_relaxed);
    weft__loop_schedule(loop, &p->node->ready);
    return n + 1;
  }
  /* seq_cst: (3) of the handshake in the file comment, before the
   * emptiness checks below ((4)). HELD when the port cannot deliver: the
   * next pushes leave it alone. */
  atomic_store_explicit(&p->scheduled, idle_state(p), memory_order_seq_cst);
  backlog_check(p);
  if (!deliverable(p) && !p->close_emitted && !weft__loop_closing(loop)) {
    /* Not started: data waits for a handler, but a close at the head of
     * the queue is handled now, as Node does, so both ends see 'close'. */
    if (peek_kind(p) == WEFT__MSG_CLOSE) {
      weft_msg_t* m = pop_msg(p, NULL, loop);
      if (m != NULL)
        dispatch(loop, p, m);
    }
  }
  if (core_loop(p) == loop && (!p->close_emitted || p->hooks != NULL)) {
    if (p->close_pending && !p->close_emitted &&
        (!deliverable(p) || weft__mbox_empty(&p->mb)))
      emit_close(p);
    else if (deliverable(p) && !weft__mbox_empty(&p->mb))
      schedule(p); /* A push landed after the drain: go round again. */
  }
  core_unref(p);
  return n + 1;
}

/* ---- posting small values inline ----------------------------------------- */

/* What weft__msg_seal() learnt of `m`, as an inline slot carries it: a
 * container it walked (with what decoding allocates), or a scalar (no walk
 * needed); 0 for bytes that are not one value (the receiver finds out). */
static uint32_t sealed_meta(const weft_msg_t* m) {
  if (m->scanned)
    return INLINE_SCANNED | (uint32_t)m->need << 8;
  return weft__msgpack_container_head((unsigned char)m->data[0])
             ? 0
             : INLINE_SCANNED;
}

/* A value of WEFT__MBOX_INLINE bytes or fewer goes in the peer's mailbox
 * slot itself: no message is allocated by the sender, none is freed across
 * threads by the receiver (which makes one of its own to hand out). The
 * checks of post_core() were made. 0 when it went (or was dropped over a
 * backlog limit, as post_core's are), -1 to take the message path: no
 * slot could be had, or the mailbox holds messages that went around the
 * slots (see mbox.h), which this one must not pass. */
static int post_inline(pcore_t* p, const void* bytes, size_t len,
                       uint32_t meta) {
  pcore_t* y = p->peer;
  size_t limit = atomic_load_explicit(&y->qlimit, memory_order_relaxed);
  uint32_t flag = meta | (uint32_t)len;
  uint64_t stamp = 0;
  if (WEFT__TRACING()) {
    if (len > INLINE_STAMP_AT)
      return -1; /* No room for the stamp: the message path has one. */
    stamp = weft__trace_stamp();
    flag |= INLINE_STAMPED;
  }
  if (limit != 0) {
    if (!backlog_admit_bytes(y, limit, INLINE_BYTES)) {
      schedule(y); /* The owner breaches (see backlog_admit). */
      return 0;
    }
    flag |= INLINE_COUNTED;
  }
  if ((flag & INLINE_STAMPED
           ? weft__mbox_push_inline_tail(&y->mb, bytes, (uint32_t)len, flag,
                                         stamp)
           : weft__mbox_push_inline(&y->mb, bytes, (uint32_t)len, flag)) != 0) {
    if (flag & INLINE_COUNTED)
      atomic_fetch_sub_explicit(&y->queued, INLINE_BYTES,
                                memory_order_relaxed);
    if (flag & INLINE_STAMPED)
      WEFT__TRACE_POSTED();
    return -1;
  }
  schedule(y);
  if (flag & INLINE_STAMPED)
    WEFT__TRACE_POSTED();
  if (atomic_load_explicit(&y->released, memory_order_seq_cst))
    drain_released(y);
  return 0;
}

/* ---- public API --------------------------------------------------------- */

/* Resolve a handle for a call from the port's loop. */
#define CORE_OR_RETURN(p, h)                 \
  do {                                       \
    if ((h) == NULL)                         \
      return WEFT_EINVAL;                    \
    (p) = hcore(h);                          \
    if ((p) == NULL)                         \
      return WEFT_ECLOSED;                   \
    if (!weft__loop_on_thread(core_loop(p))) \
      return WEFT_EWRONGTHREAD;              \
  } while (0)

int weft_port_on_message(weft_port_t* port, weft_port_message_cb cb) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->on_message = cb;
  p->started = cb != NULL;
  update_keepalive(p);
  settle(p);
  return 0;
}

int weft_port_on_messageerror(weft_port_t* port, weft_port_error_cb cb) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->on_error = cb;
  return 0;
}

int weft_port_on_close(weft_port_t* port, weft_port_close_cb cb) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->on_close = cb;
  settle(p); /* A close listener needs the port scheduled for 'close'. */
  return 0;
}

int weft_port_start(weft_port_t* port) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->started = true;
  update_keepalive(p);
  settle(p);
  return 0;
}

/* Transfers must not include the channel's own ports. */
static int check_channel_ports(const weft_msg_t* msg, const pcore_t* p) {
  uint32_t i;
  for (i = 0; i < msg->nxfer; i++) {
    const weft__xfer_t* x = &msg->xfers[i];
    const weft_port_t* h = x->obj;
    if (x->kind != WEFT_EXT_PORT)
      continue;
    if (hcore(h) == p || hcore(h) == p->peer)
      return WEFT_EDATACLONE;
  }
  return 0;
}

/* Post on core `p`, read once from the handle by the caller: another
 * thread may be transferring the handle meanwhile (then the core goes on
 * to its new owner and the message with it, as a post just before the
 * transfer would). */
static int post_core(pcore_t* p, weft_msg_t** msg) {
  int err;
  if (p == NULL || is_closed(p) || is_closed(p->peer))
    return WEFT_ECLOSED;
  if ((*msg)->len == 0)
    return WEFT_EDECODE; /* Nothing was packed: not one value. */
  if ((*msg)->len > atomic_load_explicit(&p->max_msg, memory_order_relaxed))
    return WEFT_EMSGSIZE;
  err = weft__msg_seal(*msg); /* WEFT_ETOODEEP */
  if (err != 0)
    return err;
  if (p->to_sink)
    return p->peer->sink(p->peer->sink_ctx, msg);
  if ((*msg)->len <= WEFT__MBOX_INLINE && (*msg)->nxfer == 0 &&
      (*msg)->kind == WEFT__MSG_DATA && !(*msg)->routed &&
      post_inline(p, (*msg)->data, (*msg)->len, sealed_meta(*msg)) == 0) {
    weft_msg_free(*msg); /* Ours, on our thread: a cheap free. */
    *msg = NULL;
    return 0;
  }
  if ((*msg)->nxfer > 0) {
    err = check_channel_ports(*msg, p);
    if (err == 0)
      err = weft__msg_check_transfers(*msg);
    if (err != 0)
      return err;
  }
  weft__msg_commit_transfers(*msg);
  if ((*msg)->nxfer > 0 && carries_ports(*msg) &&
      !transit_enter(p->peer, *msg)) {
    /* The ports it carries would hold the peer's mailbox, which holds
     * them: nobody could ever take them. Accepted and freed now, which
     * closes those ports (their peers see 'close'). */
    weft_msg_free(*msg);
    *msg = NULL;
    return 0;
  }
  enqueue(p->peer, *msg);
  *msg = NULL;
  return 0;
}

int weft__port_post_msg(weft_port_t* port, weft_msg_t** msg) {
  if (port == NULL || msg == NULL || *msg == NULL ||
      (*msg)->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  return post_core(hcore(port), msg);
}

int weft__core_post_msg(void* core, weft_msg_t** msg) {
  if (msg == NULL || *msg == NULL || (*msg)->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  return post_core(core, msg);
}

int weft__core_post(void* core, const void* bytes, size_t len) {
  pcore_t* p = core;
  weft_msg_t* m;
  int err;
  if (bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (p == NULL)
    return WEFT_ECLOSED;
  if (len > atomic_load_explicit(&p->max_msg, memory_order_relaxed))
    return WEFT_EMSGSIZE;
  if (len <= WEFT__MBOX_INLINE && !p->to_sink) {
    if (is_closed(p) || is_closed(p->peer))
      return WEFT_ECLOSED;
    size_t need;
    err = weft__msg_seal_bytes(bytes, len, &need);
    if (err < 0)
      return err;
    if (post_inline(p, bytes, len,
                    err == 0 ? INLINE_SCANNED | (uint32_t)need << 8 : 0) == 0)
      return 0;
  }
  m = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (m == NULL)
    return WEFT_ENOMEM;
  memcpy(m->data, bytes, len);
  m->len = len;
  err = post_core(p, &m);
  if (err != 0)
    weft_msg_free(m);
  return err;
}

int weft__core_post_fn(void* core, weft_pack_cb pack, void* arg) {
  weft_msg_t* m;
  int err;
  if (pack == NULL)
    return WEFT_EINVAL;
  m = weft__msg_alloc(WEFT__MSG_DATA, 0);
  if (m == NULL)
    return WEFT_ENOMEM;
  weft__msg_start_packer(m);
  err = pack(&m->pk, arg);
  if (err > 0)
    err = WEFT_EPACK;
  if (err == 0)
    err = weft__core_post_msg(core, &m);
  if (err != 0)
    weft_msg_free(m);
  return err;
}

int weft_port_post_msg(weft_port_t* port, weft_msg_t** msg) {
  return weft__port_post_msg(port, msg);
}

int weft_port_post(weft_port_t* port, const void* bytes, size_t len) {
  if (port == NULL || bytes == NULL || len == 0)
    return WEFT_EINVAL;
  return weft__core_post(hcore(port), bytes, len); /* Once: see post_core(). */
}

int weft_port_post_fn(weft_port_t* port, weft_pack_cb pack, void* arg) {
  if (port == NULL || pack == NULL)
    return WEFT_EINVAL;
  return weft__core_post_fn(hcore(port), pack, arg);
}

/* Take the oldest message of `p` for a receive: 0 and `*out`, WEFT_EAGAIN
 * (none), WEFT_ECLOSED, WEFT_ENOMEM, WEFT_EDECODE. `foreign`: the caller is
 * a blocking receiver off the port's loop (weft_port_receive_wait()); it
 * touches no loop state, so a close at the head of the mailbox is left
 * there (the owner loop handles it when it frees or reads the port). */
static int take(pcore_t* p, weft_msg_t** out, bool foreign) {
  int kind;
  weft_msg_t* m;
  msgpack_zone* zone = NULL;
  int err;
  for (;;) {
    if (p->close_emitted || (is_closed(p) && weft__mbox_empty(&p->mb))) {
      err = WEFT_ECLOSED;
      break;
    }
    /* The decode zone comes before the message leaves the mailbox: out of
     * memory, the caller gets WEFT_ENOMEM and the message stays first in
     * line for the next call (an accepted message is never lost). */
    kind = peek_kind(p);
    if (kind < 0) {
      err = WEFT_EAGAIN;
      break;
    }
    if (foreign && kind == WEFT__MSG_CLOSE) {
      err = WEFT_ECLOSED;
      break;
    }
    if (zone == NULL && kind == WEFT__MSG_DATA) {
      zone = WEFT__FAILABLE(msgpack_zone_new(WEFT__MSG_ZONE_CHUNK));
      if (zone == NULL)
        return WEFT_ENOMEM;
    }
    m = pop_msg(p, NULL, NULL);
    if (m == NULL) {
      err = p->pop_nomem ? WEFT_ENOMEM : WEFT_EAGAIN;
      break;
    }
    if (m->kind == WEFT__MSG_CLOSE) {
      weft_msg_free(m);
      atomic_store_explicit(&p->closed, 1, memory_order_release);
      close_later(p); /* The close event still runs, from the loop. */
      err = WEFT_ECLOSED;
      break;
    }
    if (m->kind != WEFT__MSG_DATA) {
      if (foreign)
        weft_msg_free(m); /* Control messages go to hooked ports only. */
      else
        control(p, m);
      continue;
    }
    /* Closed on this side but 'close' not yet emitted: what the peer
     * posted before is still handed out. The node popped is the one
     * peeked at: `zone` was made for it. */
    m->zone = zone; /* Freed with the message from now on. */
    zone = NULL;
    return weft__msg_own(m, m->zone, out);
  }
  if (zone != NULL)
    msgpack_zone_free(zone);
  return err;
}

int weft_port_receive(weft_port_t* port, weft_msg_t** out) {
  pcore_t* p;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  CORE_OR_RETURN(p, port);
  if (backlog_check(p))
    return WEFT_EHEAPLIMIT;
  return take(p, out, false);
}

/* Pause iterations a blocking receive spins before it parks. */
#define WAIT_SPIN 256

/* Take the oldest message of a loop-less core whatever its kind (a
 * request's outcome is not a data message), undecoded: 0 and `*out`,
 * WEFT_EAGAIN (none) or WEFT_ECLOSED (a close is first in line). */
static int take_raw(pcore_t* p, weft_msg_t** out) {
  int kind = peek_kind(p);
  if (kind < 0)
    return WEFT_EAGAIN;
  if (kind == WEFT__MSG_CLOSE)
    return WEFT_ECLOSED;
  *out = pop_msg(p, NULL, NULL);
  if (*out == NULL)
    return p->pop_nomem ? WEFT_ENOMEM : WEFT_EAGAIN;
  return 0;
}

/* The wait of weft_port_receive_wait() and weft__core_wait(): until
 * `deadline` (uv_hrtime(); negative: none). `raw`: take_raw(), else take(). */
static int receive_wait(pcore_t* p,
                        int64_t deadline,
                        weft_msg_t** out,
                        bool raw) {
  int64_t left;
  int i, err;
  for (;;) {
    int held = HELD;
    /* acquire: the port's loop is not its consumer while it is HELD (no
     * handler, no close listener, no close event pending). */
    if (atomic_load_explicit(&p->scheduled, memory_order_acquire) != HELD)
      return WEFT_EBUSY;
    err = raw ? take_raw(p, out) : take(p, out, true);
    if (err != WEFT_EAGAIN)
      return err;
    /* Spin briefly: a sender mid-stream costs no syscall either side. */
    for (i = 0; i < WAIT_SPIN && !weft__mbox_ready(&p->mb); i++)
      weft__cpu_relax();
    if (!weft__mbox_empty(&p->mb))
      continue;
    left = -1;
    if (deadline >= 0) {
      left = deadline - (int64_t)uv_hrtime();
      if (left <= 0)
        return WEFT_ETIMEDOUT;
    }
    /* Announce, then re-check (the receiver's half of the handshake in
     * unpark(); both seq_cst). */
    if (!atomic_compare_exchange_strong_explicit(
            &p->scheduled, &held, PARKED, memory_order_seq_cst,
            memory_order_seq_cst))
      return WEFT_EBUSY;
    if (weft__mbox_empty(&p->mb))
      weft__futex_wait((_Atomic uint32_t*)&p->scheduled, PARKED, left);
    /* Woken, timed out, interrupted or the push was seen: back to HELD
     * unless a producer did it already, and look again. */
    held = PARKED;
    atomic_compare_exchange_strong_explicit(&p->scheduled, &held, HELD,
                                            memory_order_seq_cst,
                                            memory_order_seq_cst);
  }
}

int weft_port_receive_wait(weft_port_t* port,
                           int64_t timeout_ms,
                           weft_msg_t** out) {
  pcore_t* p;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (port == NULL)
    return WEFT_EINVAL;
  /* A loop thread would stall its loop (and could be the port's own
   * consumer): only threads that run no loop block here. */
  if (weft_loop_current() != NULL)
    return WEFT_EWRONGTHREAD;
  p = hcore(port);
  if (p == NULL)
    return WEFT_ECLOSED;
  return receive_wait(p, weft__deadline_ns(timeout_ms), out, false);
}

int weft__core_wait(void* core, int64_t deadline_ns, weft_msg_t** out) {
  *out = NULL;
  return receive_wait(core, deadline_ns, out, true);
}

int weft_port_close(weft_port_t* port) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  if (p->close_emitted || p->close_pending)
    return 0;
  close_core(p);
  /* What the peer posted before is still delivered (as in Node), then
   * 'close' runs; see port.h. */
  close_later(p);
  return 0;
}

int weft_port_ref(weft_port_t* port) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->ref = true;
  update_keepalive(p);
  return 0;
}

int weft_port_unref(weft_port_t* port) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->ref = false;
  update_keepalive(p);
  return 0;
}

bool weft_port_closed(const weft_port_t* port) {
  pcore_t* p = port == NULL ? NULL : hcore(port);
  return p == NULL || is_closed(p) || is_closed(p->peer);
}

int weft_port_set_max_message(weft_port_t* port, size_t bytes) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  if (bytes == 0)
    return WEFT_EINVAL;
  atomic_store_explicit(&p->max_msg, bytes, memory_order_relaxed);
  return 0;
}

int weft_port_set_data(weft_port_t* port, void* data) {
  pcore_t* p;
  CORE_OR_RETURN(p, port);
  p->data = data;
  return 0;
}

/* The owner loop's fields, for the bool/pointer getters: NULL off the
 * port's loop (they would race with it) or for a husk. */
static pcore_t* owned_core(const weft_port_t* port) {
  pcore_t* p = port == NULL ? NULL : hcore(port);
  return p != NULL && weft__loop_on_thread(core_loop(p)) ? p : NULL;
}

void* weft_port_get_data(const weft_port_t* port) {
  pcore_t* p = owned_core(port);
  return p == NULL ? NULL : p->data;
}

bool weft_port_has_ref(const weft_port_t* port) {
  pcore_t* p = owned_core(port);
  /* What update_keepalive() counts in the loop's keep-alive. */
  return p != NULL && p->holds_keepalive;
}

int weft_port_free(weft_port_t* port) {
  pcore_t* p;
  if (port == NULL)
    return 0;
  p = hcore(port);
  if (p == NULL) {
    weft__xfree(port); /* A husk left by a transfer. */
    return 0;
  }
  if (p->internal)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(core_loop(p)))
    return WEFT_EWRONGTHREAD;
  weft__port_release(port);
  return 0;
}

void weft__port_release(weft_port_t* h) {
  pcore_t* p = hcore(h);
  drop_mailbox(p);
  finish_core(p);
  weft__xfree(h);
}

static void port_teardown(weft__tracked_t* t) {
  /* The loop ends: the port closes (its peer sees 'close') and weft
   * releases it, whoever's it was. User handles to it dangle from here on,
   * like all of the worker's memory. */
  weft__port_release(weft__container_of(t, pcore_t, tracked)->handle);
}

/* ---- ports in messages (msg.c reaches ports only through these) -------- */

static int xfer_check(void* obj) {
  return weft__port_transferable(obj);
}

static void* xfer_commit(void* obj) {
  return weft__port_detach(obj);
}

static void xfer_drop(void* core) {
  weft__port_drop_in_transit(core);
}

static const weft__xfer_ops_t port_xfer_ops = {xfer_check, xfer_commit,
                                               xfer_drop};

int weft_msg_add_port(weft_msg_t* msg, weft_port_t* port) {
  int err;
  if (msg == NULL || port == NULL || msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  err = weft__port_transferable(port);
  if (err != 0)
    return err;
  return weft__msg_add_xfer(msg, WEFT_EXT_PORT, port, &port_xfer_ops);
}

int weft_msg_take_port(weft_msg_t* msg,
                       const msgpack_object* obj,
                       weft_port_t** out) {
  weft__xfer_t* x;
  weft_loop_t* loop = weft_loop_current();
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  x = weft__msg_lookup(msg, obj, WEFT_EXT_PORT);
  if (x == NULL)
    return WEFT_EINVAL;
  if (x->taken)
    return WEFT_EDETACHED;
  if (loop == NULL)
    return WEFT_ENOLOOP;
  err = weft__port_adopt(x->obj, loop, out);
  if (err != 0)
    return err;
  x->taken = true;
  return 0;
}

/* ---- for lib/node.c: an export's backlog ---------------------------------- */

size_t weft__core_peer_backlog(void* core) {
  pcore_t* y = ((pcore_t*)core)->peer;
  size_t none = 0;
  /* Count from now on where nothing counted (an unlimited owner): a limit
   * of SIZE_MAX counts and never refuses. A later attach sets the new
   * owner's limit; what was counted is uncounted as it leaves. Loaded
   * first: this runs per message, and a CAS that fails still takes the
   * line for writing. */
  if (atomic_load_explicit(&y->qlimit, memory_order_relaxed) == 0)
    atomic_compare_exchange_strong_explicit(&y->qlimit, &none, SIZE_MAX,
                                            memory_order_relaxed,
                                            memory_order_relaxed);
  return atomic_load_explicit(&y->queued, memory_order_relaxed);
}
