/* jetstream.c - JetStream's API as bytes (jetstream.h). */
#include "jetstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* snprintf's length when the whole of it fit, else 0. */
static size_t fit(int n, size_t cap) {
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t weft__js_stream_create(char* subj, size_t subj_cap, char* body,
                              size_t cap, const char* stream,
                              const char* subject) {
  if (fit(snprintf(subj, subj_cap, "$JS.API.STREAM.CREATE.%s", stream),
          subj_cap) == 0)
    return 0;
  return fit(snprintf(body, cap,
                      "{\"name\":\"%s\",\"subjects\":[\"%s\"],"
                      "\"retention\":\"workqueue\",\"storage\":\"file\"}",
                      stream, subject),
             cap);
}

size_t weft__js_consumer_create(char* subj, size_t subj_cap, char* body,
                                size_t cap, const char* stream,
                                const char* durable, int64_t ack_wait_ms) {
  if (fit(snprintf(subj, subj_cap, "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s",
                   stream, durable),
          subj_cap) == 0)
    return 0;
  return fit(snprintf(body, cap,
                      "{\"stream_name\":\"%s\",\"config\":{"
                      "\"durable_name\":\"%s\",\"deliver_policy\":\"all\","
                      "\"ack_policy\":\"explicit\",\"ack_wait\":%lld,"
                      "\"max_deliver\":-1,\"replay_policy\":\"instant\"}}",
                      stream, durable, (long long)ack_wait_ms * 1000000LL),
             cap);
}

size_t weft__js_pull(char* subj, size_t subj_cap, char* body, size_t cap,
                     const char* stream, const char* durable, unsigned batch,
                     int64_t expires_ms) {
  if (fit(snprintf(subj, subj_cap, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream,
                   durable),
          subj_cap) == 0)
    return 0;
  return fit(snprintf(body, cap, "{\"batch\":%u,\"expires\":%lld}", batch,
                      (long long)expires_ms * 1000000LL),
             cap);
}

int weft__js_result(const void* data, size_t len) {
  char text[1024];
  const char* e;
  const char* code;
  long v;
  if (data == NULL || len == 0)
    return -1;
  if (len >= sizeof(text))
    len = sizeof(text) - 1; /* The error, if any, comes first. */
  memcpy(text, data, len);
  text[len] = '\0';
  if (text[0] != '{' || strlen(text) != len)
    return -1;
  e = strstr(text, "\"error\"");
  if (e == NULL)
    return 0;
  code = strstr(e, "\"err_code\":");
  if (code == NULL)
    return 1;
  v = strtol(code + strlen("\"err_code\":"), NULL, 10);
  return v > 0 && v < 1000000 ? (int)v : 1;
}
