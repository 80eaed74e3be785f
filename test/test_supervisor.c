/* test_supervisor.c - Criterion suite for supervisors (weft/supervisor.h):
 * each strategy restarts the right children, and only once the old ones
 * are gone; restart types; the intensity, past which the supervisor ends
 * with WEFT_ERESTARTS; nested supervisors; plain weft workers supervised
 * (an uncaught error, a heap breach, an exit code); the children go with
 * their supervisor; bad specs.
 *
 * Children record their starts and ends in a shared log (under a lock);
 * the test's thread reads it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

#include "support.h"

TestSuite(supervisor, .timeout = 60);

#define UNTIL(cond)                              \
  ({                                             \
    int waited_ = 0;                             \
    while (!(cond) && waited_ < 20000) {         \
      sleep_ms(1);                               \
      waited_++;                                 \
    }                                            \
    (bool)(cond);                                \
  })

/* --- The log ----------------------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[4096];
static int starts[8], stops[8];

static void log_event(char kind, int child) {
  size_t n;
  pthread_mutex_lock(&log_lock);
  n = strlen(log_buf);
  if (n + 3 < sizeof(log_buf)) {
    log_buf[n] = kind;
    log_buf[n + 1] = (char)('A' + child);
    log_buf[n + 2] = '\0';
  }
  if (kind == '+')
    starts[child]++;
  else
    stops[child]++;
  pthread_mutex_unlock(&log_lock);
}

static void log_reset(void) {
  pthread_mutex_lock(&log_lock);
  log_buf[0] = '\0';
  memset(starts, 0, sizeof(starts));
  memset(stops, 0, sizeof(stops));
  pthread_mutex_unlock(&log_lock);
}

static int count(int* v, int child) {
  int n;
  pthread_mutex_lock(&log_lock);
  n = v[child];
  pthread_mutex_unlock(&log_lock);
  return n;
}

static void log_copy(char* out, size_t cap) {
  size_t n;
  pthread_mutex_lock(&log_lock);
  /* Cut to `cap` on purpose (snprintf here made gcc 12's
   * -Wformat-truncation fail optimized -Werror builds). */
  n = strnlen(log_buf, cap - 1);
  memcpy(out, log_buf, n);
  out[n] = '\0';
  pthread_mutex_unlock(&log_lock);
}

/* --- Children ----------------------------------------------------------------- */

typedef struct {
  int child; /* Index: A, B, C... */
} kid_t;

static void* kid_init(void* arg) {
  kid_t* k = malloc(sizeof(*k));
  k->child = (int)(intptr_t)arg;
  log_event('+', k->child);
  return k;
}

static void kid_stop(void* state, int reason) {
  kid_t* k = state;
  (void)reason;
  log_event('-', k->child);
  free(k);
}

/* Ends with the (negative or zero) value it gets; answers requests. */
static int kid(weft_actor_t* self, void* state, weft_msg_t* msg) {
  int64_t v = msg_int(msg);
  (void)state;
  if (weft_msg_is_request(msg))
    return weft_msg_reply(msg, "\x01", 1);
  if (v <= 0)
    return weft_actor_stop(self, (int)v);
  return 0;
}

static weft_child_spec_t kid_spec(int child, weft_restart_kind restart) {
  weft_child_spec_t c;
  memset(&c, 0, sizeof(c));
  c.name = "kid";
  c.restart = restart;
  c.behaviour = kid;
  c.init = kid_init;
  c.on_stop = kid_stop;
  c.arg = (void*)(intptr_t)child;
  return c;
}

static weft_actor_system_t* new_system(void) {
  weft_actor_system_t* sys = NULL;
  weft_actor_system_opts_t o = {0};
  o.schedulers = 2;
  cr_assert_eq(weft_actor_system_new(&sys, &o), 0);
  log_reset();
  return sys;
}

static void children(weft_actor_id sup, weft_actor_id* ids, size_t want) {
  size_t n = 0;
  cr_assert_eq(weft_supervisor_children(sup, ids, 8, &n, 10000), 0);
  cr_assert_eq(n, want);
}

static void fail(weft_actor_id id, int reason) {
  packed_t p = packed_int(reason);
  cr_assert_eq(weft_actor_send(id, p.data, p.len), 0);
}

static uint64_t restarts(weft_actor_id sup) {
  uint64_t n = 0;
  cr_assert_eq(weft_supervisor_restarts(sup, &n, 10000), 0);
  return n;
}

static weft_actor_id spawn_sup(weft_actor_system_t* sys, weft_sup_strategy st,
                               const weft_child_spec_t* ch, size_t n,
                               unsigned max_restarts) {
  weft_supervisor_opts_t o;
  weft_actor_id sup = 0;
  memset(&o, 0, sizeof(o));
  o.strategy = st;
  o.children = ch;
  o.nchildren = n;
  o.max_restarts = max_restarts;
  o.period_ms = 60000;
  cr_assert_eq(weft_supervisor_spawn(sys, &o, NULL, &sup), 0);
  return sup;
}

/* Three permanent children; fail B; wait until the supervisor says B is
 * running again with a new id. */
static void fail_b(weft_actor_id sup, weft_actor_id* before,
                   weft_actor_id* after) {
  children(sup, before, 3);
  cr_assert(UNTIL(count(starts, 2) == 1), "all three started");
  fail(before[1], WEFT_ERANGE);
  cr_assert(UNTIL(restarts(sup) == 1));
  cr_assert(UNTIL((children(sup, after, 3), after[0] && after[1] && after[2] &&
                   after[1] != before[1])));
}

Test(supervisor, one_for_one_restarts_only_the_failed_child) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[3] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_PERMANENT),
                             kid_spec(2, WEFT_RESTART_PERMANENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 3, 0);
  weft_actor_id b[3], a[3];
  fail_b(sup, b, a);
  cr_assert_eq(a[0], b[0]);
  cr_assert_eq(a[2], b[2]);
  cr_assert_eq(count(starts, 0), 1);
  cr_assert_eq(count(starts, 1), 2);
  cr_assert_eq(count(starts, 2), 1);
  weft_actor_system_free(sys);
}

Test(supervisor, one_for_all_restarts_all_after_the_old_ones_ended) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[3] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_PERMANENT),
                             kid_spec(2, WEFT_RESTART_PERMANENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ALL, ch, 3, 0);
  weft_actor_id b[3], a[3];
  char log[256];
  fail_b(sup, b, a);
  cr_assert_neq(a[0], b[0]);
  cr_assert_neq(a[2], b[2]);
  cr_assert(UNTIL(count(starts, 2) == 2));
  log_copy(log, sizeof(log));
  /* Started A B C; B failed; C and A were killed (in reverse order; they
   * end in whichever order their schedulers get to it); only then A B C
   * started again, in order. */
  cr_assert(strcmp(log, "+A+B+C-B-C-A+A+B+C") == 0 ||
                strcmp(log, "+A+B+C-B-A-C+A+B+C") == 0,
            "log %s", log);
  weft_actor_system_free(sys);
}

Test(supervisor, rest_for_one_restarts_the_failed_child_and_those_after_it) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[3] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_PERMANENT),
                             kid_spec(2, WEFT_RESTART_PERMANENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_REST_FOR_ONE, ch, 3, 0);
  weft_actor_id b[3], a[3];
  char log[256];
  fail_b(sup, b, a);
  cr_assert_eq(a[0], b[0]);
  cr_assert_neq(a[2], b[2]);
  cr_assert(UNTIL(count(starts, 2) == 2));
  log_copy(log, sizeof(log));
  cr_assert_str_eq(log, "+A+B+C-B-C+B+C", "log %s", log);
  weft_actor_system_free(sys);
}

Test(supervisor, restart_types_permanent_transient_temporary) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[3] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_TRANSIENT),
                             kid_spec(2, WEFT_RESTART_TEMPORARY)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 3, 10);
  weft_actor_id ids[3];
  children(sup, ids, 3);
  cr_assert(UNTIL(count(starts, 2) == 1));
  fail(ids[0], 0); /* Permanent: even a normal end restarts it. */
  cr_assert(UNTIL(count(starts, 0) == 2));
  fail(ids[1], 0); /* Transient, normal end: not restarted. */
  cr_assert(UNTIL(count(stops, 1) == 1));
  fail(ids[2], WEFT_ERANGE); /* Temporary: never restarted. */
  cr_assert(UNTIL(count(stops, 2) == 1));
  children(sup, ids, 3);
  cr_assert_eq(ids[1], 0);
  cr_assert_eq(ids[2], 0);
  cr_assert_eq(count(starts, 1), 1);
  cr_assert_eq(count(starts, 2), 1);
  cr_assert_eq(restarts(sup), 1);
  weft_actor_system_free(sys);
}

Test(supervisor, a_transient_child_that_fails_is_restarted) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[1] = {kid_spec(0, WEFT_RESTART_TRANSIENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 1, 0);
  weft_actor_id ids[1];
  children(sup, ids, 1);
  fail(ids[0], WEFT_EINVAL);
  cr_assert(UNTIL(count(starts, 0) == 2));
  weft_actor_system_free(sys);
}

/* Watches one actor and records the reason of its DOWN. */
static atomic_int down_reason;
static atomic_int down_seen;

static int watch(weft_actor_t* self, void* state, weft_msg_t* msg) {
  weft_signal_t s;
  uint64_t ref;
  (void)state;
  if (weft_actor_signal(msg, &s) == WEFT_SIGNAL_DOWN) {
    atomic_store(&down_reason, s.reason);
    atomic_store(&down_seen, 1);
    return 0;
  }
  if (weft_msg_is_request(msg))
    return weft_msg_reply(msg, "\x01", 1);
  return weft_actor_monitor(self, (weft_actor_id)msg_int(msg), &ref);
}

static weft_actor_id watch_it(weft_actor_system_t* sys, weft_actor_id id) {
  weft_actor_id w;
  weft_msg_t* r = NULL;
  packed_t p = packed_int((int64_t)id);
  atomic_store(&down_seen, 0);
  cr_assert_eq(weft_actor_spawn(sys, watch, NULL, NULL, &w), 0);
  cr_assert_eq(weft_actor_send(w, p.data, p.len), 0);
  cr_assert_eq(weft_actor_call(w, p.data, p.len, 10000, &r), 0);
  weft_msg_free(r);
  return w;
}

Test(supervisor, past_the_intensity_it_ends_with_erestarts_and_its_children) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[2] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_PERMANENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 2, 2);
  weft_actor_id ids[2];
  int i;
  watch_it(sys, sup);
  for (i = 0; i < 2; i++) { /* Two restarts: allowed. */
    children(sup, ids, 2);
    fail(ids[0], WEFT_ERANGE);
    cr_assert(UNTIL(count(starts, 0) == i + 2));
  }
  cr_assert_eq(restarts(sup), 2);
  children(sup, ids, 2);
  fail(ids[0], WEFT_ERANGE); /* The third within the period: too many. */
  cr_assert(UNTIL(atomic_load(&down_seen) == 1));
  cr_assert_eq(atomic_load(&down_reason), WEFT_ERESTARTS);
  cr_assert(UNTIL(count(stops, 1) == 1), "its other child ended with it");
  cr_assert_eq(count(starts, 0), 3, "no start after the last failure");
  weft_actor_system_free(sys);
}

Test(supervisor, a_nested_supervisor_is_restarted_by_its_parent) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t inner_ch[1] = {kid_spec(0, WEFT_RESTART_PERMANENT)};
  weft_supervisor_opts_t inner;
  weft_child_spec_t outer_ch[1];
  weft_actor_id outer, in[1], k[1];
  memset(&inner, 0, sizeof(inner));
  inner.strategy = WEFT_ONE_FOR_ONE;
  inner.children = inner_ch;
  inner.nchildren = 1;
  inner.max_restarts = 1;
  inner.period_ms = 60000;
  memset(outer_ch, 0, sizeof(outer_ch));
  outer_ch[0].supervisor = &inner;
  outer = spawn_sup(sys, WEFT_ONE_FOR_ONE, outer_ch, 1, 0);
  children(outer, in, 1);
  cr_assert(UNTIL(count(starts, 0) == 1));
  children(in[0], k, 1);
  fail(k[0], WEFT_ERANGE); /* One restart: the inner one copes. */
  cr_assert(UNTIL(count(starts, 0) == 2));
  cr_assert(UNTIL((children(in[0], k, 1), k[0] != 0)));
  fail(k[0], WEFT_ERANGE); /* The second: the inner one gives up... */
  cr_assert(UNTIL(restarts(outer) == 1), "...and the outer restarts it");
  cr_assert(UNTIL(count(starts, 0) == 3), "with a fresh child");
  weft_actor_system_free(sys);
}

Test(supervisor, killing_a_supervisor_ends_its_children) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t ch[2] = {kid_spec(0, WEFT_RESTART_PERMANENT),
                             kid_spec(1, WEFT_RESTART_PERMANENT)};
  weft_actor_id sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 2, 0);
  cr_assert(UNTIL(count(starts, 1) == 1));
  cr_assert_eq(weft_actor_exit(sup, WEFT_EKILLED), 0);
  cr_assert(UNTIL(count(stops, 0) == 1 && count(stops, 1) == 1));
  cr_assert_eq(weft_actor_system_wait(sys, 10000), 0, "nothing left");
  weft_actor_system_free(sys);
}

Test(supervisor, bad_specs_are_einval) {
  weft_actor_system_t* sys = new_system();
  weft_child_spec_t c = kid_spec(0, WEFT_RESTART_PERMANENT);
  weft_supervisor_opts_t o;
  weft_actor_id id;
  memset(&o, 0, sizeof(o));
  o.children = &c;
  o.nchildren = 1;
  cr_assert_eq(weft_supervisor_spawn(NULL, &o, NULL, &id), WEFT_EINVAL);
  cr_assert_eq(weft_supervisor_spawn(sys, NULL, NULL, &id), WEFT_EINVAL);
  c.behaviour = NULL; /* No kind. */
  cr_assert_eq(weft_supervisor_spawn(sys, &o, NULL, &id), WEFT_EINVAL);
  c = kid_spec(0, WEFT_RESTART_PERMANENT);
  c.worker_entry = (weft_worker_entry_cb)1; /* Two kinds. */
  cr_assert_eq(weft_supervisor_spawn(sys, &o, NULL, &id), WEFT_EINVAL);
  c = kid_spec(0, (weft_restart_kind)7);
  cr_assert_eq(weft_supervisor_spawn(sys, &o, NULL, &id), WEFT_EINVAL);
  o.strategy = (weft_sup_strategy)9;
  c = kid_spec(0, WEFT_RESTART_PERMANENT);
  cr_assert_eq(weft_supervisor_spawn(sys, &o, NULL, &id), WEFT_EINVAL);
  weft_actor_system_free(sys);
}

/* --- Workers as children ------------------------------------------------------- */

static atomic_int worker_starts;

/* A worker: on "fail" reports an uncaught error, on "grow" allocates past
 * its heap limit, on "exit" exits with code 7. */
static void on_worker_msg(weft_port_t* port, weft_msg_t* msg) {
  const char* s;
  size_t len;
  (void)port;
  if (weft_msg_read(msg, "s", &s, &len) != 0)
    return;
  if (len == 4 && memcmp(s, "fail", 4) == 0) {
    weft_report_error("boom");
  } else if (len == 4 && memcmp(s, "grow", 4) == 0) {
    weft_buffer_t* b = NULL;
    (void)weft_buffer_new(&b, (size_t)64 << 20); /* Past the limit. */
    weft_buffer_free(b);
  } else if (len == 4 && memcmp(s, "exit", 4) == 0) {
    weft_worker_exit(7);
  }
}

static void worker_main(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  atomic_fetch_add(&worker_starts, 1);
  weft_port_on_message(weft_parent_port(), on_worker_msg);
  weft_port_start(weft_parent_port());
}

static void check_worker_restart(const char* cmd_, int want_reason) {
  weft_actor_system_t* sys = new_system();
  weft_worker_opts_t wo;
  weft_child_spec_t ch[1];
  weft_actor_id sup, ids[1], child, w;
  memset(&wo, 0, sizeof(wo));
  wo.max_heap_bytes = 16 << 20;
  memset(ch, 0, sizeof(ch));
  ch[0].name = "worker";
  ch[0].worker_entry = worker_main;
  ch[0].worker_opts = &wo;
  atomic_store(&worker_starts, 0);
  sup = spawn_sup(sys, WEFT_ONE_FOR_ONE, ch, 1, 0);
  cr_assert(UNTIL(atomic_load(&worker_starts) == 1));
  children(sup, ids, 1);
  child = ids[0];
  w = watch_it(sys, child);
  (void)w;
  cr_assert_eq(weft_actor_send_fmt(child, "s", cmd_), 0);
  cr_assert(UNTIL(atomic_load(&down_seen) == 1));
  cr_assert_eq(atomic_load(&down_reason), want_reason, "reason %s",
               weft_err_name(atomic_load(&down_reason)));
  cr_assert(UNTIL(atomic_load(&worker_starts) == 2), "a new worker runs");
  cr_assert_eq(restarts(sup), 1);
  children(sup, ids, 1);
  cr_assert_neq(ids[0], child);
  weft_actor_system_free(sys);
}

Test(supervisor, a_worker_with_an_uncaught_error_is_restarted) {
  check_worker_restart("fail", WEFT_EUNCAUGHT);
}

Test(supervisor, a_worker_past_its_heap_limit_is_restarted) {
  check_worker_restart("grow", WEFT_EHEAPLIMIT);
}

Test(supervisor, a_worker_that_exits_with_a_code_is_restarted) {
  check_worker_restart("exit", 7);
}
