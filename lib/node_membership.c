/* node_membership.c - who else is in a node's cluster (weft/node.h's
 * NODE_UP, NODE_DOWN and weft_node_is_up): the heartbeats on
 * weft.<c>.presence.<n>, the table of nodes seen, down_after timing and
 * the slow-consumer counts heartbeats carry (docs/node.md).
 *
 * Below node.c: it reports what it sees upward through the callback it
 * was given (node.c posts the events, fails calls to a node gone, and
 * publishes the heartbeats this file writes). */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "node_internal.h"

struct weft__node_member_s {
  weft__node_member_t* next;
  uint64_t instance;
  uint64_t slow;    /* Its slow-consumer drops, as its last heartbeat said. */
  uint64_t last_ms; /* When its last heartbeat came. */
  char name[WEFT__WIRE_NAME_MAX + 1];
};

void weft__node_members_init(weft__node_members_t* ms,
                             const char* cluster,
                             const char* self,
                             uint64_t down_after_ms,
                             weft__node_members_cb report,
                             void* ctx) {
  (void)snprintf(ms->presence, sizeof(ms->presence), "weft.%s.presence.",
                 cluster);
  ms->presence_len = strlen(ms->presence);
  pthread_mutex_init(&ms->lock, NULL); /* Cannot fail on Linux. */
  memcpy(ms->self, self, strlen(self) + 1);
  if (uv_random(NULL, NULL, &ms->instance, sizeof(ms->instance), 0, NULL) != 0)
    ms->instance = uv_hrtime() ^ (uint64_t)(uintptr_t)ms;
  ms->down_after_ms = down_after_ms;
  ms->report = report;
  ms->ctx = ctx;
}

void weft__node_members_free(weft__node_members_t* ms) {
  while (ms->list != NULL) {
    weft__node_member_t* m = ms->list;
    ms->list = m->next;
    weft__xfree(m);
  }
  pthread_mutex_destroy(&ms->lock);
}

void weft__node_members_beat(const weft__node_members_t* ms,
                             bool leaving,
                             uint64_t slow,
                             char* subject,
                             size_t subject_size,
                             unsigned char* b) {
  weft__wire_beat_t w = {ms->instance, leaving, slow};
  weft__wire_beat(&w, b);
  (void)snprintf(subject, subject_size, "%s%s", ms->presence, ms->self);
}

/* A new node or a new instance of one is up (and the old instance down);
 * a leaving one is down. A member whose slow-consumer count rose since
 * its last heartbeat dropped messages (some may be ours). */
int weft__node_members_heard(weft__node_members_t* ms,
                             const weft__nats_msg_t* nm) {
  const char* name = nm->subject + ms->presence_len;
  weft__node_member_t **pp, *m;
  weft__wire_beat_t w;
  bool up = false, down = false, slow = false;
  if (strlen(nm->subject) <= ms->presence_len || !weft__wire_name_ok(name) ||
      weft__wire_read_beat(nm->data, nm->len, &w) != 0)
    return WEFT_EINVAL;
  if (strcmp(name, ms->self) == 0 && w.instance == ms->instance)
    return 0; /* Our own. */
  pthread_mutex_lock(&ms->lock);
  pp = &ms->list;
  while (*pp != NULL && strcmp((*pp)->name, name) != 0)
    pp = &(*pp)->next;
  m = *pp;
  if (m != NULL && (w.leaving || m->instance != w.instance)) {
    if (w.leaving && m->instance != w.instance) {
      m = NULL; /* An old instance's goodbye: the new one stays. */
    } else {
      *pp = m->next;
      down = true;
      if (!w.leaving) {
        m->instance = w.instance; /* Restarted: down, then up again. */
        m->slow = w.slow;
        m->next = ms->list;
        ms->list = m;
        up = true;
      } else {
        weft__xfree(m);
        m = NULL;
      }
    }
  } else if (m == NULL && !w.leaving) {
    m = weft__xzalloc(sizeof(*m));
    if (m != NULL) {
      memcpy(m->name, name, strlen(name) + 1);
      m->instance = w.instance;
      m->slow = w.slow;
      m->next = ms->list;
      ms->list = m;
      up = true;
    }
  } else if (m != NULL && w.slow > m->slow) {
    m->slow = w.slow;
    slow = true;
  }
  if (m != NULL)
    m->last_ms = weft__now_ms();
  pthread_mutex_unlock(&ms->lock);
  if (down)
    ms->report(ms->ctx, WEFT_NODE_DOWN, name);
  if (up)
    ms->report(ms->ctx, WEFT_NODE_UP, name);
  if (slow)
    ms->report(ms->ctx, WEFT_NODE_ERROR, name);
  return 0;
}

void weft__node_members_check(weft__node_members_t* ms) {
  for (;;) {
    weft__node_member_t **pp, *gone = NULL;
    uint64_t now;
    pthread_mutex_lock(&ms->lock);
    /* Read under the lock: a heartbeat stamped after a clock read made
     * outside it would be "in the future" and wrap the difference (a node
     * seen down as it came up). */
    now = weft__now_ms();
    for (pp = &ms->list; *pp != NULL; pp = &(*pp)->next) {
      if (now > (*pp)->last_ms && now - (*pp)->last_ms > ms->down_after_ms) {
        gone = *pp;
        *pp = gone->next;
        break;
      }
    }
    pthread_mutex_unlock(&ms->lock);
    if (gone == NULL)
      return;
    ms->report(ms->ctx, WEFT_NODE_DOWN, gone->name);
    weft__xfree(gone);
  }
}

bool weft__node_members_has(weft__node_members_t* ms, const char* name) {
  weft__node_member_t* m;
  bool up = false;
  pthread_mutex_lock(&ms->lock);
  for (m = ms->list; m != NULL; m = m->next) {
    if (strcmp(m->name, name) == 0) {
      up = true;
      break;
    }
  }
  pthread_mutex_unlock(&ms->lock);
  return up;
}
