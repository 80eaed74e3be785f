/* format.h - typed writing and reading of messages from a format string,
 * in the spirit of CZMQ's zsock_send()/zsock_recv() "pictures": one
 * character per value, so that a message is built and read back in one
 * call each, with its shape checked instead of unchecked
 * `o->via.array.ptr[i].via.u64` reads.
 *
 * The shape. A format is a list of values. A format of one value packs
 * (and reads) that value alone: "I" is the msgpack value 5, not [5]. A
 * format of two or more packs them as one msgpack array: "Is" is [5, "x"].
 * Brackets make an array explicitly, and nest: "[I]" is [5], "s[II]" is
 * ["x", [1, 2]], "[]" is the empty array. The empty format "" is invalid
 * (WEFT_EINVAL). Brackets nest at most WEFT_MSG_MAX_DEPTH deep. Maps have
 * no character: read them with weft_msg_object() (or skip them with `*`).
 *
 * Characters and their arguments, writing (weft_msg_pack) / reading
 * (weft_msg_read, weft_obj_read: a pointer to where each value goes):
 *   i  int                      / int*       msgpack int, in int's range
 *   I  int64_t                  / int64_t*   msgpack int, in int64's range
 *   u  unsigned                 / unsigned*  msgpack int >= 0, in range
 *   U  uint64_t                 / uint64_t*  msgpack int >= 0
 *   d  double                   / double*    float32/64, or any int
 *                                            (converted; above 2^53 it
 *                                            rounds)
 *   b  int (a bool promotes)    / bool*      bool
 *   s  const char* (NUL-ended)  / const char**, size_t*   str
 *   S  const char*, size_t      / (invalid in reading: use s)
 *   y  const void*, size_t      / const void**, size_t*   bin
 *   n  nothing                  / nothing    nil
 *   B  weft_buffer_t* (transferred, weft_msg_add_buffer)
 *                               / weft_buffer_t** (taken: the caller owns it)
 *   P  weft_port_t* (transferred, weft_msg_add_port)
 *                               / weft_port_t** (taken: weft_msg_take_port)
 *   H  weft_shared_t* (shared, weft_msg_add_shared)
 *                               / weft_shared_t** (a new reference)
 *   *  (invalid in writing)     / nothing    any one value, skipped
 *   [ ]                         / an array of exactly the values between
 * Pass the exact types: the arguments go through `...`, so an `I` given a
 * plain int literal is undefined behaviour in C (write (int64_t)5, or use
 * `i`). Reading is strict: the types must match as listed (a str is not a
 * bin, an int is not a bool, a float is not an int), every array's length
 * must equal its count of characters, and the value must fit the C type
 * (`I` refuses a uint64 above INT64_MAX, `u`/`U` refuse negatives).
 *
 * Read strings and bins are views into the message bytes, not
 * NUL-terminated: valid as long as the message's object (weft/msg.h), the
 * object's for weft_obj_read(). Any out pointer of a read may be NULL: the
 * value is checked but not stored (for B and P: checked and left in the
 * message, untaken; for s and y each of the two may be NULL). */
#ifndef WEFT_FORMAT_H
#define WEFT_FORMAT_H

#include <stdarg.h>
#include <msgpack.h>

#include "weft/common.h"

/* Pack the values of `fmt` (above) into `msg`, a message from weft_msg_new()
 * with nothing packed in it yet (pack exactly one value per message).
 * Returns 0; WEFT_EINVAL (NULL msg or fmt, a received message, an empty or
 * unbalanced format, a character not listed for writing, brackets nested
 * deeper than WEFT_MSG_MAX_DEPTH, a NULL string for `s`, a NULL pointer
 * with a non-zero length for `S` or `y`, a NULL B/P/H); WEFT_EMSGSIZE (a
 * string or bin of 4 GiB or more); WEFT_ENOMEM; and the errors of
 * weft_msg_add_buffer/_add_port/_add_shared for B, P and H. A bad format
 * is found before anything is packed; after any other error the message
 * holds part of the value: free it (weft_msg_free() leaves transfer
 * objects with the sender for a message never posted).
 * Thread: any; the message is used by one thread at a time. */
WEFT_EXTERN int weft_msg_pack(weft_msg_t* msg, const char* fmt, ...);
WEFT_EXTERN int weft_msg_vpack(weft_msg_t* msg, const char* fmt, va_list ap);

/* Read a received message's value into the pointers that follow `fmt`
 * (above). First the whole shape is checked against the value, and only
 * when all of it matches are values stored and transfers taken: a failed
 * check leaves the message untouched and the out pointers unwritten, so
 * the caller may try another format.
 * Returns 0; WEFT_EINVAL (NULL msg or fmt, a message not received, a bad
 * format as for weft_msg_pack with `S` invalid and `*` valid);
 * WEFT_EDECODE (the value's shape or a type differs from the format, a
 * number does not fit, or a B/P/H position holds no placeholder of that
 * kind of this message); WEFT_EDETACHED (a B or P to be taken was taken
 * already); WEFT_ENOLOOP (a P to be taken on a thread without a loop).
 * Taking can still fail after the check with WEFT_EHEAPLIMIT (a B on a
 * limited worker whose heap the buffer would breach) or WEFT_ENOMEM (a P):
 * then the values before it were stored and its transfers taken (the
 * caller owns them, as on success), and those after it were not.
 * Thread: the thread that receives the message (its loop's thread inside
 * the message callback, or the thread of weft_port_receive()). */
WEFT_EXTERN int weft_msg_read(weft_msg_t* msg, const char* fmt, ...);
WEFT_EXTERN int weft_msg_vread(weft_msg_t* msg, const char* fmt, va_list ap);

/* The same reading for a decoded value the caller already has (e.g.
 * weft_worker_data(), or an element of a map), with no transfers: B, P and
 * H are invalid here (WEFT_EINVAL; read their placeholders with `*` and
 * take them with weft_msg_take_*). Returns 0, WEFT_EINVAL, WEFT_EDECODE;
 * on an error nothing is stored. Thread: any. */
WEFT_EXTERN int weft_obj_read(const msgpack_object* obj, const char* fmt, ...);
WEFT_EXTERN int weft_obj_vread(const msgpack_object* obj,
                               const char* fmt,
                               va_list ap);

/* Build a message with weft_msg_pack() and post it with
 * weft_port_post_msg() / weft_worker_post_msg(): e.g.
 *   weft_port_post_fmt(port, "sIB", "job", (int64_t)7, buf);
 * posts ["job", 7, <buf transferred>]. Returns the errors of both; on any
 * error nothing was sent and transfer objects stay with the caller.
 * Thread: as weft_port_post_msg() / weft_worker_post_msg(). */
WEFT_EXTERN int weft_port_post_fmt(weft_port_t* port, const char* fmt, ...);
WEFT_EXTERN int weft_worker_post_fmt(weft_worker_t* w, const char* fmt, ...);

#endif /* WEFT_FORMAT_H */
