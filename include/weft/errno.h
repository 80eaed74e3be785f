/* errno.h - weft's error codes: negative integers with names and messages. */
#ifndef WEFT_ERRNO_H
#define WEFT_ERRNO_H

#include <uv.h>

#include "weft/common.h"

/* Every public call returns 0 or one of these negative codes. Codes that
 * mean the same as a libuv code reuse it; codes of weft's own sit in
 * -5000..-5099, clear of libuv's -errno, EAI (-3000...) and -4095 ranges. */
#define WEFT_ERRNO_MAP(XX)                                                     \
  XX(EINVAL, UV_EINVAL, "invalid argument")                                    \
  XX(ENOMEM, UV_ENOMEM, "not enough memory")                                   \
  XX(EAGAIN, UV_EAGAIN, "no message is pending")                               \
  XX(EBUSY, UV_EBUSY, "resource is busy: handles are still open")              \
  XX(ETIMEDOUT, UV_ETIMEDOUT, "timed out")                                     \
  XX(ERANGE, UV_ERANGE, "index or size out of range")                          \
  XX(ECANCELED, UV_ECANCELED, "operation canceled")                            \
  XX(ECLOSED, -5000, "port, channel or worker is closed")                      \
  XX(EDECODE, -5001, "payload is not exactly one valid msgpack value")         \
  XX(EDETACHED, -5002, "buffer was transferred and is detached")               \
  XX(EUNTRANSFERABLE, -5003, "buffer is marked untransferable")                \
  XX(EMSGSIZE, -5004, "message is larger than the configured limit")           \
  XX(EWRONGTHREAD, -5005, "called from a thread that does not own the handle") \
  XX(EHEAPLIMIT, -5006, "worker exceeded its heap limit")                      \
  XX(ETERMINATED, -5007, "worker was terminated")                              \
  XX(EUNCAUGHT, -5008, "worker reported an uncaught error")                    \
  XX(EDATACLONE, -5009, "transfer list is invalid for this message")           \
  XX(EPACK, -5010, "packing the message failed")                               \
  XX(ENOLOOP, -5011, "the calling thread has no weft loop")                    \
  XX(ENOTSTARTED, -5012, "worker has not been started or already exited")      \
  XX(ESPAWN, -5013, "the worker thread could not be started")                \
  XX(ETOODEEP, -5014, "message nests deeper than 32 levels")                  \
  XX(EQUEUEFULL, -5015, "the pool's queue is full")                           \
  XX(ENOTASK, -5016, "no task is registered under that name")                 \
  XX(ENOREPLY, -5017, "the request was dropped without a reply")            \
  XX(ENOTLOCAL, -5018, "buffers, shared buffers and ports cannot leave the process") \
  XX(ERESTARTS, -5019, "too many restarts within the restart window")        \
  XX(EDEADACTOR, -5020, "the actor has ended, or never was")                  \
  XX(EMAILBOXFULL, -5021, "the actor's mailbox is over its high-water mark")  \
  XX(EKILLED, -5022, "the actor was killed")                                  \
  XX(ENORESPONDERS, -5023, "no node in the cluster serves that name")          \
  XX(ENOTCONNECTED, -5024, "the node is not connected to its cluster")        \
  XX(ESLOWCONSUMER, -5025, "a remote receiver fell behind and dropped messages")

/* libuv's own codes, under weft names where weft's API returns them (the
 * actor registry: a name taken, no such name); weft_strerror() gives
 * libuv's text for them, as for every libuv code. */
#define WEFT_EEXIST UV_EEXIST
#define WEFT_ENOENT UV_ENOENT

typedef enum {
#define WEFT__ERRNO_ENUM(name, value, _) WEFT_##name = (value),
  WEFT_ERRNO_MAP(WEFT__ERRNO_ENUM)
#undef WEFT__ERRNO_ENUM
      WEFT__ERRNO_END_ = -5099
} weft_errno_t;

/* A short English sentence for `err` (a weft or libuv code). Never NULL; the
 * string is static. Unknown codes give "unknown error".
 * Thread: any. */
WEFT_EXTERN const char* weft_strerror(int err);

/* The code's name without prefix, e.g. "ECLOSED". Never NULL; static.
 * Thread: any. */
WEFT_EXTERN const char* weft_err_name(int err);

/* The code named `name` (weft_err_name()'s answer, e.g. "ECLOSED", or a
 * libuv name such as "ETIMEDOUT"); 0 for NULL or a name it does not know.
 * The wire of remote calls names errors this way (docs/node.md).
 * Thread: any. */
WEFT_EXTERN int weft_err_code(const char* name);

#endif /* WEFT_ERRNO_H */
