/* worker_child.c - a weft worker as a supervised child: a small actor of
 * weft's own that owns one hosted worker (weft/supervisor.h).
 *
 * The actor spawns its worker in its first turn (a message weft sends it
 * at once), so the handle is written before any event of the worker can
 * reach the actor. It traps exits. The worker's events run on weft's host
 * thread;
 * its `exit` event sends the actor an exit signal with the worker's
 * reason (its error, or its exit code), on which the actor ends with that
 * reason, so its supervisor's link fires as for any actor. Ending for any
 * other cause (the supervisor ended it) frees the worker handle, which
 * stops the worker: a hosted worker's free runs on the host thread while
 * the caller waits, so once it returns no event of the worker runs or
 * will run, and the record can go. Messages sent to the actor are posted
 * to the worker (weft_worker_post_msg(), transfers included). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
  weft_worker_t* w; /* The actor's turn (and on_stop) only. */
  weft_actor_id self;
  int error; /* From the `error` event; host thread only. */
  weft_worker_entry_cb entry;
  weft_worker_opts_t opts; /* events and user_data are ours. */
  char name[16];           /* opts.name points here. */
} wchild_t;

static void worker_failed(weft_worker_t* w, int err, const char* text) {
  wchild_t* c = weft_worker_get_data(w);
  (void)text;
  c->error = err;
}

static void worker_exited(weft_worker_t* w, int code) {
  wchild_t* c = weft_worker_get_data(w);
  int reason = c->error != 0 ? c->error : code;
  /* From outside the actors: a trapped EXIT with `reason` (0 included). */
  (void)weft_actor_exit(c->self, reason);
}

static int proxy(weft_actor_t* self, void* state, weft_msg_t* msg) {
  wchild_t* c = state;
  weft_signal_t s;
  const char* data;
  size_t len;
  if (c->w == NULL) { /* The first message: start the worker. */
    int err = weft_worker_spawn(&c->w, NULL, c->entry, &c->opts);
    return err != 0 ? err : 0;
  }
  if (weft_actor_signal(msg, &s) == WEFT_SIGNAL_EXIT)
    return weft_actor_stop(self, s.reason); /* The worker, or our parent. */
  if (weft_actor_signal(msg, NULL) != WEFT_SIGNAL_NONE)
    return 0;
  data = weft_msg_data(msg, &len);
  /* A worker that is ending refuses posts: what it would have got is
   * lost with it, as for any worker. */
  (void)weft_worker_post(c->w, data, len);
  return 0;
}

static void proxy_stop(void* state, int reason) {
  wchild_t* c = state;
  (void)reason;
  weft_worker_free(c->w); /* Stops it if it still runs; see above. */
  free(c);
}

int weft__worker_child_spawn(weft_actor_system_t* sys,
                             const weft_child_spec_t* spec,
                             weft_actor_id link,
                             weft_actor_id* out) {
  weft_actor_opts_t ao;
  wchild_t* c = WEFT__FAILABLE(calloc(1, sizeof(*c)));
  int err;
  if (c == NULL)
    return WEFT_ENOMEM;
  c->entry = spec->worker_entry;
  if (spec->worker_opts != NULL)
    c->opts = *spec->worker_opts;
  memset(&c->opts.events, 0, sizeof(c->opts.events));
  c->opts.events.error = worker_failed;
  c->opts.events.exit = worker_exited;
  c->opts.user_data = c;
  (void)snprintf(c->name, sizeof(c->name), "%s",
                 c->opts.name != NULL  ? c->opts.name
                 : spec->name != NULL ? spec->name
                                      : "weft-child");
  c->opts.name = c->name;
  memset(&ao, 0, sizeof(ao));
  ao.link = link;
  ao.flags = WEFT_ACTOR_TRAP_EXIT;
  ao.on_stop = proxy_stop;
  err = weft_actor_spawn(sys, proxy, c, &ao, &c->self);
  if (err != 0) {
    free(c);
    return err;
  }
  *out = c->self;
  /* Its first turn starts the worker. Without memory for the message the
   * actor ends at once; its supervisor sees it. */
  if (weft__actor_tell(c->self, WEFT__TAG_PLAIN, 0, "\xc0", 1) != 0)
    (void)weft_actor_exit(c->self, WEFT_EKILLED);
  return 0;
}
