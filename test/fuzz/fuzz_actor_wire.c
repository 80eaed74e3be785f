/* fuzz_actor_wire.c - the envelope actors exchange between nodes
 * (actors/remote_wire.c, docs/node.md "Actors across nodes"): every
 * payload from the network goes through weft__renv_read(). An accepted
 * input is one msgpack value (weft__msgpack_validate agrees) whose value
 * part lies inside it, with names that are names; written back with
 * weft__renv_write() from what was read, it reads the same. */
#include "fuzz_common.h"
#include "../../actors/remote.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft__renv_t e, back;
  msgpack_sbuffer sb;
  if (weft__renv_read(data, size, &e) != 0)
    return 0;
  FUZZ_CHECK(weft__msgpack_validate(data, size) == 0);
  FUZZ_CHECK(e.kind >= 0 && e.kind < WEFT__RA_KINDS);
  FUZZ_CHECK(weft__wire_name_ok(e.node));
  FUZZ_CHECK(e.to_name[0] == '\0' ? e.to_id != 0
                                  : weft__wire_name_ok(e.to_name));
  FUZZ_CHECK(e.value > (const char*)data &&
             e.value + e.vlen == (const char*)data + size && e.vlen > 0);
  fuzz_sink += fuzz_touch(e.value, e.vlen);
  msgpack_sbuffer_init(&sb);
  FUZZ_CHECK(weft__renv_write(&sb, e.kind, e.node, e.from, e.to_id,
                              e.to_name[0] != '\0' ? e.to_name : NULL,
                              e.value, e.vlen) == 0);
  FUZZ_CHECK(weft__renv_read(sb.data, sb.size, &back) == 0);
  FUZZ_CHECK(back.kind == e.kind && back.from == e.from &&
             back.to_id == e.to_id && back.reason == e.reason &&
             strcmp(back.node, e.node) == 0 &&
             strcmp(back.to_name, e.to_name) == 0 && back.vlen == e.vlen &&
             memcmp(back.value, e.value, e.vlen) == 0);
  msgpack_sbuffer_destroy(&sb);
  return 0;
}
