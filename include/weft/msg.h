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

/* Start an empty outgoing message.
 * Ownership: the caller owns `*out` until a post takes it (weft_port_post_msg
 * on success), or frees it with weft_msg_free().
 * Thread: any; a message is used by one thread at a time. */
WEFT_EXTERN int weft_msg_new(weft_msg_t** out);

/* A msgpack packer that writes straight into the message's own buffer (no
 * second copy). Pack exactly one value. Valid until the message is posted or
 * freed. Returns NULL for NULL or a received message. */
WEFT_EXTERN msgpack_packer* weft_msg_packer(weft_msg_t* msg);

/* Append pre-packed msgpack bytes (copied). Returns 0, WEFT_EINVAL,
 * WEFT_ENOMEM. */
WEFT_EXTERN int weft_msg_append(weft_msg_t* msg, const void* bytes, size_t len);

/* Write a placeholder for `buf` at the packer's current position and put
 * `buf` on the transfer list. On a successful post the bytes move to the
 * receiver without a copy and `buf` is detached (size 0, data calls return
 * WEFT_EDETACHED); the caller still frees its handle. If the post fails,
 * nothing moves. Returns WEFT_EDETACHED, WEFT_EUNTRANSFERABLE, WEFT_EDATACLONE
 * (already listed), WEFT_EINVAL. */
WEFT_EXTERN int weft_msg_add_buffer(weft_msg_t* msg, weft_buffer_t* buf);

/* Same for a port: on a successful post the port moves to the receiver, who
 * takes it with weft_msg_take_port(); the sender's handle is closed for use
 * (calls return WEFT_ECLOSED) and still freed by the sender with
 * weft_port_free(). A port cannot be sent through itself or its peer
 * (WEFT_EDATACLONE at post). */
WEFT_EXTERN int weft_msg_add_port(weft_msg_t* msg, weft_port_t* port);

/* Same for a shared buffer, by reference: the message holds one reference
 * and the receiver gets its own with weft_msg_take_shared(). The sender's
 * handle stays usable. */
WEFT_EXTERN int weft_msg_add_shared(weft_msg_t* msg, weft_shared_t* shared);

/* Free a message the caller owns (built and not posted, kept, or received
 * with weft_port_receive()). Transferred objects it still carries are freed
 * (buffers), closed (ports) or released (shared buffers). Accepts NULL.
 * Thread: the thread that owns the message (a kept or received message on
 * a worker is charged to that worker's heap: free it on that thread). */
WEFT_EXTERN void weft_msg_free(weft_msg_t* msg);

/* --- Reading a message (receiver side) -------------------------------- */

/* The decoded value. Containers live in a zone owned by the message, str,
 * bin and ext point into the message bytes: valid until the message callback
 * returns, or for a kept message until weft_msg_free(). Never NULL for a
 * delivered message; NULL for NULL or an unposted one. */
WEFT_EXTERN const msgpack_object* weft_msg_object(weft_msg_t* msg);

/* The raw msgpack bytes and their length, valid as long as the object. */
WEFT_EXTERN const char* weft_msg_data(const weft_msg_t* msg, size_t* len);

/* Inside a message callback: take ownership of `msg`. Afterwards the caller
 * frees it with weft_msg_free(); weft frees kept messages that are still
 * alive when their worker ends. On a worker the message stays charged to
 * its heap (its bytes and decoded size) until freed. Returns WEFT_EINVAL if
 * the message is not being delivered or was kept already, WEFT_EHEAPLIMIT,
 * WEFT_ENOMEM. */
WEFT_EXTERN int weft_msg_keep(weft_msg_t* msg);

/* Which ext placeholder `obj` is: WEFT_EXT_BUFFER, WEFT_EXT_PORT,
 * WEFT_EXT_SHARED, or 0 if it is none of weft's. */
WEFT_EXTERN int weft_msg_ext_kind(const msgpack_object* obj);

/* Take the buffer that placeholder `obj` stands for. Each can be taken once.
 * Ownership: the caller owns `*out` (weft_buffer_free()). Returns
 * WEFT_EINVAL (not a buffer placeholder of this message), WEFT_EDETACHED
 * (taken already), WEFT_EHEAPLIMIT. Thread: the receiving loop. */
WEFT_EXTERN int weft_msg_take_buffer(weft_msg_t* msg,
                                     const msgpack_object* obj,
                                     weft_buffer_t** out);

/* Take the port that placeholder `obj` stands for. The port now belongs to
 * the calling thread's loop: messages queued on it while it travelled are
 * kept and delivered here once a handler is set.
 * Ownership: the caller frees `*out` with weft_port_free(). */
WEFT_EXTERN int weft_msg_take_port(weft_msg_t* msg,
                                   const msgpack_object* obj,
                                   weft_port_t** out);

/* Take a new reference to the shared buffer `obj` stands for (any number of
 * times). Ownership: the caller releases it with weft_shared_release(). */
WEFT_EXTERN int weft_msg_take_shared(weft_msg_t* msg,
                                     const msgpack_object* obj,
                                     weft_shared_t** out);

#endif /* WEFT_MSG_H */
