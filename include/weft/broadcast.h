/* broadcast.h - BroadcastChannel: every open channel of one name in the
 * process gets a copy of each message posted on any other. */
#ifndef WEFT_BROADCAST_H
#define WEFT_BROADCAST_H

#include "weft/common.h"

/* Runs on: the loop the channel was opened on. `msg` is valid for the call
 * (weft_msg_keep() to keep it). */
typedef void (*weft_broadcast_cb)(weft_broadcast_t* bc, weft_msg_t* msg);

/* new BroadcastChannel(name) on `loop`. `name` is copied.
 * Ownership: the caller frees it with weft_broadcast_free().
 * Thread: owner loop only. */
WEFT_EXTERN int weft_broadcast_new(weft_loop_t* loop,
                                   const char* name,
                                   weft_broadcast_t** out);

/* Set the handler. Without one, messages that arrive are dropped (as an
 * EventTarget with no listener). A channel with a handler keeps its loop
 * alive until closed or unref'd. Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_on_message(weft_broadcast_t* bc,
                                          weft_broadcast_cb cb);

/* Post one pre-packed msgpack value to every other open channel of the same
 * name (not to `bc` itself), in any thread; each gets its own copy. The
 * value is checked here: WEFT_EDECODE if it is not exactly one msgpack
 * value. Returns 0, WEFT_ECLOSED, WEFT_EMSGSIZE, WEFT_EDECODE,
 * WEFT_ETOODEEP (nests deeper than WEFT_MSG_MAX_DEPTH), WEFT_EINVAL,
 * WEFT_ENOMEM (then no member gets the message: all copies are made before
 * the first is delivered).
 * Thread: the channel's loop. */
WEFT_EXTERN int weft_broadcast_post(weft_broadcast_t* bc,
                                    const void* bytes,
                                    size_t len);

/* Whether an open channel with a handler keeps the loop alive. */
WEFT_EXTERN int weft_broadcast_ref(weft_broadcast_t* bc);
WEFT_EXTERN int weft_broadcast_unref(weft_broadcast_t* bc);

/* close(): leave the name; queued messages are dropped. Twice is fine. */
WEFT_EXTERN int weft_broadcast_close(weft_broadcast_t* bc);

/* Close if open and release. Accepts NULL. */
WEFT_EXTERN void weft_broadcast_free(weft_broadcast_t* bc);

/* User data. */
WEFT_EXTERN void weft_broadcast_set_data(weft_broadcast_t* bc, void* data);
WEFT_EXTERN void* weft_broadcast_get_data(const weft_broadcast_t* bc);

#endif /* WEFT_BROADCAST_H */
