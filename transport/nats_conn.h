/* nats_conn.h - the connection object of the NATS back-end, shared by
 * nats.c (the connection, subscriptions, the kicker) and nats_batch.c
 * (posts gathered into batches, which the kicker writes); its basics are
 * in nats_conn.c, below both (scripts/check_layers.sh). Private to
 * transport/. */
#ifndef WEFT_TRANSPORT_NATS_CONN_H
#define WEFT_TRANSPORT_NATS_CONN_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "nats.h"

struct weft__nats_s {
  natsConnection* nc;
  weft__nats_event_cb on_event;
  void* ctx;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool closed; /* The closed callback ran. Under `lock`. */
  /* The kicker (nats.c's top): `kicked` asks it to flush; `stop` ends it.
   * Both under `klock`; `kick_pending` is a hint read without it, so a
   * publisher does not take the lock while a flush is already asked.
   * `klock` also guards every batch of the connection (nats_batch.c):
   * the lists below and each batch's fields; `bcond` is signalled when a
   * batch the kicker was writing is written. */
  pthread_mutex_t klock;
  pthread_cond_t kcond;
  pthread_cond_t bcond;
  bool kicked, stop, kicker_started;
  atomic_bool kick_pending;
  pthread_t kicker;
  weft__nats_batch_t* batches; /* All of them (`next_all`). */
  weft__nats_batch_t* dirty;   /* Waiting for the kicker (`next_dirty`). */
  bool batches_dead;           /* Closed: posts answer WEFT_ENOTCONNECTED. */
  bool gather; /* A kicker was started: posts may wait for it. Set once. */
  uint64_t gather_ns;  /* opts.gather_us (0: 10 us). Set once. */
  uint64_t linger_ns;  /* opts.gather_us when set, else 0. Set once. */
  uint64_t dirty_since; /* When `dirty` last became non-empty (ns). */
  atomic_uint_least64_t unsent; /* Gathered posts nats.c then refused. */
  /* The owner's reference and one per live batch: a batch may be freed
   * after the connection closed, and reads `klock` then. */
  atomic_int refs;
};

struct weft__nats_sub_s {
  /* Two: the owner's (until weft__nats_unsubscribe) and nats.c's (until the
   * complete callback, which also comes when the connection closes). */
  atomic_int refs;
  natsSubscription* sub;
  weft__nats_msg_cb cb;
  weft__nats_done_cb done;
  void* ctx;
  bool batches; /* Split Weft-Batch messages (weft__nats_subscribe_posts). */
};

/* The kicker's part (under `klock`, which it lets go while it writes):
 * write every batch waiting. */
void weft__nats_batches_run(weft__nats_t* c);
/* At close, before nats.c's connection closes (under `klock`): write what
 * still waits and make every batch answer WEFT_ENOTCONNECTED. */
void weft__nats_batches_close(weft__nats_t* c);
/* CLOCK_MONOTONIC in ns. */
uint64_t weft__nats_now_ns(void);
/* nats.c's status as weft's code. */
int weft__nats_status(natsStatus s);
/* Drop one reference; the last frees the connection object. */
void weft__nats_unref(weft__nats_t* c);

#endif /* WEFT_TRANSPORT_NATS_CONN_H */
