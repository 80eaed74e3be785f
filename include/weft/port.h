/* port.h - MessageChannel and MessagePort: two entangled ports, FIFO, with
 * copy, transfer and share semantics, usable between any two threads. */
#ifndef WEFT_PORT_H
#define WEFT_PORT_H

#include <stdbool.h>
#include <stdint.h>
#include <msgpack.h>

#include "weft/common.h"

/* A message arrived. `msg` belongs to weft and is valid until the callback
 * returns, unless the callback calls weft_msg_keep(). Next-ticks and
 * microtasks are drained after every call.
 * Runs on: the loop that owns the port. */
typedef void (*weft_port_message_cb)(weft_port_t* port, weft_msg_t* msg);

/* A payload arrived that could not be delivered; it was dropped. `err` is
 * WEFT_EDECODE (not exactly one msgpack value), WEFT_EHEAPLIMIT (decoding
 * it would pass a limited worker's heap; see weft/heap.h) or WEFT_ENOMEM.
 * Runs on: the port's loop. */
typedef void (*weft_port_error_cb)(weft_port_t* port, int err);

/* The port was closed, by this side or by the peer (Node's 'close' event).
 * Runs once. Runs on: the port's loop. */
typedef void (*weft_port_close_cb)(weft_port_t* port);

/* A packer callback: pack exactly one value into `pk`, return 0 or a
 * negative code (which the post then returns). Runs on: the posting thread,
 * inside the post call. */
typedef int (*weft_pack_cb)(msgpack_packer* pk, void* arg);

/* new MessageChannel(): two entangled ports, both owned by `loop`.
 * Returns 0, WEFT_EINVAL (a NULL argument), WEFT_EWRONGTHREAD, WEFT_ENOMEM;
 * on an error both out pointers are NULL.
 * Ownership: the caller frees each with weft_port_free(); ports still open
 * when a worker's loop is torn down are closed and freed by weft.
 * Thread: owner loop only. */
WEFT_EXTERN int weft_channel_new(weft_loop_t* loop,
                                 weft_port_t** port1,
                                 weft_port_t** port2);

/* Set the message handler and start delivery (Node's port.on('message')).
 * Passing NULL stops delivery; messages then queue up. A started port
 * with a handler keeps its loop alive (see weft_port_unref()). A port with
 * neither a handler nor a close callback is not put on its loop's ready
 * queue for its messages (a port read with weft_port_receive() costs its loop
 * nothing, run or not; only its own 'close' event is queued once).
 * Fairness: one drain of the loop's ready queue delivers about 1024
 * messages across all ports, then timers and immediates get their turn,
 * also when a handler keeps posting to its own port; I/O is polled at
 * least every ~4096 deliveries.
 * Thread: the port's loop (WEFT_EWRONGTHREAD). */
WEFT_EXTERN int weft_port_on_message(weft_port_t* port,
                                     weft_port_message_cb cb);

/* Node's 'messageerror' and 'close' events (NULL: none). Without a
 * messageerror handler an undeliverable payload is dropped silently. A
 * close callback set after 'close' ran is never called. A close callback
 * alone (no message handler) does not keep the loop alive, but the port
 * then takes its loop's turn for the 'close' event.
 * Each returns 0, WEFT_EINVAL (NULL port), WEFT_ECLOSED (the handle was
 * transferred away), WEFT_EWRONGTHREAD. Thread: the port's loop. */
WEFT_EXTERN int weft_port_on_messageerror(weft_port_t* port,
                                          weft_port_error_cb cb);
WEFT_EXTERN int weft_port_on_close(weft_port_t* port, weft_port_close_cb cb);

/* port.start(): deliver queued messages (a handler set later gets them).
 * port.stop() has no Node name; weft_port_on_message(p, NULL) pauses.
 * Returns 0 (also on a closed port), WEFT_EINVAL, WEFT_ECLOSED (transferred
 * away), WEFT_EWRONGTHREAD. Thread: the port's loop. */
WEFT_EXTERN int weft_port_start(weft_port_t* port);

/* Copy `len` pre-packed bytes (one msgpack value) to the peer. The caller
 * may reuse `bytes` as soon as the call returns. Returns 0, WEFT_ECLOSED
 * (this port or the peer is closed, or the port was transferred),
 * WEFT_EMSGSIZE, WEFT_ETOODEEP (nests deeper than WEFT_MSG_MAX_DEPTH; see
 * weft/msg.h), WEFT_EINVAL, WEFT_ENOMEM. The value is not otherwise
 * validated here: a payload that does not decode raises messageerror at
 * the receiver.
 * Thread: any thread may post on a port; messages from one thread arrive in
 * the order posted. A post racing with the owner transferring this port
 * either returns 0 (the message was accepted and reaches the peer) or
 * WEFT_ECLOSED (nothing was sent); the handle itself stays valid until
 * its owner frees it. */
WEFT_EXTERN int weft_port_post(weft_port_t* port,
                               const void* bytes,
                               size_t len);

/* Pack one value with `pack` straight into the message buffer, then post.
 * Returns what `pack` returns if negative, WEFT_EPACK if it returns a
 * positive number, WEFT_EDECODE if it packed nothing, WEFT_EINVAL (NULL
 * port or pack), and the errors of weft_port_post(); on any error nothing
 * was sent. Thread: any, as weft_port_post(); `pack` runs on it. */
WEFT_EXTERN int weft_port_post_fn(weft_port_t* port,
                                  weft_pack_cb pack,
                                  void* arg);

/* Post a message built with weft_msg_new(), with its transfer list. On 0 the
 * port owns the message and `*msg` is set to NULL; transferred buffers are
 * detached and transferred ports closed for the sender. On error nothing
 * moved and the caller still owns `*msg`.
 * Returns 0, WEFT_EINVAL (NULL port, msg or *msg, or a message not built
 * with weft_msg_new(): received, or posted already), WEFT_ECLOSED,
 * WEFT_EDECODE (nothing was packed), WEFT_EMSGSIZE, WEFT_ETOODEEP,
 * WEFT_EDATACLONE (a port of this very channel is listed); for the
 * transfer list, checked again at the post: WEFT_EDETACHED,
 * WEFT_EUNTRANSFERABLE (buffers), and for ports WEFT_ECLOSED,
 * WEFT_EWRONGTHREAD (a listed port may only be sent from its own loop's
 * thread) and WEFT_EINVAL (a worker's parent port).
 * Thread: any, as weft_port_post(); with buffers or ports listed, the
 * thread that owns them.
 * A transferred port that waits with queued messages on its old loop is
 * delivered by its new owner as soon as that one sets a handler, whether
 * or not the old loop runs again.
 * Ports travelling inside each other's mailboxes: if delivering the
 * message would put a transferred port's own mailbox (directly or through
 * ports travelling inside it) around the receiving port, which travels
 * itself (A in D's mailbox, then D posted into A's), nobody could ever
 * take either. The post returns 0 and the message is freed at once: the
 * ports of that cycle close, and their peers see 'close'. */
WEFT_EXTERN int weft_port_post_msg(weft_port_t* port, weft_msg_t** msg);

/* receiveMessageOnPort(): take the oldest pending message without running
 * the loop. Returns 0 and sets `*out`, WEFT_EAGAIN if none is pending,
 * WEFT_ECLOSED if the port is closed and drained (after this side's
 * weft_port_close(), what the peer posted before is still returned until
 * the 'close' event has run), WEFT_EHEAPLIMIT on a limited worker whose
 * backlog or decoded message passed its heap limit (see weft/heap.h; the
 * worker ends), WEFT_ENOMEM for lack of memory: when the decode zone
 * cannot be made the message stays pending (the next call gets it); when
 * msgpack runs out of memory inside the unpack, that message is dropped.
 * Ownership: the caller owns `*out` (weft_msg_free()). A payload that does
 * not decode is returned as WEFT_EDECODE (and dropped); so is one whose
 * array or map header claims more elements than the payload has bytes,
 * refused before anything is allocated for it. WEFT_EINVAL for NULL
 * `port` or `out` (`*out` is NULL on every error).
 * Thread: the port's loop (WEFT_EWRONGTHREAD), and not while another
 * thread blocks in weft_port_receive_wait() on the port. */
WEFT_EXTERN int weft_port_receive(weft_port_t* port, weft_msg_t** out);

/* Blocking receive for a thread that runs no loop: wait until a message
 * is pending (0, `*out` set, as weft_port_receive()), `timeout_ms`
 * milliseconds passed (WEFT_ETIMEDOUT; never earlier; 0 polls once,
 * negative waits without limit), or the port is closed by either side
 * and drained (WEFT_ECLOSED; the close stays queued for the port's loop,
 * which gets it at its next weft_port_receive() or weft_port_free()). It
 * spins briefly, then sleeps on a futex; a post wakes it. Also
 * WEFT_EINVAL (NULL `port` or `out`), WEFT_ENOMEM and WEFT_EDECODE as
 * weft_port_receive() (the heap-limit check is not made here).
 * Ownership: the caller owns `*out` (weft_msg_free(), from any thread).
 * Thread: a thread with no loop of its own (WEFT_EWRONGTHREAD on a loop
 * thread, weft_loop_current() != NULL). The port stays its loop's: it is
 * made there (weft_channel_new()) and handed to this thread, and while a
 * thread blocks here it is that port's one consumer: the port must have
 * no message handler, no close callback and no close pending (else
 * WEFT_EBUSY: its loop delivers it), no other thread may receive on it,
 * and its loop must not close, free or transfer it, nor be freed itself,
 * until the call returns. The loop may run meanwhile (a port without
 * handlers costs it nothing). Any thread may post to the peer.
 * Cost to producers: none while nobody is parked (the post's existing
 * load of the schedule word sees PARKED only while a receiver sleeps;
 * then one CAS and one futex wake per park, not per message). */
WEFT_EXTERN int weft_port_receive_wait(weft_port_t* port,
                                       int64_t timeout_ms,
                                       weft_msg_t** out);

/* port.close(): disentangle. As in Node, nothing accepted before the close
 * is dropped: messages the peer had posted (posts that returned 0) are
 * still delivered on this side, in order, before this side's 'close'
 * (also when a message handler closes its own port); messages this side
 * posted before closing still reach the peer, which then sees 'close'.
 * Both ends get their close callback. Later posts on either end return
 * WEFT_ECLOSED. Two exceptions: a port without a started handler keeps
 * what waits for weft_port_receive() until its 'close' event runs (the
 * next loop turn); after that weft_port_receive() answers WEFT_ECLOSED and
 * what is left is freed with the port; and a post from another thread that
 * races with the close itself (it returned 0 although it ran during the
 * close) can arrive after 'close' and is then freed undelivered.
 * Closing twice returns 0. Also WEFT_EINVAL (NULL), WEFT_ECLOSED
 * (transferred away), WEFT_EWRONGTHREAD. Thread: the port's loop. */
WEFT_EXTERN int weft_port_close(weft_port_t* port);

/* ref()/unref(): whether a started port with a handler keeps its loop alive
 * (default: yes; the setting outlives a handler removed and set again).
 * Returns 0, WEFT_EINVAL (NULL), WEFT_ECLOSED (transferred away),
 * WEFT_EWRONGTHREAD. Thread: the port's loop. */
WEFT_EXTERN int weft_port_ref(weft_port_t* port);
WEFT_EXTERN int weft_port_unref(weft_port_t* port);

/* port.hasRef(): whether the port keeps its loop alive now: while it has
 * a started message handler and is ref'd, until its 'close' event has run
 * (whoever closed); and, handler or not, from weft_port_close() on this
 * port until that event. False for a port read only with
 * weft_port_receive(), an unref'd one, one whose 'close' ran, NULL, a
 * transferred-away handle, and off the port's loop (which cannot read it
 * without racing).
 * Thread: the port's loop. */
WEFT_EXTERN bool weft_port_has_ref(const weft_port_t* port);

/* Whether the port is closed (by either side) or transferred away; true
 * for NULL. Closing is seen here as soon as either side called
 * weft_port_close() or weft_port_free(), before the 'close' event.
 * Thread: any (the handle must not be freed meanwhile). */
WEFT_EXTERN bool weft_port_closed(const weft_port_t* port);

/* Largest payload the port accepts for posting, in bytes (default
 * WEFT_MSG_DEFAULT_LIMIT). Posts running on other threads meanwhile check
 * the old limit or the new one. Returns 0, WEFT_EINVAL (NULL port or 0
 * bytes), WEFT_ECLOSED (transferred away), WEFT_EWRONGTHREAD.
 * Thread: the port's loop. */
WEFT_EXTERN int weft_port_set_max_message(weft_port_t* port, size_t bytes);

/* User data: weft never reads or frees it; it stays with the handle (a
 * transfer does not carry it: the receiver's handle starts with NULL).
 * set returns 0, WEFT_EINVAL (NULL port), WEFT_ECLOSED (transferred away),
 * WEFT_EWRONGTHREAD. get returns NULL for NULL, a transferred-away handle
 * or a call off the port's loop. Thread: the port's loop. */
WEFT_EXTERN int weft_port_set_data(weft_port_t* port, void* data);
WEFT_EXTERN void* weft_port_get_data(const weft_port_t* port);

/* Close the port if open and release the handle. Pending messages are
 * freed, with the ports travelling in them (which close). Do not use
 * `port` afterwards. Accepts NULL. The port's memory goes now or at the
 * next weft_loop_run() of its loop, even one that has nothing alive (it
 * does not wait for weft_loop_free()). A worker's parent port belongs to
 * weft and is not freed by the caller (WEFT_EINVAL). A handle whose port
 * was transferred away is a husk the sender still frees here (any thread).
 * Returns 0, WEFT_EINVAL, WEFT_EWRONGTHREAD (nothing happened).
 * Thread: the port's loop. */
WEFT_EXTERN int weft_port_free(weft_port_t* port);

#endif /* WEFT_PORT_H */
