/* pool_node_internal.h - the distributed pool's wire readers and writers
 * (docs/node.md "Distributed pool"), for pool_node.c and its fuzz target
 * (test/fuzz/fuzz_pool_wire.c). Nothing here trusts its input. */
#ifndef WEFT_LIB_POOL_NODE_INTERNAL_H
#define WEFT_LIB_POOL_NODE_INTERNAL_H

#include <stddef.h>

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

#endif /* WEFT_LIB_POOL_NODE_INTERNAL_H */
