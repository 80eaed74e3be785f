/* broadcast.c - BroadcastChannel: a process-wide registry of named
 * channels; a post copies the value into every other member's mailbox. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct weft_broadcast_s {
  weft_broadcast_t* next; /* Registry list; guarded by registry_lock. */
  char* name;             /* Fixed at creation. */
  weft_port_t* inbox;     /* Receives posts; weft's own (hooks). */
  weft_port_t* anchor;    /* Its entangled peer, only keeps it open. */
  weft_loop_t* loop;
  weft__tracked_t tracked;
  weft_broadcast_cb cb; /* Owner loop only. */
  void* data;
  bool ref;
  bool closed;
  bool holds_keepalive;
};

static uv_once_t registry_once = UV_ONCE_INIT;
static uv_mutex_t registry_lock;
static weft_broadcast_t* registry; /* Guarded by registry_lock. */

static void registry_init(void) {
  if (uv_mutex_init(&registry_lock) != 0)
    abort(); /* Only fails without resources at start-up. */
}

static void update_keepalive(weft_broadcast_t* bc) {
  bool want = !bc->closed && bc->cb != NULL && bc->ref;
  weft__loop_hold(bc->loop, &bc->holds_keepalive, want);
}

static void on_inbox(weft_port_t* port, weft_msg_t* msg) {
  weft_broadcast_t* bc = weft__port_owner(port);
  if (bc->cb != NULL && !bc->closed)
    bc->cb(bc, msg);
}

static const weft__port_hooks_t inbox_hooks = {on_inbox, NULL, NULL};

static void bc_teardown(weft__tracked_t* t) {
  weft_broadcast_t* bc = weft__container_of(t, weft_broadcast_t, tracked);
  weft_broadcast_free(bc);
}

int weft_broadcast_new(weft_loop_t* loop,
                       const char* name,
                       weft_broadcast_t** out) {
  weft_broadcast_t* bc;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (loop == NULL || name == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  uv_once(&registry_once, registry_init);
  bc = WEFT__FAILABLE(calloc(1, sizeof(*bc)));
  if (bc == NULL)
    return WEFT_ENOMEM;
  bc->name = WEFT__FAILABLE(strdup(name));
  if (bc->name == NULL) {
    free(bc);
    return WEFT_ENOMEM;
  }
  err = weft_channel_new(loop, &bc->inbox, &bc->anchor);
  if (err != 0) {
    free(bc->name);
    free(bc);
    return err;
  }
  bc->loop = loop;
  bc->ref = true;
  weft__port_set_hooks(bc->inbox, &inbox_hooks, bc);
  /* The anchor is weft's too: the channel's teardown frees both. */
  weft__port_untrack(bc->anchor);
  bc->tracked.teardown = bc_teardown;
  weft__loop_track(loop, &bc->tracked);
  uv_mutex_lock(&registry_lock);
  bc->next = registry;
  registry = bc;
  uv_mutex_unlock(&registry_lock);
  *out = bc;
  return 0;
}

#define CHECK_BC(bc)                       \
  do {                                     \
    if ((bc) == NULL)                      \
      return WEFT_EINVAL;                  \
    if (!weft__loop_on_thread((bc)->loop)) \
      return WEFT_EWRONGTHREAD;            \
  } while (0)

int weft_broadcast_on_message(weft_broadcast_t* bc, weft_broadcast_cb cb) {
  CHECK_BC(bc);
  if (bc->closed)
    return WEFT_ECLOSED;
  bc->cb = cb;
  update_keepalive(bc);
  return 0;
}

/* Copies of a post wait in a chain through their mailbox links (not queued
 * anywhere yet; relaxed: only the posting thread sees them). */
static weft_msg_t* chain_pop(weft_msg_t** chain) {
  weft_msg_t* m = *chain;
  weft__mpsc_node_t* next =
      atomic_load_explicit(&m->node.next, memory_order_relaxed);
  *chain = next != NULL ? weft__container_of(next, weft_msg_t, node) : NULL;
  return m;
}

static bool is_member(const weft_broadcast_t* it, const weft_broadcast_t* bc) {
  return it != bc && strcmp(it->name, bc->name) == 0;
}

int weft_broadcast_post(weft_broadcast_t* bc, const void* bytes, size_t len) {
  weft_broadcast_t* it;
  weft_msg_t* chain = NULL;
  int err = 0;
  CHECK_BC(bc);
  if (bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (bc->closed)
    return WEFT_ECLOSED;
  if (len > weft__thread_message_limit())
    return WEFT_EMSGSIZE;
  err = weft__msgpack_validate(bytes, len);
  if (err != 0)
    return err;
  /* Under the lock no member can leave, so its inbox stays alive while we
   * push; pushes never block. Every copy is made before the first push:
   * out of memory, no member gets the message (WEFT_ENOMEM), never some. */
  uv_mutex_lock(&registry_lock);
  for (it = registry; it != NULL; it = it->next) {
    weft_msg_t* m;
    if (!is_member(it, bc))
      continue;
    m = weft__msg_alloc(WEFT__MSG_DATA, len);
    if (m == NULL) {
      err = WEFT_ENOMEM;
      break;
    }
    memcpy(m->data, bytes, len);
    m->len = len;
    atomic_store_explicit(&m->node.next, chain != NULL ? &chain->node : NULL,
                          memory_order_relaxed);
    chain = m;
  }
  for (it = registry; err == 0 && it != NULL; it = it->next) {
    if (is_member(it, bc))
      weft__port_enqueue(it->inbox, chain_pop(&chain));
  }
  while (chain != NULL)
    weft_msg_free(chain_pop(&chain));
  uv_mutex_unlock(&registry_lock);
  return err;
}

int weft_broadcast_ref(weft_broadcast_t* bc) {
  CHECK_BC(bc);
  bc->ref = true;
  update_keepalive(bc);
  return 0;
}

int weft_broadcast_unref(weft_broadcast_t* bc) {
  CHECK_BC(bc);
  bc->ref = false;
  update_keepalive(bc);
  return 0;
}

int weft_broadcast_close(weft_broadcast_t* bc) {
  weft_broadcast_t** pp;
  CHECK_BC(bc);
  if (bc->closed)
    return 0;
  uv_mutex_lock(&registry_lock);
  for (pp = &registry; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == bc) {
      *pp = bc->next;
      break;
    }
  }
  uv_mutex_unlock(&registry_lock);
  bc->closed = true;
  update_keepalive(bc);
  weft__port_release(bc->inbox);
  weft__port_release(bc->anchor);
  bc->inbox = bc->anchor = NULL;
  return 0;
}

bool weft_broadcast_has_ref(const weft_broadcast_t* bc) {
  if (bc == NULL || !weft__loop_on_thread(bc->loop))
    return false;
  return bc->holds_keepalive;
}

int weft_broadcast_free(weft_broadcast_t* bc) {
  if (bc == NULL)
    return 0;
  if (!weft__loop_on_thread(bc->loop))
    return WEFT_EWRONGTHREAD;
  weft_broadcast_close(bc);
  weft__loop_untrack(&bc->tracked);
  free(bc->name);
  free(bc);
  return 0;
}

int weft_broadcast_set_data(weft_broadcast_t* bc, void* data) {
  CHECK_BC(bc);
  bc->data = data;
  return 0;
}

void* weft_broadcast_get_data(const weft_broadcast_t* bc) {
  if (bc == NULL || !weft__loop_on_thread(bc->loop))
    return NULL;
  return bc->data;
}
