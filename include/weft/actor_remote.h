/* actor_remote.h - actors across nodes (Erlang's distribution): an actor
 * system attached to a node (weft/node.h) makes its registered actors
 * reachable from the other nodes of the cluster, and reaches theirs.
 *
 *   weft_actor_system_join(sys, node);            // on each node
 *   weft_actor_register(sys, "counter", id);      // on node "b"
 *   ...
 *   weft_actor_remote(sys, "b", "counter", &c);   // on node "a"
 *   weft_actor_send(c, "\x01", 1);                // as to a local actor
 *
 * A remote actor's address is an ordinary weft_actor_id on this node: the
 * id of a light proxy actor that forwards what it gets. weft_actor_send,
 * _send_msg, _send_fn, _send_fmt, weft_actor_ask and weft_actor_call work
 * on it unchanged, and so do links and monitors:
 * - Order: messages from one sender to one address arrive in the order
 *   sent (the proxy publishes them in order on one NATS subject, and the
 *   receiving node delivers them through one proxy of the sender).
 * - Copies: a message crosses as its msgpack bytes; buffers listed for
 *   transfer cross as copies of their bytes (a bin in their place; the
 *   sender's handles are detached as by a local transfer); shared
 *   buffers cannot leave the process: weft_actor_send_msg() answers
 *   WEFT_ENOTLOCAL and the message stays the caller's. A reply to an ask
 *   from another node that moves buffers is not sent on: the asker gets
 *   WEFT_ENOTLOCAL (reply with their bytes instead).
 * - Senders: weft_actor_sender() of a message from another node is the
 *   address (a proxy on this node) of the actor that sent it, so a reply
 *   by send goes back; a message sent from outside the actors has none
 *   (WEFT_ACTOR_NONE). An ask's reply reaches the asker.
 * - Delivery: at most once, as for nodes (docs/node.md): nothing is lost
 *   or duplicated while both nodes stay connected; a message to a name
 *   or an actor that is gone is dropped (an ask gets WEFT_EDEADACTOR).
 * - Failure: a monitor of a remote address gets DOWN with the remote
 *   actor's reason when it ends, and a link propagates its exit as a
 *   local link would (a trapping actor gets EXIT). When the remote node
 *   goes down (its heartbeats stop for down_after_ms, it leaves, or this
 *   node's connection closes for good), every address of an actor there
 *   ends with reason WEFT_ENOTCONNECTED (Erlang's noconnection): its
 *   monitors get DOWN and its links EXIT with that reason, and asks
 *   waiting on it settle with it. A node that comes back is reached again
 *   through a new weft_actor_remote(). The proxy's own end is the remote
 *   actor's: the address then answers WEFT_EDEADACTOR, as a local one.
 * - Untrusted input: every payload from the network is checked before it
 *   becomes a message; others are dropped and counted in the node's
 *   weft_node_stats().dropped_decode (a request among them is answered
 *   EDECODE). The wire is in docs/node.md, "Actors across nodes". */
#ifndef WEFT_ACTOR_REMOTE_H
#define WEFT_ACTOR_REMOTE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/actor.h"
#include "weft/common.h"
#include "weft/node.h"

/* Attach `sys` to `node`: its registered actors become reachable from
 * the other nodes, and weft_actor_remote()/weft_actor_spawn_on() reach
 * theirs. One system per node and one node per system. The node must
 * outlive the attachment: weft_node_leave() detaches it (as
 * weft_actor_system_leave()), and so does weft_actor_system_free().
 * Returns 0, WEFT_EINVAL (NULL), WEFT_EEXIST (either is attached
 * already), WEFT_ENOTCONNECTED (the node's connection closed for good),
 * WEFT_ENOMEM. Thread: the node's loop. */
WEFT_EXTERN int weft_actor_system_join(weft_actor_system_t* sys,
                                       weft_node_t* node);

/* Detach `sys` from its node: the addresses of remote actors end with
 * WEFT_ENOTCONNECTED, asks waiting on them settle so, and nothing comes
 * from the network any more. 0, WEFT_EINVAL (NULL), WEFT_ENOENT (not
 * attached). Thread: the node's loop (from another thread, the node
 * stops telling it its events only at its next event). */
WEFT_EXTERN int weft_actor_system_leave(weft_actor_system_t* sys);

/* The address on this node of the actor registered as `name` on node
 * `node_name` (this node's own name gives the local actor, or
 * WEFT_EDEADACTOR). A new proxy each call; the name is resolved on the
 * remote node when the address is made and at each message: if nothing
 * is registered under it there, the address ends soon with
 * WEFT_EDEADACTOR (monitors get DOWN with it; Erlang's noproc).
 * Returns 0 and `*out`, WEFT_EINVAL (NULL, a bad name: 1-64 of
 * [A-Za-z0-9_-], or `sys` not attached), WEFT_ENOTCONNECTED (the node is
 * not up: weft_node_is_up()), WEFT_ENOMEM. Thread: any. */
WEFT_EXTERN int weft_actor_remote(weft_actor_system_t* sys,
                                  const char* node_name,
                                  const char* name,
                                  weft_actor_id* out);

/* Builds an actor's state from a spawn's argument (`args`: the msgpack
 * value given to weft_actor_spawn_on(), nil when none; valid for the
 * call). Return 0 and `*state`, or a negative code: nothing is spawned
 * and the spawner gets that code. Runs on: a thread of the node's NATS
 * client, never a scheduler. */
typedef int (*weft_actor_init_fn)(const msgpack_object* args, void** state);

/* Register a behaviour that other nodes may spawn under `name` (1-64 of
 * [A-Za-z0-9_-]; copied): `fn` with the state `init` makes (NULL init:
 * state NULL), `on_stop` (may be NULL) handed the state when the actor
 * ends. Returns 0, WEFT_EINVAL (NULL sys or fn, bad name), WEFT_EEXIST,
 * WEFT_ENOMEM. Thread: any. */
WEFT_EXTERN int weft_actor_register_behaviour(weft_actor_system_t* sys,
                                              const char* name,
                                              weft_behaviour_fn fn,
                                              weft_actor_init_fn init,
                                              weft_actor_stop_fn on_stop);

/* Spawn behaviour `behaviour` on node `node_name` with `args` (`len`
 * pre-packed bytes: one msgpack value; NULL and 0: nil) and wait for its
 * address, at most `timeout_ms` (0 or less: no limit). Blocks the calling
 * thread. Returns 0 and `*out` (a remote address as from
 * weft_actor_remote(), its proxy watching the new actor), or
 * WEFT_EINVAL (NULL, bad names, not attached), WEFT_EDECODE (args not
 * one value), WEFT_ENOTCONNECTED (the node is not up, or went down
 * while we waited), WEFT_ENORESPONDERS (it is up but has no actor system
 * attached), WEFT_ENOENT (no such behaviour there), WEFT_ETIMEDOUT,
 * init's own code, or weft_actor_spawn()'s there (by name, as node
 * replies carry errors), WEFT_EBUSY (on a scheduler thread: it would
 * block it). Thread: any but a scheduler's. */
WEFT_EXTERN int weft_actor_spawn_on(weft_actor_system_t* sys,
                                    const char* node_name,
                                    const char* behaviour,
                                    const void* args,
                                    size_t len,
                                    int64_t timeout_ms,
                                    weft_actor_id* out);

/* Whether `id` is the address of a remote actor (a proxy), and if so,
 * the node it is on (copied to `node`, 65 bytes, when not NULL).
 * Thread: any. */
WEFT_EXTERN bool weft_actor_is_remote(weft_actor_id id, char* node);

#endif /* WEFT_ACTOR_REMOTE_H */
