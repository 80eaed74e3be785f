/* heap.h - weft's allocator: on a worker thread, memory comes from that
 * worker's own mimalloc heap, released as a whole when the worker ends, and
 * counted against its heap limit. */
#ifndef WEFT_HEAP_H
#define WEFT_HEAP_H

#include "weft/common.h"

/* Allocate from the calling thread's heap: the worker's own heap on a
 * worker (released when the worker ends, so never hand such memory to
 * another thread: post it instead), the process heap elsewhere. On a
 * worker past its limit this returns NULL and the worker ends with an
 * `error` event (WEFT_EHEAPLIMIT) at its next return to the loop.
 * Ownership: free with weft_free() on the same thread. Thread: any. */
WEFT_EXTERN void* weft_malloc(size_t size);
WEFT_EXTERN void* weft_calloc(size_t count, size_t size);
WEFT_EXTERN void* weft_realloc(void* ptr, size_t size);
WEFT_EXTERN void weft_free(void* ptr);

/* Bytes the calling thread's worker has in use (its heap, received
 * messages it kept, buffers it owns) and its limit (0: none).
 * Returns WEFT_EINVAL if both pointers are NULL. Thread: any. */
WEFT_EXTERN int weft_heap_usage(size_t* used, size_t* limit);

#endif /* WEFT_HEAP_H */
