/* buffer.c - owned byte buffers (ArrayBuffer) that move between threads
 * without a copy; the old handle is detached. */
#include <string.h>

#include "internal.h"

struct weft_buffer_s {
  void* data; /* NULL when detached or empty. */
  size_t size;
  bool detached;
  bool untransferable;
  /* Adopted bytes (weft_buffer_adopt): the application's memory, given
   * back through free_fn(data, free_arg) exactly once; NULL for weft's own
   * memory (freed with weft__xfree). Travels with the bytes. */
  void (*free_fn)(void* bytes, void* arg);
  void* free_arg;
  weft__owned_t owned; /* Charged to the owning worker's heap. */
};

/* Stands for a NULL free_fn given to weft_buffer_adopt(): the bytes are
 * the application's and weft never frees them. Keeps free_fn != NULL the
 * one sign of "not weft's memory". */
static void keep_bytes(void* bytes, void* arg) {
  (void)bytes;
  (void)arg;
}

/* Give the bytes back to whoever owns them; leaves `b` empty. */
static void release_bytes(weft_buffer_t* b) {
  if (b->free_fn != NULL)
    b->free_fn(b->data, b->free_arg);
  else
    weft__xfree(b->data);
  b->data = NULL;
  b->free_fn = NULL;
  b->free_arg = NULL;
}

static void release_owned(weft__owned_t* o) {
  weft_buffer_t* b = weft__container_of(o, weft_buffer_t, owned);
  weft_buffer_free(b);
}

static weft_buffer_t* shell(void) {
  weft_buffer_t* b = weft__xalloc(sizeof(*b));
  if (b == NULL)
    return NULL;
  memset(b, 0, sizeof(*b));
  b->owned.next = b->owned.prev = &b->owned;
  b->owned.release = release_owned;
  return b;
}

weft_buffer_t* weft__buffer_shell(void) {
  return shell();
}

int weft_buffer_new(weft_buffer_t** out, size_t size) {
  weft_buffer_t* b;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  b = shell();
  if (b == NULL)
    return WEFT_ENOMEM;
  /* Charge first: a size past the worker's limit fails before a byte is
   * allocated or touched. */
  err = weft__heap_adopt(&b->owned, size);
  if (err != 0) {
    weft__xfree(b);
    return err;
  }
  if (size > 0) {
    /* Cross-thread memory: the bytes may be transferred to a thread that
     * outlives this one, so they cannot come from a worker's own heap.
     * Zeroed by the allocator: fresh pages come zeroed from the OS and
     * are not touched here, so an impossible size fails as ENOMEM. */
    b->data = weft__xzalloc(size);
    if (b->data == NULL) {
      weft__heap_disown(&b->owned);
      weft__xfree(b);
      return WEFT_ENOMEM;
    }
  }
  b->size = size;
  *out = b;
  return 0;
}

int weft_buffer_from(weft_buffer_t** out, const void* src, size_t len) {
  int err;
  if (src == NULL && len > 0)
    return WEFT_EINVAL;
  err = weft_buffer_new(out, len);
  if (err == 0 && len > 0)
    memcpy((*out)->data, src, len);
  return err;
}

int weft_buffer_adopt(weft_buffer_t** out,
                      void* bytes,
                      size_t len,
                      void (*free_fn)(void* bytes, void* arg),
                      void* arg) {
  weft_buffer_t* b;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (bytes == NULL && len > 0)
    return WEFT_EINVAL;
  b = shell();
  if (b == NULL)
    return WEFT_ENOMEM;
  /* Charged like weft's own bytes: the limit bounds what a worker holds,
   * whoever allocated it. On failure the bytes stay the caller's. */
  err = weft__heap_adopt(&b->owned, len);
  if (err != 0) {
    weft__xfree(b);
    return err;
  }
  b->data = bytes;
  b->size = len;
  b->free_fn = free_fn != NULL ? free_fn : keep_bytes;
  b->free_arg = arg;
  *out = b;
  return 0;
}

int weft_buffer_transfer(weft_buffer_t* buf,
                         size_t new_len,
                         weft_buffer_t** out) {
  weft_buffer_t* b;
  size_t old_charge;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (buf == NULL)
    return WEFT_EINVAL;
  if (buf->detached)
    return WEFT_EDETACHED;
  if (buf->untransferable)
    return WEFT_EUNTRANSFERABLE;
  b = shell();
  if (b == NULL)
    return WEFT_ENOMEM;
  /* Swap the charge: the old bytes' charge goes before the new one is
   * checked, so a shrink always fits and a growth is checked for its
   * final size before anything is allocated. buf's charge was taken on
   * this thread's heap (the owner's), so putting it back cannot fail. */
  old_charge = buf->owned.charge;
  weft__heap_disown(&buf->owned);
  err = weft__heap_adopt(&b->owned, new_len);
  if (err != 0)
    goto fail;
  if (buf->free_fn != NULL && new_len <= buf->size) {
    /* Adopted bytes that shrink (or stay): the same bytes, shorter; the
     * free function goes with them. */
    b->data = buf->data;
    b->free_fn = buf->free_fn;
    b->free_arg = buf->free_arg;
  } else if (buf->free_fn != NULL) {
    /* Adopted bytes that grow: into weft memory, then give the old bytes
     * back to their owner. */
    b->data = weft__xzalloc(new_len);
    if (b->data == NULL) {
      err = WEFT_ENOMEM;
      goto fail;
    }
    if (buf->size > 0)
      memcpy(b->data, buf->data, buf->size);
    release_bytes(buf);
  } else if (new_len == 0) {
    weft__xfree(buf->data);
  } else {
    /* weft's own bytes: realloc may grow or shrink in place. */
    void* p = weft__xrealloc(buf->data, new_len);
    if (p == NULL) {
      err = WEFT_ENOMEM;
      goto fail;
    }
    if (new_len > buf->size)
      memset((char*)p + buf->size, 0, new_len - buf->size);
    b->data = p;
  }
  b->size = new_len;
  buf->data = NULL;
  buf->size = 0;
  buf->free_fn = NULL;
  buf->free_arg = NULL;
  buf->detached = true;
  *out = b;
  return 0;
fail:
  weft__heap_disown(&b->owned);
  weft__xfree(b);
  (void)weft__heap_adopt(&buf->owned, old_charge);
  return err;
}

int weft_buffer_data(weft_buffer_t* buf, void** data, size_t* size) {
  if (data != NULL)
    *data = NULL;
  if (size != NULL)
    *size = 0;
  if (buf == NULL)
    return WEFT_EINVAL;
  if (buf->detached)
    return WEFT_EDETACHED;
  if (data != NULL)
    *data = buf->data;
  if (size != NULL)
    *size = buf->size;
  return 0;
}

size_t weft_buffer_size(const weft_buffer_t* buf) {
  return buf == NULL || buf->detached ? 0 : buf->size;
}

bool weft_buffer_detached(const weft_buffer_t* buf) {
  return buf != NULL && buf->detached;
}

int weft_buffer_mark_untransferable(weft_buffer_t* buf) {
  if (buf == NULL)
    return WEFT_EINVAL;
  buf->untransferable = true;
  return 0;
}

bool weft__buffer_untransferable(const weft_buffer_t* buf) {
  return buf->untransferable;
}

void weft_buffer_free(weft_buffer_t* buf) {
  if (buf == NULL)
    return;
  weft__heap_disown(&buf->owned);
  release_bytes(buf);
  weft__xfree(buf);
}

weft_buffer_t* weft__buffer_move(weft_buffer_t* buf, weft_buffer_t* to) {
  to->data = buf->data;
  to->size = buf->size;
  to->free_fn = buf->free_fn;
  to->free_arg = buf->free_arg;
  weft__heap_disown(&buf->owned);
  buf->free_fn = NULL;
  buf->free_arg = NULL;
  buf->data = NULL;
  buf->size = 0;
  buf->detached = true;
  return to;
}

int weft__buffer_adopt(weft_buffer_t* buf) {
  return weft__heap_adopt(&buf->owned, buf->size);
}
