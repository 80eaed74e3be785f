/* buffer.c - owned byte buffers (ArrayBuffer) that move between threads
 * without a copy; the old handle is detached. */
#include <string.h>

#include "internal.h"

struct weft_buffer_s {
  void* data; /* NULL when detached or empty. */
  size_t size;
  bool detached;
  bool untransferable;
  weft__owned_t owned; /* Charged to the owning worker's heap. */
};

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
  weft__xfree(buf->data);
  weft__xfree(buf);
}

weft_buffer_t* weft__buffer_move(weft_buffer_t* buf, weft_buffer_t* to) {
  to->data = buf->data;
  to->size = buf->size;
  weft__heap_disown(&buf->owned);
  buf->data = NULL;
  buf->size = 0;
  buf->detached = true;
  return to;
}

int weft__buffer_adopt(weft_buffer_t* buf) {
  return weft__heap_adopt(&buf->owned, buf->size);
}
