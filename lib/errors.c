/* errors.c - names and messages for weft's error codes (and libuv's). */
#include <string.h>

#include "weft/errno.h"

/* libuv's own uv_strerror()/uv_err_name() allocate a string for codes they
 * do not know, which is never freed; weft answers those itself so that its
 * functions never allocate. */
static const char* uv_text(int err, int want_name) {
  switch (err) {
#define XX(code, text) \
  case UV_##code:      \
    return want_name ? #code : (text);
    UV_ERRNO_MAP(XX)
#undef XX
    default:
      return want_name ? "UNKNOWN" : "unknown error";
  }
}

const char* weft_strerror(int err) {
  switch (err) {
#define XX(name, value, text) \
  case WEFT_##name:           \
    return text;
    WEFT_ERRNO_MAP(XX)
#undef XX
    case 0:
      return "success";
    default:
      return uv_text(err, 0);
  }
}

const char* weft_err_name(int err) {
  switch (err) {
#define XX(name, value, text) \
  case WEFT_##name:           \
    return #name;
    WEFT_ERRNO_MAP(XX)
#undef XX
    case 0:
      return "OK";
    default:
      return uv_text(err, 1);
  }
}

int weft_err_code(const char* name) {
  if (name == NULL)
    return 0;
#define XX(code, value, text)       \
  if (strcmp(name, #code) == 0)     \
    return WEFT_##code;
  WEFT_ERRNO_MAP(XX)
#undef XX
#define XX(code, text)              \
  if (strcmp(name, #code) == 0)     \
    return UV_##code;
  UV_ERRNO_MAP(XX)
#undef XX
  return 0;
}
