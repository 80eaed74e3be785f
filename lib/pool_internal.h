/* pool_internal.h - what pool.c offers the files above it (pool_parallel.c);
 * never installed. */
#ifndef WEFT_LIB_POOL_INTERNAL_H
#define WEFT_LIB_POOL_INTERNAL_H

#include <stdbool.h>

#include "weft/pool.h"

/* Whether the calling thread is one of `pool`'s own: a worker of the pool
 * or its hidden thread (where loop-less callbacks run). A call that blocks
 * until the pool's tasks are done deadlocks there (WEFT_EWRONGTHREAD).
 * Thread: any. */
bool weft__pool_on_thread(const weft_pool_t* pool);

#endif /* WEFT_LIB_POOL_INTERNAL_H */
