/* smoke.c - links against an installed weft and calls its public API. */
#include <stdio.h>
#include <string.h>

#include <weft/weft.h>

static int failures;

static void expect_str(const char* what, const char* got, const char* want) {
  if (got == NULL || strcmp(got, want) != 0) {
    fprintf(stderr, "smoke: %s gave \"%s\", want \"%s\"\n", what,
            got ? got : "(null)", want);
    failures++;
  }
}

int main(void) {
  expect_str("weft_err_name(WEFT_ECLOSED)", weft_err_name(WEFT_ECLOSED),
             "ECLOSED");
  expect_str("weft_err_name(UV_ENOENT)", weft_err_name(UV_ENOENT), "ENOENT");
  expect_str("weft_err_name(-123456)", weft_err_name(-123456), "UNKNOWN");
  expect_str("weft_strerror(0)", weft_strerror(0), "success");
  const char* closed = weft_strerror(WEFT_ECLOSED);
  if (closed == NULL || strcmp(closed, "unknown error") == 0) {
    fprintf(stderr, "smoke: weft_strerror(WEFT_ECLOSED) is not named\n");
    failures++;
  }

  /* libuv and msgpack-c come with weft's public headers and link line. */
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_int(&pk, 42);
  if (sb.size != 1) {
    fprintf(stderr, "smoke: msgpack packed 42 into %zu bytes\n", sb.size);
    failures++;
  }
  msgpack_sbuffer_destroy(&sb);

  printf("weft %d.%d.%d with libuv %s: %s (%s)\n", WEFT_VERSION_MAJOR,
         WEFT_VERSION_MINOR, WEFT_VERSION_PATCH, uv_version_string(),
         weft_strerror(WEFT_ECLOSED), failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
