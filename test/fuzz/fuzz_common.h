/* fuzz_common.h - what the libFuzzer targets in test/fuzz share: a loop on
 * the fuzzing thread, made once, and a walk that reads every byte of a
 * decoded value (so ASan sees any view that points outside the message). */
#ifndef WEFT_FUZZ_COMMON_H
#define WEFT_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "internal.h"

/* A broken promise of weft's (not a sanitizer report): abort, so libFuzzer
 * saves the input as a crash. */
#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                        \
      abort();                                                               \
    }                                                                        \
  } while (0)

static inline weft_loop_t* fuzz_loop(void) {
  static weft_loop_t* loop;
  if (loop == NULL)
    FUZZ_CHECK(weft_loop_new(&loop) == 0);
  return loop;
}

static inline unsigned fuzz_touch(const void* p, size_t n) {
  const unsigned char* b = p;
  unsigned sum = 0;
  size_t i;
  for (i = 0; i < n; i++)
    sum += b[i];
  return sum;
}

/* Visit every node of `o`: `ext` (may be NULL) is called for each ext.
 * Returns a checksum so that the reads are not optimized away. */
typedef void (*fuzz_ext_cb)(const msgpack_object* o, void* arg);

static inline unsigned fuzz_walk(const msgpack_object* o,
                                 fuzz_ext_cb ext,
                                 void* arg) {
  unsigned sum = (unsigned)o->type;
  uint32_t i;
  switch (o->type) {
    case MSGPACK_OBJECT_STR:
      sum += fuzz_touch(o->via.str.ptr, o->via.str.size);
      break;
    case MSGPACK_OBJECT_BIN:
      sum += fuzz_touch(o->via.bin.ptr, o->via.bin.size);
      break;
    case MSGPACK_OBJECT_EXT:
      sum += fuzz_touch(o->via.ext.ptr, o->via.ext.size);
      if (ext != NULL)
        ext(o, arg);
      break;
    case MSGPACK_OBJECT_ARRAY:
      for (i = 0; i < o->via.array.size; i++)
        sum += fuzz_walk(&o->via.array.ptr[i], ext, arg);
      break;
    case MSGPACK_OBJECT_MAP:
      for (i = 0; i < o->via.map.size; i++) {
        sum += fuzz_walk(&o->via.map.ptr[i].key, ext, arg);
        sum += fuzz_walk(&o->via.map.ptr[i].val, ext, arg);
      }
      break;
    case MSGPACK_OBJECT_BOOLEAN:
      sum += o->via.boolean;
      break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      sum += (unsigned)o->via.u64;
      break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      sum += o->via.f64 > 0;
      break;
    default:
      break;
  }
  return sum;
}

/* Every code a decoder of foreign bytes may answer with. */
/* What a decoder may answer for foreign bytes: a value, not one value,
 * nested deeper than WEFT_MSG_MAX_DEPTH (msgpack-c's own limit, which it
 * reports as out of memory), or out of memory. */
static inline int fuzz_decode_code_ok(int err) {
  return err == 0 || err == WEFT_EDECODE || err == WEFT_ETOODEEP ||
         err == WEFT_ENOMEM;
}

static volatile unsigned fuzz_sink;

#endif /* WEFT_FUZZ_COMMON_H */
