/* format.c - messages written and read from a format string (weft/format.h):
 * the format is checked whole first, then walked once to pack, or twice to
 * read (check the shape, then store and take), so that a read that does
 * not match takes nothing. No recursion: a '[' packs its array header from
 * a count ahead, and reading keeps a stack of open arrays. */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define FMT_WRITE "iIuUdbsSynBPH"
#define FMT_READ  "iIuUdbsynBPH*"
#define FMT_OBJ   "iIuUdbsyn*"

/* Check a whole format: each character in `allowed` or a bracket, the
 * brackets balanced and at most WEFT_MSG_MAX_DEPTH deep. `*count` gets the
 * number of values at the top level. */
static int fmt_check(const char* fmt, const char* allowed, size_t* count) {
  const char* p;
  int depth = 0;
  size_t n = 0;
  for (p = fmt; *p != '\0'; p++) {
    char c = *p;
    if (c == ']') {
      if (depth == 0)
        return WEFT_EINVAL; /* ']' without its '['. */
      depth--;
      continue;
    }
    if (depth == 0)
      n++;
    if (c == '[') {
      if (depth >= WEFT_MSG_MAX_DEPTH)
        return WEFT_EINVAL;
      depth++;
    } else if (strchr(allowed, c) == NULL) {
      return WEFT_EINVAL;
    }
  }
  if (depth != 0)
    return WEFT_EINVAL; /* '[' without its ']'. */
  *count = n;
  return 0;
}

/* The count of values between `p` (just past a '[') and its ']', in a
 * format checked already. */
static size_t group_count(const char* p) {
  size_t n = 0;
  int depth = 0;
  for (; *p != '\0'; p++) {
    if (*p == ']') {
      if (depth == 0)
        break;
      depth--;
      continue;
    }
    if (depth == 0)
      n++;
    if (*p == '[')
      depth++;
  }
  return n;
}

/* --- Writing ----------------------------------------------------------- */

static int pk_err(int rc) {
  return rc == 0 ? 0 : WEFT_ENOMEM;
}

static int pack_raw(msgpack_packer* pk, bool bin, const void* p, size_t len) {
  int rc;
  if (p == NULL && len > 0)
    return WEFT_EINVAL;
  if (len > UINT32_MAX)
    return WEFT_EMSGSIZE; /* msgpack's str32/bin32 length. */
  rc = bin ? msgpack_pack_bin(pk, len) : msgpack_pack_str(pk, len);
  if (rc == 0 && len > 0)
    rc = bin ? msgpack_pack_bin_body(pk, p, len)
             : msgpack_pack_str_body(pk, p, len);
  return pk_err(rc);
}

/* Pack the value of character `c` (not a bracket). */
static int pack_one(weft_msg_t* msg, msgpack_packer* pk, char c, va_list* ap) {
  switch (c) {
    case 'i':
      return pk_err(msgpack_pack_int64(pk, va_arg(*ap, int)));
    case 'I':
      return pk_err(msgpack_pack_int64(pk, va_arg(*ap, int64_t)));
    case 'u':
      return pk_err(msgpack_pack_uint64(pk, va_arg(*ap, unsigned)));
    case 'U':
      return pk_err(msgpack_pack_uint64(pk, va_arg(*ap, uint64_t)));
    case 'd':
      return pk_err(msgpack_pack_double(pk, va_arg(*ap, double)));
    case 'b':
      return pk_err(va_arg(*ap, int) ? msgpack_pack_true(pk)
                                     : msgpack_pack_false(pk));
    case 'n':
      return pk_err(msgpack_pack_nil(pk));
    case 's': {
      const char* s = va_arg(*ap, const char*);
      if (s == NULL)
        return WEFT_EINVAL;
      return pack_raw(pk, false, s, strlen(s));
    }
    case 'S':
    case 'y': {
      const void* p = va_arg(*ap, const void*);
      size_t len = va_arg(*ap, size_t);
      return pack_raw(pk, c == 'y', p, len);
    }
    case 'B': {
      weft_buffer_t* buf = va_arg(*ap, weft_buffer_t*);
      return buf == NULL ? WEFT_EINVAL : weft_msg_add_buffer(msg, buf);
    }
    case 'P': {
      weft_port_t* port = va_arg(*ap, weft_port_t*);
      return port == NULL ? WEFT_EINVAL : weft_msg_add_port(msg, port);
    }
    case 'H': {
      weft_shared_t* sh = va_arg(*ap, weft_shared_t*);
      return sh == NULL ? WEFT_EINVAL : weft_msg_add_shared(msg, sh);
    }
    default:
      return WEFT_EINVAL; /* Not reached: the format was checked. */
  }
}

int weft_msg_vpack(weft_msg_t* msg, const char* fmt, va_list ap) {
  const char* p;
  msgpack_packer* pk;
  size_t n;
  va_list args;
  int err;
  if (msg == NULL || fmt == NULL)
    return WEFT_EINVAL;
  pk = weft_msg_packer(msg);
  if (pk == NULL || msg->len != 0)
    return WEFT_EINVAL; /* Received, or packed already. */
  err = fmt_check(fmt, FMT_WRITE, &n);
  if (err != 0)
    return err;
  if (n == 0)
    return WEFT_EINVAL;
  va_copy(args, ap);
  if (n > 1)
    err = pk_err(msgpack_pack_array(pk, n));
  /* One pass: a '[' writes its array's header, counted ahead; a ']'
   * writes nothing (msgpack arrays have no end mark). */
  for (p = fmt; *p != '\0' && err == 0; p++) {
    if (*p == '[')
      err = pk_err(msgpack_pack_array(pk, group_count(p + 1)));
    else if (*p != ']')
      err = pack_one(msg, pk, *p, &args);
  }
  va_end(args);
  return err;
}

int weft_msg_pack(weft_msg_t* msg, const char* fmt, ...) {
  va_list ap;
  int err;
  va_start(ap, fmt);
  err = weft_msg_vpack(msg, fmt, ap);
  va_end(ap);
  return err;
}

/* --- Reading ----------------------------------------------------------- */

static bool as_i64(const msgpack_object* o, int64_t* v) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o->via.u64 > (uint64_t)INT64_MAX)
      return false;
    *v = (int64_t)o->via.u64;
    return true;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *v = o->via.i64;
    return true;
  }
  return false;
}

/* The next out pointer of type T, or NULL in the checking pass (`ap`
 * NULL): a read is two passes over the same format, the first only checks
 * and takes no argument. */
#define OUT(ap, T) ((ap) != NULL ? va_arg(*(ap), T) : NULL)

/* A transfer placeholder at `o` of `msg`: check it (first pass) or take
 * it. */
static int read_xfer(weft_msg_t* msg,
                     va_list* ap,
                     const msgpack_object* o,
                     int kind) {
  weft__xfer_t* x = weft__msg_lookup(msg, o, kind);
  if (x == NULL)
    return WEFT_EDECODE;
  if (ap == NULL) {
    if (kind == WEFT_EXT_BUFFER && (x->taken || x->obj == NULL))
      return WEFT_EDETACHED;
    if (kind == WEFT_EXT_PORT && x->taken)
      return WEFT_EDETACHED;
    if (kind == WEFT_EXT_PORT && weft_loop_current() == NULL)
      return WEFT_ENOLOOP;
    return 0;
  }
  if (kind == WEFT_EXT_BUFFER) {
    weft_buffer_t** out = va_arg(*ap, weft_buffer_t**);
    return out == NULL ? 0 : weft_msg_take_buffer(msg, o, out);
  }
  if (kind == WEFT_EXT_PORT) {
    weft_port_t** out = va_arg(*ap, weft_port_t**);
    return out == NULL ? 0 : weft_msg_take_port(msg, o, out);
  }
  {
    weft_shared_t** out = va_arg(*ap, weft_shared_t**);
    return out == NULL ? 0 : weft_msg_take_shared(msg, o, out);
  }
}

/* Read (check, or store) value `o` for character `c` (not a bracket). */
static int read_one(weft_msg_t* msg,
                    va_list* ap,
                    const msgpack_object* o,
                    char c) {
  int64_t v = 0;
  switch (c) {
    case 'i': {
      int* out;
      if (!as_i64(o, &v) || v < INT_MIN || v > INT_MAX)
        return WEFT_EDECODE;
      out = OUT(ap, int*);
      if (out != NULL)
        *out = (int)v;
      return 0;
    }
    case 'I': {
      int64_t* out;
      if (!as_i64(o, &v))
        return WEFT_EDECODE;
      out = OUT(ap, int64_t*);
      if (out != NULL)
        *out = v;
      return 0;
    }
    case 'u': {
      unsigned* out;
      if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT_MAX)
        return WEFT_EDECODE;
      out = OUT(ap, unsigned*);
      if (out != NULL)
        *out = (unsigned)o->via.u64;
      return 0;
    }
    case 'U': {
      uint64_t* out;
      if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return WEFT_EDECODE;
      out = OUT(ap, uint64_t*);
      if (out != NULL)
        *out = o->via.u64;
      return 0;
    }
    case 'd': {
      double* out;
      double d;
      if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        d = o->via.f64;
      else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double)o->via.u64;
      else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double)o->via.i64;
      else
        return WEFT_EDECODE;
      out = OUT(ap, double*);
      if (out != NULL)
        *out = d;
      return 0;
    }
    case 'b': {
      bool* out;
      if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return WEFT_EDECODE;
      out = OUT(ap, bool*);
      if (out != NULL)
        *out = o->via.boolean;
      return 0;
    }
    case 'n':
      return o->type == MSGPACK_OBJECT_NIL ? 0 : WEFT_EDECODE;
    case '*':
      return 0;
    case 's': {
      const char** out;
      size_t* len;
      if (o->type != MSGPACK_OBJECT_STR)
        return WEFT_EDECODE;
      out = OUT(ap, const char**);
      len = OUT(ap, size_t*);
      if (out != NULL)
        *out = o->via.str.ptr;
      if (len != NULL)
        *len = o->via.str.size;
      return 0;
    }
    case 'y': {
      const void** out;
      size_t* len;
      if (o->type != MSGPACK_OBJECT_BIN)
        return WEFT_EDECODE;
      out = OUT(ap, const void**);
      len = OUT(ap, size_t*);
      if (out != NULL)
        *out = o->via.bin.ptr;
      if (len != NULL)
        *len = o->via.bin.size;
      return 0;
    }
    case 'B':
      return read_xfer(msg, ap, o, WEFT_EXT_BUFFER);
    case 'P':
      return read_xfer(msg, ap, o, WEFT_EXT_PORT);
    case 'H':
      return read_xfer(msg, ap, o, WEFT_EXT_SHARED);
    default:
      return WEFT_EINVAL; /* Not reached: the format was checked. */
  }
}

/* Walk `fmt` (checked, `n` values at its top) and the value `root` side by
 * side: check (ap NULL) or store and take. An explicit stack of the next
 * element at each open '[' (bracket depth is bounded by fmt_check). */
static int read_all(weft_msg_t* msg,
                    va_list* ap,
                    const msgpack_object* root,
                    const char* fmt,
                    size_t n) {
  const msgpack_object* next[WEFT_MSG_MAX_DEPTH + 1] = {NULL};
  int top = 0;
  const char* p;
  if (n == 1) {
    next[0] = root;
  } else {
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != n)
      return WEFT_EDECODE;
    next[0] = root->via.array.ptr;
  }
  for (p = fmt; *p != '\0'; p++) {
    const msgpack_object* o;
    if (*p == ']') {
      top--; /* Its array had exactly its count of values: all read. */
      continue;
    }
    o = next[top]++;
    if (o == NULL)
      return WEFT_EDECODE; /* Not reached: counts were checked. */
    if (*p == '[') {
      size_t k = group_count(p + 1);
      if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != k)
        return WEFT_EDECODE;
      next[++top] = o->via.array.ptr;
    } else {
      int err = read_one(msg, ap, o, *p);
      if (err != 0)
        return err;
    }
  }
  return 0;
}

static int vread(weft_msg_t* msg,
                 const msgpack_object* obj,
                 const char* allowed,
                 const char* fmt,
                 va_list ap) {
  size_t n;
  va_list args;
  int err = fmt_check(fmt, allowed, &n);
  if (err != 0)
    return err;
  if (n == 0)
    return WEFT_EINVAL;
  err = read_all(msg, NULL, obj, fmt, n); /* Check only. */
  if (err != 0)
    return err;
  va_copy(args, ap);
  err = read_all(msg, &args, obj, fmt, n); /* Store and take. */
  va_end(args);
  return err;
}

int weft_msg_vread(weft_msg_t* msg, const char* fmt, va_list ap) {
  const msgpack_object* obj;
  if (msg == NULL || fmt == NULL)
    return WEFT_EINVAL;
  obj = weft_msg_object(msg);
  if (obj == NULL)
    return WEFT_EINVAL;
  return vread(msg, obj, FMT_READ, fmt, ap);
}

int weft_msg_read(weft_msg_t* msg, const char* fmt, ...) {
  va_list ap;
  int err;
  va_start(ap, fmt);
  err = weft_msg_vread(msg, fmt, ap);
  va_end(ap);
  return err;
}

int weft_obj_vread(const msgpack_object* obj, const char* fmt, va_list ap) {
  if (obj == NULL || fmt == NULL)
    return WEFT_EINVAL;
  return vread(NULL, obj, FMT_OBJ, fmt, ap);
}

int weft_obj_read(const msgpack_object* obj, const char* fmt, ...) {
  va_list ap;
  int err;
  va_start(ap, fmt);
  err = weft_obj_vread(obj, fmt, ap);
  va_end(ap);
  return err;
}

/* --- Posting ----------------------------------------------------------- */

/* Pack a message from `fmt` and hand it to `post` (weft_port_post_msg or
 * weft_worker_post_msg, called through a cast of their handle); on any
 * error nothing is sent and the message is freed. */
static int post_fmt(int (*post)(void* to, weft_msg_t** msg),
                    void* to,
                    const char* fmt,
                    va_list ap) {
  weft_msg_t* msg = NULL;
  int err;
  if (to == NULL || fmt == NULL)
    return WEFT_EINVAL;
  err = weft_msg_new(&msg);
  if (err != 0)
    return err;
  err = weft_msg_vpack(msg, fmt, ap);
  if (err == 0)
    err = post(to, &msg);
  weft_msg_free(msg); /* NULL once posted. */
  return err;
}

static int post_on_port(void* to, weft_msg_t** msg) {
  return weft_port_post_msg(to, msg);
}

static int post_to_worker(void* to, weft_msg_t** msg) {
  return weft_worker_post_msg(to, msg);
}

int weft_port_post_fmt(weft_port_t* port, const char* fmt, ...) {
  va_list ap;
  int err;
  va_start(ap, fmt);
  err = post_fmt(post_on_port, port, fmt, ap);
  va_end(ap);
  return err;
}

int weft_worker_post_fmt(weft_worker_t* w, const char* fmt, ...) {
  va_list ap;
  int err;
  va_start(ap, fmt);
  err = post_fmt(post_to_worker, w, fmt, ap);
  va_end(ap);
  return err;
}
