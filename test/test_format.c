/* test_format.c - Criterion suite for typed writing and reading of messages
 * (weft/format.h): round trips of every format character, the shape rules
 * (one value alone, several as an array, brackets), strict type and range
 * checks that give WEFT_EDECODE and take nothing, bad formats, long
 * strings and bins, and transfers through a worker with the post_fmt
 * helpers. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(format, .timeout = 30);

/* --- helpers ------------------------------------------------------------- */

/* A received message whose value is the packed bytes `p`. */
static weft_msg_t* received(weft_port_t* a, weft_port_t* b, packed_t p) {
  weft_msg_t* got = NULL;
  cr_assert_eq(weft_port_post(a, p.data, p.len), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  return got;
}

/* --- round trips --------------------------------------------------------- */

Test(format, every_character_round_trips_with_its_extremes) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  weft_msg_t* got;
  const unsigned char bin[3] = {0, 0xff, 7};
  int i1 = 0, i2 = 0;
  int64_t l1 = 0, l2 = 0;
  unsigned u1 = 1;
  uint64_t u2 = 1;
  double d1 = 0, d2 = 0;
  bool t = false, f = true;
  const char *s = NULL, *s2 = NULL;
  size_t slen = 0, s2len = 0, ylen = 0;
  const void* y = NULL;
  const msgpack_object* o;

  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "iiIIuUddbbsSyn", INT_MIN, INT_MAX, INT64_MIN,
                             INT64_MAX, UINT_MAX, UINT64_MAX, 1.5, -2.25, 1,
                             0, "hello", "a\0b", (size_t)3, bin, sizeof(bin)),
               0);
  got = round_trip(a, b, m);

  /* What went over the wire is one plain array of 14 msgpack values. */
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 14);
  cr_assert_eq(o->via.array.ptr[0].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
  cr_assert_eq(o->via.array.ptr[10].type, MSGPACK_OBJECT_STR);
  cr_assert_eq(o->via.array.ptr[12].type, MSGPACK_OBJECT_BIN);
  cr_assert_eq(o->via.array.ptr[13].type, MSGPACK_OBJECT_NIL);

  cr_assert_eq(weft_msg_read(got, "iiIIuUddbbsSyn", &i1, &i2, &l1, &l2, &u1,
                             &u2, &d1, &d2, &t, &f, &s, &slen, &s2, &s2len,
                             &y, &ylen),
               WEFT_EINVAL, "S is for writing only");
  cr_assert_eq(weft_msg_read(got, "iiIIuUddbbssyn", &i1, &i2, &l1, &l2, &u1,
                             &u2, &d1, &d2, &t, &f, &s, &slen, &s2, &s2len,
                             &y, &ylen),
               0);
  cr_assert_eq(i1, INT_MIN);
  cr_assert_eq(i2, INT_MAX);
  cr_assert_eq(l1, INT64_MIN);
  cr_assert_eq(l2, INT64_MAX);
  cr_assert_eq(u1, UINT_MAX);
  cr_assert_eq(u2, UINT64_MAX);
  cr_assert_eq(d1, 1.5);
  cr_assert_eq(d2, -2.25);
  cr_assert(t);
  cr_assert_not(f);
  cr_assert_eq(slen, 5);
  cr_assert_eq(memcmp(s, "hello", 5), 0);
  cr_assert_eq(s2len, 3);
  cr_assert_eq(memcmp(s2, "a\0b", 3), 0);
  cr_assert_eq(ylen, 3);
  cr_assert_eq(memcmp(y, bin, 3), 0);

  /* `*` skips any value, NULL out pointers check without storing. */
  i1 = 42;
  cr_assert_eq(weft_msg_read(got, "i*IIuUddbbs*yn", NULL, &l1, NULL, NULL,
                             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                             NULL),
               0);
  cr_assert_eq(i1, 42);
  weft_msg_free(got);
  finish(loop, a, b);
}

Test(format, one_value_alone_several_as_an_array_brackets_nest) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  weft_msg_t* got;
  const msgpack_object* o;
  int64_t v = 0, w = 0;
  bool t = false;
  const char* s = NULL;
  size_t n = 0;

  new_channel(loop, &a, &b);

  /* "I" is the value itself. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "I", (int64_t)5), 0);
  got = round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  cr_assert_eq(weft_msg_read(got, "[I]", &v), WEFT_EDECODE);
  cr_assert_eq(weft_msg_read(got, "I", &v), 0);
  cr_assert_eq(v, 5);
  weft_msg_free(got);

  /* "[I]" is an array of one. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "[I]", (int64_t)6), 0);
  got = round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 1);
  cr_assert_eq(weft_msg_read(got, "I", &v), WEFT_EDECODE);
  cr_assert_eq(weft_msg_read(got, "[I]", &v), 0);
  cr_assert_eq(v, 6);
  weft_msg_free(got);

  /* "[]" is the empty array. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "[]"), 0);
  got = round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 0);
  cr_assert_eq(weft_msg_read(got, "[]"), 0);
  cr_assert_eq(weft_msg_read(got, "n"), WEFT_EDECODE);
  cr_assert_eq(weft_msg_read(got, "*"), 0);
  weft_msg_free(got);

  /* Nested: ["k", [1, [true, nil]], 2]. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "s[I[bn]]I", "k", (int64_t)1, 1, (int64_t)2),
               0);
  got = round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 3);
  cr_assert_eq(o->via.array.ptr[1].via.array.size, 2);
  cr_assert_eq(o->via.array.ptr[1].via.array.ptr[1].via.array.size, 2);
  cr_assert_eq(weft_msg_read(got, "s[I[bn]]I", &s, &n, &v, &t, &w), 0);
  cr_assert_eq(n, 1);
  cr_assert_eq(s[0], 'k');
  cr_assert_eq(v, 1);
  cr_assert(t);
  cr_assert_eq(w, 2);
  cr_assert_eq(weft_msg_read(got, "s**", NULL, NULL), 0);
  cr_assert_eq(weft_msg_read(got, "*[I*]*", &v), 0);

  /* weft_obj_read reads the same from the object alone. */
  v = w = 0;
  cr_assert_eq(weft_obj_read(o, "s[I[bn]]I", &s, &n, &v, &t, &w), 0);
  cr_assert_eq(v, 1);
  cr_assert_eq(w, 2);
  cr_assert_eq(weft_obj_read(&o->via.array.ptr[1], "I[bn]", &v, &t), 0);
  cr_assert_eq(weft_obj_read(o, "s[I[b]]I", &s, &n, &v, &t, &w),
               WEFT_EDECODE);
  weft_msg_free(got);
  finish(loop, a, b);
}

Test(format, long_strings_and_bins_beyond_the_inline_buffer) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  weft_msg_t* got;
  size_t big = 200000;
  char* str = malloc(big + 1);
  unsigned char* bin = malloc(big);
  const char* s = NULL;
  const void* y = NULL;
  size_t slen = 0, ylen = 0;

  cr_assert_not_null(str);
  cr_assert_not_null(bin);
  for (size_t i = 0; i < big; i++) {
    str[i] = (char)('a' + i % 26);
    bin[i] = (unsigned char)(i * 7);
  }
  str[big] = '\0';
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "sy", str, bin, big), 0);
  got = round_trip(a, b, m);
  cr_assert_eq(weft_msg_read(got, "sy", &s, &slen, &y, &ylen), 0);
  cr_assert_eq(slen, big);
  cr_assert_eq(ylen, big);
  cr_assert_eq(memcmp(s, str, big), 0);
  cr_assert_eq(memcmp(y, bin, big), 0);
  weft_msg_free(got);

  /* Empty ones, a NULL pointer with length 0 included. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "sSy", "", (const char*)NULL, (size_t)0,
                             (const void*)NULL, (size_t)0),
               0);
  got = round_trip(a, b, m);
  slen = ylen = 99;
  cr_assert_eq(weft_msg_read(got, "s*y", &s, &slen, &y, &ylen), 0);
  cr_assert_eq(slen, 0);
  cr_assert_eq(ylen, 0);
  weft_msg_free(got);
  free(str);
  free(bin);
  finish(loop, a, b);
}

/* --- shape and type checks ------------------------------------------------ */

Test(format, every_mismatch_is_edecode_and_stores_nothing) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* got;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  /* ["x", 5, [true], -1, 2^63, 2^31, 1.5, b"z", nil] */
  const char* shapes[] = {
      "s",            /* arity: a single value is not the array */
      "sI[b]IUIdyn*", /* too many */
      "sI[b]IUIdy",   /* too few */
      "sI[bb]IUIdyn", /* inner arity */
      "sI[]IUIdyn",   /* inner arity, empty */
      "sIbIUIdyn",    /* array read as bool */
      "yI[b]IUIdyn",  /* str read as bin */
      "ss[b]IUIdyn",  /* int read as str */
      "sb[b]IUIdyn",  /* int read as bool */
      "sd[s]IUIdyn",  /* bool read as str */
      "sI[b]uUIdyn",  /* -1 read as unsigned */
      "sI[b]UUIdyn",  /* -1 read as uint64 */
      "sI[b]IIIdyn",  /* 2^63 read as int64 */
      "sI[b]IUidyn",  /* 2^31 read as int */
      "sI[b]IUIIyn",  /* 1.5 read as int64 */
      "sI[b]IUIdsn",  /* bin read as str */
      "sI[b]IUIdyb",  /* nil read as bool */
      "sI[b]IUId[]n", /* bin read as array */
      "sI[b]IUIdyi",  /* nil read as int */
      "sI[b]IUIdyB",  /* nil read as a buffer */
      "sI[b]IUIdyP",  /* nil read as a port */
      "sI[b]IUIdyH",  /* nil read as a shared buffer */
  };
  const char* s = "unchanged";
  size_t slen = 77;
  int64_t v = 77;

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 9);
  pack_str(&pk, "x");
  msgpack_pack_int64(&pk, 5);
  msgpack_pack_array(&pk, 1);
  msgpack_pack_true(&pk);
  msgpack_pack_int64(&pk, -1);
  msgpack_pack_uint64(&pk, (uint64_t)1 << 63);
  msgpack_pack_int64(&pk, (int64_t)1 << 31);
  msgpack_pack_double(&pk, 1.5);
  msgpack_pack_bin(&pk, 1);
  msgpack_pack_bin_body(&pk, "z", 1);
  msgpack_pack_nil(&pk);
  new_channel(loop, &a, &b);
  got = received(a, b, packed_from(&sb));

  for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
    /* Every pointer points at `s`, `slen` or `v`, whatever the type asked:
     * a mismatch must write none of them (the check comes first). */
    void* p[40];
    for (size_t j = 0; j < 40; j++)
      p[j] = j % 3 == 0 ? (void*)&s : j % 3 == 1 ? (void*)&slen : (void*)&v;
    cr_assert_eq(weft_msg_read(got, shapes[i], p[0], p[1], p[2], p[3], p[4],
                               p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                               p[12], p[13], p[14], p[15]),
                 WEFT_EDECODE, "%s", shapes[i]);
    cr_assert_str_eq(s, "unchanged", "%s", shapes[i]);
    cr_assert_eq(slen, 77, "%s", shapes[i]);
    cr_assert_eq(v, 77, "%s", shapes[i]);
    cr_assert_eq(weft_obj_read(weft_msg_object(got), strchr(shapes[i], 'B') ||
                                   strchr(shapes[i], 'P') ||
                                   strchr(shapes[i], 'H') ? "s" : shapes[i],
                               p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                               p[8], p[9], p[10], p[11], p[12], p[13], p[14],
                               p[15]),
                 WEFT_EDECODE, "obj %s", shapes[i]);
    cr_assert_eq(v, 77, "%s", shapes[i]);
  }

  /* The right shape reads; ints read as doubles; the widest types fit. */
  {
    const char* x = NULL;
    size_t xl = 0;
    int64_t five = 0, m1 = 0, i31 = 0;
    bool t = false;
    uint64_t big = 0;
    double d = 0, fived = 0, m1d = 0;
    const void* y = NULL;
    size_t yl = 0;
    int small = 0;
    cr_assert_eq(weft_msg_read(got, "sI[b]IUIdyn", &x, &xl, &five, &t, &m1,
                               &big, &i31, &d, &y, &yl),
                 0);
    cr_assert_eq(xl, 1);
    cr_assert_eq(five, 5);
    cr_assert_eq(m1, -1);
    cr_assert_eq(big, (uint64_t)1 << 63);
    cr_assert_eq(i31, (int64_t)1 << 31);
    cr_assert_eq(d, 1.5);
    cr_assert_eq(weft_msg_read(got, "sd[b]d*****", NULL, NULL, &fived, NULL,
                               &m1d),
                 0);
    cr_assert_eq(fived, 5.0);
    cr_assert_eq(m1d, -1.0);
    cr_assert_eq(weft_msg_read(got, "*i[*]i*****", &small, &small), 0);
    cr_assert_eq(small, -1);
  }
  weft_msg_free(got);
  finish(loop, a, b);
}

Test(format, a_failed_read_takes_no_transfer) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b, *c, *d;
  weft_msg_t* m = NULL;
  weft_msg_t* got;
  weft_buffer_t* buf = NULL;
  weft_buffer_t* out = NULL;
  weft_port_t* pout = NULL;
  weft_shared_t* sh = new_shared(64);
  weft_shared_t* shout = NULL;
  int64_t v = 0;
  void* data;
  size_t size;

  new_channel(loop, &a, &b);
  new_channel(loop, &c, &d);
  cr_assert_eq(weft_buffer_from(&buf, "abc", 3), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "BPHI", buf, c, sh, (int64_t)9), 0);
  got = round_trip(a, b, m);
  cr_assert_eq(weft_buffer_size(buf), 0, "the sender's buffer is detached");

  /* The transfers match, the last value does not: nothing is taken. */
  cr_assert_eq(weft_msg_read(got, "BPHs", &out, &pout, &shout, NULL, NULL),
               WEFT_EDECODE);
  cr_assert_null(out);
  cr_assert_null(pout);
  cr_assert_null(shout);
  /* Placeholders in the wrong order are a shape mismatch too. */
  cr_assert_eq(weft_msg_read(got, "PBHI", &pout, &out, &shout, &v),
               WEFT_EDECODE);
  cr_assert_eq(weft_msg_read(got, "BHPI", &out, &shout, &pout, &v),
               WEFT_EDECODE);
  cr_assert_null(out);
  cr_assert_null(pout);
  cr_assert_null(shout);
  cr_assert_eq(v, 0);

  /* The port can be left in the message (NULL), the rest taken. */
  cr_assert_eq(weft_msg_read(got, "BPHI", &out, NULL, &shout, &v), 0);
  cr_assert_not_null(out);
  cr_assert_eq(shout, sh);
  cr_assert_eq(v, 9);
  cr_assert_eq(weft_buffer_data(out, &data, &size), 0);
  cr_assert_eq(size, 3);
  cr_assert_eq(memcmp(data, "abc", 3), 0);

  /* The buffer is gone now: a second read of it is EDETACHED, and takes
   * not the port either. */
  cr_assert_eq(weft_msg_read(got, "BPHI", &buf, &pout, &shout, &v),
               WEFT_EDETACHED);
  cr_assert_null(pout);
  cr_assert_eq(weft_msg_read(got, "*PHI", &pout, NULL, NULL), 0);
  cr_assert_not_null(pout);
  cr_assert_eq(weft_msg_read(got, "*P**", &pout), WEFT_EDETACHED);

  /* The moved port still talks to d. */
  cr_assert_eq(weft_port_post_fmt(pout, "s", "hi"), 0);
  {
    weft_msg_t* hi = NULL;
    const char* s = NULL;
    size_t n = 0;
    cr_assert_eq(weft_port_receive(d, &hi), 0);
    cr_assert_eq(weft_msg_read(hi, "s", &s, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(memcmp(s, "hi", 2), 0);
    weft_msg_free(hi);
  }
  weft_msg_free(got);
  weft_buffer_free(out);
  weft_buffer_free(buf);
  weft_shared_release(shout);
  weft_shared_release(sh);
  cr_assert_eq(weft_port_free(pout), 0);
  cr_assert_eq(weft_port_free(c), 0);
  free_channel(a, b);
  cr_assert_eq(weft_port_free(d), 0);
  run_and_free(loop);
}

/* --- bad input ------------------------------------------------------------ */

Test(format, bad_formats_and_arguments_are_einval) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  weft_msg_t* got;
  const char* bad[] = {"", "x", "[", "]", "[I", "I]", "[[]", "*", "I*", "i "};
  char deep[2 * WEFT_MSG_MAX_DEPTH + 3];
  int64_t v = 0;
  msgpack_object nil;

  new_channel(loop, &a, &b);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    cr_assert_eq(weft_msg_new(&m), 0);
    cr_assert_eq(weft_msg_pack(m, bad[i], (int64_t)1, (int64_t)2),
                 WEFT_EINVAL, "pack '%s'", bad[i]);
    /* Nothing was packed: a good format still works. */
    cr_assert_eq(weft_msg_pack(m, "I", (int64_t)3), 0, "after '%s'", bad[i]);
    weft_msg_free(m);
    cr_assert_eq(weft_port_post_fmt(a, bad[i], (int64_t)1, (int64_t)2),
                 WEFT_EINVAL, "post '%s'", bad[i]);
  }
  cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN, "nothing was sent");

  /* Brackets as deep as a message may nest, and one deeper. */
  memset(deep, 0, sizeof(deep));
  for (int i = 0; i < WEFT_MSG_MAX_DEPTH; i++) {
    deep[i] = '[';
    deep[WEFT_MSG_MAX_DEPTH + i] = ']';
  }
  cr_assert_eq(weft_port_post_fmt(a, deep), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(weft_msg_read(got, deep), 0);
  weft_msg_free(got);
  memmove(deep + 1, deep, 2 * WEFT_MSG_MAX_DEPTH);
  deep[0] = '[';
  deep[2 * WEFT_MSG_MAX_DEPTH + 1] = ']';
  cr_assert_eq(weft_port_post_fmt(a, deep), WEFT_EINVAL);

  /* NULLs. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(NULL, "I", (int64_t)1), WEFT_EINVAL);
  cr_assert_eq(weft_msg_pack(m, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_pack(m, "s", (const char*)NULL), WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "y", (const void*)NULL, (size_t)1),
               WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "B", (weft_buffer_t*)NULL), WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "P", (weft_port_t*)NULL), WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "H", (weft_shared_t*)NULL), WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert_eq(weft_port_post_fmt(NULL, "I", (int64_t)1), WEFT_EINVAL);
  cr_assert_eq(weft_port_post_fmt(a, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_worker_post_fmt(NULL, "I", (int64_t)1), WEFT_EINVAL);

  /* A message packed already, and one not received, or a received one. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_pack(m, "I", (int64_t)1), 0);
  cr_assert_eq(weft_msg_pack(m, "I", (int64_t)2), WEFT_EINVAL);
  cr_assert_eq(weft_msg_read(m, "I", &v), WEFT_EINVAL);
  got = round_trip(a, b, m);
  cr_assert_eq(weft_msg_pack(got, "I", (int64_t)2), WEFT_EINVAL);
  cr_assert_eq(weft_msg_read(NULL, "I", &v), WEFT_EINVAL);
  cr_assert_eq(weft_msg_read(got, NULL), WEFT_EINVAL);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (strcmp(bad[i], "*") != 0 && strcmp(bad[i], "I*") != 0)
      cr_assert_eq(weft_msg_read(got, bad[i], &v, &v), WEFT_EINVAL, "'%s'",
                   bad[i]);
  cr_assert_eq(weft_msg_read(got, "S", &v, &v), WEFT_EINVAL);
  cr_assert_eq(weft_msg_read(got, "I", &v), 0);
  cr_assert_eq(v, 1);

  /* weft_obj_read: no transfers, no S, NULLs. */
  nil.type = MSGPACK_OBJECT_NIL;
  cr_assert_eq(weft_obj_read(&nil, "n"), 0);
  cr_assert_eq(weft_obj_read(&nil, "B", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(&nil, "P", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(&nil, "H", NULL), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(&nil, "S", NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(&nil, ""), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(NULL, "n"), WEFT_EINVAL);
  cr_assert_eq(weft_obj_read(&nil, NULL), WEFT_EINVAL);
  weft_msg_free(got);
  finish(loop, a, b);
}

/* --- transfers through a worker ------------------------------------------- */

/* What the worker saw; written on its thread, read after the owner's loop
 * ran (the worker's exit orders it). */
static struct {
  int read_err;
  int64_t seq;
  char text[16];
  char bytes[8];
  int reply_err;
} seen;

/* The worker: read ["job", seq, buffer, shared, port], add 1 to the shared
 * buffer's first byte, answer on the port with ["done", seq + 1, buffer]
 * (the same buffer moved back), then close. */
static void worker_msg(weft_port_t* port, weft_msg_t* msg) {
  const char* text = NULL;
  size_t len = 0;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  weft_port_t* reply = NULL;
  void* data = NULL;
  size_t size = 0;

  seen.read_err = weft_msg_read(msg, "sIBHP", &text, &len, &seen.seq, &buf,
                                &sh, &reply);
  if (seen.read_err == 0) {
    memcpy(seen.text, text, len < sizeof(seen.text) ? len : 15);
    if (weft_buffer_data(buf, &data, &size) == 0 && size == 4)
      memcpy(seen.bytes, data, 4);
    ((unsigned char*)weft_shared_data(sh))[0]++;
    seen.reply_err = weft_port_post_fmt(reply, "sIB", "done", seen.seq + 1,
                                        buf);
  }
  weft_buffer_free(buf);
  weft_shared_release(sh);
  weft_port_free(reply);
  weft_port_close(port);
}

static void worker_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), worker_msg);
}

static struct {
  int read_err;
  int64_t seq;
  size_t size;
  char bytes[8];
  int calls;
} reply;

static void reply_msg(weft_port_t* port, weft_msg_t* msg) {
  weft_buffer_t* buf = NULL;
  void* data = NULL;
  reply.calls++;
  reply.read_err = weft_msg_read(msg, "[*IB]", &reply.seq, &buf);
  if (reply.read_err == 0 && weft_buffer_data(buf, &data, &reply.size) == 0)
    memcpy(reply.bytes, data, reply.size < 8 ? reply.size : 8);
  /* Three values, not two: refused. */
  if (reply.read_err == 0 && weft_msg_read(msg, "sI", NULL, NULL, NULL) !=
                                 WEFT_EDECODE)
    reply.read_err = -1;
  weft_buffer_free(buf);
  weft_port_close(port);
}

Test(format, transfers_travel_to_a_worker_and_back) {
  weft_loop_t* loop = new_loop();
  weft_port_t *mine, *theirs;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = new_shared(8);
  weft_worker_t* w;
  worker_end_t end;
  weft_worker_opts_t opts = {0};

  watch_worker_end(&opts, &end);
  new_channel(loop, &mine, &theirs);
  cr_assert_eq(weft_port_on_message(mine, reply_msg), 0);
  cr_assert_eq(weft_buffer_from(&buf, "wxyz", 4), 0);
  ((unsigned char*)weft_shared_data(sh))[0] = 40;
  w = spawn_worker(loop, worker_entry, &opts);
  cr_assert_eq(weft_worker_post_fmt(w, "sIBHP", "job", (int64_t)41, buf, sh,
                                    theirs),
               0);
  cr_assert_eq(weft_buffer_size(buf), 0, "moved to the worker");
  cr_assert_eq(weft_port_post_fmt(theirs, "I", (int64_t)1), WEFT_ECLOSED,
               "the port moved too");
  run_loop(loop);

  cr_assert_eq(end.errors, 0);
  cr_assert_eq(end.exit_code, 0);
  cr_assert_eq(seen.read_err, 0);
  cr_assert_str_eq(seen.text, "job");
  cr_assert_eq(seen.seq, 41);
  cr_assert_eq(memcmp(seen.bytes, "wxyz", 4), 0);
  cr_assert_eq(seen.reply_err, 0);
  cr_assert_eq(reply.calls, 1);
  cr_assert_eq(reply.read_err, 0, "read, and a two-value read refused");
  cr_assert_eq(reply.seq, 42);
  cr_assert_eq(reply.size, 4);
  cr_assert_eq(memcmp(reply.bytes, "wxyz", 4), 0);
  cr_assert_eq(((unsigned char*)weft_shared_data(sh))[0], 41);

  weft_worker_free(w);
  weft_buffer_free(buf);
  weft_shared_release(sh);
  free_channel(mine, theirs);
  free_loop(loop);
}
