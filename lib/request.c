/* request.c - request/reply with a timeout on ports and workers, and the
 * blocking call for threads that run no loop (weft/request.h).
 *
 * Routes. A request is an ordinary data message whose `route` (internal.h)
 * carries its outcome: a message of kind WEFT__MSG_REPLY made with the
 * request, holding the call's id and a held core whose peer is the
 * requester's reply inbox. Whatever becomes of the request, that one
 * message goes back: filled with the reply's bytes (or swapped for the
 * replier's built message), or carrying a code: the replier's error,
 * WEFT_ENOREPLY when the request or its handle is freed unanswered,
 * WEFT_ECLOSED when the request is freed undelivered (a closed port's
 * mailbox, an ended worker's). The outcome exists before the request is
 * posted, so settling a call never allocates and cannot fail; the reply
 * handle the replier takes (weft_reply_t) is that outcome message.
 *
 * Inboxes. A requester on a loop has a hidden reply inbox for that loop: a
 * port of weft's own (hooks) whose control hook gets the outcomes, and a
 * table of the loop's pending calls. It lives while calls are pending
 * (they keep the loop alive) and goes when the last one settled: loop.c
 * has no hook at weft_loop_free(), and an attached port would keep
 * weft_loop_free() answering WEFT_EBUSY. A worker's loop torn down with
 * calls pending drops them without callbacks, as it drops timers. A
 * blocking caller has a thread-local inbox: a pair of cores on no loop,
 * made at the thread's first call, reused by every later one (no channel
 * per call) and freed at the thread's exit; it waits on it as
 * weft_port_receive_wait() does (spin briefly, then park on a futex).
 *
 * Late replies. Ids come from one 64-bit counter and are never reused. An
 * outcome that finds its call settled (timed out, cancelled, or its inbox
 * gone) is freed with `routed` still set, and its drop counts it: late
 * replies are counted in one place, whoever frees them.
 *
 * Handles on workers. A reply handle taken on a worker is listed on that
 * worker's loop; the worker's end answers the ones still listed with
 * WEFT_ECLOSED (and frees them, like all of the worker's memory). The
 * actor system lists those taken in a turn on the actor, whose end settles
 * their calls, and then on the system, whose end answers them
 * (weft__replies_divert, internal.h). */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Every call's id: never 0, never reused. */
static atomic_uint_least64_t next_id = 1;
/* Outcomes that came after their call settled. Relaxed: a count only. */
static atomic_uint_least64_t late_replies;

uint64_t weft_request_late_replies(void) {
  return atomic_load_explicit(&late_replies, memory_order_relaxed);
}

static uint64_t new_id(void) {
  return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
}

static bool delivered(const weft_msg_t* m) {
  return m->state == WEFT__MSG_DELIVERING || m->state == WEFT__MSG_KEPT ||
         m->state == WEFT__MSG_OWNED || m->state == WEFT__MSG_DELIVERED;
}

/* ---- outcomes ------------------------------------------------------------ */

static void unregister_handle(weft_msg_t* out);

/* An outcome freed with `routed` set missed its call (see the file
 * comment). Thread: any. */
static void outcome_drop(weft_msg_t* out) {
  if (out->route.core != NULL) {
    weft__port_unhold_pair(out->route.core);
    out->route.core = NULL;
  }
  atomic_fetch_add_explicit(&late_replies, 1, memory_order_relaxed);
}

/* The outcome of call `id`, to be posted on `core` (held from now on). Its
 * value is nil until a reply fills it (what an error outcome carries). */
static weft_msg_t* outcome_new(void* core, uint64_t id) {
  weft_msg_t* out = weft__msg_alloc(WEFT__MSG_REPLY, 0);
  if (out == NULL)
    return NULL;
  out->data[0] = (char)0xc0;
  out->len = 1;
  weft__core_hold_pair(core);
  out->route.drop = outcome_drop;
  out->route.reply = NULL;
  out->route.core = core;
  out->route.id = id;
  out->route.reg = NULL;
  out->route.listed = false;
  out->routed = true;
  return out;
}

/* Turn `out` (not posted) into an error outcome with `code`. */
static void outcome_set_error(weft_msg_t* out, int code) {
  out->data[0] = (char)0xc0; /* The inline buffer or a larger one. */
  out->len = 1;
  out->scanned = false;
  out->code = code;
}

/* An outcome made for nothing (the request was never sent): let it go
 * without counting it. */
static void outcome_discard(weft_msg_t* out) {
  out->routed = false;
  weft__port_unhold_pair(out->route.core);
  weft_msg_free(out);
}

/* Post outcome `out` and let its core go. A reply that cannot go (larger
 * than the inbox takes) goes as an error outcome with that code, which is
 * returned. With the requester's inbox closed (its call settled) the
 * outcome is dropped and counted: 0. Thread: any. */
static int outcome_post(weft_msg_t* out) {
  void* core = out->route.core;
  int err;
  out->route.core = NULL;
  err = weft__core_post_msg(core, &out);
  if (err != 0 && err != WEFT_ECLOSED) {
    outcome_set_error(out, err);
    if (weft__core_post_msg(core, &out) == 0)
      out = NULL;
  }
  if (out != NULL)
    weft_msg_free(out); /* Still routed: counted as late. */
  weft__port_unhold_pair(core);
  return err == WEFT_ECLOSED ? 0 : err;
}

/* A request freed with its route (its handle never taken): settle the call
 * with ENOREPLY if the replier had it, else ECLOSED. Thread: any. */
static void request_drop(weft_msg_t* req) {
  weft_msg_t* out = req->route.reply;
  req->route.reply = NULL;
  outcome_set_error(out, delivered(req) ? WEFT_ENOREPLY : WEFT_ECLOSED);
  outcome_post(out);
}

/* Make `m` (being built) the request of call `id` answered on `core`. */
static int route_request(weft_msg_t* m, void* core, uint64_t id) {
  weft_msg_t* out = outcome_new(core, id);
  if (out == NULL)
    return WEFT_ENOMEM;
  m->route.drop = request_drop;
  m->route.reply = out;
  m->route.core = NULL;
  m->route.id = id;
  m->route.deadline = 0;
  m->route.reg = NULL;
  m->route.listed = false;
  m->routed = true;
  return 0;
}

/* Undo route_request() on a request that was not sent. */
static void unroute_request(weft_msg_t* m) {
  m->routed = false;
  outcome_discard(m->route.reply);
  m->route.reply = NULL;
}

/* What a request may carry: one msgpack value, as a reply does; refused
 * at the sender, so that the replier never fails to decode it (the call
 * would end as WEFT_ECLOSED, saying nothing of why). */
static int check_request(const weft_msg_t* m) {
  if (m->len == 0)
    return WEFT_EDECODE;
  return weft__msgpack_validate(m->data, m->len);
}

/* A data message of `len` bytes (a copy), for the byte variants. */
static int bytes_msg(const void* bytes, size_t len, weft_msg_t** out) {
  *out = NULL;
  if (bytes == NULL || len == 0)
    return WEFT_EINVAL;
  *out = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (*out == NULL)
    return WEFT_ENOMEM;
  memcpy((*out)->data, bytes, len);
  (*out)->len = len;
  return 0;
}

/* Where a request goes: a port (its handle) or a worker (its post core). */
typedef weft__post_fn post_fn;

static int post_port(void* to, weft_msg_t** msg) {
  return weft__port_post_msg(to, msg);
}

static int post_core(void* to, weft_msg_t** msg) {
  return weft__core_post_msg(to, msg);
}

/* ---- requester on a loop -------------------------------------------------- */

typedef struct lstate_s lstate_t;
typedef struct call_s call_t;

struct call_s {
  call_t* next; /* Table chain, or the cancelled list. */
  uint64_t id;
  weft_reply_cb cb;
  void* ctx;
  weft_timer_id timer; /* 0: no timeout. */
  lstate_t* ls;
};

typedef struct {
  call_t* head;
} bucket_t;

/* A loop's requester side (owner loop only). */
struct lstate_s {
  lstate_t* next; /* The thread's other states (one per loop). */
  weft_loop_t* loop;
  weft_port_t* inbox; /* Weft's own port; its control hook gets outcomes. */
  void* sender;       /* The inbox's peer core: outcomes are posted on it. */
  bucket_t* table;    /* Pending calls by id; `mask` + 1 buckets. */
  size_t mask;
  size_t pending;   /* Calls in the table. */
  call_t* cancelled; /* Cancelled, callback not run yet. */
  weft__tracked_t tracked;
};

static _Thread_local lstate_t* tl_states;

static lstate_t* lstate_find(const weft_loop_t* loop) {
  lstate_t* ls;
  for (ls = tl_states; ls != NULL; ls = ls->next) {
    if (ls->loop == loop)
      return ls;
  }
  return NULL;
}

static void calls_free(call_t* c) {
  while (c != NULL) {
    call_t* next = c->next;
    weft__local_free(c);
    c = next;
  }
}

/* Release the loop's inbox and table (nothing pending: the calls still in
 * it at a teardown are dropped without callbacks, as the loop drops its
 * timers). Outcomes still on their way find the inbox closed and are
 * counted late. Thread: owner loop. */
static void lstate_close(lstate_t* ls) {
  lstate_t** pp;
  size_t i;
  for (pp = &tl_states; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == ls) {
      *pp = ls->next;
      break;
    }
  }
  weft__loop_untrack(&ls->tracked);
  for (i = 0; i <= ls->mask; i++)
    calls_free(ls->table[i].head);
  calls_free(ls->cancelled);
  weft__port_release(ls->inbox);
  weft__port_drop_in_transit(ls->sender);
  weft__local_free(ls->table);
  weft__local_free(ls);
}

static void lstate_teardown(weft__tracked_t* t) {
  lstate_close(weft__container_of(t, lstate_t, tracked));
}

/* Nothing pending any more: the inbox goes (see the file comment). */
static void lstate_settled(lstate_t* ls) {
  if (ls->pending == 0 && ls->cancelled == NULL)
    lstate_close(ls);
}

static call_t** table_slot(lstate_t* ls, uint64_t id) {
  call_t** pp = &ls->table[id & ls->mask].head;
  while (*pp != NULL && (*pp)->id != id)
    pp = &(*pp)->next;
  return pp;
}

/* Take call `id` out of the table (NULL: not pending). */
static call_t* table_take(lstate_t* ls, uint64_t id) {
  call_t** pp = table_slot(ls, id);
  call_t* c = *pp;
  if (c != NULL) {
    *pp = c->next;
    c->next = NULL;
    ls->pending--;
  }
  return c;
}

static int table_put(lstate_t* ls, call_t* c) {
  call_t** pp;
  if (ls->pending > 2 * ls->mask) {
    /* Grow: ids are consecutive per loop mostly, so the low bits spread. */
    size_t n = 2 * (ls->mask + 1), i;
    bucket_t* t = weft__local_calloc(n * sizeof(*t));
    if (t == NULL)
      return WEFT_ENOMEM;
    for (i = 0; i <= ls->mask; i++) {
      call_t* e = ls->table[i].head;
      while (e != NULL) {
        call_t* next = e->next;
        e->next = t[e->id & (n - 1)].head;
        t[e->id & (n - 1)].head = e;
        e = next;
      }
    }
    weft__local_free(ls->table);
    ls->table = t;
    ls->mask = n - 1;
  }
  pp = &ls->table[c->id & ls->mask].head;
  c->next = *pp;
  *pp = c;
  ls->pending++;
  return 0;
}

static void inbox_message(weft_port_t* port, weft_msg_t* msg) {
  (void)port;
  (void)msg; /* Outcomes are control messages: data never comes here. */
}

static void inbox_messageerror(weft_port_t* port, int err) {
  (void)port;
  (void)err;
}

/* The call left the table: it no longer keeps the loop alive, and its
 * timer goes. */
static void call_finish(lstate_t* ls, call_t* c) {
  if (c->timer != 0)
    weft_clear_timer(ls->loop, c->timer);
  c->timer = 0;
  weft__loop_keepalive(ls->loop, -1);
}

/* An outcome reached the loop's inbox. Thread: owner loop. */
static void inbox_control(weft_port_t* port, weft_msg_t* m) {
  lstate_t* ls = weft__port_owner(port);
  weft_loop_t* loop = ls->loop;
  weft_msg_t* reply = NULL;
  call_t* c;
  int status;
  if (m->kind != WEFT__MSG_REPLY || !m->routed ||
      (c = table_take(ls, m->route.id)) == NULL) {
    weft_msg_free(m); /* Its call settled already: counted late. */
    return;
  }
  m->routed = false;
  call_finish(ls, c);
  status = m->code;
  if (status == 0) {
    status = weft__msg_hand_out(m, loop); /* Freed on an error. */
    if (status == 0)
      reply = m;
  } else {
    weft_msg_free(m); /* The replier's error: no value to hand out. */
  }
  c->cb(c->ctx, status, reply);
  if (reply != NULL)
    weft__msg_take_back(reply, loop);
  weft__local_free(c);
  weft__loop_after_callback(loop);
  lstate_settled(ls);
}

static const weft__port_hooks_t inbox_hooks = {inbox_message,
                                               inbox_messageerror,
                                               inbox_control};

/* The loop's state, made with its inbox on the first pending call. */
static int lstate_open(weft_loop_t* loop, lstate_t** out) {
  lstate_t* ls = lstate_find(loop);
  int err;
  if (ls != NULL) {
    *out = ls;
    return 0;
  }
  ls = weft__local_calloc(sizeof(*ls));
  if (ls == NULL)
    return WEFT_ENOMEM;
  ls->mask = 15;
  ls->table = weft__local_calloc((ls->mask + 1) * sizeof(*ls->table));
  if (ls->table == NULL) {
    weft__local_free(ls);
    return WEFT_ENOMEM;
  }
  err = weft__channel_new_detached(loop, &ls->inbox, &ls->sender);
  if (err != 0) {
    weft__local_free(ls->table);
    weft__local_free(ls);
    return err;
  }
  weft__port_set_hooks(ls->inbox, &inbox_hooks, ls);
  ls->loop = loop;
  ls->tracked.teardown = lstate_teardown;
  weft__loop_track(loop, &ls->tracked);
  ls->next = tl_states;
  tl_states = ls;
  *out = ls;
  return 0;
}

static void on_timeout(weft_loop_t* loop, void* arg) {
  call_t* c = arg;
  lstate_t* ls = c->ls;
  (void)loop;
  c->timer = 0; /* Gone already (a timeout is released before it runs). */
  table_take(ls, c->id);
  call_finish(ls, c);
  c->cb(c->ctx, WEFT_ETIMEDOUT, NULL);
  weft__local_free(c);
  lstate_settled(ls);
}

static void on_cancelled(weft_loop_t* loop, void* arg) {
  call_t* c = arg;
  lstate_t* ls = c->ls;
  call_t** pp;
  (void)loop;
  for (pp = &ls->cancelled; *pp != c; pp = &(*pp)->next) {
  }
  *pp = c->next;
  weft__loop_keepalive(ls->loop, -1);
  c->cb(c->ctx, WEFT_ECANCELED, NULL);
  weft__local_free(c);
  lstate_settled(ls);
}

static int loop_request(post_fn post,
                        void* to,
                        weft_msg_t** msg,
                        int64_t timeout_ms,
                        weft_reply_cb cb,
                        void* ctx,
                        uint64_t* id) {
  weft_loop_t* loop = weft_loop_current();
  lstate_t* ls;
  call_t* c;
  int err;
  if (id != NULL)
    *id = 0;
  if (loop == NULL)
    return WEFT_ENOLOOP;
  err = check_request(*msg);
  if (err != 0)
    return err;
  err = lstate_open(loop, &ls);
  if (err != 0)
    return err;
  c = weft__local_calloc(sizeof(*c));
  if (c == NULL) {
    lstate_settled(ls);
    return WEFT_ENOMEM;
  }
  c->id = new_id();
  c->cb = cb;
  c->ctx = ctx;
  c->ls = ls;
  err = route_request(*msg, ls->sender, c->id);
  if (err == 0 && timeout_ms > 0) {
    /* From the loop's cached time, as the timer below counts (no clock
     * read per request). */
    if (timeout_ms <= INT64_MAX / 2000000)
      (*msg)->route.deadline =
          (uv_now(weft_loop_uv(loop)) + (uint64_t)timeout_ms) * 1000000u;
    err = weft_set_timeout(loop, (uint64_t)timeout_ms, on_timeout, c,
                           &c->timer);
    if (err != 0)
      unroute_request(*msg);
  }
  if (err == 0) {
    err = table_put(ls, c);
    if (err != 0) {
      if (c->timer != 0)
        weft_clear_timer(loop, c->timer);
      unroute_request(*msg);
    }
  }
  if (err != 0) {
    weft__local_free(c);
    lstate_settled(ls);
    return err;
  }
  weft__loop_keepalive(loop, 1);
  if (id != NULL)
    *id = c->id;
  err = post(to, msg);
  if (err != 0) {
    if (id != NULL)
      *id = 0;
    table_take(ls, c->id);
    call_finish(ls, c);
    unroute_request(*msg);
    weft__local_free(c);
    lstate_settled(ls);
  }
  return err;
}

static bool buildable(weft_msg_t** msg) {
  return msg != NULL && *msg != NULL &&
         (*msg)->state == WEFT__MSG_BUILDING && (*msg)->kind == WEFT__MSG_DATA &&
         !(*msg)->routed;
}

int weft_port_request_msg(weft_port_t* port,
                          weft_msg_t** msg,
                          int64_t timeout_ms,
                          weft_reply_cb cb,
                          void* ctx,
                          uint64_t* id) {
  if (id != NULL)
    *id = 0;
  if (port == NULL || cb == NULL || !buildable(msg))
    return WEFT_EINVAL;
  return loop_request(post_port, port, msg, timeout_ms, cb, ctx, id);
}

int weft_port_request(weft_port_t* port,
                      const void* bytes,
                      size_t len,
                      int64_t timeout_ms,
                      weft_reply_cb cb,
                      void* ctx,
                      uint64_t* id) {
  weft_msg_t* m;
  int err;
  if (id != NULL)
    *id = 0;
  if (port == NULL || cb == NULL || bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (weft_loop_current() == NULL)
    return WEFT_ENOLOOP;
  err = bytes_msg(bytes, len, &m);
  if (err == 0)
    err = weft_port_request_msg(port, &m, timeout_ms, cb, ctx, id);
  weft_msg_free(m);
  return err;
}

int weft_worker_request_msg(weft_worker_t* w,
                            weft_msg_t** msg,
                            int64_t timeout_ms,
                            weft_reply_cb cb,
                            void* ctx,
                            uint64_t* id) {
  void* core;
  int err;
  if (id != NULL)
    *id = 0;
  if (w == NULL || cb == NULL || !buildable(msg))
    return WEFT_EINVAL;
  err = weft__worker_post_core(w, &core);
  if (err != 0)
    return err;
  return loop_request(post_core, core, msg, timeout_ms, cb, ctx, id);
}

int weft_worker_request(weft_worker_t* w,
                        const void* bytes,
                        size_t len,
                        int64_t timeout_ms,
                        weft_reply_cb cb,
                        void* ctx,
                        uint64_t* id) {
  weft_msg_t* m;
  int err;
  if (id != NULL)
    *id = 0;
  if (w == NULL || cb == NULL || bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (weft_loop_current() == NULL)
    return WEFT_ENOLOOP;
  err = bytes_msg(bytes, len, &m);
  if (err == 0)
    err = weft_worker_request_msg(w, &m, timeout_ms, cb, ctx, id);
  weft_msg_free(m);
  return err;
}

int weft_request_cancel(weft_loop_t* loop, uint64_t id) {
  lstate_t* ls;
  call_t* c;
  int err;
  if (loop == NULL)
    return WEFT_EINVAL;
  /* This thread's states only: another thread's loop is never found. */
  ls = lstate_find(loop);
  c = ls != NULL ? *table_slot(ls, id) : NULL;
  if (c == NULL)
    return WEFT_EINVAL;
  /* First the task (it may fail): the call stays pending if it does. */
  err = weft_set_immediate(loop, on_cancelled, c, NULL);
  if (err != 0)
    return err;
  table_take(ls, id);
  if (c->timer != 0)
    weft_clear_timer(loop, c->timer);
  c->timer = 0;
  /* Still alive in the loop's count until its callback ran. */
  c->next = ls->cancelled;
  ls->cancelled = c;
  return 0;
}

/* ---- requester, blocking ------------------------------------------------ */

/* The thread's reply inbox (see the file comment). */
typedef struct {
  void* inbox;  /* Receives outcomes; this thread is its one consumer. */
  void* sender; /* Its peer: outcomes are posted on it. */
} tinbox_t;

static _Thread_local tinbox_t tl_inbox;
static pthread_key_t inbox_key;
static pthread_once_t inbox_once = PTHREAD_ONCE_INIT;
static int inbox_key_err;

/* Thread exit: the inbox goes; outcomes still in it, or still on their
 * way, are counted late. */
static void inbox_at_exit(void* arg) {
  (void)arg;
  if (tl_inbox.inbox != NULL) {
    weft__port_drop_in_transit(tl_inbox.inbox);
    weft__port_drop_in_transit(tl_inbox.sender);
    tl_inbox.inbox = tl_inbox.sender = NULL;
  }
}

static void inbox_key_init(void) {
  inbox_key_err = pthread_key_create(&inbox_key, inbox_at_exit);
}

static int inbox_get(tinbox_t** out) {
  tinbox_t* t = &tl_inbox;
  int err;
  *out = t;
  if (t->inbox != NULL)
    return 0;
  pthread_once(&inbox_once, inbox_key_init);
  if (inbox_key_err != 0)
    return WEFT_ENOMEM;
  err = weft__inbox_new(&t->inbox, &t->sender);
  if (err != 0)
    return err;
  /* Any non-NULL value: the destructor runs only for those. */
  if (pthread_setspecific(inbox_key, t) != 0) {
    inbox_at_exit(NULL);
    return WEFT_ENOMEM;
  }
  return 0;
}

static int blocking_call(post_fn post,
                         void* to,
                         weft_msg_t** msg,
                         int64_t timeout_ms,
                         weft_msg_t** reply) {
  tinbox_t* t;
  weft_msg_t* m;
  int64_t deadline = -1;
  uint64_t id;
  int err = check_request(*msg);
  if (err != 0)
    return err;
  err = inbox_get(&t);
  if (err != 0)
    return err;
  id = new_id();
  err = route_request(*msg, t->sender, id);
  if (err != 0)
    return err;
  if (timeout_ms > 0) /* 0 or negative: no limit. */
    deadline = weft__deadline_ns(timeout_ms);
  if (deadline > 0)
    (*msg)->route.deadline = (uint64_t)deadline;
  err = post(to, msg);
  if (err != 0) {
    unroute_request(*msg);
    return err;
  }
  for (;;) {
    err = weft__core_wait(t->inbox, deadline, &m);
    if (err != 0)
      return err; /* WEFT_ETIMEDOUT: the outcome will be counted late. */
    if (m->kind != WEFT__MSG_REPLY || !m->routed || m->route.id != id) {
      weft_msg_free(m); /* A call of this thread that timed out: late. */
      continue;
    }
    m->routed = false;
    if (m->code != 0) {
      err = m->code;
      weft_msg_free(m);
      return err;
    }
    return weft__msg_own(m, NULL, reply);
  }
}

int weft_port_call_msg(weft_port_t* port,
                       weft_msg_t** msg,
                       int64_t timeout_ms,
                       weft_msg_t** reply) {
  if (reply != NULL)
    *reply = NULL;
  if (port == NULL || reply == NULL || !buildable(msg))
    return WEFT_EINVAL;
  return blocking_call(post_port, port, msg, timeout_ms, reply);
}

int weft_port_call(weft_port_t* port,
                   const void* bytes,
                   size_t len,
                   int64_t timeout_ms,
                   weft_msg_t** reply) {
  weft_msg_t* m;
  int err;
  if (reply != NULL)
    *reply = NULL;
  if (port == NULL || reply == NULL)
    return WEFT_EINVAL;
  err = bytes_msg(bytes, len, &m);
  if (err == 0)
    err = weft_port_call_msg(port, &m, timeout_ms, reply);
  weft_msg_free(m);
  return err;
}

int weft_worker_call_msg(weft_worker_t* w,
                         weft_msg_t** msg,
                         int64_t timeout_ms,
                         weft_msg_t** reply) {
  void* core;
  int err;
  if (reply != NULL)
    *reply = NULL;
  if (w == NULL || reply == NULL || !buildable(msg))
    return WEFT_EINVAL;
  err = weft__worker_post_core(w, &core);
  if (err != 0)
    return err;
  return blocking_call(post_core, core, msg, timeout_ms, reply);
}

int weft_worker_call(weft_worker_t* w,
                     const void* bytes,
                     size_t len,
                     int64_t timeout_ms,
                     weft_msg_t** reply) {
  weft_msg_t* m;
  int err;
  if (reply != NULL)
    *reply = NULL;
  if (w == NULL || reply == NULL)
    return WEFT_EINVAL;
  err = bytes_msg(bytes, len, &m);
  if (err == 0)
    err = weft_worker_call_msg(w, &m, timeout_ms, reply);
  weft_msg_free(m);
  return err;
}

/* ---- replier -------------------------------------------------------------- */

/* Handles taken on a worker: listed on the worker's loop, so that the
 * worker's end answers those still unanswered (WEFT_ECLOSED), or on the
 * list the thread diverts them to (weft__replies_divert). One lock for
 * every list: a handle may be answered from another thread while its
 * owner ends. */
typedef struct {
  /* cppcheck-suppress unusedStructMember ; used (container_of, track). */
  weft__tracked_t tracked;
  weft__replies_t list;
} reg_t;

static uv_mutex_t reg_lock;
static uv_once_t reg_once = UV_ONCE_INIT;
static _Thread_local reg_t* tl_reg;
static _Thread_local weft__replies_t* (*tl_divert)(void);

static void reg_init(void) {
  if (uv_mutex_init(&reg_lock) != 0)
    abort(); /* Cannot happen on Linux (no resources are allocated). */
}

static void unlink_handle(weft_msg_t* out) {
  if (out->route.reg_prev != NULL)
    out->route.reg_prev->route.reg_next = out->route.reg_next;
  else
    out->route.reg->head = out->route.reg_next;
  if (out->route.reg_next != NULL)
    out->route.reg_next->route.reg_prev = out->route.reg_prev;
  out->route.reg = NULL;
}

void weft__replies_answer(weft__replies_t* list, int code) {
  uv_once(&reg_once, reg_init);
  for (;;) {
    weft_msg_t* out;
    uv_mutex_lock(&reg_lock);
    out = list->head;
    if (out != NULL)
      unlink_handle(out);
    uv_mutex_unlock(&reg_lock);
    if (out == NULL)
      break;
    out->route.listed = false;
    outcome_set_error(out, code);
    outcome_post(out);
  }
}

void weft__replies_divert(weft__replies_t* (*fn)(void)) {
  tl_divert = fn;
}

static void link_handle(weft_msg_t* out, weft__replies_t* list) {
  out->route.reg = list;
  out->route.reg_prev = NULL;
  out->route.reg_next = list->head;
  if (list->head != NULL)
    list->head->route.reg_prev = out;
  list->head = out;
}

void weft__replies_settle(weft__replies_t* from, weft__replies_t* to,
                          int code) {
  weft_msg_t* early = NULL; /* Linked by route.reg_next. */
  weft_msg_t* out;
  uv_once(&reg_once, reg_init);
  uv_mutex_lock(&reg_lock);
  while ((out = from->head) != NULL) {
    /* Read under the lock: once on `to` and unlocked, another thread may
     * answer (and free) it. */
    weft_msg_t* e = outcome_new(out->route.core, out->route.id);
    unlink_handle(out);
    link_handle(out, to);
    if (e == NULL)
      continue; /* No memory: the call waits for the handle's answer. */
    outcome_set_error(e, code);
    e->route.reg_next = early;
    early = e;
  }
  uv_mutex_unlock(&reg_lock);
  while ((out = early) != NULL) {
    early = out->route.reg_next;
    out->route.reg_next = NULL;
    outcome_post(out);
  }
}

/* The worker ends: answer what its code still holds. Thread: the worker. */
static void reg_teardown(weft__tracked_t* t) {
  reg_t* reg = weft__container_of(t, reg_t, tracked);
  weft__loop_untrack(t);
  weft__replies_answer(&reg->list, WEFT_ECLOSED);
  tl_reg = NULL;
  weft__xfree(reg);
}

/* List a handle just taken: on the thread's diverted list, else on its
 * worker's if this thread is a worker on its own loop. */
static void register_handle(weft_msg_t* out) {
  weft__replies_t* list = tl_divert != NULL ? tl_divert() : NULL;
  if (list == NULL) {
    weft_port_t* parent = weft_parent_port();
    weft_loop_t* loop = weft_loop_current();
    if (parent == NULL || loop == NULL || weft__port_loop(parent) != loop)
      return;
    if (tl_reg == NULL) {
      tl_reg = weft__xalloc(sizeof(*tl_reg));
      if (tl_reg == NULL)
        return; /* Unlisted: the worker's end will not answer it. */
      tl_reg->list.head = NULL;
      tl_reg->tracked.teardown = reg_teardown;
      weft__loop_track(loop, &tl_reg->tracked);
    }
    list = &tl_reg->list;
  }
  uv_once(&reg_once, reg_init);
  uv_mutex_lock(&reg_lock);
  link_handle(out, list);
  uv_mutex_unlock(&reg_lock);
  out->route.listed = true;
}

/* The handle is being answered: off its owner's list. */
static void unregister_handle(weft_msg_t* out) {
  if (!out->route.listed)
    return;
  out->route.listed = false;
  uv_mutex_lock(&reg_lock);
  if (out->route.reg != NULL)
    unlink_handle(out);
  uv_mutex_unlock(&reg_lock);
}

bool weft_msg_is_request(const weft_msg_t* msg) {
  return msg != NULL && msg->kind == WEFT__MSG_DATA && msg->routed &&
         delivered(msg);
}

/* `list`: put the handle on its worker's list (one taken to be answered
 * later); weft_msg_reply() answers at once, on this thread, and skips the
 * list's two turns of its lock. */
static int take_reply(weft_msg_t* msg, weft_reply_t** out, bool list) {
  weft_msg_t* r;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (!weft_msg_is_request(msg))
    return WEFT_EINVAL;
  r = msg->route.reply;
  msg->routed = false;
  msg->route.reply = NULL;
  if (list)
    register_handle(r);
  *out = (weft_reply_t*)r;
  return 0;
}

int weft_msg_take_reply(weft_msg_t* msg, weft_reply_t** out) {
  return take_reply(msg, out, true);
}

int weft__msg_take_reply_unlisted(weft_msg_t* msg, weft_reply_t** out) {
  return take_reply(msg, out, false);
}

int weft_reply_send(weft_reply_t* r, const void* bytes, size_t len) {
  weft_msg_t* out = (weft_msg_t*)r;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  unregister_handle(out);
  err = bytes == NULL || len == 0 ? WEFT_EINVAL
                                  : weft__msgpack_validate(bytes, len);
  if (err == 0) {
    out->len = 0;
    err = weft_msg_append(out, bytes, len);
  }
  if (err != 0) {
    outcome_set_error(out, err);
    outcome_post(out);
    return err;
  }
  return outcome_post(out);
}

int weft_reply_send_msg(weft_reply_t* r, weft_msg_t** msg) {
  weft_msg_t* out = (weft_msg_t*)r;
  weft_msg_t* m;
  void* core;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  unregister_handle(out);
  if (!buildable(msg)) {
    outcome_set_error(out, WEFT_EINVAL);
    outcome_post(out);
    return WEFT_EINVAL;
  }
  m = *msg;
  err = check_request(m);
  if (err != 0) {
    outcome_set_error(out, err);
    outcome_post(out);
    return err;
  }
  /* The built message becomes the outcome; the handle's goes unused. */
  core = out->route.core;
  m->kind = WEFT__MSG_REPLY;
  m->route = out->route;
  m->route.core = NULL;
  m->routed = true;
  err = weft__core_post_msg(core, msg);
  if (err == 0) {
    out->routed = false;
    out->route.core = NULL;
    weft_msg_free(out);
    weft__port_unhold_pair(core);
    return 0;
  }
  /* Nothing moved: the message is the caller's again. */
  m->kind = WEFT__MSG_DATA;
  m->routed = false;
  if (err == WEFT_ECLOSED) {
    /* The call settled already: dropped and counted (once, below). */
    weft_msg_free(m);
    *msg = NULL;
  } else {
    outcome_set_error(out, err);
  }
  outcome_post(out);
  return err == WEFT_ECLOSED ? 0 : err;
}

int weft_reply_send_fmt(weft_reply_t* r, const char* fmt, ...) {
  weft_msg_t* m = NULL;
  va_list ap;
  int err;
  if (r == NULL)
    return WEFT_EINVAL;
  err = weft_msg_new(&m);
  if (err == 0) {
    va_start(ap, fmt);
    err = weft_msg_vpack(m, fmt, ap);
    va_end(ap);
  }
  if (err != 0) {
    weft_msg_free(m);
    weft_reply_error(r, err);
    return err;
  }
  err = weft_reply_send_msg(r, &m);
  weft_msg_free(m);
  return err;
}

int weft_reply_error(weft_reply_t* r, int code) {
  weft_msg_t* out = (weft_msg_t*)r;
  if (out == NULL)
    return WEFT_EINVAL;
  unregister_handle(out);
  outcome_set_error(out, code < 0 ? code : WEFT_EINVAL);
  outcome_post(out);
  return 0;
}

void weft_reply_free(weft_reply_t* r) {
  if (r != NULL)
    weft_reply_error(r, WEFT_ENOREPLY);
}

int weft_msg_reply(weft_msg_t* msg, const void* bytes, size_t len) {
  weft_reply_t* r;
  int err = take_reply(msg, &r, false);
  if (err != 0)
    return err;
  return weft_reply_send(r, bytes, len);
}

/* ---- for the node (lib/node.c) -------------------------------------------- */

int weft__request_route(weft_msg_t* m, void* core, uint64_t* id) {
  *id = new_id();
  return route_request(m, core, *id);
}

uint64_t weft__request_deadline(const weft_msg_t* m) {
  if (m == NULL || !m->routed || m->kind != WEFT__MSG_DATA ||
      m->route.drop != request_drop)
    return 0;
  return m->route.deadline;
}

weft_reply_t* weft__request_unroute(weft_msg_t* m) {
  weft_msg_t* out;
  if (!m->routed || m->kind != WEFT__MSG_DATA || m->route.drop != request_drop)
    return NULL;
  out = m->route.reply;
  m->routed = false;
  m->route.reply = NULL;
  return (weft_reply_t*)out;
}

void weft__outcome_done(weft_msg_t* out) {
  out->routed = false; /* Delivered to its sink: not a late reply. */
  weft_msg_free(out);
}

/* ---- for layers above lib/ ---------------------------------------------- */

int weft__request_async(weft__post_fn post,
                        void* to,
                        weft_msg_t** msg,
                        int64_t timeout_ms,
                        weft_reply_cb cb,
                        void* ctx,
                        uint64_t* id) {
  if (id != NULL)
    *id = 0;
  if (cb == NULL || !buildable(msg))
    return WEFT_EINVAL;
  return loop_request(post, to, msg, timeout_ms, cb, ctx, id);
}

int weft__request_call(weft__post_fn post,
                       void* to,
                       weft_msg_t** msg,
                       int64_t timeout_ms,
                       weft_msg_t** reply) {
  if (reply != NULL)
    *reply = NULL;
  if (reply == NULL || !buildable(msg))
    return WEFT_EINVAL;
  return blocking_call(post, to, msg, timeout_ms, reply);
}
