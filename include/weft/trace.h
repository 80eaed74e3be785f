/* trace.h - a timeline trace of what weft's threads do, in the Chrome trace
 * event format (JSON) that Perfetto (ui.perfetto.dev) and chrome://tracing
 * open. docs/trace.md shows a trace and says what is in it.
 *
 * Two ways to turn it on:
 * - the environment: WEFT_TRACE=path.json traces the whole run. weft reads
 *   the variable once, when the process makes its first loop
 *   (weft_loop_new() or weft_loop_wrap()), and finishes the file at exit()
 *   (or at weft_trace_stop(), whichever comes first);
 * - weft_trace_start() and weft_trace_stop() around the part of a run to
 *   look at.
 *
 * What a trace holds: one track per thread (main, each worker under its
 * name, libuv's threadpool, pool workers, actor schedulers); a span for
 * every callback a loop runs (message, close and worker events, timers,
 * immediates, next-tick/microtask batches, posted tasks, weft_queue_work()
 * work and its completion, pool tasks, actor turns); instant markers when a
 * worker is spawned, comes online and exits; an arrow from each post to the
 * callback that received the message; and counters of queue lengths
 * (messages waiting in a port when its loop starts on them, a pool's
 * queue).
 *
 * Cost: while no trace runs, each place that could record an event tests
 * one global flag. While one runs, each thread records into a buffer of its
 * own (no lock per event; a delivered message: one record and one clock
 * read on the receiver, none on the sender); the buffer is written out,
 * under a lock, when it is full, when its thread ends and at
 * weft_trace_stop(). docs/trace.md has the measured cost. */
#ifndef WEFT_TRACE_H
#define WEFT_TRACE_H

#include "weft/common.h"

/* Start writing a trace to the file at `path` (created or truncated).
 * Events from every thread of the process go to it until
 * weft_trace_stop(). Before the trace starts it makes sure 17 MiB of
 * buffers are ready, written once per page so that recording does not pay
 * for fresh pages: the first call in a process takes a few ms for that
 * (20-40 ms on some VMs); the process keeps them for later traces.
 * Returns 0; WEFT_EINVAL (`path` NULL or empty); WEFT_EBUSY (a trace is
 * already running: one at a time); WEFT_ENOMEM; or the libuv code of the
 * failed open (e.g. UV_ENOENT, UV_EACCES; weft_strerror() names it).
 * Thread: any. Memory: `path` is the caller's; weft opens the file before
 * returning and keeps no pointer to it. */
WEFT_EXTERN int weft_trace_start(const char* path);

/* Stop the running trace: every thread's buffered events are written, spans
 * still open are closed at the time of the stop, and the file is completed
 * (valid JSON) and closed before this returns. Events recorded by other
 * threads while the stop runs may be left out; none is cut in half.
 * Returns 0, WEFT_ENOTSTARTED (no trace is running) or the libuv code of a
 * failed write or close (the file is closed in any case).
 * Thread: any, also from inside a callback. Memory: weft frees all of the
 * trace's buffers that belong to no live thread; a live thread's buffer is
 * kept for the next trace and freed when the thread ends. */
WEFT_EXTERN int weft_trace_stop(void);

/* Whether a trace is running. Thread: any. */
WEFT_EXTERN int weft_trace_running(void);

#endif /* WEFT_TRACE_H */
