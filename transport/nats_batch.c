/* nats_batch.c - posts gathered into batches (nats.h, "posts gathered into
 * batches").
 *
 * Why. A NATS message costs every hop its per-message work: the server's
 * parse and routing, nats.c's reader (a natsMsg made), the receiver's
 * delivery thread (a lock, a condition signal, a callback). One-way 64-byte
 * posts between two processes on 2 vCPUs ran at 0.57-0.82x raw nats.c's
 * rate (bench/README.md): weft's receiver pays a thread hop more per
 * message than raw's counting callback, and on two CPUs shared by five
 * busy threads that CPU time is the rate. Gathering a sender's back-to-back
 * posts into one NATS message pays those costs once per batch.
 *
 * How. A post goes alone, at once, when its batch is empty and the post
 * before it on this batch came more than the gather window (opts.gather_us,
 * 10 us by default) before: a sender that posts now and then costs what
 * it did before (no extra thread wake-up). A post that follows closely
 * joins the batch, and the kicker (nats.c) writes the batch as soon as it
 * runs (by default) or a gather window after the first post of the
 * batches waiting came (a window set in the options; at once when it is
 * asked to flush); the poster writes it itself when it would
 * pass the cap. The kicker's wake-up costs ~10-20 us of CPU on this
 * machine kind (a futex round trip: bench/README.md's floor): a sender
 * that posts more often than every 10 us gathers several per wake-up. While the kicker writes a batch, posts fill the batch's
 * other buffer. Everything is under the connection's `klock`.
 *
 * The wire: header "Weft-Batch: <n>", payload n frames (frame.h) of kind
 * ITEM, each one post's bytes; one post alone is written bare. A batch
 * is per subject and connection, shared by the ports posting there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frame.h"
#include "nats.h"
#include "nats_conn.h"
#include "weft/errno.h"

enum { ITEM = 1 };

/* A batch is written when it would pass this (or the server's max_payload,
 * when smaller): 64 KiB is nats.c's default write buffer's size. */
#define CAP ((size_t)64 * 1024)


struct weft__nats_batch_s {
  weft__nats_t* c;
  char* subject;
  unsigned char* buf; /* The frames gathered: `len` bytes, `n` posts. */
  size_t len, cap;
  uint64_t n;
  unsigned char* spare; /* The other buffer: the kicker writes from it. */
  size_t spare_cap;
  uint64_t last_ns; /* When the last post came. */
  int users;        /* weft__nats_batch_new() calls for its subject. */
  bool queued;      /* In c->dirty. */
  bool writing;     /* The kicker is writing `spare` (klock let go). */
  weft__nats_batch_t *prev_all, *next_all;
  weft__nats_batch_t* next_dirty;
};


static size_t cap_of(weft__nats_t* c) {
  int64_t max = natsConnection_GetMaxPayload(c->nc);
  /* Room for the header ("NATS/1.0\r\nWeft-Batch: n\r\n\r\n"). */
  if (max > 256 && (uint64_t)max - 256 < CAP)
    return (size_t)max - 256;
  return CAP;
}

/* Write `n` frames (`len` bytes) on `subject`: one alone bare. */
static int write_frames(weft__nats_t* c,
                        const char* subject,
                        const unsigned char* buf,
                        size_t len,
                        uint64_t n) {
  natsMsg* m = NULL;
  natsStatus s;
  char count[24];
  if (n == 1)
    return weft__nats_status(
        natsConnection_Publish(c->nc, subject, buf + WEFT__FRAME_HEADER,
                               (int)(len - WEFT__FRAME_HEADER)));
  (void)snprintf(count, sizeof(count), "%llu", (unsigned long long)n);
  s = natsMsg_Create(&m, subject, NULL, (const char*)buf, (int)len);
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m, "Weft-Batch", count);
  if (s == NATS_OK)
    s = natsConnection_PublishMsg(c->nc, m);
  natsMsg_Destroy(m); /* NULL-safe. */
  return weft__nats_status(s);
}

/* Under klock, while the kicker writes none of `b`: write what `b` holds.
 * Its posts were accepted already: a refusal is counted, not returned. */
static void write_held(weft__nats_batch_t* b) {
  weft__nats_t* c = b->c;
  if (b->n == 0)
    return;
  if (write_frames(c, b->subject, b->buf, b->len, b->n) != 0)
    atomic_fetch_add_explicit(&c->unsent, b->n, memory_order_relaxed);
  b->len = 0;
  b->n = 0;
}

static void wait_written(weft__nats_batch_t* b) {
  while (b->writing)
    pthread_cond_wait(&b->c->bcond, &b->c->klock);
}

/* Under klock: until the kicker writes no batch (it writes one at a time). */
static void wait_none_written(weft__nats_t* c) {
  weft__nats_batch_t* b = c->batches;
  while (b != NULL) {
    if (b->writing) {
      pthread_cond_wait(&c->bcond, &c->klock);
      b = c->batches; /* The list may have changed meanwhile. */
    } else {
      b = b->next_all;
    }
  }
}

int weft__nats_batch_new(weft__nats_t* c,
                         const char* subject,
                         weft__nats_batch_t** out) {
  weft__nats_batch_t *b, *fresh;
  *out = NULL;
  if (c == NULL || subject == NULL)
    return WEFT_EINVAL;
  if (c->nc == NULL)
    return WEFT_ENOTCONNECTED;
  fresh = calloc(1, sizeof(*fresh));
  if (fresh == NULL || (fresh->subject = strdup(subject)) == NULL) {
    free(fresh);
    return WEFT_ENOMEM;
  }
  fresh->c = c;
  fresh->users = 1;
  pthread_mutex_lock(&c->klock);
  if (c->batches_dead) {
    pthread_mutex_unlock(&c->klock);
    free(fresh->subject);
    free(fresh);
    return WEFT_ENOTCONNECTED;
  }
  /* One batch per subject: posts to it from any port of this connection
   * keep the order of their calls, as publishes on one connection do. */
  for (b = c->batches; b != NULL; b = b->next_all) {
    if (strcmp(b->subject, subject) == 0) {
      b->users++;
      pthread_mutex_unlock(&c->klock);
      free(fresh->subject);
      free(fresh);
      *out = b;
      return 0;
    }
  }
  b = fresh;
  b->next_all = c->batches;
  if (c->batches != NULL)
    c->batches->prev_all = b;
  c->batches = b;
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  pthread_mutex_unlock(&c->klock);
  *out = b;
  return 0;
}

/* Append one frame to b->buf (under klock). */
static int append(weft__nats_batch_t* b, const void* data, size_t len) {
  size_t need = b->len + WEFT__FRAME_HEADER + len;
  if (need > b->cap) {
    size_t cap = b->cap == 0 ? 4096 : b->cap;
    unsigned char* p;
    while (cap < need)
      cap *= 2;
    p = realloc(b->buf, cap);
    if (p == NULL)
      return WEFT_ENOMEM;
    b->buf = p;
    b->cap = cap;
  }
  weft__frame_header(b->buf + b->len, ITEM, (uint32_t)len);
  if (len > 0)
    memcpy(b->buf + b->len + WEFT__FRAME_HEADER, data, len);
  b->len = need;
  b->n++;
  return 0;
}

int weft__nats_batch_post(weft__nats_batch_t* b, const void* data, size_t len) {
  weft__nats_t* c = b->c;
  uint64_t now = weft__nats_now_ns();
  size_t cap;
  bool close_by;
  int err = 0;
  if (len > INT32_MAX - WEFT__FRAME_HEADER)
    return WEFT_EMSGSIZE;
  pthread_mutex_lock(&c->klock);
  if (c->batches_dead) {
    pthread_mutex_unlock(&c->klock);
    return WEFT_ENOTCONNECTED;
  }
  close_by = now - b->last_ns < c->gather_ns;
  b->last_ns = now;
  cap = cap_of(c);
  if (WEFT__FRAME_HEADER + len > cap || !c->gather ||
      (!close_by && b->n == 0 && !b->writing)) {
    /* Alone, after what waits of this batch (a big one: its own). */
    wait_written(b);
    write_held(b);
    err = weft__nats_status(
        natsConnection_Publish(c->nc, b->subject, data, (int)len));
    pthread_mutex_unlock(&c->klock);
    return err;
  }
  if (b->len + WEFT__FRAME_HEADER + len > cap) {
    wait_written(b);
    write_held(b);
  }
  err = append(b, data, len);
  if (err == 0 && !b->queued) {
    b->queued = true;
    b->next_dirty = c->dirty;
    if (c->dirty == NULL) {
      c->dirty_since = now;
      pthread_cond_signal(&c->kcond); /* The kicker may sleep. */
    }
    c->dirty = b;
  }
  pthread_mutex_unlock(&c->klock);
  return err;
}

int weft__nats_batch_flush(weft__nats_batch_t* b) {
  weft__nats_t* c = b->c;
  int err = 0;
  pthread_mutex_lock(&c->klock);
  if (c->batches_dead) {
    err = WEFT_ENOTCONNECTED;
  } else {
    wait_written(b);
    if (b->n > 0) {
      err = write_frames(c, b->subject, b->buf, b->len, b->n);
      if (err != 0)
        atomic_fetch_add_explicit(&c->unsent, b->n, memory_order_relaxed);
      b->len = 0;
      b->n = 0;
    }
  }
  pthread_mutex_unlock(&c->klock);
  return err;
}

void weft__nats_batch_free(weft__nats_batch_t* b) {
  weft__nats_t* c;
  if (b == NULL)
    return;
  c = b->c;
  pthread_mutex_lock(&c->klock);
  if (--b->users > 0) {
    pthread_mutex_unlock(&c->klock); /* Another port posts to it still. */
    return;
  }
  if (!c->batches_dead) {
    wait_written(b);
    write_held(b);
  }
  if (b->prev_all != NULL)
    b->prev_all->next_all = b->next_all;
  else
    c->batches = b->next_all;
  if (b->next_all != NULL)
    b->next_all->prev_all = b->prev_all;
  if (b->queued) {
    weft__nats_batch_t** p = &c->dirty;
    while (*p != b)
      p = &(*p)->next_dirty;
    *p = b->next_dirty;
  }
  pthread_mutex_unlock(&c->klock);
  free(b->buf);
  free(b->spare);
  free(b->subject);
  free(b);
  weft__nats_unref(c);
}

void weft__nats_batches_run(weft__nats_t* c) {
  while (c->dirty != NULL) {
    weft__nats_batch_t* b = c->dirty;
    unsigned char* buf;
    size_t len, cap;
    uint64_t n;
    c->dirty = b->next_dirty;
    b->queued = false;
    if (b->n == 0 || b->writing)
      continue; /* Written by its poster meanwhile. */
    /* Posts go on into the other buffer while this one is written. */
    buf = b->buf;
    len = b->len;
    cap = b->cap;
    n = b->n;
    b->buf = b->spare;
    b->cap = b->spare_cap;
    b->len = 0;
    b->n = 0;
    b->spare = buf;
    b->spare_cap = cap;
    b->writing = true;
    pthread_mutex_unlock(&c->klock);
    if (write_frames(c, b->subject, buf, len, n) != 0)
      atomic_fetch_add_explicit(&c->unsent, n, memory_order_relaxed);
    pthread_mutex_lock(&c->klock);
    b->writing = false;
    pthread_cond_broadcast(&c->bcond);
  }
}

void weft__nats_batches_flush(weft__nats_t* c) {
  pthread_mutex_lock(&c->klock);
  if (!c->batches_dead) {
    wait_none_written(c);
    for (weft__nats_batch_t* b = c->batches; b != NULL; b = b->next_all)
      write_held(b);
  }
  pthread_mutex_unlock(&c->klock);
}

void weft__nats_batches_close(weft__nats_t* c) {
  wait_none_written(c);
  for (weft__nats_batch_t* b = c->batches; b != NULL; b = b->next_all) {
    write_held(b);
    b->queued = false;
  }
  c->dirty = NULL;
  c->batches_dead = true;
}

uint64_t weft__nats_unsent(weft__nats_t* c) {
  return atomic_load_explicit(&c->unsent, memory_order_relaxed);
}

int weft__nats_batch_split(const void* data,
                           size_t len,
                           uint64_t n,
                           void (*each)(void* ctx, const void* p, size_t len),
                           void* ctx) {
  const unsigned char* p = data;
  uint64_t k = 0;
  while (len > 0) {
    weft__frame_t f;
    long used = weft__frame_parse(p, len, len, &f);
    if (used <= 0 || f.kind != ITEM || k == n)
      return WEFT_EDECODE;
    each(ctx, f.payload, f.len);
    k++;
    p += used;
    len -= (size_t)used;
  }
  return k == n ? 0 : WEFT_EDECODE;
}
