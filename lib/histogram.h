/* histogram.h - a lock-free log-linear histogram of 64-bit values (the
 * pool's wait and run times), for percentiles with ~6% error.
 *
 * Values below 32 each get a bucket; above, every power of two is cut in 16
 * equal buckets. Recording is one relaxed atomic add, from any thread;
 * reading walks the buckets (a snapshot that may miss records made during
 * the walk, which statistics can live with). */
#ifndef WEFT_LIB_HISTOGRAM_H
#define WEFT_LIB_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#define WEFT__HIST_SUB 16
#define WEFT__HIST_BUCKETS (64 * WEFT__HIST_SUB)

typedef struct weft__hist_s {
  _Atomic uint64_t buckets[WEFT__HIST_BUCKETS];
} weft__hist_t;

/* Zero it (before any thread records). */
void weft__hist_init(weft__hist_t* h);
/* Record one value. Thread: any. */
void weft__hist_add(weft__hist_t* h, uint64_t v);
/* The value at quantile `q` (0..1), the middle of its bucket; 0 when
 * nothing was recorded. Thread: any. */
double weft__hist_quantile(weft__hist_t* h, double q);

#endif /* WEFT_LIB_HISTOGRAM_H */
