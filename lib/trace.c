/* trace.c - the timeline trace (include/weft/trace.h, docs/trace.md): each
 * thread records fixed-size events into a buffer of its own; the buffers are
 * turned into Chrome trace event JSON under one lock when one is full, when
 * its thread ends and at the stop.
 *
 * Buffers. A thread's buffer (tbuf_t) is a list of chunks with one writer,
 * the thread. It writes record `len` of its last chunk and then publishes
 * it with a release store of `len + 1`; whoever writes the buffer out
 * (holding `lock`) reads `len` with acquire and formats records up to it
 * only, so it never reads a record being written. The writer adds a chunk
 * (no copy: a buffer that doubled by realloc spent 13% of a traced
 * flood's time in memmove), empties the buffer or ends it only under
 * `lock`. A buffer belongs to one trace (`epoch`): the
 * first event a thread records in a new trace drops what is left from an
 * earlier one (events recorded while a stop ran).
 *
 * Times are recorded in ticks since the start of the trace: the CPU's
 * time-stamp counter on x86-64 (an invariant TSC: ~11 ns a read against
 * ~29 ns for clock_gettime() on the hosts we measure), else
 * CLOCK_MONOTONIC nanoseconds. A read is still most of what a traced
 * message costs, so a message's trip reads the clock once, on the
 * receiver: the sender's stamp takes the time of its thread's last record
 * (weft__trace_stamp()), a delivery's end is the thread's next read
 * (end_delivery()), a delivery after a port's wait begins at the
 * wait's last clock read (WEFT__TRACE_SPIN), and in a stream of short
 * deliveries only every WEFT__TRACE_STREAM_EVERY-th reads it, the others
 * sharing the time between two reads evenly (flush_window(); written as
 * one R_WINDOW record and their stamps). They become nanoseconds when
 * written out, at the ratio of ticks to CLOCK_MONOTONIC_RAW nanoseconds
 * measured over CALIBRATE_NS at the start (a few parts in 100,000) and
 * kept for the whole trace, so that every event of it is converted alike:
 * an arrow's start stays inside the span it was recorded in. A message's
 * arrow: the sender stamps the message (weft_msg_t.trace) with the time of
 * the post, its track and the trace's epoch; the receiver records one
 * event for the delivery's span that carries the stamp (and, most of the
 * time, the span's end), written out as the arrow's start ("s", on the
 * sender's track, bound to the span around the post), the span ("B", and
 * "E") and the arrow's end ("f", bound to that span). Both ends of an
 * arrow are thus written together: a message posted and never delivered
 * has no arrow, and none points to nothing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_getname_np */
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "trace.h" /* Defines WEFT__TRACE_TSC where the TSC is read. */

_Alignas(64) weft__trace_flags_t weft__trace_flags = {.epoch = 1};

/* A thread's buffer grows by chunks of CHUNK records (33 bytes each) up to
 * MAX_CHUNKS (32 MiB); a full one is written out. */
#define CHUNK 16384u
#define MAX_CHUNKS 64u
/* Deepest nesting of spans whose begin times the writer-out keeps (to
 * close them at the stop); deeper ones are still written. */
#define MAX_DEPTH 64
/* Records ahead of the one being written that slot() prefetches. */
#define PREFETCH_AHEAD 16

/* A mailbox's length is recorded at most once per QUEUE_EVERY_NS on a
 * thread (a counter at each batch of a port's would fill the trace). */
#define QUEUE_EVERY_NS 1000000u
/* Stamp: 44 bits of time (4.8 hours), 14 of track, 6 of epoch. */
#define STAMP_TS_BITS (64 - WEFT__TRACE_STAMP_TS_SHIFT)
/* In a stream of deliveries (each right after the one before, no wait
 * between), the clock is read at every WEFT__TRACE_STREAM_EVERY-th
 * delivery; the ones between get their times spread evenly between two
 * reads (flush_window()). Not when one of them records anything (a post,
 * a span: the clock is read then), nor for the CLOCKED_AFTER_SLOW
 * deliveries after a read found a delivery (or a window's on average)
 * longer than SPREAD_MAX_NS: a stream shares reads only while its
 * deliveries are all short, so a slow one among them is spread over its
 * window at most, and then shows its own length. */
#define SPREAD_MAX_NS 1000u
#define CLOCKED_AFTER_SLOW 64u
/* How long weft_trace_start() measures the tick rate. */
#define CALIBRATE_NS 200000u
#define STAMP_TRACK_MAX 0x3fffu
#define STAMP_EPOCH_MASK 0x3fu

/* R_WINDOW: deliveries of a stream that read no clock (flush_window()),
 * all named "message": the first begins at `ts`, each lasts `a.u` ticks
 * and the next begins at its end; `b.code` of them, whose stamps fill the
 * R_STAMPS records after it (STAMPS_PER_REC each, in the same chunk). */
enum { R_BEGIN, R_END, R_DELIVER, R_INSTANT, R_COUNTER, R_WINDOW, R_STAMPS };

typedef struct {
  uint64_t ts;
  const char* name;
  /* R_BEGIN, R_INSTANT: the detail (a copy in the buffer's strings) or
   * NULL; R_DELIVER: the message's stamp; R_COUNTER: the value. */
  union {
    const char* str;
    uint64_t u;
  } a;
  /* R_INSTANT: the code; R_COUNTER: the key (NULL: the thread's name);
   * R_DELIVER: the time its span ended, or 0 (not yet, or an R_END record
   * ends it). `end` is the one field written after the record is
   * committed (see end_delivery()), by the writer only: relaxed on both
   * sides, as the writer-out at a stop may read it while the writer sets
   * it (either value is right: 0 closes the span at the stop). */
  union {
    int32_t code;
    const char* key;
    _Atomic uint64_t end;
  } b;
} rec_t;

#define STAMPS_PER_REC (sizeof(rec_t) / sizeof(uint64_t))

/* Copies of detail strings, in blocks freed with the buffer. */
typedef struct strblock_s {
  struct strblock_s* next;
  size_t used;
  char data[4096];
} strblock_t;

typedef struct chunk_s chunk_t;
struct chunk_s {
  chunk_t* next;
  rec_t recs[CHUNK];
  uint8_t types[CHUNK]; /* R_* */
};

typedef struct tbuf_s tbuf_t;
struct tbuf_s {
  tbuf_t* next;       /* Under `lock`: the list of buffers. */
  chunk_t* first;     /* Changed under `lock` only. */
  chunk_t* last;      /* Written to; as `first`. */
  uint32_t nchunks;   /* As `first`. */
  uint32_t cap;       /* Records a chunk takes: CHUNK (tests: fewer). */
  _Atomic uint32_t len; /* In `last`. Writer: release; writer-out:
                         * acquire; reset under `lock`. */
  chunk_t* fchunk;    /* Under `lock`: where writing out goes on. */
  uint32_t fidx;
  uint32_t track;     /* Set at creation. */
  unsigned epoch;     /* Set by the writer under `lock`; read under it. */
  /* Writer only. */
  int depth;          /* Spans begun and not yet ended in this trace. */
  /* The delivery whose record is the last one, its span still open: its
   * end goes into that record (end_delivery()) rather than in one more. */
  rec_t* open_del;
  /* A delivery that ended, in place, and waits for its time: the thread's
   * next clock read (settle()). */
  rec_t* pend;
  /* Deliveries that must read the clock (no window) before a window may
   * open: CLOCKED_AFTER_SLOW after a slow one. (The window itself is the
   * thread's weft__trace_tl.) */
  unsigned clocked_left;
  uint64_t queue_ts;  /* When a mailbox was last counted (+1). */
  uint64_t last_ts;   /* The time of the last record. */
  const char* cache_src[8]; /* Recent detail strings and their copies. */
  char* cache_copy[8];
  unsigned cache_next;
  strblock_t* strs;
  /* Under `lock`: the writer-out's state. */
  bool named;         /* thread_name written in this trace. */
  int fdepth;
  uint64_t fstack[MAX_DEPTH]; /* Nanoseconds. */
  uint64_t fmax;      /* The latest time written on the track. */
  char name[64];
};

/* MAX_CHUNKS and CHUNK, or fewer for tests (weft__trace_limit). */
static atomic_uint max_chunks = MAX_CHUNKS;
static atomic_uint chunk_cap = CHUNK;

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t lock;
static pthread_key_t exit_key;
/* initial-exec: one instruction to reach it from the shared library too
 * (the default model calls __tls_get_addr at every event). */
#if defined(__GNUC__) || defined(__clang__)
static _Thread_local __attribute__((tls_model("initial-exec"))) tbuf_t* tl;
#else
static _Thread_local tbuf_t* tl;
#endif
/* The trace in which the thread's worker exited (its track is complete:
 * the exit message it posts then is not recorded), until the thread starts
 * the next worker; 0: none. */
static _Thread_local unsigned tl_done;

/* Under `lock`. */
static FILE* out;
static char* out_buf;
static bool out_first; /* No event written yet (no comma before it). */
static tbuf_t* bufs;
static uint32_t next_track = 1;
static uint64_t next_flow;
static int pid;

/* Written under `lock` before `weft__trace_on` is set (release); read by
 * the writers after their acquire load of it. */
static _Atomic uint64_t t0; /* Ticks. */
/* Under `lock`: CLOCK_MONOTONIC_RAW at the start, and nanoseconds per
 * tick. */
static uint64_t raw0;
static double tick_ns = 1.0;
/* QUEUE_EVERY_NS and SPREAD_MAX_NS in ticks; as `t0`. */
static _Atomic uint64_t queue_every;
static _Atomic uint64_t spread_max;
/* The running trace's number. relaxed: writers compare it with their
 * buffer's (set under `lock`) and stamps carry it; the writer-out reads it
 * under `lock`, which orders it there. */
static unsigned epoch_now(void) {
  return atomic_load_explicit(&weft__trace_epoch, memory_order_relaxed);
}
WEFT__TRACE_TLS weft__trace_tl_t weft__trace_tl;

static void free_tbuf(tbuf_t* tb);
static void chunk_free(chunk_t* c);
static chunk_t* chunk_take(void);
static void retire(tbuf_t* tb);
static void empty(tbuf_t* tb);
static uint64_t now(void);
static void settle(tbuf_t* tb, uint64_t t);

static void thread_gone(void* arg) {
  tbuf_t* tb = arg;
  uv_mutex_lock(&lock);
  retire(tb);
  uv_mutex_unlock(&lock);
  if (tl == tb)
    tl = NULL;
}

static void init(void) {
  if (uv_mutex_init(&lock) != 0 || pthread_key_create(&exit_key, thread_gone))
    abort(); /* Only fails without resources at start-up. */
  pid = (int)getpid();
}

#ifndef WEFT__TRACE_TSC
static uint64_t clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

static uint64_t raw_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t weft__trace_ticks_slow(void) {
#ifdef WEFT__TRACE_TSC
  return weft__trace_ticks();
#else
  return clock_ns();
#endif
}

static uint64_t ticks(void) {
  return weft__trace_ticks();
}

/* Ticks since the start of the trace. */
static uint64_t now(void) {
  uint64_t base = atomic_load_explicit(&t0, memory_order_relaxed);
  uint64_t t = ticks();
  return t > base ? t - base : 0;
}

static uint64_t to_ns(uint64_t t) {
  return (uint64_t)((double)t * tick_ns);
}

/* ---- writing JSON (under `lock`) ----------------------------------------- */

typedef struct {
  char b[768];
  size_t n;
} line_t;

static void l_raw(line_t* l, const char* s) {
  size_t k = strlen(s);
  if (k > sizeof(l->b) - l->n - 1)
    k = sizeof(l->b) - l->n - 1;
  memcpy(l->b + l->n, s, k);
  l->n += k;
}

/* A JSON string, quoted; at most 128 bytes of `s`. */
static void l_str(line_t* l, const char* s) {
  static const char hex[] = "0123456789abcdef";
  size_t i, k = s != NULL ? strnlen(s, 128) : 0;
  l->b[l->n++] = '"';
  for (i = 0; i < k; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      l->b[l->n++] = '\\';
      l->b[l->n++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      /* Control bytes, and bytes that may not be UTF-8: escaped. */
      l->b[l->n++] = '\\';
      l->b[l->n++] = 'u';
      l->b[l->n++] = '0';
      l->b[l->n++] = '0';
      l->b[l->n++] = hex[c >> 4];
      l->b[l->n++] = hex[c & 15];
    } else {
      l->b[l->n++] = (char)c;
    }
  }
  l->b[l->n++] = '"';
}

static void l_u64(line_t* l, uint64_t v) {
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (k > 0)
    l->b[l->n++] = tmp[--k];
}

static void l_i64(line_t* l, int64_t v) {
  if (v < 0) {
    l->b[l->n++] = '-';
    l_u64(l, (uint64_t)0 - (uint64_t)v);
  } else {
    l_u64(l, (uint64_t)v);
  }
}

/* Microseconds with three decimals. */
static void l_ts(line_t* l, uint64_t ns) {
  unsigned frac = (unsigned)(ns % 1000);
  l_u64(l, ns / 1000);
  l->b[l->n++] = '.';
  l->b[l->n++] = (char)('0' + frac / 100);
  l->b[l->n++] = (char)('0' + frac / 10 % 10);
  l->b[l->n++] = (char)('0' + frac % 10);
}

/* {"ph":"<ph>","pid":..,"tid":..,"ts":..,"cat":"weft","name":"<name>"
 * (no category and name when `name` is NULL: an end). */
static void l_head(line_t* l, char ph, uint32_t tid, uint64_t ts,
                   const char* name) {
  l->n = 0;
  l_raw(l, out_first ? "\n{\"ph\":\"" : ",\n{\"ph\":\"");
  out_first = false;
  l->b[l->n++] = ph;
  l_raw(l, "\",\"pid\":");
  l_u64(l, (uint64_t)pid);
  l_raw(l, ",\"tid\":");
  l_u64(l, tid);
  l_raw(l, ",\"ts\":");
  l_ts(l, ts);
  if (name != NULL) {
    l_raw(l, ",\"cat\":\"weft\",\"name\":");
    l_str(l, name);
  }
}

static void l_put(line_t* l) {
  l->b[l->n++] = '}';
  (void)fwrite(l->b, 1, l->n, out); /* Errors: ferror() at the stop. */
}

static void put_meta(uint32_t tid, const char* what, const char* key,
                     const char* sval, int64_t ival) {
  line_t l;
  l_head(&l, 'M', tid, 0, what);
  l_raw(&l, ",\"args\":{\"");
  l_raw(&l, key);
  l_raw(&l, "\":");
  if (sval != NULL)
    l_str(&l, sval);
  else
    l_i64(&l, ival);
  l_raw(&l, "}");
  l_put(&l);
}

static void put_end(tbuf_t* tb, uint64_t ts) {
  line_t l;
  uint64_t b = tb->fdepth <= MAX_DEPTH ? tb->fstack[tb->fdepth - 1] : 0;
  /* An end at least 2 ns after its begin, so that the arrow's end (1 ns
   * after the begin) falls inside the span. */
  if (ts < b + 2)
    ts = b + 2;
  /* A span closed at the stop ends no earlier than what came before it on
   * the track (an inner span's end). */
  if (ts < tb->fmax)
    ts = tb->fmax;
  tb->fmax = ts;
  tb->fdepth--;
  l_head(&l, 'E', tb->track, ts, NULL);
  l_put(&l);
}

static void push_begin(tbuf_t* tb, uint64_t ts) {
  if (tb->fdepth < MAX_DEPTH)
    tb->fstack[tb->fdepth] = ts;
  tb->fdepth++;
}

/* One arrow from a stamp to the delivery at `ts` on `tb` (whose span began
 * at `ts`); nothing for a stamp of another trace or a bad one. */
static void put_flow(tbuf_t* tb, uint64_t stamp, uint64_t ts) {
  line_t l;
  uint64_t sts = to_ns(stamp >> (64 - STAMP_TS_BITS));
  uint32_t strack = (uint32_t)(stamp >> 6) & STAMP_TRACK_MAX;
  uint64_t id;
  if (stamp == 0 ||
      (stamp & STAMP_EPOCH_MASK) != (epoch_now() & STAMP_EPOCH_MASK) ||
      strack == 0 || strack >= next_track || sts > ts)
    return;
  id = next_flow++;
  l_head(&l, 's', strack, sts, "message");
  l_raw(&l, ",\"id\":");
  l_u64(&l, id);
  l_put(&l);
  l_head(&l, 'f', tb->track, ts + 1, "message");
  l_raw(&l, ",\"bp\":\"e\",\"id\":");
  l_u64(&l, id);
  l_put(&l);
}

/* Write the records of chunk `c` from `i` to `upto`. */
static void emit_chunk(tbuf_t* tb, const chunk_t* c, uint32_t i,
                       uint32_t upto) {
  if (!tb->named && i < upto) {
    tb->named = true;
    put_meta(tb->track, "thread_name", "name", tb->name, 0);
    /* Main first, then the tracks in the order their threads began. */
    put_meta(tb->track, "thread_sort_index", "sort_index", NULL,
             strcmp(tb->name, "main") == 0 ? 0 : (int64_t)tb->track);
  }
  for (; i < upto; i++) {
    const rec_t* r = &c->recs[i];
    uint64_t ns;
    line_t l;
    if (c->types[i] == R_STAMPS)
      continue; /* Read with its R_WINDOW (which skips them). */
    ns = to_ns(r->ts);
    if (ns > tb->fmax)
      tb->fmax = ns;
    switch (c->types[i]) {
      case R_BEGIN:
      case R_DELIVER:
        l_head(&l, 'B', tb->track, ns, r->name);
        if (c->types[i] == R_BEGIN && r->a.str != NULL) {
          l_raw(&l, ",\"args\":{\"detail\":");
          l_str(&l, r->a.str);
          l_raw(&l, "}");
        }
        l_put(&l);
        push_begin(tb, ns);
        if (c->types[i] == R_DELIVER) {
          uint64_t end = atomic_load_explicit(&r->b.end, memory_order_relaxed);
          put_flow(tb, r->a.u, ns);
          if (end != 0)
            put_end(tb, to_ns(end));
        }
        break;
      case R_END:
        if (tb->fdepth > 0) /* Else its begin came before the trace. */
          put_end(tb, ns);
        break;
      case R_WINDOW: {
        uint32_t j, k = (uint32_t)r->b.code;
        for (j = 0; j < k; j++) {
          uint64_t b = to_ns(r->ts + j * r->a.u), stamp;
          memcpy(&stamp, (const char*)(r + 1) + j * sizeof(stamp),
                 sizeof(stamp));
          l_head(&l, 'B', tb->track, b, "message");
          l_put(&l);
          push_begin(tb, b);
          put_flow(tb, stamp, b);
          put_end(tb, to_ns(r->ts + (j + 1) * r->a.u));
        }
        i += (k + STAMPS_PER_REC - 1) / STAMPS_PER_REC; /* Its stamps. */
        break;
      }
      case R_INSTANT:
        l_head(&l, 'i', tb->track, ns, r->name);
        l_raw(&l, ",\"s\":\"t\",\"args\":{\"code\":");
        l_i64(&l, r->b.code);
        if (r->a.str != NULL) {
          l_raw(&l, ",\"detail\":");
          l_str(&l, r->a.str);
        }
        l_raw(&l, "}");
        l_put(&l);
        break;
      case R_COUNTER:
        l_head(&l, 'C', tb->track, ns, r->name);
        l_raw(&l, ",\"args\":{");
        l_str(&l, r->b.key != NULL ? r->b.key : tb->name);
        l_raw(&l, ":");
        l_i64(&l, (int64_t)r->a.u);
        l_raw(&l, "}");
        l_put(&l);
        break;
      default:
        break;
    }
  }
}

/* Write what `tb` recorded since the last time, up to `upto` in its last
 * chunk. */
static void emit(tbuf_t* tb, uint32_t upto) {
  if (out == NULL)
    return;
  while (tb->fchunk != tb->last) {
    if (tb->fidx < tb->cap)
      emit_chunk(tb, tb->fchunk, tb->fidx, tb->cap);
    tb->fchunk = tb->fchunk->next;
    tb->fidx = 0;
  }
  if (upto > tb->fidx) {
    emit_chunk(tb, tb->last, tb->fidx, upto);
    tb->fidx = upto;
  }
}

/* Write out what `tb` holds of the running trace and close its open spans
 * at `ts`. */
static void emit_all(tbuf_t* tb, uint64_t ts) {
  if (out == NULL || tb->epoch != epoch_now())
    return;
  emit(tb, atomic_load_explicit(&tb->len, memory_order_acquire));
  while (tb->fdepth > 0)
    put_end(tb, ts);
}

/* Under `lock`: write out and free a buffer whose thread is done with it. */
static void retire(tbuf_t* tb) {
  tbuf_t** pp;
  if (tb == NULL)
    return;
  /* Its thread's: see the callers. A window of deliveries is dropped (its
   * records would need room, which takes `lock`); a thread that ends its
   * worker records its exit first (weft__trace_thread_exit()), which
   * writes them. */
  weft__trace_tl.win_room = weft__trace_tl.nwin = 0;
  weft__trace_tl.win_open = false;
  if (tb->pend != NULL)
    settle(tb, now());
  emit_all(tb, to_ns(now()));
  for (pp = &bufs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == tb) {
      *pp = tb->next;
      break;
    }
  }
  free_tbuf(tb);
}

static void free_strs(tbuf_t* tb) {
  while (tb->strs != NULL) {
    strblock_t* s = tb->strs;
    tb->strs = s->next;
    free(s);
  }
  memset(tb->cache_src, 0, sizeof(tb->cache_src));
  memset(tb->cache_copy, 0, sizeof(tb->cache_copy));
}

static void free_tbuf(tbuf_t* tb) {
  free_strs(tb);
  while (tb->first != NULL) {
    chunk_t* c = tb->first;
    tb->first = c->next;
    chunk_free(c);
  }
  free(tb);
}

/* ---- the writer's side ----------------------------------------------------- */

static void name_thread(tbuf_t* tb, const char* name) {
  char buf[32] = "";
  long tid = (long)syscall(SYS_gettid);
  if (name != NULL) {
    (void)snprintf(tb->name, sizeof(tb->name), "%s", name);
    return;
  }
  if (tid == (long)pid) {
    (void)snprintf(tb->name, sizeof(tb->name), "main");
    return;
  }
  if (pthread_getname_np(pthread_self(), buf, sizeof(buf)) != 0 ||
      buf[0] == '\0' || strcmp(buf, program_invocation_short_name) == 0 ||
      strncmp(buf, program_invocation_short_name, 15) == 0)
    (void)snprintf(tb->name, sizeof(tb->name), "thread %ld", tid);
  else
    (void)snprintf(tb->name, sizeof(tb->name), "%s", buf);
}

/* The calling thread's buffer for trace `e`, made or reset for it; NULL
 * when that trace is over, or out of memory. */
static tbuf_t* attach(const char* name) {
  tbuf_t* tb = tl;
  unsigned e;
  uv_mutex_lock(&lock);
  e = epoch_now();
  if (out == NULL) {
    uv_mutex_unlock(&lock);
    return NULL;
  }
  if (tb == NULL) {
    tb = calloc(1, sizeof(*tb));
    if (tb != NULL) {
      tb->first = tb->last = tb->fchunk = chunk_take();
      tb->nchunks = 1;
    }
    if (tb == NULL || tb->first == NULL) {
      if (tb != NULL)
        free_tbuf(tb);
      uv_mutex_unlock(&lock);
      return NULL;
    }
    tb->first->next = NULL;
    tb->cap = atomic_load_explicit(&chunk_cap, memory_order_relaxed);
    tb->track = next_track++;
    tb->next = bufs;
    bufs = tb;
    name_thread(tb, name);
    tl = tb;
    pthread_setspecific(exit_key, tb);
  } else {
    /* Left from an earlier trace: start over. */
    empty(tb);
    tb->depth = 0;
    tb->open_del = tb->pend = NULL;
    tb->clocked_left = 0;
    tb->last_ts = 0;
    tb->queue_ts = 0;
    tb->named = false;
    tb->fdepth = 0;
    tb->fmax = 0;
    free_strs(tb);
    if (name != NULL)
      name_thread(tb, name);
  }
  tb->epoch = e;
  weft__trace_tl.stamp = 0;
  weft__trace_tl.epoch = e;
  weft__trace_tl.post_open = false;
  weft__trace_tl.win_room = weft__trace_tl.nwin = 0;
  weft__trace_tl.win_open = false;
  uv_mutex_unlock(&lock);
  return tb;
}

/* The calling thread's buffer in the running trace, or NULL. */
static tbuf_t* cur(void) {
  tbuf_t* tb = tl;
  /* acquire: pairs with weft_trace_start()'s release, so that `t0` and
   * `epoch` are the new trace's. */
  if (!atomic_load_explicit(&weft__trace_on, memory_order_acquire))
    return NULL;
  if (tb != NULL && tb->epoch == epoch_now())
    return tb;
  if (tl_done != 0 && tl_done == epoch_now())
    return NULL;
  return attach(NULL);
}

/* Chunks. Records go to memory no one touched in a while, and on the VMs
 * we measure the first write to a page of a new mapping costs 6-14 us (the
 * host fills in its page tables for the address then; MAP_POPULATE, which
 * makes the guest's pages present, halves it but does not spare it): a
 * traced flood of messages ran at a third of its speed on fresh chunks. So
 * a new chunk is written to once per page as it is made, up to POOL_MAX
 * chunks written out (34 MiB) are kept for reuse by any thread, in this
 * trace or the next (a process that traced keeps them), and
 * weft_trace_start() fills the pool to POOL_WARM chunks (17 MiB, 20-40 ms
 * there the first time, a few ms on a bare host) before the trace starts,
 * so that the first traced run does not pay page by page. */
#define POOL_MAX 64
#define POOL_WARM 32
static chunk_t* pool; /* Under `lock`. */
static int pool_len;  /* Under `lock`. */

static chunk_t* chunk_new(void) {
  chunk_t* c;
  size_t i;
#ifdef MAP_POPULATE
  void* p = mmap(NULL, sizeof(chunk_t), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  c = p == MAP_FAILED ? NULL : p;
#else
  c = malloc(sizeof(chunk_t));
#endif
  if (c == NULL)
    return NULL;
  /* One write per page (see above); volatile: the compiler keeps it. */
  for (i = 0; i < sizeof(chunk_t); i += 4096)
    ((volatile char*)c)[i] = 0;
  return c;
}

/* Under `lock` (the pool) or not (a new chunk). */
static chunk_t* chunk_take(void) {
  chunk_t* c = pool;
  if (c != NULL) {
    pool = c->next;
    pool_len--;
    return c;
  }
  return chunk_new();
}

/* Under `lock`. */
static void chunk_free(chunk_t* c) {
  if (pool_len < POOL_MAX) {
    c->next = pool;
    pool = c;
    pool_len++;
    return;
  }
#ifdef MAP_POPULATE
  munmap(c, sizeof(chunk_t));
#else
  free(c);
#endif
}

/* Under `lock`: drop every record, keeping the first chunk. */
static void empty(tbuf_t* tb) {
  while (tb->first->next != NULL) {
    chunk_t* c = tb->first->next;
    tb->first->next = c->next;
    chunk_free(c);
  }
  tb->last = tb->fchunk = tb->first;
  tb->nchunks = 1;
  tb->fidx = 0;
  atomic_store_explicit(&tb->len, 0, memory_order_release);
}

/* The last chunk is full: add one, or write the buffer out when it is at
 * its largest. False when no room could be made (out of memory, or no
 * trace runs any more). */
static bool make_room(tbuf_t* tb) {
  bool ok = true;
  chunk_t* c = NULL;
  unsigned max = atomic_load_explicit(&max_chunks, memory_order_relaxed);
  uv_mutex_lock(&lock);
  if (tb->nchunks < max && pool != NULL)
    c = chunk_take();
  uv_mutex_unlock(&lock);
  if (tb->nchunks < max && c == NULL)
    c = chunk_new(); /* Outside the lock: it maps pages. */
  uv_mutex_lock(&lock);
  if (c != NULL) {
    c->next = NULL;
    tb->last->next = c;
    tb->last = c;
    tb->nchunks++;
    atomic_store_explicit(&tb->len, 0, memory_order_release);
  } else {
    /* The writer-out's depth stays: the ends of spans open now come in
     * the next part of the buffer. */
    if (tb->epoch == epoch_now())
      emit(tb, tb->cap);
    empty(tb);
    ok = out != NULL;
  }
  uv_mutex_unlock(&lock);
  return ok;
}

/* A post's stamp (see weft__trace_stamp()): made at each record, for the
 * posts that follow it, while a span is open. */
static void keep_stamp(tbuf_t* tb) {
  /* Inside the span, a nanosecond or more after its begin. */
  uint64_t t = tb->last_ts + 8;
  weft__trace_tl.stamp =
      tb->depth > 0 && t >> STAMP_TS_BITS == 0 && tb->track <= STAMP_TRACK_MAX
          ? t << (64 - STAMP_TS_BITS) | (uint64_t)tb->track << 6 |
                (tb->epoch & STAMP_EPOCH_MASK)
          : 0;
}

/* A delivery's span ended at `t` (a clock read after its end). */
static void settle(tbuf_t* tb, uint64_t t) {
  atomic_store_explicit(&tb->pend->b.end, t != 0 ? t : 1, memory_order_relaxed);
  tb->pend = NULL;
}

static rec_t* put(tbuf_t* tb, int type, uint64_t ts, const char* name);
static void commit(tbuf_t* tb);

/* A clock read `t` (after the window's last delivery began): the window's
 * deliveries become records. They and `pend` (the last delivery that read
 * the clock, at its begin) ran from `pend`'s begin to `t`; each gets an
 * equal share, in order. The last one, when still running, stays open, as
 * a delivery that read the clock does (`open_del`). */
static void flush_window(tbuf_t* tb, uint64_t t) {
  weft__trace_tl_t* w = &weft__trace_tl;
  rec_t* p = tb->pend;
  unsigned i, m = w->nwin;
  /* `pend` is set whenever the window holds any (weft__trace_window()
   * needs win_room, which only end_delivery() gives, with `pend`). */
  uint64_t t1 = p != NULL ? p->ts : t;
  uint64_t step = t > t1 ? (t - t1) / (m + 1) : 0;
  bool open = w->win_open;
  /* The ones that ended, in one R_WINDOW record and their stamps' (a
   * third of the bytes of one R_DELIVER each, written at once). */
  unsigned done = open ? m - 1 : m;
  uint32_t n = atomic_load_explicit(&tb->len, memory_order_relaxed);
  uint32_t need = 1 + (uint32_t)((done + STAMPS_PER_REC - 1) / STAMPS_PER_REC);
  w->nwin = w->win_room = 0;
  w->win_open = false;
  if (step > atomic_load_explicit(&spread_max, memory_order_relaxed))
    tb->clocked_left = CLOCKED_AFTER_SLOW;
  if (p != NULL)
    settle(tb, t1 + step);
  i = 0;
  if (done != 0 && n + need <= tb->cap) {
    rec_t* r = &tb->last->recs[n];
    r->ts = t1 + step;
    r->name = NULL;
    r->a.u = step;
    r->b.code = (int32_t)done;
    tb->last->types[n] = R_WINDOW;
    memcpy(r + 1, w->win_stamp, done * sizeof(uint64_t));
    memset(tb->last->types + n + 1, R_STAMPS, need - 1);
    tb->last_ts = t1 + done * step;
    /* release: the group is complete before the writer-out reads it. */
    atomic_store_explicit(&tb->len, n + need, memory_order_release);
    i = done;
  }
  /* The rest one by one: at a chunk's end, and the one still running. */
  for (; i < m; i++) {
    uint64_t begin = t1 + (uint64_t)(i + 1) * step;
    rec_t* r = put(tb, R_DELIVER, begin, "message");
    if (r == NULL)
      break; /* No room: the rest are dropped, as any record would be. */
    r->a.u = w->win_stamp[i];
    atomic_store_explicit(&r->b.end,
                          i + 1 < m ? begin + step : open ? 0 : t,
                          memory_order_relaxed);
    commit(tb);
    if (i + 1 == m && open)
      tb->open_del = r;
  }
  if (open)
    tb->depth++; /* In its span now, as after weft__trace_deliver(). */
}

/* The thread's clock read `t`, before a record made at `t`, or to end a
 * delivery that waits for its end (weft__trace_settle()). */
static void boundary(tbuf_t* tb, uint64_t t) {
  if (weft__trace_tl.nwin != 0) {
    flush_window(tb, t);
  } else if (tb->pend != NULL) {
    weft__trace_tl.win_room = 0;
    if (t - tb->pend->ts >
        atomic_load_explicit(&spread_max, memory_order_relaxed))
      tb->clocked_left = CLOCKED_AFTER_SLOW;
    else if (tb->clocked_left > 0)
      tb->clocked_left--;
    settle(tb, t);
  }
}

/* The next record of `tb`, to fill and then commit(); NULL when there is
 * no room. */
static rec_t* slot(tbuf_t* tb, int type, uint64_t ts, const char* name) {
  /* `ts` is a clock read: a delivery waiting for its end gets it, and one
   * still open now has a record after it (its end needs a record too). */
  boundary(tb, ts);
  tb->open_del = NULL;
  return put(tb, type, ts, name);
}

/* slot() without its boundary: for records whose times are known. */
static rec_t* put(tbuf_t* tb, int type, uint64_t ts, const char* name) {
  uint32_t n = atomic_load_explicit(&tb->len, memory_order_relaxed);
  rec_t* r;
  if (n == tb->cap) {
    if (!make_room(tb))
      return NULL;
    n = 0;
  }
  r = &tb->last->recs[n];
#if defined(__GNUC__) || defined(__clang__)
  /* The lines a few records on, for writing: each record is new memory,
   * and a store that waited for its line (once every two records) was
   * most of a traced delivery's cost. Past the chunk's end it is only a
   * hint. */
  __builtin_prefetch(r + PREFETCH_AHEAD, 1, 3);
#endif
  r->ts = ts;
  r->name = name;
  tb->last->types[n] = (uint8_t)type;
  tb->last_ts = ts;
  keep_stamp(tb);
  return r;
}

static void commit(tbuf_t* tb) {
  uint32_t n = atomic_load_explicit(&tb->len, memory_order_relaxed);
  /* release: the record is complete before the writer-out reads it. */
  atomic_store_explicit(&tb->len, n + 1, memory_order_release);
}

/* A record with a string (a detail, or NULL) and a code. */
static void record(tbuf_t* tb, int type, uint64_t ts, const char* name,
                   const char* str, int32_t code) {
  rec_t* r = slot(tb, type, ts, name);
  if (r == NULL)
    return;
  r->a.str = str;
  r->b.code = code;
  commit(tb);
}

/* A record with a number (a stamp, a value) and a counter's key. */
static void record_u(tbuf_t* tb, int type, uint64_t ts, const char* name,
                     uint64_t u, const char* key) {
  rec_t* r = slot(tb, type, ts, name);
  if (r == NULL)
    return;
  r->a.u = u;
  r->b.key = key;
  commit(tb);
}

/* A copy of `s` that lives as long as the buffer's records. */
static const char* keep_str(tbuf_t* tb, const char* s) {
  size_t k;
  unsigned i;
  strblock_t* b = tb->strs;
  char* copy;
  if (s == NULL)
    return NULL;
  for (i = 0; i < 8; i++) {
    if (tb->cache_src[i] == s && strcmp(tb->cache_copy[i], s) == 0)
      return tb->cache_copy[i];
  }
  k = strnlen(s, 127) + 1;
  if (b == NULL || sizeof(b->data) - b->used < k) {
    b = malloc(sizeof(*b));
    if (b == NULL)
      return NULL;
    b->used = 0;
    /* Under `lock`: the writer-out may read the list's strings. */
    uv_mutex_lock(&lock);
    b->next = tb->strs;
    tb->strs = b;
    uv_mutex_unlock(&lock);
  }
  copy = b->data + b->used;
  memcpy(copy, s, k - 1);
  copy[k - 1] = '\0';
  b->used += k;
  i = tb->cache_next++ % 8;
  tb->cache_src[i] = s;
  tb->cache_copy[i] = copy;
  return copy;
}

void weft__trace_begin(const char* name, const char* detail) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return;
  tb->depth++;
  record(tb, R_BEGIN, now(), name, keep_str(tb, detail), 0);
}

bool weft__trace_begin_if(const char* name) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return false;
  tb->depth++;
  record(tb, R_BEGIN, now(), name, NULL, 0);
  return true;
}

void weft__trace_end(void) {
  tbuf_t* tb = cur();
  if (tb == NULL || tb->depth == 0)
    return; /* Its begin came before this trace. */
  tb->depth--;
  record(tb, R_END, now(), NULL, NULL, 0);
}

void weft__trace_instant(const char* name, const char* detail, int code) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return;
  record(tb, R_INSTANT, now(), name, keep_str(tb, detail), code);
}

static void counter(const char* name, const char* key, int64_t value) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return;
  record_u(tb, R_COUNTER, now(), name, (uint64_t)value, key);
}

void weft__trace_counter(const char* name, const char* key, int64_t value) {
  counter(name, key, value);
}

void weft__trace_queue(int64_t count) {
  tbuf_t* tb = cur();
  uint64_t t;
  if (tb == NULL)
    return;
  /* The time of the thread's last event, not a clock read (a window of
   * deliveries waiting for their times needs one). */
  t = weft__trace_tl.nwin != 0 ? now() : tb->last_ts + 1;
  if (tb->queue_ts != 0 &&
      t - tb->queue_ts <
          atomic_load_explicit(&queue_every, memory_order_relaxed))
    return;
  tb->queue_ts = t;
  counter("queued messages", NULL, count);
}

/* Where a message's stamp goes: in the inline payload buffer right after
 * a small payload, which the receiver reads anyway (weft_msg_t.trace, at
 * the struct's cold end, cost one more cache line to move between the two
 * cores per message: a traced flood ran at half speed); else `trace`.
 * Neither is cleared: a stamp of an earlier trace carries another epoch,
 * and a message posted while no trace ran has none that fits (see
 * put_flow's checks). */
static void* stamp_at(weft_msg_t* msg) {
  size_t off = (msg->len + 7) & ~(size_t)7;
  if (msg->data == msg->inline_buf && off + sizeof(uint64_t) <= WEFT__MSG_INLINE)
    return msg->inline_buf + off;
  return &msg->trace;
}

uint64_t weft__trace_stamp_slow(void) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return 0;
  if (weft__trace_tl.win_open) {
    /* A post inside a delivery that read no clock: its times now, and the
     * stamp the post's time, inside it. */
    uint64_t t = now();
    flush_window(tb, t);
    tb->last_ts = t;
    keep_stamp(tb);
  }
  if (tb->depth == 0 && !weft__trace_tl.post_open) {
    /* No span around the post: the arrow needs one to start from. */
    tb->depth++;
    weft__trace_tl.post_open = true;
    record(tb, R_BEGIN, now(), "post", NULL, 0);
  }
  /* Else as weft__trace_stamp(): the record before (after a stop and a
   * start inside a span, or a failed record: none, and no arrow). */
  return weft__trace_tl.stamp;
}

void weft__trace_restamp(weft_msg_t* msg, uint64_t stamp) {
  memcpy(stamp_at(msg), &stamp, sizeof(stamp));
}

void weft__trace_post(weft_msg_t* msg) {
  uint64_t stamp = weft__trace_stamp();
  if (stamp != 0)
    weft__trace_restamp(msg, stamp);
}

void weft__trace_posted(void) {
  tbuf_t* tb = cur();
  if (tb == NULL || !weft__trace_tl.post_open)
    return;
  weft__trace_tl.post_open = false;
  weft__trace_end();
}

static const char* msg_span_name(const weft_msg_t* msg) {
  switch (msg->kind) {
    case WEFT__MSG_DATA:
      return msg->tag != 0 ? "actor message" : "message";
    case WEFT__MSG_CLOSE:
      return "close";
    case WEFT__MSG_ONLINE:
      return "worker online";
    case WEFT__MSG_ERROR:
      return "worker error";
    case WEFT__MSG_EXIT:
      return "worker exit";
    case WEFT__MSG_REPLY:
      return "reply";
    default:
      return "message";
  }
}

void weft__trace_deliver(weft_msg_t* msg, uint64_t stamp) {
  tbuf_t* tb = cur();
  uint64_t t;
  rec_t* r;
  if (tb == NULL)
    return;
  if (stamp == WEFT__TRACE_STAMP_IN_MSG)
    memcpy(&stamp, stamp_at(msg), sizeof(stamp));
  tb->depth++;
  t = weft__trace_tl.spin - atomic_load_explicit(&t0, memory_order_relaxed);
  /* No wait just before, or one read before this trace or before the
   * thread's last record (not this wait's), or before the post's stamp
   * (the wait reads the clock every few looks: WEFT__TRACE_SPIN; the
   * arrow must end after it starts): the clock. */
  if (weft__trace_tl.spin == 0 ||
      weft__trace_tl.spin <= atomic_load_explicit(&t0, memory_order_relaxed) ||
      t < tb->last_ts || t < stamp >> (64 - STAMP_TS_BITS))
    t = now();
  weft__trace_tl.spin = 0;
  r = slot(tb, R_DELIVER, t, msg_span_name(msg));
  if (r == NULL)
    return;
  r->a.u = stamp;
  atomic_store_explicit(&r->b.end, 0, memory_order_relaxed);
  commit(tb);
  tb->open_del = r;
}

/* One record per delivery: a delivery that recorded nothing inside its
 * span (most do) ends in its own record, and the time of its end is the
 * thread's next clock read (the next delivery's begin, or settle() when
 * the port stops delivering), so that a stream of messages costs one
 * record and one clock read each. */
void weft__trace_end_delivery(void) {
  tbuf_t* tb;
  if (weft__trace_tl.win_open) {
    /* In the window (WEFT__TRACE_END_DELIVERY() takes this path itself):
     * it ends at the next clock read, as the window's others. */
    weft__trace_tl.win_open = false;
    return;
  }
  tb = cur();
  if (tb == NULL || tb->depth == 0)
    return; /* Its begin came before this trace. */
  tb->depth--;
  if (tb->open_del != NULL) {
    tb->pend = tb->open_del;
    tb->open_del = NULL;
    /* A delivery right after it in a stream reads no clock: the window
     * opens (WEFT__TRACE_DELIVER()); the stamp of its message must not be
     * later than this one's begin. */
    if (tb->clocked_left == 0) {
      weft__trace_tl.win_base = tb->pend->ts;
      weft__trace_tl.win_room = WEFT__TRACE_STREAM_EVERY - 1;
    }
    if (tb->depth == 0)
      weft__trace_tl.stamp = 0; /* Posts now open a span of their own. */
    return;
  }
  record(tb, R_END, now(), NULL, NULL, 0);
}

void weft__trace_settle(void) {
  tbuf_t* tb = cur();
  weft__trace_tl.spin = 0;
  if (tb != NULL && (tb->pend != NULL || weft__trace_tl.nwin != 0))
    boundary(tb, now());
}

void weft__trace_thread_start(const char* name) {
  tl_done = 0;
  if (!atomic_load_explicit(&weft__trace_on, memory_order_acquire))
    return;
  if (tl != NULL) {
    /* A cached thread that ran another worker: that one's track ends. */
    uv_mutex_lock(&lock);
    retire(tl);
    uv_mutex_unlock(&lock);
    tl = NULL;
    pthread_setspecific(exit_key, NULL);
  }
  attach(name);
}

void weft__trace_thread_exit(int code) {
  tbuf_t* tb = cur();
  if (tb == NULL)
    return;
  weft__trace_instant("worker exit", NULL, code);
  tl_done = tb->epoch;
  weft__trace_tl.stamp = 0;
  weft__trace_tl.epoch = 0;
  uv_mutex_lock(&lock);
  retire(tb);
  uv_mutex_unlock(&lock);
  tl = NULL;
  pthread_setspecific(exit_key, NULL);
}

void weft__trace_work_begin(void) {
  tbuf_t* tb = tl;
  if (tb == NULL || tb->epoch != epoch_now()) {
    char name[32];
    if (!atomic_load_explicit(&weft__trace_on, memory_order_acquire))
      return;
    (void)snprintf(name, sizeof(name), "uv threadpool %ld",
             (long)syscall(SYS_gettid));
    if (attach(tb == NULL ? name : NULL) == NULL)
      return;
  }
  weft__trace_begin("work", NULL);
}

/* ---- start and stop ------------------------------------------------------------ */

/* Fill the pool to POOL_WARM chunks (see chunk_new()), making them
 * outside the lock. */
static void warm_pool(void) {
  int need;
  uv_mutex_lock(&lock);
  need = POOL_WARM - pool_len;
  uv_mutex_unlock(&lock);
  while (need-- > 0) {
    chunk_t* c = chunk_new();
    if (c == NULL)
      return; /* The trace makes do with fewer, as it would later. */
    uv_mutex_lock(&lock);
    chunk_free(c);
    uv_mutex_unlock(&lock);
  }
}

int weft_trace_start(const char* path) {
  FILE* f;
  int err;
  line_t l;
  if (path == NULL || path[0] == '\0')
    return WEFT_EINVAL;
  uv_once(&once, init);
  warm_pool();
  uv_mutex_lock(&lock);
  if (out != NULL) {
    uv_mutex_unlock(&lock);
    return WEFT_EBUSY;
  }
  f = fopen(path, "w");
  if (f == NULL) {
    err = uv_translate_sys_error(errno);
    uv_mutex_unlock(&lock);
    return err;
  }
  out_buf = malloc(1 << 20);
  if (out_buf != NULL)
    (void)setvbuf(f, out_buf, _IOFBF, 1 << 20);
  out = f;
  out_first = true;
  next_flow = 1;
  /* No displayTimeUnit: Perfetto would read "ns" as the unit of "ts". */
  (void)fputs("{\"traceEvents\":[", out);
  l_head(&l, 'M', 0, 0, "process_name");
  l_raw(&l, ",\"args\":{\"name\":\"weft\"}");
  l_put(&l);
  raw0 = raw_ns();
  atomic_store_explicit(&t0, ticks(), memory_order_relaxed);
#ifdef WEFT__TRACE_TSC
  {
    /* Ticks against nanoseconds while the caller waits (see the top of
     * the file). */
    uint64_t r1, k1;
    do {
      r1 = raw_ns();
      k1 = ticks();
    } while (r1 - raw0 < CALIBRATE_NS);
    tick_ns = (double)(r1 - raw0) /
              (double)(k1 - atomic_load_explicit(&t0, memory_order_relaxed));
  }
#else
  tick_ns = 1.0;
#endif
  atomic_store_explicit(&queue_every, (uint64_t)(QUEUE_EVERY_NS / tick_ns),
                        memory_order_relaxed);
  atomic_store_explicit(&spread_max, (uint64_t)(SPREAD_MAX_NS / tick_ns),
                        memory_order_relaxed);
  atomic_store_explicit(&weft__trace_epoch, epoch_now() + 1,
                        memory_order_relaxed);
  /* release: `t0` and `epoch` before any writer sees the trace on. */
  atomic_store_explicit(&weft__trace_on, 1, memory_order_release);
  uv_mutex_unlock(&lock);
  return 0;
}

int weft_trace_stop(void) {
  tbuf_t* tb;
  uint64_t ts;
  int err = 0;
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  if (out == NULL) {
    uv_mutex_unlock(&lock);
    return WEFT_ENOTSTARTED;
  }
  atomic_store_explicit(&weft__trace_on, 0, memory_order_relaxed);
  ts = to_ns(now());
  for (tb = bufs; tb != NULL; tb = tb->next)
    emit_all(tb, ts);
  (void)fputs("\n]}\n", out);
  if (fflush(out) != 0 || ferror(out))
    err = uv_translate_sys_error(errno != 0 ? errno : EIO);
  if (fclose(out) != 0 && err == 0)
    err = uv_translate_sys_error(errno);
  out = NULL;
  free(out_buf);
  out_buf = NULL;
  /* Events recorded from now on belong to no trace (see `epoch`). */
  atomic_store_explicit(&weft__trace_epoch, epoch_now() + 1,
                        memory_order_relaxed);
  uv_mutex_unlock(&lock);
  return err;
}

void weft__trace_limit(unsigned chunks, unsigned records) {
  atomic_store_explicit(&max_chunks,
                        chunks > 0 && chunks < MAX_CHUNKS ? chunks : MAX_CHUNKS,
                        memory_order_relaxed);
  atomic_store_explicit(&chunk_cap,
                        records > 0 && records < CHUNK ? records : CHUNK,
                        memory_order_relaxed);
}

int weft_trace_running(void) {
  return atomic_load_explicit(&weft__trace_on, memory_order_relaxed);
}

static uv_once_t env_once = UV_ONCE_INIT;

static void stop_at_exit(void) {
  (void)weft_trace_stop();
}

static void env_start(void) {
  const char* path = getenv("WEFT_TRACE");
  if (path == NULL || path[0] == '\0')
    return;
  if (weft_trace_start(path) != 0) {
    (void)fprintf(stderr, "weft: WEFT_TRACE=%s: cannot write the trace\n",
                  path);
    return;
  }
  if (atexit(stop_at_exit) != 0)
    (void)weft_trace_stop(); /* No way to finish it at exit. */
}

void weft__trace_env(void) {
  uv_once(&env_once, env_start);
}
