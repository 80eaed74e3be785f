/* frame.c - length-prefixed frames on a byte stream (see frame.h). */
#include "frame.h"

#include <string.h>

void weft__frame_header(unsigned char out[WEFT__FRAME_HEADER],
                        uint8_t kind,
                        uint32_t len) {
  out[0] = (unsigned char)(len >> 24);
  out[1] = (unsigned char)(len >> 16);
  out[2] = (unsigned char)(len >> 8);
  out[3] = (unsigned char)len;
  out[4] = kind;
}

static uint32_t header_len(const unsigned char* b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
         (uint32_t)b[3];
}

long weft__frame_parse(const void* bytes,
                       size_t n,
                       size_t max,
                       weft__frame_t* f) {
  const unsigned char* b = bytes;
  uint32_t len;
  if (n < WEFT__FRAME_HEADER)
    return 0;
  len = header_len(b);
  /* Refused on the header alone, before any payload is waited for or
   * buffered: a length of up to 4 GiB must not make the reader grow. */
  if (b[4] == 0 || len > max)
    return -1;
  if (n - WEFT__FRAME_HEADER < len)
    return 0;
  f->kind = b[4];
  f->len = len;
  f->payload = b + WEFT__FRAME_HEADER;
  return (long)(WEFT__FRAME_HEADER + (size_t)len);
}

size_t weft__frame_span(const void* bytes, size_t n) {
  if (n < WEFT__FRAME_HEADER)
    return WEFT__FRAME_HEADER;
  return WEFT__FRAME_HEADER + (size_t)header_len(bytes);
}

void weft__frame_reader_init(weft__frame_reader_t* r,
                             size_t max,
                             size_t chunk,
                             void* (*grow)(void* p, size_t size),
                             void (*release)(void* p)) {
  memset(r, 0, sizeof(*r));
  r->max = max;
  r->chunk = chunk > 0 ? chunk : 1;
  r->grow = grow;
  r->release = release;
}

int weft__frame_reader_room(weft__frame_reader_t* r,
                            unsigned char** base,
                            size_t* len) {
  size_t need;
  size_t span;
  if (r->pos > 0) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
  }
  /* A large frame's room is given back once it was taken. */
  if (r->len == 0 && r->cap > 4 * r->chunk) {
    r->release(r->buf);
    r->buf = NULL;
    r->cap = 0;
  }
  need = r->len + r->chunk;
  span = weft__frame_span(r->buf, r->len);
  /* Only a frame the parser will accept makes the room grow past a
   * chunk: a header that claims more is refused before its payload. */
  if (span > need && span - WEFT__FRAME_HEADER <= r->max)
    need = span;
  if (r->cap < need) {
    unsigned char* p = r->grow(r->buf, need);
    if (p == NULL)
      return -1;
    r->buf = p;
    r->cap = need;
  }
  *base = r->buf + r->len;
  *len = r->cap - r->len;
  return 0;
}

void weft__frame_reader_commit(weft__frame_reader_t* r, size_t n) {
  r->len += n;
}

int weft__frame_reader_next(weft__frame_reader_t* r, weft__frame_t* f) {
  long n;
  if (r->len == r->pos)
    return 0;
  n = weft__frame_parse(r->buf + r->pos, r->len - r->pos, r->max, f);
  if (n <= 0)
    return (int)n;
  r->pos += (size_t)n;
  return 1;
}

void weft__frame_reader_free(weft__frame_reader_t* r) {
  if (r->buf != NULL)
    r->release(r->buf);
  r->buf = NULL;
  r->len = 0;
  r->pos = 0;
  r->cap = 0;
}
