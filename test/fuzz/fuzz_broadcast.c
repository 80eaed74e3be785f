/* fuzz_broadcast.c - weft_broadcast_post() with foreign bytes: refused
 * with WEFT_EDECODE / WEFT_EINVAL unless they are exactly one msgpack
 * value, and then delivered, decoded, to every other member. */
#include "fuzz_common.h"

static weft_broadcast_t* members[2];
static int got;

static void on_message(weft_broadcast_t* bc, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  FUZZ_CHECK(o != NULL);
  fuzz_sink += fuzz_walk(o, NULL, NULL);
  got++;
  weft_broadcast_unref(bc);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft_loop_t* loop = fuzz_loop();
  weft_broadcast_t* sender;
  int err, valid, i;
  FUZZ_CHECK(weft_broadcast_new(loop, "fuzz", &sender) == 0);
  for (i = 0; i < 2; i++) {
    FUZZ_CHECK(weft_broadcast_new(loop, "fuzz", &members[i]) == 0);
    FUZZ_CHECK(weft_broadcast_on_message(members[i], on_message) == 0);
  }
  valid = size > 0 ? weft__msgpack_validate(data, size) : WEFT_EINVAL;
  err = weft_broadcast_post(sender, size > 0 ? data : NULL, size);
  FUZZ_CHECK(err == valid);
  got = 0;
  if (err == 0) {
    FUZZ_CHECK(weft_loop_run(loop) == 0);
    FUZZ_CHECK(got == 2);
  }
  weft_broadcast_free(sender);
  weft_broadcast_free(members[0]);
  weft_broadcast_free(members[1]);
  return 0;
}
