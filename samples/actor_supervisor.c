/* actor_supervisor - let it crash: a worker actor that fails on every 5th
 * message it handles, restarted by its supervisor; the client retries a
 * job whose worker died under it on the fresh worker.
 *
 * The worker's state is made anew at each (re)start (init), so a
 * restarted worker starts counting again. Main is a plain thread: it
 * calls the worker (blocking, with a timeout) and asks the supervisor for
 * its child when a call finds the worker gone. */
#include <stdio.h>
#include <stdlib.h>
#include <weft/weft.h>

#define FAIL_EVERY 5
#define JOBS 20

typedef struct {
  int handled; /* by this incarnation */
} worker_t;

static void* worker_init(void* arg) {
  (void)arg;
  return calloc(1, sizeof(worker_t));
}

static void worker_stop(void* state, int reason) {
  (void)reason;
  free(state);
}

/* job -> job * job, except every FAIL_EVERY-th message: crash. */
static int worker(weft_actor_t* self, void* state, weft_msg_t* msg) {
  worker_t* w = state;
  weft_reply_t* r;
  int64_t job;
  (void)self;
  if (++w->handled % FAIL_EVERY == 0)
    return WEFT_ERANGE; /* "crash": the actor ends with this reason */
  if (weft_msg_read(msg, "I", &job) != 0 || weft_msg_take_reply(msg, &r) != 0)
    return 0;
  return weft_reply_send_fmt(r, "I", job * job);
}

int main(void) {
  weft_actor_system_t* sys;
  weft_child_spec_t child = {.name = "squarer",
                             .restart = WEFT_RESTART_PERMANENT,
                             .behaviour = worker,
                             .init = worker_init,
                             .on_stop = worker_stop};
  weft_supervisor_opts_t sup_opts = {.strategy = WEFT_ONE_FOR_ONE,
                                     .max_restarts = 10,
                                     .period_ms = 10000,
                                     .children = &child,
                                     .nchildren = 1};
  weft_actor_id sup, w = 0;
  uint64_t restarts = 0;
  int64_t job, sum = 0;
  int retries = 0;
  size_t n;

  if (weft_actor_system_new(&sys, NULL) != 0 ||
      weft_supervisor_spawn(sys, &sup_opts, NULL, &sup) != 0)
    return 1;
  for (job = 1; job <= JOBS; job++) {
    char req = (char)job; /* A msgpack positive fixint is the byte itself. */
    weft_msg_t* reply = NULL;
    int64_t sq;
    int err;
    /* WEFT_ERANGE: it crashed on our job (a call gets the reason);
     * WEFT_EDEADACTOR: it was gone already. Ask for its successor. */
    while ((err = weft_actor_call(w, &req, 1, 5000, &reply)) == WEFT_ERANGE ||
           err == WEFT_EDEADACTOR) {
      weft_actor_id old = w;
      if (err == WEFT_ERANGE)
        retries++;
      do /* The supervisor took the crash before our question. */
        weft_supervisor_children(sup, &w, 1, &n, 5000);
      while (w == 0 || w == old);
    }
    if (err != 0) {
      printf("job %lld: %s\n", (long long)job, weft_err_name(err));
      return 1;
    }
    weft_msg_read(reply, "I", &sq);
    sum += sq;
    weft_msg_free(reply);
  }
  weft_supervisor_restarts(sup, &restarts, 5000);
  printf("jobs done: %d, sum of squares: %lld\n", JOBS, (long long)sum);
  printf("jobs retried after a crash: %d, supervisor restarts: %llu\n",
         retries, (unsigned long long)restarts);
  weft_actor_system_free(sys);
  return 0;
}
