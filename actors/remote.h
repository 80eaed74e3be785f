/* remote.h - what actors/remote.c and actors/remote_wire.c share (and
 * test/fuzz/fuzz_actor_wire.c reads): the envelope actors exchange over
 * NATS (docs/node.md, "Actors across nodes"). Never installed. */
#ifndef WEFT_ACTORS_REMOTE_H
#define WEFT_ACTORS_REMOTE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An envelope's kind (its first element). */
enum {
  WEFT__RA_SEND = 0,  /* A message (a request when NATS has a reply). */
  WEFT__RA_WATCH = 1, /* `from` watches `to`: DOWN when it ends. */
  WEFT__RA_DOWN = 2,  /* `from`, watched by proxy `to`, ended: reason. */
  WEFT__RA_EXIT = 3,  /* An exit signal from `from` (a link) to `to`. */
  WEFT__RA_SPAWN = 4, /* A request: spawn behaviour `to` with the value. */
  WEFT__RA_KINDS
};

#define WEFT__RA_NAME_MAX 64

/* A read envelope: msgpack fixarray [kind, from_node, from, to, value],
 * `to` an id (uint) or a name (str); `value` points into the input. */
typedef struct {
  int kind;
  uint64_t from;
  uint64_t to_id;               /* 0 when `to` is a name. */
  char node[WEFT__RA_NAME_MAX + 1];
  char to_name[WEFT__RA_NAME_MAX + 1]; /* "" when `to` is an id. */
  const char* value;
  size_t vlen;
  int reason; /* DOWN, EXIT: the value, an int32. */
} weft__renv_t;

/* Read an envelope from the network: 0, or WEFT_EDECODE for anything but
 * the shape above (not one msgpack value within the limits, a bad kind or
 * name, an id where a name must be, a reason that is no int32, ...).
 * Nothing is trusted, nothing allocated. Thread: any. */
int weft__renv_read(const void* data, size_t len, weft__renv_t* out);
/* Write one: appends to `sb` (initialized). `to_name` NULL: by `to_id`.
 * `value` NULL: nil. 0 or WEFT_ENOMEM. */
int weft__renv_write(msgpack_sbuffer* sb, int kind, const char* from_node,
                     uint64_t from, uint64_t to_id, const char* to_name,
                     const void* value, size_t vlen);

#endif /* WEFT_ACTORS_REMOTE_H */
