/* broadcast.h - BroadcastChannel: every open channel of one name in the
 * process gets a copy of each message posted on any other. */
#ifndef WEFT_BROADCAST_H
#define WEFT_BROADCAST_H

#include <stdbool.h>

#include "weft/common.h"

/* Runs on: the loop the channel was opened on; next-ticks and microtasks
 * are drained after it. `msg` belongs to weft and is valid for the call
 * (weft_msg_keep() to keep it). The callback may close or free `bc`. */
typedef void (*weft_broadcast_cb)(weft_broadcast_t* bc, weft_msg_t* msg);

/* new BroadcastChannel(name) on `loop`. `name` is copied (any string; two
 * channels are of one name when strcmp() says so).
 * Returns 0, WEFT_EINVAL (NULL loop, name or out), WEFT_EWRONGTHREAD,
 * WEFT_ENOMEM; `*out` is NULL on an error.
 * Ownership: the caller frees it with weft_broadcast_free(); a channel
 * still open when its worker's loop is torn down is freed by weft (the
 * handle dangles from then on, like the rest of the worker's memory).
 * Thread: the owner of `loop` only. */
WEFT_EXTERN int weft_broadcast_new(weft_loop_t* loop,
                                   const char* name,
                                   weft_broadcast_t** out);

/* Set the handler (NULL: none). Without one, messages that arrive are
 * dropped (as an EventTarget with no listener). A channel with a handler
 * keeps its loop alive until closed or unref'd.
 * Returns 0, WEFT_EINVAL (NULL bc), WEFT_EWRONGTHREAD, WEFT_ECLOSED (after
 * weft_broadcast_close()). Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_on_message(weft_broadcast_t* bc,
                                          weft_broadcast_cb cb);

/* Post one pre-packed msgpack value to every other open channel of the same
 * name (not to `bc` itself), whatever thread or worker they live on; each
 * gets its own copy. The caller may reuse `bytes` when the call returns.
 * The value is checked here: WEFT_EDECODE if it is not exactly one msgpack
 * value. Returns 0 (also when no other channel has the name),
 * WEFT_ECLOSED, WEFT_EMSGSIZE (past the calling thread's message limit:
 * the worker option, or WEFT_MSG_DEFAULT_LIMIT), WEFT_EDECODE,
 * WEFT_ETOODEEP (nests deeper than WEFT_MSG_MAX_DEPTH), WEFT_EINVAL (NULL
 * bc or bytes, len 0), WEFT_EWRONGTHREAD, WEFT_ENOMEM (then no member gets
 * the message: all copies are made before the first is delivered).
 * Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_post(weft_broadcast_t* bc,
                                    const void* bytes,
                                    size_t len);

/* ref()/unref(): whether an open channel with a handler keeps its loop
 * alive (default: yes). Returns 0, WEFT_EINVAL (NULL), WEFT_EWRONGTHREAD;
 * allowed after close (no effect then). Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_ref(weft_broadcast_t* bc);
WEFT_EXTERN int weft_broadcast_unref(weft_broadcast_t* bc);

/* hasRef(): whether the channel keeps its loop alive now (open, with a
 * handler, ref'd). False for NULL and off the channel's loop.
 * Thread: the channel's loop. */
WEFT_EXTERN bool weft_broadcast_has_ref(const weft_broadcast_t* bc);

/* close(): leave the name; messages that arrived and were not delivered
 * yet are dropped, and later posts to the name skip this channel. Returns
 * 0 (also when closed already), WEFT_EINVAL (NULL), WEFT_EWRONGTHREAD.
 * Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_close(weft_broadcast_t* bc);

/* Close if open and release; do not use `bc` afterwards. Returns 0 (also
 * for NULL), or WEFT_EWRONGTHREAD (nothing happened).
 * Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_free(weft_broadcast_t* bc);

/* User data: weft never reads or frees it. set returns 0, WEFT_EINVAL
 * (NULL bc), WEFT_EWRONGTHREAD; get returns NULL for NULL or off the
 * channel's loop. Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_set_data(weft_broadcast_t* bc, void* data);
WEFT_EXTERN void* weft_broadcast_get_data(const weft_broadcast_t* bc);

#endif /* WEFT_BROADCAST_H */
