/* histogram.c - a lock-free log-linear histogram (see histogram.h). */
#include "histogram.h"

/* Bucket of `v`: exact below 2 * SUB, then SUB buckets per power of two. */
static unsigned bucket_of(uint64_t v) {
  unsigned e;
  if (v < (uint64_t)2 * WEFT__HIST_SUB)
    return (unsigned)v;
  e = 63u - (unsigned)__builtin_clzll(v); /* >= 5 */
  /* The 4 bits below the top one choose the bucket within [2^e, 2^e+1). */
  return (e - 3u) * WEFT__HIST_SUB + (unsigned)((v >> (e - 4u)) & 15u);
}

/* The smallest value in bucket `b` and the bucket's width. */
static void bucket_range(unsigned b, double* lo, double* width) {
  unsigned e, sub;
  if (b < 2u * WEFT__HIST_SUB) {
    *lo = b;
    *width = 1;
    return;
  }
  e = b / WEFT__HIST_SUB + 3u;
  sub = b % WEFT__HIST_SUB;
  *width = (double)((uint64_t)1 << (e - 4u));
  *lo = (double)((uint64_t)1 << e) + sub * *width;
}

void weft__hist_init(weft__hist_t* h) {
  unsigned i;
  for (i = 0; i < WEFT__HIST_BUCKETS; i++)
    atomic_init(&h->buckets[i], 0);
}

void weft__hist_add(weft__hist_t* h, uint64_t v) {
  /* relaxed: counters read only for statistics; nothing is ordered by
   * them. */
  atomic_fetch_add_explicit(&h->buckets[bucket_of(v)], 1, memory_order_relaxed);
}

double weft__hist_quantile(weft__hist_t* h, double q) {
  uint64_t total = 0, seen = 0, rank;
  unsigned i;
  for (i = 0; i < WEFT__HIST_BUCKETS; i++)
    total += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
  if (total == 0)
    return 0;
  if (q < 0)
    q = 0;
  if (q > 1)
    q = 1;
  /* The rank-th smallest value, 1-based. */
  rank = (uint64_t)(q * (double)total + 0.5);
  if (rank < 1)
    rank = 1;
  if (rank > total)
    rank = total;
  for (i = 0; i < WEFT__HIST_BUCKETS; i++) {
    seen += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    if (seen >= rank) {
      double lo, width;
      bucket_range(i, &lo, &width);
      return width <= 1 ? lo : lo + width / 2;
    }
  }
  return 0;
}
