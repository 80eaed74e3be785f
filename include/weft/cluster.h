/* cluster.h - Node's cluster: a primary process starts N worker processes
 * of the same program, serves the listening TCP sockets they ask for
 * (round robin by default, as Node on Linux), and exchanges msgpack
 * messages with each of them over an IPC pipe.
 *
 * A child is the same program started again (as Node does: /proc/self/exe
 * with this process's arguments, unless opts.exec/argv say otherwise); it
 * runs main() from the start and finds out that it is a child with
 * weft_cluster_is_primary(). Like a forked Node worker it then joins the
 * cluster (weft_cluster_join(): the "online" event in the primary) and
 * opens its server with weft_cluster_listen(), which in a child asks the
 * primary for the socket:
 *
 *   primary                                   child (same program)
 *   weft_cluster_new(&c, loop, &opts)
 *   weft_cluster_fork(c, NULL) x N     ──▶    weft_cluster_is_primary() false
 *                                             weft_cluster_join(loop, ...)
 *   events.online(w)                   ◀──    weft_cluster_listen(loop, ...)
 *   binds host:port once               ──▶    listen cb(server, 0)
 *   events.listening(w, host, port)
 *   RR: accepts, sends each connection ──▶    on_connection(server, 0):
 *       to the next child in turn             weft_cluster_accept()
 *   NONE: sends the socket             ──▶    accepts on the shared socket
 *
 * Scheduling (opts.sched, Node's cluster.schedulingPolicy):
 * - WEFT_CLUSTER_SCHED_RR, the default: the primary accepts every
 *   connection and hands it over the pipe to the next child, in turn,
 *   among the connected children that listen on that address (so 4
 *   connections on 2 children are always 2 and 2). A connection that
 *   cannot be written to a child (it died) goes to the next; one that no
 *   child listens for is closed (none are queued). A connection already
 *   written to a child that dies before it took it is lost with the child.
 * - WEFT_CLUSTER_SCHED_NONE: every child accepts on the shared socket and
 *   the kernel picks the child (it may give all connections to one).
 *   Connections waiting in the accept queue when a child dies go to the
 *   others, and to its replacement (opts.restart).
 * - WEFT_CLUSTER_SCHED_DEFAULT: RR, unless the environment variable
 *   WEFT_CLUSTER_SCHED_POLICY is "none" (as NODE_CLUSTER_SCHED_POLICY).
 * Either way the primary keeps its copy of each socket open while the
 * cluster lives. A child's on_connection calls weft_cluster_accept()
 * where it would call uv_accept(): it works under both policies and
 * outside a cluster.
 *
 * Messages: one msgpack value per message, in order, with the message API
 * of ports (weft_msg_new(), weft_msg_pack(), weft_msg_read(), keep).
 * Buffers are copied; transferred buffers, shared buffers and ports cannot
 * cross a process: a message that lists any is refused (WEFT_ENOTLOCAL).
 * Nothing is lost or duplicated while both ends are open; what is still
 * queued when a process dies is lost with it.
 *
 * Threads: everything here runs on the loop given to weft_cluster_new() or
 * weft_cluster_join() (the process's main loop), and every event comes on
 * that loop, followed by a drain of next-ticks and microtasks.
 * Memory: weft owns the cluster and the worker handles; a handle stays
 * valid until its exit event (primary) or disconnect event (child)
 * returns. */
#ifndef WEFT_CLUSTER_H
#define WEFT_CLUSTER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "weft/common.h"
#include "weft/loop.h"

typedef struct weft_cluster_s weft_cluster_t;
/* One worker process: in the primary, a child; in a child, the child
 * itself (its link to the primary, Node's cluster.worker). */
typedef struct weft_cluster_worker_s weft_cluster_worker_t;

/* Events. Any may be NULL. Runs on: the cluster's loop. */
typedef struct weft_cluster_events_s {
  /* Primary: a child process was started (by weft_cluster_fork() or a
   * restart). */
  void (*fork)(weft_cluster_worker_t* w);
  /* Primary: the child joined (weft_cluster_join()). */
  void (*online)(weft_cluster_worker_t* w);
  /* Primary: the child listens on `host`:`port` (the port bound, if it
   * asked for 0): under SCHED_NONE it got the socket and accepts on it;
   * under RR connections to that address now go to it too, in turn. */
  void (*listening)(weft_cluster_worker_t* w, const char* host, int port);
  /* Both: one message from the other side. `msg` is valid for the call
   * (weft_msg_keep() to keep it). */
  void (*message)(weft_cluster_worker_t* w, weft_msg_t* msg);
  /* Both: the IPC pipe closed (either side disconnected, or the other
   * process ended). Posts fail with WEFT_ECLOSED from then on. In a
   * child, the handle is freed when this event returns, and a child that
   * does nothing else then ends when its loop runs out of work (close
   * your server: Node's worker exits on disconnect the same way). */
  void (*disconnect)(weft_cluster_worker_t* w);
  /* Primary: the child process ended, with its exit code (`signal` 0) or
   * the signal that killed it (`code` 0). Always the last event of a
   * handle, after disconnect; the handle is freed when it returns. */
  void (*exit)(weft_cluster_worker_t* w, int code, int signal);
  /* Primary: something went wrong outside any call: a child could not be
   * started again (a restart's uv_spawn failed), or restarts passed
   * opts.max_restarts within opts.restart_window_ms (no more restarts
   * until the window passes: WEFT_ERESTARTS), or a child sent bytes that
   * are not a message (WEFT_EDECODE; that child is disconnected). `w` is
   * the child concerned, or NULL. */
  void (*error)(weft_cluster_t* c, weft_cluster_worker_t* w, int err);
} weft_cluster_events_t;

/* How connections reach the children (see the top of this file). */
typedef enum weft_cluster_sched_e {
  WEFT_CLUSTER_SCHED_DEFAULT = 0, /* RR unless WEFT_CLUSTER_SCHED_POLICY=none */
  WEFT_CLUSTER_SCHED_RR,          /* The primary accepts, children in turn. */
  WEFT_CLUSTER_SCHED_NONE         /* Children accept; the kernel picks. */
} weft_cluster_sched_t;

/* Primary options; zero means default for every field. */
typedef struct weft_cluster_opts_s {
  /* The program children run, and its argv (NULL-terminated, argv[0]
   * first). Default: this program (/proc/self/exe) with this process's
   * own arguments (/proc/self/cmdline), as Node's cluster.fork(). */
  const char* exec;
  char* const* argv;
  /* Restart a child that ends unless the primary ended it
   * (weft_cluster_worker_kill(), _disconnect(), weft_cluster_close()) or
   * it exited with code 0 after a disconnect: the replacement is a new
   * handle with a new id (fork, online... events again). */
  bool restart;
  /* Restart intensity (as Erlang's supervisors): at most `max_restarts`
   * restarts within `restart_window_ms`; past it the cluster reports
   * WEFT_ERESTARTS and restarts no more until the window has passed.
   * Defaults 10 and 10000. */
  unsigned max_restarts;
  uint32_t restart_window_ms;
  /* Largest message either side accepts (bytes of msgpack); a larger one
   * is refused at the sender with WEFT_EMSGSIZE. Default 64 MiB. */
  size_t max_message;
  weft_cluster_events_t events;
  void* data; /* weft_cluster_get_data(). */
  /* Scheduling policy for every address the children listen on. */
  weft_cluster_sched_t sched;
} weft_cluster_opts_t;

/* Whether this process is the primary: true unless it was started by a
 * cluster's weft_cluster_fork() (it then finds the IPC pipe in its
 * environment). Thread: any. */
WEFT_EXTERN bool weft_cluster_is_primary(void);

/* --- Primary --------------------------------------------------------- */

/* Create a cluster on `loop` (the process's main loop). `opts` may be NULL
 * (and is copied, argv included). Children inherit the environment,
 * stdin, stdout and stderr, and get UV_TCP_SINGLE_ACCEPT=1 unless it is
 * set (under SCHED_NONE libuv then yields after each accept, so that the
 * children share a burst of connections instead of the first one awake
 * taking them all).
 * A cluster with live children keeps the loop
 * alive. Sets SIGPIPE to ignored if it is at its default (as Node does:
 * a write to a child that is gone must fail, not end the primary).
 * Returns 0, WEFT_EINVAL (NULL out or loop; called in a child; an
 * unknown opts.sched), WEFT_ENOMEM, WEFT_EWRONGTHREAD.
 * Thread: owner of `loop`. */
WEFT_EXTERN int weft_cluster_new(weft_cluster_t** out,
                                 weft_loop_t* loop,
                                 const weft_cluster_opts_t* opts);

/* Start one child process (Node's cluster.fork()). `out` (may be NULL)
 * gets its handle at once; the fork event runs before this returns.
 * Returns 0, WEFT_EINVAL, WEFT_ECLOSED (the cluster is closing),
 * WEFT_ENOMEM, or libuv's error from uv_spawn (e.g. UV_ENOENT).
 * Thread: the cluster's loop. */
WEFT_EXTERN int weft_cluster_fork(weft_cluster_t* c,
                                  weft_cluster_worker_t** out);

/* Close the cluster: stop restarting, disconnect every child, and once
 * every child has exited close the listening sockets, call `cb` (may be
 * NULL) and free the cluster. A child that has not exited `grace_ms` after
 * the disconnect gets SIGKILL (0: wait without limit). Returns 0,
 * WEFT_EINVAL, WEFT_EBUSY (already closing). Thread: the cluster's loop. */
WEFT_EXTERN int weft_cluster_close(weft_cluster_t* c,
                                   uint32_t grace_ms,
                                   void (*cb)(weft_cluster_t* c));

/* Live children (started and not yet exited). Thread: the cluster's loop. */
WEFT_EXTERN unsigned weft_cluster_size(const weft_cluster_t* c);

WEFT_EXTERN void* weft_cluster_get_data(const weft_cluster_t* c);
WEFT_EXTERN weft_loop_t* weft_cluster_loop(const weft_cluster_t* c);

/* Send `signum` to the child (Node's worker.kill(); default SIGTERM when
 * 0). A child killed this way is not restarted. Returns 0, WEFT_EINVAL (a
 * child's own handle), WEFT_ENOTSTARTED (already exited), or libuv's
 * error. Thread: the cluster's loop. */
WEFT_EXTERN int weft_cluster_worker_kill(weft_cluster_worker_t* w,
                                         int signum);

/* The child's process id (on a child's own handle: getpid()); 0 once a
 * child has exited. Thread: the loop's. */
WEFT_EXTERN int weft_cluster_worker_pid(const weft_cluster_worker_t* w);

/* --- Child ----------------------------------------------------------- */

/* Join the cluster that started this process: open the IPC pipe on `loop`
 * (the process's main loop) and tell the primary (its online event).
 * `events` (may be NULL; copied): message and disconnect apply here. `out`
 * gets the child's own handle (Node's cluster.worker). The pipe keeps the
 * loop alive until it closes (weft_cluster_worker_disconnect(), or the
 * primary's disconnect or death). Ignores SIGPIPE as weft_cluster_new()
 * does. Returns 0, WEFT_EINVAL (NULL loop or
 * out; this process is the primary), WEFT_EBUSY (already joined),
 * WEFT_ENOMEM, or libuv's error opening the pipe.
 * Thread: owner of `loop`. */
WEFT_EXTERN int weft_cluster_join(weft_loop_t* loop,
                                  const weft_cluster_events_t* events,
                                  void* data,
                                  weft_cluster_worker_t** out);

/* --- Both sides ---------------------------------------------------------- */

/* The worker's id: 1, 2, ... in order of forking, never reused within a
 * primary (a replacement gets a new one). Thread: the loop's. */
WEFT_EXTERN unsigned weft_cluster_worker_id(const weft_cluster_worker_t* w);

/* Post one message to the other side (primary → child on a child's
 * handle; child → primary on the self handle from weft_cluster_join()):
 * `len` pre-packed bytes (one msgpack value, copied), a message built with
 * weft_msg_new() (taken: *msg is set to NULL on success; on an error it
 * stays the caller's), or a format string (weft_msg_pack()). Returns 0,
 * WEFT_EINVAL, WEFT_EDECODE (not exactly one msgpack value),
 * WEFT_ETOODEEP, WEFT_EMSGSIZE, WEFT_ENOTLOCAL (the message lists
 * buffers, shared buffers or ports), WEFT_ECLOSED (disconnected or
 * exited), WEFT_ENOMEM. Thread: the loop's. */
WEFT_EXTERN int weft_cluster_worker_post(weft_cluster_worker_t* w,
                                         const void* bytes,
                                         size_t len);
WEFT_EXTERN int weft_cluster_worker_post_msg(weft_cluster_worker_t* w,
                                             weft_msg_t** msg);
WEFT_EXTERN int weft_cluster_worker_post_fmt(weft_cluster_worker_t* w,
                                             const char* fmt,
                                             ...);

/* Close the IPC pipe (Node's worker.disconnect()): what was posted before
 * is still written; both sides then get the disconnect event. In the
 * primary, a child disconnected this way that exits is not restarted.
 * Returns 0, WEFT_EINVAL, WEFT_ECLOSED (already). Thread: the loop's. */
WEFT_EXTERN int weft_cluster_worker_disconnect(weft_cluster_worker_t* w);

/* Whether the pipe is still open. Thread: the loop's. */
WEFT_EXTERN bool weft_cluster_worker_connected(const weft_cluster_worker_t* w);

WEFT_EXTERN int weft_cluster_worker_set_data(weft_cluster_worker_t* w,
                                             void* data);
WEFT_EXTERN void* weft_cluster_worker_get_data(const weft_cluster_worker_t* w);

/* --- Listening sockets (any process) ------------------------------------- */

/* Called once the socket is ready: `status` 0 with `server` listening (its
 * connections go to the `on_connection` given to weft_cluster_listen(),
 * as with uv_listen(); in a child under RR, `server` has no socket of its
 * own and is ready to get connections from the primary), or a negative
 * code (libuv's bind/listen error,
 * e.g. UV_EADDRINUSE; WEFT_ECLOSED if the primary went away first).
 * Runs on: the loop; never inside weft_cluster_listen(). */
typedef void (*weft_cluster_listen_cb)(uv_tcp_t* server, int status,
                                       void* ctx);

/* Listen on `host`:`port` (numeric IPv4 or IPv6 address; port 0: any free
 * port, the same for every child) with `server`, which the caller has
 * initialized with uv_tcp_init(weft_loop_uv(loop), server) and owns (close
 * it with uv_close()). Outside a cluster, and in the primary, the socket
 * is bound here. In a child that has joined, the primary binds it (once
 * per address, shared by every child that asks for it, kept open while
 * the cluster lives). Under SCHED_NONE it sends the socket over the pipe
 * and the child accepts on it. Under SCHED_RR the primary accepts and
 * each connection it hands to this child calls on_connection(server, 0),
 * in which weft_cluster_accept() takes it (one not taken by the time
 * on_connection returns is closed); `server` must stay valid until the
 * disconnect event or until it is closed (a connection for a server that
 * is closing is closed). Under RR a server asks once, and a child listens
 * on an address with one server (a second: `cb` gets UV_EBUSY).
 * `backlog` <= 0 means 511 (Node's; under RR, the primary's socket's).
 * Returns 0 (`cb` will run once), WEFT_EINVAL (a NULL argument, a host
 * that is not a numeric address, a port out of 0..65535),
 * WEFT_ENOTSTARTED (a child that has not joined), WEFT_EBUSY (RR:
 * `server` already asked), WEFT_ECLOSED, WEFT_ENOMEM.
 * Thread: owner of `loop`. */
WEFT_EXTERN int weft_cluster_listen(weft_loop_t* loop,
                                    uv_tcp_t* server,
                                    const char* host,
                                    int port,
                                    int backlog,
                                    uv_connection_cb on_connection,
                                    weft_cluster_listen_cb cb,
                                    void* ctx);

/* Take the connection that on_connection(server, 0) announces, into
 * `client` (initialized by the caller with uv_tcp_init() on the server's
 * loop, and owned by it: close it with uv_close()); call it where you
 * would call uv_accept(). In a cluster child under RR it takes the
 * connection the primary handed over (it came over the pipe, which
 * uv_accept() on `server` cannot take), and only inside that
 * on_connection call; elsewhere (SCHED_NONE, the primary, outside a
 * cluster) it is uv_accept(server, client). Returns 0, WEFT_EINVAL (NULL
 * server or client), WEFT_EAGAIN (RR: no connection is pending for
 * `server`, e.g. outside its on_connection or taken already), or libuv's
 * error from uv_accept() (e.g. UV_EAGAIN, UV_EBUSY: `client` has a
 * socket already; under RR the connection is then closed).
 * Thread: owner of the server's loop. */
WEFT_EXTERN int weft_cluster_accept(uv_tcp_t* server, uv_tcp_t* client);

#endif /* WEFT_CLUSTER_H */
