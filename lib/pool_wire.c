/* pool_wire.c - the distributed pool's wire (weft/pool_node.h,
 * pool_node_internal.h): the readers and writers of what pool_server.c
 * and pool_remote.c send each other over NATS, and the JetStream API
 * requests both sides make for durable tasks.
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
 * The JetStream API is spoken as core NATS requests
 * (transport/jetstream.h): no call waits on a loop, and pool creation
 * waits only for the stream's (and consumer's) creation answers, on
 * nats.c's threads. Nothing here trusts its input. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "jetstream.h"
#include "nats.h"
#include "node_internal.h"
#include "pool_node_internal.h"

#define NAME_MAX_LEN WEFT__WIRE_NAME_MAX
#define SUBJECT_MAX WEFT__POOL_SUBJECT_MAX
#define JS_API_WAIT_MS 5000

/* ---- the wire ------------------------------------------------------------ */

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

size_t weft__pool_wire_put_str(unsigned char* out, const char* s) {
  size_t n = strlen(s), h = weft__pool_wire_str_header(out, n);
  for (size_t i = 0; i < n; i++)
    out[h + i] = (unsigned char)s[i];
  return h + n;
}

/* [name, arg], or with `reply` [name, reply, arg]. */
static size_t put_task(unsigned char* out,
                       const char* name,
                       const char* reply,
                       const void* arg,
                       size_t arg_len) {
  size_t h;
  out[0] = reply != NULL ? 0x93 : 0x92;
  h = 1 + weft__pool_wire_put_str(out + 1, name);
  if (reply != NULL)
    h += weft__pool_wire_put_str(out + h, reply);
  memcpy(out + h, arg, arg_len);
  return h + arg_len;
}

size_t weft__pool_wire_task(unsigned char* out,
                            const char* name,
                            const void* arg,
                            size_t arg_len) {
  return put_task(out, name, NULL, arg, arg_len);
}

size_t weft__pool_wire_dtask(unsigned char* out,
                             const char* name,
                             const char* reply,
                             const void* arg,
                             size_t arg_len) {
  return put_task(out, name, reply, arg, arg_len);
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

int weft__pool_msg_bytes(const weft_msg_t* m, msgpack_sbuffer* buf,
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

int weft__pool_js_names(const char* cluster, const char* group,
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

uint64_t weft__pool_js_next_id(void) {
  return (uint64_t)atomic_fetch_add_explicit(&next_jsreq, 1,
                                             memory_order_relaxed);
}

int weft__pool_js_request(weft_node_t* node, const char* subject,
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
  (void)weft__cond_init_mono(&q->cond);
  (void)snprintf(inbox, sizeof(inbox), "weft.%s.%s.js.q%llu",
                 weft__node_cluster(node), weft_node_name(node),
                 (unsigned long long)weft__pool_js_next_id());
  err = weft__node_subscribe(node, inbox, NULL, jsreq_message, jsreq_done, q,
                             &sub);
  if (err != 0) {
    atomic_fetch_sub_explicit(&q->refs, 1, memory_order_relaxed);
    jsreq_unref(q);
    return err;
  }
  err = weft__node_publish(node, subject, inbox, body, len, NULL);
  if (err == 0) {
    weft__cond_deadline_in(&until, JS_API_WAIT_MS);
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

int weft__pool_js_ensure_stream(weft_node_t* node, const char* stream,
                                const char* subject) {
  char subj[SUBJECT_MAX];
  char body[2 * SUBJECT_MAX + 128];
  size_t n = weft__js_stream_create(subj, sizeof(subj), body, sizeof(body),
                                    stream, subject);
  int result = 0, err;
  if (n == 0)
    return WEFT_EINVAL;
  err = weft__pool_js_request(node, subj, body, n, &result);
  if (err != 0)
    return err;
  return result == 0 || result == WEFT__JS_ERR_STREAM_EXISTS ? 0
                                                             : WEFT_ENOTSUP;
}
