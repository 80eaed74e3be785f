/* trace.h - the hooks other lib/ (and actors/) files put where something
 * happens that a trace shows (include/weft/trace.h; docs/trace.md).
 *
 * While no trace runs, every hook is one branch on `weft__trace_on`, a
 * relaxed load the compiler is told is unlikely to be set; the work is out
 * of line in trace.c. Spans: a BEGIN hook and an END hook in the same
 * function, around the callback. A trace started or stopped between the two
 * is safe: trace.c drops an END whose BEGIN it did not record and closes at
 * the stop a span left open.
 *
 * Names (`name`) are string literals: trace.c keeps the pointer until the
 * trace is written. `detail` strings are copied. */
#ifndef WEFT_LIB_TRACE_H
#define WEFT_LIB_TRACE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mpsc.h"
#include "weft/common.h"

/* `on`: set while a trace runs. relaxed: a hook that sees it late or early
 * only records one event more or less; trace.c orders its own state.
 * `epoch`: the running trace's number (trace.c: changed under its lock, at
 * each start and stop). Every message reads them: a line of their own, so
 * that no other variable the linker puts beside them (the program's, or
 * another file's) takes that line away at each of its writes. */
typedef struct {
  atomic_int on;
  atomic_uint epoch;
  char pad[64 - sizeof(atomic_int) - sizeof(atomic_uint)];
} weft__trace_flags_t;
extern _Alignas(64) weft__trace_flags_t weft__trace_flags;
#define weft__trace_on (weft__trace_flags.on)
#define weft__trace_epoch (weft__trace_flags.epoch)

#if defined(__GNUC__) || defined(__clang__)
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define WEFT__UNLIKELY(x) (x)
#endif

#define WEFT__TRACING() \
  WEFT__UNLIKELY(atomic_load_explicit(&weft__trace_on, memory_order_relaxed))

/* initial-exec: one instruction to reach it from the shared library too
 * (the default model calls __tls_get_addr). */
#if defined(__GNUC__) || defined(__clang__)
#define WEFT__TRACE_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define WEFT__TRACE_TLS _Thread_local
#endif

/* What a post reads without a call (trace.c keeps it; thread: its own):
 * `stamp`, the stamp for a post made now (see weft__trace_stamp()), or 0
 * (the thread is in no span); valid while `epoch` is the running trace's.
 * `post_open`: weft__trace_stamp() opened a "post" span, which
 * WEFT__TRACE_POSTED() ends. */
/* A stamp's time is its top 44 bits (trace.c). */
#define WEFT__TRACE_STAMP_TS_SHIFT 20
/* A stream's deliveries read the clock at every WEFT__TRACE_STREAM_EVERY-th
 * only (trace.c: flush_window()). */
#define WEFT__TRACE_STREAM_EVERY 16u
typedef struct {
  uint64_t stamp;
  unsigned epoch;
  bool post_open;
  uint64_t spin; /* See WEFT__TRACE_SPIN(); 0: none. */
  unsigned spin_turn; /* As `spin`: the wait's looks, counted. */
  /* The window of a stream's deliveries that read no clock (see
   * WEFT__TRACE_DELIVER): `win_room`, how many more may join it now (0:
   * the next delivery reads the clock); `win_base`, the begin of the
   * delivery before them (the last that read it), which a joining
   * message's stamp may not be later than; `win_open`, the last one that
   * joined is running; their stamps. */
  unsigned win_room;
  unsigned nwin;
  bool win_open;
  uint64_t win_base;
  uint64_t win_stamp[WEFT__TRACE_STREAM_EVERY - 1];
} weft__trace_tl_t;
extern WEFT__TRACE_TLS weft__trace_tl_t weft__trace_tl;

/* Out of line: only called while tracing, and kept so under link-time
 * optimization (WEFT__TRACE_OUT), which otherwise inlines the ones with a
 * single caller into the message path (port_run()): side by side, 6
 * processes each, a traced ping-pong took 1.24x its untraced time with
 * them inlined and 1.19x with them apart (one-way: 1.08x and 1.10x).
 * Thread: any (each records on the calling thread's track). */
#if defined(__GNUC__) || defined(__clang__)
#define WEFT__TRACE_OUT __attribute__((noinline))
#else
#define WEFT__TRACE_OUT
#endif
void weft__trace_env(void);
WEFT__TRACE_OUT void weft__trace_begin(const char* name, const char* detail);
WEFT__TRACE_OUT bool weft__trace_begin_if(const char* name);
WEFT__TRACE_OUT void weft__trace_end(void);
WEFT__TRACE_OUT void weft__trace_instant(const char* name, const char* detail, int code);
WEFT__TRACE_OUT void weft__trace_counter(const char* name, const char* key, int64_t value);
WEFT__TRACE_OUT void weft__trace_queue(int64_t count);
WEFT__TRACE_OUT void weft__trace_post(weft_msg_t* msg);
/* For a post that carries no message (a port's inline slot): the stamp
 * weft__trace_post() would write (0: none), and the call that puts one on
 * the message the receiver makes of the slot. End the post with
 * WEFT__TRACE_POSTED() as for a message. */
WEFT__TRACE_OUT uint64_t weft__trace_stamp_slow(void);
WEFT__TRACE_OUT void weft__trace_restamp(weft_msg_t* msg, uint64_t stamp);
WEFT__TRACE_OUT void weft__trace_posted(void);
/* `stamp`: the message's post stamp, or WEFT__TRACE_STAMP_IN_MSG: the
 * message carries it (see weft__trace_restamp()). */
#define WEFT__TRACE_STAMP_IN_MSG UINT64_MAX
WEFT__TRACE_OUT void weft__trace_deliver(weft_msg_t* msg, uint64_t stamp);
WEFT__TRACE_OUT void weft__trace_end_delivery(void);
WEFT__TRACE_OUT void weft__trace_settle(void);
/* The clock where no inline read is known (see weft__trace_ticks()). */
uint64_t weft__trace_ticks_slow(void);
void weft__trace_thread_start(const char* name);
void weft__trace_thread_exit(int code);
void weft__trace_work_begin(void);
/* Tests: threads whose buffers are made from now on write them out when
 * they hold `chunks` chunks (0: 64) of `records` events (0: 16,384).
 * Thread: any. */
void weft__trace_limit(unsigned chunks, unsigned records);

/* A post's stamp. A post inside a span (a callback: most posts) takes
 * the time of its thread's last record, which lies in that span, and
 * reads no clock (one read was a sixth of a small post's cost): Perfetto
 * ties an arrow's start to the span around it. A post outside any span
 * opens a "post" span (the slow path). Only while tracing. */
static inline uint64_t weft__trace_stamp(void) {
  /* relaxed: a stale epoch only sends the post to the slow path. */
  if (weft__trace_tl.stamp != 0 &&
      weft__trace_tl.epoch ==
          atomic_load_explicit(&weft__trace_epoch, memory_order_relaxed))
    return weft__trace_tl.stamp;
  return weft__trace_stamp_slow();
}

/* The trace's clock (trace.c says which), inline for the reads a port's
 * wait makes (WEFT__TRACE_SPIN). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define WEFT__TRACE_TSC 1
static inline uint64_t weft__trace_ticks(void) {
  return __builtin_ia32_rdtsc();
}
#else
static inline uint64_t weft__trace_ticks(void) {
  return weft__trace_ticks_slow();
}
#endif

/* Start the trace WEFT_TRACE names, once per process (trace.c uses
 * uv_once). Not a tracing hook: called where the first loop is made. */
#define WEFT__TRACE_ENV() weft__trace_env()

/* A span on the calling thread, around one callback. */
#define WEFT__TRACE_BEGIN(name)         \
  do {                                  \
    if (WEFT__TRACING())                \
      weft__trace_begin((name), NULL);  \
  } while (0)
#define WEFT__TRACE_BEGIN_DETAIL(name, detail) \
  do {                                         \
    if (WEFT__TRACING())                       \
      weft__trace_begin((name), (detail));     \
  } while (0)
#define WEFT__TRACE_END()  \
  do {                     \
    if (WEFT__TRACING())   \
      weft__trace_end();   \
  } while (0)
/* A span that only some calls have (a batch that may be empty): true when
 * it began; end it with WEFT__TRACE_END_IF(that). */
#define WEFT__TRACE_BEGIN_IF(cond, name) \
  (WEFT__TRACING() && (cond) && weft__trace_begin_if((name)))
#define WEFT__TRACE_END_IF(began) \
  do {                            \
    if (WEFT__UNLIKELY(began))    \
      weft__trace_end();          \
  } while (0)

/* An instant marker (worker spawn, online, exit), with a detail string
 * (copied; may be NULL) and a code. */
#define WEFT__TRACE_INSTANT(name, detail, code)       \
  do {                                                \
    if (WEFT__TRACING())                              \
      weft__trace_instant((name), (detail), (code));  \
  } while (0)

/* A counter sample: series `key` (a literal) of counter `name`. */
#define WEFT__TRACE_COUNTER(name, key, value)                \
  do {                                                       \
    if (WEFT__TRACING())                                     \
      weft__trace_counter((name), (key), (int64_t)(value));  \
  } while (0)

/* The messages waiting in a mailbox (`count`, evaluated only when
 * tracing: consumer only), as a counter. */
#define WEFT__TRACE_QUEUE(count)   \
  do {                             \
    if (WEFT__TRACING())           \
      weft__trace_queue((count));  \
  } while (0)

/* Around the push of a message: POST stamps it with the time and the
 * sender's track (the start of its arrow; a post outside any span gets a
 * "post" span of its own), POSTED ends that span. */
#define WEFT__TRACE_POST(msg)    \
  do {                           \
    if (WEFT__TRACING())         \
      weft__trace_post((msg));   \
  } while (0)
#define WEFT__TRACE_POSTED()                         \
  do {                                               \
    if (WEFT__TRACING() && weft__trace_tl.post_open) \
      weft__trace_posted();                          \
  } while (0)

/* The delivery of a message that came inline (`stamp` is not
 * WEFT__TRACE_STAMP_IN_MSG: a plain data message, named "message") right
 * after one that ended in place, in a stream: joins the window (no clock
 * read, no record yet) when it may. True when it did. (The message itself
 * is not read: its fields were just written, byte by byte, and a wider
 * read of them waited for those stores.) */
static inline bool weft__trace_window(uint64_t stamp) {
  weft__trace_tl_t* t = &weft__trace_tl;
  /* relaxed: as weft__trace_stamp(); a stale epoch takes the slow path. */
  if (t->win_room == 0 || stamp == WEFT__TRACE_STAMP_IN_MSG ||
      stamp >> WEFT__TRACE_STAMP_TS_SHIFT > t->win_base ||
      t->epoch != atomic_load_explicit(&weft__trace_epoch, memory_order_relaxed))
    return false;
  t->win_stamp[t->nwin++] = stamp;
  t->win_room--;
  t->win_open = true;
  t->stamp = 0; /* A post in it goes to weft__trace_stamp_slow(). */
  return true;
}

/* Begin the span of a message's delivery (named after its kind) with the
 * arrow from its post (`stamp`: see weft__trace_deliver()); end it with
 * WEFT__TRACE_END_DELIVERY(). Reads `msg` only here, before the callback
 * may free it. */
#define WEFT__TRACE_DELIVER(msg, stamp)                  \
  do {                                                   \
    if (WEFT__TRACING() && !weft__trace_window((stamp))) \
      weft__trace_deliver((msg), (stamp));               \
  } while (0)

/* The end of a delivery's span, in place of WEFT__TRACE_END(): when
 * nothing was recorded inside the span its time is that of the thread's
 * next event, so the loop that delivers must WEFT__TRACE_SETTLE() before
 * it waits or stops delivering (then it reads the clock). */
#define WEFT__TRACE_END_DELIVERY()       \
  do {                                   \
    if (WEFT__TRACING()) {               \
      if (weft__trace_tl.win_open)       \
        weft__trace_tl.win_open = false; \
      else                               \
        weft__trace_end_delivery();      \
    }                                    \
  } while (0)
#define WEFT__TRACE_SETTLE() \
  do {                       \
    if (WEFT__TRACING())     \
      weft__trace_settle();  \
  } while (0)

/* In a loop that waits for a port's next message (port.c's
 * wait_for_more()), before each look: the clock, for the delivery that
 * follows the wait to begin at, so that the delivery reads no clock of its
 * own between the message and its callback. Read at the wait's first look
 * and then at every WEFT__TRACE_SPIN_EVERY-th: a delivery after a wait
 * begins at most that many looks (a pause each, about 0.1-0.2 us here)
 * before the message was seen (trace.c reads the clock instead when that
 * is before the post's stamp). A turn of the wait is the waiting thread's
 * delay in seeing a message; a read at each look made it a few ns longer
 * at most (a TSC read is 23-36 ns on the VMs we measure, but it overlaps
 * the 33 ns pause: bench/README.md). WEFT__TRACE_SETTLE() drops it when
 * no delivery follows. */
#define WEFT__TRACE_SPIN_EVERY 4u /* A power of two. */
#define WEFT__TRACE_SPIN()                                          \
  do {                                                              \
    if (WEFT__TRACING() &&                                          \
        (weft__trace_tl.spin == 0 ||                                \
         (++weft__trace_tl.spin_turn & (WEFT__TRACE_SPIN_EVERY - 1)) == 0)) \
      weft__trace_tl.spin = weft__trace_ticks();                    \
  } while (0)

/* A worker thread begins a new track named `name` (a cached thread runs
 * one worker after another); at its exit, before it tells its owner, it
 * marks the exit and writes the track out (the thread records nothing more
 * until its next THREAD_START). */
#define WEFT__TRACE_THREAD_START(name)     \
  do {                                     \
    if (WEFT__TRACING())                   \
      weft__trace_thread_start((name));    \
  } while (0)
#define WEFT__TRACE_THREAD_EXIT(code)      \
  do {                                     \
    if (WEFT__TRACING())                   \
      weft__trace_thread_exit((code));     \
  } while (0)

/* weft_queue_work()'s work on a libuv threadpool thread: a "work" span on
 * that thread's track (named "uv threadpool"); END as above. */
#define WEFT__TRACE_WORK_BEGIN()   \
  do {                             \
    if (WEFT__TRACING())           \
      weft__trace_work_begin();    \
  } while (0)

#endif /* WEFT_LIB_TRACE_H */
