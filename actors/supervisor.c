/* supervisor.c - supervisors as actors (weft/supervisor.h).
 *
 * A supervisor is an actor that traps exits. Its state: a copy of the
 * child specs, each child's state (DOWN: to be started; RUNNING; STOPPING:
 * killed for a restart, waiting for its DOWN; DONE: not to be started
 * again), and the times of its recent restarts (a ring of max_restarts + 1
 * stamps: the intensity is passed when the oldest of them lies within the
 * period). Everything happens in its own turns: a child's EXIT decides,
 * DOWNs of stopping children let the next starts go, and starting never
 * waits. Its first turn (a message weft sends it at spawn) starts the
 * children in order. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { C_DOWN, C_RUNNING, C_STOPPING, C_DONE };

typedef struct {
  weft_child_spec_t spec;
  int st;
  weft_actor_id id;
  uint64_t ref; /* STOPPING: the monitor that says it is gone. */
} child_t;

typedef struct {
  weft_sup_strategy strategy;
  unsigned max_restarts;
  uint64_t period_ns;
  child_t* ch;
  size_t n;
  uint64_t* stamps; /* max_restarts + 1 restart times, a ring. */
  size_t next_stamp;
  uint64_t restarts;
  bool started;
  weft_actor_id self;
} sup_t;

static void kill_child(weft_actor_t* self, child_t* c) {
  (void)weft_actor_unlink(self, c->id);
  (void)weft_actor_exit(c->id, WEFT_EKILLED);
}

/* Start child `c`, linked to the supervisor. */
static int start_child(weft_actor_t* self, child_t* c) {
  weft_actor_system_t* sys = weft_actor_system(self);
  const weft_child_spec_t* sp = &c->spec;
  weft_actor_opts_t o;
  int err;
  memset(&o, 0, sizeof(o));
  o.link = weft_actor_self(self);
  if (sp->supervisor != NULL) {
    err = weft_supervisor_spawn(sys, sp->supervisor, &o, &c->id);
  } else if (sp->worker_entry != NULL) {
    err = weft__worker_child_spawn(sys, sp, o.link, &c->id);
  } else {
    void* state = sp->init != NULL ? sp->init(sp->arg) : sp->arg;
    if (sp->init != NULL && state == NULL)
      return WEFT_ENOMEM;
    o.on_stop = sp->on_stop;
    o.flags = sp->flags;
    err = weft_actor_spawn(sys, sp->behaviour, state, &o, &c->id);
    if (err != 0 && sp->init != NULL && sp->on_stop != NULL)
      sp->on_stop(state, err); /* Made for this start: give it back. */
  }
  if (err == 0)
    c->st = C_RUNNING;
  return err;
}

/* End every running child (reverse start order) and the supervisor. */
static int sup_shutdown(weft_actor_t* self, sup_t* s, int reason) {
  size_t i;
  for (i = s->n; i-- > 0;)
    if (s->ch[i].st == C_RUNNING || s->ch[i].st == C_STOPPING) {
      kill_child(self, &s->ch[i]);
      s->ch[i].st = C_DONE;
    }
  return weft_actor_stop(self, reason);
}

/* Start every child that is DOWN, in order, once none is STOPPING. */
static int start_pending(weft_actor_t* self, sup_t* s) {
  size_t i;
  for (i = 0; i < s->n; i++)
    if (s->ch[i].st == C_STOPPING)
      return 0;
  for (i = 0; i < s->n; i++)
    if (s->ch[i].st == C_DOWN) {
      int err = start_child(self, &s->ch[i]);
      if (err != 0)
        return sup_shutdown(self, s, err);
    }
  return 0;
}

/* Kill children [from, to) that run, for a restart (reverse order). */
static int stop_range(weft_actor_t* self, sup_t* s, size_t from, size_t to) {
  size_t i;
  for (i = to; i-- > from;) {
    child_t* c = &s->ch[i];
    int err;
    if (c->st != C_RUNNING)
      continue;
    (void)weft_actor_unlink(self, c->id);
    err = weft_actor_monitor(self, c->id, &c->ref);
    if (err != 0)
      return sup_shutdown(self, s, err);
    (void)weft_actor_exit(c->id, WEFT_EKILLED);
    c->st = C_STOPPING;
  }
  return 0;
}

/* One more restart now: false when that passes the intensity. */
static bool count_restart(sup_t* s) {
  uint64_t now = uv_hrtime();
  size_t ring = (size_t)s->max_restarts + 1;
  uint64_t oldest;
  s->restarts++;
  s->stamps[s->next_stamp] = now;
  s->next_stamp = (s->next_stamp + 1) % ring;
  if (s->restarts < ring)
    return true;
  /* The stamp about to be overwritten is the oldest of the last
   * max_restarts + 1: all of them within the period is one too many. */
  oldest = s->stamps[s->next_stamp];
  return now - oldest > s->period_ns;
}

static int child_ended(weft_actor_t* self, sup_t* s, size_t i, int reason) {
  child_t* c = &s->ch[i];
  bool restart = c->spec.restart == WEFT_RESTART_PERMANENT ||
                 (c->spec.restart == WEFT_RESTART_TRANSIENT && reason != 0);
  int err = 0;
  c->id = 0;
  if (!restart) {
    c->st = C_DONE;
    return 0;
  }
  c->st = C_DOWN;
  if (!count_restart(s))
    return sup_shutdown(self, s, WEFT_ERESTARTS);
  if (s->strategy == WEFT_ONE_FOR_ALL)
    err = stop_range(self, s, 0, s->n);
  else if (s->strategy == WEFT_REST_FOR_ONE)
    err = stop_range(self, s, i + 1, s->n);
  if (err != 0)
    return err;
  return start_pending(self, s);
}

static int answer(sup_t* s, weft_msg_t* msg) {
  const char* what;
  size_t len, i;
  weft_msg_t* out;
  weft_reply_t* r;
  int err;
  if (weft_msg_read(msg, "[s]", &what, &len) != 0 ||
      weft_msg_take_reply(msg, &r) != 0)
    return 0;
  err = weft_msg_new(&out);
  if (err != 0)
    return weft_reply_error(r, err);
  if (len == 14 && memcmp(what, "which_children", 14) == 0) {
    msgpack_packer* pk = weft_msg_packer(out);
    msgpack_pack_array(pk, (uint32_t)s->n);
    for (i = 0; i < s->n; i++)
      msgpack_pack_uint64(pk, s->ch[i].st == C_RUNNING ? s->ch[i].id : 0);
  } else if (len == 14 && memcmp(what, "count_restarts", 14) == 0) {
    msgpack_pack_uint64(weft_msg_packer(out), s->restarts);
  } else {
    weft_msg_free(out);
    return weft_reply_error(r, WEFT_EINVAL);
  }
  /* An error reaches the asker as its outcome; the supervisor goes on. */
  (void)weft_reply_send_msg(r, &out);
  weft_msg_free(out);
  return 0;
}

static int supervise(weft_actor_t* self, void* state, weft_msg_t* msg) {
  sup_t* s = state;
  weft_signal_t sig;
  size_t i;
  if (!s->started) {
    s->started = true;
    s->self = weft_actor_self(self);
    for (i = 0; i < s->n; i++) {
      int err = start_child(self, &s->ch[i]);
      if (err != 0)
        return sup_shutdown(self, s, err);
    }
  }
  switch (weft_actor_signal(msg, &sig)) {
    case WEFT_SIGNAL_EXIT:
      for (i = 0; i < s->n; i++)
        if (s->ch[i].st == C_RUNNING && s->ch[i].id == sig.from)
          return child_ended(self, s, i, sig.reason);
      /* Not a child: our parent link, or weft_actor_exit(). */
      if (sig.reason != 0)
        return sup_shutdown(self, s, sig.reason);
      return 0;
    case WEFT_SIGNAL_DOWN:
      for (i = 0; i < s->n; i++)
        if (s->ch[i].st == C_STOPPING && s->ch[i].ref == sig.ref) {
          s->ch[i].st = s->ch[i].spec.restart == WEFT_RESTART_TEMPORARY
                            ? C_DONE
                            : C_DOWN;
          s->ch[i].id = 0;
          return start_pending(self, s);
        }
      return 0;
    default:
      if (weft_msg_is_request(msg))
        return answer(s, msg);
      return 0;
  }
}

static void sup_free(sup_t* s) {
  size_t i;
  for (i = 0; i < s->n; i++)
    free((char*)s->ch[i].spec.name);
  free(s->ch);
  free(s->stamps);
  free(s);
}

/* The supervisor ended (any reason): its children go with it. Links take
 * care of an abnormal end; a normal one (or one before they were linked)
 * needs the kill. */
static void sup_stop(void* state, int reason) {
  sup_t* s = state;
  size_t i;
  (void)reason;
  for (i = 0; i < s->n; i++)
    if (s->ch[i].st == C_RUNNING || s->ch[i].st == C_STOPPING)
      (void)weft_actor_exit(s->ch[i].id, WEFT_EKILLED);
  sup_free(s);
}

static bool spec_ok(const weft_child_spec_t* c) {
  int kinds = (c->behaviour != NULL) + (c->supervisor != NULL) +
              (c->worker_entry != NULL);
  return kinds == 1 && (unsigned)c->restart <= WEFT_RESTART_TEMPORARY;
}

int weft_supervisor_spawn(weft_actor_system_t* sys,
                          const weft_supervisor_opts_t* opts,
                          const weft_actor_opts_t* aopts,
                          weft_actor_id* out) {
  weft_actor_opts_t o;
  sup_t* s;
  size_t i;
  int err;
  if (out != NULL)
    *out = 0;
  if (sys == NULL || opts == NULL ||
      (unsigned)opts->strategy > WEFT_REST_FOR_ONE ||
      (opts->nchildren > 0 && opts->children == NULL))
    return WEFT_EINVAL;
  for (i = 0; i < opts->nchildren; i++)
    if (!spec_ok(&opts->children[i]))
      return WEFT_EINVAL;
  s = WEFT__FAILABLE(calloc(1, sizeof(*s)));
  if (s == NULL)
    return WEFT_ENOMEM;
  s->strategy = opts->strategy;
  s->max_restarts = opts->max_restarts != 0 ? opts->max_restarts : 3;
  s->period_ns = (opts->period_ms != 0 ? opts->period_ms : 5000) * 1000000u;
  s->n = opts->nchildren;
  s->ch = WEFT__FAILABLE(calloc(s->n + 1, sizeof(*s->ch)));
  s->stamps =
      WEFT__FAILABLE(calloc((size_t)s->max_restarts + 1, sizeof(*s->stamps)));
  if (s->ch == NULL || s->stamps == NULL) {
    sup_free(s);
    return WEFT_ENOMEM;
  }
  for (i = 0; i < s->n; i++) {
    s->ch[i].spec = opts->children[i];
    s->ch[i].spec.name = NULL;
    if (opts->children[i].name != NULL &&
        (s->ch[i].spec.name = WEFT__FAILABLE(strdup(opts->children[i].name))) ==
            NULL) {
      sup_free(s);
      return WEFT_ENOMEM;
    }
    s->ch[i].st = C_DOWN;
  }
  if (aopts != NULL)
    o = *aopts;
  else
    memset(&o, 0, sizeof(o));
  o.flags |= WEFT_ACTOR_TRAP_EXIT;
  o.on_stop = sup_stop;
  err = weft_actor_spawn(sys, supervise, s, &o, &s->self);
  if (err != 0) {
    sup_free(s);
    return err;
  }
  if (out != NULL)
    *out = s->self;
  /* Its first turn starts the children. */
  if (weft__actor_tell(s->self, WEFT__TAG_PLAIN, 0, "\xc0", 1) != 0) {
    (void)weft_actor_exit(s->self, WEFT_EKILLED);
    return WEFT_ENOMEM;
  }
  return 0;
}

/* ---- blocking helpers ------------------------------------------------------ */

static int sup_call(weft_actor_id sup, const char* what, int64_t timeout_ms,
                    weft_msg_t** reply) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int err;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 1);
  msgpack_pack_str_with_body(&pk, what, strlen(what));
  err = sb.data == NULL
            ? WEFT_ENOMEM
            : weft_actor_call(sup, sb.data, sb.size, timeout_ms, reply);
  msgpack_sbuffer_destroy(&sb);
  return err;
}

int weft_supervisor_children(weft_actor_id sup, weft_actor_id* ids,
                             size_t cap, size_t* n, int64_t timeout_ms) {
  weft_msg_t* r = NULL;
  const msgpack_object* o;
  size_t i;
  int err;
  if (n == NULL || (ids == NULL && cap > 0))
    return WEFT_EINVAL;
  *n = 0;
  err = sup_call(sup, "which_children", timeout_ms, &r);
  if (err != 0)
    return err;
  o = weft_msg_object(r);
  if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
    weft_msg_free(r);
    return WEFT_EDECODE;
  }
  *n = o->via.array.size;
  for (i = 0; i < *n && i < cap; i++)
    ids[i] = o->via.array.ptr[i].via.u64;
  weft_msg_free(r);
  return 0;
}

int weft_supervisor_restarts(weft_actor_id sup, uint64_t* count,
                             int64_t timeout_ms) {
  weft_msg_t* r = NULL;
  const msgpack_object* o;
  int err;
  if (count == NULL)
    return WEFT_EINVAL;
  *count = 0;
  err = sup_call(sup, "count_restarts", timeout_ms, &r);
  if (err != 0)
    return err;
  o = weft_msg_object(r);
  if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    *count = o->via.u64;
  weft_msg_free(r);
  return 0;
}
