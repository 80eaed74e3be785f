/* registry.c - names for actors, per system (Erlang's register/whereis).
 *
 * A hash table of name -> id under the system's registry lock; an
 * actor's own name is also kept in its cold part so that its end removes
 * it. A name names one actor, an actor has at most one name. Lookups
 * take the lock: a registry is for finding services, not for the path
 * of every message. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct entry_s {
  struct entry_s* next;    /* By name. */
  struct entry_s* id_next; /* By id. */
  weft_actor_id id;
  char name[];
} entry_t;

typedef struct {
  entry_t* head;
} chain_t;

typedef struct {
  chain_t* buckets; /* By name. */
  chain_t* by_id;
  size_t mask;
  size_t count;
} table_t;

static uint64_t hash(const char* s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  while (*s != '\0')
    h = (h ^ (unsigned char)*s++) * 1099511628211ull;
  return h;
}

static size_t id_hash(weft_actor_id id, size_t mask) {
  return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

int weft__registry_init(weft_actor_system_t* sys) {
  table_t* t = WEFT__FAILABLE(calloc(1, sizeof(*t)));
  if (t == NULL)
    return WEFT_ENOMEM;
  t->mask = 63;
  t->buckets = WEFT__FAILABLE(calloc(t->mask + 1, sizeof(*t->buckets)));
  t->by_id = WEFT__FAILABLE(calloc(t->mask + 1, sizeof(*t->by_id)));
  if (t->buckets == NULL || t->by_id == NULL ||
      uv_mutex_init(&sys->reg_lock) != 0) {
    free(t->buckets);
    free(t->by_id);
    free(t);
    return WEFT_ENOMEM;
  }
  sys->registry = t;
  return 0;
}

void weft__registry_free(weft_actor_system_t* sys) {
  table_t* t = sys->registry;
  size_t i;
  if (t == NULL)
    return;
  for (i = 0; i <= t->mask; i++)
    while (t->buckets[i].head != NULL) {
      entry_t* e = t->buckets[i].head;
      t->buckets[i].head = e->next;
      free(e);
    }
  free(t->buckets);
  free(t->by_id);
  free(t);
  sys->registry = NULL;
  uv_mutex_destroy(&sys->reg_lock);
}

static entry_t** find(table_t* t, const char* name) {
  entry_t** pp = &t->buckets[hash(name) & t->mask].head;
  while (*pp != NULL && strcmp((*pp)->name, name) != 0)
    pp = &(*pp)->next;
  return pp;
}

static entry_t** find_id(table_t* t, weft_actor_id id) {
  entry_t** pp = &t->by_id[id_hash(id, t->mask)].head;
  while (*pp != NULL && (*pp)->id != id)
    pp = &(*pp)->id_next;
  return pp;
}

static void grow(table_t* t) {
  size_t n = (t->mask + 1) * 2, i;
  chain_t* b = WEFT__FAILABLE(calloc(n, sizeof(*b)));
  chain_t* d = WEFT__FAILABLE(calloc(n, sizeof(*d)));
  if (b == NULL || d == NULL) {
    free(b);
    free(d);
    return; /* Longer chains; still correct. */
  }
  for (i = 0; i <= t->mask; i++)
    while (t->buckets[i].head != NULL) {
      entry_t* e = t->buckets[i].head;
      t->buckets[i].head = e->next;
      e->next = b[hash(e->name) & (n - 1)].head;
      b[hash(e->name) & (n - 1)].head = e;
      e->id_next = d[id_hash(e->id, n - 1)].head;
      d[id_hash(e->id, n - 1)].head = e;
    }
  free(t->buckets);
  free(t->by_id);
  t->buckets = b;
  t->by_id = d;
  t->mask = n - 1;
}

/* Unlink `e` from both chains. Under the lock. */
static void unlink_entry(table_t* t, entry_t* e) {
  entry_t** pp = find(t, e->name);
  entry_t** ip = find_id(t, e->id);
  if (*pp == e)
    *pp = e->next;
  if (*ip == e)
    *ip = e->id_next;
  t->count--;
}

int weft_actor_register(weft_actor_system_t* sys, const char* name,
                        weft_actor_id id) {
  table_t* t;
  entry_t** pp;
  entry_t* e;
  weft_actor_t* a;
  size_t len;
  int err = 0;
  if (sys == NULL || name == NULL || name[0] == '\0')
    return WEFT_EINVAL;
  len = strlen(name);
  e = WEFT__FAILABLE(malloc(sizeof(*e) + len + 1));
  if (e == NULL)
    return WEFT_ENOMEM;
  memcpy(e->name, name, len + 1);
  e->id = id;
  /* Held while we register, so its end (which drops its name) comes
   * after: the slot's NAMED bit tells the end to look. */
  a = weft__slot_enter(id);
  if (a == NULL) {
    free(e);
    return WEFT_EDEADACTOR;
  }
  uv_mutex_lock(&sys->reg_lock);
  t = sys->registry;
  pp = find(t, name);
  if (a->sys != sys) {
    err = WEFT_EINVAL;
  } else if (*pp != NULL) {
    err = WEFT_EEXIST;
  } else if (*find_id(t, id) != NULL) {
    err = WEFT_EINVAL; /* One name per actor. */
  } else {
    e->next = NULL;
    *pp = e;
    e->id_next = NULL;
    *find_id(t, id) = e;
    if (++t->count > 2 * (t->mask + 1))
      grow(t);
    weft__slot_mark_named(id);
    e = NULL;
  }
  uv_mutex_unlock(&sys->reg_lock);
  weft__slot_leave(id);
  free(e);
  return err;
}

weft_actor_id weft_actor_whereis(weft_actor_system_t* sys, const char* name) {
  weft_actor_id id = 0;
  entry_t** pp;
  if (sys == NULL || name == NULL)
    return 0;
  uv_mutex_lock(&sys->reg_lock);
  pp = find(sys->registry, name);
  if (*pp != NULL)
    id = (*pp)->id;
  uv_mutex_unlock(&sys->reg_lock);
  return id;
}

int weft_actor_unregister(weft_actor_system_t* sys, const char* name) {
  table_t* t;
  entry_t** pp;
  entry_t* e = NULL;
  if (sys == NULL || name == NULL)
    return WEFT_EINVAL;
  uv_mutex_lock(&sys->reg_lock);
  t = sys->registry;
  pp = find(t, name);
  if (*pp != NULL) {
    e = *pp;
    unlink_entry(t, e);
  }
  uv_mutex_unlock(&sys->reg_lock);
  free(e);
  return e != NULL ? 0 : WEFT_ENOENT;
}

void weft__registry_drop_id(weft_actor_system_t* sys, weft_actor_id id) {
  table_t* t;
  entry_t* e;
  uv_mutex_lock(&sys->reg_lock);
  t = sys->registry;
  e = *find_id(t, id);
  if (e != NULL)
    unlink_entry(t, e);
  uv_mutex_unlock(&sys->reg_lock);
  free(e);
}
