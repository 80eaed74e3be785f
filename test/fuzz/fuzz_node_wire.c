/* fuzz_node_wire.c - what a node reads from the network (lib/wire.c): byte
 * 0 picks the reader, the rest is the foreign input.
 *   0  a message payload: accepted exactly when it is one msgpack value
 *      (weft__msgpack_validate agrees), the copy equal to the input, and it
 *      decodes, every byte of the value inside the message
 *   1  a heartbeat: accepted only in its one shape, and written back the
 *      same (weft__wire_beat of what was read gives the input)
 *   2  a reply subject: "p." then the id; an accepted id prints back as the
 *      digits that were read
 *   3  an error header: a known name gives its negative code, anything
 *      else WEFT_EDECODE
 *   4  a name: accepted names are 1 to 64 of [A-Za-z0-9_-]
 *   5  a Weft-Batch payload (transport/nats.h), the count its first byte:
 *      the posts it yields, written back as frames, are the input's
 *      prefix, and it is accepted exactly when they are the whole input
 *      and as many as the count */
#include <inttypes.h>

#include "fuzz_common.h"
#include "frame.h"
#include "nats.h"

typedef struct {
  unsigned char* out;
  size_t len;
  uint64_t n;
} batch_back_t;

static void batch_item(void* ctx, const void* p, size_t len) {
  batch_back_t* b = ctx;
  weft__frame_header(b->out + b->len, 1, (uint32_t)len);
  memcpy(b->out + b->len + WEFT__FRAME_HEADER, p, len);
  b->len += WEFT__FRAME_HEADER + len;
  b->n++;
}

/* The input as a C string (NUL-terminated copy). */
static char* cstr(const uint8_t* data, size_t size) {
  char* s = malloc(size + 1);
  FUZZ_CHECK(s != NULL);
  if (size > 0)
    memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t mode;
  if (size == 0)
    return 0;
  mode = data[0] % 6;
  data++;
  size--;
  if (mode == 0) {
    weft_msg_t* m = NULL;
    int err = weft__wire_message(data, size, &m);
    FUZZ_CHECK(err == 0 || err == WEFT_EDECODE);
    FUZZ_CHECK((err == 0) ==
               (size > 0 && weft__msgpack_validate(data, size) == 0));
    if (err == 0) {
      FUZZ_CHECK(m->len == size && memcmp(m->data, data, size) == 0);
      m->state = WEFT__MSG_OWNED;
      FUZZ_CHECK(weft__msg_decode(m, NULL) == 0);
      fuzz_sink += fuzz_walk(weft_msg_object(m), NULL, NULL);
      weft_msg_free(m);
    } else {
      FUZZ_CHECK(m == NULL);
    }
  } else if (mode == 1) {
    weft__wire_beat_t beat;
    if (weft__wire_read_beat(data, size, &beat) == 0) {
      unsigned char back[WEFT__WIRE_BEAT_LEN];
      weft__wire_beat(&beat, back);
      FUZZ_CHECK(size == sizeof(back) && memcmp(back, data, size) == 0);
    }
  } else if (mode == 2) {
    char* s = cstr(data, size);
    char* subject = malloc(size + 3);
    uint64_t id = 0;
    FUZZ_CHECK(subject != NULL);
    memcpy(subject, "p.", 2);
    memcpy(subject + 2, s, size + 1);
    if (weft__wire_read_id(subject, 2, &id) == 0) {
      char back[32];
      snprintf(back, sizeof(back), "%" PRIu64, id);
      /* Leading zeros read as the same number. */
      const char* digits = s;
      while (digits[0] == '0' && digits[1] != '\0')
        digits++;
      FUZZ_CHECK(strcmp(back, digits) == 0);
    }
    free(subject);
    free(s);
  } else if (mode == 3) {
    char* s = cstr(data, size);
    int code = weft__wire_read_error(s);
    FUZZ_CHECK(code < 0);
    if (code != WEFT_EDECODE)
      FUZZ_CHECK(strcmp(weft_err_name(code), s) == 0 ||
                 weft_err_code(weft_err_name(code)) == code);
    free(s);
  } else if (mode == 5) {
    batch_back_t b = {malloc(size + 1), 0, 0};
    uint64_t count;
    int err;
    FUZZ_CHECK(b.out != NULL);
    if (size == 0) {
      free(b.out);
      return 0;
    }
    count = data[0];
    err = weft__nats_batch_split(data + 1, size - 1, count, batch_item, &b);
    FUZZ_CHECK(err == 0 || err == WEFT_EDECODE);
    FUZZ_CHECK(b.len <= size - 1 && memcmp(b.out, data + 1, b.len) == 0);
    FUZZ_CHECK(b.n <= count);
    FUZZ_CHECK((err == 0) == (b.len == size - 1 && b.n == count));
    free(b.out);
  } else if (mode == 4) {
    char* s = cstr(data, size);
    bool ok = weft__wire_name_ok(s);
    size_t n = strlen(s), i;
    bool want = n >= 1 && n <= WEFT__WIRE_NAME_MAX;
    for (i = 0; i < n && want; i++) {
      char c = s[i];
      want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    FUZZ_CHECK(ok == want);
    free(s);
  }
  return 0;
}
