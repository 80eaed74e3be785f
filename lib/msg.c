/* msg.c - messages: one msgpack value packed once into the message's own
 * buffer, a transfer list, and the decoded view on the receiving side. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int msg_write(void* data, const char* buf, size_t len);

weft_msg_t* weft__msg_alloc(int kind, size_t len) {
  weft_msg_t* m = weft__xalloc(sizeof(*m));
  if (m == NULL)
    return NULL;
  m->kind = (uint8_t)kind;
  m->state = WEFT__MSG_BUILDING;
  m->decoded = false;
  m->has_owned = false;
  m->nxfer = 0;
  m->code = 0;
  m->capxfer = 0;
  m->len = 0;
  m->xfers = NULL;
  m->zone = NULL;
  if (len <= WEFT__MSG_INLINE) {
    m->data = m->inline_buf;
    m->cap = WEFT__MSG_INLINE;
  } else {
    m->data = weft__xalloc(len);
    if (m->data == NULL) {
      weft__xfree(m);
      return NULL;
    }
    m->cap = len;
  }
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

static int add_xfer(weft_msg_t* m, int kind, void* obj) {
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
  return add_xfer(msg, WEFT_EXT_BUFFER, buf);
}

int weft_msg_add_port(weft_msg_t* msg, weft_port_t* port) {
  int err;
  if (msg == NULL || port == NULL || msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  err = weft__port_transferable(port);
  if (err != 0)
    return err;
  return add_xfer(msg, WEFT_EXT_PORT, port);
}

int weft_msg_add_shared(weft_msg_t* msg, weft_shared_t* shared) {
  int err;
  if (msg == NULL || shared == NULL || msg->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  /* The message holds its own reference from now on, posted or not. */
  err = add_xfer(msg, WEFT_EXT_SHARED, weft_shared_ref(shared));
  if (err != 0)
    weft_shared_unref(shared);
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
    } else if (x->kind == WEFT_EXT_PORT) {
      int err = weft__port_transferable(x->obj);
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
    } else if (x->kind == WEFT_EXT_PORT) {
      x->obj = weft__port_detach(x->obj);
    }
  }
  msg->state = WEFT__MSG_QUEUED;
}

/* Whether `bytes` can be one msgpack value: it is scanned without
 * allocating, and every array or map must claim no more elements than
 * there are bytes left (each takes one at least). msgpack's unpacker
 * allocates a container's elements when it reads the header, so without
 * this a 5-byte message (an array32 of 2^32 - 1) made the receiver
 * allocate 64 GiB (found by test/fuzz/fuzz_msg_decode); with it a value
 * decodes into at most one msgpack_object per payload byte. */
/* The msgpack types from 0xc4 to 0xdf (0xc1 is never used): how many bytes
 * of length or count follow the type byte, how many fixed bytes come next,
 * and whether that field counts bytes (0), elements (1) or pairs (2). */
static const struct {
  unsigned char width, skip, per;
} msgpack_headers[28] = {
    {1, 0, 0}, {2, 0, 0}, {4, 0, 0},                        /* bin */
    {1, 1, 0}, {2, 1, 0}, {4, 1, 0},                        /* ext */
    {0, 4, 0}, {0, 8, 0},                                   /* float */
    {0, 1, 0}, {0, 2, 0}, {0, 4, 0}, {0, 8, 0},             /* uint */
    {0, 1, 0}, {0, 2, 0}, {0, 4, 0}, {0, 8, 0},             /* int */
    {0, 2, 0}, {0, 3, 0}, {0, 5, 0}, {0, 9, 0}, {0, 17, 0}, /* fixext */
    {1, 0, 0}, {2, 0, 0}, {4, 0, 0},                        /* str */
    {2, 0, 1}, {4, 0, 1}, {2, 0, 2}, {4, 0, 2},             /* array, map */
};

/* Whether `bytes` can be one msgpack value: it is scanned without
 * allocating, and every array or map must claim no more elements than
 * there are bytes left (each takes one at least). msgpack's unpacker
 * allocates a container's elements when it reads the header, so without
 * this a 5-byte message (an array32 of 2^32 - 1) made the receiver
 * allocate 64 GiB (found by test/fuzz/fuzz_msg_decode); with it a value
 * decodes into at most one msgpack_object per payload byte. */
static bool msgpack_plausible(const unsigned char* p, size_t len) {
  size_t pos = 0, pending = 1;
  while (pending > 0) {
    size_t skip = 0, n = 0, width = 0, per = 0, v = 0, i;
    unsigned b;
    if (pos >= len)
      return false;
    b = p[pos++];
    pending--;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      /* fixint, nil, bool: one byte. */
    } else if (b <= 0x8f) {
      n = 2 * (size_t)(b & 0x0f); /* fixmap */
    } else if (b <= 0x9f) {
      n = b & 0x0f; /* fixarray */
    } else if (b <= 0xbf) {
      skip = b & 0x1f; /* fixstr */
    } else if (b == 0xc1) {
      return false;
    } else {
      width = msgpack_headers[b - 0xc4].width;
      skip = msgpack_headers[b - 0xc4].skip;
      per = msgpack_headers[b - 0xc4].per;
    }
    if (width > len - pos)
      return false;
    for (i = 0; i < width; i++)
      v = (v << 8) | p[pos++];
    if (per != 0)
      n = per * v;
    else
      skip += v;
    if (skip > len - pos)
      return false;
    pos += skip;
    if (n > len - pos || pending > len - pos - n)
      return false;
    pending += n;
  }
  return true;
}

int weft__msgpack_validate(const void* bytes, size_t len) {
  /* A scratch zone on the stack's first chunk keeps small checks free of
   * allocation beyond msgpack's own chunk. */
  msgpack_zone zone;
  msgpack_object obj;
  size_t off = 0;
  int r;
  if (!msgpack_plausible(bytes, len))
    return WEFT_EDECODE;
  if (WEFT__ALLOC_FAILS() || !msgpack_zone_init(&zone, 256))
    return WEFT_ENOMEM;
  r = msgpack_unpack(bytes, len, &off, &zone, &obj);
  msgpack_zone_destroy(&zone);
  if (r == MSGPACK_UNPACK_NOMEM_ERROR)
    return WEFT_ENOMEM;
  return (r == MSGPACK_UNPACK_SUCCESS && off == len) ? 0 : WEFT_EDECODE;
}

int weft__msg_decode(weft_msg_t* msg, msgpack_zone* zone) {
  size_t off = 0;
  int r;
  if (!msgpack_plausible((const unsigned char*)msg->data, msg->len))
    return WEFT_EDECODE;
  if (zone == NULL) {
    msg->zone = WEFT__FAILABLE(msgpack_zone_new(WEFT__MSG_ZONE_CHUNK));
    if (msg->zone == NULL)
      return WEFT_ENOMEM;
    zone = msg->zone;
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
  if (msg->has_owned)
    weft__heap_disown(&msg->owned);
  for (i = 0; i < msg->nxfer; i++) {
    weft__xfer_t* x = &msg->xfers[i];
    if (x->kind == WEFT_EXT_SHARED) {
      weft_shared_unref(x->obj); /* The message's own reference. */
      continue;
    }
    if (x->spare != NULL)
      weft_buffer_free(x->spare);
    if (x->taken || msg->state == WEFT__MSG_BUILDING)
      continue; /* Not committed: the objects are still the sender's. */
    if (x->kind == WEFT_EXT_BUFFER)
      weft_buffer_free(x->obj);
    else if (x->kind == WEFT_EXT_PORT)
      weft__port_drop_in_transit(x->obj);
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

int weft_msg_keep(weft_msg_t* msg) {
  weft_loop_t* loop = weft_loop_current();
  int err;
  if (msg == NULL || msg->state != WEFT__MSG_DELIVERING || loop == NULL)
    return WEFT_EINVAL;
  err = weft__heap_adopt(&msg->owned, msg->cap + sizeof(*msg));
  if (err != 0)
    return err;
  msg->owned.release = msg_release_owned;
  msg->has_owned = msg->owned.heap != NULL;
  /* A delivered message was decoded into the loop's zone: the message
   * takes that zone with it and the loop starts a fresh one. */
  msg->zone = weft__loop_take_zone(loop);
  if (msg->zone == NULL) {
    weft__heap_disown(&msg->owned);
    msg->has_owned = false;
    return WEFT_ENOMEM;
  }
  msg->state = WEFT__MSG_KEPT;
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

static weft__xfer_t* lookup(weft_msg_t* msg,
                            const msgpack_object* obj,
                            int kind) {
  const unsigned char* p;
  uint32_t i;
  if (msg == NULL || weft_msg_ext_kind(obj) != kind ||
      msg->state == WEFT__MSG_BUILDING || msg->state == WEFT__MSG_QUEUED)
    return NULL;
  p = (const unsigned char*)obj->via.ext.ptr;
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
  x = lookup(msg, obj, WEFT_EXT_BUFFER);
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

int weft_msg_take_port(weft_msg_t* msg,
                       const msgpack_object* obj,
                       weft_port_t** out) {
  weft__xfer_t* x;
  weft_loop_t* loop = weft_loop_current();
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  x = lookup(msg, obj, WEFT_EXT_PORT);
  if (x == NULL)
    return WEFT_EINVAL;
  if (x->taken)
    return WEFT_EDETACHED;
  if (loop == NULL)
    return WEFT_ENOLOOP;
  err = weft__port_adopt(x->obj, loop, out);
  if (err != 0)
    return err;
  x->taken = true;
  return 0;
}

int weft_msg_take_shared(weft_msg_t* msg,
                         const msgpack_object* obj,
                         weft_shared_t** out) {
  weft__xfer_t* x;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  x = lookup(msg, obj, WEFT_EXT_SHARED);
  if (x == NULL)
    return WEFT_EINVAL;
  *out = weft_shared_ref(x->obj);
  return 0;
}
