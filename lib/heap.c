/* heap.c - per-worker heaps on mimalloc, with a limit and an owned list. */
#include <mimalloc.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct weft__heap_s {
  mi_heap_t* mi;        /* Owner thread only: allocations from it. */
  size_t used;          /* Owner thread only: bytes charged. */
  size_t limit;         /* 0: none. */
  bool breached;        /* Owner thread only. */
  weft__owned_t owned;  /* Sentinel of the owned list. */
};

static _Thread_local weft__heap_t* current_heap;

weft__heap_t* weft__heap_new(size_t limit) {
  weft__heap_t* h = mi_malloc(sizeof(*h));
  if (h == NULL)
    return NULL;
  h->mi = mi_heap_new();
  if (h->mi == NULL) {
    mi_free(h);
    return NULL;
  }
  h->used = 0;
  h->limit = limit;
  h->breached = false;
  h->owned.next = &h->owned;
  h->owned.prev = &h->owned;
  return h;
}

void weft__heap_destroy(weft__heap_t* h) {
  if (h == NULL)
    return;
  while (h->owned.next != &h->owned) {
    weft__owned_t* o = h->owned.next;
    weft__heap_disown(o);
    o->release(o);
  }
  if (current_heap == h)
    current_heap = NULL;
  /* Frees every block still allocated from the worker's heap at once. */
  mi_heap_destroy(h->mi);
  mi_free(h);
}

weft__heap_t* weft__heap_current(void) {
  return current_heap;
}

void weft__heap_set_current(weft__heap_t* h) {
  current_heap = h;
}

bool weft__heap_breached(const weft__heap_t* h) {
  return h != NULL && h->breached;
}

static bool charge(weft__heap_t* h, size_t bytes) {
  if (h->limit != 0 && (bytes > h->limit || h->used > h->limit - bytes)) {
    if (!h->breached) {
      h->breached = true;
      weft__worker_heap_breached();
    }
    return false;
  }
  h->used += bytes;
  return true;
}

void* weft__local_alloc(size_t size) {
  weft__heap_t* h = current_heap;
  void* p;
  if (h == NULL)
    return mi_malloc(size);
  if (!charge(h, size))
    return NULL;
  p = mi_heap_malloc(h->mi, size);
  if (p == NULL) {
    h->used -= size;
    return NULL;
  }
  /* Charge what mimalloc really handed out so frees balance exactly. */
  h->used += mi_usable_size(p) - size;
  return p;
}

void* weft__local_calloc(size_t size) {
  void* p = weft__local_alloc(size);
  if (p != NULL)
    memset(p, 0, size);
  return p;
}

void weft__local_free(void* p) {
  weft__heap_t* h = current_heap;
  if (p == NULL)
    return;
  if (h != NULL) {
    size_t n = mi_usable_size(p);
    h->used = n > h->used ? 0 : h->used - n;
  }
  mi_free(p);
}

/* Sanitizers see malloc/free but not mimalloc's own arenas: in an ASan or
 * TSan build the cross-thread objects come from libc, so that use after
 * free, overflows and the hand-over between threads stay visible. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_X_LIBC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WEFT_X_LIBC 1
#endif
#endif

void* weft__xalloc(size_t size) {
#ifdef WEFT_X_LIBC
  return malloc(size);
#else
  return mi_malloc(size);
#endif
}

void* weft__xrealloc(void* p, size_t size) {
#ifdef WEFT_X_LIBC
  return realloc(p, size);
#else
  return mi_realloc(p, size);
#endif
}

void weft__xfree(void* p) {
#ifdef WEFT_X_LIBC
  free(p);
#else
  mi_free(p);
#endif
}

int weft__heap_adopt(weft__owned_t* o, size_t bytes) {
  weft__heap_t* h = current_heap;
  o->heap = NULL;
  o->charge = 0;
  o->next = o->prev = o;
  if (h == NULL)
    return 0;
  if (!charge(h, bytes))
    return WEFT_EHEAPLIMIT;
  o->heap = h;
  o->charge = bytes;
  o->next = h->owned.next;
  o->prev = &h->owned;
  h->owned.next->prev = o;
  h->owned.next = o;
  return 0;
}

void weft__heap_disown(weft__owned_t* o) {
  weft__heap_t* h = o->heap;
  if (h == NULL)
    return;
  o->prev->next = o->next;
  o->next->prev = o->prev;
  o->next = o->prev = o;
  h->used = o->charge > h->used ? 0 : h->used - o->charge;
  o->heap = NULL;
  o->charge = 0;
}

/* --- public --- */

void* weft_malloc(size_t size) {
  return weft__local_alloc(size == 0 ? 1 : size);
}

void* weft_calloc(size_t count, size_t size) {
  size_t n;
  if (size != 0 && count > SIZE_MAX / size)
    return NULL;
  n = count * size;
  return weft__local_calloc(n == 0 ? 1 : n);
}

void* weft_realloc(void* ptr, size_t size) {
  weft__heap_t* h = current_heap;
  size_t old;
  void* p;
  if (ptr == NULL)
    return weft_malloc(size);
  if (h == NULL)
    return mi_realloc(ptr, size);
  old = mi_usable_size(ptr);
  if (size > old && !charge(h, size - old))
    return NULL;
  p = mi_heap_realloc(h->mi, ptr, size);
  if (p == NULL) {
    if (size > old)
      h->used -= size - old;
    return NULL;
  }
  /* Rebalance to the real block sizes. */
  h->used -= size > old ? size - old : 0;
  h->used = h->used > old ? h->used - old : 0;
  h->used += mi_usable_size(p);
  return p;
}

void weft_free(void* ptr) {
  weft__local_free(ptr);
}

int weft_heap_usage(size_t* used, size_t* limit) {
  weft__heap_t* h = current_heap;
  if (used == NULL && limit == NULL)
    return WEFT_EINVAL;
  if (used != NULL)
    *used = h != NULL ? h->used : 0;
  if (limit != NULL)
    *limit = h != NULL ? h->limit : 0;
  return 0;
}
