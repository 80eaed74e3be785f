/* fuzz_msg_decode.c - the decoders every received payload goes through:
 * weft__msgpack_validate() (broadcast, worker and environment data) and
 * weft__msg_decode() (ports), into a message's own zone and into a shared
 * zone as a loop does. Both must agree on what is one msgpack value, and a
 * decoded value must lie inside the message bytes. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static msgpack_zone* shared;
  weft_msg_t* m;
  int valid, own, in_shared;
  valid = weft__msgpack_validate(data, size);
  FUZZ_CHECK(fuzz_decode_code_ok(valid));

  m = weft__msg_alloc(WEFT__MSG_DATA, size);
  FUZZ_CHECK(m != NULL);
  if (size > 0)
    memcpy(m->data, data, size);
  m->len = size;
  m->state = WEFT__MSG_OWNED;
  own = weft__msg_decode(m, NULL);
  FUZZ_CHECK(fuzz_decode_code_ok(own));
  FUZZ_CHECK((own == 0) == (valid == 0));
  if (own == 0) {
    const msgpack_object* o = weft_msg_object(m);
    FUZZ_CHECK(o != NULL);
    fuzz_sink += fuzz_walk(o, NULL, NULL);
  }
  weft_msg_free(m);

  /* weft's pre-check (containers no larger than the bytes left) must never
   * refuse what msgpack accepts. Compared only without array32 / map32
   * type bytes, whose counts would make msgpack itself allocate gigabytes
   * (the bug the pre-check fixes). */
  if (own == WEFT_EDECODE && memchr(data, 0xdd, size) == NULL &&
      memchr(data, 0xdf, size) == NULL) {
    msgpack_zone z;
    msgpack_object obj;
    size_t off = 0;
    int r;
    FUZZ_CHECK(msgpack_zone_init(&z, 256));
    r = msgpack_unpack((const char*)data, size, &off, &z, &obj);
    msgpack_zone_destroy(&z);
    FUZZ_CHECK(!(r == MSGPACK_UNPACK_SUCCESS && off == size));
  }

  /* The loop's way: one zone, cleared after each message. */
  if (shared == NULL)
    FUZZ_CHECK((shared = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE)) != NULL);
  m = weft__msg_alloc(WEFT__MSG_DATA, size);
  FUZZ_CHECK(m != NULL);
  if (size > 0)
    memcpy(m->data, data, size);
  m->len = size;
  weft__msg_deliver(m); /* As a port hands it to its callback. */
  in_shared = weft__msg_decode(m, shared);
  FUZZ_CHECK(in_shared == own);
  if (in_shared == 0)
    fuzz_sink += fuzz_walk(weft_msg_object(m), NULL, NULL);
  FUZZ_CHECK(!weft__msg_delivered_kept(m));
  weft_msg_free(m);
  msgpack_zone_clear(shared);
  return 0;
}
