/* actor.c - spawning, sending, an actor's turn, its end.
 *
 * Who runs an actor. `sched` is RUN_IDLE while nobody holds the actor.
 * A push that finds the mailbox empty (the queue's exchange returned the
 * sentinel) swaps `sched` to RUN_HELD and, if it was idle, queues the
 * actor: exactly one party holds it. At the end of a turn the holder
 * either keeps it (more mail: queue it again; muted: a mute record holds
 * it) or lets go: store RUN_IDLE, then look at the mailbox's head once
 * more, and take it back (swap) if a push came in between and saw
 * RUN_HELD. Both sides use seq_cst (the push's exchange, the swap, the
 * store and the load), so either the pusher sees RUN_IDLE or the holder
 * sees the push: no actor is left with mail and nobody to run it, and no
 * actor runs on two schedulers. Between letting go and the last look
 * another scheduler may already run (and end) the actor, so the holder
 * keeps a reference on the actor's slot for that window: the end waits
 * for it (address.c).
 *
 * Backpressure (Pony's muting). A mailbox's length is its pushes (counted
 * by the senders) less its pops (published by its owner after each
 * turn). An actor whose send leaves a mailbox over the system's high-water
 * mark (and that is not over the mark itself, so two actors flooding each
 * other never both stop) ends its turn after that message and is muted:
 * it leaves a record in the receiver's `mutees` and is not run again until
 * the receiver, after a turn, is below the low mark (or ends) and unmutes
 * it. Senders outside the actors get WEFT_EMAILBOXFULL instead: they
 * cannot be paused. A mailbox then holds at most the high mark plus what
 * each sender sends while handling one message. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "internal.h"
#include "weft/actor_remote.h"

static _Thread_local weft_actor_t* tl_actor;

weft_actor_t* weft__actor_current(void) {
  return tl_actor;
}

weft__replies_t* weft__actor_replies(void) {
  weft_actor_t* a = tl_actor;
  if (a != NULL && weft__actor_x(a) != NULL) {
    a->x->took_replies = true;
    return &a->x->replies;
  }
  return &weft__sched_current()->sys->replies;
}

weft__actor_x_t* weft__actor_x(weft_actor_t* a) {
  if (a->x == NULL)
    a->x = WEFT__FAILABLE(calloc(1, sizeof(*a->x)));
  return a->x;
}

weft_msg_t* weft__actor_msg(int tag, uint64_t aux, const void* bytes,
                            size_t len) {
  weft_msg_t* m = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (m == NULL)
    return NULL;
  if (len > 0)
    memcpy(m->data, bytes, len);
  m->len = len;
  m->tag = (uint8_t)tag;
  m->aux = aux;
  m->state = WEFT__MSG_QUEUED;
  return m;
}

/* ---- light messages ------------------------------------------------------
 * A plain value of LIGHT_MAX bytes or fewer with nothing transferred (an
 * integer, a short array: most actor traffic) travels as a 16-byte entry
 * of a light node instead of a weft_msg_t (320 bytes): one 40-byte node for
 * a lone message, where a weft_msg_t took five lines to allocate, write,
 * move across cores and free, and the page faults of a mailbox that grows.
 * The receiver hands each entry to its behaviour in its scheduler's spare
 * weft_msg_t, filled from the entry; the spare is reused for the next one
 * unless the behaviour kept it (weft_msg_keep(): then the scheduler makes
 * another). A light node shares the mailbox with weft_msg_t nodes
 * (signals, asks, big values, transfers), in one order; its `kind` byte
 * sits where a weft_msg_t has its kind, so the consumer tells the two
 * apart from the node.
 *
 * Batches. A behaviour's first send to an actor is pushed at once. Its
 * next sends to the same actor, with no send to another one between, are
 * appended to a batch of up to LIGHT_BATCH entries held by the scheduler
 * (its outbox) and pushed as one node when it is full, before any other
 * push from that thread (so one sender's order holds, with signals too),
 * and when the behaviour returns. So a sender that streams to one
 * receiver (Savina's Counting) pays one push (a slot entry, a count, an
 * exchange on lines the receiver reads) per batch instead of per message,
 * and the receiver reads the messages from consecutive lines. A batch is
 * handled whole in one turn (a turn may run up to LIGHT_BATCH - 1 messages
 * past its `batch`). The price: of a burst to one actor followed by a long
 * computation in the same behaviour, the messages after the first arrive
 * when the behaviour returns (or when the batch fills). */
#define LIGHT_MAX 15
#define LIGHT_KIND 0xffu
/* 24 + 62 * 16 = 1016 bytes: within mimalloc's 1 KiB class. */
#define LIGHT_BATCH 62

typedef struct {
  uint8_t len;
  unsigned char data[LIGHT_MAX];
} light_entry_t;

typedef struct {
  weft__mpsc_node_t node;
  uint8_t kind; /* LIGHT_KIND, at weft_msg_t's `kind`. */
  uint8_t n;    /* Entries filled. */
  uint8_t cap;
  uint64_t aux; /* The sender's id, or 0. */
  light_entry_t e[];
} light_t;

_Static_assert(offsetof(light_t, e) == 24 && sizeof(light_entry_t) == 16,
               "a light node is 24 bytes and 16 per entry");
_Static_assert(offsetof(weft_msg_t, node) == 0 &&
                   offsetof(light_t, node) == 0 &&
                   offsetof(weft_msg_t, kind) == offsetof(light_t, kind),
               "light and weft_msg_t nodes are told apart by kind");
_Static_assert(WEFT__MSG_REPLY < LIGHT_KIND, "LIGHT_KIND is no message kind");
_Static_assert(LIGHT_BATCH <= UINT8_MAX, "n and cap are bytes");

static bool is_light(const weft__mpsc_node_t* n) {
  return ((const light_t*)n)->kind == LIGHT_KIND;
}

static light_t* light_new(unsigned cap, uint64_t aux) {
  light_t* l = weft__xalloc(sizeof(*l) + cap * sizeof(light_entry_t));
  if (l == NULL)
    return NULL;
  l->kind = LIGHT_KIND;
  l->n = 0;
  l->cap = (uint8_t)cap;
  l->aux = aux;
  return l;
}

static void light_add(light_t* l, const void* bytes, size_t len) {
  light_entry_t* e = &l->e[l->n++];
  e->len = (uint8_t)len;
  memcpy(e->data, bytes, len);
}

/* Fill `m` (a fresh or a reused spare) with entry `e` of a light node. */
static void light_fill(weft_msg_t* m, uint64_t aux, const light_entry_t* e) {
  m->kind = WEFT__MSG_DATA;
  m->state = WEFT__MSG_QUEUED;
  m->decoded = false;
  m->scanned = false;
  m->tag = WEFT__TAG_PLAIN;
  m->aux = aux;
  m->code = 0;
  memcpy(m->data, e->data, e->len);
  m->len = e->len;
}

static void dead_letter(weft_actor_system_t* sys, weft_actor_id to,
                        weft_msg_t* m);

/* Entries `from`.. of light `l` for `to` are dead letters; frees `l`. */
static void light_dead(weft_actor_system_t* sys, weft_actor_id to,
                       light_t* l, unsigned from) {
  unsigned i;
  for (i = from; i < l->n; i++) {
    weft_msg_t* m = weft__msg_alloc(WEFT__MSG_DATA, l->e[i].len);
    if (m != NULL) {
      light_fill(m, l->aux, &l->e[i]);
      dead_letter(sys, to, m);
    } else { /* Counted, not shown. */
      atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
    }
  }
  weft__xfree(l);
}

/* Whether a delivered spare can take the next light message: nothing of
 * it went elsewhere. */
static bool spare_clean(const weft_msg_t* m) {
  return !m->has_owned && !m->routed && m->nxfer == 0 && m->zone == NULL &&
         m->data == m->inline_buf;
}

void weft__actor_sched_end(weft__sched_t* s) {
  weft_msg_free(s->spare);
  s->spare = NULL;
}

/* ---- sending ------------------------------------------------------------- */

int weft__actor_tell(weft_actor_id to, int tag, uint64_t aux,
                     const void* bytes, size_t len) {
  weft_msg_t* m = weft__actor_msg(tag, aux, bytes, len);
  int err;
  if (m == NULL)
    return WEFT_ENOMEM;
  err = weft__actor_push(to, m, false);
  if (err != 0)
    weft_msg_free(m);
  return err;
}

/* The length of a's mailbox, give or take the pushes and pops in flight.
 * seq_cst on `popped`: the mute handshake (see mute()). */
static uint64_t backlog(weft_actor_t* a) {
  uint64_t pushed = atomic_load_explicit(&a->pushed, memory_order_relaxed);
  uint64_t popped = atomic_load_explicit(&a->popped, memory_order_seq_cst);
  return pushed > popped ? pushed - popped : 0;
}

int weft__actor_push(weft_actor_id to, weft_msg_t* msg, bool from_outside) {
  return weft__actor_push_load(to, msg, from_outside, NULL);
}

/* Push node `n` (a weft_msg_t or a light node of `count` messages; see
 * weft__actor_push_load), behind this thread's batch (push_node). */
static int push_raw(weft_actor_id to, weft__mpsc_node_t* n, unsigned count,
                    bool from_outside, bool* over) {
  weft_actor_t* a = weft__slot_enter(to);
  uint64_t cnt;
  bool was_empty;
  if (a == NULL)
    return WEFT_EDEADACTOR;
  if (atomic_load_explicit(&a->sys->closing, memory_order_acquire)) {
    weft__slot_leave(to);
    return WEFT_EDEADACTOR;
  }
  if (from_outside && backlog(a) > a->sys->high_water) {
    weft__slot_leave(to);
    return WEFT_EMAILBOXFULL;
  }
  /* relaxed: a count for the marks; off by the pushes in flight. */
  cnt = atomic_fetch_add_explicit(&a->pushed, count, memory_order_relaxed) +
        count;
  if (over != NULL)
    *over = cnt - atomic_load_explicit(&a->popped, memory_order_relaxed) >
            a->sys->high_water;
  was_empty = weft__mpscs_push(&a->mbox, n);
  /* seq_cst: see "Who runs an actor". */
  if (was_empty && atomic_exchange_explicit(&a->sched, WEFT__RUN_HELD,
                                            memory_order_seq_cst) ==
                       WEFT__RUN_IDLE)
    weft__sched_queue(a);
  weft__slot_leave(to);
  return 0;
}

static int push_node(weft_actor_id to, weft__mpsc_node_t* n, unsigned count,
                     bool from_outside, bool* over);

int weft__actor_push_load(weft_actor_id to, weft_msg_t* msg,
                          bool from_outside, bool* over) {
  uint8_t state = msg->state;
  int err;
  msg->state = WEFT__MSG_QUEUED; /* Before it can be seen. */
  err = push_node(to, &msg->node, 1, from_outside, over);
  if (err != 0)
    msg->state = state; /* Still the caller's, as it was. */
  return err;
}

/* A user message: checks of a port post, no ports, and a value that
 * decodes (refused here: a behaviour has no messageerror). */
static int seal(weft_msg_t* m) {
  uint32_t i;
  int err;
  if (m->len == 0)
    return WEFT_EDECODE;
  if (m->len > WEFT_MSG_DEFAULT_LIMIT)
    return WEFT_EMSGSIZE;
  err = weft__msg_seal(m);
  if (err != 0)
    return err;
  /* A number, nil or bool is whole when its length is right: no walk
   * (the scan was 9% of Savina's fjthroughput, whose messages are one
   * byte). */
  if (!m->scanned && weft__msgpack_scalar_len((unsigned char)m->data[0]) != m->len) {
    err = weft__msgpack_validate(m->data, m->len);
    if (err != 0)
      return err;
  }
  for (i = 0; i < m->nxfer; i++)
    if (m->xfers[i].kind == WEFT_EXT_PORT)
      return WEFT_EINVAL;
  if (m->nxfer > 0) {
    err = weft__msg_check_transfers(m);
    if (err != 0)
      return err;
  }
  return 0;
}

/* The current actor `self` sent to `to` (`err`, `over` from the push):
 * the mute bookkeeping of a sender that overfills a mailbox. */
static void sent(weft_actor_t* self, weft_actor_id to, int err, bool over) {
  weft__sched_sent(weft__sched_current());
  if (err == 0 && over && self->mute_on == 0 && to != self->id &&
      backlog(self) <= self->sys->high_water)
    self->mute_on = to;
}

/* Push the scheduler's batch (see "Batches"); its messages are dead
 * letters if the receiver ended meanwhile. Thread: the scheduler, in a
 * turn. */
static void out_flush(weft__sched_t* s) {
  light_t* l = s->out;
  bool over = false;
  int err;
  if (l == NULL)
    return;
  s->out = NULL;
  err = push_raw(s->out_to, &l->node, l->n, false, &over);
  if (tl_actor != NULL)
    sent(tl_actor, s->out_to, err, over);
  if (err != 0) /* It ended meanwhile. */
    light_dead(s->sys, s->out_to, l, 0);
}

/* push_raw() after this thread's batch, which goes first: one sender's
 * order (see "Batches"). */
static int push_node(weft_actor_id to, weft__mpsc_node_t* n, unsigned count,
                     bool from_outside, bool* over) {
  weft__sched_t* s = weft__sched_current();
  if (s != NULL && s->out != NULL)
    out_flush(s);
  return push_raw(to, n, count, from_outside, over);
}

/* Push node `n` as a user message of the current actor (or from
 * outside). */
static int send_node(weft_actor_id to, weft__mpsc_node_t* n, unsigned count) {
  weft_actor_t* self = tl_actor;
  bool over = false;
  int err;
  if (self == NULL)
    return push_node(to, n, count, true, NULL);
  err = push_node(to, n, count, false, &over);
  sent(self, to, err, over);
  return err;
}

/* Send a sealed message as the current actor (or from outside). */
static int send_sealed(weft_actor_id to, weft_msg_t* m) {
  weft_actor_t* self = tl_actor;
  uint8_t state = m->state;
  int err;
  m->tag = WEFT__TAG_PLAIN;
  m->aux = self != NULL ? self->id : 0;
  m->state = WEFT__MSG_QUEUED; /* Before it can be seen. */
  err = send_node(to, &m->node, 1);
  if (err != 0)
    m->state = state; /* Refused: the caller's, as it was. */
  return err;
}

/* The behaviour on `s` returned: its batch goes, the next send starts
 * afresh. */
static void out_end(weft__sched_t* s) {
  out_flush(s);
  s->out_to = 0;
}

/* Send `len` (<= LIGHT_MAX) checked bytes as a light message, batched
 * after a first one to the same actor (see "Batches"). */
static int send_light(weft_actor_id to, const void* bytes, size_t len) {
  weft_actor_t* self = tl_actor;
  weft__sched_t* s = self != NULL ? weft__sched_current() : NULL;
  light_t* l;
  int err;
  if (s != NULL && s->out_to == to) {
    if (!weft__slot_alive(to))
      return WEFT_EDEADACTOR;
    l = s->out;
    if (l != NULL && l->n == l->cap) {
      out_flush(s);
      l = NULL;
    }
    if (l == NULL) {
      l = light_new(LIGHT_BATCH, self->id);
      if (l == NULL)
        return WEFT_ENOMEM;
      s->out = l;
    }
    light_add(l, bytes, len);
    weft__sched_sent(s);
    return 0;
  }
  l = light_new(1, self != NULL ? self->id : 0);
  if (l == NULL)
    return WEFT_ENOMEM;
  light_add(l, bytes, len);
  err = send_node(to, &l->node, 1); /* Flushes a batch to another first. */
  if (err != 0) {
    weft__xfree(l);
    return err;
  }
  if (s != NULL)
    s->out_to = to;
  return 0;
}

/* The checks of seal() on bare bytes (weft_actor_send's). */
static int check_bytes(const void* bytes, size_t len) {
  /* A number, nil or bool is whole when its length is right: no walk. */
  if (weft__msgpack_scalar_len(*(const unsigned char*)bytes) == len)
    return 0;
  return weft__msgpack_validate(bytes, len);
}

int weft_actor_send_msg(weft_actor_id to, weft_msg_t** msg) {
  int err;
  if (msg == NULL || *msg == NULL || (*msg)->state != WEFT__MSG_BUILDING ||
      (*msg)->routed)
    return WEFT_EINVAL;
  err = seal(*msg);
  if (err != 0)
    return err;
  if (!weft__slot_alive(to))
    return WEFT_EDEADACTOR; /* Before the transfers commit. */
  if ((*msg)->nxfer > 0 && weft_actor_is_remote(to, NULL))
    return weft__remote_send_flat(to, msg); /* Across hosts: copies. */
  if ((*msg)->nxfer == 0 && (*msg)->len <= LIGHT_MAX) {
    /* Nothing to commit: it goes light, and the message is freed here,
     * on the thread that made it. */
    err = send_light(to, (*msg)->data, (*msg)->len);
    if (err == 0) {
      weft_msg_free(*msg);
      *msg = NULL;
    }
    return err;
  }
  weft__msg_commit_transfers(*msg);
  err = send_sealed(to, *msg);
  if (err == 0)
    *msg = NULL;
  /* A push refused after the commit (the actor ended just now, or its
   * mailbox filled): the transfers went with the message, as for a post
   * to a port that closed meanwhile; the caller frees it. */
  return err;
}

int weft_actor_send(weft_actor_id to, const void* bytes, size_t len) {
  weft_msg_t* m;
  int err;
  if (bytes == NULL || len == 0)
    return len == 0 && bytes != NULL ? WEFT_EDECODE : WEFT_EINVAL;
  if (len > WEFT_MSG_DEFAULT_LIMIT)
    return WEFT_EMSGSIZE;
  if (len <= LIGHT_MAX) {
    err = check_bytes(bytes, len);
    return err != 0 ? err : send_light(to, bytes, len);
  }
  m = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (m == NULL)
    return WEFT_ENOMEM;
  memcpy(m->data, bytes, len);
  m->len = len;
  err = seal(m);
  if (err == 0)
    err = send_sealed(to, m);
  if (err != 0)
    weft_msg_free(m);
  return err;
}

/* Whether `to`'s mailbox has room for a sender from outside now; false
 * also when the actor is gone (the send then says why). */
static bool has_room(weft_actor_id to) {
  weft_actor_t* a = weft__slot_enter(to);
  bool room = true;
  if (a != NULL) {
    room = backlog(a) <= a->sys->high_water;
    weft__slot_leave(to);
  }
  return room;
}

int weft__actor_wait_room(weft_actor_id to, int64_t deadline) {
  weft_actor_t* a = weft__slot_enter(to);
  weft_actor_system_t* sys;
  uint32_t seq;
  int err = 0;
  if (a == NULL)
    return WEFT_EDEADACTOR;
  sys = a->sys; /* Lives while the actor does: the caller's to keep. */
  weft__slot_leave(to);
  seq = atomic_load_explicit(&sys->room_seq, memory_order_seq_cst);
  atomic_fetch_add_explicit(&sys->room_waiters, 1, memory_order_seq_cst);
  if (!has_room(to)) {
    int64_t left = -1;
    if (deadline >= 0)
      left = deadline - (int64_t)uv_hrtime();
    if (deadline >= 0 && left <= 0)
      err = WEFT_EMAILBOXFULL;
    else /* Woken by any actor's drain: look again. A bound of 10 ms
          * covers a receiver that ends instead of draining. */
      (void)weft__futex_wait(&sys->room_seq, seq,
                             left < 0 || left > 10000000 ? 10000000 : left);
  }
  atomic_fetch_sub_explicit(&sys->room_waiters, 1, memory_order_seq_cst);
  return err;
}

int weft_actor_send_wait(weft_actor_id to, const void* bytes, size_t len,
                         int64_t timeout_ms) {
  int64_t deadline = timeout_ms > 0 ? weft__deadline_ns(timeout_ms) : -1;
  int err;
  if (tl_actor != NULL || weft__sched_current() != NULL)
    return WEFT_EBUSY;
  while ((err = weft_actor_send(to, bytes, len)) == WEFT_EMAILBOXFULL &&
         (err = weft__actor_wait_room(to, deadline)) == 0) {
  }
  return err;
}

int weft_actor_send_fn(weft_actor_id to,
                       int (*pack)(msgpack_packer* pk, void* arg),
                       void* arg) {
  weft_msg_t* m;
  int err;
  if (pack == NULL)
    return WEFT_EINVAL;
  err = weft_msg_new(&m);
  if (err != 0)
    return err;
  err = pack(weft_msg_packer(m), arg);
  if (err > 0)
    err = WEFT_EPACK;
  if (err == 0)
    err = weft_actor_send_msg(to, &m);
  weft_msg_free(m);
  return err;
}

int weft_actor_send_fmt(weft_actor_id to, const char* fmt, ...) {
  weft_msg_t* m;
  va_list ap;
  int err = weft_msg_new(&m);
  if (err != 0)
    return err;
  va_start(ap, fmt);
  err = weft_msg_vpack(m, fmt, ap);
  va_end(ap);
  if (err == 0)
    err = weft_actor_send_msg(to, &m);
  weft_msg_free(m);
  return err;
}

/* ---- spawning -------------------------------------------------------------- */

int weft_actor_spawn(weft_actor_system_t* sys,
                     weft_behaviour_fn fn,
                     void* state,
                     const weft_actor_opts_t* opts,
                     weft_actor_id* out) {
  weft_actor_t* a;
  weft_actor_t* self = tl_actor;
  weft_actor_id link = opts != NULL ? opts->link : 0;
  int err;
  if (out != NULL)
    *out = 0;
  if (sys == NULL || fn == NULL)
    return WEFT_EINVAL;
  if (atomic_load_explicit(&sys->closing, memory_order_acquire))
    return WEFT_ECLOSED;
  a = weft__xalloc(sizeof(*a));
  if (a == NULL)
    return WEFT_ENOMEM;
  memset(a, 0, sizeof(*a));
  a->ready.run = weft__actor_run;
  weft__mpscs_init(&a->mbox);
  atomic_init(&a->sched, WEFT__RUN_IDLE);
  atomic_init(&a->muted, WEFT__MUTE_NO);
  atomic_init(&a->pushed, 0);
  atomic_init(&a->popped, 0);
  atomic_init(&a->mutees, NULL);
  a->fn = fn;
  a->state = state;
  a->sys = sys;
  if (opts != NULL && (opts->flags & WEFT_ACTOR_TRAP_EXIT))
    a->flags |= WEFT__A_TRAP;
  if (opts != NULL &&
      (opts->on_stop != NULL || opts->mailbox_limit != 0 || link != 0)) {
    if (weft__actor_x(a) == NULL) {
      weft__xfree(a);
      return WEFT_ENOMEM;
    }
    a->x->on_stop = opts->on_stop;
    a->x->mailbox_limit = opts->mailbox_limit;
  }
  if (link != 0) {
    err = weft__link_add(a, link);
    if (err != 0) {
      free(a->x);
      weft__xfree(a);
      return err;
    }
  }
  err = weft__slot_alloc(a, &a->id);
  if (err != 0) {
    if (a->x != NULL)
      free(a->x->links);
    free(a->x);
    weft__xfree(a);
    return err;
  }
  weft__system_live(sys, 1);
  if (opts != NULL && opts->name != NULL) {
    err = weft_actor_register(sys, opts->name, a->id);
    if (err != 0)
      goto undo;
  }
  if (link != 0) {
    /* The other side: our own table if the linker is the caller, else a
     * LINK signal, which an actor that ended answers with its EXIT. */
    if (self != NULL && self->id == link) {
      err = weft__link_add(self, a->id);
    } else {
      err = weft__actor_tell(link, WEFT__TAG_LINK, a->id, NULL, 0);
    }
    if (err != 0)
      goto undo;
  }
  if (out != NULL)
    *out = a->id;
  return 0;
undo:
  /* Nobody could have sent to it yet except by guessing its id: end it
   * quietly, as if it had never run. */
  if (a->x != NULL)
    a->x->on_stop = NULL;
  if (a->x != NULL)
    a->x->nlinks = 0;
  weft__actor_destroy(a, NULL);
  return err;
}

/* ---- a turn ---------------------------------------------------------------- */

static void dead_letter(weft_actor_system_t* sys, weft_actor_id to,
                        weft_msg_t* m) {
  atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
  if (sys->dead_letter != NULL && weft__msg_decode(m, NULL) == 0) {
    m->state = WEFT__MSG_OWNED;
    sys->dead_letter(sys->dead_letter_arg, to, m);
  }
  weft_msg_free(m);
}

static void handle(weft_actor_t* a, weft_loop_t* loop, weft_msg_t* m) {
  int rc;
  if (m->tag == WEFT__TAG_ASK_REPLY) {
    weft__ask_deliver(a, m);
    return;
  }
  if (m->tag == WEFT__TAG_TIMER) {
    if (!weft__timer_arrived(a, m))
      return;
  } else if (m->tag != WEFT__TAG_PLAIN) {
    bool deliver = false;
    if (weft__link_signal(a, m, &deliver) && !deliver)
      return;
  }
  if (weft__msg_hand_out(m, loop) != 0) {
    /* Sealed at the sender, so only memory can fail here. */
    atomic_fetch_add_explicit(&a->sys->dead_letters, 1, memory_order_relaxed);
    return;
  }
  rc = a->fn(a, a->state, m);
  if (rc < 0 && m->state == WEFT__MSG_DELIVERING && weft_msg_is_request(m)) {
    /* It fails on a request it did not answer: the asker gets the
     * reason (as an Erlang caller gets the callee's exit reason). */
    weft_reply_t* r;
    if (weft__msg_take_reply_unlisted(m, &r) == 0)
      (void)weft_reply_error(r, rc);
  }
  weft__msg_take_back(m, loop);
  if (rc < 0 && !(a->flags & WEFT__A_STOP)) {
    a->flags |= WEFT__A_STOP;
    a->reason = rc;
  }
}

/* Light node `l` in `a`'s turn on `s`: each entry delivered in the
 * scheduler's spare message (see "light messages"), the behaviour's batch
 * pushed after each; once the actor is to stop, the rest are dead
 * letters. Frees `l`; returns its number of messages. */
static unsigned handle_light(weft_actor_t* a, weft_loop_t* loop,
                             weft__sched_t* s, light_t* l) {
  unsigned i, n = l->n;
  for (i = 0; i < n; i++) {
    weft_msg_t* m = s->spare;
    int rc;
    if (a->flags & WEFT__A_STOP) {
      light_dead(a->sys, a->id, l, i);
      return n;
    }
    if (m == NULL) {
      m = weft__msg_alloc(WEFT__MSG_DATA, LIGHT_MAX);
      if (m == NULL) { /* Lost, as an undecodable message is: counted. */
        atomic_fetch_add_explicit(&a->sys->dead_letters, 1,
                                  memory_order_relaxed);
        continue;
      }
      s->spare = m;
    }
    light_fill(m, l->aux, &l->e[i]);
    if (weft__msg_hand_out(m, loop) != 0) {
      /* Checked at the sender, so only memory can fail; hand_out freed
       * it. */
      s->spare = NULL;
      atomic_fetch_add_explicit(&a->sys->dead_letters, 1,
                                memory_order_relaxed);
      continue;
    }
    rc = a->fn(a, a->state, m);
    if (weft__msg_delivered_kept(m)) {
      s->spare = NULL; /* The behaviour's now. */
    } else {
      msgpack_zone_clear(weft__loop_zone(loop));
      if (!spare_clean(m)) {
        s->spare = NULL;
        weft_msg_free(m);
      }
    }
    out_end(s);
    if (rc < 0 && !(a->flags & WEFT__A_STOP)) {
      a->flags |= WEFT__A_STOP;
      a->reason = rc;
    }
  }
  weft__xfree(l);
  return n;
}

typedef struct mute_rec_s {
  struct mute_rec_s* next;
  weft_actor_id who;
} mute_rec_t;

/* Unmute every actor muted on `a`. */
static void unmute_all(weft_actor_t* a) {
  mute_rec_t* r = atomic_exchange_explicit(&a->mutees, NULL,
                                           memory_order_seq_cst);
  while (r != NULL) {
    mute_rec_t* next = r->next;
    weft_actor_t* m = weft__slot_enter(r->who);
    if (m != NULL) {
      unsigned yes = WEFT__MUTE_YES;
      /* The one who clears the mute holds the actor (see actor.c). */
      if (atomic_compare_exchange_strong_explicit(&m->muted, &yes,
                                                  WEFT__MUTE_NO,
                                                  memory_order_seq_cst,
                                                  memory_order_relaxed))
        weft__sched_queue(m);
      weft__slot_leave(r->who);
    }
    free(r);
    r = next;
  }
}

/* Try to mute `a` on the actor it sent to. True: a mute record holds `a`
 * now (or whoever cleared it first queued it). Called under a reference
 * on a's own slot. */
static bool mute(weft_actor_t* a) {
  weft_actor_id on = a->mute_on;
  weft_actor_t* t;
  mute_rec_t* r;
  void* head;
  bool still;
  unsigned yes = WEFT__MUTE_YES;
  a->mute_on = 0;
  t = weft__slot_enter(on);
  if (t == NULL)
    return false;
  r = WEFT__FAILABLE(malloc(sizeof(*r)));
  if (r == NULL || backlog(t) < t->sys->low_water) {
    free(r);
    weft__slot_leave(on);
    return false;
  }
  r->who = a->id;
  atomic_store_explicit(&a->muted, WEFT__MUTE_YES, memory_order_seq_cst);
  head = atomic_load_explicit(&t->mutees, memory_order_relaxed);
  do {
    r->next = head;
  } while (!atomic_compare_exchange_weak_explicit(
      &t->mutees, &head, r, memory_order_seq_cst, memory_order_relaxed));
  /* seq_cst (backlog's load of `popped`), against the receiver publishing
   * its pops and then taking the records: either it takes ours, or we see
   * it below the low mark. */
  still = backlog(t) >= t->sys->low_water;
  weft__slot_leave(on);
  if (still)
    return true;
  /* Drained meanwhile: unmute ourselves, unless the receiver did. */
  return !atomic_compare_exchange_strong_explicit(
      &a->muted, &yes, WEFT__MUTE_NO, memory_order_seq_cst,
      memory_order_relaxed);
}

/* After a turn of `n` messages: publish the pops, then the mailbox's
 * length against the limit and the low mark. */
static void check_load(weft_actor_t* a, unsigned n) {
  uint64_t len;
  /* seq_cst: before our look at `mutees` (see mute()). */
  atomic_store_explicit(
      &a->popped, atomic_load_explicit(&a->popped, memory_order_relaxed) + n,
      memory_order_seq_cst);
  len = backlog(a);
  if (len <= a->sys->high_water &&
      atomic_load_explicit(&a->sys->room_waiters, memory_order_seq_cst) > 0) {
    /* seq_cst: after our `popped` store, against a waiter that counts
     * itself and then looks at our length (weft_actor_send_wait()). */
    atomic_fetch_add_explicit(&a->sys->room_seq, 1, memory_order_seq_cst);
    weft__futex_wake_all(&a->sys->room_seq);
  }
  if (a->x != NULL && a->x->mailbox_limit != 0 &&
      len > a->x->mailbox_limit) {
    a->flags |= WEFT__A_STOP;
    a->reason = WEFT_EMAILBOXFULL;
    return;
  }
  if (len < a->sys->low_water &&
      atomic_load_explicit(&a->mutees, memory_order_seq_cst) != NULL)
    unmute_all(a);
}

int weft__actor_run(weft_loop_t* loop, weft__ready_t* r) {
  weft_actor_t* a = weft__container_of(r, weft_actor_t, ready);
  weft_actor_system_t* sys = a->sys;
  weft__sched_t* s = weft__sched_current();
  weft_actor_id id;
  unsigned n = 0;
  /* A scheduler being stopped: leave the actor where it is (held); the
   * system's free ends it. */
  if (weft__loop_closing(loop) || weft__loop_stopping(loop) ||
      atomic_load_explicit(&sys->closing, memory_order_acquire))
    return 1;
  weft__sched_turn(s, true);
  tl_actor = a;
  while (n < sys->batch) {
    weft__mpsc_node_t* node = weft__mpscs_pop(&a->mbox);
    if (node == NULL)
      break;
    if (is_light(node)) {
      n += handle_light(a, loop, s, (light_t*)node);
    } else {
      n++;
      handle(a, loop, weft__container_of(node, weft_msg_t, node));
      out_end(s);
    }
    if (a->flags & WEFT__A_STOP || a->mute_on != 0)
      break; /* Ended, or to be muted now. */
  }
  if (!(a->flags & WEFT__A_STOP))
    check_load(a, n);
  tl_actor = NULL;
  weft__sched_turn(s, false);
  if (a->flags & WEFT__A_STOP) {
    weft__actor_end(a, a->reason);
    weft__loop_after_callback(loop);
    return (int)n + 1;
  }
  if (!weft__mpscs_empty(&a->mbox) && a->mute_on == 0) {
    weft__sched_queue(a); /* Still ours: to the back of the queue. */
  } else {
    /* Let go (see "Who runs an actor"), under a reference on our slot. */
    id = a->id;
    if (weft__slot_enter(id) != NULL) {
      if (a->mute_on == 0 || !mute(a)) {
        atomic_store_explicit(&a->sched, WEFT__RUN_IDLE, memory_order_seq_cst);
        if (atomic_load_explicit(&a->mbox.head, memory_order_seq_cst) !=
                &a->mbox.sentinel &&
            atomic_exchange_explicit(&a->sched, WEFT__RUN_HELD,
                                     memory_order_seq_cst) == WEFT__RUN_IDLE)
          weft__sched_queue(a);
      }
      weft__slot_leave(id);
    }
  }
  weft__loop_after_callback(loop);
  return (int)n + 1;
}

/* ---- the end --------------------------------------------------------------- */

static void release(weft_actor_t* a, int reason, bool signal, bool named) {
  weft__actor_x_t* x = a->x;
  weft__mpsc_node_t* node;
  weft_actor_system_t* sys = a->sys;
  if (named)
    weft__registry_drop_id(sys, a->id);
  if (signal)
    weft__link_end(a, reason);
  weft__timer_end(a);
  while ((node = weft__mpscs_pop(&a->mbox)) != NULL) {
    weft_msg_t* m;
    if (is_light(node)) {
      light_dead(sys, a->id, (light_t*)node, 0);
      continue;
    }
    m = weft__container_of(node, weft_msg_t, node);
    if (m->tag == WEFT__TAG_ASK_REPLY)
      weft__ask_drop(m);
    else if (m->tag == WEFT__TAG_PLAIN)
      dead_letter(sys, a->id, m);
    else if (!signal || !weft__link_queued_at_end(a, m, reason))
      weft_msg_free(m);
  }
  unmute_all(a);
  if (x != NULL && x->on_stop != NULL)
    x->on_stop(a->state, reason);
  if (x != NULL && x->took_replies) {
    /* Handles it took and neither answered nor freed (its on_stop may
     * have): their callers learn now, with its failure's reason, or
     * WEFT_ECLOSED (an asker sees WEFT_EDEADACTOR), as Erlang's callers
     * of a process that exits do. The handles stay valid until the
     * system's end; an answer through one comes late. */
    weft__replies_settle(&x->replies, &sys->replies,
                         reason < 0 && reason != WEFT_ECLOSED ? reason
                                                              : WEFT_ECLOSED);
  }
  if (x != NULL) {
    free(x->links);
    free(x->watchers);
    free(x->monitors);
    free(x->timers);
    free(x);
  }
  weft__slot_free(a->id);
  weft__xfree(a);
  weft__system_live(sys, -1);
}

void weft__actor_end(weft_actor_t* a, int reason) {
  release(a, reason, true, weft__slot_close_named(a->id));
}

void weft__actor_destroy(weft_actor_t* a, void* arg) {
  (void)arg;
  /* The system is going: no signals (their receivers go too). */
  release(a, WEFT_ECLOSED, false, weft__slot_close_named(a->id));
}

/* ---- inside a behaviour ---------------------------------------------------- */

weft_actor_id weft_actor_self(const weft_actor_t* self) {
  return self != NULL ? self->id : 0;
}

weft_actor_system_t* weft_actor_system(const weft_actor_t* self) {
  return self != NULL ? self->sys : NULL;
}

weft_loop_t* weft_actor_loop(const weft_actor_t* self) {
  weft__sched_t* s = weft__sched_current();
  if (self == NULL || s == NULL)
    return NULL;
  return s->loop;
}

weft_actor_id weft_actor_sender(const weft_msg_t* msg) {
  if (msg == NULL || msg->tag != WEFT__TAG_PLAIN)
    return 0;
  return msg->aux;
}

int weft_actor_stop(weft_actor_t* self, int reason) {
  if (self == NULL)
    return WEFT_EINVAL;
  if (!(self->flags & WEFT__A_STOP)) {
    self->flags |= WEFT__A_STOP;
    self->reason = reason;
  }
  return 0;
}
