/* port.h - MessageChannel and MessagePort: two entangled ports, FIFO, with
 * copy, transfer and share semantics, usable between any two threads. */
#ifndef WEFT_PORT_H
#define WEFT_PORT_H

#include <stdbool.h>
#include <msgpack.h>

#include "weft/common.h"

/* A message arrived. `msg` belongs to weft and is valid until the callback
 * returns, unless the callback calls weft_msg_keep(). Next-ticks and
 * microtasks are drained after every call.
 * Runs on: the loop that owns the port. */
typedef void (*weft_port_message_cb)(weft_port_t* port, weft_msg_t* msg);

/* A payload arrived that is not exactly one msgpack value; it was dropped.
 * `err` is WEFT_EDECODE. Runs on: the port's loop. */
typedef void (*weft_port_error_cb)(weft_port_t* port, int err);

/* The port was closed, by this side or by the peer (Node's 'close' event).
 * Runs once. Runs on: the port's loop. */
typedef void (*weft_port_close_cb)(weft_port_t* port);

/* A packer callback: pack exactly one value into `pk`, return 0 or a
 * negative code (which the post then returns). Runs on: the posting thread,
 * inside the post call. */
typedef int (*weft_pack_cb)(msgpack_packer* pk, void* arg);

/* new MessageChannel(): two entangled ports, both owned by `loop`.
 * Ownership: the caller frees each with weft_port_free().
 * Thread: owner loop only. */
WEFT_EXTERN int weft_channel_new(weft_loop_t* loop,
                                 weft_port_t** port1,
                                 weft_port_t** port2);

/* Set the message handler and start delivery (Node's port.on('message')).
 * Passing NULL stops delivery; messages then queue up. Thread: the port's
 * loop (WEFT_EWRONGTHREAD). */
WEFT_EXTERN int weft_port_on_message(weft_port_t* port,
                                     weft_port_message_cb cb);
WEFT_EXTERN int weft_port_on_messageerror(weft_port_t* port,
                                          weft_port_error_cb cb);
WEFT_EXTERN int weft_port_on_close(weft_port_t* port, weft_port_close_cb cb);

/* port.start(): deliver queued messages (a handler set later gets them).
 * port.stop() has no Node name; weft_port_on_message(p, NULL) pauses. */
WEFT_EXTERN int weft_port_start(weft_port_t* port);

/* Copy `len` pre-packed bytes (one msgpack value) to the peer. The caller
 * may reuse `bytes` as soon as the call returns. Returns 0, WEFT_ECLOSED
 * (this port or the peer is closed), WEFT_EMSGSIZE, WEFT_EINVAL,
 * WEFT_ENOMEM. The value is not validated here: a payload that does not
 * decode raises messageerror at the receiver.
 * Thread: any thread may post on a port; messages from one thread arrive in
 * the order posted. */
WEFT_EXTERN int weft_port_post(weft_port_t* port,
                               const void* bytes,
                               size_t len);

/* Pack one value with `pack` straight into the message buffer, then post. */
WEFT_EXTERN int weft_port_post_fn(weft_port_t* port,
                                  weft_pack_cb pack,
                                  void* arg);

/* Post a message built with weft_msg_new(), with its transfer list. On 0 the
 * port owns the message and `*msg` is set to NULL; transferred buffers are
 * detached and transferred ports closed for the sender. On error nothing
 * moved and the caller still owns `*msg`. */
WEFT_EXTERN int weft_port_post_msg(weft_port_t* port, weft_msg_t** msg);

/* receiveMessageOnPort(): take the oldest pending message without running
 * the loop. Returns 0 and sets `*out`, WEFT_EAGAIN if none is pending,
 * WEFT_ECLOSED if the port is closed and drained, WEFT_ENOMEM if the
 * message could not be decoded for lack of memory (it stays pending: the
 * next call gets it).
 * Ownership: the caller owns `*out` (weft_msg_free()). A payload that does
 * not decode is returned as WEFT_EDECODE (and dropped); so is one whose
 * array or map header claims more elements than the payload has bytes,
 * refused before anything is allocated for it.
 * Thread: the port's loop. */
WEFT_EXTERN int weft_port_receive(weft_port_t* port, weft_msg_t** out);

/* port.close(): disentangle. Messages already posted by the peer are
 * dropped on this side; messages this side posted before closing still reach
 * the peer, which then sees 'close'. Both ends get their close callback.
 * Closing twice returns 0. Thread: the port's loop. */
WEFT_EXTERN int weft_port_close(weft_port_t* port);

/* ref()/unref(): whether a started port with a handler keeps its loop alive
 * (default: yes). Thread: the port's loop. */
WEFT_EXTERN int weft_port_ref(weft_port_t* port);
WEFT_EXTERN int weft_port_unref(weft_port_t* port);

/* Whether the port is closed (by either side) or transferred away. */
WEFT_EXTERN bool weft_port_closed(const weft_port_t* port);

/* Largest payload the port accepts for posting, in bytes (default
 * WEFT_MSG_DEFAULT_LIMIT). Thread: the port's loop. */
WEFT_EXTERN int weft_port_set_max_message(weft_port_t* port, size_t bytes);

/* User data. Thread: the port's loop. */
WEFT_EXTERN void weft_port_set_data(weft_port_t* port, void* data);
WEFT_EXTERN void* weft_port_get_data(const weft_port_t* port);

/* Close the port if open and release the handle. Pending messages are
 * freed. Do not use `port` afterwards. Accepts NULL. A worker's parent port
 * belongs to weft and is not freed by the caller (WEFT_EINVAL).
 * Thread: the port's loop. */
WEFT_EXTERN int weft_port_free(weft_port_t* port);

#endif /* WEFT_PORT_H */
