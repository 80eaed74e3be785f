/* msg.h - one message: a single msgpack value plus what it transfers or
 * shares (buffers, ports, shared buffers). */
#ifndef WEFT_MSG_H
#define WEFT_MSG_H

#include <stdbool.h>
#include <msgpack.h>

#include "weft/common.h"

/* msgpack ext types weft writes where a transferred or shared object sits in
 * the value. The payload is a 4-byte big-endian index into the message's
 * transfer list. Application ext types should avoid 80..83. */
#define WEFT_EXT_BUFFER 80 /* A transferred weft_buffer_t (ArrayBuffer). */
#define WEFT_EXT_PORT   81 /* A transferred weft_port_t (MessagePort). */
#define WEFT_EXT_SHARED 82 /* A weft_shared_t posted by reference. */

/* The default largest message, payload bytes (64 MiB). Each port and worker
 * may set its own limit; posting a larger message fails with
 * WEFT_EMSGSIZE at the sender. */
#define WEFT_MSG_DEFAULT_LIMIT ((size_t)64 << 20)

/* The deepest a message's value may nest containers (arrays and maps, an
 * empty one included; a scalar is depth 0, [1] depth 1). msgpack-c decodes
 * no deeper, so weft refuses deeper values where they enter: every post
 * (weft_port_post, _post_fn, _post_msg and the worker and broadcast ones),
 * spawn data and environment data fail with WEFT_ETOODEEP and nothing is
 * sent. Cost: the sender walks a message once, one step per msgpack item
 * (str/bin/ext bodies skipped), and only when its value is a container;
 * the receiver then needs no walk.
 *
 * Bytes that are not one msgpack value still travel (the receiver gets
 * WEFT_EDECODE, as Node's messageerror), but before decoding them the
 * receiver refuses, with WEFT_EDECODE and without allocating, a container
 * that claims more elements than bytes remain: decoding never allocates
 * more than about 24 bytes per payload byte, and on a limited worker it is
 * charged before it happens (weft/heap.h). */
#define WEFT_MSG_MAX_DEPTH 32

/* --- Building a message (sender side) --------------------------------- */

/* Start an empty outgoing message. Returns 0, WEFT_EINVAL (NULL out),
 * WEFT_ENOMEM (`*out` NULL).
 * Ownership: the caller owns `*out` until a post takes it (weft_port_post_msg
 * on success), or frees it with weft_msg_free().
 * Thread: any; a message is used by one thread at a time (it may be built
 * on one thread and posted from another, one after the other). Its memory
 * is not charged to a worker's heap until it is received. */
WEFT_EXTERN int weft_msg_new(weft_msg_t** out);

/* A msgpack packer that writes straight into the message's own buffer (no
 * second copy). Pack exactly one value. Valid until the message is posted or
 * freed; owned by the message (do not free it). Returns NULL for NULL or a
 * received message. msgpack's pack calls return -1 when memory runs out;
 * the message then holds part of a value: free it.
 * Thread: the thread building the message. */
WEFT_EXTERN msgpack_packer* weft_msg_packer(weft_msg_t* msg);

/* Append pre-packed msgpack bytes (copied: the caller keeps `bytes`).
 * Returns 0 (len 0 appends nothing), WEFT_EINVAL (NULL msg, NULL bytes
 * with len > 0, a received or posted message), WEFT_ENOMEM.
 * Thread: the thread building the message. */
WEFT_EXTERN int weft_msg_append(weft_msg_t* msg, const void* bytes, size_t len);

/* Write a placeholder for `buf` at the packer's current position and put
 * `buf` on the transfer list. On a successful post the bytes move to the
 * receiver without a copy and `buf` is detached (size 0, data calls return
 * WEFT_EDETACHED); the caller still frees its handle. If the post fails,
 * nothing moves. Returns 0, WEFT_EDETACHED, WEFT_EUNTRANSFERABLE,
 * WEFT_EDATACLONE (already listed), WEFT_EINVAL (NULL, or a received
 * message), WEFT_ENOMEM. The message does not own `buf` before the post:
 * keep the handle alive until then (the bytes move at the post).
 * Thread: the buffer's owner. */
WEFT_EXTERN int weft_msg_add_buffer(weft_msg_t* msg, weft_buffer_t* buf);

/* Same for a port: on a successful post the port moves to the receiver, who
 * takes it with weft_msg_take_port(); the sender's handle is closed for use
 * (calls return WEFT_ECLOSED) and still freed by the sender with
 * weft_port_free(). A port cannot be sent through itself or its peer
 * (WEFT_EDATACLONE at post). Returns 0, WEFT_EINVAL (NULL, a received
 * message, a worker's parent port), WEFT_ECLOSED (closed or transferred
 * already), WEFT_EWRONGTHREAD, WEFT_EDATACLONE (already listed),
 * WEFT_ENOMEM. As for buffers, the message does not own the port before
 * the post: do not free it until then.
 * Thread: the port's loop (as is the post that carries it). */
WEFT_EXTERN int weft_msg_add_port(weft_msg_t* msg, weft_port_t* port);

/* Same for a shared buffer, by reference: the message holds one reference
 * of its own from this call on (released with the message, posted or
 * not) and the receiver gets its own with weft_msg_take_shared(). The
 * sender's reference stays the sender's. A shared buffer may be listed
 * any number of times. Returns 0, WEFT_EINVAL (NULL, a received message),
 * WEFT_ENOMEM. Thread: any (the thread building the message). */
WEFT_EXTERN int weft_msg_add_shared(weft_msg_t* msg, weft_shared_t* shared);

/* Free a message the caller owns (built and not posted, kept, or received
 * with weft_port_receive()). Transferred objects it still carries are freed
 * (buffers), closed (ports) or released (shared buffers); for a message
 * never posted they stay the sender's. Accepts NULL. Inside its own
 * message callback a message not kept is still weft's: the call is
 * ignored there (weft frees it when the callback returns).
 * Thread: the thread that owns the message (a kept or received message on
 * a worker is charged to that worker's heap: free it on that thread). */
WEFT_EXTERN void weft_msg_free(weft_msg_t* msg);

/* --- Reading a message (receiver side) -------------------------------- */

/* The decoded value. Containers live in a zone owned by the message, str,
 * bin and ext point into the message bytes: valid until the message callback
 * returns, or for a kept or received message until weft_msg_free(). Never
 * NULL for a delivered, kept or received message; NULL for NULL or one
 * being built. Ownership: the message's; do not free or change it.
 * Thread: the thread that holds the message. */
WEFT_EXTERN const msgpack_object* weft_msg_object(weft_msg_t* msg);

/* The raw msgpack bytes and their length (`len` may be NULL), valid as long
 * as the object; for a message being built, what was packed so far, valid
 * until the next pack call. NULL (and *len 0) for NULL. Ownership: the
 * message's. Thread: the thread that holds the message. */
WEFT_EXTERN const char* weft_msg_data(const weft_msg_t* msg, size_t* len);

/* Inside a message callback: take ownership of `msg`. Afterwards the caller
 * frees it with weft_msg_free(); weft frees kept messages that are still
 * alive when their worker ends. On a worker the message stays charged to
 * its heap (its bytes and decoded size) until freed. The callback may free
 * it before it returns. Returns 0, WEFT_EINVAL if the message is NULL, not
 * being delivered on the calling thread (built, received with
 * weft_port_receive(): owned already, or in another thread's callback)
 * or was kept already, or the calling thread runs no loop;
 * WEFT_EHEAPLIMIT, WEFT_ENOMEM (then weft still frees it after the
 * callback).
 * Thread: the thread running the message callback (the receiving loop's):
 * the message is tied to that loop's decode zone. */
WEFT_EXTERN int weft_msg_keep(weft_msg_t* msg);

/* Which ext placeholder `obj` is: WEFT_EXT_BUFFER, WEFT_EXT_PORT,
 * WEFT_EXT_SHARED, or 0 if it is none of weft's (or NULL). Looks at `obj`
 * only: whether a message transfers anything there is for take to say.
 * Thread: any. */
WEFT_EXTERN int weft_msg_ext_kind(const msgpack_object* obj);

/* Take the buffer that placeholder `obj` stands for. `obj` must come from
 * this message's weft_msg_object() (a placeholder read from another
 * message is refused, even one with the same index). Each can be taken
 * once. An untaken buffer is freed with the message.
 * Ownership: the caller owns `*out` (weft_buffer_free()); on a worker it
 * is charged to that worker's heap. Returns 0, WEFT_EINVAL (NULL out, or
 * not a buffer placeholder of this delivered, kept or received message),
 * WEFT_EDETACHED (taken already), WEFT_EHEAPLIMIT; `*out` is NULL on an
 * error. Thread: the thread that received the message. */
WEFT_EXTERN int weft_msg_take_buffer(weft_msg_t* msg,
                                     const msgpack_object* obj,
                                     weft_buffer_t** out);

/* Take the port that placeholder `obj` stands for (from this message, as
 * for buffers). The port now belongs to the calling thread's loop:
 * messages queued on it while it travelled are kept and delivered here
 * once a handler is set. An untaken port is closed when the message is
 * freed (its peer sees 'close').
 * Ownership: the caller frees `*out` with weft_port_free(). Returns 0,
 * WEFT_EINVAL (NULL out, or not a port placeholder of this message),
 * WEFT_EDETACHED (taken already), WEFT_ENOLOOP (the calling thread runs
 * no loop: a message from weft_port_receive_wait() can carry ports but
 * only a loop thread can take them), WEFT_ENOMEM; `*out` is NULL on an
 * error. Thread: a loop thread, which becomes the port's owner. */
WEFT_EXTERN int weft_msg_take_port(weft_msg_t* msg,
                                   const msgpack_object* obj,
                                   weft_port_t** out);

/* Take a new reference to the shared buffer `obj` stands for (from this
 * message, as for buffers), any number of times. The message's own
 * reference goes with the message.
 * Ownership: the caller releases it with weft_shared_release(). Returns 0,
 * WEFT_EINVAL (NULL out, or not a shared placeholder of this message);
 * `*out` is NULL on an error. Thread: any thread holding the message. */
WEFT_EXTERN int weft_msg_take_shared(weft_msg_t* msg,
                                     const msgpack_object* obj,
                                     weft_shared_t** out);

#endif /* WEFT_MSG_H */
