/* pool_node.h - the distributed pool: pool tasks spread over the nodes of a
 * cluster (node.h) through a NATS queue group.
 *
 * A node SERVES a group with a local pool: it takes the group's tasks
 * registered on that pool, never more at a time than the pool has
 * workers (max_threads * concurrent_tasks). A node SUBMITS with a remote
 * pool: an ordinary weft_pool_t whose tasks go to whichever serving node
 * has a free worker; weft_pool_submit/_msg, the future (weft_task_wait,
 * _status, _take_result, _cancel, _free), the done callback,
 * weft_pool_for/_map, weft_pool_stats and weft_pool_close/_destroy work
 * unchanged.
 *
 *   // Node "b" (and "c", ...): serve group "math" with its pool.
 *   weft_pool_register(pool, "square", square, NULL);
 *   weft_pool_serve(node, pool, "math", &server);
 *   // Node "a": submit there.
 *   weft_pool_new_remote(&rpool, node, "math", NULL);
 *   weft_pool_submit(rpool, "square", "\x07", 1, NULL, NULL, &task);
 *   weft_task_wait(task, -1); weft_task_take_result(task, &result);
 *
 * Semantics (docs/node.md "Distributed pool" has the wire):
 * - A task with no free worker anywhere waits on the submitting node (it
 *   is offered again with a backoff, and at once when a serving node has
 *   a worker free); past max_queue waiting tasks a submit answers
 *   WEFT_EQUEUEFULL. Nothing is lost while nobody serves: the tasks run
 *   when a serving node joins.
 * - A task's error comes back by name: the task function's code,
 *   WEFT_ENOTASK (the serving node has no task of that name), ...
 * - The serving node dies or leaves with the task (seen WEFT_NODE_DOWN):
 *   WEFT_POOL_RETRY (default) offers it again with the same task id (at
 *   least once: it may have run, or may still run, there; a late result
 *   for a task that settled is dropped, so the caller sees it settle
 *   exactly once); WEFT_POOL_FAIL settles it WEFT_ENOTCONNECTED.
 * - Cancel settles the future WEFT_ECANCELED at once and tells the serving
 *   node (best effort: weft_task_canceled() turns true there).
 * - Arguments and results cross as copies: a transferred buffer becomes a
 *   bin of its bytes; shared buffers and ports are refused with
 *   WEFT_ENOTLOCAL at the submit.
 * - Not durable by default: a task lives in its submitter's memory. With
 *   `durable` set (below) on both sides, tasks go through a JetStream
 *   work-queue stream instead and survive the loss of every serving node.
 *
 * Durable tasks (docs/node.md "Durable tasks" has the stream, the consumer
 * and the wire). The nats-server must run JetStream (`-js`). A durable
 * remote pool publishes each task into the stream "weft_pool_<c>_<g>"
 * (or opts.stream; retention WorkQueue, file storage, on the subject
 * weft.<c>.pool.<g>.tasks; made when missing) and keeps it in memory until
 * its result comes; a task counts as waiting (max_queue) until a node
 * takes it. A durable serving node takes tasks with the durable pull
 * consumer "weft-pool" of that stream (made when missing), asking for as
 * many as it has workers free, and acknowledges a task only after its
 * result was sent; while a task runs it tells the server it is still at
 * work. So a task taken by a node that dies is delivered again after the
 * consumer's ack wait, and tasks submitted while no node serves (or after
 * every one died) run when one comes: at least once; a result for a task
 * that settled is dropped, so each future settles exactly once. on_down is
 * not used (JetStream redelivers; nothing fails WEFT_ENOTCONNECTED for a
 * node going down). Cancel settles the future at once; the task still
 * runs if a node takes it (told to stop when it says it took it). A
 * submitter that dies leaves its tasks in the stream: they run, and their
 * results, which nobody hears, are counted (stats.orphaned). */
#ifndef WEFT_POOL_NODE_H
#define WEFT_POOL_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/common.h"
#include "weft/node.h"
#include "weft/pool.h"

/* What a remote pool does with the tasks of a serving node that went down
 * while it held them. */
typedef enum {
  WEFT_POOL_RETRY = 0, /* Offer them again (at least once). */
  WEFT_POOL_FAIL = 1   /* Settle them WEFT_ENOTCONNECTED (at most once). */
} weft_pool_on_down;

typedef struct {
  const char* name;  /* The pool thread's name; NULL: "weft-rpool". */
  size_t max_queue;  /* Tasks waiting for a free worker anywhere past
                      * which a submit fails with WEFT_EQUEUEFULL; 0:
                      * 1024; SIZE_MAX: unbounded. */
  weft_pool_on_down on_down;
  /* A task offered and neither taken nor refused within this time (the
   * message was lost: its taker died at once) is offered again; 0: 2000. */
  int64_t ack_timeout_ms;
  /* Publish tasks into a JetStream work-queue stream (see the top). */
  bool durable;
  /* The stream's name (1-64 of [A-Za-z0-9_-]); NULL:
   * "weft_pool_<cluster>_<group>". Only with `durable`. */
  const char* stream;
} weft_pool_remote_opts_t;

/* A pool whose tasks run on the nodes serving `group` (1-64 of
 * [A-Za-z0-9_-]) in `node`'s cluster. Use and end it as any pool
 * (weft_pool_close waits for every task to settle; destroy cancels them,
 * and both wait, ack_timeout_ms at most, for the answers to offers
 * cancelled before any came, to stop a node that took one meanwhile),
 * before weft_node_leave(); if the node leaves first, its waiting and
 * taken tasks settle WEFT_ENOTCONNECTED and later submits answer
 * WEFT_ENOTCONNECTED. weft_pool_register() on it has no use. Its
 * loop-less submitters' callbacks run on its own thread. Returns 0,
 * WEFT_EINVAL (NULL, a bad group, on_down out of range, a negative
 * ack_timeout_ms, a bad stream name), WEFT_ENOMEM, WEFT_ENOTCONNECTED (the
 * node's connection closed for good), WEFT_ESPAWN, WEFT_EWRONGTHREAD. A
 * submit to it answers, besides the pool's errors,
 * WEFT_EINVAL for a task name that is not 1-64 of [A-Za-z0-9_-] and
 * WEFT_ENOTLOCAL for a shared buffer or a port in the argument. Close it
 * from another thread than the node's loop if a serving node may die
 * meanwhile (that loop hears it). Durable, it first makes the stream if
 * it is missing, waiting for the server's answer on the calling thread
 * (5 s at most), and also returns WEFT_ENOTSUP (no JetStream, or the
 * stream refused) and WEFT_ETIMEDOUT. Thread: the node's loop. */
WEFT_EXTERN int weft_pool_new_remote(weft_pool_t** out,
                                     weft_node_t* node,
                                     const char* group,
                                     const weft_pool_remote_opts_t* opts);

typedef struct weft_pool_server_s weft_pool_server_t;

/* libuv's code, under a weft name: JetStream is not there (the server
 * runs without -js) or refused what a durable pool asked. */
#ifndef WEFT_ENOTSUP
#define WEFT_ENOTSUP UV_ENOTSUP
#endif

typedef struct {
  /* Take tasks from the group's JetStream stream (see the top) rather
   * than its queue group. */
  bool durable;
  const char* stream; /* As weft_pool_remote_opts_t's; NULL: the default. */
  /* The consumer's ack wait when this node makes it (the first node to
   * serve the stream does): a task taken by a node that went silent this
   * long is delivered again. 0: 30000. */
  int64_t ack_wait_ms;
} weft_pool_serve_opts_t;

/* Serve `group` with `pool` (a local pool): this node takes the group's
 * tasks, at most max_threads * concurrent_tasks of them at a time (one
 * NATS queue subscription per free worker, each for one task), runs them
 * on `pool` and sends each outcome back. Tasks submitted locally to
 * `pool` share its workers (they may make the group's tasks queue). Tasks
 * are taken on nats.c's thread and their outcomes sent from the pool's;
 * the node's loop is not needed for either. Returns 0 with `*out` (end it
 * with weft_pool_unserve(), before closing `pool`), WEFT_EINVAL,
 * WEFT_ENOMEM, WEFT_ENOTCONNECTED, WEFT_EWRONGTHREAD.
 * Thread: the node's loop. */
WEFT_EXTERN int weft_pool_serve(weft_node_t* node,
                                weft_pool_t* pool,
                                const char* group,
                                weft_pool_server_t** out);

/* weft_pool_serve() with options (NULL: as weft_pool_serve). Durable:
 * makes the stream and the consumer if they are missing, waiting for the
 * server's answers on the calling thread (5 s at most each), and takes
 * tasks through a thread of its own ("weft-jspull": it asks the consumer
 * for as many tasks as workers are free, a request the server holds for
 * at most 1 s, and sends "still working" for running tasks every third of
 * the ack wait); tasks arrive and start on nats.c's thread. Besides
 * weft_pool_serve's errors: WEFT_EINVAL (a bad stream name, a negative
 * ack_wait_ms), WEFT_ENOTSUP (no JetStream, or the stream or consumer
 * refused), WEFT_ETIMEDOUT, WEFT_ESPAWN. A task whose payload is not the
 * wire's is dropped for good (counted in the node's stats); one that
 * comes with no worker free is given back at once. Thread: the node's
 * loop. */
WEFT_EXTERN int weft_pool_serve_ex(weft_node_t* node,
                                   weft_pool_t* pool,
                                   const char* group,
                                   const weft_pool_serve_opts_t* opts,
                                   weft_pool_server_t** out);

/* Stop taking tasks, wait until those taken have finished and their
 * outcomes were sent, and free `s`. Blocks the calling thread meanwhile.
 * If the node left first, taken tasks' outcomes are not sent (their
 * submitters saw the node down). Durable, it also keeps the inbox until
 * the pulls this node has pending at the server ended (2 s at most),
 * giving back at once what they bring, so that no task waits out the ack
 * wait. 0 or WEFT_EINVAL. Thread: the node's loop, before weft_node_leave()
 * returns or after. */
WEFT_EXTERN int weft_pool_unserve(weft_pool_server_t* s);

typedef struct {
  uint64_t taken;       /* Tasks accepted and run. */
  uint64_t refused;     /* Offers answered "busy" (no worker free then). */
  uint64_t canceled;    /* Cancels received for a task still running. */
  unsigned in_flight;   /* Taken and not finished now. */
  unsigned max_in_flight; /* The most at once so far. */
  unsigned capacity;    /* max_threads * concurrent_tasks. */
  /* Durable: results sent to a submitter nobody hears any more (it died
   * or closed its pool); the task was acknowledged all the same. */
  uint64_t orphaned;
} weft_pool_server_stats_t;

/* 0 or WEFT_EINVAL. Thread: any. */
WEFT_EXTERN int weft_pool_server_stats(weft_pool_server_t* s,
                                       weft_pool_server_stats_t* out);

#endif /* WEFT_POOL_NODE_H */
