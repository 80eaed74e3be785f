/* frame.c - length-prefixed frames on a byte stream (see frame.h). */
#include "frame.h"

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
