/* remote.c - actors across nodes (weft/actor_remote.h): a system attached
 * to a node (a "hub"), proxies that stand for remote actors, remote spawn.
 *
 * Subjects (docs/node.md, "Actors across nodes"; <c> the cluster, <n> the
 * node): weft.<c>.<n>.a carries every envelope for <n>'s actors (one
 * subject: NATS keeps order per connection and subject, and one nats.c
 * thread delivers it), weft.<c>.<n>.ar.<id> the replies to <n>'s asks and
 * spawns. An envelope is msgpack [kind, from_node, from, to, value]
 * (remote.h, remote_wire.c).
 *
 * Proxies. A remote actor's address is a local actor (a proxy) whose
 * behaviour forwards what it gets: a message as SEND (a request with a
 * reply subject, its reply handle kept in `calls` until the reply comes),
 * an exit signal from a local link as EXIT. The same proxy brings the
 * remote actor's traffic in: the hub pushes each envelope from <node,
 * from> into that sender's proxy (tag WEFT__TAG_REMOTE) and the proxy
 * sends, asks or exits the local target in its own turn, so the target
 * sees the proxy as weft_actor_sender() and one remote sender's order
 * holds. A proxy watches its remote actor (WATCH, answered by a proxy of
 * ours on the other node that monitors it and publishes DOWN): it ends
 * with the remote actor's reason, and so local links and monitors of the
 * address work as link.c makes them. Node down, or the hub detached:
 * every proxy of that node ends with WEFT_ENOTCONNECTED.
 *
 * Lifetime. A hub is counted: the attachment, each proxy (until its
 * on_stop), each subscription (until its done callback) and the node
 * watcher hold it. `lock` (read: whoever uses the node or the system from
 * a nats.c thread or a proxy; write: detach) keeps both alive under them;
 * after detach they find `closed`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nats.h"
#include "node_internal.h"
#include "remote.h"
#include "weft/actor_remote.h"

#define NAME_LEN (WEFT__RA_NAME_MAX + 1)
#define BUCKETS 256
#define SUBJECT_MAX 256

typedef struct hub_s hub_t;

typedef struct proxy_s {
  struct proxy_s* next; /* In its bucket, under the hub's plock. */
  hub_t* hub;
  weft_actor_id id;
  uint64_t rid;  /* The remote actor's id; 0: by name, or anonymous. */
  bool named;    /* Addressed by `name` (weft_actor_remote). */
  bool watching; /* A WATCH went for it (plock). */
  bool listed;   /* In the table (plock). */
  char node[NAME_LEN];
  char name[NAME_LEN];
} proxy_t;

/* Something waiting for the network: our ask or spawn (val: the reply
 * handle), or another node's ask to our actor (val: its reply subject). */
typedef struct pend_s {
  struct pend_s* next;
  uint64_t id;
  void* val;
  uint64_t deadline; /* Our ask or spawn: its caller's (0: none). */
  char node[NAME_LEN];
} pend_t;

/* Our asks and spawns whose caller stopped waiting (its deadline passed)
 * while no reply came (lost, or the target keeps its handle) are dropped
 * from `calls` at every SWEEP_EVERY-th new entry: their reply handle
 * answered WEFT_ETIMEDOUT (counted late on the caller's side), counted in
 * the node's `expired`. Without it each such ask stayed until its node
 * went down. */
#define SWEEP_EVERY 64

struct hub_s {
  atomic_int refs;
  pthread_rwlock_t lock; /* Read: using node or sys. Write: detach. */
  bool closed;           /* Under `lock`. */
  atomic_bool watched;   /* The node watcher is in (holds a reference). */
  weft_node_t* node;
  weft_actor_system_t* sys;
  weft__nats_sub_t* sub_in;
  weft__nats_sub_t* sub_replies;
  char self[NAME_LEN];
  char cluster[NAME_LEN];
  char reply_prefix[SUBJECT_MAX]; /* "weft.<c>.<self>.ar." */
  size_t reply_prefix_len;
  pthread_mutex_t plock; /* The three tables. */
  proxy_t* proxies[BUCKETS];
  pend_t* calls[BUCKETS];
  pend_t* answers[BUCKETS];
  atomic_uint_least64_t next_id; /* relaxed: unique ids only. */
  unsigned call_adds;            /* Under plock: entries put in `calls`. */
};

/* The hub whose read lock this thread holds (a subscription callback):
 * publishing from there does not take it again. */
static _Thread_local hub_t* tl_locked;

/* ---- systems: their hub and behaviours ---------------------------------- */

typedef struct behaviour_s {
  struct behaviour_s* next;
  weft_behaviour_fn fn;
  weft_actor_init_fn init;
  weft_actor_stop_fn on_stop;
  char name[NAME_LEN];
} behaviour_t;

typedef struct sysrec_s {
  struct sysrec_s* next;
  weft_actor_system_t* sys;
  hub_t* hub; /* Holds the attachment's reference. */
  behaviour_t* behaviours;
} sysrec_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static sysrec_t* g_systems; /* Under g_lock. */

static sysrec_t* rec_find(const weft_actor_system_t* sys) {
  sysrec_t* r;
  for (r = g_systems; r != NULL; r = r->next)
    if (r->sys == sys)
      return r;
  return NULL;
}

static sysrec_t* rec_get(weft_actor_system_t* sys) {
  sysrec_t* r = rec_find(sys);
  if (r == NULL) {
    r = WEFT__FAILABLE(calloc(1, sizeof(*r)));
    if (r == NULL)
      return NULL;
    r->sys = sys;
    r->next = g_systems;
    g_systems = r;
  }
  return r;
}

static void hub_ref(hub_t* h) {
  atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
}

static void hub_unref(hub_t* h) {
  size_t i;
  /* acq_rel: every holder's writes happen before the free. */
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (i = 0; i < BUCKETS; i++) { /* Emptied at detach; nothing is left. */
    while (h->answers[i] != NULL) {
      pend_t* e = h->answers[i];
      h->answers[i] = e->next;
      free(e->val);
      free(e);
    }
  }
  pthread_rwlock_destroy(&h->lock);
  pthread_mutex_destroy(&h->plock);
  free(h);
}

/* The attached hub of `sys`, referenced, or NULL. */
static hub_t* hub_get(const weft_actor_system_t* sys) {
  sysrec_t* r;
  hub_t* h = NULL;
  pthread_mutex_lock(&g_lock);
  r = rec_find(sys);
  if (r != NULL && r->hub != NULL) {
    h = r->hub;
    hub_ref(h);
  }
  pthread_mutex_unlock(&g_lock);
  return h;
}

static void read_lock(hub_t* h) {
  if (tl_locked != h)
    pthread_rwlock_rdlock(&h->lock);
}

static void read_unlock(hub_t* h) {
  if (tl_locked != h)
    pthread_rwlock_unlock(&h->lock);
}

/* ---- publishing ---------------------------------------------------------- */

static void node_subject(const hub_t* h, const char* node, char* out) {
  (void)snprintf(out, SUBJECT_MAX, "weft.%s.%s.a", h->cluster, node);
}

/* Publish on `subject` while the hub is attached. Thread: any. */
static int publish(hub_t* h, const char* subject, const char* reply,
                   const void* data, size_t len, const char* error) {
  int err;
  read_lock(h);
  err = h->closed ? WEFT_ENOTCONNECTED
                  : weft__node_publish(h->node, subject, reply, data, len,
                                       error);
  read_unlock(h);
  return err;
}

/* A reply (to an ask or a spawn): written at once, not after nats.c's
 * flusher wait (node_internal.h). Thread: any. */
static int publish_reply(hub_t* h, const char* subject, const void* data,
                         size_t len) {
  int err;
  read_lock(h);
  err = h->closed ? WEFT_ENOTCONNECTED
                  : weft__node_publish_now(h->node, subject, data, len);
  read_unlock(h);
  return err;
}

/* An envelope to `node`'s actors. */
static int send_env(hub_t* h, const char* node, const char* reply, int kind,
                    uint64_t from, uint64_t to_id, const char* to_name,
                    const void* value, size_t vlen) {
  char subject[SUBJECT_MAX];
  msgpack_sbuffer sb;
  int err;
  msgpack_sbuffer_init(&sb);
  err = weft__renv_write(&sb, kind, h->self, from, to_id, to_name, value,
                         vlen);
  node_subject(h, node, subject);
  if (err == 0)
    err = publish(h, subject, reply, sb.data, sb.size, NULL);
  msgpack_sbuffer_destroy(&sb);
  return err;
}

/* An envelope whose value is a reason (DOWN, EXIT). */
static int send_reason(hub_t* h, const char* node, int kind, uint64_t from,
                       uint64_t to_id, const char* to_name, int reason) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int err;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  err = msgpack_pack_int(&pk, reason) != 0
            ? WEFT_ENOMEM
            : send_env(h, node, NULL, kind, from, to_id, to_name, sb.data,
                       sb.size);
  msgpack_sbuffer_destroy(&sb);
  return err;
}

/* ---- pending tables (under plock) ---------------------------------------- */

static void pend_put(pend_t** t, pend_t* e) {
  pend_t** b = &t[e->id % BUCKETS];
  e->next = *b;
  *b = e;
}

static pend_t* pend_take(pend_t** t, uint64_t id) {
  pend_t** p;
  for (p = &t[id % BUCKETS]; *p != NULL; p = &(*p)->next)
    if ((*p)->id == id) {
      pend_t* e = *p;
      *p = e->next;
      return e;
    }
  return NULL;
}

/* Take the entries of `t` that `pick` picks, as a list. */
static pend_t* pend_take_if(pend_t** t,
                            bool (*pick)(const pend_t* e, const void* arg),
                            const void* arg) {
  pend_t* out = NULL;
  size_t i;
  for (i = 0; i < BUCKETS; i++) {
    pend_t** p = &t[i];
    while (*p != NULL) {
      pend_t* e = *p;
      if (pick(e, arg)) {
        *p = e->next;
        e->next = out;
        out = e;
      } else {
        p = &e->next;
      }
    }
  }
  return out;
}

static bool waits_on(const pend_t* e, const void* node) {
  return node == NULL || strcmp(e->node, node) == 0;
}

static bool expired_by(const pend_t* e, const void* now) {
  return e->deadline != 0 && e->deadline <= *(const uint64_t*)now;
}

/* Take every entry for `node` (NULL: all) as a list. */
static pend_t* pend_take_node(pend_t** t, const char* node) {
  return pend_take_if(t, waits_on, node);
}

/* Answer expired asks and spawns (see SWEEP_EVERY) and count them. */
static void settle_expired(hub_t* h, pend_t* list) {
  int n = 0;
  while (list != NULL) {
    pend_t* e = list;
    list = e->next;
    weft_reply_error(e->val, WEFT_ETIMEDOUT);
    free(e);
    n++;
  }
  read_lock(h);
  if (!h->closed) {
    while (n-- > 0)
      weft__node_count_dropped(h->node, WEFT__NODE_EXPIRED);
  }
  read_unlock(h);
}

/* A new entry of `t` for `val`, waiting on `node` (our ask or spawn: until
 * `deadline`, 0: none): its id, or 0. */
static uint64_t pend_add(hub_t* h,
                         pend_t** t,
                         void* val,
                         const char* node,
                         uint64_t deadline) {
  pend_t* e = WEFT__FAILABLE(malloc(sizeof(*e)));
  pend_t* expired = NULL;
  uint64_t id;
  if (e == NULL)
    return 0;
  id = e->id = atomic_fetch_add_explicit(&h->next_id, 1, memory_order_relaxed);
  e->val = val;
  e->deadline = deadline;
  (void)snprintf(e->node, sizeof(e->node), "%s", node);
  pthread_mutex_lock(&h->plock);
  pend_put(t, e);
  if (t == h->calls && ++h->call_adds % SWEEP_EVERY == 0) {
    uint64_t now = uv_hrtime();
    expired = pend_take_if(t, expired_by, &now);
  }
  pthread_mutex_unlock(&h->plock);
  if (expired != NULL)
    settle_expired(h, expired);
  return id;
}

static pend_t* pend_remove(hub_t* h, pend_t** t, uint64_t id) {
  pend_t* e;
  pthread_mutex_lock(&h->plock);
  e = pend_take(t, id);
  pthread_mutex_unlock(&h->plock);
  return e;
}

/* Settle our ask or spawn `r` with a reply from the network. */
static void settle(hub_t* h, weft_reply_t* r, const weft__nats_msg_t* nm) {
  if (nm->status != 0) {
    weft_reply_error(r, nm->status);
  } else if (nm->error != NULL) {
    weft_reply_error(r, weft__wire_read_error(nm->error));
  } else if (nm->len == 0) {
    weft__node_count_dropped(h->node, WEFT__NODE_DROPPED_DECODE);
    weft_reply_error(r, WEFT_EDECODE);
  } else if (weft_reply_send(r, nm->data, nm->len) == WEFT_EDECODE) {
    weft__node_count_dropped(h->node, WEFT__NODE_DROPPED_DECODE);
  }
}

/* Answer another node's ask `id` (an entry of `answers`): `status`, or
 * the reply's value. Thread: any. */
static void answer(hub_t* h, uint64_t id, int status, const weft_msg_t* reply) {
  pend_t* e = pend_remove(h, h->answers, id);
  if (e == NULL)
    return; /* The asking node went down meanwhile. */
  /* A reply that moved buffers to our proxy is not sent on (not built
   * yet: their bytes as copies). */
  if (status == 0 && reply->nxfer > 0)
    status = WEFT_ENOTLOCAL;
  if (status == 0)
    publish_reply(h, e->val, reply->data, reply->len);
  else
    publish(h, e->val, NULL, NULL, 0, weft_err_name(status));
  free(e->val);
  free(e);
}

/* ---- proxies ------------------------------------------------------------- */

static int proxy_fn(weft_actor_t* self, void* state, weft_msg_t* m);

static size_t bucket_of(const char* node, uint64_t rid) {
  uint64_t x = 1469598103934665603ull; /* FNV-1a of the node, then the id. */
  for (; *node != '\0'; node++)
    x = (x ^ (unsigned char)*node) * 1099511628211ull;
  x ^= rid * 0x9e3779b97f4a7c15ull;
  return (size_t)(x % BUCKETS);
}

/* The proxy of <node, rid> (not a named one), under plock. */
static proxy_t* proxy_find(hub_t* h, const char* node, uint64_t rid) {
  proxy_t* p;
  for (p = h->proxies[bucket_of(node, rid)]; p != NULL; p = p->next)
    if (!p->named && p->rid == rid && strcmp(p->node, node) == 0)
      return p;
  return NULL;
}

static void proxy_list(hub_t* h, proxy_t* p) {
  proxy_t** b = &h->proxies[bucket_of(p->node, p->named ? 0 : p->rid)];
  p->next = *b;
  *b = p;
  p->listed = true;
}

static void proxy_unlist(hub_t* h, proxy_t* p) {
  proxy_t** q;
  if (!p->listed)
    return;
  for (q = &h->proxies[bucket_of(p->node, p->named ? 0 : p->rid)];
       *q != NULL; q = &(*q)->next)
    if (*q == p) {
      *q = p->next;
      break;
    }
  p->listed = false;
}

static void proxy_stop(void* state, int reason) {
  proxy_t* p = state;
  hub_t* h = p->hub;
  (void)reason;
  pthread_mutex_lock(&h->plock);
  proxy_unlist(h, p);
  pthread_mutex_unlock(&h->plock);
  hub_unref(h);
  free(p);
}

/* A new proxy for <node, rid> or <node, name> (not listed yet). */
static int proxy_new(hub_t* h, const char* node, uint64_t rid,
                     const char* name, proxy_t** out) {
  weft_actor_opts_t o = {0};
  proxy_t* p = WEFT__FAILABLE(calloc(1, sizeof(*p)));
  int err;
  *out = NULL;
  if (p == NULL)
    return WEFT_ENOMEM;
  p->hub = h;
  p->rid = rid;
  p->named = name != NULL;
  (void)snprintf(p->node, sizeof(p->node), "%s", node);
  if (name != NULL)
    (void)snprintf(p->name, sizeof(p->name), "%s", name);
  o.on_stop = proxy_stop;
  /* Exit signals from local links come as messages: forwarded. */
  o.flags = WEFT_ACTOR_TRAP_EXIT;
  hub_ref(h);
  err = weft_actor_spawn(h->sys, proxy_fn, p, &o, &p->id);
  if (err != 0) {
    hub_unref(h);
    free(p);
    return err;
  }
  *out = p;
  return 0;
}

/* The proxy of <node, rid> (rid 0: the node's senders from outside the
 * actors), made if needed; with `watch`, watching its actor. 0: none (no
 * memory, or the system is closing). */
static weft_actor_id proxy_for(hub_t* h, const char* node, uint64_t rid,
                               bool watch) {
  proxy_t* p;
  weft_actor_id id = 0;
  bool send_watch = false;
  pthread_mutex_lock(&h->plock);
  p = proxy_find(h, node, rid);
  if (p == NULL && proxy_new(h, node, rid, NULL, &p) == 0)
    proxy_list(h, p);
  if (p != NULL) {
    id = p->id;
    if (watch && rid != 0 && !p->watching)
      p->watching = send_watch = true;
  }
  pthread_mutex_unlock(&h->plock);
  if (send_watch)
    send_env(h, node, NULL, WEFT__RA_WATCH, id, rid, NULL, NULL, 0);
  return id;
}

/* Take proxy `id` out of the table (it ended, or is ending). */
static void proxy_forget(hub_t* h, weft_actor_id id) {
  size_t i;
  pthread_mutex_lock(&h->plock);
  for (i = 0; i < BUCKETS; i++) {
    proxy_t* p;
    for (p = h->proxies[i]; p != NULL; p = p->next)
      if (p->id == id) {
        proxy_unlist(h, p);
        pthread_mutex_unlock(&h->plock);
        return;
      }
  }
  pthread_mutex_unlock(&h->plock);
}

/* The proxy of `id` if it is one (of hub `h` when not NULL), held by the
 * caller's slot reference: weft__slot_leave(id) after. */
static proxy_t* proxy_enter(weft_actor_id id) {
  weft_actor_t* a = weft__slot_enter(id);
  if (a == NULL)
    return NULL;
  if (a->fn != proxy_fn) {
    weft__slot_leave(id);
    return NULL;
  }
  return a->state;
}

/* End proxies `ids` with `reason` (a DOWN envelope of our own). */
static void proxies_end(hub_t* h, const weft_actor_id* ids, size_t n,
                        int reason) {
  msgpack_sbuffer sb, v;
  msgpack_packer pk;
  size_t i;
  msgpack_sbuffer_init(&v);
  msgpack_packer_init(&pk, &v, msgpack_sbuffer_write);
  (void)msgpack_pack_int(&pk, reason);
  for (i = 0; i < n; i++) {
    msgpack_sbuffer_init(&sb);
    if (v.data != NULL &&
        weft__renv_write(&sb, WEFT__RA_DOWN, h->self, 0, ids[i], NULL, v.data,
                         v.size) == 0)
      (void)weft__actor_tell(ids[i], WEFT__TAG_REMOTE, 0, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
  }
  msgpack_sbuffer_destroy(&v);
}

/* Node `node` (NULL: every node) is gone for us: its proxies end with
 * WEFT_ENOTCONNECTED, our asks and spawns waiting on it settle so, and
 * its asks to our actors are forgotten. Thread: any. */
static void node_down(hub_t* h, const char* node) {
  weft_actor_id* ids = NULL;
  size_t n = 0, cap = 0, i;
  pend_t *calls, *answers;
  pthread_mutex_lock(&h->plock);
  for (i = 0; i < BUCKETS; i++) {
    proxy_t** q = &h->proxies[i];
    while (*q != NULL) {
      proxy_t* p = *q;
      if (node != NULL && strcmp(p->node, node) != 0) {
        q = &p->next;
        continue;
      }
      *q = p->next;
      p->listed = false;
      if (n == cap) {
        size_t c = cap == 0 ? 16 : cap * 2;
        weft_actor_id* v = WEFT__FAILABLE(realloc(ids, c * sizeof(*v)));
        if (v == NULL)
          continue; /* Out of memory: this one lingers, unlisted. */
        ids = v;
        cap = c;
      }
      ids[n++] = p->id;
    }
  }
  calls = pend_take_node(h->calls, node);
  answers = pend_take_node(h->answers, node);
  pthread_mutex_unlock(&h->plock);
  proxies_end(h, ids, n, WEFT_ENOTCONNECTED);
  free(ids);
  while (calls != NULL) {
    pend_t* e = calls;
    calls = e->next;
    weft_reply_error(e->val, WEFT_ENOTCONNECTED);
    free(e);
  }
  while (answers != NULL) {
    pend_t* e = answers;
    answers = e->next;
    free(e->val);
    free(e);
  }
}

/* The local actor an envelope is for (0: nobody has that name). */
static weft_actor_id target_of(hub_t* h, const weft__renv_t* e) {
  return e->to_name[0] != '\0' ? weft_actor_whereis(h->sys, e->to_name)
                               : e->to_id;
}

/* ---- a proxy's turn ------------------------------------------------------ */

/* An answer id rides in an ask's `arg`, through a union: no integer to
 * pointer cast (a record would leak with an asker that ends first). */
_Static_assert(sizeof(void*) <= sizeof(uint64_t), "a pointer fits in an id");

typedef union {
  uint64_t id;
  void* arg;
} answer_arg_t;

static void* arg_of(uint64_t id) {
  answer_arg_t u;
  u.id = id;
  return u.arg;
}

static void answered(weft_actor_t* self, void* state, void* arg, int status,
                     weft_msg_t* reply) {
  proxy_t* p = state;
  answer_arg_t u;
  (void)self;
  u.id = 0;
  u.arg = arg;
  answer(p->hub, u.id, status, reply);
}

/* Traffic from the network for a local actor, through the proxy of its
 * sender (or an envelope of our own that ends the proxy). */
static int proxy_control(weft_actor_t* self, proxy_t* p, weft_msg_t* m) {
  hub_t* h = p->hub;
  weft__renv_t e;
  weft_actor_id to;
  int err;
  if (weft__renv_read(m->data, m->len, &e) != 0)
    return 0; /* Read at the hub already: cannot happen. */
  to = target_of(h, &e);
  switch (e.kind) {
    case WEFT__RA_SEND:
      if (m->aux == 0) {
        /* Dropped when gone, as a send to a dead actor. */
        if (to != 0)
          (void)weft_actor_send(to, e.value, e.vlen);
        return 0;
      }
      err = to == 0 ? WEFT_EDEADACTOR
                    : weft_actor_ask(self, to, e.value, e.vlen, 0, answered,
                                     arg_of(m->aux));
      if (err != 0)
        answer(h, m->aux, err, NULL);
      return 0;
    case WEFT__RA_WATCH:
      /* The MONITOR signal went from the hub (deliver); its DOWN comes
       * behind this. */
      (void)weft__link_monitor_record(self, m->aux, to);
      return 0;
    case WEFT__RA_EXIT:
      if (to != 0)
        (void)weft_actor_exit(to, e.reason);
      return 0;
    case WEFT__RA_DOWN: /* Our remote actor ended, or its node is gone. */
      (void)weft_actor_stop(self, e.reason);
      return 0;
    default:
      return 0;
  }
}

/* A local message for the remote actor: publish it. */
static int proxy_forward(weft_actor_t* self, proxy_t* p, weft_msg_t* m) {
  hub_t* h = p->hub;
  weft_actor_id from = weft_actor_sender(m);
  const char* name = p->named ? p->name : NULL;
  weft_reply_t* r = NULL;
  char reply[SUBJECT_MAX + 24];
  uint64_t id, deadline;
  int err;
  (void)self;
  if (!p->named && p->rid == 0)
    return 0; /* The anonymous proxy is nobody's address. */
  if (!weft_msg_is_request(m)) {
    /* Transfers were flattened at the send (weft__remote_send_flat). */
    if (m->nxfer == 0)
      (void)send_env(h, p->node, NULL, WEFT__RA_SEND, from, p->rid, name,
                     m->data, m->len);
    return 0;
  }
  deadline = weft__request_deadline(m);
  /* Unlisted: the hub answers it in every case (settle, expiry, node
   * down, the hub's end). */
  if (weft__msg_take_reply_unlisted(m, &r) != 0)
    return 0;
  id = pend_add(h, h->calls, r, p->node, deadline);
  if (id == 0) {
    weft_reply_error(r, WEFT_ENOMEM);
    return 0;
  }
  (void)snprintf(reply, sizeof(reply), "%s%llu", h->reply_prefix,
                 (unsigned long long)id);
  err = send_env(h, p->node, reply, WEFT__RA_SEND, from, p->rid, name,
                 m->data, m->len);
  if (err != 0) {
    pend_t* e = pend_remove(h, h->calls, id);
    if (e != NULL) { /* Else settled meanwhile (node down). */
      weft_reply_error(r, err);
      free(e);
    }
  }
  return 0;
}

static int proxy_fn(weft_actor_t* self, void* state, weft_msg_t* m) {
  proxy_t* p = state;
  weft_signal_t sig;
  switch (weft_actor_signal(m, &sig)) {
    case WEFT_SIGNAL_EXIT:
      /* A local link ended (or an exit was sent to the address): the
       * remote actor gets the exit signal, from that actor. */
      if (p->named || p->rid != 0)
        (void)send_reason(p->hub, p->node, WEFT__RA_EXIT,
                          sig.from != 0 ? sig.from : weft_actor_self(self),
                          p->rid, p->named ? p->name : NULL, sig.reason);
      return 0;
    case WEFT_SIGNAL_DOWN:
      /* An actor we watch for our remote actor ended: tell it, and we
       * are done (a watcher's proxy serves nothing else). */
      (void)send_reason(p->hub, p->node, WEFT__RA_DOWN, sig.from, p->rid,
                        NULL, sig.reason);
      (void)weft_actor_stop(self, 0);
      return 0;
    default:
      break;
  }
  if (m->tag == WEFT__TAG_REMOTE)
    return proxy_control(self, p, m);
  return proxy_forward(self, p, m);
}

/* ---- the network's side -------------------------------------------------- */

static void spawn_here(hub_t* h, const weft__renv_t* e, const char* reply) {
  behaviour_t b;
  sysrec_t* r;
  bool found = false;
  msgpack_unpacked u;
  size_t off = 0;
  void* state = NULL;
  weft_actor_opts_t o = {0};
  weft_actor_id id = 0;
  int err = 0;
  pthread_mutex_lock(&g_lock);
  r = rec_find(h->sys);
  if (r != NULL) {
    const behaviour_t* q;
    for (q = r->behaviours; q != NULL && !found; q = q->next)
      if (strcmp(q->name, e->to_name) == 0) {
        b = *q;
        found = true;
      }
  }
  pthread_mutex_unlock(&g_lock);
  if (!found) {
    publish(h, reply, NULL, NULL, 0, weft_err_name(WEFT_ENOENT));
    return;
  }
  if (b.init != NULL) {
    msgpack_unpacked_init(&u);
    /* Checked to be one value within the limits (remote_wire.c). */
    err = msgpack_unpack_next(&u, e->value, e->vlen, &off) ==
                  MSGPACK_UNPACK_SUCCESS
              ? b.init(&u.data, &state)
              : WEFT_EDECODE;
    msgpack_unpacked_destroy(&u);
    if (err > 0)
      err = WEFT_EINVAL;
  }
  if (err == 0) {
    o.on_stop = b.on_stop;
    err = weft_actor_spawn(h->sys, b.fn, state, &o, &id);
    if (err != 0 && b.on_stop != NULL)
      b.on_stop(state, err); /* The state init made is ours to free. */
  }
  if (err != 0) {
    publish(h, reply, NULL, NULL, 0, weft_err_name(err));
  } else {
    char buf[9];
    msgpack_sbuffer sb = {0, buf, sizeof(buf)};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    (void)msgpack_pack_uint64(&pk, id); /* 9 bytes at most: no realloc. */
    publish_reply(h, reply, sb.data, sb.size);
  }
}

/* A SEND, WATCH or EXIT: into the proxy of its sender, which acts in its
 * turn (see the file comment). */
static void deliver(hub_t* h, const weft__renv_t* e, const void* data,
                    size_t len, const char* reply) {
  uint64_t ans = 0;
  int err = WEFT_ENOMEM, tries;
  if (reply != NULL && e->kind == WEFT__RA_SEND) {
    size_t n = strlen(reply) + 1;
    char* s = WEFT__FAILABLE(malloc(n));
    if (s != NULL) {
      memcpy(s, reply, n);
      ans = pend_add(h, h->answers, s, e->node, 0);
      if (ans == 0)
        free(s);
    }
    if (ans == 0) {
      publish(h, reply, NULL, NULL, 0, weft_err_name(WEFT_ENOMEM));
      return;
    }
  }
  for (tries = 0; tries < 2; tries++) {
    /* A remote sender is watched, so that its address ends with it. */
    weft_actor_id via = proxy_for(h, e->node, e->from,
                                  e->from != 0 && e->kind != WEFT__RA_WATCH);
    if (via == 0)
      break;
    if (e->kind == WEFT__RA_WATCH) {
      /* Monitored from here, so that the MONITOR signal reaches the
       * target before anything that comes after it from that node (its
       * messages go through their senders' proxies). */
      uint64_t ref = weft__link_new_ref();
      weft_actor_id target = target_of(h, e);
      if (target == 0) { /* Nobody has that name: noproc, at once. */
        (void)send_reason(h, e->node, WEFT__RA_DOWN, 0, e->from, NULL,
                          WEFT_EDEADACTOR);
        return;
      }
      err = weft__actor_tell(via, WEFT__TAG_REMOTE, ref, data, len);
      if (err == 0)
        weft__link_monitor_tell(via, target, ref);
    } else {
      err = weft__actor_tell(via, WEFT__TAG_REMOTE, ans, data, len);
    }
    if (err != WEFT_EDEADACTOR)
      break;
    proxy_forget(h, via); /* Ended meanwhile: another one. */
  }
  if (err != 0 && ans != 0)
    answer(h, ans, err, NULL);
}

/* DOWN: the actor our proxy `to` watches ended. Only its own node may
 * say so. */
static void down(const hub_t* h, const weft__renv_t* e, const void* data,
                 size_t len) {
  proxy_t* p = proxy_enter(e->to_id);
  bool ours;
  if (p == NULL)
    return; /* Ended already. */
  ours = p->hub == h && strcmp(p->node, e->node) == 0;
  weft__slot_leave(e->to_id);
  if (ours)
    (void)weft__actor_tell(e->to_id, WEFT__TAG_REMOTE, 0, data, len);
}

/* Everything for our actors (nats.c's thread). */
static void hub_in(void* ctx, const weft__nats_msg_t* nm) {
  hub_t* h = ctx;
  const char* reply =
      nm->reply != NULL && nm->reply[0] != '\0' ? nm->reply : NULL;
  weft__renv_t e;
  pthread_rwlock_rdlock(&h->lock);
  if (h->closed) {
    pthread_rwlock_unlock(&h->lock);
    return;
  }
  tl_locked = h;
  if (weft__renv_read(nm->data, nm->len, &e) != 0) {
    weft__node_count_dropped(h->node, WEFT__NODE_DROPPED_DECODE);
    if (reply != NULL)
      publish(h, reply, NULL, NULL, 0, weft_err_name(WEFT_EDECODE));
  } else if (e.kind == WEFT__RA_SPAWN) {
    if (reply != NULL)
      spawn_here(h, &e, reply);
  } else if (e.kind == WEFT__RA_DOWN) {
    down(h, &e, nm->data, nm->len);
  } else {
    deliver(h, &e, nm->data, nm->len, reply);
  }
  tl_locked = NULL;
  pthread_rwlock_unlock(&h->lock);
}

/* A reply to one of our asks or spawns (nats.c's thread). */
static void hub_reply(void* ctx, const weft__nats_msg_t* nm) {
  hub_t* h = ctx;
  uint64_t id;
  pend_t* e;
  pthread_rwlock_rdlock(&h->lock);
  if (h->closed) {
    pthread_rwlock_unlock(&h->lock);
    return;
  }
  if (weft__wire_read_id(nm->subject, h->reply_prefix_len, &id) != 0) {
    weft__node_count_dropped(h->node, WEFT__NODE_DROPPED_DECODE);
  } else if ((e = pend_remove(h, h->calls, id)) != NULL) {
    settle(h, e->val, nm);
    free(e);
  }
  pthread_rwlock_unlock(&h->lock);
}

static void sub_done(void* ctx) {
  hub_unref(ctx);
}

/* ---- attaching ----------------------------------------------------------- */

static void hub_watch(void* ctx, const weft_node_event_t* ev);

static void unwatch(hub_t* h, weft_node_t* node) {
  if (atomic_exchange_explicit(&h->watched, false, memory_order_acq_rel)) {
    weft__node_unwatch(node, hub_watch, h);
    hub_unref(h);
  }
}

/* Detach `h` (its attachment's reference is the caller's to drop):
 * nothing comes from the network any more, and everything of its nodes
 * ends as if they went down. Thread: any; the node's loop to stop the
 * watcher now (else it stops itself at the node's next event). */
static void detach(hub_t* h) {
  weft_node_t* node;
  pthread_rwlock_wrlock(&h->lock);
  if (h->closed) {
    pthread_rwlock_unlock(&h->lock);
    return;
  }
  h->closed = true; /* No callback is inside now; later ones see this. */
  node = h->node;
  pthread_rwlock_unlock(&h->lock);
  weft__nats_unsubscribe(h->sub_in);
  weft__nats_unsubscribe(h->sub_replies);
  node_down(h, NULL);
  if (weft_loop_current() == weft__node_loop(node))
    unwatch(h, node);
}

/* Take `sys`'s hub off its record (the caller gets its reference); only
 * if it is `h` when `h` is not NULL. */
static hub_t* rec_take_hub(const weft_actor_system_t* sys, const hub_t* h) {
  sysrec_t* r;
  hub_t* out = NULL;
  pthread_mutex_lock(&g_lock);
  r = rec_find(sys);
  if (r != NULL && r->hub != NULL && (h == NULL || r->hub == h)) {
    out = r->hub;
    r->hub = NULL;
  }
  pthread_mutex_unlock(&g_lock);
  return out;
}

static void hub_watch(void* ctx, const weft_node_event_t* ev) {
  hub_t* h = ctx;
  weft_node_t* node;
  bool closed;
  pthread_rwlock_rdlock(&h->lock);
  closed = h->closed;
  node = h->node;
  pthread_rwlock_unlock(&h->lock);
  if (!closed && ev->kind == WEFT__NODE_LEAVING) {
    hub_t* mine = rec_take_hub(h->sys, h);
    detach(h); /* Unwatches: we are on the node's loop. */
    if (mine != NULL)
      hub_unref(mine);
    return;
  }
  if (closed) {
    unwatch(h, node);
    return;
  }
  if (ev->kind == WEFT_NODE_DOWN && ev->node != NULL)
    node_down(h, ev->node);
  else if (ev->kind == WEFT_NODE_CLOSED)
    node_down(h, NULL);
}

int weft_actor_system_join(weft_actor_system_t* sys, weft_node_t* node) {
  char subject[SUBJECT_MAX + 2];
  sysrec_t* r;
  hub_t* h;
  int err;
  if (sys == NULL || node == NULL)
    return WEFT_EINVAL;
  if (weft_loop_current() != weft__node_loop(node))
    return WEFT_EWRONGTHREAD;
  pthread_mutex_lock(&g_lock);
  err = 0;
  for (r = g_systems; r != NULL; r = r->next)
    if (r->hub != NULL && (r->sys == sys || r->hub->node == node))
      err = WEFT_EEXIST;
  pthread_mutex_unlock(&g_lock);
  if (err != 0)
    return err;
  h = WEFT__FAILABLE(calloc(1, sizeof(*h)));
  if (h == NULL)
    return WEFT_ENOMEM;
  atomic_init(&h->refs, 1); /* The attachment's. */
  atomic_init(&h->watched, false);
  atomic_init(&h->next_id, 1);
  pthread_rwlock_init(&h->lock, NULL);
  pthread_mutex_init(&h->plock, NULL);
  h->node = node;
  h->sys = sys;
  (void)snprintf(h->self, sizeof(h->self), "%s", weft_node_name(node));
  (void)snprintf(h->cluster, sizeof(h->cluster), "%s",
                 weft__node_cluster(node));
  h->reply_prefix_len = (size_t)snprintf(
      h->reply_prefix, sizeof(h->reply_prefix), "weft.%s.%s.ar.", h->cluster,
      h->self);
  (void)snprintf(subject, sizeof(subject), "weft.%s.%s.a", h->cluster,
                 h->self);
  hub_ref(h);
  err = weft__node_subscribe(node, subject, NULL, hub_in, sub_done, h,
                             &h->sub_in);
  if (err != 0) {
    hub_unref(h);
    hub_unref(h);
    return err;
  }
  (void)snprintf(subject, sizeof(subject), "%s*", h->reply_prefix);
  hub_ref(h);
  err = weft__node_subscribe(node, subject, NULL, hub_reply, sub_done, h,
                             &h->sub_replies);
  if (err == 0) {
    hub_ref(h);
    atomic_store_explicit(&h->watched, true, memory_order_relaxed);
    err = weft__node_watch(node, hub_watch, h);
    if (err != 0) {
      atomic_store_explicit(&h->watched, false, memory_order_relaxed);
      hub_unref(h);
    }
  } else {
    hub_unref(h);
    h->sub_replies = NULL;
  }
  pthread_mutex_lock(&g_lock);
  r = err == 0 ? rec_get(sys) : NULL;
  if (r != NULL)
    r->hub = h;
  pthread_mutex_unlock(&g_lock);
  if (r == NULL) {
    /* Undo: as a detach, which drops what it holds. */
    pthread_rwlock_wrlock(&h->lock);
    h->closed = true;
    pthread_rwlock_unlock(&h->lock);
    weft__nats_unsubscribe(h->sub_in);
    if (h->sub_replies != NULL)
      weft__nats_unsubscribe(h->sub_replies);
    unwatch(h, node);
    hub_unref(h);
    return err != 0 ? err : WEFT_ENOMEM;
  }
  return 0;
}

int weft_actor_system_leave(weft_actor_system_t* sys) {
  hub_t* h;
  if (sys == NULL)
    return WEFT_EINVAL;
  h = rec_take_hub(sys, NULL);
  if (h == NULL)
    return WEFT_ENOENT;
  detach(h);
  hub_unref(h);
  return 0;
}

void weft__remote_system_free(const weft_actor_system_t* sys) {
  sysrec_t **pp, *r = NULL;
  pthread_mutex_lock(&g_lock);
  for (pp = &g_systems; *pp != NULL; pp = &(*pp)->next)
    if ((*pp)->sys == sys) {
      r = *pp;
      *pp = r->next;
      break;
    }
  pthread_mutex_unlock(&g_lock);
  if (r == NULL)
    return;
  if (r->hub != NULL) {
    detach(r->hub);
    hub_unref(r->hub);
  }
  while (r->behaviours != NULL) {
    behaviour_t* b = r->behaviours;
    r->behaviours = b->next;
    free(b);
  }
  free(r);
}

/* ---- addresses and spawns ------------------------------------------------ */

/* Whether node `name` is up, as the hub's node sees it. */
static bool node_up(hub_t* h, const char* name) {
  bool up;
  read_lock(h);
  up = !h->closed && weft_node_is_up(h->node, name);
  read_unlock(h);
  return up;
}

int weft_actor_remote(weft_actor_system_t* sys, const char* node_name,
                      const char* name, weft_actor_id* out) {
  hub_t* h;
  proxy_t* p = NULL;
  int err;
  if (out != NULL)
    *out = 0;
  if (out == NULL || !weft__wire_name_ok(node_name) ||
      !weft__wire_name_ok(name))
    return WEFT_EINVAL;
  h = hub_get(sys);
  if (h == NULL)
    return WEFT_EINVAL;
  if (strcmp(node_name, h->self) == 0) {
    *out = weft_actor_whereis(sys, name);
    hub_unref(h);
    return *out != 0 ? 0 : WEFT_EDEADACTOR;
  }
  if (!node_up(h, node_name)) {
    hub_unref(h);
    return WEFT_ENOTCONNECTED;
  }
  pthread_mutex_lock(&h->plock);
  err = proxy_new(h, node_name, 0, name, &p);
  if (err == 0) {
    p->watching = true;
    proxy_list(h, p);
    *out = p->id;
  }
  pthread_mutex_unlock(&h->plock);
  if (err == 0)
    send_env(h, node_name, NULL, WEFT__RA_WATCH, *out, 0, name, NULL, 0);
  hub_unref(h);
  return err;
}

int weft_actor_register_behaviour(weft_actor_system_t* sys, const char* name,
                                  weft_behaviour_fn fn,
                                  weft_actor_init_fn init,
                                  weft_actor_stop_fn on_stop) {
  sysrec_t* r;
  const behaviour_t* q;
  behaviour_t* b;
  int err = 0;
  if (sys == NULL || fn == NULL || !weft__wire_name_ok(name))
    return WEFT_EINVAL;
  b = WEFT__FAILABLE(calloc(1, sizeof(*b)));
  if (b == NULL)
    return WEFT_ENOMEM;
  b->fn = fn;
  b->init = init;
  b->on_stop = on_stop;
  (void)snprintf(b->name, sizeof(b->name), "%s", name);
  pthread_mutex_lock(&g_lock);
  r = rec_get(sys);
  if (r == NULL)
    err = WEFT_ENOMEM;
  for (q = r != NULL ? r->behaviours : NULL; q != NULL && err == 0;
       q = q->next)
    if (strcmp(q->name, name) == 0)
      err = WEFT_EEXIST;
  if (err == 0) {
    b->next = r->behaviours;
    r->behaviours = b;
  }
  pthread_mutex_unlock(&g_lock);
  if (err != 0)
    free(b);
  return err;
}

typedef struct {
  hub_t* h;
  const char* node;
} spawn_to_t;

/* request.c's post for a spawn: publish it, its outcome waiting in
 * `calls` (in the table before the publish: the reply may come first). */
static int post_spawn(void* to, weft_msg_t** msg) {
  spawn_to_t* s = to;
  hub_t* h = s->h;
  weft_msg_t* m = *msg;
  char reply[SUBJECT_MAX + 24];
  char subject[SUBJECT_MAX];
  uint64_t id = pend_add(h, h->calls, m->route.reply, s->node,
                         weft__request_deadline(m));
  int err;
  if (id == 0)
    return WEFT_ENOMEM;
  (void)snprintf(reply, sizeof(reply), "%s%llu", h->reply_prefix,
                 (unsigned long long)id);
  node_subject(h, s->node, subject);
  err = publish(h, subject, reply, m->data, m->len, NULL);
  if (err != 0) {
    pend_t* e = pend_remove(h, h->calls, id);
    if (e != NULL) {
      free(e); /* Nothing went: the request is the caller's again. */
      return err;
    }
  }
  /* From the publish on, the outcome is whoever's takes its entry. */
  (void)weft__request_unroute(m);
  weft_msg_free(m);
  *msg = NULL;
  return 0;
}

int weft_actor_spawn_on(weft_actor_system_t* sys, const char* node_name,
                        const char* behaviour, const void* args, size_t len,
                        int64_t timeout_ms, weft_actor_id* out) {
  spawn_to_t to;
  msgpack_sbuffer sb;
  weft_msg_t *m = NULL, *reply = NULL;
  hub_t* h;
  int err;
  if (out != NULL)
    *out = 0;
  if (out == NULL || !weft__wire_name_ok(node_name) ||
      !weft__wire_name_ok(behaviour) || (args == NULL && len != 0))
    return WEFT_EINVAL;
  if (weft__sched_current() != NULL)
    return WEFT_EBUSY;
  if (args != NULL && (len == 0 || weft__msgpack_validate(args, len) != 0))
    return WEFT_EDECODE;
  h = hub_get(sys);
  if (h == NULL)
    return WEFT_EINVAL;
  if (!node_up(h, node_name)) {
    hub_unref(h);
    return WEFT_ENOTCONNECTED;
  }
  msgpack_sbuffer_init(&sb);
  err = weft__renv_write(&sb, WEFT__RA_SPAWN, h->self, 0, 0, behaviour, args,
                         len);
  if (err == 0 && sb.size > WEFT_MSG_DEFAULT_LIMIT)
    err = WEFT_EMSGSIZE;
  if (err == 0) {
    m = weft__msg_alloc(WEFT__MSG_DATA, sb.size);
    err = m == NULL ? WEFT_ENOMEM : 0;
  }
  if (err == 0) {
    memcpy(m->data, sb.data, sb.size);
    m->len = sb.size;
    err = weft__msg_seal(m);
  }
  msgpack_sbuffer_destroy(&sb);
  to.h = h;
  to.node = node_name;
  if (err == 0)
    err = weft__request_call(post_spawn, &to, &m, timeout_ms, &reply);
  weft_msg_free(m);
  if (err == 0) {
    msgpack_unpacked u;
    size_t off = 0;
    uint64_t id = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, reply->data, reply->len, &off) ==
            MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      id = u.data.via.u64;
    msgpack_unpacked_destroy(&u);
    weft_msg_free(reply);
    if (id == 0)
      err = WEFT_EDECODE;
    else if (strcmp(node_name, h->self) == 0)
      *out = id;
    else if ((*out = proxy_for(h, node_name, id, true)) == 0)
      err = WEFT_ENOMEM;
  }
  hub_unref(h);
  return err;
}

bool weft_actor_is_remote(weft_actor_id id, char* node) {
  proxy_t* p = proxy_enter(id);
  if (p == NULL)
    return false;
  if (node != NULL)
    (void)snprintf(node, NAME_LEN, "%s", p->node);
  weft__slot_leave(id);
  return true;
}

int weft__remote_send_flat(weft_actor_id to, weft_msg_t** msg) {
  msgpack_sbuffer flat;
  int err;
  msgpack_sbuffer_init(&flat);
  err = weft__wire_flatten(*msg, &flat);
  if (err == 0)
    err = weft__msg_check_transfers(*msg);
  if (err == 0)
    err = weft_actor_send(to, flat.data, flat.size);
  msgpack_sbuffer_destroy(&flat);
  if (err == 0) {
    /* Given away as by a local transfer: the sender's handles detach. */
    weft__msg_commit_transfers(*msg);
    weft_msg_free(*msg);
    *msg = NULL;
  }
  return err;
}
