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

static void put_u64(unsigned char* b, uint64_t v) {
  int i;
  b[0] = 0xcf;
  for (i = 0; i < 8; i++)
    b[1 + i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get_u64(const unsigned char* b) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < 8; i++)
    v = v << 8 | b[1 + i];
  return v;
}

/* [instance, leaving, slow]: fixarray of 3, uint64 8-byte form, 0 or 1,
 * uint64 8-byte form. */
void weft__wire_beat(const weft__wire_beat_t* beat,
                     unsigned char out[WEFT__WIRE_BEAT_LEN]) {
  out[0] = 0x93;
  put_u64(out + 1, beat->instance);
  out[10] = beat->leaving ? 1 : 0;
  put_u64(out + 11, beat->slow);
}

int weft__wire_read_beat(const void* data, size_t len, weft__wire_beat_t* out) {
  const unsigned char* b = data;
  if (b == NULL || len != WEFT__WIRE_BEAT_LEN || b[0] != 0x93 ||
      b[1] != 0xcf || b[10] > 1 || b[11] != 0xcf)
    return WEFT_EDECODE;
  out->instance = get_u64(b + 1);
  out->leaving = b[10] == 1;
  out->slow = get_u64(b + 11);
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

/* The 4-byte index a weft ext placeholder carries (msg.c writes it big
 * endian), or -1. */
static int64_t placeholder_index(const msgpack_object* o) {
  const unsigned char* p = (const unsigned char*)o->via.ext.ptr;
  if (o->via.ext.size != 4 || p == NULL)
    return -1;
  return (int64_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                   ((uint32_t)p[2] << 8) | p[3]);
}

/* One value of the walk: a container's header, or a whole scalar / ext. */
static int flatten_one(msgpack_packer* pk, const msgpack_object* o,
                       const weft_msg_t* m) {
  int kind, err;
  int64_t x;
  void* data = NULL;
  size_t size = 0;
  if (o->type == MSGPACK_OBJECT_ARRAY)
    return msgpack_pack_array(pk, o->via.array.size) == 0 ? 0 : WEFT_ENOMEM;
  if (o->type == MSGPACK_OBJECT_MAP)
    return msgpack_pack_map(pk, o->via.map.size) == 0 ? 0 : WEFT_ENOMEM;
  kind = o->type == MSGPACK_OBJECT_EXT ? weft_msg_ext_kind(o) : 0;
  if (kind == WEFT_EXT_PORT || kind == WEFT_EXT_SHARED)
    return WEFT_ENOTLOCAL;
  if (kind != WEFT_EXT_BUFFER) /* Scalars, and exts of the user's own. */
    return msgpack_pack_object(pk, *o) == 0 ? 0 : WEFT_ENOMEM;
  x = placeholder_index(o);
  if (x < 0 || (uint64_t)x >= m->nxfer || m->xfers[x].kind != WEFT_EXT_BUFFER)
    return WEFT_EDATACLONE;
  err = weft_buffer_data(m->xfers[x].obj, &data, &size);
  if (err != 0)
    return err;
  if (msgpack_pack_bin(pk, size) != 0 ||
      msgpack_pack_bin_body(pk, data, size) != 0)
    return WEFT_ENOMEM;
  return 0;
}

/* A container being walked: its items (a map's as key, value, key, ...). */
typedef struct {
  const msgpack_object* o;
  uint32_t i, n;
} frame_t;

static const msgpack_object* frame_item(const frame_t* f, uint32_t i) {
  if (f->o->type == MSGPACK_OBJECT_ARRAY)
    return &f->o->via.array.ptr[i];
  return i % 2 == 0 ? &f->o->via.map.ptr[i / 2].key
                    : &f->o->via.map.ptr[i / 2].val;
}

/* Pre-order, with a stack as deep as a message may nest (no recursion). */
static int flatten(msgpack_packer* pk, const msgpack_object* root,
                   const weft_msg_t* m) {
  frame_t stack[WEFT__MSG_MAX_DEPTH + 1];
  int top = 0, err;
  const msgpack_object* o = root;
  while (o != NULL) {
    uint32_t n = o->type == MSGPACK_OBJECT_ARRAY ? o->via.array.size
                 : o->type == MSGPACK_OBJECT_MAP ? 2 * o->via.map.size
                                                 : 0;
    err = flatten_one(pk, o, m);
    if (err != 0)
      return err;
    if (n > 0) {
      if (top == WEFT__MSG_MAX_DEPTH + 1)
        return WEFT_ETOODEEP;
      stack[top].o = o;
      stack[top].i = 0;
      stack[top].n = n;
      top++;
    }
    o = NULL;
    while (top > 0 && o == NULL) {
      frame_t* f = &stack[top - 1];
      if (f->i < f->n)
        o = frame_item(f, f->i++);
      else
        top--;
    }
  }
  return 0;
}

int weft__wire_flatten(const weft_msg_t* m, msgpack_sbuffer* out) {
  msgpack_zone zone;
  msgpack_object o;
  msgpack_packer pk;
  size_t off = 0;
  int err;
  if (!msgpack_zone_init(&zone, 1024))
    return WEFT_ENOMEM;
  if (msgpack_unpack(m->data, m->len, &off, &zone, &o) !=
          MSGPACK_UNPACK_SUCCESS ||
      off != m->len) {
    msgpack_zone_destroy(&zone);
    return WEFT_EDECODE;
  }
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  err = flatten(&pk, &o, m);
  msgpack_zone_destroy(&zone);
  return err;
}
