/* common.h - export macro and the opaque handle types shared by all headers. */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* Opaque handles. Every one lives on the heap and is made by weft. */
typedef struct weft_loop_s weft_loop_t;     /* A thread's event loop. */
typedef struct weft_msg_s weft_msg_t;       /* One message. */
typedef struct weft_port_s weft_port_t;     /* One end of a channel. */
typedef struct weft_buffer_s weft_buffer_t; /* Owned bytes (ArrayBuffer). */
typedef struct weft_shared_s weft_shared_t; /* Shared bytes. */
typedef struct weft_worker_s weft_worker_t; /* A worker thread. */
typedef struct weft_broadcast_s weft_broadcast_t; /* BroadcastChannel. */

#endif /* WEFT_COMMON_H */
