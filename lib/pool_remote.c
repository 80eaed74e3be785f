/* pool_remote.c - the distributed pool's submitting side
 * (weft/pool_node.h: weft_pool_new_remote): a pool whose tasks are offered
 * to the nodes serving a group (pool_server.c) instead of run on workers
 * of its own. The wire and subjects: pool_wire.c.
 *
 * Submitting. A remote pool's backend (pool_internal.h) keeps every task
 * until it settles: waiting (not offered, or refused), offered (sent, no
 * answer yet) or held (taken by a node). Waiting tasks are offered at once
 * (at most WINDOW unanswered) while offers are taken; a busy one is offered
 * again at once; after "no responders" the pool is congested: it offers
 * one task per backoff period (1 to 32 ms), as many as a "free"
 * announcement says came free, and one more per offer taken, until
 * nothing waits. A
 * timer on the pool's own thread runs the backoff, the ack timeout and
 * the check of holders that are no longer up; node-down events from the
 * node's loop retry or fail the tasks the node held.
 *
 * Durable (JetStream; docs/node.md "Durable tasks"). A durable remote pool
 * publishes [name, reply, arg] on weft.<c>.pool.<g>.tasks, which the
 * work-queue stream keeps; the stream's acknowledgement ({"seq":..}) comes
 * to the task's reply subject (stored: RT_STORED).
 *
 * Locks. A remote pool has one mutex; it is held while publishing (so
 * that nothing publishes once the node is leaving: the LEAVING watcher
 * sets `gone` under it) and while settling (settle never calls back).
 * Lock order: the remote pool's lock (taken in be_submit), then the
 * remote's, then the node's (weft_node_is_up); never the other way. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "jetstream.h"
#include "nats.h"
#include "node_internal.h"
#include "pool_internal.h"
#include "pool_node_internal.h"
#include "weft/pool_node.h"

#define NAME_MAX_LEN WEFT__WIRE_NAME_MAX
#define SUBJECT_MAX WEFT__POOL_SUBJECT_MAX
/* The remote pool's timer period, and its backoff bounds (ms). */
#define TICK_MS 5
#define BACKOFF_MIN_MS 1
#define BACKOFF_MAX_MS 32
/* A holder not up for this long after it took a task is taken as down
 * (its DOWN event may have come before its ack). */
#define HOLDER_GRACE_MS 1000
#define NBUCKETS 256
/* Offers sent and not yet answered, at most, while they are taken. */
#define WINDOW 64
/* Tasks offered at most for one "free" announcement. */
#define FREE_MAX 16

/* Durable: RT_SENT is published into the stream, its acknowledgement
 * not heard yet; RT_STORED is in the stream, taken by nobody yet.
 * RT_LIMBO: offered, then cancelled (or its pool destroyed) before any
 * answer came; its task is gone, and it is kept (without one) until the
 * answer comes, so that a node that took it is told to stop, or until
 * the ack timeout says nobody did. */
enum { RT_WAIT, RT_SENT, RT_HELD, RT_STORED, RT_LIMBO };

typedef struct rtask_s rtask_t;
struct rtask_s {
  rtask_t *prev, *next; /* The wait, flight or limbo list. */
  rtask_t* hnext;
  weft_task_t* t; /* NULL in limbo. */
  uint64_t id;
  int state;
  uint64_t since_ms; /* Sent, or taken. */
  char holder[NAME_MAX_LEN + 1];
  size_t len;
  unsigned char payload[]; /* [name, arg] */
};

typedef struct {
  rtask_t *head, *tail;
  size_t n;
} rlist_t;

typedef struct {
  atomic_int refs; /* The pool, subscriptions, the timer, posted work. */
  weft_node_t* node;
  weft_loop_t* nloop;
  weft_loop_t* ploop; /* The pool thread's: the timer. */
  bool retry;
  uint64_t ack_timeout_ms;
  size_t max_queue;

  pthread_mutex_t lock;
  pthread_cond_t empty; /* Nothing waits or flies (a close waits), or
                         * nothing is in limbo. */
  bool gone;            /* The node is leaving: no publish, no task. */
  bool ended;           /* The pool ended. */
  bool watching;
  rlist_t wait, flight;
  rlist_t limbo; /* RT_LIMBO: their answers are waited for. */
  size_t nheld; /* Of `flight`, those taken by a node. */
  bool durable;
  size_t nstored; /* Of `flight`, those in the stream (durable). */
  rtask_t* buckets[NBUCKETS];
  bool congested;
  unsigned credit, backoff_ms;
  uint64_t next_probe_ms;
  bool ticking;
  weft__nats_sub_t* inbox_sub;
  weft__nats_sub_t* free_sub;
  char subject[SUBJECT_MAX]; /* Offers, or (durable) the stream's. */
  char reply_prefix[192]; /* "weft.<c>.<n>.t.<r>.": names of 64 at most. */
  size_t reply_prefix_len;
  char cluster[NAME_MAX_LEN + 1];

  weft_timer_id timer; /* The pool thread only. */
} remote_t;

static atomic_uint_least64_t next_remote = 1;

static void remote_ref(remote_t* r) {
  atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

static void remote_unref(remote_t* r) {
  if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
    return;
  while (r->limbo.head != NULL) { /* Unanswered when the pool ended. */
    rtask_t* rt = r->limbo.head;
    r->limbo.head = rt->next;
    weft__xfree(rt);
  }
  pthread_cond_destroy(&r->empty);
  pthread_mutex_destroy(&r->lock);
  weft__xfree(r);
}

static void remote_unref_cb(void* arg) {
  remote_unref(arg);
}

static void rlist_unlink(rlist_t* l, rtask_t* rt) {
  if (rt->prev != NULL)
    rt->prev->next = rt->next;
  else
    l->head = rt->next;
  if (rt->next != NULL)
    rt->next->prev = rt->prev;
  else
    l->tail = rt->prev;
  rt->next = rt->prev = NULL;
  l->n--;
}

static void rlist_push(rlist_t* l, rtask_t* rt, bool front) {
  if (front) {
    rt->prev = NULL;
    rt->next = l->head;
    if (l->head != NULL)
      l->head->prev = rt;
    else
      l->tail = rt;
    l->head = rt;
  } else {
    rt->next = NULL;
    rt->prev = l->tail;
    if (l->tail != NULL)
      l->tail->next = rt;
    else
      l->head = rt;
    l->tail = rt;
  }
  l->n++;
}

static rtask_t* rt_find(remote_t* r, uint64_t id) {
  rtask_t* rt;
  for (rt = r->buckets[id % NBUCKETS]; rt != NULL; rt = rt->hnext)
    if (rt->id == id)
      return rt;
  return NULL;
}

/* Forget `rt` (settled by us or by a cancel) and release its task. */
static void rt_drop(remote_t* r, rtask_t* rt) {
  rtask_t** pp = &r->buckets[rt->id % NBUCKETS];
  bool limbo = rt->state == RT_LIMBO;
  while (*pp != rt)
    pp = &(*pp)->hnext;
  *pp = rt->hnext;
  if (rt->state == RT_HELD)
    r->nheld--;
  else if (rt->state == RT_STORED)
    r->nstored--;
  rlist_unlink(rt->state == RT_WAIT    ? &r->wait
               : rt->state == RT_LIMBO ? &r->limbo
                                       : &r->flight,
               rt);
  if (rt->t != NULL)
    weft__pool_task_release(rt->t);
  weft__xfree(rt);
  if (limbo ? r->limbo.n == 0 : r->wait.n + r->flight.n == 0)
    pthread_cond_broadcast(&r->empty);
}

/* Forget `rt`'s task (cancelled, or settled by a destroy): one offered
 * and not answered yet stays, without its task, until its answer says
 * whether a node took it (then that node is told to stop). r->lock held. */
static void rt_forget(remote_t* r, rtask_t* rt) {
  if (rt->state != RT_SENT || r->durable || r->gone) {
    rt_drop(r, rt);
    return;
  }
  weft__pool_task_release(rt->t);
  rt->t = NULL;
  rlist_unlink(&r->flight, rt);
  rt->state = RT_LIMBO;
  rlist_push(&r->limbo, rt, false);
  if (r->wait.n + r->flight.n == 0)
    pthread_cond_broadcast(&r->empty);
}

static void rt_settle(remote_t* r, rtask_t* rt, int status,
                      const void* bytes, size_t len) {
  (void)weft__pool_settle_bytes(rt->t, status, bytes, len);
  rt_drop(r, rt);
}

/* Settle `rt` as cancelled and forget it (rt_forget). r->lock held. */
static void rt_cancel(remote_t* r, rtask_t* rt) {
  (void)weft__pool_settle_bytes(rt->t, WEFT_ECANCELED, NULL, 0);
  rt_forget(r, rt);
}

/* The task's reply subject: the prefix and its id. */
static void rt_reply(const remote_t* r, const rtask_t* rt, char* out) {
  (void)snprintf(out, SUBJECT_MAX, "%s%llu", r->reply_prefix,
                 (unsigned long long)rt->id);
}

/* No taker now: back off (the first time: congested). r->lock held. */
static void congest(remote_t* r) {
  uint64_t now = weft__now_ms();
  if (!r->congested) {
    r->congested = true;
    r->backoff_ms = BACKOFF_MIN_MS;
  } else if (now >= r->next_probe_ms && r->backoff_ms < BACKOFF_MAX_MS) {
    r->backoff_ms *= 2; /* Once per period, not per refusal of a burst. */
  }
  r->credit = 0;
  r->next_probe_ms = now + r->backoff_ms;
}

/* Offer `rt` again, first. r->lock held. */
static void requeue(remote_t* r, rtask_t* rt) {
  if (rt->state != RT_WAIT) {
    if (rt->state == RT_HELD)
      r->nheld--;
    else if (rt->state == RT_STORED)
      r->nstored--;
    rlist_unlink(&r->flight, rt);
    rt->state = RT_WAIT;
    rlist_push(&r->wait, rt, true);
  }
}

/* Offer waiting tasks: while offers are taken, up to WINDOW unanswered
 * ones; while congested, `credit` of them. r->lock held. */
static void pump(remote_t* r) {
  char reply[SUBJECT_MAX];
  while (r->wait.head != NULL && !r->gone &&
         (r->congested ? r->credit > 0
                       : r->flight.n - r->nheld - r->nstored < WINDOW)) {
    rtask_t* rt = r->wait.head;
    int err;
    rt_reply(r, rt, reply);
    err = weft__node_publish(r->node, r->subject, reply, rt->payload, rt->len,
                             NULL);
    if (err == WEFT_EMSGSIZE) {
      rt_settle(r, rt, err, NULL, 0);
      continue;
    }
    if (err != 0) { /* Not connected: the timer offers it again. */
      congest(r);
      break;
    }
    rlist_unlink(&r->wait, rt);
    rt->state = RT_SENT;
    rt->since_ms = weft__now_ms();
    rlist_push(&r->flight, rt, false);
    if (r->congested)
      r->credit--;
  }
  if (r->wait.head == NULL)
    r->congested = false;
}

/* `rt`'s holder is down. r->lock held. */
static void holder_down(remote_t* r, rtask_t* rt) {
  if (r->retry)
    requeue(r, rt);
  else
    rt_settle(r, rt, WEFT_ENOTCONNECTED, NULL, 0);
}

static void tick(weft_loop_t* loop, void* arg);

/* Runs on the pool thread: start the timer. */
static void arm_tick(weft_loop_t* loop, void* arg) {
  remote_t* r = arg;
  pthread_mutex_lock(&r->lock);
  /* The posted work's reference becomes the timer's. */
  if (weft_set_interval(loop, TICK_MS, tick, r, &r->timer) != 0) {
    r->ticking = false;
    pthread_mutex_unlock(&r->lock);
    remote_unref(r);
    return;
  }
  pthread_mutex_unlock(&r->lock);
}

/* Have the pool thread run the timer while tasks are kept. r->lock held. */
static void ensure_tick(remote_t* r) {
  if (r->ticking || r->ended)
    return;
  remote_ref(r);
  if (weft__loop_post_task(r->ploop, arm_tick, r) != 0) {
    atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
    return; /* The next submit tries again. */
  }
  r->ticking = true;
}

/* Backoff, lost offers, holders gone silent. Thread: the pool's. */
static void tick(weft_loop_t* loop, void* arg) {
  remote_t* r = arg;
  uint64_t now;
  rtask_t *rt, *next;
  pthread_mutex_lock(&r->lock);
  /* Read under the lock: a stamp set by another thread just before must
   * not be later than `now` (an unsigned age then wrapped and a task sent
   * a moment ago was offered again, and taken twice). */
  now = weft__now_ms();
  if (r->gone || r->wait.n + r->flight.n + r->limbo.n == 0) {
    r->ticking = false;
    pthread_mutex_unlock(&r->lock);
    weft_clear_timer(loop, r->timer);
    remote_unref(r); /* The timer's. */
    return;
  }
  for (rt = r->limbo.head; rt != NULL; rt = next) {
    next = rt->next;
    if (now - rt->since_ms > r->ack_timeout_ms)
      rt_drop(r, rt); /* Nobody took it. */
  }
  for (rt = r->flight.head; rt != NULL; rt = next) {
    next = rt->next;
    if (rt->state == RT_SENT && now - rt->since_ms > r->ack_timeout_ms)
      requeue(r, rt);
    else if (rt->state == RT_HELD && !r->durable &&
             now - rt->since_ms > HOLDER_GRACE_MS &&
             !weft_node_is_up(r->node, rt->holder))
      holder_down(r, rt);
  }
  if (r->congested && now >= r->next_probe_ms) {
    if (r->credit == 0)
      r->credit = 1;
    r->next_probe_ms = now + r->backoff_ms;
  }
  pump(r);
  pthread_mutex_unlock(&r->lock);
}

/* An answer for one of our tasks (nats.c's thread). */
static void send_cancel_to(remote_t* r, const char* holder, uint64_t id);

/* Durable: the stream's answer to a task's publish ({"stream":..,
 * "seq":..} stored, or an error: published again after a backoff).
 * r->lock held. */
static void stored_message(remote_t* r, const weft__nats_msg_t* nm) {
  uint64_t id = 0;
  rtask_t* rt;
  int result = weft__js_result(nm->data, nm->len);
  if (result < 0 ||
      strncmp(nm->subject, r->reply_prefix, r->reply_prefix_len) != 0 ||
      weft__wire_read_id(nm->subject, r->reply_prefix_len, &id) != 0) {
    weft__node_count_dropped(r->node, WEFT__NODE_DROPPED_DECODE);
    return;
  }
  rt = rt_find(r, id);
  if (rt == NULL || rt->state != RT_SENT)
    return; /* Settled, or taken already (its ack came first). */
  if (result != 0) {
    requeue(r, rt);
    congest(r);
    return;
  }
  rt->state = RT_STORED;
  r->nstored++;
  if (r->congested) {
    r->credit++;
    r->backoff_ms = BACKOFF_MIN_MS;
  }
  pump(r);
}

static void inbox_message(void* ctx, const weft__nats_msg_t* nm) {
  remote_t* r = ctx;
  char node[NAME_MAX_LEN + 1];
  const unsigned char* val = NULL;
  size_t val_len = 0;
  uint64_t id = 0;
  int kind = 0;
  rtask_t* rt;
  pthread_mutex_lock(&r->lock);
  if (r->gone) {
    pthread_mutex_unlock(&r->lock);
    return;
  }
  if (r->durable && nm->status == 0 && nm->error == NULL && nm->len > 0 &&
      nm->data[0] == '{') {
    stored_message(r, nm);
    pthread_mutex_unlock(&r->lock);
    return;
  }
  if (strncmp(nm->subject, r->reply_prefix, r->reply_prefix_len) != 0 ||
      weft__wire_read_id(nm->subject, r->reply_prefix_len, &id) != 0 ||
      (nm->status == 0 && nm->error == NULL &&
       weft__pool_wire_read_answer(nm->data, nm->len, &kind, node, &val,
                                   &val_len) != 0)) {
    weft__node_count_dropped(r->node, WEFT__NODE_DROPPED_DECODE);
    pthread_mutex_unlock(&r->lock);
    return;
  }
  rt = rt_find(r, id);
  if (rt == NULL || rt->state == RT_LIMBO) {
    /* Settled already (a late or duplicate answer), or cancelled. A node
     * that says it took such a task (cancelled before its ack came, or
     * taken twice after a retry) is told to stop: nobody waits for it. */
    if (nm->status == 0 && nm->error == NULL && kind == WEFT__POOL_ACK)
      send_cancel_to(r, node, id);
    if (rt != NULL) /* Its answer came: taken (told), refused or ended. */
      rt_drop(r, rt);
  } else if (nm->status == WEFT_ENORESPONDERS) {
    if (rt->state == RT_SENT) { /* No worker free anywhere. */
      requeue(r, rt);
      congest(r);
    }
  } else if (nm->error == NULL && kind == WEFT__POOL_BUSY) {
    if (rt->state == RT_SENT) { /* Came to a slot just taken: again. */
      requeue(r, rt);
      if (r->congested)
        r->credit++;
      pump(r);
    }
  } else if (nm->error != NULL) {
    rt_settle(r, rt, weft__wire_read_error(nm->error), NULL, 0);
  } else if (kind == WEFT__POOL_ACK) {
    if (rt->state == RT_WAIT) { /* Taken after we offered it again. */
      rlist_unlink(&r->wait, rt);
      rlist_push(&r->flight, rt, false);
    }
    if (rt->state == RT_STORED)
      r->nstored--;
    if (rt->state != RT_HELD)
      r->nheld++;
    rt->state = RT_HELD;
    memcpy(rt->holder, node, strlen(node) + 1);
    rt->since_ms = weft__now_ms();
    if (r->congested) {
      r->credit++; /* A worker was free: there may be more. */
      r->backoff_ms = BACKOFF_MIN_MS;
    }
    pump(r);
  } else {
    rt_settle(r, rt, 0, val, val_len);
  }
  pthread_mutex_unlock(&r->lock);
}

/* A serving node has a worker free again (nats.c's thread). */
static void free_message(void* ctx, const weft__nats_msg_t* nm) {
  remote_t* r = ctx;
  const unsigned char* p = (const unsigned char*)nm->data;
  /* The payload says how many workers came free there (a positive
   * fixint); anything else counts as one. */
  unsigned n = nm->len == 1 && p[0] >= 1 && p[0] <= 0x7f ? p[0] : 1;
  pthread_mutex_lock(&r->lock);
  if (r->congested && !r->gone) {
    r->credit += n < FREE_MAX ? n : FREE_MAX;
    pump(r);
  }
  pthread_mutex_unlock(&r->lock);
}

/* Tell `holder` that task `id` (known there by its reply subject) is not
 * wanted any more. r->lock held. */
static void send_cancel_to(remote_t* r, const char* holder, uint64_t id) {
  char subject[SUBJECT_MAX];
  char reply[SUBJECT_MAX];
  unsigned char b[3 + SUBJECT_MAX];
  if (r->gone)
    return;
  (void)snprintf(reply, sizeof(reply), "%s%llu", r->reply_prefix,
                 (unsigned long long)id);
  (void)snprintf(subject, sizeof(subject), "weft.%s.%s.t.cancel", r->cluster,
                 holder);
  (void)weft__node_publish(r->node, subject, NULL, b,
                           weft__pool_wire_put_str(b, reply), NULL);
}

/* Tell the node that holds `rt` (if one does) that it was cancelled; one
 * offered and not acknowledged yet is told when its ack comes
 * (inbox_message). r->lock held. */
static void send_cancel(remote_t* r, const rtask_t* rt) {
  if (rt->state == RT_HELD)
    send_cancel_to(r, rt->holder, rt->id);
}

/* Settle everything kept with `status` (and tell holders, for a cancel).
 * r->lock held. */
static void settle_all(remote_t* r, int status) {
  while (r->wait.head != NULL)
    rt_settle(r, r->wait.head, status, NULL, 0);
  while (r->flight.head != NULL) {
    rtask_t* rt = r->flight.head;
    if (status == WEFT_ECANCELED) {
      send_cancel(r, rt);
      rt_cancel(r, rt);
    } else {
      rt_settle(r, rt, status, NULL, 0);
    }
  }
}

/* Unsubscribe (any thread; r->lock not held). */
static void remote_detach_subs(remote_t* r) {
  weft__nats_sub_t *a, *b;
  pthread_mutex_lock(&r->lock);
  a = r->inbox_sub;
  b = r->free_sub;
  r->inbox_sub = r->free_sub = NULL;
  pthread_mutex_unlock(&r->lock);
  if (a != NULL)
    weft__nats_unsubscribe(a);
  if (b != NULL)
    weft__nats_unsubscribe(b);
}

static void remote_watch(void* ctx, const weft_node_event_t* ev) {
  remote_t* r = ctx;
  if (ev->kind == WEFT_NODE_DOWN && ev->node != NULL && !r->durable) {
    rtask_t *rt, *next;
    pthread_mutex_lock(&r->lock);
    for (rt = r->flight.head; rt != NULL; rt = next) {
      next = rt->next;
      if (rt->state == RT_HELD && strcmp(rt->holder, ev->node) == 0)
        holder_down(r, rt);
    }
    pump(r);
    pthread_mutex_unlock(&r->lock);
  } else if ((int)ev->kind == WEFT__NODE_LEAVING) {
    pthread_mutex_lock(&r->lock);
    settle_all(r, WEFT_ENOTCONNECTED);
    while (r->limbo.head != NULL) /* Nobody can be told any more. */
      rt_drop(r, r->limbo.head);
    r->gone = true;
    r->watching = false;
    pthread_mutex_unlock(&r->lock);
    remote_detach_subs(r);
    weft__node_unwatch(r->node, remote_watch, r);
    remote_unref(r); /* The watcher's. */
  }
}

/* Posted to the node's loop by a close from another thread. */
static void remote_unwatch_task(weft_loop_t* loop, void* arg) {
  remote_t* r = arg;
  bool watching;
  (void)loop;
  pthread_mutex_lock(&r->lock);
  watching = r->watching;
  r->watching = false;
  pthread_mutex_unlock(&r->lock);
  if (watching) {
    weft__node_unwatch(r->node, remote_watch, r);
    remote_unref(r); /* The watcher's. */
  }
  remote_unref(r); /* This task's. */
}

static int be_submit(void* be, weft_task_t* t, const char* name,
                     weft_msg_t* m) {
  remote_t* r = be;
  msgpack_sbuffer buf;
  const void* bytes;
  size_t len;
  rtask_t* rt;
  int err;
  if (!weft__wire_name_ok(name))
    return WEFT_EINVAL;
  err = weft__pool_msg_bytes(m, &buf, &bytes, &len);
  if (err != 0)
    return err;
  rt = weft__xzalloc(sizeof(*rt) + 6 + strlen(name) + SUBJECT_MAX + len);
  if (rt != NULL && r->durable) {
    char reply[SUBJECT_MAX];
    rt->id = weft_task_id(t);
    rt_reply(r, rt, reply);
    rt->len = weft__pool_wire_dtask(rt->payload, name, reply, bytes, len);
  } else if (rt != NULL) {
    rt->len = weft__pool_wire_task(rt->payload, name, bytes, len);
  }
  if (m->nxfer > 0)
    msgpack_sbuffer_destroy(&buf);
  if (rt == NULL)
    return WEFT_ENOMEM;
  rt->t = t;
  rt->id = weft_task_id(t);
  rt->state = RT_WAIT;
  pthread_mutex_lock(&r->lock);
  if (r->gone || r->ended)
    err = WEFT_ENOTCONNECTED;
  else if (r->wait.n + r->flight.n - r->nheld >= r->max_queue)
    err = WEFT_EQUEUEFULL;
  if (err != 0) {
    pthread_mutex_unlock(&r->lock);
    weft__xfree(rt);
    return err;
  }
  rt->hnext = r->buckets[rt->id % NBUCKETS];
  r->buckets[rt->id % NBUCKETS] = rt;
  rlist_push(&r->wait, rt, false);
  ensure_tick(r);
  pump(r);
  pthread_mutex_unlock(&r->lock);
  return 0;
}

static void be_cancel(void* be, weft_task_t* t) {
  remote_t* r = be;
  rtask_t* rt;
  pthread_mutex_lock(&r->lock);
  rt = rt_find(r, weft_task_id(t));
  if (rt != NULL && rt->state != RT_LIMBO) {
    send_cancel(r, rt);
    rt_forget(r, rt);
  }
  pthread_mutex_unlock(&r->lock);
}

static void be_end(void* be, bool destroy) {
  remote_t* r = be;
  bool post = false;
  pthread_mutex_lock(&r->lock);
  r->ended = true;
  if (destroy)
    settle_all(r, WEFT_ECANCELED);
  while (r->wait.n + r->flight.n > 0)
    pthread_cond_wait(&r->empty, &r->lock);
  if (r->limbo.n > 0 && !r->gone) {
    /* Offers cancelled before their answer: hear whether a node took
     * them (and tell it to stop) before the inbox goes, for at most the
     * ack timeout (then nobody did). */
    struct timespec until;
    weft__cond_deadline_in(&until, r->ack_timeout_ms);
    while (r->limbo.n > 0 && !r->gone &&
           pthread_cond_timedwait(&r->empty, &r->lock, &until) == 0) {
    }
  }
  if (r->watching && !r->gone) {
    if (weft__loop_on_thread(r->nloop)) {
      r->watching = false;
      weft__node_unwatch(r->node, remote_watch, r);
      atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
    } else {
      post = true;
    }
  }
  pthread_mutex_unlock(&r->lock);
  remote_detach_subs(r);
  if (post) {
    remote_ref(r);
    if (weft__loop_post_task(r->nloop, remote_unwatch_task, r) != 0)
      atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
  }
  remote_unref(r); /* The pool's. */
}

static void be_counts(void* be, size_t* queued, size_t* running) {
  remote_t* r = be;
  pthread_mutex_lock(&r->lock);
  *queued = r->wait.n + r->flight.n - r->nheld;
  *running = r->nheld;
  pthread_mutex_unlock(&r->lock);
}

static const weft__pool_backend_t remote_ops = {
    be_submit, be_cancel, be_end, be_counts};

int weft_pool_new_remote(weft_pool_t** out,
                         weft_node_t* node,
                         const char* group,
                         const weft_pool_remote_opts_t* opts) {
  weft_pool_remote_opts_t o;
  weft_pool_opts_t po;
  weft_pool_t* pool = NULL;
  remote_t* r;
  char inbox[SUBJECT_MAX];
  char free_subject[SUBJECT_MAX];
  char stream[SUBJECT_MAX];
  char js_subject[SUBJECT_MAX];
  const char* cluster;
  uint64_t rid;
  int err;
  if (out != NULL)
    *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (out == NULL || node == NULL || !weft__wire_name_ok(group) ||
      (o.on_down != WEFT_POOL_RETRY && o.on_down != WEFT_POOL_FAIL) ||
      o.ack_timeout_ms < 0 ||
      (o.stream != NULL && !weft__wire_name_ok(o.stream)))
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(weft__node_loop(node)))
    return WEFT_EWRONGTHREAD;
  if (o.durable) {
    cluster = weft__node_cluster(node);
    (void)weft__pool_js_names(cluster, group, o.stream, stream, js_subject);
    err = weft__pool_js_ensure_stream(node, stream, js_subject);
    if (err != 0)
      return err;
  }
  r = weft__xzalloc(sizeof(*r));
  if (r == NULL)
    return WEFT_ENOMEM;
  atomic_init(&r->refs, 1); /* The pool's, dropped by be_end. */
  pthread_mutex_init(&r->lock, NULL);
  (void)weft__cond_init_mono(&r->empty);
  r->node = node;
  r->nloop = weft__node_loop(node);
  r->retry = o.on_down == WEFT_POOL_RETRY;
  r->ack_timeout_ms = o.ack_timeout_ms > 0 ? (uint64_t)o.ack_timeout_ms : 2000;
  cluster = weft__node_cluster(node);
  (void)snprintf(r->cluster, sizeof(r->cluster), "%s", cluster);
  (void)snprintf(r->subject, sizeof(r->subject), "weft.%s.pool.%s", cluster,
                 group);
  r->durable = o.durable;
  rid = atomic_fetch_add_explicit(&next_remote, 1, memory_order_relaxed);
  if (o.durable) {
    /* Its tasks outlive this process: a later one of the same node name
     * must not take their results for its own (ids restart at 1). */
    (void)snprintf(r->subject, sizeof(r->subject), "%s", js_subject);
    rid = rid * 0x9e3779b97f4a7c15ull ^ uv_hrtime() ^
          (uint64_t)getpid() << 40;
  }
  (void)snprintf(r->reply_prefix, sizeof(r->reply_prefix),
                 "weft.%s.%s.t.%llu.", cluster, weft_node_name(node),
                 (unsigned long long)rid);
  r->reply_prefix_len = strlen(r->reply_prefix);
  (void)snprintf(inbox, sizeof(inbox), "%s*", r->reply_prefix);
  (void)snprintf(free_subject, sizeof(free_subject), "weft.%s.pool.%s.free",
                 cluster, group);
  memset(&po, 0, sizeof(po));
  po.name = o.name != NULL ? o.name : "weft-rpool";
  po.max_queue = o.max_queue;
  err = weft__pool_new_backend(&pool, &po, &remote_ops, r);
  if (err != 0) {
    remote_unref(r);
    return err;
  }
  r->ploop = weft__pool_loop(pool);
  r->max_queue = weft__pool_max_queue(pool);
  remote_ref(r);
  err = weft__node_subscribe(node, inbox, NULL, inbox_message,
                             remote_unref_cb, r, &r->inbox_sub);
  if (err != 0) {
    atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
  } else {
    remote_ref(r);
    err = weft__node_subscribe(node, free_subject, NULL, free_message,
                               remote_unref_cb, r, &r->free_sub);
    if (err != 0)
      atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
  }
  if (err == 0) {
    remote_ref(r);
    err = weft__node_watch(node, remote_watch, r);
    if (err != 0)
      atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
    else
      r->watching = true;
  }
  if (err != 0) {
    weft_pool_destroy(pool); /* Unsubscribes (be_end). */
    return err;
  }
  *out = pool;
  return 0;
}
