/* fuzz_port_roundtrip.c - arbitrary bytes posted through a channel
 * (weft_port_post does not validate) and taken out on the other side,
 * by weft_port_receive() or by a message handler run by the loop (the
 * first input byte chooses; the rest is the payload). The receiver gets
 * the value, or WEFT_EDECODE / messageerror; never a crash or a hang. */
#include "fuzz_common.h"

static int delivered, errors;

static void walk_msg(weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  size_t len;
  const char* bytes = weft_msg_data(m, &len);
  FUZZ_CHECK(o != NULL && bytes != NULL);
  fuzz_sink += fuzz_walk(o, NULL, NULL) + fuzz_touch(bytes, len);
}

static void on_message(weft_port_t* port, weft_msg_t* m) {
  walk_msg(m);
  delivered++;
  weft_port_on_message(port, NULL);
}

static void on_error(weft_port_t* port, int err) {
  FUZZ_CHECK(err == WEFT_EDECODE || err == WEFT_ENOMEM);
  errors++;
  weft_port_on_message(port, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft_loop_t* loop = fuzz_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  int err, valid;
  if (size < 1)
    return 0;
  FUZZ_CHECK(weft_channel_new(loop, &a, &b) == 0);
  err = weft_port_post(a, data + 1, size - 1);
  if (size == 1) {
    FUZZ_CHECK(err == WEFT_EINVAL);
    goto out;
  }
  valid = weft__msgpack_validate(data + 1, size - 1);
  if (err == WEFT_ETOODEEP) {
    /* Refused at the sender, as the validator refuses it. */
    FUZZ_CHECK(valid == WEFT_ETOODEEP);
    goto out;
  }
  FUZZ_CHECK(err == 0);
  if (data[0] & 1) {
    err = weft_port_receive(b, &m);
    FUZZ_CHECK(fuzz_decode_code_ok(err));
    FUZZ_CHECK((err == 0) == (valid == 0));
    if (err == 0)
      walk_msg(m);
    weft_msg_free(m);
    FUZZ_CHECK(weft_port_receive(b, &m) == WEFT_EAGAIN);
  } else {
    delivered = errors = 0;
    FUZZ_CHECK(weft_port_on_messageerror(b, on_error) == 0);
    FUZZ_CHECK(weft_port_on_message(b, on_message) == 0);
    FUZZ_CHECK(weft_loop_run(loop) == 0);
    FUZZ_CHECK(delivered + errors == 1);
    FUZZ_CHECK((delivered == 1) == (valid == 0));
  }
out:
  weft_port_free(a);
  weft_port_free(b);
  return 0;
}
