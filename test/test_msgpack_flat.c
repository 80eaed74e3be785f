/* test_msgpack_flat.c - Criterion suite for weft__msgpack_decode_flat()
 * (lib/msg.c): small arrays and maps of scalars, strings and bins decoded
 * without msgpack_unpack() must come out exactly as msgpack_unpack() makes
 * them (types, widths, signs, float kinds, str/bin pointing into the
 * bytes), and anything else must be left to msgpack_unpack() with the zone
 * untouched. Random values from a fixed seed, plus the edges by hand. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

TestSuite(msgpack_flat, .timeout = 30);

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void) {
  /* xorshift64*: the same values on every run. */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717u;
}

/* One random scalar, string or bin, in a random one of its encodings. */
static void pack_item(msgpack_packer* pk) {
  static const char text[] = "weft weaves threads into cloth, fast";
  uint64_t r = next();
  switch (r % 12) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: (r >> 8) & 1 ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case 2: msgpack_pack_uint8(pk, (uint8_t)(r >> 8)); break;
    case 3: msgpack_pack_uint16(pk, (uint16_t)(r >> 8)); break;
    case 4: msgpack_pack_uint32(pk, (uint32_t)(r >> 8)); break;
    case 5: msgpack_pack_uint64(pk, r); break;
    case 6: msgpack_pack_int8(pk, (int8_t)(r >> 8)); break;
    case 7: msgpack_pack_int16(pk, (int16_t)(r >> 8)); break;
    case 8: msgpack_pack_int64(pk, (int64_t)r); break;
    case 9:
      if ((r >> 8) & 1)
        msgpack_pack_float(pk, (float)(int32_t)(r >> 16) / 7.0f);
      else
        msgpack_pack_double(pk, (double)(int64_t)r / 3.0);
      break;
    case 10: {
      size_t n = (r >> 8) % sizeof(text);
      msgpack_pack_str(pk, n);
      msgpack_pack_str_body(pk, text, n);
      break;
    }
    default: {
      size_t n = (r >> 8) % 40;
      msgpack_pack_bin(pk, n);
      msgpack_pack_bin_body(pk, text, n < sizeof(text) ? n : sizeof(text));
      if (n > sizeof(text)) /* Pad to the claimed length. */
        msgpack_pack_bin_body(pk, text, n - sizeof(text));
      break;
    }
  }
}

/* Decode `sb` both ways; when the flat decoder takes it, the objects are
 * equal, of the same types, and its str and bin point into the bytes. */
static int check_both(const msgpack_sbuffer* sb) {
  msgpack_zone za, zb;
  msgpack_object a, b;
  size_t off = 0;
  int r;
  msgpack_zone_init(&za, 2048);
  msgpack_zone_init(&zb, 2048);
  cr_assert_eq(msgpack_unpack(sb->data, sb->size, &off, &za, &a),
               MSGPACK_UNPACK_SUCCESS);
  r = weft__msgpack_decode_flat(sb->data, sb->size, &zb, &b);
  cr_assert(r == 0 || r == 1, "0 or 1, not %d", r);
  if (r == 0) {
    uint32_t n = b.type == MSGPACK_OBJECT_MAP ? b.via.map.size * 2
                                              : b.via.array.size;
    cr_assert(msgpack_object_equal(a, b), "same value");
    cr_assert_eq(a.type, b.type);
    for (uint32_t i = 0; i < n; i++) {
      const msgpack_object* x =
          b.type == MSGPACK_OBJECT_MAP
              ? (i % 2 ? &b.via.map.ptr[i / 2].val : &b.via.map.ptr[i / 2].key)
              : &b.via.array.ptr[i];
      const msgpack_object* y =
          a.type == MSGPACK_OBJECT_MAP
              ? (i % 2 ? &a.via.map.ptr[i / 2].val : &a.via.map.ptr[i / 2].key)
              : &a.via.array.ptr[i];
      cr_assert_eq(x->type, y->type, "item %u: type %d, msgpack %d", i,
                   (int)x->type, (int)y->type);
      if (x->type == MSGPACK_OBJECT_STR || x->type == MSGPACK_OBJECT_BIN)
        cr_assert(x->via.str.size == 0 ||
                      (x->via.str.ptr >= sb->data &&
                       x->via.str.ptr + x->via.str.size <=
                           sb->data + sb->size),
                  "str and bin point into the bytes");
    }
  } else {
    /* Left to msgpack_unpack(): nothing taken from the zone. */
    void* first = msgpack_zone_malloc(&zb, 8);
    void* again;
    msgpack_zone_clear(&zb);
    again = msgpack_zone_malloc(&zb, 8);
    cr_assert_eq(first, again, "the zone was untouched");
  }
  msgpack_zone_destroy(&za);
  msgpack_zone_destroy(&zb);
  return r;
}

Test(msgpack_flat, random_flat_values_decode_as_msgpack_does) {
  int taken = 0;
  for (int round = 0; round < 4000; round++) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t n = 1 + next() % 15;
    bool map = next() & 1;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (map)
      msgpack_pack_map(&pk, n);
    else
      msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < (map ? 2 * n : n); i++)
      pack_item(&pk);
    taken += check_both(&sb) == 0;
    msgpack_sbuffer_destroy(&sb);
  }
  cr_assert_eq(taken, 4000, "every flat value taken");
}

/* Not flat: nested, ext, empty, 16 or more entries, scalars alone. */
Test(msgpack_flat, other_values_are_left_to_msgpack) {
  static const unsigned char nested[] = {0x92, 0x01, 0x91, 0x02};
  static const unsigned char ext[] = {0x92, 0x01, 0xd4, 0x05, 0x07};
  static const unsigned char empty_a[] = {0x90};
  static const unsigned char empty_m[] = {0x80};
  static const unsigned char scalar[] = {0xa3, 'a', 'b', 'c'};
  static const unsigned char big[] = {0xdc, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7,
                                      8, 9, 10, 11, 12, 13, 14, 15, 16};
  static const struct {
    const unsigned char* b;
    size_t len;
  } cases[] = {{nested, sizeof nested}, {ext, sizeof ext},
               {empty_a, sizeof empty_a}, {empty_m, sizeof empty_m},
               {scalar, sizeof scalar}, {big, sizeof big}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    msgpack_sbuffer sb = {cases[i].len, (char*)cases[i].b, cases[i].len};
    cr_assert_eq(check_both(&sb), 1, "case %zu is left to msgpack", i);
  }
}

/* Cut short or with bytes after it: never taken (the caller's
 * msgpack_unpack() then reports it), never read past the end. */
Test(msgpack_flat, truncated_or_trailing_bytes_are_not_taken) {
  /* [258, "hi", 1.0 as a float 64] */
  static const unsigned char whole[] = {0x93, 0xcd, 0x01, 0x02, 0xa2,
                                        'h',  'i',  0xcb, 0x3f, 0xf0,
                                        0,    0,    0,    0,    0,    0};
  unsigned char buf[sizeof(whole) + 1];
  msgpack_zone z;
  msgpack_object o;
  msgpack_zone_init(&z, 256);
  for (size_t len = 1; len < sizeof(whole); len++) {
    /* A copy of exactly `len` bytes: ASan sees any read past it. */
    unsigned char* cut = malloc(len);
    cr_assert_not_null(cut);
    memcpy(cut, whole, len);
    cr_assert_eq(weft__msgpack_decode_flat(cut, len, &z, &o), 1,
                 "cut at %zu", len);
    free(cut);
  }
  cr_assert_eq(weft__msgpack_decode_flat(whole, sizeof(whole), &z, &o), 0);
  cr_assert_eq(o.via.array.ptr[2].type, MSGPACK_OBJECT_FLOAT64);
  cr_assert(o.via.array.ptr[2].via.f64 == 1.0);
  memcpy(buf, whole, sizeof(whole));
  buf[sizeof(whole)] = 0xc0;
  cr_assert_eq(weft__msgpack_decode_flat(buf, sizeof(buf), &z, &o), 1,
               "a byte after the value");
  msgpack_zone_destroy(&z);
}
