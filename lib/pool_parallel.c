/* pool_parallel.c - the parallel helpers of weft/pool.h, weft_pool_for()
 * and weft_pool_map(), built on the pool's public API: each chunk (or
 * element) is one task submitted with weft_pool_submit_msg() and waited
 * for on its future. No callbacks: the calling thread may own a loop that
 * is blocked meanwhile, so a callback meant for it could never run.
 *
 * At most a window of tasks is outstanding at once (a few per thread):
 * a range split into a million chunks does not put a million tasks in the
 * queue, a full queue (WEFT_EQUEUEFULL) is waited out on the oldest task,
 * and after a failure the chunks not yet submitted never run. The futures
 * are waited for in submission order, so "the first error" is the error of
 * the lowest failing chunk among those that ran: the same in every run.
 * Chunks already submitted when one fails are not cancelled: a task is
 * settled only once its function returned, so when a helper returns no
 * chunk function is still running (a cancelled running task would settle
 * at once while its function still wrote to the caller's shared buffer). */
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "pool_internal.h"

/* Chunks per thread when the caller leaves the chunk size to us. */
#define CHUNKS_PER_THREAD 4
/* Outstanding tasks per thread, at least WINDOW_MIN in all. */
#define WINDOW_PER_THREAD 8
#define WINDOW_MIN 16

/* Threads the pool will use: the default max_threads is the number of
 * online CPUs, and the public API does not tell a pool's own maximum, so
 * take the larger of that and the workers alive now. */
static size_t pool_threads(weft_pool_t* pool) {
  weft_pool_stats_t st;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t n = cpus > 0 ? (size_t)cpus : 1;
  if (weft_pool_stats(pool, &st) == 0 && st.threads > n)
    n = st.threads;
  return n;
}

/* One parallel run: `count` items, item `i`'s argument built by `make`,
 * each successful result handed to `done` (in item order). */
typedef struct {
  weft_pool_t* pool;
  const char* name;
  size_t count;
  int (*make)(void* ctx, size_t i, weft_msg_t** out);
  int (*done)(void* ctx, size_t i, weft_task_t* t);
  void* ctx;
} run_t;

static void nap_1ms(void) {
  struct timespec ts = {0, 1000000};
  nanosleep(&ts, NULL);
}

/* One future of the window (a struct, so that the array is of records). */
typedef struct {
  weft_task_t* t;
} slot_t;

static int run_all(const run_t* r) {
  size_t window = pool_threads(r->pool) * WINDOW_PER_THREAD;
  slot_t* ring;
  size_t next = 0; /* Next item to submit. */
  size_t head = 0; /* Oldest item submitted and not yet settled. */
  int first = 0;
  if (r->count == 0)
    return 0;
  if (window < WINDOW_MIN)
    window = WINDOW_MIN;
  if (window > r->count)
    window = r->count;
  ring = weft__xzalloc(window * sizeof(*ring));
  if (ring == NULL)
    return WEFT_ENOMEM;
  for (;;) {
    /* Fill the window, unless an item failed already. */
    while (first == 0 && next < r->count && next - head < window) {
      weft_msg_t* m = NULL;
      int err = r->make(r->ctx, next, &m);
      if (err == 0)
        err = weft_pool_submit_msg(r->pool, r->name, &m, NULL, NULL,
                                   &ring[next % window].t);
      weft_msg_free(m); /* NULL once the pool took it. */
      if (err == WEFT_EQUEUEFULL) {
        /* Backpressure is waited out: on our oldest task, or, with none
         * outstanding (other submitters filled the queue), on the clock. */
        if (next == head)
          nap_1ms();
        break;
      }
      if (err != 0) {
        first = err;
        break;
      }
      next++;
    }
    if (head == next) {
      if (first != 0 || next == r->count)
        break;
      continue; /* The queue was full with nothing of ours in it. */
    }
    {
      weft_task_t* t = ring[head % window].t;
      int st;
      (void)weft_task_wait(t, -1);
      st = weft_task_status(t);
      if (st == 0 && first == 0)
        st = r->done(r->ctx, head, t);
      if (st != 0 && first == 0)
        first = st;
      weft_task_free(t);
      ring[head % window].t = NULL;
      head++;
    }
  }
  weft__xfree(ring);
  return first;
}

/* ---- parallel-for ------------------------------------------------------- */

typedef struct {
  int64_t begin;
  uint64_t size;  /* end - begin, as unsigned: the range may span INT64. */
  uint64_t chunk;
  weft_shared_t* shared;
} for_t;

static int for_make(void* ctx, size_t i, weft_msg_t** out) {
  const for_t* f = ctx;
  uint64_t lo = (uint64_t)i * f->chunk;
  uint64_t hi = f->size - lo > f->chunk ? lo + f->chunk : f->size;
  /* begin + lo in two's complement: in range since lo <= size. */
  int64_t b = (int64_t)((uint64_t)f->begin + lo);
  int64_t e = (int64_t)((uint64_t)f->begin + hi);
  int err = weft_msg_new(out);
  if (err != 0)
    return err;
  if (f->shared != NULL)
    return weft_msg_pack(*out, "IIH", b, e, f->shared);
  return weft_msg_pack(*out, "II", b, e);
}

static int for_done(void* ctx, size_t i, weft_task_t* t) {
  (void)ctx;
  (void)i;
  (void)t;
  return 0;
}

int weft_pool_for(weft_pool_t* pool,
                  const char* name,
                  int64_t begin,
                  int64_t end,
                  int64_t chunk,
                  weft_shared_t* shared) {
  for_t f;
  run_t r;
  uint64_t n;
  if (pool == NULL || name == NULL || end < begin || chunk < 0)
    return WEFT_EINVAL;
  if (weft__pool_on_thread(pool))
    return WEFT_EWRONGTHREAD;
  f.begin = begin;
  f.size = (uint64_t)end - (uint64_t)begin;
  f.shared = shared;
  if (chunk == 0) {
    uint64_t parts = (uint64_t)pool_threads(pool) * CHUNKS_PER_THREAD;
    f.chunk = f.size / parts + (f.size % parts != 0); /* No overflow. */
    if (f.chunk == 0)
      f.chunk = 1;
  } else {
    f.chunk = (uint64_t)chunk;
  }
  n = f.size / f.chunk + (f.size % f.chunk != 0);
  if (n > SIZE_MAX)
    return WEFT_EINVAL;
  r.pool = pool;
  r.name = name;
  r.count = (size_t)n;
  r.make = for_make;
  r.done = for_done;
  r.ctx = &f;
  return run_all(&r);
}

/* ---- map ---------------------------------------------------------------- */

typedef struct {
  weft_msg_t* m;
} result_t;

typedef struct {
  const msgpack_object_array* in;
  result_t* results; /* One per element, owned until the end. */
} map_t;

static int map_make(void* ctx, size_t i, weft_msg_t** out) {
  const map_t* mp = ctx;
  msgpack_packer* pk;
  int err = weft_msg_new(out);
  if (err != 0)
    return err;
  pk = weft_msg_packer(*out);
  if (pk == NULL || msgpack_pack_object(pk, mp->in->ptr[i]) != 0)
    return WEFT_ENOMEM;
  return 0;
}

static int map_done(void* ctx, size_t i, weft_task_t* t) {
  const map_t* mp = ctx;
  return weft_task_take_result(t, &mp->results[i].m);
}

/* Buffer handles taken out of the results while repacking: their bytes
 * move into the output message when it is sealed, then the handles go. */
typedef struct {
  weft_buffer_t* b;
} handle_t;

typedef struct {
  handle_t* v;
  size_t n, cap;
} handles_t;

static int handles_push(handles_t* h, weft_buffer_t* b) {
  if (h->n == h->cap) {
    size_t cap = h->cap != 0 ? h->cap * 2 : 8;
    handle_t* v = weft__xrealloc(h->v, cap * sizeof(*v));
    if (v == NULL)
      return WEFT_ENOMEM;
    h->v = v;
    h->cap = cap;
  }
  h->v[h->n++].b = b;
  return 0;
}

/* Pack one value that is not a container: a buffer or shared buffer of
 * received message `src` moves into `dst`, anything else is copied. */
static int repack_leaf(weft_msg_t* dst,
                       msgpack_packer* pk,
                       weft_msg_t* src,
                       const msgpack_object* o,
                       handles_t* h) {
  int err;
  if (o->type == MSGPACK_OBJECT_EXT) {
    switch (weft_msg_ext_kind(o)) {
      case WEFT_EXT_BUFFER: {
        weft_buffer_t* b = NULL;
        err = weft_msg_take_buffer(src, o, &b);
        if (err == 0 && (err = handles_push(h, b)) != 0)
          weft_buffer_free(b);
        return err != 0 ? err : weft_msg_add_buffer(dst, b);
      }
      case WEFT_EXT_SHARED: {
        weft_shared_t* sh = NULL;
        err = weft_msg_take_shared(src, o, &sh);
        if (err == 0) {
          err = weft_msg_add_shared(dst, sh); /* Takes its own reference. */
          weft_shared_release(sh);
        }
        return err;
      }
      case WEFT_EXT_PORT:
        /* Taking a port needs a loop, which the caller may not have. */
        return WEFT_EUNTRANSFERABLE;
      default:
        break;
    }
  }
  return msgpack_pack_object(pk, *o) != 0 ? WEFT_ENOMEM : 0;
}

/* An open container while repacking, and how many of its items (a map
 * counts keys and values) were packed. */
typedef struct {
  const msgpack_object* o;
  uint32_t done;
} frame_t;

/* Pack `root`, a value of received message `src`, into `dst`, moving the
 * buffers and shared buffers it carries. A walk with a stack of its own:
 * a received value nests at most WEFT_MSG_MAX_DEPTH deep. */
static int repack(weft_msg_t* dst,
                  msgpack_packer* pk,
                  weft_msg_t* src,
                  const msgpack_object* root,
                  handles_t* h) {
  frame_t st[WEFT_MSG_MAX_DEPTH + 1];
  int depth = 0;
  const msgpack_object* o = root;
  for (;;) {
    uint32_t n = 0;
    int err = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
      n = o->via.array.size;
      err = msgpack_pack_array(pk, n) != 0 ? WEFT_ENOMEM : 0;
    } else if (o->type == MSGPACK_OBJECT_MAP) {
      n = o->via.map.size;
      err = msgpack_pack_map(pk, n) != 0 ? WEFT_ENOMEM : 0;
    } else {
      err = repack_leaf(dst, pk, src, o, h);
    }
    if (err != 0)
      return err;
    if (n > 0) {
      if (depth > WEFT_MSG_MAX_DEPTH)
        return WEFT_ETOODEEP;
      st[depth].o = o;
      st[depth].done = 0;
      depth++;
    }
    /* The next item: in the innermost container not yet finished. */
    o = NULL;
    while (o == NULL && depth > 0) {
      frame_t* f = &st[depth - 1];
      if (f->o->type == MSGPACK_OBJECT_ARRAY) {
        if (f->done < f->o->via.array.size)
          o = &f->o->via.array.ptr[f->done++];
      } else if (f->done / 2 < f->o->via.map.size) {
        const msgpack_object_kv* kv = &f->o->via.map.ptr[f->done / 2];
        o = f->done % 2 == 0 ? &kv->key : &kv->val;
        f->done++;
      }
      if (o == NULL)
        depth--;
    }
    if (o == NULL)
      return 0;
  }
}

/* Turn a built message into one as weft_port_receive() returns it: its
 * transfers committed (buffers' bytes moved into the message), its value
 * decoded, owned by the caller. */
static int own_msg(weft_msg_t* m) {
  int err = weft__msg_check_transfers(m);
  if (err != 0)
    return err;
  err = weft__msg_seal(m);
  if (err != 0)
    return err;
  weft__msg_commit_transfers(m);
  m->zone = WEFT__FAILABLE(msgpack_zone_new(WEFT__MSG_ZONE_CHUNK));
  if (m->zone == NULL)
    return WEFT_ENOMEM;
  err = weft__msg_decode(m, m->zone);
  if (err != 0)
    return err;
  m->state = WEFT__MSG_OWNED;
  return 0;
}

static int map_collect(const map_t* mp, weft_msg_t** results) {
  handles_t h = {NULL, 0, 0};
  weft_msg_t* out = NULL;
  msgpack_packer* pk;
  size_t i;
  int err = weft_msg_new(&out);
  if (err != 0)
    return err;
  pk = weft_msg_packer(out);
  if (pk == NULL || msgpack_pack_array(pk, mp->in->size) != 0)
    err = WEFT_ENOMEM;
  for (i = 0; i < mp->in->size && err == 0; i++)
    err = repack(out, pk, mp->results[i].m,
                 weft_msg_object(mp->results[i].m), &h);
  if (err == 0)
    err = own_msg(out);
  /* On success the bytes moved and these handles are detached; on error
   * the message never took them and they are freed here. */
  for (i = 0; i < h.n; i++)
    weft_buffer_free(h.v[i].b);
  weft__xfree(h.v);
  if (err != 0) {
    weft_msg_free(out);
    return err;
  }
  *results = out;
  return 0;
}

int weft_pool_map(weft_pool_t* pool,
                  const char* name,
                  const void* bytes,
                  size_t len,
                  weft_msg_t** results) {
  msgpack_zone zone;
  msgpack_object obj;
  size_t off = 0, need = 0, i;
  map_t mp;
  run_t r;
  int err;
  if (results != NULL)
    *results = NULL;
  if (pool == NULL || name == NULL || results == NULL ||
      (bytes == NULL && len != 0))
    return WEFT_EINVAL;
  if (weft__pool_on_thread(pool))
    return WEFT_EWRONGTHREAD;
  /* Walk the bytes before decoding them, as a receiver does: refuses
   * what is not one value, too deep, or claims more than it holds. */
  err = weft__msgpack_scan(bytes, len, &need);
  if (err != 0)
    return err;
  if (!msgpack_zone_init(&zone, WEFT__MSG_ZONE_CHUNK))
    return WEFT_ENOMEM;
  if (msgpack_unpack(bytes, len, &off, &zone, &obj) != MSGPACK_UNPACK_SUCCESS) {
    msgpack_zone_destroy(&zone);
    return WEFT_EDECODE; /* Or out of memory: msgpack does not say. */
  }
  if (obj.type != MSGPACK_OBJECT_ARRAY) {
    msgpack_zone_destroy(&zone);
    return WEFT_EDECODE;
  }
  mp.in = &obj.via.array;
  mp.results = NULL;
  if (mp.in->size > 0) {
    mp.results = weft__xzalloc(mp.in->size * sizeof(*mp.results));
    if (mp.results == NULL) {
      msgpack_zone_destroy(&zone);
      return WEFT_ENOMEM;
    }
  }
  r.pool = pool;
  r.name = name;
  r.count = mp.in->size;
  r.make = map_make;
  r.done = map_done;
  r.ctx = &mp;
  err = run_all(&r);
  if (err == 0)
    err = map_collect(&mp, results);
  for (i = 0; i < mp.in->size; i++)
    weft_msg_free(mp.results[i].m);
  weft__xfree(mp.results);
  msgpack_zone_destroy(&zone);
  return err;
}
