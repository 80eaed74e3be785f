/* trace_check.h - reads a trace file of weft_trace_start() and checks what
 * docs/trace.md promises of any trace: it is one well-formed JSON value
 * (a small recursive parser, strict: no trailing commas, closed strings,
 * nothing after the value); each track (tid) that has events has exactly
 * one thread_name; spans (B/E) are closed, nested and in time order on
 * their track; every arrow start ("s") has exactly one end ("f") with the
 * same id and the other way round, the end lies inside a span of its track
 * and the start inside a span of the sender's. test_trace.c and
 * scenario_trace.c use it; each check prints why it failed. */
#ifndef WEFT_TEST_TRACE_CHECK_H
#define WEFT_TEST_TRACE_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char ph;
  long tid;
  double ts;
  bool has_id;
  long long id;
  bool bp_e;
  char name[64];
  char arg_name[64]; /* args.name (thread_name's). */
} tc_event_t;

typedef struct {
  tc_event_t* ev;
  size_t n, cap;
  char err[256];
} tc_trace_t;

typedef struct {
  const char* base;
  const char* s;
  const char* end;
  tc_trace_t* t;
} tc_parser_t;

static inline void tc_skip_ws(tc_parser_t* p) {
  while (p->s < p->end &&
         (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t'))
    p->s++;
}

static inline bool tc_fail(tc_parser_t* p, const char* what) {
  if (p->t->err[0] == '\0')
    snprintf(p->t->err, sizeof(p->t->err), "JSON: %s at byte %ld", what,
             (long)(p->s - p->base));
  return false;
}

/* A string; its text (unescaped roughly, enough for names) into `out`. */
static inline bool tc_string(tc_parser_t* p, char* out, size_t cap) {
  size_t k = 0;
  if (p->s >= p->end || *p->s != '"')
    return tc_fail(p, "string expected");
  p->s++;
  while (p->s < p->end && *p->s != '"') {
    char c = *p->s++;
    if ((unsigned char)c < 0x20)
      return tc_fail(p, "control character in a string");
    if (c == '\\') {
      if (p->s >= p->end)
        return tc_fail(p, "cut escape");
      c = *p->s++;
      if (c == 'u') {
        int i;
        for (i = 0; i < 4; i++) {
          if (p->s >= p->end || strchr("0123456789abcdefABCDEF", *p->s) == NULL)
            return tc_fail(p, "bad \\u escape");
          p->s++;
        }
        c = '?';
      } else if (strchr("\"\\/bfnrt", c) == NULL) {
        return tc_fail(p, "bad escape");
      }
    }
    if (out != NULL && k + 1 < cap)
      out[k++] = c;
  }
  if (p->s >= p->end)
    return tc_fail(p, "unterminated string");
  p->s++;
  if (out != NULL)
    out[k] = '\0';
  return true;
}

static inline bool tc_number(tc_parser_t* p, double* out) {
  const char* b = p->s;
  char buf[64];
  if (p->s < p->end && *p->s == '-')
    p->s++;
  if (p->s >= p->end || *p->s < '0' || *p->s > '9')
    return tc_fail(p, "number expected");
  if (*p->s == '0' && p->s + 1 < p->end && p->s[1] >= '0' && p->s[1] <= '9')
    return tc_fail(p, "leading zero");
  while (p->s < p->end && *p->s >= '0' && *p->s <= '9')
    p->s++;
  if (p->s < p->end && *p->s == '.') {
    p->s++;
    if (p->s >= p->end || *p->s < '0' || *p->s > '9')
      return tc_fail(p, "digit expected after '.'");
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9')
      p->s++;
  }
  if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
    p->s++;
    if (p->s < p->end && (*p->s == '+' || *p->s == '-'))
      p->s++;
    if (p->s >= p->end || *p->s < '0' || *p->s > '9')
      return tc_fail(p, "bad exponent");
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9')
      p->s++;
  }
  if (out != NULL) {
    size_t n = (size_t)(p->s - b);
    if (n >= sizeof(buf))
      n = sizeof(buf) - 1;
    memcpy(buf, b, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
  }
  return true;
}

/* What an object is to the reader: the root, an event, an event's args,
 * or anything else (checked, not read). */
enum { TC_ANY, TC_ROOT, TC_EVENT, TC_ARGS };

static inline bool tc_value(tc_parser_t* p, int depth, int role,
                            tc_event_t* ev);

static inline bool tc_literal(tc_parser_t* p, const char* lit) {
  size_t n = strlen(lit);
  if ((size_t)(p->end - p->s) < n || memcmp(p->s, lit, n) != 0)
    return tc_fail(p, "bad literal");
  p->s += n;
  return true;
}

static inline bool tc_object(tc_parser_t* p, int depth, int role,
                             tc_event_t* ev) {
  p->s++; /* '{' */
  tc_skip_ws(p);
  if (p->s < p->end && *p->s == '}') {
    p->s++;
    return true;
  }
  for (;;) {
    char key[64];
    tc_skip_ws(p);
    if (!tc_string(p, key, sizeof(key)))
      return false;
    tc_skip_ws(p);
    if (p->s >= p->end || *p->s != ':')
      return tc_fail(p, "':' expected");
    p->s++;
    tc_skip_ws(p);
    if (role == TC_EVENT && strcmp(key, "ph") == 0) {
      char ph[8];
      if (!tc_string(p, ph, sizeof(ph)))
        return false;
      ev->ph = ph[0];
    } else if (role == TC_EVENT && strcmp(key, "name") == 0) {
      if (!tc_string(p, ev->name, sizeof(ev->name)))
        return false;
    } else if (role == TC_EVENT && strcmp(key, "bp") == 0) {
      char bp[8];
      if (!tc_string(p, bp, sizeof(bp)))
        return false;
      ev->bp_e = strcmp(bp, "e") == 0;
    } else if (role == TC_EVENT && (strcmp(key, "tid") == 0 ||
                                    strcmp(key, "ts") == 0 ||
                                    strcmp(key, "id") == 0)) {
      double v;
      if (!tc_number(p, &v))
        return false;
      if (key[1] == 'i')
        ev->tid = (long)v;
      else if (key[1] == 's')
        ev->ts = v;
      else {
        ev->id = (long long)v;
        ev->has_id = true;
      }
    } else if (role == TC_EVENT && strcmp(key, "args") == 0) {
      if (p->s >= p->end || *p->s != '{')
        return tc_fail(p, "args must be an object");
      if (!tc_object(p, depth + 1, TC_ARGS, ev))
        return false;
    } else if (role == TC_ARGS && strcmp(key, "name") == 0 && p->s < p->end &&
               *p->s == '"') {
      if (!tc_string(p, ev->arg_name, sizeof(ev->arg_name)))
        return false;
    } else if (!tc_value(p, depth + 1,
                         role == TC_ROOT && strcmp(key, "traceEvents") == 0
                             ? TC_EVENT
                             : TC_ANY,
                         NULL)) {
      return false;
    }
    tc_skip_ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      continue;
    }
    if (p->s < p->end && *p->s == '}') {
      p->s++;
      return true;
    }
    return tc_fail(p, "',' or '}' expected");
  }
}

/* `role` TC_EVENT on an array: its elements are events. */
static inline bool tc_array(tc_parser_t* p, int depth, int role) {
  p->s++; /* '[' */
  tc_skip_ws(p);
  if (p->s < p->end && *p->s == ']') {
    p->s++;
    return true;
  }
  for (;;) {
    tc_skip_ws(p);
    if (role == TC_EVENT) {
      tc_trace_t* t = p->t;
      tc_event_t* ev;
      if (p->s >= p->end || *p->s != '{')
        return tc_fail(p, "event object expected");
      if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        tc_event_t* n = realloc(t->ev, ncap * sizeof(*n));
        if (n == NULL)
          return tc_fail(p, "out of memory");
        t->ev = n;
        t->cap = ncap;
      }
      ev = &t->ev[t->n++];
      memset(ev, 0, sizeof(*ev));
      ev->tid = -1;
      if (!tc_object(p, depth + 1, TC_EVENT, ev))
        return false;
    } else if (!tc_value(p, depth + 1, TC_ANY, NULL)) {
      return false;
    }
    tc_skip_ws(p);
    if (p->s < p->end && *p->s == ',') {
      p->s++;
      continue;
    }
    if (p->s < p->end && *p->s == ']') {
      p->s++;
      return true;
    }
    return tc_fail(p, "',' or ']' expected");
  }
}

static inline bool tc_value(tc_parser_t* p, int depth, int role,
                            tc_event_t* ev) {
  if (depth > 64)
    return tc_fail(p, "nested too deep");
  tc_skip_ws(p);
  if (p->s >= p->end)
    return tc_fail(p, "value expected");
  switch (*p->s) {
    case '{':
      return tc_object(p, depth, role == TC_EVENT ? TC_ANY : role, ev);
    case '[':
      return tc_array(p, depth, role);
    case '"':
      return tc_string(p, NULL, 0);
    case 't':
      return tc_literal(p, "true");
    case 'f':
      return tc_literal(p, "false");
    case 'n':
      return tc_literal(p, "null");
    default:
      return tc_number(p, NULL);
  }
}

/* Parse the file at `path` into `t` (free with tc_free). False, with
 * t->err, when it cannot be read or is not one JSON value whose root is an
 * object with a "traceEvents" array. */
static inline bool tc_load(const char* path, tc_trace_t* t) {
  FILE* f = fopen(path, "rb");
  char* buf;
  long size;
  tc_parser_t p;
  bool ok;
  memset(t, 0, sizeof(*t));
  if (f == NULL) {
    snprintf(t->err, sizeof(t->err), "cannot open %.200s", path);
    return false;
  }
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)size + 1);
  if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) {
    fclose(f);
    free(buf);
    snprintf(t->err, sizeof(t->err), "cannot read %.200s", path);
    return false;
  }
  fclose(f);
  p.base = p.s = buf;
  p.end = buf + size;
  p.t = t;
  tc_skip_ws(&p);
  if (p.s >= p.end || *p.s != '{') {
    free(buf);
    snprintf(t->err, sizeof(t->err), "JSON: the root is not an object");
    return false;
  }
  ok = tc_object(&p, 0, TC_ROOT, NULL);
  if (ok) {
    tc_skip_ws(&p);
    if (p.s != p.end)
      ok = tc_fail(&p, "text after the value");
  }
  if (ok && t->n == 0) {
    snprintf(t->err, sizeof(t->err), "no traceEvents");
    ok = false;
  }
  free(buf);
  return ok;
}

static inline void tc_free(tc_trace_t* t) {
  free(t->ev);
  t->ev = NULL;
  t->n = t->cap = 0;
}

/* The thread_name of track `tid`, or NULL. */
static inline const char* tc_track_name(const tc_trace_t* t, long tid) {
  size_t i;
  for (i = 0; i < t->n; i++) {
    if (t->ev[i].ph == 'M' && t->ev[i].tid == tid &&
        strcmp(t->ev[i].name, "thread_name") == 0)
      return t->ev[i].arg_name;
  }
  return NULL;
}

/* How many tracks are named `name` (prefix: names that start with it). */
static inline int tc_tracks_named(const tc_trace_t* t, const char* name,
                                  bool prefix) {
  size_t i;
  int n = 0;
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    if (e->ph == 'M' && strcmp(e->name, "thread_name") == 0 &&
        (prefix ? strncmp(e->arg_name, name, strlen(name)) == 0
                : strcmp(e->arg_name, name) == 0))
      n++;
  }
  return n;
}

/* Events of phase `ph` named `name` (NULL: any), on the track named
 * `track` (NULL: any; prefix match). */
static inline int tc_count(const tc_trace_t* t, char ph, const char* name,
                           const char* track) {
  size_t i;
  int n = 0;
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    const char* tn;
    if (e->ph != ph || (name != NULL && strcmp(e->name, name) != 0))
      continue;
    if (track != NULL) {
      tn = tc_track_name(t, e->tid);
      if (tn == NULL || strncmp(tn, track, strlen(track)) != 0)
        continue;
    }
    n++;
  }
  return n;
}

/* Spans named `name` that begin while another span is open on their track
 * (a callback the loop runs is never inside another one). */
static inline int tc_nested(const tc_trace_t* t, const char* name) {
  size_t i, j;
  int n = 0;
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    int depth = 0;
    if (e->ph != 'B' || strcmp(e->name, name) != 0)
      continue;
    for (j = 0; j < i; j++) {
      if (t->ev[j].tid != e->tid)
        continue;
      if (t->ev[j].ph == 'B')
        depth++;
      else if (t->ev[j].ph == 'E')
        depth--;
    }
    if (depth > 0)
      n++;
  }
  return n;
}

typedef struct {
  long tid;
  double b, e;
} tc_span_t;

static int tc_cmp_span(const void* a, const void* b) {
  const tc_span_t* x = a;
  const tc_span_t* y = b;
  if (x->tid != y->tid)
    return x->tid < y->tid ? -1 : 1;
  return x->b < y->b ? -1 : x->b > y->b;
}

static int tc_cmp_ll(const void* a, const void* b) {
  long long x = *(const long long*)a, y = *(const long long*)b;
  return x < y ? -1 : x > y;
}

/* The checks every trace passes (see the top of the file). False, with
 * t->err, at the first that fails. `*nflows`: the arrows found. */
static inline bool tc_check(tc_trace_t* t, size_t* nflows) {
  size_t i, j, nspans = 0, ns = 0, nf = 0;
  tc_span_t* spans = calloc(t->n + 1, sizeof(*spans));
  long long* sid = calloc(t->n + 1, sizeof(*sid));
  long long* fid = calloc(t->n + 1, sizeof(*fid));
  /* Per track, in file order: the open spans (indices into `spans`). */
  size_t* stack = calloc(t->n + 1, sizeof(*stack));
  long* tids = calloc(t->n + 1, sizeof(*tids));
  size_t ntids = 0, k;
  bool ok = false;
  *nflows = 0;
  if (spans == NULL || sid == NULL || fid == NULL || stack == NULL ||
      tids == NULL) {
    snprintf(t->err, sizeof(t->err), "out of memory");
    goto out;
  }
  /* Tracks: one thread_name each, and every track with events has one. */
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    if (e->ph == 'M' && strcmp(e->name, "thread_name") == 0) {
      for (j = i + 1; j < t->n; j++) {
        if (t->ev[j].ph == 'M' && t->ev[j].tid == e->tid &&
            strcmp(t->ev[j].name, "thread_name") == 0) {
          snprintf(t->err, sizeof(t->err), "track %ld is named twice ('%s', '%s')",
                   e->tid, e->arg_name, t->ev[j].arg_name);
          goto out;
        }
      }
    } else if (e->ph != 'M' && tc_track_name(t, e->tid) == NULL) {
      snprintf(t->err, sizeof(t->err),
               "event %zu ('%c' %s) is on track %ld, which has no thread_name",
               i, e->ph, e->name, e->tid);
      goto out;
    }
  }
  /* Spans: per track, in file order, nested and in time order. */
  for (i = 0; i < t->n; i++) {
    for (k = 0; k < ntids && tids[k] != t->ev[i].tid; k++) {
    }
    if (k == ntids)
      tids[ntids++] = t->ev[i].tid;
  }
  for (k = 0; k < ntids; k++) {
    size_t depth = 0;
    double last = -1;
    for (j = 0; j < t->n; j++) {
      const tc_event_t* x = &t->ev[j];
      if (x->tid != tids[k])
        continue;
      if (x->ph == 'B') {
        if (x->ts < last) {
          snprintf(t->err, sizeof(t->err),
                   "track %ld: '%s' begins at %.3f, before %.3f", x->tid,
                   x->name, x->ts, last);
          goto out;
        }
        last = x->ts;
        spans[nspans].tid = x->tid;
        spans[nspans].b = x->ts;
        spans[nspans].e = -1;
        stack[depth++] = nspans++;
      } else if (x->ph == 'E') {
        if (depth == 0) {
          snprintf(t->err, sizeof(t->err),
                   "track %ld: an end at %.3f closes no span", x->tid, x->ts);
          goto out;
        }
        if (x->ts < last) {
          snprintf(t->err, sizeof(t->err),
                   "track %ld: an end at %.3f comes before %.3f", x->tid,
                   x->ts, last);
          goto out;
        }
        last = x->ts;
        spans[stack[--depth]].e = x->ts;
      } else if (x->ph == 'f') {
        if (!x->bp_e || depth == 0 || x->ts < spans[stack[depth - 1]].b) {
          snprintf(t->err, sizeof(t->err),
                   "track %ld: arrow %lld ends outside a span", x->tid, x->id);
          goto out;
        }
      }
    }
    if (depth != 0) {
      snprintf(t->err, sizeof(t->err), "track %ld: %zu span(s) never end",
               tids[k], depth);
      goto out;
    }
  }
  /* Arrows: ids of starts and ends match one to one. */
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    if ((e->ph == 's' || e->ph == 'f') && !e->has_id) {
      snprintf(t->err, sizeof(t->err), "an arrow event without an id");
      goto out;
    }
    if (e->ph == 's')
      sid[ns++] = e->id;
    else if (e->ph == 'f')
      fid[nf++] = e->id;
  }
  qsort(sid, ns, sizeof(*sid), tc_cmp_ll);
  qsort(fid, nf, sizeof(*fid), tc_cmp_ll);
  for (i = 0; i < ns || i < nf; i++) {
    if (i >= ns || i >= nf || sid[i] != fid[i] ||
        (i > 0 && sid[i] == sid[i - 1])) {
      snprintf(t->err, sizeof(t->err),
               "arrows: %zu starts and %zu ends do not pair up by id (at %lld)",
               ns, nf, i < ns ? sid[i] : i < nf ? fid[i] : -1LL);
      goto out;
    }
  }
  /* Each start lies inside a span of its (the sender's) track: the last
   * span to begin before it, or one around that. */
  qsort(spans, nspans, sizeof(*spans), tc_cmp_span);
  for (i = 0; i < t->n; i++) {
    const tc_event_t* e = &t->ev[i];
    size_t lo = 0, hi = nspans;
    bool found = false;
    if (e->ph != 's')
      continue;
    while (lo < hi) { /* The first span after (tid, ts). */
      size_t mid = (lo + hi) / 2;
      if (spans[mid].tid < e->tid ||
          (spans[mid].tid == e->tid && spans[mid].b <= e->ts))
        lo = mid + 1;
      else
        hi = mid;
    }
    for (j = lo; j > 0 && spans[j - 1].tid == e->tid && !found; j--)
      found = spans[j - 1].e >= e->ts;
    if (!found) {
      snprintf(t->err, sizeof(t->err),
               "arrow %lld starts at %.3f on track %ld outside any span",
               e->id, e->ts, e->tid);
      goto out;
    }
  }
  *nflows = ns;
  ok = true;
out:
  free(spans);
  free(sid);
  free(fid);
  free(stack);
  free(tids);
  return ok;
}

#endif /* WEFT_TEST_TRACE_CHECK_H */
