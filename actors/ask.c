/* ask.c - request/reply with actors, on lib/'s request machinery.
 *
 * An ask is a request message (request.c's route rides beside its value)
 * pushed into the actor's mailbox, so the actor answers it as a port's
 * handler answers one: weft_msg_reply(), weft_msg_take_reply(). Its
 * outcome comes back on a loop: the blocking call's thread-local inbox
 * (weft_actor_call()), or the asking thread's loop (weft_actor_ask()).
 * For an asking actor that loop is the scheduler's it asked on, but the
 * actor may run elsewhere by then, so the outcome is forwarded into the
 * asker's mailbox (tag ASK_REPLY) and its callback runs in the asker's
 * own turn. A request that dies in a mailbox (the actor ended) settles as
 * WEFT_ECLOSED in request.c; askers see WEFT_EDEADACTOR. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The record rides in the message's `aux` (64 bits), through a union:
 * no integer-to-pointer cast. */
_Static_assert(sizeof(void*) <= sizeof(uint64_t), "a pointer fits in aux");

typedef struct ask_s {
  weft_actor_id asker; /* 0: a loop asker. */
  weft_ask_cb cb;
  void* arg;
} ask_t;

typedef union {
  uint64_t aux;
  ask_t* k;
} ask_aux_t;

static uint64_t aux_of(ask_t* k) {
  ask_aux_t u;
  u.aux = 0;
  u.k = k;
  return u.aux;
}

static ask_t* record_of(const weft_msg_t* m) {
  ask_aux_t u;
  u.aux = m->aux;
  return u.k;
}

static int translate(int status) {
  return status == WEFT_ECLOSED ? WEFT_EDEADACTOR : status;
}

/* request.c's post: into the mailbox of the actor `to` points to. */
static int post_actor(void* to, weft_msg_t** msg) {
  weft_actor_t* self = weft__actor_current();
  weft_actor_id id = *(const weft_actor_id*)to;
  int err;
  (*msg)->tag = WEFT__TAG_PLAIN;
  (*msg)->aux = self != NULL ? self->id : 0;
  err = weft__actor_push(id, *msg, self == NULL);
  if (err == 0)
    *msg = NULL;
  return err;
}

/* The outcome on the asking loop. */
static void outcome(void* ctx, int status, weft_msg_t* reply) {
  ask_t* k = ctx;
  weft_msg_t* m;
  status = translate(status);
  if (k->asker == 0) {
    k->cb(NULL, NULL, k->arg, status, reply);
    free(k);
    return;
  }
  /* Forward to the asker's turn: the reply itself (kept: it then owns its
   * decoded value), or an empty message with the code. */
  if (reply != NULL && weft_msg_keep(reply) == 0) {
    m = reply;
    m->code = 0;
  } else {
    m = weft__actor_msg(WEFT__TAG_ASK_REPLY, 0, NULL, 0);
    if (m == NULL) {
      free(k); /* The asker never hears: out of memory. */
      return;
    }
    m->code = reply != NULL ? WEFT_ENOMEM : status;
  }
  m->tag = WEFT__TAG_ASK_REPLY;
  m->aux = aux_of(k);
  if (weft__actor_push(k->asker, m, false) != 0) {
    weft_msg_free(m); /* The asker ended: nobody to tell. */
    free(k);
  }
}


void weft__ask_deliver(weft_actor_t* a, weft_msg_t* m) {
  ask_t* k = record_of(m);
  int status = m->code;
  m->tag = WEFT__TAG_PLAIN;
  m->aux = 0;
  if (status == 0) {
    /* Kept on the asking loop; handed out again here, so the callback may
     * keep it in turn (msg.c reuses its zone). */
    weft__msg_deliver(m);
    k->cb(a, a->state, k->arg, 0, m);
    if (!weft__msg_delivered_kept(m))
      weft_msg_free(m);
  } else {
    weft_msg_free(m);
    k->cb(a, a->state, k->arg, status, NULL);
  }
  free(k);
}

void weft__ask_drop(weft_msg_t* m) {
  free(record_of(m));
  weft_msg_free(m);
}

static int request_msg(const void* bytes, size_t len, weft_msg_t** out) {
  *out = NULL;
  if (bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (len > WEFT_MSG_DEFAULT_LIMIT)
    return WEFT_EMSGSIZE;
  *out = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (*out == NULL)
    return WEFT_ENOMEM;
  memcpy((*out)->data, bytes, len);
  (*out)->len = len;
  return weft__msg_seal(*out);
}

int weft_actor_ask(weft_actor_t* self,
                   weft_actor_id to,
                   const void* bytes,
                   size_t len,
                   int64_t timeout_ms,
                   weft_ask_cb cb,
                   void* arg) {
  weft_msg_t* m;
  ask_t* k;
  int err;
  if (cb == NULL)
    return WEFT_EINVAL;
  if (self != NULL && self != weft__actor_current())
    return WEFT_EINVAL;
  err = request_msg(bytes, len, &m);
  if (err != 0) {
    weft_msg_free(m);
    return err;
  }
  k = WEFT__FAILABLE(malloc(sizeof(*k)));
  if (k == NULL) {
    weft_msg_free(m);
    return WEFT_ENOMEM;
  }
  k->asker = self != NULL ? self->id : 0;
  k->cb = cb;
  k->arg = arg;
  err = weft__request_async(post_actor, &to, &m, timeout_ms, outcome, k, NULL);
  if (err != 0) {
    free(k);
    weft_msg_free(m);
  }
  return err;
}

int weft_actor_call(weft_actor_id to,
                    const void* bytes,
                    size_t len,
                    int64_t timeout_ms,
                    weft_msg_t** reply) {
  int64_t deadline = timeout_ms > 0 ? weft__deadline_ns(timeout_ms) : -1;
  weft_msg_t* m;
  int err;
  if (reply == NULL)
    return WEFT_EINVAL;
  *reply = NULL;
  if (weft__sched_current() != NULL)
    return WEFT_EBUSY;
  err = request_msg(bytes, len, &m);
  /* A mailbox over its mark: wait for room within the same time limit
   * (the request is still ours when its post is refused). */
  while (err == 0) {
    int64_t left_ms = timeout_ms;
    if (deadline >= 0)
      left_ms = (deadline - (int64_t)uv_hrtime()) / 1000000 + 1;
    err = weft__request_call(post_actor, &to, &m, left_ms, reply);
    if (err != WEFT_EMAILBOXFULL)
      break;
    err = weft__actor_wait_room(to, deadline);
  }
  weft_msg_free(m);
  return translate(err == WEFT_EMAILBOXFULL ? WEFT_ETIMEDOUT : err);
}
