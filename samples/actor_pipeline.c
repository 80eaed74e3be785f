/* actor_pipeline - a three-stage pipeline that keeps every core busy:
 * a source cuts [0, LIMIT) into ranges, a stage of counters (two per
 * scheduler thread) counts the primes in each, a sink adds them up.
 *
 * The source sends in rounds (a message to itself between rounds), so if
 * the counters fall behind, weft mutes the source until they catch up:
 * memory stays bounded however fast it could produce. Main waits for the
 * sink's answer with a blocking call. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include <weft/weft.h>

#define LIMIT 2000000
#define RANGE 1000 /* numbers per message */
#define ROUND 64   /* messages per source turn */

typedef struct {
  weft_actor_id* counters;
  int ncounters;
  int64_t next; /* first number not sent yet */
} source_t;

typedef struct {
  int64_t primes, ranges;
  weft_reply_t* done;
} sink_t;

static bool is_prime(int64_t n) {
  if (n < 2)
    return false;
  for (int64_t d = 2; d * d <= n; d++)
    if (n % d == 0)
      return false;
  return true;
}

static int source(weft_actor_t* self, void* state, weft_msg_t* msg) {
  source_t* s = state;
  (void)msg;
  for (int i = 0; i < ROUND && s->next < LIMIT; i++, s->next += RANGE)
    weft_actor_send_fmt(s->counters[(s->next / RANGE) % s->ncounters], "[II]",
                        s->next, s->next + RANGE);
  if (s->next < LIMIT) /* another round, after whatever else is queued */
    return weft_actor_send(weft_actor_self(self), "\xc0", 1);
  return weft_actor_stop(self, 0);
}

/* [from, to] -> the sink gets the count of primes in [from, to). */
static int counter(weft_actor_t* self, void* state, weft_msg_t* msg) {
  weft_actor_id sink = *(weft_actor_id*)state;
  int64_t from, to, n = 0;
  (void)self;
  if (weft_msg_read(msg, "[II]", &from, &to) != 0)
    return 0;
  for (int64_t i = from; i < to; i++)
    n += is_prime(i);
  return weft_actor_send_fmt(sink, "I", n);
}

static int sink(weft_actor_t* self, void* state, weft_msg_t* msg) {
  sink_t* s = state;
  int64_t n;
  (void)self;
  if (weft_msg_is_request(msg)) { /* main: tell me when it is all in */
    weft_msg_take_reply(msg, &s->done);
  } else if (weft_msg_read(msg, "I", &n) == 0) {
    s->primes += n;
    s->ranges++;
  }
  if (s->done != NULL && s->ranges == LIMIT / RANGE) {
    /* Take the reply out first: once answered, main may go on, and the
     * state is main's. */
    weft_reply_t* done = s->done;
    s->done = NULL;
    weft_reply_send_fmt(done, "I", s->primes);
  }
  return 0;
}

int main(void) {
  weft_actor_system_t* sys;
  sink_t sk = {0};
  weft_actor_id sink_id, src;
  int ncpu = (int)uv_available_parallelism();
  source_t so = {calloc((size_t)ncpu * 2, sizeof(weft_actor_id)), ncpu * 2, 0};
  weft_msg_t* total;
  int64_t primes = 0;
  uint64_t t0;

  if (weft_actor_system_new(&sys, NULL) != 0) /* a scheduler per CPU */
    return 1;
  weft_actor_spawn(sys, sink, &sk, NULL, &sink_id);
  for (int i = 0; i < so.ncounters; i++)
    weft_actor_spawn(sys, counter, &sink_id, NULL, &so.counters[i]);
  weft_actor_spawn(sys, source, &so, NULL, &src);

  t0 = uv_hrtime();
  weft_actor_send(src, "\xc0", 1); /* go */
  if (weft_actor_call(sink_id, "\xc0", 1, 0, &total) != 0)
    return 1;
  weft_msg_read(total, "I", &primes);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  printf("primes below %d: %lld\n", LIMIT, (long long)primes);
  printf("%d ranges of %d through %d counters on %d scheduler threads\n",
         LIMIT / RANGE, RANGE, so.ncounters, ncpu);
  printf("%.0f ranges/s, %.2f s\n", (LIMIT / RANGE) / secs, secs);
  weft_msg_free(total);
  weft_actor_system_free(sys);
  free(so.counters);
  return primes == 148933 ? 0 : 1;
}
