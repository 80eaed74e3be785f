/* nats_conn.c - the connection object's basics (nats_conn.h), below both
 * nats.c and nats_batch.c: nats.c's statuses as weft's codes, the
 * object's last reference, the clock batches are timed with. */
#include "nats_conn.h"

#include <stdlib.h>
#include <time.h>

#include "weft/errno.h"

/* nats.c's status as weft's code. */
int weft__nats_status(natsStatus s) {
  switch (s) {
    case NATS_OK:
      return 0;
    case NATS_NO_MEMORY:
      return WEFT_ENOMEM;
    case NATS_TIMEOUT:
      return WEFT_ETIMEDOUT;
    case NATS_MAX_PAYLOAD:
      return WEFT_EMSGSIZE;
    case NATS_SLOW_CONSUMER:
      return WEFT_ESLOWCONSUMER;
    case NATS_NO_RESPONDERS:
      return WEFT_ENORESPONDERS;
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_STALE_CONNECTION:
    case NATS_INSUFFICIENT_BUFFER: /* The reconnect buffer is full. */
      return WEFT_ENOTCONNECTED;
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      return UV_EACCES;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_SUBSCRIPTION:
    case NATS_ILLEGAL_STATE:
    case NATS_ERR:
    case NATS_IO_ERROR:
    case NATS_SSL_ERROR:
    case NATS_PROTOCOL_ERROR:
    case NATS_SYS_ERROR:
    default:
      return WEFT_EINVAL;
  }
}

void weft__nats_unref(weft__nats_t* c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_mutex_destroy(&c->klock);
  pthread_cond_destroy(&c->kcond);
  pthread_cond_destroy(&c->bcond);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->cond);
  free(c);
}

uint64_t weft__nats_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
