/* worker.c - workers: a thread with its own loop and heap, an entangled
 * port pair to its owner, lifecycle events on the owner's loop, terminate,
 * exit, errors, worker data and environment data. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct env_entry_s {
  struct env_entry_s* next;
  char* key;
  char* value;
  size_t len;
} env_entry_t;

struct weft_worker_s {
  /* Fixed at spawn, read by both threads. */
  weft_loop_t* owner;
  weft_port_t* port; /* Owner side; weft's own (hooks). Owner loop only
                      * (released at the exit event). */
  void* post_core;   /* The owner side's core (and its peer), held until
                      * `w` is freed: posts from any thread go through it
                      * and find it closed (WEFT_ECLOSED) once the worker
                      * exited. */
  void* child_core;  /* Worker side, adopted by the worker thread. */
  weft_worker_entry_cb entry;
  void* arg;
  char name[16];
  char* data; /* workerData bytes (copied). */
  size_t data_len;
  size_t max_heap;
  size_t max_msg;
  uint64_t thread_id;
  env_entry_t* env;     /* Snapshot; the worker thread takes it. */
  bool fresh_thread;    /* WEFT_WORKER_FRESH_THREAD. */
  weft_msg_t* exit_msg; /* Made at spawn, so the exit always gets out. */
  weft_msg_t* online_msg; /* Also made at spawn: 'online' is never lost. */

  /* Any thread. */
  atomic_int refs;     /* The owner's handle and the worker's thread: the
                        * last to let go frees the record, so that a
                        * handle freed while its worker runs needs no
                        * further turn of the owner's loop. */
  atomic_int stop;     /* Terminate asked, exit called, or an error. */
  atomic_int gone;     /* The thread's work is done: only the exit push
                        * and its unref follow (set under `lock`). */
  uv_mutex_t lock;     /* Guards `loop` against the worker tearing down,
                        * and `gone` for `gone_cond`. */
  uv_cond_t gone_cond; /* Signalled with `gone` set (worker_teardown). */
  weft_loop_t* loop;   /* The worker's loop while it runs. */
  /* Lets terminate wake the thread out of weft_atomic_wait32/64. */
  weft__wait_intr_t intr;

  /* Worker thread only (read by the owner after the exit message, which
   * orders them). */
  int exit_code;
  bool exit_called;
  int error; /* 0, WEFT_EUNCAUGHT, WEFT_EHEAPLIMIT, ... */
  char* error_text;
  weft_port_t* parent_port;
  msgpack_zone data_zone;
  msgpack_object data_obj;

  /* Owner loop only. */
  weft_worker_events_t events;
  void* user_data;
  void (*terminate_cb)(weft_worker_t* w, int exit_code);
  bool exited;
  bool freed;
  bool in_exit_event; /* Inside the exit event or terminate callback. */
  bool ref;
  bool holds_keepalive;
  int final_code;
  weft__tracked_t tracked;
};

static atomic_ulong next_thread_id = 1;
static _Thread_local weft_worker_t* current_worker;
static _Thread_local env_entry_t* thread_env;

/* ---- environment data ---------------------------------------------------- */

static void env_free(env_entry_t* e) {
  while (e != NULL) {
    env_entry_t* next = e->next;
    free(e->key);
    free(e->value);
    free(e);
    e = next;
  }
}

static env_entry_t* env_copy(const env_entry_t* e, int* err) {
  env_entry_t* head = NULL;
  env_entry_t** tail = &head;
  *err = 0;
  for (; e != NULL; e = e->next) {
    env_entry_t* n = WEFT__FAILABLE(calloc(1, sizeof(*n)));
    if (n == NULL || (n->key = WEFT__FAILABLE(strdup(e->key))) == NULL ||
        (n->value = WEFT__FAILABLE(malloc(e->len))) == NULL) {
      if (n != NULL)
        free(n->key);
      free(n);
      env_free(head);
      *err = WEFT_ENOMEM;
      return NULL;
    }
    memcpy(n->value, e->value, e->len);
    n->len = e->len;
    *tail = n;
    tail = &n->next;
  }
  return head;
}

int weft_set_environment_data(const char* key, const void* bytes, size_t len) {
  env_entry_t **pp, *e;
  char* v = NULL;
  if (key == NULL || (bytes == NULL && len > 0))
    return WEFT_EINVAL;
  if (len > 0) {
    int err = weft__msgpack_validate(bytes, len);
    if (err != 0)
      return err;
    v = WEFT__FAILABLE(malloc(len));
    if (v == NULL)
      return WEFT_ENOMEM;
    memcpy(v, bytes, len);
  }
  for (pp = &thread_env; *pp != NULL; pp = &(*pp)->next) {
    /* cppcheck-suppress nullPointerRedundantCheck ; the loop tests *pp. */
    if (strcmp((*pp)->key, key) == 0)
      break;
  }
  e = *pp;
  if (len == 0) {
    if (e != NULL) {
      *pp = e->next;
      e->next = NULL;
      env_free(e);
    }
    return 0;
  }
  if (e == NULL) {
    e = WEFT__FAILABLE(calloc(1, sizeof(*e)));
    if (e == NULL || (e->key = WEFT__FAILABLE(strdup(key))) == NULL) {
      free(e);
      free(v);
      return WEFT_ENOMEM;
    }
    *pp = e;
  }
  free(e->value);
  e->value = v;
  e->len = len;
  return 0;
}

int weft_get_environment_data(const char* key,
                              const void** bytes,
                              size_t* len) {
  env_entry_t* e;
  if (key == NULL || bytes == NULL || len == NULL)
    return WEFT_EINVAL;
  for (e = thread_env; e != NULL; e = e->next) {
    if (strcmp(e->key, key) == 0) {
      *bytes = e->value;
      *len = e->len;
      return 0;
    }
  }
  *bytes = NULL;
  *len = 0;
  return WEFT_EAGAIN;
}

/* ---- context ------------------------------------------------------------- */

bool weft_is_main_thread(void) {
  return current_worker == NULL;
}

uint64_t weft_thread_id(void) {
  return current_worker == NULL ? 0 : current_worker->thread_id;
}

weft_port_t* weft_parent_port(void) {
  return current_worker == NULL ? NULL : current_worker->parent_port;
}

const msgpack_object* weft_worker_data(void) {
  return current_worker == NULL ? NULL : &current_worker->data_obj;
}

size_t weft__thread_message_limit(void) {
  return current_worker == NULL ? WEFT_MSG_DEFAULT_LIMIT
                                : current_worker->max_msg;
}

bool weft_should_stop(void) {
  weft_worker_t* w = current_worker;
  /* relaxed: a hint polled in hot loops; the stop itself is ordered by
   * the loop's own request flag. */
  return w != NULL && atomic_load_explicit(&w->stop, memory_order_relaxed);
}

static void stop_self(weft_worker_t* w) {
  atomic_store_explicit(&w->stop, 1, memory_order_relaxed);
  /* Later waits on this thread return WEFT_ETERMINATED at once. */
  weft__wait_interrupt(&w->intr);
  if (w->loop != NULL)
    weft__loop_request_stop(w->loop);
}

int weft_worker_exit(int code) {
  weft_worker_t* w = current_worker;
  if (w == NULL)
    return WEFT_EINVAL;
  if (!w->exit_called && w->error == 0) {
    w->exit_called = true;
    w->exit_code = code;
  }
  stop_self(w);
  return 0;
}

int weft_report_error(const char* text) {
  weft_worker_t* w = current_worker;
  if (w == NULL)
    return WEFT_EINVAL;
  if (w->error == 0) {
    w->error = WEFT_EUNCAUGHT;
    w->error_text =
        WEFT__FAILABLE(strdup(text != NULL ? text : "uncaught error"));
  }
  stop_self(w);
  return 0;
}

/* The worker's heap passed its limit (heap.c reports through
 * weft__heap_on_breach). Thread: the worker. */
static void heap_breached(void* arg) {
  weft_worker_t* w = arg;
  if (w->error == 0)
    w->error = WEFT_EHEAPLIMIT;
  stop_self(w);
}

/* ---- owner side ---------------------------------------------------------- */

static void update_keepalive(weft_worker_t* w) {
  /* A freed worker still running is being stopped: the loop waits for its
   * exit, which releases it (weft_loop_free() would answer EBUSY). A
   * pending terminate callback holds the loop too, unref'd or not, as
   * Node's terminate() promise does: else the loop could return before
   * the exit that runs the callback. */
  bool want = !w->exited && (w->ref || w->freed || w->terminate_cb != NULL);
  weft__loop_hold(w->owner, &w->holds_keepalive, want);
}

/* The memory of a worker record (also of one whose spawn failed). */
static void worker_destroy(weft_worker_t* w) {
  if (w->post_core != NULL)
    weft__port_unhold_pair(w->post_core);
  weft_msg_free(w->exit_msg);
  weft_msg_free(w->online_msg);
  free(w->data);
  free(w->error_text);
  env_free(w->env);
  weft__wait_intr_destroy(&w->intr);
  uv_cond_destroy(&w->gone_cond);
  uv_mutex_destroy(&w->lock);
  weft__xfree(w);
}

/* Drop one of the two references (the handle's, the thread's). */
static void worker_unref(weft_worker_t* w) {
  /* acq_rel: whoever frees the record sees every write of the other. */
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
    worker_destroy(w);
}

/* The owner lets go of `w`: it no longer counts on the owner's loop.
 * Thread: owner loop. */
static void worker_release(weft_worker_t* w) {
  weft__loop_untrack(&w->tracked);
  weft__loop_handles(w->owner, -1);
  worker_unref(w);
}

static void on_owner_message(weft_port_t* port, weft_msg_t* msg) {
  weft_worker_t* w = weft__port_owner(port);
  if (w->events.message != NULL && !w->freed)
    w->events.message(w, msg);
}

static void on_owner_messageerror(weft_port_t* port, int err) {
  weft_worker_t* w = weft__port_owner(port);
  if (w->events.messageerror != NULL && !w->freed)
    w->events.messageerror(w, err);
}

static void on_owner_control(weft_port_t* port, weft_msg_t* msg) {
  weft_worker_t* w = weft__port_owner(port);
  weft_loop_t* loop = w->owner;
  bool user = !w->freed && !weft__loop_closing(loop);
  switch (msg->kind) {
    case WEFT__MSG_ONLINE:
      if (user && w->events.online != NULL)
        w->events.online(w);
      break;
    case WEFT__MSG_ERROR:
      if (user && w->events.error != NULL)
        w->events.error(w, msg->code, msg->len > 0 ? msg->data : "");
      break;
    case WEFT__MSG_EXIT:
      /* The thread posted this as its very last act on `w`. */
      w->exited = true;
      w->final_code = msg->code;
      update_keepalive(w);
      weft_msg_free(msg);
      msg = NULL;
      /* The user may free `w` in these callbacks: weft_worker_free() then
       * only marks it, and it is released below. */
      w->in_exit_event = true;
      if (user && w->events.exit != NULL)
        w->events.exit(w, w->final_code);
      if (user && !w->freed && w->terminate_cb != NULL)
        w->terminate_cb(w, w->final_code);
      w->in_exit_event = false;
      /* The owner side of the channel ends with the worker. */
      weft__port_release(w->port);
      w->port = NULL;
      if (w->freed)
        worker_release(w);
      break;
    default:
      break;
  }
  weft_msg_free(msg);
  weft__loop_after_callback(loop);
}

static const weft__port_hooks_t owner_hooks = {
    on_owner_message, on_owner_messageerror, on_owner_control};

/* ---- worker thread ------------------------------------------------------- */

static void send_control(weft_worker_t* w,
                         int kind,
                         int code,
                         const char* text) {
  size_t len = text != NULL ? strlen(text) + 1 : 0;
  weft_msg_t* m = weft__msg_alloc(kind, len);
  if (m == NULL)
    return; /* Out of memory: the owner still gets the exit below. */
  m->code = code;
  if (len > 0)
    memcpy(m->data, text, len);
  m->len = len;
  weft__port_enqueue_core(w->post_core, m);
}

static void worker_main(void* arg) {
  weft_worker_t* w = arg;
  weft__heap_t* heap;
  weft_loop_t* loop = NULL;
  weft_msg_t* exit_msg = w->exit_msg;
  int code;
  int err;

  pthread_setname_np(pthread_self(), w->name);
  current_worker = w;
  weft__wait_intr_set_current(&w->intr);
  thread_env = w->env;
  w->env = NULL;
  heap = weft__heap_new(w->max_heap);
  if (heap == NULL) {
    w->error = WEFT_ENOMEM;
    goto done;
  }
  weft__heap_on_breach(heap, heap_breached, w);
  weft__heap_set_current(heap);
  err = weft_loop_new(&loop);
  if (err != 0) {
    w->error = err;
    goto heap_done;
  }
  err = weft__port_adopt(w->child_core, loop, &w->parent_port);
  if (err != 0) {
    w->error = err; /* The core is dropped at `done`. */
    goto loop_done;
  }
  w->child_core = NULL;
  weft__port_mark_internal(w->parent_port);
  weft_port_set_max_message(w->parent_port, w->max_msg);

  if (WEFT__ALLOC_FAILS() || !msgpack_zone_init(&w->data_zone, 256)) {
    w->error = WEFT_ENOMEM;
    goto loop_done;
  }
  if (w->data_len > 0) {
    size_t off = 0;
    msgpack_unpack(w->data, w->data_len, &off, &w->data_zone, &w->data_obj);
  } else {
    w->data_obj.type = MSGPACK_OBJECT_NIL;
  }

  uv_mutex_lock(&w->lock);
  w->loop = loop;
  uv_mutex_unlock(&w->lock);
  if (atomic_load_explicit(&w->stop, memory_order_acquire))
    weft__loop_request_stop(loop);

  weft__port_enqueue_core(w->post_core, w->online_msg);
  w->online_msg = NULL;
  if (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
    w->entry(loop, w->arg);
    if (!atomic_load_explicit(&w->stop, memory_order_acquire))
      weft_loop_run(loop);
  }

  uv_mutex_lock(&w->lock);
  w->loop = NULL;
  uv_mutex_unlock(&w->lock);
  msgpack_zone_destroy(&w->data_zone);

loop_done:
  /* The teardown closes the parent port with every other port, so the
   * owner sees all messages posted before, then the exit. */
  weft__loop_teardown(loop);
  w->parent_port = NULL;
heap_done:
  weft__heap_destroy(heap);
  weft__heap_set_current(NULL);
done:
  if (w->child_core != NULL) {
    /* Out of memory before the parent port was adopted: close it, so the
     * owner's side sees 'close' and the pair is freed. */
    weft__port_drop_in_transit(w->child_core);
    w->child_core = NULL;
  }
  if (w->error != 0) {
    send_control(
        w, WEFT__MSG_ERROR, w->error,
        w->error_text != NULL ? w->error_text : weft_strerror(w->error));
  }
  if (w->error != 0)
    code = 1;
  else if (w->exit_called)
    code = w->exit_code;
  else if (atomic_load_explicit(&w->stop, memory_order_acquire))
    code = 1; /* Terminated. */
  else
    code = 0;
  env_free(thread_env);
  thread_env = NULL;
  current_worker = NULL;
  weft__wait_intr_set_current(NULL);
  /* This thread reaches the owner only through `post_core` (the owner's
   * side of the channel, held by `w` until the record is freed, which this
   * thread's reference prevents): the owner may release its port handle at
   * any time (weft_worker_free() of a running worker). From `gone` on only
   * `post_core`, the owner's loop (which waits for producers before it
   * goes) and the reference count are touched. */
  w->exit_msg = NULL;
  exit_msg->code = code;
  /* release: everything this thread wrote to `w` is visible to an owner
   * that sees `gone`. Set under the lock so that an owner blocked in
   * worker_teardown cannot miss the signal. */
  uv_mutex_lock(&w->lock);
  atomic_store_explicit(&w->gone, 1, memory_order_release);
  uv_cond_signal(&w->gone_cond);
  uv_mutex_unlock(&w->lock);
  /* A handle freed while this ran released its port: the exit message then
   * waits in a core no loop reads and goes with it. */
  weft__port_enqueue_core(w->post_core, exit_msg);
  worker_unref(w);
}

/* ---- spawning ------------------------------------------------------------ */

static void worker_teardown(weft__tracked_t* t) {
  weft_worker_t* w = weft__container_of(t, weft_worker_t, tracked);
  if (w->exited) {
    worker_release(w);
    return;
  }
  /* The owning loop ends (it is itself a worker being torn down): stop the
   * child and wait until it is done with `w`, so no worker outlives its
   * owner. */
  weft__loop_untrack(t);
  w->freed = true;
  weft_worker_terminate(w, NULL);
  /* Block (no spinning: a busy child may take seconds to notice the stop)
   * until the thread is done with `w`. acquire: pairs with the thread's
   * release of `gone`. */
  uv_mutex_lock(&w->lock);
  while (!atomic_load_explicit(&w->gone, memory_order_acquire))
    uv_cond_wait(&w->gone_cond, &w->lock);
  uv_mutex_unlock(&w->lock);
  w->exited = true;
  update_keepalive(w);
  weft__port_release(w->port);
  w->port = NULL;
  worker_release(w);
}

int weft_worker_spawn(weft_worker_t** out,
                      weft_loop_t* owner,
                      weft_worker_entry_cb entry,
                      const weft_worker_opts_t* opts) {
  static const weft_worker_opts_t defaults;
  weft_worker_t* w;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (owner == NULL || entry == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(owner))
    return WEFT_EWRONGTHREAD;
  if (opts == NULL)
    opts = &defaults;
  if (opts->data == NULL && opts->data_len > 0)
    return WEFT_EINVAL;
  if (opts->data_len > 0) {
    err = weft__msgpack_validate(opts->data, opts->data_len);
    if (err != 0)
      return err;
  }
  w = weft__xalloc(sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  memset(w, 0, sizeof(*w));
  if (uv_mutex_init(&w->lock) != 0) {
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  if (uv_cond_init(&w->gone_cond) != 0) {
    uv_mutex_destroy(&w->lock);
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  if (weft__wait_intr_init(&w->intr) != 0) {
    uv_cond_destroy(&w->gone_cond);
    uv_mutex_destroy(&w->lock);
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  w->owner = owner;
  w->entry = entry;
  w->arg = opts->arg;
  (void)snprintf(w->name, sizeof(w->name), "%s",
                 opts->name != NULL ? opts->name : "weft-worker");
  w->max_heap = opts->max_heap_bytes;
  w->max_msg = opts->max_message_bytes ? opts->max_message_bytes
                                       : WEFT_MSG_DEFAULT_LIMIT;
  w->events = opts->events;
  w->user_data = opts->user_data;
  w->ref = true;
  atomic_init(&w->refs, 2); /* The handle and the thread (see refs). */
  atomic_init(&w->stop, 0);
  atomic_init(&w->gone, 0);
  w->fresh_thread = (opts->flags & WEFT_WORKER_FRESH_THREAD) != 0;
  w->thread_id = atomic_fetch_add(&next_thread_id, 1);
  w->tracked.teardown = worker_teardown;
  if (opts->data_len > 0) {
    w->data = WEFT__FAILABLE(malloc(opts->data_len));
    if (w->data == NULL)
      goto nomem;
    memcpy(w->data, opts->data, opts->data_len);
    w->data_len = opts->data_len;
  }
  w->env = env_copy(thread_env, &err);
  if (err != 0)
    goto nomem;
  w->exit_msg = weft__msg_alloc(WEFT__MSG_EXIT, 0);
  w->online_msg = weft__msg_alloc(WEFT__MSG_ONLINE, 0);
  if (w->exit_msg == NULL || w->online_msg == NULL)
    goto nomem;
  err = weft__channel_new_detached(owner, &w->port, &w->child_core);
  if (err != 0)
    goto nomem;
  w->post_core = weft__port_hold_pair(w->port);
  /* Posts made before the worker runs count against its limit too. */
  weft__port_limit_backlog(w->child_core, w->max_heap);
  weft_port_set_max_message(w->port, w->max_msg);
  weft__port_set_hooks(w->port, &owner_hooks, w);

  err = weft__thread_run(opts->stack_size, w->fresh_thread, worker_main, w);
  if (err != 0) {
    weft__port_drop_in_transit(w->child_core);
    weft__port_release(w->port);
    worker_destroy(w);
    return err;
  }
  weft__loop_handles(owner, 1);
  weft__loop_track(owner, &w->tracked);
  update_keepalive(w);
  *out = w;
  return 0;

nomem:
  worker_destroy(w);
  return WEFT_ENOMEM;
}

#define CHECK_WORKER(w)                    \
  do {                                     \
    if ((w) == NULL || (w)->freed)         \
      return WEFT_EINVAL;                  \
    if (!weft__loop_on_thread((w)->owner)) \
      return WEFT_EWRONGTHREAD;            \
  } while (0)

/* Posts come from any thread: they read only `post_core` (fixed at
 * spawn, alive until `w` is freed) and never `exited` or `port` (owner
 * loop fields); after the exit event the core is closed, so the post
 * answers WEFT_ECLOSED. The owner's own calls still refuse a handle it
 * has freed (WEFT_EINVAL) while a running worker winds down. */
#define CHECK_POSTER(w)                                 \
  do {                                                  \
    if ((w) == NULL)                                    \
      return WEFT_EINVAL;                               \
    if (weft__loop_on_thread((w)->owner) && (w)->freed) \
      return WEFT_EINVAL;                               \
  } while (0)

int weft_worker_post_msg(weft_worker_t* w, weft_msg_t** msg) {
  CHECK_POSTER(w);
  return weft__core_post_msg(w->post_core, msg);
}

int weft_worker_post(weft_worker_t* w, const void* bytes, size_t len) {
  CHECK_POSTER(w);
  return weft__core_post(w->post_core, bytes, len);
}

int weft_worker_post_fn(weft_worker_t* w,
                        int (*pack)(msgpack_packer* pk, void* arg),
                        void* arg) {
  CHECK_POSTER(w);
  return weft__core_post_fn(w->post_core, pack, arg);
}

int weft_worker_terminate(weft_worker_t* w,
                          void (*cb)(weft_worker_t* w, int exit_code)) {
  if (w == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->owner))
    return WEFT_EWRONGTHREAD;
  if (w->exited) {
    if (cb != NULL)
      cb(w, w->final_code);
    return 0;
  }
  if (cb != NULL) {
    w->terminate_cb = cb;
    update_keepalive(w);
  }
  atomic_store_explicit(&w->stop, 1, memory_order_release);
  /* Wake a wait in progress on the worker's thread; later ones return at
   * once. */
  weft__wait_interrupt(&w->intr);
  uv_mutex_lock(&w->lock);
  if (w->loop != NULL)
    weft__loop_request_stop(w->loop);
  uv_mutex_unlock(&w->lock);
  return 0;
}

int weft_worker_ref(weft_worker_t* w) {
  CHECK_WORKER(w);
  w->ref = true;
  update_keepalive(w);
  return 0;
}

int weft_worker_unref(weft_worker_t* w) {
  CHECK_WORKER(w);
  w->ref = false;
  update_keepalive(w);
  return 0;
}

uint64_t weft_worker_thread_id(const weft_worker_t* w) {
  return w == NULL ? 0 : w->thread_id;
}

bool weft_worker_exited(const weft_worker_t* w) {
  return w != NULL && w->exited;
}

void weft_worker_set_data(weft_worker_t* w, void* data) {
  if (w != NULL)
    w->user_data = data;
}

void* weft_worker_get_data(const weft_worker_t* w) {
  return w == NULL ? NULL : w->user_data;
}

void weft_worker_free(weft_worker_t* w) {
  if (w == NULL || w->freed)
    return;
  if (!weft__loop_on_thread(w->owner))
    return;
  if (w->in_exit_event) {
    w->freed = true; /* Released when the exit event returns. */
    return;
  }
  if (w->exited) {
    worker_release(w);
    return;
  }
  /* Still running: stop it and let go of it now. The thread holds its
   * own reference and frees the record when it is done; its last
   * messages (and the exit) land in the released port's core and go
   * with it. Nothing of the worker stays on the owner's loop, so
   * weft_loop_free() right after this succeeds. */
  w->freed = true;
  w->terminate_cb = NULL;
  weft_worker_terminate(w, NULL);
  weft__loop_hold(w->owner, &w->holds_keepalive, false);
  weft__port_release(w->port);
  w->port = NULL;
  worker_release(w);
}
