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
 * weft_malloc(0) and weft_calloc with a zero size return a distinct
 * 1-byte block; weft_realloc(NULL, n) is weft_malloc(n) and
 * weft_realloc(p, 0) shrinks p to 1 byte (it does not free); on failure
 * weft_realloc returns NULL and `ptr` stays valid. weft_calloc returns
 * NULL when count * size overflows. weft_free(NULL) does nothing.
 * Ownership: free with weft_free() on the same thread (a worker's blocks
 * go with its heap when it ends: never use them after that).
 * Thread: any. */
WEFT_EXTERN void* weft_malloc(size_t size);
WEFT_EXTERN void* weft_calloc(size_t count, size_t size);
WEFT_EXTERN void* weft_realloc(void* ptr, size_t size);
WEFT_EXTERN void weft_free(void* ptr);

/* The heap limit (weft_worker_opts_t.max_heap_bytes) covers, on the
 * worker that owns them:
 *  - memory from weft_malloc() and friends, and weft's loop-local memory;
 *  - buffers the worker owns (weft_buffer_new(), taken from a message): the
 *    size is charged before the bytes are allocated, so a size past the
 *    limit fails with WEFT_EHEAPLIMIT having allocated and touched nothing;
 *  - messages it receives: a message being delivered (on a limited
 *    worker), kept (weft_msg_keep()) or received (weft_port_receive()) is
 *    charged with its bytes plus what decoding allocates (msgpack_object
 *    arrays: 24 bytes per array element, 48 per map pair; str, bin and ext
 *    point into the bytes), charged BEFORE msgpack decodes it, and
 *    uncharged when freed. weft frees kept and received messages still
 *    alive when the worker ends;
 *  - its backlog: the bytes of data messages queued on each of its ports
 *    count against the limit until delivered or received (per port; also
 *    for posts made before the worker started running). A post that would
 *    pass it still returns 0 but the message is dropped, as Node drops
 *    messages to a dead worker, and the worker ends.
 * Any breach ends the worker: its allocation fails (NULL, WEFT_EHEAPLIMIT
 * from the call, a messageerror with WEFT_EHEAPLIMIT for a delivery, or
 * WEFT_EHEAPLIMIT from weft_port_receive()), and the worker stops at its
 * next return to the loop with an `error` event (WEFT_EHEAPLIMIT) and exit
 * code 1, like Node's ERR_WORKER_OUT_OF_MEMORY. The host process carries
 * on. Charges are approximate (allocator rounding, msgpack's zone chunks
 * are not counted) and never include memory of other threads.
 *
 * Not covered: what the worker's own C code allocates without weft
 * (malloc, calloc, realloc, strdup, libraries it calls), its stack, and
 * static or global memory. C cannot fence those in: a worker that mallocs
 * past its limit is neither counted nor stopped. Allocate with
 * weft_malloc() what the limit is to bound. */

/* Bytes the calling thread's worker has in use (its heap, messages it
 * holds, buffers it owns) and its limit (0: none). Either pointer may be
 * NULL. Off a worker (the main thread, threads you create) both are 0.
 * Returns 0, or WEFT_EINVAL if both pointers are NULL. Thread: any (it
 * reports on the calling thread's own worker). */
WEFT_EXTERN int weft_heap_usage(size_t* used, size_t* limit);

#endif /* WEFT_HEAP_H */
