/* link.c - links, monitors and exit signals (Erlang's model).
 *
 * Every relation is kept by the actors themselves, each in its own cold
 * part (internal.h), changed only in its own turn: a link is an entry on
 * both sides, a monitor an entry in the watcher (its ref) and in the
 * target (who watches, with the ref). The other side is told by a signal
 * message in its mailbox (LINK, UNLINK, MONITOR, DEMONITOR), handled by
 * weft before the behaviour would see it. An actor that ends tells its
 * links (EXIT) and watchers (DOWN), and answers the LINK and MONITOR
 * signals still queued for it the same way, so no relation is lost to
 * the race between asking and ending. A signal that cannot even be queued
 * (the actor ended before) is answered on the spot with reason
 * WEFT_EDEADACTOR (Erlang's noproc). Values: ["EXIT", from, reason] and
 * ["DOWN", from, ref, reason]. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Monitor refs: never 0, never reused in the process. */
static _Atomic uint64_t next_ref = 1;

/* ---- small sets in the cold part ----------------------------------------- */

static int ids_add(weft_actor_id** v, size_t* n, size_t* cap, weft_actor_id id) {
  size_t i;
  for (i = 0; i < *n; i++)
    if ((*v)[i] == id)
      return 0;
  if (*n == *cap) {
    size_t c = *cap == 0 ? 4 : *cap * 2;
    weft_actor_id* p = WEFT__FAILABLE(realloc(*v, c * sizeof(*p)));
    if (p == NULL)
      return WEFT_ENOMEM;
    *v = p;
    *cap = c;
  }
  (*v)[(*n)++] = id;
  return 0;
}

static bool ids_remove(weft_actor_id* v, size_t* n, weft_actor_id id) {
  size_t i;
  for (i = 0; i < *n; i++)
    if (v[i] == id) {
      v[i] = v[--*n];
      return true;
    }
  return false;
}

int weft__link_add(weft_actor_t* a, weft_actor_id other) {
  weft__actor_x_t* x = weft__actor_x(a);
  if (x == NULL)
    return WEFT_ENOMEM;
  return ids_add(&x->links, &x->nlinks, &x->caplinks, other);
}

/* Monitors we hold: pairs [ref, target] in `monitors`. */
static int monitors_add(weft__actor_x_t* x, uint64_t ref, weft_actor_id t) {
  if (x->nmonitors + 2 > x->capmonitors) {
    size_t c = x->capmonitors == 0 ? 4 : x->capmonitors * 2;
    uint64_t* p = WEFT__FAILABLE(realloc(x->monitors, c * sizeof(*p)));
    if (p == NULL)
      return WEFT_ENOMEM;
    x->monitors = p;
    x->capmonitors = c;
  }
  x->monitors[x->nmonitors++] = ref;
  x->monitors[x->nmonitors++] = t;
  return 0;
}

/* Remove our monitor `ref`: whether we had it, and its target in `*t`.
 * The target may be 0: a remote watcher's record (weft__link_monitor_
 * record) made after its target ended and its name went, whose DOWN is on
 * its way all the same and must not be dropped as unknown. */
static bool monitors_remove(weft__actor_x_t* x, uint64_t ref,
                            weft_actor_id* t) {
  size_t i;
  *t = 0;
  if (x == NULL)
    return false;
  for (i = 0; i < x->nmonitors; i += 2)
    if (x->monitors[i] == ref) {
      *t = x->monitors[i + 1];
      x->monitors[i] = x->monitors[x->nmonitors - 2];
      x->monitors[i + 1] = x->monitors[x->nmonitors - 1];
      x->nmonitors -= 2;
      return true;
    }
  return false;
}

static int watchers_add(weft__actor_x_t* x, weft_actor_id who, uint64_t ref) {
  if (x->nwatchers == x->capwatchers) {
    size_t c = x->capwatchers == 0 ? 4 : x->capwatchers * 2;
    weft__watch_t* p = WEFT__FAILABLE(realloc(x->watchers, c * sizeof(*p)));
    if (p == NULL)
      return WEFT_ENOMEM;
    x->watchers = p;
    x->capwatchers = c;
  }
  x->watchers[x->nwatchers].who = who;
  x->watchers[x->nwatchers].ref = ref;
  x->nwatchers++;
  return 0;
}

/* ---- signal messages ------------------------------------------------------- */

/* Send `to` a signal whose value is [name, from, (ref,) reason]: EXIT
 * (["EXIT", from, reason], `tag` EXIT or EXIT_SENT, aux `from`) or DOWN
 * (["DOWN", from, ref, reason], aux `ref`). */
static int send_signal(weft_actor_id to, int tag, weft_actor_id from,
                       uint64_t ref, int reason) {
  bool down = tag == WEFT__TAG_DOWN;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int err;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, down ? 4 : 3);
  msgpack_pack_str_with_body(&pk, down ? "DOWN" : "EXIT", 4);
  msgpack_pack_uint64(&pk, from);
  if (down)
    msgpack_pack_uint64(&pk, ref);
  msgpack_pack_int(&pk, reason);
  err = sb.data == NULL ? WEFT_ENOMEM
                        : weft__actor_tell(to, tag, down ? ref : from, sb.data,
                                           sb.size);
  msgpack_sbuffer_destroy(&sb);
  return err;
}

static int send_exit(weft_actor_id to, int tag, weft_actor_id from,
                     int reason) {
  return send_signal(to, tag, from, 0, reason);
}

static int send_down(weft_actor_id to, uint64_t ref, weft_actor_id from,
                     int reason) {
  return send_signal(to, WEFT__TAG_DOWN, from, ref, reason);
}

/* The ref a MONITOR signal carries: [ref] as msgpack. */
static uint64_t monitor_ref(const weft_msg_t* m) {
  msgpack_unpacked u;
  size_t off = 0;
  uint64_t ref = 0;
  msgpack_unpacked_init(&u);
  if (msgpack_unpack_next(&u, m->data, m->len, &off) ==
          MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 1 &&
      u.data.via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    ref = u.data.via.array.ptr[0].via.u64;
  msgpack_unpacked_destroy(&u);
  return ref;
}

/* The reason an EXIT carries (["EXIT", from, reason]). */
static int exit_reason(const weft_msg_t* m) {
  msgpack_unpacked u;
  size_t off = 0;
  int reason = 0;
  msgpack_unpacked_init(&u);
  if (msgpack_unpack_next(&u, m->data, m->len, &off) ==
          MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 3) {
    const msgpack_object* r = &u.data.via.array.ptr[2];
    if (r->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
      reason = (int)r->via.i64;
    else if (r->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      reason = (int)r->via.u64;
  }
  msgpack_unpacked_destroy(&u);
  return reason;
}

static void end_with(weft_actor_t* a, int reason) {
  if (!(a->flags & WEFT__A_STOP)) {
    a->flags |= WEFT__A_STOP;
    a->reason = reason;
  }
}

bool weft__link_signal(weft_actor_t* a, weft_msg_t* m, bool* deliver) {
  weft__actor_x_t* x;
  *deliver = false;
  switch (m->tag) {
    case WEFT__TAG_LINK:
      x = weft__actor_x(a);
      if (x == NULL ||
          ids_add(&x->links, &x->nlinks, &x->caplinks, m->aux) != 0) {
        /* No memory for the link: the linker hears we are gone rather
         * than never hearing. */
        send_exit(m->aux, WEFT__TAG_EXIT, a->id, WEFT_ENOMEM);
      }
      weft_msg_free(m);
      return true;
    case WEFT__TAG_UNLINK:
      if (a->x != NULL)
        ids_remove(a->x->links, &a->x->nlinks, m->aux);
      weft_msg_free(m);
      return true;
    case WEFT__TAG_MONITOR: {
      uint64_t ref = monitor_ref(m);
      x = weft__actor_x(a);
      if (x == NULL || watchers_add(x, m->aux, ref) != 0)
        send_down(m->aux, ref, a->id, WEFT_ENOMEM);
      weft_msg_free(m);
      return true;
    }
    case WEFT__TAG_DEMONITOR:
      if (a->x != NULL) {
        size_t i;
        for (i = 0; i < a->x->nwatchers; i++)
          if (a->x->watchers[i].ref == m->aux) {
            a->x->watchers[i] = a->x->watchers[--a->x->nwatchers];
            break;
          }
      }
      weft_msg_free(m);
      return true;
    case WEFT__TAG_DOWN: {
      /* Only while the monitor stands: a demonitor drops a DOWN already
       * queued. */
      weft_actor_id t;
      if (!monitors_remove(a->x, m->aux, &t)) {
        weft_msg_free(m);
        return true;
      }
      *deliver = true;
      return true;
    }
    case WEFT__TAG_EXIT:
    case WEFT__TAG_EXIT_SENT: {
      int reason = exit_reason(m);
      if (m->tag == WEFT__TAG_EXIT) {
        /* From a link: only while linked (an unlink drops it). */
        if (a->x == NULL || !ids_remove(a->x->links, &a->x->nlinks, m->aux)) {
          weft_msg_free(m);
          return true;
        }
      } else if (reason == WEFT_EKILLED) {
        weft_msg_free(m);
        end_with(a, WEFT_EKILLED); /* Cannot be trapped. */
        return true;
      }
      if (a->flags & WEFT__A_TRAP) {
        *deliver = true;
        return true;
      }
      weft_msg_free(m);
      if (reason != 0)
        end_with(a, reason);
      return true;
    }
    default:
      return false;
  }
}

void weft__link_end(weft_actor_t* a, int reason) {
  weft__actor_x_t* x = a->x;
  size_t i;
  if (x == NULL)
    return;
  for (i = 0; i < x->nlinks; i++)
    send_exit(x->links[i], WEFT__TAG_EXIT, a->id, reason);
  for (i = 0; i < x->nwatchers; i++)
    send_down(x->watchers[i].who, x->watchers[i].ref, a->id, reason);
  /* Monitors we held: tell their targets, so they do not keep us. */
  for (i = 0; i + 1 < x->nmonitors; i += 2)
    weft__actor_tell(x->monitors[i + 1], WEFT__TAG_DEMONITOR, x->monitors[i], NULL,
              0);
}

bool weft__link_queued_at_end(weft_actor_t* a, weft_msg_t* m, int reason) {
  switch (m->tag) {
    case WEFT__TAG_LINK:
      /* Linked before we ended, from the linker's view. */
      send_exit(m->aux, WEFT__TAG_EXIT, a->id, reason);
      weft_msg_free(m);
      return true;
    case WEFT__TAG_MONITOR:
      send_down(m->aux, monitor_ref(m), a->id, reason);
      weft_msg_free(m);
      return true;
    default:
      return false;
  }
}

/* ---- the public calls ----------------------------------------------------- */

int weft_actor_link(weft_actor_t* self, weft_actor_id other) {
  weft__actor_x_t* x;
  int err;
  if (self == NULL || other == self->id || other == 0)
    return WEFT_EINVAL;
  x = weft__actor_x(self);
  if (x == NULL)
    return WEFT_ENOMEM;
  err = ids_add(&x->links, &x->nlinks, &x->caplinks, other);
  if (err != 0)
    return err;
  err = weft__actor_tell(other, WEFT__TAG_LINK, self->id, NULL, 0);
  if (err == WEFT_EDEADACTOR)
    /* Gone already: its EXIT comes to us now, as if it ended then. */
    return send_exit(self->id, WEFT__TAG_EXIT, other, WEFT_EDEADACTOR) ==
                   WEFT_ENOMEM
               ? WEFT_ENOMEM
               : 0;
  if (err != 0)
    ids_remove(x->links, &x->nlinks, other);
  return err;
}

int weft_actor_unlink(weft_actor_t* self, weft_actor_id other) {
  if (self == NULL)
    return WEFT_EINVAL;
  if (self->x == NULL || !ids_remove(self->x->links, &self->x->nlinks, other))
    return 0;
  weft__actor_tell(other, WEFT__TAG_UNLINK, self->id, NULL, 0);
  return 0;
}

int weft_actor_monitor(weft_actor_t* self, weft_actor_id target,
                       uint64_t* ref) {
  weft__actor_x_t* x;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  uint64_t r;
  int err;
  if (self == NULL || ref == NULL)
    return WEFT_EINVAL;
  *ref = 0;
  x = weft__actor_x(self);
  if (x == NULL)
    return WEFT_ENOMEM;
  r = atomic_fetch_add_explicit(&next_ref, 1, memory_order_relaxed);
  err = monitors_add(x, r, target);
  if (err != 0)
    return err;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 1);
  msgpack_pack_uint64(&pk, r);
  err = sb.data == NULL ? WEFT_ENOMEM
                        : weft__actor_tell(target, WEFT__TAG_MONITOR, self->id,
                                    sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  if (err == WEFT_EDEADACTOR)
    err = send_down(self->id, r, target, WEFT_EDEADACTOR);
  if (err != 0) {
    weft_actor_id t;
    (void)monitors_remove(x, r, &t);
    return err;
  }
  *ref = r;
  return 0;
}

/* A monitor made for a remote watcher (remote.c), in two steps so that
 * its MONITOR signal takes its place among the pushes of the thread that
 * reads the network: a fresh ref; the signal to `target` (a DOWN with
 * WEFT_EDEADACTOR to `watcher` if it is gone); and, in the watcher's turn
 * (before that DOWN can come: it is queued behind), its record. By the
 * watcher's turn a target named in the envelope may have ended and lost
 * its name: the record then has target 0, and still takes its DOWN. */
uint64_t weft__link_new_ref(void) {
  return atomic_fetch_add_explicit(&next_ref, 1, memory_order_relaxed);
}

void weft__link_monitor_tell(weft_actor_id watcher, weft_actor_id target,
                             uint64_t ref) {
  unsigned char b[10];
  msgpack_sbuffer sb = {0, (char*)b, sizeof(b)};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 1);
  msgpack_pack_uint64(&pk, ref); /* 10 bytes at most: no realloc. */
  if (weft__actor_tell(target, WEFT__TAG_MONITOR, watcher, sb.data,
                       sb.size) == WEFT_EDEADACTOR)
    send_down(watcher, ref, target, WEFT_EDEADACTOR);
}

int weft__link_monitor_record(weft_actor_t* a, uint64_t ref,
                              weft_actor_id target) {
  weft__actor_x_t* x = weft__actor_x(a);
  return x == NULL ? WEFT_ENOMEM : monitors_add(x, ref, target);
}

int weft_actor_demonitor(weft_actor_t* self, uint64_t ref) {
  weft_actor_id t;
  if (self == NULL || ref == 0)
    return WEFT_EINVAL;
  if (!monitors_remove(self->x, ref, &t))
    return WEFT_EINVAL;
  if (t != 0) /* 0: a remote watcher's record whose target had gone. */
    weft__actor_tell(t, WEFT__TAG_DEMONITOR, ref, NULL, 0);
  return 0;
}

int weft_actor_trap_exits(weft_actor_t* self, bool on) {
  if (self == NULL)
    return WEFT_EINVAL;
  if (on)
    self->flags |= WEFT__A_TRAP;
  else
    self->flags &= (uint8_t)~WEFT__A_TRAP;
  return 0;
}

int weft_actor_exit(weft_actor_id to, int reason) {
  weft_actor_t* self = weft__actor_current();
  return send_exit(to, WEFT__TAG_EXIT_SENT, self != NULL ? self->id : 0,
                   reason);
}

weft_signal_kind weft_actor_signal(const weft_msg_t* msg, weft_signal_t* out) {
  weft_signal_t s;
  const msgpack_object* o;
  memset(&s, 0, sizeof(s));
  if (msg == NULL || (msg->tag != WEFT__TAG_DOWN &&
                      msg->tag != WEFT__TAG_EXIT &&
                      msg->tag != WEFT__TAG_EXIT_SENT)) {
    if (out != NULL)
      *out = s;
    return WEFT_SIGNAL_NONE;
  }
  o = weft_msg_object((weft_msg_t*)msg);
  if (msg->tag == WEFT__TAG_DOWN) {
    s.kind = WEFT_SIGNAL_DOWN;
    s.ref = msg->aux;
    if (o != NULL && o->type == MSGPACK_OBJECT_ARRAY &&
        o->via.array.size == 4) {
      s.from = o->via.array.ptr[1].via.u64;
      s.reason = o->via.array.ptr[3].type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                     ? (int)o->via.array.ptr[3].via.i64
                     : (int)o->via.array.ptr[3].via.u64;
    }
  } else {
    s.kind = WEFT_SIGNAL_EXIT;
    s.from = msg->aux;
    if (o != NULL && o->type == MSGPACK_OBJECT_ARRAY &&
        o->via.array.size == 3)
      s.reason = o->via.array.ptr[2].type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                     ? (int)o->via.array.ptr[2].via.i64
                     : (int)o->via.array.ptr[2].via.u64;
  }
  if (out != NULL)
    *out = s;
  return s.kind;
}
