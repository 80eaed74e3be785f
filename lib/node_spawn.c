/* node_spawn.c - remote spawn of workers (weft/node.h, "Remote spawn"): a
 * node registers worker entries under names; another node asks it to
 * start one with an argument, and gets back the name under which the new
 * worker is exported.
 *
 * The spawn service is an export like any other, under the reserved name
 * WEFT_NODE_SPAWN_EXPORT: a request [entry, args] reaches a port on the
 * node's loop through lib/node.c's export path, so its checks of untrusted
 * input, its reply routing and the cluster's permissions (weft.<c>.*.p.>)
 * are those of every export; the caller's side is an ordinary remote port
 * and request, so node down (WEFT_ENOTCONNECTED), no responders, timeouts
 * and errors by name are node.c's too. The wire: docs/node.md, "Remote
 * spawn".
 *
 * The serving side (a `spawner`, one per node, made by the first
 * registration) lives on the node's loop only: the request handler spawns
 * the worker with the node's loop as owner, exports it, and replies with
 * its name; the worker's exit event unexports it; when the node leaves
 * (its LEAVING watcher) the workers it spawned for others are let go of
 * (terminated) with everything else. g_lock guards only the list of
 * spawners, which several nodes on several loops share. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "internal.h"
#include "node_internal.h"
#include "weft/format.h"
#include "weft/node.h"
#include "weft/request.h"

#define NAME_LEN (WEFT_NODE_NAME_MAX + 1)
/* Room for the entry's name in a worker's export name (see make_name). */
#define NAME_ENTRY_PART 24

typedef struct entry_s {
  struct entry_s* next;
  weft_worker_entry_cb fn;
  void* arg;
  size_t max_heap_bytes;
  size_t stack_size;
  size_t max_message_bytes;
  unsigned flags;
  char name[NAME_LEN];
  char thread[16]; /* The workers' thread name (15 bytes shown). */
} entry_t;

typedef struct spawner_s spawner_t;

/* A worker this node started for another: exported as `name` until its
 * exit. */
typedef struct spawned_s {
  struct spawned_s* next;
  spawner_t* sp;
  weft_worker_t* w;
  char name[NAME_LEN];
} spawned_t;

struct spawner_s {
  spawner_t* next; /* g_spawners, under g_lock. */
  weft_node_t* node;
  weft_port_t* in;  /* Exported as WEFT_NODE_SPAWN_EXPORT: */
  weft_port_t* out; /* requests arrive here (spawn_message). */
  entry_t* entries;
  spawned_t* workers;
  uint64_t base; /* Random per spawner: names differ across restarts. */
  uint64_t seq;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static spawner_t* g_spawners;

static spawner_t* spawner_find(const weft_node_t* node) {
  spawner_t* sp;
  pthread_mutex_lock(&g_lock);
  for (sp = g_spawners; sp != NULL && sp->node != node; sp = sp->next) {
  }
  pthread_mutex_unlock(&g_lock);
  return sp;
}

static const entry_t* entry_find(const spawner_t* sp, const char* name) {
  const entry_t* e;
  for (e = sp->entries; e != NULL; e = e->next)
    if (strcmp(e->name, name) == 0)
      return e;
  return NULL;
}

/* "<entry, at most 24 bytes>-<base, 16 hex>-<seq>": at most 62 bytes of
 * [A-Za-z0-9_-], unique on this node while it runs and, by `base`, across
 * its restarts (a name an old worker had does not reach a new one). */
static void make_name(spawner_t* sp, const char* entry, char* out) {
  (void)snprintf(out, NAME_LEN, "%.*s-%016llx-%llu", NAME_ENTRY_PART, entry,
                 (unsigned long long)sp->base,
                 (unsigned long long)++sp->seq);
}

/* ---- the serving side (the node's loop) ---------------------------------- */

static void spawned_exit(weft_worker_t* w, int exit_code) {
  spawned_t* s = weft_worker_get_data(w);
  spawned_t** pp;
  (void)exit_code;
  for (pp = &s->sp->workers; *pp != NULL; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  /* Posts to the name are dropped by NATS from now on; requests answer
   * WEFT_ENORESPONDERS. */
  (void)weft_node_unexport(s->sp->node, s->name);
  weft_worker_free(w); /* Released when this event returns. */
  free(s);
}

/* Start `entry` with `args` (one msgpack value; NULL: nil) and export it:
 * 0 and its name in `out`, or an error code. */
static int spawn_here(spawner_t* sp, const char* entry, const void* args,
                      size_t len, char* out) {
  const entry_t* e = entry_find(sp, entry);
  weft_worker_opts_t o;
  spawned_t* s;
  int err;
  if (e == NULL)
    return WEFT_ENOENT;
  s = WEFT__FAILABLE(calloc(1, sizeof(*s)));
  if (s == NULL)
    return WEFT_ENOMEM;
  s->sp = sp;
  make_name(sp, entry, s->name);
  memset(&o, 0, sizeof(o));
  o.name = e->thread[0] != '\0' ? e->thread : NULL;
  o.data = args;
  o.data_len = args != NULL ? len : 0;
  o.arg = e->arg;
  o.max_heap_bytes = e->max_heap_bytes;
  o.stack_size = e->stack_size;
  o.max_message_bytes = e->max_message_bytes;
  o.flags = e->flags;
  o.events.exit = spawned_exit;
  o.user_data = s;
  err = weft_worker_spawn(&s->w, weft__node_loop(sp->node), e->fn, &o);
  if (err == 0) {
    err = weft_node_export_worker(sp->node, s->name, s->w);
    if (err != 0)
      weft_worker_free(s->w); /* Stopped; no event will run. */
  }
  if (err != 0) {
    free(s);
    return err;
  }
  s->next = sp->workers;
  sp->workers = s;
  memcpy(out, s->name, strlen(s->name) + 1);
  return 0;
}

/* A request's entry name: a str that is a wire name. */
static bool read_entry(const msgpack_object* o, char* out) {
  if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
      o->via.str.size > WEFT_NODE_NAME_MAX)
    return false;
  memcpy(out, o->via.str.ptr, o->via.str.size);
  out[o->via.str.size] = '\0';
  return weft__wire_name_ok(out);
}

/* A request from the network, [entry, args] (node.c checked it is one
 * msgpack value within the limits). */
static void spawn_message(weft_port_t* p, weft_msg_t* m) {
  spawner_t* sp = weft_port_get_data(p);
  const msgpack_object* o = weft_msg_object(m);
  weft_reply_t* r = NULL;
  char entry[NAME_LEN];
  char name[NAME_LEN];
  msgpack_sbuffer args;
  msgpack_packer pk;
  int err;
  if (weft_msg_take_reply(m, &r) != 0)
    return; /* A post: nobody to tell of a spawn. Dropped. */
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
      !read_entry(&o->via.array.ptr[0], entry)) {
    weft__node_count_dropped(sp->node, WEFT__NODE_DROPPED_DECODE);
    weft_reply_error(r, WEFT_EDECODE);
    return;
  }
  msgpack_sbuffer_init(&args);
  msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
  err = msgpack_pack_object(&pk, o->via.array.ptr[1]) != 0 ? WEFT_ENOMEM : 0;
  if (err == 0)
    err = spawn_here(sp, entry, args.data, args.size, name);
  msgpack_sbuffer_destroy(&args);
  if (err != 0) {
    weft_reply_error(r, err);
  } else {
    weft_reply_send_fmt(r, "s", name);
  }
}

static void spawner_watch(void* ctx, const weft_node_event_t* ev);

/* Take `sp` off the list and free it with its workers (terminated), its
 * entries and its ports (the export ends with the node). */
static void spawner_free(spawner_t* sp) {
  spawner_t** pp;
  pthread_mutex_lock(&g_lock);
  for (pp = &g_spawners; *pp != NULL; pp = &(*pp)->next)
    if (*pp == sp) {
      *pp = sp->next;
      break;
    }
  pthread_mutex_unlock(&g_lock);
  weft__node_unwatch(sp->node, spawner_watch, sp);
  while (sp->workers != NULL) {
    spawned_t* s = sp->workers;
    sp->workers = s->next;
    weft_worker_free(s->w); /* Asked to stop; no event runs any more. */
    free(s);
  }
  while (sp->entries != NULL) {
    entry_t* e = sp->entries;
    sp->entries = e->next;
    free(e);
  }
  if (sp->in != NULL)
    weft_port_free(sp->in);
  if (sp->out != NULL)
    weft_port_free(sp->out);
  free(sp);
}

static void spawner_watch(void* ctx, const weft_node_event_t* ev) {
  if (ev->kind == WEFT__NODE_LEAVING)
    spawner_free(ctx);
}

static int spawner_new(weft_node_t* node, spawner_t** out) {
  weft_loop_t* loop = weft__node_loop(node);
  spawner_t* sp = WEFT__FAILABLE(calloc(1, sizeof(*sp)));
  int err;
  if (sp == NULL)
    return WEFT_ENOMEM;
  sp->node = node;
  if (uv_random(NULL, NULL, &sp->base, sizeof(sp->base), 0, NULL) != 0)
    sp->base = uv_hrtime() ^ (uint64_t)(uintptr_t)sp;
  err = weft_channel_new(loop, &sp->in, &sp->out);
  if (err == 0)
    err = weft_port_set_data(sp->out, sp);
  if (err == 0)
    err = weft_port_on_message(sp->out, spawn_message);
  if (err == 0)
    err = weft_port_unref(sp->out); /* The node keeps its loop alive. */
  if (err == 0)
    err = weft__node_watch(node, spawner_watch, sp);
  if (err == 0) {
    err = weft_node_export(node, WEFT_NODE_SPAWN_EXPORT, sp->in);
    if (err != 0)
      weft__node_unwatch(node, spawner_watch, sp);
  }
  if (err != 0) {
    if (sp->in != NULL)
      weft_port_free(sp->in);
    if (sp->out != NULL)
      weft_port_free(sp->out);
    free(sp);
    return err;
  }
  pthread_mutex_lock(&g_lock);
  sp->next = g_spawners;
  g_spawners = sp;
  pthread_mutex_unlock(&g_lock);
  *out = sp;
  return 0;
}

int weft_node_register_worker(weft_node_t* node,
                              const char* name,
                              weft_worker_entry_cb entry,
                              const weft_worker_opts_t* opts) {
  spawner_t* sp;
  entry_t* e;
  int err;
  if (node == NULL || entry == NULL || !weft__wire_name_ok(name) ||
      (opts != NULL && (opts->data != NULL || opts->data_len != 0 ||
                        opts->data_msg != NULL)))
    return WEFT_EINVAL;
  if (weft_loop_current() != weft__node_loop(node))
    return WEFT_EWRONGTHREAD;
  sp = spawner_find(node);
  if (sp != NULL && entry_find(sp, name) != NULL)
    return WEFT_EEXIST;
  e = WEFT__FAILABLE(calloc(1, sizeof(*e)));
  if (e == NULL)
    return WEFT_ENOMEM;
  if (sp == NULL) {
    err = spawner_new(node, &sp);
    if (err != 0) {
      free(e);
      return err;
    }
  }
  e->fn = entry;
  (void)snprintf(e->name, sizeof(e->name), "%s", name);
  if (opts != NULL) {
    e->arg = opts->arg;
    e->max_heap_bytes = opts->max_heap_bytes;
    e->stack_size = opts->stack_size;
    e->max_message_bytes = opts->max_message_bytes;
    e->flags = opts->flags;
    if (opts->name != NULL)
      (void)snprintf(e->thread, sizeof(e->thread), "%s", opts->name);
  }
  e->next = sp->entries;
  sp->entries = e;
  return 0;
}

/* ---- the calling side ---------------------------------------------------- */

/* Check a spawn's arguments and pack its request, [entry, args]. */
static int spawn_request(weft_node_t* node, const char* node_name,
                         const char* entry, const void* args, size_t len,
                         msgpack_sbuffer* sb) {
  msgpack_packer pk;
  if (node == NULL || !weft__wire_name_ok(node_name) ||
      !weft__wire_name_ok(entry) || (args == NULL && len != 0))
    return WEFT_EINVAL;
  if (args != NULL && (len == 0 || weft__msgpack_validate(args, len) != 0))
    return WEFT_EDECODE;
  if (!weft_node_is_up(node, node_name))
    return WEFT_ENOTCONNECTED;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  if (msgpack_pack_array(&pk, 2) != 0 ||
      msgpack_pack_str(&pk, strlen(entry)) != 0 ||
      msgpack_pack_str_body(&pk, entry, strlen(entry)) != 0 ||
      (args != NULL ? msgpack_sbuffer_write(sb, (const char*)args, len)
                    : msgpack_pack_nil(&pk)) != 0)
    return WEFT_ENOMEM;
  return 0;
}

/* The name a spawn's reply carries (a str that is a wire name). */
static int read_reply(weft_msg_t* reply, char* out) {
  const msgpack_object* o = weft_msg_object(reply);
  return o != NULL && read_entry(o, out) ? 0 : WEFT_EDECODE;
}

/* A remote port made on the node's loop for a caller on another thread,
 * which waits for it (at most until its deadline: then the task frees
 * what it made). */
typedef struct {
  weft_node_t* node;
  const char* node_name; /* The caller's, valid while it waits. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done, abandoned;
  int err;
  weft_port_t* port;
} hop_t;

static void hop_free(hop_t* h) {
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

static void make_port_task(weft_loop_t* loop, void* arg) {
  hop_t* h = arg;
  bool abandoned;
  (void)loop;
  pthread_mutex_lock(&h->mu);
  abandoned = h->abandoned;
  if (!abandoned)
    h->err = weft_node_port(h->node, h->node_name, WEFT_NODE_SPAWN_EXPORT,
                            &h->port);
  h->done = true;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (abandoned)
    hop_free(h);
}

static void free_port_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  weft_port_free(arg);
}

/* A remote port for the spawn service of `node_name`, from a thread that
 * is not the node's loop's. */
static int port_from_afar(weft_node_t* node, const char* node_name,
                          int64_t timeout_ms, weft_port_t** out) {
  hop_t* h = WEFT__FAILABLE(calloc(1, sizeof(*h)));
  int64_t deadline = weft__deadline_ns(timeout_ms > 0 ? timeout_ms : -1);
  int err;
  if (h == NULL)
    return WEFT_ENOMEM;
  h->node = node;
  h->node_name = node_name;
  pthread_mutex_init(&h->mu, NULL);
  (void)weft__cond_init_mono(&h->cv);
  if (weft__loop_post_task(weft__node_loop(node), make_port_task, h) != 0) {
    hop_free(h);
    return WEFT_ENOMEM;
  }
  pthread_mutex_lock(&h->mu);
  while (!h->done) {
    if (deadline < 0) {
      pthread_cond_wait(&h->cv, &h->mu);
    } else {
      int64_t left = deadline - (int64_t)uv_hrtime();
      struct timespec ts;
      if (left <= 0)
        break;
      /* Whole ms, rounded up: the loop checks the deadline again. */
      weft__cond_deadline_in(&ts, (uint64_t)(left + 999999) / 1000000u);
      (void)pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
  }
  if (!h->done) {
    h->abandoned = true; /* The task frees it. */
    pthread_mutex_unlock(&h->mu);
    return WEFT_ETIMEDOUT;
  }
  pthread_mutex_unlock(&h->mu);
  err = h->err;
  *out = h->port;
  hop_free(h);
  return err;
}

int weft_node_spawn_worker_on(weft_node_t* node,
                              const char* node_name,
                              const char* entry,
                              const void* args,
                              size_t len,
                              int64_t timeout_ms,
                              char* out_name) {
  msgpack_sbuffer sb;
  weft_port_t* p = NULL;
  weft_msg_t* reply = NULL;
  int64_t deadline = weft__deadline_ns(timeout_ms > 0 ? timeout_ms : -1);
  bool on_loop;
  int err;
  if (out_name != NULL)
    out_name[0] = '\0';
  if (out_name == NULL)
    return WEFT_EINVAL;
  msgpack_sbuffer_init(&sb);
  err = spawn_request(node, node_name, entry, args, len, &sb);
  on_loop = err == 0 && weft_loop_current() == weft__node_loop(node);
  if (on_loop && strcmp(node_name, weft_node_name(node)) == 0) {
    /* Here, and now: a request to ourselves would wait for this loop. */
    spawner_t* sp = spawner_find(node);
    msgpack_sbuffer_destroy(&sb);
    if (sp == NULL)
      return WEFT_ENORESPONDERS;
    return spawn_here(sp, entry, args, len, out_name);
  }
  if (err == 0)
    err = on_loop ? weft_node_port(node, node_name, WEFT_NODE_SPAWN_EXPORT, &p)
                  : port_from_afar(node, node_name, timeout_ms, &p);
  if (err == 0 && timeout_ms > 0) {
    /* What the hop to the loop left of the caller's time (at least 1 ms:
     * 0 would mean no limit). */
    int64_t left = (deadline - (int64_t)uv_hrtime()) / 1000000;
    timeout_ms = left > 0 ? left : 1;
  }
  if (err == 0) {
    err = weft_port_call(p, sb.data, sb.size, timeout_ms, &reply);
    if (on_loop)
      weft_port_free(p);
    else if (weft__loop_post_task(weft__node_loop(node), free_port_task, p) !=
             0)
      weft_port_close(p); /* Not freed: closed at least (the loop's). */
  }
  msgpack_sbuffer_destroy(&sb);
  if (err == 0) {
    err = read_reply(reply, out_name);
    weft_msg_free(reply);
  }
  return err;
}

typedef struct {
  weft_node_t* node;
  weft_port_t* port;
  weft_node_spawn_cb cb;
  void* ctx;
} async_t;

static void async_done(void* ctx, int status, weft_msg_t* reply) {
  async_t* a = ctx;
  char name[NAME_LEN] = {0};
  if (status == 0)
    status = read_reply(reply, name);
  weft_port_free(a->port);
  a->cb(a->node, status, status == 0 ? name : NULL, a->ctx);
  free(a);
}

int weft_node_spawn_worker_on_async(weft_node_t* node,
                                    const char* node_name,
                                    const char* entry,
                                    const void* args,
                                    size_t len,
                                    int64_t timeout_ms,
                                    weft_node_spawn_cb cb,
                                    void* ctx) {
  msgpack_sbuffer sb;
  async_t* a;
  int err;
  if (cb == NULL)
    return WEFT_EINVAL;
  msgpack_sbuffer_init(&sb);
  err = spawn_request(node, node_name, entry, args, len, &sb);
  if (err == 0 && weft_loop_current() != weft__node_loop(node))
    err = WEFT_EWRONGTHREAD;
  a = err == 0 ? WEFT__FAILABLE(calloc(1, sizeof(*a))) : NULL;
  if (err == 0 && a == NULL)
    err = WEFT_ENOMEM;
  if (err == 0) {
    a->node = node;
    a->cb = cb;
    a->ctx = ctx;
    err = weft_node_port(node, node_name, WEFT_NODE_SPAWN_EXPORT, &a->port);
  }
  if (err == 0) {
    err = weft_port_request(a->port, sb.data, sb.size, timeout_ms, async_done,
                            a, NULL);
    if (err != 0)
      weft_port_free(a->port);
  }
  msgpack_sbuffer_destroy(&sb);
  if (err != 0)
    free(a);
  return err;
}
