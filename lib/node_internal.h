/* node_internal.h - what the layers built on a node (the distributed pool,
 * remote actors) use of it: its connection, its subjects and its
 * membership. Not public: they live in this library and are freed before
 * the node leaves (a watcher is told when it starts leaving).
 *
 * Subjects: every node may publish on and subscribe to weft.<c>.<n>.> for
 * its own <n> and publish on weft.<c>.*.p.> and weft.<c>.presence.<n>
 * (docs/node.md "Security"). A layer that needs subjects of its own puts
 * them under weft.<c>.<n>. (private to <n>) or asks for a new shared
 * prefix in docs/node.md. */
#ifndef WEFT_NODE_INTERNAL_H
#define WEFT_NODE_INTERNAL_H

#include <pthread.h>

#include "internal.h"
#include "nats.h"
#include "weft/node.h"

/* A node's events as its on_event gets them, and one more: LEAVING, when
 * weft_node_leave() starts (the connection still open: a watcher
 * unsubscribes and stops publishing there). Runs on the node's loop,
 * after on_event. */
#define WEFT__NODE_LEAVING 100
typedef void (*weft__node_watch_cb)(void* ctx, const weft_node_event_t* ev);

/* Add or remove a watcher. 0, WEFT_ENOMEM, WEFT_EINVAL. Removing one that
 * is not there is a no-op; a watcher may remove itself (or add another)
 * while it runs. Thread: the node's loop. */
int weft__node_watch(weft_node_t* node, weft__node_watch_cb cb, void* ctx);
void weft__node_unwatch(weft_node_t* node,
                        weft__node_watch_cb cb,
                        const void* ctx);

weft_loop_t* weft__node_loop(const weft_node_t* node);
const char* weft__node_cluster(const weft_node_t* node);

/* Publish as the node does (counted in stats.published): 0,
 * WEFT_ENOTCONNECTED once the node left or its connection closed for
 * good, and weft__nats_publish()'s errors. A request (`reply` set) or an
 * error reply is written at once (weft__nats_kick); anything else waits
 * for nats.c's flusher (up to 1 ms, batched with what comes meanwhile):
 * publish a reply with weft__node_publish_now(). Thread: any, until
 * weft_node_leave() returns. */
int weft__node_publish(weft_node_t* node,
                       const char* subject,
                       const char* reply,
                       const void* data,
                       size_t len,
                       const char* error);
/* A reply (or anything a peer waits for): published and written at once. */
int weft__node_publish_now(weft_node_t* node,
                           const char* subject,
                           const void* data,
                           size_t len);

/* Subscribe on the node's connection, as weft__nats_subscribe() (the
 * callback runs on a nats.c thread); the SUB is written at once.
 * Unsubscribe with weft__nats_unsubscribe() before weft_node_leave()
 * closes the connection (at LEAVING at the latest). 0,
 * WEFT_ENOTCONNECTED, ... Thread: the node's loop, or any thread whose
 * call is ordered before LEAVING (lib/pool_server.c: under a lock that its
 * LEAVING watcher takes, which then stops such calls). */
int weft__node_subscribe(weft_node_t* node,
                         const char* subject,
                         const char* queue,
                         weft__nats_msg_cb cb,
                         weft__nats_done_cb done,
                         void* ctx,
                         weft__nats_sub_t** out);

/* Count a payload from the network dropped by such a layer in the
 * node's stats (weft_node_stats): WEFT__NODE_DROPPED_DECODE or _SIZE, or
 * a request of such a layer forgotten at its deadline (_EXPIRED).
 * Thread: any. */
enum {
  WEFT__NODE_DROPPED_DECODE = 1,
  WEFT__NODE_DROPPED_SIZE,
  WEFT__NODE_EXPIRED
};
void weft__node_count_dropped(weft_node_t* node, int which);

/* ---- membership (node_membership.c, below node.c) ----------------------- */

/* The nodes a node has seen on weft.<c>.presence.* and not yet seen go:
 * a member is up from its first heartbeat until its goodbye, a new
 * instance of it (down, then up), or down_after_ms without one. Each
 * change is reported through `report`, outside the lock: WEFT_NODE_UP,
 * WEFT_NODE_DOWN, or WEFT_NODE_ERROR when a member's slow-consumer count
 * rose (it dropped messages). Held in node.c's shared part. */
typedef struct weft__node_member_s weft__node_member_t;
typedef void (*weft__node_members_cb)(void* ctx, int kind, const char* name);
typedef struct {
  pthread_mutex_t lock;
  weft__node_member_t* list; /* Under `lock`. */
  uint64_t down_after_ms;
  uint64_t instance;  /* Random per join: a restarted node is a new one. */
  char presence[160]; /* "weft.<c>.presence.": + a node's name. */
  size_t presence_len;
  char self[WEFT__WIRE_NAME_MAX + 1];
  weft__node_members_cb report;
  void* ctx;
} weft__node_members_t;

/* `self` and `cluster`: names weft__wire_name_ok() accepted. Makes the
 * lock; weft__node_members_free() destroys it. */
void weft__node_members_init(weft__node_members_t* ms,
                             const char* cluster,
                             const char* self,
                             uint64_t down_after_ms,
                             weft__node_members_cb report,
                             void* ctx);
/* Forget the members (no reports) and destroy the lock. */
void weft__node_members_free(weft__node_members_t* ms);
/* Our heartbeat (`leaving`: the goodbye) carrying our slow-consumer count
 * `slow`: its subject into `subject`, its WEFT__WIRE_BEAT_LEN bytes into
 * `b`, for the caller to publish. */
void weft__node_members_beat(const weft__node_members_t* ms,
                             bool leaving,
                             uint64_t slow,
                             char* subject,
                             size_t subject_size,
                             unsigned char* b);
/* A message on weft.<c>.presence.*: 0, or WEFT_EINVAL when it is not a
 * heartbeat (the caller counts it dropped). Thread: nats.c's. */
int weft__node_members_heard(weft__node_members_t* ms,
                             const weft__nats_msg_t* nm);
/* Members silent for down_after_ms are down. Thread: the node's loop. */
void weft__node_members_check(weft__node_members_t* ms);
/* Whether `name` is a member now. Thread: any. */
bool weft__node_members_has(weft__node_members_t* ms, const char* name);

#endif /* WEFT_NODE_INTERNAL_H */
