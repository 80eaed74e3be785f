/* remote_wire.c - the envelope of actor traffic between nodes (remote.h,
 * docs/node.md "Actors across nodes"), read and written in one place so
 * that every byte from the network goes through a function the fuzzer
 * reaches (test/fuzz/fuzz_actor_wire.c). Nothing here trusts its input. */
#include <string.h>

#include "internal.h"
#include "remote.h"

/* A name element: a str of 1-64 of [A-Za-z0-9_-], copied to `out`. */
static bool read_name(const msgpack_object* o, char* out) {
  if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
      o->via.str.size > WEFT__RA_NAME_MAX)
    return false;
  memcpy(out, o->via.str.ptr, o->via.str.size);
  out[o->via.str.size] = '\0';
  return weft__wire_name_ok(out);
}

/* An int32 value (a reason). */
static bool read_reason(const char* data, size_t len, int* out) {
  msgpack_unpacked u;
  size_t off = 0;
  bool ok = false;
  msgpack_unpacked_init(&u);
  if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS) {
    if (u.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        u.data.via.u64 <= INT32_MAX) {
      *out = (int)u.data.via.u64;
      ok = true;
    } else if (u.data.type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
               u.data.via.i64 >= INT32_MIN) {
      *out = (int)u.data.via.i64;
      ok = true;
    }
  }
  msgpack_unpacked_destroy(&u);
  return ok;
}

int weft__renv_read(const void* data, size_t len, weft__renv_t* e) {
  const unsigned char* b = data;
  msgpack_unpacked u;
  size_t off = 1; /* After the fixarray's one byte: the elements follow. */
  int i;
  bool ok = true;
  memset(e, 0, sizeof(*e));
  /* Validated whole first: nothing below reads past it or allocates what a
   * header claims, and what is left after element 3 is exactly one value. */
  if (b == NULL || len < 6 || b[0] != 0x95 ||
      weft__msgpack_validate(data, len) != 0)
    return WEFT_EDECODE;
  msgpack_unpacked_init(&u);
  for (i = 0; i < 4 && ok; i++) {
    const msgpack_object* o = &u.data;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
      ok = false;
      break;
    }
    if (i == 0) {
      ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
           o->via.u64 < WEFT__RA_KINDS;
      e->kind = ok ? (int)o->via.u64 : 0;
    } else if (i == 1) {
      ok = read_name(o, e->node);
    } else if (i == 2) {
      ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
      e->from = ok ? o->via.u64 : 0;
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
      ok = o->via.u64 != 0;
      e->to_id = o->via.u64;
    } else {
      ok = read_name(o, e->to_name);
    }
  }
  msgpack_unpacked_destroy(&u);
  if (!ok || off >= len)
    return WEFT_EDECODE;
  e->value = (const char*)data + off;
  e->vlen = len - off;
  switch (e->kind) {
    case WEFT__RA_WATCH: /* A watcher is an actor, by id. */
      ok = e->from != 0;
      break;
    case WEFT__RA_DOWN: /* To one of our proxies, by id. */
      ok = e->to_id != 0 && read_reason(e->value, e->vlen, &e->reason);
      break;
    case WEFT__RA_EXIT:
      ok = e->from != 0 && read_reason(e->value, e->vlen, &e->reason);
      break;
    case WEFT__RA_SPAWN: /* A behaviour's name. */
      ok = e->to_name[0] != '\0';
      break;
    default:
      break;
  }
  return ok ? 0 : WEFT_EDECODE;
}

int weft__renv_write(msgpack_sbuffer* sb, int kind, const char* from_node,
                     uint64_t from, uint64_t to_id, const char* to_name,
                     const void* value, size_t vlen) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  if (msgpack_pack_array(&pk, 5) != 0 ||
      msgpack_pack_unsigned_int(&pk, (unsigned)kind) != 0 ||
      msgpack_pack_str_with_body(&pk, from_node, strlen(from_node)) != 0 ||
      msgpack_pack_uint64(&pk, from) != 0)
    return WEFT_ENOMEM;
  if ((to_name != NULL
           ? msgpack_pack_str_with_body(&pk, to_name, strlen(to_name))
           : msgpack_pack_uint64(&pk, to_id)) != 0)
    return WEFT_ENOMEM;
  if ((value != NULL ? msgpack_sbuffer_write(sb, value, vlen)
                     : msgpack_pack_nil(&pk)) != 0)
    return WEFT_ENOMEM;
  return 0;
}
