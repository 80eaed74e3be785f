/* pool_node.c - the distributed pool (weft/pool_node.h): pool tasks spread
 * over the nodes serving a group, through a NATS queue group.
 *
 * Subjects (docs/node.md; <c> the cluster, <g> the group, <n> a node):
 *   weft.<c>.pool.<g>          task offers: a NATS request, payload
 *                              [name, arg]; queue group "weft-pool"
 *   weft.<c>.pool.<g>.free     "a worker came free" (no payload meaning)
 *   weft.<c>.<n>.t.<r>.<id>    node n's remote pool r: answers for task
 *                              <id> ([0, node] taken, [1] busy, [2, value]
 *                              done, or an error header)
 *   weft.<c>.<n>.t.cancel      cancels for tasks node n runs: payload the
 *                              task's reply subject as a str
 *
 * Serving. A serving node holds one queue subscription (a slot) per free
 * worker: the server offers a task only to a node with a worker free, and
 * answers "no responders" when no node has one. A slot's first offer is
 * its task: the slot is drained at once (weft__nats_drain: the server
 * sends no more there, and what it sent before it knew still comes, to be
 * answered busy: nothing is lost, as it would be with nats.c's
 * auto-unsubscribe, which drops what comes past its limit), and a new
 * slot opens when a worker is free again. Never more tasks are taken than
 * the pool has workers.
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
 * Locks. Each side has one mutex; it is held while publishing (so that
 * nothing publishes once the node is leaving: the LEAVING watcher sets
 * `gone` under it) and while settling (settle never calls back). Lock
 * order: a server's lock, then its pool's (weft_task_cancel); the remote
 * pool's lock (taken in be_submit), then the remote's, then the node's
 * (weft_node_is_up); never the other way. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nats.h"
#include "node_internal.h"
#include "pool_internal.h"
#include "pool_node_internal.h"
#include "weft/pool_node.h"

#define NAME_MAX_LEN WEFT__WIRE_NAME_MAX
#define SUBJECT_MAX 256
#define QUEUE_NAME "weft-pool"
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

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000u;
}

/* ---- the wire ------------------------------------------------------------- */

size_t weft__pool_wire_str_header(unsigned char* out, size_t n) {
  if (n < 32) {
    out[0] = (unsigned char)(0xa0 | n);
    return 1;
  }
  if (n < 256) {
    out[0] = 0xd9;
    out[1] = (unsigned char)n;
    return 2;
  }
  out[0] = 0xda;
  out[1] = (unsigned char)(n >> 8);
  out[2] = (unsigned char)n;
  return 3;
}

/* A str at `p` (at most `left` bytes): its body and length, or -1. */
static int read_str(const unsigned char* p, size_t left,
                    const unsigned char** body, size_t* n, size_t* used) {
  size_t h, len;
  if (left < 1)
    return -1;
  if ((p[0] & 0xe0) == 0xa0) {
    h = 1;
    len = p[0] & 0x1f;
  } else if (p[0] == 0xd9 && left >= 2) {
    h = 2;
    len = p[1];
  } else if (p[0] == 0xda && left >= 3) {
    h = 3;
    len = (size_t)p[1] << 8 | p[2];
  } else {
    return -1;
  }
  if (left - h < len)
    return -1;
  *body = p + h;
  *n = len;
  *used = h + len;
  return 0;
}

/* A wire name (1-64 of [A-Za-z0-9_-]) as a str at `p`, copied to `out`. */
static int read_name(const unsigned char* p, size_t left, char* out,
                     size_t* used) {
  const unsigned char* body;
  size_t n;
  if (read_str(p, left, &body, &n, used) != 0 || n == 0 || n > NAME_MAX_LEN)
    return -1;
  memcpy(out, body, n);
  out[n] = '\0';
  return weft__wire_name_ok(out) ? 0 : -1;
}

int weft__pool_wire_read_task(const void* data,
                              size_t len,
                              char* name,
                              const unsigned char** arg,
                              size_t* arg_len) {
  const unsigned char* p = data;
  size_t used;
  if (p == NULL || len < 3 || p[0] != 0x92 ||
      read_name(p + 1, len - 1, name, &used) != 0)
    return WEFT_EDECODE;
  p += 1 + used;
  len -= 1 + used;
  if (len == 0 || weft__msgpack_validate(p, len) != 0)
    return WEFT_EDECODE;
  *arg = p;
  *arg_len = len;
  return 0;
}

/* `s` as a msgpack str at `out` (room for 3 + strlen(s)): its length. */
static size_t put_str(unsigned char* out, const char* s) {
  size_t n = strlen(s), h = weft__pool_wire_str_header(out, n);
  for (size_t i = 0; i < n; i++)
    out[h + i] = (unsigned char)s[i];
  return h + n;
}

size_t weft__pool_wire_task(unsigned char* out,
                            const char* name,
                            const void* arg,
                            size_t arg_len) {
  size_t h;
  out[0] = 0x92;
  h = 1 + put_str(out + 1, name);
  memcpy(out + h, arg, arg_len);
  return h + arg_len;
}

int weft__pool_wire_read_answer(const void* data,
                                size_t len,
                                int* kind,
                                char* node,
                                const unsigned char** val,
                                size_t* val_len) {
  const unsigned char* p = data;
  size_t used;
  if (p == NULL || len < 2)
    return WEFT_EDECODE;
  if (len == 2 && p[0] == 0x91 && p[1] == WEFT__POOL_BUSY) {
    *kind = WEFT__POOL_BUSY;
    return 0;
  }
  if (p[0] != 0x92 || len < 3)
    return WEFT_EDECODE;
  if (p[1] == WEFT__POOL_ACK) {
    if (read_name(p + 2, len - 2, node, &used) != 0 || used != len - 2)
      return WEFT_EDECODE;
    *kind = WEFT__POOL_ACK;
    return 0;
  }
  if (p[1] == WEFT__POOL_RESULT &&
      weft__msgpack_validate(p + 2, len - 2) == 0) {
    *kind = WEFT__POOL_RESULT;
    *val = p + 2;
    *val_len = len - 2;
    return 0;
  }
  return WEFT_EDECODE;
}

int weft__pool_wire_read_str(const void* data, size_t len, char* out,
                             size_t cap) {
  const unsigned char* body;
  size_t n, used;
  if (data == NULL || read_str(data, len, &body, &n, &used) != 0 ||
      used != len || n >= cap || memchr(body, '\0', n) != NULL)
    return WEFT_EDECODE;
  memcpy(out, body, n);
  out[n] = '\0';
  return 0;
}

/* A message's value as plain msgpack (a transferred buffer as a bin of
 * its bytes: weft__wire_flatten); `*buf` is set when a copy was made. */
static int msg_bytes(const weft_msg_t* m, msgpack_sbuffer* buf,
                     const void** out, size_t* len) {
  int err;
  if (m->nxfer == 0) {
    *out = m->data;
    *len = m->len;
    return 0;
  }
  msgpack_sbuffer_init(buf);
  err = weft__wire_flatten(m, buf);
  if (err != 0) {
    msgpack_sbuffer_destroy(buf);
    return err;
  }
  *out = buf->data;
  *len = buf->size;
  return 0;
}

/* ---- serving ------------------------------------------------------------ */

typedef struct slot_s slot_t;
typedef struct stask_s stask_t;

struct weft_pool_server_s {
  atomic_int refs; /* Owner, watcher, slots, tasks, posted work. */
  weft_node_t* node;
  weft_pool_t* pool;
  weft_loop_t* loop; /* The node's. */
  unsigned cap;

  pthread_mutex_t lock;
  pthread_cond_t idle; /* in_flight fell to 0 (unserve waits). */
  bool stopped;        /* Unserved or leaving: no new slots. */
  bool gone;           /* The node is leaving: publish nothing. */
  bool watching;
  unsigned in_flight, max_in_flight, open;
  slot_t* slots; /* Every slot not yet unsubscribed. */
  stask_t* tasks;
  weft__nats_sub_t* cancel_sub;
  uint64_t taken, refused, canceled;

  char self[NAME_MAX_LEN + 1];
  char subject[SUBJECT_MAX];
  char free_subject[SUBJECT_MAX];
};

struct slot_s {
  slot_t* next;
  weft_pool_server_t* s;
  weft__nats_sub_t* sub; /* Written on the loop before any message. */
  bool used;             /* Under s->lock. */
};

struct stask_s {
  stask_t *next, *prev; /* s->tasks, under s->lock. */
  weft_pool_server_t* s;
  atomic_int refs;   /* The taker (until fut is stored) and the callback. */
  weft_task_t* fut;  /* Under s->lock. */
  bool cancel;       /* A cancel came before fut was stored. */
  char reply[SUBJECT_MAX];
};

static void server_unref(weft_pool_server_t* s) {
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_cond_destroy(&s->idle);
  pthread_mutex_destroy(&s->lock);
  weft__xfree(s);
}

static void server_ref(weft_pool_server_t* s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Publish unless the node is leaving; written at once (acks, results and
 * announcements are what submitters wait for: node_internal.h).
 * s->lock held. */
static void server_publish(weft_pool_server_t* s, const char* subject,
                           const void* data, size_t len, const char* error) {
  if (s->gone)
    return;
  if (error != NULL)
    (void)weft__node_publish(s->node, subject, NULL, data, len, error);
  else
    (void)weft__node_publish_now(s->node, subject, data, len);
}

static void stask_unref(stask_t* st) {
  if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
    return;
  weft_task_free(st->fut);
  server_unref(st->s);
  weft__xfree(st);
}

static void replenish(weft_pool_server_t* s);

/* A task we took settled here (the pool's thread): send its outcome. */
static void stask_done(void* ctx, int status, weft_msg_t* result) {
  stask_t* st = ctx;
  weft_pool_server_t* s = st->s;
  msgpack_sbuffer buf;
  const void* bytes = NULL;
  size_t len = 0;
  unsigned char* out = NULL;
  if (status == 0 && result == NULL)
    status = WEFT_EDECODE; /* Not what a pool gives with 0. */
  if (status == 0) {
    status = msg_bytes(result, &buf, &bytes, &len);
    if (status == 0) {
      out = weft__xalloc(len + 2);
      if (out == NULL) {
        status = WEFT_ENOMEM;
      } else {
        out[0] = 0x92;
        out[1] = WEFT__POOL_RESULT;
        memcpy(out + 2, bytes, len);
      }
      if (result->nxfer > 0)
        msgpack_sbuffer_destroy(&buf);
    }
  }
  pthread_mutex_lock(&s->lock);
  if (status == 0)
    server_publish(s, st->reply, out, len + 2, NULL);
  else
    server_publish(s, st->reply, NULL, 0, weft_err_name(status));
  if (st->prev != NULL)
    st->prev->next = st->next;
  else
    s->tasks = st->next;
  if (st->next != NULL)
    st->next->prev = st->prev;
  s->in_flight--;
  if (s->in_flight == 0)
    pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->lock);
  replenish(s);
  weft__xfree(out);
  stask_unref(st);
}

/* Answer a task offer with a short message (busy) or an error. */
static void answer(weft_pool_server_t* s, const char* reply, int kind,
                   int err) {
  unsigned char b[2] = {0x91, (unsigned char)kind};
  pthread_mutex_lock(&s->lock);
  if (err != 0)
    server_publish(s, reply, NULL, 0, weft_err_name(err));
  else
    server_publish(s, reply, b, sizeof(b), NULL);
  pthread_mutex_unlock(&s->lock);
}

/* A task offer; `first`: the first on its slot (nats.c's thread). */
static void take_offer(weft_pool_server_t* s, bool first,
                       const weft__nats_msg_t* nm) {
  char name[NAME_MAX_LEN + 1];
  const unsigned char* arg = NULL;
  size_t arg_len = 0, n;
  unsigned char ack[3 + NAME_MAX_LEN + 2];
  stask_t* st;
  weft_task_t* fut = NULL;
  bool busy = false;
  int err;
  if (nm->reply == NULL || strlen(nm->reply) >= SUBJECT_MAX) {
    weft__node_count_dropped(s->node, WEFT__NODE_DROPPED_DECODE);
    return; /* Nobody to answer: a post, not a request. */
  }
  if (weft__pool_wire_read_task(nm->data, nm->len, name, &arg, &arg_len) !=
      0) {
    weft__node_count_dropped(s->node, WEFT__NODE_DROPPED_DECODE);
    answer(s, nm->reply, 0, WEFT_EDECODE);
    return;
  }
  st = weft__xzalloc(sizeof(*st));
  pthread_mutex_lock(&s->lock);
  if (st == NULL || !first || s->stopped || s->in_flight >= s->cap) {
    busy = true;
    s->refused++;
  } else {
    s->in_flight++;
    s->taken++;
    if (s->in_flight > s->max_in_flight)
      s->max_in_flight = s->in_flight;
    st->s = s;
    atomic_init(&st->refs, 2);
    memcpy(st->reply, nm->reply, strlen(nm->reply) + 1);
    st->next = s->tasks;
    if (s->tasks != NULL)
      s->tasks->prev = st;
    s->tasks = st;
    server_ref(s);
    /* Taken: the submitter now knows who holds it. Before the task can
     * end (its result must come after). */
    ack[0] = 0x92;
    ack[1] = WEFT__POOL_ACK;
    n = 2 + put_str(ack + 2, s->self);
    server_publish(s, nm->reply, ack, n, NULL);
  }
  pthread_mutex_unlock(&s->lock);
  if (busy) {
    weft__xfree(st);
    answer(s, nm->reply, WEFT__POOL_BUSY, 0);
    return;
  }
  err = weft_pool_submit(s->pool, name, arg, arg_len, stask_done, st, &fut);
  if (err != 0) {
    /* Nothing runs: answer the error as the task's outcome. */
    atomic_fetch_sub_explicit(&st->refs, 1, memory_order_relaxed);
    stask_done(st, err, NULL);
    return;
  }
  pthread_mutex_lock(&s->lock);
  st->fut = fut;
  if (st->cancel)
    (void)weft_task_cancel(fut);
  pthread_mutex_unlock(&s->lock);
  stask_unref(st);
}

/* A slot's message (nats.c's thread): its one offer, whatever it is, so
 * the slot is replaced (or freed, with no worker free). */
static void slot_message(void* ctx, const weft__nats_msg_t* nm) {
  slot_t* sl = ctx;
  weft_pool_server_t* s = sl->s;
  bool first;
  pthread_mutex_lock(&s->lock);
  first = !sl->used && !s->stopped;
  if (first) {
    slot_t** pp = &s->slots;
    while (*pp != sl)
      pp = &(*pp)->next;
    *pp = sl->next;
    sl->used = true;
    s->open--;
  }
  pthread_mutex_unlock(&s->lock);
  /* The server is told to send no more here; what it sent meanwhile
   * still comes (and is answered busy). `sl` lives until slot_done. */
  if (first)
    weft__nats_drain(sl->sub);
  take_offer(s, first, nm);
  if (first)
    replenish(s);
}

static void slot_done(void* ctx) {
  slot_t* sl = ctx;
  weft_pool_server_t* s = sl->s;
  weft__xfree(sl);
  server_unref(s);
}

/* A cancel for a task we run (nats.c's thread). */
static void cancel_message(void* ctx, const weft__nats_msg_t* nm) {
  weft_pool_server_t* s = ctx;
  char reply[SUBJECT_MAX];
  stask_t* st;
  if (weft__pool_wire_read_str(nm->data, nm->len, reply, sizeof(reply)) !=
      0) {
    weft__node_count_dropped(s->node, WEFT__NODE_DROPPED_DECODE);
    return;
  }
  pthread_mutex_lock(&s->lock);
  for (st = s->tasks; st != NULL; st = st->next) {
    if (strcmp(st->reply, reply) == 0) {
      s->canceled++;
      if (st->fut != NULL)
        (void)weft_task_cancel(st->fut); /* Its callback waits for us. */
      else
        st->cancel = true;
      break;
    }
  }
  pthread_mutex_unlock(&s->lock);
}

static void cancel_done(void* ctx) {
  server_unref(ctx);
}

/* One slot more. The loop; s->lock held. */
static int open_slot(weft_pool_server_t* s) {
  slot_t* sl = weft__xzalloc(sizeof(*sl));
  int err;
  if (sl == NULL)
    return WEFT_ENOMEM;
  sl->s = s;
  server_ref(s); /* Until slot_done. */
  err = weft__node_subscribe(s->node, s->subject, QUEUE_NAME, slot_message,
                             slot_done, sl, &sl->sub);
  if (err != 0) {
    weft__xfree(sl);
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
    return err;
  }
  sl->next = s->slots;
  s->slots = sl;
  s->open++;
  return 0;
}

/* Unsubscribe the slots in `list` (the loop; no lock: a slot's `done` may
 * run here). */
static void close_slots(slot_t* list) {
  while (list != NULL) {
    slot_t* sl = list;
    list = sl->next;
    weft__nats_unsubscribe(sl->sub);
  }
}

/* Open as many slots as workers are free. Thread: any (a
 * task's end, an offer); weft__node_subscribe() is the loop's, but under
 * s->lock with `gone` unset the node has not started to leave, which is
 * all it needs (nats.c subscribes from any thread). */
static void replenish(weft_pool_server_t* s) {
  bool was_full;
  pthread_mutex_lock(&s->lock);
  if (!s->stopped) {
    was_full = s->open == 0;
    while (s->open + s->in_flight < s->cap && open_slot(s) == 0) {
    }
    /* Submitters that found every worker busy may offer again now. */
    if (was_full && s->open > 0) {
      unsigned char n = (unsigned char)(s->open < 0x7f ? s->open : 0x7f);
      server_publish(s, s->free_subject, &n, 1, NULL);
    }
  }
  pthread_mutex_unlock(&s->lock);
}

static void server_watch(void* ctx, const weft_node_event_t* ev);

/* Stop taking tasks (unserve, or the node leaving). Thread: the loop. */
static void server_stop(weft_pool_server_t* s, bool gone) {
  slot_t* slots;
  weft__nats_sub_t* csub;
  bool watching;
  pthread_mutex_lock(&s->lock);
  s->stopped = true;
  if (gone)
    s->gone = true;
  slots = s->slots;
  s->slots = NULL;
  csub = s->cancel_sub;
  s->cancel_sub = NULL;
  watching = s->watching;
  s->watching = false;
  pthread_mutex_unlock(&s->lock);
  close_slots(slots);
  if (csub != NULL)
    weft__nats_unsubscribe(csub);
  if (watching)
    weft__node_unwatch(s->node, server_watch, s);
}

static void server_watch(void* ctx, const weft_node_event_t* ev) {
  weft_pool_server_t* s = ctx;
  if ((int)ev->kind != WEFT__NODE_LEAVING)
    return;
  server_stop(s, true);
}

int weft_pool_serve(weft_node_t* node,
                    weft_pool_t* pool,
                    const char* group,
                    weft_pool_server_t** out) {
  weft_pool_server_t* s;
  const char* cluster;
  char cancel_subject[SUBJECT_MAX];
  int err;
  if (out != NULL)
    *out = NULL;
  if (node == NULL || pool == NULL || out == NULL ||
      !weft__wire_name_ok(group))
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(weft__node_loop(node)))
    return WEFT_EWRONGTHREAD;
  s = weft__xzalloc(sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  atomic_init(&s->refs, 1);
  s->node = node;
  s->pool = pool;
  s->loop = weft__node_loop(node);
  s->cap = weft__pool_capacity(pool);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->idle, NULL);
  cluster = weft__node_cluster(node);
  (void)snprintf(s->self, sizeof(s->self), "%s", weft_node_name(node));
  (void)snprintf(s->subject, sizeof(s->subject), "weft.%s.pool.%s", cluster,
                 group);
  (void)snprintf(s->free_subject, sizeof(s->free_subject),
                 "weft.%s.pool.%s.free", cluster, group);
  (void)snprintf(cancel_subject, sizeof(cancel_subject), "weft.%s.%s.t.cancel",
                 cluster, s->self);
  server_ref(s); /* The cancel subscription's. */
  err = weft__node_subscribe(node, cancel_subject, NULL, cancel_message,
                             cancel_done, s, &s->cancel_sub);
  if (err != 0) {
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
    server_unref(s);
    return err;
  }
  err = weft__node_watch(node, server_watch, s);
  if (err != 0) {
    weft__nats_unsubscribe(s->cancel_sub);
    server_unref(s);
    return err;
  }
  s->watching = true;
  pthread_mutex_lock(&s->lock);
  while (s->open < s->cap && (err = open_slot(s)) == 0) {
  }
  pthread_mutex_unlock(&s->lock);
  if (s->open == 0) {
    server_stop(s, false);
    server_unref(s);
    return err != 0 ? err : WEFT_ENOMEM;
  }
  *out = s;
  return 0;
}

int weft_pool_unserve(weft_pool_server_t* s) {
  if (s == NULL)
    return WEFT_EINVAL;
  server_stop(s, false);
  pthread_mutex_lock(&s->lock);
  while (s->in_flight > 0)
    pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);
  server_unref(s);
  return 0;
}

int weft_pool_server_stats(weft_pool_server_t* s,
                           weft_pool_server_stats_t* out) {
  if (s == NULL || out == NULL)
    return WEFT_EINVAL;
  pthread_mutex_lock(&s->lock);
  out->taken = s->taken;
  out->refused = s->refused;
  out->canceled = s->canceled;
  out->in_flight = s->in_flight;
  out->max_in_flight = s->max_in_flight;
  out->capacity = s->cap;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

/* ---- submitting: the remote pool's backend ------------------------------ */

enum { RT_WAIT, RT_SENT, RT_HELD };

typedef struct rtask_s rtask_t;
struct rtask_s {
  rtask_t *prev, *next; /* The wait or the flight list. */
  rtask_t* hnext;
  weft_task_t* t;
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
  pthread_cond_t empty; /* Nothing waits or flies (a close waits). */
  bool gone;            /* The node is leaving: no publish, no task. */
  bool ended;           /* The pool ended. */
  bool watching;
  rlist_t wait, flight;
  size_t nheld; /* Of `flight`, those taken by a node. */
  rtask_t* buckets[NBUCKETS];
  bool congested;
  unsigned credit, backoff_ms;
  uint64_t next_probe_ms;
  bool ticking;
  weft__nats_sub_t* inbox_sub;
  weft__nats_sub_t* free_sub;
  char subject[SUBJECT_MAX];
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
  while (*pp != rt)
    pp = &(*pp)->hnext;
  *pp = rt->hnext;
  if (rt->state == RT_HELD)
    r->nheld--;
  rlist_unlink(rt->state == RT_WAIT ? &r->wait : &r->flight, rt);
  weft__pool_task_release(rt->t);
  weft__xfree(rt);
  if (r->wait.n + r->flight.n == 0)
    pthread_cond_broadcast(&r->empty);
}

static void rt_settle(remote_t* r, rtask_t* rt, int status,
                      const void* bytes, size_t len) {
  (void)weft__pool_settle_bytes(rt->t, status, bytes, len);
  rt_drop(r, rt);
}

/* The task's reply subject: the prefix and its id. */
static void rt_reply(const remote_t* r, const rtask_t* rt, char* out) {
  (void)snprintf(out, SUBJECT_MAX, "%s%llu", r->reply_prefix,
                 (unsigned long long)rt->id);
}

/* No taker now: back off (the first time: congested). r->lock held. */
static void congest(remote_t* r) {
  uint64_t now = now_ms();
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
                       : r->flight.n - r->nheld < WINDOW)) {
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
    rt->since_ms = now_ms();
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
  uint64_t now = now_ms();
  rtask_t *rt, *next;
  pthread_mutex_lock(&r->lock);
  if (r->gone || r->wait.n + r->flight.n == 0) {
    r->ticking = false;
    pthread_mutex_unlock(&r->lock);
    weft_clear_timer(loop, r->timer);
    remote_unref(r); /* The timer's. */
    return;
  }
  for (rt = r->flight.head; rt != NULL; rt = next) {
    next = rt->next;
    if (rt->state == RT_SENT && now - rt->since_ms > r->ack_timeout_ms)
      requeue(r, rt);
    else if (rt->state == RT_HELD && now - rt->since_ms > HOLDER_GRACE_MS &&
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
  if (rt == NULL) {
    /* Settled already (a late or duplicate answer), or cancelled. A node
     * that says it took such a task (cancelled before its ack came, or
     * taken twice after a retry) is told to stop: nobody waits for it. */
    if (nm->status == 0 && nm->error == NULL && kind == WEFT__POOL_ACK)
      send_cancel_to(r, node, id);
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
    if (rt->state != RT_HELD)
      r->nheld++;
    rt->state = RT_HELD;
    memcpy(rt->holder, node, strlen(node) + 1);
    rt->since_ms = now_ms();
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
  (void)weft__node_publish(r->node, subject, NULL, b, put_str(b, reply),
                           NULL);
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
    if (status == WEFT_ECANCELED)
      send_cancel(r, rt);
    rt_settle(r, rt, status, NULL, 0);
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
  if (ev->kind == WEFT_NODE_DOWN && ev->node != NULL) {
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
  err = msg_bytes(m, &buf, &bytes, &len);
  if (err != 0)
    return err;
  rt = weft__xzalloc(sizeof(*rt) + 3 + strlen(name) + len);
  if (rt != NULL)
    rt->len = weft__pool_wire_task(rt->payload, name, bytes, len);
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
  if (rt != NULL) {
    send_cancel(r, rt);
    rt_drop(r, rt);
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
  const char* cluster;
  int err;
  if (out != NULL)
    *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (out == NULL || node == NULL || !weft__wire_name_ok(group) ||
      (o.on_down != WEFT_POOL_RETRY && o.on_down != WEFT_POOL_FAIL) ||
      o.ack_timeout_ms < 0)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(weft__node_loop(node)))
    return WEFT_EWRONGTHREAD;
  r = weft__xzalloc(sizeof(*r));
  if (r == NULL)
    return WEFT_ENOMEM;
  atomic_init(&r->refs, 1); /* The pool's, dropped by be_end. */
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->empty, NULL);
  r->node = node;
  r->nloop = weft__node_loop(node);
  r->retry = o.on_down == WEFT_POOL_RETRY;
  r->ack_timeout_ms = o.ack_timeout_ms > 0 ? (uint64_t)o.ack_timeout_ms : 2000;
  cluster = weft__node_cluster(node);
  (void)snprintf(r->cluster, sizeof(r->cluster), "%s", cluster);
  (void)snprintf(r->subject, sizeof(r->subject), "weft.%s.pool.%s", cluster,
                 group);
  (void)snprintf(
      r->reply_prefix, sizeof(r->reply_prefix), "weft.%s.%s.t.%llu.", cluster,
      weft_node_name(node),
      (unsigned long long)atomic_fetch_add_explicit(&next_remote, 1,
                                                    memory_order_relaxed));
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
