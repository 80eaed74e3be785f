/* test_msg.c - Criterion suite for messages: building (packer, append),
 * reading (object, data), keeping past the callback, ext placeholders and
 * take_* checks, and shared buffers posted by reference. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(msg, .timeout = 20);

/* --- helpers ------------------------------------------------------------- */

/* support.h's round_trip(), and the message came back decoded. */
static weft_msg_t* decoded_round_trip(weft_port_t* a,
                                      weft_port_t* b,
                                      weft_msg_t* m) {
  weft_msg_t* got = round_trip(a, b, m);
  cr_assert_not_null(weft_msg_object(got));
  return got;
}

/* --- building ------------------------------------------------------------ */

Test(msg, new_message_is_empty_and_unreadable_until_posted) {
  weft_msg_t* m = NULL;
  size_t len = 99;
  cr_assert_eq(weft_msg_new(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_not_null(m);
  cr_assert_not_null(weft_msg_packer(m));
  cr_assert_null(weft_msg_object(m));
  weft_msg_data(m, &len);
  cr_assert_eq(len, 0);
  msgpack_pack_int(weft_msg_packer(m), 7);
  cr_assert_eq(*weft_msg_data(m, &len), 7);
  cr_assert_eq(len, 1);
  cr_assert_null(weft_msg_object(m)); /* not posted */
  weft_msg_free(m);
  weft_msg_free(NULL);
  cr_assert_null(weft_msg_packer(NULL));
  cr_assert_null(weft_msg_object(NULL));
  cr_assert_null(weft_msg_data(NULL, &len));
  cr_assert_eq(len, 0);
}

Test(msg, packer_builds_large_values_without_limit_surprises) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got;
  const msgpack_object* o;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_packer* pk = weft_msg_packer(m);
  msgpack_pack_array(pk, 5000);
  for (int i = 0; i < 5000; i++)
    msgpack_pack_int(pk, i * 7);
  got = decoded_round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 5000);
  for (int i = 0; i < 5000; i++)
    cr_assert_eq(o->via.array.ptr[i].via.u64, (uint64_t)i * 7);
  weft_msg_free(got);
  finish(loop, a, b);
}

Test(msg, append_copies_pre_packed_bytes_and_mixes_with_the_packer) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got;
  const msgpack_object* o;
  msgpack_sbuffer sb;
  msgpack_packer spk;
  new_channel(loop, &a, &b);

  /* ["one", 2, {"k": "v"}]: header from the packer, elements appended. */
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
  pack_str(&spk, "one");
  msgpack_pack_int(&spk, 2);
  msgpack_pack_map(&spk, 1);
  pack_str(&spk, "k");
  pack_str(&spk, "v");
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_array(weft_msg_packer(m), 3);
  /* In two pieces, split inside a value. */
  cr_assert_eq(weft_msg_append(m, sb.data, 3), 0);
  cr_assert_eq(weft_msg_append(m, sb.data + 3, sb.size - 3), 0);
  cr_assert_eq(weft_msg_append(m, NULL, 0), 0);
  memset(sb.data, 0xc1, sb.size); /* copied: the source may change */
  msgpack_sbuffer_destroy(&sb);
  got = decoded_round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 3);
  cr_assert(obj_str_eq(&o->via.array.ptr[0], "one"));
  cr_assert_eq(o->via.array.ptr[1].via.u64, 2);
  cr_assert_eq(o->via.array.ptr[2].type, MSGPACK_OBJECT_MAP);
  cr_assert(obj_str_eq(&o->via.array.ptr[2].via.map.ptr[0].key, "k"));
  cr_assert(obj_str_eq(&o->via.array.ptr[2].via.map.ptr[0].val, "v"));

  /* A received message is read-only. */
  cr_assert_null(weft_msg_packer(got));
  cr_assert_eq(weft_msg_append(got, "\x01", 1), WEFT_EINVAL);
  weft_msg_free(got);

  cr_assert_eq(weft_msg_append(NULL, "\x01", 1), WEFT_EINVAL);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_append(m, NULL, 1), WEFT_EINVAL);
  weft_msg_free(m);
  finish(loop, a, b);
}

Test(msg, a_message_with_nothing_packed_is_not_posted) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got = NULL;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_lt(weft_port_post_msg(a, &m), 0);
  cr_assert_not_null(m);
  weft_msg_free(m);
  cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN);
  finish(loop, a, b);
}

Test(msg, data_gives_the_raw_bytes_of_a_received_message) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got;
  const char* d;
  size_t len = 0;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  pack_str(weft_msg_packer(m), "abc");
  got = decoded_round_trip(a, b, m);
  d = weft_msg_data(got, &len);
  cr_assert_eq(len, 4);
  cr_assert_arr_eq(d, "\xa3" "abc", 4);
  cr_assert_eq(weft_msg_data(got, NULL), d);
  weft_msg_free(got);
  finish(loop, a, b);
}

/* Integers, nil and bools are decoded without msgpack_unpack (msg.c's
 * decode_int): the object must be the one msgpack_unpack makes, for every
 * width an integer can be packed in (not only the shortest), whether the
 * value travelled inline in the port's slot (weft_port_post, 20 bytes or
 * fewer) or as a message; and bytes of the wrong length still fail. */
Test(msg, integers_nil_and_bools_decode_as_msgpack_unpack_decodes_them) {
  static const struct {
    unsigned char b[9];
    size_t len;
  } cases[] = {
      {{0x00}, 1}, {{0x7f}, 1}, {{0xe0}, 1}, {{0xff}, 1},
      {{0xc0}, 1}, {{0xc2}, 1}, {{0xc3}, 1},
      {{0xcc, 0xff}, 2}, {{0xcc, 0x05}, 2},
      {{0xcd, 0xff, 0xfe}, 3}, {{0xce, 0x80, 0, 0, 1}, 5},
      {{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
      {{0xd0, 0x80}, 2}, {{0xd0, 0x7f}, 2}, {{0xd0, 0xff}, 2},
      {{0xd1, 0x80, 0x00}, 3}, {{0xd1, 0x00, 0x01}, 3},
      {{0xd2, 0xff, 0xff, 0xff, 0xfe}, 5}, {{0xd2, 0x7f, 0, 0, 0}, 5},
      {{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
      {{0xd3, 0, 0, 0, 0, 0, 0, 0, 3}, 9},
      {{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
  };
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  size_t i;
  int how;
  new_channel(loop, &a, &b);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (how = 0; how < 2; how++) {
      msgpack_zone zone;
      msgpack_object want;
      size_t off = 0;
      weft_msg_t *m = NULL, *got = NULL;
      const msgpack_object* o;
      if (how == 0) {
        cr_assert_eq(weft_port_post(a, cases[i].b, cases[i].len), 0);
      } else {
        cr_assert_eq(weft_msg_new(&m), 0);
        cr_assert_eq(weft_msg_append(m, cases[i].b, cases[i].len), 0);
        cr_assert_eq(weft_port_post_msg(a, &m), 0);
      }
      cr_assert_eq(weft_port_receive(b, &got), 0, "case %zu", i);
      o = weft_msg_object(got);
      cr_assert_not_null(o);
      msgpack_zone_init(&zone, 256);
      cr_assert_eq(msgpack_unpack((const char*)cases[i].b, cases[i].len, &off,
                                  &zone, &want),
                   MSGPACK_UNPACK_SUCCESS);
      cr_assert_eq(o->type, want.type, "case %zu: type %d, want %d", i,
                   (int)o->type, (int)want.type);
      cr_assert(msgpack_object_equal(*o, want), "case %zu: value", i);
      msgpack_zone_destroy(&zone);
      weft_msg_free(got);
    }
  }
  /* Too short and too long for the head byte: not one value. */
  {
    static const unsigned char bad[][3] = {{0xcd, 0x01}, {0x05, 0x05},
                                           {0xc0, 0xc0}, {0xd1, 0x01}};
    weft_msg_t* got = NULL;
    for (i = 0; i < 4; i++) {
      cr_assert_eq(weft_port_post(a, bad[i], 2), 0);
      cr_assert_eq(weft_port_receive(b, &got), WEFT_EDECODE, "bad %zu", i);
      cr_assert_null(got);
    }
  }
  finish(loop, a, b);
}

/* --- keep ---------------------------------------------------------------- */

#define KEEP_N 40

static struct {
  weft_msg_t* kept[KEEP_N];
  int n;
  int keep_again;
  int checked;
} kp;

static void check_kept_task(weft_loop_t* loop, void* arg);

static void on_keep(weft_port_t* p, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  cr_assert_not_null(o);
  if (kp.n % 2 == 0) {
    cr_assert_eq(weft_msg_keep(m), 0);
    kp.keep_again = weft_msg_keep(m);
    cr_assert_eq(kp.keep_again, WEFT_EINVAL);
    kp.kept[kp.n / 2] = m;
  }
  kp.n++;
  if (kp.n == KEEP_N) {
    /* Read the kept ones once every callback has returned and other
     * messages were decoded in between. */
    cr_assert_eq(weft_set_immediate(weft_loop_current(), check_kept_task,
                                    NULL, NULL), 0);
    cr_assert_eq(weft_port_close(p), 0);
  }
}

/* ["msg", i, {"text": "number i"}] */
static void pack_numbered(msgpack_packer* pk, int i) {
  char text[32];
  snprintf(text, sizeof(text), "number %d", i);
  msgpack_pack_array(pk, 3);
  pack_str(pk, "msg");
  msgpack_pack_int(pk, i);
  msgpack_pack_map(pk, 1);
  pack_str(pk, "text");
  pack_str(pk, text);
}

static void check_numbered(const msgpack_object* o, int i) {
  char text[32];
  snprintf(text, sizeof(text), "number %d", i);
  cr_assert_not_null(o);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 3);
  cr_assert(obj_str_eq(&o->via.array.ptr[0], "msg"));
  cr_assert_eq(o->via.array.ptr[1].via.u64, (uint64_t)i);
  cr_assert_eq(o->via.array.ptr[2].type, MSGPACK_OBJECT_MAP);
  cr_assert(obj_str_eq(&o->via.array.ptr[2].via.map.ptr[0].val, text));
}

static void check_kept_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  /* Free in an order unlike arrival, reading each first. */
  for (int j = KEEP_N / 2 - 1; j >= 0; j--) {
    check_numbered(weft_msg_object(kp.kept[j]), 2 * j);
    weft_msg_free(kp.kept[j]);
    kp.checked++;
  }
}

Test(msg, kept_messages_outlive_their_callback_and_later_deliveries) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(b, on_keep), 0);
  for (int i = 0; i < KEEP_N; i++) {
    weft_msg_t* m = NULL;
    cr_assert_eq(weft_msg_new(&m), 0);
    pack_numbered(weft_msg_packer(m), i);
    cr_assert_eq(weft_port_post_msg(a, &m), 0);
  }
  run_loop(loop);
  cr_assert_eq(kp.n, KEEP_N);
  cr_assert_eq(kp.checked, KEEP_N / 2);
  finish(loop, a, b);
}

/* A newcomer frees the message inside its callback: weft still owns it
 * there (it frees it when the callback returns), so the call is ignored
 * instead of freeing it twice (ASan saw a double free before). The message
 * stays readable and can still be kept. */
static int freed_in_cb;
static weft_msg_t* kept_after_free;

static void on_free_in_cb(weft_port_t* p, weft_msg_t* m) {
  weft_msg_free(m);
  check_numbered(weft_msg_object(m), freed_in_cb);
  if (freed_in_cb == 1) {
    cr_assert_eq(weft_msg_keep(m), 0);
    weft_msg_free(m); /* kept: the caller's now, so this one frees it */
    kept_after_free = m;
  }
  if (++freed_in_cb == 3)
    cr_assert_eq(weft_port_close(p), 0);
}

Test(msg, free_inside_the_message_callback_is_ignored) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(b, on_free_in_cb), 0);
  for (int i = 0; i < 3; i++) {
    weft_msg_t* m = NULL;
    cr_assert_eq(weft_msg_new(&m), 0);
    pack_numbered(weft_msg_packer(m), i);
    cr_assert_eq(weft_port_post_msg(a, &m), 0);
  }
  run_loop(loop);
  cr_assert_eq(freed_in_cb, 3);
  cr_assert_not_null(kept_after_free);
  finish(loop, a, b);
}

/* Another loop thread cannot keep a message this loop is delivering (it
 * would take its own loop's decode zone, and this loop would free the
 * message after the callback all the same). */
static int keep_elsewhere_rc = 1;
static int keep_elsewhere_calls;

static void keep_from_other_loop(void* arg) {
  weft_loop_t* other = NULL; /* This thread's own loop. */
  /* No Criterion asserts off the test's thread: an error shows as rc. */
  keep_elsewhere_rc = weft_loop_new(&other);
  if (keep_elsewhere_rc == 0)
    keep_elsewhere_rc = weft_msg_keep(arg);
  if (other != NULL && weft_loop_free(other) != 0)
    keep_elsewhere_rc = 2;
}

static void on_keep_elsewhere(weft_port_t* p, weft_msg_t* m) {
  uv_thread_t t;
  keep_elsewhere_calls++;
  cr_assert_eq(uv_thread_create(&t, keep_from_other_loop, m), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_not_null(weft_msg_object(m));
  cr_assert_eq(weft_port_close(p), 0);
}

Test(msg, keep_from_another_loop_thread_is_einval) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(b, on_keep_elsewhere), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  pack_numbered(weft_msg_packer(m), 3);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  run_loop(loop);
  cr_assert_eq(keep_elsewhere_calls, 1);
  cr_assert_eq(keep_elsewhere_rc, WEFT_EINVAL);
  finish(loop, a, b);
}

Test(msg, keep_outside_a_callback_is_einval) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_keep(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_nil(weft_msg_packer(m));
  cr_assert_eq(weft_msg_keep(m), WEFT_EINVAL); /* being built */
  got = decoded_round_trip(a, b, m);
  cr_assert_eq(weft_msg_keep(got), WEFT_EINVAL); /* received: owned already */
  weft_msg_free(got);
  finish(loop, a, b);
}

/* --- ext placeholders and take_* ----------------------------------------- */

static void pack_ext(msgpack_packer* pk, int8_t type, const char* body,
                     size_t n) {
  msgpack_pack_ext(pk, n, type);
  msgpack_pack_ext_body(pk, body, n);
}

Test(msg, ext_kind_knows_only_weft_placeholders) {
  msgpack_object o;
  memset(&o, 0, sizeof(o));
  cr_assert_eq(weft_msg_ext_kind(NULL), 0);
  o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
  cr_assert_eq(weft_msg_ext_kind(&o), 0);
  o.type = MSGPACK_OBJECT_EXT;
  o.via.ext.ptr = "\0\0\0\0";
  o.via.ext.size = 4;
  o.via.ext.type = WEFT_EXT_BUFFER;
  cr_assert_eq(weft_msg_ext_kind(&o), WEFT_EXT_BUFFER);
  o.via.ext.type = WEFT_EXT_PORT;
  cr_assert_eq(weft_msg_ext_kind(&o), WEFT_EXT_PORT);
  o.via.ext.type = WEFT_EXT_SHARED;
  cr_assert_eq(weft_msg_ext_kind(&o), WEFT_EXT_SHARED);
  o.via.ext.type = 5; /* an application's own ext */
  cr_assert_eq(weft_msg_ext_kind(&o), 0);
  o.via.ext.type = 83;
  cr_assert_eq(weft_msg_ext_kind(&o), 0);
  o.via.ext.type = WEFT_EXT_BUFFER;
  o.via.ext.size = 3;
  cr_assert_eq(weft_msg_ext_kind(&o), 0);
}

Test(msg, take_with_anything_but_this_messages_placeholder_is_einval) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got, *other;
  const msgpack_object* o;
  weft_buffer_t* buf = (weft_buffer_t*)&buf;
  weft_port_t* port = (weft_port_t*)&port;
  weft_shared_t* sh = (weft_shared_t*)&sh;
  new_channel(loop, &a, &b);
  /* [1, "s", ext5, forged ext80 #0, forged ext81 #0, forged ext82 #7] */
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_packer* pk = weft_msg_packer(m);
  msgpack_pack_array(pk, 6);
  msgpack_pack_int(pk, 1);
  pack_str(pk, "s");
  pack_ext(pk, 5, "\0\0\0\0", 4);
  pack_ext(pk, WEFT_EXT_BUFFER, "\0\0\0\0", 4);
  pack_ext(pk, WEFT_EXT_PORT, "\0\0\0\0", 4);
  pack_ext(pk, WEFT_EXT_SHARED, "\0\0\0\7", 4);
  got = decoded_round_trip(a, b, m);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  for (uint32_t i = 0; i < o->via.array.size; i++) {
    const msgpack_object* e = &o->via.array.ptr[i];
    cr_assert_eq(weft_msg_take_buffer(got, e, &buf), WEFT_EINVAL, "#%u", i);
    cr_assert_null(buf);
    cr_assert_eq(weft_msg_take_port(got, e, &port), WEFT_EINVAL, "#%u", i);
    cr_assert_null(port);
    cr_assert_eq(weft_msg_take_shared(got, e, &sh), WEFT_EINVAL, "#%u", i);
    cr_assert_null(sh);
  }
  /* The placeholders decode as weft's kinds, but this message transfers
   * nothing: forged indexes are refused above. */
  cr_assert_eq(weft_msg_ext_kind(&o->via.array.ptr[3]), WEFT_EXT_BUFFER);
  cr_assert_eq(weft_msg_take_buffer(got, o, &buf), WEFT_EINVAL);
  cr_assert_eq(weft_msg_take_buffer(NULL, o, &buf), WEFT_EINVAL);
  cr_assert_eq(weft_msg_take_buffer(got, NULL, &buf), WEFT_EINVAL);
  cr_assert_eq(weft_msg_take_buffer(got, o, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_take_port(got, o, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_take_shared(got, o, NULL), WEFT_EINVAL);

  /* A placeholder of another message does not index into this one. */
  weft_buffer_t* real = NULL;
  cr_assert_eq(weft_buffer_from(&real, "xyz", 3), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, real), 0);
  other = decoded_round_trip(a, b, m);
  cr_assert_eq(weft_msg_take_buffer(got, weft_msg_object(other), &buf),
               WEFT_EINVAL);
  /* Nor into one whose list has an entry at that index: a third message
   * with a buffer of its own at #0 refuses other's placeholder (taking
   * its own buffer instead would hand out the wrong object). */
  weft_buffer_t* real2 = NULL;
  weft_msg_t* third;
  cr_assert_eq(weft_buffer_from(&real2, "abcd", 4), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, real2), 0);
  third = decoded_round_trip(a, b, m);
  cr_assert_eq(weft_msg_take_buffer(third, weft_msg_object(other), &buf),
               WEFT_EINVAL);
  cr_assert_null(buf);
  cr_assert_eq(weft_msg_take_buffer(other, weft_msg_object(other), &buf), 0);
  cr_assert_eq(weft_buffer_size(buf), 3);
  weft_buffer_free(buf);
  cr_assert_eq(weft_msg_take_buffer(third, weft_msg_object(third), &buf), 0);
  cr_assert_eq(weft_buffer_size(buf), 4);
  weft_buffer_free(buf);
  weft_buffer_free(real);
  weft_buffer_free(real2);
  weft_msg_free(third);
  weft_msg_free(other);
  weft_msg_free(got);

  /* Nothing can be taken from a message being built. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_buffer_new(&real, 1), 0);
  cr_assert_eq(weft_msg_add_buffer(m, real), 0);
  cr_assert_eq(weft_msg_take_buffer(m, weft_msg_object(m), &buf),
               WEFT_EINVAL);
  weft_msg_free(m);
  cr_assert(!weft_buffer_detached(real));
  weft_buffer_free(real);
  finish(loop, a, b);
}

Test(msg, add_to_a_received_message_or_with_null_is_einval) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b, *c1, *c2;
  weft_msg_t *m = NULL, *got;
  weft_buffer_t* buf = NULL;
  weft_shared_t* sh = NULL;
  new_channel(loop, &a, &b);
  new_channel(loop, &c1, &c2);
  cr_assert_eq(weft_buffer_new(&buf, 4), 0);
  cr_assert_eq(weft_shared_new(&sh, 64), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_nil(weft_msg_packer(m));
  got = decoded_round_trip(a, b, m);
  cr_assert_eq(weft_msg_add_buffer(got, buf), WEFT_EINVAL);
  cr_assert_eq(weft_msg_add_port(got, c2), WEFT_EINVAL);
  cr_assert_eq(weft_msg_add_shared(got, sh), WEFT_EINVAL);
  weft_msg_free(got);
  cr_assert_eq(weft_msg_add_buffer(NULL, buf), WEFT_EINVAL);
  cr_assert_eq(weft_msg_add_shared(NULL, sh), WEFT_EINVAL);
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_buffer(m, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_add_shared(m, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_msg_add_port(m, NULL), WEFT_EINVAL);
  weft_msg_free(m);
  /* Nothing was taken from the objects. */
  cr_assert(!weft_buffer_detached(buf));
  cr_assert(!weft_port_closed(c2));
  weft_buffer_free(buf);
  weft_shared_release(sh);
  free_channel(c1, c2);
  finish(loop, a, b);
}

/* --- shared buffers by reference ----------------------------------------- */

static struct {
  weft_shared_t* got;
  weft_shared_t* got2;
  void* data;
  int n;
} shr;

static void on_shared(weft_port_t* p, weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  cr_assert_eq(o->type, MSGPACK_OBJECT_MAP);
  cr_assert(obj_str_eq(&o->via.map.ptr[0].key, "sab"));
  cr_assert_eq(weft_msg_ext_kind(&o->via.map.ptr[0].val), WEFT_EXT_SHARED);
  cr_assert_eq(weft_msg_take_shared(m, &o->via.map.ptr[0].val, &shr.got), 0);
  /* Any number of times: each take is a reference of its own. */
  cr_assert_eq(weft_msg_take_shared(m, &o->via.map.ptr[0].val, &shr.got2), 0);
  shr.data = weft_shared_data(shr.got);
  shr.n++;
  /* Write through the receiver's reference. */
  cr_assert_eq(weft_atomic_store32(shr.got, 1, 1234), 0);
  cr_assert_eq(weft_port_close(p), 0);
}

Test(msg, shared_buffer_is_posted_by_reference) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* m = NULL;
  weft_shared_t* sh = NULL;
  int32_t v = 0;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_shared_new(&sh, 256), 0);
  cr_assert_eq(weft_atomic_store32(sh, 0, 42), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_map(weft_msg_packer(m), 1);
  pack_str(weft_msg_packer(m), "sab");
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  /* The sender's handle stays usable. */
  cr_assert_eq(weft_atomic_load32(sh, 0, &v), 0);
  cr_assert_eq(v, 42);
  cr_assert_eq(weft_port_on_message(b, on_shared), 0);
  run_loop(loop);
  cr_assert_eq(shr.n, 1);
  cr_assert_eq(shr.data, weft_shared_data(sh)); /* the same memory */
  cr_assert_eq(shr.got2, shr.got);
  cr_assert_eq(weft_shared_size(shr.got), 256);
  cr_assert_eq(weft_atomic_load32(sh, 1, &v), 0);
  cr_assert_eq(v, 1234);
  /* Three references now: the sender's and two taken. Dropping the
   * receiver's leaves the memory to the sender. */
  weft_shared_release(shr.got);
  weft_shared_release(shr.got2);
  cr_assert_eq(weft_atomic_load32(sh, 0, &v), 0);
  cr_assert_eq(v, 42);
  weft_shared_release(sh);
  finish(loop, a, b);
}

Test(msg, shared_references_in_unposted_or_untaken_messages_are_released) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got = NULL;
  weft_shared_t* sh = NULL;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_shared_new(&sh, 64), 0);
  /* Built and freed unposted. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  weft_msg_free(m);
  /* Posted, received, freed without taking. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  weft_msg_free(got);
  /* Posted and dropped: still pending when the port is freed. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  /* A failed post keeps the message (and its reference) with the caller. */
  cr_assert_eq(weft_msg_new(&m), 0);
  cr_assert_eq(weft_msg_add_shared(m, sh), 0);
  cr_assert_eq(weft_port_set_max_message(a, 2), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), WEFT_EMSGSIZE); /* 6 bytes */
  weft_msg_free(m);
  weft_shared_release(sh);
  finish(loop, a, b);
}

/* --- nesting depth (WEFT_ETOODEEP) and foreign headers ------------------- */

/* `depth` arrays (or maps, {0: ...}) nested in one another around a nil,
 * after a string of `pad` bytes in the outermost array (so that the deep
 * part is not at the start). Returns the length written into `buf`. */
static size_t pack_deep(char* buf, size_t cap, int depth, bool maps, size_t pad) {
  size_t n = 0;
  cr_assert_lt((size_t)depth * 2 + pad + 8, cap);
  for (int i = 0; i < depth; i++) {
    if (i == 0 && pad > 0) {
      buf[n++] = maps ? (char)0x82 : (char)0x92; /* two entries */
      if (maps)
        buf[n++] = 0x01; /* key 1 */
      buf[n++] = (char)0xda; /* str16 */
      buf[n++] = (char)(pad >> 8);
      buf[n++] = (char)pad;
      memset(buf + n, 'x', pad);
      n += pad;
    } else {
      buf[n++] = maps ? (char)0x81 : (char)0x91;
    }
    if (maps)
      buf[n++] = 0x00; /* key 0 */
  }
  buf[n++] = (char)0xc0;
  return n;
}

static int pack_deep_fn(msgpack_packer* pk, void* arg) {
  int depth = *(int*)arg;
  for (int i = 0; i < depth; i++)
    msgpack_pack_array(pk, 1);
  return msgpack_pack_nil(pk);
}

static int depth_of(const msgpack_object* o) {
  int d = 0;
  while (o->type == MSGPACK_OBJECT_ARRAY || o->type == MSGPACK_OBJECT_MAP) {
    d++;
    if (o->type == MSGPACK_OBJECT_ARRAY)
      o = &o->via.array.ptr[o->via.array.size - 1];
    else
      o = &o->via.map.ptr[o->via.map.size - 1].val;
  }
  return d;
}

/* Before the fix a 33-deep value was posted and the receiver reported
 * WEFT_ENOMEM (msgpack-c's fixed stack); now every way of posting refuses
 * it at the sender and 32 levels still travel. */
Test(msg, values_nested_deeper_than_32_are_refused_at_the_sender) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m = NULL, *got = NULL;
  char buf[4096];
  size_t len;
  int depth;
  new_channel(loop, &a, &b);
  for (int maps = 0; maps < 2; maps++) {
    for (size_t pad = 0; pad <= 1000; pad += 1000) {
      len = pack_deep(buf, sizeof buf, 32, maps, pad);
      cr_assert_eq(weft_port_post(a, buf, len), 0);
      cr_assert_eq(weft_port_receive(b, &got), 0);
      cr_assert_eq(depth_of(weft_msg_object(got)), 32);
      weft_msg_free(got);

      len = pack_deep(buf, sizeof buf, 33, maps, pad);
      cr_assert_eq(weft_port_post(a, buf, len), WEFT_ETOODEEP,
                   "maps %d pad %zu", maps, pad);
      cr_assert_eq(weft_msg_new(&m), 0);
      cr_assert_eq(weft_msg_append(m, buf, len), 0);
      cr_assert_eq(weft_port_post_msg(a, &m), WEFT_ETOODEEP);
      cr_assert_not_null(m, "a refused message stays the caller's");
      weft_msg_free(m);
      cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN);
    }
  }
  depth = 32;
  cr_assert_eq(weft_port_post_fn(a, pack_deep_fn, &depth), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(depth_of(weft_msg_object(got)), 32);
  weft_msg_free(got);
  depth = 33;
  cr_assert_eq(weft_port_post_fn(a, pack_deep_fn, &depth), WEFT_ETOODEEP);
  depth = 1000;
  cr_assert_eq(weft_port_post_fn(a, pack_deep_fn, &depth), WEFT_ETOODEEP);
  cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN);
  /* An empty container counts as a level too (msgpack-c refuses it). */
  memset(buf, 0x91, 32);
  buf[32] = (char)0x90;
  cr_assert_eq(weft_port_post(a, buf, 33), WEFT_ETOODEEP);
  buf[31] = (char)0x90;
  cr_assert_eq(weft_port_post(a, buf, 32), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  weft_msg_free(got);
  cr_assert_str_eq(weft_err_name(WEFT_ETOODEEP), "ETOODEEP");
  finish(loop, a, b);
}

static void deep_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
}

Test(msg, deep_spawn_and_environment_data_are_refused) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  char buf[256];
  size_t len = pack_deep(buf, sizeof buf, 33, false, 0);
  opts.data = buf;
  opts.data_len = len;
  cr_assert_eq(weft_worker_spawn(&w, loop, deep_entry, &opts), WEFT_ETOODEEP);
  cr_assert_null(w);
  cr_assert_eq(weft_set_environment_data("deep", buf, len), WEFT_ETOODEEP);
  len = pack_deep(buf, sizeof buf, 32, true, 0);
  cr_assert_eq(weft_set_environment_data("deep", buf, len), 0);
  cr_assert_eq(weft_set_environment_data("deep", NULL, 0), 0);
  opts.data_len = len;
  cr_assert_eq(weft_worker_spawn(&w, loop, deep_entry, &opts), 0);
  run_loop(loop);
  weft_worker_free(w);
  free_loop(loop);
}

/* The process's peak of virtual memory, in KiB (Linux). */
static size_t vm_peak_kib(void) {
  char line[256];
  size_t kib = 0;
  FILE* f = fopen("/proc/self/status", "r");
  cr_assert_not_null(f);
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "VmPeak: %zu kB", &kib) == 1)
      break;
  }
  fclose(f);
  return kib;
}

/* A header that claims more elements than bytes follow is refused before
 * msgpack would allocate for the claim: before the fix array32 of 4 Gi
 * elements made it reserve 96 GiB (which failed as WEFT_ENOMEM, or, where
 * the kernel grants it, raised the process's peak by as much). */
Test(msg, headers_claiming_more_than_the_bytes_hold_are_edecode) {
  static const char* const bad[] = {
      "\xdd\xff\xff\xff\xff",         /* array32, 4 Gi elements, none */
      "\xdf\xff\xff\xff\xff\x00",     /* map32, 4 Gi pairs */
      "\x91\xdd\x7f\xff\xff\xff\x01", /* nested, 2 Gi elements */
      "\xdc\x00\x03\x01\x02",         /* array16 of 3, two follow */
      "\x92\xdc\x00\x02\x01\x02",     /* inner takes the outer's bytes */
  };
  static const size_t lens[] = {5, 6, 7, 5, 6};
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t* got = NULL;
  size_t peak;
  new_channel(loop, &a, &b);
  peak = vm_peak_kib();
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    cr_assert_eq(weft_port_post(a, bad[i], lens[i]), 0, "case %zu", i);
    cr_assert_eq(weft_port_receive(b, &got), WEFT_EDECODE, "case %zu: %s", i,
                 weft_err_name(weft_port_receive(b, &got)));
    cr_assert_null(got);
  }
  cr_assert_lt(vm_peak_kib(), peak + (1 << 20),
               "decoding reserved %zu MiB for the claims",
               (vm_peak_kib() - peak) >> 10);
  /* The same bytes honestly filled travel. */
  cr_assert_eq(weft_port_post(a, "\x92\xdc\x00\x02\x01\x02\x03", 7), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(weft_msg_object(got)->via.array.size, 2);
  weft_msg_free(got);
  finish(loop, a, b);
}
