/* fuzz_take.c - the take paths on a received message whose payload is
 * foreign: a message carries real transfers (0-3 buffers, ports and shared
 * buffers, chosen by the first input byte) but its payload is the rest of
 * the input, so its ext placeholders may have any index (out of range,
 * repeated) and any kind (one that does not match the transfer list).
 * Every ext found is taken as a buffer, a port and a shared buffer; only
 * the right kind at a listed index may succeed, a buffer or port only
 * once. Untaken transfers are released with the message. Bit 6 of the
 * first byte: read with weft_port_receive() (else a handler on the loop). */
#include "fuzz_common.h"

#define MAXX 3

typedef struct {
  weft_msg_t* msg;
  int takes;
} take_ctx_t;

static int delivered, errors;

static void try_take(const msgpack_object* o, void* arg) {
  take_ctx_t* c = arg;
  weft_buffer_t* buf = NULL;
  weft_port_t* port = NULL;
  weft_shared_t* sh = NULL;
  int kind = weft_msg_ext_kind(o);
  int err;

  err = weft_msg_take_buffer(c->msg, o, &buf);
  FUZZ_CHECK(err == 0 || err == WEFT_EINVAL || err == WEFT_EDETACHED);
  FUZZ_CHECK(err != 0 || (kind == WEFT_EXT_BUFFER && buf != NULL));
  if (err == 0) {
    weft_buffer_t* again = buf;
    FUZZ_CHECK(weft_buffer_size(buf) == 16);
    FUZZ_CHECK(weft_msg_take_buffer(c->msg, o, &again) == WEFT_EDETACHED);
    FUZZ_CHECK(again == NULL);
    c->takes++;
  }
  weft_buffer_free(buf);

  err = weft_msg_take_port(c->msg, o, &port);
  FUZZ_CHECK(err == 0 || err == WEFT_EINVAL || err == WEFT_EDETACHED);
  FUZZ_CHECK(err != 0 || (kind == WEFT_EXT_PORT && port != NULL));
  if (err == 0) {
    weft_port_t* again = NULL;
    FUZZ_CHECK(weft_msg_take_port(c->msg, o, &again) == WEFT_EDETACHED);
    FUZZ_CHECK(again == NULL);
    c->takes++;
  }
  FUZZ_CHECK(weft_port_free(port) == 0);

  err = weft_msg_take_shared(c->msg, o, &sh);
  FUZZ_CHECK(err == 0 || err == WEFT_EINVAL);
  FUZZ_CHECK(err != 0 || (kind == WEFT_EXT_SHARED && sh != NULL));
  if (err == 0) {
    FUZZ_CHECK(weft_shared_size(sh) == 64);
    weft_shared_release(sh);
    c->takes++;
  }
}

static void take_all(weft_msg_t* m) {
  take_ctx_t c = {m, 0};
  const msgpack_object* o = weft_msg_object(m);
  FUZZ_CHECK(o != NULL);
  fuzz_sink += fuzz_walk(o, try_take, &c);
  /* Not an ext: nothing to take. */
  if (o->type != MSGPACK_OBJECT_EXT) {
    weft_buffer_t* buf = NULL;
    FUZZ_CHECK(weft_msg_take_buffer(m, o, &buf) == WEFT_EINVAL);
  }
}

static void on_message(weft_port_t* port, weft_msg_t* m) {
  take_all(m);
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
  weft_port_t *a, *b, *x[MAXX] = {0}, *y[MAXX] = {0};
  weft_buffer_t* bufs[MAXX] = {0};
  weft_shared_t* sh[MAXX] = {0};
  weft_msg_t *m = NULL, *r = NULL;
  int nbuf, nport, nsh, i, err;
  if (size < 1)
    return 0;
  nbuf = data[0] & 3;
  nport = (data[0] >> 2) & 3;
  nsh = (data[0] >> 4) & 3;
  FUZZ_CHECK(weft_channel_new(loop, &a, &b) == 0);
  FUZZ_CHECK(weft_msg_new(&m) == 0);
  for (i = 0; i < nbuf; i++) {
    FUZZ_CHECK(weft_buffer_new(&bufs[i], 16) == 0);
    FUZZ_CHECK(weft_msg_add_buffer(m, bufs[i]) == 0);
  }
  for (i = 0; i < nport; i++) {
    FUZZ_CHECK(weft_channel_new(loop, &x[i], &y[i]) == 0);
    FUZZ_CHECK(weft_msg_add_port(m, x[i]) == 0);
  }
  for (i = 0; i < nsh; i++) {
    FUZZ_CHECK(weft_shared_new(&sh[i], 64) == 0);
    FUZZ_CHECK(weft_msg_add_shared(m, sh[i]) == 0);
  }
  /* Throw away the placeholders the adds wrote: the payload is foreign. */
  m->len = 0;
  FUZZ_CHECK(weft_msg_append(m, data + 1, size - 1) == 0);
  err = weft_port_post_msg(a, &m);
  if (size == 1 || err == WEFT_ETOODEEP) {
    /* Nothing packed, or nested deeper than a receiver can decode: refused
     * at the sender. */
    FUZZ_CHECK((size == 1 ? err == WEFT_EDECODE : 1) && m != NULL);
    weft_msg_free(m); /* Nothing moved: the sender's objects stay. */
    for (i = 0; i < nbuf; i++)
      FUZZ_CHECK(!weft_buffer_detached(bufs[i]));
    goto out;
  }
  FUZZ_CHECK(err == 0 && m == NULL);
  if (data[0] & 0x40) {
    err = weft_port_receive(b, &r);
    FUZZ_CHECK(fuzz_decode_code_ok(err));
    if (err == 0)
      take_all(r);
    weft_msg_free(r);
  } else {
    delivered = errors = 0;
    FUZZ_CHECK(weft_port_on_messageerror(b, on_error) == 0);
    FUZZ_CHECK(weft_port_on_message(b, on_message) == 0);
    FUZZ_CHECK(weft_loop_run(loop) == 0);
    FUZZ_CHECK(delivered + errors == 1);
  }
out:
  for (i = 0; i < MAXX; i++) {
    weft_buffer_free(bufs[i]);
    weft_port_free(x[i]);
    weft_port_free(y[i]);
    if (sh[i] != NULL)
      weft_shared_release(sh[i]);
  }
  weft_port_free(a);
  weft_port_free(b);
  return 0;
}
