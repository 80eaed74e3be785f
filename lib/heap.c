/* heap.c - per-worker heaps on mimalloc, with a limit and an owned list. */
#include <mimalloc.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Sanitizers see malloc/free but not mimalloc's own arenas: in an ASan or
 * TSan build weft's memory comes from libc, so that use after free,
 * overflows and the hand-over between threads stay visible (mimalloc
 * reuses a finished worker's pages through atomics TSan cannot see). A
 * worker heap is then a list of blocks freed together at the end. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_X_LIBC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WEFT_X_LIBC 1
#endif
#endif

#ifdef WEFT_X_LIBC
/* A block's header; the user's bytes follow at HDR, suitably aligned. No
 * flexible array member: the heap embeds a header as its list sentinel,
 * and ISO C forbids a struct ending in one inside another (clang says so
 * under -Werror). */
typedef struct block_s {
  struct block_s* next; /* Owner thread only. */
  struct block_s* prev;
  weft__heap_t* heap; /* NULL outside workers. */
  size_t size;
} block_t;
#define HDR                                                          \
  ((sizeof(block_t) + _Alignof(max_align_t) - 1) / _Alignof(max_align_t) * \
   _Alignof(max_align_t))
#define BLOCK(p) ((block_t*)((char*)(p)-HDR))
#define BYTES(b) ((void*)((char*)(b) + HDR))
#endif

struct weft__heap_s {
#ifdef WEFT_X_LIBC
  block_t blocks; /* Sentinel of the block list. */
#else
  mi_heap_t* mi; /* Owner thread only: allocations from it. */
#endif
  size_t used;         /* Owner thread only: bytes charged. */
  size_t limit;        /* 0: none. */
  bool breached;       /* Owner thread only. */
  weft__owned_t owned; /* Sentinel of the owned list. */
  /* Told of the first breach (a worker ends itself); owner thread. */
  void (*on_breach)(void* arg);
  void* breach_arg;
};

static _Thread_local weft__heap_t* current_heap;

/* ---- the allocator under a heap ------------------------------------------ */

#ifdef WEFT_X_LIBC
static void* raw_alloc(weft__heap_t* h, size_t size) {
  block_t* b = size > SIZE_MAX - HDR ? NULL : malloc(HDR + size);
  if (b == NULL)
    return NULL;
  b->heap = h;
  b->size = size;
  if (h != NULL) {
    b->next = h->blocks.next;
    b->prev = &h->blocks;
    h->blocks.next->prev = b;
    h->blocks.next = b;
  } else {
    b->next = b->prev = b;
  }
  return BYTES(b);
}

static size_t raw_size(void* p) {
  return BLOCK(p)->size;
}

static void raw_free(void* p) {
  block_t* b = BLOCK(p);
  b->prev->next = b->next;
  b->next->prev = b->prev;
  free(b);
}

static void* raw_realloc(weft__heap_t* h, void* p, size_t size) {
  void* n = raw_alloc(h, size);
  if (n == NULL)
    return NULL;
  memcpy(n, p, raw_size(p) < size ? raw_size(p) : size);
  raw_free(p);
  return n;
}

static bool raw_heap_init(weft__heap_t* h) {
  h->blocks.next = h->blocks.prev = &h->blocks;
  return true;
}

static void raw_heap_destroy(weft__heap_t* h) {
  while (h->blocks.next != &h->blocks)
    raw_free(BYTES(h->blocks.next));
}
#else
static void* raw_alloc(weft__heap_t* h, size_t size) {
  return h != NULL ? mi_heap_malloc(h->mi, size) : mi_malloc(size);
}

static size_t raw_size(void* p) {
  return mi_usable_size(p);
}

static void raw_free(void* p) {
  mi_free(p);
}

static void* raw_realloc(weft__heap_t* h, void* p, size_t size) {
  return h != NULL ? mi_heap_realloc(h->mi, p, size) : mi_realloc(p, size);
}

static bool raw_heap_init(weft__heap_t* h) {
  h->mi = WEFT__FAILABLE(mi_heap_new());
  return h->mi != NULL;
}

static void raw_heap_destroy(weft__heap_t* h) {
  /* Frees every block still allocated from the worker's heap at once. */
  mi_heap_destroy(h->mi);
}
#endif

/* ---- heaps --------------------------------------------------------------- */

weft__heap_t* weft__heap_new(size_t limit) {
  weft__heap_t* h = weft__xalloc(sizeof(*h));
  if (h == NULL)
    return NULL;
  if (!raw_heap_init(h)) {
    weft__xfree(h);
    return NULL;
  }
  h->used = 0;
  h->limit = limit;
  h->breached = false;
  h->on_breach = NULL;
  h->breach_arg = NULL;
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
  raw_heap_destroy(h);
  weft__xfree(h);
}

void weft__heap_set_current(weft__heap_t* h) {
  current_heap = h;
}

void weft__heap_on_breach(weft__heap_t* h, void (*cb)(void* arg), void* arg) {
  h->on_breach = cb;
  h->breach_arg = arg;
}

static void breach(weft__heap_t* h) {
  if (h->breached)
    return;
  h->breached = true;
  if (h->on_breach != NULL)
    h->on_breach(h->breach_arg);
}

void weft__heap_breach(void) {
  if (current_heap != NULL)
    breach(current_heap);
}

size_t weft__heap_limit(void) {
  return current_heap != NULL ? current_heap->limit : 0;
}

static bool charge(weft__heap_t* h, size_t bytes) {
  if (h->limit != 0 && (bytes > h->limit || h->used > h->limit - bytes)) {
    breach(h);
    return false;
  }
  h->used += bytes;
  return true;
}

static void uncharge(weft__heap_t* h, size_t bytes) {
  h->used = bytes > h->used ? 0 : h->used - bytes;
}

void* weft__local_alloc(size_t size) {
  weft__heap_t* h = current_heap;
  void* p;
  if (WEFT__ALLOC_FAILS())
    return NULL;
  if (h == NULL)
    return raw_alloc(NULL, size);
  if (!charge(h, size))
    return NULL;
  p = raw_alloc(h, size);
  if (p == NULL) {
    uncharge(h, size);
    return NULL;
  }
  /* Charge what the allocator really handed out so frees balance. */
  h->used += raw_size(p) - size;
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
  if (h != NULL)
    uncharge(h, raw_size(p));
  raw_free(p);
}

void* weft__xalloc(size_t size) {
  if (WEFT__ALLOC_FAILS())
    return NULL;
#ifdef WEFT_X_LIBC
  return malloc(size);
#else
  return mi_malloc(size);
#endif
}

void* weft__xzalloc(size_t size) {
  if (WEFT__ALLOC_FAILS())
    return NULL;
#ifdef WEFT_X_LIBC
  return calloc(1, size);
#else
  return mi_zalloc(size);
#endif
}

void* weft__xalloc64(size_t size) {
  size_t n = (size + 63) & ~(size_t)63;
  void* p;
  if (WEFT__ALLOC_FAILS())
    return NULL;
#ifdef WEFT_X_LIBC
  p = aligned_alloc(64, n);
#else
  p = mi_malloc_aligned(n, 64);
#endif
  if (p != NULL)
    memset(p, 0, n);
  return p;
}

void* weft__xrealloc(void* p, size_t size) {
  if (WEFT__ALLOC_FAILS())
    return NULL;
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
  size_t old, grow;
  void* p;
  if (ptr == NULL)
    return weft_malloc(size);
  if (size == 0)
    size = 1;
  old = raw_size(ptr);
  grow = size > old ? size - old : 0;
  /* Charge the growth first, so a breach fails before anything moves. */
  if (h != NULL && grow > 0 && !charge(h, grow))
    return NULL;
  p = raw_realloc(h, ptr, size);
  if (h != NULL) {
    /* Drop the provisional charge; on success the new block's real size
     * replaces the old block's. */
    uncharge(h, grow);
    if (p != NULL) {
      uncharge(h, old);
      h->used += raw_size(p);
    }
  }
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
