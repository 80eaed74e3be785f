/* test_loop.c - Criterion suite for the event loop: Node's ordering of
 * next-ticks, microtasks, timers and immediates; timers and immediates;
 * threadpool work; utilization; errors, threads, wrap and stop.
 *
 * Orderings are checked by appending names to a log and comparing the
 * whole log with what Node.js prints for the same program. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include <weft/weft.h>

#include "internal.h" /* weft__loop_spin_ns() */
#include "support.h"

TestSuite(loop, .timeout = 20);

/* ---- helpers ------------------------------------------------------------- */

static char order[512];

static void logs(const char* s) {
  size_t n = strlen(order);
  cr_assert_lt(n + strlen(s) + 2, sizeof(order), "log overflow");
  snprintf(order + n, sizeof(order) - n, "%s%s", n ? " " : "", s);
}

/* A task that appends its arg (a string) to the log. */
static void log_task(weft_loop_t* loop, void* arg) {
  (void)loop;
  logs(arg);
}

/* A new loop and an empty log. */
static weft_loop_t* fresh_loop(void) {
  order[0] = '\0';
  return new_loop();
}

/* One packed msgpack value: the positive fixint 1. */
static const char ONE[] = {0x01};

/* ---- Node orderings ------------------------------------------------------ */

/* setTimeout(0); queueMicrotask; process.nextTick; console.log("sync")
 * prints: sync, tick, micro, timeout. */
Test(loop, main_script_sync_tick_micro_timeout) {
  weft_loop_t* loop = fresh_loop();
  cr_assert_eq(weft_set_timeout(loop, 0, log_task, "timeout", NULL), 0);
  cr_assert_eq(weft_queue_microtask(loop, log_task, "micro"), 0);
  cr_assert_eq(weft_next_tick(loop, log_task, "tick"), 0);
  logs("sync");
  cr_assert_str_eq(order, "sync", "nothing runs before weft_loop_run");
  run_and_free(loop);
  cr_assert_str_eq(order, "sync tick micro timeout");
}

static void tick_before_micro_timer(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("timer");
  weft_queue_microtask(loop, log_task, "m1");
  weft_queue_microtask(loop, log_task, "m2");
  weft_next_tick(loop, log_task, "t1");
  weft_next_tick(loop, log_task, "t2");
}

Test(loop, next_ticks_run_before_microtasks_queued_earlier) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, tick_before_micro_timer, NULL, NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "timer t1 t2 m1 m2");
}

static void micro_queues_micro(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("m1");
  weft_queue_microtask(loop, log_task, "m2");
}

static void timer_queues_chained_micro(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("timer1");
  weft_queue_microtask(loop, micro_queues_micro, NULL);
}

Test(loop, microtask_queued_by_microtask_runs_before_next_timer) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, timer_queues_chained_micro, NULL, NULL);
  weft_set_timeout(loop, 0, log_task, "timer2", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "timer1 m1 m2 timer2");
}

/* In Node a nextTick queued by a microtask runs once the microtask queue
 * is empty (m2 first), and still before the next macrotask. */
static void micro_queues_tick(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("m1");
  weft_next_tick(loop, log_task, "tick");
  weft_queue_microtask(loop, log_task, "m2");
}

static void timer_queues_micro_tick(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("timer1");
  weft_queue_microtask(loop, micro_queues_tick, NULL);
}

Test(loop, next_tick_queued_by_microtask_runs_before_next_timer) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, timer_queues_micro_tick, NULL, NULL);
  weft_set_timeout(loop, 0, log_task, "timer2", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "timer1 m1 m2 tick timer2");
}

/* Also from the main script, before any macrotask. */
Test(loop, main_script_microtask_chain_drained_before_timer) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, log_task, "timer", NULL);
  weft_queue_microtask(loop, micro_queues_tick, NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "m1 m2 tick timer");
}

static void timer_queues_tick_and_micro(weft_loop_t* loop, void* arg) {
  logs(arg);
  weft_queue_microtask(loop, log_task, "micro");
  weft_next_tick(loop, log_task, "tick");
}

Test(loop, ticks_and_microtasks_drained_after_each_timer) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, timer_queues_tick_and_micro, "t1", NULL);
  weft_set_timeout(loop, 0, log_task, "t2", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "t1 tick micro t2");
}

static void immediate_queues_micro(weft_loop_t* loop, void* arg) {
  logs(arg);
  weft_queue_microtask(loop, log_task, "micro");
}

Test(loop, microtasks_drained_after_each_immediate) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, immediate_queues_micro, "i1", NULL);
  weft_set_immediate(loop, log_task, "i2", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "i1 micro i2");
}

/* I/O callback: inside it, setImmediate runs before setTimeout(0). */
static weft_port_t *io_a, *io_b;

static void timeout_closes_port(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  logs("timeout");
  weft_port_close(io_a);
}

static void on_io_message(weft_port_t* port, weft_msg_t* msg) {
  weft_loop_t* loop = weft_loop_current();
  const msgpack_object* o = weft_msg_object(msg);
  (void)port;
  cr_assert_not_null(o);
  cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  cr_assert_eq(o->via.u64, 1);
  logs("io");
  /* The timeout is queued first, the immediate still wins. */
  cr_assert_eq(weft_set_timeout(loop, 0, timeout_closes_port, NULL, NULL), 0);
  cr_assert_eq(weft_set_immediate(loop, log_task, "immediate", NULL), 0);
  weft_queue_microtask(loop, log_task, "micro");
}

Test(loop, io_callback_immediate_before_zero_timeout) {
  weft_loop_t* loop = fresh_loop();
  new_channel(loop, &io_a, &io_b);
  cr_assert_eq(weft_port_on_message(io_a, on_io_message), 0);
  cr_assert_eq(weft_port_post(io_b, ONE, sizeof(ONE)), 0);
  run_loop(loop);
  cr_assert_str_eq(order, "io micro immediate timeout");
  finish(loop, io_a, io_b);
}

static void noop_work(void* arg) {
  (void)arg;
}

static void after_sets_timer_and_immediate(weft_loop_t* loop,
                                           void* arg,
                                           int status) {
  (void)arg;
  cr_assert_eq(status, 0);
  logs("after");
  cr_assert_eq(weft_set_timeout(loop, 0, log_task, "timeout", NULL), 0);
  cr_assert_eq(weft_set_immediate(loop, log_task, "immediate", NULL), 0);
  weft_next_tick(loop, log_task, "tick");
}

Test(loop, after_work_immediate_before_zero_timeout) {
  weft_loop_t* loop = fresh_loop();
  cr_assert_eq(
      weft_queue_work(loop, noop_work, after_sets_timer_and_immediate, NULL),
      0);
  run_and_free(loop);
  cr_assert_str_eq(order, "after tick immediate timeout");
}

/* ---- timers -------------------------------------------------------------- */

Test(loop, timeouts_fire_in_order_of_delay) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 30, log_task, "30", NULL);
  weft_set_timeout(loop, 10, log_task, "10", NULL);
  weft_set_timeout(loop, 20, log_task, "20", NULL);
  weft_set_timeout(loop, 0, log_task, "0", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "0 10 20 30");
}

Test(loop, equal_timeouts_fire_in_creation_order) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 5, log_task, "a", NULL);
  weft_set_timeout(loop, 5, log_task, "b", NULL);
  weft_set_timeout(loop, 5, log_task, "c", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "a b c");
}

Test(loop, timer_ids_are_nonzero_and_distinct) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id a = 0, b = 0, c = 0;
  cr_assert_eq(weft_set_timeout(loop, 0, log_task, "a", &a), 0);
  cr_assert_eq(weft_set_interval(loop, 5, log_task, "b", &b), 0);
  cr_assert_eq(weft_set_immediate(loop, log_task, "c", &c), 0);
  cr_assert_neq(a, 0);
  cr_assert_neq(b, 0);
  cr_assert_neq(c, 0);
  cr_assert_neq(a, b);
  cr_assert_neq(b, c);
  cr_assert_neq(a, c);
  cr_assert_eq(weft_clear_timer(loop, b), 0);
  run_and_free(loop);
  /* Node leaves the order of a main-script timeout(0) and immediate open. */
  cr_assert(strcmp(order, "a c") == 0 || strcmp(order, "c a") == 0,
            "ran: %s", order);
}

Test(loop, cleared_timeout_never_fires) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  weft_set_timeout(loop, 0, log_task, "cleared", &id);
  weft_set_timeout(loop, 5, log_task, "kept", NULL);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "kept");
}

static weft_timer_id victim;

static void clear_victim(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("clearer");
  cr_assert_eq(weft_clear_timer(loop, victim), 0);
}

/* A timer due in the same turn, cleared by the one before it. */
Test(loop, timeout_cleared_by_earlier_timer_never_fires) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, clear_victim, NULL, NULL);
  weft_set_timeout(loop, 0, log_task, "victim", &victim);
  run_and_free(loop);
  cr_assert_str_eq(order, "clearer");
}

static weft_timer_id self_id;

static void clear_self(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("fired");
  cr_assert_eq(weft_clear_timer(loop, self_id), 0);
}

Test(loop, clear_timeout_inside_own_callback_returns_0) {
  weft_loop_t* loop = fresh_loop();
  cr_assert_eq(weft_set_timeout(loop, 0, clear_self, NULL, &self_id), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "fired");
}

Test(loop, clear_fired_or_unknown_or_zero_id_returns_0) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0, imm = 0;
  weft_set_timeout(loop, 0, log_task, "t", &id);
  weft_set_immediate(loop, log_task, "i", &imm);
  run_loop(loop);
  cr_assert(strcmp(order, "i t") == 0 || strcmp(order, "t i") == 0,
            "ran: %s", order);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  cr_assert_eq(weft_clear_timer(loop, imm), 0);
  cr_assert_eq(weft_clear_timer(loop, 0), 0);
  cr_assert_eq(weft_clear_timer(loop, ~(weft_timer_id)0), 0);
  cr_assert_eq(weft_clear_timer(loop, 12345), 0);
  free_loop(loop);
}

/* A fired timeout's slot is reused by the next timer: the old id must not
 * reach the new timer (the generation guard). */
static weft_timer_id first_id, second_id;

static void reuse_slot(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("first");
  cr_assert_eq(weft_set_timeout(loop, 0, log_task, "second", &second_id), 0);
  cr_assert_neq(second_id, first_id);
  cr_assert_eq(weft_clear_timer(loop, first_id), 0);
  /* The stale id is not live: ref on it fails, the new timer is kept. */
  cr_assert_eq(weft_timer_set_ref(loop, first_id, false), WEFT_EINVAL);
}

Test(loop, stale_id_does_not_clear_a_newer_timer) {
  weft_loop_t* loop = fresh_loop();
  cr_assert_eq(weft_set_timeout(loop, 0, reuse_slot, NULL, &first_id), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "first second");
}

static int interval_count;
static weft_timer_id interval_id;

static void count_to_3(weft_loop_t* loop, void* arg) {
  (void)arg;
  interval_count++;
  if (interval_count == 3)
    cr_assert_eq(weft_clear_timer(loop, interval_id), 0);
  cr_assert_leq(interval_count, 3, "interval fired after it was cleared");
}

Test(loop, interval_fires_until_cleared) {
  weft_loop_t* loop = fresh_loop();
  interval_count = 0;
  cr_assert_eq(weft_set_interval(loop, 1, count_to_3, NULL, &interval_id), 0);
  run_and_free(loop); /* Returns only because the interval was cleared. */
  cr_assert_eq(interval_count, 3);
}

/* setInterval(fn, 0) is clamped to 1 ms and still repeats. */
Test(loop, zero_ms_interval_repeats) {
  weft_loop_t* loop = fresh_loop();
  interval_count = 0;
  cr_assert_eq(weft_set_interval(loop, 0, count_to_3, NULL, &interval_id), 0);
  run_and_free(loop);
  cr_assert_eq(interval_count, 3);
}

static bool long_timer_fired;

static void mark_long(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  long_timer_fired = true;
}

Test(loop, unrefd_timer_does_not_keep_loop_alive) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  long_timer_fired = false;
  cr_assert_eq(weft_set_timeout(loop, 60000, mark_long, NULL, &id), 0);
  cr_assert_eq(weft_timer_set_ref(loop, id, false), 0);
  run_loop(loop);
  cr_assert(!long_timer_fired);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  /* The cleared handle closes on the next turn (see the report on
   * weft_loop_free() right after weft_clear_timer()). */
  run_and_free(loop);
  cr_assert(!long_timer_fired);
}

Test(loop, unrefd_interval_does_not_keep_loop_alive) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  long_timer_fired = false;
  cr_assert_eq(weft_set_interval(loop, 60000, mark_long, NULL, &id), 0);
  cr_assert_eq(weft_timer_set_ref(loop, id, false), 0);
  run_loop(loop);
  cr_assert(!long_timer_fired);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  /* The cleared handle closes on the next turn (see the report on
   * weft_loop_free() right after weft_clear_timer()). */
  run_and_free(loop);
}

/* An unref'd timer still fires while something else keeps the loop up. */
Test(loop, unrefd_timer_fires_while_loop_is_alive) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  weft_set_timeout(loop, 0, log_task, "unrefd", &id);
  cr_assert_eq(weft_timer_set_ref(loop, id, false), 0);
  weft_set_timeout(loop, 20, log_task, "refd", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "unrefd refd");
}

Test(loop, reref_timer_keeps_loop_alive_again) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  weft_set_timeout(loop, 5, log_task, "fired", &id);
  cr_assert_eq(weft_timer_set_ref(loop, id, false), 0);
  cr_assert_eq(weft_timer_set_ref(loop, id, true), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "fired");
}

Test(loop, timer_set_ref_on_dead_id_is_einval) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 0;
  cr_assert_eq(weft_timer_set_ref(loop, 0, false), WEFT_EINVAL);
  cr_assert_eq(weft_timer_set_ref(loop, 777, true), WEFT_EINVAL);
  weft_set_timeout(loop, 0, log_task, "t", &id);
  cr_assert_eq(weft_clear_timer(loop, id), 0);
  cr_assert_eq(weft_timer_set_ref(loop, id, false), WEFT_EINVAL);
  run_and_free(loop);
  cr_assert_str_eq(order, "");
}

Test(loop, immediates_run_in_fifo_order) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, log_task, "i1", NULL);
  weft_set_immediate(loop, log_task, "i2", NULL);
  weft_set_immediate(loop, log_task, "i3", NULL);
  weft_set_immediate(loop, log_task, "i4", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "i1 i2 i3 i4");
}

static void immediate_queues_immediate(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("i1");
  cr_assert_eq(weft_set_immediate(loop, log_task, "i3", NULL), 0);
}

Test(loop, immediate_queued_by_immediate_runs_after_queued_ones) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, immediate_queues_immediate, NULL, NULL);
  weft_set_immediate(loop, log_task, "i2", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "i1 i2 i3");
}

/* An immediate queued by an immediate waits for the next turn: a timer
 * that falls due in between runs first. */
static void immediate_then_timer_turn(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("i1");
  weft_set_timeout(loop, 1, log_task, "timer", NULL);
  weft_set_immediate(loop, log_task, "i2", NULL);
  uv_sleep(3); /* The 1 ms timer is due when the next turn starts. */
}

Test(loop, immediate_queued_by_immediate_waits_for_next_turn) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, immediate_then_timer_turn, NULL, NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "i1 timer i2");
}

Test(loop, cleared_immediate_never_runs) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id a = 0, b = 0, c = 0;
  weft_set_immediate(loop, log_task, "a", &a);
  weft_set_immediate(loop, log_task, "b", &b);
  weft_set_immediate(loop, log_task, "c", &c);
  cr_assert_eq(weft_clear_timer(loop, b), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "a c");
}

Test(loop, clearing_only_immediate_lets_loop_end) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id a = 0;
  weft_set_immediate(loop, log_task, "a", &a);
  cr_assert_eq(weft_clear_timer(loop, a), 0);
  run_and_free(loop);
  cr_assert_str_eq(order, "");
}

static weft_timer_id imm_victim;

static void immediate_clears_next(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("a");
  cr_assert_eq(weft_clear_timer(loop, imm_victim), 0);
}

Test(loop, immediate_cleared_in_same_turn_never_runs) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, immediate_clears_next, NULL, NULL);
  weft_set_immediate(loop, log_task, "b", &imm_victim);
  weft_set_immediate(loop, log_task, "c", NULL);
  run_and_free(loop);
  cr_assert_str_eq(order, "a c");
}

/* ---- threadpool work ----------------------------------------------------- */

typedef struct {
  uv_thread_t loop_thread;
  uv_thread_t work_thread;
  atomic_bool worked;
  bool after_ran;
} thread_probe_t;

static void probe_work(void* arg) {
  thread_probe_t* p = arg;
  p->work_thread = uv_thread_self();
  atomic_store(&p->worked, true);
}

static void probe_after(weft_loop_t* loop, void* arg, int status) {
  thread_probe_t* p = arg;
  uv_thread_t self = uv_thread_self();
  cr_assert_eq(status, 0);
  cr_assert(atomic_load(&p->worked), "after ran before work");
  cr_assert(uv_thread_equal(&self, &p->loop_thread),
            "after-callback not on the loop thread");
  cr_assert(!uv_thread_equal(&p->work_thread, &p->loop_thread),
            "work ran on the loop thread");
  cr_assert_eq(weft_loop_current(), loop);
  p->after_ran = true;
}

Test(loop, work_runs_on_pool_thread_after_on_loop_thread) {
  weft_loop_t* loop = fresh_loop();
  thread_probe_t p = {.loop_thread = uv_thread_self()};
  atomic_init(&p.worked, false);
  cr_assert_eq(weft_queue_work(loop, probe_work, probe_after, &p), 0);
  run_and_free(loop);
  cr_assert(p.after_ran);
}

#define JOBS 50

typedef struct {
  int index;
  int result;
  int after_seen;
} job_t;

static int jobs_done;

static void job_work(void* arg) {
  job_t* j = arg;
  j->result = j->index * j->index + 1;
}

static void job_after(weft_loop_t* loop, void* arg, int status) {
  job_t* j = arg;
  (void)loop;
  cr_assert_eq(status, 0);
  cr_assert_eq(j->result, j->index * j->index + 1);
  j->after_seen++;
  jobs_done++;
}

Test(loop, many_jobs_all_complete_once) {
  weft_loop_t* loop = fresh_loop();
  job_t jobs[JOBS];
  jobs_done = 0;
  for (int i = 0; i < JOBS; i++) {
    jobs[i] = (job_t){.index = i};
    cr_assert_eq(weft_queue_work(loop, job_work, job_after, &jobs[i]), 0);
  }
  run_and_free(loop);
  cr_assert_eq(jobs_done, JOBS);
  for (int i = 0; i < JOBS; i++)
    cr_assert_eq(jobs[i].after_seen, 1, "job %d after ran %d times", i,
                 jobs[i].after_seen);
}

static void slow_work(void* arg) {
  uv_sleep(50);
  atomic_store((atomic_bool*)arg, true);
}

static void slow_after(weft_loop_t* loop, void* arg, int status) {
  (void)loop;
  (void)arg;
  cr_assert_eq(status, 0);
  logs("after");
}

Test(loop, pending_work_keeps_loop_alive) {
  weft_loop_t* loop = fresh_loop();
  atomic_bool done;
  atomic_init(&done, false);
  cr_assert_eq(weft_queue_work(loop, slow_work, slow_after, &done), 0);
  run_and_free(loop);
  cr_assert(atomic_load(&done));
  cr_assert_str_eq(order, "after");
}

Test(loop, free_is_ebusy_while_work_pending) {
  weft_loop_t* loop = fresh_loop();
  atomic_bool done;
  atomic_init(&done, false);
  cr_assert_eq(weft_queue_work(loop, slow_work, slow_after, &done), 0);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY);
  run_and_free(loop);
  cr_assert(atomic_load(&done));
  cr_assert_str_eq(order, "after");
}

/* Work queued from an after-callback chains on. */
static int chain_left;

static void chain_after(weft_loop_t* loop, void* arg, int status) {
  cr_assert_eq(status, 0);
  if (--chain_left > 0)
    cr_assert_eq(weft_queue_work(loop, noop_work, chain_after, arg), 0);
}

Test(loop, work_queued_from_after_callback_runs) {
  weft_loop_t* loop = fresh_loop();
  chain_left = 5;
  cr_assert_eq(weft_queue_work(loop, noop_work, chain_after, NULL), 0);
  run_and_free(loop);
  cr_assert_eq(chain_left, 0);
}

/* ---- utilization --------------------------------------------------------- */

static void check_elu(const weft_elu_t* e) {
  cr_assert_geq(e->idle, 0.0);
  cr_assert_geq(e->active, 0.0);
  cr_assert_geq(e->utilization, 0.0);
  cr_assert_leq(e->utilization, 1.0);
}

static void busy_timer(weft_loop_t* loop, void* arg) {
  uint64_t t0 = uv_hrtime();
  (void)loop;
  (void)arg;
  while (uv_hrtime() - t0 < 50 * 1000 * 1000ull)
    ;
}

Test(loop, utilization_is_sane_and_grows_with_busy_work) {
  weft_loop_t* loop = fresh_loop();
  weft_elu_t a, b, d;
  cr_assert_eq(weft_loop_utilization(loop, NULL, &a), 0);
  check_elu(&a);
  weft_set_timeout(loop, 0, busy_timer, NULL, NULL);
  run_loop(loop);
  cr_assert_eq(weft_loop_utilization(loop, NULL, &b), 0);
  check_elu(&b);
  cr_assert_geq(b.idle, a.idle);
  cr_assert_gt(b.active, a.active, "busy callback did not count as active");
  cr_assert_eq(weft_loop_utilization(loop, &a, &d), 0);
  check_elu(&d);
  cr_assert_gt(d.active, 0.0);
  cr_assert_gt(d.utilization, 0.0);
  free_loop(loop);
}

/* Waiting for a timer is idle time, not active time. */
Test(loop, utilization_counts_waiting_as_idle) {
  weft_loop_t* loop = fresh_loop();
  weft_elu_t a, d;
  cr_assert_eq(weft_loop_utilization(loop, NULL, &a), 0);
  weft_set_timeout(loop, 50, log_task, "t", NULL);
  run_loop(loop);
  cr_assert_eq(weft_loop_utilization(loop, &a, &d), 0);
  check_elu(&d);
  cr_assert_gt(d.idle, 0.0, "waiting for a timer did not count as idle");
  free_loop(loop);
}

Test(loop, utilization_since_a_later_sample_is_clamped) {
  weft_loop_t* loop = fresh_loop();
  weft_elu_t later = {.idle = 1e12, .active = 1e12, .utilization = 0.5};
  weft_elu_t d;
  cr_assert_eq(weft_loop_utilization(loop, &later, &d), 0);
  check_elu(&d);
  cr_assert_eq(weft_loop_utilization(loop, NULL, NULL), WEFT_EINVAL);
  free_loop(loop);
}

/* ---- errors -------------------------------------------------------------- */

static void never_work(void* arg) {
  (void)arg;
  cr_assert_fail("work should not run");
}

static void never_after(weft_loop_t* loop, void* arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
  cr_assert_fail("after should not run");
}

Test(loop, null_loop_is_einval) {
  weft_timer_id id = 99;
  weft_elu_t e;
  uv_loop_t uv;
  weft_loop_t* out = (weft_loop_t*)&uv;
  cr_assert_eq(weft_loop_new(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_loop_wrap(NULL, &uv), WEFT_EINVAL);
  cr_assert_eq(weft_loop_wrap(&out, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_loop_run(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_loop_stop(NULL), WEFT_EINVAL);
  cr_assert_eq(weft_loop_drain(NULL), WEFT_EINVAL);
  cr_assert_null(weft_loop_uv(NULL));
  cr_assert_eq(weft_next_tick(NULL, log_task, ""), WEFT_EINVAL);
  cr_assert_eq(weft_queue_microtask(NULL, log_task, ""), WEFT_EINVAL);
  cr_assert_eq(weft_set_timeout(NULL, 0, log_task, "", &id), WEFT_EINVAL);
  cr_assert_eq(id, 0, "out must be 0 on error");
  id = 99;
  cr_assert_eq(weft_set_interval(NULL, 1, log_task, "", &id), WEFT_EINVAL);
  cr_assert_eq(id, 0);
  id = 99;
  cr_assert_eq(weft_set_immediate(NULL, log_task, "", &id), WEFT_EINVAL);
  cr_assert_eq(id, 0);
  cr_assert_eq(weft_clear_timer(NULL, 0), WEFT_EINVAL);
  cr_assert_eq(weft_timer_set_ref(NULL, 1, true), WEFT_EINVAL);
  cr_assert_eq(weft_queue_work(NULL, never_work, never_after, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_loop_utilization(NULL, NULL, &e), WEFT_EINVAL);
  free_loop(NULL);
  cr_assert_null(weft_loop_current(), "failed calls made no loop");
}

Test(loop, null_callback_is_einval_and_queues_nothing) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id id = 99;
  cr_assert_eq(weft_next_tick(loop, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_queue_microtask(loop, NULL, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_set_timeout(loop, 0, NULL, NULL, &id), WEFT_EINVAL);
  cr_assert_eq(id, 0);
  id = 99;
  cr_assert_eq(weft_set_interval(loop, 1, NULL, NULL, &id), WEFT_EINVAL);
  cr_assert_eq(id, 0);
  id = 99;
  cr_assert_eq(weft_set_immediate(loop, NULL, NULL, &id), WEFT_EINVAL);
  cr_assert_eq(id, 0);
  cr_assert_eq(weft_queue_work(loop, NULL, never_after, NULL), WEFT_EINVAL);
  /* Nothing was queued: the loop has nothing to do and can be freed. */
  run_and_free(loop);
}

typedef struct {
  weft_loop_t* loop;
  int rc[20];
  weft_loop_t* current;
  weft_loop_t* own;
  uv_loop_t* uv;
  int own_rc;
  int own_free_rc;
  weft_timer_id id;
} foreign_t;

static void foreign_thread(void* arg) {
  foreign_t* f = arg;
  weft_loop_t* loop = f->loop;
  weft_timer_id id = 0;
  weft_elu_t e;
  int i = 0;
  f->current = weft_loop_current();
  f->uv = weft_loop_uv(loop);
  f->rc[i++] = weft_set_timeout(loop, 0, log_task, "foreign-timeout", &id);
  f->rc[i++] = weft_set_interval(loop, 1, log_task, "foreign-interval", NULL);
  f->rc[i++] = weft_set_immediate(loop, log_task, "foreign-immediate", NULL);
  f->rc[i++] = weft_next_tick(loop, log_task, "foreign-tick");
  f->rc[i++] = weft_queue_microtask(loop, log_task, "foreign-micro");
  f->rc[i++] = weft_queue_work(loop, never_work, never_after, NULL);
  f->rc[i++] = weft_clear_timer(loop, 0);
  f->rc[i++] = weft_timer_set_ref(loop, 1, false);
  f->rc[i++] = weft_loop_run(loop);
  f->rc[i++] = weft_loop_stop(loop);
  f->rc[i++] = weft_loop_drain(loop);
  f->rc[i++] = weft_loop_utilization(loop, NULL, &e);
  f->rc[i++] = weft_loop_free(loop);
  /* This thread may have its own loop; the other one is still not its. */
  f->own_rc = weft_loop_new(&f->own);
  if (f->own_rc == 0) {
    f->rc[i++] = weft_set_timeout(loop, 0, log_task, "foreign2", NULL);
    f->own_free_rc = weft_loop_free(f->own);
  }
  f->id = id;
}

Test(loop, calls_from_another_thread_are_ewrongthread) {
  weft_loop_t* loop = fresh_loop();
  foreign_t f = {.loop = loop};
  uv_thread_t t;
  for (int i = 0; i < 20; i++)
    f.rc[i] = 1;
  weft_set_timeout(loop, 0, log_task, "own", NULL);
  cr_assert_eq(uv_thread_create(&t, foreign_thread, &f), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_null(f.current, "weft_loop_current on another thread");
  cr_assert_null(f.uv, "weft_loop_uv on another thread");
  cr_assert_eq(f.own_rc, 0);
  cr_assert_eq(f.own_free_rc, 0);
  cr_assert_eq(f.id, 0, "a refused set_timeout must leave its id 0");
  for (int i = 0; i < 14; i++)
    cr_assert_eq(f.rc[i], WEFT_EWRONGTHREAD, "call #%d returned %d (%s)", i,
                 f.rc[i], weft_err_name(f.rc[i]));
  cr_assert_eq(weft_loop_current(), loop);
  cr_assert_eq(weft_loop_uv(loop) != NULL, true);
  run_and_free(loop); /* Only this thread's timeout ran. */
  cr_assert_str_eq(order, "own");
}

Test(loop, second_loop_on_same_thread_is_ebusy) {
  weft_loop_t* loop = fresh_loop();
  weft_loop_t* second = (weft_loop_t*)&second;
  uv_loop_t uv;
  cr_assert_eq(weft_loop_new(&second), WEFT_EBUSY);
  cr_assert_null(second);
  second = (weft_loop_t*)&second;
  cr_assert_eq(uv_loop_init(&uv), 0);
  cr_assert_eq(weft_loop_wrap(&second, &uv), WEFT_EBUSY);
  cr_assert_null(second);
  cr_assert_eq(weft_loop_current(), loop);
  free_loop(loop);
  cr_assert_null(weft_loop_current());
  /* Once freed, the thread may have a loop again. */
  cr_assert_eq(weft_loop_new(&second), 0);
  cr_assert_eq(weft_loop_current(), second);
  free_loop(second);
  cr_assert_eq(uv_loop_close(&uv), 0);
}

Test(loop, free_is_ebusy_while_port_open) {
  weft_loop_t* loop = fresh_loop();
  weft_port_t *a, *b;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY);
  cr_assert_eq(weft_port_free(a), 0);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY);
  cr_assert_eq(weft_loop_current(), loop, "a failed free changed nothing");
  cr_assert_eq(weft_port_free(b), 0);
  free_loop(loop);
  cr_assert_null(weft_loop_current());
}

Test(loop, free_is_ebusy_while_timer_or_immediate_pending) {
  weft_loop_t* loop = fresh_loop();
  weft_timer_id t = 0, i = 0;
  cr_assert_eq(weft_set_timeout(loop, 60000, log_task, "t", &t), 0);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY);
  cr_assert_eq(weft_clear_timer(loop, t), 0);
  run_loop(loop); /* Lets the closed timer go. */
  cr_assert_eq(weft_set_immediate(loop, log_task, "i", &i), 0);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY);
  /* The failed free left the loop usable: the immediate still runs. */
  run_and_free(loop);
  cr_assert_str_eq(order, "i");
}

static int free_inside_rc = 1;
static int run_inside_rc = 1;

static void free_inside(weft_loop_t* loop, void* arg) {
  (void)arg;
  free_inside_rc = weft_loop_free(loop);
  run_inside_rc = weft_loop_run(loop);
}

Test(loop, free_or_run_inside_callback_is_ebusy) {
  weft_loop_t* loop = fresh_loop();
  weft_set_timeout(loop, 0, free_inside, NULL, NULL);
  run_and_free(loop);
  cr_assert_eq(free_inside_rc, WEFT_EBUSY);
  cr_assert_eq(run_inside_rc, WEFT_EBUSY);
}

static void current_on_thread(void* arg) {
  *(weft_loop_t**)arg = weft_loop_current();
}

Test(loop, loop_current_is_per_thread) {
  weft_loop_t* seen = (weft_loop_t*)&seen;
  weft_loop_t* loop;
  uv_thread_t t;
  cr_assert_null(weft_loop_current());
  loop = fresh_loop();
  cr_assert_eq(weft_loop_current(), loop);
  cr_assert_eq(uv_thread_create(&t, current_on_thread, &seen), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_null(seen);
  run_and_free(loop);
  cr_assert_null(weft_loop_current());
}

/* ---- wrap ---------------------------------------------------------------- */

/* A timer callback that queues a tick, a microtask and an immediate (which
 * queues a microtask of its own). Queuing the immediate from a callback
 * fixes its place: Node leaves the order of a main-script setTimeout(0)
 * and setImmediate open. */
static void timer_queues_all(weft_loop_t* loop, void* arg) {
  timer_queues_tick_and_micro(loop, arg);
  weft_set_immediate(loop, immediate_queues_micro, "imm", NULL);
}

Test(loop, wrap_timers_fire_under_weft_loop_run) {
  uv_loop_t uv;
  weft_loop_t* loop = NULL;
  order[0] = '\0';
  cr_assert_eq(uv_loop_init(&uv), 0);
  cr_assert_eq(weft_loop_wrap(&loop, &uv), 0);
  cr_assert_eq(weft_loop_current(), loop);
  cr_assert_eq(weft_loop_uv(loop), &uv);
  /* 200 ms: far enough that a slow (sanitizer, loaded) machine still runs
   * the immediate queued by t0 first; with a few ms both timers can fall
   * due in the same timers phase, which is Node's behaviour too. */
  weft_set_timeout(loop, 200, log_task, "late", NULL);
  weft_set_timeout(loop, 0, timer_queues_all, "t0", NULL);
  weft_next_tick(loop, log_task, "main-tick");
  run_loop(loop);
  cr_assert_str_eq(order, "main-tick t0 tick micro imm micro late");
  free_loop(loop);
  cr_assert_null(weft_loop_current());
  cr_assert_eq(uv_loop_close(&uv), 0, "weft left handles on the uv loop");
}

static weft_port_t *wrap_a, *wrap_b;
static int wrap_msgs;

static void wrap_on_message(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  wrap_msgs++;
  weft_queue_microtask(weft_loop_current(), log_task, "micro");
  logs("message");
  cr_assert_eq(weft_port_close(port), 0);
}

Test(loop, wrap_delivers_messages_under_plain_uv_run) {
  uv_loop_t uv;
  weft_loop_t* loop = NULL;
  order[0] = '\0';
  wrap_msgs = 0;
  cr_assert_eq(uv_loop_init(&uv), 0);
  cr_assert_eq(weft_loop_wrap(&loop, &uv), 0);
  new_channel(loop, &wrap_a, &wrap_b);
  cr_assert_eq(weft_port_on_message(wrap_a, wrap_on_message), 0);
  cr_assert_eq(weft_port_post(wrap_b, ONE, sizeof(ONE)), 0);
  uv_run(&uv, UV_RUN_DEFAULT); /* Returns once the port is closed. */
  cr_assert_eq(wrap_msgs, 1);
  cr_assert_str_eq(order, "message micro");
  finish(loop, wrap_a, wrap_b);
  cr_assert_eq(uv_loop_close(&uv), 0);
}

/* A message posted from another thread wakes a loop driven by uv_run. */
static int post_later_rc = 1;

static void post_later(void* arg) {
  uv_sleep(20);
  post_later_rc = weft_port_post(arg, ONE, sizeof(ONE));
}

Test(loop, wrap_cross_thread_message_wakes_plain_uv_run) {
  uv_loop_t uv;
  weft_loop_t* loop = NULL;
  uv_thread_t t;
  order[0] = '\0';
  wrap_msgs = 0;
  cr_assert_eq(uv_loop_init(&uv), 0);
  cr_assert_eq(weft_loop_wrap(&loop, &uv), 0);
  new_channel(loop, &wrap_a, &wrap_b);
  cr_assert_eq(weft_port_on_message(wrap_a, wrap_on_message), 0);
  cr_assert_eq(uv_thread_create(&t, post_later, wrap_b), 0);
  uv_run(&uv, UV_RUN_DEFAULT);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(post_later_rc, 0);
  cr_assert_eq(wrap_msgs, 1);
  finish(loop, wrap_a, wrap_b);
  cr_assert_eq(uv_loop_close(&uv), 0);
}

Test(loop, wrap_timers_and_immediates_under_plain_uv_run) {
  uv_loop_t uv;
  weft_loop_t* loop = NULL;
  order[0] = '\0';
  cr_assert_eq(uv_loop_init(&uv), 0);
  cr_assert_eq(weft_loop_wrap(&loop, &uv), 0);
  weft_set_timeout(loop, 0, timer_queues_all, "t0", NULL);
  uv_run(&uv, UV_RUN_DEFAULT);
  cr_assert_str_eq(order, "t0 tick micro imm micro");
  free_loop(loop);
  cr_assert_eq(uv_loop_close(&uv), 0);
}

/* ---- stop ---------------------------------------------------------------- */

static int stop_count;
static weft_timer_id stop_interval;

static void stop_at_3(weft_loop_t* loop, void* arg) {
  (void)arg;
  stop_count++;
  if (stop_count == 3 || stop_count == 6)
    cr_assert_eq(weft_loop_stop(loop), 0);
}

Test(loop, stop_returns_while_interval_active_and_run_resumes) {
  weft_loop_t* loop = fresh_loop();
  stop_count = 0;
  cr_assert_eq(weft_set_interval(loop, 1, stop_at_3, NULL, &stop_interval),
               0);
  run_loop(loop);
  cr_assert_eq(stop_count, 3);
  cr_assert_eq(weft_loop_free(loop), WEFT_EBUSY, "the interval is live");
  /* Running again resumes the interval. */
  run_loop(loop);
  cr_assert_eq(stop_count, 6);
  cr_assert_eq(weft_clear_timer(loop, stop_interval), 0);
  run_and_free(loop);
  cr_assert_eq(stop_count, 6);
}

static void stop_and_queue(weft_loop_t* loop, void* arg) {
  (void)arg;
  logs("stopper");
  weft_queue_microtask(loop, log_task, "micro");
  weft_loop_stop(loop);
}

/* The callback that stops still gets its microtasks; immediates queued
 * behind it wait for the next run. */
Test(loop, stop_in_immediate_defers_later_immediates) {
  weft_loop_t* loop = fresh_loop();
  weft_set_immediate(loop, stop_and_queue, NULL, NULL);
  weft_set_immediate(loop, log_task, "later", NULL);
  run_loop(loop);
  cr_assert_str_eq(order, "stopper micro");
  run_and_free(loop);
  cr_assert_str_eq(order, "stopper micro later");
}

/* ---- terminate cuts a chain of ticks or microtasks (issue 5, item 3) ---- */

/* Each kind of task queues itself again, forever; a worker running such a
 * chain must still end when terminated, with exit code 1 (Node). */
static atomic_int chain_runs;

static void chain_micro(weft_loop_t* loop, void* arg) {
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  weft_queue_microtask(loop, chain_micro, NULL);
}

static void chain_tick(weft_loop_t* loop, void* arg) {
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  weft_next_tick(loop, chain_tick, NULL);
}

/* A microtask that queues a next-tick that queues a microtask... */
static void chain_mixed_tick(weft_loop_t* loop, void* arg);
static void chain_mixed_micro(weft_loop_t* loop, void* arg) {
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  weft_next_tick(loop, chain_mixed_tick, NULL);
}
static void chain_mixed_tick(weft_loop_t* loop, void* arg) {
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  weft_queue_microtask(loop, chain_mixed_micro, NULL);
}

static void chain_entry(weft_loop_t* loop, void* arg) {
  weft_task_cb first = (weft_task_cb)(uintptr_t)arg;
  /* From a timer, so the chain starts inside the running loop. */
  weft_set_timeout(loop, 1, first, NULL, NULL);
}

static int chain_exit_code;
static int chain_terminate_code;

static void chain_on_exit(weft_worker_t* w, int code) {
  (void)w;
  chain_exit_code = code;
}

static void chain_on_terminated(weft_worker_t* w, int code) {
  (void)w;
  chain_terminate_code = code;
}

static void chain_terminate(weft_loop_t* loop, void* arg) {
  (void)loop;
  cr_assert_eq(weft_worker_terminate(arg, chain_on_terminated), 0);
}

/* Terminate once the chain is running (it ran some thousand times). */
static void chain_watch(weft_loop_t* loop, void* arg) {
  if (atomic_load(&chain_runs) < 1000) {
    weft_set_timeout(loop, 1, chain_watch, arg, NULL);
    return;
  }
  chain_terminate(loop, arg);
}

static void run_endless_chain(weft_task_cb first) {
  weft_loop_t* loop = fresh_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  atomic_store(&chain_runs, 0);
  chain_exit_code = chain_terminate_code = -1;
  opts.arg = (void*)(uintptr_t)first;
  opts.events.exit = chain_on_exit;
  w = spawn_worker(loop, chain_entry, &opts);
  cr_assert_eq(weft_set_timeout(loop, 1, chain_watch, w, NULL), 0);
  run_loop(loop);
  cr_assert_eq(chain_exit_code, 1);
  cr_assert_eq(chain_terminate_code, 1);
  cr_assert(weft_worker_exited(w));
  weft_worker_free(w);
  free_loop(loop);
}

Test(loop, terminate_cuts_endless_microtask_chain, .timeout = 20) {
  run_endless_chain(chain_micro);
}

Test(loop, terminate_cuts_endless_next_tick_chain, .timeout = 20) {
  run_endless_chain(chain_tick);
}

Test(loop, terminate_cuts_endless_tick_microtask_chain, .timeout = 20) {
  run_endless_chain(chain_mixed_micro);
}

/* A chain started by the worker's entry (the "main script") is cut too. */
static void chain_entry_direct(weft_loop_t* loop, void* arg) {
  (void)arg;
  weft_queue_microtask(loop, chain_micro, NULL);
}

Test(loop, terminate_cuts_chain_from_worker_entry, .timeout = 20) {
  weft_loop_t* loop = fresh_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  atomic_store(&chain_runs, 0);
  chain_exit_code = chain_terminate_code = -1;
  opts.events.exit = chain_on_exit;
  w = spawn_worker(loop, chain_entry_direct, &opts);
  cr_assert_eq(weft_set_timeout(loop, 1, chain_watch, w, NULL), 0);
  run_loop(loop);
  cr_assert_eq(chain_exit_code, 1);
  cr_assert_eq(chain_terminate_code, 1);
  weft_worker_free(w);
  free_loop(loop);
}

/* ---- timers count from when they are set (issue 5, item 8) -------------- */

/* libuv counts a timer from the loop's cached time, as old as the loop's
 * last turn; weft counts from the call. Lower bounds only. */

static uint64_t set_at_ns;
static uint64_t fired_at_ns;
static int fired_count;

static void record_fire(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  if (fired_count++ == 0)
    fired_at_ns = uv_hrtime();
}

static void set_timers_state(void) {
  set_at_ns = fired_at_ns = 0;
  fired_count = 0;
}

Test(loop, timeout_after_busy_work_counts_from_the_call) {
  weft_loop_t* loop = fresh_loop();
  set_timers_state();
  busy_ms(300);
  set_at_ns = uv_hrtime();
  cr_assert_eq(weft_set_timeout(loop, 50, record_fire, NULL, NULL), 0);
  run_and_free(loop);
  cr_assert_eq(fired_count, 1);
  cr_assert_geq(fired_at_ns - set_at_ns, 50 * 1000000u, "fired after %.1f ms",
                (double)(fired_at_ns - set_at_ns) / 1e6);
}

Test(loop, longer_timeout_after_short_work_counts_from_the_call) {
  weft_loop_t* loop = fresh_loop();
  set_timers_state();
  busy_ms(50);
  set_at_ns = uv_hrtime();
  cr_assert_eq(weft_set_timeout(loop, 200, record_fire, NULL, NULL), 0);
  run_and_free(loop);
  cr_assert_geq(fired_at_ns - set_at_ns, 200 * 1000000u, "fired after %.1f ms",
                (double)(fired_at_ns - set_at_ns) / 1e6);
}

/* Inside a callback: the loop's time is that of the turn's start. */
static void busy_then_set(weft_loop_t* loop, void* arg) {
  weft_timer_id* interval = arg;
  busy_ms(300);
  set_at_ns = uv_hrtime();
  if (interval != NULL)
    cr_assert_eq(weft_set_interval(loop, 50, record_fire, NULL, interval), 0);
  else
    cr_assert_eq(weft_set_timeout(loop, 50, record_fire, NULL, NULL), 0);
}

Test(loop, timeout_set_in_a_busy_callback_counts_from_the_call) {
  weft_loop_t* loop = fresh_loop();
  set_timers_state();
  cr_assert_eq(weft_set_timeout(loop, 1, busy_then_set, NULL, NULL), 0);
  run_and_free(loop);
  cr_assert_eq(fired_count, 1);
  cr_assert_geq(fired_at_ns - set_at_ns, 50 * 1000000u, "fired after %.1f ms",
                (double)(fired_at_ns - set_at_ns) / 1e6);
}

static void clear_interval_later(weft_loop_t* loop, void* arg) {
  weft_clear_timer(loop, *(weft_timer_id*)arg);
}

Test(loop, interval_first_tick_counts_from_the_call) {
  weft_loop_t* loop = fresh_loop();
  static weft_timer_id interval;
  set_timers_state();
  cr_assert_eq(weft_set_immediate(loop, busy_then_set, &interval, NULL), 0);
  cr_assert_eq(weft_set_timeout(loop, 500, clear_interval_later, &interval,
                                NULL),
               0);
  run_and_free(loop);
  cr_assert_geq(fired_count, 1);
  cr_assert_geq(fired_at_ns - set_at_ns, 50 * 1000000u, "fired after %.1f ms",
                (double)(fired_at_ns - set_at_ns) / 1e6);
}

/* Immediates queued in one turn are cut the same way: terminate does not
 * wait for the whole batch (200,000 immediates of 10 us each: 2 s). */
#define MANY_IMMEDIATES 200000

static void slow_immediate(weft_loop_t* loop, void* arg) {
  uint64_t t0 = uv_hrtime();
  (void)loop;
  (void)arg;
  atomic_fetch_add(&chain_runs, 1);
  while (uv_hrtime() - t0 < 10000) {
  }
}

static void many_immediates_entry(weft_loop_t* loop, void* arg) {
  (void)arg;
  for (int i = 0; i < MANY_IMMEDIATES; i++)
    cr_assert_eq(weft_set_immediate(loop, slow_immediate, NULL, NULL), 0);
}

Test(loop, terminate_cuts_a_turn_of_immediates, .timeout = 20) {
  weft_loop_t* loop = fresh_loop();
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  atomic_store(&chain_runs, 0);
  chain_exit_code = chain_terminate_code = -1;
  opts.events.exit = chain_on_exit;
  w = spawn_worker(loop, many_immediates_entry, &opts);
  cr_assert_eq(weft_set_timeout(loop, 1, chain_watch, w, NULL), 0);
  run_loop(loop);
  cr_assert_eq(chain_exit_code, 1);
  cr_assert_lt(atomic_load(&chain_runs), MANY_IMMEDIATES,
               "every immediate ran before the worker stopped");
  weft_worker_free(w);
  free_loop(loop);
}

/* Out of descriptors, weft_loop_new() answers WEFT_ENOMEM as loop.h says
 * (it answered libuv's UV_EMFILE, which is none of weft's codes). */
Test(loop, new_without_descriptors_is_enomem) {
  struct rlimit old, low;
  weft_loop_t* loop = (weft_loop_t*)&loop;
  int err;
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = 0; /* No new descriptor at all. */
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  err = weft_loop_new(&loop);
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  cr_assert_eq(err, WEFT_ENOMEM, "got %d (%s)", err, weft_err_name(err));
  cr_assert_null(loop);
  /* With descriptors again, a loop is made. */
  loop = new_loop();
  free_loop(loop);
}

/* The loop spins for messages after cross-thread traffic only while they
 * come sooner than a wake-up would cost (loop.c, SPIN_NS): messages 3 ms
 * apart get one spin, after the first, and then (almost) none. A fixed
 * spin would spin after every one. "Almost": a message that lands between
 * the loop's last look at its queue and its park counts as a quick one
 * and buys one short spin; on a loaded machine that happens now and then,
 * so the test allows a few. */
#define SELDOM_MSGS 12
static uint64_t seldom_spins[SELDOM_MSGS + 1];
static int seldom_n;

static void seldom_on_message(weft_port_t* port, weft_msg_t* msg) {
  (void)msg;
  seldom_spins[++seldom_n] = weft__loop_spins(weft_loop_current());
  if (seldom_n == SELDOM_MSGS)
    cr_assert_eq(weft_port_close(port), 0);
}

static int seldom_post_rc;

static void post_seldom(void* arg) {
  for (int i = 0; i < SELDOM_MSGS && seldom_post_rc == 0; i++) {
    uv_sleep(3);
    seldom_post_rc = weft_port_post(arg, ONE, sizeof(ONE));
  }
}

Test(loop, stops_spinning_when_messages_come_seldom) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a = NULL, *b = NULL;
  uv_thread_t t;
  seldom_n = 0;
  seldom_post_rc = 0;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(a, seldom_on_message), 0);
  cr_assert_eq(uv_thread_create(&t, post_seldom, b), 0);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(seldom_post_rc, 0);
  cr_assert_eq(seldom_n, SELDOM_MSGS);
  /* The loop spun at least once (its budget starts full: after the first
   * message, unless the second was already there)... */
  uint64_t spins = seldom_spins[SELDOM_MSGS] - seldom_spins[1];
  cr_assert_geq(spins, 1);
  /* ...found nothing for 3 ms, and from then on parks at once: at most 3
   * more spins over the 11 gaps, where a fixed spin makes 11. */
  cr_assert_leq(spins, 4, "%llu spins over %d gaps of 3 ms",
                (unsigned long long)spins, SELDOM_MSGS - 1);
  finish(loop, a, b);
}

/* Messages in bursts 3 ms apart, each burst a message, then the rest 30 us
 * later (an echo's answers, when the echoing thread's first wake-up write
 * holds it up): the quick gaps inside a burst must not buy a long spin at
 * the burst's end, where nothing comes for 3 ms (loop.c, SPIN_NS: the
 * budget is the one that would have cost the last waits the least). A
 * budget learnt from the last wait alone was twice the 30 us gap plus the
 * wake-up's latency, or more, at every burst's end, and all of it was
 * spun; now it is a few us at most (the burst's gaps of a microsecond or
 * so, between posts, pay for that much). Checked: the budget the loop
 * holds when a burst's last message is handled, averaged over the bursts
 * after the first. A loaded machine can stretch or squeeze the gaps, so
 * the bound is loose (20 us). */
#define BURSTS 12
#define BURST_REST 5
static int burst_n;
static uint64_t burst_budget_sum;

static void burst_on_message(weft_port_t* port, weft_msg_t* msg) {
  (void)msg;
  burst_n++;
  if (burst_n % (1 + BURST_REST) == 0 && burst_n > 1 + BURST_REST)
    burst_budget_sum += weft__loop_spin_budget(weft_loop_current());
  if (burst_n == BURSTS * (1 + BURST_REST))
    cr_assert_eq(weft_port_close(port), 0);
}

static int burst_post_rc;

static void post_bursts(void* arg) {
  for (int i = 0; i < BURSTS && burst_post_rc == 0; i++) {
    uint64_t t;
    uv_sleep(3);
    burst_post_rc = weft_port_post(arg, ONE, sizeof(ONE));
    for (t = uv_hrtime(); uv_hrtime() - t < 30000;)
      ; /* 30 us: shorter than a sleep can be. */
    for (int k = 0; k < BURST_REST && burst_post_rc == 0; k++)
      burst_post_rc = weft_port_post(arg, ONE, sizeof(ONE));
  }
}

/* One run of the bursts on a new loop: the mean budget at bursts' ends. */
static uint64_t burst_run(void) {
  weft_loop_t* loop = new_loop();
  weft_port_t *a = NULL, *b = NULL;
  uv_thread_t t;
  burst_n = 0;
  burst_budget_sum = 0;
  burst_post_rc = 0;
  new_channel(loop, &a, &b);
  cr_assert_eq(weft_port_on_message(a, burst_on_message), 0);
  cr_assert_eq(uv_thread_create(&t, post_bursts, b), 0);
  cr_assert_eq(weft_loop_run(loop), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(burst_post_rc, 0);
  cr_assert_eq(burst_n, BURSTS * (1 + BURST_REST));
  finish(loop, a, b);
  return burst_budget_sum / (BURSTS - 1);
}

/* A machine loaded by other work can preempt the posting thread inside a
 * burst, and then the burst's gaps are long and the budget rightly grows
 * (a clean-clone `make test` while another build ran: 26.9 us once, in the
 * ASan build). So up to three runs: one that meets the bound shows the
 * budget follows the gaps; the budget the older choice made (twice the
 * 30 us gap plus a wake-up, at every burst's end) fails all three. */
Test(loop, no_spin_after_bursts_that_come_seldom) {
  uint64_t mean = UINT64_MAX;
  for (int run = 0; run < 3 && mean > 20000; run++)
    mean = burst_run();
  cr_assert_leq(mean, 20000, "a spin of %llu ns on average at bursts' ends",
                (unsigned long long)mean);
}
