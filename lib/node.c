/* node.c - a process as a node of a cluster over NATS (weft/node.h):
 * exported ports, ports to other nodes' exports, requests across hosts.
 * Who else is up (heartbeats, the members seen) is node_membership.c's;
 * this file publishes its heartbeats and turns what it reports into
 * events.
 *
 * Subjects (docs/node.md; <c> the cluster, <n> a node):
 *   weft.<c>.<n>.p.<name>  an export: a post is a message, a request one
 *                          with a NATS reply subject
 *   weft.<c>.<n>.r.<id>    <n>'s replies: one subscription on .r.*
 * A payload is one msgpack value, as weft's messages carry it; an error
 * reply has no payload and a `Weft-Error: <name>` header.
 *
 * No new thread and no extra hop: a post on a remote port publishes from
 * the posting thread (the port's far end is a sink, port.c); a message
 * from the network is posted on the exported port from nats.c's delivery
 * thread; a request from the network is routed (request.c) so that its
 * outcome comes to another sink, which publishes the reply from the
 * replier's thread. A reply to one of our requests settles its outcome
 * from nats.c's thread, as a local replier would.
 *
 * Lifetime. The parts that nats.c's threads and the sinks reach live in
 * `shared_t`, counted: the node, each export's subscription (until its
 * completion callback), the inbox subscription, and each sink's far core
 * (until port.c frees it) hold a reference. `lock` (read: whoever
 * publishes; write: leave) keeps the connection from closing under a
 * publish; after leave, publishers find `closed` and answer
 * WEFT_ENOTCONNECTED. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nats.h"
#include "node_internal.h"
#include "weft/node.h"

#define NAME_MAX_LEN WEFT__WIRE_NAME_MAX
#define SUBJECT_MAX 256

/* ---- pending tables ----------------------------------------------------- */

/* Ids waiting for something (a reply from the network, or an outcome from a
 * local replier), each with a value and a deadline. The ttl is the same for
 * all, so insertion order is deadline order: expiry pops from the front.
 * Under the shared lock `plock`. */
typedef struct pend_s pend_t;
struct pend_s {
  pend_t* hnext;            /* Hash chain. */
  pend_t *prev, *next;      /* Insertion order. */
  uint64_t id;
  uint64_t deadline_ms;
  void* val;
  /* Our calls: the node that serves them (settled WEFT_ENOTCONNECTED when
   * it goes down). Empty for requests to our exports. */
  char node[NAME_MAX_LEN + 1];
};

typedef struct {
  pend_t* head;
} pbucket_t;

typedef struct {
  pbucket_t* buckets;
  size_t mask;
  size_t count;
  pend_t head; /* Insertion-order ring. */
} ptable_t;

static int ptable_init(ptable_t* t) {
  t->mask = 63;
  t->buckets = weft__xzalloc((t->mask + 1) * sizeof(*t->buckets));
  t->count = 0;
  t->head.prev = t->head.next = &t->head;
  return t->buckets == NULL ? WEFT_ENOMEM : 0;
}

static void ptable_grow(ptable_t* t) {
  size_t n = 2 * (t->mask + 1), i;
  pbucket_t* b = weft__xzalloc(n * sizeof(*b));
  if (b == NULL)
    return; /* Longer chains; still correct. */
  for (i = 0; i <= t->mask; i++) {
    pend_t* e = t->buckets[i].head;
    while (e != NULL) {
      pend_t* next = e->hnext;
      e->hnext = b[e->id & (n - 1)].head;
      b[e->id & (n - 1)].head = e;
      e = next;
    }
  }
  weft__xfree(t->buckets);
  t->buckets = b;
  t->mask = n - 1;
}

static void ptable_put(ptable_t* t, pend_t* e) {
  pend_t** pp;
  if (t->count > 2 * t->mask)
    ptable_grow(t);
  pp = &t->buckets[e->id & t->mask].head;
  e->hnext = *pp;
  *pp = e;
  e->prev = t->head.prev;
  e->next = &t->head;
  t->head.prev->next = e;
  t->head.prev = e;
  t->count++;
}

static void ptable_unlink(ptable_t* t, pend_t* e) {
  pend_t** pp = &t->buckets[e->id & t->mask].head;
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
  e->prev->next = e->next;
  e->next->prev = e->prev;
  t->count--;
}

/* Take entry `id` out (NULL: not there). */
static pend_t* ptable_take(ptable_t* t, uint64_t id) {
  pend_t* e;
  for (e = t->buckets[id & t->mask].head; e != NULL; e = e->hnext) {
    if (e->id == id) {
      ptable_unlink(t, e);
      return e;
    }
  }
  return NULL;
}

/* Take the oldest entry if it expired by `now_ms` (or any, with now_ms
 * UINT64_MAX). */
static pend_t* ptable_expired(ptable_t* t, uint64_t now_ms) {
  pend_t* e = t->head.next;
  if (e == &t->head || e->deadline_ms > now_ms)
    return NULL;
  ptable_unlink(t, e);
  return e;
}

/* ---- the shared part ------------------------------------------------------ */

typedef struct {
  atomic_int refs;
  pthread_rwlock_t lock; /* Read: publishing. Write: closing. */
  bool closed;           /* Under `lock`. */
  weft__nats_t* conn;
  uint64_t ttl_ms;
  size_t max_backlog; /* opts.max_export_backlog (bytes). */

  pthread_mutex_t plock;
  ptable_t calls;   /* Our requests: id -> outcome (weft_reply_t*). */
  ptable_t answers; /* Requests to our exports: id -> reply subject. */
  atomic_uint_least64_t next_call;

  /* Held by the node until it leaves, under `hlock` (nats.c's threads use
   * them): the events port's peer, and the reply sink channel's local end
   * (what a request from the network is routed to). */
  pthread_mutex_t hlock;
  void* events;
  void* reply_core;

  char inbox[160]; /* "weft.<c>.<n>.r.": names of 64 at most. */
  weft__node_members_t members; /* Other nodes seen (node_membership.c). */
  size_t inbox_len;

  /* Relaxed counters. */
  atomic_uint_least64_t published, received, replies, dropped_decode,
      dropped_size, dropped_closed, late_replies, slow_consumer, expired;
} shared_t;

static void count(atomic_uint_least64_t* c) {
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void shared_ref(shared_t* sh) {
  atomic_fetch_add_explicit(&sh->refs, 1, memory_order_relaxed);
}

static void shared_unref(void* arg) {
  shared_t* sh = arg;
  if (atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) != 1)
    return;
  weft__node_members_free(&sh->members);
  weft__xfree(sh->calls.buckets);
  weft__xfree(sh->answers.buckets);
  pthread_mutex_destroy(&sh->plock);
  pthread_mutex_destroy(&sh->hlock);
  pthread_rwlock_destroy(&sh->lock);
  weft__xfree(sh);
}

/* Publish under the read lock: WEFT_ENOTCONNECTED once the node left.
 * `now`: a request or a reply, written at once (weft__nats_kick) rather
 * than after nats.c's 1 ms flusher wait; posts and heartbeats are left to
 * nats.c's batching. */
static int publish_uncounted(shared_t* sh,
                             bool now,
                             const char* subject,
                             const char* reply,
                             const void* data,
                             size_t len,
                             const char* error) {
  int err = WEFT_ENOTCONNECTED;
  pthread_rwlock_rdlock(&sh->lock);
  if (!sh->closed) {
    err = weft__nats_publish(sh->conn, subject, reply, data, len, error);
    if (err == 0 && now)
      weft__nats_kick(sh->conn);
  }
  pthread_rwlock_unlock(&sh->lock);
  return err;
}

/* The same for messages, requests and replies (stats.published). */
static int publish(shared_t* sh,
                   bool now,
                   const char* subject,
                   const char* reply,
                   const void* data,
                   size_t len,
                   const char* error) {
  int err = publish_uncounted(sh, now, subject, reply, data, len, error);
  if (err == 0)
    count(&sh->published);
  return err;
}

/* Events from nats.c's threads and the loop's timers, posted to the node's
 * loop as [kind, code, node name or nil]. */
static void post_event(shared_t* sh, int kind, int code, const char* node) {
  unsigned char b[3 + 5 + 2 + NAME_MAX_LEN];
  size_t n = 0, len = node != NULL ? strlen(node) : 0;
  uint32_t u = (uint32_t)code;
  b[n++] = 0x93;
  b[n++] = (unsigned char)kind;
  b[n++] = 0xd2;
  b[n++] = (unsigned char)(u >> 24);
  b[n++] = (unsigned char)(u >> 16);
  b[n++] = (unsigned char)(u >> 8);
  b[n++] = (unsigned char)u;
  if (node == NULL) {
    b[n++] = 0xc0;
  } else {
    b[n++] = 0xd9; /* str8 */
    b[n++] = (unsigned char)len;
    for (size_t i = 0; i < len; i++)
      b[n++] = (unsigned char)node[i];
  }
  pthread_mutex_lock(&sh->hlock);
  if (sh->events != NULL)
    weft__core_post(sh->events, b, n);
  pthread_mutex_unlock(&sh->hlock);
}

static void on_nats_event(void* ctx, int event, int code) {
  shared_t* sh = ctx;
  switch (event) {
    case WEFT__NATS_CONNECTED:
      post_event(sh, WEFT_NODE_CONNECTED, 0, NULL);
      break;
    case WEFT__NATS_DISCONNECTED:
      post_event(sh, WEFT_NODE_DISCONNECTED, 0, NULL);
      break;
    case WEFT__NATS_RECONNECTED:
      post_event(sh, WEFT_NODE_RECONNECTED, 0, NULL);
      break;
    case WEFT__NATS_CLOSED:
      post_event(sh, WEFT_NODE_CLOSED, 0, NULL);
      break;
    default:
      /* A slow consumer's drops are counted per message at the next
       * heartbeat (count_dropped); this is when they began. */
      post_event(sh, WEFT_NODE_ERROR, code, NULL);
      break;
  }
}

/* ---- the node ------------------------------------------------------------- */

typedef struct export_s export_t;
typedef struct far_s far_t;

struct export_s {
  export_t* next; /* The node's list (its loop only). */
  shared_t* sh;   /* Referenced until the subscription completes. */
  void* core;     /* The exported port, held (pair). */
  weft__nats_sub_t* sub;
  /* Set before the subscription is ended: a delivery waiting for room
   * (export_message) stops waiting. */
  atomic_bool closing;
  char name[NAME_MAX_LEN + 1];
};

/* A sink channel's far core, for closing them when the node leaves. */
struct far_s {
  far_t* next;
  void* core;
};

struct weft_node_s {
  weft_loop_t* loop;
  shared_t* sh;
  weft_port_t* events; /* Receives post_event()'s messages, */
  weft_port_t* events_out; /* posted on its peer (held: sh->events). */
  weft_port_t* replies; /* The reply sink channel's local end. */
  void* replies_far;
  weft__nats_sub_t* inbox_sub;
  export_t* exports;
  far_t* fars;
  uv_timer_t sweep; /* Forgets what outlived the ttl. */
  uv_timer_t beat;  /* Heartbeats, and who fell silent. */
  weft__nats_sub_t* presence_sub;
  uint64_t dropped_gone; /* count_dropped() of exports no longer there. */
  int timers_closed;
  /* Internal watchers (node_internal.h); a removed one is NULL until the
   * dispatch that runs compacts the array. */
  struct {
    weft__node_watch_cb cb;
    void* ctx;
  }* watchers;
  size_t nwatchers, watchers_cap;
  int dispatching;
  weft_node_event_cb on_event;
  void* ctx;
  char name[NAME_MAX_LEN + 1];
  char cluster[NAME_MAX_LEN + 1];
};

/* Copy a name weft__wire_name_ok() accepted into a buffer of NAME_MAX_LEN + 1. */
static void copy_name(char* dst, const char* name) {
  size_t n = strlen(name);
  memcpy(dst, name, n + 1);
}

/* "weft.<cluster>.<node>.p.<name>" */
static int export_subject(const char* cluster,
                          const char* node,
                          const char* name,
                          char* out) {
  int n = snprintf(out, SUBJECT_MAX, "weft.%s.%s.p.%s", cluster, node, name);
  return n > 0 && n < SUBJECT_MAX ? 0 : WEFT_EINVAL;
}

/* ---- requests of ours: the remote port's sink ----------------------------- */

typedef struct {
  shared_t* sh;
  /* Its posts, gathered when they come back to back (nats.h): one NATS
   * message carries many. Its requests write it first: a request never
   * overtakes a post made before it. */
  weft__nats_batch_t* batch;
  char subject[SUBJECT_MAX];
  char node[NAME_MAX_LEN + 1]; /* The node that serves it. */
} rport_t;

static void rport_free(void* ctx) {
  rport_t* r = ctx;
  weft__nats_batch_free(r->batch); /* Writes what it holds. */
  shared_unref(r->sh);
  weft__xfree(r);
}

/* A post on a remote port, under the read lock as publish(). */
static int post_batched(rport_t* r, const void* data, size_t len) {
  shared_t* sh = r->sh;
  int err = WEFT_ENOTCONNECTED;
  pthread_rwlock_rdlock(&sh->lock);
  if (!sh->closed)
    err = weft__nats_batch_post(r->batch, data, len);
  pthread_rwlock_unlock(&sh->lock);
  if (err == 0)
    count(&sh->published);
  return err;
}

/* Before a request: the posts gathered before it go first. */
static void flush_batched(rport_t* r) {
  shared_t* sh = r->sh;
  pthread_rwlock_rdlock(&sh->lock);
  if (!sh->closed)
    (void)weft__nats_batch_flush(r->batch); /* Counted when refused. */
  pthread_rwlock_unlock(&sh->lock);
}

/* A post or request on a remote port, on the poster's thread. */
static int rport_sink(void* ctx, weft_msg_t** msg) {
  rport_t* r = ctx;
  shared_t* sh = r->sh;
  weft_msg_t* m = *msg;
  pend_t* e;
  char reply[SUBJECT_MAX];
  int err;
  const void* bytes = m->data;
  size_t len = m->len;
  msgpack_sbuffer flat = {0, NULL, 0};
  if (m->nxfer > 0) {
    /* Buffers cross as copies of their bytes; the sender still gives them
     * away (detached once the message went), as a local transfer would. */
    err = weft__wire_flatten(m, &flat);
    if (err == 0)
      err = weft__msg_check_transfers(m);
    if (err != 0) {
      msgpack_sbuffer_destroy(&flat);
      return err;
    }
    bytes = flat.data;
    len = flat.size;
  }
  if (!m->routed) {
    err = post_batched(r, bytes, len);
    msgpack_sbuffer_destroy(&flat);
    if (err == 0) {
      weft__msg_commit_transfers(m);
      weft_msg_free(m);
      *msg = NULL;
    }
    return err;
  }
  /* A request: its outcome waits in `calls` under a fresh id, which the
   * reply subject carries. In the table before the publish: the reply may
   * come before the publish returns. */
  e = weft__xalloc(sizeof(*e));
  if (e == NULL)
    return WEFT_ENOMEM;
  e->id = atomic_fetch_add_explicit(&sh->next_call, 1, memory_order_relaxed);
  e->deadline_ms = weft__now_ms() + sh->ttl_ms;
  e->val = m->route.reply;
  copy_name(e->node, r->node);
  (void)snprintf(reply, sizeof(reply), "%s%llu", sh->inbox,
           (unsigned long long)e->id);
  pthread_mutex_lock(&sh->plock);
  ptable_put(&sh->calls, e);
  pthread_mutex_unlock(&sh->plock);
  flush_batched(r);
  err = publish(sh, true, r->subject, reply, bytes, len, NULL);
  msgpack_sbuffer_destroy(&flat);
  if (err != 0) {
    uint64_t id = e->id;
    pthread_mutex_lock(&sh->plock);
    e = ptable_take(&sh->calls, id);
    pthread_mutex_unlock(&sh->plock);
    if (e != NULL) {
      /* Nothing went out: the request is the poster's again, whole
       * (request.c settles it with this error). */
      weft__xfree(e);
      return err;
    }
    /* The sweep settled it meanwhile (its ttl passed): only ours to free. */
  }
  /* From the publish on, the outcome belongs to whoever takes its entry
   * (a reply, the sweep, leave): not touched here. */
  (void)weft__request_unroute(m);
  weft__msg_commit_transfers(m);
  weft_msg_free(m);
  *msg = NULL;
  return 0;
}

/* A reply to one of our requests (nats.c's thread). */
static void inbox_message(void* ctx, const weft__nats_msg_t* nm) {
  shared_t* sh = ctx;
  uint64_t id;
  pend_t* e;
  weft_reply_t* out;
  if (weft__wire_read_id(nm->subject, sh->inbox_len, &id) != 0) {
    count(&sh->dropped_decode);
    return;
  }
  pthread_mutex_lock(&sh->plock);
  e = ptable_take(&sh->calls, id);
  pthread_mutex_unlock(&sh->plock);
  if (e == NULL) {
    count(&sh->late_replies);
    return;
  }
  out = e->val;
  weft__xfree(e);
  count(&sh->replies);
  if (nm->status != 0) {
    weft_reply_error(out, nm->status);
  } else if (nm->error != NULL) {
    weft_reply_error(out, weft__wire_read_error(nm->error));
  } else if (nm->len == 0) {
    count(&sh->dropped_decode);
    weft_reply_error(out, WEFT_EDECODE);
  } else if (weft_reply_send(out, nm->data, nm->len) == WEFT_EDECODE) {
    count(&sh->dropped_decode); /* The requester got WEFT_EDECODE. */
  }
}

/* ---- requests to our exports ---------------------------------------------- */

/* An outcome of a request that came from the network: publish it to the
 * request's reply subject, on the replier's thread. */
static int reply_sink(void* ctx, weft_msg_t** msg) {
  shared_t* sh = ctx;
  weft_msg_t* m = *msg;
  pend_t* e;
  pthread_mutex_lock(&sh->plock);
  e = ptable_take(&sh->answers, m->route.id);
  pthread_mutex_unlock(&sh->plock);
  if (e != NULL) {
    const char* subject = e->val;
    msgpack_sbuffer flat = {0, NULL, 0};
    int err = m->nxfer > 0 ? weft__wire_flatten(m, &flat) : 0;
    if (err == 0 && m->nxfer > 0)
      err = weft__msg_check_transfers(m);
    if (err == 0 && m->nxfer > 0)
      weft__msg_commit_transfers(m); /* Given away, as locally. */
    if (m->code != 0)
      publish(sh, true, subject, NULL, NULL, 0, weft_err_name(m->code));
    else if (err != 0)
      publish(sh, true, subject, NULL, NULL, 0, weft_err_name(err));
    else if (m->nxfer > 0)
      publish(sh, true, subject, NULL, flat.data, flat.size, NULL);
    else
      publish(sh, true, subject, NULL, m->data, m->len, NULL);
    msgpack_sbuffer_destroy(&flat);
    weft__xfree(e->val);
    weft__xfree(e);
  }
  /* Without an entry the requester's ttl passed: nothing to answer. */
  weft__outcome_done(m);
  *msg = NULL;
  return 0;
}

static void answer_error(shared_t* sh, const char* reply, int code) {
  if (reply != NULL && reply[0] != '\0')
    publish(sh, true, reply, NULL, NULL, 0, weft_err_name(code));
}

/* Backpressure (nats.c's delivery thread): while the exported port's queue
 * holds max_backlog bytes or more, wait for its loop to take some rather
 * than let the queue grow without bound. Meanwhile NATS holds what comes
 * for this subscription, up to its pending limit; past that it drops them
 * as a slow consumer, which this node counts and its heartbeats tell the
 * others (presence_message). Polled every millisecond: a delivery thread
 * that waits at all is far behind, and the port's consumer has no way to
 * wake it. Ends when the export or the node closes. */
static void wait_for_room(export_t* x) {
  struct timespec ms = {0, 1000000L};
  while (weft__core_peer_backlog(x->core) >= x->sh->max_backlog &&
         !atomic_load_explicit(&x->closing, memory_order_relaxed))
    nanosleep(&ms, NULL);
}

/* A message or request for an export (nats.c's delivery thread). */
static void export_message(void* ctx, const weft__nats_msg_t* nm) {
  export_t* x = ctx;
  shared_t* sh = x->sh;
  const char* reply = nm->reply != NULL && nm->reply[0] != '\0' ? nm->reply
                                                                 : NULL;
  weft_msg_t* m;
  pend_t* e = NULL;
  int err;
  if (nm->status == WEFT_EDECODE) {
    count(&sh->dropped_decode); /* A Weft-Batch that did not add up. */
    return;
  }
  err = weft__wire_message(nm->data, nm->len, &m);
  if (err != 0) {
    if (err == WEFT_EDECODE)
      count(&sh->dropped_decode);
    answer_error(sh, reply, err);
    return;
  }
  if (reply != NULL) {
    size_t rlen = strlen(reply) + 1;
    char* subject = weft__xalloc(rlen);
    int routed = WEFT_ENOTCONNECTED;
    e = weft__xalloc(sizeof(*e));
    if (subject != NULL && e != NULL) {
      pthread_mutex_lock(&sh->hlock);
      if (sh->reply_core != NULL)
        routed = weft__request_route(m, sh->reply_core, &e->id);
      pthread_mutex_unlock(&sh->hlock);
    }
    if (routed != 0) {
      weft__xfree(subject);
      weft__xfree(e);
      weft_msg_free(m);
      answer_error(sh, reply, routed);
      return;
    }
    memcpy(subject, reply, rlen);
    e->val = subject;
    e->node[0] = '\0';
    e->deadline_ms = weft__now_ms() + sh->ttl_ms;
    pthread_mutex_lock(&sh->plock);
    ptable_put(&sh->answers, e);
    pthread_mutex_unlock(&sh->plock);
  }
  wait_for_room(x);
  /* Counted before the post: a handler that reads the stats after it
   * got the message finds it counted (the loop may run it before this
   * thread returns from the post). */
  count(&sh->received);
  err = weft__core_post_msg(x->core, &m);
  if (err == 0)
    return;
  atomic_fetch_sub_explicit(&sh->received, 1, memory_order_relaxed);
  if (err == WEFT_EMSGSIZE)
    count(&sh->dropped_size);
  else
    count(&sh->dropped_closed);
  if (reply == NULL) {
    weft_msg_free(m);
    return;
  }
  /* Freed as an undelivered request, it settles as WEFT_ECLOSED through
   * reply_sink; say the real reason instead. */
  pthread_mutex_lock(&sh->plock);
  e = ptable_take(&sh->answers, e->id);
  pthread_mutex_unlock(&sh->plock);
  weft_msg_free(m); /* Its outcome finds no entry in reply_sink. */
  if (e != NULL) {
    answer_error(sh, reply, err);
    weft__xfree(e->val);
    weft__xfree(e);
  }
}

static void export_done(void* ctx) {
  export_t* x = ctx;
  weft__port_unhold_pair(x->core);
  shared_unref(x->sh);
  weft__xfree(x);
}

/* ---- membership ------------------------------------------------------------ */

/* Settle our calls waiting on `node` (gone): WEFT_ENOTCONNECTED, Erlang's
 * noconnection. */
static void fail_calls_to(shared_t* sh, const char* node) {
  pend_t *e, *next, *gone = NULL;
  /* One pass under the lock; settled after it (a settle posts). */
  pthread_mutex_lock(&sh->plock);
  for (e = sh->calls.head.next; e != &sh->calls.head; e = next) {
    next = e->next;
    if (strcmp(e->node, node) == 0) {
      ptable_unlink(&sh->calls, e);
      e->hnext = gone;
      gone = e;
    }
  }
  pthread_mutex_unlock(&sh->plock);
  for (e = gone; e != NULL; e = next) {
    next = e->hnext;
    weft_reply_error(e->val, WEFT_ENOTCONNECTED);
    weft__xfree(e);
  }
}

/* Publish our heartbeat (`leaving`: the last one). */
static void beat(shared_t* sh, bool leaving) {
  char subject[SUBJECT_MAX];
  unsigned char b[WEFT__WIRE_BEAT_LEN];
  weft__node_members_beat(
      &sh->members, leaving,
      atomic_load_explicit(&sh->slow_consumer, memory_order_relaxed),
      subject, sizeof(subject), b);
  (void)publish_uncounted(sh, false, subject, NULL, b, sizeof(b), NULL);
}

/* What node_membership.c saw (nats.c's thread, or the loop's for a
 * member fallen silent). A newcomer gets our heartbeat at once, so that it
 * need not wait a whole period. A member that dropped messages (some may
 * be ours): WEFT_NODE_ERROR with WEFT_ESLOWCONSUMER and its name, so that
 * senders hear of it too. */
static void member_report(void* ctx, int kind, const char* name) {
  shared_t* sh = ctx;
  switch (kind) {
    case WEFT_NODE_DOWN:
      fail_calls_to(sh, name);
      post_event(sh, WEFT_NODE_DOWN, 0, name);
      break;
    case WEFT_NODE_UP:
      post_event(sh, WEFT_NODE_UP, 0, name);
      beat(sh, false);
      break;
    default:
      post_event(sh, WEFT_NODE_ERROR, WEFT_ESLOWCONSUMER, name);
      break;
  }
}

/* A heartbeat (nats.c's thread). */
static void presence_message(void* ctx, const weft__nats_msg_t* nm) {
  shared_t* sh = ctx;
  if (weft__node_members_heard(&sh->members, nm) != 0)
    count(&sh->dropped_decode);
}

/* Messages NATS dropped for this node's subscriptions (slow consumer),
 * since it joined: stats().slow_consumer and what heartbeats carry.
 * Thread: the node's loop. */
static void count_dropped(weft_node_t* node) {
  uint64_t n = node->dropped_gone;
  export_t* x;
  for (x = node->exports; x != NULL; x = x->next)
    n += weft__nats_sub_dropped(x->sub);
  if (node->inbox_sub != NULL)
    n += weft__nats_sub_dropped(node->inbox_sub);
  if (node->presence_sub != NULL)
    n += weft__nats_sub_dropped(node->presence_sub);
  atomic_store_explicit(&node->sh->slow_consumer, n, memory_order_relaxed);
}

static void beat_cb(uv_timer_t* t) {
  weft_node_t* node = t->data;
  count_dropped(node);
  beat(node->sh, false);
  weft__node_members_check(&node->sh->members);
}

bool weft_node_is_up(weft_node_t* node, const char* name) {
  if (node == NULL || name == NULL)
    return false;
  if (strcmp(name, node->name) == 0)
    return true;
  return weft__node_members_has(&node->sh->members, name);
}

/* ---- events and expiry on the node's loop ---------------------------------- */

/* Run the watchers; one added meanwhile runs from the next event. */
static void dispatch(weft_node_t* node, const weft_node_event_t* ev) {
  size_t i, n = node->nwatchers, j = 0;
  node->dispatching++;
  for (i = 0; i < n; i++) {
    if (node->watchers[i].cb != NULL)
      node->watchers[i].cb(node->watchers[i].ctx, ev);
  }
  if (--node->dispatching == 0) {
    for (i = 0; i < node->nwatchers; i++) {
      if (node->watchers[i].cb != NULL)
        node->watchers[j++] = node->watchers[i];
    }
    node->nwatchers = j;
  }
}

static void events_message(weft_port_t* port, weft_msg_t* msg) {
  weft_node_t* node = weft_port_get_data(port);
  const msgpack_object* o = weft_msg_object(msg);
  weft_node_event_t ev;
  char name[NAME_MAX_LEN + 1];
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3)
    return;
  ev.kind = (weft_node_event_kind)o->via.array.ptr[0].via.u64;
  ev.code = (int)o->via.array.ptr[1].via.i64;
  ev.node = NULL;
  if (o->via.array.ptr[2].type == MSGPACK_OBJECT_STR &&
      o->via.array.ptr[2].via.str.size <= NAME_MAX_LEN) {
    memcpy(name, o->via.array.ptr[2].via.str.ptr,
           o->via.array.ptr[2].via.str.size);
    name[o->via.array.ptr[2].via.str.size] = '\0';
    ev.node = name;
  }
  if (node->on_event != NULL)
    node->on_event(node, &ev, node->ctx);
  dispatch(node, &ev);
}

/* Settle or forget what outlived the ttl (all of it, with `all`). */
static void expire(shared_t* sh, bool all) {
  uint64_t now = all ? UINT64_MAX : weft__now_ms();
  pend_t* e;
  for (;;) {
    pthread_mutex_lock(&sh->plock);
    e = ptable_expired(&sh->calls, now);
    pthread_mutex_unlock(&sh->plock);
    if (e == NULL)
      break;
    weft_reply_error(e->val, all ? WEFT_ENOTCONNECTED : WEFT_ETIMEDOUT);
    weft__xfree(e);
  }
  for (;;) {
    pthread_mutex_lock(&sh->plock);
    e = ptable_expired(&sh->answers, now);
    pthread_mutex_unlock(&sh->plock);
    if (e == NULL)
      break;
    weft__xfree(e->val);
    weft__xfree(e);
  }
}

static void sweep_cb(uv_timer_t* t) {
  weft_node_t* node = t->data;
  expire(node->sh, false);
}

/* ---- API ------------------------------------------------------------------ */

static shared_t* shared_new(uint64_t ttl_ms) {
  shared_t* sh = weft__xzalloc(sizeof(*sh));
  if (sh == NULL)
    return NULL;
  atomic_init(&sh->refs, 1);
  atomic_init(&sh->next_call, 1);
  sh->ttl_ms = ttl_ms;
  if (pthread_rwlock_init(&sh->lock, NULL) != 0) {
    weft__xfree(sh);
    return NULL;
  }
  pthread_mutex_init(&sh->plock, NULL);
  pthread_mutex_init(&sh->hlock, NULL);
  if (ptable_init(&sh->calls) != 0 || ptable_init(&sh->answers) != 0) {
    shared_unref(sh);
    return NULL;
  }
  return sh;
}

static void node_free_parts(weft_node_t* node) {
  shared_t* sh = node->sh;
  void *events = NULL, *reply_core = NULL;
  if (sh != NULL) {
    pthread_mutex_lock(&sh->hlock);
    events = sh->events;
    reply_core = sh->reply_core;
    sh->events = sh->reply_core = NULL;
    pthread_mutex_unlock(&sh->hlock);
  }
  if (events != NULL)
    weft__port_unhold_pair(events);
  if (reply_core != NULL)
    weft__port_unhold_pair(reply_core);
  if (node->events != NULL)
    weft_port_free(node->events);
  if (node->events_out != NULL)
    weft_port_free(node->events_out);
  if (node->replies != NULL)
    weft_port_free(node->replies);
  if (node->replies_far != NULL)
    weft__sink_close(node->replies_far);
  if (node->sh != NULL)
    shared_unref(node->sh);
  weft__xfree(node->watchers);
  weft__xfree(node);
}

static void timer_closed(uv_handle_t* h) {
  weft_node_t* node = h->data;
  if (++node->timers_closed == 2)
    node_free_parts(node);
}

int weft_node_join(weft_loop_t* loop,
                   const weft_node_opts_t* opts,
                   weft_node_t** out) {
  weft_node_t* node;
  shared_t* sh;
  weft_port_t* evout = NULL;
  weft__nats_opts_t no;
  char conn_name[2 * NAME_MAX_LEN + 8];
  uint64_t heartbeat_ms;
  int err;
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || opts == NULL || out == NULL || opts->servers == NULL ||
      opts->servers[0] == '\0' || !weft__wire_name_ok(opts->name) ||
      (opts->cluster != NULL && !weft__wire_name_ok(opts->cluster)))
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  heartbeat_ms = opts->heartbeat_ms > 0 ? (uint64_t)opts->heartbeat_ms : 500;
  node = weft__xzalloc(sizeof(*node));
  if (node == NULL)
    return WEFT_ENOMEM;
  node->loop = loop;
  node->on_event = opts->on_event;
  node->ctx = opts->ctx;
  copy_name(node->name, opts->name);
  copy_name(node->cluster, opts->cluster != NULL ? opts->cluster : "weft");
  sh = shared_new(opts->request_ttl_ms > 0 ? (uint64_t)opts->request_ttl_ms
                                           : 60000u);
  if (sh == NULL) {
    weft__xfree(node);
    return WEFT_ENOMEM;
  }
  sh->max_backlog = opts->max_export_backlog > 0
                        ? opts->max_export_backlog
                        : (size_t)16 << 20;
  node->sh = sh;
  weft__node_members_init(&sh->members, node->cluster, node->name,
                          opts->down_after_ms > 0
                              ? (uint64_t)opts->down_after_ms
                              : 4 * heartbeat_ms,
                          member_report, sh);
  (void)snprintf(sh->inbox, sizeof(sh->inbox), "weft.%s.%s.r.", node->cluster,
           node->name);
  sh->inbox_len = strlen(sh->inbox);

  /* Events: a channel on the loop, posted on from nats.c's threads. */
  err = weft_channel_new(loop, &node->events, &evout);
  if (err == 0) {
    node->events_out = evout;
    sh->events = weft__port_hold_pair(evout);
    weft_port_set_data(node->events, node);
    err = weft_port_on_message(node->events, events_message);
  }
  /* Replies to requests from the network: a sink channel. */
  if (err == 0) {
    shared_ref(sh);
    err = weft__channel_new_sink(loop, reply_sink, shared_unref, sh,
                                 &node->replies, &node->replies_far);
    if (err != 0)
      shared_unref(sh);
  }
  if (err == 0) {
    sh->reply_core = weft__port_hold_pair(node->replies);
    weft_port_unref(node->replies); /* The events port keeps the loop. */
  }
  if (err != 0) {
    node_free_parts(node);
    return err;
  }

  memset(&no, 0, sizeof(no));
  (void)snprintf(conn_name, sizeof(conn_name), "weft:%s:%s", node->cluster,
           node->name);
  no.servers = opts->servers;
  no.name = conn_name;
  no.user = opts->user;
  no.password = opts->password;
  no.creds_file = opts->creds_file;
  no.nkey = opts->nkey;
  no.nkey_seed_file = opts->nkey_seed_file;
  no.tls_ca = opts->tls_ca;
  no.tls_cert = opts->tls_cert;
  no.tls_key = opts->tls_key;
  no.connect_timeout_ms =
      opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 2000;
  no.reconnect_wait_ms =
      opts->reconnect_wait_ms > 0 ? opts->reconnect_wait_ms : 250;
  no.max_reconnect = opts->max_reconnect != 0 ? opts->max_reconnect : 120;
  no.gather_us = opts->post_gather_us;
  err = weft__nats_connect(&no, on_nats_event, sh, &sh->conn);
  if (err == 0) {
    /* A connection refused meanwhile answers ENOTCONNECTED here: the node
     * is joined and closed, as its events say. */
    char subject[SUBJECT_MAX];
    int e;
    (void)snprintf(subject, sizeof(subject), "%s*", sh->inbox);
    shared_ref(sh);
    e = weft__nats_subscribe(sh->conn, subject, NULL, inbox_message,
                             shared_unref, sh, &node->inbox_sub);
    if (e != 0)
      shared_unref(sh);
    if (e == 0) {
      (void)snprintf(subject, sizeof(subject), "%s*", sh->members.presence);
      shared_ref(sh);
      e = weft__nats_subscribe(sh->conn, subject, NULL, presence_message,
                               shared_unref, sh, &node->presence_sub);
      if (e != 0)
        shared_unref(sh);
    }
    if (e != 0 && e != WEFT_ENOTCONNECTED) {
      if (node->inbox_sub != NULL)
        weft__nats_unsubscribe(node->inbox_sub);
      weft__nats_close(sh->conn);
      sh->conn = NULL;
      err = e;
    }
  }
  if (err != 0) {
    node_free_parts(node);
    return err;
  }
  uv_timer_init(weft_loop_uv(loop), &node->sweep);
  node->sweep.data = node;
  uv_timer_start(&node->sweep, sweep_cb, 1000, 1000);
  uv_unref((uv_handle_t*)&node->sweep);
  uv_timer_init(weft_loop_uv(loop), &node->beat);
  node->beat.data = node;
  uv_timer_start(&node->beat, beat_cb, 0, heartbeat_ms);
  uv_unref((uv_handle_t*)&node->beat);
  *out = node;
  return 0;
}

/* Serve `name` by posting on `core` (held by the caller for us). */
static int export_core(weft_node_t* node, const char* name, void* core) {
  export_t* x;
  char subject[SUBJECT_MAX];
  int err;
  for (x = node->exports; x != NULL; x = x->next) {
    if (strcmp(x->name, name) == 0)
      return WEFT_EEXIST;
  }
  err = export_subject(node->cluster, node->name, name, subject);
  if (err != 0)
    return err;
  x = weft__xzalloc(sizeof(*x));
  if (x == NULL)
    return WEFT_ENOMEM;
  copy_name(x->name, name);
  x->core = core;
  atomic_init(&x->closing, false);
  x->sh = node->sh;
  shared_ref(node->sh);
  err = weft__nats_subscribe_posts(node->sh->conn, subject, export_message,
                                   export_done, x, &x->sub);
  if (err != 0) {
    shared_unref(node->sh);
    weft__xfree(x);
    return err;
  }
  x->next = node->exports;
  node->exports = x;
  return 0;
}

static int export_check(weft_node_t* node, const char* name) {
  if (node == NULL || !weft__wire_name_ok(name))
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(node->loop))
    return WEFT_EWRONGTHREAD;
  if (node->sh->conn == NULL || weft__nats_closed(node->sh->conn))
    return WEFT_ENOTCONNECTED;
  return 0;
}

int weft_node_export(weft_node_t* node, const char* name, weft_port_t* port) {
  void* core;
  int err = export_check(node, name);
  if (err != 0)
    return err;
  if (port == NULL || weft_port_closed(port))
    return WEFT_EINVAL;
  core = weft__port_hold_pair(port);
  err = export_core(node, name, core);
  if (err != 0)
    weft__port_unhold_pair(core);
  return err;
}

int weft_node_export_worker(weft_node_t* node,
                            const char* name,
                            weft_worker_t* w) {
  void* core = NULL;
  int err = export_check(node, name);
  if (err != 0)
    return err;
  if (w == NULL || weft__worker_post_core(w, &core) != 0)
    return WEFT_EINVAL;
  weft__core_hold_pair(core);
  err = export_core(node, name, core);
  if (err != 0)
    weft__port_unhold_pair(core);
  return err;
}

int weft_node_unexport(weft_node_t* node, const char* name) {
  export_t** pp;
  if (node == NULL || name == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(node->loop))
    return WEFT_EWRONGTHREAD;
  for (pp = &node->exports; *pp != NULL; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, name) == 0) {
      export_t* x = *pp;
      *pp = x->next;
      atomic_store_explicit(&x->closing, true, memory_order_relaxed);
      node->dropped_gone += weft__nats_sub_dropped(x->sub);
      weft__nats_unsubscribe(x->sub); /* export_done frees x. */
      return 0;
    }
  }
  return WEFT_ENOENT;
}

/* Close the far cores of remote ports their owners freed. */
static void prune_fars(weft_node_t* node) {
  far_t** pp = &node->fars;
  while (*pp != NULL) {
    far_t* f = *pp;
    if (weft__sink_abandoned(f->core)) {
      *pp = f->next;
      weft__sink_close(f->core);
      weft__xfree(f);
    } else {
      pp = &f->next;
    }
  }
}

int weft_node_port(weft_node_t* node,
                   const char* node_name,
                   const char* name,
                   weft_port_t** out) {
  rport_t* r;
  far_t* f;
  int err;
  if (out != NULL)
    *out = NULL;
  if (node == NULL || out == NULL || !weft__wire_name_ok(node_name) ||
      !weft__wire_name_ok(name))
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(node->loop))
    return WEFT_EWRONGTHREAD;
  if (node->sh->conn == NULL || weft__nats_closed(node->sh->conn))
    return WEFT_ENOTCONNECTED;
  prune_fars(node);
  r = weft__xzalloc(sizeof(*r));
  f = weft__xzalloc(sizeof(*f));
  if (r == NULL || f == NULL) {
    weft__xfree(r);
    weft__xfree(f);
    return WEFT_ENOMEM;
  }
  r->sh = node->sh;
  copy_name(r->node, node_name);
  err = export_subject(node->cluster, node_name, name, r->subject);
  if (err == 0)
    err = weft__nats_batch_new(node->sh->conn, r->subject, &r->batch);
  if (err == 0) {
    shared_ref(node->sh);
    err = weft__channel_new_sink(node->loop, rport_sink, rport_free, r, out,
                                 &f->core);
    if (err != 0) {
      shared_unref(node->sh);
    }
  }
  if (err != 0) {
    weft__nats_batch_free(r->batch); /* NULL-safe. */
    weft__xfree(r);
    weft__xfree(f);
    return err;
  }
  f->next = node->fars;
  node->fars = f;
  return 0;
}

int weft_node_stats(weft_node_t* node, weft_node_stats_t* out) {
  shared_t* sh;
  if (node == NULL || out == NULL)
    return WEFT_EINVAL;
  sh = node->sh;
  if (weft__loop_on_thread(node->loop) && !sh->closed)
    count_dropped(node); /* Else as of the last heartbeat. */
#define LOAD(f) atomic_load_explicit(&sh->f, memory_order_relaxed)
  out->published = LOAD(published);
  out->received = LOAD(received);
  out->replies = LOAD(replies);
  out->dropped_decode = LOAD(dropped_decode);
  out->dropped_size = LOAD(dropped_size);
  out->dropped_closed = LOAD(dropped_closed);
  out->late_replies = LOAD(late_replies);
  out->slow_consumer = LOAD(slow_consumer);
  out->expired = LOAD(expired);
#undef LOAD
  out->unsent = sh->conn != NULL && !sh->closed ? weft__nats_unsent(sh->conn)
                                                : 0;
  return 0;
}

const char* weft_node_name(const weft_node_t* node) {
  return node == NULL ? NULL : node->name;
}

bool weft_node_connected(const weft_node_t* node) {
  return node != NULL && node->sh->conn != NULL &&
         weft__nats_connected(node->sh->conn);
}

int weft_node_flush(weft_node_t* node, int64_t timeout_ms) {
  int err = WEFT_ENOTCONNECTED;
  if (node == NULL)
    return WEFT_EINVAL;
  pthread_rwlock_rdlock(&node->sh->lock);
  if (!node->sh->closed)
    err = weft__nats_flush(node->sh->conn, timeout_ms);
  pthread_rwlock_unlock(&node->sh->lock);
  return err;
}

int weft_node_leave(weft_node_t* node) {
  shared_t* sh;
  weft__nats_t* conn;
  if (node == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(node->loop))
    return WEFT_EWRONGTHREAD;
  sh = node->sh;
  {
    weft_node_event_t ev = {.kind = (weft_node_event_kind)WEFT__NODE_LEAVING};
    dispatch(node, &ev);
    for (size_t i = 0; i < node->nwatchers; i++)
      node->watchers[i].cb = NULL; /* Nothing more for them. */
  }
  while (node->exports != NULL) {
    export_t* x = node->exports;
    node->exports = x->next;
    atomic_store_explicit(&x->closing, true, memory_order_relaxed);
    weft__nats_unsubscribe(x->sub);
  }
  if (node->inbox_sub != NULL)
    weft__nats_unsubscribe(node->inbox_sub);
  if (node->presence_sub != NULL)
    weft__nats_unsubscribe(node->presence_sub);
  /* Posts gathered go before the goodbye. Say goodbye, so that the others
   * see us down now, not after down_after_ms; bounded, the server may be
   * gone. */
  weft__nats_batches_flush(sh->conn);
  beat(sh, true);
  (void)weft__nats_flush(sh->conn, 500);
  pthread_rwlock_wrlock(&sh->lock);
  sh->closed = true;
  conn = sh->conn;
  pthread_rwlock_unlock(&sh->lock);
  /* No publish is running or will run: close (waits for nats.c). */
  weft__nats_close(conn);
  expire(sh, true);
  while (node->fars != NULL) {
    far_t* f = node->fars;
    node->fars = f->next;
    weft__sink_close(f->core);
    weft__xfree(f);
  }
  node->on_event = NULL; /* Events still queued are not reported. */
  uv_close((uv_handle_t*)&node->beat, timer_closed);
  uv_close((uv_handle_t*)&node->sweep, timer_closed);
  return 0;
}

/* ---- for the layers built on a node (node_internal.h) ---------------------- */

int weft__node_watch(weft_node_t* node, weft__node_watch_cb cb, void* ctx) {
  if (node == NULL || cb == NULL)
    return WEFT_EINVAL;
  if (node->nwatchers == node->watchers_cap) {
    size_t cap = node->watchers_cap != 0 ? 2 * node->watchers_cap : 4;
    void* w = weft__xrealloc(node->watchers, cap * sizeof(*node->watchers));
    if (w == NULL)
      return WEFT_ENOMEM;
    node->watchers = w;
    node->watchers_cap = cap;
  }
  node->watchers[node->nwatchers].cb = cb;
  node->watchers[node->nwatchers].ctx = ctx;
  node->nwatchers++;
  return 0;
}

void weft__node_unwatch(weft_node_t* node,
                        weft__node_watch_cb cb,
                        const void* ctx) {
  size_t i, j = 0;
  if (node == NULL)
    return;
  for (i = 0; i < node->nwatchers; i++) {
    if (node->watchers[i].cb == cb && node->watchers[i].ctx == ctx) {
      node->watchers[i].cb = NULL;
      break;
    }
  }
  if (node->dispatching > 0)
    return; /* Compacted when the dispatch ends. */
  for (i = 0; i < node->nwatchers; i++) {
    if (node->watchers[i].cb != NULL)
      node->watchers[j++] = node->watchers[i];
  }
  node->nwatchers = j;
}

weft_loop_t* weft__node_loop(const weft_node_t* node) {
  return node->loop;
}

const char* weft__node_cluster(const weft_node_t* node) {
  return node->cluster;
}

int weft__node_publish(weft_node_t* node,
                       const char* subject,
                       const char* reply,
                       const void* data,
                       size_t len,
                       const char* error) {
  return publish(node->sh, reply != NULL || error != NULL, subject, reply,
                 data, len, error);
}

int weft__node_publish_now(weft_node_t* node,
                           const char* subject,
                           const void* data,
                           size_t len) {
  return publish(node->sh, true, subject, NULL, data, len, NULL);
}

int weft__node_subscribe(weft_node_t* node,
                         const char* subject,
                         const char* queue,
                         weft__nats_msg_cb cb,
                         weft__nats_done_cb done,
                         void* ctx,
                         weft__nats_sub_t** out) {
  int err;
  if (node->sh->closed || node->sh->conn == NULL)
    return WEFT_ENOTCONNECTED;
  err = weft__nats_subscribe(node->sh->conn, subject, queue, cb, done, ctx,
                             out);
  /* The server knows of it a flusher wait sooner (a pool's slot: offers
   * find it free). */
  if (err == 0)
    weft__nats_kick(node->sh->conn);
  return err;
}

void weft__node_count_dropped(weft_node_t* node, int which) {
  count(which == WEFT__NODE_EXPIRED         ? &node->sh->expired
        : which == WEFT__NODE_DROPPED_SIZE ? &node->sh->dropped_size
                                           : &node->sh->dropped_decode);
}
