/* pool_server.c - the distributed pool's serving side (weft/pool_node.h:
 * weft_pool_serve): a node's pool takes tasks offered to its group, through
 * a NATS queue group, or durably from the group's JetStream stream. The
 * wire and subjects: pool_wire.c; the submitting side: pool_remote.c.
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
 * Durable (JetStream; docs/node.md "Durable tasks"). A durable server has
 * no slots: its puller thread asks the durable pull consumer for as many
 * tasks as workers are free (each pull's own reply subject under
 * weft.<c>.<n>.js.s<id>.p.<k>, where its end, a status without a reply
 * subject, comes; its tasks come there with the stream's subject and a
 * $JS.ACK reply). A delivered task keeps its worker from then on; its
 * result is sent as a request (so "no responders" tells of a submitter
 * gone) and only then is the message acknowledged.
 *
 * Locks. A server has one mutex; it is held while publishing (so that
 * nothing publishes once the node is leaving: the LEAVING watcher sets
 * `gone` under it) and while settling (settle never calls back). Lock
 * order: a server's lock, then its pool's (weft_task_cancel); never the
 * other way. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "jetstream.h"
#include "nats.h"
#include "node_internal.h"
#include "pool_internal.h"
#include "pool_node_internal.h"
#include "weft/pool_node.h"

#define NAME_MAX_LEN WEFT__WIRE_NAME_MAX
#define SUBJECT_MAX WEFT__POOL_SUBJECT_MAX
#define QUEUE_NAME "weft-pool"
#define JS_DURABLE "weft-pool"
/* A pull request is held at the server this long, and taken as ended
 * this much later if its end was not heard. */
#define JS_PULL_EXPIRES_MS 1000
#define JS_PULL_GRACE_MS 1000
#define JS_MAX_PULLS 8

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
    status = weft__pool_msg_bytes(result, &buf, &bytes, &len);
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
  n = 2 + weft__pool_wire_put_str(ack + 2, s->self);
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
  uint64_t next_wpi = weft__now_ms() + wpi_ms;
  (void)pthread_setname_np(pthread_self(), "weft-jspull");
  pthread_mutex_lock(&s->lock);
  while (!s->stopped) {
    uint64_t now = weft__now_ms(), wake_at = now + 250;
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
    weft__cond_deadline_in(&until, wake_at - now);
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
  err = weft__pool_js_request(node, subj, body, n, &result);
  if (err != 0 || result == 0)
    return err;
  /* Shorter than the CREATE subject that fitted: never cut. (Checked all
   * the same, as gcc cannot see it once this is inlined.) */
  if (snprintf(subj, sizeof(subj), "$JS.API.CONSUMER.INFO.%s.%s", stream,
               JS_DURABLE) >= (int)sizeof(subj))
    return WEFT_EINVAL;
  err = weft__pool_js_request(node, subj, "", 0, &result);
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
  int err =
      weft__pool_js_names(cluster, group, o->stream, s->stream, subject);
  if (err == 0)
    err = weft__pool_js_ensure_stream(s->node, s->stream, subject);
  if (err == 0)
    err = js_ensure_consumer(s->node, s->stream, s->ack_wait_ms);
  if (err != 0)
    return err;
  id = (unsigned long long)weft__pool_js_next_id();
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
    uint64_t now = weft__now_ms(), until_ms = 0;
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
    weft__cond_deadline_in(&until, until_ms - now);
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
  (void)weft__cond_init_mono(&s->wake);
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
