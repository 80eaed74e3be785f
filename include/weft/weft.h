/* weft.h - the umbrella header: isolated workers with their own loop and
 * heap, message ports, shared buffers and Node's event-loop semantics. */
#ifndef WEFT_WEFT_H
#define WEFT_WEFT_H

#ifdef __cplusplus
extern "C" {
#endif

#include "weft/common.h"
#include "weft/errno.h"
#include "weft/heap.h"
#include "weft/loop.h"
#include "weft/msg.h"
#include "weft/buffer.h"
#include "weft/port.h"
#include "weft/broadcast.h"
#include "weft/shared.h"
#include "weft/worker.h"
#include "weft/format.h"
#include "weft/request.h"
#include "weft/pool.h"
#include "weft/cluster.h"
#include "weft/actor.h"
#include "weft/supervisor.h"
#include "weft/trace.h"
#include "weft/node.h"
#include "weft/pool_node.h"
#include "weft/actor_remote.h"

#ifdef __cplusplus
}
#endif

#endif /* WEFT_WEFT_H */
