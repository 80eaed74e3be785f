/* fuzz_pool_wire.c - what the distributed pool reads from the network
 * (lib/pool_wire.c, docs/node.md "Distributed pool"): byte 0 picks the
 * reader, the rest is the foreign input.
 *   0  a task offer [name, arg]: accepted only with a wire name and exactly
 *      one msgpack value after it (weft__msgpack_validate agrees), and
 *      written back the same (weft__pool_wire_task of what was read)
 *   1  an answer ([0, node], [1], [2, value]): an ack's node is a wire
 *      name, a result's value is one msgpack value, each written back the
 *      same
 *   2  a cancel's str: accepted only when it is exactly one str without
 *      NUL bytes that fits, copied whole
 *   3  a durable task [name, reply, arg] (a JetStream message): accepted
 *      only with a wire name, a reply subject without NUL, space or
 *      wildcard, and exactly one msgpack value after them, which ends the
 *      input
 *   4  a JetStream API answer (weft__js_result): 0, an err_code > 0, or -1
 *      for what is not a JSON object; never reads past the input
 * (test/fuzz/corpus/fuzz_pool_wire has a seed of each.) */
#include "fuzz_common.h"
#include "jetstream.h"
#include "pool_node_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t mode;
  char name[WEFT__WIRE_NAME_MAX + 1];
  const unsigned char* v = NULL;
  size_t vlen = 0;
  if (size == 0)
    return 0;
  mode = data[0] % 5;
  data++;
  size--;
  if (mode == 0) {
    if (weft__pool_wire_read_task(data, size, name, &v, &vlen) == 0) {
      unsigned char* back = malloc(3 + strlen(name) + vlen);
      FUZZ_CHECK(back != NULL);
      FUZZ_CHECK(weft__wire_name_ok(name));
      FUZZ_CHECK(v >= data && v + vlen == data + size);
      FUZZ_CHECK(weft__msgpack_validate(v, vlen) == 0);
      /* A name of 32 or more in a fixstr-sized form is not ours. */
      if (weft__pool_wire_task(back, name, v, vlen) == size)
        fuzz_sink += memcmp(back, data, size) == 0;
      free(back);
    }
  } else if (mode == 1) {
    int kind = -1;
    if (weft__pool_wire_read_answer(data, size, &kind, name, &v, &vlen) == 0) {
      if (kind == WEFT__POOL_ACK) {
        FUZZ_CHECK(weft__wire_name_ok(name));
      } else if (kind == WEFT__POOL_RESULT) {
        FUZZ_CHECK(v == data + 2 && vlen == size - 2);
        FUZZ_CHECK(weft__msgpack_validate(v, vlen) == 0);
      } else {
        FUZZ_CHECK(kind == WEFT__POOL_BUSY && size == 2);
      }
    }
  } else if (mode == 3) {
    char reply[256];
    if (weft__pool_wire_read_dtask(data, size, name, reply, sizeof(reply), &v,
                                   &vlen) == 0) {
      size_t n = strlen(reply);
      FUZZ_CHECK(weft__wire_name_ok(name));
      FUZZ_CHECK(n > 0 && n < sizeof(reply));
      FUZZ_CHECK(strpbrk(reply, " *>") == NULL);
      FUZZ_CHECK(v >= data && v + vlen == data + size);
      FUZZ_CHECK(weft__msgpack_validate(v, vlen) == 0);
    }
  } else if (mode == 4) {
    /* A copy of exactly `size` bytes: ASan sees any read past it. */
    char* copy = malloc(size > 0 ? size : 1);
    int r;
    FUZZ_CHECK(copy != NULL);
    if (size > 0)
      memcpy(copy, data, size);
    r = weft__js_result(copy, size);
    FUZZ_CHECK(r >= -1);
    if (size == 0 || copy[0] != '{')
      FUZZ_CHECK(r == -1);
    free(copy);
  } else {
    char out[256];
    if (weft__pool_wire_read_str(data, size, out, sizeof(out)) == 0) {
      /* The body is the input's tail (after a header of 1 to 3 bytes,
       * not necessarily the shortest). */
      size_t n = strlen(out);
      FUZZ_CHECK(n < sizeof(out));
      FUZZ_CHECK(size > n && size - n <= 3);
      FUZZ_CHECK(memcmp(data + (size - n), out, n) == 0);
    }
  }
  return 0;
}
