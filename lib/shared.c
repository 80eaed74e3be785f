/* shared.c - ref-counted shared memory with seq_cst atomics, futex-backed
 * wait/notify (spin, then park) and waitAsync delivered to a loop. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "futex.h"
#include "internal.h"

/* Under a sanitizer the bytes come from libc, so ASan sees overruns and
 * TSan sees the hand-off; otherwise from mimalloc's process heap (frees may
 * come from any thread). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SHARED_LIBC_ALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SHARED_LIBC_ALLOC 1
#endif
#endif

#ifndef SHARED_LIBC_ALLOC
#include <mimalloc.h>
#endif

#define SHARED_ALIGN 64

/* The header sits in the first 64 bytes of the allocation, the user's bytes
 * start at the next cache line, so the refcount never shares a line with
 * data other threads hammer. */
struct weft_shared_s {
  atomic_size_t refs; /* Any thread; see weft_shared_release(). */
  size_t size;        /* Immutable after weft_shared_new(). */
  void* data;         /* Immutable; 64-byte aligned. */
};

static void* shared_alloc(size_t size) {
#ifdef SHARED_LIBC_ALLOC
  void* p = WEFT__FAILABLE(aligned_alloc(SHARED_ALIGN, size));
  if (p != NULL)
    memset(p, 0, size);
  return p;
#else
  return WEFT__FAILABLE(mi_zalloc_aligned(size, SHARED_ALIGN));
#endif
}

static void shared_free(void* p) {
#ifdef SHARED_LIBC_ALLOC
  free(p);
#else
  mi_free(p);
#endif
}

int weft_shared_new(weft_shared_t** out, size_t size) {
  size_t total;
  char* p;
  weft_shared_t* sh;

  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  /* Round up to whole cache lines, plus one line for the header. */
  if (size > SIZE_MAX - 2 * (size_t)SHARED_ALIGN)
    return WEFT_ENOMEM;
  total =
      SHARED_ALIGN + ((size + SHARED_ALIGN - 1) & ~(size_t)(SHARED_ALIGN - 1));
  p = shared_alloc(total);
  if (p == NULL)
    return WEFT_ENOMEM;
  sh = (weft_shared_t*)p;
  atomic_init(&sh->refs, 1);
  sh->size = size;
  sh->data = p + SHARED_ALIGN;
  *out = sh;
  return 0;
}

weft_shared_t* weft_shared_retain(weft_shared_t* sh) {
  if (sh == NULL)
    return NULL;
  /* relaxed: a new reference is made from one the caller holds, so the
   * count cannot reach 0 meanwhile and nothing needs ordering here. */
  atomic_fetch_add_explicit(&sh->refs, 1, memory_order_relaxed);
  return sh;
}

void weft_shared_release(weft_shared_t* sh) {
  if (sh == NULL)
    return;
  /* acq_rel: release orders this holder's writes to the bytes before the
   * drop; the last holder's acquire makes every other holder's writes
   * happen before the free. (A separate acquire fence would do the same,
   * but TSan does not model fences.) */
  if (atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) == 1)
    shared_free(sh);
}

void* weft_shared_data(const weft_shared_t* sh) {
  return sh == NULL ? NULL : sh->data;
}

size_t weft_shared_size(const weft_shared_t* sh) {
  return sh == NULL ? 0 : sh->size;
}

/* --- Atomics ------------------------------------------------------------ */

/* The slot `index` of width `width`, or NULL with `*err` set. */
static void* slot(weft_shared_t* sh, size_t index, size_t width, int* err) {
  if (sh == NULL) {
    *err = WEFT_EINVAL;
    return NULL;
  }
  /* index * width + width <= size, written so it cannot overflow. */
  if (index >= sh->size / width) {
    *err = WEFT_ERANGE;
    return NULL;
  }
  *err = 0;
  return (char*)sh->data + index * width;
}

/* All atomics below are seq_cst, as JavaScript's Atomics are: together they
 * form one total order, which is also what keeps wait/notify free of lost
 * wake-ups (see the waiter count in bucket_t). Signed overflow in atomic
 * arithmetic wraps around (C11 7.17.7.5). */
#define WEFT__DEFINE_ATOMICS(bits)                                             \
  int weft_atomic_load##bits(weft_shared_t* sh, size_t index,                  \
                             int##bits##_t* out) {                             \
    int err;                                                                   \
    _Atomic int##bits##_t* p = slot(sh, index, sizeof(*p), &err);              \
    if (p == NULL)                                                             \
      return err;                                                              \
    if (out == NULL)                                                           \
      return WEFT_EINVAL;                                                      \
    *out = atomic_load_explicit(p, memory_order_seq_cst);                      \
    return 0;                                                                  \
  }                                                                            \
                                                                               \
  int weft_atomic_store##bits(weft_shared_t* sh, size_t index,                 \
                              int##bits##_t value) {                           \
    int err;                                                                   \
    _Atomic int##bits##_t* p = slot(sh, index, sizeof(*p), &err);              \
    if (p == NULL)                                                             \
      return err;                                                              \
    atomic_store_explicit(p, value, memory_order_seq_cst);                     \
    return 0;                                                                  \
  }                                                                            \
                                                                               \
  int weft_atomic_rmw##bits(weft_shared_t* sh, size_t index,                   \
                            weft_atomic_op_t op, int##bits##_t value,          \
                            int##bits##_t* old) {                              \
    int err;                                                                   \
    int##bits##_t prev;                                                        \
    _Atomic int##bits##_t* p = slot(sh, index, sizeof(*p), &err);              \
    if (p == NULL)                                                             \
      return err;                                                              \
    switch (op) {                                                              \
      case WEFT_ATOMIC_ADD:                                                    \
        prev = atomic_fetch_add_explicit(p, value, memory_order_seq_cst);      \
        break;                                                                 \
      case WEFT_ATOMIC_SUB:                                                    \
        prev = atomic_fetch_sub_explicit(p, value, memory_order_seq_cst);      \
        break;                                                                 \
      case WEFT_ATOMIC_AND:                                                    \
        prev = atomic_fetch_and_explicit(p, value, memory_order_seq_cst);      \
        break;                                                                 \
      case WEFT_ATOMIC_OR:                                                     \
        prev = atomic_fetch_or_explicit(p, value, memory_order_seq_cst);       \
        break;                                                                 \
      case WEFT_ATOMIC_XOR:                                                    \
        prev = atomic_fetch_xor_explicit(p, value, memory_order_seq_cst);      \
        break;                                                                 \
      case WEFT_ATOMIC_EXCHANGE:                                               \
        prev = atomic_exchange_explicit(p, value, memory_order_seq_cst);       \
        break;                                                                 \
      default:                                                                 \
        return WEFT_EINVAL;                                                    \
    }                                                                          \
    if (old != NULL)                                                           \
      *old = prev;                                                             \
    return 0;                                                                  \
  }                                                                            \
                                                                               \
  int weft_atomic_add##bits(weft_shared_t* sh, size_t index,                   \
                            int##bits##_t value, int##bits##_t* old) {         \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_ADD, value, old);      \
  }                                                                            \
  int weft_atomic_sub##bits(weft_shared_t* sh, size_t index,                   \
                            int##bits##_t value, int##bits##_t* old) {         \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_SUB, value, old);      \
  }                                                                            \
  int weft_atomic_and##bits(weft_shared_t* sh, size_t index,                   \
                            int##bits##_t value, int##bits##_t* old) {         \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_AND, value, old);      \
  }                                                                            \
  int weft_atomic_or##bits(weft_shared_t* sh, size_t index,                    \
                           int##bits##_t value, int##bits##_t* old) {          \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_OR, value, old);       \
  }                                                                            \
  int weft_atomic_xor##bits(weft_shared_t* sh, size_t index,                   \
                            int##bits##_t value, int##bits##_t* old) {         \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_XOR, value, old);      \
  }                                                                            \
  int weft_atomic_exchange##bits(weft_shared_t* sh, size_t index,              \
                                 int##bits##_t value, int##bits##_t* old) {    \
    return weft_atomic_rmw##bits(sh, index, WEFT_ATOMIC_EXCHANGE, value, old); \
  }                                                                            \
                                                                               \
  int weft_atomic_cas##bits(weft_shared_t* sh, size_t index,                   \
                            int##bits##_t expected, int##bits##_t desired,     \
                            int##bits##_t* old) {                              \
    int err;                                                                   \
    _Atomic int##bits##_t* p = slot(sh, index, sizeof(*p), &err);              \
    if (p == NULL)                                                             \
      return err;                                                              \
    /* On failure `expected` receives the value found; on success it */        \
    /* already holds it. */                                                    \
    atomic_compare_exchange_strong_explicit(                                   \
        p, &expected, desired, memory_order_seq_cst, memory_order_seq_cst);    \
    if (old != NULL)                                                           \
      *old = expected;                                                         \
    return 0;                                                                  \
  }

WEFT__DEFINE_ATOMICS(32)
WEFT__DEFINE_ATOMICS(64)

/* --- Waiter lists ------------------------------------------------------- */

/* As in JavaScript engines, waiters are kept in a global table of FIFO
 * lists keyed by the slot's address. Each sync waiter sleeps on its own
 * futex word (its `state`), so a notify wakes exactly the waiters it
 * dequeued, oldest first, and counts them; 32- and 64-bit slots work the
 * same way. A notify whose bucket has no waiter costs one atomic load. */

enum {
  W_WAITING = 0,   /* Queued; a sync waiter is spinning. */
  W_SLEEPING = 1,  /* Sync waiter is (about to be) in futex_wait. */
  W_NOTIFIED = 2,  /* Dequeued by a notify. */
  W_TIMED_OUT = 3, /* Async only: dequeued by its timer. */
  W_NOT_EQUAL = 4, /* Async only: never queued. */
  W_CANCELED = 5   /* Async only: dequeued by the loop's teardown. */
};

typedef struct waiter_s {
  struct waiter_s* next; /* Bucket list; under the bucket lock. */
  struct waiter_s* prev;
  void* addr; /* The slot; immutable while queued. */
  bool async; /* An async_waiter_t; immutable. */
  /* A W_* value. Written by the notifier (any thread) under the bucket
   * lock; a sync waiter reads it without the lock while spinning and
   * sleeps on it as a futex word. */
  _Atomic uint32_t state;
} waiter_t;

typedef struct bucket_s {
  alignas(64) uv_mutex_t lock; /* Guards head, tail and queued waiters. */
  waiter_t* head;              /* Oldest waiter; under `lock`. */
  waiter_t* tail;              /* Newest waiter; under `lock`. */
  /* Waiters queued here, written under `lock`, read without it by
   * notifiers. seq_cst: a waiter increments it before it reads the slot,
   * a notifier's caller stores the slot before notify reads it; in the
   * single seq_cst order either the waiter sees the new value or the
   * notifier sees the waiter, so no wake-up is lost. */
  atomic_uint nwaiters;
} bucket_t;

#define NBUCKETS 256

static bucket_t buckets[NBUCKETS];
static uv_once_t buckets_once = UV_ONCE_INIT;

static void buckets_init(void) {
  for (int i = 0; i < NBUCKETS; i++)
    if (uv_mutex_init(&buckets[i].lock) != 0)
      abort();
}

static bucket_t* bucket_of(const void* addr) {
  /* Fibonacci hashing of the address; the low bits are always zero. */
  uint64_t h = (uint64_t)(uintptr_t)addr * UINT64_C(0x9E3779B97F4A7C15);
  return &buckets[h >> 56];
}

/* Under the bucket lock. */
static void bucket_push(bucket_t* b, waiter_t* w) {
  w->next = NULL;
  w->prev = b->tail;
  if (b->tail != NULL)
    b->tail->next = w;
  else
    b->head = w;
  b->tail = w;
  /* seq_cst: see bucket_t.nwaiters. */
  atomic_fetch_add_explicit(&b->nwaiters, 1, memory_order_seq_cst);
}

/* Under the bucket lock. */
static void bucket_remove(bucket_t* b, waiter_t* w) {
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    b->head = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    b->tail = w->prev;
  w->next = w->prev = NULL;
  /* relaxed: only a hint for notifiers; a stale non-zero costs a lock. */
  atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
}

/* Under the bucket lock: put `w` back right after `after` (NULL: head). */
static void bucket_insert_after(bucket_t* b, waiter_t* after, waiter_t* w) {
  w->prev = after;
  w->next = after != NULL ? after->next : b->head;
  if (w->next != NULL)
    w->next->prev = w;
  else
    b->tail = w;
  if (after != NULL)
    after->next = w;
  else
    b->head = w;
  atomic_fetch_add_explicit(&b->nwaiters, 1, memory_order_seq_cst);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Deadline for `timeout_ms` from now; INT64_MAX means none. */
static int64_t deadline_of(int64_t timeout_ms) {
  int64_t now;
  if (timeout_ms < 0)
    return INT64_MAX;
  now = now_ns();
  if (timeout_ms > (INT64_MAX - now) / 1000000)
    return INT64_MAX;
  return now + timeout_ms * 1000000;
}

static int futex_wait(_Atomic uint32_t* word,
                      uint32_t expected,
                      int64_t deadline) {
  int64_t left = -1;
  if (deadline != INT64_MAX) {
    left = deadline - now_ns();
    if (left <= 0)
      return ETIMEDOUT;
  }
  return weft__futex_wait(word, expected, left);
}

/* How long a waiter watches the slot before it queues (see
 * slot_changes_soon). Parking and being woken costs 50-70 us here while a
 * spinning peer answers in well under a microsecond, so spinning up to a
 * fraction of the parking cost wins whenever the notify comes soon, and
 * costs a bounded amount of CPU when it does not. */
#define SPIN_NS 20000
/* How long a queued waiter spins before it parks: after SPIN_NS of
 * watching, only for a notify that comes without a change of the slot. */
#define SPIN_QUEUED_NS 2000
/* Extra spin granted once when the slot changes under a spinning waiter:
 * the thread that changed it usually notifies right after. */
#define SPIN_EXTRA_NS 20000

/* Whether the slot still holds `expected`. seq_cst: see bucket_t.nwaiters. */
static bool slot_equals(void* addr, size_t width, int64_t expected) {
  if (width == 4)
    return atomic_load_explicit((_Atomic int32_t*)addr, memory_order_seq_cst) ==
           (int32_t)expected;
  return atomic_load_explicit((_Atomic int64_t*)addr, memory_order_seq_cst) ==
         expected;
}

/* Watch the slot, unqueued, until it stops holding `expected` (true), or
 * for up to SPIN_NS, the deadline or a stop request (false: then queue).
 * Why. A queued waiter costs its notifier a lock and a store to the
 * waiter's own word, and the waiter a line that comes back: three or four
 * trips of a cache line between the cores where the slot alone takes
 * one. A wait decides when it compares the slot; a change seen while we
 * watch is what a call made a moment later would see ("not-equal"), and
 * a notify that came meanwhile found no waiter, as it would have before
 * that later call. So two threads that hand a slot back and forth with
 * store + notify and wait pay one line's round trip, the floor
 * (bench/README.md, atomics.rtt). */
static bool slot_changes_soon(void* addr,
                              size_t width,
                              int64_t expected,
                              int64_t deadline,
                              const weft__wait_intr_t* in) {
  int64_t end = now_ns() + SPIN_NS;
  unsigned i;
  if (end > deadline)
    end = deadline;
  for (i = 1;; i++) {
    if (!slot_equals(addr, width, expected))
      return true;
    weft__cpu_relax();
    if ((i & 31) == 0 &&
        (now_ns() >= end ||
         (in != NULL &&
          atomic_load_explicit(&in->stopped, memory_order_relaxed))))
      return false;
  }
}

/* --- Interrupting a worker's waits (terminate) ------------------------- */

/* The calling thread's record (a worker's), or NULL: waits as before. */
static _Thread_local weft__wait_intr_t* current_intr;

int weft__wait_intr_init(weft__wait_intr_t* in) {
  if (uv_mutex_init(&in->lock) != 0)
    return WEFT_ENOMEM;
  atomic_init(&in->stopped, false);
  in->waiter = NULL;
  return 0;
}

void weft__wait_intr_destroy(weft__wait_intr_t* in) {
  uv_mutex_destroy(&in->lock);
}

void weft__wait_intr_set_current(weft__wait_intr_t* in) {
  current_intr = in;
}

/* Sync waiters end in W_NOTIFIED, W_TIMED_OUT (their timeout, decided
 * under the bucket lock) or W_CANCELED (their worker was asked to stop).
 * Under the bucket lock a sync waiter is queued exactly while its state is
 * W_WAITING or W_SLEEPING: notify, the timeout and the interrupter move it
 * out of those only under that lock, and the one change made without it
 * (the waiter's own WAITING -> SLEEPING) keeps it queued. */

/* Take a queued sync waiter off its bucket as interrupted (W_CANCELED) and
 * wake it if it sleeps; nothing if a notify or its timeout dequeued it
 * first. The caller makes sure `w` still exists (see weft__wait_interrupt
 * and intr_register). */
static void cancel_waiter(bucket_t* b, waiter_t* w) {
  uint32_t state;
  uv_mutex_lock(&b->lock);
  /* relaxed: the lock orders every change but the waiter's own
   * WAITING -> SLEEPING, which the exchange below sees either way. */
  state = atomic_load_explicit(&w->state, memory_order_relaxed);
  if (state == W_WAITING || state == W_SLEEPING) {
    bucket_remove(b, w);
    /* acq_rel: as notify's exchange (the waiter acquires it); reads
     * whether the waiter went to sleep meanwhile. */
    state =
        atomic_exchange_explicit(&w->state, W_CANCELED, memory_order_acq_rel);
    /* Under the lock, as notify does: a waiter that slept takes the lock
     * once before it returns. */
    if (state == W_SLEEPING)
      weft__futex_wake(&w->state);
  }
  uv_mutex_unlock(&b->lock);
}

/* Declared in internal.h. */
void weft__wait_interrupt(weft__wait_intr_t* in) {
  uv_mutex_lock(&in->lock);
  /* relaxed: the lock orders it against a registering waiter; the
   * lock-free read in wait_sync is only an early exit. */
  atomic_store_explicit(&in->stopped, true, memory_order_relaxed);
  /* The waiter unregisters under this lock before it returns, so a
   * registered waiter (on its own stack) is alive while we hold it. */
  if (in->waiter != NULL) {
    waiter_t* w = in->waiter;
    cancel_waiter(bucket_of(w->addr), w);
  }
  uv_mutex_unlock(&in->lock);
}

/* Register the queued waiter `w` with the thread's record: false (and not
 * registered) if the thread was already asked to stop. Both sides decide
 * under `in->lock`, so either the interrupter finds `w` or we find
 * `stopped`: no interrupt is lost. */
static bool intr_register(weft__wait_intr_t* in, waiter_t* w) {
  bool stopped;
  uv_mutex_lock(&in->lock);
  stopped = atomic_load_explicit(&in->stopped, memory_order_relaxed);
  if (!stopped)
    in->waiter = w;
  uv_mutex_unlock(&in->lock);
  return !stopped;
}

static void intr_unregister(weft__wait_intr_t* in) {
  uv_mutex_lock(&in->lock);
  in->waiter = NULL;
  uv_mutex_unlock(&in->lock);
}

/* Wait on the queued waiter `w` until a notify, the interrupter or the
 * deadline dequeues it; returns its final state (W_NOTIFIED, W_CANCELED or
 * W_TIMED_OUT), after which nobody touches `w` any more. */
static uint32_t wait_queued(bucket_t* b,
                            waiter_t* w,
                            size_t width,
                            int64_t expected,
                            int64_t deadline) {
  int64_t spin_end;
  bool extended = false;
  uint32_t state;

  /* Spin. acquire: pairs with the notifier's exchange (or the
   * interrupter's CAS), so what it wrote before is visible once we
   * return. A spinning waiter is never futex-woken, so it may leave at
   * once. */
  spin_end = now_ns() + SPIN_QUEUED_NS;
  for (unsigned i = 1;; i++) {
    state = atomic_load_explicit(&w->state, memory_order_acquire);
    if (state != W_WAITING)
      return state;
    weft__cpu_relax();
    if ((i & 31) == 0) {
      int64_t now = now_ns();
      if (!extended && !slot_equals(w->addr, width, expected)) {
        extended = true;
        spin_end = now + SPIN_EXTRA_NS;
      }
      if (now >= spin_end || now >= deadline)
        break;
    }
  }

  /* Park. acq_rel: acquire as above if the notifier won; release has
   * nothing to publish but keeps the exchange/CAS pair symmetric. */
  state = W_WAITING;
  if (!atomic_compare_exchange_strong_explicit(&w->state, &state, W_SLEEPING,
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    return state; /* Dequeued while we were spinning: never woken. */
  for (;;) {
    if (futex_wait(&w->state, W_SLEEPING, deadline) == ETIMEDOUT ||
        now_ns() >= deadline) {
      /* Timed out unless a notify or the interrupter dequeues us first:
       * decide under the lock, which they hold while they mark and wake
       * us, so once we have it they are also done with `w`. */
      uv_mutex_lock(&b->lock);
      state = W_SLEEPING;
      /* acquire on failure: pairs with their acq_rel change. */
      if (atomic_compare_exchange_strong_explicit(
              &w->state, &state, W_TIMED_OUT, memory_order_acquire,
              memory_order_acquire)) {
        bucket_remove(b, w);
        state = W_TIMED_OUT;
      }
      uv_mutex_unlock(&b->lock);
      return state;
    }
    /* acquire: pairs with the notifier's exchange. */
    state = atomic_load_explicit(&w->state, memory_order_acquire);
    if (state != W_SLEEPING)
      break;
    /* Spurious wake-up or EINTR: sleep again. */
  }
  /* The notifier (or interrupter) saw us asleep and calls futex_wake on
   * `w->state` while it holds the lock; taking the lock once waits for it
   * to be done with `w`, which lives on the caller's stack. */
  uv_mutex_lock(&b->lock);
  uv_mutex_unlock(&b->lock);
  return state;
}

static int wait_sync(weft_shared_t* sh,
                     size_t index,
                     size_t width,
                     int64_t expected,
                     int64_t timeout_ms,
                     weft_wait_result_t* result) {
  int err;
  void* addr = slot(sh, index, width, &err);
  weft__wait_intr_t* in = current_intr;
  bucket_t* b;
  waiter_t w;
  int64_t deadline;
  uint32_t state;

  if (addr == NULL)
    return err;
  if (result == NULL)
    return WEFT_EINVAL;
  /* A worker asked to stop does not start a wait (relaxed: an early exit;
   * intr_register below decides under the lock). */
  if (in != NULL && atomic_load_explicit(&in->stopped, memory_order_relaxed))
    return WEFT_ETERMINATED;
  uv_once(&buckets_once, buckets_init);
  deadline = deadline_of(timeout_ms);
  b = bucket_of(addr);
  w.addr = addr;
  w.async = false;
  atomic_init(&w.state, W_WAITING);
  if (slot_changes_soon(addr, width, expected, deadline, in)) {
    *result = WEFT_WAIT_NOT_EQUAL;
    return 0;
  }

  /* Queue, then read the slot, both under the lock: a notify after our
   * read finds us queued (see bucket_t.nwaiters for the lock-free path). */
  uv_mutex_lock(&b->lock);
  bucket_push(b, &w);
  if (!slot_equals(addr, width, expected)) {
    bucket_remove(b, &w);
    uv_mutex_unlock(&b->lock);
    *result = WEFT_WAIT_NOT_EQUAL;
    return 0;
  }
  uv_mutex_unlock(&b->lock);

  /* On a worker, let terminate reach us; if it came first, take ourselves
   * off the queue the way it would have (a notify may still win). */
  if (in != NULL && !intr_register(in, &w))
    cancel_waiter(b, &w);
  state = wait_queued(b, &w, width, expected, deadline);
  if (in != NULL)
    intr_unregister(in);
  switch (state) {
    case W_CANCELED:
      return WEFT_ETERMINATED;
    case W_TIMED_OUT:
      *result = WEFT_WAIT_TIMED_OUT;
      return 0;
    default:
      *result = WEFT_WAIT_OK;
      return 0;
  }
}

int weft_atomic_wait32(weft_shared_t* sh,
                       size_t index,
                       int32_t expected,
                       int64_t timeout_ms,
                       weft_wait_result_t* result) {
  return wait_sync(sh, index, 4, expected, timeout_ms, result);
}

int weft_atomic_wait64(weft_shared_t* sh,
                       size_t index,
                       int64_t expected,
                       int64_t timeout_ms,
                       weft_wait_result_t* result) {
  return wait_sync(sh, index, 8, expected, timeout_ms, result);
}

/* --- waitAsync ---------------------------------------------------------- */

typedef struct async_waiter_s {
  waiter_t w;              /* First: a queued waiter_t is cast back to this. */
  weft_loop_t* loop;       /* Immutable. */
  weft_shared_t* sh;       /* A reference held until `cb` has run. */
  weft_wait_cb cb;         /* Immutable. */
  void* arg;               /* Immutable. */
  /* Loop thread only. Whether `timer` is open: whoever closes it first
   * (async_close_timer: the completion, or the teardown when a notify's
   * task is still queued) clears it, so the timer is closed exactly once. */
  bool has_timer;
  /* Loop thread only. What still uses the memory: 1 for the completion
   * (async_finish), 1 while `timer` is open or closing. Freed at 0. */
  int refs;
  uv_timer_t timer;        /* Loop thread only. */
  weft__tracked_t tracked; /* On the loop's list until finished. */
} async_waiter_t;

/* Drop one use of `aw`; the last frees it. Loop thread only. */
static void async_release(async_waiter_t* aw) {
  if (--aw->refs > 0)
    return;
  weft__loop_handles(aw->loop, -1);
  free(aw);
}

static void async_timer_closed(uv_handle_t* h) {
  async_release(h->data);
}

/* Stop and close the timer unless that was done already. Loop thread
 * only. */
static void async_close_timer(async_waiter_t* aw) {
  if (!aw->has_timer)
    return;
  aw->has_timer = false;
  uv_timer_stop(&aw->timer);
  uv_close((uv_handle_t*)&aw->timer, async_timer_closed);
}

/* Deliver the result and release everything. Loop thread only; the waiter
 * is no longer queued. Runs exactly once per waiter: from the timer (which
 * won the CAS), from the task a notify or wait_async posted, or from the
 * teardown (which won the CAS). */
static void async_finish(async_waiter_t* aw) {
  weft_wait_result_t result;
  /* acquire: pairs with the release of whoever set the final state. */
  switch (atomic_load_explicit(&aw->w.state, memory_order_acquire)) {
    case W_NOTIFIED:
      result = WEFT_WAIT_OK;
      break;
    case W_TIMED_OUT:
      result = WEFT_WAIT_TIMED_OUT;
      break;
    default:
      result = WEFT_WAIT_NOT_EQUAL;
      break;
  }
  async_close_timer(aw);
  weft__loop_untrack(&aw->tracked);
  /* A loop being torn down runs no more user code. */
  if (!weft__loop_closing(aw->loop))
    aw->cb(aw->loop, aw->arg, result);
  weft_shared_release(aw->sh);
  aw->sh = NULL;
  weft__loop_keepalive(aw->loop, -1);
  async_release(aw);
}

/* Posted by notify (or wait_async for not-equal / zero timeout). */
static void async_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  async_finish(arg);
}

static void async_timeout(uv_timer_t* t) {
  async_waiter_t* aw = t->data;
  weft_loop_t* loop = aw->loop;
  bucket_t* b = bucket_of(aw->w.addr);
  uint32_t state = W_WAITING;
  bool won;

  /* Exactly one of notify and timeout wins the CAS; both run it under
   * the bucket lock, the winner dequeues. acq_rel for async_finish. */
  uv_mutex_lock(&b->lock);
  won = atomic_compare_exchange_strong_explicit(
      &aw->w.state, &state, W_TIMED_OUT, memory_order_acq_rel,
      memory_order_acquire);
  if (won)
    bucket_remove(b, &aw->w);
  uv_mutex_unlock(&b->lock);
  if (!won)
    return; /* A notify dequeued it and posted async_task. */
  async_finish(aw);
  /* Our own libuv handle: drain ticks and microtasks as weft's do. */
  weft__loop_after_callback(loop);
}

/* The loop is torn down (its worker ends) with the wait pending: dequeue
 * it unless a notify got there first. If the notify won, its posted task
 * is still on the loop's ready queue and finishes the waiter later
 * (without calling `cb`, as the loop is closing); the teardown only closes
 * the timer now, as the loop closes every handle, and the task finds it
 * closed. */
static void async_teardown(weft__tracked_t* t) {
  async_waiter_t* aw = weft__container_of(t, async_waiter_t, tracked);
  bucket_t* b = bucket_of(aw->w.addr);
  uint32_t state = W_WAITING;
  bool won;

  uv_mutex_lock(&b->lock);
  /* Same CAS as notify and the timer; see async_timeout. */
  won = atomic_compare_exchange_strong_explicit(
      &aw->w.state, &state, W_CANCELED, memory_order_acq_rel,
      memory_order_acquire);
  if (won)
    bucket_remove(b, &aw->w);
  uv_mutex_unlock(&b->lock);
  if (won) {
    async_finish(aw);
    return;
  }
  weft__loop_untrack(&aw->tracked);
  async_close_timer(aw);
}

/* The libuv timeout that makes the wait's timer due `ms` milliseconds from
 * now, not from the loop's cached time (which is as old as the loop's last
 * turn); rounded up so it never fires early. As in loop.c. */
static uint64_t async_timeout_from_now(uv_loop_t* uv, uint64_t ms) {
  uint64_t now_ms = (uv_hrtime() + 999999) / 1000000;
  uint64_t cached = uv_now(uv);
  uint64_t lag = now_ms > cached ? now_ms - cached : 0;
  return ms > UINT64_MAX - lag ? UINT64_MAX : ms + lag;
}

int weft_atomic_wait_async32(weft_loop_t* loop,
                             weft_shared_t* sh,
                             size_t index,
                             int32_t expected,
                             int64_t timeout_ms,
                             weft_wait_cb cb,
                             void* arg) {
  int err;
  void* addr;
  async_waiter_t* aw;
  bucket_t* b;
  bool equal;

  if (loop == NULL || cb == NULL)
    return WEFT_EINVAL;
  addr = slot(sh, index, 4, &err);
  if (addr == NULL)
    return err;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  aw = WEFT__FAILABLE(calloc(1, sizeof(*aw)));
  if (aw == NULL)
    return WEFT_ENOMEM;
  aw->w.addr = addr;
  aw->w.async = true;
  atomic_init(&aw->w.state, W_WAITING);
  aw->loop = loop;
  aw->cb = cb;
  aw->arg = arg;
  aw->sh = weft_shared_retain(sh);
  aw->refs = 1;
  uv_once(&buckets_once, buckets_init);
  b = bucket_of(addr);

  /* Queue and read the slot under the lock, as wait_sync does. */
  uv_mutex_lock(&b->lock);
  equal = slot_equals(addr, 4, expected);
  if (equal && timeout_ms != 0)
    bucket_push(b, &aw->w);
  uv_mutex_unlock(&b->lock);

  if (!equal || timeout_ms == 0) {
    /* Never queued: resolve on a later turn, never synchronously.
     * relaxed: not shared yet; the post publishes it. */
    atomic_store_explicit(&aw->w.state, equal ? W_TIMED_OUT : W_NOT_EQUAL,
                          memory_order_relaxed);
    err = weft__loop_post_task(loop, async_task, aw);
    if (err != 0) {
      weft_shared_release(aw->sh);
      free(aw);
      return err;
    }
  } else if (timeout_ms > 0) {
    /* A notify may already have dequeued it and posted async_task; that
     * task runs on this thread after we return, so the timer is live by
     * then and async_finish stops it. uv_timer_init cannot fail. */
    uv_timer_init(weft_loop_uv(loop), &aw->timer);
    aw->timer.data = aw;
    aw->has_timer = true;
    aw->refs++;
    uv_timer_start(&aw->timer, async_timeout,
                   async_timeout_from_now(weft_loop_uv(loop),
                                          (uint64_t)timeout_ms),
                   0);
  }
  aw->tracked.teardown = async_teardown;
  weft__loop_track(loop, &aw->tracked);
  weft__loop_keepalive(loop, +1);
  weft__loop_handles(loop, +1);
  return 0;
}

/* --- For tests ---------------------------------------------------------- */

/* Declared in internal.h. */
size_t weft__shared_waiters(weft_shared_t* sh, size_t index, size_t width) {
  int err;
  void* addr = slot(sh, index, width, &err);
  bucket_t* b;
  size_t n = 0;

  if (addr == NULL)
    return 0;
  uv_once(&buckets_once, buckets_init);
  b = bucket_of(addr);
  uv_mutex_lock(&b->lock);
  for (waiter_t* w = b->head; w != NULL; w = w->next)
    n += w->addr == addr;
  uv_mutex_unlock(&b->lock);
  return n;
}

/* --- notify ------------------------------------------------------------- */

static int notify(
    weft_shared_t* sh, size_t index, size_t width, int count, int* woken) {
  int err;
  void* addr = slot(sh, index, width, &err);
  bucket_t* b;
  waiter_t* w;
  waiter_t* next;
  int n = 0;

  if (woken != NULL)
    *woken = 0;
  if (addr == NULL)
    return err;
  b = bucket_of(addr);
  /* seq_cst: see bucket_t.nwaiters. Zero also means the bucket locks may
   * not be initialized yet, which is fine: nobody waits. */
  if (count == 0 ||
      atomic_load_explicit(&b->nwaiters, memory_order_seq_cst) == 0)
    return 0;

  uv_mutex_lock(&b->lock);
  for (w = b->head; w != NULL && (count < 0 || n < count); w = next) {
    next = w->next;
    if (w->addr != addr)
      continue;
    if (w->async) {
      async_waiter_t* aw = (async_waiter_t*)w;
      waiter_t* prev = w->prev;
      uint32_t state = W_WAITING;
      /* acq_rel: release publishes the caller's writes to the loop thread;
       * the timer, which would CAS too, needs this lock first. */
      if (!atomic_compare_exchange_strong_explicit(
              &w->state, &state, W_NOTIFIED, memory_order_acq_rel,
              memory_order_acquire))
        continue;
      bucket_remove(b, w);
      if (weft__loop_post_task(aw->loop, async_task, aw) != 0) {
        /* Out of memory: leave it queued where it was, not counted. */
        atomic_store_explicit(&w->state, W_WAITING, memory_order_relaxed);
        bucket_insert_after(b, prev, w);
        continue;
      }
    } else {
      bucket_remove(b, w);
      /* acq_rel: release publishes the caller's writes to the waiter;
       * acquire reads whether it went to sleep. After this a spinning
       * waiter may return at once, so `w` is only touched again if it was
       * asleep, and then the waiter waits for this lock before leaving. */
      if (atomic_exchange_explicit(&w->state, W_NOTIFIED,
                                   memory_order_acq_rel) == W_SLEEPING)
        weft__futex_wake(&w->state);
    }
    n++;
  }
  uv_mutex_unlock(&b->lock);
  if (woken != NULL)
    *woken = n;
  return 0;
}

int weft_atomic_notify32(weft_shared_t* sh,
                         size_t index,
                         int count,
                         int* woken) {
  return notify(sh, index, 4, count, woken);
}

int weft_atomic_notify64(weft_shared_t* sh,
                         size_t index,
                         int count,
                         int* woken) {
  return notify(sh, index, 8, count, woken);
}
