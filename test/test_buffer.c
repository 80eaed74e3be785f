/* test_buffer.c - Criterion suite for buffers (ArrayBuffer): allocation,
 * accessors, transfer in messages (zero copy, detach, take once, freed with
 * an untaken message), markAsUntransferable, invalid transfer lists, failed
 * posts, and a round trip through a worker. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(buffer, .timeout = 20);

/* --- helpers ------------------------------------------------------------- */

static weft_buffer_t* filled(size_t size, unsigned seed) {
  weft_buffer_t* buf = NULL;
  unsigned char* d = NULL;
  cr_assert_eq(weft_buffer_new(&buf, size), 0);
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, NULL), 0);
  for (size_t i = 0; i < size; i++)
    d[i] = (unsigned char)(i * 31 + seed);
  return buf;
}

static void check_filled(weft_buffer_t* buf, size_t size, unsigned seed) {
  unsigned char* d = NULL;
  size_t n = 0;
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, &n), 0);
  cr_assert_eq(n, size);
  for (size_t i = 0; i < size; i++)
    cr_assert_eq(d[i], (unsigned char)(i * 31 + seed), "byte %zu", i);
}

/* A message whose value is {"buf": <placeholder>}. */
static weft_msg_t* msg_with(weft_buffer_t* buf, int* err) {
  weft_msg_t* m = NULL;
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_packer* pk = weft_msg_packer(m);
  msgpack_pack_map(pk, 1);
  pack_str(pk, "buf");
  *err = weft_msg_add_buffer(m, buf);
  return m;
}

static const msgpack_object* placeholder(weft_msg_t* m) {
  const msgpack_object* o = weft_msg_object(m);
  cr_assert_not_null(o);
  cr_assert_eq(o->type, MSGPACK_OBJECT_MAP);
  cr_assert_eq(o->via.map.size, 1);
  return &o->via.map.ptr[0].val;
}

/* --- plain buffers ------------------------------------------------------- */

Test(buffer, new_is_zeroed_and_from_copies) {
  weft_buffer_t *z = NULL, *c = NULL, *e = NULL;
  unsigned char* d = NULL;
  size_t n = 0;
  char src[100];
  cr_assert_eq(weft_buffer_new(&z, 1000), 0);
  cr_assert_eq(weft_buffer_size(z), 1000);
  cr_assert_eq(weft_buffer_data(z, (void**)&d, &n), 0);
  cr_assert_not_null(d);
  cr_assert_eq(n, 1000);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(d[i], 0);
  cr_assert(!weft_buffer_detached(z));
  memset(src, 'q', sizeof(src));
  cr_assert_eq(weft_buffer_from(&c, src, sizeof(src)), 0);
  memset(src, 0, sizeof(src)); /* a copy: independent of src */
  cr_assert_eq(weft_buffer_data(c, (void**)&d, NULL), 0);
  cr_assert_neq((void*)d, (void*)src);
  for (size_t i = 0; i < 100; i++)
    cr_assert_eq(d[i], 'q');
  cr_assert_eq(weft_buffer_size(c), 100);
  cr_assert_eq(weft_buffer_data(c, NULL, &n), 0);
  cr_assert_eq(n, 100);
  cr_assert_eq(weft_buffer_new(&e, 0), 0);
  cr_assert_eq(weft_buffer_size(e), 0);
  weft_buffer_free(z);
  weft_buffer_free(c);
  weft_buffer_free(e);
}

Test(buffer, null_arguments) {
  weft_buffer_t* b = (weft_buffer_t*)&b;
  void* d = &d;
  size_t n = 5;
  cr_assert_eq(weft_buffer_new(NULL, 4), WEFT_EINVAL);
  cr_assert_eq(weft_buffer_from(NULL, "x", 1), WEFT_EINVAL);
  cr_assert_eq(weft_buffer_from(&b, NULL, 3), WEFT_EINVAL);
  cr_assert_eq(weft_buffer_data(NULL, &d, &n), WEFT_EINVAL);
  cr_assert_null(d);
  cr_assert_eq(n, 0);
  cr_assert_eq(weft_buffer_size(NULL), 0);
  cr_assert(!weft_buffer_detached(NULL));
  cr_assert_eq(weft_buffer_mark_untransferable(NULL), WEFT_EINVAL);
  weft_buffer_free(NULL);
  /* An empty copy of nothing is fine. */
  b = NULL;
  cr_assert_eq(weft_buffer_from(&b, NULL, 0), 0);
  cr_assert_eq(weft_buffer_size(b), 0);
  weft_buffer_free(b);
}

/* --- transfer ------------------------------------------------------------ */

static struct {
  weft_buffer_t* got;
  void* got_data;
  int take_again;
  int n;
} tr;

static void on_buffer(weft_port_t* p, weft_msg_t* m) {
  const msgpack_object* ph = placeholder(m);
  weft_buffer_t* again = (weft_buffer_t*)&again;
  cr_assert_eq(weft_msg_ext_kind(ph), WEFT_EXT_BUFFER);
  cr_assert_eq(weft_msg_take_buffer(m, ph, &tr.got), 0);
  cr_assert_not_null(tr.got);
  tr.take_again = weft_msg_take_buffer(m, ph, &again);
  cr_assert_null(again);
  cr_assert_eq(weft_buffer_data(tr.got, &tr.got_data, NULL), 0);
  tr.n++;
  cr_assert_eq(weft_port_close(p), 0);
}

Test(buffer, transfer_moves_the_bytes_without_a_copy_and_detaches_the_sender) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(64 * 1024, 7);
  void *data = NULL, *d2 = &d2;
  size_t n = 1;
  int err;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_buffer_data(buf, &data, NULL), 0);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  /* Listed, not yet posted: still the sender's. */
  cr_assert(!weft_buffer_detached(buf));
  cr_assert_eq(weft_buffer_size(buf), 64 * 1024);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_null(m);
  cr_assert(weft_buffer_detached(buf));
  cr_assert_eq(weft_buffer_size(buf), 0);
  cr_assert_eq(weft_buffer_data(buf, &d2, &n), WEFT_EDETACHED);
  cr_assert_null(d2);
  cr_assert_eq(n, 0);
  /* A detached buffer cannot be listed again. */
  m = msg_with(buf, &err);
  cr_assert_eq(err, WEFT_EDETACHED);
  weft_msg_free(m);

  cr_assert_eq(weft_port_on_message(b, on_buffer), 0);
  run_loop(loop);
  cr_assert_eq(tr.n, 1);
  cr_assert_eq(tr.take_again, WEFT_EDETACHED);
  cr_assert_eq(tr.got_data, data, "the bytes were copied");
  check_filled(tr.got, 64 * 1024, 7);
  cr_assert(!weft_buffer_detached(tr.got));
  weft_buffer_free(tr.got);
  weft_buffer_free(buf); /* the husk */
  finish(loop, a, b);
}

Test(buffer, untaken_transferred_buffers_are_freed_with_their_message) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b, *c, *d;
  weft_msg_t *m, *got = NULL;
  weft_buffer_t *b1 = filled(1000, 1), *b2 = filled(2000, 2),
                *b3 = filled(3000, 3);
  int err;
  new_channel(loop, &a, &b);
  new_channel(loop, &c, &d);
  /* Received and freed without a take. */
  m = msg_with(b1, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  weft_msg_free(got);
  /* Dropped on the receiver's side by close. */
  m = msg_with(b2, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_close(b), 0);
  /* Still pending when the receiving port is freed. */
  m = msg_with(b3, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(c, &m), 0);
  cr_assert(weft_buffer_detached(b1));
  cr_assert(weft_buffer_detached(b2));
  cr_assert(weft_buffer_detached(b3));
  weft_buffer_free(b1);
  weft_buffer_free(b2);
  weft_buffer_free(b3);
  free_channel(d, c);
  finish(loop, a, b);
}

static void on_ignore(weft_port_t* p, weft_msg_t* m) {
  (void)m;
  weft_port_close(p);
}

Test(buffer, untaken_buffer_in_a_delivered_message_is_freed_after_the_callback) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(4096, 9);
  int err;
  new_channel(loop, &a, &b);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_on_message(b, on_ignore), 0);
  run_loop(loop);
  weft_buffer_free(buf);
  finish(loop, a, b); /* LeakSanitizer checks the 4096 bytes went */
}

Test(buffer, untransferable_buffers_are_refused_but_can_be_copied) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(32, 5);
  weft_msg_t *m, *got = NULL;
  void* data;
  size_t n;
  int err;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_buffer_mark_untransferable(buf), 0);
  m = msg_with(buf, &err);
  cr_assert_eq(err, WEFT_EUNTRANSFERABLE);
  weft_msg_free(m);
  cr_assert(!weft_buffer_detached(buf));
  /* Copying its bytes into a message is fine. */
  cr_assert_eq(weft_buffer_data(buf, &data, &n), 0);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_bin(weft_msg_packer(m), n);
  msgpack_pack_bin_body(weft_msg_packer(m), data, n);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(weft_msg_object(got)->type, MSGPACK_OBJECT_BIN);
  cr_assert_eq(weft_msg_object(got)->via.bin.size, 32);
  cr_assert_arr_eq(weft_msg_object(got)->via.bin.ptr, data, 32);
  weft_msg_free(got);
  check_filled(buf, 32, 5);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

Test(buffer, marking_after_listing_fails_the_post_and_moves_nothing) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(32, 6);
  weft_msg_t *m, *got = NULL;
  int err;
  new_channel(loop, &a, &b);
  m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_buffer_mark_untransferable(buf), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), WEFT_EUNTRANSFERABLE);
  cr_assert_not_null(m);
  weft_msg_free(m);
  cr_assert(!weft_buffer_detached(buf));
  check_filled(buf, 32, 6);
  cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

Test(buffer, listing_one_buffer_twice_is_edataclone) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(8, 1);
  weft_msg_t* m = NULL;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  msgpack_pack_array(weft_msg_packer(m), 2);
  cr_assert_eq(weft_msg_add_buffer(m, buf), 0);
  cr_assert_eq(weft_msg_add_buffer(m, buf), WEFT_EDATACLONE);
  weft_msg_free(m);
  cr_assert(!weft_buffer_detached(buf));
  check_filled(buf, 8, 1);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

Test(buffer, a_buffer_moved_by_one_message_fails_the_other) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t *buf = filled(8, 1), *got_buf = NULL;
  weft_msg_t *m1, *m2, *got = NULL;
  int err;
  new_channel(loop, &a, &b);
  m1 = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  m2 = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m1), 0);
  cr_assert_eq(weft_port_post_msg(a, &m2), WEFT_EDETACHED);
  cr_assert_not_null(m2);
  weft_msg_free(m2);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(weft_msg_take_buffer(got, placeholder(got), &got_buf), 0);
  check_filled(got_buf, 8, 1);
  weft_msg_free(got);
  cr_assert_eq(weft_port_receive(b, &got), WEFT_EAGAIN);
  weft_buffer_free(got_buf);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

Test(buffer, failed_post_leaves_the_buffer_attached_and_usable) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* buf = filled(100, 4);
  void *before = NULL, *after = NULL;
  weft_msg_t* m;
  int err;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_buffer_data(buf, &before, NULL), 0);
  m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_set_max_message(a, 4), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), WEFT_EMSGSIZE);
  cr_assert_eq(weft_port_set_max_message(a, 1 << 20), 0);
  cr_assert_eq(weft_port_close(b), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), WEFT_ECLOSED);
  weft_msg_free(m);
  cr_assert(!weft_buffer_detached(buf));
  cr_assert_eq(weft_buffer_size(buf), 100);
  cr_assert_eq(weft_buffer_data(buf, &after, NULL), 0);
  cr_assert_eq(after, before);
  check_filled(buf, 100, 4);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

Test(buffer, several_buffers_in_one_message_are_taken_in_any_order) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t* bufs[3] = {filled(10, 1), filled(0, 0), filled(30, 3)};
  void* datas[3];
  weft_msg_t *m = NULL, *got = NULL;
  const msgpack_object* o;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_msg_new(&m), 0);
  /* [buf0, "mid", [buf1, buf2]] */
  msgpack_packer* pk = weft_msg_packer(m);
  msgpack_pack_array(pk, 3);
  cr_assert_eq(weft_msg_add_buffer(m, bufs[0]), 0);
  pack_str(pk, "mid");
  msgpack_pack_array(pk, 2);
  cr_assert_eq(weft_msg_add_buffer(m, bufs[1]), 0);
  cr_assert_eq(weft_msg_add_buffer(m, bufs[2]), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(weft_buffer_data(bufs[i], &datas[i], NULL), 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  for (int i = 0; i < 3; i++)
    cr_assert(weft_buffer_detached(bufs[i]));
  cr_assert_eq(weft_port_receive(b, &got), 0);
  o = weft_msg_object(got);
  cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
  cr_assert_eq(o->via.array.size, 3);
  const msgpack_object* inner = &o->via.array.ptr[2];
  weft_buffer_t *t2 = NULL, *t0 = NULL, *t1 = NULL;
  void* d = NULL;
  cr_assert_eq(weft_msg_take_buffer(got, &inner->via.array.ptr[1], &t2), 0);
  cr_assert_eq(weft_msg_take_buffer(got, &o->via.array.ptr[0], &t0), 0);
  cr_assert_eq(weft_msg_take_buffer(got, &inner->via.array.ptr[0], &t1), 0);
  weft_msg_free(got); /* taken buffers are ours now */
  check_filled(t0, 10, 1);
  cr_assert_eq(weft_buffer_size(t1), 0);
  check_filled(t2, 30, 3);
  cr_assert_eq(weft_buffer_data(t0, &d, NULL), 0);
  cr_assert_eq(d, datas[0]);
  cr_assert_eq(weft_buffer_data(t2, &d, NULL), 0);
  cr_assert_eq(d, datas[2]);
  weft_buffer_free(t0);
  weft_buffer_free(t1);
  weft_buffer_free(t2);
  for (int i = 0; i < 3; i++)
    weft_buffer_free(bufs[i]);
  finish(loop, a, b);
}

/* Keep the message, take the buffer later from a timer. */
static weft_msg_t* kept;

static void take_later(weft_loop_t* loop, void* arg) {
  weft_buffer_t* got = NULL;
  (void)loop;
  cr_assert_eq(weft_msg_take_buffer(kept, placeholder(kept), &got), 0);
  weft_msg_free(kept);
  check_filled(got, 500, 8);
  *(weft_buffer_t**)arg = got;
}

static void on_keep(weft_port_t* p, weft_msg_t* m) {
  cr_assert_eq(weft_msg_keep(m), 0);
  kept = m;
  cr_assert_eq(weft_set_immediate(weft_loop_current(), take_later,
                                  weft_port_get_data(p), NULL), 0);
  cr_assert_eq(weft_port_close(p), 0);
}

Test(buffer, a_kept_message_gives_its_buffer_after_the_callback) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_buffer_t *buf = filled(500, 8), *got = NULL;
  int err;
  new_channel(loop, &a, &b);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  weft_port_set_data(b, &got);
  cr_assert_eq(weft_port_on_message(b, on_keep), 0);
  run_loop(loop);
  cr_assert_not_null(got);
  weft_buffer_free(got);
  weft_buffer_free(buf);
  finish(loop, a, b);
}

/* --- through a worker and back ------------------------------------------- */

/* The worker takes the buffer, adds 1 to every byte, and transfers it back
 * over its parent port. */
static void wk_on_msg(weft_port_t* parent, weft_msg_t* m) {
  weft_buffer_t* buf = NULL;
  unsigned char* d;
  size_t n;
  int err;
  if (weft_msg_take_buffer(m, placeholder(m), &buf) != 0) {
    weft_report_error("no buffer");
    return;
  }
  weft_buffer_data(buf, (void**)&d, &n);
  for (size_t i = 0; i < n; i++)
    d[i]++;
  weft_msg_t* back = msg_with(buf, &err);
  if (err != 0 || weft_port_post_msg(parent, &back) != 0) {
    weft_msg_free(back);
    weft_report_error("post back failed");
  }
  weft_buffer_free(buf); /* the detached handle */
  weft_port_on_message(parent, NULL);
}

static void wk_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), wk_on_msg);
}

static struct {
  weft_buffer_t* back;
  worker_end_t end;
} wk;

static void wk_on_message(weft_worker_t* w, weft_msg_t* m) {
  (void)w;
  cr_assert_eq(weft_msg_take_buffer(m, placeholder(m), &wk.back), 0);
}

Test(buffer, transfer_to_a_worker_and_back_keeps_the_same_memory) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  weft_buffer_t* buf = filled(1 << 16, 11);
  void *sent = NULL, *back = NULL;
  int err;
  watch_worker_end(&opts, &wk.end);
  opts.events.message = wk_on_message;
  cr_assert_eq(weft_buffer_data(buf, &sent, NULL), 0);
  w = spawn_worker(loop, wk_entry, &opts);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_worker_post_msg(w, &m), 0);
  cr_assert(weft_buffer_detached(buf));
  run_loop(loop);
  cr_assert_eq(wk.end.errors, 0);
  cr_assert_eq(wk.end.exit_code, 0);
  cr_assert_not_null(wk.back);
  check_filled(wk.back, 1 << 16, 12);
  cr_assert_eq(weft_buffer_data(wk.back, &back, NULL), 0);
  cr_assert_eq(back, sent, "the bytes were copied on the way");
  weft_buffer_free(wk.back);
  weft_buffer_free(buf);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- adopted memory (weft_buffer_adopt) ---------------------------------- */

/* What free_fn saw: calls, the last bytes and arg, and the thread. */
static struct {
  atomic_int calls;
  void* bytes;
  void* arg;
  pthread_t thread;
} freed;

static void count_free(void* bytes, void* arg) {
  freed.bytes = bytes;
  freed.arg = arg;
  freed.thread = pthread_self();
  free(bytes);
  /* Release: the fields above are written before the count is seen. */
  atomic_fetch_add_explicit(&freed.calls, 1, memory_order_release);
}

static void reset_freed(void) {
  atomic_store(&freed.calls, 0);
  freed.bytes = NULL;
  freed.arg = NULL;
}

static unsigned char* app_bytes(size_t n, unsigned seed) {
  unsigned char* p = malloc(n == 0 ? 1 : n);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++)
    p[i] = (unsigned char)(i * 31 + seed);
  return p;
}

Test(buffer, adopt_wraps_without_a_copy_and_frees_once_with_its_args) {
  weft_buffer_t* buf = NULL;
  unsigned char* p = app_bytes(300, 5);
  int tag;
  void* d = NULL;
  reset_freed();
  cr_assert_eq(weft_buffer_adopt(&buf, p, 300, count_free, &tag), 0);
  cr_assert_eq(weft_buffer_data(buf, &d, NULL), 0);
  cr_assert_eq(d, p, "adopt copied the bytes");
  check_filled(buf, 300, 5);
  cr_assert_eq(atomic_load(&freed.calls), 0);
  weft_buffer_free(buf);
  cr_assert_eq(atomic_load(&freed.calls), 1);
  cr_assert_eq(freed.bytes, p);
  cr_assert_eq(freed.arg, &tag);
  cr_assert(pthread_equal(freed.thread, pthread_self()));
}

Test(buffer, adopt_with_no_free_function_never_frees) {
  static unsigned char fixed[16] = {1, 2, 3};
  weft_buffer_t *buf = NULL, *t = NULL, *e = NULL;
  cr_assert_eq(weft_buffer_adopt(&buf, fixed, sizeof(fixed), NULL, NULL), 0);
  cr_assert_eq(weft_buffer_size(buf), sizeof(fixed));
  /* Shrinking keeps the same (static) bytes: still nothing to free. */
  cr_assert_eq(weft_buffer_transfer(buf, 3, &t), 0);
  cr_assert_eq(weft_buffer_size(t), 3);
  weft_buffer_free(t);
  weft_buffer_free(buf);
  /* Empty: NULL bytes are fine with len 0. */
  cr_assert_eq(weft_buffer_adopt(&e, NULL, 0, NULL, NULL), 0);
  cr_assert_eq(weft_buffer_size(e), 0);
  cr_assert_not(weft_buffer_detached(e));
  weft_buffer_free(e);
  cr_assert_eq(fixed[0], 1);
}

Test(buffer, adopt_bad_input_is_einval_and_leaves_the_bytes_alone) {
  weft_buffer_t* buf = (weft_buffer_t*)&buf;
  unsigned char b[4];
  reset_freed();
  cr_assert_eq(weft_buffer_adopt(NULL, b, 4, count_free, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_buffer_adopt(&buf, NULL, 4, count_free, NULL),
               WEFT_EINVAL);
  cr_assert_null(buf);
  cr_assert_eq(atomic_load(&freed.calls), 0);
}

static struct {
  pthread_t thread;
  void* seen;
} ad;

Test(buffer, adopted_bytes_in_an_untaken_message_are_given_back_once) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a, *b;
  weft_msg_t *m, *got = NULL;
  weft_buffer_t *b1 = NULL, *b2 = NULL;
  unsigned char *p1 = app_bytes(100, 1), *p2 = app_bytes(200, 2);
  int err;
  reset_freed();
  cr_assert_eq(weft_buffer_adopt(&b1, p1, 100, count_free, NULL), 0);
  cr_assert_eq(weft_buffer_adopt(&b2, p2, 200, count_free, NULL), 0);
  new_channel(loop, &a, &b);
  /* Received and freed without a take. */
  m = msg_with(b1, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_receive(b, &got), 0);
  cr_assert_eq(atomic_load(&freed.calls), 0);
  weft_msg_free(got);
  cr_assert_eq(atomic_load(&freed.calls), 1);
  cr_assert_eq(freed.bytes, p1);
  /* Dropped on the receiver's side by close. */
  m = msg_with(b2, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_port_post_msg(a, &m), 0);
  cr_assert_eq(weft_port_close(b), 0);
  weft_buffer_free(b1);
  weft_buffer_free(b2);
  finish(loop, a, b);
  cr_assert_eq(atomic_load(&freed.calls), 2);
  cr_assert_eq(freed.bytes, p2);
}

/* A worker that ends holding adopted bytes gives them back. */
static weft_buffer_t* held;

static void hold_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_buffer_adopt(&held, arg, 64, count_free, NULL);
  ad.thread = pthread_self();
}

Test(buffer, a_worker_ending_with_adopted_bytes_gives_them_back) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  worker_end_t end;
  weft_worker_t* w;
  unsigned char* p = app_bytes(64, 0);
  reset_freed();
  watch_worker_end(&opts, &end);
  opts.arg = p;
  w = spawn_worker(loop, hold_entry, &opts);
  run_loop(loop);
  cr_assert_eq(end.errors, 0);
  cr_assert_eq(atomic_load(&freed.calls), 1);
  cr_assert_eq(freed.bytes, p);
  cr_assert(pthread_equal(freed.thread, ad.thread));
  weft_worker_free(w);
  free_loop(loop);
}

/* Through a worker: the worker takes the adopted buffer and frees it. */
static void ad_on_msg(weft_port_t* parent, weft_msg_t* m) {
  weft_buffer_t* buf = NULL;
  if (weft_msg_take_buffer(m, placeholder(m), &buf) != 0) {
    weft_report_error("no buffer");
    return;
  }
  ad.thread = pthread_self();
  weft_buffer_data(buf, &ad.seen, NULL);
  weft_buffer_free(buf);
  weft_port_on_message(parent, NULL);
}

static void ad_entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), ad_on_msg);
}

Test(buffer, adopted_buffer_moves_to_a_worker_and_is_freed_there_once) {
  weft_loop_t* loop = new_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  worker_end_t end;
  weft_buffer_t* buf = NULL;
  unsigned char* p = app_bytes(1 << 12, 9);
  int tag, err;
  reset_freed();
  ad.seen = NULL;
  watch_worker_end(&opts, &end);
  cr_assert_eq(weft_buffer_adopt(&buf, p, 1 << 12, count_free, &tag), 0);
  w = spawn_worker(loop, ad_entry, &opts);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, 0);
  cr_assert_eq(weft_worker_post_msg(w, &m), 0);
  cr_assert(weft_buffer_detached(buf));
  weft_buffer_free(buf); /* the detached handle: must not free the bytes */
  /* The worker may have taken and freed them already (it does at once):
   * then on its thread, not here. A second free shows below (calls 1). */
  if (atomic_load_explicit(&freed.calls, memory_order_acquire) != 0)
    cr_assert_not(pthread_equal(freed.thread, pthread_self()),
                  "freeing the detached handle freed the bytes");
  run_loop(loop);
  cr_assert_eq(end.errors, 0);
  cr_assert_eq(end.exit_code, 0);
  cr_assert_eq(atomic_load_explicit(&freed.calls, memory_order_acquire), 1);
  cr_assert_eq(ad.seen, p, "the bytes were copied on the way");
  cr_assert_eq(freed.bytes, p);
  cr_assert_eq(freed.arg, &tag);
  cr_assert(pthread_equal(freed.thread, ad.thread),
            "free_fn did not run on the worker's thread");
  cr_assert_not(pthread_equal(freed.thread, pthread_self()));
  weft_worker_free(w);
  free_loop(loop);
}

/* In a worker with a heap limit: adopted bytes and transfers are charged. */
#define LIM (1u << 20)
static struct {
  size_t before, adopted, after_free, after_shrink;
  int adopt_over, transfer_over, transfer_shrink;
  size_t kept_size, after_failed;
  int calls_after_over;
} lim;

static void lim_entry(weft_loop_t* loop, void* arg) {
  weft_buffer_t *a = NULL, *b = NULL, *s = NULL, *big = NULL;
  size_t limit;
  (void)loop;
  (void)arg;
  weft_heap_usage(&lim.before, &limit);
  weft_buffer_adopt(&a, app_bytes(LIM / 2, 1), LIM / 2, count_free, NULL);
  weft_heap_usage(&lim.adopted, &limit);
  weft_buffer_free(a);
  weft_heap_usage(&lim.after_free, &limit);
  /* A transfer that shrinks frees charge; one past the limit fails first. */
  weft_buffer_new(&b, LIM / 2);
  lim.transfer_shrink = weft_buffer_transfer(b, LIM / 4, &s);
  weft_heap_usage(&lim.after_shrink, &limit);
  lim.transfer_over = weft_buffer_transfer(s, 2 * LIM, &big);
  weft_heap_usage(&lim.after_failed, &limit);
  lim.kept_size = weft_buffer_size(s);
  /* Adopting past the limit: refused, free_fn not called. */
  unsigned char* p = app_bytes(16, 0);
  lim.adopt_over = weft_buffer_adopt(&a, p, 2 * LIM, count_free, NULL);
  lim.calls_after_over = atomic_load(&freed.calls);
  free(p);
  weft_buffer_free(s);
  weft_buffer_free(b);
}

Test(buffer, adopted_and_resized_bytes_count_against_the_heap_limit) {
  weft_loop_t* loop = new_loop();
  weft_worker_opts_t opts = {0};
  worker_end_t end;
  weft_worker_t* w;
  reset_freed();
  watch_worker_end(&opts, &end);
  opts.max_heap_bytes = LIM;
  w = spawn_worker(loop, lim_entry, &opts);
  run_loop(loop);
  cr_assert_geq(lim.adopted, lim.before + LIM / 2);
  cr_assert_eq(lim.after_free, lim.before);
  cr_assert_eq(lim.transfer_shrink, 0);
  cr_assert_geq(lim.after_shrink, lim.before + LIM / 4);
  cr_assert_lt(lim.after_shrink, lim.before + LIM / 2);
  cr_assert_eq(lim.transfer_over, WEFT_EHEAPLIMIT);
  cr_assert_eq(lim.after_failed, lim.after_shrink, "charge changed on failure");
  cr_assert_eq(lim.kept_size, LIM / 4, "failed transfer touched the buffer");
  cr_assert_eq(lim.adopt_over, WEFT_EHEAPLIMIT);
  cr_assert_eq(lim.calls_after_over, 1, "free_fn called for refused bytes");
  /* A breach ends the worker with an error, as weft_buffer_new's does. */
  cr_assert_eq(end.errors, 1);
  cr_assert_eq(atomic_load(&freed.calls), 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* --- weft_buffer_transfer (ArrayBuffer.prototype.transfer) --------------- */

static void check_zero(weft_buffer_t* buf, size_t from, size_t to) {
  unsigned char* d = NULL;
  cr_assert_eq(weft_buffer_data(buf, (void**)&d, NULL), 0);
  for (size_t i = from; i < to; i++)
    cr_assert_eq(d[i], 0, "byte %zu not zero", i);
}

static void check_detached(weft_buffer_t* buf) {
  weft_buffer_t* t = (weft_buffer_t*)&t;
  void* d = &d;
  size_t n = 1;
  int err;
  cr_assert(weft_buffer_detached(buf));
  cr_assert_eq(weft_buffer_size(buf), 0);
  cr_assert_eq(weft_buffer_data(buf, &d, &n), WEFT_EDETACHED);
  cr_assert_null(d);
  cr_assert_eq(weft_buffer_transfer(buf, 1, &t), WEFT_EDETACHED);
  cr_assert_null(t);
  weft_msg_t* m = msg_with(buf, &err);
  cr_assert_eq(err, WEFT_EDETACHED);
  weft_msg_free(m);
}

Test(buffer, transfer_shrinks_grows_and_keeps_and_detaches_the_old) {
  weft_buffer_t* a = filled(1000, 7);
  weft_buffer_t *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL;
  /* Same length. */
  cr_assert_eq(weft_buffer_transfer(a, 1000, &b), 0);
  check_detached(a);
  check_filled(b, 1000, 7);
  /* Shrink keeps the prefix. */
  cr_assert_eq(weft_buffer_transfer(b, 100, &c), 0);
  check_detached(b);
  check_filled(c, 100, 7);
  /* Grow fills with zeros, even where the old bytes were. */
  cr_assert_eq(weft_buffer_transfer(c, 5000, &d), 0);
  check_detached(c);
  cr_assert_eq(weft_buffer_size(d), 5000);
  {
    unsigned char* p = NULL;
    cr_assert_eq(weft_buffer_data(d, (void**)&p, NULL), 0);
    for (size_t i = 0; i < 100; i++)
      cr_assert_eq(p[i], (unsigned char)(i * 31 + 7), "byte %zu", i);
  }
  check_zero(d, 100, 5000);
  /* To empty and back. */
  cr_assert_eq(weft_buffer_transfer(d, 0, &e), 0);
  check_detached(d);
  cr_assert_eq(weft_buffer_size(e), 0);
  cr_assert_not(weft_buffer_detached(e));
  cr_assert_eq(weft_buffer_transfer(e, 64, &f), 0);
  check_zero(f, 0, 64);
  /* The result is an ordinary buffer: it can be posted. */
  {
    weft_loop_t* loop = new_loop();
    weft_port_t *pa, *pb;
    int err;
    new_channel(loop, &pa, &pb);
    weft_msg_t* m = msg_with(f, &err);
    cr_assert_eq(err, 0);
    cr_assert_eq(weft_port_post_msg(pa, &m), 0);
    cr_assert(weft_buffer_detached(f));
    finish(loop, pa, pb);
  }
  weft_buffer_free(a);
  weft_buffer_free(b);
  weft_buffer_free(c);
  weft_buffer_free(d);
  weft_buffer_free(e);
  weft_buffer_free(f);
}

Test(buffer, transfer_of_adopted_bytes_shrinks_in_place_and_grows_by_copy) {
  weft_buffer_t *a = NULL, *b = NULL, *c = NULL;
  unsigned char* p = app_bytes(256, 3);
  void* d = NULL;
  int tag;
  reset_freed();
  cr_assert_eq(weft_buffer_adopt(&a, p, 256, count_free, &tag), 0);
  /* Shrink: the same bytes, shorter; free_fn goes with them. */
  cr_assert_eq(weft_buffer_transfer(a, 200, &b), 0);
  check_detached(a);
  cr_assert_eq(weft_buffer_data(b, &d, NULL), 0);
  cr_assert_eq(d, p);
  check_filled(b, 200, 3);
  weft_buffer_free(a);
  cr_assert_eq(atomic_load(&freed.calls), 0);
  /* Grow: copied into weft memory, the old bytes given back at once. */
  cr_assert_eq(weft_buffer_transfer(b, 400, &c), 0);
  check_detached(b);
  cr_assert_eq(atomic_load(&freed.calls), 1);
  cr_assert_eq(freed.bytes, p);
  cr_assert_eq(freed.arg, &tag);
  cr_assert_eq(weft_buffer_data(c, &d, NULL), 0);
  cr_assert_neq(d, p);
  {
    unsigned char* q = d;
    for (size_t i = 0; i < 200; i++)
      cr_assert_eq(q[i], (unsigned char)(i * 31 + 3), "byte %zu", i);
  }
  check_zero(c, 200, 400);
  weft_buffer_free(b);
  weft_buffer_free(c);
  cr_assert_eq(atomic_load(&freed.calls), 1, "free_fn called twice");
}

Test(buffer, transfer_bad_input) {
  weft_buffer_t* a = filled(10, 1);
  weft_buffer_t* t = (weft_buffer_t*)&t;
  cr_assert_eq(weft_buffer_transfer(NULL, 1, &t), WEFT_EINVAL);
  cr_assert_null(t);
  cr_assert_eq(weft_buffer_transfer(a, 1, NULL), WEFT_EINVAL);
  check_filled(a, 10, 1);
  /* Untransferable (a detach key in JavaScript): refused, still usable. */
  cr_assert_eq(weft_buffer_mark_untransferable(a), 0);
  t = (weft_buffer_t*)&t;
  cr_assert_eq(weft_buffer_transfer(a, 20, &t), WEFT_EUNTRANSFERABLE);
  cr_assert_null(t);
  cr_assert_not(weft_buffer_detached(a));
  check_filled(a, 10, 1);
  weft_buffer_free(a);
}

#ifdef WEFT_FAILPOINTS
#include "internal.h"

/* Every allocation weft_buffer_transfer/adopt make, failed in turn: each
 * fails with WEFT_ENOMEM and leaves everything as it was (the buffer
 * attached with its bytes, no free_fn call, no result). */
static int fail_each(int (*op)(weft_buffer_t* a, weft_buffer_t** out),
                     bool adopted) {
  uint64_t n = 0, k;
  int fired = 0;
  for (k = 0;; k++) {
    weft_buffer_t *a = NULL, *out = (weft_buffer_t*)&out;
    int rc;
    reset_freed();
    if (adopted)
      cr_assert_eq(weft_buffer_adopt(&a, app_bytes(100, 4), 100, count_free,
                                     NULL), 0);
    else
      a = filled(100, 4);
    weft__failpoint_arm(k);
    rc = op(a, &out);
    if (k == 0)
      n = weft__failpoint_count(); /* allocations of a whole run */
    if (k > 0 && weft__failpoint_fired()) {
      fired++;
      cr_assert_eq(rc, WEFT_ENOMEM, "allocation %llu: rc %d",
                   (unsigned long long)k, rc);
      cr_assert_null(out);
      cr_assert_not(weft_buffer_detached(a));
      check_filled(a, 100, 4);
      cr_assert_eq(atomic_load(&freed.calls), 0);
    } else {
      cr_assert_eq(rc, 0);
      weft_buffer_free(out);
    }
    weft__failpoint_arm(0);
    weft_buffer_free(a);
    if (k > 0 && k >= n)
      break;
  }
  return fired;
}

static int op_grow(weft_buffer_t* a, weft_buffer_t** out) {
  return weft_buffer_transfer(a, 5000, out);
}

static int op_shrink(weft_buffer_t* a, weft_buffer_t** out) {
  return weft_buffer_transfer(a, 10, out);
}

static int op_adopt(weft_buffer_t* a, weft_buffer_t** out) {
  (void)a;
  static unsigned char b[8];
  int rc = weft_buffer_adopt(out, b, sizeof(b), NULL, NULL);
  if (rc != 0)
    cr_assert_null(*out);
  return rc;
}

Test(buffer, allocation_failures_in_transfer_and_adopt_change_nothing) {
  cr_assert_geq(fail_each(op_grow, false), 2);
  cr_assert_geq(fail_each(op_shrink, false), 1);
  cr_assert_geq(fail_each(op_grow, true), 2);
  cr_assert_geq(fail_each(op_shrink, true), 1);
  cr_assert_geq(fail_each(op_adopt, false), 1);
}
#endif
