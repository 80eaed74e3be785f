/* test_errors.c - weft_strerror() and weft_err_name() name every code. */
#include <string.h>

#include <criterion/criterion.h>

#include "weft/weft.h"

TestSuite(errors, .timeout = 10);

Test(errors, every_mapped_code_has_its_name_and_message) {
#define XX(name, value, text)                                  \
  cr_assert_eq(WEFT_##name, (value));                          \
  cr_assert_lt(WEFT_##name, 0, "%s must be negative", #name);  \
  cr_assert_not_null(weft_err_name(WEFT_##name));              \
  cr_assert_not_null(weft_strerror(WEFT_##name));              \
  cr_assert_str_eq(weft_err_name(WEFT_##name), #name);         \
  cr_assert_str_eq(weft_strerror(WEFT_##name), text);
  WEFT_ERRNO_MAP(XX)
#undef XX
}

Test(errors, own_codes_sit_in_the_weft_range) {
  cr_assert_eq(WEFT_ECLOSED, -5000);
  cr_assert_eq(weft_strerror(WEFT_ECLOSED),
               weft_strerror(WEFT_ECLOSED)); /* Static, not allocated. */
  cr_assert_str_eq(weft_err_name(WEFT_ESPAWN), "ESPAWN");
  cr_assert_eq(WEFT_ETOODEEP, -5014);
  cr_assert_str_eq(weft_err_name(WEFT_ETOODEEP), "ETOODEEP");
  cr_assert_str_eq(weft_strerror(WEFT_ETOODEEP),
                   "message nests deeper than 32 levels");
}

Test(errors, codes_shared_with_libuv_keep_libuv_values) {
  cr_assert_eq(WEFT_EINVAL, UV_EINVAL);
  cr_assert_eq(WEFT_ENOMEM, UV_ENOMEM);
  cr_assert_eq(WEFT_EAGAIN, UV_EAGAIN);
  cr_assert_eq(WEFT_ETIMEDOUT, UV_ETIMEDOUT);
}

Test(errors, zero_is_success) {
  cr_assert_str_eq(weft_err_name(0), "OK");
  cr_assert_str_eq(weft_strerror(0), "success");
}

Test(errors, libuv_codes_pass_through) {
  cr_assert_str_eq(weft_err_name(UV_ENOENT), "ENOENT");
  cr_assert_str_eq(weft_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
  cr_assert_str_eq(weft_err_name(UV_EOF), "EOF");
  cr_assert_str_eq(weft_err_name(UV_EAI_NONAME), "EAI_NONAME");
}

Test(errors, unknown_codes_get_a_static_fallback) {
  const int unknown[] = {-123456, 1, 42, -4999, -5099};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    const char* name = weft_err_name(unknown[i]);
    const char* text = weft_strerror(unknown[i]);
    cr_assert_not_null(name);
    cr_assert_not_null(text);
    cr_assert_str_eq(name, "UNKNOWN", "code %d", unknown[i]);
    cr_assert_str_eq(text, "unknown error", "code %d", unknown[i]);
  }
}
