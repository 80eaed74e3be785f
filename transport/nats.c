/* nats.c - the NATS back-end (nats.h) on nats.c 3.4 (Debian's libnats).
 *
 * Lifetime. nats.c calls back with our pointers from its own threads until
 * the connection's "closed" callback (for the connection) and a
 * subscription's "complete" callback (for the subscription) have run, so a
 * wrapper is freed only after those: weft__nats_close() waits for the
 * closed callback, a subscription frees itself in its complete callback. */
#include "nats.h"

#include "nats_conn.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weft/errno.h"


/* Why a connection ended for good (nats.c retries only some failures):
 * the server refused our credentials (UV_EACCES: nats.c says so in its
 * status, or only in its error text, depending on when the server's -ERR
 * arrives), or anything else (WEFT_ENOTCONNECTED: no TLS where the server
 * wants it, a broken handshake, attempts exhausted). */
static int refusal(natsStatus s, const char* text) {
  if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED ||
      (text != NULL && (strstr(text, "Authorization") != NULL ||
                        strstr(text, "Authentication") != NULL)))
    return UV_EACCES;
  return WEFT_ENOTCONNECTED;
}

static void emit(weft__nats_t* c, int event, int code) {
  if (c->on_event != NULL)
    c->on_event(c->ctx, event, code);
}

static void on_connected(natsConnection* nc, void* closure) {
  (void)nc;
  emit(closure, WEFT__NATS_CONNECTED, 0);
}

static void on_disconnected(natsConnection* nc, void* closure) {
  (void)nc;
  emit(closure, WEFT__NATS_DISCONNECTED, 0);
}

static void on_reconnected(natsConnection* nc, void* closure) {
  (void)nc;
  emit(closure, WEFT__NATS_RECONNECTED, 0);
}

static void on_closed(natsConnection* nc, void* closure) {
  weft__nats_t* c = closure;
  const char* text = NULL;
  natsStatus s = natsConnection_GetLastError(nc, &text);
  if (s != NATS_OK && refusal(s, text) == UV_EACCES)
    emit(c, WEFT__NATS_ERROR, UV_EACCES);
  emit(c, WEFT__NATS_CLOSED, 0);
  pthread_mutex_lock(&c->lock);
  c->closed = true;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

static void on_error(natsConnection* nc,
                     natsSubscription* sub,
                     natsStatus err,
                     void* closure) {
  (void)nc;
  (void)sub;
  emit(closure, WEFT__NATS_ERROR, weft__nats_status(err));
}

/* "u1,u2,..." as nats.c's server list. natsOptions_SetURL() of nats.c 3.4
 * takes such a list but then never connects ("no server available", seen
 * with two live servers), so the list is split here (spaces trimmed) and
 * given to natsOptions_SetServers(). */
#define MAX_SERVERS 32

static natsStatus set_servers(natsOptions* opts, const char* list) {
  char* copy = strdup(list);
  const char* urls[MAX_SERVERS];
  int n = 0;
  natsStatus s;
  char *p, *save = NULL;
  if (copy == NULL)
    return NATS_NO_MEMORY;
  for (p = strtok_r(copy, ",", &save); p != NULL && n < MAX_SERVERS;
       p = strtok_r(NULL, ",", &save)) {
    char* end = p + strlen(p);
    while (*p == ' ')
      p++;
    while (end > p && end[-1] == ' ')
      *--end = '\0';
    if (*p != '\0')
      urls[n++] = p;
  }
  s = n == 0 ? NATS_INVALID_ARG : natsOptions_SetServers(opts, urls, n);
  free(copy);
  return s;
}

/* Options from ours; NATS_OK or the first failing call's status. */
static natsStatus make_options(const weft__nats_opts_t* o,
                               weft__nats_t* c,
                               natsOptions** out) {
  natsOptions* opts = NULL;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK)
    s = set_servers(opts, o->servers);
  /* In the order given: a node prefers its first server (and its
   * neighbours stay on theirs); the others are for failing over. */
  if (s == NATS_OK)
    s = natsOptions_SetNoRandomize(opts, true);
  if (s == NATS_OK && o->name != NULL)
    s = natsOptions_SetName(opts, o->name);
  if (s == NATS_OK && o->user != NULL)
    s = natsOptions_SetUserInfo(opts, o->user, o->password);
  if (s == NATS_OK && o->creds_file != NULL)
    s = natsOptions_SetUserCredentialsFromFiles(opts, o->creds_file, NULL);
  if (s == NATS_OK && o->nkey != NULL)
    s = natsOptions_SetNKeyFromSeed(opts, o->nkey, o->nkey_seed_file);
  if (s == NATS_OK && o->tls_ca != NULL) {
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK)
      s = natsOptions_LoadCATrustedCertificates(opts, o->tls_ca);
  }
  if (s == NATS_OK && o->tls_cert != NULL)
    s = natsOptions_LoadCertificatesChain(opts, o->tls_cert, o->tls_key);
  if (s == NATS_OK && o->connect_timeout_ms > 0)
    s = natsOptions_SetTimeout(opts, o->connect_timeout_ms);
  if (s == NATS_OK && o->reconnect_wait_ms > 0)
    s = natsOptions_SetReconnectWait(opts, o->reconnect_wait_ms);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(opts, o->max_reconnect);
  if (s == NATS_OK && o->ping_interval_ms > 0)
    s = natsOptions_SetPingInterval(opts, o->ping_interval_ms);
  if (s == NATS_OK && o->max_pending_msgs > 0)
    s = natsOptions_SetMaxPendingMsgs(opts, o->max_pending_msgs);
  if (s == NATS_OK)
    s = natsOptions_SetDisconnectedCB(opts, on_disconnected, c);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectedCB(opts, on_reconnected, c);
  if (s == NATS_OK)
    s = natsOptions_SetClosedCB(opts, on_closed, c);
  if (s == NATS_OK)
    s = natsOptions_SetErrorHandler(opts, on_error, c);
  if (s != NATS_OK) {
    natsOptions_Destroy(opts);
    return s;
  }
  *out = opts;
  return NATS_OK;
}

/* Destroy a list of buried subscriptions (nats_conn.h `graves`): their
 * nats.c objects, the wrappers and their references on the connection.
 * Not under `klock`. */
static void reap(weft__nats_sub_t* g) {
  while (g != NULL) {
    weft__nats_sub_t* s = g;
    g = s->next_grave;
    natsSubscription_Destroy(s->sub);
    weft__nats_unref(s->conn);
    free(s);
  }
}

static void* kicker_main(void* arg) {
  weft__nats_t* c = arg;
  pthread_setname_np(pthread_self(), "weft-nats-kick");
  pthread_mutex_lock(&c->klock);
  for (;;) {
    weft__nats_sub_t* graves;
    natsStatus fs;
    while (!c->kicked && !c->stop && c->dirty == NULL)
      pthread_cond_wait(&c->kcond, &c->klock);
    if (c->stop)
      break; /* weft__nats_close() writes what batches hold. */
    if (!c->kicked && c->dirty != NULL && c->linger_ns > 0) {
      /* Gather: the first post waiting may wait a window for others. */
      uint64_t due = c->dirty_since + c->linger_ns, now = weft__nats_now_ns();
      if (now < due) {
        struct timespec until;
        until.tv_sec = (time_t)(due / 1000000000u);
        until.tv_nsec = (long)(due % 1000000000u);
        (void)pthread_cond_timedwait(&c->kcond, &c->klock, &until);
        continue;
      }
    }
    weft__nats_batches_run(c); /* Lets go of klock while it writes. */
    if (!c->kicked)
      continue;
    c->kicked = false;
    /* Publishers that come during the flush kick again: cleared before,
     * and fenced against their publish-then-read (weft__nats_kick): either
     * a publisher sees it clear and kicks, or this flush writes what it
     * published. */
    atomic_store_explicit(&c->kick_pending, false, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    /* Subscriptions buried before this flush: its PONG comes after every
     * message the reader may be processing for them. */
    graves = c->graves;
    c->graves = NULL;
    pthread_mutex_unlock(&c->klock);
    /* Writes the buffer now; the wait for the PONG is bounded so that a
     * stalled server delays the next kicked write by 50 ms at most (it
     * waits in nats.c's buffer meanwhile, as it would anyway). */
    fs = natsConnection_FlushTimeout(c->nc, 50);
    if (fs == NATS_OK)
      reap(graves);
    pthread_mutex_lock(&c->klock);
    if (fs != NATS_OK && graves != NULL) {
      /* No PONG: they wait for the next flush, or for the close. */
      weft__nats_sub_t* last = graves;
      while (last->next_grave != NULL)
        last = last->next_grave;
      last->next_grave = c->graves;
      c->graves = graves;
    }
  }
  pthread_mutex_unlock(&c->klock);
  return NULL;
}

void weft__nats_kick(weft__nats_t* c) {
  if (c == NULL || !c->kicker_started)
    return;
  atomic_thread_fence(memory_order_seq_cst); /* See kicker_main. */
  if (atomic_load_explicit(&c->kick_pending, memory_order_relaxed))
    return; /* A flush is asked already: it writes what we published. */
  pthread_mutex_lock(&c->klock);
  atomic_store_explicit(&c->kick_pending, true, memory_order_relaxed);
  if (!c->kicked) {
    c->kicked = true;
    pthread_cond_signal(&c->kcond);
  }
  pthread_mutex_unlock(&c->klock);
}

int weft__nats_connect(const weft__nats_opts_t* o,
                       weft__nats_event_cb on_event,
                       void* ctx,
                       weft__nats_t** out) {
  weft__nats_t* c;
  natsOptions* opts = NULL;
  natsStatus s;
  int err = 0;
  *out = NULL;
  if (o == NULL || o->servers == NULL)
    return WEFT_EINVAL;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return WEFT_ENOMEM;
  c->on_event = on_event;
  c->ctx = ctx;
  pthread_mutex_init(&c->lock, NULL);
  pthread_mutex_init(&c->klock, NULL);
  {
    /* The kicker's gather deadline and the close's wait are on
     * CLOCK_MONOTONIC (a step of the wall clock moves neither). */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_cond_init(&c->kcond, &ca);
    pthread_condattr_destroy(&ca);
  }
  pthread_cond_init(&c->bcond, NULL);
  c->gather_ns = o->gather_us > 0 ? (uint64_t)o->gather_us * 1000u : 10000u;
  c->linger_ns = o->gather_us > 0 ? c->gather_ns : 0;
  atomic_init(&c->kick_pending, false);
  atomic_init(&c->unsent, 0);
  atomic_init(&c->refs, 1);
  s = make_options(o, c, &opts);
  if (s != NATS_OK) {
    err = s == NATS_NO_MEMORY ? WEFT_ENOMEM : WEFT_EINVAL;
  } else {
    /* The first attempt without nats.c's retry-on-failed-connect: then a
     * server that refuses us says so here (with it, the refusal can come
     * in the background and nats.c reports only "no server" at the end).
     * Only when no server answered at all is it retried in the
     * background. */
    s = natsConnection_Connect(&c->nc, opts);
    if (s == NATS_NO_SERVER) {
      natsConnection_Destroy(c->nc); /* NULL-safe */
      c->nc = NULL;
      s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, c);
      if (s == NATS_OK)
        s = natsConnection_Connect(&c->nc, opts);
    }
    natsOptions_Destroy(opts);
    if (s == NATS_OK) {
      emit(c, WEFT__NATS_CONNECTED, 0); /* At once: no callback comes. */
    } else if (s == NATS_NO_MEMORY) {
      err = WEFT_ENOMEM;
    } else if (s != NATS_NOT_YET_CONNECTED) {
      /* Refused for good on the first attempt: a closed connection, as
       * if the background attempts had ended so (the same events). */
      int why = refusal(s, nats_GetLastError(NULL));
      natsConnection_Destroy(c->nc); /* NULL-safe */
      c->nc = NULL;
      c->closed = true;
      if (why == UV_EACCES)
        emit(c, WEFT__NATS_ERROR, why);
      emit(c, WEFT__NATS_CLOSED, 0);
    }
  }
  if (err == 0 && c->nc != NULL) {
    /* Without it kicks are no-ops: publishes wait for nats.c's flusher. */
    c->kicker_started =
        pthread_create(&c->kicker, NULL, kicker_main, c) == 0;
    c->gather = c->kicker_started && o->gather_us >= 0;
  }
  if (err != 0) {
    natsConnection_Destroy(c->nc); /* NULL-safe. */
    weft__nats_unref(c);
    return err;
  }
  *out = c;
  return 0;
}

int weft__nats_publish(weft__nats_t* c,
                       const char* subject,
                       const char* reply,
                       const void* data,
                       size_t len,
                       const char* error) {
  natsStatus s;
  natsMsg* m = NULL;
  if (c == NULL || subject == NULL || len > INT32_MAX)
    return WEFT_EINVAL;
  if (c->nc == NULL)
    return WEFT_ENOTCONNECTED;
  if (error == NULL && reply == NULL)
    return weft__nats_status(
        natsConnection_Publish(c->nc, subject, data, (int)len));
  if (error == NULL)
    return weft__nats_status(natsConnection_PublishRequest(
        c->nc, subject, reply, data, (int)len));
  s = natsMsg_Create(&m, subject, reply, data, (int)len);
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m, "Weft-Error", error);
  if (s == NATS_OK)
    s = natsConnection_PublishMsg(c->nc, m);
  natsMsg_Destroy(m);
  return weft__nats_status(s);
}

typedef struct {
  weft__nats_sub_t* s;
  weft__nats_msg_t m;
} split_t;

static void deliver_one(void* ctx, const void* p, size_t len) {
  split_t* sp = ctx;
  sp->m.data = p;
  sp->m.len = len;
  sp->s->cb(sp->s->ctx, &sp->m);
}

/* A Weft-Batch message (nats.h, weft__nats_subscribe_posts): its posts one
 * by one, then WEFT_EDECODE if its frames or count are not right. */
static void deliver_batch(weft__nats_sub_t* s, natsMsg* msg, const char* n) {
  split_t sp = {.s = s};
  char* end = NULL;
  unsigned long long count;
  int err = WEFT_EDECODE;
  sp.m.subject = natsMsg_GetSubject(msg);
  if (n[0] >= '0' && n[0] <= '9') {
    count = strtoull(n, &end, 10);
    if (*end == '\0')
      err = weft__nats_batch_split(natsMsg_GetData(msg),
                                   (size_t)natsMsg_GetDataLength(msg), count,
                                   deliver_one, &sp);
  }
  if (err != 0) {
    sp.m.data = NULL;
    sp.m.len = 0;
    sp.m.status = err;
    s->cb(s->ctx, &sp.m);
  }
}

static void sub_message(natsConnection* nc,
                        natsSubscription* sub,
                        natsMsg* msg,
                        void* closure) {
  weft__nats_sub_t* s = closure;
  weft__nats_msg_t m;
  const char* err = NULL;
  (void)nc;
  (void)sub;
  if (s->batches && natsMsgHeader_Get(msg, "Weft-Batch", &err) == NATS_OK) {
    deliver_batch(s, msg, err);
    natsMsg_Destroy(msg);
    return;
  }
  m.subject = natsMsg_GetSubject(msg);
  m.reply = natsMsg_GetReply(msg);
  m.data = natsMsg_GetData(msg);
  m.len = (size_t)natsMsg_GetDataLength(msg);
  m.status = natsMsg_IsNoResponders(msg) ? WEFT_ENORESPONDERS : 0;
  if (natsMsgHeader_Get(msg, "Weft-Error", &err) != NATS_OK)
    err = NULL;
  m.error = err;
  s->cb(s->ctx, &m);
  natsMsg_Destroy(msg);
}

static void sub_unref(weft__nats_sub_t* s) {
  weft__nats_t* c = s->conn;
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* No callback comes any more; nats.c's reader may still hold the object
   * (nats_conn.h `graves`): buried, destroyed after the kicker's next
   * flush, or at once once the connection's reader is gone. */
  if (s->done != NULL)
    s->done(s->ctx);
  pthread_mutex_lock(&c->klock);
  if (!c->reaped) {
    s->next_grave = c->graves;
    c->graves = s;
    c->kicked = true; /* No kicker: they wait for weft__nats_close(). */
    pthread_cond_signal(&c->kcond);
    pthread_mutex_unlock(&c->klock);
    return;
  }
  pthread_mutex_unlock(&c->klock);
  s->next_grave = NULL;
  reap(s);
}

static void sub_complete(void* closure) {
  sub_unref(closure);
}

static int subscribe(weft__nats_t* c,
                     const char* subject,
                     const char* queue,
                     bool batches,
                     weft__nats_msg_cb cb,
                     weft__nats_done_cb done,
                     void* ctx,
                     weft__nats_sub_t** out) {
  weft__nats_sub_t* s;
  natsStatus st;
  *out = NULL;
  if (c == NULL || subject == NULL || cb == NULL)
    return WEFT_EINVAL;
  if (c->nc == NULL || natsConnection_IsClosed(c->nc))
    return WEFT_ENOTCONNECTED;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  atomic_init(&s->refs, 2);
  s->conn = c;
  s->cb = cb;
  s->done = done;
  s->ctx = ctx;
  s->batches = batches;
  if (queue != NULL)
    st = natsConnection_QueueSubscribe(&s->sub, c->nc, subject, queue,
                                       sub_message, s);
  else
    st = natsConnection_Subscribe(&s->sub, c->nc, subject, sub_message, s);
  if (st == NATS_OK)
    st = natsSubscription_SetOnCompleteCB(s->sub, sub_complete, s);
  if (st == NATS_OK)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  if (st != NATS_OK) {
    if (s->sub != NULL) {
      /* Subscribed but no completion: nothing may touch `s` once it is
       * freed, so stop delivery first (no message can have come: the
       * callback needs the server's round trip). */
      natsSubscription_Unsubscribe(s->sub);
      natsSubscription_Destroy(s->sub);
    }
    free(s);
    /* Closed meanwhile (refused in the background): nats.c answers that
     * with several statuses. */
    return natsConnection_IsClosed(c->nc) ? WEFT_ENOTCONNECTED
                                          : weft__nats_status(st);
  }
  *out = s;
  return 0;
}

int weft__nats_subscribe(weft__nats_t* c,
                         const char* subject,
                         const char* queue,
                         weft__nats_msg_cb cb,
                         weft__nats_done_cb done,
                         void* ctx,
                         weft__nats_sub_t** out) {
  return subscribe(c, subject, queue, false, cb, done, ctx, out);
}

int weft__nats_subscribe_posts(weft__nats_t* c,
                               const char* subject,
                               weft__nats_msg_cb cb,
                               weft__nats_done_cb done,
                               void* ctx,
                               weft__nats_sub_t** out) {
  return subscribe(c, subject, NULL, true, cb, done, ctx, out);
}

void weft__nats_drain(weft__nats_sub_t* s) {
  /* Closed already: nothing comes any more; stop as unsubscribe does. */
  if (natsSubscription_Drain(s->sub) != NATS_OK)
    natsSubscription_Unsubscribe(s->sub);
  sub_unref(s);
}

uint64_t weft__nats_sub_dropped(weft__nats_sub_t* s) {
  int64_t n = 0;
  if (natsSubscription_GetDropped(s->sub, &n) != NATS_OK || n < 0)
    return 0;
  return (uint64_t)n;
}

void weft__nats_unsubscribe(weft__nats_sub_t* s) {
  /* Closed already (with the connection) is fine: nats.c answers
   * NATS_INVALID_SUBSCRIPTION and the object is still ours. */
  natsSubscription_Unsubscribe(s->sub);
  sub_unref(s);
}

int weft__nats_flush(weft__nats_t* c, int64_t timeout_ms) {
  if (c->nc == NULL)
    return WEFT_ENOTCONNECTED;
  return weft__nats_status(natsConnection_FlushTimeout(c->nc, timeout_ms));
}

int64_t weft__nats_max_payload(weft__nats_t* c) {
  return c->nc == NULL ? 0 : natsConnection_GetMaxPayload(c->nc);
}

bool weft__nats_closed(weft__nats_t* c) {
  return c->nc == NULL || natsConnection_IsClosed(c->nc);
}

bool weft__nats_connected(weft__nats_t* c) {
  return c->nc != NULL && natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
}

void weft__nats_close(weft__nats_t* c) {
  struct timespec until;
  bool closed;
  if (c == NULL)
    return;
  if (c->kicker_started) {
    pthread_mutex_lock(&c->klock);
    c->stop = true;
    pthread_cond_signal(&c->kcond);
    pthread_mutex_unlock(&c->klock);
    pthread_join(c->kicker, NULL);
    c->kicker_started = false;
  }
  pthread_mutex_lock(&c->klock);
  weft__nats_batches_close(c);
  pthread_mutex_unlock(&c->klock);
  if (c->nc != NULL)
    natsConnection_Close(c->nc);
  /* Close() joined nats.c's reader: the subscriptions buried are nobody's
   * now, and those that end from here on are destroyed at once. */
  {
    weft__nats_sub_t* graves;
    pthread_mutex_lock(&c->klock);
    graves = c->graves;
    c->graves = NULL;
    c->reaped = true;
    pthread_mutex_unlock(&c->klock);
    reap(graves);
  }
  /* nats.c runs the closed callback on its own thread, after Close(). */
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&c->lock);
  while (!c->closed) {
    if (pthread_cond_timedwait(&c->cond, &c->lock, &until) != 0)
      break;
  }
  closed = c->closed;
  pthread_mutex_unlock(&c->lock);
  natsConnection_Destroy(c->nc);
  if (!closed)
    return; /* Never seen to close: leave `c` to a late callback. */
  weft__nats_unref(c); /* Batches not freed yet keep it. */
}

