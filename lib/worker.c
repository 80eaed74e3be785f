/* worker.c - workers: a thread with its own loop and heap, an entangled
 * port pair to its owner, lifecycle events on the owner's loop, terminate,
 * exit, errors, worker data and environment data. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "trace.h"

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
  size_t stack_size;
  uint64_t thread_id;
  env_entry_t* env;     /* Snapshot; the worker thread takes it. */
  bool fresh_thread;    /* WEFT_WORKER_FRESH_THREAD. */
  bool hosted;          /* Owned by the host loop (spawned with no owner). */
  bool has_data_msg;    /* opts.data_msg was given: the thread waits for
                         * `data_ready` before it reads `data_msg`. */
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
  /* The spawner committed opts.data_msg's transfers (under `lock`; it
   * commits after the thread was started, so that a failed spawn leaves
   * the message to the caller untouched). */
  uv_cond_t data_cond;
  bool data_ready;
  weft_msg_t* data_msg; /* Under `lock` until `data_ready`; then the
                         * worker thread's. */
  /* Utilization once the loop is gone (under `lock`): its last sample. */
  bool elu_final;
  uint64_t elu_idle_ns;
  uint64_t elu_total_ns;
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
  if (current_worker == NULL)
    return NULL;
  if (current_worker->data_msg != NULL)
    return weft_msg_object(current_worker->data_msg);
  return &current_worker->data_obj;
}

weft_msg_t* weft_worker_data_msg(void) {
  return current_worker == NULL ? NULL : current_worker->data_msg;
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

static void host_leave(weft_loop_t* loop);
static int spawn_start(weft_worker_t* w, weft_loop_t* owner);

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
  uv_cond_destroy(&w->data_cond);
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
  weft_loop_t* owner = w->owner;
  bool hosted = w->hosted;
  weft__loop_untrack(&w->tracked);
  weft__loop_handles(owner, -1);
  worker_unref(w);
  if (hosted)
    host_leave(owner); /* The host ends with its last worker. */
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
  WEFT__TRACE_THREAD_START(w->name);
  if (w->has_data_msg) {
    /* The spawner commits the message's transfers right after it started
     * this thread (weft_worker_spawn); a few microseconds. */
    uv_mutex_lock(&w->lock);
    while (!w->data_ready)
      uv_cond_wait(&w->data_cond, &w->lock);
    uv_mutex_unlock(&w->lock);
  }
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
  if (w->data_msg != NULL) {
    /* Decoded into a zone of its own and charged to this worker's heap,
     * as a received message: weft_msg_take_*() then work on it. */
    err = weft__msg_decode(w->data_msg, NULL);
    if (err != 0) {
      if (w->error == 0)
        w->error = err;
      msgpack_zone_destroy(&w->data_zone);
      goto loop_done;
    }
    w->data_msg->state = WEFT__MSG_OWNED;
    w->data_obj = w->data_msg->obj;
  } else if (w->data_len > 0) {
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

  WEFT__TRACE_INSTANT("worker online", w->name, 0);
  weft__port_enqueue_core(w->post_core, w->online_msg);
  w->online_msg = NULL;
  if (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
    WEFT__TRACE_BEGIN("worker entry");
    w->entry(loop, w->arg);
    WEFT__TRACE_END();
    if (!atomic_load_explicit(&w->stop, memory_order_acquire))
      weft_loop_run(loop);
  }

  uv_mutex_lock(&w->lock);
  /* The last utilization sample: the owner reads it from now on. */
  weft__loop_elu_ns(loop, &w->elu_idle_ns, &w->elu_total_ns);
  w->elu_final = true;
  w->loop = NULL;
  uv_mutex_unlock(&w->lock);
  msgpack_zone_destroy(&w->data_zone);

loop_done:
  /* The teardown closes the parent port with every other port, so the
   * owner sees all messages posted before, then the exit. */
  weft__loop_teardown(loop);
  w->parent_port = NULL;
heap_done:
  /* workerData's message, with what was not taken from it (before the
   * heap it is charged to). */
  weft_msg_free(w->data_msg);
  w->data_msg = NULL;
  weft__heap_destroy(heap);
  weft__heap_set_current(NULL);
done:
  weft_msg_free(w->data_msg); /* No heap could be made. */
  w->data_msg = NULL;
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
  WEFT__TRACE_THREAD_EXIT(code);
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

/* ---- the host loop ------------------------------------------------------- */

/* Workers spawned with no owner loop belong to a hidden loop on a thread
 * of weft's own ("weft-host"): started by the first such spawn, ended
 * (its loop freed, its thread gone) when its last worker is released.
 * Their events run on that thread. Calls on them from other threads run
 * there too, as a task the caller waits for (host_call): a worker's owner
 * fields stay owner-thread only, as for any worker.
 *
 * host_users counts the host's workers and the calls on their way to it;
 * while it is above 0 the host loop holds one keep-alive (taken when the
 * thread starts, dropped by the host thread when the count falls to 0),
 * so a task posted to it always runs. A spawn after that starts a new
 * host. */
static uv_once_t host_once = UV_ONCE_INIT;
static uv_mutex_t host_lock;
static uv_cond_t host_cond;      /* Host started; a call is done. */
static weft_loop_t* host_loop;   /* Under host_lock: the live host, or NULL. */
static bool host_starting;       /* Under host_lock. */
static int host_start_err;       /* Under host_lock. */
static int host_users;           /* Under host_lock. */

static void host_init(void) {
  if (uv_mutex_init(&host_lock) != 0 || uv_cond_init(&host_cond) != 0)
    abort(); /* Only fails without resources at start-up. */
}

static void host_main(void* arg) {
  weft_loop_t* loop = NULL;
  int err;
  (void)arg;
  pthread_setname_np(pthread_self(), "weft-host");
  err = weft_loop_new(&loop);
  if (err == 0)
    weft__loop_keepalive(loop, 1); /* Held while host_users > 0. */
  uv_mutex_lock(&host_lock);
  host_start_err = err;
  host_loop = loop;
  host_starting = false;
  uv_cond_broadcast(&host_cond);
  uv_mutex_unlock(&host_lock);
  if (err != 0)
    return;
  weft_loop_run(loop);
  /* Every worker was released and every call ran: nothing is left. */
  (void)weft_loop_free(loop);
}

/* Count the caller as a user of the host, starting one if none runs, and
 * return its loop (NULL and `*err` when no host could start).
 * Thread: any. */
static weft_loop_t* host_enter(int* err) {
  weft_loop_t* loop;
  uv_once(&host_once, host_init);
  uv_mutex_lock(&host_lock);
  while (host_starting)
    uv_cond_wait(&host_cond, &host_lock);
  if (host_loop == NULL) {
    uv_thread_t tid;
    host_starting = true;
    if (WEFT__ALLOC_FAILS() || uv_thread_create(&tid, host_main, NULL) != 0) {
      host_starting = false;
      uv_cond_broadcast(&host_cond);
      uv_mutex_unlock(&host_lock);
      *err = WEFT_ESPAWN;
      return NULL;
    }
    /* Nobody joins the host: it ends on its own, with nothing left. */
    pthread_detach(tid);
    while (host_starting)
      uv_cond_wait(&host_cond, &host_lock);
    if (host_loop == NULL) {
      *err = host_start_err;
      uv_mutex_unlock(&host_lock);
      return NULL;
    }
  }
  host_users++;
  loop = host_loop;
  uv_mutex_unlock(&host_lock);
  return loop;
}

/* Drop a use of the host; the last one lets the host loop end.
 * Thread: the host's. */
static void host_leave(weft_loop_t* loop) {
  bool last;
  uv_mutex_lock(&host_lock);
  last = --host_users == 0;
  if (last && host_loop == loop)
    host_loop = NULL; /* The next spawn starts a new host. */
  uv_mutex_unlock(&host_lock);
  if (last)
    weft__loop_keepalive(loop, -1);
}

/* A call run on the host's thread for another thread, which waits for it.
 * It needs no allocation: the entry lives on the caller's stack. */
typedef struct host_call_s {
  weft__ready_t ready;
  int (*fn)(struct host_call_s* c);
  weft_worker_t* w;
  void (*term_cb)(weft_worker_t* w, int exit_code);
  int result;
  bool done; /* Under host_lock. */
} host_call_t;

static int host_call_run(weft_loop_t* loop, weft__ready_t* r) {
  host_call_t* c = weft__container_of(r, host_call_t, ready);
  c->result = c->fn(c);
  weft__loop_after_callback(loop);
  host_leave(loop); /* The call's own use (host_call). */
  uv_mutex_lock(&host_lock);
  c->done = true;
  uv_cond_broadcast(&host_cond);
  uv_mutex_unlock(&host_lock);
  return 1;
}

/* Run `c->fn(c)` on the host's thread: at once when called there, else as
 * a task while the caller waits. Thread: any. */
static int host_call(host_call_t* c) {
  int err = 0;
  weft_loop_t* loop = host_enter(&err);
  if (loop == NULL)
    return err;
  if (weft__loop_on_thread(loop)) {
    err = c->fn(c);
    host_leave(loop);
    return err;
  }
  c->ready.run = host_call_run;
  c->done = false;
  weft__loop_schedule(loop, &c->ready);
  uv_mutex_lock(&host_lock);
  while (!c->done)
    uv_cond_wait(&host_cond, &host_lock);
  uv_mutex_unlock(&host_lock);
  return c->result;
}

static int host_spawn_fn(host_call_t* c) {
  weft_worker_t* w = c->w;
  int err;
  w->hosted = true;
  err = spawn_start(w, weft_loop_current());
  if (err == 0) {
    uv_mutex_lock(&host_lock);
    host_users++; /* The worker's own use, until it is released. */
    uv_mutex_unlock(&host_lock);
  }
  return err;
}

static int host_spawn(weft_worker_t* w) {
  host_call_t c;
  memset(&c, 0, sizeof(c));
  c.fn = host_spawn_fn;
  c.w = w;
  return host_call(&c);
}

/* Whether a call on `w` must go to the host's thread. Thread: any. */
static bool off_host(const weft_worker_t* w) {
  return w->hosted && !weft__loop_on_thread(w->owner);
}

/* The caller's half of a spawn: check the arguments and make the record
 * with everything copied from the calling thread (data, environment). It
 * touches no loop. On error nothing is left and opts.data_msg is
 * untouched. Thread: the spawner's. */
static int spawn_prepare(weft_worker_t** out,
                         weft_worker_entry_cb entry,
                         const weft_worker_opts_t* opts) {
  weft_worker_t* w;
  weft_msg_t* dm = opts->data_msg;
  size_t max_msg = opts->max_message_bytes ? opts->max_message_bytes
                                           : WEFT_MSG_DEFAULT_LIMIT;
  int err;
  if (entry == NULL)
    return WEFT_EINVAL;
  if (opts->data == NULL && opts->data_len > 0)
    return WEFT_EINVAL;
  if (opts->data_len > 0) {
    err = weft__msgpack_validate(opts->data, opts->data_len);
    if (err != 0)
      return err;
  }
  if (dm != NULL) {
    /* One workerData: bytes or a message, not both. */
    if (opts->data_len > 0 || dm->state != WEFT__MSG_BUILDING ||
        dm->kind != WEFT__MSG_DATA)
      return WEFT_EINVAL;
    if (dm->len == 0)
      return WEFT_EDECODE; /* Nothing was packed. */
    if (dm->len > max_msg)
      return WEFT_EMSGSIZE;
    err = weft__msgpack_validate(dm->data, dm->len);
    if (err == 0)
      err = weft__msg_seal(dm);
    if (err == 0)
      err = weft__msg_check_transfers(dm);
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
  if (uv_cond_init(&w->data_cond) != 0) {
    uv_cond_destroy(&w->gone_cond);
    uv_mutex_destroy(&w->lock);
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  if (weft__wait_intr_init(&w->intr) != 0) {
    uv_cond_destroy(&w->data_cond);
    uv_cond_destroy(&w->gone_cond);
    uv_mutex_destroy(&w->lock);
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  w->entry = entry;
  w->arg = opts->arg;
  (void)snprintf(w->name, sizeof(w->name), "%s",
                 opts->name != NULL ? opts->name : "weft-worker");
  w->max_heap = opts->max_heap_bytes;
  w->max_msg = max_msg;
  w->stack_size = opts->stack_size;
  w->events = opts->events;
  w->user_data = opts->user_data;
  w->ref = true;
  w->has_data_msg = dm != NULL;
  atomic_init(&w->refs, 2); /* The handle and the thread (see refs). */
  atomic_init(&w->stop, 0);
  atomic_init(&w->gone, 0);
  w->fresh_thread = (opts->flags & WEFT_WORKER_FRESH_THREAD) != 0;
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
  *out = w;
  return 0;

nomem:
  worker_destroy(w);
  return WEFT_ENOMEM;
}

/* The owner's half: the channel, the thread, the owner loop's counts. On
 * error nothing is left but the record (the caller destroys it).
 * Thread: `owner`'s. */
static int spawn_start(weft_worker_t* w, weft_loop_t* owner) {
  int err;
  w->owner = owner;
  err = weft__channel_new_detached(owner, &w->port, &w->child_core);
  if (err != 0)
    return WEFT_ENOMEM;
  w->post_core = weft__port_hold_pair(w->port);
  /* Posts made before the worker runs count against its limit too. */
  weft__port_limit_backlog(w->child_core, w->max_heap);
  weft_port_set_max_message(w->port, w->max_msg);
  weft__port_set_hooks(w->port, &owner_hooks, w);
  /* threadId: given to spawns that succeed only (as Node's ids). */
  w->thread_id = atomic_fetch_add(&next_thread_id, 1);

  err = weft__thread_run(w->stack_size, w->fresh_thread, worker_main, w);
  if (err != 0) {
    weft__port_drop_in_transit(w->child_core);
    w->child_core = NULL;
    weft__port_release(w->port);
    w->port = NULL;
    return err;
  }
  WEFT__TRACE_INSTANT("worker spawn", w->name, (int)w->thread_id);
  weft__loop_handles(owner, 1);
  weft__loop_track(owner, &w->tracked);
  update_keepalive(w);
  return 0;
}

/* The spawner hands opts.data_msg over once the thread runs: nothing can
 * fail from here on, so a failed spawn leaves the message to the caller.
 * Thread: the spawner's (transfers commit on the sender's thread). */
static void spawn_hand_data(weft_worker_t* w, weft_msg_t* dm) {
  if (dm == NULL)
    return;
  weft__msg_commit_transfers(dm); /* Buffers detach, ports leave. */
  uv_mutex_lock(&w->lock);
  w->data_msg = dm;
  w->data_ready = true;
  uv_cond_signal(&w->data_cond);
  uv_mutex_unlock(&w->lock);
}

int weft_worker_spawn(weft_worker_t** out,
                      weft_loop_t* owner,
                      weft_worker_entry_cb entry,
                      const weft_worker_opts_t* opts) {
  static const weft_worker_opts_t defaults;
  weft_worker_t* w = NULL;
  int err;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (owner != NULL && !weft__loop_on_thread(owner))
    return WEFT_EWRONGTHREAD;
  if (opts == NULL)
    opts = &defaults;
  err = spawn_prepare(&w, entry, opts);
  if (err != 0)
    return err;
  if (owner != NULL)
    err = spawn_start(w, owner);
  else
    err = host_spawn(w);
  if (err != 0) {
    worker_destroy(w);
    return err;
  }
  spawn_hand_data(w, opts->data_msg);
  *out = w;
  return 0;
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
 * answers WEFT_ECLOSED. The owner's own calls refuse a handle it freed
 * inside the exit event or terminate callback (WEFT_EINVAL) until that
 * callback returns; after that the handle is gone. */
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

int weft__worker_post_core(weft_worker_t* w, void** core) {
  CHECK_POSTER(w);
  *core = w->post_core;
  return 0;
}

static int terminate_fn(host_call_t* c) {
  return weft_worker_terminate(c->w, c->term_cb);
}

/* A call on a hosted worker from another thread, run on the host's. */
static int on_host(weft_worker_t* w, int (*fn)(host_call_t* c)) {
  host_call_t c;
  memset(&c, 0, sizeof(c));
  c.fn = fn;
  c.w = w;
  return host_call(&c);
}

int weft_worker_terminate(weft_worker_t* w,
                          void (*cb)(weft_worker_t* w, int exit_code)) {
  if (w == NULL)
    return WEFT_EINVAL;
  if (off_host(w)) {
    host_call_t c;
    memset(&c, 0, sizeof(c));
    c.fn = terminate_fn;
    c.w = w;
    c.term_cb = cb;
    return host_call(&c);
  }
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

static int ref_fn(host_call_t* c) {
  return weft_worker_ref(c->w);
}

static int unref_fn(host_call_t* c) {
  return weft_worker_unref(c->w);
}

static int has_ref_fn(host_call_t* c) {
  return weft_worker_has_ref(c->w);
}

static int exited_fn(host_call_t* c) {
  return weft_worker_exited(c->w);
}

static int free_fn(host_call_t* c) {
  weft_worker_free(c->w);
  return 0;
}

int weft_worker_ref(weft_worker_t* w) {
  if (w != NULL && off_host(w))
    return on_host(w, ref_fn);
  CHECK_WORKER(w);
  w->ref = true;
  update_keepalive(w);
  return 0;
}

int weft_worker_unref(weft_worker_t* w) {
  if (w != NULL && off_host(w))
    return on_host(w, unref_fn);
  CHECK_WORKER(w);
  w->ref = false;
  update_keepalive(w);
  return 0;
}

uint64_t weft_worker_thread_id(const weft_worker_t* w) {
  return w == NULL ? 0 : w->thread_id;
}

bool weft_worker_has_ref(const weft_worker_t* w) {
  if (w == NULL)
    return false;
  if (off_host(w))
    return on_host((weft_worker_t*)w, has_ref_fn) == 1;
  if (!weft__loop_on_thread(w->owner))
    return false;
  return !w->freed && !w->exited && w->ref;
}

bool weft_worker_exited(const weft_worker_t* w) {
  if (w == NULL)
    return false;
  if (off_host(w))
    return on_host((weft_worker_t*)w, exited_fn) == 1;
  return w->exited;
}

int weft_worker_utilization(const weft_worker_t* w,
                            const weft_elu_t* since,
                            weft_elu_t* out) {
  weft_worker_t* ww = (weft_worker_t*)w; /* Its lock. */
  uint64_t idle = 0, total = 0;
  if (w == NULL || out == NULL)
    return WEFT_EINVAL;
  /* The worker's loop lives while `loop` is set, under the lock the
   * worker takes to clear it; after that its last sample stays. Before
   * the loop exists both are 0. */
  uv_mutex_lock(&ww->lock);
  if (ww->loop != NULL) {
    weft__loop_elu_ns(ww->loop, &idle, &total);
  } else if (ww->elu_final) {
    idle = ww->elu_idle_ns;
    total = ww->elu_total_ns;
  }
  uv_mutex_unlock(&ww->lock);
  weft__elu_fill(idle, total, since, out);
  return 0;
}

void weft_worker_set_data(weft_worker_t* w, void* data) {
  if (w != NULL)
    w->user_data = data;
}

void* weft_worker_get_data(const weft_worker_t* w) {
  return w == NULL ? NULL : w->user_data;
}

void weft_worker_free(weft_worker_t* w) {
  if (w == NULL)
    return;
  if (off_host(w)) {
    (void)on_host(w, free_fn);
    return;
  }
  if (w->freed)
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
