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
 * Durable (JetStream; docs/node.md "Durable tasks"). A durable remote pool
 * publishes [name, reply, arg] on weft.<c>.pool.<g>.tasks, which the
 * work-queue stream keeps; the stream's acknowledgement ({"seq":..}) comes
 * to the task's reply subject (stored: RT_STORED). A durable server has
 * no slots: its puller thread asks the durable pull consumer for as many
 * tasks as workers are free (each pull's own reply subject under
 * weft.<c>.<n>.js.s<id>.p.<k>, where its end, a status without a reply
 * subject, comes; its tasks come there with the stream's subject and a
 * $JS.ACK reply). A delivered task keeps its worker from then on; its
 * result is sent as a request (so "no responders" tells of a submitter
 * gone) and only then is the message acknowledged. The JetStream API is
 * spoken as core NATS requests (transport/jetstream.h): no call waits on a
 * loop, and pool creation waits only for the stream's (and consumer's)
 * creation answers, on nats.c's threads.
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
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "jetstream.h"
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

size_t weft__pool_wire_dtask(unsigned char* out,
                             const char* name,
                             const char* reply,
                             const void* arg,
                             size_t arg_len) {
  size_t h;
  out[0] = 0x93;
  h = 1 + put_str(out + 1, name);
  h += put_str(out + h, reply);
  memcpy(out + h, arg, arg_len);
  return h + arg_len;
}

int weft__pool_wire_read_dtask(const void* data,
                               size_t len,
                               char* name,
                               char* reply,
                               size_t reply_cap,
                               const unsigned char** arg,
                               size_t* arg_len) {
  const unsigned char* p = data;
  const unsigned char* body;
  size_t used, n;
  if (p == NULL || len < 4 || p[0] != 0x93 ||
      read_name(p + 1, len - 1, name, &used) != 0)
    return WEFT_EDECODE;
  p += 1 + used;
  len -= 1 + used;
  if (read_str(p, len, &body, &n, &used) != 0 || n == 0 || n >= reply_cap)
    return WEFT_EDECODE;
  for (size_t i = 0; i < n; i++)
    if (body[i] <= ' ' || body[i] == '*' || body[i] == '>' || body[i] > '~')
      return WEFT_EDECODE;
  memcpy(reply, body, n);
  reply[n] = '\0';
  p += used;
  len -= used;
  if (len == 0 || weft__msgpack_validate(p, len) != 0)
    return WEFT_EDECODE;
  *arg = p;
  *arg_len = len;
  return 0;
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

/* ---- JetStream's API (durable tasks) ------------------------------------ */

#define JS_DURABLE "weft-pool"
#define JS_API_WAIT_MS 5000
/* A pull request is held at the server this long, and taken as ended
 * this much later if its end was not heard. */
#define JS_PULL_EXPIRES_MS 1000
#define JS_PULL_GRACE_MS 1000
#define JS_MAX_PULLS 8

/* `ms` from now on CLOCK_REALTIME, for pthread_cond_timedwait. */
static void deadline_in(struct timespec* until, uint64_t ms) {
  (void)clock_gettime(CLOCK_REALTIME, until);
  until->tv_sec += (time_t)(ms / 1000);
  until->tv_nsec += (long)(ms % 1000) * 1000000L;
  until->tv_sec += until->tv_nsec / 1000000000L;
  until->tv_nsec %= 1000000000L;
}

/* The stream's name and subject for `group` (stream NULL: the default). */
static int js_names(const char* cluster, const char* group,
                    const char* stream, char* name, char* subject) {
  if (stream != NULL && !weft__wire_name_ok(stream))
    return WEFT_EINVAL;
  if (stream != NULL)
    (void)snprintf(name, SUBJECT_MAX, "%s", stream);
  else
    (void)snprintf(name, SUBJECT_MAX, "weft_pool_%s_%s", cluster, group);
  (void)snprintf(subject, SUBJECT_MAX, "weft.%s.pool.%s.tasks", cluster,
                 group);
  return 0;
}

/* One API request and its answer, waited for on the caller's thread. */
typedef struct {
  atomic_int refs; /* The caller and the subscription. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool answered;
  int status;
  int result;
} jsreq_t;

static void jsreq_unref(jsreq_t* q) {
  if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_cond_destroy(&q->cond);
  pthread_mutex_destroy(&q->lock);
  weft__xfree(q);
}

static void jsreq_message(void* ctx, const weft__nats_msg_t* nm) {
  jsreq_t* q = ctx;
  pthread_mutex_lock(&q->lock);
  if (!q->answered) {
    q->answered = true;
    q->status = nm->status;
    q->result = weft__js_result(nm->data, nm->len);
    pthread_cond_broadcast(&q->cond);
  }
  pthread_mutex_unlock(&q->lock);
}

static void jsreq_done(void* ctx) {
  jsreq_unref(ctx);
}

static atomic_uint_least64_t next_jsreq = 1;

/* Send `body` on `subject` and wait for the answer: 0 with `*result` (as
 * weft__js_result), WEFT_ENOTSUP (no responders: no JetStream),
 * WEFT_ETIMEDOUT, WEFT_ENOMEM, WEFT_ENOTCONNECTED. Blocks the caller (the
 * answer comes on nats.c's thread). Thread: the node's loop. */
static int js_request(weft_node_t* node, const char* subject,
                      const char* body, size_t len, int* result) {
  char inbox[SUBJECT_MAX];
  weft__nats_sub_t* sub = NULL;
  struct timespec until;
  jsreq_t* q = weft__xzalloc(sizeof(*q));
  int err;
  if (q == NULL)
    return WEFT_ENOMEM;
  atomic_init(&q->refs, 2);
  pthread_mutex_init(&q->lock, NULL);
  pthread_cond_init(&q->cond, NULL);
  (void)snprintf(inbox, sizeof(inbox), "weft.%s.%s.js.q%llu",
                 weft__node_cluster(node), weft_node_name(node),
                 (unsigned long long)atomic_fetch_add_explicit(
                     &next_jsreq, 1, memory_order_relaxed));
  err = weft__node_subscribe(node, inbox, NULL, jsreq_message, jsreq_done, q,
                             &sub);
  if (err != 0) {
    atomic_fetch_sub_explicit(&q->refs, 1, memory_order_relaxed);
    jsreq_unref(q);
    return err;
  }
  err = weft__node_publish(node, subject, inbox, body, len, NULL);
  if (err == 0) {
    deadline_in(&until, JS_API_WAIT_MS);
    pthread_mutex_lock(&q->lock);
    while (!q->answered && err == 0)
      err = pthread_cond_timedwait(&q->cond, &q->lock, &until) != 0
                ? WEFT_ETIMEDOUT
                : 0;
    if (q->answered) {
      err = q->status == WEFT_ENORESPONDERS ? WEFT_ENOTSUP : q->status;
      *result = q->result;
    }
    pthread_mutex_unlock(&q->lock);
  }
  weft__nats_unsubscribe(sub);
  jsreq_unref(q);
  return err;
}

/* Make the stream unless it is there. */
static int js_ensure_stream(weft_node_t* node, const char* stream,
                            const char* subject) {
  char subj[SUBJECT_MAX];
  char body[2 * SUBJECT_MAX + 128];
  size_t n = weft__js_stream_create(subj, sizeof(subj), body, sizeof(body),
                                    stream, subject);
  int result = 0, err;
  if (n == 0)
    return WEFT_EINVAL;
  err = js_request(node, subj, body, n, &result);
  if (err != 0)
    return err;
  return result == 0 || result == WEFT__JS_ERR_STREAM_EXISTS ? 0
                                                             : WEFT_ENOTSUP;
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

  /* Durable serving (JetStream): all under `lock` but the names. */
  bool durable;
  bool pulling;         /* `puller` runs (joined by server_stop). */
  pthread_t puller;
  pthread_cond_t wake;  /* A worker came free, a pull ended, stop. */
  weft__nats_sub_t* pull_sub;
  struct {
    uint64_t k;
    unsigned left;     /* Tasks it may still bring. */
    uint64_t until_ms; /* Taken as ended then if not heard. */
  } pulls[JS_MAX_PULLS];
  unsigned npulls, requested; /* requested: the pulls' `left`, summed. */
  uint64_t next_pull, orphaned;
  int64_t ack_wait_ms;
  char stream[SUBJECT_MAX];
  char pull_prefix[SUBJECT_MAX]; /* "weft.<c>.<n>.js.s<id>.p.": + k */
  size_t pull_prefix_len;
  char orphan_subject[SUBJECT_MAX]; /* Where "no responders" for a result
                                     * comes (its submitter is gone). */
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
  char ack[SUBJECT_MAX]; /* Durable: the JetStream message's ack subject. */
};

static void server_unref(weft_pool_server_t* s) {
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_cond_destroy(&s->idle);
  pthread_cond_destroy(&s->wake);
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

/* A durable task's outcome: sent as a request whose "no responders"
 * comes to orphan_subject (its submitter is gone), then the message
 * acknowledged, or given back when the outcome could not be sent. s->lock
 * held. */
static void durable_outcome(weft_pool_server_t* s, const stask_t* st,
                            int status, const void* out, size_t len) {
  const char* ack;
  int err;
  if (s->gone)
    return; /* Delivered again after the ack wait. */
  err = status == 0 ? weft__node_publish(s->node, st->reply, s->orphan_subject,
                                         out, len, NULL)
                    : WEFT_EINVAL;
  if (status != 0 || err == WEFT_EMSGSIZE)
    err = weft__node_publish(s->node, st->reply, s->orphan_subject, NULL, 0,
                             weft_err_name(status != 0 ? status : err));
  ack = err == 0 ? WEFT__JS_ACK : WEFT__JS_NAK;
  (void)weft__node_publish_now(s->node, st->ack, ack, strlen(ack));
}

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
  if (s->durable)
    durable_outcome(s, st, status, out, len + 2);
  else if (status == 0)
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

static void track_task(weft_pool_server_t* s, stask_t* st,
                       const char* reply);
static void start_task(weft_pool_server_t* s, stask_t* st, const char* name,
                       const unsigned char* arg, size_t arg_len);

/* A task offer; `first`: the first on its slot (nats.c's thread). */
static void take_offer(weft_pool_server_t* s, bool first,
                       const weft__nats_msg_t* nm) {
  char name[NAME_MAX_LEN + 1];
  const unsigned char* arg = NULL;
  size_t arg_len = 0;
  stask_t* st;
  bool busy = false;
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
    track_task(s, st, nm->reply);
  }
  pthread_mutex_unlock(&s->lock);
  if (busy) {
    weft__xfree(st);
    answer(s, nm->reply, WEFT__POOL_BUSY, 0);
    return;
  }
  start_task(s, st, name, arg, arg_len);
}

/* A task taken: count it, keep it (for cancels) and tell its submitter
 * who holds it, before the task can end (its result must come after).
 * s->lock held. */
static void track_task(weft_pool_server_t* s, stask_t* st,
                       const char* reply) {
  unsigned char ack[3 + NAME_MAX_LEN + 2];
  size_t n;
  s->in_flight++;
  s->taken++;
  if (s->in_flight > s->max_in_flight)
    s->max_in_flight = s->in_flight;
  st->s = s;
  atomic_init(&st->refs, 2);
  memcpy(st->reply, reply, strlen(reply) + 1);
  st->next = s->tasks;
  if (s->tasks != NULL)
    s->tasks->prev = st;
  s->tasks = st;
  server_ref(s);
  ack[0] = 0x92;
  ack[1] = WEFT__POOL_ACK;
  n = 2 + put_str(ack + 2, s->self);
  server_publish(s, reply, ack, n, NULL);
}

/* Run a tracked task on the pool; its outcome goes out from stask_done. */
static void start_task(weft_pool_server_t* s, stask_t* st, const char* name,
                       const unsigned char* arg, size_t arg_len) {
  weft_task_t* fut = NULL;
  int err = weft_pool_submit(s->pool, name, arg, arg_len, stask_done, st,
                             &fut);
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

/* ---- serving durably: a JetStream pull consumer -------------------------- */

/* Give back the worker pull_message kept for a task (`room`) before it
 * was taken. s->lock held. */
static void unreserve(weft_pool_server_t* s, bool room) {
  if (!room)
    return;
  s->in_flight--;
  if (s->in_flight == 0)
    pthread_cond_broadcast(&s->idle);
  pthread_cond_signal(&s->wake);
}

/* A task the consumer delivered (nats.c's thread): taken if a worker is
 * free, else given back at once; a payload not the wire's is dropped for
 * good (+TERM). */
static void take_durable(weft_pool_server_t* s, const weft__nats_msg_t* nm,
                         bool room) {
  char name[NAME_MAX_LEN + 1];
  char reply[SUBJECT_MAX];
  const unsigned char* arg = NULL;
  size_t arg_len = 0;
  stask_t* st;
  bool taken = false;
  if (weft__pool_wire_read_dtask(nm->data, nm->len, name, reply,
                                 sizeof(reply), &arg, &arg_len) != 0) {
    weft__node_count_dropped(s->node, WEFT__NODE_DROPPED_DECODE);
    pthread_mutex_lock(&s->lock);
    server_publish(s, nm->reply, WEFT__JS_TERM, strlen(WEFT__JS_TERM), NULL);
    unreserve(s, room);
    pthread_mutex_unlock(&s->lock);
    return;
  }
  st = room ? weft__xzalloc(sizeof(*st)) : NULL;
  pthread_mutex_lock(&s->lock);
  unreserve(s, room);
  if (st == NULL || s->stopped || s->in_flight >= s->cap) {
    s->refused++;
    server_publish(s, nm->reply, WEFT__JS_NAK, strlen(WEFT__JS_NAK), NULL);
  } else {
    memcpy(st->ack, nm->reply, strlen(nm->reply) + 1);
    track_task(s, st, reply);
    taken = true;
  }
  pthread_mutex_unlock(&s->lock);
  if (!taken) {
    weft__xfree(st);
    return;
  }
  start_task(s, st, name, arg, arg_len);
}

/* Forget pull `i`. s->lock held. */
static void pull_end(weft_pool_server_t* s, unsigned i) {
  s->requested -= s->pulls[i].left;
  s->pulls[i] = s->pulls[--s->npulls];
  pthread_cond_signal(&s->wake);
}

/* What comes to the pull inbox (nats.c's thread): tasks for a pull, the
 * server's status when a pull ends (408 expired, 409 ...: no reply
 * subject), "no responders" for a result nobody heard. */
static void pull_message(void* ctx, const weft__nats_msg_t* nm) {
  weft_pool_server_t* s = ctx;
  uint64_t k = 0;
  bool task;
  if (strcmp(nm->subject, s->orphan_subject) == 0) {
    pthread_mutex_lock(&s->lock);
    if (nm->status == WEFT_ENORESPONDERS)
      s->orphaned++;
    pthread_mutex_unlock(&s->lock);
    return;
  }
  task = nm->reply != NULL &&
         strncmp(nm->reply, WEFT__JS_ACK_PREFIX,
                 strlen(WEFT__JS_ACK_PREFIX)) == 0 &&
         strlen(nm->reply) < SUBJECT_MAX;
  if (task) {
    /* It keeps the stream's subject, not the pull's: the server fills
     * pulls oldest first, so it counts for the oldest. */
    unsigned oldest = 0;
    bool room;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 1; i < s->npulls; i++)
      if (s->pulls[i].k < s->pulls[oldest].k)
        oldest = i;
    if (s->npulls > 0) {
      s->pulls[oldest].left--;
      s->requested--;
      if (s->pulls[oldest].left == 0)
        pull_end(s, oldest);
    }
    /* Its worker is kept from now on, or the puller, woken by pull_end,
     * would ask for one more task than it has workers for. */
    room = !s->stopped && s->in_flight < s->cap;
    if (room)
      s->in_flight++;
    pthread_mutex_unlock(&s->lock);
    take_durable(s, nm, room);
    return;
  }
  if (strncmp(nm->subject, s->pull_prefix, s->pull_prefix_len) != 0 ||
      weft__wire_read_id(nm->subject, s->pull_prefix_len, &k) != 0) {
    weft__node_count_dropped(s->node, WEFT__NODE_DROPPED_DECODE);
    return;
  }
  pthread_mutex_lock(&s->lock);
  for (unsigned i = 0; i < s->npulls; i++) {
    if (s->pulls[i].k == k) {
      pull_end(s, i); /* Its status: it ended. */
      break;
    }
  }
  pthread_mutex_unlock(&s->lock);
}

static void pull_done(void* ctx) {
  server_unref(ctx);
}

/* Ask the consumer for `n` tasks. s->lock held. */
static void send_pull(weft_pool_server_t* s, unsigned n, uint64_t now) {
  char subj[SUBJECT_MAX];
  char reply[SUBJECT_MAX + 24];
  char body[128];
  size_t len = weft__js_pull(subj, sizeof(subj), body, sizeof(body),
                             s->stream, JS_DURABLE, n, JS_PULL_EXPIRES_MS);
  uint64_t k = ++s->next_pull;
  (void)snprintf(reply, sizeof(reply), "%s%llu", s->pull_prefix,
                 (unsigned long long)k);
  if (len == 0 || s->gone ||
      weft__node_publish(s->node, subj, reply, body, len, NULL) != 0)
    return; /* Asked again at the next wake. */
  s->pulls[s->npulls].k = k;
  s->pulls[s->npulls].left = n;
  s->pulls[s->npulls].until_ms = now + JS_PULL_EXPIRES_MS + JS_PULL_GRACE_MS;
  s->npulls++;
  s->requested += n;
}

/* The puller: keeps as many tasks asked for as workers are free, ends
 * pulls whose end it did not hear, and tells the server that running
 * tasks are still at work. Thread: its own ("weft-jspull"). */
static void* puller_main(void* arg) {
  weft_pool_server_t* s = arg;
  uint64_t wpi_ms = (uint64_t)s->ack_wait_ms / 3 + 1;
  uint64_t next_wpi = now_ms() + wpi_ms;
  (void)pthread_setname_np(pthread_self(), "weft-jspull");
  pthread_mutex_lock(&s->lock);
  while (!s->stopped) {
    uint64_t now = now_ms(), wake_at = now + 250;
    struct timespec until;
    for (unsigned i = 0; i < s->npulls;) {
      if (now >= s->pulls[i].until_ms)
        pull_end(s, i);
      else
        i++;
    }
    if (s->npulls < JS_MAX_PULLS && s->in_flight + s->requested < s->cap)
      send_pull(s, s->cap - s->in_flight - s->requested, now);
    if (now >= next_wpi) {
      for (stask_t* st = s->tasks; st != NULL; st = st->next)
        server_publish(s, st->ack, WEFT__JS_WPI, strlen(WEFT__JS_WPI), NULL);
      next_wpi = now + wpi_ms;
    }
    if (next_wpi < wake_at)
      wake_at = next_wpi;
    for (unsigned i = 0; i < s->npulls; i++)
      if (s->pulls[i].until_ms < wake_at)
        wake_at = s->pulls[i].until_ms;
    deadline_in(&until, wake_at - now);
    (void)pthread_cond_timedwait(&s->wake, &s->lock, &until);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* Make the consumer unless it is there (one made otherwise, e.g. with
 * another ack wait, is used as it is). */
static int js_ensure_consumer(weft_node_t* node, const char* stream,
                              int64_t ack_wait_ms) {
  char subj[SUBJECT_MAX];
  char body[2 * SUBJECT_MAX + 256];
  size_t n = weft__js_consumer_create(subj, sizeof(subj), body, sizeof(body),
                                      stream, JS_DURABLE, ack_wait_ms);
  int result = 0, err;
  if (n == 0)
    return WEFT_EINVAL;
  err = js_request(node, subj, body, n, &result);
  if (err != 0 || result == 0)
    return err;
  (void)snprintf(subj, sizeof(subj), "$JS.API.CONSUMER.INFO.%s.%s", stream,
                 JS_DURABLE);
  err = js_request(node, subj, "", 0, &result);
  if (err != 0)
    return err;
  return result == 0 ? 0 : WEFT_ENOTSUP;
}

/* Durable serving's start: the stream, the consumer, the inbox, the
 * puller. The loop. */
static int serve_durable(weft_pool_server_t* s, const char* cluster,
                         const char* group, const weft_pool_serve_opts_t* o) {
  char subject[SUBJECT_MAX];
  char inbox[SUBJECT_MAX];
  unsigned long long id;
  int err = js_names(cluster, group, o->stream, s->stream, subject);
  if (err == 0)
    err = js_ensure_stream(s->node, s->stream, subject);
  if (err == 0)
    err = js_ensure_consumer(s->node, s->stream, s->ack_wait_ms);
  if (err != 0)
    return err;
  id = (unsigned long long)atomic_fetch_add_explicit(&next_jsreq, 1,
                                                     memory_order_relaxed);
  (void)snprintf(s->pull_prefix, sizeof(s->pull_prefix),
                 "weft.%s.%s.js.s%llu.p.", cluster, s->self, id);
  s->pull_prefix_len = strlen(s->pull_prefix);
  (void)snprintf(s->orphan_subject, sizeof(s->orphan_subject),
                 "weft.%s.%s.js.s%llu.o", cluster, s->self, id);
  (void)snprintf(inbox, sizeof(inbox), "weft.%s.%s.js.s%llu.>", cluster,
                 s->self, id);
  server_ref(s); /* The pull subscription's. */
  err = weft__node_subscribe(s->node, inbox, NULL, pull_message, pull_done, s,
                             &s->pull_sub);
  if (err != 0) {
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
    return err;
  }
  if (pthread_create(&s->puller, NULL, puller_main, s) != 0)
    return WEFT_ESPAWN; /* server_stop unsubscribes. */
  s->pulling = true;
  return 0;
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
  if (s->durable) {
    pthread_cond_signal(&s->wake); /* The puller asks for more. */
  } else if (!s->stopped) {
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

/* Durable, unserving: the server still holds our pulls and may deliver on
 * them until they expire; with the inbox kept until then, what comes is
 * given back at once (-NAK) instead of waiting out the ack wait. At most
 * JS_PULL_EXPIRES_MS + JS_PULL_GRACE_MS. */
static void await_pulls(weft_pool_server_t* s) {
  pthread_mutex_lock(&s->lock);
  while (s->npulls > 0) {
    uint64_t now = now_ms(), until_ms = 0;
    struct timespec until;
    for (unsigned i = 0; i < s->npulls;) {
      if (now >= s->pulls[i].until_ms) {
        pull_end(s, i);
      } else {
        if (s->pulls[i].until_ms > until_ms)
          until_ms = s->pulls[i].until_ms;
        i++;
      }
    }
    if (s->npulls == 0)
      break;
    deadline_in(&until, until_ms - now);
    (void)pthread_cond_timedwait(&s->wake, &s->lock, &until);
  }
  pthread_mutex_unlock(&s->lock);
}

/* Stop taking tasks (unserve, or the node leaving). Thread: the loop. */
static void server_stop(weft_pool_server_t* s, bool gone) {
  slot_t* slots;
  weft__nats_sub_t *csub, *psub;
  bool watching, pulling;
  pthread_mutex_lock(&s->lock);
  s->stopped = true;
  if (gone)
    s->gone = true;
  slots = s->slots;
  s->slots = NULL;
  csub = s->cancel_sub;
  s->cancel_sub = NULL;
  psub = s->pull_sub;
  s->pull_sub = NULL;
  pulling = s->pulling;
  s->pulling = false;
  watching = s->watching;
  s->watching = false;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
  if (pulling)
    (void)pthread_join(s->puller, NULL);
  if (pulling && !gone)
    await_pulls(s);
  close_slots(slots);
  if (csub != NULL)
    weft__nats_unsubscribe(csub);
  if (psub != NULL)
    weft__nats_unsubscribe(psub);
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
  return weft_pool_serve_ex(node, pool, group, NULL, out);
}

int weft_pool_serve_ex(weft_node_t* node,
                       weft_pool_t* pool,
                       const char* group,
                       const weft_pool_serve_opts_t* opts,
                       weft_pool_server_t** out) {
  weft_pool_serve_opts_t o;
  weft_pool_server_t* s;
  const char* cluster;
  char cancel_subject[SUBJECT_MAX];
  int err;
  if (out != NULL)
    *out = NULL;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (node == NULL || pool == NULL || out == NULL ||
      !weft__wire_name_ok(group) || o.ack_wait_ms < 0 ||
      (o.stream != NULL && !weft__wire_name_ok(o.stream)))
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
  pthread_cond_init(&s->wake, NULL);
  s->durable = o.durable;
  s->ack_wait_ms = o.ack_wait_ms > 0 ? o.ack_wait_ms : 30000;
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
  if (s->durable) {
    err = serve_durable(s, cluster, group, &o);
    if (err != 0) {
      server_stop(s, false);
      server_unref(s);
      return err;
    }
    *out = s;
    return 0;
  }
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
  out->orphaned = s->orphaned;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

/* ---- submitting: the remote pool's backend ------------------------------ */

/* Durable: RT_SENT is published into the stream, its acknowledgement
 * not heard yet; RT_STORED is in the stream, taken by nobody yet. */
enum { RT_WAIT, RT_SENT, RT_HELD, RT_STORED };

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
  else if (rt->state == RT_STORED)
    r->nstored--;
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
    if (rt->state == RT_STORED)
      r->nstored--;
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
    (void)js_names(cluster, group, o.stream, stream, js_subject);
    err = js_ensure_stream(node, stream, js_subject);
    if (err != 0)
      return err;
  }
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
