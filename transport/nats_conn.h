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
  /* Subscriptions ended (their `done` ran) whose nats.c object waits to be
   * destroyed (`next_grave`), under `klock`: nats.c 3.4's reader looks a
   * message's subscription up, lets go of the lookup's lock and only then
   * locks the subscription, holding no reference in between (fixed after
   * 3.5: nats-io/nats.c#637, #638), so one destroyed as soon as it ended
   * can be freed under a reader that is processing a message for it. The
   * kicker destroys the graves it took once a flush's PONG came (the reader
   * finished every message read before it); weft__nats_close() the rest,
   * once nats.c joined the reader, and from then on `reaped` says to
   * destroy at once. */
  weft__nats_sub_t* graves;
  bool reaped;
  /* The owner's reference, one per live batch and one per subscription
   * not yet destroyed: a batch may be freed after the connection closed,
   * and reads `klock` then; a subscription is buried under `klock`. */
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
  weft__nats_t* conn;          /* Referenced until `sub` is destroyed. */
  weft__nats_sub_t* next_grave; /* conn->graves. */
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
