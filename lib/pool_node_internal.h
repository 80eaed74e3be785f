/* pool_node_internal.h - the distributed pool's wire readers and writers
 * (docs/node.md "Distributed pool"), for its two sides, pool_server.c
 * (serving) and pool_remote.c (submitting), and its fuzz target
 * (test/fuzz/fuzz_pool_wire.c); and what else both sides share: the
 * JetStream API requests of durable tasks. All in pool_wire.c, below
 * both sides (scripts/check_layers.sh). Nothing here trusts its input. */
#ifndef WEFT_LIB_POOL_NODE_INTERNAL_H
#define WEFT_LIB_POOL_NODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "internal.h"

/* A subject's room, with its NUL. */
#define WEFT__POOL_SUBJECT_MAX 256

/* Answers on a task's reply subject (besides an error header). */
enum {
  WEFT__POOL_ACK = 0,   /* [0, node]: `node` took the task. */
  WEFT__POOL_BUSY = 1,  /* [1]: no free worker there; offer it again. */
  WEFT__POOL_RESULT = 2 /* [2, value]: the task's result. */
};

/* A task offer [name, arg]: 0 with the task name (a wire name, copied to
 * `name`, 65 bytes) and the argument's bytes (one msgpack value, inside
 * `data`), or WEFT_EDECODE. */
int weft__pool_wire_read_task(const void* data,
                              size_t len,
                              char* name,
                              const unsigned char** arg,
                              size_t* arg_len);
/* The offer's bytes into `out` (room for 3 + strlen(name) + arg_len);
 * returns the length. */
size_t weft__pool_wire_task(unsigned char* out,
                            const char* name,
                            const void* arg,
                            size_t arg_len);
/* A durable task [name, reply, arg] (a JetStream message's payload): as
 * weft__pool_wire_read_task, and the subject its answers go to (copied to
 * `reply`, `reply_cap` bytes with the NUL; no NUL, space or wildcard). */
int weft__pool_wire_read_dtask(const void* data,
                               size_t len,
                               char* name,
                               char* reply,
                               size_t reply_cap,
                               const unsigned char** arg,
                               size_t* arg_len);
/* Its bytes into `out` (room for 6 + strlen(name) + strlen(reply) +
 * arg_len); returns the length. */
size_t weft__pool_wire_dtask(unsigned char* out,
                             const char* name,
                             const char* reply,
                             const void* arg,
                             size_t arg_len);
/* An answer: 0 with `kind`, for an ack the node's name (a wire name, 65
 * bytes), for a result the value's bytes; or WEFT_EDECODE. */
int weft__pool_wire_read_answer(const void* data,
                                size_t len,
                                int* kind,
                                char* node,
                                const unsigned char** val,
                                size_t* val_len);
/* A msgpack str of at most `cap` - 1 bytes without NUL, copied to `out`
 * (NUL-terminated): 0 or WEFT_EDECODE. (A cancel's payload.) */
int weft__pool_wire_read_str(const void* data, size_t len, char* out,
                             size_t cap);
/* A str header for `n` bytes (n < 65536) into `out` (3 bytes at most):
 * returns its length. */
size_t weft__pool_wire_str_header(unsigned char* out, size_t n);
/* `s` as a msgpack str at `out` (room for 3 + strlen(s)): its length. */
size_t weft__pool_wire_put_str(unsigned char* out, const char* s);

/* A message's value as plain msgpack (a transferred buffer as a bin of
 * its bytes: weft__wire_flatten); `*buf` is set when a copy was made. */
int weft__pool_msg_bytes(const weft_msg_t* m, msgpack_sbuffer* buf,
                         const void** out, size_t* len);


/* ---- JetStream's API (durable tasks) ------------------------------------ */

/* The stream's name and subject for `group` (stream NULL: the default),
 * each into WEFT__POOL_SUBJECT_MAX bytes: 0 or WEFT_EINVAL. */
int weft__pool_js_names(const char* cluster, const char* group,
                        const char* stream, char* name, char* subject);
/* A number not given before in this process, for the subjects of API
 * requests and of a durable server's pulls. Thread: any. */
uint64_t weft__pool_js_next_id(void);
/* Send `body` on `subject` and wait for the answer: 0 with `*result` (as
 * weft__js_result), WEFT_ENOTSUP (no responders: no JetStream),
 * WEFT_ETIMEDOUT, WEFT_ENOMEM, WEFT_ENOTCONNECTED. Blocks the caller (the
 * answer comes on nats.c's thread). Thread: the node's loop. */
int weft__pool_js_request(weft_node_t* node, const char* subject,
                          const char* body, size_t len, int* result);
/* Make the stream unless it is there. */
int weft__pool_js_ensure_stream(weft_node_t* node, const char* stream,
                                const char* subject);

#endif /* WEFT_LIB_POOL_NODE_INTERNAL_H */
