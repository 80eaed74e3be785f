/* msg.c - messages: one msgpack value packed once into the message's own
 * buffer, a transfer list, and the decoded view on the receiving side. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int msg_write(void* data, const char* buf, size_t len);

static void msg_init(weft_msg_t* m, int kind) {
  m->kind = (uint8_t)kind;
  m->state = WEFT__MSG_BUILDING;
  m->decoded = false;
  m->has_owned = false;
  m->scanned = false;
  m->backlog = false;
  m->routed = false;
  m->tag = 0;
  m->aux = 0;
  m->nxfer = 0;
  m->code = 0;
  m->capxfer = 0;
  m->len = 0;
  m->xfers = NULL;
  m->zone = NULL;
  m->data = m->inline_buf;
  m->cap = WEFT__MSG_INLINE;
}

weft_msg_t* weft__msg_alloc(int kind, size_t len) {
  weft_msg_t* m = weft__xalloc(sizeof(*m));
  if (m == NULL)
    return NULL;
  msg_init(m, kind);
  if (len > WEFT__MSG_INLINE) {
    m->data = weft__xalloc(len);
    if (m->data == NULL) {
      weft__xfree(m);
      return NULL;
    }
    m->cap = len;
  }
  return m;
}

weft_msg_t* weft__msg_alloc_on(weft_loop_t* loop, int kind, size_t len) {
  weft_msg_t** spare = weft__loop_spare_msg(loop);
  weft_msg_t* m = *spare;
  if (m == NULL || len > WEFT__MSG_INLINE)
    return weft__msg_alloc(kind, len);
  *spare = NULL;
  msg_init(m, kind);
  return m;
}

void weft__msg_start_packer(weft_msg_t* msg) {
  msgpack_packer_init(&msg->pk, msg, msg_write);
}

static int reserve(weft_msg_t* m, size_t extra) {
  size_t need, ncap;
  char* n;
  if (extra > SIZE_MAX - m->len)
    return WEFT_ENOMEM;
  need = m->len + extra;
  if (need <= m->cap)
    return 0;
  ncap = m->cap * 2;
  if (ncap < need)
    ncap = need;
  if (m->data == m->inline_buf) {
    n = weft__xalloc(ncap);
    if (n != NULL)
      memcpy(n, m->data, m->len);
  } else {
    n = weft__xrealloc(m->data, ncap);
  }
  if (n == NULL)
    return WEFT_ENOMEM;
  m->data = n;
  m->cap = ncap;
  return 0;
}

/* msgpack's writer: returns 0 or -1 as msgpack expects. */
static int msg_write(void* data, const char* buf, size_t len) {
  weft_msg_t* m = data;
  if (reserve(m, len) != 0)
    return -1;
  memcpy(m->data + m->len, buf, len);
  m->len += len;
  return 0;
}

int weft_msg_new(weft_msg_t** out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = weft__msg_alloc(WEFT__MSG_DATA, 0);
  if (*out == NULL)
    return WEFT_ENOMEM;
  weft__msg_start_packer(*out);
  return 0;
}

msgpack_packer* weft_msg_packer(weft_msg_t* msg) {
  if (msg == NULL || msg->state != WEFT__MSG_BUILDING)
    return NULL;
  return &msg->pk;
}

int weft_msg_append(weft_msg_t* msg, const void* bytes, size_t len) {
  if (msg == NULL || (bytes == NULL && len > 0) ||
      msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  if (len == 0)
    return 0;
  return msg_write(msg, bytes, len) == 0 ? 0 : WEFT_ENOMEM;
}

int weft__msg_add_xfer(weft_msg_t* m,
                       int kind,
                       void* obj,
                       const weft__xfer_ops_t* ops) {
  char idx[4];
  uint32_t i;
  /* A buffer or port can move only once (Node: DataCloneError); a shared
   * buffer may appear any number of times, as a SharedArrayBuffer may. */
  for (i = 0; kind != WEFT_EXT_SHARED && i < m->nxfer; i++) {
    if (m->xfers[i].obj == obj)
      return WEFT_EDATACLONE;
  }
  if (m->nxfer == m->capxfer) {
    uint32_t ncap = m->capxfer ? m->capxfer * 2 : 4;
    weft__xfer_t* n = weft__xrealloc(m->xfers, ncap * sizeof(*n));
    if (n == NULL)
      return WEFT_ENOMEM;
    m->xfers = n;
    m->capxfer = ncap;
  }
  i = m->nxfer;
  m->xfers[i].spare = NULL;
  if (kind == WEFT_EXT_BUFFER) {
    m->xfers[i].spare = weft__buffer_shell();
    if (m->xfers[i].spare == NULL)
      return WEFT_ENOMEM;
  }
  idx[0] = (char)(i >> 24);
  idx[1] = (char)(i >> 16);
  idx[2] = (char)(i >> 8);
  idx[3] = (char)i;
  if (msgpack_pack_ext(&m->pk, 4, (int8_t)kind) != 0 ||
      msgpack_pack_ext_body(&m->pk, idx, 4) != 0) {
    weft_buffer_free(m->xfers[i].spare);
    return WEFT_ENOMEM;
  }
  m->xfers[i].kind = kind;
  m->xfers[i].obj = obj;
  m->xfers[i].ops = ops;
  m->xfers[i].taken = false;
  m->nxfer++;
  return 0;
}

int weft_msg_add_buffer(weft_msg_t* msg, weft_buffer_t* buf) {
  if (msg == NULL || buf == NULL || msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  if (weft_buffer_detached(buf))
    return WEFT_EDETACHED;
  if (weft__buffer_untransferable(buf))
    return WEFT_EUNTRANSFERABLE;
  return weft__msg_add_xfer(msg, WEFT_EXT_BUFFER, buf, NULL);
}

int weft_msg_add_shared(weft_msg_t* msg, weft_shared_t* shared) {
  int err;
  if (msg == NULL || shared == NULL || msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  /* The message holds its own reference from now on, posted or not. */
  err = weft__msg_add_xfer(msg, WEFT_EXT_SHARED, weft_shared_retain(shared),
                           NULL);
  if (err != 0)
    weft_shared_release(shared);
  return err;
}

int weft__msg_check_transfers(weft_msg_t* msg) {
  uint32_t i;
  for (i = 0; i < msg->nxfer; i++) {
    weft__xfer_t* x = &msg->xfers[i];
    if (x->kind == WEFT_EXT_BUFFER) {
      if (weft_buffer_detached(x->obj))
        return WEFT_EDETACHED;
      if (weft__buffer_untransferable(x->obj))
        return WEFT_EUNTRANSFERABLE;
    } else if (x->ops != NULL) {
      int err = x->ops->check(x->obj);
      if (err != 0)
        return err;
    }
  }
  return 0;
}

void weft__msg_commit_transfers(weft_msg_t* msg) {
  uint32_t i;
  for (i = 0; i < msg->nxfer; i++) {
    weft__xfer_t* x = &msg->xfers[i];
    if (x->kind == WEFT_EXT_BUFFER) {
      /* The message now holds the bytes in a handle of its own; the
       * sender's handle is detached. */
      x->obj = weft__buffer_move(x->obj, x->spare);
      x->spare = NULL;
    } else if (x->ops != NULL) {
      x->obj = x->ops->commit(x->obj);
    }
  }
  msg->state = WEFT__MSG_QUEUED;
}

/* ---- walking msgpack bytes without decoding them ------------------------ */

static uint64_t be(const unsigned char* p, int n) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* Whether a msgpack value starting with byte `b` is a container (only
 * containers make msgpack_unpack() allocate or nest). */
static bool container_head(unsigned char b) {
  return (b >= 0x80 && b <= 0x9f) || (b >= 0xdc && b <= 0xdf);
}

bool weft__msgpack_container_head(unsigned char b) {
  return container_head(b);
}

size_t weft__msgpack_scalar_len(unsigned char b) {
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3))
    return b == 0xc1 ? 0 : 1; /* fixint, negative fixint, nil, bools */
  switch (b) {
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xca: case 0xce: case 0xd2: return 5;
    case 0xcb: case 0xcf: case 0xd3: return 9;
    default: return 0;
  }
}

int weft__msgpack_scan(const void* bytes, size_t len, size_t* need) {
  const unsigned char* p = bytes;
  const unsigned char* end;
  /* Items still to come in each open container; a map counts key and
   * value. Containers nest at most WEFT__MSG_MAX_DEPTH deep, so the stack
   * is fixed and the walk never allocates. */
  uint64_t left[WEFT__MSG_MAX_DEPTH];
  int depth = 0;
  /* Sum of left[]: each pending item takes at least one byte, so a
   * container that claims more than the bytes that remain is refused
   * before anything would be allocated for it. Hence pending <= len. */
  uint64_t pending = 0;
  uint64_t zone = 0;
  if (bytes == NULL || len == 0)
    return WEFT_EDECODE;
  end = p + len; /* Not before: NULL + 0 is undefined behaviour. */
  for (;;) {
    unsigned b;
    uint64_t skip = 0, n = 0;
    int head = 0; /* Bytes of length that follow the type byte. */
    int kind = 0; /* 1 array, 2 map. */
    if (p == end)
      return WEFT_EDECODE;
    b = *p++;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      /* fixint, nil, bool: the byte is all. */
    } else if (b <= 0x8f) {
      kind = 2;
      n = b & 0x0f;
    } else if (b <= 0x9f) {
      kind = 1;
      n = b & 0x0f;
    } else if (b <= 0xbf) {
      skip = b & 0x1f;
    } else {
      switch (b) {
        case 0xc4: case 0xd9: head = 1; break;     /* bin8, str8 */
        case 0xc5: case 0xda: head = 2; break;     /* bin16, str16 */
        case 0xc6: case 0xdb: head = 4; break;     /* bin32, str32 */
        case 0xc7: head = 1; skip = 1; break;      /* ext8: +type */
        case 0xc8: head = 2; skip = 1; break;      /* ext16 */
        case 0xc9: head = 4; skip = 1; break;      /* ext32 */
        case 0xca: skip = 4; break;                /* float32 */
        case 0xcb: skip = 8; break;                /* float64 */
        case 0xcc: case 0xd0: skip = 1; break;     /* (u)int8 */
        case 0xcd: case 0xd1: skip = 2; break;     /* (u)int16 */
        case 0xce: case 0xd2: skip = 4; break;     /* (u)int32 */
        case 0xcf: case 0xd3: skip = 8; break;     /* (u)int64 */
        case 0xd4: skip = 2; break;                /* fixext1 */
        case 0xd5: skip = 3; break;                /* fixext2 */
        case 0xd6: skip = 5; break;                /* fixext4 */
        case 0xd7: skip = 9; break;                /* fixext8 */
        case 0xd8: skip = 17; break;               /* fixext16 */
        case 0xdc: head = 2; kind = 1; break;      /* array16 */
        case 0xdd: head = 4; kind = 1; break;      /* array32 */
        case 0xde: head = 2; kind = 2; break;      /* map16 */
        case 0xdf: head = 4; kind = 2; break;      /* map32 */
        default: return WEFT_EDECODE;              /* 0xc1: never used. */
      }
      if (head > 0) {
        if (end - p < head)
          return WEFT_EDECODE;
        if (kind != 0)
          n = be(p, head);
        else
          skip += be(p, head);
        p += head;
      }
    }
    if (skip > (uint64_t)(end - p))
      return WEFT_EDECODE;
    p += skip;
    if (depth > 0) { /* This item is one of its container's. */
      left[depth - 1]--;
      pending--;
    }
    if (kind != 0) {
      /* msgpack-c refuses a container once 32 are open, even an empty
       * one (its unpacker reports that as out of memory). */
      if (depth == WEFT__MSG_MAX_DEPTH)
        return WEFT_ETOODEEP;
      zone += n * (kind == 1 ? sizeof(msgpack_object)
                             : sizeof(msgpack_object_kv));
      if (kind == 2)
        n *= 2;
      if (n > (uint64_t)(end - p) - pending)
        return WEFT_EDECODE; /* Claims more items than bytes remain. */
      if (n > 0) {
        left[depth++] = n;
        pending += n;
      }
    }
    while (depth > 0 && left[depth - 1] == 0)
      depth--;
    if (depth == 0)
      break;
  }
  if (p != end)
    return WEFT_EDECODE; /* More than one value. */
  if (need != NULL)
    *need = zone > SIZE_MAX ? SIZE_MAX : (size_t)zone;
  return 0;
}

int weft__msgpack_validate(const void* bytes, size_t len) {
  return weft__msgpack_scan(bytes, len, NULL);
}

int weft__msg_seal(weft_msg_t* msg) {
  size_t need;
  int err = weft__msg_seal_bytes(msg->data, msg->len, &need);
  if (err < 0)
    return err;
  /* Only a container was walked; a scalar (the common small message) is
   * left as it is. */
  if (msg->len > 0 && container_head((unsigned char)msg->data[0])) {
    msg->scanned = err == 0;
    msg->need = need;
  }
  return 0;
}

int weft__msg_seal_bytes(const void* bytes, size_t len, size_t* need) {
  const unsigned char* b = bytes;
  int err;
  *need = 0;
  if (len == 0 || !container_head(b[0]))
    return 0;
  err = weft__msgpack_scan(bytes, len, need);
  if (err == WEFT_ETOODEEP)
    return err;
  return err == 0 ? 0 : 1;
}

size_t weft__msg_bytes(const weft_msg_t* msg) {
  return sizeof(*msg) + (msg->data != msg->inline_buf ? msg->cap : 0);
}

/* What a decoded message holds on the receiver's heap: itself, its bytes
 * and what decoding allocated (`need`, known after the scan). */
static size_t msg_charge(const weft_msg_t* msg) {
  size_t n = weft__msg_bytes(msg);
  return msg->need > SIZE_MAX - n ? SIZE_MAX : n + msg->need;
}

static void msg_release_owned(weft__owned_t* o);

/* One element of a flat container at *at (before `end`), as
 * msgpack_unpack() makes it: an integer below 0 NEGATIVE_INTEGER, any other
 * POSITIVE_INTEGER; floats FLOAT32 or FLOAT64 by their width; str and bin
 * pointing into the bytes. False for a container, an ext, 0xc1 or a value
 * that runs past `end`. */
static bool flat_item(const unsigned char* end, const unsigned char** at,
                      msgpack_object* o) {
  const unsigned char* p = *at;
  unsigned h = *p;
  size_t n, w;
  int64_t v;
  if (h <= 0x7f || h >= 0xe0) {
    v = h <= 0x7f ? (int64_t)h : (int64_t)h - 256;
    p++;
    goto integer;
  }
  if (h >= 0xa0 && h <= 0xbf) { /* fixstr */
    n = h & 0x1f;
    w = 0;
    o->type = MSGPACK_OBJECT_STR;
    goto body;
  }
  switch (h) {
    case 0xc0: case 0xc2: case 0xc3:
      o->type = h == 0xc0 ? MSGPACK_OBJECT_NIL : MSGPACK_OBJECT_BOOLEAN;
      if (h != 0xc0)
        o->via.boolean = h == 0xc3;
      *at = p + 1;
      return true;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      w = (size_t)1 << (h - 0xcc);
      if ((size_t)(end - p) < 1 + w)
        return false;
      o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
      o->via.u64 = be(p + 1, (int)w);
      *at = p + 1 + w;
      return true;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
      w = (size_t)1 << (h - 0xd0);
      if ((size_t)(end - p) < 1 + w)
        return false;
      v = w == 1   ? (p[1] <= 0x7f ? (int64_t)p[1] : (int64_t)p[1] - 256)
          : w == 2 ? (int16_t)be(p + 1, 2)
          : w == 4 ? (int32_t)be(p + 1, 4)
                   : (int64_t)be(p + 1, 8);
      p += 1 + w;
      goto integer;
    case 0xca: case 0xcb: {
      w = h == 0xca ? 4 : 8;
      if ((size_t)(end - p) < 1 + w)
        return false;
      if (w == 4) {
        uint32_t u = (uint32_t)be(p + 1, 4);
        float f;
        memcpy(&f, &u, sizeof(f));
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = (double)f;
      } else {
        uint64_t u = be(p + 1, 8);
        double d;
        memcpy(&d, &u, sizeof(d));
        o->type = MSGPACK_OBJECT_FLOAT64;
        o->via.f64 = d;
      }
      *at = p + 1 + w;
      return true;
    }
    case 0xd9: case 0xda: case 0xdb:
      w = (size_t)1 << (h - 0xd9);
      o->type = MSGPACK_OBJECT_STR;
      goto sized;
    case 0xc4: case 0xc5: case 0xc6:
      w = (size_t)1 << (h - 0xc4);
      o->type = MSGPACK_OBJECT_BIN;
      goto sized;
    default:
      return false;
  }
sized:
  if ((size_t)(end - p) < 1 + w)
    return false;
  n = (size_t)be(p + 1, (int)w);
body:
  p += 1 + w;
  if ((size_t)(end - p) < n)
    return false;
  /* str and bin share their layout: a size and a pointer. */
  if (o->type == MSGPACK_OBJECT_STR) {
    o->via.str.size = (uint32_t)n;
    o->via.str.ptr = (const char*)p;
  } else {
    o->via.bin.size = (uint32_t)n;
    o->via.bin.ptr = (const char*)p;
  }
  *at = p + n;
  return true;
integer:
  if (v < 0) {
    o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o->via.i64 = v;
  } else {
    o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o->via.u64 = (uint64_t)v;
  }
  *at = p;
  return true;
}

int weft__msgpack_decode_flat(const void* bytes, size_t len,
                              msgpack_zone* zone, msgpack_object* out) {
  /* Read onto the stack first, so that the zone gives nothing to a value
   * that is not flat after all (the receiver was charged for what
   * msgpack_unpack() takes, no more). */
  msgpack_object items[2 * 15];
  const unsigned char* b = bytes;
  const unsigned char *end, *p;
  size_t n, i;
  void* to;
  bool map;
  if (b == NULL || len == 0 || !((b[0] >= 0x80 && b[0] <= 0x8f) ||
                                 (b[0] >= 0x90 && b[0] <= 0x9f)))
    return 1; /* Not a fixmap or a fixarray. */
  end = b + len; /* Not before: NULL + 0 is undefined behaviour. */
  p = b + 1;
  map = b[0] <= 0x8f;
  n = b[0] & 0x0f;
  if (n == 0)
    return 1;
  for (i = 0; i < (map ? 2 * n : n); i++)
    if (p == end || !flat_item(end, &p, &items[i]))
      return 1;
  if (p != end)
    return 1;
  if (map) {
    msgpack_object_kv* kv =
        msgpack_zone_malloc(zone, n * sizeof(msgpack_object_kv));
    if (kv == NULL)
      return WEFT_ENOMEM;
    for (i = 0; i < n; i++) {
      kv[i].key = items[2 * i];
      kv[i].val = items[2 * i + 1];
    }
    out->type = MSGPACK_OBJECT_MAP;
    out->via.map.size = (uint32_t)n;
    out->via.map.ptr = kv;
    return 0;
  }
  to = msgpack_zone_malloc(zone, n * sizeof(msgpack_object));
  if (to == NULL)
    return WEFT_ENOMEM;
  memcpy(to, items, n * sizeof(msgpack_object));
  out->type = MSGPACK_OBJECT_ARRAY;
  out->via.array.size = (uint32_t)n;
  out->via.array.ptr = to;
  return 0;
}

/* A scalar of fixed size (an integer, a float, nil or a bool) decoded by
 * flat_item() instead of msgpack_unpack(), which costs more than the rest
 * of a small message's delivery (its parser's set-up): the same object it
 * makes. False for any other value and for bytes of the wrong length. */
static bool decode_scalar(weft_msg_t* msg) {
  const unsigned char* b = (const unsigned char*)msg->data;
  const unsigned char* p = b;
  return weft__msgpack_scalar_len(b[0]) == msg->len &&
         flat_item(b + msg->len, &p, &msg->obj);
}

int weft__msg_decode(weft_msg_t* msg, msgpack_zone* zone) {
  size_t off = 0;
  int r;
  if (msg->len == 0)
    return WEFT_EDECODE;
  if (!msg->scanned) {
    msg->need = 0;
    /* Not walked at the sender (broadcast, or bytes that were not one
     * value): walk now, before msgpack allocates what headers claim. A
     * scalar allocates nothing and needs no walk. */
    if (container_head((unsigned char)msg->data[0])) {
      r = weft__msgpack_scan(msg->data, msg->len, &msg->need);
      if (r != 0)
        return r;
    }
    msg->scanned = true;
  }
  /* Charge the receiver before anything is allocated: on a limited heap
   * always (a breach ends the worker with WEFT_EHEAPLIMIT), and a message
   * with its own zone (received) on any worker heap, which frees it at the
   * worker's end. Unlimited deliveries skip the list (the fast path). */
  if (!msg->has_owned && (zone == NULL || weft__heap_limit() != 0)) {
    int err = weft__heap_adopt(&msg->owned, msg_charge(msg));
    if (err != 0)
      return err;
    msg->owned.release = msg_release_owned;
    msg->has_owned = msg->owned.heap != NULL;
  }
  if (decode_scalar(msg)) { /* Allocates nothing: no zone of its own. */
    msg->decoded = true;
    return 0;
  }
  if (zone == NULL) {
    msg->zone = WEFT__FAILABLE(msgpack_zone_new(WEFT__MSG_ZONE_CHUNK));
    if (msg->zone == NULL)
      return WEFT_ENOMEM;
    zone = msg->zone;
  }
  /* An array or map of up to 15 scalars, strings or bins: without
   * msgpack_unpack(), whose set-up costs more than such a value's walk
   * (bench/README.md, 2026-12-02 14:xx: ping-pong of [1, "ping"]). */
  r = weft__msgpack_decode_flat(msg->data, msg->len, zone, &msg->obj);
  if (r <= 0) {
    if (r != 0)
      return r;
    msg->decoded = true;
    return 0;
  }
  r = msgpack_unpack(msg->data, msg->len, &off, zone, &msg->obj);
  /* msgpack's unpack answers with positive success codes; weft turns
   * anything but "exactly one value" into WEFT_EDECODE. */
  if (r == MSGPACK_UNPACK_NOMEM_ERROR)
    return WEFT_ENOMEM;
  if (r != MSGPACK_UNPACK_SUCCESS || off != msg->len)
    return WEFT_EDECODE;
  msg->decoded = true;
  return 0;
}

static void msg_release_owned(weft__owned_t* o) {
  weft_msg_t* m = weft__container_of(o, weft_msg_t, owned);
  weft_msg_free(m);
}

void weft_msg_free(weft_msg_t* msg) {
  uint32_t i;
  if (msg == NULL)
    return;
  /* Inside its message callback the message is still weft's, which frees
   * it when the callback returns: freeing it here too would free it
   * twice. */
  if (msg->state == WEFT__MSG_DELIVERING)
    return;
  if (msg->routed) {
    /* Settle the call first (see weft__route_t). */
    msg->routed = false;
    msg->route.drop(msg);
  }
  if (msg->has_owned)
    weft__heap_disown(&msg->owned);
  for (i = 0; i < msg->nxfer; i++) {
    weft__xfer_t* x = &msg->xfers[i];
    if (x->kind == WEFT_EXT_SHARED) {
      weft_shared_release(x->obj); /* The message's own reference. */
      continue;
    }
    if (x->spare != NULL)
      weft_buffer_free(x->spare);
    if (x->taken || msg->state == WEFT__MSG_BUILDING)
      continue; /* Not committed: the objects are still the sender's. */
    if (x->kind == WEFT_EXT_BUFFER)
      weft_buffer_free(x->obj);
    else if (x->ops != NULL)
      x->ops->drop(x->obj);
  }
  weft__xfree(msg->xfers);
  if (msg->zone != NULL)
    msgpack_zone_free(msg->zone);
  if (msg->data != msg->inline_buf)
    weft__xfree(msg->data);
  weft__xfree(msg);
}

const msgpack_object* weft_msg_object(weft_msg_t* msg) {
  /* Every message a receiver sees was decoded before it was handed out
   * (delivered, kept or received). */
  if (msg == NULL || !msg->decoded)
    return NULL;
  return &msg->obj;
}

const char* weft_msg_data(const weft_msg_t* msg, size_t* len) {
  if (msg == NULL) {
    if (len != NULL)
      *len = 0;
    return NULL;
  }
  if (len != NULL)
    *len = msg->len;
  return msg->data;
}

/* The message this thread is delivering to a callback, and the one the
 * callback kept (one delivery at a time per thread: a callback cannot run
 * its loop again). */
static _Thread_local const weft_msg_t* delivering;
static _Thread_local const weft_msg_t* kept_in_callback;

int weft__msg_own(weft_msg_t* msg, msgpack_zone* zone, weft_msg_t** out) {
  int err = weft__msg_decode(msg, zone);
  if (err != 0) {
    weft_msg_free(msg);
    return err;
  }
  msg->state = WEFT__MSG_OWNED;
  *out = msg;
  return 0;
}

void weft__msg_deliver(weft_msg_t* msg) {
  msg->state = WEFT__MSG_DELIVERING;
  delivering = msg;
  kept_in_callback = NULL;
}

bool weft__msg_delivered_kept(weft_msg_t* msg) {
  bool kept = kept_in_callback == msg;
  delivering = NULL;
  kept_in_callback = NULL;
  if (!kept)
    msg->state = WEFT__MSG_DELIVERED; /* weft's: weft_msg_free() frees. */
  return kept;
}

int weft__msg_hand_out(weft_msg_t* msg, weft_loop_t* loop) {
  msgpack_zone* zone = weft__loop_zone(loop);
  int err = weft__msg_decode(msg, zone);
  if (err != 0) {
    weft_msg_free(msg);
    msgpack_zone_clear(zone);
    return err;
  }
  weft__msg_deliver(msg); /* weft_msg_keep() may keep it. */
  return 0;
}

void weft__msg_take_back(weft_msg_t* msg, weft_loop_t* loop) {
  /* Kept: the callback owns it and may have freed it already. A keep
   * takes the loop's zone with the message: clear the loop's zone of now. */
  if (!weft__msg_delivered_kept(msg)) {
    weft_msg_t** spare = weft__loop_spare_msg(loop);
    /* Nothing of its own to release: the loop keeps it for the next
     * small message it makes (weft__msg_alloc_on). */
    if (*spare == NULL && !msg->routed && !msg->has_owned &&
        msg->capxfer == 0 && msg->zone == NULL &&
        msg->data == msg->inline_buf)
      *spare = msg;
    else
      weft_msg_free(msg);
    msgpack_zone_clear(weft__loop_zone(loop));
  }
}

int weft_msg_keep(weft_msg_t* msg) {
  weft_loop_t* loop = weft_loop_current();
  int err;
  bool adopted = false;
  /* Only the thread delivering it may keep it: the message is decoded
   * into that loop's zone, and another thread reading its state would
   * race with the delivery. */
  if (msg == NULL || msg != delivering || loop == NULL ||
      msg->state != WEFT__MSG_DELIVERING)
    return WEFT_EINVAL;
  /* A limited heap was charged at decode already. */
  if (!msg->has_owned) {
    err = weft__heap_adopt(&msg->owned, msg_charge(msg));
    if (err != 0)
      return err;
    msg->owned.release = msg_release_owned;
    msg->has_owned = msg->owned.heap != NULL;
    adopted = true;
  }
  /* A delivered message was decoded into the loop's zone: the message
   * takes that zone with it and the loop starts a fresh one. One kept
   * before and handed out again (an actor's ask reply: actors/ask.c) has
   * its zone already. */
  if (msg->zone == NULL)
    msg->zone = weft__loop_take_zone(loop);
  if (msg->zone == NULL) {
    if (adopted) {
      weft__heap_disown(&msg->owned);
      msg->has_owned = false;
    }
    return WEFT_ENOMEM;
  }
  msg->state = WEFT__MSG_KEPT;
  kept_in_callback = msg;
  return 0;
}

int weft_msg_ext_kind(const msgpack_object* obj) {
  if (obj == NULL || obj->type != MSGPACK_OBJECT_EXT || obj->via.ext.size != 4)
    return 0;
  switch (obj->via.ext.type) {
    case WEFT_EXT_BUFFER:
    case WEFT_EXT_PORT:
    case WEFT_EXT_SHARED:
      return obj->via.ext.type;
    default:
      return 0;
  }
}

weft__xfer_t* weft__msg_lookup(weft_msg_t* msg,
                               const msgpack_object* obj,
                               int kind) {
  const unsigned char* p;
  uint32_t i;
  if (msg == NULL || weft_msg_ext_kind(obj) != kind ||
      msg->state == WEFT__MSG_BUILDING || msg->state == WEFT__MSG_QUEUED ||
      msg->state == WEFT__MSG_DELIVERED)
    return NULL;
  p = (const unsigned char*)obj->via.ext.ptr;
  /* A placeholder of this message points into its bytes (msgpack decodes
   * ext bodies in place): one read from another message or made by hand
   * would name another entry of this list. */
  if (p == NULL || p < (const unsigned char*)msg->data ||
      msg->len < 4 ||
      p > (const unsigned char*)msg->data + (msg->len - 4))
    return NULL;
  i = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
      p[3];
  if (i >= msg->nxfer || msg->xfers[i].kind != kind)
    return NULL;
  return &msg->xfers[i];
}

int weft_msg_take_buffer(weft_msg_t* msg,
                         const msgpack_object* obj,
                         weft_buffer_t** out) {
  weft__xfer_t* x;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  x = weft__msg_lookup(msg, obj, WEFT_EXT_BUFFER);
  if (x == NULL)
    return WEFT_EINVAL;
  if (x->taken || x->obj == NULL)
    return WEFT_EDETACHED;
  err = weft__buffer_adopt(x->obj);
  if (err != 0)
    return err;
  x->taken = true;
  *out = x->obj;
  return 0;
}

int weft_msg_take_shared(weft_msg_t* msg,
                         const msgpack_object* obj,
                         weft_shared_t** out) {
  weft__xfer_t* x;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  x = weft__msg_lookup(msg, obj, WEFT_EXT_SHARED);
  if (x == NULL)
    return WEFT_EINVAL;
  *out = weft_shared_retain(x->obj);
  return 0;
}
