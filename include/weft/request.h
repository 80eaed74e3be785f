/* request.h - request/reply with a timeout on ports and workers, and the
 * blocking call built on it for threads that run no loop.
 *
 * A request is an ordinary message (one msgpack value, with transfers)
 * that also carries a reply route. It travels the way a post does, in
 * order with the posts of the same thread, and the receiver's message
 * handler sees it as any message; weft_msg_is_request() tells it apart.
 * The receiver answers exactly once, now or later, through the reply
 * handle it takes from the message:
 *
 *   requester                                  replier (message handler)
 *   weft_port_request(port, ..., cb, ctx) ──▶  weft_msg_take_reply(msg, &r)
 *   cb(ctx, 0, reply)                     ◀──  weft_reply_send(r, bytes, len)
 *
 * Exactly one outcome reaches the requester, once: the reply, the replier's
 * error (weft_reply_error()), WEFT_ETIMEDOUT, WEFT_ECLOSED (the peer went
 * away: the request was freed undelivered, or the peer port or worker
 * closed or exited before answering), or WEFT_ENOREPLY (the replier freed
 * the request or its reply handle without answering). A reply that comes
 * after its call settled (a late reply after a timeout) is dropped and
 * counted (weft_request_late_replies()), never delivered to another call:
 * every call has its own 64-bit id, never reused.
 *
 * The request's route travels beside the value, not in it: the replier
 * reads exactly the bytes that were sent. A requester's loop keeps a
 * hidden reply inbox while it has calls pending; a blocking caller's
 * thread keeps one from its first call to its exit. */
#ifndef WEFT_REQUEST_H
#define WEFT_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <msgpack.h>

#include "weft/common.h"

/* A reply handle: the replier's end of one request. */
typedef struct weft_reply_s weft_reply_t;

/* The outcome of a request. `status` is 0 with `reply` set (the reply
 * message, valid for the call; weft_msg_keep() to keep it), or a negative
 * code with `reply` NULL: WEFT_ETIMEDOUT, WEFT_ECLOSED, WEFT_ENOREPLY, or
 * the code the replier gave to weft_reply_error(). Runs once per request.
 * Runs on: the requester's loop; next-ticks and microtasks drained after. */
typedef void (*weft_reply_cb)(void* ctx, int status, weft_msg_t* reply);

/* --- Requester, on a loop ---------------------------------------------- */

/* Post a request of `len` pre-packed bytes (one msgpack value, copied) on
 * `port` and call `cb(ctx, ...)` with its outcome. `timeout_ms` > 0 bounds
 * the wait (the outcome is then WEFT_ETIMEDOUT, never earlier); 0 or
 * negative waits without limit (until a reply, an error, or the peer's
 * close). A pending request keeps the requester's loop alive. If `id` is
 * not NULL it gets the call's id (for weft_request_cancel()).
 * Returns 0 (the callback will run exactly once, never inside this call),
 * or, with nothing sent and no callback: WEFT_EINVAL (NULL port or cb,
 * NULL bytes or len 0), WEFT_ENOLOOP (the calling thread has no loop: use
 * weft_port_call()), WEFT_EDECODE (the bytes are not exactly one msgpack
 * value: refused here, so that the replier never fails to read a
 * request), WEFT_ECLOSED, WEFT_EMSGSIZE, WEFT_ETOODEEP, WEFT_ENOMEM.
 * A worker's loop that ends with calls pending drops them without
 * callbacks, as it drops its timers.
 * Thread: any thread that owns a weft loop (the callback runs there); the
 * port may belong to another loop, as for weft_port_post(). */
WEFT_EXTERN int weft_port_request(weft_port_t* port,
                                  const void* bytes,
                                  size_t len,
                                  int64_t timeout_ms,
                                  weft_reply_cb cb,
                                  void* ctx,
                                  uint64_t* id);

/* The same with a built message (weft_msg_new(), transfers included). On
 * 0 the request owns the message and `*msg` is NULL; on error the caller
 * still owns it and nothing moved. */
WEFT_EXTERN int weft_port_request_msg(weft_port_t* port,
                                      weft_msg_t** msg,
                                      int64_t timeout_ms,
                                      weft_reply_cb cb,
                                      void* ctx,
                                      uint64_t* id);

/* A request to a worker: it arrives on the worker's parent port. Also
 * WEFT_ECLOSED once the worker exited; a worker that exits with the request
 * unanswered settles it with WEFT_ECLOSED. Thread: as weft_port_request(),
 * and the rule of weft_worker_post() on the handle. */
WEFT_EXTERN int weft_worker_request(weft_worker_t* w,
                                    const void* bytes,
                                    size_t len,
                                    int64_t timeout_ms,
                                    weft_reply_cb cb,
                                    void* ctx,
                                    uint64_t* id);
WEFT_EXTERN int weft_worker_request_msg(weft_worker_t* w,
                                        weft_msg_t** msg,
                                        int64_t timeout_ms,
                                        weft_reply_cb cb,
                                        void* ctx,
                                        uint64_t* id);

/* Give up a pending request: its callback runs with WEFT_ECANCELED (as a
 * macrotask, not inside this call); a reply that still comes is dropped
 * and counted as late. Returns 0, WEFT_EINVAL if `id` is not pending on
 * this loop (settled already, or never made here; NULL loop), or
 * WEFT_ENOMEM (the call stays pending).
 * Thread: the loop that made the request. */
WEFT_EXTERN int weft_request_cancel(weft_loop_t* loop, uint64_t id);

/* Replies that arrived after their call settled, since the process
 * started, summed over every loop and blocking caller: counted once each,
 * when the reply is dropped. A loop drops it when it arrives (or when the
 * replier answers, if the loop has no call pending any more); a blocking
 * caller when its thread's next call meets it, or at the thread's exit.
 * Outcomes other than replies (an error, ENOREPLY, ECLOSED) that come
 * after their call settled count too. Thread: any. */
WEFT_EXTERN uint64_t weft_request_late_replies(void);

/* --- Requester, blocking (no loop needed) ------------------------------ */

/* Post a request and wait for its outcome: 0 with `*reply` set, or a
 * negative code as for weft_reply_cb (WEFT_ETIMEDOUT after `timeout_ms`,
 * never earlier; 0 or negative waits without limit), or the post's errors
 * as for weft_port_request(). The wait spins briefly, then sleeps on a
 * futex (as weft_port_receive_wait()); its cost is close to a ping-pong
 * round trip.
 * Ownership: the caller owns `*reply` (weft_msg_free(), from this thread);
 * `*reply` is NULL on error. The _msg variants: on 0 the request owns the
 * message and `*msg` is NULL; on a post error the caller keeps it.
 * Thread: any thread. On a loop thread it blocks that loop for the whole
 * wait: a call whose replier needs the calling loop to run can only time
 * out. */
WEFT_EXTERN int weft_port_call(weft_port_t* port,
                               const void* bytes,
                               size_t len,
                               int64_t timeout_ms,
                               weft_msg_t** reply);
WEFT_EXTERN int weft_port_call_msg(weft_port_t* port,
                                   weft_msg_t** msg,
                                   int64_t timeout_ms,
                                   weft_msg_t** reply);
WEFT_EXTERN int weft_worker_call(weft_worker_t* w,
                                 const void* bytes,
                                 size_t len,
                                 int64_t timeout_ms,
                                 weft_msg_t** reply);
WEFT_EXTERN int weft_worker_call_msg(weft_worker_t* w,
                                     weft_msg_t** msg,
                                     int64_t timeout_ms,
                                     weft_msg_t** reply);

/* --- Replier ----------------------------------------------------------- */

/* Whether `msg` (a received message) is a request whose reply handle has
 * not been taken yet. Thread: the thread that holds the message. */
WEFT_EXTERN bool weft_msg_is_request(const weft_msg_t* msg);

/* Take the reply handle of a received request. Returns 0, WEFT_EINVAL (not
 * a request, or taken already). A request whose handle is never taken is
 * settled with WEFT_ENOREPLY when the message is freed (for a message
 * handler: when it returns without weft_msg_keep()).
 * Ownership: the caller owns `*out` until one of weft_reply_send*,
 * weft_reply_error() or weft_reply_free() consumes it. A handle taken on a
 * worker and still unanswered when that worker ends is answered
 * WEFT_ECLOSED and freed with the worker (like all of a worker's memory,
 * it must not be used after). One taken in an actor's turn is the
 * actor's: when the actor ends without answering it (its on_stop may),
 * the call settles with the actor's reason (docs/actors.md) and a later
 * answer through the handle is dropped and counted late; the handle stays
 * valid until weft_actor_system_free(), which answers the ones left
 * WEFT_ECLOSED after the on_stops (not to be used after).
 * Thread: the thread that holds the message; the handle may then move to
 * any thread. */
WEFT_EXTERN int weft_msg_take_reply(weft_msg_t* msg, weft_reply_t** out);

/* Answer with `len` pre-packed bytes (one msgpack value, copied) and free
 * the handle, whatever the result. Returns 0 (delivered, or dropped and
 * counted because the call already settled: the replier cannot tell, by
 * design), WEFT_EMSGSIZE, WEFT_ETOODEEP, WEFT_EDECODE (not exactly one
 * msgpack value), WEFT_ENOMEM, WEFT_EINVAL (NULL bytes or len 0): the
 * requester then gets that code as its outcome; WEFT_EINVAL for a NULL
 * handle (nothing is consumed).
 * Thread: any. */
WEFT_EXTERN int weft_reply_send(weft_reply_t* r,
                                const void* bytes,
                                size_t len);
/* The same with a built message (transfers included); on 0 `*msg` is NULL.
 * On error the handle is still consumed and the caller keeps `*msg`. */
WEFT_EXTERN int weft_reply_send_msg(weft_reply_t* r, weft_msg_t** msg);
/* Answer with the values of a format string (weft/format.h). */
WEFT_EXTERN int weft_reply_send_fmt(weft_reply_t* r, const char* fmt, ...);
/* Answer with an error: the requester's outcome is `code` (a negative weft
 * or libuv code; anything else becomes WEFT_EINVAL). Frees the handle.
 * Returns 0 or WEFT_EINVAL (NULL handle). Thread: any. */
WEFT_EXTERN int weft_reply_error(weft_reply_t* r, int code);
/* Free the handle without answering: the requester gets WEFT_ENOREPLY.
 * Accepts NULL. Thread: any. */
WEFT_EXTERN void weft_reply_free(weft_reply_t* r);

/* Shorthand inside a message handler: take the reply handle of `msg` and
 * answer with `len` bytes. Returns WEFT_EINVAL if `msg` is not a request
 * or was answered already, else as weft_reply_send(). */
WEFT_EXTERN int weft_msg_reply(weft_msg_t* msg, const void* bytes, size_t len);

#endif /* WEFT_REQUEST_H */
