/* nats.h - the NATS back-end: one connection to a cluster of nats-server
 * processes (nats.c, Debian's libnats), subjects to publish on, and
 * subscriptions whose messages come to a callback. It knows bytes,
 * subjects and a few headers, nothing of weft's messages: lib/node.c maps
 * ports, requests and replies onto it (the arrows go lib -> transport).
 *
 * Threads. nats.c runs its own threads: a reader per connection, a flusher,
 * and the threads that deliver a subscription's messages (one per
 * subscription, in subscription order). Callbacks run there; publishing is
 * allowed from any thread and never waits for the network (nats.c buffers
 * and its flusher writes), except when its buffer is full. */
#ifndef WEFT_TRANSPORT_NATS_H
#define WEFT_TRANSPORT_NATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weft__nats_s weft__nats_t;
typedef struct weft__nats_sub_s weft__nats_sub_t;
typedef struct weft__nats_batch_s weft__nats_batch_t;

/* Connection events (the second argument of weft__nats_event_cb). */
enum {
  WEFT__NATS_CONNECTED = 1, /* First connection made. */
  WEFT__NATS_DISCONNECTED,  /* Lost; reconnecting. */
  WEFT__NATS_RECONNECTED,
  WEFT__NATS_CLOSED, /* For good: refused, reconnects exhausted, or closed. */
  WEFT__NATS_ERROR   /* An asynchronous error: `code` says which (UV_EACCES
                      * before CLOSED: the server refused us). */
};

typedef struct {
  const char* servers; /* "nats://h:p[,nats://h2:p2...]" */
  const char* name;    /* The connection's name, shown by the server. */
  const char* user;
  const char* password;
  const char* creds_file; /* NATS credentials (JWT + nkey seed). */
  const char* nkey;           /* An nkey user's public key, and */
  const char* nkey_seed_file; /* the file of its seed (signs the nonce). */
  const char* tls_ca;   /* Trusted CA file: TLS is used when set. */
  const char* tls_cert; /* Client certificate and key (mutual TLS). */
  const char* tls_key;
  int64_t connect_timeout_ms;
  int64_t reconnect_wait_ms;
  int max_reconnect; /* -1: forever. */
  int64_t ping_interval_ms;
  int max_pending_msgs; /* Per subscription; 0: nats.c's default. */
  /* Posts gathered into batches (below): a post within this many us of
   * the one before on its subject joins the batch, which is written this
   * long after its first post came. 0: within 10 us, written as soon as
   * the kicker runs; negative: never. */
  int64_t gather_us;
} weft__nats_opts_t;

/* A message as a subscription delivers it. Valid during the callback only.
 * `status`: 0, or WEFT_ENORESPONDERS for the server's "no responders"
 * answer to a request; `error`: the value of the `Weft-Error` header (an
 * error name, docs/node.md) or NULL. */
typedef struct {
  const char* subject;
  const char* reply; /* NULL: not a request. */
  const char* data;
  size_t len;
  int status;
  const char* error;
} weft__nats_msg_t;

typedef void (*weft__nats_event_cb)(void* ctx, int event, int code);
typedef void (*weft__nats_msg_cb)(void* ctx, const weft__nats_msg_t* m);
/* After weft__nats_unsubscribe(), once the subscription's last callback
 * has returned (on nats.c's thread or the unsubscriber's). */
typedef void (*weft__nats_done_cb)(void* ctx);

/* Start connecting: one attempt here, then nats.c retries in the
 * background and buffers what is published meanwhile. `on_event` runs on
 * nats.c's threads (and here: CONNECTED when the first attempt succeeds;
 * ERROR with UV_EACCES when the server refused the credentials, and CLOSED,
 * when it failed in a way nats.c does not retry: then the connection is
 * closed, publishes and subscribes answer WEFT_ENOTCONNECTED). 0,
 * WEFT_EINVAL (bad options or files), WEFT_ENOMEM. Thread: any. */
int weft__nats_connect(const weft__nats_opts_t* opts,
                       weft__nats_event_cb on_event,
                       void* ctx,
                       weft__nats_t** out);
/* Publish `len` bytes on `subject` (with `reply` for a request; `error`:
 * a Weft-Error header instead of a payload when not NULL). 0,
 * WEFT_ENOTCONNECTED (closed for good), WEFT_EMSGSIZE (over the server's
 * max_payload), WEFT_ENOMEM, WEFT_EINVAL. Thread: any. */
int weft__nats_publish(weft__nats_t* c,
                       const char* subject,
                       const char* reply,
                       const void* data,
                       size_t len,
                       const char* error);
/* Have what is buffered written now rather than after nats.c's flusher
 * waited 1 ms (nats.c top comment): for requests and replies, whose round
 * trip the wait would lengthen. Cheap when a write is already asked. After
 * weft__nats_close() began it must not be called. Thread: any. */
void weft__nats_kick(weft__nats_t* c);
/* Subscribe to `subject` (a queue group member when `queue` is set).
 * Messages come to `cb` on one nats.c thread, in order. Thread: any. */
int weft__nats_subscribe(weft__nats_t* c,
                         const char* subject,
                         const char* queue,
                         weft__nats_msg_cb cb,
                         weft__nats_done_cb done,
                         void* ctx,
                         weft__nats_sub_t** out);
/* As weft__nats_subscribe(), for a subject that weft__nats_batch_post()
 * writes to: a message with a Weft-Batch header comes to `cb` as the
 * messages it carries, one call each, in order (without a reply
 * subject); one whose frames do not add up comes, after the well-formed
 * ones before the fault, as one call with `status` WEFT_EDECODE and no
 * data. Thread: any. */
int weft__nats_subscribe_posts(weft__nats_t* c,
                               const char* subject,
                               weft__nats_msg_cb cb,
                               weft__nats_done_cb done,
                               void* ctx,
                               weft__nats_sub_t** out);
/* Stop delivery as weft__nats_unsubscribe() does, but gently: the server
 * is told at once, and what it sent before it knew still comes to the
 * callback (nats.c's drain; a queue group member loses nothing). `done`
 * runs after the last of it. Call it instead of weft__nats_unsubscribe()
 * (also from the subscription's own callback). Thread: any. */
void weft__nats_drain(weft__nats_sub_t* s);
/* Messages the server or the client dropped for this subscription because
 * it fell behind (its pending limit). Thread: any. */
uint64_t weft__nats_sub_dropped(weft__nats_sub_t* s);
/* Stop delivery (also after the connection closed, which ends delivery
 * too); `done` runs once the last callback has returned, then the
 * subscription is freed. Call it exactly once per subscription.
 * Thread: any. */
void weft__nats_unsubscribe(weft__nats_sub_t* s);
/* Send what is buffered and wait for the server's answer, at most
 * `timeout_ms`: 0, WEFT_ETIMEDOUT, WEFT_ENOTCONNECTED. Blocks.
 * Thread: any. */
int weft__nats_flush(weft__nats_t* c, int64_t timeout_ms);
/* Largest payload the server takes (0 before the first connection). */
int64_t weft__nats_max_payload(weft__nats_t* c);
bool weft__nats_connected(weft__nats_t* c);
/* Closed for good (refused, attempts ran out): it never connects again. */
bool weft__nats_closed(weft__nats_t* c);
/* ---- posts gathered into batches (nats_batch.c) ----
 *
 * A post that follows the last one on its subject closely (within
 * opts.gather_us: a sender in a loop) is not written alone: it joins the
 * subject's batch, and the kicker writes the batch as one NATS message
 * (header Weft-Batch: <n>, payload: n frames of transport/frame.h, kind 1,
 * each one post's bytes) as soon as it runs (gather_us 0) or gather_us
 * after the batch's first post (set), and at once when a flush is asked
 * (a request, a reply); the poster writes it when it would pass 64 KiB.
 * One NATS message then carries many posts: the server, nats.c's reader
 * and the receiver's delivery thread each do their per-message work once
 * per batch. A post that comes after a pause is written alone at once, as
 * weft__nats_publish() would: a batch costs the kicker a wake-up, worth it
 * only when it carries several. Order is kept per subject, as for
 * publishes on one connection. */

/* The batch for posts on `subject` (copied): the one already there for
 * it, or a new one; each call is matched by one weft__nats_batch_free().
 * 0, WEFT_EINVAL, WEFT_ENOTCONNECTED, WEFT_ENOMEM. Thread: any. */
int weft__nats_batch_new(weft__nats_t* c,
                         const char* subject,
                         weft__nats_batch_t** out);
/* Post `len` bytes (copied): 0, or the code weft__nats_publish() gives
 * (WEFT_ENOTCONNECTED after weft__nats_close() began), WEFT_ENOMEM. A
 * gathered post that nats.c refuses later is counted in
 * weft__nats_unsent(). Thread: any; one batch's posts are written in the
 * order their calls returned. */
int weft__nats_batch_post(weft__nats_batch_t* b, const void* data, size_t len);
/* Write what the batch holds now, after what the kicker is writing of it:
 * before a request on the same subject, which must not overtake the posts
 * before it. 0 or weft__nats_publish()'s code. Thread: any. */
int weft__nats_batch_flush(weft__nats_batch_t* b);
/* Let go of the batch; the last user's call writes what is left, then
 * frees it. Thread: any, also after the connection closed (then it only
 * frees). */
void weft__nats_batch_free(weft__nats_batch_t* b);
/* Write every batch's posts now (before a node says goodbye). */
void weft__nats_batches_flush(weft__nats_t* c);
/* Gathered posts that nats.c refused when their batch was written (the
 * connection closed for good meanwhile): counted, never silent. */
uint64_t weft__nats_unsent(weft__nats_t* c);
/* The frames of a batch's payload, one `each` call per post, in order:
 * 0 when they fill `len` exactly and number `n`, else WEFT_EDECODE after
 * the well-formed ones. Foreign bytes: never reads past `len`. */
int weft__nats_batch_split(const void* data,
                           size_t len,
                           uint64_t n,
                           void (*each)(void* ctx, const void* p, size_t len),
                           void* ctx);

/* Close and free: no callback runs after it returns. Blocks while nats.c
 * ends its threads. Thread: any but nats.c's. */
void weft__nats_close(weft__nats_t* c);

#endif /* WEFT_TRANSPORT_NATS_H */
