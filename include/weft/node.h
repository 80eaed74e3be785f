/* node.h - this process as a node of a cluster of processes and hosts,
 * joined through NATS (https://nats.io; Debian's nats-server and libnats).
 *
 * A node exports ports under names; another node gets an ordinary port for
 * such a name and uses it as it uses any port: weft_port_post/_msg/_fn,
 * weft_port_request and weft_port_call (request.h) work unchanged, from
 * any thread, and the receiver answers with weft_msg_reply or a reply
 * handle as it always does. Nothing changes for a program that never
 * joins: NATS is used only by a joined node.
 *
 *   weft_node_opts_t o = {.servers = "nats://127.0.0.1:4222",
 *                         .name = "b"};
 *   weft_node_join(loop, &o, &node);
 *   weft_node_export(node, "sum", worker_side_port);   // on node "b"
 *   ...
 *   weft_node_port(node, "b", "sum", &p);              // on node "a"
 *   weft_port_call(p, "\x92\x01\x02", 3, 1000, &reply);
 *
 * Semantics across hosts (docs/node.md has the wire):
 * - Copies: a message is its msgpack bytes, published once; the receiver
 *   owns its copy. A buffer listed for transfer crosses as a copy of its
 *   bytes (a msgpack bin in its place), and the sender's handle is detached
 *   as by a local transfer; shared buffers and ports cannot leave the
 *   process: posting one on a remote port answers WEFT_ENOTLOCAL (the
 *   message stays the caller's).
 * - Order: messages from one thread to one exported name arrive in the
 *   order they were posted (one connection per node; NATS keeps order per
 *   connection and subject; one delivery thread per export).
 * - Delivery: at most once. While both nodes stay connected nothing posted
 *   is lost or duplicated; a post to a name that no node exports is dropped
 *   by NATS, which cannot tell (use a request to find out: it answers
 *   WEFT_ENORESPONDERS); posts made while disconnected wait in the client's
 *   reconnect buffer and go when it reconnects.
 * - Requests: the reply, the replier's error (by name), WEFT_ENORESPONDERS
 *   when no node exports the name, WEFT_ETIMEDOUT at the requester's
 *   timeout, WEFT_ENOTCONNECTED when the node leaves first.
 * - Untrusted input: every payload from the network is checked to be
 *   exactly one msgpack value within the limits before it becomes a
 *   message; others are dropped and counted (weft_node_stats), and a
 *   request among them is answered with the error (EDECODE, EMSGSIZE).
 */
#ifndef WEFT_NODE_H
#define WEFT_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"
#include "weft/loop.h"
#include "weft/port.h"
#include "weft/worker.h"

typedef struct weft_node_s weft_node_t;

typedef enum {
  WEFT_NODE_CONNECTED = 1, /* Connected to a server of the cluster. */
  WEFT_NODE_DISCONNECTED,  /* Lost it; reconnecting (posts are buffered). */
  WEFT_NODE_RECONNECTED,
  WEFT_NODE_CLOSED, /* For good: reconnect attempts ran out. */
  WEFT_NODE_ERROR,  /* An asynchronous error; `code` says which (e.g.
                     * WEFT_ESLOWCONSUMER: NATS dropped messages for this
                     * node, or for `node`; UV_EACCES for a refused
                     * permission). */
  WEFT_NODE_UP,     /* Node `node` joined (or came back, or restarted). */
  WEFT_NODE_DOWN    /* Node `node` left, or fell silent for down_after_ms
                     * (died, or cut off from us): our calls still waiting
                     * on it settled with WEFT_ENOTCONNECTED. */
} weft_node_event_kind;

typedef struct {
  weft_node_event_kind kind;
  int code;         /* WEFT_NODE_ERROR: the error; else 0. */
  const char* node; /* UP, DOWN: the other node's name (valid during the
                     * callback). ERROR: NULL for this node's own errors;
                     * for WEFT_ESLOWCONSUMER, the name of the node whose
                     * heartbeat said NATS dropped messages for it (some
                     * may be this node's posts), or NULL when it was this
                     * node. */
} weft_node_event_t;

/* Runs on the node's loop. */
typedef void (*weft_node_event_cb)(weft_node_t* node,
                                   const weft_node_event_t* ev,
                                   void* ctx);

typedef struct {
  /* Required: NATS server URLs, comma-separated ("nats://host:port,...";
   * "tls://" with tls_ca), tried in this order: the first is where the
   * node connects when it can, the others are where it fails over (and
   * the servers tell it of more). */
  const char* servers;
  /* Required: this node's name, unique in the cluster: 1-64 of
   * [A-Za-z0-9_-]. */
  const char* name;
  /* The cluster: nodes of different clusters on the same servers do not
   * see each other. Same characters; NULL: "weft". */
  const char* cluster;
  /* Credentials, as the servers require (all optional): user and password,
   * a NATS credentials file, or an nkey (public key and seed file); TLS
   * with a trusted CA file, and a client certificate and key for mutual
   * TLS. */
  const char* user;
  const char* password;
  const char* creds_file;
  const char* nkey;
  const char* nkey_seed_file;
  const char* tls_ca;
  const char* tls_cert;
  const char* tls_key;
  int64_t connect_timeout_ms; /* Per attempt; 0: 2000. */
  int64_t reconnect_wait_ms;  /* Between attempts; 0: 250. */
  int max_reconnect;          /* Attempts before CLOSED; 0: 120; -1: always. */
  /* How long this node keeps an unanswered request of its own, or another
   * node's request to one of its exports, before it forgets it (the
   * requester's own timeout is what it sees); 0: 60000. */
  int64_t request_ttl_ms;
  /* Membership: every node publishes a heartbeat each heartbeat_ms (0:
   * 500) and sees another DOWN after down_after_ms of silence (0: four
   * heartbeats). A node that leaves says so, and is DOWN at once. */
  int64_t heartbeat_ms;
  int64_t down_after_ms;
  /* Backpressure: messages from the network wait in an exported port's
   * queue until its loop takes them; while that queue holds this many
   * bytes (0: 16 MiB; a message counts its payload and its ~300-byte
   * header), the export takes no more from NATS, which then holds them
   * up to its pending limit (65,536 messages per export) and drops the
   * rest as a slow consumer (posts that came back to back travel as one
   * NATS message, dropped whole): counted (weft_node_stats().slow_consumer),
   * reported here (WEFT_NODE_ERROR, WEFT_ESLOWCONSUMER) and to the other
   * nodes, never silently. */
  size_t max_export_backlog;
  /* Posts that come back to back travel together: a post on a remote port
   * made within this many microseconds of the one before to the same name
   * joins a batch, published as one NATS message this long after its
   * first post (before a request on that name, or at 64 KiB: at once).
   * One NATS message then carries many posts (docs/node.md); a post after
   * a pause goes alone, at once. 0: within 10 us, published as soon as the
   * node's writing thread runs (measured best: bench/README.md; waiting
   * 10 us for more lost 4-46% of the one-way rate); negative: every post
   * alone. */
  int64_t post_gather_us;
  weft_node_event_cb on_event; /* May be NULL. */
  void* ctx;
} weft_node_opts_t;

/* Join the cluster through `opts->servers`: returns at once while the
 * client connects (nats.c retries in the background; WEFT_NODE_CONNECTED
 * comes to on_event). Exports and ports may be made before it connects;
 * what is published meanwhile waits in the client's buffer. A joined node
 * keeps `loop` alive until weft_node_leave(). The cluster's answer comes
 * as events, never as join's result: a server that refuses the node (wrong
 * or no credentials: WEFT_NODE_ERROR with UV_EACCES first; no TLS where it
 * wants TLS) or attempts that ran out end in WEFT_NODE_CLOSED without
 * WEFT_NODE_CONNECTED; the node stays valid (exports and ports answer
 * WEFT_ENOTCONNECTED) until weft_node_leave(). Returns 0, WEFT_EINVAL (NULL,
 * no servers, a bad name or URL, a credentials or CA file that cannot be
 * read), WEFT_ENOMEM, WEFT_EWRONGTHREAD. Thread: `loop`'s. The first connection
 * attempt runs on this thread, bounded by connect_timeout_ms (a refused
 * connection returns at once). */
WEFT_EXTERN int weft_node_join(weft_loop_t* loop,
                               const weft_node_opts_t* opts,
                               weft_node_t** out);

/* Serve `name` (same characters as node names): what other nodes post or
 * request on it is posted on `port` from this process, so it reaches
 * `port`'s peer (a worker's end, or a port with a message callback), which
 * answers requests as local ones. The node holds `port`'s channel: the
 * port may be freed (later messages are dropped and counted, requests
 * answered WEFT_ECLOSED). 0, WEFT_EINVAL, WEFT_EEXIST (exported already),
 * WEFT_ENOMEM, WEFT_ENOTCONNECTED (the node's connection closed for good:
 * WEFT_NODE_CLOSED), WEFT_EWRONGTHREAD.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_node_export(weft_node_t* node,
                                 const char* name,
                                 weft_port_t* port);
/* Serve `name` with worker `w`: what other nodes post or request on it
 * arrives on the worker's parent port (weft_parent_port()), as
 * weft_worker_post() from this process would. The node holds what it
 * needs: `w` may be freed (later messages are dropped and counted).
 * Returns as weft_node_export(). Thread: the node's loop. */
WEFT_EXTERN int weft_node_export_worker(weft_node_t* node,
                                        const char* name,
                                        weft_worker_t* w);
/* Stop serving `name`. 0, WEFT_ENOENT, WEFT_EINVAL, WEFT_EWRONGTHREAD.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_node_unexport(weft_node_t* node, const char* name);

/* A port on the node's loop whose messages go to `name` exported by node
 * `node_name` (which need not be up yet). Post, request and call on it
 * from any thread; it may be transferred to a worker like any port. Free
 * it with weft_port_free() (the caller owns it); it closes (its close
 * event runs) when the node leaves. 0, WEFT_EINVAL, WEFT_ENOMEM,
 * WEFT_ENOTCONNECTED (closed for good: WEFT_NODE_CLOSED), WEFT_EWRONGTHREAD.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_node_port(weft_node_t* node,
                               const char* node_name,
                               const char* name,
                               weft_port_t** out);

typedef struct {
  uint64_t published;       /* Messages and requests sent. */
  uint64_t received;        /* Messages and requests that became messages. */
  uint64_t replies;         /* Replies that settled a request of ours. */
  uint64_t dropped_decode;  /* Payloads that were not one msgpack value. */
  uint64_t dropped_size;    /* Payloads over the export's port limit. */
  uint64_t dropped_closed;  /* For an export whose port was freed. */
  uint64_t late_replies;    /* For requests already settled or forgotten. */
  uint64_t slow_consumer;   /* NATS messages (a batch of posts is one)
                             * NATS dropped for this node's
                             * subscriptions: an export fell behind (see
                             * max_export_backlog). As of the last
                             * heartbeat; now when read on the loop. */
  uint64_t expired;         /* Asks and spawns of this node's actors to
                             * other nodes (weft/actor_remote.h) whose
                             * caller had stopped waiting (its timeout)
                             * and no reply had come: forgotten, their
                             * reply handle answered WEFT_ETIMEDOUT. */
  uint64_t unsent;          /* Posts accepted into a batch (posts that
                             * come back to back travel together, one
                             * NATS message for many: docs/node.md) that
                             * NATS refused when the batch was written:
                             * the connection had closed for good. */
} weft_node_stats_t;

/* Counters since join. 0 or WEFT_EINVAL. Thread: any. */
WEFT_EXTERN int weft_node_stats(weft_node_t* node, weft_node_stats_t* out);

/* This node's name (static until weft_node_leave). Thread: any. */
WEFT_EXTERN const char* weft_node_name(const weft_node_t* node);

/* Whether node `name` is up as this node sees it (its heartbeats come;
 * true for this node's own name). Thread: any. */
WEFT_EXTERN bool weft_node_is_up(weft_node_t* node, const char* name);

/* Whether the client is connected now. Thread: any. */
WEFT_EXTERN bool weft_node_connected(const weft_node_t* node);

/* Send what is buffered and wait until the server has it, at most
 * `timeout_ms`: 0, WEFT_ETIMEDOUT, WEFT_ENOTCONNECTED. Blocks the calling
 * thread (for tests and orderly shutdown). Thread: any. */
WEFT_EXTERN int weft_node_flush(weft_node_t* node, int64_t timeout_ms);

/* Leave the cluster and free the node: exports stop, requests of ours
 * still waiting settle with WEFT_ENOTCONNECTED, ports from
 * weft_node_port() close, and the loop is no longer kept alive by it.
 * Blocks while the client closes its connection. 0, WEFT_EINVAL,
 * WEFT_EWRONGTHREAD. Thread: the node's loop. */
WEFT_EXTERN int weft_node_leave(weft_node_t* node);

/* --- Remote spawn: start a registered worker entry on a named node ------
 *
 *   weft_node_register_worker(node, "adder", adder_main, NULL);   // on "b"
 *   ...
 *   char name[WEFT_NODE_NAME_MAX + 1];                            // on "a"
 *   weft_node_spawn_worker_on(node, "b", "adder", "\x05", 1, 2000, name);
 *   weft_node_port(node, "b", name, &p);     // then as any export
 *
 * Node "b" starts a worker running the entry, with the spawn's argument
 * as its workerData (weft_worker_data()), exports it under a fresh name
 * (weft_node_export_worker(): what is posted or requested there arrives
 * on the worker's parent port) and answers with that name. The caller
 * gets the name, not a port: ports are made on the node's loop and the
 * blocking call runs on any thread; a name can also be handed on to
 * other nodes. When the worker exits, its export is removed: a request
 * to the name then answers WEFT_ENORESPONDERS (a post is dropped, as any
 * post to a name nobody serves). When "b" leaves, the workers it started
 * so are terminated. The service is itself an export, under the reserved
 * name WEFT_NODE_SPAWN_EXPORT (the same subjects and permissions as any
 * export; docs/node.md, "Remote spawn", has the wire). */

/* The longest node, cluster or export name (a spawned worker's name fits
 * in WEFT_NODE_NAME_MAX + 1 bytes). */
#define WEFT_NODE_NAME_MAX 64
/* The export that serves remote spawns on a node that registered worker
 * entries (do not export it yourself: WEFT_EEXIST either way). */
#define WEFT_NODE_SPAWN_EXPORT "weft-spawn"

/* Let other nodes start `entry` under `name` (1-64 of [A-Za-z0-9_-];
 * copied). `opts` (may be NULL; copied) gives what every such worker gets:
 * name (its thread's), arg, max_heap_bytes, stack_size,
 * max_message_bytes, flags; its data and data_msg must be unset (the
 * spawn's argument is the data) and its events and user_data are not
 * used (the node owns the workers). The first registration on a node
 * exports WEFT_NODE_SPAWN_EXPORT. Returns 0, WEFT_EINVAL (NULL node or
 * entry, a bad name, data in `opts`), WEFT_EEXIST (`name` is registered
 * already; or, first time, the export name is taken), WEFT_ENOMEM,
 * WEFT_ENOTCONNECTED (the node's connection closed for good),
 * WEFT_EWRONGTHREAD. Registrations last until the node leaves.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_node_register_worker(weft_node_t* node,
                                          const char* name,
                                          weft_worker_entry_cb entry,
                                          const weft_worker_opts_t* opts);

/* Start entry `entry` registered on node `node_name` with `args` (`len`
 * pre-packed bytes: one msgpack value, copied; NULL and 0: nil) and wait
 * for the new worker's export name, at most `timeout_ms` (0 or less: no
 * limit); it is copied to `out_name` (WEFT_NODE_NAME_MAX + 1 bytes; ""
 * on error). `node_name` may be this node's own name. Blocks the calling
 * thread. Returns 0, or WEFT_EINVAL (NULL node or out_name, bad names,
 * NULL args with len), WEFT_EDECODE (args not one value; or a reply that
 * is no name), WEFT_ENOTCONNECTED (the node is not up: weft_node_is_up();
 * or it went down, or this node left, while we waited),
 * WEFT_ENORESPONDERS (it is up but registered no entry), WEFT_ENOENT (no
 * such entry there), WEFT_ETIMEDOUT, weft_worker_spawn()'s or
 * weft_node_export_worker()'s error there (WEFT_ESPAWN, WEFT_ENOMEM...,
 * by name, as node replies carry errors), WEFT_EMSGSIZE (args over the
 * node's message limit), WEFT_ENOMEM.
 * Thread: any. From a thread other than the node's loop's it waits for
 * that loop to make a remote port (so that loop must be running) and the
 * node must not leave before it returns. On the node's loop it blocks the
 * loop (its heartbeats too: others may see it down past down_after_ms;
 * prefer weft_node_spawn_worker_on_async() there), except for this node's
 * own name, which is served at once without the network. */
WEFT_EXTERN int weft_node_spawn_worker_on(weft_node_t* node,
                                          const char* node_name,
                                          const char* entry,
                                          const void* args,
                                          size_t len,
                                          int64_t timeout_ms,
                                          char* out_name);

/* A spawn's outcome: `status` 0 and the worker's export name (valid for
 * the call), or an error as weft_node_spawn_worker_on() returns and NULL.
 * After weft_node_leave() (the spawn settled WEFT_ENOTCONNECTED) `node`
 * is freed: do not use it. Runs on: the node's loop, once. */
typedef void (*weft_node_spawn_cb)(weft_node_t* node,
                                   int status,
                                   const char* name,
                                   void* ctx);

/* weft_node_spawn_worker_on() without blocking: `cb(node, ..., ctx)` gets
 * the outcome on the node's loop, exactly once and never inside this
 * call (also for this node's own name). Returns 0, or with no callback
 * to come: WEFT_EINVAL (also NULL cb), WEFT_EDECODE, WEFT_ENOTCONNECTED
 * (not up), WEFT_EMSGSIZE, WEFT_ENOMEM, WEFT_EWRONGTHREAD. A node that
 * leaves with spawns pending settles them WEFT_ENOTCONNECTED.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_node_spawn_worker_on_async(weft_node_t* node,
                                                const char* node_name,
                                                const char* entry,
                                                const void* args,
                                                size_t len,
                                                int64_t timeout_ms,
                                                weft_node_spawn_cb cb,
                                                void* ctx);

#endif /* WEFT_NODE_H */
