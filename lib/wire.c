/* wire.c - the bytes nodes exchange over NATS (docs/node.md, "The wire"),
 * read and written in one place so that every byte from the network goes
 * through functions a fuzzer can reach (test/fuzz/fuzz_node_wire.c):
 * names as subject tokens, messages, heartbeats, reply ids and error
 * names. Nothing here trusts its input. */
#include <string.h>

#include "internal.h"

bool weft__wire_name_ok(const char* s) {
  size_t n = 0;
  if (s == NULL)
    return false;
  for (; s[n] != '\0'; n++) {
    char c = s[n];
    if (n >= WEFT__WIRE_NAME_MAX ||
        !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  }
  return n > 0;
}

int weft__wire_message(const void* data, size_t len, weft_msg_t** out) {
  weft_msg_t* m;
  *out = NULL;
  if (data == NULL || len == 0 || weft__msgpack_validate(data, len) != 0)
    return WEFT_EDECODE;
  m = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (m == NULL)
    return WEFT_ENOMEM;
  memcpy(m->data, data, len);
  m->len = len;
  *out = m;
  return 0;
}

/* [instance, leaving]: fixarray of 2, uint64 in its 8-byte form, 0 or 1. */
void weft__wire_beat(uint64_t instance, bool leaving,
                     unsigned char out[WEFT__WIRE_BEAT_LEN]) {
  int i;
  out[0] = 0x92;
  out[1] = 0xcf;
  for (i = 0; i < 8; i++)
    out[2 + i] = (unsigned char)(instance >> (56 - 8 * i));
  out[10] = leaving ? 1 : 0;
}

int weft__wire_read_beat(const void* data, size_t len, uint64_t* instance,
                         bool* leaving) {
  const unsigned char* b = data;
  uint64_t v = 0;
  int i;
  if (b == NULL || len != WEFT__WIRE_BEAT_LEN || b[0] != 0x92 ||
      b[1] != 0xcf || b[10] > 1)
    return WEFT_EDECODE;
  for (i = 0; i < 8; i++)
    v = v << 8 | b[2 + i];
  *instance = v;
  *leaving = b[10] == 1;
  return 0;
}

int weft__wire_read_id(const char* subject, size_t prefix_len,
                       uint64_t* id) {
  const char* p;
  uint64_t v = 0;
  size_t n = 0;
  if (subject == NULL || strlen(subject) <= prefix_len)
    return WEFT_EDECODE;
  /* Decimal digits only, no sign, no spaces, at most 20 of them and no
   * overflow (strtoull would take " +12" and wrap "99...9"). */
  for (p = subject + prefix_len; *p != '\0'; p++, n++) {
    uint64_t d = (uint64_t)(*p - '0');
    if (*p < '0' || *p > '9' || n >= 20 || v > (UINT64_MAX - d) / 10)
      return WEFT_EDECODE;
    v = v * 10 + d;
  }
  *id = v;
  return 0;
}

int weft__wire_read_error(const char* name) {
  int code = weft_err_code(name);
  return code < 0 ? code : WEFT_EDECODE;
}
