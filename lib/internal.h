/* internal.h - what lib/ files share with each other; never installed.
 *
 * Layers, bottom up: failpoint, trace, errors, heap, loop, buffer, shared, msg,
 * port, worker_thread, worker, broadcast, format, cluster, request,
 * histogram, pool, pool_parallel (transport/ below them all). A file calls only
 * files below it; a lower one reports upward through a callback
 * (weft__heap_on_breach, weft__xfer_ops_t, weft__route_t) or a return
 * code.
 * scripts/check_layers.sh (ctest check_layers) checks the objects. */
#ifndef WEFT_LIB_INTERNAL_H
#define WEFT_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "weft/weft.h"
#include "mpsc.h"
#include "waker.h"

/* A condition variable whose timed waits count on CLOCK_MONOTONIC, so
 * that a step of the wall clock (NTP, an admin) neither stretches nor cuts
 * them; its waits take deadlines from weft__cond_deadline_in(). 0 or an
 * errno. Thread: any. */
static inline int weft__cond_init_mono(pthread_cond_t* c) {
  pthread_condattr_t ca;
  int err = pthread_condattr_init(&ca);
  if (err != 0)
    return err;
  err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (err == 0)
    err = pthread_cond_init(c, &ca);
  (void)pthread_condattr_destroy(&ca);
  return err;
}

/* `ms` from now on CLOCK_MONOTONIC: the deadline of a timed wait on a
 * condition variable made by weft__cond_init_mono(). Thread: any. */
static inline void weft__cond_deadline_in(struct timespec* until,
                                          uint64_t ms) {
  (void)clock_gettime(CLOCK_MONOTONIC, until);
  until->tv_sec += (time_t)(ms / 1000);
  until->tv_nsec += (long)(ms % 1000) * 1000000L;
  until->tv_sec += until->tv_nsec / 1000000000L;
  until->tv_nsec %= 1000000000L;
}

/* The monotonic clock (uv_hrtime()) in ms: heartbeats, timeouts, pulls. */
static inline uint64_t weft__now_ms(void) {
  return uv_hrtime() / 1000000u;
}

/* The uv_hrtime() (CLOCK_MONOTONIC, ns) that lies `timeout_ms` from now,
 * or -1 (no deadline) for a negative timeout or one so far off (over a
 * century) that the sum would overflow. For the blocking waits on cores
 * (weft__core_wait). Thread: any. */
static inline int64_t weft__deadline_ns(int64_t timeout_ms) {
  if (timeout_ms < 0 || timeout_ms > INT64_MAX / 2000000)
    return -1;
  return (int64_t)uv_hrtime() + timeout_ms * 1000000;
}

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

/* Set whether one object keeps `loop` alive; `*held` remembers what it
 * counts now, so repeated calls adjust the count only on a change.
 * Thread: owner loop only. */
void weft__loop_hold(weft_loop_t* loop, bool* held, bool want);

/* Count of open weft objects on the loop (ports, broadcast channels,
 * workers, waits) whether ref'd or not; weft_loop_free() answers WEFT_EBUSY
 * while it is above 0. Thread: owner loop only. */
void weft__loop_handles(weft_loop_t* loop, int delta);

/* Whether the calling thread owns `loop`. Thread: any. */
bool weft__loop_on_thread(const weft_loop_t* loop);

/* Drain next-ticks then microtasks until both are empty (after every
 * macrotask callback weft runs). Thread: owner loop only. */
void weft__loop_after_callback(weft_loop_t* loop);

/* A unit of work pushed onto a loop's ready queue from any thread. */
typedef struct weft__ready_s weft__ready_t;
struct weft__ready_s {
  weft__mpsc_node_t node;
  /* Runs on the loop's thread when popped. Returns the work it did: 1,
   * plus the messages it delivered (a port), so that one drain of the
   * queue delivers a bounded number of messages (READY_BATCH). */
  int (*run)(weft_loop_t* loop, weft__ready_t* r);
};

/* Push `r` on `loop`'s ready queue and wake the loop if it is parked.
 * The loop must stay open until `r` ran. Thread: any. */
void weft__loop_schedule(weft_loop_t* loop, weft__ready_t* r);

/* Call `cb(arg)` each time the loop has run out of work and is about to
 * spin or park (NULL: none). The callback must not run user code; it may
 * push work for the loop (which the loop then finds before it parks).
 * Thread: owner loop only. */
void weft__loop_on_idle(weft_loop_t* loop, void (*cb)(void* arg), void* arg);

/* Whether weft_loop_run() is to return at the end of the current callback
 * (weft_loop_stop, terminate, weft_worker_exit). Thread: owner loop only. */
bool weft__loop_stopping(weft_loop_t* loop);

/* Whether the loop's ready queue has something (a hint for spinning).
 * Thread: owner loop only. */
bool weft__loop_has_ready(weft_loop_t* loop);
/* How long the loop would spin now for cross-thread work before parking
 * (its adaptive budget, ns; 0 when work rarely comes soon). Owner only. */
uint32_t weft__loop_spin_budget(const weft_loop_t* loop);

/* Objects that must be closed when a worker's loop is torn down (ports,
 * broadcast channels, async waits, child workers). */
typedef struct weft__tracked_s weft__tracked_t;
struct weft__tracked_s {
  weft__tracked_t* next; /* Owner loop only. */
  weft__tracked_t* prev;
  /* Close the object for good; it must untrack itself. */
  void (*teardown)(weft__tracked_t* t);
};
void weft__loop_track(weft_loop_t* loop, weft__tracked_t* t);
void weft__loop_untrack(weft__tracked_t* t);

/* Whether the loop is being torn down (callbacks into user code are
 * skipped, work completions report WEFT_ECANCELED). */
bool weft__loop_closing(const weft_loop_t* loop);

/* The reusable msgpack zone a loop decodes delivered messages into, and
 * a fresh replacement (when a kept message takes the old one).
 * Thread: owner loop only. */
msgpack_zone* weft__loop_zone(weft_loop_t* loop);
/* Where the loop keeps one message object for reuse (msg.c:
 * weft__msg_alloc_on, weft__msg_take_back). Owner thread only. */
weft_msg_t** weft__loop_spare_msg(weft_loop_t* loop);
msgpack_zone* weft__loop_take_zone(weft_loop_t* loop);

/* Ask a loop (any thread) to stop: weft_loop_run() returns at the end of
 * the current callback. Used by terminate. */
void weft__loop_request_stop(weft_loop_t* loop);

/* The loop's idle time (parked or spinning for messages) and its age, in
 * nanoseconds. Thread: any, while the loop is alive (a worker's owner reads
 * its worker's loop under the worker's lock). */
void weft__loop_elu_ns(weft_loop_t* loop, uint64_t* idle, uint64_t* total);
/* How many times the loop has spun for messages so far (see SPIN_NS in
 * loop.c; a budget of 0 makes no spin). Thread: any, while the loop is
 * alive. */
uint64_t weft__loop_spins(weft_loop_t* loop);
/* Fill `out` from such a sample (idle <= total), less `since` if given
 * (weft_loop_utilization()'s arithmetic). Thread: any. */
void weft__elu_fill(uint64_t idle_ns,
                    uint64_t total_ns,
                    const weft_elu_t* since,
                    weft_elu_t* out);

/* Tear a worker's loop down completely (closing every tracked object,
 * waiting for queued work). Thread: the worker. */
void weft__loop_teardown(weft_loop_t* loop);

/* --- heap.c ----------------------------------------------------------
 * A worker's heap: a mimalloc heap for memory that never leaves the worker
 * (destroyed as a whole at the end), a byte count against the limit that
 * also covers cross-thread objects the worker owns, and a list of those
 * objects so they are released when the worker ends. */
typedef struct weft__owned_s weft__owned_t;
typedef struct weft__heap_s weft__heap_t;

struct weft__owned_s {
  weft__owned_t* next; /* Owner thread only. */
  weft__owned_t* prev;
  weft__heap_t* heap;                /* NULL when not owned by a worker heap. */
  size_t charge;                     /* Bytes counted against heap. */
  void (*release)(weft__owned_t* o); /* Frees the object at worker end. */
};

/* Make the calling thread's heap (a worker's). Thread: the worker. */
weft__heap_t* weft__heap_new(size_t limit);
/* Release every owned object, then the mimalloc heap. Thread: the worker. */
void weft__heap_destroy(weft__heap_t* h);
/* Make `h` the calling thread's heap (NULL: none, outside workers). */
void weft__heap_set_current(weft__heap_t* h);

/* Loop-local memory (never crosses threads): the worker heap on a worker,
 * mimalloc's default heap elsewhere. Counted against the limit; NULL when
 * over it (which marks the heap breached). */
void* weft__local_alloc(size_t size);
void* weft__local_calloc(size_t size);
void weft__local_free(void* p);

/* Memory of objects that cross threads (messages, ports, buffers):
 * mimalloc's thread-safe default heap, freed from any thread. */
void* weft__xalloc(size_t size);
/* Zeroed and 64-byte aligned (for structs with cache-line aligned fields);
 * freed with weft__xfree(). */
void* weft__xalloc64(size_t size);
void* weft__xrealloc(void* p, size_t size);
void weft__xfree(void* p);

/* Charge `o` (of `bytes`) to the calling thread's heap and put it on its
 * owned list; WEFT_EHEAPLIMIT if that would pass the limit (nothing
 * changes then). Outside workers: records nothing, returns 0. */
int weft__heap_adopt(weft__owned_t* o, size_t bytes);
/* Take `o` off its heap's list and uncharge it. Thread: the heap's owner
 * (the thread that adopted it). */
void weft__heap_disown(weft__owned_t* o);

/* Who hears of a breach: `cb(arg)` runs once, on the heap's thread, the
 * first time a charge would pass the limit (a worker ends itself with
 * WEFT_EHEAPLIMIT). The heap reports upward through this callback so that
 * heap.c calls nothing above it. Thread: the heap's owner. */
void weft__heap_on_breach(weft__heap_t* h, void (*cb)(void* arg), void* arg);
/* Mark the calling thread's heap breached from outside the allocator (a
 * port's backlog passed the limit): the breach callback runs as for a
 * failed allocation. No-op outside workers. */
void weft__heap_breach(void);
/* The calling thread's heap limit (0: none, or outside workers). */
size_t weft__heap_limit(void);
/* Zeroed cross-thread memory (weft__xalloc()'s heap). Large blocks come
 * zeroed from the OS, so no page is touched here. */
void* weft__xzalloc(size_t size);

/* --- msg.c ----------------------------------------------------------- */

enum {
  WEFT__MSG_DATA,   /* A user message. */
  WEFT__MSG_CLOSE,  /* The sending port closed. */
  WEFT__MSG_ONLINE, /* Worker control messages, owner side only. */
  WEFT__MSG_ERROR,
  WEFT__MSG_EXIT,
  WEFT__MSG_REPLY /* A request's outcome, to its reply inbox (request.c). */
};

enum {
  WEFT__MSG_BUILDING,   /* Sender owns it; transfers not yet committed. */
  WEFT__MSG_QUEUED,     /* In a mailbox; transfers committed. */
  WEFT__MSG_DELIVERING, /* Inside a message callback. */
  WEFT__MSG_KEPT,       /* The receiver took ownership in the callback. */
  WEFT__MSG_OWNED,      /* Returned by weft_port_receive(). */
  WEFT__MSG_DELIVERED   /* Its callback returned without keeping it:
                         * weft's again, to free (request.c tells a
                         * request that reached its replier by it). */
};

/* How an object of a layer above msg.c (a port) travels in a message:
 * msg.c reaches it only through these, so that it calls nothing above it.
 * Thread: the sender's for check and commit; drop from wherever the
 * message is freed untaken. */
typedef struct {
  int (*check)(void* obj);    /* Still transferable: 0 or an error code. */
  void* (*commit)(void* obj); /* Detach from the sender; returns what
                               * travels (and what `obj` becomes). */
  void (*drop)(void* obj);    /* The message was freed untaken. */
} weft__xfer_ops_t;

typedef struct {
  int kind;    /* WEFT_EXT_BUFFER, WEFT_EXT_PORT or WEFT_EXT_SHARED. */
  void* obj;   /* weft_buffer_t*, weft_port_t* (a port core once
                * committed), weft_shared_t*. */
  void* spare; /* Buffers: the handle the bytes move into at commit. */
  const weft__xfer_ops_t* ops; /* Kinds above msg.c (ports); else NULL. */
  bool taken;
} weft__xfer_t;

#define WEFT__MSG_INLINE 96

/* Request/reply (request.c) in a message, so that the value the replier
 * reads is exactly what was sent. A request carries its outcome message
 * (`reply`, made with it); an outcome (kind WEFT__MSG_REPLY) carries the
 * call's id and, until it is posted, a held reply-inbox core. When a
 * message with `routed` set is freed, weft_msg_free() clears `routed` and
 * calls `drop` first (a request settles its call, an outcome that missed
 * its call is counted late): msg.c calls nothing above it. */
typedef struct {
  void (*drop)(weft_msg_t* msg);
  weft_msg_t* reply; /* A request: its outcome message. */
  void* core;        /* An outcome: the core it is posted on, held. */
  uint64_t id;       /* The call's id. */
  /* A request: when its caller stops waiting (uv_hrtime() ns; 0: never),
   * for a layer that keeps the reply handle while the request crosses the
   * network (actors/remote.c). */
  uint64_t deadline;
  /* A reply handle taken on a worker (or a thread that diverts its
   * handles, below): its place on the list of unanswered handles that its
   * owner's end answers (request.c, under its lock). */
  bool listed;
  struct weft__replies_s* reg;
  weft_msg_t* reg_prev;
  weft_msg_t* reg_next;
} weft__route_t;

/* Chunk size of the zone a single message decodes into (received with
 * weft_port_receive(), or decoded after it was kept): msgpack's default of
 * 8 KiB would be an 8 KiB allocation per message. The zone grows as needed;
 * the loop's shared zone keeps msgpack's default. */
#define WEFT__MSG_ZONE_CHUNK 512

/* The first 64 bytes are what both threads touch for every message; a
 * small payload follows in the next line. Fields only some messages use
 * (the decoded view, the packer, the heap record of a kept message) come
 * last and are set up when first used, so that a post writes two cache
 * lines and the receiver's cache does not have to give up the rest. */
struct weft_msg_s {
  weft__mpsc_node_t node; /* Mailbox link. */
  uint8_t kind;
  uint8_t state;
  bool decoded : 1;   /* `obj` is valid. */
  bool has_owned : 1; /* `owned` is on a heap's list (decoded on a limited
                       * heap, kept or received). */
  bool scanned : 1;   /* weft__msgpack_scan() passed; `need` is set. */
  bool backlog : 1;   /* Counted in a port's queued bytes (port.c). */
  bool routed : 1;    /* `route` is set: a request, or a request's outcome
                       * (request.c); see weft__route_t. */
  /* What a layer above lib/ makes of the message (actors/: signals,
   * timers), with `aux`; 0 and 0 for every message lib/ makes. lib/ never
   * reads them. */
  uint8_t tag;
  uint32_t nxfer;
  int32_t code; /* ERROR / EXIT: the code. */
  uint32_t capxfer;
  size_t len;
  size_t cap;
  char* data; /* Payload (inline_buf or heap). */
  weft__xfer_t* xfers;
  msgpack_zone* zone; /* Owned zone for kept or received messages. */
  uint64_t aux;       /* See `tag`. Before the payload so that a small
                       * payload still shares the second line with it. */
  char inline_buf[WEFT__MSG_INLINE];
  /* Cold: set up on first use. */
  msgpack_object obj;  /* Valid when `decoded`. */
  msgpack_packer pk;   /* Messages from weft_msg_new() and post_fn. */
  weft__owned_t owned; /* Valid when `has_owned`. */
  size_t need;         /* Valid when `scanned`: bytes decoding allocates. */
  weft__route_t route; /* Valid when `routed`. */
  /* Set by a post while a trace runs (trace.c): when, from which track,
   * for messages whose payload leaves no room for it in `inline_buf`.
   * Never cleared: trace.c checks it. */
  uint64_t trace;
};

/* Deepest nesting of containers a message may have: msgpack-c's unpacker
 * has a fixed stack of 32 (MSGPACK_EMBED_STACK_SIZE) and fails deeper
 * values, so weft refuses them at the sender (WEFT_ETOODEEP). */
#define WEFT__MSG_MAX_DEPTH WEFT_MSG_MAX_DEPTH

/* A message of `kind` with room for `len` bytes (not filled). */
weft_msg_t* weft__msg_alloc(int kind, size_t len);
/* weft__msg_alloc() on `loop`'s thread, taking the message object a
 * delivery on that loop gave back when it has one (weft__msg_take_back):
 * a port's small messages, made from their mailbox slots, then cost no
 * allocation and no free. */
weft_msg_t* weft__msg_alloc_on(weft_loop_t* loop, int kind, size_t len);
/* Set up the message's packer (before packing into it). */
void weft__msg_start_packer(weft_msg_t* msg);
/* Put `obj` of `kind` on the message's transfer list and write its
 * placeholder at the packer's position; `ops` for kinds above msg.c.
 * 0, WEFT_EDATACLONE (listed already), WEFT_ENOMEM. */
int weft__msg_add_xfer(weft_msg_t* msg,
                       int kind,
                       void* obj,
                       const weft__xfer_ops_t* ops);
/* The transfer entry placeholder `obj` of `kind` stands for in a received
 * message, or NULL. */
weft__xfer_t* weft__msg_lookup(weft_msg_t* msg,
                               const msgpack_object* obj,
                               int kind);
/* Check the transfer list can be posted; then commit it: detach buffers,
 * detach ports from their loop. */
int weft__msg_check_transfers(weft_msg_t* msg);
void weft__msg_commit_transfers(weft_msg_t* msg);
/* Decode the payload into `zone`, or with `zone` NULL into a zone of the
 * message's own: 0, WEFT_EDECODE or WEFT_ENOMEM. */
int weft__msg_decode(weft_msg_t* msg, msgpack_zone* zone);
/* Decode `msg` (into `zone`, or a zone of its own if NULL) and hand it to
 * a caller who owns it from now on (weft_port_receive(), a blocking
 * call's reply, a future's result): 0 and `*out`, or the decode's error
 * with `msg` freed. */
int weft__msg_own(weft_msg_t* msg, msgpack_zone* zone, weft_msg_t** out);
/* Validate that `bytes` is exactly one msgpack value nested at most
 * WEFT__MSG_MAX_DEPTH deep: 0, WEFT_EDECODE or WEFT_ETOODEEP. Allocates
 * nothing (weft__msgpack_scan). */
int weft__msgpack_validate(const void* bytes, size_t len);
/* Walk `bytes` without allocating: 0 when they are exactly one msgpack
 * value, nested at most WEFT__MSG_MAX_DEPTH deep, whose containers claim no
 * more elements than bytes remain; then `*need` (may be NULL) is what
 * msgpack_unpack() allocates from its zone for it (at most 24 bytes per
 * payload byte). WEFT_EDECODE or WEFT_ETOODEEP otherwise. Cost: one step
 * per msgpack item (str, bin and ext bodies are skipped, not read). */
int weft__msgpack_scan(const void* bytes, size_t len, size_t* need);
/* Sender side, before a post commits: refuse a value nested deeper than
 * WEFT__MSG_MAX_DEPTH (WEFT_ETOODEEP) and remember what decoding it will
 * cost (`need`), so that the receiver need not walk it again. Bytes that
 * are not one msgpack value pass (the receiver reports WEFT_EDECODE, as
 * Node's messageerror). */
int weft__msg_seal(weft_msg_t* msg);
/* The check weft__msg_seal() makes, on bytes that travel without a message
 * (a port's inline slot): 0 and `*need` (0 for a scalar: no walk needed),
 * 1 when the bytes are not one value (they pass, unwalked, as with
 * weft__msg_seal), or WEFT_ETOODEEP. */
int weft__msg_seal_bytes(const void* bytes, size_t len, size_t* need);
/* Whether a msgpack value starting with byte `b` is an array or a map. */
bool weft__msgpack_container_head(unsigned char b);
/* Decode `bytes` into `*out` when they are a fixarray or fixmap (1 to 15
 * entries) of scalars, strings and bins only, into `zone` (str and bin
 * point into `bytes`), as msgpack_unpack() would: 0. 1 for any other
 * value (the zone is untouched: decode it with msgpack_unpack()),
 * WEFT_ENOMEM. Thread: any. Hand-written: msgpack_unpack()'s set-up is
 * most of such a small value's decode (bench/README.md). */
int weft__msgpack_decode_flat(const void* bytes, size_t len,
                              msgpack_zone* zone, msgpack_object* out);
/* The whole length of a msgpack value of fixed size starting with byte `b`
 * (integers, floats, nil, bools), or 0 for any other. */
size_t weft__msgpack_scalar_len(unsigned char b);
/* Bytes a queued message holds (header and payload). */
size_t weft__msg_bytes(const weft_msg_t* msg);
/* Hand `msg` to a message callback: it is DELIVERING until the callback
 * returns. Afterwards weft__msg_delivered() says whether the callback kept
 * it (weft_msg_keep()), without reading `msg`: a kept message may already
 * be freed by its new owner. One not kept is weft's again (to free).
 * Thread: the delivering loop's. */
void weft__msg_deliver(weft_msg_t* msg);
bool weft__msg_delivered_kept(weft_msg_t* msg);
/* The two ends of a message callback on `loop`, for a received message:
 * hand_out decodes `msg` into the loop's zone and marks it DELIVERING (0),
 * or frees it and clears the zone (the decode's error: WEFT_EDECODE,
 * WEFT_ETOODEEP, WEFT_ENOMEM); take_back, after the callback, frees it and
 * clears the loop's zone unless the callback kept it (weft_msg_keep()).
 * Thread: `loop`'s. */
int weft__msg_hand_out(weft_msg_t* msg, weft_loop_t* loop);
void weft__msg_take_back(weft_msg_t* msg, weft_loop_t* loop);

/* --- buffer.c -------------------------------------------------------- */

/* An empty handle for weft__buffer_move() (allocated early so that the
 * move itself cannot fail). Free an unused one with weft_buffer_free(). */
weft_buffer_t* weft__buffer_shell(void);
/* Move `buf`'s bytes into `shell` (then owned by no heap) and detach
 * `buf`. Returns `shell`. Thread: the buffer's owner. */
weft_buffer_t* weft__buffer_move(weft_buffer_t* buf, weft_buffer_t* shell);
/* Charge a moved buffer to the calling thread's heap. */
int weft__buffer_adopt(weft_buffer_t* buf);
bool weft__buffer_untransferable(const weft_buffer_t* buf);

/* --- port.c ---------------------------------------------------------- */

/* Hooks for ports that belong to weft itself (a worker's owner side). */
typedef struct {
  void (*message)(weft_port_t* p, weft_msg_t* msg);
  void (*messageerror)(weft_port_t* p, int err);
  void (*control)(weft_port_t* p, weft_msg_t* msg); /* Takes msg. */
} weft__port_hooks_t;

/* A channel whose second end (`remote`, a port core) is "in transit": no
 * loop, no handle yet; a worker adopts it. Thread: owner of `loop`. */
int weft__channel_new_detached(weft_loop_t* loop,
                               weft_port_t** local,
                               void** remote);
/* A channel whose far end is a function: a message posted on `local` (from
 * any thread, after the post's checks and seal) goes to `sink(ctx, msg)` on
 * the poster's thread, which takes it (sets *msg to NULL) and returns 0, or
 * leaves it to the poster and returns an error code. A request's outcome
 * (weft__request_unroute) comes with it. `local` lives on `loop` like any
 * port; `far` is held by the caller until weft__sink_close(far), which
 * closes the channel (`local` sees 'close'). `sink_free(ctx)` runs when the
 * far core is freed: no post is inside `sink` then or later (posters reach
 * the far core through `local`, which holds it while they post).
 * Thread: owner of `loop`. */
typedef int (*weft__sink_fn)(void* ctx, weft_msg_t** msg);
int weft__channel_new_sink(weft_loop_t* loop,
                           weft__sink_fn sink,
                           void (*sink_free)(void* ctx),
                           void* ctx,
                           weft_port_t** local,
                           void** far);
/* Whether `local` of the sink channel is closed (freed by its owner): then
 * nothing can be posted to the sink any more. Thread: any. */
bool weft__sink_abandoned(void* far);
void weft__sink_close(void* far);
/* Make `h` weft's own: hooks instead of user callbacks, always started,
 * never keeps its loop alive, not torn down with its loop (the hook owner
 * releases it with weft__port_release()). */
void weft__port_set_hooks(weft_port_t* h,
                          const weft__port_hooks_t* hooks,
                          void* owner);
void* weft__port_owner(const weft_port_t* h);
/* Mark a port weft hands to the user but owns (a worker's parent port):
 * weft_port_free() refuses it with WEFT_EINVAL. */
void weft__port_mark_internal(weft_port_t* h);
/* Close `h` and release it; weft's own ports and teardown.
 * Thread: the port's loop. */
void weft__port_release(weft_port_t* h);
/* Take `h` off its loop's teardown list (its owner object frees it). */
void weft__port_untrack(weft_port_t* h);
/* Whether the calling thread may transfer `h`: 0 or an error code. */
int weft__port_transferable(const weft_port_t* h);
/* Sender side of a transfer: detach the core from `h` (a husk from now
 * on) and from its loop; returns the core, which the message owns. */
void* weft__port_detach(weft_port_t* h);
/* Receiver side: attach a travelling core to `loop` under a new handle. */
int weft__port_adopt(void* core, weft_loop_t* loop, weft_port_t** out);
/* A travelling core whose message was freed untaken: close and release. */
void weft__port_drop_in_transit(void* core);
/* Push a message straight into `h`'s mailbox (worker control messages,
 * broadcast). Thread: any. */
void weft__port_enqueue(weft_port_t* h, weft_msg_t* msg);
/* Post with the checks of weft_port_post_msg(). Thread: any. */
int weft__port_post_msg(weft_port_t* h, weft_msg_t** msg);
/* weft_port_post/_fn/_msg on a core held with weft__port_hold() (a
 * worker's owner side, posted on from any thread while the handle may be
 * released: a released core answers WEFT_ECLOSED). Thread: any. */
int weft__core_post(void* core, const void* bytes, size_t len);
int weft__core_post_fn(void* core,
                       int (*pack)(msgpack_packer* pk, void* arg),
                       void* arg);
int weft__core_post_msg(void* core, weft_msg_t** msg);

/* The bytes of data messages waiting in the mailbox of `core`'s peer (what
 * a post on `core` queues behind), for a poster that bounds it (an
 * export fed by the network, lib/node.c). The first call starts the
 * count where the peer's owner kept none. Thread: any, while `core` is
 * held. */
size_t weft__core_peer_backlog(void* core);
/* Bound the backlog of a core in transit by `limit` bytes (the heap limit
 * of the worker that will adopt it; attach sets it again). Thread: any,
 * before the core is shared. */
void weft__port_limit_backlog(void* core, size_t limit);
/* Keep a port core alive across a push from a thread that does not own
 * the handle (a worker's exit message). Thread: any. */
void* weft__port_hold(weft_port_t* h);
void weft__port_unhold(void* core);
/* The same for the core and its peer: a post on the core (see
 * weft__core_post) that passed its closed checks may still push on the
 * peer after the handle was released. Thread: any. */
void* weft__port_hold_pair(weft_port_t* h);
void weft__port_unhold_pair(void* core);
/* Push onto a held core's mailbox. Thread: any. */
void weft__port_enqueue_core(void* core, weft_msg_t* msg);
/* A pair of cores on no loop: `*inbox` receives what is posted on
 * `*sender` (weft__core_post_msg). A blocking caller's reply inbox, read
 * with weft__core_wait(); freed with weft__port_drop_in_transit() on both.
 * 0 or WEFT_ENOMEM. Thread: any. */
int weft__inbox_new(void** inbox, void** sender);
/* Wait on `core` (on no loop, one consumer: the caller) until a message of
 * any kind but a close is first in its mailbox (0, `*out` set, undecoded:
 * the caller owns it), `deadline_ns` (uv_hrtime(); negative: none; see
 * weft__deadline_ns())
 * passes (WEFT_ETIMEDOUT, never earlier) or a close is first in line
 * (WEFT_ECLOSED). Spins briefly, then parks as weft_port_receive_wait().
 * Thread: the core's one consumer. */
int weft__core_wait(void* core, int64_t deadline_ns, weft_msg_t** out);
/* The loop `h` is attached to (NULL in transit). Thread: any. */
weft_loop_t* weft__port_loop(const weft_port_t* h);
/* weft__port_hold_pair() on a core. Thread: any (the caller holds it). */
void weft__core_hold_pair(void* core);
/* Port cores alive in the process (tests check nothing piles up). */
long weft__port_live_cores(void);

/* --- shared.c -------------------------------------------------------- */

/* Waiters (sync and async) queued on slot `index` of `width` bytes; for
 * tests that must know a thread is really waiting. Thread: any. */
size_t weft__shared_waiters(weft_shared_t* sh, size_t index, size_t width);

/* Interrupting a worker's blocking waits (terminate interrupts
 * Atomics.wait). A worker thread makes its record current for its whole
 * life; from then on weft_atomic_wait32/64 on that thread returns
 * WEFT_ETERMINATED once weft__wait_interrupt() was called on the record,
 * whether the wait had started by then or starts later. Threads without a
 * record wait as before. worker.c owns the record; shared.c never calls
 * up into worker.c. */
typedef struct weft__wait_intr_s {
  uv_mutex_t lock;     /* Guards `waiter`, and orders `stopped`. */
  atomic_bool stopped; /* Written under `lock`; read without it. */
  void* waiter;        /* The sync wait in progress (on its stack). */
} weft__wait_intr_t;

/* 0 or WEFT_ENOMEM. */
int weft__wait_intr_init(weft__wait_intr_t* in);
void weft__wait_intr_destroy(weft__wait_intr_t* in);
/* The calling thread's record (NULL: none). Thread: the worker. */
void weft__wait_intr_set_current(weft__wait_intr_t* in);
/* Mark the record stopped and wake its thread's wait, if one is in
 * progress; later waits return at once. Thread: any. */
void weft__wait_interrupt(weft__wait_intr_t* in);

/* --- worker_thread.c ------------------------------------------------- */

/* Run `fn(arg)` on a worker thread: a cached idle thread with the same
 * stack size, or (always when `fresh`) a new detached one. Returns 0,
 * WEFT_ENOMEM or WEFT_ESPAWN. Thread: any. */
int weft__thread_run(size_t stack_size,
                     bool fresh,
                     void (*fn)(void* arg),
                     void* arg);

/* --- worker.c -------------------------------------------------------- */

/* The calling thread's per-message limit (worker option), or the default. */
size_t weft__thread_message_limit(void);
/* The core posts to `w` go through (held until `w` is freed; closed once
 * the worker exited), with the checks of weft_worker_post(): 0, or
 * WEFT_EINVAL (NULL, or freed by its owner). Thread: any. */
int weft__worker_post_core(weft_worker_t* w, void** core);

/* --- request.c ------------------------------------------------------ */

/* Where a request goes, for layers above lib/ (actors/): `post` takes
 * `*msg` on 0 (and sets it NULL) and leaves it to the caller on an error.
 * Thread: the requester's. */
typedef int (*weft__post_fn)(void* to, weft_msg_t** msg);
/* weft_port_request_msg() through `post`: the outcome comes to `cb` on the
 * calling thread's loop. Returns as weft_port_request_msg(). */
int weft__request_async(weft__post_fn post,
                        void* to,
                        weft_msg_t** msg,
                        int64_t timeout_ms,
                        weft_reply_cb cb,
                        void* ctx,
                        uint64_t* id);
/* weft_port_call_msg() through `post`. Thread: any (it blocks). */
int weft__request_call(weft__post_fn post,
                       void* to,
                       weft_msg_t** msg,
                       int64_t timeout_ms,
                       weft_msg_t** reply);

/* For lib/node.c. weft__request_route makes `m` (being built) a request
 * whose outcome is posted on `core` (a held core, e.g. a sink channel's
 * local end: the sink then gets a WEFT__MSG_REPLY message with route.id =
 * *id, `code` set for an error outcome, else the reply's bytes); the sink
 * frees it with weft__outcome_done(). weft__request_unroute takes a posted
 * request's outcome off it, as the reply handle a replier would take (NULL:
 * `m` is no request); `m` is then plain data. Thread: any. */
int weft__request_route(weft_msg_t* m, void* core, uint64_t* id);
weft_reply_t* weft__request_unroute(weft_msg_t* m);
void weft__outcome_done(weft_msg_t* out);
/* When the caller of request `m` stops waiting for its outcome
 * (uv_hrtime() ns), or 0: never, or `m` is no request. Thread: whoever
 * holds `m`. */
uint64_t weft__request_deadline(const weft_msg_t* m);

/* A list of reply handles taken and not answered yet, that their owner's
 * end answers (request.c). A worker's is made on its first handle and
 * answered at its loop's end. A layer that runs other code on a worker and
 * outlives that worker's loop (the actor system's schedulers) diverts the
 * thread's handles with weft__replies_divert(fn): each handle taken on the
 * thread from then on goes on fn()'s list (fn never returns NULL; NULL fn:
 * back to the worker's). weft__replies_settle(from, to, code) settles the
 * calls of the handles on `from` now with `code` (an outcome of its own for
 * each: an actor's end) and moves the handles to `to`, still valid: an
 * answer that comes later through one is dropped and counted late.
 * weft__replies_answer(list, code) answers what is left on `list` with
 * `code` when its owner's own end comes (each handle is then the
 * caller's again). A handle answered in the meantime, from any thread,
 * leaves its list. Thread: divert, the thread itself; settle and answer,
 * any thread once no code that may take a handle onto `from` / `list`
 * runs. weft__msg_take_reply_unlisted: weft_msg_take_reply() for a layer
 * that keeps the handle and answers it itself in every case
 * (actors/remote.c): on no list. */
typedef struct weft__replies_s {
  weft_msg_t* head; /* Linked by route.reg_next. */
} weft__replies_t;
void weft__replies_divert(weft__replies_t* (*fn)(void));
void weft__replies_settle(weft__replies_t* from, weft__replies_t* to,
                          int code);
void weft__replies_answer(weft__replies_t* list, int code);
int weft__msg_take_reply_unlisted(weft_msg_t* msg, weft_reply_t** out);

/* --- wire.c ------------------------------------------------------------
 * The bytes of nodes over NATS (lib/node.c, lib/node_membership.c,
 * docs/node.md). Thread: any. */

#define WEFT__WIRE_NAME_MAX 64 /* Node, cluster and export names. */
#define WEFT__WIRE_BEAT_LEN 20 /* A heartbeat's bytes. */
/* 1 to 64 of [A-Za-z0-9_-]: one subject token, no wildcard. */
bool weft__wire_name_ok(const char* s);
/* A message from the network's payload: 0 and a new message (a copy), or
 * WEFT_EDECODE (not exactly one msgpack value within the depth limit),
 * WEFT_ENOMEM. */
int weft__wire_message(const void* data, size_t len, weft_msg_t** out);
/* A heartbeat: msgpack [instance, leaving, slow]: instance a uint64 in
 * its 8-byte form, leaving 0 or 1, slow the messages NATS dropped for
 * this node's subscriptions since it joined (slow consumer), a uint64 in
 * its 8-byte form. Read only in that one shape. */
typedef struct {
  uint64_t instance;
  bool leaving;
  uint64_t slow;
} weft__wire_beat_t;
void weft__wire_beat(const weft__wire_beat_t* beat,
                     unsigned char out[WEFT__WIRE_BEAT_LEN]);
int weft__wire_read_beat(const void* data, size_t len, weft__wire_beat_t* out);
/* The decimal id after `prefix_len` bytes of a reply subject: 0 or
 * WEFT_EDECODE. */
int weft__wire_read_id(const char* subject, size_t prefix_len, uint64_t* id);
/* A Weft-Error header's code (a negative code weft_err_code() knows), or
 * WEFT_EDECODE for anything else. */
int weft__wire_read_error(const char* name);
/* `m`'s value (being built, with transfers listed) as it crosses hosts:
 * each transferred buffer becomes a bin of its bytes (a copy); ports and
 * shared buffers cannot: WEFT_ENOTLOCAL. Appends to `out` (the caller's,
 * initialized). 0, WEFT_ENOTLOCAL, WEFT_EDETACHED, WEFT_EDATACLONE (a
 * placeholder naming no listed buffer), WEFT_EDECODE, WEFT_ENOMEM. */
int weft__wire_flatten(const weft_msg_t* m, msgpack_sbuffer* out);

/* --- failpoint.c -----------------------------------------------------
 * Allocation-failure injection for tests, compiled in with the CMake option
 * WEFT_FAILPOINTS=ON (scripts/test.sh turns it on). Every allocation weft
 * makes (heap.c's allocators, and each direct malloc, calloc, strdup or
 * msgpack zone in lib/) passes WEFT__ALLOC_FAILS() first; when it answers
 * true the allocation fails as if memory had run out. Without the option
 * it is the constant false. */
#ifdef WEFT_FAILPOINTS
/* True when this allocation is to fail. Thread: any. */
bool weft__fail_alloc(void);
/* Reset the count; the `nth` allocation from now on fails (0: none, only
 * count). Thread: any, before the scenario under test starts. */
void weft__failpoint_arm(uint64_t nth);
/* Allocations checked since the last arm, and whether the armed one
 * failed. */
uint64_t weft__failpoint_count(void);
bool weft__failpoint_fired(void);
#define WEFT__ALLOC_FAILS() weft__fail_alloc()
#else
#define WEFT__ALLOC_FAILS() false
#endif
/* `expr` (an allocation that answers NULL on failure), or NULL when the
 * failpoint says this allocation fails. */
#define WEFT__FAILABLE(expr) (WEFT__ALLOC_FAILS() ? NULL : (expr))

#endif /* WEFT_LIB_INTERNAL_H */
