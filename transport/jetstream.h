/* jetstream.h - NATS JetStream's API as bytes: the subjects and JSON
 * bodies that make a work-queue stream and a durable pull consumer, ask it
 * for messages and acknowledge them, and a reader of the server's JSON
 * answers. It does no I/O: the distributed pool (lib/pool_wire.c,
 * pool_server.c, pool_remote.c) sends these on the node's connection
 * (nats.h) as core NATS requests, so nothing blocks a loop and
 * the wire is the documented one (docs/node.md "Durable tasks"). The
 * server's answers are foreign bytes: the reader trusts nothing.
 *
 * Why not libnats's own JetStream API (js_AddStream, js_PullSubscribe):
 * in nats.c 3.4 a pull consumer is read with natsSubscription_Fetch,
 * which holds its caller until messages come or its timeout passes, and
 * the API object needs the natsConnection that transport/nats.h keeps to
 * itself. Here a pull is one core request whose messages come to nats.c's
 * delivery thread like any message of a node, a task's publish is
 * acknowledged asynchronously (the stream's answer to a request), and
 * lib/pool_server.c's one thread per serving pool only keeps time (pulls to
 * renew, "still working" to send). The JSON involved is three fixed
 * request shapes and one field of the answers. */
#ifndef WEFT_TRANSPORT_JETSTREAM_H
#define WEFT_TRANSPORT_JETSTREAM_H

#include <stddef.h>
#include <stdint.h>

/* Acknowledgements: the payload published on a delivered message's reply
 * subject ($JS.ACK.<stream>.<consumer>....). */
#define WEFT__JS_ACK "+ACK"   /* Done: the stream forgets it. */
#define WEFT__JS_NAK "-NAK"   /* Not taken: deliver it again at once. */
#define WEFT__JS_WPI "+WPI"   /* Still working: restart the ack wait. */
#define WEFT__JS_TERM "+TERM" /* Never deliver it again (malformed). */
#define WEFT__JS_ACK_PREFIX "$JS.ACK."

/* API error codes (the answers' "err_code") that mean "already there". */
#define WEFT__JS_ERR_STREAM_EXISTS 10058

/* Each writer puts the request's subject in `subj` (`subj_cap` bytes) and
 * its body in `body` (`cap` bytes): the body's length, or 0 when either
 * does not fit. */

/* Create stream `stream` (retention WorkQueue, file storage) on the one
 * subject `subject`. */
size_t weft__js_stream_create(char* subj, size_t subj_cap, char* body,
                              size_t cap, const char* stream,
                              const char* subject);
/* Create the durable pull consumer `durable` on `stream` (explicit acks,
 * redelivery after `ack_wait_ms`, no delivery limit). */
size_t weft__js_consumer_create(char* subj, size_t subj_cap, char* body,
                                size_t cap, const char* stream,
                                const char* durable, int64_t ack_wait_ms);
/* Ask `durable` for up to `batch` messages, the request held at the
 * server for at most `expires_ms`. */
size_t weft__js_pull(char* subj, size_t subj_cap, char* body, size_t cap,
                     const char* stream, const char* durable, unsigned batch,
                     int64_t expires_ms);

/* An API answer or a publish acknowledgement ({"stream":..,"seq":..}):
 * 0 when it is JSON without "error", the error's err_code (> 0; 1 when it
 * has none) when it has one, or -1 when it is not a JSON object. */
int weft__js_result(const void* data, size_t len);

#endif /* WEFT_TRANSPORT_JETSTREAM_H */
