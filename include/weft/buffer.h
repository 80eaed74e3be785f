/* buffer.h - owned byte buffers that move between threads without a copy
 * (Node's ArrayBuffer with transfer lists and markAsUntransferable). */
#ifndef WEFT_BUFFER_H
#define WEFT_BUFFER_H

#include <stdbool.h>

#include "weft/common.h"

/* Allocate `size` zeroed bytes (size may be 0). The bytes count against the
 * calling worker's heap limit: past it this returns WEFT_EHEAPLIMIT before
 * anything is allocated, and the worker ends (see weft/heap.h). Returns 0,
 * WEFT_EINVAL, WEFT_EHEAPLIMIT, WEFT_ENOMEM (the system cannot give the
 * bytes; they are not touched before, so an impossible size fails here
 * instead of getting the process killed).
 * Ownership: the caller frees the handle with weft_buffer_free().
 * Thread: any; a buffer is used by one thread at a time. */
WEFT_EXTERN int weft_buffer_new(weft_buffer_t** out, size_t size);

/* Allocate a buffer holding a copy of `len` bytes at `src`. */
WEFT_EXTERN int weft_buffer_from(weft_buffer_t** out,
                                 const void* src,
                                 size_t len);

/* The bytes and their size. Returns WEFT_EDETACHED once the buffer was
 * transferred (then *data is NULL and *size 0). Either out-pointer may be
 * NULL. The pointer stays valid until the buffer is freed or transferred. */
WEFT_EXTERN int weft_buffer_data(weft_buffer_t* buf, void** data, size_t* size);

/* Size in bytes; 0 when detached or NULL. */
WEFT_EXTERN size_t weft_buffer_size(const weft_buffer_t* buf);

/* Whether the buffer was transferred away (its bytes now live elsewhere). */
WEFT_EXTERN bool weft_buffer_detached(const weft_buffer_t* buf);

/* Node's markAsUntransferable: a later transfer fails with
 * WEFT_EUNTRANSFERABLE. The buffer may still be copied into messages. */
WEFT_EXTERN int weft_buffer_mark_untransferable(weft_buffer_t* buf);

/* Free the handle and, unless detached, its bytes. Accepts NULL. */
WEFT_EXTERN void weft_buffer_free(weft_buffer_t* buf);

#endif /* WEFT_BUFFER_H */
