/* internal.h - what lib/ files share with each other; never installed. */
#ifndef WEFT_LIB_INTERNAL_H
#define WEFT_LIB_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include "weft/weft.h"

/* --- loop.c ----------------------------------------------------------- */

/* Run `cb(loop, arg)` on `loop` as a macrotask (next-ticks and microtasks
 * drained after it). The loop must stay open until the task ran: the
 * caller holds a keep-alive (weft__loop_keepalive) or otherwise knows the
 * loop outlives it. Returns 0 or WEFT_ENOMEM. Thread: any. */
int weft__loop_post_task(weft_loop_t* loop, weft_task_cb cb, void* arg);

/* Add `delta` to the count of things that keep `loop` alive (ref'd ports
 * with handlers, running ref'd workers, pending async waits...). While it
 * is above 0, weft_loop_run() does not return and weft_loop_free() answers
 * WEFT_EBUSY. Thread: owner loop only. */
void weft__loop_keepalive(weft_loop_t* loop, int delta);

/* Count of open weft objects on the loop (ports, broadcast channels,
 * workers, waits) whether ref'd or not; weft_loop_free() answers WEFT_EBUSY
 * while it is above 0. Thread: owner loop only. */
void weft__loop_handles(weft_loop_t* loop, int delta);

/* Whether the calling thread owns `loop`. Thread: any. */
bool weft__loop_on_thread(const weft_loop_t* loop);

/* Drain next-ticks then microtasks until both are empty (after every
 * macrotask callback weft runs). Thread: owner loop only. */
void weft__loop_after_callback(weft_loop_t* loop);

#endif /* WEFT_LIB_INTERNAL_H */
