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

/* Allocate a buffer holding a copy of `len` bytes at `src` (the caller
 * keeps `src`; NULL only with len 0). Returns 0, WEFT_EINVAL (NULL out,
 * NULL src with len > 0), WEFT_EHEAPLIMIT, WEFT_ENOMEM, as
 * weft_buffer_new(). Ownership: the caller frees the handle with
 * weft_buffer_free(). Thread: any. */
WEFT_EXTERN int weft_buffer_from(weft_buffer_t** out,
                                 const void* src,
                                 size_t len);

/* Wrap `len` bytes the application already owns, without a copy (Node:
 * an external ArrayBuffer with its deleter). weft calls
 * free_fn(bytes, arg) exactly once, when the buffer's bytes are released:
 * weft_buffer_free() of the handle that holds them, the end of the worker
 * that owns it, a message freed with the buffer untaken, or a
 * weft_buffer_transfer() that grows it. That may be on another thread than
 * the adopter's (the buffer can be transferred to a worker and freed
 * there): free_fn must be callable from any thread. A NULL free_fn means
 * weft never frees the bytes: the caller keeps them alive and unchanged in
 * place while any handle holding them lives. `bytes` may be NULL only
 * when len is 0. The buffer is like any other: transferable (the bytes
 * move, zero-copy, and free_fn travels with them), markable untransferable,
 * and `len` counts against the calling worker's heap limit as weft's own
 * bytes do (past it: WEFT_EHEAPLIMIT, and the worker ends).
 * Returns 0, WEFT_EINVAL (out NULL; bytes NULL with len > 0),
 * WEFT_EHEAPLIMIT, WEFT_ENOMEM (no handle). On an error free_fn is not
 * called: the bytes stay the caller's.
 * Ownership: the caller frees the handle with weft_buffer_free().
 * Thread: any; a buffer is used by one thread at a time. */
WEFT_EXTERN int weft_buffer_adopt(weft_buffer_t** out,
                                  void* bytes,
                                  size_t len,
                                  void (*free_fn)(void* bytes, void* arg),
                                  void* arg);

/* Node's ArrayBuffer.prototype.transfer(newLength): a new buffer `*out` of
 * `new_len` bytes holding the contents of `buf` (shrinking keeps the
 * prefix, growing fills the new bytes with zeros), and `buf` detached
 * (WEFT_EDETACHED on use; still freed with weft_buffer_free()). Pass
 * weft_buffer_size(buf) to keep the length. No copy where it can be
 * avoided: weft's own bytes are reallocated (in place when the allocator
 * can); adopted bytes (weft_buffer_adopt) that shrink or keep their length
 * stay where they are, shorter, and keep their free_fn; adopted bytes that
 * grow are copied into weft memory and free_fn is called on the old ones
 * before this returns. The heap charge moves from the old length to the
 * new one, checked before anything is allocated: a shrink always fits.
 * Returns 0, WEFT_EINVAL (NULL buf or out), WEFT_EDETACHED (buf already
 * detached), WEFT_EUNTRANSFERABLE (buf was marked untransferable: like a
 * JavaScript ArrayBuffer with a detach key, it cannot be detached),
 * WEFT_EHEAPLIMIT (the new length passes the worker's limit; the worker
 * ends), WEFT_ENOMEM. On an error nothing changes: buf keeps its bytes and
 * *out is NULL.
 * Ownership: the caller frees *out with weft_buffer_free().
 * Thread: the buffer's owner (the thread that created or took it). */
WEFT_EXTERN int weft_buffer_transfer(weft_buffer_t* buf,
                                     size_t new_len,
                                     weft_buffer_t** out);

/* The bytes and their size. Returns 0, WEFT_EINVAL (NULL buf),
 * WEFT_EDETACHED once the buffer was transferred (then *data is NULL and
 * *size 0; so on every error). Either out-pointer may be NULL. The bytes
 * belong to the buffer: the pointer stays valid until the buffer is freed
 * or transferred (posted in a message, or weft_buffer_transfer()); data is
 * NULL for an empty buffer. Thread: the buffer's owner. */
WEFT_EXTERN int weft_buffer_data(weft_buffer_t* buf, void** data, size_t* size);

/* Size in bytes; 0 when detached or NULL. Thread: the buffer's owner. */
WEFT_EXTERN size_t weft_buffer_size(const weft_buffer_t* buf);

/* Whether the buffer was transferred away (its bytes now live elsewhere);
 * false for NULL. Thread: the buffer's owner. */
WEFT_EXTERN bool weft_buffer_detached(const weft_buffer_t* buf);

/* Node's markAsUntransferable: a later transfer (weft_msg_add_buffer,
 * a post listing it, weft_buffer_transfer) fails with
 * WEFT_EUNTRANSFERABLE; it cannot be undone. The buffer may still be
 * copied into messages. Returns 0 (also for a detached buffer, where it
 * changes nothing), WEFT_EINVAL (NULL). Thread: the buffer's owner. */
WEFT_EXTERN int weft_buffer_mark_untransferable(weft_buffer_t* buf);

/* Free the handle and, unless detached, its bytes (adopted bytes: their
 * free_fn is called, on this thread). Accepts NULL. A buffer a worker
 * created or took is charged to that worker's heap and freed by weft when
 * the worker ends if the worker did not free it.
 * Thread: the buffer's owner (the thread that created or took it; another
 * thread must not free a worker's buffer while the worker runs: post it
 * instead). */
WEFT_EXTERN void weft_buffer_free(weft_buffer_t* buf);

#endif /* WEFT_BUFFER_H */
