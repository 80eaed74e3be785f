/* frame.h - length-prefixed frames on a byte stream (a process cluster's
 * IPC pipe). A frame is a 5-byte header, the payload's length (4 bytes,
 * big-endian) then its kind (1 byte, never 0), followed by the payload.
 * The reader reassembles frames from reads of any size: a read may end in
 * the middle of a header or a payload, or hold many frames. The codec
 * allocates nothing and knows nothing of what the kinds mean; the caller
 * owns the bytes. */
#ifndef WEFT_TRANSPORT_FRAME_H
#define WEFT_TRANSPORT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define WEFT__FRAME_HEADER 5

/* One frame parsed in place: `payload` points into the caller's bytes. */
typedef struct {
  uint8_t kind;
  uint32_t len;
  const unsigned char* payload;
} weft__frame_t;

/* Write the header of a frame of `kind` (1..255) with `len` payload bytes
 * into `out`. Thread: any. */
void weft__frame_header(unsigned char out[WEFT__FRAME_HEADER],
                        uint8_t kind,
                        uint32_t len);

/* Parse the frame at the front of `bytes` (`n` bytes): the bytes it spans
 * (header and payload, > 0) with `*f` filled; 0 when `bytes` hold only
 * part of it (read more); -1 when it cannot be a frame: kind 0, or a
 * payload over `max` bytes (a peer that sends that is broken or hostile:
 * the caller drops it without waiting for the payload). Thread: any. */
long weft__frame_parse(const void* bytes,
                       size_t n,
                       size_t max,
                       weft__frame_t* f);

/* How many bytes the frame at the front of `bytes` spans in all, as far
 * as its header says (WEFT__FRAME_HEADER while the header is incomplete):
 * so a reader can make room for all of it at once. Call after
 * weft__frame_parse() answered 0. Thread: any. */
size_t weft__frame_span(const void* bytes, size_t n);

/* Reassembly of the frames of one stream: read into its room, commit
 * what was read, take the complete frames one by one. The memory comes
 * from the caller's `grow` (realloc-like: NULL when out of memory) and
 * `release` (free-like). Thread: one at a time. */
typedef struct {
  unsigned char* buf;
  size_t len;  /* Bytes read. */
  size_t pos;  /* Of which taken as frames. */
  size_t cap;
  size_t max;  /* Largest payload accepted. */
  size_t chunk; /* Least room given for a read. */
  void* (*grow)(void* p, size_t size);
  void (*release)(void* p);
} weft__frame_reader_t;

void weft__frame_reader_init(weft__frame_reader_t* r,
                             size_t max,
                             size_t chunk,
                             void* (*grow)(void* p, size_t size),
                             void (*release)(void* p));
/* Room for the next read: at least `chunk` bytes, or the whole of the
 * frame being read when its header is in and says more (so a large frame
 * is read in one piece). Moves the unread bytes to the front first, so
 * frames taken before are invalid from here on. 0, or -1 out of memory. */
int weft__frame_reader_room(weft__frame_reader_t* r,
                            unsigned char** base,
                            size_t* len);
/* `n` bytes were read into the room. */
void weft__frame_reader_commit(weft__frame_reader_t* r, size_t n);
/* The next complete frame: 1 and `*f` (valid until the next room call),
 * 0 when the bytes read hold no complete one, -1 when the stream is not
 * frames (see weft__frame_parse(); the reader stays at the bad frame). */
int weft__frame_reader_next(weft__frame_reader_t* r, weft__frame_t* f);
/* Release the buffer (the reader may be used again: it is empty). */
void weft__frame_reader_free(weft__frame_reader_t* r);

#endif /* WEFT_TRANSPORT_FRAME_H */
