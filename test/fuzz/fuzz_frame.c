/* fuzz_frame.c - the frame reader of a cluster's IPC pipe (transport/
 * frame.c), which reads what another process wrote. Input: byte 0 sets
 * the largest payload accepted (0..255 * 16 bytes), bytes 1-2 seed the
 * sizes of the reads, the rest is the stream. Read in pieces of random
 * sizes (as the pipe delivers it), the stream must give exactly the frames
 * one parse of the whole gives, in order, byte for byte, and end the same
 * way (a partial frame, or a bad one at the same place); each frame's
 * header written again must give back the bytes it came from. The reader
 * never asks for room beyond one frame it accepts plus a read. */
#include "fuzz_common.h"

#include "frame.h"

#define CHUNK 64

static void* grow(void* p, size_t size) {
  return realloc(p, size);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft__frame_reader_t r;
  const uint8_t* s;
  size_t n, max, fed = 0, whole = 0, frames = 0;
  uint32_t seed;
  long end;
  if (size < 3)
    return 0;
  max = (size_t)data[0] * 16;
  seed = (uint32_t)data[1] << 8 | data[2];
  s = data + 3;
  n = size - 3;

  /* The whole stream at once: where it ends and how. */
  for (;;) {
    weft__frame_t f;
    unsigned char h[WEFT__FRAME_HEADER];
    end = weft__frame_parse(s + whole, n - whole, max, &f);
    if (end <= 0)
      break;
    FUZZ_CHECK((size_t)end == WEFT__FRAME_HEADER + f.len);
    FUZZ_CHECK(f.kind != 0 && f.len <= max);
    FUZZ_CHECK(f.payload == s + whole + WEFT__FRAME_HEADER);
    weft__frame_header(h, f.kind, f.len);
    FUZZ_CHECK(memcmp(h, s + whole, sizeof(h)) == 0);
    FUZZ_CHECK(weft__frame_span(s + whole, n - whole) == (size_t)end);
    whole += (size_t)end;
    frames++;
  }
  if (end == 0)
    /* Incomplete: the header, once in, says how much is missing. */
    FUZZ_CHECK(weft__frame_span(s + whole, n - whole) > n - whole);

  /* In pieces. */
  weft__frame_reader_init(&r, max, CHUNK, grow, free);
  {
    size_t got = 0, off = 0;
    int last = 0;
    for (;;) {
      weft__frame_t f;
      int k = weft__frame_reader_next(&r, &f);
      if (k == 1) {
        /* The same frame as the whole parse found at `off`. */
        FUZZ_CHECK(got < frames);
        FUZZ_CHECK(f.kind == s[off + 4]);
        FUZZ_CHECK(WEFT__FRAME_HEADER + (size_t)f.len <= n - off);
        FUZZ_CHECK(memcmp(f.payload, s + off + WEFT__FRAME_HEADER, f.len) ==
                   0);
        off += WEFT__FRAME_HEADER + f.len;
        got++;
        continue;
      }
      if (k < 0) {
        last = -1;
        break;
      }
      if (fed == n)
        break;
      {
        unsigned char* base;
        size_t room, piece;
        FUZZ_CHECK(weft__frame_reader_room(&r, &base, &room) == 0);
        FUZZ_CHECK(room >= 1);
        /* Never more than a frame it accepts plus a read's chunk. */
        FUZZ_CHECK(r.cap <= WEFT__FRAME_HEADER + max + CHUNK + r.len);
        seed = seed * 1103515245u + 12345u;
        piece = 1 + (seed >> 16) % 97;
        if (piece > room)
          piece = room;
        if (piece > n - fed)
          piece = n - fed;
        memcpy(base, s + fed, piece);
        weft__frame_reader_commit(&r, piece);
        fed += piece;
      }
    }
    FUZZ_CHECK(got == frames);
    FUZZ_CHECK(off == whole);
    FUZZ_CHECK(last == (end < 0 ? -1 : 0));
  }
  weft__frame_reader_free(&r);
  return 0;
}
