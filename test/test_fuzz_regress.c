/* test_fuzz_regress.c - inputs the libFuzzer targets (test/fuzz) found
 * crashing, replayed through every public decoder of foreign bytes. Each
 * input is also in test/fuzz/corpus/, so the fuzzers start from it. */
#include <criterion/criterion.h>
#include <string.h>

#include <weft/weft.h>

TestSuite(fuzz_regress, .timeout = 30);

typedef struct {
  const char* name;
  unsigned char bytes[16];
  size_t len;
} input_t;

/* Container headers that claim far more elements than the message holds.
 * msgpack's unpacker allocated every element when it read the header:
 * 64 GiB for the first (ASan: "allocator is out of memory", the process
 * aborts; without ASan WEFT_ENOMEM for a corrupt message, or, for counts
 * that fit in memory, an allocation many thousand times the payload). */
static const input_t inputs[] = {
    /* fuzz_msg_decode: array32 of 0x9696ca96 elements, 5 bytes. */
    {"array32", {0xdd, 0x96, 0x96, 0xca, 0x96}, 5},
    /* fuzz_take (payload after its mode byte): array32 of 0xdddddddd. */
    {"array32b", {0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd}, 7},
    /* fuzz_broadcast: map32 of 0xb9b9b9b9 pairs. */
    {"map32", {0xdf, 0xb9, 0xb9, 0xb9, 0xb9, 0xb9, 0xb9, 0xb9}, 8},
    /* The same within reach of memory: 2^20 elements in 6 bytes. */
    {"array32_1M", {0xdd, 0x00, 0x10, 0x00, 0x00, 0xc0}, 6},
    {"map16", {0xde, 0xff, 0xff, 0xc0, 0xc0}, 5},
    {"array16_nested", {0x91, 0xdc, 0xff, 0xff, 0x91, 0xdc, 0xff, 0xff}, 8},
};

#define NINPUTS (sizeof(inputs) / sizeof(inputs[0]))

Test(fuzz_regress, huge_container_headers_are_edecode_at_receive) {
  weft_loop_t* loop;
  weft_port_t *a, *b;
  weft_msg_t* m;
  size_t i;
  cr_assert_eq(weft_loop_new(&loop), 0);
  cr_assert_eq(weft_channel_new(loop, &a, &b), 0);
  for (i = 0; i < NINPUTS; i++) {
    cr_assert_eq(weft_port_post(a, inputs[i].bytes, inputs[i].len), 0);
    m = NULL;
    cr_expect_eq(weft_port_receive(b, &m), WEFT_EDECODE, "%s", inputs[i].name);
    cr_assert_null(m);
  }
  weft_port_free(a);
  weft_port_free(b);
  cr_assert_eq(weft_loop_free(loop), 0);
}

static int errors, delivered;

static void on_message(weft_port_t* p, weft_msg_t* m) {
  (void)p;
  (void)m;
  delivered++;
}

static void on_error(weft_port_t* p, int err) {
  cr_expect_eq(err, WEFT_EDECODE);
  if (++errors == (int)NINPUTS)
    weft_port_on_message(p, NULL);
}

Test(fuzz_regress, huge_container_headers_are_messageerror_in_a_handler) {
  weft_loop_t* loop;
  weft_port_t *a, *b;
  size_t i;
  cr_assert_eq(weft_loop_new(&loop), 0);
  cr_assert_eq(weft_channel_new(loop, &a, &b), 0);
  for (i = 0; i < NINPUTS; i++)
    cr_assert_eq(weft_port_post(a, inputs[i].bytes, inputs[i].len), 0);
  cr_assert_eq(weft_port_on_messageerror(b, on_error), 0);
  cr_assert_eq(weft_port_on_message(b, on_message), 0);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_expect_eq(errors, (int)NINPUTS);
  cr_expect_eq(delivered, 0);
  weft_port_free(a);
  weft_port_free(b);
  weft_loop_run(loop); /* The close events. */
  cr_assert_eq(weft_loop_free(loop), 0);
}

static void never(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  cr_assert_fail("a worker started with undecodable data");
}

Test(fuzz_regress, huge_container_headers_are_refused_by_every_validator) {
  weft_loop_t* loop;
  weft_broadcast_t *s, *r;
  size_t i;
  cr_assert_eq(weft_loop_new(&loop), 0);
  cr_assert_eq(weft_broadcast_new(loop, "fuzz_regress", &s), 0);
  cr_assert_eq(weft_broadcast_new(loop, "fuzz_regress", &r), 0);
  for (i = 0; i < NINPUTS; i++) {
    weft_worker_opts_t opts = {0};
    weft_worker_t* w = NULL;
    cr_expect_eq(weft_broadcast_post(s, inputs[i].bytes, inputs[i].len),
                 WEFT_EDECODE, "%s", inputs[i].name);
    cr_expect_eq(weft_set_environment_data("k", inputs[i].bytes, inputs[i].len),
                 WEFT_EDECODE, "%s", inputs[i].name);
    opts.data = inputs[i].bytes;
    opts.data_len = inputs[i].len;
    cr_expect_eq(weft_worker_spawn(&w, loop, never, &opts), WEFT_EDECODE, "%s",
                 inputs[i].name);
    cr_assert_null(w);
  }
  weft_broadcast_free(s);
  weft_broadcast_free(r);
  cr_assert_eq(weft_loop_free(loop), 0);
}

Test(fuzz_regress, containers_that_fit_still_decode) {
  /* The bound counts one byte per element: the tightest real values. */
  static const unsigned char arr[] = {0xdc, 0x00, 0x03, 0xc0, 0xc0, 0xc0};
  static const unsigned char map[] = {0x81, 0x01, 0x02};
  static const unsigned char deep[] = {0x91, 0x91, 0x91, 0x90};
  weft_loop_t* loop;
  weft_port_t *a, *b;
  weft_msg_t* m;
  cr_assert_eq(weft_loop_new(&loop), 0);
  cr_assert_eq(weft_channel_new(loop, &a, &b), 0);
  cr_assert_eq(weft_port_post(a, arr, sizeof(arr)), 0);
  cr_assert_eq(weft_port_post(a, map, sizeof(map)), 0);
  cr_assert_eq(weft_port_post(a, deep, sizeof(deep)), 0);
  cr_assert_eq(weft_port_receive(b, &m), 0);
  cr_expect_eq(weft_msg_object(m)->via.array.size, 3);
  weft_msg_free(m);
  cr_assert_eq(weft_port_receive(b, &m), 0);
  cr_expect_eq(weft_msg_object(m)->via.map.size, 1);
  weft_msg_free(m);
  cr_assert_eq(weft_port_receive(b, &m), 0);
  cr_expect_eq(weft_msg_object(m)->type, MSGPACK_OBJECT_ARRAY);
  weft_msg_free(m);
  weft_port_free(a);
  weft_port_free(b);
  weft_loop_run(loop);
  cr_assert_eq(weft_loop_free(loop), 0);
}
